//! Several control-plane nodes over one real etcd (`--store etcd://…`):
//! a write on any node reaches the replicas of every node; two nodes racing
//! with compare-and-set give one winner and one 409; a node killed with
//! `kill -9` loses nothing acknowledged and its replicas fail over to another
//! node while serving on; an etcd without quorum answers writes 503, reads
//! say they are stale, replicas keep serving, and writes resume with it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use http::{Method, StatusCode};
use serde_json::{Value, json};
use switchyard_integration_tests::control_plane::version_of;
use switchyard_integration_tests::etcd::{Cuttable, Etcd};
use switchyard_integration_tests::{
    ControlPlane, DataPlane, DataPlaneOptions, Load, LoadOptions, TestDir, bodies, eventually,
    secs, spawn_backend,
};

/// A control-plane node on `etcd` (its own directory for anything local).
async fn node(dir: &TestDir, name: &str, etcd: &Etcd) -> ControlPlane {
    let own = dir.join(name);
    std::fs::create_dir_all(&own)
        .unwrap_or_else(|e| panic!("cannot create {}: {e}", own.display()));
    ControlPlane::spawn(
        &own,
        vec![
            "--store".to_owned(),
            etcd.store_url(),
            "--etcd-timeout".to_owned(),
            "1s".to_owned(),
        ],
    )
    .await
}

/// A replica that tries the control planes in the order given.
async fn replica(dir: &TestDir, name: &str, nodes: &[&ControlPlane]) -> DataPlane {
    let mut options = DataPlaneOptions::new(nodes[0], name, &dir.join(&format!("{name}.cache")));
    options.control_planes = nodes.iter().map(|n| n.grpc_url()).collect();
    DataPlane::spawn(options).await
}

/// Waits until `replica` runs `version` (and never saw it go backwards).
async fn wait_running(replica: &DataPlane, version: u64) {
    let mut last = 0;
    eventually(
        &format!("{} runs version {version}", replica.node_id()),
        secs(30),
        async || {
            let running = replica.running_config().await?;
            let now = running["version"].as_u64().unwrap_or(0);
            assert!(
                now >= last,
                "{} went back from version {last} to {now}",
                replica.node_id()
            );
            last = now;
            if now == version {
                Ok(())
            } else {
                Err(format!("it runs {now}"))
            }
        },
    )
    .await;
}

fn same_snapshot(a: &Value, b: &Value) {
    for field in ["store_id", "version", "hash"] {
        assert_eq!(a[field], b[field], "{field}: {a} vs {b}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_on_any_node_reach_every_replica_and_survive_a_node_killed() {
    let dir = TestDir::new("etcd-nodes");
    let etcd = Etcd::start(dir.path(), 1).await;
    let mut a = node(&dir, "a", &etcd).await;
    let b = node(&dir, "b", &etcd).await;
    same_snapshot(&a.config().await, &b.config().await);
    let backend = spawn_backend("one").await;

    // r1 is on node a, r2 on node b; a write on b reaches both.
    let r1 = replica(&dir, "r1", &[&a, &b]).await;
    let r2 = replica(&dir, "r2", &[&b, &a]).await;
    // r3 knows only node a: when a dies, it leaves b's list with a's lease.
    let r3 = replica(&dir, "r3", &[&a]).await;
    b.write(
        Method::PUT,
        "/api/v1/clusters/web",
        Some(&bodies::cluster(&[(&backend, 1)])),
    )
    .await;
    let mut version = b
        .write(
            Method::PUT,
            "/api/v1/routes/web",
            Some(&bodies::route("/", "web")),
        )
        .await;
    for r in [&r1, &r2, &r3] {
        wait_running(r, version).await;
        assert_eq!(r.get("/").await.body, "one");
    }
    same_snapshot(&a.config().await, &b.config().await);

    // Every node lists every replica, whichever node it is connected to.
    for node in [&a, &b] {
        eventually(
            "every replica is listed on every node",
            secs(10),
            async || {
                let listed = node.dataplanes().await;
                for name in ["r1", "r2", "r3"] {
                    match listed.iter().find(|r| r["node_id"] == name) {
                        Some(r) if r["connected"] == true && r["version"] == version => {}
                        other => return Err(format!("{name}: {other:?} in {listed:?}")),
                    }
                }
                Ok(())
            },
        )
        .await;
    }

    // ?wait on node a returns once the replica on node b applied the write too.
    let waited = a
        .write(
            Method::PATCH,
            &format!(
                "/api/v1/clusters/web/members/{}?wait=20s",
                member_id(&a).await
            ),
            Some(&json!({ "weight": 9 })),
        )
        .await;
    assert_eq!(
        r2.running_version().await,
        waited,
        "r2 (on b) applied it before a answered"
    );
    version = waited;

    // Writes through alternating nodes: each answers the next version.
    for i in 0..10_u32 {
        let node = if i % 2 == 0 { &a } else { &b };
        let next = node
            .write(
                Method::PATCH,
                &format!("/api/v1/clusters/web/members/{}", member_id(&b).await),
                Some(&json!({ "weight": i + 2 })),
            )
            .await;
        assert_eq!(next, version + 1, "write {i} on node {}", i % 2);
        version = next;
    }
    for r in [&r1, &r2] {
        wait_running(r, version).await;
    }

    // Two nodes race with compare-and-set on the same version: one wins.
    let config = a.config().await;
    let mut document = json!({
        "clusters": config["clusters"],
        "routes": config["routes"],
        "version": version,
    });
    document["clusters"][0]["members"][0]["weight"] = json!(50);
    let mut other = document.clone();
    other["clusters"][0]["members"][0]["weight"] = json!(60);
    let (on_a, on_b) = tokio::join!(
        a.put("/api/v1/config", &document),
        b.put("/api/v1/config", &other)
    );
    let mut statuses = [on_a.status, on_b.status];
    statuses.sort();
    assert_eq!(
        statuses,
        [StatusCode::OK, StatusCode::CONFLICT],
        "a: {on_a:?}, b: {on_b:?}"
    );
    let winner = if on_a.status == StatusCode::OK {
        &on_a
    } else {
        &on_b
    };
    version = version_of(winner);
    assert_eq!(version, config["version"].as_u64().unwrap() + 1);

    // kill -9 of node a while r1 (on a) serves: r1 moves to b, not one request fails.
    let load = Load::start(LoadOptions {
        urls: vec![r1.url("/")],
        expected_bodies: vec!["one".into()],
        concurrency: 2,
        max_requests: 100_000,
        max_duration: Duration::from_secs(120),
    });
    eventually("the load is flowing", secs(20), async || {
        if load.ok_count() >= 20 {
            Ok(())
        } else {
            Err(format!("{} ok", load.ok_count()))
        }
    })
    .await;
    a.kill9();
    let after_kill = b
        .write(
            Method::PATCH,
            &format!("/api/v1/clusters/web/members/{}", member_id(&b).await),
            Some(&json!({ "weight": 7 })),
        )
        .await;
    assert_eq!(after_kill, version + 1, "versions go on from the last one");
    for r in [&r1, &r2] {
        wait_running(r, after_kill).await;
    }
    eventually("b lists r1 as connected", secs(30), async || {
        match b.dataplane("r1").await {
            Some(entry) if entry["connected"] == true && entry["version"] == after_kill => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let report = load.stop().await;
    assert_eq!(report.failed, 0, "requests failed: {:?}", report.failures);
    eventually(
        "r3 leaves b's list with a's lease",
        secs(20),
        async || match b.dataplane("r3").await {
            None => Ok(()),
            Some(entry) => Err(format!("{entry}")),
        },
    )
    .await;
    assert_eq!(
        r3.get("/").await.body,
        "one",
        "r3 serves on without a control plane"
    );

    // Node a restarted: the same store, at the latest version.
    a.start().await;
    same_snapshot(&a.config().await, &b.config().await);
    assert_eq!(a.version().await, after_kill);
}

/// The id of the only member of cluster `web`.
async fn member_id(node: &ControlPlane) -> String {
    let config = node.config().await;
    config["clusters"][0]["members"][0]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no member in {config}"))
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_quorum_writes_answer_503_and_replicas_keep_serving() {
    let dir = TestDir::new("etcd-quorum");
    let mut etcd = Etcd::start(dir.path(), 3).await;
    let a = node(&dir, "a", &etcd).await;
    let backend = spawn_backend("one").await;
    let r1 = replica(&dir, "r1", &[&a]).await;
    a.write(
        Method::PUT,
        "/api/v1/clusters/web",
        Some(&bodies::cluster(&[(&backend, 1)])),
    )
    .await;
    let version = a
        .write(
            Method::PUT,
            "/api/v1/routes/web",
            Some(&bodies::route("/", "web")),
        )
        .await;
    wait_running(&r1, version).await;

    // One member of three down: writes go on.
    etcd.kill(2);
    let weight = |w: u32| json!({ "weight": w });
    let id = member_id(&a).await;
    let path = format!("/api/v1/clusters/web/members/{id}");
    let version = eventually("a write with two members of three", secs(20), async || {
        let response = a.call(Method::PATCH, &path, Some(&weight(2))).await;
        if response.status == StatusCode::OK {
            Ok(version_of(&response))
        } else {
            Err(format!("{response:?}"))
        }
    })
    .await;
    let before = a.config().await;

    // Two down: no quorum. Once etcd knows it has no leader, writes answer
    // 503 at once and change nothing; reads serve the last config, stale.
    etcd.kill(1);
    eventually("a write without quorum answers 503", secs(30), async || {
        let response = a.call(Method::PATCH, &path, Some(&weight(3))).await;
        match response.status {
            StatusCode::SERVICE_UNAVAILABLE
                if response.error_message().contains("etcd")
                    && response.error_message().contains("nothing was changed") =>
            {
                Ok(())
            }
            _ => Err(format!("{response:?}")),
        }
    })
    .await;
    let read = eventually("a read says it is stale", secs(30), async || {
        let response = a.get("/api/v1/config").await;
        if response.status == StatusCode::OK && response.header("x-switchyard-stale").is_some() {
            Ok(response)
        } else {
            Err(format!("{response:?}"))
        }
    })
    .await;
    same_snapshot(&read.json(), &before);
    for _ in 0..20 {
        assert_eq!(r1.get("/").await.body, "one", "the replica serves on");
    }
    assert_eq!(r1.running_version().await, version);

    // Back with quorum: writes resume, and versions go on from there.
    etcd.restart(1);
    etcd.restart(2);
    etcd.wait_healthy().await;
    let resumed = eventually("writes resume", secs(30), async || {
        let response = a.call(Method::PATCH, &path, Some(&weight(4))).await;
        if response.status == StatusCode::OK {
            Ok(version_of(&response))
        } else {
            Err(format!("{response:?}"))
        }
    })
    .await;
    assert!(resumed > version, "{resumed} after {version}");
    wait_running(&r1, resumed).await;
    let after = a.get("/api/v1/config").await;
    assert!(after.header("x-switchyard-stale").is_none(), "{after:?}");
}

/// Writes `t{trial}-{i}` clusters on `url` one after the other until one is
/// not answered 200 (the node was killed) or `stop` is set; returns the
/// acknowledged names with their versions.
async fn write_until_failure(
    base: String,
    trial: usize,
    body: Value,
    acked: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
) -> Vec<(String, u64)> {
    let client = switchyard_integration_tests::Client::without_pool();
    let mut done = Vec::new();
    // A 503 changed nothing (etcd busy, or the node just restarted): the same
    // write is made again, a bounded number of times.
    let mut unavailable = 0;
    let mut i = 0;
    while i < 500 && !stop.load(Ordering::Relaxed) {
        let name = format!("t{trial}-{i}");
        let url = format!("{base}/api/v1/clusters/{name}");
        match client.send(Method::PUT, &url, &[], Some(&body)).await {
            Ok(response) if response.status == StatusCode::OK => {
                done.push((name, version_of(&response)));
                acked.fetch_add(1, Ordering::Relaxed);
                i += 1;
            }
            Ok(response)
                if response.status == StatusCode::SERVICE_UNAVAILABLE && unavailable < 100 =>
            {
                unavailable += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Ok(response) => {
                eprintln!(
                    "writer {trial} on {base} stops: {} {}",
                    response.status, response.body
                );
                break;
            }
            Err(_) => break,
        }
    }
    done
}

/// How many times node a is killed mid-stream (each trial restarts it).
const KILL_TRIALS: usize = 10;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_of_a_node_during_writes_loses_no_acknowledged_write() {
    let dir = TestDir::new("etcd-kill-writes");
    let etcd = Etcd::start(dir.path(), 1).await;
    let mut a = node(&dir, "a", &etcd).await;
    let b = node(&dir, "b", &etcd).await;
    let backend = spawn_backend("one").await;
    let r1 = replica(&dir, "r1", &[&a, &b]).await;
    let r2 = replica(&dir, "r2", &[&b, &a]).await;
    let body = bodies::cluster(&[(&backend, 1)]);
    let mut acknowledged: Vec<(String, u64)> = Vec::new();

    for trial in 0..KILL_TRIALS {
        // Writers on both nodes at once; node a is killed mid-stream.
        let on_a = Arc::new(AtomicUsize::new(0));
        let writer_a = tokio::spawn(write_until_failure(
            format!("http://{}", a.api_addr()),
            trial * 2,
            body.clone(),
            on_a.clone(),
            Arc::new(AtomicBool::new(false)),
        ));
        let on_b = Arc::new(AtomicUsize::new(0));
        let stop_b = Arc::new(AtomicBool::new(false));
        let writer_b = tokio::spawn(write_until_failure(
            format!("http://{}", b.api_addr()),
            trial * 2 + 1,
            body.clone(),
            on_b.clone(),
            stop_b.clone(),
        ));
        let wanted = 3 + trial % 5;
        eventually(
            "writes are acknowledged on a",
            secs(20),
            async || match on_a.load(Ordering::Relaxed) {
                n if n >= wanted => Ok(()),
                n => Err(format!("{n} acknowledged")),
            },
        )
        .await;
        a.kill9();
        let at_kill = on_b.load(Ordering::Relaxed);
        let from_a = writer_a.await.unwrap();
        eventually(
            "b keeps writing after a died",
            secs(20),
            async || match on_b.load(Ordering::Relaxed) {
                n if n >= at_kill + 3 => Ok(()),
                n => Err(format!("{n} acknowledged, {at_kill} at the kill")),
            },
        )
        .await;
        a.start().await;
        stop_b.store(true, Ordering::Relaxed);
        let from_b = writer_b.await.unwrap();
        for versions in [&from_a, &from_b] {
            assert!(
                versions.windows(2).all(|w| w[0].1 < w[1].1),
                "versions go up on one node: {versions:?}"
            );
        }
        acknowledged.extend(from_a);
        acknowledged.extend(from_b);
    }

    // Every acknowledged write is in the config, on both nodes, with no
    // version given twice; both replicas reach the last version.
    let mut versions: Vec<u64> = acknowledged.iter().map(|(_, v)| *v).collect();
    versions.sort_unstable();
    let before = versions.len();
    versions.dedup();
    assert_eq!(versions.len(), before, "a version was acknowledged twice");
    // A node sees the other's writes through its watch, a moment later.
    let last = b.version().await;
    eventually("node a has caught up with b", secs(10), async || {
        match a.version().await {
            v if v == last => Ok(()),
            v => Err(format!("a is at {v}, b at {last}")),
        }
    })
    .await;
    for node in [&a, &b] {
        let config = node.config().await;
        let names: std::collections::BTreeSet<&str> = config["clusters"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|c| c["name"].as_str())
            .collect();
        for (name, version) in &acknowledged {
            assert!(
                names.contains(name.as_str()),
                "{name} (acknowledged as version {version}) is missing"
            );
        }
    }
    for r in [&r1, &r2] {
        wait_running(r, last).await;
    }
}

#[tokio::test]
async fn a_node_without_etcd_does_not_start_and_says_why() {
    let dir = TestDir::new("etcd-none");
    // A port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let args: Vec<String> = [
        "--api-listen",
        "127.0.0.1:0",
        "--grpc-listen",
        "127.0.0.1:0",
        "--state-file",
        &dir.join("state.json").display().to_string(),
        "--store",
        &format!("etcd://{closed}"),
        "--etcd-timeout",
        "500ms",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    let mut process = switchyard_integration_tests::process::ChildProcess::start(
        "control plane",
        switchyard_integration_tests::process::binary("sy-control-plane"),
        &args,
        &[],
    );
    let status = eventually("the node exits", secs(30), async || {
        process.exit_status().ok_or("still running")
    })
    .await;
    assert!(!status.success(), "{status}");
    let log = process.log().lines().join("\n");
    assert!(
        log.contains(&format!("etcd at {closed}")) && log.contains("unreachable"),
        "{log}"
    );
    assert!(
        !dir.join("state.json").exists(),
        "no state file on the side"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cut_off_from_etcd_refuses_writes_and_its_replicas_move() {
    let dir = TestDir::new("etcd-partition");
    let etcd = Etcd::start(dir.path(), 1).await;
    let mut relay = Cuttable::start(&etcd).await;
    let own = dir.join("a");
    std::fs::create_dir_all(&own).unwrap();
    let a = ControlPlane::spawn(
        &own,
        vec![
            "--store".to_owned(),
            relay.store_url(),
            "--etcd-timeout".to_owned(),
            "1s".to_owned(),
        ],
    )
    .await;
    let b = node(&dir, "b", &etcd).await;
    let backend = spawn_backend("one").await;
    let r1 = replica(&dir, "r1", &[&a, &b]).await;
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
    wait_running(&r1, version).await;
    let path = format!("/api/v1/clusters/web/members/{}", member_id(&b).await);

    // Node a loses etcd; b and the replica do not.
    relay.cut();
    eventually(
        "a write on the cut-off node answers 503",
        secs(20),
        async || {
            let response = a
                .call(Method::PATCH, &path, Some(&json!({ "weight": 2 })))
                .await;
            match response.status {
                StatusCode::SERVICE_UNAVAILABLE if response.error_message().contains("etcd") => {
                    Ok(())
                }
                _ => Err(format!("{response:?}")),
            }
        },
    )
    .await;
    let read = a.get("/api/v1/config").await;
    assert_eq!(read.status, StatusCode::OK);
    assert!(read.header("x-switchyard-stale").is_some(), "{read:?}");
    assert_eq!(
        b.version().await,
        version,
        "the refused write changed nothing"
    );

    // The replica leaves a for b (a ends its stream once cut off), so a write
    // on b reaches it; it serves all along.
    let on_b = b
        .write(Method::PATCH, &path, Some(&json!({ "weight": 3 })))
        .await;
    assert_eq!(on_b, version + 1);
    wait_running(&r1, on_b).await;
    assert_eq!(r1.get("/").await.body, "one");
    assert!(
        a.log().count_matching("cannot reach its store") > 0,
        "a sent its replica away"
    );

    // Healed: a takes writes again, from b's version on.
    relay.heal().await;
    let again = eventually("a takes writes again", secs(30), async || {
        let response = a
            .call(Method::PATCH, &path, Some(&json!({ "weight": 4 })))
            .await;
        if response.status == StatusCode::OK {
            Ok(version_of(&response))
        } else {
            Err(format!("{response:?}"))
        }
    })
    .await;
    assert_eq!(again, on_b + 1);
    wait_running(&r1, again).await;
}
