//! The `rung` binary as an operator runs it: start, serve, stop on SIGTERM;
//! refuse to start on a configuration that does not make sense.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use rung::grpc::proto::intent_service_client::IntentServiceClient;
use rung::grpc::proto::ScoreRequest;

fn rung() -> Command {
    rung_on(&fresh_data_dir())
}

fn fresh_data_dir() -> std::path::PathBuf {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let data = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("rung-cli")
        .join(format!("{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    data
}

/// The binary with its data in `data`.
fn rung_on(data: &std::path::Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rung"));
    cmd.current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("RUNG_DATA_DIR", data)
        // Side by side with other tests' servers: a port of its own.
        .env("RUNG_METRICS_LISTEN", "127.0.0.1:0")
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

/// Starts `rung serve` on `data` and returns it with its address.
fn start(data: &std::path::Path) -> (Child, mpsc::Receiver<String>, String) {
    let mut child = rung_on(data)
        .args(["serve", "--listen", "127.0.0.1:0", "--log-format", "json"])
        .spawn()
        .unwrap();
    let lines = stderr_lines(&mut child);
    let serving = wait_for(&lines, "\"serving\"");
    let log: serde_json::Value = serde_json::from_str(&serving).unwrap();
    let addr = log["addr"].as_str().unwrap().to_string();
    (child, lines, addr)
}

#[test]
fn a_second_server_on_the_same_data_directory_refuses_to_start() {
    let data = fresh_data_dir();
    let (mut first, _lines, _) = start(&data);

    let out = rung_on(&data)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    first.kill().unwrap();
    first.wait().unwrap();

    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("in use by another rung process"),
        "{stderr}"
    );
}

#[test]
fn every_acknowledged_event_survives_sigkill_mid_ingestion() {
    use rung::grpc::proto::{Event, GetVisitorRequest, TrackRequest};
    use std::sync::{Arc, Mutex};

    // Arrange: a server under sustained Track load from 8 writers.
    let data = fresh_data_dir();
    let (mut child, _lines, addr) = start(&data);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let acked = acked.clone();
            let addr = addr.clone();
            rt.spawn(async move {
                let mut client = IntentServiceClient::connect(format!("http://{addr}"))
                    .await
                    .unwrap();
                // Bounded: stops at the first failure (the kill) or after 20k calls.
                for i in 0..20_000 {
                    let visitor = format!("crash-{w}-{i}");
                    let events = (0..5)
                        .map(|k| Event {
                            r#type: "view_item".into(),
                            time: Some(prost_types::Timestamp {
                                seconds: now - 60 + k,
                                nanos: 0,
                            }),
                            event_id: format!("{visitor}-{k}"),
                            ..Event::default()
                        })
                        .collect();
                    let req = TrackRequest {
                        visitor_id: visitor.clone(),
                        events,
                    };
                    match client.track(req).await {
                        Ok(_) => acked.lock().unwrap().push(visitor),
                        Err(_) => break,
                    }
                }
            })
        })
        .collect();

    // Act: once a few hundred writes are acknowledged, kill -9 mid-stream.
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while acked.lock().unwrap().len() < 400 {
        assert!(
            std::time::Instant::now() < deadline,
            "ingestion too slow to test"
        );
        std::thread::yield_now();
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    for w in writers {
        rt.block_on(w).unwrap();
    }
    let acked = acked.lock().unwrap().clone();

    // Assert: after a restart, every acknowledged visitor has all 5 events.
    let (mut child, _lines, addr) = start(&data);
    let missing = rt.block_on(async {
        let mut client = IntentServiceClient::connect(format!("http://{addr}"))
            .await
            .unwrap();
        let mut missing = Vec::new();
        for v in &acked {
            let r = client
                .get_visitor(GetVisitorRequest {
                    visitor_id: v.clone(),
                    max_events: 0,
                })
                .await;
            match r {
                Ok(p) if p.get_ref().events == 5 => {}
                other => missing.push((
                    v.clone(),
                    other.map(|p| p.into_inner().events).map_err(|s| s.code()),
                )),
            }
        }
        missing
    });
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(acked.len() >= 400);
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged visitors lost: {:?}",
        missing.len(),
        acked.len(),
        &missing[..missing.len().min(5)]
    );
}

#[test]
fn a_data_file_that_is_not_a_store_is_refused_at_start() {
    let data = fresh_data_dir();
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("rung.redb"), b"definitely not a database").unwrap();
    let out = rung_on(&data)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env_remove("RUST_BACKTRACE")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("rung.redb") && stderr.contains("Not a redb database"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn rung_bench_starts_its_own_server_and_reports_every_scenario_next_to_health() {
    let out = rung()
        .args([
            "bench",
            "--requests",
            "30",
            "--warmup",
            "50ms",
            "--visitors",
            "10",
            "--in-flight",
            "2",
            "--rounds",
            "2",
            "--scenario",
            "health",
            "score",
            "score-by-id",
        ])
        .stdout(Stdio::piped())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("30 calls measured, in 2 round(s)"),
        "{stdout}"
    );
    for name in ["Health/Check", "Score (20 events inline)", "Score by id"] {
        let row = stdout
            .lines()
            .find(|l| l.starts_with(&format!("| {name} |")))
            .unwrap_or_else(|| panic!("no row for {name}:\n{stdout}"));
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        // | name | calls/s | ... | errors |: no call failed.
        assert_eq!(cells[cells.len() - 2], "0", "{row}");
    }
    assert!(
        stdout.contains("| Score calls/s ≥ 90% of Health's |"),
        "{stdout}"
    );
    // It stored the visitors that Score by id asks for first.
    assert!(stderr.contains("stored 10 visitors"), "{stderr}");
}

#[test]
fn a_key_from_keys_new_opens_the_server_and_its_name_not_the_key_is_logged() {
    // Arrange: a key as an operator makes one, pasted into a settings file.
    let made = Command::new(env!("CARGO_BIN_EXE_rung"))
        .args(["keys", "new", "--name", "recs", "--roles", "score,ingest"])
        .output()
        .unwrap();
    assert!(made.status.success(), "{made:?}");
    let printed = String::from_utf8(made.stdout).unwrap();
    let key = printed
        .lines()
        .find_map(|l| l.strip_prefix("key: "))
        .expect("the key is printed")
        .to_string();
    let entry = &printed[printed.find("[[auth.keys]]").expect("the entry is printed")..];
    let settings = temp_file("keys.toml", entry);

    // Act: serve with it, with RUNG_API_KEY exported as in a client's shell,
    // and call with and without the key.
    let mut child = rung()
        .args(["serve", "--listen", "127.0.0.1:0", "--log-format", "json"])
        .arg("--config")
        .arg(&settings)
        .env("RUNG_API_KEY", &key)
        .env("RUST_LOG", "rung=debug")
        .spawn()
        .unwrap();
    let lines = stderr_lines(&mut child);
    let serving = wait_for(&lines, "\"serving\"");
    let addr = serde_json::from_str::<serde_json::Value>(&serving).unwrap()["addr"]
        .as_str()
        .unwrap()
        .to_string();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (with_key, without) = rt.block_on(async {
        let mut client = IntentServiceClient::connect(format!("http://{addr}"))
            .await
            .unwrap();
        let mut req = tonic::Request::new(ScoreRequest {
            visitor_id: "cli".into(),
            ..ScoreRequest::default()
        });
        req.metadata_mut()
            .insert("authorization", format!("Bearer {key}").parse().unwrap());
        let with_key = client.score(req).await.map(drop);
        let without = client
            .score(ScoreRequest {
                visitor_id: "cli".into(),
                ..ScoreRequest::default()
            })
            .await
            .map(drop);
        (with_key, without)
    });
    let call_line = wait_for(&lines, "\"method\":\"Score\"");
    let _ = child.kill();
    let _ = child.wait();

    // Assert
    assert!(with_key.is_ok(), "{with_key:?}");
    assert_eq!(without.unwrap_err().code(), tonic::Code::Unauthenticated);
    assert!(call_line.contains("\"key\":\"recs\""), "{call_line}");
    assert!(!call_line.contains(&key), "{call_line}");
    let sha = rung::auth::sha256_hex(key.as_bytes());
    assert!(entry.contains(&sha), "the entry holds the key's SHA-256");
    assert!(!entry.contains(&key), "the entry never holds the key");
}

#[test]
fn an_unknown_rung_variable_still_stops_the_start() {
    let stderr = refused_start(&[], &[("RUNG_API_KYE", "typo")]);
    assert!(stderr.contains("api_kye"), "{stderr}");
}
