//! `ProxyPass` and its kin: `ProxyPassMatch` and `RewriteRule … [P]` where
//! they are plain prefixes, `ProxyPassReverse`, and the cookie rewrites.

use super::*;

impl Translator {
    /// The cluster a `ProxyPass` URL leads to and the path it carries:
    /// `Ok(None)` (with a warning) for a scheme Switchyard does not proxy.
    pub(super) fn target(
        &mut self,
        url: &str,
        node: &Node,
    ) -> Result<Option<(usize, String)>, ImportError> {
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

    pub(super) fn proxy_pass(
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
    pub(super) fn slash_target(&mut self, path: &str, target: &str, node: &Node) -> String {
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
    pub(super) fn pass_params(
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

    pub(super) fn proxy_pass_match(
        &mut self,
        node: &Node,
        scope: usize,
    ) -> Result<(), ImportError> {
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
    pub(super) fn regex_mapping(
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

    pub(super) fn rewrite_rule(&mut self, node: &Node, scope: usize) -> Result<(), ImportError> {
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

    pub(super) fn proxy_pass_reverse(
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

    pub(super) fn cookie(
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
}
