//! High-volume ingestion (TrackStream, and any other front end that feeds
//! a stream of Tracks): many writes in flight at once, a bounded window of
//! them, and one summary at the end that is sent only once every accepted
//! write is durable.

use std::collections::VecDeque;

use crate::store::{self, Ticket};

use super::{Engine, TrackQuery};

/// Writes kept in flight before waiting for the oldest: enough to fill
/// several group commits, bounded so a fast client cannot queue unbounded
/// memory.
pub const IN_FLIGHT: usize = 4096;
/// Rejections a summary lists (all are counted).
pub const MAX_REJECTIONS: usize = 100;

/// A message that was not stored, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// Position of the message in its stream, from 0.
    pub index: u64,
    pub visitor_id: String,
    pub reason: String,
}

/// What a stream of Tracks did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IngestSummary {
    pub messages: u64,
    pub accepted: u64,
    pub duplicates: u64,
    /// Events in rejected messages.
    pub rejected: u64,
    /// The first [`MAX_REJECTIONS`] rejections.
    pub rejections: Vec<Rejection>,
}

impl IngestSummary {
    fn reject(&mut self, index: u64, visitor_id: String, events: usize, reason: String) {
        self.rejected += events as u64;
        if self.rejections.len() < MAX_REJECTIONS {
            self.rejections.push(Rejection {
                index,
                visitor_id,
                reason,
            });
        }
    }
}

/// A write in flight: its message's position, visitor and event count.
struct Pending {
    index: u64,
    visitor_id: String,
    events: usize,
    ticket: Ticket<store::Tracked>,
}

/// One stream of Tracks being ingested ([`Engine::ingest`]).
pub struct Ingest<'a> {
    engine: &'a Engine,
    in_flight: VecDeque<Pending>,
    summary: IngestSummary,
}

impl Engine {
    /// Starts ingesting a stream: [`Ingest::push`] each message, then
    /// [`Ingest::finish`].
    pub fn ingest(&self) -> Ingest<'_> {
        Ingest {
            engine: self,
            in_flight: VecDeque::new(),
            summary: IngestSummary::default(),
        }
    }
}

impl Ingest<'_> {
    /// Takes the next message: the query the edge parsed from it, or why
    /// the edge refused it. Waits only when the window of writes in flight
    /// is full.
    pub async fn push(
        &mut self,
        visitor_id: String,
        events: usize,
        parsed: Result<TrackQuery, String>,
    ) {
        let index = self.summary.messages;
        self.summary.messages += 1;
        match parsed {
            // Every event skipped (unknown types the server ignores):
            // nothing to store.
            Ok(q) if q.events.is_empty() => {}
            Ok(q) => {
                let ticket = self.engine.store.track(q.visitor, q.events, false);
                self.in_flight.push_back(Pending {
                    index,
                    visitor_id,
                    events,
                    ticket,
                });
            }
            Err(reason) => {
                self.engine.metrics.events("rejected", events as u64);
                self.summary.reject(index, visitor_id, events, reason)
            }
        }
        while self.in_flight.len() > IN_FLIGHT {
            self.settle_oldest().await;
        }
    }

    /// Waits for every write in flight and sums the stream up.
    pub async fn finish(mut self) -> IngestSummary {
        while !self.in_flight.is_empty() {
            self.settle_oldest().await;
        }
        self.summary
    }

    async fn settle_oldest(&mut self) {
        let Some(p) = self.in_flight.pop_front() else {
            return;
        };
        match p.ticket.await {
            Ok(t) => {
                self.summary.accepted += u64::from(t.accepted);
                self.summary.duplicates += u64::from(t.duplicates);
                let m = &self.engine.metrics;
                m.events("accepted", u64::from(t.accepted));
                m.events("duplicate", u64::from(t.duplicates));
            }
            Err(e) => {
                tracing::error!(error = %e, "stream write failed");
                self.engine.metrics.store_error(e.kind());
                self.engine.metrics.events("rejected", p.events as u64);
                self.summary
                    .reject(p.index, p.visitor_id, p.events, format!("not stored: {e}"));
            }
        }
    }
}
