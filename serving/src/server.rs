//! `lakehouse serve`: the gRPC server around [`Service`], with TLS, message limits, load
//! shedding, the standard health service, server reflection, the ledger poll that switches
//! to newly published batch runs, and graceful shutdown (in-flight requests finish, the audit
//! is flushed).

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;

use lakehouse_lake::Decimal;
use lakehouse_proto::v1::lakehouse_server::LakehouseServer;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};
use tracing::{info, warn};

use crate::auth::Entitlements;
use crate::config::ServingConfig;
use crate::service::Service;
use crate::state::Served;

/// Why serving stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Bad configuration.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The listener or the transport.
    #[error("transport: {0}")]
    Transport(String),
    /// The lake.
    #[error(transparent)]
    Lake(#[from] Box<lakehouse_lake::Error>),
}

/// Serves until `stop` resolves; `ready` gets the bound address (a `:0` port is chosen by the
/// system).
pub async fn serve(
    cfg: &ServingConfig,
    state: Served,
    large_trade_thresholds: BTreeMap<String, Decimal>,
    ready: impl FnOnce(SocketAddr),
    stop: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    cfg.validate().map_err(ServeError::Config)?;
    let auth = Entitlements::new(&cfg.principals);
    if auth.is_open() {
        warn!("no serving.principals configured: every caller is anonymous and sees every account");
    }
    let (audit, audit_task) = crate::audit::start(&state.lake, cfg.audit_flush)
        .await
        .map_err(|e| ServeError::Lake(Box::new(e)))?;
    if let Err(e) = state.refresh().await {
        warn!(error = %e, "cannot load the batch view yet; answering from the speed view");
    }
    // the ledger poll: a newly published run switches the views and the snapshot together
    let poll_state = state.clone();
    let every = cfg.ledger_poll;
    let poller = tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            if let Err(e) = poll_state.refresh().await {
                warn!(error = %e, "cannot refresh the batch view");
            }
        }
    });

    let service = Service::new(
        state,
        auth,
        audit,
        cfg.max_concurrent_requests,
        large_trade_thresholds,
        cfg.positions_max_age,
    );
    let api = LakehouseServer::new(service)
        .max_decoding_message_size(cfg.max_message_bytes)
        .max_encoding_message_size(cfg.max_message_bytes);
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<LakehouseServer<Service>>().await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(lakehouse_proto::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| ServeError::Config(format!("reflection: {e}")))?;

    let mut builder = Server::builder();
    if let Some(tls) = &cfg.tls {
        crate::install_tls_provider();
        let read = |p: &std::path::Path| {
            std::fs::read(p).map_err(|e| ServeError::Config(format!("{}: {e}", p.display())))
        };
        let mut t =
            ServerTlsConfig::new().identity(Identity::from_pem(read(&tls.cert)?, read(&tls.key)?));
        if let Some(ca) = &tls.client_ca {
            // a client may still use a bearer token instead of a certificate
            t = t
                .client_ca_root(Certificate::from_pem(read(ca)?))
                .client_auth_optional(true);
        }
        builder = builder
            .tls_config(t)
            .map_err(|e| ServeError::Config(format!("tls: {e}")))?;
    }
    let listener = tokio::net::TcpListener::bind(&cfg.listen)
        .await
        .map_err(|e| ServeError::Transport(format!("cannot listen on {}: {e}", cfg.listen)))?;
    let addr = listener
        .local_addr()
        .map_err(|e| ServeError::Transport(e.to_string()))?;
    info!(%addr, tls = cfg.tls.is_some(), "serving lakehouse.v1.Lakehouse");
    ready(addr);
    let result = builder
        .add_service(health_service)
        .add_service(reflection)
        .add_service(api)
        // without TCP_NODELAY a small answer waits for the peer's delayed ACK (~40 ms)
        .serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
            stop,
        )
        .await
        .map_err(|e| ServeError::Transport(e.to_string()));
    poller.abort();
    // every Service clone (and so every audit sender) is gone with the router: flush
    if tokio::time::timeout(std::time::Duration::from_secs(30), audit_task)
        .await
        .is_err()
    {
        warn!("the audit writer did not finish within 30 s");
    }
    result
}
