//! A member whose every answer is scripted per connection and per request:
//! for the cases where *which* connection a request came on matters (a
//! kept-alive connection that dies after its second request, a member that
//! asks for a short keep-alive). It logs every request head it read, with the
//! connection it came on, so a test can assert what the member saw.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

/// One request head as the member read it.
#[derive(Debug, Clone)]
pub struct Seen {
    /// Which connection (0 for the first one accepted, and so on).
    pub conn: usize,
    /// Which request on that connection (0 for the first).
    pub index: usize,
    pub method: String,
    pub path: String,
    /// The whole head, as text.
    pub head: String,
}

/// What the member does once it has read a request head (and its body).
#[derive(Debug, Clone)]
pub enum Step {
    /// Writes these bytes and goes on reading the next request.
    Answer(String),
    /// Writes these bytes and then waits without closing (a stalled member).
    AnswerThenHang(String),
    /// Closes the connection without a byte of answer.
    Close,
}

type Script = dyn Fn(&Seen) -> Step + Send + Sync;

/// A running scripted member; dropping it stops it.
pub struct ScriptedMember {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    server: JoinHandle<()>,
}

impl std::fmt::Debug for ScriptedMember {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScriptedMember")
            .field("addr", &self.addr)
            .finish()
    }
}

/// A 200 with `body`, kept alive.
pub fn ok(body: &str) -> Step {
    Step::Answer(format!(
        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    ))
}

/// Starts a member on `127.0.0.1:<a free port>` that answers as `script` says.
pub async fn spawn_scripted(
    script: impl Fn(&Seen) -> Step + Send + Sync + 'static,
) -> ScriptedMember {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a member can bind 127.0.0.1:0");
    let addr = listener
        .local_addr()
        .expect("a bound listener has an address");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let script: Arc<Script> = Arc::new(script);
    let log = seen.clone();
    let server = tokio::spawn(async move {
        let connections_seen = AtomicUsize::new(0);
        let mut connections = JoinSet::new();
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => {
                        let conn = connections_seen.fetch_add(1, Ordering::Relaxed);
                        connections.spawn(serve(stream, conn, script.clone(), log.clone()));
                    }
                    Err(e) => tracing::warn!(error = %e, "Scripted member cannot accept"),
                },
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
            }
        }
    });
    ScriptedMember { addr, seen, server }
}

async fn serve(
    mut stream: TcpStream,
    conn: usize,
    script: Arc<Script>,
    log: Arc<Mutex<Vec<Seen>>>,
) {
    let mut buf = Vec::new();
    for index in 0.. {
        let Some(seen) = read_request(&mut stream, &mut buf, conn, index).await else {
            return;
        };
        let step = script(&seen);
        log.lock().expect("the log lock").push(seen);
        match step {
            Step::Answer(bytes) => {
                if stream.write_all(bytes.as_bytes()).await.is_err() {
                    return;
                }
            }
            Step::AnswerThenHang(bytes) => {
                if stream.write_all(bytes.as_bytes()).await.is_err() {
                    return;
                }
                // Keep the connection open, reading nothing, until the peer closes it.
                let mut sink = [0u8; 1024];
                while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
                return;
            }
            Step::Close => return,
        }
    }
}

/// Reads one request head and its `content-length` body; `None` at the end.
async fn read_request(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    conn: usize,
    index: usize,
) -> Option<Seen> {
    let end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let mut chunk = [0u8; 4096];
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    buf.drain(..end);
    let length = head
        .lines()
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, value)| value.trim().parse::<usize>().ok())
        .unwrap_or(0);
    while buf.len() < length {
        let mut chunk = [0u8; 4096];
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    buf.drain(..length);
    let mut words = head.split_whitespace();
    let method = words.next().unwrap_or_default().to_owned();
    let path = words.next().unwrap_or_default().to_owned();
    Some(Seen {
        conn,
        index,
        method,
        path,
        head,
    })
}

impl ScriptedMember {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn authority(&self) -> String {
        self.addr.to_string()
    }

    /// Every request head read so far, in order.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("the log lock").clone()
    }

    /// How many requests with `method` the member read.
    pub fn count(&self, method: &str) -> usize {
        self.seen().iter().filter(|s| s.method == method).count()
    }
}

impl Drop for ScriptedMember {
    fn drop(&mut self) {
        self.server.abort();
    }
}
