//! The etcd backend of the [`Store`](super::Store): several control-plane
//! nodes share one config kept in one etcd key, `<prefix>config`, that holds
//! the whole snapshot (version, store id, hash, config) as the state file does.
//!
//! - **A write is one transaction** that compares the key's `mod_revision`
//!   with the one the change was made on and puts the next snapshot only if it
//!   is unchanged; so two nodes can never both write version N. A node that
//!   lost the race gets the newer snapshot from the same transaction's else
//!   branch and makes the change again on it (the change is a function of the
//!   snapshot it is given).
//! - **Every node follows the key** (a watch, plus a linearizable read every
//!   second that also tells whether etcd is reachable) and publishes each newer
//!   snapshot on the store's `watch` channel, which the config streams follow.
//!   A snapshot is taken only if its `mod_revision` is above the last one seen,
//!   so versions never go backwards on a node, whatever the order the watch
//!   and the reads deliver them in.
//! - **Without etcd** (unreachable, no quorum) a write fails with
//!   [`StoreError::Unavailable`] (the API's 503) and nothing is changed or
//!   published; reads serve the last snapshot seen, [`EtcdStore::stale`] says
//!   since when and why.
//!
//! The client is generated from `proto/etcd/` (etcd's own v3 API, trimmed):
//! one lazily connected channel per endpoint; a request that finds its
//! endpoint unreachable moves on to the next one.

use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use switchyard_shared::{Config, ConfigError, Snapshot};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Code, Status};
use tracing::{info, warn};

use super::{Prepared, Published, StoreError, WriteError, Written, decode, new_store_id, prepare};

/// etcd's generated v3 API (`proto/etcd/`).
#[allow(clippy::all, clippy::pedantic)]
pub(crate) mod pb {
    pub mod mvccpb {
        tonic::include_proto!("mvccpb");
    }
    pub mod etcdserverpb {
        tonic::include_proto!("etcdserverpb");
    }
}

use pb::etcdserverpb::{
    AuthenticateRequest, Compare, DeleteRangeRequest, LeaseGrantRequest, LeaseKeepAliveRequest,
    LeaseRevokeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest, WatchCreateRequest,
    WatchRequest, auth_client::AuthClient, compare, kv_client::KvClient, lease_client::LeaseClient,
    request_op, response_op, watch_client::WatchClient, watch_request,
};
use pb::mvccpb::{KeyValue, event::EventType};

/// The key prefix when none is given.
pub const DEFAULT_PREFIX: &str = "/switchyard/";
/// How long one request to etcd may take before the next endpoint is tried.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3);
/// How often a node reads the config key to check it is current.
const POLL_EVERY: Duration = Duration::from_secs(1);
/// How long etcd may not answer before the node counts as cut off: it then
/// ends its replicas' streams so they move to a node that can reach etcd.
pub const CUT_OFF_AFTER: Duration = Duration::from_secs(3);
/// What a write is called in messages (and how `call` knows it is one).
const WRITE: &str = "a write";
/// How many times a write is made again after losing a race to another node.
const MAX_WRITE_ATTEMPTS: usize = 32;

/// How to reach etcd: `--store etcd://…` and the `--etcd-*` flags.
#[derive(Debug, Clone)]
pub struct EtcdOptions {
    /// `host:port` of each member (or of a proxy in front of them).
    pub endpoints: Vec<String>,
    /// Every key the store writes starts with it.
    pub prefix: String,
    /// One request's deadline.
    pub timeout: Duration,
    /// TLS: the CA that signed the members' certificates (turns TLS on).
    pub ca: Option<PathBuf>,
    /// TLS client certificate and key, for members that ask for one.
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// etcd user name and password (etcd's auth).
    pub user: Option<String>,
    pub password: Option<String>,
}

impl EtcdOptions {
    /// Options for `--store etcd://host:port[,host:port…]` with the defaults.
    pub fn from_url(url: &str) -> Result<EtcdOptions, String> {
        let Some(hosts) = url.strip_prefix("etcd://") else {
            return Err(format!(
                "{}: a store is etcd://host:port[,host:port…]",
                switchyard_shared::text::quoted(url)
            ));
        };
        let mut endpoints = Vec::new();
        for host in hosts.trim_end_matches('/').split(',') {
            let valid = match host.rsplit_once(':') {
                Some((name, port)) => !name.is_empty() && port.parse::<u16>().is_ok(),
                None => false,
            };
            if !valid || host.contains('/') || host.contains('@') {
                return Err(format!(
                    "{}: each etcd endpoint is host:port",
                    switchyard_shared::text::quoted(host)
                ));
            }
            endpoints.push(host.to_owned());
        }
        Ok(EtcdOptions {
            endpoints,
            prefix: DEFAULT_PREFIX.to_owned(),
            timeout: DEFAULT_TIMEOUT,
            ca: None,
            cert: None,
            key: None,
            user: None,
            password: None,
        })
    }

    /// Where the replicas' status is kept, one key per replica.
    pub(crate) fn replicas_prefix(&self) -> Vec<u8> {
        format!("{}replicas/", self.prefix).into_bytes()
    }

    fn config_key(&self) -> Vec<u8> {
        format!("{}config", self.prefix).into_bytes()
    }
}

/// What went wrong talking to etcd.
#[derive(Debug, Clone)]
pub(crate) enum EtcdError {
    /// No answer, no leader, no quorum: try again later (503).
    Unavailable(String),
    /// etcd answered with an error of its own (500).
    Refused(String),
}

impl From<EtcdError> for StoreError {
    fn from(error: EtcdError) -> Self {
        match error {
            EtcdError::Unavailable(message) => StoreError::Unavailable(message),
            EtcdError::Refused(message) => StoreError::Etcd(message),
        }
    }
}

impl std::fmt::Display for EtcdError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EtcdError::Unavailable(message) | EtcdError::Refused(message) => f.write_str(message),
        }
    }
}

/// Puts the auth token (if any) on every request.
#[derive(Debug, Clone, Default)]
struct Token(Arc<Mutex<Option<MetadataValue<Ascii>>>>);

impl Interceptor for Token {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        let token = self
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        if let Some(token) = token {
            request.metadata_mut().insert("token", token);
        }
        Ok(request)
    }
}

type Service = InterceptedService<Channel, Token>;

/// The etcd client: one channel per endpoint, the one in use, the token.
#[derive(Debug, Clone)]
pub(crate) struct Client {
    channels: Arc<Vec<(String, Channel)>>,
    current: Arc<AtomicUsize>,
    token: Token,
    credentials: Option<Arc<(String, String)>>,
    timeout: Duration,
}

impl Client {
    /// Builds the channels (connected lazily) and, with a user, logs in.
    pub(crate) async fn connect(options: &EtcdOptions) -> Result<Client, StoreError> {
        if options.endpoints.is_empty() {
            return Err(StoreError::Unavailable("no etcd endpoint given".to_owned()));
        }
        let tls = tls_config(options)?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        let mut channels = Vec::new();
        for host in &options.endpoints {
            let mut endpoint = Endpoint::from_shared(format!("{scheme}://{host}"))
                .map_err(|e| StoreError::Unavailable(format!("etcd endpoint {host}: {e}")))?
                .connect_timeout(options.timeout)
                .tcp_nodelay(true)
                .http2_keep_alive_interval(Duration::from_secs(5))
                .keep_alive_timeout(options.timeout)
                .keep_alive_while_idle(true);
            if let Some(tls) = &tls {
                endpoint = endpoint.tls_config(tls.clone()).map_err(|e| {
                    StoreError::Unavailable(format!("etcd endpoint {host}: TLS: {e}"))
                })?;
            }
            channels.push((host.clone(), endpoint.connect_lazy()));
        }
        let credentials = match (&options.user, &options.password) {
            (Some(user), Some(password)) => Some(Arc::new((user.clone(), password.clone()))),
            (Some(_), None) => {
                return Err(StoreError::Unavailable(
                    "an etcd user needs a password (--etcd-password-file)".to_owned(),
                ));
            }
            _ => None,
        };
        let client = Client {
            channels: Arc::new(channels),
            current: Arc::new(AtomicUsize::new(0)),
            token: Token::default(),
            credentials,
            timeout: options.timeout,
        };
        if client.credentials.is_some() {
            client.authenticate().await.map_err(StoreError::from)?;
        }
        Ok(client)
    }

    /// The endpoint in use and its channel.
    fn channel(&self) -> (usize, &str, Channel) {
        let index = self.current.load(Ordering::Relaxed) % self.channels.len();
        let (host, channel) = &self.channels[index];
        (index, host, channel.clone())
    }

    /// Moves on from endpoint `index` (unless another request already did).
    fn next_endpoint(&self, index: usize) {
        let next = (index + 1) % self.channels.len();
        // Losing this race means another request moved on already.
        let _moved = self
            .current
            .compare_exchange(index, next, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok();
    }

    fn endpoints(&self) -> String {
        self.channels
            .iter()
            .map(|(host, _)| host.as_str())
            .collect::<Vec<_>>()
            .join(",")
    }

    async fn authenticate(&self) -> Result<(), EtcdError> {
        let Some(credentials) = self.credentials.clone() else {
            return Ok(());
        };
        let response = self
            .call("authenticate", move |channel| {
                let request = AuthenticateRequest {
                    name: credentials.0.clone(),
                    password: credentials.1.clone(),
                };
                async move { AuthClient::new(channel).authenticate(request).await }
            })
            .await?;
        let token = MetadataValue::try_from(response.token.as_str())
            .map_err(|e| EtcdError::Refused(format!("etcd gave an unusable auth token: {e}")))?;
        *self.token.0.lock().unwrap_or_else(PoisonError::into_inner) = Some(token);
        Ok(())
    }

    /// One unary request: each endpoint in turn while they are unavailable,
    /// each try within the timeout; logs in again once if the token expired.
    async fn request<T, F, Fut>(&self, what: &str, call: F) -> Result<T, EtcdError>
    where
        F: Fn(Service) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let mut logged_in = false;
        loop {
            let service = |channel| InterceptedService::new(channel, self.token.clone());
            match self.call(what, |channel| call(service(channel))).await {
                Err(EtcdError::Refused(message))
                    if !logged_in && self.credentials.is_some() && auth_expired(&message) =>
                {
                    logged_in = true;
                    self.authenticate().await?;
                }
                other => return other,
            }
        }
    }

    async fn call<T, F, Fut>(&self, what: &str, call: F) -> Result<T, EtcdError>
    where
        F: Fn(Channel) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let mut last = None;
        for _ in 0..self.channels.len() {
            let (index, host, channel) = self.channel();
            let error = match tokio::time::timeout(self.timeout, call(channel)).await {
                Ok(Ok(response)) => return Ok(response.into_inner()),
                Ok(Err(status)) => {
                    let mut error = status_error(host, what, &status);
                    if let EtcdError::Unavailable(message) = &mut error
                        && what == WRITE
                    {
                        // etcd's "request timed out" may still be committed.
                        let refused = status.code() == Code::Unavailable
                            && !status.message().contains("timed out");
                        message.push_str(if refused {
                            "; nothing was changed"
                        } else {
                            "; the change is not acknowledged"
                        });
                    }
                    error
                }
                Err(_) => EtcdError::Unavailable(format!(
                    "etcd at {host} did not answer {what} within {} (unreachable, or without quorum){}",
                    humantime::format_duration(self.timeout),
                    if what == WRITE {
                        "; the change is not acknowledged (should etcd still commit it once it \
                         recovers, every node takes it as the next version)"
                    } else {
                        ""
                    }
                )),
            };
            match error {
                EtcdError::Unavailable(_) => {
                    self.next_endpoint(index);
                    last = Some(error);
                }
                EtcdError::Refused(_) => return Err(error),
            }
        }
        Err(last.unwrap_or_else(|| {
            EtcdError::Unavailable(format!("etcd at {} is unreachable", self.endpoints()))
        }))
    }

    /// The key's current value (linearizable: etcd needs its quorum for it)
    /// and the store's revision when it was read.
    async fn get(&self, key: &[u8]) -> Result<(Option<KeyValue>, i64), EtcdError> {
        let request = RangeRequest {
            key: key.to_vec(),
            ..Default::default()
        };
        let response = self
            .request("a read", |service| {
                let request = request.clone();
                async move { KvClient::new(service).range(request).await }
            })
            .await?;
        let revision = response.header.map_or(0, |h| h.revision);
        Ok((response.kvs.into_iter().next(), revision))
    }

    /// Puts `value` at `key` if the key's `mod_revision` is `expected` (0: if
    /// the key does not exist): `Ok(revision)` of the write, or `Err` with
    /// the key as it is now.
    async fn compare_and_put(
        &self,
        key: &[u8],
        expected: i64,
        value: Vec<u8>,
    ) -> Result<Result<i64, Option<KeyValue>>, EtcdError> {
        let compare = if expected == 0 {
            Compare {
                result: compare::CompareResult::Equal as i32,
                target: compare::CompareTarget::Create as i32,
                key: key.to_vec(),
                range_end: Vec::new(),
                target_union: Some(compare::TargetUnion::CreateRevision(0)),
            }
        } else {
            Compare {
                result: compare::CompareResult::Equal as i32,
                target: compare::CompareTarget::Mod as i32,
                key: key.to_vec(),
                range_end: Vec::new(),
                target_union: Some(compare::TargetUnion::ModRevision(expected)),
            }
        };
        let request = TxnRequest {
            compare: vec![compare],
            success: vec![RequestOp {
                request: Some(request_op::Request::RequestPut(PutRequest {
                    key: key.to_vec(),
                    value,
                    ..Default::default()
                })),
            }],
            failure: vec![RequestOp {
                request: Some(request_op::Request::RequestRange(RangeRequest {
                    key: key.to_vec(),
                    ..Default::default()
                })),
            }],
        };
        let response = self
            .request(WRITE, |service| {
                let request = request.clone();
                async move { KvClient::new(service).txn(request).await }
            })
            .await?;
        if response.succeeded {
            return Ok(Ok(response.header.map_or(0, |h| h.revision)));
        }
        let current = response
            .responses
            .into_iter()
            .find_map(|op| match op.response {
                Some(response_op::Response::ResponseRange(range)) => range.kvs.into_iter().next(),
                _ => None,
            });
        Ok(Err(current))
    }
}

impl Client {
    /// A new lease of `ttl`: its id.
    pub(crate) async fn grant_lease(&self, ttl: Duration) -> Result<i64, EtcdError> {
        let request = LeaseGrantRequest {
            ttl: i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX).max(1),
            id: 0,
        };
        let response = self
            .request("a lease grant", |service| async move {
                LeaseClient::new(service).lease_grant(request).await
            })
            .await?;
        if !response.error.is_empty() {
            return Err(EtcdError::Refused(format!(
                "etcd refused a lease: {}",
                response.error
            )));
        }
        Ok(response.id)
    }

    /// Renews lease `id` once: whether it is still alive.
    pub(crate) async fn keep_alive(&self, id: i64) -> Result<bool, EtcdError> {
        let response = self
            .request("a lease renewal", |service| async move {
                let once = tokio_stream::once(LeaseKeepAliveRequest { id });
                let mut answers = LeaseClient::new(service)
                    .lease_keep_alive(once)
                    .await?
                    .into_inner();
                let answer = answers.message().await?;
                Ok(tonic::Response::new(answer))
            })
            .await?;
        Ok(response.is_some_and(|r| r.ttl > 0))
    }

    /// Revokes lease `id` (its keys go with it).
    pub(crate) async fn revoke_lease(&self, id: i64) -> Result<(), EtcdError> {
        self.request("a lease revocation", |service| async move {
            LeaseClient::new(service)
                .lease_revoke(LeaseRevokeRequest { id })
                .await
        })
        .await
        .map(drop)
    }

    /// Puts `value` at `key`, attached to lease `lease`.
    pub(crate) async fn put_leased(
        &self,
        key: Vec<u8>,
        value: Vec<u8>,
        lease: i64,
    ) -> Result<(), EtcdError> {
        let request = PutRequest {
            key,
            value,
            lease,
            ..Default::default()
        };
        self.request(WRITE, |service| {
            let request = request.clone();
            async move { KvClient::new(service).put(request).await }
        })
        .await
        .map(drop)
    }

    /// Deletes `key` if it is attached to lease `lease` (another node's key
    /// for the same name stays).
    pub(crate) async fn delete_if_leased(&self, key: Vec<u8>, lease: i64) -> Result<(), EtcdError> {
        let request = TxnRequest {
            compare: vec![Compare {
                result: compare::CompareResult::Equal as i32,
                target: compare::CompareTarget::Lease as i32,
                key: key.clone(),
                range_end: Vec::new(),
                target_union: Some(compare::TargetUnion::Lease(lease)),
            }],
            success: vec![RequestOp {
                request: Some(request_op::Request::RequestDeleteRange(
                    DeleteRangeRequest {
                        key,
                        ..Default::default()
                    },
                )),
            }],
            failure: Vec::new(),
        };
        self.request(WRITE, |service| {
            let request = request.clone();
            async move { KvClient::new(service).txn(request).await }
        })
        .await
        .map(drop)
    }

    /// A watch of every key that starts with `prefix`, from `start_revision`:
    /// the events as they come, until the stream fails or etcd ends it (then
    /// the next endpoint is used for the next watch). The request stream is
    /// kept open by the returned sender.
    pub(crate) async fn watch_prefix(
        &self,
        prefix: &[u8],
        start_revision: i64,
    ) -> Result<PrefixWatch, EtcdError> {
        let started = self
            .start_watch(prefix.to_vec(), prefix_end(prefix), start_revision)
            .await?;
        Ok(PrefixWatch {
            _requests: started.requests,
            stream: started.stream,
            client: self.clone(),
            index: started.index,
            host: started.host,
        })
    }

    /// Starts a watch of `key` (up to `range_end`; empty: the key alone) from
    /// `start_revision` on the endpoint in use, asking etcd to end it when its
    /// member loses the leader (`hasleader`), so a cut-off member is noticed.
    /// A watch that fails to start moves on to the next endpoint.
    async fn start_watch(
        &self,
        key: Vec<u8>,
        range_end: Vec<u8>,
        start_revision: i64,
    ) -> Result<StartedWatch, EtcdError> {
        let (index, host, channel) = self.channel();
        let host = host.to_owned();
        let (requests, outbound) = mpsc::channel(1);
        let create = WatchRequest {
            request_union: Some(watch_request::RequestUnion::CreateRequest(
                WatchCreateRequest {
                    key,
                    range_end,
                    start_revision,
                    ..Default::default()
                },
            )),
        };
        // The channel has room for it.
        drop(requests.try_send(create));
        let mut request = tonic::Request::new(ReceiverStream::new(outbound));
        request
            .metadata_mut()
            .insert("hasleader", MetadataValue::from_static("true"));
        let mut client = WatchClient::new(InterceptedService::new(channel, self.token.clone()));
        match tokio::time::timeout(self.timeout, client.watch(request)).await {
            Ok(Ok(response)) => Ok(StartedWatch {
                requests,
                stream: response.into_inner(),
                index,
                host,
            }),
            Ok(Err(status)) => {
                self.next_endpoint(index);
                Err(status_error(&host, "a watch", &status))
            }
            Err(_) => {
                self.next_endpoint(index);
                Err(EtcdError::Unavailable(format!(
                    "etcd at {host} did not start a watch within {}",
                    humantime::format_duration(self.timeout)
                )))
            }
        }
    }

    /// Every key that starts with `prefix`, with its value, and the store's
    /// revision when they were read.
    pub(crate) async fn get_prefix_at(
        &self,
        prefix: &[u8],
    ) -> Result<(Vec<KeyValue>, i64), EtcdError> {
        let request = RangeRequest {
            key: prefix.to_vec(),
            range_end: prefix_end(prefix),
            ..Default::default()
        };
        let response = self
            .request("a read", |service| {
                let request = request.clone();
                async move { KvClient::new(service).range(request).await }
            })
            .await?;
        Ok((response.kvs, response.header.map_or(0, |h| h.revision)))
    }
}

/// The end of the range of every key that starts with `prefix` (etcd's
/// `--prefix`): the prefix with its last byte below 0xff incremented.
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // All 0xff (or empty): every key from the prefix on.
    vec![0]
}

/// A watch of a prefix ([`Client::watch_prefix`]).
pub(crate) struct PrefixWatch {
    /// Closing the request stream would end the watch.
    _requests: mpsc::Sender<WatchRequest>,
    stream: tonic::Streaming<pb::etcdserverpb::WatchResponse>,
    client: Client,
    index: usize,
    host: String,
}

/// A watch etcd accepted: it lasts while `requests` is kept open.
struct StartedWatch {
    requests: mpsc::Sender<WatchRequest>,
    stream: tonic::Streaming<pb::etcdserverpb::WatchResponse>,
    /// The endpoint it runs on, by index and name.
    index: usize,
    host: String,
}

/// What changed under a watched prefix.
pub(crate) enum Change {
    Put(KeyValue),
    Deleted(Vec<u8>),
}

impl PrefixWatch {
    /// The next batch of changes; an error when the watch failed or ended.
    pub(crate) async fn next(&mut self) -> Result<Vec<Change>, EtcdError> {
        let message = match self.stream.message().await {
            Ok(Some(message)) => message,
            Ok(None) => {
                return Err(EtcdError::Unavailable(format!(
                    "etcd at {} ended the watch",
                    self.host
                )));
            }
            Err(status) => {
                self.client.next_endpoint(self.index);
                return Err(status_error(&self.host, "a watch", &status));
            }
        };
        if message.canceled {
            return Err(EtcdError::Unavailable(format!(
                "etcd at {} ended the watch: {}",
                self.host, message.cancel_reason
            )));
        }
        Ok(message
            .events
            .into_iter()
            .filter_map(|event| {
                let kv = event.kv?;
                Some(if event.r#type == EventType::Delete as i32 {
                    Change::Deleted(kv.key)
                } else {
                    Change::Put(kv)
                })
            })
            .collect())
    }
}

impl std::fmt::Debug for PrefixWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrefixWatch")
            .field("host", &self.host)
            .finish_non_exhaustive()
    }
}

/// Whether etcd's message says the auth token is no longer valid.
fn auth_expired(message: &str) -> bool {
    message.contains("invalid auth token")
}

fn status_error(host: &str, what: &str, status: &Status) -> EtcdError {
    let message = format!(
        "etcd at {host} failed {what}: {}",
        switchyard_shared::text::bounded(status.message().to_owned())
    );
    let unavailable = matches!(
        status.code(),
        Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Unknown
    ) || status.message().contains("no leader")
        || status.message().contains("timed out");
    if unavailable {
        EtcdError::Unavailable(format!("{message} (unreachable, or without quorum)"))
    } else {
        EtcdError::Refused(message)
    }
}

fn tls_config(options: &EtcdOptions) -> Result<Option<ClientTlsConfig>, StoreError> {
    let read = |what: &str, path: &PathBuf| {
        std::fs::read(path).map_err(|e| {
            StoreError::Unavailable(format!(
                "cannot read the etcd {what} {}: {e}",
                path.display()
            ))
        })
    };
    let Some(ca) = &options.ca else {
        if options.cert.is_some() || options.key.is_some() {
            return Err(StoreError::Unavailable(
                "--etcd-cert and --etcd-key need --etcd-ca".to_owned(),
            ));
        }
        return Ok(None);
    };
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read("CA", ca)?));
    match (&options.cert, &options.key) {
        (Some(cert), Some(key)) => {
            tls = tls.identity(Identity::from_pem(
                read("certificate", cert)?,
                read("key", key)?,
            ));
        }
        (None, None) => {}
        _ => {
            return Err(StoreError::Unavailable(
                "--etcd-cert and --etcd-key go together".to_owned(),
            ));
        }
    }
    Ok(Some(tls))
}

/// The snapshot a node has, with the `mod_revision` of the key it came from.
#[derive(Debug)]
struct View {
    mod_revision: i64,
    /// Why etcd is not known to be current, and since when.
    stale: Option<(Instant, String)>,
}

/// What the store and its follower task share.
#[derive(Debug)]
struct Shared {
    client: Client,
    key: Vec<u8>,
    view: Mutex<View>,
    current: Arc<watch::Sender<Published>>,
    /// True while etcd has not answered for [`CUT_OFF_AFTER`].
    cut_off: watch::Sender<bool>,
}

/// The etcd backend: the client, the node's view, and the task that follows
/// the key (aborted with the store).
#[derive(Debug)]
pub struct EtcdStore {
    shared: Arc<Shared>,
    options: EtcdOptions,
    follower: JoinHandle<()>,
}

impl Drop for EtcdStore {
    fn drop(&mut self) {
        self.follower.abort();
    }
}

impl EtcdStore {
    /// Connects, reads the config key or creates it (a new store id; the
    /// bootstrap config as version 1 when there is one) in one transaction
    /// that only succeeds if no other node created it first, and starts
    /// following it. Fails if etcd cannot be reached.
    pub(crate) async fn open(
        options: EtcdOptions,
        bootstrap: Option<Config>,
    ) -> Result<(EtcdStore, Arc<watch::Sender<Published>>), StoreError> {
        let client = Client::connect(&options).await?;
        let key = options.config_key();
        let shown_key = String::from_utf8_lossy(&key).into_owned();
        let endpoints = client.endpoints();
        let (snapshot, mod_revision) = 'open: {
            for _ in 0..MAX_WRITE_ATTEMPTS {
                let (kv, _) = client.get(&key).await?;
                let existing = match kv {
                    Some(kv) => Some((parse(&kv, &key)?, kv.mod_revision)),
                    None => None,
                };
                let config = bootstrap.clone().unwrap_or_default();
                let (next, expected) = match existing {
                    Some((snapshot, _)) if snapshot.version == 0 && config != Config::default() => {
                        (
                            Snapshot::new(1, snapshot.store_id.clone(), config),
                            Some(snapshot),
                        )
                    }
                    Some((snapshot, revision)) => {
                        if bootstrap.is_some() {
                            info!(etcd.key = %shown_key, "The store has a config; the bootstrap config is not applied");
                        }
                        info!(etcd.endpoints = %endpoints, etcd.key = %shown_key, store.id = %snapshot.store_id, config.version = snapshot.version, "Loaded the store from etcd");
                        break 'open (snapshot, revision);
                    }
                    None => {
                        let version = u64::from(config != Config::default());
                        (Snapshot::new(version, new_store_id(), config), None)
                    }
                };
                let expected_revision = match &expected {
                    Some(_) => client.get(&key).await?.0.map_or(0, |kv| kv.mod_revision),
                    None => 0,
                };
                let value = encode(&next)?;
                if let Ok(revision) = client
                    .compare_and_put(&key, expected_revision, value)
                    .await?
                {
                    info!(etcd.endpoints = %endpoints, etcd.key = %shown_key, store.id = %next.store_id, config.version = next.version, "Created the store in etcd");
                    break 'open (next, revision);
                }
                // Another node created or wrote it meanwhile: read it again.
            }
            return Err(StoreError::Unavailable(format!(
                "etcd key {shown_key} kept changing while the store was opened"
            )));
        };
        let (current, _) = watch::channel(Published::new(snapshot));
        let current = Arc::new(current);
        let shared = Arc::new(Shared {
            client,
            key,
            view: Mutex::new(View {
                mod_revision,
                stale: None,
            }),
            current: current.clone(),
            cut_off: watch::Sender::new(false),
        });
        let follower = tokio::spawn(follow(shared.clone()));
        Ok((
            EtcdStore {
                shared,
                options,
                follower,
            },
            current,
        ))
    }

    /// The client, for what else the node keeps in etcd ([`crate::peers`]).
    pub(crate) fn client(&self) -> &Client {
        &self.shared.client
    }

    /// The options it was opened with.
    pub(crate) fn options(&self) -> &EtcdOptions {
        &self.options
    }

    /// Turns true once etcd has not answered for [`CUT_OFF_AFTER`], false
    /// again when it answers.
    pub fn cut_off(&self) -> watch::Receiver<bool> {
        self.shared.cut_off.subscribe()
    }

    /// Why the snapshot may be behind etcd; `None` when etcd answered lately.
    pub fn stale(&self) -> Option<String> {
        let view = self.shared.lock();
        view.stale.as_ref().map(|(since, why)| {
            format!(
                "etcd has not answered for {}s: {why}",
                since.elapsed().as_secs()
            )
        })
    }

    /// [`Store::update`](super::Store::update) on etcd: the change made on
    /// the node's snapshot, put with one compare-and-swap transaction; made
    /// again on the newer snapshot if another node wrote first. A refusal or
    /// "nothing changed" is confirmed by a read first, so it is never the
    /// answer of an outdated snapshot.
    pub(crate) async fn update<R, F>(
        &self,
        current: &watch::Sender<Published>,
        change: F,
    ) -> Result<Written<R>, WriteError>
    where
        F: FnOnce(&mut Config, &Snapshot) -> Result<R, ConfigError> + Clone,
    {
        let shared = &self.shared;
        let storage = |e: EtcdError| WriteError::Storage(StoreError::from(e));
        let mut lost = 0_u32;
        for _ in 0..MAX_WRITE_ATTEMPTS {
            // Read together under the view's lock, which `observe` holds while it
            // moves both: a change is put only on the revision it was made on.
            let (snapshot, mod_revision) = {
                let view = shared.lock();
                (current.borrow().snapshot.clone(), view.mod_revision)
            };
            let (next, value) = match prepare(&snapshot, change.clone()) {
                Ok(Prepared::Next(next, value)) => (next, value),
                Ok(Prepared::Unchanged(value)) => {
                    let newer = shared.refresh().await.map_err(|e| {
                        shared.mark_stale(&e);
                        storage(e)
                    })?;
                    if newer {
                        continue;
                    }
                    return Ok(Written {
                        version: snapshot.version,
                        changed: false,
                        value,
                    });
                }
                Err(error) => {
                    // Refused on a snapshot etcd may have moved on from; if
                    // etcd cannot say, the refusal on the last one stands.
                    if let Ok(true) = shared.refresh().await {
                        continue;
                    }
                    return Err(WriteError::Rejected(error));
                }
            };
            let bytes = encode(&next).map_err(WriteError::Storage)?;
            match shared
                .client
                .compare_and_put(&shared.key, mod_revision, bytes)
                .await
            {
                Ok(Ok(revision)) => {
                    let version = next.version;
                    shared.observe(next, revision);
                    info!(
                        config.version = version,
                        "Stored a new config version in etcd"
                    );
                    return Ok(Written {
                        version,
                        changed: true,
                        value,
                    });
                }
                Ok(Err(Some(kv))) => {
                    // Another node wrote first: its snapshot, then the change again,
                    // after a random pause that grows, so two busy nodes fall out of step.
                    let snapshot = parse(&kv, &shared.key).map_err(WriteError::Storage)?;
                    shared.observe(snapshot, kv.mod_revision);
                    lost += 1;
                    let most = 1_u64 << lost.min(7);
                    tokio::time::sleep(Duration::from_millis(fastrand::u64(0..=most))).await;
                }
                Ok(Err(None)) => {
                    return Err(WriteError::Storage(StoreError::Etcd(format!(
                        "etcd key {} was deleted; restart a node to create a new store",
                        String::from_utf8_lossy(&shared.key)
                    ))));
                }
                Err(e) => {
                    shared.mark_stale(&e);
                    return Err(storage(e));
                }
            }
        }
        Err(WriteError::Storage(StoreError::Unavailable(format!(
            "the config changed on other nodes {MAX_WRITE_ATTEMPTS} times while this change was made; try again"
        ))))
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, View> {
        self.view.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes `snapshot` (found at `mod_revision`) if it is newer than the
    /// node's, and publishes it. Returns whether it was newer.
    fn observe(&self, snapshot: Snapshot, mod_revision: i64) -> bool {
        let mut view = self.lock();
        if mod_revision <= view.mod_revision {
            return false;
        }
        let before = self.current.borrow().snapshot.clone();
        if snapshot.store_id != before.store_id {
            warn!(store.id = %snapshot.store_id, previous.store.id = %before.store_id, "The etcd key holds another store now; following it");
        } else if snapshot.version <= before.version {
            warn!(
                config.version = snapshot.version,
                current.version = before.version,
                "Ignored a snapshot from etcd that does not go forward"
            );
            view.mod_revision = mod_revision;
            return false;
        }
        view.mod_revision = mod_revision;
        // Under the lock: the view's revision and the published snapshot move together.
        self.current.send_replace(Published::new(snapshot));
        true
    }

    fn mark_stale(&self, error: &EtcdError) {
        let mut view = self.lock();
        if view.stale.is_none() {
            warn!(error = %error, "etcd is not answering; serving the last config seen");
        }
        let since = view
            .stale
            .take()
            .map_or_else(Instant::now, |(since, _)| since);
        view.stale = Some((since, error.to_string()));
    }

    fn mark_fresh(&self) {
        let mut view = self.lock();
        if view.stale.take().is_some() {
            info!("etcd answers again");
        }
    }

    /// Reads the key (linearizable) and takes what it holds if it is newer:
    /// whether it was.
    async fn refresh(&self) -> Result<bool, EtcdError> {
        let (kv, _) = self.client.get(&self.key).await?;
        self.mark_fresh();
        match kv {
            Some(kv) => match parse(&kv, &self.key) {
                Ok(snapshot) => Ok(self.observe(snapshot, kv.mod_revision)),
                Err(e) => {
                    warn!(error = %e, "Ignored what the etcd key holds");
                    Ok(false)
                }
            },
            None => Ok(false),
        }
    }
}

/// Follows the key until the store is dropped (the task is aborted then):
/// a watch from the last revision seen, restarted after any error, beside a
/// read every [`POLL_EVERY`] that marks the node stale or fresh and catches
/// anything a watch missed.
async fn follow(shared: Arc<Shared>) {
    let watch = async {
        let mut pause = Duration::from_millis(100);
        loop {
            match watch_once(&shared).await {
                Ok(()) => pause = Duration::from_millis(100),
                Err(e) => {
                    shared.mark_stale(&e);
                    pause = (pause * 2).min(Duration::from_secs(2));
                }
            }
            tokio::time::sleep(pause).await;
        }
    };
    let poll = async {
        let mut every = tokio::time::interval(POLL_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            if let Err(e) = shared.refresh().await {
                shared.mark_stale(&e);
            }
            let cut_off = shared
                .lock()
                .stale
                .as_ref()
                .is_some_and(|(since, _)| since.elapsed() >= CUT_OFF_AFTER);
            shared.cut_off.send_if_modified(|was| {
                if *was == cut_off {
                    return false;
                }
                if cut_off {
                    warn!("Cut off from etcd: ending the replicas' streams so they move to another node");
                }
                *was = cut_off;
                true
            });
        }
    };
    tokio::join!(watch, poll);
}

/// One watch of the key from the revision after the node's, on the endpoint
/// in use, until it fails or etcd ends it. Asks etcd to end it when its
/// member loses the leader (`hasleader`), so a cut-off member is noticed.
async fn watch_once(shared: &Shared) -> Result<(), EtcdError> {
    let start_revision = shared.lock().mod_revision + 1;
    let started = shared
        .client
        .start_watch(shared.key.clone(), Vec::new(), start_revision)
        .await?;
    let followed = read_watch(shared, started.stream, started.index, &started.host).await;
    // The request stream stays open until here: closing it ends the watch.
    drop(started.requests);
    followed
}

/// Takes each snapshot a watch delivers, until it fails or ends.
async fn read_watch(
    shared: &Shared,
    mut stream: tonic::Streaming<pb::etcdserverpb::WatchResponse>,
    index: usize,
    host: &str,
) -> Result<(), EtcdError> {
    loop {
        let message = match stream.message().await {
            Ok(Some(message)) => message,
            Ok(None) => return Ok(()),
            Err(status) => {
                shared.client.next_endpoint(index);
                return Err(status_error(host, "a watch", &status));
            }
        };
        if message.canceled {
            // Compacted past the node's revision, or no leader: read the key
            // (the poll does) and watch again from there.
            return Err(EtcdError::Unavailable(format!(
                "etcd at {host} ended the watch: {}",
                if message.cancel_reason.is_empty() {
                    "no reason given".to_owned()
                } else {
                    message.cancel_reason.clone()
                }
            )));
        }
        for event in message.events {
            let Some(kv) = event.kv else { continue };
            if event.r#type != EventType::Put as i32 {
                warn!(etcd.key = %String::from_utf8_lossy(&shared.key), "The etcd key was deleted; keeping the last config");
                continue;
            }
            match parse(&kv, &shared.key) {
                Ok(snapshot) => {
                    shared.observe(snapshot, kv.mod_revision);
                }
                Err(e) => warn!(error = %e, "Ignored what the etcd key holds"),
            }
        }
        shared.mark_fresh();
    }
}

fn parse(kv: &KeyValue, key: &[u8]) -> Result<Snapshot, StoreError> {
    decode(&kv.value).map_err(|reason| {
        StoreError::Etcd(format!(
            "etcd key {} is not a valid snapshot: {reason}; fix or delete it (it is never replaced silently)",
            String::from_utf8_lossy(key)
        ))
    })
}

fn encode(snapshot: &Snapshot) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(snapshot)
        .map_err(|e| StoreError::Etcd(format!("cannot encode the snapshot: {e}")))
}
