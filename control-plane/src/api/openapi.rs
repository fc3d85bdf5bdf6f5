//! The OpenAPI 3.1 document of the REST API (`GET /api/v1/openapi.json`).
//!
//! It is generated: the router is built from the handlers' `#[utoipa::path]`
//! attributes (`utoipa_axum::routes!` in [`super::documented_routes`]), so a
//! route is served only if it is documented, and the schemas come from the
//! model types themselves (`ToSchema`, the `openapi` feature of
//! switchyard-shared). What is written here is only what the types cannot
//! say: the error bodies and the sets of statuses the handlers answer with.

use std::sync::LazyLock;

use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::openapi::OpenApi as Document;
use utoipa::{IntoParams, IntoResponses, OpenApi, ToSchema};

use switchyard_shared::{Cluster, Route};

use crate::registry::Lagging;

/// The document's fixed parts; the paths and their schemas are added by
/// [`super::documented_routes`].
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Switchyard control plane",
        description = "Clusters of members, the routes that lead to them, and what every data-plane replica runs. \
Every write is validated, stored durably and given the next version; every error is `{\"error\": \"...\"}` \
and changes nothing (neither the config nor its version). Model objects refuse unknown fields.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    components(schemas(ErrorBody, NotAppliedBody)),
    tags(
        (name = "config", description = "The whole config at once"),
        (name = "clusters", description = "Clusters and their members"),
        (name = "routes", description = "Routes"),
        (name = "dataplanes", description = "What each replica runs"),
        (name = "operations", description = "Liveness, metrics and this document"),
    )
)]
pub(super) struct ApiDoc;

/// The document, built once.
static DOCUMENT: LazyLock<String> = LazyLock::new(|| {
    let document: Document = super::documented_routes().into_openapi();
    // Serializing the document (strings, numbers, maps) cannot fail; an
    // empty object would fail the tests that read it.
    document
        .to_pretty_json()
        .unwrap_or_else(|_| "{}".to_owned())
});

/// The OpenAPI document of this API, as JSON.
pub fn document() -> &'static str {
    &DOCUMENT
}

/// This document: OpenAPI 3.1, generated from the handlers and the model types.
#[utoipa::path(
    get,
    path = "/api/v1/openapi.json",
    tag = "operations",
    operation_id = "get_openapi",
    responses((status = 200, description = "The OpenAPI 3.1 document of this API", content_type = "application/json"))
)]
pub(super) async fn openapi_json() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], document()).into_response()
}

/// Every error but a write the replicas did not apply: what was wrong,
/// quoting at most 64 characters of the input (at most 1,024 in all).
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// What was wrong and where.
    pub error: String,
}

/// A write that was stored, but that the replicas refused (502) or did not
/// apply within `?wait` (504).
#[derive(Debug, Serialize, ToSchema)]
pub struct NotAppliedBody {
    /// Which replicas did not apply the version, and why.
    pub error: String,
    /// The version that holds the change (it is stored).
    pub version: u64,
    /// The connected replicas that did not apply it.
    pub replicas: Vec<Lagging>,
}

/// `?wait=<duration>`, which every write takes.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // Only its parameters' description is used; `Wait` reads the query.
pub(super) struct WaitParam {
    /// Answer only once every connected replica has applied the new version,
    /// waiting at most this long (like "2s" or "500ms"; at most 5m).
    wait: Option<String>,
}

/// The errors of every write: its query, path or body refused (400), the
/// token missing or refused (401, 403, when the API has tokens), the
/// body too large (413), the change not stored (500), not applied in time by
/// the replicas (502, 504: `?wait` only). Conflicts are listed per handler.
#[derive(IntoResponses)]
#[allow(dead_code)] // Read by utoipa only.
pub(super) enum WriteErrors {
    /// Refused: a query, path or body that is not what was asked for (malformed
    /// JSON, an unknown field, an array where an object belongs, a body without
    /// `Content-Type: application/json`), or a change that fails validation.
    #[response(status = 400)]
    Invalid(ErrorBody),
    /// With `--api-token`/`--api-token-file`: no `Authorization: Bearer` token
    /// (or a malformed one); the answer has `WWW-Authenticate: Bearer`.
    #[response(status = 401)]
    Unauthorized(ErrorBody),
    /// With `--api-token`/`--api-token-file`: a token that is not accepted.
    #[response(status = 403)]
    Forbidden(ErrorBody),
    /// The request body is larger than 64 MiB.
    #[response(status = 413)]
    TooLarge(ErrorBody),
    /// The change could not be stored (the state file could not be written); nothing changed.
    #[response(status = 500)]
    NotStored(ErrorBody),
    /// With `--store etcd://…`: etcd is unreachable or has lost its quorum;
    /// nothing changed, try again.
    #[response(status = 503)]
    Unavailable(ErrorBody),
    /// `?wait`: a replica refused the new version (it is stored all the same).
    #[response(status = 502)]
    Nacked(NotAppliedBody),
    /// `?wait`: a replica did not apply the new version in time (it is stored all the same).
    #[response(status = 504)]
    TimedOut(NotAppliedBody),
}

/// `GET /api/v1/config`'s answer: [`switchyard_shared::Snapshot`] as it
/// serializes (a test checks the two have the same fields).
#[derive(Debug, ToSchema)]
#[schema(as = Snapshot)]
#[allow(dead_code)] // Read by utoipa only.
pub(super) struct SnapshotSchema {
    /// The version of this config (0 before the first write).
    version: u64,
    /// The store that made it: a fresh store has a new id.
    store_id: String,
    /// The SHA-256 of the config's canonical JSON.
    hash: String,
    clusters: Vec<Cluster>,
    routes: Vec<Route>,
}

#[cfg(test)]
mod tests {
    use serde_json::Value;
    use switchyard_shared::Snapshot;

    use super::document;

    #[test]
    fn the_document_is_openapi_3_1_json() {
        let doc: Value = serde_json::from_str(document()).expect("the document is JSON");
        let version = doc["openapi"].as_str().unwrap_or_default();
        assert!(version.starts_with("3.1."), "openapi {version:?}");
        assert!(doc["paths"]["/api/v1/openapi.json"]["get"].is_object());
    }

    /// `SnapshotSchema` is written by hand (`Snapshot` serializes by hand):
    /// its properties must be the fields a snapshot's JSON has.
    #[test]
    fn the_snapshot_schema_has_the_snapshots_fields() {
        let doc: Value = serde_json::from_str(document()).expect("the document is JSON");
        let schema = &doc["components"]["schemas"]["Snapshot"];
        let mut documented: Vec<&String> = schema["properties"]
            .as_object()
            .expect("Snapshot has properties")
            .keys()
            .collect();
        let json = serde_json::to_value(Snapshot::default()).expect("a snapshot serializes");
        let mut actual: Vec<&String> = json.as_object().expect("an object").keys().collect();
        documented.sort();
        actual.sort();
        assert_eq!(documented, actual);
        let required = schema["required"].as_array().map_or(0, Vec::len);
        assert_eq!(
            required,
            actual.len(),
            "every field of a snapshot is always there"
        );
    }
}
