//! A worker's idle keep-alive connections to one member: taken most recent
//! first, dropped when stale or idle too long.
//!
//! **A pooled connection is never kept idle longer than the member would keep
//! it**: at most `--upstream-keepalive-timeout` (4 s by default, below the 5 s
//! that gunicorn, Node and Apache keep an idle connection), and less when the
//! member says so with `Keep-Alive: timeout=N`.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use http::HeaderMap;

use crate::upstream::exchange::Conn;
use crate::upstream::h2::H2Conns;

/// The default of `--upstream-keepalive-timeout`.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(4);
/// How many idle connections a worker keeps per member.
const POOL_MAX_IDLE: usize = 512;
/// How much sooner than a member's own `Keep-Alive: timeout` a connection is
/// given up, so that a request never races the member's close.
const MEMBER_TIMEOUT_MARGIN: Duration = Duration::from_millis(500);

/// The longest a connection stays idle in a pool, in ms (set once at start).
static IDLE_TIMEOUT_MS: AtomicU64 = AtomicU64::new(4_000);

/// Sets how long idle connections are kept (`--upstream-keepalive-timeout`).
pub fn set_idle_timeout(timeout: Duration) {
    let ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
    IDLE_TIMEOUT_MS.store(ms, Ordering::Relaxed);
}

/// The longest a connection stays idle in a pool (`--upstream-keepalive-timeout`).
pub fn idle_timeout() -> Duration {
    Duration::from_millis(IDLE_TIMEOUT_MS.load(Ordering::Relaxed))
}

/// How long a connection whose last answer had `headers` may stay idle: the
/// pool's limit, or less if the member's `Keep-Alive: timeout=N` says so.
/// Zero: do not keep it.
pub fn idle_limit(headers: &HeaderMap) -> Duration {
    let limit = Duration::from_millis(IDLE_TIMEOUT_MS.load(Ordering::Relaxed));
    match member_keep_alive(headers) {
        Some(member) => limit.min(member.saturating_sub(MEMBER_TIMEOUT_MARGIN)),
        None => limit,
    }
}

/// The `timeout=N` (seconds) of a `Keep-Alive` header (RFC 2068, 19.7.1.1).
fn member_keep_alive(headers: &HeaderMap) -> Option<Duration> {
    static KEEP_ALIVE: http::HeaderName = http::HeaderName::from_static("keep-alive");
    let value = headers.get(&KEEP_ALIVE)?.to_str().ok()?;
    value.split(',').find_map(|param| {
        let (name, seconds) = param.split_once('=')?;
        if !name.trim().eq_ignore_ascii_case("timeout") {
            return None;
        }
        let seconds: u64 = seconds.trim().trim_matches('"').parse().ok()?;
        Some(Duration::from_secs(seconds))
    })
}

/// A worker's idle keep-alive connections to one member, most recent last,
/// each with the instant it must be gone by; or, for an HTTP/2 member, the
/// worker's shared connections to it.
#[derive(Debug, Default)]
pub struct Pool {
    idle: Mutex<VecDeque<(Conn, Instant)>>,
    /// Used by `h2c` and `h2` members only.
    pub(crate) h2: H2Conns,
}

impl Pool {
    pub(crate) fn take(&self) -> Option<Conn> {
        let mut idle = self.idle.lock().ok()?;
        let now = Instant::now();
        while let Some((conn, expires)) = idle.pop_back() {
            if now < expires && !conn.is_stale() {
                return Some(conn);
            }
        }
        None
    }

    /// Keeps an idle connection for the next exchange, for at most `limit`.
    pub(crate) fn put(&self, conn: Conn, limit: Duration) {
        if limit.is_zero() {
            return;
        }
        if let Ok(mut idle) = self.idle.lock() {
            let now = Instant::now();
            while idle.len() >= POOL_MAX_IDLE
                || idle.front().is_some_and(|(_, expires)| *expires <= now)
            {
                idle.pop_front();
            }
            idle.push_back((conn, now + limit));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keep_alive(value: &'static str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("keep-alive", http::HeaderValue::from_static(value));
        headers
    }

    #[test]
    fn a_members_keep_alive_timeout_shortens_the_idle_limit() {
        assert_eq!(idle_limit(&HeaderMap::new()), DEFAULT_IDLE_TIMEOUT);
        assert_eq!(
            idle_limit(&keep_alive("timeout=2, max=100")),
            Duration::from_millis(1500)
        );
        assert_eq!(
            idle_limit(&keep_alive("max=5, Timeout = 3")),
            Duration::from_millis(2500)
        );
        assert_eq!(idle_limit(&keep_alive("timeout=60")), DEFAULT_IDLE_TIMEOUT);
        assert_eq!(idle_limit(&keep_alive("timeout=0")), Duration::ZERO);
        assert_eq!(idle_limit(&keep_alive("timeout=x")), DEFAULT_IDLE_TIMEOUT);
    }
}
