//! Tunnels (WebSocket and every other `Upgrade`, Apache's mod_proxy_wstunnel):
//! once a member switched protocols on an upgrade request, the client's
//! connection and the member's carry bytes both ways until both directions
//! ended (an end one way shuts down that direction's write side; the other
//! keeps flowing), a side fails, no byte moves for the cluster's idle timeout,
//! or the worker closes it at shutdown.

use std::io::IoSlice;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::admin::metrics::{self, Direction};
use crate::upstream::exchange::Switched;

/// The buffer of each direction.
const BUFFER: usize = 16 * 1024;

/// The member's side of a tunnel, handed from the proxy to the listener with
/// the 101 (in the response's extensions, which want `Clone`: hence the slot).
#[derive(Debug, Clone)]
pub struct TunnelSlot(Arc<Mutex<Option<MemberSide>>>);

/// A member connection that switched protocols, and how long it may be silent.
#[derive(Debug)]
pub struct MemberSide {
    switched: Switched,
    idle_timeout: Duration,
    member: String,
}

impl TunnelSlot {
    pub fn new(switched: Switched, idle_timeout: Duration, member: String) -> Self {
        TunnelSlot(Arc::new(Mutex::new(Some(MemberSide {
            switched,
            idle_timeout,
            member,
        }))))
    }

    /// The member's side, once.
    pub fn take(&self) -> Option<MemberSide> {
        self.0.lock().ok()?.take()
    }
}

impl MemberSide {
    pub fn idle_timeout(&self) -> Duration {
        self.idle_timeout
    }
}

/// Carries bytes between `client` (after `client_first`, what the client sent
/// past its request head) and the member until the tunnel ends (see the module).
pub async fn splice<C>(
    client: C,
    client_first: Bytes,
    member: MemberSide,
    cancel: CancellationToken,
) where
    C: AsyncRead + AsyncWrite + Unpin,
{
    let _open = Open::count();
    let MemberSide {
        switched,
        idle_timeout,
        member: id,
    } = member;
    let activity = Activity::new();
    let mut client = Metered {
        io: Prefixed::new(client, client_first),
        activity: &activity,
        direction: Direction::ToMember,
    };
    let mut upstream = Metered {
        io: Prefixed::new(switched.io, switched.read_first),
        activity: &activity,
        direction: Direction::ToClient,
    };
    let carried = async {
        if !switched.write_first.is_empty() {
            upstream.io.io.write_all(&switched.write_first).await?;
        }
        tokio::io::copy_bidirectional_with_sizes(&mut client, &mut upstream, BUFFER, BUFFER).await
    };
    tokio::select! {
        carried = carried => match carried {
            Ok((to_member, to_client)) => {
                debug!(member.id = %id, to_member, to_client, "Tunnel closed");
            }
            Err(error) => debug!(member.id = %id, %error, "Tunnel broke"),
        },
        () = activity.idle_for(idle_timeout) => {
            debug!(member.id = %id, ?idle_timeout, "Tunnel idle; closing it");
        }
        () = cancel.cancelled() => debug!(member.id = %id, "Closing the tunnel at shutdown"),
    }
}

/// Counts a tunnel open for as long as it lives.
struct Open;

impl Open {
    fn count() -> Self {
        metrics::tunnel(true);
        Open
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        metrics::tunnel(false);
    }
}

/// When a tunnel last carried a byte, either way.
struct Activity {
    start: Instant,
    /// Milliseconds from `start` to the last byte.
    last_ms: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Activity {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    /// Resolves once no byte moved for `timeout`.
    async fn idle_for(&self, timeout: Duration) {
        loop {
            let last = self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
            let deadline = last + timeout;
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    }
}

/// One side of a tunnel: what it reads is counted as going `direction`.
struct Metered<'a, T> {
    io: Prefixed<T>,
    activity: &'a Activity,
    direction: Direction,
}

impl<T: AsyncRead + Unpin> AsyncRead for Metered<'_, T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let read = Pin::new(&mut this.io).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            this.activity.touch();
            metrics::tunnel_bytes(this.direction, n);
        }
        read
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Metered<'_, T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// A connection whose first bytes were already read (by an HTTP parser):
/// they are read again first. Writes, flushes and shutdowns go to the
/// connection as they are.
struct Prefixed<T> {
    prefix: Bytes,
    io: T,
}

impl<T> Prefixed<T> {
    fn new(io: T, prefix: Bytes) -> Self {
        Prefixed { prefix, io }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Prefixed<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if this.prefix.is_empty() {
            return Pin::new(&mut this.io).poll_read(cx, buf);
        }
        let n = this.prefix.len().min(buf.remaining());
        buf.put_slice(&this.prefix.split_to(n));
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Prefixed<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}
