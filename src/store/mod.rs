//! Where visitors are remembered. [`Store`] is the seam every backend fills:
//! the embedded [`redb`](redb_store) store now, a shared one (Redis) later.
//! Backends keep [`VisitorRecord`]s and a ring of recent raw events; what a
//! write does to a record is pure code in [`record`], shared by all of them.

pub mod record;
pub mod redb_store;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use crate::domain::{Millis, NewEvent, StoredEvent, VisitorId};

pub use record::{RecordView, VisitorRecord};
pub use redb_store::RedbStore;

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

/// What a write asks of the store. Writes to one store are applied in the
/// order they are submitted.
#[derive(Debug, Clone)]
pub enum WriteOp {
    /// Append events (duplicates by event id are skipped).
    Track {
        visitor: VisitorId,
        events: Vec<NewEvent>,
        /// Return the updated record (for a score); streams skip it.
        want_record: bool,
    },
    /// Erase everything about a visitor.
    Forget {
        visitor: VisitorId,
    },
    /// Erase up to `limit` visitors whose last event is before `inactive_before`.
    Purge {
        inactive_before: Millis,
        limit: usize,
    },
    /// Save a segment definition; a taken name only with `overwrite`.
    PutSegment {
        segment: SavedSegment,
        overwrite: bool,
    },
    DeleteSegment {
        name: String,
    },
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

/// Visitor ids from `from` (inclusive) up to `to` (exclusive); `None` is open.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IdRange {
    pub from: Option<String>,
    pub to: Option<String>,
}

impl IdRange {
    /// Splits the ids between `first` and `last` at evenly spaced points,
    /// reading the bytes after their common prefix as a number in printable
    /// ASCII (other bytes count as its ends); the first range starts and the
    /// last ends open, so every id is in exactly one range.
    pub fn split(first: &str, last: &str, parts: usize) -> Vec<IdRange> {
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
            ranges.push(IdRange {
                from: from.take(),
                to: Some(cut.clone()),
            });
            from = Some(cut);
        }
        ranges.push(IdRange { from, to: None });
        ranges
    }
}

/// Stored visitors in id order, still encoded ([`record::decode_view`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ScanChunk {
    /// Visitor id and record bytes, for visitors that passed the filter.
    pub entries: Vec<(String, Vec<u8>)>,
    /// The last id looked at (kept or not): the next chunk starts after it.
    pub last_key: Option<String>,
    /// No visitor after `last_key`.
    pub done: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Tracked {
        accepted: u32,
        duplicates: u32,
        record: Option<Box<VisitorRecord>>,
    },
    Forgotten {
        existed: bool,
    },
    Purged {
        visitors: usize,
        /// More inactive visitors remain.
        more: bool,
    },
    SegmentPut {
        replaced: bool,
    },
    /// PutSegment without overwrite on a taken name: nothing was written.
    SegmentNameTaken,
    SegmentDeleted {
        existed: bool,
    },
}

/// Resolves once the write is durable (or has failed).
pub type Ticket = oneshot::Receiver<Result<Outcome, StoreError>>;

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

pub trait Store: Send + Sync + 'static {
    /// The visitor's record, if rung has seen them.
    fn load(&self, visitor: &VisitorId) -> Result<Option<VisitorRecord>, StoreError>;
    /// [`Store::load`] of each visitor, in order, as of one moment: a batch
    /// pays for one read transaction instead of one per visitor. A corrupt
    /// record fails only its own entry.
    fn load_many(&self, visitors: &[&VisitorId]) -> Vec<Result<Option<VisitorRecord>, StoreError>> {
        visitors.iter().map(|v| self.load(v)).collect()
    }
    /// The visitor's kept raw events, newest first.
    fn recent_events(&self, visitor: &VisitorId) -> Result<Vec<StoredEvent>, StoreError>;
    /// Queues a write; the ticket resolves when it is durable.
    fn submit(&self, op: WriteOp) -> Ticket;
    /// Saved segments, by name.
    fn segments(&self) -> Result<Vec<SavedSegment>, StoreError>;
    fn segment(&self, name: &str) -> Result<Option<SavedSegment>, StoreError>;
    /// Calls `visit` with each visitor in `range` (by id, in id order) last
    /// seen at or after `active_since`, and its encoded record, until it
    /// breaks. One read transaction; records are not copied.
    fn scan_range(
        &self,
        range: &IdRange,
        active_since: Millis,
        visit: &mut dyn FnMut(&str, &[u8]) -> std::ops::ControlFlow<()>,
    ) -> Result<(), StoreError>;
    /// About `parts` ranges covering every visitor id, for scanning in
    /// parallel. Balanced for ids spread evenly; always complete and disjoint.
    fn partitions(&self, parts: usize) -> Result<Vec<IdRange>, StoreError>;
    /// Up to `max` visitors with ids after `after`, in id order, skipping
    /// those last seen before `active_since` without decoding them. Looks
    /// at no more than `max_examined` ids, so one call stays short.
    fn scan(
        &self,
        after: Option<&str>,
        active_since: Millis,
        max: usize,
        max_examined: usize,
    ) -> Result<ScanChunk, StoreError>;
}

/// Waits for a ticket; a writer that went away is "unavailable".
pub async fn settle(ticket: Ticket) -> Result<Outcome, StoreError> {
    ticket
        .await
        .unwrap_or_else(|_| Err(StoreError::Unavailable("the store writer stopped".into())))
}

#[cfg(test)]
mod tests {
    use super::IdRange;
    use proptest::prelude::*;

    fn contains(r: &IdRange, id: &str) -> bool {
        r.from.as_deref().is_none_or(|f| id >= f) && r.to.as_deref().is_none_or(|t| id < t)
    }

    #[test]
    fn sequential_ids_split_into_even_parts() {
        let ids: Vec<String> = (0..10_000).map(|i| format!("v{i:05}")).collect();
        let parts = IdRange::split(&ids[0], &ids[9_999], 4);
        assert_eq!(parts.len(), 4);
        for p in &parts {
            let n = ids.iter().filter(|id| contains(p, id)).count();
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
            let ranges = IdRange::split(&ids[0], ids.last().unwrap(), parts);
            prop_assert!(ranges.len() <= parts.max(1));
            for id in &ids {
                let n = ranges.iter().filter(|r| contains(r, id)).count();
                prop_assert_eq!(n, 1, "{:?} in {:?}", id, ranges);
            }
        }
    }
}
