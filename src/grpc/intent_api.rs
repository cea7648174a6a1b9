//! `rung.v1.IntentService`: validate, make one engine call, convert back.

use std::collections::VecDeque;
use std::sync::Arc;

use tonic::{Request, Response, Status, Streaming};

use crate::domain::Millis;
use crate::engine::Engine;
use crate::store::{self, Outcome, Ticket};

use super::convert::{self, ParseContext};
use super::proto::intent_service_server::IntentService;
use super::proto::{
    ForgetVisitorRequest, ForgetVisitorResponse, GetVisitorRequest, GetVisitorResponse, Rejection,
    ScoreBatchRequest, ScoreBatchResponse, ScoreRequest, ScoreResponse, TrackRequest,
    TrackResponse, TrackSummary,
};

/// Writes a TrackStream keeps in flight before waiting for the oldest:
/// enough to fill several group commits, bounded so a fast client cannot
/// queue unbounded memory.
const STREAM_IN_FLIGHT: usize = 4096;
/// Rejection reasons a TrackStream summary lists.
const MAX_REJECTIONS: usize = 100;

pub struct IntentApi {
    engine: Arc<Engine>,
}

impl IntentApi {
    pub fn new(engine: Arc<Engine>) -> Self {
        IntentApi { engine }
    }

    fn context(&self, now: Millis) -> ParseContext<'_> {
        let e = &self.engine;
        ParseContext {
            taxonomy: e.taxonomy(),
            limits: e.limits(),
            default_reasons: e.scoring().max_reasons,
            ignore_unknown_types: e.scoring().ignore_unknown_types,
            now,
            oldest_storable: e.oldest_storable(now),
        }
    }
}

/// Tallies a TrackStream.
#[derive(Default)]
struct StreamTally {
    summary: TrackSummary,
}

impl StreamTally {
    fn reject(&mut self, index: u64, visitor_id: String, events: usize, reason: String) {
        self.summary.rejected += events as u64;
        if self.summary.rejections.len() < MAX_REJECTIONS {
            self.summary.rejections.push(Rejection {
                message_index: index,
                visitor_id,
                reason,
            });
        }
    }

    async fn settle(&mut self, (index, visitor_id, events, ticket): (u64, String, usize, Ticket)) {
        match store::settle(ticket).await {
            Ok(Outcome::Tracked {
                accepted,
                duplicates,
                ..
            }) => {
                self.summary.accepted += u64::from(accepted);
                self.summary.duplicates += u64::from(duplicates);
            }
            Ok(_) => self.reject(index, visitor_id, events, "internal error".into()),
            Err(e) => {
                tracing::error!(error = %e, "stream write failed");
                self.reject(index, visitor_id, events, format!("not stored: {e}"));
            }
        }
    }
}

#[tonic::async_trait]
impl IntentService for IntentApi {
    async fn score(
        &self,
        request: Request<ScoreRequest>,
    ) -> Result<Response<ScoreResponse>, Status> {
        let now = Millis::now();
        let query = convert::score_query(request.into_inner(), &self.context(now))?;
        let score = self.engine.score(query, now)?;
        Ok(Response::new(convert::score_response(score)))
    }

    async fn score_batch(
        &self,
        request: Request<ScoreBatchRequest>,
    ) -> Result<Response<ScoreBatchResponse>, Status> {
        let now = Millis::now();
        let queries = convert::score_batch(request.into_inner(), &self.context(now))?;
        let results = self
            .engine
            .score_batch(queries, now)?
            .into_iter()
            .map(convert::score_response)
            .collect();
        Ok(Response::new(ScoreBatchResponse { results }))
    }

    async fn track(
        &self,
        request: Request<TrackRequest>,
    ) -> Result<Response<TrackResponse>, Status> {
        let now = Millis::now();
        let query = convert::track_query(request.into_inner(), &self.context(now))?;
        let tracked = self.engine.track(query, now).await?;
        Ok(Response::new(TrackResponse {
            accepted: tracked.accepted,
            duplicates: tracked.duplicates,
            score: Some(convert::score_response(tracked.score)),
        }))
    }

    async fn track_stream(
        &self,
        request: Request<Streaming<TrackRequest>>,
    ) -> Result<Response<TrackSummary>, Status> {
        let mut stream = request.into_inner();
        let mut tally = StreamTally::default();
        let mut in_flight = VecDeque::new();
        let mut index = 0u64;
        while let Some(message) = stream.message().await? {
            tally.summary.messages += 1;
            let visitor_id = message.visitor_id.clone();
            let events = message.events.len();
            match convert::track_query(message, &self.context(Millis::now())) {
                Ok(query) => {
                    let ticket = self.engine.submit_track(query, false);
                    in_flight.push_back((index, visitor_id, events, ticket));
                }
                Err(e) => tally.reject(index, visitor_id, events, e.to_string()),
            }
            while in_flight.len() > STREAM_IN_FLIGHT {
                if let Some(w) = in_flight.pop_front() {
                    tally.settle(w).await;
                }
            }
            index += 1;
        }
        // The summary goes out only once every accepted write is durable.
        while let Some(w) = in_flight.pop_front() {
            tally.settle(w).await;
        }
        Ok(Response::new(tally.summary))
    }

    async fn get_visitor(
        &self,
        request: Request<GetVisitorRequest>,
    ) -> Result<Response<GetVisitorResponse>, Status> {
        let req = request.into_inner();
        let visitor = convert::visitor_id(req.visitor_id, &self.context(Millis::now()))?;
        match self.engine.profile(&visitor)? {
            Some(p) => Ok(Response::new(convert::profile_response(
                p,
                self.engine.taxonomy(),
                req.max_events,
            ))),
            None => Err(Status::not_found(format!(
                "visitor {visitor:?} is not known"
            ))),
        }
    }

    async fn forget_visitor(
        &self,
        request: Request<ForgetVisitorRequest>,
    ) -> Result<Response<ForgetVisitorResponse>, Status> {
        let visitor = convert::visitor_id(
            request.into_inner().visitor_id,
            &self.context(Millis::now()),
        )?;
        let existed = self.engine.forget(visitor.clone()).await?;
        tracing::info!(visitor_id = %visitor, existed, "visitor forgotten");
        Ok(Response::new(ForgetVisitorResponse { existed }))
    }
}
