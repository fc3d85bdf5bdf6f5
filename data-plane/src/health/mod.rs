//! Active health checks (mod_proxy_hcheck): one task per checked member that
//! asks the member for the cluster's check path and flips the member's health
//! after N agreeing answers. Tasks follow the table: a swap starts the checks of
//! new members and stops those of members that are gone. Passive health
//! (ejection of members that keep failing requests) is in [`outlier`].

pub mod outlier;

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, header};
use http_body_util::BodyExt as _;
use switchyard_shared::HealthCheck;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::config::table::{MemberEntry, Table};
use crate::upstream::body::UpstreamBody;
use crate::upstream::{Limits, MemberShared, Reply, SendError};

/// The running checks, keyed by member state and check settings.
#[derive(Debug, Default)]
pub struct HealthChecks {
    running: HashMap<(usize, HealthCheck), Check>,
}

#[derive(Debug)]
struct Check(JoinHandle<()>);

impl Drop for Check {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl HealthChecks {
    /// Runs exactly the checks that `table` asks for; must be called within a runtime.
    pub fn reconcile(&mut self, table: &Table) {
        let mut wanted = HashMap::new();
        for cluster in &table.clusters {
            let Some(check) = &cluster.health_check else {
                continue;
            };
            for member in &cluster.members {
                let key = (Arc::as_ptr(&member.shared) as usize, check.clone());
                let running = self.running.remove(&key);
                let task = running.unwrap_or_else(|| {
                    Check(spawn_check(cluster.name.clone(), member, check.clone()))
                });
                wanted.insert(key, task);
            }
        }
        // Whatever is left in `running` is no longer wanted; dropping aborts it.
        self.running = wanted;
        // Members that are no longer checked are healthy again, and those
        // that outlier detection no longer watches are back.
        for cluster in &table.clusters {
            for member in &cluster.members {
                if cluster.health_check.is_none() && !member.shared.is_healthy() {
                    member.shared.set_healthy(true, None);
                }
                if cluster.outlier_detection.is_none() {
                    member.shared.clear_ejections();
                }
            }
        }
    }
}

fn spawn_check(cluster: String, member: &MemberEntry, check: HealthCheck) -> JoinHandle<()> {
    let shared = member.shared.clone();
    let host = member.shared.host_header.clone();
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(check.interval.0);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let (mut successes, mut failures) = (0u32, 0u32);
        loop {
            interval.tick().await;
            match probe(&shared, &host, &check).await {
                Ok(()) => {
                    successes = successes.saturating_add(1);
                    failures = 0;
                    if !shared.is_healthy() && successes >= check.healthy_threshold {
                        info!(cluster = %cluster, member.id = %shared.id, "Member is healthy again");
                        shared.set_healthy(true, None);
                    }
                }
                Err(why) => {
                    failures = failures.saturating_add(1);
                    successes = 0;
                    if shared.is_healthy() && failures >= check.unhealthy_threshold {
                        warn!(cluster = %cluster, member.id = %shared.id, reason = %why, "Member is unhealthy");
                        shared.set_healthy(false, Some(why));
                    }
                }
            }
        }
    })
}

/// How much of a check's response body is read; past it the connection is
/// closed (never pooled) and the status alone decides.
const BODY_LIMIT: usize = 4 * 1024;

/// One check: a GET of the check path that must answer 2xx or 3xx, the whole
/// exchange (head and body, at most [`BODY_LIMIT`] of it) within the check's
/// timeout: a member that streams its answer without end fails the check.
async fn probe(
    member: &MemberShared,
    host: &http::HeaderValue,
    check: &HealthCheck,
) -> Result<(), String> {
    let uri = http::Uri::try_from(check.path.as_str()).map_err(|e| e.to_string())?;
    let mut request = Request::new(UpstreamBody::Empty);
    *request.uri_mut() = uri;
    request.headers_mut().insert(header::HOST, host.clone());
    request.headers_mut().insert(
        header::USER_AGENT,
        http::HeaderValue::from_static("switchyard-health-check"),
    );
    let limits = Limits {
        head_timeout: check.timeout.0,
        idle: check.timeout.0,
        progress: None,
        fresh: false,
    };
    tokio::time::timeout(check.timeout.0, ask(member, request, &limits, &check.path))
        .await
        .map_err(|_| {
            format!(
                "no complete answer to GET {} within {}",
                check.path, check.timeout
            )
        })?
}

/// Sends the check request and judges the answer; unbounded in time (the
/// caller bounds it), bounded in bytes.
async fn ask(
    member: &MemberShared,
    request: Request<UpstreamBody>,
    limits: &Limits<'_>,
    path: &str,
) -> Result<(), String> {
    let (head, reply) = member
        .send_any(request, limits)
        .await
        .map_err(|e| match e {
            SendError::Connect { error, .. } => format!("GET {path}: {error}"),
            SendError::Exchange { error, .. } => format!("GET {path}: {error}"),
        })?;
    let status = head.status;
    // Read to the end, so a small answer's connection goes back to the pool;
    // a longer one is dropped unfinished, which closes its connection.
    let read = match reply {
        Reply::H1(exchange) => read_some(exchange).await,
        Reply::H2(exchange) => read_some(exchange).await,
    };
    read.map_err(|()| format!("GET {path}: the body was cut off"))?;
    if status.is_success() || status.is_redirection() {
        Ok(())
    } else {
        Err(format!("GET {path} answered {status}"))
    }
}

/// Reads at most a little over [`BODY_LIMIT`] of `body`; `Err` if it broke.
async fn read_some<B>(mut body: B) -> Result<(), ()>
where
    B: http_body::Body<Data = Bytes> + Unpin,
{
    let mut read = 0usize;
    while read <= BODY_LIMIT {
        match body.frame().await {
            None => break,
            Some(Ok(frame)) => read += frame.data_ref().map_or(0, Bytes::len),
            Some(Err(_)) => return Err(()),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use switchyard_shared::{Cluster, Config, Dur, Member, OutlierDetection, Snapshot};

    use super::*;
    use crate::config::table::compile;
    use crate::health::outlier::{Outcome, observe};
    use crate::upstream::Registry;

    fn snapshot(version: u64, outlier: bool) -> Snapshot {
        let mut cluster = Cluster::new("c");
        cluster.members = vec![
            Member::new("http://127.0.0.1:1"),
            Member::new("http://127.0.0.1:2"),
        ];
        cluster.outlier_detection = outlier.then(|| OutlierDetection {
            consecutive_failures: 1,
            base_ejection: Dur(Duration::from_secs(600)),
            max_ejection: Dur(Duration::from_secs(600)),
            ..OutlierDetection::default()
        });
        let config = Config {
            clusters: vec![cluster],
            routes: vec![],
        };
        Snapshot::new(version, "s", config)
    }

    #[tokio::test]
    async fn members_ejected_stay_out_across_a_swap_and_return_when_detection_is_off() {
        let mut registry = Registry::default();
        let mut checks = HealthChecks::default();
        let (first, generation) = compile(&mut snapshot(1, true), &registry).unwrap();
        registry.commit(generation);
        checks.reconcile(&first);
        let cluster = &first.clusters[0];
        observe(
            cluster,
            &cluster.members[0],
            Outcome::ConnectFailure("refused"),
        );
        assert!(!cluster.members[0].shared.usable());

        let (second, generation) = compile(&mut snapshot(2, true), &registry).unwrap();
        registry.commit(generation);
        checks.reconcile(&second);
        assert!(
            !second.clusters[0].members[0].shared.usable(),
            "the ejection outlives the swap"
        );

        let (third, generation) = compile(&mut snapshot(3, false), &registry).unwrap();
        registry.commit(generation);
        checks.reconcile(&third);
        assert!(third.clusters[0].members[0].shared.usable());
    }
}
