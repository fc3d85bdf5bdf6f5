//! h2c limits as flags, over raw frames: the SETTINGS the replica announces,
//! a rapid-reset flood (CVE-2023-44487; with `--h2-max-pending-resets` set
//! very high this test fails) and a CONTINUATION flood (h2 caps the frames of
//! one header block by the header list size) both end in GOAWAY or a closed
//! connection, never one that keeps eating streams or header bytes.

use std::time::Duration;

use serde_json::json;
use switchyard_integration_tests::raw_client::connect;
use switchyard_integration_tests::{DataPlaneOptions, Fleet, spawn_echo_backend};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const SETTINGS: u8 = 4;
const HEADERS: u8 = 1;
const RST_STREAM: u8 = 3;
const GOAWAY: u8 = 7;
const CONTINUATION: u8 = 9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
/// HPACK: `:method GET`, `:scheme http`, `:path /`, `:authority x` (not indexed).
const GET_BLOCK: &[u8] = &[0x82, 0x86, 0x84, 0x01, 0x01, b'x'];

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let length = u32::try_from(payload.len())
        .expect("a small frame")
        .to_be_bytes();
    let mut frame = vec![length[1], length[2], length[3], kind, flags];
    frame.extend_from_slice(&stream.to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

/// One frame read: type, flags, stream, payload.
type Frame = (u8, u8, u32, Vec<u8>);

/// Reads frames until one of type `until` (returned), the end of the
/// connection (`Ok(None)`), or `deadline` (`Err` with the types seen).
async fn read_frames(
    stream: &mut TcpStream,
    until: u8,
    deadline: Duration,
) -> Result<Option<Frame>, String> {
    let mut seen = Vec::new();
    let reading = async {
        loop {
            let mut head = [0u8; 9];
            if stream.read_exact(&mut head).await.is_err() {
                return None;
            }
            let length = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
            let mut payload = vec![0u8; length];
            if stream.read_exact(&mut payload).await.is_err() {
                return None;
            }
            let id = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
            seen.push(head[3]);
            if head[3] == until {
                return Some((head[3], head[4], id, payload));
            }
        }
    };
    tokio::time::timeout(deadline, reading)
        .await
        .map_err(|_| format!("frame types seen: {seen:?}"))
}

async fn replica(label: &str, env: &'static [(&'static str, &'static str)]) -> Fleet {
    let backend = spawn_echo_backend("echo").await;
    let cluster = json!({ "members": [ { "url": backend.url(), "weight": 1 } ] });
    // The backend is not needed past the set-up: no request gets that far.
    drop(backend);
    Fleet::serving_with(label, &cluster, move |mut options: DataPlaneOptions| {
        for (key, value) in env {
            options = options.env(key, value);
        }
        options
    })
    .await
}

async fn h2c(fleet: &Fleet) -> TcpStream {
    let mut stream = connect(fleet.replicas[0].proxy_addr()).await;
    let mut hello = PREFACE.to_vec();
    hello.extend(frame(SETTINGS, 0, 0, &[]));
    stream.write_all(&hello).await.expect("the preface is sent");
    stream
}

#[tokio::test]
async fn the_replica_announces_its_stream_and_header_list_limits() {
    let fleet = replica(
        "h2-settings",
        &[
            ("SWITCHYARD_H2_MAX_CONCURRENT_STREAMS", "7"),
            ("SWITCHYARD_H2_MAX_HEADER_LIST_SIZE", "4096"),
        ],
    )
    .await;
    let mut stream = h2c(&fleet).await;
    let settings = read_frames(&mut stream, SETTINGS, Duration::from_secs(10))
        .await
        .unwrap()
        .expect("the server's SETTINGS");
    let values: Vec<(u16, u32)> = settings
        .3
        .chunks_exact(6)
        .map(|c| {
            (
                u16::from_be_bytes([c[0], c[1]]),
                u32::from_be_bytes([c[2], c[3], c[4], c[5]]),
            )
        })
        .collect();
    assert!(
        values.contains(&(0x3, 7)),
        "MAX_CONCURRENT_STREAMS in {values:?}"
    );
    assert!(
        values.contains(&(0x6, 4096)),
        "MAX_HEADER_LIST_SIZE in {values:?}"
    );
}

#[tokio::test]
async fn a_rapid_reset_flood_gets_goaway() {
    let fleet = replica(
        "h2-rapid-reset",
        &[("SWITCHYARD_H2_MAX_PENDING_RESETS", "20")],
    )
    .await;
    let mut stream = h2c(&fleet).await;
    let mut flood = Vec::new();
    for n in 0..500u32 {
        let id = 2 * n + 1;
        flood.extend(frame(HEADERS, END_STREAM | END_HEADERS, id, GET_BLOCK));
        flood.extend(frame(RST_STREAM, 0, id, &8u32.to_be_bytes()));
    }
    // The server may close before it read everything.
    let _ = stream.write_all(&flood).await;
    let ended = read_frames(&mut stream, GOAWAY, Duration::from_secs(15)).await;
    assert!(ended.is_ok(), "the connection must end: {ended:?}");
}

#[tokio::test]
async fn a_continuation_flood_is_cut_at_the_header_list_size() {
    let fleet = replica(
        "h2-continuation",
        &[("SWITCHYARD_H2_MAX_HEADER_LIST_SIZE", "4096")],
    )
    .await;
    let mut stream = h2c(&fleet).await;
    let mut field = vec![0x00, 3, b'x', b'-', b'a', 100];
    field.extend(std::iter::repeat_n(b'a', 100));
    let mut flood = frame(HEADERS, END_STREAM, 1, GET_BLOCK);
    for _ in 0..2000 {
        flood.extend(frame(CONTINUATION, 0, 1, &field));
    }
    let _ = stream.write_all(&flood).await;
    // No END_HEADERS ever: a server that kept buffering would never answer.
    let ended = read_frames(&mut stream, GOAWAY, Duration::from_secs(15)).await;
    assert!(ended.is_ok(), "the connection must end: {ended:?}");
}

#[tokio::test]
async fn an_idle_h2c_connection_gets_goaway_and_is_closed() {
    let fleet = replica("h2-idle", &[("SWITCHYARD_CLIENT_KEEPALIVE_TIMEOUT", "1s")]).await;
    let mut stream = h2c(&fleet).await;
    let goaway = read_frames(&mut stream, GOAWAY, Duration::from_secs(15)).await;
    assert!(
        matches!(goaway, Ok(Some((GOAWAY, _, 0, _)))),
        "a GOAWAY first: {goaway:?}"
    );
    let closed = switchyard_integration_tests::raw_client::read_until_closed(
        &mut stream,
        Duration::from_secs(15),
    )
    .await;
    assert!(closed.is_ok(), "then the connection is closed");
}
