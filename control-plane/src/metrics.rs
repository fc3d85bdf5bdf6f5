//! Counters of the control plane and their Prometheus text exposition (`GET /metrics`).

use std::sync::atomic::{AtomicU64, Ordering};

/// The counters; gauges (version, replicas) are read from their owners when rendered.
#[derive(Debug, Default)]
pub struct Metrics {
    writes_applied: AtomicU64,
    writes_unchanged: AtomicU64,
    writes_rejected: AtomicU64,
    writes_failed: AtomicU64,
    pushes: AtomicU64,
    acks: AtomicU64,
    nacks: AtomicU64,
}

/// How a write through the API ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteResult {
    /// A new version was stored.
    Applied,
    /// Valid, but it changed nothing: no new version.
    Unchanged,
    /// Refused by validation (4xx).
    Rejected,
    /// Could not be stored (5xx).
    Failed,
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
            WriteResult::Rejected => &self.writes_rejected,
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

    /// The Prometheus text exposition format (version 0.0.4).
    pub fn render(&self, gauges: Gauges) -> String {
        let mut out = String::with_capacity(1024);
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
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
            "Config writes through the API, by result.",
            &[
                ("result=\"applied\"", get(&self.writes_applied)),
                ("result=\"unchanged\"", get(&self.writes_unchanged)),
                ("result=\"rejected\"", get(&self.writes_rejected)),
                ("result=\"failed\"", get(&self.writes_failed)),
            ],
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
        assert!(text.contains("# TYPE switchyard_snapshot_pushes_total counter"));
    }
}
