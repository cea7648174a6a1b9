//! `rung segment ...`: audiences for upload into ad platforms and email
//! tools, from a running server (gRPC, resuming after a dropped connection),
//! straight from a stopped server's data directory, or straight from the
//! shared Redis running servers use.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Context};
use serde::Serialize;

use rung::config::Settings;
use std::sync::Arc;

use rung::domain::Millis;
use rung::engine::audience::ExportQuery;
use rung::engine::Engine;
use rung::grpc::proto::audience_service_client::AudienceServiceClient;
use rung::grpc::proto::{self, CountSegmentRequest, ExportSegmentRequest};

#[derive(clap::Subcommand)]
pub enum SegmentCommand {
    /// Write a segment's members as CSV or JSON lines.
    Export(ExportArgs),
    /// Count a segment's members.
    Count(SourceArgs),
}

#[derive(clap::Args)]
pub struct SourceArgs {
    /// A built-in or saved segment's name.
    pub name: String,
    /// A running server: 127.0.0.1:50051 or http://127.0.0.1:50051.
    #[arg(long, conflicts_with_all = ["data_dir", "store_url"])]
    pub addr: Option<String>,
    /// A stopped server's data directory, read directly (no server needed).
    #[arg(long, conflicts_with = "store_url")]
    pub data_dir: Option<PathBuf>,
    /// The shared Redis the servers use (redis://…; comma-separated for a
    /// cluster), read directly while they run; the key prefix comes from
    /// --config or RUNG_STORE__KEY_PREFIX.
    #[arg(long)]
    pub store_url: Option<String>,
    /// The server's settings file, for the taxonomy, model and retention it
    /// runs with (with --data-dir or --store-url).
    #[arg(long, env = "RUNG_CONFIG")]
    pub config: Option<PathBuf>,
    /// Evaluate as of this moment (RFC 3339) [default: now].
    #[arg(long)]
    pub as_of: Option<String>,
    /// With --addr: the API key to send (a key with the audiences role).
    #[arg(long, env = "RUNG_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
}

/// An audience client for the server at `addr`, sending the API key.
async fn audience_client(
    addr: &str,
    key: Option<&str>,
) -> anyhow::Result<AudienceServiceClient<rung::grpc::client::KeyedChannel>> {
    let key = rung::grpc::client::BearerKey::new(key)?;
    let channel = tonic::transport::Channel::from_shared(addr.to_string())?
        .connect()
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    Ok(AudienceServiceClient::new(key.on(channel)))
}

#[derive(clap::Args)]
pub struct ExportArgs {
    #[command(flatten)]
    pub source: SourceArgs,
    #[arg(long, value_enum, default_value = "csv")]
    pub format: Format,
    /// Write here instead of standard output.
    #[arg(long, short)]
    pub output: Option<PathBuf>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum Format {
    Csv,
    Jsonl,
}

/// One exported member: the same columns from either source.
#[derive(Debug, Serialize)]
struct Row {
    visitor_id: String,
    probability: f64,
    ladder_score: f64,
    band: String,
    stage: String,
    rung: String,
    last_seen: String,
    matched_path: String,
    matched_clause: String,
}

enum Writer {
    Csv(Box<csv::Writer<Box<dyn Write>>>),
    Jsonl(Box<dyn Write>),
}

impl Writer {
    fn new(format: Format, out: Box<dyn Write>) -> Writer {
        match format {
            Format::Csv => Writer::Csv(Box::new(csv::Writer::from_writer(out))),
            Format::Jsonl => Writer::Jsonl(out),
        }
    }

    fn row(&mut self, row: &Row) -> anyhow::Result<()> {
        match self {
            Writer::Csv(w) => w.serialize(row)?,
            Writer::Jsonl(w) => {
                serde_json::to_writer(&mut *w, row)?;
                w.write_all(b"\n")?;
            }
        }
        Ok(())
    }

    fn finish(self) -> anyhow::Result<()> {
        match self {
            Writer::Csv(mut w) => w.flush()?,
            Writer::Jsonl(mut w) => w.flush()?,
        }
        Ok(())
    }
}

fn as_of(text: Option<&str>) -> anyhow::Result<Option<Millis>> {
    text.map(|t| {
        Millis::parse_rfc3339(t).with_context(|| format!("--as-of {t:?} is not an RFC 3339 time"))
    })
    .transpose()
}

/// `host:port` or a URL: tonic needs the scheme.
fn endpoint(addr: &str) -> String {
    if addr.contains("://") {
        addr.to_string()
    } else {
        format!("http://{addr}")
    }
}

pub fn run(cmd: SegmentCommand) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    match cmd {
        SegmentCommand::Export(args) => {
            let out: Box<dyn Write> = match &args.output {
                Some(p) => Box::new(std::io::BufWriter::new(
                    std::fs::File::create(p)
                        .with_context(|| format!("creating {}", p.display()))?,
                )),
                None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
            };
            let mut w = Writer::new(args.format, out);
            let n = match &args.source.addr {
                Some(addr) => {
                    runtime.block_on(export_remote(&endpoint(addr), &args.source, &mut w))?
                }
                None => runtime.block_on(export_local(&args.source, &mut w))?,
            };
            w.finish()?;
            eprintln!("{n} members of {}", args.source.name);
            Ok(())
        }
        SegmentCommand::Count(source) => {
            let n = match &source.addr {
                Some(addr) => runtime.block_on(async {
                    let mut client =
                        audience_client(&endpoint(addr), source.api_key.as_deref()).await?;
                    let r = client
                        .count_segment(CountSegmentRequest {
                            name: source.name.clone(),
                            as_of: as_of(source.as_of.as_deref())?.map(to_timestamp),
                            ..Default::default()
                        })
                        .await
                        .map_err(|s| anyhow::anyhow!("{}: {}", code(&s), s.message()))?;
                    anyhow::Ok(r.into_inner().count)
                })?,
                None => runtime.block_on(async {
                    let engine = local_engine(&source).await?;
                    let def = engine.named_definition(&source.name).await?;
                    let at = as_of(source.as_of.as_deref())?.unwrap_or_else(Millis::now);
                    anyhow::Ok(engine.count_segment(Arc::new(def), at).await?.count)
                })?,
            };
            println!("{n}");
            Ok(())
        }
    }
}

fn to_timestamp(m: Millis) -> prost_types::Timestamp {
    let (seconds, nanos) = m.to_parts();
    prost_types::Timestamp { seconds, nanos }
}

fn code(s: &tonic::Status) -> String {
    format!("{:?}", s.code())
}

fn stage_name(v: i32) -> String {
    proto::Stage::try_from(v)
        .map(|s| s.as_str_name().trim_start_matches("STAGE_").to_lowercase())
        .unwrap_or_default()
}

fn band_name(v: i32) -> String {
    proto::Band::try_from(v)
        .map(|b| b.as_str_name().trim_start_matches("BAND_").to_lowercase())
        .unwrap_or_default()
}

/// Streams the export; after a dropped connection it reconnects and
/// resumes after the last member written (a few attempts, then gives up).
async fn export_remote(addr: &str, src: &SourceArgs, w: &mut Writer) -> anyhow::Result<u64> {
    const ATTEMPTS: u32 = 5;
    let mut token = String::new();
    let mut written = 0u64;
    let mut failures = 0;
    let asked = as_of(src.as_of.as_deref())?.map(to_timestamp);
    loop {
        let attempt = async {
            let mut client = audience_client(addr, src.api_key.as_deref()).await?;
            let mut stream = client
                .export_segment(ExportSegmentRequest {
                    name: src.name.clone(),
                    as_of: asked,
                    resume_token: token.clone(),
                    ..Default::default()
                })
                .await?
                .into_inner();
            while let Some(m) = stream.message().await? {
                w.row(&Row {
                    visitor_id: m.visitor_id,
                    probability: m.probability,
                    ladder_score: m.ladder_score,
                    band: band_name(m.band),
                    stage: stage_name(m.stage),
                    rung: m.rung,
                    last_seen: m
                        .last_seen
                        .and_then(|t| Millis::from_parts(t.seconds, t.nanos).ok())
                        .map(Millis::to_rfc3339)
                        .unwrap_or_default(),
                    matched_path: m.matched_path,
                    matched_clause: m.matched_clause,
                })
                .map_err(|e| tonic::Status::internal(format!("writing: {e}")))?;
                token = m.resume_token;
                written += 1;
            }
            Ok::<(), anyhow::Error>(())
        };
        match attempt.await {
            Ok(()) => return Ok(written),
            Err(e) => {
                let retriable = match e.downcast_ref::<tonic::Status>() {
                    Some(s) => matches!(s.code(), tonic::Code::Unavailable | tonic::Code::Unknown),
                    None => e.downcast_ref::<tonic::transport::Error>().is_some(),
                };
                failures += 1;
                if !retriable || failures >= ATTEMPTS {
                    if let Some(s) = e.downcast_ref::<tonic::Status>() {
                        bail!(
                            "export of {} failed after {written} members: {}: {}",
                            src.name,
                            code(s),
                            s.message()
                        );
                    }
                    return Err(e.context(format!(
                        "export of {} failed after {written} members",
                        src.name
                    )));
                }
                eprintln!("connection lost after {written} members ({e}); resuming");
                tokio::time::sleep(std::time::Duration::from_millis(200 * u64::from(failures)))
                    .await;
            }
        }
    }
}

/// An engine straight on a store: a stopped server's data directory, or
/// the shared Redis running servers use.
async fn local_engine(src: &SourceArgs) -> anyhow::Result<Arc<Engine>> {
    let mut settings = Settings::load(src.config.as_deref()).context("loading settings")?;
    let what = match (&src.data_dir, &src.store_url) {
        (Some(dir), _) => {
            settings.data_dir = dir.clone();
            settings.store.url.clear();
            format!(
                "opening {} (if a server is running on it, use --addr instead)",
                dir.display()
            )
        }
        (None, Some(url)) => {
            settings.store.url = url.clone();
            settings.validate().context("checking --store-url")?;
            format!(
                "opening the shared store at {}",
                rung::store::redis_store::redacted(url)
            )
        }
        (None, None) => bail!(
            "give --addr (a running server), --data-dir (a stopped one) or --store-url (the shared Redis)"
        ),
    };
    let engine = rung::startup::build_engine(&settings).await.context(what)?;
    Ok(Arc::new(engine))
}

async fn export_local(src: &SourceArgs, w: &mut Writer) -> anyhow::Result<u64> {
    let engine = local_engine(src).await?;
    let definition = Arc::new(engine.named_definition(&src.name).await?);
    let at = as_of(src.as_of.as_deref())?.unwrap_or_else(Millis::now);
    let mut members = engine.export(ExportQuery {
        definition,
        name: Some(src.name.clone()),
        as_of: at,
        after: None,
    });
    let mut written = 0u64;
    while let Some(chunk) = members.recv().await {
        for m in chunk? {
            w.row(&Row {
                visitor_id: m.visitor,
                probability: m.probability,
                ladder_score: m.ladder_score,
                band: format!("{:?}", m.band).to_lowercase(),
                stage: m.stage.name().to_string(),
                rung: m.rung.unwrap_or_default(),
                last_seen: m.last_seen.map(Millis::to_rfc3339).unwrap_or_default(),
                matched_path: m.matched_path,
                matched_clause: m.matched_clause,
            })?;
            written += 1;
        }
    }
    Ok(written)
}
