//! Protobuf messages ↔ domain types. Every check a request needs happens
//! here, at the edge, and fails with the path of the offending field.

use std::path::PathBuf;

use crate::config::{Limits, MAX_REASONS};
use crate::deploy::{ModelState, Swap};
use crate::domain::event::stable_hash;
use crate::domain::{Event, ItemKey, Millis, NewEvent, Stage, StoredEvent, Taxonomy, VisitorId};
use crate::engine::{Profile, Reason, Score, ScoreQuery, TrackQuery};
use crate::scoring::model::Figures;
use crate::scoring::Band;

use super::proto;
use super::request::{self, Visitor};
use super::status::FieldError;

/// What parsing a request needs to know besides the request.
pub struct ParseContext<'a> {
    pub taxonomy: &'a Taxonomy,
    pub limits: &'a Limits,
    pub default_reasons: u32,
    pub ignore_unknown_types: bool,
    /// The server's clock, read once per call: the default `as_of` and the
    /// reference for the future-skew rule.
    pub now: Millis,
    /// Events older than this are refused for storage (the retention period).
    pub oldest_storable: Millis,
}

pub fn visitor_id(raw: String, cx: &ParseContext) -> Result<VisitorId, FieldError> {
    VisitorId::parse(raw, cx.limits.max_visitor_id_bytes)
        .map_err(|e| FieldError::new("visitor_id", e))
}

/// A `string` field as the server's messages carry it ([`request`]): bytes,
/// UTF-8 checked here, as a decoder of the public messages would.
fn text<'a>(field: &str, raw: &'a [u8]) -> Result<&'a str, FieldError> {
    std::str::from_utf8(raw).map_err(|e| {
        FieldError::new(
            field,
            format!("is not valid UTF-8 (at byte {})", e.valid_up_to()),
        )
    })
}

fn request_visitor_id(raw: &[u8], cx: &ParseContext) -> Result<VisitorId, FieldError> {
    visitor_id(text("visitor_id", raw)?.to_owned(), cx)
}

/// Which use the events are parsed for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Purpose {
    /// Scored and dropped: raw fields are not kept.
    Score,
    /// Stored: raw fields kept, and old events refused.
    Store,
}

/// Parses a request's events, each kept as `keep` makes it (a scored
/// event needs only its [`Event`]: no second list); unknown types skipped
/// (when so configured) are counted in the second value.
fn events<T>(
    v: Visitor<'_>,
    cx: &ParseContext,
    purpose: Purpose,
    keep: impl Fn(NewEvent) -> T,
) -> Result<(Vec<T>, u32), FieldError> {
    if v.event_count() > cx.limits.max_events_per_request {
        return Err(FieldError::new(
            "events",
            format!(
                "{} events exceed the maximum of {} per visitor per request",
                v.event_count(),
                cx.limits.max_events_per_request
            ),
        ));
    }
    let latest_allowed = cx
        .now
        .saturating_add_millis((cx.limits.max_future_skew_secs as i64).saturating_mul(1000));
    let mut out = Vec::with_capacity(v.event_count());
    let mut ignored_unknown_type = 0u32;
    for (i, e) in v.events().enumerate() {
        match event(e, cx, latest_allowed, purpose) {
            Ok(Some(ev)) => out.push(keep(ev)),
            Ok(None) => ignored_unknown_type += 1,
            Err(err) => return Err(err.within(&format!("events[{i}]"))),
        }
    }
    Ok((out, ignored_unknown_type))
}

pub fn track_query(
    req: &request::TrackRequest,
    cx: &ParseContext,
) -> Result<TrackQuery, FieldError> {
    let v = req.visitor();
    let visitor = request_visitor_id(v.visitor_id(), cx)?;
    // A Track stores events; one with none would create an empty visitor.
    if v.event_count() == 0 {
        return Err(FieldError::new(
            "events",
            "must not be empty: a Track stores at least one event",
        ));
    }
    let (events, ignored_unknown_type) = events(v, cx, Purpose::Store, |e| e)?;
    Ok(TrackQuery {
        visitor,
        events,
        ignored_unknown_type,
    })
}

pub fn timestamp(t: &prost_types::Timestamp) -> Result<Millis, crate::domain::time::TimeError> {
    Millis::from_parts(t.seconds, t.nanos)
}

pub fn to_timestamp(m: Millis) -> prost_types::Timestamp {
    let (seconds, nanos) = m.to_parts();
    prost_types::Timestamp { seconds, nanos }
}

pub fn score_query(
    req: &request::ScoreRequest,
    cx: &ParseContext,
) -> Result<ScoreQuery, FieldError> {
    score_fields(req.visitor(), &req.fields, cx)
}

fn score_fields(
    v: Visitor<'_>,
    req: &request::ScoreFields,
    cx: &ParseContext,
) -> Result<ScoreQuery, FieldError> {
    let visitor = request_visitor_id(v.visitor_id(), cx)?;
    let as_of = match &req.as_of {
        Some(t) => Some(timestamp(t).map_err(|e| FieldError::new("as_of", e))?),
        None => None,
    };
    let max_reasons = match req.max_reasons {
        0 => cx.default_reasons,
        n if n <= MAX_REASONS => n,
        n => {
            return Err(FieldError::new(
                "max_reasons",
                format!("must be 0 (server default) to {MAX_REASONS}, got {n}"),
            ))
        }
    };
    let (events, ignored_unknown_type) = events(v, cx, Purpose::Score, |e| e.event)?;
    Ok(ScoreQuery {
        visitor,
        events,
        as_of,
        max_reasons: max_reasons as usize,
        explain: req.explain,
        ignored_unknown_type,
    })
}

/// An event's attributes as a map would hold them: the last entry of each
/// key, sorted by key. Only built when they are kept or one is too long.
fn attribute_map<'a>(e: request::Event<'a>) -> Result<Vec<(&'a str, &'a str)>, FieldError> {
    let mut map = Vec::with_capacity(e.attribute_count());
    for (k, v) in e.attributes() {
        map.push((text("attributes", k)?, text("attributes", v)?));
    }
    map.reverse();
    // Stable: of one key's entries the last sent comes first, and stays.
    map.sort_by(|a, b| a.0.cmp(b.0));
    map.dedup_by(|later, kept| later.0 == kept.0);
    Ok(map)
}

/// Checks an event's attributes as the public `map<string, string>` means
/// them (the last entry of a key wins) without building a map unless they
/// are kept: the kept pairs, sorted by key, for [`Purpose::Store`].
fn attributes(
    e: request::Event<'_>,
    cx: &ParseContext,
    purpose: Purpose,
) -> Result<Vec<(String, String)>, FieldError> {
    let l = cx.limits;
    let mut too_long = false;
    for (k, v) in e.attributes() {
        text("attributes", k)?;
        text("attributes", v)?;
        too_long |= k.len() + v.len() > l.max_attribute_bytes;
    }
    // Fewer entries than the limit means fewer keys too: no map needed.
    let map = if e.attribute_count() > l.max_attributes || too_long || purpose == Purpose::Store {
        attribute_map(e)?
    } else {
        Vec::new()
    };
    if map.len() > l.max_attributes {
        return Err(FieldError::new(
            "attributes",
            format!(
                "has {} entries; the maximum is {}",
                map.len(),
                l.max_attributes
            ),
        ));
    }
    if let Some((k, v)) = map
        .iter()
        .find(|(k, v)| k.len() + v.len() > l.max_attribute_bytes)
    {
        return Err(FieldError::new(
            format!("attributes[{k:?}]"),
            format!(
                "key and value are {} bytes; the maximum is {}",
                k.len() + v.len(),
                l.max_attribute_bytes
            ),
        ));
    }
    Ok(match purpose {
        Purpose::Score => Vec::new(),
        Purpose::Store => map
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
    })
}

/// `Ok(None)`: an unknown type the server is configured to skip.
fn event(
    e: request::Event<'_>,
    cx: &ParseContext,
    latest_allowed: Millis,
    purpose: Purpose,
) -> Result<Option<NewEvent>, FieldError> {
    let l = cx.limits;
    // Every string is checked, even of an event skipped below: what the
    // server accepts does not depend on which fields it reads.
    let type_name = text("type", e.type_name())?;
    let item_id = text("item_id", e.item_id())?;
    let event_id = text("event_id", e.event_id())?;
    if type_name.is_empty() {
        return Err(FieldError::new("type", "must not be empty"));
    }
    if type_name.len() > l.max_type_bytes {
        return Err(FieldError::new(
            "type",
            format!(
                "is {} bytes long; the maximum is {}",
                type_name.len(),
                l.max_type_bytes
            ),
        ));
    }
    let kind = match cx.taxonomy.resolve(type_name) {
        Some(k) => k,
        None if cx.ignore_unknown_types => {
            for (k, v) in e.attributes() {
                text("attributes", k)?;
                text("attributes", v)?;
            }
            return Ok(None);
        }
        None => {
            return Err(FieldError::new(
                "type",
                format!("unknown event type {type_name:?} (not a taxonomy type or alias)"),
            ))
        }
    };
    let at = match e.time() {
        None => return Err(FieldError::new("time", "is required")),
        Some(t) => timestamp(t).map_err(|err| FieldError::new("time", err))?,
    };
    if at > latest_allowed {
        return Err(FieldError::new(
            "time",
            format!(
                "{} is more than {} s ahead of the server's clock ({})",
                at.to_rfc3339(),
                l.max_future_skew_secs,
                cx.now.to_rfc3339()
            ),
        ));
    }
    if purpose == Purpose::Store && at < cx.oldest_storable {
        return Err(FieldError::new(
            "time",
            format!(
                "{} is older than the retention period (events before {} are not kept)",
                at.to_rfc3339(),
                cx.oldest_storable.to_rfc3339()
            ),
        ));
    }
    if !e.value().is_finite() {
        return Err(FieldError::new(
            "value",
            format!("must be finite, got {}", e.value()),
        ));
    }
    for (field, len, max) in [
        ("item_id", item_id.len(), l.max_item_id_bytes),
        ("event_id", event_id.len(), l.max_event_id_bytes),
    ] {
        if len > max {
            return Err(FieldError::new(
                field,
                format!("is {len} bytes long; the maximum is {max}"),
            ));
        }
    }
    let attributes = attributes(e, cx, purpose)?;
    let event = Event {
        kind,
        at,
        item: ItemKey::of(item_id),
        value: e.value(),
        id: (!event_id.is_empty()).then(|| stable_hash(event_id)),
    };
    Ok(Some(match purpose {
        Purpose::Score => NewEvent {
            event,
            event_id: String::new(),
            item_id: String::new(),
            attributes,
        },
        Purpose::Store => NewEvent {
            event,
            event_id: event_id.to_owned(),
            item_id: item_id.to_owned(),
            attributes,
        },
    }))
}

pub fn score_batch(
    req: &request::ScoreBatchRequest,
    cx: &ParseContext,
) -> Result<Vec<ScoreQuery>, FieldError> {
    if req.visitors.len() > cx.limits.max_visitors_per_batch {
        return Err(FieldError::new(
            "visitors",
            format!(
                "{} visitors exceed the maximum of {} per batch",
                req.visitors.len(),
                cx.limits.max_visitors_per_batch
            ),
        ));
    }
    req.visitors
        .iter()
        .enumerate()
        .map(|(i, v)| {
            score_fields(req.visitor(v), v, cx).map_err(|e| e.within(&format!("visitors[{i}]")))
        })
        .collect()
}

pub fn stage(s: Stage) -> proto::Stage {
    match s {
        Stage::Awareness => proto::Stage::Awareness,
        Stage::Consideration => proto::Stage::Consideration,
        Stage::Intent => proto::Stage::Intent,
        Stage::Purchase => proto::Stage::Purchase,
    }
}

pub fn band(b: Band) -> proto::Band {
    match b {
        Band::Low => proto::Band::Low,
        Band::Medium => proto::Band::Medium,
        Band::High => proto::Band::High,
    }
}

fn reason(r: Reason) -> proto::Reason {
    proto::Reason {
        feature: r.feature.to_string(),
        contribution: r.contribution,
        value: r.value,
    }
}

pub fn score_response(s: Score) -> proto::ScoreResponse {
    let ignored = s.ignored_after_as_of + s.ignored_unknown_type + s.ignored_duplicate;
    proto::ScoreResponse {
        visitor_id: s.visitor.into_string(),
        probability: s.probability,
        ladder_points: s.ladder.points,
        ladder_score: s.ladder.score,
        rung: s.rung.map(|r| r.to_string()).unwrap_or_default(),
        stage: stage(s.stage) as i32,
        band: band(s.band) as i32,
        reasons: s.reasons.into_iter().map(reason).collect(),
        model_version: s.model_version.to_string(),
        ignored_events: ignored,
        ignored_after_as_of: s.ignored_after_as_of,
        ignored_unknown_type: s.ignored_unknown_type,
        ignored_duplicate: s.ignored_duplicate,
        as_of: Some(to_timestamp(s.as_of)),
        log_odds: s.log_odds,
        features: s.features.into_iter().map(reason).collect(),
    }
}

fn stored_event(e: StoredEvent) -> proto::Event {
    proto::Event {
        r#type: e.kind,
        time: Some(to_timestamp(e.at)),
        item_id: e.item_id,
        value: e.value,
        event_id: e.event_id,
        attributes: e.attributes.into_iter().collect(),
    }
}

pub fn profile_response(
    p: Profile,
    taxonomy: &Taxonomy,
    max_events: u32,
) -> proto::GetVisitorResponse {
    let a = &p.record.aggregate;
    let counts = taxonomy
        .types()
        .iter()
        .zip(a.counts())
        .filter(|(_, &n)| n > 0)
        .map(|(t, &n)| (t.name.clone(), n))
        .collect();
    let keep = if max_events == 0 {
        p.recent.len()
    } else {
        max_events as usize
    };
    proto::GetVisitorResponse {
        visitor_id: p.visitor.into_string(),
        counts,
        rung: taxonomy
            .milestone_at(a.highest_milestone())
            .map(|t| t.name.clone())
            .unwrap_or_default(),
        stage: stage(a.stage()) as i32,
        first_seen: a.first().map(to_timestamp),
        last_seen: a.last().map(to_timestamp),
        sessions: a.sessions(),
        events: a.events(),
        recent_events: p.recent.into_iter().take(keep).map(stored_event).collect(),
    }
}

/// The longest model path ReloadModel takes (Linux's PATH_MAX).
pub const MAX_MODEL_PATH_BYTES: usize = 4096;

/// ReloadModel's `path`: `None` when empty (the serving model's own file).
pub fn model_path(raw: String) -> Result<Option<PathBuf>, FieldError> {
    if raw.is_empty() {
        return Ok(None);
    }
    if raw.len() > MAX_MODEL_PATH_BYTES {
        return Err(FieldError::new(
            "path",
            format!(
                "is {} bytes long; the maximum is {MAX_MODEL_PATH_BYTES}",
                raw.len()
            ),
        ));
    }
    if raw.contains('\0') {
        return Err(FieldError::new("path", "contains a NUL byte"));
    }
    Ok(Some(PathBuf::from(raw)))
}

fn model_figures(f: &Figures) -> proto::ModelFigures {
    proto::ModelFigures {
        examples: f.examples as u64,
        positives: f.positives as u64,
        base_rate: f.base_rate,
        roc_auc: f.roc_auc,
        log_loss: f.log_loss,
        brier: f.brier,
        pr_auc: f.pr_auc,
    }
}

pub fn model_response(state: &ModelState) -> proto::GetModelResponse {
    let d = &state.serving;
    let card = &d.card;
    proto::GetModelResponse {
        version: d.version().to_string(),
        feature_names: d
            .model
            .feature_names()
            .iter()
            .map(|n| n.to_string())
            .collect(),
        metrics: Some(proto::ModelMetrics {
            validation: Some(model_figures(&card.metrics.validation)),
            ladder_baseline: Some(model_figures(&card.metrics.ladder_baseline)),
        }),
        trained_at: card.trained_at.map(to_timestamp),
        description: card.description.clone(),
        taxonomy_fingerprint: card.taxonomy_fingerprint.clone(),
        path: d.source.as_path().display().to_string(),
        loaded_at: Some(to_timestamp(d.loaded_at)),
        horizon_days: card.horizon_days,
        last_refusal: state.last_refusal.as_deref().map(|r| proto::ModelRefusal {
            path: r.model.as_path().display().to_string(),
            at: Some(to_timestamp(r.at)),
            reason: r.reason.clone(),
        }),
    }
}

pub fn reload_response(swap: &Swap) -> proto::ReloadModelResponse {
    proto::ReloadModelResponse {
        version: swap.current.version().to_string(),
        previous_version: swap.previous.version().to_string(),
        changed: swap.changed(),
        path: swap.current.source.as_path().display().to_string(),
        loaded_at: Some(to_timestamp(swap.current.loaded_at)),
    }
}

pub fn funnel_response(r: crate::audience::funnel::FunnelReport) -> proto::FunnelResponse {
    fn step(s: crate::audience::funnel::Step) -> proto::FunnelStep {
        let previous = s.visitors + s.drop_off;
        proto::FunnelStep {
            name: s.name,
            visitors: s.visitors,
            step_conversion: s.conversion.unwrap_or(0.0),
            drop_off: s.drop_off,
            drop_off_rate: if previous > 0 {
                s.drop_off as f64 / previous as f64
            } else {
                0.0
            },
        }
    }
    proto::FunnelResponse {
        from: Some(to_timestamp(r.range.from)),
        to: Some(to_timestamp(r.range.to)),
        visitors: r.visitors,
        sessions: r.sessions,
        milestones: r.milestones.into_iter().map(step).collect(),
        stages: r.stages.into_iter().map(step).collect(),
        event_rates: r
            .rates
            .into_iter()
            .map(|x| proto::EventTypeRate {
                event_type: x.event_type,
                events: x.events,
                per_100_sessions: x.per_100_sessions.unwrap_or(0.0),
            })
            .collect(),
        approximate_visitors: r.approximate_visitors,
    }
}
