//! `lakehouse batch run`: the end-of-day job chain for one date or a range.

use std::io::{IsTerminal, Write};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use lakehouse_batch::Runner;
use lakehouse_batch::schedule::Scheduler;
use lakehouse_lake::{BusinessDate, Lake, PipelineId};
use tracing::info;

use crate::config::Config;

/// The dates of `--date` or `--from`/`--to`, in order.
pub(crate) fn dates(
    date: Option<&str>,
    from: Option<&str>,
    to: Option<&str>,
) -> Result<Vec<BusinessDate>> {
    let parse = |flag: &str, s: &str| -> Result<BusinessDate> {
        s.parse()
            .with_context(|| format!("--{flag} {s:?} is not a date YYYY-MM-DD"))
    };
    match (date, from, to) {
        (Some(d), None, None) => Ok(vec![parse("date", d)?]),
        (None, Some(f), Some(t)) => {
            let (f, t) = (parse("from", f)?, parse("to", t)?);
            if f > t {
                bail!("--from {f} is after --to {t}");
            }
            Ok(f.0
                .iter_days()
                .take_while(|d| *d <= t.0)
                .map(BusinessDate)
                .collect())
        }
        _ => bail!("give --date D, or --from D1 --to D2"),
    }
}

pub(crate) fn runner(cfg: &Config, lake: Lake) -> Result<Runner> {
    Ok(Runner::new(
        lake,
        cfg.calendar.calendar()?,
        cfg.batch.params(),
        PipelineId::new(cfg.ingest.pipeline.clone()),
    ))
}

pub(crate) async fn run(cfg: Config, dates: Vec<BusinessDate>) -> Result<String> {
    let lake = Lake::open(&cfg.lake).await?;
    let runner = runner(&cfg, lake)?;
    let started = Instant::now();
    let total = dates.len();
    let tty = std::io::stderr().is_terminal();
    let mut out = String::new();
    for (i, date) in dates.into_iter().enumerate() {
        if total > 1 {
            progress(tty, i, total, started, &format!("running {date}"));
        }
        let report = runner
            .run(date)
            .await
            .with_context(|| format!("batch run of {date} failed (nothing published for it)"))?;
        info!(%date, run_id = %report.run_id, seconds = report.seconds, "published");
        for d in &report.restated {
            out.push_str(&format!(
                "{d}: restated first (late events since it was served)\n"
            ));
        }
        out.push_str(&format!(
            "{date}: published run {} in {:.1} s: {}\n",
            report.run_id,
            report.seconds,
            report
                .rows
                .iter()
                .map(|(t, n)| format!("{t}={n}"))
                .collect::<Vec<_>>()
                .join(" ")
        ));
    }
    if total > 1 {
        progress(tty, total, total, started, "done");
        if tty {
            eprintln!();
        }
    }
    Ok(out)
}

/// `lakehouse batch schedule`: catch up, then run at every firing until SIGINT/SIGTERM.
pub(crate) async fn schedule(cfg: Config) -> Result<String> {
    let stop = crate::ingest::stop_signal()?;
    let calendar = cfg.calendar.calendar()?;
    let schedule = cfg
        .batch
        .schedule(calendar)
        .map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))?;
    let lake = Lake::open(&cfg.lake).await?;
    let scheduler = Scheduler::new(
        runner(&cfg, lake)?,
        schedule,
        cfg.batch.retry(),
        cfg.batch.catch_up,
        cfg.batch.maintenance.clone(),
    );
    if let Some(addr) = &cfg.batch.metrics_listen {
        let m = scheduler.metrics().clone();
        crate::metrics_endpoint(addr, move || lakehouse_lake::metrics::join(&[&m.render()]))
            .await?;
    }
    let crons: Vec<String> = scheduler
        .schedule()
        .crons()
        .iter()
        .map(ToString::to_string)
        .collect();
    info!(
        schedule = %crons.join(" | "),
        time_zone = %calendar.time_zone(),
        catch_up = %humantime::format_duration(cfg.batch.catch_up),
        "batch scheduler started"
    );
    scheduler.run(stop).await?;
    Ok("batch scheduler stopped\n".into())
}

/// A one-line progress bar on a terminal, a log line per step otherwise.
fn progress(tty: bool, done: usize, total: usize, started: Instant, what: &str) {
    let width = 30;
    let filled = done * width / total.max(1);
    let elapsed = started.elapsed().as_secs_f64();
    let eta = if done > 0 {
        elapsed / done as f64 * (total - done) as f64
    } else {
        0.0
    };
    let line = format!(
        "[{}{}] {done}/{total} dates, {elapsed:.0} s elapsed, ~{eta:.0} s left: {what}",
        "#".repeat(filled),
        " ".repeat(width - filled)
    );
    if tty {
        let mut e = std::io::stderr().lock();
        let _ = write!(e, "\r\x1b[2K{line}");
        let _ = e.flush();
    } else {
        eprintln!("{line}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_of_the_flags() {
        assert_eq!(dates(Some("2026-01-05"), None, None).unwrap().len(), 1);
        let r = dates(None, Some("2026-01-05"), Some("2026-01-09")).unwrap();
        assert_eq!(r.len(), 5);
        assert_eq!(r[4].to_string(), "2026-01-09");
        assert!(dates(None, Some("2026-01-09"), Some("2026-01-05")).is_err());
        assert!(dates(Some("Jan 5"), None, None).is_err());
    }
}
