//! Generates the API's Rust code from `proto/` with protox (a protobuf compiler in Rust), so a
//! fresh machine needs cargo alone, no system `protoc`.

const PROTOS: [&str; 2] = [
    "proto/herd/discovery/v1/discovery.proto",
    "proto/herd/identity/v1/identity.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }
    let fds = protox::compile(PROTOS, ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;

    Ok(())
}
