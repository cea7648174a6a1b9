//! The training path and the serving path compute identical feature vectors
//! for the same visitor at the same moment, and a model with interaction
//! terms scores and explains on the server as it was fitted.

mod common;

use common::*;
use rung::config::Settings;
use rung::domain::Taxonomy;
use rung::grpc::proto::{Event, ScoreRequest};
use rung::simulator::{simulate, SimConfig};
use rung::training::examples::{build, data_end, Cutoffs};
use rung::training::pipeline::{self, Quiet, TrainOptions};

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
        // Act
        let j_req = history_request(j, examples.as_of[row]);
        let r = app.client.score(j_req).await.unwrap().into_inner();

        // Assert: bit-for-bit equal.
        let served: Vec<f64> = r.features.iter().map(|f| f.value).collect();
        let trained: Vec<f64> = examples.x.row(row).to_vec();
        assert_eq!(served, trained, "example {row} of {}", j.visitor_id);
        assert_eq!(r.ladder_score, examples.ladder_score[row]);
    }
    app.stop().await;
}

/// Score with the journey's whole history; the server leaves out what lies
/// after `as_of`, as training does.
fn history_request(j: &rung::simulator::Journey, as_of: rung::domain::Millis) -> ScoreRequest {
    let (secs, nanos) = as_of.to_parts();
    ScoreRequest {
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
        max_reasons: 5,
    }
}

#[tokio::test]
async fn a_model_with_interactions_scores_on_the_server_as_computed_by_hand() {
    // Arrange: a model fitted with pairwise interactions on simulated
    // journeys, one L2 strength so the fit stays short.
    let taxonomy = Taxonomy::builtin();
    let journeys = simulate(&SimConfig {
        visitors: 1500,
        seed: 5,
        ..SimConfig::default()
    });
    let visitors: Vec<_> = journeys
        .iter()
        .map(|j| (j.visitor_id.clone(), j.resolve(&taxonomy)))
        .collect();
    let mut opts = TrainOptions {
        interactions: true,
        lambdas: vec![0.1],
        validation: pipeline::Validation::KFold { folds: 2, seed: 1 },
        ..TrainOptions::default()
    };
    opts.fit.min_positives = 10;
    let prepared = pipeline::prepare(&taxonomy, &visitors, &opts, &Quiet).unwrap();
    let now = rung::domain::Millis::from_unix_millis(1_790_000_000_000);
    let artifact = pipeline::train(&taxonomy, &prepared, &opts, now, &Quiet)
        .unwrap()
        .artifact;
    let n = prepared.names.len();
    let ia = artifact.interactions.clone().expect("interactions kept");
    assert_eq!(artifact.feature_names.len(), n + n * (n + 1) / 2);
    assert_eq!(
        artifact.feature_names[n + 1],
        format!("{} × {}", prepared.names[0], prepared.names[1])
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pairwise.json");
    std::fs::write(&path, serde_json::to_string(&artifact).unwrap()).unwrap();
    let mut app = spawn_app_with(Settings {
        model: Some(path),
        ..test_settings()
    })
    .await;

    let ex = &prepared.examples;
    for row in (0..ex.len()).step_by((ex.len() / 40).max(1)) {
        // By hand: features, the standardized products zᵢ·zⱼ (i ≤ j), and
        // the log-odds as intercept + Σ coefficient · (term − mean) / scale.
        let x: Vec<f64> = ex.x.row(row).to_vec();
        let z: Vec<f64> = (0..n)
            .map(|i| (x[i] - ia.means[i]) / ia.scales[i])
            .collect();
        let mut terms = x.clone();
        for i in 0..n {
            for k in i..n {
                terms.push(z[i] * z[k]);
            }
        }
        let contributions: Vec<f64> = (0..terms.len())
            .map(|t| artifact.coefficients[t] * (terms[t] - artifact.means[t]) / artifact.scales[t])
            .collect();
        let log_odds = artifact.intercept + contributions.iter().sum::<f64>();

        // Act
        let j = &journeys[ex.visitor[row]];
        let r = app
            .client
            .score(history_request(j, ex.as_of[row]))
            .await
            .unwrap()
            .into_inner();

        // Assert: every term explained, the products and the log-odds as by
        // hand, the reasons the largest contributions (products included).
        assert_eq!(r.features.len(), terms.len());
        for (t, f) in r.features.iter().enumerate() {
            assert_eq!(f.feature, artifact.feature_names[t]);
            assert!(
                (f.value - terms[t]).abs() <= 1e-9 * terms[t].abs().max(1.0),
                "term {t}"
            );
        }
        assert!(
            (r.log_odds - log_odds).abs() < 1e-9,
            "{} vs {log_odds}",
            r.log_odds
        );
        let mut ranked: Vec<usize> = (0..terms.len()).collect();
        ranked.sort_by(|&a, &b| contributions[b].abs().total_cmp(&contributions[a].abs()));
        let top: Vec<&str> = r.reasons.iter().map(|q| q.feature.as_str()).collect();
        let want: Vec<&str> = ranked[..5]
            .iter()
            .map(|&t| artifact.feature_names[t].as_str())
            .collect();
        assert_eq!(top, want, "example {row}");
    }
    app.stop().await;
}
