//! Every bad input to the REST API: the status says what kind of error, the
//! `{"error"}` message says what was wrong, and the config is left unchanged.

use http::{Method, StatusCode};
use serde_json::{Value, json};
use switchyard_integration_tests::{ControlPlane, TestDir, spawn_control_plane};

/// A bad request and what must come back.
struct Case {
    what: &'static str,
    method: Method,
    path: String,
    body: Body,
    /// The expected status (any of these).
    status: Vec<StatusCode>,
    /// The error message must mention at least one of these (case-insensitive).
    mentions: Vec<String>,
}

enum Body {
    None,
    Json(Value),
    Raw(&'static str),
}

fn case(
    what: &'static str,
    method: Method,
    path: &str,
    body: Body,
    status: impl Into<Vec<StatusCode>>,
    mentions: &[&str],
) -> Case {
    Case {
        what,
        method,
        path: path.to_owned(),
        body,
        status: status.into(),
        mentions: mentions.iter().map(|m| (*m).to_owned()).collect(),
    }
}

const EXISTING: &str = "http://127.0.0.1:18080";
const EXISTING_ID: &str = "127.0.0.1:18080";

fn cases() -> Vec<Case> {
    use Body::{Json, Raw};
    use StatusCode as S;
    let members = "/api/v1/clusters/mycluster/members";
    let existing = format!("{members}/{EXISTING_ID}");
    let cluster_with = |member: Value| Json(json!({ "members": [member] }));
    let bad_urls = [
        "http://127.0.0.1:18082/app",
        "127.0.0.1:18083",
        "ftp://127.0.0.1:18084",
        "http://127.0.0.1:18085?x=1",
        "not a url",
    ];
    let mut cases = vec![
        case(
            "weight 0 in a cluster",
            Method::PUT,
            "/api/v1/clusters/c1",
            cluster_with(json!({ "url": "http://127.0.0.1:18081", "weight": 0 })),
            [S::BAD_REQUEST],
            &["weight"],
        ),
        case(
            "weight 101 in a cluster",
            Method::PUT,
            "/api/v1/clusters/c1",
            cluster_with(json!({ "url": "http://127.0.0.1:18081", "weight": 101 })),
            [S::BAD_REQUEST],
            &["weight"],
        ),
        case(
            "weight 0 in a new member",
            Method::POST,
            members,
            Json(json!({ "url": "http://127.0.0.1:18081", "weight": 0 })),
            [S::BAD_REQUEST],
            &["weight"],
        ),
        case(
            "weight 1000 in a new member",
            Method::POST,
            members,
            Json(json!({ "url": "http://127.0.0.1:18081", "weight": 1000 })),
            [S::BAD_REQUEST],
            &["weight"],
        ),
        case(
            "weight 500 in a member patch",
            Method::PATCH,
            &existing,
            Json(json!({ "weight": 500 })),
            [S::BAD_REQUEST],
            &["weight"],
        ),
        case(
            "unknown state in a member patch",
            Method::PATCH,
            &existing,
            Json(json!({ "state": "sleeping" })),
            [S::BAD_REQUEST],
            &["sleeping", "state"],
        ),
        case(
            "unknown state in a cluster",
            Method::PUT,
            "/api/v1/clusters/c1",
            cluster_with(json!({ "url": "http://127.0.0.1:18081", "state": "sleeping" })),
            [S::BAD_REQUEST],
            &["sleeping", "state"],
        ),
        case(
            "a new member without url",
            Method::POST,
            members,
            Json(json!({ "weight": 1 })),
            [S::BAD_REQUEST],
            &["url"],
        ),
        case(
            "the same url twice in a cluster",
            Method::PUT,
            "/api/v1/clusters/c1",
            Json(
                json!({ "members": [ { "url": "http://127.0.0.1:18081" }, { "url": "http://127.0.0.1:18081" } ] }),
            ),
            [S::CONFLICT],
            &["127.0.0.1:18081"],
        ),
        case(
            "cluster name with a dot",
            Method::PUT,
            "/api/v1/clusters/bad.name",
            Json(json!({ "members": [] })),
            [S::BAD_REQUEST],
            &["bad.name"],
        ),
        case(
            "cluster name with a space",
            Method::PUT,
            "/api/v1/clusters/bad%20name",
            Json(json!({ "members": [] })),
            [S::BAD_REQUEST],
            &["bad name", "bad%20name"],
        ),
        case(
            "cluster name too long",
            Method::PUT,
            &format!("/api/v1/clusters/{}", "x".repeat(65)),
            Json(json!({ "members": [] })),
            [S::BAD_REQUEST],
            &["name", "64"],
        ),
        case(
            "route name with a dot",
            Method::PUT,
            "/api/v1/routes/bad.route",
            Json(json!({ "path_prefix": "/", "cluster": "mycluster" })),
            [S::BAD_REQUEST],
            &["bad.route"],
        ),
        case(
            "route to a missing cluster",
            Method::PUT,
            "/api/v1/routes/r2",
            Json(json!({ "path_prefix": "/x/", "cluster": "nope" })),
            [S::BAD_REQUEST],
            &["nope"],
        ),
        case(
            "path_prefix without a slash",
            Method::PUT,
            "/api/v1/routes/r2",
            Json(json!({ "path_prefix": "no-slash", "cluster": "mycluster" })),
            [S::BAD_REQUEST],
            &["no-slash", "path_prefix"],
        ),
        case(
            "a second route on the same prefix",
            Method::PUT,
            "/api/v1/routes/r2",
            Json(json!({ "path_prefix": "/", "cluster": "mycluster" })),
            [S::BAD_REQUEST, S::CONFLICT],
            &["path_prefix", "r2", "web"],
        ),
        case(
            "deleting a cluster a route uses",
            Method::DELETE,
            "/api/v1/clusters/mycluster",
            Body::None,
            [S::CONFLICT],
            &["web", "mycluster"],
        ),
        case(
            "adding a member twice",
            Method::POST,
            members,
            Json(json!({ "url": EXISTING, "weight": 1 })),
            [S::CONFLICT],
            &[EXISTING_ID, EXISTING],
        ),
        case(
            "a member of an unknown cluster",
            Method::POST,
            "/api/v1/clusters/nope/members",
            Json(json!({ "url": "http://127.0.0.1:18081", "weight": 1 })),
            [S::NOT_FOUND],
            &["nope"],
        ),
        case(
            "patching an unknown member",
            Method::PATCH,
            &format!("{members}/127.0.0.1:9"),
            Json(json!({ "weight": 2 })),
            [S::NOT_FOUND],
            &["127.0.0.1:9"],
        ),
        case(
            "patching a member of an unknown cluster",
            Method::PATCH,
            &format!("/api/v1/clusters/nope/members/{EXISTING_ID}"),
            Json(json!({ "weight": 2 })),
            [S::NOT_FOUND],
            &["nope"],
        ),
        case(
            "deleting an unknown member",
            Method::DELETE,
            &format!("{members}/127.0.0.1:9"),
            Body::None,
            [S::NOT_FOUND],
            &["127.0.0.1:9"],
        ),
        case(
            "showing an unknown cluster",
            Method::GET,
            "/api/v1/clusters/nope",
            Body::None,
            [S::NOT_FOUND],
            &["nope"],
        ),
        case(
            "deleting an unknown cluster",
            Method::DELETE,
            "/api/v1/clusters/nope",
            Body::None,
            [S::NOT_FOUND],
            &["nope"],
        ),
        case(
            "deleting an unknown route",
            Method::DELETE,
            "/api/v1/routes/nope",
            Body::None,
            [S::NOT_FOUND],
            &["nope"],
        ),
        case(
            "malformed JSON",
            Method::PUT,
            "/api/v1/clusters/c1",
            Raw(r#"{"members": ["#),
            [S::BAD_REQUEST],
            &["json", "eof", "parse", "expected"],
        ),
        case(
            "malformed JSON in a member",
            Method::POST,
            members,
            Raw(r#"{"url": "http://127.0.0.1:18081", "weight": }"#),
            [S::BAD_REQUEST],
            &["json", "expected", "parse"],
        ),
        case(
            "unknown cluster field",
            Method::PUT,
            "/api/v1/clusters/c1",
            Json(json!({ "members": [], "colour": "red" })),
            [S::BAD_REQUEST],
            &["colour"],
        ),
        case(
            "unknown member field",
            Method::PUT,
            "/api/v1/clusters/c1",
            cluster_with(json!({ "url": "http://127.0.0.1:18081", "wieght": 2 })),
            [S::BAD_REQUEST],
            &["wieght"],
        ),
        case(
            "unknown field in a new member",
            Method::POST,
            members,
            Json(json!({ "url": "http://127.0.0.1:18081", "wieght": 2 })),
            [S::BAD_REQUEST],
            &["wieght"],
        ),
        case(
            "unknown field in a member patch",
            Method::PATCH,
            &existing,
            Json(json!({ "wieght": 2 })),
            [S::BAD_REQUEST],
            &["wieght"],
        ),
        case(
            "unknown route field",
            Method::PUT,
            "/api/v1/routes/r2",
            Json(json!({ "path_prefix": "/x/", "cluster": "mycluster", "preserve_hots": true })),
            [S::BAD_REQUEST],
            &["preserve_hots"],
        ),
        case(
            "unknown policy",
            Method::PUT,
            "/api/v1/clusters/c1",
            Json(json!({ "policy": "weighted_random", "members": [] })),
            [S::BAD_REQUEST],
            &["weighted_random", "policy"],
        ),
        case(
            "unreadable duration",
            Method::PUT,
            "/api/v1/clusters/c1",
            Json(json!({ "members": [], "connect_timeout": "soon" })),
            [S::BAD_REQUEST],
            &["soon"],
        ),
        case(
            "a duration finer than a millisecond (replicas get milliseconds)",
            Method::PUT,
            "/api/v1/clusters/c1",
            Json(
                json!({ "members": [], "health_check": { "path": "/", "interval": "1s", "timeout": "500us" } }),
            ),
            [S::BAD_REQUEST],
            &["500us", "whole milliseconds"],
        ),
        case(
            "a whole config with a route to a missing cluster",
            Method::PUT,
            "/api/v1/config",
            Json(
                json!({ "clusters": [], "routes": [ { "name": "r", "path_prefix": "/", "cluster": "ghost" } ] }),
            ),
            [S::BAD_REQUEST],
            &["ghost"],
        ),
        case(
            "a whole config with a bad weight",
            Method::PUT,
            "/api/v1/config",
            Json(
                json!({ "clusters": [ { "name": "c1", "members": [ { "url": "http://127.0.0.1:18081", "weight": 0 } ] } ] }),
            ),
            [S::BAD_REQUEST],
            &["weight"],
        ),
        case(
            "unknown field in a whole config",
            Method::PUT,
            "/api/v1/config",
            Json(json!({ "clusters": [], "routes": [], "listeners": [] })),
            [S::BAD_REQUEST],
            &["listeners"],
        ),
    ];
    for port in ["0", "65536", "99999", "8o8o", ""] {
        let url = format!("http://127.0.0.1:{port}");
        let says: &[&str] = if port.is_empty() {
            &["port is empty"]
        } else {
            &["port", "not a url"]
        };
        cases.push(case(
            "a member port outside 1..=65535 (it must not become port 80)",
            Method::POST,
            members,
            Json(json!({ "url": url })),
            [S::BAD_REQUEST],
            says,
        ));
        cases.push(case(
            "a member port outside 1..=65535 in a cluster",
            Method::PUT,
            "/api/v1/clusters/c1",
            cluster_with(json!({ "url": url })),
            [S::BAD_REQUEST],
            says,
        ));
    }
    for (what, path, body) in [
        (
            "a cluster as an array",
            "/api/v1/clusters/c1",
            json!(["c1", "round_robin", []]),
        ),
        (
            "a member as an array inside a cluster",
            "/api/v1/clusters/c1",
            json!({ "members": [["", "http://127.0.0.1:18081", 1, "active"]] }),
        ),
        (
            "a retry policy as an array",
            "/api/v1/clusters/c1",
            json!({ "retry": [1] }),
        ),
        (
            "a route as an array",
            "/api/v1/routes/r2",
            json!(["r2", null, "/x/", "mycluster"]),
        ),
        (
            "a whole config as an array",
            "/api/v1/config",
            json!([[], []]),
        ),
        (
            "a cluster as an array inside a whole config",
            "/api/v1/config",
            json!({ "clusters": [["c1", "round_robin", []]] }),
        ),
    ] {
        cases.push(case(
            what,
            Method::PUT,
            path,
            Json(body),
            [S::BAD_REQUEST],
            &["sequence"],
        ));
    }
    cases.push(case(
        "a new member as an array",
        Method::POST,
        members,
        Json(json!(["", "http://127.0.0.1:18081"])),
        [S::BAD_REQUEST],
        &["sequence"],
    ));
    for (what, body, says) in [
        (
            "retry max_retries 99",
            json!({ "retry": { "max_retries": 99 } }),
            "max_retries",
        ),
        (
            "retry budget_percent 101",
            json!({ "retry": { "budget_percent": 101 } }),
            "budget_percent",
        ),
        (
            "an unknown retry_on",
            json!({ "retry": { "retry_on": ["error", "sometimes"] } }),
            "sometimes",
        ),
        (
            "retry per_try_timeout 0",
            json!({ "retry": { "per_try_timeout": "0ms" } }),
            "per_try_timeout",
        ),
        (
            "outlier_detection consecutive_failures 0",
            json!({ "outlier_detection": { "consecutive_failures": 0 } }),
            "consecutive_failures",
        ),
        (
            "outlier_detection max_ejected_percent 101",
            json!({ "outlier_detection": { "max_ejected_percent": 101 } }),
            "max_ejected_percent",
        ),
        (
            "idle_timeout 0",
            json!({ "idle_timeout": "0s" }),
            "idle_timeout",
        ),
    ] {
        cases.push(case(
            what,
            Method::PUT,
            "/api/v1/clusters/c1",
            Json(body),
            [S::BAD_REQUEST],
            &[says],
        ));
    }
    let m = |port: u16, route: &str| json!({ "url": format!("http://127.0.0.1:{port}"), "route": route });
    for (what, body, status, says) in [
        (
            "an unknown policy",
            json!({ "policy": "fastest" }),
            S::BAD_REQUEST,
            &["fastest", "policy"][..],
        ),
        (
            "consistent_hash without hash_on",
            json!({ "policy": "consistent_hash" }),
            S::BAD_REQUEST,
            &["\"c1\": policy consistent_hash needs hash_on"][..],
        ),
        (
            "hash_on with round_robin",
            json!({ "hash_on": "client_ip" }),
            S::BAD_REQUEST,
            &["\"c1\": hash_on is only used with policy consistent_hash, not round_robin"][..],
        ),
        (
            "hash_on with least_request",
            json!({ "policy": "least_request", "hash_on": { "header": "x-user" } }),
            S::BAD_REQUEST,
            &["not least_request"][..],
        ),
        (
            "hash_on a header with a space",
            json!({ "policy": "consistent_hash", "hash_on": { "header": "x user" } }),
            S::BAD_REQUEST,
            &["hash_on header \"x user\""][..],
        ),
        (
            "hash_on an empty cookie name",
            json!({ "policy": "consistent_hash", "hash_on": { "cookie": "" } }),
            S::BAD_REQUEST,
            &["hash_on cookie \"\""][..],
        ),
        (
            "hash_on a cookie name of 200 characters",
            json!({ "policy": "consistent_hash", "hash_on": { "cookie": "c".repeat(200) } }),
            S::BAD_REQUEST,
            &["hash_on cookie", "128"][..],
        ),
        (
            "hash_on an unknown key",
            json!({ "policy": "consistent_hash", "hash_on": { "query": "q" } }),
            S::BAD_REQUEST,
            &["query"][..],
        ),
        (
            "hash_on as an array",
            json!({ "policy": "consistent_hash", "hash_on": ["header", "x"] }),
            S::BAD_REQUEST,
            &["hash_on", "sequence"][..],
        ),
        (
            "sticky without a cookie",
            json!({ "sticky": { "set_cookie": true } }),
            S::BAD_REQUEST,
            &["cookie"][..],
        ),
        (
            "sticky with a cookie name with ';'",
            json!({ "sticky": { "cookie": "a;b" } }),
            S::BAD_REQUEST,
            &["sticky cookie \"a;b\""][..],
        ),
        (
            "sticky with a url_parameter with '='",
            json!({ "sticky": { "cookie": "JSESSIONID", "url_parameter": "a=b" } }),
            S::BAD_REQUEST,
            &["sticky url_parameter \"a=b\""][..],
        ),
        (
            "sticky with an unknown field",
            json!({ "sticky": { "cookie": "JSESSIONID", "domain": "x" } }),
            S::BAD_REQUEST,
            &["domain"][..],
        ),
        (
            "sticky as an array",
            json!({ "sticky": ["JSESSIONID"] }),
            S::BAD_REQUEST,
            &["sequence"][..],
        ),
        (
            "a member route with a space",
            json!({ "members": [m(18081, "node 1")] }),
            S::BAD_REQUEST,
            &["route \"node 1\""][..],
        ),
        (
            "an empty member route",
            json!({ "members": [m(18081, "")] }),
            S::BAD_REQUEST,
            &["route \"\""][..],
        ),
        (
            "a member route twice",
            json!({ "members": [m(18081, "node1"), m(18082, "node1")] }),
            S::BAD_REQUEST,
            &["route \"node1\" appears twice"][..],
        ),
        (
            "a member route that is another member's id",
            json!({ "members": [m(18081, "127.0.0.1-18082"),
                                { "id": "127.0.0.1-18082", "url": "http://127.0.0.1:18082" }] }),
            S::BAD_REQUEST,
            &["by its id"][..],
        ),
    ] {
        cases.push(case(
            what,
            Method::PUT,
            "/api/v1/clusters/c1",
            Json(body),
            [status],
            says,
        ));
    }
    cases.push(case(
        "a new member whose route another member has",
        Method::POST,
        members,
        Json(json!({ "url": "http://127.0.0.1:18081", "route": "taken" })),
        [S::BAD_REQUEST],
        &["route \"taken\" appears twice"],
    ));
    for url in bad_urls {
        cases.push(case(
            "bad member url in a new member",
            Method::POST,
            members,
            Json(json!({ "url": url, "weight": 1 })),
            [S::BAD_REQUEST],
            &[url],
        ));
        cases.push(case(
            "bad member url in a cluster",
            Method::PUT,
            "/api/v1/clusters/c1",
            cluster_with(json!({ "url": url, "weight": 1 })),
            [S::BAD_REQUEST],
            &[url],
        ));
    }
    cases
}

/// Each bad input answers the right status with a message naming what was
/// wrong, and leaves the config (version and hash) as it was.
#[tokio::test]
async fn bad_input_is_refused_with_a_clear_error_and_changes_nothing() {
    let dir = TestDir::new("api-validation");
    let cp = spawn_control_plane(dir.path()).await;
    cp.write(
        Method::PUT,
        "/api/v1/clusters/mycluster",
        Some(&json!({ "members": [ { "url": EXISTING, "weight": 1, "route": "taken" } ] })),
    )
    .await;
    cp.write(
        Method::PUT,
        "/api/v1/routes/web",
        Some(&json!({ "path_prefix": "/", "cluster": "mycluster" })),
    )
    .await;
    let before = cp.config().await;

    let rejected_before = rejected_writes(&cp).await;
    let mut refused_writes = 0;
    let mut problems = Vec::new();
    for case in cases() {
        if case.method != Method::GET {
            refused_writes += 1;
        }
        let response = match &case.body {
            Body::None => cp.call(case.method.clone(), &case.path, None).await,
            Body::Json(json) => cp.call(case.method.clone(), &case.path, Some(json)).await,
            Body::Raw(raw) => cp.call_raw(case.method.clone(), &case.path, raw).await,
        };
        let label = format!("{} ({} {})", case.what, case.method, case.path);
        if !case.status.contains(&response.status) {
            problems.push(format!(
                "{label}: expected {:?}, got {} {:?}",
                case.status, response.status, response.body
            ));
        }
        let error = serde_json::from_str::<Value>(&response.body)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_owned));
        match error {
            None => problems.push(format!(
                "{label}: no {{\"error\": \"...\"}} body: {:?}",
                response.body
            )),
            Some(message) => {
                let lower = message.to_lowercase();
                if !case
                    .mentions
                    .iter()
                    .any(|m| lower.contains(&m.to_lowercase()))
                {
                    problems.push(format!(
                        "{label}: {message:?} mentions none of {:?}",
                        case.mentions
                    ));
                }
            }
        }
        let after = cp.config().await;
        if after["version"] != before["version"] || after["hash"] != before["hash"] {
            problems.push(format!(
                "{label}: the config changed: version {} -> {}",
                before["version"], after["version"]
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "{} problems:\n{}",
        problems.len(),
        problems.join("\n")
    );
    // Every refusal is counted, wherever it was refused (body, handler, store).
    assert_eq!(
        rejected_writes(&cp).await - rejected_before,
        refused_writes,
        "switchyard_config_writes_total{{result=\"rejected\"}}"
    );

    // The API still takes good writes, and only they move the version.
    let version = cp
        .write(
            Method::POST,
            "/api/v1/clusters/mycluster/members",
            Some(&json!({ "url": "http://127.0.0.1:18081", "weight": 100 })),
        )
        .await;
    assert!(version > before["version"].as_u64().expect("a version"));
}

/// Every `switchyard_config_writes_total{result="rejected",reason=…}` summed.
async fn rejected_writes(cp: &ControlPlane) -> u64 {
    let page = cp.get("/metrics").await;
    assert_eq!(page.status, StatusCode::OK);
    page.body
        .lines()
        .filter(|l| l.starts_with("switchyard_config_writes_total{result=\"rejected\","))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// A 10 MB name, URL or field gives a short error, and changes nothing.
#[tokio::test]
async fn a_huge_input_gives_a_short_error_and_changes_nothing() {
    let dir = TestDir::new("api-huge");
    let cp = spawn_control_plane(dir.path()).await;
    cp.write(
        Method::PUT,
        "/api/v1/clusters/mycluster",
        Some(&json!({ "members": [ { "url": EXISTING } ] })),
    )
    .await;
    let before = cp.config().await;
    let huge = "n".repeat(10 * 1024 * 1024);
    let cases = [
        (
            Method::PUT,
            "/api/v1/config",
            json!({ "clusters": [ { "name": huge } ] }),
        ),
        (
            Method::POST,
            "/api/v1/clusters/mycluster/members",
            json!({ "url": format!("http://{huge}:80") }),
        ),
        (
            Method::PUT,
            "/api/v1/routes/web",
            json!({ "path_prefix": huge, "cluster": "nope" }),
        ),
        (
            Method::PUT,
            "/api/v1/clusters/mycluster",
            json!({ huge.clone(): true }),
        ),
    ];
    for (method, path, body) in cases {
        let response = cp.call(method.clone(), path, Some(&body)).await;
        assert_eq!(response.status, StatusCode::BAD_REQUEST, "{method} {path}");
        assert!(
            response.body.len() < 2048,
            "{method} {path}: a {} byte answer",
            response.body.len()
        );
        assert!(
            response.error_message().contains("nnnn"),
            "{method} {path}: {}",
            response.body
        );
        let after = cp.config().await;
        assert_eq!(after["version"], before["version"], "{method} {path}");
        assert_eq!(after["hash"], before["hash"], "{method} {path}");
    }
}

/// The cluster fields the data plane is being taught (idle_timeout, retry,
/// outlier_detection): defaults shown by GET, values kept, and a round trip.
#[tokio::test]
async fn retry_idle_timeout_and_outlier_detection_are_kept_and_shown() {
    let dir = TestDir::new("api-new-fields");
    let cp = spawn_control_plane(dir.path()).await;
    cp.write(Method::PUT, "/api/v1/clusters/plain", Some(&json!({})))
        .await;
    let plain = cp.get("/api/v1/clusters/plain").await.json();
    assert_eq!(plain["idle_timeout"], "1m");
    assert_eq!(plain["retry"]["max_retries"], 1);
    assert_eq!(plain["retry"]["retry_on"], json!(["error", "timeout"]));
    assert_eq!(plain["retry"]["budget_percent"], 20);
    assert_eq!(plain["retry"]["budget_min_per_second"], 10);
    assert_eq!(plain["outlier_detection"], Value::Null);

    let set = json!({
        "idle_timeout": "20s",
        "retry": { "max_retries": 2, "retry_on": ["error", "http_503"], "per_try_timeout": "1s",
                   "budget_percent": 10, "budget_min_per_second": 3 },
        "outlier_detection": { "consecutive_failures": 3, "base_ejection": "2s",
                               "max_ejection": "20s", "max_ejected_percent": 30 },
    });
    let version = cp
        .write(Method::PUT, "/api/v1/clusters/tuned", Some(&set))
        .await;
    let tuned = cp.get("/api/v1/clusters/tuned").await.json();
    for field in ["idle_timeout", "retry", "outlier_detection"] {
        assert_eq!(tuned[field], set[field], "{field}");
    }
    // The whole config read back and applied again changes nothing.
    let config = cp.config().await;
    let again = cp.put("/api/v1/config", &config).await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.body);
    assert_eq!(cp.version().await, version);
}

/// The balancing fields: defaults shown by GET, values kept as written, and
/// the whole config applied again changes nothing.
#[tokio::test]
async fn policy_hash_on_sticky_and_routes_are_kept_and_shown() {
    let dir = TestDir::new("api-policy-fields");
    let cp = spawn_control_plane(dir.path()).await;
    cp.write(
        Method::PUT,
        "/api/v1/clusters/plain",
        Some(&json!({ "members": [ { "url": EXISTING } ] })),
    )
    .await;
    let plain = cp.get("/api/v1/clusters/plain").await.json();
    assert_eq!(plain["policy"], "round_robin");
    assert_eq!(plain["hash_on"], Value::Null);
    assert_eq!(plain["sticky"], Value::Null);
    assert_eq!(plain["members"][0]["route"], Value::Null);

    for (name, set) in [
        (
            "hashed",
            json!({ "policy": "consistent_hash", "hash_on": { "cookie": "user" },
                    "sticky": { "cookie": "JSESSIONID", "url_parameter": "jsessionid", "set_cookie": true } }),
        ),
        (
            "by_header",
            json!({ "policy": "consistent_hash", "hash_on": { "header": "X-User" } }),
        ),
        (
            "by_ip",
            json!({ "policy": "consistent_hash", "hash_on": "client_ip" }),
        ),
        ("least", json!({ "policy": "least_request" })),
        (
            "random",
            json!({ "policy": "random", "sticky": { "cookie": "SID" } }),
        ),
    ] {
        let mut body = set.clone();
        body["members"] = json!([ { "url": EXISTING, "route": "node1" },
                                  { "url": "http://127.0.0.1:18081" } ]);
        cp.write(
            Method::PUT,
            &format!("/api/v1/clusters/{name}"),
            Some(&body),
        )
        .await;
        let shown = cp.get(&format!("/api/v1/clusters/{name}")).await.json();
        for field in ["policy", "hash_on"] {
            assert_eq!(
                shown[field],
                set.get(field).cloned().unwrap_or(Value::Null),
                "{name} {field}"
            );
        }
        if let Some(sticky) = set.get("sticky") {
            assert_eq!(shown["sticky"]["cookie"], sticky["cookie"], "{name}");
            assert_eq!(
                shown["sticky"]["set_cookie"],
                sticky.get("set_cookie").cloned().unwrap_or(json!(false)),
                "{name}"
            );
        }
        assert_eq!(shown["members"][0]["route"], "node1", "{name}");
        assert_eq!(shown["members"][1]["route"], Value::Null, "{name}");
    }
    let version = cp.version().await;
    let config = cp.config().await;
    let hashed = config["clusters"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["name"] == "hashed"))
        .expect("GET /api/v1/config shows the cluster");
    assert_eq!(hashed["hash_on"], json!({ "cookie": "user" }));
    assert_eq!(hashed["sticky"]["url_parameter"], "jsessionid");
    let again = cp.put("/api/v1/config", &config).await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.body);
    assert_eq!(cp.version().await, version);
}
