//! Weighted random (nginx `random`, HAProxy `balance random`): each candidate
//! with a chance of its weight over the candidates' total. No shared state,
//! so no lock; also what `consistent_hash` falls back to for a request
//! without its key.

use crate::config::table::ClusterEntry;

/// Picks among the members for which `candidate` holds.
pub fn pick(cluster: &ClusterEntry, candidate: impl Fn(usize) -> bool) -> Option<usize> {
    let weight = |i: usize| u64::from(cluster.members[i].weight);
    let total: u64 = (0..cluster.members.len())
        .filter(|&i| candidate(i))
        .map(weight)
        .sum();
    if total == 0 {
        return None;
    }
    let mut point = fastrand::u64(..total);
    for i in (0..cluster.members.len()).filter(|&i| candidate(i)) {
        match point.checked_sub(weight(i)) {
            Some(rest) => point = rest,
            None => return Some(i),
        }
    }
    None
}
