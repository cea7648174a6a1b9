//! Audiences over the stored visitors: saved segments, counts and exports
//! evaluated as of the query time, and funnels over a time range.
//!
//! Every query scans the store in visitor-id order, one chunk at a time
//! (each chunk its own read transaction, so writers are never held up).
//! Visitors last seen before the definition's [`Definition::active_since`]
//! are skipped on their record header alone; the rest are decoded and
//! evaluated on all cores.

use crate::audience::definition::{builtins, Definition, DefinitionError, LanguageLimits, NodeId};
use crate::audience::evaluate::{evaluate, Scored, Subject};
use crate::audience::funnel::{FunnelReport, FunnelTally, TimeRange};
use crate::domain::event::{sort_by_time, stable_hash};
use crate::domain::{Event, Millis, Stage, TypeId};
use crate::scoring::{timeline, Aggregate, Band, Model, Timeline};
use crate::store::{self, record, Outcome, RecordView, SavedSegment, WriteOp};

use super::{Engine, EngineError};

/// Visitors decoded per chunk.
const CHUNK: usize = 8192;
/// Ids looked at per chunk, kept or skipped.
const MAX_EXAMINED: usize = 65_536;

/// A segment as listed: built-in or saved.
#[derive(Debug, Clone, PartialEq)]
pub struct SegmentInfo {
    pub name: String,
    pub definition: String,
    pub description: String,
    pub builtin: bool,
    pub updated_at: Option<Millis>,
    pub canonical_json: String,
}

/// A member of an exported segment.
#[derive(Debug, Clone, PartialEq)]
pub struct Member {
    pub visitor: String,
    pub probability: f64,
    pub ladder_score: f64,
    pub band: Band,
    pub stage: Stage,
    pub rung: Option<String>,
    pub last_seen: Option<Millis>,
    pub matched: NodeId,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counted {
    pub count: u64,
    /// Records decoded (the rest were skipped by their last-seen time).
    pub scanned: u64,
}

/// Members from one stretch of the id space.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportChunk {
    pub members: Vec<Member>,
    /// Resume after this id; `None` if the stretch held no visitor.
    pub last_key: Option<String>,
    pub done: bool,
}

/// Why a segment query could not run.
#[derive(Debug, thiserror::Error)]
pub enum AudienceError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("no segment named {0:?}")]
    NotFound(String),
    #[error("segment {0:?} exists; set overwrite to replace it")]
    NameTaken(String),
    #[error("{0:?} is a built-in segment and cannot be changed or deleted")]
    Builtin(String),
    /// A definition sent by the caller.
    #[error("{0}")]
    Definition(#[from] DefinitionError),
    /// A saved definition that no longer passes validation (e.g. a window
    /// now longer than the retention period).
    #[error("saved segment {name:?} is no longer valid: {error}")]
    SavedInvalid {
        name: String,
        error: DefinitionError,
    },
}

impl From<store::StoreError> for AudienceError {
    fn from(e: store::StoreError) -> Self {
        AudienceError::Engine(e.into())
    }
}

impl Engine {
    /// What the store can answer: windows within the retention period,
    /// windowed counts up to the times kept per type.
    pub fn language_limits(&self) -> LanguageLimits {
        LanguageLimits {
            max_window_ms: self.retention_ms,
            max_windowed_count: timeline::PER_TYPE as u32,
        }
    }

    pub fn parse_definition(&self, text: &str) -> Result<Definition, DefinitionError> {
        Definition::parse(text, &self.taxonomy, &self.language_limits())
    }

    /// Built-ins first (in their order), then saved segments by name.
    pub fn segments(&self) -> Result<Vec<SegmentInfo>, AudienceError> {
        let mut out: Vec<SegmentInfo> = builtins()
            .iter()
            .map(|b| self.builtin_info(b.name, b.description, b.json))
            .collect::<Result<_, _>>()?;
        for saved in self.store.segments()? {
            out.push(self.saved_info(saved)?);
        }
        Ok(out)
    }

    pub fn segment(&self, name: &str) -> Result<SegmentInfo, AudienceError> {
        if let Some(b) = builtins().iter().find(|b| b.name == name) {
            return self.builtin_info(b.name, b.description, b.json);
        }
        match self.store.segment(name)? {
            Some(saved) => self.saved_info(saved),
            None => Err(AudienceError::NotFound(name.to_string())),
        }
    }

    /// The parsed definition of a named segment.
    pub fn named_definition(&self, name: &str) -> Result<Definition, AudienceError> {
        let info = self.segment(name)?;
        self.parse_definition(&info.definition)
            .map_err(|error| AudienceError::SavedInvalid {
                name: name.to_string(),
                error,
            })
    }

    /// Whether `name` is still defined (exports check between chunks).
    pub fn segment_exists(&self, name: &str) -> Result<bool, AudienceError> {
        Ok(builtins().iter().any(|b| b.name == name) || self.store.segment(name)?.is_some())
    }

    fn builtin_info(
        &self,
        name: &str,
        description: &str,
        json: &str,
    ) -> Result<SegmentInfo, AudienceError> {
        let def = self
            .parse_definition(json)
            .map_err(|error| AudienceError::SavedInvalid {
                name: name.to_string(),
                error,
            })?;
        Ok(SegmentInfo {
            name: name.to_string(),
            definition: json.to_string(),
            description: description.to_string(),
            builtin: true,
            updated_at: None,
            canonical_json: def.to_json(),
        })
    }

    fn saved_info(&self, s: SavedSegment) -> Result<SegmentInfo, AudienceError> {
        // A saved definition that no longer validates is still listed, so it
        // can be seen and replaced; its canonical form is then empty.
        let canonical_json = self
            .parse_definition(&s.definition)
            .map(|d| d.to_json())
            .unwrap_or_default();
        Ok(SegmentInfo {
            name: s.name,
            definition: s.definition,
            description: s.description,
            builtin: false,
            updated_at: Some(s.updated_at),
            canonical_json,
        })
    }

    /// Validates and saves a definition; whether it replaced one.
    pub async fn put_segment(
        &self,
        name: &str,
        definition: &str,
        description: &str,
        overwrite: bool,
        now: Millis,
    ) -> Result<(SegmentInfo, bool), AudienceError> {
        if builtins().iter().any(|b| b.name == name) {
            return Err(AudienceError::Builtin(name.to_string()));
        }
        self.parse_definition(definition)?;
        let segment = SavedSegment {
            name: name.to_string(),
            definition: definition.to_string(),
            description: description.to_string(),
            updated_at: now,
        };
        let op = WriteOp::PutSegment {
            segment: segment.clone(),
            overwrite,
        };
        match store::settle(self.store.submit(op)).await? {
            Outcome::SegmentPut { replaced } => Ok((self.saved_info(segment)?, replaced)),
            Outcome::SegmentNameTaken => Err(AudienceError::NameTaken(name.to_string())),
            _ => Err(EngineError::UnexpectedOutcome.into()),
        }
    }

    pub async fn delete_segment(&self, name: &str) -> Result<(), AudienceError> {
        if builtins().iter().any(|b| b.name == name) {
            return Err(AudienceError::Builtin(name.to_string()));
        }
        let op = WriteOp::DeleteSegment {
            name: name.to_string(),
        };
        match store::settle(self.store.submit(op)).await? {
            Outcome::SegmentDeleted { existed: true } => Ok(()),
            Outcome::SegmentDeleted { existed: false } => {
                Err(AudienceError::NotFound(name.to_string()))
            }
            _ => Err(EngineError::UnexpectedOutcome.into()),
        }
    }

    /// Members of a definition as of `as_of`.
    pub fn count_segment(&self, def: &Definition, as_of: Millis) -> Result<Counted, EngineError> {
        let serving = self.model.current();
        let since = def
            .active_since(as_of)
            .unwrap_or(Millis::from_unix_millis(i64::MIN));
        let parts = self.scan_parallel(
            since,
            || Counted {
                count: 0,
                scanned: 0,
            },
            |c, id, bytes| {
                c.scanned += 1;
                if let Some(mut subject) = self.subject(&serving.model, id, bytes, as_of) {
                    c.count += u64::from(evaluate(def, &mut subject).is_some());
                }
            },
        )?;
        Ok(parts.into_iter().fold(
            Counted {
                count: 0,
                scanned: 0,
            },
            |a, b| Counted {
                count: a.count + b.count,
                scanned: a.scanned + b.scanned,
            },
        ))
    }

    /// Scans every visitor last seen at or after `since`, on all cores: the
    /// id space is cut into more parts than cores and each worker takes the
    /// next part when done, so uneven parts still balance. One `R` per part.
    fn scan_parallel<R: Send>(
        &self,
        since: Millis,
        init: impl Fn() -> R + Sync,
        visit: impl Fn(&mut R, &str, &[u8]) + Sync,
    ) -> Result<Vec<R>, EngineError> {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let parts = self.store.partitions(cores * 8)?;
        let next = std::sync::atomic::AtomicUsize::new(0);
        let worker = || -> Result<Vec<R>, EngineError> {
            let mut done = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(range) = parts.get(i) else {
                    return Ok(done);
                };
                let mut acc = init();
                self.store.scan_range(range, since, &mut |id, bytes| {
                    visit(&mut acc, id, bytes);
                    std::ops::ControlFlow::Continue(())
                })?;
                done.push(acc);
            }
        };
        if cores == 1 || parts.len() == 1 {
            return worker();
        }
        std::thread::scope(|scope| {
            let handles: Vec<_> = (0..cores).map(|_| scope.spawn(worker)).collect();
            let mut all = Vec::new();
            for h in handles {
                all.extend(h.join().map_err(|_| EngineError::UnexpectedOutcome)??);
            }
            Ok(all)
        })
    }

    /// The members among the visitors after `after` (in id order), one
    /// store chunk's worth.
    pub fn export_chunk(
        &self,
        def: &Definition,
        as_of: Millis,
        after: Option<&str>,
    ) -> Result<ExportChunk, EngineError> {
        let serving = self.model.current();
        let since = def
            .active_since(as_of)
            .unwrap_or(Millis::from_unix_millis(i64::MIN));
        let chunk = self.store.scan(after, since, CHUNK, MAX_EXAMINED)?;
        let parts = on_all_cores(&chunk.entries, |entries| {
            let mut members = Vec::new();
            for (id, bytes) in entries {
                let Some(mut subject) = self.subject(&serving.model, id, bytes, as_of) else {
                    continue;
                };
                if let Some(matched) = evaluate(def, &mut subject) {
                    let scored = subject.scored();
                    members.push(Member {
                        visitor: id.clone(),
                        probability: scored.probability,
                        ladder_score: scored.ladder_score,
                        band: scored.band,
                        stage: subject.stage(),
                        rung: self
                            .taxonomy
                            .milestone_at(subject.milestone_rank())
                            .map(|t| t.name.clone()),
                        last_seen: subject.last_seen(),
                        matched,
                    });
                }
            }
            members
        });
        Ok(ExportChunk {
            members: parts.into_iter().flatten().collect(),
            last_key: chunk.last_key,
            done: chunk.done,
        })
    }

    /// Funnel figures over `[from, to)`.
    pub fn funnel(&self, range: TimeRange) -> Result<FunnelReport, EngineError> {
        let parts = self.scan_parallel(
            range.from,
            || FunnelTally::new(&self.taxonomy),
            |tally, id, bytes| {
                if let Some(view) = self.decode(id, bytes) {
                    tally.add(&self.taxonomy, range, &view.aggregate, &view.timeline);
                }
            },
        )?;
        let mut total = FunnelTally::new(&self.taxonomy);
        for t in &parts {
            total.merge(t);
        }
        Ok(total.report(&self.taxonomy, range))
    }

    /// A corrupt record is left out of audiences (and logged) rather than
    /// failing the whole query.
    fn decode(&self, id: &str, bytes: &[u8]) -> Option<RecordView> {
        match record::decode_view(id, bytes, &self.taxonomy) {
            Ok(v) => Some(v),
            Err(e) => {
                tracing::warn!(visitor_id = id, error = %e, "unreadable visitor left out of an audience");
                None
            }
        }
    }

    fn subject<'a>(
        &'a self,
        model: &'a Model,
        id: &str,
        bytes: &[u8],
        as_of: Millis,
    ) -> Option<StoredSubject<'a>> {
        let mut view = self.decode(id, bytes)?;
        if view.aggregate.last().is_some_and(|l| l > as_of) {
            view = self.rewind(id, as_of)?;
        }
        Some(StoredSubject {
            engine: self,
            model,
            as_of,
            view,
            scored: None,
        })
    }

    /// The visitor as they were at `as_of`, from the kept raw events.
    fn rewind(&self, id: &str, as_of: Millis) -> Option<RecordView> {
        let visitor = crate::domain::VisitorId::parse(id.to_string(), usize::MAX).ok()?;
        let recent = match self.store.recent_events(&visitor) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(visitor_id = id, error = %e, "unreadable visitor left out of an audience");
                return None;
            }
        };
        let mut events: Vec<Event> = recent
            .iter()
            .filter(|e| e.at <= as_of)
            .filter_map(|e| {
                let kind = self.taxonomy.resolve(&e.kind)?;
                Some(Event::new(kind, e.at).with_item(&e.item_id))
            })
            .collect();
        sort_by_time(&mut events);
        let mut aggregate = Aggregate::new(&self.taxonomy, as_of);
        let mut timeline = Timeline::default();
        for e in &events {
            aggregate.apply(&self.taxonomy, e);
            timeline.record(e.kind, e.at);
        }
        Some(RecordView {
            aggregate,
            timeline,
        })
    }
}

/// A stored visitor seen by the segment language.
struct StoredSubject<'a> {
    engine: &'a Engine,
    model: &'a Model,
    as_of: Millis,
    view: RecordView,
    scored: Option<Scored>,
}

impl Subject for StoredSubject<'_> {
    fn as_of(&self) -> Millis {
        self.as_of
    }

    fn first_seen(&self) -> Option<Millis> {
        self.view.aggregate.first()
    }

    fn last_seen(&self) -> Option<Millis> {
        self.view.aggregate.last()
    }

    fn sessions(&self) -> u32 {
        self.view.aggregate.sessions()
    }

    fn milestone_rank(&self) -> u8 {
        self.view.aggregate.highest_milestone()
    }

    fn stage(&self) -> Stage {
        self.view.aggregate.stage()
    }

    fn total(&self, t: TypeId) -> u64 {
        self.view.aggregate.count(t)
    }

    fn times(&self, t: TypeId) -> &[Millis] {
        self.view.timeline.times(t)
    }

    fn scored(&mut self) -> Scored {
        if let Some(s) = self.scored {
            return s;
        }
        let obs = self
            .view
            .aggregate
            .observe(&self.engine.taxonomy, self.as_of);
        let p = self.model.predict(&obs.features).probability;
        let s = Scored {
            probability: p,
            ladder_score: obs.ladder.score,
            band: self.engine.band(p),
        };
        self.scored = Some(s);
        s
    }
}

/// Runs `f` over `items` split into one slice per core; results in slice order.
fn on_all_cores<T: Sync, R: Send>(items: &[T], f: impl Fn(&[T]) -> R + Sync) -> Vec<R> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cores == 1 || items.len() < 256 {
        return vec![f(items)];
    }
    let per = items.len().div_ceil(cores);
    std::thread::scope(|scope| {
        let f = &f;
        let handles: Vec<_> = items
            .chunks(per)
            .map(|part| scope.spawn(move || f(part)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("audience worker panicked"))
            .collect()
    })
}

/// An export's resume token: the as_of, the definition's fingerprint and
/// the last visitor sent, so a resumed export answers for the same moment
/// and refuses a token of another definition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResumeToken {
    pub as_of: Millis,
    pub definition: u64,
    pub after: String,
}

impl ResumeToken {
    pub fn fingerprint(def: &Definition) -> u64 {
        stable_hash(&def.to_json())
    }

    pub fn encode(&self) -> String {
        let hex: String = self.after.bytes().map(|b| format!("{b:02x}")).collect();
        format!(
            "r1.{}.{:016x}.{hex}",
            self.as_of.as_unix_millis(),
            self.definition
        )
    }

    pub fn decode(text: &str) -> Option<ResumeToken> {
        let mut parts = text.split('.');
        if parts.next()? != "r1" {
            return None;
        }
        let as_of = Millis::from_unix_millis(parts.next()?.parse().ok()?);
        let definition = u64::from_str_radix(parts.next()?, 16).ok()?;
        let hex = parts.next()?;
        if parts.next().is_some() || hex.len() % 2 != 0 {
            return None;
        }
        let bytes: Option<Vec<u8>> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
            .collect();
        let after = String::from_utf8(bytes?).ok()?;
        Some(ResumeToken {
            as_of,
            definition,
            after,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resume_tokens_round_trip_and_refuse_garbage() {
        let t = ResumeToken {
            as_of: Millis::from_unix_millis(1_767_225_600_123),
            definition: 0xdead_beef,
            after: "visitor.42/ü".into(),
        };
        assert_eq!(ResumeToken::decode(&t.encode()), Some(t));
        for bad in [
            "",
            "r1",
            "r2.1.2.00",
            "r1.x.00.00",
            "r1.1.zz.00",
            "r1.1.2.0",
            "r1.1.2.ff",
        ] {
            assert_eq!(ResumeToken::decode(bad), None, "{bad}");
        }
    }
}
