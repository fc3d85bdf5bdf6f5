//! Mutual TLS on the config stream: replicas with a certificate of the client
//! CA sync and serve; one without a certificate, one of another CA, one that
//! claims another node id than its certificate names, and a plaintext one
//! are refused, never listed as synced, and never take a real replica's
//! entry; the control plane logs and counts each refusal. Bad TLS files stop
//! either binary at start with exit code 2.

use std::path::{Path, PathBuf};
use std::time::Duration;

use http::{Method, StatusCode};
use switchyard_integration_tests::process::{ChildProcess, binary};
use switchyard_integration_tests::tls_backend::TestCa;
use switchyard_integration_tests::{
    ControlPlane, DataPlane, DataPlaneOptions, TestDir, bodies, client, consistently, eventually,
    spawn_backend,
};

const DEADLINE: Duration = Duration::from_secs(30);
const EXIT_DEADLINE: Duration = Duration::from_secs(20);

/// A certificate and key signed by `ca` for `names`, written to `dir/<file>.{crt,key}`.
fn issue(ca: &TestCa, dir: &TestDir, file: &str, names: &[&str]) -> (PathBuf, PathBuf) {
    let (cert, key) = ca.server_pem(names);
    let (cert_path, key_path) = (
        dir.join(&format!("{file}.crt")),
        dir.join(&format!("{file}.key")),
    );
    std::fs::write(&cert_path, cert).expect("the certificate can be written");
    std::fs::write(&key_path, key).expect("the key can be written");
    (cert_path, key_path)
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

/// A control plane whose config stream asks for mutual TLS with `ca`.
async fn control_plane(dir: &TestDir, ca: &TestCa) -> (ControlPlane, PathBuf) {
    let ca_file = ca.write_pem(&dir.join("ca.pem"));
    let (cert, key) = issue(ca, dir, "control-plane", &["localhost", "127.0.0.1"]);
    let args = [
        "--grpc-tls-cert",
        &path(&cert),
        "--grpc-tls-key",
        &path(&key),
        "--grpc-client-ca",
        &path(&ca_file),
    ];
    let cp = ControlPlane::spawn(dir.path(), args.iter().map(|a| (*a).to_owned()).collect()).await;
    (cp, ca_file)
}

/// Options of replica `node_id` over TLS: `--control-plane-ca`, and the
/// certificate and key if given (environment twins of the flags).
fn tls_replica(
    cp: &ControlPlane,
    dir: &TestDir,
    node_id: &str,
    ca_file: &Path,
    identity: Option<&(PathBuf, PathBuf)>,
) -> DataPlaneOptions {
    let mut options = DataPlaneOptions::new(cp, node_id, &dir.join(&format!("{node_id}.json")));
    options.control_planes = vec![format!("https://{}", cp.grpc_addr())];
    options = options.env("SWITCHYARD_CONTROL_PLANE_CA", &path(ca_file));
    if let Some((cert, key)) = identity {
        options = options
            .env("SWITCHYARD_CONTROL_PLANE_CERT", &path(cert))
            .env("SWITCHYARD_CONTROL_PLANE_KEY", &path(key));
    }
    options
}

/// The value of one sample line (`name{labels} value`) of the control plane's `/metrics`.
async fn sample(cp: &ControlPlane, series: &str) -> u64 {
    let page = cp.get("/metrics").await.body;
    page.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

#[tokio::test]
async fn only_replicas_with_the_certificate_of_their_node_id_get_the_config() {
    let dir = TestDir::new("grpc-mtls");
    let ca = TestCa::new("switchyard test replicas CA");
    let (cp, ca_file) = control_plane(&dir, &ca).await;
    let a_identity = issue(&ca, &dir, "dp-a", &["dp-a"]);
    let b_identity = issue(&ca, &dir, "dp-b", &["dp-b"]);
    let a = DataPlane::spawn(tls_replica(&cp, &dir, "dp-a", &ca_file, Some(&a_identity))).await;
    let b = DataPlane::spawn(tls_replica(&cp, &dir, "dp-b", &ca_file, Some(&b_identity))).await;
    cp.wait_connected(&[&a, &b]).await;

    let backend = spawn_backend("over mutual TLS").await;
    cp.write(
        Method::PUT,
        "/api/v1/clusters/web",
        Some(&bodies::cluster(&[(&backend, 1)])),
    )
    .await;
    let version = cp
        .write(
            Method::PUT,
            "/api/v1/routes/web?wait=10s",
            Some(&bodies::route("/", "web")),
        )
        .await;
    cp.wait_synced(&[&a, &b], version).await;
    for replica in [&a, &b] {
        let response = replica.get("/").await;
        assert_eq!(
            (response.status, response.body.as_str()),
            (StatusCode::OK, "over mutual TLS")
        );
    }
    let b_peer = cp.dataplane("dp-b").await.unwrap()["peer"].clone();
    // The versions reached both replicas: measured, and both count as synced.
    assert!(sample(&cp, "switchyard_propagation_seconds_count").await >= 1);
    assert_eq!(
        sample(&cp, "switchyard_replicas{state=\"synced\"}").await,
        2
    );

    // Four that must not get in.
    let other_ca = TestCa::new("another CA");
    let rogue_identity = issue(&other_ca, &dir, "dp-rogue", &["dp-rogue"]);
    let impostor_identity = issue(&ca, &dir, "impostor", &["dp-a"]);
    let no_cert = DataPlane::spawn(tls_replica(&cp, &dir, "dp-nocert", &ca_file, None)).await;
    let rogue = DataPlane::spawn(tls_replica(
        &cp,
        &dir,
        "dp-rogue",
        &ca_file,
        Some(&rogue_identity),
    ))
    .await;
    let mut impostor_options = tls_replica(&cp, &dir, "dp-b", &ca_file, Some(&impostor_identity));
    impostor_options.cache_file = dir.join("impostor.json");
    let impostor = DataPlane::spawn(impostor_options).await;
    let mut plain_options = DataPlaneOptions::new(&cp, "dp-plain", &dir.join("dp-plain.json"));
    plain_options.control_planes = vec![format!("http://{}", cp.grpc_addr())];
    let plain = DataPlane::spawn(plain_options).await;

    // The control plane logs and counts each refusal by reason.
    let reasons = [
        "switchyard_grpc_tls_handshake_errors_total{reason=\"no_certificate\"}",
        "switchyard_grpc_tls_handshake_errors_total{reason=\"bad_certificate\"}",
        "switchyard_grpc_tls_handshake_errors_total{reason=\"not_tls\"}",
        "switchyard_config_streams_refused_total{reason=\"node_id_mismatch\"}",
    ];
    eventually("every refusal is counted", DEADLINE, async || {
        for series in reasons {
            if sample(&cp, series).await == 0 {
                return Err(format!("{series} is 0"));
            }
        }
        Ok(())
    })
    .await;
    let cp_log = cp.log().lines().join("\n");
    assert!(
        cp_log.contains("Refused a config stream connection: its TLS handshake failed"),
        "{cp_log}"
    );
    assert!(
        cp_log.contains(
            r#"the client certificate is for node id \"dp-a\" but the hello claims node id \"dp-b\""#
        ) || cp_log.contains(
            r#"the client certificate is for node id "dp-a" but the hello claims node id "dp-b""#
        ),
        "{cp_log}"
    );

    // The impostor is told why, by a PERMISSION_DENIED naming both ids.
    eventually(
        "the impostor logs why it was refused",
        DEADLINE,
        async || {
            let log = impostor.log().lines().join("\n");
            if log.contains("PERMISSION_DENIED")
                && log.contains("the client certificate is for node id")
                && log.contains("dp-a")
                && log.contains("dp-b")
            {
                Ok(())
            } else {
                Err(log)
            }
        },
    )
    .await;

    // None of them is listed, gets a config or serves; the real dp-b keeps its entry.
    consistently(
        "the intruders stay out",
        Duration::from_secs(2),
        async || {
            let listed = cp.dataplanes().await;
            for intruder in ["dp-nocert", "dp-rogue", "dp-plain"] {
                if listed.iter().any(|r| r["node_id"] == intruder) {
                    return Err(format!("{intruder} is listed: {listed:?}"));
                }
            }
            let b_entry = listed.iter().find(|r| r["node_id"] == "dp-b");
            match b_entry {
                Some(entry)
                    if entry["connected"] == true
                        && entry["state"] == "synced"
                        && entry["peer"] == b_peer => {}
                other => return Err(format!("dp-b is not the real one: {other:?}")),
            }
            if listed.len() != 2 {
                return Err(format!("not only dp-a and dp-b: {listed:?}"));
            }
            for intruder in [&no_cert, &rogue, &impostor, &plain] {
                let readiness = intruder.readiness().await;
                if readiness == StatusCode::OK {
                    return Err(format!("{} is ready", intruder.node_id()));
                }
                let response = intruder.get("/").await;
                if response.status != StatusCode::SERVICE_UNAVAILABLE {
                    return Err(format!(
                        "{} answered {}",
                        intruder.node_id(),
                        response.status
                    ));
                }
            }
            Ok(())
        },
    )
    .await;
    assert_eq!(b.get("/").await.body, "over mutual TLS");

    // What a refused replica sees: a TLS error, logged.
    for refused in [&no_cert, &rogue, &plain] {
        let log = refused.log().lines().join("\n");
        assert!(log.contains("Config stream ended"), "{log}");
    }
    for refused in [&no_cert, &rogue] {
        let log = refused.log().lines().join("\n");
        assert!(
            log.contains("without a certificate it trusts (see --control-plane-cert)"),
            "{log}"
        );
    }
    // The intruders are in no gauge either.
    assert_eq!(sample(&cp, "switchyard_replicas_known").await, 2);
    assert!(sample(&cp, "switchyard_acks_total").await >= 2);
}

#[tokio::test]
async fn without_node_id_a_replica_is_named_by_its_certificate() {
    let dir = TestDir::new("grpc-mtls-name");
    let ca = TestCa::new("switchyard test replicas CA");
    let (cp, ca_file) = control_plane(&dir, &ca).await;
    let (cert, key) = issue(&ca, &dir, "named", &["dp-named.example"]);
    let args: Vec<String> = [
        "--control-plane",
        &format!("https://{}", cp.grpc_addr()),
        "--control-plane-ca",
        &path(&ca_file),
        "--control-plane-cert",
        &path(&cert),
        "--control-plane-key",
        &path(&key),
        "--listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
    ]
    .iter()
    .map(|a| (*a).to_owned())
    .collect();
    let mut replica = ChildProcess::start("data plane", binary("sy-data-plane"), &args, &[]);
    let addrs = replica
        .wait_for_addresses(&["listen.addr=", "admin.addr="])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let version = cp
        .write(
            Method::PUT,
            "/api/v1/clusters/web",
            Some(&bodies::cluster(&[(&spawn_backend("named").await, 1)])),
        )
        .await;
    eventually(
        "the replica is listed by its certificate's name",
        DEADLINE,
        async || match cp.dataplane("dp-named.example").await {
            Some(entry) if entry["state"] == "synced" && entry["version"] == version => Ok(()),
            other => Err(format!("{other:?} in {:?}", cp.dataplanes().await)),
        },
    )
    .await;
    let running = client::get(&format!("http://{}/config", addrs[1])).await;
    assert_eq!(running.status, StatusCode::OK);
    assert!(
        running.body.contains(&format!("\"version\":{version}")),
        "{}",
        running.body
    );
    replica.kill9();
}

/// Starts `program` with `args` and waits for it to exit; its exit code and log.
async fn run_until_exit(program: &str, args: &[String]) -> (Option<i32>, String) {
    let mut process = ChildProcess::start(program, binary(program), args, &[]);
    let status = eventually("it exits on its own", EXIT_DEADLINE, async || {
        process.exit_status().ok_or("still running")
    })
    .await;
    let log = eventually("its log ends", EXIT_DEADLINE, async || {
        let lines = process.log().lines().join("\n");
        if lines.contains("Cannot use the gRPC TLS flags") || lines.contains("Data plane failed") {
            Ok(lines)
        } else {
            Err(lines)
        }
    })
    .await;
    (status.code(), log)
}

#[tokio::test]
async fn bad_tls_files_stop_the_start_with_exit_code_2() {
    let dir = TestDir::new("grpc-mtls-files");
    let ca = TestCa::new("switchyard test CA");
    let (cert, key) = issue(&ca, &dir, "good", &["localhost"]);
    let (_, other_key) = issue(&ca, &dir, "other", &["other"]);
    let garbage = dir.join("garbage.pem");
    std::fs::write(&garbage, "not a certificate").unwrap();
    let missing = dir.join("missing.pem");
    let cp_args = |extra: &[&str]| -> Vec<String> {
        let mut args = vec![
            "--api-listen".to_owned(),
            "127.0.0.1:0".to_owned(),
            "--grpc-listen".to_owned(),
            "127.0.0.1:0".to_owned(),
            "--state-file".to_owned(),
            path(&dir.join("state.json")),
        ];
        args.extend(extra.iter().map(|a| (*a).to_owned()));
        args
    };

    let cases: [(&[&str], String); 4] = [
        (
            &[
                "--grpc-tls-cert",
                &path(&missing),
                "--grpc-tls-key",
                &path(&key),
            ],
            format!("--grpc-tls-cert {}: cannot read it", path(&missing)),
        ),
        (
            &[
                "--grpc-tls-cert",
                &path(&cert),
                "--grpc-tls-key",
                &path(&other_key),
            ],
            format!(
                "--grpc-tls-key {}: the private key does not match the certificate of --grpc-tls-cert {}",
                path(&other_key),
                path(&cert)
            ),
        ),
        (
            &[
                "--grpc-tls-cert",
                &path(&cert),
                "--grpc-tls-key",
                &path(&key),
                "--grpc-client-ca",
                &path(&garbage),
            ],
            format!("--grpc-client-ca {}: not PEM", path(&garbage)),
        ),
        (
            &["--grpc-client-ca", &path(&cert)],
            "--grpc-client-ca needs --grpc-tls-cert".to_owned(),
        ),
    ];
    for (extra, message) in cases {
        let (code, log) = run_until_exit("sy-control-plane", &cp_args(extra)).await;
        assert_eq!(code, Some(2), "{extra:?}:\n{log}");
        assert!(
            log.contains(&message),
            "{extra:?}: no {message:?} in:\n{log}"
        );
    }

    let dp_args = |extra: &[&str]| -> Vec<String> {
        let mut args: Vec<String> = [
            "--control-plane",
            "https://127.0.0.1:1",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ]
        .iter()
        .map(|a| (*a).to_owned())
        .collect();
        args.extend(extra.iter().map(|a| (*a).to_owned()));
        args
    };
    let cases: [(&[&str], String); 3] = [
        (
            &["--control-plane-ca", &path(&garbage)],
            format!("--control-plane-ca {}: not PEM", path(&garbage)),
        ),
        (
            &[
                "--control-plane-cert",
                &path(&cert),
                "--control-plane-key",
                &path(&missing),
            ],
            format!("--control-plane-key {}: cannot read it", path(&missing)),
        ),
        (
            &["--control-plane-cert", &path(&cert)],
            "--control-plane-cert and --control-plane-key go together".to_owned(),
        ),
    ];
    for (extra, message) in cases {
        let (code, log) = run_until_exit("sy-data-plane", &dp_args(extra)).await;
        assert_eq!(code, Some(2), "{extra:?}:\n{log}");
        assert!(
            log.contains(&message),
            "{extra:?}: no {message:?} in:\n{log}"
        );
    }
}
