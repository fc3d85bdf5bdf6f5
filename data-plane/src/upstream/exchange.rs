//! One request/response exchange with a member over an HTTP/1.1 connection,
//! driven by the task that serves the client's request: no connection task, no
//! channel between them. The request body is sent while the response is read
//! (a member may answer early), and the response body is handed out straight
//! from the connection's read buffer. A connection goes back to its pool only
//! when both bodies were carried in full and the member keeps it open.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker, ready};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use http::request::Parts;
use http_body::{Body, Frame, SizeHint};
use tokio::io::AsyncWrite;
use tokio::time::Sleep;

use crate::upstream::InFlight;
use crate::upstream::body::{ClientBodyError, UpstreamBody};
use crate::upstream::h1::{
    self, ChunkedDecoder, Decoded, Framing, H1Error, RequestFraming, ResponseHead,
};
use crate::upstream::pool::{self, Pool};
use crate::upstream::tls::MemberStream;

/// Read at least this much at once.
const READ_CHUNK: usize = 8 * 1024;
/// Upload bytes gathered before they are written.
const WRITE_HIGH_WATER: usize = 64 * 1024;

/// An idle or busy connection to a member.
#[derive(Debug)]
pub struct Conn {
    io: MemberStream,
    /// What was read and not used yet.
    buf: BytesMut,
    /// Counted open until dropped (`switchyard_upstream_connections`).
    _open: crate::admin::metrics::MemberConn,
}

/// Why an exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    /// The member closed the connection before answering a byte.
    #[error("the member closed the connection before answering")]
    Closed,
    #[error("reading from the member failed: {0}")]
    Read(std::io::Error),
    #[error("writing to the member failed: {0}")]
    Write(std::io::Error),
    #[error(transparent)]
    Protocol(#[from] H1Error),
    #[error("the member's body ended early")]
    Truncated,
    #[error(transparent)]
    Client(ClientBodyError),
    /// No response head within the (per-try) response timeout.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// No byte either way for the cluster's idle timeout, during the body.
    #[error("the member sent nothing for {0:?}")]
    Idle(Duration),
    /// An HTTP/2 member's stream or connection failed (reset, GOAWAY, protocol error).
    #[error("the member's HTTP/2 stream failed: {0}")]
    Stream(h2::Error),
}

impl Conn {
    pub fn new(io: MemberStream) -> Self {
        Conn {
            io,
            buf: BytesMut::new(),
            _open: crate::admin::metrics::MemberConn::open(),
        }
    }

    /// Whether an idle connection is no good: the member closed it or sent
    /// something unasked. Looks at the readiness the reactor already has; no
    /// system call.
    pub fn is_stale(&self) -> bool {
        let tcp = match &self.io {
            MemberStream::Plain(tcp) => tcp,
            MemberStream::Tls(tls) => tls.get_ref().0,
        };
        let mut cx = Context::from_waker(Waker::noop());
        !self.buf.is_empty() || tcp.poll_read_ready(&mut cx).is_ready()
    }

    /// Reads what the member sent into the buffer; `Ok(0)` at its end.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<Result<usize, ExchangeError>> {
        if self.buf.capacity() - self.buf.len() < READ_CHUNK / 4 {
            self.buf.reserve(READ_CHUNK);
        }
        tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.buf)
            .map_err(ExchangeError::Read)
    }
}

/// Where the response body is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reading {
    Head,
    Length(u64),
    Chunked(ChunkedDecoder),
    UntilClose,
    /// The body broke (see [`Exchange::failure`]): an error, once what was
    /// read before it has gone out.
    Failed,
    /// The member answered 101 to an upgrade: the connection is no longer
    /// HTTP's (see [`Exchange::into_switched`]).
    Switched,
    Done,
}

/// An exchange in progress; once the head is in, it is the response body.
#[derive(Debug)]
pub struct Exchange {
    /// `None` once the connection was returned or given up.
    conn: Option<Conn>,
    pool: Arc<Pool>,
    upload: Upload,
    reading: Reading,
    /// Why the body broke, reported on the next poll.
    failure: Option<Box<ExchangeError>>,
    /// How long the connection may wait in the pool afterwards, in ms; 0:
    /// it is not kept (the member closes it, or the exchange broke).
    pool_idle_ms: u32,
    /// Whether the member sent any byte of an answer.
    answered: bool,
    /// The idle clock of the body: no byte either way for this long ends it.
    idle: IdleClock,
    /// Whether the request asked to upgrade (`Upgrade`): only then is a 101
    /// valid, and the connection is never pooled afterwards.
    upgrade: bool,
    /// Counts the request in flight to its member until the body is dropped
    /// (`least_request` clusters only).
    in_flight: Option<InFlight>,
}

/// A member connection that switched protocols, out of its exchange: the
/// bytes read past the 101 head come first, then the connection's; the
/// request bytes not yet written go before anything else is.
#[derive(Debug)]
pub struct Switched {
    pub io: MemberStream,
    pub read_first: Bytes,
    pub write_first: Bytes,
}

/// The cluster's idle timeout, as a timer armed only when the body waits on
/// the member (an answer read whole with its head never allocates one) and
/// re-armed when a byte moved since.
#[derive(Debug)]
pub(crate) struct IdleClock {
    limit_ms: u32,
    timer: Option<Pin<Box<Sleep>>>,
    /// A byte moved since the timer was armed.
    pub(crate) moved: bool,
}

impl IdleClock {
    /// A clock of `limit`, not armed yet.
    pub(crate) fn new(limit: Duration) -> Self {
        IdleClock {
            limit_ms: ms32(limit),
            timer: None,
            moved: false,
        }
    }

    /// Whether the limit has passed with nothing moving; arms the timer.
    pub(crate) fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        let limit = self.limit();
        let timer = match &mut self.timer {
            Some(timer) => {
                if std::mem::take(&mut self.moved) {
                    timer.as_mut().reset((Instant::now() + limit).into());
                }
                timer
            }
            None => {
                self.moved = false;
                self.timer.insert(Box::pin(tokio::time::sleep(limit)))
            }
        };
        timer.as_mut().poll(cx).is_ready()
    }

    pub(crate) fn limit(&self) -> Duration {
        Duration::from_millis(u64::from(self.limit_ms))
    }
}

/// A duration in whole milliseconds, saturated to fit 32 bits (49 days).
fn ms32(duration: Duration) -> u32 {
    u32::try_from(duration.as_millis()).unwrap_or(u32::MAX)
}

impl Exchange {
    /// Starts an exchange of the request `parts` and `body` on `conn`; `idle`
    /// is the cluster's idle timeout for the body.
    pub fn new(
        conn: Conn,
        pool: Arc<Pool>,
        parts: &Parts,
        body: UpstreamBody,
        idle: Duration,
    ) -> Self {
        let chunked =
            !body.is_end_stream() && !parts.headers.contains_key(http::header::CONTENT_LENGTH);
        let framing = if chunked {
            RequestFraming::Chunked
        } else {
            RequestFraming::AsIs
        };
        let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let mut out = BytesMut::new();
        h1::encode_request_head(&mut out, &parts.method, target, &parts.headers, framing);
        let body = (!body.is_end_stream()).then_some(body);
        Exchange {
            conn: Some(conn),
            pool,
            upload: Upload {
                out,
                body,
                chunked,
                ..Upload::default()
            },
            reading: Reading::Head,
            failure: None,
            pool_idle_ms: 0,
            answered: false,
            idle: IdleClock {
                limit_ms: ms32(idle),
                timer: None,
                moved: false,
            },
            upgrade: parts.headers.contains_key(http::header::UPGRADE),
            in_flight: None,
        }
    }

    /// Keeps the request counted in flight until this response body is dropped.
    pub fn hold(&mut self, in_flight: Option<InFlight>) {
        self.in_flight = in_flight;
    }

    /// The connection, once the member switched protocols (101) on an
    /// upgrade request whose body, if it had one, was sent whole.
    pub fn into_switched(mut self) -> Result<Switched, ExchangeError> {
        if self.reading != Reading::Switched || self.upload.body.is_some() {
            return Err(H1Error::Upgrade.into());
        }
        let conn = self.conn.take().ok_or(ExchangeError::Closed)?;
        Ok(Switched {
            io: conn.io,
            read_first: conn.buf.freeze(),
            write_first: std::mem::take(&mut self.upload.out).freeze(),
        })
    }

    /// The request body to send again elsewhere: as it was if none of it was
    /// taken, started over if its replay buffer holds what was sent, else none.
    pub fn into_replay(mut self) -> Option<UpstreamBody> {
        let mut body = self.upload.body.take().unwrap_or(UpstreamBody::Empty);
        (!self.upload.touched || body.rewind()).then_some(body)
    }

    /// Whether [`Exchange::into_replay`] would give the body back.
    pub fn replayable(&self) -> bool {
        !self.upload.touched
            || self
                .upload
                .body
                .as_ref()
                .is_some_and(UpstreamBody::can_rewind)
    }

    /// Whether any byte of the request reached the connection.
    pub fn written(&self) -> bool {
        self.upload.written_bytes > 0
    }

    /// Whether the member sent any byte of an answer.
    pub fn answered(&self) -> bool {
        self.answered
    }

    /// Sends the request and reads the response head (skipping 1xx answers).
    pub async fn response_head(
        &mut self,
        method: &http::Method,
    ) -> Result<ResponseHead, ExchangeError> {
        std::future::poll_fn(|cx| self.poll_head(cx, method)).await
    }

    fn poll_head(
        &mut self,
        cx: &mut Context<'_>,
        method: &http::Method,
    ) -> Poll<Result<ResponseHead, ExchangeError>> {
        self.drive_upload(cx)?;
        loop {
            let Some(conn) = self.conn.as_mut() else {
                return Poll::Ready(Err(ExchangeError::Closed));
            };
            if let Some(head) = h1::parse_response(&mut conn.buf, method)? {
                if head.status == http::StatusCode::SWITCHING_PROTOCOLS {
                    if !self.upgrade {
                        return Poll::Ready(Err(H1Error::Upgrade.into()));
                    }
                    self.reading = Reading::Switched;
                    return Poll::Ready(Ok(head));
                }
                // A member that declined an upgrade may still switch later: never reuse.
                self.pool_idle_ms = if head.keep_alive && !self.upgrade {
                    ms32(pool::idle_limit(&head.headers))
                } else {
                    0
                };
                self.reading = match head.framing {
                    Framing::Empty => Reading::Done,
                    Framing::Length(n) => Reading::Length(n),
                    Framing::Chunked => Reading::Chunked(ChunkedDecoder::new()),
                    Framing::UntilClose => Reading::UntilClose,
                };
                if self.reading == Reading::Done {
                    self.finish();
                }
                return Poll::Ready(Ok(head));
            }
            match ready!(conn.poll_fill(cx)) {
                Ok(0) if self.answered || !conn.buf.is_empty() => {
                    return Poll::Ready(Err(H1Error::Head("cut off".into()).into()));
                }
                Ok(0) => {
                    return Poll::Ready(Err(match self.upload.failed.take() {
                        Some(error) => ExchangeError::Write(error),
                        None => ExchangeError::Closed,
                    }));
                }
                Ok(_) => self.answered = true,
                Err(error) => return Poll::Ready(Err(error)),
            }
        }
    }

    /// Writes what it can of the request (see [`Upload::drive`]).
    fn drive_upload(&mut self, cx: &mut Context<'_>) -> Result<(), ExchangeError> {
        match self.conn.as_mut() {
            Some(conn) => {
                let driven = self.upload.drive(&mut conn.io, cx);
                if driven.is_err() {
                    self.pool_idle_ms = 0;
                }
                driven
            }
            None => Ok(()),
        }
    }

    /// The body is read to its end: the connection goes back to the pool if it
    /// carried the whole request and the member keeps it open.
    /// A member that answered before the upload ended gets the rest of it
    /// all the same (it may be draining it), from a task of its own.
    fn finish(&mut self) {
        self.reading = Reading::Done;
        let Some(conn) = self.conn.take() else {
            return;
        };
        let keep_alive =
            (self.pool_idle_ms > 0).then(|| Duration::from_millis(u64::from(self.pool_idle_ms)));
        if self.upload.pending() {
            let upload = std::mem::take(&mut self.upload);
            // Bounded by the idle clock: a client that stops uploading ends it.
            let finishing = finish_upload(conn, upload, self.pool.clone(), keep_alive);
            tokio::spawn(tokio::time::timeout(self.idle.limit(), finishing));
        } else if let Some(limit) = keep_alive
            && self.upload.sent
            && conn.buf.is_empty()
        {
            self.pool.put(conn, limit);
        }
    }

    fn poll_body(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ExchangeError>>> {
        let uploaded = self.upload.written_bytes;
        if let Err(error) = self.drive_upload(cx) {
            // The client gave up its upload: the member's answer cannot be trusted to end.
            return self.fail(error, cx);
        }
        if self.upload.written_bytes != uploaded {
            self.idle.moved = true;
        }
        loop {
            if self.reading == Reading::Failed {
                self.reading = Reading::Done;
                return Poll::Ready(self.failure.take().map(|e| Err(*e)));
            }
            let Some(conn) = self.conn.as_mut() else {
                return Poll::Ready(None);
            };
            match self.reading {
                Reading::Head | Reading::Done | Reading::Failed | Reading::Switched => {
                    return Poll::Ready(None);
                }
                Reading::Length(left) if !conn.buf.is_empty() => {
                    let n = usize::try_from(left)
                        .unwrap_or(usize::MAX)
                        .min(conn.buf.len());
                    let data = conn.buf.split_to(n).freeze();
                    let left = left - n as u64;
                    if left == 0 {
                        self.finish();
                    } else {
                        self.reading = Reading::Length(left);
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Reading::Chunked(mut state) => match state.decode(&mut conn.buf) {
                    Ok(Decoded::Data(data)) => {
                        self.reading = Reading::Chunked(state);
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                    Ok(Decoded::Trailers(trailers)) => {
                        self.finish();
                        return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
                    }
                    Ok(Decoded::Done) => {
                        self.finish();
                        return Poll::Ready(None);
                    }
                    Ok(Decoded::More) => self.reading = Reading::Chunked(state),
                    Err(error) => return self.fail(error.into(), cx),
                },
                Reading::UntilClose if !conn.buf.is_empty() => {
                    let data = conn.buf.split().freeze();
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Reading::Length(_) | Reading::UntilClose => {}
            }
            let filled = match conn.poll_fill(cx) {
                Poll::Ready(filled) => filled,
                Poll::Pending if self.idle.expired(cx) => {
                    let limit = self.idle.limit();
                    crate::admin::metrics::idle_timeout();
                    return self.fail(ExchangeError::Idle(limit), cx);
                }
                Poll::Pending => return Poll::Pending,
            };
            match filled {
                Ok(0) if self.reading == Reading::UntilClose => {
                    self.conn = None;
                    self.reading = Reading::Done;
                    return Poll::Ready(None);
                }
                Ok(0) => return self.fail(ExchangeError::Truncated, cx),
                Ok(_) => self.idle.moved = true,
                Err(error) => return self.fail(error, cx),
            }
        }
    }

    /// The body broke: the connection is given up, and the error is reported
    /// on the next poll, so that what was handed out before reaches the
    /// client first (the server writes while the body is pending).
    fn fail(
        &mut self,
        error: ExchangeError,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ExchangeError>>> {
        self.conn = None;
        self.failure = Some(Box::new(error));
        self.reading = Reading::Failed;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

/// The request bytes still to write, and the body they come from.
#[derive(Debug, Default)]
struct Upload {
    /// Bytes not written yet.
    out: BytesMut,
    /// The request body still to be sent, and how.
    body: Option<UpstreamBody>,
    chunked: bool,
    /// Whether a frame of the body was taken (then it cannot be sent again).
    touched: bool,
    /// Whether the whole request was written.
    sent: bool,
    /// How many bytes of it were written.
    written_bytes: u64,
    /// The body ended (it is kept, to be sent again if need be).
    body_ended: bool,
    /// Why writing failed (the connection is then not reused).
    failed: Option<std::io::Error>,
}

impl Upload {
    fn pending(&self) -> bool {
        !self.sent && self.failed.is_none()
    }

    /// Writes what it can of the request to `io`; `Err` only for a failed
    /// client body. A failed write is remembered: the member may still answer.
    fn drive(&mut self, io: &mut MemberStream, cx: &mut Context<'_>) -> Result<(), ExchangeError> {
        while self.pending() {
            // Gather body bytes that are ready, then write them with the head.
            while self.out.len() < WRITE_HIGH_WATER && !self.body_ended {
                let Some(body) = self.body.as_mut() else {
                    break;
                };
                match Pin::new(&mut *body).poll_frame(cx) {
                    Poll::Ready(Some(Ok(frame))) => {
                        self.touched = true;
                        match frame.into_data() {
                            Ok(data) if self.chunked => h1::encode_chunk(&mut self.out, &data),
                            Ok(data) => self.out.extend_from_slice(&data),
                            // Trailers end the body; they travel only in a
                            // chunked one (a `Content-Length` body drops them).
                            Err(frame) => {
                                if let Ok(trailers) = frame.into_trailers() {
                                    if self.chunked {
                                        h1::encode_last_chunk(&mut self.out, &trailers);
                                    }
                                    self.body = None;
                                }
                            }
                        }
                    }
                    Poll::Ready(None) => {
                        if self.chunked {
                            self.out.extend_from_slice(h1::LAST_CHUNK);
                        }
                        self.body_ended = true;
                    }
                    Poll::Ready(Some(Err(error))) => {
                        self.body = None;
                        self.failed = Some(std::io::Error::other("the client's body failed"));
                        return Err(ExchangeError::Client(error));
                    }
                    Poll::Pending => break,
                }
            }
            if self.out.is_empty() {
                if self.body.is_none() || self.body_ended {
                    match Pin::new(&mut *io).poll_flush(cx) {
                        Poll::Ready(Ok(())) => self.sent = true,
                        Poll::Ready(Err(error)) => self.failed = Some(error),
                        Poll::Pending => {}
                    }
                }
                return Ok(());
            }
            match Pin::new(&mut *io).poll_write(cx, &self.out) {
                Poll::Ready(Ok(0)) => self.failed = Some(std::io::ErrorKind::WriteZero.into()),
                Poll::Ready(Ok(n)) => {
                    self.written_bytes += n as u64;
                    self.out.advance(n);
                }
                Poll::Ready(Err(error)) => self.failed = Some(error),
                Poll::Pending => return Ok(()),
            }
        }
        Ok(())
    }
}

/// Sends the rest of an upload the member already answered; the connection
/// is pooled afterwards if it is still good.
async fn finish_upload(
    mut conn: Conn,
    mut upload: Upload,
    pool: Arc<Pool>,
    keep_alive: Option<Duration>,
) {
    let sent = std::future::poll_fn(|cx| match upload.drive(&mut conn.io, cx) {
        Err(_) => Poll::Ready(false),
        Ok(()) if upload.pending() => Poll::Pending,
        Ok(()) => Poll::Ready(upload.sent),
    })
    .await;
    if let Some(limit) = keep_alive
        && sent
        && conn.buf.is_empty()
    {
        pool.put(conn, limit);
    }
}

impl Body for Exchange {
    type Data = Bytes;
    type Error = ExchangeError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        self.get_mut().poll_body(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.reading == Reading::Done
    }

    fn size_hint(&self) -> SizeHint {
        match self.reading {
            Reading::Done => SizeHint::with_exact(0),
            Reading::Length(left) => SizeHint::with_exact(left),
            _ => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests;
