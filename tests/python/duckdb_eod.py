"""The DuckDB side of batch-bench: daily bars and positions for 2026-01-05 from the L1 Parquet
files lakehouse's batch run reads, with the same rules (first delivery per id, last amend,
cancels, average cost in event order), written to Parquet.

usage: duckdb_eod.py TAPE_FILES EXEC_FILES OUT_DIR (the *_FILES hold one path per line)
DuckDB divides decimals in DOUBLE, so its VWAP, average cost and P&L are not exact decimals."""
import os
import sys

import duckdb

tape = open(sys.argv[1]).read().split()
execs = open(sys.argv[2]).read().split()
out = sys.argv[3]
os.makedirs(out, exist_ok=True)
con = duckdb.connect()
con.execute("SET preserve_insertion_order = false")
window = "ts >= '2026-01-05 00:00:00+00'::TIMESTAMPTZ AND ts < '2026-01-06 00:00:00+00'::TIMESTAMPTZ"
rank = "epoch_us(ts)::HUGEINT * 1000000000000 + _partition::HUGEINT * 10000000000 + _offset"
con.execute(f"""
CREATE TEMP TABLE bars AS
WITH t AS (
  SELECT trade_id, symbol, price, volume, {rank} AS rk
  FROM read_parquet($tape) WHERE {window}
  QUALIFY row_number() OVER (PARTITION BY trade_id ORDER BY rk) = 1
)
SELECT symbol, arg_min(price, rk) AS open, max(price) AS high, min(price) AS low,
       arg_max(price, rk) AS close, sum(price * volume) / sum(volume) AS vwap,
       sum(volume) AS volume, count(*) AS trade_count
FROM t GROUP BY symbol
""", {"tape": tape})
con.execute(f"COPY (SELECT * FROM bars ORDER BY symbol) TO '{out}/bars.parquet' (FORMAT parquet)")
con.execute(f"""
CREATE TEMP TABLE firsts AS
SELECT exec_id, account, symbol, side, price, quantity, lifecycle, ref_exec_id, {rank} AS rk
FROM read_parquet($execs) WHERE {window}
QUALIFY row_number() OVER (PARTITION BY exec_id ORDER BY rk) = 1
""", {"execs": execs})
con.execute("""
CREATE TEMP TABLE fills AS
WITH amends AS (
  SELECT ref_exec_id, arg_max(price, rk) AS price, arg_max(quantity, rk) AS quantity
  FROM firsts WHERE lifecycle = 'AMEND' GROUP BY ref_exec_id
), cancels AS (SELECT DISTINCT ref_exec_id FROM firsts WHERE lifecycle = 'CANCEL')
SELECT n.account, n.symbol,
       row_number() OVER (PARTITION BY n.account, n.symbol ORDER BY n.rk) AS rn,
       CASE WHEN n.side = 'BUY' THEN 1 ELSE -1 END * coalesce(a.quantity, n.quantity) AS q,
       coalesce(a.price, n.price) AS price
FROM firsts n LEFT JOIN amends a ON a.ref_exec_id = n.exec_id
WHERE n.lifecycle = 'NEW' AND n.exec_id NOT IN (SELECT ref_exec_id FROM cancels)
""")
con.execute(f"""
COPY (
WITH RECURSIVE pos(account, symbol, rn, net, avg, realized) AS (
  SELECT account, symbol, rn, q, price::DOUBLE, 0::DOUBLE FROM fills WHERE rn = 1
  UNION ALL
  SELECT f.account, f.symbol, f.rn, p.net + f.q,
    CASE WHEN p.net = 0 OR sign(p.net) = sign(f.q)
           THEN (p.avg * abs(p.net) + f.price * abs(f.q)) / abs(p.net + f.q)
         WHEN p.net + f.q = 0 THEN 0
         WHEN sign(p.net + f.q) <> sign(p.net) THEN f.price::DOUBLE
         ELSE p.avg END,
    p.realized + CASE WHEN p.net = 0 OR sign(p.net) = sign(f.q) THEN 0
         ELSE least(abs(f.q), abs(p.net))
              * (CASE WHEN p.net > 0 THEN f.price - p.avg ELSE p.avg - f.price END) END
  FROM pos p JOIN fills f ON f.account = p.account AND f.symbol = p.symbol AND f.rn = p.rn + 1
), last AS (
  SELECT account, symbol, arg_max(net, rn) AS net_quantity, arg_max(avg, rn) AS avg_cost,
         arg_max(realized, rn) AS realized_pnl
  FROM pos GROUP BY account, symbol
)
SELECT l.*, b.close AS close_price, l.net_quantity * b.close AS market_value,
       (b.close - l.avg_cost) * l.net_quantity AS unrealized_pnl
FROM last l LEFT JOIN bars b USING (symbol) ORDER BY account, symbol
) TO '{out}/positions.parquet' (FORMAT parquet)
""")
