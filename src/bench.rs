//! `rung bench`: sets up the server and the workload, runs the scenarios
//! round-robin for the given rounds and prints the table and the aims.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

use anyhow::{bail, Context};
use rung::domain::Millis;
use rung::grpc::proto::intent_service_client::IntentServiceClient;
use rung::load::{self, LoadOptions, Scenario, Workload};
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

fn spawn_server(cpu: Option<usize>) -> anyhow::Result<(Server, String, u32)> {
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
    let mut child = cmd
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--log-format",
            "json",
            "--data-dir",
        ])
        .arg(data.path())
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting the server")?;
    let pid = child.id();
    let stderr = child.stderr.take().context("server stderr")?;
    let mut lines = BufReader::new(stderr).lines();
    let addr = loop {
        let Some(line) = lines.next() else {
            bail!("the server exited before serving");
        };
        let line = line?;
        if line.contains("\"serving\"") {
            let v: serde_json::Value = serde_json::from_str(&line)?;
            break v["addr"]
                .as_str()
                .context("serving line without addr")?
                .to_string();
        }
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

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    // Read before pinning, which narrows what this process sees.
    let machine = machine();
    if let Some(cpu) = args.client_cpu {
        pin_self(cpu)?;
    }
    let (_server, addr, pid) = match &args.addr {
        Some(a) => (None, a.clone(), args.server_pid),
        None => {
            let (s, a, p) = spawn_server(args.server_cpu)?;
            (Some(s), a, Some(p))
        }
    };
    let threads = if args.client_cpu.is_some() { 1 } else { 2 };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let mut channels = Vec::new();
        for _ in 0..args.connections.max(1) {
            channels.push(
                Channel::from_shared(format!("http://{addr}"))?
                    .connect()
                    .await
                    .with_context(|| format!("connecting to {addr}"))?,
            );
        }
        let workload = Workload::simulated(args.visitors.max(1), 42, Millis::now());
        let scenarios = if args.scenario.is_empty() {
            Scenario::ALL.to_vec()
        } else {
            args.scenario.clone()
        };
        if scenarios.contains(&Scenario::ScoreById) {
            let mut client = IntentServiceClient::new(channels[0].clone());
            let stored = workload.to_store();
            let n = stored.len();
            let summary = client
                .track_stream(tokio_stream::iter(stored))
                .await
                .context("storing the workload's visitors")?
                .into_inner();
            eprintln!(
                "stored {n} visitors ({} events) for Score by id",
                summary.accepted + summary.duplicates
            );
        }
        let workload = Arc::new(workload);
        let rounds = args.rounds.max(1);
        let opts = LoadOptions {
            connections: channels.len(),
            in_flight: args.in_flight.max(1),
            warmup: args.warmup / rounds,
            duration: args.duration / rounds,
            requests: args.requests.map(|n| n.div_ceil(u64::from(rounds)).max(1)),
            server_pid: pid,
            min_cpu_sample: load::MIN_CPU_SAMPLE,
            stream_messages: args.stream_messages.max(1),
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
             measured, in {rounds} round(s); {}\n",
            opts.connections, opts.in_flight, args.warmup, machine
        );
        print!("{}", load::table(&reports));
        let aims = load::aims(&reports, opts.connections * opts.in_flight);
        if !aims.is_empty() {
            print!("\nAims (issue 6):\n\n{}", load::aims_table(&aims));
        }
        anyhow::Ok(())
    })
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
    /// A running server (host:port). Without it, rung starts its own on a
    /// fresh data directory and measures that.
    #[arg(long)]
    pub addr: Option<String>,
    /// The server's process id, for CPU per call (known when rung starts it).
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Scenarios to run, in order [default: all].
    #[arg(long, value_enum, num_args = 1..)]
    pub scenario: Vec<rung::load::Scenario>,
    /// HTTP/2 connections.
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
    /// Pin the server rung starts to this CPU (taskset).
    #[arg(long)]
    pub server_cpu: Option<usize>,
    /// Pin this load generator to this CPU.
    #[arg(long)]
    pub client_cpu: Option<usize>,
}
