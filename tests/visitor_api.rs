//! Remembering visitors: Track, TrackStream, Score by id, GetVisitor and
//! ForgetVisitor through the real server.

mod common;

use common::*;
use rung::grpc::proto::{
    Event, ForgetVisitorRequest, GetVisitorRequest, ScoreRequest, Stage, TrackRequest,
};
use tonic::Code;

fn track(visitor: &str, events: Vec<Event>) -> TrackRequest {
    TrackRequest {
        visitor_id: visitor.into(),
        events,
    }
}

/// An event `ago_secs` before now, with an id.
fn recent(kind: &str, ago_secs: i64, item: &str, id: &str) -> Event {
    Event {
        r#type: kind.into(),
        time: Some(ts(now_secs() - ago_secs)),
        item_id: item.into(),
        event_id: id.into(),
        ..Event::default()
    }
}

fn journey() -> Vec<Event> {
    vec![
        recent("page_view", 3 * DAY, "", "e1"),
        recent("view_item", 3 * DAY - 60, "sku-1", "e2"),
        recent("view_item", 2 * HOUR, "sku-2", "e3"),
        recent("Product Added", HOUR, "sku-2", "e4"),
        recent("begin_checkout", 1800, "", "e5"),
    ]
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * (1.0 + a.abs().max(b.abs()))
}

#[tokio::test]
async fn scoring_by_id_after_tracking_equals_scoring_the_same_events_inline() {
    // Arrange
    let mut app = spawn_app().await;
    let as_of = ts(std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64);
    let events = journey();
    let (first, second) = events.split_at(2);
    app.client
        .track(track("stored", first.to_vec()))
        .await
        .unwrap();
    app.client
        .track(track("stored", second.to_vec()))
        .await
        .unwrap();

    // Act
    let by_id = app
        .client
        .score(ScoreRequest {
            visitor_id: "stored".into(),
            as_of: Some(as_of),
            explain: true,
            ..ScoreRequest::default()
        })
        .await
        .unwrap()
        .into_inner();
    let inline = app
        .client
        .score(ScoreRequest {
            visitor_id: "fresh".into(),
            events: journey(),
            as_of: Some(as_of),
            explain: true,
            ..ScoreRequest::default()
        })
        .await
        .unwrap()
        .into_inner();

    // Assert
    assert!(
        close(by_id.probability, inline.probability),
        "{} vs {}",
        by_id.probability,
        inline.probability
    );
    assert!(close(by_id.ladder_points, inline.ladder_points));
    assert_eq!(by_id.rung, "begin_checkout");
    assert_eq!(by_id.rung, inline.rung);
    for (a, b) in by_id.features.iter().zip(&inline.features) {
        assert_eq!(a.feature, b.feature);
        assert!(
            close(a.value, b.value),
            "{}: {} vs {}",
            a.feature,
            a.value,
            b.value
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn track_answers_counts_and_the_updated_score() {
    let mut app = spawn_app().await;

    let r = app
        .client
        .track(track("v", journey()))
        .await
        .unwrap()
        .into_inner();
    let again = app
        .client
        .track(track("v", journey()))
        .await
        .unwrap()
        .into_inner();

    assert_eq!((r.accepted, r.duplicates), (5, 0));
    assert_eq!((again.accepted, again.duplicates), (0, 5));
    let score = r.score.unwrap();
    assert_eq!(score.visitor_id, "v");
    assert_eq!(score.rung, "begin_checkout");
    assert_eq!(score.stage(), Stage::Intent);
    assert!(again.score.unwrap().ladder_points > 0.0);
    app.stop().await;
}

#[tokio::test]
async fn inline_events_are_scored_with_stored_ones_but_not_stored() {
    let mut app = spawn_app().await;
    app.client
        .track(track("v", journey()[..3].to_vec()))
        .await
        .unwrap();
    let before = app
        .client
        .score(ScoreRequest {
            visitor_id: "v".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();

    let with_inline = app
        .client
        .score(ScoreRequest {
            visitor_id: "v".into(),
            // One new event and one already stored (same id).
            events: vec![
                recent("add_to_cart", 60, "sku-2", "new"),
                journey()[0].clone(),
            ],
            ..ScoreRequest::default()
        })
        .await
        .unwrap()
        .into_inner();
    let profile = app
        .client
        .get_visitor(GetVisitorRequest {
            visitor_id: "v".into(),
            max_events: 0,
        })
        .await
        .unwrap()
        .into_inner();

    assert_eq!(before.rung, "view_item");
    assert_eq!(with_inline.rung, "add_to_cart");
    assert_eq!(with_inline.ignored_duplicate, 1);
    assert_eq!(with_inline.ignored_events, 1);
    assert_eq!(profile.events, 3);
    assert!(!profile.counts.contains_key("add_to_cart"));
    app.stop().await;
}

#[tokio::test]
async fn get_visitor_returns_the_profile_and_not_found_for_strangers() {
    let mut app = spawn_app().await;
    let mut events = journey();
    events[1]
        .attributes
        .insert("campaign".into(), "winter".into());
    app.client.track(track("v", events.clone())).await.unwrap();

    let p = app
        .client
        .get_visitor(GetVisitorRequest {
            visitor_id: "v".into(),
            max_events: 3,
        })
        .await
        .unwrap()
        .into_inner();
    let stranger = app
        .client
        .get_visitor(GetVisitorRequest {
            visitor_id: "nobody".into(),
            max_events: 0,
        })
        .await
        .unwrap_err();

    assert_eq!(p.counts.get("view_item"), Some(&2));
    assert_eq!(p.counts.get("add_to_cart"), Some(&1)); // from "Product Added"
    assert_eq!(p.counts.get("page_view"), Some(&1));
    assert_eq!(p.events, 5);
    assert_eq!(p.rung, "begin_checkout");
    assert_eq!(p.stage(), Stage::Intent);
    assert_eq!(p.first_seen, events[0].time);
    assert_eq!(p.last_seen, events[4].time);
    // Sessions: {3 days ago, a minute later}, {2 h ago}, {1 h ago, 30 min ago}.
    assert_eq!(p.sessions, 3);
    let types: Vec<&str> = p.recent_events.iter().map(|e| e.r#type.as_str()).collect();
    assert_eq!(types, ["begin_checkout", "add_to_cart", "view_item"]);
    assert_eq!(stranger.code(), Code::NotFound);
    app.stop().await;
}

#[tokio::test]
async fn forget_visitor_erases_everything_about_them() {
    let mut app = spawn_app().await;
    app.client.track(track("v", journey())).await.unwrap();

    let first = app
        .client
        .forget_visitor(ForgetVisitorRequest {
            visitor_id: "v".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let gone = app
        .client
        .get_visitor(GetVisitorRequest {
            visitor_id: "v".into(),
            max_events: 0,
        })
        .await
        .unwrap_err();
    let second = app
        .client
        .forget_visitor(ForgetVisitorRequest {
            visitor_id: "v".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let score = app
        .client
        .score(ScoreRequest {
            visitor_id: "v".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();

    assert!(first.existed);
    assert_eq!(gone.code(), Code::NotFound);
    assert!(!second.existed);
    assert_eq!(score.ladder_points, 0.0);
    app.stop().await;
}

#[tokio::test]
async fn a_track_with_one_bad_event_is_refused_whole() {
    let mut app = spawn_app().await;
    let mut events = journey();
    events[3].value = f64::NAN;

    let status = app.client.track(track("v", events)).await.unwrap_err();
    let lookup = app
        .client
        .get_visitor(GetVisitorRequest {
            visitor_id: "v".into(),
            max_events: 0,
        })
        .await
        .unwrap_err();

    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().starts_with("events[3].value:"),
        "{}",
        status.message()
    );
    assert_eq!(lookup.code(), Code::NotFound);
    app.stop().await;
}

#[tokio::test]
async fn events_older_than_the_retention_period_are_refused() {
    let mut app = spawn_app().await;
    let status = app
        .client
        .track(track("v", vec![recent("view_item", 91 * DAY, "", "")]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().starts_with("events[0].time:") && status.message().contains("retention"),
        "{}",
        status.message()
    );
    app.stop().await;
}

#[tokio::test]
async fn duplicates_are_recognised_after_a_restart() {
    let settings = test_settings();
    let mut app = spawn_app_with(settings.clone()).await;
    app.client.track(track("v", journey())).await.unwrap();
    app.stop().await;

    let mut app = spawn_app_with(settings).await;
    let r = app
        .client
        .track(track("v", journey()))
        .await
        .unwrap()
        .into_inner();
    let p = app
        .client
        .get_visitor(GetVisitorRequest {
            visitor_id: "v".into(),
            max_events: 0,
        })
        .await
        .unwrap()
        .into_inner();

    assert_eq!((r.accepted, r.duplicates), (0, 5));
    assert_eq!(p.events, 5);
    app.stop().await;
}

#[tokio::test]
async fn track_stream_applies_good_messages_and_reports_bad_ones() {
    let mut app = spawn_app().await;
    let mut bad = journey();
    bad[0].r#type = "nope".into();
    let messages = vec![
        track("a", journey()),
        track("b", bad),
        track("a", journey()), // all duplicates
        track("", journey()),
        track("c", journey()[..2].to_vec()),
    ];

    let summary = app
        .client
        .track_stream(tokio_stream::iter(messages))
        .await
        .unwrap()
        .into_inner();

    assert_eq!(summary.messages, 5);
    assert_eq!(summary.accepted, 7);
    assert_eq!(summary.duplicates, 5);
    assert_eq!(summary.rejected, 10);
    let indices: Vec<u64> = summary.rejections.iter().map(|r| r.message_index).collect();
    assert_eq!(indices, [1, 3]);
    assert!(
        summary.rejections[0].reason.starts_with("events[0].type:"),
        "{:?}",
        summary.rejections
    );
    assert_eq!(summary.rejections[0].visitor_id, "b");
    assert!(summary.rejections[1].reason.starts_with("visitor_id:"));
    let b = app
        .client
        .get_visitor(GetVisitorRequest {
            visitor_id: "b".into(),
            max_events: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(b.code(), Code::NotFound);
    app.stop().await;
}

#[tokio::test]
async fn scoring_before_the_latest_stored_event_replays_kept_events() {
    let mut app = spawn_app().await;
    app.client.track(track("v", journey())).await.unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    // Ninety minutes ago only the first three events had happened.
    let as_of = ts(now - 90 * 60);

    let past = app
        .client
        .score(ScoreRequest {
            visitor_id: "v".into(),
            as_of: Some(as_of),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let inline = app
        .client
        .score(ScoreRequest {
            visitor_id: "other".into(),
            events: journey()[..3].to_vec(),
            as_of: Some(as_of),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();

    assert_eq!(past.rung, "view_item");
    assert!(close(past.probability, inline.probability));
    assert!(close(past.ladder_points, inline.ladder_points));
    app.stop().await;
}

#[tokio::test]
async fn inactive_visitors_are_purged_by_the_retention_task() {
    // Retention of about 2 seconds, checked every second.
    let mut settings = test_settings();
    settings.store.retention_days = 2.0 / 86_400.0;
    settings.store.purge_interval_secs = 1;
    let mut app = spawn_app_with(settings).await;
    app.client
        .track(track("v", vec![recent("view_item", 0, "", "")]))
        .await
        .unwrap();

    // Poll for the condition, with a deadline.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut poll = tokio::time::interval(std::time::Duration::from_millis(100));
    loop {
        poll.tick().await;
        let r = app
            .client
            .get_visitor(GetVisitorRequest {
                visitor_id: "v".into(),
                max_events: 0,
            })
            .await;
        match r {
            Err(s) if s.code() == Code::NotFound => break,
            Ok(_) if std::time::Instant::now() < deadline => continue,
            other => panic!("visitor not purged: {other:?}"),
        }
    }
    app.stop().await;
}

#[tokio::test]
async fn a_corrupt_record_fails_that_visitor_alone_and_can_be_forgotten() {
    // Arrange: two stored visitors, then one record overwritten with junk
    // while the server is down.
    let settings = test_settings();
    let mut app = spawn_app_with(settings.clone()).await;
    app.client.track(track("good", journey())).await.unwrap();
    app.client.track(track("bad", journey())).await.unwrap();
    app.stop().await;
    {
        let db = redb::Database::open(settings.data_dir.join("rung.redb")).unwrap();
        // Rows are keyed by a pseudonym of the visitor id.
        let row = rung::store::redb_store::row_key(&db, "bad").unwrap();
        let txn = db.begin_write().unwrap();
        {
            let def: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("visitors");
            let mut table = txn.open_table(def).unwrap();
            assert!(redb::ReadableTable::get(&table, row.as_str())
                .unwrap()
                .is_some());
            table
                .insert(
                    row.as_str(),
                    &[0u8, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xfe, 0x01][..],
                )
                .unwrap();
        }
        txn.commit().unwrap();
    }
    let mut app = spawn_app_with(settings).await;

    // Act
    let score = app
        .client
        .score(ScoreRequest {
            visitor_id: "bad".into(),
            ..Default::default()
        })
        .await;
    let tracked = app
        .client
        .track(track("bad", vec![recent("view_item", 5, "", "")]))
        .await;
    let good = app
        .client
        .score(ScoreRequest {
            visitor_id: "good".into(),
            ..Default::default()
        })
        .await;
    let forgot = app
        .client
        .forget_visitor(ForgetVisitorRequest {
            visitor_id: "bad".into(),
        })
        .await;
    let fresh = app.client.track(track("bad", journey())).await;

    // Assert
    assert_eq!(score.unwrap_err().code(), Code::Internal);
    assert_eq!(tracked.unwrap_err().code(), Code::Internal);
    assert_eq!(good.unwrap().into_inner().rung, "begin_checkout");
    assert!(forgot.unwrap().into_inner().existed);
    assert_eq!(fresh.unwrap().into_inner().accepted, 5);
    app.stop().await;
}

#[tokio::test]
async fn a_track_without_events_is_refused_naming_the_field_and_creates_no_visitor() {
    let mut app = spawn_app().await;

    let refused = app.client.track(track("empty", vec![])).await.unwrap_err();
    let summary = app
        .client
        .track_stream(tokio_stream::iter(vec![
            track("empty", vec![]),
            track("full", journey()),
        ]))
        .await
        .unwrap()
        .into_inner();

    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    assert!(refused.message().starts_with("events:"), "{refused:?}");
    let indices: Vec<u64> = summary.rejections.iter().map(|r| r.message_index).collect();
    assert_eq!(indices, [0]);
    assert!(
        summary.rejections[0].reason.starts_with("events:"),
        "{:?}",
        summary.rejections
    );
    let empty = app
        .client
        .get_visitor(GetVisitorRequest {
            visitor_id: "empty".into(),
            max_events: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(empty.code(), Code::NotFound);
    app.stop().await;
}
