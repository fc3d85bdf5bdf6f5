//! Sticky sessions (Apache's `stickysession` with `BalancerMember route=`),
//! on top of any policy: the request's URL parameter (when the cluster names
//! one) or else its cookie carries a value whose route part — what follows
//! its first '.', or all of it without one (`abc123.node2` → `node2`) — names
//! a member by its route (its id without one). That member takes the request
//! if its tier allows ([`super::pick`]); otherwise the policy picks, and with
//! `set_cookie` the response tells the client its new member.

use std::collections::HashMap;

use http::HeaderValue;
use http::header::HeaderMap;
use switchyard_shared::Member;

use crate::balancer::key;

/// A cluster's sticky sessions, compiled.
#[derive(Debug)]
pub struct Sticky {
    cookie: Box<str>,
    url_parameter: Option<Box<str>>,
    /// Member index by route.
    routes: HashMap<Box<str>, usize>,
    /// `NAME=.ROUTE; Path=/; HttpOnly` per member, when Switchyard sets the cookie.
    set_cookie: Option<Box<[HeaderValue]>>,
}

impl Sticky {
    /// `members` are validated: ids filled in, routes unique.
    pub fn build(sticky: &switchyard_shared::Sticky, members: &[Member]) -> Result<Self, String> {
        let route = |m: &Member| m.route.clone().unwrap_or_else(|| m.id.clone());
        let routes = members
            .iter()
            .enumerate()
            .map(|(index, m)| (route(m).into_boxed_str(), index))
            .collect();
        let set_cookie = match sticky.set_cookie {
            false => None,
            true => Some(
                members
                    .iter()
                    .map(|m| {
                        let value = format!("{}=.{}; Path=/; HttpOnly", sticky.cookie, route(m));
                        HeaderValue::try_from(value)
                            .map_err(|_| format!("member {:?}: its route is no cookie value", m.id))
                    })
                    .collect::<Result<_, _>>()?,
            ),
        };
        Ok(Sticky {
            cookie: sticky.cookie.as_str().into(),
            url_parameter: sticky.url_parameter.as_deref().map(Into::into),
            routes,
            set_cookie,
        })
    }

    /// The member the request names, if any: by its URL parameter first, then
    /// its cookie (Apache's order).
    pub fn member(&self, headers: &HeaderMap, path_and_query: &str) -> Option<usize> {
        let value = self
            .url_parameter
            .as_deref()
            .and_then(|name| key::url_parameter(path_and_query, name))
            .map(str::as_bytes)
            .or_else(|| key::cookie(headers, &self.cookie))?;
        let route = std::str::from_utf8(route_part(value)).ok()?;
        self.routes.get(route).copied()
    }

    /// The `Set-Cookie` for a response from member `chosen` to a request
    /// sticky to `named`: none unless the cluster sets cookies and they differ.
    pub fn set_cookie(&self, chosen: usize, named: Option<usize>) -> Option<&HeaderValue> {
        if named == Some(chosen) {
            return None;
        }
        self.set_cookie.as_deref()?.get(chosen)
    }
}

/// What follows the first '.' of a sticky value, or all of it without one.
pub fn route_part(value: &[u8]) -> &[u8] {
    match value.iter().position(|&b| b == b'.') {
        Some(dot) => value.get(dot + 1..).unwrap_or_default(),
        None => value,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sticky(set_cookie: bool) -> Sticky {
        let mut members = Vec::new();
        for (id, route) in [("a", Some("node1")), ("b", Some("node.2")), ("c", None)] {
            let mut member = Member::new("http://127.0.0.1:1");
            member.id = id.into();
            member.route = route.map(Into::into);
            members.push(member);
        }
        let config = switchyard_shared::Sticky {
            cookie: "JSESSIONID".into(),
            url_parameter: Some("jsessionid".into()),
            set_cookie,
        };
        Sticky::build(&config, &members).unwrap()
    }

    fn cookie(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(http::header::COOKIE, value.parse().unwrap());
        headers
    }

    #[test]
    fn the_route_part_follows_the_first_dot() {
        assert_eq!(route_part(b"abc.node1"), b"node1");
        assert_eq!(route_part(b"abc.node.2"), b"node.2");
        assert_eq!(route_part(b"node1"), b"node1");
        assert_eq!(route_part(b".node1"), b"node1");
        assert_eq!(route_part(b"abc."), b"");
    }

    #[test]
    fn cookie_or_url_names_the_member() {
        let s = sticky(false);
        assert_eq!(s.member(&cookie("JSESSIONID=xyz.node1"), "/"), Some(0));
        assert_eq!(s.member(&cookie("JSESSIONID=xyz.node.2"), "/"), Some(1));
        assert_eq!(
            s.member(&cookie("JSESSIONID=c"), "/"),
            Some(2),
            "the id without a route"
        );
        assert_eq!(s.member(&cookie("JSESSIONID=xyz.nodeX"), "/"), None);
        assert_eq!(
            s.member(&cookie("JSESSIONID=node1"), "/"),
            Some(0),
            "no dot: all of it"
        );
        assert_eq!(s.member(&cookie("other=xyz.node1"), "/"), None);
        assert_eq!(
            s.member(&HeaderMap::new(), "/x;jsessionid=q.node1"),
            Some(0)
        );
        assert_eq!(s.member(&HeaderMap::new(), "/x?jsessionid=q.c"), Some(2));
        assert_eq!(
            s.member(&cookie("JSESSIONID=xyz.node1"), "/x;jsessionid=q.c"),
            Some(2),
            "the URL before the cookie, as Apache"
        );
    }

    #[test]
    fn cookies_are_set_only_when_the_member_changed() {
        let s = sticky(true);
        assert_eq!(
            s.set_cookie(1, None).unwrap(),
            "JSESSIONID=.node.2; Path=/; HttpOnly"
        );
        assert_eq!(
            s.set_cookie(2, Some(0)).unwrap(),
            "JSESSIONID=.c; Path=/; HttpOnly"
        );
        assert!(s.set_cookie(0, Some(0)).is_none());
        assert!(sticky(false).set_cookie(1, None).is_none());
    }
}
