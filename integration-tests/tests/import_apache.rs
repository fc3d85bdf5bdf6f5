//! `switchyard-control-plane import-apache`: the tutorial's two
//! `000-default.conf` files and a multi-vhost layout with `Include`d files,
//! imported by the real binary, applied to a real control plane with
//! `--apply`, and served by a real replica from real backends — checking what
//! the client got and what each member saw. Also `--dry-run`'s diff, the
//! warnings (file:line), a refused config (exit 2, nothing applied), and
//! cookie rewriting (`ProxyPassReverseCookiePath/Domain`) end to end.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::Value;
use switchyard_integration_tests::process::binary;
use switchyard_integration_tests::scripted::{Step, spawn_scripted};
use switchyard_integration_tests::{Backend, Fleet, SeenRequest, eventually, spawn_backend};

const DEADLINE: Duration = Duration::from_secs(10);
/// The longest one run of the importer may take.
const IMPORT_TIMEOUT: Duration = Duration::from_secs(60);

fn fixture(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/apache")
        .join(path)
}

/// Runs `sy-control-plane import-apache ARGS` to its end.
async fn import(args: &[&str]) -> Output {
    let mut command = Command::new(binary("sy-control-plane"));
    command.arg("import-apache").args(args);
    let run = tokio::task::spawn_blocking(move || command.output());
    match tokio::time::timeout(IMPORT_TIMEOUT, run).await {
        Ok(Ok(Ok(output))) => output,
        Ok(Ok(Err(e))) => panic!("cannot run import-apache: {e}"),
        Ok(Err(e)) => panic!("the import task failed: {e}"),
        Err(_) => panic!("import-apache {args:?} did not end within {IMPORT_TIMEOUT:?}"),
    }
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn succeeded(output: &Output) {
    assert!(
        output.status.success(),
        "import-apache failed ({}): {}",
        output.status,
        stderr(output)
    );
}

/// A copy of the fixture `from` in `to` with each `(fixed, real)` address replaced.
fn copy_with_ports(from: &Path, to: &Path, ports: &[(&str, String)]) {
    std::fs::create_dir_all(to).expect("a fixture copy folder");
    for entry in std::fs::read_dir(from).expect("a fixture folder") {
        let entry = entry.expect("a fixture entry");
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_with_ports(&entry.path(), &target, ports);
            continue;
        }
        let mut text = std::fs::read_to_string(entry.path()).expect("a fixture file");
        for (fixed, real) in ports {
            text = text.replace(fixed, real);
        }
        std::fs::write(&target, text).expect("a fixture copy");
    }
}

fn members(config: &Value, cluster: &str) -> Vec<String> {
    config["clusters"]
        .as_array()
        .expect("clusters")
        .iter()
        .find(|c| c["name"] == cluster)
        .unwrap_or_else(|| panic!("no cluster {cluster} in {config}"))["members"]
        .as_array()
        .expect("members")
        .iter()
        .map(|m| m["url"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// What `backend` got from clients through the replica (the health checks'
/// probes left out).
fn proxied(backend: &Backend) -> Vec<SeenRequest> {
    backend
        .requests()
        .into_iter()
        .filter(|r| r.header("user-agent").as_deref() != Some("switchyard-health-check"))
        .collect()
}

fn api(fleet: &Fleet) -> String {
    format!("http://{}", fleet.cp.api_addr())
}

/// GETs `path` with `Host: host` from the replica until `backend` answered it.
async fn served_by(fleet: &Fleet, host: &str, path: &str, backend: &Backend) {
    let replica = &fleet.replicas[0];
    eventually(
        &format!("{host}{path} served by {}", backend.body()),
        DEADLINE,
        async || {
            let response = replica.get_with(path, &[("host", host)]).await;
            if response.body == backend.body() {
                Ok(())
            } else {
                Err(format!("{} {:?}", response.status, response.body))
            }
        },
    )
    .await;
}

#[tokio::test]
async fn tutorial_configs_convert_unchanged_and_serve_hello_and_howdy() {
    // As the tutorial wrote them: members on 127.0.0.1:8080 and :8081.
    let one = import(&[fixture("tutorial-1/000-default.conf")
        .to_str()
        .unwrap_or_default()])
    .await;
    succeeded(&one);
    assert_eq!(stderr(&one), "", "the tutorial has nothing left out");
    let config: Value = serde_json::from_str(&stdout(&one)).expect("JSON on stdout");
    let route = &config["routes"][0];
    assert_eq!(route["path_prefix"], "/");
    assert_eq!(route["preserve_host"], true);
    assert_eq!(route["rewrite_redirects"], true);
    let cluster = route["cluster"].as_str().unwrap_or_default();
    assert_eq!(members(&config, cluster), ["http://127.0.0.1:8080"]);

    let two = import(&[fixture("tutorial-2/000-default.conf")
        .to_str()
        .unwrap_or_default()])
    .await;
    succeeded(&two);
    assert_eq!(stderr(&two), "");
    let config: Value = serde_json::from_str(&stdout(&two)).expect("JSON on stdout");
    assert_eq!(config["routes"][0]["cluster"], "mycluster");
    assert_eq!(
        members(&config, "mycluster"),
        ["http://127.0.0.1:8080", "http://127.0.0.1:8081"]
    );

    // Run: the same files with only the ports moved to this test's backends.
    let hello = spawn_backend("Hello world!").await;
    let howdy = spawn_backend("Howdy world!").await;
    let fleet = Fleet::start("import-tutorial", 1).await;
    let ports = [
        ("127.0.0.1:8080", hello.authority()),
        ("127.0.0.1:8081", howdy.authority()),
    ];
    for example in ["tutorial-1", "tutorial-2"] {
        copy_with_ports(&fixture(example), &fleet.dir.join(example), &ports);
    }
    let first = fleet.dir.join("tutorial-1/000-default.conf");
    let applied = import(&[
        first.to_str().unwrap_or_default(),
        "--apply",
        &api(&fleet),
        "--wait",
        "10s",
    ])
    .await;
    succeeded(&applied);
    assert!(
        stderr(&applied).contains("applied as version"),
        "{}",
        stderr(&applied)
    );
    served_by(&fleet, "www.example.test", "/hello", &hello).await;
    let seen = hello.last_request().expect("hello saw the request");
    assert_eq!(seen.path, "/hello");
    assert_eq!(
        seen.header("host").as_deref(),
        Some("www.example.test"),
        "ProxyPreserveHost On"
    );
    assert_eq!(howdy.request_count(), 0);

    let second = fleet.dir.join("tutorial-2/000-default.conf");
    let applied = import(&[
        second.to_str().unwrap_or_default(),
        "--apply",
        &api(&fleet),
        "--wait",
        "10s",
    ])
    .await;
    succeeded(&applied);
    served_by(&fleet, "www.example.test", "/", &howdy).await;
    // Round robin over both: of the next ten requests each member gets five,
    // and no member gets a request the client did not send.
    let (hello_before, howdy_before) = (hello.request_count(), howdy.request_count());
    let mut bodies = Vec::new();
    for _ in 0..10 {
        let response = fleet.replicas[0]
            .get_with("/", &[("host", "www.example.test")])
            .await;
        assert_eq!(response.status, 200);
        bodies.push(response.body);
    }
    let hellos = bodies.iter().filter(|b| *b == "Hello world!").count();
    let howdys = bodies.iter().filter(|b| *b == "Howdy world!").count();
    assert_eq!((hellos, howdys), (5, 5), "{bodies:?}");
    assert_eq!(hello.request_count() - hello_before, 5);
    assert_eq!(howdy.request_count() - howdy_before, 5);
    let seen = howdy.last_request().expect("howdy saw requests");
    assert_eq!(seen.header("host").as_deref(), Some("www.example.test"));
}

#[tokio::test]
async fn multi_vhost_config_with_includes_is_served() {
    let fixed = fixture("multi-vhost");
    let root = fixed.to_str().unwrap_or_default();
    let main = fixed.join("apache2.conf");
    let output = import(&[main.to_str().unwrap_or_default(), "--server-root", root]).await;
    succeeded(&output);
    let warnings = stderr(&output);
    for expected in [
        "apache2.conf:2: warning: DefaultRuntimeDir not translated",
        "apache2.conf:3: warning: Timeout not translated",
        "apache2.conf:5: warning: Listen not translated",
        "sites-enabled/000-shop.conf:4: warning: ServerAdmin not translated",
        "sites-enabled/000-shop.conf:7: warning: ProxyPass \"/static/\" ! not translated",
        "sites-enabled/000-shop.conf:13: warning: ErrorLog not translated",
        "sites-enabled/010-blog.conf:7: warning: Require not translated",
    ] {
        assert!(
            warnings.contains(expected),
            "no {expected:?} in:\n{warnings}"
        );
    }
    assert!(!warnings.contains("old.example.test") && !warnings.contains("disabled.conf"));
    let config: Value = serde_json::from_str(&stdout(&output)).expect("JSON on stdout");
    let hosts: Vec<&str> = config["routes"]
        .as_array()
        .expect("routes")
        .iter()
        .filter_map(|r| r["host"].as_str())
        .collect();
    assert!(hosts.contains(&"www.shop.example.test") && hosts.contains(&"blog.example.test"));
    assert!(!hosts.contains(&"old.example.test"));
    let shop = config["clusters"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["name"] == "shop"))
        .expect("cluster shop");
    assert_eq!(shop["response_timeout"], "30s", "ProxyTimeout 30");
    assert_eq!(shop["health_check"]["path"], "/");
    assert_eq!(shop["members"][0]["route"], "app1");
    assert_eq!(shop["members"][2]["state"], "standby");

    let app1 = spawn_backend("app1").await;
    let app2 = spawn_backend("app2").await;
    let blog = spawn_backend("blog").await;
    let spare = spawn_backend("spare").await;
    let fleet = Fleet::start("import-vhosts", 1).await;
    let copy = fleet.dir.join("apache");
    copy_with_ports(
        &fixed,
        &copy,
        &[
            ("127.0.0.1:8080", app1.authority()),
            ("127.0.0.1:8081", app2.authority()),
            ("127.0.0.1:8082", blog.authority()),
            ("127.0.0.1:8083", spare.authority()),
        ],
    );
    let main = copy.join("apache2.conf");
    let applied = import(&[
        main.to_str().unwrap_or_default(),
        "--server-root",
        copy.to_str().unwrap_or_default(),
        "--apply",
        &api(&fleet),
        "--wait",
        "10s",
    ])
    .await;
    succeeded(&applied);

    // The shop: /api/ becomes /v1/ at the member, the client's Host kept.
    served_by(&fleet, "shop.example.test", "/api/items", &app1).await;
    served_by(&fleet, "www.shop.example.test", "/api/items", &app2).await;
    for backend in [&app1, &app2] {
        let seen = proxied(backend);
        assert!(
            !seen.is_empty() && seen.iter().all(|r| r.path == "/v1/items"),
            "{seen:?}"
        );
    }
    let last = proxied(&app2).pop().expect("app2 saw a request");
    assert_eq!(
        last.header("host").as_deref(),
        Some("www.shop.example.test")
    );
    assert!(
        proxied(&spare).is_empty(),
        "the hot standby takes nothing while both are up"
    );

    // The blog: its <Location>, its RewriteRule [P], its root; Host is the member's.
    let before = blog.request_count();
    for (path, member_path) in [
        ("/admin/users", "/wp-admin/users"),
        ("/feed/atom", "/rss/atom"),
        ("/2024/post", "/2024/post"),
    ] {
        let response = fleet.replicas[0]
            .get_with(path, &[("host", "blog.example.test")])
            .await;
        assert_eq!(response.body, "blog", "{path}");
        let seen = blog.last_request().expect("the blog saw the request");
        assert_eq!(seen.path, member_path);
        assert_eq!(seen.header("host"), Some(blog.authority()));
    }
    assert_eq!(
        blog.request_count() - before,
        3,
        "one request at the member per request sent"
    );

    // A host no vhost names: no route.
    let response = fleet.replicas[0]
        .get_with("/", &[("host", "old.example.test")])
        .await;
    assert_eq!(response.status, 404);
}

#[tokio::test]
async fn dry_run_prints_the_diff_and_applies_nothing() {
    let fleet = Fleet::start("import-dry-run", 1).await;
    let one = fixture("tutorial-1/000-default.conf");
    let applied = import(&[one.to_str().unwrap_or_default(), "--apply", &api(&fleet)]).await;
    succeeded(&applied);
    let version = fleet.cp.version().await;
    let before = fleet.cp.config().await;

    let two = fixture("tutorial-2/000-default.conf");
    let dry = import(&[
        two.to_str().unwrap_or_default(),
        "--apply",
        &api(&fleet),
        "--dry-run",
    ])
    .await;
    succeeded(&dry);
    let diff = stdout(&dry);
    let lines: Vec<&str> = diff.lines().collect();
    assert_eq!(
        lines,
        [
            "+ cluster mycluster",
            "- cluster 127_0_0_1_8080",
            "~ route default-root: cluster"
        ],
        "{diff}"
    );
    assert!(stderr(&dry).contains("nothing applied"), "{}", stderr(&dry));
    assert_eq!(fleet.cp.version().await, version);
    assert_eq!(fleet.cp.config().await, before);

    // The same file again: nothing to change.
    let same = import(&[
        one.to_str().unwrap_or_default(),
        "--apply",
        &api(&fleet),
        "--dry-run",
    ])
    .await;
    succeeded(&same);
    assert_eq!(stdout(&same), "");
}

#[tokio::test]
async fn a_config_apache_would_refuse_is_refused_with_its_line() {
    let fleet = Fleet::start("import-refused", 1).await;
    let version = fleet.cp.version().await;
    let broken = fleet.dir.join("broken.conf");
    std::fs::write(
        &broken,
        "<VirtualHost *:80>\n    ServerName a.test\n    ProxyPass / balancer://nowhere/\n</VirtualHost>\n",
    )
    .expect("write the config");
    let output = import(&[broken.to_str().unwrap_or_default(), "--apply", &api(&fleet)]).await;
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert_eq!(stdout(&output), "");
    let message = stderr(&output);
    assert!(
        message.contains(&format!(
            "{}:3: balancer://nowhere is used but never defined",
            broken.display()
        )),
        "{message}"
    );
    assert_eq!(fleet.cp.version().await, version, "nothing applied");

    let unclosed = fleet.dir.join("unclosed.conf");
    std::fs::write(
        &unclosed,
        "ProxyTimeout 5\n<Proxy balancer://c>\n  BalancerMember http://127.0.0.1:1 loadfactor=3\n",
    )
    .expect("write the config");
    let output = import(&[unclosed.to_str().unwrap_or_default()]).await;
    assert_eq!(output.status.code(), Some(2));
    assert_eq!(stdout(&output), "");
    assert!(
        stderr(&output).contains(&format!(
            "{}:2: <Proxy> is never closed",
            unclosed.display()
        )),
        "{}",
        stderr(&output)
    );

    // A good config, but no control plane at that address: exit 1, said why.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port");
    let good = fixture("tutorial-1/000-default.conf");
    let output = import(&[
        good.to_str().unwrap_or_default(),
        "--apply",
        &format!("http://{closed}"),
    ])
    .await;
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert!(
        stderr(&output).contains(&format!("GET http://{closed}/api/v1/config")),
        "{}",
        stderr(&output)
    );

    let bad_weight = fleet.dir.join("weight.conf");
    std::fs::write(
        &bad_weight,
        "<Proxy balancer://c>\n  BalancerMember http://127.0.0.1:1 loadfactor=500\n</Proxy>\n",
    )
    .expect("write the config");
    let output = import(&[bad_weight.to_str().unwrap_or_default()]).await;
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("weight.conf:2: loadfactor must be a number from 1 to 100"));
}

#[tokio::test]
async fn cookie_paths_and_domains_are_rewritten() {
    let member = spawn_scripted(|_| {
        Step::Answer(
            "HTTP/1.1 200 OK\r\n\
             set-cookie: sid=1; Path=/app/cart; Domain=backend.internal; HttpOnly\r\n\
             set-cookie: pref=2; path=/elsewhere; domain=.Backend.Internal\r\n\
             set-cookie: plain=3\r\n\
             content-length: 2\r\n\r\nok"
                .to_owned(),
        )
    })
    .await;
    let fleet = Fleet::start("import-cookies", 1).await;
    let conf = fleet.dir.join("cookies.conf");
    std::fs::write(
        &conf,
        format!(
            "<VirtualHost *:80>\n\
             ProxyPass /shop/ {url}/app/\n\
             ProxyPassReverseCookiePath /app/ /shop/\n\
             ProxyPassReverseCookieDomain backend.internal shop.example.test\n\
             </VirtualHost>\n",
            url = member.url()
        ),
    )
    .expect("write the config");
    let applied = import(&[
        conf.to_str().unwrap_or_default(),
        "--apply",
        &api(&fleet),
        "--wait",
        "10s",
    ])
    .await;
    succeeded(&applied);
    let shown = fleet.cp.config().await;
    let route = &shown["routes"][0];
    assert_eq!(route["rewrite_cookie_path"]["from"], "/app/");
    assert_eq!(route["rewrite_cookie_path"]["to"], "/shop/");
    assert_eq!(route["rewrite_cookie_domain"]["to"], "shop.example.test");

    let response = fleet.replicas[0]
        .get_with("/shop/cart", &[("host", "shop.example.test")])
        .await;
    assert_eq!(response.status, 200);
    let cookies: Vec<&str> = response
        .headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    assert_eq!(
        cookies,
        [
            "sid=1; Path=/shop/cart; Domain=shop.example.test; HttpOnly",
            "pref=2; path=/elsewhere; domain=shop.example.test",
            "plain=3",
        ]
    );
    let seen = member.seen();
    assert_eq!(seen.len(), 1, "one request at the member");
    assert_eq!(seen[0].path, "/app/cart");

    // Through the API, a bad rewrite is refused with what and where, and changes nothing.
    let version = fleet.cp.version().await;
    let mut bad = route.clone();
    bad["rewrite_cookie_path"] = serde_json::json!({"from": "app", "to": "/"});
    let name = route["name"].as_str().unwrap_or_default().to_owned();
    let response = fleet.cp.put(&format!("/api/v1/routes/{name}"), &bad).await;
    assert_eq!(response.status, 400);
    assert!(
        response
            .error_message()
            .contains("rewrite_cookie_path from \"app\" must be"),
        "{}",
        response.error_message()
    );
    bad["rewrite_cookie_path"] = serde_json::json!({"from": "/app/", "to": "/", "extra": 1});
    let response = fleet.cp.put(&format!("/api/v1/routes/{name}"), &bad).await;
    assert_eq!(response.status, 400);
    assert!(
        response.error_message().contains("extra"),
        "{}",
        response.error_message()
    );
    assert_eq!(fleet.cp.version().await, version);
}
