//! Tracing setup, done once by the binary.

use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Logs go to stderr, human-readable or one JSON object per line. RUST_LOG,
/// when set, overrides `level`.
pub fn init(format: LogFormat, level: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    // A second init (tests) keeps the first subscriber; that is fine.
    let _ = tracing::subscriber::set_global_default(subscriber(format, filter, std::io::stderr));
}

/// The server's subscriber writing to `writer`: also what benchmarks
/// install (with a sink), so a measured call pays for its spans and log
/// lines as a served one does.
pub fn subscriber<W>(
    format: LogFormat,
    filter: EnvFilter,
    writer: W,
) -> Box<dyn tracing::Subscriber + Send + Sync>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    match format {
        LogFormat::Human => Box::new(builder.finish()),
        LogFormat::Json => Box::new(builder.json().flatten_event(true).finish()),
    }
}
