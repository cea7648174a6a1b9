//! The embedded store: one redb file in the data directory.
//!
//! Writes go through one writer thread that drains every write queued while
//! the previous commit was syncing and applies them in a single transaction
//! (group commit): each caller hears back only after that commit is on disk,
//! and concurrent writers share the cost of the sync. Reads use their own
//! read transactions and never wait for the writer.
//!
//! Tables:
//! - `visitors`: visitor id → last-seen (8 bytes, little-endian unix ms, so a
//!   purge can skip decoding) + the postcard-encoded [`VisitorRecord`];
//! - `events`: (visitor id, ring slot) → postcard-encoded [`StoredEvent`];
//! - `segments`: segment name → JSON [`SavedSegment`];
//! - `meta`: format version and the fingerprint of the taxonomy the
//!   aggregates were built with.
//!
//! Format history: v1 records had no timeline; opening a v1 file rebuilds
//! each visitor's timeline from its kept raw events, once, in one
//! transaction.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;

use redb::{
    Database, DatabaseError, ReadableDatabase, ReadableTable, ReadableTableMetadata,
    TableDefinition,
};

use crate::domain::{Millis, NewEvent, StoredEvent, Taxonomy, VisitorId};
use crate::scoring::rebuild;

use super::record::{
    decode as decode_record, decode_event, decode_segment, encode as encode_record, encode_event,
    encode_segment, last_seen,
};
use super::{
    Purged, Reply, SavedSegment, ScanChunk, ScanRange, SegmentWrite, Snapshot, Store, StoreError,
    StoreLimits, Ticket, Tracked, VisitorRecord,
};

const VISITORS: TableDefinition<&str, &[u8]> = TableDefinition::new("visitors");
const EVENTS: TableDefinition<(&str, u32), &[u8]> = TableDefinition::new("events");
const META: TableDefinition<&str, &str> = TableDefinition::new("meta");
const SEGMENTS: TableDefinition<&str, &[u8]> = TableDefinition::new("segments");

const FORMAT: &str = "rung.store.v2";
const FORMAT_V1: &str = "rung.store.v1";
/// The file inside the data directory.
pub const FILE_NAME: &str = "rung.redb";

/// A write queued for the writer thread, with the caller's reply.
enum Job {
    Track {
        visitor: VisitorId,
        events: Vec<NewEvent>,
        want_record: bool,
        reply: Reply<Tracked>,
    },
    Forget {
        visitor: VisitorId,
        reply: Reply<bool>,
    },
    Purge {
        inactive_before: Millis,
        limit: usize,
        reply: Reply<Purged>,
    },
    PutSegment {
        segment: SavedSegment,
        overwrite: bool,
        reply: Reply<SegmentWrite>,
    },
    DeleteSegment {
        name: String,
        reply: Reply<bool>,
    },
}

/// A job's result, held until its group commits.
enum Done {
    Track(Reply<Tracked>, Result<Tracked, StoreError>),
    Forget(Reply<bool>, bool),
    Purge(Reply<Purged>, Purged),
    PutSegment(Reply<SegmentWrite>, SegmentWrite),
    DeleteSegment(Reply<bool>, bool),
}

impl Done {
    /// Answers the caller: its own result once the group committed, the
    /// group's failure otherwise.
    fn finish(self, commit: &Result<(), StoreError>) {
        fn answer<T>(reply: Reply<T>, own: Result<T, StoreError>, commit: &Result<(), StoreError>) {
            // A caller that went away no longer wants the answer.
            let _ = reply.send(commit.clone().and(own));
        }
        match self {
            Done::Track(r, v) => answer(r, v, commit),
            Done::Forget(r, v) => answer(r, Ok(v), commit),
            Done::Purge(r, v) => answer(r, Ok(v), commit),
            Done::PutSegment(r, v) => answer(r, Ok(v), commit),
            Done::DeleteSegment(r, v) => answer(r, Ok(v), commit),
        }
    }
}

impl Job {
    fn fail(self, e: StoreError) {
        let _ = match self {
            Job::Track { reply, .. } => reply.send(Err(e)).is_ok(),
            Job::Forget { reply, .. } => reply.send(Err(e)).is_ok(),
            Job::Purge { reply, .. } => reply.send(Err(e)).is_ok(),
            Job::PutSegment { reply, .. } => reply.send(Err(e)).is_ok(),
            Job::DeleteSegment { reply, .. } => reply.send(Err(e)).is_ok(),
        };
    }
}

pub struct RedbStore {
    db: Arc<Database>,
    taxonomy: Arc<Taxonomy>,
    jobs: Option<mpsc::Sender<Job>>,
    writer: Option<JoinHandle<()>>,
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

impl RedbStore {
    /// Opens (or creates) the store in `dir`. Fails if another process has
    /// it open or if it was written under another taxonomy.
    pub fn open(
        dir: &Path,
        taxonomy: Arc<Taxonomy>,
        limits: StoreLimits,
    ) -> Result<RedbStore, StoreError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| unavailable(format!("cannot create {}: {e}", dir.display())))?;
        let path = dir.join(FILE_NAME);
        let db = Database::create(&path).map_err(|e| match e {
            DatabaseError::DatabaseAlreadyOpen => StoreError::Locked {
                path: dir.to_path_buf(),
            },
            other => unavailable(format!("cannot open {}: {other}", path.display())),
        })?;
        init(&db, &taxonomy, &path)?;
        let db = Arc::new(db);
        let (tx, rx) = mpsc::channel::<Job>();
        let writer = {
            let db = db.clone();
            let taxonomy = taxonomy.clone();
            std::thread::Builder::new()
                .name("rung-store-writer".into())
                .spawn(move || {
                    Writer {
                        db,
                        taxonomy,
                        limits,
                    }
                    .run(rx)
                })
                .map_err(unavailable)?
        };
        Ok(RedbStore {
            db,
            taxonomy,
            jobs: Some(tx),
            writer: Some(writer),
        })
    }

    /// Bytes the store file takes on disk.
    pub fn file_size(dir: &Path) -> std::io::Result<u64> {
        Ok(std::fs::metadata(dir.join(FILE_NAME))?.len())
    }
}

impl Drop for RedbStore {
    fn drop(&mut self) {
        // Closing the queue ends the writer once it has committed what it
        // holds; joining it releases the file lock before we return.
        self.jobs.take();
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
    }
}

fn init(db: &Database, taxonomy: &Taxonomy, path: &Path) -> Result<(), StoreError> {
    let txn = db.begin_write().map_err(unavailable)?;
    {
        let mut meta = txn.open_table(META).map_err(unavailable)?;
        txn.open_table(VISITORS).map_err(unavailable)?;
        txn.open_table(EVENTS).map_err(unavailable)?;
        txn.open_table(SEGMENTS).map_err(unavailable)?;
        let format = meta
            .get("format")
            .map_err(unavailable)?
            .map(|v| v.value().to_string());
        match format.as_deref() {
            None => {
                meta.insert("format", FORMAT).map_err(unavailable)?;
                meta.insert("taxonomy", taxonomy.fingerprint())
                    .map_err(unavailable)?;
            }
            Some(FORMAT) | Some(FORMAT_V1) => {
                let stored = meta
                    .get("taxonomy")
                    .map_err(unavailable)?
                    .map(|v| v.value().to_string())
                    .unwrap_or_default();
                if stored != taxonomy.fingerprint() {
                    return Err(StoreError::Incompatible(format!(
                        "{} holds visitors aggregated under taxonomy {stored}, but the running taxonomy is {}; \
                         start with a new data directory (or the taxonomy it was written with)",
                        path.display(),
                        taxonomy.fingerprint()
                    )));
                }
                if format.as_deref() == Some(FORMAT_V1) {
                    migrate_v1(&txn, taxonomy)?;
                    meta.insert("format", FORMAT).map_err(unavailable)?;
                    tracing::info!(path = %path.display(), "store upgraded from v1 to v2 (timelines rebuilt from raw events)");
                }
            }
            Some(other) => {
                return Err(StoreError::Incompatible(format!(
                    "{} has format {other:?}; this build reads {FORMAT:?}",
                    path.display()
                )))
            }
        }
    }
    txn.commit().map_err(unavailable)
}

/// The v1 record: v2 without the timeline.
#[derive(serde::Deserialize)]
struct RecordV1 {
    aggregate: crate::scoring::Aggregate,
    next_seq: u64,
    seen_ids: std::collections::VecDeque<u64>,
}

/// Rewrites every v1 record as v2, its timeline rebuilt from the kept raw
/// events (the timeline keeps fewer times per type than the ring holds).
fn migrate_v1(txn: &redb::WriteTransaction, taxonomy: &Taxonomy) -> Result<(), StoreError> {
    let mut visitors = txn.open_table(VISITORS).map_err(unavailable)?;
    let events = txn.open_table(EVENTS).map_err(unavailable)?;
    let mut upgraded = Vec::new();
    for entry in visitors.iter().map_err(unavailable)? {
        let (k, v) = entry.map_err(unavailable)?;
        let id = k.value().to_string();
        let Some(old) = v
            .value()
            .get(8..)
            .and_then(|b| postcard::from_bytes::<RecordV1>(b).ok())
        else {
            // Left as is: reading it reports it corrupt, for this visitor only.
            continue;
        };
        let kept = read_ring(&events, &id)?;
        let latest = old.aggregate.last().unwrap_or(Millis::from_unix_millis(0));
        let record = VisitorRecord {
            timeline: rebuild(taxonomy, &kept, &[], latest).timeline,
            aggregate: old.aggregate,
            next_seq: old.next_seq,
            seen_ids: old.seen_ids,
        };
        upgraded.push((id, encode_record(&record)?));
    }
    for (id, bytes) in upgraded {
        visitors
            .insert(id.as_str(), bytes.as_slice())
            .map_err(unavailable)?;
    }
    Ok(())
}

/// A visitor's kept raw events, newest first.
fn read_ring(
    table: &impl ReadableTable<(&'static str, u32), &'static [u8]>,
    visitor: &str,
) -> Result<Vec<StoredEvent>, StoreError> {
    let mut out = Vec::new();
    for entry in table
        .range((visitor, 0u32)..=(visitor, u32::MAX))
        .map_err(unavailable)?
    {
        let (_, value) = entry.map_err(unavailable)?;
        out.push(decode_event(visitor, value.value())?);
    }
    out.sort_by_key(|e| std::cmp::Reverse(e.seq));
    Ok(out)
}

/// Ids looked at by one scan call, kept or skipped: one call stays short.
const MAX_EXAMINED: usize = 65_536;

impl RedbStore {
    fn read_record(
        &self,
        table: &impl ReadableTable<&'static str, &'static [u8]>,
        visitor: &VisitorId,
    ) -> Result<Option<VisitorRecord>, StoreError> {
        let Some(value) = table.get(visitor.as_str()).map_err(unavailable)? else {
            return Ok(None);
        };
        decode_record(visitor.as_str(), value.value(), &self.taxonomy).map(Some)
    }

    /// Queues a write for the writer thread.
    fn submit(&self, job: Job) {
        match &self.jobs {
            // If the writer is gone the job comes back and is failed here.
            Some(jobs) => {
                if let Err(mpsc::SendError(job)) = jobs.send(job) {
                    job.fail(unavailable("the store writer stopped"));
                }
            }
            None => job.fail(unavailable("the store is closed")),
        }
    }

    /// Queues a write and waits until it is committed.
    async fn write<T>(&self, make: impl FnOnce(Reply<T>) -> Job) -> Result<T, StoreError> {
        let (reply, ticket) = Ticket::channel();
        self.submit(make(reply));
        ticket.await
    }
}

// Reads run on the caller's thread: a point read is a few microseconds, less
// than a hop to the blocking pool. Scans, which look at up to
// `MAX_EXAMINED` records, go to the blocking pool.
#[async_trait::async_trait]
impl Store for RedbStore {
    async fn load(&self, visitor: &VisitorId) -> Result<Option<VisitorRecord>, StoreError> {
        let txn = self.db.begin_read().map_err(unavailable)?;
        let table = txn.open_table(VISITORS).map_err(unavailable)?;
        self.read_record(&table, visitor)
    }

    async fn load_many(
        &self,
        visitors: &[&VisitorId],
    ) -> Vec<Result<Option<VisitorRecord>, StoreError>> {
        // One read transaction for the whole batch.
        let table = self
            .db
            .begin_read()
            .map_err(unavailable)
            .and_then(|txn| txn.open_table(VISITORS).map_err(unavailable));
        match table {
            Ok(table) => visitors
                .iter()
                .map(|v| self.read_record(&table, v))
                .collect(),
            Err(e) => visitors.iter().map(|_| Err(e.clone())).collect(),
        }
    }

    async fn snapshot(&self, visitor: &VisitorId) -> Result<Option<Snapshot>, StoreError> {
        let txn = self.db.begin_read().map_err(unavailable)?;
        let visitors = txn.open_table(VISITORS).map_err(unavailable)?;
        let Some(record) = self.read_record(&visitors, visitor)? else {
            return Ok(None);
        };
        let events = txn.open_table(EVENTS).map_err(unavailable)?;
        let recent = read_ring(&events, visitor.as_str())?;
        Ok(Some(Snapshot { record, recent }))
    }

    fn track(
        &self,
        visitor: VisitorId,
        events: Vec<NewEvent>,
        want_record: bool,
    ) -> Ticket<Tracked> {
        let (reply, ticket) = Ticket::channel();
        self.submit(Job::Track {
            visitor,
            events,
            want_record,
            reply,
        });
        ticket
    }

    async fn forget(&self, visitor: VisitorId) -> Result<bool, StoreError> {
        self.write(|reply| Job::Forget { visitor, reply }).await
    }

    async fn purge(&self, inactive_before: Millis, limit: usize) -> Result<Purged, StoreError> {
        self.write(|reply| Job::Purge {
            inactive_before,
            limit,
            reply,
        })
        .await
    }

    async fn put_segment(
        &self,
        segment: SavedSegment,
        overwrite: bool,
    ) -> Result<SegmentWrite, StoreError> {
        self.write(|reply| Job::PutSegment {
            segment,
            overwrite,
            reply,
        })
        .await
    }

    async fn delete_segment(&self, name: &str) -> Result<bool, StoreError> {
        let name = name.to_string();
        self.write(|reply| Job::DeleteSegment { name, reply }).await
    }

    async fn visitor_count(&self) -> Result<u64, StoreError> {
        let txn = self.db.begin_read().map_err(unavailable)?;
        let table = txn.open_table(VISITORS).map_err(unavailable)?;
        table.len().map_err(unavailable)
    }

    async fn segments(&self) -> Result<Vec<SavedSegment>, StoreError> {
        let txn = self.db.begin_read().map_err(unavailable)?;
        let table = txn.open_table(SEGMENTS).map_err(unavailable)?;
        let mut out = Vec::new();
        for entry in table.iter().map_err(unavailable)? {
            let (_, v) = entry.map_err(unavailable)?;
            out.push(decode_segment(v.value())?);
        }
        Ok(out)
    }

    async fn segment(&self, name: &str) -> Result<Option<SavedSegment>, StoreError> {
        let txn = self.db.begin_read().map_err(unavailable)?;
        let table = txn.open_table(SEGMENTS).map_err(unavailable)?;
        let Some(v) = table.get(name).map_err(unavailable)? else {
            return Ok(None);
        };
        decode_segment(v.value()).map(Some)
    }

    fn scan_key(&self, visitor: &str) -> String {
        visitor.to_string()
    }

    async fn partitions(&self, parts: usize) -> Result<Vec<ScanRange>, StoreError> {
        let txn = self.db.begin_read().map_err(unavailable)?;
        let table = txn.open_table(VISITORS).map_err(unavailable)?;
        let mut all = table.iter().map_err(unavailable)?;
        let first = all.next().transpose().map_err(unavailable)?;
        let last = all.next_back().transpose().map_err(unavailable)?;
        let ranges = match (first, last) {
            (Some((a, _)), Some((b, _))) => ScanRange::split(a.value(), b.value(), parts),
            _ => vec![ScanRange::default()],
        };
        Ok(ranges)
    }

    async fn scan(
        &self,
        range: &ScanRange,
        after: Option<&str>,
        active_since: Millis,
        max: usize,
    ) -> Result<ScanChunk, StoreError> {
        let db = self.db.clone();
        let (range, after) = (range.clone(), after.map(str::to_string));
        tokio::task::spawn_blocking(move || scan(&db, &range, after.as_deref(), active_since, max))
            .await
            .map_err(|e| unavailable(format!("scan task failed: {e}")))?
    }

    async fn check(&self) -> Result<(), StoreError> {
        match &self.jobs {
            Some(_) if self.writer.as_ref().is_some_and(|w| !w.is_finished()) => Ok(()),
            _ => Err(unavailable("the store writer stopped")),
        }
    }
}

fn scan(
    db: &Database,
    range: &ScanRange,
    after: Option<&str>,
    active_since: Millis,
    max: usize,
) -> Result<ScanChunk, StoreError> {
    use std::ops::Bound;
    let txn = db.begin_read().map_err(unavailable)?;
    let table = txn.open_table(VISITORS).map_err(unavailable)?;
    // The later of the range's start (inclusive) and `after` (exclusive).
    let lower = match (range.from.as_deref(), after) {
        (Some(f), Some(a)) if f > a => Bound::Included(f),
        (_, Some(a)) => Bound::Excluded(a),
        (Some(f), None) => Bound::Included(f),
        (None, None) => Bound::Unbounded,
    };
    let upper = range
        .to
        .as_deref()
        .map_or(Bound::Unbounded, Bound::Excluded);
    if let (Bound::Included(l) | Bound::Excluded(l), Bound::Excluded(u)) = (lower, upper) {
        // redb refuses a range that ends before it starts.
        if l >= u {
            return Ok(ScanChunk {
                done: true,
                ..ScanChunk::default()
            });
        }
    }
    let since = active_since.as_unix_millis();
    // Room for a quarter of the chunk's worth of typical records up front.
    let mut chunk = ScanChunk::with_capacity(max.min(MAX_EXAMINED) / 4, 2048);
    let mut examined = 0;
    let mut range = table.range::<&str>((lower, upper)).map_err(unavailable)?;
    loop {
        if chunk.len() >= max || examined >= MAX_EXAMINED {
            return Ok(chunk);
        }
        let Some(entry) = range.next() else {
            chunk.done = true;
            return Ok(chunk);
        };
        let (k, v) = entry.map_err(unavailable)?;
        examined += 1;
        let key = k.value();
        let bytes = v.value();
        if last_seen(bytes) >= since {
            chunk.push(key, bytes);
        }
        chunk.last_key = Some(key.to_string());
    }
}

struct Writer {
    db: Arc<Database>,
    taxonomy: Arc<Taxonomy>,
    limits: StoreLimits,
}

/// Records touched in the current transaction: `None` means erased.
type Dirty = HashMap<String, Option<VisitorRecord>>;

impl Writer {
    fn run(self, jobs: mpsc::Receiver<Job>) {
        while let Ok(first) = jobs.recv() {
            let mut group = vec![first];
            while group.len() < self.limits.max_group {
                match jobs.try_recv() {
                    Ok(job) => group.push(job),
                    Err(_) => break,
                }
            }
            let writes = group.len();
            let (done, commit) = self.commit_group(group);
            if let Err(e) = &commit {
                tracing::error!(error = %e, writes, "store commit failed");
            }
            for d in done {
                d.finish(&commit);
            }
        }
    }

    /// One transaction for the whole group. A write that fails on its own
    /// (a corrupt record) fails alone; a storage failure fails them all and
    /// nothing of the group is applied.
    fn commit_group(&self, group: Vec<Job>) -> (Vec<Done>, Result<(), StoreError>) {
        let mut done = Vec::with_capacity(group.len());
        let mut jobs = group.into_iter();
        let result = (|| {
            let txn = self.db.begin_write().map_err(unavailable)?;
            {
                let mut visitors = txn.open_table(VISITORS).map_err(unavailable)?;
                let mut events = txn.open_table(EVENTS).map_err(unavailable)?;
                let mut segments = txn.open_table(SEGMENTS).map_err(unavailable)?;
                let mut dirty: Dirty = HashMap::new();
                for job in jobs.by_ref() {
                    let d = match job {
                        Job::Track {
                            visitor,
                            events: new,
                            want_record,
                            reply,
                        } => {
                            let own = self.track(
                                &visitors,
                                &mut events,
                                &mut dirty,
                                &visitor,
                                new,
                                want_record,
                            )?;
                            Done::Track(reply, own)
                        }
                        Job::Forget { visitor, reply } => {
                            let existed = match dirty.get(visitor.as_str()) {
                                Some(r) => r.is_some(),
                                None => visitors
                                    .get(visitor.as_str())
                                    .map_err(unavailable)?
                                    .is_some(),
                            };
                            remove_events(&mut events, visitor.as_str())?;
                            dirty.insert(visitor.as_str().to_string(), None);
                            Done::Forget(reply, existed)
                        }
                        Job::Purge {
                            inactive_before,
                            limit,
                            reply,
                        } => {
                            flush(&mut visitors, &mut dirty)?;
                            let purged = purge(&mut visitors, &mut events, inactive_before, limit)?;
                            Done::Purge(reply, purged)
                        }
                        Job::PutSegment {
                            segment,
                            overwrite,
                            reply,
                        } => {
                            let name = segment.name.as_str();
                            let taken = segments.get(name).map_err(unavailable)?.is_some();
                            let outcome = if taken && !overwrite {
                                SegmentWrite::NameTaken
                            } else {
                                let bytes = encode_segment(&segment)?;
                                segments
                                    .insert(name, bytes.as_slice())
                                    .map_err(unavailable)?;
                                if taken {
                                    SegmentWrite::Replaced
                                } else {
                                    SegmentWrite::Created
                                }
                            };
                            Done::PutSegment(reply, outcome)
                        }
                        Job::DeleteSegment { name, reply } => {
                            let existed = segments
                                .remove(name.as_str())
                                .map_err(unavailable)?
                                .is_some();
                            Done::DeleteSegment(reply, existed)
                        }
                    };
                    done.push(d);
                }
                flush(&mut visitors, &mut dirty)?;
            }
            txn.commit().map_err(unavailable)
        })();
        if let Err(e) = &result {
            // Jobs not reached yet fail with the group.
            for job in jobs {
                job.fail(e.clone());
            }
        }
        (done, result)
    }

    /// The inner `Result` is this write's own failure; the outer one fails
    /// the group.
    fn track(
        &self,
        visitors: &redb::Table<&str, &[u8]>,
        events: &mut redb::Table<(&str, u32), &[u8]>,
        dirty: &mut Dirty,
        visitor: &VisitorId,
        new: Vec<NewEvent>,
        want_record: bool,
    ) -> Result<Result<Tracked, StoreError>, StoreError> {
        let v = visitor.as_str();
        let current = match dirty.remove(v) {
            Some(r) => r,
            None => match visitors.get(v).map_err(unavailable)? {
                Some(bytes) => match decode_record(v, bytes.value(), &self.taxonomy) {
                    Ok(r) => Some(r),
                    Err(e) => return Ok(Err(e)),
                },
                None => None,
            },
        };
        let mut record = current.unwrap_or_else(|| VisitorRecord::first(&self.taxonomy, &new));
        let applied = record.track(&self.taxonomy, new, self.limits.dedup_window);
        let ring = u64::from(self.limits.recent_events.max(1));
        for e in &applied.stored {
            let slot = (e.seq % ring) as u32;
            let bytes = encode_event(e)?;
            events
                .insert((v, slot), bytes.as_slice())
                .map_err(unavailable)?;
        }
        let outcome = Tracked {
            accepted: applied.stored.len() as u32,
            duplicates: applied.duplicates,
            record: want_record.then(|| Box::new(record.clone())),
        };
        dirty.insert(v.to_string(), Some(record));
        Ok(Ok(outcome))
    }
}

fn flush(visitors: &mut redb::Table<&str, &[u8]>, dirty: &mut Dirty) -> Result<(), StoreError> {
    for (v, record) in dirty.drain() {
        match record {
            Some(r) => {
                visitors
                    .insert(v.as_str(), encode_record(&r)?.as_slice())
                    .map_err(unavailable)?;
            }
            None => {
                visitors.remove(v.as_str()).map_err(unavailable)?;
            }
        }
    }
    Ok(())
}

fn remove_events(events: &mut redb::Table<(&str, u32), &[u8]>, v: &str) -> Result<(), StoreError> {
    events
        .retain_in((v, 0u32)..=(v, u32::MAX), |_, _| false)
        .map_err(unavailable)
}

fn purge(
    visitors: &mut redb::Table<&str, &[u8]>,
    events: &mut redb::Table<(&str, u32), &[u8]>,
    inactive_before: Millis,
    limit: usize,
) -> Result<Purged, StoreError> {
    let cutoff = inactive_before.as_unix_millis();
    let mut victims = Vec::new();
    let mut more = false;
    for entry in visitors.iter().map_err(unavailable)? {
        let (k, v) = entry.map_err(unavailable)?;
        if last_seen(v.value()) < cutoff {
            if victims.len() == limit {
                more = true;
                break;
            }
            victims.push(k.value().to_string());
        }
    }
    for v in &victims {
        visitors.remove(v.as_str()).map_err(unavailable)?;
        remove_events(events, v)?;
    }
    Ok(Purged {
        visitors: victims.len(),
        more,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Event;
    use crate::scoring::Aggregate;

    /// Writes a v1 file by hand: one visitor whose record has no timeline,
    /// and two kept raw events.
    fn write_v1(dir: &Path, taxonomy: &Taxonomy) {
        #[derive(serde::Serialize)]
        struct V1<'a> {
            aggregate: &'a Aggregate,
            next_seq: u64,
            seen_ids: std::collections::VecDeque<u64>,
        }
        let cart = taxonomy.resolve("add_to_cart").unwrap();
        let view = taxonomy.resolve("view_item").unwrap();
        let t0 = Millis::from_unix_millis(1_767_225_600_000);
        let t1 = Millis::from_unix_millis(1_767_225_660_000);
        let mut aggregate = Aggregate::new(taxonomy, t0);
        aggregate.apply(taxonomy, &Event::new(view, t0));
        aggregate.apply(taxonomy, &Event::new(cart, t1));
        let db = Database::create(dir.join(FILE_NAME)).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut meta = txn.open_table(META).unwrap();
            meta.insert("format", FORMAT_V1).unwrap();
            meta.insert("taxonomy", taxonomy.fingerprint()).unwrap();
            let mut visitors = txn.open_table(VISITORS).unwrap();
            let body = V1 {
                aggregate: &aggregate,
                next_seq: 2,
                seen_ids: Default::default(),
            };
            let bytes =
                postcard::to_extend(&body, t1.as_unix_millis().to_le_bytes().to_vec()).unwrap();
            visitors.insert("old-visitor", bytes.as_slice()).unwrap();
            let mut events = txn.open_table(EVENTS).unwrap();
            for (seq, kind, at) in [(0u64, "view_item", t0), (1, "add_to_cart", t1)] {
                let e = StoredEvent {
                    seq,
                    kind: kind.into(),
                    at,
                    item_id: String::new(),
                    value: 0.0,
                    event_id: String::new(),
                    attributes: Vec::new(),
                };
                let raw = postcard::to_stdvec(&e).unwrap();
                events
                    .insert(("old-visitor", seq as u32), raw.as_slice())
                    .unwrap();
            }
        }
        txn.commit().unwrap();
    }

    #[tokio::test]
    async fn a_v1_store_is_upgraded_with_timelines_rebuilt_from_raw_events() {
        let taxonomy = Arc::new(Taxonomy::builtin());
        let dir = tempfile::tempdir().unwrap();
        write_v1(dir.path(), &taxonomy);
        let limits = StoreLimits {
            recent_events: 200,
            dedup_window: 128,
            max_group: 16,
        };

        let store = RedbStore::open(dir.path(), taxonomy.clone(), limits).unwrap();
        let record = store
            .load(&crate::domain::VisitorId::parse("old-visitor".into(), 64).unwrap())
            .await
            .unwrap()
            .expect("kept");

        let cart = taxonomy.resolve("add_to_cart").unwrap();
        let view = taxonomy.resolve("view_item").unwrap();
        assert_eq!(record.next_seq, 2);
        assert_eq!(record.aggregate.events(), 2);
        assert_eq!(
            record.timeline.times(cart),
            &[Millis::from_unix_millis(1_767_225_660_000)]
        );
        assert_eq!(
            record.timeline.times(view),
            &[Millis::from_unix_millis(1_767_225_600_000)]
        );
        // Upgraded once: reopening finds v2 and changes nothing.
        drop(store);
        let again = RedbStore::open(dir.path(), taxonomy, limits).unwrap();
        assert_eq!(again.segments().await.unwrap(), Vec::new());
    }
}
