//! A visitor as they were at a moment, rebuilt from their kept raw events:
//! scoring at an `as_of` before the latest stored event, audiences asked
//! about the past, and store upgrades all go through this one function, so
//! they cannot drift apart.

use crate::domain::event::sort_by_time;
use crate::domain::{Event, Millis, StoredEvent, Taxonomy};

use super::{Aggregate, Timeline};

/// An aggregate and a timeline built from scratch.
#[derive(Debug, Clone, PartialEq)]
pub struct Rebuilt {
    /// Anchored at `until`, as [`super::observe`] anchors one.
    pub aggregate: Aggregate,
    pub timeline: Timeline,
}

/// The event a kept raw event was; `None` for a type the running taxonomy
/// no longer has.
pub fn event_of(taxonomy: &Taxonomy, kept: &StoredEvent) -> Option<Event> {
    let kind = taxonomy.resolve(&kept.kind)?;
    let mut e = Event::new(kind, kept.at).with_item(&kept.item_id);
    e.value = kept.value;
    Some(e)
}

/// Folds the kept events and `extra` ones that happened at or before
/// `until`, in time order, into a fresh aggregate and timeline.
pub fn rebuild(
    taxonomy: &Taxonomy,
    kept: &[StoredEvent],
    extra: &[Event],
    until: Millis,
) -> Rebuilt {
    let mut events: Vec<Event> = kept
        .iter()
        .filter_map(|e| event_of(taxonomy, e))
        .chain(extra.iter().copied())
        .filter(|e| e.at <= until)
        .collect();
    sort_by_time(&mut events);
    let mut aggregate = Aggregate::new(taxonomy, until);
    let mut timeline = Timeline::default();
    for e in &events {
        aggregate.apply(taxonomy, e);
        timeline.record(e.kind, e.at);
    }
    Rebuilt {
        aggregate,
        timeline,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scoring::observe;

    fn kept(seq: u64, kind: &str, at: i64, value: f64) -> StoredEvent {
        StoredEvent {
            seq,
            kind: kind.into(),
            at: Millis::from_unix_millis(at),
            item_id: format!("item-{seq}"),
            value,
            event_id: String::new(),
            attributes: Vec::new(),
        }
    }

    #[test]
    fn a_rebuild_equals_scoring_the_same_events_inline() {
        let t = Taxonomy::builtin();
        // Newest first, as a store returns them, with one from the future.
        let ring = vec![
            kept(3, "purchase", 9_000, 42.0),
            kept(2, "add_to_cart", 3_000, 0.0),
            kept(1, "no_such_type", 2_000, 0.0),
            kept(0, "view_item", 1_000, 0.0),
        ];
        let inline = [Event::new(
            t.resolve("page_view").unwrap(),
            Millis::from_unix_millis(2_500),
        )];
        let until = Millis::from_unix_millis(5_000);

        let r = rebuild(&t, &ring, &inline, until);

        let mut expected: Vec<Event> = [&ring[3], &ring[1]]
            .iter()
            .map(|k| event_of(&t, k).unwrap())
            .collect();
        expected.insert(1, inline[0]);
        assert_eq!(r.aggregate.events(), 3);
        assert_eq!(r.aggregate.last(), Some(Millis::from_unix_millis(3_000)));
        assert_eq!(
            r.aggregate.observe(&t, until).features,
            observe(&t, &expected, until).features
        );
        let cart = t.resolve("add_to_cart").unwrap();
        assert_eq!(r.timeline.times(cart), &[Millis::from_unix_millis(3_000)]);
        assert!(r.timeline.times(t.resolve("purchase").unwrap()).is_empty());
    }

    #[test]
    fn the_value_of_a_kept_event_survives_the_rebuild() {
        let t = Taxonomy::builtin();
        let e = event_of(&t, &kept(0, "purchase", 1, 19.5)).unwrap();
        assert_eq!(e.value, 19.5);
        assert_eq!(e.item, crate::domain::ItemKey::of("item-0"));
    }
}
