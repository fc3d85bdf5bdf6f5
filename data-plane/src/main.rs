fn main() -> std::process::ExitCode {
    switchyard_data_plane::cli::main()
}
