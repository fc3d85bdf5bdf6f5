//! What sticky sessions and `consistent_hash` read from a request: a cookie's
//! value, a URL parameter (a `;name=value` path parameter or a `?name=value`
//! query parameter), and the hash of a key. Read straight from the request's
//! bytes, without allocating.

use std::hash::Hasher;

use http::header::{self, HeaderMap};

/// The value of the first cookie called `name` in the request's `Cookie`
/// headers (`a=1; b=2`, RFC 6265 §5.4); names are case-sensitive, as in
/// Apache, and a quoted value loses its quotes. An empty value counts as none.
pub fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h [u8]> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .find_map(|line| cookie_in(line.as_bytes(), name.as_bytes()))
}

/// The value of cookie `name` in one `Cookie` line.
pub fn cookie_in<'l>(line: &'l [u8], name: &[u8]) -> Option<&'l [u8]> {
    line.split(|&b| b == b';').find_map(|pair| {
        let equals = pair.iter().position(|&b| b == b'=')?;
        let (key, value) = (pair.get(..equals)?, pair.get(equals + 1..)?);
        if key.trim_ascii() != name {
            return None;
        }
        let value = value.trim_ascii();
        let value = match value {
            [b'"', inner @ .., b'"'] => inner,
            _ => value,
        };
        (!value.is_empty()).then_some(value)
    })
}

/// The value of URL parameter `name` in a request target: a path parameter
/// (`/app;jsessionid=abc.node1/x`, up to the next `;`, `/` or the query),
/// else a query parameter (`?jsessionid=abc.node1&x=1`), as Apache's
/// `stickysession` reads the URL. Case-sensitive; an empty value counts as none.
pub fn url_parameter<'u>(path_and_query: &'u str, name: &str) -> Option<&'u str> {
    let (path, query) = match path_and_query.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (path_and_query, None),
    };
    let in_path = path.split(';').skip(1).find_map(|param| {
        let param = param.split('/').next().unwrap_or("");
        value_of(param, name)
    });
    in_path.or_else(|| {
        query?
            .split('&')
            .find_map(|param| value_of(param.split('#').next().unwrap_or(""), name))
    })
}

fn value_of<'p>(param: &'p str, name: &str) -> Option<&'p str> {
    let (key, value) = param.split_once('=')?;
    (key == name && !value.is_empty()).then_some(value)
}

/// A stable 64-bit hash of `parts` (FNV-1a, then the SplitMix64 finalizer so
/// that keys differing in one byte land far apart on the ring). The same on
/// every replica and every build, so replicas agree on where a key goes.
pub fn hash(parts: &[&[u8]]) -> u64 {
    let mut hasher = fnv::FnvHasher::default();
    for part in parts {
        hasher.write(part);
    }
    mix(hasher.finish())
}

fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn cookies_by_name() {
        let line = b"a=1; JSESSIONID=abc.node2;b=\"q\" ; empty=; x";
        assert_eq!(cookie_in(line, b"JSESSIONID"), Some(&b"abc.node2"[..]));
        assert_eq!(cookie_in(line, b"a"), Some(&b"1"[..]));
        assert_eq!(cookie_in(line, b"b"), Some(&b"q"[..]));
        assert_eq!(cookie_in(line, b"empty"), None);
        assert_eq!(cookie_in(line, b"x"), None);
        assert_eq!(
            cookie_in(line, b"jsessionid"),
            None,
            "names are case-sensitive"
        );
        assert_eq!(cookie_in(line, b"SESSIONID"), None, "whole names only");
        assert_eq!(cookie_in(b"", b"a"), None);
        assert_eq!(cookie_in(b"=;==;a==b", b"a"), Some(&b"=b"[..]));
        assert_eq!(cookie_in(b"\"", b"\""), None);
    }

    #[test]
    fn cookies_across_header_lines() {
        let mut headers = HeaderMap::new();
        headers.append(header::COOKIE, HeaderValue::from_static("a=1"));
        headers.append(header::COOKIE, HeaderValue::from_static("s=x.r2; a=3"));
        assert_eq!(cookie(&headers, "s"), Some(&b"x.r2"[..]));
        assert_eq!(cookie(&headers, "a"), Some(&b"1"[..]), "the first one");
        assert_eq!(cookie(&HeaderMap::new(), "a"), None);
    }

    #[test]
    fn url_parameters_in_path_and_query() {
        let name = "jsessionid";
        assert_eq!(
            url_parameter("/app;jsessionid=abc.n1", name),
            Some("abc.n1")
        );
        assert_eq!(
            url_parameter("/a;jsessionid=abc.n1/b?x=1", name),
            Some("abc.n1")
        );
        assert_eq!(url_parameter("/a;v=1;jsessionid=z?x=1", name), Some("z"));
        assert_eq!(url_parameter("/a?x=1&jsessionid=q.n2", name), Some("q.n2"));
        assert_eq!(url_parameter("/a?jsessionid=q.n2#frag", name), Some("q.n2"));
        assert_eq!(
            url_parameter("/a;jsessionid=p?jsessionid=q", name),
            Some("p"),
            "the path first"
        );
        assert_eq!(
            url_parameter("/a?myjsessionid=q", name),
            None,
            "whole names only"
        );
        assert_eq!(url_parameter("/a?jsessionid=", name), None);
        assert_eq!(url_parameter("/a?JSESSIONID=q", name), None);
        assert_eq!(
            url_parameter("/jsessionid=q", name),
            None,
            "not a parameter"
        );
        assert_eq!(url_parameter("", name), None);
        assert_eq!(url_parameter("?;&=?", name), None);
    }

    #[test]
    fn hashes_are_stable_and_spread() {
        // A fixed value: a change here moves every key of every replica.
        assert_eq!(hash(&[b"user-1"]), 0xc499_b5f8_a721_df58);
        assert_eq!(hash(&[b"user-1"]), hash(&[b"user-", b"1"]));
        assert_ne!(hash(&[b"user-1"]), hash(&[b"user-2"]));
        let high = (0..1000u32)
            .filter(|i| hash(&[&i.to_le_bytes()]) >> 63 == 1)
            .count();
        assert!((400..600).contains(&high), "{high}");
    }
}
