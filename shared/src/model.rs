//! The config model: clusters of members and the routes that lead to them, as
//! the REST API, the bootstrap file and the data plane's cache file spell them.
//!
//! Every struct refuses unknown fields, so a typo in a field name is an error
//! rather than a silently ignored setting.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::text::{bounded, quoted};

/// The default connect timeout of a cluster (Apache `connectiontimeout`).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The default response timeout of a cluster (Apache `timeout`).
pub const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a member that refused a connection is left out (Apache `retry`, nginx `fail_timeout`).
pub const DEFAULT_RETRY_WINDOW: Duration = Duration::from_secs(10);
/// The longest a member connection may carry no byte either way, during a body
/// or a tunnel, before it is cut (nginx's `proxy_read_timeout`).
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// The whole config: what `GET /api/v1/config` shows and `PUT /api/v1/config` applies.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields, remote = "Self")]
pub struct Config {
    #[serde(default)]
    pub clusters: Vec<Cluster>,
    #[serde(default)]
    pub routes: Vec<Route>,
}

/// A group of interchangeable backends (Apache's `<Proxy balancer://name>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields, remote = "Self")]
pub struct Cluster {
    /// Taken from the path in `PUT /api/v1/clusters/{name}`; required in a whole config.
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub policy: Policy,
    #[serde(default)]
    pub members: Vec<Member>,
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: Dur,
    #[serde(default = "default_response_timeout")]
    pub response_timeout: Dur,
    #[serde(default = "default_retry_window")]
    pub retry_window: Dur,
    /// No byte either way for this long during a body or a tunnel: the
    /// exchange is cut (the client sees 504 if no head was sent yet).
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout: Dur,
    #[serde(default)]
    pub health_check: Option<HealthCheck>,
    /// When a failed attempt goes to another member.
    #[serde(default)]
    pub retry: RetryPolicy,
    /// Passive health: members that keep failing are ejected for a while
    /// (Envoy's outlier detection). None: only the retry window applies.
    #[serde(default)]
    pub outlier_detection: Option<OutlierDetection>,
    /// What `consistent_hash` hashes; required with that policy, refused with any other.
    #[serde(default)]
    pub hash_on: Option<HashOn>,
    /// Sticky sessions (Apache's `stickysession`), with any policy: a request
    /// whose cookie or URL parameter names a member's route goes to that member.
    #[serde(default)]
    pub sticky: Option<Sticky>,
    /// What the members speak: HTTP/1.1 (the default), HTTP/2 with prior
    /// knowledge (`h2c`, `http://` members) or HTTP/2 over TLS (`h2`,
    /// `https://` members, ALPN `h2`).
    #[serde(default)]
    pub protocol: Protocol,
}

/// The key `consistent_hash` hashes: `{"header": NAME}`, `{"cookie": NAME}`
/// or `"client_ip"` (nginx `hash $http_x consistent`, HAProxy `balance hdr(x)`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum HashOn {
    /// The value of this request header.
    Header(String),
    /// The value of this request cookie.
    Cookie(String),
    /// The client's IP address (without port).
    ClientIp,
}

/// Sticky sessions (Apache's `stickysession=NAME|url_parameter`): the route
/// part of the value (what follows its first '.', or all of it) names the member.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields, remote = "Self")]
pub struct Sticky {
    /// The cookie whose value names the member (e.g. `JSESSIONID`).
    pub cookie: String,
    /// The URL parameter also read (`;NAME=` path parameter or `?NAME=` query),
    /// as Apache's second `stickysession` name.
    #[serde(default)]
    pub url_parameter: Option<String>,
    /// Switchyard sets `Set-Cookie: NAME=.ROUTE; Path=/; HttpOnly` whenever the
    /// request was not already sticky to the member that served it.
    #[serde(default)]
    pub set_cookie: bool,
}

/// The protocol a cluster's members speak.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    /// HTTP/1.1 (nginx's `proxy_http_version 1.1`).
    #[default]
    Http1,
    /// HTTP/2 with prior knowledge over plain TCP (`http://` members; gRPC's usual).
    H2c,
    /// HTTP/2 over TLS, agreed by ALPN (`https://` members).
    H2,
}

/// When a request that failed on one member is sent to another (nginx's
/// `proxy_next_upstream`). Whatever this says, a request of which nothing was
/// written may always go elsewhere, and a request that is not idempotent, or
/// whose body cannot be replayed, never goes again once any of it was written.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields, remote = "Self")]
pub struct RetryPolicy {
    /// How many more members a request may try after the first (0: none).
    #[serde(default = "default_retries")]
    pub max_retries: u32,
    /// What counts as a failure worth another member.
    #[serde(default = "default_retry_on")]
    pub retry_on: Vec<RetryOn>,
    /// Each attempt's own limit for the response head (none: the cluster's
    /// `response_timeout`).
    #[serde(default)]
    pub per_try_timeout: Option<Dur>,
    /// Retries may add at most this share of the cluster's requests (in %)…
    #[serde(default = "default_budget_percent")]
    pub budget_percent: u32,
    /// …plus this many per second, so a quiet cluster can still retry.
    #[serde(default = "default_budget_min_per_second")]
    pub budget_min_per_second: u32,
}

/// A kind of failure that a retry policy may retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum RetryOn {
    /// The connection failed or broke before any byte of the answer.
    Error,
    /// The member did not answer within the (per-try) timeout.
    Timeout,
    /// The member answered 502, 503 or 504 (`http_502`, as `as_str` spells
    /// it; snake_case alone would make it `http502`).
    #[serde(rename = "http_502")]
    Http502,
    #[serde(rename = "http_503")]
    Http503,
    #[serde(rename = "http_504")]
    Http504,
}

/// Ejection of members that keep failing (Envoy's outlier detection).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields, remote = "Self")]
pub struct OutlierDetection {
    /// Failures in a row (connect failures, broken exchanges, 5xx) that eject a member.
    #[serde(default = "default_consecutive_failures")]
    pub consecutive_failures: u32,
    /// The first ejection's length; each further one is longer by as much.
    #[serde(default = "default_base_ejection")]
    pub base_ejection: Dur,
    /// The longest an ejection may last.
    #[serde(default = "default_max_ejection")]
    pub max_ejection: Dur,
    /// At most this share (in %) of a cluster's members is ejected at once;
    /// at least one member may always be.
    #[serde(default = "default_max_ejected_percent")]
    pub max_ejected_percent: u32,
}

/// How a member is picked.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Policy {
    /// Smooth weighted round robin (Apache `lbmethod=byrequests`, nginx's default).
    #[default]
    RoundRobin,
    /// The less loaded of two weighted random members, by requests in flight
    /// (Apache `lbmethod=bybusyness`, nginx `least_conn`, Envoy `LEAST_REQUEST`).
    LeastRequest,
    /// Weighted random (nginx `random`, HAProxy `balance random`).
    Random,
    /// A hash of `hash_on` on a ring of the members (nginx `hash … consistent`,
    /// Envoy `RING_HASH`): the same key reaches the same member.
    ConsistentHash,
}

/// One backend (Apache's `BalancerMember`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields, remote = "Self")]
pub struct Member {
    /// Defaults to the URL's `host:port`.
    #[serde(default)]
    pub id: String,
    pub url: String,
    #[serde(default = "default_weight")]
    pub weight: u32,
    #[serde(default)]
    pub state: MemberState,
    /// The name sticky sessions know this member by (Apache `BalancerMember
    /// route=`); unique within the cluster. None: its id.
    #[serde(default)]
    pub route: Option<String>,
}

/// Whether a member takes traffic.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum MemberState {
    /// Takes its share of new requests.
    #[default]
    Active,
    /// Hot standby (Apache `status=+H`): used only when no active member is usable.
    Standby,
    /// Takes no new requests; requests in flight finish.
    Draining,
    /// Takes nothing (Apache `status=+D`).
    Disabled,
}

/// Active health checking of a cluster's members (mod_proxy_hcheck).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields, remote = "Self")]
pub struct HealthCheck {
    #[serde(default = "default_health_path")]
    pub path: String,
    #[serde(default = "default_health_interval")]
    pub interval: Dur,
    #[serde(default = "default_health_timeout")]
    pub timeout: Dur,
    #[serde(default = "default_threshold")]
    pub healthy_threshold: u32,
    #[serde(default = "default_threshold")]
    pub unhealthy_threshold: u32,
}

/// Where requests go (Apache's `ProxyPass`, `ProxyPassReverse`, `ProxyPreserveHost`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields, remote = "Self")]
pub struct Route {
    /// Taken from the path in `PUT /api/v1/routes/{name}`; required in a whole config.
    #[serde(default)]
    pub name: String,
    /// Exact host to match (no port); none matches any host.
    #[serde(default)]
    pub host: Option<String>,
    pub path_prefix: String,
    pub cluster: String,
    /// What the matched prefix becomes on the way to the member; none keeps the path as it is.
    #[serde(default)]
    pub rewrite_prefix: Option<String>,
    #[serde(default)]
    pub preserve_host: bool,
    #[serde(default)]
    pub rewrite_redirects: bool,
    /// A request on the plain listener is answered with a redirect to the
    /// same URL over `https://` (301 for GET and HEAD, 308 otherwise); on the
    /// TLS listener it is proxied as usual.
    #[serde(default)]
    pub https_redirect: bool,
    /// Response compression (nginx `gzip on`, Apache `mod_deflate`); none: off.
    #[serde(default)]
    pub compress: Option<Compress>,
    /// Rules for the request's headers on its way to the member (nginx
    /// `proxy_set_header`, Apache `RequestHeader`); none: no rule.
    #[serde(default)]
    pub request_headers: Option<HeaderRules>,
    /// Rules for the response's headers on their way to the client (nginx
    /// `add_header` / `proxy_hide_header`, Apache `Header`); none: no rule.
    #[serde(default)]
    pub response_headers: Option<HeaderRules>,
    /// The `Path=` of every `Set-Cookie` from the member that starts with
    /// `from` gets that prefix replaced by `to` (Apache `ProxyPassReverseCookiePath`).
    #[serde(default)]
    pub rewrite_cookie_path: Option<CookieRewrite>,
    /// The `Domain=` of every `Set-Cookie` from the member that is `from`
    /// (case-insensitive, a leading '.' aside) becomes `to` (Apache
    /// `ProxyPassReverseCookieDomain`).
    #[serde(default)]
    pub rewrite_cookie_domain: Option<CookieRewrite>,
}

/// One rewrite of a cookie attribute: `{"from": ..., "to": ...}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields, remote = "Self")]
pub struct CookieRewrite {
    pub from: String,
    pub to: String,
}

/// Which responses of a route are compressed, and how.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields, remote = "Self")]
pub struct Compress {
    /// The codings offered, in the server's order of preference (ties in the
    /// client's `Accept-Encoding` q-values go to the first).
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<Algorithm>,
    /// Media types compressed (matched without parameters, case-insensitive);
    /// `major/*` matches every subtype.
    #[serde(default = "default_compress_types")]
    pub types: Vec<String>,
    /// A response whose `Content-Length` is below this many bytes is sent
    /// as it is (one of unknown length is compressed).
    #[serde(default = "default_min_size")]
    pub min_size: u64,
}

/// A content coding Switchyard can compress with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Algorithm {
    /// Brotli (`br`).
    Br,
    /// Zstandard (`zstd`).
    Zstd,
    /// gzip (`gzip`).
    Gzip,
}

/// Header rules of one direction, applied in this order: `remove`, `set`
/// (replaces every value), `append` (adds a value after those there).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields, remote = "Self")]
pub struct HeaderRules {
    #[serde(default, deserialize_with = "unique_keys")]
    pub set: BTreeMap<String, String>,
    #[serde(default, deserialize_with = "unique_keys")]
    pub append: BTreeMap<String, String>,
    #[serde(default)]
    pub remove: Vec<String>,
}

crate::objects_only!(
    Config => "a config object {\"clusters\": [...], \"routes\": [...]}",
    Cluster => "a cluster object {\"members\": [...], ...}",
    RetryPolicy => "a retry object {\"max_retries\": ..., ...}",
    OutlierDetection => "an outlier_detection object {\"consecutive_failures\": ..., ...}",
    Sticky => "a sticky object {\"cookie\": ..., ...}",
    Member => "a member object {\"url\": ..., ...}",
    HealthCheck => "a health_check object {\"path\": ..., ...}",
    Route => "a route object {\"path_prefix\": ..., \"cluster\": ..., ...}",
    Compress => "a compress object {\"algorithms\": [...], \"types\": [...], \"min_size\": ...}",
    HeaderRules => "a header rules object {\"set\": {...}, \"append\": {...}, \"remove\": [...]}",
    CookieRewrite => "a cookie rewrite object {\"from\": ..., \"to\": ...}",
);
crate::serialize_as_derived!(
    Config,
    Cluster,
    RetryPolicy,
    OutlierDetection,
    Sticky,
    Member,
    HealthCheck,
    Route,
    Compress,
    HeaderRules,
    CookieRewrite
);

/// A duration written as a human string (`"500ms"`, `"2s"`, `"1m"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Dur(pub Duration);

impl Dur {
    pub const fn from_millis(ms: u64) -> Self {
        Dur(Duration::from_millis(ms))
    }

    pub fn as_millis(&self) -> u64 {
        u64::try_from(self.0.as_millis()).unwrap_or(u64::MAX)
    }
}

/// In the OpenAPI document a duration is a string, as the API reads and writes it.
#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for Dur {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::schema::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .description(Some(
                "A duration in whole milliseconds, written like \"500ms\", \"2s\" or \"1m 30s\"",
            ))
            .examples(["500ms", "2s"])
            .into()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for Dur {}

impl fmt::Display for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

impl Serialize for Dur {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        parse_duration(&text)
            .map(Dur)
            .map_err(serde::de::Error::custom)
    }
}

/// Parses a human duration (`"500ms"`, `"2s"`, `"1m 30s"`), with an error
/// that says how to write one. Durations are whole milliseconds, as the
/// replicas get them: `"1500us"` is refused rather than rounded.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let duration = humantime::parse_duration(text).map_err(|e| {
        format!(
            "invalid duration {} ({}); write it like \"500ms\" or \"2s\"",
            quoted(text),
            bounded(e.to_string())
        )
    })?;
    if duration.subsec_nanos() % 1_000_000 != 0 {
        return Err(format!(
            "invalid duration {}: durations are whole milliseconds, like \"1ms\" or \"2s\"",
            quoted(text)
        ));
    }
    Ok(duration)
}

/// A JSON object of header names to values in which no name appears twice
/// (serde's map would keep the last silently).
fn unique_keys<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<BTreeMap<String, String>, D::Error> {
    struct UniqueKeys;

    impl<'de> serde::de::Visitor<'de> for UniqueKeys {
        type Value = BTreeMap<String, String>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an object of header names to values {\"Name\": \"value\", ...}")
        }

        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut map: A,
        ) -> Result<Self::Value, A::Error> {
            let mut rules = BTreeMap::new();
            while let Some((name, value)) = map.next_entry::<String, String>()? {
                if rules.contains_key(&name) {
                    return Err(serde::de::Error::custom(format!(
                        "header {} appears twice",
                        quoted(&name)
                    )));
                }
                rules.insert(name, value);
            }
            Ok(rules)
        }
    }

    deserializer.deserialize_map(UniqueKeys)
}

/// The compressible types of `compress` when it names none: text formats,
/// JSON, JavaScript, XML, SVG, WebAssembly and uncompressed fonts. Not
/// `text/event-stream`: a stream of events lives long, holding a compressor's
/// memory for all that time, and each event is flushed on its own, so it
/// gains little; name it to have it compressed (it is flushed as it comes).
pub const DEFAULT_COMPRESS_TYPES: &[&str] = &[
    "text/html",
    "text/plain",
    "text/css",
    "text/javascript",
    "text/xml",
    "text/csv",
    "text/markdown",
    "application/json",
    "application/ld+json",
    "application/manifest+json",
    "application/problem+json",
    "application/javascript",
    "application/xml",
    "application/xhtml+xml",
    "application/rss+xml",
    "application/atom+xml",
    "application/wasm",
    "image/svg+xml",
    "font/ttf",
    "font/otf",
];

/// The default of `compress.min_size` (bytes): below it, compression costs
/// about as much as it saves (nginx's `gzip_min_length` defaults to 20
/// bytes; 1 KiB is the common advice and what CDNs use).
pub const DEFAULT_COMPRESS_MIN_SIZE: u64 = 1024;

fn default_algorithms() -> Vec<Algorithm> {
    vec![Algorithm::Br, Algorithm::Zstd, Algorithm::Gzip]
}

fn default_compress_types() -> Vec<String> {
    DEFAULT_COMPRESS_TYPES
        .iter()
        .map(|t| (*t).to_owned())
        .collect()
}

fn default_min_size() -> u64 {
    DEFAULT_COMPRESS_MIN_SIZE
}

impl Default for Compress {
    fn default() -> Self {
        Compress {
            algorithms: default_algorithms(),
            types: default_compress_types(),
            min_size: default_min_size(),
        }
    }
}

impl Algorithm {
    /// The coding's name in `Accept-Encoding` and `Content-Encoding`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Algorithm::Br => "br",
            Algorithm::Zstd => "zstd",
            Algorithm::Gzip => "gzip",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "br" => Some(Algorithm::Br),
            "zstd" => Some(Algorithm::Zstd),
            "gzip" => Some(Algorithm::Gzip),
            _ => None,
        }
    }
}

impl HeaderRules {
    /// How many rules there are.
    pub fn len(&self) -> usize {
        self.set.len() + self.append.len() + self.remove.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn default_connect_timeout() -> Dur {
    Dur(DEFAULT_CONNECT_TIMEOUT)
}

fn default_response_timeout() -> Dur {
    Dur(DEFAULT_RESPONSE_TIMEOUT)
}

fn default_retry_window() -> Dur {
    Dur(DEFAULT_RETRY_WINDOW)
}

fn default_idle_timeout() -> Dur {
    Dur(DEFAULT_IDLE_TIMEOUT)
}

fn default_retries() -> u32 {
    1
}

fn default_retry_on() -> Vec<RetryOn> {
    vec![RetryOn::Error, RetryOn::Timeout]
}

fn default_budget_percent() -> u32 {
    20
}

fn default_budget_min_per_second() -> u32 {
    10
}

fn default_consecutive_failures() -> u32 {
    5
}

fn default_base_ejection() -> Dur {
    Dur(Duration::from_secs(30))
}

fn default_max_ejection() -> Dur {
    Dur(Duration::from_secs(300))
}

fn default_max_ejected_percent() -> u32 {
    50
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_retries: default_retries(),
            retry_on: default_retry_on(),
            per_try_timeout: None,
            budget_percent: default_budget_percent(),
            budget_min_per_second: default_budget_min_per_second(),
        }
    }
}

impl Default for OutlierDetection {
    fn default() -> Self {
        OutlierDetection {
            consecutive_failures: default_consecutive_failures(),
            base_ejection: default_base_ejection(),
            max_ejection: default_max_ejection(),
            max_ejected_percent: default_max_ejected_percent(),
        }
    }
}

impl RetryOn {
    pub fn as_str(&self) -> &'static str {
        match self {
            RetryOn::Error => "error",
            RetryOn::Timeout => "timeout",
            RetryOn::Http502 => "http_502",
            RetryOn::Http503 => "http_503",
            RetryOn::Http504 => "http_504",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "error" => Some(RetryOn::Error),
            "timeout" => Some(RetryOn::Timeout),
            "http_502" => Some(RetryOn::Http502),
            "http_503" => Some(RetryOn::Http503),
            "http_504" => Some(RetryOn::Http504),
            _ => None,
        }
    }
}

fn default_weight() -> u32 {
    1
}

fn default_health_path() -> String {
    "/".to_owned()
}

fn default_health_interval() -> Dur {
    Dur(Duration::from_secs(2))
}

fn default_health_timeout() -> Dur {
    Dur(Duration::from_secs(1))
}

fn default_threshold() -> u32 {
    2
}

impl Default for HealthCheck {
    fn default() -> Self {
        HealthCheck {
            path: default_health_path(),
            interval: default_health_interval(),
            timeout: default_health_timeout(),
            healthy_threshold: default_threshold(),
            unhealthy_threshold: default_threshold(),
        }
    }
}

impl Cluster {
    /// A cluster with the documented defaults and no members.
    pub fn new(name: impl Into<String>) -> Self {
        Cluster {
            name: name.into(),
            policy: Policy::RoundRobin,
            members: Vec::new(),
            connect_timeout: default_connect_timeout(),
            response_timeout: default_response_timeout(),
            retry_window: default_retry_window(),
            idle_timeout: default_idle_timeout(),
            health_check: None,
            retry: RetryPolicy::default(),
            outlier_detection: None,
            protocol: Protocol::Http1,
            hash_on: None,
            sticky: None,
        }
    }

    pub fn member(&self, id: &str) -> Option<&Member> {
        self.members.iter().find(|m| m.id == id)
    }
}

impl Member {
    /// An active member of weight 1 whose id is left to be derived from its URL.
    pub fn new(url: impl Into<String>) -> Self {
        Member {
            id: String::new(),
            url: url.into(),
            weight: 1,
            state: MemberState::Active,
            route: None,
        }
    }
}

impl Route {
    /// A route of `path_prefix` to `cluster`, with every flag off.
    pub fn new(
        name: impl Into<String>,
        path_prefix: impl Into<String>,
        cluster: impl Into<String>,
    ) -> Self {
        Route {
            name: name.into(),
            host: None,
            path_prefix: path_prefix.into(),
            cluster: cluster.into(),
            rewrite_prefix: None,
            preserve_host: false,
            rewrite_redirects: false,
            https_redirect: false,
            compress: None,
            request_headers: None,
            response_headers: None,
            rewrite_cookie_path: None,
            rewrite_cookie_domain: None,
        }
    }
}

impl CookieRewrite {
    pub fn new(from: impl Into<String>, to: impl Into<String>) -> Self {
        CookieRewrite {
            from: from.into(),
            to: to.into(),
        }
    }
}

impl Config {
    pub fn cluster(&self, name: &str) -> Option<&Cluster> {
        self.clusters.iter().find(|c| c.name == name)
    }

    pub fn cluster_mut(&mut self, name: &str) -> Option<&mut Cluster> {
        self.clusters.iter_mut().find(|c| c.name == name)
    }

    pub fn route(&self, name: &str) -> Option<&Route> {
        self.routes.iter().find(|r| r.name == name)
    }
}

impl MemberState {
    pub fn as_str(&self) -> &'static str {
        match self {
            MemberState::Active => "active",
            MemberState::Standby => "standby",
            MemberState::Draining => "draining",
            MemberState::Disabled => "disabled",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "active" => Some(MemberState::Active),
            "standby" => Some(MemberState::Standby),
            "draining" => Some(MemberState::Draining),
            "disabled" => Some(MemberState::Disabled),
            _ => None,
        }
    }
}

impl Protocol {
    pub fn as_str(&self) -> &'static str {
        match self {
            Protocol::Http1 => "http1",
            Protocol::H2c => "h2c",
            Protocol::H2 => "h2",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "http1" => Some(Protocol::Http1),
            "h2c" => Some(Protocol::H2c),
            "h2" => Some(Protocol::H2),
            _ => None,
        }
    }

    /// Whether the members speak HTTP/2 (`h2c` or `h2`).
    pub fn is_h2(&self) -> bool {
        !matches!(self, Protocol::Http1)
    }
}

impl Policy {
    pub fn as_str(&self) -> &'static str {
        match self {
            Policy::RoundRobin => "round_robin",
            Policy::LeastRequest => "least_request",
            Policy::Random => "random",
            Policy::ConsistentHash => "consistent_hash",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "round_robin" => Some(Policy::RoundRobin),
            "least_request" => Some(Policy::LeastRequest),
            "random" => Some(Policy::Random),
            "consistent_hash" => Some(Policy::ConsistentHash),
            _ => None,
        }
    }
}
