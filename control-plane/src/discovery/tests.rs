//! Real gRPC streams on 127.0.0.1:0 against the service, with the REST router
//! driven in-process for the writes.

use axum::body::Body;
use axum::http::StatusCode;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use switchyard_shared::Snapshot;
use switchyard_shared::proto::v1::config_discovery_client::ConfigDiscoveryClient;
use tokio::task::JoinHandle;
use tower::ServiceExt;

use super::*;
use crate::api::{AppState, router};
use crate::test_support::TempDir;

const DEADLINE: Duration = Duration::from_secs(10);

struct Harness {
    router: axum::Router,
    store: Store,
    addr: std::net::SocketAddr,
    stop: watch::Sender<bool>,
    server: JoinHandle<Result<(), Error>>,
    _dir: TempDir,
}

impl Harness {
    async fn start() -> Self {
        let dir = TempDir::new("discovery");
        let store = Store::open(dir.join("state.json"), None).await.unwrap();
        let registry = Arc::new(Registry::new());
        let metrics = Arc::new(Metrics::default());
        let (stop, stop_rx) = watch::channel(false);
        let discovery = Discovery::new(
            store.clone(),
            registry.clone(),
            metrics.clone(),
            stop_rx.clone(),
            Coalesce::default(),
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(serve(listener, None, discovery, crate::stopped(stop_rx)));
        Harness {
            router: router(AppState::new(store.clone(), registry, metrics)),
            store,
            addr,
            stop,
            server,
            _dir: dir,
        }
    }

    /// A REST call through the router, in a task so the test can answer
    /// for the replicas while a `?wait=` write is pending.
    fn call(
        &self,
        method: &str,
        uri: &str,
        body: Option<Value>,
    ) -> JoinHandle<(StatusCode, Value)> {
        let request = axum::http::Request::builder()
            .method(method)
            .uri(uri)
            .header("content-type", "application/json")
            .body(body.map_or_else(Body::empty, |b| Body::from(b.to_string())))
            .unwrap();
        let router = self.router.clone();
        tokio::spawn(async move {
            let response = router.oneshot(request).await.unwrap();
            let status = response.status();
            let bytes = response.into_body().collect().await.unwrap().to_bytes();
            (status, serde_json::from_slice(&bytes).unwrap())
        })
    }

    fn put_cluster(&self, name: &str, port: u16, wait: &str) -> JoinHandle<(StatusCode, Value)> {
        let body = json!({ "members": [ { "url": format!("http://127.0.0.1:{port}") } ] });
        self.call("PUT", &format!("/api/v1/clusters/{name}{wait}"), Some(body))
    }

    async fn dataplanes(&self) -> Value {
        let (status, body) = self.call("GET", "/api/v1/dataplanes", None).await.unwrap();
        assert_eq!(status, StatusCode::OK);
        body
    }

    /// Polls `GET /api/v1/dataplanes` until `check` holds.
    async fn eventually(&self, check: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            let body = self.dataplanes().await;
            if check(&body) {
                return body;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "never happened: {body}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn hello(&self, node_id: &str, running: Option<&Snapshot>) -> v1::Hello {
        v1::Hello {
            node_id: node_id.to_owned(),
            version: running.map_or(0, |s| s.version),
            store_id: running.map(|s| s.store_id.clone()).unwrap_or_default(),
            hash: running.map(|s| s.hash.clone()).unwrap_or_default(),
            refused: None,
        }
    }
}

/// A fake data plane: what a real one sends, by hand.
struct Replica {
    tx: mpsc::Sender<v1::DataPlaneMessage>,
    inbound: Streaming<v1::ControlPlaneMessage>,
}

impl Replica {
    async fn connect(addr: std::net::SocketAddr, first: Kind) -> Self {
        let mut client = ConfigDiscoveryClient::connect(format!("http://{addr}"))
            .await
            .unwrap();
        let (tx, rx) = mpsc::channel(8);
        tx.send(v1::DataPlaneMessage { kind: Some(first) })
            .await
            .unwrap();
        let inbound = client
            .stream(ReceiverStream::new(rx))
            .await
            .unwrap()
            .into_inner();
        Replica { tx, inbound }
    }

    async fn next(&mut self) -> Result<Option<v1::ControlPlaneMessage>, Status> {
        tokio::time::timeout(DEADLINE, self.inbound.message())
            .await
            .expect("no message in time")
    }

    async fn snapshot(&mut self) -> v1::Snapshot {
        match self.next().await.unwrap().and_then(|m| m.kind) {
            Some(v1::control_plane_message::Kind::Snapshot(snapshot)) => snapshot,
            None => panic!("the stream ended"),
        }
    }

    async fn send(&self, kind: Kind) {
        self.tx
            .send(v1::DataPlaneMessage { kind: Some(kind) })
            .await
            .unwrap();
    }

    async fn ack(&self, snapshot: &v1::Snapshot) {
        self.send(Kind::Ack(v1::Ack {
            version: snapshot.version,
            hash: snapshot.hash.clone(),
        }))
        .await;
    }
}

#[tokio::test]
async fn replicas_get_snapshots_and_writes_wait_for_their_acks() {
    let cp = Harness::start().await;
    assert_eq!(
        cp.put_cluster("a", 8080, "").await.unwrap().0,
        StatusCode::OK
    );
    let mut dp = Replica::connect(cp.addr, Kind::Hello(cp.hello("dp-1", None))).await;
    let first = dp.snapshot().await;
    assert_eq!(first.version, 1);
    assert_eq!(first.store_id, cp.store.current().store_id);
    dp.ack(&first).await;

    let write = cp.put_cluster("b", 8081, "?wait=5s");
    let second = dp.snapshot().await;
    assert_eq!(second.version, 2);
    assert_eq!(second.clusters.len(), 2);
    dp.ack(&second).await;
    let (status, body) = write.await.unwrap();
    assert_eq!((status, body), (StatusCode::OK, json!({ "version": 2 })));

    let replicas = cp.dataplanes().await;
    assert_eq!(replicas[0]["node_id"], "dp-1");
    assert_eq!(replicas[0]["state"], "synced");
    assert_eq!(replicas[0]["version"], 2);
    assert_eq!(replicas[0]["connected"], true);
    assert!(
        replicas[0]["peer"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:")
    );

    dp.send(Kind::Health(v1::HealthReport {
        members: vec![v1::MemberHealth {
            cluster: "a".into(),
            member_id: "127.0.0.1:8080".into(),
            healthy: false,
            detail: "connection refused".into(),
            ..Default::default()
        }],
    }))
    .await;
    let replicas = cp
        .eventually(|r| r[0]["members"].as_array().is_some_and(|m| !m.is_empty()))
        .await;
    assert_eq!(replicas[0]["members"][0]["detail"], "connection refused");
    assert_eq!(replicas[0]["members"][0]["ejected"], false);
    assert_eq!(replicas[0]["members"][0]["ejected_until"], Value::Null);

    dp.send(Kind::Health(v1::HealthReport {
        members: vec![v1::MemberHealth {
            cluster: "a".into(),
            member_id: "127.0.0.1:8080".into(),
            healthy: false,
            detail: "ejected".into(),
            ejected: true,
            ejected_until_unix_ms: 1_700_000_000_123,
            ejections: 2,
            ejection_reason: "5 failures in a row".into(),
            ..Default::default()
        }],
    }))
    .await;
    let replicas = cp
        .eventually(|r| r[0]["members"][0]["ejected"] == true)
        .await;
    let member = &replicas[0]["members"][0];
    assert_eq!(member["ejected_until"], "2023-11-14T22:13:20.123Z");
    assert_eq!(member["ejections"], 2);
    assert_eq!(member["ejection_reason"], "5 failures in a row");

    drop(dp);
    cp.eventually(|r| r[0]["state"] == "disconnected").await;
}

#[tokio::test]
async fn a_nack_fails_the_wait_and_that_version_is_never_sent_again() {
    let cp = Harness::start().await;
    cp.put_cluster("a", 8080, "").await.unwrap();
    let mut dp = Replica::connect(cp.addr, Kind::Hello(cp.hello("dp-1", None))).await;
    let first = dp.snapshot().await;
    dp.ack(&first).await;

    let write = cp.put_cluster("b", 8081, "?wait=5s");
    let refused = dp.snapshot().await;
    dp.send(Kind::Nack(v1::Nack {
        version: refused.version,
        error: "boom".into(),
    }))
    .await;
    let (status, body) = write.await.unwrap();
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    let error = body["error"].as_str().unwrap();
    assert!(
        error.contains("replicas did not apply version 2"),
        "{error}"
    );
    assert!(error.contains("dp-1 nacked: boom"), "{error}");
    assert!(error.contains("stored"), "{error}");
    assert_eq!(body["version"], 2);
    assert_eq!(body["replicas"][0]["node_id"], "dp-1");
    assert_eq!(cp.store.current().version, 2, "the change itself is kept");

    let replicas = cp.dataplanes().await;
    assert_eq!(replicas[0]["state"], "nacked");
    assert_eq!(replicas[0]["last_error"], "boom");
    assert_eq!(replicas[0]["nacked_version"], 2);
    assert_eq!(replicas[0]["version"], 1);

    // Reconnected, it runs version 1 and is not sent version 2 again...
    drop(dp);
    cp.eventually(|r| r[0]["state"] == "disconnected").await;
    let running = Snapshot::try_from(first).unwrap();
    let mut dp = Replica::connect(cp.addr, Kind::Hello(cp.hello("dp-1", Some(&running)))).await;
    cp.eventually(|r| r[0]["connected"] == true).await;
    assert_eq!(cp.dataplanes().await[0]["state"], "nacked");
    // ...only a newer one.
    cp.put_cluster("c", 8082, "").await.unwrap();
    assert_eq!(dp.snapshot().await.version, 3);
}

#[tokio::test]
async fn a_replica_that_runs_the_current_config_is_sent_nothing() {
    let cp = Harness::start().await;
    cp.put_cluster("a", 8080, "").await.unwrap();
    let current = cp.store.current();
    let mut dp = Replica::connect(cp.addr, Kind::Hello(cp.hello("dp-1", Some(&current)))).await;
    let replicas = cp.eventually(|r| r[0]["connected"] == true).await;
    assert_eq!(replicas[0]["state"], "synced");
    // A write that waits for it returns at once: it is already there.
    let (status, _) = cp.put_cluster("a", 8080, "?wait=5s").await.unwrap();
    assert_eq!(status, StatusCode::OK);
    cp.put_cluster("b", 8081, "").await.unwrap();
    assert_eq!(dp.snapshot().await.version, 2, "version 1 was not sent");
}

#[tokio::test]
async fn a_wait_times_out_naming_the_replicas_behind() {
    let cp = Harness::start().await;
    cp.put_cluster("a", 8080, "").await.unwrap();
    let mut dp = Replica::connect(cp.addr, Kind::Hello(cp.hello("dp-1", None))).await;
    let first = dp.snapshot().await;
    dp.ack(&first).await;
    cp.eventually(|r| r[0]["state"] == "synced").await;

    let (status, body) = cp.put_cluster("b", 8081, "?wait=100ms").await.unwrap();
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{body}");
    let error = body["error"].as_str().unwrap();
    assert!(error.contains("dp-1 is at version 1"), "{error}");
    assert!(error.contains("stored as version 2"), "{error}");
    assert_eq!(body["replicas"][0]["version"], 1);
    assert_eq!(cp.dataplanes().await[0]["state"], "stale");
}

#[tokio::test]
async fn the_first_message_must_be_a_hello() {
    let cp = Harness::start().await;
    let ack = Kind::Ack(v1::Ack {
        version: 1,
        hash: String::new(),
    });
    let mut dp = Replica::connect(cp.addr, ack).await;
    let status = dp.next().await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(status.message().contains("hello"), "{status:?}");

    let mut dp = Replica::connect(cp.addr, Kind::Hello(cp.hello("", None))).await;
    let status = dp.next().await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert_eq!(cp.dataplanes().await, json!([]));
}

#[tokio::test]
async fn a_second_stream_of_a_node_replaces_the_first() {
    let cp = Harness::start().await;
    cp.put_cluster("a", 8080, "").await.unwrap();
    let mut old = Replica::connect(cp.addr, Kind::Hello(cp.hello("dp-1", None))).await;
    assert_eq!(old.snapshot().await.version, 1);
    let mut new = Replica::connect(cp.addr, Kind::Hello(cp.hello("dp-1", None))).await;
    let status = old.next().await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Aborted, "{status:?}");
    let first = new.snapshot().await;
    new.ack(&first).await;
    let replicas = cp.eventually(|r| r[0]["state"] == "synced").await;
    assert_eq!(replicas.as_array().unwrap().len(), 1);
    assert_eq!(replicas[0]["connected"], true);
}

#[tokio::test]
async fn streams_end_on_shutdown() {
    let cp = Harness::start().await;
    cp.put_cluster("a", 8080, "").await.unwrap();
    let mut dp = Replica::connect(cp.addr, Kind::Hello(cp.hello("dp-1", None))).await;
    dp.snapshot().await;
    cp.stop.send_replace(true);
    assert!(
        matches!(dp.next().await, Ok(None)),
        "the stream ends cleanly"
    );
    tokio::time::timeout(DEADLINE, cp.server)
        .await
        .expect("the server stops")
        .unwrap()
        .unwrap();
}

#[test]
fn with_mutual_tls_the_hello_must_claim_the_certificates_node_id() {
    let hello = |node_id: &str| v1::Hello {
        node_id: node_id.to_owned(),
        ..Default::default()
    };
    assert!(
        check_identity(&hello("dp-1"), None).is_ok(),
        "plaintext or TLS without a client CA"
    );
    let certified = Certified::Node("dp-1".into());
    assert!(check_identity(&hello("dp-1"), Some(&certified)).is_ok());
    let Err((reason, status)) = check_identity(&hello("dp-2"), Some(&certified)) else {
        panic!("another node id was let in");
    };
    assert_eq!(reason, StreamRefusal::NodeIdMismatch);
    assert_eq!(status.code(), tonic::Code::PermissionDenied);
    assert_eq!(
        status.message(),
        "the client certificate is for node id \"dp-1\" but the hello claims node id \"dp-2\""
    );
    let Err((reason, status)) = check_identity(&hello("dp-1"), Some(&Certified::Nameless)) else {
        panic!("a nameless certificate was let in");
    };
    assert_eq!(reason, StreamRefusal::NamelessCertificate);
    assert_eq!(status.code(), tonic::Code::PermissionDenied);
}
