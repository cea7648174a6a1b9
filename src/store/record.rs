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
use crate::scoring::timeline::PER_TYPE;
use crate::scoring::Timeline;

#[derive(Debug, Clone, PartialEq)]
pub struct VisitorRecord {
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
#[derive(Debug, Clone, PartialEq)]
pub struct RecordView {
    pub aggregate: Aggregate,
    pub timeline: Timeline,
}

/// What scoring reads of a stored visitor: the aggregate, and the recent
/// event ids an inline event is checked against.
#[derive(Debug, Clone, PartialEq)]
pub struct Standing {
    pub aggregate: Aggregate,
    /// Hashes of the most recent event ids, oldest first.
    pub seen_ids: Vec<u64>,
}

impl From<VisitorRecord> for Standing {
    fn from(r: VisitorRecord) -> Standing {
        Standing {
            aggregate: r.aggregate,
            seen_ids: r.seen_ids.into(),
        }
    }
}

impl Standing {
    pub fn has_seen(&self, id_hash: u64) -> bool {
        self.seen_ids.contains(&id_hash)
    }
}

// A record's stored bytes: the last-seen time (8 bytes, little-endian unix
// ms, so purges and scans can filter without decoding), then the body in
// postcard. Every backend stores records this way.
//
// The body's layout v3, written now, puts what scoring reads first, so a
// Score decodes the aggregate and the seen ids and stops there:
//   aggregate | seen ids (one byte string, 8 bytes LE per id) | next_seq |
//   timeline (per type: the first time, then the gaps between times).
// Layout v2 (still read, to upgrade it) was the derived order of
// `VisitorRecord`'s fields: aggregate | timeline (absolute times) |
// next_seq | seen ids (varints).

/// A record body's layout (see above).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    V2,
    V3,
}

/// The seen ids as stored in v3: one byte string.
struct IdsOut<'a>(&'a VecDeque<u64>);

impl Serialize for IdsOut<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut bytes = Vec::with_capacity(self.0.len() * 8);
        for id in self.0 {
            bytes.extend_from_slice(&id.to_le_bytes());
        }
        s.serialize_bytes(&bytes)
    }
}

/// The seen ids as read: borrowed from the stored bytes until needed.
#[derive(Deserialize)]
#[serde(transparent)]
struct IdsIn<'a>(#[serde(borrow)] &'a [u8]);

impl IdsIn<'_> {
    fn ids(&self) -> Option<impl Iterator<Item = u64> + '_> {
        (self.0.len() % 8 == 0).then(|| {
            self.0
                .chunks_exact(8)
                .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
        })
    }
}

/// A timeline as stored in v3: per type, the first time and then gaps, which
/// are small numbers (a few bytes) where absolute times take six.
struct TimesOut<'a>(&'a Timeline);

impl Serialize for TimesOut<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.lists().iter().map(|t| GapsOut(t)))
    }
}

struct GapsOut<'a>(&'a [Millis]);

impl Serialize for GapsOut<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut previous = 0i64;
        s.collect_seq(self.0.iter().map(|t| {
            let t = t.as_unix_millis();
            let gap = t.wrapping_sub(previous);
            previous = t;
            gap
        }))
    }
}

struct TimesIn(Timeline);

impl<'de> Deserialize<'de> for TimesIn {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<TimesIn, D::Error> {
        let lists: Vec<GapsIn> = Deserialize::deserialize(d)?;
        Timeline::from_lists(lists.into_iter().map(|g| g.0).collect())
            .map(TimesIn)
            .ok_or_else(|| serde::de::Error::custom("a timeline is out of order or too long"))
    }
}

struct GapsIn(Vec<Millis>);

impl<'de> Deserialize<'de> for GapsIn {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<GapsIn, D::Error> {
        struct Gaps;
        impl<'de> serde::de::Visitor<'de> for Gaps {
            type Value = GapsIn;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a list of time gaps")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<GapsIn, A::Error> {
                let mut times = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(PER_TYPE));
                let mut t = 0i64;
                while let Some(gap) = seq.next_element::<i64>()? {
                    t = t.wrapping_add(gap);
                    times.push(Millis::from_unix_millis(t));
                }
                Ok(GapsIn(times))
            }
        }
        d.deserialize_seq(Gaps)
    }
}

#[derive(Serialize)]
struct BodyOut<'a> {
    aggregate: &'a Aggregate,
    seen_ids: IdsOut<'a>,
    next_seq: u64,
    timeline: TimesOut<'a>,
}

/// What scoring decodes of a v3 body; the rest is not looked at.
#[derive(Deserialize)]
struct StandingIn<'a> {
    aggregate: Aggregate,
    #[serde(borrow)]
    seen_ids: IdsIn<'a>,
}

#[derive(Deserialize)]
struct BodyIn<'a> {
    aggregate: Aggregate,
    #[serde(borrow)]
    seen_ids: IdsIn<'a>,
    next_seq: u64,
    timeline: TimesIn,
}

/// The v2 body, field by field in its stored order.
#[derive(Deserialize)]
struct BodyV2 {
    aggregate: Aggregate,
    timeline: Timeline,
    next_seq: u64,
    seen_ids: VecDeque<u64>,
}

/// A record's stored bytes, in the current layout (v3).
pub fn encode(r: &VisitorRecord) -> Result<Vec<u8>, StoreError> {
    let last = r.aggregate.last().map_or(i64::MIN, Millis::as_unix_millis);
    let mut buf = Vec::with_capacity(256 + 8 * r.seen_ids.len());
    buf.extend_from_slice(&last.to_le_bytes());
    let body = BodyOut {
        aggregate: &r.aggregate,
        seen_ids: IdsOut(&r.seen_ids),
        next_seq: r.next_seq,
        timeline: TimesOut(&r.timeline),
    };
    postcard::to_extend(&body, buf).map_err(|e| StoreError::Unavailable(e.to_string()))
}

/// What each part of a record's stored bytes takes, in bytes (for the
/// store benchmark's report); they add up to [`encode`]'s length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartSizes {
    pub header: usize,
    pub aggregate: usize,
    pub seen_ids: usize,
    pub next_seq: usize,
    pub timeline: usize,
}

impl PartSizes {
    pub fn of(r: &VisitorRecord) -> Result<PartSizes, StoreError> {
        fn size(part: &impl Serialize) -> Result<usize, StoreError> {
            postcard::experimental::serialized_size(part)
                .map_err(|e| StoreError::Unavailable(e.to_string()))
        }
        Ok(PartSizes {
            header: 8,
            aggregate: size(&r.aggregate)?,
            seen_ids: size(&IdsOut(&r.seen_ids))?,
            next_seq: size(&r.next_seq)?,
            timeline: size(&TimesOut(&r.timeline))?,
        })
    }

    pub fn total(&self) -> usize {
        self.header + self.aggregate + self.seen_ids + self.next_seq + self.timeline
    }
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

fn ids<T: FromIterator<u64>>(visitor: &str, ids: &IdsIn) -> Result<T, StoreError> {
    Ok(ids
        .ids()
        .ok_or_else(|| corrupt(visitor, "seen ids are not whole 8-byte ids"))?
        .collect())
}

/// A whole record, from bytes in the current layout.
pub fn decode(
    visitor: &str,
    bytes: &[u8],
    taxonomy: &Taxonomy,
) -> Result<VisitorRecord, StoreError> {
    decode_layout(visitor, bytes, taxonomy, Layout::V3)
}

/// A whole record, from bytes in the given layout.
pub fn decode_layout(
    visitor: &str,
    bytes: &[u8],
    taxonomy: &Taxonomy,
    layout: Layout,
) -> Result<VisitorRecord, StoreError> {
    let body = body(visitor, bytes)?;
    let record = match layout {
        Layout::V3 => {
            let b: BodyIn = postcard::from_bytes(body).map_err(|e| corrupt(visitor, e))?;
            VisitorRecord {
                seen_ids: ids(visitor, &b.seen_ids)?,
                aggregate: b.aggregate,
                timeline: b.timeline.0,
                next_seq: b.next_seq,
            }
        }
        Layout::V2 => {
            let b: BodyV2 = postcard::from_bytes(body).map_err(|e| corrupt(visitor, e))?;
            VisitorRecord {
                aggregate: b.aggregate,
                timeline: b.timeline,
                next_seq: b.next_seq,
                seen_ids: b.seen_ids,
            }
        }
    };
    check_fits(visitor, &record.aggregate, &record.timeline, taxonomy)?;
    Ok(record)
}

/// Bytes of a record stored in layout v2, rewritten in the current one
/// (the header is kept: it does not depend on the layout).
pub fn upgrade_v2(visitor: &str, bytes: &[u8], taxonomy: &Taxonomy) -> Result<Vec<u8>, StoreError> {
    encode(&decode_layout(visitor, bytes, taxonomy, Layout::V2)?)
}

/// What scoring reads (the aggregate and the seen ids), decoding nothing
/// after them.
pub fn decode_standing(
    visitor: &str,
    bytes: &[u8],
    taxonomy: &Taxonomy,
) -> Result<Standing, StoreError> {
    let (s, _rest): (StandingIn, _) =
        postcard::take_from_bytes(body(visitor, bytes)?).map_err(|e| corrupt(visitor, e))?;
    if !s.aggregate.fits(taxonomy) {
        return Err(corrupt(
            visitor,
            "aggregate does not fit the running taxonomy",
        ));
    }
    Ok(Standing {
        seen_ids: ids(visitor, &s.seen_ids)?,
        aggregate: s.aggregate,
    })
}

/// Decodes only the aggregate and the timeline (the seen ids are skipped
/// unread).
pub fn decode_view(
    visitor: &str,
    bytes: &[u8],
    taxonomy: &Taxonomy,
) -> Result<RecordView, StoreError> {
    let b: BodyIn = postcard::from_bytes(body(visitor, bytes)?).map_err(|e| corrupt(visitor, e))?;
    check_fits(visitor, &b.aggregate, &b.timeline.0, taxonomy)?;
    Ok(RecordView {
        aggregate: b.aggregate,
        timeline: b.timeline.0,
    })
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Event, TypeId};
    use proptest::prelude::*;

    /// A record in layout v2, written the way the derived order wrote it.
    fn encode_v2(r: &VisitorRecord) -> Vec<u8> {
        #[derive(Serialize)]
        struct V2<'a>(&'a Aggregate, &'a Timeline, u64, &'a VecDeque<u64>);
        let header = r.aggregate.last().map_or(i64::MIN, Millis::as_unix_millis);
        let v2 = V2(&r.aggregate, &r.timeline, r.next_seq, &r.seen_ids);
        postcard::to_extend(&v2, header.to_le_bytes().to_vec()).unwrap()
    }

    fn record(t: &Taxonomy, events: &[(u16, i64, bool)]) -> VisitorRecord {
        let new: Vec<NewEvent> = events
            .iter()
            .enumerate()
            .map(|(n, &(kind, at, with_id))| NewEvent {
                event: Event::new(TypeId(kind), Millis::from_unix_millis(at)),
                event_id: if with_id {
                    format!("e{n}")
                } else {
                    String::new()
                },
                item_id: format!("sku-{}", n % 7),
                attributes: Vec::new(),
            })
            .collect();
        let mut r = VisitorRecord::first(t, &new);
        r.track(t, new, 128);
        r
    }

    fn events() -> impl Strategy<Value = Vec<(u16, i64, bool)>> {
        let types = Taxonomy::builtin().len() as u16;
        prop::collection::vec(
            (
                0..types,
                -1_000_000_000i64..2_000_000_000_000,
                any::<bool>(),
            ),
            0..300,
        )
    }

    proptest! {
        #[test]
        fn every_reading_of_a_record_agrees_with_the_record(evs in events()) {
            let t = Taxonomy::builtin();
            let r = record(&t, &evs);
            let bytes = encode(&r).unwrap();
            prop_assert_eq!(decode("v", &bytes, &t).unwrap(), r.clone());
            prop_assert_eq!(PartSizes::of(&r).unwrap().total(), bytes.len());
            prop_assert_eq!(decode_standing("v", &bytes, &t).unwrap(), Standing::from(r.clone()));
            let view = decode_view("v", &bytes, &t).unwrap();
            prop_assert_eq!(&view.aggregate, &r.aggregate);
            prop_assert_eq!(&view.timeline, &r.timeline);
            prop_assert_eq!(last_seen(&bytes), r.aggregate.last().map_or(i64::MIN, Millis::as_unix_millis));
            // Layout v2 reads back as the same record and upgrades to
            // exactly what is written now.
            let old = encode_v2(&r);
            prop_assert_eq!(decode_layout("v", &old, &t, Layout::V2).unwrap(), r);
            prop_assert_eq!(upgrade_v2("v", &old, &t).unwrap(), bytes);
        }

        #[test]
        fn a_truncated_record_is_corrupt_not_a_panic(evs in events(), cut in 0usize..4096) {
            let t = Taxonomy::builtin();
            let bytes = encode(&record(&t, &evs)).unwrap();
            let cut = cut.min(bytes.len().saturating_sub(1));
            prop_assert!(decode("v", &bytes[..cut], &t).is_err());
        }
    }

    #[test]
    fn layout_v3_is_smaller_than_v2_for_a_long_history() {
        let t = Taxonomy::builtin();
        let evs: Vec<_> = (0..200)
            .map(|k| ((k % 4) as u16, 1_767_225_600_000 + 60_000 * k as i64, true))
            .collect();
        let r = record(&t, &evs);
        let (v3, v2) = (encode(&r).unwrap().len(), encode_v2(&r).len());
        assert!(v3 < v2, "v3 {v3} B, v2 {v2} B");
    }

    #[test]
    fn seen_ids_that_are_not_whole_ids_are_corrupt() {
        let t = Taxonomy::builtin();
        let r = record(&t, &[(0, 1_000, true)]);
        let mut body = Vec::new();
        body.extend_from_slice(&0i64.to_le_bytes());
        let bad = BodyOutRaw {
            aggregate: &r.aggregate,
            seen_ids: &[1, 2, 3],
            next_seq: 1,
            timeline: TimesOut(&r.timeline),
        };
        let bytes = postcard::to_extend(&bad, body).unwrap();
        let err = decode_standing("v", &bytes, &t).unwrap_err();
        assert!(err.to_string().contains("8-byte"), "{err}");
        assert!(decode("v", &bytes, &t).is_err());
    }

    #[derive(Serialize)]
    struct BodyOutRaw<'a> {
        aggregate: &'a Aggregate,
        #[serde(with = "serde_bytes_slice")]
        seen_ids: &'a [u8],
        next_seq: u64,
        timeline: TimesOut<'a>,
    }

    mod serde_bytes_slice {
        pub fn serialize<S: serde::Serializer>(b: &&[u8], s: S) -> Result<S::Ok, S::Error> {
            s.serialize_bytes(b)
        }
    }
}
