//! What the client asked for, checked and normalised before routing: the
//! target host (RFC 9112 §3.2, §3.2.2) and the path, whose dot segments are
//! resolved (percent-encoded dots and slashes included) so that a route prefix
//! is a real boundary, as nginx makes it.

use std::borrow::Cow;

use http::header::{self, HeaderValue};
use http::request::Parts;
use http::uri::PathAndQuery;
use http::{StatusCode, Version};

/// Why a request was refused before routing; the message is short and never
/// echoes what the client sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("more than one Host header")]
    TwoHosts,
    #[error("an HTTP/1.1 request needs a Host header")]
    NoHost,
    #[error("invalid Host")]
    InvalidHost,
    #[error("the path goes above the root")]
    AboveRoot,
    #[error("the request target is too long")]
    UriTooLong,
    #[error("both Content-Length and Transfer-Encoding")]
    BothLengths,
}

/// Set by the listener on a request whose head had both `Content-Length` and
/// `Transfer-Encoding` (hyper keeps only the latter): refused with 400, as a
/// request smuggling attempt (RFC 9112 §6.1 allows it; nginx does it).
#[derive(Debug, Clone, Copy)]
pub struct BothLengths;

impl RequestError {
    pub fn status(self) -> StatusCode {
        match self {
            RequestError::UriTooLong => StatusCode::URI_TOO_LONG,
            _ => StatusCode::BAD_REQUEST,
        }
    }
}

/// The request target, checked: the host to route by and the origin-form
/// path and query to match and send on.
#[derive(Debug)]
pub struct Target {
    /// The authority of an absolute-form URI (or h2 `:authority`), else the `Host`.
    pub host: Option<HeaderValue>,
    /// The normalised path with the query as it came.
    pub path_and_query: PathAndQuery,
}

/// Checks the request's host and path; `max_uri` bounds the request target.
pub fn target(parts: &Parts, max_uri: usize) -> Result<Target, RequestError> {
    if parts.extensions.get::<BothLengths>().is_some() {
        return Err(RequestError::BothLengths);
    }
    let uri = &parts.uri;
    let length = uri.scheme_str().map_or(0, |s| s.len() + 3)
        + uri.authority().map_or(0, |a| a.as_str().len())
        + uri.path_and_query().map_or(1, |p| p.as_str().len());
    if length > max_uri {
        return Err(RequestError::UriTooLong);
    }
    let host = host(parts)?;
    let path_and_query = match uri.path_and_query() {
        None => PathAndQuery::from_static("/"),
        Some(original) => match normalize_path(original.path())? {
            Cow::Borrowed(_) => original.clone(),
            Cow::Owned(mut path) => {
                if let Some(query) = original.query() {
                    path.push('?');
                    path.push_str(query);
                }
                // Made of the original's characters only, so still valid.
                PathAndQuery::try_from(path).map_err(|_| RequestError::AboveRoot)?
            }
        },
    };
    Ok(Target {
        host,
        path_and_query,
    })
}

/// The host to route by: the URI's authority when it has one (absolute form,
/// or h2's `:authority`), else the one `Host` header. Two `Host` headers, an
/// invalid one, or none on HTTP/1.1 are refused, whatever the URI says.
pub fn host(parts: &Parts) -> Result<Option<HeaderValue>, RequestError> {
    let mut hosts = parts.headers.get_all(header::HOST).iter();
    let header = hosts.next();
    if hosts.next().is_some() {
        return Err(RequestError::TwoHosts);
    }
    if let Some(header) = header
        && !valid_host(header.as_bytes())
    {
        return Err(RequestError::InvalidHost);
    }
    if let Some(authority) = parts.uri.authority() {
        let authority = authority.as_str();
        if !valid_host(authority.as_bytes()) {
            // Userinfo (`user@host`) included: RFC 9110 §4.2.4.
            return Err(RequestError::InvalidHost);
        }
        return HeaderValue::from_str(authority)
            .map(Some)
            .map_err(|_| RequestError::InvalidHost);
    }
    match header {
        Some(header) => Ok(Some(header.clone())),
        None if parts.version == Version::HTTP_11 => Err(RequestError::NoHost),
        None => Ok(None),
    }
}

/// The bytes a reg-name may have (RFC 3986: unreserved, sub-delims, `%`), as
/// a table: a lookup per byte of every request's `Host`.
static REG_NAME: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = c.is_ascii_alphanumeric()
            || matches!(
                c,
                b'-' | b'.'
                    | b'_'
                    | b'~'
                    | b'!'
                    | b'$'
                    | b'&'
                    | b'\''
                    | b'('
                    | b')'
                    | b'*'
                    | b'+'
                    | b','
                    | b';'
                    | b'='
                    | b'%'
            );
        b += 1;
    }
    table
};

/// `host [":" port]` as RFC 3986 spells it: a reg-name, an IPv4 address or an
/// IP literal in brackets; no userinfo, no spaces; not empty.
fn valid_host(value: &[u8]) -> bool {
    let (host, port) = if let Some(inner) = value.strip_prefix(b"[") {
        let Some(end) = inner.iter().position(|&b| b == b']') else {
            return false;
        };
        let (literal, rest) = inner.split_at(end);
        let ok = !literal.is_empty()
            && literal
                .iter()
                .all(|&b| b.is_ascii_hexdigit() || b == b':' || b == b'.');
        if !ok {
            return false;
        }
        (None, rest.get(1..).unwrap_or_default())
    } else {
        match value.iter().position(|&b| b == b':') {
            Some(at) => (value.get(..at), value.get(at..).unwrap_or_default()),
            None => (Some(value), &b""[..]),
        }
    };
    if let Some(host) = host
        && (host.is_empty() || !host.iter().all(|&b| REG_NAME[usize::from(b)]))
    {
        return false;
    }
    match port.split_first() {
        None => true,
        Some((b':', digits)) => digits.len() <= 5 && digits.iter().all(u8::is_ascii_digit),
        Some(_) => false,
    }
}

/// The path with its dot segments resolved (RFC 3986 §5.2.4), where `%2e`
/// counts as a dot and `%2f` as a slash, and a segment's `;parameters` are
/// ignored for the purpose (`..;x` is `..`, as Tomcat reads it). Borrowed
/// when there is nothing to resolve (the common case: no allocation); when
/// there is, the result is joined with plain slashes. A `..` above the root is
/// refused. A path not starting with `/` (`*`) is left as it is.
pub fn normalize_path(path: &str) -> Result<Cow<'_, str>, RequestError> {
    let Some(rest) = path.strip_prefix('/') else {
        return Ok(Cow::Borrowed(path));
    };
    // Without a dot or a percent sign there is no dot segment: one pass.
    if !path.bytes().any(|b| b == b'.' || b == b'%')
        || !Segments(Some(rest)).any(|segment| dots(segment) > 0)
    {
        return Ok(Cow::Borrowed(path));
    }
    let mut kept: Vec<&str> = Vec::new();
    let mut trailing_slash = false;
    for segment in Segments(Some(rest)) {
        trailing_slash = true;
        match dots(segment) {
            1 => {}
            2 => {
                kept.pop().ok_or(RequestError::AboveRoot)?;
            }
            _ => {
                kept.push(segment);
                trailing_slash = false;
            }
        }
    }
    let mut normalized = String::with_capacity(path.len());
    for segment in &kept {
        normalized.push('/');
        normalized.push_str(segment);
    }
    if trailing_slash || kept.is_empty() {
        normalized.push('/');
    }
    Ok(Cow::Owned(normalized))
}

/// The path as routes are matched against it: `%2f` read as a slash (borrowed
/// when there is none).
pub fn match_path(path: &str) -> Cow<'_, str> {
    if !path.contains('%') || find_encoded_slash(path.as_bytes()).is_none() {
        return Cow::Borrowed(path);
    }
    let mut key = String::with_capacity(path.len());
    let mut rest = path;
    while let Some(at) = find_encoded_slash(rest.as_bytes()) {
        key.push_str(rest.get(..at).unwrap_or_default());
        key.push('/');
        rest = rest.get(at + 3..).unwrap_or_default();
    }
    key.push_str(rest);
    Cow::Owned(key)
}

/// How many bytes of `path` the first `matched` bytes of [`match_path`]`(path)` cover.
pub fn original_len(path: &str, matched: usize) -> usize {
    let bytes = path.as_bytes();
    let (mut at, mut seen) = (0, 0);
    while seen < matched && at < bytes.len() {
        at += if is_encoded_slash(bytes.get(at..).unwrap_or_default()) {
            3
        } else {
            1
        };
        seen += 1;
    }
    at.min(bytes.len())
}

/// The segments of a path (after its leading slash), split at `/` and `%2f`.
struct Segments<'a>(Option<&'a str>);

impl<'a> Iterator for Segments<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let rest = self.0?;
        let bytes = rest.as_bytes();
        let slash = bytes.iter().position(|&b| b == b'/');
        // Only up to the next slash: the whole path is scanned once.
        let encoded = find_encoded_slash(bytes.get(..slash.unwrap_or(bytes.len()))?);
        let (end, width) = match (slash, encoded) {
            (Some(s), Some(e)) if e < s => (e, 3),
            (Some(s), _) => (s, 1),
            (None, Some(e)) => (e, 3),
            (None, None) => {
                self.0 = None;
                return Some(rest);
            }
        };
        self.0 = rest.get(end + width..);
        rest.get(..end)
    }
}

fn find_encoded_slash(bytes: &[u8]) -> Option<usize> {
    let mut from = 0;
    while let Some(at) = bytes.get(from..)?.iter().position(|&b| b == b'%') {
        let at = from + at;
        if is_encoded_slash(bytes.get(at..)?) {
            return Some(at);
        }
        from = at + 1;
    }
    None
}

fn is_encoded_slash(bytes: &[u8]) -> bool {
    matches!(bytes, [b'%', b'2', b'f' | b'F', ..])
}

/// 1 for a `.` segment, 2 for `..`, 0 for any other (dots may be `%2e`).
fn dots(segment: &str) -> usize {
    let segment = segment.split(';').next().unwrap_or_default().as_bytes();
    let mut rest = segment;
    let mut count = 0;
    while !rest.is_empty() {
        rest = match rest {
            [b'.', tail @ ..] => tail,
            [b'%', b'2', b'e' | b'E', tail @ ..] => tail,
            _ => return 0,
        };
        count += 1;
        if count > 2 {
            return 0;
        }
    }
    count
}

#[cfg(test)]
mod tests;
