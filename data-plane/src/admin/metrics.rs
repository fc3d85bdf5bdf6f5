//! A replica's counters and their Prometheus text exposition (admin `GET /metrics`).
//!
//! Request counters live per thread — each worker writes only its own, so the
//! request path never contends on a shared cache line — and are summed when scraped.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use http::StatusCode;

use crate::config::apply::State;
use crate::proxy::ProxyError;

/// What one thread counted.
#[derive(Debug, Default)]
struct ThreadStats {
    /// Responses by status class: 1xx … 5xx.
    responses: [AtomicU64; 5],
    /// Requests the proxy answered itself, by [`ProxyError`] kind (see [`ERROR_KINDS`]).
    errors: [AtomicU64; 6],
    /// Tunnels opened and closed (the difference is how many are open).
    tunnels_opened: AtomicU64,
    tunnels_closed: AtomicU64,
    /// Bytes carried by tunnels: client to member, member to client.
    tunnel_bytes: [AtomicU64; 2],
}

/// Which way a tunnel carried bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    ToMember = 0,
    ToClient = 1,
}

const ERROR_KINDS: [&str; 6] = [
    "no_config",
    "no_route",
    "no_member",
    "all_refused",
    "upstream",
    "timeout",
];

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
    };
    STATS.with(|stats| stats.errors[kind].fetch_add(1, Ordering::Relaxed));
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

/// The Prometheus text exposition of everything counted, and of `state`.
pub fn render(state: &State) -> String {
    let mut responses = [0u64; 5];
    let mut errors = [0u64; 6];
    let (mut opened, mut closed, mut bytes) = (0u64, 0u64, [0u64; 2]);
    if let Ok(threads) = THREADS.lock() {
        for stats in threads.iter() {
            opened += stats.tunnels_opened.load(Ordering::Relaxed);
            closed += stats.tunnels_closed.load(Ordering::Relaxed);
            for (sum, counter) in bytes.iter_mut().zip(&stats.tunnel_bytes) {
                *sum += counter.load(Ordering::Relaxed);
            }
            for (sum, counter) in responses.iter_mut().zip(&stats.responses) {
                *sum += counter.load(Ordering::Relaxed);
            }
            for (sum, counter) in errors.iter_mut().zip(&stats.errors) {
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
    out.push_str("# HELP switchyard_tunnel_bytes_total Bytes carried by tunnels (Upgrade, WebSocket), by direction.\n");
    out.push_str("# TYPE switchyard_tunnel_bytes_total counter\n");
    for (direction, count) in ["to_member", "to_client"].iter().zip(bytes) {
        out.push_str(&format!(
            "switchyard_tunnel_bytes_total{{direction=\"{direction}\"}} {count}\n"
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
