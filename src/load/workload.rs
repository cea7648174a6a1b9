//! Requests that look like a shop's: visitors from the journey simulator,
//! shifted so their events end a minute before the run starts.

use bytes::Bytes;
use prost::Message;

use crate::domain::Millis;
use crate::grpc::proto::{Event, ScoreBatchRequest, ScoreRequest, TrackRequest};
use crate::simulator::{simulate, SimConfig};

pub struct Workload {
    /// Visitors of exactly `EVENTS_PER_VISITOR` events.
    visitors: Vec<(String, Vec<Event>)>,
    /// Requests encoded once: Score with each visitor inline, Score by id
    /// of each visitor's stored copy, and ScoreBatch calls.
    score_inline: Vec<Bytes>,
    score_by_id: Vec<Bytes>,
    batches: Vec<Bytes>,
}

/// Distinct ScoreBatch requests prepared (each of `BATCH_SIZE` visitors).
const BATCHES: usize = 32;

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
        let visitors: Vec<(String, Vec<Event>)> = (0..count)
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
        let score_inline: Vec<Bytes> = visitors
            .iter()
            .map(|(id, events)| encode(&inline(id, events)))
            .collect();
        let batches = (0..BATCHES.min(visitors.len()))
            .map(|b| {
                let visitors = (0..super::BATCH_SIZE)
                    .map(|k| {
                        let (id, events) = &visitors[(b * 7 + k) % visitors.len()];
                        inline(id, events)
                    })
                    .collect();
                encode(&ScoreBatchRequest { visitors })
            })
            .collect();
        let score_by_id = (0..visitors.len())
            .map(|n| {
                encode(&ScoreRequest {
                    visitor_id: stored_id(n),
                    ..ScoreRequest::default()
                })
            })
            .collect();
        Workload {
            visitors,
            score_inline,
            score_by_id,
            batches,
        }
    }

    /// An encoded Score request with visitor `i`'s events inline.
    pub fn score_inline(&self, i: usize) -> Bytes {
        self.score_inline[i % self.score_inline.len()].clone()
    }

    /// An encoded Score request by id for visitor `i`'s stored copy (an
    /// unknown visitor until the [`Workload::to_store`] messages are sent).
    pub fn score_by_id(&self, i: usize) -> Bytes {
        self.score_by_id[i % self.score_by_id.len()].clone()
    }

    /// An encoded ScoreBatch request of `BATCH_SIZE` inline visitors.
    pub fn score_batch(&self, i: usize) -> Bytes {
        self.batches[i % self.batches.len()].clone()
    }

    pub fn visitor(&self, i: usize) -> (&str, &[Event]) {
        let (id, events) = &self.visitors[i % self.visitors.len()];
        (id, events)
    }

    /// The visitors as Track messages, for loading the server before
    /// Score-by-id runs. They are stored under ids of their own (`stored-…`),
    /// so the visitors sent inline stay unknown to the server, as they are
    /// for a caller that keeps its own state.
    pub fn to_store(&self) -> Vec<TrackRequest> {
        self.visitors
            .iter()
            .enumerate()
            .map(|(n, (_, events))| TrackRequest {
                visitor_id: stored_id(n),
                events: events.clone(),
            })
            .collect()
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

/// The id visitor `n`'s stored copy has.
fn stored_id(n: usize) -> String {
    format!("stored-{n}")
}

fn inline(id: &str, events: &[Event]) -> ScoreRequest {
    ScoreRequest {
        visitor_id: id.to_string(),
        events: events.to_vec(),
        ..ScoreRequest::default()
    }
}

fn encode(m: &impl Message) -> Bytes {
    Bytes::from(m.encode_to_vec())
}
