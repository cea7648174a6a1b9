//! A visitor's events folded into a compact aggregate, updated in O(1)
//! (O(log sessions) at worst) per event, from which features are read at any
//! `as_of` not before its last event. It is what the store keeps per visitor,
//! and what [`super::observe`] builds for events sent inline, so stored and
//! inline scoring share one code path.
//!
//! Decay without replay: for each type the aggregate keeps
//! S = Σ 2^((t − anchor) / half-life); the decayed count at `as_of` is then
//! S · 2^(−(as_of − anchor) / half-life). The anchor moves forward when the
//! exponents grow large, so the sums stay far from overflow.

use serde::{Deserialize, Serialize};

use crate::domain::{Event, ItemKey, Millis, Stage, Taxonomy, TypeId};

use super::features::{from_aggregate, Observation};

/// Sessions kept one by one; older ones are only counted. Out-of-order
/// events are placed exactly among the kept sessions.
pub const MAX_SESSIONS: usize = 512;
/// Distinct viewed items remembered; the feature saturates here.
pub const MAX_ITEMS: usize = 1024;
/// Rebase the anchor before any exponent passes this (2^600 is far from
/// f64's limit of about 2^1023).
const MAX_EXPONENT: f64 = 600.0;

/// A run of events with no gap longer than the session gap.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Span {
    pub start: Millis,
    pub end: Millis,
    pub events: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Aggregate {
    anchor: Millis,
    /// Per type: Σ 2^((t − anchor) / half-life); a plain count without decay.
    decay_sums: Vec<f64>,
    /// Per type: events applied.
    counts: Vec<u64>,
    first: Option<Millis>,
    last: Option<Millis>,
    last_milestone: Option<Millis>,
    highest_milestone: u8,
    stage: Stage,
    /// Sorted by start, each separated from the next by more than the gap.
    spans: Vec<Span>,
    /// Sessions older than the kept spans.
    folded_sessions: u32,
    /// Sorted, distinct.
    items: Vec<ItemKey>,
}

impl Aggregate {
    pub fn new(taxonomy: &Taxonomy, anchor: Millis) -> Aggregate {
        Aggregate {
            anchor,
            decay_sums: vec![0.0; taxonomy.len()],
            counts: vec![0; taxonomy.len()],
            first: None,
            last: None,
            last_milestone: None,
            highest_milestone: 0,
            stage: Stage::Awareness,
            spans: Vec::new(),
            folded_sessions: 0,
            items: Vec::new(),
        }
    }

    /// Whether this aggregate fits a taxonomy (same number of types).
    pub fn fits(&self, taxonomy: &Taxonomy) -> bool {
        self.decay_sums.len() == taxonomy.len() && self.counts.len() == taxonomy.len()
    }

    /// Folds one event in. Events may come in any order.
    pub fn apply(&mut self, taxonomy: &Taxonomy, e: &Event) {
        let t = taxonomy.get(e.kind);
        let k = e.kind.index();
        let mut exponent = e.at.millis_since(self.anchor) / t.half_life_ms;
        if exponent > MAX_EXPONENT {
            self.rebase(taxonomy, e.at);
            exponent = 0.0;
        }
        self.decay_sums[k] += exponent.exp2();
        self.counts[k] += 1;
        self.first = Some(self.first.map_or(e.at, |f| f.min(e.at)));
        self.last = Some(self.last.map_or(e.at, |l| l.max(e.at)));
        self.stage = self.stage.max(t.stage);
        if t.milestone_rank > 0 {
            self.highest_milestone = self.highest_milestone.max(t.milestone_rank);
            self.last_milestone = Some(self.last_milestone.map_or(e.at, |m| m.max(e.at)));
        }
        self.add_to_sessions(e.at, taxonomy.session_gap_ms());
        if Some(e.kind) == taxonomy.roles().item_view {
            if let Some(item) = e.item {
                if let Err(i) = self.items.binary_search(&item) {
                    if self.items.len() < MAX_ITEMS {
                        self.items.insert(i, item);
                    }
                }
            }
        }
    }

    /// Moves the anchor to `to`, rescaling every sum.
    fn rebase(&mut self, taxonomy: &Taxonomy, to: Millis) {
        let shift = self.anchor.millis_since(to);
        for (s, t) in self.decay_sums.iter_mut().zip(taxonomy.types()) {
            *s *= (shift / t.half_life_ms).exp2();
        }
        self.anchor = to;
    }

    fn add_to_sessions(&mut self, t: Millis, gap: f64) {
        let spans = &mut self.spans;
        let i = spans.partition_point(|s| s.start <= t);
        if i > 0 && t <= spans[i - 1].end {
            spans[i - 1].events += 1;
            return;
        }
        let joins_prev = i > 0 && t.millis_since(spans[i - 1].end) <= gap;
        let joins_next = i < spans.len() && spans[i].start.millis_since(t) <= gap;
        match (joins_prev, joins_next) {
            (true, true) => {
                let next = spans.remove(i);
                let prev = &mut spans[i - 1];
                prev.end = next.end;
                prev.events += 1 + next.events;
            }
            (true, false) => {
                spans[i - 1].end = t;
                spans[i - 1].events += 1;
            }
            (false, true) => {
                spans[i].start = t;
                spans[i].events += 1;
            }
            // Older than every kept session once some were folded: it
            // belongs among the folded ones, which are only counted.
            (false, false) if i == 0 && self.folded_sessions > 0 => {}
            (false, false) => {
                spans.insert(
                    i,
                    Span {
                        start: t,
                        end: t,
                        events: 1,
                    },
                );
                if spans.len() > MAX_SESSIONS {
                    spans.remove(0);
                    self.folded_sessions += 1;
                }
            }
        }
    }

    /// Features and ladder at `as_of`, which must not precede [`Aggregate::last`].
    pub fn observe(&self, taxonomy: &Taxonomy, as_of: Millis) -> Observation {
        debug_assert!(self.last.is_none_or(|l| l <= as_of));
        from_aggregate(taxonomy, self, as_of)
    }

    /// Per-type decayed (uncapped) counts at `as_of`, into `out`.
    pub fn decayed_counts(&self, taxonomy: &Taxonomy, as_of: Millis, out: &mut [f64]) {
        let elapsed = as_of.millis_since(self.anchor);
        for ((o, s), t) in out.iter_mut().zip(&self.decay_sums).zip(taxonomy.types()) {
            *o = s * (-elapsed / t.half_life_ms).exp2();
        }
    }

    /// Events of a type applied so far.
    pub fn count(&self, id: TypeId) -> u64 {
        self.counts[id.index()]
    }

    pub fn counts(&self) -> &[u64] {
        &self.counts
    }

    pub fn events(&self) -> u64 {
        self.counts.iter().sum()
    }

    pub fn first(&self) -> Option<Millis> {
        self.first
    }

    pub fn last(&self) -> Option<Millis> {
        self.last
    }

    pub fn last_milestone(&self) -> Option<Millis> {
        self.last_milestone
    }

    pub fn highest_milestone(&self) -> u8 {
        self.highest_milestone
    }

    pub fn stage(&self) -> Stage {
        self.stage
    }

    pub fn sessions(&self) -> u32 {
        self.folded_sessions + self.spans.len() as u32
    }

    /// Kept sessions, oldest first.
    pub fn spans(&self) -> &[Span] {
        &self.spans
    }

    pub fn last_session(&self) -> Option<&Span> {
        self.spans.last()
    }

    pub fn distinct_items_viewed(&self) -> usize {
        self.items.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::event::sort_by_time;
    use crate::scoring::observe;
    use proptest::prelude::*;

    const T0: i64 = 1_767_225_600_000;
    const NAMES: [&str; 10] = [
        "page_view",
        "view_item",
        "view_item",
        "search",
        "add_to_cart",
        "remove_from_cart",
        "begin_checkout",
        "add_payment_info",
        "purchase",
        "add_to_wishlist",
    ];

    fn events() -> impl Strategy<Value = Vec<Event>> {
        let t = Taxonomy::builtin();
        let kinds: Vec<TypeId> = NAMES.iter().map(|n| t.resolve(n).unwrap()).collect();
        // Up to 60 days, clustered enough to make sessions merge and split.
        let event = (0..kinds.len(), 0i64..60 * 86_400, 0u8..6).prop_map(move |(k, s, item)| {
            Event::new(kinds[k], Millis::from_unix_millis(T0 + s * 1000 / 7 * 7))
                .with_item(&format!("i{item}"))
        });
        prop::collection::vec(event, 0..80)
    }

    fn close(a: &[f64], b: &[f64]) -> bool {
        a.iter()
            .zip(b)
            .all(|(x, y)| (x - y).abs() <= 1e-9 * (1.0 + x.abs().max(y.abs())))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        /// Events applied one at a time, in the order they arrive, give the
        /// features a recomputation from the sorted list gives.
        #[test]
        fn incremental_aggregate_equals_recomputation(
            arrival in events(),
            anchor_days in 0i64..400,
            later_hours in 0i64..2000,
        ) {
            let t = Taxonomy::builtin();
            // A stored aggregate anchored anywhere, even long before the events.
            let mut agg = Aggregate::new(&t, Millis::from_unix_millis(T0 - anchor_days * 86_400_000));
            for e in &arrival {
                agg.apply(&t, e);
            }
            let mut sorted = arrival.clone();
            sort_by_time(&mut sorted);
            let last = sorted.last().map_or(T0, |e| e.at.as_unix_millis());
            let as_of = Millis::from_unix_millis(last + later_hours * 3_600_000);

            let inc = agg.observe(&t, as_of);
            let full = observe(&t, &sorted, as_of);

            prop_assert!(close(&inc.features, &full.features), "{:?}\n{:?}", inc.features, full.features);
            prop_assert!((inc.ladder.points - full.ladder.points).abs() < 1e-9);
            prop_assert_eq!(inc.ladder.milestone_rank, full.ladder.milestone_rank);
            prop_assert_eq!(inc.ladder.stage, full.ladder.stage);
        }
    }

    #[test]
    fn an_event_that_bridges_two_sessions_merges_them() {
        let t = Taxonomy::builtin();
        let view = t.resolve("view_item").unwrap();
        let at = |min: i64| Event::new(view, Millis::from_unix_millis(T0 + min * 60_000));
        let mut agg = Aggregate::new(&t, Millis::from_unix_millis(T0));
        agg.apply(&t, &at(0));
        agg.apply(&t, &at(50)); // 50 minutes later: a second session
        assert_eq!(agg.sessions(), 2);
        agg.apply(&t, &at(25)); // within 30 minutes of both
        assert_eq!(agg.sessions(), 1);
        assert_eq!(agg.last_session().unwrap().events, 3);
    }

    #[test]
    fn the_anchor_moves_forward_without_changing_counts() {
        // view_item's half-life is 7 days; 600 half-lives is about 11.5 years.
        let t = Taxonomy::builtin();
        let view = t.resolve("view_item").unwrap();
        let mut agg = Aggregate::new(&t, Millis::from_unix_millis(0));
        let late = Millis::from_unix_millis(20 * 365 * 86_400_000);
        agg.apply(&t, &Event::new(view, late));
        agg.apply(&t, &Event::new(view, late));
        let mut out = vec![0.0; t.len()];
        agg.decayed_counts(&t, late, &mut out);
        assert_eq!(out[view.index()], 2.0);
    }
}
