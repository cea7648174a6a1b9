//! Metrics for probabilistic classifiers, written out so their definitions
//! are plain: ROC AUC (Mann–Whitney, ties counted half), log loss, Brier.

/// Area under the ROC curve: the chance a random positive outranks a random
/// negative. `None` when either class is absent.
pub fn roc_auc(scores: &[f64], labels: &[bool]) -> Option<f64> {
    assert_eq!(scores.len(), labels.len());
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    // Average ranks over ties, then the Mann–Whitney U of the positives.
    let mut rank_sum_pos = 0.0;
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && scores[order[j + 1]] == scores[order[i]] {
            j += 1;
        }
        let avg_rank = (i + j) as f64 / 2.0 + 1.0;
        for &k in &order[i..=j] {
            if labels[k] {
                rank_sum_pos += avg_rank;
            }
        }
        i = j + 1;
    }
    let pos = labels.iter().filter(|&&l| l).count() as f64;
    let neg = labels.len() as f64 - pos;
    if pos == 0.0 || neg == 0.0 {
        return None;
    }
    Some((rank_sum_pos - pos * (pos + 1.0) / 2.0) / (pos * neg))
}

/// Mean negative log-likelihood, probabilities clipped to [1e-15, 1 − 1e-15].
pub fn log_loss(probabilities: &[f64], labels: &[bool]) -> f64 {
    let eps = 1e-15;
    let total: f64 = probabilities
        .iter()
        .zip(labels)
        .map(|(&p, &l)| {
            let p = p.clamp(eps, 1.0 - eps);
            if l {
                -p.ln()
            } else {
                -(1.0 - p).ln()
            }
        })
        .sum();
    total / labels.len().max(1) as f64
}

/// Mean squared error of the probabilities.
pub fn brier(probabilities: &[f64], labels: &[bool]) -> f64 {
    let total: f64 = probabilities
        .iter()
        .zip(labels)
        .map(|(&p, &l)| (p - f64::from(u8::from(l))).powi(2))
        .sum();
    total / labels.len().max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auc_counts_ties_half_and_orders_pairs() {
        // Pairs (pos, neg): (0.8,0.1) win, (0.8,0.4) win, (0.4,0.1) win,
        // (0.4,0.4) tie: (3 + 0.5) / 4.
        let auc = roc_auc(&[0.8, 0.4, 0.1, 0.4], &[true, true, false, false]).unwrap();
        assert!((auc - 0.875).abs() < 1e-12, "{auc}");
        assert_eq!(roc_auc(&[0.1, 0.2], &[true, true]), None);
    }

    #[test]
    fn log_loss_and_brier_match_hand_values() {
        let p = [0.9, 0.2];
        let y = [true, false];
        // (−ln 0.9 − ln 0.8) / 2 and (0.01 + 0.04) / 2
        assert!((log_loss(&p, &y) - 0.164_252_033_486_018).abs() < 1e-12);
        assert!((brier(&p, &y) - 0.025).abs() < 1e-12);
    }
}

/// Area under the precision–recall curve as average precision: the sum over
/// score thresholds, highest first, of precision × the recall gained there
/// (scikit-learn's `average_precision_score`; tied scores form one
/// threshold). A useless model scores the base rate, not 0.5. `None` when
/// there is no positive.
pub fn pr_auc(scores: &[f64], labels: &[bool]) -> Option<f64> {
    let positives = labels.iter().filter(|&&l| l).count();
    if positives == 0 || scores.len() != labels.len() {
        return None;
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let (mut tp, mut fp, mut area) = (0usize, 0usize, 0.0);
    let mut i = 0;
    while i < order.len() {
        let gained_before = tp;
        let mut j = i;
        while j < order.len() && scores[order[j]] == scores[order[i]] {
            if labels[order[j]] {
                tp += 1;
            } else {
                fp += 1;
            }
            j += 1;
        }
        let recall_gain = (tp - gained_before) as f64 / positives as f64;
        area += recall_gain * tp as f64 / (tp + fp) as f64;
        i = j;
    }
    Some(area)
}

#[cfg(test)]
mod pr_auc_tests {
    use super::pr_auc;

    #[test]
    fn pr_auc_sums_precision_over_recall_steps() {
        // Highest first: T (P 1/1, R 1/2), F (R unchanged), T (P 2/3, R 2/2),
        // F: 1/2 × 1 + 1/2 × 2/3 = 5/6.
        let ap = pr_auc(&[0.9, 0.8, 0.7, 0.6], &[true, false, true, false]).unwrap();
        assert!((ap - 5.0 / 6.0).abs() < 1e-12, "{ap}");
    }

    #[test]
    fn pr_auc_takes_tied_scores_as_one_threshold() {
        // 0.5 holds one T and one F: P 1/2 at R 1/2; then T at 0.2: P 2/3 at
        // R 1: 1/2 × 1/2 + 1/2 × 2/3 = 7/12.
        let ap = pr_auc(&[0.5, 0.5, 0.2], &[true, false, true]).unwrap();
        assert!((ap - 7.0 / 12.0).abs() < 1e-12, "{ap}");
    }

    #[test]
    fn pr_auc_of_constant_scores_is_the_base_rate_and_none_without_positives() {
        let ap = pr_auc(&[0.3; 4], &[true, false, false, false]).unwrap();
        assert!((ap - 0.25).abs() < 1e-12, "{ap}");
        assert_eq!(pr_auc(&[0.1, 0.2], &[false, false]), None);
    }
}
