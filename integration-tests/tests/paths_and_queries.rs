//! Query strings and percent-encoded paths reach the member byte for byte:
//! nothing is decoded or re-encoded, with or without a `rewrite_prefix`
//! (which replaces the matched prefix and nothing else); only dot segments
//! are resolved (see `request_target.rs`), and a path with one is then joined
//! with plain slashes.

use http::{Method, StatusCode};
use serde_json::json;
use switchyard_integration_tests::{Fleet, bodies, spawn_echo_backend};

#[tokio::test]
async fn query_strings_and_percent_encoded_paths_pass_through_unchanged() {
    let root = spawn_echo_backend("root").await;
    let app = spawn_echo_backend("app").await;
    let api = spawn_echo_backend("api").await;
    let fleet = Fleet::start("paths", 1).await;
    let cp = &fleet.cp;
    for (name, backend) in [("root", &root), ("app", &app), ("api", &api)] {
        cp.write(
            Method::PUT,
            &format!("/api/v1/clusters/{name}"),
            Some(&json!({ "members": [ { "url": backend.url(), "weight": 1 } ] })),
        )
        .await;
    }
    cp.write(
        Method::PUT,
        "/api/v1/routes/root",
        Some(&bodies::route("/", "root")),
    )
    .await;
    let mut app_route = bodies::route("/app/", "app");
    app_route["rewrite_prefix"] = json!("/v2/");
    cp.write(Method::PUT, "/api/v1/routes/app", Some(&app_route))
        .await;
    // A prefix without a trailing slash, rewritten to the root.
    let mut api_route = bodies::route("/api", "api");
    api_route["rewrite_prefix"] = json!("/");
    cp.write(Method::PUT, "/api/v1/routes/api?wait=5s", Some(&api_route))
        .await;

    let cases = [
        // (client path, member that answers, path the member sees)
        ("/plain?a=1&b=2", "root", "/plain?a=1&b=2"),
        (
            "/a%20b/c%2Fd/e?x=%2F%3F%26&y=a+b&z",
            "root",
            "/a%20b/c%2Fd/e?x=%2F%3F%26&y=a+b&z",
        ),
        (
            "/a%20b/c%2Fd/%2e%2e/e?x=%2F%3F%26&y=a+b&z",
            "root",
            "/a%20b/c/e?x=%2F%3F%26&y=a+b&z",
        ),
        ("/%E2%9C%93?q=%e2%9c%93", "root", "/%E2%9C%93?q=%e2%9c%93"),
        (
            "/search?q=a%20b&q=c&empty=&=v",
            "root",
            "/search?q=a%20b&q=c&empty=&=v",
        ),
        ("/semi;param=1/x?k=v;w", "root", "/semi;param=1/x?k=v;w"),
        ("//double//slashes/?q", "root", "//double//slashes/?q"),
        (
            "/with?query/that?has/slashes",
            "root",
            "/with?query/that?has/slashes",
        ),
        (
            "/app/x%20y/%2Fz?q=%41&r=/app/",
            "app",
            "/v2/x%20y/%2Fz?q=%41&r=/app/",
        ),
        ("/app/?only=query", "app", "/v2/?only=query"),
        ("/app//x", "app", "/v2//x"),
        ("/app/x/%2e%2e/etc", "app", "/v2/etc"),
        ("/api?k=%2F", "api", "/?k=%2F"),
        ("/api%2Fusers?sort=-name", "api", "/%2Fusers?sort=-name"),
        // Not the route's prefix once decoded: the prefix is matched as sent.
        ("/%61pp/x?y=1", "root", "/%61pp/x?y=1"),
    ];
    let mut wrong = Vec::new();
    for (path, member, member_path) in cases {
        let response = fleet.replicas[0]
            .get_with(path, &[("host", "paths.test")])
            .await;
        let seen = (
            response.status,
            response.header("x-backend").unwrap_or("-").to_owned(),
            response.header("x-seen-path").unwrap_or("-").to_owned(),
        );
        let expected = (StatusCode::OK, member.to_owned(), member_path.to_owned());
        if seen != expected {
            wrong.push(format!("GET {path}: expected {expected:?}, got {seen:?}"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
