//! Compiles `groundtruth/v1/*.proto` with protox (pure Rust, so no `protoc` install is needed) and
//! generates prost messages and tonic client/server code from the resulting descriptor set. The
//! descriptor set is also written to `OUT_DIR` so the crate can offer the canonical JSON mapping
//! through prost-reflect.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "groundtruth/v1/groundtruth.proto";
    println!("cargo:rerun-if-changed={proto}");
    let fds = protox::compile([proto], ["."])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    let fds_path = out.join("groundtruth_descriptor.bin");
    std::fs::write(&fds_path, prost::Message::encode_to_vec(&fds))?;
    tonic_prost_build::configure()
        .file_descriptor_set_path(&fds_path)
        .skip_protoc_run()
        .compile_fds(fds)?;
    Ok(())
}
