//! A replica's counters and their Prometheus text exposition (admin `GET /metrics`).
//!
//! Request counters live per thread — each worker writes only its own, so the
//! request path never contends on a shared cache line — and are summed when
//! scraped, by a `prometheus-client` collector (`encode`); per route and
//! per member they are indexed by slot ([`slots`]).

mod encode;
pub mod slots;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::StatusCode;
use prometheus_client::collector::Collector;

use self::slots::{Block, MemberCounters, RouteCounters};

use crate::config::apply::State;
use crate::proxy::ProxyError;
use crate::proxy::request::RequestError;
use crate::upstream::ConnectError;
use crate::upstream::body::ClientBodyError;

/// What one thread counted.
#[derive(Debug, Default)]
pub(crate) struct ThreadStats {
    /// Responses by status class: 1xx … 5xx.
    responses: [AtomicU64; 5],
    /// Requests the proxy answered itself, by [`ProxyError`] kind (see [`ERROR_KINDS`]).
    errors: [AtomicU64; 8],
    /// Attempts sent again, by [`Retry`] reason (see [`RETRY_REASONS`]).
    retries: [AtomicU64; 4],
    /// Connections to members that could not be had, by reason (see [`CONNECT_REASONS`]).
    connect_failures: [AtomicU64; 5],
    /// Member bodies cut by the idle clock.
    idle_timeouts: AtomicU64,
    /// Responses compressed, by coding (see [`COMPRESS_ALGORITHMS`]).
    compressed: [AtomicU64; 3],
    /// Tunnels opened and closed (the difference is how many are open).
    tunnels_opened: AtomicU64,
    tunnels_closed: AtomicU64,
    /// Bytes carried by tunnels: client to member, member to client.
    tunnel_bytes: [AtomicU64; 2],
    /// Client connections and requests cut off by a client-side clock or
    /// limit, by [`ClientLimit`].
    client: [AtomicU64; ClientLimit::ALL.len()],
    /// Per route, by the route's slot.
    routes: Block<RouteCounters>,
    /// Per member, by the member's slot.
    members: Block<MemberCounters>,
    /// Connections to members opened and closed ([`MemberConn`]).
    member_conns: [slots::Counter; 2],
}

/// Which way a tunnel carried bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    ToMember = 0,
    ToClient = 1,
}

const ERROR_KINDS: [&str; 8] = [
    "no_config",
    "no_route",
    "no_member",
    "unreachable",
    "upstream",
    "timeout",
    "bad_request",
    "client_body",
];

/// Why an attempt went to another member (or would have).
#[derive(Debug, Clone, Copy)]
pub enum Retry {
    /// The connection broke before an answer.
    Error,
    Timeout,
    /// The member answered a status the policy retries.
    Status,
    /// The policy would have retried, but the cluster's budget was spent.
    OverBudget,
}

const RETRY_REASONS: [&str; 4] = ["error", "timeout", "status", "over_budget"];
const CONNECT_REASONS: [&str; 5] = ["resolve", "refused", "timeout", "io", "tls"];
const COMPRESS_ALGORITHMS: [&str; 3] = ["br", "zstd", "gzip"];
/// A client-side clock that expired or a limit that was hit
/// (`switchyard_client_limits_total{reason}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientLimit {
    /// `--client-header-timeout`: the request head did not come in time.
    HeaderTimeout,
    /// `--client-keepalive-timeout`: an idle connection was closed.
    KeepaliveTimeout,
    /// `--client-body-timeout`: the request body stalled (408).
    BodyTimeout,
    /// A malformed request body (400).
    BodyInvalid,
    /// `--max-connections`: a new connection was refused.
    MaxConnections,
    /// `--max-header-size` / `--max-headers` (431, or 414 for the request line).
    HeadTooLarge,
    /// `--max-uri-length` (414).
    UriTooLong,
    /// A bad `Host`, or none (400).
    BadHost,
    /// A path above the root (400).
    BadPath,
    /// A request hyper could not parse (400), framing included.
    Malformed,
    /// An h2 connection that broke the protocol or its limits (GOAWAY).
    H2Protocol,
    /// A TLS handshake that did not finish within `--client-header-timeout`.
    TlsHandshakeTimeout,
}

impl ClientLimit {
    const ALL: [ClientLimit; 12] = [
        ClientLimit::HeaderTimeout,
        ClientLimit::KeepaliveTimeout,
        ClientLimit::BodyTimeout,
        ClientLimit::BodyInvalid,
        ClientLimit::MaxConnections,
        ClientLimit::HeadTooLarge,
        ClientLimit::UriTooLong,
        ClientLimit::BadHost,
        ClientLimit::BadPath,
        ClientLimit::Malformed,
        ClientLimit::H2Protocol,
        ClientLimit::TlsHandshakeTimeout,
    ];

    fn label(self) -> &'static str {
        match self {
            ClientLimit::HeaderTimeout => "header_timeout",
            ClientLimit::KeepaliveTimeout => "keepalive_timeout",
            ClientLimit::BodyTimeout => "body_timeout",
            ClientLimit::BodyInvalid => "body_invalid",
            ClientLimit::MaxConnections => "max_connections",
            ClientLimit::HeadTooLarge => "head_too_large",
            ClientLimit::UriTooLong => "uri_too_long",
            ClientLimit::BadHost => "bad_host",
            ClientLimit::BadPath => "bad_path",
            ClientLimit::Malformed => "malformed",
            ClientLimit::H2Protocol => "h2_protocol",
            ClientLimit::TlsHandshakeTimeout => "tls_handshake_timeout",
        }
    }
}

/// Counts a client cut off by a clock or a limit.
pub fn client_limit(limit: ClientLimit) {
    STATS.with(|stats| stats.client[limit as usize].fetch_add(1, Ordering::Relaxed));
}

static THREADS: Mutex<Vec<Arc<ThreadStats>>> = Mutex::new(Vec::new());
static APPLIED: AtomicU64 = AtomicU64::new(0);
static REFUSED: AtomicU64 = AtomicU64::new(0);
static EJECTIONS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    static STATS: Arc<ThreadStats> = {
        let stats = Arc::new(ThreadStats::default());
        if let Ok(mut threads) = THREADS.lock() {
            threads.push(stats.clone());
        }
        stats
    };
}

/// Counts a response sent to a client.
pub fn response(status: StatusCode) {
    let class = usize::from(status.as_u16() / 100).clamp(1, 5) - 1;
    STATS.with(|stats| stats.responses[class].fetch_add(1, Ordering::Relaxed));
}

/// Counts a request the proxy answered itself, and why.
pub fn error(error: &ProxyError) {
    let kind = match error {
        ProxyError::NoConfig => 0,
        ProxyError::NoRoute => 1,
        ProxyError::NoMember(_) => 2,
        ProxyError::AllUnreachable { .. } => 3,
        ProxyError::Upstream { .. } | ProxyError::UpgradeOverH2(_) => 4,
        ProxyError::Timeout { .. } => 5,
        ProxyError::Request(request) => {
            client_limit(match request {
                RequestError::UriTooLong => ClientLimit::UriTooLong,
                RequestError::AboveRoot => ClientLimit::BadPath,
                RequestError::BothLengths => ClientLimit::Malformed,
                RequestError::TwoHosts | RequestError::NoHost | RequestError::InvalidHost => {
                    ClientLimit::BadHost
                }
            });
            6
        }
        ProxyError::ClientBody(body) => {
            client_limit(match body {
                ClientBodyError::Idle => ClientLimit::BodyTimeout,
                ClientBodyError::Invalid | ClientBodyError::Aborted => ClientLimit::BodyInvalid,
            });
            7
        }
    };
    STATS.with(|stats| stats.errors[kind].fetch_add(1, Ordering::Relaxed));
}

/// Counts an attempt sent again, or refused by the budget.
pub fn retry(reason: Retry) {
    STATS.with(|stats| stats.retries[reason as usize].fetch_add(1, Ordering::Relaxed));
}

/// Counts a response compressed with `algorithm`.
pub fn compressed(algorithm: switchyard_shared::Algorithm) {
    use switchyard_shared::Algorithm;
    let index = match algorithm {
        Algorithm::Br => 0,
        Algorithm::Zstd => 1,
        Algorithm::Gzip => 2,
    };
    STATS.with(|stats| stats.compressed[index].fetch_add(1, Ordering::Relaxed));
}

/// Counts a connection to a member that could not be had.
pub fn connect_failure(error: &ConnectError) {
    let reason = CONNECT_REASONS
        .iter()
        .position(|r| *r == error.reason())
        .unwrap_or(3);
    STATS.with(|stats| stats.connect_failures[reason].fetch_add(1, Ordering::Relaxed));
}

/// Counts a member body cut by the idle clock.
pub fn idle_timeout() {
    STATS.with(|stats| stats.idle_timeouts.fetch_add(1, Ordering::Relaxed));
}

/// Counts a tunnel opened (`true`) or closed.
pub fn tunnel(opened: bool) {
    STATS.with(|stats| {
        let counter = if opened {
            &stats.tunnels_opened
        } else {
            &stats.tunnels_closed
        };
        counter.fetch_add(1, Ordering::Relaxed);
    });
}

/// Counts bytes a tunnel carried one way.
pub fn tunnel_bytes(direction: Direction, n: usize) {
    STATS.with(|stats| {
        stats.tunnel_bytes[direction as usize].fetch_add(n as u64, Ordering::Relaxed)
    });
}

/// Counts a snapshot applied (`true`) or refused.
pub fn snapshot(applied: bool) {
    let counter = if applied { &APPLIED } else { &REFUSED };
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Counts a member ejected by outlier detection.
pub fn ejection() {
    EJECTIONS.fetch_add(1, Ordering::Relaxed);
}

/// Calls `f` with every thread's counters.
pub(crate) fn for_each_thread(mut f: impl FnMut(&ThreadStats)) {
    if let Ok(threads) = THREADS.lock() {
        for stats in threads.iter() {
            f(stats);
        }
    }
}

/// Counts a response to a request that matched a route (`route`: its
/// slot), and how long it took, from its head read to its body sent.
#[inline]
pub fn route_response(route: u32, status: StatusCode, elapsed: Duration) {
    let class = status_class(status);
    let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
    let bucket = slots::DURATION_BUCKETS_US
        .iter()
        .position(|&bound| micros <= bound)
        .unwrap_or(slots::DURATION_BUCKETS_US.len());
    STATS.with(|stats| {
        if let Some(counters) = stats.routes.get(route) {
            counters.responses[class].add(1);
            counters.duration[bucket].add(1);
            counters.duration_sum_us.add(micros);
        }
    });
}

/// Counts a member's answer (`member`: its slot).
#[inline]
pub fn member_response(member: u32, status: StatusCode) {
    let class = status_class(status);
    STATS.with(|stats| {
        if let Some(counters) = stats.members.get(member) {
            counters.responses[class].add(1);
        }
    });
}

/// Why an attempt to a member got no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// No connection could be had.
    Connect = 0,
    /// The exchange broke before an answer.
    Broken = 1,
    /// No answer within the cluster's response timeout.
    Timeout = 2,
}

/// Counts an attempt to a member that got no answer.
pub fn member_failure(member: u32, failure: Failure) {
    STATS.with(|stats| {
        if let Some(counters) = stats.members.get(member) {
            counters.failures[failure as usize].add(1);
        }
    });
}

/// A member's counts summed over threads, for the health report: attempts it
/// answered, and attempts that failed or got a 5xx.
pub fn member_counts(member: u32) -> (u64, u64) {
    let (mut requests, mut errors) = (0, 0);
    for_each_thread(|stats| {
        if let Some(counters) = stats.members.peek(member) {
            requests += counters
                .responses
                .iter()
                .map(slots::Counter::get)
                .sum::<u64>();
            errors += counters.responses[4].get();
            errors += counters
                .failures
                .iter()
                .map(slots::Counter::get)
                .sum::<u64>();
        }
    });
    (requests, errors)
}

fn status_class(status: StatusCode) -> usize {
    usize::from(status.as_u16() / 100).clamp(1, 5) - 1
}

/// An open connection to a member (`switchyard_upstream_connections`),
/// counted from when it is made until it is dropped.
#[derive(Debug)]
pub struct MemberConn(());

impl MemberConn {
    pub fn open() -> Self {
        STATS.with(|stats| stats.member_conns[0].add(1));
        MemberConn(())
    }
}

impl Drop for MemberConn {
    fn drop(&mut self) {
        STATS.with(|stats| stats.member_conns[1].add(1));
    }
}

static CONTROL_PLANE_CONNECTED: AtomicBool = AtomicBool::new(false);
static CONTROL_PLANE_CONNECTS: AtomicU64 = AtomicU64::new(0);

/// The config stream is up (`true`) or down.
pub fn control_plane_connected(connected: bool) {
    if connected {
        CONTROL_PLANE_CONNECTS.fetch_add(1, Ordering::Relaxed);
    }
    CONTROL_PLANE_CONNECTED.store(connected, Ordering::Relaxed);
}

/// Bounds (s) of `switchyard_snapshot_apply_duration_seconds`' buckets.
const APPLY_BUCKETS: [f64; 8] = [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0];

/// Snapshot apply durations: counts per bucket (`+Inf` last) and their sum.
#[derive(Debug, Default)]
struct ApplyTimes {
    buckets: [u64; APPLY_BUCKETS.len() + 1],
    sum: f64,
}

static APPLY_TIMES: Mutex<ApplyTimes> = Mutex::new(ApplyTimes {
    buckets: [0; APPLY_BUCKETS.len() + 1],
    sum: 0.0,
});

/// Counts how long applying a snapshot took (validate, compile, swap).
pub fn apply_duration(took: Duration) {
    let seconds = took.as_secs_f64();
    let bucket = APPLY_BUCKETS
        .iter()
        .position(|&bound| seconds <= bound)
        .unwrap_or(APPLY_BUCKETS.len());
    if let Ok(mut times) = APPLY_TIMES.lock() {
        times.buckets[bucket] += 1;
        times.sum += seconds;
    }
}

/// The access log's counters (`--access-log`).
#[derive(Debug, Default)]
pub struct AccessLogStats {
    /// Lines written out.
    pub lines: AtomicU64,
    /// Lines dropped: the writer fell behind by more than its buffer, or a write failed.
    pub dropped: AtomicU64,
    /// Writes that failed (a full disk, a closed stdout).
    pub write_errors: AtomicU64,
}

/// The access log's counters, shared by its writer and the scrape.
pub static ACCESS_LOG: AccessLogStats = AccessLogStats {
    lines: AtomicU64::new(0),
    dropped: AtomicU64::new(0),
    write_errors: AtomicU64::new(0),
};

/// The Prometheus text exposition (format 0.0.4) of everything counted, and
/// of `state`, encoded by `prometheus-client`.
pub fn render(state: &State) -> String {
    let collector = encode::Scrape::take(state);
    let mut registry = prometheus_client::registry::Registry::default();
    registry.register_collector(Box::new(collector) as Box<dyn Collector>);
    let mut out = String::with_capacity(8192);
    if let Err(error) = prometheus_client::encoding::prometheus_text::encode(&mut out, &registry) {
        tracing::warn!(%error, "Encoding the metrics failed");
    }
    out
}

fn add<const N: usize>(sums: &mut [u64; N], counters: &[AtomicU64; N]) {
    for (sum, counter) in sums.iter_mut().zip(counters) {
        *sum += counter.load(Ordering::Relaxed);
    }
}
