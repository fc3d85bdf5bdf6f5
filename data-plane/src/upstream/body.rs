//! The request body on its way to a member: the client's body streamed as it
//! comes, and whether it was sent in full (the response clock starts then);
//! a client that stalls in its body for the idle time gets
//! [`ClientBodyError::Idle`] (nginx's `client_body_timeout`).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::sync::Notify;
use tokio::time::{Instant, Sleep};

use crate::upstream::retry::REPLAY_LIMIT;

/// A request body sent to a member.
#[derive(Debug)]
pub enum UpstreamBody {
    Empty,
    Client {
        body: Incoming,
        progress: Arc<BodyProgress>,
        /// Armed while waiting for the client's next frame.
        idle: Pin<Box<Sleep>>,
        /// What was sent of the body, kept to send it again (idempotent requests only).
        replay: Option<Box<Replay>>,
    },
}

/// The frames of a body already sent, kept (up to [`REPLAY_LIMIT`] bytes) so
/// that a retry can send them again before the rest of the client's body.
#[derive(Debug, Default)]
pub struct Replay {
    kept: Vec<Bytes>,
    size: usize,
    /// More than the limit was sent, or a frame that is not data: no replay.
    overflowed: bool,
    /// The next kept frame to send again, while replaying.
    next: usize,
    /// The client's body ended.
    ended: bool,
}

/// Why a client's request body could not be carried: the client's fault, not
/// the member's (the member is not marked failed for it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ClientBodyError {
    /// No byte of the body came for `--client-body-timeout`.
    #[error("the client's request body stalled")]
    Idle,
    /// Bad framing (a malformed chunk), as hyper reported it.
    #[error("the client's request body is malformed")]
    Invalid,
    /// The client closed or reset before the end of its body.
    #[error("the client's request body was cut short")]
    Aborted,
}

impl ClientBodyError {
    /// 408 for a stalled body (nginx), 400 otherwise.
    pub fn status(self) -> StatusCode {
        match self {
            ClientBodyError::Idle => StatusCode::REQUEST_TIMEOUT,
            ClientBodyError::Invalid | ClientBodyError::Aborted => StatusCode::BAD_REQUEST,
        }
    }

    fn from_hyper(error: &hyper::Error) -> Self {
        let mut source = std::error::Error::source(error);
        while let Some(cause) = source {
            if let Some(io) = cause.downcast_ref::<std::io::Error>() {
                return match io.kind() {
                    std::io::ErrorKind::InvalidData | std::io::ErrorKind::InvalidInput => {
                        ClientBodyError::Invalid
                    }
                    _ => ClientBodyError::Aborted,
                };
            }
            source = cause.source();
        }
        if error.is_parse() {
            ClientBodyError::Invalid
        } else {
            ClientBodyError::Aborted
        }
    }
}

/// Whether a client's request body has been sent to the member in full: the
/// response timeout starts then.
#[derive(Debug, Default)]
pub struct BodyProgress {
    done: AtomicBool,
    notify: Notify,
    /// How long the client may send nothing, and whether the clock runs
    /// (kept here, off the size of every response body).
    idle_timeout: Duration,
    waiting: AtomicBool,
    /// Bytes of body read from the client (the access log's bytes in).
    received: AtomicU64,
}

impl BodyProgress {
    pub fn is_done(&self) -> bool {
        self.done.load(Ordering::Acquire)
    }

    /// Bytes of body read from the client so far.
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    /// Resolves once the body was sent (or failed).
    pub async fn finished(&self) {
        if !self.is_done() {
            self.notify.notified().await;
        }
    }

    fn finish(&self) {
        if !self.done.swap(true, Ordering::AcqRel) {
            // `notify_one` keeps a permit if nobody waits yet.
            self.notify.notify_one();
        }
    }
}

impl UpstreamBody {
    /// Wraps a client's body, which may be idle for at most `timeout` between
    /// two frames; with its progress when there is a body to send. A
    /// `replayable` body keeps what it sent (up to [`REPLAY_LIMIT`]) so that it
    /// can be sent again ([`UpstreamBody::rewind`]).
    pub fn from_client(
        body: Incoming,
        timeout: Duration,
        replayable: bool,
    ) -> (Self, Option<Arc<BodyProgress>>) {
        if body.is_end_stream() {
            return (UpstreamBody::Empty, None);
        }
        let progress = Arc::new(BodyProgress {
            idle_timeout: timeout,
            ..BodyProgress::default()
        });
        let body = UpstreamBody::Client {
            body,
            progress: progress.clone(),
            idle: Box::pin(tokio::time::sleep(timeout)),
            replay: replayable.then(Box::default),
        };
        (body, Some(progress))
    }

    /// Whether [`UpstreamBody::rewind`] would succeed.
    pub fn can_rewind(&self) -> bool {
        match self {
            UpstreamBody::Empty => true,
            UpstreamBody::Client { replay, .. } => replay.as_ref().is_some_and(|r| !r.overflowed),
        }
    }

    /// Starts the body over, for another attempt; `false` if it cannot be
    /// (not kept, or more of it was sent than the replay buffer holds).
    pub fn rewind(&mut self) -> bool {
        match self {
            UpstreamBody::Empty => true,
            UpstreamBody::Client { replay, .. } => match replay {
                Some(replay) if !replay.overflowed => {
                    replay.next = 0;
                    true
                }
                _ => false,
            },
        }
    }
}

impl Replay {
    /// The next frame to send again, if replaying.
    fn replayed(&mut self) -> Option<Bytes> {
        let frame = self.kept.get(self.next).cloned()?;
        self.next += 1;
        Some(frame)
    }

    /// Keeps a copy of a frame that goes out for the first time.
    fn keep(&mut self, frame: &Frame<Bytes>) {
        if self.overflowed {
            return;
        }
        match frame.data_ref() {
            Some(data) if self.size + data.len() <= REPLAY_LIMIT => {
                self.size += data.len();
                self.kept.push(data.clone());
                self.next = self.kept.len();
            }
            _ => {
                self.overflowed = true;
                self.kept = Vec::new();
                self.next = 0;
            }
        }
    }

    fn replaying(&self) -> bool {
        self.next < self.kept.len()
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = ClientBodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.get_mut() {
            UpstreamBody::Empty => Poll::Ready(None),
            UpstreamBody::Client {
                body,
                progress,
                idle,
                replay,
            } => {
                if let Some(replay) = replay.as_deref_mut() {
                    if let Some(data) = replay.replayed() {
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                    if replay.ended {
                        return Poll::Ready(None);
                    }
                }
                let polled = Pin::new(&mut *body).poll_frame(cx);
                match polled {
                    Poll::Pending => {
                        // The clock runs only while the body is asked for and
                        // the client has nothing: a member slow to take the
                        // upload is not the client's stall.
                        if !progress.waiting.swap(true, Ordering::Relaxed) {
                            idle.as_mut().reset(Instant::now() + progress.idle_timeout);
                        }
                        if idle.as_mut().poll(cx).is_ready() {
                            progress.finish();
                            return Poll::Ready(Some(Err(ClientBodyError::Idle)));
                        }
                        Poll::Pending
                    }
                    Poll::Ready(None) => {
                        progress.finish();
                        if let Some(replay) = replay.as_deref_mut() {
                            replay.ended = true;
                        }
                        Poll::Ready(None)
                    }
                    Poll::Ready(Some(Err(error))) => {
                        progress.finish();
                        Poll::Ready(Some(Err(ClientBodyError::from_hyper(&error))))
                    }
                    Poll::Ready(Some(Ok(frame))) => {
                        progress.waiting.store(false, Ordering::Relaxed);
                        if let Some(data) = frame.data_ref() {
                            progress
                                .received
                                .fetch_add(data.len() as u64, Ordering::Relaxed);
                        }
                        // Trailers are the last frame, whatever `is_end_stream` says.
                        let ended = frame.is_trailers() || body.is_end_stream();
                        if ended {
                            progress.finish();
                        }
                        if let Some(replay) = replay.as_deref_mut() {
                            replay.keep(&frame);
                            replay.ended = ended;
                        }
                        Poll::Ready(Some(Ok(frame)))
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpstreamBody::Empty => true,
            UpstreamBody::Client { body, replay, .. } => match replay {
                Some(replay) if replay.replaying() => false,
                Some(replay) if replay.ended => true,
                _ => body.is_end_stream(),
            },
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpstreamBody::Empty => SizeHint::with_exact(0),
            UpstreamBody::Client { replay, .. }
                if replay.as_ref().is_some_and(|r| r.replaying()) =>
            {
                SizeHint::default()
            }
            UpstreamBody::Client { body, .. } => body.size_hint(),
        }
    }
}
