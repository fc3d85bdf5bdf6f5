//! `--access-log`: one line per request, written when its response ends (or
//! the client went away), readable or JSON, naming the route, cluster and
//! member and, for what the proxy answered itself, why.

use std::path::Path;
use std::time::Duration;

use http::{Method, StatusCode};
use serde_json::{Value, json};
use switchyard_integration_tests::scripted::{Step, spawn_scripted};
use switchyard_integration_tests::{Fleet, TestDir, bodies, eventually, raw_client, spawn_backend};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// The log's lines once there are at least `count` of them.
async fn lines(path: &Path, count: usize) -> Vec<String> {
    eventually(
        &format!("{count} lines in the access log"),
        Duration::from_secs(5),
        async || {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            let lines: Vec<String> = text.lines().map(str::to_owned).collect();
            if lines.len() >= count {
                Ok(lines)
            } else {
                Err(format!("{} lines: {text:?}", lines.len()))
            }
        },
    )
    .await
}

/// A replica logging to a file of `dir`, with `format`.
async fn fleet(label: &str, format: &str) -> (Fleet, TestDir, std::path::PathBuf) {
    let dir = TestDir::new(&format!("{label}-log"));
    let path = dir.join("access.log");
    let log = path.to_string_lossy().into_owned();
    let format = format.to_owned();
    let fleet = Fleet::start_with(label, 1, move |options| {
        options
            .env("SWITCHYARD_ACCESS_LOG", &log)
            .env("SWITCHYARD_ACCESS_LOG_FORMAT", &format)
    })
    .await;
    (fleet, dir, path)
}

#[tokio::test]
async fn a_text_line_per_request_with_route_cluster_member_and_sizes() {
    let (fleet, _dir, path) = fleet("access-text", "text").await;
    let (cp, replica) = (&fleet.cp, &fleet.replicas[0]);
    let backend = spawn_backend("Hello world!").await;
    cp.write(
        Method::PUT,
        "/api/v1/clusters/web",
        Some(&json!({ "members": [{ "id": "m1", "url": backend.url() }] })),
    )
    .await;
    cp.write(
        Method::PUT,
        "/api/v1/routes/app?wait=5s",
        Some(&bodies::route("/app/", "web")),
    )
    .await;
    assert_eq!(replica.get("/app/x?q=1").await.status, StatusCode::OK);
    assert_eq!(backend.request_count(), 1);
    // A host that tries to forge a field (refused: 400, and logged).
    let forged = raw_client::exchange(
        replica.proxy_addr(),
        b"GET /nowhere/%22%0a HTTP/1.1\r\nHost: evil\" status=200\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_ne!(raw_client::status_of(&forged), 200, "{forged}");

    let lines = lines(&path, 2).await;
    assert_eq!(lines.len(), 2, "{lines:#?}");
    let ok = &lines[0];
    assert!(ok.contains(" 127.0.0.1:"), "{ok}");
    assert!(ok.contains(" \"GET /app/x?q=1\" "), "{ok}");
    assert!(ok.contains(" status=200 in=0 out=12 "), "{ok}");
    assert!(
        ok.contains(" route=\"app\" cluster=\"web\" member=\"m1\" retries=0 error=- complete=true"),
        "{ok}"
    );
    let refused = &lines[1];
    // The forged field stays inside the quoted host, its quote escaped.
    assert!(
        refused.contains(r#" host="evil\" status=200" status=400 "#),
        "{refused}"
    );
}

#[tokio::test]
async fn json_lines_name_the_dead_member_and_the_reason() {
    let (fleet, _dir, path) = fleet("access-json", "json").await;
    let (cp, replica) = (&fleet.cp, &fleet.replicas[0]);
    let closed_port = switchyard_integration_tests::closed_port();
    cp.write(
        Method::PUT,
        "/api/v1/clusters/dead",
        Some(&json!({ "members": [{ "id": "gone", "url": format!("http://{closed_port}") }] })),
    )
    .await;
    cp.write(
        Method::PUT,
        "/api/v1/routes/d?wait=5s",
        Some(&bodies::route("/d/", "dead")),
    )
    .await;
    assert_eq!(
        replica.get("/d/here").await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(replica.get("/none").await.status, StatusCode::NOT_FOUND);

    let lines = lines(&path, 2).await;
    let lines: Vec<Value> = lines
        .iter()
        .map(|line| serde_json::from_str(line).expect("each line is JSON"))
        .collect();
    let dead = &lines[0];
    assert_eq!(dead["method"], "GET");
    assert_eq!(dead["path"], "/d/here");
    assert_eq!(dead["status"], 503);
    assert_eq!(dead["route"], "d");
    assert_eq!(dead["cluster"], "dead");
    assert_eq!(dead["member"], "gone");
    assert_eq!(dead["error"], "unreachable");
    assert!(
        dead["detail"].as_str().is_some_and(|d| d.contains("gone")),
        "{dead}"
    );
    assert!(
        dead["client"]
            .as_str()
            .is_some_and(|c| c.starts_with("127.0.0.1:"))
    );
    assert!(dead["duration_s"].as_f64().is_some());
    let none = &lines[1];
    assert_eq!(none["status"], 404);
    assert_eq!(none["error"], "no_route");
    assert_eq!(none["route"], "");
}

#[tokio::test]
async fn a_client_gone_mid_body_still_gets_a_line() {
    let (fleet, _dir, path) = fleet("access-gone", "json").await;
    let (cp, replica) = (&fleet.cp, &fleet.replicas[0]);
    let size = 32 * 1024 * 1024;
    let big = spawn_scripted(move |_| {
        Step::Answer(format!(
            "HTTP/1.1 200 OK\r\ncontent-length: {size}\r\n\r\n{}",
            "x".repeat(size)
        ))
    })
    .await;
    cp.write(
        Method::PUT,
        "/api/v1/clusters/big",
        Some(&json!({ "members": [{ "id": "big", "url": big.url() }] })),
    )
    .await;
    cp.write(
        Method::PUT,
        "/api/v1/routes/b?wait=5s",
        Some(&bodies::route("/b/", "big")),
    )
    .await;
    let mut stream = raw_client::connect(replica.proxy_addr()).await;
    stream
        .write_all(b"GET /b/large HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut head = vec![0u8; 64 * 1024];
    let n = stream.read(&mut head).await.unwrap();
    assert!(
        head[..n].starts_with(b"HTTP/1.1 200"),
        "{:?}",
        &head[..n.min(64)]
    );
    // Gone with most of the body unread.
    drop(stream);

    let lines = lines(&path, 1).await;
    let line: Value = serde_json::from_str(&lines[0]).unwrap();
    assert_eq!(line["status"], 200);
    assert_eq!(line["member"], "big");
    assert_eq!(line["complete"], false, "{line}");
    let sent = line["bytes_out"].as_u64().unwrap();
    assert!(sent < size as u64, "{line}");
    assert_eq!(big.count("GET"), 1);
}
