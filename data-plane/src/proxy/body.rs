//! The response body on its way back to the client: a member's, streamed from
//! its connection, or one the proxy made itself. Nothing here holds a whole
//! body in memory.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use crate::proxy::compress::Compressing;
use crate::upstream::Reply;
use crate::upstream::exchange::{Exchange, ExchangeError};
use crate::upstream::h2::H2Exchange;

/// Why a response body broke off.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error(transparent)]
    Member(#[from] ExchangeError),
    #[error("compressing the response failed: {0}")]
    Compress(std::io::Error),
}

/// A response body sent to the client.
///
/// Not boxed although the variants differ in size: it is made once per
/// request and moved into hyper once, and a box would be an allocation per
/// proxied request on the hot path.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
pub enum ProxyBody {
    /// A member's, streamed from its connection (which the exchange returns to
    /// its pool once the body was read to the end).
    Upstream(Exchange),
    /// A member's, compressed on its way (a route's `compress`); boxed, as
    /// only those responses pay for it.
    Compressed(Box<Compressing<ProxyBody>>),
    /// An HTTP/2 member's, streamed from its stream.
    H2(H2Exchange),
    Local(Option<Bytes>),
}

impl From<Reply> for ProxyBody {
    fn from(reply: Reply) -> Self {
        match reply {
            Reply::H1(exchange) => ProxyBody::Upstream(exchange),
            Reply::H2(exchange) => ProxyBody::H2(exchange),
        }
    }
}

impl ProxyBody {
    pub fn local(text: impl Into<Bytes>) -> Self {
        ProxyBody::Local(Some(text.into()))
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.get_mut() {
            ProxyBody::Upstream(exchange) => {
                Pin::new(exchange).poll_frame(cx).map_err(BodyError::Member)
            }
            ProxyBody::H2(exchange) => Pin::new(exchange).poll_frame(cx).map_err(BodyError::Member),
            ProxyBody::Compressed(body) => Pin::new(body.as_mut()).poll_frame(cx),
            ProxyBody::Local(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Upstream(exchange) => exchange.is_end_stream(),
            ProxyBody::Compressed(body) => body.is_end_stream(),
            ProxyBody::H2(exchange) => exchange.is_end_stream(),
            ProxyBody::Local(data) => data.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Upstream(exchange) => exchange.size_hint(),
            ProxyBody::Compressed(body) => body.size_hint(),
            ProxyBody::H2(exchange) => exchange.size_hint(),
            ProxyBody::Local(data) => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
        }
    }
}
