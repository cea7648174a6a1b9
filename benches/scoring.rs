//! Per-visitor scoring cost: the pure parts (features + ladder + model) and
//! the engine call the gRPC handler makes, for visitors of 10, 50 and 500
//! events. Run: cargo bench --bench scoring

use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use rung::config::Settings;
use rung::domain::{Event, Millis, Taxonomy, VisitorId};
use rung::engine::{Engine, EngineSettings, ScoreQuery};
use rung::scoring::{observe, Model};
use rung::store::{RedbStore, StoreLimits};

const AS_OF: i64 = 1_767_225_600_000;

/// A visitor of `n` events over the last 30 days, drawn from the funnel's
/// common types, sorted as the engine sorts them.
fn visitor(taxonomy: &Taxonomy, n: usize, seed: u64) -> Vec<Event> {
    let names = [
        "page_view",
        "page_view",
        "view_item_list",
        "view_item",
        "view_item",
        "view_item",
        "search",
        "filter_use",
        "review_read",
        "add_to_wishlist",
        "add_to_cart",
        "view_cart",
        "remove_from_cart",
        "begin_checkout",
        "add_shipping_info",
        "add_payment_info",
        "purchase",
    ];
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut events: Vec<Event> = (0..n)
        .map(|_| {
            let kind = taxonomy
                .resolve(names[rng.gen_range(0..names.len())])
                .unwrap();
            let at = Millis::from_unix_millis(AS_OF - rng.gen_range(0..30 * 86_400_000));
            Event::new(kind, at).with_item(&format!("item-{}", rng.gen_range(0..50)))
        })
        .collect();
    events.sort_by_key(|e| e.at);
    events
}

const MODEL_PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/models/default.json");

fn model(taxonomy: &Taxonomy) -> Model {
    let text = std::fs::read_to_string(MODEL_PATH).expect("models/default.json");
    Model::from_json(&text, taxonomy).expect("model loads")
}

fn pure_scoring(c: &mut Criterion) {
    let taxonomy = Taxonomy::builtin();
    let model = model(&taxonomy);
    let as_of = Millis::from_unix_millis(AS_OF);
    let mut group = c.benchmark_group("features+ladder+model");
    for n in [10, 50, 500] {
        let events = visitor(&taxonomy, n, n as u64);
        group.bench_with_input(BenchmarkId::from_parameter(n), &events, |b, events| {
            b.iter(|| {
                let obs = observe(&taxonomy, black_box(events), as_of);
                black_box(model.predict(&obs.features))
            })
        });
    }
    group.finish();
}

fn engine_score(c: &mut Criterion) {
    let settings = Settings::default();
    let taxonomy = Taxonomy::builtin();
    let model =
        rung::deploy::load(std::path::Path::new(MODEL_PATH), &taxonomy).expect("model loads");
    let data = tempfile::tempdir().unwrap();
    let taxonomy = Arc::new(taxonomy);
    let store = RedbStore::open(
        data.path(),
        taxonomy.clone(),
        StoreLimits {
            recent_events: 200,
            dedup_window: 128,
            max_group: 1024,
        },
    )
    .unwrap();
    let engine = Engine::new(
        taxonomy.clone(),
        model,
        Arc::new(store),
        EngineSettings {
            scoring: settings.scoring.clone(),
            bands: settings.bands.clone(),
            limits: settings.limits.clone(),
            retention_days: 90.0,
        },
    );
    let now = Millis::from_unix_millis(AS_OF);
    let mut group = c.benchmark_group("engine.score (store lookup, sort, reasons, result)");
    for n in [10, 50, 500] {
        let query = ScoreQuery {
            visitor: VisitorId::parse("bench".into(), 256).unwrap(),
            events: visitor(&taxonomy, n, n as u64),
            as_of: Some(Millis::from_unix_millis(AS_OF)),
            max_reasons: 5,
            explain: false,
            ignored_unknown_type: 0,
        };
        group.bench_with_input(BenchmarkId::from_parameter(n), &query, |b, q| {
            b.iter_batched(
                || q.clone(),
                |q| black_box(engine.score(q, now).unwrap()),
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, pure_scoring, engine_score);
criterion_main!(benches);
