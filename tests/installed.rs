//! rung as installed: the binary run from a folder that holds nothing of the
//! repository, with its defaults. The model and the taxonomy are built in,
//! and what rung writes (the embedded store) goes where it runs.

mod common;

use common::cli::{ok, s, scratch, simulated_log};
use common::process::{rung_command, serve_command, ServeProcess};
use common::*;
use rung::grpc::proto::intent_service_client::IntentServiceClient;
use rung::grpc::proto::model_service_client::ModelServiceClient;
use rung::grpc::proto::{Event, GetModelRequest, ScoreRequest, TrackRequest};
use tonic::transport::Channel;

/// A visitor well up the ladder, scored as of a fixed moment.
fn shopper() -> ScoreRequest {
    let at = |secs_before: i64, kind: &str| Event {
        r#type: kind.into(),
        time: Some(ts(AS_OF_SECS - secs_before)),
        item_id: "sku-1".into(),
        ..Default::default()
    };
    ScoreRequest {
        visitor_id: "v-installed".into(),
        as_of: Some(ts(AS_OF_SECS)),
        events: vec![
            at(3 * DAY, "view_item"),
            at(HOUR, "view_item"),
            at(50 * 60, "add_to_cart"),
            at(40 * 60, "begin_checkout"),
        ],
        ..Default::default()
    }
}

async fn connect(server: &ServeProcess) -> Channel {
    Channel::from_shared(server.url())
        .unwrap()
        .connect()
        .await
        .expect("client connects")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_from_an_empty_folder_scores_with_the_built_in_model() {
    // Arrange: an empty folder; the binary with no settings at all.
    let here = scratch("serve-anywhere");
    let mut cmd = serve_command();
    cmd.current_dir(&here);
    let server = tokio::task::block_in_place(|| ServeProcess::start(cmd));
    let channel = connect(&server).await;

    // Act
    let built_in = IntentServiceClient::new(channel.clone())
        .score(shopper())
        .await
        .expect("Score answers")
        .into_inner();
    let model = ModelServiceClient::new(channel)
        .get_model(GetModelRequest {})
        .await
        .unwrap()
        .into_inner();

    // Assert: the built-in model serves, and it is the repository's
    // models/default.json: a server loading that file answers the same.
    assert_eq!(model.path, "built-in");
    let shipped = artifact_json();
    assert_eq!(model.version, shipped["version"].as_str().unwrap());
    assert_eq!(built_in.model_version, model.version);
    let mut reference = spawn_app().await;
    let from_file = reference
        .client
        .score(shopper())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(built_in.probability, from_file.probability);
    assert_eq!(built_in.log_odds, from_file.log_odds);
    assert!(built_in.probability > 0.0 && built_in.probability < 1.0);
    assert_eq!(built_in.rung, "begin_checkout");
    // The embedded store's folder is relative to where rung runs.
    assert!(
        here.join("data").is_dir(),
        "the store is under the working directory"
    );
    reference.stop().await;
}

#[test]
fn bench_from_an_empty_folder_completes() {
    let here = scratch("bench-anywhere");
    let out = rung_command()
        .current_dir(&here)
        .args(["bench", "--requests", "100"])
        .output()
        .unwrap();
    let report = ok(&out);
    // Every scenario's row, each without an error (the last column).
    let rows: Vec<&str> = report
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| scenario") && !l.starts_with("| aim"))
        .filter(|l| l.split('|').count() == 13)
        .collect();
    assert!(
        rows.iter()
            .any(|r| r.starts_with("| Score (20 events inline) |")),
        "{report}"
    );
    for row in &rows {
        assert!(row.ends_with("| 0 |"), "a scenario had errors: {row}");
    }
}

#[test]
fn bench_says_why_its_server_exited() {
    let here = scratch("bench-no-model");
    let out = rung_command()
        .current_dir(&here)
        .env("RUNG_MODEL", "missing.json")
        .args(["bench", "--requests", "100"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("the server exited before serving"), "{said}");
    assert!(
        said.contains("cannot read model file missing.json"),
        "the server's own words are passed on:\n{said}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_segment_cli_reads_a_stopped_store_from_where_rung_ran() {
    // Arrange: a server run from an empty folder stores a cart abandoner,
    // then stops.
    let here = scratch("segment-anywhere");
    let mut cmd = serve_command();
    cmd.current_dir(&here);
    let mut server = tokio::task::block_in_place(|| ServeProcess::start(cmd));
    let mut client = IntentServiceClient::new(connect(&server).await);
    let ago = |secs: i64, kind: &str| Event {
        r#type: kind.into(),
        time: Some(ts(now_secs() - secs)),
        ..Default::default()
    };
    client
        .track(TrackRequest {
            visitor_id: "v-abandoner".into(),
            events: vec![ago(2 * HOUR, "view_item"), ago(HOUR, "add_to_cart")],
        })
        .await
        .expect("Track answers");
    server.kill();

    // Act: the segment CLI with its defaults, from the same folder.
    let out = rung_command()
        .current_dir(&here)
        .args(["segment", "export", "cart_abandoners", "--format", "jsonl"])
        .args(["--data-dir", "data"])
        .output()
        .unwrap();

    // Assert
    let rows = ok(&out);
    assert_eq!(rows.lines().count(), 1, "{rows}");
    assert!(rows.contains("v-abandoner"), "{rows}");
}

#[test]
fn evaluate_and_suggest_ladder_take_the_built_in_model_by_name() {
    // From an empty folder, `built-in` is the model in the binary: the same
    // answers as the repository's models/default.json file.
    let here = scratch("offline-built-in");
    let log = simulated_log(&here, "300", "3");
    let file = model_path();
    let run = |model: &str, args: &[&str]| {
        let out = rung_command()
            .current_dir(&here)
            .args(args)
            .args(["--model", model])
            .output()
            .unwrap();
        ok(&out)
    };
    for args in [
        &["evaluate", "--events", s(&log)][..],
        &["suggest-ladder"][..],
    ] {
        let built_in = run("built-in", args);
        assert_eq!(built_in, run(s(&file), args), "{args:?}");
        assert!(built_in.contains(artifact_json()["version"].as_str().unwrap()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_takes_a_model_file_relative_to_where_it_runs() {
    let here = scratch("serve-model-flag");
    let mut artifact = artifact_json();
    artifact["version"] = "a-shops-own".into();
    std::fs::create_dir(here.join("models")).unwrap();
    std::fs::write(here.join("models/shop.json"), artifact.to_string()).unwrap();
    let mut cmd = serve_command();
    cmd.current_dir(&here).args(["--model", "models/shop.json"]);
    let server = tokio::task::block_in_place(|| ServeProcess::start(cmd));

    let model = ModelServiceClient::new(connect(&server).await)
        .get_model(GetModelRequest {})
        .await
        .unwrap()
        .into_inner();

    assert_eq!(model.version, "a-shops-own");
    assert_eq!(model.path, "models/shop.json");
}
