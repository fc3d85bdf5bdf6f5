//! A route's header rules and compression settings, compiled once per table:
//! header names and values parsed, media types split into exact ones and
//! `major/*` wildcards, so the request path only compares and copies.

use std::collections::BTreeMap;

use http::header::{HeaderMap, HeaderName, HeaderValue};
use switchyard_shared::text::quoted;
use switchyard_shared::validate::ConfigError;
use switchyard_shared::{Algorithm, Compress, HeaderRules};

/// One direction of a route's header rules, ready to apply.
#[derive(Debug, Default)]
pub struct HeaderRuleSet {
    remove: Box<[HeaderName]>,
    set: Box<[(HeaderName, HeaderValue)]>,
    append: Box<[(HeaderName, HeaderValue)]>,
}

impl HeaderRuleSet {
    /// Parses validated rules; `skip` names a header left out of `set` (the
    /// request's `Host`, which the proxy sets per member).
    pub fn compile(rules: &HeaderRules, skip: Option<&HeaderName>) -> Result<Self, ConfigError> {
        let pairs = |map: &BTreeMap<String, String>| {
            let mut pairs = Vec::with_capacity(map.len());
            for (text, value) in map {
                let name = name_of(text)?;
                if skip != Some(&name) {
                    pairs.push((name, value_of(text, value)?));
                }
            }
            Ok::<_, ConfigError>(pairs.into_boxed_slice())
        };
        Ok(HeaderRuleSet {
            remove: rules
                .remove
                .iter()
                .map(|name| name_of(name))
                .collect::<Result<_, _>>()?,
            set: pairs(&rules.set)?,
            append: pairs(&rules.append)?,
        })
    }

    /// Whether there is no rule to apply.
    pub fn is_empty(&self) -> bool {
        self.remove.is_empty() && self.set.is_empty() && self.append.is_empty()
    }

    /// Removes, then sets (every earlier value replaced), then appends.
    pub fn apply(&self, headers: &mut HeaderMap) {
        for name in &self.remove {
            headers.remove(name);
        }
        for (name, value) in &self.set {
            headers.insert(name.clone(), value.clone());
        }
        for (name, value) in &self.append {
            headers.append(name.clone(), value.clone());
        }
    }
}

/// The value a request rule sets `Host` to, if one does.
pub fn host_override(rules: &HeaderRules) -> Result<Option<HeaderValue>, ConfigError> {
    rules
        .set
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case("host"))
        .map(|(name, value)| value_of(name, value))
        .transpose()
}

fn name_of(name: &str) -> Result<HeaderName, ConfigError> {
    HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| ConfigError::invalid(format!("{} is not a header name", quoted(name))))
}

fn value_of(name: &str, value: &str) -> Result<HeaderValue, ConfigError> {
    HeaderValue::from_str(value).map_err(|_| {
        ConfigError::invalid(format!(
            "header {}: {} is not a header value",
            quoted(name),
            quoted(value)
        ))
    })
}

/// A route's compression: which codings, for which types, from which size.
#[derive(Debug)]
pub struct CompressRule {
    /// In the server's order of preference.
    pub algorithms: Box<[Algorithm]>,
    /// Whole media types, lower-case (`text/html`).
    exact: Box<[Box<str>]>,
    /// The major types of `major/*` entries, with the slash (`text/`).
    majors: Box<[Box<str>]>,
    /// Bodies with a `Content-Length` below this are left as they are.
    pub min_size: u64,
}

impl CompressRule {
    /// Compiles validated settings (types already lower-case).
    pub fn compile(compress: &Compress) -> Self {
        let (majors, exact): (Vec<_>, Vec<_>) =
            compress.types.iter().partition(|t| t.ends_with("/*"));
        CompressRule {
            algorithms: compress.algorithms.clone().into(),
            exact: exact.into_iter().map(|t| t.as_str().into()).collect(),
            majors: majors
                .into_iter()
                .map(|t| t.trim_end_matches('*').into())
                .collect(),
            min_size: compress.min_size,
        }
    }

    /// Whether a `Content-Type` value names a listed type (its parameters
    /// ignored, case-insensitive).
    pub fn compresses_type(&self, content_type: &[u8]) -> bool {
        let media_type = content_type
            .split(|&b| b == b';')
            .next()
            .unwrap_or_default()
            .trim_ascii();
        self.exact
            .iter()
            .any(|t| t.as_bytes().eq_ignore_ascii_case(media_type))
            || self.majors.iter().any(|major| {
                media_type.len() > major.len()
                    && media_type
                        .get(..major.len())
                        .is_some_and(|m| m.eq_ignore_ascii_case(major.as_bytes()))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_match_without_parameters_and_with_wildcards() {
        let rule = CompressRule::compile(&Compress {
            types: vec!["text/*".into(), "application/json".into()],
            ..Compress::default()
        });
        for yes in [
            &b"text/html"[..],
            b"Text/HTML; charset=utf-8",
            b"text/event-stream",
            b"application/json",
            b" application/JSON ;charset=utf-8",
        ] {
            assert!(rule.compresses_type(yes), "{yes:?}");
        }
        for no in [
            &b"text/"[..],
            b"text",
            b"application/jsonx",
            b"application/json+x",
            b"image/png",
            b"",
        ] {
            assert!(!rule.compresses_type(no), "{no:?}");
        }
    }

    #[test]
    fn rules_remove_then_set_then_append() {
        let rules: HeaderRules = serde_json::from_str(
            r#"{"remove": ["X-Old", "X-Set"], "set": {"X-Set": "new", "Host": "h"},
                "append": {"X-List": "b"}}"#,
        )
        .unwrap();
        let set = HeaderRuleSet::compile(&rules, Some(&http::header::HOST)).unwrap();
        let mut headers = HeaderMap::new();
        headers.insert("x-old", HeaderValue::from_static("1"));
        headers.append("x-set", HeaderValue::from_static("a"));
        headers.append("x-set", HeaderValue::from_static("b"));
        headers.insert("x-list", HeaderValue::from_static("a"));
        headers.insert("host", HeaderValue::from_static("client"));
        set.apply(&mut headers);
        assert!(!headers.contains_key("x-old"));
        assert_eq!(headers.get_all("x-set").iter().collect::<Vec<_>>(), ["new"]);
        assert_eq!(
            headers.get_all("x-list").iter().collect::<Vec<_>>(),
            ["a", "b"]
        );
        assert_eq!(headers["host"], "client", "Host is the proxy's to set");
        assert_eq!(host_override(&rules).unwrap().unwrap(), "h");
    }
}
