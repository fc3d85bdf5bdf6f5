//! The etcd store on a real etcd: two `Store`s on one prefix (two nodes)
//! write concurrently and never lose a write or give one version twice; each
//! sees the other's writes through its watch; a fresh prefix is a new store
//! and a reopened one keeps its id and version; without etcd a write fails as
//! unavailable and changes nothing.

use std::collections::BTreeSet;
use std::time::Duration;

use switchyard_control_plane::Store;
use switchyard_control_plane::store::etcd::EtcdOptions;
use switchyard_control_plane::store::{Location, StoreError, WriteError};
use switchyard_integration_tests::dirs::TestDir;
use switchyard_integration_tests::etcd::{Etcd, EtcdTls};
use switchyard_integration_tests::eventually::eventually;
use switchyard_integration_tests::tls_backend::TestCa;
use switchyard_shared::{Cluster, ConfigError, Member};

fn options(etcd: &Etcd, prefix: &str) -> EtcdOptions {
    let mut options = EtcdOptions::from_url(&etcd.store_url())
        .unwrap_or_else(|e| panic!("{}: {e}", etcd.store_url()));
    options.prefix = prefix.to_owned();
    options.timeout = Duration::from_secs(2);
    options
}

async fn open(etcd: &Etcd, prefix: &str) -> Store {
    Store::open_at(Location::Etcd(options(etcd, prefix)), None)
        .await
        .unwrap_or_else(|e| panic!("cannot open the store on etcd: {e}"))
}

fn cluster(name: &str) -> Cluster {
    let mut cluster = Cluster::new(name);
    cluster.members.push(Member::new("http://127.0.0.1:9"));
    cluster
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_on_two_nodes_lose_nothing_and_share_versions() {
    let dir = TestDir::new("etcd-store");
    let etcd = Etcd::start(dir.path(), 1).await;
    let a = open(&etcd, "/sy-test/").await;
    let b = open(&etcd, "/sy-test/").await;
    assert_eq!(a.current().store_id, b.current().store_id, "one store id");
    assert_eq!(a.current().version, 0);

    // 20 writes from each node at once, each adding its own cluster.
    let mut writers = Vec::new();
    for (node, store) in [("a", a.clone()), ("b", b.clone())] {
        writers.push(tokio::spawn(async move {
            let mut versions = Vec::new();
            for i in 0..20 {
                let name = format!("{node}-{i}");
                let written = store
                    .update(move |config, _| {
                        config.clusters.push(cluster(&name));
                        Ok(())
                    })
                    .await
                    .unwrap();
                assert!(written.changed);
                versions.push(written.version);
            }
            versions
        }));
    }
    let mut all = BTreeSet::new();
    for writer in writers {
        for version in writer.await.unwrap() {
            assert!(all.insert(version), "version {version} was given twice");
        }
    }
    assert_eq!(
        all,
        (1..=40).collect::<BTreeSet<u64>>(),
        "one version per write"
    );

    // Each node sees every write, the other's through its watch.
    for store in [&a, &b] {
        let mut snapshots = store.subscribe();
        let seen = tokio::time::timeout(
            Duration::from_secs(10),
            snapshots.wait_for(|p| p.snapshot.version == 40),
        )
        .await;
        assert!(seen.is_ok(), "version 40 never published");
        let current = store.current();
        assert_eq!(current.config.clusters.len(), 40, "no write lost");
    }
    assert_eq!(a.current().hash, b.current().hash);

    // A write on one node reaches the other's watch channel, nobody polling it.
    let mut on_b = b.subscribe();
    on_b.borrow_and_update();
    a.update(|config, _| {
        config.clusters.push(cluster("late"));
        Ok(())
    })
    .await
    .unwrap();
    tokio::time::timeout(Duration::from_secs(5), on_b.changed())
        .await
        .expect("b publishes a's write")
        .unwrap();
    assert_eq!(b.current().version, 41);

    // Compare-and-set on the version: the loser of a race sees 409-kind errors.
    let stale_version = 41;
    b.update(|config, _| {
        config.clusters.push(cluster("winner"));
        Ok(())
    })
    .await
    .unwrap();
    let lost = a
        .update(move |config, current| {
            if current.version != stale_version {
                return Err(ConfigError::conflict("version moved"));
            }
            config.clusters.push(cluster("loser"));
            Ok(())
        })
        .await;
    assert!(
        matches!(lost, Err(WriteError::Rejected(_))),
        "a compare-and-set made on an old version is refused, even before the watch told a: {lost:?}"
    );

    // A reopened node keeps the store id and version; another prefix is another store.
    let id = a.current().store_id.clone();
    drop(a);
    let again = open(&etcd, "/sy-test/").await;
    assert_eq!(
        (again.current().store_id.clone(), again.current().version),
        (id.clone(), 42)
    );
    let other = open(&etcd, "/sy-other/").await;
    assert_ne!(other.current().store_id, id);
    assert_eq!(other.current().version, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_etcd_writes_fail_as_unavailable_and_change_nothing() {
    let dir = TestDir::new("etcd-down");
    let mut etcd = Etcd::start(dir.path(), 1).await;
    let store = open(&etcd, "/sy-test/").await;
    store
        .update(|config, _| {
            config.clusters.push(cluster("kept"));
            Ok(())
        })
        .await
        .unwrap();
    assert!(store.stale().is_none());

    etcd.kill(0);
    let failed = store
        .update(|config, _| {
            config.clusters.push(cluster("lost"));
            Ok(())
        })
        .await;
    match failed {
        Err(WriteError::Storage(error)) => {
            assert!(error.is_unavailable(), "{error}");
            assert!(error.to_string().contains("etcd"), "{error}");
        }
        other => panic!("a write without etcd answered {other:?}"),
    }
    assert_eq!(store.current().version, 1, "nothing published");
    eventually(
        "the store says it is stale",
        Duration::from_secs(10),
        async || store.stale().ok_or("not stale"),
    )
    .await;

    etcd.restart(0);
    etcd.wait_healthy().await;
    let written = store
        .update(|config, _| {
            config.clusters.push(cluster("after"));
            Ok(())
        })
        .await
        .unwrap();
    assert_eq!(written.version, 2, "the failed write took no version");
    let names: Vec<_> = store
        .current()
        .config
        .clusters
        .iter()
        .map(|c| c.name.clone())
        .collect();
    assert_eq!(names, ["after", "kept"]);
    eventually(
        "the store is fresh again",
        Duration::from_secs(10),
        async || match store.stale() {
            None => Ok(()),
            Some(why) => Err(why),
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_etcd_auth_the_user_logs_in_and_no_user_is_refused() {
    let dir = TestDir::new("etcd-auth");
    let etcd = Etcd::start(dir.path(), 1).await;
    etcd.enable_auth("s3cret").await;

    let mut with_user = options(&etcd, "/sy-auth/");
    with_user.user = Some("root".to_owned());
    with_user.password = Some("s3cret".to_owned());
    let store = Store::open_at(Location::Etcd(with_user.clone()), None)
        .await
        .unwrap();
    let written = store
        .update(|config, _| {
            config.clusters.push(cluster("authed"));
            Ok(())
        })
        .await
        .unwrap();
    assert_eq!(written.version, 1);
    let again = Store::open_at(Location::Etcd(with_user.clone()), None)
        .await
        .unwrap();
    assert_eq!(again.current().version, 1);

    let refused = |result: Result<Store, StoreError>| match result {
        Ok(_) => panic!("opened etcd without valid credentials"),
        Err(e) => {
            assert!(!e.is_unavailable(), "a refusal, not an outage: {e}");
            e.to_string()
        }
    };
    let none = refused(Store::open_at(Location::Etcd(options(&etcd, "/sy-auth/")), None).await);
    assert!(none.contains("user name is empty"), "{none}");
    let mut wrong = with_user;
    wrong.password = Some("wrong".to_owned());
    let wrong = refused(Store::open_at(Location::Etcd(wrong), None).await);
    assert!(wrong.contains("authentication failed"), "{wrong}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tls_with_a_client_certificate() {
    let dir = TestDir::new("etcd-tls");
    let ca = TestCa::new("etcd test CA");
    let write = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let (server_cert, server_key) = ca.server_pem(&["127.0.0.1", "localhost"]);
    let (client_cert, client_key) = ca.server_pem(&["switchyard"]);
    let tls = EtcdTls {
        ca: write("ca.pem", &ca.pem()),
        cert: write("server.pem", &server_cert),
        key: write("server-key.pem", &server_key),
    };
    let etcd = Etcd::start_with(dir.path(), 1, Some(&tls)).await;

    let mut with_cert = options(&etcd, "/sy-tls/");
    with_cert.ca = Some(tls.ca.clone());
    with_cert.cert = Some(write("client.pem", &client_cert));
    with_cert.key = Some(write("client-key.pem", &client_key));
    let store = Store::open_at(Location::Etcd(with_cert.clone()), None)
        .await
        .unwrap();
    let written = store
        .update(|config, _| {
            config.clusters.push(cluster("over-tls"));
            Ok(())
        })
        .await
        .unwrap();
    assert_eq!(written.version, 1);

    // Without a client certificate, or without TLS, etcd cannot be used.
    let mut no_cert = with_cert.clone();
    no_cert.cert = None;
    no_cert.key = None;
    assert!(Store::open_at(Location::Etcd(no_cert), None).await.is_err());
    let plain = options(&etcd, "/sy-tls/");
    assert!(Store::open_at(Location::Etcd(plain), None).await.is_err());
}
