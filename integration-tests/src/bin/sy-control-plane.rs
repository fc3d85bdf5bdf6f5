//! The control plane built as a binary of this crate, so that the tests can run
//! it as a child process (`env!("CARGO_BIN_EXE_sy-control-plane")`).
//! A test helper only: the workspace's `default-members` leave this crate out, so
//! `cargo build --release --bins` builds the real binaries and not these.

fn main() -> std::process::ExitCode {
    switchyard_control_plane::cli::main()
}
