//! When a visitor's recent events of each type happened: what audiences
//! ("add_to_cart in the last 7 days, no purchase since") and funnels over a
//! time range need, and the aggregate's decayed sums cannot answer.
//!
//! Per type it keeps the latest [`PER_TYPE`] times, so a frequent type
//! (page views) never pushes a rare one (a purchase) out. Counts within a
//! window are exact up to that many; the language refuses thresholds above.

use serde::{Deserialize, Serialize};

use crate::domain::{Millis, TypeId};

/// Times kept per type.
pub const PER_TYPE: usize = 64;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Timeline {
    /// Indexed by type; each ascending, at most [`PER_TYPE`] long. Shorter
    /// than the taxonomy when the last types were never seen.
    per_type: Vec<Vec<Millis>>,
}

impl Timeline {
    /// Notes an event; events may come in any order. An event older than
    /// every kept time of a full list is dropped (it would be evicted first).
    pub fn record(&mut self, kind: TypeId, at: Millis) {
        let k = kind.index();
        if self.per_type.len() <= k {
            self.per_type.resize_with(k + 1, Vec::new);
        }
        let times = &mut self.per_type[k];
        if times.len() == PER_TYPE {
            if at < times[0] {
                return;
            }
            times.remove(0);
        }
        let i = times.partition_point(|t| *t <= at);
        times.insert(i, at);
    }

    /// The kept times of a type, ascending.
    pub fn times(&self, kind: TypeId) -> &[Millis] {
        self.per_type.get(kind.index()).map_or(&[], Vec::as_slice)
    }

    /// Whether the kept times of a type may miss some at or after `from`:
    /// the list is full and its oldest is not before `from`.
    pub fn may_miss_since(&self, kind: TypeId, from: Millis) -> bool {
        let t = self.times(kind);
        t.len() == PER_TYPE && t[0] >= from
    }

    /// Number of types with a list (kept or empty).
    pub fn types(&self) -> usize {
        self.per_type.len()
    }

    /// Every type's kept times, by type index.
    pub fn lists(&self) -> &[Vec<Millis>] {
        &self.per_type
    }

    /// A timeline from lists as [`Timeline::lists`] gives them; `None`
    /// unless each is ascending and at most [`PER_TYPE`] long.
    pub fn from_lists(per_type: Vec<Vec<Millis>>) -> Option<Timeline> {
        per_type
            .iter()
            .all(|t| t.len() <= PER_TYPE && t.is_sorted())
            .then_some(Timeline { per_type })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: i64) -> Millis {
        Millis::from_unix_millis(v)
    }

    #[test]
    fn keeps_times_sorted_whatever_the_arrival_order() {
        let mut t = Timeline::default();
        for v in [5, 1, 3, 3, 9] {
            t.record(TypeId(2), ms(v));
        }
        assert_eq!(t.times(TypeId(2)), &[ms(1), ms(3), ms(3), ms(5), ms(9)]);
        assert!(t.times(TypeId(0)).is_empty());
        assert!(t.times(TypeId(7)).is_empty());
    }

    #[test]
    fn a_full_list_drops_its_oldest_time_and_ignores_older_ones() {
        let mut t = Timeline::default();
        for v in 0..PER_TYPE as i64 {
            t.record(TypeId(0), ms(100 + v));
        }
        // Kept back to 100: complete from 101 on, maybe not from 100.
        assert!(!t.may_miss_since(TypeId(0), ms(101)));
        assert!(t.may_miss_since(TypeId(0), ms(100)));
        t.record(TypeId(0), ms(50)); // older than all 64 kept: dropped
        assert_eq!(t.times(TypeId(0))[0], ms(100));
        t.record(TypeId(0), ms(1000)); // newest: evicts 100
        let kept = t.times(TypeId(0));
        assert_eq!(kept.len(), PER_TYPE);
        assert_eq!((kept[0], kept[PER_TYPE - 1]), (ms(101), ms(1000)));
        // Another type is untouched by this one's evictions.
        t.record(TypeId(1), ms(1));
        assert_eq!(t.times(TypeId(1)), &[ms(1)]);
    }
}
