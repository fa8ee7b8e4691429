//! `lakehouse-serving`: the gRPC serving layer (`lakehouse.v1.Lakehouse`).
//!
//! - [`merge`]: the batch view (+) the speed view, exact, pure code.
//! - [`state`]: the published run's snapshot, loaded from the lake at its output versions,
//!   switched together with the speed layer's boundary.
//! - [`auth`]: bearer tokens (stored as SHA-256) and client certificates -> principals with
//!   desk and account scopes.
//! - [`audit`]: one `system/query_audit` row per request, allowed or refused; [`metrics`]: the
//!   same requests counted for Prometheus.
//! - [`service`]: the tonic service; [`server`]: TLS, limits, health, reflection, the ledger
//!   poll and graceful shutdown.

pub mod audit;
pub mod auth;
pub mod config;
pub mod merge;
pub mod metrics;
pub mod server;
pub mod service;
pub mod state;

pub use config::ServingConfig;
pub use server::serve;

/// Microseconds since the epoch as a protobuf timestamp.
pub fn timestamp(us: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: us.div_euclid(1_000_000),
        nanos: (us.rem_euclid(1_000_000) * 1000) as i32,
    }
}

/// Makes rustls' ring provider the process default (once; later calls do nothing). The
/// dependency tree enables both of rustls' providers, so it cannot choose by itself: a TLS
/// server or client must call this first.
pub fn install_tls_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
