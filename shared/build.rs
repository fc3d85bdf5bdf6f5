//! Generates the gRPC code from `proto/` with a vendored `protoc`, so a fresh
//! machine needs no `protoc` installed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc);
    tonic_prost_build::configure().compile_with_config(
        config,
        &["../proto/switchyard/v1/discovery.proto"],
        &["../proto"],
    )?;
    println!("cargo:rerun-if-changed=../proto");
    Ok(())
}
