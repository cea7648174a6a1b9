//! Stored records written in layout v2 (before scoring's part came first)
//! are upgraded in place — the embedded store's whole file when it opens,
//! each Redis record on its next write — and every answer stays the same:
//! scores by id, inline duplicates, profiles, audiences and funnels.
//!
//! Layout v2 is written here by a serializer of its own (the record's
//! fields in their old order, times absolute, seen ids as varints), not by
//! the code under test.

mod common;

use std::collections::VecDeque;

use common::redis::{shared_server, unique_prefix};
use common::*;
use redb::{ReadableDatabase, ReadableTable};
use rung::config::Settings;
use rung::domain::Taxonomy;
use rung::grpc::proto::audience_service_client::AudienceServiceClient;
use rung::grpc::proto::{
    Event, ExportSegmentRequest, FunnelRequest, GetVisitorRequest, ScoreRequest, TrackRequest,
};
use rung::scoring::{Aggregate, Timeline};
use rung::store::{record, VisitorRecord};

/// A record in layout v2: the header, then the fields in their v2 order.
fn encode_v2(r: &VisitorRecord) -> Vec<u8> {
    #[derive(serde::Serialize)]
    struct V2<'a> {
        aggregate: &'a Aggregate,
        timeline: &'a Timeline,
        next_seq: u64,
        seen_ids: &'a VecDeque<u64>,
    }
    let header = r
        .aggregate
        .last()
        .map_or(i64::MIN, |t| t.as_unix_millis())
        .to_le_bytes()
        .to_vec();
    postcard::to_extend(
        &V2 {
            aggregate: &r.aggregate,
            timeline: &r.timeline,
            next_seq: r.next_seq,
            seen_ids: &r.seen_ids,
        },
        header,
    )
    .unwrap()
}

fn event(kind: &str, at: i64, item: &str, id: &str) -> Event {
    Event {
        r#type: kind.into(),
        time: Some(ts(at)),
        item_id: item.into(),
        event_id: id.into(),
        ..Event::default()
    }
}

/// Visitors of every shape: one event, a journey up the ladder, a buyer,
/// and one with more events than a timeline or the seen-id window keeps.
fn visitors(now: i64) -> Vec<(String, Vec<Event>)> {
    let mut out = vec![
        (
            "one".to_string(),
            vec![event("page_view", now - 600, "", "one-1")],
        ),
        (
            "climber".to_string(),
            vec![
                event("page_view", now - 3 * DAY, "", "c1"),
                event("view_item", now - 3 * DAY + 60, "sku-1", "c2"),
                event("add_to_cart", now - 2 * HOUR, "sku-1", "c3"),
                event("begin_checkout", now - HOUR, "", "c4"),
            ],
        ),
        (
            "buyer".to_string(),
            vec![
                event("view_item", now - 5 * DAY, "sku-2", "b1"),
                event("add_to_wishlist", now - 4 * DAY, "sku-2", "b2"),
                event("add_to_wishlist", now - 3 * DAY, "sku-3", "b3"),
                event("purchase", now - 2 * DAY, "sku-2", ""),
            ],
        ),
    ];
    let busy = (0..200)
        .map(|k| {
            let kind = ["view_item", "search", "add_to_cart"][k % 3];
            event(
                kind,
                now - 2 * DAY + 300 * k as i64,
                &format!("sku-{k}"),
                &format!("busy-{k}"),
            )
        })
        .collect();
    out.push(("busy".to_string(), busy));
    out
}

/// Everything a client can read about the stored visitors.
#[derive(Debug, PartialEq)]
struct Answers {
    scores: Vec<rung::grpc::proto::ScoreResponse>,
    profiles: Vec<rung::grpc::proto::GetVisitorResponse>,
    members: Vec<Vec<rung::grpc::proto::SegmentMember>>,
    funnel: rung::grpc::proto::FunnelResponse,
}

async fn answers(app: &mut TestApp, now: i64) -> Answers {
    let mut scores = Vec::new();
    let mut profiles = Vec::new();
    for (id, events) in visitors(now) {
        // By id, every feature explained, at a fixed moment after the events.
        let by_id = ScoreRequest {
            visitor_id: id.clone(),
            as_of: Some(ts(now + HOUR)),
            explain: true,
            ..Default::default()
        };
        scores.push(app.client.score(by_id).await.unwrap().into_inner());
        // With inline events: the last stored one with an id again (a
        // duplicate, which only the stored seen ids can tell) and a new one.
        let stored = events.iter().rev().find(|e| !e.event_id.is_empty());
        let inline = ScoreRequest {
            visitor_id: id.clone(),
            events: vec![
                stored.unwrap().clone(),
                event("view_item", now + 60, "sku-new", &format!("{id}-new")),
            ],
            as_of: Some(ts(now + HOUR)),
            ..Default::default()
        };
        scores.push(app.client.score(inline).await.unwrap().into_inner());
        let profile = GetVisitorRequest {
            visitor_id: id.clone(),
            max_events: 0,
        };
        profiles.push(app.client.get_visitor(profile).await.unwrap().into_inner());
    }
    let mut audiences = AudienceServiceClient::new(app.channel.clone());
    let mut members = Vec::new();
    for name in [
        "cart_abandoners",
        "checkout_abandoners",
        "wishlist_twice_no_purchase",
    ] {
        let mut stream = audiences
            .export_segment(ExportSegmentRequest {
                name: name.into(),
                as_of: Some(ts(now + HOUR)),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let mut got = Vec::new();
        while let Some(m) = stream.message().await.unwrap() {
            got.push(m);
        }
        members.push(got);
    }
    let funnel = audiences
        .funnel(FunnelRequest {
            from: Some(ts(now - 7 * DAY)),
            to: Some(ts(now + HOUR)),
        })
        .await
        .unwrap()
        .into_inner();
    Answers {
        scores,
        profiles,
        members,
        funnel,
    }
}

async fn track_all(app: &mut TestApp, now: i64) {
    for (id, events) in visitors(now) {
        app.client
            .track(TrackRequest {
                visitor_id: id,
                events,
            })
            .await
            .unwrap();
    }
}

/// The members that show the stored visitors were really read.
fn check_answers_are_not_empty(a: &Answers) {
    assert!(a.scores.iter().all(|s| s.probability > 0.0));
    assert_eq!(a.scores[3].rung, "begin_checkout", "{:?}", a.scores[3]);
    // The inline copy of a stored event is recognised as a duplicate.
    assert!(a
        .scores
        .iter()
        .skip(1)
        .step_by(2)
        .all(|s| s.ignored_duplicate == 1));
    assert!(a.members.iter().any(|m| !m.is_empty()), "{:?}", a.members);
}

#[tokio::test]
async fn an_embedded_store_of_v2_records_is_upgraded_when_opened_and_answers_the_same() {
    // Arrange: visitors stored, every answer taken, then each record
    // rewritten in layout v2 and the file marked as the format before.
    let settings: Settings = test_settings();
    let now = now_secs();
    let mut app = spawn_app_with(settings.clone()).await;
    track_all(&mut app, now).await;
    let before = answers(&mut app, now).await;
    app.stop().await;
    check_answers_are_not_empty(&before);
    let taxonomy = Taxonomy::builtin();
    let file = settings.data_dir.join("rung.redb");
    let visitors_table: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("visitors");
    let meta_table: redb::TableDefinition<&str, &str> = redb::TableDefinition::new("meta");
    {
        let db = redb::Database::open(&file).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut meta = txn.open_table(meta_table).unwrap();
            assert_eq!(
                meta.get("format").unwrap().unwrap().value(),
                "rung.store.v4"
            );
            meta.insert("format", "rung.store.v3").unwrap();
            let mut table = txn.open_table(visitors_table).unwrap();
            let rows: Vec<(String, Vec<u8>)> = table
                .iter()
                .unwrap()
                .map(|e| {
                    let (k, v) = e.unwrap();
                    (k.value().to_string(), v.value().to_vec())
                })
                .collect();
            assert_eq!(rows.len(), visitors(now).len());
            for (row, bytes) in rows {
                let r = record::decode(&row, &bytes, &taxonomy).unwrap();
                let old = encode_v2(&r);
                assert_ne!(old, bytes);
                // Layout v2 does not read as v3: the upgrade is needed.
                assert!(record::decode(&row, &old, &taxonomy).map_or(true, |d| d != r));
                table.insert(row.as_str(), old.as_slice()).unwrap();
            }
        }
        txn.commit().unwrap();
    }

    // Act
    let mut app = spawn_app_with(settings.clone()).await;
    let after = answers(&mut app, now).await;
    app.stop().await;

    // Assert: the same answers, and the file now holds layout v3.
    assert_eq!(after, before);
    let db = redb::Database::open(&file).unwrap();
    let txn = db.begin_read().unwrap();
    let meta = txn.open_table(meta_table).unwrap();
    assert_eq!(
        meta.get("format").unwrap().unwrap().value(),
        "rung.store.v4"
    );
    let table = txn.open_table(visitors_table).unwrap();
    for e in table.iter().unwrap() {
        let (k, v) = e.unwrap();
        let r = record::decode(k.value(), v.value(), &taxonomy).unwrap();
        assert_eq!(record::encode(&r).unwrap(), v.value());
    }
}

#[tokio::test]
async fn a_redis_record_in_layout_v2_reads_the_same_and_is_rewritten_on_its_next_write() {
    // Arrange: visitors stored on Redis, every answer taken, then each
    // record put back in layout v2 under a version token of the old form.
    let server = shared_server();
    let prefix = unique_prefix();
    let now = now_secs();
    let mut app = spawn_app_with(redis_settings(&server.url(), &prefix)).await;
    track_all(&mut app, now).await;
    let before = answers(&mut app, now).await;
    check_answers_are_not_empty(&before);
    let taxonomy = Taxonomy::builtin();
    let mut conn = ::redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let key = |id: &str| format!("{prefix}{{{id}}}:r");
    for (id, _) in visitors(now) {
        let stored: Vec<u8> = ::redis::cmd("GET")
            .arg(key(&id))
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(
            stored[0], b'v',
            "a record written now is marked as layout v3"
        );
        let r = record::decode(&id, &stored[16..], &taxonomy).unwrap();
        let mut old = b"0123456789abcdef".to_vec();
        old.extend_from_slice(&encode_v2(&r));
        let _: () = ::redis::cmd("SET")
            .arg(key(&id))
            .arg(old)
            .query_async(&mut conn)
            .await
            .unwrap();
    }

    // Act
    let during = answers(&mut app, now).await;
    app.client
        .track(TrackRequest {
            visitor_id: "busy".into(),
            events: vec![event("view_item", now, "sku-late", "busy-late")],
        })
        .await
        .unwrap();

    // Assert: the same answers from the old layout; the record written
    // again is in the new one, the others are untouched.
    assert_eq!(during, before);
    let busy: Vec<u8> = ::redis::cmd("GET")
        .arg(key("busy"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(busy[0], b'v');
    let r = record::decode("busy", &busy[16..], &taxonomy).unwrap();
    assert_eq!(r.aggregate.events(), 201);
    let one: Vec<u8> = ::redis::cmd("GET")
        .arg(key("one"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(&one[..16], b"0123456789abcdef");
    app.stop().await;
}
