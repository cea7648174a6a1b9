//! From an event log to a model artifact, honestly judged: point-in-time
//! examples, a time-based split (or k folds by visitor), L2 strength chosen
//! on validation data, optional class weights that keep probabilities
//! calibrated, and held-out figures next to the ladder-only baseline.

use crate::domain::{Event, Millis, Taxonomy};
use crate::scoring::model::{Figures, Metrics, ModelArtifact, TrainingInfo, FORMAT};
use crate::scoring::{feature_names, Interactions};

use super::evaluation::{evaluate, Evaluation};
use super::examples::{build, data_end, Cutoffs, Examples};
use super::fit::{fit, interactions_of, with_products, FitOptions, Fitted};
use super::metrics::log_loss;
use super::TrainError;

/// How examples are held out.
#[derive(Debug, Clone, PartialEq)]
pub enum Validation {
    /// Train on earlier cut-offs, pick the L2 strength on the next
    /// `validation_share`, report on the last `test_share`.
    Time {
        validation_share: f64,
        test_share: f64,
    },
    /// k folds, a visitor's examples always in one fold; figures from the
    /// pooled out-of-fold predictions.
    KFold { folds: usize, seed: u64 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClassWeight {
    None,
    /// Positives weigh (negatives ÷ positives); the intercept is corrected
    /// afterwards so probabilities stay calibrated.
    Balanced,
}

/// Which optimizer fits the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Solver {
    /// linfa-logistic as it is.
    Linfa,
    /// The same objective and L-BFGS, with a fused, multi-threaded cost and
    /// gradient on the mean loss, in rung's own solver: several times faster
    /// on large logs.
    Fused,
}

#[derive(Debug, Clone)]
pub struct TrainOptions {
    pub horizon_days: f64,
    pub cutoffs: Cutoffs,
    pub validation: Validation,
    pub class_weight: ClassWeight,
    /// L2 strengths tried, per training example (linfa's alpha = λ × rows,
    /// since its loss is a sum over rows).
    pub lambdas: Vec<f64>,
    pub fit: FitOptions,
    pub solver: Solver,
    pub description: String,
    /// Time split: after the final fit, refit the intercept alone on the
    /// validation part (the most recent data before the test part), for
    /// when the base rate drifts.
    pub recalibrate: bool,
    /// Also weigh the product of every pair of features (squares
    /// included), standardized on each fit's own rows.
    pub interactions: bool,
}

impl Default for TrainOptions {
    fn default() -> Self {
        TrainOptions {
            horizon_days: 7.0,
            cutoffs: Cutoffs::SessionEnd,
            validation: Validation::Time {
                validation_share: 0.15,
                test_share: 0.15,
            },
            class_weight: ClassWeight::None,
            lambdas: vec![1e-5, 1e-4, 1e-3, 1e-2, 1e-1],
            fit: FitOptions::default(),
            solver: Solver::Fused,
            description: String::new(),
            recalibrate: false,
            interactions: false,
        }
    }
}

/// Steps report progress through this, so the library needs no terminal.
pub trait Progress {
    fn step(&self, name: &str, total: Option<u64>);
    fn set(&self, done: u64);
    fn done(&self);
}

/// Reports nothing.
pub struct Quiet;

impl Progress for Quiet {
    fn step(&self, _: &str, _: Option<u64>) {}
    fn set(&self, _: u64) {}
    fn done(&self) {}
}

#[derive(Debug, Clone, PartialEq)]
pub struct AlphaTrial {
    pub lambda: f64,
    /// `None` when the solver failed at this strength.
    pub validation_log_loss: Option<f64>,
}

/// Which part of the data an example serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Part {
    /// Fitted while the L2 strength is chosen, and by the final model.
    Train,
    /// Chooses the L2 strength; fitted by the final model.
    Validation,
    /// Judges the final model; never fitted.
    Test,
    /// Its label window crosses from the training part into validation, so
    /// it cannot serve either, but its label is known before the test part
    /// starts: fitted by the final model only.
    FinalOnly,
    /// Its label window reaches into the test part: used by nothing.
    Unused,
    /// k-fold validation: the fold (0-based) the example is held out in.
    Fold(usize),
}

impl Part {
    /// The name the training-set export writes: `train`, `validation`,
    /// `test`, `final_only`, `unused`, or the fold number.
    pub fn name(self) -> std::borrow::Cow<'static, str> {
        match self {
            Part::Train => "train".into(),
            Part::Validation => "validation".into(),
            Part::Test => "test".into(),
            Part::FinalOnly => "final_only".into(),
            Part::Unused => "unused".into(),
            Part::Fold(k) => k.to_string().into(),
        }
    }

    /// Whether the final model is fitted on it.
    pub fn in_final_fit(self) -> bool {
        !matches!(self, Part::Test | Part::Unused)
    }
}

/// The point-in-time examples of a log and the part each one serves: what
/// `rung examples` writes and `rung train` fits.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub examples: Examples,
    pub parts: Vec<Part>,
    pub horizon_ms: i64,
    /// The latest event in the log: no label window may pass it.
    pub data_end: Millis,
    /// Feature names, in the design matrix's column order.
    pub names: Vec<String>,
}

impl Prepared {
    /// Examples and purchases in a part.
    pub fn count(&self, part: Part) -> (usize, usize) {
        let rows = (0..self.examples.len()).filter(|&i| self.parts[i] == part);
        rows.fold((0, 0), |(n, p), i| {
            (n + 1, p + usize::from(self.examples.y[i]))
        })
    }

    /// Each part's examples and purchases, as the CLI and errors print
    /// them: `train 3082 (11 purchases), validation …`, or `5 folds`.
    pub fn part_counts(&self) -> String {
        let folds = self
            .parts
            .iter()
            .filter_map(|p| match p {
                Part::Fold(k) => Some(k + 1),
                _ => None,
            })
            .max();
        if let Some(folds) = folds {
            return format!("{folds} folds");
        }
        [
            Part::Train,
            Part::Validation,
            Part::Test,
            Part::FinalOnly,
            Part::Unused,
        ]
        .map(|p| {
            let (n, k) = self.count(p);
            format!("{} {n} ({k} purchases)", p.name())
        })
        .join(", ")
    }

    fn select(&self, keep: impl Fn(Part) -> bool) -> Examples {
        self.examples.select(|i| keep(self.parts[i]))
    }
}

#[derive(Debug, Clone)]
pub struct SplitSizes {
    pub examples: usize,
    pub train: usize,
    pub validation: usize,
    pub test: usize,
    /// k-fold validation: how many folds (train, validation and test are
    /// then all the examples).
    pub folds: Option<usize>,
    /// What the final model was fitted on.
    pub final_fit: usize,
    pub final_fit_positives: usize,
}

#[derive(Debug, Clone)]
pub struct TrainOutcome {
    pub artifact: ModelArtifact,
    /// The model on held-out examples: the test part, or with k folds the
    /// pooled out-of-fold predictions.
    pub model: Evaluation,
    /// The ladder score alone on the same examples.
    pub ladder: Evaluation,
    /// Time split: the model fitted on the training part at the chosen
    /// strength, on the validation part.
    pub validation: Option<Evaluation>,
    /// With [`TrainOptions::recalibrate`]: what refitting the intercept did.
    pub recalibration: Option<Recalibration>,
    pub trials: Vec<AlphaTrial>,
    pub chosen_lambda: f64,
    pub sizes: SplitSizes,
}

/// The intercept refitted on the validation part, and the test part's
/// expected calibration error before and after.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Recalibration {
    pub intercept_shift: f64,
    pub test_ece_before: Option<f64>,
    pub test_ece_after: Option<f64>,
}

/// The shift δ that makes `sigmoid(logit + δ)` fit `y` best (log loss):
/// where the mean prediction equals the base rate. Newton's method on one
/// variable; 0 for an empty or one-class part.
pub fn intercept_shift(logits: &[f64], y: &[bool]) -> f64 {
    let positives = y.iter().filter(|&&l| l).count();
    if positives == 0 || positives == y.len() {
        return 0.0;
    }
    let sigmoid = crate::scoring::model::sigmoid;
    let mut shift = 0.0;
    for _ in 0..100 {
        let (mut gradient, mut curvature) = (0.0, 0.0);
        for (&z, &label) in logits.iter().zip(y) {
            let p = sigmoid(z + shift);
            gradient += p - f64::from(u8::from(label));
            curvature += p * (1.0 - p);
        }
        let step = gradient / curvature.max(1e-12);
        shift -= step.clamp(-5.0, 5.0);
        if step.abs() < 1e-12 {
            break;
        }
    }
    shift
}

/// Builds the point-in-time examples and says which part each serves.
pub fn prepare(
    taxonomy: &Taxonomy,
    visitors: &[(String, Vec<Event>)],
    opts: &TrainOptions,
    progress: &dyn Progress,
) -> Result<Prepared, TrainError> {
    let horizon_ms = (opts.horizon_days * 86_400_000.0) as i64;
    progress.step(
        "building point-in-time examples",
        Some(visitors.len() as u64),
    );
    let data_end = data_end(visitors);
    let examples = build(
        taxonomy,
        visitors,
        &opts.cutoffs,
        horizon_ms,
        data_end,
        &|n| progress.set(n),
    );
    progress.done();
    if examples.is_empty() {
        return Err(TrainError::NoExamples(why_no_examples(
            visitors,
            &opts.cutoffs,
            opts.horizon_days,
            data_end,
        )));
    }
    let parts = match &opts.validation {
        Validation::Time {
            validation_share,
            test_share,
        } => time_parts(&examples, horizon_ms, *validation_share, *test_share),
        Validation::KFold { folds, seed } => fold_parts(&examples, visitors, *folds, *seed),
    };
    Ok(Prepared {
        examples,
        parts,
        horizon_ms,
        data_end,
        names: feature_names(taxonomy),
    })
}

/// Where the data starts and ends against the cut-offs and the horizon.
fn why_no_examples(
    visitors: &[(String, Vec<Event>)],
    cutoffs: &Cutoffs,
    horizon: f64,
    data_end: Millis,
) -> String {
    let data_start = visitors
        .iter()
        .filter_map(|(_, e)| e.first().map(|e| e.at))
        .min()
        .unwrap_or(data_end);
    let range = format!(
        "the data runs from {} to {} ({:.1} days)",
        data_start.to_rfc3339(),
        data_end.to_rfc3339(),
        data_end.millis_since(data_start) / 86_400_000.0
    );
    match cutoffs {
        Cutoffs::Fixed(cut) if *cut <= data_start => format!(
            "the cut-off {} comes before every event: {range}; use a later cut-off",
            cut.to_rfc3339()
        ),
        Cutoffs::Fixed(cut) => format!(
            "the cut-off {} with a {horizon}-day horizon needs events until {}, but {range}; use an earlier cut-off or a shorter --horizon-days",
            cut.to_rfc3339(),
            cut.saturating_add_millis((horizon * 86_400_000.0) as i64).to_rfc3339()
        ),
        _ => format!("{range}, and every cut-off's {horizon}-day label window passes its end; use a shorter --horizon-days"),
    }
}

/// Earlier cut-offs train, the next `validation_share` validates, the last
/// `test_share` tests; each part's label windows end before the next part
/// starts.
fn time_parts(
    all: &Examples,
    horizon_ms: i64,
    validation_share: f64,
    test_share: f64,
) -> Vec<Part> {
    let (t1, t2) = time_bounds(all, validation_share, test_share);
    all.as_of
        .iter()
        .map(|t| {
            let (start, end) = (
                t.as_unix_millis(),
                t.as_unix_millis().saturating_add(horizon_ms),
            );
            if start >= t2 {
                Part::Test
            } else if end > t2 {
                Part::Unused
            } else if start >= t1 {
                Part::Validation
            } else if end <= t1 {
                Part::Train
            } else {
                Part::FinalOnly
            }
        })
        .collect()
}

/// An existing model and the ladder alone on a log's point-in-time
/// examples: what `rung evaluate` reports.
pub fn judge(
    taxonomy: &Taxonomy,
    model: &crate::scoring::Model,
    visitors: &[(String, Vec<Event>)],
    cutoffs: &Cutoffs,
    horizon_days: f64,
    progress: &dyn Progress,
) -> Result<(Evaluation, Evaluation), TrainError> {
    progress.step(
        "building point-in-time examples",
        Some(visitors.len() as u64),
    );
    let end = data_end(visitors);
    let horizon_ms = (horizon_days * 86_400_000.0) as i64;
    let ex = build(taxonomy, visitors, cutoffs, horizon_ms, end, &|n| {
        progress.set(n)
    });
    progress.done();
    if ex.is_empty() {
        return Err(TrainError::NoExamples(why_no_examples(
            visitors,
            cutoffs,
            horizon_days,
            end,
        )));
    }
    let p: Vec<f64> =
        ex.x.rows()
            .into_iter()
            .map(|r| {
                model
                    .predict(r.as_slice().expect("rows of a standard-layout array"))
                    .probability
            })
            .collect();
    Ok((
        evaluate(&p, &ex.y, true),
        evaluate(&ex.ladder_score, &ex.y, false),
    ))
}

/// Where validation and test start: the cut-off time quantiles.
fn time_bounds(all: &Examples, validation_share: f64, test_share: f64) -> (i64, i64) {
    let mut times: Vec<i64> = all.as_of.iter().map(|t| t.as_unix_millis()).collect();
    times.sort_unstable();
    let at = |q: f64| times[((times.len() as f64 * q) as usize).min(times.len() - 1)];
    (
        at(1.0 - validation_share - test_share),
        at(1.0 - test_share),
    )
}

/// A visitor's examples always in one fold, chosen by a hash of the
/// visitor's id: the same whatever order the log's files come in.
fn fold_parts(
    all: &Examples,
    visitors: &[(String, Vec<Event>)],
    folds: usize,
    seed: u64,
) -> Vec<Part> {
    let folds = folds.max(2);
    all.visitor
        .iter()
        .map(|&v| {
            let h = crate::domain::event::stable_hash(&format!("{seed}:{}", visitors[v].0));
            Part::Fold((h % folds as u64) as usize)
        })
        .collect()
}

/// Fits and judges a model on prepared examples.
pub fn train(
    taxonomy: &Taxonomy,
    prepared: &Prepared,
    opts: &TrainOptions,
    now: Millis,
    progress: &dyn Progress,
) -> Result<TrainOutcome, TrainError> {
    let names = &prepared.names;
    let split = match &opts.validation {
        Validation::Time {
            validation_share,
            test_share,
        } => time_split(prepared, opts, (*validation_share, *test_share), progress)?,
        Validation::KFold { folds, .. } => k_fold(prepared, opts, (*folds).max(2), progress)?,
    };
    let Split {
        mut predicted,
        held_out,
        validation,
        mut final_fit,
        trials,
        lambda: chosen,
        sizes,
    } = split;
    let recalibration = match (&opts.validation, opts.recalibrate) {
        (Validation::Time { .. }, true) => {
            let valid = prepared.select(|p| p == Part::Validation);
            let logits: Vec<f64> = predict(&final_fit, &valid)
                .iter()
                .map(|p| {
                    let p = p.clamp(1e-15, 1.0 - 1e-15);
                    (p / (1.0 - p)).ln()
                })
                .collect();
            let shift = intercept_shift(&logits, &valid.y);
            let before = evaluate(&predicted, &held_out.y, true).expected_calibration_error();
            final_fit.intercept += shift;
            predicted = predict(&final_fit, &held_out);
            Some(Recalibration {
                intercept_shift: shift,
                test_ece_before: before,
                test_ece_after: evaluate(&predicted, &held_out.y, true)
                    .expected_calibration_error(),
            })
        }
        _ => None,
    };
    let model = evaluate(&predicted, &held_out.y, true);
    let ladder = evaluate(&held_out.ladder_score, &held_out.y, false);
    let mut feature_names = names.clone();
    if final_fit.interactions.is_some() {
        feature_names.extend(Interactions::names(names));
    }
    let mut artifact = ModelArtifact {
        format: FORMAT.to_string(),
        version: String::new(),
        created_at: now.to_rfc3339(),
        description: opts.description.clone(),
        feature_names,
        means: final_fit.means.clone(),
        scales: final_fit.scales.clone(),
        coefficients: final_fit.coefficients.clone(),
        intercept: final_fit.intercept,
        interactions: final_fit.interactions.clone(),
        horizon_days: opts.horizon_days,
        taxonomy_fingerprint: taxonomy.fingerprint().to_string(),
        taxonomy: taxonomy.signature().to_vec(),
        training: TrainingInfo {
            examples: sizes.final_fit,
            positives: sizes.final_fit_positives,
            alpha: chosen,
            max_iterations: opts.fit.max_iterations,
        },
        metrics: Metrics {
            validation: figures(&model),
            ladder_baseline: figures(&ladder),
        },
    };
    artifact.version = version_id(&artifact, now);
    Ok(TrainOutcome {
        artifact,
        model,
        ladder,
        validation,
        recalibration,
        trials,
        chosen_lambda: chosen,
        sizes,
    })
}

/// `<UTC time>-<12 hex of the content hash>`: sortable, and unique per content.
pub fn version_id(a: &ModelArtifact, now: Millis) -> String {
    let content = serde_json::json!({
        "features": a.feature_names,
        "means": a.means,
        "scales": a.scales,
        "coefficients": a.coefficients,
        "intercept": a.intercept,
        "interactions": a.interactions,
        "taxonomy": a.taxonomy_fingerprint,
    });
    super::files::version_id(&now.to_rfc3339(), &content)
}

pub fn figures(e: &Evaluation) -> Figures {
    Figures {
        examples: e.examples,
        positives: e.positives,
        base_rate: e.base_rate,
        roc_auc: e.roc_auc,
        pr_auc: e.pr_auc,
        log_loss: e.log_loss,
        brier: e.brier,
    }
}

/// What a validation scheme hands back to [`train`].
struct Split {
    /// The model's predictions on `held_out`.
    predicted: Vec<f64>,
    held_out: Examples,
    validation: Option<Evaluation>,
    final_fit: Fitted,
    trials: Vec<AlphaTrial>,
    lambda: f64,
    sizes: SplitSizes,
}

fn time_split(
    prepared: &Prepared,
    opts: &TrainOptions,
    shares: (f64, f64),
    progress: &dyn Progress,
) -> Result<Split, TrainError> {
    let names = &prepared.names;
    let train = prepared.select(|p| p == Part::Train);
    let valid = prepared.select(|p| p == Part::Validation);
    let test = prepared.select(|p| p == Part::Test);
    let final_rows = prepared.select(Part::in_final_fit);
    for (part, e) in [
        (Part::Train, &train),
        (Part::Validation, &valid),
        (Part::Test, &test),
    ] {
        if e.positives() == 0 {
            return Err(empty_part(prepared, opts, shares, part));
        }
    }
    let (trials, lambda, valid_p) = choose_lambda(opts, progress, &valid.y, |lambda| {
        let f = fit_weighted(&train, names, opts, lambda)?;
        Ok(predict(&f, &valid))
    })?;
    progress.step("fitting the final model", None);
    let final_fit = fit_weighted(&final_rows, names, opts, lambda)?;
    progress.done();
    let predicted = predict(&final_fit, &test);
    let sizes = SplitSizes {
        examples: prepared.examples.len(),
        train: train.len(),
        validation: valid.len(),
        test: test.len(),
        folds: None,
        final_fit: final_rows.len(),
        final_fit_positives: final_rows.positives(),
    };
    Ok(Split {
        predicted,
        held_out: test,
        validation: Some(evaluate(&valid_p, &valid.y, true)),
        final_fit,
        trials,
        lambda,
        sizes,
    })
}

/// The "no purchases in a part" error, with every part's counts and what
/// would work instead.
fn empty_part(
    prepared: &Prepared,
    opts: &TrainOptions,
    (validation_share, test_share): (f64, f64),
    part: Part,
) -> TrainError {
    let counts = prepared.part_counts();
    let (first, last) = prepared
        .examples
        .as_of
        .iter()
        .fold((i64::MAX, i64::MIN), |(lo, hi), t| {
            (lo.min(t.as_unix_millis()), hi.max(t.as_unix_millis()))
        });
    let day = 86_400_000.0;
    let span_days = (last - first) as f64 / day;
    let (t1, t2) = time_bounds(&prepared.examples, validation_share, test_share);
    let validation_days = (t2 - t1) as f64 / day;
    TrainError::EmptySplit {
        part: part.name().into_owned(),
        detail: format!(
            "examples per part with a {horizon} day horizon: {counts}. The cut-offs span {span_days:.1} days and the validation part {validation_days:.1}; an example's label window must end before the next part starts, so a horizon longer than the validation part leaves little to train and validate on. Try a shorter --horizon-days (under {validation_days:.1}), --validation kfold, more data, or the ladder alone",
            horizon = opts.horizon_days,
        ),
    }
}

fn k_fold(
    prepared: &Prepared,
    opts: &TrainOptions,
    folds: usize,
    progress: &dyn Progress,
) -> Result<Split, TrainError> {
    let (all, names) = (&prepared.examples, &prepared.names);
    let out_of_fold = |lambda: f64| -> Result<Vec<f64>, TrainError> {
        let mut p = vec![0.0; all.len()];
        for k in 0..folds {
            let held = Part::Fold(k);
            let train = prepared.select(|p| p != held);
            let rows: Vec<usize> = (0..all.len())
                .filter(|&i| prepared.parts[i] == held)
                .collect();
            let f = fit_weighted(&train, names, opts, lambda)?;
            for (r, q) in rows
                .into_iter()
                .zip(predict(&f, &prepared.select(|p| p == held)))
            {
                p[r] = q;
            }
        }
        Ok(p)
    };
    let (trials, lambda, predicted) = choose_lambda(opts, progress, &all.y, out_of_fold)?;
    progress.step("fitting the final model", None);
    let final_fit = fit_weighted(all, names, opts, lambda)?;
    progress.done();
    let sizes = SplitSizes {
        examples: all.len(),
        train: all.len(),
        validation: all.len(),
        test: 0,
        folds: Some(folds),
        final_fit: all.len(),
        final_fit_positives: all.positives(),
    };
    Ok(Split {
        predicted,
        held_out: all.clone(),
        validation: None,
        final_fit,
        trials,
        lambda,
        sizes,
    })
}

/// How far the L2 search may widen past the grid's edges (per example).
const WIDEST_LAMBDA: (f64, f64) = (1e-9, 10.0);

/// Tries every λ, judged by the log loss of the predictions `predict_at`
/// makes for examples labelled `y`; a solver failure at one strength is
/// recorded, not fatal. When the best strength is at an edge of the grid,
/// the grid widens that way, tenfold at a time, until the best is inside
/// it (or [`WIDEST_LAMBDA`] is reached). Returns the trials in order of
/// strength, the best λ and its predictions.
fn choose_lambda(
    opts: &TrainOptions,
    progress: &dyn Progress,
    y: &[bool],
    predict_at: impl Fn(f64) -> Result<Vec<f64>, TrainError>,
) -> Result<(Vec<AlphaTrial>, f64, Vec<f64>), TrainError> {
    progress.step("choosing the L2 strength", Some(opts.lambdas.len() as u64));
    let mut trials: Vec<AlphaTrial> = Vec::new();
    let mut last_err = None;
    let mut best: Option<(f64, f64, Vec<f64>)> = None;
    let mut queue: std::collections::VecDeque<f64> = opts.lambdas.iter().copied().collect();
    while let Some(lambda) = queue.pop_front() {
        let loss = match predict_at(lambda) {
            Ok(p) => {
                let loss = log_loss(&p, y);
                if best.as_ref().is_none_or(|b| loss < b.1) {
                    best = Some((lambda, loss, p));
                }
                Some(loss)
            }
            Err(e @ TrainError::Solver(_)) => {
                tracing::warn!(lambda, error = %e, "fit failed at this L2 strength");
                last_err = Some(e);
                None
            }
            Err(e) => return Err(e),
        };
        trials.push(AlphaTrial {
            lambda,
            validation_log_loss: loss,
        });
        progress.set(trials.len() as u64);
        if queue.is_empty() {
            let tried: Vec<f64> = trials.iter().map(|t| t.lambda).collect();
            if let Some(next) = best
                .as_ref()
                .and_then(|b| widen(&tried, b.0, WIDEST_LAMBDA))
            {
                queue.push_back(next);
            }
        }
    }
    progress.done();
    trials.sort_by(|a, b| a.lambda.total_cmp(&b.lambda));
    match best {
        Some((lambda, _, p)) => Ok((trials, lambda, p)),
        None => {
            Err(last_err
                .unwrap_or_else(|| TrainError::NoExamples("no L2 strength was tried".into())))
        }
    }
}

/// The next L2 strength to try when `best` sits at an edge of those
/// `tried`: tenfold past that edge, if still within `bounds`. None when the
/// best is inside, or fewer than two were tried (no edge to speak of).
pub(super) fn widen(tried: &[f64], best: f64, bounds: (f64, f64)) -> Option<f64> {
    if tried.len() < 2 {
        return None;
    }
    let (lo, hi) = tried.iter().fold((f64::INFINITY, 0.0f64), |(lo, hi), &t| {
        (lo.min(t), hi.max(t))
    });
    let next = if best == lo {
        lo / 10.0
    } else if best == hi {
        hi * 10.0
    } else {
        return None;
    };
    (bounds.0..=bounds.1).contains(&next).then_some(next)
}

/// Fits with λ × rows as linfa's alpha; with balanced class weights the
/// positives are repeated and the intercept corrected by −ln(weight).
fn fit_weighted(
    data: &Examples,
    names: &[String],
    opts: &TrainOptions,
    lambda: f64,
) -> Result<Fitted, TrainError> {
    let mut fit_opts = opts.fit;
    fit_opts.alpha = (lambda * data.len() as f64).max(1e-9);
    let solve = |x: &ndarray::Array2<f64>, y: &[bool], o: &FitOptions| {
        if !opts.interactions {
            return solve_plain(opts.solver, x, y, names, o);
        }
        check_interaction_size(x.nrows(), names.len())?;
        let all: Vec<usize> = (0..names.len()).collect();
        let i = interactions_of(x, &all);
        let mut terms = names.to_vec();
        terms.extend(Interactions::names(names));
        let mut f = solve_plain(opts.solver, &with_products(x, &all, &i), y, &terms, o)?;
        f.interactions = Some(i);
        Ok(f)
    };
    match opts.class_weight {
        ClassWeight::None => solve(&data.x, &data.y, &fit_opts),
        ClassWeight::Balanced => {
            let pos = data.positives().max(1);
            let weight = ((data.len() - pos) as f64 / pos as f64)
                .round()
                .clamp(1.0, 100.0) as usize;
            let mut rows = Vec::with_capacity(data.len() + pos * (weight - 1));
            for (i, &label) in data.y.iter().enumerate() {
                let copies = if label { weight } else { 1 };
                rows.extend(std::iter::repeat_n(i, copies));
            }
            let x = data.x.select(ndarray::Axis(0), &rows);
            let y: Vec<bool> = rows.iter().map(|&i| data.y[i]).collect();
            fit_opts.alpha = (lambda * y.len() as f64).max(1e-9);
            let mut f = solve(&x, &y, &fit_opts)?;
            f.intercept -= (weight as f64).ln();
            Ok(f)
        }
    }
}

fn solve_plain(
    solver: Solver,
    x: &ndarray::Array2<f64>,
    y: &[bool],
    names: &[String],
    o: &FitOptions,
) -> Result<Fitted, TrainError> {
    match solver {
        Solver::Linfa => fit(x, y, names, o),
        Solver::Fused => {
            // Its tolerance is on the mean loss's gradient, not the sum's.
            let mut o = *o;
            o.tolerance_per_row = o.tolerance_per_row.max(1e-4);
            super::solver::fit_fused(x, y, &o)
        }
    }
}

/// The most the examples with their products may take in memory.
const MAX_INTERACTION_BYTES: usize = 4 << 30;

/// Refuses an interaction fit whose rows with their products would not fit
/// [`MAX_INTERACTION_BYTES`], before allocating them.
fn check_interaction_size(rows: usize, features: usize) -> Result<(), TrainError> {
    let terms = features + features * (features + 1) / 2;
    let bytes = rows.saturating_mul(terms).saturating_mul(8);
    if bytes > MAX_INTERACTION_BYTES {
        return Err(TrainError::TooLarge(format!(
            "with --interactions pairwise, {rows} examples × {terms} terms take {:.1} GiB, over the {} GiB this fit allows; use fewer cut-offs (session-end makes one example per session), a shorter log, or no interactions",
            bytes as f64 / (1u64 << 30) as f64,
            MAX_INTERACTION_BYTES >> 30
        )));
    }
    Ok(())
}

pub fn predict(f: &Fitted, data: &Examples) -> Vec<f64> {
    data.x
        .rows()
        .into_iter()
        .map(|r| f.probability(r.as_slice().expect("rows of a standard-layout array")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Predictions whose log loss is lowest at `at`: every example gets
    /// probability 0.5 ± the distance from `at` in decades.
    fn best_at(at: f64) -> impl Fn(f64) -> Result<Vec<f64>, TrainError> {
        move |lambda: f64| {
            let off = (lambda.log10() - at.log10()).abs().min(4.0) / 10.0;
            Ok(vec![0.5 + off, 0.5 - off])
        }
    }

    #[test]
    fn an_interaction_fit_too_large_for_memory_is_refused_with_its_size() {
        // 42 features: 42 + 903 = 945 terms of 8 bytes; 4 GiB holds
        // 568,117 such rows.
        assert!(check_interaction_size(568_117, 42).is_ok());
        let e = check_interaction_size(1_000_000, 42)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("1000000 examples × 945 terms take 7.0 GiB"),
            "{e}"
        );
    }

    #[test]
    fn the_l2_search_widens_past_an_edge_until_the_best_is_inside() {
        let opts = TrainOptions::default(); // 1e-5 ..= 1e-1
        let y = [false, true];
        // Best at 10 (two decades above the grid): 1 and 10 are added; 100
        // would pass the widest strength allowed.
        let (trials, lambda, _) = choose_lambda(&opts, &Quiet, &y, best_at(10.0)).unwrap();
        let tried: Vec<f64> = trials.iter().map(|t| t.lambda).collect();
        assert_eq!(lambda, 10.0);
        assert_eq!(tried.len(), 7, "{tried:?}");
        assert!((tried[5] - 1.0).abs() < 1e-12 && (tried[6] - 10.0).abs() < 1e-12);
        // Best at 1e-7: widened down by two decades, then once more to see
        // that 1e-8 is worse.
        let (trials, lambda, _) = choose_lambda(&opts, &Quiet, &y, best_at(1e-7)).unwrap();
        assert!((lambda - 1e-7).abs() < 1e-19, "{lambda}");
        assert_eq!(trials.len(), 8);
        assert!(trials.windows(2).all(|w| w[0].lambda < w[1].lambda));
        // Best inside the grid: nothing is added.
        let (trials, lambda, _) = choose_lambda(&opts, &Quiet, &y, best_at(1e-3)).unwrap();
        assert_eq!((trials.len(), lambda), (5, 1e-3));
    }

    #[test]
    fn the_refitted_intercept_makes_the_mean_prediction_the_base_rate() {
        // Logits that predict about 12% where 3 of 10 bought: the first-order
        // condition of log loss in the intercept is Σ p = Σ y.
        let logits = [-2.0, -1.5, -2.5, -2.0, -1.0, -3.0, -2.2, -1.8, -2.0, -1.9];
        let y = [
            true, false, true, false, true, false, false, false, false, false,
        ];
        let shift = intercept_shift(&logits, &y);
        let sigmoid = crate::scoring::model::sigmoid;
        let sum: f64 = logits.iter().map(|z| sigmoid(z + shift)).sum();
        assert!((sum - 3.0).abs() < 1e-9, "Σp = {sum}, shift {shift}");
        assert!(shift > 0.5, "{shift}");
        assert_eq!(intercept_shift(&logits, &[false; 10]), 0.0);
    }
}
