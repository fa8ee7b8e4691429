//! Compiles the .proto files with protox (pure Rust): a fresh machine has no `protoc`. Writes
//! the messages, the tonic client and server of `lakehouse.v1.Lakehouse`, and the encoded
//! file descriptor set that server reflection serves.

use prost::Message as _;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = ["lakehouse/v1/events.proto", "lakehouse/v1/service.proto"];
    for f in files {
        println!("cargo:rerun-if-changed={f}");
    }
    let descriptors = protox::compile(files, ["."])?;
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("lakehouse_descriptor.bin"),
        descriptors.encode_to_vec(),
    )?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(descriptors)?;
    Ok(())
}
