//! Response compression (route field `compress`): what the client gets
//! (decoded with the codecs' own crates and compared with the member's
//! bytes; headers as the rules say) and what the member sees (its
//! `Accept-Encoding` untouched, one request per client request), over
//! HTTP/1.1 and h2c, for bulk, streamed and slow bodies, and every case
//! where nothing may be compressed.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::io::{Read as _, Write as _};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt as _, Empty, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use switchyard_integration_tests::client::REQUEST_TIMEOUT;
use switchyard_integration_tests::conn::{h1_send, h2_connect, header};
use switchyard_integration_tests::{Fleet, bodies};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// Text of `len` bytes, compressible but not trivially.
fn text(len: usize) -> Vec<u8> {
    let words: [&[u8]; 6] = [
        b"proxy ",
        b"member ",
        b"route ",
        b"cluster ",
        b"table\n",
        b"yard ",
    ];
    let mut seed = 11u32;
    let mut out = Vec::with_capacity(len + 16);
    while out.len() < len {
        seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        out.extend_from_slice(words[(seed >> 16) as usize % words.len()]);
    }
    out.truncate(len);
    out
}

const DOC_LEN: usize = 200_000;
const BIG_LEN: usize = 8 * 1024 * 1024;
const BIG_CHUNK: usize = 64 * 1024;

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(data).expect("gzip into memory");
    encoder.finish().expect("gzip into memory")
}

fn decode(coding: &str, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    match coding {
        "gzip" => {
            flate2::read::GzDecoder::new(data)
                .read_to_end(&mut out)
                .expect("a valid gzip stream");
        }
        "br" => {
            brotli::Decompressor::new(data, 4096)
                .read_to_end(&mut out)
                .expect("a valid brotli stream");
        }
        "zstd" => out = zstd::decode_all(data).expect("a valid zstd stream"),
        other => panic!("unexpected coding {other:?}"),
    }
    out
}

type MemberBody = BoxBody<Bytes, Infallible>;

/// A member that answers by path (see [`answer`]) and records every request.
struct ContentMember {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<(String, HeaderMap)>>>,
    /// Lets `/events` send its second event.
    release: Arc<Notify>,
    server: JoinHandle<()>,
}

impl Drop for ContentMember {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl ContentMember {
    async fn spawn() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("an address");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let release = Arc::new(Notify::new());
        let (log, gate) = (seen.clone(), release.clone());
        let server = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            loop {
                tokio::select! {
                    Ok((stream, _)) = listener.accept() => {
                        let (log, gate) = (log.clone(), gate.clone());
                        connections.spawn(async move {
                            let service = service_fn(move |request: Request<Incoming>| {
                                let (log, gate) = (log.clone(), gate.clone());
                                async move { Ok::<_, Infallible>(answer(request, &log, gate)) }
                            });
                            let _ = hyper::server::conn::http1::Builder::new()
                                .serve_connection(TokioIo::new(stream), service)
                                .await;
                        });
                    }
                    Some(_) = connections.join_next(), if !connections.is_empty() => {}
                }
            }
        });
        ContentMember {
            addr,
            seen,
            release,
            server,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The requests the member read for `path`, with their headers.
    fn seen(&self, path: &str) -> Vec<HeaderMap> {
        self.seen
            .lock()
            .expect("the log lock")
            .iter()
            .filter(|(p, _)| p == path)
            .map(|(_, h)| h.clone())
            .collect()
    }
}

fn full(
    status: StatusCode,
    headers: &[(&str, &str)],
    body: Vec<u8>,
    sized: bool,
) -> Response<MemberBody> {
    let len = body.len();
    let body = if sized {
        Full::new(Bytes::from(body)).boxed()
    } else {
        // One frame, no length: hyper sends it chunked.
        StreamBody::new(futures_util::stream::iter([Ok::<_, Infallible>(
            Frame::data(Bytes::from(body)),
        )]))
        .boxed()
    };
    let mut response = Response::new(body);
    *response.status_mut() = status;
    for (name, value) in headers {
        response.headers_mut().append(
            http::HeaderName::from_bytes(name.as_bytes()).expect("a header name"),
            http::HeaderValue::from_str(value).expect("a header value"),
        );
    }
    if sized {
        response
            .headers_mut()
            .insert("content-length", len.to_string().parse().expect("a length"));
    }
    response
}

/// The member's answers:
/// - `/doc`: 200 KB of HTML with `Content-Length`, a strong `ETag`,
///   `Vary: Origin` and `Accept-Ranges`;
/// - `/big`: 8 MiB of text, streamed chunked in 64 KiB pieces;
/// - `/small`: 100 bytes of HTML with `Content-Length`; `/small-unsized`: the
///   same, chunked;
/// - `/png`: 50 KB of `image/png`;
/// - `/gzipped`: the doc, already gzipped by the member;
/// - `/partial`: a 206 of HTML with `Content-Range`;
/// - `/no-transform`: the doc with `Cache-Control: no-transform`;
/// - `/events`: `text/event-stream`, one event, then (once released) another.
fn answer(
    request: Request<Incoming>,
    log: &Mutex<Vec<(String, HeaderMap)>>,
    release: Arc<Notify>,
) -> Response<MemberBody> {
    let path = request.uri().path().to_owned();
    log.lock()
        .expect("the log lock")
        .push((path.clone(), request.headers().clone()));
    let html = ("content-type", "text/html; charset=utf-8");
    match path.as_str() {
        "/doc" => full(
            StatusCode::OK,
            &[
                html,
                ("etag", "\"doc-v1\""),
                ("vary", "Origin"),
                ("accept-ranges", "bytes"),
            ],
            text(DOC_LEN),
            true,
        ),
        "/big" => {
            let chunks = text(BIG_LEN)
                .chunks(BIG_CHUNK)
                .map(|c| Ok::<_, Infallible>(Frame::data(Bytes::copy_from_slice(c))))
                .collect::<Vec<_>>();
            let mut response =
                Response::new(StreamBody::new(futures_util::stream::iter(chunks)).boxed());
            response
                .headers_mut()
                .insert("content-type", "text/plain".parse().expect("a type"));
            response
        }
        "/small" => full(StatusCode::OK, &[html], text(100), true),
        "/small-unsized" => full(StatusCode::OK, &[html], text(100), false),
        "/png" => full(
            StatusCode::OK,
            &[("content-type", "image/png")],
            text(50_000),
            true,
        ),
        "/gzipped" => full(
            StatusCode::OK,
            &[html, ("content-encoding", "gzip")],
            gzip(&text(DOC_LEN)),
            true,
        ),
        "/partial" => full(
            StatusCode::PARTIAL_CONTENT,
            &[html, ("content-range", "bytes 0-99999/200000")],
            text(100_000),
            true,
        ),
        "/no-transform" => full(
            StatusCode::OK,
            &[html, ("cache-control", "public, no-transform")],
            text(DOC_LEN),
            true,
        ),
        "/events" => {
            let events = futures_util::stream::unfold(0, move |step| {
                let release = release.clone();
                async move {
                    match step {
                        0 => Some((Bytes::from_static(b"data: one\n\n"), 1)),
                        1 => {
                            release.notified().await;
                            Some((Bytes::from_static(b"data: two\n\n"), 2))
                        }
                        _ => None,
                    }
                }
            });
            let body = StreamBody::new(futures_util::StreamExt::map(events, |data| {
                Ok::<_, Infallible>(Frame::data(data))
            }));
            let mut response = Response::new(body.boxed());
            response
                .headers_mut()
                .insert("content-type", "text/event-stream".parse().expect("a type"));
            response
        }
        _ => full(StatusCode::NOT_FOUND, &[], b"no such page".to_vec(), true),
    }
}

/// One replica whose route `r` on `/` (with `extra` merged into it) leads to
/// `member`.
async fn fleet_for(label: &str, member: &ContentMember, extra: Value) -> Fleet {
    let fleet = Fleet::start(label, 1).await;
    let cluster = json!({ "members": [ { "url": member.url() } ] });
    fleet
        .cp
        .write(Method::PUT, "/api/v1/clusters/c", Some(&cluster))
        .await;
    let mut route = bodies::route("/", "c");
    if let (Some(route), Some(extra)) = (route.as_object_mut(), extra.as_object()) {
        route.extend(extra.clone());
    }
    fleet
        .cp
        .write(Method::PUT, "/api/v1/routes/r?wait=5s", Some(&route))
        .await;
    fleet
}

fn compressing() -> Value {
    json!({ "compress": {} })
}

/// What the client got: status, headers, the body's bytes as sent.
struct Got {
    status: StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Got {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

async fn fetch(addr: SocketAddr, method: Method, path: &str, accept: Option<&str>) -> Got {
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "compress.test");
    if let Some(accept) = accept {
        request = request.header("accept-encoding", accept);
    }
    let request = request.body(Empty::<Bytes>::new()).expect("a request");
    let got = async {
        let response = h1_send(addr, request).await?;
        let (parts, body) = response.into_parts();
        let body = body.collect().await?.to_bytes().to_vec();
        anyhow::Ok(Got {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    };
    tokio::time::timeout(REQUEST_TIMEOUT, got)
        .await
        .unwrap_or_else(|_| panic!("{path}: no answer within {REQUEST_TIMEOUT:?}"))
        .unwrap_or_else(|e| panic!("{path}: {e:#}"))
}

#[tokio::test]
async fn each_coding_the_client_accepts_decodes_to_the_members_bytes() {
    let member = ContentMember::spawn().await;
    let fleet = fleet_for("compress-codings", &member, compressing()).await;
    let addr = fleet.replicas[0].proxy_addr();
    let original = text(DOC_LEN);
    let cases = [
        ("gzip", "gzip"),
        ("br", "br"),
        ("zstd", "zstd"),
        // A browser's: every one offered, the server's order decides.
        ("gzip, deflate, br, zstd", "br"),
        // The client's q-values decide first.
        ("br;q=0.5, gzip;q=0.9, zstd;q=0.1", "gzip"),
        ("*", "br"),
    ];
    for (n, (accept, coding)) in cases.iter().enumerate() {
        let got = fetch(addr, Method::GET, "/doc", Some(accept)).await;
        assert_eq!(got.status, StatusCode::OK, "{accept}");
        assert_eq!(got.header("content-encoding"), Some(*coding), "{accept}");
        assert_eq!(
            got.header("content-length"),
            None,
            "{accept}: the length changed"
        );
        assert_eq!(got.header("accept-ranges"), None, "{accept}");
        assert_eq!(got.header("etag"), Some("W/\"doc-v1\""), "{accept}");
        assert_eq!(
            header_values_of(&got.headers, "vary"),
            ["Origin, Accept-Encoding"],
            "{accept}: merged, once"
        );
        assert!(
            got.body.len() < original.len() / 3,
            "{accept}: {} bytes",
            got.body.len()
        );
        assert_eq!(decode(coding, &got.body), original, "{accept}");
        // The member saw the client's Accept-Encoding as it was, once per request.
        let seen = member.seen("/doc");
        assert_eq!(seen.len(), n + 1, "one request per client request");
        assert_eq!(
            seen[n].get("accept-encoding").and_then(|v| v.to_str().ok()),
            Some(*accept)
        );
    }
    let metrics = switchyard_integration_tests::get(&fleet.replicas[0].admin_url("/metrics"))
        .await
        .body;
    for (algorithm, count) in [("br", 3), ("zstd", 1), ("gzip", 2)] {
        let line =
            format!("switchyard_responses_compressed_total{{algorithm=\"{algorithm}\"}} {count}\n");
        assert!(metrics.contains(&line), "{line} in {metrics}");
    }
}

fn header_values_of(headers: &HeaderMap, name: &str) -> Vec<String> {
    headers
        .get_all(name)
        .iter()
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .collect()
}

#[tokio::test]
async fn a_large_streamed_body_is_compressed_as_it_streams() {
    let member = ContentMember::spawn().await;
    let fleet = fleet_for("compress-large", &member, compressing()).await;
    let addr = fleet.replicas[0].proxy_addr();
    for coding in ["gzip", "zstd", "br"] {
        let request = Request::get("/big")
            .header("host", "compress.test")
            .header("accept-encoding", coding)
            .body(Empty::<Bytes>::new())
            .expect("a request");
        let read = async {
            let response = h1_send(addr, request).await?;
            assert_eq!(
                header(&response, "content-encoding").as_deref(),
                Some(coding)
            );
            assert_eq!(
                header(&response, "transfer-encoding").as_deref(),
                Some("chunked")
            );
            let mut body = response.into_body();
            let (mut frames, mut compressed) = (0, Vec::new());
            while let Some(frame) = body.frame().await {
                if let Ok(data) = frame?.into_data() {
                    frames += 1;
                    compressed.extend_from_slice(&data);
                }
            }
            anyhow::Ok((frames, compressed))
        };
        let (frames, compressed) = tokio::time::timeout(REQUEST_TIMEOUT, read)
            .await
            .expect("the body within the deadline")
            .expect("the body");
        assert!(frames > 1, "{coding}: streamed in pieces, got {frames}");
        assert!(
            compressed.len() < BIG_LEN / 3,
            "{coding}: {} bytes",
            compressed.len()
        );
        assert!(
            decode(coding, &compressed) == text(BIG_LEN),
            "{coding}: the member's bytes"
        );
    }
    assert_eq!(member.seen("/big").len(), 3);
}

#[tokio::test]
async fn a_slow_stream_reaches_the_client_before_the_member_finishes() {
    let member = ContentMember::spawn().await;
    let extra = json!({ "compress": { "types": ["text/event-stream"], "algorithms": ["gzip"] } });
    let fleet = fleet_for("compress-slow", &member, extra).await;
    let request = Request::get("/events")
        .header("host", "compress.test")
        .header("accept-encoding", "gzip")
        .body(Empty::<Bytes>::new())
        .expect("a request");
    let response = tokio::time::timeout(
        REQUEST_TIMEOUT,
        h1_send(fleet.replicas[0].proxy_addr(), request),
    )
    .await
    .expect("a head within the deadline")
    .expect("a head");
    assert_eq!(
        header(&response, "content-encoding").as_deref(),
        Some("gzip")
    );
    let mut body = response.into_body();
    let mut decoder = flate2::write::GzDecoder::new(Vec::new());
    // The member holds its second event until released: the first must
    // arrive, decodable, while it waits.
    let first = async {
        while decoder.get_ref().as_slice() != b"data: one\n\n" {
            let frame = body.frame().await.expect("more of the body")?;
            if let Ok(data) = frame.into_data() {
                decoder.write_all(&data)?;
                decoder.flush()?;
            }
        }
        anyhow::Ok(())
    };
    tokio::time::timeout(REQUEST_TIMEOUT, first)
        .await
        .expect("the first event before the member finished")
        .expect("the first event");
    member.release.notify_one();
    let rest = async {
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame?.into_data() {
                decoder.write_all(&data)?;
            }
        }
        anyhow::Ok(decoder.finish()?)
    };
    let all = tokio::time::timeout(REQUEST_TIMEOUT, rest)
        .await
        .expect("the rest within the deadline")
        .expect("the rest");
    assert_eq!(all, b"data: one\n\ndata: two\n\n");
    assert_eq!(member.seen("/events").len(), 1);
}

#[tokio::test]
async fn what_may_not_be_compressed_passes_as_the_member_sent_it() {
    let member = ContentMember::spawn().await;
    let fleet = fleet_for("compress-not", &member, compressing()).await;
    let addr = fleet.replicas[0].proxy_addr();
    let doc = text(DOC_LEN);
    // (path, method, Accept-Encoding, body the client must get, Vary expected)
    let gzipped = gzip(&doc);
    type Case<'a> = (&'a str, Method, Option<&'a str>, &'a [u8], bool);
    let cases: [Case; 9] = [
        ("/gzipped", Method::GET, Some("br, gzip"), &gzipped, false),
        ("/small", Method::GET, Some("gzip"), &doc[..0], false),
        ("/png", Method::GET, Some("gzip"), &doc[..0], false),
        ("/partial", Method::GET, Some("gzip"), &doc[..0], false),
        ("/no-transform", Method::GET, Some("gzip"), &doc, false),
        ("/doc", Method::HEAD, Some("gzip"), b"", true),
        ("/doc", Method::GET, None, &doc, true),
        ("/doc", Method::GET, Some("identity"), &doc, true),
        ("/doc", Method::GET, Some("deflate, gzip;q=0"), &doc, true),
    ];
    let mut counts = BTreeMap::new();
    for (path, method, accept, expected, vary) in cases {
        let what = format!("{method} {path} ({accept:?})");
        let got = fetch(addr, method.clone(), path, accept).await;
        *counts.entry(path).or_insert(0) += 1;
        assert_eq!(member.seen(path).len(), counts[path], "{what}: one request");
        assert_ne!(got.header("content-encoding"), Some("br"), "{what}");
        if path != "/gzipped" {
            assert_eq!(got.header("content-encoding"), None, "{what}");
        }
        if !expected.is_empty() || method == Method::HEAD {
            assert!(got.body == expected, "{what}: the member's bytes");
        }
        match path {
            "/small" => assert_eq!(got.body, text(100), "{what}"),
            "/png" => assert_eq!(got.body, text(50_000), "{what}"),
            "/partial" => {
                assert_eq!(got.status, StatusCode::PARTIAL_CONTENT);
                assert_eq!(got.body, text(100_000), "{what}");
            }
            _ => {}
        }
        if method == Method::GET {
            assert_eq!(
                got.header("content-length"),
                Some(got.body.len().to_string().as_str()),
                "{what}: the length kept"
            );
        } else {
            assert_eq!(
                got.header("content-length"),
                Some(DOC_LEN.to_string().as_str())
            );
        }
        let varies = header_values_of(&got.headers, "vary")
            .iter()
            .any(|v| v.contains("Accept-Encoding"));
        assert_eq!(varies, vary, "{what}: Vary {:?}", got.headers.get("vary"));
        if path == "/doc" {
            assert_eq!(
                got.header("etag"),
                Some("\"doc-v1\""),
                "{what}: still strong"
            );
        }
    }
    // A body of unknown length is compressed, however small it turns out.
    let got = fetch(addr, Method::GET, "/small-unsized", Some("gzip")).await;
    assert_eq!(got.header("content-encoding"), Some("gzip"));
    assert_eq!(decode("gzip", &got.body), text(100));
}

#[tokio::test]
async fn a_route_without_compress_compresses_nothing() {
    let member = ContentMember::spawn().await;
    let fleet = fleet_for("compress-off", &member, json!({})).await;
    let got = fetch(
        fleet.replicas[0].proxy_addr(),
        Method::GET,
        "/doc",
        Some("gzip, br"),
    )
    .await;
    assert_eq!(got.header("content-encoding"), None);
    assert_eq!(got.header("vary"), Some("Origin"), "nothing added");
    assert_eq!(got.header("etag"), Some("\"doc-v1\""));
    assert_eq!(got.body, text(DOC_LEN));
    assert_eq!(
        member.seen("/doc")[0]
            .get("accept-encoding")
            .and_then(|v| v.to_str().ok()),
        Some("gzip, br")
    );
}

#[tokio::test]
async fn an_h2_client_gets_compressed_data_frames() {
    let member = ContentMember::spawn().await;
    let fleet = fleet_for("compress-h2", &member, compressing()).await;
    let addr = fleet.replicas[0].proxy_addr();
    let mut sender = h2_connect::<Empty<Bytes>>(addr)
        .await
        .expect("an h2c connection");
    for coding in ["zstd", "gzip"] {
        let request = Request::get(format!("http://{addr}/doc"))
            .header("accept-encoding", coding)
            .body(Empty::new())
            .expect("a request");
        let got = async {
            sender.ready().await?;
            let response = sender.send_request(request).await?;
            let (parts, body) = response.into_parts();
            anyhow::Ok((parts, body.collect().await?.to_bytes()))
        };
        let (parts, body) = tokio::time::timeout(REQUEST_TIMEOUT, got)
            .await
            .expect("an answer within the deadline")
            .expect("an answer");
        assert_eq!(parts.version, http::Version::HTTP_2);
        assert_eq!(
            parts
                .headers
                .get("content-encoding")
                .and_then(|v| v.to_str().ok()),
            Some(coding)
        );
        assert!(parts.headers.get("content-length").is_none());
        assert_eq!(decode(coding, &body), text(DOC_LEN), "{coding}");
    }
    assert_eq!(member.seen("/doc").len(), 2);
}

#[tokio::test]
async fn compress_is_shown_with_its_defaults_and_bad_settings_are_refused() {
    let member = ContentMember::spawn().await;
    let fleet = fleet_for("compress-api", &member, compressing()).await;
    let config = fleet.cp.config().await;
    let compress = &config["routes"][0]["compress"];
    assert_eq!(compress["algorithms"], json!(["br", "zstd", "gzip"]));
    assert_eq!(compress["min_size"], json!(1024));
    let types = compress["types"].as_array().expect("a list of types");
    for listed in [
        "text/html",
        "application/json",
        "image/svg+xml",
        "application/wasm",
    ] {
        assert!(types.contains(&json!(listed)), "{listed} in {types:?}");
    }
    assert!(!types.contains(&json!("text/event-stream")));
    let version = fleet.cp.version().await;
    for (compress, expected) in [
        (json!({ "algorithms": ["deflate"] }), "deflate"),
        (json!({ "algorithms": [] }), "at least one"),
        (json!({ "types": ["*/*"] }), "\"*/*\""),
        (json!({ "min_size": -1 }), "min_size"),
        (json!({ "level": 9 }), "level"),
        (json!(["gzip"]), "compress object"),
    ] {
        let mut route = bodies::route("/", "c");
        route["compress"] = compress.clone();
        let response = fleet.cp.put("/api/v1/routes/r", &route).await;
        assert_eq!(response.status, StatusCode::BAD_REQUEST, "{compress}");
        let message = response.error_message();
        assert!(message.contains(expected), "{compress}: {message}");
    }
    assert_eq!(fleet.cp.version().await, version, "nothing changed");
}
