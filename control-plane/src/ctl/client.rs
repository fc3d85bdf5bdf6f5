//! The HTTP client every command (and `import-apache --apply`) talks to the
//! REST API with: hyper's pooled client, one bounded exchange per call, the
//! bearer token when one is given, and the API's `{"error": ...}` read back.

use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::Value;
use switchyard_shared::text::{bounded, quoted};

use super::CtlError;

/// How long one call to the API may take (plus `--wait`).
pub const API_TIMEOUT: Duration = Duration::from_secs(30);

/// Everything but RFC 3986's unreserved characters is escaped in a path segment.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// The pooled HTTP/1.1 client.
pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// Why one exchange did not give an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendError {
    /// No connection could be made, or no answer came in time.
    Unreachable(String),
    /// The request could not be built or the answer not read.
    Failed(String),
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::Unreachable(m) | SendError::Failed(m) => f.write_str(m),
        }
    }
}

/// A new pooled client.
pub fn http_client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// The token from `SWITCHYARD_API_TOKEN`, when it is set and not empty.
pub fn token_from_env() -> Option<String> {
    std::env::var("SWITCHYARD_API_TOKEN")
        .ok()
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty())
}

/// One exchange: `method url` with a JSON `body`, answered within `limit`.
pub async fn send(
    client: &HttpClient,
    method: Method,
    url: &str,
    body: Bytes,
    limit: Duration,
    token: Option<&str>,
) -> Result<(StatusCode, Bytes), SendError> {
    let mut request = Request::builder()
        .method(method.clone())
        .uri(url)
        .header(hyper::header::CONTENT_TYPE, "application/json");
    if let Some(token) = token {
        request = request.header(hyper::header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let request = request
        .body(Full::new(body))
        .map_err(|e| SendError::Failed(format!("{method} {}: {e}", quoted(url))))?;
    let exchange = async {
        let response = client.request(request).await.map_err(|e| {
            let message = format!("{method} {url}: {e}");
            if e.is_connect() {
                SendError::Unreachable(message)
            } else {
                SendError::Failed(message)
            }
        })?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| SendError::Failed(format!("{method} {url}: reading the answer: {e}")))?
            .to_bytes();
        Ok((status, body))
    };
    tokio::time::timeout(limit, exchange).await.map_err(|_| {
        SendError::Unreachable(format!(
            "{method} {url}: no answer within {}",
            humantime::format_duration(limit)
        ))
    })?
}

/// A body as text for a message, bounded.
pub fn text(body: &[u8]) -> String {
    bounded(String::from_utf8_lossy(body).into_owned())
}

/// `name` escaped for one path segment.
pub fn segment(name: &str) -> String {
    utf8_percent_encode(name, SEGMENT).to_string()
}

/// The control plane's REST API at one base URL.
#[derive(Debug, Clone)]
pub struct Api {
    base: String,
    token: Option<String>,
    client: HttpClient,
}

impl Api {
    /// An API at `base` (`http://host:port`); anything else is a usage error.
    pub fn new(base: &str, token: Option<String>) -> Result<Self, CtlError> {
        let base = base.trim_end_matches('/');
        let valid = base
            .strip_prefix("http://")
            .is_some_and(|rest| !rest.is_empty() && !rest.contains('/'))
            && base.parse::<hyper::Uri>().is_ok();
        if !valid {
            return Err(CtlError::Usage(format!(
                "--api {} must be the control plane's http:// URL (like http://127.0.0.1:8080)",
                quoted(base)
            )));
        }
        Ok(Api {
            base: base.to_owned(),
            token,
            client: http_client(),
        })
    }

    /// `method path` (with `?wait=` when `wait` is given); the answer's JSON
    /// on a 2xx, else the API's error message and status.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        wait: Option<Duration>,
    ) -> Result<Value, CtlError> {
        let (url, limit) = match wait {
            Some(wait) => (
                format!(
                    "{}{path}?wait={}",
                    self.base,
                    humantime::format_duration(wait)
                ),
                API_TIMEOUT + wait,
            ),
            None => (format!("{}{path}", self.base), API_TIMEOUT),
        };
        let body = match body {
            Some(value) => {
                Bytes::from(serde_json::to_vec(value).map_err(|e| CtlError::Failed(e.to_string()))?)
            }
            None => Bytes::new(),
        };
        let (status, answer) = send(
            &self.client,
            method.clone(),
            &url,
            body,
            limit,
            self.token.as_deref(),
        )
        .await
        .map_err(|e| match e {
            SendError::Unreachable(m) => CtlError::Unreachable(m),
            SendError::Failed(m) => CtlError::Failed(m),
        })?;
        let json = serde_json::from_slice::<Value>(&answer);
        if !status.is_success() {
            let message = json
                .ok()
                .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_owned))
                .unwrap_or_else(|| text(&answer));
            return Err(CtlError::Refused { status, message });
        }
        json.map_err(|e| {
            CtlError::Failed(format!(
                "{method} {path} answered {status} without JSON ({e}): {}",
                text(&answer)
            ))
        })
    }

    pub async fn get(&self, path: &str) -> Result<Value, CtlError> {
        self.call(Method::GET, path, None, None).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_are_escaped() {
        assert_eq!(segment("web-1_a.b~"), "web-1_a.b~");
        assert_eq!(segment("127.0.0.1:9000"), "127.0.0.1%3A9000");
        assert_eq!(segment("a/b?c"), "a%2Fb%3Fc");
    }

    #[test]
    fn only_http_base_urls_are_taken() {
        assert!(Api::new("http://127.0.0.1:8080/", None).is_ok());
        for bad in ["https://x:1", "127.0.0.1:8080", "http://", "http://a/b"] {
            assert!(
                matches!(Api::new(bad, None), Err(CtlError::Usage(_))),
                "{bad}"
            );
        }
    }
}
