//! `rung.v1.IntentService`: validate, make one engine call, convert back.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::domain::Millis;
use crate::engine::Engine;

use super::convert::{self, ParseContext};
use super::proto::intent_service_server::IntentService;
use super::proto::{ScoreBatchRequest, ScoreBatchResponse, ScoreRequest, ScoreResponse};

pub struct IntentApi {
    engine: Arc<Engine>,
}

impl IntentApi {
    pub fn new(engine: Arc<Engine>) -> Self {
        IntentApi { engine }
    }

    fn context(&self) -> ParseContext<'_> {
        let e = &self.engine;
        ParseContext {
            taxonomy: e.taxonomy(),
            limits: e.limits(),
            default_reasons: e.scoring().max_reasons,
            ignore_unknown_types: e.scoring().ignore_unknown_types,
            now: Millis::now(),
        }
    }
}

#[tonic::async_trait]
impl IntentService for IntentApi {
    async fn score(
        &self,
        request: Request<ScoreRequest>,
    ) -> Result<Response<ScoreResponse>, Status> {
        let query = convert::score_query(request.into_inner(), &self.context())?;
        let score = self.engine.score(query);
        Ok(Response::new(convert::score_response(score)))
    }

    async fn score_batch(
        &self,
        request: Request<ScoreBatchRequest>,
    ) -> Result<Response<ScoreBatchResponse>, Status> {
        let queries = convert::score_batch(request.into_inner(), &self.context())?;
        let results = self
            .engine
            .score_batch(queries)
            .into_iter()
            .map(convert::score_response)
            .collect();
        Ok(Response::new(ScoreBatchResponse { results }))
    }
}
