//! TLS for clients (`--tls-listen`, `--tls-cert`/`--tls-key`): HTTP/1.1 and h2
//! over TLS by ALPN, the certificate picked by SNI, TLS 1.2 and 1.3 only,
//! `X-Forwarded-Proto: https` to the member (one request per client request),
//! certificates replaced when their files change (open connections keep
//! going; a broken file changes nothing and is counted), a bad certificate at
//! start (exit code 2, the file named), a handshake cut by the header clock,
//! and a route's `https_redirect` on the plain listener.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::{Method, StatusCode, Version};
use serde_json::json;
use switchyard_integration_tests::process::{ChildProcess, binary};
use switchyard_integration_tests::tls_backend::TestCa;
use switchyard_integration_tests::tls_client::{
    TlsConnection, TlsOptions, Trust, connect, connect_raw, der_of,
};
use switchyard_integration_tests::{
    Backend, Client, DataPlane, DataPlaneOptions, Fleet, TestDir, bodies, eventually, get, secs,
    spawn_backend,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The longest a TLS connection or request may take in these tests.
const IO_DEADLINE: Duration = Duration::from_secs(10);

/// A pair of PEM files for `--tls-cert` / `--tls-key`.
#[derive(Debug, Clone)]
struct PemFiles {
    cert: PathBuf,
    key: PathBuf,
}

impl PemFiles {
    /// Writes a certificate for `names` signed by `ca` (and its key) as
    /// `<stem>.crt` / `<stem>.key` in `dir`; returns the files and the certificate's PEM.
    fn write(dir: &Path, stem: &str, ca: &TestCa, names: &[&str]) -> (Self, String) {
        let files = PemFiles {
            cert: dir.join(format!("{stem}.crt")),
            key: dir.join(format!("{stem}.key")),
        };
        let cert = files.rewrite(ca, names);
        (files, cert)
    }

    /// Writes a new certificate for `names` and its key over the files; returns its PEM.
    fn rewrite(&self, ca: &TestCa, names: &[&str]) -> String {
        let (cert, key) = ca.server_pem(names);
        std::fs::write(&self.cert, &cert).expect("the certificate can be written");
        std::fs::write(&self.key, &key).expect("the key can be written");
        cert
    }
}

/// A replica with a TLS listener for `pairs` (given as the environment
/// twins of the flags: comma-separated lists), serving route `r` (any host,
/// `/`, `Host` preserved) to `backend`, with the extra environment `env`.
async fn tls_fleet(
    label: &str,
    pairs: &[&PemFiles],
    backend: &Backend,
    env: &[(&str, &str)],
) -> Fleet {
    let list = |file: fn(&PemFiles) -> &PathBuf| {
        let files: Vec<String> = pairs
            .iter()
            .map(|p| file(p).display().to_string())
            .collect();
        files.join(",")
    };
    let mut env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    env.extend([
        ("SWITCHYARD_TLS_LISTEN".to_owned(), "127.0.0.1:0".to_owned()),
        ("SWITCHYARD_TLS_CERT".to_owned(), list(|p| &p.cert)),
        ("SWITCHYARD_TLS_KEY".to_owned(), list(|p| &p.key)),
    ]);
    Fleet::serving_with(
        label,
        &bodies::cluster(&[(backend, 1)]),
        move |mut options: DataPlaneOptions| {
            for (key, value) in &env {
                options = options.env(key, value);
            }
            options
        },
    )
    .await
}

/// `future`, or a panic naming `what` if it takes longer than [`IO_DEADLINE`].
async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(IO_DEADLINE, future)
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer within {IO_DEADLINE:?}"))
}

/// A TLS connection to `replica` with `options`; panics if the handshake fails.
async fn open(replica: &DataPlane, options: &TlsOptions) -> TlsConnection {
    within("TLS connect", connect(replica.tls_addr(), options))
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

/// The value of the metric line that starts with `line` on the replica's `/metrics`.
async fn metric(replica: &DataPlane, line: &str) -> u64 {
    get(&replica.admin_url("/metrics"))
        .await
        .body
        .lines()
        .find_map(|l| l.strip_prefix(line)?.trim().parse().ok())
        .unwrap_or(0)
}

/// HTTP/1.1 over TLS (ALPN `http/1.1`, the certificate verified against the
/// test CA for its name) and h2 over TLS (ALPN `h2`) reach the member once per
/// request, with `X-Forwarded-Proto: https`; the plain listener still sends
/// `http`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_and_h2_over_tls_reach_the_member_once_with_forwarded_proto_https() {
    let files = TestDir::new("tls-clients-protocols-files");
    let ca = TestCa::new("Switchyard client TLS test CA");
    let (pair, _) = PemFiles::write(files.path(), "site", &ca, &["site.test"]);
    let backend = spawn_backend("over tls").await;
    let fleet = tls_fleet("tls-clients-protocols", &[&pair], &backend, &[]).await;
    let replica = &fleet.replicas[0];
    let trust = Trust::Ca(ca.pem());

    let mut h1 = open(replica, &TlsOptions::new("site.test", trust.clone())).await;
    assert_eq!(h1.alpn.as_deref(), Some(&b"http/1.1"[..]));
    for n in 1..=2 {
        let response = within("GET over TLS", h1.get(&format!("/h1/{n}")))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(response.status, StatusCode::OK, "{response:?}");
        assert_eq!(response.version, Version::HTTP_11);
        assert_eq!(response.body, "over tls");
        assert_eq!(
            backend.request_count(),
            n,
            "one member request per client request"
        );
        let seen = backend.last_request().expect("the member saw the request");
        assert_eq!(seen.path, format!("/h1/{n}"));
        assert_eq!(seen.header("x-forwarded-proto").as_deref(), Some("https"));
        assert_eq!(
            seen.header("x-forwarded-host").as_deref(),
            Some("site.test")
        );
    }

    let options = TlsOptions::new("site.test", trust).alpn(&[b"h2", b"http/1.1"]);
    let mut h2 = open(replica, &options).await;
    assert_eq!(h2.alpn.as_deref(), Some(&b"h2"[..]));
    let response = within("GET over h2", h2.get("/h2"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(response.status, StatusCode::OK, "{response:?}");
    assert_eq!(response.version, Version::HTTP_2);
    assert_eq!(response.body, "over tls");
    assert_eq!(backend.request_count(), 3);
    let seen = backend
        .last_request()
        .expect("the member saw the h2 request");
    assert_eq!(seen.path, "/h2");
    assert_eq!(seen.header("x-forwarded-proto").as_deref(), Some("https"));

    let plain = replica
        .get_with("/plain", &[("x-forwarded-proto", "https")])
        .await;
    assert_eq!(plain.status, StatusCode::OK, "{plain:?}");
    assert_eq!(backend.request_count(), 4);
    let seen = backend
        .last_request()
        .expect("the member saw the plain request");
    assert_eq!(
        seen.header("x-forwarded-proto").as_deref(),
        Some("http"),
        "the client's own X-Forwarded-Proto is replaced"
    );
}

/// With several pairs, SNI picks the certificate whose names match (exact,
/// then wildcard); an unknown name or no SNI gets the first pair.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sni_picks_the_certificate_by_its_names() {
    let files = TestDir::new("tls-clients-sni-files");
    let ca = TestCa::new("Switchyard client TLS test CA");
    let (first, first_pem) = PemFiles::write(files.path(), "first", &ca, &["first.test"]);
    let (wild, wild_pem) = PemFiles::write(files.path(), "wild", &ca, &["*.wild.test"]);
    let (api, api_pem) =
        PemFiles::write(files.path(), "api", &ca, &["api.wild.test", "other.test"]);
    let backend = spawn_backend("sni").await;
    let fleet = tls_fleet("tls-clients-sni", &[&first, &wild, &api], &backend, &[]).await;
    let replica = &fleet.replicas[0];

    let cases = [
        ("first.test", &first_pem),
        ("api.wild.test", &api_pem),
        ("other.test", &api_pem),
        ("www.wild.test", &wild_pem),
        ("a.b.wild.test", &first_pem),
        ("unknown.test", &first_pem),
        // An IP address is never sent as SNI.
        ("127.0.0.1", &first_pem),
    ];
    for (name, expected) in cases {
        let mut connection = open(replica, &TlsOptions::new(name, Trust::Any)).await;
        assert!(
            connection.peer_certificate == der_of(expected),
            "SNI {name}: another certificate was sent"
        );
        let response = within("GET", connection.get("/"))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(response.status, StatusCode::OK, "{name}: {response:?}");
    }
    // Verified for real: the wildcard certificate is valid for a name it covers.
    let mut verified = open(
        replica,
        &TlsOptions::new("www.wild.test", Trust::Ca(ca.pem())),
    )
    .await;
    let response = within("GET", verified.get("/")).await;
    assert!(response.is_ok(), "{response:?}");
}

/// A TLS 1.0 or 1.1 ClientHello (no `supported_versions` extension), byte by byte.
fn legacy_client_hello(minor: u8) -> Vec<u8> {
    let mut body = vec![3, minor];
    body.extend([0x5a; 32]); // random
    body.push(0); // no session id
    body.extend([0, 4, 0xc0, 0x13, 0x00, 0x2f]); // ECDHE-RSA- and RSA-AES128-SHA
    body.extend([1, 0]); // null compression
    // signature_algorithms (which rustls asks for before it looks at the
    // version): ecdsa_secp256r1_sha256, rsa_pkcs1_sha256.
    body.extend([0, 10, 0, 13, 0, 6, 0, 4, 4, 3, 4, 1]);
    let mut handshake = vec![1, 0, 0, u8::try_from(body.len()).expect("short")];
    handshake.extend(body);
    let mut record = vec![0x16, 3, 1, 0, u8::try_from(handshake.len()).expect("short")];
    record.extend(handshake);
    record
}

/// Only TLS 1.2 and 1.3 are spoken: a client forcing either gets it; a TLS
/// 1.0 or 1.1 ClientHello gets a `protocol_version` alert (and is counted).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_tls_1_2_and_1_3_are_spoken() {
    let files = TestDir::new("tls-clients-versions-files");
    let ca = TestCa::new("Switchyard client TLS test CA");
    let (pair, _) = PemFiles::write(files.path(), "site", &ca, &["site.test"]);
    let backend = spawn_backend("versions").await;
    let fleet = tls_fleet("tls-clients-versions", &[&pair], &backend, &[]).await;
    let replica = &fleet.replicas[0];

    for (version, expected) in [
        (&rustls::version::TLS12, rustls::ProtocolVersion::TLSv1_2),
        (&rustls::version::TLS13, rustls::ProtocolVersion::TLSv1_3),
    ] {
        let options = TlsOptions::new("site.test", Trust::Ca(ca.pem())).versions(&[version]);
        let mut connection = open(replica, &options).await;
        assert_eq!(connection.version, Some(expected));
        let response = within("GET", connection.get("/")).await;
        assert!(response.is_ok_and(|r| r.status == StatusCode::OK));
    }

    let before = metric(replica, "switchyard_tls_handshake_errors_total").await;
    for minor in [1, 2] {
        let mut socket = within("connect", TcpStream::connect(replica.tls_addr()))
            .await
            .expect("the TLS port accepts");
        within("write", socket.write_all(&legacy_client_hello(minor)))
            .await
            .expect("the ClientHello is sent");
        let mut answer = Vec::new();
        within("the answer", socket.read_to_end(&mut answer))
            .await
            .expect("the replica answers and closes");
        // An alert record: level fatal (2), description protocol_version (70).
        assert_eq!(
            answer.first(),
            Some(&0x15),
            "TLS 1.{}: {answer:?}",
            minor - 1
        );
        assert_eq!(
            answer.get(5..7),
            Some(&[2, 70][..]),
            "TLS 1.{}: {answer:?}",
            minor - 1
        );
    }
    assert_eq!(
        metric(replica, "switchyard_tls_handshake_errors_total").await,
        before + 2
    );
    assert_eq!(
        backend.request_count(),
        2,
        "only the TLS 1.2 and 1.3 requests"
    );
}

/// Rewriting the files replaces the certificate for new handshakes while a
/// connection opened before keeps working; a broken file changes nothing and
/// counts a reload error; SIGHUP reloads at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_are_replaced_when_their_files_change() {
    let files = TestDir::new("tls-clients-rotation-files");
    let ca = TestCa::new("Switchyard client TLS test CA");
    let (pair, old_pem) = PemFiles::write(files.path(), "site", &ca, &["site.test"]);
    let backend = spawn_backend("rotation").await;
    let mut fleet = tls_fleet("tls-clients-rotation", &[&pair], &backend, &[]).await;
    let options = TlsOptions::new("site.test", Trust::Ca(ca.pem()));
    let replica = &fleet.replicas[0];
    assert_eq!(metric(replica, "switchyard_tls_reloads_total").await, 1);

    let mut kept = open(replica, &options).await;
    assert!(kept.peer_certificate == der_of(&old_pem));
    let first = within("GET", kept.get("/before")).await;
    assert!(first.is_ok_and(|r| r.status == StatusCode::OK));

    let new_pem = pair.rewrite(&ca, &["site.test"]);
    eventually(
        "new handshakes get the new certificate",
        secs(15),
        async || {
            let connection = open(replica, &options).await;
            if connection.peer_certificate == der_of(&new_pem) {
                Ok(())
            } else {
                Err("still the old certificate")
            }
        },
    )
    .await;
    assert_eq!(metric(replica, "switchyard_tls_reloads_total").await, 2);
    let after = within("GET on the connection opened before", kept.get("/after"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(after.status, StatusCode::OK, "{after:?}");
    assert_eq!(
        backend.last_request().map(|r| r.path).as_deref(),
        Some("/after")
    );

    std::fs::write(&pair.cert, "not a certificate").expect("the file can be written");
    eventually(
        "the broken file is counted",
        secs(15),
        async || match metric(replica, "switchyard_tls_reload_errors_total").await {
            0 => Err("no reload error yet"),
            _ => Ok(()),
        },
    )
    .await;
    let connection = open(replica, &options).await;
    assert!(
        connection.peer_certificate == der_of(&new_pem),
        "the running certificate stays"
    );
    assert!(
        replica
            .log()
            .count_matching("TLS certificates not reloaded")
            > 0
    );

    let hup_pem = pair.rewrite(&ca, &["site.test"]);
    let replica = &mut fleet.replicas[0];
    assert!(replica.hangup(), "SIGHUP sent");
    eventually("SIGHUP reloads", secs(15), async || {
        let connection = open(replica, &options).await;
        if connection.peer_certificate == der_of(&hup_pem) {
            Ok(())
        } else {
            Err("still the previous certificate")
        }
    })
    .await;
    assert!(replica.log().count_matching("SIGHUP: reloading") > 0);
    let by_hup = replica
        .log()
        .lines()
        .iter()
        .any(|l| l.contains("TLS certificates reloaded") && l.contains("SIGHUP"));
    assert!(by_hup, "the reload was SIGHUP's, not the watcher's");
    assert!(replica.is_running());
}

/// Starts the data plane with `args` and waits for it to exit; its exit
/// code and what it logged.
async fn run_until_exit(args: &[String]) -> (Option<i32>, String) {
    let mut process = ChildProcess::start("data plane", binary("sy-data-plane"), args, &[]);
    let status = eventually("the data plane exits", secs(20), async || {
        process.exit_status().ok_or("still running")
    })
    .await;
    let log = eventually("its log ends", secs(20), async || {
        let lines = process.log().lines();
        if lines.iter().any(|l| l.contains("Data plane failed")) {
            Ok(lines.join("\n"))
        } else {
            Err(lines.join("\n"))
        }
    })
    .await;
    (status.code(), log)
}

/// A certificate or key that cannot be used stops the start with exit code
/// 2 and a message naming the file and what is wrong.
#[tokio::test]
async fn a_bad_certificate_at_start_exits_2_naming_the_file() {
    let files = TestDir::new("tls-clients-bad-start");
    let ca = TestCa::new("Switchyard client TLS test CA");
    let (good, _) = PemFiles::write(files.path(), "good", &ca, &["good.test"]);
    let (other, _) = PemFiles::write(files.path(), "other", &ca, &["other.test"]);
    let garbage = files.join("garbage.crt");
    std::fs::write(&garbage, "this is no certificate").expect("write");
    let base = [
        "--listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
        "--control-plane",
        "http://127.0.0.1:1",
        "--tls-listen",
        "127.0.0.1:0",
    ];
    let cases = [
        (garbage.clone(), good.key.clone(), "garbage.crt", "not PEM"),
        (
            good.cert.clone(),
            good.cert.clone(),
            "good.crt",
            "holds no PEM private key",
        ),
        (
            good.cert.clone(),
            other.key.clone(),
            "other.key",
            "does not match the certificate",
        ),
        (
            files.join("missing.crt"),
            good.key.clone(),
            "missing.crt",
            "cannot read it",
        ),
    ];
    for (cert, key, file, reason) in cases {
        let mut args: Vec<String> = base.iter().map(|a| (*a).to_owned()).collect();
        args.extend([
            "--tls-cert".to_owned(),
            cert.display().to_string(),
            "--tls-key".to_owned(),
            key.display().to_string(),
        ]);
        let (code, log) = run_until_exit(&args).await;
        assert_eq!(code, Some(2), "{file}: {log}");
        let failed = log
            .lines()
            .find(|l| l.contains("Data plane failed"))
            .unwrap_or_default();
        assert!(
            failed.contains(file) && failed.contains(reason),
            "{file}, {reason}: {failed}"
        );
    }
    let mut args: Vec<String> = base.iter().map(|a| (*a).to_owned()).collect();
    args.extend(["--tls-cert".to_owned(), good.cert.display().to_string()]);
    let (code, log) = run_until_exit(&args).await;
    assert_eq!(code, Some(2), "{log}");
    assert!(log.contains("come in pairs"), "{log}");
}

/// A TLS handshake that does not finish within `--client-header-timeout` is
/// cut, and counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handshake_that_does_not_finish_in_time_is_cut() {
    let files = TestDir::new("tls-clients-slow-files");
    let ca = TestCa::new("Switchyard client TLS test CA");
    let (pair, _) = PemFiles::write(files.path(), "site", &ca, &["site.test"]);
    let backend = spawn_backend("slow").await;
    let fleet = tls_fleet(
        "tls-clients-slow",
        &[&pair],
        &backend,
        &[("SWITCHYARD_CLIENT_HEADER_TIMEOUT", "1s")],
    )
    .await;
    let replica = &fleet.replicas[0];
    let mut socket = within("connect", TcpStream::connect(replica.tls_addr()))
        .await
        .expect("the TLS port accepts");
    // Half a record header, then nothing.
    within("write", socket.write_all(&[0x16, 3]))
        .await
        .expect("written");
    let mut rest = Vec::new();
    let closed = within("the replica closes", socket.read_to_end(&mut rest)).await;
    assert!(
        closed.is_err() || rest.is_empty(),
        "nothing is answered: {rest:?}"
    );
    let line = "switchyard_client_limits_total{reason=\"tls_handshake_timeout\"}";
    eventually("the cut is counted", secs(10), async || {
        match metric(replica, line).await {
            1 => Ok(()),
            n => Err(format!("{n}")),
        }
    })
    .await;
    // A client that is on time is still served.
    let mut connection = open(replica, &TlsOptions::new("site.test", Trust::Ca(ca.pem()))).await;
    let response = within("GET", connection.get("/")).await;
    assert!(response.is_ok_and(|r| r.status == StatusCode::OK));
}

/// `https_redirect`: on the plain listener, 301 (GET, HEAD) or 308 (other
/// methods) to the same host, path and query on the TLS port, and the member
/// sees nothing; over TLS the route is proxied. A non-boolean value is
/// refused and changes nothing; the field shows in `GET /api/v1/config`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_redirect_sends_plain_requests_to_the_tls_port() {
    let files = TestDir::new("tls-clients-redirect-files");
    let ca = TestCa::new("Switchyard client TLS test CA");
    let (pair, _) = PemFiles::write(files.path(), "site", &ca, &["site.test"]);
    let backend = spawn_backend("redirected").await;
    let fleet = tls_fleet("tls-clients-redirect", &[&pair], &backend, &[]).await;
    let (cp, replica) = (&fleet.cp, &fleet.replicas[0]);

    let mut route = bodies::route("/secure/", "c");
    route["https_redirect"] = json!(true);
    let version = cp
        .write(Method::PUT, "/api/v1/routes/secure?wait=5s", Some(&route))
        .await;
    let config = cp.config().await;
    let shown = config["routes"]
        .as_array()
        .and_then(|routes| routes.iter().find(|r| r["name"] == "secure"))
        .map(|r| r["https_redirect"].clone());
    assert_eq!(shown, Some(json!(true)), "{config}");
    let plain_route = config["routes"]
        .as_array()
        .and_then(|routes| routes.iter().find(|r| r["name"] == "r"))
        .map(|r| r["https_redirect"].clone());
    assert_eq!(plain_route, Some(json!(false)), "{config}");

    let mut bad = bodies::route("/other/", "c");
    bad["https_redirect"] = json!("yes");
    let refused = cp.put("/api/v1/routes/other", &bad).await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{refused:?}");
    assert!(refused.body.contains("expected a boolean"), "{refused:?}");
    assert_eq!(
        cp.version().await,
        version,
        "a refused change changes nothing"
    );

    let tls_port = replica.tls_addr().port();
    let client = Client::without_pool();
    let url = replica.url("/secure/page?x=1&y=2");
    for (method, status) in [
        (Method::GET, StatusCode::MOVED_PERMANENTLY),
        (Method::HEAD, StatusCode::MOVED_PERMANENTLY),
        (Method::POST, StatusCode::PERMANENT_REDIRECT),
        (Method::PUT, StatusCode::PERMANENT_REDIRECT),
    ] {
        let response = client
            .send(method.clone(), &url, &[("host", "site.test:8080")], None)
            .await
            .unwrap_or_else(|e| panic!("{e:#}"));
        assert_eq!(response.status, status, "{method}: {response:?}");
        assert_eq!(
            response.header("location"),
            Some(format!("https://site.test:{tls_port}/secure/page?x=1&y=2").as_str()),
            "{method}"
        );
    }
    assert_eq!(
        backend.request_count(),
        0,
        "the member saw no redirected request"
    );
    // Other routes are not redirected.
    assert_eq!(replica.get("/elsewhere").await.status, StatusCode::OK);
    assert_eq!(backend.request_count(), 1);

    let mut tls = open(replica, &TlsOptions::new("site.test", Trust::Ca(ca.pem()))).await;
    let response = within("GET over TLS", tls.get("/secure/page?x=1"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(response.status, StatusCode::OK, "{response:?}");
    assert_eq!(response.body, "redirected");
    assert_eq!(backend.request_count(), 2);
    let seen = backend.last_request().expect("seen");
    assert_eq!(seen.path, "/secure/page?x=1");
    assert_eq!(seen.header("x-forwarded-proto").as_deref(), Some("https"));
}

/// Reads from `stream` until the end of a head (`\r\n\r\n`); the head.
async fn read_head(stream: &mut (impl AsyncReadExt + Unpin)) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte).await {
            Ok(1) => head.push(byte[0]),
            other => panic!("the head ended early ({other:?}): {head:?}"),
        }
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// An `Upgrade` over TLS is tunnelled as in the clear: the member's 101
/// reaches the client, then bytes go both ways through the TLS connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_over_tls_is_tunnelled() {
    let files = TestDir::new("tls-clients-upgrade-files");
    let ca = TestCa::new("Switchyard client TLS test CA");
    let (pair, _) = PemFiles::write(files.path(), "site", &ca, &["site.test"]);
    // A member that switches to an echo protocol on its first request.
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let member_addr = listener.local_addr().expect("an address");
    let member = tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.expect("the replica connects");
        let head = read_head(&mut socket).await;
        let switch =
            b"HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: echo\r\n\r\n";
        socket.write_all(switch).await.expect("101 sent");
        let mut buffer = [0u8; 64];
        loop {
            match socket.read(&mut buffer).await {
                Ok(0) | Err(_) => return head,
                Ok(n) => {
                    if socket.write_all(&buffer[..n]).await.is_err() {
                        return head;
                    }
                }
            }
        }
    });
    let cluster = json!({ "members": [ { "url": format!("http://{member_addr}") } ] });
    let fleet = Fleet::serving_with("tls-clients-upgrade", &cluster, move |options| {
        options
            .env("SWITCHYARD_TLS_LISTEN", "127.0.0.1:0")
            .env("SWITCHYARD_TLS_CERT", &pair.cert.display().to_string())
            .env("SWITCHYARD_TLS_KEY", &pair.key.display().to_string())
    })
    .await;
    let replica = &fleet.replicas[0];
    let options = TlsOptions::new("site.test", Trust::Ca(ca.pem()));
    let mut tls = within("connect", connect_raw(replica.tls_addr(), &options))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let request =
        b"GET /up HTTP/1.1\r\nhost: site.test\r\nconnection: upgrade\r\nupgrade: echo\r\n\r\n";
    within("the upgrade request", tls.write_all(request))
        .await
        .expect("sent");
    let head = within("the 101", read_head(&mut tls)).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    for message in [&b"ping"[..], b"over tls, twice"] {
        within("write", tls.write_all(message)).await.expect("sent");
        let mut echoed = vec![0u8; message.len()];
        within("the echo", tls.read_exact(&mut echoed))
            .await
            .expect("echoed");
        assert_eq!(echoed, message);
    }
    drop(tls);
    let seen = within("the member ends", member)
        .await
        .expect("the member task");
    assert!(
        seen.to_ascii_lowercase()
            .contains("x-forwarded-proto: https"),
        "{seen}"
    );
}
