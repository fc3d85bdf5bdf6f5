//! The client's `Accept-Encoding` as the proxy reads it for a route with
//! `compress`: any bytes a header can carry, against any non-empty list of
//! the route's codings, never panic, and a coding is chosen only if the route
//! offers it and the header names it or `*`.
#![no_main]

use http::header::{ACCEPT_ENCODING, HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use switchyard_data_plane::proxy::compress::negotiate;
use switchyard_shared::Algorithm;

fuzz_target!(|data: &[u8]| {
    // The first byte picks the route's codings and their order.
    let Some((&pick, value)) = data.split_first() else {
        return;
    };
    let orders = [
        [Algorithm::Br, Algorithm::Zstd, Algorithm::Gzip],
        [Algorithm::Gzip, Algorithm::Br, Algorithm::Zstd],
        [Algorithm::Zstd, Algorithm::Gzip, Algorithm::Br],
    ];
    let order = &orders[usize::from(pick) % orders.len()];
    let algorithms = &order[..1 + usize::from(pick / 3) % order.len()];
    let mut headers = HeaderMap::new();
    // Several lines, as a client may send them.
    for line in value.split(|&b| b == b'\n') {
        if let Ok(line) = HeaderValue::from_bytes(line) {
            headers.append(ACCEPT_ENCODING, line);
        }
    }
    if let Some(chosen) = negotiate(&headers, algorithms) {
        assert!(algorithms.contains(&chosen));
        let text = String::from_utf8_lossy(value).to_ascii_lowercase();
        assert!(
            text.contains(chosen.as_str()) || text.contains('*'),
            "{chosen:?} chosen from {text:?}"
        );
    }
});
