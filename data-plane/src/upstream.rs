//! Members as the proxy sees them: the state that belongs to a member rather
//! than to a routing table (its connection pool, its error window, its health,
//! its balancer score), and the registry that hands the same state to every
//! table that still has the member, so a swap loses none of it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use http::uri::{Authority, Scheme};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use switchyard_shared::MemberAddr;

use crate::body::UpstreamBody;

/// The HTTP client of one member: a pool of keep-alive connections to it.
pub type UpstreamClient = Client<HttpConnector, UpstreamBody>;

/// How long an idle pooled connection to a member is kept.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// State of one member that outlives routing tables.
#[derive(Debug)]
pub struct MemberShared {
    pub id: String,
    pub addr: MemberAddr,
    pub scheme: Scheme,
    pub authority: Authority,
    connect_timeout: Duration,
    client: OnceLock<UpstreamClient>,
    /// Until when (ms on [`clock`]) the member is left out after a failed connect; 0 = not.
    error_until_ms: AtomicU64,
    /// What active health checks say (true until they say otherwise).
    healthy: AtomicBool,
    /// Smooth weighted round robin's current weight, updated under the cluster's pick lock.
    pub(crate) score: AtomicI64,
    /// Why the member was last found failing, for health reports.
    last_failure: Mutex<Option<String>>,
}

impl MemberShared {
    fn new(id: String, addr: MemberAddr, connect_timeout: Duration) -> Result<Self, http::Error> {
        let scheme = match addr.scheme {
            switchyard_shared::Scheme::Http => Scheme::HTTP,
            switchyard_shared::Scheme::Https => Scheme::HTTPS,
        };
        let authority = Authority::try_from(addr.authority().as_str())?;
        Ok(MemberShared {
            id,
            addr,
            scheme,
            authority,
            connect_timeout,
            client: OnceLock::new(),
            error_until_ms: AtomicU64::new(0),
            healthy: AtomicBool::new(true),
            score: AtomicI64::new(0),
            last_failure: Mutex::new(None),
        })
    }

    /// The member's connection pool, made on first use (a table of 100k
    /// members should not build 100k pools before it serves).
    pub fn client(&self) -> &UpstreamClient {
        self.client.get_or_init(|| {
            let mut connector = HttpConnector::new();
            connector.set_nodelay(true);
            connector.set_connect_timeout(Some(self.connect_timeout));
            connector.set_keepalive(Some(Duration::from_secs(60)));
            Client::builder(TokioExecutor::new())
                .pool_idle_timeout(POOL_IDLE_TIMEOUT)
                .pool_timer(TokioTimer::new())
                .timer(TokioTimer::new())
                .set_host(false)
                .build(connector)
        })
    }

    /// Whether the member is out for its retry window after a failed connect.
    pub fn in_error(&self) -> bool {
        let until = self.error_until_ms.load(Ordering::Relaxed);
        until != 0 && clock_ms() < until
    }

    /// Leaves the member out for `window` (Apache `retry`, nginx `fail_timeout`).
    pub fn mark_failed(&self, window: Duration, why: String) {
        let until =
            clock_ms().saturating_add(u64::try_from(window.as_millis()).unwrap_or(u64::MAX));
        self.error_until_ms.store(until.max(1), Ordering::Relaxed);
        if let Ok(mut last) = self.last_failure.lock() {
            *last = Some(why);
        }
    }

    /// A successful exchange ends the error window early.
    pub fn mark_ok(&self) {
        if self.error_until_ms.load(Ordering::Relaxed) != 0 {
            self.error_until_ms.store(0, Ordering::Relaxed);
        }
    }

    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    pub fn set_healthy(&self, healthy: bool, why: Option<String>) {
        self.healthy.store(healthy, Ordering::Relaxed);
        if let Some(why) = why
            && let Ok(mut last) = self.last_failure.lock()
        {
            *last = Some(why);
        }
    }

    /// Usable now: healthy by the checks and not in its error window.
    pub fn usable(&self) -> bool {
        self.is_healthy() && !self.in_error()
    }

    /// A short description of the member's health, for reports.
    pub fn health_detail(&self) -> String {
        if !self.is_healthy() {
            let why = self
                .last_failure
                .lock()
                .ok()
                .and_then(|l| l.clone())
                .unwrap_or_default();
            format!("failing health checks: {why}")
        } else if self.in_error() {
            let why = self
                .last_failure
                .lock()
                .ok()
                .and_then(|l| l.clone())
                .unwrap_or_default();
            format!("in retry window after: {why}")
        } else {
            "ok".to_owned()
        }
    }
}

/// State of one cluster that outlives routing tables.
#[derive(Debug, Default)]
pub struct ClusterShared {
    /// Serializes balancer picks, whose scores live in the members.
    pub(crate) pick_lock: Mutex<()>,
}

/// Hands out the shared state of clusters and members by name, so that a new
/// table reuses what the previous one had. Only the config client touches it.
#[derive(Debug, Default)]
pub struct Registry {
    clusters: HashMap<String, Arc<ClusterShared>>,
    members: HashMap<MemberKey, Arc<MemberShared>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct MemberKey {
    cluster: String,
    id: String,
    addr: MemberAddr,
    connect_timeout: Duration,
}

/// What a new table needs from the registry; build one with [`Registry::begin`]
/// and finish it with [`Registry::commit`] once the table is in place.
#[derive(Debug, Default)]
pub struct Generation {
    clusters: HashMap<String, Arc<ClusterShared>>,
    members: HashMap<MemberKey, Arc<MemberShared>>,
}

impl Registry {
    /// Starts a new generation of shared state.
    pub fn begin(&self) -> Generation {
        Generation::default()
    }

    /// Keeps the state of the new generation and drops what the new table no longer has.
    pub fn commit(&mut self, generation: Generation) {
        self.clusters = generation.clusters;
        self.members = generation.members;
    }

    /// All members of the current generation, for health reports.
    pub fn members(&self) -> impl Iterator<Item = (&str, &Arc<MemberShared>)> {
        self.members
            .iter()
            .map(|(key, member)| (key.cluster.as_str(), member))
    }
}

impl Generation {
    /// The shared state of `cluster`, the previous generation's if it had it.
    pub fn cluster(&mut self, previous: &Registry, name: &str) -> Arc<ClusterShared> {
        let shared = previous.clusters.get(name).cloned().unwrap_or_default();
        self.clusters.insert(name.to_owned(), shared.clone());
        shared
    }

    /// The shared state of a member, the previous generation's if it had the
    /// same member (same cluster, id, address and connect timeout).
    pub fn member(
        &mut self,
        previous: &Registry,
        cluster: &str,
        id: &str,
        addr: &MemberAddr,
        connect_timeout: Duration,
    ) -> Result<Arc<MemberShared>, http::Error> {
        let key = MemberKey {
            cluster: cluster.to_owned(),
            id: id.to_owned(),
            addr: addr.clone(),
            connect_timeout,
        };
        let shared = match previous.members.get(&key) {
            Some(shared) => shared.clone(),
            None => Arc::new(MemberShared::new(
                id.to_owned(),
                addr.clone(),
                connect_timeout,
            )?),
        };
        self.members.insert(key, shared.clone());
        Ok(shared)
    }
}

/// Milliseconds since the process's first look at the clock (never 0 after that).
pub fn clock_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    let start = START.get_or_init(|| {
        let now = Instant::now();
        now.checked_sub(Duration::from_millis(1)).unwrap_or(now)
    });
    u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX)
}
