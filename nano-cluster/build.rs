//! Compiles every `.proto` under `proto/` without a system `protoc`: `protox` (a protobuf
//! compiler in Rust) builds the file descriptor set, `tonic-build` generates messages, clients
//! and servers into `OUT_DIR`, one file per proto package (`nano.discovery.v1.rs`, ...), plus
//! `protos.rs`, which nests them as modules by package (`nano::discovery::v1`): a new `.proto`
//! file shows up in `nano_cluster::proto` without touching this file or `lib.rs`.

use std::path::{Path, PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = Path::new("proto");
    println!("cargo:rerun-if-changed={}", dir.display());
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "proto"))
        .collect();
    files.sort();
    for file in &files {
        println!("cargo:rerun-if-changed={}", file.display());
    }
    let descriptors = protox::compile(&files, [dir])?;
    tonic_build::configure()
        .build_client(true)
        .build_server(true)
        // payloads as `bytes::Bytes`: a push is shared, not copied, when a gate fans it out
        .bytes([".nano.link.v1"])
        .include_file("protos.rs")
        .compile_fds(descriptors)?;
    Ok(())
}
