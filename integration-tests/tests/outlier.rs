//! Passive health (outlier detection) and panic mode, over sockets: a member
//! that fails requests in a row is ejected and gets no traffic while the
//! others do, comes back when its time is up, is ejected for longer the next
//! time; at most the cluster's share is ejected; with every member failing,
//! requests still go to members; and every transition shows in the control
//! plane's `GET /api/v1/dataplanes` and the replica's metrics.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use switchyard_integration_tests::{
    DataPlane, Fleet, consistently, eventually, get, spawn_backend,
};
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

const DEADLINE: Duration = Duration::from_secs(20);

/// A member that answers its name with the status it is told to, and counts
/// the requests it gets.
struct Member {
    name: &'static str,
    addr: SocketAddr,
    status: Arc<AtomicU16>,
    hits: Arc<AtomicUsize>,
    server: JoinHandle<()>,
}

impl Member {
    async fn spawn(name: &'static str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a member can bind 127.0.0.1:0");
        let addr = listener
            .local_addr()
            .expect("a bound listener has an address");
        let status = Arc::new(AtomicU16::new(200));
        let hits = Arc::new(AtomicUsize::new(0));
        let (answer, counter) = (status.clone(), hits.clone());
        let server = tokio::spawn(async move {
            let mut connections = JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((stream, _)) = accepted else { continue };
                        let (answer, counter) = (answer.clone(), counter.clone());
                        connections.spawn(async move {
                            let service = service_fn(move |_request| {
                                counter.fetch_add(1, Ordering::SeqCst);
                                let status = StatusCode::from_u16(answer.load(Ordering::SeqCst))
                                    .unwrap_or(StatusCode::OK);
                                let mut response = Response::new(Full::new(Bytes::from(name)));
                                *response.status_mut() = status;
                                response
                                    .headers_mut()
                                    .insert("x-backend", http::HeaderValue::from_static(name));
                                std::future::ready(Ok::<_, Infallible>(response))
                            });
                            let served = hyper::server::conn::http1::Builder::new()
                                .serve_connection(TokioIo::new(stream), service)
                                .await;
                            drop(served);
                        });
                    }
                    Some(_) = connections.join_next(), if !connections.is_empty() => {}
                }
            }
        });
        Member {
            name,
            addr,
            status,
            hits,
            server,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn id(&self) -> String {
        self.addr.to_string()
    }

    fn answer(&self, status: u16) {
        self.status.store(status, Ordering::SeqCst);
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.server.abort();
    }
}

fn cluster(urls: &[String], base: &str, percent: u32) -> Value {
    let members: Vec<Value> = urls.iter().map(|url| json!({ "url": url })).collect();
    json!({
        "members": members,
        "outlier_detection": {
            "consecutive_failures": 3,
            "base_ejection": base,
            "max_ejection": "60s",
            "max_ejected_percent": percent,
        },
    })
}

/// The member's entry in the control plane's view of replica `dp-1`.
async fn reported(fleet: &Fleet, member: &str) -> Result<Value, String> {
    let replica = fleet
        .cp
        .dataplane("dp-1")
        .await
        .ok_or("dp-1 is not listed")?;
    replica["members"]
        .as_array()
        .and_then(|members| members.iter().find(|m| m["member_id"] == member))
        .cloned()
        .ok_or_else(|| format!("{member} is not in {replica}"))
}

/// Waits until the control plane shows `member` ejected (or not), and returns its entry.
async fn wait_reported(fleet: &Fleet, member: &str, ejected: bool) -> Value {
    eventually(
        &format!("dp-1 reports {member} with ejected: {ejected}"),
        DEADLINE,
        async || {
            let entry = reported(fleet, member).await?;
            if entry["ejected"] == ejected {
                Ok(entry)
            } else {
                Err(entry.to_string())
            }
        },
    )
    .await
}

/// One of the replica's metrics.
async fn metric(replica: &DataPlane, name: &str) -> u64 {
    let text = get(&replica.admin_url("/metrics")).await.body;
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no metric {name} in {text}"))
}

/// Sends GETs until `member` has had `hits` requests, at most `limit` of them;
/// every answer must be a member's.
async fn until_hits(replica: &DataPlane, member: &Member, hits: usize, limit: usize) {
    for _ in 0..limit {
        if member.hits() >= hits {
            return;
        }
        let response = replica.get("/").await;
        assert!(
            response.header("x-backend").is_some(),
            "a member answered: {response:?}"
        );
    }
    panic!(
        "{} had {} requests, not {hits}, after {limit}",
        member.name,
        member.hits()
    );
}

/// Sends `n` GETs and asserts each was answered by `member` with 200.
async fn all_from(replica: &DataPlane, member: &Member, n: usize) {
    for _ in 0..n {
        let response = replica.get("/").await;
        assert_eq!(response.status, StatusCode::OK, "{response:?}");
        assert_eq!(response.header("x-backend"), Some(member.name));
    }
}

#[tokio::test]
async fn a_member_failing_in_a_row_is_ejected_returns_in_time_and_is_ejected_longer_next_time() {
    let (bad, good) = (Member::spawn("bad").await, Member::spawn("good").await);
    bad.answer(500);
    let fleet = Fleet::serving(
        "outlier-eject",
        &cluster(&[bad.url(), good.url()], "2s", 50),
    )
    .await;
    let replica = &fleet.replicas[0];

    until_hits(replica, &bad, 3, 20).await;
    let good_before = good.hits();
    all_from(replica, &good, 10).await;
    assert_eq!(bad.hits(), 3, "the ejected member got nothing more");
    assert_eq!(
        good.hits(),
        good_before + 10,
        "the other member got every request"
    );

    let entry = wait_reported(&fleet, &bad.id(), true).await;
    assert_eq!(entry["healthy"], false, "{entry}");
    assert_eq!(entry["ejections"], 1, "{entry}");
    assert!(entry["ejected_until"].is_string(), "{entry}");
    let reason = entry["ejection_reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("3 failures in a row") && reason.contains("500"),
        "{entry}"
    );
    assert_eq!(metric(replica, "switchyard_members_ejected").await, 1);
    assert_eq!(
        metric(replica, "switchyard_member_ejections_total").await,
        1
    );

    // Back after its ejection time: it gets requests again.
    bad.answer(200);
    eventually(
        "the ejected member gets requests again",
        DEADLINE,
        async || {
            let response = replica.get("/").await;
            match response.header("x-backend") {
                Some("bad") => Ok(()),
                other => Err(format!("answered by {other:?}")),
            }
        },
    )
    .await;
    let entry = wait_reported(&fleet, &bad.id(), false).await;
    assert_eq!(entry["healthy"], true, "{entry}");
    assert_eq!(metric(replica, "switchyard_members_ejected").await, 0);

    // Failing again: ejected again, for twice as long (2 × 2s), so it is
    // still out after the first ejection's length.
    bad.answer(500);
    let hits = bad.hits();
    until_hits(replica, &bad, hits + 3, 20).await;
    let ejected_at = bad.hits();
    let entry = wait_reported(&fleet, &bad.id(), true).await;
    assert_eq!(entry["ejections"], 2, "{entry}");
    consistently(
        "the twice-ejected member gets nothing",
        Duration::from_millis(2500),
        async || {
            let response = replica.get("/").await;
            match (response.header("x-backend"), bad.hits()) {
                (Some("good"), hits) if hits == ejected_at => Ok(()),
                (answered, hits) => Err(format!("answered by {answered:?}, bad had {hits}")),
            }
        },
    )
    .await;
    assert_eq!(
        metric(replica, "switchyard_member_ejections_total").await,
        2
    );
}

#[tokio::test]
async fn a_member_refusing_connections_is_ejected_and_clients_never_see_it() {
    let mut refusing = spawn_backend("refusing").await;
    let url = refusing.url();
    refusing.stop().await;
    let good = Member::spawn("good").await;
    let fleet = Fleet::serving("outlier-refused", &cluster(&[url, good.url()], "60s", 50)).await;
    let replica = &fleet.replicas[0];

    // Every refused connect goes on to the other member; the third ejects.
    all_from(replica, &good, 10).await;
    assert_eq!(good.hits(), 10, "one request each, none twice");
    let entry = wait_reported(&fleet, &refusing.authority(), true).await;
    let reason = entry["ejection_reason"].as_str().unwrap_or_default();
    assert!(reason.contains("connect"), "{entry}");
}

#[tokio::test]
async fn with_two_members_and_50_percent_at_most_one_is_ejected() {
    let (a, b) = (Member::spawn("a").await, Member::spawn("b").await);
    a.answer(500);
    b.answer(503);
    let fleet = Fleet::serving("outlier-cap", &cluster(&[a.url(), b.url()], "60s", 50)).await;
    let replica = &fleet.replicas[0];

    for _ in 0..12 {
        let response = replica.get("/").await;
        assert!(response.status.is_server_error(), "{response:?}");
        assert!(
            response.header("x-backend").is_some(),
            "the member's answer, not ours: {response:?}"
        );
    }
    assert_eq!(
        a.hits() + b.hits(),
        12,
        "each request reached one member once"
    );
    let (ejected, kept) = if a.hits() < b.hits() {
        (&a, &b)
    } else {
        (&b, &a)
    };
    assert_eq!(ejected.hits(), 3, "ejected after its third failure");
    assert_eq!(kept.hits(), 9, "the other stays, failing or not");
    wait_reported(&fleet, &ejected.id(), true).await;
    let entry = reported(&fleet, &kept.id())
        .await
        .expect("the kept member is reported");
    assert_eq!(entry["ejected"], false, "{entry}");
    assert_eq!(metric(replica, "switchyard_members_ejected").await, 1);
}

#[tokio::test]
async fn with_every_member_ejected_requests_still_go_to_members() {
    let (a, b) = (Member::spawn("a").await, Member::spawn("b").await);
    a.answer(500);
    b.answer(500);
    let fleet = Fleet::serving("outlier-panic", &cluster(&[a.url(), b.url()], "60s", 100)).await;
    let replica = &fleet.replicas[0];

    until_hits(replica, &a, 3, 20).await;
    until_hits(replica, &b, 3, 20).await;
    wait_reported(&fleet, &a.id(), true).await;
    wait_reported(&fleet, &b.id(), true).await;

    // Panic mode: no member is usable, so all are tried, not a 503 from us.
    let before = a.hits() + b.hits();
    for _ in 0..6 {
        let response = replica.get("/").await;
        assert_eq!(
            response.status,
            StatusCode::INTERNAL_SERVER_ERROR,
            "{response:?}"
        );
        assert!(response.header("x-backend").is_some(), "{response:?}");
    }
    assert_eq!(a.hits() + b.hits(), before + 6);
    assert!(a.hits() > 3 && b.hits() > 3, "both still get requests");
    let proxy_errors = get(&replica.admin_url("/metrics")).await.body;
    assert!(
        proxy_errors.contains("switchyard_proxy_errors_total{reason=\"no_member\"} 0"),
        "{proxy_errors}"
    );
}
