//! The gRPC config stream (`switchyard.v1.ConfigDiscovery/Stream`): one
//! bidirectional stream per data plane; hello in, the latest snapshot out
//! whenever it differs from what the replica runs, ACK/NACK and health back.
//!
//! Each stream is served by one task that follows the store's `watch`
//! channel, so a slow replica gets the latest snapshot, not every step.
//! **A NACKed version is never sent again to that replica** (see
//! [`crate::registry`]). Every stream task ends when either side closes, when
//! a newer stream of the same node replaces it, or on shutdown.
//!
//! With mutual TLS ([`tls`]) a replica's node id is the one its certificate
//! names: a hello that claims another is refused (`PERMISSION_DENIED`) before
//! the registry sees it, so no replica can take over another's entry.

use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use switchyard_shared::proto::v1;
use switchyard_shared::proto::v1::config_discovery_server::{
    ConfigDiscovery, ConfigDiscoveryServer,
};
use switchyard_shared::proto::v1::data_plane_message::Kind;
use switchyard_shared::text::quoted;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status, Streaming};
use tracing::{Instrument, debug, info, info_span, warn};

use crate::Error;
use crate::metrics::{Metrics, StreamRefusal};
use crate::registry::{Connection, Registry};
use crate::store::Store;

mod tls;

pub use tls::{Certified, GrpcTls, GrpcTlsError, HANDSHAKE_TIMEOUT, Peer};

/// How long a new stream may take to say hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(30);
/// Outbound messages queued per stream; the watch channel coalesces the rest.
const OUTBOUND_CAPACITY: usize = 4;
/// HTTP/2 pings to notice a dead replica.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

type Outbound = mpsc::Sender<Result<v1::ControlPlaneMessage, Status>>;

/// How a burst of writes becomes one push: after a change, a stream waits
/// until no newer change came for `quiet`, or `max_delay` passed since the
/// first one, then sends the latest snapshot. On top of that a replica has one
/// snapshot in flight at a time (see [`Registry::should_send`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Coalesce {
    pub quiet: Duration,
    pub max_delay: Duration,
}

impl Default for Coalesce {
    /// 2 ms of quiet, at most 50 ms: a scripted burst is one push, and a single
    /// write still reaches every replica in milliseconds.
    fn default() -> Self {
        Coalesce {
            quiet: Duration::from_millis(2),
            max_delay: Duration::from_millis(50),
        }
    }
}

impl Coalesce {
    /// Returns once the changes on `snapshots` settled (or the channel closed).
    async fn settle(self, snapshots: &mut watch::Receiver<crate::store::Published>) {
        if self.quiet.is_zero() {
            return;
        }
        let deadline = tokio::time::Instant::now() + self.max_delay;
        loop {
            let quiet_until = (tokio::time::Instant::now() + self.quiet).min(deadline);
            match tokio::time::timeout_at(quiet_until, snapshots.changed()).await {
                Ok(Ok(())) if tokio::time::Instant::now() < deadline => {}
                _ => return,
            }
        }
    }
}

/// The `ConfigDiscovery` service; cheap to clone (clones share their tasks).
#[derive(Debug, Clone)]
pub struct Discovery {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    store: Store,
    registry: Arc<Registry>,
    metrics: Arc<Metrics>,
    stop: watch::Receiver<bool>,
    coalesce: Coalesce,
    /// The stream tasks: owned here, reaped as they end, joined at shutdown.
    tasks: Mutex<JoinSet<()>>,
}

impl Discovery {
    /// A service over `store` and `registry` that gathers bursts of writes as
    /// `coalesce` says; its streams end when `stop` turns true.
    pub fn new(
        store: Store,
        registry: Arc<Registry>,
        metrics: Arc<Metrics>,
        stop: watch::Receiver<bool>,
        coalesce: Coalesce,
    ) -> Self {
        Discovery {
            shared: Arc::new(Shared {
                store,
                registry,
                metrics,
                stop,
                coalesce,
                tasks: Mutex::new(JoinSet::new()),
            }),
        }
    }

    /// Waits up to `grace` for the stream tasks to end (they end once the stop
    /// flag is set), then aborts what is left.
    pub async fn close(&self, grace: Duration) {
        let mut tasks = std::mem::take(&mut *self.shared.lock_tasks());
        let joined =
            tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} }).await;
        if joined.is_err() {
            warn!(
                streams = tasks.len(),
                "Config streams did not end in time; aborting them"
            );
            tasks.shutdown().await;
        }
    }

    fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        let mut tasks = self.shared.lock_tasks();
        while tasks.try_join_next().is_some() {}
        tasks.spawn(task);
    }
}

impl Shared {
    fn lock_tasks(&self) -> std::sync::MutexGuard<'_, JoinSet<()>> {
        self.tasks.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Serves the config stream on `listener` (over `tls` if given) until
/// `shutdown` completes, with HTTP/2 keep-alive so a dead replica is noticed.
pub async fn serve(
    listener: TcpListener,
    tls: Option<GrpcTls>,
    discovery: Discovery,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Error> {
    let metrics = discovery.shared.metrics.clone();
    let mut server = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
        .tcp_nodelay(true);
    let router = server.add_service(ConfigDiscoveryServer::new(discovery));
    let Some(tls) = tls else {
        // The builder's `tcp_nodelay` only reaches sockets tonic accepts itself;
        // these come from our listener. Without it, a snapshot past the stream's
        // 64 KiB window ends in a small segment that Nagle holds for the
        // replica's delayed ACK: ~40 ms per push.
        let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
        return router
            .serve_with_incoming_shutdown(incoming, shutdown)
            .await
            .map_err(Error::Grpc);
    };
    let (incoming, connections) = mpsc::channel(tls::HANDED_OVER);
    let accept = tls::accept(listener, tls, metrics, incoming);
    let server = router.serve_with_incoming_shutdown(ReceiverStream::new(connections), shutdown);
    tokio::pin!(server);
    // The accept loop ends once the server drops its stream of connections.
    tokio::select! {
        result = &mut server => result.map_err(Error::Grpc),
        () = accept => server.await.map_err(Error::Grpc),
    }
}

#[tonic::async_trait]
impl ConfigDiscovery for Discovery {
    type StreamStream = ReceiverStream<Result<v1::ControlPlaneMessage, Status>>;

    async fn stream(
        &self,
        request: Request<Streaming<v1::DataPlaneMessage>>,
    ) -> Result<Response<Self::StreamStream>, Status> {
        let tls = request.extensions().get::<Peer>().cloned();
        let peer = request.remote_addr().or(tls.as_ref().map(|p| p.addr));
        let certified = tls.and_then(|p| p.certified);
        let inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(OUTBOUND_CAPACITY);
        let stream = ReplicaStream {
            shared: self.shared.clone(),
            inbound,
            tx,
        };
        let span = info_span!(
            "config_stream",
            peer.addr = %peer.map_or_else(|| "unknown".to_owned(), |p| p.to_string())
        );
        self.spawn(stream.run(peer, certified).instrument(span));
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// With mutual TLS, whether the hello's node id is the one the replica's
/// certificate names; without, any node id goes.
fn check_identity(
    hello: &v1::Hello,
    certified: Option<&Certified>,
) -> Result<(), (StreamRefusal, Status)> {
    match certified {
        None => Ok(()),
        Some(Certified::Node(name)) if *name == hello.node_id => Ok(()),
        Some(Certified::Node(name)) => Err((
            StreamRefusal::NodeIdMismatch,
            Status::permission_denied(format!(
                "the client certificate is for node id {} but the hello claims node id {}",
                quoted(name),
                quoted(&hello.node_id)
            )),
        )),
        Some(Certified::Nameless) => Err((
            StreamRefusal::NamelessCertificate,
            Status::permission_denied(
                "the client certificate names no node id (no DNS subjectAltName, no common name)",
            ),
        )),
    }
}

/// One replica's stream, served by one task.
struct ReplicaStream {
    shared: Arc<Shared>,
    inbound: Streaming<v1::DataPlaneMessage>,
    tx: Outbound,
}

/// Why the stream loop ended.
enum End {
    /// Normal: the replica closed, the client went away, or shutdown.
    Closed,
    /// The replica broke the protocol or a newer stream replaced this one.
    Status(Status),
}

impl ReplicaStream {
    async fn run(mut self, peer: Option<std::net::SocketAddr>, certified: Option<Certified>) {
        let hello = match self.hello().await {
            Ok(Some(hello)) => hello,
            Ok(None) => return,
            Err(status) => {
                debug!(error = %status.message(), "Refused a config stream");
                self.shared.metrics.stream_refused(StreamRefusal::BadHello);
                self.end(status).await;
                return;
            }
        };
        if let Err((reason, status)) = check_identity(&hello, certified.as_ref()) {
            warn!(
                node.claimed = %quoted(&hello.node_id),
                reason = reason.as_str(),
                error = %status.message(),
                "Refused a config stream: its certificate does not allow its node id"
            );
            self.shared.metrics.stream_refused(reason);
            self.end(status).await;
            return;
        }
        let node_id = hello.node_id.clone();
        if *self.shared.store.cut_off().borrow() {
            // It would get no new version here: let it try the next control plane.
            info!(node.id = %node_id, "Refused a replica: this node cannot reach its store");
            self.end(cut_off_status()).await;
            return;
        }
        let current = self.shared.store.current();
        let connection = self.shared.registry.connect(&hello, peer, &current);
        info!(
            node.id = %node_id,
            replica.version = hello.version,
            replaced = connection.replaced,
            "Replica connected"
        );
        let id = connection.id;
        let end = self.follow(&node_id, connection).await;
        self.shared.registry.disconnect(&node_id, id);
        // The replicas left may all run what this one had not applied.
        let store_id = self.shared.store.current().store_id.clone();
        for took in self.shared.registry.propagated(&store_id) {
            self.shared.metrics.propagated(took);
        }
        match end {
            End::Closed => info!(node.id = %node_id, "Replica disconnected"),
            End::Status(status) => {
                info!(node.id = %node_id, reason = %status.message(), "Replica stream ended");
                self.end(status).await;
            }
        }
    }

    /// Reads the first message, which must be a hello with a node id.
    /// `Ok(None)`: the stream ended first, or shutdown.
    async fn hello(&mut self) -> Result<Option<v1::Hello>, Status> {
        let mut stop = self.shared.stop.clone();
        let first = tokio::select! {
            first = tokio::time::timeout(HELLO_TIMEOUT, self.inbound.message()) => first,
            _ = stop.wait_for(|stop| *stop) => return Ok(None),
        };
        let message = match first {
            Err(_) => {
                return Err(Status::deadline_exceeded(format!(
                    "no hello within {HELLO_TIMEOUT:?}"
                )));
            }
            Ok(Err(status)) => {
                debug!(error = %status, "Config stream broke before its hello");
                return Ok(None);
            }
            Ok(Ok(None)) => return Ok(None),
            Ok(Ok(Some(message))) => message,
        };
        match message.kind {
            Some(Kind::Hello(hello)) if !hello.node_id.is_empty() => Ok(Some(hello)),
            Some(Kind::Hello(_)) => Err(Status::invalid_argument("hello: node_id is empty")),
            _ => Err(Status::invalid_argument(
                "the first message of a config stream must be a hello",
            )),
        }
    }

    /// Sends the latest snapshot whenever the replica should get it, and
    /// records what the replica answers, until the stream ends.
    async fn follow(&mut self, node_id: &str, mut connection: Connection) -> End {
        let id = connection.id;
        let shared = self.shared.clone();
        let mut snapshots = shared.store.subscribe();
        let mut stop = shared.stop.clone();
        let mut cut_off = shared.store.cut_off();
        let mut burst = false;
        loop {
            // A new version came: let the rest of its burst come too, then send the latest.
            if std::mem::take(&mut burst) {
                shared.coalesce.settle(&mut snapshots).await;
            }
            let published = snapshots.borrow_and_update().clone();
            if shared
                .registry
                .should_send(node_id, id, &published.snapshot)
            {
                let message = v1::ControlPlaneMessage::clone(&published.message);
                tokio::select! {
                    sent = self.tx.send(Ok(message)) => if sent.is_err() {
                        return End::Closed;
                    },
                    _ = stop.wait_for(|stop| *stop) => return End::Closed,
                }
                shared.metrics.push();
                debug!(node.id = %node_id, config.version = published.snapshot.version, "Sent a snapshot");
            }
            tokio::select! {
                _ = stop.wait_for(|stop| *stop) => return End::Closed,
                _ = &mut connection.superseded => {
                    return End::Status(Status::aborted(
                        "a newer config stream of the same node id replaced this one",
                    ));
                }
                _ = self.tx.closed() => return End::Closed,
                // The store's sender lives as long as the store: an error cannot come.
                Ok(_) = cut_off.wait_for(|cut| *cut) => return End::Status(cut_off_status()),
                changed = snapshots.changed() => if changed.is_err() {
                    return End::Closed;
                } else {
                    burst = true;
                },
                message = self.inbound.message() => match message {
                    Ok(Some(message)) => {
                        if let Err(status) = self.record(node_id, id, message) {
                            return End::Status(status);
                        }
                    }
                    Ok(None) => return End::Closed,
                    Err(status) => {
                        debug!(node.id = %node_id, error = %status, "Config stream broke");
                        return End::Closed;
                    }
                },
            }
        }
    }

    /// Records an ACK, NACK or health report in the registry.
    fn record(&self, node_id: &str, id: u64, message: v1::DataPlaneMessage) -> Result<(), Status> {
        let shared = &self.shared;
        match message.kind {
            Some(Kind::Ack(ack)) => {
                debug!(node.id = %node_id, config.version = ack.version, "ACK");
                shared.metrics.ack();
                let current = shared.store.current();
                shared.registry.ack(node_id, id, &ack, &current);
                for took in shared.registry.propagated(&current.store_id) {
                    shared.metrics.propagated(took);
                }
            }
            Some(Kind::Nack(nack)) => {
                warn!(
                    node.id = %node_id,
                    config.version = nack.version,
                    error = %nack.error,
                    "Replica refused a snapshot (NACK)"
                );
                shared.metrics.nack();
                shared.registry.nack(node_id, id, &nack);
            }
            Some(Kind::Health(report)) => shared.registry.health(node_id, id, &report),
            Some(Kind::Hello(_)) => {
                return Err(Status::invalid_argument(
                    "hello may only be the first message of a config stream",
                ));
            }
            None => return Err(Status::invalid_argument("empty message")),
        }
        Ok(())
    }

    /// Ends the stream with `status`, unless the client is already gone.
    async fn end(&self, status: Status) {
        let sent = tokio::time::timeout(Duration::from_secs(1), self.tx.send(Err(status))).await;
        if !matches!(sent, Ok(Ok(()))) {
            debug!("Could not send the final status; the client is gone");
        }
    }
}

/// Why a node that cannot reach its store (etcd) ends a replica's stream.
fn cut_off_status() -> Status {
    Status::unavailable("this control-plane node cannot reach its store (etcd); try another node")
}

#[cfg(test)]
mod tests;
