//! Arbitrary text as the settings file, loaded over the defaults and checked.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| rung::fuzzing::settings_file(data));
