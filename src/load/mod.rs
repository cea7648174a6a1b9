//! The load generator behind `rung bench`: a closed loop of real gRPC calls
//! (connections × calls in flight), latency in an HDR histogram, errors by
//! status code, and the servers' CPU time per call read from
//! `/proc/<pid>/stat` (summed over the replicas), so figures stay
//! meaningful when the client is the bottleneck; with a shared store, the
//! Redis nodes' CPU per call from `INFO cpu` as well ([`redis_nodes`]).
//! Each scenario is reported next to Health/Check, the smallest unary call:
//! the transport's floor.

pub mod raw;
pub mod redis_nodes;
pub mod workload;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use tonic::transport::Channel;

use crate::grpc::client::{BearerKey, KeyedChannel};
use tonic::Code;

use crate::grpc::proto::intent_service_client::IntentServiceClient;
use crate::grpc::proto::TrackRequest;

pub use raw::RawClient;
pub use redis_nodes::RedisNodes;
pub use workload::Workload;

const SCORE: &str = "/rung.v1.IntentService/Score";

/// Visitors per ScoreBatch call.
pub const BATCH_SIZE: usize = 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// grpc.health.v1.Health/Check: the floor.
    Health,
    /// Score with a 20-event visitor sent inline.
    Score,
    /// Score by visitor id (stored state, no inline events).
    ScoreById,
    /// ScoreBatch of 100 inline visitors of 20 events.
    ScoreBatch,
    /// Track of a 20-event visitor (durable before the answer).
    Track,
    /// TrackStream: streams of messages of 100 events each.
    TrackStream,
}

impl Scenario {
    pub const ALL: [Scenario; 6] = [
        Scenario::Health,
        Scenario::Score,
        Scenario::ScoreById,
        Scenario::ScoreBatch,
        Scenario::Track,
        Scenario::TrackStream,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Scenario::Health => "Health/Check",
            Scenario::Score => "Score (20 events inline)",
            Scenario::ScoreById => "Score by id",
            Scenario::ScoreBatch => "ScoreBatch (100 × 20 events)",
            Scenario::Track => "Track (20 events)",
            Scenario::TrackStream => "TrackStream (batches of 100)",
        }
    }

    /// What one call carries, for throughput in those units.
    pub fn unit(self) -> &'static str {
        match self {
            Scenario::ScoreBatch => "visitors",
            Scenario::Track | Scenario::TrackStream => "events",
            _ => "calls",
        }
    }
}

#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub connections: usize,
    pub in_flight: usize,
    pub warmup: Duration,
    /// How long to measure, unless `requests` is set.
    pub duration: Duration,
    /// Measure exactly this many calls (after the warm-up) instead of for
    /// `duration`; failed calls count.
    pub requests: Option<u64>,
    /// The server processes (every replica), for CPU time per call: their
    /// times are added up. Empty: no server CPU figure.
    pub server_pids: Vec<u32>,
    /// The Redis behind a shared store, for its CPU time per call.
    pub redis: Option<Arc<RedisNodes>>,
    /// Below this much server CPU in a run no per-call figure is given
    /// (normally [`MIN_CPU_SAMPLE`]).
    pub min_cpu_sample: Duration,
    /// Messages per TrackStream call.
    pub stream_messages: usize,
    /// Open loop: send this many calls per second in all, on a fixed
    /// schedule, instead of each caller sending its next call as soon as the
    /// last one is answered. `None`: closed loop.
    pub rate: Option<f64>,
    /// Sent as `authorization: Bearer <key>` with every call.
    pub api_key: BearerKey,
}

#[derive(Debug, Clone)]
pub struct Report {
    pub scenario: Scenario,
    pub calls: u64,
    pub units: u64,
    pub seconds: f64,
    /// Microseconds.
    pub latency: Histogram<u64>,
    pub errors: BTreeMap<String, u64>,
    /// Server CPU (user + system, all replicas) per call, microseconds.
    pub server_cpu_per_call_us: Option<f64>,
    /// Redis CPU (user + system, all nodes) per call, microseconds; only
    /// with a shared store.
    pub redis_cpu_per_call_us: Option<f64>,
}

impl Report {
    pub fn calls_per_sec(&self) -> f64 {
        self.calls as f64 / self.seconds
    }

    pub fn units_per_sec(&self) -> f64 {
        self.units as f64 / self.seconds
    }

    pub fn quantile_us(&self, q: f64) -> u64 {
        self.latency.value_at_quantile(q)
    }

    /// Adds another run of the same scenario (a later round) to this one.
    pub fn merge(&mut self, other: Report) {
        debug_assert_eq!(self.scenario, other.scenario);
        let (n, m) = (self.calls, other.calls);
        // Weighted by calls; a round without a figure leaves it unknown.
        let weighted = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) if n + m > 0 => Some((a * n as f64 + b * m as f64) / (n + m) as f64),
            _ => None,
        };
        self.server_cpu_per_call_us =
            weighted(self.server_cpu_per_call_us, other.server_cpu_per_call_us);
        self.redis_cpu_per_call_us =
            weighted(self.redis_cpu_per_call_us, other.redis_cpu_per_call_us);
        self.calls += other.calls;
        self.units += other.units;
        self.seconds += other.seconds;
        let _ = self.latency.add(&other.latency);
        for (k, v) in other.errors {
            *self.errors.entry(k).or_default() += v;
        }
    }
}

/// /proc counts CPU time in ticks of 10 ms: below this much server CPU in a
/// run, the per-call figure would be mostly rounding, so `rung bench` gives
/// none.
pub const MIN_CPU_SAMPLE: Duration = Duration::from_millis(100);

/// Server CPU time so far (user + system), from /proc.
pub fn process_cpu(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; fields after its ')' are fixed.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 here.
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf only reads a configuration value.
    let per_sec = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let per_sec = if per_sec > 0 { per_sec as u64 } else { 100 };
    Some(Duration::from_micros(ticks * 1_000_000 / per_sec))
}

/// The servers' CPU time so far, added up; `None` without pids or when one
/// cannot be read (a replica gone).
pub fn processes_cpu(pids: &[u32]) -> Option<Duration> {
    if pids.is_empty() {
        return None;
    }
    pids.iter().map(|&p| process_cpu(p)).sum()
}

/// CPU time so far of the servers and of Redis, read at one moment.
#[derive(Debug, Clone, Copy, Default)]
struct CpuReading {
    servers: Option<Duration>,
    redis: Option<Duration>,
}

async fn read_cpu(opts: &LoadOptions) -> CpuReading {
    let redis = match &opts.redis {
        Some(nodes) => match nodes.cpu().await {
            Ok(cpu) => Some(cpu),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read Redis's CPU time");
                None
            }
        },
        None => None,
    };
    CpuReading {
        servers: processes_cpu(&opts.server_pids),
        redis,
    }
}

/// A tag unique to one [`run`] call, in this process and across processes,
/// put in the ids of the visitors that Track and TrackStream create. Without
/// it a later round, or a later `rung bench` on the same store, sends the
/// very same visitors and event ids again, and the store skips them all as
/// redeliveries: Track would measure duplicate detection, not writes.
fn run_tag() -> String {
    static PROCESS: OnceLock<String> = OnceLock::new();
    static RUNS: AtomicU64 = AtomicU64::new(0);
    let process = PROCESS.get_or_init(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        format!("{:x}{:x}", std::process::id(), nanos)
    });
    format!("{process}-{}", RUNS.fetch_add(1, Ordering::Relaxed))
}

/// Runs one scenario against `channels` (one per connection).
pub async fn run(
    scenario: Scenario,
    channels: &[Channel],
    workload: Arc<Workload>,
    opts: &LoadOptions,
) -> Report {
    let start = Instant::now();
    let measure_from = start + opts.warmup;
    let end = measure_from + opts.duration;
    let mut tasks = Vec::new();
    let cpu_before = Arc::new(tokio::sync::OnceCell::<CpuReading>::new());
    let tag: Arc<str> = run_tag().into();
    // Calls still to be measured, when counting calls instead of time.
    let budget = Arc::new(std::sync::atomic::AtomicU64::new(
        opts.requests.unwrap_or(0),
    ));
    for (c, channel) in channels.iter().enumerate() {
        for f in 0..opts.in_flight {
            let channel = channel.clone();
            let workload = workload.clone();
            let opts = opts.clone();
            let cpu_before = cpu_before.clone();
            let budget = budget.clone();
            let tag = tag.clone();
            let seed = (c * opts.in_flight + f) as u64;
            let callers = channels.len() * opts.in_flight;
            tasks.push(tokio::spawn(async move {
                let channel = opts.api_key.on(channel);
                let mut caller = Caller::new(channel, workload, tag, seed, opts.stream_messages);
                let mut hist = Histogram::<u64>::new(3).expect("3 significant figures is valid");
                let (mut calls, mut units) = (0u64, 0u64);
                let mut errors: BTreeMap<String, u64> = BTreeMap::new();
                // Open loop: this caller's share of the rate, its first call
                // offset so the callers' schedules interleave.
                let every = opts
                    .rate
                    .map(|r| Duration::from_secs_f64(callers as f64 / r.max(1e-3)));
                let mut due =
                    start + every.map_or(Duration::ZERO, |e| e * seed as u32 / callers as u32);
                let mut last_answer = start;
                loop {
                    if every.is_some() {
                        tokio::time::sleep_until(tokio::time::Instant::from_std(due)).await;
                    }
                    // A call due while this caller still waited for the last
                    // answer counts from when it was due, so the wait shows
                    // (no coordinated omission); otherwise from when it is
                    // sent, so the timer's millisecond ticks do not.
                    let t0 = match every {
                        Some(_) if last_answer > due => due,
                        _ => Instant::now(),
                    };
                    if let Some(every) = every {
                        due += every;
                    }
                    match opts.requests {
                        None if t0 >= end => break,
                        Some(_) if t0 >= measure_from => {
                            let claimed = budget.fetch_update(
                                std::sync::atomic::Ordering::Relaxed,
                                std::sync::atomic::Ordering::Relaxed,
                                |left| left.checked_sub(1),
                            );
                            if claimed.is_err() {
                                break;
                            }
                        }
                        _ => {}
                    }
                    let result = caller.call(scenario).await;
                    let t1 = Instant::now();
                    last_answer = t1;
                    if t0 < measure_from {
                        continue;
                    }
                    if !opts.server_pids.is_empty() || opts.redis.is_some() {
                        cpu_before.get_or_init(|| read_cpu(&opts)).await;
                    }
                    match result {
                        Ok(n) => {
                            calls += 1;
                            units += n;
                            let us = (t1 - t0).as_micros().max(1) as u64;
                            let _ = hist.record(us);
                        }
                        Err((code, message)) => {
                            let n = errors.entry(format!("{code:?}")).or_default();
                            if *n == 0 {
                                tracing::warn!(?code, %message, "call failed");
                            }
                            *n += 1;
                        }
                    }
                }
                (hist, calls, units, errors)
            }));
        }
    }
    let mut latency = Histogram::<u64>::new(3).expect("valid");
    let (mut calls, mut units) = (0, 0);
    let mut errors = BTreeMap::new();
    for t in tasks {
        if let Ok((h, c, u, e)) = t.await {
            let _ = latency.add(h);
            calls += c;
            units += u;
            for (k, v) in e {
                *errors.entry(k).or_default() += v;
            }
        }
    }
    let seconds = (Instant::now() - measure_from).as_secs_f64().max(1e-9);
    let before = cpu_before.get().copied().unwrap_or_default();
    let after = match before {
        CpuReading {
            servers: None,
            redis: None,
        } => CpuReading::default(),
        _ => read_cpu(opts).await,
    };
    let per_call = |spent: Duration| spent.as_secs_f64() * 1e6 / calls.max(1) as f64;
    let server_cpu_per_call_us = before
        .servers
        .zip(after.servers)
        .map(|(b, a)| a.saturating_sub(b))
        .filter(|spent| *spent >= opts.min_cpu_sample)
        .map(per_call);
    // Redis counts in microseconds: no minimum sample. A figure near 0
    // (Health) is Redis's own background work, spread over the calls.
    let redis_cpu_per_call_us = before
        .redis
        .zip(after.redis)
        .map(|(b, a)| per_call(a.saturating_sub(b)));
    Report {
        scenario,
        calls,
        units,
        seconds,
        latency,
        errors,
        server_cpu_per_call_us,
        redis_cpu_per_call_us,
    }
}

fn failure(s: tonic::Status) -> (Code, String) {
    (s.code(), s.message().to_string())
}

/// One in-flight slot: a client and its position in the workload.
struct Caller {
    intent: IntentServiceClient<KeyedChannel>,
    raw: RawClient,
    workload: Arc<Workload>,
    /// The run's [`run_tag`], in the ids of the visitors this caller writes.
    tag: Arc<str>,
    n: u64,
    seed: u64,
    stream_messages: usize,
}

impl Caller {
    fn new(
        channel: KeyedChannel,
        workload: Arc<Workload>,
        tag: Arc<str>,
        seed: u64,
        stream_messages: usize,
    ) -> Caller {
        Caller {
            intent: IntentServiceClient::new(channel.clone())
                .max_decoding_message_size(64 << 20)
                .max_encoding_message_size(64 << 20),
            raw: RawClient::new(channel),
            workload,
            tag,
            n: 0,
            seed,
            stream_messages,
        }
    }

    /// One call; how many units it carried.
    async fn call(&mut self, scenario: Scenario) -> Result<u64, (Code, String)> {
        self.n += 1;
        let i = (self.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ self.n) as usize;
        let w = &self.workload;
        match scenario {
            Scenario::Health => {
                // An empty HealthCheckRequest (service "") is zero bytes.
                self.raw
                    .unary("/grpc.health.v1.Health/Check", Bytes::new())
                    .await
                    .map_err(failure)?;
                Ok(1)
            }
            Scenario::Score => {
                self.raw
                    .unary(SCORE, w.score_inline(i))
                    .await
                    .map_err(failure)?;
                Ok(1)
            }
            Scenario::ScoreById => {
                self.raw
                    .unary(SCORE, w.score_by_id(i))
                    .await
                    .map_err(failure)?;
                Ok(1)
            }
            Scenario::ScoreBatch => {
                self.raw
                    .unary("/rung.v1.IntentService/ScoreBatch", w.score_batch(i))
                    .await
                    .map_err(failure)?;
                Ok(BATCH_SIZE as u64)
            }
            Scenario::Track => {
                let (_, events) = w.visitor(i);
                let req = TrackRequest {
                    visitor_id: format!("bench-track-{}-{}-{}", self.tag, self.seed, self.n),
                    events: events.to_vec(),
                };
                let n = req.events.len() as u64;
                self.intent.track(req).await.map_err(failure)?;
                Ok(n)
            }
            Scenario::TrackStream => {
                let messages: Vec<TrackRequest> = (0..self.stream_messages)
                    .map(|k| {
                        let id = format!("bench-stream-{}-{}-{}-{k}", self.tag, self.seed, self.n);
                        w.batch_of_100(&id, i + k)
                    })
                    .collect();
                let summary = self
                    .intent
                    .track_stream(tokio_stream::iter(messages))
                    .await
                    .map_err(failure)?
                    .into_inner();
                if let Some(r) = summary.rejections.first() {
                    return Err((Code::InvalidArgument, r.reason.clone()));
                }
                Ok(summary.accepted + summary.duplicates)
            }
        }
    }
}

/// The figures as a Markdown table, each scenario's ratio to Health's. A
/// column of Redis's CPU per call follows the servers' when any run has
/// that figure (a shared store).
pub fn table(reports: &[Report]) -> String {
    let health = reports.iter().find(|r| r.scenario == Scenario::Health);
    let with_redis = reports.iter().any(|r| r.redis_cpu_per_call_us.is_some());
    let mut out = String::from(
        "| scenario | calls/s | units/s | p50 µs | p90 µs | p99 µs | p99.9 µs | server CPU µs/call |",
    );
    if with_redis {
        out.push_str(" Redis CPU µs/call |");
    }
    out.push_str(" vs Health calls/s | vs Health p99 | errors |\n");
    let columns = if with_redis { 12 } else { 11 };
    out.push_str(&"|---".repeat(columns));
    out.push_str("|\n");
    let figure = |v: Option<f64>| v.map_or("n/a".to_string(), |c| format!("{c:.1}"));
    for r in reports {
        let mut cpu = figure(r.server_cpu_per_call_us);
        if with_redis {
            cpu = format!("{cpu} | {}", figure(r.redis_cpu_per_call_us));
        }
        let (ratio, p99) = match health {
            Some(h) if h.calls > 0 => (
                format!("{:.2}", r.calls_per_sec() / h.calls_per_sec()),
                format!(
                    "{:+} µs",
                    r.quantile_us(0.99) as i64 - h.quantile_us(0.99) as i64
                ),
            ),
            _ => ("n/a".into(), "n/a".into()),
        };
        let errors = if r.errors.is_empty() {
            "0".to_string()
        } else {
            r.errors
                .iter()
                .map(|(k, v)| format!("{k}: {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        out.push_str(&format!(
            "| {} | {:.0} | {:.0} {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            r.scenario.name(),
            r.calls_per_sec(),
            r.units_per_sec(),
            r.scenario.unit(),
            r.quantile_us(0.5),
            r.quantile_us(0.9),
            r.quantile_us(0.99),
            r.quantile_us(0.999),
            cpu,
            ratio,
            p99,
            errors
        ));
    }
    out
}

/// One of the aims set by the issues, judged on one run's reports.
#[derive(Debug, Clone, PartialEq)]
pub struct Aim {
    pub aim: &'static str,
    pub measured: String,
    pub met: bool,
}

/// Visitors of 20 events scored per second of server CPU, the ScoreBatch aim.
pub const BATCH_VISITORS_PER_CORE_SECOND: f64 = 1_000_000.0;

/// Calls in flight from which the shared store's Score-by-id latency aim
/// is judged.
pub const SHARED_STORE_CONCURRENCY: usize = 64;
/// Score by id's p99 must stay under this over a shared store, microseconds.
pub const SCORE_BY_ID_P99_US: u64 = 1_000;
/// Events per second TrackStream must store in a shared store.
pub const TRACK_STREAM_EVENTS_PER_SEC: f64 = 100_000.0;

/// How a run was set up, as far as the aims care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunShape {
    /// Connections × calls in flight on each.
    pub concurrency: usize,
    /// The servers kept visitors in a shared store (Redis), not each in
    /// its own embedded one.
    pub shared_store: bool,
}

/// The aims that apply to a run of this shape: throughput next to Health
/// under load, p99 next to Health at concurrency 1, CPU per call next to
/// Health, ScoreBatch visitors per second of server CPU; and over a shared
/// store, Score by id's p99 at concurrency 64 or more and TrackStream's
/// events per second. Aims whose scenarios did not run (or had no CPU
/// figure) are left out.
pub fn aims(reports: &[Report], shape: RunShape) -> Vec<Aim> {
    let concurrency = shape.concurrency;
    let find = |s| reports.iter().find(|r| r.scenario == s && r.calls > 0);
    let mut out = Vec::new();
    if let (Some(h), Some(s)) = (find(Scenario::Health), find(Scenario::Score)) {
        if concurrency > 1 {
            let ratio = s.calls_per_sec() / h.calls_per_sec();
            out.push(Aim {
                aim: "Score calls/s ≥ 90% of Health's",
                measured: format!("{:.0}%", ratio * 100.0),
                met: ratio >= 0.9,
            });
        } else {
            let extra = s.quantile_us(0.99) as i64 - h.quantile_us(0.99) as i64;
            out.push(Aim {
                aim: "Score p99 ≤ Health's p99 + 50 µs",
                measured: format!("{extra:+} µs"),
                met: extra <= 50,
            });
        }
        if let (Some(hc), Some(sc)) = (h.server_cpu_per_call_us, s.server_cpu_per_call_us) {
            out.push(Aim {
                aim: "Score server CPU ≤ Health's + 3 µs",
                measured: format!("{:+.1} µs", sc - hc),
                met: sc - hc <= 3.0,
            });
        }
    }
    if let Some(cpu) = find(Scenario::ScoreBatch).and_then(|b| b.server_cpu_per_call_us) {
        let per_core = if cpu > 0.0 {
            BATCH_SIZE as f64 / (cpu / 1e6)
        } else {
            f64::INFINITY
        };
        out.push(Aim {
            aim: "ScoreBatch ≥ 1,000,000 visitors/s per server core",
            measured: format!("{per_core:.0} visitors/s"),
            met: per_core >= BATCH_VISITORS_PER_CORE_SECOND,
        });
    }
    if shape.shared_store {
        if let Some(s) = find(Scenario::ScoreById) {
            if concurrency >= SHARED_STORE_CONCURRENCY {
                let p99 = s.quantile_us(0.99);
                out.push(Aim {
                    aim: "Score by id p99 < 1 ms at concurrency 64",
                    measured: format!("{p99} µs at concurrency {concurrency}"),
                    met: p99 < SCORE_BY_ID_P99_US,
                });
            }
        }
        if let Some(t) = find(Scenario::TrackStream) {
            let rate = t.units_per_sec();
            out.push(Aim {
                aim: "TrackStream ≥ 100,000 events/s",
                measured: format!("{rate:.0} events/s"),
                met: rate >= TRACK_STREAM_EVENTS_PER_SEC,
            });
        }
    }
    out
}

/// The aims as a markdown table.
pub fn aims_table(aims: &[Aim]) -> String {
    let mut out = String::from("| aim | measured | met |\n|---|---|---|\n");
    for a in aims {
        let met = if a.met { "yes" } else { "no" };
        out.push_str(&format!("| {} | {} | {met} |\n", a.aim, a.measured));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(scenario: Scenario, calls: u64, latencies_us: &[u64], cpu: Option<f64>) -> Report {
        let mut latency = Histogram::new(3).unwrap();
        for &l in latencies_us {
            latency.record(l).unwrap();
        }
        Report {
            scenario,
            calls,
            units: calls,
            seconds: 2.0,
            latency,
            errors: BTreeMap::new(),
            server_cpu_per_call_us: cpu,
            redis_cpu_per_call_us: None,
        }
    }

    fn shape(concurrency: usize, shared_store: bool) -> RunShape {
        RunShape {
            concurrency,
            shared_store,
        }
    }

    #[test]
    fn aims_under_load_compare_throughput_and_cpu_with_health() {
        // Health 1000 calls/s at 10 µs; Score 910 calls/s (91%) at 13.5 µs
        // (+3.5 µs); ScoreBatch 100 visitors in 125 µs = 800,000 per second.
        let reports = [
            report(Scenario::Health, 2000, &[100], Some(10.0)),
            report(Scenario::Score, 1820, &[100], Some(13.5)),
            report(Scenario::ScoreBatch, 10, &[100], Some(125.0)),
        ];
        let aims = aims(&reports, shape(256, false));
        assert_eq!(aims.len(), 3);
        assert_eq!((aims[0].measured.as_str(), aims[0].met), ("91%", true));
        assert_eq!((aims[1].measured.as_str(), aims[1].met), ("+3.5 µs", false));
        assert_eq!(
            (aims[2].measured.as_str(), aims[2].met),
            ("800000 visitors/s", false)
        );
    }

    #[test]
    fn at_concurrency_one_the_p99_is_compared_instead_of_throughput() {
        // 100 samples each: the p99 is the 99th smallest.
        let health: Vec<u64> = (1..=100).collect();
        let score: Vec<u64> = (1..=100).map(|v| v + 40).collect();
        let reports = [
            report(Scenario::Health, 100, &health, None),
            report(Scenario::Score, 100, &score, None),
        ];
        let aims = aims(&reports, shape(1, false));
        assert_eq!(aims.len(), 1, "no CPU figures, no CPU aim");
        assert_eq!(aims[0].aim, "Score p99 ≤ Health's p99 + 50 µs");
        assert_eq!((aims[0].measured.as_str(), aims[0].met), ("+40 µs", true));
    }

    #[test]
    fn rounds_merge_into_one_report() {
        // 100 calls at 10 µs of CPU each, then 300 at 30 µs: 25 µs per call
        // over the 400, 400 calls in 4 s.
        let mut a = report(Scenario::Score, 100, &[5, 7], Some(10.0));
        let mut b = report(Scenario::Score, 300, &[9], Some(30.0));
        b.errors.insert("Unavailable".into(), 2);
        a.errors.insert("Unavailable".into(), 1);
        a.merge(b);
        assert_eq!((a.calls, a.units), (400, 400));
        assert_eq!(a.seconds, 4.0);
        assert_eq!(a.calls_per_sec(), 100.0);
        assert_eq!(a.server_cpu_per_call_us, Some(25.0));
        assert_eq!(a.latency.len(), 3);
        assert_eq!(a.errors["Unavailable"], 3);
        // A round without a CPU figure leaves the merged figure unknown.
        a.merge(report(Scenario::Score, 10, &[1], None));
        assert_eq!(a.server_cpu_per_call_us, None);
    }

    #[test]
    fn redis_cpu_merges_weighted_by_calls_like_the_servers() {
        // 100 calls at 4 µs of Redis CPU, then 300 at 8 µs: 7 µs per call.
        let mut a = report(Scenario::ScoreById, 100, &[5], None);
        a.redis_cpu_per_call_us = Some(4.0);
        let mut b = report(Scenario::ScoreById, 300, &[5], None);
        b.redis_cpu_per_call_us = Some(8.0);
        a.merge(b);
        assert_eq!(a.redis_cpu_per_call_us, Some(7.0));
    }

    #[test]
    fn a_shared_store_adds_score_by_id_latency_and_track_stream_aims() {
        // 100 Score-by-id samples: 98 at 500 µs, 2 at 1,500 µs, so the
        // p99 (the 99th smallest) is 1,500 µs: missed. TrackStream: 250,000
        // events in 2 s is 125,000 events/s: met.
        let mut latencies = vec![500; 98];
        latencies.extend([1_500, 1_500]);
        let mut stream = report(Scenario::TrackStream, 50, &[10_000], None);
        stream.units = 250_000;
        let reports = [report(Scenario::ScoreById, 100, &latencies, None), stream];

        let aims_at_64 = aims(&reports, shape(64, true));
        assert_eq!(aims_at_64.len(), 2, "{aims_at_64:?}");
        assert_eq!(
            aims_at_64[0].aim,
            "Score by id p99 < 1 ms at concurrency 64"
        );
        assert!(!aims_at_64[0].met);
        assert_eq!(aims_at_64[0].measured, "1500 µs at concurrency 64");
        assert_eq!(
            (aims_at_64[1].measured.as_str(), aims_at_64[1].met),
            ("125000 events/s", true)
        );

        // Below 64 calls in flight the latency aim is not judged.
        let aims_at_16 = aims(&reports, shape(16, true));
        assert_eq!(aims_at_16.len(), 1);
        assert_eq!(aims_at_16[0].aim, "TrackStream ≥ 100,000 events/s");
        // Without a shared store neither is.
        assert!(aims(&reports, shape(64, false)).is_empty());
    }

    #[test]
    fn every_run_writes_visitors_of_its_own() {
        // Track and TrackStream put the tag in their visitor ids: a second
        // run (a later round) must not re-send the first run's events.
        let (a, b) = (run_tag(), run_tag());
        assert_ne!(a, b);
        let process = a.rsplit_once('-').unwrap().0;
        assert_eq!(b.rsplit_once('-').unwrap().0, process);
    }

    #[test]
    fn the_redis_column_appears_only_with_a_redis_figure() {
        let mut reports = vec![report(Scenario::Health, 100, &[10], Some(5.0))];
        let without = table(&reports);
        assert!(!without.contains("Redis CPU"), "{without}");
        reports[0].redis_cpu_per_call_us = Some(1.5);
        let with = table(&reports);
        let lines: Vec<&str> = with.lines().collect();
        assert!(lines[0].contains("| server CPU µs/call | Redis CPU µs/call |"));
        // Header, separator and row have the same number of cells.
        let cells = |l: &str| l.matches('|').count();
        assert_eq!(cells(lines[0]), cells(lines[1]));
        assert_eq!(cells(lines[0]), cells(lines[2]));
        assert!(lines[2].contains("| 5.0 | 1.5 |"), "{}", lines[2]);
    }

    #[test]
    fn scenarios_that_did_not_run_have_no_aims() {
        let reports = [report(Scenario::Health, 100, &[10], Some(5.0))];
        assert!(aims(&reports, shape(256, false)).is_empty());
    }
}
