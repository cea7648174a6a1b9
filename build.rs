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

    // wire.proto: the requests' fields with strings as bytes, so tests can
    // build any request a client can send (repeated map keys, bytes that
    // are not UTF-8); a test checks it mirrors intent.proto.
    println!("cargo:rerun-if-changed=src/grpc/wire.proto");
    let wire = protox::compile(["wire.proto"], ["src/grpc", "proto"])?;
    let wire_out = out.join("wire");
    fs::create_dir_all(&wire_out)?;
    // For the test that checks it still mirrors intent.proto.
    fs::write(
        wire_out.join("descriptor.bin"),
        prost::Message::encode_to_vec(&wire),
    )?;
    tonic_prost_build::configure()
        .build_client(false)
        .build_server(false)
        .bytes(".rung.v1.wire")
        .out_dir(&wire_out)
        .compile_fds(wire)?;

    // IntentService's server reads its Score and Track requests with
    // src/grpc/request.rs and writes their answers with src/grpc/response.rs;
    // everything else is the public API's own types.
    let intent = protox::compile(["rung/v1/intent.proto"], ["proto"])?;
    let server_out = out.join("intent_server");
    fs::create_dir_all(&server_out)?;
    let mut server = tonic_prost_build::configure()
        .build_client(false)
        .build_server(true)
        .codec_path("crate::grpc::codec::ProtoCodec")
        .extern_path(".rung.v1", "crate::grpc::proto");
    for message in ["ScoreRequest", "ScoreBatchRequest", "TrackRequest"] {
        server = server.extern_path(
            format!(".rung.v1.{message}"),
            format!("crate::grpc::request::{message}"),
        );
    }
    for message in ["ScoreResponse", "ScoreBatchResponse", "TrackResponse"] {
        server = server.extern_path(
            format!(".rung.v1.{message}"),
            format!("crate::grpc::response::{message}"),
        );
    }
    server.out_dir(&server_out).compile_fds(intent)?;
    Ok(())
}
