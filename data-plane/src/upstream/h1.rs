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
/// The longest chunk-size or trailer line of a chunked body.
const MAX_CHUNK_LINE: usize = 4096;

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
        let framing = framing(status, method, &map)?;
        // Both framings at once is how smuggling starts: use this answer, then close.
        let ambiguous =
            map.contains_key(header::TRANSFER_ENCODING) && map.contains_key(header::CONTENT_LENGTH);
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

/// RFC 9112, 6.3: how the body of a response to `method` ends.
fn framing(status: StatusCode, method: &Method, headers: &HeaderMap) -> Result<Framing, H1Error> {
    if method == Method::HEAD
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return Ok(Framing::Empty);
    }
    if headers.contains_key(header::TRANSFER_ENCODING) {
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
    let mut length = None;
    for value in headers.get_all(header::CONTENT_LENGTH) {
        for part in value
            .to_str()
            .map_err(|_| H1Error::ContentLength)?
            .split(',')
        {
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
    Ok(match length {
        Some(0) => Framing::Empty,
        Some(n) => Framing::Length(n),
        None => Framing::UntilClose,
    })
}

fn keeps_alive(version: Version, headers: &HeaderMap) -> bool {
    let has = |token: &str| {
        headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    };
    match version {
        Version::HTTP_10 => has("keep-alive"),
        _ => !has("close"),
    }
}

/// Where a chunked body is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chunked {
    /// Expecting a chunk-size line.
    Size,
    /// Inside a chunk, this many bytes left.
    Data(u64),
    /// After a chunk's data, expecting its CRLF.
    DataEnd,
    /// After the last chunk, reading trailer lines up to the empty one.
    Trailers,
    Done,
}

/// What [`Chunked::decode`] found in the buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    Data(Bytes),
    /// More bytes are needed.
    More,
    Done,
}

impl Chunked {
    /// Takes what it can from `buf`: the next piece of data, or the end.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, H1Error> {
        loop {
            match *self {
                Chunked::Size => {
                    let Some(line) = take_line(buf)? else {
                        return Ok(Decoded::More);
                    };
                    let digits = line[..].split(|&b| b == b';').next().unwrap_or_default();
                    let digits = digits.trim_ascii();
                    if digits.is_empty() || digits.len() > 15 {
                        return Err(H1Error::Chunked("chunk size"));
                    }
                    let size = std::str::from_utf8(digits)
                        .ok()
                        .and_then(|d| u64::from_str_radix(d, 16).ok())
                        .ok_or(H1Error::Chunked("chunk size"))?;
                    *self = if size == 0 {
                        Chunked::Trailers
                    } else {
                        Chunked::Data(size)
                    };
                }
                Chunked::Data(left) => {
                    if buf.is_empty() {
                        return Ok(Decoded::More);
                    }
                    let n = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
                    let rest = left - n as u64;
                    *self = if rest == 0 {
                        Chunked::DataEnd
                    } else {
                        Chunked::Data(rest)
                    };
                    return Ok(Decoded::Data(buf.split_to(n).freeze()));
                }
                Chunked::DataEnd => {
                    if buf.len() < 2 {
                        return Ok(Decoded::More);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(H1Error::Chunked("no CRLF after chunk data"));
                    }
                    buf.advance(2);
                    *self = Chunked::Size;
                }
                Chunked::Trailers => {
                    let Some(line) = take_line(buf)? else {
                        return Ok(Decoded::More);
                    };
                    if line.is_empty() {
                        *self = Chunked::Done;
                    }
                }
                Chunked::Done => return Ok(Decoded::Done),
            }
        }
    }
}

/// Takes one CRLF-terminated line off `buf` (without the CRLF).
fn take_line(buf: &mut BytesMut) -> Result<Option<BytesMut>, H1Error> {
    match buf.iter().position(|&b| b == b'\n') {
        Some(end) => {
            let mut line = buf.split_to(end + 1);
            line.truncate(end);
            if line.last() == Some(&b'\r') {
                line.truncate(end - 1);
            }
            Ok(Some(line))
        }
        None if buf.len() > MAX_CHUNK_LINE => Err(H1Error::Chunked("line too long")),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests;
