//! Generates the gRPC client stubs from the contract in ../../protos at build time.
//! protoc comes from the `protoc-bin-vendored` crate, so nothing has to be installed by hand.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let proto_root = manifest_dir.join("../../protos");
    let dir = proto_root.join("wfe/persistence/v1");
    let files = [
        "workflows.proto",
        "events.proto",
        "subscriptions.proto",
        "scheduled_commands.proto",
        "execution_errors.proto",
        "errors.proto",
        "locks.proto",
        "queues.proto",
        "lifecycle.proto",
        "visibility.proto",
    ]
    .map(|f| dir.join(f));

    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // The well-known types (timestamp, duration) ship with the vendored protoc.
    let wkt_include = protoc_bin_vendored::include_path()?;
    // SAFETY: build scripts are single threaded; prost-build reads PROTOC from the environment.
    unsafe { std::env::set_var("PROTOC", protoc) };

    tonic_prost_build::configure()
        .build_server(false)
        .build_client(true)
        .compile_protos(&files, &[proto_root.clone(), wkt_include])?;

    println!("cargo:rerun-if-changed={}", dir.display());
    for f in &files {
        println!("cargo:rerun-if-changed={}", f.display());
    }
    Ok(())
}
