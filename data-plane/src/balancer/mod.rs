//! Picking a member: which members may take a request now (active, then hot
//! standby, then all of them as a last resort), and the cluster's policy among
//! those, one file each ([`round_robin`], [`least_request`], [`random`],
//! [`consistent_hash`]); [`sticky`] sessions go first with any policy.
//!
//! A policy is compiled into the cluster's table entry ([`Balancer`]) and
//! dispatched with a `match`, no boxed call: round robin without sticky
//! sessions reads nothing from the request and allocates nothing. A new
//! policy is a new file, a variant of [`Policy`] and its arm in `compile`
//! and `pick_in_tier`.

pub mod consistent_hash;
pub mod key;
pub mod least_request;
pub mod random;
pub mod round_robin;
pub mod sticky;

use http::HeaderValue;
use http::header::HeaderMap;
use switchyard_shared::{Cluster, MemberState};

use crate::config::table::{ClusterEntry, MemberEntry};
use crate::upstream::InFlight;

/// A cluster's policy, compiled.
#[derive(Debug)]
pub enum Policy {
    RoundRobin,
    LeastRequest,
    Random,
    ConsistentHash(consistent_hash::Ring),
}

/// How a cluster picks: its policy and its sticky sessions.
#[derive(Debug)]
pub struct Balancer {
    policy: Policy,
    sticky: Option<sticky::Sticky>,
}

/// What a request brings to a pick, read once per request and only when the
/// cluster's balancer uses it.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Affinity {
    /// The member the request's sticky cookie or URL parameter names.
    sticky: Option<usize>,
    /// The hash of the `consistent_hash` key, if the request has one.
    hash: Option<u64>,
}

impl Affinity {
    /// No affinity: what round robin and a request without keys have.
    pub const NONE: Affinity = Affinity {
        sticky: None,
        hash: None,
    };
}

impl Balancer {
    /// Compiles a validated cluster's `policy`, `hash_on` and `sticky`.
    pub fn compile(cluster: &Cluster) -> Result<Self, String> {
        use switchyard_shared::Policy as Model;
        let policy = match (cluster.policy, &cluster.hash_on) {
            (Model::RoundRobin, _) => Policy::RoundRobin,
            (Model::LeastRequest, _) => Policy::LeastRequest,
            (Model::Random, _) => Policy::Random,
            (Model::ConsistentHash, Some(hash_on)) => {
                Policy::ConsistentHash(consistent_hash::Ring::build(hash_on, &cluster.members)?)
            }
            (Model::ConsistentHash, None) => {
                return Err("policy consistent_hash needs hash_on".to_owned());
            }
        };
        let sticky = match &cluster.sticky {
            Some(config) => Some(sticky::Sticky::build(config, &cluster.members)?),
            None => None,
        };
        Ok(Balancer { policy, sticky })
    }

    /// A round-robin balancer without sticky sessions (tests and defaults).
    pub fn round_robin() -> Self {
        Balancer {
            policy: Policy::RoundRobin,
            sticky: None,
        }
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// What the request brings to its picks: its sticky member and its key's
    /// hash, read only if the cluster uses them.
    pub fn affinity(
        &self,
        headers: &HeaderMap,
        path_and_query: &str,
        client_ip: &[u8],
    ) -> Affinity {
        let hash = match &self.policy {
            Policy::ConsistentHash(ring) => ring.key_hash(headers, client_ip),
            _ => None,
        };
        let sticky = match &self.sticky {
            Some(sticky) => sticky.member(headers, path_and_query),
            None => None,
        };
        Affinity { sticky, hash }
    }

    /// A guard that counts a request in flight to `member`, for policies that
    /// compare those counts (`None` for the others: no shared write).
    pub fn in_flight(&self, member: &MemberEntry) -> Option<InFlight> {
        matches!(self.policy, Policy::LeastRequest).then(|| InFlight::enter(&member.shared))
    }
}

/// The `Set-Cookie` (Apache-compatible `NAME=.ROUTE; Path=/; HttpOnly`) for a
/// response of `member`: only when the cluster sets sticky cookies and the
/// request was not already sticky to that member.
pub fn set_cookie<'c>(
    cluster: &'c ClusterEntry,
    member: &MemberEntry,
    affinity: &Affinity,
) -> Option<&'c HeaderValue> {
    let sticky = cluster.balancer.sticky.as_ref()?;
    if affinity
        .sticky
        .is_some_and(|named| std::ptr::eq(&cluster.members[named], member))
    {
        return None;
    }
    let chosen = cluster
        .members
        .iter()
        .position(|m| std::ptr::eq(m, member))?;
    sticky.set_cookie(chosen, affinity.sticky)
}

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

/// Picks a member of `cluster` that is not in `tried`; `None` when none is
/// left. In each tier the request's sticky member goes first, if it is in
/// that tier; then the policy picks.
pub fn pick(cluster: &ClusterEntry, tried: &[usize], affinity: &Affinity) -> Option<usize> {
    for tier in [Tier::Active, Tier::Standby, Tier::Panic] {
        if let Some(named) = affinity.sticky
            && !tried.contains(&named)
            && in_tier(cluster, named, tier)
        {
            return Some(named);
        }
        if let Some(index) = pick_in_tier(cluster, tried, tier, affinity) {
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

fn pick_in_tier(
    cluster: &ClusterEntry,
    tried: &[usize],
    tier: Tier,
    affinity: &Affinity,
) -> Option<usize> {
    let candidate = |i: usize| !tried.contains(&i) && in_tier(cluster, i, tier);
    let mut candidates = (0..cluster.members.len()).filter(|&i| candidate(i));
    let first = candidates.next()?;
    if candidates.next().is_none() {
        return Some(first);
    }
    match &cluster.balancer.policy {
        Policy::RoundRobin => round_robin::pick(cluster, first, candidate),
        Policy::LeastRequest => least_request::pick(cluster, candidate),
        Policy::Random => random::pick(cluster, candidate),
        Policy::ConsistentHash(ring) => {
            consistent_hash::pick(cluster, ring, affinity.hash, candidate)
        }
    }
}

#[cfg(test)]
mod tests;
