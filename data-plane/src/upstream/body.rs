//! The request body on its way to a member: the client's body streamed as it
//! comes, and whether it was sent in full (the response clock starts then).

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::sync::Notify;

use crate::upstream::retry::REPLAY_LIMIT;

/// A request body sent to a member.
#[derive(Debug)]
pub enum UpstreamBody {
    Empty,
    Client {
        body: Incoming,
        progress: Arc<BodyProgress>,
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

/// Whether a client's request body has been sent to the member in full: the
/// response timeout starts then.
#[derive(Debug, Default)]
pub struct BodyProgress {
    done: AtomicBool,
    notify: Notify,
}

impl BodyProgress {
    pub fn is_done(&self) -> bool {
        self.done.load(Ordering::Acquire)
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
    /// Wraps a client's body; with its progress when there is a body to send.
    /// A `replayable` body keeps what it sent (up to [`REPLAY_LIMIT`]) so
    /// that it can be sent again ([`UpstreamBody::rewind`]).
    pub fn from_client(body: Incoming, replayable: bool) -> (Self, Option<Arc<BodyProgress>>) {
        if body.is_end_stream() {
            return (UpstreamBody::Empty, None);
        }
        let progress = Arc::new(BodyProgress::default());
        let body = UpstreamBody::Client {
            body,
            progress: progress.clone(),
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
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.get_mut() {
            UpstreamBody::Empty => Poll::Ready(None),
            UpstreamBody::Client {
                body,
                progress,
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
                match &polled {
                    Poll::Ready(None | Some(Err(_))) => progress.finish(),
                    Poll::Ready(Some(Ok(_))) if body.is_end_stream() => progress.finish(),
                    _ => {}
                }
                if let Some(replay) = replay.as_deref_mut() {
                    match &polled {
                        Poll::Ready(Some(Ok(frame))) => {
                            replay.keep(frame);
                            replay.ended = body.is_end_stream();
                        }
                        Poll::Ready(None) => replay.ended = true,
                        _ => {}
                    }
                }
                polled
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
