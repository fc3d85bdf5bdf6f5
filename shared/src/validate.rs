//! Validation of the config model: every rule a change must pass before it is
//! stored, pushed or applied. Both sides run the same rules, so a data plane
//! refuses (NACKs) exactly what the control plane would have refused.

use std::collections::HashSet;

use http::Uri;

use crate::model::{
    Cluster, Compress, Config, CookieRewrite, HashOn, HeaderRules, HealthCheck, Member,
    OutlierDetection, Policy, Protocol, RetryPolicy, Route, Sticky,
};
use crate::text::quoted;

/// Why a change was refused; the kind decides the HTTP status the API answers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ConfigError {
    pub kind: ErrorKind,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The input itself is wrong (400).
    Invalid,
    /// It names something that does not exist (404).
    NotFound,
    /// It clashes with what is there (409).
    Conflict,
}

impl ConfigError {
    pub fn invalid(message: impl Into<String>) -> Self {
        ConfigError {
            kind: ErrorKind::Invalid,
            message: message.into(),
        }
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        ConfigError {
            kind: ErrorKind::NotFound,
            message: message.into(),
        }
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        ConfigError {
            kind: ErrorKind::Conflict,
            message: message.into(),
        }
    }
}

/// The scheme of a member's URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    Http,
    Https,
}

/// A member's URL, taken apart.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MemberAddr {
    pub scheme: Scheme,
    /// Host name or IP address (IPv6 without brackets).
    pub host: String,
    pub port: u16,
}

impl MemberAddr {
    /// `host:port`, the default id of a member and the `Host` header sent to it.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// `scheme://host:port`, without a trailing slash.
    pub fn base_url(&self) -> String {
        let scheme = match self.scheme {
            Scheme::Http => "http",
            Scheme::Https => "https",
        };
        format!("{scheme}://{}", self.authority())
    }
}

/// The largest weight a member may have.
pub const MAX_WEIGHT: u32 = 100;
const MAX_NAME_LEN: usize = 64;

/// Parses a member URL: `http(s)://host[:port]`, with no path, query or user info.
pub fn parse_member_url(url: &str) -> Result<MemberAddr, ConfigError> {
    let bad = |why: &str| {
        ConfigError::invalid(format!(
            "member url {} is invalid: {why}; expected http(s)://host:port with no path",
            quoted(url)
        ))
    };
    let uri: Uri = url.parse().map_err(|_| bad("it is not a URL"))?;
    let scheme = match uri.scheme_str() {
        Some("http") => Scheme::Http,
        Some("https") => Scheme::Https,
        Some(_) => return Err(bad("the scheme must be http or https")),
        None => return Err(bad("the scheme is missing")),
    };
    let authority = uri.authority().ok_or_else(|| bad("the host is missing"))?;
    if authority.as_str().contains('@') {
        return Err(bad("user info is not allowed"));
    }
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    if host.is_empty() {
        return Err(bad("the host is missing"));
    }
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err(bad("it has a path or query"));
    }
    // `Authority::port_u16` is None both for no port and for one that is not
    // a u16 (`:99999`), so the port is read from the text after the host.
    let after_host = match authority.as_str().rfind(']') {
        Some(end) => authority.as_str().get(end + 1..).unwrap_or(""),
        None => authority.as_str(),
    };
    let port = match after_host.rsplit_once(':').map(|(_, port)| port) {
        None if scheme == Scheme::Http => 80,
        None => 443,
        Some("") => return Err(bad("the port is empty")),
        Some(text) => match text.parse::<u16>() {
            Ok(port) if port > 0 && text.bytes().all(|b| b.is_ascii_digit()) => port,
            _ => {
                return Err(bad(&format!(
                    "port {} is not a number from 1 to 65535",
                    quoted(text)
                )));
            }
        },
    };
    Ok(MemberAddr {
        scheme,
        host: host.to_ascii_lowercase(),
        port,
    })
}

/// Checks a cluster or route name: 1 to 64 letters, digits, `-` and `_`.
pub fn validate_name(what: &str, name: &str) -> Result<(), ConfigError> {
    if name.is_empty() {
        return Err(ConfigError::invalid(format!("{what} name is empty")));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(ConfigError::invalid(format!(
            "{what} name {} is longer than {MAX_NAME_LEN} characters",
            quoted(name)
        )));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(ConfigError::invalid(format!(
            "{what} name {} may contain only letters, digits, '-' and '_'",
            quoted(name)
        )));
    }
    Ok(())
}

fn validate_member_id(id: &str) -> Result<(), ConfigError> {
    let ok_byte = |b: u8| b.is_ascii_alphanumeric() || b"-_.:[]".contains(&b);
    if id.is_empty() || id.len() > 128 || !id.bytes().all(ok_byte) {
        return Err(ConfigError::invalid(format!(
            "member id {} must be 1 to 128 letters, digits, '-', '_', '.', ':', '[' or ']'",
            quoted(id)
        )));
    }
    Ok(())
}

/// Checks one member and fills in its id from its URL when it has none.
pub fn normalize_member(member: &mut Member) -> Result<MemberAddr, ConfigError> {
    let addr = parse_member_url(&member.url)?;
    if member.id.is_empty() {
        member.id = addr.authority();
    }
    validate_member_id(&member.id)?;
    if !(1..=MAX_WEIGHT).contains(&member.weight) {
        return Err(ConfigError::invalid(format!(
            "member {}: weight must be 1..={MAX_WEIGHT}, got {}",
            quoted(&member.id),
            member.weight
        )));
    }
    if let Some(route) = &member.route {
        validate_route_name(route).map_err(|e| ConfigError {
            message: format!("member {}: {}", quoted(&member.id), e.message),
            ..e
        })?;
    }
    Ok(addr)
}

/// The longest header, cookie or URL parameter name a policy may name.
pub const MAX_KEY_NAME_LEN: usize = 128;
/// The longest member route.
pub const MAX_ROUTE_LEN: usize = 64;

/// Whether `b` is a `tchar` (RFC 9110 §5.6.2), what header and cookie names are made of.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Checks a header, cookie or URL parameter name (`what` says which field).
fn validate_key_name(what: &str, name: &str) -> Result<(), ConfigError> {
    if name.is_empty() || name.len() > MAX_KEY_NAME_LEN || !name.bytes().all(is_tchar) {
        return Err(ConfigError::invalid(format!(
            "{what} {} must be 1 to {MAX_KEY_NAME_LEN} token characters (letters, digits and !#$%&'*+-.^_`|~)",
            quoted(name)
        )));
    }
    Ok(())
}

/// Checks a member's route: what a sticky cookie's value carries after its '.'.
fn validate_route_name(route: &str) -> Result<(), ConfigError> {
    let ok_byte = |b: u8| b.is_ascii_alphanumeric() || b"-_.".contains(&b);
    if route.is_empty() || route.len() > MAX_ROUTE_LEN || !route.bytes().all(ok_byte) {
        return Err(ConfigError::invalid(format!(
            "route {} must be 1 to {MAX_ROUTE_LEN} letters, digits, '-', '_' or '.'",
            quoted(route)
        )));
    }
    Ok(())
}

/// Checks `policy`, `hash_on` and `sticky` together: `hash_on` goes with
/// `consistent_hash` and nothing else.
fn validate_policy(cluster: &Cluster) -> Result<(), ConfigError> {
    match (&cluster.policy, &cluster.hash_on) {
        (Policy::ConsistentHash, None) => {
            return Err(ConfigError::invalid(
                "policy consistent_hash needs hash_on: {\"header\": NAME}, {\"cookie\": NAME} or \"client_ip\"",
            ));
        }
        (Policy::ConsistentHash, Some(HashOn::Header(name))) => {
            validate_key_name("hash_on header", name)?;
        }
        (Policy::ConsistentHash, Some(HashOn::Cookie(name))) => {
            validate_key_name("hash_on cookie", name)?;
        }
        (Policy::ConsistentHash, Some(HashOn::ClientIp)) => {}
        (policy, Some(_)) => {
            return Err(ConfigError::invalid(format!(
                "hash_on is only used with policy consistent_hash, not {}",
                policy.as_str()
            )));
        }
        (_, None) => {}
    }
    if let Some(Sticky {
        cookie,
        url_parameter,
        ..
    }) = &cluster.sticky
    {
        validate_key_name("sticky cookie", cookie)?;
        if let Some(parameter) = url_parameter {
            validate_key_name("sticky url_parameter", parameter)?;
        }
    }
    Ok(())
}

/// Sticky sessions know a member by its route, or by its id when it has
/// none: no two members of a cluster may be known by the same name.
fn validate_routes_unique(cluster: &Cluster) -> Result<(), ConfigError> {
    let mut routes = HashSet::with_capacity(cluster.members.len());
    for member in &cluster.members {
        if let Some(route) = &member.route
            && !routes.insert(route.as_str())
        {
            return Err(ConfigError::invalid(format!(
                "member {}: route {} appears twice",
                quoted(&member.id),
                quoted(route)
            )));
        }
    }
    for member in cluster.members.iter().filter(|m| m.route.is_none()) {
        if routes.contains(member.id.as_str()) {
            return Err(ConfigError::invalid(format!(
                "member {} has no route, so sticky sessions know it by its id, which another member has as its route",
                quoted(&member.id)
            )));
        }
    }
    Ok(())
}

/// Checks a cluster and fills in its members' ids; returns the members'
/// addresses, in order.
pub fn normalize_cluster(cluster: &mut Cluster) -> Result<Vec<MemberAddr>, ConfigError> {
    validate_name("cluster", &cluster.name)?;
    let name = cluster.name.clone();
    let in_cluster = |e: ConfigError| ConfigError {
        message: format!("cluster {}: {}", quoted(&name), e.message),
        ..e
    };
    for (what, d) in [
        ("connect_timeout", cluster.connect_timeout),
        ("response_timeout", cluster.response_timeout),
        ("idle_timeout", cluster.idle_timeout),
    ] {
        if d.0.is_zero() {
            return Err(in_cluster(ConfigError::invalid(format!(
                "{what} must be greater than 0"
            ))));
        }
    }
    if let Some(check) = &cluster.health_check {
        validate_health_check(check).map_err(in_cluster)?;
    }
    validate_retry(&cluster.retry).map_err(in_cluster)?;
    validate_policy(cluster).map_err(in_cluster)?;
    if let Some(outlier) = &cluster.outlier_detection {
        validate_outlier(outlier).map_err(in_cluster)?;
    }
    let addrs = cluster
        .members
        .iter_mut()
        .map(normalize_member)
        .collect::<Result<Vec<_>, _>>()
        .map_err(in_cluster)?;
    for (member, addr) in cluster.members.iter().zip(&addrs) {
        validate_protocol(cluster.protocol, member, addr).map_err(in_cluster)?;
    }
    let mut ids = HashSet::with_capacity(addrs.len());
    let mut unique_addrs = HashSet::with_capacity(addrs.len());
    for (member, addr) in cluster.members.iter().zip(&addrs) {
        if !ids.insert(member.id.as_str()) {
            return Err(in_cluster(ConfigError::conflict(format!(
                "member id {} appears twice",
                quoted(&member.id)
            ))));
        }
        if !unique_addrs.insert(addr) {
            return Err(in_cluster(ConfigError::conflict(format!(
                "member url {} appears twice",
                quoted(&member.url)
            ))));
        }
    }
    validate_routes_unique(cluster).map_err(in_cluster)?;
    Ok(addrs)
}

/// `h2` is HTTP/2 over TLS (`https://` members only); `h2c` is HTTP/2 in
/// clear text (`http://` members only).
fn validate_protocol(
    protocol: Protocol,
    member: &Member,
    addr: &MemberAddr,
) -> Result<(), ConfigError> {
    let needed = match (protocol, addr.scheme) {
        (Protocol::H2, Scheme::Http) => "https://",
        (Protocol::H2c, Scheme::Https) => "http://",
        _ => return Ok(()),
    };
    let hint = match protocol {
        Protocol::H2 => "use protocol \"h2c\" for HTTP/2 without TLS",
        _ => "use protocol \"h2\" for HTTP/2 over TLS",
    };
    Err(ConfigError::invalid(format!(
        "member {}: protocol {:?} needs a {needed} url, got {} ({hint})",
        quoted(&member.id),
        protocol.as_str(),
        quoted(&member.url)
    )))
}

fn validate_health_check(check: &HealthCheck) -> Result<(), ConfigError> {
    if !check.path.starts_with('/') {
        return Err(ConfigError::invalid(format!(
            "health_check path {} must start with '/'",
            quoted(&check.path)
        )));
    }
    if check.interval.0.is_zero() || check.timeout.0.is_zero() {
        return Err(ConfigError::invalid(
            "health_check interval and timeout must be greater than 0",
        ));
    }
    if check.healthy_threshold == 0 || check.unhealthy_threshold == 0 {
        return Err(ConfigError::invalid(
            "health_check thresholds must be at least 1",
        ));
    }
    Ok(())
}

/// The most retries a request may make.
pub const MAX_RETRIES: u32 = 10;

fn validate_retry(retry: &RetryPolicy) -> Result<(), ConfigError> {
    if retry.max_retries > MAX_RETRIES {
        return Err(ConfigError::invalid(format!(
            "retry max_retries must be 0..={MAX_RETRIES}, got {}",
            retry.max_retries
        )));
    }
    if retry.per_try_timeout.is_some_and(|t| t.0.is_zero()) {
        return Err(ConfigError::invalid(
            "retry per_try_timeout must be greater than 0",
        ));
    }
    if retry.budget_percent > 100 {
        return Err(ConfigError::invalid(format!(
            "retry budget_percent must be 0..=100, got {}",
            retry.budget_percent
        )));
    }
    Ok(())
}

fn validate_outlier(outlier: &OutlierDetection) -> Result<(), ConfigError> {
    if outlier.consecutive_failures == 0 {
        return Err(ConfigError::invalid(
            "outlier_detection consecutive_failures must be at least 1",
        ));
    }
    if outlier.base_ejection.0.is_zero() || outlier.max_ejection < outlier.base_ejection {
        return Err(ConfigError::invalid(
            "outlier_detection base_ejection must be greater than 0 and at most max_ejection",
        ));
    }
    if outlier.max_ejected_percent > 100 {
        return Err(ConfigError::invalid(format!(
            "outlier_detection max_ejected_percent must be 0..=100, got {}",
            outlier.max_ejected_percent
        )));
    }
    Ok(())
}

/// Checks a route on its own (not whether its cluster exists); lower-cases its host.
pub fn normalize_route(route: &mut Route) -> Result<(), ConfigError> {
    validate_name("route", &route.name)?;
    let name = quoted(&route.name);
    if !route.path_prefix.starts_with('/') {
        return Err(ConfigError::invalid(format!(
            "route {name}: path_prefix {} must start with '/'",
            quoted(&route.path_prefix)
        )));
    }
    if route
        .path_prefix
        .bytes()
        .any(|b| b.is_ascii_whitespace() || b.is_ascii_control() || b == b'?' || b == b'#')
    {
        return Err(ConfigError::invalid(format!(
            "route {name}: path_prefix {} may not contain spaces, '?' or '#'",
            quoted(&route.path_prefix)
        )));
    }
    // The rewritten path must be one a request line can carry, or the data
    // plane could not send it (found by the request_rewrite fuzz target: a
    // control character passed, and the rewrite was silently not applied).
    if let Some(rewrite) = &route.rewrite_prefix
        && (!rewrite.starts_with('/')
            || rewrite
                .bytes()
                .any(|b| b.is_ascii_whitespace() || b == b'?' || b == b'#')
            || http::uri::PathAndQuery::try_from(rewrite.as_str()).is_err())
    {
        return Err(ConfigError::invalid(format!(
            "route {name}: rewrite_prefix {} must start with '/' and have only URL path characters (no spaces, control characters, '?' or '#'; others percent-encoded)",
            quoted(rewrite)
        )));
    }
    if let Some(host) = &mut route.host {
        let valid = !host.is_empty()
            && host.len() <= 253
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'*');
        if !valid {
            return Err(ConfigError::invalid(format!(
                "route {name}: host {} must be a host name without port (letters, digits, '-', '.')",
                quoted(host)
            )));
        }
        *host = host.to_ascii_lowercase();
    }
    validate_name("cluster", &route.cluster)
        .map_err(|e| ConfigError::invalid(format!("route {name}: {}", e.message)))?;
    let in_route = |e: ConfigError| ConfigError {
        message: format!("route {name}: {}", e.message),
        ..e
    };
    if let Some(compress) = &mut route.compress {
        normalize_compress(compress).map_err(in_route)?;
    }
    if let Some(rules) = &route.request_headers {
        validate_header_rules(Direction::Request, rules).map_err(in_route)?;
    }
    if let Some(rules) = &route.response_headers {
        validate_header_rules(Direction::Response, rules).map_err(in_route)?;
    }
    if let Some(rewrite) = &route.rewrite_cookie_path {
        validate_cookie_rewrite("rewrite_cookie_path", rewrite, cookie_path_ok)
            .map_err(|e| ConfigError::invalid(format!("route {name}: {}", e.message)))?;
    }
    if let Some(rewrite) = &route.rewrite_cookie_domain {
        validate_cookie_rewrite("rewrite_cookie_domain", rewrite, cookie_domain_ok)
            .map_err(|e| ConfigError::invalid(format!("route {name}: {}", e.message)))?;
    }
    Ok(())
}

/// The most media types a route's `compress.types` may list.
pub const MAX_COMPRESS_TYPES: usize = 64;

/// Checks a route's `compress` and lower-cases its types.
fn normalize_compress(compress: &mut Compress) -> Result<(), ConfigError> {
    if compress.algorithms.is_empty() {
        return Err(ConfigError::invalid(
            "compress algorithms is empty; list at least one of \"br\", \"zstd\", \"gzip\" (or leave compress null to turn it off)",
        ));
    }
    for (i, algorithm) in compress.algorithms.iter().enumerate() {
        if compress.algorithms[..i].contains(algorithm) {
            return Err(ConfigError::invalid(format!(
                "compress algorithms lists {} twice",
                quoted(algorithm.as_str())
            )));
        }
    }
    if compress.types.is_empty() || compress.types.len() > MAX_COMPRESS_TYPES {
        return Err(ConfigError::invalid(format!(
            "compress types must list 1 to {MAX_COMPRESS_TYPES} media types, got {}",
            compress.types.len()
        )));
    }
    for media_type in &mut compress.types {
        let valid = match media_type.split_once('/') {
            Some((major, minor)) => {
                is_token(major) && major != "*" && (minor == "*" || is_token(minor))
            }
            None => false,
        };
        if !valid {
            return Err(ConfigError::invalid(format!(
                "compress type {} is not a media type like \"text/html\" or \"text/*\" (no parameters; \"*/*\" is not allowed)",
                quoted(media_type)
            )));
        }
        media_type.make_ascii_lowercase();
    }
    for (i, media_type) in compress.types.iter().enumerate() {
        if compress.types[..i].contains(media_type) {
            return Err(ConfigError::invalid(format!(
                "compress types lists {} twice",
                quoted(media_type)
            )));
        }
    }
    Ok(())
}

/// Whether `text` is an HTTP token (RFC 9110, 5.6.2).
fn is_token(text: &str) -> bool {
    !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Which way a route's header rules apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// `request_headers`: the request on its way to the member.
    Request,
    /// `response_headers`: the response on its way to the client.
    Response,
}

impl Direction {
    fn field(self) -> &'static str {
        match self {
            Direction::Request => "request_headers",
            Direction::Response => "response_headers",
        }
    }
}

/// Why a header rule's name is refused, if it is: not a header name, twice
/// in its part (`earlier`), or one no rule of this kind may name.
fn check_rule_name(
    direction: Direction,
    kind: &str,
    name: &str,
    earlier: &[&String],
) -> Result<(), &'static str> {
    if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
        return Err("is not a header name (letters, digits and !#$%&'*+-.^_`|~)");
    }
    if earlier.iter().any(|n| n.eq_ignore_ascii_case(name)) {
        return Err("appears twice (header names are case-insensitive)");
    }
    let lower = name.to_ascii_lowercase();
    if lower == "content-length" {
        return Err("Content-Length cannot be changed: the proxy frames every body itself");
    }
    if kind != "remove" && HOP_BY_HOP_HEADERS.contains(&lower.as_str()) {
        return Err(
            "is a hop-by-hop header: it describes one connection, the proxy removes it, and no rule may add it back",
        );
    }
    if direction == Direction::Request && kind != "set" && lower == "host" {
        return Err(
            "a request has exactly one Host: it can only be set (which replaces the Host every member is sent)",
        );
    }
    Ok(())
}

/// The most rules (set, append and remove together) of one direction of a route.
pub const MAX_HEADER_RULES: usize = 64;
/// The longest value a header rule may set or append, in bytes.
pub const MAX_HEADER_VALUE_LEN: usize = 4096;

/// The hop-by-hop headers (RFC 9110, 7.6.1) and `Trailer`: the proxy removes
/// the first from every message and they describe one connection, so a rule
/// may never add them back.
pub const HOP_BY_HOP_HEADERS: [&str; 7] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Checks one direction of a route's header rules: at most
/// [`MAX_HEADER_RULES`], names that are header names and appear once per
/// kind of rule, values a header can carry, and nothing that would break the
/// message's framing or re-add a hop-by-hop header: `set` and `append` may
/// not name a hop-by-hop header; no rule may name `Content-Length` (the
/// proxy frames bodies); on requests, `Host` may be `set` (it replaces the
/// `Host` sent to every member, like nginx's `proxy_set_header Host`) but
/// not appended or removed (a request has exactly one).
pub fn validate_header_rules(direction: Direction, rules: &HeaderRules) -> Result<(), ConfigError> {
    let field = direction.field();
    if rules.len() > MAX_HEADER_RULES {
        return Err(ConfigError::invalid(format!(
            "{field} has {} rules; at most {MAX_HEADER_RULES} are allowed",
            rules.len()
        )));
    }
    let kinds = [
        ("set", rules.set.keys().collect::<Vec<_>>()),
        ("append", rules.append.keys().collect()),
        ("remove", rules.remove.iter().collect()),
    ];
    for (kind, names) in &kinds {
        for (i, name) in names.iter().enumerate() {
            check_rule_name(direction, kind, name, &names[..i]).map_err(|why| {
                ConfigError::invalid(format!("{field} {kind} {}: {why}", quoted(name)))
            })?;
        }
    }
    for (kind, map) in [("set", &rules.set), ("append", &rules.append)] {
        for (name, value) in map {
            let visible = value
                .bytes()
                .all(|b| b == b'\t' || (b' '..=b'~').contains(&b));
            let trimmed = value.trim_matches([' ', '\t']).len() == value.len();
            if value.len() > MAX_HEADER_VALUE_LEN || !visible || !trimmed {
                return Err(ConfigError::invalid(format!(
                    "{field} {kind} {}: value {} must be at most {MAX_HEADER_VALUE_LEN} bytes of visible ASCII, spaces and tabs, with no space at either end",
                    quoted(name),
                    quoted(value)
                )));
            }
        }
    }
    if direction == Direction::Request
        && rules
            .set
            .iter()
            .any(|(n, v)| n.eq_ignore_ascii_case("host") && v.is_empty())
    {
        return Err(ConfigError::invalid(format!(
            "{field} set \"Host\": the value is empty; a request needs a host"
        )));
    }
    Ok(())
}

/// A cookie `Path` a rewrite may name: starts with '/', and holds no
/// character that would end the attribute or the header (`;`, `,`, spaces,
/// control characters).
fn cookie_path_ok(path: &str) -> bool {
    path.starts_with('/')
        && path.len() <= 1024
        && path
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b';' && b != b',')
}

/// A cookie `Domain` a rewrite may name: a host name (letters, digits, '-',
/// '.'), a leading '.' allowed as Apache and old browsers write it.
fn cookie_domain_ok(domain: &str) -> bool {
    let name = domain.strip_prefix('.').unwrap_or(domain);
    !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

fn validate_cookie_rewrite(
    field: &str,
    rewrite: &CookieRewrite,
    ok: fn(&str) -> bool,
) -> Result<(), ConfigError> {
    for (side, value) in [("from", &rewrite.from), ("to", &rewrite.to)] {
        if !ok(value) {
            let expected = if field == "rewrite_cookie_path" {
                "a path starting with '/' with no spaces, ';' or ','"
            } else {
                "a host name (letters, digits, '-', '.')"
            };
            return Err(ConfigError::invalid(format!(
                "{field} {side} {} must be {expected}",
                quoted(value)
            )));
        }
    }
    Ok(())
}

/// Checks a whole config: every cluster and route, unique names, routes that
/// lead to existing clusters, no two routes with the same host and prefix.
/// Returns the addresses of every cluster's members, in order.
pub fn validate_config(config: &mut Config) -> Result<Vec<Vec<MemberAddr>>, ConfigError> {
    let mut names = HashSet::new();
    let mut addrs = Vec::with_capacity(config.clusters.len());
    for cluster in &mut config.clusters {
        addrs.push(normalize_cluster(cluster)?);
        if !names.insert(cluster.name.as_str()) {
            return Err(ConfigError::invalid(format!(
                "cluster {} appears twice",
                quoted(&cluster.name)
            )));
        }
    }
    let mut route_names = HashSet::new();
    let mut matches = HashSet::new();
    for route in &mut config.routes {
        normalize_route(route)?;
        if !names.contains(route.cluster.as_str()) {
            return Err(ConfigError::invalid(format!(
                "route {}: cluster {} does not exist",
                quoted(&route.name),
                quoted(&route.cluster)
            )));
        }
        if !route_names.insert(route.name.as_str()) {
            return Err(ConfigError::invalid(format!(
                "route {} appears twice",
                quoted(&route.name)
            )));
        }
        if !matches.insert((route.host.as_deref(), route.path_prefix.as_str())) {
            return Err(ConfigError::invalid(format!(
                "route {}: another route already matches host {} and path_prefix {}",
                quoted(&route.name),
                route
                    .host
                    .as_deref()
                    .map_or("(any)".to_owned(), |h| quoted(h).to_string()),
                quoted(&route.path_prefix)
            )));
        }
    }
    Ok(addrs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_urls() {
        let addr = parse_member_url("http://127.0.0.1:8080").unwrap();
        assert_eq!(addr.authority(), "127.0.0.1:8080");
        assert_eq!(
            parse_member_url("http://Backend/").unwrap().authority(),
            "backend:80"
        );
        assert_eq!(
            parse_member_url("https://[::1]:8443").unwrap().authority(),
            "[::1]:8443"
        );
        for bad in [
            "127.0.0.1:8080",
            "ftp://a:1",
            "http://a:1/app",
            "http://u@a:1",
            "http://a:1?x",
            "http://:80",
            "x",
            "http://a:0",
            "http://a:65536",
            "http://127.0.0.1:99999",
            "http://a:+80",
            "http://a:8o",
            "http://[::1]:70000",
        ] {
            assert!(parse_member_url(bad).is_err(), "{bad} should be refused");
        }
        let err = parse_member_url("http://127.0.0.1:99999").unwrap_err();
        assert!(err.message.contains("port \"99999\""), "{err}");
        assert_eq!(parse_member_url("http://a:65535").unwrap().port, 65535);
        assert_eq!(parse_member_url("https://[::1]").unwrap().port, 443);
    }

    #[test]
    fn names() {
        assert!(validate_name("cluster", "my_cluster-2").is_ok());
        assert!(validate_name("cluster", "").is_err());
        assert!(validate_name("cluster", "a b").is_err());
        assert!(validate_name("cluster", "a/b").is_err());
    }

    #[test]
    fn member_ids_default_and_weights_are_bounded() {
        let mut cluster = Cluster::new("c");
        cluster.members.push(Member::new("http://127.0.0.1:8080"));
        normalize_cluster(&mut cluster).unwrap();
        assert_eq!(cluster.members[0].id, "127.0.0.1:8080");
        cluster.members[0].weight = 101;
        let err = normalize_cluster(&mut cluster).unwrap_err();
        assert!(err.message.contains("weight must be 1..=100"), "{err}");
        cluster.members[0].weight = 1;
        cluster.members.push(Member::new("http://127.0.0.1:8080"));
        assert!(normalize_cluster(&mut cluster).is_err());
    }

    #[test]
    fn h2_needs_https_members_and_h2c_http_members() {
        let mut cluster = Cluster::new("grpc");
        cluster.protocol = Protocol::H2c;
        cluster.members.push(Member::new("http://127.0.0.1:50051"));
        normalize_cluster(&mut cluster).unwrap();
        cluster.protocol = Protocol::H2;
        let err = normalize_cluster(&mut cluster).unwrap_err();
        assert_eq!(err.kind, ErrorKind::Invalid);
        assert!(
            err.message
                .contains("protocol \"h2\" needs a https:// url, got \"http://127.0.0.1:50051\""),
            "{err}"
        );
        assert!(
            err.message
                .starts_with("cluster \"grpc\": member \"127.0.0.1:50051\""),
            "{err}"
        );
        cluster.members[0].url = "https://127.0.0.1:50051".into();
        normalize_cluster(&mut cluster).unwrap();
        cluster.protocol = Protocol::H2c;
        let err = normalize_cluster(&mut cluster).unwrap_err();
        assert!(
            err.message.contains("protocol \"h2c\" needs a http:// url"),
            "{err}"
        );
        cluster.protocol = Protocol::Http1;
        normalize_cluster(&mut cluster).unwrap();
    }

    #[test]
    fn policy_fields() {
        let mut cluster = Cluster::new("c");
        cluster.policy = Policy::ConsistentHash;
        let err = normalize_cluster(&mut cluster).unwrap_err();
        assert!(err.message.contains("cluster \"c\""), "{err}");
        assert!(err.message.contains("needs hash_on"), "{err}");
        cluster.hash_on = Some(HashOn::Header("X-User".into()));
        normalize_cluster(&mut cluster).unwrap();
        cluster.hash_on = Some(HashOn::Cookie("bad name".into()));
        let err = normalize_cluster(&mut cluster).unwrap_err();
        assert!(err.message.contains("hash_on cookie \"bad name\""), "{err}");
        cluster.hash_on = Some(HashOn::Header("x".repeat(MAX_KEY_NAME_LEN + 1)));
        assert!(normalize_cluster(&mut cluster).is_err());
        cluster.hash_on = Some(HashOn::ClientIp);
        normalize_cluster(&mut cluster).unwrap();
        cluster.policy = Policy::Random;
        let err = normalize_cluster(&mut cluster).unwrap_err();
        assert!(err.message.contains("not random"), "{err}");
        cluster.hash_on = None;
        cluster.sticky = Some(Sticky {
            cookie: "JSESSIONID".into(),
            url_parameter: Some("jsessionid".into()),
            set_cookie: false,
        });
        normalize_cluster(&mut cluster).unwrap();
        cluster.sticky.as_mut().unwrap().url_parameter = Some("a=b".into());
        let err = normalize_cluster(&mut cluster).unwrap_err();
        assert!(err.message.contains("sticky url_parameter"), "{err}");
    }

    #[test]
    fn member_routes_are_unique_names() {
        let mut cluster = Cluster::new("c");
        for (port, route) in [(1, Some("a")), (2, Some("b")), (3, None)] {
            let mut member = Member::new(format!("http://127.0.0.1:{port}"));
            member.route = route.map(Into::into);
            cluster.members.push(member);
        }
        normalize_cluster(&mut cluster).unwrap();
        cluster.members[1].route = Some("a".into());
        let err = normalize_cluster(&mut cluster).unwrap_err();
        assert!(err.message.contains("route \"a\" appears twice"), "{err}");
        cluster.members[1].route = Some("127.0.0.1:3".into());
        assert!(
            normalize_cluster(&mut cluster).is_err(),
            "':' is no route character"
        );
        cluster.members[1].route = Some("127.0.0.1-3".into());
        cluster.members[2].id = "127.0.0.1-3".into();
        let err = normalize_cluster(&mut cluster).unwrap_err();
        assert!(err.message.contains("by its id"), "{err}");
        cluster.members[1].route = Some(String::new());
        assert!(normalize_cluster(&mut cluster).is_err());
    }

    #[test]
    fn rewrite_prefixes_are_url_paths() {
        for good in ["/", "/app/", "/a%20b/", "/{json}/", "/~user/"] {
            let mut route = Route::new("r", "/", "c");
            route.rewrite_prefix = Some(good.into());
            assert!(normalize_route(&mut route).is_ok(), "{good:?}");
        }
        // The first from the request_rewrite fuzz target.
        for bad in [
            "/\u{f}\u{f}",
            "app",
            "/a b",
            "/a?b",
            "/a#b",
            "/\u{7f}",
            "/<a>",
            "/`",
        ] {
            let mut route = Route::new("r", "/", "c");
            route.rewrite_prefix = Some(bad.into());
            assert!(normalize_route(&mut route).is_err(), "{bad:?}");
        }
    }

    fn route_with_rules(direction: Direction, json: &str) -> Route {
        let rules: HeaderRules = serde_json::from_str(json).unwrap();
        let mut route = Route::new("r", "/", "c");
        match direction {
            Direction::Request => route.request_headers = Some(rules),
            Direction::Response => route.response_headers = Some(rules),
        }
        route
    }

    #[test]
    fn header_rules_accept_ordinary_headers_and_a_request_host() {
        for direction in [Direction::Request, Direction::Response] {
            let mut route = route_with_rules(
                direction,
                r#"{"set": {"X-Frame-Options": "DENY", "Cache-Control": "no-store, max-age=0"},
                    "append": {"X-Via": "switchyard\tedge"}, "remove": ["Server", "Connection"]}"#,
            );
            normalize_route(&mut route).unwrap();
        }
        let mut route = route_with_rules(Direction::Request, r#"{"set": {"Host": "app.test"}}"#);
        normalize_route(&mut route).unwrap();
    }

    #[test]
    fn header_rules_refuse_what_would_break_the_message() {
        let cases = [
            (
                Direction::Request,
                r#"{"set": {"Connection": "x"}}"#,
                "hop-by-hop",
            ),
            (
                Direction::Response,
                r#"{"append": {"transfer-encoding": "chunked"}}"#,
                "hop-by-hop",
            ),
            (
                Direction::Request,
                r#"{"set": {"Upgrade": "h2c"}}"#,
                "hop-by-hop",
            ),
            (
                Direction::Response,
                r#"{"set": {"Trailer": "x"}}"#,
                "hop-by-hop",
            ),
            (
                Direction::Request,
                r#"{"set": {"TE": "trailers"}}"#,
                "hop-by-hop",
            ),
            (
                Direction::Request,
                r#"{"set": {"Keep-Alive": "1"}}"#,
                "hop-by-hop",
            ),
            (
                Direction::Response,
                r#"{"append": {"Proxy-Connection": "x"}}"#,
                "hop-by-hop",
            ),
            (
                Direction::Response,
                r#"{"set": {"Content-Length": "5"}}"#,
                "Content-Length",
            ),
            (
                Direction::Request,
                r#"{"remove": ["content-length"]}"#,
                "Content-Length",
            ),
            (
                Direction::Request,
                r#"{"append": {"Host": "a"}}"#,
                "exactly one Host",
            ),
            (
                Direction::Request,
                r#"{"remove": ["host"]}"#,
                "exactly one Host",
            ),
            (
                Direction::Request,
                r#"{"set": {"Host": ""}}"#,
                "needs a host",
            ),
            (
                Direction::Request,
                r#"{"set": {"Bad Name": "x"}}"#,
                "not a header name",
            ),
            (
                Direction::Request,
                r#"{"set": {"X-A": "line\nbreak"}}"#,
                "visible ASCII",
            ),
            (
                Direction::Request,
                r#"{"set": {"X-A": " padded"}}"#,
                "visible ASCII",
            ),
            (
                Direction::Request,
                r#"{"set": {"X-A": "café"}}"#,
                "visible ASCII",
            ),
            (
                Direction::Request,
                r#"{"set": {"X-A": "1", "x-a": "2"}}"#,
                "twice",
            ),
            (
                Direction::Response,
                r#"{"remove": ["Server", "server"]}"#,
                "twice",
            ),
        ];
        for (direction, json, expected) in cases {
            let mut route = route_with_rules(direction, json);
            let err = normalize_route(&mut route).unwrap_err();
            assert_eq!(err.kind, ErrorKind::Invalid, "{json}");
            assert!(err.message.contains(expected), "{json}: {err}");
            assert!(err.message.starts_with("route \"r\": "), "{json}: {err}");
        }
        let many: serde_json::Value = serde_json::json!({
            "remove": (0..=MAX_HEADER_RULES).map(|i| format!("x-{i}")).collect::<Vec<_>>()
        });
        let mut route = route_with_rules(Direction::Response, &many.to_string());
        let err = normalize_route(&mut route).unwrap_err();
        assert!(err.message.contains("at most 64"), "{err}");
    }

    #[test]
    fn header_rules_refuse_a_name_twice_in_the_json() {
        let err = serde_json::from_str::<HeaderRules>(r#"{"set": {"X-A": "1", "X-A": "2"}}"#)
            .unwrap_err();
        assert!(err.to_string().contains("\"X-A\" appears twice"), "{err}");
        assert!(serde_json::from_str::<HeaderRules>(r#"{"sett": {}}"#).is_err());
        assert!(serde_json::from_str::<HeaderRules>(r#"[{}, {}, []]"#).is_err());
    }

    #[test]
    fn compress_types_are_media_types() {
        let mut route = Route::new("r", "/", "c");
        route.compress = Some(Compress {
            types: vec!["Text/*".into(), "application/JSON".into()],
            ..Compress::default()
        });
        normalize_route(&mut route).unwrap();
        assert_eq!(
            route.compress.as_ref().unwrap().types,
            ["text/*", "application/json"]
        );
        for (types, expected) in [
            (vec!["*/*"], "not a media type"),
            (vec!["text"], "not a media type"),
            (vec!["text/html; charset=utf-8"], "not a media type"),
            (vec!["text/html", "TEXT/HTML"], "twice"),
            (vec![], "1 to 64"),
        ] {
            let mut route = Route::new("r", "/", "c");
            route.compress = Some(Compress {
                types: types.iter().map(|t| (*t).to_owned()).collect(),
                ..Compress::default()
            });
            let err = normalize_route(&mut route).unwrap_err();
            assert!(err.message.contains(expected), "{types:?}: {err}");
        }
        let mut route = Route::new("r", "/", "c");
        route.compress = Some(Compress {
            algorithms: vec![],
            ..Compress::default()
        });
        assert!(normalize_route(&mut route).is_err());
        let bad: Result<Compress, _> = serde_json::from_str(r#"{"algorithms": ["deflate"]}"#);
        assert!(bad.is_err());
        let twice: Compress = serde_json::from_str(r#"{"algorithms": ["gzip", "gzip"]}"#).unwrap();
        route.compress = Some(twice);
        let err = normalize_route(&mut route).unwrap_err();
        assert!(err.message.contains("\"gzip\" twice"), "{err}");
    }

    #[test]
    fn cookie_rewrites_are_checked() {
        let mut route = Route::new("r", "/", "c");
        route.rewrite_cookie_path = Some(CookieRewrite::new("/app/", "/"));
        route.rewrite_cookie_domain = Some(CookieRewrite::new("backend.internal", ".example.com"));
        normalize_route(&mut route).unwrap();
        for (from, to) in [("app", "/"), ("/a;b", "/"), ("/", "/a b"), ("/", "")] {
            let mut route = Route::new("r", "/", "c");
            route.rewrite_cookie_path = Some(CookieRewrite::new(from, to));
            let err = normalize_route(&mut route).unwrap_err();
            assert!(err.message.contains("rewrite_cookie_path"), "{err}");
        }
        for (from, to) in [("", "a"), ("a", "b c"), ("a;b", "a"), (".", "a")] {
            let mut route = Route::new("r", "/", "c");
            route.rewrite_cookie_domain = Some(CookieRewrite::new(from, to));
            let err = normalize_route(&mut route).unwrap_err();
            assert!(err.message.contains("rewrite_cookie_domain"), "{err}");
        }
    }

    #[test]
    fn routes_need_their_cluster() {
        let mut config = Config::default();
        config.routes.push(Route::new("web", "/", "missing"));
        let err = validate_config(&mut config).unwrap_err();
        assert!(err.message.contains("does not exist"), "{err}");
        config.clusters.push(Cluster::new("missing"));
        validate_config(&mut config).unwrap();
        config.routes.push(Route::new("web2", "/", "missing"));
        assert!(validate_config(&mut config).is_err());
    }
}
