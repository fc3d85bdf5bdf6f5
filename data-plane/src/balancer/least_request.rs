//! Least request by the power of two random choices (Envoy's `LEAST_REQUEST`,
//! nearest to Apache `lbmethod=bybusyness` and nginx `least_conn`): two
//! different candidates drawn by weight, the one with fewer requests in
//! flight per unit of weight wins (a tie: the first drawn).
//!
//! The counts are the members' shared atomics ([`crate::upstream::InFlight`]),
//! seen by every worker: a slow member's requests pile up on all workers at
//! once, and a per-worker count would see only its own share of them. The
//! cost, one shared counter written twice per request, is paid only by
//! `least_request` clusters.

use crate::balancer::random;
use crate::config::table::ClusterEntry;

/// Picks among the members for which `candidate` holds.
pub fn pick(cluster: &ClusterEntry, candidate: impl Fn(usize) -> bool) -> Option<usize> {
    let first = random::pick(cluster, &candidate)?;
    let Some(second) = random::pick(cluster, |i| i != first && candidate(i)) else {
        return Some(first);
    };
    let load = |i: usize| {
        let member = &cluster.members[i];
        (
            u64::from(member.shared.in_flight()),
            u64::from(member.weight),
        )
    };
    let ((in_first, w_first), (in_second, w_second)) = (load(first), load(second));
    // in_second / w_second < in_first / w_first, without division.
    if in_second * w_first < in_first * w_second {
        Some(second)
    } else {
        Some(first)
    }
}
