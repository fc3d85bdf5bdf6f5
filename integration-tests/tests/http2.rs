//! HTTP/2 with prior knowledge (h2c) from the client to a replica, HTTP/1.1
//! from the replica to its members: requests, bodies and forwarding headers
//! arrive as over HTTP/1.1, and the streams of one connection are balanced
//! like separate requests.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode, Version};
use http_body_util::{BodyExt as _, Full};
use serde_json::{Value, json};
use switchyard_integration_tests::client::REQUEST_TIMEOUT;
use switchyard_integration_tests::conn::h2_connect;
use switchyard_integration_tests::payload::{MIB, Payload, read_body};
use switchyard_integration_tests::{EchoBackend, Fleet, spawn_echo_backend};

/// One replica with route `/` (client's `Host` preserved) to a round-robin
/// cluster of `members`.
async fn fleet_for(label: &str, members: &[&EchoBackend]) -> Fleet {
    let members: Vec<Value> = members
        .iter()
        .map(|b| json!({ "url": b.url(), "weight": 1 }))
        .collect();
    let cluster = json!({ "policy": "round_robin", "members": members });
    Fleet::serving(label, &cluster).await
}

/// What came back on one stream.
#[derive(Debug)]
struct H2Answer {
    status: StatusCode,
    version: Version,
    headers: http::HeaderMap,
    body: String,
}

impl H2Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

async fn exchange(
    sender: &mut hyper::client::conn::http2::SendRequest<Full<Bytes>>,
    request: Request<Full<Bytes>>,
) -> H2Answer {
    let what = format!("{} {}", request.method(), request.uri());
    let sent = async {
        sender.ready().await?;
        let response = sender.send_request(request).await?;
        let (parts, body) = response.into_parts();
        let body = body.collect().await?.to_bytes();
        anyhow::Ok(H2Answer {
            status: parts.status,
            version: parts.version,
            headers: parts.headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    };
    tokio::time::timeout(REQUEST_TIMEOUT, sent)
        .await
        .unwrap_or_else(|_| panic!("{what} over h2: no answer within {REQUEST_TIMEOUT:?}"))
        .unwrap_or_else(|e| panic!("{what} over h2: {e:#}"))
}

#[tokio::test]
async fn h2c_get_and_post_reach_an_http1_member() {
    let backend = spawn_echo_backend("h1-member").await;
    let fleet = fleet_for("h2c-basic", &[&backend]).await;
    let replica = &fleet.replicas[0];
    let authority = replica.proxy_addr().to_string();
    let mut sender = h2_connect::<Full<Bytes>>(replica.proxy_addr())
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));

    let get = Request::get(format!("http://{authority}/greet?lang=fr"))
        .body(Full::new(Bytes::new()))
        .expect("a valid request");
    let answer = exchange(&mut sender, get).await;
    assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
    assert_eq!(answer.version, Version::HTTP_2);
    assert_eq!(answer.header("x-backend"), Some("h1-member"));
    assert_eq!(answer.header("x-seen-method"), Some("GET"));
    assert_eq!(answer.header("x-seen-path"), Some("/greet?lang=fr"));
    let seen = backend.last_request().expect("the member got the GET");
    assert_eq!(
        seen.header("host"),
        Some(authority.clone()),
        "with preserve_host the member gets the client's :authority as Host"
    );
    assert_eq!(seen.header("x-forwarded-for").as_deref(), Some("127.0.0.1"));
    assert_eq!(seen.header("x-forwarded-host"), Some(authority.clone()));
    assert_eq!(seen.header("x-forwarded-proto").as_deref(), Some("http"));
    assert_eq!(seen.body.count(), 0);

    let text = "posted over HTTP/2, answered over HTTP/1.1: ünïcödé";
    let post = Request::post(format!("http://{authority}/submit"))
        .header("content-type", "text/plain; charset=utf-8")
        .body(Full::new(Bytes::from(text)))
        .expect("a valid request");
    let answer = exchange(&mut sender, post).await;
    assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
    assert_eq!(answer.body, text, "the member echoes what it received");
    let seen = backend.last_request().expect("the member got the POST");
    assert_eq!(seen.method, "POST");
    assert_eq!(seen.path, "/submit");
    assert_eq!(seen.body_text(), text);
    assert_eq!(seen.header("host"), Some(authority.clone()));
    assert_eq!(seen.header("x-forwarded-for").as_deref(), Some("127.0.0.1"));
    assert_eq!(
        seen.header("content-type").as_deref(),
        Some("text/plain; charset=utf-8")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_streams_large_bodies_both_ways() {
    const SIZE: u64 = 16 * MIB + 7;
    let backend = spawn_echo_backend("h1-member").await;
    let fleet = fleet_for("h2c-large", &[&backend]).await;
    let replica = &fleet.replicas[0];
    let authority = replica.proxy_addr().to_string();
    let mut sender = h2_connect::<Payload>(replica.proxy_addr())
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    let expected = Payload::expected_checksum(SIZE);
    let deadline = Duration::from_secs(120);

    // Upload, of a length the client does not announce.
    let upload = Request::post(format!("http://{authority}/hash/h2"))
        .body(Payload::streamed(SIZE))
        .expect("a valid request");
    let sent = async {
        sender.ready().await?;
        let response = sender.send_request(upload).await?;
        let status = response.status();
        let (_, body) = read_body(response.into_body(), 4096).await?;
        anyhow::Ok((status, String::from_utf8_lossy(&body).into_owned()))
    };
    let (status, answer) = tokio::time::timeout(deadline, sent)
        .await
        .expect("the h2 upload is answered")
        .unwrap_or_else(|e| panic!("h2 upload: {e:#}"));
    assert_eq!(status, StatusCode::OK, "{answer:?}");
    assert_eq!(answer, expected.summary());

    // Download, on the same connection.
    let download = Request::get(format!("http://{authority}/download/h2?bytes={SIZE}"))
        .body(Payload::sized(0))
        .expect("a valid request");
    let received = async {
        sender.ready().await?;
        let response = sender.send_request(download).await?;
        let status = response.status();
        let (received, _) = read_body(response.into_body(), 0).await?;
        anyhow::Ok((status, received))
    };
    let (status, received) = tokio::time::timeout(deadline, received)
        .await
        .expect("the h2 download is answered")
        .unwrap_or_else(|e| panic!("h2 download: {e:#}"));
    assert_eq!(status, StatusCode::OK);
    assert_eq!(received.summary(), expected.summary());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_h2c_streams_on_one_connection_are_balanced() {
    const STREAMS: usize = 20;
    let a = spawn_echo_backend("a").await;
    let b = spawn_echo_backend("b").await;
    let fleet = fleet_for("h2c-streams", &[&a, &b]).await;
    let replica = &fleet.replicas[0];
    let authority = replica.proxy_addr().to_string();
    let sender = h2_connect::<Full<Bytes>>(replica.proxy_addr())
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));

    // Every member answer takes a moment, so the streams are in flight together.
    let mut streams = tokio::task::JoinSet::new();
    for n in 0..STREAMS {
        let mut sender = sender.clone();
        let path = format!("/sleep/stream-{n}?ms=150");
        let request = Request::get(format!("http://{authority}{path}"))
            .body(Full::new(Bytes::new()))
            .expect("a valid request");
        streams.spawn(async move { (path, exchange(&mut sender, request).await) });
    }
    let mut per_member = BTreeMap::new();
    while let Some(joined) = streams.join_next().await {
        let (path, answer) = joined.expect("a stream task does not panic");
        assert_eq!(answer.status, StatusCode::OK, "{path}: {answer:?}");
        assert_eq!(answer.version, Version::HTTP_2);
        assert_eq!(
            answer.header("x-seen-path"),
            Some(path.as_str()),
            "each stream gets the answer to its own request"
        );
        let member = answer.header("x-backend").unwrap_or("?").to_owned();
        assert_eq!(answer.body, member);
        *per_member.entry(member).or_insert(0) += 1;
    }
    assert_eq!(
        per_member,
        BTreeMap::from([("a".to_owned(), STREAMS / 2), ("b".to_owned(), STREAMS / 2)]),
        "round robin over two members of weight 1"
    );
    assert_eq!(a.request_count() + b.request_count(), STREAMS);

    // One stream after the other on the same connection: strict alternation.
    let mut sender = sender;
    let mut sequence = Vec::new();
    for n in 0..6 {
        let request = Request::get(format!("http://{authority}/seq/{n}"))
            .body(Full::new(Bytes::new()))
            .expect("a valid request");
        let answer = exchange(&mut sender, request).await;
        assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
        sequence.push(answer.header("x-backend").unwrap_or("?").to_owned());
    }
    assert!(
        sequence.windows(2).all(|w| w[0] != w[1]),
        "sequential streams alternate: {sequence:?}"
    );
    for seen in a.requests().into_iter().chain(b.requests()) {
        assert_eq!(seen.header("x-forwarded-for").as_deref(), Some("127.0.0.1"));
        assert_eq!(seen.header("host"), Some(authority.clone()));
    }
}
