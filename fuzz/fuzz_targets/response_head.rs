//! `h1::parse_response` over arbitrary bytes and methods: it never panics,
//! a head it accepts has one framing the client can be told, and feeding the
//! bytes in two reads gives what feeding them at once does.
#![no_main]

use bytes::BytesMut;
use http::Method;
use http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};
use libfuzzer_sys::fuzz_target;
use switchyard_data_plane::upstream::h1::{self, Framing, H1Error, ResponseHead};

const METHODS: [Method; 5] = [
    Method::GET,
    Method::HEAD,
    Method::POST,
    Method::OPTIONS,
    Method::DELETE,
];

/// Everything of a parse result that can be compared.
fn summary(result: Result<Option<ResponseHead>, H1Error>) -> String {
    match result {
        Ok(Some(head)) => format!(
            "{} {:?} {:?} {:?} {}",
            head.status, head.version, head.framing, head.headers, head.keep_alive
        ),
        Ok(None) => "partial".into(),
        Err(error) => format!("error {error}"),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, input)) = data.split_first() else {
        return;
    };
    let method = &METHODS[usize::from(selector) % METHODS.len()];
    let mut whole = BytesMut::from(input);
    let result = h1::parse_response(&mut whole, method);
    if let Ok(Some(head)) = &result {
        let lengths: Vec<_> = head.headers.get_all(CONTENT_LENGTH).iter().collect();
        assert!(
            lengths.len() <= 1,
            "one content-length at most: {lengths:?}"
        );
        if head.headers.contains_key(TRANSFER_ENCODING) {
            assert!(
                lengths.is_empty(),
                "content-length beside transfer-encoding"
            );
        }
        if let Framing::Length(n) = head.framing {
            assert_eq!(
                lengths.first().map(|v| v.as_bytes()),
                Some(n.to_string().as_bytes())
            );
        }
        if head.framing == Framing::UntilClose {
            assert!(
                !head.keep_alive,
                "a body until close cannot keep the connection"
            );
        }
    }
    // The same bytes in two reads: the first may be partial, never different.
    let cut = usize::from(selector / 8) * input.len() / 32;
    let mut split = BytesMut::from(&input[..cut]);
    let first = h1::parse_response(&mut split, method);
    // What was not fed yet is in the buffer either way before comparing.
    split.extend_from_slice(&input[cut..]);
    let second = match first {
        Ok(None) => h1::parse_response(&mut split, method),
        done => done,
    };
    let (whole_summary, split_summary) = (summary(result), summary(second));
    let (whole_failed, split_failed) = (
        whole_summary.starts_with("error"),
        split_summary.starts_with("error"),
    );
    assert_eq!(
        whole_failed, split_failed,
        "cut at {cut}: {whole_summary} / {split_summary}"
    );
    if !whole_failed {
        assert_eq!(whole_summary, split_summary, "cut at {cut}");
        assert_eq!(whole, split, "what is left after the head");
    }
});
