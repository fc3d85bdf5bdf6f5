//! The routing table: a snapshot compiled into what the request path needs,
//! immutable once built and swapped in whole (see [`crate::config::discovery`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderValue;
use http::header::HOST;
use switchyard_shared::validate::{self, ConfigError};
use switchyard_shared::{
    HealthCheck, MemberState, OutlierDetection, Protocol, RetryPolicy, Snapshot,
};

use crate::admin::metrics;
use crate::balancer::Balancer;
use crate::config::cookie::CookieRewrites;
use crate::config::routing::Router;
use crate::config::rules::{self, CompressRule, HeaderRuleSet};
use crate::upstream::{ClusterShared, Generation, MemberShared, Registry};

/// One version of the config, ready to serve.
#[derive(Debug, Default)]
pub struct Table {
    pub version: u64,
    pub store_id: String,
    pub hash: String,
    pub router: Router,
    pub routes: Vec<RouteEntry>,
    pub clusters: Vec<ClusterEntry>,
}

#[derive(Debug)]
pub struct RouteEntry {
    pub name: String,
    pub cluster: usize,
    pub path_prefix: String,
    /// What the prefix becomes upstream; `None` keeps the path.
    pub rewrite_prefix: Option<String>,
    pub preserve_host: bool,
    pub rewrite_redirects: bool,
    /// Plain-listener requests get a redirect to `https://` instead.
    pub https_redirect: bool,
    /// Response compression; `None` (off) costs the request path one check.
    pub compress: Option<Box<CompressRule>>,
    /// The request's header rules besides `Host`; `None` when there are none.
    pub request_headers: Option<Box<HeaderRuleSet>>,
    /// The `Host` every member is sent, when a request rule sets it.
    pub host_override: Option<HeaderValue>,
    /// The response's header rules; `None` when there are none.
    pub response_headers: Option<Box<HeaderRuleSet>>,
    /// `Set-Cookie` `Path`/`Domain` rewrites; `None` (the usual case) costs
    /// the response path one branch.
    pub rewrite_cookies: Option<Box<CookieRewrites>>,
    /// Where the route's requests are counted ([`metrics::slots`]): the same
    /// slot in every table that has a route of this name.
    pub slot: Arc<metrics::slots::Slot>,
}

#[derive(Debug)]
pub struct ClusterEntry {
    pub name: String,
    pub members: Vec<MemberEntry>,
    pub shared: Arc<ClusterShared>,
    pub response_timeout: Duration,
    pub retry_window: Duration,
    /// No byte either way for this long during a body or a tunnel ends it.
    pub idle_timeout: Duration,
    pub retry: RetryPolicy,
    pub health_check: Option<HealthCheck>,
    /// Passive health: when failing members are ejected ([`crate::health::outlier`]);
    /// `None`: only the retry window after a failed connect.
    pub outlier_detection: Option<OutlierDetection>,
    /// What the members speak: the request path matches on it once per
    /// attempt (HTTP/1.1's exchange, or [`crate::upstream::h2`]).
    pub protocol: Protocol,
    /// The policy and sticky sessions, compiled ([`crate::balancer`]).
    pub balancer: Balancer,
}

#[derive(Debug)]
pub struct MemberEntry {
    pub shared: Arc<MemberShared>,
    pub weight: u32,
    pub state: MemberState,
}

/// Why a snapshot could not be applied (the data plane NACKs it with this).
#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    #[error("{0}")]
    Invalid(#[from] ConfigError),
    #[error("member {member:?} of cluster {cluster:?}: {error}")]
    Member {
        cluster: String,
        member: String,
        error: http::Error,
    },
    #[error("route {0:?} names unknown cluster {1:?}")]
    UnknownCluster(String, String),
    #[error("cluster {cluster:?}: {error}")]
    Balancer { cluster: String, error: String },
}

/// Validates `snapshot` and compiles it into a table, reusing the shared state
/// of the clusters and members that `registry` already has.
pub fn compile(
    snapshot: &mut Snapshot,
    registry: &Registry,
) -> Result<(Table, Generation), CompileError> {
    let addrs = validate::validate_config(&mut snapshot.config)?;
    let mut generation = registry.begin();
    let mut clusters = Vec::with_capacity(snapshot.config.clusters.len());
    let mut cluster_index = HashMap::with_capacity(snapshot.config.clusters.len());
    for (cluster, addrs) in snapshot.config.clusters.iter().zip(addrs) {
        let mut members = Vec::with_capacity(cluster.members.len());
        for (member, addr) in cluster.members.iter().zip(addrs) {
            let shared = generation
                .member(
                    registry,
                    &cluster.name,
                    &member.id,
                    &addr,
                    cluster.protocol,
                    cluster.connect_timeout.0,
                )
                .map_err(|error| CompileError::Member {
                    cluster: cluster.name.clone(),
                    member: member.id.clone(),
                    error,
                })?;
            members.push(MemberEntry {
                shared,
                weight: member.weight,
                state: member.state,
            });
        }
        let balancer = Balancer::compile(cluster).map_err(|error| CompileError::Balancer {
            cluster: cluster.name.clone(),
            error,
        })?;
        cluster_index.insert(cluster.name.as_str(), clusters.len());
        clusters.push(ClusterEntry {
            name: cluster.name.clone(),
            shared: generation.cluster(registry, &cluster.name),
            members,
            response_timeout: cluster.response_timeout.0,
            retry_window: cluster.retry_window.0,
            idle_timeout: cluster.idle_timeout.0,
            retry: cluster.retry.clone(),
            health_check: cluster.health_check.clone(),
            outlier_detection: cluster.outlier_detection.clone(),
            protocol: cluster.protocol,
            balancer,
        });
    }
    let mut router = Router::default();
    let mut routes = Vec::with_capacity(snapshot.config.routes.len());
    for route in &snapshot.config.routes {
        let Some(&cluster) = cluster_index.get(route.cluster.as_str()) else {
            return Err(CompileError::UnknownCluster(
                route.name.clone(),
                route.cluster.clone(),
            ));
        };
        router.insert(route.host.as_deref(), &route.path_prefix, routes.len());
        let in_route = |e: ConfigError| ConfigError {
            message: format!("route {:?}: {}", route.name, e.message),
            ..e
        };
        let rule_set = |rules: Option<&switchyard_shared::HeaderRules>, skip| {
            rules
                .map(|rules| HeaderRuleSet::compile(rules, skip))
                .transpose()
                .map(|set| set.filter(|s| !s.is_empty()).map(Box::new))
                .map_err(in_route)
        };
        let host_override = route
            .request_headers
            .as_ref()
            .map(rules::host_override)
            .transpose()
            .map_err(in_route)?
            .flatten();
        routes.push(RouteEntry {
            compress: route
                .compress
                .as_ref()
                .map(|c| Box::new(CompressRule::compile(c))),
            request_headers: rule_set(route.request_headers.as_ref(), Some(&HOST))?,
            host_override,
            response_headers: rule_set(route.response_headers.as_ref(), None)?,
            slot: metrics::slots::Slot::route(&route.name),
            name: route.name.clone(),
            cluster,
            path_prefix: route.path_prefix.clone(),
            rewrite_prefix: route.rewrite_prefix.clone(),
            preserve_host: route.preserve_host,
            rewrite_redirects: route.rewrite_redirects,
            https_redirect: route.https_redirect,
            rewrite_cookies: CookieRewrites::compile(
                route.rewrite_cookie_path.as_ref(),
                route.rewrite_cookie_domain.as_ref(),
            ),
        });
    }
    let table = Table {
        version: snapshot.version,
        store_id: snapshot.store_id.clone(),
        hash: snapshot.hash.clone(),
        router,
        routes,
        clusters,
    };
    Ok((table, generation))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use switchyard_shared::{Cluster, Config, Member, Route};

    /// A cluster of members on unused ports with the given weights and states.
    pub(crate) fn cluster_of(members: &[(u32, MemberState)]) -> ClusterEntry {
        compiled(Cluster::new("c"), members)
    }

    /// `cluster` (its policy fields as given) with members on unused ports
    /// of the given weights and states, compiled.
    pub(crate) fn compiled(mut cluster: Cluster, members: &[(u32, MemberState)]) -> ClusterEntry {
        for (i, (weight, state)) in members.iter().enumerate() {
            let mut member = Member::new(format!("http://127.0.0.1:{}", 10 + i));
            member.weight = *weight;
            member.state = *state;
            cluster.members.push(member);
        }
        let mut snapshot = Snapshot::new(
            1,
            "s",
            Config {
                clusters: vec![cluster],
                routes: vec![],
            },
        );
        let (mut table, _) = compile(&mut snapshot, &Registry::default()).unwrap();
        table.clusters.remove(0)
    }

    fn config(members: &[&str]) -> Snapshot {
        let mut cluster = Cluster::new("web");
        cluster.members = members.iter().map(|url| Member::new(*url)).collect();
        let route = Route::new("root", "/", "web");
        Snapshot::new(
            1,
            "s",
            Config {
                clusters: vec![cluster],
                routes: vec![route],
            },
        )
    }

    #[test]
    fn member_state_survives_a_swap() {
        let mut registry = Registry::default();
        let (first, generation) = compile(
            &mut config(&["http://127.0.0.1:1", "http://127.0.0.1:2"]),
            &registry,
        )
        .unwrap();
        registry.commit(generation);
        first.clusters[0].members[0]
            .shared
            .mark_failed(Duration::from_secs(60), "refused".into());
        let (second, generation) = compile(
            &mut config(&["http://127.0.0.1:1", "http://127.0.0.1:3"]),
            &registry,
        )
        .unwrap();
        registry.commit(generation);
        assert!(Arc::ptr_eq(
            &first.clusters[0].members[0].shared,
            &second.clusters[0].members[0].shared
        ));
        assert!(second.clusters[0].members[0].shared.in_error());
        assert!(!second.clusters[0].members[1].shared.in_error());
        assert_eq!(registry.members().count(), 2);
    }

    #[test]
    fn member_state_survives_a_new_connect_timeout_set_only_at_commit() {
        let mut registry = Registry::default();
        let (first, generation) = compile(&mut config(&["http://127.0.0.1:1"]), &registry).unwrap();
        registry.commit(generation);
        let member = first.clusters[0].members[0].shared.clone();
        member.mark_failed(Duration::from_secs(60), "refused".into());
        let mut slower = config(&["http://127.0.0.1:1"]);
        slower.config.clusters[0].connect_timeout = switchyard_shared::Dur(Duration::from_secs(9));
        let (second, generation) = compile(&mut slower, &registry).unwrap();
        assert_ne!(
            member.connect_timeout(),
            Duration::from_secs(9),
            "not before the commit"
        );
        registry.commit(generation);
        assert!(Arc::ptr_eq(&member, &second.clusters[0].members[0].shared));
        assert!(member.in_error(), "the error window is kept");
        assert_eq!(member.connect_timeout(), Duration::from_secs(9));
    }

    #[test]
    fn a_member_whose_cluster_changes_protocol_gets_new_state() {
        let mut registry = Registry::default();
        let (first, generation) = compile(&mut config(&["http://127.0.0.1:1"]), &registry).unwrap();
        registry.commit(generation);
        assert_eq!(first.clusters[0].protocol, Protocol::Http1);
        let mut h2c = config(&["http://127.0.0.1:1"]);
        h2c.config.clusters[0].protocol = Protocol::H2c;
        let (second, generation) = compile(&mut h2c, &registry).unwrap();
        registry.commit(generation);
        assert_eq!(second.clusters[0].protocol, Protocol::H2c);
        assert_eq!(second.clusters[0].members[0].shared.protocol, Protocol::H2c);
        assert!(
            !Arc::ptr_eq(
                &first.clusters[0].members[0].shared,
                &second.clusters[0].members[0].shared
            ),
            "HTTP/1.1 pools are not HTTP/2 ones"
        );
    }

    #[test]
    fn host_header_omits_default_port() {
        let (table, _) = compile(
            &mut config(&["http://backend", "http://127.0.0.1:8080"]),
            &Registry::default(),
        )
        .unwrap();
        assert_eq!(table.clusters[0].members[0].shared.host_header, "backend");
        assert_eq!(
            table.clusters[0].members[1].shared.host_header,
            "127.0.0.1:8080"
        );
    }

    #[test]
    fn unused_route_features_compile_to_nothing() {
        let (table, _) =
            compile(&mut config(&["http://127.0.0.1:1"]), &Registry::default()).unwrap();
        let route = &table.routes[0];
        assert!(route.compress.is_none());
        assert!(route.request_headers.is_none());
        assert!(route.host_override.is_none());
        assert!(route.response_headers.is_none());

        let mut snapshot = config(&["http://127.0.0.1:1"]);
        let rules: switchyard_shared::HeaderRules =
            serde_json::from_str(r#"{"set": {"Host": "app.internal"}}"#).unwrap();
        snapshot.config.routes[0].request_headers = Some(rules.clone());
        snapshot.config.routes[0].response_headers = Some(rules);
        snapshot.config.routes[0].compress = Some(switchyard_shared::Compress::default());
        let (table, _) = compile(&mut snapshot, &Registry::default()).unwrap();
        let route = &table.routes[0];
        assert!(
            route.request_headers.is_none(),
            "a rule that only sets Host is the per-member Host"
        );
        assert_eq!(route.host_override.as_ref().unwrap(), "app.internal");
        assert!(
            route.response_headers.is_some(),
            "Host is an ordinary response header"
        );
        assert!(route.compress.is_some());
    }

    #[test]
    fn invalid_snapshots_are_refused() {
        let mut snapshot = config(&["http://127.0.0.1:1"]);
        snapshot.config.routes[0].cluster = "missing".into();
        assert!(compile(&mut snapshot, &Registry::default()).is_err());
        let mut snapshot = config(&["http://127.0.0.1:1"]);
        snapshot.config.clusters[0].members[0].weight = 0;
        assert!(compile(&mut snapshot, &Registry::default()).is_err());
    }
}
