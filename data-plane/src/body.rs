//! The bodies the proxy streams: the client's request body on its way to a
//! member (kept retrievable until the first byte is read, so a request whose
//! connect failed can go to another member), and the response body on its way
//! back (a member's, streamed, or one the proxy made itself).

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

/// A request body sent to a member.
#[derive(Debug)]
pub enum UpstreamBody {
    Empty,
    Client(RetainedBody),
}

/// The client's body, left in a shared slot until the member reads it.
#[derive(Debug)]
pub struct RetainedBody {
    slot: Arc<Mutex<Option<Incoming>>>,
    taken: Option<Incoming>,
    hint: SizeHint,
}

/// The other end of a [`RetainedBody`]: takes the body back if it was never read.
#[derive(Debug, Clone)]
pub struct BodySlot(Arc<Mutex<Option<Incoming>>>);

impl UpstreamBody {
    /// Wraps a client body; returns the body to send and, when there is a body,
    /// the slot to take it back from.
    pub fn retain(body: Incoming) -> (UpstreamBody, Option<BodySlot>) {
        if body.is_end_stream() {
            return (UpstreamBody::Empty, None);
        }
        let hint = body.size_hint();
        let slot = Arc::new(Mutex::new(Some(body)));
        let retained = RetainedBody {
            slot: slot.clone(),
            taken: None,
            hint,
        };
        (UpstreamBody::Client(retained), Some(BodySlot(slot)))
    }
}

impl BodySlot {
    /// The body, if no member has started reading it; a new body to send then.
    pub fn take_back(&self) -> Option<UpstreamBody> {
        let body = self.0.lock().ok()?.take()?;
        Some(UpstreamBody::retain(body).0)
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
            UpstreamBody::Client(retained) => {
                if retained.taken.is_none() {
                    retained.taken = retained.slot.lock().ok().and_then(|mut slot| slot.take());
                }
                match retained.taken.as_mut() {
                    Some(body) => Pin::new(body).poll_frame(cx),
                    None => Poll::Ready(None),
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpstreamBody::Empty => true,
            UpstreamBody::Client(retained) => {
                retained.taken.as_ref().is_some_and(Body::is_end_stream)
            }
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpstreamBody::Empty => SizeHint::with_exact(0),
            UpstreamBody::Client(retained) => retained.hint,
        }
    }
}

/// A response body sent to the client.
#[derive(Debug)]
pub enum ProxyBody {
    Upstream(Incoming),
    Local(Option<Bytes>),
}

impl ProxyBody {
    pub fn local(text: impl Into<Bytes>) -> Self {
        ProxyBody::Local(Some(text.into()))
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.get_mut() {
            ProxyBody::Upstream(body) => Pin::new(body).poll_frame(cx),
            ProxyBody::Local(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Upstream(body) => body.is_end_stream(),
            ProxyBody::Local(data) => data.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Upstream(body) => body.size_hint(),
            ProxyBody::Local(data) => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
        }
    }
}
