//! What a replica runs: the current table, and the one place that applies a
//! snapshot to it (validate → compile a whole new table → swap it in → cache it).

use std::sync::{Arc, Mutex};

use arc_swap::ArcSwapOption;
use switchyard_shared::Snapshot;
use switchyard_shared::proto::v1;
use tracing::info;

use crate::admin::metrics;
use crate::config::cache::CacheWriter;
use crate::config::table::{self, Table};
use crate::health::HealthChecks;
use crate::upstream::Registry;

/// The replica's config state, shared by the config client, the proxy and the admin endpoint.
#[derive(Debug)]
pub struct State {
    pub node_id: String,
    table: Arc<ArcSwapOption<Table>>,
    /// Held while a snapshot is applied: one apply at a time.
    applying: Mutex<Applying>,
    cache: Option<CacheWriter>,
    /// Snapshots with more members than this are refused.
    max_members: Option<usize>,
}

#[derive(Debug, Default)]
struct Applying {
    registry: Registry,
    health: HealthChecks,
}

/// The identity of the table a replica runs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Running {
    pub version: u64,
    pub store_id: String,
    pub hash: String,
}

impl State {
    pub fn new(node_id: String, cache: Option<CacheWriter>) -> Self {
        State {
            node_id,
            table: Arc::new(ArcSwapOption::empty()),
            applying: Mutex::new(Applying::default()),
            cache,
            max_members: None,
        }
    }

    /// The same state, refusing snapshots with more than `max` members.
    pub fn with_max_members(mut self, max: Option<usize>) -> Self {
        self.max_members = max;
        self
    }

    /// The table handle the proxy loads from.
    pub fn table(&self) -> Arc<ArcSwapOption<Table>> {
        self.table.clone()
    }

    /// What runs now; `None` before the first snapshot.
    pub fn running(&self) -> Option<Running> {
        self.table.load().as_ref().map(|t| Running {
            version: t.version,
            store_id: t.store_id.clone(),
            hash: t.hash.clone(),
        })
    }

    /// Health of every member as this replica sees it.
    pub fn member_health(&self) -> Vec<v1::MemberHealth> {
        let Ok(applying) = self.applying.lock() else {
            return Vec::new();
        };
        let mut members: Vec<_> = applying
            .registry
            .members()
            .map(|(cluster, member)| {
                let ejections = member.ejections();
                let (requests, errors) = metrics::member_counts(member.slot.index());
                v1::MemberHealth {
                    cluster: cluster.to_owned(),
                    member_id: member.id.clone(),
                    healthy: member.usable(),
                    detail: member.health_detail(),
                    ejected: member.is_ejected(),
                    ejected_until_unix_ms: ejections.until_unix_ms,
                    ejections: ejections.count,
                    ejection_reason: ejections.reason,
                    requests,
                    errors,
                }
            })
            .collect();
        members.sort_by(|a, b| (&a.cluster, &a.member_id).cmp(&(&b.cluster, &b.member_id)));
        members
    }

    /// Applies a snapshot: the new table serves every request that starts after
    /// this returns; requests in flight finish on the table they started with.
    /// On error nothing changes. Blocking (compiling a large snapshot takes
    /// time): call it off the async workers, within a runtime.
    pub fn apply(&self, mut snapshot: Snapshot) -> Result<Running, String> {
        let mut applying = self
            .applying
            .lock()
            .map_err(|_| "a previous apply panicked".to_owned())?;
        let started = std::time::Instant::now();
        if let Some(running) = self.running()
            && running.store_id == snapshot.store_id
        {
            if snapshot.version < running.version {
                return Err(format!(
                    "version {} is older than version {} already applied from the same store",
                    snapshot.version, running.version
                ));
            }
            if running.hash == snapshot.hash && running.version == snapshot.version {
                return Ok(running);
            }
        }
        if let Some(max) = self.max_members {
            let members: usize = snapshot
                .config
                .clusters
                .iter()
                .map(|c| c.members.len())
                .sum();
            if members > max {
                return Err(format!(
                    "the snapshot has {members} members, more than this replica's --max-members {max}"
                ));
            }
        }
        let (table, generation) =
            table::compile(&mut snapshot, &applying.registry).map_err(|e| e.to_string())?;
        let running = Running {
            version: table.version,
            store_id: table.store_id.clone(),
            hash: table.hash.clone(),
        };
        let table = Arc::new(table);
        let replaced = self.table.swap(Some(table.clone()));
        metrics::apply_duration(started.elapsed());
        let applying = &mut *applying;
        let forgotten = applying.registry.commit(generation);
        applying.health.reconcile(&table);
        if let Some(cache) = &self.cache {
            cache.store(Arc::new(snapshot));
        }
        // Freeing a large table takes time the ACK should not wait for.
        let garbage = (replaced, forgotten);
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn_blocking(move || drop(garbage))),
            Err(_) => drop(garbage),
        }
        info!(
            version = running.version,
            routes = table.routes.len(),
            clusters = table.clusters.len(),
            "Applied snapshot"
        );
        Ok(running)
    }
}
