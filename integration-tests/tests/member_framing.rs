//! How a member frames its answer, and what the client is told: a
//! `Content-Length` beside `Transfer-Encoding: chunked` is dropped (the
//! chunks win, RFC 9112 §6.3), a repeated identical one reaches the client as
//! one value, and a member's trailers reach HTTP/1.1 (`TE: trailers`) and h2
//! clients. After each, the same client connection carries the next request.

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Empty};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use serde_json::json;
use switchyard_integration_tests::client::REQUEST_TIMEOUT;
use switchyard_integration_tests::conn::{h2_connect, header_values};
use switchyard_integration_tests::{Fleet, Misbehaviour, RawBackend, spawn_raw_backend};
use tokio::net::TcpStream;

/// One replica in front of a member that answers every request with `answer`.
async fn fleet_before(label: &str, answer: &'static str) -> (Fleet, RawBackend) {
    let member = spawn_raw_backend(Misbehaviour::Answer(answer)).await;
    let cluster = json!({ "members": [ { "url": member.url(), "weight": 1 } ] });
    (Fleet::serving(label, &cluster).await, member)
}

/// An HTTP/1.1 connection to `addr` that carries one request after another.
async fn keep_alive_connection(addr: std::net::SocketAddr) -> http1::SendRequest<Empty<Bytes>> {
    let stream = TcpStream::connect(addr).await.expect("the proxy accepts");
    let (sender, connection) = http1::handshake(TokioIo::new(stream))
        .await
        .expect("HTTP/1.1 handshake");
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "Test client connection ended with an error");
        }
    });
    sender
}

/// `GET path` on `sender`, with `headers`; the head and the whole body.
async fn get(
    sender: &mut http1::SendRequest<Empty<Bytes>>,
    path: &str,
    headers: &[(&str, &str)],
) -> (Response<()>, Bytes, Option<http::HeaderMap>) {
    let mut request = Request::get(path).header("host", "framing.test");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request.body(Empty::new()).expect("a valid request");
    let exchange = async {
        sender
            .ready()
            .await
            .expect("the client connection is still usable");
        let response: Response<Incoming> = sender.send_request(request).await.expect("an answer");
        let (head, body) = response.into_parts();
        let collected = body.collect().await.expect("the whole body");
        let trailers = collected.trailers().cloned();
        (
            Response::from_parts(head, ()),
            collected.to_bytes(),
            trailers,
        )
    };
    tokio::time::timeout(REQUEST_TIMEOUT, exchange)
        .await
        .unwrap_or_else(|_| panic!("GET {path}: no answer within {REQUEST_TIMEOUT:?}"))
}

#[tokio::test]
async fn content_length_beside_chunked_is_dropped_and_the_chunks_delivered() {
    for (length, answer) in [
        (
            3,
            "HTTP/1.1 200 OK\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n\
             6\r\nabcdef\r\n0\r\n\r\n",
        ),
        (
            100,
            "HTTP/1.1 200 OK\r\ncontent-length: 100\r\ntransfer-encoding: chunked\r\n\r\n\
             6\r\nabcdef\r\n0\r\n\r\n",
        ),
    ] {
        let (fleet, member) = fleet_before("framing-both", answer).await;
        let mut client = keep_alive_connection(fleet.replicas[0].proxy_addr()).await;
        for round in 1..=2 {
            let (head, body, _) = get(&mut client, "/both", &[]).await;
            assert_eq!(
                head.status(),
                StatusCode::OK,
                "length {length}, round {round}"
            );
            assert_eq!(body, "abcdef", "length {length}, round {round}");
            let told = header_values(&head, "content-length");
            assert!(
                told.is_empty() || told == ["6"],
                "the client is told the decoded length or none: {told:?}"
            );
            assert_eq!(
                member.heads_read(),
                round,
                "one request reaches the member per request"
            );
        }
    }
}

#[tokio::test]
async fn a_repeated_content_length_reaches_the_client_as_one_value() {
    let (fleet, member) = fleet_before(
        "framing-repeated",
        "HTTP/1.1 200 OK\r\ncontent-length: 5, 5\r\ncontent-length: 5\r\n\r\nhello",
    )
    .await;
    let mut client = keep_alive_connection(fleet.replicas[0].proxy_addr()).await;
    for round in 1..=2 {
        let (head, body, _) = get(&mut client, "/repeated", &[]).await;
        assert_eq!(head.status(), StatusCode::OK);
        assert_eq!(header_values(&head, "content-length"), ["5"]);
        assert_eq!(body, "hello");
        assert_eq!(member.heads_read(), round);
    }
}

#[tokio::test]
async fn differing_content_lengths_are_a_502() {
    let (fleet, member) = fleet_before(
        "framing-differing",
        "HTTP/1.1 200 OK\r\ncontent-length: 5, 6\r\n\r\nhello!",
    )
    .await;
    let mut client = keep_alive_connection(fleet.replicas[0].proxy_addr()).await;
    for round in 1..=2 {
        let (head, body, _) = get(&mut client, "/differing", &[]).await;
        assert_eq!(head.status(), StatusCode::BAD_GATEWAY, "{body:?}");
        assert!(
            String::from_utf8_lossy(&body).contains("content-length"),
            "{body:?}"
        );
        assert_eq!(member.heads_read(), round);
    }
}

const WITH_TRAILERS: &str = "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\
                             trailer: x-checksum\r\n\r\n\
                             5\r\nhello\r\n0\r\nx-checksum: 42\r\n\r\n";

#[tokio::test]
async fn a_members_trailers_reach_an_http1_client_that_accepts_them() {
    let (fleet, member) = fleet_before("framing-trailers-h1", WITH_TRAILERS).await;
    let mut client = keep_alive_connection(fleet.replicas[0].proxy_addr()).await;
    for round in 1..=2 {
        let (head, body, trailers) = get(&mut client, "/trailers", &[("te", "trailers")]).await;
        assert_eq!(head.status(), StatusCode::OK);
        assert_eq!(body, "hello");
        let trailers = trailers.expect("the member's trailers");
        assert_eq!(trailers["x-checksum"], "42");
        assert_eq!(member.heads_read(), round);
    }
}

#[tokio::test]
async fn a_members_trailers_reach_an_h2_client() {
    let (fleet, member) = fleet_before("framing-trailers-h2", WITH_TRAILERS).await;
    let addr = fleet.replicas[0].proxy_addr();
    let mut sender = h2_connect::<Empty<Bytes>>(addr).await.expect("h2c");
    let request = Request::get(format!("http://framing.test:{}/trailers", addr.port()))
        .body(Empty::new())
        .expect("a valid request");
    let exchange = async {
        let response = sender.send_request(request).await.expect("an answer");
        assert_eq!(response.status(), StatusCode::OK);
        response
            .into_body()
            .collect()
            .await
            .expect("the whole body")
    };
    let collected = tokio::time::timeout(REQUEST_TIMEOUT, exchange)
        .await
        .expect("an answer in time");
    assert_eq!(
        collected.trailers().map(|t| t["x-checksum"].clone()),
        Some("42".parse().unwrap())
    );
    assert_eq!(collected.to_bytes(), "hello");
    assert_eq!(member.heads_read(), 1);
}
