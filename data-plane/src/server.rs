//! Accepting client connections (HTTP/1.1 and h2c on the same port) and
//! handing each request to the proxy; graceful shutdown: stop accepting, let
//! requests in flight finish within a grace period, then close.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderValue;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::proxy::{ClientInfo, Proxy};

/// A client that sends its headers slower than this is cut off.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Serves the proxy on `listener` until `shutdown` turns true, then drains for up to `grace`.
pub async fn serve(
    listener: TcpListener,
    proxy: Arc<Proxy>,
    mut shutdown: watch::Receiver<bool>,
    grace: Duration,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(64 * 1024);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(256);
    let graceful = GracefulShutdown::new();
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: wait a little rather than spin.
                    warn!(%error, "Accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
            () = crate::stopped(&mut shutdown) => break,
        };
        // TCP_NODELAY is inherited from the listener (see `bind_workers`).
        let client = Arc::new((
            proxy.clone(),
            ClientInfo {
                ip: HeaderValue::try_from(peer.ip().to_string())
                    .unwrap_or_else(|_| HeaderValue::from_static("unknown")),
            },
        ));
        let service = service_fn(move |request| {
            let client = client.clone();
            async move { Ok::<_, Infallible>(client.0.handle(request, &client.1).await) }
        });
        let connection = builder
            .serve_connection(TokioIo::new(stream), service)
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                debug!(client.addr = %peer, %error, "Connection ended with an error");
            }
        });
    }
    drop(listener);
    info!("Draining connections");
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        warn!(
            ?grace,
            "Grace period over; closing the remaining connections"
        );
    }
}
