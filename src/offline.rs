//! The data scientist's commands: `rung train`, `rung evaluate`,
//! `rung suggest-ladder` and `rung simulate`. Argument handling and
//! progress bars live here; the work is in `rung::training`.

use std::cell::RefCell;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use indicatif::{ProgressBar, ProgressStyle};

use rung::domain::{Millis, Taxonomy};
use rung::scoring::{Model, ModelArtifact};
use rung::startup::load_taxonomy;
use rung::training::eventlog::{self, Column, EventLog, FileFormat, Mapping, Preset, TimeUnit};
use rung::training::examples::{build, data_end, Cutoffs};
use rung::training::pipeline::{self, ClassWeight, Progress, TrainOptions, Validation};
use rung::training::{evaluation, report};

use super::write_atomically;

/// Where the fields of an event log are.
#[derive(clap::Args, Debug, Clone)]
pub struct MappingArgs {
    /// A ready mapping for a known layout [default: rung].
    #[arg(long, value_enum)]
    preset: Option<Preset>,
    /// A TOML mapping file (see README); flags below override it.
    #[arg(long)]
    mapping: Option<PathBuf>,
    #[arg(long, value_enum)]
    format: Option<FileFormat>,
    #[arg(long)]
    delimiter: Option<char>,
    /// The CSV file has no header row (columns are then 0-based positions).
    #[arg(long)]
    no_header: bool,
    /// Visitor id column (repeat for fallbacks, first non-empty wins).
    #[arg(long = "visitor-col")]
    visitor: Vec<String>,
    #[arg(long = "time-col")]
    time: Option<String>,
    #[arg(long, value_enum)]
    time_unit: Option<TimeUnit>,
    #[arg(long = "event-col")]
    event: Option<String>,
    #[arg(long = "item-col")]
    item: Option<String>,
    #[arg(long = "value-col")]
    value: Option<String>,
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
            (None, p) => p.unwrap_or(Preset::Rung).mapping(),
        };
        if let Some(f) = self.format {
            m.format = f;
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
            m.time_unit = u;
        }
        if let Some(c) = &self.event {
            m.event = column(c);
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
            Some(t) => eventlog::parse_time(t, TimeUnit::Auto)
                .map(Cutoffs::Fixed)
                .ok_or_else(|| format!("cannot read the time {t:?}")),
            None => Err("expected session-end, page-view or fixed:<RFC 3339 time>".into()),
        },
    }
}

#[derive(clap::Args, Debug)]
pub struct TrainArgs {
    /// The event log (CSV or JSON Lines).
    #[arg(long, required_unless_present = "table")]
    events: Option<PathBuf>,
    /// Tabular mode: a feature table (CSV) instead of an event log.
    #[arg(long, conflicts_with = "events", requires = "label")]
    table: Option<PathBuf>,
    /// Tabular mode: the label column.
    #[arg(long)]
    label: Option<String>,
    /// Tabular mode: columns to one-hot encode even if numeric.
    #[arg(long, value_delimiter = ',')]
    categorical: Vec<String>,
    /// Where the artifact goes; the metrics file and plots go beside it.
    #[arg(long)]
    out: PathBuf,
    #[command(flatten)]
    mapping: MappingArgs,
    /// session-end, page-view, or fixed:<time> (one cut-off for everyone).
    #[arg(long, default_value = "session-end", value_parser = parse_cutoffs)]
    cutoffs: Cutoffs,
    /// The label: a purchase within this many days after the cut-off.
    #[arg(long, default_value_t = 7.0)]
    horizon_days: f64,
    /// time (train on earlier cut-offs, validate and test on later ones) or kfold.
    #[arg(long, default_value = "time")]
    validation: String,
    #[arg(long, default_value_t = 5)]
    folds: usize,
    #[arg(long, value_enum, default_value = "none")]
    class_weight: ClassWeight,
    /// Malformed rows tolerated (skipped and counted) before giving up.
    #[arg(long, default_value_t = 0)]
    max_bad_rows: usize,
    /// Fewer positive examples than this is an error.
    #[arg(long, default_value_t = 50)]
    min_positives: usize,
    #[arg(long, default_value_t = 300)]
    max_iterations: u64,
    /// fused (the linfa-logistic objective with one multi-threaded pass for
    /// cost and gradient, and an evaluation budget) or linfa (linfa-logistic
    /// as it is: slower on large logs, and its line search can loop forever
    /// on degenerate data).
    #[arg(long, value_enum, default_value = "fused")]
    solver: pipeline::Solver,
    /// A taxonomy TOML file [default: the built-in one].
    #[arg(long)]
    taxonomy: Option<PathBuf>,
    /// Write no SVG plots.
    #[arg(long)]
    no_plots: bool,
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
    path: &Path,
    mapping: &MappingArgs,
    taxonomy: &Taxonomy,
    max_bad_rows: usize,
    bars: &Bars,
) -> anyhow::Result<EventLog> {
    let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    bars.bytes("reading the event log", size);
    let log = eventlog::read(path, &mapping.mapping()?, taxonomy, max_bad_rows, &|n| {
        bars.set(n)
    })?;
    bars.done();
    eprintln!(
        "read {} rows: {} events of {} visitors; {} rows with unmapped event names, {} filtered out, {} malformed (skipped)",
        log.rows,
        log.events,
        log.visitors.len(),
        log.unmapped_total(),
        log.filtered,
        log.bad_rows.len()
    );
    if !log.unmapped.is_empty() {
        let mut top: Vec<(&String, &u64)> = log.unmapped.iter().collect();
        top.sort_by(|a, b| b.1.cmp(a.1));
        let names: Vec<String> = top
            .iter()
            .take(10)
            .map(|(n, c)| format!("{n:?} ×{c}"))
            .collect();
        eprintln!(
            "unmapped event names (add aliases to the taxonomy): {}",
            names.join(", ")
        );
    }
    for b in log.bad_rows.iter().take(5) {
        eprintln!("skipped line {}: {}", b.line, b.reason);
    }
    Ok(log)
}

pub fn train(args: TrainArgs) -> anyhow::Result<()> {
    if args.table.is_some() {
        return train_table(&args);
    }
    let Some(events) = &args.events else {
        bail!("--events or --table is required");
    };
    let taxonomy = load_taxonomy(args.taxonomy.as_deref())?;
    let bars = Bars::new();
    let log = read_log(events, &args.mapping, &taxonomy, args.max_bad_rows, &bars)?;
    let validation = match args.validation.as_str() {
        "time" => Validation::Time {
            validation_share: 0.15,
            test_share: 0.15,
        },
        "kfold" => Validation::KFold {
            folds: args.folds,
            seed: 7,
        },
        other => bail!("--validation {other:?}: expected time or kfold"),
    };
    let mut opts = TrainOptions {
        horizon_days: args.horizon_days,
        cutoffs: args.cutoffs.clone(),
        validation,
        class_weight: args.class_weight,
        solver: args.solver,
        description: format!(
            "trained by rung train on {} ({} visitors, {} events)",
            events
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("events"),
            log.visitors.len(),
            log.events
        ),
        ..TrainOptions::default()
    };
    opts.fit.min_positives = args.min_positives;
    opts.fit.max_iterations = args.max_iterations;
    let outcome = pipeline::train(&taxonomy, &log.visitors, &opts, Millis::now(), &bars)?;
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
    opts.folds = args.folds;
    opts.max_bad_rows = args.max_bad_rows;
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
    #[arg(long)]
    model: PathBuf,
    #[arg(long)]
    events: PathBuf,
    #[command(flatten)]
    mapping: MappingArgs,
    #[arg(long, default_value = "session-end", value_parser = parse_cutoffs)]
    cutoffs: Cutoffs,
    /// [default: the model's own horizon]
    #[arg(long)]
    horizon_days: Option<f64>,
    #[arg(long, default_value_t = 0)]
    max_bad_rows: usize,
    #[arg(long)]
    taxonomy: Option<PathBuf>,
    /// Also write the metrics file and plots into this folder.
    #[arg(long)]
    report_dir: Option<PathBuf>,
}

pub fn evaluate(args: EvaluateArgs) -> anyhow::Result<()> {
    let taxonomy = load_taxonomy(args.taxonomy.as_deref())?;
    let text = std::fs::read_to_string(&args.model)
        .with_context(|| format!("reading {}", args.model.display()))?;
    let artifact: ModelArtifact = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a model artifact", args.model.display()))?;
    let model = Model::from_artifact(&artifact, &taxonomy)
        .with_context(|| format!("model {}", args.model.display()))?;
    let bars = Bars::new();
    let log = read_log(
        &args.events,
        &args.mapping,
        &taxonomy,
        args.max_bad_rows,
        &bars,
    )?;
    let horizon_ms = (args.horizon_days.unwrap_or(artifact.horizon_days) * 86_400_000.0) as i64;
    bars.step(
        "building point-in-time examples",
        Some(log.visitors.len() as u64),
    );
    let ex = build(
        &taxonomy,
        &log.visitors,
        &args.cutoffs,
        horizon_ms,
        data_end(&log.visitors),
        &|n| bars.set(n),
    );
    bars.done();
    if ex.is_empty() {
        bail!("no examples: no visitor has events before a cut-off with a whole label window after it");
    }
    let p: Vec<f64> =
        ex.x.rows()
            .into_iter()
            .map(|r| {
                model
                    .predict(r.as_slice().expect("standard layout"))
                    .probability
            })
            .collect();
    let m = evaluation::evaluate(&p, &ex.y, true);
    let l = evaluation::evaluate(&ex.ladder_score, &ex.y, false);
    println!("model {} on {}", artifact.version, args.events.display());
    println!("{}", report::comparison(&m, &l));
    if let Some(dir) = &args.report_dir {
        std::fs::create_dir_all(dir)?;
        let json = serde_json::json!({ "model_version": artifact.version, "validation": m, "ladder_baseline": l });
        write_atomically(
            &dir.join("metrics.json"),
            &serde_json::to_string_pretty(&json)?,
        )?;
        report::plots(dir, &m, &l, &artifact.feature_names, &artifact.coefficients)
            .map_err(|e| anyhow::anyhow!("writing plots: {e}"))?;
        println!("wrote {}", dir.display());
    }
    Ok(())
}

#[derive(clap::Args, Debug)]
pub struct SuggestArgs {
    #[arg(long)]
    model: PathBuf,
    #[arg(long)]
    taxonomy: Option<PathBuf>,
    /// Points per unit of log-odds.
    #[arg(long, default_value_t = 10.0)]
    points_per_log_odds: f64,
}

/// Ladder points from the model: the change in log-odds that a first
/// occurrence of a type brings (count 0 → 1, i.e. ln 2 on the log scale,
/// through the type's standardized coefficient), times a scale.
pub fn suggest_ladder(args: SuggestArgs) -> anyhow::Result<()> {
    let taxonomy = load_taxonomy(args.taxonomy.as_deref())?;
    let text = std::fs::read_to_string(&args.model)
        .with_context(|| format!("reading {}", args.model.display()))?;
    let artifact: ModelArtifact = serde_json::from_str(&text)?;
    Model::from_artifact(&artifact, &taxonomy)?;
    println!(
        "# Ladder points suggested by model {} ({} points per unit of log-odds).",
        artifact.version, args.points_per_log_odds
    );
    println!("# Each is the log-odds a first occurrence adds, holding the rest fixed; review before use.");
    println!(
        "# Stages, half-lives and caps are the running taxonomy's. Changing points changes the"
    );
    println!("# ladder_points feature, so retrain the model with the new taxonomy afterwards.\n");
    for (i, t) in taxonomy.types().iter().enumerate() {
        let k = artifact
            .feature_names
            .iter()
            .position(|n| n == &format!("count.{}", t.name))
            .context("model lacks a count feature")?;
        let _ = i;
        let log_odds = artifact.coefficients[k] / artifact.scales[k] * std::f64::consts::LN_2;
        let points = (log_odds * args.points_per_log_odds * 10.0).round() / 10.0;
        println!("[[types]]");
        println!("name = {:?}", t.name);
        println!("stage = {:?}", t.stage.name());
        println!(
            "points = {points:.1}  # was {}; first occurrence: {log_odds:+.3} log-odds",
            t.points
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
    #[arg(long, default_value_t = 40_000)]
    visitors: usize,
    #[arg(long, default_value_t = 7)]
    seed: u64,
    #[arg(long, default_value_t = 60.0)]
    days: f64,
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
