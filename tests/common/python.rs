//! The Python environment the tests that run Python (examples/, the README's
//! recipes, the reflection client in tests/python/) share.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The interpreter of the environment `scripts/python-env.sh` keeps under
/// target/ (made, or brought up to date with examples/requirements.txt, on
/// the way).
pub fn python() -> PathBuf {
    let out = Command::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/scripts/python-env.sh"
    ))
    .output()
    .expect("scripts/python-env.sh runs");
    assert!(
        out.status.success(),
        "scripts/python-env.sh: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let path = String::from_utf8(out.stdout).unwrap();
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path.trim())
}
