//! Smooth weighted round robin (Apache `byrequests`, nginx's default).
//!
//! On each pick every candidate's score grows by its weight, the highest score
//! wins (ties: first in order), and the winner's score drops by the sum of the
//! candidates' weights. Weights 5:1:1 give `a a b a c a a`.

use std::sync::atomic::Ordering;

use crate::config::table::ClusterEntry;

/// Picks among the members for which `candidate` holds, `first` being the
/// first of them; scores live in the members, so they survive table swaps.
pub fn pick(
    cluster: &ClusterEntry,
    first: usize,
    candidate: impl Fn(usize) -> bool,
) -> Option<usize> {
    // A poisoned lock only means another pick panicked; the scores are still numbers.
    let _guard = cluster
        .shared
        .pick_lock
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let mut total = 0i64;
    let mut best: Option<(usize, i64)> = None;
    for i in (first..cluster.members.len()).filter(|&i| candidate(i)) {
        let member = &cluster.members[i];
        let weight = i64::from(member.weight);
        total += weight;
        let score = member.shared.score.load(Ordering::Relaxed) + weight;
        member.shared.score.store(score, Ordering::Relaxed);
        if best.is_none_or(|(_, best_score)| score > best_score) {
            best = Some((i, score));
        }
    }
    let (winner, score) = best?;
    cluster.members[winner]
        .shared
        .score
        .store(score - total, Ordering::Relaxed);
    Some(winner)
}
