//! Audiences at scale: CountSegment of every built-in, ExportSegment
//! members per second and Funnel time, through the real server, on stores of
//! simulated visitors (100k and 1M by default).
//!
//! Run: cargo bench --bench audience [-- 100000 1000000]
//! Each figure is the median of 3 runs; the store is filled once per size.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rung::audience::definition::builtins;
use rung::config::Settings;
use rung::domain::NewEvent;
use rung::domain::{Event, Millis, Taxonomy, VisitorId};
use rung::grpc::proto::audience_service_client::AudienceServiceClient;
use rung::grpc::proto::{CountSegmentRequest, ExportSegmentRequest, FunnelRequest};
use rung::simulator::{simulate, SimConfig};
use rung::startup::Application;
use rung::store::{RedbStore, Store, StoreLimits};

const DAYS: f64 = 60.0;
const BATCH: usize = 50_000;

fn ts(m: Millis) -> prost_types::Timestamp {
    let (seconds, nanos) = m.to_parts();
    prost_types::Timestamp { seconds, nanos }
}

/// Simulated journeys over the last 60 days, written straight to the store.
fn fill(dir: &std::path::Path, visitors: usize, now: Millis) -> (usize, Duration) {
    let t = Arc::new(Taxonomy::builtin());
    let limits = StoreLimits {
        recent_events: 200,
        dedup_window: 128,
        max_group: 1024,
    };
    let store = RedbStore::open(dir, t.clone(), limits).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let start = now.saturating_add_millis(-((DAYS * 86_400_000.0) as i64));
    let began = Instant::now();
    let mut events = 0;
    for (b, first) in (0..visitors).step_by(BATCH).enumerate() {
        let journeys = simulate(&SimConfig {
            visitors: BATCH.min(visitors - first),
            seed: 1000 + b as u64,
            start,
            days: DAYS,
            ..SimConfig::default()
        });
        rt.block_on(async {
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
                tickets.push(store.track(
                    VisitorId::parse(format!("v{:08}", first + i), 256).unwrap(),
                    new,
                    false,
                ));
            }
            for ticket in tickets {
                ticket.await.unwrap();
            }
        });
    }
    (events, began.elapsed())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

async fn measure(dir: &std::path::Path, now: Millis) {
    let settings = Settings {
        listen: "127.0.0.1:0".parse().unwrap(),
        model: std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/default.json"),
        data_dir: dir.to_path_buf(),
        ..Settings::default()
    };
    let app = Application::build(&settings).await.unwrap();
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
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("# rung audiences benchmark ({cores} cores)");
    for visitors in sizes {
        let dir = tempfile::tempdir().unwrap();
        let now = Millis::now();
        let (events, took) = fill(dir.path(), visitors, now);
        let size = RedbStore::file_size(dir.path()).unwrap();
        println!(
            "\n## {visitors} visitors ({events} events, filled in {:.1} s, store {:.0} MB)\n",
            took.as_secs_f64(),
            size as f64 / 1e6
        );
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(measure(dir.path(), now));
    }
}
