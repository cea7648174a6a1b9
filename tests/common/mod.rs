//! Test helpers: the real server on an ephemeral port, and a real client.
#![allow(dead_code)]
pub mod cli;
pub mod process;
pub mod python;
pub mod redis;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use rung::config::Settings;
use rung::grpc::proto::intent_service_client::IntentServiceClient;
use rung::grpc::proto::{Event, ScoreRequest};
use rung::startup::Application;
use tokio::sync::oneshot;
use tonic::transport::Channel;

pub const AS_OF_SECS: i64 = 1_767_225_600; // 2026-01-01T00:00:00Z
pub const HOUR: i64 = 3600;
pub const DAY: i64 = 86_400;

pub fn model_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/default.json")
}

/// A fresh, empty data directory under Cargo's scratch space for tests.
pub fn fresh_data_dir() -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("rung-tests")
        .join(format!("{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Settings a test starts from: port 0, the repository's model, a data
/// directory of its own.
pub fn test_settings() -> Settings {
    Settings {
        listen: "127.0.0.1:0".parse().unwrap(),
        model: Some(model_path()),
        data_dir: fresh_data_dir(),
        // Port 0: tests run side by side, each with its own metrics port.
        metrics_listen: "127.0.0.1:0".into(),
        ..Settings::default()
    }
}

/// Settings for a replica on the Redis at `url`, under `key_prefix`
/// (replicas of one deployment share a prefix; tests each take their own).
pub fn redis_settings(url: &str, key_prefix: &str) -> Settings {
    let mut s = test_settings();
    s.store.url = url.to_string();
    s.store.key_prefix = key_prefix.to_string();
    s.store.redis_timeout_ms = 1000;
    // Replica tests write their model variants in temporary folders.
    s.model_dir = Some(std::env::temp_dir());
    s
}

pub struct TestApp {
    pub addr: SocketAddr,
    pub client: IntentServiceClient<Channel>,
    pub channel: Channel,
    server: TestServer,
}

impl TestApp {
    /// Where `GET /metrics` answers.
    pub fn metrics(&self) -> SocketAddr {
        self.server.metrics.expect("test settings serve metrics")
    }

    /// Stops the server and waits for it to finish.
    pub async fn stop(self) {
        self.server.stop().await
    }
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(test_settings()).await
}

/// A running server, without a client (TLS tests connect their own way).
pub struct TestServer {
    pub addr: SocketAddr,
    /// Where `GET /metrics` answers.
    pub metrics: Option<SocketAddr>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl TestServer {
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            t.await.expect("server task");
        }
    }
}

pub async fn spawn_server(settings: Settings) -> TestServer {
    let app = Application::build(&settings).await.expect("server builds");
    let addr = app.local_addr();
    let metrics = app.metrics_addr();
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        app.run_until_stopped(async {
            let _ = rx.await;
        })
        .await
        .expect("server runs");
    });
    TestServer {
        addr,
        metrics,
        stop: Some(tx),
        task: Some(task),
    }
}

pub async fn spawn_app_with(settings: Settings) -> TestApp {
    let server = spawn_server(settings).await;
    let addr = server.addr;
    // The listener is bound before `build` returns, so connecting needs no wait.
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .expect("client connects");
    TestApp {
        addr,
        client: IntentServiceClient::new(channel.clone()),
        channel,
        server,
    }
}

/// Seconds since the Unix epoch, now.
pub fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

pub fn ts(secs: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: secs,
        nanos: 0,
    }
}

/// An event `ago_secs` before [`AS_OF_SECS`].
pub fn ev(kind: &str, ago_secs: i64, item: &str) -> Event {
    Event {
        r#type: kind.into(),
        time: Some(ts(AS_OF_SECS - ago_secs)),
        item_id: item.into(),
        ..Event::default()
    }
}

pub fn request(visitor: &str, events: Vec<Event>) -> ScoreRequest {
    ScoreRequest {
        visitor_id: visitor.into(),
        events,
        as_of: Some(ts(AS_OF_SECS)),
        ..ScoreRequest::default()
    }
}

/// The model artifact as plain JSON, read independently of rung's types.
pub fn artifact_json() -> serde_json::Value {
    let text = std::fs::read_to_string(model_path()).expect("models/default.json exists");
    serde_json::from_str(&text).expect("artifact is JSON")
}

/// Asks `check` until it answers `Some`, and returns that; panics naming
/// `what` once `limit` has passed. Each check is a call to the server, so
/// the loop waits on the server's own answers, never on a fixed sleep.
pub async fn until<T, F, Fut>(what: &str, limit: std::time::Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = std::time::Instant::now() + limit;
    loop {
        if let Some(found) = check().await {
            return found;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: not within {limit:?}"
        );
    }
}

/// `GET /metrics`, as `name{labels}` → value.
pub async fn scrape(addr: SocketAddr) -> std::collections::HashMap<String, f64> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"GET /metrics HTTP/1.1\r\nHost: rung\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut text = String::new();
    tcp.read_to_string(&mut text).await.unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}
