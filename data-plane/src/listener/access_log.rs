//! The access log (`--access-log PATH`, `-` for stdout): one line per request
//! when its response ends (its last byte written, or the client gone), a
//! readable line or JSON (`--access-log-format json`, or `--log-format json`
//! when that is not given).
//!
//! Off, it costs the request path one check ([`enabled`]). On, a worker never
//! waits for the disk: it formats the line into its own buffer, and one writer
//! thread takes every buffer out and writes it every [`FLUSH_EVERY`] (sooner
//! when a buffer holds [`FLUSH_AT`]), and once more when the replica stops. A
//! buffer the writer cannot empty in time stops taking lines at [`MAX_BUFFER`]
//! (they are counted as dropped); a write that fails is counted and logged
//! once, and never stops the proxy.

use std::cell::RefCell;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use http::StatusCode;
use tracing::{info, warn};

use crate::admin::metrics::ACCESS_LOG;
use crate::proxy::{Names, Refusal, Served};

/// How often the writer takes the workers' lines out.
pub const FLUSH_EVERY: Duration = Duration::from_millis(100);
/// A worker's buffer this full wakes the writer at once.
const FLUSH_AT: usize = 64 * 1024;
/// A worker's buffer this full takes no more lines until the writer empties it.
const MAX_BUFFER: usize = 8 * 1024 * 1024;

/// How lines are written (`--access-log-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// One readable line, user-controlled fields quoted and escaped.
    Text,
    /// One JSON object per line.
    Json,
}

/// Where lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Stdout,
    File(PathBuf),
}

impl Target {
    /// `-` is stdout, anything else a file (appended to).
    pub fn parse(value: &str) -> Target {
        if value == "-" {
            Target::Stdout
        } else {
            Target::File(PathBuf::from(value))
        }
    }
}

/// What the workers share with the writer.
#[derive(Debug)]
struct Shared {
    format: Format,
    /// Every worker's buffer, registered when it logs its first line.
    buffers: Mutex<Vec<Arc<Mutex<Vec<u8>>>>>,
    /// Wakes the writer: a buffer is full (`true`), or stop (`false`).
    wake: Mutex<mpsc::Sender<bool>>,
}

static LOG: OnceLock<Arc<Shared>> = OnceLock::new();

thread_local! {
    /// This thread's buffer, once it logged a line.
    static BUFFER: RefCell<Option<Arc<Mutex<Vec<u8>>>>> = const { RefCell::new(None) };
    /// Where this thread formats a line (kept, so a line allocates nothing).
    static SCRATCH: RefCell<String> = const { RefCell::new(String::new()) };
}

/// Whether the access log is on: the one check a request pays when it is off.
#[inline]
pub fn enabled() -> bool {
    LOG.get().is_some()
}

/// The running access log: its writer thread, ended by [`AccessLog::stop`].
#[derive(Debug)]
pub struct AccessLog {
    writer: Option<std::thread::JoinHandle<()>>,
    shared: Arc<Shared>,
}

impl AccessLog {
    /// Opens `target` and starts the writer; a file that cannot be opened is
    /// an error (the replica does not start).
    pub fn start(target: &Target, format: Format) -> std::io::Result<AccessLog> {
        let out: Box<dyn std::io::Write + Send> = match target {
            Target::Stdout => Box::new(std::io::stdout()),
            Target::File(path) => Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)?,
            ),
        };
        let (wake, woken) = mpsc::channel();
        let shared = Arc::new(Shared {
            format,
            buffers: Mutex::new(Vec::new()),
            wake: Mutex::new(wake),
        });
        let writer = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("switchyard-access-log".to_owned())
                .spawn(move || write_loop(&shared, out, &woken))?
        };
        // A second log (tests running replicas in one process) keeps the first.
        drop(LOG.set(shared.clone()));
        info!(target = ?target, ?format, "Access log on");
        Ok(AccessLog {
            writer: Some(writer),
            shared,
        })
    }

    /// Writes out what is buffered and ends the writer (after the drain).
    pub fn stop(mut self) {
        self.end();
    }

    fn end(&mut self) {
        if let Ok(wake) = self.shared.wake.lock() {
            let _ = wake.send(false);
        }
        if let Some(writer) = self.writer.take()
            && writer.join().is_err()
        {
            warn!("The access log's writer panicked");
        }
    }
}

impl Drop for AccessLog {
    fn drop(&mut self) {
        self.end();
    }
}

/// The writer: every [`FLUSH_EVERY`], or when woken, takes each worker's lines
/// out (holding its lock only for a swap) and writes them.
fn write_loop(
    shared: &Shared,
    mut out: Box<dyn std::io::Write + Send>,
    woken: &mpsc::Receiver<bool>,
) {
    // Swapped with each worker's buffer: both keep their capacity.
    let mut spare = Vec::with_capacity(FLUSH_AT);
    let mut failing = false;
    loop {
        let stop = match woken.recv_timeout(FLUSH_EVERY) {
            Ok(full) => !full,
            Err(RecvTimeoutError::Timeout) => false,
            Err(RecvTimeoutError::Disconnected) => true,
        };
        let buffers = shared
            .buffers
            .lock()
            .map(|buffers| buffers.clone())
            .unwrap_or_default();
        for buffer in buffers {
            if let Ok(mut lines) = buffer.lock() {
                std::mem::swap(&mut *lines, &mut spare);
            }
            if spare.is_empty() {
                continue;
            }
            let lines = spare.iter().filter(|&&b| b == b'\n').count() as u64;
            match out.write_all(&spare).and_then(|()| out.flush()) {
                Ok(()) => {
                    ACCESS_LOG.lines.fetch_add(lines, Ordering::Relaxed);
                    if failing {
                        failing = false;
                        info!("The access log is written again");
                    }
                }
                Err(error) => {
                    ACCESS_LOG.write_errors.fetch_add(1, Ordering::Relaxed);
                    ACCESS_LOG.dropped.fetch_add(lines, Ordering::Relaxed);
                    if !failing {
                        failing = true;
                        warn!(%error, "Writing the access log failed: its lines are dropped (and counted) until a write succeeds");
                    }
                }
            }
            spare.clear();
            if spare.capacity() > MAX_BUFFER {
                spare = Vec::new();
            }
        }
        if stop {
            return;
        }
    }
}

/// Appends one line to this thread's buffer.
fn append(shared: &Shared, line: &[u8]) {
    BUFFER.with(|buffer| {
        let mut buffer = buffer.borrow_mut();
        let buffer = buffer.get_or_insert_with(|| {
            let made = Arc::new(Mutex::new(Vec::with_capacity(FLUSH_AT)));
            if let Ok(mut buffers) = shared.buffers.lock() {
                buffers.push(made.clone());
            }
            made
        });
        let Ok(mut lines) = buffer.lock() else {
            return;
        };
        if lines.len() + line.len() > MAX_BUFFER {
            ACCESS_LOG.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let was_below = lines.len() < FLUSH_AT;
        lines.extend_from_slice(line);
        if was_below && lines.len() >= FLUSH_AT {
            drop(lines);
            if let Ok(wake) = shared.wake.lock() {
                let _ = wake.send(true);
            }
        }
    });
}

/// One request's line, made when it comes in and written when its response ends.
#[derive(Debug)]
pub struct Line {
    /// The client's address and port, written once per connection.
    client: Arc<str>,
    method: http::Method,
    host: String,
    /// The path and query as the client sent them.
    path: String,
    started: Instant,
    status: u16,
    sent: u64,
    /// The response body was sent to its end.
    complete: bool,
    retries: u32,
    /// Why the proxy answered itself, and the error's text.
    refusal: Option<Refusal>,
    names: Option<Box<Names>>,
}

impl Line {
    /// What the request head says; `None` when the access log is off.
    pub fn start<B>(request: &http::Request<B>, client: Option<&Arc<str>>) -> Option<Box<Line>> {
        let client = client?.clone();
        let host = request
            .uri()
            .authority()
            .map(|a| a.as_str().as_bytes())
            .or_else(|| {
                request
                    .headers()
                    .get(http::header::HOST)
                    .map(|h| h.as_bytes())
            })
            .unwrap_or_default();
        Some(Box::new(Line {
            client,
            method: request.method().clone(),
            host: String::from_utf8_lossy(host).into_owned(),
            path: request
                .uri()
                .path_and_query()
                .map_or("", |p| p.as_str())
                .to_owned(),
            started: Instant::now(),
            status: 0,
            sent: 0,
            complete: false,
            retries: 0,
            refusal: None,
            names: None,
        }))
    }

    /// What the proxy made of the request.
    pub fn answered(&mut self, status: StatusCode, served: &mut Served, refusal: Option<Refusal>) {
        self.status = status.as_u16();
        self.retries = served.attempts.saturating_sub(1);
        self.refusal = refusal;
        self.names = served.names.take();
    }

    /// Counts body bytes sent to the client.
    #[inline]
    pub fn sent(&mut self, bytes: usize) {
        self.sent += bytes as u64;
    }

    /// The response body was sent to its end.
    pub fn complete(&mut self) {
        self.complete = true;
    }

    /// Formats the line and hands it to the writer (the response is over).
    pub fn finish(&self) {
        let Some(shared) = LOG.get() else { return };
        SCRATCH.with(|scratch| {
            let Ok(mut line) = scratch.try_borrow_mut() else {
                return;
            };
            line.clear();
            let now = SystemTime::now();
            match shared.format {
                Format::Text => self.text(&mut line, now),
                Format::Json => self.json(&mut line, now),
            }
            line.push('\n');
            append(shared, line.as_bytes());
        });
    }

    fn received(&self) -> u64 {
        self.names
            .as_ref()
            .and_then(|n| n.upload.as_ref())
            .map_or(0, |upload| upload.received())
    }

    fn fields(&self) -> (&str, &str, &str, &str) {
        let detail = self
            .refusal
            .as_ref()
            .and_then(|r| r.detail.as_deref())
            .unwrap_or("");
        match &self.names {
            Some(names) => (&names.route, &names.cluster, &names.member, detail),
            None => ("", "", "", detail),
        }
    }

    fn error(&self) -> Option<&'static str> {
        self.refusal.as_ref().map(|r| r.reason)
    }

    /// `TIME CLIENT "METHOD PATH" host="HOST" status=… in=… out=… duration=…s
    /// route="…" cluster="…" member="…" retries=… error=… complete=…`; every
    /// user-controlled field quoted and escaped.
    fn text(&self, out: &mut String, now: SystemTime) {
        let (route, cluster, member, detail) = self.fields();
        let _ = write!(
            out,
            "{} {} \"{} ",
            humantime::format_rfc3339_millis(now),
            self.client,
            self.method
        );
        escape_text(out, &self.path);
        out.push_str("\" host=\"");
        escape_text(out, &self.host);
        let took = self.started.elapsed();
        let _ = write!(
            out,
            "\" status={} in={} out={} duration={}.{:06} route=\"",
            self.status,
            self.received(),
            self.sent,
            took.as_secs(),
            took.subsec_micros()
        );
        escape_text(out, route);
        out.push_str("\" cluster=\"");
        escape_text(out, cluster);
        out.push_str("\" member=\"");
        escape_text(out, member);
        let _ = write!(
            out,
            "\" retries={} error={} complete={}",
            self.retries,
            self.error().unwrap_or("-"),
            self.complete
        );
        if !detail.is_empty() {
            out.push_str(" detail=\"");
            escape_text(out, detail);
            out.push('"');
        }
    }

    fn json(&self, out: &mut String, now: SystemTime) {
        let (route, cluster, member, detail) = self.fields();
        let line = serde_json::json!({
            "time": humantime::format_rfc3339_millis(now).to_string(),
            "client": &*self.client,
            "method": self.method.as_str(),
            "host": self.host,
            "path": self.path,
            "status": self.status,
            "bytes_in": self.received(),
            "bytes_out": self.sent,
            "duration_s": self.started.elapsed().as_secs_f64(),
            "route": route,
            "cluster": cluster,
            "member": member,
            "retries": self.retries,
            "error": self.error(),
            "detail": (!detail.is_empty()).then_some(detail),
            "complete": self.complete,
        });
        out.push_str(&line.to_string());
    }
}

/// `value` inside a quoted field: `"` and `\` escaped, and every byte
/// outside printable ASCII as `\xNN`, so no value can end the field or the line.
pub fn escape_text(out: &mut String, value: &str) {
    let mut rest = value;
    // Runs of plain bytes are copied whole; only the others are looked at one by one.
    while let Some(at) = rest
        .bytes()
        .position(|b| b == b'"' || b == b'\\' || !(0x20..=0x7e).contains(&b))
    {
        out.push_str(&rest[..at]);
        let mut chars = rest[at..].chars();
        let Some(c) = chars.next() else { break };
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            _ => {
                let mut bytes = [0u8; 4];
                for byte in c.encode_utf8(&mut bytes).bytes() {
                    let _ = write!(out, "\\x{byte:02x}");
                }
            }
        }
        rest = chars.as_str();
    }
    out.push_str(rest);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line() -> Line {
        Line {
            client: Arc::from("127.0.0.1:4321"),
            method: http::Method::GET,
            host: "evil\" status=200\n".to_owned(),
            path: "/a\"b\\c\u{e9}\r\nX".to_owned(),
            started: Instant::now(),
            status: 502,
            sent: 12,
            complete: true,
            retries: 1,
            refusal: Some(Refusal {
                reason: "upstream",
                detail: Some("the member closed the connection".to_owned()),
            }),
            names: Some(Box::new(Names {
                route: "api".to_owned(),
                cluster: "app".to_owned(),
                member: "m1".to_owned(),
                upload: None,
            })),
        }
    }

    #[test]
    fn a_text_line_quotes_and_escapes_what_the_client_sent() {
        let mut out = String::new();
        line().text(&mut out, SystemTime::UNIX_EPOCH);
        assert!(!out.contains('\n') && !out.contains('\r'), "{out}");
        assert!(
            out.starts_with(
                r#"1970-01-01T00:00:00.000Z 127.0.0.1:4321 "GET /a\"b\\c\xc3\xa9\x0d\x0aX" host="evil\" status=200\x0a" status=502 in=0 out=12 duration="#
            ),
            "{out}"
        );
        assert!(
            out.ends_with(
                r#" route="api" cluster="app" member="m1" retries=1 error=upstream complete=true detail="the member closed the connection""#
            ),
            "{out}"
        );
        // The forged `status=200` stays inside the quoted host (the starts_with
        // above): the quote it brought is escaped, so the field ends where it should.
        assert!(
            out.contains(r#"host="evil\" status=200\x0a" status=502 "#),
            "{out}"
        );
    }

    #[test]
    fn a_json_line_is_one_object_with_every_field() {
        let mut out = String::new();
        line().json(&mut out, SystemTime::UNIX_EPOCH);
        assert!(!out.contains('\n'), "{out}");
        let value: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(value["time"], "1970-01-01T00:00:00.000Z");
        assert_eq!(value["client"], "127.0.0.1:4321");
        assert_eq!(value["host"], "evil\" status=200\n");
        assert_eq!(value["path"], "/a\"b\\c\u{e9}\r\nX");
        assert_eq!(value["status"], 502);
        assert_eq!(value["bytes_out"], 12);
        assert_eq!(value["route"], "api");
        assert_eq!(value["member"], "m1");
        assert_eq!(value["retries"], 1);
        assert_eq!(value["error"], "upstream");
        assert_eq!(value["complete"], true);
    }

    #[test]
    fn escaping_leaves_plain_text_alone() {
        let mut out = String::new();
        escape_text(&mut out, "/plain/path?q=1&r=%20");
        assert_eq!(out, "/plain/path?q=1&r=%20");
    }
}
