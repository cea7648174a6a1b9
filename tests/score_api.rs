//! Score and ScoreBatch through a real server and a generated client.

mod common;

use common::*;
use rung::grpc::proto::{Band, ScoreBatchRequest, ScoreRequest, Stage};

fn close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol
}

#[tokio::test]
async fn score_reports_ladder_points_rung_and_stage_computed_by_hand() {
    // Arrange: a list view and an item view a day ago, another item view two
    // hours ago and an add to cart an hour ago.
    let mut app = spawn_app().await;
    let events = vec![
        ev("view_item_list", DAY, ""),
        ev("view_item", DAY, "a"),
        ev("view_item", 2 * HOUR, "b"),
        ev("add_to_cart", HOUR, "b"),
    ];

    // Act
    let r = app
        .client
        .score(request("v1", events))
        .await
        .expect("score succeeds")
        .into_inner();

    // Assert: 1·2^(−1/7) + 2·(2^(−1/7) + 2^(−(2/24)/7)) + 10·2^(−(1/24)/7),
    // and 100·(1 − e^(−points/40)), computed in Python.
    assert!(
        close(r.ladder_points, 14.659561629583763, 1e-9),
        "{}",
        r.ladder_points
    );
    assert!(
        close(r.ladder_score, 30.683626699721746, 1e-9),
        "{}",
        r.ladder_score
    );
    assert_eq!(r.rung, "add_to_cart");
    assert_eq!(r.stage(), Stage::Intent);
    assert_eq!(r.visitor_id, "v1");
    assert_eq!(r.ignored_events, 0);
    assert_eq!(r.as_of, Some(ts(AS_OF_SECS)));
    app.stop().await;
}

#[tokio::test]
async fn probability_is_the_logistic_of_intercept_plus_every_contribution() {
    let mut app = spawn_app().await;
    let artifact = artifact_json();
    let mut req = request(
        "v2",
        vec![
            ev("page_view", 3 * DAY, ""),
            ev("view_item", 3 * DAY - 60, "x"),
            ev("add_to_wishlist", 3 * DAY - 120, "x"),
            ev("view_item", 600, "x"),
            ev("add_to_cart", 500, "x"),
            ev("begin_checkout", 400, ""),
        ],
    );
    req.explain = true;

    let r = app.client.score(req).await.unwrap().into_inner();

    // Recompute from the artifact file with its own numbers.
    let names: Vec<String> = serde_json::from_value(artifact["feature_names"].clone()).unwrap();
    let coef: Vec<f64> = serde_json::from_value(artifact["coefficients"].clone()).unwrap();
    let means: Vec<f64> = serde_json::from_value(artifact["means"].clone()).unwrap();
    let scales: Vec<f64> = serde_json::from_value(artifact["scales"].clone()).unwrap();
    let intercept = artifact["intercept"].as_f64().unwrap();
    assert_eq!(r.features.len(), names.len());
    let mut z = intercept;
    for (i, f) in r.features.iter().enumerate() {
        assert_eq!(f.feature, names[i]);
        let c = coef[i] * (f.value - means[i]) / scales[i];
        assert!(
            close(f.contribution, c, 1e-9),
            "{}: {} vs {c}",
            f.feature,
            f.contribution
        );
        z += c;
    }
    assert!(close(r.log_odds, z, 1e-9));
    assert!(close(r.probability, 1.0 / (1.0 + (-z).exp()), 1e-12));
    assert_eq!(r.model_version, artifact["version"].as_str().unwrap());

    // Reasons: the server default of 5, largest |contribution| first, and
    // they are the largest of all features.
    assert_eq!(r.reasons.len(), 5);
    let mut all: Vec<f64> = r.features.iter().map(|f| f.contribution.abs()).collect();
    all.sort_by(|a, b| b.total_cmp(a));
    for (reason, expected) in r.reasons.iter().zip(&all) {
        assert!(close(reason.contribution.abs(), *expected, 1e-12));
    }
    let expected_band = if r.probability >= 0.25 {
        Band::High
    } else if r.probability >= 0.05 {
        Band::Medium
    } else {
        Band::Low
    };
    assert_eq!(r.band(), expected_band);
    app.stop().await;
}

#[tokio::test]
async fn reasons_count_follows_the_request_then_the_setting() {
    let mut settings = test_settings();
    settings.scoring.max_reasons = 2;
    let mut app = spawn_app_with(settings).await;
    let events = vec![ev("view_item", 100, "a"), ev("add_to_cart", 50, "a")];

    let default = app
        .client
        .score(request("v", events.clone()))
        .await
        .unwrap()
        .into_inner();
    let mut asked = request("v", events);
    asked.max_reasons = 7;
    let asked = app.client.score(asked).await.unwrap().into_inner();

    assert_eq!(default.reasons.len(), 2);
    assert_eq!(asked.reasons.len(), 7);
    app.stop().await;
}

#[tokio::test]
async fn events_after_as_of_are_ignored_and_counted() {
    let mut app = spawn_app().await;
    let with_future = request(
        "v",
        vec![
            ev("view_item", HOUR, "a"),
            // An hour after as_of: it had not happened yet.
            ev("purchase", -HOUR, "a"),
        ],
    );
    let without = request("v", vec![ev("view_item", HOUR, "a")]);

    let a = app.client.score(with_future).await.unwrap().into_inner();
    let b = app.client.score(without).await.unwrap().into_inner();

    assert_eq!(a.ignored_events, 1);
    assert_eq!(a.ignored_after_as_of, 1);
    assert_eq!(a.rung, "view_item");
    assert_eq!(a.probability, b.probability);
    assert_eq!(a.ladder_points, b.ladder_points);
    app.stop().await;
}

#[tokio::test]
async fn events_out_of_order_score_like_sorted_ones() {
    let mut app = spawn_app().await;
    let sorted = vec![
        ev("page_view", 5 * HOUR, ""),
        ev("view_item", 3 * HOUR, "a"),
        ev("add_to_cart", 2 * HOUR, "a"),
        ev("begin_checkout", HOUR, ""),
    ];
    let mut shuffled = sorted.clone();
    shuffled.swap(0, 3);
    shuffled.swap(1, 2);

    let a = app
        .client
        .score(request("v", sorted))
        .await
        .unwrap()
        .into_inner();
    let b = app
        .client
        .score(request("v", shuffled))
        .await
        .unwrap()
        .into_inner();

    assert_eq!(a, b);
    app.stop().await;
}

#[tokio::test]
async fn aliases_score_like_the_taxonomy_names() {
    let mut app = spawn_app().await;
    let ga4 = request(
        "v",
        vec![ev("view_item", 60, "a"), ev("add_to_cart", 30, "a")],
    );
    let segment = request(
        "v",
        vec![ev("Product Viewed", 60, "a"), ev("Product Added", 30, "a")],
    );
    let retailrocket = request("v", vec![ev("view", 60, "a"), ev("addtocart", 30, "a")]);

    let a = app.client.score(ga4).await.unwrap().into_inner();
    let b = app.client.score(segment).await.unwrap().into_inner();
    let c = app.client.score(retailrocket).await.unwrap().into_inner();

    assert_eq!(a, b);
    assert_eq!(a, c);
    app.stop().await;
}

#[tokio::test]
async fn a_visitor_with_no_events_scores_at_the_bottom_of_the_ladder() {
    let mut app = spawn_app().await;

    let r = app
        .client
        .score(request("new", vec![]))
        .await
        .unwrap()
        .into_inner();

    assert_eq!(r.ladder_points, 0.0);
    assert_eq!(r.ladder_score, 0.0);
    assert_eq!(r.rung, "");
    assert_eq!(r.stage(), Stage::Awareness);
    assert!(r.probability > 0.0 && r.probability < 1.0);
    app.stop().await;
}

#[tokio::test]
async fn as_of_defaults_to_the_servers_clock() {
    let mut app = spawn_app().await;
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;

    let r = app
        .client
        .score(ScoreRequest {
            visitor_id: "v".into(),
            ..ScoreRequest::default()
        })
        .await
        .unwrap()
        .into_inner();

    let as_of = r.as_of.unwrap().seconds;
    assert!(
        as_of >= before && as_of <= before + 60,
        "{as_of} vs {before}"
    );
    app.stop().await;
}

#[tokio::test]
async fn score_batch_answers_each_visitor_in_order() {
    let mut app = spawn_app().await;
    let visitors = vec![
        request("a", vec![ev("view_item", 60, "x")]),
        request(
            "b",
            vec![ev("view_item", 60, "x"), ev("add_to_cart", 30, "x")],
        ),
        request("c", vec![]),
    ];

    let batch = app
        .client
        .score_batch(ScoreBatchRequest {
            visitors: visitors.clone(),
        })
        .await
        .unwrap()
        .into_inner();

    assert_eq!(batch.results.len(), 3);
    for (req, got) in visitors.into_iter().zip(batch.results) {
        let single = app.client.score(req).await.unwrap().into_inner();
        assert_eq!(got, single);
    }
    app.stop().await;
}

#[tokio::test]
async fn unknown_types_are_skipped_and_counted_when_configured() {
    let mut settings = test_settings();
    settings.scoring.ignore_unknown_types = true;
    let mut app = spawn_app_with(settings).await;

    let r = app
        .client
        .score(request(
            "v",
            vec![ev("view_item", 60, "a"), ev("hovered_logo", 30, "")],
        ))
        .await
        .unwrap()
        .into_inner();

    assert_eq!(r.ignored_unknown_type, 1);
    assert_eq!(r.ignored_events, 1);
    assert_eq!(r.rung, "view_item");
    app.stop().await;
}

/// The server reads request strings as bytes (no copy) and checks UTF-8
/// itself: bytes a client sent that are not UTF-8 are INVALID_ARGUMENT
/// naming the field, as when the public messages' decoder refused them.
#[tokio::test]
async fn strings_that_are_not_utf8_are_refused_naming_the_field() {
    use prost::Message;
    use rung::grpc::client::BearerKey;
    use rung::grpc::wire;
    use rung::load::raw::RawClient;

    let app = spawn_app().await;
    let mut raw = RawClient::new(BearerKey::new(None).unwrap().on(app.channel.clone()));
    let event = |item: &'static [u8]| wire::Event {
        r#type: bytes::Bytes::from_static(b"view_item"),
        time: Some(ts(now_secs() - 60)),
        item_id: bytes::Bytes::from_static(item),
        ..Default::default()
    };
    let cases: Vec<(&'static str, Vec<u8>, &str)> = vec![
        (
            "/rung.v1.IntentService/Score",
            wire::ScoreRequest {
                visitor_id: bytes::Bytes::from_static(b"v\xff"),
                ..Default::default()
            }
            .encode_to_vec(),
            "visitor_id",
        ),
        (
            "/rung.v1.IntentService/Score",
            wire::ScoreRequest {
                visitor_id: bytes::Bytes::from_static(b"v"),
                events: vec![event(b"sku-1"), event(b"sku\xc3")],
                ..Default::default()
            }
            .encode_to_vec(),
            "events[1].item_id",
        ),
        (
            "/rung.v1.IntentService/Track",
            wire::TrackRequest {
                visitor_id: bytes::Bytes::from_static(b"v"),
                events: vec![event(b"\xfe")],
            }
            .encode_to_vec(),
            "events[0].item_id",
        ),
    ];
    for (path, body, field) in cases {
        let status = raw.unary(path, body.into()).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
        assert!(
            status
                .message()
                .starts_with(&format!("{field}: is not valid UTF-8")),
            "{status:?}"
        );
    }
    // Nothing was stored by the refused Track.
    let mut client = app.client.clone();
    let missing = client
        .get_visitor(rung::grpc::proto::GetVisitorRequest {
            visitor_id: "v".into(),
            max_events: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);
    app.stop().await;
}
