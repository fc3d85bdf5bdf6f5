//! Large bodies without large buffers: [`Payload`], a body of any length
//! generated on the fly in 64 KiB chunks (every chunk a zero-copy slice of one
//! shared pattern), and [`Checksum`], a streaming byte count and hash, so that
//! a test can send or receive 100 MB while holding one chunk at a time; and
//! [`ChannelBody`], a body the test sends piece by piece when it chooses.
//!
//! The pattern repeats every [`PERIOD`] bytes, a prime, so no chunk boundary
//! lines up with it: a chunk lost, repeated or reordered changes the checksum.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};

/// The length of the repeating pattern (a prime, so it never divides a chunk size).
pub const PERIOD: usize = 65_521;
/// The size of the chunks a [`Payload`] yields.
pub const CHUNK: usize = 64 * 1024;
/// 1 MiB.
pub const MIB: u64 = 1024 * 1024;

/// The pattern, followed by [`CHUNK`] more bytes of it, so that any chunk
/// starting anywhere in the period is one contiguous slice.
fn pattern() -> &'static Bytes {
    static PATTERN: OnceLock<Bytes> = OnceLock::new();
    PATTERN.get_or_init(|| {
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut bytes = Vec::with_capacity(PERIOD + CHUNK);
        for _ in 0..PERIOD {
            // xorshift64
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            bytes.push(state.to_le_bytes()[3]);
        }
        for i in 0..CHUNK {
            bytes.push(bytes[i % PERIOD]);
        }
        Bytes::from(bytes)
    })
}

/// The `len` bytes (at most [`CHUNK`]) of the payload that start at `offset`.
pub fn payload_slice(offset: u64, len: usize) -> Bytes {
    assert!(len <= CHUNK, "a payload slice is at most one chunk");
    let start = usize::try_from(offset % PERIOD as u64).expect("less than PERIOD");
    pattern().slice(start..start + len)
}

/// A request or response body of `total` bytes of the pattern, generated as it
/// is sent, [`CHUNK`] bytes at a time.
#[derive(Debug, Clone)]
pub struct Payload {
    offset: u64,
    total: u64,
    exact: bool,
}

impl Payload {
    /// A body of unknown length to the sender (HTTP/1.1 sends it chunked).
    pub fn streamed(total: u64) -> Self {
        Payload {
            offset: 0,
            total,
            exact: false,
        }
    }

    /// A body whose length is known in advance (HTTP/1.1 sends `Content-Length`).
    pub fn sized(total: u64) -> Self {
        Payload {
            offset: 0,
            total,
            exact: true,
        }
    }

    /// The checksum of the whole payload, computed here without any network.
    pub fn expected_checksum(total: u64) -> Checksum {
        let mut checksum = Checksum::new();
        let mut offset = 0;
        while offset < total {
            let len = chunk_len(offset, total);
            checksum.update(&payload_slice(offset, len));
            offset += len as u64;
        }
        checksum
    }
}

fn chunk_len(offset: u64, total: u64) -> usize {
    usize::try_from((total - offset).min(CHUNK as u64)).expect("at most CHUNK")
}

impl Body for Payload {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        if this.offset >= this.total {
            return Poll::Ready(None);
        }
        let len = chunk_len(this.offset, this.total);
        let chunk = payload_slice(this.offset, len);
        this.offset += len as u64;
        Poll::Ready(Some(Ok(Frame::data(chunk))))
    }

    fn is_end_stream(&self) -> bool {
        self.exact && self.offset >= self.total
    }

    fn size_hint(&self) -> SizeHint {
        if self.exact {
            SizeHint::with_exact(self.total - self.offset)
        } else {
            SizeHint::default()
        }
    }
}

/// A request body the test feeds chunk by chunk through the returned sender;
/// it ends when the sender is dropped.
#[derive(Debug)]
pub struct ChannelBody {
    chunks: Option<tokio::sync::mpsc::Receiver<Bytes>>,
}

impl ChannelBody {
    /// A body fed through the sender, which holds up to `capacity` chunks.
    pub fn channel(capacity: usize) -> (tokio::sync::mpsc::Sender<Bytes>, Self) {
        let (sender, chunks) = tokio::sync::mpsc::channel(capacity);
        (
            sender,
            ChannelBody {
                chunks: Some(chunks),
            },
        )
    }

    /// An empty body (for a request without one, on a connection typed for these).
    pub fn empty() -> Self {
        ChannelBody { chunks: None }
    }
}

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match &mut self.get_mut().chunks {
            None => Poll::Ready(None),
            Some(chunks) => chunks
                .poll_recv(cx)
                .map(|chunk| chunk.map(|data| Ok(Frame::data(data)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.chunks.is_none()
    }
}

/// A byte count and a 64-bit hash of a stream, fed in pieces of any size; the
/// result does not depend on how the stream was cut. Not cryptographic: it
/// catches bytes lost, added, changed or reordered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checksum {
    count: u64,
    state: u64,
    pending: [u8; 8],
    pending_len: usize,
}

impl Default for Checksum {
    fn default() -> Self {
        Checksum::new()
    }
}

impl Checksum {
    pub fn new() -> Self {
        Checksum {
            count: 0,
            state: 0xcbf2_9ce4_8422_2325,
            pending: [0; 8],
            pending_len: 0,
        }
    }

    fn mix(&mut self, word: u64) {
        self.state = (self.state ^ word)
            .wrapping_mul(0x0000_0100_0000_01b3)
            .rotate_left(23);
    }

    pub fn update(&mut self, mut data: &[u8]) {
        self.count += data.len() as u64;
        if self.pending_len > 0 {
            let take = (8 - self.pending_len).min(data.len());
            self.pending[self.pending_len..self.pending_len + take].copy_from_slice(&data[..take]);
            self.pending_len += take;
            data = &data[take..];
            if self.pending_len < 8 {
                return;
            }
            self.mix(u64::from_le_bytes(self.pending));
            self.pending_len = 0;
        }
        let mut words = data.chunks_exact(8);
        let mut word = [0u8; 8];
        for piece in &mut words {
            word.copy_from_slice(piece);
            self.mix(u64::from_le_bytes(word));
        }
        let rest = words.remainder();
        self.pending[..rest.len()].copy_from_slice(rest);
        self.pending_len = rest.len();
    }

    /// How many bytes were fed.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The hash of everything fed, as 16 hex digits.
    pub fn hex(&self) -> String {
        let mut end = self.clone();
        let mut last = [0u8; 8];
        last[..end.pending_len].copy_from_slice(&end.pending[..end.pending_len]);
        end.mix(u64::from_le_bytes(last) ^ ((end.pending_len as u64) << 59));
        end.mix(end.count);
        format!("{:016x}", end.state)
    }

    /// `"<count> <hash>"`, what the backend's `/hash` answers.
    pub fn summary(&self) -> String {
        format!("{} {}", self.count, self.hex())
    }
}

/// Reads `body` to its end, one frame at a time, into a [`Checksum`];
/// `keep` bytes at most of it are kept as well (the rest is only counted).
pub async fn read_body(mut body: Incoming, keep: usize) -> Result<(Checksum, Bytes), hyper::Error> {
    use http_body_util::BodyExt as _;
    let mut checksum = Checksum::new();
    let mut kept = Vec::new();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            checksum.update(&data);
            if kept.len() < keep {
                let room = keep - kept.len();
                kept.extend_from_slice(&data[..data.len().min(room)]);
            }
        }
    }
    Ok((checksum, Bytes::from(kept)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_checksum_does_not_depend_on_how_the_stream_is_cut() {
        let data: Vec<u8> = (0..1000u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut whole = Checksum::new();
        whole.update(&data);
        for cut in [1, 3, 7, 8, 9, 64, 999] {
            let mut pieces = Checksum::new();
            for piece in data.chunks(cut) {
                pieces.update(piece);
            }
            assert_eq!(pieces.hex(), whole.hex(), "cut every {cut}");
            assert_eq!(pieces.count(), 1000);
        }
        let mut changed = data.clone();
        changed[500] ^= 1;
        let mut other = Checksum::new();
        other.update(&changed);
        assert_ne!(other.hex(), whole.hex());
        let mut shorter = Checksum::new();
        shorter.update(&data[..999]);
        assert_ne!(shorter.hex(), whole.hex());
    }

    #[test]
    fn payload_chunks_follow_the_pattern_across_the_period() {
        let a = payload_slice(PERIOD as u64 - 3, 10);
        let b = payload_slice(0, 7);
        assert_eq!(&a[3..], &b[..]);
        let c = payload_slice(3 * PERIOD as u64 + 5, 4);
        assert_eq!(&c[..], &payload_slice(5, 4)[..]);
    }
}
