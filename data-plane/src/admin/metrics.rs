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
use crate::upstream::body::ClientBodyError;

/// What one thread counted.
#[derive(Debug, Default)]
struct ThreadStats {
    /// Responses by status class: 1xx … 5xx.
    responses: [AtomicU64; 5],
    /// Requests the proxy answered itself, by [`ProxyError`] kind (see [`ERROR_KINDS`]).
    errors: [AtomicU64; 8],
    /// Client connections and requests cut off by a client-side clock or
    /// limit, by [`ClientLimit`].
    client: [AtomicU64; ClientLimit::ALL.len()],
}

const ERROR_KINDS: [&str; 8] = [
    "no_config",
    "no_route",
    "no_member",
    "all_refused",
    "upstream",
    "timeout",
    "bad_request",
    "client_body",
];

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
}

impl ClientLimit {
    const ALL: [ClientLimit; 11] = [
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
        ProxyError::AllRefused { .. } => 3,
        ProxyError::Upstream { .. } => 4,
        ProxyError::Timeout(_) => 5,
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

/// Counts a snapshot applied (`true`) or refused.
pub fn snapshot(applied: bool) {
    let counter = if applied { &APPLIED } else { &REFUSED };
    counter.fetch_add(1, Ordering::Relaxed);
}

/// The Prometheus text exposition of everything counted, and of `state`.
pub fn render(state: &State) -> String {
    let mut responses = [0u64; 5];
    let mut errors = [0u64; 8];
    let mut client = [0u64; ClientLimit::ALL.len()];
    if let Ok(threads) = THREADS.lock() {
        for stats in threads.iter() {
            for (sum, counter) in responses.iter_mut().zip(&stats.responses) {
                *sum += counter.load(Ordering::Relaxed);
            }
            for (sum, counter) in errors.iter_mut().zip(&stats.errors) {
                *sum += counter.load(Ordering::Relaxed);
            }
            for (sum, counter) in client.iter_mut().zip(&stats.client) {
                *sum += counter.load(Ordering::Relaxed);
            }
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
            "Members healthy and not in their retry window.",
            healthy as u64,
        ),
    ];
    for (name, kind, help, value) in gauges {
        out.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
        ));
    }
    out
}
