//! `lakehouse`: one binary, one subcommand per role.

mod batch;
mod config;
mod ingest;
mod query;
mod refdata;
mod serve;
mod simulate;
mod speed;
mod table;
mod up;

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use crate::config::{Config, LogFormat, Overrides};

/// A batch-plus-streaming lakehouse for trading data: Kafka -> L1 Delta -> speed and batch
/// views -> gRPC.
#[derive(Parser, Debug)]
#[command(name = "lakehouse", version)]
struct Cli {
    #[command(flatten)]
    common: Common,
    #[command(subcommand)]
    command: Command,
}

/// Options every subcommand takes.
#[derive(Args, Debug, Clone, Default)]
struct Common {
    /// Configuration file (TOML); see config/lakehouse.example.toml.
    #[arg(long, value_name = "FILE", global = true)]
    config: Option<PathBuf>,
}

/// The lake root, where a command reads or writes tables.
#[derive(Args, Debug, Clone, Default)]
struct LakeArg {
    /// Lake root URL or path (overrides lake.root), e.g. ./lake, file:///data/lake, s3://bucket/lake.
    #[arg(long, value_name = "URL")]
    lake: Option<String>,
}

/// Kafka bootstrap servers.
#[derive(Args, Debug, Clone, Default)]
struct BrokersArg {
    /// Kafka bootstrap servers (overrides kafka.brokers).
    #[arg(long, value_name = "HOST:PORT[,..]")]
    brokers: Option<String>,
}

/// What a process that serves gRPC needs: the lake, the brokers and where to listen.
#[derive(Args, Debug, Clone)]
struct ServerArgs {
    #[command(flatten)]
    lake: LakeArg,
    #[command(flatten)]
    brokers: BrokersArg,
    /// gRPC listen address (overrides serving.listen; default 127.0.0.1:50051).
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run every role together on one machine (ingest, speed, batch scheduler, serving).
    Up {
        #[command(flatten)]
        server: ServerArgs,
        /// Also run the market simulator so data flows at once.
        #[arg(long)]
        simulate: bool,
    },
    /// Ingest Kafka topics into the L1 Delta tables, exactly once.
    ///
    /// Joins the consumer group of `[ingest] group-id`; several processes split the
    /// partitions. Every partition resumes from the offsets committed in its table. Bad
    /// messages go to l1/dead_letters. Runs until SIGINT/SIGTERM, then commits what it holds.
    Ingest {
        #[command(flatten)]
        lake: LakeArg,
        #[command(flatten)]
        brokers: BrokersArg,
        #[command(flatten)]
        ingest: ingest::IngestArgs,
    },
    /// Run the speed layer: event-time windows and intraday views.
    ///
    /// Consumes the `[speed] topics` (every partition, from its checkpoint), keeps the exact
    /// intraday views and the live windows (1-minute and 5-minute bars, trader sessions),
    /// writes events later than the allowed lateness to l1/late_events, and checkpoints its
    /// state with the input offsets. Runs until SIGINT/SIGTERM, then checkpoints.
    Speed {
        #[command(flatten)]
        lake: LakeArg,
        #[command(flatten)]
        brokers: BrokersArg,
        #[command(flatten)]
        speed: speed::SpeedArgs,
    },
    /// Batch jobs L1 -> L2 -> L3 per business date.
    Batch {
        #[command(subcommand)]
        command: BatchCommand,
    },
    /// Serve the gRPC API (batch view merged with the speed view).
    Serve {
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Run the seeded market simulator, producing to Kafka.
    ///
    /// Agents send limit and market orders, modifies and cancels to per-symbol order books;
    /// matches produce executions for both sides and tape prints. Writes the ground truth of
    /// every message sent (--truth) and the matching reference data (--refdata). Runs until
    /// --duration or --events, or until SIGINT/SIGTERM.
    Simulate {
        #[command(flatten)]
        brokers: BrokersArg,
        #[command(flatten)]
        simulate: simulate::SimulateArgs,
    },
    /// Query the gRPC server: positions, bars, exposure, large-trades, report, status.
    Query(query::QueryArgs),
    /// Reference data.
    Refdata {
        #[command(subcommand)]
        command: RefdataCommand,
    },
    /// Inspect and maintain lake tables.
    Table {
        #[command(subcommand)]
        command: TableCommand,
    },
}

#[derive(Subcommand, Debug)]
enum BatchCommand {
    /// Run the job chain for one date or a range of dates.
    ///
    /// For each business date: L1 -> L2 (executions, orders, market trades) -> L3 (daily
    /// bars, positions, desk exposure, large trades, transaction report, order statistics,
    /// reconciliation). Each output's date partition is replaced atomically, then the run is
    /// published in system/batch_ledger with the Kafka offsets it covered. Re-running a date
    /// gives the same bytes. A range runs in date order (positions carry forward).
    Run {
        #[command(flatten)]
        lake: LakeArg,
        /// Business date YYYY-MM-DD.
        #[arg(long, conflicts_with_all = ["from", "to"], required_unless_present = "from")]
        date: Option<String>,
        /// First date of a backfill.
        #[arg(long, requires = "to")]
        from: Option<String>,
        /// Last date of a backfill (inclusive).
        #[arg(long, requires = "from")]
        to: Option<String>,
    },
    /// Run the job chain on the configured cron schedule.
    ///
    /// `[batch] schedule` holds cron expressions (`minute hour day-of-month month
    /// day-of-week`) in the calendar's time zone; each firing makes the business date that
    /// most recently closed due (default: 15 minutes after each weekday's close). At start the
    /// dates of firings within `catch-up` that have no succeeded run are run, oldest first.
    /// Failed runs are retried with doubling back-off; a date that still fails holds the later
    /// ones back until the next firing. After publishing, maintenance compacts the closed L1
    /// dates, writes checkpoints and vacuums beyond the retention. Runs until SIGINT/SIGTERM;
    /// a run cut short publishes nothing.
    Schedule {
        #[command(flatten)]
        lake: LakeArg,
    },
}

#[derive(Subcommand, Debug)]
enum RefdataCommand {
    /// Load instruments, accounts and FX rates from CSV files into the reference tables.
    Load {
        #[command(flatten)]
        lake: LakeArg,
        /// instruments.csv (symbol, isin, asset_class, currency, tick_size, lot_size).
        #[arg(long, value_name = "F")]
        instruments: Option<PathBuf>,
        /// accounts.csv (account, desk, legal_entity).
        #[arg(long, value_name = "F")]
        accounts: Option<PathBuf>,
        /// fx_rates.csv (date, currency, rate_to_reporting).
        #[arg(long, value_name = "F")]
        fx: Option<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
enum TableCommand {
    /// List the catalog's tables with their version and file count (creates none).
    List {
        #[command(flatten)]
        lake: LakeArg,
    },
    /// Show a table's commits, newest first, with the Kafka offsets each append covered.
    History {
        #[command(flatten)]
        lake: LakeArg,
        /// Table path, e.g. l1/executions.
        table: String,
        /// Show at most this many commits.
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// Show a table's schema, partitioning, properties and files, at the newest version or
    /// (time travel) at a version or timestamp.
    Describe {
        #[command(flatten)]
        lake: LakeArg,
        /// Table path, e.g. l3/positions.
        table: String,
        /// Describe this version.
        #[arg(long, conflicts_with = "as_of")]
        version: Option<u64>,
        /// Describe the version current at this RFC 3339 time.
        #[arg(long, value_name = "TIMESTAMP")]
        as_of: Option<String>,
    },
    /// Compact small files of closed dates and write a Delta checkpoint.
    ///
    /// Rewrites the many small files of each date partition before --before into files of
    /// about `[batch.maintenance] target-file-size`; rows and Kafka offsets are unchanged and
    /// earlier versions stay readable (time travel) until a vacuum beyond the retention.
    Optimize {
        #[command(flatten)]
        lake: LakeArg,
        /// Table path, e.g. l1/market_trades; omit for every L1 table (and checkpoints of all).
        table: Option<String>,
        /// Compact the date partitions before this date (default: today, UTC).
        #[arg(long, value_name = "YYYY-MM-DD")]
        before: Option<String>,
        /// Target file size in bytes.
        #[arg(long, value_name = "BYTES")]
        target_size: Option<u64>,
    },
    /// Delete files that no version inside the retention needs.
    ///
    /// Deletes files replaced or compacted away longer ago than the retention, and files no
    /// commit ever added (left by a killed writer). L2/L3 keep `[batch.maintenance] retention`
    /// (30 days); L1 and system tables are never vacuumed inside seven years.
    Vacuum {
        #[command(flatten)]
        lake: LakeArg,
        /// Table path, e.g. l3/positions; omit for every table.
        table: Option<String>,
        /// Override the retention, e.g. 14days (refused below seven years for L1).
        #[arg(long, value_name = "DURATION")]
        retention: Option<String>,
        /// List what would be deleted; delete nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

fn init_logging(cfg: &Config) {
    // log.level applies to lakehouse's own crates; dependencies log warnings only.
    // RUST_LOG, when set, replaces both.
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        let level = &cfg.log.level;
        let ours = [
            "lakehouse",
            "lakehouse_lake",
            "lakehouse_ingest",
            "lakehouse_speed",
            "lakehouse_batch",
            "lakehouse_serving",
            "lakehouse_simulator",
        ];
        let directives: Vec<String> = std::iter::once("warn".to_string())
            .chain(ours.iter().map(|c| format!("{c}={level}")))
            .collect();
        EnvFilter::new(directives.join(","))
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match cfg.log.format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

fn load_server(common: &Common, server: &ServerArgs) -> Result<Config> {
    let overrides = Overrides {
        lake_root: server.lake.lake.clone(),
        brokers: server.brokers.brokers.clone(),
        listen: server.listen.clone(),
    };
    let cfg = config::load(common.config.as_deref(), &overrides)?;
    init_logging(&cfg);
    Ok(cfg)
}

fn load(common: &Common, lake: Option<&LakeArg>, brokers: Option<&BrokersArg>) -> Result<Config> {
    let overrides = Overrides {
        lake_root: lake.and_then(|l| l.lake.clone()),
        brokers: brokers.and_then(|b| b.brokers.clone()),
        listen: None,
    };
    let cfg = config::load(common.config.as_deref(), &overrides)?;
    init_logging(&cfg);
    Ok(cfg)
}

async fn run(Cli { common, command }: Cli) -> Result<String> {
    match command {
        Command::Up { server, simulate } => {
            let cfg = load_server(&common, &server)?;
            up::run(cfg, simulate).await
        }
        Command::Ingest {
            lake,
            brokers,
            ingest,
        } => {
            let cfg = load(&common, Some(&lake), Some(&brokers))?;
            ingest::run(cfg, ingest).await
        }
        Command::Speed {
            lake,
            brokers,
            speed,
        } => {
            let cfg = load(&common, Some(&lake), Some(&brokers))?;
            speed::run(cfg, speed).await
        }
        Command::Batch { command } => match command {
            BatchCommand::Run {
                lake,
                date,
                from,
                to,
            } => {
                let dates = batch::dates(date.as_deref(), from.as_deref(), to.as_deref())?;
                let cfg = load(&common, Some(&lake), None)?;
                batch::run(cfg, dates).await
            }
            BatchCommand::Schedule { lake } => {
                let cfg = load(&common, Some(&lake), None)?;
                batch::schedule(cfg).await
            }
        },
        Command::Serve { server } => {
            let cfg = load_server(&common, &server)?;
            serve::run(cfg).await
        }
        Command::Simulate { brokers, simulate } => {
            let cfg = load(&common, None, Some(&brokers))?;
            simulate::run(cfg, simulate).await
        }
        Command::Query(args) => {
            load(&common, None, None)?;
            query::run(args).await
        }
        Command::Refdata {
            command:
                RefdataCommand::Load {
                    lake,
                    instruments,
                    accounts,
                    fx,
                },
        } => {
            let cfg = load(&common, Some(&lake), None)?;
            refdata::load(&cfg, instruments, accounts, fx).await
        }
        Command::Table { command } => match command {
            TableCommand::List { lake } => {
                let cfg = load(&common, Some(&lake), None)?;
                table::list(&cfg).await
            }
            TableCommand::History { lake, table, limit } => {
                let cfg = load(&common, Some(&lake), None)?;
                table::history(&cfg, &table, limit).await
            }
            TableCommand::Describe {
                lake,
                table,
                version,
                as_of,
            } => {
                let cfg = load(&common, Some(&lake), None)?;
                table::describe(&cfg, &table, version, as_of.as_deref()).await
            }
            TableCommand::Optimize {
                lake,
                table,
                before,
                target_size,
            } => {
                let cfg = load(&common, Some(&lake), None)?;
                table::optimize(&cfg, table.as_deref(), before.as_deref(), target_size).await
            }
            TableCommand::Vacuum {
                lake,
                table,
                retention,
                dry_run,
            } => {
                let cfg = load(&common, Some(&lake), None)?;
                table::vacuum(&cfg, table.as_deref(), retention.as_deref(), dry_run).await
            }
        },
    }
}

/// Serves `render()` as Prometheus metrics on http://ADDR/metrics for as long as the process
/// runs; the bound address (a `:0` port is chosen by the system).
async fn metrics_endpoint(
    addr: &str,
    render: impl Fn() -> String + Send + Sync + 'static,
) -> Result<std::net::SocketAddr> {
    use anyhow::Context as _;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen for metrics on {addr}"))?;
    let bound = listener.local_addr()?;
    tracing::info!(addr = %bound, "metrics on /metrics");
    tokio::spawn(lakehouse_lake::metrics::serve(listener, render));
    Ok(bound)
}

/// jemalloc (`.cargo/config.toml`, and `lakehouse_batch::memory` during batch runs): with
/// glibc's allocator a batch run spent a third of its time in the kernel faulting in and
/// zeroing fresh pages for Polars' buffers, again and again.
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(text) => {
            // a closed pipe (`lakehouse table list | head`) is not an error
            let mut stdout = std::io::stdout().lock();
            match stdout
                .write_all(text.as_bytes())
                .and_then(|()| stdout.flush())
            {
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                    eprintln!("error: cannot write output: {e}");
                    ExitCode::FAILURE
                }
                _ => ExitCode::SUCCESS,
            }
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
