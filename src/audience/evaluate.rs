//! Evaluating a definition against one visitor at a moment. Pure, no
//! allocation: it runs over every stored visitor a query reaches. Inside
//! `and`/`or`, clauses that need the model run last and only if still
//! needed.

use crate::domain::{Millis, Stage, TypeId};
use crate::scoring::Band;

use super::definition::{Clause, Definition, Node, NodeId, Recency};

/// The model's and the ladder's view of a visitor.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scored {
    pub probability: f64,
    /// 0–100.
    pub ladder_score: f64,
    pub band: Band,
}

/// What evaluation may ask about one visitor at [`Subject::as_of`].
pub trait Subject {
    fn as_of(&self) -> Millis;
    fn first_seen(&self) -> Option<Millis>;
    fn last_seen(&self) -> Option<Millis>;
    fn sessions(&self) -> u32;
    fn milestone_rank(&self) -> u8;
    fn stage(&self) -> Stage;
    /// Events of this type ever.
    fn total(&self, t: TypeId) -> u64;
    /// Times of this type's most recent events, ascending, none after as_of.
    fn times(&self, t: TypeId) -> &[Millis];
    /// Costly (the model): called only when a clause needs it; the
    /// implementer memoizes it.
    fn scored(&mut self) -> Scored;
}

/// `None`: not a member. `Some(node)`: a member, and the clause that decided
/// it: for an `or`, its first alternative that matched (recursively); for
/// any other clause, that clause.
pub fn evaluate(def: &Definition, s: &mut impl Subject) -> Option<NodeId> {
    matched(def.root(), s)
}

fn matched(n: &Node, s: &mut impl Subject) -> Option<NodeId> {
    match &n.clause {
        // The first alternative in the order written, so the answer does not
        // depend on which ones need the model.
        Clause::Or(children) => {
            if !n.needs_score || children.iter().all(|c| c.needs_score) {
                return children.iter().find_map(|c| matched(c, s));
            }
            // A cheap alternative that holds settles membership; the model
            // is asked only for the alternatives written before it.
            let cheap = children.iter().position(|c| !c.needs_score && holds(c, s));
            let end = cheap.unwrap_or(children.len());
            children[..end]
                .iter()
                .filter(|c| c.needs_score)
                .find_map(|c| matched(c, s))
                .or_else(|| cheap.and_then(|i| matched(&children[i], s)))
        }
        _ => holds(n, s).then_some(n.id),
    }
}

fn holds(n: &Node, s: &mut impl Subject) -> bool {
    let as_of = s.as_of();
    match &n.clause {
        Clause::And(children) => {
            children
                .iter()
                .filter(|c| !c.needs_score)
                .all(|c| holds(c, s))
                && children
                    .iter()
                    .filter(|c| c.needs_score)
                    .all(|c| holds(c, s))
        }
        Clause::Or(children) => {
            children
                .iter()
                .filter(|c| !c.needs_score)
                .any(|c| holds(c, s))
                || children
                    .iter()
                    .filter(|c| c.needs_score)
                    .any(|c| holds(c, s))
        }
        Clause::Not(inner) => !holds(inner, s),
        Clause::Probability(r) => r.contains(s.scored().probability),
        Clause::LadderScore(r) => r.contains(s.scored().ladder_score),
        Clause::Band(bands) => bands.contains(&s.scored().band),
        Clause::Sessions(r) => r.contains(f64::from(s.sessions())),
        Clause::Stage(stages) => stages.contains(&s.stage()),
        Clause::Reached(rank) => s.milestone_rank() >= *rank,
        Clause::NotReached(rank) => s.milestone_rank() < *rank,
        Clause::Count {
            types,
            within,
            at_least,
            at_most,
        } => {
            let n: u64 = match within {
                None => types.iter().map(|t| s.total(*t)).sum(),
                Some(w) => {
                    let from = as_of.saturating_add_millis(-w);
                    types
                        .iter()
                        .map(|t| in_range(s.times(*t), from, as_of))
                        .sum()
                }
            };
            at_least.is_none_or(|lo| n >= lo) && at_most.is_none_or(|hi| n <= hi)
        }
        Clause::AbsentAfter {
            anchor,
            anchor_within,
            absent,
            within,
        } => {
            let Some(a) = anchor
                .iter()
                .filter_map(|t| s.times(*t).last().copied())
                .max()
            else {
                return false;
            };
            if anchor_within.is_some_and(|w| a < as_of.saturating_add_millis(-w)) {
                return false;
            }
            let until = match within {
                None => as_of,
                Some(d) => {
                    let end = a.saturating_add_millis(*d);
                    if end > as_of {
                        return false;
                    }
                    end
                }
            };
            absent.iter().all(|t| in_range(s.times(*t), a, until) == 0)
        }
        Clause::FirstSeen(r) => seen(s.first_seen(), r, as_of),
        Clause::LastSeen(r) => seen(s.last_seen(), r, as_of),
    }
}

/// Times t with from ≤ t ≤ to in an ascending slice.
fn in_range(times: &[Millis], from: Millis, to: Millis) -> u64 {
    let lo = times.partition_point(|t| *t < from);
    let hi = times.partition_point(|t| *t <= to);
    hi.saturating_sub(lo) as u64
}

fn seen(t: Option<Millis>, r: &Recency, as_of: Millis) -> bool {
    let Some(t) = t else {
        return false;
    };
    r.within
        .is_none_or(|w| t >= as_of.saturating_add_millis(-w))
        && r.older_than
            .is_none_or(|o| t < as_of.saturating_add_millis(-o))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audience::definition::LanguageLimits;
    use crate::domain::Taxonomy;
    use proptest::prelude::*;

    const H: i64 = 3_600_000;
    const D: i64 = 24 * H;
    const NOW: i64 = 1_767_225_600_000;
    const LIMITS: LanguageLimits = LanguageLimits {
        max_window_ms: 90 * D,
        max_windowed_count: 64,
    };

    /// A visitor made of (type, ms before NOW) events and a fixed score.
    #[derive(Debug, Clone)]
    struct Fake {
        times: Vec<Vec<Millis>>,
        sessions: u32,
        rank: u8,
        stage: Stage,
        scored: Scored,
        scored_calls: u32,
    }

    impl Fake {
        fn new(t: &Taxonomy, events: &[(&str, i64)]) -> Fake {
            let mut times = vec![Vec::new(); t.len()];
            let mut rank = 0;
            let mut stage = Stage::Awareness;
            for (name, ago) in events {
                let id = t.resolve(name).unwrap();
                times[id.index()].push(Millis::from_unix_millis(NOW - ago));
                rank = rank.max(t.get(id).milestone_rank);
                stage = stage.max(t.get(id).stage);
            }
            for v in &mut times {
                v.sort();
            }
            Fake {
                times,
                sessions: 1,
                rank,
                stage,
                scored: Scored {
                    probability: 0.3,
                    ladder_score: 40.0,
                    band: Band::Medium,
                },
                scored_calls: 0,
            }
        }
    }

    impl Subject for Fake {
        fn as_of(&self) -> Millis {
            Millis::from_unix_millis(NOW)
        }
        fn first_seen(&self) -> Option<Millis> {
            self.times.iter().filter_map(|v| v.first()).min().copied()
        }
        fn last_seen(&self) -> Option<Millis> {
            self.times.iter().filter_map(|v| v.last()).max().copied()
        }
        fn sessions(&self) -> u32 {
            self.sessions
        }
        fn milestone_rank(&self) -> u8 {
            self.rank
        }
        fn stage(&self) -> Stage {
            self.stage
        }
        fn total(&self, t: TypeId) -> u64 {
            self.times[t.index()].len() as u64
        }
        fn times(&self, t: TypeId) -> &[Millis] {
            &self.times[t.index()]
        }
        fn scored(&mut self) -> Scored {
            self.scored_calls += 1;
            self.scored
        }
    }

    fn check(def: &str, events: &[(&str, i64)]) -> Option<NodeId> {
        let t = Taxonomy::builtin();
        let d = Definition::parse(def, &t, &LIMITS).unwrap();
        evaluate(&d, &mut Fake::new(&t, events))
    }

    fn member(def: &str, events: &[(&str, i64)]) -> bool {
        check(def, events).is_some()
    }

    #[test]
    fn windows_include_both_edges() {
        let week = r#"{"count":{"event":"add_to_cart","within":"7d","at_least":1}}"#;
        assert!(member(week, &[("add_to_cart", 7 * D)]));
        assert!(!member(week, &[("add_to_cart", 7 * D + 1)]));
        assert!(member(week, &[("add_to_cart", 0)]));
        let twice = r#"{"count":{"event":["add_to_wishlist","add_to_cart"],"within":"30d","at_least":2,"at_most":2}}"#;
        assert!(member(
            twice,
            &[("add_to_wishlist", D), ("add_to_cart", 2 * D)]
        ));
        assert!(!member(
            twice,
            &[("add_to_wishlist", D), ("add_to_cart", 31 * D)]
        ));
        assert!(!member(
            twice,
            &[
                ("add_to_wishlist", D),
                ("add_to_cart", 2 * D),
                ("add_to_cart", 3 * D)
            ]
        ));
        // Without a window, totals count.
        assert!(member(
            r#"{"count":{"event":"purchase","at_least":1}}"#,
            &[("purchase", 80 * D)]
        ));
    }

    #[test]
    fn absence_since_the_latest_anchor() {
        let abandon = builtins_json("cart_abandoners");
        // Carted 2 days ago, bought 1 day ago: not abandoned.
        assert!(!member(
            &abandon,
            &[("add_to_cart", 2 * D), ("purchase", D)]
        ));
        // Bought 3 days ago, carted again yesterday: abandoned.
        assert!(member(&abandon, &[("purchase", 3 * D), ("add_to_cart", D)]));
        // A purchase at the very moment of the cart counts as after it.
        assert!(!member(&abandon, &[("add_to_cart", D), ("purchase", D)]));
        // The anchor window: 7 days, inclusive.
        assert!(member(&abandon, &[("add_to_cart", 7 * D)]));
        assert!(!member(&abandon, &[("add_to_cart", 7 * D + 1)]));
    }

    #[test]
    fn absence_within_a_time_waits_for_the_time_to_pass() {
        let leads = builtins_json("leads_without_purchase");
        // The 24 hours after the lead have passed exactly: a member.
        assert!(member(&leads, &[("generate_lead", D)]));
        // Not yet passed.
        assert!(!member(&leads, &[("newsletter_signup", D - 1)]));
        // Bought 24 hours after to the millisecond: inside the window.
        assert!(!member(
            &leads,
            &[("generate_lead", 3 * D), ("purchase", 2 * D)]
        ));
        // Bought later than 24 hours after: still "no purchase within 24 hours".
        assert!(member(
            &leads,
            &[("generate_lead", 3 * D), ("purchase", 2 * D - 1)]
        ));
        // The latest of either anchor type counts.
        assert!(!member(
            &leads,
            &[("generate_lead", 5 * D), ("newsletter_signup", H)]
        ));
    }

    #[test]
    fn or_reports_the_first_alternative_that_matched() {
        let def = r#"{"or":[{"band":"high"},{"reached":"purchase"},{"reached":"add_to_cart"}]}"#;
        // Band is medium; purchase reached: the second alternative (node 2).
        assert_eq!(check(def, &[("purchase", D)]), Some(2));
        assert_eq!(check(def, &[("add_to_cart", D)]), Some(3));
        assert_eq!(check(def, &[("view_item", D)]), None);
        // Nested: an and inside an or reports the and.
        let nested = r#"{"or":[{"and":[{"reached":"purchase"},{"sessions":{"gte":1}}]},{"reached":"view_item"}]}"#;
        assert_eq!(check(nested, &[("purchase", D)]), Some(1));
        // Not an or at the root: the root.
        assert_eq!(
            check(r#"{"reached":"purchase"}"#, &[("purchase", D)]),
            Some(0)
        );
    }

    #[test]
    fn the_model_is_asked_only_when_a_clause_needs_it() {
        let t = Taxonomy::builtin();
        let d = Definition::parse(
            r#"{"and":[{"probability":{"gte":0.2}},{"reached":"purchase"}]}"#,
            &t,
            &LIMITS,
        )
        .unwrap();
        let mut browser = Fake::new(&t, &[("view_item", D)]);
        assert_eq!(evaluate(&d, &mut browser), None);
        assert_eq!(browser.scored_calls, 0, "cheap clause decided first");
        let mut buyer = Fake::new(&t, &[("purchase", D)]);
        assert_eq!(evaluate(&d, &mut buyer), Some(0));
        assert_eq!(buyer.scored_calls, 1);
    }

    #[test]
    fn scores_bands_stages_sessions_and_recency() {
        let ev = [("view_item", 40 * D), ("add_to_cart", 2 * D)];
        assert!(member(r#"{"probability":{"gt":0.2,"lte":0.3}}"#, &ev));
        assert!(!member(r#"{"probability":{"gt":0.3}}"#, &ev));
        assert!(member(r#"{"ladder_score":{"gte":40}}"#, &ev));
        assert!(member(r#"{"band":["medium","high"]}"#, &ev));
        assert!(member(r#"{"stage":"intent"}"#, &ev));
        assert!(member(r#"{"sessions":{"lt":2}}"#, &ev));
        assert!(member(r#"{"not_reached":"begin_checkout"}"#, &ev));
        assert!(member(r#"{"last_seen":{"within":"2d"}}"#, &ev));
        assert!(!member(r#"{"last_seen":{"within":"47h"}}"#, &ev));
        assert!(member(r#"{"first_seen":{"older_than":"39d"}}"#, &ev));
        assert!(!member(r#"{"first_seen":{"older_than":"40d"}}"#, &ev));
        assert!(!member(r#"{"last_seen":{"within":"7d"}}"#, &[]));
        assert!(member(r#"{"not":{"last_seen":{"within":"7d"}}}"#, &[]));
    }

    fn builtins_json(name: &str) -> String {
        crate::audience::definition::builtins()
            .iter()
            .find(|b| b.name == name)
            .unwrap()
            .json
            .to_string()
    }

    /// Random definitions over a few types and windows.
    fn clause() -> impl Strategy<Value = String> {
        let types = prop::sample::select(vec![
            "add_to_cart",
            "purchase",
            "view_item",
            "generate_lead",
        ]);
        let window = prop::sample::select(vec!["1h", "1d", "7d", "30d"]);
        let leaf = prop_oneof![
            (types.clone(), window.clone(), 0u8..3).prop_map(|(t, w, n)| format!(
                r#"{{"count":{{"event":"{t}","within":"{w}","at_least":{n}}}}}"#
            )),
            (types.clone(), window.clone(), 0u8..2).prop_map(|(t, w, n)| format!(
                r#"{{"count":{{"event":"{t}","within":"{w}","at_most":{n}}}}}"#
            )),
            (window.clone(), window.clone()).prop_map(|(a, w)| format!(
                r#"{{"absent_after":{{"anchor":"add_to_cart","anchor_within":"{a}","absent":"purchase","within":"{w}"}}}}"#
            )),
            window.clone().prop_map(|w| format!(r#"{{"last_seen":{{"within":"{w}"}}}}"#)),
            window.prop_map(|w| format!(r#"{{"first_seen":{{"older_than":"{w}"}}}}"#)),
            Just(r#"{"reached":"add_to_cart"}"#.to_string()),
            Just(r#"{"probability":{"gte":0.2}}"#.to_string()),
        ];
        leaf.prop_recursive(3, 12, 3, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 1..3)
                    .prop_map(|v| format!(r#"{{"and":[{}]}}"#, v.join(","))),
                prop::collection::vec(inner.clone(), 1..3)
                    .prop_map(|v| format!(r#"{{"or":[{}]}}"#, v.join(","))),
                inner.prop_map(|c| format!(r#"{{"not":{c}}}"#)),
            ]
        })
    }

    fn visitor() -> impl Strategy<Value = Vec<(&'static str, i64)>> {
        let types = prop::sample::select(vec![
            "add_to_cart",
            "purchase",
            "view_item",
            "generate_lead",
        ]);
        prop::collection::vec((types, 0i64..60 * D), 0..6)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(500))]

        /// A visitor last seen before the bound never matches.
        #[test]
        fn the_activity_bound_never_excludes_a_member(def in clause(), events in visitor()) {
            let t = Taxonomy::builtin();
            let d = Definition::parse(&def, &t, &LIMITS).unwrap();
            let mut s = Fake::new(&t, &events);
            if let (Some(bound), Some(_)) = (d.active_since(Millis::from_unix_millis(NOW)), evaluate(&d, &mut s)) {
                let last = s.last_seen();
                prop_assert!(last.is_some_and(|l| l >= bound), "{def} {events:?}");
            }
        }
    }
}
