//! The bootstrap model: trained on simulated journeys so the service scores
//! out of the box. It is a stand-in, to be replaced by a model trained on the
//! shop's own events.

use sha2::{Digest, Sha256};

use crate::domain::{Millis, Taxonomy};
use crate::scoring::feature_names;
use crate::scoring::model::{Figures, Metrics, ModelArtifact, TrainingInfo, FORMAT};
use crate::simulator::{funnel_figures, simulate, FunnelFigures, SimConfig};

use super::examples::{session_examples, Examples};
use super::fit::{fit, FitOptions, Fitted};
use super::metrics::{brier, log_loss, roc_auc};
use super::TrainError;

#[derive(Debug, Clone)]
pub struct BootstrapOptions {
    pub sim: SimConfig,
    pub horizon_days: f64,
    /// Examples whose cut-off falls in the last this-share of the simulated
    /// period are held out for validation.
    pub validation_share: f64,
    pub fit: FitOptions,
}

impl Default for BootstrapOptions {
    fn default() -> Self {
        BootstrapOptions {
            sim: SimConfig {
                visitors: 40_000,
                ..SimConfig::default()
            },
            horizon_days: 7.0,
            validation_share: 0.25,
            fit: FitOptions::default(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct BootstrapReport {
    pub artifact: ModelArtifact,
    pub funnel: FunnelFigures,
}

pub fn bootstrap(
    taxonomy: &Taxonomy,
    opts: &BootstrapOptions,
    now: Millis,
) -> Result<BootstrapReport, TrainError> {
    let journeys = simulate(&opts.sim);
    let funnel = funnel_figures(&journeys);
    let horizon_ms = (opts.horizon_days * 86_400_000.0) as i64;
    let all = session_examples(taxonomy, &journeys, horizon_ms, opts.sim.seed ^ 0x5eed);

    // Time-based split. Training examples whose label window would reach
    // into the validation period are dropped, so nothing seen in validation
    // leaks into training labels.
    let start = opts.sim.start.as_unix_millis();
    let span = (opts.sim.days * 86_400_000.0) as i64;
    let split = start + ((1.0 - opts.validation_share) * span as f64) as i64;
    let train = all.select(|i| all.cutoff[i].as_unix_millis() + horizon_ms <= split);
    let valid = all.select(|i| all.cutoff[i].as_unix_millis() > split);

    let names = feature_names(taxonomy);
    let fitted = fit(&train.x, &train.y, &names, &opts.fit)?;
    let metrics = Metrics {
        validation: model_figures(&fitted, &valid),
        ladder_baseline: ladder_figures(&valid),
    };
    let mut artifact = ModelArtifact {
        format: FORMAT.to_string(),
        version: String::new(),
        created_at: now.to_rfc3339(),
        description: format!(
            "BOOTSTRAP model trained on {} simulated visitors (seed {}); replace it with a model trained on your shop's own events",
            opts.sim.visitors, opts.sim.seed
        ),
        feature_names: names,
        means: fitted.means.clone(),
        scales: fitted.scales.clone(),
        coefficients: fitted.coefficients.clone(),
        intercept: fitted.intercept,
        horizon_days: opts.horizon_days,
        taxonomy_fingerprint: taxonomy.fingerprint().to_string(),
        taxonomy: taxonomy.signature().to_vec(),
        training: TrainingInfo {
            examples: train.len(),
            positives: train.positives(),
            alpha: opts.fit.alpha,
            max_iterations: opts.fit.max_iterations,
        },
        metrics,
    };
    artifact.version = version_id(&artifact, now);
    Ok(BootstrapReport { artifact, funnel })
}

/// `<UTC time>-<12 hex of the content hash>`: sortable and unique per content.
pub fn version_id(a: &ModelArtifact, now: Millis) -> String {
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

pub fn model_figures(fitted: &Fitted, data: &Examples) -> Figures {
    let p: Vec<f64> = data
        .x
        .rows()
        .into_iter()
        .map(|r| fitted.probability(r.as_slice().expect("rows of a standard-layout array")))
        .collect();
    Figures {
        examples: data.len(),
        positives: data.positives(),
        base_rate: data.positives() as f64 / data.len().max(1) as f64,
        roc_auc: roc_auc(&p, &data.y),
        log_loss: Some(log_loss(&p, &data.y)),
        brier: Some(brier(&p, &data.y)),
    }
}

pub fn ladder_figures(data: &Examples) -> Figures {
    Figures {
        examples: data.len(),
        positives: data.positives(),
        base_rate: data.positives() as f64 / data.len().max(1) as f64,
        roc_auc: roc_auc(&data.ladder_score, &data.y),
        log_loss: None,
        brier: None,
    }
}
