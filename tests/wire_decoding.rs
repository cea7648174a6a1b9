//! The server reads Score, ScoreBatch and Track requests through its own
//! zero-copy messages (`src/grpc/wire.proto`: strings as `Bytes` slices,
//! the attributes map as its entries). For any request bytes, that reading
//! must give exactly what the public messages' prost decoding gives: the
//! same query, or the same INVALID_ARGUMENT message; and where prost
//! refuses the bytes (a string that is not UTF-8), a refusal too.
//!
//! Requests are generated as wire messages, so they can hold what the
//! public types cannot express but a client can send: repeated map keys
//! and strings that are not UTF-8.

use std::collections::HashMap;

use bytes::Bytes;
use proptest::prelude::*;
use prost::Message;
use rung::config::Limits;
use rung::domain::{Millis, Taxonomy};
use rung::grpc::convert::{self, ParseContext};
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

/// The public message as the server's: strings as their bytes, the map as
/// its entries. Equal content, so the same validation must answer alike.
fn event_from_public(e: proto::Event) -> wire::Event {
    wire::Event {
        r#type: e.r#type.into(),
        time: e.time,
        item_id: e.item_id.into(),
        value: e.value,
        event_id: e.event_id.into(),
        attributes: e
            .attributes
            .into_iter()
            .map(|(k, v)| wire::Attribute {
                key: k.into(),
                value: v.into(),
            })
            .collect(),
    }
}

fn score_from_public(r: proto::ScoreRequest) -> wire::ScoreRequest {
    wire::ScoreRequest {
        visitor_id: r.visitor_id.into(),
        events: r.events.into_iter().map(event_from_public).collect(),
        as_of: r.as_of,
        max_reasons: r.max_reasons,
        explain: r.explain,
    }
}

/// Both readings of `bytes`: through the public messages (prost's own
/// strings and map) and through the server's. `None` from the first when
/// prost refuses the bytes.
fn both<P, W, T>(
    bytes: &[u8],
    from_public: impl Fn(P) -> W,
    parse: impl Fn(&W) -> Result<T, FieldError>,
) -> (Option<Result<T, String>>, Result<T, String>)
where
    P: Message + Default,
    W: Message + Default,
{
    let public = P::decode(bytes)
        .ok()
        .map(|p| parse(&from_public(p)).map_err(|e| e.to_string()));
    let w = W::decode(Bytes::copy_from_slice(bytes)).expect("encoded from a wire message");
    (public, parse(&w).map_err(|e| e.to_string()))
}

fn agree<T: PartialEq + std::fmt::Debug>(
    public: Option<Result<T, String>>,
    wire: Result<T, String>,
) {
    match public {
        Some(expected) => assert_eq!(wire, expected),
        None => assert!(
            wire.is_err(),
            "prost refused the bytes; the server took them: {wire:?}"
        ),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn score_requests_read_alike(req in score_request(), ignore in any::<bool>()) {
        let (taxonomy, limits) = (Taxonomy::builtin(), limits());
        let cx = context(&taxonomy, &limits, ignore);
        let bytes = req.encode_to_vec();
        let (public, wire) = both::<proto::ScoreRequest, _, _>(
            &bytes,
            score_from_public,
            |w| convert::score_query(w, &cx),
        );
        agree(public, wire);
    }

    #[test]
    fn track_requests_read_alike(req in score_request(), ignore in any::<bool>()) {
        let (taxonomy, limits) = (Taxonomy::builtin(), limits());
        let cx = context(&taxonomy, &limits, ignore);
        // A Track is a Score's first two fields.
        let track = wire::TrackRequest { visitor_id: req.visitor_id, events: req.events };
        let bytes = track.encode_to_vec();
        let (public, wire) = both::<proto::TrackRequest, _, _>(
            &bytes,
            |p: proto::TrackRequest| wire::TrackRequest {
                visitor_id: p.visitor_id.into(),
                events: p.events.into_iter().map(event_from_public).collect(),
            },
            |w| convert::track_query(w, &cx),
        );
        agree(public, wire);
    }

    #[test]
    fn score_batches_read_alike(
        visitors in proptest::collection::vec(score_request(), 0..5),
        ignore in any::<bool>(),
    ) {
        let (taxonomy, limits) = (Taxonomy::builtin(), limits());
        let cx = context(&taxonomy, &limits, ignore);
        let bytes = wire::ScoreBatchRequest { visitors }.encode_to_vec();
        let (public, wire) = both::<proto::ScoreBatchRequest, _, _>(
            &bytes,
            |p: proto::ScoreBatchRequest| wire::ScoreBatchRequest {
                visitors: p.visitors.into_iter().map(score_from_public).collect(),
            },
            |w| convert::score_batch(w, &cx),
        );
        agree(public, wire);
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
