//! Probability bands: low, medium and high, cut at two thresholds. The
//! segment language and every score use them, so they live with scoring.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Band {
    Low,
    Medium,
    High,
}

/// Probability thresholds for the bands: below `medium` is low, at or above
/// `high` is high.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Bands {
    pub medium: f64,
    pub high: f64,
}

impl Default for Bands {
    fn default() -> Self {
        // Purchases are a few percent of visits: a one-in-four chance is high.
        Bands {
            medium: 0.05,
            high: 0.25,
        }
    }
}

impl Bands {
    /// The band of a probability.
    pub fn of(&self, p: f64) -> Band {
        if p >= self.high {
            Band::High
        } else if p >= self.medium {
            Band::Medium
        } else {
            Band::Low
        }
    }
}
