//! What `import-apache` does with a translated config: prints it (the
//! `PUT /api/v1/config` shape), applies it through the REST API (`--apply`,
//! compare-and-set on the version it read), or prints what applying it
//! would change (`--apply URL --dry-run`).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use bytes::Bytes;
use hyper::{Method, StatusCode};
use serde_json::Value;
use switchyard_shared::text::quoted;
use switchyard_shared::{Config, ConfigDocument};

use crate::ctl::client::{API_TIMEOUT, HttpClient, http_client, send, text, token_from_env};

/// The exit code of a config that is refused (Apache would refuse it too).
pub const EXIT_REFUSED: u8 = 2;

/// The arguments of `import-apache`.
#[derive(Debug, Clone, clap::Args)]
pub struct ImportArgs {
    /// Apache configuration files, read in order (`Include`s followed).
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,

    /// Apply the result to the control plane at this URL (PUT /api/v1/config),
    /// instead of printing it.
    #[arg(long, value_name = "URL")]
    pub apply: Option<String>,

    /// With --apply: print what would change (clusters and routes added,
    /// removed, changed) and apply nothing.
    #[arg(long, requires = "apply")]
    pub dry_run: bool,

    /// With --apply: wait until every connected replica runs the new version.
    #[arg(long, requires = "apply", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub wait: Option<Duration>,

    /// Where relative `Include` paths start (Apache's `ServerRoot`); a
    /// `ServerRoot` in the files takes over from where it is written. Without
    /// either, from the including file's folder.
    #[arg(long, value_name = "DIR")]
    pub server_root: Option<PathBuf>,
}

/// Runs `import-apache`: warnings on stderr, the config (or the diff) on stdout.
pub fn run(args: &ImportArgs) -> ExitCode {
    let imported = match super::import(&args.files, args.server_root.as_deref()) {
        Ok(imported) => imported,
        Err(e) => {
            eprintln!("error: {e}");
            eprintln!("nothing was written or applied");
            return ExitCode::from(EXIT_REFUSED);
        }
    };
    for warning in &imported.warnings {
        eprintln!("{warning}");
    }
    if !imported.warnings.is_empty() {
        eprintln!(
            "{} directive(s) not translated as written (see the warnings above)",
            imported.warnings.len()
        );
    }
    let Some(url) = &args.apply else {
        return print_json(&imported.config);
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(apply(url, &imported.config, args.dry_run, args.wait));
    match result {
        Ok(message) => {
            eprintln!("{message}");
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

fn print_json(config: &Config) -> ExitCode {
    let text = match serde_json::to_string_pretty(config) {
        Ok(text) => text,
        Err(e) => {
            eprintln!("error: cannot write the config as JSON: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut out = std::io::stdout().lock();
    match writeln!(out, "{text}") {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: cannot write to stdout: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Reads the running config, then prints the diff (`dry_run`) or applies
/// `config` on top of the version read. The message says what happened.
async fn apply(
    base: &str,
    config: &Config,
    dry_run: bool,
    wait: Option<Duration>,
) -> Result<String, String> {
    let base = base.trim_end_matches('/');
    if !base.starts_with("http://") {
        return Err(format!(
            "--apply {} must be the control plane's http:// URL (like http://127.0.0.1:8080)",
            quoted(base)
        ));
    }
    let endpoint = format!("{base}/api/v1/config");
    let client = http_client();
    let token = token_from_env();
    let (status, body) = call(
        &client,
        Method::GET,
        &endpoint,
        Bytes::new(),
        API_TIMEOUT,
        token.as_deref(),
    )
    .await?;
    if status != StatusCode::OK {
        return Err(format!("GET {endpoint} answered {status}: {}", text(&body)));
    }
    let current: ConfigDocument = serde_json::from_slice(&body)
        .map_err(|e| format!("GET {endpoint} did not answer a config: {e}"))?;
    let version = current.version.unwrap_or(0);
    let current = current.into_config();
    if dry_run {
        let changes = diff(&current, config);
        let mut out = std::io::stdout().lock();
        for line in &changes {
            writeln!(out, "{line}").map_err(|e| format!("cannot write to stdout: {e}"))?;
        }
        return Ok(format!(
            "dry run against version {version}: {} change(s); nothing applied",
            changes.len()
        ));
    }
    let mut document = serde_json::to_value(config).map_err(|e| e.to_string())?;
    if let Value::Object(map) = &mut document {
        // Compare-and-set: refused if the config changed since it was read.
        map.insert("version".into(), Value::from(version));
    }
    let body = serde_json::to_vec(&document).map_err(|e| e.to_string())?;
    let (target, limit) = match wait {
        Some(wait) => (
            format!("{endpoint}?wait={}", humantime::format_duration(wait)),
            API_TIMEOUT + wait,
        ),
        None => (endpoint.clone(), API_TIMEOUT),
    };
    let (status, answer) = call(
        &client,
        Method::PUT,
        &target,
        Bytes::from(body),
        limit,
        token.as_deref(),
    )
    .await?;
    if status != StatusCode::OK {
        return Err(format!(
            "PUT {endpoint} answered {status}: {}",
            text(&answer)
        ));
    }
    let applied = serde_json::from_slice::<Value>(&answer)
        .ok()
        .and_then(|v| v.get("version").and_then(Value::as_u64));
    Ok(match applied {
        Some(new) => format!("applied as version {new} (was {version})"),
        None => format!("applied (the answer was {})", text(&answer)),
    })
}

/// One exchange through the shared client, its error as a message.
async fn call(
    client: &HttpClient,
    method: Method,
    url: &str,
    body: Bytes,
    limit: Duration,
    token: Option<&str>,
) -> Result<(StatusCode, Bytes), String> {
    send(client, method, url, body, limit, token)
        .await
        .map_err(|e| e.to_string())
}

/// What applying `new` over `old` changes, one line each: `+ cluster a`,
/// `- route b`, `~ cluster c: members, response_timeout`.
pub fn diff(old: &Config, new: &Config) -> Vec<String> {
    let mut out = Vec::new();
    let clusters = |c: &Config| {
        c.clusters
            .iter()
            .map(|x| {
                (
                    x.name.clone(),
                    serde_json::to_value(x).unwrap_or(Value::Null),
                )
            })
            .collect::<Vec<_>>()
    };
    let routes = |c: &Config| {
        c.routes
            .iter()
            .map(|x| {
                (
                    x.name.clone(),
                    serde_json::to_value(x).unwrap_or(Value::Null),
                )
            })
            .collect::<Vec<_>>()
    };
    diff_named("cluster", &clusters(old), &clusters(new), &mut out);
    diff_named("route", &routes(old), &routes(new), &mut out);
    out
}

fn diff_named(kind: &str, old: &[(String, Value)], new: &[(String, Value)], out: &mut Vec<String>) {
    for (name, value) in new {
        match old.iter().find(|(n, _)| n == name) {
            None => out.push(format!("+ {kind} {name}")),
            Some((_, before)) if before != value => {
                let fields = changed_fields(before, value);
                out.push(format!("~ {kind} {name}: {}", fields.join(", ")));
            }
            Some(_) => {}
        }
    }
    for (name, _) in old {
        if !new.iter().any(|(n, _)| n == name) {
            out.push(format!("- {kind} {name}"));
        }
    }
}

fn changed_fields(before: &Value, after: &Value) -> Vec<String> {
    let (Value::Object(a), Value::Object(b)) = (before, after) else {
        return vec!["(all)".into()];
    };
    let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .cloned()
        .collect()
}
