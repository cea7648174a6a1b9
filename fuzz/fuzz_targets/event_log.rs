//! Arbitrary bytes as one event-log line, read by every preset's mapping.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| rung::fuzzing::event_log_line(data));
