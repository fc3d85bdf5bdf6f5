//! The dashboard at `/`: a page that shows every cluster, member, route and
//! replica, live, and changes members and routes through the REST API
//! (Apache's `balancer-manager`, without its forms posting to the server).
//!
//! Three static files compiled into the binary (`include_str!`): no build
//! step, nothing fetched from anywhere else. The page polls
//! `GET /api/v1/config` and `GET /api/v1/dataplanes` every second and writes
//! through the same endpoints, with the same validation and the same errors,
//! as any other client; so the files hold no data and are served without a
//! token even with `--api-read-auth` ([`is_asset`], asked by `access`).
//!
//! **Nothing from the API is ever parsed as HTML**: the script builds the page
//! with `textContent` and DOM nodes only, and every answer carries a
//! Content-Security-Policy that allows this origin's script, style and
//! `fetch` only (no inline script, no other origin, no frame, no form post).
//! The files are not part of the JSON API, so they are not in the OpenAPI
//! document; [`routes`] is merged into the router beside the documented ones.

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

/// The page's path and its two assets' paths.
pub const PAGE: &str = "/";
pub const SCRIPT: &str = "/dashboard.js";
pub const STYLE: &str = "/dashboard.css";

/// What the page and its assets may do: this origin's script, style and API
/// calls, nothing inline, nothing else.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
style-src 'self'; connect-src 'self'; base-uri 'none'; \
form-action 'none'; frame-ancestors 'none'";

const INDEX_HTML: &str = include_str!("index.html");
const DASHBOARD_JS: &str = include_str!("dashboard.js");
const DASHBOARD_CSS: &str = include_str!("dashboard.css");

/// Whether `path` is one of the dashboard's files (which hold no data).
pub fn is_asset(path: &str) -> bool {
    matches!(path, PAGE | SCRIPT | STYLE)
}

/// `GET` (and `HEAD`) of the page and its assets; any other method on these
/// paths gets the API's JSON 405, as the router sets for every route.
pub fn routes<S>() -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    Router::new()
        .route(PAGE, get(page))
        .route(SCRIPT, get(script))
        .route(STYLE, get(style))
}

async fn page() -> Response {
    asset("text/html; charset=utf-8", INDEX_HTML)
}

async fn script() -> Response {
    asset("text/javascript; charset=utf-8", DASHBOARD_JS)
}

async fn style() -> Response {
    asset("text/css; charset=utf-8", DASHBOARD_CSS)
}

/// A file with its type and the headers that keep it from being read as
/// anything else, framed, or kept across an upgrade of the binary.
fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

#[cfg(test)]
mod tests;
