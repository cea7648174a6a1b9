//! The server reads Score, ScoreBatch and Track requests with its own
//! decoder (`src/grpc/request.rs`: the message taken whole, strings as
//! spans of it). For any request bytes, that reading must give exactly
//! what prost's decoding of the public messages gives: the same query, or
//! the same INVALID_ARGUMENT message; and where prost refuses the bytes
//! (malformed, or a string that is not UTF-8), a refusal too.
//!
//! Requests are generated as `wire` messages (`src/grpc/wire.proto`), so
//! they can hold what the public types cannot express but a client can
//! send: repeated map keys and strings that are not UTF-8; then extended
//! with unknown fields, repeated fields or garbage, or cut short.

use std::collections::HashMap;

use bytes::Bytes;
use proptest::prelude::*;
use prost::Message;
use rung::config::Limits;
use rung::domain::{Millis, Taxonomy};
use rung::grpc::convert::{self, ParseContext};
use rung::grpc::request::{self, Decode};
use rung::grpc::status::FieldError;
use rung::grpc::{proto, wire};

const NOW: Millis = Millis::from_unix_millis(1_767_225_600_000);

/// Small limits, so random requests cross each of them often.
fn limits() -> Limits {
    Limits {
        max_events_per_request: 4,
        max_visitors_per_batch: 3,
        max_visitor_id_bytes: 12,
        max_item_id_bytes: 8,
        max_event_id_bytes: 8,
        max_type_bytes: 24,
        max_attributes: 3,
        max_attribute_bytes: 12,
        ..Limits::default()
    }
}

fn context<'a>(taxonomy: &'a Taxonomy, limits: &'a Limits, ignore: bool) -> ParseContext<'a> {
    ParseContext {
        taxonomy,
        limits,
        default_reasons: 3,
        ignore_unknown_types: ignore,
        now: NOW,
        oldest_storable: NOW.saturating_add_millis(-90 * 86_400_000),
    }
}

fn text() -> impl Strategy<Value = Bytes> {
    prop_oneof![
        Just(Bytes::new()),
        Just(Bytes::from_static(b"view_item")),
        Just(Bytes::from_static(b"add_to_cart")),
        Just(Bytes::from_static(b"Product Added")),
        Just(Bytes::from_static(b"purchase")),
        Just(Bytes::from_static(b"no_such_type")),
        Just(Bytes::from_static(b"sku-1")),
        Just(Bytes::from_static("caf\u{e9}-\u{1f600}".as_bytes())),
        Just(Bytes::from_static(b"tab\there")),
        // Not UTF-8: prost refuses the public message.
        Just(Bytes::from_static(b"bad\xff\xfe")),
        "[a-z_ ]{0,30}".prop_map(Bytes::from),
        proptest::collection::vec(any::<u8>(), 0..6).prop_map(Bytes::from),
    ]
}

fn timestamp() -> impl Strategy<Value = Option<prost_types::Timestamp>> {
    let now = NOW.as_unix_millis() / 1000;
    prop_oneof![
        1 => Just(None),
        6 => (-200 * 86_400i64..86_400, 0i32..1_000_000_000).prop_map(move |(ago, nanos)| {
            Some(prost_types::Timestamp { seconds: now + ago, nanos })
        }),
        1 => (any::<i64>(), any::<i32>())
            .prop_map(|(seconds, nanos)| Some(prost_types::Timestamp { seconds, nanos })),
    ]
}

fn attribute() -> impl Strategy<Value = wire::Attribute> {
    let key = prop_oneof![
        Just(Bytes::from_static(b"a")),
        Just(Bytes::from_static(b"b")),
        Just(Bytes::from_static(b"c")),
        Just(Bytes::from_static(b"d")),
        text(),
    ];
    (key, text()).prop_map(|(key, value)| wire::Attribute { key, value })
}

fn event() -> impl Strategy<Value = wire::Event> {
    (
        text(),
        timestamp(),
        text(),
        prop_oneof![
            Just(0.0),
            Just(19.99),
            Just(f64::NAN),
            Just(f64::INFINITY),
            any::<f64>()
        ],
        text(),
        proptest::collection::vec(attribute(), 0..6),
    )
        .prop_map(
            |(r#type, time, item_id, value, event_id, attributes)| wire::Event {
                r#type,
                time,
                item_id,
                value,
                event_id,
                attributes,
            },
        )
}

fn score_request() -> impl Strategy<Value = wire::ScoreRequest> {
    (
        text(),
        proptest::collection::vec(event(), 0..6),
        timestamp(),
        prop_oneof![Just(0u32), Just(3), Just(10), Just(11), any::<u32>()],
        any::<bool>(),
    )
        .prop_map(
            |(visitor_id, events, as_of, max_reasons, explain)| wire::ScoreRequest {
                visitor_id,
                events,
                as_of,
                max_reasons,
                explain,
            },
        )
}

/// What a client could append to a valid message: garbage, a field this
/// version does not know (of any wire type), or a field sent again.
fn tail() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => Just(Vec::new()),
        1 => proptest::collection::vec(any::<u8>(), 1..12),
        // An unknown field: tag 9 to 40, any valid wire type.
        1 => (9u8..40, prop_oneof![Just(0u8), Just(1), Just(2), Just(5)], proptest::collection::vec(any::<u8>(), 0..10))
            .prop_map(|(tag, wire, payload)| {
                let mut out = vec![(tag << 3) | wire];
                match wire {
                    0 => out.push(payload.first().copied().unwrap_or(1) & 0x7f),
                    1 => out.extend_from_slice(&[7; 8]),
                    5 => out.extend_from_slice(&[7; 4]),
                    _ => {
                        out.push(payload.len() as u8);
                        out.extend_from_slice(&payload);
                    }
                }
                out
            }),
        // An unknown group, skipped as prost skips it.
        1 => Just(vec![(11 << 3) | 3, 8, 1, (11 << 3) | 4]),
        // Field 1 again (visitor_id, or a batch's first visitor).
        1 => text().prop_map(|t| {
            let mut out = vec![(1 << 3) | 2, t.len() as u8];
            out.extend_from_slice(&t);
            out
        }),
    ]
}

/// Both readings of `bytes`: prost's decoding of the public message `P`
/// (re-encoded, so the server reads exactly what prost understood), and
/// the server's own reading. `None` from the first when prost refuses the
/// bytes.
fn both<P, R, T>(
    bytes: &[u8],
    parse: impl Fn(&R) -> Result<T, FieldError>,
) -> (Option<Result<T, String>>, Result<T, String>)
where
    P: Message + Default,
    R: request::Decode,
{
    let read = |b: Bytes| -> Result<T, String> {
        let r = R::decode(b).map_err(|e| format!("decode: {e}"))?;
        parse(&r).map_err(|e| e.to_string())
    };
    let public = P::decode(bytes).ok().map(|p| {
        let canonical = Bytes::from(p.encode_to_vec());
        read(canonical)
    });
    (public, read(Bytes::copy_from_slice(bytes)))
}

fn agree<T: PartialEq + std::fmt::Debug>(
    public: Option<Result<T, String>>,
    server: Result<T, String>,
) {
    match public {
        Some(expected) => assert_eq!(server, expected),
        None => assert!(
            server.is_err(),
            "prost refused the bytes; the server took them: {server:?}"
        ),
    }
}

/// A message's bytes, then a tail, then maybe cut short.
fn mangle(mut bytes: Vec<u8>, tail: Vec<u8>, cut: Option<usize>) -> Vec<u8> {
    bytes.extend_from_slice(&tail);
    if let Some(c) = cut {
        bytes.truncate(c % (bytes.len() + 1));
    }
    bytes
}

fn cut() -> impl Strategy<Value = Option<usize>> {
    prop_oneof![6 => Just(None), 1 => any::<usize>().prop_map(Some)]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn score_requests_read_alike(req in score_request(), tail in tail(), cut in cut(), ignore in any::<bool>()) {
        let (taxonomy, limits) = (Taxonomy::builtin(), limits());
        let cx = context(&taxonomy, &limits, ignore);
        let bytes = mangle(req.encode_to_vec(), tail, cut);
        let (public, server) = both::<proto::ScoreRequest, request::ScoreRequest, _>(
            &bytes,
            |r| convert::score_query(r, &cx),
        );
        agree(public, server);
    }

    #[test]
    fn track_requests_read_alike(req in score_request(), tail in tail(), cut in cut(), ignore in any::<bool>()) {
        let (taxonomy, limits) = (Taxonomy::builtin(), limits());
        let cx = context(&taxonomy, &limits, ignore);
        // A Track is a Score's first two fields.
        let track = wire::TrackRequest { visitor_id: req.visitor_id, events: req.events };
        let bytes = mangle(track.encode_to_vec(), tail, cut);
        let (public, server) = both::<proto::TrackRequest, request::TrackRequest, _>(
            &bytes,
            |r| convert::track_query(r, &cx),
        );
        agree(public, server);
    }

    #[test]
    fn score_batches_read_alike(
        visitors in proptest::collection::vec(score_request(), 0..5),
        tail in tail(),
        cut in cut(),
        ignore in any::<bool>(),
    ) {
        let (taxonomy, limits) = (Taxonomy::builtin(), limits());
        let cx = context(&taxonomy, &limits, ignore);
        let bytes = mangle(wire::ScoreBatchRequest { visitors }.encode_to_vec(), tail, cut);
        let (public, server) = both::<proto::ScoreBatchRequest, request::ScoreBatchRequest, _>(
            &bytes,
            |r| convert::score_batch(r, &cx),
        );
        agree(public, server);
    }

    /// Any bytes at all.
    #[test]
    fn arbitrary_bytes_read_alike(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
        let (taxonomy, limits) = (Taxonomy::builtin(), limits());
        let cx = context(&taxonomy, &limits, true);
        let (public, server) = both::<proto::ScoreRequest, request::ScoreRequest, _>(
            &bytes,
            |r| convert::score_query(r, &cx),
        );
        agree(public, server);
    }
}

/// The cases the generator must reach, spelled out: a repeated key keeps
/// its last value (as a map does), and the stored attributes come sorted.
#[test]
fn a_repeated_attribute_key_keeps_its_last_value() {
    let (taxonomy, limits) = (Taxonomy::builtin(), limits());
    let cx = context(&taxonomy, &limits, false);
    let attr = |k: &'static str, v: &'static str| wire::Attribute {
        key: Bytes::from_static(k.as_bytes()),
        value: Bytes::from_static(v.as_bytes()),
    };
    let track = wire::TrackRequest {
        visitor_id: Bytes::from_static(b"v"),
        events: vec![wire::Event {
            r#type: Bytes::from_static(b"view_item"),
            time: Some(prost_types::Timestamp {
                seconds: NOW.as_unix_millis() / 1000 - 60,
                nanos: 0,
            }),
            // Too long for the limit, then overwritten: a map never saw it.
            attributes: vec![
                attr("b", "first-and-far-too-long"),
                attr("a", "1"),
                attr("b", "2"),
            ],
            ..Default::default()
        }],
    };
    let bytes = track.encode_to_vec();
    let public = proto::TrackRequest::decode(&bytes[..]).unwrap();
    let track = request::TrackRequest::decode(Bytes::from(bytes)).unwrap();
    assert_eq!(
        public.events[0].attributes,
        HashMap::from([("a".into(), "1".into()), ("b".into(), "2".into())])
    );
    let q = convert::track_query(&track, &cx).unwrap();
    assert_eq!(
        q.events[0].attributes,
        vec![("a".into(), "1".into()), ("b".into(), "2".into())]
    );
}
