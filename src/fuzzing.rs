//! The bodies of the fuzz targets in `fuzz/`: each takes arbitrary bytes
//! and feeds them to one reader of outside input exactly as the service or
//! the CLI does. Any panic is a finding. `tests/fuzz_corpus.rs` replays the
//! committed corpus through these same functions, so CI guards it without
//! a fuzzer.
//!
//! Hidden from the docs: this is test support, not API.

use std::path::Path;
use std::sync::OnceLock;

use bytes::Bytes;
use prost::Message;

use crate::audience::definition::{Clause, Definition, LanguageLimits, Node};
use crate::config::{Limits, Settings};
use crate::domain::{Millis, Taxonomy};
use crate::engine::audience::ResumeToken;
use crate::grpc::audience_api::{as_of, segment_name};
use crate::grpc::convert::{self, ParseContext};
use crate::grpc::status::FieldError;
use crate::grpc::{proto, request};
use crate::scoring::timeline;
use crate::training::eventlog::{self, Preset};

/// A fixed server clock (2026-01-01T00:00:00Z): the same input always
/// takes the same path, so a crash replays.
const NOW: Millis = Millis::from_unix_millis(1_767_225_600_000);

fn taxonomy() -> &'static Taxonomy {
    static TAXONOMY: OnceLock<Taxonomy> = OnceLock::new();
    TAXONOMY.get_or_init(Taxonomy::builtin)
}

/// The service's defaults: what a server started without settings checks.
fn defaults() -> &'static Settings {
    static SETTINGS: OnceLock<Settings> = OnceLock::new();
    SETTINGS.get_or_init(Settings::default)
}

fn retention_ms() -> i64 {
    (defaults().store.retention_days * 86_400_000.0) as i64
}

fn language_limits() -> LanguageLimits {
    LanguageLimits {
        max_window_ms: retention_ms(),
        max_windowed_count: timeline::PER_TYPE as u32,
    }
}

fn parse_context(limits: &Limits, ignore_unknown_types: bool) -> ParseContext<'_> {
    ParseContext {
        taxonomy: taxonomy(),
        limits,
        default_reasons: defaults().scoring.max_reasons,
        ignore_unknown_types,
        now: NOW,
        oldest_storable: NOW.saturating_add_millis(-retention_ms()),
    }
}

/// The server's reading of a Score-path request (`R`, [`request`]) next to
/// prost's reading of the public message `P`: where prost reads the bytes,
/// the server must read them and parse them to the same query or the same
/// error (the public message re-encoded is what prost understood); where
/// prost refuses them, the server must refuse them too. The server's
/// outcome, `None` when it could not decode the bytes.
fn agreed<P, R, T>(
    body: &[u8],
    parse: impl Fn(&R) -> Result<T, FieldError>,
) -> Option<Result<T, FieldError>>
where
    P: Message + Default,
    R: request::Decode,
    T: PartialEq + std::fmt::Debug,
{
    let read = |b: Bytes| R::decode(b).ok().map(|r| parse(&r));
    let server = read(Bytes::copy_from_slice(body));
    match P::decode(body) {
        Ok(public) => {
            let expected = read(Bytes::from(public.encode_to_vec()));
            let expected = expected.expect("the server reads prost's own encoding");
            let got = server
                .as_ref()
                .expect("prost read these bytes; the server must");
            assert_eq!(
                got, &expected,
                "the server and prost read the bytes differently"
            );
        }
        Err(_) => assert!(
            server.as_ref().is_none_or(|r| r.is_err()),
            "prost refused the bytes; the server took them"
        ),
    }
    server
}

/// How many request messages [`request`] chooses from.
const MESSAGES: u8 = 14;

/// A gRPC request body. The first byte picks the message (its high bit
/// turns on `ignore_unknown_types`); the rest is decoded as tonic decodes
/// it and checked by the validators the handler calls. Each must answer
/// `Ok` or a [`FieldError`].
pub fn request(data: &[u8]) {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let cx = parse_context(&defaults().limits, selector & 0x80 != 0);
    // A body that does not decode never reaches a handler: the codec
    // answers INVALID_ARGUMENT before the call. The Score and Track
    // requests decode as the server reads them (grpc::request).
    fn decode<M: Message + Default>(body: &[u8]) -> Option<M> {
        M::decode(body).ok()
    }
    let outcome: Result<(), FieldError> = match (selector & 0x7f) % MESSAGES {
        0 => agreed::<proto::ScoreRequest, request::ScoreRequest, _>(body, |r| {
            convert::score_query(r, &cx)
        })
        .map_or(Ok(()), |q| {
            q.map(|q| assert!(q.events.len() <= cx.limits.max_events_per_request))
        }),
        1 => agreed::<proto::ScoreBatchRequest, request::ScoreBatchRequest, _>(body, |r| {
            convert::score_batch(r, &cx)
        })
        .map_or(Ok(()), |qs| {
            qs.map(|qs| assert!(qs.len() <= cx.limits.max_visitors_per_batch))
        }),
        // Track and each TrackStream message.
        2 => agreed::<proto::TrackRequest, request::TrackRequest, _>(body, |r| {
            convert::track_query(r, &cx)
        })
        .map_or(Ok(()), |q| {
            q.map(|q| assert!(q.events.iter().all(|e| e.event.at >= cx.oldest_storable)))
        }),
        3 => decode::<proto::GetVisitorRequest>(body)
            .map_or(Ok(()), |r| convert::visitor_id(r.visitor_id, &cx).map(drop)),
        4 => decode::<proto::ForgetVisitorRequest>(body)
            .map_or(Ok(()), |r| convert::visitor_id(r.visitor_id, &cx).map(drop)),
        5 => decode::<proto::PutSegmentRequest>(body)
            .map_or(Ok(()), |r| segment_target(&r.name, &r.definition)),
        6 => decode::<proto::GetSegmentRequest>(body).map_or(Ok(()), |r| segment_name(&r.name)),
        7 => decode::<proto::DeleteSegmentRequest>(body).map_or(Ok(()), |r| segment_name(&r.name)),
        8 => decode::<proto::CountSegmentRequest>(body).map_or(Ok(()), |r| {
            as_of(r.as_of.as_ref(), "as_of")?;
            segment_target(&r.name, &r.definition)
        }),
        9 => decode::<proto::ExportSegmentRequest>(body).map_or(Ok(()), |r| {
            as_of(r.as_of.as_ref(), "as_of")?;
            segment_target(&r.name, &r.definition)?;
            if let Some(token) = ResumeToken::decode(&r.resume_token) {
                assert_eq!(ResumeToken::decode(&token.encode()), Some(token));
            }
            Ok(())
        }),
        10 => decode::<proto::FunnelRequest>(body).map_or(Ok(()), |r| {
            as_of(r.from.as_ref(), "from")?;
            as_of(r.to.as_ref(), "to").map(drop)
        }),
        11 => decode::<proto::ReloadModelRequest>(body)
            .map_or(Ok(()), |r| convert::model_path(r.path).map(drop)),
        // Messages without fields: decoding is all there is.
        12 => decode::<proto::GetModelRequest>(body).map_or(Ok(()), |_| Ok(())),
        _ => decode::<proto::ListSegmentsRequest>(body).map_or(Ok(()), |_| Ok(())),
    };
    if let Err(e) = outcome {
        assert!(!e.field.is_empty(), "a field error names no field: {e}");
    }
}

/// The checks a segment request's name and definition go through (either
/// may be empty: the handler then asks for the other).
fn segment_target(name: &str, definition: &str) -> Result<(), FieldError> {
    if !name.is_empty() {
        segment_name(name)?;
    }
    if definition.is_empty() {
        return Ok(());
    }
    let def = Definition::parse(definition, taxonomy(), &language_limits())
        .map_err(|e| FieldError::new("definition", e))?;
    compiled(&def);
    Ok(())
}

/// A segment definition, text or JSON form (the first character decides,
/// as in the service), parsed and checked against the built-in taxonomy;
/// nothing is evaluated.
pub fn segment(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Ok(def) = Definition::parse(&text, taxonomy(), &language_limits()) {
        compiled(&def);
    }
}

/// What the service does with a checked definition besides evaluating it,
/// and one property: the canonical JSON it stores and shows reads back as
/// the same definition.
fn compiled(def: &Definition) {
    let canonical = def.to_json();
    let again = Definition::parse_json(&canonical, taxonomy(), &language_limits())
        .unwrap_or_else(|e| panic!("canonical form {canonical} does not parse: {e}"));
    assert_eq!(again.to_json(), canonical, "canonical form is not stable");
    let _ = def.needs_score();
    let _ = def.active_since(NOW);
    let _ = ResumeToken::fingerprint(def);
    fn walk(def: &Definition, n: &Node) {
        let _ = def.node(n.id);
        match &n.clause {
            Clause::And(children) | Clause::Or(children) => {
                children.iter().for_each(|c| walk(def, c))
            }
            Clause::Not(inner) => walk(def, inner),
            _ => {}
        }
    }
    walk(def, def.root());
}

/// A settings file: TOML text over the defaults, then checked.
pub fn settings_file(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(s) = Settings::from_toml_str(text) {
        s.validate().expect("loaded settings are valid");
    }
}

/// The header a preset's files start with (as the datasets publish them),
/// or `None` for layouts without one.
fn header(preset: Preset) -> Option<&'static str> {
    match preset {
        Preset::Rung => Some("visitor_id,time,type,item_id,value,event_id"),
        Preset::Retailrocket => Some("timestamp,visitorid,event,itemid,transactionid"),
        Preset::Rees46 => Some(
            "event_time,event_type,product_id,category_id,category_code,brand,price,user_id,user_session",
        ),
        Preset::Taobao | Preset::Ga4 | Preset::Segment => None,
    }
}

/// One line of an event log, read by every preset's mapping (after the
/// preset's header, if it has one), bad rows tolerated.
pub fn event_log_line(data: &[u8]) {
    for preset in Preset::ALL {
        let mut input = Vec::with_capacity(data.len() + 128);
        if let Some(h) = header(preset) {
            input.extend_from_slice(h.as_bytes());
            input.push(b'\n');
        }
        input.extend_from_slice(data);
        let read = eventlog::read_from(
            input.as_slice(),
            Path::new("fuzz-input"),
            &preset.mapping(),
            taxonomy(),
            usize::MAX,
            &|_| {},
        );
        if let Ok(log) = read {
            let kept: usize = log.visitors.iter().map(|(_, e)| e.len()).sum();
            assert_eq!(log.events, kept as u64);
        }
    }
}
