//! The training path and the serving path compute identical feature vectors
//! for the same visitor at the same moment.

mod common;

use common::*;
use rung::domain::Taxonomy;
use rung::grpc::proto::{Event, ScoreRequest};
use rung::simulator::{simulate, SimConfig};
use rung::training::examples::{build, data_end, Cutoffs};

#[tokio::test]
async fn served_features_equal_training_rows_for_simulated_visitors() {
    // Arrange: simulated journeys and their training examples.
    let taxonomy = Taxonomy::builtin();
    let journeys = simulate(&SimConfig {
        visitors: 60,
        seed: 11,
        ..SimConfig::default()
    });
    let visitors: Vec<_> = journeys
        .iter()
        .map(|j| (j.visitor_id.clone(), j.resolve(&taxonomy)))
        .collect();
    let examples = build(
        &taxonomy,
        &visitors,
        &Cutoffs::PageView { seed: 3 },
        86_400_000,
        data_end(&visitors),
        &|_| {},
    );
    assert!(examples.len() >= 60);
    let mut app = spawn_app().await;

    for row in 0..examples.len() {
        let j = &journeys[examples.visitor[row]];
        let (secs, nanos) = examples.as_of[row].to_parts();
        // The whole history goes to the server; what lies after the cut-off
        // must be left out there just as training leaves it out.
        let req = ScoreRequest {
            visitor_id: j.visitor_id.clone(),
            events: j
                .events
                .iter()
                .map(|e| {
                    let (s, n) = e.at.to_parts();
                    Event {
                        r#type: e.name.into(),
                        time: Some(prost_types::Timestamp {
                            seconds: s,
                            nanos: n,
                        }),
                        item_id: e.item_id.clone(),
                        ..Event::default()
                    }
                })
                .collect(),
            as_of: Some(prost_types::Timestamp {
                seconds: secs,
                nanos,
            }),
            explain: true,
            ..ScoreRequest::default()
        };

        // Act
        let r = app.client.score(req).await.unwrap().into_inner();

        // Assert: bit-for-bit equal.
        let served: Vec<f64> = r.features.iter().map(|f| f.value).collect();
        let trained: Vec<f64> = examples.x.row(row).to_vec();
        assert_eq!(served, trained, "example {row} of {}", j.visitor_id);
        assert_eq!(r.ladder_score, examples.ladder_score[row]);
    }
    app.stop().await;
}
