//! Picking a member: which members may take a request now (active, then hot
//! standby, then all of them as a last resort), and the cluster's policy among
//! those ([`round_robin`]).

pub mod round_robin;

use switchyard_shared::MemberState;

use crate::config::table::ClusterEntry;

/// Which members a pick may choose from, most preferred first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tier {
    /// Active members that are healthy, not in their error window and not
    /// ejected by outlier detection ([`crate::health::outlier`]).
    Active,
    /// Hot standbys, when no active member is usable.
    Standby,
    /// Every active or standby member, usable or not: better to try one that
    /// may have recovered than to fail (Apache's `forcerecovery`, Envoy's panic
    /// mode), when every member is ejected, unhealthy or in its error window.
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

/// Whether [`pick`] would find a member not in `tried`, without picking
/// (a pick moves the balancer's scores).
pub fn has_candidate(cluster: &ClusterEntry, tried: &[usize]) -> bool {
    (0..cluster.members.len()).any(|i| !tried.contains(&i) && in_tier(cluster, i, Tier::Panic))
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
    let candidate = |i: usize| !tried.contains(&i) && in_tier(cluster, i, tier);
    let mut candidates = (0..cluster.members.len()).filter(|&i| candidate(i));
    let first = candidates.next()?;
    if candidates.next().is_none() {
        return Some(first);
    }
    round_robin::pick(cluster, first, candidate)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::table::tests::cluster_of;

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
        assert!(has_candidate(&cluster, &[0]));
        assert!(
            !has_candidate(&cluster, &[0, 2]),
            "a draining member is no candidate"
        );
        assert!(!sequence(&cluster, 10).contains('b'));
    }
}
