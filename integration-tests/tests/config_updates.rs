//! Config changes reaching the replicas: `?wait` writes, swaps under load,
//! and a replica that refuses (NACKs) a snapshot.

use std::collections::BTreeSet;
use std::time::Duration;

use http::{Method, StatusCode};
use serde_json::{Value, json};
use switchyard_integration_tests::{
    Fleet, Load, LoadOptions, bodies, consistently, eventually, secs, spawn_backend,
};

/// A member added with `?wait` is picked by every replica right after the
/// answer; removed with `?wait`, it is never picked again; the control plane
/// shows both replicas synced at the version each write answered.
#[tokio::test]
async fn waited_writes_are_live_on_every_replica_when_answered() {
    let fleet = Fleet::start("wait-writes", 2).await;
    let cp = &fleet.cp;
    let (a, b, c) = (
        spawn_backend("a").await,
        spawn_backend("b").await,
        spawn_backend("c").await,
    );
    cp.write(
        Method::PUT,
        "/api/v1/clusters/mycluster",
        Some(&bodies::cluster(&[(&a, 1), (&b, 1)])),
    )
    .await;
    let first = cp
        .write(
            Method::PUT,
            "/api/v1/routes/web?wait=5s",
            Some(&bodies::route("/", "mycluster")),
        )
        .await;
    fleet.wait_synced(first).await;
    for replica in &fleet.replicas {
        replica.get("/").await;
    }

    let added = cp
        .post(
            "/api/v1/clusters/mycluster/members?wait=5s",
            &bodies::member(&c, 1),
        )
        .await;
    assert_eq!(added.status, StatusCode::CREATED, "{added:?}");
    let added = added.json();
    assert_eq!(added["id"], c.authority());
    let version = added["version"]
        .as_u64()
        .expect("a write answers its version");
    assert!(version > first, "version {version} after {first}");
    for replica in &fleet.replicas {
        let mut cycle = Vec::new();
        for _ in 0..3 {
            cycle.push(replica.get("/").await.body);
        }
        assert!(
            cycle.iter().any(|body| body == "c"),
            "{} did not pick the new member within one cycle: {cycle:?}",
            replica.node_id()
        );
    }
    let synced = cp.check_synced(&fleet.replica_refs(), version).await;
    assert_eq!(synced, Ok(()), "right after the ?wait answer");

    let removed = cp
        .delete(&format!(
            "/api/v1/clusters/mycluster/members/{}?wait=5s",
            c.authority()
        ))
        .await;
    assert_eq!(removed.status, StatusCode::OK, "{removed:?}");
    let version = removed.json()["version"]
        .as_u64()
        .expect("a write answers its version");
    let c_requests = c.request_count();
    for replica in &fleet.replicas {
        let mut seen = BTreeSet::new();
        for _ in 0..40 {
            let response = replica.get("/").await;
            assert_eq!(response.status, StatusCode::OK, "{response:?}");
            seen.insert(response.body);
        }
        let expected: BTreeSet<String> = ["a".to_owned(), "b".to_owned()].into();
        assert_eq!(seen, expected, "{} after the removal", replica.node_id());
    }
    assert_eq!(
        c.request_count(),
        c_requests,
        "the removed member got requests"
    );
    let synced = cp.check_synced(&fleet.replica_refs(), version).await;
    assert_eq!(synced, Ok(()), "right after the ?wait answer");
}

/// Hot swap under load: hundreds of config changes while clients send
/// requests through both replicas, and not one request fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundreds_of_changes_under_load_fail_no_request() {
    const CHANGES: usize = 208;
    let fleet = Fleet::start("hot-swap", 2).await;
    let cp = &fleet.cp;
    let (a, b, c) = (
        spawn_backend("a").await,
        spawn_backend("b").await,
        spawn_backend("c").await,
    );
    cp.write(
        Method::PUT,
        "/api/v1/clusters/mycluster",
        Some(&bodies::cluster(&[(&a, 1), (&b, 1)])),
    )
    .await;
    let mut version = cp
        .write(
            Method::PUT,
            "/api/v1/routes/web?wait=5s",
            Some(&bodies::route("/", "mycluster")),
        )
        .await;
    fleet.wait_synced(version).await;

    let load = Load::start(LoadOptions {
        urls: fleet.replicas.iter().map(|r| r.url("/")).collect(),
        expected_bodies: vec!["a".into(), "b".into(), "c".into()],
        concurrency: 6,
        max_requests: 300_000,
        max_duration: Duration::from_secs(180),
    });
    eventually("the load is flowing", secs(20), async || {
        match (load.ok_count(), load.failed_count()) {
            (ok, 0) if ok >= 50 => Ok(()),
            seen => Err(format!("(ok, failed) = {seen:?}")),
        }
    })
    .await;

    let ok_before = load.ok_count();
    let c_member = format!(
        "/api/v1/clusters/mycluster/members/{}?wait=5s",
        c.authority()
    );
    let a_member = format!(
        "/api/v1/clusters/mycluster/members/{}?wait=5s",
        a.authority()
    );
    for i in 0..CHANGES {
        let (method, path, body) = match i % 4 {
            0 => (
                Method::POST,
                "/api/v1/clusters/mycluster/members?wait=5s",
                Some(bodies::member(&c, 1 + (i % 3) as u32)),
            ),
            1 => (
                Method::PATCH,
                a_member.as_str(),
                Some(json!({ "weight": 1 + (i % 5) })),
            ),
            2 => (
                Method::PATCH,
                c_member.as_str(),
                Some(json!({ "state": "draining" })),
            ),
            _ => (Method::DELETE, c_member.as_str(), None),
        };
        let next = cp.write(method, path, body.as_ref()).await;
        assert!(next > version, "change {i}: version {next} after {version}");
        version = next;
    }
    let ok_during = load.ok_count() - ok_before;
    let report = load.stop().await;

    assert_eq!(
        report.failed, 0,
        "{} of {} requests failed during {CHANGES} changes; first ones: {:#?}",
        report.failed, report.sent, report.failures
    );
    assert!(
        ok_during >= 200,
        "only {ok_during} requests ran during the changes"
    );
    assert!(
        c.request_count() > 0,
        "the member added again and again never got a request"
    );
    fleet.wait_synced(version).await;
}

/// A replica that cannot apply a snapshot NACKs it and keeps serving the old
/// one; the control plane shows it `nacked` with the error, does not send that
/// version again, and both replicas are synced after the next good write.
#[tokio::test]
async fn a_nacked_snapshot_keeps_the_old_table_and_is_not_resent() {
    // dp-2 applies snapshots of one member at most: the second member is refused.
    const REFUSAL: &str = "--max-members 1";
    let mut fleet = Fleet::start_with("nack", 2, |options| {
        if options.node_id == "dp-2" {
            options.env("SWITCHYARD_MAX_MEMBERS", "1")
        } else {
            options
        }
    })
    .await;
    let cp = &fleet.cp;
    let (healthy, nacking) = (&fleet.replicas[0], &fleet.replicas[1]);
    let (good, bad) = (spawn_backend("good").await, spawn_backend("bad").await);
    let good_config = json!({
        "clusters": [ { "name": "good", "members": [bodies::member(&good, 1)] } ],
        "routes": [ { "name": "app", "path_prefix": "/app/", "cluster": "good" } ],
    });
    let old = cp
        .write(Method::PUT, "/api/v1/config?wait=5s", Some(&good_config))
        .await;
    fleet.wait_synced(old).await;

    let mut poisoned = good_config.clone();
    poisoned["clusters"]
        .as_array_mut()
        .expect("clusters is an array")
        .push(json!({ "name": "poison", "members": [bodies::member(&bad, 1)] }));
    poisoned["routes"]
        .as_array_mut()
        .expect("routes is an array")
        .push(json!({ "name": "p", "path_prefix": "/p/", "cluster": "poison" }));
    let answer = cp.put("/api/v1/config?wait=5s", &poisoned).await;
    assert_eq!(
        answer.status,
        StatusCode::BAD_GATEWAY,
        "a ?wait write that a replica NACKed: {answer:?}"
    );
    assert!(!answer.error_message().is_empty(), "{answer:?}");
    let nacked = cp.version().await;
    assert!(
        nacked > old,
        "the write is stored even though a replica refused it"
    );

    let entry = eventually("dp-2 is shown nacked", secs(10), async || {
        let entry = cp.dataplane("dp-2").await.ok_or("dp-2 is not listed")?;
        if entry["state"] == "nacked" && entry["nacked_version"] == nacked {
            Ok(entry)
        } else {
            Err(format!("dp-2 is {entry}"))
        }
    })
    .await;
    assert_eq!(entry["version"], old, "dp-2 runs the old version: {entry}");
    let error = entry["last_error"].as_str().unwrap_or_default();
    assert!(
        error.contains("has 2 members") && error.contains(REFUSAL),
        "last_error: {entry}"
    );
    assert_eq!(cp.check_synced(&[healthy], nacked).await, Ok(()));

    // The refusing replica serves the old table, the other the new one.
    assert_eq!(nacking.running_version().await, old);
    let response = nacking.get("/app/x").await;
    assert_eq!(
        (response.status, response.body.as_str()),
        (StatusCode::OK, "good")
    );
    let response = nacking.get("/p/x").await;
    assert_eq!(
        response.status,
        StatusCode::NOT_FOUND,
        "the old table has no /p/ route"
    );
    let response = healthy.get("/p/x").await;
    assert_eq!(
        (response.status, response.body.as_str()),
        (StatusCode::OK, "bad")
    );

    // Not sent again: the replica stays nacked at that version and logs no new refusal.
    let refusals = nacking.log().count_matching(REFUSAL);
    assert!(
        refusals >= 1,
        "dp-2 logged no refusal naming {REFUSAL}: a resend could not be seen"
    );
    consistently(
        "dp-2 is not sent the refused version again",
        secs(2),
        async || {
            let entry = cp.dataplane("dp-2").await.ok_or("dp-2 is not listed")?;
            let again = nacking.log().count_matching(REFUSAL);
            if entry["state"] != "nacked" || entry["nacked_version"] != nacked || again != refusals
            {
                return Err(format!(
                    "dp-2 is {entry}; log lines naming {REFUSAL}: {refusals} then {again}"
                ));
            }
            Ok(())
        },
    )
    .await;

    // Nor after a restart of the control plane: the replica tells it in its hello.
    fleet.cp.restart().await;
    let cp = &fleet.cp;
    let (healthy, nacking) = (&fleet.replicas[0], &fleet.replicas[1]);
    cp.wait_synced(&[healthy], nacked).await;
    let entry = eventually(
        "dp-2 reconnects and is shown nacked again",
        secs(10),
        async || {
            let entry = cp.dataplane("dp-2").await.ok_or("dp-2 is not listed")?;
            if entry["connected"] == true
                && entry["state"] == "nacked"
                && entry["nacked_version"] == nacked
            {
                Ok(entry)
            } else {
                Err(format!("dp-2 is {entry}"))
            }
        },
    )
    .await;
    assert!(
        entry["last_error"]
            .as_str()
            .unwrap_or_default()
            .contains(REFUSAL),
        "the refusal's error is known again: {entry}"
    );
    assert_eq!(
        nacking.log().count_matching(REFUSAL),
        refusals,
        "the restarted control plane sent the refused version again"
    );

    let mut fixed = good_config.clone();
    fixed["routes"]
        .as_array_mut()
        .expect("routes is an array")
        .push(json!({ "name": "q", "path_prefix": "/q/", "cluster": "good" }));
    let version = cp
        .write(Method::PUT, "/api/v1/config?wait=5s", Some(&fixed))
        .await;
    assert_eq!(
        cp.check_synced(&fleet.replica_refs(), version).await,
        Ok(())
    );
    let response = nacking.get("/q/x").await;
    assert_eq!(
        (response.status, response.body.as_str()),
        (StatusCode::OK, "good")
    );
    let view: Vec<Value> = cp.dataplanes().await;
    assert!(
        view.iter()
            .all(|r| r["state"] == "synced" && r["version"] == version),
        "{view:?}"
    );
}

/// A burst of writes is pushed as one snapshot per replica, not one per
/// write: with a quiet window longer than the gaps between the writes, each
/// replica is sent the burst's last version once, and ends synced at it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_writes_is_coalesced_into_one_push() {
    const WRITES: usize = 40;
    let window = ["--push-quiet", "300ms", "--push-max-delay", "20s"];
    let cp_args = window.iter().map(|s| (*s).to_owned()).collect();
    let fleet = Fleet::start_custom("burst", 2, cp_args, |options| options).await;
    let cp = &fleet.cp;
    let backend = spawn_backend("burst").await;
    let first = cp
        .write(
            Method::PUT,
            "/api/v1/clusters/web?wait=5s",
            Some(&bodies::cluster(&[(&backend, 1)])),
        )
        .await;
    fleet.wait_synced(first).await;
    let before = cp.metric("switchyard_snapshot_pushes_total").await;

    let writes = (0..WRITES).map(|n| async move {
        let body = json!({ "path_prefix": format!("/r{n}/"), "cluster": "web" });
        cp.put(&format!("/api/v1/routes/r{n}"), &body).await
    });
    let answers = futures_util::future::join_all(writes).await;
    for answer in &answers {
        assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
    }
    let last = cp.version().await;
    assert_eq!(last, first + WRITES as u64, "every write made a version");
    fleet.wait_synced(last).await;
    for replica in &fleet.replicas {
        for n in [0, WRITES - 1] {
            let response = replica.get(&format!("/r{n}/x")).await;
            assert_eq!(
                (response.status, response.body.as_str()),
                (StatusCode::OK, "burst")
            );
        }
    }
    let pushes = cp.metric("switchyard_snapshot_pushes_total").await - before;
    assert_eq!(
        pushes,
        fleet.replicas.len() as u64,
        "{WRITES} writes: one push per replica, not one per write"
    );
}
