//! The request path, in fixed steps: route → select → rewrite → forward →
//! respond (or on-error). See DESIGN.md, "The data plane's request path".

pub mod body;
pub mod compress;
pub mod request;
pub mod tunnel;
mod upgrade;

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use futures_util::FutureExt;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{PathAndQuery, Uri};
use http::{Request, Response, StatusCode, Version};
use hyper::body::Incoming;
use tracing::{Level, Span, debug, warn};

use crate::admin::metrics;
use crate::balancer;
use crate::config::table::{ClusterEntry, MemberEntry, RouteEntry, Table};
use crate::health::outlier::{self, Outcome};
use crate::proxy::body::ProxyBody;
use crate::proxy::request::RequestError;
use crate::proxy::upgrade::{Upgrade, switch};
use crate::upstream::body::{BodyProgress, ClientBodyError, UpstreamBody};
use crate::upstream::exchange::ExchangeError;
use crate::upstream::h1::ResponseHead;
use crate::upstream::retry::{self, Decision};
use crate::upstream::{Limits, Reply, SendError, h2};
use switchyard_shared::Protocol;

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_SERVER: HeaderName = HeaderName::from_static("x-forwarded-server");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
static URI_HEADER: HeaderName = HeaderName::from_static("uri");
static GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
static GRPC_MESSAGE: HeaderName = HeaderName::from_static("grpc-message");

/// The default of `--max-uri-length` (nginx's 8 KiB header line).
pub const DEFAULT_MAX_URI: usize = 8 * 1024;
/// The default of `--client-body-timeout` (nginx's `client_body_timeout`).
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(60);

/// The proxy: the current table and what every request needs besides it.
#[derive(Debug)]
pub struct Proxy {
    table: Arc<ArcSwapOption<Table>>,
    /// `X-Forwarded-Server`: this replica's name, as Apache sends its `ServerName`.
    server_name: HeaderValue,
    /// The longest request target accepted (longer: 414).
    max_uri: usize,
    /// How long a client may send nothing in the middle of its body (408).
    body_timeout: Duration,
    /// The port of `https_redirect` locations (`--tls-listen`'s; 443 is left out).
    https_port: u16,
    /// `--access-log` is on: each request's [`Served`] carries the names to log.
    access_log: bool,
}

/// What the request path tells the listener of a request it answered: where
/// its response is counted, and, with the access log on, what to log.
#[derive(Debug)]
pub struct Served {
    /// The slot of the route it matched ([`metrics::slots::NONE`]: none).
    pub route: u32,
    /// Attempts sent to members (the first included).
    pub attempts: u32,
    /// What the access log names; `None` when it is off (one check per request).
    pub names: Option<Box<Names>>,
}

/// What the access log says of a request besides what the listener knows.
#[derive(Debug, Default)]
pub struct Names {
    pub route: String,
    pub cluster: String,
    /// The member tried last (empty: none).
    pub member: String,
    /// How much of the request body was read (`None`: it had none).
    pub upload: Option<Arc<BodyProgress>>,
}

impl Served {
    /// Nothing known yet; `access_log`: the names are to be filled.
    pub fn new(access_log: bool) -> Self {
        Served {
            route: metrics::slots::NONE,
            attempts: 0,
            names: access_log.then(Box::default),
        }
    }
}

/// Why the proxy answered a request itself: put in the extensions of that
/// response only (never sent), for the access log.
#[derive(Debug, Clone)]
pub struct Refusal {
    /// `switchyard_proxy_errors_total`'s reason.
    pub reason: &'static str,
    /// The error's text; only with the access log on.
    pub detail: Option<String>,
}

/// What the proxy knows of the client connection a request came on.
#[derive(Debug, Clone)]
pub struct ClientInfo {
    /// The client's IP address, ready to be appended to `X-Forwarded-For`.
    pub ip: HeaderValue,
    /// Whether it came over TLS (`--tls-listen`): `X-Forwarded-Proto: https`,
    /// and no `https_redirect`.
    pub https: bool,
}

impl ClientInfo {
    /// The scheme the client used.
    fn scheme(&self) -> &'static str {
        if self.https { "https" } else { "http" }
    }
}

/// Why a request got no answer from a member; [`ProxyError::status`] maps it
/// to what the client sees.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("no config has been applied yet")]
    NoConfig,
    #[error("no route matches this host and path")]
    NoRoute,
    #[error("cluster {0:?} has no member that can take requests")]
    NoMember(String),
    #[error("no member of cluster {cluster:?} could be reached (last: {last})")]
    AllUnreachable { cluster: String, last: String },
    #[error("member {member:?} failed the exchange: {error}")]
    Upstream { member: String, error: String },
    #[error("member {member:?} did not answer within {limit:?}")]
    Timeout { member: String, limit: Duration },
    /// An upgrade (WebSocket) asked of a cluster whose members speak HTTP/2,
    /// over which Switchyard offers none.
    #[error(
        "cluster {0:?} speaks HTTP/2 to its members, over which upgrades (WebSocket) are not offered"
    )]
    UpgradeOverH2(String),
    #[error(transparent)]
    Request(#[from] RequestError),
    /// The client's request body was invalid or stopped coming: its fault,
    /// not the member's.
    #[error(transparent)]
    ClientBody(ClientBodyError),
}

impl ProxyError {
    /// The status a client sees: RFC 9110, and Apache where it agrees.
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::NoConfig | ProxyError::NoMember(_) | ProxyError::AllUnreachable { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ProxyError::NoRoute => StatusCode::NOT_FOUND,
            ProxyError::Upstream { .. } | ProxyError::UpgradeOverH2(_) => StatusCode::BAD_GATEWAY,
            ProxyError::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::Request(error) => error.status(),
            ProxyError::ClientBody(error) => error.status(),
        }
    }

    /// Why, as `switchyard_proxy_errors_total` and the access log name it.
    pub fn reason(&self) -> &'static str {
        match self {
            ProxyError::NoConfig => "no_config",
            ProxyError::NoRoute => "no_route",
            ProxyError::NoMember(_) => "no_member",
            ProxyError::AllUnreachable { .. } => "unreachable",
            ProxyError::Upstream { .. } | ProxyError::UpgradeOverH2(_) => "upstream",
            ProxyError::Timeout { .. } => "timeout",
            ProxyError::Request(_) => "bad_request",
            ProxyError::ClientBody(_) => "client_body",
        }
    }

    /// The gRPC status a gRPC client sees for it (gRPC's HTTP-to-gRPC
    /// mapping, with a timeout as DEADLINE_EXCEEDED).
    pub fn grpc_status(&self) -> u8 {
        match self {
            ProxyError::Timeout { .. } => 4,
            ProxyError::NoRoute => 12,
            ProxyError::Request(_) | ProxyError::ClientBody(_) => 13,
            ProxyError::NoConfig
            | ProxyError::NoMember(_)
            | ProxyError::AllUnreachable { .. }
            | ProxyError::Upstream { .. }
            | ProxyError::UpgradeOverH2(_) => 14,
        }
    }

    /// The answer to a gRPC request: a trailers-only response (200, the status
    /// in `grpc-status` and `grpc-message`), which gRPC clients read.
    fn into_grpc_response(self) -> Response<ProxyBody> {
        let mut response = Response::new(ProxyBody::Local(None));
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        headers.insert(
            GRPC_STATUS.clone(),
            HeaderValue::from(u16::from(self.grpc_status())),
        );
        if let Ok(message) = HeaderValue::try_from(grpc_message(&self.to_string())) {
            headers.insert(GRPC_MESSAGE.clone(), message);
        }
        response
    }

    /// The answer; `h1` says whether the request came over HTTP/1.x, where a
    /// client error also closes the connection (h2 has no `Connection`).
    fn into_response(self, h1: bool) -> Response<ProxyBody> {
        let status = self.status();
        let close = h1 && matches!(self, ProxyError::Request(_) | ProxyError::ClientBody(_));
        let text = format!(
            "{} {}: {self}\n",
            status.as_u16(),
            status.canonical_reason().unwrap_or("")
        );
        let mut response = Response::new(ProxyBody::local(text));
        *response.status_mut() = status;
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        if close {
            // What else the client sent on this connection cannot be trusted.
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}

impl Proxy {
    pub fn new(table: Arc<ArcSwapOption<Table>>, server_name: &str) -> Self {
        let server_name = HeaderValue::try_from(server_name)
            .unwrap_or_else(|_| HeaderValue::from_static("switchyard"));
        Proxy {
            table,
            server_name,
            max_uri: DEFAULT_MAX_URI,
            body_timeout: DEFAULT_BODY_TIMEOUT,
            https_port: 443,
            access_log: false,
        }
    }

    /// Fills each request's [`Names`] for the access log (`--access-log`).
    pub fn with_access_log(mut self, on: bool) -> Self {
        self.access_log = on;
        self
    }

    /// Sets the port `https_redirect` sends clients to (the TLS listener's).
    pub fn with_https_port(mut self, port: u16) -> Self {
        self.https_port = port;
        self
    }

    /// Sets the longest request target accepted (`--max-uri-length`).
    pub fn with_max_uri(mut self, max_uri: usize) -> Self {
        self.max_uri = max_uri;
        self
    }

    /// Sets how long a request body may stall (`--client-body-timeout`).
    pub fn with_body_timeout(mut self, timeout: Duration) -> Self {
        self.body_timeout = timeout;
        self
    }

    /// Serves one request; every failure becomes a response. What the
    /// listener needs to know of it besides the response goes into `served`.
    ///
    /// A combinator rather than an `async fn`: each `async fn` layer keeps its
    /// own copy of the request beside its callee's future, and the whole
    /// future is moved into hyper's connection (h1) or a task (h2) per request.
    pub fn handle<'a>(
        &'a self,
        request: Request<Incoming>,
        client: &'a ClientInfo,
        served: &'a mut Served,
    ) -> impl Future<Output = Response<ProxyBody>> + Send + 'a {
        let h1 = request.version() < Version::HTTP_2;
        // gRPC comes over HTTP/2 only: an HTTP/1.1 request is not looked at.
        let grpc = !h1 && is_grpc(request.headers());
        self.proxy(request, client, served).map(move |result| {
            let response = match result {
                Ok(response) => response,
                Err(error) => {
                    debug!(%error, "Request failed");
                    metrics::error(&error);
                    let refusal = Refusal {
                        reason: error.reason(),
                        detail: self.access_log.then(|| error.to_string()),
                    };
                    let mut response = if grpc {
                        error.into_grpc_response()
                    } else {
                        error.into_response(h1)
                    };
                    response.extensions_mut().insert(refusal);
                    response
                }
            };
            metrics::response(response.status());
            response
        })
    }

    async fn proxy(
        &self,
        request: Request<Incoming>,
        client: &ClientInfo,
        served: &mut Served,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let (mut parts, body) = request.into_parts();
        // A malformed request is refused whatever the table says.
        let target = request::target(&parts, self.max_uri)?;
        // The request finishes on the table it started with, whatever is swapped in meanwhile.
        let table = self.table.load_full().ok_or(ProxyError::NoConfig)?;
        let host = target.host;
        let path = target.path_and_query.path();
        let route = route(&table, host.as_ref(), &request::match_path(path))?;
        let matched = request::original_len(path, route.path_prefix.len());
        let cluster = &table.clusters[route.cluster];
        served.route = route.slot.index();
        if tracing::enabled!(Level::DEBUG) {
            let span = Span::current();
            span.record("route.name", route.name.as_str());
            span.record("cluster.name", cluster.name.as_str());
        }
        if let Some(names) = &mut served.names {
            names.route.clone_from(&route.name);
            names.cluster.clone_from(&cluster.name);
        }
        if route.https_redirect && !client.https {
            return redirect_to_https(
                &parts.method,
                host.as_ref(),
                &target.path_and_query,
                self.https_port,
            );
        }
        // What the balancer reads from the request (nothing for plain round robin).
        let affinity = cluster.balancer.affinity(
            &parts.headers,
            target.path_and_query.as_str(),
            client.ip.as_bytes(),
        );
        let upgrade = Upgrade::asked(&parts);
        // What the client accepts, as it sent it (before any rule).
        let asked = route
            .compress
            .as_deref()
            .map(|rule| compress::Asked::of(&parts.method, &parts.headers, rule));
        // gRPC needs `TE: trailers`, the one TE an HTTP/2 member may get.
        let te_trailers = cluster.protocol.is_h2() && asks_for_trailers(&parts.headers);
        if cluster.protocol.is_h2() && upgrade.is_some() {
            warn!(cluster = %cluster.name, "Upgrade refused: the cluster's members speak HTTP/2");
            return Err(ProxyError::UpgradeOverH2(cluster.name.clone()));
        }
        // Step 3, in the order that matters (CVE-2022-31813): hop-by-hop headers
        // out before anything is added; `Host` is set per member in `forward`.
        remove_hop_by_hop(&mut parts.headers);
        if te_trailers {
            parts
                .headers
                .insert(header::TE, HeaderValue::from_static("trailers"));
        }
        if let Some(upgrade) = &upgrade {
            upgrade.ask_member(&mut parts);
        }
        parts.uri = Uri::from(rewrite_path(route, &target.path_and_query, matched));
        add_forwarded(&mut parts.headers, host.as_ref(), client, &self.server_name);
        // The route's rules last: validation refused any that names a
        // hop-by-hop header, so none comes back here.
        if let Some(rules) = &route.request_headers {
            rules.apply(&mut parts.headers);
        }
        parts.version = Version::HTTP_11;
        let idempotent = retry::is_idempotent(&parts.method);
        // An HTTP/2 member may refuse a stream it did not process (REFUSED_STREAM,
        // GOAWAY): any request may then go again, so its body is kept (up to the limit).
        let replay = (idempotent && cluster.retry.max_retries > 0) || cluster.protocol.is_h2();
        let (body, progress) = UpstreamBody::from_client(body, self.body_timeout, replay);
        if let Some(names) = &mut served.names {
            names.upload.clone_from(&progress);
        }
        let request = Request::from_parts(parts, body);
        let (member, head, exchange) = forward(
            cluster,
            route,
            request,
            progress.as_deref(),
            host.as_ref(),
            idempotent,
            &affinity,
            served,
        )
        .await?;
        match (upgrade, exchange) {
            // The exchange lets a 101 through only to a request that asked to upgrade.
            (Some(upgrade), Reply::H1(exchange))
                if head.status == StatusCode::SWITCHING_PROTOCOLS =>
            {
                switch(head, exchange, &upgrade, cluster, member)
            }
            (_, exchange) => {
                let set_cookie = balancer::set_cookie(cluster, member, &affinity);
                let mut response =
                    respond(head, exchange, route, member, host.as_ref(), client, asked);
                if let Some(cookie) = set_cookie {
                    response
                        .headers_mut()
                        .append(header::SET_COOKIE, cookie.clone());
                }
                Ok(response)
            }
        }
    }
}

/// Whether a request is a gRPC call (`Content-Type: application/grpc…`).
fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|value| value.as_bytes().starts_with(b"application/grpc"))
}

/// `text` as `grpc-message` carries it: percent-encoded outside printable
/// ASCII, and `%` itself.
fn grpc_message(text: &str) -> String {
    let mut encoded = String::with_capacity(text.len());
    for byte in text.trim_end().bytes() {
        if (0x20..0x7f).contains(&byte) && byte != b'%' {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

/// Step 1: the route for the request's host and path.
fn route<'t>(
    table: &'t Table,
    host: Option<&HeaderValue>,
    path: &str,
) -> Result<&'t RouteEntry, ProxyError> {
    let host = host.and_then(|h| h.to_str().ok());
    let index = table.router.lookup(host, path).ok_or(ProxyError::NoRoute)?;
    Ok(&table.routes[index])
}

/// The path and query sent upstream: the first `matched` bytes of the path
/// (the route's prefix as the client spelled it) replaced by its `rewrite_prefix`.
fn rewrite_path(route: &RouteEntry, original: &PathAndQuery, matched: usize) -> PathAndQuery {
    match &route.rewrite_prefix {
        Some(rewrite) => replace_prefix(original.clone(), matched, rewrite),
        None => original.clone(),
    }
}

/// `original` with its first `matched` bytes (the route's prefix, which the
/// path starts with) replaced by `rewrite`. Public for the `request_rewrite`
/// fuzz target.
pub fn replace_prefix(original: PathAndQuery, matched: usize, rewrite: &str) -> PathAndQuery {
    let rest = original.as_str().get(matched..).unwrap_or("");
    let mut path = String::with_capacity(rewrite.len() + rest.len());
    path.push_str(rewrite);
    path.push_str(rest);
    // Both halves are valid path characters, so the join is too.
    PathAndQuery::try_from(path).unwrap_or(original)
}

/// Appends the client to `X-Forwarded-For` and sets `X-Forwarded-Host`,
/// `-Proto` and `-Server`, as Apache does (after [`remove_hop_by_hop`]).
fn add_forwarded(
    headers: &mut HeaderMap,
    host: Option<&HeaderValue>,
    client: &ClientInfo,
    server: &HeaderValue,
) {
    let forwarded_for = match headers.get(&X_FORWARDED_FOR) {
        Some(previous) => {
            let mut joined = Vec::with_capacity(previous.len() + 2 + client.ip.len());
            joined.extend_from_slice(previous.as_bytes());
            joined.extend_from_slice(b", ");
            joined.extend_from_slice(client.ip.as_bytes());
            HeaderValue::from_bytes(&joined).unwrap_or_else(|_| client.ip.clone())
        }
        None => client.ip.clone(),
    };
    headers.insert(X_FORWARDED_FOR.clone(), forwarded_for);
    match host {
        Some(host) => headers.insert(X_FORWARDED_HOST.clone(), host.clone()),
        None => headers.remove(&X_FORWARDED_HOST),
    };
    headers.insert(
        X_FORWARDED_PROTO.clone(),
        HeaderValue::from_static(client.scheme()),
    );
    headers.insert(X_FORWARDED_SERVER.clone(), server.clone());
}

/// A route's `https_redirect` on the plain listener: the same host (its port
/// replaced by `port`, left out if 443), path and query over `https://`; 301
/// for GET and HEAD (what nginx's `return 301` sends), 308 for the other
/// methods so the client repeats the method and its body.
fn redirect_to_https(
    method: &http::Method,
    host: Option<&HeaderValue>,
    path_and_query: &PathAndQuery,
    port: u16,
) -> Result<Response<ProxyBody>, ProxyError> {
    let host = host
        .and_then(|h| h.to_str().ok())
        .ok_or(RequestError::NoHost)?;
    let name = host_without_port(host);
    let location = if port == 443 {
        format!("https://{name}{path_and_query}")
    } else {
        format!("https://{name}:{port}{path_and_query}")
    };
    let value = HeaderValue::try_from(&location).map_err(|_| RequestError::InvalidHost)?;
    let status = if *method == http::Method::GET || *method == http::Method::HEAD {
        StatusCode::MOVED_PERMANENTLY
    } else {
        StatusCode::PERMANENT_REDIRECT
    };
    let mut response = Response::new(ProxyBody::local(format!(
        "{} {}: {location}\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    )));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::LOCATION, value);
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    Ok(response)
}

/// `example.com:8000` → `example.com`; `[::1]:8000` → `[::1]`.
fn host_without_port(host: &str) -> &str {
    if host.starts_with('[') {
        return match host.find(']') {
            Some(end) => &host[..=end],
            None => host,
        };
    }
    match host.rsplit_once(':') {
        Some((name, _)) => name,
        None => host,
    }
}

/// Whether the client's `TE` names `trailers` (read before the hop-by-hop
/// headers go).
fn asks_for_trailers(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::TE)
        .iter()
        .flat_map(|value| value.as_bytes().split(|&b| b == b','))
        .any(|token| {
            let name = token.split(|&b| b == b';').next().unwrap_or_default();
            name.trim_ascii().eq_ignore_ascii_case(b"trailers")
        })
}

/// Removes `Connection` and every header it names, and the other hop-by-hop headers.
pub fn remove_hop_by_hop(headers: &mut HeaderMap) {
    // One pass over the few names there are, noting which hop-by-hop ones
    // are there: only those are looked up again, to be removed.
    let mut present = 0u8;
    for name in headers.keys() {
        if name == header::CONNECTION {
            present |= 1;
        } else if let Some(at) = HOP_BY_HOP.iter().position(|&hop| name == hop) {
            present |= 2 << at;
        }
    }
    if present == 0 {
        return;
    }
    if present & 1 != 0 {
        // `Connection` may come as several lines; every one of them counts.
        // The names it usually holds (`close`, `keep-alive`, `upgrade`) are
        // hop-by-hop anyway: no name is made (nor a list allocated) for them.
        let mut named = Vec::new();
        for value in headers.get_all(header::CONNECTION) {
            for token in value.as_bytes().split(|&b| b == b',') {
                let token = token.trim_ascii();
                if token.is_empty()
                    || token.eq_ignore_ascii_case(b"close")
                    || HOP_BY_HOP
                        .iter()
                        .any(|hop| token.eq_ignore_ascii_case(hop.as_str().as_bytes()))
                {
                    continue;
                }
                if let Ok(name) = HeaderName::from_bytes(token) {
                    named.push(name);
                }
            }
        }
        for name in named {
            headers.remove(name);
        }
        headers.remove(header::CONNECTION);
    }
    for (at, name) in HOP_BY_HOP.iter().enumerate() {
        if present & (2 << at) != 0 {
            headers.remove(*name);
        }
    }
}

/// The hop-by-hop headers besides `Connection` (RFC 9110, 7.6.1). Not
/// `Trailer`: it is end to end (RFC 9110, 6.6.2), and hyper sends an HTTP/1.1
/// client only the trailers a response's `Trailer` names.
static HOP_BY_HOP: [&HeaderName; 5] = [
    &KEEP_ALIVE,
    &PROXY_CONNECTION,
    &header::TE,
    &header::TRANSFER_ENCODING,
    &header::UPGRADE,
];

/// Steps 2 and 4: pick a member and send it the request; a failed attempt
/// goes to another member when [`retry::may_retry`] says it may.
// What it reads of the request is passed one by one, borrowed from `proxy`'s
// frame: a struct of them would be built and moved once more per request.
#[allow(clippy::too_many_arguments)]
async fn forward<'t>(
    cluster: &'t ClusterEntry,
    route: &RouteEntry,
    mut request: Request<UpstreamBody>,
    progress: Option<&BodyProgress>,
    host: Option<&HeaderValue>,
    idempotent: bool,
    affinity: &balancer::Affinity,
    served: &mut Served,
) -> Result<(&'t MemberEntry, ResponseHead, Reply), ProxyError> {
    let policy = &cluster.retry;
    let budget = &cluster.shared.retry_budget;
    budget.request();
    let mut limits = Limits {
        head_timeout: policy
            .per_try_timeout
            .map_or(cluster.response_timeout, |t| {
                t.0.min(cluster.response_timeout)
            }),
        idle: cluster.idle_timeout,
        progress,
        fresh: false,
    };
    // Retrying on a status needs the request again once it was sent: kept
    // only where the policy names a status.
    let spare = (idempotent && retries_statuses(policy)).then(|| request_head(&request));
    let mut tried = Vec::new();
    let mut retries = 0;
    // What the client sees if no member is left to try.
    let mut last_error = None;
    loop {
        // After a pooled connection failed, the same member gets a fresh one.
        let index = match (limits.fresh, tried.last()) {
            (true, Some(&last)) => Some(last),
            _ => balancer::pick(cluster, &tried, affinity),
        };
        let Some(index) = index else {
            return Err(last_error.unwrap_or_else(|| ProxyError::NoMember(cluster.name.clone())));
        };
        if !limits.fresh {
            tried.push(index);
        }
        let member = &cluster.members[index];
        let slot = member.shared.slot.index();
        served.attempts += 1;
        if let Some(names) = &mut served.names {
            names.member.clone_from(&member.shared.id);
        }
        if tracing::enabled!(Level::DEBUG) {
            Span::current().record("member.id", member.shared.id.as_str());
        }
        let host_header = match (&route.host_override, route.preserve_host, host) {
            (Some(set), _, _) => set.clone(),
            (None, true, Some(host)) => host.clone(),
            _ => member.shared.host_header.clone(),
        };
        request.headers_mut().insert(header::HOST, host_header);
        let in_flight = cluster.balancer.in_flight(member);
        // The cluster's protocol, decided when the table was compiled.
        let sent = match cluster.protocol {
            Protocol::Http1 => match member.shared.send(request, &limits).await {
                Ok((head, exchange)) => Ok((head, Reply::H1(exchange))),
                Err(error) => Err(error),
            },
            Protocol::H2c | Protocol::H2 => {
                match Box::pin(h2::send(&member.shared, request, &limits)).await {
                    Ok((head, exchange)) => Ok((head, Reply::H2(exchange))),
                    Err(error) => Err(error),
                }
            }
        };
        let failure = match sent {
            Ok((head, mut exchange)) => {
                metrics::member_response(slot, head.status);
                exchange.hold(in_flight);
                outlier::observe(cluster, member, Outcome::of_status(head.status));
                let again = match &spare {
                    Some(parts)
                        if head.status.is_server_error()
                            && retries < policy.max_retries
                            && exchange.replayable()
                            && balancer::has_candidate(cluster, &tried) =>
                    {
                        let failure = retry::Failure::Status(head.status);
                        let sent = retry::Sent {
                            written: true,
                            replayable: true,
                        };
                        retry::may_retry(policy, failure, sent, budget) == Decision::Retry
                    }
                    _ => false,
                };
                let (Some(parts), true) = (&spare, again) else {
                    return Ok((member, head, exchange));
                };
                let Some(body) = exchange.into_replay() else {
                    return Err(ProxyError::Upstream {
                        member: member.shared.id.clone(),
                        error: "the request could not be sent again".to_owned(),
                    });
                };
                debug!(cluster = %cluster.name, member.id = %member.shared.id, status = %head.status, "Trying another member");
                metrics::retry(metrics::Retry::Status);
                retries += 1;
                limits.fresh = false;
                request = rebuild(parts, body);
                continue;
            }
            Err(SendError::Connect {
                request: unsent,
                error,
            }) => {
                let why = error.to_string();
                warn!(cluster = %cluster.name, member.id = %member.shared.id, error = %why, "Member could not be reached");
                metrics::connect_failure(&error);
                metrics::member_failure(slot, metrics::Failure::Connect);
                outlier::observe(cluster, member, Outcome::ConnectFailure(&why));
                last_error = Some(ProxyError::AllUnreachable {
                    cluster: cluster.name.clone(),
                    last: format!("{}: {why}", member.shared.id),
                });
                request = *unsent;
                limits.fresh = false;
                continue;
            }
            Err(SendError::Exchange {
                error,
                written,
                answered,
                reused,
                replay,
            }) => (error, written, answered, reused, replay),
        };
        let (error, written, answered, reused, replay) = failure;
        let failure = match &error {
            ExchangeError::Client(error) => return Err(ProxyError::ClientBody(*error)),
            ExchangeError::Timeout(_) => retry::Failure::Timeout,
            ExchangeError::Closed
            | ExchangeError::Read(_)
            | ExchangeError::Write(_)
            | ExchangeError::Stream(_)
                if !answered =>
            {
                retry::Failure::Broken
            }
            _ => {
                let why = error_chain(&error);
                metrics::member_failure(slot, metrics::Failure::Broken);
                outlier::observe(cluster, member, Outcome::ExchangeFailure(&why));
                return Err(upstream_error(cluster, member, &error));
            }
        };
        match failure {
            retry::Failure::Timeout => {
                metrics::member_failure(slot, metrics::Failure::Timeout);
                outlier::observe(cluster, member, Outcome::Timeout);
            }
            // A pooled connection the member had closed says nothing of the member.
            _ if reused => {}
            _ => {
                metrics::member_failure(slot, metrics::Failure::Broken);
                outlier::observe(
                    cluster,
                    member,
                    Outcome::ExchangeFailure(&error.to_string()),
                );
            }
        }
        let sent = retry::Sent {
            written,
            replayable: idempotent && replay.is_some(),
        };
        let decision = if written && retries >= policy.max_retries {
            Decision::No
        } else {
            retry::may_retry(policy, failure, sent, budget)
        };
        match (decision, replay) {
            (Decision::Retry, Some(again)) => {
                debug!(cluster = %cluster.name, member.id = %member.shared.id, error = %error, reused, "Trying again");
                metrics::retry(match failure {
                    retry::Failure::Timeout => metrics::Retry::Timeout,
                    _ => metrics::Retry::Error,
                });
                if written {
                    retries += 1;
                }
                last_error = Some(upstream_error(cluster, member, &error));
                // A pooled connection the member had closed says nothing of the member.
                limits.fresh = reused && failure == retry::Failure::Broken;
                request = *again;
            }
            (decision, _) => {
                if decision == Decision::OverBudget {
                    metrics::retry(metrics::Retry::OverBudget);
                }
                return Err(upstream_error(cluster, member, &error));
            }
        }
    }
}

/// Whether the policy retries on a status.
fn retries_statuses(policy: &switchyard_shared::RetryPolicy) -> bool {
    use switchyard_shared::RetryOn;
    policy
        .retry_on
        .iter()
        .any(|on| matches!(on, RetryOn::Http502 | RetryOn::Http503 | RetryOn::Http504))
}

/// A copy of a request's head, to send it again.
fn request_head(request: &Request<UpstreamBody>) -> http::request::Parts {
    let mut head = Request::new(());
    *head.method_mut() = request.method().clone();
    *head.uri_mut() = request.uri().clone();
    *head.version_mut() = request.version();
    *head.headers_mut() = request.headers().clone();
    head.into_parts().0
}

fn rebuild(parts: &http::request::Parts, body: UpstreamBody) -> Request<UpstreamBody> {
    let mut request = Request::new(body);
    *request.method_mut() = parts.method.clone();
    *request.uri_mut() = parts.uri.clone();
    *request.version_mut() = parts.version;
    *request.headers_mut() = parts.headers.clone();
    request
}

/// The error a client sees for a failed exchange with `member`, logged.
fn upstream_error(
    cluster: &ClusterEntry,
    member: &MemberEntry,
    error: &ExchangeError,
) -> ProxyError {
    let id = member.shared.id.clone();
    if let ExchangeError::Timeout(limit) = error {
        warn!(cluster = %cluster.name, member.id = %id, "Member did not answer in time");
        return ProxyError::Timeout {
            member: id,
            limit: *limit,
        };
    }
    let why = error_chain(error);
    warn!(cluster = %cluster.name, member.id = %id, error = %why, "Member failed the exchange");
    ProxyError::Upstream {
        member: id,
        error: why,
    }
}

/// An error and its sources, on one line.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Step 5: the member's response on its way back, hop-by-hop headers removed,
/// its redirects (and cookies' `Path`/`Domain`) rewritten to the client-facing
/// address when asked, then the route's response header rules, then
/// compression (which sees the headers as the rules left them).
fn respond(
    head: ResponseHead,
    exchange: Reply,
    route: &RouteEntry,
    member: &MemberEntry,
    host: Option<&HeaderValue>,
    client: &ClientInfo,
    asked: Option<compress::Asked>,
) -> Response<ProxyBody> {
    let mut response = Response::new(ProxyBody::from(exchange));
    *response.status_mut() = head.status;
    *response.headers_mut() = head.headers;
    let (mut parts, body) = response.into_parts();
    remove_hop_by_hop(&mut parts.headers);
    if route.rewrite_redirects
        && let Some(host) = host.and_then(|h| h.to_str().ok())
    {
        for name in [&header::LOCATION, &header::CONTENT_LOCATION, &URI_HEADER] {
            let rewritten = parts
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .and_then(|value| rewrite_location(value, route, member, host, client.scheme()))
                .and_then(|value| HeaderValue::try_from(value).ok());
            if let Some(value) = rewritten {
                parts.headers.insert(name.clone(), value);
            }
        }
    }
    if let Some(cookies) = &route.rewrite_cookies {
        cookies.apply(&mut parts.headers);
    }
    if let Some(rules) = &route.response_headers {
        rules.apply(&mut parts.headers);
    }
    let response = Response::from_parts(parts, body);
    match (route.compress.as_deref(), asked) {
        (Some(rule), Some(asked)) => compress::respond(response, rule, asked),
        _ => response,
    }
}

/// Apache's `ProxyPassReverse`: a URL of the member becomes the same URL as the
/// client sees it (its host, the route's prefix in place of the rewritten one).
fn rewrite_location(
    value: &str,
    route: &RouteEntry,
    member: &MemberEntry,
    host: &str,
    scheme: &str,
) -> Option<String> {
    let upstream_prefix = route
        .rewrite_prefix
        .as_deref()
        .unwrap_or(&route.path_prefix);
    let base = &member.shared.base_url;
    let (origin, rest) = match value.get(..base.len()) {
        Some(head) if head.eq_ignore_ascii_case(base) => {
            (format!("{scheme}://{host}"), &value[base.len()..])
        }
        _ if route.rewrite_prefix.is_some()
            && value.starts_with('/')
            && !value.starts_with("//") =>
        {
            (String::new(), value)
        }
        _ => return None,
    };
    if !(rest.is_empty() || rest.starts_with('/')) {
        // `http://member:80800` is not the member's URL.
        return None;
    }
    match rest.strip_prefix(upstream_prefix) {
        Some(tail) => Some(format!("{origin}{}{tail}", route.path_prefix)),
        None if origin.is_empty() => None,
        None => Some(format!("{origin}{rest}")),
    }
}

#[cfg(test)]
mod tests;
