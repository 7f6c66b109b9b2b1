//! Compiles the `.proto` files with a pure-Rust parser (protox), so no
//! `protoc` is needed on any machine.

const PROTOS: &[&str] = &[
    "proto/lienthong/identifiers/v1/identifiers.proto",
    "proto/lienthong/exchange/v1/envelope.proto",
    "proto/lienthong/globalconf/v1/globalconf.proto",
    "proto/lienthong/registry/v1/registry.proto",
    "proto/lienthong/trace/v1/trace.proto",
    "proto/lienthong/operational/v1/operational.proto",
    "proto/lienthong/allowedmethods/v1/allowed_methods.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }
    let fds = protox::compile(PROTOS, ["proto"])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(fds)?;
    Ok(())
}
