//! Pure scoring: the one pass over a visitor's events ([`features`]), the
//! weighted ladder built on it ([`ladder`]) and the logistic model
//! ([`model`]). No I/O, no clocks: everything takes `as_of` explicitly.

pub mod aggregate;
pub mod band;
pub mod features;
pub mod interactions;
pub mod ladder;
pub mod model;
pub mod rebuild;
pub mod timeline;

pub use aggregate::Aggregate;
pub use band::{Band, Bands};
pub use features::{feature_names, observe, Observation};
pub use interactions::Interactions;
pub use ladder::Ladder;
pub use model::{Model, ModelArtifact, ModelError, Prediction};
pub use rebuild::{rebuild, Rebuilt};
pub use timeline::Timeline;
