//! `rung segment export` as a marketer runs it: against a running server,
//! and straight from the data directory once the server has stopped; both
//! give the same members.

mod common;

use std::process::Command;

use common::*;
use rung::grpc::proto::{Event, TrackRequest};

fn at(kind: &str, now: i64, ago: i64) -> Event {
    Event {
        r#type: kind.into(),
        time: Some(ts(now - ago)),
        ..Event::default()
    }
}

fn rfc3339(secs: i64) -> String {
    rung::domain::Millis::from_unix_millis(secs * 1000).to_rfc3339()
}

/// Runs the binary off the async runtime; its standard output on success.
async fn rung(args: Vec<String>) -> Result<String, String> {
    tokio::task::spawn_blocking(move || {
        let out = Command::new(env!("CARGO_BIN_EXE_rung"))
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env_remove("RUST_LOG")
            .env_remove("RUNG_CONFIG")
            .args(&args)
            .output()
            .expect("rung runs");
        if out.status.success() {
            Ok(String::from_utf8(out.stdout).unwrap())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn export_from_a_server_and_from_its_stopped_data_directory_agree() {
    // Arrange: two cart abandoners and a buyer.
    let settings = test_settings();
    let data_dir = settings.data_dir.display().to_string();
    let mut app = spawn_app_with(settings).await;
    let now = now_secs();
    for (visitor, events) in [
        ("anna", vec![at("add_to_cart", now, 2 * DAY)]),
        (
            "ben",
            vec![
                at("add_to_cart", now, 3 * DAY),
                at("purchase", now, 2 * DAY),
            ],
        ),
        ("carla, \"the\" shopper", vec![at("add_to_cart", now, HOUR)]),
    ] {
        app.client
            .track(TrackRequest {
                visitor_id: visitor.into(),
                events,
            })
            .await
            .expect("tracked");
    }
    let as_of = rfc3339(now);
    let args = |source: &[&str], format: &str| -> Vec<String> {
        [
            "segment",
            "export",
            "cart_abandoners",
            "--format",
            format,
            "--as-of",
            &as_of,
        ]
        .iter()
        .chain(source)
        .map(|s| s.to_string())
        .collect()
    };
    let addr = app.addr.to_string();

    // Act
    let jsonl = rung(args(&["--addr", &addr], "jsonl"))
        .await
        .expect("export from the server");
    let count = rung(
        [
            "segment",
            "count",
            "cart_abandoners",
            "--addr",
            &addr,
            "--as-of",
            &as_of,
        ]
        .map(String::from)
        .to_vec(),
    )
    .await
    .expect("count from the server");
    app.stop().await;
    let csv_text = rung(args(&["--data-dir", &data_dir], "csv"))
        .await
        .expect("export from the data directory");

    // Assert
    let from_server: Vec<serde_json::Value> = jsonl
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    let server_ids: Vec<&str> = from_server
        .iter()
        .map(|v| v["visitor_id"].as_str().unwrap())
        .collect();
    // In the store's order (a keyed hash of the id in the embedded store).
    let mut members = server_ids.clone();
    members.sort();
    assert_eq!(members, vec!["anna", "carla, \"the\" shopper"]);
    let anna = from_server
        .iter()
        .find(|v| v["visitor_id"] == "anna")
        .unwrap();
    assert_eq!(anna["stage"], "intent");
    assert_eq!(anna["matched_path"], "$");
    assert_eq!(count.trim(), "2");

    let mut reader = csv::Reader::from_reader(csv_text.as_bytes());
    let header: Vec<String> = reader.headers().unwrap().iter().map(String::from).collect();
    assert_eq!(header[0], "visitor_id");
    assert!(header.contains(&"probability".to_string()));
    let rows: Vec<csv::StringRecord> = reader.records().map(|r| r.unwrap()).collect();
    let disk_ids: Vec<&str> = rows.iter().map(|r| &r[0]).collect();
    assert_eq!(disk_ids, server_ids);
    // The same probabilities either way (the CSV prints them in full).
    for (row, json) in rows.iter().zip(&from_server) {
        let p: f64 = row[1].parse().unwrap();
        assert_eq!(p, json["probability"].as_f64().unwrap());
    }
}

#[tokio::test]
async fn export_names_what_is_wrong() {
    // A segment that does not exist, on a data directory with no server.
    let dir = fresh_data_dir().display().to_string();
    let err = rung(
        ["segment", "export", "no_such_segment", "--data-dir", &dir]
            .map(String::from)
            .to_vec(),
    )
    .await
    .unwrap_err();
    assert!(err.contains("no_such_segment"), "{err}");
    // Neither a server nor a data directory.
    let err = rung(
        ["segment", "export", "cart_abandoners"]
            .map(String::from)
            .to_vec(),
    )
    .await
    .unwrap_err();
    assert!(err.contains("--addr"), "{err}");
}
