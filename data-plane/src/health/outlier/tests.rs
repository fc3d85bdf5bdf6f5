//! The state machine with an injected clock: `observe_at` is given the time.

use std::time::Duration;

use http::StatusCode;
use switchyard_shared::{Dur, MemberState, OutlierDetection};

use super::*;
use crate::balancer;
use crate::config::table::tests::cluster_of;

const BASE: u64 = 1_000;
const MAX: u64 = 2_500;

fn detection(percent: u32) -> OutlierDetection {
    OutlierDetection {
        consecutive_failures: 3,
        base_ejection: Dur(Duration::from_millis(BASE)),
        max_ejection: Dur(Duration::from_millis(MAX)),
        max_ejected_percent: percent,
    }
}

fn cluster(members: usize, percent: u32) -> ClusterEntry {
    let mut cluster = cluster_of(&vec![(1, MemberState::Active); members]);
    cluster.outlier_detection = Some(detection(percent));
    cluster
}

/// A time far from the process clock's start, so "now" is never 0.
fn at(ms: u64) -> Now {
    Now {
        ms: 1_000_000 + ms,
        unix_ms: 1_700_000_000_000 + ms,
    }
}

fn fail(cluster: &ClusterEntry, index: usize, times: u32, now: Now) {
    for _ in 0..times {
        observe_at(
            cluster,
            &cluster.members[index],
            Outcome::of_status(StatusCode::INTERNAL_SERVER_ERROR),
            move || now,
        );
    }
}

fn ejected(cluster: &ClusterEntry, index: usize, now: Now) -> bool {
    cluster.members[index].shared.is_ejected_at(now.ms)
}

#[test]
fn failures_in_a_row_eject_and_a_success_starts_the_count_again() {
    let cluster = cluster(4, 50);
    fail(&cluster, 0, 2, at(0));
    assert!(!ejected(&cluster, 0, at(0)), "two failures are not three");
    observe_at(&cluster, &cluster.members[0], Outcome::Success, || at(0));
    fail(&cluster, 0, 2, at(0));
    assert!(!ejected(&cluster, 0, at(0)), "the success broke the run");
    observe_at(
        &cluster,
        &cluster.members[0],
        Outcome::ConnectFailure("connect failed: refused"),
        || at(0),
    );
    assert!(ejected(&cluster, 0, at(0)));
    let record = cluster.members[0].shared.ejections();
    assert_eq!(record.count, 1);
    assert_eq!(record.until_unix_ms, at(BASE).unix_ms);
    assert!(
        record.reason.contains("3 failures in a row") && record.reason.contains("refused"),
        "{record:?}"
    );
    assert!(
        !cluster.members[0].shared.in_error(),
        "with outlier detection, no retry window"
    );
}

#[test]
fn a_4xx_is_a_success_and_every_5xx_broken_exchange_or_timeout_a_failure() {
    let cluster = cluster(2, 50);
    assert_eq!(Outcome::of_status(StatusCode::NOT_FOUND), Outcome::Success);
    assert_eq!(
        Outcome::of_status(StatusCode::from_u16(599).unwrap()),
        Outcome::Status5xx(StatusCode::from_u16(599).unwrap())
    );
    fail(&cluster, 1, 2, at(0));
    observe_at(
        &cluster,
        &cluster.members[1],
        Outcome::ExchangeFailure("the member closed the connection"),
        || at(0),
    );
    assert!(ejected(&cluster, 1, at(0)));
    let timeouts = self::cluster(2, 50);
    for _ in 0..3 {
        observe_at(&timeouts, &timeouts.members[0], Outcome::Timeout, || at(0));
    }
    assert!(ejected(&timeouts, 0, at(0)), "timeouts are failures");
    assert!(
        timeouts.members[0]
            .shared
            .ejections()
            .reason
            .contains("no answer in time")
    );
}

#[test]
fn the_member_returns_when_the_time_is_up_and_each_ejection_lasts_longer_up_to_the_cap() {
    let cluster = cluster(4, 50);
    fail(&cluster, 0, 3, at(0));
    assert!(ejected(&cluster, 0, at(BASE - 1)));
    assert!(!ejected(&cluster, 0, at(BASE)), "back after base_ejection");

    fail(&cluster, 0, 3, at(BASE));
    let second = cluster.members[0].shared.ejections();
    assert_eq!(second.count, 2);
    assert!(ejected(&cluster, 0, at(BASE + 2 * BASE - 1)));
    assert!(!ejected(&cluster, 0, at(BASE + 2 * BASE)), "2 × base");

    let third_at = 3 * BASE;
    fail(&cluster, 0, 3, at(third_at));
    assert_eq!(cluster.members[0].shared.ejections().count, 3);
    assert!(ejected(&cluster, 0, at(third_at + MAX - 1)));
    assert!(
        !ejected(&cluster, 0, at(third_at + MAX)),
        "3 × base is past max_ejection: max_ejection"
    );
}

#[test]
fn failures_while_ejected_do_not_extend_the_ejection() {
    let cluster = cluster(4, 50);
    fail(&cluster, 0, 3, at(0));
    fail(&cluster, 0, 10, at(10));
    let record = cluster.members[0].shared.ejections();
    assert_eq!((record.count, record.until_ms), (1, at(BASE).ms));
}

#[test]
fn the_count_decays_by_one_for_each_max_ejection_without_an_ejection() {
    let cluster = cluster(4, 50);
    fail(&cluster, 0, 3, at(0));
    fail(&cluster, 0, 3, at(BASE));
    assert_eq!(cluster.members[0].shared.ejections().count, 2);
    // The second ejection ended at 3 × BASE; one max_ejection later it counts as one.
    let later = 3 * BASE + MAX;
    fail(&cluster, 0, 3, at(later));
    let record = cluster.members[0].shared.ejections();
    assert_eq!(record.count, 2, "1 kept + this one");
    assert_eq!(record.until_ms, at(later + 2 * BASE).ms);
}

#[test]
fn at_most_the_share_of_the_cluster_is_ejected_and_always_one() {
    let two = cluster(2, 50);
    fail(&two, 0, 3, at(0));
    fail(&two, 1, 3, at(0));
    assert!(ejected(&two, 0, at(0)));
    assert!(!ejected(&two, 1, at(0)), "50 % of 2 is 1");
    // Once the first is back, the second's next failure ejects it.
    fail(&two, 1, 1, at(BASE));
    assert!(ejected(&two, 1, at(BASE)));

    let four = cluster(4, 50);
    for i in 0..4 {
        fail(&four, i, 3, at(0));
    }
    let count = (0..4).filter(|&i| ejected(&four, i, at(0))).count();
    assert_eq!(count, 2);

    let none = cluster(3, 0);
    for i in 0..3 {
        fail(&none, i, 3, at(0));
    }
    let count = (0..3).filter(|&i| ejected(&none, i, at(0))).count();
    assert_eq!(count, 1, "at least one member may always be ejected");
    assert_eq!(ejection_cap(0, 50), 1);
    assert_eq!(ejection_cap(10, 100), 10);
    assert_eq!(ejection_cap(10, 300), 10);
}

#[test]
fn without_outlier_detection_a_failed_connect_opens_the_retry_window_only() {
    let mut cluster = cluster(2, 50);
    cluster.outlier_detection = None;
    fail(&cluster, 0, 10, at(0));
    assert!(!ejected(&cluster, 0, at(0)), "5xx eject nobody");
    assert!(!cluster.members[0].shared.in_error());
    observe_at(
        &cluster,
        &cluster.members[0],
        Outcome::ConnectFailure("refused"),
        || at(0),
    );
    assert!(cluster.members[0].shared.in_error());
    assert!(!ejected(&cluster, 0, at(0)));
    observe_at(&cluster, &cluster.members[0], Outcome::Success, || at(0));
    assert!(
        !cluster.members[0].shared.in_error(),
        "an answer ends the window"
    );
}

/// With the process clock, for the balancer: an ejection long enough to last the test.
#[test]
fn ejected_members_get_no_picks_until_none_is_left_then_all_are_tried() {
    let mut cluster = cluster(3, 100);
    if let Some(detection) = &mut cluster.outlier_detection {
        detection.base_ejection = Dur(Duration::from_secs(600));
        detection.max_ejection = Dur(Duration::from_secs(600));
    }
    for _ in 0..3 {
        observe(
            &cluster,
            &cluster.members[0],
            Outcome::ConnectFailure("refused"),
        );
    }
    assert!(!cluster.members[0].shared.usable());
    for _ in 0..10 {
        assert_ne!(
            balancer::pick(&cluster, &[], &balancer::Affinity::NONE),
            Some(0)
        );
    }
    for index in [1, 2] {
        for _ in 0..3 {
            observe(
                &cluster,
                &cluster.members[index],
                Outcome::Status5xx(StatusCode::BAD_GATEWAY),
            );
        }
    }
    assert!(cluster.members.iter().all(|m| !m.shared.usable()));
    // Panic: every member is ejected, so every member may be tried.
    let mut picked = [false; 3];
    for _ in 0..6 {
        if let Some(index) = balancer::pick(&cluster, &[], &balancer::Affinity::NONE) {
            picked[index] = true;
        }
    }
    assert_eq!(picked, [true; 3]);
    assert_eq!(
        balancer::pick(&cluster, &[0, 1], &balancer::Affinity::NONE),
        Some(2)
    );
}
