//! From an event log to a model artifact, honestly judged: point-in-time
//! examples, a time-based split (or k folds by visitor), L2 strength chosen
//! on validation data, optional class weights that keep probabilities
//! calibrated, and held-out figures next to the ladder-only baseline.

use crate::domain::{Event, Millis, Taxonomy};
use crate::scoring::feature_names;
use crate::scoring::model::{Figures, Metrics, ModelArtifact, TrainingInfo, FORMAT};

use super::evaluation::{evaluate, Evaluation};
use super::examples::{build, data_end, Cutoffs, Examples};
use super::fit::{fit, FitOptions, Fitted};
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ClassWeight {
    None,
    /// Positives weigh (negatives ÷ positives); the intercept is corrected
    /// afterwards so probabilities stay calibrated.
    Balanced,
}

/// Which optimizer fits the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Solver {
    /// linfa-logistic as it is.
    Linfa,
    /// The same objective and L-BFGS, with a fused, multi-threaded cost and
    /// gradient on the mean loss ([`super::solver`]): several times faster
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

#[derive(Debug, Clone)]
pub struct SplitSizes {
    pub examples: usize,
    pub train: usize,
    pub validation: usize,
    pub test: usize,
    /// What the final model was fitted on.
    pub final_fit: usize,
    pub final_fit_positives: usize,
}

#[derive(Debug, Clone)]
pub struct TrainOutcome {
    pub artifact: ModelArtifact,
    /// The model on held-out examples.
    pub model: Evaluation,
    /// The ladder score alone on the same examples.
    pub ladder: Evaluation,
    pub trials: Vec<AlphaTrial>,
    pub chosen_lambda: f64,
    pub sizes: SplitSizes,
}

pub fn train(
    taxonomy: &Taxonomy,
    visitors: &[(String, Vec<Event>)],
    opts: &TrainOptions,
    now: Millis,
    progress: &dyn Progress,
) -> Result<TrainOutcome, TrainError> {
    let horizon_ms = (opts.horizon_days * 86_400_000.0) as i64;
    progress.step(
        "building point-in-time examples",
        Some(visitors.len() as u64),
    );
    let all = build(
        taxonomy,
        visitors,
        &opts.cutoffs,
        horizon_ms,
        data_end(visitors),
        &|n| progress.set(n),
    );
    progress.done();
    if all.is_empty() {
        return Err(TrainError::NoExamples);
    }
    let names = feature_names(taxonomy);
    let (held_out_p, held_out, final_fit, trials, chosen, sizes) = match &opts.validation {
        Validation::Time {
            validation_share,
            test_share,
        } => time_split(
            &all,
            &names,
            opts,
            horizon_ms,
            *validation_share,
            *test_share,
            progress,
        )?,
        Validation::KFold { folds, seed } => k_fold(&all, &names, opts, *folds, *seed, progress)?,
    };
    let model = evaluate(&held_out_p, &held_out.y, true);
    let ladder = evaluate(&held_out.ladder_score, &held_out.y, false);
    let mut artifact = ModelArtifact {
        format: FORMAT.to_string(),
        version: String::new(),
        created_at: now.to_rfc3339(),
        description: opts.description.clone(),
        feature_names: names,
        means: final_fit.means.clone(),
        scales: final_fit.scales.clone(),
        coefficients: final_fit.coefficients.clone(),
        intercept: final_fit.intercept,
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
        trials,
        chosen_lambda: chosen,
        sizes,
    })
}

/// `<UTC time>-<12 hex of the content hash>`: sortable, and unique per content.
pub fn version_id(a: &ModelArtifact, now: Millis) -> String {
    use sha2::{Digest, Sha256};
    let content = serde_json::json!({
        "features": a.feature_names,
        "means": a.means,
        "scales": a.scales,
        "coefficients": a.coefficients,
        "intercept": a.intercept,
        "taxonomy": a.taxonomy_fingerprint,
    });
    let digest = Sha256::digest(content.to_string().as_bytes());
    let hex: String = digest.iter().take(6).map(|b| format!("{b:02x}")).collect();
    let stamp: String = now
        .to_rfc3339()
        .chars()
        .filter(|c| c.is_ascii_digit())
        .take(14)
        .collect();
    format!("{stamp}-{hex}")
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

type SplitResult = (Vec<f64>, Examples, Fitted, Vec<AlphaTrial>, f64, SplitSizes);

#[allow(clippy::too_many_arguments)]
fn time_split(
    all: &Examples,
    names: &[String],
    opts: &TrainOptions,
    horizon_ms: i64,
    validation_share: f64,
    test_share: f64,
    progress: &dyn Progress,
) -> Result<SplitResult, TrainError> {
    let mut times: Vec<i64> = all.as_of.iter().map(|t| t.as_unix_millis()).collect();
    times.sort_unstable();
    let at = |q: f64| times[((times.len() as f64 * q) as usize).min(times.len() - 1)];
    let t1 = at(1.0 - validation_share - test_share);
    let t2 = at(1.0 - test_share);
    let when = |i: usize| all.as_of[i].as_unix_millis();
    // Each part's label windows end before the next part starts.
    let train = all.select(|i| when(i) + horizon_ms <= t1);
    let valid = all.select(|i| when(i) >= t1 && when(i) + horizon_ms <= t2);
    let test = all.select(|i| when(i) >= t2);
    let train_valid = all.select(|i| when(i) + horizon_ms <= t2);
    for (part, e) in [
        ("training", &train),
        ("validation", &valid),
        ("test", &test),
    ] {
        if e.positives() == 0 {
            return Err(TrainError::EmptySplit(part));
        }
    }
    let (trials, lambda) = choose_lambda(opts, progress, |lambda| {
        let f = fit_weighted(&train, names, opts, lambda)?;
        Ok(log_loss(&predict(&f, &valid), &valid.y))
    })?;
    progress.step("fitting the final model", None);
    let final_fit = fit_weighted(&train_valid, names, opts, lambda)?;
    progress.done();
    let p = predict(&final_fit, &test);
    let sizes = SplitSizes {
        examples: all.len(),
        train: train.len(),
        validation: valid.len(),
        test: test.len(),
        final_fit: train_valid.len(),
        final_fit_positives: train_valid.positives(),
    };
    Ok((p, test, final_fit, trials, lambda, sizes))
}

fn k_fold(
    all: &Examples,
    names: &[String],
    opts: &TrainOptions,
    folds: usize,
    seed: u64,
    progress: &dyn Progress,
) -> Result<SplitResult, TrainError> {
    let folds = folds.max(2);
    let fold_of = |i: usize| {
        let h = crate::domain::event::stable_hash(&format!("{seed}:{}", all.visitor[i]));
        (h % folds as u64) as usize
    };
    let out_of_fold = |lambda: f64| -> Result<Vec<f64>, TrainError> {
        let mut p = vec![0.0; all.len()];
        for k in 0..folds {
            let train = all.select(|i| fold_of(i) != k);
            let rows: Vec<usize> = (0..all.len()).filter(|&i| fold_of(i) == k).collect();
            let held = all.select(|i| fold_of(i) == k);
            let f = fit_weighted(&train, names, opts, lambda)?;
            for (r, q) in rows.into_iter().zip(predict(&f, &held)) {
                p[r] = q;
            }
        }
        Ok(p)
    };
    let (trials, lambda) = choose_lambda(opts, progress, |lambda| {
        Ok(log_loss(&out_of_fold(lambda)?, &all.y))
    })?;
    let p = out_of_fold(lambda)?;
    progress.step("fitting the final model", None);
    let final_fit = fit_weighted(all, names, opts, lambda)?;
    progress.done();
    let sizes = SplitSizes {
        examples: all.len(),
        train: all.len(),
        validation: all.len(),
        test: 0,
        final_fit: all.len(),
        final_fit_positives: all.positives(),
    };
    Ok((p, all.clone(), final_fit, trials, lambda, sizes))
}

/// Tries every λ; a solver failure at one strength is recorded, not fatal.
fn choose_lambda(
    opts: &TrainOptions,
    progress: &dyn Progress,
    loss_at: impl Fn(f64) -> Result<f64, TrainError>,
) -> Result<(Vec<AlphaTrial>, f64), TrainError> {
    progress.step("choosing the L2 strength", Some(opts.lambdas.len() as u64));
    let mut trials = Vec::new();
    let mut last_err = None;
    for (n, &lambda) in opts.lambdas.iter().enumerate() {
        let loss = match loss_at(lambda) {
            Ok(l) => Some(l),
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
        progress.set(n as u64 + 1);
    }
    progress.done();
    let best = trials
        .iter()
        .filter_map(|t| t.validation_log_loss.map(|l| (t.lambda, l)))
        .min_by(|a, b| a.1.total_cmp(&b.1));
    match best {
        Some((lambda, _)) => Ok((trials, lambda)),
        None => Err(last_err.unwrap_or(TrainError::NoExamples)),
    }
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
    let solve = |x: &ndarray::Array2<f64>, y: &[bool], o: &FitOptions| match opts.solver {
        Solver::Linfa => fit(x, y, names, o),
        Solver::Fused => {
            // Its tolerance is on the mean loss's gradient, not the sum's.
            let mut o = *o;
            o.tolerance_per_row = o.tolerance_per_row.max(1e-4);
            super::solver::fit_fused(x, y, &o)
        }
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

pub fn predict(f: &Fitted, data: &Examples) -> Vec<f64> {
    data.x
        .rows()
        .into_iter()
        .map(|r| f.probability(r.as_slice().expect("rows of a standard-layout array")))
        .collect()
}
