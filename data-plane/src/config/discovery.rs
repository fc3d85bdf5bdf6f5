//! The config client: one gRPC stream to a control plane, kept open. It says
//! hello with what the replica runs, applies every snapshot it is sent, answers
//! ACK or NACK, and reports member health. Reconnecting lives here, in one
//! place: capped, jittered exponential backoff across the control planes given.
//! With `--control-plane https://…` the stream is TLS (tonic's, over rustls),
//! with this replica's certificate when it has one (mutual TLS).

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use switchyard_shared::Snapshot;
use switchyard_shared::proto::v1::{self, config_discovery_client::ConfigDiscoveryClient};
use tokio::sync::{Notify, mpsc, watch};
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{ClientTlsConfig, Endpoint};
use tracing::{debug, error, info, warn};

use crate::config::apply::State;
use crate::health::outlier;

/// Smallest and largest wait before reconnecting.
const BACKOFF_MIN: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// How often member health is compared with what was last reported.
const HEALTH_REPORT_INTERVAL: Duration = Duration::from_secs(2);
/// The least time between two reports: a burst of ejections is one report.
const HEALTH_REPORT_GAP: Duration = Duration::from_millis(100);
/// A stream that stayed open this long was a good one: the next reconnect
/// starts from the smallest backoff, even if no message came on it (a replica
/// that was already synced is sent nothing).
const STABLE_STREAM: Duration = Duration::from_secs(10);
/// A TLS stream that ended this soon may have been refused by the control
/// plane's certificate check: the log then says where to look.
const TLS_REFUSAL: Duration = Duration::from_secs(1);

/// Why a stream ended.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("invalid control-plane address {0:?}: {1}")]
    Address(String, tonic::transport::Error),
    #[error("cannot connect: {0}")]
    Connect(#[source] tonic::transport::Error),
    #[error("stream failed: {0}")]
    Status(#[from] tonic::Status),
    #[error("the control plane closed the stream")]
    Closed,
}

/// Exponential backoff with full jitter, reset after a good message.
#[derive(Debug)]
struct Backoff {
    next: Duration,
}

impl Backoff {
    fn new() -> Self {
        Backoff { next: BACKOFF_MIN }
    }

    fn reset(&mut self) {
        self.next = BACKOFF_MIN;
    }

    /// The wait before the next attempt: between half and all of the current step.
    fn delay(&mut self) -> Duration {
        let step = self.next;
        self.next = (self.next * 2).min(BACKOFF_MAX);
        step.mul_f64(0.5 + fastrand::f64() * 0.5)
    }
}

/// Runs the config client until `shutdown` turns true; `tls` is used for
/// `https://` control planes.
pub async fn run(
    state: Arc<State>,
    endpoints: Vec<String>,
    tls: Option<ClientTlsConfig>,
    mut shutdown: watch::Receiver<bool>,
) {
    if endpoints.is_empty() {
        warn!("No control plane given: serving the cached snapshot only");
        return;
    }
    let mut backoff = Backoff::new();
    // The newest refused snapshot, told to every control plane in the hello.
    let mut refused = None;
    for endpoint in endpoints.iter().cycle() {
        let started = tokio::time::Instant::now();
        let session = session(&state, endpoint, tls.as_ref(), &mut backoff, &mut refused);
        let result = tokio::select! {
            result = session => result,
            () = crate::stopped(&mut shutdown) => return,
        };
        match result {
            Err(StreamError::Status(status)) if status.code() == tonic::Code::PermissionDenied => {
                error!(
                    control_plane = %endpoint,
                    error = %status.message(),
                    "The control plane refused this replica (PERMISSION_DENIED): check --node-id and --control-plane-cert"
                );
            }
            // Under TLS 1.3 a control plane refuses a client certificate after
            // the handshake seemed done: all this side sees is a closed connection.
            Err(error) if endpoint.starts_with("https://") && started.elapsed() < TLS_REFUSAL => {
                warn!(
                    control_plane = %endpoint,
                    error = %chain(&error),
                    hint = "a control plane with --grpc-client-ca closes the connection of a replica without a certificate it trusts (see --control-plane-cert); its log says why",
                    "Config stream ended"
                );
            }
            Err(error) => {
                warn!(control_plane = %endpoint, error = %chain(&error), "Config stream ended")
            }
            Ok(()) => {}
        }
        if started.elapsed() >= STABLE_STREAM {
            backoff.reset();
        }
        let delay = backoff.delay();
        debug!(?delay, "Reconnecting after backoff");
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = crate::stopped(&mut shutdown) => return,
        }
    }
}

/// The config stream's HTTP/2 receive windows (stream and connection).
const SNAPSHOT_WINDOW: u32 = 8 << 20;

/// One stream: hello, then snapshots in and ACK/NACK and health reports out.
async fn session(
    state: &Arc<State>,
    endpoint: &str,
    tls: Option<&ClientTlsConfig>,
    backoff: &mut Backoff,
    refused: &mut Option<v1::Refused>,
) -> Result<(), StreamError> {
    let address = |e| StreamError::Address(endpoint.to_owned(), e);
    let mut channel = Endpoint::from_shared(endpoint.to_owned()).map_err(address)?;
    if let Some(tls) = tls.filter(|_| endpoint.starts_with("https://")) {
        channel = channel.tls_config(tls.clone()).map_err(address)?;
    }
    let channel = channel
        .connect_timeout(Duration::from_secs(3))
        .tcp_nodelay(true)
        // A snapshot comes whole in one message; with h2's default 64 KiB
        // windows one of 1,000 routes (~100 KB) waits a round trip for a
        // WINDOW_UPDATE mid-push. The window is an allowance, not a buffer.
        .initial_stream_window_size(SNAPSHOT_WINDOW)
        .initial_connection_window_size(SNAPSHOT_WINDOW)
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(5))
        .keep_alive_while_idle(true)
        .connect()
        .await
        .map_err(StreamError::Connect)?;
    let mut client =
        ConfigDiscoveryClient::new(channel).max_decoding_message_size(512 * 1024 * 1024);
    let (outbound, receiver) = mpsc::channel(16);
    let running = state.running().unwrap_or_default();
    let hello = v1::Hello {
        node_id: state.node_id.clone(),
        version: running.version,
        store_id: running.store_id,
        hash: running.hash,
        refused: refused.clone(),
    };
    send(&outbound, v1::data_plane_message::Kind::Hello(hello)).await?;
    let mut inbound = client
        .stream(ReceiverStream::new(receiver))
        .await?
        .into_inner();
    info!(control_plane = %endpoint, "Connected to the control plane");
    let _connected = Connected::new();
    let mut health = HealthReporter::new(outlier::transitions());
    loop {
        tokio::select! {
            message = inbound.message() => {
                let Some(message) = message? else { return Err(StreamError::Closed) };
                backoff.reset();
                if let Some(v1::control_plane_message::Kind::Snapshot(snapshot)) = message.kind {
                    let store_id = snapshot.store_id.clone();
                    let reply = apply(state, snapshot).await;
                    if let v1::data_plane_message::Kind::Nack(nack) = &reply {
                        *refused = Some(v1::Refused {
                            version: nack.version,
                            store_id: store_id.clone(),
                            error: nack.error.clone(),
                        });
                    }
                    send(&outbound, reply).await?;
                }
            }
            () = health.due() => {
                if let Some(report) = health.report(state) {
                    send(&outbound, v1::data_plane_message::Kind::Health(report)).await?;
                }
            }
        }
    }
}

/// The config stream counted open (`switchyard_control_plane_connected`)
/// until the session ends, however it ends.
struct Connected;

impl Connected {
    fn new() -> Self {
        crate::admin::metrics::control_plane_connected(true);
        Connected
    }
}

impl Drop for Connected {
    fn drop(&mut self) {
        crate::admin::metrics::control_plane_connected(false);
    }
}

/// When member health is reported: every [`HEALTH_REPORT_INTERVAL`] if it
/// changed (its request and error counts included: every 2 s while members
/// take traffic, nothing while idle), and soon after an ejection or when one ends, so the control plane
/// sees each transition within moments.
#[derive(Debug)]
struct HealthReporter {
    tick: tokio::time::Interval,
    reported: Vec<v1::MemberHealth>,
    last_sent: Instant,
    /// When the earliest ejection among those last reported ends.
    next_return: Option<Instant>,
    /// An ejection happened since the last report.
    pending: bool,
    /// Where ejections are told ([`outlier::transitions`]; another one in tests).
    transitions: &'static Notify,
}

impl HealthReporter {
    fn new(transitions: &'static Notify) -> Self {
        HealthReporter {
            transitions,
            tick: tokio::time::interval(HEALTH_REPORT_INTERVAL),
            reported: Vec::new(),
            last_sent: Instant::now(),
            next_return: None,
            pending: false,
        }
    }

    /// Resolves when a report may be due. Cancel-safe: an ejection seen
    /// before the future is dropped is remembered for the next call.
    async fn due(&mut self) {
        let earliest = self.last_sent + HEALTH_REPORT_GAP;
        if !self.pending {
            let returning = async {
                match self.next_return {
                    Some(at) => tokio::time::sleep_until(at.max(earliest)).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = self.tick.tick() => return,
                () = returning => return,
                () = self.transitions.notified() => self.pending = true,
            }
        }
        tokio::time::sleep_until(earliest).await;
    }

    /// The report to send, if health changed since the last one.
    fn report(&mut self, state: &State) -> Option<v1::HealthReport> {
        let members = state.member_health();
        self.pending = false;
        // Never sooner than the gap: a wall clock that jumped must not make this spin.
        let soonest = Instant::now() + HEALTH_REPORT_GAP;
        self.next_return = next_return(&members).map(|at| at.max(soonest));
        if members == self.reported {
            return None;
        }
        self.reported.clone_from(&members);
        self.last_sent = Instant::now();
        Some(v1::HealthReport { members })
    }
}

/// When the earliest ejection in `members` ends (just after, so the member is back).
fn next_return(members: &[v1::MemberHealth]) -> Option<Instant> {
    let now_unix = SystemTime::now().duration_since(UNIX_EPOCH).ok()?;
    let until = members
        .iter()
        .filter(|m| m.ejected)
        .map(|m| m.ejected_until_unix_ms)
        .min()?;
    let left = Duration::from_millis(until).saturating_sub(now_unix);
    Some(Instant::now() + left + Duration::from_millis(5))
}

/// An error and its sources, `: `-separated (a TLS failure is a few levels down).
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

async fn send(
    outbound: &mpsc::Sender<v1::DataPlaneMessage>,
    kind: v1::data_plane_message::Kind,
) -> Result<(), StreamError> {
    outbound
        .send(v1::DataPlaneMessage { kind: Some(kind) })
        .await
        .map_err(|_| StreamError::Closed)
}

/// Applies a snapshot off the async workers and says what to answer.
async fn apply(state: &Arc<State>, snapshot: v1::Snapshot) -> v1::data_plane_message::Kind {
    let version = snapshot.version;
    let state = state.clone();
    let applied = tokio::task::spawn_blocking(move || {
        let snapshot = Snapshot::try_from(snapshot).map_err(|e| e.to_string())?;
        state.apply(snapshot)
    })
    .await
    .unwrap_or_else(|e| Err(format!("applying the snapshot failed: {e}")));
    crate::admin::metrics::snapshot(applied.is_ok());
    match applied {
        Ok(running) => v1::data_plane_message::Kind::Ack(v1::Ack {
            version: running.version,
            hash: running.hash,
        }),
        Err(error) => {
            warn!(version, %error, "Refused snapshot (NACK)");
            v1::data_plane_message::Kind::Nack(v1::Nack { version, error })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_with_jitter_up_to_the_cap_and_resets() {
        let mut backoff = Backoff::new();
        let first = backoff.delay();
        assert!(first >= BACKOFF_MIN / 2 && first <= BACKOFF_MIN);
        for _ in 0..20 {
            assert!(backoff.delay() <= BACKOFF_MAX);
        }
        assert_eq!(backoff.next, BACKOFF_MAX);
        backoff.reset();
        assert!(backoff.delay() <= BACKOFF_MIN);
    }

    #[tokio::test(start_paused = true)]
    async fn an_ejection_is_reported_before_the_next_tick() {
        static TRANSITIONS: Notify = Notify::const_new();
        let mut reporter = HealthReporter::new(&TRANSITIONS);
        // The first tick is at once.
        tokio::time::timeout(Duration::from_millis(1), reporter.due())
            .await
            .unwrap();
        reporter.last_sent = Instant::now();
        TRANSITIONS.notify_one();
        let started = Instant::now();
        tokio::time::timeout(HEALTH_REPORT_INTERVAL / 2, reporter.due())
            .await
            .expect("reported before the tick");
        assert!(started.elapsed() >= HEALTH_REPORT_GAP, "not before the gap");
    }

    #[tokio::test(start_paused = true)]
    async fn the_end_of_an_ejection_is_reported_when_it_comes() {
        let now_unix = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        let member = |ejected, until: Duration| v1::MemberHealth {
            ejected,
            ejected_until_unix_ms: u64::try_from((now_unix + until).as_millis()).unwrap(),
            ..Default::default()
        };
        let members = [
            member(true, Duration::from_secs(30)),
            member(true, Duration::from_millis(700)),
            member(false, Duration::from_millis(100)),
        ];
        let at = next_return(&members).unwrap();
        let left = at - Instant::now();
        assert!(left > Duration::from_millis(600) && left < Duration::from_millis(800));
        assert_eq!(next_return(&members[2..]), None, "none ejected");

        static TRANSITIONS: Notify = Notify::const_new();
        let mut reporter = HealthReporter::new(&TRANSITIONS);
        tokio::time::timeout(Duration::from_millis(1), reporter.due())
            .await
            .unwrap();
        reporter.next_return = Some(at);
        let started = Instant::now();
        reporter.due().await;
        assert!(
            started.elapsed() >= Duration::from_millis(600)
                && started.elapsed() < HEALTH_REPORT_INTERVAL
        );
    }

    #[tokio::test]
    async fn member_counts_go_out_while_they_change_and_nothing_when_idle() {
        use switchyard_shared::{Cluster, Config, Member};
        let mut cluster = Cluster::new("c");
        cluster.members = vec![Member::new("http://127.0.0.1:1")];
        let config = Config {
            clusters: vec![cluster],
            routes: vec![],
        };
        let state = State::new("n".to_owned(), None);
        state.apply(Snapshot::new(1, "s", config)).unwrap();
        let slot = state.table().load_full().unwrap().clusters[0].members[0]
            .shared
            .slot
            .index();
        static TRANSITIONS: Notify = Notify::const_new();
        let mut reporter = HealthReporter::new(&TRANSITIONS);
        let first = reporter.report(&state).expect("the first report");
        assert_eq!((first.members[0].requests, first.members[0].errors), (0, 0));
        assert!(reporter.report(&state).is_none(), "idle: nothing sent");

        use crate::admin::metrics::{self, Failure};
        for _ in 0..3 {
            metrics::member_response(slot, http::StatusCode::OK);
        }
        metrics::member_response(slot, http::StatusCode::BAD_GATEWAY);
        metrics::member_failure(slot, Failure::Connect);
        metrics::member_failure(slot, Failure::Timeout);
        let report = reporter.report(&state).expect("the counts changed");
        let member = &report.members[0];
        assert_eq!(member.member_id, "127.0.0.1:1");
        assert_eq!(member.requests, 4, "answers, the 5xx included");
        assert_eq!(
            member.errors, 3,
            "the 5xx, the connect failure, the timeout"
        );
        assert!(reporter.report(&state).is_none(), "idle again");
    }
}
