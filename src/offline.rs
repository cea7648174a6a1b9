//! The data scientist's commands: `rung train`, `rung evaluate`,
//! `rung suggest-ladder` and `rung simulate`. Argument handling and
//! progress bars live here; the work is in `rung::training`.

use std::cell::RefCell;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use indicatif::{ProgressBar, ProgressStyle};

use rung::deploy::{self, ModelSource};
use rung::domain::{Millis, Taxonomy};
use rung::training::eventlog::{
    self, Column, EventLog, FileFormat, Mapping, Preset, Source, TimeUnit,
};
use rung::training::examples::Cutoffs;
use rung::training::pipeline::{self, ClassWeight, Progress, Solver, TrainOptions, Validation};
use rung::training::{export, report, suggest};

use super::write_atomically;

/// A flag's values for a library enum: the variants by the same names,
/// each with its help, turned into the library's type once read.
macro_rules! flag_values {
    ($(#[$doc:meta])* $flag:ident => $lib:ident { $($(#[$vdoc:meta])* $v:ident,)* }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
        enum $flag {
            $($(#[$vdoc])* $v,)*
        }

        impl From<$flag> for $lib {
            fn from(f: $flag) -> $lib {
                match f {
                    $($flag::$v => $lib::$v,)*
                }
            }
        }
    };
}

flag_values!(PresetFlag => Preset {
    /// rung's own layout: visitor_id,time,type[,item_id,value,event_id] with a header.
    Rung,
    /// Google Analytics 4 BigQuery export, one JSON object per line.
    Ga4,
    /// Segment track calls, one JSON object per line.
    Segment,
    /// Taobao UserBehavior: user_id,item_id,category_id,behavior_type,timestamp; no header.
    Taobao,
    /// RetailRocket events.csv.
    Retailrocket,
    /// REES46 "eCommerce behavior data from multi category store".
    Rees46,
});

flag_values!(FormatFlag => FileFormat {
    Csv,
    Jsonl,
});

flag_values!(TimeUnitFlag => TimeUnit {
    /// Numbers by magnitude (s, ms, µs or ns since the epoch), text as RFC 3339.
    Auto,
    Seconds,
    Millis,
    Micros,
    /// RFC 3339 / ISO 8601 text; "2019-10-01 00:00:00 UTC" is accepted too.
    Text,
});

flag_values!(ClassWeightFlag => ClassWeight {
    None,
    /// Positives weigh (negatives ÷ positives); the intercept is corrected
    /// afterwards so probabilities stay calibrated.
    Balanced,
});

flag_values!(SolverFlag => Solver {
    /// linfa-logistic as it is.
    Linfa,
    /// The same objective and L-BFGS, with a fused, multi-threaded cost and
    /// gradient on the mean loss, in rung's own solver: several times faster
    /// on large logs.
    Fused,
});

/// Where the fields of an event log are.
#[derive(clap::Args, Debug, Clone)]
pub struct MappingArgs {
    /// A ready mapping for a known layout [default: rung].
    #[arg(long, value_enum)]
    preset: Option<PresetFlag>,
    /// A TOML mapping file (see README); flags below override it.
    #[arg(long)]
    mapping: Option<PathBuf>,
    /// The file's format [default: the preset's].
    #[arg(long, value_enum)]
    format: Option<FormatFlag>,
    /// CSV field separator: one character, or comma, semicolon, tab, pipe.
    #[arg(long, value_parser = parse_delimiter)]
    delimiter: Option<char>,
    /// The CSV file has no header row (columns are then 0-based positions).
    #[arg(long)]
    no_header: bool,
    /// Visitor id column (repeat for fallbacks, first non-empty wins).
    #[arg(long = "visitor-col")]
    visitor: Vec<String>,
    /// Event time column.
    #[arg(long = "time-col")]
    time: Option<String>,
    /// How event times are written.
    #[arg(long, value_enum)]
    time_unit: Option<TimeUnitFlag>,
    /// Event name column (names go through the taxonomy's aliases).
    #[arg(long = "event-col")]
    event: Option<String>,
    /// No event column: every row is this event (a log of views only).
    #[arg(long, conflicts_with = "event")]
    event_value: Option<String>,
    /// EVENT=PATH: a file or folder of the log whose every row is EVENT (a
    /// log with one file per event kind); repeat, and mix with --events.
    #[arg(long, value_parser = parse_events_of)]
    events_of: Vec<(String, PathBuf)>,
    /// Item (product) id column.
    #[arg(long = "item-col")]
    item: Option<String>,
    /// Monetary value column.
    #[arg(long = "value-col")]
    value: Option<String>,
    /// Event id column: a repeated id counts once.
    #[arg(long = "id-col")]
    event_id: Option<String>,
}

fn column(s: &str) -> Column {
    s.parse::<usize>()
        .map_or_else(|_| Column::Name(s.to_string()), Column::Index)
}

impl MappingArgs {
    fn mapping(&self) -> anyhow::Result<Mapping> {
        let mut m = match (&self.mapping, self.preset) {
            (Some(path), _) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading {}", path.display()))?;
                Mapping::from_toml(&text)
                    .map_err(|e| anyhow::anyhow!("mapping {}: {e}", path.display()))?
            }
            (None, p) => p.map_or(Preset::Rung, Preset::from).mapping(),
        };
        if let Some(f) = self.format {
            m.format = f.into();
        }
        if let Some(d) = self.delimiter {
            m.delimiter = d;
        }
        if self.no_header {
            m.header = false;
        }
        if !self.visitor.is_empty() {
            m.visitor = self.visitor.iter().map(|c| column(c)).collect();
        }
        if let Some(c) = &self.time {
            m.time = column(c);
        }
        if let Some(u) = self.time_unit {
            m.time_unit = u.into();
        }
        if let Some(c) = &self.event {
            m.event = column(c);
        }
        if let Some(v) = &self.event_value {
            m.event = Column::Value { value: v.clone() };
        }
        if let Some(c) = &self.item {
            m.item = Some(column(c));
        }
        if let Some(c) = &self.value {
            m.value = Some(column(c));
        }
        if let Some(c) = &self.event_id {
            m.event_id = Some(column(c));
        }
        Ok(m)
    }
}

fn parse_cutoffs(s: &str) -> Result<Cutoffs, String> {
    match s {
        "session-end" => Ok(Cutoffs::SessionEnd),
        "page-view" => Ok(Cutoffs::PageView { seed: 7 }),
        _ => match s.strip_prefix("fixed:") {
            Some(t) => eventlog::parse_time(t, TimeUnit::Text)
                .map(Cutoffs::Fixed)
                .ok_or_else(|| {
                    format!("cannot read the time {t:?} (RFC 3339, e.g. 2017-12-01T00:00:00+08:00)")
                }),
            None => Err("expected session-end, page-view or fixed:<RFC 3339 time>".into()),
        },
    }
}

fn parse_events_of(s: &str) -> Result<(String, PathBuf), String> {
    match s.split_once('=') {
        Some((event, path)) if !event.is_empty() && !path.is_empty() => {
            Ok((event.to_string(), PathBuf::from(path)))
        }
        _ => Err("expected EVENT=PATH, e.g. purchase=train-purchases.csv".into()),
    }
}

fn parse_delimiter(s: &str) -> Result<char, String> {
    match s {
        "comma" => Ok(','),
        "semicolon" => Ok(';'),
        "tab" | "\\t" => Ok('\t'),
        "pipe" => Ok('|'),
        _ => match s.chars().collect::<Vec<_>>()[..] {
            [c] if c.is_ascii() => Ok(c),
            _ => Err("expected one ASCII character, or comma, semicolon, tab or pipe".into()),
        },
    }
}

/// A horizon in days: finite, above zero, at most ten years.
fn parse_horizon(s: &str) -> Result<f64, String> {
    let days: f64 = s
        .parse()
        .map_err(|_| format!("{s:?} is not a number of days"))?;
    if days.is_finite() && days > 0.0 && days <= 3650.0 {
        Ok(days)
    } else {
        Err(format!(
            "{s} is not a horizon: expected days above 0 and at most 3650"
        ))
    }
}

/// Which products of features a model adds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum InteractionsFlag {
    /// The features alone.
    None,
    /// Every product of two standardized features (a table's numeric
    /// ones), squares included.
    Pairwise,
}

/// A finite number above zero.
fn parse_positive(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(x) if x.is_finite() && x > 0.0 => Ok(x),
        _ => Err(format!("{s:?}: expected a number above 0")),
    }
}

/// How examples are held out, as the flag names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum HeldOut {
    /// Train on earlier cut-offs, validate and test on later ones.
    Time,
    /// k folds by visitor, figures from the pooled out-of-fold predictions.
    Kfold,
}

/// Reading an event log and building point-in-time examples: the same for
/// `rung train` and `rung examples`, so the export is the set training fits.
#[derive(clap::Args, Debug)]
pub struct ExampleArgs {
    #[command(flatten)]
    mapping: MappingArgs,
    /// Where histories are cut into examples: session-end, page-view (a
    /// random event of each session), or fixed:<RFC 3339 time> (one
    /// cut-off for everyone).
    #[arg(long, default_value = "session-end", value_parser = parse_cutoffs)]
    cutoffs: Cutoffs,
    /// The label: a purchase within this many days after the cut-off.
    #[arg(long, default_value = "7", value_parser = parse_horizon)]
    horizon_days: f64,
    /// How examples are held out.
    #[arg(long, value_enum, default_value = "time")]
    validation: HeldOut,
    /// With --validation kfold: how many folds.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u16).range(2..=100))]
    folds: u16,
    /// Malformed rows tolerated (skipped and counted) before giving up.
    #[arg(long, default_value_t = 0)]
    max_bad_rows: usize,
    /// A taxonomy TOML file [default: the built-in one].
    #[arg(long)]
    taxonomy: Option<PathBuf>,
}

impl ExampleArgs {
    fn options(&self) -> TrainOptions {
        TrainOptions {
            horizon_days: self.horizon_days,
            cutoffs: self.cutoffs.clone(),
            validation: match self.validation {
                HeldOut::Time => Validation::Time {
                    validation_share: 0.15,
                    test_share: 0.15,
                },
                HeldOut::Kfold => Validation::KFold {
                    folds: usize::from(self.folds),
                    seed: 7,
                },
            },
            ..TrainOptions::default()
        }
    }
}

#[derive(clap::Args, Debug)]
pub struct TrainArgs {
    /// The event log (CSV or JSON Lines; .gz too): files or folders of
    /// files, repeat for more [required unless --table].
    #[arg(long, num_args = 1.., required_unless_present_any = ["table", "events_of"])]
    events: Vec<PathBuf>,
    /// Tabular mode: a feature table (CSV) instead of an event log.
    #[arg(long, conflicts_with = "events", requires = "label")]
    table: Option<PathBuf>,
    /// Tabular mode: the label column.
    #[arg(long)]
    label: Option<String>,
    /// Tabular mode: columns to one-hot encode even if numeric.
    #[arg(long, value_delimiter = ',')]
    categorical: Vec<String>,
    /// none, or pairwise: the model also weighs every product of two
    /// standardized features (a table's numeric ones), squares included,
    /// each a term named A × B. An event log's 42 features make 903
    /// products: slower to fit, and about 2 µs more per score with reasons.
    #[arg(long, value_enum, default_value = "none")]
    interactions: InteractionsFlag,
    /// Where the artifact goes; the metrics file and plots go beside it.
    #[arg(long)]
    out: PathBuf,
    #[command(flatten)]
    examples: ExampleArgs,
    /// Also write the training set this run fits, as rung examples does
    /// (Parquet when the name ends in .parquet, else CSV).
    #[arg(long, conflicts_with = "table")]
    examples_out: Option<PathBuf>,
    /// none, or balanced: positives weigh negatives ÷ positives, and the
    /// intercept is corrected so probabilities stay calibrated.
    #[arg(long, value_enum, default_value = "none")]
    class_weight: ClassWeightFlag,
    /// Fewer positive examples than this is an error.
    #[arg(long, default_value_t = 50)]
    min_positives: usize,
    /// The solver's iteration limit per fit.
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..))]
    max_iterations: u64,
    /// fused (the linfa-logistic objective with one multi-threaded pass for
    /// cost and gradient, and an evaluation budget) or linfa (linfa-logistic
    /// as it is: slower on large logs, and its line search can loop forever
    /// on degenerate data).
    #[arg(long, value_enum, default_value = "fused")]
    solver: SolverFlag,
    /// Write no SVG plots.
    #[arg(long)]
    no_plots: bool,
    /// With the time split: after the final fit, refit the intercept alone
    /// on the validation part (the most recent data before the test part),
    /// for a base rate that drifts; the test part's calibration error is
    /// reported before and after.
    #[arg(long)]
    recalibrate: bool,
}

#[derive(clap::Args, Debug)]
pub struct ExamplesArgs {
    /// The event log (CSV or JSON Lines; .gz too): files or folders of
    /// files, repeat for more.
    #[arg(long, num_args = 1.., required_unless_present = "events_of")]
    events: Vec<PathBuf>,
    /// Where the training set goes: Parquet when the name ends in
    /// .parquet, else CSV.
    #[arg(long)]
    out: PathBuf,
    #[command(flatten)]
    examples: ExampleArgs,
}

/// Progress bars on stderr for every step that can take a while.
struct Bars {
    bar: RefCell<Option<ProgressBar>>,
}

impl Bars {
    fn new() -> Bars {
        Bars {
            bar: RefCell::new(None),
        }
    }

    fn bytes(&self, name: &str, total: u64) {
        let bar = ProgressBar::new(total).with_message(name.to_string());
        bar.set_style(
            ProgressStyle::with_template("{msg:32} {bar:30} {bytes}/{total_bytes} {elapsed}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        *self.bar.borrow_mut() = Some(bar);
    }
}

impl Progress for Bars {
    fn step(&self, name: &str, total: Option<u64>) {
        let bar = match total {
            Some(t) => {
                let b = ProgressBar::new(t);
                b.set_style(
                    ProgressStyle::with_template("{msg:32} {bar:30} {pos}/{len} {elapsed}")
                        .unwrap_or_else(|_| ProgressStyle::default_bar()),
                );
                b
            }
            None => {
                let b = ProgressBar::new_spinner();
                b.enable_steady_tick(std::time::Duration::from_millis(120));
                b
            }
        };
        bar.set_message(name.to_string());
        *self.bar.borrow_mut() = Some(bar);
    }

    fn set(&self, done: u64) {
        if let Some(b) = &*self.bar.borrow() {
            b.set_position(done);
        }
    }

    fn done(&self) {
        if let Some(b) = self.bar.borrow_mut().take() {
            b.finish();
        }
    }
}

fn read_log(
    paths: &[PathBuf],
    mapping: &MappingArgs,
    taxonomy: &Taxonomy,
    max_bad_rows: usize,
    bars: &Bars,
) -> anyhow::Result<EventLog> {
    let named: Vec<Source> = paths
        .iter()
        .map(|p| Source {
            path: p.clone(),
            event: None,
        })
        .chain(mapping.events_of.iter().map(|(e, p)| Source {
            path: p.clone(),
            event: Some(e.clone()),
        }))
        .collect();
    let mapping = mapping.mapping()?;
    let files = eventlog::files_of(&named)?;
    let size = files
        .iter()
        .map(|f| std::fs::metadata(&f.path).map_or(0, |m| m.len()))
        .sum();
    if files.len() > 1 {
        eprintln!("reading {} files", files.len());
    }
    bars.bytes("reading the event log", size);
    let log = eventlog::read_files(&files, &mapping, taxonomy, max_bad_rows, &|n| bars.set(n));
    bars.done();
    let log = log?;
    eprintln!(
        "read {} rows: {} events of {} visitors; {} rows with unmapped event names, {} filtered out, {} malformed (skipped)",
        log.rows,
        log.events,
        log.visitors.len(),
        log.unmapped_total(),
        log.filtered,
        log.bad_rows.len()
    );
    if let Some((first, last)) = log.time_range() {
        eprintln!(
            "events from {} to {} ({:.1} days)",
            first.to_rfc3339(),
            last.to_rfc3339(),
            last.millis_since(first) / 86_400_000.0
        );
    }
    let per_type: Vec<String> = taxonomy
        .types()
        .iter()
        .zip(log.events_per_type(taxonomy.types().len()))
        .filter(|(_, n)| *n > 0)
        .map(|(t, n)| format!("{} {n}", t.name))
        .collect();
    eprintln!("events per type: {}", per_type.join(", "));
    if let Some(report) = log.unmapped_report() {
        eprintln!("{report}");
    }
    for b in log.bad_rows.iter().take(5) {
        eprintln!("skipped {} line {}: {}", b.file.display(), b.line, b.reason);
    }
    Ok(log)
}

/// Reads the log and builds its examples, with the parts they serve.
fn prepare(
    events: &[PathBuf],
    args: &ExampleArgs,
    opts: &TrainOptions,
    bars: &Bars,
) -> anyhow::Result<(Taxonomy, EventLog, pipeline::Prepared)> {
    let taxonomy = Taxonomy::load(args.taxonomy.as_deref())?;
    let log = read_log(events, &args.mapping, &taxonomy, args.max_bad_rows, bars)?;
    let prepared = pipeline::prepare(&taxonomy, &log.visitors, opts, bars)?;
    Ok((taxonomy, log, prepared))
}

fn write_examples(
    path: &Path,
    prepared: &pipeline::Prepared,
    log: &EventLog,
) -> anyhow::Result<()> {
    let parquet = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("parquet"));
    super::write_atomically_with(path, |w| {
        if parquet {
            export::write_parquet(prepared, &log.visitors, w).map_err(std::io::Error::other)
        } else {
            export::write_csv(prepared, &log.visitors, w).map_err(std::io::Error::other)
        }
    })?;
    println!(
        "wrote {}: {} examples × {} features",
        path.display(),
        prepared.examples.len(),
        prepared.names.len()
    );
    Ok(())
}

pub fn examples(args: ExamplesArgs) -> anyhow::Result<()> {
    let bars = Bars::new();
    let opts = args.examples.options();
    let (_, log, prepared) = prepare(&args.events, &args.examples, &opts, &bars)?;
    write_examples(&args.out, &prepared, &log)?;
    println!("split: {}", prepared.part_counts());
    Ok(())
}

pub fn train(args: TrainArgs) -> anyhow::Result<()> {
    if args.table.is_some() {
        return train_table(&args);
    }
    let events = &args.events;
    if events.is_empty() && args.examples.mapping.events_of.is_empty() {
        bail!("--events or --table is required");
    }
    if args.recalibrate && args.examples.validation == HeldOut::Kfold {
        bail!("--recalibrate needs the time split: k folds have no most recent part to refit on");
    }
    let bars = Bars::new();
    let mut opts = args.examples.options();
    opts.recalibrate = args.recalibrate;
    opts.interactions = args.interactions == InteractionsFlag::Pairwise;
    opts.class_weight = args.class_weight.into();
    opts.solver = args.solver.into();
    opts.fit.min_positives = args.min_positives;
    opts.fit.max_iterations = args.max_iterations;
    let (taxonomy, log, prepared) = prepare(events, &args.examples, &opts, &bars)?;
    opts.description = format!(
        "trained by rung train on {} ({} visitors, {} events)",
        events
            .iter()
            .chain(args.examples.mapping.events_of.iter().map(|(_, p)| p))
            .map(|e| e.file_name().and_then(|n| n.to_str()).unwrap_or("events"))
            .collect::<Vec<_>>()
            .join(", "),
        log.visitors.len(),
        log.events
    );
    if let Some(path) = &args.examples_out {
        write_examples(path, &prepared, &log)?;
    }
    let outcome = pipeline::train(&taxonomy, &prepared, &opts, Millis::now(), &bars)?;
    write_atomically(&args.out, &serde_json::to_string_pretty(&outcome.artifact)?)?;
    let (metrics_path, report_dir) = report::paths_beside(&args.out);
    write_atomically(
        &metrics_path,
        &serde_json::to_string_pretty(&report::metrics_json(&outcome))?,
    )?;
    if !args.no_plots {
        report::write_plots(&report_dir, &outcome)
            .map_err(|e| anyhow::anyhow!("writing plots: {e}"))?;
    }
    println!("{}", report::summary(&outcome));
    println!(
        "wrote {} (version {})",
        args.out.display(),
        outcome.artifact.version
    );
    println!("wrote {}", metrics_path.display());
    if !args.no_plots {
        println!(
            "wrote {}/{{roc,pr,calibration,coefficients}}.svg",
            report_dir.display()
        );
    }
    Ok(())
}

/// Tabular mode: a feature table in, a cross-validated model for evaluation
/// and export out (not for the event-scoring service).
fn train_table(args: &TrainArgs) -> anyhow::Result<()> {
    use rung::training::tabular;
    let (Some(table), Some(label)) = (&args.table, &args.label) else {
        bail!("--table needs --label");
    };
    let mut opts = tabular::TableOptions::new(table, label);
    opts.categorical = args.categorical.clone();
    opts.interactions = args.interactions == InteractionsFlag::Pairwise;
    opts.folds = usize::from(args.examples.folds);
    opts.max_bad_rows = args.examples.max_bad_rows;
    opts.max_iterations = args.max_iterations;
    let spinner = Bars::new();
    spinner.step("cross-validating and fitting", None);
    let report = tabular::train_table(&opts);
    spinner.done();
    let report = report?;
    tabular::write_artifact(&args.out, &report.artifact)?;
    let m = &report.artifact.metrics;
    let opt = |x: Option<f64>| x.map_or("—".into(), |v| format!("{v:.4}"));
    println!(
        "{} rows ({} positive, base rate {:.4}; {} malformed rows skipped), {} features, {}-fold cross-validation",
        m.rows,
        m.positives,
        m.base_rate,
        m.bad_rows_skipped,
        report.artifact.feature_names.len(),
        m.folds
    );
    println!(
        "ROC AUC: mean over folds {}, pooled {}; PR AUC {}; log loss {:.4}; Brier {:.4}; alpha {}",
        opt(m.mean_fold_roc_auc),
        opt(m.pooled_roc_auc),
        opt(m.pooled_pr_auc),
        m.pooled_log_loss,
        m.pooled_brier,
        m.alpha
    );
    println!(
        "wrote {} (version {}; for evaluation and export, not for rung serve)",
        args.out.display(),
        report.artifact.version
    );
    Ok(())
}

#[derive(clap::Args, Debug)]
pub struct EvaluateArgs {
    /// The model artifact (JSON) to judge; `built-in` is the one built into
    /// the binary.
    #[arg(long)]
    model: PathBuf,
    /// The event log (CSV or JSON Lines; .gz too): files or folders of
    /// files, repeat for more.
    #[arg(long, num_args = 1.., required_unless_present = "events_of")]
    events: Vec<PathBuf>,
    #[command(flatten)]
    mapping: MappingArgs,
    /// Where histories are cut into examples: session-end, page-view, or
    /// fixed:<RFC 3339 time>.
    #[arg(long, default_value = "session-end", value_parser = parse_cutoffs)]
    cutoffs: Cutoffs,
    /// The label's horizon in days [default: the model's own].
    #[arg(long, value_parser = parse_horizon)]
    horizon_days: Option<f64>,
    /// Malformed rows tolerated (skipped and counted) before giving up.
    #[arg(long, default_value_t = 0)]
    max_bad_rows: usize,
    /// A taxonomy TOML file [default: the built-in one].
    #[arg(long)]
    taxonomy: Option<PathBuf>,
    /// Also write the metrics file and plots into this folder.
    #[arg(long)]
    report_dir: Option<PathBuf>,
}

pub fn evaluate(args: EvaluateArgs) -> anyhow::Result<()> {
    let taxonomy = Taxonomy::load(args.taxonomy.as_deref())?;
    // The checks the server makes before it serves a model.
    let deployed = deploy::load(&ModelSource::named(&args.model), &taxonomy)?;
    let model = &deployed.model;
    let bars = Bars::new();
    let log = read_log(
        &args.events,
        &args.mapping,
        &taxonomy,
        args.max_bad_rows,
        &bars,
    )?;
    let horizon_days = args.horizon_days.unwrap_or(deployed.card.horizon_days);
    let (m, l) = pipeline::judge(
        &taxonomy,
        model,
        &log.visitors,
        &args.cutoffs,
        horizon_days,
        &bars,
    )?;
    let names: Vec<String> = args
        .events
        .iter()
        .map(|e| e.display().to_string())
        .collect();
    println!("model {} on {}", model.version(), names.join(", "));
    println!("{}", report::comparison(&m, &l));
    if let Some(dir) = &args.report_dir {
        std::fs::create_dir_all(dir)?;
        let json = serde_json::json!({ "model_version": model.version(), "held_out": "test", "test": m, "ladder_baseline": l });
        write_atomically(
            &dir.join("metrics.json"),
            &serde_json::to_string_pretty(&json)?,
        )?;
        let features: Vec<String> = model
            .feature_names()
            .iter()
            .map(|n| n.to_string())
            .collect();
        report::plots(dir, &m, &l, &features, &deployed.card.coefficients)
            .map_err(|e| anyhow::anyhow!("writing plots: {e}"))?;
        println!("wrote {}", dir.display());
    }
    Ok(())
}

#[derive(clap::Args, Debug)]
pub struct SuggestArgs {
    /// The model artifact (JSON) to read coefficients from; `built-in` is
    /// the one built into the binary.
    #[arg(long)]
    model: PathBuf,
    /// A taxonomy TOML file [default: the built-in one].
    #[arg(long)]
    taxonomy: Option<PathBuf>,
    /// Points per unit of log-odds.
    #[arg(long, default_value_t = 10.0, value_parser = parse_positive)]
    points_per_log_odds: f64,
}

/// Ladder points from the model: the change in log-odds that a first
/// occurrence of a type brings (count 0 → 1, i.e. ln 2 on the log scale,
/// through the type's standardized coefficient), times a scale.
pub fn suggest_ladder(args: SuggestArgs) -> anyhow::Result<()> {
    let taxonomy = Taxonomy::load(args.taxonomy.as_deref())?;
    let model = deploy::load(&ModelSource::named(&args.model), &taxonomy)?.model;
    if model.interactions().is_some() {
        bail!(
            "{} weighs pairwise products of its features (--interactions pairwise), so what one event adds depends on the visitor's other features; suggest ladder points from a model trained without interactions",
            args.model.display()
        );
    }
    let suggestions = suggest::ladder_points(&model, &taxonomy, args.points_per_log_odds)
        .context("the model lacks a count feature")?;
    println!(
        "# Ladder points suggested by model {} ({} points per unit of log-odds).",
        model.version(),
        args.points_per_log_odds
    );
    println!("# Each is the log-odds a first occurrence adds, holding the rest fixed; review before use.");
    println!(
        "# Stages, half-lives and caps are the running taxonomy's. Changing points changes the"
    );
    println!("# ladder_points feature, so retrain the model with the new taxonomy afterwards.\n");
    for s in suggestions {
        let t = &taxonomy.types()[s.type_index];
        println!("[[types]]");
        println!("name = {:?}", t.name);
        println!("stage = {:?}", t.stage.name());
        println!(
            "points = {:.1}  # was {}; first occurrence: {:+.3} log-odds",
            s.points, t.points, s.log_odds
        );
        if t.half_life_ms.is_finite() {
            println!("half_life_days = {}", t.half_life_ms / 86_400_000.0);
        }
        println!("cap = {}\n", t.cap);
    }
    Ok(())
}

#[derive(clap::Args, Debug)]
pub struct SimulateArgs {
    /// How many visitors to simulate.
    #[arg(long, default_value_t = 40_000)]
    visitors: usize,
    /// The random seed: the same seed writes the same log.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// How many days the journeys spread over.
    #[arg(long, default_value_t = 60.0, value_parser = parse_positive)]
    days: f64,
    /// Where the CSV goes.
    #[arg(long)]
    out: PathBuf,
}

pub fn simulate(args: SimulateArgs) -> anyhow::Result<()> {
    let cfg = rung::simulator::SimConfig {
        visitors: args.visitors,
        seed: args.seed,
        days: args.days,
        ..rung::simulator::SimConfig::default()
    };
    let journeys = rung::simulator::simulate(&cfg);
    let f = rung::simulator::funnel_figures(&journeys);
    let file = std::fs::File::create(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    rung::simulator::write_csv(&journeys, file)?;
    println!(
        "wrote {}: {} visitors, {} sessions; {:.1}% of sessions add to cart, {:.2}% purchase (first visits {:.2}%, returning {:.2}%)",
        args.out.display(),
        args.visitors,
        f.sessions,
        100.0 * f.add_to_cart_rate,
        100.0 * f.purchase_rate,
        100.0 * f.new_visitor_purchase_rate,
        100.0 * f.returning_visitor_purchase_rate
    );
    Ok(())
}
