//! `switchyard`: the command line for people, over the REST API (the way
//! `kubectl`/`istioctl` wrap theirs): tables of what runs, `apply -f` with a
//! diff first, member actions, `import-apache`, and `status` of the replicas.
//!
//! # Layout
//! - [`client`]: the hyper client, the bearer token, the API's errors.
//! - [`table`]: aligned tables from the API's JSON.
//!
//! Exit codes: 0 done, 1 the API refused (its message and status on stderr),
//! 2 a usage error (nothing sent), 3 the API cannot be reached.

pub mod client;
pub mod table;

use std::fmt;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use hyper::{Method, StatusCode};
use serde_json::{Value, json};
use switchyard_shared::text::quoted;
use switchyard_shared::validate::{normalize_member, normalize_route};
use switchyard_shared::{ConfigDocument, MemberState};

use crate::import::output::ImportArgs;
use client::{Api, segment};

/// Exit code of a refusal by the API.
pub const EXIT_REFUSED: u8 = 1;
/// Exit code of a usage error.
pub const EXIT_USAGE: u8 = 2;
/// Exit code when the API cannot be reached.
pub const EXIT_UNREACHABLE: u8 = 3;

/// Switchyard's command line: reads and changes what the control plane holds
/// through its REST API. The bearer token, if any, comes from the
/// SWITCHYARD_API_TOKEN environment variable.
#[derive(Debug, Clone, Parser)]
#[command(name = "switchyard", version, about)]
pub struct Args {
    /// The control plane's REST API.
    #[arg(
        long,
        env = "SWITCHYARD_API",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    pub api: String,

    #[command(subcommand)]
    pub command: Command,
}

/// What to do.
#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Show clusters, routes, dataplanes or one cluster's members.
    Get {
        #[arg(value_enum)]
        what: Kind,
        /// The cluster, for `get members`.
        cluster: Option<String>,
        /// `table` (aligned columns) or `json` (the API's JSON).
        #[arg(short = 'o', long, value_enum, default_value_t = Format::Table)]
        output: Format,
    },
    /// Replace the whole config with a file's (the `GET /api/v1/config`
    /// shape): prints what changes, then applies it on top of the version read.
    Apply {
        /// The config file.
        #[arg(short = 'f', long = "filename", value_name = "FILE")]
        file: PathBuf,
        /// Only print what would change.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        write: WriteOpts,
    },
    /// Add, drain, disable, enable, reweigh or remove a cluster's member.
    Member {
        #[command(subcommand)]
        action: MemberAction,
    },
    /// Translate Apache httpd mod_proxy configuration (the same importer as
    /// `switchyard-control-plane import-apache`).
    ImportApache(ImportArgs),
    /// What each replica runs: synced, stale, nacked (and why) or disconnected.
    Status {
        #[arg(short = 'o', long, value_enum, default_value_t = Format::Table)]
        output: Format,
    },
}

/// What `get` shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Kind {
    Clusters,
    Routes,
    Dataplanes,
    Members,
}

/// How reads are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Table,
    Json,
}

/// Flags of every write.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct WriteOpts {
    /// Wait until every connected replica runs the new version (`?wait=`).
    #[arg(long, value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub wait: Option<Duration>,
}

/// One member of one cluster.
#[derive(Debug, Clone, clap::Args)]
pub struct MemberRef {
    pub cluster: String,
    pub id: String,
    #[command(flatten)]
    pub write: WriteOpts,
}

/// The member subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum MemberAction {
    /// Add a member at URL; its id is the URL's host:port unless --id.
    Add {
        cluster: String,
        url: String,
        #[arg(long)]
        id: Option<String>,
        #[arg(long)]
        weight: Option<u32>,
        #[arg(long, value_parser = parse_state)]
        state: Option<MemberState>,
        /// The name sticky sessions know it by.
        #[arg(long)]
        route: Option<String>,
        #[command(flatten)]
        write: WriteOpts,
    },
    /// New requests go elsewhere; those in flight finish.
    Drain(MemberRef),
    /// Takes nothing.
    Disable(MemberRef),
    /// Takes its share again.
    Enable(MemberRef),
    /// Change its weight.
    Weight {
        #[command(flatten)]
        member: MemberRef,
        weight: u32,
    },
    /// Remove it from the cluster.
    Remove(MemberRef),
}

/// Why a command failed, and so its exit code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CtlError {
    /// The API answered with an error.
    Refused { status: StatusCode, message: String },
    /// Nothing was sent: the command line or a file is wrong.
    Usage(String),
    /// The API could not be reached (or did not answer in time).
    Unreachable(String),
    /// Anything else (an answer that could not be read, stdout closed).
    Failed(String),
}

impl CtlError {
    pub fn exit_code(&self) -> u8 {
        match self {
            CtlError::Refused { .. } | CtlError::Failed(_) => EXIT_REFUSED,
            CtlError::Usage(_) => EXIT_USAGE,
            CtlError::Unreachable(_) => EXIT_UNREACHABLE,
        }
    }
}

impl fmt::Display for CtlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CtlError::Refused { status, message } => {
                write!(f, "{message} (HTTP {})", status.as_u16())
            }
            CtlError::Usage(m) | CtlError::Failed(m) => f.write_str(m),
            CtlError::Unreachable(m) => write!(f, "cannot reach the control plane: {m}"),
        }
    }
}

fn parse_state(text: &str) -> Result<MemberState, String> {
    serde_json::from_value(Value::String(text.to_owned())).map_err(|_| {
        format!(
            "{} is not one of active, standby, draining, disabled",
            quoted(text)
        )
    })
}

/// Parses the flags and runs the command; see the module for exit codes.
pub fn main() -> ExitCode {
    let args = Args::parse();
    if let Command::ImportApache(import) = &args.command {
        return crate::import::output::run(import);
    }
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
    let result = runtime.block_on(async {
        let api = Api::new(&args.api, client::token_from_env())?;
        run(&api, &args.command).await
    });
    let printed = result.and_then(|out| {
        std::io::stdout()
            .lock()
            .write_all(out.as_bytes())
            .map_err(|e| CtlError::Failed(format!("cannot write to stdout: {e}")))
    });
    match printed {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

/// Runs one command against `api`; the text to print on success.
pub async fn run(api: &Api, command: &Command) -> Result<String, CtlError> {
    match command {
        Command::Get {
            what,
            cluster,
            output,
        } => get(api, *what, cluster.as_deref(), *output).await,
        Command::Apply {
            file,
            dry_run,
            write,
        } => apply(api, file, *dry_run, write.wait).await,
        Command::Member { action } => member(api, action).await,
        Command::Status { output } => status(api, *output).await,
        Command::ImportApache(_) => Err(CtlError::Usage(
            "import-apache runs on its own, not through run()".into(),
        )),
    }
}

fn pretty(value: &Value) -> Result<String, CtlError> {
    serde_json::to_string_pretty(value)
        .map(|mut s| {
            s.push('\n');
            s
        })
        .map_err(|e| CtlError::Failed(e.to_string()))
}

async fn get(
    api: &Api,
    what: Kind,
    cluster: Option<&str>,
    format: Format,
) -> Result<String, CtlError> {
    if (what == Kind::Members) != cluster.is_some() {
        return Err(CtlError::Usage(match what {
            Kind::Members => "get members needs a CLUSTER".into(),
            _ => "only get members takes a CLUSTER".into(),
        }));
    }
    let value = match (what, cluster) {
        (Kind::Clusters, _) => api.get("/api/v1/clusters").await?,
        (Kind::Routes, _) => api.get("/api/v1/routes").await?,
        (Kind::Dataplanes, _) => api.get("/api/v1/dataplanes").await?,
        (Kind::Members, Some(c)) => api.get(&format!("/api/v1/clusters/{}", segment(c))).await?,
        (Kind::Members, None) => Value::Null,
    };
    if format == Format::Json {
        return pretty(&value);
    }
    Ok(match what {
        Kind::Clusters => table::clusters(&value),
        Kind::Routes => table::routes(&value),
        Kind::Dataplanes => table::dataplanes(&value),
        Kind::Members => table::members(&value),
    })
}

async fn status(api: &Api, format: Format) -> Result<String, CtlError> {
    let config = api.get("/api/v1/config").await?;
    let replicas = api.get("/api/v1/dataplanes").await?;
    if format == Format::Json {
        return pretty(&replicas);
    }
    Ok(table::status(&config, &replicas))
}

/// Prints the diff against the running config, then (unless `dry_run`)
/// applies the file with compare-and-set on the version the diff was made
/// against: a change made in between is refused (409), not overwritten.
async fn apply(
    api: &Api,
    file: &PathBuf,
    dry_run: bool,
    wait: Option<Duration>,
) -> Result<String, CtlError> {
    let shown = file.display().to_string();
    let bytes = std::fs::read(file)
        .map_err(|e| CtlError::Usage(format!("cannot read {}: {e}", quoted(&shown))))?;
    let wanted: ConfigDocument = serde_json::from_slice(&bytes)
        .map_err(|e| CtlError::Usage(format!("{}: not a config: {e}", quoted(&shown))))?;
    let mut wanted = wanted.into_config();
    // As the API stores them (member ids, route prefixes), so that the diff
    // shows only real changes; what does not pass is refused by the API.
    for cluster in &mut wanted.clusters {
        for member in &mut cluster.members {
            drop(normalize_member(member));
        }
    }
    for route in &mut wanted.routes {
        drop(normalize_route(route));
    }
    let current = api.get("/api/v1/config").await?;
    let current: ConfigDocument = serde_json::from_value(current).map_err(|e| {
        CtlError::Failed(format!("GET /api/v1/config did not answer a config: {e}"))
    })?;
    let version = current.version.unwrap_or(0);
    let changes = crate::import::output::diff(&current.into_config(), &wanted);
    let mut out = String::new();
    for line in &changes {
        out.push_str(line);
        out.push('\n');
    }
    if dry_run {
        out.push_str(&format!(
            "dry run against version {version}: {} change(s); nothing applied\n",
            changes.len()
        ));
        return Ok(out);
    }
    if changes.is_empty() {
        out.push_str(&format!("unchanged at version {version}\n"));
        return Ok(out);
    }
    let mut document =
        serde_json::to_value(&wanted).map_err(|e| CtlError::Failed(e.to_string()))?;
    if let Value::Object(map) = &mut document {
        map.insert("version".into(), Value::from(version));
    }
    let answer = api
        .call(Method::PUT, "/api/v1/config", Some(&document), wait)
        .await?;
    out.push_str(&format!(
        "applied as version {} (was {version})\n",
        cell_version(&answer)
    ));
    Ok(out)
}

fn cell_version(answer: &Value) -> String {
    table::cell(answer, "version")
}

fn member_path(cluster: &str, id: &str) -> String {
    format!(
        "/api/v1/clusters/{}/members/{}",
        segment(cluster),
        segment(id)
    )
}

async fn patch(api: &Api, member: &MemberRef, body: Value, what: &str) -> Result<String, CtlError> {
    let answer = api
        .call(
            Method::PATCH,
            &member_path(&member.cluster, &member.id),
            Some(&body),
            member.write.wait,
        )
        .await?;
    Ok(format!(
        "member {} of cluster {}: {what} (version {})\n",
        member.id,
        member.cluster,
        cell_version(&answer)
    ))
}

async fn member(api: &Api, action: &MemberAction) -> Result<String, CtlError> {
    match action {
        MemberAction::Add {
            cluster,
            url,
            id,
            weight,
            state,
            route,
            write,
        } => {
            let mut body = json!({ "url": url });
            if let Value::Object(map) = &mut body {
                if let Some(id) = id {
                    map.insert("id".into(), json!(id));
                }
                if let Some(weight) = weight {
                    map.insert("weight".into(), json!(weight));
                }
                if let Some(state) = state {
                    map.insert("state".into(), json!(state));
                }
                if let Some(route) = route {
                    map.insert("route".into(), json!(route));
                }
            }
            let path = format!("/api/v1/clusters/{}/members", segment(cluster));
            let answer = api
                .call(Method::POST, &path, Some(&body), write.wait)
                .await?;
            Ok(format!(
                "member {} added to cluster {cluster} (version {})\n",
                table::cell(&answer, "id"),
                cell_version(&answer)
            ))
        }
        MemberAction::Drain(m) => patch(api, m, json!({"state": "draining"}), "draining").await,
        MemberAction::Disable(m) => patch(api, m, json!({"state": "disabled"}), "disabled").await,
        MemberAction::Enable(m) => patch(api, m, json!({"state": "active"}), "active").await,
        MemberAction::Weight { member, weight } => {
            patch(
                api,
                member,
                json!({ "weight": weight }),
                &format!("weight {weight}"),
            )
            .await
        }
        MemberAction::Remove(m) => {
            let answer = api
                .call(
                    Method::DELETE,
                    &member_path(&m.cluster, &m.id),
                    None,
                    m.write.wait,
                )
                .await?;
            Ok(format!(
                "member {} removed from cluster {} (version {})\n",
                m.id,
                m.cluster,
                cell_version(&answer)
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Args, clap::Error> {
        Args::try_parse_from(std::iter::once("switchyard").chain(args.iter().copied()))
    }

    #[test]
    fn commands_parse() {
        let args = parse(&[
            "--api",
            "http://127.0.0.1:1",
            "get",
            "clusters",
            "-o",
            "json",
        ])
        .unwrap();
        assert_eq!(args.api, "http://127.0.0.1:1");
        assert!(matches!(
            args.command,
            Command::Get {
                what: Kind::Clusters,
                output: Format::Json,
                ..
            }
        ));
        let args = parse(&[
            "member",
            "add",
            "web",
            "http://127.0.0.1:9",
            "--weight",
            "3",
            "--state",
            "standby",
            "--wait",
            "2s",
        ])
        .unwrap();
        let Command::Member {
            action:
                MemberAction::Add {
                    weight,
                    state,
                    write,
                    ..
                },
        } = args.command
        else {
            panic!("not member add");
        };
        assert_eq!(weight, Some(3));
        assert_eq!(state, Some(MemberState::Standby));
        assert_eq!(write.wait, Some(Duration::from_secs(2)));
        let args = parse(&["member", "weight", "web", "a:1", "7"]).unwrap();
        assert!(matches!(
            args.command,
            Command::Member {
                action: MemberAction::Weight { weight: 7, .. }
            }
        ));
        assert!(parse(&["apply", "-f", "c.json", "--dry-run"]).is_ok());
        assert!(parse(&["import-apache", "a.conf"]).is_ok());
    }

    #[test]
    fn usage_errors_are_refused_before_anything_is_sent() {
        assert!(parse(&["get", "things"]).is_err());
        assert!(parse(&["member", "add", "web", "http://x:1", "--state", "asleep"]).is_err());
        assert!(parse(&["member", "weight", "web", "a", "heavy"]).is_err());
        assert!(parse(&["apply"]).is_err());
    }

    #[test]
    fn errors_map_to_exit_codes() {
        let refused = CtlError::Refused {
            status: StatusCode::CONFLICT,
            message: "cluster \"web\" already has a member".into(),
        };
        assert_eq!(refused.exit_code(), 1);
        assert_eq!(
            refused.to_string(),
            "cluster \"web\" already has a member (HTTP 409)"
        );
        assert_eq!(CtlError::Usage("x".into()).exit_code(), 2);
        assert_eq!(CtlError::Unreachable("x".into()).exit_code(), 3);
    }
}
