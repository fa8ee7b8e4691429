//! The `lakehouse` binary as users drive it.

use std::path::Path;
use std::process::{Command, Output};

fn lakehouse(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lakehouse"))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).to_string()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

fn refdata(name: &str) -> String {
    format!("{}/../examples/refdata/{name}", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn help_lists_every_subcommand_of_the_contract() {
    let out = lakehouse(&["--help"]);
    assert!(out.status.success());
    let text = stdout(&out);
    for cmd in [
        "up", "ingest", "speed", "batch", "serve", "simulate", "query", "refdata", "table",
    ] {
        assert!(
            text.contains(&format!("\n  {cmd} ")),
            "--help lacks {cmd}:\n{text}"
        );
    }
    let table = stdout(&lakehouse(&["table", "--help"]));
    for cmd in ["list", "history", "describe", "optimize", "vacuum"] {
        assert!(
            table.contains(&format!("\n  {cmd} ")),
            "table --help lacks {cmd}:\n{table}"
        );
    }
    let batch = stdout(&lakehouse(&["batch", "run", "--help"]));
    for flag in ["--date", "--from", "--to", "--lake", "--config"] {
        assert!(
            batch.contains(flag),
            "batch run --help lacks {flag}:\n{batch}"
        );
    }
    let sim = stdout(&lakehouse(&["simulate", "--help"]));
    for flag in ["--seed", "--truth", "--refdata", "--brokers"] {
        assert!(sim.contains(flag), "simulate --help lacks {flag}");
    }
    let query = stdout(&lakehouse(&["query", "--help"]));
    for flag in ["--server", "--token"] {
        assert!(query.contains(flag), "query --help lacks {flag}");
    }
    for cmd in ["up", "serve"] {
        assert!(stdout(&lakehouse(&[cmd, "--help"])).contains("--listen"));
    }
    let load = stdout(&lakehouse(&["refdata", "load", "--help"]));
    for flag in ["--instruments", "--accounts", "--fx"] {
        assert!(load.contains(flag));
    }
}

#[test]
fn unknown_config_key_is_an_error_naming_key_and_file() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.toml");
    std::fs::write(&cfg, "[kafka]\nbrokers = \"x:1\"\nbroker-list = \"y\"\n").unwrap();
    let out = lakehouse(&["table", "list", "--config", cfg.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("broker-list"), "{err}");
    assert!(err.contains(cfg.to_str().unwrap()), "{err}");
}

#[test]
fn refdata_load_then_list_history_and_time_travel() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let lake = lake.to_str().unwrap();
    // a config file gives the lake; the flag would override it
    let cfg = dir.path().join("lh.toml");
    std::fs::write(&cfg, format!("[lake]\nroot = {lake:?}\n")).unwrap();
    let cfg = cfg.to_str().unwrap();

    let out = lakehouse(&["table", "list", "--config", cfg]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("l1/ref_instruments"));

    for _ in 0..2 {
        let out = lakehouse(&[
            "refdata",
            "load",
            "--config",
            cfg,
            "--instruments",
            &refdata("instruments.csv"),
            "--accounts",
            &refdata("accounts.csv"),
            "--fx",
            &refdata("fx_rates.csv"),
        ]);
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(stdout(&out).contains("4 instruments"), "{}", stdout(&out));
    }
    let list = stdout(&lakehouse(&["table", "list", "--config", cfg]));
    let line = list
        .lines()
        .find(|l| l.starts_with("l1/ref_instruments"))
        .unwrap();
    // version 0 = create, 1 and 2 = the two loads
    assert!(line.split_whitespace().nth(2) == Some("2"), "{line}");

    let hist = stdout(&lakehouse(&[
        "table",
        "history",
        "l1/ref_fx_rates",
        "--config",
        cfg,
    ]));
    assert!(hist.contains("WRITE"), "{hist}");
    assert!(hist.contains("2024-01-03"), "{hist}");

    let desc = stdout(&lakehouse(&[
        "table",
        "describe",
        "l1/ref_instruments",
        "--lake",
        lake,
        "--version",
        "0",
    ]));
    assert!(desc.contains("version:    0"), "{desc}");
    assert!(desc.contains("files:      0"), "{desc}");
    assert!(desc.contains("Decimal128(38, 8)"), "{desc}");
    let desc = stdout(&lakehouse(&[
        "table",
        "describe",
        "l1/ref_instruments",
        "--lake",
        lake,
    ]));
    assert!(desc.contains("files:      1"), "{desc}");

    let missing = lakehouse(&["table", "describe", "l3/nothing", "--lake", lake]);
    assert!(!missing.status.success());
    assert!(
        stderr(&missing).contains("does not exist"),
        "{}",
        stderr(&missing)
    );
}

#[test]
fn bad_csv_names_file_and_line_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let csv = dir.path().join("instruments.csv");
    std::fs::write(
        &csv,
        "symbol,isin,asset_class,currency,tick_size,lot_size\nAAPL,US0378331005,EQUITY,USD,0.01,1\nMSFT,US5949181045,EQUITY,USD,0.0.1,1\n",
    )
    .unwrap();
    let out = lakehouse(&[
        "refdata",
        "load",
        "--lake",
        lake.to_str().unwrap(),
        "--instruments",
        csv.to_str().unwrap(),
        "--accounts",
        &refdata("accounts.csv"),
    ]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("line 3") && err.contains("instruments.csv"),
        "{err}"
    );
    // validation happens before any write: no table was even created
    assert!(!Path::new(&lake).join("l1/ref_accounts").exists());
}

#[test]
fn up_needs_a_place_for_its_local_broker_beside_a_remote_lake() {
    for args in [
        &["up", "--lake", "memory:///"][..],
        &["up", "--simulate", "--lake", "memory:///"],
    ] {
        let out = lakehouse(args);
        assert!(!out.status.success(), "{args:?}");
        assert!(
            stderr(&out).contains("[up] broker-data"),
            "{}",
            stderr(&out)
        );
    }
}

#[test]
fn serve_refuses_a_bad_serving_section_before_listening() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("lh.toml");
    for (text, expect) in [
        ("[serving]\nlisten = \"nowhere\"\n", "serving.listen"),
        (
            "[[serving.principals]]\nname = \"a\"\ndesks = [\"EQ\"]\n",
            "neither token-sha256 nor cert-sha256",
        ),
        (
            "[[serving.principals]]\nname = \"a\"\ntoken-sha256 = \"abc\"\ndesks = [\"EQ\"]\n",
            "not a SHA-256",
        ),
        (
            "[[serving.principals]]\nname = \"a\"\ntoken-sha256 = \"0000000000000000000000000000000000000000000000000000000000000000\"\n",
            "empty scope",
        ),
    ] {
        std::fs::write(&cfg, text).unwrap();
        let out = lakehouse(&[
            "serve",
            "--config",
            cfg.to_str().unwrap(),
            "--lake",
            "memory:///",
        ]);
        assert!(!out.status.success(), "{text}");
        assert!(stderr(&out).contains(expect), "{text}: {}", stderr(&out));
    }
}

#[test]
fn ingest_refuses_a_bad_ingest_section_before_connecting() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("lh.toml");
    for (text, expect) in [
        ("[ingest]\ntopics = []\n", "topics is empty"),
        (
            "[[ingest.topics]]\ntopic = \"t\"\nkind = \"quotes\"\n",
            "quotes",
        ),
        (
            "[[ingest.topics]]\ntopic = \"t\"\nkind = \"orders\"\nformat = \"avro\"\n",
            "avro",
        ),
    ] {
        std::fs::write(&cfg, text).unwrap();
        let out = lakehouse(&[
            "ingest",
            "--config",
            cfg.to_str().unwrap(),
            "--lake",
            "memory:///",
        ]);
        assert!(!out.status.success());
        assert!(stderr(&out).contains(expect), "{text}: {}", stderr(&out));
    }
}

#[test]
fn simulate_refuses_bad_settings_and_writes_truth_and_refdata_in_a_dry_run() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("lh.toml");
    std::fs::write(&cfg, "[simulate]\nduplicate = 2.0\n").unwrap();
    let out = lakehouse(&["simulate", "--config", cfg.to_str().unwrap(), "--dry-run"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("duplicate"), "{}", stderr(&out));
    for (args, expect) in [
        (&["--rate", "0"][..], "rate must be positive"),
        (&["--tape-format", "xml"][..], "unknown format \"xml\""),
        (&["--format", "finnhub"][..], "tape-format"),
        (
            &["--rate", "10", "--as-fast-as-possible"][..],
            "cannot be used with",
        ),
    ] {
        let out = lakehouse(&[&["simulate", "--dry-run", "--events", "10"][..], args].concat());
        assert!(!out.status.success(), "{args:?}");
        assert!(stderr(&out).contains(expect), "{args:?}: {}", stderr(&out));
    }
    let truth = dir.path().join("t/truth.parquet");
    let refdir = dir.path().join("ref");
    let out = lakehouse(&[
        "simulate",
        "--dry-run",
        "--as-fast-as-possible",
        "--events",
        "5000",
        "--seed",
        "9",
        "--truth",
        truth.to_str().unwrap(),
        "--refdata",
        refdir.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("seed 9") && text.contains("dry run"),
        "{text}"
    );
    assert!(truth.is_file());
    // what it wrote loads as reference data
    let lake = dir.path().join("lake");
    let out = lakehouse(&[
        "refdata",
        "load",
        "--lake",
        lake.to_str().unwrap(),
        "--instruments",
        refdir.join("instruments.csv").to_str().unwrap(),
        "--accounts",
        refdir.join("accounts.csv").to_str().unwrap(),
        "--fx",
        refdir.join("fx_rates.csv").to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("20 instruments"), "{}", stdout(&out));
}

#[test]
fn simulate_stops_cleanly_on_sigterm_with_a_complete_truth_file() {
    let dir = tempfile::tempdir().unwrap();
    let truth = dir.path().join("truth.parquet");
    let mut child = Command::new(env!("CARGO_BIN_EXE_lakehouse"))
        .args(["simulate", "--dry-run", "--rate", "5000", "--truth"])
        .arg(&truth)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_secs(3));
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let started = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(30),
            "still running"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let rows: u64 = text
        .split("ground truth: ")
        .nth(1)
        .and_then(|s| s.split('(').nth(1))
        .and_then(|s| s.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{text}"));
    assert!(rows > 5000, "{text}");
    assert!(truth.is_file(), "the truth file was renamed into place");
    assert!(!dir.path().join("truth.parquet.partial").exists());
    // the footer is there: the file opens as Parquet (magic at both ends)
    let bytes = std::fs::read(&truth).unwrap();
    assert_eq!(&bytes[..4], b"PAR1");
    assert_eq!(&bytes[bytes.len() - 4..], b"PAR1");
}

#[test]
fn batch_schedule_serves_its_metrics_and_stops_on_sigterm() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cfg = dir.path().join("c.toml");
    std::fs::write(
        &cfg,
        format!(
            "[lake]\nroot = \"{}\"\n\n[batch]\nretries = 0\nmetrics-listen = \"127.0.0.1:{port}\"\n",
            dir.path().join("lake").display()
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_lakehouse"))
        .arg("--config")
        .arg(&cfg)
        .args(["batch", "schedule"])
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    let text = loop {
        let scraped = std::net::TcpStream::connect(("127.0.0.1", port)).and_then(|mut s| {
            s.write_all(b"GET /metrics HTTP/1.1\r\nhost: x\r\n\r\n")?;
            let mut out = String::new();
            s.read_to_string(&mut out)?;
            Ok(out)
        });
        // (until it listens: a refused or empty connection is tried again)
        // the catch-up of the last week's dates (on an empty lake) is done when none is pending
        if let Ok(t) = scraped
            && t.starts_with("HTTP/1.1 200")
            && t.contains("\nlakehouse_batch_pending_dates 0\n")
        {
            break t;
        }
        assert!(child.try_wait().unwrap().is_none(), "batch schedule exited");
        assert!(started.elapsed() < std::time::Duration::from_secs(60));
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let value = |name: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in\n{text}"))
    };
    let runs = value("lakehouse_batch_runs_total{status=\"succeeded\"}");
    assert!(runs >= 1, "{text}");
    assert_eq!(value("lakehouse_batch_run_seconds_count"), runs);
    assert_eq!(value("lakehouse_batch_retries_total"), 0);
    assert!(
        value("lakehouse_batch_published_date_days") > 20_000,
        "{text}"
    );
    assert!(text.trim_end().ends_with("# EOF"), "{text}");
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("batch scheduler stopped"));
}
