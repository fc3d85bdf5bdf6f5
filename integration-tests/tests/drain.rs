//! Shutdown that loses nothing: on SIGTERM a replica fails `/readyz` at once,
//! stops accepting, lets the requests in flight finish (kept-alive
//! connections closed after their current response), then exits.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use http::{Method, StatusCode};
use serde_json::json;
use switchyard_integration_tests::{Client, Fleet, eventually, spawn_echo_backend};
use tokio::task::JoinSet;

/// What a bounded load loop saw.
#[derive(Debug, Default)]
struct Seen {
    ok: AtomicUsize,
    /// Connects that failed once the listener closed (refused, or reset
    /// while queued): the request was never sent.
    refused: AtomicUsize,
    failures: std::sync::Mutex<Vec<String>>,
}

#[tokio::test]
async fn a_load_through_sigterm_loses_no_started_request() {
    let backend = spawn_echo_backend("echo").await;
    let cluster = json!({ "members": [ { "url": backend.url(), "weight": 1 } ] });
    let mut fleet = Fleet::serving_with("drain", &cluster, |options| {
        options.env("SWITCHYARD_DRAIN_TIMEOUT", "20s")
    })
    .await;
    let url = fleet.replicas[0].url("/");
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Seen::default());
    let mut load = JoinSet::new();
    // Two kept-alive clients and two that open a connection per request,
    // each bounded in count and time.
    for pooled in [true, true, false, false] {
        let (url, stop, seen) = (url.clone(), stop.clone(), seen.clone());
        let client = if pooled {
            Client::new()
        } else {
            Client::without_pool()
        };
        load.spawn(async move {
            let started = tokio::time::Instant::now();
            for _ in 0..20_000 {
                if stop.load(Ordering::Relaxed) || started.elapsed() > Duration::from_secs(60) {
                    return;
                }
                match client.send(Method::GET, &url, &[], None).await {
                    Ok(r) if r.status == StatusCode::OK => {
                        seen.ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(r) => seen
                        .failures
                        .lock()
                        .unwrap()
                        .push(format!("{} {:?}", r.status, r.body)),
                    // A failed connect sent nothing: the request never started.
                    Err(e) if format!("{e:#}").contains("client error (Connect)") => {
                        seen.refused.fetch_add(1, Ordering::Relaxed);
                        // The replica is gone or going: nothing more to send.
                        return;
                    }
                    Err(e) => seen
                        .failures
                        .lock()
                        .unwrap()
                        .push(format!("pooled {pooled}: {e:#}")),
                }
            }
        });
    }
    eventually("the load is running", Duration::from_secs(10), async || {
        let ok = seen.ok.load(Ordering::Relaxed);
        if ok >= 200 {
            Ok(())
        } else {
            Err(format!("{ok} answers"))
        }
    })
    .await;
    // A request in flight on a slow member when the signal comes.
    let slow_url = fleet.replicas[0].url("/sleep?ms=4000");
    let slow = tokio::spawn(async move {
        Client::without_pool()
            .send(Method::GET, &slow_url, &[], None)
            .await
    });
    eventually(
        "the slow request reached the member",
        Duration::from_secs(10),
        async || {
            if backend
                .requests()
                .iter()
                .any(|r| r.path.starts_with("/sleep"))
            {
                Ok(())
            } else {
                Err("not yet")
            }
        },
    )
    .await;
    let before = seen.ok.load(Ordering::Relaxed);
    fleet.replicas[0].terminate();
    // While the slow request keeps the replica draining.
    eventually(
        "/readyz fails while draining",
        Duration::from_secs(3),
        async || match fleet.replicas[0].readiness().await {
            StatusCode::SERVICE_UNAVAILABLE => Ok(()),
            other => Err(other),
        },
    )
    .await;

    let slow = slow
        .await
        .unwrap()
        .expect("the request in flight completes");
    assert_eq!(slow.status, StatusCode::OK);
    eventually(
        "the replica exits",
        Duration::from_secs(30),
        async || match fleet.replicas[0].exit_status() {
            Some(status) if status.success() => Ok(()),
            Some(status) => panic!("the replica exited with {status}"),
            None => Err("still running"),
        },
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    while let Some(joined) = load.join_next().await {
        joined.unwrap();
    }
    let failures = seen.failures.lock().unwrap().clone();
    assert!(
        failures.is_empty(),
        "started requests failed: {failures:#?}"
    );
    assert!(seen.ok.load(Ordering::Relaxed) >= before);
}
