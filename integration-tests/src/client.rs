//! A small HTTP/1.1 client for the tests: one call, one [`Response`] with the
//! status, the headers and the whole body. Transport errors are values
//! ([`Client::send`]) for load loops, or panics for plain test steps.

use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::{self, connect::HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use serde_json::Value;

/// No single request of a test may take longer than this.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// What came back.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Response {
    /// The value of header `name` (the first one), if it is there and is text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The body as JSON; panics (showing the body) if it is not.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| {
            panic!(
                "expected a JSON body ({e}); got {} with {:?}",
                self.status, self.body
            )
        })
    }

    /// The `error` of a `{"error": "..."}` body, or the whole body when it has none.
    pub fn error_message(&self) -> String {
        serde_json::from_str::<Value>(&self.body)
            .ok()
            .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_owned))
            .unwrap_or_else(|| self.body.clone())
    }
}

/// An HTTP client; cheap to clone (clones share the connection pool).
#[derive(Debug, Clone)]
pub struct Client {
    inner: legacy::Client<HttpConnector, Full<Bytes>>,
}

impl Default for Client {
    fn default() -> Self {
        Client::new()
    }
}

impl Client {
    /// A client that keeps connections alive and reuses them.
    pub fn new() -> Self {
        Self::build(true)
    }

    /// A client that opens a new connection for every request: no connection
    /// left over from a killed process can be picked.
    pub fn without_pool() -> Self {
        Self::build(false)
    }

    fn build(pooled: bool) -> Self {
        let mut builder = legacy::Client::builder(TokioExecutor::new());
        builder
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(5));
        if !pooled {
            builder.pool_max_idle_per_host(0);
        }
        Client {
            inner: builder.build_http(),
        }
    }

    /// Sends one request; a JSON `body` is sent with `Content-Type: application/json`.
    /// Headers given here are added to the defaults (a `Host` given here is sent as is).
    pub async fn send(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, &str)],
        body: Option<&Value>,
    ) -> anyhow::Result<Response> {
        let payload = match body {
            Some(json) => Some(Bytes::from(serde_json::to_vec(json)?)),
            None => None,
        };
        self.send_bytes(method, url, headers, payload).await
    }

    /// Sends one request whose body, if any, is sent as JSON without being checked.
    pub async fn send_bytes(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, &str)],
        json_body: Option<Bytes>,
    ) -> anyhow::Result<Response> {
        let mut request = Request::builder().method(method.clone()).uri(url);
        if json_body.is_some() {
            request = request.header(http::header::CONTENT_TYPE, "application/json");
        }
        for (name, value) in headers {
            request = request.header(
                HeaderName::try_from(*name).with_context(|| format!("header name {name:?}"))?,
                HeaderValue::try_from(*value).with_context(|| format!("header value {value:?}"))?,
            );
        }
        let request = request
            .body(Full::new(json_body.unwrap_or_default()))
            .with_context(|| format!("building {method} {url}"))?;
        let exchange = async {
            let response = self
                .inner
                .request(request)
                .await
                .with_context(|| format!("{method} {url}"))?;
            let (parts, body) = response.into_parts();
            let bytes = body
                .collect()
                .await
                .with_context(|| format!("reading the body of {method} {url}"))?
                .to_bytes();
            anyhow::Ok(Response {
                status: parts.status,
                headers: parts.headers,
                body: String::from_utf8_lossy(&bytes).into_owned(),
            })
        };
        tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .with_context(|| format!("{method} {url}: no answer within {REQUEST_TIMEOUT:?}"))?
    }

    /// `GET url`; panics on a transport error.
    pub async fn get(&self, url: &str) -> Response {
        self.get_with(url, &[]).await
    }

    /// `GET url` with extra headers; panics on a transport error.
    pub async fn get_with(&self, url: &str, headers: &[(&str, &str)]) -> Response {
        self.send(Method::GET, url, headers, None)
            .await
            .unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// A request with an optional JSON body; panics on a transport error.
    pub async fn json(&self, method: Method, url: &str, body: Option<&Value>) -> Response {
        self.send(method, url, &[], body)
            .await
            .unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// A request with a raw (possibly malformed) JSON body; panics on a transport error.
    pub async fn raw_json(&self, method: Method, url: &str, body: &str) -> Response {
        self.send_bytes(method, url, &[], Some(Bytes::from(body.to_owned())))
            .await
            .unwrap_or_else(|e| panic!("{e:#}"))
    }
}

/// `GET url` on a fresh connection; panics on a transport error.
pub async fn get(url: &str) -> Response {
    Client::without_pool().get(url).await
}
