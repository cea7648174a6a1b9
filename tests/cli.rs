//! The `rung` binary as an operator runs it: start, serve, stop on SIGTERM;
//! refuse to start on a configuration that does not make sense.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use rung::grpc::proto::intent_service_client::IntentServiceClient;
use rung::grpc::proto::ScoreRequest;

fn rung() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rung"));
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let data = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("rung-cli")
        .join(format!("{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    cmd.current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("RUNG_DATA_DIR", data)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    cmd
}

/// Forwards the child's stderr lines to a channel, so a test can wait for a
/// line with a deadline instead of sleeping.
fn stderr_lines(child: &mut Child) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

fn wait_for(rx: &mpsc::Receiver<String>, what: &str) -> String {
    loop {
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(line) if line.contains(what) => return line,
            Ok(_) => continue,
            Err(e) => panic!("no log line containing {what:?}: {e}"),
        }
    }
}

fn temp_file(name: &str, text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("rung-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn serve_answers_and_stops_gracefully_on_sigterm() {
    // Arrange: start the binary on an ephemeral port with JSON logs.
    let mut child = rung()
        .args(["serve", "--listen", "127.0.0.1:0", "--log-format", "json"])
        .spawn()
        .unwrap();
    let lines = stderr_lines(&mut child);
    let serving = wait_for(&lines, "\"serving\"");
    let log: serde_json::Value = serde_json::from_str(&serving).unwrap();
    let addr = log["addr"].as_str().unwrap().to_string();

    // Act: one real call, then SIGTERM.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let response = rt.block_on(async {
        let mut client = IntentServiceClient::connect(format!("http://{addr}"))
            .await
            .unwrap();
        client
            .score(ScoreRequest {
                visitor_id: "cli".into(),
                ..ScoreRequest::default()
            })
            .await
    });
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    wait_for(&lines, "SIGTERM received");
    let status = child.wait().unwrap();

    // Assert
    assert!(response.is_ok(), "{response:?}");
    assert!(killed.success());
    assert!(status.success(), "exit status {status:?}");
}

fn refused_start(args: &[&str], envs: &[(&str, &str)]) -> String {
    let mut cmd = rung();
    cmd.args(["serve", "--listen", "127.0.0.1:0"]).args(args);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    assert!(!out.status.success(), "should refuse to start");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_model_trained_on_another_taxonomy_is_refused_at_start() {
    let changed = rung::domain::taxonomy::DEFAULT_TAXONOMY_TOML.replacen(
        "name = \"add_to_cart\"\nstage = \"intent\"\npoints = 10.0",
        "name = \"add_to_cart\"\nstage = \"intent\"\npoints = 11.0",
        1,
    );
    let path = temp_file("changed-taxonomy.toml", &changed);
    let stderr = refused_start(&[], &[("RUNG_TAXONOMY", path.to_str().unwrap())]);
    assert!(
        stderr.contains("add_to_cart") && stderr.contains("retrain"),
        "{stderr}"
    );
}

#[test]
fn a_taxonomy_that_does_not_make_sense_is_refused_naming_the_entry() {
    let broken = rung::domain::taxonomy::DEFAULT_TAXONOMY_TOML.replacen(
        "stage = \"awareness\"",
        "stage = \"awarenes\"",
        1,
    );
    let path = temp_file("broken-taxonomy.toml", &broken);
    let stderr = refused_start(&[], &[("RUNG_TAXONOMY", path.to_str().unwrap())]);
    assert!(
        stderr.contains("types[0] (\"page_view\")") && stderr.contains("awarenes"),
        "{stderr}"
    );
}

#[test]
fn a_settings_file_with_an_unknown_key_is_refused() {
    let path = temp_file("typo.toml", "[scoring]\nmax_reason = 3\n");
    let stderr = refused_start(&["--config", path.to_str().unwrap()], &[]);
    assert!(stderr.contains("max_reason"), "{stderr}");
}

#[test]
fn a_missing_model_file_is_refused_naming_the_path() {
    let stderr = refused_start(&[], &[("RUNG_MODEL", "models/nope.json")]);
    assert!(stderr.contains("models/nope.json"), "{stderr}");
}
