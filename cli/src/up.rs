//! `lakehouse up`: ingest, the speed layer, the batch scheduler and serving in one process,
//! with a local broker when none is configured.
//!
//! One stop signal (SIGINT/SIGTERM) stops every role the way its own command stops: ingest
//! commits what it holds, the speed layer checkpoints, the scheduler finishes its run, the
//! server drains and flushes its audit. Then the local broker is stopped. Started again, every
//! role resumes from what it committed.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use lakehouse_batch::schedule::Scheduler;
use lakehouse_ingest::Metrics;
use lakehouse_lake::Lake;
use lakehouse_serving::state::Served;
use tracing::{info, warn};

use crate::config::Config;
use crate::ingest::Stop;

/// The local broker: a tansu process with its durable SQLite engine.
struct Broker {
    child: tokio::process::Child,
    addr: String,
    data: PathBuf,
}

impl Broker {
    /// The tansu binary: `LAKEHOUSE_TANSU`, else where `scripts/setup.sh` installs it, else
    /// `tansu` on the PATH.
    fn binary() -> PathBuf {
        if let Some(p) = std::env::var_os("LAKEHOUSE_TANSU") {
            return PathBuf::from(p);
        }
        let cache = std::env::var_os("LAKEHOUSE_CACHE").map_or_else(
            || {
                std::env::var_os("HOME")
                    .map_or_else(|| PathBuf::from("/tmp"), PathBuf::from)
                    .join(".cache/lakehouse")
            },
            PathBuf::from,
        );
        let installed = cache.join("tools/bin/tansu");
        if installed.is_file() {
            installed
        } else {
            PathBuf::from("tansu")
        }
    }

    async fn start(addr: &str, data: &Path) -> Result<Broker> {
        std::fs::create_dir_all(data)
            .with_context(|| format!("cannot create the broker's directory {}", data.display()))?;
        let url = format!("tcp://{addr}");
        let bin = Self::binary();
        let log = std::fs::File::create(data.join("tansu.log"))?;
        let child = tokio::process::Command::new(&bin)
            .args(["broker", "--storage-engine", "sqlite://tansu.db"])
            .args(["--listener-url", &url, "--advertised-listener-url", &url])
            .current_dir(data)
            // its own process group: Ctrl-C in a terminal (or a signal to up's group) must not
            // stop the broker before the roles have committed through it; up stops it last
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| {
                format!(
                    "cannot start the local broker {} (run scripts/setup.sh, or configure [kafka] brokers)",
                    bin.display()
                )
            })?;
        let mut broker = Broker {
            child,
            addr: addr.to_string(),
            data: data.to_path_buf(),
        };
        for _ in 0..300 {
            if let Some(status) = broker.child.try_wait()? {
                bail!(
                    "the local broker exited with {status} (is {addr} in use?); its log: {}",
                    data.join("tansu.log").display()
                );
            }
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                return Ok(broker);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!("the local broker did not listen on {addr} within 30 s")
    }

    /// SIGTERM, then SIGKILL after 10 s.
    async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            let _ = tokio::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()
                .await;
        }
        if tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

/// Where the local broker keeps its data: `[up] broker-data`, else beside a `file://` lake.
fn broker_data(cfg: &Config) -> Result<PathBuf> {
    if let Some(d) = &cfg.up.broker_data {
        return Ok(d.clone());
    }
    let root = &cfg.lake.root;
    let path = match root.strip_prefix("file://") {
        Some(p) => p,
        None if root.contains("://") => {
            bail!("the lake {root} is not local: set [up] broker-data for the local broker's data")
        }
        None => root,
    };
    Ok(PathBuf::from(format!(
        "{}.kafka",
        path.trim_end_matches('/')
    )))
}

pub(crate) async fn run(mut cfg: Config, simulate: bool) -> Result<String> {
    cfg.serving
        .validate()
        .map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))?;
    let calendar = cfg.calendar.calendar()?;
    let schedule = cfg
        .batch
        .schedule(calendar)
        .map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))?;
    let stop = Stop::on_signal("stopping every role")?;
    let broker = if cfg.brokers_configured {
        None
    } else {
        let data = broker_data(&cfg)?;
        let b = Broker::start(&cfg.up.broker_listen, &data).await?;
        cfg.kafka.brokers = b.addr.clone();
        Some(b)
    };
    let sim_dir = if simulate {
        Some(broker_data(&cfg)?.join("simulate"))
    } else {
        None
    };
    let result = roles(&cfg, calendar, schedule, stop, broker.as_ref(), sim_dir).await;
    if let Some(b) = broker {
        b.stop().await;
    }
    result
}

async fn roles(
    cfg: &Config,
    calendar: lakehouse_lake::BusinessCalendar,
    schedule: lakehouse_batch::schedule::Schedule,
    stop: Stop,
    broker: Option<&Broker>,
    sim_dir: Option<PathBuf>,
) -> Result<String> {
    let brokers = cfg.kafka.brokers.clone();
    // the topics every role reads (the broker may not create them by itself)
    let mut topics: Vec<&str> = cfg.ingest.topics.iter().map(|t| t.topic.as_str()).collect();
    topics.extend(cfg.speed.topics.iter().map(|t| t.topic.as_str()));
    topics.sort_unstable();
    topics.dedup();
    let (b, props, partitions) = (
        brokers.clone(),
        cfg.simulate.kafka_properties.clone(),
        cfg.simulate.partitions,
    );
    let owned: Vec<String> = topics.iter().map(|t| t.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let t: Vec<&str> = owned.iter().map(String::as_str).collect();
        lakehouse_simulator::kafka::ensure_topics(&b, &props, &t, partitions)
    })
    .await?
    .with_context(|| format!("cannot create the topics on {brokers}"))?;

    let lake = Lake::open(&cfg.lake).await?;
    lake.ensure_catalog().await?;

    let metrics = Metrics::new();

    let mut tasks: Vec<(&str, tokio::task::JoinHandle<Result<()>>)> = Vec::new();
    // the simulator, first: its reference data is loaded before the other roles start
    let mut simulated = None;
    if let Some(dir) = sim_dir {
        let (task, text) = simulator(cfg, &dir, stop.stopped()).await?;
        tasks.push(("simulator", task));
        simulated = Some(text);
    }
    // ingest
    {
        let (icfg, b, l, m, s) = (
            cfg.ingest.clone(),
            brokers.clone(),
            lake.clone(),
            metrics.clone(),
            stop.stopped(),
        );
        tasks.push((
            "ingest",
            tokio::spawn(async move {
                lakehouse_ingest::run(icfg, &b, l, m, s)
                    .await
                    .map(|_| ())
                    .map_err(anyhow::Error::from)
            }),
        ));
    }
    // the speed layer, whose views serving answers from
    let handle = crate::serve::speed_handle(cfg, calendar);
    {
        let (scfg, b, l, h, s) = (
            cfg.speed.clone(),
            brokers.clone(),
            lake.clone(),
            handle.clone(),
            stop.stopped(),
        );
        tasks.push((
            "speed",
            tokio::spawn(async move {
                lakehouse_speed::run(scfg, &b, l, calendar, h, s)
                    .await
                    .map(|_| ())
                    .map_err(anyhow::Error::from)
            }),
        ));
    }
    // the batch scheduler
    let scheduler = Scheduler::new(
        crate::batch::runner(cfg, lake.clone())?,
        schedule,
        cfg.batch.retry(),
        cfg.batch.catch_up,
        cfg.batch.maintenance.clone(),
    );
    // one metrics endpoint: ingest's counters, the scheduler's and the server's, and the
    // speed view and the served batch run read at each scrape
    let served = Served::new(lake.clone(), calendar, handle.clone());
    let (scrape, batch_metrics) = (served.clone(), scheduler.metrics().clone());
    let ingest_metrics = metrics.clone();
    let metrics_addr = crate::metrics_endpoint(&cfg.up.metrics_listen, move || {
        lakehouse_lake::metrics::join(&[
            &ingest_metrics.text(),
            &role_metrics(&scrape),
            &batch_metrics.render(),
            &scrape.requests.render(),
        ])
    })
    .await?;
    {
        let s = stop.stopped();
        tasks.push((
            "batch scheduler",
            tokio::spawn(async move { scheduler.run(s).await.map_err(anyhow::Error::from) }),
        ));
    }
    // serving
    {
        let (serving_cfg, served, thresholds, s) = (
            cfg.serving.clone(),
            served,
            cfg.batch.large_trade_thresholds.clone(),
            stop.stopped(),
        );
        let (lake_root, broker_text) = (
            lake.root().to_string(),
            match broker {
                Some(b) => format!("{} (local tansu, data in {})", b.addr, b.data.display()),
                None => brokers.clone(),
            },
        );
        tasks.push((
            "serving",
            tokio::spawn(async move {
                lakehouse_serving::serve(
                    &serving_cfg,
                    served,
                    thresholds,
                    move |addr| {
                        // the last hour's bars (the simulator's clock starts now)
                        let now = chrono::Utc::now().timestamp() / 60 * 60;
                        let minute = |t: i64| {
                            chrono::DateTime::from_timestamp(t, 0)
                                .unwrap_or_default()
                                .format("%Y-%m-%dT%H:%M:%SZ")
                        };
                        let (from, to) = (minute(now - 3600), minute(now + 60));
                        eprintln!(
                            "lakehouse up: running\n  lake     {lake_root}\n  brokers  {broker_text}\n  gRPC     {addr}\n  metrics  http://{metrics_addr}/metrics\n\
                             try:\n  lakehouse query --server http://{addr} status\n  lakehouse query --server http://{addr} positions\n  lakehouse query --server http://{addr} bars AAPL --interval 1m --from {from} --to {to}\n\
                             stop with Ctrl-C{}",
                            simulated.map(|t| format!("\n  {t}")).unwrap_or_default()
                        );
                    },
                    s,
                )
                .await
                .map_err(anyhow::Error::from)
            }),
        ));
    }

    // the first role that ends (a failure, or the stop) stops the others
    let mut failures = Vec::new();
    let mut pending: Vec<_> = tasks
        .into_iter()
        .map(|(name, t)| Box::pin(async move { (name, t.await) }))
        .collect();
    while !pending.is_empty() {
        let ((name, r), _, rest) = futures::future::select_all(pending).await;
        pending = rest;
        if !stop.is_stopped() {
            warn!(
                role = name,
                "a role ended before the stop; stopping the others"
            );
        }
        stop.stop();
        match r {
            Ok(Ok(())) => info!(role = name, "stopped"),
            Ok(Err(e)) => failures.push(format!("{name}: {e:#}")),
            Err(e) => failures.push(format!("{name}: {e}")),
        }
    }
    if failures.is_empty() {
        Ok("lakehouse up stopped: every role committed what it held\n".into())
    } else {
        bail!(
            "lakehouse up stopped after a failure:\n  {}",
            failures.join("\n  ")
        )
    }
}

/// Starts the simulator on the roles' brokers: a new seed each run (so its ids never repeat
/// an earlier run's) and a clock that starts now, paced at `[simulate] rate`. Its ground truth
/// and reference data go to `dir`; the reference data is loaded into the lake before this
/// returns.
async fn simulator(
    cfg: &Config,
    dir: &Path,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(tokio::task::JoinHandle<Result<()>>, String)> {
    use std::sync::atomic::{AtomicBool, Ordering};
    let mut sim = cfg.simulate.clone();
    sim.seed ^= chrono::Utc::now().timestamp_micros() as u64;
    sim.start = "now".into();
    sim.events = None;
    sim.duration = None;
    sim.as_fast_as_possible = false;
    sim.validate()
        .context("invalid simulation settings ([simulate])")?;
    let refdata = dir.join(format!("ref-{:x}", sim.seed));
    let truth = dir.join(format!("truth-{:x}.parquet", sim.seed));
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let outputs = lakehouse_simulator::Outputs {
        brokers: Some(cfg.kafka.brokers.clone()),
        truth: Some(truth.clone()),
        refdata: Some(refdata.clone()),
    };
    let flag = Arc::new(AtomicBool::new(false));
    let on_stop = flag.clone();
    tokio::spawn(async move {
        stop.await;
        on_stop.store(true, Ordering::Relaxed);
    });
    let seed = sim.seed;
    let task = tokio::task::spawn_blocking(move || {
        lakehouse_simulator::run(&sim, &outputs, &flag, &mut |_| {})
            .map(|_| ())
            .map_err(anyhow::Error::from)
    });
    // the simulator writes its reference data as it starts
    let files = ["instruments.csv", "accounts.csv", "fx_rates.csv"].map(|f| refdata.join(f));
    for _ in 0..600 {
        if files.iter().all(|f| f.is_file()) || task.is_finished() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if task.is_finished() {
        task.await??;
        bail!("the simulator stopped at once");
    }
    let [i, a, f] = files;
    crate::refdata::load(cfg, Some(i), Some(a), Some(f))
        .await
        .context("cannot load the simulator's reference data")?;
    let text = format!(
        "simulator seed {seed:x} at {} msgs/s; ground truth {} (written when it stops)",
        cfg.simulate.rate,
        truth.display()
    );
    Ok((task, text))
}

/// The speed view's and serving's metrics, in the Prometheus text format.
fn role_metrics(served: &Served) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let mut gauge = |name: &str, help: &str, rows: Vec<(String, f64)>| {
        let _ = writeln!(out, "# HELP lakehouse_{name} {help}.");
        let _ = writeln!(out, "# TYPE lakehouse_{name} gauge");
        for (labels, v) in rows {
            let _ = writeln!(out, "lakehouse_{name}{labels} {v}");
        }
    };
    let (events, pending, watermark, offsets) = {
        let views = served.views();
        let offsets: Vec<(String, f64)> = views
            .consumed()
            .iter()
            .flat_map(|(t, parts)| {
                parts
                    .iter()
                    .map(move |(p, o)| (format!("{{topic=\"{t}\",partition=\"{p}\"}}"), *o as f64))
            })
            .collect();
        (
            views.events(),
            views.pending_restatement(),
            views.watermark(),
            offsets,
        )
    };
    gauge(
        "speed_events",
        "Events held by the speed view",
        vec![(String::new(), events as f64)],
    );
    gauge(
        "speed_next_offset",
        "Next offset the speed view reads, per partition",
        offsets,
    );
    if let Some(w) = watermark {
        gauge(
            "speed_watermark_seconds",
            "Event-time watermark of the live windows, epoch seconds",
            vec![(String::new(), w as f64 / 1e6)],
        );
    }
    gauge(
        "speed_late_events_pending",
        "Events of reported dates waiting for a restatement",
        vec![(String::new(), pending as f64)],
    );
    if let Some(run) = served.snapshot().run.as_ref() {
        gauge(
            "serving_batch_date_days",
            "Business date of the served batch run, days since 1970-01-01",
            vec![(String::new(), f64::from(run.date.days_since_epoch()))],
        );
    }
    out
}
