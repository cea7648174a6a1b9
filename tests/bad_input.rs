//! Every bad input is INVALID_ARGUMENT naming the field (and, for events,
//! the index), and the server keeps serving afterwards.

mod common;

use common::*;
use rung::grpc::proto::{Event, ScoreBatchRequest, ScoreRequest};
use tonic::Code;

async fn refused(app: &mut TestApp, req: ScoreRequest) -> String {
    let status = app.client.score(req).await.expect_err("should be refused");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    status.message().to_string()
}

fn valid() -> Vec<Event> {
    vec![ev("view_item", 60, "a"), ev("add_to_cart", 30, "a")]
}

#[tokio::test]
async fn empty_visitor_id_is_refused() {
    let mut app = spawn_app().await;
    let msg = refused(&mut app, request("", valid())).await;
    assert!(msg.starts_with("visitor_id:"), "{msg}");
    app.stop().await;
}

#[tokio::test]
async fn over_long_visitor_id_is_refused() {
    let mut app = spawn_app().await;
    let msg = refused(&mut app, request(&"x".repeat(257), valid())).await;
    assert!(
        msg.starts_with("visitor_id:") && msg.contains("257"),
        "{msg}"
    );
    app.stop().await;
}

#[tokio::test]
async fn unknown_event_type_is_refused_with_its_index() {
    let mut app = spawn_app().await;
    let mut events = valid();
    events.push(ev("hovered_logo", 10, ""));
    let msg = refused(&mut app, request("v", events)).await;
    assert!(
        msg.starts_with("events[2].type:") && msg.contains("hovered_logo"),
        "{msg}"
    );
    app.stop().await;
}

#[tokio::test]
async fn missing_time_is_refused() {
    let mut app = spawn_app().await;
    let mut events = valid();
    events[1].time = None;
    let msg = refused(&mut app, request("v", events)).await;
    assert!(msg.starts_with("events[1].time:"), "{msg}");
    app.stop().await;
}

#[tokio::test]
async fn time_beyond_the_allowed_clock_skew_is_refused() {
    let mut app = spawn_app().await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let mut events = valid();
    // The default skew is 300 s; an hour ahead is too far.
    events[0].time = Some(ts(now + HOUR));
    let msg = refused(&mut app, request("v", events)).await;
    assert!(
        msg.starts_with("events[0].time:") && msg.contains("ahead"),
        "{msg}"
    );
    app.stop().await;
}

#[tokio::test]
async fn time_with_invalid_nanos_is_refused() {
    let mut app = spawn_app().await;
    let mut events = valid();
    events[0].time = Some(prost_types::Timestamp {
        seconds: AS_OF_SECS,
        nanos: -5,
    });
    let msg = refused(&mut app, request("v", events)).await;
    assert!(msg.starts_with("events[0].time:"), "{msg}");
    app.stop().await;
}

#[tokio::test]
async fn nan_and_infinite_values_are_refused() {
    let mut app = spawn_app().await;
    for (i, bad) in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY]
        .into_iter()
        .enumerate()
    {
        let mut events = valid();
        events[1].value = bad;
        let msg = refused(&mut app, request("v", events)).await;
        assert!(msg.starts_with("events[1].value:"), "case {i}: {msg}");
    }
    app.stop().await;
}

#[tokio::test]
async fn too_many_events_are_refused() {
    let mut settings = test_settings();
    settings.limits.max_events_per_request = 3;
    let mut app = spawn_app_with(settings).await;
    let events = (0..4).map(|i| ev("page_view", 100 + i, "")).collect();
    let msg = refused(&mut app, request("v", events)).await;
    assert!(
        msg.starts_with("events:") && msg.contains('4') && msg.contains('3'),
        "{msg}"
    );
    app.stop().await;
}

#[tokio::test]
async fn the_default_event_limit_is_ten_thousand() {
    let mut app = spawn_app().await;
    let at_limit: Vec<Event> = (0..10_000).map(|i| ev("page_view", 100 + i, "")).collect();
    let mut over = at_limit.clone();
    over.push(ev("page_view", 50, ""));

    let ok = app.client.score(request("v", at_limit)).await;
    let msg = refused(&mut app, request("v", over)).await;

    assert!(ok.is_ok(), "{ok:?}");
    assert!(msg.starts_with("events:") && msg.contains("10001"), "{msg}");
    app.stop().await;
}

#[tokio::test]
async fn too_many_visitors_in_a_batch_are_refused() {
    let mut settings = test_settings();
    settings.limits.max_visitors_per_batch = 2;
    let mut app = spawn_app_with(settings).await;
    let visitors = (0..3).map(|i| request(&format!("v{i}"), valid())).collect();

    let status = app
        .client
        .score_batch(ScoreBatchRequest { visitors })
        .await
        .expect_err("refused");

    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().starts_with("visitors:"),
        "{}",
        status.message()
    );
    app.stop().await;
}

#[tokio::test]
async fn a_bad_event_in_a_batch_names_the_visitor_and_the_event() {
    let mut app = spawn_app().await;
    let mut bad = valid();
    bad[1].value = f64::NAN;
    let visitors = vec![request("ok", valid()), request("bad", bad)];

    let status = app
        .client
        .score_batch(ScoreBatchRequest { visitors })
        .await
        .expect_err("refused");

    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().starts_with("visitors[1].events[1].value:"),
        "{}",
        status.message()
    );
    app.stop().await;
}

#[tokio::test]
async fn invalid_as_of_and_reason_counts_are_refused() {
    let mut app = spawn_app().await;
    let mut req = request("v", valid());
    req.as_of = Some(prost_types::Timestamp {
        seconds: i64::MAX,
        nanos: 0,
    });
    let msg = refused(&mut app, req).await;
    assert!(msg.starts_with("as_of:"), "{msg}");

    let mut req = request("v", valid());
    req.max_reasons = 11;
    let msg = refused(&mut app, req).await;
    assert!(msg.starts_with("max_reasons:"), "{msg}");
    app.stop().await;
}

#[tokio::test]
async fn oversized_ids_and_attributes_are_refused() {
    let mut app = spawn_app().await;
    let mut events = valid();
    events[0].item_id = "i".repeat(300);
    let msg = refused(&mut app, request("v", events)).await;
    assert!(msg.starts_with("events[0].item_id:"), "{msg}");

    let mut events = valid();
    events[1].event_id = "e".repeat(200);
    let msg = refused(&mut app, request("v", events)).await;
    assert!(msg.starts_with("events[1].event_id:"), "{msg}");

    let mut events = valid();
    events[0].attributes = (0..65).map(|i| (format!("k{i}"), "v".into())).collect();
    let msg = refused(&mut app, request("v", events)).await;
    assert!(msg.starts_with("events[0].attributes:"), "{msg}");

    let mut events = valid();
    events[0].r#type = String::new();
    let msg = refused(&mut app, request("v", events)).await;
    assert!(msg.starts_with("events[0].type:"), "{msg}");
    app.stop().await;
}

#[tokio::test]
async fn the_server_keeps_serving_after_refusals() {
    let mut app = spawn_app().await;
    let _ = refused(&mut app, request("", valid())).await;
    let ok = app.client.score(request("v", valid())).await;
    assert!(ok.is_ok(), "{ok:?}");
    app.stop().await;
}
