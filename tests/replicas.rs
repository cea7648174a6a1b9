//! Several `rung serve` replicas over one shared Redis, seen only through
//! their gRPC APIs and the `rung` binary: what one replica writes, the other
//! reads exactly; concurrent writers through both lose nothing; redeliveries,
//! erasure, saved segments and model reloads cross replicas; a replica killed
//! mid-ingestion loses nothing it acknowledged; audiences agree with the
//! embedded store; exports resume; the segment CLI reads the shared store.
//!
//! Most cases run twice, on one Redis and on a 3-node Redis Cluster
//! ([`on_redis_and_cluster!`]); each run takes a key prefix of its own.

mod common;

use std::collections::{HashMap, HashSet};
use std::process::Command;
use std::time::Duration;

use common::process::{serve_command, ServeProcess};
use common::redis::{shared_cluster, shared_server, unique_prefix, RedisServer};
use common::*;
use rung::config::Settings;
use rung::grpc::proto::audience_service_client::AudienceServiceClient;
use rung::grpc::proto::intent_service_client::IntentServiceClient;
use rung::grpc::proto::model_service_client::ModelServiceClient;
use rung::grpc::proto::{
    CountSegmentRequest, DeleteSegmentRequest, Event, ExportSegmentRequest, ForgetVisitorRequest,
    FunnelRequest, FunnelResponse, GetModelRequest, GetSegmentRequest, GetVisitorRequest,
    GetVisitorResponse, ListSegmentsRequest, PutSegmentRequest, ReloadModelRequest, ScoreRequest,
    ScoreResponse, SegmentMember, TrackRequest, TrackResponse,
};
use tonic::transport::Channel;
use tonic::Code;

/// Runs each named `async fn case(url: String)` as two tests: on the shared
/// single Redis and on the shared 3-node Redis Cluster.
macro_rules! on_redis_and_cluster {
    ($($case:ident),* $(,)?) => {$(
        mod $case {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn on_one_redis() {
                super::$case(super::single_url()).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn on_a_redis_cluster() {
                super::$case(super::cluster_url()).await
            }
        }
    )*};
}

on_redis_and_cluster!(
    a_visitor_tracked_on_one_replica_reads_the_same_on_the_other,
    concurrent_writers_through_both_replicas_lose_no_event,
    a_redelivery_to_the_other_replica_is_a_duplicate,
    a_visitor_forgotten_on_one_replica_is_a_stranger_to_the_other,
    a_segment_saved_on_one_replica_is_counted_and_deleted_on_the_other,
    a_model_reloaded_on_one_replica_is_followed_by_the_other,
    an_export_resumes_after_a_dropped_connection_with_its_token,
    the_segment_cli_reads_the_shared_store_as_the_server_does,
);

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// The shared single Redis (started on first use, which blocks).
fn single_url() -> String {
    tokio::task::block_in_place(|| shared_server().url())
}

/// The shared 3-master Redis Cluster (started on first use, which blocks).
fn cluster_url() -> String {
    tokio::task::block_in_place(|| shared_cluster().url())
}

/// Two replicas of one deployment: the same Redis, the same key prefix
/// (a prefix of this test's own).
async fn two_replicas(url: &str) -> (TestApp, TestApp) {
    two_replicas_with(redis_settings(url, &unique_prefix())).await
}

/// Two replicas with the same `settings`, each with a data directory of its
/// own (which a Redis-backed replica leaves unused).
async fn two_replicas_with(settings: Settings) -> (TestApp, TestApp) {
    let a = spawn_app_with(settings.clone()).await;
    let b = spawn_app_with(Settings {
        data_dir: fresh_data_dir(),
        ..settings
    })
    .await;
    (a, b)
}

/// An event `ago` seconds before `now`.
fn at(kind: &str, now: i64, ago: i64) -> Event {
    Event {
        r#type: kind.into(),
        time: Some(ts(now - ago)),
        ..Event::default()
    }
}

/// Like [`at`], with an item and an event id.
fn at_with(kind: &str, now: i64, ago: i64, item: &str, id: &str) -> Event {
    Event {
        item_id: item.into(),
        event_id: id.into(),
        ..at(kind, now, ago)
    }
}

async fn connect(addr: std::net::SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .expect("client connects")
}

async fn track(
    client: &mut IntentServiceClient<Channel>,
    visitor: &str,
    events: Vec<Event>,
) -> TrackResponse {
    client
        .track(TrackRequest {
            visitor_id: visitor.into(),
            events,
        })
        .await
        .unwrap_or_else(|s| panic!("track {visitor}: {s:?}"))
        .into_inner()
}

/// Score by id alone, at a fixed moment, with every feature.
async fn score(app: &mut TestApp, visitor: &str, as_of: i64) -> ScoreResponse {
    app.client
        .score(ScoreRequest {
            visitor_id: visitor.into(),
            as_of: Some(ts(as_of)),
            explain: true,
            ..ScoreRequest::default()
        })
        .await
        .unwrap_or_else(|s| panic!("score {visitor}: {s:?}"))
        .into_inner()
}

async fn get_visitor(
    client: &mut IntentServiceClient<Channel>,
    visitor: &str,
) -> Result<GetVisitorResponse, tonic::Status> {
    client
        .get_visitor(GetVisitorRequest {
            visitor_id: visitor.into(),
            max_events: 0,
        })
        .await
        .map(|r| r.into_inner())
}

fn audiences(app: &TestApp) -> AudienceServiceClient<Channel> {
    AudienceServiceClient::new(app.channel.clone())
}

async fn count(
    client: &mut AudienceServiceClient<Channel>,
    name: &str,
    as_of: i64,
) -> Result<u64, tonic::Status> {
    client
        .count_segment(CountSegmentRequest {
            name: name.into(),
            as_of: Some(ts(as_of)),
            ..Default::default()
        })
        .await
        .map(|r| r.into_inner().count)
}

async fn export(
    client: &mut AudienceServiceClient<Channel>,
    req: ExportSegmentRequest,
) -> Result<Vec<SegmentMember>, tonic::Status> {
    let mut stream = client.export_segment(req).await?.into_inner();
    let mut out = Vec::new();
    while let Some(m) = stream.message().await? {
        out.push(m);
    }
    Ok(out)
}

fn export_by_name(name: &str, as_of: i64) -> ExportSegmentRequest {
    ExportSegmentRequest {
        name: name.into(),
        as_of: Some(ts(as_of)),
        ..Default::default()
    }
}

fn ids(members: &[SegmentMember]) -> Vec<&str> {
    members.iter().map(|m| m.visitor_id.as_str()).collect()
}

/// Members as a set to compare across stores: sorted by visitor id, without
/// the resume token (which encodes a store's own scan position).
fn member_set(mut members: Vec<SegmentMember>) -> Vec<SegmentMember> {
    for m in &mut members {
        m.resume_token.clear();
    }
    members.sort_by(|x, y| x.visitor_id.cmp(&y.visitor_id));
    members
}

// ---------------------------------------------------------------------------
// 1. Reads on one replica see the other's writes
// ---------------------------------------------------------------------------

async fn a_visitor_tracked_on_one_replica_reads_the_same_on_the_other(url: String) {
    // Arrange
    let (mut a, mut b) = two_replicas(&url).await;
    let now = now_secs();
    track(
        &mut a.client,
        "ann",
        vec![
            at_with("view_item", now, 2 * DAY, "sku-1", "e1"),
            at_with("view_item", now, DAY, "sku-2", "e2"),
            at_with("add_to_cart", now, HOUR, "sku-2", "e3"),
        ],
    )
    .await;

    // Act: both read; then A tracks again and both read again (a copy B
    // kept from its first read would now be stale).
    let score_a1 = score(&mut a, "ann", now).await;
    let score_b1 = score(&mut b, "ann", now).await;
    let profile_a1 = get_visitor(&mut a.client, "ann").await.expect("on A");
    let profile_b1 = get_visitor(&mut b.client, "ann").await.expect("on B");
    track(
        &mut a.client,
        "ann",
        vec![at_with("begin_checkout", now, 600, "", "e4")],
    )
    .await;
    let score_b2 = score(&mut b, "ann", now).await;
    let score_a2 = score(&mut a, "ann", now).await;
    let profile_b2 = get_visitor(&mut b.client, "ann").await.expect("on B");
    let profile_a2 = get_visitor(&mut a.client, "ann").await.expect("on A");

    // Assert: B answers exactly what A answers, every field.
    assert_eq!(score_b1, score_a1);
    assert_eq!(profile_b1, profile_a1);
    assert_eq!(score_b2, score_a2);
    assert_eq!(profile_b2, profile_a2);
    // And those answers are the visitor's: 3 events up to the cart, then 4
    // up to checkout.
    assert_eq!(
        (profile_a1.events, profile_a1.rung.as_str()),
        (3, "add_to_cart")
    );
    assert_eq!(score_a1.rung, "add_to_cart");
    assert_eq!(
        (profile_a2.events, profile_a2.rung.as_str()),
        (4, "begin_checkout")
    );
    assert_eq!(score_a2.rung, "begin_checkout");
    let mut kept: Vec<&str> = profile_b2
        .recent_events
        .iter()
        .map(|e| e.event_id.as_str())
        .collect();
    kept.sort_unstable();
    assert_eq!(kept, vec!["e1", "e2", "e3", "e4"]);
    a.stop().await;
    b.stop().await;
}

// ---------------------------------------------------------------------------
// 2. Concurrent writers to one visitor through both replicas
// ---------------------------------------------------------------------------

const WRITERS: usize = 4;
const EVENTS_PER_WRITER: usize = 250;
/// Writer event k has type `KINDS[k % 5]`: 50 of each per writer.
const KINDS: [&str; 5] = [
    "page_view",
    "view_item",
    "search",
    "add_to_wishlist",
    "add_to_cart",
];

async fn concurrent_writers_through_both_replicas_lose_no_event(url: String) {
    // Arrange: two writers per replica, each on a connection of its own.
    let (mut a, mut b) = two_replicas(&url).await;
    let now = now_secs();
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let addr = if w % 2 == 0 { a.addr } else { b.addr };
        let channel = connect(addr).await;
        writers.push(tokio::spawn(async move {
            let mut client = IntentServiceClient::new(channel);
            let (mut accepted, mut duplicates) = (0, 0);
            for k in 0..EVENTS_PER_WRITER {
                // Distinct times, all within the last hour.
                let ago = 3000 - (k * WRITERS + w) as i64;
                let event = at_with(KINDS[k % KINDS.len()], now, ago, "", &format!("w{w}-{k}"));
                let r = track(&mut client, "crowd", vec![event]).await;
                accepted += r.accepted;
                duplicates += r.duplicates;
            }
            (accepted, duplicates)
        }));
    }

    // Act
    let mut answered = Vec::new();
    for w in writers {
        answered.push(w.await.expect("writer"));
    }
    let on_a = get_visitor(&mut a.client, "crowd").await.expect("on A");
    let on_b = get_visitor(&mut b.client, "crowd").await.expect("on B");

    // Assert: every event was accepted once and counted once.
    assert_eq!(answered, vec![(EVENTS_PER_WRITER as u32, 0); WRITERS]);
    let total = (WRITERS * EVENTS_PER_WRITER) as u64;
    let per_kind = total / KINDS.len() as u64;
    for profile in [&on_a, &on_b] {
        assert_eq!(profile.events, total);
        let expected: HashMap<String, u64> =
            KINDS.iter().map(|k| (k.to_string(), per_kind)).collect();
        assert_eq!(profile.counts, expected);
        assert_eq!(profile.counts.values().sum::<u64>(), total);
    }
    assert_eq!(on_a, on_b);
    a.stop().await;
    b.stop().await;
}

// ---------------------------------------------------------------------------
// 3. Redelivery across replicas
// ---------------------------------------------------------------------------

async fn a_redelivery_to_the_other_replica_is_a_duplicate(url: String) {
    // Arrange
    let (mut a, mut b) = two_replicas(&url).await;
    let now = now_secs();
    let message = || vec![at_with("add_to_cart", now, 60, "sku-9", "msg-x")];
    let first = track(&mut a.client, "bo", message()).await;

    // Act: the tracker's retry lands on the other replica.
    let again = track(&mut b.client, "bo", message()).await;

    // Assert
    assert_eq!((first.accepted, first.duplicates), (1, 0));
    assert_eq!((again.accepted, again.duplicates), (0, 1));
    for client in [&mut a.client, &mut b.client] {
        let p = get_visitor(client, "bo").await.expect("stored");
        assert_eq!(p.events, 1);
        assert_eq!(p.counts.get("add_to_cart"), Some(&1));
    }
    a.stop().await;
    b.stop().await;
}

// ---------------------------------------------------------------------------
// 4. Erasure across replicas
// ---------------------------------------------------------------------------

async fn a_visitor_forgotten_on_one_replica_is_a_stranger_to_the_other(url: String) {
    // Arrange: A has read the visitor (so a copy it kept would show).
    let (mut a, mut b) = two_replicas(&url).await;
    let now = now_secs();
    track(
        &mut a.client,
        "cleo",
        vec![
            at("view_item", now, DAY),
            at("add_to_cart", now, HOUR),
            at("purchase", now, 600),
        ],
    )
    .await;
    let before = get_visitor(&mut a.client, "cleo").await.expect("stored");
    let scored_before = score(&mut a, "cleo", now).await;

    // Act
    let forgotten = b
        .client
        .forget_visitor(ForgetVisitorRequest {
            visitor_id: "cleo".into(),
        })
        .await
        .expect("forget")
        .into_inner();
    let after = get_visitor(&mut a.client, "cleo").await;
    let scored_after = score(&mut a, "cleo", now).await;
    let mut stranger = score(&mut a, "never-seen", now).await;

    // Assert
    assert!(forgotten.existed);
    assert_eq!(before.events, 3);
    assert_eq!(scored_before.rung, "purchase");
    let status = after.expect_err("forgotten on B, so NOT_FOUND on A");
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    // Scored as someone rung never saw, down to every feature.
    stranger.visitor_id = "cleo".into();
    assert_eq!(scored_after, stranger);
    assert_eq!(scored_after.rung, "");
    a.stop().await;
    b.stop().await;
}

// ---------------------------------------------------------------------------
// 5. Saved segments across replicas
// ---------------------------------------------------------------------------

async fn a_segment_saved_on_one_replica_is_counted_and_deleted_on_the_other(url: String) {
    // Arrange: two of three visitors reached the cart.
    let (mut a, mut b) = two_replicas(&url).await;
    let now = now_secs();
    track(&mut a.client, "v1", vec![at("add_to_cart", now, HOUR)]).await;
    track(
        &mut b.client,
        "v2",
        vec![at("view_item", now, DAY), at("begin_checkout", now, HOUR)],
    )
    .await;
    track(&mut a.client, "v3", vec![at("view_item", now, HOUR)]).await;
    let (mut on_a, mut on_b) = (audiences(&a), audiences(&b));

    // Act
    let saved = on_a
        .put_segment(PutSegmentRequest {
            name: "carted".into(),
            definition: r#"{"reached":"add_to_cart"}"#.into(),
            description: "reached the cart".into(),
            overwrite: false,
        })
        .await
        .expect("saved on A")
        .into_inner();
    let seen_by_b = on_b
        .get_segment(GetSegmentRequest {
            name: "carted".into(),
        })
        .await
        .expect("B knows it")
        .into_inner();
    let counted_by_b = count(&mut on_b, "carted", now).await.expect("count on B");
    on_b.delete_segment(DeleteSegmentRequest {
        name: "carted".into(),
    })
    .await
    .expect("deleted on B");
    let counted_by_a = count(&mut on_a, "carted", now).await;
    let got_by_a = on_a
        .get_segment(GetSegmentRequest {
            name: "carted".into(),
        })
        .await;

    // Assert
    assert_eq!(seen_by_b.segment, saved.segment);
    assert_eq!(counted_by_b, 2);
    let counted = counted_by_a.expect_err("deleted on B");
    assert_eq!(counted.code(), Code::NotFound, "{counted:?}");
    let got = got_by_a.expect_err("deleted on B");
    assert_eq!(got.code(), Code::NotFound, "{got:?}");
    a.stop().await;
    b.stop().await;
}

// ---------------------------------------------------------------------------
// 6. Model reloads across replicas
// ---------------------------------------------------------------------------

/// Waits until `n` connections listen on some channel under `prefix`, summed
/// over the nodes at `url` (each URL of a cluster).
///
/// A model announcement reaches only the replicas subscribed when it is
/// published, and a replica subscribes in the background after it starts;
/// waiting for both keeps this test about delivery, not start-up timing.
async fn wait_for_subscribers(url: &str, prefix: &str, n: i64) {
    let what = format!("{n} replicas subscribed under {prefix}");
    until(&what, Duration::from_secs(20), || async {
        let mut listening = 0;
        for node in url.split(',') {
            let client = ::redis::Client::open(node).unwrap();
            let mut conn = client
                .get_multiplexed_async_connection()
                .await
                .expect("a Redis node answers");
            let channels: Vec<String> = ::redis::cmd("PUBSUB")
                .arg("CHANNELS")
                .arg(format!("{prefix}*"))
                .query_async(&mut conn)
                .await
                .unwrap();
            if channels.is_empty() {
                continue;
            }
            let counts: HashMap<String, i64> = ::redis::cmd("PUBSUB")
                .arg("NUMSUB")
                .arg(&channels)
                .query_async(&mut conn)
                .await
                .unwrap();
            listening += counts.values().sum::<i64>();
        }
        (listening >= n).then_some(())
    })
    .await
}

async fn a_model_reloaded_on_one_replica_is_followed_by_the_other(url: String) {
    // Arrange: both replicas serve the shipped model and watch no file, so
    // only the announcement through Redis can change B's model.
    let prefix = unique_prefix();
    let (mut a, mut b) = two_replicas_with(Settings {
        model_watch_secs: 0,
        ..redis_settings(&url, &prefix)
    })
    .await;
    wait_for_subscribers(&url, &prefix, 2).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("variant.json");
    let shipped = artifact_json();
    let mut next = shipped.clone();
    next["version"] = "replicated-1".into();
    // Scaled coefficients, so the probability shows which model scored.
    for c in next["coefficients"].as_array_mut().unwrap() {
        *c = (c.as_f64().unwrap() * 1.5).into();
    }
    std::fs::write(&path, serde_json::to_vec_pretty(&next).unwrap()).unwrap();
    let now = now_secs();
    track(
        &mut a.client,
        "dee",
        vec![
            at("view_item", now, DAY),
            at("add_to_cart", now, HOUR),
            at("begin_checkout", now, 600),
        ],
    )
    .await;
    let before = score(&mut b, "dee", now).await;
    let mut models_a = ModelServiceClient::new(a.channel.clone());
    let models_b = ModelServiceClient::new(b.channel.clone());

    // Act
    let reloaded = models_a
        .reload_model(ReloadModelRequest {
            path: path.display().to_string(),
        })
        .await
        .expect("reload on A")
        .into_inner();
    let on_b = until("B follows A's reload", Duration::from_secs(20), || {
        let mut models_b = models_b.clone();
        async move {
            let m = models_b
                .get_model(GetModelRequest {})
                .await
                .expect("GetModel on B")
                .into_inner();
            (m.version == "replicated-1").then_some(m)
        }
    })
    .await;
    let after_b = score(&mut b, "dee", now).await;
    let after_a = score(&mut a, "dee", now).await;

    // Assert
    assert!(reloaded.changed);
    assert_eq!(reloaded.version, "replicated-1");
    assert_eq!(before.model_version, shipped["version"].as_str().unwrap());
    assert_eq!(on_b.path, path.display().to_string());
    assert_eq!(after_b.model_version, "replicated-1");
    assert_ne!(after_b.probability, before.probability);
    assert_eq!(after_b, after_a);
    a.stop().await;
    b.stop().await;
}

/// A variant of the shipped model, written now at `path`.
fn write_variant(path: &std::path::Path, version: &str) {
    let mut next = artifact_json();
    next["version"] = version.into();
    std::fs::write(path, serde_json::to_vec_pretty(&next).unwrap()).unwrap();
}

async fn serving_version(app: &TestApp) -> String {
    ModelServiceClient::new(app.channel.clone())
        .get_model(GetModelRequest {})
        .await
        .unwrap()
        .into_inner()
        .version
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_started_after_a_reload_follows_it_unless_its_own_file_is_newer() {
    // Arrange: replica A reloads a variant; it is announced and kept in Redis.
    let url = single_url();
    let prefix = unique_prefix();
    let settings = Settings {
        model_watch_secs: 0,
        ..redis_settings(&url, &prefix)
    };
    let a = spawn_app_with(settings.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let reloaded = dir.path().join("reloaded.json");
    write_variant(&reloaded, "reloaded-on-a");
    ModelServiceClient::new(a.channel.clone())
        .reload_model(ReloadModelRequest {
            path: reloaded.display().to_string(),
        })
        .await
        .unwrap();

    // Act: C starts on the shipped model (a file older than the reload);
    // D on a model file written after the reload (a newer deployment).
    let c = spawn_app_with(Settings {
        data_dir: fresh_data_dir(),
        ..settings.clone()
    })
    .await;
    let newer = dir.path().join("newer.json");
    write_variant(&newer, "deployed-later");
    // Written "later": a minute on, clear of the file clock's coarse ticks.
    std::fs::File::options()
        .write(true)
        .open(&newer)
        .unwrap()
        .set_modified(std::time::SystemTime::now() + Duration::from_secs(60))
        .unwrap();
    let d = spawn_app_with(Settings {
        data_dir: fresh_data_dir(),
        model: Some(newer.clone()),
        ..settings
    })
    .await;

    // Assert: C catches up with A; D, once it has weighed the same note,
    // keeps the newer file it was given.
    until("C follows A's reload", Duration::from_secs(20), || async {
        (serving_version(&c).await == "reloaded-on-a").then_some(())
    })
    .await;
    let announcements =
        |outcome: &str| format!("rung_model_announcements_total{{outcome=\"{outcome}\"}}");
    until(
        "D weighs A's announcement",
        Duration::from_secs(20),
        || async {
            let m = scrape(d.metrics()).await;
            m.get(&announcements("ignored"))
                .filter(|n| **n >= 1.0)
                .map(drop)
        },
    )
    .await;
    let on_c = scrape(c.metrics()).await;
    assert_eq!(on_c.get(&announcements("followed")), Some(&1.0));
    assert_eq!(serving_version(&d).await, "deployed-later");
    assert_eq!(serving_version(&a).await, "reloaded-on-a");
    for app in [a, c, d] {
        app.stop().await;
    }
}

// ---------------------------------------------------------------------------
// 7. A replica killed mid-ingestion
// ---------------------------------------------------------------------------

/// `rung serve` as a separate process on the shared Redis at `url`.
fn serve_process(url: &str, prefix: &str) -> ServeProcess {
    let mut cmd = serve_command();
    cmd.current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["--store-url", url])
        .env("RUNG_STORE__KEY_PREFIX", prefix)
        .env("RUNG_DATA_DIR", fresh_data_dir())
        // The tests write their model variants in temporary folders.
        .env("RUNG_MODEL_DIR", std::env::temp_dir());
    ServeProcess::start(cmd)
}

const KILL_AFTER: usize = 400;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_mid_ingestion_loses_nothing_it_acknowledged() {
    // Arrange: a durable Redis (AOF, fsync always); replica A a process of
    // its own under 8 writers, replica B in this process.
    let redis = tokio::task::block_in_place(RedisServer::start);
    let prefix = unique_prefix();
    let mut replica_a = tokio::task::block_in_place(|| serve_process(&redis.url(), &prefix));
    let mut b = spawn_app_with(redis_settings(&redis.url(), &prefix)).await;
    // Each acknowledged visitor, as it is acknowledged.
    let (acks, mut acknowledged) = tokio::sync::mpsc::unbounded_channel::<String>();
    let now = now_secs();
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let acks = acks.clone();
            let addr = replica_a.addr.clone();
            tokio::spawn(async move {
                let mut client = IntentServiceClient::connect(format!("http://{addr}"))
                    .await
                    .expect("connects to A");
                // Stops at the first failure (the kill); bounded either way.
                for i in 0..20_000 {
                    let visitor = format!("k{w}-{i}");
                    let events = (0..5)
                        .map(|k| at_with("view_item", now, 60 - k, "", &format!("{visitor}-{k}")))
                        .collect();
                    let req = TrackRequest {
                        visitor_id: visitor.clone(),
                        events,
                    };
                    match client.track(req).await {
                        Ok(_) => acks.send(visitor).expect("the test listens"),
                        Err(_) => break,
                    }
                }
            })
        })
        .collect();

    drop(acks);
    // Act: once enough writes are acknowledged, SIGKILL A mid-stream.
    let mut acked = Vec::new();
    tokio::time::timeout(Duration::from_secs(120), async {
        while acked.len() < KILL_AFTER {
            acked.push(acknowledged.recv().await.expect("writers run"));
        }
    })
    .await
    .expect("ingestion too slow to test");
    tokio::task::block_in_place(|| replica_a.kill());
    for w in writers {
        w.await.expect("writer");
    }
    // The writers are done: the channel holds the rest of what A acknowledged.
    while let Some(visitor) = acknowledged.recv().await {
        acked.push(visitor);
    }

    // Assert: B holds all 5 events of every visitor A acknowledged.
    let mut missing = Vec::new();
    for v in &acked {
        match get_visitor(&mut b.client, v).await {
            Ok(p) if p.events == 5 && p.counts.get("view_item") == Some(&5) => {}
            other => missing.push((v.clone(), other.map(|p| p.events).map_err(|s| s.code()))),
        }
    }
    assert!(acked.len() >= KILL_AFTER);
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged visitors lost: {:?}",
        missing.len(),
        acked.len(),
        &missing[..missing.len().min(5)]
    );
    b.stop().await;
}

// ---------------------------------------------------------------------------
// 8. Audiences agree across stores
// ---------------------------------------------------------------------------

/// The hand-worked visitors of tests/audience_api.rs (cart, checkout and
/// lead abandoners, a wishlister, a lapsed buyer, and some who are not),
/// plus generated journeys around them; times relative to `now`.
fn population(now: i64) -> Vec<(String, Vec<Event>)> {
    let mut people: Vec<(String, Vec<Event>)> = vec![
        ("cart-5d".into(), vec![at("add_to_cart", now, 5 * DAY)]),
        (
            "cart-then-bought".into(),
            vec![
                at("add_to_cart", now, 3 * DAY),
                at("purchase", now, 2 * DAY),
            ],
        ),
        ("cart-9d".into(), vec![at("add_to_cart", now, 9 * DAY)]),
        (
            "bought-then-cart".into(),
            vec![at("purchase", now, 4 * DAY), at("add_to_cart", now, DAY)],
        ),
        ("checkout-1d".into(), vec![at("begin_checkout", now, DAY)]),
        ("lead-2d".into(), vec![at("generate_lead", now, 2 * DAY)]),
        ("signup-1h".into(), vec![at("newsletter_signup", now, HOUR)]),
        (
            "lead-bought".into(),
            vec![
                at("generate_lead", now, 3 * DAY),
                at("purchase", now, 3 * DAY - 12 * HOUR),
            ],
        ),
        (
            "wish-twice".into(),
            vec![
                at("add_to_wishlist", now, 10 * DAY),
                at("add_to_wishlist", now, 2 * DAY),
            ],
        ),
        ("lapsed".into(), vec![at("purchase", now, 40 * DAY)]),
    ];
    // Journeys as (type, seconds before the journey's end).
    let journeys: [&[(&str, i64)]; 7] = [
        &[("view_item", 120), ("add_to_cart", 0)],
        &[
            ("view_item", 600),
            ("add_to_cart", 300),
            ("begin_checkout", 0),
        ],
        &[
            ("page_view", 3 * HOUR),
            ("view_item", 2 * HOUR),
            ("view_item", HOUR),
            ("search", 1800),
            ("review_read", 900),
            ("size_guide_view", 600),
            ("view_item", 300),
            ("add_to_wishlist", 0),
        ],
        &[
            ("add_to_wishlist", 12 * DAY),
            ("add_to_wishlist", 5 * DAY),
            ("add_to_wishlist", 0),
        ],
        &[("purchase", 10 * DAY), ("view_item", 0)],
        &[("newsletter_signup", 0)],
        &[
            ("view_item", 400),
            ("add_to_cart", 300),
            ("begin_checkout", 240),
            ("add_shipping_info", 180),
            ("add_payment_info", 120),
            ("purchase", 0),
        ],
    ];
    for i in 0..28_i64 {
        let journey = journeys[i as usize % journeys.len()];
        // Journeys end between 10 minutes and about 50 days ago.
        let end_ago = 600 + (i * 151_337) % (50 * DAY);
        let events = journey
            .iter()
            .map(|(kind, before_end)| at(kind, now, end_ago + before_end))
            .collect();
        people.push((format!("g{i:02}"), events));
    }
    people
}

/// Everything the audience API says about the store, as of `now`: each
/// built-in's count and members, and the funnel over the last 30 days.
async fn audience_answers(app: &TestApp, now: i64) -> Vec<(String, u64, Vec<SegmentMember>)> {
    let mut client = audiences(app);
    let builtins: Vec<String> = client
        .list_segments(ListSegmentsRequest {})
        .await
        .expect("list")
        .into_inner()
        .segments
        .into_iter()
        .filter(|s| s.builtin)
        .map(|s| s.name)
        .collect();
    let mut out = Vec::new();
    for name in builtins {
        let n = count(&mut client, &name, now).await.expect("count");
        let members = export(&mut client, export_by_name(&name, now))
            .await
            .expect("export");
        out.push((name, n, member_set(members)));
    }
    out
}

async fn funnel(app: &TestApp, now: i64) -> FunnelResponse {
    audiences(app)
        .funnel(FunnelRequest {
            from: Some(ts(now - 30 * DAY)),
            to: Some(ts(now)),
        })
        .await
        .expect("funnel")
        .into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audiences_over_redis_and_a_cluster_equal_those_over_the_embedded_store() {
    // Arrange: the same visitors in redb, in one Redis and in a cluster.
    let mut apps = vec![
        spawn_app().await,
        spawn_app_with(redis_settings(&single_url(), &unique_prefix())).await,
        spawn_app_with(redis_settings(&cluster_url(), &unique_prefix())).await,
    ];
    let now = now_secs();
    let people = population(now);
    for app in &mut apps {
        for (visitor, events) in &people {
            track(&mut app.client, visitor, events.clone()).await;
        }
    }

    // Act
    let mut answers = Vec::new();
    for app in &apps {
        answers.push((audience_answers(app, now).await, funnel(app, now).await));
    }

    // Assert: every store answers as redb does.
    let (redb_segments, redb_funnel) = &answers[0];
    for (store, (segments, funnel)) in ["one Redis", "a Redis Cluster"].iter().zip(&answers[1..]) {
        for (want, got) in redb_segments.iter().zip(segments) {
            assert_eq!(got, want, "{} on {store}", want.0);
        }
        assert_eq!(segments.len(), redb_segments.len(), "{store}");
        assert_eq!(funnel, redb_funnel, "funnel on {store}");
    }
    // The comparison means something: all six built-ins, most with members
    // (the hand-worked visitors alone put at least one in five of them),
    // and counts that match their exports.
    assert_eq!(redb_segments.len(), 6);
    let populated = redb_segments.iter().filter(|(_, n, _)| *n > 0).count();
    assert!(populated >= 5, "{redb_segments:?}");
    for (name, n, members) in redb_segments {
        assert_eq!(*n, members.len() as u64, "{name}");
    }
    assert!(redb_funnel.visitors > 0);
    for app in apps {
        app.stop().await;
    }
}

// ---------------------------------------------------------------------------
// 9. Resumable exports over Redis
// ---------------------------------------------------------------------------

async fn an_export_resumes_after_a_dropped_connection_with_its_token(url: String) {
    // Arrange: 50 visitors seen this week, 10 seen long before.
    let mut app = spawn_app_with(redis_settings(&url, &unique_prefix())).await;
    let now = now_secs();
    let messages: Vec<TrackRequest> = (0..60)
        .map(|i| TrackRequest {
            visitor_id: format!("r{i:02}"),
            events: vec![at(
                "view_item",
                now,
                if i < 50 { i * HOUR } else { 20 * DAY },
            )],
        })
        .collect();
    let summary = app
        .client
        .track_stream(tokio_stream::iter(messages))
        .await
        .expect("stream")
        .into_inner();
    assert_eq!(summary.accepted, 60);
    let req = |token: &str| ExportSegmentRequest {
        definition: "last_seen within 7d".into(),
        as_of: Some(ts(now)),
        resume_token: token.into(),
        ..Default::default()
    };
    let full = export(&mut audiences(&app), req("")).await.expect("export");
    const K: usize = 20;

    // Act: a first connection takes K members, then goes away.
    let dropped = connect(app.addr).await;
    let mut stream = AudienceServiceClient::new(dropped.clone())
        .export_segment(req(""))
        .await
        .expect("export starts")
        .into_inner();
    let mut before = Vec::new();
    while before.len() < K {
        before.push(
            stream
                .message()
                .await
                .expect("member")
                .expect("not the end"),
        );
    }
    drop(stream);
    drop(dropped);
    let fresh = connect(app.addr).await;
    let after = export(
        &mut AudienceServiceClient::new(fresh),
        req(&before[K - 1].resume_token),
    )
    .await
    .expect("resumed export");

    // Assert: the two parts are the full export, in its order, each member once.
    assert_eq!(full.len(), 50);
    let mut joined = ids(&before);
    joined.extend(ids(&after));
    assert_eq!(joined, ids(&full));
    assert_eq!(joined.iter().collect::<HashSet<_>>().len(), 50);
    let mut expected: Vec<String> = (0..50).map(|i| format!("r{i:02}")).collect();
    let mut got: Vec<String> = joined.iter().map(|s| s.to_string()).collect();
    expected.sort();
    got.sort();
    assert_eq!(got, expected);
    assert_eq!(
        member_set(before.into_iter().chain(after).collect()),
        member_set(full)
    );
    app.stop().await;
}

// ---------------------------------------------------------------------------
// 10. The segment CLI on the shared store
// ---------------------------------------------------------------------------

fn rfc3339(secs: i64) -> String {
    rung::domain::Millis::from_unix_millis(secs * 1000).to_rfc3339()
}

/// Runs the binary off the async runtime with the deployment's key prefix;
/// its standard output on success.
async fn rung_cli(prefix: &str, args: Vec<String>) -> String {
    let prefix = prefix.to_string();
    tokio::task::spawn_blocking(move || {
        let out = Command::new(env!("CARGO_BIN_EXE_rung"))
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env("RUNG_STORE__KEY_PREFIX", &prefix)
            .env_remove("RUNG_STORE__URL")
            .env_remove("RUST_LOG")
            .env_remove("RUNG_CONFIG")
            .args(&args)
            .output()
            .expect("rung runs");
        assert!(
            out.status.success(),
            "rung {args:?} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    })
    .await
    .unwrap()
}

/// A server member in the CLI's JSON Lines shape (band and stage by name,
/// last_seen in RFC 3339).
fn as_row(m: &SegmentMember) -> serde_json::Value {
    let name = |debug: String| debug.to_lowercase();
    let last_seen = m.last_seen.as_ref().map_or(String::new(), |t| {
        rung::domain::Millis::from_unix_millis(t.seconds * 1000 + i64::from(t.nanos) / 1_000_000)
            .to_rfc3339()
    });
    serde_json::json!({
        "visitor_id": m.visitor_id,
        "probability": m.probability,
        "ladder_score": m.ladder_score,
        "band": name(format!("{:?}", m.band())),
        "stage": name(format!("{:?}", m.stage())),
        "rung": m.rung,
        "last_seen": last_seen,
        "matched_path": m.matched_path,
        "matched_clause": m.matched_clause,
    })
}

async fn the_segment_cli_reads_the_shared_store_as_the_server_does(url: String) {
    // Arrange: a replica serving, visitors in it, one segment saved there.
    let prefix = unique_prefix();
    let mut app = spawn_app_with(redis_settings(&url, &prefix)).await;
    let now = now_secs();
    for (visitor, events) in population(now) {
        track(&mut app.client, &visitor, events).await;
    }
    let mut client = audiences(&app);
    client
        .put_segment(PutSegmentRequest {
            name: "week_viewers".into(),
            definition: "count(view_item) in last 7d >= 1".into(),
            ..Default::default()
        })
        .await
        .expect("saved");
    let as_of = rfc3339(now);

    for name in ["cart_abandoners", "week_viewers"] {
        // Act
        let counted = rung_cli(
            &prefix,
            [
                "segment",
                "count",
                name,
                "--store-url",
                &url,
                "--as-of",
                &as_of,
            ]
            .map(String::from)
            .to_vec(),
        )
        .await;
        let jsonl = rung_cli(
            &prefix,
            [
                "segment",
                "export",
                name,
                "--store-url",
                &url,
                "--format",
                "jsonl",
                "--as-of",
                &as_of,
            ]
            .map(String::from)
            .to_vec(),
        )
        .await;
        let server_count = count(&mut client, name, now).await.expect("count");
        let server_members = export(&mut client, export_by_name(name, now))
            .await
            .expect("export");

        // Assert
        let rows: Vec<serde_json::Value> = jsonl
            .lines()
            .map(|line| serde_json::from_str(line).expect("one JSON object per line"))
            .collect();
        let want: Vec<serde_json::Value> = server_members.iter().map(as_row).collect();
        assert!(server_count > 0, "{name} has members");
        assert_eq!(counted.trim(), server_count.to_string(), "{name}");
        assert_eq!(rows, want, "{name}");
    }
    app.stop().await;
}
