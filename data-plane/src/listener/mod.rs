//! Accepting client connections (HTTP/1.1 and h2c on the same port; on the
//! `--tls-listen` port, HTTP/1.1 and h2 over TLS by ALPN, see [`tls`]) and
//! handing each request to the proxy, under the client-side clocks and limits
//! ([`ClientLimits`]); the drain on shutdown: stop accepting (after what is
//! already queued), let requests in flight finish within `--drain-timeout`,
//! closing kept-alive connections after their current response. The tunnels
//! of upgraded connections belong to the worker (a config swap never touches
//! them): on shutdown they get the same drain time, then are closed.

pub mod access_log;
mod connection;
pub mod tls;

use std::convert::Infallible;
use std::io::IoSlice;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
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
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::field::Empty;
use tracing::{Instrument, debug, debug_span, info, warn};

use crate::admin::metrics::{self, ClientLimit};
use crate::listener::access_log::Line;
use crate::listener::connection::{Activity, Done, Drain, HeadScan, Tracked};
use crate::proxy::body::ProxyBody;
use crate::proxy::request::BothLengths;
use crate::proxy::tunnel::{self, MemberSide, TunnelSlot};
use crate::proxy::{ClientInfo, Proxy, Refusal, Served};

/// How much of a new connection is read at once to tell HTTP/1.1 from h2c.
const SNIFF_BUFFER: usize = 2048;
/// What an h2c connection with prior knowledge opens with (RFC 9113, 3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// The listen backlog of each worker's listener.
pub(crate) const BACKLOG: u32 = 4096;
/// What a client over `--max-connections` gets before its socket is closed.
const REFUSED: &[u8] =
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";

/// The client-side clocks and limits (flags; defaults as nginx users expect).
#[derive(Debug, Clone)]
pub struct ClientLimits {
    /// A request head must arrive within this from its first byte (or, for a
    /// connection's first request, from the accept): nginx `client_header_timeout`.
    pub header_timeout: Duration,
    /// A connection with no request in flight is closed after this: nginx
    /// `keepalive_timeout`; for h2c, no stream open (GOAWAY).
    pub keepalive_timeout: Duration,
    /// Open client connections per replica; more are refused with a 503.
    pub max_connections: usize,
    /// The most bytes of a request head (request line included): 431 beyond.
    pub max_header_size: usize,
    /// The most header lines of a request: 431 beyond.
    pub max_headers: usize,
    /// h2: concurrent streams per connection (`SETTINGS_MAX_CONCURRENT_STREAMS`).
    pub h2_max_concurrent_streams: u32,
    /// h2: the most bytes of a header list, CONTINUATION frames included.
    pub h2_max_header_list_size: u32,
    /// h2: streams the client may reset before they are accepted before GOAWAY (rapid reset).
    pub h2_max_pending_accept_reset_streams: usize,
    /// h2: streams this side may reset for the client's errors before GOAWAY.
    pub h2_max_local_error_reset_streams: usize,
    /// How long requests in flight may take to finish on shutdown.
    pub drain_timeout: Duration,
}

impl Default for ClientLimits {
    fn default() -> Self {
        ClientLimits {
            header_timeout: Duration::from_secs(60),
            keepalive_timeout: Duration::from_secs(75),
            max_connections: 10_000,
            max_header_size: 32 * 1024,
            max_headers: 100,
            h2_max_concurrent_streams: 128,
            h2_max_header_list_size: 32 * 1024,
            h2_max_pending_accept_reset_streams: 20,
            h2_max_local_error_reset_streams: 1024,
            drain_timeout: Duration::from_secs(10),
        }
    }
}

/// Open client connections of the replica (one per process), all workers
/// together: what `--max-connections` caps.
static OPEN: AtomicUsize = AtomicUsize::new(0);

/// The client connections open now (the `switchyard_client_connections` gauge).
pub fn open_connections() -> usize {
    OPEN.load(Ordering::Relaxed)
}

/// What the workers of a replica share: the limits.
#[derive(Debug)]
pub struct Clients {
    pub limits: ClientLimits,
}

impl Clients {
    pub fn new(limits: ClientLimits) -> Arc<Self> {
        Arc::new(Clients { limits })
    }

    /// Counts a new connection in, unless the replica is at `--max-connections`.
    fn admit(&self) -> Option<Admitted> {
        if OPEN.fetch_add(1, Ordering::AcqRel) >= self.limits.max_connections {
            OPEN.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(Admitted)
    }
}

/// An open client connection, counted until dropped.
struct Admitted;

impl Drop for Admitted {
    fn drop(&mut self) {
        OPEN.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Serves the proxy on `listener` until `shutdown` turns true, then drains
/// for up to `--drain-timeout`.
pub async fn serve(
    listener: TcpListener,
    proxy: Arc<Proxy>,
    clients: Arc<Clients>,
    shutdown: watch::Receiver<bool>,
) {
    accept_loop(listener, proxy, clients, None, shutdown).await;
}

/// Serves the proxy over TLS on `listener` (`--tls-listen`), as [`serve`]
/// does in the clear: the same limits, clocks and drain.
pub async fn serve_tls(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    proxy: Arc<Proxy>,
    clients: Arc<Clients>,
    shutdown: watch::Receiver<bool>,
) {
    accept_loop(listener, proxy, clients, Some(acceptor), shutdown).await;
}

async fn accept_loop(
    listener: TcpListener,
    proxy: Arc<Proxy>,
    clients: Arc<Clients>,
    tls: Option<TlsAcceptor>,
    mut shutdown: watch::Receiver<bool>,
) {
    let builders = Arc::new(Builders::new(&clients.limits));
    let connections = TaskTracker::new();
    let tunnels = Tunnels {
        tracker: TaskTracker::new(),
        close: CancellationToken::new(),
    };
    let worker = Worker {
        proxy,
        clients,
        builders,
        tunnels,
        drain: Arc::default(),
        tls,
    };
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = crate::stopped(&mut shutdown) => break,
        };
        match accepted {
            Ok((stream, peer)) => spawn_connection(&connections, stream, peer, &worker),
            Err(error) => {
                // Out of file descriptors and the like: wait a little rather than spin.
                warn!(%error, "Accept failed");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    worker.drain.start();
    // What the kernel already queued is served (one request each) rather than
    // reset when the listener closes.
    for (stream, peer) in queued(listener) {
        spawn_connection(&connections, stream, peer, &worker);
    }
    connections.close();
    let tunnels = &worker.tunnels;
    tunnels.tracker.close();
    info!(
        connections = connections.len(),
        tunnels = tunnels.tracker.len(),
        "Draining connections"
    );
    let grace = worker.clients.limits.drain_timeout;
    let drained = async {
        connections.wait().await;
        tunnels.tracker.wait().await;
    };
    if tokio::time::timeout(grace, drained).await.is_err() {
        warn!(
            ?grace,
            tunnels = tunnels.tracker.len(),
            "Drain timeout over; closing the remaining connections and tunnels"
        );
    }
    tunnels.close.cancel();
    // Each tunnel ends at its next poll; the connections end with the runtime.
    drop(tokio::time::timeout(Duration::from_secs(1), tunnels.tracker.wait()).await);
}

/// What every connection of a worker shares.
struct Worker {
    proxy: Arc<Proxy>,
    clients: Arc<Clients>,
    builders: Arc<Builders>,
    tunnels: Tunnels,
    /// What wakes the connections when the drain starts.
    drain: Arc<Drain>,
    /// The TLS listener's acceptor; `None` on the plain listener.
    tls: Option<TlsAcceptor>,
}

/// Spawns the task of an accepted connection (one task type per listener
/// kind, so a plain connection's task is no larger for TLS being there).
fn spawn_connection(
    connections: &TaskTracker,
    stream: TcpStream,
    peer: std::net::SocketAddr,
    worker: &Worker,
) {
    match &worker.tls {
        None => {
            if let Some(serving) = serve_stream(stream, peer, worker, first_bytes) {
                connections.spawn(serving);
            }
        }
        Some(acceptor) => {
            let acceptor = acceptor.clone();
            let handshake = move |stream, peer, timeout| async move {
                tls_first_bytes(stream, peer, &acceptor, timeout).await
            };
            if let Some(serving) = serve_stream(stream, peer, worker, handshake) {
                connections.spawn(serving);
            }
        }
    }
}

/// Takes the connections in the listener's accept queue and closes it.
/// Straight `accept(2)` calls until the queue is empty: tokio's `accept` would
/// not try while its readiness event for the latest ones is still unseen.
fn queued(listener: TcpListener) -> Vec<(TcpStream, std::net::SocketAddr)> {
    let mut queued = Vec::new();
    // Non-blocking (as `into_std` leaves it, made sure): an empty queue ends the loop.
    let listener = match listener
        .into_std()
        .and_then(|listener| listener.set_nonblocking(true).map(|()| listener))
    {
        Ok(listener) => listener,
        Err(error) => {
            warn!(%error, "Cannot take the queued connections");
            return queued;
        }
    };
    // At most a full backlog (see `bind_workers`): clients still arriving
    // meanwhile do not keep the drain from starting.
    while queued.len() < BACKLOG as usize
        && let Ok((stream, peer)) = listener.accept()
    {
        // A socket accepted from a non-blocking listener is blocking.
        let stream = stream
            .set_nonblocking(true)
            .and_then(|()| TcpStream::from_std(stream));
        match stream {
            Ok(stream) => queued.push((stream, peer)),
            Err(error) => debug!(%error, "A queued connection failed"),
        }
    }
    queued
}

/// Counts a new connection in (`None`: refused, `--max-connections`) and
/// makes what its requests share.
fn admit(
    stream: &TcpStream,
    peer: std::net::SocketAddr,
    worker: &Worker,
) -> Option<(Admitted, Arc<Client>)> {
    let Some(admitted) = worker.clients.admit() else {
        metrics::client_limit(ClientLimit::MaxConnections);
        debug!(client.addr = %peer, "Refusing a connection: --max-connections reached");
        // One non-blocking write; whatever the socket takes. Then closed
        // (on the TLS listener the client reads it as a failed handshake).
        drop(stream.try_write(REFUSED));
        return None;
    };
    // TCP_NODELAY is inherited from the listener (see `bind_workers`).
    let client = Arc::new(Client {
        // Written once per connection, and only for the access log.
        peer: access_log::enabled().then(|| Arc::from(peer.to_string())),
        proxy: worker.proxy.clone(),
        info: ClientInfo {
            ip: ip_header(peer.ip()),
            https: worker.tls.is_some(),
        },
        tunnels: worker.tunnels.clone(),
    });
    Some((admitted, client))
}

/// A client's address as `X-Forwarded-For` gets it. IPv4, every client of a
/// benchmark and most of the others, is written digit by digit: `Display`
/// goes through the formatter's padding machinery, once per connection.
fn ip_header(ip: std::net::IpAddr) -> HeaderValue {
    let text = match ip {
        std::net::IpAddr::V4(v4) => {
            let mut text = Vec::with_capacity(15);
            for (at, octet) in v4.octets().into_iter().enumerate() {
                if at > 0 {
                    text.push(b'.');
                }
                if octet >= 100 {
                    text.push(b'0' + octet / 100);
                }
                if octet >= 10 {
                    text.push(b'0' + octet / 10 % 10);
                }
                text.push(b'0' + octet % 10);
            }
            text
        }
        std::net::IpAddr::V6(v6) => v6.to_string().into_bytes(),
    };
    HeaderValue::from_maybe_shared(bytes::Bytes::from(text))
        .unwrap_or_else(|_| HeaderValue::from_static("unknown"))
}

/// The task serving one accepted connection, or `None` when it was refused:
/// `first` reads what tells its protocol (the first bytes; on the TLS
/// listener, the handshake first) within the header clock. Each listener
/// kind gets a task type of its own, so a plain connection's task is no
/// larger for TLS being there.
fn serve_stream<S, F, Fut>(
    stream: TcpStream,
    peer: std::net::SocketAddr,
    worker: &Worker,
    first: F,
) -> Option<impl std::future::Future<Output = ()> + Send + 'static + use<S, F, Fut>>
where
    S: ClientStream,
    F: FnOnce(TcpStream, std::net::SocketAddr, Duration) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Option<(Protocol, ClientIo<S>)>> + Send,
{
    let (admitted, client) = admit(&stream, peer, worker)?;
    let activity = Activity::new();
    let (builders, clients, drain) = (
        worker.builders.clone(),
        worker.clients.clone(),
        worker.drain.clone(),
    );
    Some(async move {
        let _admitted = admitted;
        let limits = &clients.limits;
        let Some((protocol, io)) = first(stream, peer, limits.header_timeout).await else {
            return;
        };
        let connection = Connection {
            client,
            activity,
            peer,
            drain,
        };
        // Off by default (debug): a disabled span is one level check here
        // and one per poll.
        let span = debug_span!("connection", client.addr = %peer);
        // Boxed: the task is moved a few times as it is spawned and ended;
        // what it waits on first (the first bytes) is small.
        Box::pin(serve_io(io, protocol, connection, &builders, limits))
            .instrument(span)
            .await;
    })
}

/// What one served connection is: its client, its clocks, its worker's drain.
struct Connection {
    client: Arc<Client>,
    activity: Arc<Activity>,
    peer: std::net::SocketAddr,
    drain: Arc<Drain>,
}

/// Serves HTTP/1.1 or h2 on a connection whose protocol is known, to its end.
async fn serve_io<S: ClientStream>(
    io: ClientIo<S>,
    protocol: Protocol,
    connection: Connection,
    builders: &Builders,
    limits: &ClientLimits,
) {
    let Connection {
        client,
        activity,
        peer,
        drain,
    } = connection;
    let serve_request = {
        let activity = activity.clone();
        move |request| serve_request(&client, &activity, request)
    };
    let io = TokioIo::new(io.with_activity(activity.clone()));
    let served = match protocol {
        Protocol::Http1 => {
            let service = service_fn(serve_request);
            let conn = builders.http1.serve_connection(io, service).with_upgrades();
            connection::drive(
                conn,
                |conn| conn.graceful_shutdown(),
                &activity,
                limits,
                protocol,
                drain,
            )
            .await
        }
        Protocol::Http2 => {
            // Boxed: hyper moves each stream's future into a task of its
            // own, a few times over; a box is moved as a pointer.
            let service = service_fn(move |request| Box::pin(serve_request(request)));
            let conn = builders.http2.serve_connection(io, service);
            // Boxed too: an h2 connection's state is twice an h1 one's, and
            // would make every connection's future as large.
            Box::pin(connection::drive(
                conn,
                |conn| conn.graceful_shutdown(),
                &activity,
                limits,
                protocol,
                drain,
            ))
            .await
        }
    };
    if let Err(error) = served {
        count_error(&error, protocol);
        debug!(client.addr = %peer, %error, "Connection ended with an error");
    }
}

/// What the requests of one client connection share.
struct Client {
    /// The client's address and port as the access log writes it (`None`: off).
    peer: Option<Arc<str>>,
    proxy: Arc<Proxy>,
    info: ClientInfo,
    tunnels: Tunnels,
}

/// Serves one request; a member that switched protocols gets a tunnel to
/// the client's connection once hyper has upgraded it. The request counts as
/// in flight on its connection until its response body is sent.
fn serve_request(
    client: &Arc<Client>,
    activity: &Arc<Activity>,
    mut request: http::Request<hyper::body::Incoming>,
) -> impl Future<Output = Result<http::Response<Tracked<ProxyBody>>, Infallible>> + Send + use<> {
    if request.version() == http::Version::HTTP_11
        && request
            .headers()
            .contains_key(http::header::TRANSFER_ENCODING)
        && activity.head_had_content_length()
    {
        request.extensions_mut().insert(BothLengths);
    }
    let busy = activity.start_request();
    let on_upgrade = request.extensions_mut().remove::<OnUpgrade>();
    let client = client.clone();
    let started_ms = activity.request_start_ms(request.version() < http::Version::HTTP_2);
    let mut line = Line::start(&request, client.peer.as_ref());
    // Its route, cluster and member are recorded by the proxy when known.
    let span = debug_span!(
        "request",
        http.method = %request.method(),
        http.target = %request.uri(),
        route.name = Empty,
        cluster.name = Empty,
        member.id = Empty,
        http.status_code = Empty,
    );
    async move {
        let mut served = Served::new(line.is_some());
        // Instrumented only when the span is on: wrapping the request's
        // future moves all of it once more, which a disabled span must not cost.
        let mut response = if span.is_disabled() {
            client
                .proxy
                .handle(request, &client.info, &mut served)
                .await
        } else {
            client
                .proxy
                .handle(request, &client.info, &mut served)
                .instrument(span.clone())
                .await
        };
        if !span.is_disabled() {
            span.record("http.status_code", response.status().as_u16());
        }
        if let (Some(slot), Some(on_upgrade)) =
            (response.extensions_mut().remove::<TunnelSlot>(), on_upgrade)
            && let Some(member) = slot.take()
        {
            client.tunnels.open(on_upgrade, member);
        }
        let status = response.status();
        if let Some(line) = &mut line {
            let refusal = response.extensions_mut().remove::<Refusal>();
            line.answered(status, &mut served, refusal);
        }
        let done = Done {
            route: served.route,
            status,
            started_ms,
            line,
        };
        Ok(response.map(|body| Tracked { body, busy, done }))
    }
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
                    let ClientIo { prefix, stream, .. } = parts.io.into_inner();
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

/// Reads a new connection's first bytes (within the header clock) to tell
/// its protocol; `None` when it sent nothing or failed.
async fn first_bytes(
    stream: TcpStream,
    peer: std::net::SocketAddr,
    timeout: Duration,
) -> Option<(Protocol, ClientIo)> {
    sniff_by(stream, peer, tokio::time::Instant::now() + timeout).await
}

/// [`sniff`] until `deadline` (the header clock); failures logged, the
/// clock's expiry counted.
async fn sniff_by<S: ClientStream>(
    stream: S,
    peer: std::net::SocketAddr,
    deadline: tokio::time::Instant,
) -> Option<(Protocol, ClientIo<S>)> {
    match tokio::time::timeout_at(deadline, sniff(stream)).await {
        Ok(Ok(sniffed)) => sniffed,
        Ok(Err(error)) => {
            debug!(client.addr = %peer, %error, "Reading the first bytes failed");
            None
        }
        Err(_) => {
            metrics::client_limit(ClientLimit::HeaderTimeout);
            debug!(client.addr = %peer, "Client sent nothing in time");
            None
        }
    }
}

/// The TLS handshake and then, as [`first_bytes`] does, the first bytes,
/// all within the header clock from the accept: a handshake that does not
/// finish in time is cut and counted (`tls_handshake_timeout`). ALPN `h2`
/// is h2 at once; otherwise the first bytes tell (HTTP/1.1, or h2 with
/// prior knowledge from a client that offered no ALPN).
async fn tls_first_bytes(
    stream: TcpStream,
    peer: std::net::SocketAddr,
    acceptor: &TlsAcceptor,
    timeout: Duration,
) -> Option<(Protocol, ClientIo<TlsStream<TcpStream>>)> {
    let deadline = tokio::time::Instant::now() + timeout;
    let stream = match tokio::time::timeout_at(deadline, acceptor.accept(stream)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(error)) => {
            tls::stats().handshake_failed();
            debug!(client.addr = %peer, %error, "TLS handshake failed");
            return None;
        }
        Err(_) => {
            metrics::client_limit(ClientLimit::TlsHandshakeTimeout);
            debug!(client.addr = %peer, "TLS handshake not finished in time");
            return None;
        }
    };
    if stream.get_ref().1.alpn_protocol() == Some(tls::ALPN_H2) {
        return Some((Protocol::Http2, ClientIo::new(Bytes::new(), stream)));
    }
    sniff_by(stream, peer, deadline).await
}

/// Counts a connection that hyper ended for the client's fault.
fn count_error(error: &hyper::Error, protocol: Protocol) {
    let limit = match protocol {
        _ if error.is_parse_too_large() => ClientLimit::HeadTooLarge,
        _ if error.is_parse() => ClientLimit::Malformed,
        Protocol::Http2 => ClientLimit::H2Protocol,
        Protocol::Http1 => return,
    };
    metrics::client_limit(limit);
}

/// The connection builders of one worker, made once.
struct Builders {
    http1: http1::Builder,
    http2: http2::Builder<TokioExecutor>,
}

impl Builders {
    fn new(limits: &ClientLimits) -> Self {
        let mut http1 = http1::Builder::new();
        // The header clock is the connection's own (see `connection`).
        http1
            .timer(TokioTimer::new())
            .header_read_timeout(None)
            .max_headers(limits.max_headers)
            .max_header_size(limits.max_header_size)
            .max_buf_size(limits.max_header_size.max(64 * 1024));
        let mut http2 = http2::Builder::new(TokioExecutor::new());
        http2
            .timer(TokioTimer::new())
            .max_concurrent_streams(limits.h2_max_concurrent_streams)
            .max_header_list_size(limits.h2_max_header_list_size)
            .max_pending_accept_reset_streams(limits.h2_max_pending_accept_reset_streams)
            .max_local_error_reset_streams(limits.h2_max_local_error_reset_streams)
            .enable_connect_protocol();
        Builders { http1, http2 }
    }
}

/// Which protocol a client connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Protocol {
    Http1,
    /// h2c with prior knowledge: the connection opens with the HTTP/2 preface.
    Http2,
}

/// Tells HTTP/1.1 from h2c by the first bytes, read in one go (as large a
/// read as the request usually is, so a new connection costs no extra read).
/// `None`: the client closed before sending anything.
async fn sniff<S: ClientStream>(mut stream: S) -> std::io::Result<Option<(Protocol, ClientIo<S>)>> {
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
    Ok(Some((protocol, ClientIo::new(first.freeze(), stream))))
}

/// The stream under a client connection: a socket, or TLS over one.
pub(crate) trait ClientStream: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    /// Whether [`AsyncWrite::poll_shutdown`] is passed on: TLS sends its
    /// `close_notify` so; a socket is closed by the drop, which sends the
    /// same FIN without a `shutdown(2)` call first.
    const SHUTDOWN: bool;
}

impl ClientStream for TcpStream {
    const SHUTDOWN: bool = false;
}

impl ClientStream for TlsStream<TcpStream> {
    const SHUTDOWN: bool = true;
}

/// A client connection: the bytes [`sniff`] read, then the stream.
///
/// On a socket its shutdown is a no-op (see [`ClientStream::SHUTDOWN`]).
struct ClientIo<S = TcpStream> {
    prefix: Bytes,
    stream: S,
    /// Told of reads: the first byte of a request head starts its clock.
    activity: Option<Arc<Activity>>,
    scan: HeadScan,
}

impl<S> ClientIo<S> {
    fn new(prefix: Bytes, stream: S) -> Self {
        ClientIo {
            prefix,
            stream,
            activity: None,
            scan: HeadScan::default(),
        }
    }

    fn with_activity(mut self, activity: Arc<Activity>) -> Self {
        self.activity = Some(activity);
        self
    }
}

impl<S: ClientStream> AsyncRead for ClientIo<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = if this.prefix.is_empty() {
            Pin::new(&mut this.stream).poll_read(cx, buf)
        } else {
            let chunk = if buf.remaining() >= this.prefix.len() {
                // Taken whole, so the buffer is freed as soon as it is used.
                std::mem::take(&mut this.prefix)
            } else {
                this.prefix.split_to(buf.remaining())
            };
            buf.put_slice(&chunk);
            Poll::Ready(Ok(()))
        };
        if let Some(activity) = &this.activity
            && let Some(read) = buf.filled().get(before..)
            && !read.is_empty()
        {
            activity.read(&mut this.scan, read);
        }
        polled
    }
}

impl<S: ClientStream> AsyncWrite for ClientIo<S> {
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

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        if S::SHUTDOWN {
            Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
        } else {
            Poll::Ready(Ok(()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_addresses_are_written_as_display_writes_them() {
        for ip in [
            "0.0.0.0",
            "127.0.0.1",
            "10.20.30.40",
            "255.255.255.255",
            "1.2.3.100",
        ] {
            let ip: std::net::IpAddr = ip.parse().unwrap();
            assert_eq!(ip_header(ip).to_str().unwrap(), ip.to_string());
        }
        let v6: std::net::IpAddr = "2001:db8::1".parse().unwrap();
        assert_eq!(ip_header(v6).to_str().unwrap(), "2001:db8::1");
    }
}
