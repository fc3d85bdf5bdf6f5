//! Cookie rewriting on the way back (Apache `ProxyPassReverseCookiePath` and
//! `ProxyPassReverseCookieDomain`): the `Path=` and `Domain=` attributes of
//! every `Set-Cookie` a member sends are rewritten to what the client sees.
//!
//! Compiled per route at table time ([`CookieRewrites`], applied by the
//! proxy's respond step); a route without
//! either rewrite has `None` and the response path does not look at
//! `Set-Cookie` at all.

use http::header::{self, HeaderMap, HeaderValue};
use switchyard_shared::CookieRewrite;

/// A route's cookie rewrites, compiled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CookieRewrites {
    /// `Path` values that start with `.0` get it replaced by `.1`.
    pub path: Option<(String, String)>,
    /// A `Domain` equal to `.0` (case-insensitive, without its leading '.')
    /// becomes `.1`.
    pub domain: Option<(String, String)>,
}

impl CookieRewrites {
    /// The compiled rewrites of a route, or `None` when it asks for neither.
    pub fn compile(
        path: Option<&CookieRewrite>,
        domain: Option<&CookieRewrite>,
    ) -> Option<Box<CookieRewrites>> {
        if path.is_none() && domain.is_none() {
            return None;
        }
        Some(Box::new(CookieRewrites {
            path: path.map(|r| (r.from.clone(), r.to.clone())),
            domain: domain.map(|r| {
                let from = r.from.strip_prefix('.').unwrap_or(&r.from);
                (from.to_ascii_lowercase(), r.to.clone())
            }),
        }))
    }

    /// Rewrites every `Set-Cookie` in `headers` in place (their order kept).
    pub fn apply(&self, headers: &mut HeaderMap) {
        // A lookup first: `entry` may grow the map even when the name is absent.
        if !headers.contains_key(header::SET_COOKIE) {
            return;
        }
        let header::Entry::Occupied(mut entry) = headers.entry(header::SET_COOKIE) else {
            return;
        };
        let mut changed = false;
        let values: Vec<HeaderValue> = entry
            .iter()
            .map(|value| {
                match value
                    .to_str()
                    .ok()
                    .and_then(|text| self.rewrite(text))
                    .and_then(|text| HeaderValue::try_from(text).ok())
                {
                    Some(new) => {
                        changed = true;
                        new
                    }
                    None => value.clone(),
                }
            })
            .collect();
        if !changed {
            return;
        }
        let mut values = values.into_iter();
        if let Some(first) = values.next() {
            entry.insert(first);
        }
        for value in values {
            entry.append(value);
        }
    }

    /// One `Set-Cookie` value rewritten, or `None` if nothing in it changes.
    pub fn rewrite(&self, cookie: &str) -> Option<String> {
        let mut out = String::with_capacity(cookie.len() + 16);
        let mut changed = false;
        for (i, part) in cookie.split(';').enumerate() {
            if i > 0 {
                out.push(';');
            }
            // The first part is the cookie's name=value, never an attribute.
            let rewritten = if i == 0 { None } else { self.attribute(part) };
            match rewritten {
                Some(new) => {
                    changed = true;
                    out.push_str(&new);
                }
                None => out.push_str(part),
            }
        }
        changed.then_some(out)
    }

    /// One attribute (` Path=/app/x`) rewritten, its leading space kept.
    fn attribute(&self, part: &str) -> Option<String> {
        let trimmed = part.trim_start();
        let lead = part.get(..part.len() - trimmed.len()).unwrap_or("");
        let (name, value) = trimmed.split_once('=')?;
        let value = value.trim();
        let name_trimmed = name.trim_end();
        if let Some((from, to)) = &self.path
            && name_trimmed.eq_ignore_ascii_case("path")
        {
            let tail = value.strip_prefix(from.as_str())?;
            return Some(format!("{lead}{name}={to}{tail}"));
        }
        if let Some((from, to)) = &self.domain
            && name_trimmed.eq_ignore_ascii_case("domain")
        {
            let bare = value.strip_prefix('.').unwrap_or(value);
            return bare
                .eq_ignore_ascii_case(from)
                .then(|| format!("{lead}{name}={to}"));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewrites(path: Option<(&str, &str)>, domain: Option<(&str, &str)>) -> CookieRewrites {
        let path = path.map(|(f, t)| CookieRewrite::new(f, t));
        let domain = domain.map(|(f, t)| CookieRewrite::new(f, t));
        *CookieRewrites::compile(path.as_ref(), domain.as_ref()).unwrap()
    }

    #[test]
    fn nothing_asked_compiles_to_none() {
        assert!(CookieRewrites::compile(None, None).is_none());
    }

    #[test]
    fn path_prefix_is_replaced() {
        let r = rewrites(Some(("/app/", "/")), None);
        assert_eq!(
            r.rewrite("sid=1; Path=/app/cart; HttpOnly").as_deref(),
            Some("sid=1; Path=/cart; HttpOnly")
        );
        assert_eq!(
            r.rewrite("sid=1; path=/app/").as_deref(),
            Some("sid=1; path=/")
        );
        // Not under the prefix, or no Path at all: unchanged.
        assert_eq!(r.rewrite("sid=1; Path=/other"), None);
        assert_eq!(r.rewrite("sid=1; Secure"), None);
        // The cookie's own value is never taken for an attribute.
        assert_eq!(r.rewrite("Path=/app/x"), None);
    }

    #[test]
    fn domain_equal_is_replaced_case_insensitively() {
        let r = rewrites(None, Some(("backend.internal", "example.com")));
        assert_eq!(
            r.rewrite("a=b; Domain=Backend.Internal; Path=/").as_deref(),
            Some("a=b; Domain=example.com; Path=/")
        );
        assert_eq!(
            r.rewrite("a=b; domain=.backend.internal").as_deref(),
            Some("a=b; domain=example.com")
        );
        assert_eq!(r.rewrite("a=b; Domain=x.backend.internal"), None);
        let dotted = rewrites(None, Some((".backend.internal", ".example.com")));
        assert_eq!(
            dotted.rewrite("a=b; Domain=backend.internal").as_deref(),
            Some("a=b; Domain=.example.com")
        );
    }

    #[test]
    fn every_set_cookie_is_rewritten_in_order() {
        let r = rewrites(Some(("/app/", "/")), Some(("backend", "example.com")));
        let mut headers = HeaderMap::new();
        for v in ["a=1; Path=/app/x", "b=2; Domain=backend", "c=3; Path=/keep"] {
            headers.append(header::SET_COOKIE, HeaderValue::from_static(v));
        }
        // Not text: passed on as it came.
        headers.append(
            header::SET_COOKIE,
            HeaderValue::from_bytes(b"e=\xff; Path=/app/").unwrap(),
        );
        r.apply(&mut headers);
        let got: Vec<_> = headers
            .get_all(header::SET_COOKIE)
            .iter()
            .map(|v| v.as_bytes().to_vec())
            .collect();
        assert_eq!(
            got,
            vec![
                b"a=1; Path=/x".to_vec(),
                b"b=2; Domain=example.com".to_vec(),
                b"c=3; Path=/keep".to_vec(),
                b"e=\xff; Path=/app/".to_vec(),
            ]
        );
    }
}
