//! Building and running the server: load the taxonomy and the model, bind,
//! serve until told to stop. Tests use the same path on port 0.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;
use tonic::transport::Server;

use crate::config::Settings;
use crate::domain::{Taxonomy, TaxonomyError};
use crate::engine::Engine;
use crate::grpc::proto::intent_service_server::IntentServiceServer;
use crate::grpc::{proto, IntentApi};
use crate::scoring::{Model, ModelError};

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("cannot read taxonomy file {path}: {source}")]
    TaxonomyFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Taxonomy(#[from] TaxonomyError),
    #[error("cannot read model file {path}: {source}")]
    ModelFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("model {path}: {source}")]
    Model { path: PathBuf, source: ModelError },
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("reflection service: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
}

pub fn load_taxonomy(path: Option<&Path>) -> Result<Taxonomy, StartupError> {
    match path {
        None => Ok(Taxonomy::builtin()),
        Some(p) => {
            let text = std::fs::read_to_string(p).map_err(|source| StartupError::TaxonomyFile {
                path: p.to_path_buf(),
                source,
            })?;
            Ok(Taxonomy::from_toml(&text)?)
        }
    }
}

pub fn load_model(path: &Path, taxonomy: &Taxonomy) -> Result<Model, StartupError> {
    let text = std::fs::read_to_string(path).map_err(|source| StartupError::ModelFile {
        path: path.to_path_buf(),
        source,
    })?;
    Model::from_json(&text, taxonomy).map_err(|source| StartupError::Model {
        path: path.to_path_buf(),
        source,
    })
}

/// The engine the settings describe.
pub fn build_engine(settings: &Settings) -> Result<Engine, StartupError> {
    let taxonomy = load_taxonomy(settings.taxonomy.as_deref())?;
    let model = load_model(&settings.model, &taxonomy)?;
    tracing::info!(
        model_version = model.version(),
        features = model.feature_names().len(),
        taxonomy = taxonomy.fingerprint(),
        "model loaded"
    );
    Ok(Engine::new(
        Arc::new(taxonomy),
        Arc::new(model),
        settings.scoring.clone(),
        settings.bands.clone(),
        settings.limits.clone(),
    ))
}

/// A bound, ready server.
pub struct Application {
    listener: TcpListener,
    local_addr: SocketAddr,
    engine: Arc<Engine>,
}

impl Application {
    pub async fn build(settings: &Settings) -> Result<Application, StartupError> {
        let engine = Arc::new(build_engine(settings)?);
        let bind_err = |source| StartupError::Bind {
            addr: settings.listen,
            source,
        };
        let listener = TcpListener::bind(settings.listen).await.map_err(bind_err)?;
        let local_addr = listener.local_addr().map_err(bind_err)?;
        Ok(Application {
            listener,
            local_addr,
            engine,
        })
    }

    /// The address actually bound (the real port when asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves until `shutdown` completes, then lets in-flight calls finish.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), StartupError> {
        let (health, health_service) = tonic_health::server::health_reporter();
        // The model is loaded by now: the whole server and the scoring
        // service are ready.
        health
            .set_service_status("", tonic_health::ServingStatus::Serving)
            .await;
        health.set_serving::<IntentServiceServer<IntentApi>>().await;
        let reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()?;

        let incoming = TcpIncoming::from(self.listener).with_nodelay(Some(true));
        tracing::info!(addr = %self.local_addr, "serving");
        let result = Server::builder()
            .trace_fn(|req| tracing::info_span!("grpc", method = %req.uri().path()))
            .add_service(health_service)
            .add_service(reflection)
            .add_service(IntentServiceServer::new(IntentApi::new(self.engine)))
            .serve_with_incoming_shutdown(incoming, shutdown)
            .await;
        if let Err(e) = result {
            tracing::error!(error = %e, "server stopped with an error");
            return Err(StartupError::Bind {
                addr: self.local_addr,
                source: std::io::Error::other(e),
            });
        }
        tracing::info!("stopped");
        Ok(())
    }
}
