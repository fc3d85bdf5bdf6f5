//! Exchanges over a real loopback connection with a scripted member: every
//! framing the member may choose, and whether the connection is reused.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, StatusCode};
use http_body_util::BodyExt as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

use super::*;

const LIMIT: Duration = Duration::from_secs(5);

/// A connection to a scripted member, and the member's end of it.
async fn pair() -> (Conn, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (ours, theirs) = tokio::join!(TcpStream::connect(addr), listener.accept());
    (
        Conn::new(MemberStream::Plain(ours.unwrap())),
        theirs.unwrap().0,
    )
}

/// Reads one request (head, and a chunked body when it has one) as the member sees it.
async fn read_request(member: &mut TcpStream) -> String {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&seen).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let chunked = text[..end].contains("transfer-encoding: chunked");
            if !chunked || text[end + 4..].ends_with("\r\n\r\n") {
                return text;
            }
        }
        let n = member.read(&mut buf).await.unwrap();
        assert_ne!(n, 0, "the request ended early: {text:?}");
        seen.extend_from_slice(&buf[..n]);
    }
}

/// What the client got: the head, the data, the trailers, and the error the
/// body ended with, if any.
struct Outcome {
    status: StatusCode,
    headers: HeaderMap,
    data: Vec<u8>,
    trailers: Option<HeaderMap>,
    error: Option<String>,
    /// Whether the connection went back to the pool.
    reused: bool,
}

/// Runs one `method` exchange against a member that answers with each of
/// `answer` in turn (written apart), then closes if `close`.
async fn exchange(method: Method, answer: &[&[u8]], close: bool) -> (Outcome, String) {
    exchange_with(
        Request::builder().method(method),
        UpstreamBody::Empty,
        answer,
        close,
    )
    .await
}

async fn exchange_with(
    request: http::request::Builder,
    body: UpstreamBody,
    answer: &[&[u8]],
    close: bool,
) -> (Outcome, String) {
    let (conn, mut member) = pair().await;
    let pool = Arc::new(Pool::default());
    let (parts, ()) = request.uri("/path").body(()).unwrap().into_parts();
    let client = async {
        let mut exchange = Exchange::new(
            conn,
            pool.clone(),
            &parts,
            body,
            std::time::Duration::from_secs(5),
        );
        let head = exchange.response_head(&parts.method).await.unwrap();
        let (mut data, mut trailers, mut error) = (Vec::new(), None, None);
        while let Some(frame) = exchange.frame().await {
            match frame {
                Ok(frame) => match frame.into_data() {
                    Ok(piece) => data.extend_from_slice(&piece),
                    Err(frame) => trailers = frame.into_trailers().ok(),
                },
                Err(e) => {
                    error = Some(e.to_string());
                    break;
                }
            }
        }
        assert!(exchange.frame().await.is_none(), "nothing after the end");
        (head, data, trailers, error)
    };
    let script = async {
        let seen = read_request(&mut member).await;
        for piece in answer {
            member.write_all(piece).await.unwrap();
            member.flush().await.unwrap();
            tokio::task::yield_now().await;
        }
        if close {
            member.shutdown().await.unwrap();
        }
        seen
    };
    let ((head, data, trailers, error), seen) =
        tokio::time::timeout(LIMIT, async { tokio::join!(client, script) })
            .await
            .expect("the exchange ends");
    let outcome = Outcome {
        status: head.status,
        headers: head.headers,
        data,
        trailers,
        error,
        reused: pool.take().is_some(),
    };
    drop(member);
    (outcome, seen)
}

#[tokio::test]
async fn a_length_body_is_read_whole_and_the_connection_reused() {
    let (got, seen) = exchange(
        Method::GET,
        &[
            b"HTTP/1.1 200 OK\r\ncontent-length: 11\r\n\r\nhello",
            b" world",
        ],
        false,
    )
    .await;
    assert!(seen.starts_with("GET /path HTTP/1.1\r\n"), "{seen:?}");
    assert_eq!(
        (got.status, &got.data[..]),
        (StatusCode::OK, &b"hello world"[..])
    );
    assert_eq!(got.error, None);
    assert!(got.reused);
}

#[tokio::test]
async fn a_chunked_body_split_anywhere_is_decoded_and_the_connection_reused() {
    let answer = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n\
                   5\r\nhello\r\n6;x=y\r\n world\r\n0\r\n\r\n";
    for split in 1..answer.len() {
        let (got, _) = exchange(Method::GET, &[&answer[..split], &answer[split..]], false).await;
        assert_eq!(got.data, b"hello world", "split at {split}");
        assert_eq!((got.error, got.trailers), (None, None), "split at {split}");
        assert!(got.reused, "split at {split}");
    }
}

#[tokio::test]
async fn a_members_trailers_are_a_trailers_frame() {
    let (got, _) = exchange(
        Method::GET,
        &[
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ntrailer: x-checksum\r\n\r\n\
            3\r\nabc\r\n0\r\nx-checksum: 42\r\n\r\n",
        ],
        false,
    )
    .await;
    assert_eq!(got.data, b"abc");
    let trailers = got.trailers.expect("trailers");
    assert_eq!(trailers["x-checksum"], "42");
    assert_eq!(got.headers["trailer"], "x-checksum");
    assert!(got.reused, "trailers end the body");
}

#[tokio::test]
async fn a_body_until_close_is_read_to_the_end_and_the_connection_dropped() {
    let (got, _) = exchange(
        Method::GET,
        &[b"HTTP/1.1 200 OK\r\n\r\nall of", b" this"],
        true,
    )
    .await;
    assert_eq!((&got.data[..], got.error), (&b"all of this"[..], None));
    assert!(!got.reused);
    // A coding after `chunked`: the body is not chunked, it ends with the connection.
    let (got, _) = exchange(
        Method::GET,
        &[b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked, gzip\r\n\r\n0\r\n\r\n"],
        true,
    )
    .await;
    assert_eq!((&got.data[..], got.error), (&b"0\r\n\r\n"[..], None));
    assert!(!got.reused);
}

#[tokio::test]
async fn answers_without_a_body_end_at_the_head() {
    for (method, answer) in [
        (
            Method::HEAD,
            &b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n"[..],
        ),
        (
            Method::HEAD,
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n",
        ),
        (Method::GET, b"HTTP/1.1 204 No Content\r\n\r\n"),
        (
            Method::GET,
            b"HTTP/1.1 304 Not Modified\r\ncontent-length: 5\r\n\r\n",
        ),
        (Method::GET, b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"),
    ] {
        let (got, _) = exchange(method.clone(), &[answer], false).await;
        assert_eq!(
            (&got.data[..], &got.error),
            (&b""[..], &None),
            "{method} {answer:?}"
        );
        assert!(got.reused, "{method} {answer:?}");
    }
}

#[tokio::test]
async fn interim_answers_are_skipped() {
    let (got, _) = exchange(
        Method::GET,
        &[
            b"HTTP/1.1 100 Continue\r\n\r\n",
            b"HTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
        ],
        false,
    )
    .await;
    assert_eq!((got.status, &got.data[..]), (StatusCode::OK, &b"ok"[..]));
    assert!(!got.headers.contains_key("link"));
    assert!(got.reused);
}

#[tokio::test]
async fn the_member_decides_reuse_by_version_and_connection() {
    for (answer, reused) in [
        (
            &b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok"[..],
            false,
        ),
        (b"HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\nok", false),
        (
            b"HTTP/1.0 200 OK\r\nconnection: keep-alive\r\ncontent-length: 2\r\n\r\nok",
            true,
        ),
        (
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nokEXTRA",
            false,
        ),
        (
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\nX",
            false,
        ),
    ] {
        let (got, _) = exchange(Method::GET, &[answer], false).await;
        assert_eq!(&got.data[..], b"ok", "{answer:?}");
        assert_eq!(got.reused, reused, "{:?}", String::from_utf8_lossy(answer));
    }
}

#[tokio::test]
async fn both_framings_decode_the_chunks_and_drop_content_length_and_the_connection() {
    let (got, _) = exchange(
        Method::GET,
        &[
            b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n\
            6\r\nabcdef\r\n0\r\n\r\n",
        ],
        false,
    )
    .await;
    assert_eq!((&got.data[..], got.error), (&b"abcdef"[..], None));
    assert!(!got.headers.contains_key("content-length"));
    assert!(
        !got.reused,
        "a member that sends both is not trusted with another request"
    );
}

#[tokio::test]
async fn a_truncated_body_is_an_error_after_the_bytes_that_came() {
    for answer in [
        &b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc"[..],
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n9\r\nabc",
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n",
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nx: 1\r\n",
    ] {
        let (got, _) = exchange(Method::GET, &[answer], true).await;
        assert_eq!(&got.data[..], b"abc", "{answer:?}");
        assert!(got.error.is_some(), "{answer:?}");
        assert!(!got.reused);
    }
    let (got, _) = exchange(
        Method::GET,
        &[b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\nabc\r\n0\r\n\r\n"],
        false,
    )
    .await;
    assert!(got.error.unwrap().contains("bare LF"));
    assert!(!got.reused);
}

/// A client's body as the proxy gets it: an `Incoming` from a hyper server,
/// sent by a hyper client as `chunks` and then `trailers`; and the task that
/// runs both ends (the caller aborts it).
async fn client_body(
    chunks: &[&'static str],
    trailers: HeaderMap,
) -> (
    UpstreamBody,
    Arc<crate::upstream::body::BodyProgress>,
    tokio::task::JoinHandle<()>,
) {
    use http_body_util::StreamBody;
    use hyper_util::rt::TokioIo;

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (incoming_tx, incoming_rx) = tokio::sync::oneshot::channel();
    let incoming_tx = std::sync::Mutex::new(Some(incoming_tx));
    let server = async move {
        let (stream, _) = listener.accept().await.unwrap();
        let service = hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
            if let Some(tx) = incoming_tx.lock().unwrap().take() {
                let _ = tx.send(request.into_body());
            }
            // No answer: hyper stops reading a body its service has answered.
            async {
                std::future::pending::<()>().await;
                Ok::<_, std::convert::Infallible>(http::Response::new(String::new()))
            }
        });
        hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(stream), service)
            .await
    };
    let mut frames: Vec<Result<Frame<Bytes>, std::convert::Infallible>> = chunks
        .iter()
        .map(|c| Ok(Frame::data(Bytes::from_static(c.as_bytes()))))
        .collect();
    frames.push(Ok(Frame::trailers(trailers)));
    let body = StreamBody::new(futures_util::stream::iter(frames));
    let client = async move {
        let stream = TcpStream::connect(addr).await.unwrap();
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        let request = Request::post("/")
            .header("trailer", "x-checksum")
            .body(body)
            .unwrap();
        let _ = tokio::join!(conn, sender.send_request(request));
    };
    // Both ends live in one task the test owns, bounded by the test's limit.
    let connections = tokio::spawn(async move {
        let _ = tokio::time::timeout(LIMIT, async { tokio::join!(server, client) }).await;
    });
    let incoming = incoming_rx.await.unwrap();
    let (body, progress) =
        UpstreamBody::from_client(incoming, std::time::Duration::from_secs(5), false);
    (body, progress.unwrap(), connections)
}

#[tokio::test]
async fn a_clients_trailers_go_in_the_last_chunk_to_the_member() {
    let mut trailers = HeaderMap::new();
    trailers.insert("x-checksum", HeaderValue::from_static("42"));
    trailers.insert("content-length", HeaderValue::from_static("1"));
    let (body, progress, connections) = client_body(&["hello", " world"], trailers).await;
    let request = Request::builder()
        .method(Method::POST)
        .header("trailer", "x-checksum");
    let (got, seen) = exchange_with(
        request,
        body,
        &[b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"],
        false,
    )
    .await;
    assert_eq!(got.status, StatusCode::OK);
    assert!(seen.contains("transfer-encoding: chunked\r\n"), "{seen:?}");
    assert!(
        seen.ends_with("0\r\nx-checksum: 42\r\n\r\n"),
        "the trailers end the upload: {seen:?}"
    );
    assert!(
        seen.contains("hello") && seen.contains(" world"),
        "{seen:?}"
    );
    assert!(!seen.contains("content-length"), "{seen:?}");
    assert!(
        progress.is_done(),
        "the upload counts as sent: the response clock starts"
    );
    connections.abort();
}
