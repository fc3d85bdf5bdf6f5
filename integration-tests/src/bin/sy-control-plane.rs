//! The control plane built as a binary of this crate, so that the tests can run
//! it as a child process (`env!("CARGO_BIN_EXE_sy-control-plane")`).

fn main() -> std::process::ExitCode {
    switchyard_control_plane::cli::main()
}
