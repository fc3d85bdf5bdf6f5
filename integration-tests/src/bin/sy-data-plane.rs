//! The data plane built as a binary of this crate, so that the tests can run it
//! as a child process (`env!("CARGO_BIN_EXE_sy-data-plane")`).

fn main() -> std::process::ExitCode {
    switchyard_data_plane::cli::main()
}
