//! HTTP/2 towards members (cluster `protocol` `h2c` or `h2`), with the `h2`
//! crate (hyper's own HTTP/2, used directly: hyper's client hides the peer's
//! `SETTINGS_MAX_CONCURRENT_STREAMS` and queues requests past it).
//!
//! A worker's streams to a member share its connections: at most
//! [`MAX_CONNECTIONS`] per member per worker, another one opened only when
//! every one carries as many streams as the member allows (past the cap, a
//! stream waits in `h2` for one to end: the member's limit is never passed).
//! Each connection is driven by a task of its own, owned by its pool entry:
//! it ends when the member closes the connection, when the entry goes (the
//! member left the tables, so its pool was dropped), or when the connection
//! carried no stream for the pool's idle limit.
//!
//! One exchange is driven by the client request's task, as over HTTP/1.1:
//! the upload is sent (within the stream's flow control) while the answer is
//! read, under the same three clocks; trailers are carried both ways. A
//! stream the member refused (`REFUSED_STREAM`) or left unprocessed behind a
//! graceful `GOAWAY` was not written, as RFC 9113 (8.7) says, and may go again.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use h2::client::{Connection, ResponseFuture, SendRequest};
use h2::{Reason, RecvStream, SendStream};
use http::uri::{Authority, Scheme};
use http::{Request, Uri, Version, header};
use http_body::{Body, Frame, SizeHint};
use tokio::sync::{Notify, oneshot};
use tracing::debug;

use crate::upstream::body::UpstreamBody;
use crate::upstream::exchange::{ExchangeError, IdleClock};
use crate::upstream::h1::{Framing, ResponseHead};
use crate::upstream::pool::{self, Pool};
use crate::upstream::tls::MemberStream;
use crate::upstream::{
    ConnectError, Limits, MemberShared, SendError, clock_ms, within_head_timeout,
};

/// The most connections a worker keeps to one HTTP/2 member.
pub const MAX_CONNECTIONS: usize = 4;
/// How many streams a new connection may carry before the member's SETTINGS
/// say (RFC 9113, 6.5.2: no smaller than 100 is recommended); a member that
/// sends no limit keeps this one.
const INITIAL_MAX_STREAMS: usize = 100;

/// A worker's connections to one HTTP/2 member.
#[derive(Debug, Default)]
pub struct H2Conns {
    conns: Mutex<Vec<H2Conn>>,
    /// Connections being opened, counted against [`MAX_CONNECTIONS`].
    connecting: AtomicUsize,
    /// Woken when a connect ends, for the streams that wait on it.
    connected: Notify,
    /// The member's stream limit as its last connection knows it (0: not
    /// known yet): a new connection starts with it, so a burst on it is not
    /// refused for want of the member's SETTINGS.
    learned_max: AtomicUsize,
}

/// One connection, shared by its streams.
#[derive(Debug)]
struct H2Conn {
    send: SendRequest<Bytes>,
    state: Arc<ConnState>,
    /// Dropped with the entry: the connection task ends.
    _close: oneshot::Sender<()>,
}

/// What a connection's streams and its task both know of it.
#[derive(Debug, Default)]
struct ConnState {
    /// Streams in flight (counted from their request to the end of their answer).
    streams: AtomicUsize,
    /// The connection task ended: no new stream goes on it.
    closed: AtomicBool,
    /// The member is closing it (GOAWAY) or it broke: no new stream goes on
    /// it, the ones on it finish, then its task ends.
    draining: AtomicBool,
    /// When (ms on [`clock_ms`]) the last stream ended.
    idle_since_ms: AtomicU64,
}

/// One stream counted on its connection until dropped.
#[derive(Debug)]
struct StreamSlot(Arc<ConnState>);

impl StreamSlot {
    fn new(state: &Arc<ConnState>) -> Self {
        state.streams.fetch_add(1, Ordering::AcqRel);
        StreamSlot(state.clone())
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        if self.0.streams.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle_since_ms.store(clock_ms(), Ordering::Relaxed);
        }
    }
}

/// What the pool offers a new stream.
enum Pick<'a> {
    /// An open connection (reused).
    Stream(SendRequest<Bytes>, StreamSlot),
    /// None with room: open one (the guard counts it as connecting).
    Connect(Connecting<'a>),
    /// None with room, and another stream is opening one: wait for it.
    Wait,
}

/// A connect in progress; dropped when it ended, well or not.
struct Connecting<'a>(&'a H2Conns);

impl Drop for Connecting<'_> {
    fn drop(&mut self) {
        self.0.connecting.fetch_sub(1, Ordering::AcqRel);
        self.0.connected.notify_waiters();
    }
}

impl H2Conns {
    /// A connection with room for one more stream; the least busy one when
    /// there are already [`MAX_CONNECTIONS`]; else, open one or wait for the
    /// one being opened.
    fn pick(&self) -> Pick<'_> {
        let mut conns = self.conns.lock().unwrap_or_else(|e| e.into_inner());
        conns.retain(|c| !c.state.closed.load(Ordering::Acquire));
        if let Some(last) = conns.last() {
            self.learned_max
                .store(last.send.current_max_send_streams(), Ordering::Relaxed);
        }
        let usable = |c: &&H2Conn| !c.state.draining.load(Ordering::Acquire);
        let room = conns
            .iter()
            .filter(usable)
            .find(|c| c.state.streams.load(Ordering::Acquire) < c.send.current_max_send_streams());
        if let Some(conn) = room {
            return Pick::Stream(conn.send.clone(), StreamSlot::new(&conn.state));
        }
        // One connect at a time: a burst of streams shares the first connection.
        if self.connecting.load(Ordering::Acquire) > 0 {
            return Pick::Wait;
        }
        if conns.iter().filter(usable).count() < MAX_CONNECTIONS {
            self.connecting.fetch_add(1, Ordering::AcqRel);
            return Pick::Connect(Connecting(self));
        }
        match conns
            .iter()
            .filter(usable)
            .min_by_key(|c| c.state.streams.load(Ordering::Acquire))
        {
            Some(conn) => Pick::Stream(conn.send.clone(), StreamSlot::new(&conn.state)),
            None => Pick::Wait,
        }
    }

    /// Keeps a new connection for the streams to come; the first stream's slot.
    fn add(&self, conn: H2Conn) -> StreamSlot {
        let slot = StreamSlot::new(&conn.state);
        self.conns
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(conn);
        slot
    }

    /// How many connections the worker has open to the member.
    pub fn open(&self) -> usize {
        self.conns.lock().map_or(0, |conns| {
            conns
                .iter()
                .filter(|c| !c.state.closed.load(Ordering::Acquire))
                .count()
        })
    }
}

/// A stream to send on, from the pool or a new connection; `true`: a pooled one.
async fn stream_to(
    member: &MemberShared,
    conns: &H2Conns,
) -> Result<(SendRequest<Bytes>, StreamSlot, bool), ConnectError> {
    let limit = member.connect_timeout();
    loop {
        let connected = conns.connected.notified();
        tokio::pin!(connected);
        connected.as_mut().enable();
        match conns.pick() {
            Pick::Stream(send, slot) => return Ok((send, slot, true)),
            Pick::Connect(connecting) => {
                let conn = open(member, conns).await?;
                let send = conn.send.clone();
                let slot = conns.add(conn);
                drop(connecting);
                return Ok((send, slot, false));
            }
            // Bounded: the connect waited for is itself within the connect timeout.
            Pick::Wait => {
                if tokio::time::timeout(limit, connected).await.is_err() {
                    return Err(ConnectError::Timeout(limit));
                }
            }
        }
    }
}

/// Opens a connection to `member` and spawns the task that drives it.
async fn open(member: &MemberShared, conns: &H2Conns) -> Result<H2Conn, ConnectError> {
    let stream = member.connect_stream().await?;
    let limit = member.connect_timeout();
    let initial = match conns.learned_max.load(Ordering::Relaxed) {
        0 => INITIAL_MAX_STREAMS,
        learned => learned,
    };
    let handshake = h2::client::Builder::new()
        .initial_max_send_streams(initial)
        .handshake::<_, Bytes>(stream);
    let (send, connection) = tokio::time::timeout(limit, handshake)
        .await
        .map_err(|_| ConnectError::Timeout(limit))?
        .map_err(|e| ConnectError::Io(std::io::Error::other(format!("HTTP/2 handshake: {e}"))))?;
    let state = Arc::new(ConnState::default());
    state.idle_since_ms.store(clock_ms(), Ordering::Relaxed);
    let (close, closed) = oneshot::channel();
    // Owned by the pool entry (`close`), ended by the member, the entry or the idle clock.
    tokio::spawn(drive(connection, state.clone(), closed, member.id.clone()));
    Ok(H2Conn {
        send,
        state,
        _close: close,
    })
}

/// Drives one connection until the member closes it, its pool entry goes, or
/// it carried no stream for the pool's idle limit.
async fn drive(
    connection: Connection<MemberStream, Bytes>,
    state: Arc<ConnState>,
    mut closed: oneshot::Receiver<()>,
    member: String,
) {
    // Counted open while the connection is driven (`switchyard_upstream_connections`).
    let _open = crate::admin::metrics::MemberConn::open();
    tokio::pin!(connection);
    let idle = pool::idle_timeout();
    let idle_ms = u64::try_from(idle.as_millis()).unwrap_or(u64::MAX);
    let mut tick = tokio::time::interval((idle / 4).max(Duration::from_millis(50)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            ended = &mut connection => {
                if let Err(error) = ended {
                    debug!(member.id = %member, %error, "HTTP/2 connection to the member ended");
                }
                break;
            }
            _ = &mut closed => break,
            _ = tick.tick() => {
                let since = state.idle_since_ms.load(Ordering::Relaxed);
                let idle_too_long = clock_ms().saturating_sub(since) >= idle_ms;
                if state.streams.load(Ordering::Acquire) == 0
                    && (idle_too_long || state.draining.load(Ordering::Acquire))
                {
                    debug!(member.id = %member, "HTTP/2 connection to the member closed: idle or drained");
                    break;
                }
            }
        }
    }
    state.closed.store(true, Ordering::Release);
}

/// Sends `request` (origin-form URI, `Host` set) to an HTTP/2 member on a
/// shared connection and reads the response head within `limits`, as
/// [`MemberShared::send`] does over HTTP/1.1; never retries itself.
pub async fn send(
    member: &MemberShared,
    request: Request<UpstreamBody>,
    limits: &Limits<'_>,
) -> Result<(ResponseHead, H2Exchange), SendError> {
    let pool = member.pool();
    let (parts, body) = request.into_parts();
    let (sender, slot, pooled) = match stream_to(member, &pool.h2).await {
        Ok(stream) => stream,
        Err(error) => {
            return Err(SendError::Connect {
                request: Box::new(Request::from_parts(parts, body)),
                error,
            });
        }
    };
    // A stream that failed for its connection's sake, not the member's, goes
    // once more to the same member (`reused`), then elsewhere.
    let again_here = !limits.fresh;
    let eos = body.is_end_stream();
    let opened = async {
        let mut sender = sender.ready().await?;
        sender.send_request(head_for(member, &parts), eos)
    };
    let (response, stream) = match opened.await {
        Ok(opened) => opened,
        Err(error) => {
            // Nothing of the request went out.
            drain_after(&slot, &error);
            return Err(SendError::Exchange {
                error: ExchangeError::Stream(error),
                written: false,
                answered: false,
                reused: pooled && again_here,
                replay: Some(Box::new(Request::from_parts(parts, body))),
            });
        }
    };
    let mut exchange = H2Exchange {
        response: Some(response),
        upload: Upload {
            stream: (!eos).then_some(stream),
            body,
            pending: None,
            touched: false,
        },
        recv: None,
        trailers_next: false,
        done: false,
        slot: Some(slot),
        _pool: pool.clone(),
        idle: IdleClock::new(limits.idle),
        in_flight: None,
    };
    let head = std::future::poll_fn(|cx| exchange.poll_head(cx));
    let error = match within_head_timeout(head, limits).await {
        Ok(head) => return Ok((head, exchange)),
        Err(error) => error,
    };
    let unprocessed = matches!(&error, ExchangeError::Stream(e) if unprocessed(e));
    if let (ExchangeError::Stream(error), Some(slot)) = (&error, &exchange.slot) {
        drain_after(slot, error);
    }
    let replay = exchange
        .into_replay()
        .map(|body| Box::new(Request::from_parts(parts, body)));
    Err(SendError::Exchange {
        error,
        written: !unprocessed,
        answered: false,
        reused: unprocessed && again_here,
        replay,
    })
}

/// After `error`, a connection the member is closing (GOAWAY) or that broke
/// takes no new stream; the ones on it may still finish.
fn drain_after(slot: &StreamSlot, error: &h2::Error) {
    if error.is_go_away() || error.is_io() {
        slot.0.draining.store(true, Ordering::Release);
    }
}

/// Whether the member said it did not process the stream: `REFUSED_STREAM`,
/// or a graceful `GOAWAY` that left it out (RFC 9113, 8.7).
fn unprocessed(error: &h2::Error) -> bool {
    error.is_remote()
        && match error.reason() {
            Some(Reason::REFUSED_STREAM) => true,
            Some(Reason::NO_ERROR) => error.is_go_away(),
            _ => false,
        }
}

/// The request head as HTTP/2 carries it: `:scheme` and `:authority` (the
/// `Host` the proxy chose) in the URI, no `Host` line.
fn head_for(member: &MemberShared, parts: &http::request::Parts) -> Request<()> {
    let mut head = Request::new(());
    *head.method_mut() = parts.method.clone();
    *head.version_mut() = Version::HTTP_2;
    let mut headers = parts.headers.clone();
    let authority = headers
        .remove(header::HOST)
        .and_then(|host| Authority::try_from(host.as_bytes()).ok())
        .unwrap_or_else(|| member.authority.clone());
    let mut uri = http::uri::Parts::default();
    uri.scheme = Some(if member.scheme == Scheme::HTTPS {
        Scheme::HTTPS
    } else {
        Scheme::HTTP
    });
    uri.authority = Some(authority);
    uri.path_and_query = parts.uri.path_and_query().cloned();
    *head.uri_mut() = Uri::from_parts(uri).unwrap_or_else(|_| parts.uri.clone());
    *head.headers_mut() = headers;
    head
}

/// One stream to an HTTP/2 member; once the head is in, its response body.
#[derive(Debug)]
pub struct H2Exchange {
    /// Until the response head came.
    response: Option<ResponseFuture>,
    upload: Upload,
    /// The response body, after the head.
    recv: Option<RecvStream>,
    /// The data is over; the trailers (if any) come next.
    trailers_next: bool,
    done: bool,
    /// Counts the stream on its connection until the answer is over.
    slot: Option<StreamSlot>,
    /// Keeps the member's connections (and their tasks) while the stream lives.
    _pool: Arc<Pool>,
    /// No byte either way for the cluster's idle timeout ends the body.
    idle: IdleClock,
    /// Counts the request as in flight to its member until the answer is
    /// over (`least_request` clusters only).
    in_flight: Option<crate::upstream::InFlight>,
}

/// The request body on its way out, within the stream's flow control.
#[derive(Debug)]
struct Upload {
    /// `None` once the request was sent whole (or given up).
    stream: Option<SendStream<Bytes>>,
    /// Kept to the end, to be sent again if need be.
    body: UpstreamBody,
    /// Data taken from the body, waiting for the member's window.
    pending: Option<Bytes>,
    /// Whether a frame of the body was taken (then it must be rewound to go again).
    touched: bool,
}

impl Upload {
    /// Sends what the body has and the member's window takes; `Err` only for
    /// a failed client body (the stream is then reset). A member that reset
    /// the stream or closed the window for good just ends the upload: its
    /// answer says the rest.
    fn drive(&mut self, cx: &mut Context<'_>, idle: &mut IdleClock) -> Result<(), ExchangeError> {
        loop {
            let Some(stream) = self.stream.as_mut() else {
                return Ok(());
            };
            if stream.poll_reset(cx).is_ready() {
                self.stream = None;
                return Ok(());
            }
            if let Some(data) = self.pending.as_mut() {
                if stream.capacity() == 0 {
                    stream.reserve_capacity(data.len());
                    // Ready once per change of the window: polled again
                    // until there is room, or pending with the waker set.
                    match stream.poll_capacity(cx) {
                        Poll::Ready(Some(Ok(_))) => continue,
                        Poll::Ready(Some(Err(_)) | None) => {
                            self.stream = None;
                            return Ok(());
                        }
                        Poll::Pending => return Ok(()),
                    }
                }
                let n = stream.capacity().min(data.len());
                let chunk = data.split_to(n);
                if data.is_empty() {
                    self.pending = None;
                }
                idle.moved = true;
                if stream.send_data(chunk, false).is_err() {
                    self.stream = None;
                    return Ok(());
                }
                continue;
            }
            match Pin::new(&mut self.body).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    self.touched = true;
                    match frame.into_data() {
                        Ok(data) if data.is_empty() => {}
                        Ok(data) => self.pending = Some(data),
                        Err(frame) => {
                            if let Ok(trailers) = frame.into_trailers() {
                                // Trailers end the stream.
                                let _sent = stream.send_trailers(trailers);
                                self.stream = None;
                            }
                        }
                    }
                }
                Poll::Ready(None) => {
                    let _sent = stream.send_data(Bytes::new(), true);
                    self.stream = None;
                }
                Poll::Ready(Some(Err(error))) => {
                    stream.send_reset(Reason::CANCEL);
                    self.stream = None;
                    return Err(ExchangeError::Client(error));
                }
                Poll::Pending => return Ok(()),
            }
        }
    }
}

impl H2Exchange {
    /// Keeps `in_flight` until the answer is over.
    pub fn hold(&mut self, in_flight: Option<crate::upstream::InFlight>) {
        self.in_flight = in_flight;
    }

    /// Sends the request and waits for the response head.
    fn poll_head(&mut self, cx: &mut Context<'_>) -> Poll<Result<ResponseHead, ExchangeError>> {
        self.upload.drive(cx, &mut self.idle)?;
        let Some(response) = self.response.as_mut() else {
            return Poll::Ready(Err(ExchangeError::Closed));
        };
        let polled = ready!(Pin::new(response).poll(cx));
        self.response = None;
        let (parts, recv) = polled.map_err(ExchangeError::Stream)?.into_parts();
        if recv.is_end_stream() {
            // A head that ends the stream (gRPC's trailers-only answer).
            self.finish();
        } else {
            self.recv = Some(recv);
        }
        Poll::Ready(Ok(ResponseHead {
            status: parts.status,
            version: Version::HTTP_2,
            headers: parts.headers,
            framing: Framing::UntilClose,
            keep_alive: true,
        }))
    }

    /// The request body to send again: as it was if none of it was taken,
    /// started over if its replay buffer holds what was sent, else none.
    pub fn into_replay(mut self) -> Option<UpstreamBody> {
        self.upload.stream = None;
        let mut body = std::mem::replace(&mut self.upload.body, UpstreamBody::Empty);
        (!self.upload.touched || body.rewind()).then_some(body)
    }

    /// Whether [`H2Exchange::into_replay`] would give the body back.
    pub fn replayable(&self) -> bool {
        !self.upload.touched || self.upload.body.can_rewind()
    }

    /// The answer is over: the stream leaves its connection's count.
    fn finish(&mut self) {
        self.done = true;
        self.recv = None;
        self.upload.stream = None;
        self.slot = None;
    }

    fn poll_body(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ExchangeError>>> {
        if self.done {
            return Poll::Ready(None);
        }
        if let Err(error) = self.upload.drive(cx, &mut self.idle) {
            self.finish();
            return Poll::Ready(Some(Err(error)));
        }
        let Some(recv) = self.recv.as_mut() else {
            return Poll::Ready(None);
        };
        if !self.trailers_next {
            match recv.poll_data(cx) {
                Poll::Ready(Some(Ok(data))) => {
                    // The window opens again as the client takes the data.
                    let _released = recv.flow_control().release_capacity(data.len());
                    self.idle.moved = true;
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Poll::Ready(Some(Err(error))) => {
                    self.finish();
                    return Poll::Ready(Some(Err(ExchangeError::Stream(error))));
                }
                Poll::Ready(None) => self.trailers_next = true,
                Poll::Pending => return self.idle_or_pending(cx),
            }
        }
        match recv.poll_trailers(cx) {
            Poll::Ready(Ok(trailers)) => {
                self.finish();
                Poll::Ready(trailers.map(|t| Ok(Frame::trailers(t))))
            }
            Poll::Ready(Err(error)) => {
                self.finish();
                Poll::Ready(Some(Err(ExchangeError::Stream(error))))
            }
            Poll::Pending => self.idle_or_pending(cx),
        }
    }

    /// Nothing to hand out now: pending, or the idle clock's error.
    fn idle_or_pending(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ExchangeError>>> {
        if self.idle.expired(cx) {
            crate::admin::metrics::idle_timeout();
            let limit = self.idle.limit();
            self.finish();
            return Poll::Ready(Some(Err(ExchangeError::Idle(limit))));
        }
        Poll::Pending
    }
}

impl Body for H2Exchange {
    type Data = Bytes;
    type Error = ExchangeError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        self.get_mut().poll_body(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }

    fn size_hint(&self) -> SizeHint {
        if self.done {
            SizeHint::with_exact(0)
        } else {
            SizeHint::default()
        }
    }
}

#[cfg(test)]
mod tests;
