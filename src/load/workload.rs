//! Requests that look like a shop's: visitors from the journey simulator,
//! shifted so their events end a minute before the run starts.

use crate::domain::Millis;
use crate::grpc::proto::{Event, TrackRequest};
use crate::simulator::{simulate, SimConfig};

pub struct Workload {
    /// Visitors of exactly `EVENTS_PER_VISITOR` events.
    visitors: Vec<(String, Vec<Event>)>,
    /// Visitors the server has stored (for Score by id).
    stored: Vec<String>,
}

pub const EVENTS_PER_VISITOR: usize = 20;

impl Workload {
    /// `count` visitors of 20 events from simulated journeys.
    pub fn simulated(count: usize, seed: u64, now: Millis) -> Workload {
        let journeys = simulate(&SimConfig {
            visitors: count * 3,
            seed,
            ..SimConfig::default()
        });
        // Long journeys give 20 events as they are; shorter ones are joined
        // end to end, as one visitor coming back.
        let mut pool = journeys.iter().flat_map(|j| j.events.iter()).cycle();
        let visitors = (0..count)
            .map(|n| {
                let evs: Vec<_> = pool.by_ref().take(EVENTS_PER_VISITOR).cloned().collect();
                // Keep the journey's gaps (clamped to 5 s .. 6 h; a jump back
                // where two journeys join counts as a new visit a day later)
                // and end the visitor a minute before now.
                let gaps: Vec<i64> = evs
                    .windows(2)
                    .map(
                        |w| match w[1].at.as_unix_millis() - w[0].at.as_unix_millis() {
                            g if g > 0 => g.clamp(5_000, 6 * 3_600_000),
                            _ => 86_400_000,
                        },
                    )
                    .collect();
                let mut at = now.as_unix_millis() - 60_000 - gaps.iter().sum::<i64>();
                let events = evs
                    .iter()
                    .enumerate()
                    .map(|(k, e)| {
                        if k > 0 {
                            at += gaps[k - 1];
                        }
                        let (seconds, nanos) = Millis::from_unix_millis(at).to_parts();
                        Event {
                            r#type: e.name.to_string(),
                            time: Some(prost_types::Timestamp { seconds, nanos }),
                            item_id: e.item_id.clone(),
                            event_id: format!("w{n}-{k}"),
                            ..Event::default()
                        }
                    })
                    .collect();
                (format!("bench-{seed}-{n}"), events)
            })
            .collect();
        Workload {
            visitors,
            stored: Vec::new(),
        }
    }

    pub fn visitor(&self, i: usize) -> (&str, &[Event]) {
        let (id, events) = &self.visitors[i % self.visitors.len()];
        (id, events)
    }

    /// The visitors as Track messages, for loading the server before
    /// Score-by-id runs; remembers their ids. They are stored under ids of
    /// their own (`stored-…`), so the visitors sent inline stay unknown to
    /// the server, as they are for a caller that keeps its own state.
    pub fn to_store(&mut self) -> Vec<TrackRequest> {
        self.stored = (0..self.visitors.len())
            .map(|n| format!("stored-{n}"))
            .collect();
        self.stored
            .iter()
            .zip(&self.visitors)
            .map(|(id, (_, events))| TrackRequest {
                visitor_id: id.clone(),
                events: events.clone(),
            })
            .collect()
    }

    pub fn stored_id(&self, i: usize) -> &str {
        if self.stored.is_empty() {
            return &self.visitors[i % self.visitors.len()].0;
        }
        &self.stored[i % self.stored.len()]
    }

    /// A Track message of 100 events (five visitors' events under one id).
    pub fn batch_of_100(&self, visitor_id: &str, i: usize) -> TrackRequest {
        let events = (0..5)
            .flat_map(|k| self.visitor(i + k).1.iter().cloned())
            .enumerate()
            .map(|(n, mut e)| {
                e.event_id = format!("{visitor_id}-{n}");
                e
            })
            .collect();
        TrackRequest {
            visitor_id: visitor_id.to_string(),
            events,
        }
    }
}
