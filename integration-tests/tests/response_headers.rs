//! Headers of a member's answer on their way to the client: hop-by-hop ones
//! (`Connection`, every header it names, `Keep-Alive`) are removed; every other
//! header is kept, repeated ones (`Set-Cookie`) with every value, in order.
//! And `Connection` split over several field lines (RFC 9110 §5.3 allows it)
//! is honoured in both directions: every header any of its lines names is
//! removed.

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Empty;
use hyper::body::Incoming;
use serde_json::json;
use switchyard_integration_tests::client::REQUEST_TIMEOUT;
use switchyard_integration_tests::conn::{h1_send, header_values};
use switchyard_integration_tests::{
    EchoBackend, Fleet, Misbehaviour, spawn_echo_backend, spawn_raw_backend,
};

async fn fleet_for(label: &str, backend: &EchoBackend) -> Fleet {
    let cluster = json!({ "members": [ { "url": backend.url(), "weight": 1 } ] });
    Fleet::serving(label, &cluster).await
}

/// `GET path` over a new HTTP/1.1 connection to `addr`, with `headers` (each
/// pair its own field line, repeated names included); the body is left unread.
async fn get_head(
    addr: std::net::SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> Response<Incoming> {
    let mut request = Request::get(path).header("host", "headers.test");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request
        .body(Empty::<Bytes>::new())
        .expect("a valid request");
    tokio::time::timeout(REQUEST_TIMEOUT, h1_send(addr, request))
        .await
        .unwrap_or_else(|_| panic!("GET {path}: no answer within {REQUEST_TIMEOUT:?}"))
        .unwrap_or_else(|e| panic!("GET {path}: {e:#}"))
}

/// The hop-by-hop headers `response` still has, from `names`, with `Connection`
/// reported only when it names one of them.
fn leaked(response: &Response<Incoming>, names: &[&str]) -> Vec<String> {
    let mut leaked: Vec<String> = names
        .iter()
        .filter(|name| response.headers().contains_key(**name))
        .map(|name| format!("{name}: {:?}", header_values(response, name)))
        .collect();
    let connection = header_values(response, "connection")
        .join(", ")
        .to_ascii_lowercase();
    if names.iter().any(|name| connection.contains(name)) {
        leaked.push(format!("connection: {connection}"));
    }
    leaked
}

#[tokio::test]
async fn hop_by_hop_response_headers_are_removed_and_the_others_kept() {
    let backend = spawn_echo_backend("headers").await;
    let fleet = fleet_for("response-headers", &backend).await;
    let hop_by_hop = ["x-foo", "keep-alive"];

    // What the member itself sends, so that what follows is the proxy's doing.
    let direct = get_head(backend.addr(), "/response-headers", &[]).await;
    assert_eq!(direct.status(), StatusCode::OK);
    assert_eq!(
        leaked(&direct, &hop_by_hop).len(),
        3,
        "the member sends Connection: x-foo, X-Foo and Keep-Alive: {:?}",
        direct.headers()
    );

    let response = get_head(fleet.replicas[0].proxy_addr(), "/response-headers", &[]).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        leaked(&response, &hop_by_hop),
        Vec::<String>::new(),
        "hop-by-hop headers reached the client"
    );
    assert_eq!(
        header_values(&response, "set-cookie"),
        ["a=1; Path=/", "b=2; Path=/; HttpOnly"],
        "both cookies, in order"
    );
    assert_eq!(header_values(&response, "x-custom"), ["one", "two"]);
    assert_eq!(header_values(&response, "x-single"), ["yes"]);
    assert_eq!(header_values(&response, "x-backend"), ["headers"]);
}

#[tokio::test]
async fn a_connection_header_split_over_two_lines_is_honoured_in_responses() {
    // hyper folds repeated Connection values into one line when it writes
    // them, so this member writes its answer byte for byte.
    let member = spawn_raw_backend(Misbehaviour::Answer(
        "HTTP/1.1 200 OK\r\n\
         connection: x-foo\r\n\
         connection: x-bar\r\n\
         x-foo: hop-by-hop, named by the first Connection line\r\n\
         x-bar: hop-by-hop, named by the second Connection line\r\n\
         keep-alive: timeout=5\r\n\
         set-cookie: a=1\r\n\
         set-cookie: b=2\r\n\
         content-length: 2\r\n\
         \r\n\
         ok",
    ))
    .await;
    let cluster = json!({ "members": [ { "url": member.url(), "weight": 1 } ] });
    let fleet = Fleet::serving("split-connection-response", &cluster).await;
    let hop_by_hop = ["x-foo", "x-bar", "keep-alive"];

    let response = get_head(fleet.replicas[0].proxy_addr(), "/split", &[]).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(member.heads_read(), 1);
    assert_eq!(
        leaked(&response, &hop_by_hop),
        Vec::<String>::new(),
        "hop-by-hop headers reached the client"
    );
    assert_eq!(header_values(&response, "set-cookie"), ["a=1", "b=2"]);
}

#[tokio::test]
async fn a_connection_header_split_over_two_lines_is_honoured_in_requests() {
    let backend = spawn_echo_backend("headers").await;
    let fleet = fleet_for("split-connection-request", &backend).await;

    let response = get_head(
        fleet.replicas[0].proxy_addr(),
        "/split",
        &[
            ("connection", "x-first"),
            ("connection", "x-second"),
            ("x-first", "for the proxy only"),
            ("x-second", "for the proxy only, too"),
            ("x-end-to-end", "yes"),
        ],
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    let seen = backend.last_request().expect("the member got the request");
    let leaked: Vec<String> = ["x-first", "x-second"]
        .into_iter()
        .filter_map(|name| seen.header(name).map(|v| format!("{name}: {v}")))
        .collect();
    assert_eq!(
        leaked,
        Vec::<String>::new(),
        "headers named by the client's Connection lines reached the member: {:?}",
        seen.headers
    );
    assert_eq!(seen.header("x-end-to-end").as_deref(), Some("yes"));
}
