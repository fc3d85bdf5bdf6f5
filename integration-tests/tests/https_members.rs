//! `https://` members: the data plane speaks TLS to them, verifying their
//! certificates against the webpki roots plus `--upstream-ca`; a failed
//! handshake counts as a failed connect (the request goes to another member,
//! 503 when none is left), and a CA file it cannot use stops the start.

use http::{Method, StatusCode};
use serde_json::{Value, json};
use switchyard_integration_tests::process::{ChildProcess, binary};
use switchyard_integration_tests::tls_backend::{
    TestCa, TlsBackend, spawn_tls_backend, spawn_tls_backend_for,
};
use switchyard_integration_tests::{
    DataPlane, DataPlaneOptions, Fleet, TestDir, bodies, eventually, get, secs, spawn_backend,
};
use tokio::net::TcpListener;

const UPSTREAM_CA: &str = "SWITCHYARD_UPSTREAM_CA";

/// A route for requests with `Host: host` to `cluster`, sending the member's
/// own `host:port` as `Host`.
fn host_route(host: &str, cluster: &str) -> Value {
    json!({
        "path_prefix": "/",
        "host": host,
        "cluster": cluster,
        "rewrite_prefix": null,
        "preserve_host": false,
        "rewrite_redirects": false,
    })
}

/// A cluster of one member at `url`.
fn cluster_of(url: &str) -> Value {
    json!({ "policy": "round_robin", "members": [ { "url": url, "weight": 1 } ] })
}

/// A fleet whose replicas `with_ca` get `SWITCHYARD_UPSTREAM_CA=ca_file`.
async fn fleet(label: &str, replicas: usize, with_ca: &[&str], ca_file: &str) -> Fleet {
    let with_ca: Vec<String> = with_ca.iter().map(|n| (*n).to_owned()).collect();
    Fleet::start_with(label, replicas, move |options: DataPlaneOptions| {
        if with_ca.contains(&options.node_id) {
            options.env(UPSTREAM_CA, ca_file)
        } else {
            options
        }
    })
    .await
}

/// `GET /` with `Host: host` through `replica`, which must answer 200 with the
/// backend's body; returns the response.
async fn get_ok(
    replica: &DataPlane,
    host: &str,
    backend: &TlsBackend,
) -> switchyard_integration_tests::Response {
    let response = replica.get_with("/", &[("host", host)]).await;
    assert_eq!(
        response.status,
        StatusCode::OK,
        "{} for {host}: {response:?}",
        replica.node_id()
    );
    assert_eq!(response.body, backend.body());
    response
}

/// With the test CA given by `SWITCHYARD_UPSTREAM_CA`, an `https://localhost:PORT`
/// member is reached over TLS with SNI `localhost` and ALPN `http/1.1`, and an
/// `https://127.0.0.1:PORT` one with its IP address checked against the
/// certificate (and no SNI). A replica started without the CA refuses the
/// member's certificate: 503, and the body says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_members_are_verified_with_the_upstream_ca() {
    let files = TestDir::new("https-ca-files");
    let ca = TestCa::new("Switchyard test CA");
    let ca_file = ca.write_pem(&files.join("ca.pem"));
    let ca_file = ca_file.display().to_string();
    let fleet = fleet("https-members", 2, &["dp-1"], &ca_file).await;
    let (cp, with_ca, without_ca) = (&fleet.cp, &fleet.replicas[0], &fleet.replicas[1]);
    let backend = spawn_tls_backend("secure hello", &ca).await;
    let port = backend.port();

    cp.write(
        Method::PUT,
        "/api/v1/clusters/by-name",
        Some(&cluster_of(&format!("https://localhost:{port}"))),
    )
    .await;
    cp.write(
        Method::PUT,
        "/api/v1/clusters/by-ip",
        Some(&cluster_of(&format!("https://127.0.0.1:{port}"))),
    )
    .await;
    cp.write(
        Method::PUT,
        "/api/v1/routes/by-name",
        Some(&host_route("name.test", "by-name")),
    )
    .await;
    let version = cp
        .write(
            Method::PUT,
            "/api/v1/routes/by-ip?wait=5s",
            Some(&host_route("ip.test", "by-ip")),
        )
        .await;
    fleet.wait_synced(version).await;

    // By name: SNI and certificate name `localhost`; pooled connections reused.
    for _ in 0..3 {
        let response = get_ok(with_ca, "name.test", &backend).await;
        assert_eq!(
            response.header("x-seen-host"),
            Some(format!("localhost:{port}").as_str())
        );
        assert_eq!(response.header("x-seen-sni"), Some("localhost"));
        assert_eq!(response.header("x-seen-alpn"), Some("http/1.1"));
    }
    // By IP address: the certificate's IP address SAN is what is checked; no SNI.
    let response = get_ok(with_ca, "ip.test", &backend).await;
    assert_eq!(
        response.header("x-seen-host"),
        Some(format!("127.0.0.1:{port}").as_str())
    );
    assert_eq!(response.header("x-seen-sni"), Some("-"));
    assert_eq!(response.header("x-seen-alpn"), Some("http/1.1"));
    assert_eq!(backend.request_count(), 4);

    // Without the CA, the certificate is not trusted: nothing reaches the member.
    for host in ["name.test", "ip.test"] {
        let response = without_ca.get_with("/", &[("host", host)]).await;
        assert_eq!(
            response.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{host}: {response:?}"
        );
        assert!(
            response.body.contains("TLS handshake failed")
                && response.body.contains("invalid peer certificate")
                && response.body.contains("UnknownIssuer"),
            "{host}: the 503 says why: {:?}",
            response.body
        );
    }
    assert_eq!(
        backend.request_count(),
        4,
        "an untrusted member got requests"
    );
    // The replica with the CA is not affected.
    get_ok(with_ca, "name.test", &backend).await;
}

/// A certificate from the trusted CA but for another name is refused too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_for_another_name_is_refused() {
    let files = TestDir::new("https-name-files");
    let ca = TestCa::new("Switchyard test CA");
    let ca_file = ca.write_pem(&files.join("ca.pem"));
    let fleet = fleet(
        "https-wrong-name",
        1,
        &["dp-1"],
        &ca_file.display().to_string(),
    )
    .await;
    let (cp, replica) = (&fleet.cp, &fleet.replicas[0]);
    let backend = spawn_tls_backend_for("elsewhere", &ca, &["other.test"]).await;

    cp.write(
        Method::PUT,
        "/api/v1/clusters/wrong-name",
        Some(&cluster_of(&format!(
            "https://localhost:{}",
            backend.port()
        ))),
    )
    .await;
    let version = cp
        .write(
            Method::PUT,
            "/api/v1/routes/web?wait=5s",
            Some(&bodies::route("/", "wrong-name")),
        )
        .await;
    fleet.wait_synced(version).await;

    let response = replica.get("/").await;
    assert_eq!(
        response.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{response:?}"
    );
    assert!(
        response.body.contains("invalid peer certificate")
            && response.body.contains("not valid for name"),
        "the 503 says why: {:?}",
        response.body
    );
    assert_eq!(backend.request_count(), 0);
}

/// An `https://` member that refuses connections, and one that accepts but
/// never finishes the handshake, are connect failures: the request goes to the
/// plain `http://` member of the cluster, and both are left out for their
/// retry window.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_https_members_are_skipped_for_a_plain_one() {
    let files = TestDir::new("https-skip-files");
    let ca = TestCa::new("Switchyard test CA");
    let ca_file = ca.write_pem(&files.join("ca.pem"));
    let fleet = fleet("https-skip", 1, &["dp-1"], &ca_file.display().to_string()).await;
    let (cp, replica) = (&fleet.cp, &fleet.replicas[0]);

    // A TLS member that is gone: its port refuses connections.
    let gone = spawn_tls_backend("gone", &ca).await;
    let refused_port = gone.port();
    gone.stop().await;
    // A member that accepts connections and never says a word.
    let silent = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a listener on 127.0.0.1:0");
    let silent_port = silent.local_addr().expect("an address").port();
    let silent_task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = silent.accept().await {
            held.push(stream);
        }
    });
    let plain = spawn_backend("plain").await;

    let cluster = json!({
        "policy": "round_robin",
        "connect_timeout": "300ms",
        "retry_window": "60s",
        "members": [
            { "url": format!("https://127.0.0.1:{refused_port}"), "weight": 1 },
            { "url": format!("https://localhost:{silent_port}"), "weight": 1 },
            { "url": plain.url(), "weight": 1 },
        ],
    });
    cp.write(Method::PUT, "/api/v1/clusters/mixed", Some(&cluster))
        .await;
    let version = cp
        .write(
            Method::PUT,
            "/api/v1/routes/web?wait=5s",
            Some(&bodies::route("/", "mixed")),
        )
        .await;
    fleet.wait_synced(version).await;

    for _ in 0..6 {
        let response = replica.get("/").await;
        assert_eq!(response.status, StatusCode::OK, "{response:?}");
        assert_eq!(response.body, "plain");
    }
    assert_eq!(plain.request_count(), 6);

    let members = get(&replica.admin_url("/members")).await;
    assert_eq!(members.status, StatusCode::OK, "{members:?}");
    let detail = |id: &str| -> String {
        members
            .json()
            .as_array()
            .and_then(|all| all.iter().find(|m| m["member_id"] == id))
            .and_then(|m| m["detail"].as_str().map(str::to_owned))
            .unwrap_or_else(|| panic!("member {id} in {}", members.body))
    };
    let refused = detail(&format!("127.0.0.1:{refused_port}"));
    assert!(
        refused.contains("in retry window") && refused.contains("connection was refused"),
        "{refused}"
    );
    let silent = detail(&format!("localhost:{silent_port}"));
    assert!(
        silent.contains("in retry window")
            && silent.contains("TLS handshake failed")
            && silent.contains("timed out"),
        "{silent}"
    );
    silent_task.abort();
}

/// A CA file that cannot be used is a start-up error that names the flag and the file.
#[tokio::test]
async fn an_unusable_upstream_ca_file_stops_the_start() {
    let files = TestDir::new("https-bad-ca");
    let not_pem = files.join("not-a-ca.pem");
    std::fs::write(&not_pem, "this is not a certificate\n").expect("a file can be written");
    let missing = files.join("missing.pem");
    for (file, why) in [
        (&not_pem, "no PEM certificate"),
        (&missing, "cannot read it"),
    ] {
        let file = file.display().to_string();
        let args: Vec<String> = ["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"]
            .iter()
            .map(|a| (*a).to_owned())
            .collect();
        let mut process = ChildProcess::start(
            "data plane with a bad CA file",
            binary("sy-data-plane"),
            &args,
            &[(UPSTREAM_CA.to_owned(), file.clone())],
        );
        let status = eventually("the data plane exits", secs(30), async || {
            process.exit_status().ok_or("still running")
        })
        .await;
        assert!(!status.success(), "it exited with {status}");
        let expected = format!("--upstream-ca {file}");
        eventually("the error is logged", secs(5), async || {
            let lines = process.log().lines();
            match lines
                .iter()
                .any(|line| line.contains(&expected) && line.contains(why))
            {
                true => Ok(()),
                false => Err(format!("{expected:?} and {why:?} not in {lines:#?}")),
            }
        })
        .await;
        assert_eq!(
            process.log().count_matching("listen.addr="),
            0,
            "it listened before checking the CA file"
        );
    }
}
