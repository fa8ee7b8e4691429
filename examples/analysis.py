# %% [markdown]
# # Ad-hoc analysis of the lakehouse's L2/L3 tables
#
# Reads the lake's Delta tables directly with Polars and deltalake, as an analyst would, and
# checks what it finds:
# - the daily VWAP of `l3/daily_bars` against a VWAP rebuilt from 1-minute bars of
#   `l2/market_trades`;
# - the desk exposure of the latest date;
# - positions over several days;
# - one saved plot (PNG): the market value per desk over the days.
#
# Run it as a script, `python examples/analysis.py LAKE OUT_DIR`, or as the notebook
# `examples/notebook.ipynb` with the environment variables `LAKE` and `OUT`. It prints its
# checks as JSON on the last line.

# %%
import json
import os
import sys
from decimal import Decimal

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import polars as pl

if "ipykernel" in sys.modules:
    LAKE, OUT = os.environ["LAKE"], os.environ["OUT"]
else:
    LAKE, OUT = sys.argv[1], sys.argv[2]
os.makedirs(OUT, exist_ok=True)


def table(name):
    """One Delta table of the lake, read whole."""
    return pl.read_delta(f"{LAKE}/{name}")


# %% [markdown]
# ## Daily VWAP against the 1-minute bars
# Money is `Decimal(38, 8)`: sums stay exact. A day's VWAP is sum(price x volume) / sum(volume),
# so summing the 1-minute bars' price x volume and volume gives it again.

# %%
trades = table("l2/market_trades")
minutes = (
    trades.with_columns(
        (pl.col("price").cast(pl.Decimal(38, 8)) * pl.col("volume")).alias("pv"),
        pl.col("ts").dt.truncate("1m").alias("minute"),
    )
    .group_by("business_date", "symbol", "minute")
    .agg(pl.col("pv").sum(), pl.col("volume").sum(), pl.len().alias("trades"))
)
rebuilt = minutes.group_by("business_date", "symbol").agg(
    pl.col("pv").sum(), pl.col("volume").sum(), pl.col("trades").sum()
)
daily = table("l3/daily_bars").select("business_date", "symbol", "vwap", "volume", "trade_count")
joined = daily.join(rebuilt, on=["business_date", "symbol"], how="full", coalesce=True)


def vwap(pv, volume):
    """Exact VWAP, rounded half away from zero to 8 places like the lake."""
    q = Decimal(pv) / Decimal(volume)
    return q.quantize(Decimal("0.00000001"), rounding="ROUND_HALF_UP")


mismatches = [
    r
    for r in joined.iter_rows(named=True)
    if r["vwap"] is None
    or r["pv"] is None
    or vwap(r["pv"], r["volume_right"]) != r["vwap"]
    or r["volume"] != r["volume_right"]
    or r["trade_count"] != r["trades"]
]
print(f"{daily.height} daily bars; {len(mismatches)} differ from the 1-minute rebuild")

# %% [markdown]
# ## Desk exposure of the latest date

# %%
exposure = table("l3/desk_exposure")
latest = exposure["business_date"].max()
print(
    exposure.filter(pl.col("business_date") == latest)
    .select("desk", "asset_class", "currency", "gross_notional", "net_notional")
    .sort("desk", "asset_class", "currency")
)

# %% [markdown]
# ## Positions over several days, and the plot

# %%
positions = table("l3/positions")
accounts = table("l1/ref_accounts").select("account", "desk")
by_desk = (
    positions.join(accounts, on="account", how="left")
    .group_by("business_date", "desk")
    .agg(pl.col("market_value").sum().alias("market_value"), pl.len().alias("positions"))
    .sort("business_date", "desk")
)
print(by_desk)
fig, ax = plt.subplots(figsize=(8, 4))
for desk, rows in by_desk.group_by("desk", maintain_order=True):
    ax.plot(
        rows["business_date"].to_list(),
        [float(v or 0) for v in rows["market_value"].to_list()],
        marker="o",
        label=desk[0],
    )
ax.set_title("Market value per desk at each close")
ax.legend(fontsize="small")
fig.autofmt_xdate()
png = os.path.join(OUT, "market_value_per_desk.png")
fig.savefig(png, dpi=100)

# %%
checks = {
    "daily_bars": daily.height,
    "vwap_mismatches": len(mismatches),
    "exposure_rows": exposure.height,
    "positions_rows": positions.height,
    "dates": positions["business_date"].n_unique(),
    "market_value_total": format(positions["market_value"].sum(), "f"),
    "plot": png,
}
print(json.dumps(checks))
