//! Tabular training mode: a CSV feature table a data scientist already has,
//! in; a cross-validated logistic model for evaluation and export, out. It
//! does not feed the event-scoring service, whose features come from
//! `scoring::features`.
//!
//! The steps: read the file keeping 1-based line numbers, so every complaint
//! can name its line; decide each column's encoding (numbers, possibly
//! log-scaled, or one-hot levels); encode rows with the same [`RowEncoder`]
//! that later transforms new rows; stratified, shuffled k-fold
//! cross-validation over a small grid of L2 strengths; one final fit on every
//! row with the strength that had the lowest out-of-fold log loss.
//!
//! Here: the options, the errors and the training itself. Reading the file
//! is `read`'s, the columns' encoding `encoding`'s, the folds
//! `folds`', the artifact `artifact`'s. With the event-log pipeline it
//! shares the fit, the interactions (`crate::scoring::Interactions`), the
//! widening L2 search, the metrics, the version id and the atomic write.

use std::fmt;
use std::path::PathBuf;

use ndarray::{Array2, Axis, ShapeBuilder};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::domain::Millis;
pub use crate::scoring::Interactions;

use super::fit::{interactions_of, FitOptions, Fitted};
use super::metrics::{brier, log_loss, pr_auc, roc_auc};
use super::TrainError;

mod artifact;
mod encoding;
mod folds;
mod read;

use artifact::version_id;
pub use artifact::{write_artifact, AlphaScore, TableMetrics, TableModelArtifact, TableReport};
pub use encoding::{ColumnEncoding, Encoding, RowEncoder};
pub use folds::stratified_folds;
pub use read::parse_label;
use read::{check_options, decode, parse_table, plan_encoding, shorten, Parsed};

/// The artifact format this module writes and reads.
pub const FORMAT: &str = "rung.table-model.v1";

/// How far the alpha search may widen past the grid's edges.
const WIDEST_ALPHA: (f64, f64) = (1e-4, 1e6);

#[derive(Debug, Clone, PartialEq)]
pub struct TableOptions {
    pub path: PathBuf,
    /// The label column: true/false, 1/0 or yes/no, any case.
    pub label: String,
    /// Columns one-hot encoded even though their values are numbers: codes
    /// such as a browser or region id, whose order means nothing.
    pub categorical: Vec<String>,
    /// Columns that must hold numbers: a value that is not one makes its row
    /// malformed, where otherwise it would turn the column categorical.
    pub numeric: Vec<String>,
    /// Columns left out of the model: ids, or anything known only afterwards.
    pub exclude: Vec<String>,
    /// ln(1 + x) for numeric columns with no negative value: counts and
    /// durations are skewed, and the log makes them closer to linear in the
    /// log-odds.
    pub log_scale: bool,
    pub folds: usize,
    /// Shuffles rows into folds.
    pub seed: u64,
    /// Up to this many malformed rows are skipped and counted; one more stops
    /// training with an error naming the first.
    pub max_bad_rows: usize,
    /// A categorical column with more distinct values than this is refused:
    /// usually a numeric column with a stray non-number, or an id.
    pub max_levels: usize,
    /// L2 strengths tried (linfa's alpha, scikit-learn's 1/C, on standardized
    /// features); the lowest cross-validated log loss wins, the first on a tie.
    pub alphas: Vec<f64>,
    pub max_iterations: u64,
    /// See [`FitOptions::tolerance_per_row`].
    pub tolerance_per_row: f64,
    /// Add every pairwise product of the standardized numeric features
    /// ([`Interactions`]).
    pub interactions: bool,
}

impl TableOptions {
    /// The defaults: every column as its values suggest, non-negative
    /// numbers log-scaled, at most 100 levels per categorical column, 5
    /// folds, seed 0, no malformed row tolerated, L2 strengths 1, 10, 100
    /// and 1000, 500 iterations.
    pub fn new(path: impl Into<PathBuf>, label: impl Into<String>) -> Self {
        TableOptions {
            path: path.into(),
            label: label.into(),
            categorical: Vec::new(),
            numeric: Vec::new(),
            exclude: Vec::new(),
            log_scale: true,
            folds: 5,
            seed: 0,
            max_bad_rows: 0,
            max_levels: 100,
            alphas: vec![1.0, 10.0, 100.0, 1000.0],
            max_iterations: 500,
            tolerance_per_row: 1e-5,
            interactions: false,
        }
    }
}

/// Why a data row cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RowProblem {
    FieldCount {
        expected: usize,
        found: usize,
    },
    /// A quoted field that does not close, or text after its closing quote.
    Quote,
    Label {
        value: String,
    },
    Number {
        column: String,
        value: String,
    },
}

impl fmt::Display for RowProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RowProblem::FieldCount { expected, found } => {
                write!(f, "expected {expected} fields, found {found}")
            }
            RowProblem::Quote => write!(f, "a quoted field is not closed properly"),
            RowProblem::Label { value } => write!(
                f,
                "label {:?} is not one of true/false, 1/0, yes/no",
                shorten(value)
            ),
            RowProblem::Number { column, value } => {
                write!(f, "column {column:?}: {:?} is not a number", shorten(value))
            }
        }
    }
}

/// A malformed row: its 1-based line in the file and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BadRow {
    pub line: usize,
    pub problem: RowProblem,
}

impl fmt::Display for BadRow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.problem)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TableError {
    #[error("{path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: line {line} is not UTF-8 text")]
    NotUtf8 { path: String, line: usize },
    #[error("{path}: the file is empty")]
    Empty { path: String },
    #[error("{path}: line {line} looks like data, not a header (every field is a number); the first line must name the columns")]
    NoHeader { path: String, line: usize },
    #[error("{path}: header (line {line}): {problem}")]
    BadHeader {
        path: String,
        line: usize,
        problem: String,
    },
    #[error("{path}: no label column {label:?}; the header has {columns}")]
    MissingLabel {
        path: String,
        label: String,
        columns: String,
    },
    #[error("{path}: `{option}` names column {column:?}, which the header does not have")]
    UnknownColumn {
        path: String,
        option: &'static str,
        column: String,
    },
    #[error("invalid options: {0}")]
    Options(String),
    #[error(
        "{path}: {count} malformed row(s), more than max_bad_rows ({max}); the first is {first}"
    )]
    TooManyBadRows {
        path: String,
        count: usize,
        max: usize,
        first: BadRow,
    },
    #[error("{path}: no data rows after the header")]
    NoRows { path: String },
    #[error("{path}: no feature columns besides the label")]
    NoFeatures { path: String },
    #[error("{path}: column {column:?} has {levels} distinct values, more than max_levels ({max}); it is categorical because {reason}. List it in `numeric` or `exclude`, or raise max_levels")]
    TooManyLevels {
        path: String,
        column: String,
        levels: usize,
        max: usize,
        reason: String,
    },
    #[error("{path}: {positives} positive and {negatives} negative rows; {folds}-fold cross-validation needs at least {folds} of each")]
    TooFewRows {
        path: String,
        positives: usize,
        negatives: usize,
        folds: usize,
    },
    #[error(
        "{path}: feature {feature:?} has values too large to standardize; log-scale or rescale it"
    )]
    TooLarge { path: String, feature: String },
    #[error("fitting with alpha {alpha} on {part}: {source}")]
    Fit {
        alpha: f64,
        part: String,
        #[source]
        source: TrainError,
    },
    #[error("the header has no column {column:?}, which the encoding needs")]
    MissingColumn { column: String },
    #[error("{0}")]
    Row(BadRow),
    #[error("{path}: {source}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("not a {FORMAT} artifact: {0}")]
    Artifact(String),
}

/// Fits with the fused solver, whose evaluation budget ends a fit that
/// linfa-logistic's line search would loop on forever (degenerate or
/// separable parts, which random folds of small tables can produce).
fn fit_guarded(
    x: &Array2<f64>,
    y: &[bool],
    _names: &[String],
    opts: &FitOptions,
) -> Result<Fitted, TrainError> {
    super::solver::fit_fused(x, y, opts)
}

/// Reads `opts.path`, cross-validates, fits on every row.
pub fn train_table(opts: &TableOptions) -> Result<TableReport, TableError> {
    train_table_at(opts, Millis::now())
}

/// [`train_table`] with the creation time given.
pub fn train_table_at(opts: &TableOptions, now: Millis) -> Result<TableReport, TableError> {
    let path = opts.path.display().to_string();
    let bytes = std::fs::read(&opts.path).map_err(|source| TableError::Read {
        path: path.clone(),
        source,
    })?;
    let source = opts
        .path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.clone());
    train_bytes(&path, &source, &bytes, opts, now)
}

fn train_bytes(
    path: &str,
    source: &str,
    bytes: &[u8],
    opts: &TableOptions,
    now: Millis,
) -> Result<TableReport, TableError> {
    check_options(opts)?;
    let text = decode(path, bytes)?;
    let parsed = parse_table(path, &text, opts)?;
    if parsed.bad.len() > opts.max_bad_rows {
        return Err(TableError::TooManyBadRows {
            path: path.to_string(),
            count: parsed.bad.len(),
            max: opts.max_bad_rows,
            first: parsed.bad[0].clone(),
        });
    }
    if parsed.rows.is_empty() {
        return Err(TableError::NoRows {
            path: path.to_string(),
        });
    }
    let mut encoding = plan_encoding(path, &parsed, opts)?;
    if encoding.width() == 0 {
        return Err(TableError::NoFeatures {
            path: path.to_string(),
        });
    }
    let mut x = encode_rows(&encoding, &parsed)?;
    if opts.interactions {
        encoding.interactions = Some(interactions_of(&x, &encoding.numeric_offsets()));
        x = encode_rows(&encoding, &parsed)?;
    }
    let names = encoding.feature_names();
    let y: Vec<bool> = parsed.rows.iter().map(|r| r.label).collect();
    let positives = y.iter().filter(|&&b| b).count();
    let negatives = y.len() - positives;
    if positives.min(negatives) < opts.folds {
        return Err(TableError::TooFewRows {
            path: path.to_string(),
            positives,
            negatives,
            folds: opts.folds,
        });
    }
    check_scalable(path, &x, &names)?;

    let folds = stratified_folds(&y, opts.folds, opts.seed);
    let mut alpha_search: Vec<AlphaScore> = Vec::with_capacity(opts.alphas.len());
    let mut best: Option<(f64, CrossValidation)> = None;
    let mut queue: std::collections::VecDeque<f64> = opts.alphas.iter().copied().collect();
    while let Some(alpha) = queue.pop_front() {
        let cv = cross_validate(&x, &y, &names, &folds, opts, alpha)?;
        let score = AlphaScore {
            alpha,
            log_loss: log_loss(&cv.out_of_fold, &y),
            roc_auc: roc_auc(&cv.out_of_fold, &y),
            mean_fold_roc_auc: mean(&cv.fold_roc_auc),
        };
        if best.as_ref().is_none_or(|(loss, _)| score.log_loss < *loss) {
            best = Some((score.log_loss, cv));
        }
        alpha_search.push(score);
        // The best at an edge of the grid: try tenfold past it.
        if queue.is_empty() {
            let tried: Vec<f64> = alpha_search.iter().map(|a| a.alpha).collect();
            if let Some(next) = best
                .as_ref()
                .and_then(|(_, cv)| super::pipeline::widen(&tried, cv.alpha, WIDEST_ALPHA))
            {
                queue.push_back(next);
            }
        }
    }
    alpha_search.sort_by(|a, b| a.alpha.total_cmp(&b.alpha));
    let all: Vec<usize> = (0..y.len()).collect();
    let Some((_, cv)) = best else {
        return Err(TableError::Options("alphas is empty".into()));
    };
    let fitted = fit_guarded(
        &column_major(&x, &all),
        &y,
        &names,
        &fit_options(opts, cv.alpha),
    )
    .map_err(|source| TableError::Fit {
        alpha: cv.alpha,
        part: "all rows".into(),
        source,
    })?;

    let metrics = TableMetrics {
        rows: y.len(),
        positives,
        base_rate: positives as f64 / y.len() as f64,
        bad_rows_skipped: parsed.bad.len(),
        folds: opts.folds,
        seed: opts.seed,
        alpha: cv.alpha,
        alpha_search,
        mean_fold_roc_auc: mean(&cv.fold_roc_auc),
        fold_roc_auc: cv.fold_roc_auc,
        pooled_roc_auc: roc_auc(&cv.out_of_fold, &y),
        pooled_pr_auc: pr_auc(&cv.out_of_fold, &y),
        pooled_log_loss: log_loss(&cv.out_of_fold, &y),
        pooled_brier: brier(&cv.out_of_fold, &y),
    };
    let mut artifact = TableModelArtifact {
        format: FORMAT.to_string(),
        version: String::new(),
        created_at: now.to_rfc3339(),
        source: source.to_string(),
        source_sha256: format!("{:x}", Sha256::digest(bytes)),
        label: parsed.header[parsed.label].clone(),
        encoding,
        feature_names: names,
        means: fitted.means,
        scales: fitted.scales,
        coefficients: fitted.coefficients,
        intercept: fitted.intercept,
        metrics,
    };
    artifact.version = version_id(&artifact);
    Ok(TableReport {
        artifact,
        out_of_fold: parsed
            .rows
            .iter()
            .map(|r| r.line)
            .zip(cv.out_of_fold)
            .collect(),
        bad_rows: parsed.bad,
    })
}

fn encode_rows(encoding: &Encoding, parsed: &Parsed) -> Result<Array2<f64>, TableError> {
    let encoder = encoding.bind(&parsed.header)?;
    let width = encoder.width();
    let mut data = vec![0.0; parsed.rows.len() * width];
    for (row, out) in parsed.rows.iter().zip(data.chunks_mut(width.max(1))) {
        encoder.encode_into(&row.fields, out).map_err(|problem| {
            TableError::Row(BadRow {
                line: row.line,
                problem,
            })
        })?;
    }
    Array2::from_shape_vec((parsed.rows.len(), width), data)
        .map_err(|e| TableError::Options(format!("internal: {e}")))
}

/// Values so large that their mean or spread overflows would reach the
/// solver as infinities (and `fit`'s standardization would quietly give such
/// a column scale 1); refuse them here with the feature's name.
fn check_scalable(path: &str, x: &Array2<f64>, names: &[String]) -> Result<(), TableError> {
    let n = x.nrows().max(1) as f64;
    for (j, column) in x.axis_iter(Axis(1)).enumerate() {
        let mean = column.sum() / n;
        let variance = column.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
        if !(mean.is_finite() && variance.is_finite()) {
            return Err(TableError::TooLarge {
                path: path.to_string(),
                feature: names.get(j).cloned().unwrap_or_default(),
            });
        }
    }
    Ok(())
}

fn fit_options(opts: &TableOptions, alpha: f64) -> FitOptions {
    FitOptions {
        alpha,
        max_iterations: opts.max_iterations,
        tolerance_per_row: opts.tolerance_per_row,
        // Both classes were checked to have at least one row per fold, so
        // every training part holds both; fit's own floor is for the
        // event-history trainer.
        min_positives: 1,
    }
}

struct CrossValidation {
    alpha: f64,
    /// Indexed like the rows.
    out_of_fold: Vec<f64>,
    fold_roc_auc: Vec<Option<f64>>,
}

fn cross_validate(
    x: &Array2<f64>,
    y: &[bool],
    names: &[String],
    folds: &[usize],
    opts: &TableOptions,
    alpha: f64,
) -> Result<CrossValidation, TableError> {
    // Folds are independent fits: run as many at once as there are cores.
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, opts.folds.max(1));
    let all: Vec<usize> = (0..opts.folds).collect();
    let mut results = Vec::with_capacity(opts.folds);
    for batch in all.chunks(threads) {
        std::thread::scope(|scope| {
            let running: Vec<_> = batch
                .iter()
                .map(|&f| scope.spawn(move || one_fold(x, y, names, folds, opts, alpha, f)))
                .collect();
            for handle in running {
                match handle.join() {
                    Ok(result) => results.push(result),
                    Err(panic) => std::panic::resume_unwind(panic),
                }
            }
        });
    }
    let mut out_of_fold = vec![0.0; y.len()];
    let mut fold_roc_auc = Vec::with_capacity(opts.folds);
    for result in results {
        let (held, p) = result?;
        let y_held: Vec<bool> = held.iter().map(|&i| y[i]).collect();
        fold_roc_auc.push(roc_auc(&p, &y_held));
        for (&i, p) in held.iter().zip(p) {
            out_of_fold[i] = p;
        }
    }
    Ok(CrossValidation {
        alpha,
        out_of_fold,
        fold_roc_auc,
    })
}

/// Fits on every row outside fold `f`; returns the rows of fold `f` and
/// their probabilities.
fn one_fold(
    x: &Array2<f64>,
    y: &[bool],
    names: &[String],
    folds: &[usize],
    opts: &TableOptions,
    alpha: f64,
    f: usize,
) -> Result<(Vec<usize>, Vec<f64>), TableError> {
    let (held, train): (Vec<usize>, Vec<usize>) = (0..y.len()).partition(|&i| folds[i] == f);
    let y_train: Vec<bool> = train.iter().map(|&i| y[i]).collect();
    let fitted = fit_guarded(
        &column_major(x, &train),
        &y_train,
        names,
        &fit_options(opts, alpha),
    )
    .map_err(|source| TableError::Fit {
        alpha,
        part: format!("fold {} of {}", f + 1, opts.folds),
        source,
    })?;
    let p = held
        .iter()
        .map(|&i| row_probability(&fitted, x, i))
        .collect();
    Ok((held, p))
}

/// The given rows of `x`, stored column by column. linfa's gradient is
/// `xᵀ · r`; with `x` column-major each row of `xᵀ` is contiguous and
/// ndarray takes its fast slice dot product instead of an indexed loop,
/// several times quicker when this crate is built without optimization.
fn column_major(x: &Array2<f64>, rows: &[usize]) -> Array2<f64> {
    let mut out = Array2::zeros((rows.len(), x.ncols()).f());
    for (mut to, from) in out.columns_mut().into_iter().zip(x.columns()) {
        for (t, &i) in to.iter_mut().zip(rows) {
            *t = from[i];
        }
    }
    out
}

fn row_probability(fitted: &Fitted, x: &Array2<f64>, i: usize) -> f64 {
    let row = x.row(i);
    match row.as_slice() {
        Some(r) => fitted.probability(r),
        None => fitted.probability(&row.to_vec()),
    }
}

fn mean(values: &[Option<f64>]) -> Option<f64> {
    let all: Option<Vec<f64>> = values.iter().copied().collect();
    all.filter(|v| !v.is_empty())
        .map(|v| v.iter().sum::<f64>() / v.len() as f64)
}

#[cfg(test)]
mod tests;
