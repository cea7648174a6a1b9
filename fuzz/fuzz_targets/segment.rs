//! Arbitrary text as a segment definition, text or JSON form, parsed and checked.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| rung::fuzzing::segment(data));
