//! Matching a request to a route: by host (exact, or none = any host), then by
//! the longest path prefix.
//!
//! A lookup costs one hash probe per distinct prefix length of the host's
//! routes, not one per route, so it stays flat from ten routes to ten thousand.

use std::collections::HashMap;

/// Routes keyed by host and prefix; values are indexes into the table's routes.
#[derive(Debug, Default)]
pub struct Router {
    by_host: HashMap<String, Prefixes>,
    any_host: Prefixes,
}

/// The path prefixes of one host.
#[derive(Debug, Default)]
struct Prefixes {
    by_prefix: HashMap<Box<str>, usize>,
    /// Distinct prefix lengths, longest first.
    lengths: Vec<usize>,
}

impl Prefixes {
    fn insert(&mut self, prefix: &str, route: usize) {
        self.by_prefix.insert(prefix.into(), route);
        if let Err(at) = self.lengths.binary_search_by(|len| prefix.len().cmp(len)) {
            self.lengths.insert(at, prefix.len());
        }
    }

    fn lookup(&self, path: &str) -> Option<usize> {
        for &len in &self.lengths {
            if let Some(head) = path.get(..len)
                && let Some(&route) = self.by_prefix.get(head)
            {
                return Some(route);
            }
        }
        None
    }
}

impl Router {
    /// Adds a route; the host must be lower case without port.
    pub fn insert(&mut self, host: Option<&str>, prefix: &str, route: usize) {
        match host {
            Some(host) => self
                .by_host
                .entry(host.to_owned())
                .or_default()
                .insert(prefix, route),
            None => self.any_host.insert(prefix, route),
        }
    }

    /// The route for `host` (as the client sent it, port allowed) and `path`.
    /// Routes of the host come first; routes for any host are the fallback.
    pub fn lookup(&self, host: Option<&str>, path: &str) -> Option<usize> {
        if !self.by_host.is_empty()
            && let Some(host) = host
        {
            let host = strip_port(host);
            let found = match self.by_host.get(host) {
                Some(prefixes) => prefixes.lookup(path),
                None if host.bytes().any(|b| b.is_ascii_uppercase()) => self
                    .by_host
                    .get(&host.to_ascii_lowercase())
                    .and_then(|prefixes| prefixes.lookup(path)),
                None => None,
            };
            if found.is_some() {
                return found;
            }
        }
        self.any_host.lookup(path)
    }
}

/// `example.com:8000` → `example.com`; `[::1]:80` → `[::1]`.
fn strip_port(host: &str) -> &str {
    match host.rfind(':') {
        Some(at) if !host[at..].contains(']') => &host[..at],
        _ => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longest_prefix_wins() {
        let mut router = Router::default();
        router.insert(None, "/", 0);
        router.insert(None, "/app/", 1);
        router.insert(None, "/app/admin", 2);
        assert_eq!(router.lookup(None, "/"), Some(0));
        assert_eq!(router.lookup(None, "/app"), Some(0));
        assert_eq!(router.lookup(None, "/app/x"), Some(1));
        assert_eq!(router.lookup(None, "/app/admin/x"), Some(2));
        assert_eq!(router.lookup(Some("any.host"), "/app/x"), Some(1));
    }

    #[test]
    fn host_routes_first_then_any_host() {
        let mut router = Router::default();
        router.insert(None, "/", 0);
        router.insert(Some("api.example.com"), "/v1/", 1);
        assert_eq!(
            router.lookup(Some("API.example.com:8000"), "/v1/users"),
            Some(1)
        );
        assert_eq!(router.lookup(Some("api.example.com"), "/other"), Some(0));
        assert_eq!(router.lookup(Some("web.example.com"), "/v1/users"), Some(0));
        assert_eq!(router.lookup(None, "/v1/users"), Some(0));
    }

    #[test]
    fn no_match_without_a_root_route() {
        let mut router = Router::default();
        router.insert(None, "/app/", 0);
        assert_eq!(router.lookup(None, "/other"), None);
        assert_eq!(router.lookup(None, "/ap"), None);
    }

    #[test]
    fn ports_are_ignored() {
        assert_eq!(strip_port("example.com:80"), "example.com");
        assert_eq!(strip_port("[::1]:80"), "[::1]");
        assert_eq!(strip_port("[::1]"), "[::1]");
        assert_eq!(strip_port("example.com"), "example.com");
    }
}
