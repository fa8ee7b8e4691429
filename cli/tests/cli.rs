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
fn roles_not_built_yet_fail_clearly() {
    let out = lakehouse(&["speed", "--lake", "memory:///"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("not available in this build yet"),
        "{}",
        stderr(&out)
    );
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
