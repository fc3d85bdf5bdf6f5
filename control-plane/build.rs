//! Generates the client of etcd's v3 gRPC API (`proto/etcd/`: the part the
//! etcd store uses) with a vendored `protoc`, so a fresh machine needs no
//! `protoc` installed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc);
    tonic_prost_build::configure()
        .build_server(false)
        .compile_with_config(config, &["../proto/etcd/rpc.proto"], &["../proto"])?;
    println!("cargo:rerun-if-changed=../proto/etcd");
    Ok(())
}
