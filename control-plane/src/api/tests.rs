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
            "no such endpoint: GET /api/v2/clusters",
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
