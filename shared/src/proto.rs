//! The generated gRPC code and the conversions between its messages and the
//! config model. Protobuf types stop here: the rest of the code sees only the
//! model, and a message that does not convert names the bad field.

use std::time::Duration;

use crate::model::{
    Algorithm, Cluster, Compress, Config, CookieRewrite, Dur, HashOn, HeaderRules, HealthCheck,
    Member, MemberState, OutlierDetection, Policy, Protocol, RetryOn, RetryPolicy, Route, Sticky,
};
use crate::snapshot::Snapshot;
use crate::text::quoted;

/// The generated code of `proto/switchyard/v1/discovery.proto`.
pub mod v1 {
    tonic::include_proto!("switchyard.v1");
}

/// A protobuf message that does not make a valid model.
#[derive(Debug, thiserror::Error)]
#[error("invalid {field}: {reason}")]
pub struct ConvertError {
    pub field: String,
    pub reason: String,
}

fn ms(d: Dur) -> u64 {
    d.as_millis()
}

fn dur(field: &str, ms: u64) -> Result<Dur, ConvertError> {
    if ms == 0 {
        return Err(ConvertError {
            field: field.to_owned(),
            reason: "must be greater than 0".to_owned(),
        });
    }
    Ok(Dur(Duration::from_millis(ms)))
}

impl From<&Snapshot> for v1::Snapshot {
    fn from(snapshot: &Snapshot) -> Self {
        v1::Snapshot {
            version: snapshot.version,
            store_id: snapshot.store_id.clone(),
            hash: snapshot.hash.clone(),
            clusters: snapshot
                .config
                .clusters
                .iter()
                .map(v1::Cluster::from)
                .collect(),
            routes: snapshot.config.routes.iter().map(v1::Route::from).collect(),
        }
    }
}

impl From<&Cluster> for v1::Cluster {
    fn from(c: &Cluster) -> Self {
        v1::Cluster {
            name: c.name.clone(),
            policy: c.policy.as_str().to_owned(),
            members: c.members.iter().map(v1::Member::from).collect(),
            connect_timeout_ms: ms(c.connect_timeout),
            response_timeout_ms: ms(c.response_timeout),
            retry_window_ms: ms(c.retry_window),
            health_check: c.health_check.as_ref().map(|h| v1::HealthCheck {
                path: h.path.clone(),
                interval_ms: ms(h.interval),
                timeout_ms: ms(h.timeout),
                healthy_threshold: h.healthy_threshold,
                unhealthy_threshold: h.unhealthy_threshold,
            }),
            idle_timeout_ms: ms(c.idle_timeout),
            retry: Some(v1::RetryPolicy {
                max_retries: c.retry.max_retries,
                retry_on: c
                    .retry
                    .retry_on
                    .iter()
                    .map(|on| on.as_str().to_owned())
                    .collect(),
                per_try_timeout_ms: c.retry.per_try_timeout.map(ms),
                budget_percent: c.retry.budget_percent,
                budget_min_per_second: c.retry.budget_min_per_second,
            }),
            outlier_detection: c.outlier_detection.as_ref().map(|o| v1::OutlierDetection {
                consecutive_failures: o.consecutive_failures,
                base_ejection_ms: ms(o.base_ejection),
                max_ejection_ms: ms(o.max_ejection),
                max_ejected_percent: o.max_ejected_percent,
            }),
            protocol: c.protocol.as_str().to_owned(),
            hash_on: c.hash_on.as_ref().map(|h| v1::HashOn {
                key: Some(match h {
                    HashOn::Header(name) => v1::hash_on::Key::Header(name.clone()),
                    HashOn::Cookie(name) => v1::hash_on::Key::Cookie(name.clone()),
                    HashOn::ClientIp => v1::hash_on::Key::ClientIp(true),
                }),
            }),
            sticky: c.sticky.as_ref().map(|s| v1::Sticky {
                cookie: s.cookie.clone(),
                url_parameter: s.url_parameter.clone(),
                set_cookie: s.set_cookie,
            }),
        }
    }
}

impl From<&Member> for v1::Member {
    fn from(m: &Member) -> Self {
        v1::Member {
            id: m.id.clone(),
            url: m.url.clone(),
            weight: m.weight,
            state: m.state.as_str().to_owned(),
            route: m.route.clone(),
        }
    }
}

impl From<&Route> for v1::Route {
    fn from(r: &Route) -> Self {
        v1::Route {
            name: r.name.clone(),
            host: r.host.clone(),
            path_prefix: r.path_prefix.clone(),
            cluster: r.cluster.clone(),
            rewrite_prefix: r.rewrite_prefix.clone(),
            preserve_host: r.preserve_host,
            rewrite_redirects: r.rewrite_redirects,
            https_redirect: r.https_redirect,
            compress: r.compress.as_ref().map(|c| v1::Compress {
                algorithms: c.algorithms.iter().map(|a| a.as_str().to_owned()).collect(),
                types: c.types.clone(),
                min_size: c.min_size,
            }),
            request_headers: r.request_headers.as_ref().map(v1::HeaderRules::from),
            response_headers: r.response_headers.as_ref().map(v1::HeaderRules::from),
            rewrite_cookie_path: r.rewrite_cookie_path.as_ref().map(v1::CookieRewrite::from),
            rewrite_cookie_domain: r
                .rewrite_cookie_domain
                .as_ref()
                .map(v1::CookieRewrite::from),
        }
    }
}

impl From<&HeaderRules> for v1::HeaderRules {
    fn from(rules: &HeaderRules) -> Self {
        v1::HeaderRules {
            set: rules.set.clone().into_iter().collect(),
            append: rules.append.clone().into_iter().collect(),
            remove: rules.remove.clone(),
        }
    }
}

impl From<&CookieRewrite> for v1::CookieRewrite {
    fn from(r: &CookieRewrite) -> Self {
        v1::CookieRewrite {
            from: r.from.clone(),
            to: r.to.clone(),
        }
    }
}

impl From<v1::HeaderRules> for HeaderRules {
    fn from(rules: v1::HeaderRules) -> Self {
        HeaderRules {
            set: rules.set.into_iter().collect(),
            append: rules.append.into_iter().collect(),
            remove: rules.remove,
        }
    }
}

impl From<v1::CookieRewrite> for CookieRewrite {
    fn from(r: v1::CookieRewrite) -> Self {
        CookieRewrite {
            from: r.from,
            to: r.to,
        }
    }
}

impl TryFrom<v1::Snapshot> for Snapshot {
    type Error = ConvertError;

    fn try_from(s: v1::Snapshot) -> Result<Self, Self::Error> {
        let clusters = s
            .clusters
            .into_iter()
            .map(Cluster::try_from)
            .collect::<Result<_, _>>()?;
        let routes = s
            .routes
            .into_iter()
            .map(Route::try_from)
            .collect::<Result<_, _>>()?;
        Ok(Snapshot {
            version: s.version,
            store_id: s.store_id,
            hash: s.hash,
            config: Config { clusters, routes },
        })
    }
}

impl TryFrom<v1::Cluster> for Cluster {
    type Error = ConvertError;

    fn try_from(c: v1::Cluster) -> Result<Self, Self::Error> {
        let field = |name: &str| format!("cluster {} {name}", quoted(&c.name));
        let policy = Policy::parse(&c.policy).ok_or_else(|| ConvertError {
            field: field("policy"),
            reason: format!("unknown policy {}", quoted(&c.policy)),
        })?;
        // Empty: a control plane from before the field, whose members spoke HTTP/1.1.
        let protocol = match c.protocol.as_str() {
            "" => Protocol::Http1,
            text => Protocol::parse(text).ok_or_else(|| ConvertError {
                field: field("protocol"),
                reason: format!("unknown protocol {}", quoted(text)),
            })?,
        };
        let health_check = match c.health_check {
            Some(h) => Some(HealthCheck {
                path: h.path,
                interval: dur(&field("health_check.interval"), h.interval_ms)?,
                timeout: dur(&field("health_check.timeout"), h.timeout_ms)?,
                healthy_threshold: h.healthy_threshold,
                unhealthy_threshold: h.unhealthy_threshold,
            }),
            None => None,
        };
        let retry = match c.retry {
            Some(r) => RetryPolicy {
                max_retries: r.max_retries,
                retry_on: r
                    .retry_on
                    .iter()
                    .map(|on| {
                        RetryOn::parse(on).ok_or_else(|| ConvertError {
                            field: field("retry.retry_on"),
                            reason: format!("unknown condition {}", quoted(on)),
                        })
                    })
                    .collect::<Result<_, _>>()?,
                per_try_timeout: r
                    .per_try_timeout_ms
                    .map(|t| dur(&field("retry.per_try_timeout"), t))
                    .transpose()?,
                budget_percent: r.budget_percent,
                budget_min_per_second: r.budget_min_per_second,
            },
            None => RetryPolicy::default(),
        };
        let outlier_detection = match c.outlier_detection {
            Some(o) => Some(OutlierDetection {
                consecutive_failures: o.consecutive_failures,
                base_ejection: dur(
                    &field("outlier_detection.base_ejection"),
                    o.base_ejection_ms,
                )?,
                max_ejection: dur(&field("outlier_detection.max_ejection"), o.max_ejection_ms)?,
                max_ejected_percent: o.max_ejected_percent,
            }),
            None => None,
        };
        let hash_on = match c.hash_on.map(|h| h.key) {
            None => None,
            Some(Some(v1::hash_on::Key::Header(name))) => Some(HashOn::Header(name)),
            Some(Some(v1::hash_on::Key::Cookie(name))) => Some(HashOn::Cookie(name)),
            Some(Some(v1::hash_on::Key::ClientIp(true))) => Some(HashOn::ClientIp),
            Some(Some(v1::hash_on::Key::ClientIp(false)) | None) => {
                return Err(ConvertError {
                    field: field("hash_on"),
                    reason: "names no key (header, cookie or client_ip)".to_owned(),
                });
            }
        };
        let sticky = c.sticky.map(|s| Sticky {
            cookie: s.cookie,
            url_parameter: s.url_parameter,
            set_cookie: s.set_cookie,
        });
        let mut members = Vec::with_capacity(c.members.len());
        for m in c.members {
            let state = MemberState::parse(&m.state).ok_or_else(|| ConvertError {
                field: field(&format!("member {} state", quoted(&m.id))),
                reason: format!("unknown state {}", quoted(&m.state)),
            })?;
            members.push(Member {
                id: m.id,
                url: m.url,
                weight: m.weight,
                state,
                route: m.route,
            });
        }
        Ok(Cluster {
            policy,
            members,
            connect_timeout: dur(&field("connect_timeout"), c.connect_timeout_ms)?,
            response_timeout: dur(&field("response_timeout"), c.response_timeout_ms)?,
            retry_window: Dur::from_millis(c.retry_window_ms),
            idle_timeout: dur(&field("idle_timeout"), c.idle_timeout_ms)?,
            health_check,
            retry,
            outlier_detection,
            protocol,
            hash_on,
            sticky,
            name: c.name,
        })
    }
}

impl TryFrom<v1::Route> for Route {
    type Error = ConvertError;

    fn try_from(r: v1::Route) -> Result<Self, Self::Error> {
        let compress = match r.compress {
            Some(c) => Some(Compress {
                algorithms: c
                    .algorithms
                    .iter()
                    .map(|a| {
                        Algorithm::parse(a).ok_or_else(|| ConvertError {
                            field: format!("route {} compress.algorithms", quoted(&r.name)),
                            reason: format!("unknown algorithm {}", quoted(a)),
                        })
                    })
                    .collect::<Result<_, _>>()?,
                types: c.types,
                min_size: c.min_size,
            }),
            None => None,
        };
        Ok(Route {
            name: r.name,
            host: r.host,
            path_prefix: r.path_prefix,
            cluster: r.cluster,
            rewrite_prefix: r.rewrite_prefix,
            preserve_host: r.preserve_host,
            rewrite_redirects: r.rewrite_redirects,
            https_redirect: r.https_redirect,
            compress,
            request_headers: r.request_headers.map(HeaderRules::from),
            response_headers: r.response_headers.map(HeaderRules::from),
            rewrite_cookie_path: r.rewrite_cookie_path.map(CookieRewrite::from),
            rewrite_cookie_domain: r.rewrite_cookie_domain.map(CookieRewrite::from),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_round_trips_through_protobuf() {
        let mut cluster = Cluster::new("mycluster");
        cluster.members.push(Member {
            id: "a".into(),
            url: "http://127.0.0.1:1".into(),
            weight: 5,
            state: MemberState::Standby,
            route: Some("r1".into()),
        });
        let mut hashed = Cluster::new("hashed");
        hashed.policy = Policy::ConsistentHash;
        hashed.hash_on = Some(HashOn::Cookie("user".into()));
        hashed.sticky = Some(Sticky {
            cookie: "JSESSIONID".into(),
            url_parameter: Some("jsessionid".into()),
            set_cookie: true,
        });
        let mut by_ip = Cluster::new("by_ip");
        by_ip.policy = Policy::ConsistentHash;
        by_ip.hash_on = Some(HashOn::ClientIp);
        let mut by_header = Cluster::new("by_header");
        by_header.policy = Policy::ConsistentHash;
        by_header.hash_on = Some(HashOn::Header("x-user".into()));
        cluster.health_check = Some(HealthCheck::default());
        cluster.retry.retry_on.push(RetryOn::Http503);
        cluster.retry.per_try_timeout = Some(Dur::from_millis(250));
        cluster.outlier_detection = Some(OutlierDetection::default());
        cluster.protocol = Protocol::H2c;
        let mut route = Route::new("web", "/app/", "mycluster");
        route.rewrite_prefix = Some("/".into());
        route.host = Some("example.com".into());
        route.compress = Some(Compress {
            algorithms: vec![Algorithm::Gzip, Algorithm::Br],
            types: vec!["text/*".into()],
            min_size: 0,
        });
        let mut rules = HeaderRules::default();
        rules.set.insert("Host".into(), "example.org".into());
        rules.append.insert("X-Via".into(), "switchyard".into());
        rules.remove.push("X-Secret".into());
        route.request_headers = Some(rules.clone());
        route.response_headers = Some(rules);
        route.rewrite_cookie_path = Some(CookieRewrite::new("/app/", "/"));
        route.rewrite_cookie_domain = Some(CookieRewrite::new("backend", "example.com"));
        let snapshot = Snapshot::new(
            7,
            "store",
            Config {
                clusters: vec![cluster, hashed, by_ip, by_header],
                routes: vec![route],
            },
        );
        let back = Snapshot::try_from(v1::Snapshot::from(&snapshot)).unwrap();
        assert_eq!(back, snapshot);
    }

    #[test]
    fn unknown_algorithm_names_the_field() {
        let mut route = Route::new("web", "/", "c");
        route.compress = Some(Compress::default());
        let mut proto = v1::Route::from(&route);
        if let Some(c) = proto.compress.as_mut() {
            c.algorithms.push("lzma".into());
        }
        let err = Route::try_from(proto).unwrap_err();
        assert!(err.to_string().contains("compress.algorithms"), "{err}");
        assert!(err.to_string().contains("\"lzma\""), "{err}");
    }

    #[test]
    fn a_protocol_left_empty_is_http1_and_an_unknown_one_is_named() {
        let mut proto = v1::Cluster::from(&Cluster::new("c"));
        assert_eq!(proto.protocol, "http1");
        proto.protocol = String::new();
        assert_eq!(
            Cluster::try_from(proto.clone()).unwrap().protocol,
            Protocol::Http1
        );
        proto.protocol = "spdy".into();
        let err = Cluster::try_from(proto).unwrap_err();
        assert!(err.to_string().contains("protocol"), "{err}");
        assert!(err.to_string().contains("\"spdy\""), "{err}");
    }

    #[test]
    fn unknown_member_state_names_the_field() {
        let mut proto = v1::Cluster::from(&Cluster::new("c"));
        proto.members.push(v1::Member {
            id: "m".into(),
            url: "http://a:1".into(),
            weight: 1,
            state: "sleepy".into(),
            route: None,
        });
        let err = Cluster::try_from(proto).unwrap_err();
        assert!(err.to_string().contains("member \"m\" state"), "{err}");
    }
}
