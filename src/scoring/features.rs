//! THE feature function: events + `as_of` → a fixed-order, named feature
//! vector. Serving and training both call [`observe`]; nothing else computes
//! features, so the two cannot drift apart.
//!
//! Layout: one `count.<type>` per taxonomy type, in taxonomy order, then the
//! visitor-level features in [`VISITOR_FEATURES`] order. "log" means ln(1 + x).

use crate::domain::time::MILLIS_PER_HOUR;
use crate::domain::{Event, Millis, Stage, Taxonomy};

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

/// What one pass over a visitor's events yields.
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
pub fn observe(taxonomy: &Taxonomy, events: &[Event], as_of: Millis) -> Observation {
    debug_assert!(events.is_sorted_by_key(|e| e.at));
    let counted = events.partition_point(|e| e.at <= as_of);
    let events = &events[..counted];
    let n_types = taxonomy.len();
    let roles = taxonomy.roles();
    let gap = taxonomy.session_gap_ms();

    // Per-type decayed counts live in the front of the feature vector until
    // they are capped and log-scaled at the end.
    let mut features = vec![0.0; n_types + VISITOR_FEATURES.len()];
    let mut highest_milestone = 0u8;
    let mut stage = Stage::Awareness;
    let mut last_milestone: Option<Millis> = None;
    let mut sessions = 0u32;
    let mut in_session = 0u32;
    let mut prev: Option<Millis> = None;
    let (mut cart_adds, mut cart_removes, mut purchases) = (0u32, 0u32, 0u32);
    let mut items: Vec<crate::domain::ItemKey> = Vec::new();

    for e in events {
        let t = taxonomy.get(e.kind);
        features[e.kind.index()] += t.decay(as_of.millis_since(e.at));
        stage = stage.max(t.stage);
        if t.milestone_rank > 0 {
            highest_milestone = highest_milestone.max(t.milestone_rank);
            last_milestone = Some(e.at);
        }
        match prev {
            Some(p) if e.at.millis_since(p) <= gap => in_session += 1,
            _ => {
                sessions += 1;
                in_session = 1;
            }
        }
        prev = Some(e.at);
        if Some(e.kind) == roles.cart_add {
            cart_adds += 1;
        } else if Some(e.kind) == roles.cart_remove {
            cart_removes += 1;
        }
        if e.kind == roles.purchase {
            purchases += 1;
        }
        if Some(e.kind) == roles.item_view {
            if let Some(item) = e.item {
                items.push(item);
            }
        }
    }
    items.sort_unstable();
    items.dedup();

    let (decayed, visitor) = features.split_at_mut(n_types);
    let ladder = ladder::climb(taxonomy, decayed, highest_milestone, stage);
    for (count, t) in decayed.iter_mut().zip(taxonomy.types()) {
        *count = count.min(t.cap).ln_1p();
    }

    let hours_since = |t: Option<Millis>| match t {
        Some(t) => (as_of.millis_since(t) / MILLIS_PER_HOUR).clamp(0.0, MAX_HOURS),
        None => MAX_HOURS,
    };
    let last = events.last().map(|e| e.at);
    let current_session = match last {
        Some(l) if as_of.millis_since(l) <= gap => in_session,
        _ => 0,
    };
    visitor.copy_from_slice(&[
        f64::from(highest_milestone),
        ladder.points,
        hours_since(last).ln_1p(),
        hours_since(last_milestone).ln_1p(),
        f64::from(sessions).ln_1p(),
        f64::from(current_session).ln_1p(),
        (items.len() as f64).ln_1p(),
        f64::from(cart_adds.saturating_sub(cart_removes)).ln_1p(),
        checkout_progress(taxonomy, highest_milestone),
        f64::from(purchases).ln_1p(),
        hours_since(events.first().map(|e| e.at)).ln_1p(),
    ]);
    Observation {
        ladder,
        features,
        counted,
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
