//! A replica's counters and their Prometheus text exposition (admin `GET /metrics`).
//!
//! Request counters live per thread — each worker writes only its own, so the
//! request path never contends on a shared cache line — and are summed when scraped.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use http::StatusCode;

use crate::config::apply::State;
use crate::proxy::ProxyError;
use crate::proxy::request::RequestError;
use crate::upstream::ConnectError;
use crate::upstream::body::ClientBodyError;

/// What one thread counted.
#[derive(Debug, Default)]
struct ThreadStats {
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

/// The Prometheus text exposition of everything counted, and of `state`.
pub fn render(state: &State) -> String {
    let mut responses = [0u64; 5];
    let mut errors = [0u64; 8];
    let mut client = [0u64; ClientLimit::ALL.len()];
    let mut retries = [0u64; 4];
    let mut connect_failures = [0u64; 5];
    let mut idle_timeouts = 0;
    let mut compressed = [0u64; 3];
    let (mut opened, mut closed, mut bytes) = (0u64, 0u64, [0u64; 2]);
    if let Ok(threads) = THREADS.lock() {
        for stats in threads.iter() {
            add(&mut responses, &stats.responses);
            add(&mut errors, &stats.errors);
            add(&mut retries, &stats.retries);
            add(&mut connect_failures, &stats.connect_failures);
            idle_timeouts += stats.idle_timeouts.load(Ordering::Relaxed);
            add(&mut compressed, &stats.compressed);
            opened += stats.tunnels_opened.load(Ordering::Relaxed);
            closed += stats.tunnels_closed.load(Ordering::Relaxed);
            add(&mut bytes, &stats.tunnel_bytes);
            add(&mut client, &stats.client);
        }
    }
    let mut out = String::with_capacity(2048);
    out.push_str("# HELP switchyard_responses_total Responses sent to clients, by status class.\n");
    out.push_str("# TYPE switchyard_responses_total counter\n");
    for (i, count) in responses.iter().enumerate() {
        out.push_str(&format!(
            "switchyard_responses_total{{class=\"{}xx\"}} {count}\n",
            i + 1
        ));
    }
    out.push_str(
        "# HELP switchyard_proxy_errors_total Requests the proxy answered itself, by reason.\n",
    );
    out.push_str("# TYPE switchyard_proxy_errors_total counter\n");
    for (kind, count) in ERROR_KINDS.iter().zip(errors) {
        out.push_str(&format!(
            "switchyard_proxy_errors_total{{reason=\"{kind}\"}} {count}\n"
        ));
    }
    labelled(
        &mut out,
        "switchyard_retries_total",
        "Attempts sent to another member (over_budget: refused by the retry budget).",
        "reason",
        &RETRY_REASONS,
        &retries,
    );
    labelled(
        &mut out,
        "switchyard_upstream_connect_failures_total",
        "Connections to members that could not be had, by reason.",
        "reason",
        &CONNECT_REASONS,
        &connect_failures,
    );
    labelled(
        &mut out,
        "switchyard_responses_compressed_total",
        "Responses compressed on their way to the client (a route's compress), by coding.",
        "algorithm",
        &COMPRESS_ALGORITHMS,
        &compressed,
    );
    out.push_str(&format!(
        "# HELP switchyard_upstream_idle_timeouts_total Member bodies cut after the cluster's idle_timeout.\n\
         # TYPE switchyard_upstream_idle_timeouts_total counter\n\
         switchyard_upstream_idle_timeouts_total {idle_timeouts}\n"
    ));
    out.push_str("# HELP switchyard_tunnel_bytes_total Bytes carried by tunnels (Upgrade, WebSocket), by direction.\n");
    out.push_str("# TYPE switchyard_tunnel_bytes_total counter\n");
    for (direction, count) in ["to_member", "to_client"].iter().zip(bytes) {
        out.push_str(&format!(
            "switchyard_tunnel_bytes_total{{direction=\"{direction}\"}} {count}\n"
        ));
    }
    out.push_str(
        "# HELP switchyard_client_limits_total Clients cut off by a client-side clock or limit, by reason.\n",
    );
    out.push_str("# TYPE switchyard_client_limits_total counter\n");
    for (limit, count) in ClientLimit::ALL.iter().zip(client) {
        out.push_str(&format!(
            "switchyard_client_limits_total{{reason=\"{}\"}} {count}\n",
            limit.label()
        ));
    }
    let running = state.running();
    let members = state.member_health();
    let healthy = members.iter().filter(|m| m.healthy).count();
    let ejected = members.iter().filter(|m| m.ejected).count();
    let gauges = [
        (
            "switchyard_config_version",
            "gauge",
            "Version of the config this replica runs (0: none).",
            running.as_ref().map_or(0, |r| r.version),
        ),
        (
            "switchyard_ready",
            "gauge",
            "1 once a snapshot is applied.",
            u64::from(running.is_some()),
        ),
        (
            "switchyard_snapshots_applied_total",
            "counter",
            "Snapshots applied.",
            APPLIED.load(Ordering::Relaxed),
        ),
        (
            "switchyard_snapshots_refused_total",
            "counter",
            "Snapshots refused (NACKed).",
            REFUSED.load(Ordering::Relaxed),
        ),
        (
            "switchyard_tunnels_open",
            "gauge",
            "Tunnels (Upgrade, WebSocket) open now.",
            opened.saturating_sub(closed),
        ),
        (
            "switchyard_tunnels_total",
            "counter",
            "Tunnels opened.",
            opened,
        ),
        (
            "switchyard_client_connections",
            "gauge",
            "Client connections open (capped by --max-connections).",
            crate::listener::open_connections() as u64,
        ),
        (
            "switchyard_members",
            "gauge",
            "Members in the table.",
            members.len() as u64,
        ),
        (
            "switchyard_members_usable",
            "gauge",
            "Members healthy, not in their retry window and not ejected.",
            healthy as u64,
        ),
        (
            "switchyard_members_ejected",
            "gauge",
            "Members ejected by outlier detection now.",
            ejected as u64,
        ),
        (
            "switchyard_member_ejections_total",
            "counter",
            "Ejections of members by outlier detection.",
            EJECTIONS.load(Ordering::Relaxed),
        ),
    ];
    for (name, kind, help, value) in gauges
        .into_iter()
        .chain(crate::listener::tls::stats().metrics())
    {
        out.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
        ));
    }
    out
}

fn add<const N: usize>(sums: &mut [u64; N], counters: &[AtomicU64; N]) {
    for (sum, counter) in sums.iter_mut().zip(counters) {
        *sum += counter.load(Ordering::Relaxed);
    }
}

/// A counter with one label, one line per value.
fn labelled(
    out: &mut String,
    name: &str,
    help: &str,
    label: &str,
    values: &[&str],
    counts: &[u64],
) {
    out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} counter\n"));
    for (value, count) in values.iter().zip(counts) {
        out.push_str(&format!("{name}{{{label}=\"{value}\"}} {count}\n"));
    }
}
