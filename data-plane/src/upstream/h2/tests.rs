//! HTTP/2 towards a scripted member (the `h2` crate's server on
//! `127.0.0.1:0`): what a refused stream reports, how streams share and open
//! connections against the member's stream limit, and that a connection's
//! task ends with its pool.

use std::net::SocketAddr;
use std::sync::atomic::AtomicUsize;

use http::HeaderValue;
use http_body_util::BodyExt as _;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use super::*;
use crate::upstream::MemberShared;

/// What the scripted member does with every stream.
#[derive(Debug, Clone, Copy)]
enum Script {
    /// `RST_STREAM(REFUSED_STREAM)`, nothing processed.
    Refuse,
    /// 200 with body `ok` (and a trailer) after `delay`.
    Answer { delay: Duration },
    /// As `Answer`, but the first stream also starts a graceful shutdown
    /// (GOAWAY): the connection closes once that stream is answered.
    GoAwayAfterFirst { delay: Duration },
}

/// A scripted HTTP/2 member allowing `max_streams` streams per connection.
struct ScriptedMember {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    /// One message per connection that ended.
    ended: mpsc::UnboundedReceiver<()>,
}

async fn scripted(max_streams: u32, script: Script) -> ScriptedMember {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let (ended_tx, ended) = mpsc::unbounded_channel();
    let counted = accepted.clone();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            let ended = ended_tx.clone();
            tokio::spawn(async move {
                let handshake = h2::server::Builder::new()
                    .max_concurrent_streams(max_streams)
                    .handshake::<_, Bytes>(socket);
                if let Ok(mut conn) = handshake.await {
                    while let Some(Ok((_request, mut respond))) = conn.accept().await {
                        if let Script::GoAwayAfterFirst { .. } = script {
                            conn.graceful_shutdown();
                        }
                        tokio::spawn(async move {
                            match script {
                                Script::Refuse => respond.send_reset(Reason::REFUSED_STREAM),
                                Script::Answer { delay } | Script::GoAwayAfterFirst { delay } => {
                                    tokio::time::sleep(delay).await;
                                    let head = http::Response::new(());
                                    if let Ok(mut body) = respond.send_response(head, false) {
                                        let _ = body.send_data(Bytes::from_static(b"ok"), false);
                                        let mut trailers = http::HeaderMap::new();
                                        trailers.insert("x-done", HeaderValue::from_static("yes"));
                                        let _ = body.send_trailers(trailers);
                                    }
                                }
                            }
                        });
                    }
                }
                // The test may be over already.
                let _gone = ended.send(());
            });
        }
    });
    ScriptedMember {
        addr,
        accepted,
        ended,
    }
}

fn member(addr: SocketAddr) -> Arc<MemberShared> {
    let url = format!("http://{addr}");
    let addr = switchyard_shared::validate::parse_member_url(&url).unwrap();
    Arc::new(
        MemberShared::new(
            "c",
            "m".into(),
            addr,
            switchyard_shared::Protocol::H2c,
            Duration::from_secs(2),
        )
        .unwrap(),
    )
}

fn limits() -> Limits<'static> {
    Limits {
        head_timeout: Duration::from_secs(5),
        idle: Duration::from_secs(5),
        progress: None,
        fresh: false,
    }
}

fn get(member: &MemberShared) -> Request<UpstreamBody> {
    let mut request = Request::new(UpstreamBody::Empty);
    *request.uri_mut() = Uri::from_static("/x");
    request
        .headers_mut()
        .insert(header::HOST, member.host_header.clone());
    request
}

#[tokio::test]
async fn a_refused_stream_was_not_written_and_comes_back_to_be_sent_again() {
    let scripted = scripted(10, Script::Refuse).await;
    let member = member(scripted.addr);
    let failed = send(&member, get(&member), &limits()).await;
    let Err(SendError::Exchange {
        error,
        written,
        answered,
        reused,
        replay,
    }) = failed
    else {
        panic!("a refused stream is an exchange error: {failed:?}");
    };
    assert!(
        matches!(&error, ExchangeError::Stream(e) if unprocessed(e)),
        "{error}"
    );
    assert!(!written, "the member said it processed nothing");
    assert!(!answered);
    assert!(reused, "it may go once more to the same member");
    assert!(replay.is_some(), "the request comes back");
    // On a fresh attempt, a second refusal sends it elsewhere.
    let mut fresh = limits();
    fresh.fresh = true;
    let failed = send(&member, get(&member), &fresh).await;
    assert!(
        matches!(
            failed,
            Err(SendError::Exchange {
                reused: false,
                written: false,
                ..
            })
        ),
        "{failed:?}"
    );
}

#[tokio::test]
async fn an_answer_and_its_trailers_come_through_and_the_connection_is_shared() {
    let scripted = scripted(
        10,
        Script::Answer {
            delay: Duration::ZERO,
        },
    )
    .await;
    let member = member(scripted.addr);
    for _ in 0..3 {
        let (head, exchange) = send(&member, get(&member), &limits()).await.unwrap();
        assert_eq!(head.status, http::StatusCode::OK);
        assert_eq!(head.version, Version::HTTP_2);
        let body = exchange.collect().await.unwrap();
        assert_eq!(
            body.trailers().map(|t| t["x-done"].clone()),
            Some(HeaderValue::from_static("yes"))
        );
        assert_eq!(body.to_bytes(), "ok");
    }
    assert_eq!(
        scripted.accepted.load(Ordering::SeqCst),
        1,
        "one connection for all"
    );
    assert_eq!(member.pool().h2.open(), 1);
}

#[tokio::test]
async fn a_full_connection_makes_another_and_no_more_than_the_cap() {
    let scripted = scripted(
        1,
        Script::Answer {
            delay: Duration::from_millis(300),
        },
    )
    .await;
    let member = member(scripted.addr);
    // The first answer brings the member's SETTINGS (one stream per connection).
    let (_, first) = send(&member, get(&member), &limits()).await.unwrap();
    first.collect().await.unwrap();
    let calls = MAX_CONNECTIONS + 2;
    let sends = (0..calls).map(|_| async {
        let (head, exchange) = send(&member, get(&member), &limits()).await?;
        let body = exchange.collect().await.map_err(|e| SendError::Exchange {
            error: e,
            written: true,
            answered: true,
            reused: false,
            replay: None,
        })?;
        Ok::<_, SendError>((head.status, body.to_bytes()))
    });
    for answered in futures_util::future::join_all(sends).await {
        let (status, body) = answered.unwrap();
        assert_eq!(status, http::StatusCode::OK);
        assert_eq!(body, "ok");
    }
    assert_eq!(
        scripted.accepted.load(Ordering::SeqCst),
        MAX_CONNECTIONS,
        "one stream each: a connection per stream, up to the cap (the rest waited)"
    );
}

#[tokio::test]
async fn a_connection_ends_with_its_pool() {
    let mut scripted = scripted(
        10,
        Script::Answer {
            delay: Duration::ZERO,
        },
    )
    .await;
    let member = member(scripted.addr);
    let (_, exchange) = send(&member, get(&member), &limits()).await.unwrap();
    exchange.collect().await.unwrap();
    assert!(scripted.ended.try_recv().is_err(), "still open");
    drop(member);
    let ended = tokio::time::timeout(Duration::from_secs(5), scripted.ended.recv()).await;
    assert_eq!(ended, Ok(Some(())), "the member saw the connection end");
}

#[tokio::test]
async fn a_graceful_goaway_finishes_its_stream_and_the_next_goes_on_a_new_connection() {
    let scripted = scripted(
        10,
        Script::GoAwayAfterFirst {
            delay: Duration::from_millis(100),
        },
    )
    .await;
    let member = member(scripted.addr);
    let (head, first) = send(&member, get(&member), &limits()).await.unwrap();
    assert_eq!(
        head.status,
        http::StatusCode::OK,
        "the stream in flight is answered"
    );
    assert_eq!(first.collect().await.unwrap().to_bytes(), "ok");
    let mut fresh = limits();
    let mut attempts = 0;
    let answer = loop {
        attempts += 1;
        match send(&member, get(&member), &fresh).await {
            Ok((head, exchange)) => {
                break (head.status, exchange.collect().await.unwrap().to_bytes());
            }
            Err(SendError::Exchange {
                written: false,
                reused: true,
                ..
            }) if attempts == 1 => {
                // The closing connection said so: once more, as `forward` does.
                fresh.fresh = true;
            }
            Err(other) => panic!("attempt {attempts}: {other:?}"),
        }
    };
    assert_eq!(answer, (http::StatusCode::OK, Bytes::from_static(b"ok")));
    assert_eq!(
        scripted.accepted.load(Ordering::SeqCst),
        2,
        "a new connection"
    );
}
