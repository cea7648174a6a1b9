//! Ladder points from a fitted model, for `rung suggest-ladder`.

use crate::domain::Taxonomy;
use crate::scoring::Model;

/// What a first occurrence of one event type is worth to the model.
#[derive(Debug, Clone, PartialEq)]
pub struct Suggestion {
    /// The type's index in the taxonomy.
    pub type_index: usize,
    /// The log-odds a first occurrence adds, the rest held fixed: the
    /// type's count feature goes from ln(1 + 0) to ln(1 + 1).
    pub log_odds: f64,
    /// `log_odds` × points per unit of log-odds, to one decimal.
    pub points: f64,
}

/// One suggestion per taxonomy type, in the taxonomy's order; `None` when
/// the model lacks a type's `count.<type>` feature.
pub fn ladder_points(
    model: &Model,
    taxonomy: &Taxonomy,
    points_per_log_odds: f64,
) -> Option<Vec<Suggestion>> {
    taxonomy
        .types()
        .iter()
        .enumerate()
        .map(|(type_index, t)| {
            let name = format!("count.{}", t.name);
            let k = model.feature_names().iter().position(|n| **n == *name)?;
            let log_odds = model.weight(k) * std::f64::consts::LN_2;
            Some(Suggestion {
                type_index,
                log_odds,
                points: (log_odds * points_per_log_odds * 10.0).round() / 10.0,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_first_occurrence_is_worth_its_weight_times_ln_2() {
        // The shipped model, read as the server reads it.
        let taxonomy = Taxonomy::builtin();
        let text =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/models/default.json"))
                .unwrap();
        let artifact: crate::scoring::ModelArtifact = serde_json::from_str(&text).unwrap();
        let model = Model::from_artifact(&artifact, &taxonomy).unwrap();
        let got = ladder_points(&model, &taxonomy, 10.0).unwrap();
        assert_eq!(got.len(), taxonomy.types().len());
        // By hand from the artifact: coefficient ÷ scale × ln 2.
        let add = taxonomy.resolve("add_to_cart").unwrap().index();
        let k = artifact
            .feature_names
            .iter()
            .position(|n| n == "count.add_to_cart")
            .unwrap();
        let want = artifact.coefficients[k] / artifact.scales[k] * std::f64::consts::LN_2;
        assert!((got[add].log_odds - want).abs() < 1e-12);
        assert_eq!(got[add].points, (want * 100.0).round() / 10.0);
    }
}
