//! `switchyard`: the command line over the control plane's REST API
//! (see [`switchyard_control_plane::ctl`]).

fn main() -> std::process::ExitCode {
    switchyard_control_plane::ctl::main()
}
