//! Switchyard's data plane: a stateless proxy replica that follows the control
//! plane's config stream and forwards HTTP traffic to the members of clusters.
//!
//! # Layout
//! - [`discovery`]: the config stream (hello, snapshots, ACK/NACK, reconnects)
//! - [`state`]: applying a snapshot (validate → compile → swap → cache)
//! - [`table`], [`routing`]: the compiled table and route matching
//! - [`balancer`], [`upstream`], [`health`]: picking members, their pools and health
//! - [`proxy`], [`body`]: the request path; [`server`]: accepting connections
//! - [`admin`]: `/healthz`, `/readyz`, `/config`; [`cache`]: the last good snapshot on disk
//! - [`cli`]: flags and `main`

pub mod admin;
pub mod balancer;
pub mod body;
pub mod cache;
pub mod cli;
pub mod discovery;
pub mod health;
pub mod proxy;
pub mod routing;
pub mod server;
pub mod state;
pub mod table;
pub mod upstream;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::cache::CacheWriter;
use crate::proxy::Proxy;
use crate::state::State;

/// What a replica needs besides its listeners.
#[derive(Debug, Clone)]
pub struct Settings {
    pub control_planes: Vec<String>,
    pub node_id: String,
    pub cache_file: Option<PathBuf>,
    pub shutdown_grace: Duration,
}

/// Runs a replica until `shutdown` turns true: loads the cache file, follows
/// the control plane, serves the proxy and the admin endpoint.
pub async fn run(
    listener: TcpListener,
    admin: TcpListener,
    settings: Settings,
    shutdown: watch::Receiver<bool>,
) -> Result<(), cache::CacheError> {
    let cache = settings.cache_file.clone().map(CacheWriter::spawn);
    let state = Arc::new(State::new(settings.node_id.clone(), cache));
    if let Some(path) = &settings.cache_file {
        load_cache(&state, path.clone()).await;
    }
    let proxy = Arc::new(Proxy::new(state.table(), &settings.node_id));
    let discovery = tokio::spawn(discovery::run(
        state.clone(),
        settings.control_planes.clone(),
        shutdown.clone(),
    ));
    let admin = tokio::spawn(admin::serve(admin, state.clone(), shutdown.clone()));
    server::serve(listener, proxy, shutdown, settings.shutdown_grace).await;
    discovery.abort();
    admin.abort();
    Ok(())
}

/// Resolves once `shutdown` turns true (or its sender is gone).
pub(crate) async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    // An error means the sender is gone: nobody is left to keep us running.
    drop(shutdown.wait_for(|stop| *stop).await);
}

/// Applies the cached snapshot, if there is a usable one.
async fn load_cache(state: &Arc<State>, path: PathBuf) {
    let state = state.clone();
    let loaded = tokio::task::spawn_blocking(move || -> Result<Option<u64>, String> {
        match cache::load(&path).map_err(|e| e.to_string())? {
            Some(snapshot) => state.apply(snapshot).map(|running| Some(running.version)),
            None => Ok(None),
        }
    })
    .await;
    match loaded {
        Ok(Ok(Some(version))) => info!(
            version,
            "Serving the cached snapshot until the control plane answers"
        ),
        Ok(Ok(None)) => info!("No cached snapshot yet"),
        Ok(Err(error)) => warn!(%error, "Ignoring the cache file"),
        Err(error) => warn!(%error, "Loading the cache file failed"),
    }
}
