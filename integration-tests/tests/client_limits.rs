//! The client side hardened: the header, keep-alive and body clocks, the
//! limits on heads and URIs, the cap on open connections, and h2c
//! connections that open no stream — each with short flag values, over raw
//! sockets, as hostile clients do it.

use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt as _;
use http::{Request, StatusCode};
use http_body_util::{BodyExt as _, Empty};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use serde_json::json;
use switchyard_integration_tests::raw_client::{
    connect, exchange, header_of, read_until_closed, sample, status_of,
};
use switchyard_integration_tests::{
    DataPlaneOptions, Fleet, client, consistently, eventually, spawn_echo_backend,
};
use tokio::io::AsyncWriteExt as _;
use tokio::task::JoinSet;

async fn serving(
    label: &str,
    env: &[(&str, &str)],
) -> (Fleet, switchyard_integration_tests::EchoBackend) {
    let backend = spawn_echo_backend("echo").await;
    let cluster = json!({ "members": [ { "url": backend.url(), "weight": 1 } ] });
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let fleet = Fleet::serving_with(label, &cluster, move |mut options: DataPlaneOptions| {
        for (key, value) in &env {
            options = options.env(key, value);
        }
        options
    })
    .await;
    (fleet, backend)
}

async fn limit_count(fleet: &Fleet, reason: &str) -> u64 {
    let page = client::get(&fleet.replicas[0].admin_url("/metrics"))
        .await
        .body;
    sample(
        &page,
        &format!("switchyard_client_limits_total{{reason=\"{reason}\"}}"),
    )
}

#[tokio::test]
async fn a_client_trickling_its_headers_is_cut_off() {
    let (fleet, backend) = serving(
        "slowloris",
        &[
            ("SWITCHYARD_CLIENT_HEADER_TIMEOUT", "1s"),
            ("SWITCHYARD_CLIENT_KEEPALIVE_TIMEOUT", "30s"),
        ],
    )
    .await;
    let mut stream = connect(fleet.replicas[0].proxy_addr()).await;
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let (mut reader, mut writer) = stream.into_split();
    // One header line every 100 ms, at most 20 s' worth: far past the clock.
    let trickle = tokio::spawn(async move {
        for n in 0..200 {
            if writer
                .write_all(format!("x-{n}: y\r\n").as_bytes())
                .await
                .is_err()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let mut buffer = [0u8; 1024];
    let closed = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            match tokio::io::AsyncReadExt::read(&mut reader, &mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    trickle.abort();
    assert!(closed.is_ok(), "a trickled head must be cut off");
    assert_eq!(backend.request_count(), 0);
    assert!(limit_count(&fleet, "header_timeout").await >= 1);
}

#[tokio::test]
async fn an_idle_kept_alive_connection_outlives_the_header_clock() {
    // hyper's own header_read_timeout also runs while a connection waits for
    // its next request; the replica's does not.
    let (fleet, _backend) = serving(
        "keepalive-vs-header",
        &[
            ("SWITCHYARD_CLIENT_HEADER_TIMEOUT", "1s"),
            ("SWITCHYARD_CLIENT_KEEPALIVE_TIMEOUT", "60s"),
        ],
    )
    .await;
    let stream = connect(fleet.replicas[0].proxy_addr()).await;
    let (mut sender, conn) = http1::handshake::<_, Empty<Bytes>>(TokioIo::new(stream))
        .await
        .unwrap();
    let driver = tokio::spawn(conn);
    for _ in 0..2 {
        let request = Request::get("/x")
            .header("host", "x")
            .body(Empty::new())
            .unwrap();
        let response = sender
            .send_request(request)
            .await
            .expect("the connection is still open");
        assert_eq!(response.status(), StatusCode::OK);
        response.into_body().collect().await.unwrap();
        consistently(
            "the idle connection stays open past the header clock",
            Duration::from_millis(2500),
            async || {
                if sender.is_closed() {
                    Err("closed")
                } else {
                    Ok(())
                }
            },
        )
        .await;
    }
    driver.abort();
}

#[tokio::test]
async fn idle_connections_are_closed_after_the_keepalive_time() {
    let (fleet, _backend) = serving(
        "keepalive",
        &[
            ("SWITCHYARD_CLIENT_HEADER_TIMEOUT", "30s"),
            ("SWITCHYARD_CLIENT_KEEPALIVE_TIMEOUT", "1s"),
        ],
    )
    .await;
    let proxy = fleet.replicas[0].proxy_addr();
    // HTTP/1.1, after a response.
    let mut stream = connect(proxy).await;
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let seen = read_until_closed(&mut stream, Duration::from_secs(15)).await;
    let seen =
        String::from_utf8_lossy(&seen.expect("closed after the keep-alive time")).into_owned();
    assert_eq!(status_of(&seen), 200, "{seen}");

    // h2c: 1,000 connections that sent only the preface and 1,000 that sent
    // the preface and SETTINGS.
    let mut connections = JoinSet::new();
    for n in 0..2000 {
        connections.spawn(async move {
            let mut stream = connect(proxy).await;
            let mut hello = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
            if n % 2 == 1 {
                hello.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
            }
            stream.write_all(&hello).await.unwrap();
            read_until_closed(&mut stream, Duration::from_secs(30))
                .await
                .is_ok()
        });
    }
    let mut open = 0;
    while let Some(closed) = connections.join_next().await {
        if !closed.unwrap() {
            open += 1;
        }
    }
    assert_eq!(open, 0, "h2c connections with no stream must be closed");
    assert!(limit_count(&fleet, "keepalive_timeout").await >= 2000);
}

#[tokio::test]
async fn a_stalled_request_body_gets_408_and_a_malformed_one_400() {
    let (fleet, backend) = serving("body-clock", &[("SWITCHYARD_CLIENT_BODY_TIMEOUT", "1s")]).await;
    let proxy = fleet.replicas[0].proxy_addr();
    let stalled = exchange(
        proxy,
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc",
    )
    .await;
    assert_eq!(status_of(&stalled), 408, "{stalled}");
    assert_eq!(header_of(&stalled, "connection"), Some("close"));
    let malformed = exchange(
        proxy,
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\nzz\r\n",
    )
    .await;
    assert_eq!(status_of(&malformed), 400, "{malformed}");
    assert!(limit_count(&fleet, "body_timeout").await >= 1);
    assert!(limit_count(&fleet, "body_invalid").await >= 1);
    // The member is not blamed: it stays healthy and serves the next request.
    let members = client::get(&fleet.replicas[0].admin_url("/members"))
        .await
        .json();
    assert_eq!(members[0]["healthy"], json!(true), "{members}");
    assert_eq!(fleet.replicas[0].get("/after").await.status, StatusCode::OK);
    assert_eq!(
        backend
            .requests()
            .iter()
            .filter(|r| r.path == "/after")
            .count(),
        1
    );
}

#[tokio::test]
async fn heads_and_uris_over_the_limits_are_refused() {
    let (fleet, backend) = serving(
        "head-limits",
        &[
            ("SWITCHYARD_MAX_HEADER_SIZE", "8192"),
            ("SWITCHYARD_MAX_HEADERS", "20"),
            ("SWITCHYARD_MAX_URI_LENGTH", "1024"),
        ],
    )
    .await;
    let proxy = fleet.replicas[0].proxy_addr();
    let big = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(9000)
    );
    let answer = exchange(proxy, big.as_bytes()).await;
    assert_eq!(status_of(&answer), 431, "{answer}");
    let many: String = (0..30).map(|n| format!("x-{n}: y\r\n")).collect();
    let many = format!("GET / HTTP/1.1\r\nHost: x\r\n{many}\r\n");
    let answer = exchange(proxy, many.as_bytes()).await;
    assert_eq!(status_of(&answer), 431, "{answer}");
    let long = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(2000));
    let answer = exchange(proxy, long.as_bytes()).await;
    assert_eq!(status_of(&answer), 414, "{answer}");
    // Both Content-Length and Transfer-Encoding (in either order, on a first
    // or a kept-alive request): 400, the connection closed, nothing after it
    // read as a request.
    let both: [&[u8]; 3] = [
        b"POST /both HTTP/1.1\r\nHost: x\r\nContent-Length: 40\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
        b"POST /both HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\ncontent-length: 40\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /first HTTP/1.1\r\nHost: x\r\n\r\n",
    ];
    for request in &both[..2] {
        let answer = exchange(proxy, request).await;
        assert_eq!(status_of(&answer), 400, "{answer}");
        assert_eq!(answer.matches("HTTP/1.1 ").count(), 1, "{answer}");
    }
    let mut stream = connect(proxy).await;
    stream.write_all(both[2]).await.unwrap();
    eventually("the first answer", Duration::from_secs(10), async || {
        if backend.request_count() == 1 {
            Ok(())
        } else {
            Err("not yet")
        }
    })
    .await;
    stream.write_all(both[0]).await.unwrap();
    let answers = read_until_closed(&mut stream, Duration::from_secs(15))
        .await
        .unwrap();
    let answers = String::from_utf8_lossy(&answers).into_owned();
    assert_eq!(answers.matches("HTTP/1.1 200").count(), 1, "{answers}");
    assert_eq!(answers.matches("HTTP/1.1 400").count(), 1, "{answers}");
    assert_eq!(backend.request_count(), 1, "only /first reached the member");
    assert!(limit_count(&fleet, "malformed").await >= 3);
    assert!(limit_count(&fleet, "head_too_large").await >= 2);
    assert!(limit_count(&fleet, "uri_too_long").await >= 1);
}

#[tokio::test]
async fn connections_over_the_cap_are_refused_and_the_cap_frees_up() {
    let (fleet, _backend) = serving(
        "max-connections",
        &[
            ("SWITCHYARD_MAX_CONNECTIONS", "5"),
            ("SWITCHYARD_CLIENT_HEADER_TIMEOUT", "60s"),
        ],
    )
    .await;
    let proxy = fleet.replicas[0].proxy_addr();
    let mut held = Vec::new();
    for _ in 0..5 {
        let mut stream = connect(proxy).await;
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        held.push(stream);
    }
    eventually(
        "the replica holds the five",
        Duration::from_secs(10),
        async || {
            let page = client::get(&fleet.replicas[0].admin_url("/metrics"))
                .await
                .body;
            match sample(&page, "switchyard_client_connections") {
                5 => Ok(()),
                n => Err(format!("{n} open")),
            }
        },
    )
    .await;
    eventually(
        "a connection over the cap is refused",
        Duration::from_secs(10),
        async || {
            let mut extra = connect(proxy).await;
            let seen = read_until_closed(&mut extra, Duration::from_secs(5)).await?;
            let seen = String::from_utf8_lossy(&seen).into_owned();
            if seen.is_empty() || status_of(&seen) == 503 {
                Ok(())
            } else {
                Err(seen)
            }
        },
    )
    .await;
    assert!(limit_count(&fleet, "max_connections").await >= 1);
    drop(held);
    eventually(
        "the cap frees up once connections close",
        Duration::from_secs(10),
        async || {
            let answer = exchange(
                proxy,
                b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            )
            .await;
            if status_of(&answer) == 200 {
                Ok(())
            } else {
                Err(answer)
            }
        },
    )
    .await;
}

#[tokio::test]
async fn a_stalled_h2c_request_body_gets_408_too() {
    let (fleet, _backend) =
        serving("h2-body-clock", &[("SWITCHYARD_CLIENT_BODY_TIMEOUT", "1s")]).await;
    let proxy = fleet.replicas[0].proxy_addr();
    // Three bytes of ten, then nothing.
    let frames = futures_util::stream::iter([Ok::<_, std::convert::Infallible>(
        hyper::body::Frame::data(Bytes::from_static(b"abc")),
    )])
    .chain(futures_util::stream::pending());
    let body = http_body_util::StreamBody::new(Box::pin(frames));
    let mut sender = switchyard_integration_tests::conn::h2_connect(proxy)
        .await
        .unwrap();
    let request = Request::post(format!("http://{proxy}/upload"))
        .header("content-length", "10")
        .body(body)
        .unwrap();
    let response = tokio::time::timeout(Duration::from_secs(15), sender.send_request(request))
        .await
        .expect("an answer before the deadline")
        .unwrap();
    assert_eq!(response.status(), StatusCode::REQUEST_TIMEOUT);
    assert!(limit_count(&fleet, "body_timeout").await >= 1);
}
