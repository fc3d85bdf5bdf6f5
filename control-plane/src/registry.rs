//! The replica registry: every data plane seen since start, what it runs, what
//! it refused and how it sees its members; and the wait for a version to be
//! applied by every connected replica (`?wait=`).
//!
//! **A NACKed version is never sent again to that replica**, even after it
//! reconnects: the refusal outlives the stream, only a newer version is sent.
//! A replica's entry outlives its stream too (it shows as `disconnected`).
//!
//! Member request rates come from the cumulative counts of two health reports
//! in a row: the registry keeps each member's counts and their time from the
//! last report, per replica.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;
use switchyard_shared::Snapshot;
use switchyard_shared::proto::v1;
use tokio::sync::{oneshot, watch};

/// Every replica seen since start, by node id.
#[derive(Debug)]
pub struct Registry {
    replicas: Mutex<BTreeMap<String, Replica>>,
    /// Bumped on every change that may end a wait.
    changes: watch::Sender<u64>,
    next_connection: AtomicU64,
    /// Versions stored while replicas were connected and not yet run by all
    /// of them, oldest first, with when each was stored (for
    /// `switchyard_propagation_seconds`).
    propagating: Mutex<VecDeque<(u64, Instant)>>,
}

/// Versions followed at once for the propagation time; the oldest are
/// dropped beyond (a replica that refuses every version would keep them all).
const PROPAGATING_MAX: usize = 64;

#[derive(Debug, Default)]
struct Replica {
    /// The id of the stream that owns this entry; older streams are ignored.
    connection: u64,
    connected: bool,
    peer: Option<SocketAddr>,
    /// What it runs: from its hello, then from its ACKs.
    version: u64,
    store_id: String,
    hash: String,
    /// The last version sent on the current stream.
    sent_version: Option<u64>,
    /// Whether that version is not answered (ACK or NACK) yet.
    in_flight: bool,
    nacked_version: Option<u64>,
    last_error: Option<String>,
    members: Vec<MemberHealthView>,
    /// Each member's counts at the last health report, by (cluster, member id).
    counted: HashMap<(String, String), Counted>,
    /// Tells the current stream that a newer one of the same node replaced it.
    superseded: Option<oneshot::Sender<()>>,
    /// When its current (or last) stream last brought a message, or closed.
    last_seen: Option<SystemTime>,
}

/// A member's cumulative counts in one health report, and when it came.
#[derive(Debug, Clone, Copy)]
struct Counted {
    requests: u64,
    errors: u64,
    at: Instant,
}

/// A replica reports its counts when they change (every ~2 s while there is
/// traffic); with no report for this long, its members got no requests.
pub const RATES_STALE_AFTER: Duration = Duration::from_secs(10);

/// A replica's stream in the registry.
#[derive(Debug)]
pub struct Connection {
    pub id: u64,
    /// Completes when a newer stream of the same node id replaces this one.
    pub superseded: oneshot::Receiver<()>,
    /// Whether this stream replaced one still open.
    pub replaced: bool,
}

/// How a replica stands against the current version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReplicaState {
    /// Runs the current version.
    Synced,
    /// Runs an older version (or none) and has not refused the current one.
    Stale,
    /// Refused the current version.
    Nacked,
    /// Its stream is closed.
    Disconnected,
}

/// One member's health as one replica sees it.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct MemberHealthView {
    pub cluster: String,
    pub member_id: String,
    /// Usable now: healthy by the active checks, not in its retry window, not ejected.
    pub healthy: bool,
    pub detail: String,
    /// Ejected by outlier detection (passive health) until `ejected_until`.
    pub ejected: bool,
    /// When the current or last ejection ends (RFC 3339, UTC); `None` if never ejected.
    pub ejected_until: Option<String>,
    /// Ejections that count toward the length of the next one.
    pub ejections: u32,
    /// Why the member was last ejected.
    pub ejection_reason: Option<String>,
    /// Responses per second this replica got from the member over its last
    /// report interval; `null` before two reports (or after the replica's
    /// counters started over), 0 when no report came for 10 s.
    pub requests_per_second: Option<f64>,
    /// Errors (failed attempts and 5xx answers) per response over the same
    /// interval, 0..1 (1 when every attempt failed); `null` with no attempts.
    pub error_rate: Option<f64>,
}

impl From<&v1::MemberHealth> for MemberHealthView {
    fn from(m: &v1::MemberHealth) -> Self {
        let ejected_until = (m.ejected_until_unix_ms != 0).then(|| {
            let at = std::time::UNIX_EPOCH + Duration::from_millis(m.ejected_until_unix_ms);
            humantime::format_rfc3339_millis(at).to_string()
        });
        MemberHealthView {
            cluster: m.cluster.clone(),
            member_id: m.member_id.clone(),
            healthy: m.healthy,
            detail: m.detail.clone(),
            ejected: m.ejected,
            ejected_until,
            ejections: m.ejections,
            ejection_reason: (!m.ejection_reason.is_empty()).then(|| m.ejection_reason.clone()),
            requests_per_second: None,
            error_rate: None,
        }
    }
}

/// A replica as `GET /api/v1/dataplanes` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ReplicaView {
    pub node_id: String,
    pub state: ReplicaState,
    /// The version it applied (0 if none).
    pub version: u64,
    pub hash: String,
    /// The error of its last NACK.
    pub last_error: Option<String>,
    pub nacked_version: Option<u64>,
    pub connected: bool,
    pub peer: Option<String>,
    pub members: Vec<MemberHealthView>,
    /// When it last sent a message on its stream (hello, ACK, NACK, health
    /// report), or when the stream closed (RFC 3339, UTC, milliseconds).
    pub last_seen: Option<String>,
}

/// A connected replica that has not applied the awaited version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Lagging {
    pub node_id: String,
    /// The version it runs.
    pub version: u64,
    pub state: ReplicaState,
    /// Why it refused the awaited version (or a newer one), if it did.
    pub error: Option<String>,
}

/// Why a wait for a version ended without every replica applying it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WaitFailure {
    /// These replicas refused the version (or a newer one).
    Nacked(Vec<Lagging>),
    /// These replicas had not applied it in time.
    TimedOut(Vec<Lagging>),
}

enum Progress {
    Applied,
    Nacked(Vec<Lagging>),
    Pending(Vec<Lagging>),
}

impl Default for Registry {
    fn default() -> Self {
        Registry::new()
    }
}

impl Registry {
    pub fn new() -> Self {
        Registry {
            replicas: Mutex::new(BTreeMap::new()),
            changes: watch::Sender::new(0),
            next_connection: AtomicU64::new(1),
            propagating: Mutex::new(VecDeque::new()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Replica>> {
        // The map stays consistent even if a holder panicked: every update is one assignment.
        self.replicas.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn changed(&self) {
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Registers a stream that said hello. A stream already open for the same
    /// node id is told it was superseded; the NACK history is kept.
    pub fn connect(
        &self,
        hello: &v1::Hello,
        peer: Option<SocketAddr>,
        current: &Snapshot,
    ) -> Connection {
        let id = self.next_connection.fetch_add(1, Ordering::Relaxed);
        let (superseded_tx, superseded) = oneshot::channel();
        let mut replicas = self.lock();
        let replica = replicas.entry(hello.node_id.clone()).or_default();
        let mut replaced = false;
        if let Some(old) = replica.superseded.take() {
            // An error means the old stream has already ended.
            replaced = old.send(()).is_ok();
        }
        replica.connection = id;
        replica.connected = true;
        replica.peer = peer;
        replica.version = hello.version;
        replica.store_id.clone_from(&hello.store_id);
        replica.hash.clone_from(&hello.hash);
        replica.sent_version = None;
        replica.in_flight = false;
        replica.members.clear();
        replica.superseded = Some(superseded_tx);
        replica.last_seen = Some(SystemTime::now());
        // Same store and same hash: it runs the current config, whatever version it calls it.
        if replica.store_id == current.store_id && replica.hash == current.hash {
            replica.version = replica.version.max(current.version);
        }
        // What it refused before this control plane knew it (e.g. before a restart).
        if let Some(refused) = hello
            .refused
            .as_ref()
            .filter(|r| r.store_id == current.store_id)
            && replica.nacked_version.is_none_or(|n| n < refused.version)
        {
            replica.nacked_version = Some(refused.version);
            replica.last_error = Some(refused.error.clone());
        }
        drop(replicas);
        self.changed();
        Connection {
            id,
            superseded,
            replaced,
        }
    }

    /// Whether `current` should be sent now on stream `connection` of
    /// `node_id`; if so it is recorded as sent. Nothing is sent to a replica
    /// that already runs it (same store and hash), that refused this version
    /// or a newer one, that was sent it already on this stream, or that has
    /// not answered the last snapshot sent yet (one snapshot in flight per
    /// replica: a slow replica gets the latest version once it answers, not
    /// every step); version 0 (an empty new store) is never sent.
    pub fn should_send(&self, node_id: &str, connection: u64, current: &Snapshot) -> bool {
        if current.version == 0 {
            return false;
        }
        let mut replicas = self.lock();
        let Some(replica) = replicas.get_mut(node_id) else {
            return false;
        };
        if replica.connection != connection || !replica.connected {
            return false;
        }
        // With a snapshot in flight, what it runs is about to change: send the current one.
        if !replica.in_flight
            && replica.store_id == current.store_id
            && replica.hash == current.hash
        {
            if replica.version < current.version {
                replica.version = current.version;
                drop(replicas);
                self.changed();
            }
            return false;
        }
        if replica.in_flight
            || replica.sent_version == Some(current.version)
            || replica.nacked_version.is_some_and(|n| n >= current.version)
        {
            return false;
        }
        replica.sent_version = Some(current.version);
        replica.in_flight = true;
        true
    }

    /// Records that the replica applied `ack.version` (of `current`'s store).
    pub fn ack(&self, node_id: &str, connection: u64, ack: &v1::Ack, current: &Snapshot) {
        self.update(node_id, connection, |replica| {
            replica.answered(ack.version);
            if replica.nacked_version.is_none_or(|n| n < ack.version) {
                // It runs something newer than what it refused: the error is history.
                replica.last_error = None;
            }
            replica.version = ack.version;
            replica.store_id.clone_from(&current.store_id);
            replica.hash = if !ack.hash.is_empty() {
                ack.hash.clone()
            } else if ack.version == current.version {
                current.hash.clone()
            } else {
                String::new()
            };
        });
    }

    /// Records that the replica refused `nack.version`.
    pub fn nack(&self, node_id: &str, connection: u64, nack: &v1::Nack) {
        self.update(node_id, connection, |replica| {
            replica.answered(nack.version);
            replica.nacked_version = Some(replica.nacked_version.unwrap_or(0).max(nack.version));
            replica.last_error = Some(nack.error.clone());
        });
    }

    /// Records the member health the replica reports, and each member's
    /// rates since its previous report.
    pub fn health(&self, node_id: &str, connection: u64, report: &v1::HealthReport) {
        self.health_at(node_id, connection, report, Instant::now());
    }

    fn health_at(&self, node_id: &str, connection: u64, report: &v1::HealthReport, at: Instant) {
        self.update(node_id, connection, |replica| {
            let mut counted = HashMap::with_capacity(report.members.len());
            replica.members = report
                .members
                .iter()
                .map(|m| {
                    let mut view = MemberHealthView::from(m);
                    let key = (m.cluster.clone(), m.member_id.clone());
                    let now = Counted {
                        requests: m.requests,
                        errors: m.errors,
                        at,
                    };
                    if let Some(before) = replica.counted.get(&key) {
                        (view.requests_per_second, view.error_rate) = rates(before, &now);
                    }
                    counted.insert(key, now);
                    view
                })
                .collect();
            // Members no longer reported are forgotten.
            replica.counted = counted;
        });
    }

    /// Marks the stream closed, unless a newer stream of the node owns the entry.
    pub fn disconnect(&self, node_id: &str, connection: u64) {
        self.update(node_id, connection, |replica| {
            replica.connected = false;
            replica.sent_version = None;
            replica.in_flight = false;
            replica.superseded = None;
        });
    }

    fn update(&self, node_id: &str, connection: u64, change: impl FnOnce(&mut Replica)) {
        let mut replicas = self.lock();
        match replicas.get_mut(node_id) {
            Some(replica) if replica.connection == connection => {
                change(replica);
                // Every update is a message from the stream, or its end.
                replica.last_seen = Some(SystemTime::now());
            }
            _ => return,
        }
        drop(replicas);
        self.changed();
    }

    /// Every replica seen since start, by node id, against `current`.
    pub fn views(&self, current: &Snapshot) -> Vec<ReplicaView> {
        self.views_at(current, Instant::now())
    }

    fn views_at(&self, current: &Snapshot, now: Instant) -> Vec<ReplicaView> {
        self.lock()
            .iter()
            .map(|(node_id, r)| ReplicaView {
                node_id: node_id.clone(),
                state: r.state(current),
                version: r.version,
                hash: r.hash.clone(),
                last_error: r.last_error.clone(),
                nacked_version: r.nacked_version,
                connected: r.connected,
                peer: r.peer.map(|p| p.to_string()),
                members: r.member_views(now),
                last_seen: r
                    .last_seen
                    .map(|at| humantime::format_rfc3339_millis(at).to_string()),
            })
            .collect()
    }

    /// Follows the registry: the value changes whenever a replica connects,
    /// answers, reports health or disconnects (for [`crate::peers`]).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// How many replicas have an open stream, and how many were ever seen.
    pub fn counts(&self) -> (usize, usize) {
        let replicas = self.lock();
        let connected = replicas.values().filter(|r| r.connected).count();
        (connected, replicas.len())
    }

    /// Records that `version` of store `store_id` was just stored; returns
    /// how long the versions that every connected replica now runs took to
    /// get there (none yet, normally). With no replica connected there is
    /// nothing to measure.
    pub fn stored(&self, version: u64, store_id: &str) -> Vec<Duration> {
        if self.counts().0 == 0 {
            return Vec::new();
        }
        {
            let mut propagating = self.lock_propagating();
            propagating.push_back((version, Instant::now()));
            while propagating.len() > PROPAGATING_MAX {
                propagating.pop_front();
            }
        }
        self.propagated(store_id)
    }

    /// The versions (of store `store_id`) that every connected replica now
    /// runs, or a newer one, each with how long it took since it was stored;
    /// they are measured once. Called after an ACK and after a disconnect.
    pub fn propagated(&self, store_id: &str) -> Vec<Duration> {
        let floor = self
            .lock()
            .values()
            .filter(|r| r.connected)
            .map(|r| if r.store_id == store_id { r.version } else { 0 })
            .min();
        let mut propagating = self.lock_propagating();
        let Some(floor) = floor else {
            // Nobody left to run them.
            propagating.clear();
            return Vec::new();
        };
        let mut took = Vec::new();
        while let Some(&(version, at)) = propagating.front() {
            if version > floor {
                break;
            }
            took.push(at.elapsed());
            propagating.pop_front();
        }
        took
    }

    fn lock_propagating(&self) -> MutexGuard<'_, VecDeque<(u64, Instant)>> {
        self.propagating
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits until every connected replica has applied `version` of store
    /// `store_id` or a newer one. Fails at once if one refused it (or a newer
    /// one), or after `timeout`. Replicas that disconnect stop counting;
    /// with none connected it returns at once.
    pub async fn wait_applied(
        &self,
        version: u64,
        store_id: &str,
        timeout: Duration,
    ) -> Result<(), WaitFailure> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut changes = self.changes.subscribe();
        let mut timed_out = false;
        loop {
            changes.borrow_and_update();
            match self.progress(version, store_id) {
                Progress::Applied => return Ok(()),
                Progress::Nacked(lagging) => return Err(WaitFailure::Nacked(lagging)),
                Progress::Pending(lagging) if timed_out => {
                    return Err(WaitFailure::TimedOut(lagging));
                }
                Progress::Pending(_) => {
                    match tokio::time::timeout_at(deadline, changes.changed()).await {
                        Ok(Ok(())) => {}
                        // The registry owns the sender, so it cannot be gone; stop waiting anyway.
                        Ok(Err(_)) | Err(_) => timed_out = true,
                    }
                }
            }
        }
    }

    fn progress(&self, version: u64, store_id: &str) -> Progress {
        if version == 0 {
            return Progress::Applied;
        }
        let replicas = self.lock();
        let mut nacked = Vec::new();
        let mut pending = Vec::new();
        for (node_id, r) in replicas.iter().filter(|(_, r)| r.connected) {
            let lagging = || Lagging {
                node_id: node_id.clone(),
                version: r.version,
                state: if r.nacked_version.is_some_and(|n| n >= version) {
                    ReplicaState::Nacked
                } else {
                    ReplicaState::Stale
                },
                error: r.last_error.clone(),
            };
            if r.nacked_version.is_some_and(|n| n >= version) {
                nacked.push(lagging());
            } else if r.store_id != store_id || r.version < version {
                pending.push(Lagging {
                    error: None,
                    ..lagging()
                });
            }
        }
        if !nacked.is_empty() {
            Progress::Nacked(nacked)
        } else if !pending.is_empty() {
            Progress::Pending(pending)
        } else {
            Progress::Applied
        }
    }
}

/// Requests per second and error rate between two reports of a member's
/// cumulative counts; nothing when a counter went down (the replica
/// restarted: the next report starts over from these counts).
fn rates(before: &Counted, after: &Counted) -> (Option<f64>, Option<f64>) {
    let seconds = after.at.saturating_duration_since(before.at).as_secs_f64();
    if seconds <= 0.0 || after.requests < before.requests || after.errors < before.errors {
        return (None, None);
    }
    let requests = after.requests - before.requests;
    let errors = after.errors - before.errors;
    // A failed connect is an error without a response: errors may outnumber responses.
    let error_rate = match (requests, errors) {
        (0, 0) => None,
        (0, _) => Some(1.0),
        (requests, errors) => Some((errors as f64 / requests as f64).min(1.0)),
    };
    (Some(requests as f64 / seconds), error_rate)
}

impl Replica {
    /// The members as last reported; the rates are 0 once no report came for
    /// [`RATES_STALE_AFTER`], and unknown while the replica is disconnected.
    fn member_views(&self, now: Instant) -> Vec<MemberHealthView> {
        let mut members = self.members.clone();
        for member in &mut members {
            if !self.connected {
                member.requests_per_second = None;
                member.error_rate = None;
                continue;
            }
            let stale = self
                .counted
                .get(&(member.cluster.clone(), member.member_id.clone()))
                .is_some_and(|c| now.saturating_duration_since(c.at) > RATES_STALE_AFTER);
            if stale && member.requests_per_second.is_some() {
                member.requests_per_second = Some(0.0);
                member.error_rate = None;
            }
        }
        members
    }

    /// The replica answered `version`: what was sent is no longer in flight
    /// once the answer covers it.
    fn answered(&mut self, version: u64) {
        if self.sent_version.is_some_and(|sent| version >= sent) {
            self.in_flight = false;
        }
    }

    fn state(&self, current: &Snapshot) -> ReplicaState {
        if !self.connected {
            ReplicaState::Disconnected
        } else if current.version != 0 && self.nacked_version == Some(current.version) {
            ReplicaState::Nacked
        } else if current.version == 0
            || (self.store_id == current.store_id && self.version >= current.version)
        {
            ReplicaState::Synced
        } else {
            ReplicaState::Stale
        }
    }
}

#[cfg(test)]
mod tests;
