//! When a regular expression (`ProxyPassMatch`, `RewriteRule … [P]`) is a
//! plain prefix in disguise: `^/api/(.*)$` with `http://b/v1/$1` is the
//! prefix `/api/` rewritten to `/v1/`. Read with `regex-syntax`, so what
//! counts as a literal is what the regex engine says, not a guess at its
//! syntax.

use regex_syntax::hir::{Capture, Dot, Hir, HirKind, Look, Repetition};

/// The prefix mapping a pattern and its target path (`/v1/$1`) amount to:
/// `(path_prefix, upstream_prefix)`, or why it is not one.
pub fn prefix_mapping(pattern: &str, target_path: &str) -> Result<(String, String), String> {
    let hir = regex_syntax::Parser::new()
        .parse(pattern)
        .map_err(|e| format!("the regular expression does not parse: {e}"))?;
    let not_prefix = || {
        "only a pattern of the form ^/prefix/(.*)$ (or ^(/prefix/.*)$) with a target ending in $1 is a plain prefix".to_owned()
    };
    let parts: &[Hir] = match hir.kind() {
        HirKind::Concat(parts) => parts,
        _ => return Err(not_prefix()),
    };
    let parts = match parts {
        [first, rest @ ..] if is_look(first, Look::Start) => rest,
        _ => return Err(not_prefix()),
    };
    let parts = match parts {
        [rest @ .., last] if is_look(last, Look::End) => rest,
        _ => parts,
    };
    let upstream = target_path
        .strip_suffix("$1")
        .filter(|head| !head.contains('$'))
        .ok_or_else(|| "the target must end in $1 and use no other back-reference".to_owned())?;
    let upstream = if upstream.is_empty() { "" } else { upstream };
    match parts {
        // ^/api/(.*)$ → /api/ on the way in, the target's path on the way out.
        [literal, capture] => {
            let prefix = literal_text(literal).ok_or_else(not_prefix)?;
            let sub = capture_one(capture).ok_or_else(not_prefix)?;
            if !is_any(sub) {
                return Err(not_prefix());
            }
            finish(prefix, upstream.to_owned())
        }
        // ^(/api/.*)$ → the whole path is carried: the target's path goes before it.
        [capture] => {
            let sub = capture_one(capture).ok_or_else(not_prefix)?;
            let HirKind::Concat(inner) = sub.kind() else {
                return Err(not_prefix());
            };
            let [literal, any] = inner.as_slice() else {
                return Err(not_prefix());
            };
            if !is_any(any) {
                return Err(not_prefix());
            }
            let prefix = literal_text(literal).ok_or_else(not_prefix)?;
            let upstream = format!("{}{prefix}", upstream.trim_end_matches('/'));
            finish(prefix, upstream)
        }
        _ => Err(not_prefix()),
    }
}

fn finish(prefix: String, upstream: String) -> Result<(String, String), String> {
    if !prefix.starts_with('/') {
        return Err(format!("the prefix {prefix:?} does not start with '/'"));
    }
    let upstream = if upstream.is_empty() {
        "/".to_owned()
    } else {
        upstream
    };
    if !upstream.starts_with('/') {
        return Err(format!(
            "the target path {upstream:?} does not start with '/'"
        ));
    }
    Ok((prefix, upstream))
}

fn is_look(hir: &Hir, look: Look) -> bool {
    matches!(hir.kind(), HirKind::Look(l) if *l == look)
}

fn literal_text(hir: &Hir) -> Option<String> {
    match hir.kind() {
        HirKind::Literal(literal) => String::from_utf8(literal.0.to_vec()).ok(),
        _ => None,
    }
}

/// The inside of the first capture group.
fn capture_one(hir: &Hir) -> Option<&Hir> {
    match hir.kind() {
        HirKind::Capture(Capture { index: 1, sub, .. }) => Some(sub),
        _ => None,
    }
}

/// `.*`: any run of characters, none required.
fn is_any(hir: &Hir) -> bool {
    match hir.kind() {
        HirKind::Repetition(Repetition {
            min: 0,
            max: None,
            sub,
            ..
        }) => **sub == Hir::dot(Dot::AnyCharExceptLF) || **sub == Hir::dot(Dot::AnyChar),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_prefixes_are_recognised() {
        let ok = |p: &str, t: &str| prefix_mapping(p, t).unwrap();
        assert_eq!(ok("^/api/(.*)$", "/$1"), ("/api/".into(), "/".into()));
        assert_eq!(ok("^/api/(.*)", "/v1/$1"), ("/api/".into(), "/v1/".into()));
        assert_eq!(ok("^/app/(.*)$", "$1"), ("/app/".into(), "/".into()));
        assert_eq!(ok("^(/api/.*)$", "$1"), ("/api/".into(), "/api/".into()));
        assert_eq!(
            ok("^(/api/.*)$", "/base/$1"),
            ("/api/".into(), "/base/api/".into())
        );
        assert_eq!(ok(r"^/a\.b/(.*)$", "/$1"), ("/a.b/".into(), "/".into()));
    }

    #[test]
    fn anything_else_is_not_a_prefix() {
        for (p, t) in [
            (r"^/(.*\.gif)$", "/$1"),
            ("/api/(.*)$", "/$1"),
            ("^/api/(.+)$", "/$1"),
            ("(?i)^/api/(.*)$", "/$1"),
            ("^/api/(.*)$", "/x"),
            ("^/api/(.*)$", "/$1/$2"),
            ("^/(a|b)/(.*)$", "/$2"),
            ("^api/(.*)$", "/$1"),
            ("^/api/([", "/$1"),
        ] {
            assert!(prefix_mapping(p, t).is_err(), "{p} {t}");
        }
    }
}
