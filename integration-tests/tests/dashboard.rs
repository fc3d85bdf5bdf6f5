//! The dashboard (`/`) in a real browser: headless Chromium (Debian's
//! `chromium`, driven through `chromium-driver` by Selenium from `.venv`)
//! drains a member from the page of a control plane with two replicas, and
//! the change reaches both replicas and their traffic; the page shows the
//! API's refusals as the API words them, and markup in them as text.
//!
//! The browser's side is `integration-tests/browser/dashboard.py`; it saves
//! a screenshot to `target/dashboard.png` (the workspace's) to look at.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use http::{Method, StatusCode};
use serde_json::{Value, json};
use switchyard_integration_tests::{
    Backend, Client, ControlPlane, Fleet, Response, TestDir, spawn_backend,
};

const TOKEN: &str = "dash-7c01e5f2b9";
const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// The whole browser session: start, three refused actions, a drain, two
/// replicas synced (each step waits at most 20 s in the script).
const SCRIPT_DEADLINE: Duration = Duration::from_secs(150);

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("integration-tests is inside the repository")
        .to_path_buf()
}

/// The venv's Python with selenium; fails (never skips) saying what to install.
fn browser_tools(root: &Path) -> PathBuf {
    let mut missing = Vec::new();
    if !Path::new(CHROMIUM).exists() {
        missing.push(format!("{CHROMIUM} (Debian package chromium)"));
    }
    if !Path::new(CHROMEDRIVER).exists() {
        missing.push(format!("{CHROMEDRIVER} (Debian package chromium-driver)"));
    }
    assert!(
        missing.is_empty(),
        "the dashboard test needs a real browser, and {} is missing: \
         apt-get install chromium chromium-driver (.ci/run installs them)",
        missing.join(" and ")
    );
    let python = root.join(".venv/bin/python");
    let selenium = Command::new(&python)
        .args(["-c", "import selenium"])
        .stdin(Stdio::null())
        .output();
    assert!(
        selenium.as_ref().is_ok_and(|out| out.status.success()),
        "{} cannot import selenium ({selenium:?}): run scripts/python-venv.sh \
         (it makes .venv with the pinned schemathesis and selenium)",
        python.display()
    );
    python
}

async fn call(fleet: &Fleet, method: Method, path: &str, body: Option<&Value>) -> Response {
    let auth = format!("Bearer {TOKEN}");
    Client::without_pool()
        .send(
            method,
            &fleet.cp.url(path),
            &[("authorization", &auth)],
            body,
        )
        .await
        .unwrap_or_else(|e| panic!("{e:#}"))
}

/// Sends `count` requests through every replica, each on one kept-alive
/// connection (one worker's balancer: its round robin alternates); returns
/// the bodies seen.
async fn traffic(fleet: &Fleet, count: usize) -> Vec<String> {
    let mut bodies = Vec::new();
    for replica in &fleet.replicas {
        let client = Client::new();
        for _ in 0..count {
            let response = client
                .send(Method::GET, &replica.url("/"), &[], None)
                .await
                .unwrap_or_else(|e| panic!("{}: {e:#}", replica.node_id()));
            assert_eq!(
                response.status,
                StatusCode::OK,
                "{}: {response:?}",
                replica.node_id()
            );
            bodies.push(response.body);
        }
    }
    bodies
}

fn member_state(config: &Value, id: &str) -> (String, u64) {
    let member = config["clusters"][0]["members"]
        .as_array()
        .and_then(|members| members.iter().find(|m| m["id"] == id))
        .unwrap_or_else(|| panic!("no member {id} in {config}"));
    (
        member["state"].as_str().unwrap_or("active").to_owned(),
        member["weight"].as_u64().unwrap_or(0),
    )
}

/// Runs the browser script; returns what it reports (its JSON line).
fn run_script(python: &Path, root: &Path, fleet: &Fleet, screenshot: &Path) -> Value {
    let out = fleet.dir.join("browser.out");
    let err = fleet.dir.join("browser.err");
    let mut child = Command::new(python)
        .arg(root.join("integration-tests/browser/dashboard.py"))
        .arg(fleet.cp.url(""))
        .arg(screenshot)
        .args(["--token", TOKEN])
        .arg("--profile")
        .arg(fleet.dir.join("chromium-profile"))
        .env("NO_PROXY", "127.0.0.1,localhost")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).expect("create the script's stdout file"))
        .stderr(std::fs::File::create(&err).expect("create the script's stderr file"))
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", python.display()));
    let deadline = std::time::Instant::now() + SCRIPT_DEADLINE;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the browser script") {
            break Some(status);
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let stdout = std::fs::read_to_string(&out).unwrap_or_default();
    let stderr = std::fs::read_to_string(&err).unwrap_or_default();
    eprintln!("{stderr}");
    match status {
        Some(status) if status.success() => {}
        Some(status) => panic!(
            "the browser script failed ({status}); its screenshot is {}:\n{stderr}\n{stdout}",
            screenshot.display()
        ),
        None => panic!(
            "the browser script did not finish within {SCRIPT_DEADLINE:?}:\n{stderr}\n{stdout}"
        ),
    }
    let line = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(line).unwrap_or_else(|e| panic!("the script's report {line:?}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_drained_from_the_page_leaves_the_traffic_of_both_replicas() {
    let root = repo_root();
    let python = browser_tools(&root);

    let a: Backend = spawn_backend("from-a").await;
    let b: Backend = spawn_backend("from-b").await;
    // Writes need the token (from a file: the harness logs the command line).
    let dir = TestDir::new("dashboard-tokens");
    let tokens = dir.join("tokens");
    std::fs::write(&tokens, format!("{TOKEN}\n")).expect("write the token file");
    let fleet = Fleet::start_custom(
        "dashboard",
        2,
        vec!["--api-token-file".to_owned(), tokens.display().to_string()],
        |options| options,
    )
    .await;
    // Ids default to host:port: the page must put `:` and `.` in a path.
    let cluster = json!({ "members": [ { "url": a.url() }, { "url": b.url() } ] });
    let response = call(&fleet, Method::PUT, "/api/v1/clusters/web", Some(&cluster)).await;
    assert_eq!(response.status, StatusCode::OK, "{response:?}");
    let route = json!({ "path_prefix": "/", "cluster": "web" });
    let response = call(
        &fleet,
        Method::PUT,
        "/api/v1/routes/web?wait=10s",
        Some(&route),
    )
    .await;
    assert_eq!(response.status, StatusCode::OK, "{response:?}");
    let before = fleet.cp.version().await;
    fleet.wait_synced(before).await;

    // Before: each replica balances over both members.
    let bodies = traffic(&fleet, 8).await;
    for backend in [&a, &b] {
        assert!(
            bodies.iter().any(|body| body == backend.body()),
            "{} took no request before the drain: {bodies:?}",
            backend.body()
        );
    }

    let screenshot = root.join("target/dashboard.png");
    let _ = std::fs::remove_file(&screenshot);
    let report = tokio::task::block_in_place(|| run_script(&python, &root, &fleet, &screenshot));
    eprintln!("the browser script reports {report}");

    // The script drained the first member and found the API's own words on
    // the page for the refusals.
    let drained = report["drained"].as_str().expect("the drained member");
    let kept = report["kept"].as_str().expect("the kept member");
    assert_eq!(drained, a.authority(), "{report}");
    assert_eq!(kept, b.authority(), "{report}");
    let unauthorized = report["unauthorized"].as_str().unwrap_or_default();
    assert!(unauthorized.contains("needs an API token"), "{report}");
    let weight_error = report["weight_error"].as_str().unwrap_or_default();
    assert!(
        weight_error.contains("weight must be 1..=100, got 0"),
        "{report}"
    );
    let url_error = report["url_error"].as_str().unwrap_or_default();
    assert!(url_error.contains("<img src=x"), "{report}");

    // One change landed: the drain. The refused ones changed nothing.
    let config = fleet.cp.config().await;
    let version = config["version"].as_u64().expect("a version");
    assert_eq!(version, before + 1, "{config}");
    assert_eq!(report["version_after"], version, "{report}");
    assert_eq!(member_state(&config, drained), ("draining".to_owned(), 1));
    assert_eq!(member_state(&config, kept), ("active".to_owned(), 1));
    assert_eq!(
        config["clusters"][0]["members"].as_array().map(Vec::len),
        Some(2)
    );

    // Both replicas run it: synced in GET /api/v1/dataplanes, and their admin
    // /config has the control plane's version and hash.
    fleet.wait_synced(version).await;
    for replica in &fleet.replicas {
        let running = replica.running_config().await.unwrap();
        assert_eq!(running["version"], version, "{}", replica.node_id());
        assert_eq!(running["hash"], config["hash"], "{}", replica.node_id());
        let entry = fleet.cp.dataplane(replica.node_id()).await.unwrap();
        assert!(
            entry["last_seen"]
                .as_str()
                .is_some_and(|t| t.ends_with('Z')),
            "{entry}"
        );
    }

    // After: no new request reaches the drained member through either replica.
    let drained_before = a.request_count();
    let bodies = traffic(&fleet, 8).await;
    assert!(bodies.iter().all(|body| body == b.body()), "{bodies:?}");
    assert_eq!(
        a.request_count(),
        drained_before,
        "the drained member got requests"
    );

    // And a person can look at what the browser saw.
    let png = std::fs::read(&screenshot)
        .unwrap_or_else(|e| panic!("no screenshot at {}: {e}", screenshot.display()));
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    assert!(
        png.len() > 20_000,
        "a {}-byte screenshot is blank",
        png.len()
    );
}

/// The page is served without a token even with `--api-read-auth` (it asks
/// for one), with its policy; the data behind it is not.
#[tokio::test]
async fn the_page_is_open_and_the_data_behind_it_is_not() {
    let dir = TestDir::new("dashboard-read-auth");
    let tokens = dir.join("tokens");
    std::fs::write(&tokens, format!("{TOKEN}\n")).expect("write the token file");
    let cp = ControlPlane::spawn(
        dir.path(),
        vec![
            "--api-token-file".to_owned(),
            tokens.display().to_string(),
            "--api-read-auth".to_owned(),
        ],
    )
    .await;
    let client = Client::without_pool();
    let page = client.get(&cp.url("/")).await;
    assert_eq!(page.status, StatusCode::OK, "{page:?}");
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    let policy = page.header("content-security-policy").unwrap_or_default();
    assert!(policy.starts_with("default-src 'none'"), "{policy}");
    assert!(policy.contains("script-src 'self'"), "{policy}");
    assert!(
        page.body
            .contains(r#"<script src="/dashboard.js" defer></script>"#)
    );
    for asset in ["/dashboard.js", "/dashboard.css"] {
        let response = client.get(&cp.url(asset)).await;
        assert_eq!(response.status, StatusCode::OK, "{asset}: {response:?}");
        assert!(response.header("content-security-policy").is_some());
    }
    // What the page reads needs the token, as for any client.
    for path in ["/api/v1/config", "/api/v1/dataplanes"] {
        let refused = client.get(&cp.url(path)).await;
        assert_eq!(refused.status, StatusCode::UNAUTHORIZED, "{refused:?}");
        let auth = format!("Bearer {TOKEN}");
        let allowed = client
            .get_with(&cp.url(path), &[("authorization", &auth)])
            .await;
        assert_eq!(allowed.status, StatusCode::OK, "{allowed:?}");
    }
}
