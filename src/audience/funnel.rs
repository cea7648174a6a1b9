//! Funnel figures over a time range, tallied one stored visitor at a time
//! (tallies from parallel workers merge).
//!
//! A visitor is in the funnel when one of their kept events falls in the
//! range `[from, to)`. They count as reaching every milestone up to the
//! highest one they reached inside the range (the ladder's rung), so the
//! steps never grow; likewise for stages. Sessions in range are those that
//! started in it; the micro-conversion rate of a type is its events in range
//! per 100 of those sessions.

use crate::domain::{Millis, Stage, Taxonomy};
use crate::scoring::Aggregate;
use crate::scoring::Timeline;

/// Half-open: `from` ≤ t < `to`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeRange {
    pub from: Millis,
    pub to: Millis,
}

impl TimeRange {
    pub fn contains(&self, t: Millis) -> bool {
        self.from <= t && t < self.to
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct FunnelTally {
    visitors: u64,
    sessions: u64,
    /// Visitors whose kept times of some type may miss events in range.
    approximate: u64,
    /// Per type: events in range.
    events: Vec<u64>,
    /// Index r − 1: visitors whose highest milestone in range has rank ≥ r.
    milestones: Vec<u64>,
    /// Per stage, in ladder order: visitors whose furthest stage in range is at least it.
    stages: [u64; 4],
}

/// One step of the funnel.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub name: String,
    pub visitors: u64,
    /// visitors ÷ the previous step's visitors (the first step: ÷ all
    /// visitors in range); `None` when the previous step is empty.
    pub conversion: Option<f64>,
    /// The previous step's visitors that did not reach this one.
    pub drop_off: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct EventRate {
    pub event_type: String,
    pub events: u64,
    /// events ÷ sessions × 100; `None` without sessions.
    pub per_100_sessions: Option<f64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FunnelReport {
    pub range: TimeRange,
    pub visitors: u64,
    pub sessions: u64,
    pub approximate_visitors: u64,
    pub milestones: Vec<Step>,
    pub stages: Vec<Step>,
    pub rates: Vec<EventRate>,
}

impl FunnelTally {
    pub fn new(taxonomy: &Taxonomy) -> FunnelTally {
        FunnelTally {
            visitors: 0,
            sessions: 0,
            approximate: 0,
            events: vec![0; taxonomy.len()],
            milestones: vec![0; taxonomy.milestones().len()],
            stages: [0; 4],
        }
    }

    /// Adds one visitor.
    pub fn add(&mut self, taxonomy: &Taxonomy, range: TimeRange, a: &Aggregate, t: &Timeline) {
        let mut any = false;
        let mut rank = 0u8;
        let mut stage = Stage::Awareness;
        let mut approximate = false;
        for (i, ty) in taxonomy.types().iter().enumerate() {
            let kind = crate::domain::TypeId(i as u16);
            let times = t.times(kind);
            let lo = times.partition_point(|x| *x < range.from);
            let hi = times.partition_point(|x| *x < range.to);
            let n = (hi - lo) as u64;
            if n == 0 {
                continue;
            }
            any = true;
            self.events[i] += n;
            rank = rank.max(ty.milestone_rank);
            stage = stage.max(ty.stage);
            approximate |= t.may_miss_since(kind, range.from);
        }
        if !any {
            return;
        }
        self.visitors += 1;
        self.approximate += u64::from(approximate);
        self.sessions += a.spans().iter().filter(|s| range.contains(s.start)).count() as u64;
        for reached in &mut self.milestones[..usize::from(rank)] {
            *reached += 1;
        }
        for (s, n) in Stage::ALL.iter().zip(&mut self.stages) {
            if *s <= stage {
                *n += 1;
            }
        }
    }

    pub fn merge(&mut self, other: &FunnelTally) {
        self.visitors += other.visitors;
        self.sessions += other.sessions;
        self.approximate += other.approximate;
        for (a, b) in self.events.iter_mut().zip(&other.events) {
            *a += b;
        }
        for (a, b) in self.milestones.iter_mut().zip(&other.milestones) {
            *a += b;
        }
        for (a, b) in self.stages.iter_mut().zip(&other.stages) {
            *a += b;
        }
    }

    pub fn report(&self, taxonomy: &Taxonomy, range: TimeRange) -> FunnelReport {
        let milestone_names = taxonomy
            .milestones()
            .iter()
            .map(|id| taxonomy.get(*id).name.clone());
        let stage_names = Stage::ALL.iter().map(|s| s.name().to_string());
        FunnelReport {
            range,
            visitors: self.visitors,
            sessions: self.sessions,
            approximate_visitors: self.approximate,
            milestones: steps(
                self.visitors,
                milestone_names.zip(self.milestones.iter().copied()),
            ),
            stages: steps(self.visitors, stage_names.zip(self.stages.iter().copied())),
            rates: taxonomy
                .types()
                .iter()
                .zip(&self.events)
                .map(|(ty, &events)| EventRate {
                    event_type: ty.name.clone(),
                    events,
                    per_100_sessions: (self.sessions > 0)
                        .then(|| events as f64 / self.sessions as f64 * 100.0),
                })
                .collect(),
        }
    }
}

fn steps(total: u64, counts: impl Iterator<Item = (String, u64)>) -> Vec<Step> {
    let mut previous = total;
    counts
        .map(|(name, visitors)| {
            let step = Step {
                name,
                visitors,
                conversion: (previous > 0).then(|| visitors as f64 / previous as f64),
                drop_off: previous.saturating_sub(visitors),
            };
            previous = visitors;
            step
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Event;

    const H: i64 = 3_600_000;
    const T0: i64 = 1_767_225_600_000;

    fn visitor(t: &Taxonomy, events: &[(&str, i64)]) -> (Aggregate, Timeline) {
        let mut a = Aggregate::new(t, Millis::from_unix_millis(T0));
        let mut tl = Timeline::default();
        for (name, hours) in events {
            let e = Event::new(
                t.resolve(name).unwrap(),
                Millis::from_unix_millis(T0 + hours * H),
            );
            a.apply(t, &e);
            tl.record(e.kind, e.at);
        }
        (a, tl)
    }

    #[test]
    fn steps_count_visitors_up_to_their_highest_milestone_in_range() {
        let t = Taxonomy::builtin();
        // Range: hours 10 to 20.
        let range = TimeRange {
            from: Millis::from_unix_millis(T0 + 10 * H),
            to: Millis::from_unix_millis(T0 + 20 * H),
        };
        let people = [
            // Carted before the range, only viewed in it: reaches view_item (rank 2).
            visitor(&t, &[("add_to_cart", 1), ("view_item", 11)]),
            // Viewed then carted in range, two sessions (hours 12 and 15): rank 3.
            visitor(&t, &[("view_item", 12), ("add_to_cart", 15)]),
            // Bought at hour 20: outside the half-open range; page view at 19.
            visitor(&t, &[("page_view", 19), ("purchase", 20)]),
            // Nothing in range.
            visitor(&t, &[("purchase", 30)]),
        ];
        let mut tally = FunnelTally::new(&t);
        for (a, tl) in &people {
            tally.add(&t, range, a, tl);
        }
        let r = tally.report(&t, range);
        assert_eq!(r.visitors, 3);
        // Sessions started in range: one (11), two (12, 15), one (19).
        assert_eq!(r.sessions, 4);
        let by = |name: &str| {
            r.milestones
                .iter()
                .find(|s| s.name == name)
                .unwrap()
                .clone()
        };
        // view_item_list is rank 1: reached "up to" by the two who viewed.
        assert_eq!(by("view_item_list").visitors, 2);
        assert_eq!(by("view_item_list").drop_off, 1);
        assert_eq!(by("view_item").visitors, 2);
        assert_eq!(by("view_item").conversion, Some(1.0));
        assert_eq!(by("add_to_cart").visitors, 1);
        assert_eq!(by("add_to_cart").conversion, Some(0.5));
        assert_eq!(by("begin_checkout").visitors, 0);
        assert_eq!(by("add_shipping_info").conversion, None);
        // Stages: all three are aware; the two viewers considered; the
        // carter showed intent; nobody bought in range.
        let stages: Vec<u64> = r.stages.iter().map(|s| s.visitors).collect();
        assert_eq!(stages, vec![3, 2, 1, 0]);
        // view_item: 2 events over 4 sessions = 50 per 100 sessions.
        let rate = r
            .rates
            .iter()
            .find(|x| x.event_type == "view_item")
            .unwrap();
        assert_eq!((rate.events, rate.per_100_sessions), (2, Some(50.0)));
        assert_eq!(r.approximate_visitors, 0);
    }

    #[test]
    fn merged_tallies_equal_one_tally() {
        let t = Taxonomy::builtin();
        let range = TimeRange {
            from: Millis::from_unix_millis(T0),
            to: Millis::from_unix_millis(T0 + 100 * H),
        };
        let a = visitor(&t, &[("view_item", 1), ("add_to_cart", 2)]);
        let b = visitor(&t, &[("purchase", 3)]);
        let mut one = FunnelTally::new(&t);
        one.add(&t, range, &a.0, &a.1);
        one.add(&t, range, &b.0, &b.1);
        let mut left = FunnelTally::new(&t);
        left.add(&t, range, &a.0, &a.1);
        let mut right = FunnelTally::new(&t);
        right.add(&t, range, &b.0, &b.1);
        left.merge(&right);
        assert_eq!(left, one);
    }
}
