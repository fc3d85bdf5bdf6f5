//! Active health checks against members whose check answer never ends: the
//! whole exchange (head and body) must fit in the check's timeout, and only a
//! few KiB of body are read, so such a member is marked down instead of
//! hanging its checker, and the other member takes the traffic.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{Value, json};
use switchyard_integration_tests::{Fleet, eventually, spawn_backend};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

/// How long one endless answer goes on at most (the test is over well before).
const ENDLESS_FOR: Duration = Duration::from_secs(60);

/// How a member answers its `/healthz` (every other path: `200 ok`).
#[derive(Debug, Clone, Copy)]
enum Healthz {
    /// `200`, chunked, a 5-byte chunk every 100 ms, never the last one.
    Trickle,
    /// `503`, chunked, chunks as fast as the socket takes them.
    Flood,
}

/// A member on a bare socket whose `/healthz` answer never ends.
struct EndlessMember {
    addr: SocketAddr,
    server: JoinHandle<()>,
}

impl EndlessMember {
    async fn spawn(healthz: Healthz) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a member can bind 127.0.0.1:0");
        let addr = listener
            .local_addr()
            .expect("a bound listener has an address");
        let server = tokio::spawn(async move {
            let mut connections = JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((stream, _)) = accepted else { continue };
                        connections.spawn(tokio::time::timeout(ENDLESS_FOR, serve(stream, healthz)));
                    }
                    Some(_) = connections.join_next(), if !connections.is_empty() => {}
                }
            }
        });
        EndlessMember { addr, server }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for EndlessMember {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// Reads one request head and answers it; `/healthz` never ends.
async fn serve(mut stream: TcpStream, healthz: Healthz) {
    let mut head = Vec::new();
    let mut buffer = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buffer[..n]),
        }
        if head.len() > 64 * 1024 {
            return;
        }
    }
    if !head.starts_with(b"GET /healthz ") {
        let answer = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\nx-backend: endless\r\n\r\nok";
        let _ = stream.write_all(answer.as_bytes()).await;
        return;
    }
    let (status, pause) = match healthz {
        Healthz::Trickle => ("200 OK", Duration::from_millis(100)),
        Healthz::Flood => ("503 Service Unavailable", Duration::ZERO),
    };
    let head = format!("HTTP/1.1 {status}\r\ntransfer-encoding: chunked\r\n\r\n");
    if stream.write_all(head.as_bytes()).await.is_err() {
        return;
    }
    // Trickling: a few bytes at a time, far from the checker's byte limit.
    let chunk = match healthz {
        Healthz::Trickle => "5\r\nhello\r\n".to_owned(),
        Healthz::Flood => format!("400\r\n{}\r\n", "x".repeat(0x400)),
    };
    // Ends when the checker hangs up (or after ENDLESS_FOR, by the caller's timeout).
    while stream.write_all(chunk.as_bytes()).await.is_ok() {
        if !pause.is_zero() {
            tokio::time::sleep(pause).await;
        }
    }
}

fn cluster(urls: &[String]) -> Value {
    let members: Vec<Value> = urls.iter().map(|url| json!({ "url": url })).collect();
    json!({
        "members": members,
        "health_check": {
            "path": "/healthz",
            "interval": "200ms",
            "timeout": "500ms",
            "healthy_threshold": 1,
            "unhealthy_threshold": 1,
        },
    })
}

async fn marked_down_and_left_out(label: &str, healthz: Healthz) {
    let endless = EndlessMember::spawn(healthz).await;
    let good = spawn_backend("good").await;
    let fleet = Fleet::serving(label, &cluster(&[endless.url(), good.url()])).await;
    let replica = &fleet.replicas[0];
    let endless_id = endless.addr.to_string();

    let entry = eventually(
        "the endless member is marked down",
        Duration::from_secs(20),
        async || {
            let listed = fleet
                .cp
                .dataplane("dp-1")
                .await
                .ok_or("dp-1 is not listed")?;
            let entry = listed["members"]
                .as_array()
                .and_then(|m| m.iter().find(|m| m["member_id"] == endless_id.as_str()))
                .cloned()
                .ok_or_else(|| format!("not reported: {listed}"))?;
            if entry["healthy"] == false {
                Ok(entry)
            } else {
                Err(entry.to_string())
            }
        },
    )
    .await;
    let detail = entry["detail"].as_str().unwrap_or_default();
    assert!(detail.contains("failing health checks"), "{entry}");

    // The good member's own checks are not the clients' requests.
    let served = || {
        good.requests()
            .iter()
            .filter(|r| r.path != "/healthz")
            .count()
    };
    let before = served();
    for _ in 0..6 {
        let response = replica.get("/").await;
        assert_eq!(response.body, "good", "{response:?}");
    }
    assert_eq!(served(), before + 6, "the healthy member got them all");
}

#[tokio::test]
async fn a_member_whose_check_answer_trickles_without_end_is_marked_down() {
    marked_down_and_left_out("healthz-trickle", Healthz::Trickle).await;
}

#[tokio::test]
async fn a_member_whose_failing_check_answer_floods_without_end_is_marked_down() {
    marked_down_and_left_out("healthz-flood", Healthz::Flood).await;
}
