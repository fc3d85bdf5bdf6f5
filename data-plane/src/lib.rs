//! Switchyard's data plane: a stateless proxy replica that follows the control
//! plane's config stream and forwards HTTP traffic to the members of clusters.
//!
//! # Layout
//! - [`listener`]: the client side — accepting connections, telling HTTP/1.1 from h2c, TLS
//! - [`proxy`]: the request path (route → select → rewrite → forward → respond)
//! - [`config`]: the config stream, applying a snapshot, the compiled table and routing
//! - [`balancer`]: picking a member of a cluster
//! - [`upstream`]: members — their connections (HTTP/1.1 codec, exchange, pool, TLS)
//! - [`health`]: active health checks
//! - [`admin`]: `/healthz`, `/readyz`, `/config`, `/members`, `/metrics`
//! - [`cli`]: flags and `main`

pub mod admin;
pub mod balancer;
pub mod cli;
pub mod config;
pub mod health;
pub mod listener;
pub mod proxy;
pub mod upstream;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};
use tokio_rustls::TlsAcceptor;
use tracing::{info, warn};

use crate::config::apply::State;
use crate::config::cache::{self, CacheWriter};
use crate::config::discovery;
use crate::proxy::Proxy;

/// Why a replica could not run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("worker {0}: {1}")]
    Worker(usize, std::io::Error),
    #[error("--access-log: {0}")]
    AccessLog(std::io::Error),
}

/// What a replica needs besides its listeners.
#[derive(Debug, Clone)]
pub struct Settings {
    pub control_planes: Vec<String>,
    pub node_id: String,
    pub cache_file: Option<PathBuf>,
    /// The client-side clocks and limits, and the drain timeout.
    pub client: listener::ClientLimits,
    /// The longest request target accepted (414 beyond).
    pub max_uri: usize,
    /// How long a request body may stall between two bytes (408).
    pub client_body_timeout: Duration,
    /// The TLS client config of connections to `https://` members, made once
    /// at start-up ([`upstream::tls::client_config`]).
    pub upstream_tls: Arc<rustls::ClientConfig>,
    /// Snapshots with more members than this are refused (`None`: no limit).
    pub max_members: Option<usize>,
    /// TLS of the config stream to `https://` control planes (CA, and this
    /// replica's certificate for mutual TLS); `None` when they are `http://`.
    pub control_plane_tls: Option<tonic::transport::ClientTlsConfig>,
    /// `--access-log`: where and how; `None`: off.
    pub access_log: Option<(listener::access_log::Target, listener::access_log::Format)>,
}

/// The TLS listener (`--tls-listen`): one listener per worker (bound like
/// the plain ones, [`bind_workers`]), the certificates, the server config made
/// with them, and what tells the certificate watcher to reload (SIGHUP).
#[derive(Debug)]
pub struct TlsListeners {
    pub listeners: Vec<std::net::TcpListener>,
    pub certificates: Arc<listener::tls::Certificates>,
    pub config: Arc<rustls::ServerConfig>,
    pub reload: Arc<Notify>,
}

/// Runs a replica until `shutdown` turns true: loads the cache file, follows
/// the control plane, serves the admin endpoint on the calling runtime, and
/// the proxy on one worker thread per listener.
///
/// Each worker runs its own single-threaded runtime on its own listener (bound
/// with `SO_REUSEPORT` to the same address, see [`bind_workers`]) with its own
/// connection pools: a request never crosses threads, as in nginx's workers.
/// With `tls`, each worker also serves its TLS listener, and the certificate
/// watcher runs beside the admin endpoint.
pub async fn run(
    listeners: Vec<std::net::TcpListener>,
    tls: Option<TlsListeners>,
    admin: TcpListener,
    settings: Settings,
    shutdown: watch::Receiver<bool>,
) -> Result<(), Error> {
    upstream::set_workers(listeners.len());
    upstream::tls::set_client_config(settings.upstream_tls.clone());
    let cache = settings.cache_file.clone().map(CacheWriter::spawn);
    let state = Arc::new(
        State::new(settings.node_id.clone(), cache).with_max_members(settings.max_members),
    );
    if let Some(path) = &settings.cache_file {
        load_cache(&state, path.clone()).await;
    }
    let access_log = match &settings.access_log {
        Some((target, format)) => Some(
            listener::access_log::AccessLog::start(target, *format).map_err(Error::AccessLog)?,
        ),
        None => None,
    };
    let mut proxy = Proxy::new(state.table(), &settings.node_id)
        .with_max_uri(settings.max_uri)
        .with_body_timeout(settings.client_body_timeout)
        .with_access_log(access_log.is_some());
    let mut tls_listeners = Vec::new();
    let mut watcher = None;
    if let Some(tls) = tls {
        if let Some(port) = tls
            .listeners
            .first()
            .and_then(|l| l.local_addr().ok())
            .map(|a| a.port())
        {
            proxy = proxy.with_https_port(port);
        }
        let acceptor = TlsAcceptor::from(tls.config);
        tls_listeners = tls
            .listeners
            .into_iter()
            .map(|l| (l, acceptor.clone()))
            .collect();
        watcher = Some(tokio::spawn(listener::tls::watch(
            tls.certificates,
            tls.reload,
            shutdown.clone(),
        )));
    }
    let proxy = Arc::new(proxy);
    let mut tls_listeners = tls_listeners.into_iter();
    let clients = listener::Clients::new(settings.client.clone());
    let discovery = tokio::spawn(discovery::run(
        state.clone(),
        settings.control_planes.clone(),
        settings.control_plane_tls.clone(),
        shutdown.clone(),
    ));
    let admin = tokio::spawn(admin::serve(admin, state.clone(), shutdown.clone()));
    let mut workers = Vec::with_capacity(listeners.len());
    for (index, listener) in listeners.into_iter().enumerate() {
        let (proxy, shutdown, clients) = (proxy.clone(), shutdown.clone(), clients.clone());
        let tls = tls_listeners.next();
        let worker = std::thread::Builder::new()
            .name(format!("switchyard-worker-{index}"))
            .spawn(move || worker(index, listener, tls, proxy, clients, shutdown))
            .map_err(|e| Error::Worker(index, e))?;
        workers.push(worker);
    }
    let joined = tokio::task::spawn_blocking(move || {
        let mut result = Ok(());
        for worker in workers {
            match worker.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => result = Err(e),
                Err(_) => warn!("A worker thread panicked"),
            }
        }
        result
    })
    .await;
    discovery.abort();
    admin.abort();
    if let Some(watcher) = watcher {
        watcher.abort();
    }
    // After the drain: the last requests' lines are written too.
    if let Some(access_log) = access_log {
        drop(tokio::task::spawn_blocking(move || access_log.stop()).await);
    }
    joined.unwrap_or(Ok(()))
}

/// One worker: a single-threaded runtime serving the proxy on its listener
/// (and on its TLS listener, if there is one).
fn worker(
    index: usize,
    listener: std::net::TcpListener,
    tls: Option<(std::net::TcpListener, TlsAcceptor)>,
    proxy: Arc<Proxy>,
    clients: Arc<listener::Clients>,
    shutdown: watch::Receiver<bool>,
) -> Result<(), Error> {
    upstream::enter_worker(index);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Worker(index, e))?;
    runtime.block_on(async move {
        let listener = TcpListener::from_std(listener).map_err(|e| Error::Worker(index, e))?;
        let Some((tls_listener, acceptor)) = tls else {
            listener::serve(listener, proxy, clients, shutdown).await;
            return Ok(());
        };
        let tls_listener =
            TcpListener::from_std(tls_listener).map_err(|e| Error::Worker(index, e))?;
        tokio::join!(
            listener::serve(listener, proxy.clone(), clients.clone(), shutdown.clone()),
            listener::serve_tls(tls_listener, acceptor, proxy, clients, shutdown),
        );
        Ok(())
    })
}

/// Binds `count` listeners to `addr` with `SO_REUSEPORT`, so the kernel spreads
/// connections over the workers; port 0 picks one port for all of them.
pub fn bind_workers(addr: SocketAddr, count: usize) -> std::io::Result<Vec<std::net::TcpListener>> {
    let mut listeners = Vec::with_capacity(count);
    let mut addr = addr;
    for _ in 0..count.max(1) {
        let socket = match addr {
            SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
            SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
        };
        socket.set_reuseaddr(true)?;
        #[cfg(unix)]
        socket.set_reuseport(true)?;
        socket.set_nodelay(true)?;
        socket.bind(addr)?;
        let listener = socket.listen(listener::BACKLOG)?;
        addr = listener.local_addr()?;
        listeners.push(listener.into_std()?);
    }
    Ok(listeners)
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
