//! The control plane as a child process, and helpers for its REST API.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use http::{Method, StatusCode};
use serde_json::Value;
use tokio::time::Instant;

use crate::client::{Client, Response};
use crate::data_plane::DataPlane;
use crate::eventually::eventually;
use crate::process::{ChildProcess, Log, STARTUP_DEADLINE, binary};

const API_TOKEN: &str = "api.addr=";
const GRPC_TOKEN: &str = "grpc.addr=";

/// A control plane: a child process with its state file, REST and gRPC addresses.
#[derive(Debug)]
pub struct ControlPlane {
    process: ChildProcess,
    state_file: PathBuf,
    extra_args: Vec<String>,
    api: SocketAddr,
    grpc: SocketAddr,
    client: Client,
}

/// Starts a control plane whose state file is `dir/control-plane-state.json`,
/// on ports the kernel picks; returns once both listeners are bound.
pub async fn spawn_control_plane(dir: &Path) -> ControlPlane {
    ControlPlane::spawn(dir, Vec::new()).await
}

impl ControlPlane {
    /// Starts one with `extra_args` (such as `--config FILE`) added to its flags.
    pub async fn spawn(dir: &Path, extra_args: Vec<String>) -> Self {
        Self::spawn_under(&[], IpAddr::from([127, 0, 0, 1]), dir, extra_args).await
    }

    /// [`Self::spawn`] under the command `prefix` (`ip netns exec NS`), its API
    /// and gRPC listening on ports of `ip` (an address it has there).
    pub async fn spawn_under(
        prefix: &[String],
        ip: IpAddr,
        dir: &Path,
        extra_args: Vec<String>,
    ) -> Self {
        let state_file = dir.join("control-plane-state.json");
        let any_port = SocketAddr::new(ip, 0).to_string();
        let args = args(&state_file, &extra_args, &any_port, &any_port);
        let mut process = ChildProcess::start_under(
            prefix,
            "control plane",
            binary("sy-control-plane"),
            &args,
            &[],
        );
        let addrs = match process.wait_for_addresses(&[API_TOKEN, GRPC_TOKEN]).await {
            Ok(addrs) => addrs,
            Err(e) => panic!("{e}"),
        };
        ControlPlane {
            process,
            state_file,
            extra_args,
            api: addrs[0],
            grpc: addrs[1],
            client: Client::without_pool(),
        }
    }

    /// Starts one that bootstraps from `config` (written to `dir/bootstrap.json`).
    pub async fn spawn_with_config(dir: &Path, config: &Value) -> Self {
        let file = dir.join("bootstrap.json");
        let json = serde_json::to_vec_pretty(config).expect("a JSON value serializes");
        std::fs::write(&file, json)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", file.display()));
        Self::spawn(dir, vec!["--config".to_owned(), file.display().to_string()]).await
    }

    pub fn api_addr(&self) -> SocketAddr {
        self.api
    }

    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc
    }

    /// The address data planes are given: `http://127.0.0.1:GRPCPORT` (or its `ip`).
    pub fn grpc_url(&self) -> String {
        format!("http://{}", self.grpc)
    }

    /// The URL of an API path (`/api/v1/config`).
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.api)
    }

    pub fn state_file(&self) -> &Path {
        &self.state_file
    }

    /// The log of its current (or last) run.
    pub fn log(&self) -> &Log {
        self.process.log()
    }

    /// Sends SIGHUP (re-reads the API token file); false if it is not running.
    pub fn hangup(&mut self) -> bool {
        self.process.hangup()
    }

    /// `kill -9`: no shutdown, no flush.
    pub fn kill9(&mut self) {
        self.process.kill9();
    }

    /// SIGTERM: the graceful shutdown. False if it had already exited.
    pub fn terminate(&mut self) -> bool {
        self.process.terminate()
    }

    /// Whether the process still runs.
    pub fn is_running(&mut self) -> bool {
        self.process.is_running()
    }

    /// Starts it again from its state file on the same ports (after [`Self::kill9`]).
    /// Retries while the ports are not free yet.
    pub async fn start(&mut self) {
        let args = args(
            &self.state_file,
            &self.extra_args,
            &self.api.to_string(),
            &self.grpc.to_string(),
        );
        let started = Instant::now();
        loop {
            self.process.respawn(&args);
            match self
                .process
                .wait_for_addresses(&[API_TOKEN, GRPC_TOKEN])
                .await
            {
                Ok(addrs) => {
                    assert_eq!(addrs, [self.api, self.grpc], "restarted on other ports");
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

    /// One API call; panics on a transport error.
    pub async fn call(&self, method: Method, path: &str, body: Option<&Value>) -> Response {
        self.client.json(method, &self.url(path), body).await
    }

    pub async fn get(&self, path: &str) -> Response {
        self.call(Method::GET, path, None).await
    }

    pub async fn put(&self, path: &str, body: &Value) -> Response {
        self.call(Method::PUT, path, Some(body)).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Response {
        self.call(Method::POST, path, Some(body)).await
    }

    pub async fn patch(&self, path: &str, body: &Value) -> Response {
        self.call(Method::PATCH, path, Some(body)).await
    }

    pub async fn delete(&self, path: &str) -> Response {
        self.call(Method::DELETE, path, None).await
    }

    /// A call with a raw body (malformed JSON on purpose).
    pub async fn call_raw(&self, method: Method, path: &str, body: &str) -> Response {
        self.client.raw_json(method, &self.url(path), body).await
    }

    /// A write that must succeed (200 or 201); returns the version it answered.
    pub async fn write(&self, method: Method, path: &str, body: Option<&Value>) -> u64 {
        let response = self.call(method.clone(), path, body).await;
        assert!(
            matches!(response.status, StatusCode::OK | StatusCode::CREATED),
            "{method} {path} answered {} {:?}",
            response.status,
            response.body
        );
        version_of(&response)
    }

    /// `GET /api/v1/config`.
    pub async fn config(&self) -> Value {
        let response = self.get("/api/v1/config").await;
        assert_eq!(
            response.status,
            StatusCode::OK,
            "GET /api/v1/config: {}",
            response.body
        );
        response.json()
    }

    /// The version `GET /api/v1/config` shows.
    pub async fn version(&self) -> u64 {
        let config = self.config().await;
        config["version"]
            .as_u64()
            .unwrap_or_else(|| panic!("no version in {config}"))
    }

    /// `GET /api/v1/dataplanes`.
    /// The value of an unlabelled counter or gauge on `/metrics` (0 if absent).
    pub async fn metric(&self, name: &str) -> u64 {
        let response = self.get("/metrics").await;
        assert_eq!(
            response.status,
            StatusCode::OK,
            "GET /metrics: {response:?}"
        );
        response
            .body
            .lines()
            .filter_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
            .find_map(|value| value.trim().parse::<f64>().ok())
            .map_or(0, |value| value as u64)
    }

    pub async fn dataplanes(&self) -> Vec<Value> {
        let response = self.get("/api/v1/dataplanes").await;
        assert_eq!(
            response.status,
            StatusCode::OK,
            "GET /api/v1/dataplanes: {}",
            response.body
        );
        match response.json() {
            Value::Array(replicas) => replicas,
            other => panic!("GET /api/v1/dataplanes is not an array: {other}"),
        }
    }

    /// The entry of `node_id` in `GET /api/v1/dataplanes`.
    pub async fn dataplane(&self, node_id: &str) -> Option<Value> {
        self.dataplanes()
            .await
            .into_iter()
            .find(|r| r["node_id"] == node_id)
    }

    /// Waits until every replica is listed as connected (so that `?wait` waits for it).
    pub async fn wait_connected(&self, replicas: &[&DataPlane]) {
        eventually(
            "every replica is connected to the control plane",
            crate::SYNC_DEADLINE,
            async || {
                let listed = self.dataplanes().await;
                for replica in replicas {
                    let entry = listed.iter().find(|r| r["node_id"] == replica.node_id());
                    if entry.is_none_or(|r| r["connected"] != true) {
                        return Err(format!(
                            "{} is not connected in {listed:?}",
                            replica.node_id()
                        ));
                    }
                }
                Ok(())
            },
        )
        .await;
    }

    /// Waits until the control plane lists every replica as connected and
    /// `synced` at `version`, and each replica's admin `/config` says it runs
    /// `version` (with the control plane's hash when that is its current version).
    pub async fn wait_synced(&self, replicas: &[&DataPlane], version: u64) {
        eventually(
            &format!("every replica is synced at version {version}"),
            crate::SYNC_DEADLINE,
            async || self.check_synced(replicas, version).await,
        )
        .await;
    }

    /// Whether every replica is synced at `version` right now (see [`Self::wait_synced`]).
    pub async fn check_synced(&self, replicas: &[&DataPlane], version: u64) -> Result<(), String> {
        let config = self.config().await;
        let listed = self.dataplanes().await;
        for replica in replicas {
            let Some(entry) = listed.iter().find(|r| r["node_id"] == replica.node_id()) else {
                return Err(format!("{} is not listed in {listed:?}", replica.node_id()));
            };
            if entry["connected"] != true
                || entry["state"] != "synced"
                || entry["version"] != version
            {
                return Err(format!("control plane shows {entry}"));
            }
            let running = replica.running_config().await?;
            if running["version"] != version {
                return Err(format!("{} runs {running}", replica.node_id()));
            }
            if config["version"] == version && running["hash"] != config["hash"] {
                return Err(format!(
                    "{} runs hash {} but the control plane has {}",
                    replica.node_id(),
                    running["hash"],
                    config["hash"]
                ));
            }
        }
        Ok(())
    }
}

/// The `version` of a write's answer; panics if there is none.
pub fn version_of(response: &Response) -> u64 {
    response.json()["version"]
        .as_u64()
        .unwrap_or_else(|| panic!("no version in {} {:?}", response.status, response.body))
}

fn args(state_file: &Path, extra: &[String], api: &str, grpc: &str) -> Vec<String> {
    let mut args = vec![
        "--api-listen".to_owned(),
        api.to_owned(),
        "--grpc-listen".to_owned(),
        grpc.to_owned(),
        "--state-file".to_owned(),
        state_file.display().to_string(),
    ];
    args.extend(extra.iter().cloned());
    args
}
