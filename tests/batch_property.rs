//! Property: ScoreBatch gives, for every visitor, exactly what Score gives.

mod common;

use common::*;
use proptest::prelude::*;
use rung::grpc::proto::{Event, ScoreBatchRequest, ScoreRequest};

const TYPES: [&str; 8] = [
    "page_view",
    "view_item",
    "add_to_cart",
    "remove_from_cart",
    "begin_checkout",
    "purchase",
    "Product Viewed",
    "search",
];

fn visitor() -> impl Strategy<Value = ScoreRequest> {
    let event = (0..TYPES.len(), 0i64..30 * DAY, 0u8..5, -100.0f64..100.0).prop_map(
        |(t, ago, item, value)| Event {
            r#type: TYPES[t].into(),
            time: Some(ts(AS_OF_SECS - ago)),
            item_id: format!("i{item}"),
            value,
            ..Event::default()
        },
    );
    (
        "[a-z0-9]{1,12}",
        prop::collection::vec(event, 0..40),
        0u32..=10,
        -3 * DAY..3 * DAY,
    )
        .prop_map(|(id, events, max_reasons, shift)| ScoreRequest {
            visitor_id: id,
            events,
            as_of: Some(ts(AS_OF_SECS + shift)),
            max_reasons,
            explain: false,
        })
}

#[test]
fn score_batch_equals_score_per_visitor() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let app = rt.block_on(spawn_app());
    // Clients are cheap handles over one channel; each case takes its own.
    let client = app.client.clone();
    let config = ProptestConfig {
        cases: 48,
        ..ProptestConfig::default()
    };
    proptest!(config, |(visitors in prop::collection::vec(visitor(), 0..12))| {
        let mut client = client.clone();
        let batch = rt
            .block_on(client.score_batch(ScoreBatchRequest { visitors: visitors.clone() }))
            .unwrap()
            .into_inner();
        prop_assert_eq!(batch.results.len(), visitors.len());
        for (req, got) in visitors.into_iter().zip(batch.results) {
            let single = rt.block_on(client.score(req)).unwrap().into_inner();
            prop_assert_eq!(got, single);
        }
    });
    rt.block_on(app.stop());
}
