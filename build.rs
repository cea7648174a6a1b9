//! Compiles `proto/` into Rust with a pure-Rust protobuf compiler (protox), so
//! a machine with no `protoc` builds; also writes the encoded descriptor set
//! that server reflection serves.

use std::{env, fs, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // tonic-build 0.14's own rerun option does nothing, so say it ourselves.
    println!("cargo:rerun-if-changed=proto");

    let files = [
        "rung/v1/intent.proto",
        "rung/v1/model.proto",
        "rung/v1/audience.proto",
    ];
    let fds = protox::compile(files, ["proto"])?;

    let out = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(
        out.join("rung_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // Undecodable requests are INVALID_ARGUMENT, not prost's INTERNAL.
        .codec_path("crate::grpc::codec::ProtoCodec")
        .compile_fds(fds)?;
    Ok(())
}
