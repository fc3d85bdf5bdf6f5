//! The `switchyard-data-plane` command line: flags (each with an environment
//! variable), logging, the runtime, binding, and signals.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{CommandFactory, FromArgMatches, Parser};
use switchyard_shared::telemetry::{self, LogFormat};
use switchyard_shared::tls::{FlagFile, TlsFileError};
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};
use tonic::transport::ClientTlsConfig;
use tracing::{error, info, warn};

use crate::admin::Endpoint;
use crate::config::cache;
use crate::listener::tls::{CertError, CertPair, Certificates};
use crate::listener::{ClientLimits, access_log};
use crate::upstream::tls;
use crate::{Settings, TlsListeners};

/// A Switchyard data-plane replica: proxies and balances HTTP traffic with the
/// routing table the control plane streams to it.
#[derive(Debug, Parser)]
#[command(name = "switchyard-data-plane", version)]
pub struct Args {
    /// Control-plane gRPC URL; repeat (or separate with commas) to give several.
    #[arg(
        long = "control-plane",
        env = "SWITCHYARD_CONTROL_PLANE",
        value_delimiter = ','
    )]
    pub control_planes: Vec<String>,
    /// Address the proxy listens on (HTTP/1.1 and h2c).
    #[arg(long, env = "SWITCHYARD_LISTEN", default_value = "127.0.0.1:8000")]
    pub listen: SocketAddr,
    /// PEM file of the CA(s) that sign the control plane's certificate, for
    /// `--control-plane https://…` (default: the public webpki roots).
    #[arg(long, value_name = "FILE", env = "SWITCHYARD_CONTROL_PLANE_CA")]
    pub control_plane_ca: Option<PathBuf>,
    /// PEM certificate (chain) this replica presents to an `https://` control
    /// plane (mutual TLS). Without --node-id, the node id is the one it names:
    /// its first DNS subjectAltName, else its common name. Needs --control-plane-key.
    #[arg(long, value_name = "FILE", env = "SWITCHYARD_CONTROL_PLANE_CERT")]
    pub control_plane_cert: Option<PathBuf>,
    /// PEM private key of --control-plane-cert (PKCS#8, PKCS#1 or SEC1).
    #[arg(long, value_name = "FILE", env = "SWITCHYARD_CONTROL_PLANE_KEY")]
    pub control_plane_key: Option<PathBuf>,
    /// Address of the TLS listener: HTTP/1.1 and h2 over TLS 1.2 or 1.3, by
    /// ALPN (nginx `listen 443 ssl`). Needs --tls-cert and --tls-key.
    #[arg(long, env = "SWITCHYARD_TLS_LISTEN")]
    pub tls_listen: Option<SocketAddr>,
    /// PEM certificate (chain) for --tls-listen; repeat for several, each with
    /// its --tls-key in the same order (SWITCHYARD_TLS_CERT: a comma-separated
    /// list). The certificate whose names (SAN DNS, wildcards included) match
    /// the client's SNI is sent; the first one otherwise. Reloaded when the
    /// files change (looked at every second) or on SIGHUP.
    #[arg(long = "tls-cert", env = "SWITCHYARD_TLS_CERT", value_delimiter = ',')]
    pub tls_certs: Vec<PathBuf>,
    /// PEM private key of the --tls-cert in the same place (PKCS#8, PKCS#1 or
    /// SEC1; SWITCHYARD_TLS_KEY: a comma-separated list).
    #[arg(long = "tls-key", env = "SWITCHYARD_TLS_KEY", value_delimiter = ',')]
    pub tls_keys: Vec<PathBuf>,
    /// Address of the admin endpoint (its paths: see `--help`, made by `admin_help`).
    #[arg(
        long,
        env = "SWITCHYARD_ADMIN_LISTEN",
        default_value = "127.0.0.1:9901"
    )]
    pub admin_listen: SocketAddr,
    /// This replica's name as the control plane shows it (default: the name
    /// --control-plane-cert names, else the host name).
    #[arg(long, env = "SWITCHYARD_NODE_ID")]
    pub node_id: Option<String>,
    /// Where to keep the last good snapshot, loaded at start (without
    /// --control-plane, the replica serves it and nothing else).
    #[arg(long, env = "SWITCHYARD_CACHE_FILE")]
    pub cache_file: Option<PathBuf>,
    /// Worker threads (default: one per CPU).
    #[arg(long, env = "SWITCHYARD_WORKERS")]
    pub workers: Option<usize>,
    /// On SIGTERM, how long requests (and tunnels) in flight may take to
    /// finish; `/readyz` fails and the listener closes at once. `--shutdown-grace`
    /// is the old name.
    #[arg(long, alias = "shutdown-grace", env = "SWITCHYARD_DRAIN_TIMEOUT", default_value = "10s", value_parser = humantime_duration)]
    pub drain_timeout: Duration,
    /// A request head must arrive within this (from its first byte, or from
    /// the accept for a connection's first request); the connection is closed
    /// otherwise (nginx `client_header_timeout`).
    #[arg(long, env = "SWITCHYARD_CLIENT_HEADER_TIMEOUT", default_value = "60s", value_parser = humantime_duration)]
    pub client_header_timeout: Duration,
    /// A client connection with no request in flight (h2c: no stream open) is
    /// closed after this (nginx `keepalive_timeout`).
    #[arg(long, env = "SWITCHYARD_CLIENT_KEEPALIVE_TIMEOUT", default_value = "75s", value_parser = humantime_duration)]
    pub client_keepalive_timeout: Duration,
    /// A request body that sends nothing for this long is given up: 408
    /// (nginx `client_body_timeout`).
    #[arg(long, env = "SWITCHYARD_CLIENT_BODY_TIMEOUT", default_value = "60s", value_parser = humantime_duration)]
    pub client_body_timeout: Duration,
    /// Open client connections per replica; a new one beyond gets a 503 and is closed.
    #[arg(long, env = "SWITCHYARD_MAX_CONNECTIONS", default_value_t = 10_000)]
    pub max_connections: usize,
    /// The most bytes of a request head, request line included: 431 beyond.
    #[arg(long, env = "SWITCHYARD_MAX_HEADER_SIZE", default_value_t = 32 * 1024)]
    pub max_header_size: usize,
    /// The most header lines in a request: 431 beyond.
    #[arg(long, env = "SWITCHYARD_MAX_HEADERS", default_value_t = 100)]
    pub max_headers: usize,
    /// The longest request target (URI): 414 beyond.
    #[arg(long, env = "SWITCHYARD_MAX_URI_LENGTH", default_value_t = 8 * 1024)]
    pub max_uri_length: usize,
    /// h2c: concurrent streams per connection.
    #[arg(
        long,
        env = "SWITCHYARD_H2_MAX_CONCURRENT_STREAMS",
        default_value_t = 128
    )]
    pub h2_max_concurrent_streams: u32,
    /// h2c: the most bytes of a request's header list (CONTINUATION frames included).
    #[arg(long, env = "SWITCHYARD_H2_MAX_HEADER_LIST_SIZE", default_value_t = 32 * 1024)]
    pub h2_max_header_list_size: u32,
    /// h2c: streams a client may reset before the server accepted them, at
    /// once, before the connection gets GOAWAY (rapid reset, CVE-2023-44487).
    #[arg(long, env = "SWITCHYARD_H2_MAX_PENDING_RESETS", default_value_t = 20)]
    pub h2_max_pending_resets: usize,
    /// h2c: streams this side may reset for a client's protocol errors before
    /// the connection gets GOAWAY.
    #[arg(long, env = "SWITCHYARD_H2_MAX_LOCAL_RESETS", default_value_t = 1024)]
    pub h2_max_local_resets: usize,
    /// The most members (over all clusters) a snapshot may have for this
    /// replica to apply it; a larger one is refused (NACK) and the replica
    /// keeps its table. A guard for replicas with little memory (default: no limit).
    #[arg(long, env = "SWITCHYARD_MAX_MEMBERS")]
    pub max_members: Option<usize>,
    /// PEM file of CA certificates (one or several) that https members'
    /// certificates may be signed by, trusted besides the public webpki roots.
    #[arg(long, env = "SWITCHYARD_UPSTREAM_CA")]
    pub upstream_ca: Option<PathBuf>,
    /// The longest a pooled connection to a member stays idle; a member's
    /// `Keep-Alive: timeout=N` shortens it (to N s less half a second). Keep it
    /// below the backends' own keep-alive (gunicorn, Node and Apache: 5 s).
    #[arg(long, env = "SWITCHYARD_UPSTREAM_KEEPALIVE_TIMEOUT", default_value = "4s", value_parser = humantime_duration)]
    pub upstream_keepalive_timeout: Duration,
    /// Log format.
    #[arg(long, env = "SWITCHYARD_LOG_FORMAT", value_enum, default_value_t = LogFormat::Human)]
    pub log_format: LogFormat,
    /// Writes one line per request, when its response ends, to this file
    /// (appended to; `-`: stdout): a readable line, or JSON with
    /// `--log-format json`. Off by default.
    #[arg(long, env = "SWITCHYARD_ACCESS_LOG", value_name = "PATH")]
    pub access_log: Option<String>,
    /// The access log's format when it differs from --log-format's
    /// (`text` goes with `human`, `json` with `json`).
    #[arg(long, env = "SWITCHYARD_ACCESS_LOG_FORMAT", value_enum)]
    pub access_log_format: Option<access_log::Format>,
}

fn humantime_duration(text: &str) -> Result<Duration, String> {
    switchyard_shared::model::parse_duration(text)
}

/// The `--admin-listen` help: every endpoint the admin address serves.
fn admin_help() -> String {
    let endpoints: Vec<String> = Endpoint::ALL
        .iter()
        .map(|e| format!("{} ({})", e.path(), e.what()))
        .collect();
    format!("Address of the admin endpoint: {}", endpoints.join(", "))
}

/// The flags, with the help text that is made at run time.
fn parse_args() -> Args {
    let command = Args::command().mut_arg("admin_listen", |arg| arg.help(admin_help()));
    Args::from_arg_matches(&command.get_matches()).unwrap_or_else(|e| e.exit())
}

/// Runs the data plane with the process's arguments.
pub fn main() -> ExitCode {
    let args = parse_args();
    telemetry::init(args.log_format);
    // The proxy runs on worker threads of its own (see `run`); this runtime
    // only follows the control plane and serves the admin endpoint.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            error!(error = %e, "Cannot start the runtime");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(start(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!(error = format!("{e:#}"), "Data plane failed");
            // A TLS flag or file that cannot be used is a usage error (2).
            if e.chain()
                .any(|c| c.is::<CertError>() || c.is::<TlsFlags>() || c.is::<TlsFileError>())
            {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// TLS flags that do not go together.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct TlsFlags(&'static str);

/// The certificate pairs of the flags, checked and loaded (`None`: no `--tls-listen`).
fn tls_certificates(args: &Args) -> anyhow::Result<Option<Arc<Certificates>>> {
    let Some(_) = args.tls_listen else {
        if !(args.tls_certs.is_empty() && args.tls_keys.is_empty()) {
            return Err(TlsFlags("--tls-cert and --tls-key need --tls-listen").into());
        }
        return Ok(None);
    };
    if args.tls_certs.is_empty() {
        return Err(TlsFlags("--tls-listen needs --tls-cert FILE and --tls-key FILE").into());
    }
    if args.tls_certs.len() != args.tls_keys.len() {
        return Err(TlsFlags(
            "--tls-cert and --tls-key come in pairs: give as many of one as of the other",
        )
        .into());
    }
    let pairs = args
        .tls_certs
        .iter()
        .zip(&args.tls_keys)
        .map(|(cert, key)| CertPair {
            cert: cert.clone(),
            key: key.clone(),
        })
        .collect();
    let certificates = Certificates::load(pairs).context("--tls-cert/--tls-key")?;
    Ok(Some(certificates))
}

/// The config stream's TLS of the flags, its files loaded and checked, and
/// the node id the replica's certificate names (`None`, `None`: plaintext).
fn control_plane_tls(args: &Args) -> anyhow::Result<(Option<ClientTlsConfig>, Option<String>)> {
    let flags = args.control_plane_ca.is_some()
        || args.control_plane_cert.is_some()
        || args.control_plane_key.is_some();
    let https = args
        .control_planes
        .iter()
        .filter(|url| url.starts_with("https://"))
        .count();
    if https == 0 {
        if flags && !args.control_planes.is_empty() {
            return Err(TlsFlags(
                "--control-plane-ca, --control-plane-cert and --control-plane-key are for \
                 --control-plane https://… (the control plane's --grpc-tls-cert)",
            )
            .into());
        }
        return Ok((None, None));
    }
    if https != args.control_planes.len() {
        return Err(
            TlsFlags("--control-plane: give every control plane as https://… or none").into(),
        );
    }
    let mut config = ClientTlsConfig::new();
    config = match &args.control_plane_ca {
        Some(path) => {
            let (_, pem) =
                switchyard_shared::tls::load_cas(FlagFile::new("--control-plane-ca", path))?;
            config.ca_certificate(tonic::transport::Certificate::from_pem(pem))
        }
        None => config.trust_anchors(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    };
    let name = match (&args.control_plane_cert, &args.control_plane_key) {
        (Some(cert), Some(key)) => {
            let identity = switchyard_shared::tls::load_identity(
                FlagFile::new("--control-plane-cert", cert),
                FlagFile::new("--control-plane-key", key),
            )?;
            config = config.identity(tonic::transport::Identity::from_pem(
                identity.cert_pem,
                identity.key_pem,
            ));
            match identity.name {
                Some(name) => Some(name),
                None if args.node_id.is_none() => {
                    return Err(TlsFlags(
                        "--control-plane-cert names no node id (no DNS subjectAltName, no common name): give --node-id",
                    )
                    .into());
                }
                None => None,
            }
        }
        (None, None) => None,
        _ => {
            return Err(
                TlsFlags("--control-plane-cert and --control-plane-key go together").into(),
            );
        }
    };
    Ok((Some(config), name))
}

/// This replica's node id: `--node-id`, else the name of its certificate,
/// else the host name.
fn node_id(args: &Args, certified: Option<String>) -> String {
    match (&args.node_id, certified) {
        (Some(id), Some(name)) if *id != name => {
            warn!(
                node.id = %id,
                certificate.name = %name,
                "--node-id is not the name --control-plane-cert gives: a control plane with mutual TLS will refuse this replica"
            );
            id.clone()
        }
        (Some(id), _) => id.clone(),
        (None, Some(name)) => name,
        (None, None) => host_name(),
    }
}

/// The client-side limits of the flags, checked.
fn client_limits(args: &Args) -> anyhow::Result<ClientLimits> {
    let positive = [
        ("--client-header-timeout", args.client_header_timeout),
        ("--client-keepalive-timeout", args.client_keepalive_timeout),
        ("--client-body-timeout", args.client_body_timeout),
    ];
    for (flag, value) in positive {
        if value.is_zero() {
            anyhow::bail!("{flag}: must be more than 0");
        }
    }
    let at_least = [
        ("--max-connections", args.max_connections, 1),
        ("--max-header-size", args.max_header_size, 1024),
        ("--max-headers", args.max_headers, 1),
        ("--max-uri-length", args.max_uri_length, 16),
        (
            "--h2-max-concurrent-streams",
            args.h2_max_concurrent_streams as usize,
            1,
        ),
        (
            "--h2-max-header-list-size",
            args.h2_max_header_list_size as usize,
            1024,
        ),
    ];
    for (flag, value, least) in at_least {
        if value < least {
            anyhow::bail!("{flag} {value}: must be at least {least}");
        }
    }
    Ok(ClientLimits {
        header_timeout: args.client_header_timeout,
        keepalive_timeout: args.client_keepalive_timeout,
        max_connections: args.max_connections,
        max_header_size: args.max_header_size,
        max_headers: args.max_headers,
        h2_max_concurrent_streams: args.h2_max_concurrent_streams,
        h2_max_header_list_size: args.h2_max_header_list_size,
        h2_max_pending_accept_reset_streams: args.h2_max_pending_resets,
        h2_max_local_error_reset_streams: args.h2_max_local_resets,
        drain_timeout: args.drain_timeout,
    })
}

async fn start(args: Args) -> anyhow::Result<()> {
    // Flags that are wrong in themselves first; then whether there is a config to serve.
    let client = client_limits(&args)?;
    let upstream_tls = upstream_tls(args.upstream_ca.as_deref())?;
    let certificates = tls_certificates(&args)?;
    let (control_plane_tls, certified) = control_plane_tls(&args)?;
    if args.control_planes.is_empty() {
        check_cache_alone(args.cache_file.as_deref())?;
    }
    crate::upstream::pool::set_idle_timeout(args.upstream_keepalive_timeout);
    let workers = args
        .workers
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    let listeners = crate::bind_workers(args.listen, workers)
        .with_context(|| format!("--listen {}: cannot bind", args.listen))?;
    let listen_addr = listeners
        .first()
        .map(std::net::TcpListener::local_addr)
        .transpose()?
        .unwrap_or(args.listen);
    let reload = Arc::new(Notify::new());
    let tls = match (&certificates, args.tls_listen) {
        (Some(certificates), Some(addr)) => {
            let config = certificates
                .server_config()
                .context("--tls-cert/--tls-key")?;
            let listeners = crate::bind_workers(addr, workers)
                .with_context(|| format!("--tls-listen {addr}: cannot bind"))?;
            if let Some(bound) = listeners.first().map(std::net::TcpListener::local_addr) {
                info!(tls.addr = %bound?, certificates = args.tls_certs.len(), "Listening for TLS");
            }
            Some(TlsListeners {
                listeners,
                certificates: certificates.clone(),
                config,
                reload: reload.clone(),
            })
        }
        _ => None,
    };
    let admin = TcpListener::bind(args.admin_listen)
        .await
        .with_context(|| format!("--admin-listen {}: cannot bind", args.admin_listen))?;
    for url in &args.control_planes {
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            anyhow::bail!("--control-plane {url:?}: expected a URL such as http://127.0.0.1:18000");
        }
    }
    let node_id = node_id(&args, certified);
    info!(listen.addr = %listen_addr, admin.addr = %admin.local_addr()?, node.id = %node_id, workers, "Listening");
    let (stop, shutdown) = watch::channel(false);
    tokio::spawn(reload_on_sighup(reload, tls.is_some()));
    tokio::spawn(async move {
        wait_for_signal().await;
        info!("Shutting down: draining");
        stop.send_replace(true);
    });
    let settings = Settings {
        control_planes: args.control_planes,
        node_id,
        cache_file: args.cache_file,
        client,
        max_uri: args.max_uri_length,
        client_body_timeout: args.client_body_timeout,
        upstream_tls,
        max_members: args.max_members,
        control_plane_tls,
        access_log: args.access_log.as_deref().map(|path| {
            let format = args.access_log_format.unwrap_or(match args.log_format {
                LogFormat::Human => access_log::Format::Text,
                LogFormat::Json => access_log::Format::Json,
            });
            (access_log::Target::parse(path), format)
        }),
    };
    crate::run(listeners, tls, admin, settings, shutdown).await?;
    Ok(())
}

/// Without a control plane, the cache file is all a replica will ever serve:
/// it must be given and hold a valid snapshot, or the replica refuses to start
/// (rather than answer 503 forever).
fn check_cache_alone(cache_file: Option<&Path>) -> anyhow::Result<()> {
    const HOW: &str = "give --control-plane URL (or SWITCHYARD_CONTROL_PLANE), such as \
        http://127.0.0.1:18000, or a --cache-file holding a snapshot to serve";
    let Some(path) = cache_file else {
        anyhow::bail!("neither --control-plane nor --cache-file is given: {HOW}");
    };
    let mut snapshot = match cache::load(path) {
        Ok(Some(snapshot)) => snapshot,
        Ok(None) => anyhow::bail!(
            "no --control-plane is given and --cache-file {} does not exist: {HOW}",
            path.display()
        ),
        Err(e) => anyhow::bail!(
            "no --control-plane is given and --cache-file cannot be used ({e}): {HOW}"
        ),
    };
    switchyard_shared::validate::validate_config(&mut snapshot.config).map_err(|e| {
        anyhow::anyhow!(
            "no --control-plane is given and --cache-file {} holds an invalid snapshot ({e}): {HOW}",
            path.display()
        )
    })?;
    info!(cache.file = %path.display(), version = snapshot.version, "No --control-plane: serving the cached snapshot only");
    Ok(())
}

/// The TLS client config for https members: the webpki roots, plus the CAs
/// of `--upstream-ca` if given (a file that cannot be used stops the start).
fn upstream_tls(ca_file: Option<&Path>) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let Some(path) = ca_file else {
        return tls::client_config(Vec::new()).context("TLS for https members");
    };
    let flag = || format!("--upstream-ca {}", path.display());
    let cas = tls::load_ca_file(path).with_context(flag)?;
    let certificates = cas.len();
    let config = tls::client_config(cas).with_context(flag)?;
    info!(upstream_ca = %path.display(), certificates, "Trusting these CAs for https members besides the webpki roots");
    Ok(config)
}

/// The machine's host name, the default node id.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "switchyard-data-plane".to_owned())
}

/// SIGHUP reloads the TLS certificates (and, without TLS, is only logged
/// rather than ending the replica, as its default action would).
async fn reload_on_sighup(reload: Arc<Notify>, tls: bool) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            return;
        };
        while hup.recv().await.is_some() {
            if tls {
                info!("SIGHUP: reloading the TLS certificates");
                reload.notify_one();
            } else {
                info!("SIGHUP: nothing to reload (no --tls-listen)");
            }
        }
    }
    #[cfg(not(unix))]
    drop((reload, tls));
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                // Without a SIGTERM handler, Ctrl-C still works.
                if tokio::signal::ctrl_c().await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    if tokio::signal::ctrl_c().await.is_err() {
        std::future::pending::<()>().await;
    }
}
