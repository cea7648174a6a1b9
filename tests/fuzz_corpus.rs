//! The committed fuzz corpus (`fuzz/corpus/<target>/`) replayed through the
//! same functions the fuzz targets call, so CI guards every input a fuzzer
//! ever found interesting without running a fuzzer.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

use rung::fuzzing;

/// Runs every file of one target's corpus; fails naming each file that
/// panics, and fails when the corpus is missing or empty (a renamed
/// directory must not turn the test into a silent pass).
fn replay(target: &str, body: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let entries = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read the corpus {}: {e}", dir.display()));
    let mut files = 0;
    let mut panicked = Vec::new();
    for entry in entries {
        let path = entry.expect("a directory entry").path();
        if !path.is_file() {
            continue;
        }
        let bytes = std::fs::read(&path).expect("a readable corpus file");
        files += 1;
        if catch_unwind(AssertUnwindSafe(|| body(&bytes))).is_err() {
            panicked.push(path.display().to_string());
        }
    }
    assert!(files > 0, "the corpus {} is empty", dir.display());
    assert!(panicked.is_empty(), "these inputs panic: {panicked:#?}");
}

#[test]
fn the_request_corpus_replays_without_a_panic() {
    replay("request", fuzzing::request);
}

#[test]
fn the_segment_corpus_replays_without_a_panic() {
    replay("segment", fuzzing::segment);
}

#[test]
fn the_settings_corpus_replays_without_a_panic() {
    replay("settings", fuzzing::settings_file);
}

#[test]
fn the_event_log_corpus_replays_without_a_panic() {
    replay("event_log", fuzzing::event_log_line);
}
