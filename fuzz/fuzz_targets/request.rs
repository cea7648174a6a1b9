//! Arbitrary bytes as a gRPC request body: prost decode, then the handler's validation.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| rung::fuzzing::request(data));
