//! The load generator (`rung bench`'s engine) against a real server: every
//! scenario completes calls without errors, counts its units, and the
//! pre-encoded requests it sends are answered exactly like typed ones; and
//! `rung bench` over a Redis of the test's own, with two replicas, leaves
//! that Redis as it found it.

mod common;

use std::sync::Arc;
use std::time::Duration;

use prost::Message;
use rung::domain::Millis;
use rung::grpc::proto::{GetVisitorRequest, ScoreRequest, ScoreResponse};
use rung::load::{self, LoadOptions, RawClient, Scenario, Workload, BATCH_SIZE};

/// One scenario against the test server, with the workload it needs.
async fn run(
    app: &common::TestApp,
    scenario: Scenario,
    workload: &Arc<Workload>,
    opts: &LoadOptions,
) -> load::Report {
    load::run(
        scenario,
        std::slice::from_ref(&app.channel),
        workload.clone(),
        opts,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_scenario_runs_without_errors_and_counts_its_units() {
    let app = common::spawn_app().await;
    let workload = Workload::simulated(50, 7, Millis::now());
    let stored = workload.to_store();
    let summary = app
        .client
        .clone()
        .track_stream(tokio_stream::iter(stored))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(summary.rejected, 0, "{:?}", summary.rejections);
    let workload = Arc::new(workload);
    let opts = LoadOptions {
        connections: 1,
        in_flight: 2,
        warmup: Duration::ZERO,
        duration: Duration::from_millis(500),
        requests: None,
        server_pids: vec![std::process::id()],
        redis: None,
        // Fsync-bound scenarios may use little CPU in 500 ms on a busy
        // machine; one 10 ms tick is enough to show the figure is read.
        min_cpu_sample: Duration::from_millis(10),
        stream_messages: 2,
        rate: None,
        api_key: Default::default(),
    };
    for scenario in Scenario::ALL {
        let r = run(&app, scenario, &workload, &opts).await;
        assert!(r.errors.is_empty(), "{}: {:?}", scenario.name(), r.errors);
        assert!(r.calls > 0, "{} made no calls", scenario.name());
        let per_call = match scenario {
            Scenario::ScoreBatch => BATCH_SIZE as u64,
            Scenario::Track => 20,
            Scenario::TrackStream => 2 * 100,
            _ => 1,
        };
        assert_eq!(r.units, r.calls * per_call, "{}", scenario.name());
        assert_eq!(r.latency.len(), r.calls, "{}", scenario.name());
        assert!(
            r.server_cpu_per_call_us.is_some_and(|c| c > 0.0),
            "{}: {:?}",
            scenario.name(),
            r.server_cpu_per_call_us
        );
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_count_measures_exactly_that_many_calls() {
    let app = common::spawn_app().await;
    let workload = Arc::new(Workload::simulated(10, 3, Millis::now()));
    for (in_flight, requests) in [(1, 1), (3, 7), (4, 50)] {
        let opts = LoadOptions {
            connections: 1,
            in_flight,
            warmup: Duration::from_millis(50),
            // Would end long before the count if it applied.
            duration: Duration::ZERO,
            requests: Some(requests),
            server_pids: Vec::new(),
            redis: None,
            min_cpu_sample: load::MIN_CPU_SAMPLE,
            stream_messages: 1,
            rate: None,
            api_key: Default::default(),
        };
        for scenario in [Scenario::Health, Scenario::Score, Scenario::ScoreBatch] {
            let r = run(&app, scenario, &workload, &opts).await;
            let failed: u64 = r.errors.values().sum();
            assert_eq!(failed, 0, "{:?}", r.errors);
            assert_eq!(r.calls, requests, "{} × {in_flight}", scenario.name());
            assert_eq!(r.latency.len(), requests);
        }
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_loop_at_a_rate_measures_every_call_it_sends() {
    let app = common::spawn_app().await;
    let workload = Arc::new(Workload::simulated(10, 5, Millis::now()));
    let opts = LoadOptions {
        connections: 2,
        in_flight: 4,
        warmup: Duration::ZERO,
        duration: Duration::ZERO,
        requests: Some(40),
        server_pids: Vec::new(),
        redis: None,
        min_cpu_sample: load::MIN_CPU_SAMPLE,
        stream_messages: 1,
        // 8 callers at 400 calls/s in all: each sends every 20 ms.
        rate: Some(400.0),
        api_key: Default::default(),
    };

    let r = run(&app, Scenario::Score, &workload, &opts).await;

    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!(r.calls, 40);
    assert_eq!(r.latency.len(), 40);
    app.stop().await;
}

#[tokio::test]
async fn pre_encoded_requests_get_the_same_answers_as_typed_ones() {
    let app = common::spawn_app().await;
    let workload = Workload::simulated(5, 11, Millis::now());
    // Inline visitors are not the stored ones: the server does not know them.
    let (inline_id, events) = workload.visitor(3);
    let (inline_id, events) = (inline_id.to_string(), events.to_vec());
    let stored = workload.to_store();
    let stored_id = stored[3].visitor_id.clone();
    assert_ne!(inline_id, stored_id);
    let mut client = app.client.clone();
    client
        .track_stream(tokio_stream::iter(stored))
        .await
        .unwrap();
    let known = |id: String| {
        let mut c = app.client.clone();
        async move {
            c.get_visitor(GetVisitorRequest {
                visitor_id: id,
                max_events: 0,
            })
            .await
            .is_ok()
        }
    };
    assert!(!known(inline_id.clone()).await);
    assert!(known(stored_id.clone()).await);

    let mut raw = RawClient::new(rung::grpc::client::BearerKey::default().on(app.channel.clone()));
    let typed = |req: ScoreRequest| {
        let mut c = app.client.clone();
        async move { c.score(req).await.unwrap().into_inner() }
    };
    let inline_req = ScoreRequest {
        visitor_id: inline_id.clone(),
        events,
        ..ScoreRequest::default()
    };
    let by_id_req = ScoreRequest {
        visitor_id: stored_id.clone(),
        ..ScoreRequest::default()
    };
    for (bytes, req) in [
        (workload.score_inline(3), inline_req),
        (workload.score_by_id(3), by_id_req),
    ] {
        let got = ScoreResponse::decode(
            raw.unary("/rung.v1.IntentService/Score", bytes)
                .await
                .unwrap(),
        )
        .unwrap();
        let want = typed(req).await;
        // Scored as of "now": the two calls are a few milliseconds apart,
        // so decay may move the last digits.
        assert_eq!(got.visitor_id, want.visitor_id);
        assert!((got.probability - want.probability).abs() < 1e-6);
        assert!((got.ladder_points - want.ladder_points).abs() < 1e-6);
        assert_eq!((got.stage, got.rung), (want.stage, want.rung));
        assert!(got.ladder_points > 0.0, "20 events score some points");
    }
    // A refused call comes back as its status, not as bytes.
    let err = raw
        .unary("/rung.v1.IntentService/Score", bytes::Bytes::new())
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    app.stop().await;
}

/// The row of `scenario` in `rung bench`'s table, as trimmed cells.
fn row<'a>(stdout: &'a str, scenario: &str) -> Vec<&'a str> {
    let line = stdout
        .lines()
        .find(|l| l.starts_with(&format!("| {scenario} |")))
        .unwrap_or_else(|| panic!("no row for {scenario}:\n{stdout}"));
    line.split('|').map(str::trim).collect()
}

#[test]
fn rung_bench_over_redis_with_two_replicas_reports_both_scenarios_and_removes_its_keys() {
    // A Redis of this test's own: nothing else writes there, so "as found"
    // means empty.
    let redis = common::redis::RedisServer::start();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rung"))
        .args(["bench", "--store-url", &redis.url(), "--replicas", "2"])
        .args(["--requests", "40", "--warmup", "50ms", "--in-flight", "2"])
        .args(["--visitors", "20", "--stream-messages", "2"])
        .args(["--scenario", "score-by-id", "track-stream"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");

    // Two replicas, one connection each at least, on the shared store.
    assert!(stdout.contains("2 connection(s) x 2 in flight"), "{stdout}");
    assert!(stdout.contains("2 replicas on Redis at"), "{stdout}");
    assert!(stderr.contains("stored 20 visitors"), "{stderr}");
    let header = row(&stdout, "scenario");
    let calls = header.iter().position(|c| *c == "calls/s").unwrap();
    let redis_cpu = header
        .iter()
        .position(|c| *c == "Redis CPU µs/call")
        .unwrap_or_else(|| panic!("no Redis column:\n{stdout}"));
    for scenario in ["Score by id", "TrackStream (batches of 100)"] {
        let cells = row(&stdout, scenario);
        let rate: f64 = cells[calls].parse().unwrap();
        assert!(rate > 0.0, "{scenario} made no calls:\n{stdout}");
        // | name | ... | errors |: no call failed.
        assert_eq!(cells[cells.len() - 2], "0", "{scenario}:\n{stdout}");
        assert!(
            cells[redis_cpu].parse::<f64>().is_ok(),
            "{scenario}: Redis CPU {:?}",
            cells[redis_cpu]
        );
    }
    assert!(
        stdout.contains("| TrackStream ≥ 100,000 events/s |"),
        "{stdout}"
    );

    // The replicas wrote keys, and the bench removed every one of them.
    let removed: u64 = stderr
        .lines()
        .find_map(|l| {
            l.strip_prefix("removed the bench's ")?
                .split(' ')
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no clean-up line:\n{stderr}"));
    assert!(removed > 20, "{removed} keys removed:\n{stderr}");
    let mut conn = redis::Client::open(redis.url())
        .unwrap()
        .get_connection()
        .unwrap();
    let left: u64 = redis::cmd("DBSIZE").query(&mut conn).unwrap();
    assert_eq!(left, 0, "keys left in Redis after the bench");
}
