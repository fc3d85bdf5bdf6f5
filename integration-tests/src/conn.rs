//! Connection-level clients, for what [`crate::Client`] cannot do: send a body
//! of any type (a [`crate::payload::Payload`] streamed as it is sent), read a
//! response body as a stream, speak HTTP/2 with prior knowledge (h2c), or send
//! a header line twice.

use std::net::SocketAddr;

use anyhow::Context as _;
use bytes::Bytes;
use http::{Request, Response};
use hyper::body::{Body, Incoming};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Sends `request` (origin-form URI) over a new HTTP/1.1 connection to `addr`
/// and returns the response once its head arrived; the body is read by the caller.
pub async fn h1_send<B>(addr: SocketAddr, request: Request<B>) -> anyhow::Result<Response<Incoming>>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let stream = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    let (mut sender, connection) = http1::handshake(TokioIo::new(stream))
        .await
        .context("HTTP/1.1 handshake")?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "Test client connection ended with an error");
        }
    });
    let what = format!("{} {}", request.method(), request.uri());
    sender.send_request(request).await.context(what)
}

/// Opens an HTTP/2 connection with prior knowledge (h2c) to `addr`; the sender
/// can be cloned to open concurrent streams. Requests need an absolute URI
/// (`http://host:port/path`): its authority is `:authority`.
pub async fn h2_connect<B>(addr: SocketAddr) -> anyhow::Result<http2::SendRequest<B>>
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    let stream = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    let (sender, connection) = http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
        .await
        .context("HTTP/2 handshake")?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "Test client HTTP/2 connection ended with an error");
        }
    });
    Ok(sender)
}

/// Every value of header `name` in `response`, in order, as text.
pub fn header_values<B>(response: &Response<B>, name: &str) -> Vec<String> {
    response
        .headers()
        .get_all(name)
        .iter()
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .collect()
}

/// The first value of header `name`, as text.
pub fn header<B>(response: &Response<B>, name: &str) -> Option<String> {
    header_values(response, name).into_iter().next()
}
