//! The embedded store: what a Track and a load cost, and the bytes on disk
//! per visitor and per kept raw event. Run: cargo bench --bench store

use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use rung::domain::NewEvent;
use rung::domain::{Event, Millis, Taxonomy, VisitorId};
use rung::store::{RedbStore, Store, StoreLimits};

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

fn id(n: usize) -> VisitorId {
    VisitorId::parse(format!("visitor-{n:08}"), 256).unwrap()
}

/// Stores `visitors` visitors of `per_visitor` events in groups, returns
/// the file size.
fn fill(rt: &tokio::runtime::Runtime, visitors: usize, per_visitor: usize) -> u64 {
    let t = Arc::new(Taxonomy::builtin());
    let dir = tempfile::tempdir().unwrap();
    {
        let store = RedbStore::open(dir.path(), t.clone(), LIMITS).unwrap();
        rt.block_on(async {
            for chunk in (0..visitors).collect::<Vec<_>>().chunks(1000) {
                let tickets: Vec<_> = chunk
                    .iter()
                    .map(|&v| store.track(id(v), events(&t, v, per_visitor), false))
                    .collect();
                for ticket in tickets {
                    ticket.await.unwrap();
                }
            }
        });
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
    group.bench_function("load + score a stored visitor", |b| {
        let mut v = 0;
        let as_of = Millis::from_unix_millis(T0 + 86_400_000);
        b.iter(|| {
            v = (v + 1) % 1000;
            let record = ct.block_on(store.load(&id(v))).unwrap().unwrap();
            black_box(record.aggregate.observe(&t, as_of))
        })
    });
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

criterion_group!(benches, sizes, operations);
criterion_main!(benches);
