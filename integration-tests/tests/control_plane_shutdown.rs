//! The control plane on SIGTERM: writes in flight are either durable and
//! answered, or not answered; the replicas' config streams end at once (they
//! reconnect elsewhere, or to the next control plane) instead of hanging.

use std::time::Duration;

use http::{Method, StatusCode};
use serde_json::json;
use switchyard_integration_tests::{Client, Fleet, eventually};

const DEADLINE: Duration = Duration::from_secs(10);
const WRITES: usize = 40;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_keeps_every_answered_write_and_ends_the_streams() {
    let mut fleet = Fleet::start("cp-sigterm", 1).await;
    let cluster = json!({"policy": "round_robin", "members": []});
    fleet
        .cp
        .write(Method::PUT, "/api/v1/clusters/web", Some(&cluster))
        .await;
    let ended_before = fleet.replicas[0]
        .log()
        .count_matching("Config stream ended");

    // A burst of writes, each on its own connection; SIGTERM lands among them.
    let url = fleet.cp.url("/api/v1/clusters/web/members");
    let mut writes = Vec::new();
    for i in 0..WRITES {
        let url = url.clone();
        writes.push(tokio::spawn(async move {
            let body = json!({ "url": format!("http://127.0.0.1:{}", 20000 + i) });
            let client = Client::without_pool();
            let answer =
                tokio::time::timeout(DEADLINE, client.send(Method::POST, &url, &[], Some(&body)))
                    .await;
            match answer {
                Ok(Ok(r)) if r.status == StatusCode::CREATED => {
                    Some((i, r.json()["version"].as_u64()))
                }
                _ => None,
            }
        }));
        if i == WRITES / 2 {
            assert!(fleet.cp.terminate(), "the control plane was running");
        }
    }
    let mut answered = Vec::new();
    for write in writes {
        if let Some(done) = write.await.expect("a write task") {
            answered.push(done);
        }
    }
    eventually("the control plane exits", DEADLINE, async || {
        if fleet.cp.is_running() {
            Err("still running")
        } else {
            Ok(())
        }
    })
    .await;
    eventually("the replica sees its stream end", DEADLINE, async || {
        let ended = fleet.replicas[0]
            .log()
            .count_matching("Config stream ended");
        if ended > ended_before {
            Ok(())
        } else {
            Err("no end logged")
        }
    })
    .await;

    // After a restart every answered write is there, and versions go on.
    fleet.cp.start().await;
    let config = fleet.cp.config().await;
    let members = config["clusters"][0]["members"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        config["clusters"][0]["name"], "web",
        "the write before SIGTERM"
    );
    eprintln!("{} of {WRITES} writes answered", answered.len());
    let highest = answered.iter().filter_map(|(_, v)| *v).max().unwrap_or(0);
    for (i, _) in &answered {
        let url = format!("http://127.0.0.1:{}", 20000 + i);
        assert!(
            members.iter().any(|m| m["url"] == url.as_str()),
            "answered write {url} lost: {members:?}"
        );
    }
    assert!(fleet.cp.version().await >= highest);
    let next = fleet
        .cp
        .write(Method::PUT, "/api/v1/clusters/other", Some(&cluster))
        .await;
    assert!(next > highest, "version {next} after {highest}");
}
