//! The replica's Prometheus metrics count what clients saw.

use http::{Method, StatusCode};
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
