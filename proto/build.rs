//! Compiles the .proto files with protox (pure Rust): a fresh machine has no `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = ["lakehouse/v1/events.proto"];
    for f in files {
        println!("cargo:rerun-if-changed={f}");
    }
    let descriptors = protox::compile(files, ["."])?;
    prost_build::Config::new().compile_fds(descriptors)?;
    Ok(())
}
