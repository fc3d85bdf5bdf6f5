//! Switchyard's control plane: it owns the config (clusters, members, routes),
//! validates and persists every change, and pushes each new version to every
//! connected data plane, keeping track of what each replica runs.
//!
//! # Layout
//!
//! - [`cli`]: flags, logging, runtime, signals; the thin binary calls [`cli::main`].
//! - [`store`]: the current snapshot, its durable state file (or etcd:
//!   [`store::etcd`]), and the `watch` channel every config stream follows.
//! - [`api`]: the REST API (axum), [`api::router`].
//! - [`access`]: API tokens (`Authorization: Bearer`) the API asks for.
//! - [`dashboard`]: the page at `/` (HTML, CSS, JS compiled in) over the API.
//! - [`discovery`]: the gRPC config stream (tonic) to the data planes.
//! - [`registry`]: every replica seen since start, what it runs, what it refused.
//! - [`peers`]: with etcd, the replicas of the other control-plane nodes.
//! - [`metrics`]: the metrics of `/metrics` (prometheus-client, OpenMetrics text).
//! - [`import`]: `import-apache`, Apache mod_proxy configuration translated.
//! - [`ctl`]: the `switchyard` command line over the REST API.
//!
//! [`run`] ties them together on two listeners, so the same server runs in
//! the binary and in-process in tests.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{info, warn};

pub mod access;
pub mod api;
pub mod cli;
pub mod ctl;
pub mod dashboard;
pub mod discovery;
pub mod import;
pub mod metrics;
pub mod peers;
pub mod registry;
pub mod store;
#[cfg(test)]
mod test_support;

pub use api::{AppState, router};
pub use store::{Store, StoreError};

/// The default state file, relative to the working directory.
pub const DEFAULT_STATE_FILE: &str = "switchyard-state.json";
/// How long in-flight requests and streams get to finish after a shutdown signal.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// What [`run`] needs besides its listeners.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Where the store keeps its snapshot (JSON), written durably on every change.
    pub state_file: PathBuf,
    /// Keep the snapshot in etcd instead of `state_file` (`--store etcd://…`).
    pub etcd: Option<store::etcd::EtcdOptions>,
    /// A config document applied when the store is empty (no state file yet,
    /// or one never written to).
    pub bootstrap: Option<PathBuf>,
    /// How long in-flight work may take after the shutdown signal before it is cut.
    pub shutdown_grace: Duration,
    /// How bursts of writes are gathered into one push.
    pub coalesce: discovery::Coalesce,
    /// The API tokens the REST API asks for (none: the API is open).
    pub api_access: Arc<access::ApiAccess>,
    /// TLS on the config stream's listener, mutual with a client CA (none: plaintext).
    pub grpc_tls: Option<discovery::GrpcTls>,
}

impl Settings {
    /// Settings with the given state file, no bootstrap and the default grace period.
    pub fn new(state_file: impl Into<PathBuf>) -> Self {
        Settings {
            state_file: state_file.into(),
            etcd: None,
            bootstrap: None,
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
            coalesce: discovery::Coalesce::default(),
            api_access: Arc::new(access::ApiAccess::open()),
            grpc_tls: None,
        }
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings::new(DEFAULT_STATE_FILE)
    }
}

/// Why the control plane could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot read the address of the {which} listener: {source}")]
    Listener {
        which: &'static str,
        source: std::io::Error,
    },
    #[error("the REST API server failed: {0}")]
    Api(std::io::Error),
    #[error("the gRPC server failed: {0}")]
    Grpc(tonic::transport::Error),
}

/// Runs the control plane on two bound listeners until `shutdown` completes,
/// then shuts down gracefully: stop accepting, end the config streams, let
/// in-flight requests finish within [`Settings::shutdown_grace`].
///
/// Opens (or creates) the store first: a corrupt state file or an invalid
/// bootstrap file is an error before anything listens. Once both servers are
/// about to accept, logs one `Listening` line with `api.addr` and `grpc.addr`.
pub async fn run(
    api: TcpListener,
    grpc: TcpListener,
    settings: Settings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let api_addr = api.local_addr().map_err(|source| Error::Listener {
        which: "API",
        source,
    })?;
    let grpc_addr = grpc.local_addr().map_err(|source| Error::Listener {
        which: "gRPC",
        source,
    })?;
    let location = match &settings.etcd {
        Some(etcd) => store::Location::Etcd(etcd.clone()),
        None => store::Location::File(settings.state_file.clone()),
    };
    let store = Store::open_at(location, settings.bootstrap.clone()).await?;
    let registry = Arc::new(registry::Registry::new());
    let metrics = Arc::new(metrics::Metrics::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    let discovery = discovery::Discovery::new(
        store.clone(),
        registry.clone(),
        metrics.clone(),
        stop_rx.clone(),
        settings.coalesce,
    );
    if !settings.api_access.is_protected() {
        warn!(
            "No API token configured: anyone who reaches the REST API can change the config (see --api-token-file)"
        );
    }
    // With etcd: this node's replicas published for the other nodes, theirs read.
    let peers = peers::Peers::start(&store, registry.clone()).map(Arc::new);
    let app = router(
        AppState::new(store, registry, metrics)
            .with_access(settings.api_access.clone())
            .with_peers(peers.clone()),
    );

    match &settings.grpc_tls {
        Some(tls) if tls.is_mutual() => info!(
            "Config stream over mutual TLS: each replica's node id is the one its certificate names"
        ),
        Some(_) => {
            info!("Config stream over TLS (no --grpc-client-ca: replicas are not authenticated)")
        }
        None => {}
    }
    info!(api.addr = %api_addr, grpc.addr = %grpc_addr, "Listening");
    let api_server = async {
        axum::serve(api, app)
            .with_graceful_shutdown(stopped(stop_rx.clone()))
            .await
            .map_err(Error::Api)
    };
    let grpc_server = discovery::serve(
        grpc,
        settings.grpc_tls.clone(),
        discovery.clone(),
        stopped(stop_rx.clone()),
    );
    let servers = async { tokio::try_join!(api_server, grpc_server).map(|_| ()) };
    let grace = settings.shutdown_grace;
    let result = tokio::select! {
        result = servers => result,
        () = async {
            shutdown.await;
            info!("Shutting down");
            stop_tx.send_replace(true);
            tokio::time::sleep(grace).await;
        } => {
            warn!(grace = ?grace, "Grace period over; closing what is left");
            Ok(())
        }
    };
    // Ends the config streams if the servers stopped on their own (an error).
    stop_tx.send_replace(true);
    discovery.close(grace).await;
    if let Some(peers) = peers {
        peers.close().await;
    }
    info!("Stopped");
    result
}

/// Completes once the stop flag turns true (or its sender is gone).
async fn stopped(mut stop: watch::Receiver<bool>) {
    // An error means the sender is gone, which means stop as well.
    drop(stop.wait_for(|stop| *stop).await);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::TempDir;

    #[tokio::test]
    async fn run_serves_until_shutdown_and_keeps_its_state() {
        let dir = TempDir::new("run");
        let mut settings = Settings::new(dir.join("state.json"));
        settings.shutdown_grace = Duration::from_secs(30);
        let api = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let grpc = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let grpc_addr = grpc.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(run(api, grpc, settings.clone(), async {
            drop(stopped.await);
        }));

        // A replica stream is open while the shutdown starts.
        let mut client =
            switchyard_shared::proto::v1::config_discovery_client::ConfigDiscoveryClient::connect(
                format!("http://{grpc_addr}"),
            )
            .await
            .unwrap();
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        let hello = switchyard_shared::proto::v1::Hello {
            node_id: "dp-1".into(),
            ..Default::default()
        };
        tx.send(switchyard_shared::proto::v1::DataPlaneMessage {
            kind: Some(switchyard_shared::proto::v1::data_plane_message::Kind::Hello(hello)),
        })
        .await
        .unwrap();
        let mut inbound = client
            .stream(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .unwrap()
            .into_inner();

        stop.send(()).unwrap();
        let ended = tokio::time::timeout(Duration::from_secs(10), inbound.message()).await;
        assert!(matches!(ended, Ok(Ok(None))), "{ended:?}");
        tokio::time::timeout(Duration::from_secs(10), server)
            .await
            .expect("run returns before its grace period")
            .unwrap()
            .unwrap();
        assert!(dir.join("state.json").exists());
    }
}
