//! The tabular model artifact: what it holds, how it predicts, its
//! version and its atomic write.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::encoding::Encoding;
use super::read::shorten;
use super::{BadRow, TableError, FORMAT};
use crate::scoring::model::sigmoid;

/// Cross-validated figures for one L2 strength.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlphaScore {
    pub alpha: f64,
    /// Pooled out-of-fold log loss: what the choice is made on.
    pub log_loss: f64,
    pub roc_auc: Option<f64>,
    pub mean_fold_roc_auc: Option<f64>,
}

/// Cross-validated figures of the chosen L2 strength. They come from the
/// same folds that chose it, so they lean optimistic by the (small) benefit
/// of picking the best of the grid.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TableMetrics {
    pub rows: usize,
    pub positives: usize,
    pub base_rate: f64,
    pub bad_rows_skipped: usize,
    pub folds: usize,
    pub seed: u64,
    /// The chosen L2 strength, and every one tried.
    pub alpha: f64,
    pub alpha_search: Vec<AlphaScore>,
    pub fold_roc_auc: Vec<Option<f64>>,
    pub mean_fold_roc_auc: Option<f64>,
    /// Over every row's out-of-fold probability.
    pub pooled_roc_auc: Option<f64>,
    /// Average precision; compare it with `base_rate`, not with 0.5.
    pub pooled_pr_auc: Option<f64>,
    pub pooled_log_loss: f64,
    pub pooled_brier: f64,
}

/// A model fitted on a whole table, for evaluation and export. The event-
/// scoring service does not load it: its features are the table's columns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TableModelArtifact {
    pub format: String,
    /// `<UTC time>-<12 hex of the content hash>`.
    pub version: String,
    /// RFC 3339.
    pub created_at: String,
    /// The table's file name, and its SHA-256 so the exact data is known.
    pub source: String,
    pub source_sha256: String,
    pub label: String,
    pub encoding: Encoding,
    pub feature_names: Vec<String>,
    pub means: Vec<f64>,
    pub scales: Vec<f64>,
    /// On standardized features, toward the label being true.
    pub coefficients: Vec<f64>,
    pub intercept: f64,
    pub metrics: TableMetrics,
}

impl TableModelArtifact {
    /// Reads an artifact and checks that its parts agree with each other.
    pub fn from_json(text: &str) -> Result<Self, TableError> {
        let a: TableModelArtifact =
            serde_json::from_str(text).map_err(|e| TableError::Artifact(e.to_string()))?;
        let bad = |m: String| Err(TableError::Artifact(m));
        if a.format != FORMAT {
            return bad(format!("format is {:?}", shorten(&a.format)));
        }
        if a.feature_names != a.encoding.feature_names() {
            return bad("feature_names do not match the encoding".into());
        }
        let n = a.feature_names.len();
        if a.means.len() != n || a.scales.len() != n || a.coefficients.len() != n {
            return bad(format!(
                "{n} features but {} means, {} scales, {} coefficients",
                a.means.len(),
                a.scales.len(),
                a.coefficients.len()
            ));
        }
        let finite = |v: &[f64]| v.iter().all(|x| x.is_finite());
        if !(finite(&a.means) && finite(&a.coefficients) && a.intercept.is_finite()) {
            return bad("a mean, coefficient or the intercept is not finite".into());
        }
        if a.scales.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
            return bad("a scale is not a positive number".into());
        }
        Ok(a)
    }

    /// P(label) for an encoded row (see [`Encoding::bind`]); `None` when the
    /// row's width is not the model's.
    pub fn probability(&self, features: &[f64]) -> Option<f64> {
        if features.len() != self.coefficients.len() {
            return None;
        }
        Some(sigmoid(crate::training::fit::log_odds(
            self.intercept,
            &self.means,
            &self.scales,
            &self.coefficients,
            features,
        )))
    }
}

#[derive(Debug, Clone)]
pub struct TableReport {
    pub artifact: TableModelArtifact,
    /// Rows skipped as malformed (never more than `max_bad_rows`).
    pub bad_rows: Vec<BadRow>,
    /// Each used row's line and its out-of-fold probability under the
    /// chosen alpha: for calibration plots and error analysis.
    pub out_of_fold: Vec<(usize, f64)>,
}

/// The artifact's version ([`crate::training::files::version_id`]).
pub(super) fn version_id(a: &TableModelArtifact) -> String {
    let content = serde_json::json!({
        "encoding": a.encoding,
        "means": a.means,
        "scales": a.scales,
        "coefficients": a.coefficients,
        "intercept": a.intercept,
        "label": a.label,
        "source_sha256": a.source_sha256,
    });
    crate::training::files::version_id(&a.created_at, &content)
}

/// Writes the artifact as JSON, atomically ([`crate::training::files`]).
pub fn write_artifact(path: &Path, artifact: &TableModelArtifact) -> Result<(), TableError> {
    let io_error = |source| TableError::Write {
        path: path.display().to_string(),
        source,
    };
    let text =
        serde_json::to_string_pretty(artifact).map_err(|e| io_error(std::io::Error::other(e)))?;
    crate::training::files::write_atomically(path, &text).map_err(io_error)
}
