//! JSON bodies of the REST API, in the shapes DESIGN.md documents, for the
//! common cases; tests write unusual bodies with `json!` themselves.

use serde_json::{Value, json};

use crate::backend::Backend;

/// `PUT /api/v1/clusters/{name}`: round robin over `members` with their weights.
pub fn cluster(members: &[(&Backend, u32)]) -> Value {
    let members: Vec<Value> = members
        .iter()
        .map(|(backend, weight)| member(backend, *weight))
        .collect();
    json!({ "policy": "round_robin", "members": members })
}

/// One member: `{"url": "http://127.0.0.1:PORT", "weight": weight}`.
pub fn member(backend: &Backend, weight: u32) -> Value {
    json!({ "url": backend.url(), "weight": weight })
}

/// `PUT /api/v1/routes/{name}`: any host, `path_prefix` to `cluster`, the
/// client's `Host` preserved, redirects rewritten.
pub fn route(path_prefix: &str, cluster: &str) -> Value {
    json!({
        "path_prefix": path_prefix,
        "host": null,
        "cluster": cluster,
        "rewrite_prefix": null,
        "preserve_host": true,
        "rewrite_redirects": true,
    })
}
