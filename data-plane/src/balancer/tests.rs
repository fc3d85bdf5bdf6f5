//! The tiers and each policy's picks, on compiled clusters.

use super::*;
use crate::config::table::tests::cluster_of;
use http::header;
use switchyard_shared::Cluster;

fn sequence(cluster: &ClusterEntry, n: usize) -> String {
    (0..n)
        .map(|_| (b'a' + pick(cluster, &[], &Affinity::NONE).unwrap() as u8) as char)
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
    assert!(pick(&cluster, &[], &Affinity::NONE).is_some());
}

#[test]
fn tried_members_are_skipped_and_drained_ones_never_picked() {
    let cluster = cluster_of(&[
        (1, MemberState::Active),
        (1, MemberState::Draining),
        (1, MemberState::Active),
    ]);
    assert_eq!(pick(&cluster, &[0], &Affinity::NONE), Some(2));
    assert_eq!(pick(&cluster, &[0, 2], &Affinity::NONE), None);
    assert!(has_candidate(&cluster, &[0]));
    assert!(
        !has_candidate(&cluster, &[0, 2]),
        "a draining member is no candidate"
    );
    assert!(!sequence(&cluster, 10).contains('b'));
}

fn cluster_with(
    policy: switchyard_shared::Policy,
    configure: impl FnOnce(&mut Cluster),
    members: &[(u32, MemberState)],
) -> ClusterEntry {
    let mut cluster = Cluster::new("c");
    cluster.policy = policy;
    configure(&mut cluster);
    crate::config::table::tests::compiled(cluster, members)
}

fn counts(cluster: &ClusterEntry, affinity: &Affinity, picks: usize) -> Vec<usize> {
    let mut counts = vec![0; cluster.members.len()];
    for _ in 0..picks {
        counts[pick(cluster, &[], affinity).unwrap()] += 1;
    }
    counts
}

#[test]
fn random_follows_the_weights() {
    use switchyard_shared::Policy as P;
    let cluster = cluster_with(
        P::Random,
        |_| {},
        &[
            (1, MemberState::Active),
            (3, MemberState::Active),
            (5, MemberState::Draining),
        ],
    );
    let counts = counts(&cluster, &Affinity::NONE, 4000);
    assert_eq!(counts[2], 0, "a draining member is never picked");
    // Expected 3000 of 4000 (σ ≈ 27): far outside this only if broken.
    assert!((2800..3200).contains(&counts[1]), "{counts:?}");
    assert_eq!(pick(&cluster, &[1], &Affinity::NONE), Some(0));
}

#[test]
fn least_request_avoids_the_busy_member() {
    use switchyard_shared::Policy as P;
    let cluster = cluster_with(
        P::LeastRequest,
        |_| {},
        &[
            (1, MemberState::Active),
            (1, MemberState::Active),
            (1, MemberState::Active),
        ],
    );
    let busy: Vec<_> = (0..5)
        .map(|_| cluster.balancer.in_flight(&cluster.members[0]))
        .collect();
    assert_eq!(cluster.members[0].shared.in_flight(), 5);
    // Of any two drawn, the busy one loses: it is never picked.
    let picked = counts(&cluster, &Affinity::NONE, 300);
    assert_eq!(picked[0], 0, "{picked:?}");
    assert!(picked[1] > 50 && picked[2] > 50, "{picked:?}");
    drop(busy);
    assert_eq!(
        cluster.members[0].shared.in_flight(),
        0,
        "guards count down"
    );
    assert_eq!(
        pick(&cluster, &[1, 2], &Affinity::NONE),
        Some(0),
        "busy beats none"
    );
}

#[test]
fn least_request_compares_in_flight_per_weight() {
    use switchyard_shared::Policy as P;
    let cluster = cluster_with(
        P::LeastRequest,
        |_| {},
        &[(4, MemberState::Active), (1, MemberState::Active)],
    );
    // 2 of weight 4 (0.5 each) is less loaded than 1 of weight 1.
    let _heavy: Vec<_> = (0..2)
        .map(|_| cluster.balancer.in_flight(&cluster.members[0]))
        .collect();
    let _light = cluster.balancer.in_flight(&cluster.members[1]);
    assert_eq!(counts(&cluster, &Affinity::NONE, 100), vec![100, 0]);
    // Round robin counts nothing.
    let plain = cluster_of(&[(1, MemberState::Active)]);
    assert!(plain.balancer.in_flight(&plain.members[0]).is_none());
}

#[test]
fn consistent_hash_sends_a_key_to_one_member_and_skips_tried_ones() {
    use switchyard_shared::{HashOn, Policy as P};
    let cluster = cluster_with(
        P::ConsistentHash,
        |c| c.hash_on = Some(HashOn::Header("x-user".into())),
        &[
            (1, MemberState::Active),
            (1, MemberState::Active),
            (1, MemberState::Active),
        ],
    );
    let mut owners = std::collections::HashSet::new();
    for user in 0..50 {
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-user",
            HeaderValue::from_str(&format!("u{user}")).unwrap(),
        );
        let affinity = cluster.balancer.affinity(&headers, "/", b"127.0.0.1");
        let picked = counts(&cluster, &affinity, 5);
        let owner = picked
            .iter()
            .position(|&n| n == 5)
            .expect("one member for a key");
        owners.insert(owner);
        let next = pick(&cluster, &[owner], &affinity).unwrap();
        assert_ne!(next, owner);
        assert_eq!(
            pick(&cluster, &[owner], &affinity),
            Some(next),
            "the same next one"
        );
    }
    assert_eq!(owners.len(), 3, "50 keys reach every member");
    // No key: any member, by weighted random.
    let none = cluster
        .balancer
        .affinity(&HeaderMap::new(), "/", b"127.0.0.1");
    assert_eq!(none, Affinity::NONE);
    assert!(counts(&cluster, &none, 300).iter().all(|&n| n > 50));
}

#[test]
fn a_sticky_member_goes_first_while_its_tier_allows() {
    use switchyard_shared::{Policy as P, Sticky};
    let cluster = cluster_with(
        P::RoundRobin,
        |c| {
            c.sticky = Some(Sticky {
                cookie: "S".into(),
                url_parameter: None,
                set_cookie: true,
            })
        },
        &[
            (1, MemberState::Active),
            (1, MemberState::Active),
            (1, MemberState::Standby),
        ],
    );
    let to = |member: usize| {
        let mut headers = HeaderMap::new();
        let cookie = format!("S=abc.127.0.0.1:{}", 10 + member);
        headers.insert(header::COOKIE, HeaderValue::from_str(&cookie).unwrap());
        cluster.balancer.affinity(&headers, "/", b"")
    };
    assert_eq!(counts(&cluster, &to(1), 10), vec![0, 10, 0]);
    assert_eq!(
        pick(&cluster, &[1], &to(1)),
        Some(0),
        "a tried one is not again"
    );
    // A standby is not sticky while an active member is usable.
    assert_eq!(counts(&cluster, &to(2), 10)[2], 0);
    let cookie = |member: usize, affinity: &Affinity| {
        set_cookie(&cluster, &cluster.members[member], affinity)
            .map(|v| v.to_str().unwrap().to_owned())
    };
    assert_eq!(cookie(1, &to(1)), None, "already sticky to it");
    assert_eq!(
        cookie(0, &to(1)).as_deref(),
        Some("S=.127.0.0.1:10; Path=/; HttpOnly")
    );
    assert_eq!(
        cookie(0, &Affinity::NONE).as_deref(),
        Some("S=.127.0.0.1:10; Path=/; HttpOnly")
    );
    cluster.members[1]
        .shared
        .mark_failed(std::time::Duration::from_secs(60), "refused".into());
    assert_eq!(counts(&cluster, &to(1), 10), vec![10, 0, 0], "fallback");
    cluster.members[0]
        .shared
        .mark_failed(std::time::Duration::from_secs(60), "refused".into());
    assert_eq!(
        counts(&cluster, &to(1), 10),
        vec![0, 0, 10],
        "the standby tier"
    );
}
