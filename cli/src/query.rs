//! `lakehouse query`: a gRPC client for people; tables by default, `--json` for tools.

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use lakehouse_proto::v1 as pb;
use lakehouse_proto::v1::lakehouse_client::LakehouseClient;
use tonic::metadata::MetadataValue;

/// Where and how to query.
#[derive(Args, Debug, Clone)]
pub(crate) struct QueryArgs {
    /// Server URL (https:// for TLS, with --ca-cert).
    #[arg(
        long,
        value_name = "URL",
        default_value = "http://127.0.0.1:50051",
        global = true
    )]
    server: String,
    /// With https://: the CA certificate (PEM) that signed the server's certificate.
    #[arg(long, value_name = "FILE", global = true)]
    ca_cert: Option<std::path::PathBuf>,
    /// With https:// and mTLS: the client certificate and key (PEM), instead of a token.
    #[arg(long, value_names = ["CERT", "KEY"], num_args = 2, global = true)]
    client_cert: Vec<std::path::PathBuf>,
    /// Bearer token (or LAKEHOUSE_TOKEN).
    #[arg(long, value_name = "T", env = "LAKEHOUSE_TOKEN", global = true)]
    token: Option<String>,
    /// Print the response as JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    what: What,
}

#[derive(Subcommand, Debug, Clone)]
enum What {
    /// Positions and P&L (batch view carried forward with the speed view).
    Positions {
        /// Accounts (repeatable or comma-separated).
        #[arg(long, value_delimiter = ',')]
        account: Vec<String>,
        /// Desks.
        #[arg(long, value_delimiter = ',')]
        desk: Vec<String>,
        /// Symbols.
        #[arg(long, value_delimiter = ',')]
        symbol: Vec<String>,
        /// Include flat positions.
        #[arg(long)]
        include_flat: bool,
    },
    /// OHLC-VWAP bars of one symbol.
    Bars {
        /// Symbol.
        symbol: String,
        /// 1m, 5m or 1d.
        #[arg(long, default_value = "1m")]
        interval: String,
        /// Start, RFC 3339 (default: 1 hour ago; 1d: 7 days ago).
        #[arg(long)]
        from: Option<String>,
        /// End, RFC 3339, exclusive (default: now).
        #[arg(long)]
        to: Option<String>,
    },
    /// Gross and net exposure by desk x asset class x currency.
    Exposure {
        /// Desks.
        #[arg(long, value_delimiter = ',')]
        desk: Vec<String>,
    },
    /// Large trades over business dates.
    LargeTrades {
        /// First business date (YYYY-MM-DD).
        #[arg(long)]
        from: String,
        /// Last business date (default: --from).
        #[arg(long)]
        to: Option<String>,
        /// Notional threshold (default: the server's per asset class).
        #[arg(long)]
        threshold: Option<String>,
    },
    /// The transaction report of a reported business date.
    Report {
        /// Business date (YYYY-MM-DD).
        #[arg(long)]
        date: String,
    },
    /// Freshness and lag of every layer.
    Status,
}

fn time(text: &str) -> Result<prost_types::Timestamp> {
    let t = chrono::DateTime::parse_from_rfc3339(text)
        .with_context(|| format!("{text:?} is not an RFC 3339 time"))?;
    Ok(prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: t.timestamp_subsec_nanos() as i32,
    })
}

fn show_time(t: &Option<prost_types::Timestamp>) -> String {
    t.and_then(|t| chrono::DateTime::from_timestamp(t.seconds, t.nanos as u32))
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
        .unwrap_or_default()
}

fn table(header: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut width: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            width[i] = width[i].max(c.len());
        }
    }
    let line = |cells: Vec<String>| {
        cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = width[i]))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
            + "\n"
    };
    let mut out = line(header.iter().map(|h| h.to_string()).collect());
    for r in rows {
        out += &line(r);
    }
    out
}

fn freshness(f: &Option<pb::Freshness>) -> String {
    match f {
        Some(f) => format!(
            "batch date {} (run {}), speed lag {} ms, late events pending {}\n",
            if f.batch_business_date.is_empty() {
                "none"
            } else {
                &f.batch_business_date
            },
            if f.batch_run_id.is_empty() {
                "-"
            } else {
                &f.batch_run_id
            },
            f.lag_ms,
            f.late_events_pending
        ),
        None => String::new(),
    }
}

fn fresh_json(f: &Option<pb::Freshness>) -> serde_json::Value {
    let o = |v: &[pb::PartitionOffset]| {
        v.iter()
            .map(|p| serde_json::json!([p.topic, p.partition, p.offset]))
            .collect::<Vec<_>>()
    };
    match f {
        Some(f) => serde_json::json!({
            "batch_business_date": f.batch_business_date,
            "batch_run_id": f.batch_run_id,
            "input_versions": f.input_versions,
            "boundary_offsets": o(&f.boundary_offsets),
            "speed_offsets": o(&f.speed_offsets),
            "speed_watermark": show_time(&f.speed_watermark),
            "lag_ms": f.lag_ms,
            "late_events_pending": f.late_events_pending,
        }),
        None => serde_json::Value::Null,
    }
}

fn request<T>(msg: T, token: &Option<String>) -> Result<tonic::Request<T>> {
    let mut r = tonic::Request::new(msg);
    if let Some(t) = token {
        let v: MetadataValue<_> = format!("Bearer {t}")
            .parse()
            .context("the token is not valid header text")?;
        r.metadata_mut().insert("authorization", v);
    }
    Ok(r)
}

fn status(e: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{:?}: {}", e.code(), e.message())
}

async fn channel(args: &QueryArgs) -> Result<tonic::transport::Channel> {
    use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};
    let mut endpoint = Endpoint::from_shared(args.server.clone())
        .with_context(|| format!("bad --server URL {:?}", args.server))?;
    if args.server.starts_with("https://") {
        let ca = args.ca_cert.as_ref().context(
            "an https:// server needs --ca-cert FILE (the CA that signed its certificate)",
        )?;
        let read =
            |p: &std::path::Path| std::fs::read(p).with_context(|| format!("{}", p.display()));
        let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read(ca)?));
        if let [cert, key] = args.client_cert.as_slice() {
            tls = tls.identity(Identity::from_pem(read(cert)?, read(key)?));
        }
        lakehouse_serving::install_tls_provider();
        endpoint = endpoint.tls_config(tls)?;
    } else if args.ca_cert.is_some() || !args.client_cert.is_empty() {
        anyhow::bail!("--ca-cert and --client-cert need an https:// --server");
    }
    endpoint
        .connect()
        .await
        .with_context(|| format!("cannot connect to {}", args.server))
}

pub(crate) async fn run(args: QueryArgs) -> Result<String> {
    let mut client = LakehouseClient::new(channel(&args).await?);
    let tok = &args.token;
    match args.what {
        What::Positions {
            account,
            desk,
            symbol,
            include_flat,
        } => {
            let r = client
                .get_positions(request(
                    pb::GetPositionsRequest {
                        accounts: account,
                        desks: desk,
                        symbols: symbol,
                        include_flat,
                    },
                    tok,
                )?)
                .await
                .map_err(status)?
                .into_inner();
            if args.json {
                let rows: Vec<_> = r
                    .positions
                    .iter()
                    .map(|p| {
                        serde_json::json!({
                            "account": p.account, "desk": p.desk, "symbol": p.symbol,
                            "net_quantity": p.net_quantity, "avg_cost": p.avg_cost,
                            "realized_pnl": p.realized_pnl, "mark_price": p.mark_price,
                            "market_value": p.market_value, "unrealized_pnl": p.unrealized_pnl,
                        })
                    })
                    .collect();
                return Ok(
                    serde_json::json!({"positions": rows, "freshness": fresh_json(&r.freshness)})
                        .to_string()
                        + "\n",
                );
            }
            let rows = r
                .positions
                .iter()
                .map(|p| {
                    vec![
                        p.account.clone(),
                        p.desk.clone(),
                        p.symbol.clone(),
                        p.net_quantity.clone(),
                        p.avg_cost.clone(),
                        p.realized_pnl.clone(),
                        p.mark_price.clone(),
                        p.unrealized_pnl.clone(),
                    ]
                })
                .collect();
            Ok(table(
                &[
                    "ACCOUNT",
                    "DESK",
                    "SYMBOL",
                    "NET",
                    "AVG_COST",
                    "REALIZED",
                    "MARK",
                    "UNREALIZED",
                ],
                rows,
            ) + &freshness(&r.freshness))
        }
        What::Bars {
            symbol,
            interval,
            from,
            to,
        } => {
            let iv = match interval.as_str() {
                "1m" => pb::Interval::Interval1m,
                "5m" => pb::Interval::Interval5m,
                "1d" => pb::Interval::Interval1d,
                other => anyhow::bail!("--interval {other:?}: use 1m, 5m or 1d"),
            };
            let now = chrono::Utc::now();
            let back = if iv == pb::Interval::Interval1d {
                chrono::Duration::days(7)
            } else {
                chrono::Duration::hours(1)
            };
            let from = match from {
                Some(t) => time(&t)?,
                None => time(&(now - back).to_rfc3339())?,
            };
            let to = match to {
                Some(t) => time(&t)?,
                None => time(&now.to_rfc3339())?,
            };
            let r = client
                .get_bars(request(
                    pb::GetBarsRequest {
                        symbol,
                        interval: iv as i32,
                        from: Some(from),
                        to: Some(to),
                    },
                    tok,
                )?)
                .await
                .map_err(status)?
                .into_inner();
            if args.json {
                let rows: Vec<_> = r.bars.iter().map(|b| serde_json::json!({
                    "symbol": b.symbol, "start": show_time(&b.start), "business_date": b.business_date,
                    "open": b.open, "high": b.high, "low": b.low, "close": b.close, "vwap": b.vwap,
                    "volume": b.volume, "trade_count": b.trade_count,
                })).collect();
                return Ok(
                    serde_json::json!({"bars": rows, "freshness": fresh_json(&r.freshness)})
                        .to_string()
                        + "\n",
                );
            }
            let rows = r
                .bars
                .iter()
                .map(|b| {
                    vec![
                        show_time(&b.start),
                        b.business_date.clone(),
                        b.open.clone(),
                        b.high.clone(),
                        b.low.clone(),
                        b.close.clone(),
                        b.vwap.clone(),
                        b.volume.clone(),
                        b.trade_count.to_string(),
                    ]
                })
                .collect();
            Ok(table(
                &[
                    "START", "DATE", "OPEN", "HIGH", "LOW", "CLOSE", "VWAP", "VOLUME", "COUNT",
                ],
                rows,
            ) + &freshness(&r.freshness))
        }
        What::Exposure { desk } => {
            let r = client
                .get_exposure(request(
                    pb::GetExposureRequest {
                        desks: desk,
                        ..Default::default()
                    },
                    tok,
                )?)
                .await
                .map_err(status)?
                .into_inner();
            if args.json {
                let rows: Vec<_> = r
                    .exposures
                    .iter()
                    .map(|e| {
                        serde_json::json!({
                            "desk": e.desk, "asset_class": e.asset_class, "currency": e.currency,
                            "gross_notional": e.gross_notional, "net_notional": e.net_notional,
                        })
                    })
                    .collect();
                return Ok(serde_json::json!({"exposures": rows, "unpriced_positions": r.unpriced_positions, "freshness": fresh_json(&r.freshness)}).to_string() + "\n");
            }
            let rows = r
                .exposures
                .iter()
                .map(|e| {
                    vec![
                        e.desk.clone(),
                        e.asset_class.clone(),
                        e.currency.clone(),
                        e.gross_notional.clone(),
                        e.net_notional.clone(),
                    ]
                })
                .collect();
            Ok(
                table(&["DESK", "ASSET_CLASS", "CURRENCY", "GROSS", "NET"], rows)
                    + &freshness(&r.freshness),
            )
        }
        What::LargeTrades {
            from,
            to,
            threshold,
        } => {
            let r = client
                .list_large_trades(request(
                    pb::ListLargeTradesRequest {
                        to_date: to.unwrap_or_else(|| from.clone()),
                        from_date: from,
                        threshold: threshold.unwrap_or_default(),
                        accounts: Vec::new(),
                    },
                    tok,
                )?)
                .await
                .map_err(status)?
                .into_inner();
            if args.json {
                let rows: Vec<_> = r.trades.iter().map(|t| serde_json::json!({
                    "business_date": t.business_date, "exec_id": t.exec_id, "account": t.account,
                    "desk": t.desk, "symbol": t.symbol, "side": pb::Side::try_from(t.side).map(|s| s.as_str_name()).unwrap_or(""),
                    "quantity": t.quantity, "price": t.price, "notional": t.notional,
                })).collect();
                return Ok(
                    serde_json::json!({"trades": rows, "freshness": fresh_json(&r.freshness)})
                        .to_string()
                        + "\n",
                );
            }
            let rows = r
                .trades
                .iter()
                .map(|t| {
                    vec![
                        t.business_date.clone(),
                        t.exec_id.clone(),
                        t.account.clone(),
                        t.symbol.clone(),
                        pb::Side::try_from(t.side)
                            .map(|s| s.as_str_name().to_string())
                            .unwrap_or_default(),
                        t.quantity.clone(),
                        t.price.clone(),
                        t.notional.clone(),
                    ]
                })
                .collect();
            Ok(table(
                &[
                    "DATE", "EXEC_ID", "ACCOUNT", "SYMBOL", "SIDE", "QTY", "PRICE", "NOTIONAL",
                ],
                rows,
            ) + &freshness(&r.freshness))
        }
        What::Report { date } => {
            let mut s = client
                .stream_transaction_report(request(
                    pb::StreamTransactionReportRequest {
                        business_date: date,
                        chunk_rows: 0,
                    },
                    tok,
                )?)
                .await
                .map_err(status)?
                .into_inner();
            let mut rows = Vec::new();
            let mut fresh = None;
            while let Some(c) = s.message().await.map_err(status)? {
                if c.freshness.is_some() {
                    fresh = c.freshness;
                }
                rows.extend(c.rows);
            }
            if args.json {
                let out: Vec<_> = rows.iter().map(|r| serde_json::json!({
                    "exec_id": r.exec_id, "trading_time": show_time(&r.trading_time), "isin": r.isin,
                    "price": r.price, "quantity": r.quantity, "currency": r.currency, "venue": r.venue,
                    "buyer": r.buyer, "seller": r.seller, "trader": r.trader, "account": r.account,
                })).collect();
                return Ok(
                    serde_json::json!({"rows": out, "freshness": fresh_json(&fresh)}).to_string()
                        + "\n",
                );
            }
            let out = rows
                .iter()
                .map(|r| {
                    vec![
                        r.exec_id.clone(),
                        show_time(&r.trading_time),
                        r.isin.clone(),
                        r.price.clone(),
                        r.quantity.clone(),
                        r.currency.clone(),
                        r.venue.clone(),
                        r.buyer.clone(),
                        r.seller.clone(),
                        r.trader.clone(),
                    ]
                })
                .collect();
            Ok(table(
                &[
                    "EXEC_ID", "TIME", "ISIN", "PRICE", "QTY", "CCY", "VENUE", "BUYER", "SELLER",
                    "TRADER",
                ],
                out,
            ) + &freshness(&fresh))
        }
        What::Status => {
            let r = client
                .get_status(request(pb::GetStatusRequest {}, tok)?)
                .await
                .map_err(status)?
                .into_inner();
            if args.json {
                let layers: Vec<_> = r.layers.iter().map(|l| serde_json::json!({"layer": l.layer, "ready": l.ready, "detail": l.detail})).collect();
                return Ok(serde_json::json!({
                    "layers": layers, "speed_events": r.speed_events, "speed_duplicates": r.speed_duplicates,
                    "recent_runs": r.recent_runs, "freshness": fresh_json(&r.freshness),
                }).to_string() + "\n");
            }
            let rows = r
                .layers
                .iter()
                .map(|l| vec![l.layer.clone(), l.ready.to_string(), l.detail.clone()])
                .collect();
            Ok(table(&["LAYER", "READY", "DETAIL"], rows) + &freshness(&r.freshness))
        }
    }
}
