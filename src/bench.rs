//! `rung bench`: sets up the servers (one, or several replicas on a shared
//! Redis) and the workload, runs the scenarios round-robin for the given
//! rounds, prints the table and the aims, and leaves the Redis it used as
//! it found it.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

use anyhow::{bail, Context};
use rung::domain::Millis;
use rung::grpc::client::BearerKey;
use rung::grpc::proto::intent_service_client::IntentServiceClient;
use rung::grpc::proto::GetVisitorRequest;
use rung::load::redis_nodes::PrefixCleanup;
use rung::load::{self, LoadOptions, RedisNodes, RunShape, Scenario, Workload};
use rung::store::redis_store::redacted;
use tonic::transport::Channel;

struct Server {
    child: Child,
    _data: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The shared store the servers use, as the bench knows it.
struct SharedStore {
    /// `store.url`, as given (it may hold a password: show it redacted).
    url: String,
    /// The key prefix of the replicas rung started: their keys are removed
    /// at the end. `None` for servers started by someone else.
    prefix: Option<String>,
    nodes: Arc<RedisNodes>,
}

/// Lines of the server's log kept to explain a start that failed.
const LOG_TAIL: usize = 20;

fn spawn_server(
    cpu: Option<usize>,
    store: Option<&SharedStore>,
) -> anyhow::Result<(Server, String, u32)> {
    let data = tempfile::tempdir()?;
    let exe = std::env::current_exe()?;
    let mut cmd = match cpu {
        Some(c) => {
            let mut t = Command::new("taskset");
            t.arg("-c").arg(c.to_string()).arg(exe);
            t
        }
        None => Command::new(exe),
    };
    cmd.args([
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--log-format",
        "json",
        // Replicas side by side: each its own metrics port.
        "--metrics-listen",
        "127.0.0.1:0",
        "--data-dir",
    ])
    .arg(data.path());
    if let Some(store) = store {
        cmd.arg("--store-url").arg(&store.url);
        if let Some(prefix) = &store.prefix {
            cmd.env("RUNG_STORE__KEY_PREFIX", prefix);
        }
    }
    let mut child = cmd
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting the server")?;
    let pid = child.id();
    let stderr = child.stderr.take().context("server stderr")?;
    let mut lines = BufReader::new(stderr).lines();
    let mut said = std::collections::VecDeque::new();
    let addr = loop {
        let Some(line) = lines.next() else {
            let _ = child.wait();
            let said: Vec<String> = said.into();
            bail!(
                "the server exited before serving; its last words:\n{}",
                said.join("\n")
            );
        };
        let line = line?;
        if line.contains("\"serving\"") {
            let v: serde_json::Value = serde_json::from_str(&line)?;
            break v["addr"]
                .as_str()
                .context("serving line without addr")?
                .to_string();
        }
        if said.len() == LOG_TAIL {
            said.pop_front();
        }
        said.push_back(line);
    };
    // Keep draining the server's log so it never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Ok((Server { child, _data: data }, addr, pid))
}

fn pin_self(cpu: usize) -> anyhow::Result<()> {
    // SAFETY: a zeroed cpu_set_t is the empty set; CPU_SET and
    // sched_setaffinity only touch the set we own.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            bail!("cannot pin the load generator to CPU {cpu}");
        }
    }
    Ok(())
}

/// A key prefix no other run shares: the replicas write under it and the
/// bench removes it at the end. It has no `{` or `}` (the store refuses
/// them) and no glob characters.
fn fresh_prefix() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("rung-bench-{}-{nanos}:", std::process::id())
}

/// The CPU each replica is pinned to: none, one for all, or one each.
fn replica_cpus(cpus: &[usize], replicas: usize) -> anyhow::Result<Vec<Option<usize>>> {
    match cpus {
        [] => Ok(vec![None; replicas]),
        [one] => Ok(vec![Some(*one); replicas]),
        many if many.len() == replicas => Ok(many.iter().copied().map(Some).collect()),
        many => bail!(
            "--server-cpu lists {} CPUs for {replicas} replica(s): give one for all, or one per replica",
            many.len()
        ),
    }
}

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    // Read before pinning, which narrows what this process sees.
    let machine = machine();
    let replicas = args.replicas.max(1);
    if replicas > 1 && args.store_url.is_none() {
        bail!(
            "--replicas {replicas} needs --store-url: replicas with embedded stores would each \
             keep their own visitors"
        );
    }
    let cpus = replica_cpus(&args.server_cpu, replicas)?;
    if let Some(cpu) = args.client_cpu {
        pin_self(cpu)?;
    }
    let threads = if args.client_cpu.is_some() { 1 } else { 2 };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()?;
    // Redis first: an unreachable one fails here, before any server starts.
    let store = match &args.store_url {
        Some(url) => Some(SharedStore {
            url: url.clone(),
            prefix: args.addr.is_none().then(fresh_prefix),
            nodes: Arc::new(
                rt.block_on(RedisNodes::connect(url))
                    .context("connecting to --store-url")?,
            ),
        }),
        None => None,
    };
    // Declared before the servers, so that even on a panic the servers are
    // stopped (dropped) first and no replica writes after the clean-up.
    let cleanup = store.as_ref().and_then(|s| {
        let prefix = s.prefix.as_deref()?;
        Some((
            PrefixCleanup::new(&s.url, prefix),
            prefix.to_string(),
            s.url.clone(),
        ))
    });
    let mut servers = Vec::new();
    let result = (|| {
        let (addrs, pids) = match &args.addr {
            Some(a) => (
                a.split(',')
                    .map(str::trim)
                    .filter(|a| !a.is_empty())
                    .map(String::from)
                    .collect(),
                args.server_pid.clone(),
            ),
            None => {
                let (mut addrs, mut pids) = (Vec::new(), Vec::new());
                for cpu in &cpus {
                    let (s, a, p) = spawn_server(*cpu, store.as_ref())?;
                    servers.push(s);
                    addrs.push(a);
                    pids.push(p);
                }
                (addrs, pids)
            }
        };
        rt.block_on(measure(&args, &machine, addrs, pids, store.as_ref()))
    })();
    // Stop the replicas before removing their keys, so none writes after.
    drop(servers);
    if let Some((cleanup, prefix, url)) = cleanup {
        let removed = cleanup.remove_now().with_context(|| {
            format!(
                "removing the bench's keys (prefix {prefix:?}) from {}",
                redacted(&url)
            )
        })?;
        eprintln!("removed the bench's {removed} keys (prefix {prefix:?}) from Redis");
    }
    result
}

async fn measure(
    args: &BenchArgs,
    machine: &str,
    addrs: Vec<String>,
    pids: Vec<u32>,
    store: Option<&SharedStore>,
) -> anyhow::Result<()> {
    if addrs.is_empty() {
        bail!("--addr names no server");
    }
    // Every server gets at least one connection; connection k goes to
    // server k mod n (round-robin, as a load balancer would spread them).
    let connections = args.connections.max(addrs.len());
    if connections > args.connections {
        eprintln!(
            "{connections} connections, one at least for each of the {} servers",
            addrs.len()
        );
    }
    let mut channels = Vec::new();
    for k in 0..connections {
        let addr = &addrs[k % addrs.len()];
        channels.push(
            Channel::from_shared(format!("http://{addr}"))?
                .connect()
                .await
                .with_context(|| format!("connecting to {addr}"))?,
        );
    }
    let api_key = BearerKey::new(args.api_key.as_deref())?;
    let workload = Workload::simulated(args.visitors.max(1), 42, Millis::now());
    let scenarios = if args.scenario.is_empty() {
        Scenario::ALL.to_vec()
    } else {
        args.scenario.clone()
    };
    if scenarios.contains(&Scenario::ScoreById) || args.h2load_bodies.is_some() {
        // Through one server: with a shared store every replica reads what
        // any replica stored, once it has answered.
        let mut client = IntentServiceClient::new(api_key.on(channels[0].clone()))
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(64 << 20);
        let stored = workload.to_store();
        let n = stored.len();
        let last = stored.last().map(|m| m.visitor_id.clone());
        let summary = client
            .track_stream(tokio_stream::iter(stored))
            .await
            .context("storing the workload's visitors")?
            .into_inner();
        if let Some(r) = summary.rejections.first() {
            bail!(
                "storing the workload's visitors: {} message(s) refused, the first: {}",
                summary.rejected,
                r.reason
            );
        }
        eprintln!(
            "stored {n} visitors ({} events) for Score by id",
            summary.accepted + summary.duplicates
        );
        // A Score by id of a visitor a server does not know still answers
        // (with no points), so no error would show a replica that cannot
        // see them: ask each server for the last one stored.
        if let Some(last) = last {
            for (k, addr) in addrs.iter().enumerate() {
                let mut client = IntentServiceClient::new(api_key.on(channels[k].clone()));
                let found = client
                    .get_visitor(GetVisitorRequest {
                        visitor_id: last.clone(),
                        max_events: 0,
                    })
                    .await;
                match found {
                    Ok(_) => {}
                    Err(s) if s.code() == tonic::Code::NotFound => bail!(
                        "the server at {addr} does not know the visitors stored through {}: \
                         do the servers share one store?",
                        addrs[0]
                    ),
                    Err(s) => bail!("asking {addr} for a stored visitor: {s}"),
                }
            }
        }
    }
    if let Some(dir) = &args.h2load_bodies {
        return write_h2load_bodies(dir, &workload);
    }
    let workload = Arc::new(workload);
    let rounds = args.rounds.max(1);
    let opts = LoadOptions {
        connections: channels.len(),
        in_flight: args.in_flight.max(1),
        warmup: args.warmup / rounds,
        duration: args.duration / rounds,
        requests: args.requests.map(|n| n.div_ceil(u64::from(rounds)).max(1)),
        server_pids: pids,
        redis: store.map(|s| s.nodes.clone()),
        min_cpu_sample: load::MIN_CPU_SAMPLE,
        stream_messages: args.stream_messages.max(1),
        rate: args.rate,
        api_key: api_key.clone(),
    };
    let mut reports: Vec<load::Report> = Vec::new();
    for round in 0..rounds {
        for (k, &s) in scenarios.iter().enumerate() {
            eprintln!("round {}/{rounds}: {} ...", round + 1, s.name());
            let r = load::run(s, &channels, workload.clone(), &opts).await;
            match reports.get_mut(k) {
                Some(total) => total.merge(r),
                None => reports.push(r),
            }
        }
    }
    let measured = match args.requests {
        Some(n) => format!("{n} calls"),
        None => format!("{:?}", args.duration),
    };
    println!(
        "{} connection(s) x {} in flight; per scenario {:?} warm-up and {measured} \
         measured, in {rounds} round(s); {}",
        opts.connections, opts.in_flight, args.warmup, machine
    );
    let servers = match addrs.len() {
        1 => "1 server".to_string(),
        n => format!("{n} replicas"),
    };
    match store {
        Some(s) => println!(
            "{servers} on Redis at {} ({} node(s)); CPU per call: rung's summed over {}, Redis's over its nodes\n",
            redacted(&s.url),
            s.nodes.len(),
            if addrs.len() == 1 { "the server" } else { "the replicas" },
        ),
        None => println!("{servers}, embedded store (redb)\n"),
    }
    print!("{}", load::table(&reports));
    let aims = load::aims(
        &reports,
        RunShape {
            concurrency: opts.connections * opts.in_flight,
            shared_store: store.is_some(),
        },
    );
    if !aims.is_empty() {
        print!("\nAims:\n\n{}", load::aims_table(&aims));
    }
    Ok(())
}

/// Writes one request body per scenario an independent HTTP/2 load tool
/// (h2load) can send: gRPC frames of the same requests `rung bench` sends.
fn write_h2load_bodies(dir: &std::path::Path, workload: &Workload) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let bodies = [
        ("health.bin", bytes::Bytes::new()),
        ("score.bin", workload.score_inline(0)),
        ("score-by-id.bin", workload.score_by_id(0)),
        ("score-batch.bin", workload.score_batch(0)),
    ];
    for (name, message) in bodies {
        let mut frame = Vec::with_capacity(5 + message.len());
        frame.push(0); // not compressed
        frame.extend_from_slice(&(message.len() as u32).to_be_bytes());
        frame.extend_from_slice(&message);
        let path = dir.join(name);
        std::fs::write(&path, frame).with_context(|| format!("writing {}", path.display()))?;
    }
    eprintln!("wrote the request bodies to {}", dir.display());
    Ok(())
}

fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    format!("{cpus} CPUs ({model})")
}

#[derive(clap::Args)]
pub struct BenchArgs {
    /// Running servers (host:port; several, comma-separated, for replicas
    /// behind a load balancer: connections are spread over them
    /// round-robin). Without it, rung starts its own and measures those.
    #[arg(long)]
    pub addr: Option<String>,
    /// The servers' process ids (comma-separated), for CPU per call, which
    /// is their sum (known when rung starts them).
    #[arg(long, value_delimiter = ',')]
    pub server_pid: Vec<u32>,
    /// A shared Redis (redis://…; several, comma-separated, for a Redis
    /// Cluster). The servers rung starts use it, under a fresh key prefix
    /// whose keys are removed at the end; with --addr, the servers there
    /// are taken to use it. Either way its CPU per call is reported.
    #[arg(long)]
    pub store_url: Option<String>,
    /// `rung serve` replicas to start on --store-url.
    #[arg(long, default_value_t = 1, conflicts_with = "addr")]
    pub replicas: usize,
    /// Scenarios to run, in order [default: all].
    #[arg(long, value_enum, num_args = 1..)]
    pub scenario: Vec<rung::load::Scenario>,
    /// HTTP/2 connections (at least one per server).
    #[arg(long, default_value_t = 1)]
    pub connections: usize,
    /// Calls in flight per connection.
    #[arg(long, default_value_t = 1)]
    pub in_flight: usize,
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub warmup: std::time::Duration,
    /// Measured time per scenario (split across the rounds).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub duration: std::time::Duration,
    /// Measure this many calls per scenario instead of a duration (split
    /// across the rounds).
    #[arg(long)]
    pub requests: Option<u64>,
    /// Run the scenarios round-robin this many times, each for a share of
    /// the duration, and add the rounds up: a neighbour's burst on a shared
    /// machine then falls on every scenario alike instead of on one.
    #[arg(long, default_value_t = 1)]
    pub rounds: u32,
    /// Simulated visitors in the workload (and stored for Score by id).
    #[arg(long, default_value_t = 5000)]
    pub visitors: usize,
    /// Messages of 100 events per TrackStream call.
    #[arg(long, default_value_t = 50)]
    pub stream_messages: usize,
    /// Pin the servers rung starts to this CPU (taskset): one for all, or
    /// one per replica, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub server_cpu: Vec<usize>,
    /// Open loop: send this many calls per second in all (spread over the
    /// connections × in-flight callers, each on a fixed schedule) instead
    /// of a closed loop; latency counts from when each call was due.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Pin this load generator to this CPU.
    #[arg(long)]
    pub client_cpu: Option<usize>,
    /// The API key to send (needs the roles of the scenarios run: score,
    /// ingest, profiles); never logged.
    #[arg(long, env = "RUNG_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Store the Score-by-id visitors on the server, write one gRPC request
    /// body per scenario (health.bin, score.bin, score-by-id.bin,
    /// score-batch.bin) into this folder for an independent load tool such
    /// as h2load, and stop without measuring.
    #[arg(long, value_name = "DIR")]
    pub h2load_bodies: Option<std::path::PathBuf>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_cpus_are_one_for_all_or_one_per_replica() {
        assert_eq!(replica_cpus(&[], 2).unwrap(), vec![None, None]);
        assert_eq!(replica_cpus(&[0], 2).unwrap(), vec![Some(0), Some(0)]);
        assert_eq!(replica_cpus(&[0, 1], 2).unwrap(), vec![Some(0), Some(1)]);
        let err = replica_cpus(&[0, 1, 2], 2).unwrap_err().to_string();
        assert!(err.contains("3 CPUs for 2 replica(s)"), "{err}");
    }

    #[test]
    fn a_fresh_prefix_is_a_valid_key_prefix_that_matches_only_itself() {
        let p = fresh_prefix();
        assert!(p.starts_with(&format!("rung-bench-{}-", std::process::id())));
        assert!(p.ends_with(':'));
        assert!(!p.contains(['{', '}', '*', '?', '[', ']', '\\']), "{p}");
    }
}
