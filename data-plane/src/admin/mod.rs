//! The admin endpoint: liveness, readiness (a snapshot is applied, and the
//! replica is not draining) and the version and hash the replica runs.

pub mod metrics;

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{debug, warn};

use crate::config::apply::State;

/// The admin endpoints: the one list that `handle` serves and `--help` shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Healthz,
    Readyz,
    Config,
    Members,
    Metrics,
}

impl Endpoint {
    pub const ALL: [Endpoint; 5] = [
        Endpoint::Healthz,
        Endpoint::Readyz,
        Endpoint::Config,
        Endpoint::Members,
        Endpoint::Metrics,
    ];

    pub const fn path(self) -> &'static str {
        match self {
            Endpoint::Healthz => "/healthz",
            Endpoint::Readyz => "/readyz",
            Endpoint::Config => "/config",
            Endpoint::Members => "/members",
            Endpoint::Metrics => "/metrics",
        }
    }

    /// What it answers, for `--help`.
    pub const fn what(self) -> &'static str {
        match self {
            Endpoint::Healthz => "liveness",
            Endpoint::Readyz => "ready once a snapshot is applied",
            Endpoint::Config => "the version and hash it runs",
            Endpoint::Members => "member health",
            Endpoint::Metrics => "Prometheus metrics",
        }
    }

    fn from_path(path: &str) -> Option<Self> {
        Endpoint::ALL.into_iter().find(|e| e.path() == path)
    }
}

/// Serves the admin endpoint until the task is dropped; once `shutdown` is
/// true (the replica drains) `/readyz` answers 503, so load balancers in
/// front stop sending before the listener closes.
pub async fn serve(listener: TcpListener, state: Arc<State>, shutdown: watch::Receiver<bool>) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(error) => {
                warn!(%error, "Admin accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                continue;
            }
        };
        let (state, shutdown) = (state.clone(), shutdown.clone());
        let service = service_fn(move |request| {
            let draining = *shutdown.borrow();
            let state = state.clone();
            async move { Ok::<_, Infallible>(handle(&state, &request, draining)) }
        });
        tokio::spawn(async move {
            if let Err(error) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                debug!(%error, "Admin connection ended with an error");
            }
        });
    }
}

fn handle(state: &State, request: &Request<Incoming>, draining: bool) -> Response<Full<Bytes>> {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return json(
            StatusCode::METHOD_NOT_ALLOWED,
            serde_json::json!({"error": "only GET is allowed"}),
        );
    }
    let running = state.running();
    let path = request.uri().path();
    match Endpoint::from_path(path) {
        Some(Endpoint::Healthz) => json(StatusCode::OK, serde_json::json!({"status": "ok"})),
        Some(Endpoint::Readyz) => match running {
            _ if draining => json(
                StatusCode::SERVICE_UNAVAILABLE,
                serde_json::json!({"status": "draining", "error": "shutting down: finishing the requests in flight"}),
            ),
            Some(running) => json(
                StatusCode::OK,
                serde_json::json!({"status": "ready", "version": running.version}),
            ),
            None => json(
                StatusCode::SERVICE_UNAVAILABLE,
                serde_json::json!({"status": "not ready", "error": "no snapshot applied yet (no cache and no control plane)"}),
            ),
        },
        Some(Endpoint::Config) => match running {
            Some(running) => json(
                StatusCode::OK,
                serde_json::json!({
                    "node_id": state.node_id,
                    "version": running.version,
                    "store_id": running.store_id,
                    "hash": running.hash,
                }),
            ),
            None => json(
                StatusCode::SERVICE_UNAVAILABLE,
                serde_json::json!({"node_id": state.node_id, "version": 0, "error": "no snapshot applied yet"}),
            ),
        },
        Some(Endpoint::Metrics) => {
            let mut response =
                Response::new(Full::new(Bytes::from(crate::admin::metrics::render(state))));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                http::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            response
        }
        Some(Endpoint::Members) => json(
            StatusCode::OK,
            serde_json::Value::Array(
                state
                    .member_health()
                    .into_iter()
                    .map(|m| {
                        serde_json::json!({
                            "cluster": m.cluster, "member_id": m.member_id,
                            "healthy": m.healthy, "detail": m.detail,
                            "ejected": m.ejected, "ejections": m.ejections,
                            "ejected_until_unix_ms": m.ejected_until_unix_ms,
                            "ejection_reason": m.ejection_reason,
                            "requests": m.requests, "errors": m.errors,
                        })
                    })
                    .collect(),
            ),
        ),
        None => json(
            StatusCode::NOT_FOUND,
            serde_json::json!({"error": format!(
                "no admin endpoint at {}; there are {}",
                switchyard_shared::text::quoted(path),
                Endpoint::ALL.map(Endpoint::path).join(", ")
            )}),
        ),
    }
}

fn json(status: StatusCode, body: serde_json::Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}
