use switchyard_shared::{Cluster, Member, Route};

use super::*;
use crate::test_support::TempDir;

fn cluster(name: &str, url: &str) -> Cluster {
    let mut cluster = Cluster::new(name);
    cluster.members.push(Member::new(url));
    cluster
}

fn add_cluster(
    name: &'static str,
) -> impl FnOnce(&mut Config, &Snapshot) -> Result<(), ConfigError> + Clone {
    move |config, _| {
        config.clusters.push(cluster(name, "http://127.0.0.1:8080"));
        Ok(())
    }
}

#[tokio::test]
async fn writes_are_durable_and_survive_a_reopen() {
    let dir = TempDir::new("store");
    let path = dir.join("state.json");
    let store = Store::open(path.clone(), None).await.unwrap();
    let first = store.current();
    assert_eq!(first.version, 0);
    assert_eq!(first.store_id.len(), 32);
    assert!(path.exists(), "a new store is written at once");

    let written = store.update(add_cluster("b")).await.unwrap();
    assert_eq!((written.version, written.changed), (1, true));
    store.update(add_cluster("a")).await.unwrap();
    let current = store.current();
    assert_eq!(current.version, 2);
    let names: Vec<_> = current
        .config
        .clusters
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(names, ["a", "b"], "clusters are kept sorted");
    assert_eq!(current.config.clusters[0].members[0].id, "127.0.0.1:8080");

    drop(store);
    let reopened = Store::open(path, None).await.unwrap();
    assert_eq!(*reopened.current(), *current);
}

#[tokio::test]
async fn an_unchanged_write_does_not_bump_the_version() {
    let dir = TempDir::new("store");
    let store = Store::open(dir.join("state.json"), None).await.unwrap();
    store.update(add_cluster("a")).await.unwrap();
    let mut subscriber = store.subscribe();
    subscriber.borrow_and_update();
    let written = store
        .update(|config, _| {
            config.clusters[0] = cluster("a", "http://127.0.0.1:8080");
            Ok(())
        })
        .await
        .unwrap();
    assert_eq!((written.version, written.changed), (1, false));
    assert!(!subscriber.has_changed().unwrap(), "nothing was published");
}

#[tokio::test]
async fn a_refused_write_leaves_the_version() {
    let dir = TempDir::new("store");
    let store = Store::open(dir.join("state.json"), None).await.unwrap();
    store.update(add_cluster("a")).await.unwrap();
    let error = store
        .update(|config, _| {
            config.routes.push(Route::new("web", "/", "missing"));
            Ok(())
        })
        .await
        .unwrap_err();
    assert!(error.to_string().contains("does not exist"), "{error}");
    let error = store
        .update(|config, _| {
            config.clusters[0].members[0].weight = 0;
            Ok(())
        })
        .await
        .unwrap_err();
    assert!(matches!(error, WriteError::Rejected(_)), "{error}");
    assert_eq!(store.current().version, 1);
    assert!(store.current().config.routes.is_empty());
}

#[tokio::test]
async fn a_failed_persist_leaves_memory_unchanged() {
    let dir = TempDir::new("store");
    let state_dir = dir.join("gone");
    std::fs::create_dir(&state_dir).unwrap();
    let store = Store::open(state_dir.join("state.json"), None)
        .await
        .unwrap();
    std::fs::remove_dir_all(&state_dir).unwrap();
    let error = store.update(add_cluster("a")).await.unwrap_err();
    assert!(matches!(error, WriteError::Storage(_)), "{error}");
    assert!(error.to_string().contains("state.json"), "{error}");
    assert_eq!(store.current().version, 0);
    assert!(store.current().config.clusters.is_empty());
}

#[test]
fn a_corrupt_state_file_is_an_error_and_is_kept() {
    let dir = TempDir::new("store");
    let path = dir.join("state.json");
    std::fs::write(&path, "{ not json").unwrap();
    let error = Store::open_blocking(&path, None).unwrap_err();
    assert!(matches!(error, StoreError::Corrupt { .. }), "{error}");
    assert!(error.to_string().contains("state.json"), "{error}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "{ not json");

    let store = Store::open_blocking(&dir.join("other.json"), None).unwrap();
    let mut snapshot = Snapshot::clone(&store.current());
    snapshot.config.clusters.push(Cluster::new("edited"));
    std::fs::write(&path, serde_json::to_vec(&snapshot).unwrap()).unwrap();
    let error = Store::open_blocking(&path, None).unwrap_err();
    assert!(error.to_string().contains("hash"), "{error}");
}

#[test]
fn bootstrap_applies_only_to_a_new_store() {
    let dir = TempDir::new("store");
    let boot = dir.join("boot.json");
    std::fs::write(
        &boot,
        r#"{ "clusters": [ { "name": "c", "members": [ { "url": "http://127.0.0.1:9000" } ] } ],
             "routes": [ { "name": "web", "path_prefix": "/", "cluster": "c" } ] }"#,
    )
    .unwrap();
    let path = dir.join("state.json");
    let store = Store::open_blocking(&path, Some(&boot)).unwrap();
    let first = store.current();
    assert_eq!(first.version, 1);
    assert_eq!(first.config.routes[0].cluster, "c");
    drop(store);

    std::fs::write(&boot, r#"{ "clusters": [ { "name": "other" } ] }"#).unwrap();
    let store = Store::open_blocking(&path, Some(&boot)).unwrap();
    assert_eq!(*store.current(), *first, "an existing store is kept");
}

#[test]
fn bootstrap_applies_to_a_store_never_written_to() {
    let dir = TempDir::new("store");
    let path = dir.join("state.json");
    let empty = Store::open_blocking(&path, None).unwrap().current();
    assert_eq!(empty.version, 0);

    let boot = dir.join("boot.json");
    std::fs::write(&boot, r#"{ "clusters": [ { "name": "c" } ] }"#).unwrap();
    let store = Store::open_blocking(&path, Some(&boot)).unwrap();
    let booted = store.current();
    assert_eq!(booted.version, 1);
    assert_eq!(booted.store_id, empty.store_id, "the same store");
    assert_eq!(booted.config.clusters[0].name, "c");
    drop(store);
    // Now on disk: a restart with another bootstrap keeps it.
    std::fs::write(&boot, r#"{ "clusters": [ { "name": "other" } ] }"#).unwrap();
    let reopened = Store::open_blocking(&path, Some(&boot)).unwrap().current();
    assert_eq!(*reopened, *booted);
}

#[test]
fn an_invalid_bootstrap_names_the_file_and_the_problem() {
    let dir = TempDir::new("store");
    let boot = dir.join("boot.json");
    std::fs::write(
        &boot,
        r#"{ "routes": [ { "name": "web", "path_prefix": "/", "cluster": "nope" } ] }"#,
    )
    .unwrap();
    let error = Store::open_blocking(&dir.join("state.json"), Some(&boot)).unwrap_err();
    let text = error.to_string();
    assert!(
        text.contains("boot.json") && text.contains("does not exist"),
        "{text}"
    );
    assert!(!dir.join("state.json").exists(), "nothing is created");

    std::fs::write(&boot, r#"{ "clustres": [] }"#).unwrap();
    let text = Store::open_blocking(&dir.join("state.json"), Some(&boot))
        .unwrap_err()
        .to_string();
    assert!(text.contains("unknown field `clustres`"), "{text}");

    // Arrays where objects belong, at the top and inside.
    for array in [
        r#"[[], []]"#,
        r#"{ "clusters": [ ["c", "round_robin", []] ] }"#,
        r#"{ "clusters": [ { "name": "c", "members": [ ["", "http://127.0.0.1:1"] ] } ] }"#,
    ] {
        std::fs::write(&boot, array).unwrap();
        let text = Store::open_blocking(&dir.join("state.json"), Some(&boot))
            .unwrap_err()
            .to_string();
        assert!(text.contains("invalid type: sequence"), "{array}: {text}");
        assert!(
            !dir.join("state.json").exists(),
            "{array}: nothing is created"
        );
    }
}

#[tokio::test]
async fn a_state_file_written_before_a_field_was_added_still_opens() {
    let dir = TempDir::new("store");
    let path = dir.join("state.json");
    let store = Store::open(path.clone(), None).await.unwrap();
    store.update(add_cluster("web")).await.unwrap();
    let written = store.current();
    drop(store);
    // What a build whose clusters had no `idle_timeout` field wrote: the file
    // without that line (a field from before its time), and the hash of the config as that build saw it.
    let text = std::fs::read_to_string(&path).unwrap();
    let older: String = text
        .lines()
        .filter(|line| !line.trim_start().starts_with("\"idle_timeout\""))
        .collect::<Vec<_>>()
        .join("\n");
    assert_ne!(older.len(), text.len(), "the file had an idle_timeout line");
    let value: serde_json::Value = serde_json::from_str(&older).unwrap();
    let clusters = serde_json::to_string_pretty(&value["clusters"]).unwrap();
    // Key order matters to the hash: take the parts from the text itself.
    let start = older.find("\"clusters\": ").unwrap() + "\"clusters\": ".len();
    let end = older.find(",\n  \"routes\"").unwrap();
    let clusters_text = &older[start..end];
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(clusters_text).unwrap(),
        serde_json::from_str::<serde_json::Value>(&clusters).unwrap()
    );
    let old_hash = written_config_hash(clusters_text, "[]");
    assert_ne!(old_hash, written.hash);
    let older = older.replace(&written.hash, &old_hash);
    std::fs::write(&path, older).unwrap();

    let reopened = Store::open(path.clone(), None).await.unwrap();
    let current = reopened.current();
    assert_eq!(current.version, written.version);
    assert_eq!(current.config, written.config);
    assert_eq!(
        current.hash, written.hash,
        "re-hashed as this build reads it"
    );

    // A hash that is neither is still refused.
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, text.replace(&old_hash, &"0".repeat(64))).unwrap();
    drop(reopened);
    assert!(Store::open(path, None).await.is_err());
}
