//! How the data-plane binary starts: a replica that could never get a config
//! refuses to start and says which flag is missing; `--help` lists what the
//! admin address serves.

use std::process::Command;
use std::time::Duration;

use http::StatusCode;
use serde_json::json;
use switchyard_integration_tests::process::{ChildProcess, binary};
use switchyard_integration_tests::{
    DataPlane, DataPlaneOptions, TestDir, bodies, eventually, spawn_backend,
};

const EXIT_DEADLINE: Duration = Duration::from_secs(20);

/// Starts the data plane with `args` and waits (with a deadline) for it to
/// exit; returns whether it succeeded and everything it logged.
async fn run_until_exit(args: &[&str]) -> (bool, String) {
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    let mut process = ChildProcess::start("data plane", binary("sy-data-plane"), &args, &[]);
    let status = eventually(
        "the data plane exits on its own",
        EXIT_DEADLINE,
        async || process.exit_status().ok_or("still running"),
    )
    .await;
    // The readers may still be draining the pipes after the exit.
    let log = eventually("its log ends", EXIT_DEADLINE, async || {
        let lines = process.log().lines();
        if lines.iter().any(|l| l.contains("Data plane failed")) || status.success() {
            Ok(lines.join("\n"))
        } else {
            Err(lines.join("\n"))
        }
    })
    .await;
    (status.success(), log)
}

const LOCAL: [&str; 4] = ["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"];

#[tokio::test]
async fn without_control_plane_or_cache_file_it_refuses_to_start() {
    let (ok, log) = run_until_exit(&LOCAL).await;
    assert!(!ok, "it started:\n{log}");
    assert!(
        log.contains("neither --control-plane nor --cache-file is given"),
        "{log}"
    );
}

#[tokio::test]
async fn without_control_plane_a_missing_or_bad_cache_file_refuses_to_start() {
    let dir = TestDir::new("startup-cache");
    let missing = dir.join("missing.json");
    let missing = missing.display().to_string();
    let mut args = LOCAL.to_vec();
    args.extend(["--cache-file", &missing]);
    let (ok, log) = run_until_exit(&args).await;
    assert!(!ok, "it started:\n{log}");
    assert!(log.contains("no --control-plane is given"), "{log}");
    assert!(
        log.contains(&format!("--cache-file {missing} does not exist")),
        "{log}"
    );

    let broken = dir.join("broken.json");
    std::fs::write(&broken, "[\"not a snapshot\"]").unwrap();
    let broken = broken.display().to_string();
    let mut args = LOCAL.to_vec();
    args.extend(["--cache-file", &broken]);
    let (ok, log) = run_until_exit(&args).await;
    assert!(!ok, "it started:\n{log}");
    assert!(log.contains("--cache-file cannot be used"), "{log}");
}

/// A valid cache file is enough: the replica serves it with no control plane.
#[tokio::test]
async fn without_control_plane_a_good_cache_file_is_served() {
    let dir = TestDir::new("startup-cached");
    let backend = spawn_backend("from the cache").await;
    let mut cluster = bodies::cluster(&[(&backend, 1)]);
    cluster["name"] = json!("cached");
    let mut route = bodies::route("/", "cached");
    route["name"] = json!("web");
    let config = json!({ "clusters": [cluster], "routes": [route] });
    let config: switchyard_shared::Config = serde_json::from_value(config).unwrap();
    let snapshot = switchyard_shared::Snapshot::new(7, "store-1", config);
    let cache = dir.join("cache.json");
    std::fs::write(&cache, serde_json::to_vec(&snapshot).unwrap()).unwrap();

    let replica = DataPlane::spawn(DataPlaneOptions {
        node_id: "dp-cached".to_owned(),
        cache_file: cache,
        control_planes: Vec::new(),
        env: Vec::new(),
    })
    .await;
    replica.wait_ready().await;
    let response = replica.get("/").await;
    assert_eq!(
        (response.status, response.body.as_str()),
        (StatusCode::OK, "from the cache")
    );
    assert_eq!(backend.request_count(), 1);
}

#[test]
fn help_lists_every_admin_endpoint() {
    let output = Command::new(binary("sy-data-plane"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    for path in ["/healthz", "/readyz", "/config", "/members", "/metrics"] {
        assert!(help.contains(path), "--help does not list {path}:\n{help}");
    }
}
