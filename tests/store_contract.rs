//! The contract every store backend must meet, written once and run against
//! each backend by `store_contract!`: the embedded redb store, one Redis,
//! and a three-node Redis Cluster.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;

use rung::domain::event::stable_hash;
use rung::domain::{Event, Millis, NewEvent, Taxonomy, VisitorId};
use rung::store::{record, SavedSegment, ScanRange, SegmentWrite, Standing, Store, StoreLimits};

const T0: i64 = 1_767_225_600_000;
const LIMITS: StoreLimits = StoreLimits {
    recent_events: 5,
    dedup_window: 4,
    max_group: 64,
};

fn visitor(id: &str) -> VisitorId {
    VisitorId::parse(id.into(), 256).unwrap()
}

fn at(minutes: i64) -> Millis {
    Millis::from_unix_millis(T0 + minutes * 60_000)
}

fn new_event(t: &Taxonomy, kind: &str, minutes: i64, event_id: &str) -> NewEvent {
    NewEvent {
        event: Event::new(t.resolve(kind).unwrap(), at(minutes)),
        event_id: event_id.into(),
        item_id: format!("item-{minutes}"),
        attributes: vec![("source".into(), "test".into())],
    }
}

async fn track(store: &dyn Store, v: &str, events: Vec<NewEvent>) -> (u32, u32) {
    let t = store.track(visitor(v), events, false).await.unwrap();
    (t.accepted, t.duplicates)
}

async fn load(store: &dyn Store, v: &str) -> Option<rung::store::VisitorRecord> {
    store.load(&visitor(v)).await.unwrap()
}

/// Every visitor a full scan returns, following `last_key`, `max` at a time.
async fn scan_all(store: &dyn Store, since: Millis, max: usize) -> Vec<(String, Vec<u8>)> {
    scan_range(store, &ScanRange::default(), since, max).await
}

/// Every visitor a scan of `range` returns, `max` at a time.
async fn scan_range(
    store: &dyn Store,
    range: &ScanRange,
    since: Millis,
    max: usize,
) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut after: Option<String> = None;
    for _ in 0..10_000 {
        let chunk = store
            .scan(range, after.as_deref(), since, max)
            .await
            .unwrap();
        assert!(chunk.len() <= max, "{} > {max}", chunk.len());
        out.extend(chunk.iter().map(|(id, r)| (id.to_string(), r.to_vec())));
        if chunk.done {
            return out;
        }
        after = Some(
            chunk
                .last_key
                .expect("a chunk that is not the last says where it ended"),
        );
    }
    panic!("the scan never ended");
}

fn ids(entries: &[(String, Vec<u8>)]) -> Vec<String> {
    entries.iter().map(|(id, _)| id.clone()).collect()
}

pub async fn unknown_visitors_load_as_none(store: Arc<dyn Store>, _t: Arc<Taxonomy>) {
    assert_eq!(load(&*store, "nobody").await, None);
    assert_eq!(store.snapshot(&visitor("nobody")).await.unwrap(), None);
}

pub async fn tracked_events_are_in_the_record(store: Arc<dyn Store>, t: Arc<Taxonomy>) {
    let events = vec![
        new_event(&t, "view_item", 0, "a"),
        new_event(&t, "Product Added", 1, "b"),
        new_event(&t, "view_item", 2, ""),
    ];
    assert_eq!(track(&*store, "v", events).await, (3, 0));
    let record = load(&*store, "v").await.expect("stored");
    assert_eq!(record.aggregate.count(t.resolve("view_item").unwrap()), 2);
    assert_eq!(record.aggregate.count(t.resolve("add_to_cart").unwrap()), 1);
    assert_eq!(record.aggregate.last(), Some(at(2)));
}

pub async fn a_track_can_hand_back_the_record(store: Arc<dyn Store>, t: Arc<Taxonomy>) {
    let written = store
        .track(visitor("v"), vec![new_event(&t, "purchase", 3, "p")], true)
        .await
        .unwrap();
    let handed = written.record.expect("asked for");
    assert_eq!(Some(*handed), load(&*store, "v").await);
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
    let record = load(&*store, "v").await.unwrap();
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
    let snap = store.snapshot(&visitor("v")).await.unwrap().unwrap();
    let seqs: Vec<u64> = snap.recent.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, [6, 5, 4, 3, 2]);
    assert_eq!(snap.recent[0].kind, "page_view");
    assert_eq!(snap.recent[0].item_id, "item-6");
    assert_eq!(
        snap.recent[0].attributes,
        vec![("source".to_string(), "test".to_string())]
    );
    assert_eq!(snap.record.next_seq, 7);
    assert_eq!(Some(snap.record), load(&*store, "v").await);
}

pub async fn forget_erases_everything(store: Arc<dyn Store>, t: Arc<Taxonomy>) {
    track(&*store, "v", vec![new_event(&t, "view_item", 0, "a")]).await;
    track(&*store, "other", vec![new_event(&t, "view_item", 0, "a")]).await;
    assert!(store.forget(visitor("v")).await.unwrap());
    assert_eq!(load(&*store, "v").await, None);
    assert_eq!(store.snapshot(&visitor("v")).await.unwrap(), None);
    assert_eq!(
        ids(&scan_all(&*store, Millis::from_unix_millis(i64::MIN), 10).await),
        ["other"]
    );
    assert!(!store.forget(visitor("v")).await.unwrap());
    // A forgotten visitor starts afresh: old ids are forgotten too.
    assert_eq!(
        track(&*store, "v", vec![new_event(&t, "view_item", 0, "a")]).await,
        (1, 0)
    );
    assert!(load(&*store, "other").await.is_some());
}

pub async fn purge_erases_only_inactive_visitors(store: Arc<dyn Store>, t: Arc<Taxonomy>) {
    track(&*store, "old", vec![new_event(&t, "view_item", 0, "")]).await;
    track(&*store, "recent", vec![new_event(&t, "view_item", 600, "")]).await;
    let purged = store.purge(at(300), 100).await.unwrap();
    assert_eq!((purged.visitors, purged.more), (1, false));
    assert_eq!(load(&*store, "old").await, None);
    assert_eq!(store.snapshot(&visitor("old")).await.unwrap(), None);
    assert!(load(&*store, "recent").await.is_some());
    assert_eq!(
        ids(&scan_all(&*store, Millis::from_unix_millis(i64::MIN), 10).await),
        ["recent"]
    );
    // Nothing left to do: a second purge (another replica's) erases nothing.
    let again = store.purge(at(300), 100).await.unwrap();
    assert_eq!((again.visitors, again.more), (0, false));
}

pub async fn purge_works_in_bounded_passes(store: Arc<dyn Store>, t: Arc<Taxonomy>) {
    for i in 0..5 {
        track(
            &*store,
            &format!("old-{i}"),
            vec![new_event(&t, "page_view", i, "")],
        )
        .await;
    }
    let mut total = 0;
    let mut passes = 0;
    loop {
        let p = store.purge(at(100), 2).await.unwrap();
        assert!(p.visitors <= 2);
        total += p.visitors;
        passes += 1;
        if !p.more {
            break;
        }
        assert!(passes < 10, "purge never finished");
    }
    assert_eq!(total, 5);
    assert!(passes >= 3, "{passes} passes of at most 2");
}

pub async fn concurrent_writes_to_one_visitor_all_apply(store: Arc<dyn Store>, t: Arc<Taxonomy>) {
    // Made together, they are in flight together; none may be lost.
    let tickets: Vec<_> = (0..200)
        .map(|i| {
            store.track(
                visitor("busy"),
                vec![new_event(&t, "page_view", i, &format!("id-{i}"))],
                false,
            )
        })
        .collect();
    for ticket in tickets {
        assert_eq!(ticket.await.unwrap().accepted, 1);
    }
    let record = load(&*store, "busy").await.unwrap();
    assert_eq!(record.aggregate.count(t.resolve("page_view").unwrap()), 200);
    assert_eq!(record.next_seq, 200);
}

pub async fn writes_to_one_visitor_apply_in_the_order_made(
    store: Arc<dyn Store>,
    t: Arc<Taxonomy>,
) {
    // The ring keeps arrival order: seq follows the order the writes were made.
    let tickets: Vec<_> = (0..5)
        .map(|i| {
            store.track(
                visitor("v"),
                vec![new_event(&t, "page_view", 10 - i, "")],
                false,
            )
        })
        .collect();
    for ticket in tickets {
        ticket.await.unwrap();
    }
    let snap = store.snapshot(&visitor("v")).await.unwrap().unwrap();
    let by_seq: Vec<(u64, Millis)> = snap.recent.iter().map(|e| (e.seq, e.at)).collect();
    assert_eq!(
        by_seq,
        [(4, at(6)), (3, at(7)), (2, at(8)), (1, at(9)), (0, at(10))]
    );
}

pub async fn load_standings_answers_each_visitor_in_order(store: Arc<dyn Store>, t: Arc<Taxonomy>) {
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
        .load_standings(&[&b, &nobody, &a, &b])
        .await
        .into_iter()
        .map(|r| r.unwrap())
        .collect();
    // What scoring reads is exactly that part of the whole record.
    let b_standing = load(&*store, "b").await.map(Standing::from);
    let a_standing = load(&*store, "a").await.map(Standing::from);
    let expected = vec![b_standing.clone(), None, a_standing, b_standing];
    assert_eq!(many, expected);
    assert_eq!(
        many[0]
            .as_ref()
            .unwrap()
            .aggregate
            .count(t.resolve("purchase").unwrap()),
        1
    );
    assert_eq!(
        many[0].as_ref().unwrap().seen_ids,
        vec![stable_hash("b1"), stable_hash("b2")]
    );
    assert_eq!(store.load_standing(&b).await.unwrap(), many[0]);
    assert_eq!(store.load_standing(&nobody).await.unwrap(), None);
    assert!(store.load_standings(&[]).await.is_empty());
}

pub async fn a_scan_returns_each_active_visitor_once(store: Arc<dyn Store>, t: Arc<Taxonomy>) {
    // 40 visitors, the i-th last seen at minute i; ids that sort and hash
    // in no particular order.
    let mut expected = BTreeSet::new();
    for i in 0..40 {
        let id = format!("{}-visitor-{i}", ["b", "a}", "{c", "z", "é%"][i % 5]);
        track(&*store, &id, vec![new_event(&t, "view_item", i as i64, "")]).await;
        if i >= 25 {
            expected.insert(id);
        }
    }

    // Only visitors last seen at or after minute 25, in chunks of 4.
    let entries = scan_all(&*store, at(25), 4).await;

    let got = ids(&entries);
    let unique: BTreeSet<String> = got.iter().cloned().collect();
    assert_eq!(unique.len(), got.len(), "a visitor came twice: {got:?}");
    assert_eq!(unique, expected);
    for (id, bytes) in &entries {
        let r = record::decode(id, bytes, &t).unwrap();
        assert_eq!(Some(r), load(&*store, id).await, "{id}");
    }
}

pub async fn a_scan_resumes_after_any_visitor_it_returned(store: Arc<dyn Store>, t: Arc<Taxonomy>) {
    for i in 0..12 {
        track(
            &*store,
            &format!("v{i}"),
            vec![new_event(&t, "page_view", i, "")],
        )
        .await;
    }
    let since = Millis::from_unix_millis(i64::MIN);
    let order = ids(&scan_all(&*store, since, 100).await);
    assert_eq!(order.len(), 12);
    for k in 0..order.len() {
        let rest = ids(&scan_all_after(&*store, &store.scan_key(&order[k]), since).await);
        assert_eq!(rest, order[k + 1..], "after {}", order[k]);
    }
}

pub async fn partitions_cover_the_scan_order_once(store: Arc<dyn Store>, t: Arc<Taxonomy>) {
    for i in 0..60 {
        let id = format!("{}{i}", ["a", "m", "z", "Q", "7"][i % 5]);
        track(&*store, &id, vec![new_event(&t, "page_view", i as i64, "")]).await;
    }
    let since = Millis::from_unix_millis(i64::MIN);
    let whole = ids(&scan_all(&*store, since, 1000).await);

    for parts in [1, 3, 8] {
        let ranges = store.partitions(parts).await.unwrap();
        assert!(!ranges.is_empty() && ranges.len() <= parts, "{ranges:?}");
        let mut pieced = Vec::new();
        for range in &ranges {
            let piece = ids(&scan_range(&*store, range, since, 7).await);
            for id in &piece {
                assert!(
                    range.contains(&store.scan_key(id)),
                    "{id} outside {range:?}"
                );
            }
            pieced.extend(piece);
        }
        // In order, every visitor exactly once.
        assert_eq!(pieced, whole, "{parts} parts: {ranges:?}");
    }
}

async fn scan_all_after(store: &dyn Store, first: &str, since: Millis) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut after = first.to_string();
    loop {
        let chunk = store
            .scan(&ScanRange::default(), Some(&after), since, 3)
            .await
            .unwrap();
        out.extend(chunk.iter().map(|(id, r)| (id.to_string(), r.to_vec())));
        match (chunk.done, chunk.last_key) {
            (true, _) => return out,
            (false, Some(k)) => after = k,
            (false, None) => panic!("no last key"),
        }
    }
}

pub async fn an_empty_store_scans_to_nothing(store: Arc<dyn Store>, _t: Arc<Taxonomy>) {
    let chunk = store
        .scan(
            &ScanRange::default(),
            None,
            Millis::from_unix_millis(i64::MIN),
            10,
        )
        .await
        .unwrap();
    assert!(chunk.is_empty());
    assert!(chunk.done);
    let parts = store.partitions(4).await.unwrap();
    assert!(!parts.is_empty());
    let chunk = store
        .scan(&parts[0], None, Millis::from_unix_millis(i64::MIN), 10)
        .await
        .unwrap();
    assert!(chunk.is_empty());
    assert!(chunk.done);
}

fn saved(name: &str, definition: &str, minute: i64) -> SavedSegment {
    SavedSegment {
        name: name.into(),
        definition: definition.into(),
        description: format!("about {name}"),
        updated_at: at(minute),
    }
}

pub async fn segments_are_saved_listed_replaced_and_deleted(
    store: Arc<dyn Store>,
    _t: Arc<Taxonomy>,
) {
    assert_eq!(store.segments().await.unwrap(), []);
    let b = saved("buyers", "reached purchase", 1);
    let a = saved("abandoners", "reached add_to_cart", 2);
    assert_eq!(
        store.put_segment(b.clone(), false).await.unwrap(),
        SegmentWrite::Created
    );
    assert_eq!(
        store.put_segment(a.clone(), false).await.unwrap(),
        SegmentWrite::Created
    );
    // Listed by name.
    assert_eq!(store.segments().await.unwrap(), [a.clone(), b.clone()]);
    // A taken name needs overwrite; without it nothing changes.
    let b2 = saved("buyers", "reached purchase and sessions >= 2", 3);
    assert_eq!(
        store.put_segment(b2.clone(), false).await.unwrap(),
        SegmentWrite::NameTaken
    );
    assert_eq!(store.segment("buyers").await.unwrap(), Some(b));
    assert_eq!(
        store.put_segment(b2.clone(), true).await.unwrap(),
        SegmentWrite::Replaced
    );
    assert_eq!(store.segment("buyers").await.unwrap(), Some(b2.clone()));
    assert!(store.delete_segment("abandoners").await.unwrap());
    assert!(!store.delete_segment("abandoners").await.unwrap());
    assert_eq!(store.segment("abandoners").await.unwrap(), None);
    assert_eq!(store.segments().await.unwrap(), [b2]);
}

pub async fn a_healthy_store_passes_its_check(store: Arc<dyn Store>, _t: Arc<Taxonomy>) {
    store.check().await.unwrap();
}

macro_rules! store_contract {
    ($backend:ident, $make:expr) => {
        store_contract!(
            $backend,
            $make,
            [
                unknown_visitors_load_as_none,
                load_standings_answers_each_visitor_in_order,
                tracked_events_are_in_the_record,
                a_track_can_hand_back_the_record,
                repeated_event_ids_are_duplicates,
                the_dedup_window_is_bounded,
                ids_are_per_visitor,
                the_raw_event_ring_keeps_the_newest,
                forget_erases_everything,
                purge_erases_only_inactive_visitors,
                purge_works_in_bounded_passes,
                concurrent_writes_to_one_visitor_all_apply,
                writes_to_one_visitor_apply_in_the_order_made,
                a_scan_returns_each_active_visitor_once,
                a_scan_resumes_after_any_visitor_it_returned,
                partitions_cover_the_scan_order_once,
                an_empty_store_scans_to_nothing,
                segments_are_saved_listed_replaced_and_deleted,
                a_healthy_store_passes_its_check,
            ]
        );
    };
    ($backend:ident, $make:expr, [$($case:ident),* $(,)?]) => {
        mod $backend {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let taxonomy = std::sync::Arc::new(rung::domain::Taxonomy::builtin());
                    let dir = tempfile::tempdir().unwrap();
                    let store = $make(dir.path(), taxonomy.clone()).await;
                    super::$case(store, taxonomy).await;
                }
            )*
        }
    };
}

async fn open_redb(dir: &std::path::Path, t: Arc<Taxonomy>) -> Arc<dyn Store> {
    Arc::new(rung::store::RedbStore::open(dir, t, LIMITS).unwrap())
}

store_contract!(redb, super::open_redb);

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
    let record = rt.block_on(load(&store, "v")).unwrap();
    assert_eq!(record.aggregate.events(), 1);
    assert_eq!(
        rt.block_on(track(&store, "v", vec![new_event(&t, "view_item", 0, "a")])),
        (0, 1)
    );
}

/// A store on a Redis of this test process's own, under a fresh key prefix.
async fn open_redis_at(url: String) -> Arc<dyn Store> {
    let settings = rung::store::RedisSettings {
        url,
        key_prefix: common::redis::unique_prefix(),
        timeout: std::time::Duration::from_secs(5),
    };
    let t = Arc::new(Taxonomy::builtin());
    Arc::new(
        rung::store::RedisStore::open(&settings, t, LIMITS)
            .await
            .unwrap(),
    )
}

async fn open_redis(_dir: &std::path::Path, _t: Arc<Taxonomy>) -> Arc<dyn Store> {
    open_redis_at(common::redis::shared_server().url()).await
}

async fn open_redis_cluster(_dir: &std::path::Path, _t: Arc<Taxonomy>) -> Arc<dyn Store> {
    open_redis_at(common::redis::shared_cluster().url()).await
}

store_contract!(redis, super::open_redis);
store_contract!(redis_cluster, super::open_redis_cluster);

/// Two handles on one Redis under one prefix: two replicas.
async fn two_replicas(url: String) -> (rung::store::RedisStore, rung::store::RedisStore) {
    let settings = rung::store::RedisSettings {
        url,
        key_prefix: common::redis::unique_prefix(),
        timeout: std::time::Duration::from_secs(5),
    };
    let t = Arc::new(Taxonomy::builtin());
    let a = rung::store::RedisStore::open(&settings, t.clone(), LIMITS)
        .await
        .unwrap();
    let b = rung::store::RedisStore::open(&settings, t, LIMITS)
        .await
        .unwrap();
    (a, b)
}

async fn two_replicas_writing_one_visitor_lose_no_update(url: String) {
    let t = Taxonomy::builtin();
    let (a, b) = two_replicas(url).await;
    // 2 × 150 writes in flight at once, alternating replicas.
    let tickets: Vec<_> = (0..300)
        .map(|i| {
            let e = vec![new_event(&t, "page_view", i, &format!("id-{i}"))];
            if i % 2 == 0 {
                a.track(visitor("hot"), e, false)
            } else {
                b.track(visitor("hot"), e, false)
            }
        })
        .collect();
    for ticket in tickets {
        assert_eq!(ticket.await.unwrap().accepted, 1);
    }
    let record = a.load(&visitor("hot")).await.unwrap().unwrap();
    assert_eq!(record.aggregate.count(t.resolve("page_view").unwrap()), 300);
    assert_eq!(record.next_seq, 300);
    assert_eq!(Some(record), b.load(&visitor("hot")).await.unwrap());
    // A redelivery through the other replica is a duplicate.
    let fresh = || vec![new_event(&t, "purchase", 400, "fresh")];
    let first = a.track(visitor("hot"), fresh(), false).await.unwrap();
    let again = b.track(visitor("hot"), fresh(), false).await.unwrap();
    assert_eq!((first.accepted, first.duplicates), (1, 0));
    assert_eq!((again.accepted, again.duplicates), (0, 1));
    eprintln!(
        "conflicts seen: {} on one replica, {} on the other",
        a.conflicts(),
        b.conflicts()
    );
}

async fn a_model_announcement_reaches_the_other_replica(url: String) {
    let (a, b) = two_replicas(url).await;
    let mut notes_b = b.model_announcements().expect("a shared store has notes");
    let mut notes_a = a.model_announcements().expect("a shared store has notes");
    assert!(a.model_announcements().is_none(), "taken once");
    // B's subscription is made in the background: announce until it hears.
    let path = std::path::Path::new("/models/next.json");
    let note = tokio::time::timeout(std::time::Duration::from_secs(20), async {
        loop {
            a.announce_model("v-next", path, at(9)).await.unwrap();
            if let Ok(Some(n)) =
                tokio::time::timeout(std::time::Duration::from_millis(200), notes_b.recv()).await
            {
                return n;
            }
        }
    })
    .await
    .expect("B heard A's announcement");
    assert_eq!(note.version, "v-next");
    assert_eq!(note.path, path);
    assert_eq!(note.loaded_at, at(9));
    // A does not hear itself.
    assert!(
        tokio::time::timeout(std::time::Duration::from_millis(300), notes_a.recv())
            .await
            .is_err()
    );
}

/// A replica that was not listening when a model was announced (starting,
/// or reconnecting) hears the latest announcement once it subscribes.
async fn a_late_replica_hears_the_latest_announcement(url: String) {
    let settings = rung::store::RedisSettings {
        url,
        key_prefix: common::redis::unique_prefix(),
        timeout: std::time::Duration::from_secs(5),
    };
    let t = Arc::new(Taxonomy::builtin());
    let a = rung::store::RedisStore::open(&settings, t.clone(), LIMITS)
        .await
        .unwrap();
    let path = std::path::Path::new("/models/v2.json");
    a.announce_model("v2", path, at(1)).await.unwrap();
    a.announce_model("v3", path, at(2)).await.unwrap();

    let late = rung::store::RedisStore::open(&settings, t, LIMITS)
        .await
        .unwrap();
    let mut notes = late.model_announcements().unwrap();
    let note = tokio::time::timeout(std::time::Duration::from_secs(20), notes.recv())
        .await
        .expect("the latest note arrives")
        .unwrap();

    assert_eq!((note.version.as_str(), note.loaded_at), ("v3", at(2)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_replica_catches_up_on_one_redis() {
    a_late_replica_hears_the_latest_announcement(common::redis::shared_server().url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_replica_catches_up_on_a_redis_cluster() {
    a_late_replica_hears_the_latest_announcement(common::redis::shared_cluster().url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_on_one_redis_lose_no_update() {
    two_replicas_writing_one_visitor_lose_no_update(common::redis::shared_server().url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_on_a_redis_cluster_lose_no_update() {
    two_replicas_writing_one_visitor_lose_no_update(common::redis::shared_cluster().url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_announcement_crosses_one_redis() {
    a_model_announcement_reaches_the_other_replica(common::redis::shared_server().url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_announcement_crosses_a_redis_cluster() {
    a_model_announcement_reaches_the_other_replica(common::redis::shared_cluster().url()).await;
}

/// Every replica runs the retention purge; run at once, they erase each
/// inactive visitor once and no active one.
async fn replicas_purging_at_once_erase_each_inactive_visitor_once(url: String) {
    let t = Taxonomy::builtin();
    let (a, b) = two_replicas(url).await;
    for i in 0..30 {
        let minute = if i % 3 == 0 { 600 } else { i };
        a.track(
            visitor(&format!("p{i}")),
            vec![new_event(&t, "page_view", minute, "")],
            false,
        )
        .await
        .unwrap();
    }

    let (pa, pb) = tokio::join!(a.purge(at(300), 1000), b.purge(at(300), 1000));

    let erased = pa.unwrap().visitors + pb.unwrap().visitors;
    assert_eq!(erased, 20);
    let left = ids(&scan_all(&a, Millis::from_unix_millis(i64::MIN), 100).await);
    let expected: BTreeSet<String> = (0..30).step_by(3).map(|i| format!("p{i}")).collect();
    assert_eq!(left.into_iter().collect::<BTreeSet<_>>(), expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_purging_at_once_on_one_redis() {
    replicas_purging_at_once_erase_each_inactive_visitor_once(common::redis::shared_server().url())
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_purging_at_once_on_a_redis_cluster() {
    replicas_purging_at_once_erase_each_inactive_visitor_once(
        common::redis::shared_cluster().url(),
    )
    .await;
}
