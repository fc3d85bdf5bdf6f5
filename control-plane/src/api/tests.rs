use axum::body::Body;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

use super::*;
use crate::test_support::TempDir;

struct TestApp {
    router: Router,
    store: Store,
    _dir: TempDir,
}

impl TestApp {
    fn new() -> Self {
        let dir = TempDir::new("api");
        let store = Store::open_blocking(&dir.join("state.json"), None).unwrap();
        let state = AppState::new(
            store.clone(),
            Arc::new(Registry::new()),
            Arc::new(Metrics::default()),
        );
        TestApp {
            router: router(state),
            store,
            _dir: dir,
        }
    }

    /// Cluster "c" with one member at 127.0.0.1:8080 and route "web" to it.
    async fn seeded() -> Self {
        let app = TestApp::new();
        let (status, _) = app
            .call(
                "PUT",
                "/api/v1/clusters/c",
                Some(json!({ "members": [ { "url": "http://127.0.0.1:8080" } ] })),
            )
            .await;
        assert_eq!(status, StatusCode::OK);
        let (status, _) = app
            .call(
                "PUT",
                "/api/v1/routes/web",
                Some(json!({ "path_prefix": "/", "cluster": "c" })),
            )
            .await;
        assert_eq!(status, StatusCode::OK);
        app
    }

    async fn call(&self, method: &str, uri: &str, body: Option<Value>) -> (StatusCode, Value) {
        let body = body.map(|b| b.to_string());
        self.raw(method, uri, body.as_deref(), Some("application/json"))
            .await
    }

    async fn raw(
        &self,
        method: &str,
        uri: &str,
        body: Option<&str>,
        content_type: Option<&str>,
    ) -> (StatusCode, Value) {
        let mut request = axum::http::Request::builder().method(method).uri(uri);
        if body.is_some()
            && let Some(content_type) = content_type
        {
            request = request.header(header::CONTENT_TYPE, content_type);
        }
        let request = request
            .body(body.map_or_else(Body::empty, |b| Body::from(b.to_owned())))
            .unwrap();
        let response = self.router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        (status, value)
    }

    async fn version(&self) -> u64 {
        let (status, config) = self.call("GET", "/api/v1/config", None).await;
        assert_eq!(status, StatusCode::OK);
        config["version"].as_u64().unwrap()
    }
}

#[tokio::test]
async fn health_and_metrics() {
    let app = TestApp::new();
    let (status, body) = app.call("GET", "/healthz", None).await;
    assert_eq!((status, body), (StatusCode::OK, json!({ "status": "ok" })));
    let (status, body) = app.call("GET", "/metrics", None).await;
    assert_eq!(status, StatusCode::OK);
    let text = body.as_str().unwrap();
    assert!(text.contains("switchyard_config_version 0"), "{text}");
}

#[tokio::test]
async fn clusters_members_and_routes_round_trip() {
    let app = TestApp::seeded().await;
    assert_eq!(app.version().await, 2);

    let (status, body) = app
        .call(
            "POST",
            "/api/v1/clusters/c/members",
            Some(json!({ "url": "http://127.0.0.1:8082", "weight": 2 })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body, json!({ "id": "127.0.0.1:8082", "version": 3 }));

    let (status, body) = app
        .call(
            "PATCH",
            "/api/v1/clusters/c/members/127.0.0.1:8082",
            Some(json!({ "state": "draining", "weight": 5 })),
        )
        .await;
    assert_eq!((status, body), (StatusCode::OK, json!({ "version": 4 })));

    let (status, cluster) = app.call("GET", "/api/v1/clusters/c", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(cluster["members"][1]["state"], "draining");
    assert_eq!(cluster["members"][1]["weight"], 5);
    assert_eq!(cluster["connect_timeout"], "5s");

    let (status, body) = app
        .call("DELETE", "/api/v1/clusters/c/members/127.0.0.1:8082", None)
        .await;
    assert_eq!((status, body), (StatusCode::OK, json!({ "version": 5 })));

    let (_, routes) = app.call("GET", "/api/v1/routes", None).await;
    assert_eq!(routes[0]["name"], "web");
    let (status, body) = app.call("DELETE", "/api/v1/routes/web", None).await;
    assert_eq!((status, body), (StatusCode::OK, json!({ "version": 6 })));
    let (status, body) = app.call("DELETE", "/api/v1/clusters/c", None).await;
    assert_eq!((status, body), (StatusCode::OK, json!({ "version": 7 })));
    let (_, clusters) = app.call("GET", "/api/v1/clusters", None).await;
    assert_eq!(clusters, json!([]));
    assert_eq!(app.store.current().version, 7);
}

#[tokio::test]
async fn an_unchanged_write_keeps_the_version() {
    let app = TestApp::seeded().await;
    let (status, body) = app
        .call(
            "PUT",
            "/api/v1/clusters/c",
            Some(json!({ "name": "c", "members": [ { "url": "http://127.0.0.1:8080" } ] })),
        )
        .await;
    assert_eq!((status, body), (StatusCode::OK, json!({ "version": 2 })));
}

#[tokio::test]
async fn the_whole_config_is_read_and_replaced_in_one_step() {
    let app = TestApp::seeded().await;
    let (_, mut config) = app.call("GET", "/api/v1/config", None).await;
    assert_eq!(config["version"], 2);
    assert_eq!(config["store_id"].as_str().unwrap().len(), 32);
    config["clusters"][0]["members"][0]["weight"] = json!(3);
    let (status, body) = app
        .call("PUT", "/api/v1/config", Some(config.clone()))
        .await;
    assert_eq!((status, body), (StatusCode::OK, json!({ "version": 3 })));

    // The same document again: its version (2) is no longer the current one.
    let (status, body) = app.call("PUT", "/api/v1/config", Some(config)).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("config changed since version 2"),
        "{body}"
    );
    let (status, body) = app
        .call("PUT", "/api/v1/config", Some(json!({ "clusters": [] })))
        .await;
    assert_eq!((status, body), (StatusCode::OK, json!({ "version": 4 })));
}

#[tokio::test]
async fn every_bad_input_is_a_json_error_and_changes_nothing() {
    let app = TestApp::seeded().await;
    let url = |u: &str| json!({ "url": u });
    let cases: Vec<(&str, &str, Option<Value>, StatusCode, &str)> = vec![
        // Refused by the JSON extractor.
        (
            "PUT",
            "/api/v1/clusters/x",
            Some(json!({ "polcy": "round_robin" })),
            StatusCode::BAD_REQUEST,
            "unknown field `polcy`",
        ),
        (
            "PUT",
            "/api/v1/clusters/x",
            Some(json!({ "members": 3 })),
            StatusCode::BAD_REQUEST,
            "invalid type",
        ),
        (
            "PUT",
            "/api/v1/clusters/x",
            Some(json!({ "connect_timeout": "soon" })),
            StatusCode::BAD_REQUEST,
            "invalid duration \"soon\"",
        ),
        (
            "POST",
            "/api/v1/clusters/c/members",
            Some(json!({ "weight": 2 })),
            StatusCode::BAD_REQUEST,
            "missing field `url`",
        ),
        (
            "POST",
            "/api/v1/clusters/c/members",
            Some(json!({ "url": "http://a:1", "state": "asleep" })),
            StatusCode::BAD_REQUEST,
            "unknown variant `asleep`",
        ),
        (
            "PATCH",
            "/api/v1/clusters/c/members/127.0.0.1:8080",
            Some(json!({ "wieght": 2 })),
            StatusCode::BAD_REQUEST,
            "unknown field `wieght`",
        ),
        // Refused by validation.
        (
            "POST",
            "/api/v1/clusters/c/members",
            Some(url("ftp://127.0.0.1:1")),
            StatusCode::BAD_REQUEST,
            "the scheme must be http or https",
        ),
        (
            "POST",
            "/api/v1/clusters/c/members",
            Some(url("http://127.0.0.1:1/app")),
            StatusCode::BAD_REQUEST,
            "it has a path or query",
        ),
        (
            "POST",
            "/api/v1/clusters/c/members",
            Some(json!({ "url": "http://a:1", "weight": 0 })),
            StatusCode::BAD_REQUEST,
            "weight must be 1..=100, got 0",
        ),
        (
            "POST",
            "/api/v1/clusters/c/members",
            Some(json!({ "url": "http://a:1", "weight": 101 })),
            StatusCode::BAD_REQUEST,
            "weight must be 1..=100, got 101",
        ),
        (
            "PATCH",
            "/api/v1/clusters/c/members/127.0.0.1:8080",
            Some(json!({ "weight": 0 })),
            StatusCode::BAD_REQUEST,
            "weight must be 1..=100, got 0",
        ),
        (
            "PATCH",
            "/api/v1/clusters/c/members/127.0.0.1:8080",
            Some(json!({ "url": "http://a:2" })),
            StatusCode::BAD_REQUEST,
            "url and id cannot be changed",
        ),
        (
            "PUT",
            "/api/v1/clusters/a.b",
            Some(json!({})),
            StatusCode::BAD_REQUEST,
            "may contain only letters, digits",
        ),
        (
            "PUT",
            "/api/v1/clusters/x",
            Some(json!({ "name": "y" })),
            StatusCode::BAD_REQUEST,
            "\"y\" in the body differs from \"x\"",
        ),
        (
            "PUT",
            "/api/v1/clusters/x",
            Some(json!({ "members": [ { "url": "http://a:1" }, { "url": "http://A:1" } ] })),
            StatusCode::CONFLICT,
            "appears twice",
        ),
        (
            "PUT",
            "/api/v1/routes/web2",
            Some(json!({ "path_prefix": "/", "cluster": "x" })),
            StatusCode::BAD_REQUEST,
            "route \"web2\": cluster \"x\" does not exist",
        ),
        (
            "PUT",
            "/api/v1/routes/web2",
            Some(json!({ "path_prefix": "app", "cluster": "c" })),
            StatusCode::BAD_REQUEST,
            "must start with '/'",
        ),
        (
            "PUT",
            "/api/v1/routes/web2",
            Some(json!({ "name": "web3", "path_prefix": "/", "cluster": "c" })),
            StatusCode::BAD_REQUEST,
            "differs",
        ),
        (
            "PUT",
            "/api/v1/config",
            Some(json!({ "clusters": [ { "members": [] } ] })),
            StatusCode::BAD_REQUEST,
            "cluster name is empty",
        ),
        // Unknown things.
        (
            "GET",
            "/api/v1/clusters/nope",
            None,
            StatusCode::NOT_FOUND,
            "cluster \"nope\" does not exist",
        ),
        (
            "DELETE",
            "/api/v1/clusters/nope",
            None,
            StatusCode::NOT_FOUND,
            "cluster \"nope\" does not exist",
        ),
        (
            "POST",
            "/api/v1/clusters/nope/members",
            Some(url("http://127.0.0.1:9")),
            StatusCode::NOT_FOUND,
            "cluster \"nope\" does not exist",
        ),
        (
            "PATCH",
            "/api/v1/clusters/c/members/nope",
            Some(json!({ "weight": 2 })),
            StatusCode::NOT_FOUND,
            "cluster \"c\" has no member \"nope\"",
        ),
        (
            "PATCH",
            "/api/v1/clusters/nope/members/m",
            Some(json!({ "weight": 2 })),
            StatusCode::NOT_FOUND,
            "cluster \"nope\" does not exist",
        ),
        (
            "DELETE",
            "/api/v1/clusters/c/members/nope",
            None,
            StatusCode::NOT_FOUND,
            "has no member \"nope\"",
        ),
        (
            "GET",
            "/api/v1/routes/nope",
            None,
            StatusCode::NOT_FOUND,
            "route \"nope\" does not exist",
        ),
        (
            "DELETE",
            "/api/v1/routes/nope",
            None,
            StatusCode::NOT_FOUND,
            "route \"nope\" does not exist",
        ),
        // Clashes.
        (
            "POST",
            "/api/v1/clusters/c/members",
            Some(url("http://127.0.0.1:8080")),
            StatusCode::CONFLICT,
            "already has a member with id \"127.0.0.1:8080\"",
        ),
        (
            "POST",
            "/api/v1/clusters/c/members",
            Some(json!({ "id": "other", "url": "http://127.0.0.1:8080/" })),
            StatusCode::CONFLICT,
            "already has member \"127.0.0.1:8080\" at http://127.0.0.1:8080",
        ),
        (
            "DELETE",
            "/api/v1/clusters/c",
            None,
            StatusCode::CONFLICT,
            "cluster \"c\" is used by route \"web\"",
        ),
        (
            "PUT",
            "/api/v1/routes/web2",
            Some(json!({ "path_prefix": "/", "cluster": "c" })),
            StatusCode::CONFLICT,
            "route \"web\" already matches",
        ),
        (
            "PUT",
            "/api/v1/config",
            Some(json!({ "version": 1, "clusters": [] })),
            StatusCode::CONFLICT,
            "config changed since version 1",
        ),
        // Bad wait, endpoints and methods.
        (
            "PUT",
            "/api/v1/clusters/x?wait=soon",
            Some(json!({})),
            StatusCode::BAD_REQUEST,
            "invalid wait \"soon\"",
        ),
        (
            "DELETE",
            "/api/v1/routes/web?wait=1h",
            None,
            StatusCode::BAD_REQUEST,
            "too long",
        ),
        (
            "GET",
            "/api/v2/clusters",
            None,
            StatusCode::NOT_FOUND,
            "no such endpoint: GET \"/api/v2/clusters\"",
        ),
        (
            "POST",
            "/api/v1/clusters",
            Some(json!({})),
            StatusCode::METHOD_NOT_ALLOWED,
            "method POST is not allowed",
        ),
    ];
    for (method, uri, body, expected, message) in cases {
        let (status, answer) = app.call(method, uri, body.clone()).await;
        assert_eq!(status, expected, "{method} {uri} {body:?}: {answer}");
        let error = answer["error"].as_str().unwrap_or_default();
        assert!(
            error.contains(message),
            "{method} {uri}: {error:?} should say {message:?}"
        );
        assert_eq!(app.version().await, 2, "{method} {uri} changed the version");
    }
    assert!(app.store.current().config.cluster("x").is_none());
}

#[tokio::test]
async fn bodies_that_are_not_json_are_json_errors() {
    let app = TestApp::seeded().await;
    let cases = [
        (
            Some("{\"members\": ["),
            Some("application/json"),
            "EOF while parsing",
        ),
        (Some("not json"), Some("application/json"), "expected ident"),
        (Some("{}"), None, "Content-Type: application/json"),
        (
            Some("{}"),
            Some("text/plain"),
            "Content-Type: application/json",
        ),
    ];
    for (body, content_type, message) in cases {
        let (status, answer) = app
            .raw("PUT", "/api/v1/clusters/x", body, content_type)
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body:?}: {answer}");
        let error = answer["error"].as_str().unwrap();
        assert!(error.contains(message), "{error:?} should say {message:?}");
    }
    assert_eq!(app.version().await, 2);
}

#[tokio::test]
async fn route_hosts_are_compared_lowercased() {
    let app = TestApp::seeded().await;
    let route = |host: &str| json!({ "host": host, "path_prefix": "/a/", "cluster": "c" });
    let (status, _) = app
        .call("PUT", "/api/v1/routes/one", Some(route("Example.com")))
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = app
        .call("PUT", "/api/v1/routes/two", Some(route("example.COM")))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    // Replacing a route by itself is no clash.
    let (status, body) = app
        .call("PUT", "/api/v1/routes/one", Some(route("example.com")))
        .await;
    assert_eq!((status, body), (StatusCode::OK, json!({ "version": 3 })));
}

#[tokio::test]
async fn a_write_that_cannot_be_stored_is_a_500_and_changes_nothing() {
    let dir = TempDir::new("api");
    let state_dir = dir.join("state");
    std::fs::create_dir(&state_dir).unwrap();
    let store = Store::open_blocking(&state_dir.join("state.json"), None).unwrap();
    let app = TestApp {
        router: router(AppState::new(
            store.clone(),
            Arc::new(Registry::new()),
            Arc::new(Metrics::default()),
        )),
        store,
        _dir: dir,
    };
    std::fs::remove_dir_all(&state_dir).unwrap();
    let (status, body) = app.call("PUT", "/api/v1/clusters/c", Some(json!({}))).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    let error = body["error"].as_str().unwrap();
    assert!(
        error.contains("was not stored") && error.contains("state.json"),
        "{error}"
    );
    assert_eq!(app.version().await, 0);
    assert!(app.store.current().config.clusters.is_empty());
}

#[tokio::test]
async fn waiting_with_no_replica_answers_at_once() {
    let app = TestApp::new();
    let (status, body) = app
        .call("PUT", "/api/v1/clusters/c?wait=5s", Some(json!({})))
        .await;
    assert_eq!((status, body), (StatusCode::OK, json!({ "version": 1 })));
    let (status, body) = app.call("GET", "/api/v1/dataplanes", None).await;
    assert_eq!((status, body), (StatusCode::OK, json!([])));
}

impl TestApp {
    /// The value of one sample (`name{labels}`) on `/metrics`.
    async fn sample(&self, series: &str) -> u64 {
        let (status, body) = self.call("GET", "/metrics", None).await;
        assert_eq!(status, StatusCode::OK);
        let text = body.as_str().unwrap();
        text.lines()
            .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no sample {series} in:\n{text}"))
    }

    /// Every `switchyard_config_writes_total{result="rejected",…}` summed.
    async fn rejected_writes(&self) -> u64 {
        let (_, body) = self.call("GET", "/metrics", None).await;
        body.as_str()
            .unwrap()
            .lines()
            .filter(|l| l.starts_with("switchyard_config_writes_total{result=\"rejected\""))
            .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
            .sum()
    }

    /// `call`, which must answer `status` with an error that says `says`,
    /// leaving the version and the config as they were.
    async fn refused(&self, method: &str, uri: &str, body: Value, status: StatusCode, says: &str) {
        let before = self.store.current();
        let (got, answer) = self.call(method, uri, Some(body)).await;
        assert_eq!(got, status, "{method} {uri}: {answer}");
        let error = answer["error"].as_str().unwrap_or_default();
        assert!(
            error.contains(says),
            "{method} {uri}: {error:?} should say {says:?}"
        );
        let after = self.store.current();
        assert_eq!(after.version, before.version, "{method} {uri}");
        assert_eq!(after.config, before.config, "{method} {uri}");
    }
}

#[tokio::test]
async fn member_ports_outside_1_to_65535_are_refused() {
    let app = TestApp::seeded().await;
    for port in ["0", "65536", "99999", "80a", "abc", "-1", "+80", ""] {
        let url = format!("http://127.0.0.1:{port}");
        let says = if port.is_empty() {
            "the port is empty".to_owned()
        } else if port == "0" {
            "port \"0\"".to_owned()
        } else {
            format!("port \"{port}\"")
        };
        let (status, answer) = app
            .call(
                "POST",
                "/api/v1/clusters/c/members",
                Some(json!({ "url": url })),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{url}: {answer}");
        let error = answer["error"].as_str().unwrap();
        // "80a", "abc" and "-1" are refused by the URL parser already.
        assert!(
            error.contains(&says) || error.contains("not a URL"),
            "{url}: {error}"
        );
        app.refused(
            "PUT",
            "/api/v1/clusters/d",
            json!({ "members": [ { "url": url } ] }),
            StatusCode::BAD_REQUEST,
            "member url",
        )
        .await;
    }
    for port in ["0", "65536", "99999"] {
        app.refused(
            "POST",
            "/api/v1/clusters/c/members",
            json!({ "url": format!("http://127.0.0.1:{port}") }),
            StatusCode::BAD_REQUEST,
            &format!("port \"{port}\" is not a number from 1 to 65535"),
        )
        .await;
    }
    assert_eq!(
        app.store
            .current()
            .config
            .cluster("c")
            .unwrap()
            .members
            .len(),
        1
    );
    let (status, body) = app
        .call(
            "POST",
            "/api/v1/clusters/c/members",
            Some(json!({ "url": "http://127.0.0.1:65535" })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["id"], "127.0.0.1:65535");
}

#[tokio::test]
async fn arrays_are_refused_where_objects_belong_at_any_depth() {
    let app = TestApp::seeded().await;
    let member = json!({ "url": "http://127.0.0.1:8090" });
    let cases = [
        ("PUT", "/api/v1/clusters/x", json!(["x", "round_robin", []])),
        (
            "PUT",
            "/api/v1/clusters/x",
            json!({ "members": [["", "http://127.0.0.1:8090", 1, "active"]] }),
        ),
        (
            "PUT",
            "/api/v1/clusters/x",
            json!({ "retry": [1, ["error"]] }),
        ),
        (
            "PUT",
            "/api/v1/clusters/x",
            json!({ "outlier_detection": [5] }),
        ),
        (
            "PUT",
            "/api/v1/clusters/x",
            json!({ "health_check": ["/"] }),
        ),
        (
            "POST",
            "/api/v1/clusters/c/members",
            json!(["", "http://127.0.0.1:8090"]),
        ),
        (
            "PATCH",
            "/api/v1/clusters/c/members/127.0.0.1:8080",
            json!([2]),
        ),
        ("PUT", "/api/v1/routes/r", json!(["r", null, "/r/", "c"])),
        ("PUT", "/api/v1/config", json!([[], []])),
        (
            "PUT",
            "/api/v1/config",
            json!({ "clusters": [["x", "round_robin", [member]]] }),
        ),
        (
            "PUT",
            "/api/v1/config",
            json!({ "clusters": [{ "name": "x", "members": [["", "http://127.0.0.1:8090"]] }] }),
        ),
        (
            "PUT",
            "/api/v1/config",
            json!({ "routes": [["r", null, "/r/", "c"]] }),
        ),
    ];
    for (method, uri, body) in cases {
        app.refused(
            method,
            uri,
            body,
            StatusCode::BAD_REQUEST,
            "invalid type: sequence, expected a",
        )
        .await;
    }
    assert!(app.store.current().config.cluster("x").is_none());
}

#[tokio::test]
async fn a_huge_input_gives_a_short_error() {
    let app = TestApp::seeded().await;
    let huge = "n".repeat(10 * 1024 * 1024);
    let cases = [
        (
            "PUT",
            "/api/v1/config",
            json!({ "clusters": [{ "name": huge }] }),
            "cluster name \"nnnn",
        ),
        (
            "PUT",
            "/api/v1/config",
            json!({ "clusters": [{ "name": "c" }], "routes": [{ "name": huge, "path_prefix": "/", "cluster": "c" }] }),
            "route name \"nnnn",
        ),
        (
            "PUT",
            "/api/v1/clusters/c",
            json!({ "name": huge }),
            "in the body differs",
        ),
        (
            "POST",
            "/api/v1/clusters/c/members",
            json!({ "url": format!("http://{huge}") }),
            "member url \"http://nnnn",
        ),
        (
            "POST",
            "/api/v1/clusters/c/members",
            json!({ "url": "http://127.0.0.1:1", "id": huge }),
            "member id \"nnnn",
        ),
        (
            "PUT",
            "/api/v1/routes/web",
            json!({ "path_prefix": huge, "cluster": "c" }),
            "path_prefix \"nnnn",
        ),
        (
            "PUT",
            "/api/v1/routes/web",
            json!({ "path_prefix": "/", "cluster": huge }),
            "cluster name \"nnnn",
        ),
        (
            "PUT",
            "/api/v1/clusters/c",
            json!({ "connect_timeout": huge }),
            "invalid duration \"nnnn",
        ),
        (
            "PUT",
            "/api/v1/clusters/c",
            json!({ huge.clone(): 1 }),
            "`, expected one of `name`",
        ),
        (
            "PUT",
            "/api/v1/clusters/c",
            json!({ "policy": huge }),
            "`, expected one of `round_robin`",
        ),
    ];
    for (method, uri, body, says) in cases {
        let (status, answer) = app.call(method, uri, Some(body)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{method} {uri} ({says})");
        let error = answer["error"].as_str().unwrap();
        assert!(error.contains(says), "{method} {uri}: {error}");
        assert!(
            error.len() < 1200,
            "{method} {uri}: {} bytes: {error}",
            error.len()
        );
    }
    assert_eq!(app.version().await, 2);
}

#[tokio::test]
async fn retry_idle_timeout_and_outlier_detection_take_defaults_and_round_trip() {
    let app = TestApp::seeded().await;
    let (status, cluster) = app.call("GET", "/api/v1/clusters/c", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(cluster["idle_timeout"], "1m");
    assert_eq!(
        cluster["retry"],
        json!({
            "max_retries": 1, "retry_on": ["error", "timeout"], "per_try_timeout": null,
            "budget_percent": 20, "budget_min_per_second": 10,
        })
    );
    assert_eq!(cluster["outlier_detection"], Value::Null);

    // Omitted fields inside the objects take their defaults too.
    let (status, body) = app
        .call(
            "PUT",
            "/api/v1/clusters/c",
            Some(json!({ "retry": { "max_retries": 0 }, "outlier_detection": {} })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, cluster) = app.call("GET", "/api/v1/clusters/c", None).await;
    assert_eq!(cluster["retry"]["max_retries"], 0);
    assert_eq!(cluster["retry"]["budget_percent"], 20);
    assert_eq!(
        cluster["outlier_detection"],
        json!({
            "consecutive_failures": 5, "base_ejection": "30s", "max_ejection": "5m",
            "max_ejected_percent": 50,
        })
    );

    let set = json!({
        "members": [ { "url": "http://127.0.0.1:8080" } ],
        "idle_timeout": "15s",
        "retry": {
            "max_retries": 3, "retry_on": ["error", "http_502", "http_503", "http_504"],
            "per_try_timeout": "2s", "budget_percent": 50, "budget_min_per_second": 1,
        },
        "outlier_detection": {
            "consecutive_failures": 2, "base_ejection": "1s", "max_ejection": "10s",
            "max_ejected_percent": 100,
        },
    });
    let (status, body) = app
        .call("PUT", "/api/v1/clusters/c", Some(set.clone()))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let version = app.version().await;
    let (_, cluster) = app.call("GET", "/api/v1/clusters/c", None).await;
    for field in ["idle_timeout", "retry", "outlier_detection"] {
        assert_eq!(cluster[field], set[field], "{field}");
    }
    // What GET shows is what PUT takes: sent back, it changes nothing.
    let (status, body) = app.call("PUT", "/api/v1/clusters/c", Some(cluster)).await;
    assert_eq!(
        (status, body),
        (StatusCode::OK, json!({ "version": version }))
    );
    let (_, config) = app.call("GET", "/api/v1/config", None).await;
    let (status, body) = app.call("PUT", "/api/v1/config", Some(config)).await;
    assert_eq!(
        (status, body),
        (StatusCode::OK, json!({ "version": version }))
    );
}

#[tokio::test]
async fn invalid_retry_idle_timeout_and_outlier_values_name_the_field() {
    let app = TestApp::seeded().await;
    let cases = [
        (
            json!({ "retry": { "max_retries": 99 } }),
            "retry max_retries must be 0..=10, got 99",
        ),
        (
            json!({ "retry": { "budget_percent": 101 } }),
            "retry budget_percent must be 0..=100, got 101",
        ),
        (
            json!({ "retry": { "retry_on": ["http_500"] } }),
            "unknown variant `http_500`",
        ),
        (
            json!({ "retry": { "per_try_timeout": "0s" } }),
            "retry per_try_timeout must be greater than 0",
        ),
        (
            json!({ "retry": { "retries": 2 } }),
            "unknown field `retries`",
        ),
        (
            json!({ "outlier_detection": { "consecutive_failures": 0 } }),
            "outlier_detection consecutive_failures must be at least 1",
        ),
        (
            json!({ "outlier_detection": { "max_ejected_percent": 101 } }),
            "outlier_detection max_ejected_percent must be 0..=100",
        ),
        (
            json!({ "outlier_detection": { "base_ejection": "1m", "max_ejection": "10s" } }),
            "outlier_detection base_ejection must be greater than 0 and at most max_ejection",
        ),
        (
            json!({ "idle_timeout": "0s" }),
            "idle_timeout must be greater than 0",
        ),
        (
            json!({ "idle_timeout": "later" }),
            "invalid duration \"later\"",
        ),
    ];
    for (body, says) in cases {
        app.refused(
            "PUT",
            "/api/v1/clusters/c",
            body,
            StatusCode::BAD_REQUEST,
            says,
        )
        .await;
    }
}

#[tokio::test]
async fn every_refused_write_is_counted_with_its_reason() {
    let app = TestApp::seeded().await;
    let reason =
        |r: &str| format!("switchyard_config_writes_total{{result=\"rejected\",reason=\"{r}\"}}");
    assert_eq!(app.rejected_writes().await, 0);
    // Refused while the body is read.
    app.raw("PUT", "/api/v1/clusters/x", Some("{}"), Some("text/plain"))
        .await;
    app.raw(
        "PUT",
        "/api/v1/clusters/x",
        Some("{\"members\": ["),
        Some("application/json"),
    )
    .await;
    app.call(
        "PUT",
        "/api/v1/clusters/x",
        Some(json!({ "colour": "red" })),
    )
    .await;
    app.call("PUT", "/api/v1/clusters/x", Some(json!(["x"])))
        .await;
    // Refused by the handler before the store, and by the store.
    app.call(
        "POST",
        "/api/v1/clusters/c/members",
        Some(json!({ "url": "http://a:99999" })),
    )
    .await;
    app.call("PUT", "/api/v1/clusters/bad.name", Some(json!({})))
        .await;
    app.call("DELETE", "/api/v1/clusters/nope", None).await;
    app.call("DELETE", "/api/v1/clusters/c", None).await;
    app.call("DELETE", "/api/v1/routes/web?wait=soon", None)
        .await;
    app.call("PUT", "/api/v1/nothing", Some(json!({}))).await;
    // Reads and good writes are not refusals.
    app.call("GET", "/api/v1/clusters/nope", None).await;
    app.call(
        "PUT",
        "/api/v1/clusters/c",
        Some(json!({ "members": [ { "url": "http://127.0.0.1:8080" } ] })),
    )
    .await;

    assert_eq!(app.sample(&reason("content_type")).await, 1);
    assert_eq!(app.sample(&reason("json_syntax")).await, 1);
    assert_eq!(app.sample(&reason("json_data")).await, 2);
    assert_eq!(app.sample(&reason("invalid")).await, 3);
    assert_eq!(app.sample(&reason("not_found")).await, 1);
    assert_eq!(app.sample(&reason("conflict")).await, 1);
    assert_eq!(app.sample(&reason("no_such_endpoint")).await, 1);
    assert_eq!(app.rejected_writes().await, 10);
    assert_eq!(
        app.sample("switchyard_config_writes_total{result=\"unchanged\"}")
            .await,
        1
    );
    assert_eq!(
        app.sample("switchyard_config_writes_total{result=\"applied\"}")
            .await,
        2
    );
}

#[tokio::test]
async fn api_requests_are_counted_by_operation_and_status_never_by_path() {
    let app = TestApp::new();
    app.call("PUT", "/api/v1/clusters/secret-name-1", Some(json!({})))
        .await;
    app.call("PUT", "/api/v1/clusters/secret-name-2", Some(json!({})))
        .await;
    app.call("GET", "/api/v1/clusters/missing-name", None).await;
    app.call("GET", "/api/v1/no-such-thing", None).await;
    app.call("POST", "/api/v1/clusters/x", Some(json!({})))
        .await;
    let series = |operation: &str, status: u16| {
        format!("switchyard_api_requests_total{{operation=\"{operation}\",status=\"{status}\"}}")
    };
    assert_eq!(app.sample(&series("put_cluster", 200)).await, 2);
    assert_eq!(app.sample(&series("get_cluster", 404)).await, 1);
    assert_eq!(app.sample(&series("not_found", 404)).await, 1);
    assert_eq!(app.sample(&series("method_not_allowed", 405)).await, 1);
    let (_, body) = app.call("GET", "/metrics", None).await;
    let text = body.as_str().unwrap();
    assert!(!text.contains("secret-name"), "{text}");
    assert!(!text.contains("no-such-thing"), "{text}");
    assert!(
        text.contains("switchyard_replicas{state=\"synced\"} 0"),
        "{text}"
    );
    assert!(text.ends_with("# EOF\n"), "{text}");
}
