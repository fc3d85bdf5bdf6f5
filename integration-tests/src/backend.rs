//! A real backend in the test process: a hyper HTTP/1.1 server on
//! `127.0.0.1:0` that answers every path with its fixed body, says who it is
//! (`X-Backend`), echoes what it received (`X-Seen-*`), remembers every request
//! it got, and can be stopped so that its port refuses connections.
//!
//! `GET /redirect` answers `302` with `Location: <its own URL>/landed`, for the
//! tests of redirect rewriting.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

/// What a backend received: one request head.
#[derive(Debug, Clone)]
pub struct SeenRequest {
    pub method: String,
    /// Path and query, as received.
    pub path: String,
    pub headers: HeaderMap,
    /// The address the request came from.
    pub peer: SocketAddr,
}

impl SeenRequest {
    /// Every value of header `name`, joined with `", "` (as a proxy may either
    /// append to one line or add another).
    pub fn header(&self, name: &str) -> Option<String> {
        let values: Vec<&str> = self
            .headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap_or("<not text>"))
            .collect();
        (!values.is_empty()).then(|| values.join(", "))
    }
}

#[derive(Debug)]
struct Shared {
    body: String,
    url: String,
    seen: Mutex<Vec<SeenRequest>>,
}

/// A running (or stopped) backend; dropping it stops it.
#[derive(Debug)]
pub struct Backend {
    addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: watch::Sender<bool>,
    server: Option<JoinHandle<()>>,
}

/// Starts a backend that answers `body` on `127.0.0.1:<a free port>`.
pub async fn spawn_backend(body: &str) -> Backend {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a backend can bind 127.0.0.1:0");
    let addr = listener
        .local_addr()
        .expect("a bound listener has an address");
    let shared = Arc::new(Shared {
        body: body.to_owned(),
        url: format!("http://{addr}"),
        seen: Mutex::new(Vec::new()),
    });
    let (shutdown, stopped) = watch::channel(false);
    let server = tokio::spawn(serve(listener, Arc::clone(&shared), stopped));
    Backend {
        addr,
        shared,
        shutdown,
        server: Some(server),
    }
}

impl Backend {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`, the member URL to register.
    pub fn url(&self) -> String {
        self.shared.url.clone()
    }

    /// `127.0.0.1:PORT`: the default member id, and the `Host` it gets without `preserve_host`.
    pub fn authority(&self) -> String {
        self.addr.to_string()
    }

    /// The body it answers (and its `X-Backend` header).
    pub fn body(&self) -> &str {
        &self.shared.body
    }

    /// How many requests it received.
    pub fn request_count(&self) -> usize {
        self.seen().len()
    }

    /// Every request it received, oldest first.
    pub fn requests(&self) -> Vec<SeenRequest> {
        self.seen().clone()
    }

    /// The last request it received.
    pub fn last_request(&self) -> Option<SeenRequest> {
        self.seen().last().cloned()
    }

    fn seen(&self) -> std::sync::MutexGuard<'_, Vec<SeenRequest>> {
        self.shared
            .seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Stops it: the listener and every open connection are closed, so its
    /// port refuses connections from now on.
    pub async fn stop(&mut self) {
        self.shutdown.send_replace(true);
        if let Some(server) = self.server.take()
            && let Err(e) = server.await
        {
            panic!("the backend {} failed: {e}", self.shared.body);
        }
    }
}

impl Drop for Backend {
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
                            std::future::ready(answer(&shared, peer, request))
                        });
                        // A client that goes away mid-request is not the backend's failure.
                        if let Err(e) = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .await
                        {
                            tracing::debug!(error = %e, "Backend connection ended with an error");
                        }
                    });
                }
                Err(e) => tracing::warn!(error = %e, "Backend cannot accept"),
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    // Closing the connections too: a pooled keep-alive connection must not
    // keep reaching a stopped backend.
    connections.shutdown().await;
}

fn answer(
    shared: &Shared,
    peer: SocketAddr,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = request.uri().path_and_query().map_or_else(
        || request.uri().path().to_owned(),
        |p| p.as_str().to_owned(),
    );
    let seen = SeenRequest {
        method: request.method().to_string(),
        path: path.clone(),
        headers: request.headers().clone(),
        peer,
    };
    let mut response = Response::new(Full::new(Bytes::from(shared.body.clone())));
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::try_from(shared.body.as_str()) {
        headers.insert("x-backend", value);
    }
    for (echo, name) in [
        ("x-seen-host", "host"),
        ("x-seen-xff", "x-forwarded-for"),
        ("x-seen-x-forwarded-host", "x-forwarded-host"),
        ("x-seen-x-forwarded-proto", "x-forwarded-proto"),
    ] {
        if let Some(value) = seen
            .header(name)
            .and_then(|v| HeaderValue::try_from(v).ok())
        {
            headers.insert(echo, value);
        }
    }
    if let Ok(value) = HeaderValue::try_from(path.as_str()) {
        headers.insert("x-seen-path", value);
    }
    if path.starts_with("/redirect")
        && let Ok(location) = HeaderValue::try_from(format!("{}/landed", shared.url))
    {
        *response.status_mut() = StatusCode::FOUND;
        response
            .headers_mut()
            .insert(http::header::LOCATION, location);
    }
    shared
        .seen
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(seen);
    Ok(response)
}
