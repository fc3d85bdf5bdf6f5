//! Runs the real binary: flags, the `Listening` line, a request, SIGTERM.

// Test helpers outside `#[test]` functions may unwrap too.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};

fn temp_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "switchyard-cp-bin-{}-{:016x}",
        std::process::id(),
        fastrand::u64(..)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn token<'a>(line: &'a str, name: &str) -> &'a str {
    let start = line.find(name).unwrap() + name.len();
    line[start..].split_whitespace().next().unwrap()
}

#[test]
fn starts_on_port_zero_answers_and_stops_on_sigterm() {
    let dir = temp_dir();
    let mut child = Command::new(env!("CARGO_BIN_EXE_switchyard-control-plane"))
        .args([
            "--api-listen",
            "127.0.0.1:0",
            "--grpc-listen",
            "127.0.0.1:0",
        ])
        .env("SWITCHYARD_STATE_FILE", dir.join("state.json"))
        .env_remove("RUST_LOG")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    while !line.contains("Listening") {
        line.clear();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "exited before listening"
        );
    }
    let api = token(&line, "api.addr=").to_owned();
    assert!(
        token(&line, "grpc.addr=").starts_with("127.0.0.1:"),
        "{line}"
    );

    let mut stream = TcpStream::connect(&api).unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.ends_with(r#"{"status":"ok"}"#), "{response}");

    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    assert!(child.wait().unwrap().success());
    assert!(dir.join("state.json").exists());
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn an_invalid_bootstrap_file_stops_the_start() {
    let dir = temp_dir();
    let boot = dir.join("boot.json");
    std::fs::write(&boot, r#"{ "clusters": [ { "name": "bad name" } ] }"#).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_switchyard-control-plane"))
        .args([
            "--api-listen",
            "127.0.0.1:0",
            "--grpc-listen",
            "127.0.0.1:0",
        ])
        .arg("--state-file")
        .arg(dir.join("state.json"))
        .arg("--config")
        .arg(&boot)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("boot.json"), "{stderr}");
    assert!(stderr.contains("may contain only letters"), "{stderr}");
    assert!(!stderr.contains("Listening"), "{stderr}");
    std::fs::remove_dir_all(dir).unwrap();
}
