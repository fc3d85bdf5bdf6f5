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

/// A request body sent to a member.
#[derive(Debug)]
pub enum UpstreamBody {
    Empty,
    Client {
        body: Incoming,
        progress: Arc<BodyProgress>,
    },
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
    pub fn from_client(body: Incoming) -> (Self, Option<Arc<BodyProgress>>) {
        if body.is_end_stream() {
            return (UpstreamBody::Empty, None);
        }
        let progress = Arc::new(BodyProgress::default());
        let body = UpstreamBody::Client {
            body,
            progress: progress.clone(),
        };
        (body, Some(progress))
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
            UpstreamBody::Client { body, progress } => {
                let polled = Pin::new(&mut *body).poll_frame(cx);
                match &polled {
                    Poll::Ready(None | Some(Err(_))) => progress.finish(),
                    // Trailers are the last frame, whatever `is_end_stream` says.
                    Poll::Ready(Some(Ok(frame))) if frame.is_trailers() || body.is_end_stream() => {
                        progress.finish()
                    }
                    _ => {}
                }
                polled
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpstreamBody::Empty => true,
            UpstreamBody::Client { body, .. } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpstreamBody::Empty => SizeHint::with_exact(0),
            UpstreamBody::Client { body, .. } => body.size_hint(),
        }
    }
}
