//! Consistent hashing on a ring (nginx `hash … consistent`, Envoy
//! `RING_HASH`): each member owns points on a ring of 64-bit hashes, as many
//! as 100 per unit of weight, placed by the hash of its id; a request's key
//! (a header, a cookie or the client's IP) goes to the owner of the first
//! point at or after the key's hash. A member's points depend on its id and
//! weight only, so when a member comes or goes only the keys of its points
//! move. The ring is built once per table, never per request.
//!
//! A request without the key is placed by weighted random ([`random`]).

use http::HeaderName;
use http::header::HeaderMap;
use switchyard_shared::{HashOn, Member};

use crate::balancer::{key, random};
use crate::config::table::ClusterEntry;

/// Points per unit of weight.
pub const POINTS_PER_WEIGHT: u32 = 100;
/// The most points a ring has (besides one per member): a cluster whose total
/// weight would need more gets fewer per unit of weight, each member at least
/// one (and then a change of total weight moves more keys than its share).
pub const MAX_POINTS: u64 = 1 << 18;

/// What the ring hashes.
#[derive(Debug)]
enum Key {
    Header(HeaderName),
    Cookie(Box<str>),
    ClientIp,
}

/// A cluster's ring, sorted by point.
#[derive(Debug)]
pub struct Ring {
    key: Key,
    /// (point, member index).
    points: Box<[(u64, u32)]>,
}

impl Ring {
    /// The ring of `members` (validated: ids filled in, weights ≥ 1), keyed on `hash_on`.
    pub fn build(hash_on: &HashOn, members: &[Member]) -> Result<Self, String> {
        let key = match hash_on {
            HashOn::Header(name) => Key::Header(
                HeaderName::from_bytes(name.as_bytes())
                    .map_err(|_| format!("hash_on header {name:?} is no header name"))?,
            ),
            HashOn::Cookie(name) => Key::Cookie(name.as_str().into()),
            HashOn::ClientIp => Key::ClientIp,
        };
        let total: u64 = members.iter().map(|m| u64::from(m.weight)).sum();
        let full = total * u64::from(POINTS_PER_WEIGHT) <= MAX_POINTS;
        let count = |weight: u32| {
            let weight = u64::from(weight);
            if full {
                weight * u64::from(POINTS_PER_WEIGHT)
            } else {
                (weight * MAX_POINTS / total).max(1)
            }
        };
        let capacity: u64 = members.iter().map(|m| count(m.weight)).sum();
        let mut points = Vec::with_capacity(usize::try_from(capacity).unwrap_or(0));
        for (index, member) in members.iter().enumerate() {
            let Ok(index) = u32::try_from(index) else {
                break;
            };
            for n in 0..count(member.weight) {
                let point = key::hash(&[member.id.as_bytes(), b"#", &n.to_le_bytes()]);
                points.push((point, index));
            }
        }
        points.sort_unstable();
        Ok(Ring {
            key,
            points: points.into_boxed_slice(),
        })
    }

    /// The hash of the request's key; `None` when it has none.
    pub fn key_hash(&self, headers: &HeaderMap, client_ip: &[u8]) -> Option<u64> {
        let value = match &self.key {
            Key::Header(name) => headers.get(name).map(|v| v.as_bytes()),
            Key::Cookie(name) => key::cookie(headers, name),
            Key::ClientIp => Some(client_ip),
        };
        value.filter(|v| !v.is_empty()).map(|v| key::hash(&[v]))
    }

    /// The owner of the first point at or after `hash` for which `candidate`
    /// holds, going round the ring once.
    pub fn owner(&self, hash: u64, candidate: impl Fn(usize) -> bool) -> Option<usize> {
        let start = self.points.partition_point(|&(point, _)| point < hash);
        let (after, before) = (self.points.get(start..)?, self.points.get(..start)?);
        after
            .iter()
            .chain(before)
            .map(|&(_, index)| index as usize)
            .find(|&index| candidate(index))
    }
}

/// Picks among the members for which `candidate` holds: the key's owner, or
/// by weighted random without a key.
pub fn pick(
    cluster: &ClusterEntry,
    ring: &Ring,
    hash: Option<u64>,
    candidate: impl Fn(usize) -> bool,
) -> Option<usize> {
    match hash {
        Some(hash) => ring.owner(hash, candidate),
        None => random::pick(cluster, candidate),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(ids: impl IntoIterator<Item = String>) -> Vec<Member> {
        ids.into_iter()
            .map(|id| {
                let mut member = Member::new("http://127.0.0.1:1");
                member.id = id;
                member
            })
            .collect()
    }

    fn ring(members: &[Member]) -> Ring {
        Ring::build(&HashOn::Header("x-user".into()), members).unwrap()
    }

    /// Where each of `keys` keys goes, as member ids.
    fn placement<'m>(ring: &Ring, members: &'m [Member], keys: u32) -> Vec<&'m str> {
        (0..keys)
            .map(|k| {
                let index = ring
                    .owner(key::hash(&[format!("user-{k}").as_bytes()]), |_| true)
                    .unwrap();
                members[index].id.as_str()
            })
            .collect()
    }

    const KEYS: u32 = 20_000;

    #[test]
    fn adding_one_of_n_moves_about_one_nth_of_the_keys_all_to_it() {
        for n in [4usize, 10] {
            let before = members((0..n).map(|i| format!("m{i}")));
            let after = members((0..=n).map(|i| format!("m{i}")));
            let (old, new) = (
                placement(&ring(&before), &before, KEYS),
                placement(&ring(&after), &after, KEYS),
            );
            let moved: Vec<_> = old.iter().zip(&new).filter(|(a, b)| a != b).collect();
            assert!(
                moved.iter().all(|(_, to)| **to == format!("m{n}")),
                "a key moved between members that stayed"
            );
            let share = moved.len() as f64 / f64::from(KEYS);
            let ideal = 1.0 / (n + 1) as f64;
            assert!(
                (ideal * 0.6..ideal * 1.4).contains(&share),
                "n = {n}: {share} of the keys moved, ideally {ideal}"
            );
        }
    }

    #[test]
    fn removing_one_of_n_moves_only_its_keys() {
        let n = 10;
        let before = members((0..n).map(|i| format!("m{i}")));
        let after: Vec<Member> = before.iter().filter(|m| m.id != "m3").cloned().collect();
        let (old, new) = (
            placement(&ring(&before), &before, KEYS),
            placement(&ring(&after), &after, KEYS),
        );
        let mut moved = 0u32;
        for (a, b) in old.iter().zip(&new) {
            if a != b {
                assert_eq!(*a, "m3", "only the removed member's keys move");
                moved += 1;
            }
        }
        assert_eq!(moved as usize, old.iter().filter(|id| **id == "m3").count());
        let share = f64::from(moved) / f64::from(KEYS);
        assert!((0.06..0.14).contains(&share), "{share} of the keys moved");
    }

    #[test]
    fn weights_set_the_share_of_keys() {
        let mut list = members(["light".to_owned(), "heavy".to_owned()]);
        list[1].weight = 3;
        let heavy = placement(&ring(&list), &list, KEYS)
            .iter()
            .filter(|id| **id == "heavy")
            .count();
        let share = heavy as f64 / f64::from(KEYS);
        assert!((0.68..0.82).contains(&share), "{share}");
    }

    #[test]
    fn a_key_skips_members_that_are_no_candidates_and_keeps_its_place() {
        let list = members((0..5).map(|i| format!("m{i}")));
        let ring = ring(&list);
        for k in 0..200u32 {
            let hash = key::hash(&[&k.to_le_bytes()]);
            let owner = ring.owner(hash, |_| true).unwrap();
            assert_eq!(ring.owner(hash, |_| true), Some(owner), "stable");
            let next = ring.owner(hash, |i| i != owner).unwrap();
            assert_ne!(next, owner);
        }
        assert_eq!(ring.owner(1, |_| false), None);
    }

    #[test]
    fn keys_come_from_the_header_the_cookie_or_the_client() {
        let list = members(["a".to_owned()]);
        let mut headers = HeaderMap::new();
        headers.insert("x-user", "alice".parse().unwrap());
        headers.insert(http::header::COOKIE, "u=bob".parse().unwrap());
        let by_header = ring(&list);
        assert_eq!(
            by_header.key_hash(&headers, b"1.2.3.4"),
            Some(key::hash(&[b"alice"]))
        );
        assert_eq!(by_header.key_hash(&HeaderMap::new(), b"1.2.3.4"), None);
        let by_cookie = Ring::build(&HashOn::Cookie("u".into()), &list).unwrap();
        assert_eq!(
            by_cookie.key_hash(&headers, b""),
            Some(key::hash(&[b"bob"]))
        );
        let by_ip = Ring::build(&HashOn::ClientIp, &list).unwrap();
        assert_eq!(
            by_ip.key_hash(&headers, b"1.2.3.4"),
            Some(key::hash(&[b"1.2.3.4"]))
        );
    }

    #[test]
    fn large_total_weights_are_capped() {
        let mut list = members((0..5000).map(|i| format!("m{i}")));
        for member in &mut list {
            member.weight = 100;
        }
        let ring = ring(&list);
        assert!(ring.points.len() as u64 <= MAX_POINTS + 5000);
        assert!(ring.points.len() >= 5000, "every member keeps a point");
        let few = members((0..3).map(|i| format!("m{i}")));
        assert_eq!(
            super::Ring::build(&HashOn::ClientIp, &few)
                .unwrap()
                .points
                .len(),
            300
        );
    }
}
