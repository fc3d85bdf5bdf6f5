//! The end of a translation: the routes (one per host of each mapping, with
//! the scope-wide settings merged), the clusters, and the checks and warnings
//! only the whole config can give.

use super::*;

impl Translator {
    pub(super) fn finish(mut self) -> Result<Imported, ImportError> {
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
    pub(super) fn check_defined(&self) -> Result<(), ImportError> {
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
    pub(super) fn routes(&mut self) -> Vec<Route> {
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

    pub(super) fn warn_unused_reverse(&mut self, used: &[Vec<bool>]) {
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

    pub(super) fn warn_unused_route_cookies(&mut self, config: &Config) {
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
    pub(super) fn warn_shadowed(&mut self, mappings: &[Mapping]) {
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
    pub(super) fn apply_timeouts(&mut self) {
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
    pub(super) fn reverse_for(&self, mapping: &Mapping, used: &mut [Vec<bool>]) -> bool {
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
    pub(super) fn routes_of(&self, mapping: &Mapping, reverse: bool) -> Vec<(Route, Location)> {
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
