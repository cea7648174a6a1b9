//! A visitor as stored: the scoring aggregate, the de-duplication window and
//! the position in the raw-event ring. Applying a write to a record is pure,
//! so every backend does exactly the same thing.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::domain::event::stable_hash;
use crate::domain::{Millis, NewEvent, StoredEvent, Taxonomy};

use super::SavedSegment;
use crate::scoring::Aggregate;

use super::StoreError;
use crate::scoring::Timeline;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VisitorRecord {
    // The aggregate and the timeline come first: scans decode only them.
    pub aggregate: Aggregate,
    pub timeline: Timeline,
    /// The next raw event's sequence number; its ring slot is seq % capacity.
    pub next_seq: u64,
    /// Hashes of the most recent event ids, oldest first.
    pub seen_ids: VecDeque<u64>,
}

/// What one Track did to a record.
#[derive(Debug, Clone, PartialEq)]
pub struct Applied {
    /// Raw events to keep, in arrival order.
    pub stored: Vec<StoredEvent>,
    pub duplicates: u32,
}

impl VisitorRecord {
    pub fn new(taxonomy: &Taxonomy, anchor: Millis) -> VisitorRecord {
        VisitorRecord {
            aggregate: Aggregate::new(taxonomy, anchor),
            timeline: Timeline::default(),
            next_seq: 0,
            seen_ids: VecDeque::new(),
        }
    }

    /// A new visitor's record, anchored at the first of their events.
    pub fn first(taxonomy: &Taxonomy, events: &[NewEvent]) -> VisitorRecord {
        let anchor = events
            .first()
            .map_or(Millis::from_unix_millis(0), |e| e.event.at);
        VisitorRecord::new(taxonomy, anchor)
    }

    /// Whether an event with this id was applied recently.
    pub fn has_seen(&self, event_id: &str) -> bool {
        !event_id.is_empty() && self.seen_ids.contains(&stable_hash(event_id))
    }

    /// Applies the events not seen before (by event id, within the last
    /// `window` ids), in order. Events without an id are always new.
    pub fn track(&mut self, taxonomy: &Taxonomy, events: Vec<NewEvent>, window: usize) -> Applied {
        let mut stored = Vec::with_capacity(events.len());
        let mut duplicates = 0;
        for e in events {
            if !e.event_id.is_empty() {
                let h = stable_hash(&e.event_id);
                if self.seen_ids.contains(&h) {
                    duplicates += 1;
                    continue;
                }
                self.seen_ids.push_back(h);
                while self.seen_ids.len() > window {
                    self.seen_ids.pop_front();
                }
            }
            self.aggregate.apply(taxonomy, &e.event);
            self.timeline.record(e.event.kind, e.event.at);
            stored.push(StoredEvent {
                seq: self.next_seq,
                kind: taxonomy.get(e.event.kind).name.clone(),
                at: e.event.at,
                item_id: e.item_id,
                value: e.event.value,
                event_id: e.event_id,
                attributes: e.attributes,
            });
            self.next_seq += 1;
        }
        Applied { stored, duplicates }
    }
}

/// What audience scans read of a record: everything but the de-duplication
/// window and the ring position.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct RecordView {
    pub aggregate: Aggregate,
    pub timeline: Timeline,
}

/// A record's stored bytes: the last-seen time (8 bytes, little-endian unix
/// ms, so purges and scans can filter without decoding), then the record in
/// postcard. Every backend stores records this way.
pub fn encode(r: &VisitorRecord) -> Result<Vec<u8>, StoreError> {
    let last = r.aggregate.last().map_or(i64::MIN, Millis::as_unix_millis);
    let buf = last.to_le_bytes().to_vec();
    postcard::to_extend(r, buf).map_err(|e| StoreError::Unavailable(e.to_string()))
}

/// The last-seen time in a record's header (`i64::MIN` for none or a short record).
pub fn last_seen(bytes: &[u8]) -> i64 {
    bytes
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .map_or(i64::MIN, i64::from_le_bytes)
}

fn body<'a>(visitor: &str, bytes: &'a [u8]) -> Result<&'a [u8], StoreError> {
    bytes
        .get(8..)
        .ok_or_else(|| corrupt(visitor, "record shorter than its header"))
}

fn corrupt(visitor: &str, reason: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt {
        visitor: visitor.to_string(),
        reason: reason.to_string(),
    }
}

pub fn decode(
    visitor: &str,
    bytes: &[u8],
    taxonomy: &Taxonomy,
) -> Result<VisitorRecord, StoreError> {
    let record: VisitorRecord =
        postcard::from_bytes(body(visitor, bytes)?).map_err(|e| corrupt(visitor, e))?;
    check_fits(visitor, &record.aggregate, &record.timeline, taxonomy)?;
    Ok(record)
}

/// Decodes only the aggregate and the timeline.
pub fn decode_view(
    visitor: &str,
    bytes: &[u8],
    taxonomy: &Taxonomy,
) -> Result<RecordView, StoreError> {
    let (view, _rest): (RecordView, _) =
        postcard::take_from_bytes(body(visitor, bytes)?).map_err(|e| corrupt(visitor, e))?;
    check_fits(visitor, &view.aggregate, &view.timeline, taxonomy)?;
    Ok(view)
}

fn check_fits(
    visitor: &str,
    a: &Aggregate,
    t: &Timeline,
    taxonomy: &Taxonomy,
) -> Result<(), StoreError> {
    if a.fits(taxonomy) && t.types() <= taxonomy.len() {
        Ok(())
    } else {
        Err(corrupt(
            visitor,
            "aggregate does not fit the running taxonomy",
        ))
    }
}

/// A kept raw event's stored bytes (postcard), as every backend keeps them.
pub fn encode_event(e: &StoredEvent) -> Result<Vec<u8>, StoreError> {
    postcard::to_stdvec(e).map_err(|err| StoreError::Unavailable(err.to_string()))
}

pub fn decode_event(visitor: &str, bytes: &[u8]) -> Result<StoredEvent, StoreError> {
    postcard::from_bytes(bytes).map_err(|e| corrupt(visitor, format!("raw event: {e}")))
}

/// A saved segment's stored bytes (JSON), as every backend keeps them.
pub fn encode_segment(s: &SavedSegment) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(s)
        .map_err(|e| StoreError::Unavailable(format!("cannot encode a segment: {e}")))
}

pub fn decode_segment(bytes: &[u8]) -> Result<SavedSegment, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| corrupt("", format!("saved segment: {e}")))
}
