//! The offline side: point-in-time examples from event histories, fitting
//! the logistic model with linfa, honest metrics and reports.

pub mod evaluation;
pub mod eventlog;
pub mod examples;
pub mod export;
pub mod files;
pub mod fit;
pub mod metrics;
pub mod pipeline;
pub mod report;
pub mod solver;
pub mod suggest;
pub mod tabular;

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("only {positives} positive examples (need at least {needed}); with so few purchases, score with the ladder alone")]
    TooFewPositives { positives: usize, needed: usize },
    #[error("every example has the same label; nothing to learn")]
    OneClass,
    #[error("a feature value is not finite: example {row}, feature {feature}")]
    NonFinite { row: usize, feature: String },
    #[error("linfa-logistic failed: {0} (try scaling the data, a stronger L2 strength or more iterations)")]
    Solver(String),
    #[error("no examples: no visitor has events before a cut-off with a whole label window after it; {0}")]
    NoExamples(String),
    #[error("too large to fit: {0}")]
    TooLarge(String),
    #[error("the {part} part holds no purchases: {detail}")]
    EmptySplit { part: String, detail: String },
}
