//! The facade the transport calls: it holds the taxonomy, the model, the
//! store and the settings, and turns validated queries into scores, writes
//! and profiles. Scoring itself is pure code in [`crate::scoring`].
//!
//! The model can be replaced while serving ([`crate::deploy`]): every call
//! takes the serving model once, at its start, and scores with it to the end.

pub mod audience;
pub mod ingest;

use std::path::Path;
use std::sync::Arc;

use crate::audience::definition::DefinitionError;
use crate::config::{Bands, Limits, ScoringSettings};
use crate::deploy::{
    DeployError, Deployed, ModelDir, ModelSlot, ModelState, ModelWatch, Polled, Swap,
};
use crate::domain::event::sort_by_time;
use crate::domain::{Event, Millis, NewEvent, Stage, StoredEvent, Taxonomy, VisitorId};
use crate::metrics::{Metrics, OutcomeLabels};
use crate::scoring::{self, rebuild, Band, Ladder, Model, Observation};
use crate::store::{ModelNote, Standing, Store, StoreError, VisitorRecord};

pub use ingest::{Ingest, IngestSummary, Rejection};

/// A validated request to score one visitor.
#[derive(Debug, Clone, PartialEq)]
pub struct ScoreQuery {
    pub visitor: VisitorId,
    /// Inline events, any order; scored with the stored ones, not stored.
    pub events: Vec<Event>,
    /// `None`: now, or the visitor's latest event if that is later.
    pub as_of: Option<Millis>,
    /// 1 to [`crate::config::MAX_REASONS`].
    pub max_reasons: usize,
    pub explain: bool,
    /// Unknown-type events the edge skipped (when configured to).
    pub ignored_unknown_type: u32,
}

/// A validated request to store events.
#[derive(Debug, Clone, PartialEq)]
pub struct TrackQuery {
    pub visitor: VisitorId,
    pub events: Vec<NewEvent>,
    pub ignored_unknown_type: u32,
}

/// A feature's value and its share of the log-odds.
#[derive(Debug, Clone, PartialEq)]
pub struct Reason {
    pub feature: Arc<str>,
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
    pub rung: Option<Arc<str>>,
    pub stage: Stage,
    pub band: Band,
    pub reasons: Vec<Reason>,
    /// Every feature, when the query asked to explain.
    pub features: Vec<Reason>,
    pub model_version: Arc<str>,
    pub ignored_after_as_of: u32,
    pub ignored_unknown_type: u32,
    pub ignored_duplicate: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Tracked {
    pub accepted: u32,
    pub duplicates: u32,
    pub score: Score,
}

/// What rung remembers about a visitor.
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    pub visitor: VisitorId,
    pub record: VisitorRecord,
    /// Newest first.
    pub recent: Vec<StoredEvent>,
}

/// Everything that can go wrong behind the engine's door; the transport
/// maps each to a status in one table.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A model artifact was refused; the serving model stays.
    #[error(transparent)]
    Model(#[from] DeployError),
    #[error("no segment named {0:?}")]
    SegmentNotFound(String),
    #[error("segment {0:?} exists; set overwrite to replace it")]
    SegmentNameTaken(String),
    #[error("{0:?} is a built-in segment and cannot be changed or deleted")]
    BuiltinSegment(String),
    /// A definition sent by the caller.
    #[error("{0}")]
    Definition(#[from] DefinitionError),
    /// A saved definition that no longer passes validation (e.g. a window
    /// now longer than the retention period).
    #[error("saved segment {name:?} is no longer valid: {error}")]
    SavedSegmentInvalid {
        name: String,
        error: DefinitionError,
    },
    /// A worker thread failed (a bug): the query is abandoned.
    #[error("internal error: {0}")]
    Internal(String),
}

pub struct Engine {
    taxonomy: Arc<Taxonomy>,
    model: ModelSlot,
    scoring: ScoringSettings,
    bands: Bands,
    limits: Limits,
    store: Arc<dyn Store>,
    retention_ms: i64,
    metrics: Arc<Metrics>,
}

/// The settings the engine acts on.
#[derive(Debug, Clone)]
pub struct EngineSettings {
    pub scoring: ScoringSettings,
    pub bands: Bands,
    pub limits: Limits,
    pub retention_days: f64,
    /// The only folder models are loaded from.
    pub model_dir: ModelDir,
}

impl Engine {
    pub fn new(
        taxonomy: Arc<Taxonomy>,
        model: Deployed,
        store: Arc<dyn Store>,
        settings: EngineSettings,
    ) -> Engine {
        let metrics = Arc::new(Metrics::new());
        metrics.set_model(model.version());
        Engine {
            model: ModelSlot::new(taxonomy.clone(), model, settings.model_dir),
            taxonomy,
            scoring: settings.scoring,
            bands: settings.bands,
            limits: settings.limits,
            store,
            retention_ms: (settings.retention_days * 86_400_000.0) as i64,
            metrics,
        }
    }

    /// What the engine counts, for the metrics endpoint.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Counts a store failure by kind on its way to the caller.
    fn store_failed(&self, e: StoreError) -> EngineError {
        self.metrics.store_error(e.kind());
        EngineError::Store(e)
    }

    /// How many visitors the store holds, into `rung_store_visitors`.
    pub async fn count_visitors(&self) -> Result<u64, EngineError> {
        let n = self
            .store
            .visitor_count()
            .await
            .map_err(|e| self.store_failed(e))?;
        self.metrics.store_visitors.set(n as i64);
        Ok(n)
    }

    pub fn taxonomy(&self) -> &Taxonomy {
        &self.taxonomy
    }

    /// The serving model, with where and when it was loaded.
    pub fn model(&self) -> Arc<Deployed> {
        self.model.current()
    }

    /// The serving model and the latest artifact refused since it loaded.
    pub fn model_state(&self) -> ModelState {
        self.model.state()
    }

    /// Re-reads the serving model's file, or `path`, and swaps the model in,
    /// then tells the replicas sharing the store, which load the same file.
    /// A refused artifact changes nothing: the serving model stays.
    pub async fn reload_model(&self, path: Option<&Path>) -> Result<Swap, EngineError> {
        let swap = self.model.reload(path)?;
        self.swapped(&swap, "reload requested");
        if let Err(e) = self
            .store
            .announce_model(
                swap.current.version(),
                swap.current.source.as_path(),
                swap.current.loaded_at,
            )
            .await
        {
            // This replica serves the new model; the others still have their
            // own file watch.
            tracing::warn!(error = %e, "the new model could not be announced to other replicas");
        }
        Ok(swap)
    }

    /// Models other replicas announce through the shared store, if any.
    pub fn model_announcements(&self) -> Option<tokio::sync::mpsc::Receiver<ModelNote>> {
        self.store.model_announcements()
    }

    /// Loads the model another replica announced, unless it already serves
    /// it or serves an artifact written after that announcement (an operator
    /// who deploys a newer file by configuration is not overruled by an
    /// older reload; a replica started after a reload, on an older file,
    /// follows it).
    pub fn follow_model(&self, note: &ModelNote) -> Result<Option<Swap>, EngineError> {
        let outcome = |o| {
            self.metrics
                .model_announcements
                .get_or_create(&OutcomeLabels { outcome: o })
                .inc();
        };
        let serving = self.model.current();
        if serving.version() == note.version || serving.written_at() > note.loaded_at {
            outcome("ignored");
            return Ok(None);
        }
        let swap = self
            .model
            .reload(Some(&note.path))
            .inspect_err(|_| outcome("refused"))?;
        self.swapped(&swap, "announced by another replica");
        outcome("followed");
        Ok(Some(swap))
    }

    /// Remembers the serving model's file, for [`Engine::poll_model_file`].
    pub fn model_watch(&self) -> ModelWatch {
        ModelWatch::new(&self.model)
    }

    /// Reloads the serving model's file if it changed since the last poll.
    pub fn poll_model_file(&self, watch: &mut ModelWatch) -> Polled {
        let polled = watch.poll(&self.model);
        if let Polled::Swapped(swap) = &polled {
            self.swapped(swap, "model file changed");
        }
        polled
    }

    pub fn scoring(&self) -> &ScoringSettings {
        &self.scoring
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Events older than this (relative to `now`) are not accepted for storage.
    pub fn oldest_storable(&self, now: Millis) -> Millis {
        now.saturating_add_millis(-self.retention_ms)
    }

    /// Scores a visitor: stored events plus the query's inline ones.
    pub async fn score(&self, q: ScoreQuery, now: Millis) -> Result<Score, EngineError> {
        let serving = self.model.current();
        let stored = self
            .store
            .load_standing(&q.visitor)
            .await
            .map_err(|e| self.store_failed(e))?;
        self.score_with(&serving.model, q, stored, now).await
    }

    /// One score per query, in order; each equal to [`Engine::score`] of it.
    pub async fn score_batch(
        &self,
        queries: Vec<ScoreQuery>,
        now: Millis,
    ) -> Result<Vec<Score>, EngineError> {
        // One model for the whole batch: results of one call are comparable.
        let serving = self.model.current();
        let ids: Vec<&VisitorId> = queries.iter().map(|q| &q.visitor).collect();
        let stored = self.store.load_standings(&ids).await;
        let mut scores = Vec::with_capacity(queries.len());
        for (q, rec) in queries.into_iter().zip(stored) {
            let rec = rec.map_err(|e| self.store_failed(e))?;
            scores.push(self.score_with(&serving.model, q, rec, now).await?);
        }
        Ok(scores)
    }

    async fn score_with(
        &self,
        model: &Model,
        mut q: ScoreQuery,
        stored: Option<Standing>,
        now: Millis,
    ) -> Result<Score, EngineError> {
        sort_by_time(&mut q.events);
        let before = q.events.len();
        if let Some(rec) = &stored {
            q.events.retain(|e| e.id.is_none_or(|h| !rec.has_seen(h)));
        }
        let ignored_duplicate = (before - q.events.len()) as u32;
        let latest = [
            stored.as_ref().and_then(|r| r.aggregate.last()),
            q.events.last().map(|e| e.at),
        ]
        .into_iter()
        .flatten()
        .max();
        let as_of = q
            .as_of
            .unwrap_or_else(|| latest.map_or(now, |l| l.max(now)));
        let counted = q.events.partition_point(|e| e.at <= as_of);
        let inline = &q.events[..counted];

        let obs = match stored {
            None => scoring::observe(&self.taxonomy, inline, as_of),
            Some(Standing { mut aggregate, .. }) if aggregate.last().is_none_or(|l| l <= as_of) => {
                for e in inline {
                    aggregate.apply(&self.taxonomy, e);
                }
                aggregate.observe(&self.taxonomy, as_of)
            }
            // Scoring a moment before the visitor's latest stored event: the
            // aggregate holds events that had not happened yet, so rebuild it
            // from the kept raw events up to as_of.
            Some(_) => {
                let kept = self.kept_events(&q.visitor).await?;
                rebuild(&self.taxonomy, &kept, inline, as_of)
                    .aggregate
                    .observe(&self.taxonomy, as_of)
            }
        };
        Ok(self.finish(
            model,
            q,
            obs,
            as_of,
            before - counted - ignored_duplicate as usize,
            ignored_duplicate,
        ))
    }

    /// A visitor's kept raw events, newest first; none for a stranger.
    async fn kept_events(&self, visitor: &VisitorId) -> Result<Vec<StoredEvent>, EngineError> {
        Ok(self
            .store
            .snapshot(visitor)
            .await?
            .map(|s| s.recent)
            .unwrap_or_default())
    }

    fn finish(
        &self,
        model: &Model,
        q: ScoreQuery,
        obs: Observation,
        as_of: Millis,
        after_as_of: usize,
        dup: u32,
    ) -> Score {
        // The features, then any interaction products: each a reason.
        let terms = model.terms(&obs.features);
        let prediction = model.predict_terms(&terms);
        self.metrics
            .score_probability
            .observe(prediction.probability);
        let reasons = top_reasons(model, &terms, q.max_reasons)
            .into_iter()
            .map(|i| reason(model, i, terms[i]))
            .collect();
        let features = if q.explain {
            terms
                .iter()
                .enumerate()
                .map(|(i, &v)| reason(model, i, v))
                .collect()
        } else {
            Vec::new()
        };
        Score {
            visitor: q.visitor,
            as_of,
            probability: prediction.probability,
            log_odds: prediction.log_odds,
            rung: self
                .taxonomy
                .milestone_name(obs.ladder.milestone_rank)
                .cloned(),
            stage: obs.ladder.stage,
            band: self.band(prediction.probability),
            ladder: obs.ladder,
            reasons,
            features,
            model_version: model.shared_version().clone(),
            ignored_after_as_of: after_as_of as u32,
            ignored_unknown_type: q.ignored_unknown_type,
            ignored_duplicate: dup,
        }
    }

    /// Stores events durably and scores the visitor afterwards.
    pub async fn track(&self, q: TrackQuery, now: Millis) -> Result<Tracked, EngineError> {
        // Taken before the write: the score after it uses the model serving
        // when the call started, like every other call.
        let serving = self.model.current();
        let visitor = q.visitor.clone();
        // Every event skipped (unknown types the server ignores): nothing to
        // store, and no visitor to create for it.
        let written = if q.events.is_empty() {
            crate::store::Tracked {
                accepted: 0,
                duplicates: 0,
                record: None,
            }
        } else {
            self.store
                .track(q.visitor, q.events, true)
                .await
                .map_err(|e| self.store_failed(e))?
        };
        // A backend that does not hand the record back is read again.
        let standing = match written.record {
            Some(r) => Some(Standing::from(*r)),
            None => self
                .store
                .load_standing(&visitor)
                .await
                .map_err(|e| self.store_failed(e))?,
        };
        let query = ScoreQuery {
            visitor,
            events: Vec::new(),
            as_of: None,
            max_reasons: self.scoring.max_reasons as usize,
            explain: false,
            ignored_unknown_type: q.ignored_unknown_type,
        };
        let score = self
            .score_with(&serving.model, query, standing, now)
            .await?;
        self.metrics.events("accepted", u64::from(written.accepted));
        self.metrics
            .events("duplicate", u64::from(written.duplicates));
        Ok(Tracked {
            accepted: written.accepted,
            duplicates: written.duplicates,
            score,
        })
    }

    /// What rung remembers about a visitor, read as of one moment.
    pub async fn profile(&self, visitor: &VisitorId) -> Result<Option<Profile>, EngineError> {
        Ok(self
            .store
            .snapshot(visitor)
            .await
            .map_err(|e| self.store_failed(e))?
            .map(|s| Profile {
                visitor: visitor.clone(),
                record: s.record,
                recent: s.recent,
            }))
    }

    /// Erases a visitor; whether anything was there.
    pub async fn forget(&self, visitor: VisitorId) -> Result<bool, EngineError> {
        self.store
            .forget(visitor)
            .await
            .map_err(|e| self.store_failed(e))
    }

    /// Erases visitors inactive for longer than the retention period, in
    /// chunks so writes in between are not held up. Returns how many.
    pub async fn purge_inactive(&self, now: Millis) -> Result<usize, EngineError> {
        let inactive_before = self.oldest_storable(now);
        let mut total = 0;
        loop {
            let purged = self
                .store
                .purge(inactive_before, 10_000)
                .await
                .map_err(|e| self.store_failed(e))?;
            total += purged.visitors;
            if !purged.more {
                return Ok(total);
            }
        }
    }

    /// Whether the store answers (for health checks).
    pub async fn check_store(&self) -> Result<(), EngineError> {
        self.store.check().await.map_err(|e| self.store_failed(e))
    }

    fn band(&self, p: f64) -> Band {
        self.bands.of(p)
    }
}

fn reason(model: &Model, i: usize, value: f64) -> Reason {
    Reason {
        feature: model.feature_names()[i].clone(),
        contribution: model.contribution(i, value),
        value,
    }
}

impl Engine {
    fn swapped(&self, swap: &Swap, trigger: &'static str) {
        self.metrics.set_model(swap.current.version());
        log_swap(swap, trigger);
    }
}

fn log_swap(swap: &Swap, trigger: &'static str) {
    tracing::info!(
        model_version = swap.current.version(),
        previous_version = swap.previous.version(),
        changed = swap.changed(),
        model = %swap.current.source,
        trigger,
        "model swapped in"
    );
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
