//! `BalancerMember` and `ProxySet`: the members of a balancer and the
//! parameters of a balancer or a worker.

use super::*;

impl Translator {
    pub(super) fn balancer_member(
        &mut self,
        node: &Node,
        context: Context,
    ) -> Result<(), ImportError> {
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

    pub(super) fn balancer_arg(&mut self, url: &str, node: &Node) -> Result<usize, ImportError> {
        match balancer_name(url) {
            Some(name) => Ok(self.balancer(&name, &node.at)),
            None => Err(ImportError::new(
                &node.at,
                format!("{} has no balancer name", quoted(url)),
            )),
        }
    }

    pub(super) fn proxy_set(&mut self, node: &Node, context: Context) -> Result<(), ImportError> {
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
}
