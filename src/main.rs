//! The `rung` command: subcommands map onto library calls; `anyhow` lives
//! only here.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Parser, Subcommand};

use rung::config::{LogFormat, Settings};
use rung::startup::Application;

/// Measured against glibc's malloc in BENCHMARKS.md.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
        /// Where the embedded store keeps its file, from the working directory
        /// [default: ./data].
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// A model artifact to serve, or `built-in` [default: the model built
        /// into the binary; setting model].
        #[arg(long)]
        model: Option<PathBuf>,
        /// A shared Redis (redis://… or rediss://…; several, comma-separated,
        /// for a Redis Cluster) instead of the embedded store [setting
        /// store.url].
        #[arg(long)]
        store_url: Option<String>,
        /// Where GET /metrics answers; empty turns it off [default:
        /// 127.0.0.1:9464; setting metrics_listen].
        #[arg(long)]
        metrics_listen: Option<String>,
    },
    /// API keys: make a new one.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Load-test a server: closed loop, latency percentiles, errors by code,
    /// server CPU per call, each scenario next to Health/Check.
    Bench(bench::BenchArgs),
    /// Train a model from an event log (or a feature table) and write the
    /// artifact, a metrics file and plots.
    Train(Box<offline::TrainArgs>),
    /// Write the point-in-time training set rung train would fit, as CSV:
    /// one row per example with its part, label, ladder score and features.
    Examples(Box<offline::ExamplesArgs>),
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

#[derive(Subcommand)]
enum KeysCommand {
    /// Print a fresh random key (once: only its SHA-256 is kept) and the
    /// `[[auth.keys]]` entry to paste into the settings file.
    New {
        /// Who will hold the key; logged with each call it makes.
        #[arg(long)]
        name: String,
        /// Comma-separated: score, ingest, profiles, audiences, admin.
        #[arg(long, value_delimiter = ',', required = true, value_parser = parse_role)]
        roles: Vec<rung::auth::Role>,
    },
}

fn parse_role(text: &str) -> Result<rung::auth::Role, String> {
    rung::auth::Role::parse(text).ok_or_else(|| {
        format!("{text:?} is not a role: score, ingest, profiles, audiences or admin")
    })
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve {
            config,
            listen,
            log_format,
            data_dir,
            model,
            store_url,
            metrics_listen,
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
            if model.is_some() {
                settings.model = model;
            }
            if let Some(url) = store_url {
                settings.store.url = url;
            }
            if let Some(addr) = metrics_listen {
                settings.metrics_listen = addr;
            }
            settings
                .validate()
                .context("checking the settings with the command line's flags")?;
            rung::telemetry::init(settings.log_format, &settings.log_level);
            serve(settings)
        }
        Command::Keys {
            command: KeysCommand::New { name, roles },
        } => {
            let (key, entry) = rung::auth::new_key(&name, &roles);
            let mut table = toml::Table::new();
            table.insert(
                "keys".into(),
                toml::Value::Array(vec![toml::Value::try_from(&entry)?]),
            );
            let mut auth = toml::Table::new();
            auth.insert("auth".into(), toml::Value::Table(table));
            println!("key: {key}");
            println!("(shown once; give it to {name:?}, who sends `authorization: Bearer <key>`)");
            println!();
            println!("# paste into the settings file:");
            print!("{}", toml::to_string(&auth)?);
            Ok(())
        }
        Command::Bench(args) => {
            rung::telemetry::init(LogFormat::Human, "warn");
            bench::run(args)
        }
        Command::Train(args) => {
            rung::telemetry::init(LogFormat::Human, "warn");
            offline::train(*args)
        }
        Command::Examples(args) => {
            rung::telemetry::init(LogFormat::Human, "warn");
            offline::examples(*args)
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

/// [`rung::training::files::write_atomically`], the error naming the file.
pub(crate) fn write_atomically(path: &Path, text: &str) -> anyhow::Result<()> {
    rung::training::files::write_atomically(path, text)
        .with_context(|| format!("writing {}", path.display()))
}

/// [`rung::training::files::write_atomically_with`], the error naming the file.
pub(crate) fn write_atomically_with(
    path: &Path,
    write: impl FnOnce(&mut std::io::BufWriter<std::fs::File>) -> std::io::Result<()>,
) -> anyhow::Result<()> {
    rung::training::files::write_atomically_with(path, write)
        .with_context(|| format!("writing {}", path.display()))
}

mod bench;
mod offline;
mod segment_cli;
