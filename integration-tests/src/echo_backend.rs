//! A backend that reads what it is sent: a hyper HTTP/1.1 server on
//! `127.0.0.1:0` that streams every request body through a [`Checksum`] (never
//! holding more than [`ECHO_LIMIT`] bytes of it), remembers every request, and
//! answers by path:
//!
//! - `/hash…`: `"<count> <hash>"` of the body it received.
//! - `/download…?bytes=N`: `N` bytes of the [`Payload`] pattern, generated in
//!   chunks (sent chunked; with `&sized` as well, with `Content-Length`).
//! - `/sleep…?ms=N`: waits `N` ms, then answers its name.
//! - `/response-headers…`: its name, with `Set-Cookie` twice, `X-Custom` twice,
//!   `X-Single`, and the hop-by-hop `Connection: x-foo`, `X-Foo`,
//!   `Keep-Alive`; with `?split` as well a second `Connection: x-bar` line
//!   and `X-Bar`.
//! - `/connection-close…`: echoes (as below) with `Connection: close`.
//! - `/early…`: answers its name at once, before reading the body, which it
//!   goes on reading (and records once it ended) on the same connection, as a
//!   member that refuses an upload early but drains it does.
//! - anything else: echoes the body it received (up to [`ECHO_LIMIT`] bytes).
//!
//! Every answer says who answered (`X-Backend`) and what arrived
//! (`X-Seen-Method`, `X-Seen-Path`, `X-Seen-Host`, `X-Seen-Xff`,
//! `X-Seen-Content-Length`, `X-Seen-Transfer-Encoding`, `X-Body-Count`,
//! `X-Body-Hash`), except `/download`, which says only who answered.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

use crate::payload::{Checksum, Payload, read_body};

/// How much of a request body the backend keeps (and echoes).
pub const ECHO_LIMIT: usize = 1024 * 1024;

/// One request as the backend received it, body included (its checksum, and
/// its first [`ECHO_LIMIT`] bytes).
#[derive(Debug, Clone)]
pub struct EchoRequest {
    pub method: String,
    /// Path and query, as received.
    pub path: String,
    pub headers: HeaderMap,
    pub peer: SocketAddr,
    pub body: Checksum,
    pub body_head: Bytes,
}

impl EchoRequest {
    /// Every value of header `name`, joined with `", "`.
    pub fn header(&self, name: &str) -> Option<String> {
        let values: Vec<&str> = self
            .headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap_or("<not text>"))
            .collect();
        (!values.is_empty()).then(|| values.join(", "))
    }

    /// The body as text (its first [`ECHO_LIMIT`] bytes).
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body_head).into_owned()
    }
}

#[derive(Debug)]
struct Shared {
    name: String,
    seen: Mutex<Vec<EchoRequest>>,
}

/// A running (or stopped) echo backend; dropping it stops it.
#[derive(Debug)]
pub struct EchoBackend {
    addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: watch::Sender<bool>,
    server: Option<JoinHandle<()>>,
}

/// Starts an echo backend called `name` on `127.0.0.1:<a free port>`.
pub async fn spawn_echo_backend(name: &str) -> EchoBackend {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a backend can bind 127.0.0.1:0");
    let addr = listener
        .local_addr()
        .expect("a bound listener has an address");
    let shared = Arc::new(Shared {
        name: name.to_owned(),
        seen: Mutex::new(Vec::new()),
    });
    let (shutdown, stopped) = watch::channel(false);
    let server = tokio::spawn(serve(listener, Arc::clone(&shared), stopped));
    EchoBackend {
        addr,
        shared,
        shutdown,
        server: Some(server),
    }
}

impl EchoBackend {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`, the member URL to register.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `127.0.0.1:PORT`: the default member id.
    pub fn authority(&self) -> String {
        self.addr.to_string()
    }

    /// Its name (the `X-Backend` of its answers).
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// Every request it received (and read to the end), oldest first.
    pub fn requests(&self) -> Vec<EchoRequest> {
        self.seen().clone()
    }

    pub fn request_count(&self) -> usize {
        self.seen().len()
    }

    /// The last request it received.
    pub fn last_request(&self) -> Option<EchoRequest> {
        self.seen().last().cloned()
    }

    fn seen(&self) -> std::sync::MutexGuard<'_, Vec<EchoRequest>> {
        self.shared
            .seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Kills it at once, as a crash would: every connection is dropped in the
    /// middle of whatever it was doing, and its port refuses connections.
    pub fn kill(&mut self) {
        if let Some(server) = self.server.take() {
            server.abort();
        }
    }

    /// Stops it: its port refuses connections from now on.
    pub async fn stop(&mut self) {
        self.shutdown.send_replace(true);
        if let Some(server) = self.server.take()
            && let Err(e) = server.await
        {
            panic!("the backend {} failed: {e}", self.shared.name);
        }
    }
}

impl Drop for EchoBackend {
    fn drop(&mut self) {
        self.shutdown.send_replace(true);
        if let Some(server) = self.server.take() {
            server.abort();
        }
    }
}

async fn serve(listener: TcpListener, shared: Arc<Shared>, mut stopped: watch::Receiver<bool>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = stopped.changed() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let shared = Arc::clone(&shared);
                    connections.spawn(async move {
                        let service = service_fn(move |request| {
                            let shared = Arc::clone(&shared);
                            async move { Ok::<_, Infallible>(answer(shared, peer, request).await) }
                        });
                        if let Err(e) = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .await
                        {
                            tracing::debug!(error = %e, "Echo backend connection ended with an error");
                        }
                    });
                }
                Err(e) => tracing::warn!(error = %e, "Echo backend cannot accept"),
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    connections.shutdown().await;
}

type EchoBody = BoxBody<Bytes, Infallible>;

fn text(body: impl Into<Bytes>) -> EchoBody {
    Full::new(body.into()).boxed()
}

/// The value of `key` in the query string (`key=value`), or `Some("")` for a bare `key`.
fn query_value<'q>(query: Option<&'q str>, key: &str) -> Option<&'q str> {
    query?
        .split('&')
        .find_map(|pair| match pair.split_once('=') {
            Some((k, v)) if k == key => Some(v),
            None if pair == key => Some(""),
            _ => None,
        })
}

async fn answer(
    shared: Arc<Shared>,
    peer: SocketAddr,
    request: Request<Incoming>,
) -> Response<EchoBody> {
    let (parts, body) = request.into_parts();
    let path = parts
        .uri
        .path_and_query()
        .map_or_else(|| parts.uri.path().to_owned(), |p| p.as_str().to_owned());
    let route = parts.uri.path();
    let query = parts.uri.query();
    let name = HeaderValue::try_from(shared.name.as_str())
        .unwrap_or_else(|_| HeaderValue::from_static("echo"));

    if route.starts_with("/download") {
        let bytes = query_value(query, "bytes")
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        let payload = if query_value(query, "sized").is_some() {
            Payload::sized(bytes)
        } else {
            Payload::streamed(bytes)
        };
        let mut response = Response::new(payload.boxed());
        response.headers_mut().insert("x-backend", name);
        return response;
    }

    if route.starts_with("/early") {
        let recorder = Arc::clone(&shared);
        let (method, headers) = (parts.method.to_string(), parts.headers.clone());
        let path = path.clone();
        tokio::spawn(async move {
            if let Ok((body, body_head)) = read_body(body, ECHO_LIMIT).await {
                recorder
                    .seen
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(EchoRequest {
                        method,
                        path,
                        headers,
                        peer,
                        body,
                        body_head,
                    });
            }
        });
        let mut response = Response::new(text(shared.name.clone()));
        response.headers_mut().insert("x-backend", name);
        return response;
    }

    let (checksum, head) = match read_body(body, ECHO_LIMIT).await {
        Ok(read) => read,
        Err(e) => {
            let mut response = Response::new(text(format!("cannot read the body: {e}")));
            *response.status_mut() = StatusCode::BAD_REQUEST;
            return response;
        }
    };
    let seen = EchoRequest {
        method: parts.method.to_string(),
        path: path.clone(),
        headers: parts.headers.clone(),
        peer,
        body: checksum.clone(),
        body_head: head.clone(),
    };
    shared
        .seen
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(seen.clone());

    let mut response = if route.starts_with("/hash") {
        Response::new(text(checksum.summary()))
    } else if route.starts_with("/sleep") {
        let ms = query_value(query, "ms")
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        tokio::time::sleep(Duration::from_millis(ms)).await;
        Response::new(text(shared.name.clone()))
    } else if route.starts_with("/response-headers") {
        let mut response = Response::new(text(shared.name.clone()));
        let headers = response.headers_mut();
        for (name, value) in [
            ("set-cookie", "a=1; Path=/"),
            ("set-cookie", "b=2; Path=/; HttpOnly"),
            ("x-custom", "one"),
            ("x-custom", "two"),
            ("x-single", "yes"),
            ("connection", "x-foo"),
            ("x-foo", "hop-by-hop, named by Connection"),
            ("keep-alive", "timeout=5, max=100"),
        ] {
            headers.append(name, HeaderValue::from_static(value));
        }
        if query_value(query, "split").is_some() {
            headers.append("connection", HeaderValue::from_static("x-bar"));
            headers.append(
                "x-bar",
                HeaderValue::from_static("hop-by-hop, named by a second Connection line"),
            );
        }
        response
    } else {
        let mut response = Response::new(text(head));
        if route.starts_with("/connection-close") {
            response
                .headers_mut()
                .insert("connection", HeaderValue::from_static("close"));
        }
        response
    };

    let headers = response.headers_mut();
    headers.insert("x-backend", name);
    for (echo, header) in [
        ("x-seen-host", "host"),
        ("x-seen-xff", "x-forwarded-for"),
        ("x-seen-content-length", "content-length"),
        ("x-seen-transfer-encoding", "transfer-encoding"),
    ] {
        if let Some(value) = seen
            .header(header)
            .and_then(|v| HeaderValue::try_from(v).ok())
        {
            headers.insert(echo, value);
        }
    }
    for (name, value) in [
        ("x-seen-method", seen.method.clone()),
        ("x-seen-path", path),
        ("x-body-count", checksum.count().to_string()),
        ("x-body-hash", checksum.hex()),
    ] {
        if let Ok(value) = HeaderValue::try_from(value) {
            headers.insert(name, value);
        }
    }
    response
}
