//! What a client sees when a member misbehaves: too slow → 504, the exchange
//! broken or answered with garbage → 502, each with a text body that names the
//! member; and a response whose body ends where the connection does is still
//! delivered whole. A client slow to send its body is not a slow member.

use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use serde_json::{Value, json};
use switchyard_integration_tests::client::REQUEST_TIMEOUT;
use switchyard_integration_tests::conn::h1_send;
use switchyard_integration_tests::payload::{ChannelBody, Checksum, read_body};
use switchyard_integration_tests::{
    Client, Fleet, Misbehaviour, Response, bodies, spawn_echo_backend, spawn_raw_backend,
};

/// One replica with route `/` to cluster `cluster`.
async fn fleet_for(label: &str, cluster: &Value) -> Fleet {
    Fleet::serving(label, cluster).await
}

fn assert_error_naming(response: &Response, status: StatusCode, member: &str) {
    assert_eq!(response.status, status, "{response:?}");
    let content_type = response.header("content-type").unwrap_or("");
    assert!(
        content_type.starts_with("text/plain"),
        "an error answer is text: {content_type:?}"
    );
    assert!(
        response.body.contains(member),
        "the error names the member {member}: {:?}",
        response.body
    );
}

#[tokio::test]
async fn a_member_slower_than_the_response_timeout_gives_504() {
    let backend = spawn_echo_backend("slow").await;
    let cluster = json!({
        "members": [ { "url": backend.url(), "weight": 1 } ],
        "response_timeout": "300ms",
    });
    let fleet = fleet_for("slow-member", &cluster).await;
    let replica = &fleet.replicas[0];

    let response = replica.get("/sleep/slow?ms=2000").await;
    assert_error_naming(&response, StatusCode::GATEWAY_TIMEOUT, &backend.authority());
    assert_ne!(
        response.header("x-backend"),
        Some("slow"),
        "the answer is the proxy's, not the member's"
    );

    // The member is still in use for requests it answers in time.
    let response = replica.get("/sleep/fast?ms=0").await;
    assert_eq!(response.status, StatusCode::OK, "{response:?}");
    assert_eq!(response.body, "slow");
}

#[tokio::test]
async fn a_member_that_closes_without_answering_gives_502() {
    let member = spawn_raw_backend(Misbehaviour::CloseWithoutAnswer).await;
    let cluster = json!({ "members": [ { "url": member.url(), "weight": 1 } ] });
    let fleet = fleet_for("closing-member", &cluster).await;
    let replica = &fleet.replicas[0];

    let response = replica.get("/anything").await;
    assert_error_naming(&response, StatusCode::BAD_GATEWAY, &member.authority());
    assert_eq!(
        member.heads_read(),
        1,
        "the request reached the member once"
    );

    // A POST is not retried either: its body was sent.
    let response = Client::without_pool()
        .raw_json(Method::POST, &replica.url("/submit"), r#"{"n": 1}"#)
        .await;
    assert_error_naming(&response, StatusCode::BAD_GATEWAY, &member.authority());
    assert_eq!(member.heads_read(), 2, "the POST reached the member once");
}

#[tokio::test]
async fn a_member_that_answers_garbage_gives_502() {
    let member = spawn_raw_backend(Misbehaviour::Answer("this is not HTTP at all\r\n\r\n")).await;
    let cluster = json!({ "members": [ { "url": member.url(), "weight": 1 } ] });
    let fleet = fleet_for("garbage-member", &cluster).await;

    let response = fleet.replicas[0].get("/").await;
    assert_error_naming(&response, StatusCode::BAD_GATEWAY, &member.authority());
    assert_eq!(member.heads_read(), 1);
}

#[tokio::test]
async fn a_response_delimited_by_the_connection_closing_is_delivered_whole() {
    let body = "a body whose end is the end of the connection";
    let member = spawn_raw_backend(Misbehaviour::CloseDelimited(body)).await;
    let cluster = json!({ "members": [ { "url": member.url(), "weight": 1 } ] });
    let fleet = fleet_for("close-delimited", &cluster).await;

    for _ in 0..3 {
        let response = fleet.replicas[0].get("/").await;
        assert_eq!(response.status, StatusCode::OK, "{response:?}");
        assert_eq!(response.body, body);
        assert_eq!(response.header("x-backend"), Some("raw"));
    }
    assert_eq!(member.heads_read(), 3, "one connection per request");
}

/// `response_timeout` is how long a member may take to answer (Apache's
/// `timeout`, which README maps it to, is a wait for the member's I/O); a
/// client that takes longer than that to send its body is not the member
/// being slow, and must not turn into a 504 that blames the member.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_upload_to_a_prompt_member_is_not_a_504() {
    const PARTS: usize = 8;
    let backend = spawn_echo_backend("prompt").await;
    let cluster = json!({
        "members": [ { "url": backend.url(), "weight": 1 } ],
        "response_timeout": "1s",
    });
    let fleet = fleet_for("slow-upload", &cluster).await;

    let (upload, body) = ChannelBody::channel(1);
    let request = Request::post("/hash/slow-upload")
        .header("host", "upload.test")
        .body(body)
        .expect("a valid request");
    let exchange = tokio::spawn(h1_send(fleet.replicas[0].proxy_addr(), request));
    // The client is slow, not the member: one part every 250 ms, about 2 s in
    // all, each read by the member as it comes.
    let mut pace = tokio::time::interval(Duration::from_millis(250));
    let mut sent = Checksum::new();
    for n in 0..PARTS {
        pace.tick().await;
        let part = Bytes::from(format!("part {n} of a slow upload; "));
        sent.update(&part);
        if upload.send(part).await.is_err() {
            break; // The proxy gave up on the request: the status below says why.
        }
    }
    drop(upload);
    let response = tokio::time::timeout(REQUEST_TIMEOUT, exchange)
        .await
        .expect("the upload is answered")
        .expect("the client task does not panic")
        .unwrap_or_else(|e| panic!("POST /hash/slow-upload: {e:#}"));
    let status = response.status();
    let (_, answer) = read_body(response.into_body(), 4096)
        .await
        .unwrap_or_else(|e| panic!("reading the answer: {e}"));
    let answer = String::from_utf8_lossy(&answer).into_owned();
    assert_eq!(
        (status, answer.as_str()),
        (StatusCode::OK, sent.summary().as_str()),
        "a {PARTS}-part upload over about 2 s, to a member that answers as soon as it has it all"
    );
}

/// A member that closes its connection in the middle of a body: the client
/// must see the body cut short (an error), never a shorter body that looks
/// complete, whichever way the member framed it.
#[tokio::test]
async fn a_body_cut_short_by_the_member_is_cut_short_for_the_client() {
    let announced = spawn_raw_backend(Misbehaviour::Answer(
        "HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly 17 bytes of 100",
    ))
    .await;
    let chunked = spawn_raw_backend(Misbehaviour::Answer(
        "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n",
    ))
    .await;
    let fleet = Fleet::start("cut-short", 1).await;
    for (name, member) in [("announced", &announced), ("chunked", &chunked)] {
        fleet
            .cp
            .write(
                Method::PUT,
                &format!("/api/v1/clusters/{name}"),
                Some(&json!({ "members": [ { "url": member.url(), "weight": 1 } ] })),
            )
            .await;
        fleet
            .cp
            .write(
                Method::PUT,
                &format!("/api/v1/routes/{name}?wait=5s"),
                Some(&bodies::route(&format!("/{name}/"), name)),
            )
            .await;
    }

    for path in ["/announced/", "/chunked/"] {
        let request = Request::get(path)
            .header("host", "cut.test")
            .body(ChannelBody::empty())
            .expect("a valid request");
        let exchange = async {
            let response = h1_send(fleet.replicas[0].proxy_addr(), request).await?;
            let status = response.status();
            anyhow::Ok((status, read_body(response.into_body(), 1024).await))
        };
        let (status, body) = tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .unwrap_or_else(|_| panic!("GET {path}: no answer within {REQUEST_TIMEOUT:?}"))
            .unwrap_or_else(|e| panic!("GET {path}: {e:#}"));
        assert_eq!(
            status,
            StatusCode::OK,
            "GET {path}: the head was already on its way"
        );
        assert!(
            body.is_err(),
            "GET {path}: the client got a complete-looking body {:?}",
            body.map(|(_, b)| String::from_utf8_lossy(&b).into_owned())
        );
    }
}

/// A member that answers as if the connection stayed open (no
/// `Connection: close`) and then closes it at once, as members with a short
/// keep-alive timeout do: the proxy must not send the next request on that
/// dead connection and fail it.
#[tokio::test]
async fn a_member_closing_kept_alive_connections_right_away_gets_every_request() {
    let member = spawn_raw_backend(Misbehaviour::Answer(
        "HTTP/1.1 200 OK\r\ncontent-length: 2\r\nx-backend: raw\r\n\r\nok",
    ))
    .await;
    let cluster = json!({ "members": [ { "url": member.url(), "weight": 1 } ] });
    let fleet = fleet_for("closing-idle", &cluster).await;
    let client = Client::new();

    for n in 0..20 {
        let method = if n % 2 == 0 {
            Method::GET
        } else {
            Method::POST
        };
        let response = client
            .send_bytes(
                method.clone(),
                &fleet.replicas[0].url(&format!("/{n}")),
                &[],
                (method == Method::POST).then(|| Bytes::from(format!("body {n}"))),
            )
            .await
            .unwrap_or_else(|e| panic!("{method} /{n}: {e:#}"));
        assert_eq!(
            (response.status, response.body.as_str()),
            (StatusCode::OK, "ok"),
            "{method} /{n}: {response:?}"
        );
    }
    assert_eq!(member.heads_read(), 20, "one connection per request");
}
