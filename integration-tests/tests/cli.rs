//! The `switchyard` command line (the real binary, as `sy-switchyard`) against
//! a real control plane and replica: every command's output and exit code,
//! what the replica then serves and what each member saw, the API's error
//! message shown, usage errors (exit 2), an unreachable API (exit 3), and the
//! bearer token sent from the environment.

use std::process::{Command, Output};
use std::time::Duration;

use serde_json::{Value, json};
use switchyard_integration_tests::process::binary;
use switchyard_integration_tests::{Backend, Fleet, eventually, spawn_backend};

const DEADLINE: Duration = Duration::from_secs(10);
/// The longest one run of the command line may take.
const RUN_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs `switchyard --api API ARGS` (with `envs`) to its end.
async fn switchyard_env(api: &str, args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut command = Command::new(binary("sy-switchyard"));
    command
        .env_remove("SWITCHYARD_API")
        .env_remove("SWITCHYARD_API_TOKEN")
        .arg("--api")
        .arg(api)
        .args(args);
    for (key, value) in envs {
        command.env(key, value);
    }
    let shown = format!("{args:?}");
    let run = tokio::task::spawn_blocking(move || command.output());
    match tokio::time::timeout(RUN_TIMEOUT, run).await {
        Ok(Ok(Ok(output))) => output,
        Ok(Ok(Err(e))) => panic!("cannot run switchyard: {e}"),
        Ok(Err(e)) => panic!("the switchyard task failed: {e}"),
        Err(_) => panic!("switchyard {shown} did not end within {RUN_TIMEOUT:?}"),
    }
}

async fn switchyard(api: &str, args: &[&str]) -> Output {
    switchyard_env(api, args, &[]).await
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Its stdout, after checking that it exited 0.
fn ok(output: &Output) -> String {
    assert!(
        output.status.success(),
        "switchyard failed ({}): {}",
        output.status,
        stderr(output)
    );
    stdout(output)
}

fn api(fleet: &Fleet) -> String {
    format!("http://{}", fleet.cp.api_addr())
}

/// The table's row whose first column is `key`, split into its columns.
fn row(table: &str, key: &str) -> Vec<String> {
    table
        .lines()
        .map(|l| l.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
        .find(|cols| cols.first().map(String::as_str) == Some(key))
        .unwrap_or_else(|| panic!("no row {key} in:\n{table}"))
}

fn member_of<'a>(config: &'a Value, cluster: &str, id: &str) -> Option<&'a Value> {
    config["clusters"]
        .as_array()?
        .iter()
        .find(|c| c["name"] == cluster)?["members"]
        .as_array()?
        .iter()
        .find(|m| m["id"] == id)
}

/// GETs `/` from the replica until `backend` has answered one more request.
async fn served_by(fleet: &Fleet, backend: &Backend) {
    let before = backend.request_count();
    eventually("a request reaches the member", DEADLINE, async || {
        let response = fleet.replicas[0].get("/").await;
        if backend.request_count() > before {
            Ok(())
        } else {
            Err(format!("{} {}", response.status, response.body))
        }
    })
    .await;
}

fn config_file(fleet: &Fleet, name: &str, config: &Value) -> String {
    let path = fleet.dir.join(name);
    std::fs::write(&path, config.to_string()).expect("a config file");
    path.display().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_get_member_and_status_drive_a_real_fleet() {
    let fleet = Fleet::start("cli-commands", 1).await;
    let api = api(&fleet);
    let a = spawn_backend("a").await;
    let b = spawn_backend("b").await;
    let config = json!({
        "clusters": [{"name": "web", "policy": "round_robin", "members": [{"url": a.url()}]}],
        "routes": [{"name": "root", "path_prefix": "/", "cluster": "web"}],
    });
    let file = config_file(&fleet, "config.json", &config);

    // --dry-run: the diff, nothing applied.
    let before = fleet.cp.version().await;
    let dry = ok(&switchyard(&api, &["apply", "-f", &file, "--dry-run"]).await);
    assert!(dry.contains("+ cluster web\n"), "{dry}");
    assert!(dry.contains("+ route root\n"), "{dry}");
    assert!(dry.contains("nothing applied"), "{dry}");
    assert_eq!(
        fleet.cp.version().await,
        before,
        "a dry run changes nothing"
    );

    // apply: the same diff, then applied with the version it was made against.
    let applied = ok(&switchyard(&api, &["apply", "-f", &file, "--wait", "5s"]).await);
    assert!(applied.contains("+ cluster web\n"), "{applied}");
    let version = fleet.cp.version().await;
    assert!(
        applied.contains(&format!("applied as version {version} (was {before})")),
        "{applied}"
    );
    served_by(&fleet, &a).await;
    assert_eq!(a.request_count(), 1, "one request sent, one seen");
    let again = ok(&switchyard(&api, &["apply", "-f", &file]).await);
    assert_eq!(again, format!("unchanged at version {version}\n"));

    // get, as tables and as the API's JSON.
    let clusters = ok(&switchyard(&api, &["get", "clusters"]).await);
    assert!(clusters.starts_with("NAME"), "{clusters}");
    assert_eq!(
        row(&clusters, "web"),
        ["web", "round_robin", "http1", "1", "1"]
    );
    let routes = ok(&switchyard(&api, &["get", "routes"]).await);
    assert_eq!(row(&routes, "root"), ["root", "-", "/", "web", "-"]);
    let json_out = ok(&switchyard(&api, &["get", "clusters", "-o", "json"]).await);
    let parsed: Value = serde_json::from_str(&json_out).expect("JSON on stdout");
    assert_eq!(parsed, fleet.cp.get("/api/v1/clusters").await.json());

    // member add (with --wait): the replica now reaches b as well.
    let added = ok(&switchyard(
        &api,
        &[
            "member",
            "add",
            "web",
            &b.url(),
            "--weight",
            "3",
            "--wait",
            "5s",
        ],
    )
    .await);
    let b_id = b.authority();
    assert!(
        added.starts_with(&format!("member {b_id} added to cluster web (version ")),
        "{added}"
    );
    let members = ok(&switchyard(&api, &["get", "members", "web"]).await);
    assert_eq!(
        row(&members, &b_id),
        [b_id.as_str(), &b.url(), "3", "active", "-"]
    );
    served_by(&fleet, &b).await;

    // drain a: its state changes in the config, and only b is sent requests.
    let a_id = a.authority();
    let drained = ok(&switchyard(&api, &["member", "drain", "web", &a_id, "--wait", "5s"]).await);
    assert!(
        drained.starts_with(&format!("member {a_id} of cluster web: draining")),
        "{drained}"
    );
    assert_eq!(
        member_of(&fleet.cp.config().await, "web", &a_id).unwrap()["state"],
        "draining"
    );
    let a_seen = a.request_count();
    for _ in 0..4 {
        served_by(&fleet, &b).await;
    }
    assert_eq!(
        a.request_count(),
        a_seen,
        "a draining member gets no new request"
    );

    for (action, state) in [("disable", "disabled"), ("enable", "active")] {
        let out = ok(&switchyard(&api, &["member", action, "web", &a_id]).await);
        assert!(out.contains(&format!(": {state} (version ")), "{out}");
        assert_eq!(
            member_of(&fleet.cp.config().await, "web", &a_id).unwrap()["state"],
            state
        );
    }
    let weighed = ok(&switchyard(&api, &["member", "weight", "web", &b_id, "5"]).await);
    assert!(weighed.contains("weight 5"), "{weighed}");
    assert_eq!(
        member_of(&fleet.cp.config().await, "web", &b_id).unwrap()["weight"],
        5
    );
    let removed = ok(&switchyard(&api, &["member", "remove", "web", &b_id, "--wait", "5s"]).await);
    assert!(
        removed.starts_with(&format!("member {b_id} removed from cluster web")),
        "{removed}"
    );
    assert!(member_of(&fleet.cp.config().await, "web", &b_id).is_none());

    // status and get dataplanes: the replica, synced at the current version.
    let version = fleet.cp.version().await;
    fleet.wait_synced(version).await;
    let status = ok(&switchyard(&api, &["status"]).await);
    assert!(
        status.starts_with(&format!("control plane at version {version} (store ")),
        "{status}"
    );
    let line = row(&status, "dp-1");
    assert_eq!(
        line[..4],
        ["dp-1", "synced", &version.to_string(), &version.to_string()]
    );
    let dataplanes = ok(&switchyard(&api, &["get", "dataplanes"]).await);
    let line = row(&dataplanes, "dp-1");
    assert_eq!(line[..3], ["dp-1", "synced", &version.to_string()]);
    let status_json: Value =
        serde_json::from_str(&ok(&switchyard(&api, &["status", "-o", "json"]).await)).unwrap();
    assert_eq!(status_json[0]["node_id"], "dp-1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_say_what_the_api_said_with_the_exit_code() {
    let fleet = Fleet::start("cli-errors", 0).await;
    let api = api(&fleet);
    let version = fleet.cp.version().await;

    // The API refuses: its message and status on stderr, exit 1, nothing changed.
    let refused = switchyard(&api, &["member", "add", "nosuch", "http://127.0.0.1:9"]).await;
    assert_eq!(refused.status.code(), Some(1), "{}", stderr(&refused));
    assert_eq!(stdout(&refused), "");
    let message = stderr(&refused);
    assert!(message.starts_with("error: "), "{message}");
    assert!(message.contains("\"nosuch\""), "{message}");
    assert!(message.contains("(HTTP 404)"), "{message}");
    let bad_url = switchyard(&api, &["member", "add", "nosuch", "ftp://x"]).await;
    assert_eq!(bad_url.status.code(), Some(1), "{}", stderr(&bad_url));
    assert!(
        stderr(&bad_url).contains("(HTTP 400)"),
        "{}",
        stderr(&bad_url)
    );
    let invalid = config_file(
        &fleet,
        "invalid.json",
        &json!({"clusters": [], "routes": [{"name": "r", "path_prefix": "/", "cluster": "gone"}]}),
    );
    let refused = switchyard(&api, &["apply", "-f", &invalid]).await;
    assert_eq!(refused.status.code(), Some(1), "{}", stderr(&refused));
    assert!(
        stderr(&refused).contains("\"gone\""),
        "{}",
        stderr(&refused)
    );
    assert_eq!(fleet.cp.version().await, version, "refusals change nothing");

    // Usage errors: exit 2, nothing sent.
    for args in [
        &["get", "things"][..],
        &["member", "weight", "web", "a", "heavy"],
        &["get", "members"],
        &["--api", "ftp://127.0.0.1:1", "get", "clusters"],
    ] {
        let output = switchyard(&api, args).await;
        assert_eq!(
            output.status.code(),
            Some(2),
            "{args:?}: {}",
            stderr(&output)
        );
        assert!(!stderr(&output).is_empty(), "{args:?}");
    }
    let missing = fleet.dir.join("missing.json").display().to_string();
    let output = switchyard(&api, &["apply", "-f", &missing]).await;
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("cannot read"),
        "{}",
        stderr(&output)
    );
    let not_config = config_file(&fleet, "array.json", &json!([1, 2]));
    let output = switchyard(&api, &["apply", "-f", &not_config]).await;
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert_eq!(fleet.cp.version().await, version);

    // Nothing listens: exit 3.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let output = switchyard(&format!("http://{closed}"), &["get", "clusters"]).await;
    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("cannot reach the control plane"),
        "{}",
        stderr(&output)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_from_the_environment_is_sent_as_a_bearer() {
    // A plain backend stands in for the API so that the header can be seen.
    let stand_in = spawn_backend("not json").await;
    let api = stand_in.url();
    let output = switchyard_env(
        &api,
        &["get", "routes"],
        &[("SWITCHYARD_API_TOKEN", "s3cret")],
    )
    .await;
    assert_eq!(output.status.code(), Some(1), "an answer that is not JSON");
    assert_eq!(stand_in.request_count(), 1, "one command, one request");
    let seen = stand_in.last_request().expect("a request");
    assert_eq!(seen.path, "/api/v1/routes");
    assert_eq!(
        seen.header("authorization").as_deref(),
        Some("Bearer s3cret")
    );
    let output = switchyard(&api, &["get", "routes"]).await;
    assert_eq!(output.status.code(), Some(1));
    let seen = stand_in.last_request().expect("a request");
    assert_eq!(seen.header("authorization"), None, "no token, no header");
}
