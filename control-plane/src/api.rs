//! The REST API (`/api/v1`, `/healthz`, `/metrics`): reads and writes of the
//! config, and what every replica runs.
//!
//! **Every error is a JSON `{"error": "..."}` that says what was wrong, and
//! leaves the state and version unchanged** — including bodies axum refuses,
//! unknown paths (404) and wrong methods (405). Every write answers with the
//! version that holds it and accepts `?wait=<duration>` to wait until every
//! connected replica has applied that version.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::JsonRejection;
use axum::extract::{
    DefaultBodyLimit, FromRequest, FromRequestParts, MatchedPath, Path, Query, Request, State,
};
use axum::http::request::Parts;
use axum::http::{Method, StatusCode, Uri, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde::de::{DeserializeOwned, IgnoredAny};
use serde::{Deserialize, Serialize};
use switchyard_shared::text::{bounded, quoted};
use switchyard_shared::validate::{
    normalize_member, normalize_route, parse_member_url, validate_name,
};
use switchyard_shared::{
    Cluster, ConfigDocument, ConfigError, ErrorKind, Member, MemberState, Route, Snapshot,
};
use tracing::{error, warn};
use utoipa::{OpenApi as _, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::access::{ApiAccess, Refusal};
use crate::metrics::{self, Gauges, Metrics, REPLICA_STATES, RejectReason, WriteResult};
use crate::peers::Peers;
use crate::registry::{Lagging, Registry, ReplicaView, WaitFailure};
use crate::store::{Store, WriteError, Written};

use openapi::{ErrorBody, SnapshotSchema, WaitParam, WriteErrors};

pub mod openapi;

/// The largest request body: a whole config of thousands of members fits.
pub const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;
/// The longest `?wait=` accepted.
pub const MAX_WAIT: Duration = Duration::from_secs(300);

/// What the handlers share; cheap to clone.
#[derive(Debug, Clone)]
pub struct AppState {
    store: Store,
    registry: Arc<Registry>,
    metrics: Arc<Metrics>,
    access: Arc<ApiAccess>,
    /// The other control-plane nodes' replicas (with an etcd store).
    peers: Option<Arc<Peers>>,
}

/// An API error: a status and a JSON body `{"error": ...}` (plus, for a
/// write whose replicas did not apply it, `version` and `replicas`).
#[derive(Debug)]
pub enum AppError {
    /// Refused input: 400, 404 or 409 by its kind.
    Config(ConfigError),
    /// A body that could not be read as the JSON asked for: 400.
    Body(RejectReason, String),
    /// The change could not be stored: 500.
    Storage(String),
    /// The store (etcd) cannot be reached or has no quorum: 503.
    Unavailable(String),
    /// Any other status: no such endpoint (404), method (405), body too large (413).
    Status(StatusCode, String),
    /// The change was stored, but replicas refused it (502) or did not
    /// apply it in time (504).
    NotApplied {
        status: StatusCode,
        message: String,
        version: u64,
        replicas: Vec<Lagging>,
    },
}

/// `{"version": N}`, the answer to a write.
#[derive(Debug, Serialize, ToSchema)]
pub struct VersionBody {
    pub version: u64,
}

/// `{"id": ..., "version": N}`, the answer to adding a member.
#[derive(Debug, Serialize, ToSchema)]
pub struct MemberAdded {
    pub id: String,
    pub version: u64,
}

/// The body of `PATCH .../members/{id}`: a member's new weight or state
/// (its url and id cannot change).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, remote = "Self")]
struct MemberPatch {
    #[serde(default)]
    weight: Option<u32>,
    #[serde(default)]
    state: Option<MemberState>,
    /// Named only to answer with a clear error.
    #[serde(default)]
    #[schema(ignore)]
    url: Option<IgnoredAny>,
    #[serde(default)]
    #[schema(ignore)]
    id: Option<IgnoredAny>,
}

switchyard_shared::objects_only!(MemberPatch => "a member patch object {\"weight\": ..., \"state\": ...}");

/// A JSON body whose rejections are JSON errors (400) with serde's message.
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

/// Path parameters whose rejections are JSON errors (400).
#[derive(Debug)]
pub struct ApiPath<T>(pub T);

/// The `?wait=<duration>` of a write: how long to wait for the replicas.
#[derive(Debug, Clone, Copy, Default)]
pub struct Wait(pub Option<Duration>);

#[derive(Debug, Deserialize)]
struct WaitQuery {
    wait: Option<String>,
}

impl AppState {
    pub fn new(store: Store, registry: Arc<Registry>, metrics: Arc<Metrics>) -> Self {
        AppState {
            store,
            registry,
            metrics,
            access: Arc::new(ApiAccess::open()),
            peers: None,
        }
    }

    /// The same state, with the other nodes' replicas listed and waited for.
    pub fn with_peers(mut self, peers: Option<Arc<Peers>>) -> Self {
        self.peers = peers;
        self
    }

    /// The same state, with requests checked against `access` (API tokens).
    pub fn with_access(mut self, access: Arc<ApiAccess>) -> Self {
        self.access = access;
        self
    }

    /// Stores a change (see [`Store::update`]), counts it, and waits for the
    /// replicas if asked. (Refusals are counted by [`count_refused_writes`],
    /// which sees them all, including those refused before this.)
    async fn write<R, F>(&self, wait: Wait, change: F) -> Result<Written<R>, AppError>
    where
        F: FnOnce(&mut switchyard_shared::Config, &Snapshot) -> Result<R, ConfigError>
            + Clone
            + Send
            + 'static,
        R: Send + 'static,
    {
        let result = self.store.update(change).await;
        match &result {
            Ok(written) if written.changed => {
                self.metrics.write(WriteResult::Applied);
                let store_id = self.store.current().store_id.clone();
                for took in self.registry.stored(written.version, &store_id) {
                    self.metrics.propagated(took);
                }
            }
            Ok(_) => self.metrics.write(WriteResult::Unchanged),
            Err(WriteError::Rejected(_)) => {}
            Err(WriteError::Storage(_)) => self.metrics.write(WriteResult::Failed),
        }
        let written = result?;
        if let Some(timeout) = wait.0 {
            self.wait_applied(written.version, timeout).await?;
        }
        Ok(written)
    }

    async fn wait_applied(&self, version: u64, timeout: Duration) -> Result<(), AppError> {
        let store_id = self.store.current().store_id.clone();
        let started = tokio::time::Instant::now();
        let mut waited = self
            .registry
            .wait_applied(version, &store_id, timeout)
            .await;
        if let (Ok(()), Some(peers)) = (&waited, &self.peers) {
            // The replicas of the other nodes, within what is left of the time.
            let left = timeout.saturating_sub(started.elapsed());
            waited = peers.wait_applied(version, left).await;
        }
        let failure = match waited {
            Ok(()) => return Ok(()),
            Err(failure) => failure,
        };
        let (status, message, replicas) = match failure {
            WaitFailure::Nacked(replicas) => {
                let why = replicas
                    .iter()
                    .map(|r| {
                        format!(
                            "{} nacked: {}",
                            r.node_id,
                            r.error.as_deref().unwrap_or("(no error given)")
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("; ");
                let message = format!(
                    "replicas did not apply version {version}: {why} (the change itself is stored as version {version})"
                );
                (StatusCode::BAD_GATEWAY, message, replicas)
            }
            WaitFailure::TimedOut(replicas) => {
                let why = replicas
                    .iter()
                    .map(|r| format!("{} is at version {}", r.node_id, r.version))
                    .collect::<Vec<_>>()
                    .join(", ");
                let message = format!(
                    "replicas did not apply version {version} within {}: {why} (the change itself is stored as version {version})",
                    humantime::format_duration(timeout)
                );
                (StatusCode::GATEWAY_TIMEOUT, message, replicas)
            }
        };
        Err(AppError::NotApplied {
            status,
            message,
            version,
            replicas,
        })
    }
}

/// The REST API over `state`: the documented routes and the dashboard's
/// static files (nothing else is served), then JSON errors for any other
/// path (404) or method (405).
pub fn router(state: AppState) -> Router {
    let (routes, document) = documented_routes().split_for_parts();
    let operations = Operations::new(&document, state.metrics.clone());
    routes
        // Not part of the JSON API, so not in its document; merged before the
        // fallbacks so that a wrong method on them is the API's JSON 405 too.
        .merge(crate::dashboard::routes())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn_with_state(state.clone(), require_token))
        .layer(middleware::from_fn_with_state(state.clone(), mark_stale))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            count_refused_writes,
        ))
        .layer(middleware::from_fn_with_state(operations, count_requests))
        .with_state(state)
}

/// The operation id of every documented route, by method and path template
/// (`PUT /api/v1/clusters/{name}` → `put_cluster`): the bounded
/// `operation` label of `switchyard_api_requests_total`.
#[derive(Debug, Clone)]
struct Operations {
    ids: Arc<HashMap<(Method, String), String>>,
    metrics: Arc<Metrics>,
}

impl Operations {
    fn new(document: &utoipa::openapi::OpenApi, metrics: Arc<Metrics>) -> Self {
        let mut ids = HashMap::new();
        for (path, item) in &document.paths.paths {
            let operations = [
                (Method::GET, &item.get),
                (Method::PUT, &item.put),
                (Method::POST, &item.post),
                (Method::PATCH, &item.patch),
                (Method::DELETE, &item.delete),
            ];
            for (method, operation) in operations {
                if let Some(id) = operation.as_ref().and_then(|o| o.operation_id.clone()) {
                    ids.insert((method, path.clone()), id);
                }
            }
        }
        Operations {
            ids: Arc::new(ids),
            metrics,
        }
    }

    /// The operation a request is for: its handler's id, or why there is none.
    fn of(&self, method: &Method, path: Option<&MatchedPath>) -> &str {
        let Some(path) = path else {
            return "not_found";
        };
        let method = if *method == Method::HEAD {
            Method::GET
        } else {
            method.clone()
        };
        self.ids
            .get(&(method, path.as_str().to_owned()))
            .map_or("method_not_allowed", String::as_str)
    }
}

/// Counts every request by operation and the status it was answered with.
async fn count_requests(
    State(operations): State<Operations>,
    request: Request,
    next: Next,
) -> Response {
    let method = request.method().clone();
    let path = request.extensions().get::<MatchedPath>().cloned();
    let response = next.run(request).await;
    let operation = operations.of(&method, path.as_ref());
    operations
        .metrics
        .api_request(operation, response.status().as_u16());
    response
}

/// Every route the API serves, each from its handler's `#[utoipa::path]`
/// (method, path, parameters, body and every status it answers with), with
/// the OpenAPI document they make ([`openapi::document`]). **A new endpoint
/// goes here, documented; never as a plain `.route(...)`**, so the router
/// and the document cannot differ.
pub(crate) fn documented_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .routes(routes!(healthz))
        .routes(routes!(metrics))
        .routes(routes!(openapi::openapi_json))
        .routes(routes!(get_config, put_config))
        .routes(routes!(list_clusters))
        .routes(routes!(get_cluster, put_cluster, delete_cluster))
        .routes(routes!(add_member))
        .routes(routes!(patch_member, delete_member))
        .routes(routes!(list_routes))
        .routes(routes!(get_route, put_route, delete_route))
        .routes(routes!(list_dataplanes))
}

/// Counts every write (`PUT`, `POST`, `PATCH`, `DELETE`) answered with a 4xx
/// as rejected, by the reason its [`AppError`] gave: whether it was refused by
/// validation, in the store, or while its path, query or body was read.
async fn count_refused_writes(
    State(app): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let write = matches!(
        *request.method(),
        Method::PUT | Method::POST | Method::PATCH | Method::DELETE
    );
    let response = next.run(request).await;
    if write && response.status().is_client_error() {
        let reason = response
            .extensions()
            .get::<RejectReason>()
            .copied()
            .unwrap_or(match response.status() {
                StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED => {
                    RejectReason::NoSuchEndpoint
                }
                StatusCode::PAYLOAD_TOO_LARGE => RejectReason::TooLarge,
                _ => RejectReason::Invalid,
            });
        app.metrics.write(WriteResult::Rejected(reason));
    }
    response
}

/// The header on every answer given while the store may be behind (etcd has
/// not answered lately): its value says why. Reads still answer, from the
/// last snapshot this node saw.
pub const STALE_HEADER: &str = "x-switchyard-stale";

async fn mark_stale(State(app): State<AppState>, request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    if let Some(why) = app.store.stale() {
        let value = header::HeaderValue::from_str(&bounded(why))
            .unwrap_or_else(|_| header::HeaderValue::from_static("the store is unreachable"));
        response.headers_mut().insert(STALE_HEADER, value);
    }
    response
}

/// Refuses a request without an accepted API token (see [`ApiAccess::check`])
/// before its path, query or body is read: 401 with `WWW-Authenticate:
/// Bearer`, or 403.
async fn require_token(State(app): State<AppState>, request: Request, next: Next) -> Response {
    match app
        .access
        .check(request.method(), request.uri().path(), request.headers())
    {
        Ok(()) => next.run(request).await,
        Err(refusal) => {
            let mut response = error_response(refusal.status(), refusal.message().to_owned());
            let reason = match refusal {
                Refusal::Unauthorized => {
                    response.headers_mut().insert(
                        header::WWW_AUTHENTICATE,
                        header::HeaderValue::from_static("Bearer realm=\"switchyard\""),
                    );
                    RejectReason::Unauthorized
                }
                Refusal::Forbidden => RejectReason::Forbidden,
            };
            response.extensions_mut().insert(reason);
            response
        }
    }
}

#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    responses((status = 200, description = "The control plane is up: `{\"status\": \"ok\"}`", body = serde_json::Value))
)]
async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    responses((status = 200, description = "Prometheus metrics (OpenMetrics text format 1.0.0)", body = String, content_type = "application/openmetrics-text"))
)]
async fn metrics(State(app): State<AppState>) -> Response {
    let current = app.store.current();
    let views = app.registry.views(&current);
    let mut replicas_by_state = [0; REPLICA_STATES.len()];
    for view in &views {
        if let Some(i) = REPLICA_STATES.iter().position(|s| *s == view.state)
            && let Some(count) = replicas_by_state.get_mut(i)
        {
            *count += 1;
        }
    }
    let text = app.metrics.render(Gauges {
        config_version: current.version,
        replicas_connected: views.iter().filter(|v| v.connected).count(),
        replicas_known: views.len(),
        replicas_by_state,
    });
    ([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], text).into_response()
}

#[utoipa::path(
    get,
    path = "/api/v1/config",
    tag = "config",
    responses((status = 200, description = "The whole config at its version", body = SnapshotSchema))
)]
async fn get_config(State(app): State<AppState>) -> Json<Snapshot> {
    Json(Snapshot::clone(&app.store.current()))
}

#[utoipa::path(
    put,
    path = "/api/v1/config",
    tag = "config",
    params(WaitParam),
    request_body(content = ConfigDocument, content_type = "application/json"),
    responses((status = 200, description = "Stored: the version that holds it", body = VersionBody), (status = 409, description = "The `version` in the body is not the current one (compare-and-set), or the config has a conflict (a member id or url twice)", body = ErrorBody), WriteErrors)
)]
/// Replaces the whole config in one step; a `version` in the body must be the
/// current one (compare-and-set), `store_id` and `hash` are ignored.
async fn put_config(
    State(app): State<AppState>,
    wait: Wait,
    ApiJson(document): ApiJson<ConfigDocument>,
) -> Result<Json<VersionBody>, AppError> {
    let expected = document.version;
    let config = document.into_config();
    let written = app
        .write(wait, move |draft, current| {
            if let Some(expected) = expected
                && expected != current.version
            {
                return Err(ConfigError::conflict(format!(
                    "config changed since version {expected} (the current version is {}); read it again and reapply your change",
                    current.version
                )));
            }
            *draft = config;
            Ok(())
        })
        .await?;
    Ok(Json(VersionBody {
        version: written.version,
    }))
}

#[utoipa::path(
    get,
    path = "/api/v1/clusters",
    tag = "clusters",
    responses((status = 200, description = "Every cluster, by name", body = Vec<Cluster>))
)]
async fn list_clusters(State(app): State<AppState>) -> Json<Vec<Cluster>> {
    Json(app.store.current().config.clusters.clone())
}

#[utoipa::path(
    get,
    path = "/api/v1/clusters/{name}",
    tag = "clusters",
    params(("name" = String, Path, description = "The cluster's name", min_length = 1)),
    responses((status = 200, description = "The cluster", body = Cluster), (status = 404, description = "No such cluster", body = ErrorBody), (status = 400, description = "The path is not valid", body = ErrorBody))
)]
async fn get_cluster(
    State(app): State<AppState>,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<Cluster>, AppError> {
    let current = app.store.current();
    let cluster = current
        .config
        .cluster(&name)
        .ok_or_else(|| no_cluster(&name))?;
    Ok(Json(cluster.clone()))
}

#[utoipa::path(
    put,
    path = "/api/v1/clusters/{name}",
    tag = "clusters",
    params(("name" = String, Path, description = "The cluster's name", min_length = 1), WaitParam),
    request_body(content = Cluster, content_type = "application/json"),
    responses((status = 200, description = "Stored: the version that holds it", body = VersionBody), (status = 409, description = "Two members with the same id, url or route", body = ErrorBody), WriteErrors)
)]
/// Creates or replaces a cluster; answers 200 either way.
async fn put_cluster(
    State(app): State<AppState>,
    ApiPath(name): ApiPath<String>,
    wait: Wait,
    ApiJson(mut cluster): ApiJson<Cluster>,
) -> Result<Json<VersionBody>, AppError> {
    check_body_name("cluster", &name, &cluster.name)?;
    validate_name("cluster", &name)?;
    cluster.name.clone_from(&name);
    let written = app
        .write(wait, move |config, _| {
            match config.cluster_mut(&name) {
                Some(existing) => *existing = cluster,
                None => config.clusters.push(cluster),
            }
            Ok(())
        })
        .await?;
    Ok(Json(VersionBody {
        version: written.version,
    }))
}

#[utoipa::path(
    delete,
    path = "/api/v1/clusters/{name}",
    tag = "clusters",
    params(("name" = String, Path, description = "The cluster's name", min_length = 1), WaitParam),
    responses((status = 200, description = "Removed: the version without it", body = VersionBody), (status = 404, description = "No such cluster", body = ErrorBody), (status = 409, description = "A route uses the cluster", body = ErrorBody), WriteErrors)
)]
async fn delete_cluster(
    State(app): State<AppState>,
    ApiPath(name): ApiPath<String>,
    wait: Wait,
) -> Result<Json<VersionBody>, AppError> {
    let written = app
        .write(wait, move |config, _| {
            let index = config
                .clusters
                .iter()
                .position(|c| c.name == name)
                .ok_or_else(|| no_cluster(&name))?;
            let users: Vec<String> = config
                .routes
                .iter()
                .filter(|r| r.cluster == name)
                .map(|r| quoted(&r.name).to_string())
                .collect();
            if !users.is_empty() {
                return Err(ConfigError::conflict(format!(
                    "cluster {} is used by route {}; change or delete the route first",
                    quoted(&name),
                    users.join(", ")
                )));
            }
            config.clusters.remove(index);
            Ok(())
        })
        .await?;
    Ok(Json(VersionBody {
        version: written.version,
    }))
}

#[utoipa::path(
    post,
    path = "/api/v1/clusters/{name}/members",
    tag = "clusters",
    params(("name" = String, Path, description = "The cluster's name", min_length = 1), WaitParam),
    request_body(content = Member, content_type = "application/json"),
    responses((status = 201, description = "Added: its id and the version that holds it", body = MemberAdded), (status = 404, description = "No such cluster", body = ErrorBody), (status = 409, description = "The cluster already has a member with this id or url", body = ErrorBody), WriteErrors)
)]
/// Adds a member; answers 201 with its id.
async fn add_member(
    State(app): State<AppState>,
    ApiPath(name): ApiPath<String>,
    wait: Wait,
    ApiJson(mut member): ApiJson<Member>,
) -> Result<(StatusCode, Json<MemberAdded>), AppError> {
    let addr = normalize_member(&mut member)?;
    let id = member.id.clone();
    let written = app
        .write(wait, move |config, _| {
            let cluster = config.cluster_mut(&name).ok_or_else(|| no_cluster(&name))?;
            for existing in &cluster.members {
                if existing.id == member.id {
                    return Err(ConfigError::conflict(format!(
                        "cluster {} already has a member with id {}",
                        quoted(&name),
                        quoted(&member.id)
                    )));
                }
                if parse_member_url(&existing.url).is_ok_and(|a| a == addr) {
                    return Err(ConfigError::conflict(format!(
                        "cluster {} already has member {} at {}",
                        quoted(&name),
                        quoted(&existing.id),
                        addr.base_url()
                    )));
                }
            }
            cluster.members.push(member);
            Ok(())
        })
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(MemberAdded {
            id,
            version: written.version,
        }),
    ))
}

#[utoipa::path(
    patch,
    path = "/api/v1/clusters/{name}/members/{id}",
    tag = "clusters",
    params(("name" = String, Path, description = "The cluster's name", min_length = 1), ("id" = String, Path, description = "The member's id", min_length = 1), WaitParam),
    request_body(content = MemberPatch, content_type = "application/json"),
    responses((status = 200, description = "Stored: the version that holds it", body = VersionBody), (status = 404, description = "No such cluster or member", body = ErrorBody), (status = 409, description = "The change conflicts with the cluster", body = ErrorBody), WriteErrors)
)]
/// Changes a member's weight or state; its url and id stay.
async fn patch_member(
    State(app): State<AppState>,
    ApiPath((name, id)): ApiPath<(String, String)>,
    wait: Wait,
    ApiJson(patch): ApiJson<MemberPatch>,
) -> Result<Json<VersionBody>, AppError> {
    if patch.url.is_some() || patch.id.is_some() {
        return Err(AppError::Config(ConfigError::invalid(
            "a member's url and id cannot be changed; delete the member and add a new one",
        )));
    }
    let written = app
        .write(wait, move |config, _| {
            let cluster = config.cluster_mut(&name).ok_or_else(|| no_cluster(&name))?;
            let member = cluster
                .members
                .iter_mut()
                .find(|m| m.id == id)
                .ok_or_else(|| no_member(&name, &id))?;
            if let Some(weight) = patch.weight {
                member.weight = weight;
            }
            if let Some(state) = patch.state {
                member.state = state;
            }
            Ok(())
        })
        .await?;
    Ok(Json(VersionBody {
        version: written.version,
    }))
}

#[utoipa::path(
    delete,
    path = "/api/v1/clusters/{name}/members/{id}",
    tag = "clusters",
    params(("name" = String, Path, description = "The cluster's name", min_length = 1), ("id" = String, Path, description = "The member's id", min_length = 1), WaitParam),
    responses((status = 200, description = "Removed: the version without it", body = VersionBody), (status = 404, description = "No such cluster or member", body = ErrorBody), (status = 409, description = "The change conflicts with the cluster", body = ErrorBody), WriteErrors)
)]
async fn delete_member(
    State(app): State<AppState>,
    ApiPath((name, id)): ApiPath<(String, String)>,
    wait: Wait,
) -> Result<Json<VersionBody>, AppError> {
    let written = app
        .write(wait, move |config, _| {
            let cluster = config.cluster_mut(&name).ok_or_else(|| no_cluster(&name))?;
            let index = cluster
                .members
                .iter()
                .position(|m| m.id == id)
                .ok_or_else(|| no_member(&name, &id))?;
            cluster.members.remove(index);
            Ok(())
        })
        .await?;
    Ok(Json(VersionBody {
        version: written.version,
    }))
}

#[utoipa::path(
    get,
    path = "/api/v1/routes",
    tag = "routes",
    responses((status = 200, description = "Every route, by name", body = Vec<Route>))
)]
async fn list_routes(State(app): State<AppState>) -> Json<Vec<Route>> {
    Json(app.store.current().config.routes.clone())
}

#[utoipa::path(
    get,
    path = "/api/v1/routes/{name}",
    tag = "routes",
    params(("name" = String, Path, description = "The route's name", min_length = 1)),
    responses((status = 200, description = "The route", body = Route), (status = 404, description = "No such route", body = ErrorBody), (status = 400, description = "The path is not valid", body = ErrorBody))
)]
async fn get_route(
    State(app): State<AppState>,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<Route>, AppError> {
    let current = app.store.current();
    let route = current.config.route(&name).ok_or_else(|| no_route(&name))?;
    Ok(Json(route.clone()))
}

#[utoipa::path(
    put,
    path = "/api/v1/routes/{name}",
    tag = "routes",
    params(("name" = String, Path, description = "The route's name", min_length = 1), WaitParam),
    request_body(content = Route, content_type = "application/json"),
    responses((status = 200, description = "Stored: the version that holds it", body = VersionBody), (status = 409, description = "Another route has the same host and path_prefix", body = ErrorBody), WriteErrors)
)]
/// Creates or replaces a route; answers 200 either way. Its cluster must
/// exist (400); another route with the same host and prefix is a 409.
async fn put_route(
    State(app): State<AppState>,
    ApiPath(name): ApiPath<String>,
    wait: Wait,
    ApiJson(mut route): ApiJson<Route>,
) -> Result<Json<VersionBody>, AppError> {
    check_body_name("route", &name, &route.name)?;
    route.name.clone_from(&name);
    normalize_route(&mut route)?;
    let written = app
        .write(wait, move |config, _| {
            if config.cluster(&route.cluster).is_none() {
                return Err(ConfigError::invalid(format!(
                    "route {}: cluster {} does not exist",
                    quoted(&route.name),
                    quoted(&route.cluster)
                )));
            }
            if let Some(other) = config.routes.iter().find(|r| {
                r.name != route.name && r.host == route.host && r.path_prefix == route.path_prefix
            }) {
                return Err(ConfigError::conflict(format!(
                    "route {}: route {} already matches host {} and path_prefix {}",
                    quoted(&route.name),
                    quoted(&other.name),
                    route
                        .host
                        .as_deref()
                        .map_or("(any)".to_owned(), |h| quoted(h).to_string()),
                    quoted(&route.path_prefix)
                )));
            }
            match config.routes.iter_mut().find(|r| r.name == route.name) {
                Some(existing) => *existing = route,
                None => config.routes.push(route),
            }
            Ok(())
        })
        .await?;
    Ok(Json(VersionBody {
        version: written.version,
    }))
}

#[utoipa::path(
    delete,
    path = "/api/v1/routes/{name}",
    tag = "routes",
    params(("name" = String, Path, description = "The route's name", min_length = 1), WaitParam),
    responses((status = 200, description = "Removed: the version without it", body = VersionBody), (status = 404, description = "No such route", body = ErrorBody), (status = 409, description = "The change conflicts with the config", body = ErrorBody), WriteErrors)
)]
async fn delete_route(
    State(app): State<AppState>,
    ApiPath(name): ApiPath<String>,
    wait: Wait,
) -> Result<Json<VersionBody>, AppError> {
    let written = app
        .write(wait, move |config, _| {
            let index = config
                .routes
                .iter()
                .position(|r| r.name == name)
                .ok_or_else(|| no_route(&name))?;
            config.routes.remove(index);
            Ok(())
        })
        .await?;
    Ok(Json(VersionBody {
        version: written.version,
    }))
}

#[utoipa::path(
    get,
    path = "/api/v1/dataplanes",
    tag = "dataplanes",
    responses((status = 200, description = "Every replica the control plane knows: what it runs and how it sees the members", body = Vec<ReplicaView>))
)]
async fn list_dataplanes(State(app): State<AppState>) -> Json<Vec<serde_json::Value>> {
    let current = app.store.current();
    Json(crate::peers::listing(
        app.registry.views(&current),
        app.peers.as_deref(),
        &current,
    ))
}

async fn not_found(method: Method, uri: Uri) -> AppError {
    AppError::Status(
        StatusCode::NOT_FOUND,
        format!("no such endpoint: {method} {}", quoted(uri.path())),
    )
}

async fn method_not_allowed(method: Method, uri: Uri) -> AppError {
    AppError::Status(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("method {method} is not allowed on {}", quoted(uri.path())),
    )
}

/// A name in the body, if any, must be the one in the path.
fn check_body_name(what: &str, path_name: &str, body_name: &str) -> Result<(), AppError> {
    if body_name.is_empty() || body_name == path_name {
        return Ok(());
    }
    Err(AppError::Config(ConfigError::invalid(format!(
        "{what} name {} in the body differs from {} in the path",
        quoted(body_name),
        quoted(path_name)
    ))))
}

fn no_cluster(name: &str) -> ConfigError {
    ConfigError::not_found(format!("cluster {} does not exist", quoted(name)))
}

fn no_member(cluster: &str, id: &str) -> ConfigError {
    ConfigError::not_found(format!(
        "cluster {} has no member {}",
        quoted(cluster),
        quoted(id)
    ))
}

fn no_route(name: &str) -> ConfigError {
    ConfigError::not_found(format!("route {} does not exist", quoted(name)))
}

impl From<ConfigError> for AppError {
    fn from(error: ConfigError) -> Self {
        AppError::Config(error)
    }
}

impl From<WriteError> for AppError {
    fn from(error: WriteError) -> Self {
        match error {
            WriteError::Rejected(error) => AppError::Config(error),
            WriteError::Storage(error) if error.is_unavailable() => {
                AppError::Unavailable(error.to_string())
            }
            WriteError::Storage(error) => AppError::Storage(error.to_string()),
        }
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        match self {
            AppError::Config(error) => {
                let (status, reason) = match error.kind {
                    ErrorKind::Invalid => (StatusCode::BAD_REQUEST, RejectReason::Invalid),
                    ErrorKind::NotFound => (StatusCode::NOT_FOUND, RejectReason::NotFound),
                    ErrorKind::Conflict => (StatusCode::CONFLICT, RejectReason::Conflict),
                };
                let mut response = error_response(status, error.message);
                response.extensions_mut().insert(reason);
                response
            }
            AppError::Body(reason, message) => {
                let mut response = error_response(StatusCode::BAD_REQUEST, message);
                response.extensions_mut().insert(reason);
                response
            }
            AppError::Storage(message) => {
                error!(error = %message, "A change could not be stored");
                error_response(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("the change was not stored: {message}"),
                )
            }
            AppError::Unavailable(message) => {
                warn!(error = %message, "A change could not be stored: the store is unavailable");
                error_response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("the change was not stored: {message}"),
                )
            }
            AppError::Status(status, message) => error_response(status, message),
            AppError::NotApplied {
                status,
                message,
                version,
                replicas,
            } => {
                let body = serde_json::json!({
                    "error": message,
                    "version": version,
                    "replicas": replicas,
                });
                (status, Json(body)).into_response()
            }
        }
    }
}

/// `{"error": message}`; a message is never longer than
/// [`switchyard_shared::text::MESSAGE_MAX_CHARS`], whatever it quotes.
fn error_response(status: StatusCode, message: String) -> Response {
    (
        status,
        Json(serde_json::json!({ "error": bounded(message) })),
    )
        .into_response()
}

impl<S, T> FromRequest<S> for ApiJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = AppError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(request, state).await {
            Ok(Json(value)) => Ok(ApiJson(value)),
            Err(rejection) => Err(json_rejection(&rejection)),
        }
    }
}

fn json_rejection(rejection: &JsonRejection) -> AppError {
    let (reason, message) = match rejection {
        JsonRejection::MissingJsonContentType(_) => (
            RejectReason::ContentType,
            "the request body must be JSON with `Content-Type: application/json`".to_owned(),
        ),
        other if other.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return AppError::Status(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "the request body is larger than {} MiB",
                    MAX_BODY_BYTES / 1024 / 1024
                ),
            );
        }
        JsonRejection::JsonSyntaxError(_) => (
            RejectReason::JsonSyntax,
            format!("invalid request body: {}", bounded(rejection.body_text())),
        ),
        other => (
            RejectReason::JsonData,
            format!("invalid request body: {}", bounded(other.body_text())),
        ),
    };
    AppError::Body(reason, message)
}

impl<S, T> FromRequestParts<S> for ApiPath<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Send,
{
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(value)) => Ok(ApiPath(value)),
            Err(rejection) => Err(AppError::Config(ConfigError::invalid(format!(
                "invalid path: {}",
                bounded(rejection.body_text())
            )))),
        }
    }
}

impl<S> FromRequestParts<S> for Wait
where
    S: Send + Sync,
{
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let invalid = |message: String| AppError::Config(ConfigError::invalid(message));
        let Query(query) = Query::<WaitQuery>::try_from_uri(&parts.uri)
            .map_err(|e| invalid(format!("invalid query: {}", bounded(e.body_text()))))?;
        let Some(text) = query.wait else {
            return Ok(Wait(None));
        };
        let duration = humantime::parse_duration(&text).map_err(|e| {
            invalid(format!(
                "invalid wait {} ({}); write it like \"2s\" or \"500ms\"",
                quoted(&text),
                bounded(e.to_string())
            ))
        })?;
        if duration > MAX_WAIT {
            return Err(invalid(format!(
                "wait {} is too long; at most {}",
                quoted(&text),
                humantime::format_duration(MAX_WAIT)
            )));
        }
        Ok(Wait(Some(duration)))
    }
}

#[cfg(test)]
mod tests;
