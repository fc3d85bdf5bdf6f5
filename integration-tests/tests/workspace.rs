//! What the workspace builds for a user: `cargo build --release --bins` (the
//! default members) makes the two real binaries and nothing else, so the
//! tests' helper binaries never sit beside them in `target/release`.

use std::process::Command;

use serde_json::Value;

#[test]
fn a_plain_build_makes_only_the_real_binaries() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let output = Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        // From the workspace's root, as a user builds: inside a member's
        // directory cargo builds that member.
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "cargo metadata: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let metadata: Value = serde_json::from_slice(&output.stdout).unwrap();
    let defaults: Vec<&str> = metadata["workspace_default_members"]
        .as_array()
        .expect("cargo reports the default members")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let mut binaries: Vec<&str> = metadata["packages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["id"].as_str().is_some_and(|id| defaults.contains(&id)))
        .flat_map(|p| p["targets"].as_array().unwrap())
        .filter(|t| t["kind"].as_array().unwrap().iter().any(|k| k == "bin"))
        .filter_map(|t| t["name"].as_str())
        .collect();
    binaries.sort_unstable();
    assert_eq!(
        binaries,
        [
            "switchyard",
            "switchyard-control-plane",
            "switchyard-data-plane"
        ]
    );
}
