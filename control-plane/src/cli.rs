//! The command line: flags (each with an environment variable), logging, the
//! runtime, the listeners and the shutdown signals around [`crate::run`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use switchyard_shared::telemetry::{self, LogFormat};
use switchyard_shared::tls::FlagFile;
use tokio::net::TcpListener;
use tracing::{error, info};

use crate::access::ApiAccess;
use crate::discovery::{Coalesce, GrpcTls};
use crate::import::output::ImportArgs;
use crate::store::etcd::EtcdOptions;
use crate::{DEFAULT_SHUTDOWN_GRACE, Settings};

/// Switchyard's control plane: holds clusters, members and routes, serves the
/// REST API and pushes every new config version to the data planes over gRPC.
/// With no subcommand it runs the server.
#[derive(Debug, Clone, Parser)]
#[command(name = "switchyard-control-plane", version, about)]
pub struct Args {
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Address of the REST API and of the dashboard at `/` (port 0 picks a free port).
    #[arg(long, env = "SWITCHYARD_API_LISTEN", default_value = "127.0.0.1:8080")]
    pub api_listen: SocketAddr,

    /// Address of the gRPC config stream the data planes connect to.
    #[arg(
        long,
        env = "SWITCHYARD_GRPC_LISTEN",
        default_value = "127.0.0.1:18000"
    )]
    pub grpc_listen: SocketAddr,

    /// Where the config, its version and the store id are kept.
    #[arg(long, env = "SWITCHYARD_STATE_FILE", default_value = crate::DEFAULT_STATE_FILE)]
    pub state_file: PathBuf,

    /// Keep the config in etcd instead of the state file, shared by every
    /// control-plane node given the same etcd and prefix:
    /// `etcd://host:2379[,host:2379…]` ("file": the state file).
    #[arg(
        long,
        value_name = "STORE",
        env = "SWITCHYARD_STORE",
        default_value = "file"
    )]
    pub store: String,

    /// With an etcd store: the prefix of every key it writes.
    #[arg(long, env = "SWITCHYARD_ETCD_PREFIX", default_value = crate::store::etcd::DEFAULT_PREFIX)]
    pub etcd_prefix: String,

    /// With an etcd store: how long one request to etcd may take before the
    /// next endpoint is tried (a write then answers 503).
    #[arg(long, env = "SWITCHYARD_ETCD_TIMEOUT", value_parser = humantime::parse_duration, default_value = "3s")]
    pub etcd_timeout: Duration,

    /// With an etcd store: the CA of the etcd members' certificates (TLS on).
    #[arg(long, value_name = "FILE", env = "SWITCHYARD_ETCD_CA")]
    pub etcd_ca: Option<PathBuf>,

    /// With an etcd store: a TLS client certificate (PEM), with --etcd-key.
    #[arg(long, value_name = "FILE", env = "SWITCHYARD_ETCD_CERT")]
    pub etcd_cert: Option<PathBuf>,

    /// With an etcd store: the TLS client certificate's key (PEM).
    #[arg(long, value_name = "FILE", env = "SWITCHYARD_ETCD_KEY")]
    pub etcd_key: Option<PathBuf>,

    /// With an etcd store: the etcd user (etcd's auth), with --etcd-password-file.
    #[arg(long, value_name = "USER", env = "SWITCHYARD_ETCD_USER")]
    pub etcd_user: Option<String>,

    /// With an etcd store: a file whose first line is the etcd user's password.
    #[arg(long, value_name = "FILE", env = "SWITCHYARD_ETCD_PASSWORD_FILE")]
    pub etcd_password_file: Option<PathBuf>,

    /// A config document (the `GET /api/v1/config` shape) applied when the
    /// store is empty: no state file yet, or one that was never written to.
    #[arg(long = "config", value_name = "FILE", env = "SWITCHYARD_CONFIG")]
    pub config: Option<PathBuf>,

    /// Writes that follow each other within this quiet time are pushed to the
    /// replicas as one snapshot ("0s": push every write at once).
    #[arg(long, env = "SWITCHYARD_PUSH_QUIET", value_parser = humantime::parse_duration, default_value = "2ms")]
    pub push_quiet: Duration,

    /// The longest a push waits for a burst of writes to end.
    #[arg(long, env = "SWITCHYARD_PUSH_MAX_DELAY", value_parser = humantime::parse_duration, default_value = "50ms")]
    pub push_max_delay: Duration,

    /// A file of API tokens, one a line (`#` comments, blank lines ignored;
    /// several for rotation), re-read on SIGHUP. With a token, every write
    /// needs `Authorization: Bearer <token>`.
    #[arg(long, value_name = "FILE", env = "SWITCHYARD_API_TOKEN_FILE")]
    pub api_token_file: Option<PathBuf>,

    /// One API token (prefer --api-token-file: a flag shows in `ps`).
    #[arg(
        long,
        value_name = "TOKEN",
        env = "SWITCHYARD_API_TOKEN",
        hide_env_values = true
    )]
    pub api_token: Option<String>,

    /// Reads need the token too (`/healthz` and the dashboard's own files stay open).
    #[arg(long, env = "SWITCHYARD_API_READ_AUTH")]
    pub api_read_auth: bool,

    /// PEM certificate (chain) of the gRPC listener: the config stream is
    /// then TLS (data planes connect with `--control-plane https://…`).
    /// Needs --grpc-tls-key.
    #[arg(long, value_name = "FILE", env = "SWITCHYARD_GRPC_TLS_CERT")]
    pub grpc_tls_cert: Option<PathBuf>,

    /// PEM private key of --grpc-tls-cert (PKCS#8, PKCS#1 or SEC1).
    #[arg(long, value_name = "FILE", env = "SWITCHYARD_GRPC_TLS_KEY")]
    pub grpc_tls_key: Option<PathBuf>,

    /// PEM file of the CA(s) that sign the replicas' certificates: mutual
    /// TLS. Every replica must present a certificate signed by one, and its
    /// node id is the one the certificate names (its first DNS subjectAltName,
    /// else its common name); a replica that claims another is refused.
    /// Needs --grpc-tls-cert.
    #[arg(long, value_name = "FILE", env = "SWITCHYARD_GRPC_CLIENT_CA")]
    pub grpc_client_ca: Option<PathBuf>,

    /// Log lines as human-readable text or JSON.
    #[arg(long, env = "SWITCHYARD_LOG_FORMAT", value_enum, default_value_t = LogFormat::Human)]
    pub log_format: LogFormat,
}

/// What the binary does instead of serving.
#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Translate Apache httpd mod_proxy configuration into a Switchyard config:
    /// print it (JSON), apply it (--apply URL) or show the diff (--dry-run).
    /// Exit code 2: a config Apache would refuse (nothing printed or applied).
    ImportApache(ImportArgs),
}

impl Args {
    /// The etcd store the flags ask for; `None` for the state file.
    pub fn etcd(&self) -> Result<Option<EtcdOptions>, String> {
        if self.store == "file" {
            return Ok(None);
        }
        let mut options = EtcdOptions::from_url(&self.store).map_err(|e| format!("--store {e}"))?;
        if !self.etcd_prefix.starts_with('/') || !self.etcd_prefix.ends_with('/') {
            return Err("--etcd-prefix starts and ends with a /".to_owned());
        }
        options.prefix = self.etcd_prefix.clone();
        options.timeout = self.etcd_timeout;
        options.ca = self.etcd_ca.clone();
        options.cert = self.etcd_cert.clone();
        options.key = self.etcd_key.clone();
        options.user = self.etcd_user.clone();
        if let Some(path) = &self.etcd_password_file {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read --etcd-password-file {}: {e}", path.display()))?;
            options.password = Some(text.lines().next().unwrap_or_default().to_owned());
        }
        if options.user.is_some() != options.password.is_some() {
            return Err("--etcd-user and --etcd-password-file go together".to_owned());
        }
        Ok(Some(options))
    }

    pub fn settings(&self, api_access: Arc<ApiAccess>, grpc_tls: Option<GrpcTls>) -> Settings {
        Settings {
            api_access,
            grpc_tls,
            state_file: self.state_file.clone(),
            etcd: None,
            bootstrap: self.config.clone(),
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
            coalesce: Coalesce {
                quiet: self.push_quiet,
                max_delay: self.push_max_delay,
            },
        }
    }
}

/// Parses the flags, sets up logging and runs the control plane until
/// SIGINT or SIGTERM.
pub fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(Command::ImportApache(import)) = &args.command {
        return crate::import::output::run(import);
    }
    telemetry::init(args.log_format);
    let access = match ApiAccess::new(
        args.api_token.as_deref(),
        args.api_token_file.as_deref(),
        args.api_read_auth,
    ) {
        Ok(access) => Arc::new(access),
        Err(e) => {
            error!(error = %e, "Cannot use the API tokens");
            return ExitCode::from(2);
        }
    };
    if args.api_read_auth && !access.is_protected() {
        error!("--api-read-auth needs --api-token or --api-token-file");
        return ExitCode::from(2);
    }
    let grpc_tls = match grpc_tls(&args) {
        Ok(tls) => tls,
        Err(message) => {
            error!(error = %message, "Cannot use the gRPC TLS flags");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            error!(error = %e, "Cannot start the tokio runtime");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(args, access, grpc_tls)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            error!(error = %message, "Control plane failed");
            ExitCode::FAILURE
        }
    }
}

/// The gRPC listener's TLS from the flags, its files loaded and checked
/// (`None`: no --grpc-tls-cert, plaintext).
fn grpc_tls(args: &Args) -> Result<Option<GrpcTls>, String> {
    let (cert, key) = match (&args.grpc_tls_cert, &args.grpc_tls_key) {
        (None, None) if args.grpc_client_ca.is_some() => {
            return Err("--grpc-client-ca needs --grpc-tls-cert and --grpc-tls-key".into());
        }
        (None, None) => return Ok(None),
        (Some(cert), Some(key)) => (cert, key),
        (Some(_), None) => return Err("--grpc-tls-cert needs --grpc-tls-key".into()),
        (None, Some(_)) => return Err("--grpc-tls-key needs --grpc-tls-cert".into()),
    };
    GrpcTls::load(
        FlagFile::new("--grpc-tls-cert", cert),
        FlagFile::new("--grpc-tls-key", key),
        args.grpc_client_ca
            .as_deref()
            .map(|ca| FlagFile::new("--grpc-client-ca", ca)),
    )
    .map(Some)
    .map_err(|e| e.to_string())
}

async fn serve(
    args: Args,
    access: Arc<ApiAccess>,
    grpc_tls: Option<GrpcTls>,
) -> Result<(), String> {
    let etcd = args.etcd()?;
    let api = TcpListener::bind(args.api_listen)
        .await
        .map_err(|e| format!("cannot listen on --api-listen {}: {e}", args.api_listen))?;
    let grpc = TcpListener::bind(args.grpc_listen)
        .await
        .map_err(|e| format!("cannot listen on --grpc-listen {}: {e}", args.grpc_listen))?;
    let mut settings = args.settings(access.clone(), grpc_tls);
    settings.etcd = etcd;
    let reload = reload_tokens_on_hangup(access);
    let server = crate::run(api, grpc, settings, shutdown_signal());
    // The reload loop never ends on its own; it ends with the server.
    tokio::select! {
        result = server => result.map_err(|e| e.to_string()),
        () = reload => Ok(()),
    }
}

/// Re-reads the token file on every SIGHUP; a file that cannot be used is
/// logged and the tokens in use stay.
async fn reload_tokens_on_hangup(access: Arc<ApiAccess>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hangup = match signal(SignalKind::hangup()) {
            Ok(hangup) => hangup,
            Err(e) => {
                error!(error = %e, "Cannot listen for SIGHUP; the token file will not be re-read");
                return std::future::pending().await;
            }
        };
        while hangup.recv().await.is_some() {
            match access.reload() {
                Ok(count) => info!(tokens = count, "Re-read the API tokens"),
                Err(e) => error!(error = %e, "Cannot re-read the API tokens; keeping those in use"),
            }
        }
    }
    std::future::pending().await
}

/// Completes on SIGINT (Ctrl-C) or SIGTERM.
async fn shutdown_signal() {
    let interrupt = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            error!(error = %e, "Cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                term.recv().await;
            }
            Err(e) => {
                error!(error = %e, "Cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => info!("Received SIGINT"),
        () = terminate => info!("Received SIGTERM"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_have_defaults_and_port_zero_works() {
        let args = Args::try_parse_from(["cp"]).unwrap();
        assert_eq!(args.api_listen.port(), 8080);
        assert_eq!(args.grpc_listen.port(), 18000);
        assert_eq!(args.log_format, LogFormat::Human);
        let args = Args::try_parse_from([
            "cp",
            "--api-listen",
            "127.0.0.1:0",
            "--grpc-listen",
            "127.0.0.1:0",
            "--config",
            "boot.json",
            "--log-format",
            "json",
        ])
        .unwrap();
        assert_eq!(args.api_listen.port(), 0);
        assert_eq!(args.config, Some(PathBuf::from("boot.json")));
        assert_eq!(args.log_format, LogFormat::Json);
        assert!(Args::try_parse_from(["cp", "--api-listen", "nowhere"]).is_err());
        assert!(args.command.is_none());
    }

    #[test]
    fn store_flags_make_etcd_options() {
        let args = Args::try_parse_from(["cp"]).unwrap();
        assert!(args.etcd().unwrap().is_none(), "the state file by default");

        let args = Args::try_parse_from([
            "cp",
            "--store",
            "etcd://10.0.0.1:2379,etcd-2.example:2379",
            "--etcd-prefix",
            "/sy/prod/",
            "--etcd-timeout",
            "1500ms",
        ])
        .unwrap();
        let options = args.etcd().unwrap().unwrap();
        assert_eq!(options.endpoints, ["10.0.0.1:2379", "etcd-2.example:2379"]);
        assert_eq!(options.prefix, "/sy/prod/");
        assert_eq!(options.timeout, Duration::from_millis(1500));
        assert!(options.ca.is_none() && options.user.is_none());

        for (flags, needle) in [
            (vec!["--store", "http://10.0.0.1:2379"], "etcd://host:port"),
            (vec!["--store", "etcd://10.0.0.1"], "host:port"),
            (vec!["--store", "etcd://a:1,,b:2"], "host:port"),
            (vec!["--store", "etcd://user@a:1"], "host:port"),
            (
                vec!["--store", "etcd://a:1", "--etcd-prefix", "sy"],
                "--etcd-prefix",
            ),
            (
                vec!["--store", "etcd://a:1", "--etcd-user", "u"],
                "--etcd-password-file",
            ),
            (
                vec![
                    "--store",
                    "etcd://a:1",
                    "--etcd-password-file",
                    "/nonexistent/pw",
                ],
                "/nonexistent/pw",
            ),
        ] {
            let args = Args::try_parse_from(["cp"].into_iter().chain(flags.clone())).unwrap();
            let error = args.etcd().unwrap_err();
            assert!(error.contains(needle), "{flags:?}: {error}");
        }
    }

    #[test]
    fn import_apache_is_a_subcommand() {
        let args = Args::try_parse_from([
            "cp",
            "import-apache",
            "a.conf",
            "b.conf",
            "--apply",
            "http://127.0.0.1:1",
            "--dry-run",
        ])
        .unwrap();
        let Some(Command::ImportApache(import)) = args.command else {
            panic!("no subcommand");
        };
        assert_eq!(
            import.files,
            vec![PathBuf::from("a.conf"), PathBuf::from("b.conf")]
        );
        assert!(import.dry_run);
        assert!(Args::try_parse_from(["cp", "import-apache"]).is_err());
        assert!(Args::try_parse_from(["cp", "import-apache", "a.conf", "--dry-run"]).is_err());
    }
}
