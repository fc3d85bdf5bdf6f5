//! Connections to members are kept alive and reused, whatever framing the
//! member's answers use, and given up when the member asks to close.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use http::{Method, StatusCode};
use serde_json::json;
use switchyard_integration_tests::{Client, Fleet};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A member on a bare socket that answers every request on a connection:
/// `/n1` with `content-length`, `/n2` chunked with a trailer, `/n3` empty
/// (204), and so on in turn; it
/// counts the connections it accepted. With `close_every`, every answer of
/// that many says `connection: close` and the member closes after it.
struct CountingMember {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for CountingMember {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn spawn_member(close_every: Option<usize>) -> CountingMember {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("bound address");
    let connections = Arc::new(AtomicUsize::new(0));
    let counter = connections.clone();
    let server = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(serve(stream, close_every));
        }
    });
    CountingMember {
        addr,
        connections,
        server,
    }
}

async fn serve(mut stream: TcpStream, close_every: Option<usize>) {
    let (mut seen, mut buf, mut answered) = (Vec::new(), [0u8; 4096], 0usize);
    loop {
        while let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&seen[..end]).into_owned();
            seen.drain(..end + 4);
            let path = head.split(' ').nth(1).unwrap_or("/").to_owned();
            answered += 1;
            let close = close_every.is_some_and(|n| answered % n == 0);
            let connection = if close { "connection: close\r\n" } else { "" };
            // The kind of answer follows the request's number, `/n<number>`.
            let number: usize = path.trim_start_matches("/n").parse().unwrap_or(0);
            let answer = match number % 3 {
                1 => format!(
                    "HTTP/1.1 200 OK\r\n{connection}content-length: {}\r\n\r\n{path}",
                    path.len()
                ),
                2 => format!(
                    "HTTP/1.1 200 OK\r\n{connection}transfer-encoding: chunked\r\n\r\n\
                     {:x}\r\n{path}\r\n0\r\nx-trailer: t\r\n\r\n",
                    path.len()
                ),
                _ => format!("HTTP/1.1 204 No Content\r\n{connection}\r\n"),
            };
            if stream.write_all(answer.as_bytes()).await.is_err() || close {
                return;
            }
        }
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
        }
    }
}

/// One replica with one worker (one pool per member, whichever client
/// connection a request comes on) in front of `member`.
async fn fleet_for(label: &str, member: &CountingMember) -> Fleet {
    let cluster = json!({ "members": [ { "url": format!("http://{}", member.addr) } ] });
    Fleet::serving_with(label, &cluster, |options| {
        options.env("SWITCHYARD_WORKERS", "1")
    })
    .await
}

/// Sends `count` GETs one after the other and checks every answer.
async fn get_in_turn(fleet: &Fleet, count: usize) {
    let client = Client::new();
    for n in 1..=count {
        let path = format!("/n{n}");
        let response = client
            .send(Method::GET, &fleet.replicas[0].url(&path), &[], None)
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e:#}"));
        match n % 3 {
            0 => assert_eq!(
                (response.status, response.body.as_str()),
                (StatusCode::NO_CONTENT, ""),
                "GET {path}"
            ),
            _ => assert_eq!(
                (response.status, response.body.as_str()),
                (StatusCode::OK, path.as_str()),
                "GET {path}"
            ),
        }
    }
}

#[tokio::test]
async fn one_member_connection_carries_every_request_in_turn() {
    let member = spawn_member(None).await;
    let fleet = fleet_for("reuse", &member).await;
    get_in_turn(&fleet, 30).await;
    assert_eq!(
        member.connections.load(Ordering::SeqCst),
        1,
        "30 requests in turn, with length, chunked and empty answers, need one connection"
    );
}

#[tokio::test]
async fn a_member_asking_to_close_gets_a_new_connection_each_time() {
    let member = spawn_member(Some(5)).await;
    let fleet = fleet_for("reuse-close", &member).await;
    get_in_turn(&fleet, 30).await;
    assert_eq!(
        member.connections.load(Ordering::SeqCst),
        6,
        "every fifth answer closes its connection: 30 requests take 6 connections"
    );
}
