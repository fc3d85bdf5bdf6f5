//! Access control: API tokens on the REST API (401 without, 403 wrong, the
//! token never in the log or `/metrics`), and what a refused write leaves.

use std::time::Duration;

use http::{Method, StatusCode};
use serde_json::{Value, json};
use switchyard_integration_tests::process::{ChildProcess, binary};
use switchyard_integration_tests::{Client, ControlPlane, Response, TestDir, eventually};

const TOKEN: &str = "tok-7f3a9c2e41d0b8aa";
const ROTATED: &str = "tok-second-55e1c0ffee";
const EXIT_DEADLINE: Duration = Duration::from_secs(20);

fn cluster() -> Value {
    json!({ "members": [ { "url": "http://127.0.0.1:9" } ] })
}

async fn call(
    cp: &ControlPlane,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> Response {
    let auth = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth
        .as_deref()
        .map(|a| vec![("authorization", a)])
        .unwrap_or_default();
    Client::without_pool()
        .send(method, &cp.url(path), &headers, body)
        .await
        .unwrap_or_else(|e| panic!("{e:#}"))
}

async fn version(cp: &ControlPlane, token: Option<&str>) -> u64 {
    let response = call(cp, Method::GET, "/api/v1/config", token, None).await;
    assert_eq!(response.status, StatusCode::OK, "{response:?}");
    response.json()["version"].as_u64().expect("a version")
}

fn assert_refused(response: &Response, status: StatusCode) {
    assert_eq!(response.status, status, "{response:?}");
    assert!(
        !response.error_message().is_empty() && response.json()["error"].is_string(),
        "{response:?}"
    );
    if status == StatusCode::UNAUTHORIZED {
        let challenge = response.header("www-authenticate").unwrap_or_default();
        assert!(challenge.starts_with("Bearer"), "{response:?}");
    }
}

#[tokio::test]
async fn writes_need_the_token_and_a_refused_write_changes_nothing() {
    let dir = TestDir::new("access-token");
    // A file, not --api-token: the harness logs the command line it starts.
    let file = dir.join("tokens");
    std::fs::write(&file, format!("{TOKEN}\n")).expect("write the token file");
    let cp = ControlPlane::spawn(
        dir.path(),
        vec!["--api-token-file".to_owned(), file.display().to_string()],
    )
    .await;
    let before = version(&cp, None).await;

    let path = "/api/v1/clusters/web";
    let missing = call(&cp, Method::PUT, path, None, Some(&cluster())).await;
    assert_refused(&missing, StatusCode::UNAUTHORIZED);
    let wrong = call(
        &cp,
        Method::PUT,
        path,
        Some("not-the-token"),
        Some(&cluster()),
    )
    .await;
    assert_refused(&wrong, StatusCode::FORBIDDEN);
    let client = Client::without_pool();
    let malformed = client
        .send(
            Method::DELETE,
            &cp.url(path),
            &[("authorization", &format!("Basic {TOKEN}"))],
            None,
        )
        .await
        .expect("an answer");
    assert_refused(&malformed, StatusCode::UNAUTHORIZED);
    assert_eq!(
        version(&cp, None).await,
        before,
        "a refused write changed the version"
    );
    assert_eq!(
        call(&cp, Method::GET, path, None, None).await.status,
        StatusCode::NOT_FOUND
    );

    let ok = call(&cp, Method::PUT, path, Some(TOKEN), Some(&cluster())).await;
    assert_eq!(ok.status, StatusCode::OK, "{ok:?}");
    assert_eq!(version(&cp, None).await, before + 1);

    let metrics = call(&cp, Method::GET, "/metrics", None, None).await;
    assert_eq!(metrics.status, StatusCode::OK);
    let sample = |reason: &str| {
        metrics
            .body
            .lines()
            .find(|l| l.contains(&format!("reason=\"{reason}\"")))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
    };
    assert_eq!(sample("unauthorized"), Some(2.0), "{}", metrics.body);
    assert_eq!(sample("forbidden"), Some(1.0), "{}", metrics.body);
    assert!(!metrics.body.contains(TOKEN));
    let log = cp.log().lines().join("\n");
    assert!(!log.contains(TOKEN), "the token is in the log:\n{log}");
    assert!(
        !log.contains("not-the-token"),
        "a token is in the log:\n{log}"
    );
}

#[tokio::test]
async fn reads_are_open_unless_read_auth() {
    let dir = TestDir::new("access-read");
    let open =
        ControlPlane::spawn(dir.path(), vec!["--api-token".to_owned(), TOKEN.to_owned()]).await;
    for path in ["/api/v1/config", "/api/v1/clusters", "/metrics", "/healthz"] {
        let response = call(&open, Method::GET, path, None, None).await;
        assert_eq!(response.status, StatusCode::OK, "GET {path}: {response:?}");
    }
    drop(open);

    let dir = TestDir::new("access-read-auth");
    let closed = ControlPlane::spawn(
        dir.path(),
        vec![
            "--api-token".to_owned(),
            TOKEN.to_owned(),
            "--api-read-auth".to_owned(),
        ],
    )
    .await;
    for path in ["/api/v1/config", "/api/v1/dataplanes", "/metrics"] {
        let response = call(&closed, Method::GET, path, None, None).await;
        assert_refused(&response, StatusCode::UNAUTHORIZED);
        let response = call(&closed, Method::GET, path, Some("wrong"), None).await;
        assert_refused(&response, StatusCode::FORBIDDEN);
        let response = call(&closed, Method::GET, path, Some(TOKEN), None).await;
        assert_eq!(response.status, StatusCode::OK, "GET {path}: {response:?}");
    }
    let health = call(&closed, Method::GET, "/healthz", None, None).await;
    assert_eq!(health.status, StatusCode::OK);
}

#[tokio::test]
async fn both_tokens_of_a_token_file_work() {
    let dir = TestDir::new("access-file");
    let file = dir.join("tokens");
    std::fs::write(
        &file,
        format!("# rotated on Monday\n{TOKEN}\n\n   {ROTATED}  \n# {TOKEN}x\n"),
    )
    .expect("write the token file");
    let cp = ControlPlane::spawn(
        dir.path(),
        vec!["--api-token-file".to_owned(), file.display().to_string()],
    )
    .await;
    let first = version(&cp, None).await;
    let a = call(
        &cp,
        Method::PUT,
        "/api/v1/clusters/a",
        Some(TOKEN),
        Some(&cluster()),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{a:?}");
    let b = call(
        &cp,
        Method::PUT,
        "/api/v1/clusters/b",
        Some(ROTATED),
        Some(&cluster()),
    )
    .await;
    assert_eq!(b.status, StatusCode::OK, "{b:?}");
    let commented = format!("{TOKEN}x");
    let c = call(
        &cp,
        Method::PUT,
        "/api/v1/clusters/c",
        Some(&commented),
        Some(&cluster()),
    )
    .await;
    assert_refused(&c, StatusCode::FORBIDDEN);
    assert_eq!(version(&cp, None).await, first + 2);
    let log = cp.log().lines().join("\n");
    assert!(!log.contains(TOKEN) && !log.contains(ROTATED), "{log}");
}

#[tokio::test]
async fn an_empty_token_file_refuses_to_start() {
    let dir = TestDir::new("access-empty");
    let file = dir.join("tokens");
    std::fs::write(&file, "# nothing yet\n\n").expect("write the token file");
    let args = vec![
        "--api-listen".to_owned(),
        "127.0.0.1:0".to_owned(),
        "--grpc-listen".to_owned(),
        "127.0.0.1:0".to_owned(),
        "--state-file".to_owned(),
        dir.join("state.json").display().to_string(),
        "--api-token-file".to_owned(),
        file.display().to_string(),
    ];
    let mut process = ChildProcess::start("control plane", binary("sy-control-plane"), &args, &[]);
    let status = eventually("the control plane exits", EXIT_DEADLINE, async || {
        process.exit_status().ok_or("still running")
    })
    .await;
    assert_eq!(status.code(), Some(2));
    let log = eventually("its log names the file", EXIT_DEADLINE, async || {
        let lines = process.log().lines().join("\n");
        if lines.contains("has no token") {
            Ok(lines)
        } else {
            Err(lines)
        }
    })
    .await;
    assert!(log.contains(&file.display().to_string()), "{log}");
}

#[tokio::test]
async fn without_a_token_the_api_is_open_and_says_so() {
    let dir = TestDir::new("access-open");
    let cp = ControlPlane::spawn(dir.path(), Vec::new()).await;
    let ok = call(
        &cp,
        Method::PUT,
        "/api/v1/clusters/web",
        None,
        Some(&cluster()),
    )
    .await;
    assert_eq!(ok.status, StatusCode::OK, "{ok:?}");
    assert_eq!(cp.log().count_matching("No API token configured"), 1);
}

#[tokio::test]
async fn sighup_re_reads_the_token_file() {
    let dir = TestDir::new("access-hup");
    let file = dir.join("tokens");
    std::fs::write(&file, format!("{TOKEN}\n")).expect("write the token file");
    let mut cp = ControlPlane::spawn(
        dir.path(),
        vec!["--api-token-file".to_owned(), file.display().to_string()],
    )
    .await;
    assert_eq!(put(&cp, ROTATED).await, StatusCode::FORBIDDEN);

    std::fs::write(&file, format!("{ROTATED}\n")).expect("rotate the token file");
    assert!(cp.hangup(), "the control plane is not running");
    eventually("the rotated token is accepted", EXIT_DEADLINE, async || {
        let status = call(
            &cp,
            Method::PUT,
            "/api/v1/clusters/web",
            Some(ROTATED),
            Some(&cluster()),
        )
        .await
        .status;
        if status == StatusCode::OK {
            Ok(())
        } else {
            Err(status)
        }
    })
    .await;
    assert_eq!(put(&cp, TOKEN).await, StatusCode::FORBIDDEN);

    // A file emptied by mistake keeps the tokens in use.
    std::fs::write(&file, "# soon\n").expect("empty the token file");
    assert!(cp.hangup());
    eventually("the bad file is reported", EXIT_DEADLINE, async || match cp
        .log()
        .count_matching("Cannot re-read the API tokens")
    {
        0 => Err("not yet"),
        _ => Ok(()),
    })
    .await;
    assert_eq!(put(&cp, ROTATED).await, StatusCode::OK);
}

async fn put(cp: &ControlPlane, token: &str) -> StatusCode {
    call(
        cp,
        Method::PUT,
        "/api/v1/clusters/web",
        Some(token),
        Some(&cluster()),
    )
    .await
    .status
}
