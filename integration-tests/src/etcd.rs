//! A real etcd cluster for the tests: `etcd` (Debian's `etcd-server`, 3.4+)
//! started as child processes on 127.0.0.1 ports of their own, each member
//! with its data directory in the test's directory; healthy once every
//! running member's `/health` says so; killed with the test.
//!
//! **Without `etcd` installed a test that asks for it fails**, naming the
//! package: it never passes without having run.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::StatusCode;

use crate::client::Client;
use crate::eventually::eventually;
use crate::process::ChildProcess;

/// How long a cluster has to become healthy.
pub const HEALTHY_DEADLINE: Duration = Duration::from_secs(30);

/// The `etcd` binary: `$ETCD_BIN`, else the first `etcd` on `PATH`, else
/// `/usr/bin/etcd`. Panics with what to install when there is none.
pub fn etcd_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("ETCD_BIN") {
        return PathBuf::from(path);
    }
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("etcd"))
            .find(|candidate| candidate.is_file())
    });
    let path = on_path.unwrap_or_else(|| PathBuf::from("/usr/bin/etcd"));
    assert!(
        path.is_file(),
        "etcd is not installed: this test needs a real etcd 3.4+ \
         (`apt-get install etcd-server`, which .ci/run does), or ETCD_BIN=/path/to/etcd"
    );
    path
}

/// One member: its process, its ports and data directory.
#[derive(Debug)]
struct Member {
    name: String,
    process: ChildProcess,
    client: SocketAddr,
    /// Plain-HTTP `/health` (`--listen-metrics-urls`), TLS or not.
    health: SocketAddr,
    args: Vec<String>,
}

/// PEM files for a cluster that serves its clients over TLS and asks them
/// for a certificate signed by `ca`.
#[derive(Debug, Clone)]
pub struct EtcdTls {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// An etcd cluster of one or more members.
#[derive(Debug)]
pub struct Etcd {
    members: Vec<Member>,
    /// A second address its members serve clients on, same ports.
    also_on: Option<IpAddr>,
    http: Client,
}

impl Etcd {
    /// Starts a cluster of `size` members with data directories under `dir`
    /// and waits until it is healthy.
    pub async fn start(dir: &Path, size: usize) -> Etcd {
        Etcd::start_with(dir, size, None).await
    }

    /// [`Etcd::start`], with TLS towards clients when `tls` is given.
    pub async fn start_with(dir: &Path, size: usize, tls: Option<&EtcdTls>) -> Etcd {
        Etcd::start_inner(dir, size, tls, None).await
    }

    /// [`Etcd::start`], each member serving clients on its port of `ip` too
    /// (an address of this host, such as a veth's towards a network
    /// namespace): see [`Self::store_url_on`].
    pub async fn start_also_on(dir: &Path, size: usize, ip: IpAddr) -> Etcd {
        Etcd::start_inner(dir, size, None, Some(ip)).await
    }

    async fn start_inner(
        dir: &Path,
        size: usize,
        tls: Option<&EtcdTls>,
        also_on: Option<IpAddr>,
    ) -> Etcd {
        let binary = etcd_binary();
        let scheme = if tls.is_some() { "https" } else { "http" };
        let ports: Vec<(String, SocketAddr, SocketAddr)> = (0..size)
            .map(|i| {
                (
                    format!("sy-etcd-{i}"),
                    crate::closed_port(),
                    crate::closed_port(),
                )
            })
            .collect();
        let initial_cluster = ports
            .iter()
            .map(|(name, _, peer)| format!("{name}=http://{peer}"))
            .collect::<Vec<_>>()
            .join(",");
        let token = format!("sy-{}-{}", std::process::id(), ports[0].1.port());
        let members = ports
            .into_iter()
            .map(|(name, client, peer)| {
                let data = dir.join(format!("{name}.etcd"));
                let health = crate::closed_port();
                // The port is free on 127.0.0.1; on an address of our own
                // that nothing else uses it is free too.
                let listen = match also_on {
                    Some(ip) => format!(
                        "{scheme}://{client},{scheme}://{}",
                        SocketAddr::new(ip, client.port())
                    ),
                    None => format!("{scheme}://{client}"),
                };
                let mut args: Vec<String> = [
                    "--name",
                    &name,
                    "--data-dir",
                    &data.display().to_string(),
                    "--listen-client-urls",
                    &listen,
                    "--advertise-client-urls",
                    &format!("{scheme}://{client}"),
                    "--listen-metrics-urls",
                    &format!("http://{health}"),
                    "--listen-peer-urls",
                    &format!("http://{peer}"),
                    "--initial-advertise-peer-urls",
                    &format!("http://{peer}"),
                    "--initial-cluster",
                    &initial_cluster,
                    "--initial-cluster-token",
                    &token,
                    "--initial-cluster-state",
                    "new",
                    // Elections within a fraction of a second keep the tests short.
                    "--heartbeat-interval",
                    "50",
                    "--election-timeout",
                    "500",
                ]
                .iter()
                .map(|s| (*s).to_owned())
                .collect();
                if let Some(tls) = tls {
                    for (flag, path) in [
                        ("--cert-file", &tls.cert),
                        ("--key-file", &tls.key),
                        ("--trusted-ca-file", &tls.ca),
                    ] {
                        args.push(flag.to_owned());
                        args.push(path.display().to_string());
                    }
                    args.push("--client-cert-auth".to_owned());
                }
                let process = ChildProcess::start(&name, binary.clone(), &args, &[]);
                Member {
                    name,
                    process,
                    client,
                    health,
                    args,
                }
            })
            .collect();
        let etcd = Etcd {
            members,
            also_on,
            http: Client::without_pool(),
        };
        etcd.wait_healthy().await;
        etcd
    }

    /// `etcd://host:port,…` of every member, for `--store`.
    pub fn store_url(&self) -> String {
        let hosts: Vec<String> = self.members.iter().map(|m| m.client.to_string()).collect();
        format!("etcd://{}", hosts.join(","))
    }

    /// `etcd://IP:port,…` of every member on the second address it was
    /// started with ([`Self::start_also_on`]).
    pub fn store_url_on(&self, ip: IpAddr) -> String {
        assert_eq!(self.also_on, Some(ip), "etcd does not listen on {ip}");
        let hosts: Vec<String> = self
            .members
            .iter()
            .map(|m| SocketAddr::new(ip, m.client.port()).to_string())
            .collect();
        format!("etcd://{}", hosts.join(","))
    }

    /// Waits until every running member answers `/health` with `"true"`
    /// (which needs a leader, so a quorum).
    pub async fn wait_healthy(&self) {
        eventually("etcd is healthy", HEALTHY_DEADLINE, async || {
            for member in &self.members {
                let url = format!("http://{}/health", member.health);
                let response = self
                    .http
                    .send(http::Method::GET, &url, &[], None)
                    .await
                    .map_err(|e| format!("{}: {e}", member.name))?;
                if response.status != StatusCode::OK || !response.body.contains("true") {
                    return Err(format!(
                        "{} answers {} {}",
                        member.name, response.status, response.body
                    ));
                }
            }
            Ok(())
        })
        .await;
    }

    /// Turns etcd's auth on with a `root` user of `password` (through etcd's
    /// JSON gateway, so no `etcdctl` is needed; not with TLS).
    pub async fn enable_auth(&self, password: &str) {
        let base = format!("http://{}", self.members[0].client);
        let steps = [
            ("/v3/auth/role/add", serde_json::json!({ "name": "root" })),
            (
                "/v3/auth/user/add",
                serde_json::json!({ "name": "root", "password": password }),
            ),
            (
                "/v3/auth/user/grant",
                serde_json::json!({ "user": "root", "role": "root" }),
            ),
            ("/v3/auth/enable", serde_json::json!({})),
        ];
        for (path, body) in steps {
            let url = format!("{base}{path}");
            let response = self
                .http
                .send(http::Method::POST, &url, &[], Some(&body))
                .await
                .unwrap_or_else(|e| panic!("POST {url}: {e}"));
            assert_eq!(response.status, StatusCode::OK, "POST {url}: {response:?}");
        }
    }

    /// `kill -9` of member `index`.
    pub fn kill(&mut self, index: usize) {
        self.members[index].process.kill9();
    }

    /// Starts member `index` again from its data directory (after [`Self::kill`]).
    pub fn restart(&mut self, index: usize) {
        let member = &mut self.members[index];
        let mut args = member.args.clone();
        if let Some(state) = args.iter().position(|a| a == "--initial-cluster-state") {
            args[state + 1] = "existing".to_owned();
        }
        member.process.respawn(&args);
    }
}

/// A TCP relay to an etcd member that a test can cut (every connection
/// dropped, new ones refused) and heal again on the same port: a node behind
/// it is partitioned from etcd while everything else still reaches it.
#[derive(Debug)]
pub struct Cuttable {
    addr: SocketAddr,
    target: SocketAddr,
    relay: Option<tokio::task::JoinHandle<()>>,
}

impl Cuttable {
    /// A relay on a port of its own to the first member of `etcd`.
    pub async fn start(etcd: &Etcd) -> Cuttable {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("can bind 127.0.0.1:0");
        let addr = listener
            .local_addr()
            .expect("a bound listener has an address");
        let target = etcd.members[0].client;
        Cuttable {
            addr,
            target,
            relay: Some(tokio::spawn(relay(listener, target))),
        }
    }

    /// `etcd://ADDR` of the relay, for `--store`.
    pub fn store_url(&self) -> String {
        format!("etcd://{}", self.addr)
    }

    /// Drops every relayed connection and refuses new ones.
    pub fn cut(&mut self) {
        if let Some(relay) = self.relay.take() {
            relay.abort();
        }
    }

    /// Relays again, on the same port.
    pub async fn heal(&mut self) {
        self.cut();
        let listener = eventually(
            "the relay's port is free again",
            HEALTHY_DEADLINE,
            async || tokio::net::TcpListener::bind(self.addr).await,
        )
        .await;
        self.relay = Some(tokio::spawn(relay(listener, self.target)));
    }
}

impl Drop for Cuttable {
    fn drop(&mut self) {
        self.cut();
    }
}

/// Accepts and relays until aborted; the connections' tasks are in a
/// `JoinSet`, so they end with it.
async fn relay(listener: tokio::net::TcpListener, target: SocketAddr) {
    let mut connections = tokio::task::JoinSet::new();
    while let Ok((mut client, _)) = listener.accept().await {
        while connections.try_join_next().is_some() {}
        connections.spawn(async move {
            if let Ok(mut server) = tokio::net::TcpStream::connect(target).await {
                // Either side closing ends the relay of this connection.
                drop(tokio::io::copy_bidirectional(&mut client, &mut server).await);
            }
        });
    }
}
