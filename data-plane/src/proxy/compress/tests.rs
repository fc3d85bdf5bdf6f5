use std::collections::VecDeque;
use std::io::{Read, Write};

use http_body_util::BodyExt;
use switchyard_shared::Compress;

use super::*;
use crate::upstream::exchange::ExchangeError;

const ALL: [Algorithm; 3] = [Algorithm::Br, Algorithm::Zstd, Algorithm::Gzip];

fn accept(values: &[&str]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for value in values {
        headers.append(
            header::ACCEPT_ENCODING,
            HeaderValue::from_str(value).unwrap(),
        );
    }
    headers
}

fn chosen(values: &[&str], algorithms: &[Algorithm]) -> Option<&'static str> {
    negotiate(&accept(values), algorithms).map(|a| a.as_str())
}

#[test]
fn the_client_q_value_decides_then_the_server_order() {
    assert_eq!(chosen(&["gzip, deflate, br, zstd"], &ALL), Some("br"));
    assert_eq!(
        chosen(
            &["gzip, deflate, br, zstd"],
            &[Algorithm::Gzip, Algorithm::Br]
        ),
        Some("gzip")
    );
    assert_eq!(chosen(&["gzip;q=1.0, br;q=0.5"], &ALL), Some("gzip"));
    assert_eq!(
        chosen(&["br;q=0.5", "zstd;q=0.8"], &ALL),
        Some("zstd"),
        "two lines count"
    );
    assert_eq!(chosen(&["GZIP ; Q=0.9"], &ALL), Some("gzip"));
    assert_eq!(chosen(&["x-gzip"], &ALL), Some("gzip"));
    assert_eq!(chosen(&["*"], &ALL), Some("br"));
    assert_eq!(chosen(&["*;q=0.5, br;q=0.4"], &ALL), Some("zstd"));
    assert_eq!(chosen(&["*, br;q=0"], &[Algorithm::Br]), None);
    assert_eq!(chosen(&["deflate"], &ALL), None);
    assert_eq!(chosen(&[], &ALL), None);
    assert_eq!(chosen(&[""], &ALL), None);
    assert_eq!(chosen(&["gzip;q=0"], &ALL), None);
    assert_eq!(chosen(&["gzip;q=0.000"], &ALL), None);
    assert_eq!(chosen(&["identity"], &ALL), None);
    assert_eq!(chosen(&["identity;q=0, gzip"], &ALL), Some("gzip"));
    assert_eq!(
        chosen(&["identity;q=1, gzip;q=0.5"], &ALL),
        None,
        "identity preferred by a higher q"
    );
    assert_eq!(chosen(&["gzip, identity;q=0.5"], &ALL), Some("gzip"));
    // Malformed q-values: the entry is ignored.
    for bad in [
        "gzip;q=2",
        "gzip;q=1.5",
        "gzip;q=0.1234",
        "gzip;q=",
        "gzip;q=abc",
        "gzip;q=-1",
    ] {
        assert_eq!(chosen(&[bad], &ALL), None, "{bad}");
    }
    assert_eq!(chosen(&["gzip;q=abc, br"], &ALL), Some("br"));
    assert_eq!(chosen(&[",,gzip,,"], &ALL), Some("gzip"));
    assert_eq!(
        chosen(&["gzip;level=9"], &ALL),
        Some("gzip"),
        "other parameters ignored"
    );
}

#[test]
fn q_values() {
    for (text, q) in [
        ("0", Some(0)),
        ("0.", Some(0)),
        ("0.5", Some(500)),
        ("0.05", Some(50)),
        ("0.123", Some(123)),
        ("1", Some(1000)),
        ("1.000", Some(1000)),
        ("1.001", None),
        ("2", None),
        ("", None),
        (".5", None),
        ("0.5x", None),
    ] {
        assert_eq!(parse_q(text.as_bytes()), q, "{text:?}");
    }
}

fn rule(min_size: u64) -> CompressRule {
    CompressRule::compile(&Compress {
        min_size,
        ..Compress::default()
    })
}

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, value) in pairs {
        headers.append(
            header::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    headers
}

#[test]
fn what_may_be_compressed() {
    let html = [("content-type", "text/html; charset=utf-8")];
    let rule = rule(1024);
    assert!(compressible(StatusCode::OK, &headers(&html), &rule));
    assert!(compressible(StatusCode::NOT_FOUND, &headers(&html), &rule));
    for status in [
        StatusCode::NO_CONTENT,
        StatusCode::NOT_MODIFIED,
        StatusCode::PARTIAL_CONTENT,
        StatusCode::CONTINUE,
    ] {
        assert!(!compressible(status, &headers(&html), &rule), "{status}");
    }
    let with = |extra: (&'static str, &'static str)| headers(&[html[0], extra]);
    assert!(!compressible(
        StatusCode::OK,
        &with(("content-encoding", "gzip")),
        &rule
    ));
    assert!(!compressible(
        StatusCode::OK,
        &with(("content-range", "bytes 0-1/2")),
        &rule
    ));
    assert!(!compressible(
        StatusCode::OK,
        &with(("cache-control", "public, No-Transform")),
        &rule
    ));
    assert!(compressible(
        StatusCode::OK,
        &with(("cache-control", "no-cache")),
        &rule
    ));
    assert!(!compressible(
        StatusCode::OK,
        &with(("content-length", "1023")),
        &rule
    ));
    assert!(compressible(
        StatusCode::OK,
        &with(("content-length", "1024")),
        &rule
    ));
    assert!(!compressible(
        StatusCode::OK,
        &headers(&[("content-type", "image/png")]),
        &rule
    ));
    assert!(
        !compressible(StatusCode::OK, &headers(&[]), &rule),
        "no type: no"
    );
}

#[test]
fn vary_is_merged_once() {
    let mut h = headers(&[]);
    add_vary(&mut h);
    assert_eq!(
        h.get_all(header::VARY).iter().collect::<Vec<_>>(),
        ["Accept-Encoding"]
    );
    add_vary(&mut h);
    assert_eq!(h.get_all(header::VARY).iter().count(), 1);
    let mut h = headers(&[("vary", "Origin"), ("vary", "Cookie")]);
    add_vary(&mut h);
    assert_eq!(
        h.get_all(header::VARY).iter().collect::<Vec<_>>(),
        ["Origin, Cookie, Accept-Encoding"]
    );
    let mut h = headers(&[("vary", "origin, accept-encoding")]);
    add_vary(&mut h);
    assert_eq!(h[header::VARY], "origin, accept-encoding");
    let mut h = headers(&[("vary", "*")]);
    add_vary(&mut h);
    assert_eq!(h[header::VARY], "*");
}

#[test]
fn strong_etags_become_weak() {
    let mut h = headers(&[("etag", "\"abc\"")]);
    weaken_etag(&mut h);
    assert_eq!(h[header::ETAG], "W/\"abc\"");
    let mut h = headers(&[("etag", "W/\"abc\"")]);
    weaken_etag(&mut h);
    assert_eq!(h[header::ETAG], "W/\"abc\"");
}

/// A member's body as scripted: data, "nothing for now", trailers.
enum Step {
    Data(Vec<u8>),
    Pending,
    Trailers,
}

struct Scripted(VecDeque<Step>);

impl Body for Scripted {
    type Data = Bytes;
    type Error = ExchangeError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.0.pop_front() {
            Some(Step::Data(data)) => Poll::Ready(Some(Ok(Frame::data(data.into())))),
            Some(Step::Pending) => {
                cx.waker().wake_by_ref();
                Poll::Pending
            }
            Some(Step::Trailers) => {
                let mut trailers = HeaderMap::new();
                trailers.insert("x-sum", HeaderValue::from_static("42"));
                Poll::Ready(Some(Ok(Frame::trailers(trailers))))
            }
            None => Poll::Ready(None),
        }
    }
}

fn decode(algorithm: Algorithm, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    match algorithm {
        Algorithm::Gzip => {
            flate2::read::GzDecoder::new(data)
                .read_to_end(&mut out)
                .unwrap();
        }
        Algorithm::Br => {
            brotli::Decompressor::new(data, 4096)
                .read_to_end(&mut out)
                .unwrap();
        }
        Algorithm::Zstd => out = zstd::decode_all(data).unwrap(),
    }
    out
}

/// What a decoder has made of a stream's first bytes (cut anywhere).
fn decode_prefix(algorithm: Algorithm, data: &[u8]) -> Vec<u8> {
    match algorithm {
        Algorithm::Gzip => {
            let mut decoder = flate2::write::GzDecoder::new(Vec::new());
            decoder.write_all(data).unwrap();
            decoder.flush().unwrap();
            decoder.get_ref().clone()
        }
        Algorithm::Br => {
            let mut decoder = brotli::DecompressorWriter::new(Vec::new(), 4096);
            decoder.write_all(data).unwrap();
            decoder.flush().unwrap();
            decoder.get_ref().clone()
        }
        Algorithm::Zstd => {
            let mut decoder = zstd::stream::write::Decoder::new(Vec::new()).unwrap();
            decoder.write_all(data).unwrap();
            decoder.flush().unwrap();
            decoder.get_ref().clone()
        }
    }
}

/// Pseudo-random text of `len` bytes: compressible, not trivially.
fn text(len: usize) -> Vec<u8> {
    let words = [
        &b"proxy "[..],
        b"member ",
        b"route ",
        b"cluster ",
        b"table\n",
        b"switchyard ",
    ];
    let mut seed = 7u32;
    let mut out = Vec::with_capacity(len + 16);
    while out.len() < len {
        seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        out.extend_from_slice(words[(seed >> 16) as usize % words.len()]);
    }
    out.truncate(len);
    out
}

#[tokio::test]
async fn a_large_body_round_trips_in_every_coding() {
    let original = text(1_000_000);
    for algorithm in ALL {
        let steps = original
            .chunks(8 * 1024)
            .map(|c| Step::Data(c.to_vec()))
            .collect();
        let mut body = Compressing::new(Scripted(steps), algorithm);
        let mut compressed = Vec::new();
        while let Some(frame) = body.frame().await {
            compressed.extend_from_slice(&frame.unwrap().into_data().unwrap());
        }
        assert!(body.is_end_stream());
        assert!(
            compressed.len() < original.len() / 3,
            "{algorithm:?}: {} bytes",
            compressed.len()
        );
        assert_eq!(decode(algorithm, &compressed), original, "{algorithm:?}");
    }
}

#[tokio::test]
async fn what_came_before_a_pause_goes_out_decodable_and_trailers_follow() {
    for algorithm in ALL {
        let steps = VecDeque::from([
            Step::Data(b"data: first\n\n".to_vec()),
            Step::Pending,
            Step::Data(b"data: second\n\n".to_vec()),
            Step::Trailers,
        ]);
        let mut body = Compressing::new(Scripted(steps), algorithm);
        // Polled by hand: the first poll that sees the member pause must
        // hand out all of "first", decodable on its own.
        let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(
            decode_prefix(algorithm, &first),
            b"data: first\n\n",
            "{algorithm:?}"
        );
        let mut rest = first.to_vec();
        let mut trailers = None;
        while let Some(frame) = body.frame().await {
            match frame.unwrap().into_data() {
                Ok(data) => rest.extend_from_slice(&data),
                Err(frame) => trailers = frame.into_trailers().ok(),
            }
        }
        assert_eq!(decode(algorithm, &rest), b"data: first\n\ndata: second\n\n");
        assert_eq!(trailers.unwrap()["x-sum"], "42", "{algorithm:?}");
    }
}

#[tokio::test]
async fn an_empty_body_is_a_valid_empty_stream() {
    for algorithm in ALL {
        let mut body = Compressing::new(Scripted(VecDeque::new()), algorithm);
        let mut compressed = Vec::new();
        while let Some(frame) = body.frame().await {
            compressed.extend_from_slice(&frame.unwrap().into_data().unwrap());
        }
        assert!(!compressed.is_empty());
        assert_eq!(decode(algorithm, &compressed), b"");
    }
}
