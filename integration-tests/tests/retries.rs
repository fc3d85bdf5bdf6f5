//! Which failed attempts go to another member, and which never do: the retry
//! rule over real sockets, seen from the client and from the members.
//! A member must never see a request twice where the client sent it once,
//! unless the request is idempotent and the policy allows it.

use std::time::Duration;

use http::{Method, StatusCode};
use serde_json::{Value, json};
use switchyard_integration_tests::scripted::{Step, ok, spawn_scripted};
use switchyard_integration_tests::{
    Client, DataPlane, Fleet, Load, LoadOptions, Misbehaviour, eventually, spawn_echo_backend,
    spawn_raw_backend,
};

/// One replica with one worker (so that one client connection means one
/// member pool), route `/` to cluster `c`.
async fn fleet_for(label: &str, cluster: &Value) -> Fleet {
    Fleet::serving_with(label, cluster, |options| {
        options.env("SWITCHYARD_WORKERS", "1")
    })
    .await
}

async fn metric(replica: &DataPlane, line: &str) -> u64 {
    let text = Client::without_pool()
        .get(&replica.admin_url("/metrics"))
        .await
        .body;
    text.lines()
        .find_map(|l| l.strip_prefix(line)?.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn a_request_that_is_not_idempotent_is_never_sent_twice_on_a_dying_kept_alive_connection() {
    // The first request of each connection is answered and kept alive; the
    // second is read and then the connection dies without an answer.
    let member = spawn_scripted(|seen| match seen.index {
        0 => ok("first"),
        _ => Step::Close,
    })
    .await;
    let cluster = json!({ "members": [ { "url": member.url() } ] });
    let fleet = fleet_for("retry-post-once", &cluster).await;
    let replica = &fleet.replicas[0];
    let client = Client::new();

    for method in [Method::POST, Method::PATCH] {
        let warm = client.get(&replica.url("/warm")).await;
        assert_eq!(warm.status, StatusCode::OK, "{warm:?}");
        let before = member.count(method.as_str());
        let response = client
            .send_bytes(
                method.clone(),
                &replica.url("/submit"),
                &[("content-length", "0")],
                None,
            )
            .await
            .expect("an answer");
        assert_eq!(
            response.status,
            StatusCode::BAD_GATEWAY,
            "{method}: {response:?}"
        );
        assert_eq!(
            member.count(method.as_str()) - before,
            1,
            "{method} reached the member once: {:?}",
            member.seen()
        );
    }
}

#[tokio::test]
async fn an_idempotent_request_on_a_dying_kept_alive_connection_goes_again_on_a_fresh_one() {
    let member = spawn_scripted(|seen| match seen.index {
        0 => ok("fresh"),
        _ => Step::Close,
    })
    .await;
    let cluster = json!({ "members": [ { "url": member.url() } ] });
    let fleet = fleet_for("retry-get-fresh", &cluster).await;
    let replica = &fleet.replicas[0];
    let client = Client::new();

    assert_eq!(client.get(&replica.url("/one")).await.body, "fresh");
    let second = client.get(&replica.url("/two")).await;
    assert_eq!(second.status, StatusCode::OK, "{second:?}");
    assert_eq!(second.body, "fresh");
    let seen = member.seen();
    let twos: Vec<_> = seen.iter().filter(|s| s.path == "/two").collect();
    assert_eq!(
        twos.len(),
        2,
        "once on the dead connection, once on a new one: {seen:?}"
    );
    assert_ne!(twos[0].conn, twos[1].conn);
    assert_eq!(twos[1].index, 0, "the retry went on a fresh connection");
}

#[tokio::test]
async fn a_get_whose_member_breaks_the_exchange_goes_to_another_member_and_a_post_does_not() {
    let broken = spawn_raw_backend(Misbehaviour::CloseWithoutAnswer).await;
    let good = spawn_echo_backend("good").await;
    let cluster = json!({ "members": [ { "url": broken.url() }, { "url": good.url() } ] });
    let fleet = fleet_for("retry-other-member", &cluster).await;
    let replica = &fleet.replicas[0];
    let client = Client::new();

    for n in 0..6 {
        let response = client.get(&replica.url(&format!("/get/{n}"))).await;
        assert_eq!(response.status, StatusCode::OK, "{response:?}");
        assert_eq!(response.header("x-backend"), Some("good"));
    }
    let good_gets = good.request_count();
    assert_eq!(
        good_gets, 6,
        "every GET was answered by the good member once"
    );

    let mut bad_gateways = 0;
    let broken_before = broken.heads_read();
    for n in 0..4 {
        let response = client
            .raw_json(
                Method::POST,
                &replica.url(&format!("/post/{n}")),
                r#"{"n": 1}"#,
            )
            .await;
        if response.status == StatusCode::BAD_GATEWAY {
            bad_gateways += 1;
        } else {
            assert_eq!(response.status, StatusCode::OK, "{response:?}");
        }
    }
    let broken_posts = broken.heads_read() - broken_before;
    assert!(
        broken_posts > 0,
        "round robin sent POSTs to the broken member too"
    );
    assert_eq!(
        bad_gateways, broken_posts,
        "each POST the broken member read failed, none went again"
    );
    assert_eq!(good.request_count() - good_gets, 4 - broken_posts);
}

#[tokio::test]
async fn statuses_go_to_another_member_only_when_the_policy_names_them() {
    let unavailable = spawn_scripted(|_| {
        Step::Answer("HTTP/1.1 503 Service Unavailable\r\ncontent-length: 4\r\n\r\nbusy".into())
    })
    .await;
    let good = spawn_echo_backend("good").await;
    let members = json!([ { "url": unavailable.url() }, { "url": good.url() } ]);

    let plain = fleet_for("retry-status-default", &json!({ "members": members })).await;
    let client = Client::new();
    let mut statuses = Vec::new();
    for n in 0..4 {
        statuses.push(
            client
                .get(&plain.replicas[0].url(&format!("/d/{n}")))
                .await
                .status,
        );
    }
    assert!(
        statuses.contains(&StatusCode::SERVICE_UNAVAILABLE),
        "by default a 503 is the answer: {statuses:?}"
    );
    drop(plain);

    let cluster = json!({
        "members": members,
        "retry": { "retry_on": ["error", "timeout", "http_503"] },
    });
    let fleet = fleet_for("retry-status-503", &cluster).await;
    let replica = &fleet.replicas[0];
    let seen_before = unavailable.count("GET");
    for n in 0..6 {
        let response = client.get(&replica.url(&format!("/s/{n}"))).await;
        assert_eq!(response.status, StatusCode::OK, "{response:?}");
        assert_eq!(response.header("x-backend"), Some("good"));
    }
    assert!(
        unavailable.count("GET") > seen_before,
        "the 503 member was tried"
    );
    // A POST that got a 503 is not sent again.
    let mut unavailable_posts = 0;
    for n in 0..4 {
        let response = client
            .raw_json(Method::POST, &replica.url(&format!("/p/{n}")), "{}")
            .await;
        if response.status == StatusCode::SERVICE_UNAVAILABLE {
            assert_eq!(response.body, "busy", "the member's own answer");
            unavailable_posts += 1;
        }
    }
    assert_eq!(unavailable_posts, unavailable.count("POST"));
    assert!(unavailable_posts > 0);
    assert!(metric(replica, "switchyard_retries_total{reason=\"status\"}").await >= 3);
}

#[tokio::test]
async fn a_spent_budget_or_max_retries_zero_stops_retries_but_not_connect_failover() {
    let broken = spawn_raw_backend(Misbehaviour::CloseWithoutAnswer).await;
    let good = spawn_echo_backend("good").await;
    let members = json!([ { "url": broken.url() }, { "url": good.url() } ]);
    let cluster = json!({
        "members": members,
        "retry": { "budget_percent": 0, "budget_min_per_second": 0 },
    });
    let fleet = fleet_for("retry-budget", &cluster).await;
    let replica = &fleet.replicas[0];
    let client = Client::new();
    let mut statuses = Vec::new();
    for n in 0..4 {
        statuses.push(client.get(&replica.url(&format!("/b/{n}"))).await.status);
    }
    assert!(statuses.contains(&StatusCode::BAD_GATEWAY), "{statuses:?}");
    assert!(metric(replica, "switchyard_retries_total{reason=\"over_budget\"}").await >= 1);
    drop(fleet);

    // No retries at all, yet a member that refuses connections is still passed over:
    // nothing was written to it.
    let closed_port = switchyard_integration_tests::closed_port();
    let cluster = json!({
        "members": [ { "url": format!("http://{closed_port}") }, { "url": good.url() } ],
        "retry": { "max_retries": 0 },
    });
    let fleet = fleet_for("retry-off", &cluster).await;
    for n in 0..4 {
        let response = client.get(&fleet.replicas[0].url(&format!("/o/{n}"))).await;
        assert_eq!(response.status, StatusCode::OK, "{response:?}");
    }
}

#[tokio::test]
async fn killing_a_member_under_load_costs_idempotent_clients_nothing() {
    let mut doomed = spawn_echo_backend("doomed").await;
    let survivor = spawn_echo_backend("survivor").await;
    let cluster = json!({ "members": [ { "url": doomed.url() }, { "url": survivor.url() } ] });
    let fleet = Fleet::serving("retry-kill", &cluster).await;
    let replica = &fleet.replicas[0];
    let load = Load::start(LoadOptions {
        urls: vec![replica.url("/sleep/x?ms=5")],
        expected_bodies: vec!["doomed".into(), "survivor".into()],
        concurrency: 16,
        max_requests: 4_000,
        max_duration: Duration::from_secs(20),
    });
    eventually(
        "the doomed member served some of the load",
        Duration::from_secs(15),
        async || match doomed.request_count() {
            n if n > 50 => Ok(()),
            n => Err(format!("{n} requests so far")),
        },
    )
    .await;
    doomed.kill();
    let before = survivor.request_count();
    eventually(
        "the survivor took over",
        Duration::from_secs(15),
        async || match survivor.request_count() - before {
            n if n > 200 => Ok(()),
            n => Err(format!("{n} requests since the kill")),
        },
    )
    .await;
    let report = load.stop().await;
    assert_eq!(report.failed, 0, "{:?}", report.failures);
    assert!(report.ok > 0);
}

#[tokio::test]
async fn a_member_that_stalls_in_its_body_is_cut_after_the_idle_timeout() {
    let member = spawn_scripted(|_| {
        Step::AnswerThenHang("HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhello".into())
    })
    .await;
    let cluster = json!({ "members": [ { "url": member.url() } ], "idle_timeout": "300ms" });
    let fleet = fleet_for("idle-body", &cluster).await;
    let replica = &fleet.replicas[0];
    let outcome = Client::without_pool()
        .send(Method::GET, &replica.url("/stall"), &[], None)
        .await;
    let error = outcome.expect_err("the body cannot be complete");
    let text = format!("{error:#}");
    assert!(
        !text.contains("no answer within"),
        "the replica cut the body instead of leaving the client waiting: {text}"
    );
    assert_eq!(
        metric(replica, "switchyard_upstream_idle_timeouts_total").await,
        1
    );
}

#[tokio::test]
async fn a_members_keep_alive_timeout_is_honoured_by_the_pool() {
    // Says it keeps idle connections for 1 s (the pool then keeps them 0.5 s).
    let short = spawn_scripted(|_| {
        Step::Answer(
            "HTTP/1.1 200 OK\r\nkeep-alive: timeout=1\r\ncontent-length: 2\r\n\r\nok".into(),
        )
    })
    .await;
    let plain = spawn_scripted(|_| ok("ok")).await;
    for (label, member, reused) in [
        ("keepalive-short", &short, false),
        ("keepalive-plain", &plain, true),
    ] {
        let cluster = json!({ "members": [ { "url": member.url() } ] });
        let fleet = fleet_for(label, &cluster).await;
        let client = Client::new();
        assert_eq!(client.get(&fleet.replicas[0].url("/a")).await.body, "ok");
        // What is tested is time passing with the connection idle.
        tokio::time::sleep(Duration::from_millis(800)).await;
        assert_eq!(client.get(&fleet.replicas[0].url("/b")).await.body, "ok");
        let seen = member.seen();
        let conns: Vec<_> = seen.iter().map(|s| s.conn).collect();
        assert_eq!(conns[0] == conns[1], reused, "{label}: {seen:?}");
    }
}

#[tokio::test]
async fn an_unresolvable_member_is_reported_as_such() {
    let cluster = json!({ "members": [ { "url": "http://no-such-member.invalid:8080" } ] });
    let fleet = fleet_for("dns-failure", &cluster).await;
    let replica = &fleet.replicas[0];
    let response = replica.get("/").await;
    assert_eq!(
        response.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{response:?}"
    );
    assert!(
        response.body.contains("did not resolve"),
        "{:?}",
        response.body
    );
    assert!(!response.body.contains("refused"), "{:?}", response.body);
    assert_eq!(
        metric(
            replica,
            "switchyard_upstream_connect_failures_total{reason=\"resolve\"}"
        )
        .await,
        1
    );
    let refused = switchyard_integration_tests::closed_port();
    fleet
        .cp
        .write(
            Method::PUT,
            "/api/v1/clusters/c?wait=5s",
            Some(&json!({ "members": [ { "url": format!("http://{refused}") } ] })),
        )
        .await;
    let response = replica.get("/").await;
    assert_eq!(
        response.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{response:?}"
    );
    assert!(response.body.contains("refused"), "{:?}", response.body);
}
