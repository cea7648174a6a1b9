//! The edge every call passes first, as one tower layer: the content type,
//! who is calling and whether their key allows the RPC, shedding beyond
//! `limits.max_concurrent_calls`, the call's deadline, and — when the call
//! ends — its metrics and one log line, at a level chosen from its code.
//!
//! Health and reflection stay open (probes carry no keys) and are never
//! shed: a load balancer must see an overloaded server as alive.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response};
use http_body::{Body as HttpBody, Frame, SizeHint};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::body::Body;
use tonic::{Code, Status};
use tower::{Layer, Service};
use tracing::Instrument;

use crate::auth::{AuthError, Keyring, Principal, Role};
use crate::metrics::{CallLabels, MethodLabels, Metrics};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;

/// What the edge knows of one RPC.
#[derive(Debug)]
pub struct Rpc {
    /// As in the proto (`Score`): the `method` label.
    pub name: &'static str,
    /// `None`: open to anyone (health, reflection), never shed.
    pub role: Option<Role>,
    /// Unary calls get the default deadline; streams only a sent one.
    pub unary: bool,
}

const fn rpc(name: &'static str, role: Role, unary: bool) -> Rpc {
    Rpc {
        name,
        role: Some(role),
        unary,
    }
}

/// Every RPC by its path. Admin is needed for anything that erases or
/// changes shared state.
static RPCS: [(&str, Rpc); 15] = [
    (
        "/rung.v1.IntentService/Score",
        rpc("Score", Role::Score, true),
    ),
    (
        "/rung.v1.IntentService/ScoreBatch",
        rpc("ScoreBatch", Role::Score, true),
    ),
    (
        "/rung.v1.IntentService/Track",
        rpc("Track", Role::Ingest, true),
    ),
    (
        "/rung.v1.IntentService/TrackStream",
        rpc("TrackStream", Role::Ingest, false),
    ),
    (
        "/rung.v1.IntentService/GetVisitor",
        rpc("GetVisitor", Role::Profiles, true),
    ),
    (
        "/rung.v1.IntentService/ForgetVisitor",
        rpc("ForgetVisitor", Role::Admin, true),
    ),
    (
        "/rung.v1.AudienceService/PutSegment",
        rpc("PutSegment", Role::Admin, true),
    ),
    (
        "/rung.v1.AudienceService/GetSegment",
        rpc("GetSegment", Role::Audiences, true),
    ),
    (
        "/rung.v1.AudienceService/ListSegments",
        rpc("ListSegments", Role::Audiences, true),
    ),
    (
        "/rung.v1.AudienceService/DeleteSegment",
        rpc("DeleteSegment", Role::Admin, true),
    ),
    (
        "/rung.v1.AudienceService/CountSegment",
        rpc("CountSegment", Role::Audiences, true),
    ),
    (
        "/rung.v1.AudienceService/ExportSegment",
        rpc("ExportSegment", Role::Audiences, false),
    ),
    (
        "/rung.v1.AudienceService/Funnel",
        rpc("Funnel", Role::Audiences, true),
    ),
    (
        "/rung.v1.ModelService/GetModel",
        rpc("GetModel", Role::Audiences, true),
    ),
    (
        "/rung.v1.ModelService/ReloadModel",
        rpc("ReloadModel", Role::Admin, true),
    ),
];

const OPEN_PREFIXES: &[(&str, &str)] = &[
    ("/grpc.health.v1.Health/", "Health"),
    (
        "/grpc.reflection.v1.ServerReflection/",
        "ServerReflectionInfo",
    ),
    (
        "/grpc.reflection.v1alpha.ServerReflection/",
        "ServerReflectionInfo",
    ),
];

/// Any other path: still needs a key (tonic answers UNIMPLEMENTED).
static UNKNOWN: Rpc = rpc("unknown", Role::Admin, true);

static OPEN: [Rpc; 2] = [
    Rpc {
        name: "Health",
        role: None,
        unary: false,
    },
    Rpc {
        name: "ServerReflectionInfo",
        role: None,
        unary: false,
    },
];

/// How many RPCs the edge tells apart: the table, the open ones, unknown.
const SLOTS: usize = RPCS.len() + OPEN.len() + 1;

/// The RPC at `path`, and its slot (below [`SLOTS`]) for per-RPC state.
fn lookup(path: &str) -> (usize, &'static Rpc) {
    if let Some(i) = RPCS.iter().position(|(p, _)| *p == path) {
        return (i, &RPCS[i].1);
    }
    match OPEN_PREFIXES.iter().find(|(p, _)| path.starts_with(p)) {
        Some((_, "Health")) => (RPCS.len(), &OPEN[0]),
        Some(_) => (RPCS.len() + 1, &OPEN[1]),
        None => (SLOTS - 1, &UNKNOWN),
    }
}

/// The gRPC code's canonical name, as the `code` label.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// What the edge enforces, shared by every connection.
pub struct Edge {
    keyring: Keyring,
    calls: Arc<Semaphore>,
    max_calls: usize,
    default_deadline: Duration,
    metrics: Arc<Metrics>,
    /// Per RPC slot: its metric series, kept once first used.
    series: Box<[Series]>,
}

/// One RPC's metric series, taken from their families on first use and
/// kept: counting a call then needs no label hashing and no lock.
#[derive(Default)]
struct Series {
    duration: OnceLock<Histogram>,
    shed: OnceLock<Counter>,
    /// By gRPC code (0 to 16).
    codes: [OnceLock<Counter>; 17],
}

impl Edge {
    pub fn new(
        keyring: Keyring,
        max_concurrent_calls: usize,
        default_deadline: Duration,
        metrics: Arc<Metrics>,
    ) -> Edge {
        Edge {
            keyring,
            calls: Arc::new(Semaphore::new(max_concurrent_calls)),
            max_calls: max_concurrent_calls,
            default_deadline,
            metrics,
            series: (0..SLOTS).map(|_| Series::default()).collect(),
        }
    }

    /// The caller, or why not: anonymous when no key is configured.
    fn caller(&self, headers: &HeaderMap) -> Result<Principal, AuthError> {
        if self.keyring.is_empty() {
            return Ok(Principal::anonymous());
        }
        self.keyring.authenticate(
            headers
                .get(http::header::AUTHORIZATION)
                .map(HeaderValue::as_bytes),
        )
    }
}

/// The tower layer over every service of the server.
#[derive(Clone)]
pub struct EdgeLayer(Arc<Edge>);

impl EdgeLayer {
    pub fn new(edge: Edge) -> EdgeLayer {
        EdgeLayer(Arc::new(edge))
    }
}

impl<S> Layer<S> for EdgeLayer {
    type Service = EdgeService<S>;

    fn layer(&self, inner: S) -> EdgeService<S> {
        EdgeService {
            inner,
            edge: self.0.clone(),
        }
    }
}

#[derive(Clone)]
pub struct EdgeService<S> {
    inner: S,
    edge: Arc<Edge>,
}

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

impl<S> Service<Request<Body>> for EdgeService<S>
where
    S: Service<Request<Body>, Response = Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = Response<EdgeBody>;
    type Error = S::Error;
    type Future = BoxFuture<Response<EdgeBody>, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<Body>) -> Self::Future {
        let start = Instant::now();
        let edge = self.edge.clone();
        let (slot, rpc) = lookup(req.uri().path());
        // The connection is busy until the call ends (not idle).
        let on_conn = super::conn::state_of(req.extensions()).map(|s| s.call());
        // The service that was polled ready is the one called; its clone
        // waits for the next call (tower's usual dance).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);

        let refuse = |status: Status, key: &str, http: Option<http::StatusCode>| {
            let code = status.code();
            let mut response = status.into_http::<Body>();
            if let Some(s) = http {
                *response.status_mut() = s;
            }
            finish(&edge, rpc, slot, key, code, start);
            Box::pin(std::future::ready(Ok(response.map(EdgeBody::done)))) as Self::Future
        };

        if !is_grpc(req.headers()) {
            // gRPC over HTTP/2 says 415 for another content type.
            return refuse(
                Status::invalid_argument(
                    "content-type must be application/grpc (this is a gRPC server)",
                ),
                "-",
                Some(http::StatusCode::UNSUPPORTED_MEDIA_TYPE),
            );
        }
        let principal = match rpc.role {
            None => None,
            Some(role) => match edge.caller(req.headers()) {
                Err(e) => return refuse(Status::unauthenticated(e.to_string()), "-", None),
                Ok(p) => match p.require(role) {
                    Err(_) => {
                        let status = Status::permission_denied(format!(
                            "{} needs the role {role:?} (or admin); the key {:?} does not have it",
                            rpc.name,
                            p.name()
                        ));
                        return refuse(status, p.name(), None);
                    }
                    Ok(()) => Some(p),
                },
            },
        };
        // The principal's own name, shared: no allocation per call.
        let key: Option<Arc<str>> = principal.as_ref().map(Principal::shared_name);
        let permit = match rpc.role {
            None => None,
            Some(_) => match edge.calls.clone().try_acquire_owned() {
                Ok(p) => Some(p),
                Err(_) => {
                    edge.series[slot]
                        .shed
                        .get_or_init(|| {
                            edge.metrics
                                .rpc_shed
                                .get_or_create(&MethodLabels { method: rpc.name })
                                .clone()
                        })
                        .inc();
                    return refuse(
                        Status::resource_exhausted(format!(
                            "the server is running {} calls, its limit (limits.max_concurrent_calls); retry with backoff",
                            edge.max_calls
                        )),
                        key_name(&key),
                        None,
                    );
                }
            },
        };
        // tonic also times the call from `grpc-timeout`, but answers
        // CANCELLED; the edge's clock stops a millisecond sooner (tonic polls
        // the call before its own timer), so the caller reads
        // DEADLINE_EXCEEDED.
        let sent = req
            .headers()
            .get("grpc-timeout")
            .and_then(parse_grpc_timeout)
            .map(|d| d.saturating_sub(Duration::from_millis(1)));
        let deadline = sent
            .or(rpc.unary.then_some(edge.default_deadline))
            .map(|d| tokio::time::Instant::from_std(start) + d);
        if let Some(p) = principal {
            req.extensions_mut().insert(p);
        }
        // At debug: under the served level (info) a disabled span costs a
        // call nothing measurable, where an enabled one cost about 0.4 µs
        // (BENCHMARKS.md); the call's own log line names method and key.
        let span = tracing::debug_span!("grpc", method = rpc.name, key = key_name(&key));
        Box::pin(
            async move {
                let call = inner.call(req);
                let response = match deadline {
                    None => call.await?,
                    Some(at) => match tokio::time::timeout_at(at, call).await {
                        Ok(r) => r?,
                        Err(_) => {
                            drop(permit);
                            let s = Status::deadline_exceeded("the call's deadline passed");
                            finish(&edge, rpc, slot, key_name(&key), s.code(), start);
                            return Ok(s.into_http::<Body>().map(EdgeBody::done));
                        }
                    },
                };
                // Trailers-only (every error tonic answers): the code is
                // in the head, and the call is over.
                if let Some(code) = grpc_status(response.headers()) {
                    drop(permit);
                    finish(&edge, rpc, slot, key_name(&key), code, start);
                    return Ok(response.map(EdgeBody::done));
                }
                let tracker = Tracker {
                    edge,
                    rpc,
                    slot,
                    key,
                    start,
                    _permit: permit,
                    _on_conn: on_conn,
                    deadline: deadline.map(|at| Box::pin(tokio::time::sleep_until(at))),
                };
                Ok(response.map(|body| EdgeBody::tracked(body, tracker)))
            }
            .instrument(span),
        )
    }
}

fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

fn grpc_status(headers: &HeaderMap) -> Option<Code> {
    let v = headers.get("grpc-status")?;
    let n: i32 = std::str::from_utf8(v.as_bytes())
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Code::from_i32(n))
}

/// `grpc-timeout`: at most 8 digits and a unit (H, M, S, m, u, n).
fn parse_grpc_timeout(v: &HeaderValue) -> Option<Duration> {
    let s = v.to_str().ok()?;
    let (digits, unit) = s.split_at_checked(s.len().checked_sub(1)?)?;
    if digits.is_empty() || digits.len() > 8 {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// Counts the call, times it, and writes its one log line: server faults at
/// error, a passed deadline at warn, the rest (successes and the caller's
/// own mistakes) at debug.
fn finish(edge: &Edge, rpc: &Rpc, slot: usize, key: &str, code: Code, start: Instant) {
    let elapsed = start.elapsed();
    let m = &edge.metrics;
    let series = &edge.series[slot];
    series.codes[(code as usize).min(16)]
        .get_or_init(|| {
            m.rpc_requests
                .get_or_create(&CallLabels {
                    method: rpc.name,
                    code: code_name(code),
                })
                .clone()
        })
        .inc();
    series
        .duration
        .get_or_init(|| {
            m.rpc_duration
                .get_or_create(&MethodLabels { method: rpc.name })
                .clone()
        })
        .observe(elapsed.as_secs_f64());
    let micros = elapsed.as_micros() as u64;
    let name = code_name(code);
    match code {
        Code::Internal | Code::Unknown | Code::DataLoss | Code::Unavailable => {
            tracing::error!(method = rpc.name, key, code = name, micros, "call failed")
        }
        Code::DeadlineExceeded => {
            tracing::warn!(
                method = rpc.name,
                key,
                code = name,
                micros,
                "call ran out of time"
            )
        }
        _ => tracing::debug!(method = rpc.name, key, code = name, micros, "call"),
    }
}

/// The name a call's log line and span carry: the key's, or `-` for an
/// open call.
fn key_name(key: &Option<Arc<str>>) -> &str {
    key.as_deref().unwrap_or("-")
}

/// A call whose response is still streaming: counted when its trailers
/// pass (or when the client goes away).
struct Tracker {
    edge: Arc<Edge>,
    rpc: &'static Rpc,
    slot: usize,
    key: Option<Arc<str>>,
    start: Instant,
    /// Held until the call ends: long streams count as running calls.
    _permit: Option<OwnedSemaphorePermit>,
    _on_conn: Option<super::conn::CallGuard>,
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
}

/// The response body, watched for the call's end.
pub struct EdgeBody {
    inner: Body,
    tracker: Option<Tracker>,
    /// Set once the deadline cut the stream: what remains is the trailers.
    cut: bool,
}

impl EdgeBody {
    fn done(inner: Body) -> EdgeBody {
        EdgeBody {
            inner,
            tracker: None,
            cut: false,
        }
    }

    fn tracked(inner: Body, tracker: Tracker) -> EdgeBody {
        EdgeBody {
            inner,
            tracker: Some(tracker),
            cut: false,
        }
    }

    fn end(&mut self, code: Code) {
        if let Some(t) = self.tracker.take() {
            finish(&t.edge, t.rpc, t.slot, key_name(&t.key), code, t.start);
        }
    }
}

impl Drop for EdgeBody {
    fn drop(&mut self) {
        // Dropped before its trailers: the client cancelled or went away.
        self.end(Code::Cancelled);
    }
}

impl HttpBody for EdgeBody {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        if this.cut {
            return Poll::Ready(None);
        }
        if let Some(sleep) = this.tracker.as_mut().and_then(|t| t.deadline.as_mut()) {
            if sleep.as_mut().poll(cx).is_ready() {
                this.cut = true;
                this.end(Code::DeadlineExceeded);
                let mut trailers = HeaderMap::new();
                trailers.insert(
                    "grpc-status",
                    HeaderValue::from(Code::DeadlineExceeded as i32),
                );
                trailers.insert(
                    "grpc-message",
                    HeaderValue::from_static("the call's deadline passed"),
                );
                return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
            }
        }
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(code) = frame.trailers_ref().and_then(grpc_status) {
                    this.end(code);
                }
            }
            Poll::Ready(Some(Err(_))) => this.end(Code::Internal),
            Poll::Ready(None) => this.end(Code::Unknown),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.cut || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_are_read_in_every_unit() {
        let t = |s: &'static str| parse_grpc_timeout(&HeaderValue::from_static(s));
        assert_eq!(t("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(t("3M"), Some(Duration::from_secs(180)));
        assert_eq!(t("5S"), Some(Duration::from_secs(5)));
        assert_eq!(t("250m"), Some(Duration::from_millis(250)));
        assert_eq!(t("7u"), Some(Duration::from_micros(7)));
        assert_eq!(t("9n"), Some(Duration::from_nanos(9)));
        assert_eq!(t("123456789S"), None, "at most 8 digits");
        assert_eq!(t("S"), None);
        assert_eq!(t("5x"), None);
        assert_eq!(t(""), None);
    }

    #[test]
    fn every_rpc_in_the_protos_has_a_role() {
        let descriptor = <prost_types::FileDescriptorSet as prost::Message>::decode(
            super::super::proto::FILE_DESCRIPTOR_SET,
        )
        .unwrap();
        let mut n = 0;
        for file in &descriptor.file {
            for service in &file.service {
                for method in &service.method {
                    let path = format!("/{}.{}/{}", file.package(), service.name(), method.name());
                    let (_, rpc) = lookup(&path);
                    assert_eq!(rpc.name, method.name(), "{path}");
                    assert!(rpc.role.is_some(), "{path}");
                    let streaming = method.client_streaming() || method.server_streaming();
                    assert_eq!(rpc.unary, !streaming, "{path}");
                    n += 1;
                }
            }
        }
        assert_eq!(n, RPCS.len());
    }
}
