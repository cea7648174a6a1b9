//! The `rung` command: subcommands map onto library calls; `anyhow` lives
//! only here.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Parser, Subcommand};

use rung::config::{LogFormat, Settings};

/// Measured against glibc's malloc in BENCHMARKS.md.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use rung::startup::Application;

#[derive(Parser)]
#[command(
    name = "rung",
    version,
    about = "Purchase-intent scoring from micro-conversions"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gRPC service.
    Serve {
        /// A TOML settings file (see README); RUNG_* variables override it.
        #[arg(long, env = "RUNG_CONFIG")]
        config: Option<PathBuf>,
        /// Address to listen on [default: 127.0.0.1:50051].
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
        /// Log format [default: human].
        #[arg(long, value_enum)]
        log_format: Option<LogFormat>,
        /// Where the embedded store keeps its file [default: ./data].
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Load-test a server: closed loop, latency percentiles, errors by code,
    /// server CPU per call, each scenario next to Health/Check.
    Bench(BenchArgs),
    /// Train a model from an event log (or a feature table) and write the
    /// artifact, a metrics file and plots.
    Train(Box<offline::TrainArgs>),
    /// Judge an existing model on an event log, next to the ladder alone.
    Evaluate(Box<offline::EvaluateArgs>),
    /// Propose ladder points per event type from a fitted model (TOML).
    SuggestLadder(offline::SuggestArgs),
    /// Write simulated journeys as an event log (rung's CSV layout).
    Simulate(offline::SimulateArgs),
    /// Audiences: export or count a segment's members.
    Segment {
        #[command(subcommand)]
        command: segment_cli::SegmentCommand,
    },
}

#[derive(clap::Args)]
struct BenchArgs {
    /// A running server (host:port). Without it, rung starts its own on a
    /// fresh data directory and measures that.
    #[arg(long)]
    addr: Option<String>,
    /// The server's process id, for CPU per call (known when rung starts it).
    #[arg(long)]
    server_pid: Option<u32>,
    /// Scenarios to run, in order [default: all].
    #[arg(long, value_enum, num_args = 1..)]
    scenario: Vec<rung::load::Scenario>,
    /// HTTP/2 connections.
    #[arg(long, default_value_t = 1)]
    connections: usize,
    /// Calls in flight per connection.
    #[arg(long, default_value_t = 1)]
    in_flight: usize,
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    warmup: std::time::Duration,
    /// Measured time per scenario (split across the rounds).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: std::time::Duration,
    /// Run the scenarios round-robin this many times, each for a share of
    /// the duration, and add the rounds up: a neighbour's burst on a shared
    /// machine then falls on every scenario alike instead of on one.
    #[arg(long, default_value_t = 1)]
    rounds: u32,
    /// Simulated visitors in the workload (and stored for Score by id).
    #[arg(long, default_value_t = 5000)]
    visitors: usize,
    /// Messages of 100 events per TrackStream call.
    #[arg(long, default_value_t = 50)]
    stream_messages: usize,
    /// Pin the server rung starts to this CPU (taskset).
    #[arg(long)]
    server_cpu: Option<usize>,
    /// Pin this load generator to this CPU.
    #[arg(long)]
    client_cpu: Option<usize>,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve {
            config,
            listen,
            log_format,
            data_dir,
        } => {
            let mut settings = Settings::load(config.as_deref()).context("loading settings")?;
            if let Some(addr) = listen {
                settings.listen = addr;
            }
            if let Some(f) = log_format {
                settings.log_format = f;
            }
            if let Some(d) = data_dir {
                settings.data_dir = d;
            }
            rung::telemetry::init(settings.log_format, &settings.log_level);
            serve(settings)
        }
        Command::Bench(args) => {
            rung::telemetry::init(LogFormat::Human, "warn");
            bench::run(args)
        }
        Command::Train(args) => {
            rung::telemetry::init(LogFormat::Human, "warn");
            offline::train(*args)
        }
        Command::Evaluate(args) => {
            rung::telemetry::init(LogFormat::Human, "warn");
            offline::evaluate(*args)
        }
        Command::SuggestLadder(args) => offline::suggest_ladder(args),
        Command::Simulate(args) => offline::simulate(args),
        Command::Segment { command } => {
            rung::telemetry::init(LogFormat::Human, "warn");
            segment_cli::run(command)
        }
    }
}

fn serve(settings: Settings) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    runtime.block_on(async {
        let app = Application::build(&settings).await?;
        app.run_until_stopped(shutdown_signal()).await?;
        Ok(())
    })
}

/// Completes on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => tracing::info!("Ctrl-C received, shutting down"),
        _ = terminate => tracing::info!("SIGTERM received, shutting down"),
    }
}

/// Writes to a temporary file beside `path`, syncs, then renames over it, so
/// a reader sees the old file or the new one, never half of one.
pub(crate) fn write_atomically(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let tmp = dir.join(format!(
        ".{}.tmp",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("model")
    ));
    let mut f =
        std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    f.write_all(text.as_bytes())?;
    f.write_all(b"\n")?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming onto {}", path.display()))?;
    Ok(())
}

mod offline;
mod segment_cli;

mod bench {
    //! `rung bench`: sets up the server and the workload, runs the scenarios
    //! in one go and prints the table.

    use std::io::{BufRead, BufReader};
    use std::process::{Child, Command, Stdio};
    use std::sync::Arc;

    use anyhow::{bail, Context};
    use rung::domain::Millis;
    use rung::grpc::proto::intent_service_client::IntentServiceClient;
    use rung::load::{self, LoadOptions, Scenario, Workload};
    use tonic::transport::Channel;

    use super::BenchArgs;

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
            let mut workload = Workload::simulated(args.visitors.max(1), 42, Millis::now());
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
                server_pid: pid,
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
            println!(
                "{} connection(s) x {} in flight; per scenario {:?} warm-up and {:?} measured, \
                 in {rounds} round(s); {}\n",
                opts.connections, opts.in_flight, args.warmup, args.duration, machine
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
}
