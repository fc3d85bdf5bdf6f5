//! The `switchyard` command line built as a binary of this crate, so that the
//! tests can run it as a child process (`env!("CARGO_BIN_EXE_sy-switchyard")`).
//! A test helper only, left out of `cargo build --release --bins` like the others.

fn main() -> std::process::ExitCode {
    switchyard_control_plane::ctl::main()
}
