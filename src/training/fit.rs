//! Fitting the logistic model with linfa-logistic: standardize, fit,
//! orient toward purchase.
//!
//! Two facts about linfa-logistic 0.8 shape this code (see the crate's
//! `label_classes` and loss): its "positive" class is the *more frequent*
//! label, which for purchases is "no purchase", so coefficients are flipped
//! here when needed; and its loss is a plain sum over rows with an absolute
//! gradient tolerance, so the tolerance is scaled by the number of rows.

use linfa::prelude::*;
use linfa_logistic::LogisticRegression;
use ndarray::{Array1, Array2, Axis};

use crate::scoring::Interactions;

use super::TrainError;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FitOptions {
    /// L2 strength on the standardized coefficients (scikit-learn's C = 1/alpha).
    pub alpha: f64,
    pub max_iterations: u64,
    /// Gradient tolerance per example; linfa's absolute tolerance is this × rows.
    pub tolerance_per_row: f64,
    /// Fewer positive examples than this is an error.
    pub min_positives: usize,
}

impl Default for FitOptions {
    fn default() -> Self {
        FitOptions {
            alpha: 1.0,
            max_iterations: 200,
            tolerance_per_row: 1e-5,
            min_positives: 50,
        }
    }
}

/// A fitted model on the original feature scale's standardization.
#[derive(Debug, Clone, PartialEq)]
pub struct Fitted {
    pub means: Vec<f64>,
    pub scales: Vec<f64>,
    /// On standardized features, pointing toward the positive label.
    pub coefficients: Vec<f64>,
    pub intercept: f64,
    /// When the model also weighs the products of its features' pairs
    /// (all of them): their standardization, fixed on the fitted rows. The
    /// means, scales and coefficients then cover the features and then the
    /// products.
    pub interactions: Option<Interactions>,
}

impl Fitted {
    /// P(label) for one raw (unstandardized) row of features, without
    /// products: they are formed here when the model has them.
    pub fn probability(&self, row: &[f64]) -> f64 {
        let terms = match &self.interactions {
            None => std::borrow::Cow::Borrowed(row),
            Some(i) => std::borrow::Cow::Owned(i.terms(row)),
        };
        crate::scoring::model::sigmoid(log_odds(
            self.intercept,
            &self.means,
            &self.scales,
            &self.coefficients,
            &terms,
        ))
    }
}

/// The standardization for pairing `paired`, a set of `x`'s columns, fixed
/// on `x`'s rows.
pub fn interactions_of(x: &Array2<f64>, paired: &[usize]) -> Interactions {
    Interactions::of(paired.iter().map(|&j| x.column(j).to_vec()))
}

/// `x` with the products of its `paired` columns appended, in
/// [`Interactions::names`] order.
pub fn with_products(x: &Array2<f64>, paired: &[usize], i: &Interactions) -> Array2<f64> {
    let (rows, cols) = x.dim();
    let mut out = Array2::zeros((rows, cols + i.width()));
    let mut values = vec![0.0; paired.len()];
    for (r, mut o) in x.rows().into_iter().zip(out.rows_mut()) {
        for (v, &j) in values.iter_mut().zip(paired) {
            *v = r[j];
        }
        let o = o.as_slice_mut().expect("a fresh standard-layout array");
        o[..cols].copy_from_slice(r.as_slice().expect("rows of a standard-layout array"));
        i.products_into(&values, &mut o[cols..]);
    }
    out
}

/// intercept + Σ coefficientᵢ · (xᵢ − meanᵢ) / scaleᵢ for a raw row.
pub fn log_odds(
    intercept: f64,
    means: &[f64],
    scales: &[f64],
    coefficients: &[f64],
    row: &[f64],
) -> f64 {
    intercept
        + row
            .iter()
            .zip(means)
            .zip(scales)
            .zip(coefficients)
            .map(|(((x, m), s), c)| c * (x - m) / s)
            .sum::<f64>()
}

/// Column means and standard deviations; a constant column gets scale 1 so
/// it standardizes to 0 instead of dividing by zero.
pub fn standardization(x: &Array2<f64>) -> (Vec<f64>, Vec<f64>) {
    let means = x.mean_axis(Axis(0)).map(|m| m.to_vec()).unwrap_or_default();
    let scales = x
        .std_axis(Axis(0), 0.0)
        .iter()
        .map(|&s| if s > 1e-12 { s } else { 1.0 })
        .collect();
    (means, scales)
}

/// Refuses what no solver can fit: non-finite values, one class, or
/// fewer positives than `opts.min_positives`.
pub fn check_inputs(
    x: &Array2<f64>,
    y: &[bool],
    names: &[String],
    opts: &FitOptions,
) -> Result<(), TrainError> {
    if let Some((row, col)) = x
        .indexed_iter()
        .find(|(_, v)| !v.is_finite())
        .map(|(ix, _)| ix)
    {
        return Err(TrainError::NonFinite {
            row,
            feature: names.get(col).cloned().unwrap_or_default(),
        });
    }
    let positives = y.iter().filter(|&&b| b).count();
    if positives == 0 || positives == y.len() {
        return Err(TrainError::OneClass);
    }
    if positives < opts.min_positives {
        return Err(TrainError::TooFewPositives {
            positives,
            needed: opts.min_positives,
        });
    }
    Ok(())
}

pub fn fit(
    x: &Array2<f64>,
    y: &[bool],
    names: &[String],
    opts: &FitOptions,
) -> Result<Fitted, TrainError> {
    check_inputs(x, y, names, opts)?;
    let (means, scales) = standardization(x);
    let mut z = x.clone();
    for (mut col, (m, s)) in z.axis_iter_mut(Axis(1)).zip(means.iter().zip(&scales)) {
        col.mapv_inplace(|v| (v - m) / s);
    }
    let dataset = Dataset::new(z, Array1::from(y.to_vec()));
    let model = LogisticRegression::default()
        .alpha(opts.alpha)
        .max_iterations(opts.max_iterations)
        .gradient_tolerance(opts.tolerance_per_row * y.len() as f64)
        .fit(&dataset)
        .map_err(|e| TrainError::Solver(e.to_string()))?;
    // linfa's probabilities are for its "positive" class: flip if that is
    // not our `true`.
    let sign = if model.labels().pos.class { 1.0 } else { -1.0 };
    Ok(Fitted {
        means,
        scales,
        coefficients: model.params().iter().map(|w| sign * w).collect(),
        intercept: sign * model.intercept(),
        interactions: None,
    })
}

/// The fixture both solvers are pinned against.
#[cfg(test)]
pub(crate) mod reference {
    use ndarray::Array2;

    /// tests/data/logistic_reference.csv and scikit-learn 1.9.1's answer on
    /// it, from tests/data/make_logistic_reference.py.
    pub const SKLEARN_COEFFICIENTS: [f64; 3] =
        [1.0299132368537278, -0.9211713798178645, 0.08717533152506918];
    pub const SKLEARN_INTERCEPT: f64 = -2.4048110195337524;

    pub fn reference_data() -> (Array2<f64>, Vec<bool>) {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/logistic_reference.csv"
        );
        let text = std::fs::read_to_string(path).unwrap();
        let mut data = Vec::new();
        let mut y = Vec::new();
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split(',').collect();
            data.extend(cols[..3].iter().map(|c| c.parse::<f64>().unwrap()));
            y.push(cols[3] == "1");
        }
        (Array2::from_shape_vec((y.len(), 3), data).unwrap(), y)
    }
}

#[cfg(test)]
mod tests {
    use super::reference::*;
    use super::*;

    #[test]
    fn fit_matches_scikit_learn_and_points_toward_the_minority_class() {
        // Arrange: 54 positives of 400, so linfa's own "positive" class is
        // the majority and its raw coefficients point away from purchase.
        let (x, y) = reference_data();
        let names = vec!["x1".into(), "x2".into(), "x3".into()];
        let opts = FitOptions {
            alpha: 1.0,
            max_iterations: 1000,
            tolerance_per_row: 1e-10,
            min_positives: 10,
        };

        // Act
        let fitted = fit(&x, &y, &names, &opts).unwrap();

        // Assert
        for (got, want) in fitted.coefficients.iter().zip(SKLEARN_COEFFICIENTS) {
            assert!((got - want).abs() < 1e-4, "{got} vs {want}");
        }
        assert!(
            (fitted.intercept - SKLEARN_INTERCEPT).abs() < 1e-4,
            "{}",
            fitted.intercept
        );
    }

    #[test]
    fn too_few_positives_is_a_clear_error_that_suggests_the_ladder() {
        let (x, y) = reference_data();
        let names = vec!["x1".into(), "x2".into(), "x3".into()];
        let opts = FitOptions {
            min_positives: 60,
            ..FitOptions::default()
        };
        let e = fit(&x, &y, &names, &opts).unwrap_err();
        assert!(matches!(
            e,
            TrainError::TooFewPositives {
                positives: 54,
                needed: 60
            }
        ));
        assert!(e.to_string().contains("ladder"), "{e}");
    }

    #[test]
    fn one_class_and_non_finite_inputs_are_refused() {
        let x = Array2::from_shape_vec((3, 1), vec![1.0, 2.0, 3.0]).unwrap();
        let names = vec!["a".to_string()];
        assert!(matches!(
            fit(&x, &[false, false, false], &names, &FitOptions::default()),
            Err(TrainError::OneClass)
        ));
        let x = Array2::from_shape_vec((3, 1), vec![1.0, f64::NAN, 3.0]).unwrap();
        assert!(matches!(
            fit(&x, &[true, false, false], &names, &FitOptions::default()),
            Err(TrainError::NonFinite { row: 1, .. })
        ));
    }

    #[test]
    fn constant_columns_standardize_to_zero() {
        let x = Array2::from_shape_vec((3, 2), vec![5.0, 1.0, 5.0, 2.0, 5.0, 3.0]).unwrap();
        let (means, scales) = standardization(&x);
        assert_eq!(means, vec![5.0, 2.0]);
        // Population standard deviation of 1, 2, 3 is sqrt(2/3).
        assert_eq!(scales[0], 1.0);
        assert!((scales[1] - (2.0f64 / 3.0).sqrt()).abs() < 1e-15);
    }
}
