//! Helpers for tests that run the `rung` binary as a user would.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Runs `rung` with `args`, without a backtrace in its errors.
pub fn rung(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rung"))
        .args(args)
        .env_remove("RUST_BACKTRACE")
        .output()
        .unwrap()
}

/// Asserts the run succeeded (showing its stderr if not); its stdout.
pub fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// An empty folder of this test's own.
pub fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `rung simulate` writes `events.csv` in `dir`.
pub fn simulated_log(dir: &Path, visitors: &str, seed: &str) -> PathBuf {
    let log = dir.join("events.csv");
    ok(&rung(&[
        "simulate",
        "--visitors",
        visitors,
        "--seed",
        seed,
        "--out",
        s(&log),
    ]));
    log
}
