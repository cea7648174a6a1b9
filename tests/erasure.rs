//! Erasure reaches the disk: once ForgetVisitor answers, none of the
//! visitor's ids, item ids or event ids can be read from any file in the
//! data directory, and the key their data was sealed with is gone from it.

mod common;

use std::path::Path;

use common::*;
use rung::grpc::proto::audience_service_client::AudienceServiceClient;
use rung::grpc::proto::{
    Event, ExportSegmentRequest, ForgetVisitorRequest, GetVisitorRequest, PutSegmentRequest,
    TrackRequest,
};
use tonic::Code;

/// A string that occurs nowhere by chance.
fn unique(label: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let mut x = nanos ^ (u128::from(std::process::id()) << 64);
    let mut tail = String::new();
    for _ in 0..24 {
        // xorshift, enough to spread the clock's bits over every digit
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        tail.push(char::from(b'a' + (x % 26) as u8));
    }
    format!("{label}-{tail}")
}

fn events(visitor: &str, items: &[String], ids: &[String]) -> TrackRequest {
    let now = now_secs();
    TrackRequest {
        visitor_id: visitor.into(),
        events: items
            .iter()
            .zip(ids)
            .enumerate()
            .map(|(k, (item, id))| Event {
                r#type: if k % 2 == 0 {
                    "view_item"
                } else {
                    "add_to_cart"
                }
                .into(),
                time: Some(ts(now - 3600 + k as i64)),
                item_id: item.clone(),
                event_id: id.clone(),
                ..Default::default()
            })
            .collect(),
    }
}

/// Every file under `dir`, as bytes.
fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files(&path));
        } else {
            out.push((path.display().to_string(), std::fs::read(&path).unwrap()));
        }
    }
    out
}

/// The files (and offsets) where `needle` occurs.
fn found(files: &[(String, Vec<u8>)], needle: &str) -> Vec<String> {
    let n = needle.as_bytes();
    files
        .iter()
        .filter_map(|(name, bytes)| {
            bytes
                .windows(n.len())
                .position(|w| w == n)
                .map(|at| format!("{name} at {at}"))
        })
        .collect()
}

/// Slots of the key file that hold a key.
fn keys_held(dir: &Path) -> usize {
    let bytes = std::fs::read(dir.join("rung.keys")).unwrap();
    bytes
        .chunks(32)
        .filter(|k| k.iter().any(|&b| b != 0))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forgotten_visitors_ids_are_nowhere_in_the_data_files() {
    // Arrange: one visitor with distinctive ids among many others, and a
    // saved segment whose description is stored in the clear (the control:
    // it shows the scan below reads what the store wrote).
    let settings = test_settings();
    let dir = settings.data_dir.clone();
    let mut app = spawn_app_with(settings).await;
    let visitor = unique("forget-me-visitor");
    let items: Vec<String> = (0..6)
        .map(|k| unique(&format!("forget-me-item{k}")))
        .collect();
    let ids: Vec<String> = (0..6)
        .map(|k| unique(&format!("forget-me-event{k}")))
        .collect();
    let control = unique("kept-in-the-clear");
    for i in 0..150 {
        let v = format!("other-{i}");
        let its: Vec<String> = (0..4).map(|k| format!("{v}-item-{k}")).collect();
        let eids: Vec<String> = (0..4).map(|k| format!("{v}-event-{k}")).collect();
        app.client.track(events(&v, &its, &eids)).await.unwrap();
        if i == 75 {
            // Tracked twice, so older copies of its rows were freed too.
            app.client
                .track(events(&visitor, &items[..3], &ids[..3]))
                .await
                .unwrap();
            app.client
                .track(events(&visitor, &items[3..], &ids[3..]))
                .await
                .unwrap();
        }
    }
    AudienceServiceClient::new(app.channel.clone())
        .put_segment(PutSegmentRequest {
            name: "control".into(),
            definition: r#"{"count":{"event":"view_item","within":"7d","at_least":1}}"#.into(),
            description: control.clone(),
            overwrite: false,
        })
        .await
        .unwrap();
    let profile = app
        .client
        .get_visitor(GetVisitorRequest {
            visitor_id: visitor.clone(),
            max_events: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let mut stored: Vec<String> = profile
        .recent_events
        .iter()
        .map(|e| e.item_id.clone())
        .collect();
    stored.sort();
    let mut sorted_items = items.clone();
    sorted_items.sort();
    assert_eq!(stored, sorted_items, "the visitor's events are stored");
    // Exports name visitors: the id is stored, sealed.
    let mut export = AudienceServiceClient::new(app.channel.clone())
        .export_segment(ExportSegmentRequest {
            name: "control".into(),
            as_of: Some(ts(now_secs())),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut exported = Vec::new();
    while let Some(m) = export.message().await.unwrap() {
        exported.push(m.visitor_id);
    }
    assert!(exported.contains(&visitor), "{} exported", exported.len());
    let before = files(&dir);
    assert!(
        !found(&before, &control).is_empty(),
        "the scan sees stored bytes"
    );
    let held_before = keys_held(&dir);

    // Act
    let forgot = app
        .client
        .forget_visitor(ForgetVisitorRequest {
            visitor_id: visitor.clone(),
        })
        .await
        .unwrap()
        .into_inner();

    // Assert: gone from the API, its key gone from the disk, and none of its
    // strings anywhere in the data files (nor were they ever in the clear).
    assert!(forgot.existed);
    let gone = app
        .client
        .get_visitor(GetVisitorRequest {
            visitor_id: visitor.clone(),
            max_events: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(gone.code(), Code::NotFound);
    assert_eq!(keys_held(&dir), held_before - 1);
    let after = files(&dir);
    for (label, snapshot) in [("before", &before), ("after", &after)] {
        for s in std::iter::once(&visitor).chain(&items).chain(&ids) {
            assert_eq!(found(snapshot, s), Vec::<String>::new(), "{s} {label}");
        }
    }
    // The other visitors are untouched.
    let other = app
        .client
        .get_visitor(GetVisitorRequest {
            visitor_id: "other-3".into(),
            max_events: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(other.events, 4);
    app.stop().await;
}
