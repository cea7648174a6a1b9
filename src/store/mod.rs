//! Where visitors are remembered. [`Store`] is the seam every backend fills:
//! the embedded [`redb`](redb_store) store now, a shared one (Redis) later.
//! Backends keep [`VisitorRecord`]s and a ring of recent raw events; what a
//! write does to a record is pure code in [`record`], shared by all of them.

pub mod record;
pub mod redb_store;
pub mod timeline;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use crate::domain::{Millis, VisitorId};

pub use record::{NewEvent, RecordView, StoredEvent, VisitorRecord};
pub use redb_store::RedbStore;
pub use timeline::Timeline;

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
    /// The visitor's kept raw events, newest first.
    fn recent_events(&self, visitor: &VisitorId) -> Result<Vec<StoredEvent>, StoreError>;
    /// Queues a write; the ticket resolves when it is durable.
    fn submit(&self, op: WriteOp) -> Ticket;
    /// Saved segments, by name.
    fn segments(&self) -> Result<Vec<SavedSegment>, StoreError>;
    fn segment(&self, name: &str) -> Result<Option<SavedSegment>, StoreError>;
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
