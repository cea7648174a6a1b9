//! Judging a predictor on held-out examples: ROC AUC, PR AUC (average
//! precision), log loss, Brier score, a 10-bin calibration table, and
//! precision and lift among the top-scored 1%, 5% and 10%. The same code
//! judges the model and the ladder-only baseline, side by side.

use serde::{Deserialize, Serialize};

use super::metrics::{brier, log_loss, pr_auc, roc_auc};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CalibrationBin {
    /// Predicted probabilities in [lower, upper).
    pub lower: f64,
    pub upper: f64,
    pub count: usize,
    pub mean_predicted: f64,
    pub observed_rate: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TopShare {
    /// The share of examples with the highest scores, e.g. 0.01.
    pub share: f64,
    pub examples: usize,
    pub precision: f64,
    /// Precision ÷ base rate.
    pub lift: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    pub examples: usize,
    pub positives: usize,
    pub base_rate: f64,
    pub roc_auc: Option<f64>,
    pub pr_auc: Option<f64>,
    /// Only for probabilities (the model), not for scores (the ladder).
    pub log_loss: Option<f64>,
    pub brier: Option<f64>,
    pub calibration: Vec<CalibrationBin>,
    pub top: Vec<TopShare>,
    /// (false positive rate, true positive rate), for plots.
    #[serde(skip)]
    pub roc_curve: Curve,
    /// (recall, precision), for plots.
    #[serde(skip)]
    pub pr_curve: Curve,
}

impl Evaluation {
    /// Expected calibration error over the 10 bins: the examples' weighted
    /// mean of |mean predicted − observed rate|. `None` without bins.
    pub fn expected_calibration_error(&self) -> Option<f64> {
        let n: usize = self.calibration.iter().map(|b| b.count).sum();
        (n > 0).then(|| {
            self.calibration
                .iter()
                .map(|b| b.count as f64 * (b.mean_predicted - b.observed_rate).abs())
                .sum::<f64>()
                / n as f64
        })
    }
}

/// Evaluates `scores` against `labels`. With `probabilities`, also log
/// loss, Brier and calibration.
pub fn evaluate(scores: &[f64], labels: &[bool], probabilities: bool) -> Evaluation {
    assert_eq!(scores.len(), labels.len());
    let n = labels.len();
    let positives = labels.iter().filter(|&&l| l).count();
    let base_rate = positives as f64 / n.max(1) as f64;
    let (roc_curve, pr_curve) = curves(scores, labels);
    Evaluation {
        examples: n,
        positives,
        base_rate,
        roc_auc: roc_auc(scores, labels),
        pr_auc: pr_auc(scores, labels),
        log_loss: probabilities.then(|| log_loss(scores, labels)),
        brier: probabilities.then(|| brier(scores, labels)),
        calibration: if probabilities {
            calibration(scores, labels, 10)
        } else {
            Vec::new()
        },
        top: [0.01, 0.05, 0.10]
            .iter()
            .map(|&share| top_share(scores, labels, share, base_rate))
            .collect(),
        roc_curve,
        pr_curve,
    }
}

/// Indices by descending score.
fn ranked(scores: &[f64]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    order
}

/// Points of a curve, (x, y).
pub type Curve = Vec<(f64, f64)>;

fn curves(scores: &[f64], labels: &[bool]) -> (Curve, Curve) {
    let positives = labels.iter().filter(|&&l| l).count().max(1) as f64;
    let negatives = (labels.len() as f64 - positives).max(1.0);
    let order = ranked(scores);
    // About 200 points are plenty for a plot.
    let step = (order.len() / 200).max(1);
    let (mut tp, mut fp) = (0.0, 0.0);
    let mut roc = vec![(0.0, 0.0)];
    let mut pr = Vec::new();
    for (k, &i) in order.iter().enumerate() {
        if labels[i] {
            tp += 1.0;
        } else {
            fp += 1.0;
        }
        if k % step == 0 || k + 1 == order.len() {
            roc.push((fp / negatives, tp / positives));
            pr.push((tp / positives, tp / (tp + fp)));
        }
    }
    (roc, pr)
}

/// Equal-width bins over [0, 1].
pub fn calibration(p: &[f64], labels: &[bool], bins: usize) -> Vec<CalibrationBin> {
    let mut sum = vec![0.0; bins];
    let mut hits = vec![0usize; bins];
    let mut count = vec![0usize; bins];
    for (&x, &l) in p.iter().zip(labels) {
        let b = ((x * bins as f64) as usize).min(bins - 1);
        sum[b] += x;
        count[b] += 1;
        hits[b] += usize::from(l);
    }
    (0..bins)
        .map(|b| CalibrationBin {
            lower: b as f64 / bins as f64,
            upper: (b + 1) as f64 / bins as f64,
            count: count[b],
            mean_predicted: if count[b] > 0 {
                sum[b] / count[b] as f64
            } else {
                0.0
            },
            observed_rate: if count[b] > 0 {
                hits[b] as f64 / count[b] as f64
            } else {
                0.0
            },
        })
        .collect()
}

fn top_share(scores: &[f64], labels: &[bool], share: f64, base_rate: f64) -> TopShare {
    let k =
        ((scores.len() as f64 * share).ceil() as usize).clamp(1.min(scores.len()), scores.len());
    let hits = ranked(scores)
        .iter()
        .take(k)
        .filter(|&&i| labels[i])
        .count();
    let precision = if k == 0 { 0.0 } else { hits as f64 / k as f64 };
    TopShare {
        share,
        examples: k,
        precision,
        lift: if base_rate > 0.0 {
            precision / base_rate
        } else {
            0.0
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn average_precision_matches_a_hand_computation() {
        // Ranked: 0.9 (pos), 0.8 (neg), 0.7 (pos), 0.1 (neg).
        // AP = ½·(1/1) + ½·(2/3) = 0.8333…
        let ap = pr_auc(&[0.9, 0.8, 0.7, 0.1], &[true, false, true, false]).unwrap();
        assert!((ap - 5.0 / 6.0).abs() < 1e-12, "{ap}");
    }

    #[test]
    fn tied_scores_count_as_one_threshold() {
        // All tied: precision 2/4 at recall 1.
        let ap = pr_auc(&[0.5; 4], &[true, false, true, false]).unwrap();
        assert!((ap - 0.5).abs() < 1e-12);
    }

    #[test]
    fn calibration_bins_hold_mean_prediction_and_observed_rate() {
        let bins = calibration(&[0.05, 0.15, 0.12, 0.95], &[false, true, false, true], 10);
        assert_eq!(bins[0].count, 1);
        assert_eq!(bins[1].count, 2);
        assert!((bins[1].mean_predicted - 0.135).abs() < 1e-12);
        assert_eq!(bins[1].observed_rate, 0.5);
        assert_eq!(bins[9].observed_rate, 1.0);
    }

    #[test]
    fn precision_and_lift_at_the_top() {
        // 100 examples, 10 positives at the top 5 and scattered below.
        let scores: Vec<f64> = (0..100).map(|i| 1.0 - i as f64 / 100.0).collect();
        let labels: Vec<bool> = (0..100).map(|i| i < 5 || i % 20 == 10).collect();
        let e = evaluate(&scores, &labels, false);
        assert_eq!(e.positives, 10);
        let top5 = &e.top[1];
        assert_eq!(top5.examples, 5);
        assert_eq!(top5.precision, 1.0);
        assert!((top5.lift - 10.0).abs() < 1e-12);
        assert_eq!(e.log_loss, None);
    }
}
