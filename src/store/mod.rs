//! Where visitors are remembered. [`Store`] is the seam every backend fills:
//! the embedded [`redb`](redb_store) store (one process, one file), and the
//! shared [`Redis`](redis_store) store (any number of replicas, one Redis or
//! a Redis Cluster). Backends keep [`VisitorRecord`]s and a ring of recent
//! raw events; what a write does to a record is pure code in [`record`],
//! shared by all of them.

pub mod keys;
pub mod record;
pub mod redb_store;
pub mod redis_store;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use crate::domain::{Millis, NewEvent, StoredEvent, VisitorId};

pub use record::{RecordView, Standing, VisitorRecord};
pub use redb_store::RedbStore;
pub use redis_store::{RedisSettings, RedisStore};

/// Backend-neutral store failures.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// I/O failure, a full disk, a stopped writer: the request may be retried.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// A stored record cannot be read back.
    #[error("stored data for visitor {visitor:?} is corrupt: {reason}")]
    Corrupt { visitor: String, reason: String },
    /// Another process holds the data directory.
    #[error("data directory {} is in use by another rung process (only one may write to it)", path.display())]
    Locked { path: PathBuf },
    /// The data was written under another taxonomy.
    #[error("{0}")]
    Incompatible(String),
}

impl StoreError {
    /// The `kind` label of `rung_store_errors_total`.
    pub fn kind(&self) -> &'static str {
        match self {
            StoreError::Unavailable(_) => "unavailable",
            StoreError::Corrupt { .. } => "corrupt",
            StoreError::Locked { .. } => "locked",
            StoreError::Incompatible(_) => "incompatible",
        }
    }
}

/// A model one replica loaded, announced to the others sharing its store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelNote {
    /// The announcing replica (each shared store has a random id), so a
    /// replica ignores its own notes.
    pub origin: String,
    pub version: String,
    pub path: PathBuf,
    /// When the announcing replica loaded it: a replica that loaded its own
    /// model later does not go back to this one.
    pub loaded_at: Millis,
}

/// A segment definition saved by a user, kept with the visitor data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavedSegment {
    pub name: String,
    /// The definition as the user sent it (JSON or text form).
    pub definition: String,
    pub description: String,
    pub updated_at: Millis,
}

/// A stretch of a store's scan order, in its scan keys ([`Store::scan_key`]):
/// from `from` (inclusive) up to `to` (exclusive); `None` is open.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScanRange {
    pub from: Option<String>,
    pub to: Option<String>,
}

impl ScanRange {
    /// Whether a scan key lies in the range.
    pub fn contains(&self, key: &str) -> bool {
        self.from.as_deref().is_none_or(|f| key >= f) && self.to.as_deref().is_none_or(|t| key < t)
    }

    /// Splits the keys between `first` and `last` at evenly spaced points,
    /// reading the bytes after their common prefix as a number in printable
    /// ASCII (other bytes count as its ends); the first range starts and the
    /// last ends open, so every id is in exactly one range.
    pub fn split(first: &str, last: &str, parts: usize) -> Vec<ScanRange> {
        const DIGITS: usize = 3;
        const LO: u8 = 0x20;
        const BASE: u64 = 95;
        let (a, b) = (first.as_bytes(), last.as_bytes());
        let common = a.iter().zip(b).take_while(|(x, y)| x == y).count();
        let mut cut = common;
        while !first.is_char_boundary(cut) {
            cut -= 1;
        }
        let prefix = &first[..cut];
        let start = prefix.len();
        let value = |s: &[u8]| -> u64 {
            (0..DIGITS).fold(0, |acc, i| {
                let byte = s.get(start + i).copied().unwrap_or(LO);
                acc * BASE + u64::from(byte.clamp(LO, LO + 94) - LO)
            })
        };
        let (lo, hi) = (value(a), value(b));
        let mut cuts: Vec<String> = (1..parts.max(1) as u64)
            .map(|k| {
                let mut v = lo + (hi.saturating_sub(lo)) * k / parts as u64;
                let mut digits = [0u8; DIGITS];
                for d in digits.iter_mut().rev() {
                    *d = LO + (v % BASE) as u8;
                    v /= BASE;
                }
                let tail: String = digits.iter().map(|&c| c as char).collect();
                format!("{prefix}{}", tail.trim_end_matches(' '))
            })
            .filter(|c| c.as_str() > first && c.as_str() <= last)
            .collect();
        cuts.dedup();
        let mut ranges = Vec::with_capacity(cuts.len() + 1);
        let mut from = None;
        for cut in cuts {
            ranges.push(ScanRange {
                from: from.take(),
                to: Some(cut.clone()),
            });
            from = Some(cut);
        }
        ranges.push(ScanRange { from, to: None });
        ranges
    }
}

/// Visitors in a store's scan order, still encoded ([`record::decode_view`]):
/// ids and records side by side in two buffers, so a chunk of thousands of
/// visitors costs a handful of allocations, not two per visitor.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ScanChunk {
    ids: String,
    records: Vec<u8>,
    /// Where each visitor's id and record end in the buffers.
    ends: Vec<(usize, usize)>,
    /// The scan key of the last visitor looked at (kept or not): the next
    /// chunk starts after it.
    pub last_key: Option<String>,
    /// No visitor in the range after `last_key`.
    pub done: bool,
}

impl ScanChunk {
    /// An empty chunk with room for about `visitors` visitors of `bytes`
    /// each, so filling it does not copy it over and over as it grows.
    pub fn with_capacity(visitors: usize, bytes: usize) -> ScanChunk {
        ScanChunk {
            ids: String::with_capacity(visitors * 24),
            records: Vec::with_capacity(visitors * bytes),
            ends: Vec::with_capacity(visitors),
            last_key: None,
            done: false,
        }
    }

    /// Adds a visitor that passed the filter.
    pub fn push(&mut self, id: &str, record: &[u8]) {
        self.ids.push_str(id);
        self.records.extend_from_slice(record);
        self.ends.push((self.ids.len(), self.records.len()));
    }

    /// Visitors in the chunk.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The `i`-th visitor's id and record.
    pub fn get(&self, i: usize) -> (&str, &[u8]) {
        let (id_start, rec_start) = match i {
            0 => (0, 0),
            _ => self.ends[i - 1],
        };
        let (id_end, rec_end) = self.ends[i];
        (
            &self.ids[id_start..id_end],
            &self.records[rec_start..rec_end],
        )
    }

    /// Every visitor's id and record, in scan order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> {
        (0..self.len()).map(|i| self.get(i))
    }
}

/// What a Track did.
#[derive(Debug, Clone, PartialEq)]
pub struct Tracked {
    pub accepted: u32,
    pub duplicates: u32,
    /// The record after the write, when it was asked for.
    pub record: Option<Box<VisitorRecord>>,
}

/// What one purge pass erased.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Purged {
    pub visitors: usize,
    /// More inactive visitors remain.
    pub more: bool,
}

/// What saving a segment did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SegmentWrite {
    Created,
    Replaced,
    /// The name is taken and overwriting was not asked for: nothing written.
    NameTaken,
}

/// A visitor's record and kept raw events, read as of one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    pub record: VisitorRecord,
    /// Newest first.
    pub recent: Vec<StoredEvent>,
}

/// A write on its way: resolves once the write is durable (or has failed).
/// The write is queued when the ticket is made, not when it is first
/// polled, so a caller can keep many in flight.
#[must_use = "a write's outcome is only known when its ticket resolves"]
pub struct Ticket<T> {
    rx: oneshot::Receiver<Result<T, StoreError>>,
}

/// The sending half of a [`Ticket`], held by whoever carries out the write.
pub type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

impl<T> Ticket<T> {
    pub fn channel() -> (Reply<T>, Ticket<T>) {
        let (tx, rx) = oneshot::channel();
        (tx, Ticket { rx })
    }

    /// A ticket that is already resolved.
    pub fn ready(result: Result<T, StoreError>) -> Ticket<T> {
        let (tx, ticket) = Ticket::channel();
        let _ = tx.send(result);
        ticket
    }
}

impl<T> std::future::Future for Ticket<T> {
    type Output = Result<T, StoreError>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        // A writer that went away without answering is "unavailable".
        std::pin::Pin::new(&mut self.rx).poll(cx).map(|r| {
            r.unwrap_or_else(|_| {
                Err(StoreError::Unavailable(
                    "the write was not applied (the store gave no answer)".into(),
                ))
            })
        })
    }
}

/// Sizes that bound what is kept per visitor.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StoreLimits {
    /// Raw events kept per visitor (a ring: the oldest is overwritten).
    pub recent_events: u32,
    /// Event ids remembered per visitor for de-duplication.
    pub dedup_window: usize,
    /// Writes grouped into one commit at most.
    pub max_group: usize,
}

/// Where visitors and saved segments are kept. Every backend meets the
/// contract in `tests/store_contract.rs`; what a write does to a record is
/// the same pure code ([`VisitorRecord::track`]) everywhere.
#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    /// The visitor's record, if rung has seen them.
    async fn load(&self, visitor: &VisitorId) -> Result<Option<VisitorRecord>, StoreError>;
    /// What scoring reads of the visitor's record (decoding nothing else).
    async fn load_standing(&self, visitor: &VisitorId) -> Result<Option<Standing>, StoreError>;
    /// [`Store::load_standing`] of each visitor, in order. A corrupt record
    /// fails only its own entry.
    async fn load_standings(
        &self,
        visitors: &[&VisitorId],
    ) -> Vec<Result<Option<Standing>, StoreError>>;
    /// The record and the kept raw events, from one consistent read.
    async fn snapshot(&self, visitor: &VisitorId) -> Result<Option<Snapshot>, StoreError>;
    /// Appends events (duplicates by event id are skipped), atomically for
    /// the visitor. Writes to one visitor through one store apply in the
    /// order they were made.
    fn track(
        &self,
        visitor: VisitorId,
        events: Vec<NewEvent>,
        want_record: bool,
    ) -> Ticket<Tracked>;
    /// Erases everything about a visitor; whether anything was there. Once
    /// it answers, the erasure is durable (and, in the embedded store, what
    /// is left of the visitor's data on disk can no longer be read).
    async fn forget(&self, visitor: VisitorId) -> Result<bool, StoreError>;
    /// Erases up to `limit` visitors whose last event is before
    /// `inactive_before`. Safe to run from several places at once.
    async fn purge(&self, inactive_before: Millis, limit: usize) -> Result<Purged, StoreError>;
    /// Saves a segment definition; a taken name only with `overwrite`.
    async fn put_segment(
        &self,
        segment: SavedSegment,
        overwrite: bool,
    ) -> Result<SegmentWrite, StoreError>;
    /// Removes a saved segment; whether it existed.
    async fn delete_segment(&self, name: &str) -> Result<bool, StoreError>;
    /// How many visitors are kept (for the `rung_store_visitors` gauge).
    async fn visitor_count(&self) -> Result<u64, StoreError>;
    /// Saved segments, by name.
    async fn segments(&self) -> Result<Vec<SavedSegment>, StoreError>;
    async fn segment(&self, name: &str) -> Result<Option<SavedSegment>, StoreError>;
    /// Where a visitor sits in this store's scan order. The order is the
    /// backend's own and fixed: by id in redb (the key is the id); by hash
    /// slot, then id, in Redis.
    fn scan_key(&self, visitor: &str) -> String;
    /// About `parts` ranges that together cover the whole scan order, one
    /// each, for scanning in parallel. Balanced for keys spread evenly.
    async fn partitions(&self, parts: usize) -> Result<Vec<ScanRange>, StoreError>;
    /// Up to `max` visitors of `range` whose scan keys come after `after`,
    /// in scan order, skipping those last seen before `active_since` without
    /// decoding them. A scan resumed after any visitor's key, or after
    /// `last_key`, goes on where it stopped. One call does a bounded amount
    /// of work and may return fewer.
    async fn scan(
        &self,
        range: &ScanRange,
        after: Option<&str>,
        active_since: Millis,
        max: usize,
    ) -> Result<ScanChunk, StoreError>;
    /// Whether the store answers now (for the health service).
    async fn check(&self) -> Result<(), StoreError>;
    /// Tells the other processes sharing this store that this one now
    /// serves another model. A store nobody shares has no one to tell.
    async fn announce_model(
        &self,
        _version: &str,
        _path: &Path,
        _loaded_at: Millis,
    ) -> Result<(), StoreError> {
        Ok(())
    }
    /// Models the other processes sharing this store announced (and, on
    /// each (re)connection, the latest one announced before); `None` for a
    /// store nobody shares, or once taken.
    fn model_announcements(&self) -> Option<mpsc::Receiver<ModelNote>> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::ScanRange;
    use proptest::prelude::*;

    #[test]
    fn sequential_ids_split_into_even_parts() {
        let ids: Vec<String> = (0..10_000).map(|i| format!("v{i:05}")).collect();
        let parts = ScanRange::split(&ids[0], &ids[9_999], 4);
        assert_eq!(parts.len(), 4);
        for p in &parts {
            let n = ids.iter().filter(|id| p.contains(id)).count();
            assert!((2_000..=3_000).contains(&n), "{p:?}: {n}");
        }
    }

    proptest! {
        /// Whatever the ids, every one lies in exactly one part.
        #[test]
        fn parts_cover_every_id_once(
            mut ids in prop::collection::vec("\\PC{0,12}", 2..40),
            parts in 1usize..20,
        ) {
            ids.sort();
            let ranges = ScanRange::split(&ids[0], ids.last().unwrap(), parts);
            prop_assert!(ranges.len() <= parts.max(1));
            for id in &ids {
                let n = ranges.iter().filter(|r| r.contains(id)).count();
                prop_assert_eq!(n, 1, "{:?} in {:?}", id, ranges);
            }
        }
    }
}

#[cfg(test)]
mod chunk_tests {
    use super::ScanChunk;

    #[test]
    fn a_chunk_gives_back_each_visitor_as_pushed() {
        let mut c = ScanChunk::with_capacity(1, 1);
        assert!(c.is_empty());
        c.push("a", b"one");
        c.push("", b"");
        c.push("visitor-é", &[0, 255, 7]);
        assert_eq!(c.len(), 3);
        assert_eq!(c.get(1), ("", &b""[..]));
        let all: Vec<(&str, &[u8])> = c.iter().collect();
        assert_eq!(
            all,
            [
                ("a", &b"one"[..]),
                ("", &b""[..]),
                ("visitor-é", &[0, 255, 7][..])
            ]
        );
    }
}
