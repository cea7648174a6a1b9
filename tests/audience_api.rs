//! Audiences through the real server: built-in and saved segments counted
//! and exported against visitors whose membership is worked out by hand,
//! resumable exports, bad definitions, and funnel figures.

mod common;

use common::*;
use rung::grpc::proto::audience_service_client::AudienceServiceClient;
use rung::grpc::proto::{
    CountSegmentRequest, DeleteSegmentRequest, Event, ExportSegmentRequest, FunnelRequest,
    GetSegmentRequest, ListSegmentsRequest, PutSegmentRequest, SegmentMember, Stage, TrackRequest,
};
use tonic::transport::Channel;
use tonic::Code;

/// An event `ago` seconds before `now`.
fn at(kind: &str, now: i64, ago: i64) -> Event {
    Event {
        r#type: kind.into(),
        time: Some(ts(now - ago)),
        ..Event::default()
    }
}

async fn track(app: &mut TestApp, visitor: &str, events: Vec<Event>) {
    app.client
        .track(TrackRequest {
            visitor_id: visitor.into(),
            events,
        })
        .await
        .expect("tracked");
}

fn audiences(app: &TestApp) -> AudienceServiceClient<Channel> {
    AudienceServiceClient::new(app.channel.clone())
}

async fn count(client: &mut AudienceServiceClient<Channel>, name: &str, as_of: i64) -> u64 {
    client
        .count_segment(CountSegmentRequest {
            name: name.into(),
            as_of: Some(ts(as_of)),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|s| panic!("count {name}: {s:?}"))
        .into_inner()
        .count
}

async fn export(
    client: &mut AudienceServiceClient<Channel>,
    req: ExportSegmentRequest,
) -> Result<Vec<SegmentMember>, tonic::Status> {
    let mut stream = client.export_segment(req).await?.into_inner();
    let mut out = Vec::new();
    while let Some(m) = stream.message().await? {
        out.push(m);
    }
    Ok(out)
}

fn ids(members: &[SegmentMember]) -> Vec<&str> {
    members.iter().map(|m| m.visitor_id.as_str()).collect()
}

/// Visitors whose membership of each built-in is worked out by hand
/// (times relative to `now`).
async fn shop(app: &mut TestApp, now: i64) {
    // Carted 5 days ago, never bought: a cart abandoner.
    track(app, "cart-5d", vec![at("add_to_cart", now, 5 * DAY)]).await;
    // Carted 3 days ago and bought a day later: not one.
    track(
        app,
        "cart-then-bought",
        vec![
            at("add_to_cart", now, 3 * DAY),
            at("purchase", now, 2 * DAY),
        ],
    )
    .await;
    // Carted 9 days ago: outside the 7-day window.
    track(app, "cart-9d", vec![at("add_to_cart", now, 9 * DAY)]).await;
    // Bought 4 days ago, carted again yesterday: the latest cart counts.
    track(
        app,
        "bought-then-cart",
        vec![at("purchase", now, 4 * DAY), at("add_to_cart", now, DAY)],
    )
    .await;
    // Checkout started yesterday, no purchase.
    track(app, "checkout-1d", vec![at("begin_checkout", now, DAY)]).await;
    // A lead 2 days ago, 24 hours passed without a purchase.
    track(app, "lead-2d", vec![at("generate_lead", now, 2 * DAY)]).await;
    // Signed up an hour ago: the 24 hours have not passed yet.
    track(app, "signup-1h", vec![at("newsletter_signup", now, HOUR)]).await;
    // A lead who bought 12 hours later.
    track(
        app,
        "lead-bought",
        vec![
            at("generate_lead", now, 3 * DAY),
            at("purchase", now, 3 * DAY - 12 * HOUR),
        ],
    )
    .await;
    // Wishlisted twice within 30 days, no purchase.
    track(
        app,
        "wish-twice",
        vec![
            at("add_to_wishlist", now, 10 * DAY),
            at("add_to_wishlist", now, 2 * DAY),
        ],
    )
    .await;
    // Bought 40 days ago, nothing since: lapsed.
    track(app, "lapsed", vec![at("purchase", now, 40 * DAY)]).await;
}

#[tokio::test]
async fn built_in_segments_count_and_export_the_hand_worked_members() {
    // Arrange
    let mut app = spawn_app().await;
    let now = now_secs();
    shop(&mut app, now).await;
    let mut client = audiences(&app);

    // Act
    let mut counts = Vec::new();
    for name in [
        "cart_abandoners",
        "checkout_abandoners",
        "leads_without_purchase",
        "wishlist_twice_no_purchase",
        "lapsed_buyers",
    ] {
        counts.push((name, count(&mut client, name, now).await));
    }
    let members = export(
        &mut client,
        ExportSegmentRequest {
            name: "cart_abandoners".into(),
            as_of: Some(ts(now)),
            ..Default::default()
        },
    )
    .await
    .expect("export");

    // Assert
    assert_eq!(
        counts,
        vec![
            ("cart_abandoners", 2),
            ("checkout_abandoners", 1),
            ("leads_without_purchase", 1),
            ("wishlist_twice_no_purchase", 1),
            ("lapsed_buyers", 1),
        ]
    );
    // In the store's order (a pseudonym of the id in the embedded store),
    // each with its score and the clause that matched.
    let mut members = members;
    members.sort_by(|a, b| a.visitor_id.cmp(&b.visitor_id));
    assert_eq!(ids(&members), vec!["bought-then-cart", "cart-5d"]);
    for m in &members {
        assert!(m.probability > 0.0 && m.probability < 1.0, "{m:?}");
        assert!(m.ladder_score > 0.0 && m.ladder_score <= 100.0, "{m:?}");
        assert_eq!(m.matched_path, "$");
        assert!(m.matched_clause.contains("absent_after"), "{m:?}");
        assert!(!m.resume_token.is_empty());
    }
    assert_eq!(members[0].stage, Stage::Purchase as i32);
    assert_eq!(members[0].rung, "purchase");
    assert_eq!(members[1].stage, Stage::Intent as i32);
    assert_eq!(members[1].rung, "add_to_cart");
    app.stop().await;
}

#[tokio::test]
async fn membership_expires_by_itself_as_windows_pass() {
    // Arrange
    let mut app = spawn_app().await;
    let now = now_secs();
    shop(&mut app, now).await;
    let mut client = audiences(&app);

    // Act: the same store asked three days later, and as of the moment
    // the signup's 24 hours have passed.
    let later = count(&mut client, "cart_abandoners", now + 3 * DAY).await;
    let leads_later = count(&mut client, "leads_without_purchase", now + DAY).await;

    // Assert: cart-5d's cart is 8 days old by then; signup-1h joined.
    assert_eq!(later, 1);
    assert_eq!(leads_later, 2);
    app.stop().await;
}

#[tokio::test]
async fn an_inline_or_reports_the_first_alternative_that_matched_and_exports_resume() {
    // Arrange
    let mut app = spawn_app().await;
    let now = now_secs();
    shop(&mut app, now).await;
    let mut client = audiences(&app);
    let definition = r#"{"or":[{"count":{"event":"purchase","at_least":1}},
                              {"count":{"event":"add_to_cart","within":"7d","at_least":1}}]}"#;
    let req = |token: &str| ExportSegmentRequest {
        definition: definition.into(),
        as_of: Some(ts(now)),
        resume_token: token.into(),
        ..Default::default()
    };

    // Act
    let all = export(&mut client, req("")).await.expect("export");
    let rest = export(&mut client, req(&all[1].resume_token))
        .await
        .expect("resumed export");

    // Assert: buyers match the first alternative, recent carters the second.
    let mut got: Vec<(&str, &str)> = all
        .iter()
        .map(|m| (m.visitor_id.as_str(), m.matched_path.as_str()))
        .collect();
    got.sort();
    assert_eq!(
        got,
        vec![
            ("bought-then-cart", "$.or[0]"),
            ("cart-5d", "$.or[1]"),
            ("cart-then-bought", "$.or[0]"),
            ("lapsed", "$.or[0]"),
            ("lead-bought", "$.or[0]"),
        ]
    );
    assert_eq!(ids(&rest), ids(&all[2..]));
    app.stop().await;
}

#[tokio::test]
async fn saved_segments_are_validated_kept_and_removed() {
    // Arrange
    let settings = test_settings();
    let mut app = spawn_app_with(settings.clone()).await;
    let now = now_secs();
    shop(&mut app, now).await;
    let mut client = audiences(&app);
    let put = |definition: &str, overwrite: bool| PutSegmentRequest {
        name: "recent_carts".into(),
        definition: definition.into(),
        description: "carted this week".into(),
        overwrite,
    };
    let week = r#"{"count":{"event":"add_to_cart","within":"7d","at_least":1}}"#;
    let ten_days = r#"{"count":{"event":"add_to_cart","within":"10d","at_least":1}}"#;

    // Act + Assert: a name is taken until overwrite says otherwise.
    let first = client.put_segment(put(week, false)).await.expect("saved");
    assert!(!first.into_inner().replaced);
    let again = client.put_segment(put(ten_days, false)).await.unwrap_err();
    assert_eq!(again.code(), Code::AlreadyExists, "{again:?}");
    assert!(again.message().contains("overwrite"), "{again:?}");
    assert_eq!(count(&mut client, "recent_carts", now).await, 3);
    let replaced = client
        .put_segment(put(ten_days, true))
        .await
        .expect("replaced");
    assert!(replaced.into_inner().replaced);
    assert_eq!(count(&mut client, "recent_carts", now).await, 4);

    // Built-ins first, then saved ones; each with its name.
    let list = client
        .list_segments(ListSegmentsRequest {})
        .await
        .unwrap()
        .into_inner()
        .segments;
    let names: Vec<(&str, bool)> = list.iter().map(|s| (s.name.as_str(), s.builtin)).collect();
    assert_eq!(names.len(), 7);
    assert_eq!(names[0], ("cart_abandoners", true));
    assert_eq!(names[6], ("recent_carts", false));
    assert!(names[..6].iter().all(|(_, builtin)| *builtin));

    // Kept with the visitor data: still there after a restart.
    app.stop().await;
    let app = spawn_app_with(settings).await;
    let mut client = audiences(&app);
    let got = client
        .get_segment(GetSegmentRequest {
            name: "recent_carts".into(),
        })
        .await
        .expect("still saved")
        .into_inner()
        .segment
        .unwrap();
    assert_eq!(got.definition, ten_days);
    assert_eq!(got.description, "carted this week");
    assert!(got.updated_at.is_some());

    // Deleted, it is gone; built-ins cannot be deleted or redefined.
    client
        .delete_segment(DeleteSegmentRequest {
            name: "recent_carts".into(),
        })
        .await
        .expect("deleted");
    let gone = client
        .get_segment(GetSegmentRequest {
            name: "recent_carts".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(gone.code(), Code::NotFound);
    let again = client
        .delete_segment(DeleteSegmentRequest {
            name: "recent_carts".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::NotFound);
    let builtin = client
        .delete_segment(DeleteSegmentRequest {
            name: "cart_abandoners".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(builtin.code(), Code::InvalidArgument);
    assert!(builtin.message().starts_with("name:"), "{builtin:?}");
    let redefine = client
        .put_segment(PutSegmentRequest {
            name: "cart_abandoners".into(),
            definition: week.into(),
            overwrite: true,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(redefine.code(), Code::InvalidArgument);
    app.stop().await;
}

#[tokio::test]
async fn bad_definitions_are_refused_with_their_position() {
    // Arrange
    let app = spawn_app().await;
    let mut client = audiences(&app);
    let cases = [
        (
            r#"{"and":[{"last_seen":{"within":"7d"}},{"count":{"event":"add_to_kart","at_least":1}}]}"#,
            "$.and[1].count.event",
        ),
        (r#"{"and":[{"reached":"purchase"},"#, "line 1, column"),
        (
            r#"{"count":{"event":"purchase","within":"7 fortnights","at_least":1}}"#,
            "$.count.within",
        ),
        (r#"{"probability":{"gte":1.5}}"#, "$.probability"),
        (r#"{"sessions":{"gte":2},"band":"high"}"#, "$"),
        (r#"{"reached":"page_view"}"#, "$.reached"),
    ];

    for (definition, position) in cases {
        // Act
        let put = client
            .put_segment(PutSegmentRequest {
                name: "bad".into(),
                definition: definition.into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        let inline = client
            .count_segment(CountSegmentRequest {
                definition: definition.into(),
                ..Default::default()
            })
            .await
            .unwrap_err();

        // Assert
        for status in [put, inline] {
            assert_eq!(
                status.code(),
                Code::InvalidArgument,
                "{definition}: {status:?}"
            );
            assert!(
                status.message().starts_with("definition: at ")
                    && status.message().contains(position),
                "{definition}: {}",
                status.message()
            );
        }
    }
    // Nothing was saved by the refused puts.
    let missing = client
        .get_segment(GetSegmentRequest { name: "bad".into() })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    // A name and a definition at once, or neither.
    for req in [
        CountSegmentRequest {
            name: "cart_abandoners".into(),
            definition: r#"{"reached":"purchase"}"#.into(),
            ..Default::default()
        },
        CountSegmentRequest::default(),
    ] {
        let s = client.count_segment(req).await.unwrap_err();
        assert_eq!(s.code(), Code::InvalidArgument, "{s:?}");
    }
    let bad_name = client
        .put_segment(PutSegmentRequest {
            name: "Cart Abandoners!".into(),
            definition: r#"{"reached":"purchase"}"#.into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(bad_name.message().starts_with("name:"), "{bad_name:?}");
    let bad_token = client
        .export_segment(ExportSegmentRequest {
            name: "cart_abandoners".into(),
            resume_token: "not-a-token".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(
        bad_token.message().starts_with("resume_token:"),
        "{bad_token:?}"
    );
    app.stop().await;
}

#[tokio::test]
async fn an_export_of_a_deleted_segment_ends_with_not_found() {
    // Arrange: enough members for the export to outrun its buffer, so it is
    // still running when the segment goes.
    let mut app = spawn_app().await;
    let now = now_secs();
    let messages: Vec<TrackRequest> = (0..60_000)
        .map(|i| TrackRequest {
            visitor_id: format!("v{i:05}"),
            events: vec![at("add_to_cart", now, HOUR)],
        })
        .collect();
    let summary = app
        .client
        .track_stream(tokio_stream::iter(messages))
        .await
        .expect("stream")
        .into_inner();
    assert_eq!(summary.accepted, 60_000);
    let mut client = audiences(&app);
    client
        .put_segment(PutSegmentRequest {
            name: "carted".into(),
            definition: r#"{"reached":"add_to_cart"}"#.into(),
            ..Default::default()
        })
        .await
        .expect("saved");
    // Counted on all cores over parts of the id space: every visitor once.
    let counted = client
        .count_segment(CountSegmentRequest {
            name: "carted".into(),
            ..Default::default()
        })
        .await
        .expect("count")
        .into_inner();
    assert_eq!((counted.count, counted.scanned), (60_000, 60_000));

    // Act
    let mut stream = client
        .export_segment(ExportSegmentRequest {
            name: "carted".into(),
            ..Default::default()
        })
        .await
        .expect("export starts")
        .into_inner();
    let first = stream
        .message()
        .await
        .expect("a member")
        .expect("not empty");
    client
        .delete_segment(DeleteSegmentRequest {
            name: "carted".into(),
        })
        .await
        .expect("deleted");
    let mut received = 1;
    let end = loop {
        match stream.message().await {
            Ok(Some(_)) => received += 1,
            Ok(None) => break None,
            Err(status) => break Some(status),
        }
    };
    let after = export(
        &mut client,
        ExportSegmentRequest {
            name: "carted".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap_err();

    // Assert
    assert!(first.visitor_id.starts_with('v'), "{first:?}");
    let end = end.unwrap_or_else(|| panic!("stream ended quietly after {received} members"));
    assert_eq!(end.code(), Code::NotFound, "{end:?}");
    assert!(received < 60_000);
    assert_eq!(after.code(), Code::NotFound);
    app.stop().await;
}

#[tokio::test]
async fn the_funnel_counts_reach_conversion_and_rates_over_a_range() {
    // Arrange: the range is the last 10 days.
    let mut app = spawn_app().await;
    let now = now_secs();
    // Views then carts (two sessions: 2 days and 1 day ago).
    track(
        &mut app,
        "a",
        vec![at("view_item", now, 2 * DAY), at("add_to_cart", now, DAY)],
    )
    .await;
    // Buys in one session (view, cart, checkout, purchase within minutes).
    track(
        &mut app,
        "b",
        vec![
            at("view_item", now, 3 * DAY),
            at("add_to_cart", now, 3 * DAY - 60),
            at("begin_checkout", now, 3 * DAY - 120),
            at("add_shipping_info", now, 3 * DAY - 180),
            at("add_payment_info", now, 3 * DAY - 240),
            at("purchase", now, 3 * DAY - 300),
        ],
    )
    .await;
    // Only viewed, one session.
    track(&mut app, "c", vec![at("view_item", now, 5 * DAY)]).await;
    // Active only before the range.
    track(&mut app, "d", vec![at("purchase", now, 20 * DAY)]).await;
    let mut client = audiences(&app);

    // Act
    let f = client
        .funnel(FunnelRequest {
            from: Some(ts(now - 10 * DAY)),
            to: Some(ts(now + 1)),
        })
        .await
        .expect("funnel")
        .into_inner();

    // Assert
    assert_eq!((f.visitors, f.sessions), (3, 4));
    let step = |name: &str| {
        f.milestones
            .iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("{name}"))
            .clone()
    };
    // Everyone reached view_item (and so the rung below it).
    assert_eq!(step("view_item").visitors, 3);
    // 2 of 3 carted: conversion 2/3, one dropped off.
    let cart = step("add_to_cart");
    assert_eq!((cart.visitors, cart.drop_off), (2, 1));
    assert!((cart.step_conversion - 2.0 / 3.0).abs() < 1e-12);
    assert!((cart.drop_off_rate - 1.0 / 3.0).abs() < 1e-12);
    assert_eq!(step("begin_checkout").visitors, 1);
    assert_eq!(step("purchase").visitors, 1);
    assert!((step("purchase").step_conversion - 1.0).abs() < 1e-12);
    let stages: Vec<u64> = f.stages.iter().map(|s| s.visitors).collect();
    assert_eq!(stages, vec![3, 3, 2, 1]);
    // view_item: 3 events in 4 sessions = 75 per 100 sessions.
    let views = f
        .event_rates
        .iter()
        .find(|r| r.event_type == "view_item")
        .unwrap();
    assert_eq!(views.events, 3);
    assert!((views.per_100_sessions - 75.0).abs() < 1e-12);
    // A range that ends before it starts names the field.
    let bad = client
        .funnel(FunnelRequest {
            from: Some(ts(now)),
            to: Some(ts(now - DAY)),
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert!(bad.message().starts_with("to:"), "{bad:?}");
    app.stop().await;
}
