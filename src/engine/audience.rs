//! Audiences over the stored visitors: saved segments, counts and exports
//! evaluated as of the query time, and funnels over a time range.
//!
//! Every query reads the store a chunk at a time through one call,
//! [`Store::scan`](crate::store::Store::scan); visitors last seen before the
//! definition's [`Definition::active_since`] are skipped by the store without
//! decoding (a record header in redb, an index in Redis). Counts and funnels
//! need no order: the scan order is cut into parts that one worker per core
//! walks at once. An export walks in order, reading the next chunk while the
//! current one is evaluated on all cores.

use std::sync::Arc;

use futures_util::future::join_all;
use tokio::sync::mpsc;

use crate::audience::definition::{builtins, Definition, DefinitionError, LanguageLimits, NodeId};
use crate::audience::evaluate::{evaluate, Scored, Subject};
use crate::audience::funnel::{FunnelReport, FunnelTally, TimeRange};
use crate::deploy::Deployed;
use crate::domain::event::stable_hash;
use crate::domain::{Millis, Stage, TypeId, VisitorId};
use crate::scoring::{rebuild, timeline, Band, Model};
use crate::store::{
    record, RecordView, SavedSegment, ScanChunk, ScanRange, SegmentWrite, StoreError,
};

use super::{Engine, EngineError};

/// Visitors decoded per chunk.
const CHUNK: usize = 8192;

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
    /// The clause that decided membership: its path and its text.
    pub matched_path: String,
    pub matched_clause: String,
    /// Resumes the export right after this member.
    pub resume_token: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counted {
    pub count: u64,
    /// Records decoded (the rest were skipped by their last-seen time).
    pub scanned: u64,
}

/// An export to run ([`Engine::export`]).
#[derive(Debug, Clone)]
pub struct ExportQuery {
    pub definition: Arc<Definition>,
    /// The saved or built-in segment's name, if it is one: the export ends
    /// with "not found" if it is deleted meanwhile.
    pub name: Option<String>,
    pub as_of: Millis,
    /// Resume after this visitor (from a [`ResumeToken`]).
    pub after: Option<String>,
}

/// Members of one chunk, in scan order, each with where its verdict came from.
enum Found {
    /// A member (its details only when an export asked for them).
    Member(Option<Box<(Member, NodeId)>>),
    /// The record holds events after `as_of`: evaluate it on a rebuild.
    Rewind,
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
    pub async fn segments(&self) -> Result<Vec<SegmentInfo>, EngineError> {
        let mut out: Vec<SegmentInfo> = builtins()
            .iter()
            .map(|b| self.builtin_info(b.name, b.description, b.json))
            .collect::<Result<_, _>>()?;
        for saved in self
            .store
            .segments()
            .await
            .map_err(|e| self.store_failed(e))?
        {
            out.push(self.saved_info(saved));
        }
        Ok(out)
    }

    pub async fn segment(&self, name: &str) -> Result<SegmentInfo, EngineError> {
        if let Some(b) = builtins().iter().find(|b| b.name == name) {
            return self.builtin_info(b.name, b.description, b.json);
        }
        match self
            .store
            .segment(name)
            .await
            .map_err(|e| self.store_failed(e))?
        {
            Some(saved) => Ok(self.saved_info(saved)),
            None => Err(EngineError::SegmentNotFound(name.to_string())),
        }
    }

    /// The parsed definition of a named segment.
    pub async fn named_definition(&self, name: &str) -> Result<Definition, EngineError> {
        let info = self.segment(name).await?;
        self.parse_definition(&info.definition)
            .map_err(|error| EngineError::SavedSegmentInvalid {
                name: name.to_string(),
                error,
            })
    }

    /// Whether `name` is still defined (exports check between chunks).
    async fn segment_exists(&self, name: &str) -> Result<bool, EngineError> {
        Ok(builtins().iter().any(|b| b.name == name)
            || self
                .store
                .segment(name)
                .await
                .map_err(|e| self.store_failed(e))?
                .is_some())
    }

    fn builtin_info(
        &self,
        name: &str,
        description: &str,
        json: &str,
    ) -> Result<SegmentInfo, EngineError> {
        let def =
            self.parse_definition(json)
                .map_err(|error| EngineError::SavedSegmentInvalid {
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

    fn saved_info(&self, s: SavedSegment) -> SegmentInfo {
        // A saved definition that no longer validates is still listed, so it
        // can be seen and replaced; its canonical form is then empty.
        let canonical_json = self
            .parse_definition(&s.definition)
            .map(|d| d.to_json())
            .unwrap_or_default();
        SegmentInfo {
            name: s.name,
            definition: s.definition,
            description: s.description,
            builtin: false,
            updated_at: Some(s.updated_at),
            canonical_json,
        }
    }

    /// Validates and saves a definition; whether it replaced one.
    pub async fn put_segment(
        &self,
        name: &str,
        definition: &str,
        description: &str,
        overwrite: bool,
        now: Millis,
    ) -> Result<(SegmentInfo, bool), EngineError> {
        if builtins().iter().any(|b| b.name == name) {
            return Err(EngineError::BuiltinSegment(name.to_string()));
        }
        self.parse_definition(definition)?;
        let segment = SavedSegment {
            name: name.to_string(),
            definition: definition.to_string(),
            description: description.to_string(),
            updated_at: now,
        };
        let replaced = match self
            .store
            .put_segment(segment.clone(), overwrite)
            .await
            .map_err(|e| self.store_failed(e))?
        {
            SegmentWrite::Created => false,
            SegmentWrite::Replaced => true,
            SegmentWrite::NameTaken => return Err(EngineError::SegmentNameTaken(name.to_string())),
        };
        Ok((self.saved_info(segment), replaced))
    }

    pub async fn delete_segment(&self, name: &str) -> Result<(), EngineError> {
        if builtins().iter().any(|b| b.name == name) {
            return Err(EngineError::BuiltinSegment(name.to_string()));
        }
        if self
            .store
            .delete_segment(name)
            .await
            .map_err(|e| self.store_failed(e))?
        {
            Ok(())
        } else {
            Err(EngineError::SegmentNotFound(name.to_string()))
        }
    }

    /// Members of a definition as of `as_of`.
    pub async fn count_segment(
        self: &Arc<Self>,
        def: Arc<Definition>,
        as_of: Millis,
    ) -> Result<Counted, EngineError> {
        let serving = self.model.current();
        let parts = self
            .walk_in_parallel(since(&def, as_of), |chunk| {
                let (engine, serving, def) = (self.clone(), serving.clone(), def.clone());
                async move {
                    let scanned = chunk.len() as u64;
                    let found = engine
                        .evaluate_chunk(&serving, &def, as_of, chunk, Cores::One, false)
                        .await?;
                    Ok(Counted {
                        count: found.len() as u64,
                        scanned,
                    })
                }
            })
            .await?;
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

    /// Streams the members of a definition as of a moment, in the store's
    /// scan order, chunk by chunk, until the end, a failure, the segment's
    /// deletion, or the receiver going away. Each member carries the token
    /// that resumes the export after it.
    pub fn export(
        self: &Arc<Self>,
        q: ExportQuery,
    ) -> mpsc::Receiver<Result<Vec<Member>, EngineError>> {
        // Chunks buffered ahead of a slow reader.
        const AHEAD: usize = 4;
        let (tx, rx) = mpsc::channel(AHEAD);
        let engine = self.clone();
        tokio::spawn(async move {
            let mut sent = 0u64;
            let segment = q.name.as_deref().unwrap_or("(inline)").to_string();
            match engine.run_export(&q, &tx, &mut sent).await {
                Ok(true) => tracing::info!(sent, segment, "export finished"),
                Ok(false) => tracing::info!(sent, segment, "export abandoned by the client"),
                Err(e) => {
                    tracing::info!(error = %e, sent, segment, "export ended early");
                    let _ = tx.send(Err(e)).await;
                }
            }
        });
        rx
    }

    /// `Ok(false)`: the receiver went away.
    async fn run_export(
        self: &Arc<Self>,
        q: &ExportQuery,
        tx: &mpsc::Sender<Result<Vec<Member>, EngineError>>,
        sent: &mut u64,
    ) -> Result<bool, EngineError> {
        let serving = self.model.current();
        let fingerprint = ResumeToken::fingerprint(&q.definition);
        // The token names the last member sent; the store knows its place.
        let after = q.after.as_deref().map(|id| self.store.scan_key(id));
        let mut chunks = self.chunks(since(&q.definition, q.as_of), after);
        while let Some(chunk) = chunks.recv().await {
            if let Some(name) = &q.name {
                if !self.segment_exists(name).await? {
                    return Err(EngineError::SegmentNotFound(name.clone()));
                }
            }
            let found = self
                .evaluate_chunk(&serving, &q.definition, q.as_of, chunk?, Cores::All, true)
                .await?;
            let members: Vec<Member> = found
                .into_iter()
                .flatten()
                .map(|boxed| {
                    let (mut m, node) = *boxed;
                    let (path, clause) = q.definition.node(node);
                    m.matched_path = path.to_string();
                    m.matched_clause = clause.to_string();
                    m.resume_token = ResumeToken {
                        as_of: q.as_of,
                        definition: fingerprint,
                        after: m.visitor.clone(),
                    }
                    .encode();
                    m
                })
                .collect();
            *sent += members.len() as u64;
            if !members.is_empty() && tx.send(Ok(members)).await.is_err() {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Funnel figures over `[from, to)`.
    pub async fn funnel(self: &Arc<Self>, range: TimeRange) -> Result<FunnelReport, EngineError> {
        let parts = self
            .walk_in_parallel(range.from, |chunk| {
                let engine = self.clone();
                async move {
                    blocking(move || {
                        let mut tally = FunnelTally::new(&engine.taxonomy);
                        for (id, bytes) in chunk.iter() {
                            if let Some(view) = engine.decode(id, bytes) {
                                tally.add(&engine.taxonomy, range, &view.aggregate, &view.timeline);
                            }
                        }
                        Ok(tally)
                    })
                    .await?
                }
            })
            .await?;
        let mut total = FunnelTally::new(&self.taxonomy);
        for t in &parts {
            total.merge(t);
        }
        Ok(total.report(&self.taxonomy, range))
    }

    /// Runs `work` on every chunk of the visitors last seen at or after
    /// `since`, in any order: the store's scan order is cut into parts, and
    /// one worker per core walks the next part, chunk by chunk, so reading
    /// and evaluating run on every core. One result per chunk.
    async fn walk_in_parallel<R, F, Fut>(
        self: &Arc<Self>,
        since: Millis,
        work: F,
    ) -> Result<Vec<R>, EngineError>
    where
        F: Fn(ScanChunk) -> Fut,
        Fut: std::future::Future<Output = Result<R, EngineError>>,
    {
        let workers = std::thread::available_parallelism().map_or(2, |n| n.get().max(2));
        // More parts than workers, so uneven parts still balance.
        let parts = self
            .store
            .partitions(workers * 4)
            .await
            .map_err(|e| self.store_failed(e))?;
        let next = std::sync::atomic::AtomicUsize::new(0);
        let worker = || async {
            let mut results = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(part) = parts.get(i) else {
                    return Ok::<_, EngineError>(results);
                };
                let mut after: Option<String> = None;
                loop {
                    let chunk = self
                        .store
                        .scan(part, after.as_deref(), since, CHUNK)
                        .await?;
                    let (done, last) = (chunk.done, chunk.last_key.clone());
                    results.push(work(chunk).await?);
                    match (done, last) {
                        (false, Some(key)) => after = Some(key),
                        _ => break,
                    }
                }
            }
        };
        let mut all = Vec::new();
        for results in join_all((0..workers).map(|_| worker())).await {
            all.extend(results?);
        }
        Ok(all)
    }

    /// The chunks of visitors last seen at or after `since`, after the scan
    /// key `after`, in scan order, read one chunk ahead of the caller. The
    /// reading stops when the receiver goes away.
    fn chunks(
        &self,
        since: Millis,
        after: Option<String>,
    ) -> mpsc::Receiver<Result<ScanChunk, StoreError>> {
        let store = self.store.clone();
        let (tx, rx) = mpsc::channel(1);
        tokio::spawn(async move {
            let mut after = after;
            let all = ScanRange::default();
            loop {
                let chunk = store.scan(&all, after.as_deref(), since, CHUNK).await;
                let next = match &chunk {
                    Ok(c) if !c.done => c.last_key.clone(),
                    _ => None,
                };
                if tx.send(chunk).await.is_err() {
                    return;
                }
                match next {
                    Some(key) => after = Some(key),
                    None => return,
                }
            }
        });
        rx
    }

    /// Evaluates a chunk on the blocking pool, on one core or on all: the
    /// members, in scan order. Visitors whose records hold events after
    /// `as_of` are evaluated on a rebuild from their kept raw events, in
    /// their place.
    async fn evaluate_chunk(
        self: &Arc<Self>,
        serving: &Arc<Deployed>,
        def: &Arc<Definition>,
        as_of: Millis,
        chunk: ScanChunk,
        cores: Cores,
        details: bool,
    ) -> Result<Vec<Option<Box<(Member, NodeId)>>>, EngineError> {
        let chunk = Arc::new(chunk);
        let (engine, serving2, def2, chunk2) =
            (self.clone(), serving.clone(), def.clone(), chunk.clone());
        let parts = blocking(move || {
            let per = match cores {
                Cores::One => chunk2.len().max(1),
                Cores::All => 0,
            };
            on_cores(chunk2.len(), per, |part| {
                part.filter_map(|i| {
                    let (id, bytes) = chunk2.get(i);
                    let view = engine.decode(id, bytes)?;
                    if view.aggregate.last().is_some_and(|l| l > as_of) {
                        return Some((i, Found::Rewind));
                    }
                    let matched = engine.judge(&serving2.model, &def2, as_of, id, view, details);
                    matched.map(|m| (i, Found::Member(m)))
                })
                .collect::<Vec<_>>()
            })
        })
        .await??;
        let mut out = Vec::new();
        for (i, found) in parts.into_iter().flatten() {
            match found {
                Found::Member(m) => out.push(m),
                Found::Rewind => {
                    let (id, _) = chunk.get(i);
                    if let Some(view) = self.rewind(id, as_of).await {
                        if let Some(m) = self.judge(&serving.model, def, as_of, id, view, details) {
                            out.push(m);
                        }
                    }
                }
            }
        }
        Ok(out)
    }

    /// `Some` for a member (with its details when asked for), `None` otherwise.
    fn judge(
        &self,
        model: &Model,
        def: &Definition,
        as_of: Millis,
        id: &str,
        view: RecordView,
        details: bool,
    ) -> Option<Option<Box<(Member, NodeId)>>> {
        let mut subject = StoredSubject {
            engine: self,
            model,
            as_of,
            view,
            scored: None,
        };
        let node = evaluate(def, &mut subject)?;
        if !details {
            return Some(None);
        }
        let scored = subject.scored();
        let member = Member {
            visitor: id.to_string(),
            probability: scored.probability,
            ladder_score: scored.ladder_score,
            band: scored.band,
            stage: subject.stage(),
            rung: self
                .taxonomy
                .milestone_at(subject.milestone_rank())
                .map(|t| t.name.clone()),
            last_seen: subject.last_seen(),
            matched_path: String::new(),
            matched_clause: String::new(),
            resume_token: String::new(),
        };
        Some(Some(Box::new((member, node))))
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

    /// The visitor as they were at `as_of`, rebuilt from the kept raw events.
    async fn rewind(&self, id: &str, as_of: Millis) -> Option<RecordView> {
        let visitor = VisitorId::parse(id.to_string(), usize::MAX).ok()?;
        let kept = match self.kept_events(&visitor).await {
            Ok(k) => k,
            Err(e) => {
                tracing::warn!(visitor_id = id, error = %e, "unreadable visitor left out of an audience");
                return None;
            }
        };
        let r = rebuild(&self.taxonomy, &kept, &[], as_of);
        Some(RecordView {
            aggregate: r.aggregate,
            timeline: r.timeline,
        })
    }
}

/// The earliest last-seen time a member of `def` can have at `as_of`.
fn since(def: &Definition, as_of: Millis) -> Millis {
    def.active_since(as_of)
        .unwrap_or(Millis::from_unix_millis(i64::MIN))
}

/// Runs CPU work on the blocking pool, so it never stalls scoring calls.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, EngineError> + Send + 'static,
) -> Result<Result<T, EngineError>, EngineError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| EngineError::Internal(format!("audience task failed: {e}")))
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

/// Where a chunk is evaluated: on the thread at hand (when other workers
/// keep the other cores busy), or split over every core.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cores {
    One,
    All,
}

/// Runs `f` over the indices `0..len` in stretches of `per` (0: one
/// stretch per core); results in order. A worker that panics fails the
/// query, not the server.
fn on_cores<R: Send>(
    len: usize,
    per: usize,
    f: impl Fn(std::ops::Range<usize>) -> R + Sync,
) -> Result<Vec<R>, EngineError> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if len < 256 || per >= len || (per == 0 && cores == 1) {
        return Ok(vec![f(0..len)]);
    }
    let per = if per == 0 { len.div_ceil(cores) } else { per };
    std::thread::scope(|scope| {
        let f = &f;
        let handles: Vec<_> = (0..len)
            .step_by(per)
            .map(|start| scope.spawn(move || f(start..(start + per).min(len))))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .map_err(|_| EngineError::Internal("an audience worker panicked".into()))
            })
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
