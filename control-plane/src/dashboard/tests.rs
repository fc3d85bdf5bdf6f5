use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

use super::*;
use crate::access::ApiAccess;
use crate::api::{AppState, router};
use crate::metrics::Metrics;
use crate::registry::Registry;
use crate::store::Store;
use crate::test_support::TempDir;

const TOKEN: &str = "dash-token-1";

/// The whole router with `--api-token` and `--api-read-auth`: the files must
/// be served without a token all the same.
fn app(dir: &TempDir) -> Router {
    let store = Store::open_blocking(&dir.join("state.json"), None).unwrap();
    let access = ApiAccess::new(Some(TOKEN), None, true).unwrap();
    router(
        AppState::new(
            store,
            Arc::new(Registry::new()),
            Arc::new(Metrics::default()),
        )
        .with_access(Arc::new(access)),
    )
}

struct Answer {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: String,
}

async fn send(app: &Router, method: &str, uri: &str, token: Option<&str>) -> Answer {
    let mut request = Request::builder().method(method).uri(uri);
    if let Some(token) = token {
        request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let response = app
        .clone()
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    Answer {
        status,
        headers,
        body: String::from_utf8(bytes.to_vec()).unwrap(),
    }
}

fn header_of(answer: &Answer, name: header::HeaderName) -> &str {
    answer
        .headers
        .get(&name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_else(|| panic!("no {name} header"))
}

#[tokio::test]
async fn each_file_is_served_with_its_type_and_the_policy_without_a_token() {
    let dir = TempDir::new("dashboard-assets");
    let app = app(&dir);
    for (path, content_type, marker) in [
        (PAGE, "text/html; charset=utf-8", "<!doctype html>"),
        (SCRIPT, "text/javascript; charset=utf-8", "\"use strict\";"),
        (STYLE, "text/css; charset=utf-8", ":root {"),
    ] {
        let answer = send(&app, "GET", path, None).await;
        assert_eq!(answer.status, StatusCode::OK, "GET {path}: {}", answer.body);
        assert_eq!(header_of(&answer, header::CONTENT_TYPE), content_type);
        assert_eq!(
            header_of(&answer, header::CONTENT_SECURITY_POLICY),
            CONTENT_SECURITY_POLICY
        );
        assert_eq!(
            header_of(&answer, header::X_CONTENT_TYPE_OPTIONS),
            "nosniff"
        );
        assert_eq!(header_of(&answer, header::CACHE_CONTROL), "no-cache");
        assert!(
            answer.body.contains(marker),
            "GET {path} is not the file: {}",
            &answer.body[..answer.body.len().min(200)]
        );

        let head = send(&app, "HEAD", path, None).await;
        assert_eq!(head.status, StatusCode::OK, "HEAD {path}");
        assert_eq!(head.body, "");
    }
    // The data behind the page still needs the token.
    let config = send(&app, "GET", "/api/v1/config", None).await;
    assert_eq!(config.status, StatusCode::UNAUTHORIZED, "{}", config.body);
    let config = send(&app, "GET", "/api/v1/config", Some(TOKEN)).await;
    assert_eq!(config.status, StatusCode::OK, "{}", config.body);
}

#[tokio::test]
async fn the_policy_allows_only_this_origin_and_nothing_inline() {
    for directive in [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "connect-src 'self'",
        "frame-ancestors 'none'",
        "form-action 'none'",
    ] {
        assert!(
            CONTENT_SECURITY_POLICY.contains(directive),
            "{CONTENT_SECURITY_POLICY}"
        );
    }
    assert!(!CONTENT_SECURITY_POLICY.contains("unsafe"));
    assert!(!CONTENT_SECURITY_POLICY.contains('*'));

    // So the page has no inline script, style or handler, and loads only its own files.
    let html = INDEX_HTML.to_ascii_lowercase();
    assert_eq!(html.matches("<script").count(), 1);
    assert!(html.contains(r#"<script src="/dashboard.js" defer></script>"#));
    assert!(html.contains(r#"<link rel="stylesheet" href="/dashboard.css">"#));
    assert!(!html.contains("<style"), "inline style");
    assert!(!html.contains(" style="), "inline style attribute");
    // No ` onclick=` and the like: an attribute ` on<letters>=`.
    for (at, _) in html.match_indices(" on") {
        let rest = &html[at + 3..];
        let name_len = rest.bytes().take_while(u8::is_ascii_lowercase).count();
        assert!(
            !rest[name_len..].starts_with('='),
            "inline event handler at {}",
            &html[at..(at + 20).min(html.len())]
        );
    }
    assert!(!html.contains("http://") && !html.contains("https://"));
}

#[test]
fn the_script_never_parses_api_data_as_html() {
    for sink in [
        "innerHTML",
        "outerHTML",
        "insertAdjacentHTML",
        "document.write",
        "eval(",
        "new Function",
        "setAttribute(\"style",
    ] {
        assert!(!DASHBOARD_JS.contains(sink), "dashboard.js uses {sink}");
    }
    assert!(!DASHBOARD_CSS.contains("url("), "the style loads nothing");
    assert!(
        !DASHBOARD_CSS.contains("@import"),
        "the style loads nothing"
    );
}

#[tokio::test]
async fn other_methods_and_paths_get_the_apis_json_errors() {
    let dir = TempDir::new("dashboard-methods");
    let app = app(&dir);
    // A write to the page needs the token like every write, then is a 405.
    let refused = send(&app, "POST", PAGE, None).await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED, "{}", refused.body);
    let answer = send(&app, "POST", PAGE, Some(TOKEN)).await;
    assert_eq!(answer.status, StatusCode::METHOD_NOT_ALLOWED);
    let body: Value = serde_json::from_str(&answer.body).unwrap();
    assert!(body["error"].as_str().unwrap().contains("POST"), "{body}");
    // Only these files: anything else is the API's 404 (behind the token).
    let answer = send(&app, "GET", "/dashboard.html", Some(TOKEN)).await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    let body: Value = serde_json::from_str(&answer.body).unwrap();
    assert!(body["error"].as_str().unwrap().contains("no such endpoint"));
    assert!(is_asset("/") && is_asset("/dashboard.js") && is_asset("/dashboard.css"));
    assert!(!is_asset("/dashboard.html") && !is_asset("/api/v1/config"));
}
