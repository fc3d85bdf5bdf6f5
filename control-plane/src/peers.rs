//! Replica status shared between control-plane nodes through etcd (only
//! with `--store etcd://…`): each node mirrors the replicas connected to it
//! into `<prefix>replicas/<node id>`, every key attached to the node's lease,
//! and follows the others' keys (read, then watched), so `GET /api/v1/dataplanes` and `?wait=` on any
//! node cover every replica, whichever node it is connected to.
//!
//! **A node that dies takes its replicas' keys with it**: its lease is no
//! longer renewed and etcd deletes them after [`LEASE_TTL`], until the
//! replicas connect to another node, which publishes them again. The local
//! [`Registry`] stays the truth for the replicas connected here; this module
//! only mirrors it out and reads the others' mirrors in.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::registry::{Lagging, Registry, ReplicaState, ReplicaView, WaitFailure};
use crate::store::Store;
use crate::store::etcd::{Change, Client, EtcdError};

/// How long a dead node's replicas stay listed.
pub const LEASE_TTL: Duration = Duration::from_secs(5);
/// The pause before the other nodes' replicas are read again after an error.
const READ_AGAIN: Duration = Duration::from_millis(200);
/// How often the lease is renewed, and everything published again at least.
const RENEW_EVERY: Duration = Duration::from_secs(1);
/// A burst of registry changes is published once.
const GATHER: Duration = Duration::from_millis(10);

/// What one node publishes for one replica.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Record {
    /// The control-plane node it is connected to.
    control_plane: String,
    /// The replica as that node shows it (`GET /api/v1/dataplanes`).
    view: Value,
}

/// The replicas of the other nodes, and the tasks that keep them.
#[derive(Debug)]
pub struct Peers {
    shared: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
}

#[derive(Debug)]
struct Shared {
    client: Client,
    prefix: Vec<u8>,
    /// This node's id in the records.
    me: String,
    /// The replicas connected to other nodes, by node id.
    remote: Mutex<BTreeMap<String, Record>>,
    /// Bumped whenever `remote` changes.
    changes: watch::Sender<u64>,
    /// The lease this node's records are attached to, once granted.
    lease: Mutex<Option<i64>>,
}

impl Drop for Peers {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Peers {
    /// Starts mirroring `registry` into etcd and reading the other nodes'
    /// replicas; `None` when the store is not on etcd. If etcd cannot give a
    /// lease now, the mirror starts anyway and keeps asking for one.
    pub fn start(store: &Store, registry: Arc<Registry>) -> Option<Peers> {
        let etcd = store.etcd()?;
        let me = format!("cp-{:016x}", fastrand::u64(..));
        let shared = Arc::new(Shared {
            client: etcd.client().clone(),
            prefix: etcd.options().replicas_prefix(),
            me: me.clone(),
            remote: Mutex::new(BTreeMap::new()),
            changes: watch::Sender::new(0),
            lease: Mutex::new(None),
        });
        info!(control_plane.id = %me, "Sharing the replicas' status through etcd");
        let tasks = vec![
            tokio::spawn(publish(shared.clone(), store.clone(), registry)),
            tokio::spawn(read_others(shared.clone())),
        ];
        Some(Peers { shared, tasks })
    }

    /// On a graceful shutdown: stops publishing and revokes the lease, so
    /// this node's replicas leave the other nodes' lists at once rather than
    /// after [`LEASE_TTL`] (their streams end with this node).
    pub async fn close(&self) {
        for task in &self.tasks {
            task.abort();
        }
        let lease = self
            .shared
            .lease
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(lease) = lease
            && let Err(e) = self.shared.client.revoke_lease(lease).await
        {
            warn!(error = %e, "Cannot revoke the lease of this node's replicas; they expire with it");
        }
    }

    /// The replicas connected to other nodes, as those nodes show them, with
    /// their state against `current` (which this node may see later or
    /// sooner than they do).
    pub fn views(&self, current: &switchyard_shared::Snapshot) -> Vec<Value> {
        self.shared
            .lock()
            .values()
            .map(|record| {
                let mut view = record.view.clone();
                let state = remote_state(&view, current.version);
                view["state"] = serde_json::to_value(state).unwrap_or(Value::Null);
                view
            })
            .collect()
    }

    /// Waits until every replica connected to another node has applied
    /// `version` (or a newer one); fails at once if one refused it, or after
    /// `timeout`.
    pub async fn wait_applied(&self, version: u64, timeout: Duration) -> Result<(), WaitFailure> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut changes = self.shared.changes.subscribe();
        loop {
            changes.borrow_and_update();
            let (nacked, pending) = self.lagging(version);
            if !nacked.is_empty() {
                return Err(WaitFailure::Nacked(nacked));
            }
            if pending.is_empty() {
                return Ok(());
            }
            match tokio::time::timeout_at(deadline, changes.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => return Err(WaitFailure::TimedOut(pending)),
            }
        }
    }

    fn lagging(&self, version: u64) -> (Vec<Lagging>, Vec<Lagging>) {
        let mut nacked = Vec::new();
        let mut pending = Vec::new();
        for (node_id, record) in self.shared.lock().iter() {
            let view = &record.view;
            let running = view["version"].as_u64().unwrap_or(0);
            if view["nacked_version"]
                .as_u64()
                .is_some_and(|n| n >= version)
            {
                nacked.push(Lagging {
                    node_id: node_id.clone(),
                    version: running,
                    state: ReplicaState::Nacked,
                    error: view["last_error"].as_str().map(str::to_owned),
                });
            } else if running < version {
                pending.push(Lagging {
                    node_id: node_id.clone(),
                    version: running,
                    state: ReplicaState::Stale,
                    error: None,
                });
            }
        }
        (nacked, pending)
    }
}

/// `GET /api/v1/dataplanes`: the replicas seen here, and those connected to
/// other nodes (in place of a local entry that is disconnected), by node id.
pub fn listing(
    local: Vec<ReplicaView>,
    peers: Option<&Peers>,
    current: &switchyard_shared::Snapshot,
) -> Vec<Value> {
    let mut listed: BTreeMap<String, Value> = BTreeMap::new();
    for view in local {
        let node_id = view.node_id.clone();
        // A connected entry stays; a disconnected one may be replaced below.
        listed.insert(node_id, serde_json::to_value(view).unwrap_or(Value::Null));
    }
    if let Some(peers) = peers {
        for view in peers.views(current) {
            let Some(node_id) = view["node_id"].as_str().map(str::to_owned) else {
                continue;
            };
            let here = listed.get(&node_id).is_some_and(|v| v["connected"] == true);
            if !here {
                listed.insert(node_id, view);
            }
        }
    }
    listed.into_values().collect()
}

/// A remote replica's state against this node's current version.
fn remote_state(view: &Value, current: u64) -> ReplicaState {
    let running = view["version"].as_u64().unwrap_or(0);
    if current != 0 && view["nacked_version"].as_u64() == Some(current) {
        ReplicaState::Nacked
    } else if current == 0 || running >= current {
        ReplicaState::Synced
    } else {
        ReplicaState::Stale
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Record>> {
        self.remote.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn key(&self, node_id: &str) -> Vec<u8> {
        let mut key = self.prefix.clone();
        key.extend_from_slice(node_id.as_bytes());
        key
    }
}

/// Publishes the replicas connected here under this node's lease: each
/// record when it changed, a replica's key deleted when it left (if the key
/// is still this node's), everything again with a new lease if the old one
/// expired (etcd was away longer than [`LEASE_TTL`]). Runs until aborted.
async fn publish(shared: Arc<Shared>, store: Store, registry: Arc<Registry>) {
    let mut changes = registry.subscribe();
    let mut lease: Option<i64> = None;
    let mut published: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut renew = tokio::time::interval(RENEW_EVERY);
    renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            changed = changes.changed() => {
                if changed.is_err() {
                    return;
                }
                tokio::time::sleep(GATHER).await;
            }
            _ = renew.tick() => {
                if let Some(id) = lease {
                    match shared.client.keep_alive(id).await {
                        Ok(true) => {}
                        Ok(false) => {
                            warn!("The lease of this node's replicas expired; publishing them again");
                            lease = None;
                        }
                        Err(e) => warn!(error = %e, "Cannot renew the lease of this node's replicas"),
                    }
                }
            }
        }
        changes.borrow_and_update();
        let id = match lease {
            Some(id) => id,
            None => match shared.client.grant_lease(LEASE_TTL).await {
                Ok(id) => {
                    published.clear();
                    lease = Some(id);
                    *shared.lease.lock().unwrap_or_else(PoisonError::into_inner) = Some(id);
                    id
                }
                Err(e) => {
                    warn!(error = %e, "Cannot get a lease for this node's replicas");
                    continue;
                }
            },
        };
        if let Err(e) = sync(&shared, &store, &registry, id, &mut published).await {
            warn!(error = %e, "Cannot publish this node's replicas to etcd");
        }
    }
}

/// One pass of [`publish`]: what changed since the last pass.
async fn sync(
    shared: &Shared,
    store: &Store,
    registry: &Registry,
    lease: i64,
    published: &mut BTreeMap<String, Vec<u8>>,
) -> Result<(), EtcdError> {
    let current = store.current();
    let views: Vec<ReplicaView> = registry
        .views(&current)
        .into_iter()
        .filter(|v| v.connected)
        .collect();
    let here: BTreeSet<String> = views.iter().map(|v| v.node_id.clone()).collect();
    for view in views {
        let record = Record {
            control_plane: shared.me.clone(),
            view: serde_json::to_value(&view).unwrap_or(Value::Null),
        };
        let bytes = serde_json::to_vec(&record).unwrap_or_default();
        if published.get(&view.node_id) == Some(&bytes) {
            continue;
        }
        shared
            .client
            .put_leased(shared.key(&view.node_id), bytes.clone(), lease)
            .await?;
        published.insert(view.node_id, bytes);
    }
    let gone: Vec<String> = published
        .keys()
        .filter(|node_id| !here.contains(*node_id))
        .cloned()
        .collect();
    for node_id in gone {
        shared
            .client
            .delete_if_leased(shared.key(&node_id), lease)
            .await?;
        published.remove(&node_id);
    }
    Ok(())
}

/// Follows the other nodes' records: all of them read, then a watch from
/// there; read again after any error (a pause of [`READ_AGAIN`] first). Runs
/// until aborted.
async fn read_others(shared: Arc<Shared>) {
    loop {
        if let Err(e) = follow_others(&shared).await {
            // The records read last stay; the store marks the node stale.
            debug!(error = %e, "Following the other nodes' replicas again");
        }
        tokio::time::sleep(READ_AGAIN).await;
    }
}

async fn follow_others(shared: &Shared) -> Result<(), EtcdError> {
    let (kvs, revision) = shared.client.get_prefix_at(&shared.prefix).await?;
    let mut remote = BTreeMap::new();
    for kv in kvs {
        if let Some((node_id, record)) = shared.record(&kv.key, &kv.value) {
            remote.insert(node_id, record);
        }
    }
    shared.replace(remote);
    let mut watch = shared
        .client
        .watch_prefix(&shared.prefix, revision + 1)
        .await?;
    loop {
        let changes = watch.next().await?;
        let mut remote = shared.lock().clone();
        for change in changes {
            match change {
                Change::Put(kv) => match shared.record(&kv.key, &kv.value) {
                    Some((node_id, record)) => {
                        remote.insert(node_id, record);
                    }
                    // This node's own record: one of its replicas is here now.
                    None => {
                        remote.remove(&shared.node_id(&kv.key));
                    }
                },
                Change::Deleted(key) => {
                    remote.remove(&shared.node_id(&key));
                }
            }
        }
        shared.replace(remote);
    }
}

impl Shared {
    /// The replica's node id in `key`.
    fn node_id(&self, key: &[u8]) -> String {
        String::from_utf8_lossy(key.get(self.prefix.len()..).unwrap_or_default()).into_owned()
    }

    /// Another node's record of a replica; `None` for this node's own (or
    /// one that cannot be read, which is logged).
    fn record(&self, key: &[u8], value: &[u8]) -> Option<(String, Record)> {
        let node_id = self.node_id(key);
        match serde_json::from_slice::<Record>(value) {
            Ok(record) if record.control_plane == self.me => None,
            Ok(record) => Some((node_id, record)),
            Err(e) => {
                warn!(replica = %node_id, error = %e, "Ignored a replica record in etcd");
                None
            }
        }
    }

    /// Takes `remote` as the other nodes' replicas, waking the waits if it changed.
    fn replace(&self, remote: BTreeMap<String, Record>) {
        let mut known = self.lock();
        if *known != remote {
            *known = remote;
            drop(known);
            self.changes.send_modify(|n| *n = n.wrapping_add(1));
        }
    }
}
