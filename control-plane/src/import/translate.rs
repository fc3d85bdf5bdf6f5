//! The directives tree turned into a [`Config`]: `<Proxy balancer://…>` and
//! direct `ProxyPass` URLs become clusters, each `ProxyPass` (per host of its
//! `VirtualHost`) a route. Every directive is either translated or named in a
//! warning saying why not; a value Apache would refuse is an [`ImportError`].
//!
//! Settings that Apache merges per scope (`ProxyPreserveHost`, `ProxyTimeout`,
//! the cookie rewrites, `ProxyPassReverse`) are gathered while walking and
//! applied at the end, so their order in the file does not matter, as in Apache.

mod params;

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
        let key = format!("balancer://{name}");
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

    /// The cluster a `ProxyPass` URL leads to and the path it carries:
    /// `Ok(None)` (with a warning) for a scheme Switchyard does not proxy.
    fn target(&mut self, url: &str, node: &Node) -> Result<Option<(usize, String)>, ImportError> {
        if let Some(rest) = url.strip_prefix("balancer://") {
            let (name, path) = split_path(rest);
            if name.is_empty() {
                return Err(ImportError::new(
                    &node.at,
                    format!("{} has no balancer name", quoted(url)),
                ));
            }
            let index = self.balancer(name, &node.at);
            return Ok(Some((index, path.to_owned())));
        }
        let Some((scheme, rest)) = url.split_once("://") else {
            return Err(ImportError::new(
                &node.at,
                format!("{} is not a URL (scheme://host/path)", quoted(url)),
            ));
        };
        let scheme = scheme.to_ascii_lowercase();
        let member_scheme = match scheme.as_str() {
            "http" | "https" => scheme.clone(),
            "ws" | "wss" => {
                self.warn(
                    &node.at,
                    format!(
                        "{}: {scheme}:// imported as http(s):// (every route tunnels WebSocket upgrades)",
                        node.name
                    ),
                );
                if scheme == "ws" {
                    "http".into()
                } else {
                    "https".into()
                }
            }
            _ => {
                self.warn(
                    &node.at,
                    format!(
                        "{} to {} not translated: members speak HTTP or HTTPS, not {scheme}",
                        node.name,
                        quoted(url)
                    ),
                );
                return Ok(None);
            }
        };
        let (authority, path) = split_path(rest);
        let member_url = format!("{member_scheme}://{authority}");
        let addr = parse_member_url(&member_url)
            .map_err(|e| ImportError::new(&node.at, format!("{}: {}", node.name, e.message)))?;
        let key = addr.base_url();
        let index = match self.by_key.get(&key) {
            Some(&index) => index,
            None => {
                let index = self.new_draft(key, &sanitize(&addr.authority()), &node.at, false);
                self.clusters[index]
                    .cluster
                    .members
                    .push(Member::new(member_url));
                self.clusters[index].member_paths.push(String::new());
                index
            }
        };
        Ok(Some((index, path.to_owned())))
    }

    fn proxy_pass(
        &mut self,
        node: &Node,
        scope: usize,
        context: Context,
    ) -> Result<(), ImportError> {
        let (path, rest) = match context {
            Context::Location(l) => (self.locations[l].path.clone(), node.args.as_slice()),
            _ => match node.args.split_first() {
                Some((path, rest)) => (path.clone(), rest),
                None => {
                    return Err(ImportError::new(
                        &node.at,
                        "ProxyPass needs a path and a URL",
                    ));
                }
            },
        };
        let Some((url, params)) = rest.split_first() else {
            return Err(ImportError::new(
                &node.at,
                format!("ProxyPass {} has no URL", quoted(&path)),
            ));
        };
        if url == "!" {
            self.warn(
                &node.at,
                format!(
                    "ProxyPass {} ! not translated: a path Apache serves itself cannot be excluded from a route",
                    quoted(&path)
                ),
            );
            return Ok(());
        }
        if !path.starts_with('/') {
            self.warn(
                &node.at,
                format!(
                    "ProxyPass {} not translated: a route's path must start with '/'",
                    quoted(&path)
                ),
            );
            return Ok(());
        }
        let Some((cluster, target)) = self.target(url, node)? else {
            return Ok(());
        };
        self.pass_params(node, cluster, params)?;
        let target = self.slash_target(&path, &target, node);
        self.mappings.push(Mapping {
            scope,
            location: match context {
                Context::Location(l) => Some(l),
                _ => None,
            },
            path,
            cluster,
            target,
            at: node.at.clone(),
            url: url.clone(),
        });
        Ok(())
    }

    /// The target path as a route can carry it (`""` is `/`), with a warning
    /// when the trailing slashes of the path and the URL disagree.
    fn slash_target(&mut self, path: &str, target: &str, node: &Node) -> String {
        let target = if target.is_empty() { "/" } else { target };
        if path.ends_with('/') != target.ends_with('/') {
            self.warn(
                &node.at,
                format!(
                    "{}: {} and {} do not both end in '/' (Apache joins them as written); imported as a prefix rewrite",
                    node.name,
                    quoted(path),
                    quoted(target)
                ),
            );
        }
        target.to_owned()
    }

    /// The key=value parameters (and flags) after a `ProxyPass` URL.
    fn pass_params(
        &mut self,
        node: &Node,
        cluster: usize,
        params: &[String],
    ) -> Result<(), ImportError> {
        let balancer = self.clusters[cluster].balancer;
        for param in params {
            match param.to_ascii_lowercase().as_str() {
                "nocanon" | "interpolate" | "noquery" => {
                    self.warn(
                        &node.at,
                        format!(
                            "{} flag {param} not translated: Switchyard has no equivalent",
                            node.name
                        ),
                    );
                    continue;
                }
                _ => {}
            }
            let (key, value) = params::key_value(node, param)?;
            if balancer {
                params::balancer_param(self, cluster, node, &key, value)?;
            } else {
                params::worker_param(self, cluster, 0, node, &key, value)?;
            }
        }
        Ok(())
    }

    fn proxy_pass_match(&mut self, node: &Node, scope: usize) -> Result<(), ImportError> {
        arity(node, 2, usize::MAX, "a regular expression and a URL")?;
        let (pattern, url) = (&node.args[0], &node.args[1]);
        if url == "!" {
            self.warn(
                &node.at,
                format!(
                    "ProxyPassMatch {} ! not translated: a path Apache serves itself cannot be excluded from a route",
                    quoted(pattern)
                ),
            );
            return Ok(());
        }
        self.regex_mapping(node, scope, pattern, url, &node.args[2..])
    }

    /// A `ProxyPassMatch` or `RewriteRule … [P]` that is a plain prefix.
    fn regex_mapping(
        &mut self,
        node: &Node,
        scope: usize,
        pattern: &str,
        url: &str,
        params: &[String],
    ) -> Result<(), ImportError> {
        let path_part = url
            .split_once("://")
            .map(|(_, rest)| split_path(rest).1)
            .unwrap_or(url);
        let (prefix, upstream) = match prefix_mapping(pattern, path_part) {
            Ok(mapping) => mapping,
            Err(why) => {
                self.warn(
                    &node.at,
                    format!("{} {} not translated: {why}", node.name, quoted(pattern)),
                );
                return Ok(());
            }
        };
        let base = url.strip_suffix(path_part).unwrap_or(url);
        let Some((cluster, _)) = self.target(base, node)? else {
            return Ok(());
        };
        self.pass_params(node, cluster, params)?;
        self.mappings.push(Mapping {
            scope,
            location: None,
            path: prefix,
            cluster,
            target: upstream,
            at: node.at.clone(),
            url: format!("{base}/"),
        });
        Ok(())
    }

    fn rewrite_rule(&mut self, node: &Node, scope: usize) -> Result<(), ImportError> {
        arity(node, 2, 3, "a pattern, a substitution and [flags]")?;
        let cond = self.scopes[scope].rewrite_cond.take();
        let flags: Vec<String> = node
            .args
            .get(2)
            .map(|f| {
                f.trim_start_matches('[')
                    .trim_end_matches(']')
                    .split(',')
                    .map(|f| f.trim().to_ascii_uppercase())
                    .collect()
            })
            .unwrap_or_default();
        let proxied = flags.iter().any(|f| f == "P" || f == "PROXY");
        if !proxied {
            self.warn(
                &node.at,
                "RewriteRule not translated: only rules with the [P] flag (proxy) have an equivalent",
            );
            return Ok(());
        }
        if cond.is_some() {
            self.warn(
                &node.at,
                "RewriteRule [P] not translated: it is guarded by a RewriteCond",
            );
            return Ok(());
        }
        if !self.scopes[scope].rewrite_engine {
            self.warn(
                &node.at,
                "RewriteRule [P] not translated: RewriteEngine is not On here, so Apache does not apply it",
            );
            return Ok(());
        }
        let others: Vec<&String> = flags
            .iter()
            .filter(|f| !matches!(f.as_str(), "P" | "PROXY" | "L" | "LAST" | "QSA" | "NE"))
            .collect();
        if !others.is_empty() {
            let list = others
                .iter()
                .map(|f| f.as_str())
                .collect::<Vec<_>>()
                .join(",");
            self.warn(
                &node.at,
                format!("RewriteRule flags {list} not translated: Switchyard has no equivalent"),
            );
        }
        let (pattern, url) = (node.args[0].clone(), node.args[1].clone());
        if !url.contains("://") {
            self.warn(
                &node.at,
                "RewriteRule [P] not translated: its substitution is not a URL of another server",
            );
            return Ok(());
        }
        self.regex_mapping(node, scope, &pattern, &url, &[])
    }

    fn proxy_pass_reverse(
        &mut self,
        node: &Node,
        scope: usize,
        context: Context,
    ) -> Result<(), ImportError> {
        match context {
            Context::Location(l) => {
                arity(node, 1, 2, "a URL")?;
                let path = self.locations[l].path.clone();
                self.scopes[scope]
                    .reverse
                    .push((path, node.args[0].clone(), node.at.clone()));
            }
            _ => {
                arity(node, 2, 3, "a path and a URL")?;
                self.scopes[scope].reverse.push((
                    node.args[0].clone(),
                    node.args[1].clone(),
                    node.at.clone(),
                ));
            }
        }
        Ok(())
    }

    fn cookie(
        &mut self,
        node: &Node,
        scope: usize,
        context: Context,
        path: bool,
    ) -> Result<(), ImportError> {
        arity(node, 2, 3, "an internal and a public value")?;
        if node
            .args
            .get(2)
            .is_some_and(|a| a.eq_ignore_ascii_case("interpolate"))
        {
            self.warn(
                &node.at,
                format!(
                    "{} interpolate not translated: values are taken as written",
                    node.name
                ),
            );
        }
        let rewrite = CookieRewrite::new(node.args[0].clone(), node.args[1].clone());
        let slot = match (context, path) {
            (Context::Location(l), true) => &mut self.locations[l].cookie_path,
            (Context::Location(l), false) => &mut self.locations[l].cookie_domain,
            (_, true) => &mut self.scopes[scope].cookie_path,
            (_, false) => &mut self.scopes[scope].cookie_domain,
        };
        if slot.is_some() {
            self.warn(
                &node.at,
                format!(
                    "a second {} in the same scope not translated: a route rewrites one value",
                    node.name
                ),
            );
            return Ok(());
        }
        *slot = Some(rewrite);
        Ok(())
    }

    fn balancer_member(&mut self, node: &Node, context: Context) -> Result<(), ImportError> {
        let (cluster, args) = match context {
            Context::Balancer(index) => match node.args.first() {
                Some(first) if first.starts_with("balancer://") => {
                    (self.balancer_arg(first, node)?, &node.args[1..])
                }
                _ => (index, node.args.as_slice()),
            },
            _ => match node.args.first() {
                Some(first) if first.starts_with("balancer://") => {
                    let index = self.balancer_arg(first, node)?;
                    self.clusters[index].defined = true;
                    (index, &node.args[1..])
                }
                _ => {
                    return Err(ImportError::new(
                        &node.at,
                        "BalancerMember outside <Proxy balancer://…> must name its balancer first (BalancerMember balancer://name URL)",
                    ));
                }
            },
        };
        let Some((url, params)) = args.split_first() else {
            return Err(ImportError::new(&node.at, "BalancerMember has no URL"));
        };
        let Some((scheme, rest)) = url.split_once("://") else {
            return Err(ImportError::new(
                &node.at,
                format!("BalancerMember {} is not a URL", quoted(url)),
            ));
        };
        let scheme = match scheme.to_ascii_lowercase().as_str() {
            "http" | "ws" => "http",
            "https" | "wss" => "https",
            other => {
                self.warn(
                    &node.at,
                    format!("BalancerMember {} not translated: members speak HTTP or HTTPS, not {other}", quoted(url)),
                );
                return Ok(());
            }
        };
        let (authority, path) = split_path(rest);
        let member_url = format!("{scheme}://{authority}");
        let addr = parse_member_url(&member_url)
            .map_err(|e| ImportError::new(&node.at, format!("BalancerMember: {}", e.message)))?;
        let draft = &self.clusters[cluster];
        if draft
            .cluster
            .members
            .iter()
            .any(|m| parse_member_url(&m.url).is_ok_and(|a| a == addr))
        {
            self.warn(
                &node.at,
                format!(
                    "BalancerMember {} not translated: balancer {} already has this member",
                    quoted(url),
                    quoted(&draft.cluster.name)
                ),
            );
            return Ok(());
        }
        let draft = &mut self.clusters[cluster];
        draft.cluster.members.push(Member::new(member_url));
        draft
            .member_paths
            .push(path.trim_end_matches('/').to_owned());
        let member = draft.cluster.members.len() - 1;
        for param in params {
            let (key, value) = params::key_value(node, param)?;
            params::worker_param(self, cluster, member, node, &key, value)?;
        }
        Ok(())
    }

    fn balancer_arg(&mut self, url: &str, node: &Node) -> Result<usize, ImportError> {
        match balancer_name(url) {
            Some(name) => Ok(self.balancer(&name, &node.at)),
            None => Err(ImportError::new(
                &node.at,
                format!("{} has no balancer name", quoted(url)),
            )),
        }
    }

    fn proxy_set(&mut self, node: &Node, context: Context) -> Result<(), ImportError> {
        let (target, params) = match (node.args.first(), context) {
            (Some(first), _) if first.contains("://") => (Some(first.clone()), &node.args[1..]),
            (_, Context::Worker(w)) => (self.workers.get(w).cloned(), node.args.as_slice()),
            _ => (None, node.args.as_slice()),
        };
        if params.is_empty() {
            return Err(ImportError::new(
                &node.at,
                "ProxySet needs key=value parameters",
            ));
        }
        let cluster = match (&target, context) {
            (Some(url), _) if url.starts_with("balancer://") => Some(self.balancer_arg(url, node)?),
            (None, Context::Balancer(index)) => Some(index),
            (Some(url), _) => {
                let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
                let key = format!("{}://{}", scheme.to_ascii_lowercase(), split_path(rest).0);
                let found = parse_member_url(&key)
                    .ok()
                    .and_then(|addr| self.by_key.get(&addr.base_url()).copied());
                match found {
                    Some(index) => {
                        for param in params {
                            let (key, value) = params::key_value(node, param)?;
                            params::worker_param(self, index, 0, node, &key, value)?;
                        }
                    }
                    None => self.warn(
                        &node.at,
                        format!(
                            "ProxySet {} not translated: no ProxyPass before it leads to this worker",
                            quoted(url)
                        ),
                    ),
                }
                return Ok(());
            }
            (None, _) => None,
        };
        let Some(cluster) = cluster else {
            self.warn(
                &node.at,
                "ProxySet not translated: outside <Proxy balancer://…> it must name a balancer or worker",
            );
            return Ok(());
        };
        for param in params {
            let (key, value) = params::key_value(node, param)?;
            params::balancer_param(self, cluster, node, &key, value)?;
        }
        Ok(())
    }

    fn finish(mut self) -> Result<Imported, ImportError> {
        self.check_defined()?;
        self.apply_timeouts();
        let mut config = Config {
            clusters: Vec::new(),
            routes: self.routes(),
        };
        let drafts = std::mem::take(&mut self.clusters);
        for draft in drafts {
            let cluster = params::finish_cluster(&mut self, draft)?;
            config.clusters.push(cluster);
        }
        self.warn_unused_route_cookies(&config);
        validate_config(&mut config).map_err(|e| ImportError {
            at: None,
            reason: format!(
                "the translated config does not pass validation: {}",
                e.message
            ),
        })?;
        Ok(Imported {
            config,
            warnings: self.warnings,
        })
    }

    /// Every balancer a `ProxyPass` named has a `<Proxy>` or a `BalancerMember`.
    fn check_defined(&self) -> Result<(), ImportError> {
        match self.clusters.iter().find(|d| !d.defined) {
            Some(draft) => Err(ImportError::new(
                &draft.at,
                format!(
                    "balancer://{} is used but never defined (no <Proxy balancer://{}> or BalancerMember)",
                    draft.cluster.name, draft.cluster.name
                ),
            )),
            None => Ok(()),
        }
    }

    /// The routes of every mapping, named uniquely; a second route for the
    /// same host and prefix, or one a route cannot be, is warned about.
    fn routes(&mut self) -> Vec<Route> {
        let mut reverse_used: Vec<Vec<bool>> = self
            .scopes
            .iter()
            .map(|s| vec![false; s.reverse.len()])
            .collect();
        let mut drafts: Vec<(Route, Location)> = Vec::new();
        let mappings = std::mem::take(&mut self.mappings);
        self.warn_shadowed(&mappings);
        for mapping in &mappings {
            let reverse = self.reverse_for(mapping, &mut reverse_used);
            drafts.extend(self.routes_of(mapping, reverse));
        }
        self.warn_unused_reverse(&reverse_used);
        let mut routes = Vec::with_capacity(drafts.len());
        let mut seen: HashMap<(Option<String>, String), Location> = HashMap::new();
        let mut names: HashSet<String> = HashSet::new();
        for (mut route, at) in drafts {
            let key = (route.host.clone(), route.path_prefix.clone());
            if let Some(first) = seen.get(&key) {
                self.warn(
                    &at,
                    format!(
                        "ProxyPass {} for host {} not translated: {first} already routes it (Switchyard routes do not tell ports or addresses apart)",
                        quoted(&route.path_prefix),
                        route.host.as_deref().unwrap_or("(any)")
                    ),
                );
                continue;
            }
            if let Err(e) = normalize_route(&mut route.clone()) {
                self.warn(&at, format!("route not translated: {}", e.message));
                continue;
            }
            seen.insert(key, at);
            route.name = unique(&route.name, &names);
            names.insert(route.name.clone());
            routes.push(route);
        }
        routes
    }

    fn warn_unused_reverse(&mut self, used: &[Vec<bool>]) {
        for (s, used) in used.iter().enumerate() {
            for (i, used) in used.iter().enumerate() {
                if !used {
                    let (path, url, at) = self.scopes[s].reverse[i].clone();
                    self.warn(
                        &at,
                        format!(
                            "ProxyPassReverse {} {} not translated: only a URL that a ProxyPass of the same path leads to can be rewritten",
                            quoted(&path),
                            quoted(&url)
                        ),
                    );
                }
            }
        }
    }

    fn warn_unused_route_cookies(&mut self, config: &Config) {
        let unused: Vec<(String, Location)> = self
            .scopes
            .iter()
            .flat_map(|s| s.route_cookies.iter().cloned())
            .filter(|(name, _)| {
                !config
                    .clusters
                    .iter()
                    .any(|c| c.sticky.as_ref().is_some_and(|s| s.cookie == *name))
            })
            .collect();
        for (name, at) in unused {
            self.warn(
                &at,
                format!(
                    "Header Set-Cookie {name}=…%{{BALANCER_WORKER_ROUTE}}e not translated: no balancer's stickysession names {name}"
                ),
            );
        }
    }

    /// Apache tries a scope's `ProxyPass`es in order and takes the first that
    /// matches; routes take the longest prefix. Where the two differ (a
    /// shorter prefix written first), the later one is warned about.
    fn warn_shadowed(&mut self, mappings: &[Mapping]) {
        for (i, later) in mappings.iter().enumerate() {
            let earlier = mappings[..i].iter().find(|m| {
                m.scope == later.scope && m.path != later.path && later.path.starts_with(&m.path)
            });
            if let Some(earlier) = earlier {
                self.warn(
                    &later.at,
                    format!(
                        "{} comes after {} ({}), so Apache never uses it (the first match wins); the route for it takes effect here (the longest prefix wins)",
                        quoted(&later.path),
                        quoted(&earlier.path),
                        earlier.at
                    ),
                );
            }
        }
    }

    /// `ProxyTimeout` for every cluster a scope leads to that set no timeout
    /// of its own (the vhost's first, then the main server's).
    fn apply_timeouts(&mut self) {
        let global = self.scopes[0].proxy_timeout.clone();
        for mapping in &self.mappings {
            let draft = &mut self.clusters[mapping.cluster];
            if draft.timeout_set {
                continue;
            }
            let timeout = self.scopes[mapping.scope]
                .proxy_timeout
                .clone()
                .or_else(|| global.clone());
            if let Some((d, at)) = timeout {
                draft.cluster.response_timeout = d;
                draft.timeout_set = true;
                draft.set_by.insert("timeout", (d.to_string(), at));
            }
        }
    }

    /// Whether a `ProxyPassReverse` of the mapping's scope names its path and URL.
    fn reverse_for(&self, mapping: &Mapping, used: &mut [Vec<bool>]) -> bool {
        let mut found = false;
        for (i, (path, url, _)) in self.scopes[mapping.scope].reverse.iter().enumerate() {
            if *path == mapping.path && same_url(url, &mapping.url) {
                used[mapping.scope][i] = true;
                found = true;
            }
        }
        found
    }

    /// One route per host of the mapping's scope (one for any host if none).
    fn routes_of(&self, mapping: &Mapping, reverse: bool) -> Vec<(Route, Location)> {
        let scope = &self.scopes[mapping.scope];
        let global = &self.scopes[0];
        let location = mapping.location.map(|l| &self.locations[l]);
        let draft = &self.clusters[mapping.cluster];
        let member_path = common_path(&draft.member_paths);
        let upstream = format!("{member_path}{}", mapping.target);
        let rewrite_prefix = (upstream != mapping.path).then_some(upstream);
        let preserve_host = location
            .and_then(|l| l.preserve_host)
            .or(scope.preserve_host)
            .or(global.preserve_host)
            .unwrap_or(false);
        let cookie_path = location
            .and_then(|l| l.cookie_path.clone())
            .or_else(|| scope.cookie_path.clone())
            .or_else(|| global.cookie_path.clone());
        let cookie_domain = location
            .and_then(|l| l.cookie_domain.clone())
            .or_else(|| scope.cookie_domain.clone())
            .or_else(|| global.cookie_domain.clone());
        let mut hosts: Vec<Option<&String>> = Vec::new();
        for host in scope.server_name.iter().chain(&scope.aliases) {
            if !hosts.contains(&Some(host)) {
                hosts.push(Some(host));
            }
        }
        if hosts.is_empty() {
            hosts.push(None);
        }
        hosts
            .into_iter()
            .map(|host| {
                let label = host.map_or(scope.label.clone(), |h| sanitize(h));
                let name = route_name(&label, &mapping.path);
                let mut route = Route::new(name, mapping.path.clone(), draft.cluster.name.clone());
                route.host = host.cloned();
                route.rewrite_prefix = rewrite_prefix.clone();
                route.preserve_host = preserve_host;
                route.rewrite_redirects = reverse;
                route.rewrite_cookie_path = cookie_path.clone();
                route.rewrite_cookie_domain = cookie_domain.clone();
                (route, mapping.at.clone())
            })
            .collect()
    }

    /// Whether some scope sets the sticky route cookie `name` itself.
    pub(super) fn sets_route_cookie(&self, name: &str) -> bool {
        self.scopes
            .iter()
            .any(|s| s.route_cookies.iter().any(|(c, _)| c == name))
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

/// Whether a `ProxyPassReverse` URL is the one a `ProxyPass` used (a
/// trailing slash and the case of scheme and host aside).
fn same_url(a: &str, b: &str) -> bool {
    let norm = |u: &str| u.trim_end_matches('/').to_ascii_lowercase();
    norm(a) == norm(b)
}

/// The path every member shares (Apache appends the request's path to a
/// member's URL); empty when they differ or have none.
fn common_path(paths: &[String]) -> String {
    match paths.split_first() {
        Some((first, rest)) if rest.iter().all(|p| p == first) => first.clone(),
        _ => String::new(),
    }
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

fn route_name(label: &str, path: &str) -> String {
    let trimmed = path.trim_matches('/');
    let part = if trimmed.is_empty() {
        "root".to_owned()
    } else {
        sanitize(trimmed)
    };
    let mut name = format!("{label}-{part}");
    name.truncate(60);
    name
}

fn unique(name: &str, taken: &HashSet<String>) -> String {
    if !taken.contains(name) {
        return name.to_owned();
    }
    (2..)
        .map(|n| format!("{name}-{n}"))
        .find(|candidate| !taken.contains(candidate))
        .unwrap_or_else(|| name.to_owned())
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
