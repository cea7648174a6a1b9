//! Point-in-time examples: features from what had happened by a cut-off,
//! label from what happened after it. Features come from the same
//! [`crate::scoring::observe`] the server calls, at `as_of` = the last
//! instant before the cut-off, so no event at or after the cut-off (a
//! purchase least of all) can reach its own example's features.

use ndarray::Array2;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::domain::{Event, Millis, Taxonomy};
use crate::scoring::observe;

/// A design matrix with labels and what a baseline needs.
#[derive(Debug, Clone)]
pub struct Examples {
    /// One row per example, columns in feature-name order.
    pub x: Array2<f64>,
    /// Purchased within the horizon after the cut-off.
    pub y: Vec<bool>,
    /// The ladder score at the cut-off: the ladder-only baseline's predictor.
    pub ladder_score: Vec<f64>,
    /// Features are as of this instant: the last millisecond before the
    /// cut-off. The label window is (as_of, as_of + horizon].
    pub as_of: Vec<Millis>,
    /// Index of the visitor each example comes from.
    pub visitor: Vec<usize>,
}

/// Where to cut each visitor's history.
#[derive(Debug, Clone, PartialEq)]
pub enum Cutoffs {
    /// One cut-off for everyone.
    Fixed(Millis),
    /// After the last event of each session.
    SessionEnd,
    /// After a random event of each session: a page view mid-journey, which
    /// is what the server scores.
    PageView { seed: u64 },
}

impl Examples {
    pub fn len(&self) -> usize {
        self.y.len()
    }

    pub fn is_empty(&self) -> bool {
        self.y.is_empty()
    }

    pub fn positives(&self) -> usize {
        self.y.iter().filter(|&&b| b).count()
    }

    /// The rows for which `keep` holds, in order.
    pub fn select(&self, keep: impl Fn(usize) -> bool) -> Examples {
        let rows: Vec<usize> = (0..self.len()).filter(|&i| keep(i)).collect();
        Examples {
            x: self.x.select(ndarray::Axis(0), &rows),
            y: rows.iter().map(|&i| self.y[i]).collect(),
            ladder_score: rows.iter().map(|&i| self.ladder_score[i]).collect(),
            as_of: rows.iter().map(|&i| self.as_of[i]).collect(),
            visitor: rows.iter().map(|&i| self.visitor[i]).collect(),
        }
    }
}

/// Builds examples for every visitor (events sorted by time). An example
/// whose label window reaches past `data_end` is left out: what happened
/// after the data stops is unknown, not "no purchase".
pub fn build(
    taxonomy: &Taxonomy,
    visitors: &[(String, Vec<Event>)],
    cutoffs: &Cutoffs,
    horizon_ms: i64,
    data_end: Millis,
    progress: &dyn Fn(u64),
) -> Examples {
    let mut rng = match cutoffs {
        Cutoffs::PageView { seed } => SmallRng::seed_from_u64(*seed),
        _ => SmallRng::seed_from_u64(0),
    };
    let n_features = crate::scoring::feature_names(taxonomy).len();
    let purchase = taxonomy.roles().purchase;
    let gap = taxonomy.session_gap_ms();
    let mut data = Vec::new();
    let (mut y, mut ladder_score, mut as_ofs, mut visitor) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (vi, (_, events)) in visitors.iter().enumerate() {
        if vi % 1024 == 0 {
            progress(vi as u64);
        }
        debug_assert!(events.is_sorted_by_key(|e| e.at));
        for as_of in cut_points(events, cutoffs, gap, &mut rng) {
            let horizon_end = as_of.saturating_add_millis(horizon_ms);
            if horizon_end > data_end {
                continue;
            }
            let obs = observe(taxonomy, events, as_of);
            let label = events[obs.counted..]
                .iter()
                .take_while(|e| e.at <= horizon_end)
                .any(|e| e.kind == purchase);
            data.extend_from_slice(&obs.features);
            y.push(label);
            ladder_score.push(obs.ladder.score);
            as_ofs.push(as_of);
            visitor.push(vi);
        }
    }
    progress(visitors.len() as u64);
    let rows = y.len();
    let x = Array2::from_shape_vec((rows, n_features), data)
        .expect("every observation has one value per feature");
    Examples {
        x,
        y,
        ladder_score,
        as_of: as_ofs,
        visitor,
    }
}

/// The `as_of` instants (last millisecond before each cut-off) for one visitor.
fn cut_points(events: &[Event], cutoffs: &Cutoffs, gap: f64, rng: &mut SmallRng) -> Vec<Millis> {
    match cutoffs {
        Cutoffs::Fixed(cut) => {
            let as_of = cut.saturating_add_millis(-1);
            if events.first().is_some_and(|e| e.at <= as_of) {
                vec![as_of]
            } else {
                Vec::new()
            }
        }
        Cutoffs::SessionEnd | Cutoffs::PageView { .. } => {
            let mut out = Vec::new();
            let mut start = 0;
            for i in 0..events.len() {
                let ends =
                    i + 1 == events.len() || events[i + 1].at.millis_since(events[i].at) > gap;
                if ends {
                    let pick = match cutoffs {
                        Cutoffs::PageView { .. } => rng.gen_range(start..=i),
                        _ => i,
                    };
                    // Events at the same instant as the chosen one are part of it.
                    out.push(events[pick].at);
                    start = i + 1;
                }
            }
            out
        }
    }
}

/// The latest event time in a log: where knowledge of the future stops.
pub fn data_end(visitors: &[(String, Vec<Event>)]) -> Millis {
    visitors
        .iter()
        .filter_map(|(_, e)| e.last().map(|e| e.at))
        .max()
        .unwrap_or(Millis::from_unix_millis(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_767_225_600_000;
    const MIN: i64 = 60_000;
    const DAY: i64 = 86_400_000;

    fn ev(t: &Taxonomy, name: &str, minutes: i64) -> Event {
        Event::new(
            t.resolve(name).unwrap(),
            Millis::from_unix_millis(T0 + minutes * MIN),
        )
    }

    fn visitor(events: Vec<Event>) -> Vec<(String, Vec<Event>)> {
        vec![("v".to_string(), events)]
    }

    #[test]
    fn session_end_cut_offs_label_the_purchase_that_follows() {
        // Session 1 at minutes 0-5 (cart), session 2 two days later buys.
        let t = Taxonomy::builtin();
        let v = visitor(vec![
            ev(&t, "view_item", 0),
            ev(&t, "add_to_cart", 5),
            ev(&t, "view_cart", 2 * 1440),
            ev(&t, "purchase", 2 * 1440 + 3),
        ]);
        let end = Millis::from_unix_millis(T0 + 30 * DAY);
        let ex = build(&t, &v, &Cutoffs::SessionEnd, 7 * DAY, end, &|_| {});
        assert_eq!(ex.len(), 2);
        assert_eq!(ex.as_of[0], Millis::from_unix_millis(T0 + 5 * MIN));
        assert_eq!(ex.y, [true, false]);
    }

    #[test]
    fn a_purchase_never_reaches_its_own_examples_features() {
        // Cut at a fixed instant exactly when the purchase happens: the
        // features must equal those of the history without the purchase
        // and everything after it.
        let t = Taxonomy::builtin();
        let history = vec![ev(&t, "view_item", 0), ev(&t, "add_to_cart", 10)];
        let mut full = history.clone();
        full.push(ev(&t, "purchase", 60));
        full.push(ev(&t, "purchase", 61));
        let cut = Millis::from_unix_millis(T0 + 60 * MIN);
        let end = Millis::from_unix_millis(T0 + 30 * DAY);
        let with = build(
            &t,
            &visitor(full),
            &Cutoffs::Fixed(cut),
            7 * DAY,
            end,
            &|_| {},
        );
        let without = build(
            &t,
            &visitor(history),
            &Cutoffs::Fixed(cut),
            7 * DAY,
            end,
            &|_| {},
        );
        assert_eq!(with.x, without.x);
        assert_eq!(with.y, [true]);
        assert_eq!(without.y, [false]);
    }

    #[test]
    fn examples_whose_label_window_passes_the_data_end_are_left_out() {
        let t = Taxonomy::builtin();
        let v = visitor(vec![ev(&t, "view_item", 0), ev(&t, "view_item", 3 * 1440)]);
        // Data ends 5 days after the start: both sessions' 7-day windows
        // pass it; both 1-day windows fit.
        let end = Millis::from_unix_millis(T0 + 5 * DAY);
        assert_eq!(
            build(&t, &v, &Cutoffs::SessionEnd, 7 * DAY, end, &|_| {}).len(),
            0
        );
        assert_eq!(
            build(&t, &v, &Cutoffs::SessionEnd, DAY, end, &|_| {}).len(),
            2
        );
    }

    #[test]
    fn page_view_cut_offs_fall_inside_each_session() {
        let t = Taxonomy::builtin();
        let v = visitor((0..10).map(|m| ev(&t, "page_view", m)).collect());
        let end = Millis::from_unix_millis(T0 + 30 * DAY);
        let ex = build(&t, &v, &Cutoffs::PageView { seed: 1 }, DAY, end, &|_| {});
        assert_eq!(ex.len(), 1);
        let at = ex.as_of[0].as_unix_millis();
        assert!((T0..=T0 + 9 * MIN).contains(&at));
    }

    #[test]
    fn a_fixed_cut_off_skips_visitors_who_had_not_arrived() {
        let t = Taxonomy::builtin();
        let v = visitor(vec![ev(&t, "view_item", 100)]);
        let end = Millis::from_unix_millis(T0 + 30 * DAY);
        let cut = Millis::from_unix_millis(T0 + 50 * MIN);
        assert!(build(&t, &v, &Cutoffs::Fixed(cut), DAY, end, &|_| {}).is_empty());
    }
}
