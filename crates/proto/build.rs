//! Generates the gRPC code from `proto/*.proto` with protox (pure Rust: no system `protoc`).

use std::path::PathBuf;

use protox::prost::Message;

/// The proto files, relative to the workspace's `proto/` directory.
const PROTO_FILES: [&str; 1] = ["exchange.proto"];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let proto_dir = manifest_dir.join("../../proto");
    println!("cargo:rerun-if-changed={}", proto_dir.display());
    for file in PROTO_FILES {
        println!("cargo:rerun-if-changed={}", proto_dir.join(file).display());
    }
    let fds = protox::compile(PROTO_FILES, [&proto_dir])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    // tonic-prost-build writes the descriptor set only when it runs protoc itself, so the
    // bytes that gRPC reflection serves are written here.
    std::fs::write(out_dir.join("exchange_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(fds)?;
    Ok(())
}
