//! The path rewrite the proxy does: for a route that passes validation and a
//! request path it matches, the path sent to the member is the route's
//! `rewrite_prefix` followed by the rest of the client's path and query,
//! never the client's path unchanged and never a panic.
#![no_main]

use http::uri::PathAndQuery;
use libfuzzer_sys::fuzz_target;
use switchyard_data_plane::proxy::replace_prefix;
use switchyard_shared::model::Route;
use switchyard_shared::validate::normalize_route;

fuzz_target!(|data: &[u8]| {
    // Three parts separated by NUL: prefix, rewrite, path and query.
    let mut parts = data.splitn(3, |&b| b == 0);
    let (Some(prefix), Some(rewrite), Some(path)) = (parts.next(), parts.next(), parts.next())
    else {
        return;
    };
    let (Ok(prefix), Ok(rewrite)) = (std::str::from_utf8(prefix), std::str::from_utf8(rewrite))
    else {
        return;
    };
    let mut route = Route::new("fuzz", prefix, "cluster");
    route.rewrite_prefix = Some(rewrite.to_owned());
    if normalize_route(&mut route).is_err() {
        return;
    }
    let Ok(original) = PathAndQuery::try_from(path) else {
        return;
    };
    // A request target in origin form starts with '/' (hyper refuses others;
    // `path()` of "?q" would say "/"), and the router matches byte for byte.
    if !original.as_str().starts_with('/') || !original.path().starts_with(&route.path_prefix) {
        return;
    }
    let rest = &original.as_str()[route.path_prefix.len()..];
    let expected = format!("{rewrite}{rest}");
    let rewritten = replace_prefix(original.clone(), route.path_prefix.len(), rewrite);
    assert_eq!(rewritten.as_str(), expected, "the rewrite was not applied");
    assert!(rewritten.path().starts_with(rewrite));
});
