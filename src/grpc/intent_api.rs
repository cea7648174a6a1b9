//! `rung.v1.IntentService`: validate, make one engine call, convert back.

use std::sync::Arc;

use tonic::{Request, Response, Status, Streaming};

use crate::domain::Millis;
use crate::engine::{Engine, IngestSummary};

use super::convert::{self, ParseContext};
use super::intent_server::intent_service_server::IntentService;
use super::proto::{
    ForgetVisitorRequest, ForgetVisitorResponse, GetVisitorRequest, GetVisitorResponse, Rejection,
    TrackSummary,
};
use super::request::{ScoreBatchRequest, ScoreRequest, TrackRequest};
use super::response::{ScoreBatchResponse, ScoreResponse, TrackResponse};

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

fn summary(s: IngestSummary) -> TrackSummary {
    TrackSummary {
        messages: s.messages,
        accepted: s.accepted,
        duplicates: s.duplicates,
        rejected: s.rejected,
        rejections: s
            .rejections
            .into_iter()
            .map(|r| Rejection {
                message_index: r.index,
                visitor_id: r.visitor_id,
                reason: r.reason,
            })
            .collect(),
    }
}

#[tonic::async_trait]
impl IntentService for IntentApi {
    async fn score(
        &self,
        request: Request<ScoreRequest>,
    ) -> Result<Response<ScoreResponse>, Status> {
        let now = Millis::now();
        let query = convert::score_query(request.get_ref(), &self.context(now))?;
        let score = self.engine.score(query, now).await?;
        Ok(Response::new(ScoreResponse(score)))
    }

    async fn score_batch(
        &self,
        request: Request<ScoreBatchRequest>,
    ) -> Result<Response<ScoreBatchResponse>, Status> {
        let now = Millis::now();
        let queries = convert::score_batch(request.get_ref(), &self.context(now))?;
        let results = self.engine.score_batch(queries, now).await?;
        Ok(Response::new(ScoreBatchResponse(results)))
    }

    async fn track(
        &self,
        request: Request<TrackRequest>,
    ) -> Result<Response<TrackResponse>, Status> {
        let now = Millis::now();
        let query = convert::track_query(request.get_ref(), &self.context(now))?;
        let tracked = self.engine.track(query, now).await?;
        Ok(Response::new(TrackResponse {
            accepted: tracked.accepted,
            duplicates: tracked.duplicates,
            score: tracked.score,
        }))
    }

    async fn track_stream(
        &self,
        request: Request<Streaming<TrackRequest>>,
    ) -> Result<Response<TrackSummary>, Status> {
        let mut stream = request.into_inner();
        let mut ingest = self.engine.ingest();
        while let Some(message) = stream.message().await? {
            let events = message.visitor().event_count();
            let parsed = convert::track_query(&message, &self.context(Millis::now()))
                .map_err(|e| e.to_string());
            // Named in a rejection as sent, even when it is not UTF-8.
            let visitor_id = String::from_utf8_lossy(message.visitor().visitor_id()).into_owned();
            ingest.push(visitor_id, events, parsed).await;
        }
        // The summary goes out only once every accepted write is durable.
        Ok(Response::new(summary(ingest.finish().await)))
    }

    async fn get_visitor(
        &self,
        request: Request<GetVisitorRequest>,
    ) -> Result<Response<GetVisitorResponse>, Status> {
        let req = request.into_inner();
        let visitor = convert::visitor_id(req.visitor_id, &self.context(Millis::now()))?;
        match self.engine.profile(&visitor).await? {
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
