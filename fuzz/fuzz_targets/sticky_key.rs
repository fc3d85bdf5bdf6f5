//! What sticky sessions and `consistent_hash` read from a request's bytes: a
//! cookie out of a `Cookie` line, a URL parameter out of a request target, the
//! route part of a sticky value. Never a panic; what comes out is a piece of
//! what went in, non-empty, and a cookie value holds no ';'.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard_data_plane::balancer::key::{cookie_in, url_parameter};
use switchyard_data_plane::balancer::sticky::route_part;

fuzz_target!(|data: &[u8]| {
    // Three parts separated by NUL: name, Cookie line, request target.
    let mut parts = data.splitn(3, |&b| b == 0);
    let (Some(name), Some(line), Some(target)) = (parts.next(), parts.next(), parts.next()) else {
        return;
    };
    if let Some(value) = cookie_in(line, name) {
        assert!(!value.is_empty());
        assert!(!value.contains(&b';'), "a cookie value ends at ';'");
        let start = value.as_ptr() as usize - line.as_ptr() as usize;
        assert!(start + value.len() <= line.len(), "a piece of the line");
        let route = route_part(value);
        assert!(route.len() <= value.len());
    }
    let (Ok(name), Ok(target)) = (std::str::from_utf8(name), std::str::from_utf8(target)) else {
        return;
    };
    if let Some(value) = url_parameter(target, name) {
        assert!(!value.is_empty());
        assert!(target.contains(&format!("{name}={value}")));
    }
});
