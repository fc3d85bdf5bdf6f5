//! Bodies are streamed, not buffered: a chunk crosses the replica while the
//! rest of its body does not exist yet. Each test holds the second half of a
//! body back until the first half was seen on the far side of the replica; a
//! proxy that waited for the whole body would never let the first half
//! through, and the test would fail at its deadline.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::json;
use switchyard_integration_tests::Fleet;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

/// How long one half may take to cross the replica: a hang guard.
const DEADLINE: Duration = Duration::from_secs(20);

/// One replica with route `/` to a single member at `member`.
async fn fleet_for(label: &str, member: SocketAddr) -> Fleet {
    Fleet::serving(
        label,
        &json!({ "members": [ { "url": format!("http://{member}") } ] }),
    )
    .await
}

/// Reads from `stream` into `seen` until it contains `needle`, within [`DEADLINE`].
async fn read_until(stream: &mut TcpStream, seen: &mut Vec<u8>, needle: &[u8], what: &str) {
    let reading = async {
        let mut buf = [0u8; 4096];
        while !seen.windows(needle.len()).any(|w| w == needle) {
            let n = stream.read(&mut buf).await.expect("the socket reads");
            assert!(
                n > 0,
                "{what}: the connection closed first; got {:?}",
                String::from_utf8_lossy(seen)
            );
            seen.extend_from_slice(&buf[..n]);
        }
    };
    if tokio::time::timeout(DEADLINE, reading).await.is_err() {
        panic!(
            "{what}: not seen within {DEADLINE:?} (the body was held back?); got {:?}",
            String::from_utf8_lossy(seen)
        );
    }
}

async fn listener() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("bound address");
    (listener, addr)
}

/// The member sends the first chunk of its answer and waits; the client sees
/// it through the replica; only then does the member send the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_chunk_reaches_the_client_before_the_member_wrote_the_rest() {
    let (member, addr) = listener().await;
    let (release_tx, release_rx) = oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        let (mut stream, _) = member.accept().await.expect("accept");
        let mut head = Vec::new();
        read_until(&mut stream, &mut head, b"\r\n\r\n", "the request head").await;
        let first = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n6\r\nfirst|\r\n";
        stream.write_all(first).await.expect("write");
        release_rx.await.expect("the test releases the member");
        stream
            .write_all(b"6\r\nsecond\r\n0\r\n\r\n")
            .await
            .expect("write");
        // Hold the connection until the client has read the end.
        let mut rest = Vec::new();
        drop(stream.read_to_end(&mut rest).await);
    });
    let fleet = fleet_for("lockstep-down", addr).await;

    let mut client = TcpStream::connect(fleet.replicas[0].proxy_addr())
        .await
        .expect("connect to the replica");
    client
        .write_all(b"GET /stream HTTP/1.1\r\nhost: lockstep\r\nconnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut seen = Vec::new();
    read_until(&mut client, &mut seen, b"first|", "the first chunk").await;
    assert!(
        !seen.windows(6).any(|w| w == b"second"),
        "the member has not sent the rest yet"
    );
    release_tx.send(()).expect("the member waits");
    read_until(&mut client, &mut seen, b"second", "the second chunk").await;
    let text = String::from_utf8_lossy(&seen);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    drop(client);
    server.abort();
}

/// The client sends the first chunk of its upload and waits; the member sees
/// it through the replica and answers; only then does the client send the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_chunk_reaches_the_member_before_the_client_wrote_the_rest() {
    let (member, addr) = listener().await;
    let (seen_tx, seen_rx) = oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        let (mut stream, _) = member.accept().await.expect("accept");
        let mut seen = Vec::new();
        read_until(&mut stream, &mut seen, b"first|", "the first upload chunk").await;
        let complete = seen.windows(6).any(|w| w == b"second");
        seen_tx.send(()).expect("the test waits");
        read_until(
            &mut stream,
            &mut seen,
            b"0\r\n\r\n",
            "the end of the upload",
        )
        .await;
        let body = if complete { "held back" } else { "streamed" };
        let answer = format!(
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(answer.as_bytes()).await.expect("write");
        let mut rest = Vec::new();
        drop(stream.read_to_end(&mut rest).await);
    });
    let fleet = fleet_for("lockstep-up", addr).await;

    let mut client = TcpStream::connect(fleet.replicas[0].proxy_addr())
        .await
        .expect("connect to the replica");
    client
        .write_all(
            b"POST /upload HTTP/1.1\r\nhost: lockstep\r\nconnection: close\r\n\
              transfer-encoding: chunked\r\n\r\n6\r\nfirst|\r\n",
        )
        .await
        .expect("write");
    match tokio::time::timeout(DEADLINE, seen_rx).await {
        Ok(Ok(())) => {}
        _ => panic!("the member never saw the first chunk: the upload was held back"),
    }
    client
        .write_all(b"6\r\nsecond\r\n0\r\n\r\n")
        .await
        .expect("write");
    let mut seen = Vec::new();
    read_until(&mut client, &mut seen, b"streamed", "the member's answer").await;
    let text = String::from_utf8_lossy(&seen);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    drop(client);
    server.abort();
}
