//! Accepting client connections (HTTP/1.1 and h2c on the same port) and
//! handing each request to the proxy; the tunnels of upgraded connections,
//! which the worker owns (a config swap never touches them); graceful
//! shutdown: stop accepting, let requests in flight and tunnels finish within
//! a grace period, then close them.

use std::convert::Infallible;
use std::io::IoSlice;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::HeaderValue;
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::proxy::tunnel::{self, MemberSide, TunnelSlot};
use crate::proxy::{ClientInfo, Proxy};

/// A client that sends its headers slower than this is cut off.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// How much of a new connection is read at once to tell HTTP/1.1 from h2c.
const SNIFF_BUFFER: usize = 2048;
/// What an h2c connection with prior knowledge opens with (RFC 9113, 3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Serves the proxy on `listener` until `shutdown` turns true, then drains
/// connections and tunnels for up to `grace`, then closes what is left.
pub async fn serve(
    listener: TcpListener,
    proxy: Arc<Proxy>,
    shutdown: watch::Receiver<bool>,
    grace: Duration,
) {
    let builders = Arc::new(Builders::new());
    let connections = TaskTracker::new();
    let tunnels = Tunnels {
        tracker: TaskTracker::new(),
        close: CancellationToken::new(),
    };
    let mut stop = shutdown.clone();
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
            () = crate::stopped(&mut stop) => break,
        };
        // TCP_NODELAY is inherited from the listener (see `bind_workers`).
        let client = Arc::new(Client {
            proxy: proxy.clone(),
            info: ClientInfo {
                ip: HeaderValue::try_from(peer.ip().to_string())
                    .unwrap_or_else(|_| HeaderValue::from_static("unknown")),
            },
            tunnels: tunnels.clone(),
        });
        connections.spawn(serve_connection(
            stream,
            peer,
            client,
            builders.clone(),
            shutdown.clone(),
        ));
    }
    drop(listener);
    info!("Draining connections");
    connections.close();
    tunnels.tracker.close();
    let drained = async {
        connections.wait().await;
        tunnels.tracker.wait().await;
    };
    if tokio::time::timeout(grace, drained).await.is_err() {
        warn!(
            ?grace,
            tunnels = tunnels.tracker.len(),
            "Grace period over; closing the remaining connections and tunnels"
        );
    }
    tunnels.close.cancel();
    // Each tunnel ends at its next poll; the connections end with the runtime.
    drop(tokio::time::timeout(Duration::from_secs(1), tunnels.tracker.wait()).await);
}

/// What the requests of one client connection share.
struct Client {
    proxy: Arc<Proxy>,
    info: ClientInfo,
    tunnels: Tunnels,
}

/// One client connection: told HTTP/1.1 from h2c, then served until it ends
/// (or is upgraded) or shutdown asks it to end.
async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    client: Arc<Client>,
    builders: Arc<Builders>,
    shutdown: watch::Receiver<bool>,
) {
    let (protocol, io) = match tokio::time::timeout(HEADER_READ_TIMEOUT, sniff(stream)).await {
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
    let service = service_fn(move |request| handle(client.clone(), request));
    let io = TokioIo::new(io);
    let served = match protocol {
        Protocol::Http1 => {
            let conn = builders.http1.serve_connection(io, service).with_upgrades();
            tokio::pin!(conn);
            until_shutdown(conn, shutdown, |conn| conn.graceful_shutdown()).await
        }
        Protocol::Http2 => {
            let conn = builders.http2.serve_connection(io, service);
            tokio::pin!(conn);
            until_shutdown(conn, shutdown, |conn| conn.graceful_shutdown()).await
        }
    };
    if let Err(error) = served {
        debug!(client.addr = %peer, %error, "Connection ended with an error");
    }
}

/// Serves one request; a member that switched protocols gets a tunnel to
/// the client's connection once hyper has upgraded it.
async fn handle(
    client: Arc<Client>,
    mut request: http::Request<hyper::body::Incoming>,
) -> Result<http::Response<crate::proxy::body::ProxyBody>, Infallible> {
    let on_upgrade = request.extensions_mut().remove::<OnUpgrade>();
    let mut response = client.proxy.handle(request, &client.info).await;
    if let (Some(slot), Some(on_upgrade)) =
        (response.extensions_mut().remove::<TunnelSlot>(), on_upgrade)
        && let Some(member) = slot.take()
    {
        client.tunnels.open(on_upgrade, member);
    }
    Ok(response)
}

/// Drives a client connection; once `shutdown` turns true, asks it to end
/// gracefully (finish the request in flight, take no other) and lets it.
async fn until_shutdown<C, E>(
    mut conn: Pin<&mut C>,
    mut shutdown: watch::Receiver<bool>,
    graceful: impl FnOnce(Pin<&mut C>),
) -> Result<(), E>
where
    C: Future<Output = Result<(), E>>,
{
    tokio::select! {
        served = conn.as_mut() => return served,
        () = crate::stopped(&mut shutdown) => {}
    }
    graceful(conn.as_mut());
    conn.await
}

/// The tunnels of one worker: spawned on its tracker, closed by its token.
#[derive(Debug, Clone)]
struct Tunnels {
    tracker: TaskTracker,
    close: CancellationToken,
}

impl Tunnels {
    /// Tunnels the member's side to the client's connection once hyper has
    /// sent the 101 and handed the connection over.
    fn open(&self, on_upgrade: OnUpgrade, member: MemberSide) {
        let close = self.close.clone();
        self.tracker.spawn(async move {
            // Bounded: hyper writes the 101 head, then hands over (or fails).
            let upgraded = tokio::select! {
                upgraded = tokio::time::timeout(member.idle_timeout(), on_upgrade) => upgraded,
                () = close.cancelled() => return,
            };
            let upgraded = match upgraded {
                Ok(Ok(upgraded)) => upgraded,
                Ok(Err(error)) => {
                    debug!(%error, "The client's connection was not upgraded");
                    return;
                }
                Err(_) => {
                    debug!("The client's connection was not upgraded in time");
                    return;
                }
            };
            // An HTTP/1.1 connection comes back as the socket it is (so a
            // half-close reaches the client), with what hyper read past the
            // request head and what `sniff` read that hyper did not take.
            match upgraded.downcast::<TokioIo<ClientIo>>() {
                Ok(parts) => {
                    let ClientIo { prefix, stream } = parts.io.into_inner();
                    let first = if prefix.is_empty() {
                        parts.read_buf
                    } else {
                        let mut first = BytesMut::from(parts.read_buf);
                        first.extend_from_slice(&prefix);
                        first.freeze()
                    };
                    tunnel::splice(stream, first, member, close).await;
                }
                Err(upgraded) => {
                    tunnel::splice(TokioIo::new(upgraded), Bytes::new(), member, close).await;
                }
            }
        });
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
        http2
            .timer(TokioTimer::new())
            .max_concurrent_streams(256)
            .enable_connect_protocol();
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
