//! Per-route header rules (`request_headers`, `response_headers`: remove,
//! then set, then append): what the member sees of a request and what the
//! client sees of an answer, after the proxy's own steps (hop-by-hop headers
//! out, `X-Forwarded-*` in), and the API refusing any rule that would add a
//! hop-by-hop header back or break the framing.

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt as _, Empty};
use serde_json::{Value, json};
use switchyard_integration_tests::client::REQUEST_TIMEOUT;
use switchyard_integration_tests::conn::{h1_send, h2_connect, header_values};
use switchyard_integration_tests::{EchoBackend, Fleet, bodies, spawn_echo_backend};

/// One replica whose route `r` on `/` (with `extra` merged into it) leads to
/// `backend`.
async fn fleet_for(label: &str, backend: &EchoBackend, extra: &Value) -> Fleet {
    let fleet = Fleet::start(label, 1).await;
    let cluster = json!({ "members": [ { "url": backend.url() } ] });
    fleet
        .cp
        .write(Method::PUT, "/api/v1/clusters/c", Some(&cluster))
        .await;
    fleet
        .cp
        .write(
            Method::PUT,
            "/api/v1/routes/r?wait=5s",
            Some(&route_with(extra)),
        )
        .await;
    fleet
}

fn route_with(extra: &Value) -> Value {
    let mut route = bodies::route("/", "c");
    if let (Some(route), Some(extra)) = (route.as_object_mut(), extra.as_object()) {
        route.extend(extra.clone());
    }
    route
}

#[tokio::test]
async fn request_rules_apply_after_the_proxys_own_headers() {
    let backend = spawn_echo_backend("rules").await;
    let rules = json!({
        "remove": ["X-Secret", "X-Forwarded-Server"],
        "set": { "X-Replace": "new", "Host": "app.internal", "X-Forwarded-Proto": "https" },
        "append": { "X-List": "b" },
    });
    let fleet = fleet_for(
        "rules-request",
        &backend,
        &json!({ "request_headers": rules }),
    )
    .await;
    assert_eq!(
        fleet.cp.config().await["routes"][0]["request_headers"],
        rules
    );
    let addr = fleet.replicas[0].proxy_addr();

    let request = Request::get("/page")
        .header("host", "rules.test")
        .header("x-secret", "s")
        .header("x-replace", "old-1")
        .header("x-replace", "old-2")
        .header("x-list", "a")
        .header("x-keep", "k")
        .header("connection", "x-hop")
        .header("x-hop", "named by Connection")
        .body(Empty::<Bytes>::new())
        .expect("a request");
    let response = tokio::time::timeout(REQUEST_TIMEOUT, h1_send(addr, request))
        .await
        .expect("an answer within the deadline")
        .expect("an answer");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(header_values(&response, "x-seen-host"), ["app.internal"]);

    assert_eq!(backend.request_count(), 1, "one request per client request");
    let seen = backend.last_request().expect("the member's request");
    assert_eq!(seen.header("x-secret"), None);
    assert_eq!(
        seen.header("x-forwarded-server"),
        None,
        "a proxy header removed"
    );
    assert_eq!(
        seen.header("x-replace").as_deref(),
        Some("new"),
        "every value replaced"
    );
    assert_eq!(seen.header("x-list").as_deref(), Some("a, b"));
    assert_eq!(seen.header("x-keep").as_deref(), Some("k"));
    assert_eq!(
        seen.header("host").as_deref(),
        Some("app.internal"),
        "over preserve_host"
    );
    assert_eq!(
        seen.header("x-forwarded-host").as_deref(),
        Some("rules.test")
    );
    assert_eq!(seen.header("x-forwarded-proto").as_deref(), Some("https"));
    assert!(seen.header("x-forwarded-for").is_some());
    assert_eq!(seen.header("x-hop"), None, "hop-by-hop still removed");
    assert_eq!(seen.header("connection"), None);

    // The same rules over h2c.
    let mut sender = h2_connect::<Empty<Bytes>>(addr)
        .await
        .expect("an h2c connection");
    let request = Request::get(format!("http://{addr}/h2"))
        .header("x-secret", "s")
        .header("x-list", "a")
        .body(Empty::new())
        .expect("a request");
    let answered = async {
        sender.ready().await?;
        let response = sender.send_request(request).await?;
        let status = response.status();
        response.into_body().collect().await?;
        anyhow::Ok(status)
    };
    let status = tokio::time::timeout(REQUEST_TIMEOUT, answered)
        .await
        .expect("an answer within the deadline")
        .expect("an answer");
    assert_eq!(status, StatusCode::OK);
    assert_eq!(backend.request_count(), 2);
    let seen = backend.last_request().expect("the member's request");
    assert_eq!(seen.header("host").as_deref(), Some("app.internal"));
    assert_eq!(seen.header("x-secret"), None);
    assert_eq!(seen.header("x-list").as_deref(), Some("a, b"));
}

#[tokio::test]
async fn response_rules_apply_to_the_members_answer() {
    let backend = spawn_echo_backend("rules").await;
    let rules = json!({
        "remove": ["X-Custom", "X-Backend"],
        "set": { "X-Single": "replaced", "Cache-Control": "no-store" },
        "append": { "Set-Cookie": "c=3; Path=/" },
    });
    let fleet = fleet_for(
        "rules-response",
        &backend,
        &json!({ "response_headers": rules }),
    )
    .await;
    let request = Request::get("/response-headers")
        .header("host", "rules.test")
        .body(Empty::<Bytes>::new())
        .expect("a request");
    let response = tokio::time::timeout(
        REQUEST_TIMEOUT,
        h1_send(fleet.replicas[0].proxy_addr(), request),
    )
    .await
    .expect("an answer within the deadline")
    .expect("an answer");
    assert_eq!(response.status(), StatusCode::OK);
    assert!(header_values(&response, "x-custom").is_empty());
    assert!(header_values(&response, "x-backend").is_empty());
    assert_eq!(header_values(&response, "x-single"), ["replaced"]);
    assert_eq!(header_values(&response, "cache-control"), ["no-store"]);
    assert_eq!(
        header_values(&response, "set-cookie"),
        ["a=1; Path=/", "b=2; Path=/; HttpOnly", "c=3; Path=/"],
        "appended after the member's, in order"
    );
    assert!(
        header_values(&response, "x-foo").is_empty(),
        "hop-by-hop still removed"
    );
    assert!(header_values(&response, "keep-alive").is_empty());
    assert_eq!(backend.request_count(), 1);
    let seen = backend.last_request().expect("the member's request");
    assert_eq!(
        seen.header("cache-control"),
        None,
        "response rules stay on the response"
    );
}

#[tokio::test]
async fn rules_that_would_re_add_a_hop_by_hop_header_are_refused() {
    let backend = spawn_echo_backend("rules").await;
    let fleet = fleet_for("rules-refused", &backend, &json!({})).await;
    let version = fleet.cp.version().await;
    let hop_by_hop = [
        "Connection",
        "Keep-Alive",
        "Proxy-Connection",
        "TE",
        "Trailer",
        "Transfer-Encoding",
        "Upgrade",
    ];
    let mut cases = Vec::new();
    for name in hop_by_hop {
        for field in ["request_headers", "response_headers"] {
            for kind in ["set", "append"] {
                cases.push((json!({ field: { kind: { name: "x" } } }), "hop-by-hop"));
            }
        }
    }
    cases.extend([
        (
            json!({ "request_headers": { "set": { "Content-Length": "1" } } }),
            "Content-Length",
        ),
        (
            json!({ "response_headers": { "remove": ["content-length"] } }),
            "Content-Length",
        ),
        (
            json!({ "request_headers": { "append": { "Host": "a" } } }),
            "Host",
        ),
        (json!({ "request_headers": { "remove": ["Host"] } }), "Host"),
        (
            json!({ "request_headers": { "set": { "X-A": "a\r\nX-B: b" } } }),
            "value",
        ),
        (
            json!({ "request_headers": { "set": { "X A": "a" } } }),
            "header name",
        ),
        (
            json!({ "response_headers": { "add": { "X-A": "a" } } }),
            "add",
        ),
        (
            json!({ "response_headers": [["X-A", "a"]] }),
            "header rules object",
        ),
        (
            json!({ "response_headers": { "set": ["X-A"] } }),
            "header names to values",
        ),
    ]);
    for (extra, expected) in &cases {
        let response = fleet.cp.put("/api/v1/routes/r", &route_with(extra)).await;
        assert_eq!(response.status, StatusCode::BAD_REQUEST, "{extra}");
        let message = response.error_message();
        assert!(message.contains(expected), "{extra}: {message}");
        if *expected == "hop-by-hop" {
            let name = extra.to_string();
            let named = hop_by_hop
                .iter()
                .any(|h| name.contains(h) && message.contains(h));
            assert!(named, "{extra}: the message names the header: {message}");
        }
    }
    assert_eq!(fleet.cp.version().await, version, "nothing changed");
    let route = &fleet.cp.config().await["routes"][0];
    assert_eq!(route["request_headers"], Value::Null);
    assert_eq!(route["response_headers"], Value::Null);
    // Removing a hop-by-hop header is allowed (the proxy does it anyway).
    let allowed = json!({ "response_headers": { "remove": ["Connection"] } });
    let response = fleet
        .cp
        .put("/api/v1/routes/r", &route_with(&allowed))
        .await;
    assert_eq!(response.status, StatusCode::OK, "{}", response.body);
}
