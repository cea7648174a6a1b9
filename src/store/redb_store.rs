//! The embedded store: one redb file and one key file in the data directory.
//!
//! Writes go through one writer thread that drains every write queued while
//! the previous commit was syncing and applies them in a single transaction
//! (group commit): each caller hears back only after that commit is on disk,
//! and concurrent writers share the cost of the sync. Reads use their own
//! read transactions and never wait for the writer.
//!
//! Faults heal: after a failed commit (a full disk, an I/O error) redb
//! refuses every later call until the file is closed and opened again, so
//! the writer does exactly that, then and every [`RETRY`] until it works.
//! Meanwhile every call fails [`StoreError::Unavailable`], and writes work
//! again as soon as the disk does, without a restart.
//!
//! Erasure reaches the disk ([`super::keys`]): rows are keyed by a
//! pseudonym of the visitor id, and the id and raw events are sealed with a
//! per-visitor key that an erasure destroys (overwritten and synced) before
//! it is acknowledged. redb leaves old bytes in pages it frees; those are
//! sealed, so they are unreadable once the key is gone.
//!
//! Tables (`row` is the visitor's pseudonym, [`Pseudonyms::row`]):
//! - `visitors`: row → the record's bytes ([`super::record::encode`]: the
//!   last-seen time, so a purge can skip decoding, then the record in
//!   layout v3);
//! - `identities`: row → key slot (8 bytes, little-endian) + the sealed
//!   visitor id (scans hand ids back);
//! - `events`: (row, ring slot) → sealed postcard-encoded [`StoredEvent`];
//! - `segments`: segment name → JSON [`SavedSegment`];
//! - `meta`: format version, the fingerprint of the taxonomy the aggregates
//!   were built with, and the pseudonym secret.
//!
//! Format history: v1 records had no timeline; opening a v1 file rebuilds
//! each visitor's timeline from its kept raw events, once, in one
//! transaction. v2 kept ids and raw events in the clear; opening a v2 file
//! seals them (and compacts the file once, so less of the old bytes stay).
//! Files before v4 hold records in layout v2; opening one rewrites every
//! record in layout v3, in the same transaction as the rest of the upgrade.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, PoisonError, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use redb::{
    Database, DatabaseError, ReadableDatabase, ReadableTable, ReadableTableMetadata,
    TableDefinition, TableError,
};

use crate::domain::{Millis, NewEvent, StoredEvent, Taxonomy, VisitorId};
use crate::scoring::rebuild;

use super::keys::{random_secret, KeyFile, Pseudonyms, Purpose, VisitorKey};
use super::record::{
    decode as decode_record, decode_event, decode_segment, decode_standing,
    encode as encode_record, encode_event, encode_segment, last_seen, upgrade_v2,
};
use super::{
    Purged, Reply, SavedSegment, ScanChunk, ScanRange, SegmentWrite, Snapshot, Standing, Store,
    StoreError, StoreLimits, Ticket, Tracked, VisitorRecord,
};

const VISITORS: TableDefinition<&str, &[u8]> = TableDefinition::new("visitors");
const IDENTITIES: TableDefinition<&str, &[u8]> = TableDefinition::new("identities");
const EVENTS: TableDefinition<(&str, u32), &[u8]> = TableDefinition::new("events");
const META: TableDefinition<&str, &str> = TableDefinition::new("meta");
const SEGMENTS: TableDefinition<&str, &[u8]> = TableDefinition::new("segments");

const FORMAT: &str = "rung.store.v4";
const FORMAT_V3: &str = "rung.store.v3";
const FORMAT_V2: &str = "rung.store.v2";
const FORMAT_V1: &str = "rung.store.v1";
/// The file inside the data directory.
pub const FILE_NAME: &str = "rung.redb";
/// How often a store that failed tries to open its file again (also the
/// longest a call waits to learn it is still failing: calls in between fail
/// at once).
pub const RETRY: Duration = Duration::from_millis(250);

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
    /// group's failure otherwise. An erasure is answered only once the keys
    /// it destroys are gone from the disk (`erased`).
    fn finish(self, commit: &Result<(), StoreError>, erased: &Result<(), StoreError>) {
        fn answer<T>(reply: Reply<T>, own: Result<T, StoreError>, commit: &Result<(), StoreError>) {
            // A caller that went away no longer wants the answer.
            let _ = reply.send(commit.clone().and(own));
        }
        let erasure = commit.clone().and(erased.clone());
        match self {
            Done::Track(r, v) => answer(r, v, commit),
            Done::Forget(r, v) => answer(r, Ok(v), &erasure),
            Done::Purge(r, v) => answer(r, Ok(v), &erasure),
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

/// What the store's readers and its writer share.
struct Shared {
    /// The redb file.
    path: PathBuf,
    /// `None` while the writer reopens the file after a fault (readers then
    /// fail at once instead of waiting for it).
    db: RwLock<Option<Database>>,
    keys: KeyFile,
    names: Pseudonyms,
    taxonomy: Arc<Taxonomy>,
    /// Set when a read panicked inside redb: the writer reopens the file.
    suspect: AtomicBool,
}

impl Shared {
    /// Runs a read against the open database. The guard is held for the
    /// whole read, so the writer never closes the file under a reader.
    ///
    /// A panic is caught here: redb can panic once a failed write left its
    /// state invalid (or a lock poisoned), and a panicking handler would
    /// reset its call, which the client sees as CANCELLED, not as the
    /// UNAVAILABLE it can retry.
    fn read<T>(&self, f: impl FnOnce(&Database) -> Result<T, StoreError>) -> Result<T, StoreError> {
        let guard = self.db.read().unwrap_or_else(PoisonError::into_inner);
        let Some(db) = guard.as_ref() else {
            return Err(unavailable(
                "the store is reopening its file after an I/O error",
            ));
        };
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(db))) {
            Ok(result) => result,
            Err(_) => {
                self.suspect.store(true, Ordering::Relaxed);
                tracing::error!("a store read panicked; the file will be reopened");
                Err(unavailable("a store read failed; retry later"))
            }
        }
    }

    /// A visitor's row in the visitors table, read with `decode`.
    fn read_row<T>(
        &self,
        table: &impl ReadableTable<&'static str, &'static [u8]>,
        visitor: &VisitorId,
        decode: impl FnOnce(&str, &[u8], &Taxonomy) -> Result<T, StoreError>,
    ) -> Result<Option<T>, StoreError> {
        let row = self.names.row(visitor.as_str());
        let Some(value) = table.get(row.as_str()).map_err(unavailable)? else {
            return Ok(None);
        };
        decode(visitor.as_str(), value.value(), &self.taxonomy).map(Some)
    }

    /// A visitor's key slot and sealed id, from their identity row.
    fn identity(
        table: &impl ReadableTable<&'static str, &'static [u8]>,
        row: &str,
    ) -> Result<Option<(u64, Vec<u8>)>, StoreError> {
        let Some(v) = table.get(row).map_err(unavailable)? else {
            return Ok(None);
        };
        Ok(split_identity(v.value()).map(|(slot, sealed)| (slot, sealed.to_vec())))
    }

    /// The visitor's key; `None` when they have none (any more).
    fn key(
        &self,
        table: &impl ReadableTable<&'static str, &'static [u8]>,
        row: &str,
    ) -> Result<Option<VisitorKey>, StoreError> {
        match Shared::identity(table, row)? {
            Some((slot, _)) => self.keys.read(slot).map_err(unavailable),
            None => Ok(None),
        }
    }
}

/// An identity row: the key slot, then the sealed id.
fn identity_value(key: &VisitorKey, sealed_id: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(8 + sealed_id.len());
    v.extend_from_slice(&key.slot.to_le_bytes());
    v.extend_from_slice(sealed_id);
    v
}

fn split_identity(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let (slot, sealed) = bytes.split_at_checked(8)?;
    Some((u64::from_le_bytes(slot.try_into().ok()?), sealed))
}

pub struct RedbStore {
    shared: Arc<Shared>,
    jobs: Option<mpsc::Sender<Job>>,
    writer: Option<JoinHandle<()>>,
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

fn open_file(path: &Path) -> Result<Database, StoreError> {
    Database::create(path).map_err(|e| match e {
        DatabaseError::DatabaseAlreadyOpen => StoreError::Locked {
            path: path.parent().unwrap_or(path).to_path_buf(),
        },
        other => unavailable(format!("cannot open {}: {other}", path.display())),
    })
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
        let mut db = open_file(&path)?;
        let keys = KeyFile::open(dir).map_err(|e| {
            unavailable(format!(
                "cannot open the key file in {}: {e}",
                dir.display()
            ))
        })?;
        // Keys nobody references (an erasure cut short by a crash) are
        // destroyed before anything is served.
        let destroyed = keys
            .reconcile(&slots_in_use(&db)?)
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::InvalidData => {
                    StoreError::Incompatible(format!("{}: {e}", dir.display()))
                }
                _ => unavailable(format!("cannot reconcile the key file: {e}")),
            })?;
        if destroyed > 0 {
            tracing::info!(
                keys = destroyed,
                "destroyed keys of visitors erased before a crash"
            );
        }
        let (secret, upgraded) = init(&db, &taxonomy, &path, &keys)?;
        if upgraded {
            // The upgrade freed every page that held an id in the clear;
            // compacting hands the tail of them back to the file system.
            if let Err(e) = db.compact() {
                tracing::warn!(error = %e, "compacting after the upgrade failed");
            }
        }
        let shared = Arc::new(Shared {
            path,
            db: RwLock::new(Some(db)),
            keys,
            names: Pseudonyms::new(&secret),
            taxonomy,
            suspect: AtomicBool::new(false),
        });
        let (tx, rx) = mpsc::channel::<Job>();
        let writer = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("rung-store-writer".into())
                .spawn(move || {
                    Writer {
                        shared,
                        limits,
                        fault: None,
                        last_attempt: Instant::now(),
                        undestroyed: Vec::new(),
                    }
                    .run(rx)
                })
                .map_err(unavailable)?
        };
        Ok(RedbStore {
            shared,
            jobs: Some(tx),
            writer: Some(writer),
        })
    }

    /// Bytes the store file takes on disk.
    pub fn file_size(dir: &Path) -> std::io::Result<u64> {
        Ok(std::fs::metadata(dir.join(FILE_NAME))?.len())
    }
}

/// The row a visitor's data is kept under in a store file, for tools (and
/// tests) that open the file themselves.
pub fn row_key(db: &Database, visitor: &str) -> Result<String, StoreError> {
    let txn = db.begin_read().map_err(unavailable)?;
    let meta = txn.open_table(META).map_err(unavailable)?;
    let secret = meta
        .get("secret")
        .map_err(unavailable)?
        .ok_or_else(|| StoreError::Incompatible("the store has no pseudonym secret".into()))?;
    Ok(Pseudonyms::new(&decode_hex(secret.value())?).row(visitor))
}

impl Drop for RedbStore {
    fn drop(&mut self) {
        // Closing the queue ends the writer once it has committed what it
        // holds; joining it and closing the file release the file lock
        // before we return, even while a scan still holds the shared state.
        self.jobs.take();
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
        let db = self
            .shared
            .db
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(db) = db {
            if let Err(e) = db.close() {
                tracing::warn!(error = %e, "closing the store file failed");
            }
        }
    }
}

/// Key slots referenced by identity rows.
fn slots_in_use(db: &Database) -> Result<HashSet<u64>, StoreError> {
    let txn = db.begin_read().map_err(unavailable)?;
    let table = match txn.open_table(IDENTITIES) {
        Ok(t) => t,
        // A new or older file: nothing references a key yet.
        Err(TableError::TableDoesNotExist(_)) => return Ok(HashSet::new()),
        Err(e) => return Err(unavailable(e)),
    };
    let mut out = HashSet::new();
    for entry in table.iter().map_err(unavailable)? {
        let (_, v) = entry.map_err(unavailable)?;
        if let Some((slot, _)) = split_identity(v.value()) {
            out.insert(slot);
        }
    }
    Ok(out)
}

fn encode_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn decode_hex(s: &str) -> Result<Vec<u8>, StoreError> {
    let bad = || StoreError::Incompatible(format!("the store's pseudonym secret {s:?} is not hex"));
    if s.len() % 2 != 0 {
        return Err(bad());
    }
    (0..s.len())
        .step_by(2)
        .map(|i| {
            s.get(i..i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(bad)
        })
        .collect()
}

/// Checks (or writes) the file's format and taxonomy and upgrades older
/// formats; returns the pseudonym secret, and whether an upgrade sealed
/// data that was in the clear.
fn init(
    db: &Database,
    taxonomy: &Taxonomy,
    path: &Path,
    keys: &KeyFile,
) -> Result<(Vec<u8>, bool), StoreError> {
    let txn = db.begin_write().map_err(unavailable)?;
    let mut upgraded = false;
    let secret;
    {
        let mut meta = txn.open_table(META).map_err(unavailable)?;
        txn.open_table(VISITORS).map_err(unavailable)?;
        txn.open_table(IDENTITIES).map_err(unavailable)?;
        txn.open_table(EVENTS).map_err(unavailable)?;
        txn.open_table(SEGMENTS).map_err(unavailable)?;
        let format = meta
            .get("format")
            .map_err(unavailable)?
            .map(|v| v.value().to_string());
        match format.as_deref() {
            None => {
                secret = random_secret(keys.rng()).map_err(unavailable)?.to_vec();
                meta.insert("format", FORMAT).map_err(unavailable)?;
                meta.insert("taxonomy", taxonomy.fingerprint())
                    .map_err(unavailable)?;
                meta.insert("secret", encode_hex(&secret).as_str())
                    .map_err(unavailable)?;
            }
            Some(FORMAT) | Some(FORMAT_V3) | Some(FORMAT_V2) | Some(FORMAT_V1) => {
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
                match format.as_deref() {
                    Some(FORMAT_V1) => {
                        // Written straight in the current record layout.
                        migrate_v1(&txn, taxonomy)?;
                        tracing::info!(path = %path.display(), "store upgraded from v1 to v2 (timelines rebuilt from raw events)");
                    }
                    Some(FORMAT_V2) | Some(FORMAT_V3) => {
                        let records = migrate_layout(&txn, taxonomy)?;
                        tracing::info!(path = %path.display(), records, "records rewritten in layout v3 (what scoring reads first)");
                    }
                    _ => {}
                }
                if format.as_deref() == Some(FORMAT_V3) {
                    meta.insert("format", FORMAT).map_err(unavailable)?;
                }
                if matches!(format.as_deref(), Some(FORMAT) | Some(FORMAT_V3)) {
                    let hex = meta
                        .get("secret")
                        .map_err(unavailable)?
                        .map(|v| v.value().to_string())
                        .unwrap_or_default();
                    if hex.is_empty() {
                        // Another secret would find none of the rows.
                        return Err(StoreError::Incompatible(format!(
                            "{} has no pseudonym secret; its rows cannot be found",
                            path.display()
                        )));
                    }
                    secret = decode_hex(&hex)?;
                } else {
                    secret = random_secret(keys.rng()).map_err(unavailable)?.to_vec();
                    let sealed = migrate_v2(&txn, &Pseudonyms::new(&secret), keys)?;
                    meta.insert("secret", encode_hex(&secret).as_str())
                        .map_err(unavailable)?;
                    meta.insert("format", FORMAT).map_err(unavailable)?;
                    upgraded = true;
                    tracing::info!(path = %path.display(), visitors = sealed, "store upgraded (ids and raw events sealed with per-visitor keys)");
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
    if upgraded {
        keys.sync().map_err(unavailable)?;
    }
    txn.commit().map_err(unavailable)?;
    Ok((secret, upgraded))
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
/// v1 and v2 files key rows by the visitor id and keep events in the clear.
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
        let mut kept = Vec::new();
        for entry in events
            .range((id.as_str(), 0u32)..=(id.as_str(), u32::MAX))
            .map_err(unavailable)?
        {
            let (_, value) = entry.map_err(unavailable)?;
            kept.push(decode_event(&id, value.value())?);
        }
        kept.sort_by_key(|e| std::cmp::Reverse(e.seq));
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

/// Rewrites every record from layout v2 to v3, row keys unchanged (v2 and
/// v3 files keep records in layout v2). Returns how many.
fn migrate_layout(txn: &redb::WriteTransaction, taxonomy: &Taxonomy) -> Result<usize, StoreError> {
    let mut visitors = txn.open_table(VISITORS).map_err(unavailable)?;
    let mut upgraded = Vec::new();
    for entry in visitors.iter().map_err(unavailable)? {
        let (k, v) = entry.map_err(unavailable)?;
        match upgrade_v2(k.value(), v.value(), taxonomy) {
            Ok(bytes) => upgraded.push((k.value().to_string(), bytes)),
            // Left as is: reading it reports it corrupt, for this visitor only.
            Err(e) => tracing::warn!(error = %e, "a record that cannot be read is left as it is"),
        }
    }
    let n = upgraded.len();
    for (row, bytes) in upgraded {
        visitors
            .insert(row.as_str(), bytes.as_slice())
            .map_err(unavailable)?;
    }
    Ok(n)
}

/// Moves every v2 visitor under their pseudonym, with a key of their own
/// sealing their id and raw events. Returns how many.
fn migrate_v2(
    txn: &redb::WriteTransaction,
    names: &Pseudonyms,
    keys: &KeyFile,
) -> Result<usize, StoreError> {
    let mut visitors = txn.open_table(VISITORS).map_err(unavailable)?;
    let mut identities = txn.open_table(IDENTITIES).map_err(unavailable)?;
    let mut events = txn.open_table(EVENTS).map_err(unavailable)?;
    let mut old = Vec::new();
    for entry in visitors.iter().map_err(unavailable)? {
        let (k, v) = entry.map_err(unavailable)?;
        old.push((k.value().to_string(), v.value().to_vec()));
    }
    for (id, record) in &old {
        let row = names.row(id);
        let mut ring = Vec::new();
        for entry in events
            .range((id.as_str(), 0u32)..=(id.as_str(), u32::MAX))
            .map_err(unavailable)?
        {
            let (k, v) = entry.map_err(unavailable)?;
            ring.push((k.value().1, v.value().to_vec()));
        }
        remove_events(&mut events, id)?;
        visitors.remove(id.as_str()).map_err(unavailable)?;
        let key = keys.create().map_err(unavailable)?;
        let rng = keys.rng();
        let sealed_id = key
            .seal(rng, &row, Purpose::Id, id.as_bytes())
            .map_err(unavailable)?;
        identities
            .insert(row.as_str(), identity_value(&key, &sealed_id).as_slice())
            .map_err(unavailable)?;
        visitors
            .insert(row.as_str(), record.as_slice())
            .map_err(unavailable)?;
        for (slot, plain) in ring {
            let sealed = key
                .seal(rng, &row, Purpose::Event, &plain)
                .map_err(unavailable)?;
            events
                .insert((row.as_str(), slot), sealed.as_slice())
                .map_err(unavailable)?;
        }
    }
    Ok(old.len())
}

/// A visitor's kept raw events, newest first, opened with their key.
fn read_ring(
    table: &impl ReadableTable<(&'static str, u32), &'static [u8]>,
    row: &str,
    key: &VisitorKey,
    visitor: &str,
) -> Result<Vec<StoredEvent>, StoreError> {
    let mut out = Vec::new();
    for entry in table
        .range((row, 0u32)..=(row, u32::MAX))
        .map_err(unavailable)?
    {
        let (_, value) = entry.map_err(unavailable)?;
        let plain = key
            .open(row, Purpose::Event, value.value())
            .ok_or_else(|| StoreError::Corrupt {
                visitor: visitor.to_string(),
                reason: "a raw event does not open with the visitor's key".into(),
            })?;
        out.push(decode_event(visitor, &plain)?);
    }
    out.sort_by_key(|e| std::cmp::Reverse(e.seq));
    Ok(out)
}

/// Ids looked at by one scan call, kept or skipped: one call stays short.
const MAX_EXAMINED: usize = 65_536;

impl RedbStore {
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
        self.shared.read(|db| {
            let txn = db.begin_read().map_err(unavailable)?;
            let table = txn.open_table(VISITORS).map_err(unavailable)?;
            self.shared.read_row(&table, visitor, decode_record)
        })
    }

    async fn load_standing(&self, visitor: &VisitorId) -> Result<Option<Standing>, StoreError> {
        self.shared.read(|db| {
            let txn = db.begin_read().map_err(unavailable)?;
            let table = txn.open_table(VISITORS).map_err(unavailable)?;
            self.shared.read_row(&table, visitor, decode_standing)
        })
    }

    async fn load_standings(
        &self,
        visitors: &[&VisitorId],
    ) -> Vec<Result<Option<Standing>, StoreError>> {
        // One read transaction for the whole batch.
        let all = self.shared.read(|db| {
            let txn = db.begin_read().map_err(unavailable)?;
            let table = txn.open_table(VISITORS).map_err(unavailable)?;
            Ok(visitors
                .iter()
                .map(|v| self.shared.read_row(&table, v, decode_standing))
                .collect::<Vec<_>>())
        });
        match all {
            Ok(each) => each,
            Err(e) => visitors.iter().map(|_| Err(e.clone())).collect(),
        }
    }

    async fn snapshot(&self, visitor: &VisitorId) -> Result<Option<Snapshot>, StoreError> {
        self.shared.read(|db| {
            let txn = db.begin_read().map_err(unavailable)?;
            let visitors = txn.open_table(VISITORS).map_err(unavailable)?;
            let Some(record) = self.shared.read_row(&visitors, visitor, decode_record)? else {
                return Ok(None);
            };
            let row = self.shared.names.row(visitor.as_str());
            let identities = txn.open_table(IDENTITIES).map_err(unavailable)?;
            // No key: the visitor is being erased right now.
            let Some(key) = self.shared.key(&identities, &row)? else {
                return Ok(None);
            };
            let events = txn.open_table(EVENTS).map_err(unavailable)?;
            let recent = read_ring(&events, &row, &key, visitor.as_str())?;
            Ok(Some(Snapshot { record, recent }))
        })
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
        self.shared.read(|db| {
            let txn = db.begin_read().map_err(unavailable)?;
            let table = txn.open_table(VISITORS).map_err(unavailable)?;
            table.len().map_err(unavailable)
        })
    }

    async fn segments(&self) -> Result<Vec<SavedSegment>, StoreError> {
        self.shared.read(|db| {
            let txn = db.begin_read().map_err(unavailable)?;
            let table = txn.open_table(SEGMENTS).map_err(unavailable)?;
            let mut out = Vec::new();
            for entry in table.iter().map_err(unavailable)? {
                let (_, v) = entry.map_err(unavailable)?;
                out.push(decode_segment(v.value())?);
            }
            Ok(out)
        })
    }

    async fn segment(&self, name: &str) -> Result<Option<SavedSegment>, StoreError> {
        self.shared.read(|db| {
            let txn = db.begin_read().map_err(unavailable)?;
            let table = txn.open_table(SEGMENTS).map_err(unavailable)?;
            let Some(v) = table.get(name).map_err(unavailable)? else {
                return Ok(None);
            };
            decode_segment(v.value()).map(Some)
        })
    }

    fn scan_key(&self, visitor: &str) -> String {
        self.shared.names.row(visitor)
    }

    async fn partitions(&self, parts: usize) -> Result<Vec<ScanRange>, StoreError> {
        self.shared.read(|db| {
            let txn = db.begin_read().map_err(unavailable)?;
            let table = txn.open_table(VISITORS).map_err(unavailable)?;
            let mut iter = table.iter().map_err(unavailable)?;
            let first = iter.next().transpose().map_err(unavailable)?;
            let last = iter.next_back().transpose().map_err(unavailable)?;
            let ranges = match (first, last) {
                (Some((a, _)), Some((b, _))) => ScanRange::split(a.value(), b.value(), parts),
                _ => vec![ScanRange::default()],
            };
            Ok(ranges)
        })
    }

    async fn scan(
        &self,
        range: &ScanRange,
        after: Option<&str>,
        active_since: Millis,
        max: usize,
    ) -> Result<ScanChunk, StoreError> {
        let shared = self.shared.clone();
        let (range, after) = (range.clone(), after.map(str::to_string));
        tokio::task::spawn_blocking(move || {
            shared.read(|db| scan(&shared, db, &range, after.as_deref(), active_since, max))
        })
        .await
        .map_err(|e| unavailable(format!("scan task failed: {e}")))?
    }

    async fn check(&self) -> Result<(), StoreError> {
        if self.writer.as_ref().is_none_or(|w| w.is_finished()) || self.jobs.is_none() {
            return Err(unavailable("the store writer stopped"));
        }
        self.shared.read(|_| Ok(()))
    }
}

fn scan(
    shared: &Shared,
    db: &Database,
    range: &ScanRange,
    after: Option<&str>,
    active_since: Millis,
    max: usize,
) -> Result<ScanChunk, StoreError> {
    use std::ops::Bound;
    let txn = db.begin_read().map_err(unavailable)?;
    let table = txn.open_table(VISITORS).map_err(unavailable)?;
    let identities = txn.open_table(IDENTITIES).map_err(unavailable)?;
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
        let row = k.value();
        let bytes = v.value();
        if last_seen(bytes) >= since {
            // Only active visitors pay for opening their id.
            match open_id(shared, &identities, row)? {
                Some(id) => chunk.push(&id, bytes),
                // Erased while this scan ran, or an identity that does not
                // open: nobody can be named, so nobody is listed.
                None => tracing::debug!(row, "visitor without a readable id skipped"),
            }
        }
        chunk.last_key = Some(row.to_string());
    }
}

/// The visitor id behind a row, if its key still opens it.
fn open_id(
    shared: &Shared,
    identities: &impl ReadableTable<&'static str, &'static [u8]>,
    row: &str,
) -> Result<Option<String>, StoreError> {
    let Some((slot, sealed)) = Shared::identity(identities, row)? else {
        return Ok(None);
    };
    let Some(key) = shared.keys.read(slot).map_err(unavailable)? else {
        return Ok(None);
    };
    Ok(key
        .open(row, Purpose::Id, &sealed)
        .and_then(|id| String::from_utf8(id).ok()))
}

struct Writer {
    shared: Arc<Shared>,
    limits: StoreLimits,
    /// Why the file is not open, while it is not.
    fault: Option<StoreError>,
    last_attempt: Instant,
    /// Keys of erased visitors whose destruction failed: retried before any
    /// other write, and no erasure is acknowledged until they are gone.
    undestroyed: Vec<u64>,
}

/// Records touched in the current transaction, by row: `None` means erased.
type Dirty = HashMap<String, Option<VisitorRecord>>;

/// What one group did besides answering its jobs.
#[derive(Default)]
struct Keys {
    /// Keys made for new visitors: synced before the commit.
    created: Vec<u64>,
    /// Keys of erased visitors: destroyed once the commit is durable.
    erased: Vec<u64>,
    /// Visitors' keys read or made in this group, by row.
    open: HashMap<String, VisitorKey>,
}

impl Writer {
    fn run(mut self, jobs: mpsc::Receiver<Job>) {
        loop {
            // A failing store keeps trying to heal even when no write comes:
            // reads depend on it too.
            let first = match jobs.recv_timeout(RETRY) {
                Ok(job) => job,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    self.heal();
                    continue;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            };
            let mut group = vec![first];
            while group.len() < self.limits.max_group {
                match jobs.try_recv() {
                    Ok(job) => group.push(job),
                    Err(_) => break,
                }
            }
            if self.last_attempt.elapsed() >= RETRY {
                self.heal();
            }
            if let Some(e) = self.failing() {
                for job in group {
                    job.fail(e.clone());
                }
                continue;
            }
            let writes = group.len();
            // A panic inside redb must not end the writer: its jobs' callers
            // hear UNAVAILABLE (their replies are dropped) and the file is
            // reopened.
            let outcome =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.commit_group(group)));
            let (done, commit, keys) = match outcome {
                Ok(o) => o,
                Err(_) => {
                    tracing::error!(writes, "the store writer panicked; reopening the file");
                    self.reopen(unavailable("the store writer panicked"));
                    continue;
                }
            };
            let erased = match &commit {
                Ok(()) => self.destroy(keys.erased),
                Err(e) => {
                    // Keys made for this group are settled by the reopen.
                    tracing::error!(error = %e, writes, "store commit failed; reopening the file");
                    self.reopen(e.clone());
                    Ok(())
                }
            };
            for d in done {
                d.finish(&commit, &erased);
            }
        }
    }

    /// Why writes cannot be taken now, if they cannot.
    fn failing(&self) -> Option<StoreError> {
        if let Some(e) = &self.fault {
            return Some(e.clone());
        }
        (!self.undestroyed.is_empty())
            .then(|| unavailable("keys of erased visitors could not be destroyed yet"))
    }

    /// Destroys erased visitors' keys (and any left from before); on
    /// failure they are kept to retry and the erasures are not acknowledged.
    fn destroy(&mut self, slots: Vec<u64>) -> Result<(), StoreError> {
        self.undestroyed.extend(slots);
        if self.undestroyed.is_empty() {
            return Ok(());
        }
        match self.shared.keys.destroy(&self.undestroyed) {
            Ok(()) => {
                self.undestroyed.clear();
                Ok(())
            }
            Err(e) => {
                tracing::error!(error = %e, keys = self.undestroyed.len(), "erased visitors' keys could not be destroyed; retrying");
                Err(unavailable(format!(
                    "the erasure is committed but its key could not be destroyed yet: {e}"
                )))
            }
        }
    }

    /// Retries what failed: opening the file, destroying keys.
    fn heal(&mut self) {
        self.last_attempt = Instant::now();
        if self.shared.suspect.swap(false, Ordering::Relaxed) && self.fault.is_none() {
            self.fault = Some(unavailable("a store read panicked"));
        }
        if let Some(e) = self.fault.take() {
            self.reopen(e);
        }
        if self.fault.is_none() && !self.undestroyed.is_empty() {
            let _ = self.destroy(Vec::new());
        }
    }

    /// Closes the file and opens it again: after an I/O error redb answers
    /// nothing until then. On failure the store stays closed (`fault`) and
    /// the next try is [`RETRY`] later.
    fn reopen(&mut self, cause: StoreError) {
        self.last_attempt = Instant::now();
        // Taken out under the lock, closed and reopened outside it: readers
        // fail at once meanwhile instead of queueing behind a repair.
        let old = self
            .shared
            .db
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(old) = old {
            if let Err(e) = old.close() {
                tracing::debug!(error = %e, "closing the failed store file");
            }
        }
        match open_file(&self.shared.path) {
            Ok(db) => {
                // The key file is settled against what the file holds now: a
                // commit that failed may have made it to disk after all (redb
                // can fail after the durable part), so keys are kept exactly
                // for the visitors the file names, and every other one
                // (made for a group that did not commit, or an erased
                // visitor's whose destruction failed) is destroyed.
                let settled = slots_in_use(&db)
                    .and_then(|used| self.shared.keys.reconcile(&used).map_err(unavailable));
                *self
                    .shared
                    .db
                    .write()
                    .unwrap_or_else(PoisonError::into_inner) = Some(db);
                match settled {
                    Ok(destroyed) => {
                        tracing::info!(after = %cause, keys_destroyed = destroyed, "store file reopened");
                        self.undestroyed.clear();
                        self.fault = None;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "store file reopened, but its keys could not be settled yet");
                        self.fault = Some(e);
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, after = %cause, "store file could not be reopened yet");
                self.fault = Some(e);
            }
        }
    }

    /// One transaction for the whole group. A write that fails on its own
    /// (a corrupt record) fails alone; a storage failure fails them all and
    /// nothing of the group is applied.
    fn commit_group(&self, group: Vec<Job>) -> (Vec<Done>, Result<(), StoreError>, Keys) {
        let mut done = Vec::with_capacity(group.len());
        let mut keys = Keys::default();
        let mut jobs = group.into_iter();
        let shared = &self.shared;
        let result = shared.read(|db| {
            let txn = db.begin_write().map_err(unavailable)?;
            {
                let mut visitors = txn.open_table(VISITORS).map_err(unavailable)?;
                let mut identities = txn.open_table(IDENTITIES).map_err(unavailable)?;
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
                                &mut identities,
                                &mut events,
                                &mut dirty,
                                &mut keys,
                                &visitor,
                                new,
                                want_record,
                            )?;
                            Done::Track(reply, own)
                        }
                        Job::Forget { visitor, reply } => {
                            let row = shared.names.row(visitor.as_str());
                            let existed = match dirty.get(&row) {
                                Some(r) => r.is_some(),
                                None => visitors.get(row.as_str()).map_err(unavailable)?.is_some(),
                            };
                            erase(&mut identities, &mut events, &mut keys, &row)?;
                            dirty.insert(row, None);
                            Done::Forget(reply, existed)
                        }
                        Job::Purge {
                            inactive_before,
                            limit,
                            reply,
                        } => {
                            flush(&mut visitors, &mut dirty)?;
                            let purged = purge(
                                &mut visitors,
                                &mut identities,
                                &mut events,
                                &mut keys,
                                inactive_before,
                                limit,
                            )?;
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
            // A committed visitor whose key a crash lost would be
            // unreadable: new keys are on disk before the commit.
            if !keys.created.is_empty() {
                shared
                    .keys
                    .sync()
                    .map_err(|e| unavailable(format!("cannot sync the key file: {e}")))?;
            }
            txn.commit().map_err(unavailable)
        });
        if let Err(e) = &result {
            // Jobs not reached yet fail with the group.
            for job in jobs {
                job.fail(e.clone());
            }
        }
        (done, result, keys)
    }

    /// The inner `Result` is this write's own failure; the outer one fails
    /// the group.
    #[allow(clippy::too_many_arguments)]
    fn track(
        &self,
        visitors: &redb::Table<&str, &[u8]>,
        identities: &mut redb::Table<&str, &[u8]>,
        events: &mut redb::Table<(&str, u32), &[u8]>,
        dirty: &mut Dirty,
        keys: &mut Keys,
        visitor: &VisitorId,
        new: Vec<NewEvent>,
        want_record: bool,
    ) -> Result<Result<Tracked, StoreError>, StoreError> {
        let shared = &self.shared;
        let v = visitor.as_str();
        let row = shared.names.row(v);
        let current = match dirty.remove(&row) {
            Some(r) => r,
            None => match visitors.get(row.as_str()).map_err(unavailable)? {
                Some(bytes) => match decode_record(v, bytes.value(), &shared.taxonomy) {
                    Ok(r) => Some(r),
                    Err(e) => return Ok(Err(e)),
                },
                None => None,
            },
        };
        let known = keys.open.get(&row).copied();
        let key = match (current.is_some(), known) {
            (true, Some(k)) => k,
            (true, None) => match shared.key(&*identities, &row)? {
                Some(k) => k,
                None => {
                    // Put back what was taken: the record stays as it was.
                    dirty.insert(row, current);
                    return Ok(Err(StoreError::Corrupt {
                        visitor: v.to_string(),
                        reason: "the visitor's key is missing".into(),
                    }));
                }
            },
            (false, _) => {
                // A new visitor (or one erased earlier in this group): a new
                // key, and their sealed id.
                erase(identities, events, keys, &row)?;
                let k = shared
                    .keys
                    .create()
                    .map_err(|e| unavailable(format!("cannot write the key file: {e}")))?;
                keys.created.push(k.slot);
                let sealed = k
                    .seal(shared.keys.rng(), &row, Purpose::Id, v.as_bytes())
                    .map_err(unavailable)?;
                identities
                    .insert(row.as_str(), identity_value(&k, &sealed).as_slice())
                    .map_err(unavailable)?;
                k
            }
        };
        keys.open.insert(row.clone(), key);
        let mut record = current.unwrap_or_else(|| VisitorRecord::first(&shared.taxonomy, &new));
        let applied = record.track(&shared.taxonomy, new, self.limits.dedup_window);
        let ring = u64::from(self.limits.recent_events.max(1));
        for e in &applied.stored {
            let slot = (e.seq % ring) as u32;
            let sealed = key
                .seal(shared.keys.rng(), &row, Purpose::Event, &encode_event(e)?)
                .map_err(unavailable)?;
            events
                .insert((row.as_str(), slot), sealed.as_slice())
                .map_err(unavailable)?;
        }
        let outcome = Tracked {
            accepted: applied.stored.len() as u32,
            duplicates: applied.duplicates,
            record: want_record.then(|| Box::new(record.clone())),
        };
        dirty.insert(row, Some(record));
        Ok(Ok(outcome))
    }
}

/// Removes a visitor's identity and raw events; their key is destroyed
/// once the group commits. The record goes with the next [`flush`].
fn erase(
    identities: &mut redb::Table<&str, &[u8]>,
    events: &mut redb::Table<(&str, u32), &[u8]>,
    keys: &mut Keys,
    row: &str,
) -> Result<(), StoreError> {
    remove_events(events, row)?;
    let slot = identities
        .remove(row)
        .map_err(unavailable)?
        .and_then(|v| split_identity(v.value()).map(|(slot, _)| slot));
    if let Some(slot) = slot {
        keys.erased.push(slot);
    }
    keys.open.remove(row);
    Ok(())
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
    identities: &mut redb::Table<&str, &[u8]>,
    events: &mut redb::Table<(&str, u32), &[u8]>,
    keys: &mut Keys,
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
        erase(identities, events, keys, v)?;
    }
    Ok(Purged {
        visitors: victims.len(),
        more,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    use crate::domain::{Event, VisitorId};
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
    async fn a_v2_store_is_sealed_in_place_and_reads_as_before() {
        // Arrange: a v2 file written by hand, the visitor id as the row key
        // and the raw event in the clear.
        let taxonomy = Arc::new(Taxonomy::builtin());
        let dir = tempfile::tempdir().unwrap();
        let view = taxonomy.resolve("view_item").unwrap();
        let t0 = Millis::from_unix_millis(1_767_225_600_000);
        let mut record = VisitorRecord::new(&taxonomy, t0);
        record.aggregate.apply(&taxonomy, &Event::new(view, t0));
        record.timeline.record(view, t0);
        record
            .seen_ids
            .push_back(crate::domain::event::stable_hash("event-v2"));
        record.next_seq = 1;
        let event = StoredEvent {
            seq: 0,
            kind: "view_item".into(),
            at: t0,
            item_id: "sku-v2".into(),
            value: 0.0,
            event_id: "event-v2".into(),
            attributes: Vec::new(),
        };
        {
            let db = Database::create(dir.path().join(FILE_NAME)).unwrap();
            let txn = db.begin_write().unwrap();
            {
                let mut meta = txn.open_table(META).unwrap();
                meta.insert("format", FORMAT_V2).unwrap();
                meta.insert("taxonomy", taxonomy.fingerprint()).unwrap();
                let mut visitors = txn.open_table(VISITORS).unwrap();
                // Layout v2: the record's fields in their old order.
                #[derive(serde::Serialize)]
                struct V2<'a>(
                    &'a Aggregate,
                    &'a crate::scoring::Timeline,
                    u64,
                    &'a VecDeque<u64>,
                );
                let header = t0.as_unix_millis().to_le_bytes().to_vec();
                let v2 = V2(
                    &record.aggregate,
                    &record.timeline,
                    record.next_seq,
                    &record.seen_ids,
                );
                let bytes = postcard::to_extend(&v2, header).unwrap();
                visitors.insert("v2-visitor", bytes.as_slice()).unwrap();
                let mut events = txn.open_table(EVENTS).unwrap();
                let raw = encode_event(&event).unwrap();
                events.insert(("v2-visitor", 0), raw.as_slice()).unwrap();
            }
            txn.commit().unwrap();
        }
        let limits = StoreLimits {
            recent_events: 200,
            dedup_window: 128,
            max_group: 16,
        };

        // Act
        let store = RedbStore::open(dir.path(), taxonomy.clone(), limits).unwrap();

        // Assert: read as before, named by scans, and erasable.
        let visitor = VisitorId::parse("v2-visitor".into(), 64).unwrap();
        let snapshot = store.snapshot(&visitor).await.unwrap().expect("kept");
        assert_eq!(snapshot.record, record);
        assert_eq!(snapshot.recent, vec![event]);
        let standing = store.load_standing(&visitor).await.unwrap();
        assert_eq!(standing, Some(Standing::from(record)));
        let chunk = store
            .scan(&ScanRange::default(), None, t0, 10)
            .await
            .unwrap();
        let ids: Vec<&str> = chunk.iter().map(|(id, _)| id).collect();
        assert_eq!(ids, ["v2-visitor"]);
        assert!(store.forget(visitor.clone()).await.unwrap());
        assert_eq!(store.load(&visitor).await.unwrap(), None);
    }

    #[tokio::test]
    async fn a_v1_store_is_upgraded_with_timelines_rebuilt_and_raw_events_sealed() {
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
        // The kept raw events were sealed on the way, and open again.
        let snapshot = store
            .snapshot(&crate::domain::VisitorId::parse("old-visitor".into(), 64).unwrap())
            .await
            .unwrap()
            .expect("kept");
        let kinds: Vec<&str> = snapshot.recent.iter().map(|e| e.kind.as_str()).collect();
        assert_eq!(kinds, ["add_to_cart", "view_item"]);
        // Upgraded once: reopening finds the current format and changes nothing.
        drop(store);
        let again = RedbStore::open(dir.path(), taxonomy, limits).unwrap();
        assert_eq!(again.segments().await.unwrap(), Vec::new());
    }
}
