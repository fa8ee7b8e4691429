//! Test harness: starts the real broker (tansu) and S3 server (moto) as processes on free
//! loopback ports and always tears them down (on drop, including on panic).
//!
//! Tools are found under `$LAKEHOUSE_CACHE` (default `~/.cache/lakehouse`), where
//! `scripts/setup.sh` installs them: `tools/bin/tansu` and the Python venv `venv/` (moto,
//! deltalake, pyarrow, polars).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

pub mod kafka;

/// Where `scripts/setup.sh` installs the tools.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("LAKEHOUSE_CACHE") {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("/tmp"), PathBuf::from);
    home.join(".cache").join("lakehouse")
}

fn tool(path: PathBuf, name: &str) -> Result<PathBuf> {
    if path.is_file() {
        Ok(path)
    } else {
        bail!(
            "{name} not found at {}: run scripts/setup.sh first",
            path.display()
        )
    }
}

/// The tansu broker binary.
pub fn tansu_bin() -> Result<PathBuf> {
    tool(cache_dir().join("tools/bin/tansu"), "tansu")
}

/// The `lakehouse` binary of this build, beside the test executable's `deps/` directory.
/// `cargo test --workspace` and `cargo nextest run --workspace` build it; a narrower run needs
/// `cargo build --bin lakehouse` first (building it from here would take the build lock and,
/// with another feature set, rebuild half the dependency tree).
pub fn lakehouse_bin() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .context("test executable has no target directory")?;
    let bin = dir.join("lakehouse");
    if bin.is_file() {
        Ok(bin)
    } else {
        bail!(
            "{} not found: run the tests with --workspace, or `cargo build --bin lakehouse` first",
            bin.display()
        )
    }
}

/// The Python interpreter of the project's venv.
pub fn python_bin() -> Result<PathBuf> {
    tool(cache_dir().join("venv/bin/python"), "python venv")
}

/// A free TCP port on 127.0.0.1, never one this process was given before: the port is
/// released when this returns, so the kernel may hand it out again, and a test that asked
/// for three ports once got the same one twice (its metrics and gRPC listeners collided).
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<std::collections::BTreeSet<u16>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("no free port on loopback");
        if given.insert(port) {
            return port;
        }
    }
}

/// A child process that is killed and reaped when dropped.
pub struct Proc {
    child: Child,
    /// The port it listens on.
    pub port: u16,
    name: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Proc {
    /// Spawns `program args` in `cwd` (default: a fresh temp dir), logging to a file in a temp
    /// dir, and waits until `port` accepts connections.
    pub fn spawn(
        name: &str,
        program: &Path,
        args: &[&str],
        port: u16,
        cwd: Option<&Path>,
    ) -> Result<Proc> {
        let dir = tempfile::tempdir()?;
        let log = dir.path().join(format!("{name}.log"));
        let out = std::fs::File::create(&log)?;
        let child = Command::new(program)
            .args(args)
            .current_dir(cwd.unwrap_or(dir.path()))
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("cannot start {}", program.display()))?;
        let mut proc = Proc {
            child,
            port,
            name: name.to_string(),
            log,
            _dir: dir,
        };
        proc.wait_listening(Duration::from_secs(30))?;
        Ok(proc)
    }

    fn wait_listening(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!("{} exited with {status}:\n{}", self.name, self.log_text());
            }
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "{} did not listen on {} in {timeout:?}:\n{}",
                    self.name,
                    self.port,
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// What the process printed so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `127.0.0.1:<port>`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts a tansu broker with its in-memory storage engine.
pub fn kafka() -> Result<Proc> {
    let port = free_port();
    let url = format!("tcp://127.0.0.1:{port}");
    Proc::spawn(
        "tansu",
        &tansu_bin()?,
        &[
            "broker",
            "--storage-engine",
            "memory://tansu/",
            "--listener-url",
            &url,
            "--advertised-listener-url",
            &url,
        ],
        port,
        None,
    )
}

/// Starts a tansu broker with its durable SQLite (libsql) engine in `dir`, so a restart on
/// the same `dir` keeps the topics.
pub fn kafka_durable(dir: &Path, port: u16) -> Result<Proc> {
    let url = format!("tcp://127.0.0.1:{port}");
    // tansu resolves the sqlite path against its working directory
    let db = "sqlite://tansu.db";
    Proc::spawn(
        "tansu-sqlite",
        &tansu_bin()?,
        &[
            "broker",
            "--storage-engine",
            db,
            "--listener-url",
            &url,
            "--advertised-listener-url",
            &url,
        ],
        port,
        Some(dir),
    )
}

/// An S3-compatible server process (moto) with helpers for buckets.
pub struct S3 {
    /// The server process.
    pub proc: Proc,
}

impl S3 {
    /// `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.proc.port)
    }

    /// Creates a bucket (unsigned path-style `PUT /bucket`, which moto accepts).
    pub fn create_bucket(&self, bucket: &str) -> Result<()> {
        let status = http_request(self.proc.port, "PUT", &format!("/{bucket}"))?;
        if !(200..300).contains(&status) {
            bail!("creating bucket {bucket} answered HTTP {status}");
        }
        Ok(())
    }
}

/// Starts moto's S3 server on a free port.
pub fn s3() -> Result<S3> {
    let port = free_port();
    let moto = tool(cache_dir().join("venv/bin/moto_server"), "moto_server")?;
    let port_s = port.to_string();
    let proc = Proc::spawn(
        "moto",
        &moto,
        &["-H", "127.0.0.1", "-p", &port_s],
        port,
        None,
    )?;
    Ok(S3 { proc })
}

/// A minimal HTTP/1.1 request with an empty body; returns the status code.
pub fn http_request(port: u16, method: &str, path: &str) -> Result<u16> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .with_context(|| format!("bad HTTP response: {text}"))?;
    Ok(status)
}

/// A header-stripping HTTP proxy (to simulate endpoints that ignore conditional put).
pub mod proxy;
