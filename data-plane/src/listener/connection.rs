//! One client connection's clocks: what it is doing (requests in flight,
//! idle since when, a next request head begun) and the watchdog that closes
//! it when the header or keep-alive clock runs out, or drains it on shutdown.
//!
//! hyper's own `header_read_timeout` is not used: it starts as soon as the
//! connection waits for a head, so it also caps the keep-alive idle time,
//! and nginx users expect the two apart (`client_header_timeout` 60 s,
//! `keepalive_timeout` 75 s).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use http_body::{Body, Frame, SizeHint};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::admin::metrics::{self, ClientLimit};
use crate::listener::access_log::Line;
use crate::listener::{ClientLimits, Protocol};

/// After an h2 GOAWAY (idle or drain), how long a connection with no stream
/// may keep the socket before it is closed without waiting for the client's
/// PING answer, which a client that only sent its preface never gives.
const GOAWAY_GRACE: Duration = Duration::from_secs(1);

/// On shutdown, how long an idle kept-alive h1 connection is left open
/// before it is closed: a client that reuses it at once gets its request
/// served (with `Connection: close`) instead of a reset, the race that
/// closing an idle connection always has.
const DRAIN_LINGER: Duration = Duration::from_secs(1);

/// "No first byte yet" in [`Activity::first_byte`].
const NONE: u64 = u64::MAX;

/// What one connection is doing, shared by its I/O, its service and its watchdog.
#[derive(Debug)]
pub(crate) struct Activity {
    start: Instant,
    in_flight: AtomicUsize,
    /// Milliseconds from `start` to when the last request ended.
    idle_since: AtomicU64,
    /// Milliseconds from `start` to the first byte read while idle ([`NONE`]).
    first_byte: AtomicU64,
    /// Whether a request was served (the first waits under the header clock).
    served: AtomicBool,
    /// Counts the requests ended: the head being read belongs to this one.
    generation: AtomicU64,
    /// `generation + 1` once the head being read had a `Content-Length` line.
    content_length_in: AtomicU64,
    /// Set once the connection drains: from then on every change is told
    /// through `changed` (before, the clocks look at the state lazily, so a
    /// request costs no wake-up of its own).
    draining: AtomicBool,
    changed: Notify,
}

/// Looks for a `Content-Length` line in a request head as it is read, across
/// reads: hyper reads a head with both it and `Transfer-Encoding` by the
/// chunked framing and drops the length, so only the raw bytes tell.
#[derive(Debug, Default)]
pub(crate) struct HeadScan {
    generation: u64,
    matched: usize,
    /// The last bytes seen, to find the end of the head.
    tail: u32,
    ended: bool,
}

const CONTENT_LENGTH_LINE: &[u8] = b"\ncontent-length:";

impl HeadScan {
    /// Scans `bytes`; `true` if a `Content-Length` line ended in them.
    ///
    /// A match can only start at a line end and the head only ends at one,
    /// so the bytes between line ends are skipped with `memchr` (a request
    /// head is a handful of lines): a byte at a time only while a match or
    /// the head's end is under way.
    fn scan(&mut self, bytes: &[u8]) -> bool {
        let mut found = false;
        let mut at = 0;
        while at < bytes.len() && !self.ended {
            if self.matched == 0 && !self.at_line_end() {
                let Some(offset) = memchr::memchr(b'\n', &bytes[at..]) else {
                    self.skip(&bytes[at..]);
                    break;
                };
                self.skip(&bytes[at..at + offset]);
                at += offset;
            }
            found |= self.step(bytes[at]);
            at += 1;
        }
        found
    }

    /// Whether the last byte seen ends a line (so the next may start a match
    /// or end the head).
    fn at_line_end(&self) -> bool {
        self.tail & 0xff == u32::from(b'\n')
    }

    /// Bytes with no line end in them: only the last four matter, as tail.
    fn skip(&mut self, bytes: &[u8]) {
        match bytes.len() {
            0 => {}
            n if n >= 4 => {
                self.tail =
                    u32::from_be_bytes([bytes[n - 4], bytes[n - 3], bytes[n - 2], bytes[n - 1]]);
            }
            _ => {
                for &byte in bytes {
                    self.tail = (self.tail << 8) | u32::from(byte);
                }
            }
        }
    }

    fn step(&mut self, byte: u8) -> bool {
        self.tail = (self.tail << 8) | u32::from(byte);
        if self.tail == u32::from_be_bytes(*b"\r\n\r\n") || self.tail & 0xffff == 0x0a0a {
            self.ended = true;
        }
        let lower = byte.to_ascii_lowercase();
        if CONTENT_LENGTH_LINE.get(self.matched) == Some(&lower) {
            self.matched += 1;
            if self.matched == CONTENT_LENGTH_LINE.len() {
                self.matched = 0;
                return true;
            }
        } else {
            self.matched = usize::from(lower == b'\n');
        }
        false
    }
}

impl Activity {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Activity {
            start: Instant::now(),
            in_flight: AtomicUsize::new(0),
            idle_since: AtomicU64::new(0),
            first_byte: AtomicU64::new(NONE),
            served: AtomicBool::new(false),
            generation: AtomicU64::new(0),
            content_length_in: AtomicU64::new(0),
            draining: AtomicBool::new(false),
            changed: Notify::new(),
        })
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(NONE - 1)
    }

    fn at(&self, ms: u64) -> Instant {
        self.start + Duration::from_millis(ms)
    }

    /// Tells a draining connection's watchdog that something changed.
    fn changed(&self) {
        if self.draining.load(Ordering::Relaxed) {
            self.changed.notify_waiters();
        }
    }

    /// Called with the bytes each read of the connection got: the first byte
    /// of a next request head starts the header clock, and the head is
    /// scanned for a `Content-Length` line (h1; what comes while a request is
    /// in flight is its body, or a pipelined head, which hyper handles alone).
    pub(crate) fn read(&self, scan: &mut HeadScan, bytes: &[u8]) {
        if self.in_flight.load(Ordering::Relaxed) != 0 {
            return;
        }
        if self.first_byte.load(Ordering::Relaxed) == NONE {
            self.first_byte.store(self.now_ms(), Ordering::Relaxed);
            self.changed();
        }
        let generation = self.generation.load(Ordering::Relaxed);
        if scan.generation != generation {
            *scan = HeadScan {
                generation,
                ..HeadScan::default()
            };
        }
        if scan.scan(bytes) {
            self.content_length_in
                .store(generation + 1, Ordering::Relaxed);
        }
    }

    /// Whether the head of the request just parsed had a `Content-Length` line.
    pub(crate) fn head_had_content_length(&self) -> bool {
        self.content_length_in.load(Ordering::Relaxed)
            == self.generation.load(Ordering::Relaxed) + 1
    }

    /// A request starts; it ends when the returned guard is dropped (with its
    /// response body, or with the service future if the client went away).
    pub(crate) fn start_request(self: &Arc<Self>) -> Busy {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.changed();
        Busy {
            activity: self.clone(),
            ended_ms: NONE,
        }
    }

    /// When a request that starts now began, in ms on the connection's clock:
    /// the first byte of its head (HTTP/1.1, read when nothing was in
    /// flight), else now. No clock is read in the first case.
    pub(crate) fn request_start_ms(&self, h1: bool) -> u64 {
        match self.first_byte.load(Ordering::Relaxed) {
            at if h1 && at != NONE => at,
            _ => self.now_ms(),
        }
    }
}

/// A request in flight on a connection.
#[derive(Debug)]
pub(crate) struct Busy {
    activity: Arc<Activity>,
    /// When its response ended, if [`Tracked`] read the clock for it (NONE:
    /// not yet): the one clock read at the end of a response serves both.
    ended_ms: u64,
}

impl Busy {
    /// Reads the connection's clock for the end of the response.
    fn end_now(&mut self) -> u64 {
        self.ended_ms = self.activity.now_ms();
        self.ended_ms
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        let activity = &self.activity;
        if activity.in_flight.fetch_sub(1, Ordering::Relaxed) == 1 {
            let now = match self.ended_ms {
                NONE => activity.now_ms(),
                ended => ended,
            };
            activity.idle_since.store(now, Ordering::Relaxed);
            activity.first_byte.store(NONE, Ordering::Relaxed);
            activity.served.store(true, Ordering::Relaxed);
            activity.generation.fetch_add(1, Ordering::Relaxed);
            activity.changed();
        }
    }
}

/// A response body that keeps its request counted as in flight until it is
/// sent (or dropped), and is where the response ends: its duration counted
/// and its access log line written ([`Done`]).
#[derive(Debug)]
pub(crate) struct Tracked<B: Body> {
    pub(crate) body: B,
    pub(crate) busy: Busy,
    pub(crate) done: Done,
}

/// What happens when a response ends: its last byte sent, or its body
/// dropped because the client went away.
#[derive(Debug)]
pub(crate) struct Done {
    /// The route's slot (`slots::NONE`: no route matched; nothing timed).
    pub(crate) route: u32,
    pub(crate) status: http::StatusCode,
    /// When the request began ([`Activity::request_start_ms`]): the duration
    /// is read off the clock the connection reads anyway, to the millisecond
    /// (as nginx's `$request_time`).
    pub(crate) started_ms: u64,
    /// The access log's line; `None` (off) costs one check per frame.
    pub(crate) line: Option<Box<Line>>,
}

impl<B: Body> Drop for Tracked<B> {
    fn drop(&mut self) {
        let done = &mut self.done;
        if done.route != metrics::slots::NONE {
            let took = self.busy.end_now().saturating_sub(done.started_ms);
            metrics::route_response(done.route, done.status, Duration::from_millis(took));
        }
        if let Some(line) = &mut done.line {
            // A body hyper never polled (empty, HEAD, 204) was sent in full too.
            if self.body.is_end_stream() {
                line.complete();
            }
            line.finish();
        }
    }
}

impl<B: Body + Unpin> Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.body).poll_frame(cx);
        if let Some(line) = &mut this.done.line {
            match &polled {
                Poll::Ready(Some(Ok(frame))) => {
                    if let Some(data) = frame.data_ref() {
                        line.sent(bytes::Buf::remaining(data));
                    }
                }
                Poll::Ready(None) => line.complete(),
                _ => {}
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// A worker's connections, as far as a drain must reach them: a flag, and the
/// waker of each connection's task, registered once when it starts. A
/// connection looks at the flag when its task wakes (one atomic load), so no
/// wake-up of a connection, a request's included, takes a lock for it.
#[derive(Debug, Default)]
pub(crate) struct Drain {
    stopping: AtomicBool,
    wakers: std::sync::Mutex<Wakers>,
}

/// The registered wakers, by slot; the slots of ended connections are reused
/// (no hashing, no allocation once the worker has seen its busiest moment).
#[derive(Debug, Default)]
struct Wakers {
    slots: Vec<Option<std::task::Waker>>,
    free: Vec<usize>,
}

impl Drain {
    /// Starts the drain: every registered connection is woken to see it.
    pub(crate) fn start(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        let wakers = self.wakers.lock().unwrap_or_else(|e| e.into_inner());
        for waker in wakers.slots.iter().flatten() {
            waker.wake_by_ref();
        }
    }

    fn stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// Registers the calling task until the guard is dropped.
    fn register(self: &Arc<Self>, waker: &std::task::Waker) -> Registered {
        let mut wakers = self.wakers.lock().unwrap_or_else(|e| e.into_inner());
        let waker = Some(waker.clone());
        let id = match wakers.free.pop() {
            Some(id) => {
                if let Some(slot) = wakers.slots.get_mut(id) {
                    *slot = waker;
                }
                id
            }
            None => {
                wakers.slots.push(waker);
                wakers.slots.len() - 1
            }
        };
        Registered {
            drain: self.clone(),
            id,
        }
    }
}

/// A connection's place in its worker's [`Drain`].
struct Registered {
    drain: Arc<Drain>,
    id: usize,
}

impl Drop for Registered {
    fn drop(&mut self) {
        let mut wakers = self.drain.wakers.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(slot) = wakers.slots.get_mut(self.id) {
            *slot = None;
            wakers.free.push(self.id);
        }
    }
}

/// Resolves once the drain has started (the task was registered to be woken).
async fn drain_started(drain: &Drain) {
    std::future::poll_fn(|_| {
        if drain.stopping() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
    .await;
}

/// Drives a served connection to its end: closes it when a client clock runs
/// out, and drains it (after its current request) once the worker's drain
/// starts.
pub(crate) async fn drive<C>(
    conn: C,
    shut: impl Fn(Pin<&mut C>),
    activity: &Activity,
    limits: &ClientLimits,
    protocol: Protocol,
    drain: Arc<Drain>,
) -> Result<(), hyper::Error>
where
    C: Future<Output = Result<(), hyper::Error>>,
{
    // The task's waker, registered once: the drain wakes it.
    let _registered = std::future::poll_fn(|cx| Poll::Ready(drain.register(cx.waker()))).await;
    tokio::pin!(conn);
    let mut draining = false;
    // When an h2 GOAWAY was sent: from then the connection may stay idle only
    // for the grace (time to write the GOAWAY, and for streams it let in).
    let mut goaway: Option<Instant> = None;
    loop {
        let (keepalive, floor) = match goaway {
            Some(sent) => (GOAWAY_GRACE, Some(sent)),
            None => (limits.keepalive_timeout, None),
        };
        tokio::select! {
            result = conn.as_mut() => return result,
            reason = expired(activity, limits.header_timeout, keepalive, floor, protocol) => {
                if goaway.is_some() {
                    return Ok(());
                }
                metrics::client_limit(reason);
                tracing::debug!(?reason, "Closing a client connection");
                match protocol {
                    // An h1 connection that expired has no request in flight.
                    Protocol::Http1 => return Ok(()),
                    Protocol::Http2 => {
                        shut(conn.as_mut());
                        goaway = Some(Instant::now());
                    }
                }
            }
            () = drain_point(activity, protocol, &drain), if !draining => {
                draining = true;
                shut(conn.as_mut());
                if protocol == Protocol::Http2 {
                    goaway = Some(Instant::now());
                }
            }
        }
    }
}

/// Resolves once `shutdown` is true and the connection is at a point where
/// closing it loses nothing: for h1, a request in flight (hyper then closes
/// after its response, with `Connection: close`) or idle with no next head
/// begun for [`DRAIN_LINGER`]; a new connection is given its first request
/// first (the header clock bounds the wait). h2 sends GOAWAY at once.
async fn drain_point(activity: &Activity, protocol: Protocol, drain: &Drain) {
    drain_started(drain).await;
    if protocol == Protocol::Http2 {
        return;
    }
    // From here on every change wakes this loop (see `Activity::changed`).
    activity.draining.store(true, Ordering::Relaxed);
    let linger_from = Instant::now();
    loop {
        let changed = activity.changed.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        if activity.in_flight.load(Ordering::Relaxed) > 0 {
            return;
        }
        let idle = activity.served.load(Ordering::Relaxed)
            && activity.first_byte.load(Ordering::Relaxed) == NONE;
        if !idle {
            changed.await;
            continue;
        }
        let idle_since = activity.at(activity.idle_since.load(Ordering::Relaxed));
        let close_at = idle_since.max(linger_from) + DRAIN_LINGER;
        if Instant::now() >= close_at {
            return;
        }
        tokio::select! {
            () = tokio::time::sleep_until(close_at) => {}
            () = changed => {}
        }
    }
}

/// Resolves when the connection has had no request in flight for too long:
/// for h1, `header` from the first byte of a head (or from the start, for the
/// first request) or `keepalive` from the last response with no byte since;
/// for h2, `keepalive` with no stream open (PINGs and SETTINGS do not count),
/// idle time counted from `floor` at the earliest.
///
/// Lazy: one timer, set to the earliest instant a clock could run out, and
/// the state looked at when it fires — never later than a real deadline,
/// and requests neither wake it nor move it.
async fn expired(
    activity: &Activity,
    header: Duration,
    keepalive: Duration,
    floor: Option<Instant>,
    protocol: Protocol,
) -> ClientLimit {
    let timer = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(timer);
    loop {
        let now = Instant::now();
        let (deadline, reason) = next_deadline(activity, header, keepalive, floor, protocol, now);
        match reason {
            Some(reason) if now >= deadline => return reason,
            _ => {}
        }
        timer.as_mut().reset(deadline.max(now));
        timer.as_mut().await;
    }
}

/// When to look at a connection's clocks next, and which one runs out then
/// (`None`: none can have run out before; look again). Any change of state
/// starts a clock that runs out at least `min(header, keepalive)` after it
/// (a head's first byte: `header`; a request's end: `keepalive`), so looking
/// at least that often is never late.
fn next_deadline(
    activity: &Activity,
    header: Duration,
    keepalive: Duration,
    floor: Option<Instant>,
    protocol: Protocol,
    now: Instant,
) -> (Instant, Option<ClientLimit>) {
    let look_again = now + header.min(keepalive);
    // A request in flight stops the clocks.
    if activity.in_flight.load(Ordering::Relaxed) > 0 {
        return (look_again, None);
    }
    let mut idle_since = activity.at(activity.idle_since.load(Ordering::Relaxed));
    if let Some(floor) = floor {
        idle_since = idle_since.max(floor);
    }
    let first_byte = activity.first_byte.load(Ordering::Relaxed);
    let (deadline, reason) = match protocol {
        Protocol::Http2 => (idle_since + keepalive, ClientLimit::KeepaliveTimeout),
        Protocol::Http1 if first_byte != NONE => {
            (activity.at(first_byte) + header, ClientLimit::HeaderTimeout)
        }
        Protocol::Http1 if !activity.served.load(Ordering::Relaxed) => {
            (idle_since + header, ClientLimit::HeaderTimeout)
        }
        Protocol::Http1 => (idle_since + keepalive, ClientLimit::KeepaliveTimeout),
    };
    if deadline <= look_again {
        (deadline, Some(reason))
    } else {
        (look_again, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: Duration = Duration::from_secs(60);
    const KEEPALIVE: Duration = Duration::from_secs(75);

    #[tokio::test(start_paused = true)]
    async fn a_new_h1_connection_waits_for_its_first_head_under_the_header_clock() {
        let activity = Activity::new();
        let start = Instant::now();
        let reason = expired(&activity, HEADER, KEEPALIVE, None, Protocol::Http1).await;
        assert_eq!(reason, ClientLimit::HeaderTimeout);
        assert_eq!(start.elapsed(), HEADER);
    }

    #[tokio::test(start_paused = true)]
    async fn between_requests_the_keepalive_clock_runs_until_a_first_byte() {
        let activity = Activity::new();
        drop(activity.start_request());
        let start = Instant::now();
        assert_eq!(
            expired(&activity, HEADER, KEEPALIVE, None, Protocol::Http1).await,
            ClientLimit::KeepaliveTimeout
        );
        assert_eq!(start.elapsed(), KEEPALIVE);

        drop(activity.start_request());
        let start = Instant::now();
        let watchdog = expired(&activity, HEADER, KEEPALIVE, None, Protocol::Http1);
        tokio::pin!(watchdog);
        tokio::select! {
            _ = &mut watchdog => panic!("not yet"),
            () = tokio::time::sleep(Duration::from_secs(10)) => {}
        }
        activity.read(&mut HeadScan::default(), b"G");
        assert_eq!(watchdog.await, ClientLimit::HeaderTimeout);
        assert_eq!(start.elapsed(), Duration::from_secs(10) + HEADER);
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_in_flight_stops_the_clocks() {
        let activity = Activity::new();
        let busy = activity.start_request();
        let watchdog = expired(&activity, HEADER, KEEPALIVE, None, Protocol::Http2);
        tokio::pin!(watchdog);
        tokio::select! {
            _ = &mut watchdog => panic!("a busy connection expired"),
            () = tokio::time::sleep(Duration::from_secs(3600)) => {}
        }
        let start = Instant::now();
        drop(busy);
        // h2: bytes (PINGs, SETTINGS) do not count as activity.
        activity.read(&mut HeadScan::default(), b"ping");
        assert_eq!(watchdog.await, ClientLimit::KeepaliveTimeout);
        assert_eq!(start.elapsed(), KEEPALIVE);
    }

    #[tokio::test(start_paused = true)]
    async fn a_short_keepalive_runs_out_although_the_first_head_had_a_longer_clock() {
        let keepalive = Duration::from_secs(1);
        let activity = Activity::new();
        let watchdog = expired(&activity, HEADER, keepalive, None, Protocol::Http1);
        tokio::pin!(watchdog);
        tokio::select! {
            _ = &mut watchdog => panic!("not yet"),
            () = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
        drop(activity.start_request());
        let start = Instant::now();
        assert_eq!(watchdog.await, ClientLimit::KeepaliveTimeout);
        assert_eq!(start.elapsed(), keepalive);
    }

    #[test]
    fn a_content_length_line_is_found_across_reads_until_the_head_ends() {
        let mut scan = HeadScan::default();
        assert!(!scan.scan(b"POST / HTTP/1.1\r\nHost: x\r\nConTent-Le"));
        assert!(scan.scan(b"ngth: 4\r\nTransfer-Encoding: chunked\r\n\r\n"));
        let mut scan = HeadScan::default();
        assert!(!scan.scan(b"POST / HTTP/1.1\r\nX-A: content-length: 1\r\n\r\n"));
        assert!(
            !scan.scan(b"\r\ncontent-length: 1\r\n"),
            "the body is not the head"
        );
    }
}
