//! HTTP/1.1 towards members, as bytes: the request head the proxy writes, the
//! response head it parses, and how each body is delimited (RFC 9112). Pure
//! functions over buffers; [`crate::upstream::exchange`] drives them over a connection.

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode, Version};

/// The largest response head a member may send.
pub const MAX_HEAD: usize = 64 * 1024;
/// The most header fields a response head may have.
pub const MAX_HEADERS: usize = 128;
/// The longest chunk-size line of a chunked body (extensions included).
const MAX_CHUNK_LINE: usize = 4096;
/// The most hex digits a chunk size may have (no leading-zero games, no overflow).
const MAX_CHUNK_SIZE_DIGITS: usize = 15;
/// The most extension bytes a whole chunked body may carry (hyper's limit).
pub const MAX_CHUNK_EXTENSIONS: usize = 16 * 1024;
/// The largest trailer section of a chunked body, in bytes (hyper's limit).
pub const MAX_TRAILERS_SIZE: usize = 16 * 1024;
/// The most trailer fields a chunked body may end with.
pub const MAX_TRAILERS: usize = 64;

/// Why a member's answer is not valid HTTP/1.1 (the client sees 502).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum H1Error {
    #[error("invalid response head: {0}")]
    Head(String),
    #[error("response head larger than {MAX_HEAD} bytes")]
    HeadTooLarge,
    #[error("invalid content-length")]
    ContentLength,
    #[error("invalid chunked body: {0}")]
    Chunked(&'static str),
    /// A 101 to a request that did not ask to upgrade.
    #[error("the member switched protocols (101) unasked")]
    Upgrade,
}

/// How a request body is sent to the member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestFraming {
    /// No body, or one whose `content-length` the head already carries.
    AsIs,
    /// A body of unknown length: `transfer-encoding: chunked`.
    Chunked,
}

/// Writes the request line and headers (origin-form target, `HTTP/1.1`).
pub fn encode_request_head(
    out: &mut BytesMut,
    method: &Method,
    target: &str,
    headers: &HeaderMap,
    framing: RequestFraming,
) {
    let size = headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum::<usize>();
    out.reserve(method.as_str().len() + target.len() + size + 48);
    out.extend_from_slice(method.as_str().as_bytes());
    out.extend_from_slice(b" ");
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if framing == RequestFraming::Chunked {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// Appends one chunk of a chunked body.
pub fn encode_chunk(out: &mut BytesMut, data: &[u8]) {
    if data.is_empty() {
        return;
    }
    out.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

/// The last chunk of a chunked body (no trailers).
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// Appends the last chunk of a chunked body with `trailers` (those fields
/// that may be trailers; see [`is_allowed_trailer`]).
pub fn encode_last_chunk(out: &mut BytesMut, trailers: &HeaderMap) {
    out.extend_from_slice(b"0\r\n");
    for (name, value) in trailers {
        if is_allowed_trailer(name) {
            out.extend_from_slice(name.as_str().as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
    }
    out.extend_from_slice(b"\r\n");
}

/// How a response body ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body (`HEAD`, 204, 304).
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// `transfer-encoding: chunked`.
    Chunked,
    /// Until the member closes the connection.
    UntilClose,
}

/// A parsed response head.
#[derive(Debug)]
pub struct ResponseHead {
    pub status: StatusCode,
    pub version: Version,
    pub headers: HeaderMap,
    pub framing: Framing,
    /// Whether the connection may carry another request after this one.
    pub keep_alive: bool,
}

/// Parses the first response head in `buf`, skipping interim (1xx) ones but
/// not a 101; consumes what it parsed. `Ok(None)`: the head is not complete yet.
pub fn parse_response(
    buf: &mut BytesMut,
    method: &Method,
) -> Result<Option<ResponseHead>, H1Error> {
    loop {
        // Uninitialised: a response has a handful of headers, not MAX_HEADERS.
        let mut headers = [const { std::mem::MaybeUninit::uninit() }; MAX_HEADERS];
        let mut response = httparse::Response::new(&mut []);
        let parsed = httparse::ParserConfig::default()
            .parse_response_with_uninit_headers(&mut response, buf, &mut headers)
            .map_err(|e| H1Error::Head(e.to_string()))?;
        let httparse::Status::Complete(len) = parsed else {
            return if buf.len() > MAX_HEAD {
                Err(H1Error::HeadTooLarge)
            } else {
                Ok(None)
            };
        };
        // Whether it came in one read or many, a head is no larger than this.
        if len > MAX_HEAD {
            return Err(H1Error::HeadTooLarge);
        }
        let code = response.code.unwrap_or(0);
        let status =
            StatusCode::from_u16(code).map_err(|_| H1Error::Head(format!("status {code}")))?;
        let version = match response.version {
            Some(0) => Version::HTTP_10,
            _ => Version::HTTP_11,
        };
        // Header values are slices of the head, not copies: note where each
        // field is, then cut the head out of the buffer once.
        let base = buf.as_ptr() as usize;
        let within = |part: &[u8]| -> (usize, usize) {
            match (part.as_ptr() as usize).checked_sub(base) {
                Some(start) if !part.is_empty() && start + part.len() <= len => {
                    (start, start + part.len())
                }
                _ => (0, 0),
            }
        };
        let spans: Vec<_> = response
            .headers
            .iter()
            .map(|field| (within(field.name.as_bytes()), within(field.value)))
            .collect();
        let head = buf.split_to(len).freeze();
        let mut map = HeaderMap::with_capacity(spans.len());
        for ((name_start, name_end), (start, end)) in spans {
            let name = HeaderName::from_bytes(&head[name_start..name_end])
                .map_err(|_| H1Error::Head("invalid header name".into()))?;
            let value = HeaderValue::from_maybe_shared(head.slice(start..end))
                .map_err(|_| H1Error::Head(format!("value of {name}")))?;
            map.append(name, value);
        }
        if status == StatusCode::SWITCHING_PROTOCOLS {
            // Another protocol from here on: whether it was asked for is the
            // exchange's call, and nothing after the head is HTTP's.
            return Ok(Some(ResponseHead {
                status,
                version,
                headers: map,
                framing: Framing::Empty,
                keep_alive: false,
            }));
        }
        if status.is_informational() {
            continue;
        }
        // Both framings at once is how smuggling starts: use this answer, then close.
        let ambiguous =
            map.contains_key(header::TRANSFER_ENCODING) && map.contains_key(header::CONTENT_LENGTH);
        let framing = framing(status, method, &mut map)?;
        let keep_alive = framing != Framing::UntilClose && !ambiguous && keeps_alive(version, &map);
        return Ok(Some(ResponseHead {
            status,
            version,
            headers: map,
            framing,
            keep_alive,
        }));
    }
}

/// RFC 9112, 6.3: how the body of a response to `method` ends. Leaves the
/// head's `Content-Length` as the client may be told it: removed beside
/// `Transfer-Encoding` (which wins), one value where the member repeated it.
fn framing(
    status: StatusCode,
    method: &Method,
    headers: &mut HeaderMap,
) -> Result<Framing, H1Error> {
    let no_body = method == Method::HEAD
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    if headers.contains_key(header::TRANSFER_ENCODING) {
        headers.remove(header::CONTENT_LENGTH);
        if no_body {
            return Ok(Framing::Empty);
        }
        let chunked_last = headers
            .get_all(header::TRANSFER_ENCODING)
            .iter()
            .next_back()
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.rsplit(',').next())
            .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"));
        return Ok(if chunked_last {
            Framing::Chunked
        } else {
            Framing::UntilClose
        });
    }
    let length = content_length(headers);
    if let Ok(Some((n, false))) = length {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(n));
    }
    if no_body {
        // Its length is the one a GET would have had: told, never read.
        return Ok(Framing::Empty);
    }
    Ok(match length? {
        Some((0, _)) => Framing::Empty,
        Some((n, _)) => Framing::Length(n),
        None => Framing::UntilClose,
    })
}

/// The head's `Content-Length`, and whether it came as one plain value;
/// repeated identical values (`5, 5` or two lines) are one length, differing
/// ones an error.
fn content_length(headers: &HeaderMap) -> Result<Option<(u64, bool)>, H1Error> {
    let mut length = None;
    let mut single = true;
    for (i, value) in headers.get_all(header::CONTENT_LENGTH).iter().enumerate() {
        let text = value.to_str().map_err(|_| H1Error::ContentLength)?;
        single &= i == 0 && !text.contains(',');
        for part in text.split(',') {
            let part = part.trim();
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(H1Error::ContentLength);
            }
            let n: u64 = part.parse().map_err(|_| H1Error::ContentLength)?;
            if length.is_some_and(|l| l != n) {
                return Err(H1Error::ContentLength);
            }
            length = Some(n);
        }
    }
    Ok(length.map(|n| (n, single)))
}

fn keeps_alive(version: Version, headers: &HeaderMap) -> bool {
    let has = |token: &[u8]| {
        headers.get_all(header::CONNECTION).iter().any(|value| {
            value
                .as_bytes()
                .split(|&b| b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(token))
        })
    };
    match version {
        Version::HTTP_10 => has(b"keep-alive"),
        _ => !has(b"close"),
    }
}

/// Where a chunked body is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    /// Expecting a chunk-size line.
    Size,
    /// Inside a chunk ([`ChunkedDecoder::left`] bytes left).
    Data,
    /// After a chunk's data, expecting its CRLF.
    DataEnd,
    /// After the last chunk, reading the trailer section up to its empty line.
    Trailers,
    Done,
}

/// Decodes a chunked body (RFC 9112, 7.1) as strictly as hyper does: sizes
/// are hex digits only (no sign, no space before or after them), every line
/// ends in CRLF (a bare LF or CR is an error), extensions are skipped but
/// counted against [`MAX_CHUNK_EXTENSIONS`], and the trailer section is
/// capped in bytes and fields. `Copy`: it is a few words of state, no buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkedDecoder {
    /// Bytes left in the current chunk.
    left: u64,
    /// Extension bytes seen so far in this body (at most [`MAX_CHUNK_EXTENSIONS`]).
    extensions: u32,
    state: ChunkState,
}

/// What [`ChunkedDecoder::decode`] found in the buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    Data(Bytes),
    /// The trailer fields after the last chunk; the body is complete (the
    /// next call says `Done`).
    Trailers(HeaderMap),
    /// More bytes are needed.
    More,
    Done,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl ChunkedDecoder {
    /// A decoder at the start of a body.
    pub fn new() -> Self {
        ChunkedDecoder {
            left: 0,
            extensions: 0,
            state: ChunkState::Size,
        }
    }

    /// Takes what it can from `buf`: the next piece of data, the trailers,
    /// or the end. What follows the body stays in `buf`.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, H1Error> {
        loop {
            match self.state {
                ChunkState::Size => {
                    let Some(line) = parse_size_line(buf)? else {
                        return Ok(Decoded::More);
                    };
                    // A line is at most MAX_CHUNK_LINE bytes: no overflow.
                    let extensions = self.extensions as usize + line.extension;
                    if extensions > MAX_CHUNK_EXTENSIONS {
                        return Err(H1Error::Chunked("chunk extensions too long"));
                    }
                    self.extensions = extensions as u32;
                    buf.advance(line.len);
                    self.left = line.size;
                    self.state = match line.size {
                        0 => ChunkState::Trailers,
                        _ => ChunkState::Data,
                    };
                }
                ChunkState::Data => {
                    if buf.is_empty() {
                        return Ok(Decoded::More);
                    }
                    let n = usize::try_from(self.left)
                        .unwrap_or(usize::MAX)
                        .min(buf.len());
                    self.left -= n as u64;
                    if self.left == 0 {
                        self.state = ChunkState::DataEnd;
                    }
                    return Ok(Decoded::Data(buf.split_to(n).freeze()));
                }
                ChunkState::DataEnd => {
                    match buf.get(..2) {
                        Some(b"\r\n") => buf.advance(2),
                        Some(_) => return Err(H1Error::Chunked("no CRLF after chunk data")),
                        None if buf.first().is_some_and(|&b| b != b'\r') => {
                            return Err(H1Error::Chunked("no CRLF after chunk data"));
                        }
                        None => return Ok(Decoded::More),
                    }
                    self.state = ChunkState::Size;
                }
                ChunkState::Trailers => {
                    let Some(trailers) = parse_trailers(buf)? else {
                        return Ok(Decoded::More);
                    };
                    self.state = ChunkState::Done;
                    if !trailers.is_empty() {
                        return Ok(Decoded::Trailers(trailers));
                    }
                }
                ChunkState::Done => return Ok(Decoded::Done),
            }
        }
    }
}

/// A complete chunk-size line.
struct SizeLine {
    /// The line's length, CRLF included.
    len: usize,
    size: u64,
    /// How many bytes of it are extensions (from the first `;` to the CR).
    extension: usize,
}

/// Parses `1*HEXDIG [ BWS ";" chunk-ext ] CRLF` at the start of `buf`;
/// `Ok(None)`: not complete yet. Stricter than `httparse::parse_chunk_size`,
/// which takes an empty size as 0, space after the digits, and a bare LF
/// inside an extension.
fn parse_size_line(buf: &[u8]) -> Result<Option<SizeLine>, H1Error> {
    const BAD: H1Error = H1Error::Chunked("chunk size");
    let digits = buf.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits > MAX_CHUNK_SIZE_DIGITS {
        return Err(BAD);
    }
    let size = buf
        .get(..digits)
        .unwrap_or_default()
        .iter()
        .fold(0u64, |size, &b| {
            // At most 15 digits: no overflow.
            (size << 4) | u64::from(char::from(b).to_digit(16).unwrap_or(0))
        });
    let mut at = digits;
    let mut extension_start = None;
    loop {
        if at > MAX_CHUNK_LINE {
            return Err(H1Error::Chunked("chunk-size line too long"));
        }
        let Some(&b) = buf.get(at) else {
            return Ok(None);
        };
        match b {
            _ if digits == 0 => return Err(BAD),
            b'\r' => match buf.get(at + 1) {
                Some(b'\n') => {
                    return Ok(Some(SizeLine {
                        len: at + 2,
                        size,
                        extension: extension_start.map_or(0, |start| at - start),
                    }));
                }
                Some(_) => return Err(H1Error::Chunked("bare CR in chunk-size line")),
                None => return Ok(None),
            },
            b'\n' => return Err(H1Error::Chunked("bare LF in chunk-size line")),
            b';' if extension_start.is_none() => extension_start = Some(at),
            // Bad whitespace is allowed before the `;` of an extension, not
            // before the CRLF; inside the extension, any visible byte.
            b' ' | b'\t' if extension_start.is_none() => {
                let spaces = buf
                    .get(at..)
                    .unwrap_or_default()
                    .iter()
                    .take_while(|&&b| b == b' ' || b == b'\t')
                    .count();
                match buf.get(at + spaces) {
                    Some(b';') => {}
                    Some(_) => return Err(BAD),
                    None => return Ok(None),
                }
                at += spaces;
                continue;
            }
            b'\t' | 0x20..=0x7e | 0x80..=0xff if extension_start.is_some() => {}
            _ => return Err(BAD),
        }
        at += 1;
    }
}

/// Parses the trailer section at the start of `buf` (fields, then an empty
/// line) and consumes it; `Ok(None)`: not complete yet. Fields that frame or
/// route a message (RFC 9110, 6.5.1) are dropped.
fn parse_trailers(buf: &mut BytesMut) -> Result<Option<HeaderMap>, H1Error> {
    match buf.get(..2) {
        Some(b"\r\n") => {
            buf.advance(2);
            return Ok(Some(HeaderMap::new()));
        }
        None if buf.first().is_none_or(|&b| b == b'\r') => return Ok(None),
        _ => {}
    }
    let window = &buf[..buf.len().min(MAX_TRAILERS_SIZE)];
    let Some(end) = window.windows(4).position(|w| w == b"\r\n\r\n") else {
        if buf.len() >= MAX_TRAILERS_SIZE {
            return Err(H1Error::Chunked("trailers too large"));
        }
        return match bare_line_end(&buf[..]) {
            Some(error) => Err(error),
            None => Ok(None),
        };
    };
    let section = &buf[..end + 4];
    if let Some(error) = bare_line_end(section) {
        return Err(error);
    }
    let mut fields = [httparse::EMPTY_HEADER; MAX_TRAILERS];
    let parsed = match httparse::parse_headers(section, &mut fields) {
        Ok(httparse::Status::Complete((len, parsed))) if len == section.len() => parsed,
        Err(httparse::Error::TooManyHeaders) => return Err(H1Error::Chunked("too many trailers")),
        _ => return Err(H1Error::Chunked("invalid trailer")),
    };
    let mut trailers = HeaderMap::with_capacity(parsed.len());
    for field in parsed.iter() {
        let name = HeaderName::from_bytes(field.name.as_bytes())
            .map_err(|_| H1Error::Chunked("invalid trailer name"))?;
        let value = HeaderValue::from_bytes(field.value)
            .map_err(|_| H1Error::Chunked("invalid trailer"))?;
        if is_allowed_trailer(&name) {
            trailers.append(name, value);
        }
    }
    buf.advance(end + 4);
    Ok(Some(trailers))
}

/// A line ending that is not CRLF in `bytes` (an incomplete CRLF at the end
/// is not one yet).
fn bare_line_end(bytes: &[u8]) -> Option<H1Error> {
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            b'\n' if i == 0 || bytes[i - 1] != b'\r' => {
                return Some(H1Error::Chunked("bare LF in trailers"));
            }
            b'\r' if bytes.get(i + 1).is_some_and(|&next| next != b'\n') => {
                return Some(H1Error::Chunked("bare CR in trailers"));
            }
            _ => {}
        }
    }
    None
}

/// Whether a field may travel as a trailer: not one that frames, routes,
/// authorises or controls the connection (hyper's encoder drops the same,
/// and `Connection`-level ones besides).
fn is_allowed_trailer(name: &HeaderName) -> bool {
    !matches!(
        *name,
        header::AUTHORIZATION
            | header::CACHE_CONTROL
            | header::CONNECTION
            | header::CONTENT_ENCODING
            | header::CONTENT_LENGTH
            | header::CONTENT_RANGE
            | header::CONTENT_TYPE
            | header::HOST
            | header::MAX_FORWARDS
            | header::SET_COOKIE
            | header::TE
            | header::TRAILER
            | header::TRANSFER_ENCODING
            | header::UPGRADE
    ) && name.as_str() != "keep-alive"
}

#[cfg(test)]
mod tests;
