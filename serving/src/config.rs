//! `[serving]` configuration.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How `lakehouse serve` listens and whom it lets in.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct ServingConfig {
    /// Address to listen on.
    pub listen: String,
    /// Requests served at once; beyond, requests are refused with RESOURCE_EXHAUSTED.
    pub max_concurrent_requests: usize,
    /// Largest request or response message, bytes.
    pub max_message_bytes: usize,
    /// How often the run ledger is read for a newly published batch run.
    #[serde(with = "humantime_serde")]
    pub ledger_poll: Duration,
    /// How often audit rows are appended to `system/query_audit`.
    #[serde(with = "humantime_serde")]
    pub audit_flush: Duration,
    /// How old the merged book of positions (behind GetPositions, GetExposure and
    /// WatchPositions) may get while events arrive before it is merged again; `0s` merges on
    /// every change. Each answer names the offsets it covers either way.
    #[serde(with = "humantime_serde")]
    pub positions_max_age: Duration,
    /// Prometheus metrics (requests, latency, rows) on http://ADDR/metrics; unset: off.
    /// `lakehouse up` serves every role's on `[up] metrics-listen` instead.
    #[serde(default)]
    pub metrics_listen: Option<String>,
    /// TLS (rustls); plaintext without it.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// Who may call. With none configured, every caller is anonymous and sees everything
    /// (for local use; the server says so at start).
    #[serde(default)]
    pub principals: Vec<PrincipalConfig>,
}

impl Default for ServingConfig {
    fn default() -> Self {
        ServingConfig {
            listen: "127.0.0.1:50051".into(),
            max_concurrent_requests: 256,
            max_message_bytes: 4 << 20,
            ledger_poll: Duration::from_secs(2),
            audit_flush: Duration::from_secs(1),
            positions_max_age: Duration::from_millis(100),
            metrics_listen: None,
            tls: None,
            principals: Vec::new(),
        }
    }
}

/// Server certificate and key (PEM files); with `client-ca`, clients must present a
/// certificate it signed (mTLS).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct TlsConfig {
    /// Certificate chain, PEM.
    pub cert: std::path::PathBuf,
    /// Private key, PEM.
    pub key: std::path::PathBuf,
    /// CA certificates (PEM) that sign client certificates; enables mTLS.
    #[serde(default)]
    pub client_ca: Option<std::path::PathBuf>,
}

/// One principal: its credentials and its scope.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct PrincipalConfig {
    /// Name, as written to the audit table.
    pub name: String,
    /// SHA-256 of its bearer token, hex (`printf %s TOKEN | sha256sum`). The token itself is
    /// never stored.
    #[serde(default)]
    pub token_sha256: Option<String>,
    /// SHA-256 of its mTLS client certificate (DER), hex.
    #[serde(default)]
    pub cert_sha256: Option<String>,
    /// Desks whose accounts it sees; `"*"` for all.
    #[serde(default)]
    pub desks: Vec<String>,
    /// Further accounts it sees; `"*"` for all.
    #[serde(default)]
    pub accounts: Vec<String>,
}

impl ServingConfig {
    /// Checks what can be checked without the network.
    pub fn validate(&self) -> Result<(), String> {
        self.listen
            .parse::<std::net::SocketAddr>()
            .map_err(|e| format!("serving.listen {:?}: {e}", self.listen))?;
        if self.max_concurrent_requests == 0 {
            return Err("serving.max-concurrent-requests must be at least 1".into());
        }
        if self.positions_max_age > Duration::from_secs(60) {
            return Err("serving.positions-max-age is at most 60s".into());
        }
        if self.max_message_bytes < 1024 {
            return Err("serving.max-message-bytes must be at least 1024".into());
        }
        let mut names = std::collections::BTreeSet::new();
        for p in &self.principals {
            if !names.insert(&p.name) {
                return Err(format!("serving.principals: {} is defined twice", p.name));
            }
            if p.token_sha256.is_none() && p.cert_sha256.is_none() {
                return Err(format!(
                    "serving.principals: {} has neither token-sha256 nor cert-sha256",
                    p.name
                ));
            }
            for h in [&p.token_sha256, &p.cert_sha256].into_iter().flatten() {
                if h.len() != 64 || !h.chars().all(|c| c.is_ascii_hexdigit()) {
                    return Err(format!(
                        "serving.principals: {}: {h:?} is not a SHA-256 in hex (64 digits)",
                        p.name
                    ));
                }
            }
            if p.desks.is_empty() && p.accounts.is_empty() {
                return Err(format!(
                    "serving.principals: {} has an empty scope (give desks or accounts)",
                    p.name
                ));
            }
        }
        if self.principals.iter().any(|p| p.cert_sha256.is_some())
            && self.tls.as_ref().is_none_or(|t| t.client_ca.is_none())
        {
            return Err(
                "serving.principals name client certificates but serving.tls.client-ca is not set"
                    .into(),
            );
        }
        Ok(())
    }
}
