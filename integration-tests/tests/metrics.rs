//! The replica's Prometheus metrics count what clients saw.

use std::time::Duration;

use http::{Method, StatusCode};
use serde_json::json;
use switchyard_integration_tests::data_plane::DataPlane;
use switchyard_integration_tests::eventually::eventually;
use switchyard_integration_tests::scripted::{Step, spawn_scripted};
use switchyard_integration_tests::{Fleet, bodies, client, spawn_backend};

/// The value of one sample line (`name{labels} value`) of a Prometheus text page.
fn sample(page: &str, series: &str) -> u64 {
    page.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no sample {series} in:\n{page}"))
}

#[tokio::test]
async fn replica_metrics_count_responses_errors_and_the_version() {
    let fleet = Fleet::start("metrics", 1).await;
    let (cp, replica) = (&fleet.cp, &fleet.replicas[0]);
    let backend = spawn_backend("Hello world!").await;
    cp.write(
        Method::PUT,
        "/api/v1/clusters/web",
        Some(&bodies::cluster(&[(&backend, 1)])),
    )
    .await;
    let version = cp
        .write(
            Method::PUT,
            "/api/v1/routes/web?wait=5s",
            Some(&bodies::route("/app/", "web")),
        )
        .await;
    for _ in 0..5 {
        assert_eq!(replica.get("/app/x").await.status, StatusCode::OK);
    }
    for _ in 0..2 {
        assert_eq!(
            replica.get("/elsewhere").await.status,
            StatusCode::NOT_FOUND
        );
    }

    let page = client::get(&replica.admin_url("/metrics")).await;
    assert_eq!(page.status, StatusCode::OK);
    let page = page.body;
    assert_eq!(
        sample(&page, "switchyard_responses_total{class=\"2xx\"}"),
        5
    );
    assert_eq!(
        sample(&page, "switchyard_responses_total{class=\"4xx\"}"),
        2
    );
    assert_eq!(
        sample(&page, "switchyard_proxy_errors_total{reason=\"no_route\"}"),
        2
    );
    assert_eq!(sample(&page, "switchyard_config_version"), version);
    assert_eq!(sample(&page, "switchyard_ready"), 1);
    assert_eq!(sample(&page, "switchyard_members"), 1);
    assert!(sample(&page, "switchyard_snapshots_applied_total") >= 1);
}

/// The sample of `series` once it reaches `want` (the duration and the route's
/// counts are taken when the response's last byte went out, a moment after
/// the client read it).
async fn sample_reaches(replica: &DataPlane, series: &str, want: u64) -> String {
    eventually(
        &format!("{series} reaches {want}"),
        Duration::from_secs(5),
        async || {
            let page = client::get(&replica.admin_url("/metrics")).await.body;
            match page
                .lines()
                .find_map(|line| line.strip_prefix(series)?.trim().parse::<u64>().ok())
            {
                Some(value) if value == want => Ok(page),
                seen => Err(format!("{seen:?}")),
            }
        },
    )
    .await
}

#[tokio::test]
async fn replica_metrics_count_per_route_and_per_member() {
    let fleet = Fleet::start("metrics-slots", 1).await;
    let (cp, replica) = (&fleet.cp, &fleet.replicas[0]);
    let good = spawn_backend("Hello world!").await;
    let failing = spawn_scripted(|_| {
        Step::Answer("HTTP/1.1 503 Service Unavailable\r\ncontent-length: 4\r\n\r\nbusy".into())
    })
    .await;
    let closed_port = switchyard_integration_tests::closed_port();
    let cluster =
        |members: serde_json::Value| json!({ "members": members, "retry": { "max_retries": 0 } });
    cp.write(
        Method::PUT,
        "/api/v1/clusters/web",
        Some(&cluster(json!([{ "id": "good", "url": good.url() }]))),
    )
    .await;
    cp.write(
        Method::PUT,
        "/api/v1/clusters/busy",
        Some(&cluster(json!([{ "id": "busy", "url": failing.url() }]))),
    )
    .await;
    cp.write(
        Method::PUT,
        "/api/v1/clusters/dead",
        Some(&cluster(
            json!([{ "id": "dead", "url": format!("http://{closed_port}") }]),
        )),
    )
    .await;
    cp.write(
        Method::PUT,
        "/api/v1/routes/app",
        Some(&bodies::route("/app/", "web")),
    )
    .await;
    cp.write(
        Method::PUT,
        "/api/v1/routes/other",
        Some(&bodies::route("/other/", "web")),
    )
    .await;
    cp.write(
        Method::PUT,
        "/api/v1/routes/busy",
        Some(&bodies::route("/busy/", "busy")),
    )
    .await;
    cp.write(
        Method::PUT,
        "/api/v1/routes/dead?wait=5s",
        Some(&bodies::route("/dead/", "dead")),
    )
    .await;
    for _ in 0..5 {
        assert_eq!(replica.get("/app/x").await.status, StatusCode::OK);
    }
    for _ in 0..3 {
        assert_eq!(replica.get("/other/y").await.status, StatusCode::OK);
    }
    for _ in 0..2 {
        assert_eq!(
            replica.get("/busy/z").await.status,
            StatusCode::SERVICE_UNAVAILABLE
        );
    }
    assert_eq!(
        replica.get("/dead/").await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(good.request_count(), 8, "what the member saw");
    assert_eq!(failing.count("GET"), 2, "what the failing member saw");

    let page = sample_reaches(
        replica,
        "switchyard_request_duration_seconds_count{route=\"app\"}",
        5,
    )
    .await;
    let page = if sample(
        &page,
        "switchyard_request_duration_seconds_count{route=\"dead\"}",
    ) == 1
    {
        page
    } else {
        sample_reaches(
            replica,
            "switchyard_request_duration_seconds_count{route=\"dead\"}",
            1,
        )
        .await
    };
    let page = if sample(
        &page,
        "switchyard_requests_total{route=\"other\",class=\"2xx\"}",
    ) == 3
    {
        page
    } else {
        sample_reaches(
            replica,
            "switchyard_requests_total{route=\"other\",class=\"2xx\"}",
            3,
        )
        .await
    };
    assert_eq!(
        sample(
            &page,
            "switchyard_requests_total{route=\"app\",class=\"2xx\"}"
        ),
        5
    );
    assert_eq!(
        sample(
            &page,
            "switchyard_requests_total{route=\"app\",class=\"5xx\"}"
        ),
        0
    );
    assert_eq!(
        sample(
            &page,
            "switchyard_request_duration_seconds_bucket{route=\"app\",le=\"+Inf\"}"
        ),
        5
    );
    assert_eq!(
        sample(
            &page,
            "switchyard_upstream_responses_total{cluster=\"web\",member=\"good\",class=\"2xx\"}"
        ),
        8
    );
    assert_eq!(
        sample(
            &page,
            "switchyard_upstream_responses_total{cluster=\"busy\",member=\"busy\",class=\"5xx\"}"
        ),
        2
    );
    assert_eq!(
        sample(
            &page,
            "switchyard_upstream_failures_total{cluster=\"dead\",member=\"dead\",reason=\"connect\"}"
        ),
        1
    );
    assert_eq!(
        sample(
            &page,
            "switchyard_upstream_failures_total{cluster=\"web\",member=\"good\",reason=\"connect\"}"
        ),
        0
    );
    assert!(
        sample(&page, "switchyard_upstream_connections") >= 1,
        "{page}"
    );
    assert_eq!(sample(&page, "switchyard_control_plane_connected"), 1);
    assert_eq!(sample(&page, "switchyard_control_plane_connects_total"), 1);
    assert!(sample(&page, "switchyard_snapshot_apply_duration_seconds_count") >= 1);
    assert!(
        page.contains("# TYPE switchyard_request_duration_seconds histogram"),
        "{page}"
    );

    // The counts the health report carries to the control plane, as the replica has them.
    let members = client::get(&replica.admin_url("/members")).await.json();
    let counts = |id: &str| {
        let member = members
            .as_array()
            .and_then(|all| all.iter().find(|m| m["member_id"] == id))
            .unwrap_or_else(|| panic!("no member {id} in {members}"));
        (member["requests"].as_u64(), member["errors"].as_u64())
    };
    assert_eq!(counts("good"), (Some(8), Some(0)));
    assert_eq!(counts("busy"), (Some(2), Some(2)), "a 5xx is an error");
    assert_eq!(
        counts("dead"),
        (Some(0), Some(1)),
        "a failed connect is an error"
    );
}

#[tokio::test]
async fn debug_spans_name_the_connection_route_cluster_and_member() {
    let fleet = Fleet::start_with("metrics-spans", 1, |options| {
        options.env("RUST_LOG", "info,switchyard_data_plane=debug")
    })
    .await;
    let (cp, replica) = (&fleet.cp, &fleet.replicas[0]);
    let closed_port = switchyard_integration_tests::closed_port();
    cp.write(
        Method::PUT,
        "/api/v1/clusters/dead",
        Some(&json!({ "members": [{ "id": "gone", "url": format!("http://{closed_port}") }] })),
    )
    .await;
    cp.write(
        Method::PUT,
        "/api/v1/routes/d?wait=5s",
        Some(&bodies::route("/d/", "dead")),
    )
    .await;
    assert_eq!(
        replica.get("/d/x").await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    let line = eventually(
        "the member's failure is logged in its request's span",
        Duration::from_secs(5),
        async || {
            replica
                .log()
                .lines()
                .into_iter()
                .find(|line| line.contains("Member could not be reached"))
                .ok_or("not logged yet")
        },
    )
    .await;
    for field in [
        "connection{client.addr=127.0.0.1:",
        "request{http.method=GET http.target=/d/x",
        "route.name=\"d\"",
        "cluster.name=\"dead\"",
        "member.id=\"gone\"",
    ] {
        assert!(line.contains(field), "{field} not in {line}");
    }
}

/// A member's `(requests_per_second, error_rate)` as the control plane shows it
/// for `node_id`, if that replica reported both.
fn member_rates(replicas: &[serde_json::Value], node_id: &str, member: &str) -> Option<(f64, f64)> {
    let replica = replicas.iter().find(|r| r["node_id"] == node_id)?;
    let seen = replica["members"]
        .as_array()?
        .iter()
        .find(|m| m["member_id"] == member)?;
    Some((
        seen["requests_per_second"].as_f64()?,
        seen["error_rate"].as_f64()?,
    ))
}

#[tokio::test]
async fn member_rates_reach_the_control_plane_from_the_replicas_counts() {
    let fleet = Fleet::start("metrics-rates", 1).await;
    let (cp, replica) = (&fleet.cp, &fleet.replicas[0]);
    let good = spawn_backend("Hello world!").await;
    let failing = spawn_scripted(|_| {
        Step::Answer("HTTP/1.1 500 Internal Server Error\r\ncontent-length: 4\r\n\r\noops".into())
    })
    .await;
    let cluster =
        |members: serde_json::Value| json!({ "members": members, "retry": { "max_retries": 0 } });
    cp.write(
        Method::PUT,
        "/api/v1/clusters/web",
        Some(&cluster(json!([{ "id": "good", "url": good.url() }]))),
    )
    .await;
    cp.write(
        Method::PUT,
        "/api/v1/clusters/broken",
        Some(&cluster(json!([{ "id": "broken", "url": failing.url() }]))),
    )
    .await;
    cp.write(
        Method::PUT,
        "/api/v1/routes/app",
        Some(&bodies::route("/app/", "web")),
    )
    .await;
    cp.write(
        Method::PUT,
        "/api/v1/routes/broken?wait=5s",
        Some(&bodies::route("/broken/", "broken")),
    )
    .await;

    // Traffic goes on while the replica reports its counts (every 2 s while they
    // change); the control plane derives a rate from two reports in a row.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut sent = 0u64;
    let (good_rates, broken_rates) = loop {
        for _ in 0..10 {
            assert_eq!(replica.get("/app/x").await.status, StatusCode::OK);
            assert_eq!(
                replica.get("/broken/x").await.status,
                StatusCode::INTERNAL_SERVER_ERROR
            );
            sent += 1;
        }
        let replicas = cp.dataplanes().await;
        let good_rates = member_rates(&replicas, replica.node_id(), "good");
        let broken_rates = member_rates(&replicas, replica.node_id(), "broken");
        if let (Some(g), Some(b)) = (good_rates, broken_rates)
            && g.0 > 0.0
            && b.0 > 0.0
        {
            break (g, b);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no rates after {sent} requests each: {replicas:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(good_rates.1, 0.0, "the good member answered every request");
    assert_eq!(
        broken_rates.1, 1.0,
        "every answer of the broken member was a 500"
    );
    // The requests went one at a time: no rate can be above what was sent.
    assert!(good_rates.0 <= sent as f64, "{good_rates:?} after {sent}");
}
