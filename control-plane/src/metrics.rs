//! Counters of the control plane and their Prometheus text exposition (`GET /metrics`).

use std::sync::atomic::{AtomicU64, Ordering};

/// The counters; gauges (version, replicas) are read from their owners when rendered.
#[derive(Debug, Default)]
pub struct Metrics {
    writes_applied: AtomicU64,
    writes_unchanged: AtomicU64,
    writes_rejected: [AtomicU64; RejectReason::ALL.len()],
    writes_failed: AtomicU64,
    pushes: AtomicU64,
    acks: AtomicU64,
    nacks: AtomicU64,
    handshake_errors: [AtomicU64; HandshakeFailure::ALL.len()],
    streams_refused: [AtomicU64; StreamRefusal::ALL.len()],
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

    fn index(self) -> usize {
        RejectReason::ALL
            .iter()
            .position(|r| *r == self)
            .unwrap_or_default()
    }
}

/// The gauges, read at render time.
#[derive(Debug, Clone, Copy, Default)]
pub struct Gauges {
    pub config_version: u64,
    pub replicas_connected: usize,
    pub replicas_known: usize,
}

impl Metrics {
    pub fn write(&self, result: WriteResult) {
        let counter = match result {
            WriteResult::Applied => &self.writes_applied,
            WriteResult::Unchanged => &self.writes_unchanged,
            WriteResult::Rejected(reason) => match self.writes_rejected.get(reason.index()) {
                Some(counter) => counter,
                None => return,
            },
            WriteResult::Failed => &self.writes_failed,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// A snapshot was queued on a config stream.
    pub fn push(&self) {
        self.pushes.fetch_add(1, Ordering::Relaxed);
    }

    pub fn ack(&self) {
        self.acks.fetch_add(1, Ordering::Relaxed);
    }

    pub fn nack(&self) {
        self.nacks.fetch_add(1, Ordering::Relaxed);
    }

    /// A TLS handshake on the config stream's listener failed.
    pub fn handshake_failed(&self, reason: HandshakeFailure) {
        if let Some(i) = HandshakeFailure::ALL.iter().position(|r| *r == reason)
            && let Some(counter) = self.handshake_errors.get(i)
        {
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A config stream was refused after its hello (or for want of one).
    pub fn stream_refused(&self, reason: StreamRefusal) {
        if let Some(i) = StreamRefusal::ALL.iter().position(|r| *r == reason)
            && let Some(counter) = self.streams_refused.get(i)
        {
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The Prometheus text exposition format (version 0.0.4).
    pub fn render(&self, gauges: Gauges) -> String {
        let mut out = String::with_capacity(1024);
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let rejected: Vec<(String, u64)> = RejectReason::ALL
            .iter()
            .zip(&self.writes_rejected)
            .map(|(reason, count)| {
                (
                    format!("result=\"rejected\",reason=\"{}\"", reason.as_str()),
                    get(count),
                )
            })
            .collect();
        let mut writes = vec![
            ("result=\"applied\"", get(&self.writes_applied)),
            ("result=\"unchanged\"", get(&self.writes_unchanged)),
        ];
        writes.extend(rejected.iter().map(|(labels, n)| (labels.as_str(), *n)));
        writes.push(("result=\"failed\"", get(&self.writes_failed)));
        metric(
            &mut out,
            "switchyard_config_version",
            "gauge",
            "The current config version.",
            &[("", gauges.config_version)],
        );
        metric(
            &mut out,
            "switchyard_replicas_connected",
            "gauge",
            "Data-plane replicas with an open config stream.",
            &[("", gauges.replicas_connected as u64)],
        );
        metric(
            &mut out,
            "switchyard_replicas_known",
            "gauge",
            "Data-plane replicas seen since start.",
            &[("", gauges.replicas_known as u64)],
        );
        metric(
            &mut out,
            "switchyard_config_writes_total",
            "counter",
            "Config writes through the API (PUT, POST, PATCH, DELETE), by result; refused ones by reason.",
            &writes,
        );
        metric(
            &mut out,
            "switchyard_snapshot_pushes_total",
            "counter",
            "Snapshots sent to replicas.",
            &[("", get(&self.pushes))],
        );
        metric(
            &mut out,
            "switchyard_acks_total",
            "counter",
            "Snapshots acknowledged by replicas.",
            &[("", get(&self.acks))],
        );
        metric(
            &mut out,
            "switchyard_nacks_total",
            "counter",
            "Snapshots refused by replicas.",
            &[("", get(&self.nacks))],
        );
        let by_reason = |names: Vec<&'static str>, counters: &[AtomicU64]| -> Vec<(String, u64)> {
            names
                .into_iter()
                .zip(counters)
                .map(|(name, n)| (format!("reason=\"{name}\""), get(n)))
                .collect()
        };
        let handshakes = by_reason(
            HandshakeFailure::ALL.iter().map(|r| r.as_str()).collect(),
            &self.handshake_errors,
        );
        metric(
            &mut out,
            "switchyard_grpc_tls_handshake_errors_total",
            "counter",
            "TLS handshakes refused on the config stream's listener, by reason.",
            &handshakes
                .iter()
                .map(|(l, n)| (l.as_str(), *n))
                .collect::<Vec<_>>(),
        );
        let refused = by_reason(
            StreamRefusal::ALL.iter().map(|r| r.as_str()).collect(),
            &self.streams_refused,
        );
        metric(
            &mut out,
            "switchyard_config_streams_refused_total",
            "counter",
            "Config streams refused after their connection was accepted, by reason.",
            &refused
                .iter()
                .map(|(l, n)| (l.as_str(), *n))
                .collect::<Vec<_>>(),
        );
        out
    }
}

fn metric(out: &mut String, name: &str, kind: &str, help: &str, samples: &[(&str, u64)]) {
    out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
    for (labels, value) in samples {
        if labels.is_empty() {
            out.push_str(&format!("{name} {value}\n"));
        } else {
            out.push_str(&format!("{name}{{{labels}}} {value}\n"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_gauges() {
        let metrics = Metrics::default();
        metrics.write(WriteResult::Applied);
        metrics.write(WriteResult::Rejected(RejectReason::JsonData));
        metrics.write(WriteResult::Rejected(RejectReason::JsonData));
        metrics.push();
        let text = metrics.render(Gauges {
            config_version: 7,
            replicas_connected: 2,
            replicas_known: 3,
        });
        assert!(text.contains("switchyard_config_version 7\n"), "{text}");
        assert!(text.contains("switchyard_replicas_connected 2\n"), "{text}");
        assert!(
            text.contains("switchyard_config_writes_total{result=\"applied\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "switchyard_config_writes_total{result=\"rejected\",reason=\"json_data\"} 2\n"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "switchyard_config_writes_total{result=\"rejected\",reason=\"invalid\"} 0\n"
            ),
            "{text}"
        );
        assert!(text.contains("# TYPE switchyard_snapshot_pushes_total counter"));
    }
}
