//! Members as the proxy sees them: the state that belongs to a member rather
//! than to a routing table (its connection pool, its error window, its health,
//! its balancer score), and the registry that hands the same state to every
//! table that still has the member, so a swap loses none of it.

pub mod body;
pub mod exchange;
pub mod h1;
pub mod h2;
pub mod pool;
pub mod retry;
pub mod tls;

use std::cell::Cell;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::upstream::body::{BodyProgress, UpstreamBody};
use crate::upstream::exchange::{Conn, Exchange, ExchangeError};
use crate::upstream::h1::ResponseHead;
use crate::upstream::pool::Pool;
use crate::upstream::retry::RetryBudget;
use crate::upstream::tls::MemberStream;
use http::uri::{Authority, Scheme};
use http::{HeaderValue, Request};
use rustls::pki_types::ServerName;
use switchyard_shared::{MemberAddr, Protocol};
use tokio::net::TcpStream;

/// One request in flight to a member, from before it is sent until its
/// response body is done (or dropped): `least_request` compares these counts.
#[derive(Debug)]
pub struct InFlight(Arc<MemberShared>);

impl InFlight {
    pub fn enter(member: &Arc<MemberShared>) -> Self {
        member.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(member.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// State of one member that outlives routing tables.
#[derive(Debug)]
pub struct MemberShared {
    pub id: String,
    pub addr: MemberAddr,
    /// What the member speaks (its cluster's `protocol`); a member whose
    /// cluster changes protocol gets new state, pools included.
    pub protocol: Protocol,
    pub scheme: Scheme,
    pub authority: Authority,
    /// The `Host` sent to the member when the route does not preserve the client's.
    pub host_header: HeaderValue,
    /// `scheme://host:port` in lower case, to recognise the member's own URLs in redirects.
    pub base_url: String,
    /// The cluster's connect timeout in ms; a new table may change it.
    connect_timeout_ms: AtomicU64,
    /// The address to connect to when the host is an IP address (no lookup then).
    socket_addr: Option<SocketAddr>,
    /// Plain TCP, or TLS with the name the member's certificate must match.
    transport: Transport,
    /// One pool per worker thread, plus one for everything else (health checks):
    /// a worker only ever uses connections its own runtime drives.
    pools: Box<[OnceLock<Arc<Pool>>]>,
    /// Until when (ms on [`clock`]) the member is left out after a failed connect; 0 = not.
    error_until_ms: AtomicU64,
    /// Outlier detection: failures in a row since the last success.
    failures: AtomicU32,
    /// Until when (ms on [`clock_ms`]) outlier detection keeps the member out; 0 = not ejected.
    ejected_until_ms: AtomicU64,
    /// The member's ejections (read and written by [`crate::health::outlier`] only).
    ejections: Mutex<Ejections>,
    /// What active health checks say (true until they say otherwise).
    healthy: AtomicBool,
    /// Smooth weighted round robin's current weight, updated under the cluster's pick lock.
    pub(crate) score: AtomicI64,
    /// Requests of `least_request` clusters sent to the member and not yet
    /// answered in full, on every worker ([`InFlight`]); other policies leave it at 0.
    in_flight: AtomicU32,
    /// Why the member was last found failing, for health reports.
    last_failure: Mutex<Option<String>>,
    /// Where the member's answers and failures are counted, per worker thread.
    pub slot: crate::admin::metrics::slots::Slot,
}

impl MemberShared {
    fn new(
        cluster: &str,
        id: String,
        addr: MemberAddr,
        protocol: Protocol,
        connect_timeout: Duration,
    ) -> Result<Self, http::Error> {
        let (scheme, transport) = match addr.scheme {
            switchyard_shared::Scheme::Http => (Scheme::HTTP, Transport::Tcp),
            switchyard_shared::Scheme::Https => (
                Scheme::HTTPS,
                match tls::server_name(&addr.host) {
                    Ok(name) => Transport::Tls(name),
                    Err(why) => Transport::BadTlsName(why),
                },
            ),
        };
        let authority = Authority::try_from(addr.authority().as_str())?;
        let default_port = if scheme == Scheme::HTTPS { 443 } else { 80 };
        let host = if addr.port == default_port {
            authority.host()
        } else {
            authority.as_str()
        };
        let host_header = HeaderValue::try_from(host)?;
        let base_url = addr.base_url().to_ascii_lowercase();
        let socket_addr = addr
            .host
            .parse::<IpAddr>()
            .ok()
            .map(|ip| SocketAddr::new(ip, addr.port));
        Ok(MemberShared {
            addr,
            protocol,
            scheme,
            authority,
            host_header,
            base_url,
            connect_timeout_ms: AtomicU64::new(millis(connect_timeout)),
            socket_addr,
            transport,
            pools: (0..=WORKERS.load(Ordering::Relaxed))
                .map(|_| OnceLock::new())
                .collect(),
            error_until_ms: AtomicU64::new(0),
            failures: AtomicU32::new(0),
            ejected_until_ms: AtomicU64::new(0),
            ejections: Mutex::new(Ejections::default()),
            healthy: AtomicBool::new(true),
            score: AtomicI64::new(0),
            in_flight: AtomicU32::new(0),
            last_failure: Mutex::new(None),
            slot: crate::admin::metrics::slots::Slot::member(cluster, &id),
            id,
        })
    }

    /// Requests in flight to the member, counted by [`InFlight`] guards.
    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// The calling worker's pool of connections to the member, made on first use.
    pub fn pool(&self) -> &Arc<Pool> {
        let slot = WORKER.with(Cell::get).min(self.pools.len() - 1);
        self.pools[slot].get_or_init(Arc::default)
    }

    /// Sends `request` (origin-form URI, `Host` set) over a pooled connection,
    /// or a new one, and reads the response head within `limits`; the
    /// [`Exchange`] is then the response body. A failed attempt says what was
    /// written and hands the request back when it can be sent again, for
    /// [`retry::may_retry`] to decide; this function never retries itself.
    pub async fn send(
        &self,
        request: Request<UpstreamBody>,
        limits: &Limits<'_>,
    ) -> Result<(ResponseHead, Exchange), SendError> {
        let pool = self.pool();
        let (parts, body) = request.into_parts();
        let pooled = if limits.fresh { None } else { pool.take() };
        let reused = pooled.is_some();
        let conn = match pooled {
            Some(conn) => conn,
            // Boxed: the connect future is large and rare; the common path stays small.
            None => match Box::pin(self.connect()).await {
                Ok(conn) => conn,
                Err(error) => {
                    return Err(SendError::Connect {
                        request: Box::new(Request::from_parts(parts, body)),
                        error,
                    });
                }
            },
        };
        let mut exchange = Exchange::new(conn, pool.clone(), &parts, body, limits.idle);
        let error = match head_within(&mut exchange, &parts.method, limits).await {
            Ok(head) => return Ok((head, exchange)),
            Err(error) => error,
        };
        let (written, answered) = (exchange.written(), exchange.answered());
        let replay = exchange
            .into_replay()
            .map(|body| Box::new(Request::from_parts(parts, body)));
        Err(SendError::Exchange {
            error,
            written,
            answered,
            reused,
            replay,
        })
    }

    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms.load(Ordering::Relaxed))
    }

    async fn connect(&self) -> Result<Conn, ConnectError> {
        Ok(Conn::new(self.connect_stream().await?))
    }

    /// A connected stream to the member, TLS set up for `https://`, each step
    /// within the connect timeout.
    pub(crate) async fn connect_stream(&self) -> Result<MemberStream, ConnectError> {
        let connect_timeout = self.connect_timeout();
        if let Transport::BadTlsName(why) = &self.transport {
            return Err(ConnectError::Tls(why.clone()));
        }
        let stream = tokio::time::timeout(connect_timeout, self.connect_tcp())
            .await
            .map_err(|_| ConnectError::Timeout(connect_timeout))??;
        stream.set_nodelay(true).map_err(ConnectError::Io)?;
        Ok(match &self.transport {
            Transport::Tls(name) => {
                MemberStream::Tls(Box::new(self.handshake(name, stream).await?))
            }
            Transport::Tcp | Transport::BadTlsName(_) => MemberStream::Plain(stream),
        })
    }

    /// A TCP connection to the member's address, or to the first of its
    /// name's addresses that takes it; a name that does not resolve and a
    /// refused connection are told apart.
    async fn connect_tcp(&self) -> Result<TcpStream, ConnectError> {
        if let Some(addr) = self.socket_addr {
            return TcpStream::connect(addr)
                .await
                .map_err(ConnectError::from_io);
        }
        let host = self.addr.host.as_str();
        let addrs = tokio::net::lookup_host((host, self.addr.port))
            .await
            .map_err(|e| ConnectError::Resolve(host.to_owned(), e.to_string()))?;
        let mut last = ConnectError::Resolve(host.to_owned(), "no address".to_owned());
        for addr in addrs {
            match TcpStream::connect(addr).await {
                Ok(stream) => return Ok(stream),
                Err(error) => last = ConnectError::from_io(error),
            }
        }
        Err(last)
    }

    /// The TLS handshake over a connected `stream`, within the connect timeout
    /// (a second one, after the TCP connect's).
    async fn handshake(
        &self,
        name: &ServerName<'static>,
        stream: TcpStream,
    ) -> Result<tokio_rustls::client::TlsStream<TcpStream>, ConnectError> {
        let connector = match self.protocol {
            Protocol::H2 => tls::h2_connector(),
            Protocol::Http1 | Protocol::H2c => tls::connector(),
        }
        .map_err(ConnectError::Tls)?;
        let timeout = self.connect_timeout();
        let stream = tokio::time::timeout(timeout, connector.connect(name.clone(), stream))
            .await
            .map_err(|_| ConnectError::Tls(format!("handshake timed out after {timeout:?}")))?
            .map_err(|e| match self.protocol {
                Protocol::H2 => ConnectError::Tls(format!(
                    "{e} (protocol \"h2\" offers only ALPN h2 to the member)"
                )),
                Protocol::Http1 | Protocol::H2c => ConnectError::Tls(e.to_string()),
            })?;
        if self.protocol == Protocol::H2 && stream.get_ref().1.alpn_protocol() != Some(tls::ALPN_H2)
        {
            return Err(ConnectError::Tls(
                "the member did not pick ALPN h2 (protocol \"h2\")".to_owned(),
            ));
        }
        Ok(stream)
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

    /// Usable now: healthy by the checks, not in its error window, not ejected.
    pub fn usable(&self) -> bool {
        self.is_healthy() && !self.in_error() && !self.is_ejected()
    }

    /// Whether outlier detection keeps the member out now. The clock is read
    /// only while an ejection is on record; one that is over is cleared here.
    pub fn is_ejected(&self) -> bool {
        let until = self.ejected_until_ms.load(Ordering::Relaxed);
        if until == 0 {
            return false;
        }
        if clock_ms() < until {
            return true;
        }
        // Over: cleared, so later looks skip the clock, unless a newer ejection came in.
        match self
            .ejected_until_ms
            .compare_exchange(until, 0, Ordering::Relaxed, Ordering::Relaxed)
        {
            Ok(_) => false,
            Err(newer) => newer != 0 && clock_ms() < newer,
        }
    }

    /// Counts one more failure in a row; returns how many there are now.
    pub fn count_failure(&self) -> u32 {
        self.failures
            .fetch_add(1, Ordering::Relaxed)
            .saturating_add(1)
    }

    /// A success ends the run of failures (written only when there was one,
    /// so the request path does not dirty the cache line on every answer).
    pub fn count_success(&self) {
        if self.failures.load(Ordering::Relaxed) != 0 {
            self.failures.store(0, Ordering::Relaxed);
        }
    }

    /// Whether outlier detection keeps the member out at `now` (ms on [`clock_ms`]).
    pub fn is_ejected_at(&self, now: u64) -> bool {
        let until = self.ejected_until_ms.load(Ordering::Relaxed);
        until != 0 && now < until
    }

    /// The member's ejection record.
    pub fn ejections(&self) -> Ejections {
        self.ejections
            .lock()
            .map(|e| e.clone())
            .unwrap_or_else(|e| e.into_inner().clone())
    }

    /// Ejects the member as `record` says (until `record.until_ms`); the run
    /// of failures starts again from zero for when it returns.
    pub fn eject(&self, record: Ejections) {
        self.failures.store(0, Ordering::Relaxed);
        self.ejected_until_ms
            .store(record.until_ms.max(1), Ordering::Relaxed);
        match self.ejections.lock() {
            Ok(mut ejections) => *ejections = record,
            Err(poisoned) => *poisoned.into_inner() = record,
        }
    }

    /// Forgets failures and ejections (outlier detection was turned off).
    pub fn clear_ejections(&self) {
        self.count_success();
        if self.ejected_until_ms.load(Ordering::Relaxed) != 0 {
            self.ejected_until_ms.store(0, Ordering::Relaxed);
            match self.ejections.lock() {
                Ok(mut ejections) => *ejections = Ejections::default(),
                Err(poisoned) => *poisoned.into_inner() = Ejections::default(),
            }
        }
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
        } else if self.is_ejected() {
            let ejections = self.ejections();
            format!(
                "ejected (ejection {}) after {}",
                ejections.count, ejections.reason
            )
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

/// A member's ejections by outlier detection ([`crate::health::outlier`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ejections {
    /// Ejections that count toward the next one's length.
    pub count: u32,
    /// When (ms on [`clock_ms`]) the last ejection ends or ended; 0 = never ejected.
    pub until_ms: u64,
    /// The same instant in ms since the Unix epoch, for reports.
    pub until_unix_ms: u64,
    /// Why the member was last ejected.
    pub reason: String,
}

/// Why a connection to a member could not be had; nothing was sent.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The member's host name did not resolve to an address.
    #[error("the name {0:?} did not resolve: {1}")]
    Resolve(String, String),
    #[error("the connection was refused")]
    Refused,
    #[error("connect timed out after {0:?}")]
    Timeout(Duration),
    #[error("connect failed: {0}")]
    Io(std::io::Error),
    /// The TLS handshake failed (certificate, protocol, timeout) or cannot be tried.
    #[error("TLS handshake failed: {0}")]
    Tls(String),
}

impl ConnectError {
    fn from_io(error: std::io::Error) -> Self {
        match error.kind() {
            std::io::ErrorKind::ConnectionRefused => ConnectError::Refused,
            _ => ConnectError::Io(error),
        }
    }

    /// A short name for metrics and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            ConnectError::Resolve(..) => "resolve",
            ConnectError::Refused => "refused",
            ConnectError::Timeout(_) => "timeout",
            ConnectError::Io(_) => "io",
            ConnectError::Tls(_) => "tls",
        }
    }
}

/// What bounds one attempt.
#[derive(Debug)]
pub struct Limits<'a> {
    /// The longest wait for the response head once the request body was sent.
    pub head_timeout: Duration,
    /// The cluster's idle timeout for the body.
    pub idle: Duration,
    /// When the client's body was sent in full (the head clock starts then).
    pub progress: Option<&'a BodyProgress>,
    /// A new connection, not a pooled one (after a pooled one failed).
    pub fresh: bool,
}

/// Sends the request and waits for the head, for at most the head timeout
/// from when the request body was sent in full: a slow upload from the
/// client is not the member's slowness (Apache's `timeout`, nginx's
/// `proxy_read_timeout`).
async fn head_within(
    exchange: &mut Exchange,
    method: &http::Method,
    limits: &Limits<'_>,
) -> Result<ResponseHead, ExchangeError> {
    within_head_timeout(exchange.response_head(method), limits).await
}

/// `head`, within the head timeout counted from when the request body was
/// sent in full (for HTTP/1.1 and HTTP/2 members alike).
pub(crate) async fn within_head_timeout<F>(
    head: F,
    limits: &Limits<'_>,
) -> Result<ResponseHead, ExchangeError>
where
    F: std::future::Future<Output = Result<ResponseHead, ExchangeError>>,
{
    tokio::pin!(head);
    if let Some(progress) = limits.progress {
        tokio::select! {
            biased;
            head = &mut head => return head,
            () = progress.finished() => {}
        }
    }
    match tokio::time::timeout(limits.head_timeout, head).await {
        Ok(head) => head,
        Err(_) => Err(ExchangeError::Timeout(limits.head_timeout)),
    }
}

/// How connections to a member are made.
#[derive(Debug)]
enum Transport {
    /// `http://`: plain TCP.
    Tcp,
    /// `https://`: TLS over TCP; the certificate must match this name.
    Tls(ServerName<'static>),
    /// `https://` with a host that cannot be a TLS server name: every connect fails.
    BadTlsName(String),
}

/// Why an attempt failed.
#[derive(Debug)]
pub enum SendError {
    /// No connection: the request was not sent and comes back.
    Connect {
        request: Box<Request<UpstreamBody>>,
        error: ConnectError,
    },
    /// The exchange failed before a response head.
    Exchange {
        error: ExchangeError,
        /// Whether any byte of the request was written.
        written: bool,
        /// Whether the member sent any byte of an answer.
        answered: bool,
        /// Whether the connection came from the pool.
        reused: bool,
        /// The request, if its body can be sent again.
        replay: Option<Box<Request<UpstreamBody>>>,
    },
}

/// A member's answer after its head: the response body of an HTTP/1.1
/// exchange or of an HTTP/2 stream.
#[derive(Debug)]
pub enum Reply {
    H1(Exchange),
    H2(h2::H2Exchange),
}

impl Reply {
    /// Keeps `in_flight` until the answer is over.
    pub fn hold(&mut self, in_flight: Option<InFlight>) {
        match self {
            Reply::H1(exchange) => exchange.hold(in_flight),
            Reply::H2(exchange) => exchange.hold(in_flight),
        }
    }

    /// Whether the request body could be sent again (see [`Exchange::into_replay`]).
    pub fn replayable(&self) -> bool {
        match self {
            Reply::H1(exchange) => exchange.replayable(),
            Reply::H2(exchange) => exchange.replayable(),
        }
    }

    /// The request body, to send it again.
    pub fn into_replay(self) -> Option<UpstreamBody> {
        match self {
            Reply::H1(exchange) => exchange.into_replay(),
            Reply::H2(exchange) => exchange.into_replay(),
        }
    }
}

impl MemberShared {
    /// Sends `request` in the member's protocol ([`MemberShared::send`] over
    /// HTTP/1.1, [`h2::send`] over HTTP/2); for callers off the request path
    /// (health checks), which `forward` dispatches on the cluster's protocol itself.
    pub async fn send_any(
        &self,
        request: Request<UpstreamBody>,
        limits: &Limits<'_>,
    ) -> Result<(ResponseHead, Reply), SendError> {
        match self.protocol {
            Protocol::Http1 => {
                let (head, exchange) = self.send(request, limits).await?;
                Ok((head, Reply::H1(exchange)))
            }
            Protocol::H2c | Protocol::H2 => {
                let (head, exchange) = Box::pin(h2::send(self, request, limits)).await?;
                Ok((head, Reply::H2(exchange)))
            }
        }
    }
}

/// State of one cluster that outlives routing tables.
#[derive(Debug, Default)]
pub struct ClusterShared {
    /// Serializes balancer picks, whose scores live in the members.
    pub(crate) pick_lock: Mutex<()>,
    /// How many retries the cluster may still make.
    pub retry_budget: RetryBudget,
    /// Serializes ejections, so two at once cannot both pass the share cap.
    pub(crate) ejection_lock: Mutex<()>,
}

/// Hands out the shared state of clusters and members by name, so that a new
/// table reuses what the previous one had. Only the config client touches it.
#[derive(Debug, Default)]
pub struct Registry {
    clusters: HashMap<String, Arc<ClusterShared>>,
    /// Cluster name → member id → state.
    members: HashMap<String, HashMap<String, Arc<MemberShared>>>,
}

/// What a new table needs from the registry; build one with [`Registry::begin`]
/// and finish it with [`Registry::commit`] once the table is in place.
#[derive(Debug, Default)]
pub struct Generation {
    clusters: HashMap<String, Arc<ClusterShared>>,
    members: HashMap<String, HashMap<String, Arc<MemberShared>>>,
    /// Connect timeouts (ms) of kept members, set when the generation is committed.
    timeouts: Vec<(Arc<MemberShared>, u64)>,
}

impl Registry {
    /// Starts a new generation of shared state.
    pub fn begin(&self) -> Generation {
        Generation::default()
    }

    /// Keeps the state of the new generation; returns the previous one, whose
    /// members the new table no longer has, for the caller to drop.
    pub fn commit(&mut self, generation: Generation) -> Registry {
        for (member, timeout_ms) in generation.timeouts {
            member
                .connect_timeout_ms
                .store(timeout_ms, Ordering::Relaxed);
        }
        Registry {
            clusters: std::mem::replace(&mut self.clusters, generation.clusters),
            members: std::mem::replace(&mut self.members, generation.members),
        }
    }

    /// All members of the current generation, for health reports.
    pub fn members(&self) -> impl Iterator<Item = (&str, &Arc<MemberShared>)> {
        self.members
            .iter()
            .flat_map(|(cluster, members)| members.values().map(move |m| (cluster.as_str(), m)))
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
    /// same member (same cluster, id, address and protocol), with the connect
    /// timeout of the new table.
    pub fn member(
        &mut self,
        previous: &Registry,
        cluster: &str,
        id: &str,
        addr: &MemberAddr,
        protocol: Protocol,
        connect_timeout: Duration,
    ) -> Result<Arc<MemberShared>, http::Error> {
        let kept = previous
            .members
            .get(cluster)
            .and_then(|members| members.get(id))
            .filter(|m| m.addr == *addr && m.protocol == protocol);
        let shared = match kept {
            Some(shared) => {
                // Set at commit: a table that fails to compile changes nothing.
                self.timeouts
                    .push((shared.clone(), millis(connect_timeout)));
                shared.clone()
            }
            None => Arc::new(MemberShared::new(
                cluster,
                id.to_owned(),
                addr.clone(),
                protocol,
                connect_timeout,
            )?),
        };
        let members = match self.members.get_mut(cluster) {
            Some(members) => members,
            None => self.members.entry(cluster.to_owned()).or_default(),
        };
        members.insert(id.to_owned(), shared.clone());
        Ok(shared)
    }
}

/// How many worker threads serve requests; set once before the first table.
static WORKERS: AtomicUsize = AtomicUsize::new(1);

thread_local! {
    /// The index of the worker thread this is, or `usize::MAX` off the workers.
    static WORKER: Cell<usize> = const { Cell::new(usize::MAX) };
}

/// Sets the number of worker threads (before any member state is made).
pub fn set_workers(workers: usize) {
    WORKERS.store(workers.max(1), Ordering::Relaxed);
}

/// The calling worker's index (`usize::MAX` off the workers).
pub fn worker_index() -> usize {
    WORKER.with(Cell::get)
}

/// Marks the calling thread as worker `index`, so it uses that worker's pools.
pub fn enter_worker(index: usize) {
    WORKER.with(|worker| worker.set(index));
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
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
