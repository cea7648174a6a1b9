//! Audiences at scale: CountSegment of every built-in, ExportSegment
//! members per second and Funnel time, through the real server, on stores of
//! simulated visitors (100k and 1M by default).
//!
//! Run: cargo bench --bench audience [-- 100000 1000000]
//! Each figure is the median of 3 runs; the store is filled once per size.
//!
//! With `RUNG_BENCH_STORE_URL=redis://…` (several, comma-separated, for a
//! Redis Cluster) the visitors go to that Redis instead of redb, under a
//! fresh key prefix that is removed afterwards (never FLUSHALL), and the
//! Redis memory per visitor is printed: `MEMORY USAGE` of ~1000 visitors'
//! record and ring hashes plus their share of the index sets, and `INFO
//! memory`'s `used_memory` before and after the fill.

use std::sync::Arc;

/// The server in this bench runs in-process: give it the allocator the
/// release server runs with (BENCHMARKS.md, "The release build").
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use std::time::{Duration, Instant};

use rung::audience::definition::builtins;
use rung::config::Settings;
use rung::domain::NewEvent;
use rung::domain::{Event, Millis, Taxonomy, VisitorId};
use rung::grpc::proto::audience_service_client::AudienceServiceClient;
use rung::grpc::proto::{CountSegmentRequest, ExportSegmentRequest, FunnelRequest};
use rung::load::redis_nodes::PrefixCleanup;
use rung::load::RedisNodes;
use rung::simulator::{simulate, SimConfig};
use rung::startup::Application;
use rung::store::{RedbStore, RedisSettings, RedisStore, Store, StoreLimits};

const DAYS: f64 = 60.0;
const BATCH: usize = 50_000;

fn ts(m: Millis) -> prost_types::Timestamp {
    let (seconds, nanos) = m.to_parts();
    prost_types::Timestamp { seconds, nanos }
}

/// What the server keeps per visitor, as it does by default.
const LIMITS: StoreLimits = StoreLimits {
    recent_events: 200,
    dedup_window: 128,
    max_group: 1024,
};

/// Visitors whose keys are sampled for Redis's memory per visitor.
const MEMORY_SAMPLE: usize = 1000;

/// The id of the `n`th filled visitor.
fn visitor_id(n: usize) -> String {
    format!("v{n:08}")
}

/// What a fill wrote.
struct Filled {
    events: usize,
    /// Visitors with at least one event (the others were never stored).
    stored: usize,
    took: Duration,
}

/// Simulated journeys over the last 60 days, written straight to the store
/// (through [`Store::track`], as the server would).
async fn fill(store: &impl Store, t: &Taxonomy, visitors: usize, now: Millis) -> Filled {
    let start = now.saturating_add_millis(-((DAYS * 86_400_000.0) as i64));
    let began = Instant::now();
    let (mut events, mut stored) = (0, 0);
    for (b, first) in (0..visitors).step_by(BATCH).enumerate() {
        let journeys = simulate(&SimConfig {
            visitors: BATCH.min(visitors - first),
            seed: 1000 + b as u64,
            start,
            days: DAYS,
            ..SimConfig::default()
        });
        {
            let mut tickets = Vec::with_capacity(journeys.len());
            for (i, j) in journeys.iter().enumerate() {
                let new: Vec<NewEvent> = j
                    .events
                    .iter()
                    .filter(|e| e.at <= now)
                    .filter_map(|e| {
                        let kind = t.resolve(e.name)?;
                        Some(NewEvent {
                            event: Event::new(kind, e.at).with_item(&e.item_id),
                            event_id: String::new(),
                            item_id: e.item_id.clone(),
                            attributes: Vec::new(),
                        })
                    })
                    .collect();
                events += new.len();
                stored += usize::from(!new.is_empty());
                tickets.push(store.track(
                    VisitorId::parse(visitor_id(first + i), 256).unwrap(),
                    new,
                    false,
                ));
            }
            for ticket in tickets {
                ticket.await.unwrap();
            }
        }
    }
    Filled {
        events,
        stored,
        took: began.elapsed(),
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The server's settings for the store just filled.
fn server_settings(dir: &std::path::Path, redis: Option<(&str, &str)>) -> Settings {
    let mut settings = Settings {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.to_path_buf(),
        ..Settings::default()
    };
    if let Some((url, prefix)) = redis {
        settings.store.url = url.to_string();
        settings.store.key_prefix = prefix.to_string();
    }
    settings
}

async fn measure(settings: &Settings, now: Millis) {
    let app = Application::build(settings).await.unwrap();
    let addr = app.local_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until_stopped(async {
        let _ = stopped.await;
    }));
    let mut client = AudienceServiceClient::connect(format!("http://{addr}"))
        .await
        .unwrap();

    println!("| segment | members | visitors read | CountSegment (median of 3) | ExportSegment | members/s |");
    println!("|---|---:|---:|---:|---:|---:|");
    let everyone = r#"{"last_seen":{"within":"90d"}}"#;
    let mut targets: Vec<(String, String, String)> = builtins()
        .iter()
        .map(|b| (b.name.to_string(), b.name.to_string(), String::new()))
        .collect();
    targets.push(("everyone (inline)".into(), String::new(), everyone.into()));
    for (label, name, definition) in targets {
        let mut times = Vec::new();
        let mut count = 0;
        let mut scanned = 0;
        for _ in 0..3 {
            let t0 = Instant::now();
            let r = client
                .count_segment(CountSegmentRequest {
                    name: name.clone(),
                    definition: definition.clone(),
                    as_of: Some(ts(now)),
                })
                .await
                .unwrap()
                .into_inner();
            times.push(t0.elapsed().as_secs_f64());
            count = r.count;
            scanned = r.scanned;
        }
        let mut export_times = Vec::new();
        for _ in 0..3 {
            let t0 = Instant::now();
            let mut stream = client
                .export_segment(ExportSegmentRequest {
                    name: name.clone(),
                    definition: definition.clone(),
                    as_of: Some(ts(now)),
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner();
            let mut n = 0u64;
            while stream.message().await.unwrap().is_some() {
                n += 1;
            }
            assert_eq!(n, count, "export and count agree");
            export_times.push(t0.elapsed().as_secs_f64());
        }
        let export = median(export_times);
        println!(
            "| {label} | {count} | {scanned} | {:.0} ms | {:.0} ms | {:.0} |",
            median(times) * 1e3,
            export * 1e3,
            count as f64 / export
        );
    }
    let mut funnel = Vec::new();
    for _ in 0..3 {
        let t0 = Instant::now();
        client
            .funnel(FunnelRequest {
                from: Some(ts(now.saturating_add_millis(-30 * 86_400_000))),
                to: Some(ts(now)),
            })
            .await
            .unwrap();
        funnel.push(t0.elapsed().as_secs_f64());
    }
    println!(
        "\nFunnel over the last 30 days: {:.0} ms (median of 3)",
        median(funnel) * 1e3
    );
    let _ = stop.send(());
    server.await.unwrap().unwrap();
}

/// A key prefix of this run's own, for one size.
fn fresh_prefix(visitors: usize) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "rung-bench-audience-{}-{nanos}-{visitors}:",
        std::process::id()
    )
}

/// Fills redb in a temporary directory and measures on it.
fn on_redb(rt: &tokio::runtime::Runtime, visitors: usize) {
    let dir = tempfile::tempdir().unwrap();
    let now = Millis::now();
    let t = Arc::new(Taxonomy::builtin());
    let filled = {
        let store = RedbStore::open(dir.path(), t.clone(), LIMITS).unwrap();
        rt.block_on(fill(&store, &t, visitors, now))
        // The server opens the file next: this store closes it first.
    };
    let size = RedbStore::file_size(dir.path()).unwrap();
    println!(
        "\n## {visitors} visitors ({} events, filled in {:.1} s, store {:.0} MB)\n",
        filled.events,
        filled.took.as_secs_f64(),
        size as f64 / 1e6
    );
    rt.block_on(measure(&server_settings(dir.path(), None), now));
}

/// Fills the Redis at `url` under a fresh prefix, prints its memory per
/// visitor, measures, and removes the keys.
fn on_redis(rt: &tokio::runtime::Runtime, url: &str, visitors: usize) {
    let dir = tempfile::tempdir().unwrap();
    let now = Millis::now();
    let t = Arc::new(Taxonomy::builtin());
    let prefix = fresh_prefix(visitors);
    // Removes the keys however this function ends.
    let cleanup = PrefixCleanup::new(url, &prefix);
    let nodes = rt.block_on(RedisNodes::connect(url)).unwrap();
    let before = rt.block_on(nodes.used_memory()).unwrap();
    let filled = rt.block_on(async {
        let settings = RedisSettings {
            url: url.to_string(),
            key_prefix: prefix.clone(),
            timeout: Duration::from_secs(10),
        };
        let store = RedisStore::open(&settings, t.clone(), LIMITS)
            .await
            .unwrap();
        fill(&store, &t, visitors, now).await
    });
    let after = rt.block_on(nodes.used_memory()).unwrap();
    let step = (visitors / MEMORY_SAMPLE).max(1);
    let memory = rt
        .block_on(nodes.visitor_memory(
            &prefix,
            (0..visitors).step_by(step).map(visitor_id),
            filled.stored,
        ))
        .unwrap();
    assert!(
        memory.sampled > 0,
        "no sampled visitor has a record under {prefix:?}: has the store's key layout changed?"
    );
    println!(
        "\n## {visitors} visitors ({} events, {} stored visitors, filled in {:.1} s, Redis used_memory +{:.0} MB)\n",
        filled.events,
        filled.stored,
        filled.took.as_secs_f64(),
        after.saturating_sub(before) as f64 / 1e6
    );
    println!(
        "Redis memory per stored visitor: {:.0} B by MEMORY USAGE (record {:.0} B + ring {:.0} B, mean of {} visitors; \
         index {:.1} B, {} index sets of {} B in all); {:.0} B by used_memory ({} B before the fill, {} B after)\n",
        memory.per_visitor(),
        memory.record,
        memory.ring,
        memory.sampled,
        memory.index_share(),
        memory.index_sets,
        memory.index_bytes,
        after.saturating_sub(before) as f64 / filled.stored.max(1) as f64,
        before,
        after
    );
    rt.block_on(measure(
        &server_settings(dir.path(), Some((url, &prefix))),
        now,
    ));
    match cleanup.remove_now() {
        Ok(n) => println!("\n(removed {n} keys under {prefix:?})"),
        Err(e) => panic!("removing the keys under {prefix:?}: {e}"),
    }
}

fn main() {
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let sizes = if sizes.is_empty() {
        vec![100_000, 1_000_000]
    } else {
        sizes
    };
    let redis = std::env::var("RUNG_BENCH_STORE_URL")
        .ok()
        .filter(|u| !u.trim().is_empty());
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("# rung audiences benchmark ({cores} cores)");
    match &redis {
        Some(url) => println!(
            "\nstore: Redis at {} (RUNG_BENCH_STORE_URL), under a fresh key prefix per size, removed afterwards",
            rung::store::redis_store::redacted(url)
        ),
        None => println!("\nstore: redb (embedded), in a temporary directory"),
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    for visitors in sizes {
        match &redis {
            Some(url) => on_redis(&rt, url, visitors),
            None => on_redb(&rt, visitors),
        }
    }
}
