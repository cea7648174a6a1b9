//! The facade the transport calls: it holds the taxonomy, the model and the
//! scoring settings, and turns validated queries into scores. Pure apart from
//! reading its own state, so the same answers come from gRPC and from tests.

use std::sync::Arc;

use crate::config::{Bands, Limits, ScoringSettings};
use crate::domain::event::sort_by_time;
use crate::domain::{Event, Millis, Stage, Taxonomy, VisitorId};
use crate::scoring::{self, Ladder, Model};

/// A validated request to score one visitor.
#[derive(Debug, Clone)]
pub struct ScoreQuery {
    pub visitor: VisitorId,
    /// Any order; the engine sorts.
    pub events: Vec<Event>,
    pub as_of: Millis,
    /// 1 to [`crate::config::MAX_REASONS`].
    pub max_reasons: usize,
    pub explain: bool,
    /// Unknown-type events the edge skipped (when configured to).
    pub ignored_unknown_type: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Band {
    Low,
    Medium,
    High,
}

/// A feature's value and its share of the log-odds.
#[derive(Debug, Clone, PartialEq)]
pub struct Reason {
    pub feature: String,
    pub contribution: f64,
    pub value: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Score {
    pub visitor: VisitorId,
    pub as_of: Millis,
    pub probability: f64,
    pub log_odds: f64,
    pub ladder: Ladder,
    /// Name of the highest milestone reached, if any.
    pub rung: Option<String>,
    pub stage: Stage,
    pub band: Band,
    pub reasons: Vec<Reason>,
    /// Every feature, when the query asked to explain.
    pub features: Vec<Reason>,
    pub model_version: String,
    pub ignored_after_as_of: u32,
    pub ignored_unknown_type: u32,
}

pub struct Engine {
    taxonomy: Arc<Taxonomy>,
    model: Arc<Model>,
    scoring: ScoringSettings,
    bands: Bands,
    limits: Limits,
}

impl Engine {
    pub fn new(
        taxonomy: Arc<Taxonomy>,
        model: Arc<Model>,
        scoring: ScoringSettings,
        bands: Bands,
        limits: Limits,
    ) -> Engine {
        Engine {
            taxonomy,
            model,
            scoring,
            bands,
            limits,
        }
    }

    pub fn taxonomy(&self) -> &Taxonomy {
        &self.taxonomy
    }

    pub fn model(&self) -> &Model {
        &self.model
    }

    pub fn scoring(&self) -> &ScoringSettings {
        &self.scoring
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    pub fn score(&self, mut q: ScoreQuery) -> Score {
        sort_by_time(&mut q.events);
        let obs = scoring::observe(&self.taxonomy, &q.events, q.as_of);
        let prediction = self.model.predict(&obs.features);
        let names = self.model.feature_names();
        let reasons = top_reasons(&self.model, &obs.features, q.max_reasons);
        let features = if q.explain {
            obs.features
                .iter()
                .enumerate()
                .map(|(i, &v)| self.reason(i, v))
                .collect()
        } else {
            Vec::new()
        };
        debug_assert_eq!(names.len(), obs.features.len());
        let reasons = reasons
            .into_iter()
            .map(|i| self.reason(i, obs.features[i]))
            .collect();
        Score {
            visitor: q.visitor,
            as_of: q.as_of,
            probability: prediction.probability,
            log_odds: prediction.log_odds,
            rung: self
                .taxonomy
                .milestone_at(obs.ladder.milestone_rank)
                .map(|t| t.name.clone()),
            stage: obs.ladder.stage,
            band: self.band(prediction.probability),
            ladder: obs.ladder,
            reasons,
            features,
            model_version: self.model.version().to_string(),
            ignored_after_as_of: (q.events.len() - obs.counted) as u32,
            ignored_unknown_type: q.ignored_unknown_type,
        }
    }

    /// One score per query, in order; each equal to [`Engine::score`] of it.
    pub fn score_batch(&self, queries: Vec<ScoreQuery>) -> Vec<Score> {
        queries.into_iter().map(|q| self.score(q)).collect()
    }

    fn reason(&self, i: usize, value: f64) -> Reason {
        Reason {
            feature: self.model.feature_names()[i].clone(),
            contribution: self.model.contribution(i, value),
            value,
        }
    }

    fn band(&self, p: f64) -> Band {
        if p >= self.bands.high {
            Band::High
        } else if p >= self.bands.medium {
            Band::Medium
        } else {
            Band::Low
        }
    }
}

/// Indices of the `k` features with the largest non-zero |contribution|,
/// largest first; ties go to the earlier feature so answers are stable.
fn top_reasons(model: &Model, x: &[f64], k: usize) -> Vec<usize> {
    let mut ranked: Vec<(usize, f64)> = x
        .iter()
        .enumerate()
        .map(|(i, &v)| (i, model.contribution(i, v).abs()))
        .filter(|(_, c)| *c > 0.0)
        .collect();
    let order = |a: &(usize, f64), b: &(usize, f64)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
    // Partition around the k-th before sorting: only the top k need order.
    if k == 0 {
        return Vec::new();
    }
    if k < ranked.len() {
        ranked.select_nth_unstable_by(k - 1, order);
        ranked.truncate(k);
    }
    ranked.sort_unstable_by(order);
    ranked.into_iter().map(|(i, _)| i).collect()
}
