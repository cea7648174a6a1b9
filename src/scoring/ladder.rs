//! The weighted ladder: transparent points that work from the first event,
//! with no training data.
//!
//! points = Σ over types of `points × min(decayed count, cap)`, where each
//! occurrence weighs 2^(−age / half-life); the score maps points onto 0–100.

use crate::domain::{Stage, Taxonomy};

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ladder {
    pub points: f64,
    /// 0–100.
    pub score: f64,
    /// 1-based rank of the highest milestone reached; 0 for none.
    pub milestone_rank: u8,
    /// The furthest funnel stage of any counted event (awareness when none).
    pub stage: Stage,
}

/// Builds the ladder from per-type decayed (uncapped) counts.
pub fn climb(taxonomy: &Taxonomy, decayed: &[f64], milestone_rank: u8, stage: Stage) -> Ladder {
    let points: f64 = taxonomy
        .types()
        .iter()
        .zip(decayed)
        .map(|(t, &n)| t.points * n.min(t.cap))
        .sum();
    Ladder {
        points,
        score: score(points, taxonomy.score_scale()),
        milestone_rank,
        stage,
    }
}

/// 100 × (1 − e^(−points / scale)) for positive points, else 0: saturating,
/// so no visitor goes past 100 and the first steps count most.
pub fn score(points: f64, scale: f64) -> f64 {
    if points <= 0.0 {
        0.0
    } else {
        100.0 * (1.0 - (-points / scale).exp())
    }
}

#[cfg(test)]
mod tests {
    use crate::domain::time::MILLIS_PER_DAY;
    use crate::domain::{Event, Millis, Stage, Taxonomy};
    use crate::scoring::observe;

    const AS_OF: Millis = Millis::from_unix_millis(1_767_225_600_000);

    fn at(days_ago: f64) -> Millis {
        Millis::from_unix_millis(AS_OF.as_unix_millis() - (days_ago * MILLIS_PER_DAY) as i64)
    }

    fn events(t: &Taxonomy, spec: &[(&str, f64)]) -> Vec<Event> {
        let mut v: Vec<Event> = spec
            .iter()
            .map(|(name, ago)| Event::new(t.resolve(name).unwrap(), at(*ago)))
            .collect();
        v.sort_by_key(|e| e.at);
        v
    }

    #[test]
    fn an_occurrence_weighs_half_after_one_half_life() {
        let t = Taxonomy::builtin();
        let view = t.get(t.resolve("view_item").unwrap()); // half-life 7 days
        assert_eq!(view.decay(0.0), 1.0);
        assert_eq!(view.decay(7.0 * MILLIS_PER_DAY), 0.5);
        assert_eq!(view.decay(14.0 * MILLIS_PER_DAY), 0.25);
    }

    #[test]
    fn repeats_beyond_the_cap_do_not_count() {
        // 30 page views now (0.5 points, cap 20) and a cart removal now
        // (−4 points): 0.5 × 20 − 4 = 6.
        let t = Taxonomy::builtin();
        let mut spec = vec![("page_view", 0.0); 30];
        spec.push(("remove_from_cart", 0.0));
        let o = observe(&t, &events(&t, &spec), AS_OF);
        assert_eq!(o.ladder.points, 6.0);
    }

    #[test]
    fn the_cap_applies_to_the_decayed_count() {
        // begin_checkout: 15 points, half-life 3 days, cap 3. Two now and
        // two 3 days ago weigh 1 + 1 + ½ + ½ = 3, exactly the cap: 45 points.
        // A fifth (another ½) is over the cap and adds nothing.
        let t = Taxonomy::builtin();
        let four = [
            ("begin_checkout", 0.0),
            ("begin_checkout", 0.0),
            ("begin_checkout", 3.0),
            ("begin_checkout", 3.0),
        ];
        let mut five = four.to_vec();
        five.push(("begin_checkout", 3.0));
        assert_eq!(observe(&t, &events(&t, &four), AS_OF).ladder.points, 45.0);
        assert_eq!(observe(&t, &events(&t, &five), AS_OF).ladder.points, 45.0);
    }

    #[test]
    fn the_rung_is_the_highest_milestone_not_the_latest() {
        let t = Taxonomy::builtin();
        let evs = events(
            &t,
            &[("add_to_cart", 2.0), ("view_item", 1.0), ("search", 0.5)],
        );
        let o = observe(&t, &evs, AS_OF);
        assert_eq!(o.ladder.milestone_rank, 3);
        assert_eq!(
            t.milestone_at(o.ladder.milestone_rank).unwrap().name,
            "add_to_cart"
        );
    }

    #[test]
    fn the_stage_is_the_furthest_stage_of_any_event() {
        let t = Taxonomy::builtin();
        let browse = observe(
            &t,
            &events(&t, &[("view_item", 1.0), ("page_view", 0.0)]),
            AS_OF,
        );
        let chat = observe(
            &t,
            &events(&t, &[("view_item", 1.0), ("chat_start", 0.5)]),
            AS_OF,
        );
        let refund = observe(&t, &events(&t, &[("refund", 1.0)]), AS_OF);
        let nothing = observe(&t, &[], AS_OF);
        assert_eq!(browse.ladder.stage, Stage::Consideration);
        assert_eq!(chat.ladder.stage, Stage::Intent);
        assert_eq!(refund.ladder.stage, Stage::Purchase);
        assert_eq!(nothing.ladder.stage, Stage::Awareness);
    }

    #[test]
    fn the_score_saturates_toward_one_hundred() {
        // 100 · (1 − e^−1) at points = scale.
        assert!((super::score(40.0, 40.0) - 63.212_055_882_855_77).abs() < 1e-12);
        assert_eq!(super::score(0.0, 40.0), 0.0);
        assert_eq!(super::score(-5.0, 40.0), 0.0);
        assert!(super::score(1e6, 40.0) <= 100.0);
    }
}
