//! A misbehaving member, on a bare TCP socket: it accepts, reads one request
//! head, and then does what its [`Misbehaviour`] says instead of answering
//! the way a well-behaved HTTP library would. It counts the request heads it read.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

/// What the member does once it has read a request head.
#[derive(Debug, Clone)]
pub enum Misbehaviour {
    /// Closes the connection without a byte of answer.
    CloseWithoutAnswer,
    /// Writes these bytes as they are (garbage, or a response crafted to the
    /// byte, such as a header repeated on several lines) and closes.
    Answer(&'static str),
    /// Writes a valid response head without `Content-Length` or chunking and
    /// then this body, and closes: the body ends where the connection does.
    CloseDelimited(&'static str),
}

/// A running misbehaving member; dropping it stops it.
#[derive(Debug)]
pub struct RawBackend {
    addr: SocketAddr,
    heads_read: Arc<AtomicUsize>,
    server: JoinHandle<()>,
}

/// Starts a misbehaving member on `127.0.0.1:<a free port>`.
pub async fn spawn_raw_backend(misbehaviour: Misbehaviour) -> RawBackend {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a backend can bind 127.0.0.1:0");
    let addr = listener
        .local_addr()
        .expect("a bound listener has an address");
    let heads_read = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&heads_read);
    let server = tokio::spawn(async move {
        let mut connections = JoinSet::new();
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => {
                        connections.spawn(misbehave(stream, misbehaviour.clone(), Arc::clone(&counter)));
                    }
                    Err(e) => tracing::warn!(error = %e, "Raw backend cannot accept"),
                },
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
            }
        }
    });
    RawBackend {
        addr,
        heads_read,
        server,
    }
}

impl RawBackend {
    /// `http://127.0.0.1:PORT`, the member URL to register.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `127.0.0.1:PORT`: the default member id.
    pub fn authority(&self) -> String {
        self.addr.to_string()
    }

    /// How many request heads it read (each on its own connection).
    pub fn heads_read(&self) -> usize {
        self.heads_read.load(Ordering::SeqCst)
    }
}

impl Drop for RawBackend {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn misbehave(
    mut stream: TcpStream,
    misbehaviour: Misbehaviour,
    heads_read: Arc<AtomicUsize>,
) {
    let mut head = Vec::new();
    let mut buffer = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buffer[..n]),
        }
        if head.len() > 64 * 1024 {
            return;
        }
    }
    heads_read.fetch_add(1, Ordering::SeqCst);
    let answer = match misbehaviour {
        Misbehaviour::CloseWithoutAnswer => String::new(),
        Misbehaviour::Answer(bytes) => bytes.to_owned(),
        Misbehaviour::CloseDelimited(body) => {
            format!("HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\nx-backend: raw\r\n\r\n{body}")
        }
    };
    if !answer.is_empty() && stream.write_all(answer.as_bytes()).await.is_err() {
        return;
    }
    let _ = stream.shutdown().await;
}
