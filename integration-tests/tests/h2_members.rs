//! Plain HTTP/2 members (a hyper server that speaks HTTP/2 only): `h2c`
//! (prior knowledge) and `h2` (TLS, ALPN `h2`). Bodies go both ways, the
//! member gets one request per client request with `:authority` set as
//! `Host` would be, trailers travel both ways, `TE: trailers` is the only TE
//! it gets, the field shows in `GET /api/v1/config`, a wrong scheme for the
//! protocol is refused with a clear message, and an upgrade is refused (502).

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, StatusCode};
use http_body_util::{BodyExt as _, Full, StreamBody};
use hyper::body::Frame;
use serde_json::{Value, json};
use switchyard_integration_tests::Fleet;
use switchyard_integration_tests::client::{Client, REQUEST_TIMEOUT};
use switchyard_integration_tests::conn::{h1_send, h2_connect};
use switchyard_integration_tests::dirs::TestDir;
use switchyard_integration_tests::eventually::eventually;
use switchyard_integration_tests::h2_backend::{
    H2Backend, spawn_h2_tls_backend, spawn_h2c_backend,
};
use switchyard_integration_tests::tls_backend::TestCa;

fn cluster(protocol: &str, member: &H2Backend) -> Value {
    json!({ "protocol": protocol, "members": [{ "url": member.url() }] })
}

/// POSTs `body` over HTTP/1.1 through the replica; returns status, headers and body.
async fn post_h1(fleet: &Fleet, body: &'static str) -> (StatusCode, HeaderMap, Bytes) {
    post_h1_bytes(fleet, Bytes::from_static(body.as_bytes())).await
}

async fn post_h1_bytes(fleet: &Fleet, body: Bytes) -> (StatusCode, HeaderMap, Bytes) {
    let replica = fleet.replicas[0].proxy_addr();
    let request = Request::post("/upload?x=1")
        .header("host", "app.test")
        .header("te", "gzip")
        .header("connection", "keep-alive")
        .body(Full::new(body))
        .expect("a valid request");
    let sent = async {
        let response = h1_send(replica, request).await?;
        let (parts, body) = response.into_parts();
        let body = body.collect().await?.to_bytes();
        anyhow::Ok((parts.status, parts.headers, body))
    };
    tokio::time::timeout(REQUEST_TIMEOUT, sent)
        .await
        .expect("an answer in time")
        .unwrap_or_else(|e| panic!("{e:#}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2c_member_gets_each_request_once_with_its_body() {
    let member = spawn_h2c_backend().await;
    let fleet = Fleet::serving("h2c-member", &cluster("h2c", &member)).await;

    for n in 1..=3 {
        let (status, headers, body) = post_h1(&fleet, "hello over h2c").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, "hello over h2c", "the body came back");
        assert_eq!(
            headers.get("x-member").map(|v| v.as_bytes()),
            Some(&b"h2"[..])
        );
        let seen = member.seen();
        assert_eq!(
            seen.len(),
            n,
            "one request at the member per client request"
        );
        let last = &seen[n - 1];
        assert_eq!(last.method, "POST");
        assert_eq!(last.path, "/upload");
        assert_eq!(last.body, "hello over h2c");
        // The route preserves the client's host: it is the `:authority`.
        assert_eq!(last.authority, "app.test");
        assert!(
            last.headers.get("host").is_none(),
            "no Host line beside :authority"
        );
        assert!(
            last.headers.get("te").is_none(),
            "a TE other than trailers is dropped"
        );
        assert!(last.headers.get("connection").is_none());
        assert_eq!(
            last.headers.get("x-forwarded-host").map(|v| v.as_bytes()),
            Some(&b"app.test"[..])
        );
    }
    assert!(
        member.connections() <= 2,
        "requests share connections: {}",
        member.connections()
    );

    let config = fleet.cp.config().await;
    assert_eq!(config["clusters"][0]["protocol"], "h2c", "{config}");
}

/// An h2c client's request trailers reach the member, and the member's
/// response trailers reach the client; `TE: trailers` goes through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trailers_travel_both_ways_between_h2_client_and_h2_member() {
    let member = spawn_h2c_backend().await;
    let fleet = Fleet::serving("h2c-trailers", &cluster("h2c", &member)).await;
    let replica = fleet.replicas[0].proxy_addr();
    type Upload = StreamBody<
        futures_util::stream::Iter<
            std::vec::IntoIter<Result<Frame<Bytes>, std::convert::Infallible>>,
        >,
    >;
    let mut sender = h2_connect::<Upload>(replica)
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    let mut trailers = HeaderMap::new();
    trailers.insert("x-client-trailer", HeaderValue::from_static("sent"));
    let frames = vec![
        Ok(Frame::data(Bytes::from_static(b"part one, "))),
        Ok(Frame::data(Bytes::from_static(b"part two"))),
        Ok(Frame::trailers(trailers)),
    ];
    let request = Request::post(format!("http://{replica}/stream"))
        .header("te", "trailers")
        .body(StreamBody::new(futures_util::stream::iter(frames)))
        .expect("a valid request");
    let answered = tokio::time::timeout(REQUEST_TIMEOUT, async {
        sender.ready().await?;
        let response = sender.send_request(request).await?;
        let (parts, body) = response.into_parts();
        let collected = body.collect().await?;
        let trailers = collected.trailers().cloned();
        anyhow::Ok((parts.status, collected.to_bytes(), trailers))
    })
    .await
    .expect("an answer in time")
    .unwrap_or_else(|e| panic!("{e:#}"));
    let (status, body, trailers) = answered;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "part one, part two");
    let trailers = trailers.expect("the member's trailers");
    assert_eq!(trailers["x-member-trailer"], "done");
    let seen = member.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].body, "part one, part two");
    assert_eq!(seen[0].headers["te"], "trailers");
    let member_trailers = seen[0].trailers.as_ref().expect("the client's trailers");
    assert_eq!(member_trailers["x-client-trailer"], "sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2_member_over_tls_is_reached_with_alpn_h2() {
    let files = TestDir::new("h2-tls-ca");
    let ca = TestCa::new("Switchyard h2 test CA");
    let ca_file = ca.write_pem(&files.join("ca.pem")).display().to_string();
    let member = spawn_h2_tls_backend(&ca).await;
    let fleet = Fleet::serving_with("h2-tls-member", &cluster("h2", &member), |options| {
        options.env("SWITCHYARD_UPSTREAM_CA", &ca_file)
    })
    .await;
    let (status, _, body) = post_h1(&fleet, "hello over h2 and TLS").await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    assert_eq!(body, "hello over h2 and TLS");
    let seen = member.seen();
    assert_eq!(seen.len(), 1, "one request at the member");
    assert_eq!(seen[0].body, "hello over h2 and TLS");
    assert_eq!(member.connections(), 1);
    let config = fleet.cp.config().await;
    assert_eq!(config["clusters"][0]["protocol"], "h2", "{config}");
}

/// `h2` over a member that offers no ALPN `h2` (an HTTP/1.1 TLS server) is
/// refused at connect time: 503 naming ALPN, and nothing is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2_member_that_does_not_agree_to_h2_by_alpn_is_not_used() {
    let files = TestDir::new("h2-alpn-ca");
    let ca = TestCa::new("Switchyard ALPN test CA");
    let ca_file = ca.write_pem(&files.join("ca.pem")).display().to_string();
    let backend =
        switchyard_integration_tests::tls_backend::spawn_tls_backend("h1 only", &ca).await;
    let cluster = json!({
        "protocol": "h2",
        "members": [{ "url": format!("https://localhost:{}", backend.port()) }],
    });
    let fleet = Fleet::serving_with("h2-alpn", &cluster, |options| {
        options.env("SWITCHYARD_UPSTREAM_CA", &ca_file)
    })
    .await;
    let response = fleet.replicas[0].get("/").await;
    assert_eq!(
        response.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{response:?}"
    );
    assert!(response.body.contains("ALPN h2"), "{}", response.body);
    assert_eq!(backend.request_count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_protocol_that_does_not_fit_the_member_urls_is_refused_and_changes_nothing() {
    let fleet = Fleet::start("h2-validation", 1).await;
    let cp = &fleet.cp;
    let before = cp.version().await;
    let response = cp
        .put(
            "/api/v1/clusters/grpc",
            &json!({ "protocol": "h2", "members": [{ "url": "http://127.0.0.1:50051" }] }),
        )
        .await;
    assert_eq!(response.status, StatusCode::BAD_REQUEST, "{response:?}");
    let message = response.error_message();
    assert!(
        message.contains("protocol \"h2\" needs a https:// url"),
        "{message}"
    );
    assert!(message.contains("cluster \"grpc\""), "{message}");
    let response = cp
        .put(
            "/api/v1/clusters/grpc",
            &json!({ "protocol": "h2c", "members": [{ "url": "https://127.0.0.1:50051" }] }),
        )
        .await;
    assert_eq!(response.status, StatusCode::BAD_REQUEST, "{response:?}");
    assert!(
        response
            .error_message()
            .contains("protocol \"h2c\" needs a http:// url")
    );
    let response = cp
        .put(
            "/api/v1/clusters/grpc",
            &json!({ "protocol": "http2", "members": [] }),
        )
        .await;
    assert_eq!(response.status, StatusCode::BAD_REQUEST, "{response:?}");
    assert!(response.error_message().contains("http2"), "{response:?}");
    assert_eq!(cp.version().await, before, "nothing changed");
    assert!(
        cp.config().await["clusters"]
            .as_array()
            .is_some_and(Vec::is_empty)
    );
}

/// An upgrade (WebSocket) to a cluster of HTTP/2 members: 502 with a body
/// that says why, and the member never sees it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_to_an_h2_cluster_is_refused_with_502() {
    let member = spawn_h2c_backend().await;
    let fleet = Fleet::serving("h2c-upgrade", &cluster("h2c", &member)).await;
    let response = Client::new()
        .send(
            Method::GET,
            &fleet.replicas[0].url("/chat"),
            &[
                ("connection", "upgrade"),
                ("upgrade", "websocket"),
                ("sec-websocket-version", "13"),
                ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ],
            None,
        )
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(response.status, StatusCode::BAD_GATEWAY, "{response:?}");
    assert!(
        response
            .body
            .contains("upgrades (WebSocket) are not offered"),
        "{}",
        response.body
    );
    // Plain requests still go through.
    tokio::time::timeout(Duration::from_secs(10), post_h1(&fleet, "after"))
        .await
        .expect("in time");
    assert_eq!(
        member.seen().len(),
        1,
        "only the plain request reached the member"
    );
}

/// Active health checks of an HTTP/2 member are HTTP/2 requests too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_checks_reach_an_h2c_member_over_http2() {
    let member = spawn_h2c_backend().await;
    let mut cluster = cluster("h2c", &member);
    cluster["health_check"] = json!({ "path": "/healthz", "interval": "100ms", "timeout": "1s" });
    let _fleet = Fleet::serving("h2c-health", &cluster).await;
    eventually(
        "a health check reaches the member",
        Duration::from_secs(10),
        async || {
            let seen = member.seen();
            match seen.iter().find(|s| s.path == "/healthz") {
                Some(check) => Ok(check.clone()),
                None => Err(format!("{} requests, none to /healthz", seen.len())),
            }
        },
    )
    .await;
    let check = member
        .seen()
        .into_iter()
        .find(|s| s.path == "/healthz")
        .expect("a check");
    assert_eq!(check.method, "GET");
    assert_eq!(check.headers["user-agent"], "switchyard-health-check");
}

/// A member connection that carried no stream for
/// `--upstream-keepalive-timeout` is closed by the replica, and the next
/// request opens another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_member_connection_is_closed_after_the_keepalive_timeout() {
    let member = spawn_h2c_backend().await;
    let fleet = Fleet::serving_with("h2c-idle", &cluster("h2c", &member), |options| {
        options
            .env("SWITCHYARD_WORKERS", "1")
            .env("SWITCHYARD_UPSTREAM_KEEPALIVE_TIMEOUT", "300ms")
    })
    .await;
    let (status, _, _) = post_h1(&fleet, "first").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(member.connections(), 1);
    eventually(
        "the idle connection is closed",
        Duration::from_secs(10),
        async || match member.closed() {
            1 => Ok(()),
            n => Err(format!("{n} closed")),
        },
    )
    .await;
    let (status, _, body) = post_h1(&fleet, "second").await;
    assert_eq!(
        (status, body),
        (StatusCode::OK, Bytes::from_static(b"second"))
    );
    assert_eq!(
        member.connections(),
        2,
        "a new connection after the idle one closed"
    );
    assert_eq!(member.seen().len(), 2);
}

/// A member that leaves the config has its connections closed (its pool
/// goes with the last table that had it), long before any idle limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_leaves_the_config_has_its_connection_closed() {
    let member = spawn_h2c_backend().await;
    let other = spawn_h2c_backend().await;
    let fleet = Fleet::serving_with("h2c-leaves", &cluster("h2c", &member), |options| {
        options.env("SWITCHYARD_UPSTREAM_KEEPALIVE_TIMEOUT", "60s")
    })
    .await;
    let (status, _, _) = post_h1(&fleet, "to the first").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!((member.connections(), member.closed()), (1, 0));
    let version = fleet
        .cp
        .write(
            Method::PUT,
            "/api/v1/clusters/c",
            Some(&cluster("h2c", &other)),
        )
        .await;
    fleet.wait_synced(version).await;
    eventually(
        "the old member's connection is closed",
        Duration::from_secs(10),
        async || match member.closed() {
            1 => Ok(()),
            n => Err(format!("{n} closed")),
        },
    )
    .await;
    let (status, _, body) = post_h1(&fleet, "to the second").await;
    assert_eq!(
        (status, body),
        (StatusCode::OK, Bytes::from_static(b"to the second"))
    );
    assert_eq!(other.seen().len(), 1);
    assert_eq!(
        member.seen().len(),
        1,
        "nothing more reached the old member"
    );
}
