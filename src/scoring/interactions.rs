//! Pairwise interactions: every product zᵢ·zⱼ (i ≤ j, squares included) of
//! some features, each standardized as zᵢ = (xᵢ − meanᵢ) / scaleᵢ. They let
//! one logistic model weigh curvature and joint effects (many views *and* a
//! recent cart) while every term stays a named, readable reason `A × B`.
//!
//! The means and scales are fixed when a model is fitted (from its training
//! rows; labels play no part) and kept with it, so training and every later
//! score form exactly the same products. The event-log model pairs all of
//! its features; a table's model pairs its numeric columns.

use serde::{Deserialize, Serialize};

/// The standardization of the paired features, one entry per feature.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Interactions {
    pub means: Vec<f64>,
    pub scales: Vec<f64>,
}

impl Interactions {
    /// Means and population standard deviations of `columns`, each a
    /// sequence of one feature's values; a constant column gets scale 1.
    pub fn of<C, I>(columns: C) -> Interactions
    where
        C: IntoIterator<Item = I>,
        I: IntoIterator<Item = f64>,
    {
        let (mut means, mut scales) = (Vec::new(), Vec::new());
        for column in columns {
            let values: Vec<f64> = column.into_iter().collect();
            let n = values.len().max(1) as f64;
            let mean = values.iter().sum::<f64>() / n;
            let sd = (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n).sqrt();
            means.push(mean);
            scales.push(if sd > 1e-12 { sd } else { 1.0 });
        }
        Interactions { means, scales }
    }

    /// How many features are paired.
    pub fn paired(&self) -> usize {
        self.means.len()
    }

    /// How many products: k·(k + 1)/2 for k paired features.
    pub fn width(&self) -> usize {
        let k = self.paired();
        k * (k + 1) / 2
    }

    /// The products' names, in [`Interactions::products_into`] order, from
    /// the paired features' names.
    pub fn names<S: AsRef<str>>(paired: &[S]) -> Vec<String> {
        let mut names = Vec::with_capacity(paired.len() * (paired.len() + 1) / 2);
        for (i, a) in paired.iter().enumerate() {
            names.extend(
                paired[i..]
                    .iter()
                    .map(|b| format!("{} × {}", a.as_ref(), b.as_ref())),
            );
        }
        names
    }

    /// Writes the products of `paired` (the paired features' raw values)
    /// into `out`, which must hold [`Interactions::width`] values.
    pub fn products_into(&self, paired: &[f64], out: &mut [f64]) {
        debug_assert_eq!(paired.len(), self.paired());
        debug_assert_eq!(out.len(), self.width());
        let z: Vec<f64> = self.standardize(paired).collect();
        let mut at = 0;
        for (i, a) in z.iter().enumerate() {
            for b in &z[i..] {
                out[at] = a * b;
                at += 1;
            }
        }
    }

    /// `x` (the paired features) followed by their products: a model's
    /// terms when it pairs all of its features.
    pub fn terms(&self, x: &[f64]) -> Vec<f64> {
        let mut terms = vec![0.0; x.len() + self.width()];
        terms[..x.len()].copy_from_slice(x);
        self.products_into(x, &mut terms[x.len()..]);
        terms
    }

    /// Checks a stored standardization: `paired` entries, finite means,
    /// positive finite scales. The error names the field.
    pub fn check(&self, paired: usize) -> Result<(), String> {
        for (field, values) in [("means", &self.means), ("scales", &self.scales)] {
            if values.len() != paired {
                return Err(format!(
                    "interactions.{field} has {} entries but {paired} features are paired",
                    values.len()
                ));
            }
            if let Some(i) = values.iter().position(|v| !v.is_finite()) {
                return Err(format!("interactions.{field}[{i}] is not a finite number"));
            }
        }
        if let Some(i) = self.scales.iter().position(|s| *s <= 0.0) {
            return Err(format!("interactions.scales[{i}] must be positive"));
        }
        Ok(())
    }

    fn standardize<'a>(&'a self, paired: &'a [f64]) -> impl Iterator<Item = f64> + 'a {
        paired
            .iter()
            .zip(self.means.iter().zip(&self.scales))
            .map(|(x, (m, s))| (x - m) / s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn two() -> Interactions {
        // x₁: 1, 3 → mean 2, sd 1; x₂: 10, 10, constant → scale 1.
        Interactions::of([vec![1.0, 3.0], vec![10.0, 10.0]])
    }

    #[test]
    fn standardization_is_the_population_one_and_constants_get_scale_one() {
        let i = two();
        assert_eq!(i.means, vec![2.0, 10.0]);
        assert_eq!(i.scales, vec![1.0, 1.0]);
        assert_eq!(i.width(), 3);
    }

    #[test]
    fn products_by_hand_in_name_order() {
        // x = (4, 12): z = (2, 2); products z₁², z₁z₂, z₂² = 4, 4, 4. With
        // x = (0, 11): z = (−2, 1) → 4, −2, 1.
        let i = two();
        let mut out = [0.0; 3];
        i.products_into(&[0.0, 11.0], &mut out);
        assert_eq!(out, [4.0, -2.0, 1.0]);
        assert_eq!(
            Interactions::names(&["a", "b"]),
            vec!["a × a", "a × b", "b × b"]
        );
        assert_eq!(i.terms(&[0.0, 11.0]), [0.0, 11.0, 4.0, -2.0, 1.0]);
    }

    #[test]
    fn a_stored_standardization_is_checked_naming_the_field() {
        let mut i = two();
        assert_eq!(i.check(2), Ok(()));
        assert!(i.check(3).unwrap_err().contains("interactions.means has 2"));
        i.scales[1] = 0.0;
        assert!(i.check(2).unwrap_err().contains("interactions.scales[1]"));
        i.means[0] = f64::NAN;
        assert!(i.check(2).unwrap_err().contains("interactions.means[0]"));
    }
}
