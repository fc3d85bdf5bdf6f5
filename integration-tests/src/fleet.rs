//! A control plane and its replicas, started together and connected: the
//! set-up most tests begin with.

use http::Method;
use serde_json::Value;

use crate::bodies;
use crate::control_plane::ControlPlane;
use crate::data_plane::{DataPlane, DataPlaneOptions};
use crate::dirs::TestDir;

/// A control plane with `replicas.len()` data planes (`dp-1`, `dp-2`, ...).
/// Fields drop in order: replicas, then the control plane, then the files.
#[derive(Debug)]
pub struct Fleet {
    pub replicas: Vec<DataPlane>,
    pub cp: ControlPlane,
    pub dir: TestDir,
}

impl Fleet {
    /// Starts a control plane and `replicas` data planes, and waits until the
    /// control plane lists all of them as connected.
    pub async fn start(label: &str, replicas: usize) -> Self {
        Self::start_with(label, replicas, |options| options).await
    }

    /// Like [`Fleet::start`], with each replica's options adjusted by `adjust`.
    pub async fn start_with(
        label: &str,
        replicas: usize,
        adjust: impl Fn(DataPlaneOptions) -> DataPlaneOptions,
    ) -> Self {
        Self::start_custom(label, replicas, Vec::new(), adjust).await
    }

    /// Like [`Fleet::start_with`], with `cp_args` added to the control plane's flags.
    pub async fn start_custom(
        label: &str,
        replicas: usize,
        cp_args: Vec<String>,
        adjust: impl Fn(DataPlaneOptions) -> DataPlaneOptions,
    ) -> Self {
        let dir = TestDir::new(label);
        let cp = ControlPlane::spawn(dir.path(), cp_args).await;
        let mut started = Vec::new();
        for n in 1..=replicas {
            let node_id = format!("dp-{n}");
            let cache = dir.join(&format!("{node_id}-cache.json"));
            let options = adjust(DataPlaneOptions::new(&cp, &node_id, &cache));
            started.push(DataPlane::spawn(options).await);
        }
        let fleet = Fleet {
            replicas: started,
            cp,
            dir,
        };
        fleet.cp.wait_connected(&fleet.replica_refs()).await;
        fleet
    }

    /// One replica whose route `r` on `/` leads to cluster `c`, defined by
    /// `cluster` (a `PUT /api/v1/clusters/c` body); returns once it serves it.
    pub async fn serving(label: &str, cluster: &Value) -> Self {
        Self::serving_with(label, cluster, |options| options).await
    }

    /// Like [`Fleet::serving`], with the replica's options adjusted by `adjust`.
    pub async fn serving_with(
        label: &str,
        cluster: &Value,
        adjust: impl Fn(DataPlaneOptions) -> DataPlaneOptions,
    ) -> Self {
        let fleet = Self::start_with(label, 1, adjust).await;
        fleet
            .cp
            .write(Method::PUT, "/api/v1/clusters/c", Some(cluster))
            .await;
        fleet
            .cp
            .write(
                Method::PUT,
                "/api/v1/routes/r?wait=5s",
                Some(&bodies::route("/", "c")),
            )
            .await;
        fleet
    }

    pub fn replica_refs(&self) -> Vec<&DataPlane> {
        self.replicas.iter().collect()
    }

    /// Waits until every replica is synced at `version` (see [`ControlPlane::wait_synced`]).
    pub async fn wait_synced(&self, version: u64) {
        self.cp.wait_synced(&self.replica_refs(), version).await;
    }
}
