//! A micro-conversion as scoring sees it: a resolved type, an instant, the
//! item it concerns and a value. Trackers' raw names and ids are resolved at
//! the edge so the scoring path never touches strings.

use std::hash::{Hash, Hasher};

use serde::{Deserialize, Serialize};

use super::{Millis, TypeId};

/// A hash of an item id: distinct-item features only need equality, and a
/// u64 keeps the event `Copy` and the scoring path free of allocation.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(transparent)]
pub struct ItemKey(u64);

impl ItemKey {
    /// `None` for an empty id: "no item".
    pub fn of(item_id: &str) -> Option<ItemKey> {
        if item_id.is_empty() {
            return None;
        }
        Some(ItemKey(stable_hash(item_id)))
    }
}

/// A 64-bit hash that is the same in every process and release (SipHash
/// with fixed keys), so keys computed at training time, by the server and
/// stored on disk agree.
pub fn stable_hash(s: &str) -> u64 {
    #[allow(deprecated)]
    let mut h = std::hash::SipHasher::new();
    s.hash(&mut h);
    h.finish()
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Event {
    pub kind: TypeId,
    pub at: Millis,
    pub item: Option<ItemKey>,
    /// Finite by construction at the edge.
    pub value: f64,
    /// [`stable_hash`] of the tracker's event id, when it sent one.
    pub id: Option<u64>,
}

impl Event {
    pub fn new(kind: TypeId, at: Millis) -> Self {
        Event {
            kind,
            at,
            item: None,
            value: 0.0,
            id: None,
        }
    }

    pub fn with_item(mut self, item_id: &str) -> Self {
        self.item = ItemKey::of(item_id);
        self
    }
}

/// Sorts by time, keeping arrival order among equal instants; cheap when the
/// events already arrive in order, as they usually do.
pub fn sort_by_time(events: &mut [Event]) {
    if !events.is_sorted_by_key(|e| e.at) {
        events.sort_by_key(|e| e.at);
    }
}

/// An event to be stored, as the edge validated it: what scoring needs
/// and the raw fields GetVisitor and exports show.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    pub event: Event,
    pub event_id: String,
    pub item_id: String,
    pub attributes: Vec<(String, String)>,
}

/// A raw event as a store keeps it (the ring of recent events).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredEvent {
    /// Arrival order for this visitor.
    pub seq: u64,
    /// The taxonomy's name for the type (aliases resolved).
    pub kind: String,
    pub at: Millis,
    pub item_id: String,
    pub value: f64,
    pub event_id: String,
    pub attributes: Vec<(String, String)>,
}
