//! Processes dying: a control plane killed with `kill -9` and restarted from
//! its state file, a replica restarted from its cache file, a replica with
//! neither, and a replica given an unreachable control plane first.

use std::collections::BTreeSet;
use std::time::Duration;

use http::{Method, StatusCode};
use serde_json::json;
use switchyard_integration_tests::{
    ControlPlane, DataPlane, DataPlaneOptions, Fleet, Load, LoadOptions, TestDir, bodies,
    consistently, eventually, secs, spawn_backend, spawn_control_plane, spawn_data_plane,
};

/// The bodies a replica answers over `n` requests; panics on a non-200.
async fn answers(replica: &DataPlane, n: usize) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    for _ in 0..n {
        let response = replica.get("/").await;
        assert_eq!(
            response.status,
            StatusCode::OK,
            "{}: {response:?}",
            replica.node_id()
        );
        seen.insert(response.body);
    }
    seen
}

/// The control plane killed with `kill -9`: replicas keep serving; one
/// restarted meanwhile serves from its cache; the control plane restarted on
/// the same ports has the same version, the replicas come back `synced`, and
/// not one request failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_serve_through_a_control_plane_outage() {
    let mut fleet = Fleet::start("cp-outage", 2).await;
    let (a, b, c) = (
        spawn_backend("a").await,
        spawn_backend("b").await,
        spawn_backend("c").await,
    );
    fleet
        .cp
        .write(
            Method::PUT,
            "/api/v1/clusters/mycluster",
            Some(&bodies::cluster(&[(&a, 1), (&b, 1)])),
        )
        .await;
    let version = fleet
        .cp
        .write(
            Method::PUT,
            "/api/v1/routes/web?wait=5s",
            Some(&bodies::route("/", "mycluster")),
        )
        .await;
    fleet.wait_synced(version).await;
    let before = fleet.cp.config().await;

    let load = Load::start(LoadOptions {
        urls: vec![fleet.replicas[0].url("/")],
        expected_bodies: vec!["a".into(), "b".into()],
        concurrency: 2,
        max_requests: 500_000,
        max_duration: Duration::from_secs(240),
    });
    eventually("the load is flowing", secs(20), async || {
        match (load.ok_count(), load.failed_count()) {
            (ok, 0) if ok >= 20 => Ok(()),
            seen => Err(format!("(ok, failed) = {seen:?}")),
        }
    })
    .await;

    fleet.cp.kill9();
    let at_kill = load.ok_count();
    eventually(
        "requests keep succeeding during the outage",
        secs(30),
        async || match (load.ok_count() - at_kill, load.failed_count()) {
            (ok, 0) if ok >= 200 => Ok(()),
            (_, failed) if failed > 0 => panic!("{failed} requests failed during the outage"),
            seen => Err(format!("(ok since the kill, failed) = {seen:?}")),
        },
    )
    .await;

    let restarted = &mut fleet.replicas[1];
    restarted.restart().await;
    restarted.wait_ready().await;
    let running = restarted.running_config().await.expect("/config answers");
    assert_eq!(
        running["version"], version,
        "served from the cache: {running}"
    );
    assert_eq!(
        running["hash"], before["hash"],
        "served from the cache: {running}"
    );
    let expected: BTreeSet<String> = ["a".to_owned(), "b".to_owned()].into();
    assert_eq!(
        answers(restarted, 6).await,
        expected,
        "a replica restarted from its cache"
    );

    fleet.cp.start().await;
    let after = fleet.cp.config().await;
    for field in ["version", "store_id", "hash", "clusters", "routes"] {
        assert_eq!(after[field], before[field], "{field} after the restart");
    }
    fleet.wait_synced(version).await;
    let report = load.stop().await;
    assert_eq!(report.failed, 0, "first failures: {:#?}", report.failures);

    // The streams are really back: a new write reaches both replicas.
    let added = fleet
        .cp
        .post(
            "/api/v1/clusters/mycluster/members?wait=5s",
            &bodies::member(&c, 1),
        )
        .await;
    assert_eq!(added.status, StatusCode::CREATED, "{added:?}");
    let newer = added.json()["version"]
        .as_u64()
        .expect("a write answers its version");
    assert!(newer > version);
    assert_eq!(
        fleet.cp.check_synced(&fleet.replica_refs(), newer).await,
        Ok(())
    );
    for replica in &fleet.replicas {
        let cycle = answers(replica, 3).await;
        assert!(cycle.contains("c"), "{}: {cycle:?}", replica.node_id());
    }
}

/// `kill -9` right after acknowledged writes loses none of them.
#[tokio::test]
async fn acknowledged_writes_survive_kill_9() {
    let dir = TestDir::new("durable-writes");
    let mut cp = spawn_control_plane(dir.path()).await;
    let mut last = cp
        .write(
            Method::PUT,
            "/api/v1/clusters/durable",
            Some(&json!({ "members": [] })),
        )
        .await;
    let members: Vec<(String, u32)> = (0..20_u32)
        .map(|i| (format!("http://127.0.0.1:{}", 21000 + i), 1 + i * 5))
        .collect();
    for (url, weight) in &members {
        let response = cp
            .post(
                "/api/v1/clusters/durable/members",
                &json!({ "url": url, "weight": weight }),
            )
            .await;
        assert_eq!(response.status, StatusCode::CREATED, "{response:?}");
        let version = response.json()["version"].as_u64().expect("a version");
        assert!(version > last, "version {version} after {last}");
        last = version;
    }
    last = cp
        .write(
            Method::PUT,
            "/api/v1/routes/durable",
            Some(&bodies::route("/durable/", "durable")),
        )
        .await;
    cp.kill9();

    cp.start().await;
    let config = cp.config().await;
    assert_eq!(config["version"], last, "{config}");
    let cluster = config["clusters"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["name"] == "durable"))
        .unwrap_or_else(|| panic!("the cluster is gone: {config}"));
    let stored: BTreeSet<(String, u64)> = cluster["members"]
        .as_array()
        .expect("members is an array")
        .iter()
        .map(|m| {
            (
                m["url"].as_str().unwrap_or_default().to_owned(),
                m["weight"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    let written: BTreeSet<(String, u64)> = members
        .iter()
        .map(|(u, w)| (u.clone(), u64::from(*w)))
        .collect();
    assert_eq!(stored, written);
    assert!(
        config["routes"]
            .as_array()
            .is_some_and(|r| r.iter().any(|r| r["name"] == "durable")),
        "the route is gone: {config}"
    );
    let next = cp
        .write(Method::DELETE, "/api/v1/routes/durable", None)
        .await;
    assert!(
        next > last,
        "versions go on after a restart: {next} after {last}"
    );
}

/// With neither a cache nor a control plane a replica is not ready and serves
/// nothing as if it were real; it becomes ready with the first snapshot.
#[tokio::test]
async fn a_replica_is_ready_only_once_it_has_a_snapshot() {
    let dir = TestDir::new("readiness");
    let mut cp = spawn_control_plane(dir.path()).await;
    cp.kill9();
    let replica = spawn_data_plane(&cp, "dp-1", &dir.join("dp-1-cache.json")).await;
    let healthz = switchyard_integration_tests::get(&replica.admin_url("/healthz")).await;
    assert_eq!(healthz.status, StatusCode::OK, "{healthz:?}");
    consistently(
        "not ready without a snapshot",
        secs(1),
        async || match replica.readiness().await {
            StatusCode::SERVICE_UNAVAILABLE => Ok(()),
            other => Err(format!("/readyz answered {other}")),
        },
    )
    .await;
    let response = replica.get("/").await;
    assert_eq!(
        response.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{response:?}"
    );

    cp.start().await;
    let backend = spawn_backend("Hello world!").await;
    cp.write(
        Method::PUT,
        "/api/v1/clusters/mycluster",
        Some(&bodies::cluster(&[(&backend, 1)])),
    )
    .await;
    let version = cp
        .write(
            Method::PUT,
            "/api/v1/routes/web",
            Some(&bodies::route("/", "mycluster")),
        )
        .await;
    cp.wait_synced(&[&replica], version).await;
    assert_eq!(replica.readiness().await, StatusCode::OK);
    let response = replica.get("/").await;
    assert_eq!(
        (response.status, response.body.as_str()),
        (StatusCode::OK, "Hello world!")
    );
}

/// A control plane started with `--config FILE` serves that config.
#[tokio::test]
async fn a_bootstrap_file_is_served() {
    let dir = TestDir::new("bootstrap");
    let backend = spawn_backend("from the file").await;
    let cp = ControlPlane::spawn_with_config(
        dir.path(),
        &json!({
            "clusters": [ { "name": "boot", "policy": "round_robin", "members": [bodies::member(&backend, 1)] } ],
            "routes": [ { "name": "web", "path_prefix": "/", "cluster": "boot" } ],
        }),
    )
    .await;
    let config = cp.config().await;
    assert_eq!(config["clusters"][0]["name"], "boot", "{config}");
    assert_eq!(
        config["clusters"][0]["members"][0]["id"],
        backend.authority(),
        "{config}"
    );
    let version = config["version"].as_u64().expect("a version");
    assert!(version >= 1, "{config}");
    let replica = spawn_data_plane(&cp, "dp-1", &dir.join("dp-1-cache.json")).await;
    cp.wait_synced(&[&replica], version).await;
    let response = replica.get("/").await;
    assert_eq!(
        (response.status, response.body.as_str()),
        (StatusCode::OK, "from the file")
    );
}

/// Given several control-plane addresses, a replica gets past one that
/// refuses connections.
#[tokio::test]
async fn a_replica_tries_each_control_plane_address() {
    let refusing = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        listener
            .local_addr()
            .expect("a bound listener has an address")
    };
    let fleet = Fleet::start_with("many-cps", 1, |mut options: DataPlaneOptions| {
        options
            .control_planes
            .insert(0, format!("http://{refusing}"));
        options
    })
    .await;
    let backend = spawn_backend("Hello world!").await;
    fleet
        .cp
        .write(
            Method::PUT,
            "/api/v1/clusters/mycluster",
            Some(&bodies::cluster(&[(&backend, 1)])),
        )
        .await;
    let version = fleet
        .cp
        .write(
            Method::PUT,
            "/api/v1/routes/web?wait=5s",
            Some(&bodies::route("/", "mycluster")),
        )
        .await;
    fleet.wait_synced(version).await;
    let response = fleet.replicas[0].get("/").await;
    assert_eq!(
        (response.status, response.body.as_str()),
        (StatusCode::OK, "Hello world!")
    );
}
