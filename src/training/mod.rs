//! The offline side: point-in-time examples from event histories, fitting
//! the logistic model with linfa, honest metrics, and the bootstrap model
//! built from simulated journeys.

pub mod bootstrap;
pub mod examples;
pub mod fit;
pub mod metrics;

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("only {positives} positive examples (need at least {needed}); with so few purchases, score with the ladder alone")]
    TooFewPositives { positives: usize, needed: usize },
    #[error("every example has the same label; nothing to learn")]
    OneClass,
    #[error("a feature value is not finite: example {row}, feature {feature}")]
    NonFinite { row: usize, feature: String },
    #[error("linfa-logistic failed: {0}")]
    Solver(String),
}
