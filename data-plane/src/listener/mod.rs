//! Accepting client connections (HTTP/1.1 and h2c on the same port) and
//! handing each request to the proxy; graceful shutdown: stop accepting, let
//! requests in flight finish within a grace period, then close.

use std::convert::Infallible;
use std::io::IoSlice;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::HeaderValue;
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::proxy::{ClientInfo, Proxy};

/// A client that sends its headers slower than this is cut off.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// How much of a new connection is read at once to tell HTTP/1.1 from h2c.
const SNIFF_BUFFER: usize = 2048;
/// What an h2c connection with prior knowledge opens with (RFC 9113, 3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Serves the proxy on `listener` until `shutdown` turns true, then drains for up to `grace`.
pub async fn serve(
    listener: TcpListener,
    proxy: Arc<Proxy>,
    mut shutdown: watch::Receiver<bool>,
    grace: Duration,
) {
    let builders = Arc::new(Builders::new());
    let graceful = GracefulShutdown::new();
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: wait a little rather than spin.
                    warn!(%error, "Accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
            () = crate::stopped(&mut shutdown) => break,
        };
        // TCP_NODELAY is inherited from the listener (see `bind_workers`).
        let client = Arc::new((
            proxy.clone(),
            ClientInfo {
                ip: HeaderValue::try_from(peer.ip().to_string())
                    .unwrap_or_else(|_| HeaderValue::from_static("unknown")),
            },
        ));
        let service = service_fn(move |request| {
            let client = client.clone();
            async move { Ok::<_, Infallible>(client.0.handle(request, &client.1).await) }
        });
        let (builders, watcher) = (builders.clone(), graceful.watcher());
        tokio::spawn(async move {
            let (protocol, io) =
                match tokio::time::timeout(HEADER_READ_TIMEOUT, sniff(stream)).await {
                    Ok(Ok(Some(sniffed))) => sniffed,
                    Ok(Ok(None)) => return,
                    Ok(Err(error)) => {
                        debug!(client.addr = %peer, %error, "Reading the first bytes failed");
                        return;
                    }
                    Err(_) => {
                        debug!(client.addr = %peer, "Client sent nothing in time");
                        return;
                    }
                };
            let io = TokioIo::new(io);
            let served = match protocol {
                Protocol::Http1 => {
                    watcher
                        .watch(builders.http1.serve_connection(io, service))
                        .await
                }
                Protocol::Http2 => {
                    watcher
                        .watch(builders.http2.serve_connection(io, service))
                        .await
                }
            };
            if let Err(error) = served {
                debug!(client.addr = %peer, %error, "Connection ended with an error");
            }
        });
    }
    drop(listener);
    info!("Draining connections");
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        warn!(
            ?grace,
            "Grace period over; closing the remaining connections"
        );
    }
}

/// The connection builders of one worker, made once.
struct Builders {
    http1: http1::Builder,
    http2: http2::Builder<TokioExecutor>,
}

impl Builders {
    fn new() -> Self {
        let mut http1 = http1::Builder::new();
        http1
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT)
            .max_buf_size(64 * 1024);
        let mut http2 = http2::Builder::new(TokioExecutor::new());
        http2.timer(TokioTimer::new()).max_concurrent_streams(256);
        Builders { http1, http2 }
    }
}

/// Which protocol a client connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    Http1,
    /// h2c with prior knowledge: the connection opens with the HTTP/2 preface.
    Http2,
}

/// Tells HTTP/1.1 from h2c by the first bytes, read in one go (as large a
/// read as the request usually is, so a new connection costs no extra read).
/// `None`: the client closed before sending anything.
async fn sniff(mut stream: TcpStream) -> std::io::Result<Option<(Protocol, ClientIo)>> {
    let mut first = BytesMut::with_capacity(SNIFF_BUFFER);
    loop {
        if stream.read_buf(&mut first).await? == 0 {
            if first.is_empty() {
                return Ok(None);
            }
            break;
        }
        let seen = first.len().min(H2_PREFACE.len());
        if first[..seen] != H2_PREFACE[..seen] || seen == H2_PREFACE.len() {
            break;
        }
    }
    let protocol = if first.starts_with(H2_PREFACE) {
        Protocol::Http2
    } else {
        Protocol::Http1
    };
    let prefix = first.freeze();
    Ok(Some((protocol, ClientIo { prefix, stream })))
}

/// A client connection: the bytes [`sniff`] read, then the socket.
///
/// Its shutdown is a no-op: the socket is closed when the connection is
/// dropped, which sends the same FIN without a `shutdown(2)` call first.
struct ClientIo {
    prefix: Bytes,
    stream: TcpStream,
}

impl AsyncRead for ClientIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if this.prefix.is_empty() {
            return Pin::new(&mut this.stream).poll_read(cx, buf);
        }
        let chunk = if buf.remaining() >= this.prefix.len() {
            // Taken whole, so the buffer is freed as soon as it is used.
            std::mem::take(&mut this.prefix)
        } else {
            this.prefix.split_to(buf.remaining())
        };
        buf.put_slice(&chunk);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for ClientIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
