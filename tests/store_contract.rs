//! The contract every store backend must meet, written once and run against
//! each backend by `store_contract!`.

use std::sync::Arc;

use rung::domain::NewEvent;
use rung::domain::{Event, Millis, Taxonomy, VisitorId};
use rung::store::{settle, Outcome, Store, StoreLimits, WriteOp};

const T0: i64 = 1_767_225_600_000;
const LIMITS: StoreLimits = StoreLimits {
    recent_events: 5,
    dedup_window: 4,
    max_group: 64,
};

fn visitor(id: &str) -> VisitorId {
    VisitorId::parse(id.into(), 256).unwrap()
}

fn new_event(t: &Taxonomy, kind: &str, minutes: i64, event_id: &str) -> NewEvent {
    NewEvent {
        event: Event::new(
            t.resolve(kind).unwrap(),
            Millis::from_unix_millis(T0 + minutes * 60_000),
        ),
        event_id: event_id.into(),
        item_id: format!("item-{minutes}"),
        attributes: vec![("source".into(), "test".into())],
    }
}

async fn track(store: &dyn Store, v: &str, events: Vec<NewEvent>) -> (u32, u32) {
    let op = WriteOp::Track {
        visitor: visitor(v),
        events,
        want_record: false,
    };
    match settle(store.submit(op)).await.unwrap() {
        Outcome::Tracked {
            accepted,
            duplicates,
            ..
        } => (accepted, duplicates),
        other => panic!("unexpected {other:?}"),
    }
}

async fn forget(store: &dyn Store, v: &str) -> bool {
    match settle(store.submit(WriteOp::Forget {
        visitor: visitor(v),
    }))
    .await
    .unwrap()
    {
        Outcome::Forgotten { existed } => existed,
        other => panic!("unexpected {other:?}"),
    }
}

pub async fn unknown_visitors_load_as_none(store: Arc<dyn Store>, _t: Arc<Taxonomy>) {
    assert_eq!(store.load(&visitor("nobody")).unwrap(), None);
    assert!(store.recent_events(&visitor("nobody")).unwrap().is_empty());
}

pub async fn tracked_events_are_in_the_record(store: Arc<dyn Store>, t: Arc<Taxonomy>) {
    let events = vec![
        new_event(&t, "view_item", 0, "a"),
        new_event(&t, "Product Added", 1, "b"),
        new_event(&t, "view_item", 2, ""),
    ];
    assert_eq!(track(&*store, "v", events).await, (3, 0));
    let record = store.load(&visitor("v")).unwrap().expect("stored");
    assert_eq!(record.aggregate.count(t.resolve("view_item").unwrap()), 2);
    assert_eq!(record.aggregate.count(t.resolve("add_to_cart").unwrap()), 1);
    assert_eq!(
        record.aggregate.last(),
        Some(Millis::from_unix_millis(T0 + 120_000))
    );
}

pub async fn repeated_event_ids_are_duplicates(store: Arc<dyn Store>, t: Arc<Taxonomy>) {
    let first = vec![
        new_event(&t, "view_item", 0, "a"),
        new_event(&t, "view_item", 1, "b"),
    ];
    // "a" again, "c" twice in one batch, and two events without ids.
    let second = vec![
        new_event(&t, "view_item", 0, "a"),
        new_event(&t, "view_item", 2, "c"),
        new_event(&t, "view_item", 2, "c"),
        new_event(&t, "view_item", 3, ""),
        new_event(&t, "view_item", 3, ""),
    ];
    assert_eq!(track(&*store, "v", first).await, (2, 0));
    assert_eq!(track(&*store, "v", second).await, (3, 2));
    let record = store.load(&visitor("v")).unwrap().unwrap();
    assert_eq!(record.aggregate.count(t.resolve("view_item").unwrap()), 5);
}

pub async fn the_dedup_window_is_bounded(store: Arc<dyn Store>, t: Arc<Taxonomy>) {
    // The window holds 4 ids: after e1..e5, e1 has left it.
    let ids = ["e1", "e2", "e3", "e4", "e5"];
    let events = ids
        .iter()
        .enumerate()
        .map(|(i, id)| new_event(&t, "page_view", i as i64, id))
        .collect();
    assert_eq!(track(&*store, "v", events).await, (5, 0));
    let again = vec![
        new_event(&t, "page_view", 0, "e1"),
        new_event(&t, "page_view", 4, "e5"),
    ];
    assert_eq!(track(&*store, "v", again).await, (1, 1));
}

pub async fn ids_are_per_visitor(store: Arc<dyn Store>, t: Arc<Taxonomy>) {
    assert_eq!(
        track(&*store, "v1", vec![new_event(&t, "view_item", 0, "x")]).await,
        (1, 0)
    );
    assert_eq!(
        track(&*store, "v2", vec![new_event(&t, "view_item", 0, "x")]).await,
        (1, 0)
    );
}

pub async fn the_raw_event_ring_keeps_the_newest(store: Arc<dyn Store>, t: Arc<Taxonomy>) {
    let events = (0..7).map(|i| new_event(&t, "page_view", i, "")).collect();
    track(&*store, "v", events).await;
    let recent = store.recent_events(&visitor("v")).unwrap();
    let seqs: Vec<u64> = recent.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, [6, 5, 4, 3, 2]);
    assert_eq!(recent[0].kind, "page_view");
    assert_eq!(recent[0].item_id, "item-6");
    assert_eq!(
        recent[0].attributes,
        vec![("source".to_string(), "test".to_string())]
    );
}

pub async fn forget_erases_everything(store: Arc<dyn Store>, t: Arc<Taxonomy>) {
    track(&*store, "v", vec![new_event(&t, "view_item", 0, "a")]).await;
    track(&*store, "other", vec![new_event(&t, "view_item", 0, "a")]).await;
    assert!(forget(&*store, "v").await);
    assert_eq!(store.load(&visitor("v")).unwrap(), None);
    assert!(store.recent_events(&visitor("v")).unwrap().is_empty());
    assert!(!forget(&*store, "v").await);
    // A forgotten visitor starts afresh: old ids are forgotten too.
    assert_eq!(
        track(&*store, "v", vec![new_event(&t, "view_item", 0, "a")]).await,
        (1, 0)
    );
    assert!(store.load(&visitor("other")).unwrap().is_some());
}

pub async fn purge_erases_only_inactive_visitors(store: Arc<dyn Store>, t: Arc<Taxonomy>) {
    track(&*store, "old", vec![new_event(&t, "view_item", 0, "")]).await;
    track(&*store, "recent", vec![new_event(&t, "view_item", 600, "")]).await;
    let op = WriteOp::Purge {
        inactive_before: Millis::from_unix_millis(T0 + 300 * 60_000),
        limit: 100,
    };
    let outcome = settle(store.submit(op)).await.unwrap();
    assert_eq!(
        outcome,
        Outcome::Purged {
            visitors: 1,
            more: false
        }
    );
    assert_eq!(store.load(&visitor("old")).unwrap(), None);
    assert!(store.recent_events(&visitor("old")).unwrap().is_empty());
    assert!(store.load(&visitor("recent")).unwrap().is_some());
}

pub async fn concurrent_writes_to_one_visitor_all_apply(store: Arc<dyn Store>, t: Arc<Taxonomy>) {
    // Submitted together, they land in shared commits; none may be lost.
    let tickets: Vec<_> = (0..200)
        .map(|i| {
            store.submit(WriteOp::Track {
                visitor: visitor("busy"),
                events: vec![new_event(&t, "page_view", i, &format!("id-{i}"))],
                want_record: false,
            })
        })
        .collect();
    for ticket in tickets {
        assert!(matches!(
            settle(ticket).await.unwrap(),
            Outcome::Tracked { accepted: 1, .. }
        ));
    }
    let record = store.load(&visitor("busy")).unwrap().unwrap();
    assert_eq!(record.aggregate.count(t.resolve("page_view").unwrap()), 200);
    assert_eq!(record.next_seq, 200);
}

pub async fn load_many_answers_each_visitor_in_order(store: Arc<dyn Store>, t: Arc<Taxonomy>) {
    track(&*store, "a", vec![new_event(&t, "view_item", 0, "a1")]).await;
    track(
        &*store,
        "b",
        vec![
            new_event(&t, "add_to_cart", 1, "b1"),
            new_event(&t, "purchase", 2, "b2"),
        ],
    )
    .await;
    let (a, nobody, b) = (visitor("a"), visitor("nobody"), visitor("b"));
    let many: Vec<_> = store
        .load_many(&[&b, &nobody, &a, &b])
        .into_iter()
        .map(|r| r.unwrap())
        .collect();
    let one = |v: &VisitorId| store.load(v).unwrap();
    assert_eq!(many, vec![one(&b), None, one(&a), one(&b)]);
    assert_eq!(
        many[0]
            .as_ref()
            .unwrap()
            .aggregate
            .count(t.resolve("purchase").unwrap()),
        1
    );
    assert!(store.load_many(&[]).is_empty());
}

macro_rules! store_contract {
    ($backend:ident, $make:expr, [$($case:ident),* $(,)?]) => {
        mod $backend {
            $(
                #[tokio::test]
                async fn $case() {
                    let taxonomy = std::sync::Arc::new(rung::domain::Taxonomy::builtin());
                    let dir = tempfile::tempdir().unwrap();
                    let store = $make(dir.path(), taxonomy.clone());
                    super::$case(store, taxonomy).await;
                }
            )*
        }
    };
}

fn open_redb(dir: &std::path::Path, t: Arc<Taxonomy>) -> Arc<dyn Store> {
    Arc::new(rung::store::RedbStore::open(dir, t, LIMITS).unwrap())
}

store_contract!(
    redb,
    super::open_redb,
    [
        unknown_visitors_load_as_none,
        load_many_answers_each_visitor_in_order,
        tracked_events_are_in_the_record,
        repeated_event_ids_are_duplicates,
        the_dedup_window_is_bounded,
        ids_are_per_visitor,
        the_raw_event_ring_keeps_the_newest,
        forget_erases_everything,
        purge_erases_only_inactive_visitors,
        concurrent_writes_to_one_visitor_all_apply,
    ]
);

#[test]
fn a_second_open_of_the_same_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let t = Arc::new(Taxonomy::builtin());
    let _first = rung::store::RedbStore::open(dir.path(), t.clone(), LIMITS).unwrap();
    let second = rung::store::RedbStore::open(dir.path(), t, LIMITS);
    assert!(matches!(
        second,
        Err(rung::store::StoreError::Locked { .. })
    ));
}

#[test]
fn a_directory_written_under_another_taxonomy_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    drop(rung::store::RedbStore::open(dir.path(), Arc::new(Taxonomy::builtin()), LIMITS).unwrap());
    let other = Taxonomy::from_toml(&rung::domain::taxonomy::DEFAULT_TAXONOMY_TOML.replacen(
        "half_life_days = 3.0",
        "half_life_days = 4.0",
        1,
    ))
    .unwrap();
    let reopened = rung::store::RedbStore::open(dir.path(), Arc::new(other), LIMITS);
    let Err(e) = reopened else {
        panic!("should be refused")
    };
    assert!(e.to_string().contains("taxonomy"), "{e}");
}

#[test]
fn records_survive_closing_and_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let t = Arc::new(Taxonomy::builtin());
    let rt = tokio::runtime::Runtime::new().unwrap();
    {
        let store = rung::store::RedbStore::open(dir.path(), t.clone(), LIMITS).unwrap();
        rt.block_on(track(&store, "v", vec![new_event(&t, "view_item", 0, "a")]));
    }
    let store = rung::store::RedbStore::open(dir.path(), t.clone(), LIMITS).unwrap();
    let record = store.load(&visitor("v")).unwrap().unwrap();
    assert_eq!(record.aggregate.events(), 1);
    assert_eq!(
        rt.block_on(track(&store, "v", vec![new_event(&t, "view_item", 0, "a")])),
        (0, 1)
    );
}
