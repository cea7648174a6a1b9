//! The embedded store: what a Track, a load, a GetVisitor and a ForgetVisitor
//! cost, and the bytes on disk per visitor and per kept raw event.
//! Run: cargo bench --bench store (`RUNG_BENCH_IDS=random` for ids in no order)
//!
//! With `RUNG_BENCH_STORE_URL=redis://…` the shared store is measured as
//! well, on that Redis under fresh key prefixes removed afterwards: its
//! memory per visitor of 1, 20 and 200 events (`MEMORY USAGE` of the record
//! and ring hashes, and the visitor's share of the index sets), and the same
//! operations as for redb. A Track is "committed" once Redis has answered;
//! how durable that is depends on that Redis's persistence settings.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use rung::domain::NewEvent;
use rung::domain::{Event, Millis, Taxonomy, VisitorId};
use rung::load::redis_nodes::{PrefixCleanup, VisitorMemory};
use rung::load::RedisNodes;
use rung::store::record::PartSizes;
use rung::store::{RedbStore, RedisSettings, RedisStore, Store, StoreLimits, VisitorRecord};

const T0: i64 = 1_767_225_600_000;
const LIMITS: StoreLimits = StoreLimits {
    recent_events: 200,
    dedup_window: 128,
    max_group: 1024,
};

fn events(t: &Taxonomy, visitor: usize, n: usize) -> Vec<NewEvent> {
    let names = [
        "page_view",
        "view_item",
        "view_item",
        "search",
        "add_to_cart",
    ];
    (0..n)
        .map(|k| NewEvent {
            event: Event::new(
                t.resolve(names[k % names.len()]).unwrap(),
                Millis::from_unix_millis(T0 + (k as i64) * 40_000),
            )
            .with_item(&format!("sku-{}", (visitor + k) % 500)),
            event_id: format!("{visitor}-{k}"),
            item_id: format!("sku-{}", (visitor + k) % 500),
            attributes: Vec::new(),
        })
        .collect()
}

/// Visitor `n`'s id: `visitor-00000042` (ids that sort in the order they
/// are made), or with `RUNG_BENCH_IDS=random` ids in no order, as cookies
/// and UUIDs are (a store keyed by a hash of the id sees that order anyway).
fn id(n: usize) -> VisitorId {
    static RANDOM: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let random = *RANDOM.get_or_init(|| std::env::var("RUNG_BENCH_IDS").as_deref() == Ok("random"));
    let raw = if random {
        // An odd multiplier permutes the u64s: distinct n, distinct ids.
        format!(
            "visitor-{:016x}",
            (n as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
        )
    } else {
        format!("visitor-{n:08}")
    };
    VisitorId::parse(raw, 256).unwrap()
}

/// Stores visitors `range` of `per_visitor` events each, 1000 writes in
/// flight at a time.
async fn track_all(
    store: &impl Store,
    t: &Taxonomy,
    range: std::ops::Range<usize>,
    per_visitor: usize,
) {
    for chunk in range.collect::<Vec<_>>().chunks(1000) {
        let tickets: Vec<_> = chunk
            .iter()
            .map(|&v| store.track(id(v), events(t, v, per_visitor), false))
            .collect();
        for ticket in tickets {
            ticket.await.unwrap();
        }
    }
}

/// The Redis under test, from `RUNG_BENCH_STORE_URL`, if set.
fn redis_url() -> Option<String> {
    std::env::var("RUNG_BENCH_STORE_URL")
        .ok()
        .filter(|u| !u.trim().is_empty())
}

/// A key prefix of its own for one part of this run.
fn fresh_prefix(what: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("rung-bench-store-{}-{nanos}-{what}:", std::process::id())
}

/// A Redis store under `prefix`, with the server's limits.
async fn open_redis(url: &str, prefix: &str, t: Arc<Taxonomy>) -> RedisStore {
    let settings = RedisSettings {
        url: url.to_string(),
        key_prefix: prefix.to_string(),
        timeout: std::time::Duration::from_secs(10),
    };
    RedisStore::open(&settings, t, LIMITS).await.unwrap()
}

/// Stores `visitors` visitors of `per_visitor` events in Redis under a
/// fresh prefix and measures their memory (1000 of them sampled), then
/// removes them.
fn redis_fill(
    rt: &tokio::runtime::Runtime,
    url: &str,
    visitors: usize,
    per_visitor: usize,
) -> VisitorMemory {
    let t = Arc::new(Taxonomy::builtin());
    let prefix = fresh_prefix(&format!("{visitors}x{per_visitor}"));
    let cleanup = PrefixCleanup::new(url, &prefix);
    let memory = rt.block_on(async {
        let store = open_redis(url, &prefix, t.clone()).await;
        track_all(&store, &t, 0..visitors, per_visitor).await;
        let nodes = RedisNodes::connect(url).await.unwrap();
        let step = (visitors / 1000).max(1);
        nodes
            .visitor_memory(
                &prefix,
                (0..visitors)
                    .step_by(step)
                    .map(|v| id(v).as_str().to_string()),
                visitors,
            )
            .await
            .unwrap()
    });
    assert!(
        memory.sampled > 0,
        "no sampled visitor has a record under {prefix:?}: has the store's key layout changed?"
    );
    cleanup.remove_now().unwrap();
    memory
}

/// Stores `visitors` visitors of `per_visitor` events in groups, returns
/// the file size.
fn fill(rt: &tokio::runtime::Runtime, visitors: usize, per_visitor: usize) -> u64 {
    let t = Arc::new(Taxonomy::builtin());
    let dir = tempfile::tempdir().unwrap();
    {
        let store = RedbStore::open(dir.path(), t.clone(), LIMITS).unwrap();
        rt.block_on(track_all(&store, &t, 0..visitors, per_visitor));
    }
    RedbStore::file_size(dir.path()).unwrap()
}

fn sizes(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let n = 20_000;
    let one = fill(&rt, n, 1);
    let twenty = fill(&rt, n, 20);
    let two_hundred = fill(&rt, n / 10, 200);
    let one_small = fill(&rt, n / 10, 1);
    println!(
        "store size: {n} visitors x 1 event: {:.0} B/visitor; x 20 events: {:.0} B/visitor, {:.0} B per extra raw event; \
         {} visitors x 200 events: {:.0} B/visitor, {:.0} B per extra raw event",
        one as f64 / n as f64,
        twenty as f64 / n as f64,
        (twenty - one) as f64 / (n * 19) as f64,
        n / 10,
        two_hundred as f64 / (n / 10) as f64,
        (two_hundred - one_small) as f64 / ((n / 10) * 199) as f64,
    );
    // What the parts of one record take, before the raw events and the
    // store's own keys and pages.
    let t = Taxonomy::builtin();
    let parts: Vec<PartSizes> = [1, 20, 200]
        .iter()
        .map(|&n| {
            let evs = events(&t, 7, n);
            let mut r = VisitorRecord::first(&t, &evs);
            r.track(&t, evs, LIMITS.dedup_window);
            PartSizes::of(&r).unwrap()
        })
        .collect();
    let row = |f: fn(&PartSizes) -> usize| {
        parts
            .iter()
            .map(|p| f(p).to_string())
            .collect::<Vec<_>>()
            .join("/")
    };
    println!(
        "store size, one record's parts for 1/20/200 events (bytes): header {}, aggregate {}, \
         seen ids {}, next seq {}, timeline {}; total {}",
        row(|p| p.header),
        row(|p| p.aggregate),
        row(|p| p.seen_ids),
        row(|p| p.next_seq),
        row(|p| p.timeline),
        row(PartSizes::total),
    );
    if let Some(url) = redis_url() {
        let describe = |visitors: usize, per_visitor: usize| {
            let m = redis_fill(&rt, &url, visitors, per_visitor);
            format!(
                "{visitors} visitors x {per_visitor}: {:.0} B/visitor (record {:.0} + ring {:.0} + index {:.1})",
                m.per_visitor(),
                m.record,
                m.ring,
                m.index_share()
            )
        };
        // The same shapes as redb's above.
        println!(
            "redis memory (MEMORY USAGE, mean of up to 1000 sampled visitors): {}; {}; {}",
            describe(n, 1),
            describe(n, 20),
            describe(n / 10, 200)
        );
    }
    let _ = c;
}

fn operations(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let t = Arc::new(Taxonomy::builtin());
    let dir = tempfile::tempdir().unwrap();
    let store = RedbStore::open(dir.path(), t.clone(), LIMITS).unwrap();
    rt.block_on(async {
        for v in 0..1000 {
            let op = store.track(id(v), events(&t, v, 20), false);
            op.await.unwrap();
        }
    });
    // Reads complete at once in redb; a current-thread block_on only polls.
    let ct = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("store");
    group.bench_function("load a 20-event visitor", |b| {
        let mut v = 0;
        b.iter(|| {
            v = (v + 1) % 1000;
            black_box(ct.block_on(store.load(&id(v))).unwrap())
        })
    });
    group.bench_function("load what scoring reads of a 20-event visitor", |b| {
        let mut v = 0;
        b.iter(|| {
            v = (v + 1) % 1000;
            black_box(ct.block_on(store.load_standing(&id(v))).unwrap())
        })
    });
    group.bench_function("load + score a stored visitor", |b| {
        let mut v = 0;
        let as_of = Millis::from_unix_millis(T0 + 86_400_000);
        b.iter(|| {
            v = (v + 1) % 1000;
            let standing = ct.block_on(store.load_standing(&id(v))).unwrap().unwrap();
            black_box(standing.aggregate.observe(&t, as_of))
        })
    });
    group.bench_function("snapshot of a 20-event visitor (GetVisitor)", |b| {
        let mut v = 0;
        b.iter(|| {
            v = (v + 1) % 1000;
            black_box(ct.block_on(store.snapshot(&id(v))).unwrap())
        })
    });
    group.bench_function(
        "one Track of 20 events to a known visitor, committed alone",
        |b| {
            let mut v = 0;
            let mut round = 0;
            b.iter(|| {
                v = (v + 1) % 1000;
                round += 1;
                // New event ids each round: stored, not skipped as duplicates.
                let mut evs = events(&t, v, 20);
                for e in &mut evs {
                    e.event_id = format!("{}-r{round}", e.event_id);
                }
                rt.block_on(store.track(id(v), evs, false)).unwrap()
            })
        },
    );
    group.bench_function(
        "forget a 20-event visitor (committed, erasure durable)",
        |b| {
            let mut v = 1_000_000;
            b.iter_batched(
                || {
                    v += 1;
                    rt.block_on(store.track(id(v), events(&t, v, 20), false))
                        .unwrap();
                    id(v)
                },
                |visitor| assert!(rt.block_on(store.forget(visitor)).unwrap()),
                criterion::BatchSize::PerIteration,
            )
        },
    );
    group.bench_function("one Track of 20 events, committed alone (fsync)", |b| {
        let mut v = 10_000;
        b.iter(|| {
            v += 1;
            let op = store.track(id(v), events(&t, v, 20), false);
            rt.block_on(op).unwrap()
        })
    });
    group.sample_size(10);
    group.bench_function("1000 Tracks of 20 events, group-committed", |b| {
        let mut v = 100_000;
        b.iter(|| {
            let tickets: Vec<_> = (0..1000)
                .map(|_| {
                    v += 1;
                    store.track(id(v), events(&t, v, 20), false)
                })
                .collect();
            rt.block_on(async {
                for ticket in tickets {
                    ticket.await.unwrap();
                }
            })
        })
    });
    group.finish();
}

/// The operations above, on Redis (when `RUNG_BENCH_STORE_URL` is set).
fn redis_operations(c: &mut Criterion) {
    let Some(url) = redis_url() else {
        return;
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let t = Arc::new(Taxonomy::builtin());
    let prefix = fresh_prefix("operations");
    // Declared first, dropped last: after the store has stopped writing.
    let _cleanup = PrefixCleanup::new(&url, &prefix);
    let store = rt.block_on(open_redis(&url, &prefix, t.clone()));
    rt.block_on(track_all(&store, &t, 0..1000, 20));
    let mut group = c.benchmark_group("redis store");
    group.bench_function("load a 20-event visitor", |b| {
        let mut v = 0;
        b.iter(|| {
            v = (v + 1) % 1000;
            black_box(rt.block_on(store.load(&id(v))).unwrap())
        })
    });
    group.bench_function("load + score a stored visitor", |b| {
        let mut v = 0;
        let as_of = Millis::from_unix_millis(T0 + 86_400_000);
        b.iter(|| {
            v = (v + 1) % 1000;
            let standing = rt.block_on(store.load_standing(&id(v))).unwrap().unwrap();
            black_box(standing.aggregate.observe(&t, as_of))
        })
    });
    group.bench_function(
        "one Track of 20 events, committed alone (Redis answered)",
        |b| {
            // Ids of their own, far from the others: a Track that met a stored
            // visitor's event ids would be skipped as a redelivery.
            let mut v = 1_000_000;
            b.iter(|| {
                v += 1;
                let op = store.track(id(v), events(&t, v, 20), false);
                rt.block_on(op).unwrap()
            })
        },
    );
    group.sample_size(10);
    group.bench_function("1000 Tracks of 20 events, group-committed", |b| {
        let mut v = 100_000_000;
        b.iter(|| {
            let tickets: Vec<_> = (0..1000)
                .map(|_| {
                    v += 1;
                    store.track(id(v), events(&t, v, 20), false)
                })
                .collect();
            rt.block_on(async {
                for ticket in tickets {
                    ticket.await.unwrap();
                }
            })
        })
    });
    group.finish();
    drop(store);
}

criterion_group!(benches, sizes, operations, redis_operations);
criterion_main!(benches);
