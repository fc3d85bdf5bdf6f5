//! Child processes: start one of the real binaries, keep what it logs, learn
//! the addresses it reports, `kill -9` it, start it again, and never leave it
//! running after the test. When a test fails, the logs of its children are
//! printed (the tail of each run).

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::time::Instant;

use crate::eventually::POLL_INTERVAL;

/// How long a child has to report the addresses it listens on.
pub const STARTUP_DEADLINE: Duration = Duration::from_secs(30);
const LOG_LINES_KEPT: usize = 20_000;
const LOG_LINES_DUMPED: usize = 300;

/// The path of one of this crate's binaries (`sy-control-plane`, `sy-data-plane`).
///
/// Cargo builds them before the integration tests and tells where through
/// `CARGO_BIN_EXE_<name>`; when that is not in the environment at run time,
/// they are next to the test executable's `deps/` directory.
pub fn binary(name: &str) -> PathBuf {
    if let Some(path) = std::env::var_os(format!("CARGO_BIN_EXE_{name}")) {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("the test executable has a path");
    let mut dir = exe
        .parent()
        .expect("the test executable is in a directory")
        .to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let path = dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.exists(),
        "{} not found: build it with `cargo build -p switchyard-integration-tests --bins`",
        path.display()
    );
    path
}

/// The lines one run of a child wrote (stderr and stdout), shared with the
/// threads that read them.
#[derive(Debug, Clone, Default)]
pub struct Log {
    inner: Arc<Mutex<LogLines>>,
}

#[derive(Debug, Default)]
struct LogLines {
    lines: VecDeque<String>,
    dropped: usize,
}

impl Log {
    fn push(&self, line: String) {
        let mut log = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if log.lines.len() == LOG_LINES_KEPT {
            log.lines.pop_front();
            log.dropped += 1;
        }
        log.lines.push_back(line);
    }

    /// Every line kept so far.
    pub fn lines(&self) -> Vec<String> {
        let log = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        log.lines.iter().cloned().collect()
    }

    /// How many lines contain `needle`.
    pub fn count_matching(&self, needle: &str) -> usize {
        let log = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        log.lines.iter().filter(|l| l.contains(needle)).count()
    }

    /// The value of the first `token` (such as `api.addr=`) that parses as an address.
    fn address(&self, token: &str) -> Option<SocketAddr> {
        let log = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        log.lines.iter().find_map(|line| parse_address(line, token))
    }

    fn tail(&self, n: usize) -> (usize, Vec<String>) {
        let log = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let skip = log.lines.len().saturating_sub(n);
        (
            log.dropped + skip,
            log.lines.iter().skip(skip).cloned().collect(),
        )
    }
}

/// `api.addr=127.0.0.1:4000` (optionally quoted) anywhere in `line`.
fn parse_address(line: &str, token: &str) -> Option<SocketAddr> {
    line.match_indices(token).find_map(|(at, _)| {
        let rest = &line[at + token.len()..];
        let value: String = rest
            .trim_start_matches('"')
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | ':' | '[' | ']'))
            .collect();
        value.parse().ok()
    })
}

/// A running (or killed) child process and the logs of all its runs.
#[derive(Debug)]
pub struct ChildProcess {
    name: String,
    /// A command it runs under (`ip netns exec NS`), empty for none.
    prefix: Vec<String>,
    program: PathBuf,
    envs: Vec<(String, String)>,
    child: Option<Child>,
    log: Log,
    earlier_runs: Vec<(u32, Log)>,
    readers: Vec<JoinHandle<()>>,
}

impl ChildProcess {
    /// Starts `program` with `args`, `RUST_LOG=info`, no inherited `SWITCHYARD_*`
    /// variable and the given extra `envs`.
    pub fn start(name: &str, program: PathBuf, args: &[String], envs: &[(String, String)]) -> Self {
        ChildProcess::start_under(&[], name, program, args, envs)
    }

    /// [`Self::start`] under the command `prefix` (such as `ip netns exec NS`,
    /// which execs the program: the pid we kill is the program's), also on
    /// every restart.
    pub fn start_under(
        prefix: &[String],
        name: &str,
        program: PathBuf,
        args: &[String],
        envs: &[(String, String)],
    ) -> Self {
        let mut process = ChildProcess {
            name: name.to_owned(),
            prefix: prefix.to_vec(),
            program,
            envs: envs.to_vec(),
            child: None,
            log: Log::default(),
            earlier_runs: Vec::new(),
            readers: Vec::new(),
        };
        process.spawn(args);
        process
    }

    /// Starts it again with new `args`, after killing it if it still runs.
    pub fn respawn(&mut self, args: &[String]) {
        self.kill9();
        self.spawn(args);
    }

    fn spawn(&mut self, args: &[String]) {
        let mut command = match self.prefix.split_first() {
            Some((first, rest)) => {
                let mut command = Command::new(first);
                command.args(rest).arg(&self.program);
                command
            }
            None => Command::new(&self.program),
        };
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .env("RUST_LOG", "info");
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("SWITCHYARD_") {
                command.env_remove(key);
            }
        }
        command.envs(self.envs.iter().map(|(k, v)| (k, v)));
        let mut child = command.spawn().unwrap_or_else(|e| {
            panic!(
                "cannot start {} ({}): {e}",
                self.name,
                self.program.display()
            )
        });
        let log = Log::default();
        log.push(format!(
            "[harness] {}{} {}",
            self.prefix
                .iter()
                .map(|p| format!("{p} "))
                .collect::<String>(),
            self.program.display(),
            args.join(" ")
        ));
        if let Some(stderr) = child.stderr.take() {
            self.readers.push(read_lines(stderr, log.clone()));
        }
        if let Some(stdout) = child.stdout.take() {
            self.readers.push(read_lines(stdout, log.clone()));
        }
        self.log = log;
        self.child = Some(child);
    }

    /// Waits until the child has logged every token (`api.addr=`, ...) with an
    /// address, and returns them in order. Fails if the child exits first.
    pub async fn wait_for_addresses(&mut self, tokens: &[&str]) -> Result<Vec<SocketAddr>, String> {
        let start = Instant::now();
        loop {
            let found: Vec<Option<SocketAddr>> =
                tokens.iter().map(|t| self.log.address(t)).collect();
            if found.iter().all(Option::is_some) {
                return Ok(found.into_iter().flatten().collect());
            }
            if let Some(status) = self.exit_status() {
                return Err(format!(
                    "{} exited ({status}) before it reported {tokens:?}",
                    self.name
                ));
            }
            if start.elapsed() > STARTUP_DEADLINE {
                return Err(format!(
                    "{} did not report {tokens:?} within {STARTUP_DEADLINE:?}",
                    self.name
                ));
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// The exit status, if it has exited (and was not killed by us).
    pub fn exit_status(&mut self) -> Option<std::process::ExitStatus> {
        let child = self.child.as_mut()?;
        child.try_wait().ok().flatten()
    }

    /// `kill -9`, and reaps it. Does nothing if it is not running.
    pub fn kill9(&mut self) {
        if let Some(child) = self.child.as_mut() {
            if let Err(e) = child.kill() {
                eprintln!("[harness] cannot kill {}: {e}", self.name);
            }
            if let Err(e) = child.wait() {
                eprintln!("[harness] cannot reap {}: {e}", self.name);
            }
            self.log
                .push(format!("[harness] {} killed with SIGKILL", self.name));
            let pid = child.id();
            self.child = None;
            let log = std::mem::take(&mut self.log);
            self.earlier_runs.push((pid, log));
        }
    }

    /// Sends SIGTERM (a graceful stop) to the child we started, by its pid;
    /// `false` if it is not running or the signal could not be sent.
    pub fn terminate(&mut self) -> bool {
        let Some(child) = self.child.as_ref() else {
            return false;
        };
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .is_ok_and(|status| status.success());
        self.log
            .push(format!("[harness] {} sent SIGTERM", self.name));
        sent
    }

    /// Sends SIGHUP to the child we started, by its pid; `false` if it is not
    /// running or the signal could not be sent.
    pub fn hangup(&mut self) -> bool {
        let Some(child) = self.child.as_ref() else {
            return false;
        };
        let sent = std::process::Command::new("kill")
            .args(["-HUP", &child.id().to_string()])
            .status()
            .is_ok_and(|status| status.success());
        self.log
            .push(format!("[harness] {} sent SIGHUP", self.name));
        sent
    }

    pub fn is_running(&mut self) -> bool {
        self.child.is_some() && self.exit_status().is_none()
    }

    /// The log of the current (or last) run.
    pub fn log(&self) -> &Log {
        if self.child.is_none()
            && let Some((_, last)) = self.earlier_runs.last()
        {
            return last;
        }
        &self.log
    }

    fn dump_logs(&self) {
        let current = self.child.as_ref().map(|c| (c.id(), &self.log));
        let runs = self
            .earlier_runs
            .iter()
            .map(|(pid, log)| (*pid, log))
            .chain(current);
        for (pid, log) in runs {
            let (skipped, lines) = log.tail(LOG_LINES_DUMPED);
            eprintln!(
                "----- log of {} (pid {pid}), {skipped} earlier lines left out -----",
                self.name
            );
            for line in lines {
                eprintln!("{line}");
            }
        }
        eprintln!("----- end of the log of {} -----", self.name);
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            if let Err(e) = child.kill() {
                eprintln!("[harness] cannot kill {}: {e}", self.name);
            }
            if let Err(e) = child.wait() {
                eprintln!("[harness] cannot reap {}: {e}", self.name);
            }
        }
        // The pipes are closed now; the readers end at once.
        for reader in self.readers.drain(..) {
            if reader.join().is_err() {
                eprintln!("[harness] a log reader of {} panicked", self.name);
            }
        }
        if std::thread::panicking() {
            self.dump_logs();
        }
    }
}

fn read_lines(pipe: impl Read + Send + 'static, log: Log) -> JoinHandle<()> {
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            match line {
                Ok(line) => log.push(line),
                Err(e) => {
                    log.push(format!("[harness] cannot read the log: {e}"));
                    break;
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_found_in_human_and_quoted_logs() {
        let line = "2025-01-01T00:00:00Z  INFO switchyard: Listening api.addr=127.0.0.1:4000 grpc.addr=127.0.0.1:4001";
        assert_eq!(
            parse_address(line, "api.addr="),
            Some("127.0.0.1:4000".parse().unwrap())
        );
        assert_eq!(
            parse_address(line, "grpc.addr="),
            Some("127.0.0.1:4001".parse().unwrap())
        );
        assert_eq!(
            parse_address(r#"x listen.addr="127.0.0.1:9""#, "listen.addr="),
            Some("127.0.0.1:9".parse().unwrap())
        );
        assert_eq!(parse_address("admin.addr=nowhere", "admin.addr="), None);
    }
}
