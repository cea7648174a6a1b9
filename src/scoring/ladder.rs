//! The weighted ladder: transparent points that work from the first event,
//! with no training data.
//!
//! points = Σ over types of `points × min(decayed count, cap)`, where each
//! occurrence weighs 2^(−age / half-life); the score maps points onto 0–100.

use crate::domain::{Stage, Taxonomy};

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ladder {
    pub points: f64,
    /// 0–100.
    pub score: f64,
    /// 1-based rank of the highest milestone reached; 0 for none.
    pub milestone_rank: u8,
    /// The furthest funnel stage of any counted event (awareness when none).
    pub stage: Stage,
}

/// Builds the ladder from per-type decayed (uncapped) counts.
pub fn climb(taxonomy: &Taxonomy, decayed: &[f64], milestone_rank: u8, stage: Stage) -> Ladder {
    let points: f64 = taxonomy
        .types()
        .iter()
        .zip(decayed)
        .map(|(t, &n)| t.points * n.min(t.cap))
        .sum();
    Ladder {
        points,
        score: score(points, taxonomy.score_scale()),
        milestone_rank,
        stage,
    }
}

/// 100 × (1 − e^(−points / scale)) for positive points, else 0: saturating,
/// so no visitor goes past 100 and the first steps count most.
pub fn score(points: f64, scale: f64) -> f64 {
    if points <= 0.0 {
        0.0
    } else {
        100.0 * (1.0 - (-points / scale).exp())
    }
}
