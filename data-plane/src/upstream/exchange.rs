//! One request/response exchange with a member over an HTTP/1.1 connection,
//! driven by the task that serves the client's request: no connection task, no
//! channel between them. The request body is sent while the response is read
//! (a member may answer early), and the response body is handed out straight
//! from the connection's read buffer. A connection goes back to its pool only
//! when both bodies were carried in full and the member keeps it open.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker, ready};

use bytes::{Buf, Bytes, BytesMut};
use http::request::Parts;
use http_body::{Body, Frame, SizeHint};
use tokio::io::AsyncWrite;

use crate::upstream::body::UpstreamBody;
use crate::upstream::h1::{
    self, ChunkedDecoder, Decoded, Framing, H1Error, RequestFraming, ResponseHead,
};
use crate::upstream::pool::Pool;
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
    #[error("the client's request body failed: {0}")]
    Client(String),
}

impl Conn {
    pub fn new(io: MemberStream) -> Self {
        Conn {
            io,
            buf: BytesMut::new(),
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
    failure: Option<ExchangeError>,
    keep_alive: bool,
    /// Whether the member sent any byte of an answer.
    answered: bool,
}

impl Exchange {
    /// Starts an exchange of the request `parts` and `body` on `conn`.
    pub fn new(conn: Conn, pool: Arc<Pool>, parts: &Parts, body: UpstreamBody) -> Self {
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
                touched: false,
                sent: false,
                failed: None,
            },
            reading: Reading::Head,
            failure: None,
            keep_alive: false,
            answered: false,
        }
    }

    /// The request body, if none of it was taken yet (to send it elsewhere).
    pub fn into_unsent_body(mut self) -> Option<UpstreamBody> {
        if self.upload.touched {
            return None;
        }
        Some(self.upload.body.take().unwrap_or(UpstreamBody::Empty))
    }

    /// Whether the member answered nothing before it closed: on a reused
    /// connection, the request may go again on a new one.
    pub fn unanswered(&self) -> bool {
        !self.answered
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
                self.keep_alive = head.keep_alive;
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
                    self.keep_alive = false;
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
        let keep_alive = self.keep_alive;
        if self.upload.pending() {
            let upload = std::mem::take(&mut self.upload);
            tokio::spawn(finish_upload(conn, upload, self.pool.clone(), keep_alive));
        } else if keep_alive && self.upload.sent && conn.buf.is_empty() {
            self.pool.put(conn);
        }
    }

    fn poll_body(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ExchangeError>>> {
        if let Err(error) = self.drive_upload(cx) {
            // The client gave up its upload: the member's answer cannot be trusted to end.
            return self.fail(error, cx);
        }
        loop {
            if self.reading == Reading::Failed {
                self.reading = Reading::Done;
                return Poll::Ready(self.failure.take().map(Err));
            }
            let Some(conn) = self.conn.as_mut() else {
                return Poll::Ready(None);
            };
            match self.reading {
                Reading::Head | Reading::Done | Reading::Failed => return Poll::Ready(None),
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
            match ready!(conn.poll_fill(cx)) {
                Ok(0) if self.reading == Reading::UntilClose => {
                    self.conn = None;
                    self.reading = Reading::Done;
                    return Poll::Ready(None);
                }
                Ok(0) => return self.fail(ExchangeError::Truncated, cx),
                Ok(_) => {}
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
        self.failure = Some(error);
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
            while self.out.len() < WRITE_HIGH_WATER {
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
                        self.body = None;
                    }
                    Poll::Ready(Some(Err(error))) => {
                        self.body = None;
                        self.failed = Some(std::io::Error::other("the client's body failed"));
                        return Err(ExchangeError::Client(error.to_string()));
                    }
                    Poll::Pending => break,
                }
            }
            if self.out.is_empty() {
                if self.body.is_none() {
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
                Poll::Ready(Ok(n)) => self.out.advance(n),
                Poll::Ready(Err(error)) => self.failed = Some(error),
                Poll::Pending => return Ok(()),
            }
        }
        Ok(())
    }
}

/// Sends the rest of an upload the member already answered; the connection
/// is pooled afterwards if it is still good.
async fn finish_upload(mut conn: Conn, mut upload: Upload, pool: Arc<Pool>, keep_alive: bool) {
    let sent = std::future::poll_fn(|cx| match upload.drive(&mut conn.io, cx) {
        Err(_) => Poll::Ready(false),
        Ok(()) if upload.pending() => Poll::Pending,
        Ok(()) => Poll::Ready(upload.sent),
    })
    .await;
    if sent && keep_alive && conn.buf.is_empty() {
        pool.put(conn);
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
