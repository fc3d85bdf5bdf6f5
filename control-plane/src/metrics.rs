//! The control plane's metrics and their exposition (`GET /metrics`), kept
//! and written by the `prometheus-client` crate in the OpenMetrics text
//! format: counters end in `_total`, durations are `_seconds` histograms.
//! Every label value comes from a fixed set (an enum, a route's operation
//! id, a status code), never from a request's path or a header, so the
//! series stay few and no token can reach this page.

use std::fmt;
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, text::encode};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use crate::registry::ReplicaState;

/// The content type of [`Metrics::render`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The upper bounds (seconds) of `switchyard_propagation_seconds`: from 1 ms
/// (a replica next door) to 30 s (one that had to reconnect).
const PROPAGATION_BUCKETS: [f64; 15] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0,
];

/// Labels from a fixed set: `[("result", "rejected"), ("reason", "invalid")]`.
type Labels = Vec<(&'static str, &'static str)>;

/// The labels of `switchyard_api_requests_total`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ApiRequest {
    /// The handler's operation id in the OpenAPI document (`put_cluster`),
    /// `not_found` or `method_not_allowed`.
    pub operation: String,
    pub status: u16,
}

/// Every metric of the control plane, registered once; gauges (version,
/// replicas) are set from their owners when the page is rendered.
pub struct Metrics {
    registry: Registry,
    writes: Family<Labels, Counter>,
    pushes: Counter,
    acks: Counter,
    nacks: Counter,
    handshake_errors: Family<Labels, Counter>,
    streams_refused: Family<Labels, Counter>,
    api_requests: Family<ApiRequest, Counter>,
    propagation: Histogram,
    config_version: Gauge,
    replicas: Family<Labels, Gauge>,
    replicas_connected: Gauge,
    replicas_known: Gauge,
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let metrics = Metrics {
            writes: Family::default(),
            pushes: Counter::default(),
            acks: Counter::default(),
            nacks: Counter::default(),
            handshake_errors: Family::default(),
            streams_refused: Family::default(),
            api_requests: Family::default(),
            propagation: Histogram::new(PROPAGATION_BUCKETS),
            config_version: Gauge::default(),
            replicas: Family::default(),
            replicas_connected: Gauge::default(),
            replicas_known: Gauge::default(),
            registry: Registry::default(),
        };
        // Every series of a fixed set is shown from the start, at 0.
        for labels in write_labels() {
            metrics.writes.get_or_create(&labels).inc_by(0);
        }
        for reason in HandshakeFailure::ALL {
            metrics
                .handshake_errors
                .get_or_create(&vec![("reason", reason.as_str())])
                .inc_by(0);
        }
        for reason in StreamRefusal::ALL {
            metrics
                .streams_refused
                .get_or_create(&vec![("reason", reason.as_str())])
                .inc_by(0);
        }
        registry.register(
            "switchyard_config_version",
            "The current config version.",
            metrics.config_version.clone(),
        );
        registry.register(
            "switchyard_replicas",
            "Data-plane replicas seen since start, by state against the current version.",
            metrics.replicas.clone(),
        );
        registry.register(
            "switchyard_replicas_connected",
            "Data-plane replicas with an open config stream.",
            metrics.replicas_connected.clone(),
        );
        registry.register(
            "switchyard_replicas_known",
            "Data-plane replicas seen since start.",
            metrics.replicas_known.clone(),
        );
        registry.register(
            "switchyard_api_requests",
            "REST API requests, by operation (the handler) and status.",
            metrics.api_requests.clone(),
        );
        registry.register(
            "switchyard_config_writes",
            "Config writes through the API (PUT, POST, PATCH, DELETE), by result; refused ones by reason.",
            metrics.writes.clone(),
        );
        registry.register(
            "switchyard_snapshot_pushes",
            "Snapshots sent to replicas.",
            metrics.pushes.clone(),
        );
        registry.register(
            "switchyard_acks",
            "Snapshots acknowledged by replicas.",
            metrics.acks.clone(),
        );
        registry.register(
            "switchyard_nacks",
            "Snapshots refused by replicas.",
            metrics.nacks.clone(),
        );
        registry.register_with_unit(
            "switchyard_propagation",
            "From a version stored to every connected replica running it (or a newer one).",
            Unit::Seconds,
            metrics.propagation.clone(),
        );
        registry.register(
            "switchyard_grpc_tls_handshake_errors",
            "TLS handshakes refused on the config stream's listener, by reason.",
            metrics.handshake_errors.clone(),
        );
        registry.register(
            "switchyard_config_streams_refused",
            "Config streams refused after their connection was accepted, by reason.",
            metrics.streams_refused.clone(),
        );
        Metrics {
            registry,
            ..metrics
        }
    }
}

/// The labels of every `switchyard_config_writes_total` series.
fn write_labels() -> Vec<Labels> {
    let mut all = vec![vec![("result", "applied")], vec![("result", "unchanged")]];
    all.extend(
        RejectReason::ALL
            .iter()
            .map(|reason| vec![("result", "rejected"), ("reason", reason.as_str())]),
    );
    all.push(vec![("result", "failed")]);
    all
}

/// Why a TLS handshake on the config stream's listener failed: the `reason`
/// label of `switchyard_grpc_tls_handshake_errors_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeFailure {
    /// Mutual TLS, and the replica presented no certificate.
    NoCertificate,
    /// A certificate not signed by the client CA (or expired, or not for a client).
    BadCertificate,
    /// Not TLS at all (a plaintext replica).
    NotTls,
    /// No handshake within its time.
    Timeout,
    /// Anything else (no common version or cipher, the peer went away).
    Other,
}

impl HandshakeFailure {
    pub const ALL: [HandshakeFailure; 5] = [
        HandshakeFailure::NoCertificate,
        HandshakeFailure::BadCertificate,
        HandshakeFailure::NotTls,
        HandshakeFailure::Timeout,
        HandshakeFailure::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            HandshakeFailure::NoCertificate => "no_certificate",
            HandshakeFailure::BadCertificate => "bad_certificate",
            HandshakeFailure::NotTls => "not_tls",
            HandshakeFailure::Timeout => "timeout",
            HandshakeFailure::Other => "other",
        }
    }
}

/// Why a config stream was refused after its connection was accepted: the
/// `reason` label of `switchyard_config_streams_refused_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamRefusal {
    /// No hello first, an empty node id, or no hello in time.
    BadHello,
    /// The hello claims another node id than the client certificate names.
    NodeIdMismatch,
    /// The client certificate names no node id (no DNS SAN, no CN).
    NamelessCertificate,
}

impl StreamRefusal {
    pub const ALL: [StreamRefusal; 3] = [
        StreamRefusal::BadHello,
        StreamRefusal::NodeIdMismatch,
        StreamRefusal::NamelessCertificate,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            StreamRefusal::BadHello => "bad_hello",
            StreamRefusal::NodeIdMismatch => "node_id_mismatch",
            StreamRefusal::NamelessCertificate => "nameless_certificate",
        }
    }
}

/// How a write through the API ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteResult {
    /// A new version was stored.
    Applied,
    /// Valid, but it changed nothing: no new version.
    Unchanged,
    /// Refused (4xx), before or after its body was read.
    Rejected(RejectReason),
    /// Could not be stored (5xx).
    Failed,
}

/// Why a write was refused: the `reason` label of
/// `switchyard_config_writes_total{result="rejected"}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectReason {
    /// The change broke a rule (400).
    Invalid,
    /// It names something that does not exist (404).
    NotFound,
    /// It clashes with what is there (409).
    Conflict,
    /// The body is not sent as `application/json`.
    ContentType,
    /// The body is not JSON.
    JsonSyntax,
    /// The body is JSON of the wrong shape: an unknown field, a wrong type, an array.
    JsonData,
    /// The body is larger than the API takes (413).
    TooLarge,
    /// No such endpoint (404) or method (405).
    NoSuchEndpoint,
    /// No API token, or not `Authorization: Bearer <token>` (401).
    Unauthorized,
    /// An API token that is not accepted (403).
    Forbidden,
}

impl RejectReason {
    pub const ALL: [RejectReason; 10] = [
        RejectReason::Invalid,
        RejectReason::NotFound,
        RejectReason::Conflict,
        RejectReason::ContentType,
        RejectReason::JsonSyntax,
        RejectReason::JsonData,
        RejectReason::TooLarge,
        RejectReason::NoSuchEndpoint,
        RejectReason::Unauthorized,
        RejectReason::Forbidden,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::Invalid => "invalid",
            RejectReason::NotFound => "not_found",
            RejectReason::Conflict => "conflict",
            RejectReason::ContentType => "content_type",
            RejectReason::JsonSyntax => "json_syntax",
            RejectReason::JsonData => "json_data",
            RejectReason::TooLarge => "too_large",
            RejectReason::NoSuchEndpoint => "no_such_endpoint",
            RejectReason::Unauthorized => "unauthorized",
            RejectReason::Forbidden => "forbidden",
        }
    }
}

/// The gauges, read from their owners when the page is rendered.
#[derive(Debug, Clone, Copy, Default)]
pub struct Gauges {
    pub config_version: u64,
    pub replicas_connected: usize,
    pub replicas_known: usize,
    /// How many replicas are in each state, in the order of [`REPLICA_STATES`].
    pub replicas_by_state: [usize; 4],
}

/// The states of `switchyard_replicas{state}`.
pub const REPLICA_STATES: [ReplicaState; 4] = [
    ReplicaState::Synced,
    ReplicaState::Stale,
    ReplicaState::Nacked,
    ReplicaState::Disconnected,
];

fn state_label(state: ReplicaState) -> &'static str {
    match state {
        ReplicaState::Synced => "synced",
        ReplicaState::Stale => "stale",
        ReplicaState::Nacked => "nacked",
        ReplicaState::Disconnected => "disconnected",
    }
}

fn gauge_value(n: impl TryInto<i64>) -> i64 {
    n.try_into().unwrap_or(i64::MAX)
}

impl Metrics {
    pub fn write(&self, result: WriteResult) {
        let labels = match result {
            WriteResult::Applied => vec![("result", "applied")],
            WriteResult::Unchanged => vec![("result", "unchanged")],
            WriteResult::Rejected(reason) => {
                vec![("result", "rejected"), ("reason", reason.as_str())]
            }
            WriteResult::Failed => vec![("result", "failed")],
        };
        self.writes.get_or_create(&labels).inc();
    }

    /// A snapshot was queued on a config stream.
    pub fn push(&self) {
        self.pushes.inc();
    }

    pub fn ack(&self) {
        self.acks.inc();
    }

    pub fn nack(&self) {
        self.nacks.inc();
    }

    /// A TLS handshake on the config stream's listener failed.
    pub fn handshake_failed(&self, reason: HandshakeFailure) {
        self.handshake_errors
            .get_or_create(&vec![("reason", reason.as_str())])
            .inc();
    }

    /// A config stream was refused after its hello (or for want of one).
    pub fn stream_refused(&self, reason: StreamRefusal) {
        self.streams_refused
            .get_or_create(&vec![("reason", reason.as_str())])
            .inc();
    }

    /// A REST API request was answered.
    pub fn api_request(&self, operation: &str, status: u16) {
        self.api_requests
            .get_or_create(&ApiRequest {
                operation: operation.to_owned(),
                status,
            })
            .inc();
    }

    /// A version reached every connected replica `took` after it was stored.
    pub fn propagated(&self, took: Duration) {
        self.propagation.observe(took.as_secs_f64());
    }

    /// The OpenMetrics text of every metric ([`CONTENT_TYPE`]), with `gauges`.
    pub fn render(&self, gauges: Gauges) -> String {
        self.config_version.set(gauge_value(gauges.config_version));
        self.replicas_connected
            .set(gauge_value(gauges.replicas_connected));
        self.replicas_known.set(gauge_value(gauges.replicas_known));
        for (state, count) in REPLICA_STATES.iter().zip(gauges.replicas_by_state) {
            self.replicas
                .get_or_create(&vec![("state", state_label(*state))])
                .set(gauge_value(count));
        }
        let mut out = String::with_capacity(4096);
        // Writing to a String cannot fail; a metric that could not be encoded is left out.
        if let Err(e) = encode(&mut out, &self.registry) {
            tracing::warn!(error = %e, "Cannot encode the metrics");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_gauges_and_the_histogram_as_openmetrics() {
        let metrics = Metrics::default();
        metrics.write(WriteResult::Applied);
        metrics.write(WriteResult::Rejected(RejectReason::JsonData));
        metrics.write(WriteResult::Rejected(RejectReason::JsonData));
        metrics.push();
        metrics.api_request("put_cluster", 200);
        metrics.api_request("put_cluster", 200);
        metrics.api_request("not_found", 404);
        metrics.handshake_failed(HandshakeFailure::NoCertificate);
        metrics.propagated(Duration::from_millis(3));
        metrics.propagated(Duration::from_millis(40));
        let text = metrics.render(Gauges {
            config_version: 7,
            replicas_connected: 2,
            replicas_known: 3,
            replicas_by_state: [1, 1, 0, 1],
        });
        for line in [
            "switchyard_config_version 7\n",
            "switchyard_replicas_connected 2\n",
            "switchyard_replicas{state=\"synced\"} 1\n",
            "switchyard_replicas{state=\"nacked\"} 0\n",
            "switchyard_replicas{state=\"disconnected\"} 1\n",
            "switchyard_config_writes_total{result=\"applied\"} 1\n",
            "switchyard_config_writes_total{result=\"rejected\",reason=\"json_data\"} 2\n",
            "switchyard_config_writes_total{result=\"rejected\",reason=\"invalid\"} 0\n",
            "switchyard_config_writes_total{result=\"failed\"} 0\n",
            "# TYPE switchyard_snapshot_pushes counter\n",
            "switchyard_snapshot_pushes_total 1\n",
            "switchyard_api_requests_total{operation=\"put_cluster\",status=\"200\"} 2\n",
            "switchyard_api_requests_total{operation=\"not_found\",status=\"404\"} 1\n",
            "switchyard_grpc_tls_handshake_errors_total{reason=\"no_certificate\"} 1\n",
            "switchyard_grpc_tls_handshake_errors_total{reason=\"not_tls\"} 0\n",
            "switchyard_config_streams_refused_total{reason=\"node_id_mismatch\"} 0\n",
            "# TYPE switchyard_propagation_seconds histogram\n",
            "# UNIT switchyard_propagation_seconds seconds\n",
            "switchyard_propagation_seconds_count 2\n",
            "switchyard_propagation_seconds_bucket{le=\"0.005\"} 1\n",
            "switchyard_propagation_seconds_bucket{le=\"0.05\"} 2\n",
            "# EOF\n",
        ] {
            assert!(text.contains(line), "no {line:?} in:\n{text}");
        }
    }
}
