//! A plain HTTP/2 member (hyper's HTTP/2 server only, no HTTP/1.1): over
//! clear text with prior knowledge (`h2c`), or over TLS with ALPN `h2`. It
//! reads each request body whole, records the request (authority, headers,
//! body, trailers) and answers the body back, with a trailer of its own.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response};
use http_body_util::{BodyExt as _, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;

use crate::tls_backend::TestCa;

/// One request as the member saw it.
#[derive(Debug, Clone)]
pub struct H2Seen {
    pub method: String,
    /// `:authority`, or `Host` if there was no authority.
    pub authority: String,
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub trailers: Option<HeaderMap>,
}

#[derive(Debug, Default)]
struct Shared {
    seen: Mutex<Vec<H2Seen>>,
    connections: AtomicUsize,
    /// Connections that ended (closed by either side).
    closed: AtomicUsize,
}

/// A running HTTP/2 member; dropping it stops it.
#[derive(Debug)]
pub struct H2Backend {
    url: String,
    shared: Arc<Shared>,
    server: JoinHandle<()>,
}

impl H2Backend {
    /// The member URL: `http://127.0.0.1:PORT` (h2c) or `https://localhost:PORT` (h2).
    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// Every request the member got, in order.
    pub fn seen(&self) -> Vec<H2Seen> {
        self.shared
            .seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::SeqCst)
    }

    /// How many of its connections have ended.
    pub fn closed(&self) -> usize {
        self.shared.closed.load(Ordering::SeqCst)
    }
}

impl Drop for H2Backend {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// Starts an h2c member (HTTP/2 with prior knowledge) on `127.0.0.1:<a free port>`.
pub async fn spawn_h2c_backend() -> H2Backend {
    spawn(None).await
}

/// Starts an h2 member (TLS, ALPN `h2` only) whose certificate, for
/// `localhost`, is signed by `ca`.
pub async fn spawn_h2_tls_backend(ca: &TestCa) -> H2Backend {
    let mut config = (*ca.server_config(&["localhost", "127.0.0.1"])).clone();
    config.alpn_protocols = vec![b"h2".to_vec()];
    spawn(Some(TlsAcceptor::from(Arc::new(config)))).await
}

async fn spawn(tls: Option<TlsAcceptor>) -> H2Backend {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("an h2 backend can bind 127.0.0.1:0");
    let addr: SocketAddr = listener
        .local_addr()
        .expect("a bound listener has an address");
    let url = match tls {
        Some(_) => format!("https://localhost:{}", addr.port()),
        None => format!("http://{addr}"),
    };
    let shared = Arc::new(Shared::default());
    let server = tokio::spawn(serve(listener, tls, shared.clone()));
    H2Backend {
        url,
        shared,
        server,
    }
}

async fn serve(listener: TcpListener, tls: Option<TlsAcceptor>, shared: Arc<Shared>) {
    // Connections end with the server (the set aborts them when dropped).
    let mut connections = JoinSet::new();
    while let Ok((stream, _)) = listener.accept().await {
        shared.connections.fetch_add(1, Ordering::SeqCst);
        let shared = shared.clone();
        let tls = tls.clone();
        connections.spawn(async move {
            let counted = shared.clone();
            let service = service_fn(move |request| answer(request, shared.clone()));
            let builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
            let served = match tls {
                Some(tls) => match tls.accept(stream).await {
                    Ok(stream) => {
                        builder
                            .serve_connection(TokioIo::new(stream), service)
                            .await
                    }
                    Err(error) => {
                        tracing::debug!(%error, "TLS handshake with the h2 backend failed");
                        return;
                    }
                },
                None => {
                    builder
                        .serve_connection(TokioIo::new(stream), service)
                        .await
                }
            };
            counted.closed.fetch_add(1, Ordering::SeqCst);
            if let Err(error) = served {
                tracing::debug!(%error, "An h2 backend connection ended with an error");
            }
        });
    }
}

type AnswerBody =
    StreamBody<futures_util::stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, Infallible>>>>;

async fn answer(
    request: Request<Incoming>,
    shared: Arc<Shared>,
) -> Result<Response<AnswerBody>, hyper::Error> {
    let (parts, body) = request.into_parts();
    let collected = body.collect().await?;
    let trailers = collected.trailers().cloned();
    let body = collected.to_bytes();
    let authority = parts
        .uri
        .authority()
        .map(|a| a.to_string())
        .or_else(|| {
            parts
                .headers
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_owned)
        })
        .unwrap_or_default();
    shared
        .seen
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(H2Seen {
            method: parts.method.to_string(),
            authority,
            path: parts.uri.path().to_owned(),
            headers: parts.headers,
            body: body.clone(),
            trailers,
        });
    let mut trailers = HeaderMap::new();
    trailers.insert("x-member-trailer", HeaderValue::from_static("done"));
    let frames = vec![Ok(Frame::data(body)), Ok(Frame::trailers(trailers))];
    let mut response = Response::new(StreamBody::new(futures_util::stream::iter(frames)));
    response
        .headers_mut()
        .insert("x-member", HeaderValue::from_static("h2"));
    Ok(response)
}
