//! A worker's idle keep-alive connections to one member: taken most recent
//! first, dropped when stale or idle too long.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::upstream::exchange::Conn;

/// How long an idle pooled connection to a member is kept.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// How many idle connections a worker keeps per member.
const POOL_MAX_IDLE: usize = 512;

/// A worker's idle keep-alive connections to one member, most recent last.
#[derive(Debug, Default)]
pub struct Pool {
    idle: Mutex<VecDeque<(Conn, Instant)>>,
}

impl Pool {
    pub(crate) fn take(&self) -> Option<Conn> {
        let mut idle = self.idle.lock().ok()?;
        while let Some((conn, since)) = idle.pop_back() {
            if !conn.is_stale() && since.elapsed() < POOL_IDLE_TIMEOUT {
                return Some(conn);
            }
        }
        None
    }

    /// Keeps an idle connection for the next exchange.
    pub(crate) fn put(&self, conn: Conn) {
        if let Ok(mut idle) = self.idle.lock() {
            let now = Instant::now();
            while idle.len() >= POOL_MAX_IDLE
                || idle
                    .front()
                    .is_some_and(|(_, since)| now.duration_since(*since) >= POOL_IDLE_TIMEOUT)
            {
                idle.pop_front();
            }
            idle.push_back((conn, now));
        }
    }
}
