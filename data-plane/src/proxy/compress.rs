//! Response compression, for routes with `compress`: the coding chosen from
//! the client's `Accept-Encoding` when the request comes in, the response's
//! headers checked and rewritten when the member's head is in, and the body
//! compressed as it streams ([`Compressing`]), flushed whenever the member
//! has nothing more for now, so a slow stream reaches the client piece by
//! piece. A route without `compress` never gets here.
//!
//! The codecs are async-compression's (its `codecs` layer, driven frame by
//! frame from the body, so trailers pass and nothing is copied through an
//! `AsyncRead`), at levels chosen for a proxy: fast, with bounded memory
//! per stream (the constants below say how much).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use async_compression::Level;
use async_compression::codecs::flate::params::FlateEncoderParams;
use async_compression::codecs::{BrotliEncoder, EncodeV2, GzipEncoder, ZstdEncoder};
use async_compression::core::util::{PartialBuffer, WriteBuffer};
use async_compression::zstd::CParameter;
use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use switchyard_shared::Algorithm;

use crate::admin::metrics;
use crate::config::rules::CompressRule;
use crate::proxy::body::{BodyError, ProxyBody};

/// gzip's level: 1, nginx's default `gzip_comp_level` (the fastest; 6 saves
/// a few % more for several times the CPU).
const GZIP_LEVEL: i32 = 1;
/// Brotli's quality: 3. Measured per stream (64 KiB / 1 MB of text sent):
/// quality 3 holds about 0.7 / 1.4 MB, quality 4 about 1.3 / 3 MB for some
/// 6 % smaller output, and from 5 on the CPU per byte climbs steeply; gzip 1
/// holds 0.2 / 0.3 MB, zstd 1 0.25 / 0.6 MB.
const BROTLI_QUALITY: i32 = 3;
/// Brotli's window: 2^18 = 256 KiB (the default 4 MiB would be held per
/// long stream).
const BROTLI_WINDOW_LOG: i32 = 18;
/// zstd's level: 1, its fastest regular level (about gzip 6's ratio).
const ZSTD_LEVEL: i32 = 1;
/// zstd's window: 2^18 = 256 KiB, as brotli's (level 1 would take 512 KiB
/// for a body of unknown length).
const ZSTD_WINDOW_LOG: u32 = 18;
/// The compressed bytes gathered before a frame goes out (also: when the
/// member has nothing more for now, and at the end).
const OUT_CHUNK: usize = 16 * 1024;
/// Below this much room left, the output buffer is sent and a new one made.
const OUT_MIN_ROOM: usize = 512;

static VARY_ACCEPT_ENCODING: HeaderValue = HeaderValue::from_static("Accept-Encoding");

/// What the request said about compression, taken before it goes upstream.
#[derive(Debug, Clone, Copy)]
pub struct Asked {
    /// The coding to use, if the client accepts one of the route's.
    pub algorithm: Option<Algorithm>,
    /// A `HEAD` answer has no body to compress.
    pub head: bool,
}

impl Asked {
    pub fn of(method: &Method, headers: &HeaderMap, rule: &CompressRule) -> Self {
        Asked {
            algorithm: negotiate(headers, &rule.algorithms),
            head: method == Method::HEAD,
        }
    }
}

/// The coding to answer with: of the route's `algorithms`, the one with the
/// highest q-value in `Accept-Encoding` (`*` standing for those not named;
/// ties go to the route's order). None when the client named none of them
/// (or only with `q=0`), or when it prefers `identity` by a higher q-value.
pub fn negotiate(headers: &HeaderMap, algorithms: &[Algorithm]) -> Option<Algorithm> {
    let weights = Weights::parse(headers);
    let mut best: Option<(Algorithm, u16)> = None;
    for &algorithm in algorithms {
        let weight = weights.of(algorithm);
        if weight > 0 && best.is_none_or(|(_, w)| weight > w) {
            best = Some((algorithm, weight));
        }
    }
    match (best, weights.identity) {
        (Some((_, weight)), Some(identity)) if identity > weight => None,
        (best, _) => best.map(|(algorithm, _)| algorithm),
    }
}

/// The q-values of an `Accept-Encoding`, in thousandths, each coding's as
/// first given.
#[derive(Debug, Default)]
struct Weights {
    /// br, zstd, gzip.
    named: [Option<u16>; 3],
    star: Option<u16>,
    identity: Option<u16>,
}

impl Weights {
    fn parse(headers: &HeaderMap) -> Self {
        let mut weights = Weights::default();
        for value in headers.get_all(header::ACCEPT_ENCODING) {
            for item in value.as_bytes().split(|&b| b == b',') {
                if let Some((coding, weight)) = entry(item)
                    && let Some(slot) = weights.slot(coding)
                {
                    slot.get_or_insert(weight);
                }
            }
        }
        weights
    }

    fn slot(&mut self, coding: &[u8]) -> Option<&mut Option<u16>> {
        let is = |name: &[u8]| coding.eq_ignore_ascii_case(name);
        if is(b"br") {
            Some(&mut self.named[0])
        } else if is(b"zstd") {
            Some(&mut self.named[1])
        } else if is(b"gzip") || is(b"x-gzip") {
            Some(&mut self.named[2])
        } else if coding == b"*" {
            Some(&mut self.star)
        } else if is(b"identity") {
            Some(&mut self.identity)
        } else {
            None
        }
    }

    /// A coding's q-value: its own, else that of `*`, else 0.
    fn of(&self, algorithm: Algorithm) -> u16 {
        let named = match algorithm {
            Algorithm::Br => self.named[0],
            Algorithm::Zstd => self.named[1],
            Algorithm::Gzip => self.named[2],
        };
        named.or(self.star).unwrap_or(0)
    }
}

/// One `coding;q=…` entry: the coding and its q-value (1 when not given);
/// none when empty or when its q-value is malformed (ignored, as if not sent).
fn entry(item: &[u8]) -> Option<(&[u8], u16)> {
    let mut parts = item.split(|&b| b == b';');
    let coding = parts.next().unwrap_or_default().trim_ascii();
    let mut weight = Some(1000);
    for param in parts {
        let Some(eq) = param.iter().position(|&b| b == b'=') else {
            continue;
        };
        let (key, value) = param.split_at(eq);
        if key.trim_ascii().eq_ignore_ascii_case(b"q") {
            weight = parse_q(value.get(1..).unwrap_or_default().trim_ascii());
        }
    }
    Some((coding, weight?)).filter(|(coding, _)| !coding.is_empty())
}

/// A q-value (RFC 9110, 12.4.2) in thousandths: `0`, `0.5`, `1`, `1.000`.
fn parse_q(text: &[u8]) -> Option<u16> {
    let (int, frac) = match text.iter().position(|&b| b == b'.') {
        Some(dot) => {
            let (int, rest) = text.split_at(dot);
            (int, rest.get(1..).unwrap_or_default())
        }
        None => (text, &b""[..]),
    };
    if frac.len() > 3 || !frac.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut thousandths = 0u16;
    for i in 0..3 {
        thousandths = thousandths * 10 + u16::from(frac.get(i).map_or(0, |d| d - b'0'));
    }
    match int {
        b"0" => Some(thousandths),
        b"1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

/// The response on its way to the client, compressed when it may be: the
/// route lists its type, its length (if known) is at least `min_size`, the
/// member did not encode it already, it has a body (not 1xx, 204, 304, nor
/// an answer to `HEAD`), it is whole (not 206 nor a `Content-Range`), and it
/// does not say `Cache-Control: no-transform`. Every response that could be
/// compressed gets `Vary: Accept-Encoding`, compressed or not.
pub fn respond(
    response: Response<ProxyBody>,
    rule: &CompressRule,
    asked: Asked,
) -> Response<ProxyBody> {
    let (mut parts, body) = response.into_parts();
    if !compressible(parts.status, &parts.headers, rule) {
        return Response::from_parts(parts, body);
    }
    add_vary(&mut parts.headers);
    let (Some(algorithm), false) = (asked.algorithm, asked.head) else {
        return Response::from_parts(parts, body);
    };
    if !matches!(body, ProxyBody::Upstream(_) | ProxyBody::H2(_)) {
        return Response::from_parts(parts, body);
    }
    let headers = &mut parts.headers;
    headers.insert(
        header::CONTENT_ENCODING,
        HeaderValue::from_static(algorithm.as_str()),
    );
    headers.remove(header::CONTENT_LENGTH);
    headers.remove(header::ACCEPT_RANGES);
    weaken_etag(headers);
    metrics::compressed(algorithm);
    let body = ProxyBody::Compressed(Box::new(Compressing::new(body, algorithm)));
    Response::from_parts(parts, body)
}

/// Whether a response with this status and these headers may be compressed
/// (whatever the client accepts).
fn compressible(status: StatusCode, headers: &HeaderMap, rule: &CompressRule) -> bool {
    if status.is_informational()
        || matches!(
            status,
            StatusCode::NO_CONTENT | StatusCode::NOT_MODIFIED | StatusCode::PARTIAL_CONTENT
        )
        || headers.contains_key(header::CONTENT_ENCODING)
        || headers.contains_key(header::CONTENT_RANGE)
    {
        return false;
    }
    let fits = headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|t| rule.compresses_type(t.as_bytes()));
    if !fits {
        return false;
    }
    let small = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .is_some_and(|length| length < rule.min_size);
    !small && !has_token(headers, &header::CACHE_CONTROL, b"no-transform")
}

/// Whether any line of header `name` lists `token` (case-insensitive).
fn has_token(headers: &HeaderMap, name: &header::HeaderName, token: &[u8]) -> bool {
    headers.get_all(name).iter().any(|value| {
        value
            .as_bytes()
            .split(|&b| b == b',')
            .any(|item| item.trim_ascii().eq_ignore_ascii_case(token))
    })
}

/// `Vary: Accept-Encoding`, merged into the `Vary` there is (one line)
/// unless it already names it or is `*`.
fn add_vary(headers: &mut HeaderMap) {
    if !headers.contains_key(header::VARY) {
        headers.insert(header::VARY, VARY_ACCEPT_ENCODING.clone());
        return;
    }
    if has_token(headers, &header::VARY, b"accept-encoding")
        || has_token(headers, &header::VARY, b"*")
    {
        return;
    }
    let mut merged = Vec::new();
    for value in headers.get_all(header::VARY) {
        let value = value.as_bytes().trim_ascii();
        if !value.is_empty() {
            merged.extend_from_slice(value);
            merged.extend_from_slice(b", ");
        }
    }
    merged.extend_from_slice(VARY_ACCEPT_ENCODING.as_bytes());
    if let Ok(value) = HeaderValue::from_bytes(&merged) {
        headers.insert(header::VARY, value);
    }
}

/// A strong `ETag` becomes weak: the compressed bytes are not the member's.
fn weaken_etag(headers: &mut HeaderMap) {
    let Some(etag) = headers.get(header::ETAG) else {
        return;
    };
    if etag.as_bytes().starts_with(b"\"") {
        let mut weak = Vec::with_capacity(etag.len() + 2);
        weak.extend_from_slice(b"W/");
        weak.extend_from_slice(etag.as_bytes());
        if let Ok(value) = HeaderValue::from_bytes(&weak) {
            headers.insert(header::ETAG, value);
        }
    }
}

/// The encoder of a coding, at the levels chosen above.
fn encoder(algorithm: Algorithm) -> Box<dyn EncodeV2 + Send> {
    match algorithm {
        Algorithm::Gzip => Box::new(GzipEncoder::new(FlateEncoderParams::from(Level::Precise(
            GZIP_LEVEL,
        )))),
        Algorithm::Br => Box::new(BrotliEncoder::new(
            async_compression::brotli::EncoderParams::default()
                .quality(Level::Precise(BROTLI_QUALITY))
                .window_size(BROTLI_WINDOW_LOG),
        )),
        Algorithm::Zstd => Box::new(ZstdEncoder::new_with_params(
            ZSTD_LEVEL,
            &[CParameter::window_log(ZSTD_WINDOW_LOG)],
        )),
    }
}

/// Where a compressed body is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Reading the member's body.
    Body,
    /// The member has nothing more for now: what was encoded goes out.
    Flushing,
    /// The member's body ended: the coding's end is written.
    Finishing,
    /// Everything was sent but the trailers, if any.
    Done,
}

/// A member's body, compressed as it streams.
pub struct Compressing<B> {
    inner: B,
    encoder: Box<dyn EncodeV2 + Send>,
    /// What the member sent and the encoder has not taken yet.
    input: Bytes,
    /// The output buffer (initialised; `filled` bytes of it written).
    out: BytesMut,
    filled: usize,
    /// Something was encoded since the last flush.
    dirty: bool,
    stage: Stage,
    trailers: Option<HeaderMap>,
}

impl<B> std::fmt::Debug for Compressing<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Compressing")
            .field("stage", &self.stage)
            .field("filled", &self.filled)
            .finish_non_exhaustive()
    }
}

impl<B> Compressing<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BodyError>,
{
    pub fn new(inner: B, algorithm: Algorithm) -> Self {
        Compressing {
            inner,
            encoder: encoder(algorithm),
            input: Bytes::new(),
            out: BytesMut::new(),
            filled: 0,
            dirty: false,
            stage: Stage::Body,
            trailers: None,
        }
    }

    /// Makes room in the output buffer if it has too little.
    fn room(&mut self) {
        if self.out.len() - self.filled < OUT_MIN_ROOM {
            debug_assert_eq!(self.filled, 0, "a full buffer is sent first");
            self.out = BytesMut::zeroed(OUT_CHUNK);
        }
    }

    fn full(&self) -> bool {
        self.filled > 0 && self.out.len() - self.filled < OUT_MIN_ROOM
    }

    /// The compressed bytes so far, as a frame.
    fn take(&mut self) -> Frame<Bytes> {
        let data = self.out.split_to(self.filled).freeze();
        self.filled = 0;
        Frame::data(data)
    }

    /// Encodes what input there is into the output buffer.
    fn encode(&mut self) -> io::Result<()> {
        self.room();
        let mut input = PartialBuffer::new(self.input.as_ref());
        let mut output = WriteBuffer::new_initialized(&mut self.out[self.filled..]);
        self.encoder.encode(&mut input, &mut output)?;
        let (consumed, produced) = (input.written_len(), output.written_len());
        if consumed == 0 && produced == 0 {
            return Err(io::Error::other("the encoder took no input"));
        }
        self.filled += produced;
        self.input.advance(consumed);
        Ok(())
    }

    /// Flushes (or, at the end, finishes) the encoder into the output
    /// buffer; whether it is done (else the buffer is full).
    fn drain(&mut self, finish: bool) -> io::Result<bool> {
        self.room();
        let mut output = WriteBuffer::new_initialized(&mut self.out[self.filled..]);
        let done = if finish {
            self.encoder.finish(&mut output)?
        } else {
            self.encoder.flush(&mut output)?
        };
        let produced = output.written_len();
        self.filled += produced;
        if !done && !self.full() && produced == 0 {
            return Err(io::Error::other("the encoder made no progress"));
        }
        Ok(done)
    }

    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        loop {
            if self.full() {
                return Poll::Ready(Some(Ok(self.take())));
            }
            match self.stage {
                Stage::Body if !self.input.is_empty() => {
                    self.encode().map_err(BodyError::Compress)?;
                }
                Stage::Body => match Pin::new(&mut self.inner).poll_frame(cx) {
                    Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                        Ok(data) => {
                            self.dirty |= !data.is_empty();
                            self.input = data;
                        }
                        Err(frame) => {
                            self.trailers = frame.into_trailers().ok();
                            self.stage = Stage::Finishing;
                        }
                    },
                    Poll::Ready(Some(Err(error))) => {
                        return Poll::Ready(Some(Err(error.into())));
                    }
                    Poll::Ready(None) => self.stage = Stage::Finishing,
                    Poll::Pending if self.dirty => self.stage = Stage::Flushing,
                    Poll::Pending if self.filled > 0 => {
                        return Poll::Ready(Some(Ok(self.take())));
                    }
                    Poll::Pending => return Poll::Pending,
                },
                Stage::Flushing => {
                    if self.drain(false).map_err(BodyError::Compress)? {
                        self.dirty = false;
                        self.stage = Stage::Body;
                        if self.filled > 0 {
                            return Poll::Ready(Some(Ok(self.take())));
                        }
                    }
                }
                Stage::Finishing => {
                    if self.drain(true).map_err(BodyError::Compress)? {
                        self.stage = Stage::Done;
                    }
                }
                Stage::Done if self.filled > 0 => return Poll::Ready(Some(Ok(self.take()))),
                Stage::Done => {
                    return Poll::Ready(self.trailers.take().map(|t| Ok(Frame::trailers(t))));
                }
            }
        }
    }
}

impl<B> Body for Compressing<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BodyError>,
{
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        self.get_mut().poll_next(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.stage == Stage::Done && self.filled == 0 && self.trailers.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

#[cfg(test)]
mod tests;
