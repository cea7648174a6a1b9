//! What an operator watches: one registry of Prometheus metrics per server
//! (no global state, so two servers in one process, as in tests, count
//! apart), written out as the Prometheus text format on `GET /metrics`.
//!
//! The engine counts what it does (events by outcome, scores, store
//! errors, the serving model); the gRPC edge counts calls, their codes and
//! durations, and the calls it shed.

use std::sync::{Arc, Mutex, PoisonError};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallLabels {
    /// The RPC's name as in the proto (`Score`).
    pub method: &'static str,
    /// The gRPC code's canonical name (`OK`, `PERMISSION_DENIED`).
    pub code: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MethodLabels {
    pub method: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VersionLabels {
    pub version: String,
}

/// Every metric a server keeps.
pub struct Metrics {
    registry: Registry,
    pub rpc_requests: Family<CallLabels, Counter>,
    pub rpc_duration: Family<MethodLabels, Histogram, fn() -> Histogram>,
    pub rpc_shed: Family<MethodLabels, Counter>,
    pub events_ingested: Family<OutcomeLabels, Counter>,
    pub score_probability: Histogram,
    model_info: Family<VersionLabels, Gauge>,
    /// The version `model_info` shows, so a swap can take it down.
    model_shown: Mutex<Option<String>>,
    pub store_visitors: Gauge,
    pub store_errors: Family<KindLabels, Counter>,
    pub model_announcements: Family<OutcomeLabels, Counter>,
}

fn duration_histogram() -> Histogram {
    // 50 µs to about 3.3 s, doubling: Score's microseconds through an
    // export's seconds.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.000_05, 2.0, 17,
    ))
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let rpc_requests = Family::<CallLabels, Counter>::default();
        // prometheus-client adds `_total` to counters' names.
        registry.register(
            "rung_rpc_requests",
            "Calls answered, by RPC and gRPC code",
            rpc_requests.clone(),
        );
        let rpc_duration =
            Family::<MethodLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                duration_histogram,
            );
        registry.register(
            "rung_rpc_duration_seconds",
            "Time from a call's arrival to its last response byte",
            rpc_duration.clone(),
        );
        let rpc_shed = Family::<MethodLabels, Counter>::default();
        registry.register(
            "rung_rpc_shed",
            "Calls refused at once with RESOURCE_EXHAUSTED because limits.max_concurrent_calls were running",
            rpc_shed.clone(),
        );
        let events_ingested = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "rung_events_ingested",
            "Events sent to Track and TrackStream, by outcome: accepted, duplicate, rejected",
            events_ingested.clone(),
        );
        let score_probability = Histogram::new([
            0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0,
        ]);
        registry.register(
            "rung_score_probability",
            "Purchase probabilities answered (Score, ScoreBatch, Track)",
            score_probability.clone(),
        );
        let model_info = Family::<VersionLabels, Gauge>::default();
        registry.register(
            "rung_model_info",
            "The serving model's version (the series with value 1)",
            model_info.clone(),
        );
        let store_visitors = Gauge::default();
        registry.register(
            "rung_store_visitors",
            "Visitors in the store, as last counted",
            store_visitors.clone(),
        );
        let store_errors = Family::<KindLabels, Counter>::default();
        registry.register(
            "rung_store_errors",
            "Store operations that failed, by kind",
            store_errors.clone(),
        );
        let model_announcements = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "rung_model_announcements",
            "Models other replicas announced, by outcome: followed, ignored (this replica serves it or a newer artifact), refused",
            model_announcements.clone(),
        );
        Metrics {
            registry,
            rpc_requests,
            rpc_duration,
            rpc_shed,
            events_ingested,
            score_probability,
            model_info,
            model_shown: Mutex::new(None),
            store_visitors,
            store_errors,
            model_announcements,
        }
    }

    /// Shows `version` as the serving model.
    pub fn set_model(&self, version: &str) {
        let mut shown = self
            .model_shown
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(old) = shown.take() {
            self.model_info.remove(&VersionLabels { version: old });
        }
        self.model_info
            .get_or_create(&VersionLabels {
                version: version.to_string(),
            })
            .set(1);
        *shown = Some(version.to_string());
    }

    pub fn events(&self, outcome: &'static str, n: u64) {
        if n > 0 {
            self.events_ingested
                .get_or_create(&OutcomeLabels { outcome })
                .inc_by(n);
        }
    }

    pub fn store_error(&self, kind: &'static str) {
        self.store_errors.get_or_create(&KindLabels { kind }).inc();
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut text = String::with_capacity(8 * 1024);
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

/// The content type [`Metrics::render`] writes (OpenMetrics text, which
/// Prometheus reads).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Serves `GET /metrics` on `listener` until the task is dropped.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
) -> std::io::Result<()> {
    use axum::routing::get;
    let app = axum::Router::new().route(
        "/metrics",
        get(move || {
            let metrics = metrics.clone();
            async move {
                (
                    [(axum::http::header::CONTENT_TYPE, CONTENT_TYPE)],
                    metrics.render(),
                )
            }
        }),
    );
    axum::serve(listener, app).await
}
