use super::*;
use switchyard_shared::{Cluster, Config};

fn snapshot(version: u64, cluster: &str) -> Snapshot {
    Snapshot::new(
        version,
        "store-1",
        Config {
            clusters: vec![Cluster::new(cluster)],
            routes: vec![],
        },
    )
}

fn hello(node_id: &str, s: Option<&Snapshot>) -> v1::Hello {
    v1::Hello {
        node_id: node_id.to_owned(),
        version: s.map_or(0, |s| s.version),
        store_id: s.map(|s| s.store_id.clone()).unwrap_or_default(),
        hash: s.map(|s| s.hash.clone()).unwrap_or_default(),
        refused: None,
    }
}

#[test]
fn a_replica_with_the_current_hash_is_synced_and_sent_nothing() {
    let registry = Registry::new();
    let current = snapshot(3, "a");
    let conn = registry.connect(&hello("dp-1", Some(&current)), None, &current);
    assert!(!registry.should_send("dp-1", conn.id, &current));
    let views = registry.views(&current);
    assert_eq!(views[0].state, ReplicaState::Synced);
    assert_eq!(views[0].version, 3);
}

#[test]
fn a_nacked_version_is_never_sent_again_even_after_a_reconnect() {
    let registry = Registry::new();
    let v2 = snapshot(2, "a");
    let conn = registry.connect(&hello("dp-1", None), None, &v2);
    assert!(registry.should_send("dp-1", conn.id, &v2));
    assert!(!registry.should_send("dp-1", conn.id, &v2), "sent twice");
    let nack = v1::Nack {
        version: 2,
        error: "boom".into(),
    };
    registry.nack("dp-1", conn.id, &nack);
    assert_eq!(registry.views(&v2)[0].state, ReplicaState::Nacked);
    registry.disconnect("dp-1", conn.id);
    let conn = registry.connect(&hello("dp-1", None), None, &v2);
    assert!(!registry.should_send("dp-1", conn.id, &v2));
    let view = &registry.views(&v2)[0];
    assert_eq!(view.state, ReplicaState::Nacked);
    assert_eq!(view.last_error.as_deref(), Some("boom"));
    assert!(registry.should_send("dp-1", conn.id, &snapshot(3, "b")));
}

#[test]
fn an_old_stream_cannot_clobber_the_new_one() {
    let registry = Registry::new();
    let current = snapshot(1, "a");
    let mut old = registry.connect(&hello("dp-1", None), None, &current);
    let new = registry.connect(&hello("dp-1", None), None, &current);
    assert!(new.replaced);
    assert!(old.superseded.try_recv().is_ok());
    registry.disconnect("dp-1", old.id);
    let ack = v1::Ack {
        version: 1,
        hash: String::new(),
    };
    registry.ack("dp-1", old.id, &ack, &current);
    let view = &registry.views(&current)[0];
    assert!(view.connected);
    assert_eq!(view.state, ReplicaState::Stale);
    registry.ack("dp-1", new.id, &ack, &current);
    assert_eq!(registry.views(&current)[0].state, ReplicaState::Synced);
    registry.disconnect("dp-1", new.id);
    assert_eq!(
        registry.views(&current)[0].state,
        ReplicaState::Disconnected
    );
    assert_eq!(registry.counts(), (0, 1));
}

#[test]
fn one_snapshot_is_in_flight_and_a_revert_is_still_sent_after_it() {
    let registry = Registry::new();
    let v1 = snapshot(1, "a");
    let v2 = snapshot(2, "b");
    let conn = registry.connect(&hello("dp-1", Some(&v1)), None, &v1);
    assert!(registry.should_send("dp-1", conn.id, &v2));
    // Version 3 has the content of version 1, which the replica ran before
    // version 2 was sent. It waits until version 2 is answered, then goes.
    let v3 = Snapshot::new(3, "store-1", v1.config.clone());
    assert!(!registry.should_send("dp-1", conn.id, &v3));
    let ack = v1::Ack {
        version: 2,
        hash: v2.hash.clone(),
    };
    registry.ack("dp-1", conn.id, &ack, &v3);
    assert_eq!(registry.views(&v3)[0].state, ReplicaState::Stale);
    assert!(registry.should_send("dp-1", conn.id, &v3));
    assert!(!registry.should_send("dp-1", conn.id, &v3));
}

#[test]
fn a_refusal_told_in_the_hello_is_not_sent_again() {
    let registry = Registry::new();
    let v1 = snapshot(1, "a");
    let v2 = snapshot(2, "b");
    let mut hello = hello("dp-1", Some(&v1));
    hello.refused = Some(v1::Refused {
        version: 2,
        store_id: "store-1".into(),
        error: "cannot apply".into(),
    });
    let conn = registry.connect(&hello, None, &v2);
    assert!(!registry.should_send("dp-1", conn.id, &v2));
    let view = &registry.views(&v2)[0];
    assert_eq!(view.state, ReplicaState::Nacked);
    assert_eq!(view.last_error.as_deref(), Some("cannot apply"));
    let v3 = snapshot(3, "c");
    assert!(registry.should_send("dp-1", conn.id, &v3));
    // A refusal of another store's version says nothing about this store's.
    let mut other = hello.clone();
    other.node_id = "dp-2".into();
    if let Some(refused) = other.refused.as_mut() {
        refused.store_id = "store-0".into();
    }
    let conn = registry.connect(&other, None, &v2);
    assert!(registry.should_send("dp-2", conn.id, &v2));
}

#[tokio::test(start_paused = true)]
async fn waits_end_on_ack_nack_or_timeout() {
    let registry = std::sync::Arc::new(Registry::new());
    let current = snapshot(5, "a");
    assert!(
        registry
            .wait_applied(5, "store-1", Duration::from_secs(1))
            .await
            .is_ok(),
        "no replica connected"
    );
    let conn = registry.connect(&hello("dp-1", None), None, &current);
    let failure = registry
        .wait_applied(5, "store-1", Duration::from_secs(1))
        .await
        .unwrap_err();
    let WaitFailure::TimedOut(lagging) = failure else {
        panic!("expected a timeout, got {failure:?}");
    };
    assert_eq!(lagging[0].node_id, "dp-1");
    assert_eq!(lagging[0].version, 0);

    let waiter = {
        let registry = registry.clone();
        tokio::spawn(async move {
            registry
                .wait_applied(5, "store-1", Duration::from_secs(60))
                .await
        })
    };
    tokio::task::yield_now().await;
    let ack = v1::Ack {
        version: 5,
        hash: current.hash.clone(),
    };
    registry.ack("dp-1", conn.id, &ack, &current);
    assert!(waiter.await.unwrap().is_ok());

    let nack = v1::Nack {
        version: 6,
        error: "bad".into(),
    };
    registry.nack("dp-1", conn.id, &nack);
    let failure = registry
        .wait_applied(6, "store-1", Duration::from_secs(1))
        .await
        .unwrap_err();
    let WaitFailure::Nacked(lagging) = failure else {
        panic!("expected a nack, got {failure:?}");
    };
    assert_eq!(lagging[0].error.as_deref(), Some("bad"));
}

#[test]
fn last_seen_follows_the_streams_messages_and_its_end() {
    let seen = |registry: &Registry, current: &Snapshot| {
        let text = registry.views(current)[0]
            .last_seen
            .clone()
            .expect("a replica that said hello has been seen");
        assert!(text.ends_with('Z'), "{text} is not UTC");
        humantime::parse_rfc3339(&text).unwrap()
    };
    // The text has milliseconds: compare against a start rounded down to them.
    let start = SystemTime::UNIX_EPOCH
        + Duration::from_millis(
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap()
                .as_millis() as u64,
        );
    let registry = Registry::new();
    let current = snapshot(2, "a");
    let conn = registry.connect(&hello("dp-1", None), None, &current);
    let hello_at = seen(&registry, &current);
    assert!(hello_at >= start, "{hello_at:?} before {start:?}");
    assert!(hello_at <= SystemTime::now());
    registry.health("dp-1", conn.id, &v1::HealthReport::default());
    let report_at = seen(&registry, &current);
    assert!(report_at >= hello_at);
    registry.disconnect("dp-1", conn.id);
    let closed_at = seen(&registry, &current);
    assert!(closed_at >= report_at);
    assert_eq!(
        registry.views(&current)[0].state,
        ReplicaState::Disconnected
    );
}

fn report(members: &[(&str, u64, u64)]) -> v1::HealthReport {
    v1::HealthReport {
        members: members
            .iter()
            .map(|(id, requests, errors)| v1::MemberHealth {
                cluster: "web".into(),
                member_id: (*id).to_owned(),
                healthy: true,
                requests: *requests,
                errors: *errors,
                ..Default::default()
            })
            .collect(),
    }
}

/// `(requests_per_second, error_rate)` of each member, by id, as the view shows them.
fn rates_at(
    registry: &Registry,
    current: &Snapshot,
    now: Instant,
) -> Vec<(String, Option<f64>, Option<f64>)> {
    registry.views_at(current, now)[0]
        .members
        .iter()
        .map(|m| (m.member_id.clone(), m.requests_per_second, m.error_rate))
        .collect()
}

#[test]
fn member_rates_come_from_two_reports_and_start_over_when_counts_go_down() {
    let registry = Registry::new();
    let current = snapshot(1, "web");
    let conn = registry.connect(&hello("dp-1", None), None, &current);
    let t0 = Instant::now();
    let secs = |n: u64| t0 + Duration::from_secs(n);

    // One report: no interval yet.
    registry.health_at("dp-1", conn.id, &report(&[("a", 100, 0), ("b", 10, 0)]), t0);
    assert_eq!(
        rates_at(&registry, &current, t0),
        vec![("a".into(), None, None), ("b".into(), None, None)]
    );

    // Two seconds later: a got 50 more (5 of them errors), b none; c is new.
    registry.health_at(
        "dp-1",
        conn.id,
        &report(&[("a", 150, 5), ("b", 10, 0), ("c", 7, 7)]),
        secs(2),
    );
    assert_eq!(
        rates_at(&registry, &current, secs(2)),
        vec![
            ("a".into(), Some(25.0), Some(0.1)),
            ("b".into(), Some(0.0), None),
            ("c".into(), None, None),
        ]
    );

    // The replica restarted: a's counts went down, it starts over; c's member
    // failed every attempt without an answer (errors without requests).
    registry.health_at(
        "dp-1",
        conn.id,
        &report(&[("a", 3, 0), ("c", 7, 11)]),
        secs(4),
    );
    assert_eq!(
        rates_at(&registry, &current, secs(4)),
        vec![("a".into(), None, None), ("c".into(), Some(0.0), Some(1.0))]
    );
    registry.health_at(
        "dp-1",
        conn.id,
        &report(&[("a", 13, 20), ("c", 7, 11)]),
        secs(6),
    );
    assert_eq!(
        rates_at(&registry, &current, secs(6))[0],
        ("a".into(), Some(5.0), Some(1.0)),
        "more errors than answers is still at most 1"
    );

    // No report for a while: the replica saw no requests.
    let later = rates_at(
        &registry,
        &current,
        secs(6) + RATES_STALE_AFTER + Duration::from_secs(1),
    );
    assert_eq!(later[0], ("a".into(), Some(0.0), None));

    // A disconnected replica shows its members' last health, without rates.
    registry.disconnect("dp-1", conn.id);
    assert_eq!(
        rates_at(&registry, &current, secs(8)),
        vec![("a".into(), None, None), ("c".into(), None, None)]
    );
}

#[test]
fn member_rates_are_in_the_json_as_null_or_numbers() {
    let registry = Registry::new();
    let current = snapshot(1, "web");
    let conn = registry.connect(&hello("dp-1", None), None, &current);
    let t0 = Instant::now();
    registry.health_at("dp-1", conn.id, &report(&[("a", 0, 0)]), t0);
    let json = serde_json::to_value(registry.views_at(&current, t0)).unwrap();
    let member = &json[0]["members"][0];
    assert!(member["requests_per_second"].is_null(), "{member}");
    assert!(member["error_rate"].is_null(), "{member}");
    registry.health_at(
        "dp-1",
        conn.id,
        &report(&[("a", 4, 1)]),
        t0 + Duration::from_secs(2),
    );
    let json =
        serde_json::to_value(registry.views_at(&current, t0 + Duration::from_secs(2))).unwrap();
    let member = &json[0]["members"][0];
    assert_eq!(member["requests_per_second"], 2.0);
    assert_eq!(member["error_rate"], 0.25);
}

#[test]
fn a_version_is_propagated_once_every_connected_replica_runs_it() {
    let registry = Registry::new();
    assert!(
        registry.stored(1, "store-1").is_empty(),
        "no replica: nothing to measure"
    );
    let v2 = snapshot(2, "a");
    let one = registry.connect(&hello("dp-1", None), None, &v2);
    let two = registry.connect(&hello("dp-2", None), None, &v2);
    assert!(registry.stored(2, "store-1").is_empty());
    let ack = |version| v1::Ack {
        version,
        hash: String::new(),
    };
    registry.ack("dp-1", one.id, &ack(2), &v2);
    assert!(
        registry.propagated("store-1").is_empty(),
        "dp-2 runs nothing yet"
    );
    // Version 3 comes before dp-2 answered; dp-2 then runs 3, which has 2 in it.
    let v3 = snapshot(3, "b");
    assert!(registry.stored(3, "store-1").is_empty());
    registry.ack("dp-2", two.id, &ack(3), &v3);
    assert_eq!(
        registry.propagated("store-1").len(),
        1,
        "version 2; dp-1 still at 2"
    );
    registry.ack("dp-1", one.id, &ack(3), &v3);
    assert_eq!(registry.propagated("store-1").len(), 1, "version 3");
    assert!(registry.propagated("store-1").is_empty(), "measured once");

    // A replica that goes away stops holding a version back.
    assert!(registry.stored(4, "store-1").is_empty());
    registry.ack("dp-1", one.id, &ack(4), &snapshot(4, "c"));
    registry.disconnect("dp-2", two.id);
    assert_eq!(registry.propagated("store-1").len(), 1);
}
