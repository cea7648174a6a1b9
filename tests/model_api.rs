//! ModelService through a real server: what GetModel reports, swapping a new
//! artifact in with ReloadModel or the file watch, refusing bad artifacts
//! while the old model keeps serving, and reloads under scoring load.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use rung::config::Settings;
use rung::grpc::proto::model_service_client::ModelServiceClient;
use rung::grpc::proto::model_service_server::SERVICE_NAME;
use rung::grpc::proto::{
    GetModelRequest, GetModelResponse, ReloadModelRequest, ReloadModelResponse, ScoreRequest,
    ScoreResponse,
};
use serde_json::Value;
use tonic::transport::Channel;
use tonic::Code;

/// A server whose model is a copy of models/default.json in a directory of
/// its own, which the test may overwrite.
struct ModelApp {
    app: TestApp,
    models: ModelClient,
    path: PathBuf,
    _dir: tempfile::TempDir,
}

type ModelClient = ModelServiceClient<Channel>;

/// `watch_secs` is the `model_watch_secs` setting; 0 keeps the file watch
/// out of tests that drive reloads by RPC.
async fn spawn_with_model_copy(watch_secs: u64) -> ModelApp {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("model.json");
    std::fs::copy(model_path(), &path).expect("copy of the shipped model");
    let settings = Settings {
        model: Some(path.clone()),
        model_watch_secs: watch_secs,
        ..test_settings()
    };
    let app = spawn_app_with(settings).await;
    ModelApp {
        models: ModelServiceClient::new(app.channel.clone()),
        app,
        path,
        _dir: dir,
    }
}

/// The shipped artifact renamed to `version`, with every coefficient scaled
/// by `scale`, so its probabilities differ from the shipped model's.
fn variant(version: &str, scale: f64) -> Value {
    let mut a = artifact_json();
    a["version"] = version.into();
    for c in a["coefficients"].as_array_mut().unwrap() {
        *c = (c.as_f64().unwrap() * scale).into();
    }
    a
}

/// Replaces `path` the way a deploy should: write beside it, rename over it.
/// A reader sees the old file or the new one, never half of either.
fn write_atomically(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn write_artifact(path: &Path, artifact: &Value) {
    write_atomically(path, &serde_json::to_vec_pretty(artifact).unwrap());
}

fn version_of(artifact: &Value) -> String {
    artifact["version"].as_str().unwrap().to_string()
}

/// A visitor far enough up the ladder that every model variant gives a
/// different probability.
fn shopper() -> ScoreRequest {
    let mut r = request(
        "shopper",
        vec![
            ev("page_view", 2 * DAY, ""),
            ev("view_item", DAY, "a"),
            ev("view_item", 2 * HOUR, "a"),
            ev("add_to_cart", HOUR, "a"),
            ev("begin_checkout", 600, ""),
        ],
    );
    r.explain = true;
    r
}

async fn score(app: &mut TestApp) -> ScoreResponse {
    app.client
        .score(shopper())
        .await
        .expect("score succeeds")
        .into_inner()
}

async fn get_model(models: &mut ModelClient) -> GetModelResponse {
    models
        .get_model(GetModelRequest {})
        .await
        .expect("GetModel succeeds")
        .into_inner()
}

async fn reload(models: &mut ModelClient) -> Result<ReloadModelResponse, tonic::Status> {
    models
        .reload_model(ReloadModelRequest::default())
        .await
        .map(|r| r.into_inner())
}

/// Asks GetModel every 50 ms until `done` holds, for at most 20 seconds.
async fn poll_model_until(
    models: &mut ModelClient,
    what: &str,
    done: impl Fn(&GetModelResponse) -> bool,
) -> GetModelResponse {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut ticks = tokio::time::interval(Duration::from_millis(50));
    loop {
        ticks.tick().await;
        let m = get_model(models).await;
        if done(&m) {
            return m;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "gave up waiting for {what}; GetModel says {m:?}"
        );
    }
}

/// The log-odds the artifact's own numbers give for a response's features:
/// intercept + Σ coefficient · (value − mean) / scale.
fn log_odds_by(artifact: &Value, r: &ScoreResponse) -> f64 {
    let numbers =
        |key: &str| -> Vec<f64> { serde_json::from_value(artifact[key].clone()).unwrap() };
    let (coef, means, scales) = (numbers("coefficients"), numbers("means"), numbers("scales"));
    assert_eq!(r.features.len(), coef.len());
    artifact["intercept"].as_f64().unwrap()
        + r.features
            .iter()
            .enumerate()
            .map(|(i, f)| coef[i] * (f.value - means[i]) / scales[i])
            .sum::<f64>()
}

/// Every contribution and the log-odds of `r` come from `artifact`.
fn assert_scored_by(artifact: &Value, r: &ScoreResponse) {
    assert_eq!(r.model_version, version_of(artifact));
    let z = log_odds_by(artifact, r);
    assert!(
        (r.log_odds - z).abs() < 1e-9,
        "version {}: log-odds {} but its artifact gives {z}",
        r.model_version,
        r.log_odds
    );
}

#[tokio::test]
async fn get_model_reports_the_artifact_it_was_loaded_from() {
    // Arrange
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let mut m = spawn_with_model_copy(0).await;
    let artifact = artifact_json();

    // Act
    let got = get_model(&mut m.models).await;

    // Assert: every figure as the JSON file has it.
    let names: Vec<String> = serde_json::from_value(artifact["feature_names"].clone()).unwrap();
    assert_eq!(got.version, version_of(&artifact));
    assert_eq!(got.feature_names, names);
    assert_eq!(got.description, artifact["description"].as_str().unwrap());
    assert_eq!(
        got.taxonomy_fingerprint,
        artifact["taxonomy_fingerprint"].as_str().unwrap()
    );
    assert_eq!(got.horizon_days, artifact["horizon_days"].as_f64().unwrap());
    assert_eq!(got.path, m.path.display().to_string());
    let metrics = got.metrics.expect("metrics");
    for (name, figures) in [
        ("validation", metrics.validation.expect("validation")),
        (
            "ladder_baseline",
            metrics.ladder_baseline.expect("ladder baseline"),
        ),
    ] {
        let f = &artifact["metrics"][name];
        assert_eq!(figures.examples, f["examples"].as_u64().unwrap(), "{name}");
        assert_eq!(
            figures.positives,
            f["positives"].as_u64().unwrap(),
            "{name}"
        );
        assert_eq!(
            figures.base_rate,
            f["base_rate"].as_f64().unwrap(),
            "{name}"
        );
        assert_eq!(figures.roc_auc, f["roc_auc"].as_f64(), "{name}");
        assert_eq!(figures.log_loss, f["log_loss"].as_f64(), "{name}");
        assert_eq!(figures.brier, f["brier"].as_f64(), "{name}");
        assert_eq!(figures.pr_auc, f["pr_auc"].as_f64(), "{name}");
    }
    // created_at is RFC 3339 UTC: compare its whole seconds as text.
    let trained_at = got.trained_at.expect("trained_at");
    let created_at = artifact["created_at"].as_str().unwrap();
    let secs = humantime::parse_rfc3339(created_at)
        .unwrap()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert_eq!(trained_at.seconds, secs);
    let loaded_at = got.loaded_at.expect("loaded_at").seconds;
    assert!(
        (before..=before + 60).contains(&loaded_at),
        "{loaded_at} vs {before}"
    );
    assert!(got.last_refusal.is_none());
    m.app.stop().await;
}

#[tokio::test]
async fn get_model_reports_pr_auc_when_the_artifact_carries_it() {
    let mut m = spawn_with_model_copy(0).await;
    let mut next = variant("with-pr-auc", 1.0);
    next["metrics"]["validation"]["pr_auc"] = 0.3125.into();
    next["metrics"]["ladder_baseline"]["pr_auc"] = serde_json::Value::Null;
    write_artifact(&m.path, &next);

    reload(&mut m.models).await.expect("reload succeeds");
    let got = get_model(&mut m.models).await;

    let metrics = got.metrics.unwrap();
    assert_eq!(metrics.validation.unwrap().pr_auc, Some(0.3125));
    assert_eq!(metrics.ladder_baseline.unwrap().pr_auc, None);
    m.app.stop().await;
}

#[tokio::test]
async fn a_reloaded_artifact_produces_the_next_scores() {
    // Arrange
    let mut m = spawn_with_model_copy(0).await;
    let old = artifact_json();
    let before = score(&mut m.app).await;
    let next = variant("next-1", 1.5);
    write_artifact(&m.path, &next);

    // Act
    let reloaded = reload(&mut m.models).await.expect("reload succeeds");
    let after = score(&mut m.app).await;

    // Assert
    assert!(reloaded.changed);
    assert_eq!(reloaded.version, "next-1");
    assert_eq!(reloaded.previous_version, version_of(&old));
    assert_eq!(reloaded.path, m.path.display().to_string());
    assert_scored_by(&old, &before);
    assert_scored_by(&next, &after);
    assert_ne!(before.probability, after.probability);
    assert_eq!(get_model(&mut m.models).await.version, "next-1");
    m.app.stop().await;
}

#[tokio::test]
async fn reloading_an_unchanged_file_says_nothing_changed() {
    let mut m = spawn_with_model_copy(0).await;

    let reloaded = reload(&mut m.models).await.expect("reload succeeds");

    assert!(!reloaded.changed);
    assert_eq!(reloaded.version, reloaded.previous_version);
    m.app.stop().await;
}

#[tokio::test]
async fn corrupt_truncated_and_mismatched_artifacts_are_refused_and_the_old_model_serves() {
    let mut m = spawn_with_model_copy(0).await;
    let old = artifact_json();
    let text = std::fs::read(model_path()).unwrap();
    let mut renamed = variant("renamed-feature", 1.0);
    renamed["feature_names"][3] = "count.something_else".into();
    let mut other_taxonomy = variant("other-taxonomy", 1.0);
    other_taxonomy["taxonomy_fingerprint"] = "sha256:0000".into();
    let cases: Vec<(&str, Vec<u8>, Vec<&str>)> = vec![
        (
            "junk bytes",
            b"\x89PNG\r\n\x1a\n\xff\xfe not a model".to_vec(),
            vec!["not a valid artifact"],
        ),
        (
            "the first half of the file",
            text[..text.len() / 2].to_vec(),
            vec!["not a valid artifact", "EOF"],
        ),
        ("an empty file", Vec::new(), vec!["not a valid artifact"]),
        (
            "a renamed feature",
            serde_json::to_vec(&renamed).unwrap(),
            vec!["feature 3", "feature_names[3]"],
        ),
        (
            "another taxonomy's fingerprint",
            serde_json::to_vec(&other_taxonomy).unwrap(),
            vec![
                "does not match the running taxonomy",
                "taxonomy_fingerprint",
            ],
        ),
    ];

    for (what, bytes, problem) in cases {
        // Arrange
        write_atomically(&m.path, &bytes);

        // Act
        let refused = reload(&mut m.models)
            .await
            .expect_err(&format!("{what} is refused"));
        let after = score(&mut m.app).await;
        let model = get_model(&mut m.models).await;

        // Assert
        assert_eq!(refused.code(), Code::FailedPrecondition, "{what}");
        let message = refused.message();
        assert!(
            message.contains(&m.path.display().to_string()),
            "{what}: {message}"
        );
        for words in problem {
            assert!(message.contains(words), "{what}: {message}");
        }
        // Values read from the file are never echoed.
        for secret in ["count.something_else", "sha256:0000", "PNG", "not a model"] {
            assert!(!message.contains(secret), "{what}: {message}");
        }
        assert_scored_by(&old, &after);
        assert_eq!(model.version, version_of(&old), "{what}");
        let refusal = model.last_refusal.expect("GetModel shows the refusal");
        assert_eq!(refusal.reason, message, "{what}");
    }
    m.app.stop().await;
}

#[tokio::test]
async fn a_missing_file_is_refused_and_the_old_model_serves() {
    let mut m = spawn_with_model_copy(0).await;
    let gone = m.path.with_file_name("nowhere.json");

    let refused = m
        .models
        .reload_model(ReloadModelRequest {
            path: gone.display().to_string(),
        })
        .await
        .unwrap_err();

    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert!(
        refused.message().contains("cannot read model file")
            && refused.message().contains("nowhere.json"),
        "{}",
        refused.message()
    );
    assert_eq!(
        score(&mut m.app).await.model_version,
        version_of(&artifact_json())
    );
    m.app.stop().await;
}

#[tokio::test]
async fn a_path_with_a_nul_byte_is_an_invalid_argument() {
    let mut m = spawn_with_model_copy(0).await;

    let refused = m
        .models
        .reload_model(ReloadModelRequest {
            path: "models/\0.json".into(),
        })
        .await
        .unwrap_err();

    assert_eq!(refused.code(), Code::InvalidArgument);
    assert!(
        refused.message().starts_with("path:"),
        "{}",
        refused.message()
    );
    m.app.stop().await;
}

#[tokio::test]
async fn reload_with_a_path_serves_that_file_and_names_it() {
    let mut m = spawn_with_model_copy(0).await;
    let other = m.path.with_file_name("other.json");
    let next = variant("from-elsewhere", 0.5);
    write_artifact(&other, &next);

    let reloaded = m
        .models
        .reload_model(ReloadModelRequest {
            path: other.display().to_string(),
        })
        .await
        .expect("reload succeeds")
        .into_inner();

    assert!(reloaded.changed);
    assert_eq!(reloaded.path, other.display().to_string());
    assert_eq!(
        get_model(&mut m.models).await.path,
        other.display().to_string()
    );
    assert_scored_by(&next, &score(&mut m.app).await);
    m.app.stop().await;
}

#[tokio::test]
async fn reload_to_built_in_goes_back_to_the_model_in_the_binary() {
    // Arrange: a file model that differs from the built-in one.
    let mut m = spawn_with_model_copy(0).await;
    let edited = variant("edited", 0.5);
    write_artifact(&m.path, &edited);
    reload(&mut m.models).await.expect("the edited file loads");
    assert_scored_by(&edited, &score(&mut m.app).await);

    // Act
    let back = m
        .models
        .reload_model(ReloadModelRequest {
            path: "built-in".into(),
        })
        .await
        .expect("reload succeeds")
        .into_inner();

    // Assert: the shipped artifact serves, named built-in, and a reload
    // without a path now reloads it (no file to read).
    let shipped = artifact_json();
    assert!(back.changed);
    assert_eq!(back.path, "built-in");
    assert_eq!(back.version, version_of(&shipped));
    assert_eq!(get_model(&mut m.models).await.path, "built-in");
    assert_scored_by(&shipped, &score(&mut m.app).await);
    let again = reload(&mut m.models).await.expect("reload succeeds");
    assert!(!again.changed);
    assert_eq!(again.path, "built-in");
    m.app.stop().await;
}

#[tokio::test]
async fn the_watch_swaps_in_a_changed_file_without_any_call() {
    // Arrange: look at the file every second.
    let mut m = spawn_with_model_copy(1).await;
    let next = variant("watched-1", 2.0);

    // Act
    write_artifact(&m.path, &next);

    // Assert
    let model = poll_model_until(&mut m.models, "the watch to load watched-1", |g| {
        g.version == "watched-1"
    })
    .await;
    assert!(model.last_refusal.is_none());
    assert_scored_by(&next, &score(&mut m.app).await);
    m.app.stop().await;
}

#[tokio::test]
async fn the_watch_follows_a_model_loaded_from_another_path() {
    // Arrange: the serving model comes from other.json, by ReloadModel.
    let mut m = spawn_with_model_copy(1).await;
    let other = m.path.with_file_name("other.json");
    write_artifact(&other, &variant("other-1", 0.5));
    m.models
        .reload_model(ReloadModelRequest {
            path: other.display().to_string(),
        })
        .await
        .expect("reload succeeds");

    // Act
    let next = variant("other-2", 0.25);
    write_artifact(&other, &next);

    // Assert
    let model = poll_model_until(&mut m.models, "the watch to load other-2", |g| {
        g.version == "other-2"
    })
    .await;
    assert_eq!(model.path, other.display().to_string());
    assert_scored_by(&next, &score(&mut m.app).await);
    m.app.stop().await;
}

#[tokio::test]
async fn the_watch_refuses_a_corrupt_write_and_the_old_model_serves() {
    // Arrange
    let mut m = spawn_with_model_copy(1).await;
    let old = artifact_json();

    // Act: a half-written file, as a writer that does not rename leaves it.
    let text = std::fs::read(model_path()).unwrap();
    std::fs::write(&m.path, &text[..text.len() / 3]).unwrap();

    // Assert: the watch saw it (GetModel shows the refusal) and kept the
    // old model.
    let model = poll_model_until(&mut m.models, "the watch to refuse the file", |g| {
        g.last_refusal.is_some()
    })
    .await;
    assert_eq!(model.version, version_of(&old));
    let refusal = model.last_refusal.unwrap();
    assert_eq!(refusal.path, m.path.display().to_string());
    assert!(
        refusal.reason.contains("not a valid artifact"),
        "{}",
        refusal.reason
    );
    assert_scored_by(&old, &score(&mut m.app).await);

    // And once the writer finishes, the watch loads the whole file.
    let next = variant("watched-2", 0.75);
    write_artifact(&m.path, &next);
    let model = poll_model_until(&mut m.models, "the watch to load watched-2", |g| {
        g.version == "watched-2"
    })
    .await;
    assert!(model.last_refusal.is_none());
    m.app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scores_under_load_never_fail_or_mix_models_while_reloads_swap_them() {
    // Arrange: six artifacts that score differently, by version.
    const SCORERS: usize = 4;
    const MIN_CALLS: usize = 100;
    const MAX_CALLS: usize = 5_000;
    const RELOADS: usize = 24;
    let mut m = spawn_with_model_copy(0).await;
    let original = artifact_json();
    let variants: Vec<Value> = (1..=6)
        .map(|i| variant(&format!("load-{i}"), 1.0 + 0.1 * i as f64))
        .collect();
    let by_version: Arc<HashMap<String, Value>> = Arc::new(
        std::iter::once(&original)
            .chain(&variants)
            .map(|a| (version_of(a), a.clone()))
            .collect(),
    );
    let reloads_done = Arc::new(AtomicBool::new(false));

    // Act: scorers run until the reloads are over (at least MIN_CALLS each,
    // at most MAX_CALLS), while this task swaps the model RELOADS times,
    // cycling through the variants.
    let scorers: Vec<_> = (0..SCORERS)
        .map(|_| {
            let mut client = m.app.client.clone();
            let done = reloads_done.clone();
            tokio::spawn(async move {
                let mut seen = Vec::new();
                for i in 0..MAX_CALLS {
                    let after_reloads = done.load(Ordering::Acquire);
                    if after_reloads && i >= MIN_CALLS {
                        break;
                    }
                    let r = client.score(shopper()).await.map(|r| r.into_inner());
                    seen.push((after_reloads, r));
                }
                seen
            })
        })
        .collect();
    for next in variants.iter().cycle().take(RELOADS) {
        write_artifact(&m.path, next);
        let reloaded = reload(&mut m.models).await.expect("reload succeeds");
        assert_eq!(reloaded.version, version_of(next));
        tokio::task::yield_now().await;
    }
    reloads_done.store(true, Ordering::Release);
    let mut results = Vec::new();
    for s in scorers {
        results.extend(s.await.expect("scorer task"));
    }

    // Assert: every call succeeded and was scored wholly by one of the
    // artifacts written; calls begun after the last reload used the last.
    let last = version_of(&variants[(RELOADS - 1) % variants.len()]);
    let mut versions_seen = std::collections::BTreeSet::new();
    for (after_reloads, r) in &results {
        let r = r.as_ref().expect("every score succeeds");
        let artifact = by_version
            .get(&r.model_version)
            .unwrap_or_else(|| panic!("unknown version {}", r.model_version));
        assert_scored_by(artifact, r);
        if *after_reloads {
            assert_eq!(r.model_version, last);
        }
        versions_seen.insert(r.model_version.clone());
    }
    assert!(results.len() >= SCORERS * MIN_CALLS);
    assert!(versions_seen.contains(&last), "{versions_seen:?}");
    m.app.stop().await;
}

#[tokio::test]
async fn health_and_reflection_know_the_model_service() {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::ServerReflectionRequest;

    let m = spawn_with_model_copy(0).await;
    let health = HealthClient::new(m.app.channel.clone())
        .check(HealthCheckRequest {
            service: SERVICE_NAME.into(),
        })
        .await
        .unwrap()
        .into_inner();
    let ask = |r| ServerReflectionRequest {
        host: String::new(),
        message_request: Some(r),
    };
    let mut stream = ServerReflectionClient::new(m.app.channel.clone())
        .server_reflection_info(tokio_stream::iter(vec![
            ask(MessageRequest::ListServices(String::new())),
            ask(MessageRequest::FileContainingSymbol(
                "rung.v1.ModelService.ReloadModel".into(),
            )),
        ]))
        .await
        .unwrap()
        .into_inner();
    let Some(MessageResponse::ListServicesResponse(list)) =
        stream.message().await.unwrap().unwrap().message_response
    else {
        panic!("expected a service list");
    };
    let Some(MessageResponse::FileDescriptorResponse(files)) =
        stream.message().await.unwrap().unwrap().message_response
    else {
        panic!("expected a file descriptor");
    };

    assert_eq!(SERVICE_NAME, "rung.v1.ModelService");
    assert_eq!(health.status(), ServingStatus::Serving);
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    assert!(names.contains(&SERVICE_NAME.to_string()), "{names:?}");
    let fd: prost_types::FileDescriptorProto =
        prost::Message::decode(files.file_descriptor_proto[0].as_slice()).unwrap();
    assert_eq!(fd.name(), "rung/v1/model.proto");
    let methods: Vec<&str> = fd.service[0].method.iter().map(|m| m.name()).collect();
    assert_eq!(methods, ["GetModel", "ReloadModel"]);
    // Each version lists itself as the reflection service; the rest agree.
    let not_reflection = |n: &&String| !n.starts_with("grpc.reflection.");
    let v1alpha = v1alpha_services(&m.app.channel).await;
    assert!(v1alpha.contains(&"grpc.reflection.v1alpha.ServerReflection".to_string()));
    assert_eq!(
        v1alpha.iter().filter(not_reflection).collect::<Vec<_>>(),
        names.iter().filter(not_reflection).collect::<Vec<_>>()
    );
    m.app.stop().await;
}

/// The services reflection's older version (v1alpha) lists, which tools
/// that predate v1 ask for.
async fn v1alpha_services(channel: &Channel) -> Vec<String> {
    use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1alpha::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1alpha::ServerReflectionRequest;
    let ask = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = ServerReflectionClient::new(channel.clone())
        .server_reflection_info(tokio_stream::iter(vec![ask]))
        .await
        .expect("v1alpha reflection answers")
        .into_inner();
    match stream.message().await.unwrap().unwrap().message_response {
        Some(MessageResponse::ListServicesResponse(list)) => {
            list.service.into_iter().map(|s| s.name).collect()
        }
        other => panic!("expected a service list, got {other:?}"),
    }
}

#[tokio::test]
async fn a_path_outside_the_models_folder_is_permission_denied_without_looking() {
    let mut m = spawn_with_model_copy(0).await;
    let escape = m.path.parent().unwrap().join("../escape.json");
    let outside = [
        "/etc/passwd".to_string(),
        "/nonexistent/model.json".to_string(),
        escape.display().to_string(),
        "Cargo.toml".to_string(),
        "models/default.json".to_string(),
    ];

    let mut messages = Vec::new();
    for path in &outside {
        let refused = m
            .models
            .reload_model(ReloadModelRequest { path: path.clone() })
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::PermissionDenied, "{path}");
        assert!(
            refused.message().contains("model_dir"),
            "{}",
            refused.message()
        );
        messages.push(refused.message().replace(path.as_str(), "<path>"));
    }

    // An existing file and a missing one read the same: nothing was looked at.
    assert_eq!(messages[0], messages[1]);
    let model = get_model(&mut m.models).await;
    assert!(
        model.last_refusal.is_none(),
        "a refused path is not a refused model"
    );
    assert_eq!(model.version, version_of(&artifact_json()));
    m.app.stop().await;
}

#[tokio::test]
async fn a_refused_file_never_has_its_values_echoed() {
    let mut m = spawn_with_model_copy(0).await;
    let cases: [(&str, &[u8]); 3] = [
        ("secrets.txt", b"password=hunter2-31337\n"),
        ("numbers.json", b"[31337, 424242]"),
        (
            "fields.json",
            br#"{"format": "hunter2-31337", "version": 424242}"#,
        ),
    ];
    for (name, bytes) in cases {
        let path = m.path.with_file_name(name);
        std::fs::write(&path, bytes).unwrap();

        let refused = m
            .models
            .reload_model(ReloadModelRequest {
                path: path.display().to_string(),
            })
            .await
            .unwrap_err();

        assert_eq!(refused.code(), Code::FailedPrecondition, "{name}");
        let message = refused.message();
        assert!(message.contains("line 1 column"), "{name}: {message}");
        for value in ["hunter2", "31337", "424242"] {
            assert!(!message.contains(value), "{name}: {message}");
        }
        let reason = get_model(&mut m.models).await.last_refusal.unwrap().reason;
        assert!(!reason.contains("31337"), "{reason}");
    }
    m.app.stop().await;
}

#[tokio::test]
async fn the_last_refusal_is_shown_to_admin_keys_only() {
    use rung::auth::{sha256_hex, KeyEntry, Role};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.json");
    std::fs::copy(model_path(), &path).unwrap();
    let key = |name: &str, role| KeyEntry {
        name: name.into(),
        sha256: sha256_hex(name.as_bytes()),
        roles: vec![role],
    };
    let settings = Settings {
        model: Some(path.clone()),
        model_watch_secs: 0,
        auth: rung::config::AuthSettings {
            keys: vec![key("ops", Role::Admin), key("dash", Role::Audiences)],
            allow_anonymous: false,
        },
        ..test_settings()
    };
    let app = spawn_app_with(settings).await;
    let mut models = ModelServiceClient::new(app.channel.clone());
    fn as_key<T>(k: &str, msg: T) -> tonic::Request<T> {
        let mut r = tonic::Request::new(msg);
        r.metadata_mut()
            .insert("authorization", format!("Bearer {k}").parse().unwrap());
        r
    }
    std::fs::write(&path, b"junk").unwrap();
    models
        .reload_model(as_key("ops", ReloadModelRequest::default()))
        .await
        .unwrap_err();

    let for_admin = models
        .get_model(as_key("ops", GetModelRequest::default()))
        .await
        .unwrap()
        .into_inner();
    let for_dashboard = models
        .get_model(as_key("dash", GetModelRequest::default()))
        .await
        .unwrap()
        .into_inner();

    assert!(for_admin.last_refusal.is_some());
    assert!(for_dashboard.last_refusal.is_none());
    assert_eq!(for_admin.version, for_dashboard.version);
    app.stop().await;
}
