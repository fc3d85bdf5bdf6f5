//! Methods and request bodies: what a client sends with PUT, POST, PATCH or
//! DELETE reaches the member intact; a request for a member that refuses the
//! connection goes to another member with its body (nothing had been sent);
//! a member that closes its connection after every answer still gets every
//! request; HEAD and `Expect: 100-continue` work as through no proxy.

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use serde_json::{Value, json};
use switchyard_integration_tests::client::REQUEST_TIMEOUT;
use switchyard_integration_tests::conn::{h1_send, header};
use switchyard_integration_tests::payload::{Payload, read_body};
use switchyard_integration_tests::{Client, EchoBackend, Fleet, bodies, spawn_echo_backend};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// One replica with route `/` to a round-robin cluster of `members`, in that order.
async fn fleet_for(label: &str, members: &[&EchoBackend], extra: Value) -> Fleet {
    let members: Vec<Value> = members
        .iter()
        .map(|b| json!({ "url": b.url(), "weight": 1 }))
        .collect();
    let mut cluster = json!({ "policy": "round_robin", "members": members });
    if let (Some(cluster), Value::Object(extra)) = (cluster.as_object_mut(), extra) {
        cluster.extend(extra);
    }
    Fleet::serving(label, &cluster).await
}

/// Sends `body` with `method` to `path` through `fleet`'s replica; returns the
/// status, `x-backend` and the body of the answer.
async fn send(
    fleet: &Fleet,
    method: Method,
    path: &str,
    body: Payload,
) -> (StatusCode, Option<String>, String) {
    let request = Request::builder()
        .method(method.clone())
        .uri(path)
        .header("host", "methods.test")
        .body(body)
        .expect("a valid request");
    let exchange = async {
        let response = h1_send(fleet.replicas[0].proxy_addr(), request).await?;
        let status = response.status();
        let backend = header(&response, "x-backend");
        let (_, body) = read_body(response.into_body(), 64 * 1024).await?;
        anyhow::Ok((status, backend, String::from_utf8_lossy(&body).into_owned()))
    };
    tokio::time::timeout(REQUEST_TIMEOUT, exchange)
        .await
        .unwrap_or_else(|_| panic!("{method} {path}: no answer within {REQUEST_TIMEOUT:?}"))
        .unwrap_or_else(|e| panic!("{method} {path}: {e:#}"))
}

#[tokio::test]
async fn bodies_of_put_post_patch_and_delete_reach_the_member_intact() {
    let backend = spawn_echo_backend("echo").await;
    let fleet = fleet_for("methods", &[&backend], json!({})).await;
    let client = Client::without_pool();

    for method in [Method::POST, Method::PUT, Method::PATCH, Method::DELETE] {
        let body = format!(
            "{{\"method\": \"{method}\", \"text\": \"ünïcödé, \\r\\n, tabs\\tand \\\"quotes\\\"\"}}"
        );
        let response = client
            .send_bytes(
                method.clone(),
                &fleet.replicas[0].url(&format!("/items/{method}")),
                &[],
                Some(Bytes::from(body.clone())),
            )
            .await
            .unwrap_or_else(|e| panic!("{e:#}"));
        assert_eq!(response.status, StatusCode::OK, "{method}: {response:?}");
        assert_eq!(response.body, body, "{method}: the member echoes its body");
        let seen = backend.last_request().expect("the member got the request");
        assert_eq!(seen.method, method.as_str());
        assert_eq!(seen.path, format!("/items/{method}"));
        assert_eq!(seen.body_text(), body, "{method}");
        assert_eq!(
            seen.header("content-length"),
            Some(body.len().to_string()),
            "{method}"
        );
        assert_eq!(
            seen.header("content-type").as_deref(),
            Some("application/json"),
            "{method}"
        );
    }

    // Larger bodies, streamed chunked, for each method.
    for (n, method) in [Method::POST, Method::PUT, Method::PATCH, Method::DELETE]
        .into_iter()
        .enumerate()
    {
        let size = 700_000 + n as u64;
        let (status, _, answer) =
            send(&fleet, method.clone(), "/hash/big", Payload::streamed(size)).await;
        assert_eq!(status, StatusCode::OK, "{method}: {answer:?}");
        assert_eq!(
            answer,
            Payload::expected_checksum(size).summary(),
            "{method} of {size} bytes"
        );
    }

    // An empty body announced as such stays empty.
    let response = client
        .send_bytes(
            Method::POST,
            &fleet.replicas[0].url("/empty"),
            &[("content-length", "0")],
            Some(Bytes::new()),
        )
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(response.status, StatusCode::OK, "{response:?}");
    let seen = backend.last_request().expect("the member got the request");
    assert_eq!((seen.method.as_str(), seen.body.count()), ("POST", 0));
    assert_eq!(seen.header("content-length").as_deref(), Some("0"));
}

#[tokio::test]
async fn a_post_for_a_member_refusing_connections_goes_to_another_with_its_body() {
    let mut down = spawn_echo_backend("down").await;
    let up = spawn_echo_backend("up").await;
    down.stop().await;
    let fleet = fleet_for(
        "post-retry",
        &[&down, &up],
        json!({ "retry_window": "30s" }),
    )
    .await;
    // The member's own Host, so that a Host left over from the refused member would show.
    let mut route = bodies::route("/", "c");
    route["preserve_host"] = json!(false);
    fleet
        .cp
        .write(Method::PUT, "/api/v1/routes/r?wait=5s", Some(&route))
        .await;

    // Round robin sends one of the first two requests to `down` (ties go to
    // the first member; the second pick goes to the other one).
    for n in 0..2_u64 {
        let size = 300_000 + n;
        let (status, answered_by, answer) = send(
            &fleet,
            Method::POST,
            &format!("/hash/retry-{n}"),
            Payload::streamed(size),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "POST {n}: {answer:?}");
        assert_eq!(answered_by.as_deref(), Some("up"), "POST {n}");
        assert_eq!(
            answer,
            Payload::expected_checksum(size).summary(),
            "POST {n}: the member got the whole body"
        );
    }
    let seen: Vec<String> = up.requests().iter().map(|r| r.path.clone()).collect();
    assert_eq!(
        seen,
        ["/hash/retry-0", "/hash/retry-1"],
        "each POST reached the member that answers exactly once"
    );
    for seen in up.requests() {
        assert_eq!(seen.header("host"), Some(up.authority()), "{}", seen.path);
        assert_eq!(
            seen.header("x-forwarded-for").as_deref(),
            Some("127.0.0.1"),
            "{}: X-Forwarded-For is appended once, however many members were tried",
            seen.path
        );
        assert_eq!(seen.header("transfer-encoding").as_deref(), Some("chunked"));
    }

    let members = Client::without_pool()
        .get(&fleet.replicas[0].admin_url("/members"))
        .await
        .json();
    let detail = members
        .as_array()
        .and_then(|all| {
            all.iter()
                .find(|m| m["member_id"] == down.authority().as_str())
        })
        .map(|m| m["detail"].to_string())
        .unwrap_or_default();
    assert!(
        detail.contains("retry window"),
        "the refusing member was tried and is left out for its retry window: {members}"
    );
}

#[tokio::test]
async fn a_member_closing_after_every_answer_gets_every_request() {
    let backend = spawn_echo_backend("closer").await;
    let fleet = fleet_for("connection-close", &[&backend], json!({})).await;
    let client = Client::new();

    for n in 0..20 {
        let body = format!("request {n}");
        let response = client
            .send_bytes(
                Method::POST,
                &fleet.replicas[0].url(&format!("/connection-close/{n}")),
                &[],
                Some(Bytes::from(body.clone())),
            )
            .await
            .unwrap_or_else(|e| panic!("POST {n}: {e:#}"));
        assert_eq!(response.status, StatusCode::OK, "POST {n}: {response:?}");
        assert_eq!(response.body, body, "POST {n}");
    }
    assert_eq!(backend.request_count(), 20);
}

#[tokio::test]
async fn head_answers_the_headers_of_get_without_a_body() {
    let backend = spawn_echo_backend("echo").await;
    let fleet = fleet_for("head", &[&backend], json!({})).await;
    let client = Client::without_pool();

    let get = client
        .get(&fleet.replicas[0].url("/download/x?bytes=5000&sized"))
        .await;
    assert_eq!(get.status, StatusCode::OK);
    assert_eq!(get.header("content-length"), Some("5000"));
    assert!(!get.body.is_empty());
    let head = client
        .send(
            Method::HEAD,
            &fleet.replicas[0].url("/download/x?bytes=5000&sized"),
            &[],
            None,
        )
        .await
        .unwrap_or_else(|e| panic!("HEAD: {e:#}"));
    assert_eq!(head.status, StatusCode::OK, "{head:?}");
    assert_eq!(head.header("content-length"), Some("5000"));
    assert_eq!(head.body, "");
    // The connection to the member is still good after a HEAD.
    let again = client.get(&fleet.replicas[0].url("/after-head")).await;
    assert_eq!(again.status, StatusCode::OK, "{again:?}");
}

/// A client that sends `Expect: 100-continue` and waits for `100 Continue`
/// before its body gets it, and the member gets the body.
#[tokio::test]
async fn expect_100_continue_is_answered_and_the_body_follows() {
    let backend = spawn_echo_backend("echo").await;
    let fleet = fleet_for("expect-continue", &[&backend], json!({})).await;
    let body = "the body, sent only after 100 Continue";

    let exchange = async {
        let mut stream = TcpStream::connect(fleet.replicas[0].proxy_addr()).await?;
        let head = format!(
            "POST /expect HTTP/1.1\r\nhost: methods.test\r\ncontent-length: {}\r\n\
             expect: 100-continue\r\nconnection: close\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).await?;
        let mut received = Vec::new();
        let mut buffer = [0u8; 4096];
        while !String::from_utf8_lossy(&received).contains("\r\n\r\n") {
            let n = stream.read(&mut buffer).await?;
            anyhow::ensure!(
                n > 0,
                "closed before any answer: {:?}",
                String::from_utf8_lossy(&received)
            );
            received.extend_from_slice(&buffer[..n]);
        }
        let interim = String::from_utf8_lossy(&received).into_owned();
        stream.write_all(body.as_bytes()).await?;
        stream.read_to_end(&mut received).await?;
        anyhow::Ok((interim, String::from_utf8_lossy(&received).into_owned()))
    };
    let (interim, all) = tokio::time::timeout(REQUEST_TIMEOUT, exchange)
        .await
        .expect("an answer to Expect: 100-continue (the client waits for it)")
        .unwrap_or_else(|e| panic!("{e:#}"));
    assert!(
        interim.starts_with("HTTP/1.1 100"),
        "the first answer is 100 Continue: {interim:?}"
    );
    let last = all.rsplit("HTTP/1.1 ").next().unwrap_or("");
    assert!(last.starts_with("200"), "then the final answer: {all:?}");
    assert!(all.ends_with(body), "which echoes the body: {all:?}");
    let seen = backend.last_request().expect("the member got the request");
    assert_eq!(seen.body_text(), body);
}
