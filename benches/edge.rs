//! What the edge layer costs a call: the same do-nothing service called
//! bare, behind the edge with no keys (anonymous on loopback), and behind
//! the edge checking a bearer key among five — for Score's path and for
//! Health's (open, never shed). The difference to the bare call is the
//! cost of auth, shedding, the deadline, the metrics and the call's span
//! and log line (under the server's own subscriber) together.
//! Run: cargo bench --bench edge

use std::convert::Infallible;
use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use tower::{Layer, Service, ServiceExt};
use tracing_subscriber::EnvFilter;

use rung::auth::{sha256_hex, KeyEntry, Keyring, Role};
use rung::config::LogFormat;
use rung::grpc::edge::{Edge, EdgeLayer};
use rung::metrics::Metrics;

#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Answers every call with a trailers-only OK, as tonic answers a call
/// that fails early: the cheapest response the edge can see.
fn ok_service() -> impl Service<
    http::Request<tonic::body::Body>,
    Response = http::Response<tonic::body::Body>,
    Error = Infallible,
    Future = std::future::Ready<Result<http::Response<tonic::body::Body>, Infallible>>,
> + Clone {
    tower::service_fn(|_req: http::Request<tonic::body::Body>| {
        let mut r = http::Response::new(tonic::body::Body::empty());
        r.headers_mut()
            .insert("grpc-status", http::HeaderValue::from_static("0"));
        r.headers_mut().insert(
            "content-type",
            http::HeaderValue::from_static("application/grpc"),
        );
        std::future::ready(Ok(r))
    })
}

fn request(path: &str, key: Option<&str>) -> http::Request<tonic::body::Body> {
    let mut b = http::Request::post(path).header("content-type", "application/grpc");
    if let Some(k) = key {
        b = b.header("authorization", format!("Bearer {k}"));
    }
    b.body(tonic::body::Body::empty()).unwrap()
}

fn edge(keys: &[KeyEntry]) -> EdgeLayer {
    EdgeLayer::new(Edge::new(
        Keyring::new(keys).unwrap(),
        512,
        Duration::from_secs(30),
        Arc::new(Metrics::new()),
    ))
}

fn layers(c: &mut Criterion) {
    // The served default: JSON lines at info, here into a sink, so each
    // call pays for its span and its (filtered) log line as served.
    tracing::subscriber::set_global_default(rung::telemetry::subscriber(
        LogFormat::Json,
        EnvFilter::new("info"),
        std::io::sink,
    ))
    .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let keys: Vec<KeyEntry> = (0..5)
        .map(|i| KeyEntry {
            name: format!("client-{i}"),
            sha256: sha256_hex(format!("rung_key_{i:060}").as_bytes()),
            roles: vec![Role::Score],
        })
        .collect();
    let key = format!("rung_key_{:060}", 4);
    let score = "/rung.v1.IntentService/Score";
    let health = "/grpc.health.v1.Health/Check";

    let mut g = c.benchmark_group("edge");
    let bare = ok_service();
    g.bench_function("bare service", |b| {
        b.iter(|| {
            rt.block_on(async {
                let r = bare.clone().oneshot(request(score, None)).await;
                black_box(r.unwrap());
            })
        })
    });
    for (label, layer, path, sent) in [
        ("Score, no keys configured", edge(&[]), score, None),
        (
            "Score, a key among five",
            edge(&keys),
            score,
            Some(key.as_str()),
        ),
        ("Health, open", edge(&keys), health, None),
    ] {
        let svc = layer.layer(ok_service());
        g.bench_function(label, |b| {
            b.iter(|| {
                rt.block_on(async {
                    let r = svc.clone().oneshot(request(path, sent)).await;
                    black_box(r.unwrap());
                })
            })
        });
    }
    g.finish();
}

criterion_group!(benches, layers);
criterion_main!(benches);
