//! Typed settings, layered: built-in defaults → TOML file → `RUNG_*`
//! environment variables → command-line flags. Checked once, at start.
//!
//! Nested keys take a double underscore in the environment:
//! `limits.max_events_per_request` is `RUNG_LIMITS__MAX_EVENTS_PER_REQUEST`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

pub use crate::auth::KeyEntry;
pub use crate::scoring::Bands;

use crate::deploy::ModelSource;

/// The folder ReloadModel may read from when neither `model_dir` nor a
/// model file is set (relative to the working directory).
pub const DEFAULT_MODEL_DIR: &str = "models";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// Address the gRPC server listens on.
    pub listen: SocketAddr,
    /// A taxonomy TOML file; unset means the built-in `config/taxonomy.toml`.
    pub taxonomy: Option<PathBuf>,
    /// The model artifact (relative paths are from the working directory);
    /// unset, or `built-in`, means the model built into the binary.
    pub model: Option<PathBuf>,
    /// How often, in seconds, the server looks at the model file's metadata
    /// (modification time, length) and reloads it when it changed; 0 turns
    /// the watch off. A refused artifact is logged and the old model keeps
    /// serving.
    pub model_watch_secs: u64,
    pub log_format: LogFormat,
    /// A tracing filter (`info`, `rung=debug,tower=warn`); RUST_LOG wins.
    pub log_level: String,
    /// Where the embedded store keeps its file; relative paths are from the
    /// working directory.
    pub data_dir: PathBuf,
    pub scoring: ScoringSettings,
    pub bands: Bands,
    pub limits: Limits,
    pub store: StoreSettings,
    /// Where `GET /metrics` (Prometheus text) is served; empty turns it off.
    pub metrics_listen: String,
    /// The only folder ReloadModel (and a model another replica announces)
    /// may read from; unset means the folder of `model`, or `models` (from
    /// the working directory) when `model` is the built-in one.
    pub model_dir: Option<PathBuf>,
    pub auth: AuthSettings,
    pub tls: TlsSettings,
}

/// Who may call: API keys and their roles.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSettings {
    /// `[[auth.keys]]` entries; `rung keys new` prints one. With none, the
    /// server admits anyone, so it starts only on a loopback address unless
    /// `allow_anonymous` is set.
    pub keys: Vec<KeyEntry>,
    /// Serve without keys on a non-loopback address (behind a proxy that
    /// authenticates, say).
    pub allow_anonymous: bool,
}

/// TLS for the gRPC port (rustls). Unset: plaintext.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsSettings {
    /// The server's certificate chain, PEM.
    pub cert: Option<PathBuf>,
    /// Its private key, PEM.
    pub key: Option<PathBuf>,
    /// Set: clients must present a certificate this CA (PEM) signed (mTLS).
    pub client_ca: Option<PathBuf>,
}

/// Where visitors are kept, what is kept per visitor, and for how long.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreSettings {
    /// Empty: the embedded redb store in `data_dir`. `redis://…` or
    /// `rediss://…`: a shared Redis, so replicas can share visitors; several
    /// URLs, comma-separated, mean a Redis Cluster.
    pub url: String,
    /// Put before every Redis key, so deployments can share one Redis.
    pub key_prefix: String,
    /// How long a Redis connection or command may take before the call
    /// fails as unavailable.
    pub redis_timeout_ms: u64,
    /// Raw events kept per visitor for GetVisitor and explanations.
    pub recent_events: u32,
    /// Event ids remembered per visitor to drop redeliveries.
    pub dedup_window: usize,
    /// Visitors inactive this long are erased; older events are refused.
    pub retention_days: f64,
    /// How often the retention purge runs.
    pub purge_interval_secs: u64,
    /// Writes grouped into one commit at most.
    pub max_group: usize,
}

impl Default for StoreSettings {
    fn default() -> Self {
        StoreSettings {
            url: String::new(),
            key_prefix: "rung:".into(),
            redis_timeout_ms: 2000,
            recent_events: 200,
            dedup_window: 128,
            retention_days: 90.0,
            purge_interval_secs: 3600,
            max_group: 1024,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScoringSettings {
    /// Reasons returned per score unless a request asks otherwise (1–10).
    pub max_reasons: u32,
    /// Skip (and count) events of unknown type instead of refusing the request.
    pub ignore_unknown_types: bool,
}

/// What one request may carry. Each bound keeps a single call's cost and
/// memory predictable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    pub max_events_per_request: usize,
    pub max_visitors_per_batch: usize,
    pub max_visitor_id_bytes: usize,
    pub max_item_id_bytes: usize,
    pub max_event_id_bytes: usize,
    pub max_type_bytes: usize,
    pub max_attributes: usize,
    pub max_attribute_bytes: usize,
    /// How far past the server's clock an event time may lie (clock skew).
    pub max_future_skew_secs: u64,
    /// The largest request or response message, in bytes. The default
    /// carries a ScoreBatch of `max_visitors_per_batch` visitors with 200
    /// events each (README: "Limits").
    pub max_message_bytes: usize,
    /// Calls running at once; more are refused at once with
    /// RESOURCE_EXHAUSTED, so admitted calls keep a bounded latency.
    pub max_concurrent_calls: usize,
    /// HTTP/2 streams (calls) open at once on one connection.
    pub max_streams_per_connection: u32,
    /// Client connections open at once; more are closed on arrival.
    pub max_connections: usize,
    /// A connection with no call running this long is closed; keepalive
    /// pings find dead peers sooner.
    pub idle_timeout_secs: u64,
    /// The deadline of a unary call that sends no `grpc-timeout`; a sent
    /// `grpc-timeout` is honoured on every call.
    pub default_deadline_ms: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            listen: SocketAddr::from(([127, 0, 0, 1], 50051)),
            taxonomy: None,
            model: None,
            model_watch_secs: 2,
            log_format: LogFormat::Human,
            log_level: "info".into(),
            data_dir: PathBuf::from("data"),
            scoring: ScoringSettings::default(),
            bands: Bands::default(),
            limits: Limits::default(),
            store: StoreSettings::default(),
            metrics_listen: "127.0.0.1:9464".into(),
            model_dir: None,
            auth: AuthSettings::default(),
            tls: TlsSettings::default(),
        }
    }
}

impl Default for ScoringSettings {
    fn default() -> Self {
        ScoringSettings {
            max_reasons: 5,
            ignore_unknown_types: false,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_events_per_request: 10_000,
            max_visitors_per_batch: 1_000,
            max_visitor_id_bytes: 256,
            max_item_id_bytes: 256,
            max_event_id_bytes: 128,
            max_type_bytes: 128,
            max_attributes: 64,
            max_attribute_bytes: 1024,
            max_future_skew_secs: 300,
            max_message_bytes: 32 * 1024 * 1024,
            max_concurrent_calls: 512,
            max_streams_per_connection: 256,
            max_connections: 4096,
            idle_timeout_secs: 300,
            default_deadline_ms: 30_000,
        }
    }
}

/// The slowest model file watch: a day.
pub const MAX_MODEL_WATCH_SECS: u64 = 86_400;

/// The most reasons a score can carry.
pub const MAX_REASONS: u32 = 10;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0}")]
    Load(#[from] Box<figment::Error>),
    #[error("setting {key}: {reason}")]
    Invalid { key: &'static str, reason: String },
    #[error("setting {0}")]
    Key(#[from] crate::auth::KeyEntryError),
}

impl Settings {
    /// Defaults, then `file` (if given), then `RUNG_*` variables; checked.
    pub fn load(file: Option<&Path>) -> Result<Settings, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Settings::default()));
        if let Some(path) = file {
            figment = figment.merge(Toml::file_exact(path));
        }
        // RUNG_CONFIG names the file itself and is read by the command line;
        // RUNG_API_KEY is the clients' (segment CLI, bench) key, which an
        // operator's shell may export: neither is a setting.
        figment = figment.merge(
            Env::prefixed("RUNG_")
                .filter(|k| k != "config" && k != "api_key")
                .split("__"),
        );
        let settings: Settings = figment.extract().map_err(Box::new)?;
        settings.validate()?;
        Ok(settings)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, reason: String| Err(ConfigError::Invalid { key, reason });
        if !(1..=MAX_REASONS).contains(&self.scoring.max_reasons) {
            return invalid(
                "scoring.max_reasons",
                format!(
                    "must be 1 to {MAX_REASONS}, got {}",
                    self.scoring.max_reasons
                ),
            );
        }
        let b = &self.bands;
        if !(b.medium.is_finite()
            && b.high.is_finite()
            && 0.0 < b.medium
            && b.medium < b.high
            && b.high <= 1.0)
        {
            return invalid(
                "bands",
                format!(
                    "need 0 < medium < high <= 1, got medium {} and high {}",
                    b.medium, b.high
                ),
            );
        }
        let l = &self.limits;
        for (key, v) in [
            ("limits.max_events_per_request", l.max_events_per_request),
            ("limits.max_visitors_per_batch", l.max_visitors_per_batch),
            ("limits.max_visitor_id_bytes", l.max_visitor_id_bytes),
            ("limits.max_type_bytes", l.max_type_bytes),
        ] {
            if v == 0 {
                return invalid(key, "must be at least 1".into());
            }
        }
        let st = &self.store;
        if !(st.retention_days.is_finite()
            && st.retention_days > 0.0
            && st.retention_days <= 36_500.0)
        {
            return invalid(
                "store.retention_days",
                format!(
                    "must be more than 0 and at most 36500, got {}",
                    st.retention_days
                ),
            );
        }
        for (key, v) in [
            ("store.recent_events", st.recent_events as usize),
            ("store.max_group", st.max_group),
            ("store.purge_interval_secs", st.purge_interval_secs as usize),
        ] {
            if v == 0 {
                return invalid(key, "must be at least 1".into());
            }
        }
        if !st.url.is_empty() {
            for one in st.url.split(',').map(str::trim) {
                if !(one.starts_with("redis://") || one.starts_with("rediss://")) {
                    return invalid(
                        "store.url",
                        format!(
                            "{:?} is not a redis:// or rediss:// URL (leave store.url empty for the embedded store)",
                            crate::store::redis_store::redacted(one)
                        ),
                    );
                }
            }
        }
        if st.key_prefix.contains(['{', '}']) {
            return invalid(
                "store.key_prefix",
                format!(
                    "{:?} must not contain '{{' or '}}' (a Redis hash tag would put every key in one slot)",
                    st.key_prefix
                ),
            );
        }
        if !(1..=600_000).contains(&st.redis_timeout_ms) {
            return invalid(
                "store.redis_timeout_ms",
                format!("must be 1 to 600000, got {}", st.redis_timeout_ms),
            );
        }
        self.validate_edge()?;
        // A day: a slower watch is a misconfiguration (0 turns it off), and
        // the bound keeps the timer's arithmetic far from overflow.
        if self.model_watch_secs > MAX_MODEL_WATCH_SECS {
            return invalid(
                "model_watch_secs",
                format!(
                    "must be at most {MAX_MODEL_WATCH_SECS} (a day; 0 turns the watch off), got {}",
                    self.model_watch_secs
                ),
            );
        }
        // Ten years: beyond that a "skew" is a misconfiguration, and the
        // bound keeps the arithmetic on instants far from overflow.
        if l.max_future_skew_secs > 10 * 365 * 86_400 {
            return invalid(
                "limits.max_future_skew_secs",
                format!(
                    "must be at most 315360000 (ten years), got {}",
                    l.max_future_skew_secs
                ),
            );
        }
        Ok(())
    }

    /// Defaults, then the TOML `text`; checked. No environment: the same
    /// text always gives the same settings (tests, fuzzing, tools).
    pub fn from_toml_str(text: &str) -> Result<Settings, ConfigError> {
        let settings: Settings = Figment::from(Serialized::defaults(Settings::default()))
            .merge(Toml::string(text))
            .extract()
            .map_err(Box::new)?;
        settings.validate()?;
        Ok(settings)
    }
}

impl Settings {
    /// The production edge: keys, the anonymous rule, TLS files, limits,
    /// the metrics address.
    fn validate_edge(&self) -> Result<(), ConfigError> {
        let invalid = |key, reason: String| Err(ConfigError::Invalid { key, reason });
        let keyring = crate::auth::Keyring::new(&self.auth.keys)?;
        if keyring.is_empty() && !self.auth.allow_anonymous && !self.listen.ip().is_loopback() {
            return invalid(
                "auth.keys",
                format!(
                    "none configured, and listen is {}, not a loopback address: anyone who \
                     reaches it could read and erase visitors. Add keys (`rung keys new`) or \
                     set auth.allow_anonymous = true",
                    self.listen
                ),
            );
        }
        let t = &self.tls;
        if t.cert.is_some() != t.key.is_some() {
            return invalid(
                "tls",
                "tls.cert and tls.key go together: set both or neither".into(),
            );
        }
        if t.client_ca.is_some() && t.cert.is_none() {
            return invalid(
                "tls.client_ca",
                "needs tls.cert and tls.key (mutual TLS is TLS first)".into(),
            );
        }
        if !self.metrics_listen.is_empty() && self.metrics_addr().is_none() {
            return invalid(
                "metrics_listen",
                format!(
                    "{:?} is not an address such as 127.0.0.1:9464 (empty turns metrics off)",
                    self.metrics_listen
                ),
            );
        }
        let l = &self.limits;
        if !(1024..=1 << 30).contains(&l.max_message_bytes) {
            return invalid(
                "limits.max_message_bytes",
                format!("must be 1024 to 1073741824, got {}", l.max_message_bytes),
            );
        }
        for (key, v) in [
            ("limits.max_concurrent_calls", l.max_concurrent_calls as u64),
            (
                "limits.max_streams_per_connection",
                l.max_streams_per_connection as u64,
            ),
            ("limits.max_connections", l.max_connections as u64),
            ("limits.idle_timeout_secs", l.idle_timeout_secs),
            ("limits.default_deadline_ms", l.default_deadline_ms),
        ] {
            if v == 0 {
                return invalid(key, "must be at least 1".into());
            }
        }
        if l.idle_timeout_secs > MAX_MODEL_WATCH_SECS {
            return invalid(
                "limits.idle_timeout_secs",
                format!("must be at most {MAX_MODEL_WATCH_SECS} (a day)"),
            );
        }
        if l.default_deadline_ms > 86_400_000 {
            return invalid(
                "limits.default_deadline_ms",
                "must be at most 86400000 (a day)".into(),
            );
        }
        Ok(())
    }

    /// Where `GET /metrics` answers; `None` when off (or, before
    /// validation, not an address).
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listen.parse().ok()
    }

    /// Where the model served at start comes from.
    pub fn model_source(&self) -> ModelSource {
        self.model
            .as_deref()
            .map_or(ModelSource::BuiltIn, ModelSource::named)
    }

    /// The folder models may be loaded from.
    pub fn model_dir(&self) -> PathBuf {
        if let Some(d) = &self.model_dir {
            return d.clone();
        }
        match self.model_source() {
            ModelSource::BuiltIn => PathBuf::from(DEFAULT_MODEL_DIR),
            ModelSource::File(model) => model
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .map_or_else(|| PathBuf::from("."), Path::to_path_buf),
        }
    }
}

#[cfg(test)]
// figment::Jail's closures must return figment's own (large) error type.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        Settings::default().validate().unwrap();
    }

    #[test]
    fn file_then_environment_override_defaults() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "rung.toml",
                "listen = \"127.0.0.1:7000\"\n[scoring]\nmax_reasons = 3\n",
            )?;
            jail.set_env("RUNG_SCORING__MAX_REASONS", "7");
            jail.set_env("RUNG_LOG_FORMAT", "json");
            let s = Settings::load(Some(Path::new("rung.toml"))).expect("loads");
            assert_eq!(s.listen.port(), 7000);
            assert_eq!(s.scoring.max_reasons, 7);
            assert_eq!(s.log_format, LogFormat::Json);
            Ok(())
        });
    }

    #[test]
    fn out_of_range_settings_are_refused_naming_the_key() {
        let mut s = Settings::default();
        s.scoring.max_reasons = 11;
        assert!(s
            .validate()
            .unwrap_err()
            .to_string()
            .contains("scoring.max_reasons"));
        let mut s = Settings::default();
        s.bands.high = 0.01;
        assert!(s.validate().unwrap_err().to_string().contains("bands"));
        let s = Settings {
            model_watch_secs: MAX_MODEL_WATCH_SECS + 1,
            ..Settings::default()
        };
        assert!(s
            .validate()
            .unwrap_err()
            .to_string()
            .contains("model_watch_secs"));
    }

    #[test]
    fn the_model_is_built_in_unless_a_file_is_named() {
        figment::Jail::expect_with(|jail| {
            let s = Settings::load(None).expect("loads");
            assert_eq!(s.model_source(), ModelSource::BuiltIn);
            assert_eq!(s.model_dir(), Path::new("models"));

            jail.set_env("RUNG_MODEL", "built-in");
            let s = Settings::load(None).expect("loads");
            assert_eq!(s.model_source(), ModelSource::BuiltIn);

            jail.set_env("RUNG_MODEL", "shop/models/m.json");
            let s = Settings::load(None).expect("loads");
            assert_eq!(
                s.model_source(),
                ModelSource::File("shop/models/m.json".into())
            );
            assert_eq!(s.model_dir(), Path::new("shop/models"));

            jail.set_env("RUNG_MODEL_DIR", "/srv/models");
            let s = Settings::load(None).expect("loads");
            assert_eq!(s.model_dir(), Path::new("/srv/models"));
            Ok(())
        });
    }

    #[test]
    fn unknown_keys_in_the_file_are_refused() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("rung.toml", "lisen = \"127.0.0.1:7000\"\n")?;
            let e = Settings::load(Some(Path::new("rung.toml"))).unwrap_err();
            assert!(e.to_string().contains("lisen"), "{e}");
            Ok(())
        });
    }
}

#[cfg(test)]
mod example_file {
    use super::*;

    /// config/rung.example.toml documents every setting with its default;
    /// this keeps it honest.
    #[test]
    fn the_example_settings_file_loads_and_equals_the_defaults() {
        let text = include_str!("../config/rung.example.toml");
        let from_file: Settings = Figment::from(Serialized::defaults(Settings::default()))
            .merge(Toml::string(text))
            .extract()
            .unwrap();
        assert_eq!(from_file, Settings::default());
        let keys_documented = toml::from_str::<toml::Table>(text).unwrap();
        let defaults = toml::Table::try_from(Settings::default()).unwrap();
        for (key, value) in &defaults {
            assert!(
                keys_documented.contains_key(key),
                "{key} is not in the example"
            );
            if let Some(section) = value.as_table() {
                let documented = keys_documented[key].as_table().unwrap();
                for k in section.keys() {
                    assert!(
                        documented.contains_key(k),
                        "{key}.{k} is not in the example"
                    );
                }
            }
        }
    }
}
