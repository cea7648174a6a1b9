//! THE feature function: events + `as_of` → a fixed-order, named feature
//! vector. Serving and training both call [`observe`]; nothing else computes
//! features, so the two cannot drift apart.
//!
//! Layout: one `count.<type>` per taxonomy type, in taxonomy order, then the
//! visitor-level features in [`VISITOR_FEATURES`] order. "log" means ln(1 + x).

use crate::domain::time::MILLIS_PER_HOUR;
use crate::domain::{Event, Millis, Taxonomy};

use super::aggregate::Aggregate;
use super::ladder::{self, Ladder};

/// Names of the features after the per-type counts, in vector order.
pub const VISITOR_FEATURES: [&str; 11] = [
    "milestone_rank",
    "ladder_points",
    "log_hours_since_last_event",
    "log_hours_since_last_milestone",
    "log_sessions",
    "log_events_in_current_session",
    "log_distinct_items_viewed",
    "log_net_cart_adds",
    "checkout_progress",
    "log_prior_purchases",
    "log_hours_since_first_event",
];

/// Durations are clamped to a year: beyond that "long ago" is all a model
/// can use, and it keeps "never" (which also takes this value) in range.
const MAX_HOURS: f64 = 24.0 * 365.0;

/// The feature names for a taxonomy, in vector order.
pub fn feature_names(taxonomy: &Taxonomy) -> Vec<String> {
    taxonomy
        .types()
        .iter()
        .map(|t| format!("count.{}", t.name))
        .chain(VISITOR_FEATURES.iter().map(|s| s.to_string()))
        .collect()
}

/// What observing a visitor yields.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    pub ladder: Ladder,
    /// In [`feature_names`] order.
    pub features: Vec<f64>,
    /// Events at or before `as_of`: the ones that counted.
    pub counted: usize,
}

/// Observes a visitor at `as_of`. `events` must be sorted by time
/// ([`crate::domain::event::sort_by_time`]); events later than `as_of` had
/// not happened yet at that moment and are left out.
///
/// It folds the events into an [`Aggregate`] anchored at `as_of` and reads
/// the features off it: the same code that serves stored visitors.
pub fn observe(taxonomy: &Taxonomy, events: &[Event], as_of: Millis) -> Observation {
    debug_assert!(events.is_sorted_by_key(|e| e.at));
    let counted = events.partition_point(|e| e.at <= as_of);
    let mut aggregate = Aggregate::new(taxonomy, as_of);
    for e in &events[..counted] {
        aggregate.apply(taxonomy, e);
    }
    let mut obs = aggregate.observe(taxonomy, as_of);
    obs.counted = counted;
    obs
}

/// Reads the feature vector and the ladder off an aggregate. The aggregate
/// must hold no event later than `as_of`.
pub(crate) fn from_aggregate(taxonomy: &Taxonomy, a: &Aggregate, as_of: Millis) -> Observation {
    let n_types = taxonomy.len();
    let roles = taxonomy.roles();
    let gap = taxonomy.session_gap_ms();
    let mut features = vec![0.0; n_types + VISITOR_FEATURES.len()];
    let (decayed, visitor) = features.split_at_mut(n_types);
    a.decayed_counts(taxonomy, as_of, decayed);
    let ladder = ladder::climb(taxonomy, decayed, a.highest_milestone(), a.stage());
    for (count, t) in decayed.iter_mut().zip(taxonomy.types()) {
        *count = count.min(t.cap).ln_1p();
    }

    let hours_since = |t: Option<Millis>| match t {
        Some(t) => (as_of.millis_since(t) / MILLIS_PER_HOUR).clamp(0.0, MAX_HOURS),
        None => MAX_HOURS,
    };
    let count = |role: Option<crate::domain::TypeId>| role.map_or(0, |id| a.count(id));
    let current_session = match a.last_session() {
        Some(s) if as_of.millis_since(s.end) <= gap => s.events,
        _ => 0,
    };
    visitor.copy_from_slice(&[
        f64::from(a.highest_milestone()),
        ladder.points,
        hours_since(a.last()).ln_1p(),
        hours_since(a.last_milestone()).ln_1p(),
        f64::from(a.sessions()).ln_1p(),
        f64::from(current_session).ln_1p(),
        (a.distinct_items_viewed() as f64).ln_1p(),
        (count(roles.cart_add).saturating_sub(count(roles.cart_remove)) as f64).ln_1p(),
        checkout_progress(taxonomy, a.highest_milestone()),
        (a.count(roles.purchase) as f64).ln_1p(),
        hours_since(a.first()).ln_1p(),
    ]);
    Observation {
        ladder,
        features,
        counted: 0,
    }
}

/// How far past the cart the visitor got toward purchase, 0 to 1: the share
/// of the milestones strictly between `cart_add` and `purchase` reached.
fn checkout_progress(taxonomy: &Taxonomy, highest: u8) -> f64 {
    let roles = taxonomy.roles();
    let Some(cart) = roles.cart_add.map(|id| taxonomy.get(id).milestone_rank) else {
        return 0.0;
    };
    let buy = taxonomy.get(roles.purchase).milestone_rank;
    if cart == 0 || buy <= cart + 1 {
        return 0.0;
    }
    let steps = f64::from(buy - cart - 1);
    (f64::from(highest.saturating_sub(cart)) / steps).clamp(0.0, 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Event;

    const T0: i64 = 1_767_225_600_000;
    const MIN: i64 = 60_000;

    fn assert_close(got: f64, want: f64) {
        assert!((got - want).abs() < 1e-12, "{got} vs {want}");
    }

    fn feature(t: &Taxonomy, o: &Observation, name: &str) -> f64 {
        let i = feature_names(t).iter().position(|n| n == name).unwrap();
        o.features[i]
    }

    fn ev(t: &Taxonomy, name: &str, minutes: i64, item: &str) -> Event {
        Event::new(
            t.resolve(name).unwrap(),
            Millis::from_unix_millis(T0 + minutes * MIN),
        )
        .with_item(item)
    }

    #[test]
    fn names_are_one_count_per_type_then_the_visitor_features() {
        let t = Taxonomy::builtin();
        let names = feature_names(&t);
        assert_eq!(names.len(), t.len() + VISITOR_FEATURES.len());
        assert_eq!(names[0], "count.page_view");
        assert_eq!(names[t.len()], "milestone_rank");
    }

    #[test]
    fn sessions_split_on_thirty_minutes_of_inactivity() {
        // Events at 0, 10, 50 (a 40-minute gap), 55 minutes.
        let t = Taxonomy::builtin();
        let evs: Vec<Event> = [0, 10, 50, 55]
            .iter()
            .map(|&m| ev(&t, "page_view", m, ""))
            .collect();
        let soon = observe(&t, &evs, Millis::from_unix_millis(T0 + 60 * MIN));
        let later = observe(&t, &evs, Millis::from_unix_millis(T0 + 120 * MIN));
        assert_close(feature(&t, &soon, "log_sessions"), 3f64.ln());
        // Two events in the session still open 5 minutes after the last.
        assert_close(
            feature(&t, &soon, "log_events_in_current_session"),
            3f64.ln(),
        );
        // 65 minutes after the last event, no session is open.
        assert_close(feature(&t, &later, "log_events_in_current_session"), 0.0);
    }

    #[test]
    fn visitor_features_match_hand_values() {
        let t = Taxonomy::builtin();
        let mut evs = vec![
            ev(&t, "view_item", 0, "a"),
            ev(&t, "view_item", 1, "a"),
            ev(&t, "view_item", 2, "b"),
            ev(&t, "select_item", 3, "c"),
            ev(&t, "add_to_cart", 4, "a"),
            ev(&t, "add_to_cart", 5, "b"),
            ev(&t, "add_to_cart", 6, "c"),
            ev(&t, "remove_from_cart", 7, "c"),
            ev(&t, "begin_checkout", 8, ""),
            ev(&t, "add_shipping_info", 9, ""),
            ev(&t, "purchase", 10, ""),
            ev(&t, "purchase", 11, ""),
        ];
        evs.sort_by_key(|e| e.at);
        // As of 48 hours after the first event.
        let o = observe(&t, &evs, Millis::from_unix_millis(T0 + 48 * 60 * MIN));
        // Items a and b viewed; c was only selected.
        assert_close(feature(&t, &o, "log_distinct_items_viewed"), 3f64.ln());
        // Three adds, one removal.
        assert_close(feature(&t, &o, "log_net_cart_adds"), 3f64.ln());
        assert_close(feature(&t, &o, "log_prior_purchases"), 3f64.ln());
        assert_close(feature(&t, &o, "log_hours_since_first_event"), 49f64.ln());
        assert_close(feature(&t, &o, "milestone_rank"), 7.0);
        // Purchase is past every checkout step.
        assert_close(feature(&t, &o, "checkout_progress"), 1.0);
    }

    #[test]
    fn checkout_progress_counts_the_steps_between_cart_and_purchase() {
        // add_to_cart is milestone 3, purchase 7: steps 4, 5, 6 are
        // begin_checkout, add_shipping_info, add_payment_info.
        let t = Taxonomy::builtin();
        let evs = vec![
            ev(&t, "add_to_cart", 0, ""),
            ev(&t, "add_shipping_info", 1, ""),
        ];
        let o = observe(&t, &evs, Millis::from_unix_millis(T0 + 2 * MIN));
        assert_close(feature(&t, &o, "checkout_progress"), 2.0 / 3.0);
    }

    #[test]
    fn counts_are_decayed_capped_and_log_scaled() {
        // view_item (half-life 7 days): one now and one 7 days ago weigh 1.5.
        let t = Taxonomy::builtin();
        let week = 7 * 24 * 60;
        let evs = vec![ev(&t, "view_item", 0, "a"), ev(&t, "view_item", week, "b")];
        let o = observe(&t, &evs, Millis::from_unix_millis(T0 + week * MIN));
        assert_close(feature(&t, &o, "count.view_item"), 2.5f64.ln());
    }

    #[test]
    fn a_visitor_with_no_events_has_durations_of_a_year() {
        let t = Taxonomy::builtin();
        let o = observe(&t, &[], Millis::from_unix_millis(T0));
        let year = (MAX_HOURS + 1.0).ln();
        assert_close(feature(&t, &o, "log_hours_since_last_event"), year);
        assert_close(feature(&t, &o, "log_hours_since_last_milestone"), year);
        assert_close(feature(&t, &o, "log_sessions"), 0.0);
        assert_eq!(o.counted, 0);
    }
}
