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

/// The server's allocator, so the handler figures match what it runs.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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

/// The built-in model (models/default.json).
fn model(taxonomy: &Taxonomy) -> Model {
    Model::from_json(rung::deploy::BUILT_IN_ARTIFACT, taxonomy).expect("model loads")
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

/// The shipped model and the same with all 903 pairwise products of its 42
/// features as further terms (`rung train --interactions pairwise`): the
/// score alone, and with every term's contribution (what reasons rank).
fn interaction_terms(c: &mut Criterion) {
    use rung::scoring::{Interactions, ModelArtifact};
    let taxonomy = Taxonomy::builtin();
    let plain: ModelArtifact = serde_json::from_str(rung::deploy::BUILT_IN_ARTIFACT).unwrap();
    let mut pairwise = plain.clone();
    let k = plain.feature_names.len();
    pairwise.interactions = Some(Interactions {
        means: vec![1.0; k],
        scales: vec![2.0; k],
    });
    pairwise
        .feature_names
        .extend(Interactions::names(&plain.feature_names));
    let width = pairwise.feature_names.len();
    pairwise.means.resize(width, 0.0);
    pairwise.scales.resize(width, 1.0);
    pairwise.coefficients.resize(width, 0.01);
    let events = visitor(&taxonomy, 50, 50);
    let obs = observe(&taxonomy, &events, Millis::from_unix_millis(AS_OF));
    let mut group = c.benchmark_group("model with and without interactions (50 events)");
    for (name, a) in [("plain", &plain), ("pairwise", &pairwise)] {
        let m = Model::from_artifact(a, &taxonomy).unwrap();
        group.bench_function(format!("{name}: predict"), |b| {
            b.iter(|| black_box(m.predict(black_box(&obs.features))))
        });
        group.bench_function(format!("{name}: predict + every contribution"), |b| {
            b.iter(|| {
                // As the engine does: the terms once, for both.
                let terms = m.terms(black_box(&obs.features));
                let p = m.predict_terms(&terms);
                let top = (0..terms.len())
                    .map(|i| m.contribution(i, terms[i]).abs())
                    .fold(0.0f64, f64::max);
                black_box((p, top))
            })
        });
    }
    group.finish();
}

/// An engine over an empty store, with the shipped model and default settings.
fn engine(data: &std::path::Path) -> Engine {
    let settings = Settings::default();
    let taxonomy = Taxonomy::builtin();
    let model =
        rung::deploy::load(&rung::deploy::ModelSource::BuiltIn, &taxonomy).expect("model loads");
    let taxonomy = Arc::new(taxonomy);
    let store = RedbStore::open(
        data,
        taxonomy.clone(),
        StoreLimits {
            recent_events: 200,
            dedup_window: 128,
            max_group: 1024,
        },
    )
    .unwrap();
    Engine::new(
        taxonomy,
        model,
        Arc::new(store),
        EngineSettings {
            scoring: settings.scoring.clone(),
            bands: settings.bands.clone(),
            limits: settings.limits.clone(),
            retention_days: 90.0,
            model_dir: rung::deploy::ModelDir::new(std::path::Path::new("models")).unwrap(),
        },
    )
}

fn engine_score(c: &mut Criterion) {
    let data = tempfile::tempdir().unwrap();
    let engine = engine(data.path());
    let taxonomy = engine.taxonomy().clone();
    let now = Millis::from_unix_millis(AS_OF);
    // The engine is async (a store may be remote); redb answers at once, so
    // a current-thread block_on adds only the future's own polling.
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
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
                |q| black_box(rt.block_on(engine.score(q, now)).unwrap()),
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

/// The server's whole work for one call apart from HTTP/2: protobuf decode,
/// the handler (validation, conversion, store lookup, scoring) and the
/// response's encoding, stage by stage, on the load tool's simulated
/// visitors of 20 events. Divide the batch figures by 100 for a visitor.
fn handler(c: &mut Criterion) {
    use prost::Message;
    use rung::grpc::intent_server::intent_service_server::IntentService;
    use rung::grpc::request::Decode;
    use rung::grpc::{proto, request};

    let data = tempfile::tempdir().unwrap();
    let api = rung::grpc::IntentApi::new(Arc::new(engine(data.path())));
    // The very bytes the load tool sends, in a `Bytes` as tonic hands them
    // to the decoder.
    let workload = rung::load::Workload::simulated(100, 42, Millis::now());
    let one = workload.score_inline(0);
    let batch = workload.score_batch(0);
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();

    let mut group = c.benchmark_group("server work per call (no HTTP/2)");
    // The public messages (a String per string field, a map of attributes)
    // next to the server's own reading of the same bytes.
    group.bench_function("Score decode, public messages", |b| {
        b.iter(|| black_box(proto::ScoreRequest::decode(black_box(one.clone())).unwrap()))
    });
    group.bench_function("Score decode", |b| {
        b.iter(|| black_box(request::ScoreRequest::decode(black_box(one.clone())).unwrap()))
    });
    group.bench_function("Score decode+handler+encode", |b| {
        b.iter(|| {
            let req = request::ScoreRequest::decode(black_box(one.clone())).unwrap();
            let resp = rt.block_on(api.score(tonic::Request::new(req))).unwrap();
            black_box(resp.into_inner().encode_to_vec())
        })
    });
    group.bench_function("ScoreBatch(100) decode, public messages", |b| {
        b.iter(|| black_box(proto::ScoreBatchRequest::decode(black_box(batch.clone())).unwrap()))
    });
    group.bench_function("ScoreBatch(100) decode", |b| {
        b.iter(|| black_box(request::ScoreBatchRequest::decode(black_box(batch.clone())).unwrap()))
    });
    group.bench_function("ScoreBatch(100) decode+handler+encode", |b| {
        b.iter(|| {
            let req = request::ScoreBatchRequest::decode(black_box(batch.clone())).unwrap();
            let resp = rt
                .block_on(api.score_batch(tonic::Request::new(req)))
                .unwrap();
            black_box(resp.into_inner().encode_to_vec())
        })
    });
    // The answer alone: a batch's scores through the public messages (a
    // String per name) next to the server's writing of them.
    let queries = rt.block_on(async {
        let req = request::ScoreBatchRequest::decode(batch.clone()).unwrap();
        api.score_batch(tonic::Request::new(req)).await.unwrap()
    });
    let scores = queries.into_inner().0;
    group.bench_function("ScoreBatch(100) response, public messages", |b| {
        b.iter_batched(
            || scores.clone(),
            |s| {
                let results = s
                    .into_iter()
                    .map(rung::grpc::convert::score_response)
                    .collect();
                black_box(proto::ScoreBatchResponse { results }.encode_to_vec())
            },
            criterion::BatchSize::SmallInput,
        )
    });
    group.bench_function("ScoreBatch(100) response", |b| {
        b.iter_batched(
            || scores.clone(),
            |s| black_box(rung::grpc::response::ScoreBatchResponse(s).encode_to_vec()),
            criterion::BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group!(
    benches,
    pure_scoring,
    interaction_terms,
    engine_score,
    handler
);
criterion_main!(benches);
