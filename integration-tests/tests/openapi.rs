//! The OpenAPI document (`GET /api/v1/openapi.json`) against the live
//! control plane: it is OpenAPI 3.1, it lists exactly what the router serves,
//! and schemathesis, fuzzing every operation from it, finds no 5xx, no 4xx
//! without `{"error": ...}`, no refused request that changed the config, and
//! no answer that differs from the document.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use http::{Method, StatusCode};
use serde_json::{Value, json};
use switchyard_integration_tests::{ControlPlane, TestDir, spawn_control_plane};
use tokio::time::Instant;

/// Every method the API could serve on a path.
const METHODS: [Method; 5] = [
    Method::GET,
    Method::PUT,
    Method::POST,
    Method::PATCH,
    Method::DELETE,
];

async fn document(cp: &ControlPlane) -> Value {
    let response = cp.get("/api/v1/openapi.json").await;
    assert_eq!(response.status, StatusCode::OK, "{}", response.body);
    assert_eq!(
        response.header("content-type"),
        Some("application/json"),
        "the document's content type"
    );
    serde_json::from_str(&response.body).unwrap_or_else(|e| panic!("the document is not JSON: {e}"))
}

/// `/api/v1/clusters/{name}/members/{id}` with its parameters filled in.
fn concrete(path: &str) -> String {
    path.replace("{name}", "probe").replace("{id}", "probe")
}

#[tokio::test]
async fn the_document_is_openapi_3_1_and_lists_every_route_the_router_serves() {
    let dir = TestDir::new("openapi-routes");
    let cp = spawn_control_plane(dir.path()).await;
    let doc = document(&cp).await;
    let version = doc["openapi"].as_str().unwrap_or_default();
    assert!(
        version.starts_with("3.1."),
        "openapi is {version:?}, not 3.1.x"
    );

    let paths = doc["paths"].as_object().expect("the document has paths");
    // Every endpoint the README lists, and the document itself.
    let mut listed: Vec<&str> = paths.keys().map(String::as_str).collect();
    listed.sort_unstable();
    assert_eq!(
        listed,
        [
            "/api/v1/clusters",
            "/api/v1/clusters/{name}",
            "/api/v1/clusters/{name}/members",
            "/api/v1/clusters/{name}/members/{id}",
            "/api/v1/config",
            "/api/v1/dataplanes",
            "/api/v1/openapi.json",
            "/api/v1/routes",
            "/api/v1/routes/{name}",
            "/healthz",
            "/metrics",
        ]
    );

    // What the router serves: each documented operation is answered by its
    // handler (not by the fallback's 404 "no such endpoint" nor a 405), and
    // every other method on a documented path is a 405 — so a method served
    // without documentation fails here.
    let before = cp.config().await;
    for (path, item) in paths {
        let item = item.as_object().expect("a path item is an object");
        for method in METHODS {
            let documented = item.contains_key(&method.as_str().to_ascii_lowercase());
            let url = concrete(path);
            // An empty object is refused by every write that takes a body
            // (a member needs a url, a route a cluster): the probe changes nothing.
            let body = (method != Method::GET && method != Method::DELETE)
                .then(|| json!({"no_such_field": 1}));
            let response = cp.call(method.clone(), &url, body.as_ref()).await;
            if documented {
                assert_ne!(
                    response.status,
                    StatusCode::METHOD_NOT_ALLOWED,
                    "{method} {url} is documented but not served"
                );
                assert!(
                    !(response.status == StatusCode::NOT_FOUND
                        && response.error_message().contains("no such endpoint")),
                    "{method} {url} is documented but not served: {}",
                    response.body
                );
                let status = response.status.as_u16().to_string();
                assert!(
                    item[method.as_str().to_ascii_lowercase().as_str()]["responses"]
                        .get(&status)
                        .is_some(),
                    "{method} {url} answered {status}, which its documentation does not list: {}",
                    response.body
                );
            } else {
                assert_eq!(
                    response.status,
                    StatusCode::METHOD_NOT_ALLOWED,
                    "{method} {url} is served but not documented: {}",
                    response.body
                );
            }
        }
    }
    assert_eq!(cp.config().await, before, "the probes changed the config");

    // The schema says what the API accepts: objects refuse unknown fields,
    // durations and states are strings.
    let schemas = &doc["components"]["schemas"];
    for name in [
        "Cluster",
        "Member",
        "Route",
        "ConfigDocument",
        "MemberPatch",
        "HealthCheck",
    ] {
        assert_eq!(
            schemas[name]["additionalProperties"],
            json!(false),
            "{name} must say additionalProperties: false"
        );
    }
    assert_eq!(schemas["Dur"]["type"], json!("string"));
    assert_eq!(
        schemas["MemberState"]["enum"],
        json!(["active", "standby", "draining", "disabled"])
    );
    assert_eq!(schemas["Member"]["required"], json!(["url"]));
    // Every error response of a write is documented with its body.
    let put_cluster = &paths["/api/v1/clusters/{name}"]["put"]["responses"];
    for status in ["400", "409", "413", "500", "502", "504"] {
        assert!(
            put_cluster.get(status).is_some(),
            "PUT /api/v1/clusters/{{name}} does not document {status}"
        );
    }
    assert!(
        paths["/api/v1/clusters/{name}"]["delete"]["responses"]
            .get("404")
            .is_some()
    );
}

/// The repository's root (where `.venv` is).
fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("integration-tests is inside the repository")
        .to_path_buf()
}

/// schemathesis run: at most 20 examples per operation and phase, one worker
/// (the hooks compare the config before and after each write), no stateful
/// phase; about 15 s on 2 cores, cut at 100 s.
#[tokio::test]
async fn schemathesis_finds_no_failure_against_the_live_control_plane() {
    if std::env::var_os("SKIP_SCHEMATHESIS").is_some_and(|v| v == "1") {
        eprintln!("SKIP_SCHEMATHESIS=1: not running schemathesis");
        return;
    }
    let root = repo_root();
    let schemathesis = root.join(".venv/bin/schemathesis");
    assert!(
        schemathesis.exists(),
        "{} is missing: run scripts/python-venv.sh (it creates .venv with the pinned schemathesis), \
         or set SKIP_SCHEMATHESIS=1 to leave this test out",
        schemathesis.display()
    );
    let dir = TestDir::new("openapi-schemathesis");
    // Something to find: a cluster with a member and a route to it.
    let cp = ControlPlane::spawn_with_config(
        dir.path(),
        &json!({
            "clusters": [{"name": "web", "members": [{"url": "http://127.0.0.1:9", "id": "one"}]}],
            "routes": [{"name": "web", "path_prefix": "/", "cluster": "web"}],
        }),
    )
    .await;
    let api = cp.url("");
    let out = dir.join("schemathesis.out");
    let log = std::fs::File::create(&out).expect("create the output file");
    let mut child = Command::new(&schemathesis)
        .arg("run")
        .arg(cp.url("/api/v1/openapi.json"))
        .args([
            "--workers",
            "1",
            "--max-examples",
            "20",
            "--seed",
            "1",
            "--no-shrink",
        ])
        .args(["--phases", "examples,coverage,fuzzing"])
        // The schema cannot say every rule (names, member URLs, weights 1..=100,
        // a route's cluster): data it allows may be refused with a 400.
        .args(["--exclude-checks", "positive_data_acceptance"])
        .args(["--request-timeout", "10", "--max-failures", "20"])
        .args(["--report-dir".as_ref(), dir.join("report").as_os_str()])
        .env("SCHEMATHESIS_HOOKS", "hooks")
        .env("PYTHONPATH", root.join("integration-tests/schemathesis"))
        .env("SWITCHYARD_API", &api)
        .env("NO_COLOR", "1")
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("clone the output file"))
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", schemathesis.display()));
    let deadline = Instant::now() + Duration::from_secs(100);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for schemathesis") {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let output = std::fs::read_to_string(&out).unwrap_or_default();
    match status {
        Some(status) if status.success() => {}
        Some(status) => panic!("schemathesis failed ({status}):\n{output}"),
        None => panic!("schemathesis did not finish within 100 s:\n{output}"),
    }
    assert!(
        output.contains("passed"),
        "schemathesis ran no test case:\n{output}"
    );
    // It did reach the API: the control plane is still up and answering.
    assert_eq!(cp.get("/healthz").await.status, StatusCode::OK);
}
