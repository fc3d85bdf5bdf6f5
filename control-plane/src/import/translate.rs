//! The directives tree turned into a [`Config`]: `<Proxy balancer://…>` and
//! direct `ProxyPass` URLs become clusters, each `ProxyPass` (per host of its
//! `VirtualHost`) a route. Every directive is either translated or named in a
//! warning saying why not; a value Apache would refuse is an [`ImportError`].
//!
//! Settings that Apache merges per scope (`ProxyPreserveHost`, `ProxyTimeout`,
//! the cookie rewrites, `ProxyPassReverse`) are gathered while walking and
//! applied at the end, so their order in the file does not matter, as in Apache.
//!
//! Here: the walk over sections and the directive dispatch. `pass`:
//! `ProxyPass` and its kin; `balancer`: `BalancerMember`, `ProxySet`;
//! `params`: their `key=value`s; `routes`: the end (routes, clusters,
//! whole-config checks).

mod balancer;
mod params;
mod pass;
mod routes;

use std::collections::{HashMap, HashSet};

use switchyard_shared::text::quoted;
use switchyard_shared::validate::{normalize_route, parse_member_url, validate_config};
use switchyard_shared::{Cluster, Config, CookieRewrite, Dur, Member, Route};

use super::parser::Node;
use super::pattern::prefix_mapping;
use super::{ImportError, Imported, Location, Warning};

pub use params::parse_apache_duration;

/// Translates the (includes expanded) tree of every file read.
pub fn translate(nodes: &[Node]) -> Result<Imported, ImportError> {
    let mut t = Translator::default();
    t.scopes.push(Scope::new("default"));
    t.walk(nodes, 0, Context::Server)?;
    t.finish()
}

/// Where a directive stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Context {
    /// The main server or a `<VirtualHost>`.
    Server,
    /// A `<Location>`: index into `Translator::locations`.
    Location(usize),
    /// A `<Proxy balancer://…>`: index into `Translator::clusters`.
    Balancer(usize),
    /// A `<Proxy URL>` of one worker (not a balancer): index into
    /// `Translator::workers`.
    Worker(usize),
}

/// The main server (0) or one `<VirtualHost>`.
#[derive(Debug)]
struct Scope {
    label: String,
    server_name: Option<String>,
    aliases: Vec<String>,
    preserve_host: Option<bool>,
    proxy_timeout: Option<(Dur, Location)>,
    cookie_path: Option<CookieRewrite>,
    cookie_domain: Option<CookieRewrite>,
    /// `ProxyPassReverse`s to match with the scope's `ProxyPass`es at the end.
    reverse: Vec<(String, String, Location)>,
    /// Cookie names that a `Header add Set-Cookie "NAME=.%{BALANCER_WORKER_ROUTE}e…"` sets.
    route_cookies: Vec<(String, Location)>,
    rewrite_engine: bool,
    /// A `RewriteCond` waits for the next `RewriteRule`.
    rewrite_cond: Option<Location>,
}

impl Scope {
    fn new(label: &str) -> Self {
        Scope {
            label: label.to_owned(),
            server_name: None,
            aliases: Vec::new(),
            preserve_host: None,
            proxy_timeout: None,
            cookie_path: None,
            cookie_domain: None,
            reverse: Vec::new(),
            route_cookies: Vec::new(),
            rewrite_engine: false,
            rewrite_cond: None,
        }
    }
}

/// A `<Location path>`'s own settings.
#[derive(Debug, Default)]
struct LocationSettings {
    path: String,
    preserve_host: Option<bool>,
    cookie_path: Option<CookieRewrite>,
    cookie_domain: Option<CookieRewrite>,
}

/// A cluster being built.
#[derive(Debug)]
pub(super) struct Draft {
    pub cluster: Cluster,
    /// Where it was first named.
    pub at: Location,
    /// A `balancer://` (defined by `<Proxy>` or `BalancerMember`), or the one
    /// member of a direct `ProxyPass` URL.
    pub balancer: bool,
    pub defined: bool,
    /// Each member's path (Apache appends the request's path to it).
    pub member_paths: Vec<String>,
    /// The first value (and where) of each cluster-wide setting a member gave.
    pub set_by: HashMap<&'static str, (String, Location)>,
    pub timeout_set: bool,
    pub health: params::HealthDraft,
    pub lbmethod: Option<(String, Location)>,
    pub sticky: Option<(String, Location)>,
}

/// One `ProxyPass` (or its regex or rewrite twin), before it is one route per host.
#[derive(Debug)]
struct Mapping {
    scope: usize,
    location: Option<usize>,
    path: String,
    cluster: usize,
    /// The path the prefix becomes at the member (before the member's own path).
    target: String,
    at: Location,
    /// The URL as written (for `ProxyPassReverse`).
    url: String,
}

#[derive(Debug, Default)]
struct Translator {
    scopes: Vec<Scope>,
    locations: Vec<LocationSettings>,
    clusters: Vec<Draft>,
    /// Balancer name, or `scheme://authority` of a direct worker → cluster index.
    by_key: HashMap<String, usize>,
    mappings: Vec<Mapping>,
    /// The URLs of `<Proxy URL>` sections.
    workers: Vec<String>,
    warnings: Vec<Warning>,
}

/// A directive without an argument it needs (Apache refuses it at start).
fn arity(node: &Node, min: usize, max: usize, usage: &str) -> Result<(), ImportError> {
    if node.args.len() < min || node.args.len() > max {
        return Err(ImportError::new(
            &node.at,
            format!("{} takes {usage}", node.name),
        ));
    }
    Ok(())
}

fn on_off(node: &Node) -> Result<bool, ImportError> {
    arity(node, 1, 1, "On or Off")?;
    match node.args[0].to_ascii_lowercase().as_str() {
        "on" => Ok(true),
        "off" => Ok(false),
        _ => Err(ImportError::new(
            &node.at,
            format!(
                "{} must be On or Off, not {}",
                node.name,
                quoted(&node.args[0])
            ),
        )),
    }
}

/// Counts the directives in a section, for a warning about all of them.
fn count(nodes: &[Node]) -> usize {
    nodes
        .iter()
        .map(|n| 1 + n.children.as_deref().map_or(0, count))
        .sum()
}

/// Why a directive Switchyard does not translate is left out.
fn why_not(name: &str) -> &'static str {
    match name.to_ascii_lowercase().as_str() {
        "listen" => "the replica's --listen flag sets the address",
        "loadmodule" | "addmodule" => "modules are built in",
        "errorlog" | "customlog" | "loglevel" | "logformat" | "transferlog" => {
            "logging is the replicas' own (--log-format, /metrics)"
        }
        "documentroot" | "directoryindex" | "alias" | "scriptalias" | "options"
        | "allowoverride" | "addtype" | "addhandler" => {
            "Switchyard serves no files of its own; only proxied paths are imported"
        }
        "require" | "order" | "allow" | "deny" | "satisfy" | "authtype" | "authname"
        | "authuserfile" => "access control is not translated; put it in front or in the member",
        "serveradmin" | "serversignature" | "servertokens" | "user" | "group" | "pidfile"
        | "mutex" | "defaultruntimedir" => "process settings of Apache itself",
        "timeout" | "keepalive" | "keepalivetimeout" | "maxkeepaliverequests" => {
            "client connection limits are replica flags (--client-header-timeout, --client-keepalive-timeout)"
        }
        "header" | "requestheader" => "header rules are not translated",
        "redirect" | "redirectmatch" | "redirectpermanent" => "redirects are not translated",
        name if name.starts_with("ssl") => {
            "TLS settings are not translated (the replica's own TLS flags are separate)"
        }
        _ => "Switchyard has no equivalent",
    }
}

impl Translator {
    fn warn(&mut self, at: &Location, message: impl Into<String>) {
        self.warnings.push(Warning {
            at: at.clone(),
            message: message.into(),
        });
    }

    fn not_translated(&mut self, node: &Node) {
        let what = match &node.children {
            Some(children) => format!(
                "<{}> section (and the {} directives inside) not translated",
                node.name,
                count(children)
            ),
            None => format!("{} not translated", node.name),
        };
        let why = why_not(&node.name);
        self.warn(&node.at, format!("{what}: {why}"));
    }

    fn walk(&mut self, nodes: &[Node], scope: usize, context: Context) -> Result<(), ImportError> {
        for node in nodes {
            if node.children.is_some() {
                self.section(node, scope, context)?;
            } else {
                self.directive(node, scope, context)?;
            }
        }
        Ok(())
    }

    fn section(&mut self, node: &Node, scope: usize, context: Context) -> Result<(), ImportError> {
        let children = node.children.as_deref().unwrap_or_default();
        let name = node.name.to_ascii_lowercase();
        match name.as_str() {
            "ifmodule" => {
                arity(node, 1, 1, "one module name")?;
                if node.args[0].starts_with('!') {
                    self.warn(
                        &node.at,
                        format!(
                            "<IfModule {}> skipped: every module is taken as present ({} directives inside not read)",
                            node.args[0],
                            count(children)
                        ),
                    );
                    return Ok(());
                }
                self.walk(children, scope, context)
            }
            "ifdefine" => {
                arity(node, 1, 1, "one parameter name")?;
                self.walk(children, scope, context)
            }
            "virtualhost" => {
                if context != Context::Server || scope != 0 {
                    return Err(ImportError::new(
                        &node.at,
                        "<VirtualHost> cannot occur within another section",
                    ));
                }
                if node.args.is_empty() {
                    return Err(ImportError::new(
                        &node.at,
                        "<VirtualHost> needs at least one address (like *:80)",
                    ));
                }
                self.scopes.push(Scope::new("default"));
                let index = self.scopes.len() - 1;
                self.walk(children, index, Context::Server)
            }
            "proxy" => {
                if context != Context::Server {
                    return Err(ImportError::new(
                        &node.at,
                        "<Proxy> cannot occur within <Location> or another <Proxy>",
                    ));
                }
                arity(node, 1, 1, "one URL (balancer://name, or a worker's URL)")?;
                match balancer_name(&node.args[0]) {
                    Some(balancer) => {
                        let index = self.balancer(&balancer, &node.at);
                        self.clusters[index].defined = true;
                        self.walk(children, scope, Context::Balancer(index))
                    }
                    None => {
                        let url = node.args[0].trim_end_matches('*').to_owned();
                        self.workers.push(url);
                        let index = self.workers.len() - 1;
                        self.walk(children, scope, Context::Worker(index))
                    }
                }
            }
            "location" => {
                if context != Context::Server {
                    return Err(ImportError::new(
                        &node.at,
                        "<Location> cannot occur within <Location> or <Proxy>",
                    ));
                }
                arity(node, 1, 1, "one path")?;
                self.locations.push(LocationSettings {
                    path: node.args[0].clone(),
                    ..LocationSettings::default()
                });
                let index = self.locations.len() - 1;
                self.walk(children, scope, Context::Location(index))
            }
            _ => {
                self.not_translated(node);
                Ok(())
            }
        }
    }

    fn directive(
        &mut self,
        node: &Node,
        scope: usize,
        context: Context,
    ) -> Result<(), ImportError> {
        let name = node.name.to_ascii_lowercase();
        match (name.as_str(), context) {
            ("servername", Context::Server) => {
                arity(node, 1, 1, "one host name")?;
                let host = host_of(&node.args[0]);
                if scope == 0 {
                    self.warn(
                        &node.at,
                        format!(
                            "ServerName {} of the main server is not made a route host: its routes match any host",
                            quoted(&node.args[0])
                        ),
                    );
                } else if wildcard(&host) {
                    self.warn_wildcard(node, &host);
                } else {
                    if let Some(before) = self.scopes[scope].server_name.replace(host) {
                        self.warn(
                            &node.at,
                            format!(
                                "a second ServerName replaces {} (the last one wins, as in Apache)",
                                quoted(&before)
                            ),
                        );
                    }
                }
            }
            ("serveralias", Context::Server) if scope > 0 => {
                arity(node, 1, usize::MAX, "one or more host names")?;
                for alias in &node.args {
                    self.add_host(scope, host_of(alias), node);
                }
            }
            ("serverroot", _) => {}
            ("proxyrequests", _) => {
                if on_off(node)? {
                    self.warn(
                        &node.at,
                        "ProxyRequests On not translated: Switchyard is a reverse proxy only, never a forward proxy",
                    );
                }
            }
            ("include" | "includeoptional", _) => self.warn(
                &node.at,
                format!("{} not followed (this import reads no files)", node.name),
            ),
            ("proxypass", Context::Server | Context::Location(_)) => {
                self.proxy_pass(node, scope, context)?;
            }
            ("proxypassmatch", Context::Server) => self.proxy_pass_match(node, scope)?,
            ("proxypassreverse", Context::Server | Context::Location(_)) => {
                self.proxy_pass_reverse(node, scope, context)?;
            }
            ("proxypreservehost", Context::Server | Context::Location(_)) => {
                let on = on_off(node)?;
                match context {
                    Context::Location(l) => self.locations[l].preserve_host = Some(on),
                    _ => self.scopes[scope].preserve_host = Some(on),
                }
            }
            (
                "proxypassreversecookiepath" | "proxypassreversecookiedomain",
                Context::Server | Context::Location(_),
            ) => {
                self.cookie(node, scope, context, name == "proxypassreversecookiepath")?;
            }
            ("proxytimeout", Context::Server) => {
                arity(node, 1, 1, "one number of seconds")?;
                let d = params::duration(node, "ProxyTimeout", &node.args[0])?;
                self.scopes[scope].proxy_timeout = Some((d, node.at.clone()));
            }
            ("balancermember", _) => self.balancer_member(node, context)?,
            ("proxyset", _) => self.proxy_set(node, context)?,
            ("rewriteengine", Context::Server) => {
                self.scopes[scope].rewrite_engine = on_off(node)?;
            }
            ("rewritecond", Context::Server) => {
                self.warn(
                    &node.at,
                    "RewriteCond not translated: a condition has no equivalent (the RewriteRule it guards is left out too)",
                );
                self.scopes[scope].rewrite_cond = Some(node.at.clone());
            }
            ("rewriterule", Context::Server) => self.rewrite_rule(node, scope)?,
            ("header", Context::Server) if is_route_cookie_header(node).is_some() => {
                if let Some(cookie) = is_route_cookie_header(node) {
                    self.scopes[scope]
                        .route_cookies
                        .push((cookie, node.at.clone()));
                }
            }
            _ => self.not_translated(node),
        }
        Ok(())
    }

    fn add_host(&mut self, scope: usize, host: String, node: &Node) {
        if wildcard(&host) {
            self.warn_wildcard(node, &host);
            return;
        }
        let s = &mut self.scopes[scope];
        if !s.aliases.contains(&host) {
            s.aliases.push(host);
        }
    }

    fn warn_wildcard(&mut self, node: &Node, host: &str) {
        self.warn(
            &node.at,
            format!(
                "{} {} not translated: routes match exact host names only",
                node.name,
                quoted(host)
            ),
        );
    }

    /// The cluster of `balancer://name`, created when first named.
    fn balancer(&mut self, name: &str, at: &Location) -> usize {
        // Apache compares balancer names without case.
        let key = format!("balancer://{}", name.to_ascii_lowercase());
        if let Some(&index) = self.by_key.get(&key) {
            return index;
        }
        self.new_draft(key, &sanitize(name), at, true)
    }

    fn new_draft(&mut self, key: String, name: &str, at: &Location, balancer: bool) -> usize {
        let mut name = name.to_owned();
        let taken: HashSet<&str> = self
            .clusters
            .iter()
            .map(|d| d.cluster.name.as_str())
            .collect();
        if taken.contains(name.as_str()) {
            let base = name.clone();
            let mut n = 2;
            while taken.contains(format!("{base}-{n}").as_str()) {
                n += 1;
            }
            name = format!("{base}-{n}");
        }
        self.clusters.push(Draft {
            cluster: Cluster::new(name),
            at: at.clone(),
            balancer,
            defined: !balancer,
            member_paths: Vec::new(),
            set_by: HashMap::new(),
            timeout_set: false,
            health: params::HealthDraft::default(),
            lbmethod: None,
            sticky: None,
        });
        let index = self.clusters.len() - 1;
        self.by_key.insert(key, index);
        index
    }
}

fn wildcard(host: &str) -> bool {
    host.contains(['*', '?'])
}

/// `balancer://name[/path]` → `name`.
fn balancer_name(url: &str) -> Option<String> {
    let rest = url.strip_prefix("balancer://")?;
    let name = split_path(rest).0;
    (!name.is_empty()).then(|| name.to_owned())
}

/// `authority/path` → (`authority`, `/path`); the path is empty if none.
fn split_path(rest: &str) -> (&str, &str) {
    match rest.find('/') {
        Some(at) => rest.split_at(at),
        None => (rest, ""),
    }
}

/// A `ServerName` (`[scheme://]host[:port]`) as a route host.
fn host_of(name: &str) -> String {
    let name = name.split_once("://").map_or(name, |(_, rest)| rest);
    let host = match name.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(v6),
        None => name.split(':').next().unwrap_or(name),
    };
    host.trim_end_matches('.').to_ascii_lowercase()
}

/// Letters, digits, '-' and '_' only (what a name may hold), at most 40 long.
fn sanitize(text: &str) -> String {
    let mut out: String = text
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(40)
        .collect();
    if out.is_empty() {
        out.push('x');
    }
    out
}

/// `Header add|set|append Set-Cookie "NAME=.%{BALANCER_WORKER_ROUTE}e; path=/" env=BALANCER_ROUTE_CHANGED`:
/// the tutorial's way to make a sticky route cookie; the cookie's name.
fn is_route_cookie_header(node: &Node) -> Option<String> {
    let [action, header, value, rest @ ..] = node.args.as_slice() else {
        return None;
    };
    let action_ok = matches!(
        action.to_ascii_lowercase().as_str(),
        "add" | "set" | "append"
    );
    if !action_ok || !header.eq_ignore_ascii_case("set-cookie") {
        return None;
    }
    if !value.contains("%{BALANCER_WORKER_ROUTE}e") {
        return None;
    }
    if !rest
        .iter()
        .all(|r| r.eq_ignore_ascii_case("env=BALANCER_ROUTE_CHANGED"))
    {
        return None;
    }
    let (name, _) = value.split_once('=')?;
    Some(name.trim().to_owned())
}
