//! The chunked decoder fed the same bytes whole and split at arbitrary
//! points: it never panics, and both give the same data, trailers, end and
//! leftover bytes (or both fail).
#![no_main]

use bytes::BytesMut;
use http::HeaderMap;
use libfuzzer_sys::fuzz_target;
use switchyard_data_plane::upstream::h1::{ChunkedDecoder, Decoded};

#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    data: Vec<u8>,
    trailers: Option<HeaderMap>,
    done: bool,
    failed: bool,
    rest: Vec<u8>,
}

fn decode(input: &[u8], cuts: &[usize]) -> Outcome {
    let mut decoder = ChunkedDecoder::new();
    let mut buf = BytesMut::new();
    let mut outcome = Outcome {
        data: Vec::new(),
        trailers: None,
        done: false,
        failed: false,
        rest: Vec::new(),
    };
    let mut from = 0;
    for &cut in cuts.iter().chain([input.len()].iter()) {
        buf.extend_from_slice(&input[from..cut]);
        from = cut;
        loop {
            match decoder.decode(&mut buf) {
                Ok(Decoded::Data(data)) => {
                    assert!(!data.is_empty(), "no empty data pieces");
                    outcome.data.extend_from_slice(&data);
                }
                Ok(Decoded::Trailers(trailers)) => {
                    assert!(outcome.trailers.is_none(), "trailers come once");
                    outcome.trailers = Some(trailers);
                }
                Ok(Decoded::More) => break,
                Ok(Decoded::Done) => {
                    // What follows the body: in the buffer, and not fed yet.
                    outcome.done = true;
                    buf.extend_from_slice(&input[from..]);
                    outcome.rest = buf.to_vec();
                    return outcome;
                }
                Err(_) => {
                    outcome.failed = true;
                    return outcome;
                }
            }
        }
    }
    outcome.rest = buf.to_vec();
    outcome
}

fuzz_target!(|data: &[u8]| {
    // The first bytes say where to cut the rest.
    let Some((&count, data)) = data.split_first() else {
        return;
    };
    let count = usize::from(count % 8).min(data.len());
    let (cuts, input) = data.split_at(count);
    let mut cuts: Vec<usize> = cuts
        .iter()
        .map(|&c| usize::from(c) * input.len() / 255)
        .collect();
    cuts.sort_unstable();
    let whole = decode(input, &[]);
    let split = decode(input, &cuts);
    if whole.failed || split.failed {
        assert_eq!(
            whole.failed, split.failed,
            "cuts {cuts:?}: {whole:?} / {split:?}"
        );
        return;
    }
    assert_eq!(whole, split, "cuts {cuts:?}");
    // Byte by byte, too.
    let every: Vec<usize> = (1..input.len().min(512)).collect();
    let bytewise = decode(input, &every);
    assert_eq!(whole, bytewise);
});
