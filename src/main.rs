//! The `rung` command: subcommands map onto library calls; `anyhow` lives
//! only here.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Parser, Subcommand};

use rung::config::{LogFormat, Settings};
use rung::domain::Millis;
use rung::startup::{load_taxonomy, Application};
use rung::training::bootstrap::{bootstrap, BootstrapOptions};

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
    /// Train the bootstrap model on simulated journeys and write it as an
    /// artifact (by default over models/default.json).
    BootstrapModel {
        #[arg(long, default_value = rung::config::DEFAULT_MODEL_PATH)]
        out: PathBuf,
        /// Simulated visitors.
        #[arg(long, default_value_t = 40_000)]
        visitors: usize,
        #[arg(long, default_value_t = 7)]
        seed: u64,
        /// A taxonomy TOML file [default: the built-in one].
        #[arg(long)]
        taxonomy: Option<PathBuf>,
    },
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
        Command::BootstrapModel {
            out,
            visitors,
            seed,
            taxonomy,
        } => {
            rung::telemetry::init(LogFormat::Human, "info");
            bootstrap_model(&out, visitors, seed, taxonomy.as_deref())
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

fn bootstrap_model(
    out: &Path,
    visitors: usize,
    seed: u64,
    taxonomy: Option<&Path>,
) -> anyhow::Result<()> {
    let taxonomy = load_taxonomy(taxonomy)?;
    let mut opts = BootstrapOptions::default();
    opts.sim.visitors = visitors;
    opts.sim.seed = seed;
    let report = bootstrap(&taxonomy, &opts, Millis::now())?;
    let a = &report.artifact;
    let f = &report.funnel;
    println!(
        "simulated {} visitors, {} sessions: {:.1}% add to cart, {:.2}% purchase (new {:.2}%, returning {:.2}%)",
        visitors,
        f.sessions,
        100.0 * f.add_to_cart_rate,
        100.0 * f.purchase_rate,
        100.0 * f.new_visitor_purchase_rate,
        100.0 * f.returning_visitor_purchase_rate
    );
    let v = &a.metrics.validation;
    let l = &a.metrics.ladder_baseline;
    println!(
        "trained on {} examples ({} positive); validation: {} examples, base rate {:.3}",
        a.training.examples, a.training.positives, v.examples, v.base_rate
    );
    println!(
        "  model:  ROC AUC {:.4}  log loss {:.4}  Brier {:.4}",
        v.roc_auc.unwrap_or(f64::NAN),
        v.log_loss.unwrap_or(f64::NAN),
        v.brier.unwrap_or(f64::NAN)
    );
    println!("  ladder: ROC AUC {:.4}", l.roc_auc.unwrap_or(f64::NAN));
    write_atomically(out, &serde_json::to_string_pretty(a)?)?;
    println!("wrote {} (version {})", out.display(), a.version);
    Ok(())
}

/// Writes to a temporary file beside `path`, syncs, then renames over it, so
/// a reader sees the old file or the new one, never half of one.
fn write_atomically(path: &Path, text: &str) -> anyhow::Result<()> {
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
