//! A real network partition between a control-plane node and etcd (issue
//! 10): node B runs in a network namespace of its own, reaching etcd over
//! one veth pair and being reached (by the test and the replica) over
//! another; the etcd link is set down. B answers writes 503 and changes
//! nothing, node A (on the host) takes them, the replica that was on B
//! serves on under load and moves to A; healed, B takes writes again and
//! has A's.
//!
//! It needs root and iproute2 (`ip netns`, veth): without them it **fails**,
//! saying so. Its namespace and links have the test's pid in their names,
//! private addresses (10.213.X.0/29) that only the host end and the
//! namespace use, and are deleted when the test ends, panics included.

use std::net::IpAddr;
use std::process::Command;
use std::time::Duration;

use http::{Method, StatusCode};
use serde_json::json;
use switchyard_integration_tests::control_plane::version_of;
use switchyard_integration_tests::etcd::Etcd;
use switchyard_integration_tests::{
    ControlPlane, DataPlane, DataPlaneOptions, Load, LoadOptions, TestDir, bodies, eventually,
    secs, spawn_backend,
};
use tokio::time::Instant;

/// The replica's longest wait between two reconnects (data-plane's
/// `BACKOFF_MAX`), plus the 3 s a node waits for etcd before it ends its
/// streams, plus room for a loaded 2-core machine.
const MOVE_DEADLINE: Duration = Duration::from_secs(30 + 3 + 10);

/// Runs `ip ARGS`; the error says what failed and what the test needs.
fn ip(args: &[&str]) -> Result<(), String> {
    let output = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run `ip` (install iproute2): {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`ip {}` failed ({}): {}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// `ip ARGS` that must succeed: the test cannot run without it.
fn must_ip(args: &[&str]) {
    if let Err(e) = ip(args) {
        panic!(
            "{e}\nthis test needs root (CAP_NET_ADMIN) and iproute2 to make a network \
             namespace and veth pairs; run it as root (as .ci/run and scripts/test.sh do)"
        );
    }
}

/// A network namespace and two veth pairs from the host into it, deleted on drop.
///
/// `api` link: host `10.213.X.1` ↔ namespace `10.213.X.2`, for the test and
/// the replica to reach node B. `etcd` link: host `10.213.X.5` ↔ namespace
/// `10.213.X.6`, the only way from B to etcd; [`Self::cut`] sets it down.
struct Partition {
    namespace: String,
    api_host_link: String,
    etcd_host_link: String,
    api_inside: IpAddr,
    etcd_host: IpAddr,
}

impl Partition {
    fn create() -> Partition {
        let pid = std::process::id();
        // Link names are at most 15 bytes: "syp" + up to 7 digits + 2.
        let tag = format!("syp{}", pid % 10_000_000);
        let subnet = pid % 254 + 1;
        let octets = |last: u8| IpAddr::from([10, 213, subnet as u8, last]);
        let partition = Partition {
            namespace: format!("sy-partition-{pid}"),
            api_host_link: format!("{tag}ah"),
            etcd_host_link: format!("{tag}eh"),
            api_inside: octets(2),
            etcd_host: octets(5),
        };
        // What a crashed earlier run with this pid left behind goes first.
        partition.remove();
        must_ip(&["netns", "add", &partition.namespace]);
        let ns = partition.namespace.clone();
        must_ip(&["-n", &ns, "link", "set", "lo", "up"]);
        for (host_link, host, inside) in [
            (&partition.api_host_link, octets(1), octets(2)),
            (&partition.etcd_host_link, octets(5), octets(6)),
        ] {
            let inside_link = format!("{}n", &host_link[..host_link.len() - 1]);
            must_ip(&[
                "link",
                "add",
                host_link,
                "type",
                "veth",
                "peer",
                "name",
                &inside_link,
            ]);
            must_ip(&["link", "set", &inside_link, "netns", &ns]);
            must_ip(&["addr", "add", &format!("{host}/30"), "dev", host_link]);
            must_ip(&["link", "set", host_link, "up"]);
            must_ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{inside}/30"),
                "dev",
                &inside_link,
            ]);
            must_ip(&["-n", &ns, "link", "set", &inside_link, "up"]);
        }
        partition
    }

    /// The command that runs a program inside the namespace.
    fn exec_prefix(&self) -> Vec<String> {
        ["ip", "netns", "exec", &self.namespace]
            .iter()
            .map(|s| (*s).to_owned())
            .collect()
    }

    /// B loses etcd: packets on the etcd link go nowhere (no reset, no
    /// answer), as when a network between machines fails.
    fn cut(&self) {
        must_ip(&["link", "set", &self.etcd_host_link, "down"]);
    }

    fn heal(&self) {
        must_ip(&["link", "set", &self.etcd_host_link, "up"]);
    }

    /// Deletes what exists of it (deleting one end of a veth pair deletes both).
    fn remove(&self) {
        for link in [&self.api_host_link, &self.etcd_host_link] {
            drop(ip(&["link", "del", link]));
        }
        drop(ip(&["netns", "del", &self.namespace]));
    }
}

impl Drop for Partition {
    fn drop(&mut self) {
        self.remove();
    }
}

/// A write that must answer 200; returns the version.
async fn write_ok(node: &ControlPlane, path: &str, weight: u32) -> u64 {
    node.write(Method::PATCH, path, Some(&json!({ "weight": weight })))
        .await
}

/// The weight of the only member of cluster `web` on `node`.
async fn weight(node: &ControlPlane) -> u64 {
    let config = node.config().await;
    config["clusters"][0]["members"][0]["weight"]
        .as_u64()
        .unwrap_or_else(|| panic!("no member weight in {config}"))
}

/// The version `replica` runs; an error while it has none (or does not answer).
async fn running(replica: &DataPlane) -> Result<u64, String> {
    let config = replica.running_config().await?;
    config["version"]
        .as_u64()
        .ok_or_else(|| format!("no version in {config}"))
}

/// Where `node` lists replica `name`: (connected, version).
async fn listed(node: &ControlPlane, name: &str) -> Option<(bool, u64)> {
    let entry = node.dataplane(name).await?;
    Some((
        entry["connected"] == true,
        entry["version"].as_u64().unwrap_or(0),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_in_a_network_namespace_cut_off_from_etcd() {
    let dir = TestDir::new("etcd-netns-partition");
    // Dropped last (declared first): the processes in the namespace are
    // killed before it is deleted.
    let partition = Partition::create();
    let etcd = Etcd::start_also_on(dir.path(), 1, partition.etcd_host).await;
    let etcd_args = |url: String| {
        vec![
            "--store".to_owned(),
            url,
            "--etcd-timeout".to_owned(),
            "1s".to_owned(),
        ]
    };
    let own = |name: &str| {
        let own = dir.join(name);
        std::fs::create_dir_all(&own).unwrap();
        own
    };
    let a = ControlPlane::spawn(&own("a"), etcd_args(etcd.store_url())).await;
    let b = ControlPlane::spawn_under(
        &partition.exec_prefix(),
        partition.api_inside,
        &own("b"),
        etcd_args(etcd.store_url_on(partition.etcd_host)),
    )
    .await;
    assert_eq!(b.api_addr().ip(), partition.api_inside);
    let backend = spawn_backend("one").await;

    // The replica (on the host) knows B first, then A.
    let mut options = DataPlaneOptions::new(&b, "r1", &dir.join("r1.cache"));
    options.control_planes = vec![b.grpc_url(), a.grpc_url()];
    let r1 = DataPlane::spawn(options).await;
    b.write(
        Method::PUT,
        "/api/v1/clusters/web",
        Some(&bodies::cluster(&[(&backend, 1)])),
    )
    .await;
    let version = b
        .write(
            Method::PUT,
            "/api/v1/routes/web",
            Some(&bodies::route("/", "web")),
        )
        .await;
    eventually("r1 runs B's write, connected to B", secs(30), async || {
        let running = running(&r1).await?;
        match listed(&b, "r1").await {
            Some((true, v)) if v == version && running == version => Ok(()),
            other => Err(format!("B lists {other:?}, r1 runs {running}")),
        }
    })
    .await;
    assert_eq!(r1.get("/").await.body, "one");
    let id = b.config().await["clusters"][0]["members"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = format!("/api/v1/clusters/web/members/{id}");
    eventually("A has B's writes", secs(10), async || {
        match a.version().await {
            v if v == version => Ok(()),
            v => Err(format!("A is at {v}")),
        }
    })
    .await;

    // Bounded load through the replica for the whole partition.
    let load = Load::start(LoadOptions {
        urls: vec![r1.url("/")],
        expected_bodies: vec!["one".into()],
        concurrency: 2,
        max_requests: 100_000,
        max_duration: Duration::from_secs(180),
    });
    eventually("the load is flowing", secs(20), async || {
        match load.ok_count() {
            n if n >= 20 => Ok(()),
            n => Err(format!("{n} ok")),
        }
    })
    .await;

    partition.cut();
    let cut_at = Instant::now();
    eventually("a write on B (cut off) answers 503", secs(20), async || {
        let response = b
            .call(Method::PATCH, &path, Some(&json!({ "weight": 2 })))
            .await;
        match response.status {
            StatusCode::SERVICE_UNAVAILABLE if response.error_message().contains("etcd") => Ok(()),
            _ => Err(format!("{response:?}")),
        }
    })
    .await;
    for attempt in 0..3 {
        let response = b
            .call(
                Method::PUT,
                "/api/v1/clusters/other",
                Some(&bodies::cluster(&[(&backend, 1)])),
            )
            .await;
        assert_eq!(
            response.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "write {attempt} on B while cut off: {response:?}"
        );
    }
    let read = eventually("B's reads say they are stale", secs(20), async || {
        let response = b.get("/api/v1/config").await;
        if response.status == StatusCode::OK && response.header("x-switchyard-stale").is_some() {
            Ok(response)
        } else {
            Err(format!("{response:?}"))
        }
    })
    .await;
    assert_eq!(read.json()["version"], version, "B serves its last config");
    assert_eq!(
        a.version().await,
        version,
        "B's refused writes changed nothing"
    );
    assert_eq!(weight(&a).await, 1);

    // A, which reaches etcd, takes writes; the replica moves to A and gets them.
    let on_a = write_ok(&a, &path, 3).await;
    assert_eq!(on_a, version + 1);
    let moved = eventually(
        "r1 moves to A and runs A's write",
        MOVE_DEADLINE,
        async || {
            let running = running(&r1).await?;
            match listed(&a, "r1").await {
                Some((true, v)) if v == on_a && running == on_a => Ok(cut_at.elapsed()),
                other => Err(format!("A lists {other:?}, r1 runs {running}")),
            }
        },
    )
    .await;
    eprintln!("r1 moved to A and synced {moved:?} after the cut");
    assert!(
        b.log().count_matching("cannot reach its store") > 0,
        "B sent its replica away"
    );
    let report = load.stop().await;
    assert_eq!(
        report.failed, 0,
        "requests through r1 failed: {:?}",
        report.failures
    );
    assert!(report.ok >= 20, "{report:?}");

    // Healed: B sees A's write, takes writes again from there, and A sees them.
    partition.heal();
    eventually("B has A's write", secs(30), async || {
        let response = b.get("/api/v1/config").await;
        let config = response.json();
        if config["version"] == on_a && response.header("x-switchyard-stale").is_none() {
            Ok(())
        } else {
            Err(format!("{response:?}"))
        }
    })
    .await;
    assert_eq!(
        weight(&b).await,
        3,
        "A's write, not one of B's refused ones"
    );
    let again = eventually("B takes writes again", secs(30), async || {
        let response = b
            .call(Method::PATCH, &path, Some(&json!({ "weight": 4 })))
            .await;
        if response.status == StatusCode::OK {
            Ok(version_of(&response))
        } else {
            Err(format!("{response:?}"))
        }
    })
    .await;
    assert_eq!(again, on_a + 1);
    eventually("A has B's write", secs(10), async || {
        match a.version().await {
            v if v == again => Ok(()),
            v => Err(format!("A is at {v}")),
        }
    })
    .await;
    assert_eq!(weight(&a).await, 4);
    let names: Vec<String> = a.config().await["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["name"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(names, ["web"], "no write refused on B was committed later");
    eventually("r1 runs B's write", secs(20), async || {
        match running(&r1).await? {
            v if v == again => Ok(()),
            v => Err(format!("r1 runs {v}")),
        }
    })
    .await;
    assert_eq!(r1.get("/").await.body, "one");
}
