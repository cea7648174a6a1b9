//! A journey simulator: synthetic visitors whose funnel follows published
//! e-commerce figures (roughly 8–20% of sessions add to cart, 1–4% purchase,
//! returning visitors convert more). It feeds the bootstrap model, tests and
//! benchmarks until a shop's own events are at hand; nothing in the serving
//! path depends on it.

use std::io::Write;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::domain::event::sort_by_time;
use crate::domain::{Event, Millis, Taxonomy};

/// A simulated event, named as a tracker would send it.
#[derive(Debug, Clone, PartialEq)]
pub struct SimEvent {
    pub name: &'static str,
    pub at: Millis,
    pub item_id: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Journey {
    pub visitor_id: String,
    /// In time order.
    pub events: Vec<SimEvent>,
    /// Index of the first event of each session.
    pub session_starts: Vec<usize>,
}

impl Journey {
    /// The journey's events resolved through the taxonomy, in time order,
    /// as rung stores them. Names the taxonomy does not know are dropped.
    pub fn resolve(&self, taxonomy: &Taxonomy) -> Vec<Event> {
        let mut events: Vec<Event> = self
            .events
            .iter()
            .filter_map(|e| {
                taxonomy
                    .resolve(e.name)
                    .map(|kind| Event::new(kind, e.at).with_item(&e.item_id))
            })
            .collect();
        sort_by_time(&mut events);
        events
    }
}

#[derive(Debug, Clone)]
pub struct SimConfig {
    pub visitors: usize,
    pub seed: u64,
    /// First possible event.
    pub start: Millis,
    /// Visitors arrive uniformly over this many days.
    pub days: f64,
    /// Distinct items in the catalogue.
    pub catalogue: u32,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            visitors: 10_000,
            seed: 7,
            // 2026-01-01T00:00:00Z
            start: Millis::from_unix_millis(1_767_225_600_000),
            days: 60.0,
            catalogue: 2_000,
        }
    }
}

const MINUTE: f64 = 60_000.0;
const DAY: f64 = 86_400_000.0;

/// Simulates `cfg.visitors` journeys; the same config gives the same journeys.
pub fn simulate(cfg: &SimConfig) -> Vec<Journey> {
    let mut rng = SmallRng::seed_from_u64(cfg.seed);
    (0..cfg.visitors)
        .map(|i| journey(&mut rng, cfg, format!("sim-{i:07}")))
        .collect()
}

/// One visitor: a latent intent drives every step's odds; sessions after the
/// first carry memory (a cart left behind) and convert more.
fn journey(rng: &mut SmallRng, cfg: &SimConfig, visitor_id: String) -> Journey {
    // Most visitors browse, a few come to buy: intent skews low.
    let intent: f64 = rng.gen::<f64>().powi(3);
    let mut sessions = 1;
    while sessions < 12 && rng.gen_bool(0.30 + 0.35 * intent) {
        sessions += 1;
    }
    let mut t = cfg.start.as_unix_millis() as f64 + rng.gen::<f64>() * cfg.days * DAY;
    let mut s = Journey {
        visitor_id,
        events: Vec::new(),
        session_starts: Vec::new(),
    };
    let favourites: Vec<u32> = (0..3).map(|_| rng.gen_range(0..cfg.catalogue)).collect();
    let mut cart_waiting = false;
    let mut bought_before = false;
    for n in 0..sessions {
        s.session_starts.push(s.events.len());
        let returning = n > 0;
        let mut sess = Session {
            rng: &mut *rng,
            t,
            events: &mut s.events,
        };
        // Returning visitors with a cart waiting often come back for it.
        let lift = if returning { 1.6 } else { 1.0 } * if bought_before { 1.3 } else { 1.0 };
        sess.push("page_view", "");
        if sess.chance(0.15) {
            sess.push("view_promotion", "");
            if sess.chance(0.3) {
                sess.push("select_promotion", "");
            }
        }
        if returning && sess.chance(0.4) {
            sess.push("login", "");
        }
        if sess.chance(0.35) {
            sess.push("search", "");
        }
        if sess.chance(0.55) {
            sess.push("view_item_list", "");
            if sess.chance(0.3) {
                sess.push("filter_use", "");
            }
        }
        let views = 1 + sess.poisson(1.5 + 5.0 * intent);
        let mut last_item = String::new();
        for _ in 0..views {
            let item = if returning && sess.chance(0.4) {
                favourites[sess.rng.gen_range(0..favourites.len())]
            } else {
                sess.rng.gen_range(0..cfg.catalogue)
            };
            last_item = format!("item-{item}");
            if sess.chance(0.3) {
                sess.push("select_item", &last_item);
            }
            sess.push("view_item", &last_item);
            if sess.chance(0.10 + 0.30 * intent) {
                sess.push("review_read", &last_item);
            }
            if sess.chance(0.05 + 0.20 * intent) {
                sess.push("size_guide_view", &last_item);
            }
            if sess.chance(0.03 + 0.10 * intent) {
                sess.push("add_to_wishlist", &last_item);
            }
        }
        if sess.chance(0.06) {
            sess.push("video_progress", &last_item);
            if sess.chance(0.4) {
                sess.push("video_complete", &last_item);
            }
        }
        if !returning && sess.chance(0.02 + 0.05 * intent) {
            sess.push("newsletter_signup", "");
        }
        if sess.chance(0.01 + 0.04 * intent) {
            sess.push("chat_start", "");
        }
        let p_cart = ((0.05 + 0.22 * intent) * lift).min(0.9);
        let carted = if cart_waiting && sess.chance(0.5) {
            sess.push("view_cart", "");
            true
        } else if sess.chance(p_cart) {
            sess.push("add_to_cart", &last_item);
            if sess.chance(0.15) {
                sess.push("remove_from_cart", &last_item);
                false
            } else {
                if sess.chance(0.3) {
                    sess.push("add_to_cart", &last_item);
                }
                if sess.chance(0.6) {
                    sess.push("view_cart", "");
                }
                true
            }
        } else {
            false
        };
        cart_waiting = carted && !cart_waiting;
        if carted && sess.chance(((0.14 + 0.36 * intent) * lift).min(0.95)) {
            sess.push("begin_checkout", "");
            if sess.chance(0.10) {
                sess.push("coupon_apply", "");
            }
            if sess.chance(0.75) {
                sess.push("add_shipping_info", "");
                if sess.chance(0.8) {
                    sess.push("add_payment_info", "");
                    if sess.chance(0.85) {
                        sess.push("purchase", &last_item);
                        bought_before = true;
                        cart_waiting = false;
                        if sess.chance(0.03) {
                            sess.push("refund", &last_item);
                        }
                    }
                }
            }
        }
        if sess.chance(0.03) {
            sess.push("share", &last_item);
        }
        // The next visit comes hours to weeks later.
        t = sess.t + 45.0 * MINUTE + sess.exponential(4.0 * DAY);
    }
    s
}

struct Session<'a> {
    rng: &'a mut SmallRng,
    t: f64,
    events: &'a mut Vec<SimEvent>,
}

impl Session<'_> {
    fn push(&mut self, name: &'static str, item: &str) {
        // 5 to 90 seconds between clicks.
        self.t += 5_000.0 + self.rng.gen::<f64>() * 85_000.0;
        self.events.push(SimEvent {
            name,
            at: Millis::from_unix_millis(self.t as i64),
            item_id: item.to_string(),
        });
    }

    fn chance(&mut self, p: f64) -> bool {
        self.rng.gen_bool(p.clamp(0.0, 1.0))
    }

    fn poisson(&mut self, mean: f64) -> u32 {
        // Knuth's method: fine for the small means used here.
        let limit = (-mean).exp();
        let mut k = 0;
        let mut p = self.rng.gen::<f64>();
        while p > limit && k < 100 {
            k += 1;
            p *= self.rng.gen::<f64>();
        }
        k
    }

    fn exponential(&mut self, mean: f64) -> f64 {
        -mean * (1.0 - self.rng.gen::<f64>()).ln()
    }
}

/// Writes journeys as an event log in rung's own CSV layout
/// (`visitor_id,time,type,item_id,value,event_id`, time in Unix ms), the
/// layout `rung train` reads by default.
pub fn write_csv(journeys: &[Journey], out: impl std::io::Write) -> std::io::Result<()> {
    let mut w = std::io::BufWriter::new(out);
    writeln!(w, "visitor_id,time,type,item_id,value,event_id")?;
    for j in journeys {
        for (k, e) in j.events.iter().enumerate() {
            writeln!(
                w,
                "{},{},{},{},,{}-{k}",
                j.visitor_id,
                e.at.as_unix_millis(),
                e.name,
                e.item_id,
                j.visitor_id
            )?;
        }
    }
    w.flush()
}

/// Session-level funnel figures, to compare with published ones.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FunnelFigures {
    pub sessions: usize,
    pub add_to_cart_rate: f64,
    pub purchase_rate: f64,
    pub new_visitor_purchase_rate: f64,
    pub returning_visitor_purchase_rate: f64,
}

pub fn funnel_figures(journeys: &[Journey]) -> FunnelFigures {
    let (mut sessions, mut carts, mut buys) = (0usize, 0usize, 0usize);
    let (mut new_sessions, mut new_buys, mut ret_sessions, mut ret_buys) = (0, 0, 0, 0);
    for j in journeys {
        for (n, &start) in j.session_starts.iter().enumerate() {
            let end = j
                .session_starts
                .get(n + 1)
                .copied()
                .unwrap_or(j.events.len());
            let evs = &j.events[start..end];
            let cart = evs.iter().any(|e| e.name == "add_to_cart");
            let buy = evs.iter().any(|e| e.name == "purchase");
            sessions += 1;
            carts += usize::from(cart);
            buys += usize::from(buy);
            if n == 0 {
                new_sessions += 1;
                new_buys += usize::from(buy);
            } else {
                ret_sessions += 1;
                ret_buys += usize::from(buy);
            }
        }
    }
    let rate = |a: usize, b: usize| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    FunnelFigures {
        sessions,
        add_to_cart_rate: rate(carts, sessions),
        purchase_rate: rate(buys, sessions),
        new_visitor_purchase_rate: rate(new_buys, new_sessions),
        returning_visitor_purchase_rate: rate(ret_buys, ret_sessions),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn funnel_follows_published_ranges() {
        let journeys = simulate(&SimConfig {
            visitors: 20_000,
            ..SimConfig::default()
        });
        let f = funnel_figures(&journeys);
        assert!(
            (0.08..=0.20).contains(&f.add_to_cart_rate),
            "add-to-cart rate {:.3}",
            f.add_to_cart_rate
        );
        eprintln!("{f:?}");
        assert!(
            (0.01..=0.04).contains(&f.purchase_rate),
            "purchase rate {:.4}",
            f.purchase_rate
        );
        assert!(
            f.returning_visitor_purchase_rate > f.new_visitor_purchase_rate,
            "{f:?}"
        );
    }

    #[test]
    fn same_seed_gives_same_journeys() {
        let cfg = SimConfig {
            visitors: 50,
            ..SimConfig::default()
        };
        assert_eq!(simulate(&cfg), simulate(&cfg));
    }

    #[test]
    fn events_are_in_time_order() {
        for j in simulate(&SimConfig {
            visitors: 200,
            ..SimConfig::default()
        }) {
            assert!(j.events.is_sorted_by_key(|e| e.at), "{}", j.visitor_id);
        }
    }
}
