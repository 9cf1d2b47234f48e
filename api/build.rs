//! Generates the API's Rust code from `proto/` with protox (a protobuf compiler in Rust), so a
//! fresh machine needs cargo alone, no system `protoc`.

const PROTO: &str = "proto/herd/discovery/v1/discovery.proto";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed={PROTO}");
    let fds = protox::compile([PROTO], ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;

    Ok(())
}
