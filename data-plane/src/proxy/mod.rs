//! The request path, in fixed steps: route → select → rewrite → forward →
//! respond (or on-error). See DESIGN.md, "The data plane's request path".

pub mod body;

use std::sync::Arc;

use arc_swap::ArcSwapOption;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{PathAndQuery, Uri};
use http::{Request, Response, StatusCode, Version};
use hyper::body::Incoming;
use tracing::{debug, warn};

use crate::admin::metrics;
use crate::balancer;
use crate::config::table::{ClusterEntry, MemberEntry, RouteEntry, Table};
use crate::proxy::body::ProxyBody;
use crate::upstream::SendError;
use crate::upstream::body::{BodyProgress, UpstreamBody};
use crate::upstream::exchange::Exchange;
use crate::upstream::h1::ResponseHead;

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_SERVER: HeaderName = HeaderName::from_static("x-forwarded-server");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
static URI_HEADER: HeaderName = HeaderName::from_static("uri");

/// The proxy: the current table and what every request needs besides it.
#[derive(Debug)]
pub struct Proxy {
    table: Arc<ArcSwapOption<Table>>,
    /// `X-Forwarded-Server`: this replica's name, as Apache sends its `ServerName`.
    server_name: HeaderValue,
}

/// What the proxy knows of the client connection a request came on.
#[derive(Debug, Clone)]
pub struct ClientInfo {
    /// The client's IP address, ready to be appended to `X-Forwarded-For`.
    pub ip: HeaderValue,
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
    #[error("every member of cluster {cluster:?} refused the connection (last: {last})")]
    AllRefused { cluster: String, last: String },
    #[error("member {member:?} failed the exchange: {error}")]
    Upstream { member: String, error: String },
    #[error("member {0:?} did not answer in time")]
    Timeout(String),
}

impl ProxyError {
    /// The status a client sees: RFC 9110, and Apache where it agrees.
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::NoConfig | ProxyError::NoMember(_) | ProxyError::AllRefused { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ProxyError::NoRoute => StatusCode::NOT_FOUND,
            ProxyError::Upstream { .. } => StatusCode::BAD_GATEWAY,
            ProxyError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    fn into_response(self) -> Response<ProxyBody> {
        let status = self.status();
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
        response
    }
}

impl Proxy {
    pub fn new(table: Arc<ArcSwapOption<Table>>, server_name: &str) -> Self {
        let server_name = HeaderValue::try_from(server_name)
            .unwrap_or_else(|_| HeaderValue::from_static("switchyard"));
        Proxy { table, server_name }
    }

    /// Serves one request; every failure becomes a response.
    pub async fn handle(
        &self,
        request: Request<Incoming>,
        client: &ClientInfo,
    ) -> Response<ProxyBody> {
        let response = match self.proxy(request, client).await {
            Ok(response) => response,
            Err(error) => {
                debug!(%error, "Request failed");
                metrics::error(&error);
                error.into_response()
            }
        };
        metrics::response(response.status());
        response
    }

    async fn proxy(
        &self,
        request: Request<Incoming>,
        client: &ClientInfo,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        // The request finishes on the table it started with, whatever is swapped in meanwhile.
        let table = self.table.load_full().ok_or(ProxyError::NoConfig)?;
        let (mut parts, body) = request.into_parts();
        let host = client_host(&parts);
        let route = route(&table, host.as_ref(), parts.uri.path())?;
        let cluster = &table.clusters[route.cluster];
        // Step 3, in the order that matters (CVE-2022-31813): hop-by-hop headers
        // out before anything is added; `Host` is set per member in `forward`.
        remove_hop_by_hop(&mut parts.headers);
        parts.uri = Uri::from(rewrite_path(route, &parts.uri));
        add_forwarded(&mut parts.headers, host.as_ref(), client, &self.server_name);
        parts.version = Version::HTTP_11;
        let (body, progress) = UpstreamBody::from_client(body);
        let request = Request::from_parts(parts, body);
        let (member, head, exchange) =
            forward(cluster, route, request, progress, host.as_ref()).await?;
        Ok(respond(head, exchange, route, member, host.as_ref()))
    }
}

/// The host the client asked for: the `Host` header, or the URI's authority (HTTP/2).
fn client_host(parts: &http::request::Parts) -> Option<HeaderValue> {
    if let Some(host) = parts.headers.get(header::HOST) {
        return Some(host.clone());
    }
    parts
        .uri
        .authority()
        .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
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

/// The path and query sent upstream: the route's prefix replaced by its `rewrite_prefix`.
fn rewrite_path(route: &RouteEntry, uri: &Uri) -> PathAndQuery {
    let original = uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    match &route.rewrite_prefix {
        Some(rewrite) => replace_prefix(original, &route.path_prefix, rewrite),
        None => original,
    }
}

/// `original` with its first `prefix.len()` bytes (the route's prefix, which
/// the path starts with) replaced by `rewrite`. Public for the
/// `request_rewrite` fuzz target.
pub fn replace_prefix(original: PathAndQuery, prefix: &str, rewrite: &str) -> PathAndQuery {
    let rest = original.as_str().get(prefix.len()..).unwrap_or("");
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
    headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static("http"));
    headers.insert(X_FORWARDED_SERVER.clone(), server.clone());
}

/// Removes `Connection` and every header it names, and the other hop-by-hop headers.
pub fn remove_hop_by_hop(headers: &mut HeaderMap) {
    // One pass over the few headers there are, rather than a lookup per name.
    if !headers.keys().any(is_hop_by_hop) {
        return;
    }
    if headers.contains_key(header::CONNECTION) {
        // `Connection` may come as several lines; every one of them counts.
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .flat_map(|value| value.as_bytes().split(|&b| b == b','))
            .filter_map(|name| HeaderName::from_bytes(name.trim_ascii()).ok())
            .collect();
        for name in named {
            headers.remove(name);
        }
        headers.remove(header::CONNECTION);
    }
    for name in HOP_BY_HOP {
        if headers.contains_key(name) {
            headers.remove(name);
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

fn is_hop_by_hop(name: &HeaderName) -> bool {
    name == header::CONNECTION || HOP_BY_HOP.contains(&name)
}

/// Steps 2 and 4: pick a member and send it the request; a failed connect
/// leaves that member out for its retry window and the request, which was not
/// sent, goes to another member.
async fn forward<'t>(
    cluster: &'t ClusterEntry,
    route: &RouteEntry,
    mut request: Request<UpstreamBody>,
    progress: Option<Arc<BodyProgress>>,
    host: Option<&HeaderValue>,
) -> Result<(&'t MemberEntry, ResponseHead, Exchange), ProxyError> {
    let mut tried = Vec::new();
    let mut last_refusal = None;
    loop {
        let Some(index) = balancer::pick(cluster, &tried) else {
            return Err(match last_refusal {
                Some(last) => ProxyError::AllRefused {
                    cluster: cluster.name.clone(),
                    last,
                },
                None => ProxyError::NoMember(cluster.name.clone()),
            });
        };
        let member = &cluster.members[index];
        let host_header = match (route.preserve_host, host) {
            (true, Some(host)) => host.clone(),
            _ => member.shared.host_header.clone(),
        };
        request.headers_mut().insert(header::HOST, host_header);
        let sent = exchange(
            member,
            request,
            cluster.response_timeout,
            progress.as_deref(),
        )
        .await;
        match sent {
            Ok(Ok((head, exchange))) => {
                member.shared.mark_ok();
                return Ok((member, head, exchange));
            }
            Ok(Err(SendError::Connect {
                request: unsent,
                error,
            })) => {
                let why = error.to_string();
                warn!(cluster = %cluster.name, member.id = %member.shared.id, error = %why, "Member refused the connection");
                member.shared.mark_failed(cluster.retry_window, why.clone());
                last_refusal = Some(format!("{}: {why}", member.shared.id));
                tried.push(index);
                request = *unsent;
            }
            Ok(Err(SendError::Exchange(error))) => {
                let why = error_chain(&error);
                warn!(cluster = %cluster.name, member.id = %member.shared.id, error = %why, "Member failed the exchange");
                return Err(ProxyError::Upstream {
                    member: member.shared.id.clone(),
                    error: why,
                });
            }
            Err(_) => {
                warn!(cluster = %cluster.name, member.id = %member.shared.id, "Member did not answer in time");
                return Err(ProxyError::Timeout(member.shared.id.clone()));
            }
        }
    }
}

/// Sends a request to a member and waits for its answer, for at most
/// `timeout` from when the request body was sent in full: a slow upload from
/// the client is not the member's slowness (Apache's `timeout`, nginx's
/// `proxy_read_timeout`).
async fn exchange(
    member: &MemberEntry,
    request: Request<UpstreamBody>,
    timeout: std::time::Duration,
    progress: Option<&BodyProgress>,
) -> Result<Result<(ResponseHead, Exchange), SendError>, tokio::time::error::Elapsed> {
    let send = member.shared.send(request);
    tokio::pin!(send);
    if let Some(progress) = progress {
        tokio::select! {
            biased;
            sent = &mut send => return Ok(sent),
            () = progress.finished() => {}
        }
    }
    tokio::time::timeout(timeout, send).await
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

/// Step 5: the member's response on its way back, hop-by-hop headers removed
/// and its redirects rewritten to the client-facing address when asked.
fn respond(
    head: ResponseHead,
    exchange: Exchange,
    route: &RouteEntry,
    member: &MemberEntry,
    host: Option<&HeaderValue>,
) -> Response<ProxyBody> {
    let mut response = Response::new(ProxyBody::Upstream(exchange));
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
                .and_then(|value| rewrite_location(value, route, member, host))
                .and_then(|value| HeaderValue::try_from(value).ok());
            if let Some(value) = rewritten {
                parts.headers.insert(name.clone(), value);
            }
        }
    }
    Response::from_parts(parts, body)
}

/// Apache's `ProxyPassReverse`: a URL of the member becomes the same URL as the
/// client sees it (its host, the route's prefix in place of the rewritten one).
fn rewrite_location(
    value: &str,
    route: &RouteEntry,
    member: &MemberEntry,
    host: &str,
) -> Option<String> {
    let upstream_prefix = route
        .rewrite_prefix
        .as_deref()
        .unwrap_or(&route.path_prefix);
    let base = &member.shared.base_url;
    let (origin, rest) = match value.get(..base.len()) {
        Some(head) if head.eq_ignore_ascii_case(base) => {
            (format!("http://{host}"), &value[base.len()..])
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
