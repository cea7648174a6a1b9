//! The production edge against a real server and real clients: API keys
//! and roles per RPC, TLS and mutual TLS, shedding beyond the concurrency
//! limit, streams per connection, idle and surplus connections, deadlines, the content type,
//! undecodable requests, and what `/metrics` counts.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use rung::auth::{sha256_hex, KeyEntry, Role};
use rung::config::Settings;
use rung::grpc::proto::audience_service_client::AudienceServiceClient;
use rung::grpc::proto::intent_service_client::IntentServiceClient;
use rung::grpc::proto::model_service_client::ModelServiceClient;
use rung::grpc::proto::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::metadata::MetadataValue;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};
use tonic::{Code, Request};

/// One key per role, named after it; the key is `key-<role>`.
fn keys() -> Vec<KeyEntry> {
    Role::ALL
        .iter()
        .map(|r| KeyEntry {
            name: format!("{r}-client"),
            sha256: sha256_hex(format!("key-{r}").as_bytes()),
            roles: vec![*r],
        })
        .collect()
}

fn keyed_settings() -> Settings {
    let mut s = test_settings();
    s.auth.keys = keys();
    s
}

async fn connect(addr: SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

fn with_key<T>(msg: T, key: Option<&str>) -> Request<T> {
    let mut r = Request::new(msg);
    if let Some(k) = key {
        r.metadata_mut().insert(
            "authorization",
            MetadataValue::try_from(format!("Bearer {k}")).unwrap(),
        );
    }
    r
}

/// An event a minute ago (Track refuses events past the retention period).
fn recent(kind: &str, item: &str) -> Event {
    Event {
        r#type: kind.into(),
        time: Some(ts(now_secs() - 60)),
        item_id: item.into(),
        ..Event::default()
    }
}

fn event(kind: &str, id: &str) -> Event {
    let mut e = recent(kind, "sku-1");
    e.event_id = id.into();
    e
}

/// Calls `rpc` with a small valid request; the code it ends with.
async fn call(ch: &Channel, rpc: &str, key: Option<&str>) -> Code {
    let mut intent = IntentServiceClient::new(ch.clone());
    let mut audience = AudienceServiceClient::new(ch.clone());
    let mut model = ModelServiceClient::new(ch.clone());
    let code =
        |r: Result<_, tonic::Status>| r.map_or_else(|s: tonic::Status| s.code(), |_| Code::Ok);
    match rpc {
        "Score" => code(
            intent
                .score(with_key(request("v1", vec![]), key))
                .await
                .map(drop),
        ),
        "ScoreBatch" => code(
            intent
                .score_batch(with_key(
                    ScoreBatchRequest {
                        visitors: vec![request("v1", vec![])],
                    },
                    key,
                ))
                .await
                .map(drop),
        ),
        "Track" => code(
            intent
                .track(with_key(
                    TrackRequest {
                        visitor_id: "v1".into(),
                        events: vec![recent("view_item", "a")],
                    },
                    key,
                ))
                .await
                .map(drop),
        ),
        "TrackStream" => {
            let one = TrackRequest {
                visitor_id: "v1".into(),
                events: vec![recent("view_item", "a")],
            };
            code(
                intent
                    .track_stream(with_key(tokio_stream::iter(vec![one]), key))
                    .await
                    .map(drop),
            )
        }
        "GetVisitor" => code(
            intent
                .get_visitor(with_key(
                    GetVisitorRequest {
                        visitor_id: "v1".into(),
                        ..Default::default()
                    },
                    key,
                ))
                .await
                .map(drop),
        ),
        "ForgetVisitor" => code(
            intent
                .forget_visitor(with_key(
                    ForgetVisitorRequest {
                        visitor_id: "nobody".into(),
                    },
                    key,
                ))
                .await
                .map(drop),
        ),
        "PutSegment" => code(
            audience
                .put_segment(with_key(
                    PutSegmentRequest {
                        name: "s1".into(),
                        definition: "last_seen within 7d".into(),
                        overwrite: true,
                        ..Default::default()
                    },
                    key,
                ))
                .await
                .map(drop),
        ),
        "GetSegment" => code(
            audience
                .get_segment(with_key(
                    GetSegmentRequest {
                        name: "cart_abandoners".into(),
                    },
                    key,
                ))
                .await
                .map(drop),
        ),
        "ListSegments" => code(
            audience
                .list_segments(with_key(ListSegmentsRequest::default(), key))
                .await
                .map(drop),
        ),
        "DeleteSegment" => code(
            audience
                .delete_segment(with_key(
                    DeleteSegmentRequest {
                        name: "no-such-segment".into(),
                    },
                    key,
                ))
                .await
                .map(drop),
        ),
        "CountSegment" => code(
            audience
                .count_segment(with_key(
                    CountSegmentRequest {
                        name: "cart_abandoners".into(),
                        ..Default::default()
                    },
                    key,
                ))
                .await
                .map(drop),
        ),
        "ExportSegment" => match audience
            .export_segment(with_key(
                ExportSegmentRequest {
                    name: "cart_abandoners".into(),
                    ..Default::default()
                },
                key,
            ))
            .await
        {
            Err(s) => s.code(),
            Ok(r) => {
                let mut stream = r.into_inner();
                loop {
                    match stream.message().await {
                        Ok(Some(_)) => continue,
                        Ok(None) => break Code::Ok,
                        Err(s) => break s.code(),
                    }
                }
            }
        },
        "Funnel" => code(
            audience
                .funnel(with_key(FunnelRequest::default(), key))
                .await
                .map(drop),
        ),
        "GetModel" => code(
            model
                .get_model(with_key(GetModelRequest::default(), key))
                .await
                .map(drop),
        ),
        "ReloadModel" => code(
            model
                .reload_model(with_key(ReloadModelRequest::default(), key))
                .await
                .map(drop),
        ),
        other => panic!("no such RPC {other}"),
    }
}

/// The issue's table, written out by hand: which role opens which RPC.
const NEEDS: &[(&str, Role)] = &[
    ("Score", Role::Score),
    ("ScoreBatch", Role::Score),
    ("Track", Role::Ingest),
    ("TrackStream", Role::Ingest),
    ("GetVisitor", Role::Profiles),
    ("ListSegments", Role::Audiences),
    ("GetSegment", Role::Audiences),
    ("CountSegment", Role::Audiences),
    ("ExportSegment", Role::Audiences),
    ("Funnel", Role::Audiences),
    ("GetModel", Role::Audiences),
    ("ForgetVisitor", Role::Admin),
    ("PutSegment", Role::Admin),
    ("DeleteSegment", Role::Admin),
    ("ReloadModel", Role::Admin),
];

#[tokio::test]
async fn each_rpc_is_open_to_its_role_and_admin_and_refused_to_the_rest() {
    let server = spawn_server(keyed_settings()).await;
    let ch = connect(server.addr).await;

    for &(rpc, needed) in NEEDS {
        assert_eq!(
            call(&ch, rpc, None).await,
            Code::Unauthenticated,
            "{rpc} without a key"
        );
        assert_eq!(
            call(&ch, rpc, Some("not-a-key")).await,
            Code::Unauthenticated,
            "{rpc} with an unknown key"
        );
        for role in Role::ALL {
            let key = format!("key-{role}");
            let code = call(&ch, rpc, Some(&key)).await;
            if role == needed || role == Role::Admin {
                assert!(
                    !matches!(code, Code::PermissionDenied | Code::Unauthenticated),
                    "{rpc} with the {role} key: {code:?}"
                );
            } else {
                assert_eq!(code, Code::PermissionDenied, "{rpc} with the {role} key");
            }
        }
    }
    server.stop().await;
}

#[tokio::test]
async fn a_refusal_names_the_role_needed_and_health_and_reflection_stay_open() {
    let server = spawn_server(keyed_settings()).await;
    let ch = connect(server.addr).await;

    let refused = IntentServiceClient::new(ch.clone())
        .forget_visitor(with_key(
            ForgetVisitorRequest {
                visitor_id: "v".into(),
            },
            Some("key-score"),
        ))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    assert!(refused.message().contains("Admin"), "{}", refused.message());
    assert!(
        refused.message().contains("score-client"),
        "{}",
        refused.message()
    );
    assert!(!refused.message().contains("key-score"));

    let health = tonic_health::pb::health_client::HealthClient::new(ch.clone())
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .expect("health needs no key");
    assert_eq!(health.into_inner().status, 1);
    let mut reflection =
        tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient::new(ch.clone());
    let req = tonic_reflection::pb::v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            tonic_reflection::pb::v1::server_reflection_request::MessageRequest::ListServices(
                String::new(),
            ),
        ),
    };
    let mut answers = reflection
        .server_reflection_info(tokio_stream::iter(vec![req]))
        .await
        .expect("reflection needs no key")
        .into_inner();
    assert!(answers.message().await.unwrap().is_some());
    server.stop().await;
}

#[tokio::test]
async fn without_keys_the_server_starts_only_on_loopback_unless_allowed() {
    let mut s = test_settings();
    s.listen = "0.0.0.0:0".parse().unwrap();
    let refused = rung::startup::Application::build(&s)
        .await
        .err()
        .expect("refused without keys on every interface");
    assert!(refused.to_string().contains("auth.keys"), "{refused}");

    s.auth.allow_anonymous = true;
    let server = spawn_server(s).await;
    let ch = connect(SocketAddr::from(([127, 0, 0, 1], server.addr.port()))).await;
    assert_eq!(call(&ch, "ForgetVisitor", None).await, Code::Ok);
    server.stop().await;

    let mut s = keyed_settings();
    s.listen = "0.0.0.0:0".parse().unwrap();
    let server = spawn_server(s).await;
    server.stop().await;
}

// ---------------------------------------------------------------- TLS

struct Pki {
    ca: String,
    server_cert: String,
    server_key: String,
    client_cert: String,
    client_key: String,
    /// A client certificate from another CA.
    stranger_cert: String,
    stranger_key: String,
}

struct Ca {
    cert: rcgen::Certificate,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

fn ca(name: &str) -> Ca {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    Ca {
        cert,
        issuer: rcgen::Issuer::new(params, key),
    }
}

fn signed(names: &[&str], ca: &Ca) -> (String, String) {
    let mut params =
        rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, names[0]);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca.issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

fn pki() -> Pki {
    let root = ca("rung test CA");
    let other = ca("someone else's CA");
    let (server_cert, server_key) = signed(&["localhost", "127.0.0.1"], &root);
    let (client_cert, client_key) = signed(&["recs-client"], &root);
    let (stranger_cert, stranger_key) = signed(&["stranger"], &other);
    Pki {
        ca: root.cert.pem(),
        server_cert,
        server_key,
        client_cert,
        client_key,
        stranger_cert,
        stranger_key,
    }
}

fn tls_settings(dir: &std::path::Path, pki: &Pki, mutual: bool) -> Settings {
    let write = |name: &str, text: &str| {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let mut s = test_settings();
    s.tls.cert = Some(write("server.pem", &pki.server_cert));
    s.tls.key = Some(write("server.key", &pki.server_key));
    if mutual {
        s.tls.client_ca = Some(write("ca.pem", &pki.ca));
    }
    s
}

async fn tls_channel(
    addr: SocketAddr,
    ca: Option<&str>,
    identity: Option<(&str, &str)>,
) -> Result<Channel, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new().domain_name("localhost");
    if let Some(ca) = ca {
        tls = tls.ca_certificate(Certificate::from_pem(ca));
    }
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    Channel::from_shared(format!("https://localhost:{}", addr.port()))
        .unwrap()
        .tls_config(tls)?
        .connect()
        .await
}

/// Whether a Score over this channel (if it connected) succeeds.
async fn scores(ch: Result<Channel, tonic::transport::Error>) -> bool {
    match ch {
        Err(_) => false,
        Ok(ch) => call(&ch, "Score", None).await == Code::Ok,
    }
}

#[tokio::test]
async fn tls_serves_clients_that_trust_its_ca_and_plaintext_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki();
    let server = spawn_server(tls_settings(dir.path(), &pki, false)).await;

    assert!(scores(tls_channel(server.addr, Some(&pki.ca), None).await).await);
    assert!(
        !scores(tls_channel(server.addr, None, None).await).await,
        "a client that does not trust the CA is refused"
    );
    let plain = Channel::from_shared(format!("http://{}", server.addr))
        .unwrap()
        .connect()
        .await;
    assert!(!scores(plain).await, "plaintext does not get through");
    server.stop().await;
}

#[tokio::test]
async fn mutual_tls_admits_only_clients_with_a_certificate_from_the_client_ca() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki();
    let server = spawn_server(tls_settings(dir.path(), &pki, true)).await;

    assert!(
        scores(
            tls_channel(
                server.addr,
                Some(&pki.ca),
                Some((&pki.client_cert, &pki.client_key))
            )
            .await
        )
        .await
    );
    assert!(
        !scores(tls_channel(server.addr, Some(&pki.ca), None).await).await,
        "no client certificate"
    );
    assert!(
        !scores(
            tls_channel(
                server.addr,
                Some(&pki.ca),
                Some((&pki.stranger_cert, &pki.stranger_key))
            )
            .await
        )
        .await,
        "a certificate from another CA"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_half_configured_or_unreadable_tls_setting_stops_the_start() {
    let mut s = test_settings();
    s.tls.cert = Some("server.pem".into());
    let e = rung::startup::Application::build(&s).await.err().unwrap();
    assert!(e.to_string().contains("tls"), "{e}");

    let mut s = test_settings();
    s.tls.cert = Some("/nonexistent/server.pem".into());
    s.tls.key = Some("/nonexistent/server.key".into());
    let e = rung::startup::Application::build(&s).await.err().unwrap();
    assert!(e.to_string().contains("tls.cert"), "{e}");
}

// ------------------------------------------------------- limits, shedding

/// A TrackStream left open: a call running until it is finished.
async fn open_stream(
    ch: &Channel,
) -> (
    tokio::sync::mpsc::Sender<TrackRequest>,
    tokio::task::JoinHandle<Result<TrackSummary, tonic::Status>>,
) {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let mut client = IntentServiceClient::new(ch.clone());
    let task = tokio::spawn(async move {
        client
            .track_stream(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .map(|r| r.into_inner())
    });
    // The call is running once its first message has been answered for:
    // send one and wait until the server has stored it.
    tx.send(TrackRequest {
        visitor_id: "streamer".into(),
        events: vec![recent("view_item", "a")],
    })
    .await
    .unwrap();
    (tx, task)
}

async fn wait_until_stored(ch: &Channel, visitor: &str) {
    let client = IntentServiceClient::new(ch.clone());
    until(
        &format!("{visitor} stored"),
        Duration::from_secs(10),
        || {
            let mut client = client.clone();
            async move {
                let got = client
                    .get_visitor(GetVisitorRequest {
                        visitor_id: visitor.into(),
                        ..Default::default()
                    })
                    .await;
                got.ok().map(|_| ())
            }
        },
    )
    .await
}

#[tokio::test]
async fn beyond_the_concurrency_limit_calls_are_shed_and_admitted_ones_succeed() {
    let mut s = test_settings();
    s.limits.max_concurrent_calls = 2;
    let server = spawn_server(s).await;
    let ch = connect(server.addr).await;

    // Arrange: one running stream holds one of the two places.
    let (tx, stream) = open_stream(&ch).await;
    wait_until_stored(&ch, "streamer").await;

    // Act: a burst of slow calls (big batches) from several connections.
    let batch = ScoreBatchRequest {
        visitors: (0..300)
            .map(|i| {
                request(
                    &format!("b{i}"),
                    (0..40).map(|j| ev("view_item", 60 + j, "x")).collect(),
                )
            })
            .collect(),
    };
    let mut calls = Vec::new();
    for i in 0..40 {
        let ch = if i % 2 == 0 {
            ch.clone()
        } else {
            connect(server.addr).await
        };
        let b = batch.clone();
        calls.push(tokio::spawn(async move {
            IntentServiceClient::new(ch).score_batch(b).await
        }));
    }
    let mut shed = 0;
    let mut ok = 0;
    for c in calls {
        match c.await.unwrap() {
            Ok(r) => {
                assert_eq!(r.into_inner().results.len(), 300);
                ok += 1;
            }
            Err(s) => {
                assert_eq!(s.code(), Code::ResourceExhausted, "{s:?}");
                assert!(s.message().contains("max_concurrent_calls"));
                shed += 1;
            }
        }
    }
    // Health is never shed.
    tonic_health::pb::health_client::HealthClient::new(ch.clone())
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .unwrap();
    drop(tx);
    let summary = stream
        .await
        .unwrap()
        .expect("the stream was admitted and succeeds");
    assert_eq!(summary.accepted, 1);

    // Assert
    assert!(shed > 0 && ok > 0, "shed {shed}, ok {ok}");
    let m = scrape(server.metrics.unwrap()).await;
    assert_eq!(
        m.get(r#"rung_rpc_shed_total{method="ScoreBatch"}"#),
        Some(&(shed as f64))
    );
    assert_eq!(
        m.get(r#"rung_rpc_requests_total{method="ScoreBatch",code="RESOURCE_EXHAUSTED"}"#),
        Some(&(shed as f64))
    );
    server.stop().await;
}

#[tokio::test]
async fn with_every_place_taken_a_call_is_refused_at_once_and_admitted_after() {
    let mut s = test_settings();
    s.limits.max_concurrent_calls = 1;
    let server = spawn_server(s).await;
    let ch = connect(server.addr).await;
    let (tx, stream) = open_stream(&ch).await;
    // Once the stream's call runs, the one place is taken: a call beyond
    // the limit is refused.
    until("a Score shed", Duration::from_secs(10), || async {
        (call(&ch, "Score", None).await == Code::ResourceExhausted).then_some(())
    })
    .await;
    drop(tx);
    stream.await.unwrap().unwrap();
    assert_eq!(call(&ch, "Score", None).await, Code::Ok);
    server.stop().await;
}

/// Reads from a raw connection until the server closes it; the bytes read.
async fn read_until_closed(tcp: &mut tokio::net::TcpStream) -> usize {
    let mut buf = [0u8; 1024];
    let mut total = 0;
    loop {
        match tokio::time::timeout(Duration::from_secs(30), tcp.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return total,
            Ok(Ok(n)) => total += n,
            Err(_) => panic!("the connection was not closed"),
        }
    }
}

#[tokio::test]
async fn idle_connections_are_closed_and_busy_ones_are_not() {
    let mut s = test_settings();
    s.limits.idle_timeout_secs = 1;
    let server = spawn_server(s).await;

    // A socket that never says a word.
    let mut silent = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    read_until_closed(&mut silent).await;

    // A stream that stays open longer than the idle limit is left alone:
    // it is still open after a silent socket opened later has been closed
    // for idleness, so the limit has surely passed for it too.
    let ch = connect(server.addr).await;
    let (tx, stream) = open_stream(&ch).await;
    let mut later = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    read_until_closed(&mut later).await;
    tx.send(TrackRequest {
        visitor_id: "streamer".into(),
        events: vec![recent("add_to_cart", "a")],
    })
    .await
    .unwrap();
    drop(tx);
    let summary = stream
        .await
        .unwrap()
        .expect("the busy connection stayed open");
    assert_eq!(summary.accepted, 2);
    server.stop().await;
}

#[tokio::test]
async fn connections_beyond_the_limit_are_closed_on_arrival() {
    let mut s = test_settings();
    s.limits.max_connections = 2;
    let server = spawn_server(s).await;
    let held: Vec<_> =
        futures_util::future::join_all((0..2).map(|_| tokio::net::TcpStream::connect(server.addr)))
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();

    let mut third = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    // A gRPC client's preface, so an admitted connection would answer.
    third
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .ok();
    assert_eq!(
        read_until_closed(&mut third).await,
        0,
        "closed without a word"
    );

    drop(held);
    // Room again once they go (the server notices the closed sockets on
    // its own time: ask until a new connection's call is answered).
    until("a connection admitted", Duration::from_secs(10), || async {
        let ch = Channel::from_shared(format!("http://{}", server.addr))
            .unwrap()
            .connect()
            .await
            .ok()?;
        (call(&ch, "Score", None).await == Code::Ok).then_some(())
    })
    .await;
    server.stop().await;
}

/// One HTTP/2 frame read from a raw connection: type, flags, stream, payload.
struct RawFrame {
    kind: u8,
    flags: u8,
    stream: u32,
    payload: Vec<u8>,
}

async fn read_frame(tcp: &mut tokio::net::TcpStream) -> RawFrame {
    let mut head = [0u8; 9];
    tokio::time::timeout(Duration::from_secs(30), tcp.read_exact(&mut head))
        .await
        .expect("the server answers")
        .expect("the connection stays open");
    let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
    let mut payload = vec![0u8; len];
    tcp.read_exact(&mut payload).await.unwrap();
    RawFrame {
        kind: head[3],
        flags: head[4],
        stream: u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff,
        payload,
    }
}

fn raw_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = (payload.len() as u32).to_be_bytes()[1..].to_vec();
    out.extend_from_slice(&[kind, flags]);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// HEADERS opening a TrackStream call on `stream`, its body left open.
/// The header block is HPACK without Huffman coding or indexing.
fn open_track_stream(stream: u32) -> Vec<u8> {
    let mut block = vec![0x83, 0x86]; // :method POST, :scheme http
    let mut literal = |name_index: &[u8], value: &str| {
        block.extend_from_slice(name_index);
        block.push(value.len() as u8);
        block.extend_from_slice(value.as_bytes());
    };
    literal(&[0x04], "/rung.v1.IntentService/TrackStream");
    literal(&[0x01], "localhost");
    literal(&[0x0f, 0x10], "application/grpc"); // content-type is index 31
    literal(&[0x00, 0x02, b't', b'e'], "trailers");
    raw_frame(0x1, 0x4, stream, &block) // END_HEADERS, not END_STREAM
}

/// Reads frames until the answer to a PING carrying `mark`: every stream
/// the server reset on the way, with the reason code.
async fn resets_until_pong(tcp: &mut tokio::net::TcpStream, mark: u8) -> HashMap<u32, u32> {
    tcp.write_all(&raw_frame(0x6, 0, 0, &[mark; 8]))
        .await
        .unwrap();
    let mut resets = HashMap::new();
    loop {
        let f = read_frame(tcp).await;
        match f.kind {
            0x3 => {
                let code = u32::from_be_bytes(f.payload[..4].try_into().unwrap());
                resets.insert(f.stream, code);
            }
            0x6 if f.flags & 0x1 == 1 && f.payload == [mark; 8] => return resets,
            0x7 => panic!("the server went away: {:?}", f.payload),
            _ => {}
        }
    }
}

#[tokio::test]
async fn streams_beyond_the_per_connection_limit_are_refused_and_room_comes_back() {
    const LIMIT: u32 = 3;
    const REFUSED_STREAM: u32 = 0x7;
    let mut s = test_settings();
    s.limits.max_streams_per_connection = LIMIT;
    let server = spawn_server(s).await;

    // Arrange: a raw HTTP/2 client that does not hold itself to the
    // server's limit (a well-behaved one would wait for room).
    let mut tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    tcp.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .unwrap();
    tcp.write_all(&raw_frame(0x4, 0, 0, &[])).await.unwrap();
    let settings = loop {
        let f = read_frame(&mut tcp).await;
        if f.kind == 0x4 && f.flags & 0x1 == 0 {
            break f.payload;
        }
    };
    let advertised: HashMap<u16, u32> = settings
        .chunks(6)
        .map(|c| {
            (
                u16::from_be_bytes([c[0], c[1]]),
                u32::from_be_bytes([c[2], c[3], c[4], c[5]]),
            )
        })
        .collect();
    assert_eq!(
        advertised.get(&0x3),
        Some(&LIMIT),
        "SETTINGS_MAX_CONCURRENT_STREAMS"
    );
    tcp.write_all(&raw_frame(0x4, 0x1, 0, &[])).await.unwrap(); // ACK

    // Act: twice the limit of calls opened and left open.
    let ids: Vec<u32> = (0..2 * LIMIT).map(|i| 1 + 2 * i).collect();
    for &id in &ids {
        tcp.write_all(&open_track_stream(id)).await.unwrap();
    }
    let resets = resets_until_pong(&mut tcp, 1).await;

    // Assert: the first LIMIT run; every one after is refused.
    for (n, id) in ids.iter().enumerate() {
        if n < LIMIT as usize {
            assert_eq!(resets.get(id), None, "stream {id} was admitted");
        } else {
            assert_eq!(resets.get(id), Some(&REFUSED_STREAM), "stream {id}");
        }
    }

    // Act: the first call ends (an empty body), then one more opens.
    tcp.write_all(&raw_frame(0x0, 0x1, ids[0], &[]))
        .await
        .unwrap();
    loop {
        let f = read_frame(&mut tcp).await;
        if f.stream == ids[0] && f.flags & 0x1 == 1 {
            break; // its trailers: the call is over on both sides
        }
        assert_ne!(f.kind, 0x3, "the ended stream was not reset");
    }
    let next = ids.last().unwrap() + 2;
    tcp.write_all(&open_track_stream(next)).await.unwrap();

    // Assert: room came back for it.
    let resets = resets_until_pong(&mut tcp, 2).await;
    assert_eq!(resets.get(&next), None, "stream {next} was admitted");
    drop(tcp);
    server.stop().await;
}

#[tokio::test]
async fn a_sent_deadline_cuts_a_stream_and_the_default_cuts_only_unary_calls() {
    let mut s = test_settings();
    s.limits.default_deadline_ms = 1;
    let server = spawn_server(s).await;
    let ch = connect(server.addr).await;

    // A stream opened before a unary call that the 1 ms default cuts
    // outlives that call: the default is for unary calls only.
    let (tx, stream) = open_stream(&ch).await;

    // A big unary call does not fit in 1 ms (its 17 MB alone take longer).
    let big = ScoreBatchRequest {
        visitors: (0..1000)
            .map(|i| {
                request(
                    &format!("d{i}"),
                    (0..200)
                        .map(|j| ev("view_item", 60 + j, "item-0000"))
                        .collect(),
                )
            })
            .collect(),
    };
    let e = IntentServiceClient::new(ch.clone())
        .score_batch(big)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::DeadlineExceeded, "{e:?}");
    drop(tx);
    assert_eq!(stream.await.unwrap().unwrap().accepted, 1);

    // A sent grpc-timeout ends a stream that runs past it. A raw peer sends
    // it, since tonic's client would also keep the time itself (and answer
    // its caller CANCELLED first).
    let (status, code) =
        raw_open_stream(server.addr, "/rung.v1.IntentService/TrackStream", "300m").await;
    assert_eq!(
        (status, code.as_deref()),
        (200, Some("4")),
        "DEADLINE_EXCEEDED"
    );
    let m = scrape(server.metrics.unwrap()).await;
    assert_eq!(
        m.get(r#"rung_rpc_requests_total{method="TrackStream",code="DEADLINE_EXCEEDED"}"#),
        Some(&1.0)
    );
    server.stop().await;
}

#[tokio::test]
async fn the_documented_batch_maximum_fits_the_default_message_size() {
    let server = spawn_server(test_settings()).await;
    let ch = connect(server.addr).await;
    // 1,000 visitors of 200 events, each with an event id and an item id.
    let batch = ScoreBatchRequest {
        visitors: (0..1000)
            .map(|i| {
                request(
                    &format!("visitor-{i:06}"),
                    (0..200)
                        .map(|j| {
                            let mut e = ev("view_item", 60 + j, &format!("sku-{j:08}"));
                            e.event_id = format!("{i:08}-{j:04}-4000-8000-000000000000");
                            e
                        })
                        .collect(),
                )
            })
            .collect(),
    };
    let bytes = prost::Message::encoded_len(&batch);
    let mut client = IntentServiceClient::new(ch).max_encoding_message_size(64 << 20);
    let scored = client.score_batch(batch).await.expect("fits");
    assert_eq!(scored.into_inner().results.len(), 1000);
    assert!(
        bytes > 4 << 20,
        "the batch is {bytes} bytes, past tonic's 4 MiB default"
    );
    eprintln!("1000 x 200 events: {bytes} bytes");
    server.stop().await;
}

// ------------------------------------------------------ raw HTTP/2 peers

/// Sends `req` over a fresh raw HTTP/2 connection: the answer's status and
/// grpc-status (from its head, or else its trailers).
async fn raw_send<B>(addr: SocketAddr, req: http::Request<B>) -> (u16, Option<String>)
where
    B: http_body::Body<Data = bytes::Bytes> + Send + Unpin + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    use http_body_util::BodyExt;
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let resp = sender.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    let grpc_status = |h: &http::HeaderMap| {
        h.get("grpc-status")
            .map(|v| v.to_str().unwrap().to_string())
    };
    let head = grpc_status(resp.headers());
    let collected = resp.into_body().collect().await.unwrap();
    (
        status,
        head.or_else(|| collected.trailers().and_then(grpc_status)),
    )
}

fn raw_request(addr: SocketAddr, path: &str, content_type: &str) -> http::request::Builder {
    http::Request::post(format!("http://{addr}{path}"))
        .header("content-type", content_type)
        .header("te", "trailers")
}

/// One whole request body: the status and grpc-status.
async fn raw_call(
    addr: SocketAddr,
    path: &str,
    content_type: &str,
    body: Vec<u8>,
) -> (u16, Option<String>) {
    let req = raw_request(addr, path, content_type)
        .body(http_body_util::Full::new(bytes::Bytes::from(body)))
        .unwrap();
    raw_send(addr, req).await
}

/// A client stream that sends nothing and stays open, with `grpc-timeout`:
/// the status and grpc-status the server ends it with.
async fn raw_open_stream(addr: SocketAddr, path: &str, timeout: &str) -> (u16, Option<String>) {
    let (_keep_open, rx) = tokio::sync::mpsc::channel::<
        Result<http_body::Frame<bytes::Bytes>, std::convert::Infallible>,
    >(1);
    let req = raw_request(addr, path, "application/grpc")
        .header("grpc-timeout", timeout)
        .body(http_body_util::StreamBody::new(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        ))
        .unwrap();
    raw_send(addr, req).await
}

/// A gRPC frame: uncompressed, its length, the bytes.
fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8];
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

#[tokio::test]
async fn another_content_type_gets_415_and_garbage_bytes_invalid_argument() {
    let server = spawn_server(test_settings()).await;
    let path = "/rung.v1.IntentService/Score";

    let (status, code) = raw_call(server.addr, path, "application/json", b"{}".to_vec()).await;
    assert_eq!(status, 415);
    assert_eq!(code.as_deref(), Some("3"));

    // Field 1 says length 100 but 3 bytes follow: not a protobuf message.
    let garbage = frame(&[0x0a, 100, b'a', b'b', b'c']);
    let (status, code) = raw_call(server.addr, path, "application/grpc", garbage).await;
    assert_eq!(status, 200);
    assert_eq!(code.as_deref(), Some("3"), "INVALID_ARGUMENT, not INTERNAL");

    // The same path with a real message still works.
    let good = frame(&prost::Message::encode_to_vec(&request("v", vec![])));
    let (_, code) = raw_call(server.addr, path, "application/grpc+proto", good).await;
    assert_eq!(code.as_deref(), Some("0"));
    server.stop().await;
}

// ------------------------------------------------------------- metrics

#[tokio::test]
async fn metrics_count_calls_by_code_events_by_outcome_and_show_the_model() {
    let server = spawn_server(keyed_settings()).await;
    let ch = connect(server.addr).await;
    let admin = Some("key-admin");

    for _ in 0..3 {
        assert_eq!(call(&ch, "Score", admin).await, Code::Ok);
    }
    assert_eq!(
        call(&ch, "Score", Some("key-ingest")).await,
        Code::PermissionDenied
    );
    assert_eq!(call(&ch, "Score", None).await, Code::Unauthenticated);
    let mut intent = IntentServiceClient::new(ch.clone());
    let track = |events| {
        with_key(
            TrackRequest {
                visitor_id: "m1".into(),
                events,
            },
            admin,
        )
    };
    intent
        .track(track(vec![
            event("view_item", "e1"),
            event("add_to_cart", "e2"),
        ]))
        .await
        .unwrap();
    intent
        .track(track(vec![event("add_to_cart", "e2")]))
        .await
        .unwrap();
    let version = artifact_json()["version"].as_str().unwrap().to_string();

    let m = scrape(server.metrics.unwrap()).await;
    let get = |k: &str| m.get(k).copied();
    assert_eq!(
        get(r#"rung_rpc_requests_total{method="Score",code="OK"}"#),
        Some(3.0)
    );
    assert_eq!(
        get(r#"rung_rpc_requests_total{method="Score",code="PERMISSION_DENIED"}"#),
        Some(1.0)
    );
    assert_eq!(
        get(r#"rung_rpc_requests_total{method="Score",code="UNAUTHENTICATED"}"#),
        Some(1.0)
    );
    assert_eq!(
        get(r#"rung_rpc_requests_total{method="Track",code="OK"}"#),
        Some(2.0)
    );
    assert_eq!(
        get(r#"rung_rpc_duration_seconds_count{method="Score"}"#),
        Some(5.0)
    );
    assert_eq!(
        get(r#"rung_events_ingested_total{outcome="accepted"}"#),
        Some(2.0)
    );
    assert_eq!(
        get(r#"rung_events_ingested_total{outcome="duplicate"}"#),
        Some(1.0)
    );
    // Three Scores and two Tracks answered a probability.
    assert_eq!(get("rung_score_probability_count"), Some(5.0));
    assert_eq!(
        get(&format!(r#"rung_model_info{{version="{version}"}}"#)),
        Some(1.0)
    );
    assert!(get("rung_store_visitors").is_some());
    server.stop().await;
}
