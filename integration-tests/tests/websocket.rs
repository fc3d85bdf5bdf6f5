//! WebSocket and every other `Upgrade`, tunnelled with no configuration: a
//! real WebSocket client and server (`tokio-tungstenite`) on both sides of a
//! real replica, and raw sockets where bytes must be seen to the byte.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{Method, StatusCode};
use serde_json::{Value, json};
use switchyard_integration_tests::{
    DataPlane, Fleet, Misbehaviour, SYNC_DEADLINE, eventually, get, spawn_raw_backend,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Client = WebSocketStream<MaybeTlsStream<TcpStream>>;

const DEADLINE: Duration = Duration::from_secs(20);

/// A WebSocket member: it echoes every text and binary message, answers
/// pings (tungstenite does), and closes when told `"bye"`. It counts the
/// handshakes it accepted, the tunnels that ended (a close or an EOF), and
/// the close frames it received.
struct WsMember {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    ended: Arc<AtomicUsize>,
    closes: Arc<AtomicUsize>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for WsMember {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl WsMember {
    async fn spawn() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("test I/O");
        let addr = listener.local_addr().expect("test I/O");
        let (accepted, ended, closes) = (
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicUsize::new(0)),
        );
        let counters = (accepted.clone(), ended.clone(), closes.clone());
        let server = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((stream, _)) = accepted else { continue };
                        let counters = counters.clone();
                        connections.spawn(async move {
                            let Ok(ws) = tokio_tungstenite::accept_async(stream).await else {
                                return;
                            };
                            counters.0.fetch_add(1, Ordering::SeqCst);
                            echo(ws, &counters.2).await;
                            counters.1.fetch_add(1, Ordering::SeqCst);
                        });
                    }
                    Some(_) = connections.join_next(), if !connections.is_empty() => {}
                }
            }
        });
        WsMember {
            addr,
            accepted,
            ended,
            closes,
            server,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    fn ended(&self) -> usize {
        self.ended.load(Ordering::SeqCst)
    }
}

async fn echo(mut ws: WebSocketStream<TcpStream>, closes: &AtomicUsize) {
    while let Some(Ok(message)) = ws.next().await {
        match message {
            Message::Text(text) if text.as_str() == "bye" => {
                drop(ws.close(None).await);
                // Drain until the client's close answer or its EOF.
                while let Some(Ok(_)) = ws.next().await {}
                return;
            }
            Message::Text(_) | Message::Binary(_) => {
                if ws.send(message).await.is_err() {
                    return;
                }
            }
            Message::Close(_) => {
                closes.fetch_add(1, Ordering::SeqCst);
            }
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
        }
    }
}

fn cluster(urls: &[String], idle_timeout: Option<&str>) -> Value {
    let members: Vec<Value> = urls.iter().map(|url| json!({ "url": url })).collect();
    let mut cluster = json!({ "members": members });
    if let Some(idle) = idle_timeout {
        cluster["idle_timeout"] = json!(idle);
    }
    cluster
}

async fn connect(dp: &DataPlane, path: &str) -> Client {
    let url = format!("ws://{}{path}", dp.proxy_addr());
    let (ws, response) = tokio_tungstenite::connect_async(url)
        .await
        .expect("test I/O");
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    ws
}

/// The next data message, skipping pongs.
async fn next_data(ws: &mut Client) -> Message {
    loop {
        let message = tokio::time::timeout(DEADLINE, ws.next())
            .await
            .expect("a message in time")
            .expect("the tunnel is open")
            .expect("a valid frame");
        if !matches!(message, Message::Pong(_)) {
            return message;
        }
    }
}

/// A counter or gauge on the replica's admin `/metrics` (0 if absent).
async fn metric(dp: &DataPlane, name: &str) -> u64 {
    let response = get(&dp.admin_url("/metrics")).await;
    response
        .body
        .lines()
        .filter_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .find_map(|value| value.trim().parse::<u64>().ok())
        .unwrap_or(0)
}

async fn wait_tunnels(dp: &DataPlane, open: u64) {
    eventually("tunnels open", SYNC_DEADLINE, async || {
        match metric(dp, "switchyard_tunnels_open").await {
            n if n == open => Ok(()),
            n => Err(format!("{n} open, want {open}")),
        }
    })
    .await;
}

#[tokio::test]
async fn text_binary_ping_and_the_close_handshake_go_through() {
    let member = WsMember::spawn().await;
    let fleet = Fleet::serving("ws-echo", &cluster(&[member.url()], None)).await;
    let dp = &fleet.replicas[0];
    let mut ws = connect(dp, "/chat").await;
    ws.send(Message::text("hello")).await.unwrap();
    assert_eq!(next_data(&mut ws).await, Message::text("hello"));
    ws.send(Message::binary(vec![0u8, 1, 2, 255]))
        .await
        .unwrap();
    assert_eq!(
        next_data(&mut ws).await,
        Message::binary(vec![0u8, 1, 2, 255])
    );
    ws.send(Message::Ping(Bytes::from_static(b"are you there")))
        .await
        .unwrap();
    let pong = tokio::time::timeout(DEADLINE, ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(pong, Message::Pong(Bytes::from_static(b"are you there")));
    wait_tunnels(dp, 1).await;
    ws.close(None).await.unwrap();
    // The member's close answer comes back, then the end of the stream.
    let mut saw_close = false;
    while let Some(Ok(message)) = tokio::time::timeout(DEADLINE, ws.next()).await.unwrap() {
        saw_close |= matches!(message, Message::Close(_));
    }
    assert!(saw_close, "the member's close frame reached the client");
    assert_eq!(member.closes.load(Ordering::SeqCst), 1);
    assert_eq!(member.accepted(), 1, "one handshake for one client");
    // The member closed its side; the tunnel ends when the client closes its own.
    drop(ws);
    wait_tunnels(dp, 0).await;
    assert!(metric(dp, "switchyard_tunnel_bytes_total{direction=\"to_member\"}").await > 0);
    assert!(metric(dp, "switchyard_tunnel_bytes_total{direction=\"to_client\"}").await > 0);
}

#[tokio::test]
async fn a_10_mb_message_is_echoed_whole() {
    let member = WsMember::spawn().await;
    let fleet = Fleet::serving("ws-large", &cluster(&[member.url()], None)).await;
    let mut ws = connect(&fleet.replicas[0], "/").await;
    let payload: Vec<u8> = (0..10 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    ws.send(Message::binary(payload.clone())).await.unwrap();
    match next_data(&mut ws).await {
        Message::Binary(data) => assert!(data[..] == payload[..], "the echo differs"),
        other => panic!("not a binary message: {other:?}"),
    }
}

#[tokio::test]
async fn two_hundred_tunnels_run_at_once() {
    let member = WsMember::spawn().await;
    let fleet = Fleet::serving("ws-many", &cluster(&[member.url()], None)).await;
    let dp = &fleet.replicas[0];
    let mut clients = Vec::with_capacity(200);
    for _ in 0..200 {
        clients.push(connect(dp, "/").await);
    }
    wait_tunnels(dp, 200).await;
    let echoed =
        futures_util::future::join_all(clients.iter_mut().enumerate().map(async |(i, ws)| {
            let text = format!("client {i}");
            ws.send(Message::text(text.clone())).await.unwrap();
            next_data(ws).await == Message::text(text)
        }))
        .await;
    assert!(echoed.iter().all(|ok| *ok), "every client got its own echo");
    assert_eq!(member.accepted(), 200);
    for mut ws in clients {
        ws.close(None).await.unwrap();
    }
    wait_tunnels(dp, 0).await;
    eventually(
        "the member saw every tunnel end",
        DEADLINE,
        async || match member.ended() {
            200 => Ok(()),
            n => Err(format!("{n} ended")),
        },
    )
    .await;
}

#[tokio::test]
async fn a_member_that_closes_mid_tunnel_is_seen_by_the_client() {
    let member = WsMember::spawn().await;
    let fleet = Fleet::serving("ws-member-close", &cluster(&[member.url()], None)).await;
    let dp = &fleet.replicas[0];
    let mut ws = connect(dp, "/").await;
    ws.send(Message::text("bye")).await.unwrap();
    assert!(matches!(next_data(&mut ws).await, Message::Close(_)));
    // The client answers the close; the stream then ends.
    while let Some(Ok(_)) = tokio::time::timeout(DEADLINE, ws.next()).await.unwrap() {}
    assert_eq!(member.ended(), 1);
    drop(ws);
    wait_tunnels(dp, 0).await;
}

#[tokio::test]
async fn a_client_that_vanishes_ends_the_tunnel_at_the_member() {
    let member = WsMember::spawn().await;
    let fleet = Fleet::serving("ws-client-gone", &cluster(&[member.url()], None)).await;
    let dp = &fleet.replicas[0];
    let mut ws = connect(dp, "/").await;
    ws.send(Message::text("still here")).await.unwrap();
    next_data(&mut ws).await;
    wait_tunnels(dp, 1).await;
    drop(ws);
    eventually("the member saw the end", DEADLINE, async || {
        match member.ended() {
            1 => Ok(()),
            n => Err(format!("{n} ended")),
        }
    })
    .await;
    wait_tunnels(dp, 0).await;
}

#[tokio::test]
async fn a_silent_tunnel_is_closed_after_the_idle_timeout() {
    let member = WsMember::spawn().await;
    let fleet = Fleet::serving("ws-idle", &cluster(&[member.url()], Some("300ms"))).await;
    let dp = &fleet.replicas[0];
    let mut ws = connect(dp, "/").await;
    ws.send(Message::text("once")).await.unwrap();
    assert_eq!(next_data(&mut ws).await, Message::text("once"));
    // Nothing more is sent: the replica closes the tunnel, both ways.
    let end = tokio::time::timeout(DEADLINE, async {
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
    assert!(end.is_ok(), "the idle tunnel was closed");
    eventually("the member saw the end", DEADLINE, async || {
        match member.ended() {
            1 => Ok(()),
            n => Err(format!("{n} ended")),
        }
    })
    .await;
    wait_tunnels(dp, 0).await;
}

#[tokio::test]
async fn a_tunnel_outlives_a_swap_that_removes_its_member() {
    let (old, new) = (WsMember::spawn().await, WsMember::spawn().await);
    let fleet = Fleet::serving("ws-swap", &cluster(&[old.url()], None)).await;
    let dp = &fleet.replicas[0];
    let mut ws = connect(dp, "/").await;
    ws.send(Message::text("before")).await.unwrap();
    assert_eq!(next_data(&mut ws).await, Message::text("before"));
    fleet
        .cp
        .write(
            Method::PUT,
            "/api/v1/clusters/c?wait=5s",
            Some(&cluster(&[new.url()], None)),
        )
        .await;
    ws.send(Message::text("after")).await.unwrap();
    assert_eq!(next_data(&mut ws).await, Message::text("after"));
    let mut second = connect(dp, "/").await;
    second.send(Message::text("new")).await.unwrap();
    assert_eq!(next_data(&mut second).await, Message::text("new"));
    assert_eq!((old.accepted(), new.accepted()), (1, 1));
    wait_tunnels(dp, 2).await;
}

#[tokio::test]
async fn an_h2c_extended_connect_is_tunnelled_as_an_http1_upgrade() {
    use http_body_util::Empty;
    let member = WsMember::spawn().await;
    let fleet = Fleet::serving("ws-h2", &cluster(&[member.url()], None)).await;
    let dp = &fleet.replicas[0];
    let mut sender =
        switchyard_integration_tests::conn::h2_connect::<Empty<Bytes>>(dp.proxy_addr())
            .await
            .unwrap();
    let mut request = http::Request::builder()
        .method(Method::CONNECT)
        .uri(format!("http://{}/chat", dp.proxy_addr()))
        .header("sec-websocket-version", "13")
        .body(Empty::new())
        .unwrap();
    request
        .extensions_mut()
        .insert(hyper::ext::Protocol::from_static("websocket"));
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let upgraded = hyper::upgrade::on(response).await.unwrap();
    let mut ws = WebSocketStream::from_raw_socket(
        hyper_util::rt::TokioIo::new(upgraded),
        Role::Client,
        None,
    )
    .await;
    ws.send(Message::text("over h2")).await.unwrap();
    let echoed = tokio::time::timeout(DEADLINE, ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(echoed, Message::text("over h2"));
    assert_eq!(member.accepted(), 1);
    ws.close(None).await.unwrap();
    while let Some(Ok(_)) = tokio::time::timeout(DEADLINE, ws.next()).await.unwrap() {}
    drop(ws);
    wait_tunnels(dp, 0).await;
}

/// A member of another protocol on a bare socket: it answers 101 and, in the
/// same write, its first bytes; then it echoes what it reads until it reads
/// `"HALF"`: then it sends `"bye"`, shuts its side down, and goes on reading
/// to the client's end. It hands out the head and every byte it read after it.
async fn spawn_raw_upgrader() -> (
    SocketAddr,
    tokio::sync::oneshot::Receiver<(String, Vec<u8>)>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("test I/O");
    let addr = listener.local_addr().expect("test I/O");
    let (seen_tx, seen_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.expect("test I/O");
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        let end = loop {
            let n = stream.read(&mut buf).await.expect("test I/O");
            assert!(n > 0, "the request head came whole");
            seen.extend_from_slice(&buf[..n]);
            if let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                break end + 4;
            }
        };
        let head = String::from_utf8_lossy(&seen[..end]).into_owned();
        let mut after: Vec<u8> = seen[end..].to_vec();
        stream
            .write_all(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo/1\r\nConnection: Upgrade\r\n\r\nFIRST")
            .await
            .expect("test I/O");
        stream.write_all(&after).await.expect("test I/O");
        let mut half_closed = false;
        loop {
            let n = stream.read(&mut buf).await.expect("test I/O");
            if n == 0 {
                break;
            }
            after.extend_from_slice(&buf[..n]);
            if half_closed {
                continue;
            }
            if after.ends_with(b"HALF") {
                stream.write_all(b"bye").await.expect("test I/O");
                stream.shutdown().await.expect("test I/O");
                half_closed = true;
            } else {
                stream.write_all(&buf[..n]).await.expect("test I/O");
            }
        }
        drop(seen_tx.send((head, after)));
    });
    (addr, seen_rx)
}

/// Reads from `stream` until what was read ends with `want`.
async fn read_until(stream: &mut TcpStream, want: &[u8]) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    tokio::time::timeout(DEADLINE, async {
        while !got.ends_with(want) {
            let n = stream.read(&mut buf).await.expect("test I/O");
            assert!(
                n > 0,
                "tunnel ended early: {:?}",
                String::from_utf8_lossy(&got)
            );
            got.extend_from_slice(&buf[..n]);
        }
    })
    .await
    .expect("the bytes in time");
    got
}

#[tokio::test]
async fn a_generic_upgrade_loses_no_byte_and_respects_half_close() {
    let (addr, seen) = spawn_raw_upgrader().await;
    let fleet = Fleet::serving("upgrade-raw", &cluster(&[format!("http://{addr}")], None)).await;
    let dp = &fleet.replicas[0];
    let mut client = TcpStream::connect(dp.proxy_addr()).await.unwrap();
    // The first tunnel bytes ride in the same write as the request head.
    client
        .write_all(b"GET /x HTTP/1.1\r\nHost: example.test\r\nConnection: Upgrade\r\nUpgrade: echo/1\r\n\r\nEARLY")
        .await
        .unwrap();
    // The member's first bytes, and then the echo of the client's.
    let got = read_until(&mut client, b"FIRSTEARLY").await;
    let text = String::from_utf8_lossy(&got).to_ascii_lowercase();
    assert!(text.starts_with("http/1.1 101"), "{text}");
    assert!(text.contains("upgrade: echo/1"), "{text}");
    assert!(text.contains("connection: upgrade"), "{text}");
    client.write_all(b"LATER").await.unwrap();
    assert_eq!(read_until(&mut client, b"LATER").await, b"LATER");
    // The member shuts its side down: the client sees the end of the bytes ...
    client.write_all(b"HALF").await.unwrap();
    let mut rest = Vec::new();
    tokio::time::timeout(DEADLINE, client.read_to_end(&mut rest))
        .await
        .expect("the member's half-close reached the client")
        .unwrap();
    assert_eq!(rest, b"bye");
    // ... and can still send; then its own half-close reaches the member.
    client.write_all(b"AFTER").await.unwrap();
    client.shutdown().await.unwrap();
    let (head, after) = tokio::time::timeout(DEADLINE, seen).await.unwrap().unwrap();
    let head = head.to_ascii_lowercase();
    assert!(head.contains("upgrade: echo/1"), "{head}");
    assert!(head.contains("connection: upgrade"), "{head}");
    assert_eq!(
        String::from_utf8_lossy(&after),
        "EARLYLATERHALFAFTER",
        "the member got every client byte once"
    );
}

#[tokio::test]
async fn a_member_that_declines_an_upgrade_is_answered_as_usual() {
    for (answer, status, body) in [
        (
            "HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nplain",
            StatusCode::OK,
            "plain",
        ),
        (
            "HTTP/1.1 400 Bad Request\r\ncontent-length: 2\r\n\r\nno",
            StatusCode::BAD_REQUEST,
            "no",
        ),
    ] {
        let backend = spawn_raw_backend(Misbehaviour::Answer(answer)).await;
        let fleet = Fleet::serving("upgrade-declined", &cluster(&[backend.url()], None)).await;
        let response = switchyard_integration_tests::Client::new()
            .get_with(
                &fleet.replicas[0].url("/ws"),
                &[("connection", "upgrade"), ("upgrade", "websocket")],
            )
            .await;
        assert_eq!(response.status, status);
        assert_eq!(response.body, body);
        assert_eq!(backend.heads_read(), 1);
    }
}

#[tokio::test]
async fn a_101_to_a_request_that_did_not_ask_is_a_502() {
    let backend = spawn_raw_backend(Misbehaviour::Answer(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n",
    ))
    .await;
    let fleet = Fleet::serving("upgrade-unasked", &cluster(&[backend.url()], None)).await;
    let response = fleet.replicas[0].get("/").await;
    assert_eq!(response.status, StatusCode::BAD_GATEWAY);
    assert_eq!(backend.heads_read(), 1);
}

#[tokio::test]
async fn at_shutdown_a_tunnel_gets_the_grace_period_then_is_closed() {
    let member = WsMember::spawn().await;
    let mut fleet = Fleet::serving_with("ws-shutdown", &cluster(&[member.url()], None), |o| {
        o.env("SWITCHYARD_SHUTDOWN_GRACE", "3s")
    })
    .await;
    let dp = &mut fleet.replicas[0];
    let mut ws = connect(dp, "/").await;
    ws.send(Message::text("before")).await.unwrap();
    assert_eq!(next_data(&mut ws).await, Message::text("before"));
    assert!(dp.terminate(), "SIGTERM sent");
    // Draining: the tunnel still carries messages ...
    ws.send(Message::text("draining")).await.unwrap();
    assert_eq!(next_data(&mut ws).await, Message::text("draining"));
    // ... until the grace period is over: then it is closed and the replica exits.
    let end = tokio::time::timeout(DEADLINE, async {
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
    assert!(end.is_ok(), "the tunnel was closed after the grace period");
    eventually("the member saw the end", DEADLINE, async || {
        match member.ended() {
            1 => Ok(()),
            n => Err(format!("{n} ended")),
        }
    })
    .await;
    eventually("the replica exited", DEADLINE, async || {
        if dp.is_running() {
            Err("still running")
        } else {
            Ok(())
        }
    })
    .await;
}

/// A keep-alive member on a bare socket: it answers every request head with
/// `200 ok` on the same connection, and counts the connections it accepted.
async fn spawn_keep_alive_member() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("test I/O");
    let addr = listener.local_addr().expect("test I/O");
    let connections = Arc::new(AtomicUsize::new(0));
    let counter = connections.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let (mut seen, mut buf) = (Vec::new(), [0u8; 4096]);
                loop {
                    while let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                        seen.drain(..end + 4);
                        let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                        if stream.write_all(answer).await.is_err() {
                            return;
                        }
                    }
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                }
            });
        }
    });
    (addr, connections)
}

#[tokio::test]
async fn a_connection_that_carried_an_upgrade_request_is_never_reused() {
    let (addr, connections) = spawn_keep_alive_member().await;
    let fleet = Fleet::serving_with(
        "upgrade-no-reuse",
        &cluster(&[format!("http://{addr}")], None),
        |o| o.env("SWITCHYARD_WORKERS", "1"),
    )
    .await;
    let dp = &fleet.replicas[0];
    let upgrade = [("connection", "upgrade"), ("upgrade", "websocket")];
    for headers in [&upgrade[..], &[], &[]] {
        let response = dp.get_with("/", headers).await;
        assert_eq!(
            (response.status, response.body.as_str()),
            (StatusCode::OK, "ok")
        );
    }
    // The declined upgrade's connection is dropped; the next two share one.
    assert_eq!(connections.load(Ordering::SeqCst), 2);
}
