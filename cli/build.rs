//! Compiles the demo's backend services from their `.proto` files with a
//! pure-Rust parser (protox, no `protoc`), and keeps their descriptor set
//! for the demo to write out beside the files.

use prost::Message;

/// The demo's services, relative to `proto/`.
const PROTOS: &[&str] = &["population/v1/population.proto", "tax/v1/tax.proto"];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for proto in PROTOS {
        println!("cargo:rerun-if-changed=proto/{proto}");
    }
    let fds = protox::compile(PROTOS, ["proto"])?;
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("demo_descriptor.binpb"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(fds)?;
    Ok(())
}
