//! Picking a member: smooth weighted round robin (Apache `byrequests`, nginx's
//! default) over the members that can take a request now.
//!
//! On each pick every candidate's score grows by its weight, the highest score
//! wins (ties: first in order), and the winner's score drops by the sum of the
//! candidates' weights. Weights 5:1:1 give `a a b a c a a`.

use std::sync::atomic::Ordering;

use switchyard_shared::MemberState;

use crate::table::ClusterEntry;

/// Which members a pick may choose from, most preferred first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tier {
    /// Active members that are healthy and not in their error window.
    Active,
    /// Hot standbys, when no active member is usable.
    Standby,
    /// Every active or standby member, usable or not: better to try one that
    /// may have recovered than to fail (Apache's `forcerecovery`, Envoy's panic mode).
    Panic,
}

/// Picks a member of `cluster` that is not in `tried`; `None` when none is left.
pub fn pick(cluster: &ClusterEntry, tried: &[usize]) -> Option<usize> {
    for tier in [Tier::Active, Tier::Standby, Tier::Panic] {
        if let Some(index) = pick_in_tier(cluster, tried, tier) {
            return Some(index);
        }
    }
    None
}

fn in_tier(cluster: &ClusterEntry, index: usize, tier: Tier) -> bool {
    let member = &cluster.members[index];
    match tier {
        Tier::Active => member.state == MemberState::Active && member.shared.usable(),
        Tier::Standby => member.state == MemberState::Standby && member.shared.usable(),
        Tier::Panic => matches!(member.state, MemberState::Active | MemberState::Standby),
    }
}

fn pick_in_tier(cluster: &ClusterEntry, tried: &[usize], tier: Tier) -> Option<usize> {
    let candidate = |i: &usize| !tried.contains(i) && in_tier(cluster, *i, tier);
    let mut candidates = (0..cluster.members.len()).filter(candidate);
    let first = candidates.next()?;
    if candidates.next().is_none() {
        return Some(first);
    }
    // A poisoned lock only means another pick panicked; the scores are still numbers.
    let _guard = cluster
        .shared
        .pick_lock
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let mut total = 0i64;
    let mut best: Option<(usize, i64)> = None;
    for i in (first..cluster.members.len()).filter(candidate) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::tests::cluster_of;

    fn sequence(cluster: &ClusterEntry, n: usize) -> String {
        (0..n)
            .map(|_| (b'a' + pick(cluster, &[]).unwrap() as u8) as char)
            .collect()
    }

    #[test]
    fn smooth_weights() {
        let cluster = cluster_of(&[
            (5, MemberState::Active),
            (1, MemberState::Active),
            (1, MemberState::Active),
        ]);
        assert_eq!(sequence(&cluster, 14), "aabacaaaabacaa");
    }

    #[test]
    fn equal_weights_alternate() {
        let cluster = cluster_of(&[(1, MemberState::Active), (1, MemberState::Active)]);
        assert_eq!(sequence(&cluster, 6), "ababab");
    }

    #[test]
    fn standby_only_when_no_active_is_usable() {
        let cluster = cluster_of(&[(1, MemberState::Active), (1, MemberState::Standby)]);
        assert_eq!(sequence(&cluster, 3), "aaa");
        cluster.members[0]
            .shared
            .mark_failed(std::time::Duration::from_secs(60), "refused".into());
        assert_eq!(sequence(&cluster, 3), "bbb");
        cluster.members[1]
            .shared
            .mark_failed(std::time::Duration::from_secs(60), "refused".into());
        // Everything in error: try them anyway.
        assert!(pick(&cluster, &[]).is_some());
    }

    #[test]
    fn tried_members_are_skipped_and_drained_ones_never_picked() {
        let cluster = cluster_of(&[
            (1, MemberState::Active),
            (1, MemberState::Draining),
            (1, MemberState::Active),
        ]);
        assert_eq!(pick(&cluster, &[0]), Some(2));
        assert_eq!(pick(&cluster, &[0, 2]), None);
        assert!(!sequence(&cluster, 10).contains('b'));
    }
}
