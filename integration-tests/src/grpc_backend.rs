//! A real gRPC member (a tonic server of the test service `Echo`, from
//! `proto/echo.proto`) that counts what it sees: calls, calls cancelled
//! before they finished (the stream reset under them), the `grpc-timeout`
//! of the last call, and the TCP connections it accepted.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{Stream, StreamExt as _};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Code, Request, Response, Status, Streaming};

/// The generated code of `proto/echo.proto`.
pub mod pb {
    tonic::include_proto!("switchyard.test.v1");
}

use pb::echo_server::{Echo, EchoServer};
use pb::{EchoReply, EchoRequest};

/// What the member saw.
#[derive(Debug, Default)]
pub struct GrpcSeen {
    /// Calls that reached a handler.
    pub calls: AtomicUsize,
    /// Calls whose handler was dropped before it answered.
    pub cancelled: AtomicUsize,
    /// Calls in their handler now, and the most there were at once.
    pub in_flight: AtomicUsize,
    pub max_in_flight: AtomicUsize,
    /// TCP connections accepted.
    pub connections: AtomicUsize,
    /// The `grpc-timeout` of the last call that had one.
    pub last_timeout: Mutex<Option<String>>,
}

/// A running gRPC member; dropping it stops it.
#[derive(Debug)]
pub struct GrpcBackend {
    addr: SocketAddr,
    pub seen: Arc<GrpcSeen>,
    stop: Option<oneshot::Sender<()>>,
    server: JoinHandle<()>,
}

impl GrpcBackend {
    /// `http://127.0.0.1:PORT`, the member URL (cluster protocol `h2c`).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn calls(&self) -> usize {
        self.seen.calls.load(Ordering::SeqCst)
    }

    pub fn cancelled(&self) -> usize {
        self.seen.cancelled.load(Ordering::SeqCst)
    }

    pub fn connections(&self) -> usize {
        self.seen.connections.load(Ordering::SeqCst)
    }

    pub fn max_in_flight(&self) -> usize {
        self.seen.max_in_flight.load(Ordering::SeqCst)
    }

    pub fn last_timeout(&self) -> Option<String> {
        self.seen
            .last_timeout
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl Drop for GrpcBackend {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.server.abort();
    }
}

/// Starts a gRPC member on `127.0.0.1:<a free port>`; with `max_streams`, it
/// allows at most that many concurrent streams per connection (its
/// `SETTINGS_MAX_CONCURRENT_STREAMS`).
pub async fn spawn_grpc_backend(max_streams: Option<u32>) -> GrpcBackend {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a gRPC backend can bind 127.0.0.1:0");
    let addr = listener
        .local_addr()
        .expect("a bound listener has an address");
    let seen = Arc::new(GrpcSeen::default());
    let counted = seen.clone();
    let incoming = TcpListenerStream::new(listener).inspect(move |accepted| {
        if accepted.is_ok() {
            counted.connections.fetch_add(1, Ordering::SeqCst);
        }
    });
    let (stop, stopped) = oneshot::channel::<()>();
    let service = EchoServer::new(EchoService { seen: seen.clone() });
    let server = tokio::spawn(async move {
        let served = tonic::transport::Server::builder()
            .max_concurrent_streams(max_streams)
            .add_service(service)
            .serve_with_incoming_shutdown(incoming, async {
                let _ = stopped.await;
            })
            .await;
        if let Err(error) = served {
            tracing::debug!(%error, "The gRPC backend stopped");
        }
    });
    GrpcBackend {
        addr,
        seen,
        stop: Some(stop),
        server,
    }
}

#[derive(Debug)]
struct EchoService {
    seen: Arc<GrpcSeen>,
}

/// Counts a call while its handler runs; one dropped before [`Call::done`] was cancelled.
struct Call {
    seen: Arc<GrpcSeen>,
    done: bool,
}

impl Call {
    fn start<T>(seen: &Arc<GrpcSeen>, request: &Request<T>) -> Call {
        seen.calls.fetch_add(1, Ordering::SeqCst);
        let now = seen.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        seen.max_in_flight.fetch_max(now, Ordering::SeqCst);
        if let Some(timeout) = request.metadata().get("grpc-timeout") {
            *seen.last_timeout.lock().unwrap_or_else(|e| e.into_inner()) =
                timeout.to_str().ok().map(str::to_owned);
        }
        Call {
            seen: seen.clone(),
            done: false,
        }
    }

    fn done(mut self) {
        self.done = true;
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        self.seen.in_flight.fetch_sub(1, Ordering::SeqCst);
        if !self.done {
            self.seen.cancelled.fetch_add(1, Ordering::SeqCst);
        }
    }
}

fn failure(request: &EchoRequest) -> Option<Status> {
    (request.fail_code != 0).then(|| {
        Status::new(
            Code::from_i32(i32::try_from(request.fail_code).unwrap_or(2)),
            request.message.clone(),
        )
    })
}

async fn delay(request: &EchoRequest) {
    if request.delay_ms > 0 {
        tokio::time::sleep(Duration::from_millis(u64::from(request.delay_ms))).await;
    }
}

type ReplyStream = Pin<Box<dyn Stream<Item = Result<EchoReply, Status>> + Send>>;

#[tonic::async_trait]
impl Echo for EchoService {
    async fn unary(&self, request: Request<EchoRequest>) -> Result<Response<EchoReply>, Status> {
        let call = Call::start(&self.seen, &request);
        let request = request.into_inner();
        delay(&request).await;
        call.done();
        if let Some(status) = failure(&request) {
            return Err(status);
        }
        Ok(Response::new(EchoReply {
            message: format!("unary: {}", request.message),
            index: 0,
        }))
    }

    type ServerStreamStream = ReplyStream;

    async fn server_stream(
        &self,
        request: Request<EchoRequest>,
    ) -> Result<Response<ReplyStream>, Status> {
        let call = Call::start(&self.seen, &request);
        let request = request.into_inner();
        let failed = failure(&request);
        let (text, delay_ms) = (request.message.clone(), request.delay_ms);
        let replies = futures_util::stream::iter(0..request.count)
            .then(move |index| {
                let message = text.clone();
                async move {
                    if delay_ms > 0 {
                        tokio::time::sleep(Duration::from_millis(u64::from(delay_ms))).await;
                    }
                    Ok(EchoReply { message, index })
                }
            })
            .chain(futures_util::stream::iter(failed.map(Err)));
        call.done();
        Ok(Response::new(Box::pin(replies)))
    }

    async fn client_stream(
        &self,
        request: Request<Streaming<EchoRequest>>,
    ) -> Result<Response<EchoReply>, Status> {
        let call = Call::start(&self.seen, &request);
        let mut stream = request.into_inner();
        let mut messages = Vec::new();
        while let Some(message) = stream.message().await? {
            messages.push(message.message);
        }
        call.done();
        Ok(Response::new(EchoReply {
            message: messages.join(","),
            index: u32::try_from(messages.len()).unwrap_or(u32::MAX),
        }))
    }

    type BidiStream = ReplyStream;

    async fn bidi(
        &self,
        request: Request<Streaming<EchoRequest>>,
    ) -> Result<Response<ReplyStream>, Status> {
        let call = Call::start(&self.seen, &request);
        let stream = request.into_inner();
        let replies = stream.enumerate().map(|(index, message)| {
            message.map(|m| EchoReply {
                message: format!("bidi: {}", m.message),
                index: u32::try_from(index).unwrap_or(u32::MAX),
            })
        });
        call.done();
        Ok(Response::new(Box::pin(replies)))
    }
}
