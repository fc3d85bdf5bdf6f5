//! Passive health (Envoy's outlier detection): the proxy tells [`observe`]
//! how each attempt on a member went; a member that fails
//! `consecutive_failures` times in a row (connect failures, broken or
//! timed-out exchanges, 5xx answers) is ejected — left out of the balancer's active and standby
//! tiers — for `base_ejection × n` (n: its ejections so far, this one
//! included), at most `max_ejection`. It returns by itself when the time is up.
//! At most `max_ejected_percent` of a cluster's members (and at least one) are
//! ejected at once. Each ejection is counted, logged and wakes the health
//! report to the control plane ([`transitions`]).
//!
//! Without outlier detection, a failed connect leaves the member out for the
//! cluster's `retry_window`, as before.
//!
//! The count `n` decays: it drops by one for each `max_ejection` the member
//! has gone without being ejected since its last ejection ended.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::StatusCode;
use switchyard_shared::{MemberState, OutlierDetection};
use tokio::sync::Notify;
use tracing::{debug, warn};

use crate::admin::metrics;
use crate::config::table::{ClusterEntry, MemberEntry};
use crate::upstream::{Ejections, clock_ms};

/// How one attempt on a member went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome<'a> {
    /// The member answered with a status below 500.
    Success,
    /// The member answered 500–599.
    Status5xx(StatusCode),
    /// No connection could be had (nothing was sent); the text says why.
    ConnectFailure(&'a str),
    /// The exchange broke after the request was sent; the text says why.
    ExchangeFailure(&'a str),
    /// The member did not answer within the response timeout.
    Timeout,
}

impl Outcome<'_> {
    /// The outcome of an answer with `status`.
    pub fn of_status(status: StatusCode) -> Self {
        if status.is_server_error() {
            Outcome::Status5xx(status)
        } else {
            Outcome::Success
        }
    }

    fn describe(&self) -> String {
        match self {
            Outcome::Success => "success".to_owned(),
            Outcome::Status5xx(status) => format!("answered {status}"),
            Outcome::Timeout => "no answer in time".to_owned(),
            Outcome::ConnectFailure(why) | Outcome::ExchangeFailure(why) => {
                // Errors may quote what a member sent; keep reports short.
                let mut why = (*why).to_owned();
                if why.len() > 200 {
                    let mut end = 200;
                    while !why.is_char_boundary(end) {
                        end -= 1;
                    }
                    why.truncate(end);
                    why.push('…');
                }
                why
            }
        }
    }
}

/// The moment an outcome is observed, on both clocks.
#[derive(Debug, Clone, Copy)]
struct Now {
    /// ms on [`clock_ms`].
    ms: u64,
    /// ms since the Unix epoch.
    unix_ms: u64,
}

impl Now {
    fn current() -> Self {
        Now {
            ms: clock_ms(),
            unix_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, millis),
        }
    }
}

static TRANSITIONS: Notify = Notify::const_new();

/// Notified on every ejection: the health report goes out without waiting
/// for its next tick (returns are seen by the reporter, which knows when
/// each ejection ends).
pub fn transitions() -> &'static Notify {
    &TRANSITIONS
}

/// Records how an attempt on `member` of `cluster` went: the proxy calls it
/// after each attempt (one line at each outcome).
pub fn observe(cluster: &ClusterEntry, member: &MemberEntry, outcome: Outcome<'_>) {
    observe_at(cluster, member, outcome, Now::current);
}

/// [`observe`] with the clock given; it is read only on a failure.
fn observe_at(
    cluster: &ClusterEntry,
    member: &MemberEntry,
    outcome: Outcome<'_>,
    now: impl FnOnce() -> Now,
) {
    let shared = &member.shared;
    if matches!(outcome, Outcome::Success | Outcome::Status5xx(_)) {
        // The member answered: its connections work again.
        shared.mark_ok();
    }
    let Some(detection) = &cluster.outlier_detection else {
        if let Outcome::ConnectFailure(why) = outcome {
            shared.mark_failed(cluster.retry_window, why.to_owned());
        }
        return;
    };
    if outcome == Outcome::Success {
        shared.count_success();
        return;
    }
    let failures = shared.count_failure();
    let now = now();
    if failures < detection.consecutive_failures || shared.is_ejected_at(now.ms) {
        return;
    }
    let reason = format!(
        "{failures} failures in a row, the last: {}",
        outcome.describe()
    );
    eject(cluster, member, detection, reason, now);
}

/// Ejects `member` unless the cluster's share cap forbids it now.
fn eject(
    cluster: &ClusterEntry,
    member: &MemberEntry,
    detection: &OutlierDetection,
    reason: String,
    now: Now,
) {
    // A poisoned lock only means another ejection panicked; the counts are still right.
    let _guard = cluster
        .shared
        .ejection_lock
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if member.shared.is_ejected_at(now.ms) {
        return;
    }
    let eligible = |m: &&MemberEntry| matches!(m.state, MemberState::Active | MemberState::Standby);
    let members = cluster.members.iter().filter(eligible).count();
    let cap = ejection_cap(members, detection.max_ejected_percent);
    let ejected = cluster
        .members
        .iter()
        .filter(eligible)
        .filter(|m| m.shared.is_ejected_at(now.ms))
        .take(cap)
        .count();
    if ejected >= cap {
        debug!(cluster = %cluster.name, member.id = %member.shared.id, ejected, "Not ejected: the cluster's share of ejected members is reached");
        return;
    }
    let record = next_ejection(&member.shared.ejections(), detection, reason, now);
    let length = Duration::from_millis(record.until_ms.saturating_sub(now.ms));
    warn!(cluster = %cluster.name, member.id = %member.shared.id, ejections = record.count, ?length, reason = %record.reason, "Member ejected");
    member.shared.eject(record);
    metrics::ejection();
    TRANSITIONS.notify_one();
}

/// How many of `members` may be ejected at once: `percent` of them, and at least one.
fn ejection_cap(members: usize, percent: u32) -> usize {
    let percent = usize::try_from(percent.min(100)).unwrap_or(100);
    (members.saturating_mul(percent) / 100).max(1)
}

/// The record of the ejection that starts at `now` after `previous`.
fn next_ejection(
    previous: &Ejections,
    detection: &OutlierDetection,
    reason: String,
    now: Now,
) -> Ejections {
    let max_ms = millis(detection.max_ejection.0).max(1);
    let base_ms = millis(detection.base_ejection.0);
    let behaved = if previous.until_ms == 0 {
        0
    } else {
        now.ms.saturating_sub(previous.until_ms) / max_ms
    };
    let kept = u64::from(previous.count).saturating_sub(behaved);
    let count = u32::try_from(kept.saturating_add(1)).unwrap_or(u32::MAX);
    let length_ms = base_ms.saturating_mul(u64::from(count)).min(max_ms);
    Ejections {
        count,
        until_ms: now.ms.saturating_add(length_ms),
        until_unix_ms: now.unix_ms.saturating_add(length_ms),
        reason,
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests;
