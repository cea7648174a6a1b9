//! The logistic model: its JSON artifact and the checked, ready-to-score form.
//!
//! log-odds = intercept + Σ coefficientᵢ · (xᵢ − meanᵢ) / scaleᵢ. Each term is a
//! feature's contribution relative to the average training visitor, so the
//! terms plus the intercept add up to the log-odds exactly.
//!
//! A model may also weigh [`Interactions`]: the products of every pair of
//! its features, standardized, as further terms after the features
//! themselves. The terms are then the features followed by the products,
//! and still add up, with the intercept, to the log-odds.

use std::borrow::Cow;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::domain::taxonomy::TypeSignature;
use crate::domain::Taxonomy;

use super::features::feature_names;
use super::interactions::Interactions;

/// The artifact format this build reads and writes.
pub const FORMAT: &str = "rung.model.v1";

/// A trained model as stored in `models/*.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelArtifact {
    pub format: String,
    /// Unique per artifact: creation time and a hash of the content.
    pub version: String,
    /// RFC 3339.
    pub created_at: String,
    /// Where the model came from, in words.
    pub description: String,
    /// The features, then (with `interactions`) the products `A × B`.
    pub feature_names: Vec<String>,
    /// Standardization of every term: means and scales (standard deviations).
    pub means: Vec<f64>,
    pub scales: Vec<f64>,
    /// Toward purchase: a positive coefficient raises the probability.
    pub coefficients: Vec<f64>,
    pub intercept: f64,
    /// Present when the model weighs the pairwise products of its features
    /// (`rung train --interactions pairwise`); absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interactions: Option<Interactions>,
    /// The label: a purchase within this many days after the cut-off.
    pub horizon_days: f64,
    pub taxonomy_fingerprint: String,
    pub taxonomy: Vec<TypeSignature>,
    pub training: TrainingInfo,
    pub metrics: Metrics,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainingInfo {
    pub examples: usize,
    pub positives: usize,
    /// L2 strength as linfa-logistic takes it (scikit-learn's C = 1 / alpha).
    pub alpha: f64,
    pub max_iterations: u64,
}

/// Held-out figures for the model and for the ladder score alone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    pub validation: Figures,
    pub ladder_baseline: Figures,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Figures {
    pub examples: usize,
    pub positives: usize,
    pub base_rate: f64,
    /// Absent when the data has only one class.
    pub roc_auc: Option<f64>,
    /// Average precision; absent in artifacts written before it was added.
    #[serde(default)]
    pub pr_auc: Option<f64>,
    /// Absent for the ladder baseline, whose score is not a probability.
    pub log_loss: Option<f64>,
    pub brier: Option<f64>,
}

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("model file is not a valid artifact: {0}")]
    Parse(#[from] serde_json::Error),
    #[error("model artifact is malformed: {0}")]
    Malformed(String),
    /// `problem` says what differs without repeating the file's values;
    /// `detail` (for the data scientist's own tools and the server's log)
    /// says how.
    #[error("model does not match the running taxonomy: {problem} ({detail})")]
    Mismatch { problem: String, detail: String },
}

impl ModelError {
    /// The problem, naming fields and positions but never a value read from
    /// the file: what a server tells a caller about a file it read.
    pub fn summary(&self) -> String {
        match self {
            ModelError::Parse(e) => {
                let what = match e.classify() {
                    serde_json::error::Category::Io => "cannot be read",
                    serde_json::error::Category::Syntax => "is not JSON",
                    serde_json::error::Category::Data => {
                        "is JSON but a field is missing or of the wrong type"
                    }
                    serde_json::error::Category::Eof => "ends early (EOF)",
                };
                format!(
                    "model file is not a valid artifact: it {what}, at line {} column {}",
                    e.line(),
                    e.column()
                )
            }
            ModelError::Malformed(_) => self.to_string(),
            ModelError::Mismatch { problem, .. } => {
                format!("model does not match the running taxonomy: {problem}")
            }
        }
    }
}

/// A checked model, with the standardization folded into the weights so a
/// score costs one multiply-add per feature.
#[derive(Debug, Clone)]
pub struct Model {
    // Shared: every score names the model and its features.
    version: Arc<str>,
    /// Every term's name: the features, then any products.
    feature_names: Vec<Arc<str>>,
    means: Vec<f64>,
    interactions: Option<Interactions>,
    /// coefficientᵢ / scaleᵢ.
    weights: Vec<f64>,
    /// intercept − Σ weightᵢ · meanᵢ.
    bias: f64,
    intercept: f64,
}

/// The model's answer for one feature vector.
#[derive(Debug, Clone, PartialEq)]
pub struct Prediction {
    pub log_odds: f64,
    pub probability: f64,
}

impl Model {
    /// Parses and checks an artifact against the running taxonomy.
    pub fn from_json(text: &str, taxonomy: &Taxonomy) -> Result<Model, ModelError> {
        let artifact: ModelArtifact = serde_json::from_str(text)?;
        Model::from_artifact(&artifact, taxonomy)
    }

    pub fn from_artifact(a: &ModelArtifact, taxonomy: &Taxonomy) -> Result<Model, ModelError> {
        if a.format != FORMAT {
            return Err(ModelError::Malformed(format!(
                "format is not {FORMAT:?}, the one this build reads"
            )));
        }
        if a.version.is_empty() {
            return Err(ModelError::Malformed("version is empty".into()));
        }
        let n = a.feature_names.len();
        for (field, len) in [
            ("means", a.means.len()),
            ("scales", a.scales.len()),
            ("coefficients", a.coefficients.len()),
        ] {
            if len != n {
                return Err(ModelError::Malformed(format!(
                    "{field} has {len} entries but there are {n} features"
                )));
            }
        }
        for (field, values) in [
            ("means", &a.means),
            ("scales", &a.scales),
            ("coefficients", &a.coefficients),
        ] {
            if let Some(i) = values.iter().position(|v| !v.is_finite()) {
                return Err(ModelError::Malformed(format!(
                    "{field}[{i}] is not a finite number"
                )));
            }
        }
        if let Some(i) = a.scales.iter().position(|s| *s <= 0.0) {
            return Err(ModelError::Malformed(format!(
                "scales[{i}] must be positive"
            )));
        }
        if !a.intercept.is_finite() {
            return Err(ModelError::Malformed(
                "intercept is not a finite number".into(),
            ));
        }
        let features = match &a.interactions {
            None => n,
            Some(i) => {
                // The products follow the features they pair.
                let k = i.paired();
                i.check(k).map_err(ModelError::Malformed)?;
                let products = Interactions::names(&a.feature_names[..k.min(n)]);
                if k > n || a.feature_names[k..] != products[..] {
                    return Err(ModelError::Malformed(format!(
                        "interactions pair {k} features, so feature_names must hold them and then their {} products A × B in order",
                        products.len().max(k * (k + 1) / 2)
                    )));
                }
                k
            }
        };
        check_features(&a.feature_names[..features], &feature_names(taxonomy))?;
        if a.taxonomy_fingerprint != taxonomy.fingerprint() {
            return Err(ModelError::Mismatch {
                problem:
                    "it was trained on another taxonomy (taxonomy_fingerprint differs); retrain it"
                        .into(),
                detail: describe_drift(a, taxonomy),
            });
        }

        let weights: Vec<f64> = a
            .coefficients
            .iter()
            .zip(&a.scales)
            .map(|(c, s)| c / s)
            .collect();
        let bias = a.intercept
            - weights
                .iter()
                .zip(&a.means)
                .map(|(w, m)| w * m)
                .sum::<f64>();
        Ok(Model {
            version: Arc::from(a.version.as_str()),
            feature_names: a
                .feature_names
                .iter()
                .map(|n| Arc::from(n.as_str()))
                .collect(),
            means: a.means.clone(),
            interactions: a.interactions.clone(),
            weights,
            bias,
            intercept: a.intercept,
        })
    }

    pub fn version(&self) -> &str {
        &self.version
    }

    /// The version, shared.
    pub fn shared_version(&self) -> &Arc<str> {
        &self.version
    }

    /// Every term's name: the features, then any products (`A × B`).
    pub fn feature_names(&self) -> &[Arc<str>] {
        &self.feature_names
    }

    /// Whether the model weighs pairwise products of its features.
    pub fn interactions(&self) -> Option<&Interactions> {
        self.interactions.as_ref()
    }

    /// The model's terms for a feature vector: the features themselves, then
    /// any products, in [`Model::feature_names`] order. Borrowed, with no
    /// copy, when the model has no interactions.
    pub fn terms<'a>(&self, x: &'a [f64]) -> Cow<'a, [f64]> {
        match &self.interactions {
            None => Cow::Borrowed(x),
            Some(i) => Cow::Owned(i.terms(x)),
        }
    }

    pub fn intercept(&self) -> f64 {
        self.intercept
    }

    /// `x` holds the features (not the products) in
    /// [`crate::scoring::feature_names`] order.
    #[inline]
    pub fn predict(&self, x: &[f64]) -> Prediction {
        self.predict_terms(&self.terms(x))
    }

    /// The prediction from the terms [`Model::terms`] gives, for a caller
    /// that also needs them (reasons): the products are formed once.
    #[inline]
    pub fn predict_terms(&self, terms: &[f64]) -> Prediction {
        debug_assert_eq!(terms.len(), self.weights.len());
        let log_odds = self.bias
            + self
                .weights
                .iter()
                .zip(terms)
                .map(|(w, v)| w * v)
                .sum::<f64>();
        Prediction {
            log_odds,
            probability: sigmoid(log_odds),
        }
    }

    /// The log-odds one unit more of feature `i` adds: coefficient ÷ scale.
    pub fn weight(&self, i: usize) -> f64 {
        self.weights[i]
    }

    /// Term `i`'s share of the log-odds: coefficient · standardized value,
    /// for the term's value `x` (from [`Model::terms`]).
    #[inline]
    pub fn contribution(&self, i: usize, x: f64) -> f64 {
        self.weights[i] * (x - self.means[i])
    }
}

/// The logistic function, without overflow for large |z|.
pub fn sigmoid(z: f64) -> f64 {
    if z >= 0.0 {
        1.0 / (1.0 + (-z).exp())
    } else {
        let e = z.exp();
        e / (1.0 + e)
    }
}

fn check_features(model: &[String], running: &[String]) -> Result<(), ModelError> {
    if let Some(i) = (0..model.len().min(running.len())).find(|&i| model[i] != running[i]) {
        return Err(ModelError::Mismatch {
            problem: format!("feature {i} (feature_names[{i}]) differs"),
            detail: format!(
                "feature {i} is {:?} in the model but {:?} in the running taxonomy",
                model[i], running[i]
            ),
        });
    }
    if model.len() != running.len() {
        let (longer, which) = if model.len() > running.len() {
            (model, "the model has extra features")
        } else {
            (running, "the running taxonomy has extra features")
        };
        let extra = &longer[model.len().min(running.len())..];
        return Err(ModelError::Mismatch {
            problem: format!(
                "feature_names has {} entries; the running taxonomy has {}",
                model.len(),
                running.len()
            ),
            detail: format!("{which}: {}", extra.join(", ")),
        });
    }
    Ok(())
}

/// Names what differs between the taxonomy a model was trained on and the
/// running one, for a fingerprint mismatch.
fn describe_drift(a: &ModelArtifact, running: &Taxonomy) -> String {
    let mut diffs = Vec::new();
    for (old, new) in a.taxonomy.iter().zip(running.signature()) {
        if old != new {
            diffs.push(format!(
                "type {:?}: trained with stage {}, milestone {}, points {}, half-life {:?} days, cap {}; \
                 running has stage {}, milestone {}, points {}, half-life {:?} days, cap {}",
                new.name, old.stage, old.milestone_rank, old.points, old.half_life_days, old.cap,
                new.stage, new.milestone_rank, new.points, new.half_life_days, new.cap
            ));
        }
    }
    if diffs.is_empty() {
        diffs.push(
            "the ladder settings or roles differ (score_scale, session_gap_minutes, [roles])"
                .to_string(),
        );
    }
    format!(
        "trained on taxonomy {}, running {}; retrain the model ({})",
        a.taxonomy_fingerprint,
        running.fingerprint(),
        diffs.join("; ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::taxonomy::DEFAULT_TAXONOMY_TOML;

    fn shipped() -> ModelArtifact {
        let text = include_str!("../../models/default.json");
        serde_json::from_str(text).unwrap()
    }

    fn refusal(a: &ModelArtifact, t: &Taxonomy) -> String {
        Model::from_artifact(a, t).unwrap_err().to_string()
    }

    #[test]
    fn the_shipped_model_loads_against_the_builtin_taxonomy() {
        let m = Model::from_artifact(&shipped(), &Taxonomy::builtin()).unwrap();
        assert_eq!(
            m.feature_names().len(),
            feature_names(&Taxonomy::builtin()).len()
        );
    }

    #[test]
    fn a_renamed_feature_is_refused_naming_it() {
        let mut a = shipped();
        a.feature_names[3] = "count.something_else".into();
        let msg = refusal(&a, &Taxonomy::builtin());
        assert!(
            msg.contains("feature 3") && msg.contains("count.something_else"),
            "{msg}"
        );
    }

    #[test]
    fn a_model_from_a_taxonomy_with_other_points_is_refused_naming_the_type() {
        let changed = DEFAULT_TAXONOMY_TOML.replacen(
            "name = \"add_to_cart\"\nstage = \"intent\"\npoints = 10.0",
            "name = \"add_to_cart\"\nstage = \"intent\"\npoints = 12.0",
            1,
        );
        assert_ne!(changed, DEFAULT_TAXONOMY_TOML);
        let t = Taxonomy::from_toml(&changed).unwrap();
        let msg = refusal(&shipped(), &t);
        assert!(
            msg.contains("\"add_to_cart\"") && msg.contains("points 10"),
            "{msg}"
        );
    }

    #[test]
    fn a_taxonomy_with_an_extra_type_is_refused_naming_the_feature() {
        let extra = format!(
            "{DEFAULT_TAXONOMY_TOML}\n[[types]]\nname = \"zz_new\"\nstage = \"intent\"\npoints = 1.0\ncap = 1\n"
        );
        // The new type's count lands where the model expects milestone_rank.
        let t = Taxonomy::from_toml(&extra).unwrap();
        let msg = refusal(&shipped(), &t);
        assert!(msg.contains("count.zz_new"), "{msg}");
    }

    #[test]
    fn malformed_artifacts_are_refused() {
        let t = Taxonomy::builtin();
        let mut a = shipped();
        a.scales[0] = 0.0;
        assert!(refusal(&a, &t).contains("scales[0]"));
        let mut a = shipped();
        a.coefficients.pop();
        assert!(refusal(&a, &t).contains("coefficients has"));
        let mut a = shipped();
        a.format = "rung.model.v0".into();
        assert!(refusal(&a, &t).contains("format"));
        assert!(Model::from_json("{\"format\":", &t).is_err());
    }

    /// The shipped model with every product added at coefficient `c`.
    fn with_products(c: f64) -> ModelArtifact {
        let mut a = shipped();
        let k = a.feature_names.len();
        let i = Interactions {
            means: vec![0.5; k],
            scales: vec![2.0; k],
        };
        a.feature_names
            .extend(Interactions::names(&a.feature_names));
        a.means.resize(a.feature_names.len(), 0.0);
        a.scales.resize(a.feature_names.len(), 1.0);
        a.coefficients.resize(a.feature_names.len(), c);
        a.interactions = Some(i);
        a
    }

    #[test]
    fn interaction_terms_follow_the_features_and_add_to_the_log_odds() {
        let t = Taxonomy::builtin();
        let plain = Model::from_artifact(&shipped(), &t).unwrap();
        let m = Model::from_artifact(&with_products(0.25), &t).unwrap();
        let k = plain.feature_names().len();
        let x: Vec<f64> = (0..k).map(|i| i as f64 * 0.1).collect();
        // By hand: z = (x − 0.5) / 2, products zᵢzⱼ weighted 0.25 each.
        let z: Vec<f64> = x.iter().map(|v| (v - 0.5) / 2.0).collect();
        let mut products = 0.0;
        for i in 0..k {
            for j in i..k {
                products += 0.25 * z[i] * z[j];
            }
        }
        let want = plain.predict(&x).log_odds + products;
        assert!((m.predict(&x).log_odds - want).abs() < 1e-9);
        let terms = m.terms(&x);
        assert_eq!(terms.len(), m.feature_names().len());
        assert_eq!(terms[k + 1], z[0] * z[1]);
        let sum: f64 = (0..terms.len()).map(|i| m.contribution(i, terms[i])).sum();
        assert!((m.intercept() + sum - want).abs() < 1e-9);
        assert!(matches!(plain.terms(&x), Cow::Borrowed(_)));
    }

    #[test]
    fn interactions_that_do_not_match_their_names_or_features_are_refused() {
        let t = Taxonomy::builtin();
        let mut a = with_products(0.1);
        let last = a.feature_names.len() - 1;
        a.feature_names.swap(last - 1, last);
        assert!(
            refusal(&a, &t).contains("their 903 products"),
            "{}",
            refusal(&a, &t)
        );
        let mut a = with_products(0.1);
        a.interactions.as_mut().unwrap().scales[2] = -1.0;
        assert!(refusal(&a, &t).contains("interactions.scales[2]"));
        // Without interactions the products are unknown features.
        let mut a = with_products(0.1);
        a.interactions = None;
        assert!(refusal(&a, &t).contains("the model has extra features"));
    }

    #[test]
    fn prediction_folds_standardization_into_the_weights() {
        // One feature: z = 0.5 + 2 · (x − 1) / 4; at x = 3, z = 1.5.
        let t = Taxonomy::builtin();
        let mut m = Model::from_artifact(&shipped(), &t).unwrap();
        m.weights = vec![2.0 / 4.0];
        m.means = vec![1.0];
        m.bias = 0.5 - 0.5 * 1.0;
        let p = m.predict(&[3.0]);
        assert!((p.log_odds - 1.5).abs() < 1e-12);
        assert!((m.contribution(0, 3.0) - 1.0).abs() < 1e-12);
        assert!((p.probability - 0.817_574_476_193_643_7).abs() < 1e-12);
    }

    #[test]
    fn sigmoid_is_stable_at_the_extremes() {
        assert_eq!(sigmoid(0.0), 0.5);
        assert_eq!(sigmoid(-1000.0), 0.0);
        assert_eq!(sigmoid(1000.0), 1.0);
    }
}
