//! Property: whatever a client sends, the server answers OK or
//! INVALID_ARGUMENT and keeps serving; it never panics or fails internally.

mod common;

use common::*;
use proptest::prelude::*;
use rung::grpc::proto::{Event, ScoreBatchRequest, ScoreRequest};
use tonic::Code;

fn timestamp() -> impl Strategy<Value = Option<prost_types::Timestamp>> {
    let seconds = prop_oneof![
        any::<i64>(),
        -62_135_596_800i64..=253_402_300_799,
        AS_OF_SECS - 400 * DAY..AS_OF_SECS + 400 * DAY,
    ];
    let nanos = prop_oneof![any::<i32>(), 0..1_000_000_000i32];
    prop::option::weighted(
        0.9,
        (seconds, nanos).prop_map(|(seconds, nanos)| prost_types::Timestamp { seconds, nanos }),
    )
}

fn event() -> impl Strategy<Value = Event> {
    let kind = prop_oneof![
        Just("view_item".to_string()),
        Just("purchase".to_string()),
        Just("Product Added".to_string()),
        ".{0,12}",
    ];
    let value = prop_oneof![any::<f64>(), Just(f64::NAN), Just(f64::INFINITY)];
    (kind, timestamp(), ".{0,8}", value, ".{0,8}").prop_map(
        |(kind, time, item_id, value, event_id)| Event {
            r#type: kind,
            time,
            item_id,
            value,
            event_id,
            ..Event::default()
        },
    )
}

fn request() -> impl Strategy<Value = ScoreRequest> {
    (
        ".{0,20}",
        prop::collection::vec(event(), 0..20),
        timestamp(),
        any::<u32>(),
        any::<bool>(),
    )
        .prop_map(
            |(visitor_id, events, as_of, max_reasons, explain)| ScoreRequest {
                visitor_id,
                events,
                as_of,
                max_reasons: max_reasons % 16,
                explain,
            },
        )
}

#[test]
fn any_request_gets_ok_or_invalid_argument() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let app = rt.block_on(spawn_app());
    let client = app.client.clone();
    let config = ProptestConfig {
        cases: 256,
        ..ProptestConfig::default()
    };
    proptest!(config, |(req in request(), batch in prop::collection::vec(request(), 0..4))| {
        let mut client = client.clone();
        match rt.block_on(client.score(req)) {
            Ok(r) => {
                let r = r.into_inner();
                prop_assert!(r.probability.is_finite() && (0.0..=1.0).contains(&r.probability));
                prop_assert!(r.ladder_points.is_finite());
                prop_assert!((0.0..=100.0).contains(&r.ladder_score));
            }
            Err(status) => prop_assert_eq!(status.code(), Code::InvalidArgument, "{:?}", status),
        }
        if let Err(status) = rt.block_on(client.score_batch(ScoreBatchRequest { visitors: batch })) {
            prop_assert_eq!(status.code(), Code::InvalidArgument, "{:?}", status);
        }
    });
    // Still serving.
    let mut client = client.clone();
    let ok = rt.block_on(client.score(ScoreRequest {
        visitor_id: "after".into(),
        ..ScoreRequest::default()
    }));
    assert!(ok.is_ok(), "{ok:?}");
    rt.block_on(app.stop());
}
