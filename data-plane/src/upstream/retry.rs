//! Whether a failed attempt may go to another member: one rule, in one
//! function ([`may_retry`]), and a budget per cluster ([`RetryBudget`]) so
//! that retries cannot multiply the load on a cluster that is failing.
//!
//! The rule (pingora's `error_while_proxy`, nginx's `proxy_next_upstream`):
//! - nothing of the request was written → always (a refused connect, a pooled
//!   connection found dead before a byte went out): no member saw it;
//! - something was written → only an idempotent request whose body can be
//!   sent again, only for a failure the cluster's policy names, and only
//!   within the retry budget;
//! - anything else → never: a member may have acted on it.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use http::{Method, StatusCode};
use switchyard_shared::{RetryOn, RetryPolicy};

use crate::upstream::clock_ms;

/// How a request body bigger than this is sent once only: the replay buffer
/// keeps at most this much of what was sent, to send it again.
pub const REPLAY_LIMIT: usize = 64 * 1024;

/// What went wrong with one attempt, as far as retrying is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The connection could not be had (refused, unresolved, timed out, TLS).
    Connect,
    /// The connection broke before any byte of an answer.
    Broken,
    /// No answer within the (per-try) timeout.
    Timeout,
    /// The member answered with this status.
    Status(StatusCode),
}

/// What was true of the request when its attempt failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sent {
    /// Whether any byte of the request reached the connection.
    pub written: bool,
    /// Whether the request can go again: an idempotent method and a body
    /// that is empty or still held whole by the replay buffer.
    pub replayable: bool,
}

/// Whether the request may be retried on another member after `failure`.
/// The budget is asked only where the answer depends on it.
pub fn may_retry(
    policy: &RetryPolicy,
    failure: Failure,
    sent: Sent,
    budget: &RetryBudget,
) -> Decision {
    if !sent.written && matches!(failure, Failure::Connect | Failure::Broken) {
        return Decision::Retry;
    }
    if !sent.replayable {
        return Decision::No;
    }
    let named = match failure {
        Failure::Connect | Failure::Broken => RetryOn::Error,
        Failure::Timeout => RetryOn::Timeout,
        Failure::Status(StatusCode::BAD_GATEWAY) => RetryOn::Http502,
        Failure::Status(StatusCode::SERVICE_UNAVAILABLE) => RetryOn::Http503,
        Failure::Status(StatusCode::GATEWAY_TIMEOUT) => RetryOn::Http504,
        Failure::Status(_) => return Decision::No,
    };
    if !policy.retry_on.contains(&named) {
        return Decision::No;
    }
    if budget.withdraw(policy) {
        Decision::Retry
    } else {
        Decision::OverBudget
    }
}

/// The answer of [`may_retry`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Retry,
    /// The policy would retry, but the cluster's budget is spent.
    OverBudget,
    No,
}

/// Methods that mean the same when sent twice (RFC 9110, 9.2.2).
pub fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

/// How long the budget's window is: retries are counted against the requests
/// of about the last this many milliseconds.
const WINDOW_MS: u64 = 10_000;

/// A cluster's retry budget (linkerd's, Finagle's): retries may add at most
/// `budget_percent` of the requests of the last few seconds, plus
/// `budget_min_per_second`. Requests are counted with one relaxed atomic add
/// on the calling worker's own cache line (no line shared between workers is
/// written per request); the lock is taken only to retry.
#[derive(Debug, Default)]
pub struct RetryBudget {
    requests: [Counter; COUNTERS],
    window: Mutex<Window>,
}

/// Request counters, one per worker (modulo), each on a cache line of its own.
const COUNTERS: usize = 8;

#[derive(Debug, Default)]
#[repr(align(64))]
struct Counter(AtomicU64);

#[derive(Debug, Default)]
struct Window {
    /// When the window started (ms on [`clock_ms`]) and the request count then.
    start_ms: u64,
    requests_at_start: u64,
    /// The previous window's requests and retries, carried at half weight so
    /// that the allowance does not drop to nothing when a window turns.
    carried_requests: u64,
    retries: u64,
}

impl RetryBudget {
    /// Counts a request (first attempts only).
    pub fn request(&self) {
        let slot = crate::upstream::worker_index() % COUNTERS;
        self.requests[slot].0.fetch_add(1, Ordering::Relaxed);
    }

    fn requests(&self) -> u64 {
        self.requests
            .iter()
            .map(|c| c.0.load(Ordering::Relaxed))
            .sum()
    }

    /// Takes one retry from the budget, if there is one left.
    pub fn withdraw(&self, policy: &RetryPolicy) -> bool {
        let now = clock_ms();
        let requests = self.requests();
        let mut window = self.window.lock().unwrap_or_else(|e| e.into_inner());
        if window.start_ms == 0 {
            // The first retry: every request so far counts.
            window.start_ms = now;
        } else if now.saturating_sub(window.start_ms) >= WINDOW_MS {
            let previous = requests.saturating_sub(window.requests_at_start);
            *window = Window {
                start_ms: now,
                requests_at_start: requests,
                carried_requests: previous / 2,
                retries: window.retries / 2,
            };
        }
        let elapsed_s = now.saturating_sub(window.start_ms) / 1000 + 1;
        let recent = requests.saturating_sub(window.requests_at_start) + window.carried_requests;
        let allowed = recent * u64::from(policy.budget_percent) / 100
            + u64::from(policy.budget_min_per_second) * elapsed_s;
        if window.retries < allowed {
            window.retries += 1;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sent(written: bool, replayable: bool) -> Sent {
        Sent {
            written,
            replayable,
        }
    }

    #[test]
    fn nothing_written_always_goes_elsewhere() {
        let off = RetryPolicy {
            max_retries: 0,
            retry_on: vec![],
            ..RetryPolicy::default()
        };
        let budget = RetryBudget::default();
        for failure in [Failure::Connect, Failure::Broken] {
            assert_eq!(
                may_retry(&off, failure, sent(false, false), &budget),
                Decision::Retry
            );
        }
    }

    #[test]
    fn a_written_request_that_cannot_be_replayed_never_goes_again() {
        let policy = RetryPolicy::default();
        let budget = RetryBudget::default();
        for failure in [
            Failure::Broken,
            Failure::Timeout,
            Failure::Status(StatusCode::BAD_GATEWAY),
        ] {
            assert_eq!(
                may_retry(&policy, failure, sent(true, false), &budget),
                Decision::No
            );
        }
    }

    #[test]
    fn written_and_replayable_follows_the_policy() {
        let budget = RetryBudget::default();
        let default = RetryPolicy::default();
        assert_eq!(
            may_retry(&default, Failure::Broken, sent(true, true), &budget),
            Decision::Retry
        );
        assert_eq!(
            may_retry(&default, Failure::Timeout, sent(true, true), &budget),
            Decision::Retry
        );
        assert_eq!(
            may_retry(
                &default,
                Failure::Status(StatusCode::SERVICE_UNAVAILABLE),
                sent(true, true),
                &budget
            ),
            Decision::No,
            "statuses only when named"
        );
        let statuses = RetryPolicy {
            retry_on: vec![RetryOn::Http503],
            ..RetryPolicy::default()
        };
        assert_eq!(
            may_retry(
                &statuses,
                Failure::Status(StatusCode::SERVICE_UNAVAILABLE),
                sent(true, true),
                &budget
            ),
            Decision::Retry
        );
        assert_eq!(
            may_retry(&statuses, Failure::Timeout, sent(true, true), &budget),
            Decision::No
        );
        assert_eq!(
            may_retry(
                &statuses,
                Failure::Status(StatusCode::INTERNAL_SERVER_ERROR),
                sent(true, true),
                &budget
            ),
            Decision::No
        );
    }

    #[test]
    fn the_budget_allows_a_share_of_requests_plus_a_floor() {
        let policy = RetryPolicy {
            budget_percent: 20,
            budget_min_per_second: 2,
            ..RetryPolicy::default()
        };
        let budget = RetryBudget::default();
        for _ in 0..100 {
            budget.request();
        }
        // 20% of 100, plus 2 for the first second.
        let granted = (0..50).filter(|_| budget.withdraw(&policy)).count();
        assert_eq!(granted, 22);
        assert_eq!(
            may_retry(&policy, Failure::Broken, sent(true, true), &budget),
            Decision::OverBudget
        );
    }

    #[test]
    fn idempotent_methods() {
        assert!(is_idempotent(&Method::GET));
        assert!(is_idempotent(&Method::PUT));
        assert!(is_idempotent(&Method::DELETE));
        assert!(!is_idempotent(&Method::POST));
        assert!(!is_idempotent(&Method::PATCH));
        assert!(!is_idempotent(&Method::CONNECT));
    }
}
