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
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{error, info};

use crate::Settings;
use crate::admin::Endpoint;
use crate::config::cache;
use crate::upstream::tls;

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
    /// Address of the admin endpoint (its paths: see `--help`, made by `admin_help`).
    #[arg(
        long,
        env = "SWITCHYARD_ADMIN_LISTEN",
        default_value = "127.0.0.1:9901"
    )]
    pub admin_listen: SocketAddr,
    /// This replica's name as the control plane shows it (default: the host name).
    #[arg(long, env = "SWITCHYARD_NODE_ID")]
    pub node_id: Option<String>,
    /// Where to keep the last good snapshot, loaded at start (without
    /// --control-plane, the replica serves it and nothing else).
    #[arg(long, env = "SWITCHYARD_CACHE_FILE")]
    pub cache_file: Option<PathBuf>,
    /// Worker threads (default: one per CPU).
    #[arg(long, env = "SWITCHYARD_WORKERS")]
    pub workers: Option<usize>,
    /// How long in-flight requests may take to finish on shutdown.
    #[arg(long, env = "SWITCHYARD_SHUTDOWN_GRACE", default_value = "10s", value_parser = humantime_duration)]
    pub shutdown_grace: Duration,
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
            ExitCode::FAILURE
        }
    }
}

async fn start(args: Args) -> anyhow::Result<()> {
    if args.control_planes.is_empty() {
        check_cache_alone(args.cache_file.as_deref())?;
    }
    let upstream_tls = upstream_tls(args.upstream_ca.as_deref())?;
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
    let admin = TcpListener::bind(args.admin_listen)
        .await
        .with_context(|| format!("--admin-listen {}: cannot bind", args.admin_listen))?;
    for url in &args.control_planes {
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            anyhow::bail!("--control-plane {url:?}: expected a URL such as http://127.0.0.1:18000");
        }
    }
    let node_id = args.node_id.clone().unwrap_or_else(host_name);
    info!(listen.addr = %listen_addr, admin.addr = %admin.local_addr()?, node.id = %node_id, workers, "Listening");
    let (stop, shutdown) = watch::channel(false);
    tokio::spawn(async move {
        wait_for_signal().await;
        info!("Shutting down");
        stop.send_replace(true);
    });
    let settings = Settings {
        control_planes: args.control_planes,
        node_id,
        cache_file: args.cache_file,
        shutdown_grace: args.shutdown_grace,
        upstream_tls,
        max_members: args.max_members,
    };
    crate::run(listeners, admin, settings, shutdown).await?;
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
