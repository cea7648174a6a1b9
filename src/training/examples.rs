//! Point-in-time examples: features from what had happened by a cut-off,
//! label from what happened after it. Features come from the same
//! [`crate::scoring::observe`] the server calls.

use ndarray::Array2;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::domain::event::sort_by_time;
use crate::domain::{Event, Millis, Taxonomy};
use crate::scoring::observe;
use crate::simulator::Journey;

/// A design matrix with labels and what a baseline needs.
#[derive(Debug, Clone)]
pub struct Examples {
    /// One row per example, columns in feature-name order.
    pub x: Array2<f64>,
    /// Purchased within the horizon after the cut-off.
    pub y: Vec<bool>,
    /// The ladder score at the cut-off: the ladder-only baseline's predictor.
    pub ladder_score: Vec<f64>,
    pub cutoff: Vec<Millis>,
    /// Index of the journey (visitor) each example comes from.
    pub journey: Vec<usize>,
}

impl Examples {
    pub fn len(&self) -> usize {
        self.y.len()
    }

    pub fn is_empty(&self) -> bool {
        self.y.is_empty()
    }

    pub fn positives(&self) -> usize {
        self.y.iter().filter(|&&b| b).count()
    }

    /// The rows for which `keep` holds, in order.
    pub fn select(&self, keep: impl Fn(usize) -> bool) -> Examples {
        let rows: Vec<usize> = (0..self.len()).filter(|&i| keep(i)).collect();
        Examples {
            x: self.x.select(ndarray::Axis(0), &rows),
            y: rows.iter().map(|&i| self.y[i]).collect(),
            ladder_score: rows.iter().map(|&i| self.ladder_score[i]).collect(),
            cutoff: rows.iter().map(|&i| self.cutoff[i]).collect(),
            journey: rows.iter().map(|&i| self.journey[i]).collect(),
        }
    }
}

/// A simulated journey's events resolved through the taxonomy, in time
/// order. Names the taxonomy does not know are dropped.
pub fn resolve_journey(taxonomy: &Taxonomy, journey: &Journey) -> Vec<Event> {
    let mut events: Vec<Event> = journey
        .events
        .iter()
        .filter_map(|e| {
            taxonomy
                .resolve(e.name)
                .map(|kind| Event::new(kind, e.at).with_item(&e.item_id))
        })
        .collect();
    sort_by_time(&mut events);
    events
}

/// One example per session: the cut-off is a random event of the session
/// (a page view mid-journey, as the server sees it), the label whether a
/// purchase follows within `horizon_ms`.
pub fn session_examples(
    taxonomy: &Taxonomy,
    journeys: &[Journey],
    horizon_ms: i64,
    seed: u64,
) -> Examples {
    let mut rng = SmallRng::seed_from_u64(seed);
    let n_features = crate::scoring::feature_names(taxonomy).len();
    let purchase = taxonomy.roles().purchase;
    let mut data = Vec::new();
    let (mut y, mut ladder_score, mut cutoff, mut journey) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (ji, j) in journeys.iter().enumerate() {
        let events = resolve_journey(taxonomy, j);
        for (n, &start) in j.session_starts.iter().enumerate() {
            let end = j
                .session_starts
                .get(n + 1)
                .copied()
                .unwrap_or(j.events.len());
            if start >= end {
                continue;
            }
            let as_of = j.events[rng.gen_range(start..end)].at;
            let obs = observe(taxonomy, &events, as_of);
            let horizon_end = as_of.saturating_add_millis(horizon_ms);
            let label = events[obs.counted..]
                .iter()
                .take_while(|e| e.at <= horizon_end)
                .any(|e| e.kind == purchase);
            data.extend_from_slice(&obs.features);
            y.push(label);
            ladder_score.push(obs.ladder.score);
            cutoff.push(as_of);
            journey.push(ji);
        }
    }
    let rows = y.len();
    let x = Array2::from_shape_vec((rows, n_features), data)
        .expect("every observation has one value per feature");
    Examples {
        x,
        y,
        ladder_score,
        cutoff,
        journey,
    }
}
