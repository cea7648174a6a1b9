//! The ways in that README.md shows callers outside Rust, run against a real
//! server so neither can drift from the proto contract: `examples/score.py`,
//! and every `grpcurl` command in the README's sh blocks, run as written
//! through `tests/python/grpcurl.py` (a reflection client that takes
//! grpcurl's arguments; grpcurl itself is not installed here).

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::cli::ok;
use common::python::python;
use common::*;
use rung::grpc::proto::audience_service_client::AudienceServiceClient;
use rung::grpc::proto::{
    CountSegmentRequest, Event, ExportSegmentRequest, ScoreRequest, ScoreResponse, TrackRequest,
};
use serde_json::Value;

const REPO: &str = env!("CARGO_MANIFEST_DIR");

/// How many grpcurl commands README.md shows today: a reformat that hides
/// some from the extraction below fails the test rather than skipping them.
const README_GRPCURL_COMMANDS: usize = 5;

/// Where the README's commands expect the server.
const README_ADDRESS: &str = "localhost:50051";

/// The segment definition the README's ExportSegment command sends; the
/// test stores a visitor it matches, so the export has rows to check.
const README_EXPORT_DEFINITION: &str =
    "add_to_cart in last 3d then no purchase and probability >= 0.2";

/// What `examples/score.py` and the README's Score command send, written
/// out again here: visitor v-42 at 2026-01-01 12:00 UTC, after a view, a
/// cart add (Segment's name for it) and a checkout.
fn documented_score_request() -> ScoreRequest {
    let noon = AS_OF_SECS + 12 * HOUR;
    let event = |kind: &str, minutes_before: i64, item: &str| Event {
        r#type: kind.into(),
        time: Some(ts(noon - minutes_before * 60)),
        item_id: item.into(),
        ..Event::default()
    };
    ScoreRequest {
        visitor_id: "v-42".into(),
        as_of: Some(ts(noon)),
        events: vec![
            event("view_item", 10, "sku-1"),
            event("Product Added", 8, "sku-1"),
            event("begin_checkout", 5, ""),
        ],
        ..ScoreRequest::default()
    }
}

/// Runs the environment's `python` with `args` from the repository root, on
/// a blocking thread: the in-process server answers on the runtime's.
async fn run_python(python: &Path, args: &[&str]) -> Output {
    let mut command = Command::new(python);
    command.args(args).current_dir(REPO);
    tokio::task::spawn_blocking(move || command.output().expect("python runs"))
        .await
        .expect("python's thread")
}

/// The value protobuf's text format printed for a top-level `field`
/// (`probability: 0.166...`).
fn text_field<'a>(printed: &'a str, field: &str) -> &'a str {
    printed
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(": "))
        .unwrap_or_else(|| panic!("no {field} in:\n{printed}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_example_prints_the_probability_the_rust_client_gets() {
    // Arrange
    let python = python();
    let mut app = spawn_app().await;
    let rust: ScoreResponse = app
        .client
        .score(documented_score_request())
        .await
        .expect("the Rust client scores")
        .into_inner();

    // Act
    let addr = app.addr.to_string();
    let out = run_python(&python, &["examples/score.py", &addr]).await;

    // Assert: text format prints a double to 17 digits, so it parses back
    // to exactly the value the server sent.
    let printed = ok(&out);
    let probability: f64 = text_field(&printed, "probability").parse().unwrap();
    assert!(probability > 0.0 && probability < 1.0, "{printed}");
    assert_eq!(probability, rust.probability, "{printed}");
    let version = format!("\"{}\"", rust.model_version);
    assert_eq!(text_field(&printed, "model_version"), version);
    app.stop().await;
}

/// Every `grpcurl` command in README.md's sh blocks, one string each: a
/// line ending in `\` goes on with the next, and so does a line that leaves
/// a single quote open (a multi-line `-d` body).
fn readme_grpcurl_commands() -> Vec<String> {
    let readme = std::fs::read_to_string(Path::new(REPO).join("README.md")).unwrap();
    let mut commands = Vec::new();
    let (mut in_sh, mut open): (bool, Option<String>) = (false, None);
    for line in readme.lines() {
        if !in_sh {
            in_sh = line.trim() == "```sh";
            continue;
        }
        if line.trim() == "```" {
            assert!(
                open.is_none(),
                "a grpcurl command runs past its block: {open:?}"
            );
            in_sh = false;
            continue;
        }
        let text = match open.take() {
            // Outside quotes the newline is a space to the shell; inside a
            // quoted JSON body it is whitespace too.
            Some(start) => format!("{start}\n{line}"),
            None if line.trim_start().starts_with("grpcurl ") => line.to_string(),
            None => continue,
        };
        if text.matches('\'').count() % 2 == 1 {
            open = Some(text);
        } else if let Some(head) = text.strip_suffix('\\') {
            open = Some(head.to_string());
        } else {
            commands.push(text);
        }
    }
    commands
}

/// Splits a command line as a POSIX shell would (Python's shlex) and runs
/// it with the reflection client standing in for `grpcurl`, so the README's
/// quoting is what is tested.
const AS_GRPCURL: &str = r#"
import runpy, shlex, sys
client, line = sys.argv[1], sys.argv[2]
words = shlex.split(line, comments=True)
assert words[0] == "grpcurl", words
sys.argv = [client] + words[1:]
runpy.run_path(client, run_name="__main__")
"#;

/// Runs `line`, a grpcurl command line, with the reflection client in
/// grpcurl's place.
async fn grpcurl(python: &Path, line: &str) -> Output {
    let client = Path::new(REPO).join("tests/python/grpcurl.py");
    run_python(python, &["-c", AS_GRPCURL, client.to_str().unwrap(), line]).await
}

/// The JSON messages the client printed, one after another.
fn messages(printed: &str) -> Vec<Value> {
    serde_json::Deserializer::from_str(printed)
        .into_iter::<Value>()
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| panic!("{e}:\n{printed}"))
}

/// A uint64 field of a JSON message: a string in protobuf's JSON mapping,
/// and absent when zero.
fn uint64(message: &Value, field: &str) -> u64 {
    message
        .get(field)
        .map_or(0, |v| v.as_str().unwrap().parse().unwrap())
}

/// An event `ago` seconds before `now`.
fn before(now: i64, kind: &str, ago: i64) -> Event {
    Event {
        r#type: kind.into(),
        time: Some(ts(now - ago)),
        ..Event::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_grpcurl_command_in_the_readme_answers_through_reflection() {
    // Arrange: the commands, and a store their segments have members in.
    let commands = readme_grpcurl_commands();
    assert!(
        commands.len() >= README_GRPCURL_COMMANDS,
        "README.md shows {} grpcurl commands in sh blocks, not {README_GRPCURL_COMMANDS}: {commands:#?}",
        commands.len()
    );
    let python = python();
    let mut app = spawn_app().await;
    let now = now_secs();
    let shoppers = [
        // Read reviews, carted four times and began a checkout within the
        // hour, no purchase: one of `cart_abandoners`, and (the model puts
        // it near 0.3) of the README's export definition.
        (
            "carted",
            vec![
                before(now, "view_item", 50 * 60),
                before(now, "review_read", 49 * 60),
                before(now, "review_read", 48 * 60),
                before(now, "review_read", 47 * 60),
                before(now, "add_to_cart", 45 * 60),
                before(now, "add_to_cart", 44 * 60),
                before(now, "add_to_cart", 43 * 60),
                before(now, "add_to_cart", 42 * 60),
                before(now, "begin_checkout", 41 * 60),
            ],
        ),
        // Carted and bought since: in neither.
        (
            "bought",
            vec![
                before(now, "add_to_cart", 2 * HOUR),
                before(now, "purchase", HOUR),
            ],
        ),
    ];
    for (visitor, events) in shoppers {
        let request = TrackRequest {
            visitor_id: visitor.into(),
            events,
        };
        app.client.track(request).await.expect("tracked");
    }
    let mut audiences = AudienceServiceClient::new(app.channel.clone());
    let rust_score = app
        .client
        .score(documented_score_request())
        .await
        .expect("the Rust client scores")
        .into_inner();
    let rust_count = audiences
        .count_segment(CountSegmentRequest {
            name: "cart_abandoners".into(),
            ..CountSegmentRequest::default()
        })
        .await
        .expect("the Rust client counts")
        .into_inner()
        .count;
    let mut export = audiences
        .export_segment(ExportSegmentRequest {
            definition: README_EXPORT_DEFINITION.into(),
            ..ExportSegmentRequest::default()
        })
        .await
        .expect("the Rust client exports")
        .into_inner();
    let mut rust_members = Vec::new();
    while let Some(member) = export.message().await.expect("export streams") {
        rust_members.push(member.visitor_id);
    }
    // Worked out by hand: only "carted" is a member of either.
    assert_eq!(rust_count, 1);
    assert_eq!(
        rust_members,
        ["carted"],
        "\"carted\" must score >= 0.2 for the README's export to have a row \
         (a retrained model may need it to show more intent)"
    );

    for command in &commands {
        // Act
        let line = command.replace(README_ADDRESS, &app.addr.to_string());
        let out = grpcurl(&python, &line).await;

        // Assert: it succeeded, and printed what that call must answer.
        assert!(
            out.status.success(),
            "{command}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let printed = String::from_utf8(out.stdout).unwrap();
        let target = command.split_whitespace().last().unwrap();
        match target {
            "list" => {
                let services: Vec<&str> = printed.lines().collect();
                for service in [
                    "rung.v1.IntentService",
                    "rung.v1.AudienceService",
                    "grpc.health.v1.Health",
                ] {
                    assert!(services.contains(&service), "{service}: {printed}");
                }
            }
            "rung.v1.IntentService/Score" => {
                let [answer] = &messages(&printed)[..] else {
                    panic!("one response: {printed}")
                };
                assert_eq!(answer["visitorId"], "v-42", "{printed}");
                let probability = answer["probability"].as_f64().unwrap();
                assert!(probability > 0.0 && probability < 1.0, "{printed}");
                assert_eq!(probability, rust_score.probability, "{printed}");
                assert_eq!(
                    answer["modelVersion"].as_str(),
                    Some(rust_score.model_version.as_str())
                );
            }
            "grpc.health.v1.Health/Check" => {
                assert_eq!(messages(&printed), [serde_json::json!({"status": "SERVING"})]);
            }
            "rung.v1.AudienceService/CountSegment" => {
                let [answer] = &messages(&printed)[..] else {
                    panic!("one response: {printed}")
                };
                assert_eq!(uint64(answer, "count"), rust_count, "{printed}");
            }
            "rung.v1.AudienceService/ExportSegment" => {
                let members = messages(&printed);
                let ids: Vec<&str> = members
                    .iter()
                    .map(|m| m["visitorId"].as_str().unwrap())
                    .collect();
                assert_eq!(ids, rust_members, "{printed}");
                for member in &members {
                    let probability = member["probability"].as_f64().unwrap();
                    assert!(probability >= 0.2, "{printed}");
                }
            }
            other => panic!(
                "README.md runs {other} with grpcurl; say here what its answer must show:\n{command}"
            ),
        }
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reflection_client_fails_with_the_status_as_grpcurl_does() {
    // Arrange: without this the README test's "it succeeded" would prove
    // nothing.
    let python = python();
    let app = spawn_app().await;
    let addr = app.addr;
    let count = |body: &str| {
        format!("grpcurl -plaintext -d '{body}' {addr} rung.v1.AudienceService/CountSegment")
    };

    // Act: a segment no one defined, and a field the request does not have.
    let missing = grpcurl(&python, &count(r#"{"name": "nobody"}"#)).await;
    let misspelt = grpcurl(&python, &count(r#"{"nam": "nobody"}"#)).await;

    // Assert: grpcurl's exit code for a status (64 + NOT_FOUND's 5) with
    // the server's message; a plain failure for JSON the request refuses.
    let said = String::from_utf8_lossy(&missing.stderr);
    assert_eq!(missing.status.code(), Some(64 + 5), "{said}");
    assert!(
        said.contains("NOT_FOUND") && said.contains("nobody"),
        "{said}"
    );
    let said = String::from_utf8_lossy(&misspelt.stderr);
    assert_eq!(misspelt.status.code(), Some(1), "{said}");
    assert!(said.contains(r#"no field named "nam""#), "{said}");
    app.stop().await;
}
