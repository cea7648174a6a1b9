//! Building and running the server: load the taxonomy and the model, bind,
//! serve until told to stop, with the background tasks (retention purge,
//! model file watch) beside it. Tests use the same path on port 0.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;
use tonic::transport::Server;

use crate::config::Settings;
use crate::deploy::{self, DeployError, Polled};
use crate::domain::{Millis, Taxonomy, TaxonomyError};
use crate::engine::{Engine, EngineSettings};
use crate::grpc::conn::ConnLimit;
use crate::grpc::edge::{Edge, EdgeLayer};
use crate::grpc::intent_server::intent_service_server::IntentServiceServer;
use crate::grpc::proto::audience_service_server::AudienceServiceServer;
use crate::grpc::proto::model_service_server::ModelServiceServer;
use crate::grpc::{proto, AudienceApi, IntentApi, ModelApi};
use crate::store::{RedbStore, RedisSettings, RedisStore, Store, StoreError, StoreLimits};

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Taxonomy(#[from] TaxonomyError),
    #[error(transparent)]
    Model(#[from] DeployError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("reflection service: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error(transparent)]
    Settings(#[from] crate::config::ConfigError),
    #[error("cannot read {what} {path}: {source}")]
    TlsFile {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("TLS: {0}")]
    Tls(#[from] tonic::transport::Error),
    #[error("model_dir {path}: {source}")]
    ModelDir {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The store the settings name: the embedded redb store in `data_dir`, or
/// the shared Redis at `store.url`.
pub async fn open_store(
    settings: &Settings,
    taxonomy: Arc<Taxonomy>,
) -> Result<Arc<dyn Store>, StartupError> {
    let st = &settings.store;
    let limits = StoreLimits {
        recent_events: st.recent_events,
        dedup_window: st.dedup_window,
        max_group: st.max_group,
    };
    if st.url.is_empty() {
        let store = RedbStore::open(&settings.data_dir, taxonomy, limits)?;
        tracing::info!(data_dir = %settings.data_dir.display(), "store opened");
        return Ok(Arc::new(store));
    }
    let redis = RedisSettings {
        url: st.url.clone(),
        key_prefix: st.key_prefix.clone(),
        timeout: std::time::Duration::from_millis(st.redis_timeout_ms),
    };
    let store = RedisStore::open(&redis, taxonomy, limits).await?;
    tracing::info!(
        url = %crate::store::redis_store::redacted(&st.url),
        key_prefix = %st.key_prefix,
        "shared store opened"
    );
    Ok(Arc::new(store))
}

/// The engine the settings describe.
pub async fn build_engine(settings: &Settings) -> Result<Engine, StartupError> {
    let taxonomy = Arc::new(Taxonomy::load(settings.taxonomy.as_deref())?);
    let model = deploy::load(&settings.model_source(), &taxonomy)?;
    tracing::info!(
        model_version = model.version(),
        features = model.model.feature_names().len(),
        taxonomy = taxonomy.fingerprint(),
        model = %model.source,
        "model loaded"
    );
    let store = open_store(settings, taxonomy.clone()).await?;
    let dir = settings.model_dir();
    let model_dir = crate::deploy::ModelDir::new(&dir)
        .map_err(|source| StartupError::ModelDir { path: dir, source })?;
    Ok(Engine::new(
        taxonomy,
        model,
        store,
        EngineSettings {
            scoring: settings.scoring.clone(),
            bands: settings.bands.clone(),
            limits: settings.limits.clone(),
            retention_days: settings.store.retention_days,
            model_dir,
        },
    ))
}

/// Purges inactive visitors every `every`, logging how many went.
async fn retention_loop(engine: Arc<Engine>, every: std::time::Duration) {
    // The first purge waits one interval: a restart should not start with a
    // full scan while clients reconnect.
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    loop {
        ticks.tick().await;
        match engine.purge_inactive(Millis::now()).await {
            Ok(0) => tracing::debug!("retention purge: nothing to erase"),
            Ok(n) => tracing::info!(purged = n, "retention purge erased inactive visitors"),
            Err(e) => tracing::error!(error = %e, "retention purge failed"),
        }
    }
}

/// Reloads the serving model's file whenever its metadata changes, looking
/// every `every`. A refused artifact is logged once per change and the
/// serving model stays.
async fn model_watch_loop(engine: Arc<Engine>, every: std::time::Duration) {
    let mut watch = engine.model_watch();
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    // After a stall, one look is enough: a burst of catch-up polls would
    // find the same file.
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        // One stat per tick, and a read of a small file when it changed: too
        // little to hand to the blocking pool.
        match engine.poll_model_file(&mut watch) {
            // The engine logs the swap itself.
            Polled::Unchanged | Polled::Swapped(_) => {}
            Polled::Refused(e) => tracing::error!(
                error = %e,
                "model file changed but was refused; the serving model stays"
            ),
        }
    }
}

/// Follows the models other replicas announce through the shared store:
/// each is loaded from the same path unless it already serves.
async fn model_notes_loop(
    engine: Arc<Engine>,
    mut notes: tokio::sync::mpsc::Receiver<crate::store::ModelNote>,
) {
    while let Some(note) = notes.recv().await {
        if let Err(e) = engine.follow_model(&note) {
            tracing::error!(
                error = %e,
                version = %note.version,
                path = %note.path.display(),
                "a model another replica announced was refused; the serving model stays"
            );
        }
    }
}

/// Asks the store every `every` whether it answers, and says so through
/// the health service: NOT_SERVING while it does not (a shared Redis that
/// went away), SERVING again once it does, without a restart.
async fn store_health_loop(
    engine: Arc<Engine>,
    health: tonic_health::server::HealthReporter,
    every: std::time::Duration,
) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut up = true;
    loop {
        ticks.tick().await;
        let now_up = match engine.check_store().await {
            Ok(()) => true,
            Err(e) => {
                if up {
                    tracing::error!(error = %e, "the store does not answer; health is NOT_SERVING until it does");
                }
                false
            }
        };
        if now_up == up {
            continue;
        }
        up = now_up;
        let status = if up {
            tracing::info!("the store answers again; health is SERVING");
            tonic_health::ServingStatus::Serving
        } else {
            tonic_health::ServingStatus::NotServing
        };
        // The model service needs no store: it keeps serving.
        health.set_service_status("", status).await;
        health
            .set_service_status(
                <IntentServiceServer<IntentApi> as tonic::server::NamedService>::NAME,
                status,
            )
            .await;
        health
            .set_service_status(
                <AudienceServiceServer<AudienceApi> as tonic::server::NamedService>::NAME,
                status,
            )
            .await;
    }
}

/// How often the store is asked whether it answers.
const STORE_CHECK_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// How often `rung_store_visitors` is recounted.
const VISITOR_COUNT_EVERY: std::time::Duration = std::time::Duration::from_secs(15);

/// Recounts the store's visitors for the metrics gauge.
async fn visitor_count_loop(engine: Arc<Engine>, every: std::time::Duration) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        if let Err(e) = engine.count_visitors().await {
            tracing::debug!(error = %e, "could not count the store's visitors");
        }
    }
}

/// The server's TLS identity (and client CA), read from the settings' files.
fn tls_config(
    tls: &crate::config::TlsSettings,
) -> Result<Option<tonic::transport::ServerTlsConfig>, StartupError> {
    use tonic::transport::{Certificate, Identity, ServerTlsConfig};
    let read = |what, path: &Path| {
        std::fs::read(path).map_err(|source| StartupError::TlsFile {
            what,
            path: path.to_path_buf(),
            source,
        })
    };
    let (Some(cert), Some(key)) = (&tls.cert, &tls.key) else {
        return Ok(None);
    };
    let mut config = ServerTlsConfig::new().identity(Identity::from_pem(
        read("tls.cert", cert)?,
        read("tls.key", key)?,
    ));
    if let Some(ca) = &tls.client_ca {
        config = config.client_ca_root(Certificate::from_pem(read("tls.client_ca", ca)?));
    }
    // Checked now, so a bad certificate stops the start, not the first call.
    Server::builder().tls_config(config.clone())?;
    Ok(Some(config))
}

/// A bound, ready server.
pub struct Application {
    listener: TcpListener,
    local_addr: SocketAddr,
    metrics_listener: Option<TcpListener>,
    engine: Arc<Engine>,
    purge_every: std::time::Duration,
    /// `None`: the model file is not watched (`model_watch_secs = 0`).
    model_watch_every: Option<std::time::Duration>,
    limits: crate::config::Limits,
    keys: Vec<crate::auth::KeyEntry>,
    tls: Option<tonic::transport::ServerTlsConfig>,
}

impl Application {
    pub async fn build(settings: &Settings) -> Result<Application, StartupError> {
        // Flags and tests may have changed the settings after loading.
        settings.validate()?;
        let tls = tls_config(&settings.tls)?;
        let engine = Arc::new(build_engine(settings).await?);
        let bind_err = |addr| move |source| StartupError::Bind { addr, source };
        let listener = TcpListener::bind(settings.listen)
            .await
            .map_err(bind_err(settings.listen))?;
        let local_addr = listener.local_addr().map_err(bind_err(settings.listen))?;
        // Checked by validate: empty (off) or an address.
        let metrics_listener = match settings.metrics_addr() {
            None => None,
            Some(addr) => Some(TcpListener::bind(addr).await.map_err(bind_err(addr))?),
        };
        if settings.auth.keys.is_empty() {
            tracing::warn!(
                addr = %local_addr,
                "no API keys configured: every caller is admitted as anonymous (admin)"
            );
        }
        Ok(Application {
            listener,
            local_addr,
            metrics_listener,
            engine,
            purge_every: std::time::Duration::from_secs(settings.store.purge_interval_secs),
            model_watch_every: (settings.model_watch_secs > 0)
                .then(|| std::time::Duration::from_secs(settings.model_watch_secs)),
            limits: settings.limits.clone(),
            keys: settings.auth.keys.clone(),
            tls,
        })
    }

    /// The address actually bound (the real port when asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Where `GET /metrics` answers, if it is on.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
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
        health.set_serving::<ModelServiceServer<ModelApi>>().await;
        health
            .set_serving::<AudienceServiceServer<AudienceApi>>()
            .await;
        // Reflection in both versions: grpcurl asks v1 first, while older
        // tools (and grpcio-reflection's client) ask only v1alpha.
        let reflection = || {
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        };
        let reflection_v1alpha = reflection().build_v1alpha()?;
        let reflection = reflection().build_v1()?;

        let purge = tokio::spawn(retention_loop(self.engine.clone(), self.purge_every));
        let model_watch = self
            .model_watch_every
            .map(|every| tokio::spawn(model_watch_loop(self.engine.clone(), every)));
        let model_notes = self
            .engine
            .model_announcements()
            .map(|notes| tokio::spawn(model_notes_loop(self.engine.clone(), notes)));
        let store_health = tokio::spawn(store_health_loop(
            self.engine.clone(),
            health.clone(),
            STORE_CHECK_EVERY,
        ));
        let visitor_count =
            tokio::spawn(visitor_count_loop(self.engine.clone(), VISITOR_COUNT_EVERY));
        let metrics_server = self.metrics_listener.map(|l| {
            let addr = l.local_addr().ok();
            tracing::info!(addr = ?addr, "metrics at GET /metrics");
            tokio::spawn(crate::metrics::serve(l, self.engine.metrics().clone()))
        });

        let limits = &self.limits;
        let idle = std::time::Duration::from_secs(limits.idle_timeout_secs);
        let connections = ConnLimit::new(limits.max_connections, idle);
        let incoming = tokio_stream::StreamExt::filter_map(
            TcpIncoming::from(self.listener).with_nodelay(Some(true)),
            move |accepted| match accepted {
                Ok(tcp) => connections.admit(tcp).map(Ok),
                Err(e) => Some(Err(e)),
            },
        );
        let keyring =
            crate::auth::Keyring::new(&self.keys).map_err(|e| StartupError::Settings(e.into()))?;
        let edge = EdgeLayer::new(Edge::new(
            keyring,
            limits.max_concurrent_calls,
            std::time::Duration::from_millis(limits.default_deadline_ms),
            self.engine.metrics().clone(),
        ));
        let max_message = limits.max_message_bytes;
        let mut server = Server::builder();
        let tls = self.tls.is_some();
        if let Some(config) = self.tls {
            server = server.tls_config(config)?;
        }
        tracing::info!(addr = %self.local_addr, tls, "serving");
        let result = server
            .max_concurrent_streams(limits.max_streams_per_connection)
            // Pings find peers that vanished; the idle limit closes the rest.
            .http2_keepalive_interval(Some((idle / 2).clamp(
                std::time::Duration::from_secs(1),
                std::time::Duration::from_secs(60),
            )))
            .http2_keepalive_timeout(Some(std::time::Duration::from_secs(20)))
            .layer(edge)
            .add_service(health_service)
            .add_service(reflection)
            .add_service(reflection_v1alpha)
            .add_service(
                IntentServiceServer::new(IntentApi::new(self.engine.clone()))
                    .max_decoding_message_size(max_message)
                    .max_encoding_message_size(max_message),
            )
            .add_service(
                AudienceServiceServer::new(AudienceApi::new(self.engine.clone()))
                    .max_decoding_message_size(max_message)
                    .max_encoding_message_size(max_message),
            )
            .add_service(
                ModelServiceServer::new(ModelApi::new(self.engine))
                    .max_decoding_message_size(max_message)
                    .max_encoding_message_size(max_message),
            )
            .serve_with_incoming_shutdown(incoming, shutdown)
            .await;
        // The background tasks hold the engine (and so the store): end them,
        // so the store closes, and its file lock goes, before we return.
        for task in [purge, store_health, visitor_count]
            .into_iter()
            .chain(model_watch)
            .chain(model_notes)
        {
            task.abort();
            let _ = task.await;
        }
        if let Some(task) = metrics_server {
            task.abort();
            let _ = task.await;
        }
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
