//! `rung.v1.ModelService`: which model serves, and replacing it without a
//! restart. Validate, make one engine call, convert back.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::auth::{Principal, Role};
use crate::engine::Engine;

use super::convert;
use super::proto::model_service_server::ModelService;
use super::proto::{GetModelRequest, GetModelResponse, ReloadModelRequest, ReloadModelResponse};

pub struct ModelApi {
    engine: Arc<Engine>,
}

impl ModelApi {
    pub fn new(engine: Arc<Engine>) -> Self {
        ModelApi { engine }
    }
}

#[tonic::async_trait]
impl ModelService for ModelApi {
    async fn get_model(
        &self,
        request: Request<GetModelRequest>,
    ) -> Result<Response<GetModelResponse>, Status> {
        let mut state = self.engine.model_state();
        // Why a file was refused (and which) is for operators only.
        let admin = request
            .extensions()
            .get::<Principal>()
            .is_some_and(|p| p.has(Role::Admin));
        if !admin {
            state.last_refusal = None;
        }
        Ok(Response::new(convert::model_response(&state)))
    }

    async fn reload_model(
        &self,
        request: Request<ReloadModelRequest>,
    ) -> Result<Response<ReloadModelResponse>, Status> {
        let path = convert::model_path(request.into_inner().path)?;
        // Reads one small file on this thread, as Score reads the store: a
        // rare operator call is not worth a blocking-pool hop.
        let swap = self.engine.reload_model(path.as_deref()).await?;
        Ok(Response::new(convert::reload_response(&swap)))
    }
}
