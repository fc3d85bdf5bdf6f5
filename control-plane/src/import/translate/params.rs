//! The `key=value` parameters of `BalancerMember`, `ProxyPass` and `ProxySet`:
//! worker parameters (`loadfactor`, `status`, `retry`, `timeout`, …, and
//! mod_proxy_hcheck's `hc*`) and balancer parameters (`lbmethod`,
//! `stickysession`, `timeout`, …). A key Apache does not know is refused, as
//! Apache refuses it; a known one without an equivalent is warned about.

use std::time::Duration;

use switchyard_shared::text::quoted;
use switchyard_shared::validate::{MAX_RETRIES, normalize_cluster};
use switchyard_shared::{Cluster, Dur, HealthCheck, MemberState};

use super::{Draft, Translator};
use crate::import::parser::Node;
use crate::import::{ImportError, Location};

/// Worker parameters Apache knows that have no equivalent here.
const WORKER_UNTRANSLATED: &[&str] = &[
    "min",
    "max",
    "smax",
    "acquire",
    "disablereuse",
    "enablereuse",
    "flushpackets",
    "flushwait",
    "iobuffersize",
    "responsefieldsize",
    "keepalive",
    "lbset",
    "ping",
    "receivebuffersize",
    "redirect",
    "secret",
    "sendbuffersize",
    "ttl",
    "upgrade",
    "mapping",
    "addressttl",
    "hcexpr",
    "hctemplate",
];

/// Balancer parameters Apache knows that have no equivalent here.
const BALANCER_UNTRANSLATED: &[&str] = &[
    "stickysessionsep",
    "scolonpathdelim",
    "nofailover",
    "failonstatus",
    "failontimeout",
    "nonce",
    "growth",
    "forcerecovery",
];

/// mod_proxy_hcheck's settings of a cluster, as its members gave them.
#[derive(Debug, Default)]
pub(in crate::import) struct HealthDraft {
    pub method: Option<(String, Location)>,
    pub uri: Option<String>,
    pub interval: Option<Dur>,
    pub passes: Option<u32>,
    pub fails: Option<u32>,
}

/// `key=value` split; the key lower-cased.
pub(super) fn key_value<'a>(node: &Node, param: &'a str) -> Result<(String, &'a str), ImportError> {
    match param.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_ascii_lowercase(), value)),
        _ => Err(ImportError::new(
            &node.at,
            format!("{} parameter {} is not key=value", node.name, quoted(param)),
        )),
    }
}

/// Apache's `ap_timeout_parameter_parse`: a whole number with an optional
/// unit (`ms`, `s`, `mi`, `h`), seconds when none.
pub fn parse_apache_duration(text: &str) -> Option<Duration> {
    let digits = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(digits);
    let n: u64 = number.parse().ok()?;
    let ms = match unit.to_ascii_lowercase().as_str() {
        "" | "s" => n.checked_mul(1000)?,
        "ms" => n,
        "mi" => n.checked_mul(60_000)?,
        "h" => n.checked_mul(3_600_000)?,
        _ => return None,
    };
    Some(Duration::from_millis(ms))
}

pub(super) fn duration(node: &Node, what: &str, value: &str) -> Result<Dur, ImportError> {
    parse_apache_duration(value).map(Dur).ok_or_else(|| {
        ImportError::new(
            &node.at,
            format!(
                "{what} must be a whole number of seconds (or with a unit: ms, s, mi, h), not {}",
                quoted(value)
            ),
        )
    })
}

fn positive(node: &Node, what: &str, value: &str) -> Result<Dur, ImportError> {
    let d = duration(node, what, value)?;
    if d.0.is_zero() {
        return Err(ImportError::new(
            &node.at,
            format!("{what} must be greater than 0"),
        ));
    }
    Ok(d)
}

fn count(node: &Node, what: &str, value: &str) -> Result<u32, ImportError> {
    match value.parse::<u32>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(ImportError::new(
            &node.at,
            format!(
                "{what} must be a whole number of at least 1, not {}",
                quoted(value)
            ),
        )),
    }
}

/// Whether a cluster-wide value given by one member may be set: the first
/// value wins; a different one later is warned about.
fn first_wins(
    t: &mut Translator,
    cluster: usize,
    key: &'static str,
    value: &str,
    node: &Node,
) -> bool {
    let draft = &mut t.clusters[cluster];
    match draft.set_by.get(key) {
        Some((first, _)) if first == value => false,
        Some((first, at)) => {
            let message = format!(
                "{key}={value} not translated: cluster {} already has {key}={first} (from {at}); a cluster has one value for all its members",
                quoted(&draft.cluster.name)
            );
            t.warn(&node.at, message);
            false
        }
        None => {
            draft
                .set_by
                .insert(key, (value.to_owned(), node.at.clone()));
            true
        }
    }
}

/// One worker parameter of member `member` of `cluster`.
pub(super) fn worker_param(
    t: &mut Translator,
    cluster: usize,
    member: usize,
    node: &Node,
    key: &str,
    value: &str,
) -> Result<(), ImportError> {
    match key {
        "loadfactor" => {
            let weight = loadfactor(node, value)?;
            if let Some(m) = t.clusters[cluster].cluster.members.get_mut(member) {
                m.weight = weight;
            }
        }
        "status" => {
            let state = status(t, node, value)?;
            if let Some(m) = t.clusters[cluster].cluster.members.get_mut(member) {
                m.state = state;
            }
        }
        "route" => {
            if let Some(m) = t.clusters[cluster].cluster.members.get_mut(member) {
                m.route = Some(value.to_owned());
            }
        }
        "retry" => {
            let d = duration(node, "retry", value)?;
            if first_wins(t, cluster, "retry", value, node) {
                t.clusters[cluster].cluster.retry_window = d;
            }
        }
        "timeout" => {
            let d = positive(node, "timeout", value)?;
            if first_wins(t, cluster, "timeout", value, node) {
                let draft = &mut t.clusters[cluster];
                draft.cluster.response_timeout = d;
                draft.timeout_set = true;
            }
        }
        "connectiontimeout" => {
            let d = positive(node, "connectiontimeout", value)?;
            if first_wins(t, cluster, "connectiontimeout", value, node) {
                t.clusters[cluster].cluster.connect_timeout = d;
            }
        }
        "hcmethod" => {
            let method = value.to_ascii_uppercase();
            let known = [
                "NONE",
                "TCP",
                "OPTIONS",
                "HEAD",
                "GET",
                "CPING",
                "PROVIDER",
                "OPTIONS11",
                "HEAD11",
                "GET11",
            ];
            if !known.contains(&method.as_str()) {
                return Err(ImportError::new(
                    &node.at,
                    format!("unknown hcmethod {}", quoted(value)),
                ));
            }
            if first_wins(t, cluster, "hcmethod", &method, node) {
                t.clusters[cluster].health.method = Some((method, node.at.clone()));
            }
        }
        "hcuri" => {
            if first_wins(t, cluster, "hcuri", value, node) {
                let path = if value.starts_with('/') {
                    value.to_owned()
                } else {
                    format!("/{value}")
                };
                t.clusters[cluster].health.uri = Some(path);
            }
        }
        "hcinterval" => {
            let d = positive(node, "hcinterval", value)?;
            if first_wins(t, cluster, "hcinterval", value, node) {
                t.clusters[cluster].health.interval = Some(d);
            }
        }
        "hcpasses" => {
            let n = count(node, "hcpasses", value)?;
            if first_wins(t, cluster, "hcpasses", value, node) {
                t.clusters[cluster].health.passes = Some(n);
            }
        }
        "hcfails" => {
            let n = count(node, "hcfails", value)?;
            if first_wins(t, cluster, "hcfails", value, node) {
                t.clusters[cluster].health.fails = Some(n);
            }
        }
        _ if WORKER_UNTRANSLATED.contains(&key) => t.warn(
            &node.at,
            format!(
                "{} parameter {key}={value} not translated: Switchyard has no equivalent",
                node.name
            ),
        ),
        _ => {
            return Err(ImportError::new(
                &node.at,
                format!("{}: unknown Worker parameter {}", node.name, quoted(key)),
            ));
        }
    }
    Ok(())
}

/// `loadfactor`: 1 to 100 (Apache 2.4 also takes decimals, which are rounded).
fn loadfactor(node: &Node, value: &str) -> Result<u32, ImportError> {
    let bad = || {
        ImportError::new(
            &node.at,
            format!(
                "loadfactor must be a number from 1 to 100, not {}",
                quoted(value)
            ),
        )
    };
    let number: f64 = value.parse().map_err(|_| bad())?;
    if !(1.0..=100.0).contains(&number) {
        return Err(bad());
    }
    // In range 1..=100, so the cast is exact.
    Ok(number.round() as u32)
}

/// `status=+H`, `status=D`, `status=-D+H`…: the state the flags amount to.
fn status(t: &mut Translator, node: &Node, value: &str) -> Result<MemberState, ImportError> {
    let mut state = MemberState::Active;
    let mut set = true;
    for c in value.chars() {
        match c.to_ascii_uppercase() {
            '+' => set = true,
            '-' => set = false,
            _ if !set => {}
            'H' | 'R' => {
                if state == MemberState::Active {
                    state = MemberState::Standby;
                }
            }
            'N' => {
                if state != MemberState::Disabled {
                    state = MemberState::Draining;
                }
            }
            'D' | 'S' => state = MemberState::Disabled,
            'E' => {
                t.warn(
                    &node.at,
                    "status +E (in error) imported as disabled: Switchyard finds errors itself (health checks, retry window)",
                );
                state = MemberState::Disabled;
            }
            'I' | 'C' => t.warn(
                &node.at,
                format!("status flag {c} not translated: Switchyard has no equivalent"),
            ),
            _ => {
                return Err(ImportError::new(
                    &node.at,
                    format!(
                        "unknown status parameter option {} in {}",
                        quoted(&c.to_string()),
                        quoted(value)
                    ),
                ));
            }
        }
    }
    Ok(state)
}

/// One balancer parameter of `cluster`.
pub(super) fn balancer_param(
    t: &mut Translator,
    cluster: usize,
    node: &Node,
    key: &str,
    value: &str,
) -> Result<(), ImportError> {
    match key {
        "lbmethod" => {
            let method = value.to_ascii_lowercase();
            if !matches!(
                method.as_str(),
                "byrequests" | "bybusyness" | "bytraffic" | "heartbeat"
            ) {
                return Err(ImportError::new(
                    &node.at,
                    format!(
                        "unknown lbmethod {} (byrequests, bybusyness, bytraffic or heartbeat)",
                        quoted(value)
                    ),
                ));
            }
            t.clusters[cluster].lbmethod = Some((method, node.at.clone()));
        }
        "stickysession" => {
            t.clusters[cluster].sticky = Some((value.to_owned(), node.at.clone()));
        }
        "timeout" => {
            let d = positive(node, "timeout", value)?;
            if first_wins(t, cluster, "timeout", value, node) {
                let draft = &mut t.clusters[cluster];
                draft.cluster.response_timeout = d;
                draft.timeout_set = true;
            }
        }
        "maxattempts" => {
            let n: u32 = value.parse().map_err(|_| {
                ImportError::new(
                    &node.at,
                    format!("maxattempts must be a whole number, not {}", quoted(value)),
                )
            })?;
            if n > MAX_RETRIES {
                t.warn(
                    &node.at,
                    format!("maxattempts={n} imported as max_retries {MAX_RETRIES}, the most a route may make"),
                );
            }
            t.clusters[cluster].cluster.retry.max_retries = n.min(MAX_RETRIES);
        }
        _ if BALANCER_UNTRANSLATED.contains(&key) => t.warn(
            &node.at,
            format!(
                "{} parameter {key}={value} not translated: Switchyard has no equivalent",
                node.name
            ),
        ),
        _ => {
            return Err(ImportError::new(
                &node.at,
                format!("{}: unknown Balancer parameter {}", node.name, quoted(key)),
            ));
        }
    }
    Ok(())
}

/// The cluster a draft amounts to: its health check and balancing settings.
pub(super) fn finish_cluster(t: &mut Translator, draft: Draft) -> Result<Cluster, ImportError> {
    let mut cluster = draft.cluster;
    let health = draft.health;
    match &health.method {
        Some((method, at)) if method != "NONE" => {
            let translated = matches!(
                method.as_str(),
                "GET" | "GET11" | "HEAD" | "HEAD11" | "OPTIONS" | "OPTIONS11"
            );
            if !translated {
                t.warn(
                    at,
                    format!("hcmethod={method} not translated: health checks are HTTP GETs; cluster {} has none", quoted(&cluster.name)),
                );
            } else {
                if !method.starts_with("GET") {
                    t.warn(
                        at,
                        format!("hcmethod={method} imported as GET: health checks are HTTP GETs"),
                    );
                }
                let defaults = HealthCheck::default();
                cluster.health_check = Some(HealthCheck {
                    path: health.uri.clone().unwrap_or(defaults.path),
                    // mod_proxy_hcheck's defaults: every 30 s, one pass, one failure.
                    interval: health.interval.unwrap_or(Dur(Duration::from_secs(30))),
                    timeout: defaults.timeout,
                    healthy_threshold: health.passes.unwrap_or(1),
                    unhealthy_threshold: health.fails.unwrap_or(1),
                });
            }
        }
        _ => {
            if health.uri.is_some()
                || health.interval.is_some()
                || health.passes.is_some()
                || health.fails.is_some()
            {
                t.warn(
                    &draft.at,
                    format!("hcuri/hcinterval/hcpasses/hcfails of cluster {} not translated: without hcmethod Apache runs no check", quoted(&cluster.name)),
                );
            }
        }
    }
    balancing::apply(t, &mut cluster, draft.lbmethod, draft.sticky);
    // What Apache takes but a cluster cannot hold (a route= or cookie name
    // with other characters): refused where the balancer was first named.
    normalize_cluster(&mut cluster.clone())
        .map_err(|e| ImportError::new(&draft.at, format!("cannot be translated: {}", e.message)))?;
    Ok(cluster)
}

mod balancing {
    //! `lbmethod` and `stickysession`: the cluster's policy and sticky sessions.

    use switchyard_shared::{Cluster, Policy, Sticky};

    use super::Translator;
    use crate::import::Location;

    pub(super) fn apply(
        t: &mut Translator,
        cluster: &mut Cluster,
        lbmethod: Option<(String, Location)>,
        sticky: Option<(String, Location)>,
    ) {
        if let Some((method, at)) = lbmethod {
            cluster.policy = match method.as_str() {
                "byrequests" => Policy::RoundRobin,
                "bybusyness" => Policy::LeastRequest,
                _ => {
                    t.warn(
                        &at,
                        format!(
                            "lbmethod={method} imported as least_request, the nearest policy (Switchyard counts requests in flight, not bytes or heartbeats)"
                        ),
                    );
                    Policy::LeastRequest
                }
            };
        }
        if let Some((names, at)) = sticky {
            // `NAME` or `COOKIE|URL_PARAMETER`, as Apache spells it.
            let (cookie, url_parameter) = match names.split_once('|') {
                Some((cookie, parameter)) => (cookie.to_owned(), Some(parameter.to_owned())),
                None => (names.clone(), None),
            };
            if cookie.is_empty() {
                t.warn(&at, "stickysession with no cookie name not translated");
                return;
            }
            let set_cookie = t.sets_route_cookie(&cookie);
            cluster.sticky = Some(Sticky {
                cookie,
                url_parameter: url_parameter.filter(|p| !p.is_empty()),
                set_cookie,
            });
        }
    }
}
