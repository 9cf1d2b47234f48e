//! Generates the API's Rust code from `proto/` with protox (a protobuf compiler in Rust), so a
//! fresh machine needs cargo alone, no system `protoc`.

use std::path::PathBuf;

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

    // The Discovery service once more, for the server: its responses are encoded once per
    // version and shared by every stream (`crate::encoded::Encoded`), rather than encoded again
    // for each subscriber; its requests decode as usual.
    let method = |name: &str, route: &str, input: &str| {
        tonic_prost_build::manual::Method::builder()
            .name(name)
            .route_name(route)
            .input_type(format!("crate::discovery::{input}"))
            .output_type("crate::encoded::Encoded")
            .codec_path("crate::encoded::EncodedCodec")
            .client_streaming()
            .server_streaming()
            .build()
    };
    let service = tonic_prost_build::manual::Service::builder()
        .name("Discovery")
        .package("herd.discovery.v1")
        .method(method("routing", "Routing", "RoutingRequest"))
        .method(method("endpoints", "Endpoints", "EndpointsRequest"))
        .build();
    let out = PathBuf::from(std::env::var("OUT_DIR")?).join("encoded");
    std::fs::create_dir_all(&out)?;
    tonic_prost_build::manual::Builder::new()
        .build_client(false)
        .out_dir(&out)
        .compile(&[service]);
    Ok(())
}
