//! A data-plane replica as a child process: its proxy and admin addresses,
//! its cache file, `kill -9` and restart on the same ports.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use http::StatusCode;
use serde_json::Value;
use tokio::time::Instant;

use crate::client::{Client, Response};
use crate::control_plane::ControlPlane;
use crate::eventually::eventually;
use crate::process::{ChildProcess, Log, STARTUP_DEADLINE, binary};

const LISTEN_TOKEN: &str = "listen.addr=";
const ADMIN_TOKEN: &str = "admin.addr=";
const TLS_TOKEN: &str = "tls.addr=";

/// How to start a replica.
#[derive(Debug, Clone)]
pub struct DataPlaneOptions {
    pub node_id: String,
    pub cache_file: PathBuf,
    /// `http://127.0.0.1:GRPCPORT` of each control plane.
    pub control_planes: Vec<String>,
    /// Extra environment (such as `SWITCHYARD_MAX_MEMBERS`; with
    /// `SWITCHYARD_TLS_LISTEN`, the TLS listener's address is waited for too).
    pub env: Vec<(String, String)>,
}

impl DataPlaneOptions {
    /// A replica `node_id` of `cp`, with its cache file at `cache_file`.
    pub fn new(cp: &ControlPlane, node_id: &str, cache_file: &Path) -> Self {
        DataPlaneOptions {
            node_id: node_id.to_owned(),
            cache_file: cache_file.to_path_buf(),
            control_planes: vec![cp.grpc_url()],
            env: Vec::new(),
        }
    }

    /// Whether it starts a TLS listener, whose address is then waited for.
    fn tls(&self) -> bool {
        self.env.iter().any(|(k, _)| k == "SWITCHYARD_TLS_LISTEN")
    }

    /// Adds an environment variable.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }
}

/// A data-plane replica.
#[derive(Debug)]
pub struct DataPlane {
    options: DataPlaneOptions,
    process: ChildProcess,
    listen: SocketAddr,
    admin: SocketAddr,
    /// The `--tls-listen` address, if it has one.
    tls: Option<SocketAddr>,
    client: Client,
}

/// Starts replica `node_id` of `cp` with its cache at `cache_file`; returns once
/// it listens (not once it is ready: see [`DataPlane::wait_ready`]).
pub async fn spawn_data_plane(cp: &ControlPlane, node_id: &str, cache_file: &Path) -> DataPlane {
    DataPlane::spawn(DataPlaneOptions::new(cp, node_id, cache_file)).await
}

impl DataPlane {
    pub async fn spawn(options: DataPlaneOptions) -> Self {
        let args = args(&options, "127.0.0.1:0", "127.0.0.1:0");
        let mut process = ChildProcess::start(
            &format!("data plane {}", options.node_id),
            binary("sy-data-plane"),
            &args,
            &options.env,
        );
        let mut tokens = vec![LISTEN_TOKEN, ADMIN_TOKEN];
        if options.tls() {
            tokens.push(TLS_TOKEN);
        }
        let addrs = match process.wait_for_addresses(&tokens).await {
            Ok(addrs) => addrs,
            Err(e) => panic!("{e}"),
        };
        DataPlane {
            options,
            process,
            listen: addrs[0],
            admin: addrs[1],
            tls: addrs.get(2).copied(),
            client: Client::without_pool(),
        }
    }

    pub fn node_id(&self) -> &str {
        &self.options.node_id
    }

    pub fn cache_file(&self) -> &Path {
        &self.options.cache_file
    }

    pub fn proxy_addr(&self) -> SocketAddr {
        self.listen
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.admin
    }

    /// The TLS listener's address; panics if it was started without `--tls-listen`.
    pub fn tls_addr(&self) -> SocketAddr {
        self.tls
            .unwrap_or_else(|| panic!("{} has no --tls-listen", self.node_id()))
    }

    /// SIGHUP: the replica reloads its TLS certificates.
    pub fn hangup(&mut self) -> bool {
        self.process.hangup()
    }

    /// The URL of `path` through the proxy.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.listen)
    }

    /// The URL of `path` on the admin listener.
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    /// The log of its current (or last) run.
    pub fn log(&self) -> &Log {
        self.process.log()
    }

    /// `GET path` through the proxy, on a new connection.
    pub async fn get(&self, path: &str) -> Response {
        self.client.get(&self.url(path)).await
    }

    /// `GET path` through the proxy with extra request headers (`Host`, ...).
    pub async fn get_with(&self, path: &str, headers: &[(&str, &str)]) -> Response {
        self.client.get_with(&self.url(path), headers).await
    }

    /// SIGTERM: the replica stops accepting and drains for its grace period,
    /// then exits (see [`Self::exit_status`]).
    pub fn terminate(&mut self) -> bool {
        self.process.terminate()
    }

    /// Whether its process is still running.
    pub fn is_running(&mut self) -> bool {
        self.process.is_running()
    }

    /// `kill -9`.
    pub fn kill9(&mut self) {
        self.process.kill9();
    }

    /// How it exited, once it has.
    pub fn exit_status(&mut self) -> Option<std::process::ExitStatus> {
        self.process.exit_status()
    }

    /// Starts it again (after [`Self::kill9`]) on the same ports, with the same cache file.
    pub async fn start(&mut self) {
        let args = args(
            &self.options,
            &self.listen.to_string(),
            &self.admin.to_string(),
        );
        let started = Instant::now();
        loop {
            self.process.respawn(&args);
            match self
                .process
                .wait_for_addresses(&[LISTEN_TOKEN, ADMIN_TOKEN])
                .await
            {
                Ok(addrs) => {
                    assert_eq!(addrs, [self.listen, self.admin], "restarted on other ports");
                    if self.options.tls() {
                        // The TLS port may be another one (`--tls-listen` as given).
                        match self.process.wait_for_addresses(&[TLS_TOKEN]).await {
                            Ok(tls) => self.tls = tls.first().copied(),
                            Err(e) => panic!("{e}"),
                        }
                    }
                    return;
                }
                Err(e) if started.elapsed() > STARTUP_DEADLINE => panic!("{e}"),
                Err(e) => eprintln!("[harness] {e}; trying again"),
            }
        }
    }

    /// `kill -9`, then [`Self::start`].
    pub async fn restart(&mut self) {
        self.kill9();
        self.start().await;
    }

    /// The status of `GET /readyz`.
    pub async fn readiness(&self) -> StatusCode {
        self.client.get(&self.admin_url("/readyz")).await.status
    }

    /// Waits until `GET /readyz` answers 200.
    pub async fn wait_ready(&self) {
        eventually(
            &format!("{} is ready", self.node_id()),
            crate::SYNC_DEADLINE,
            async || match self.readiness().await {
                StatusCode::OK => Ok(()),
                other => Err(format!("/readyz answered {other}")),
            },
        )
        .await;
    }

    /// `GET /config` of the admin listener: `{"version", "hash", "store_id"}`
    /// of what it runs; an error if it does not answer 200 with JSON.
    pub async fn running_config(&self) -> Result<Value, String> {
        let response = self
            .client
            .send(http::Method::GET, &self.admin_url("/config"), &[], None)
            .await
            .map_err(|e| format!("{e:#}"))?;
        if response.status != StatusCode::OK {
            return Err(format!(
                "{} /config answered {} {:?}",
                self.node_id(),
                response.status,
                response.body
            ));
        }
        serde_json::from_str(&response.body).map_err(|e| {
            format!(
                "{} /config is not JSON ({e}): {:?}",
                self.node_id(),
                response.body
            )
        })
    }

    /// The version it runs; panics if `/config` does not answer.
    pub async fn running_version(&self) -> u64 {
        let config = self
            .running_config()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        config["version"]
            .as_u64()
            .unwrap_or_else(|| panic!("no version in {config}"))
    }
}

fn args(options: &DataPlaneOptions, listen: &str, admin: &str) -> Vec<String> {
    let mut args = Vec::new();
    for cp in &options.control_planes {
        args.extend(["--control-plane".to_owned(), cp.clone()]);
    }
    args.extend([
        "--listen".to_owned(),
        listen.to_owned(),
        "--admin-listen".to_owned(),
        admin.to_owned(),
        "--node-id".to_owned(),
        options.node_id.clone(),
        "--cache-file".to_owned(),
        options.cache_file.display().to_string(),
    ]);
    args
}
