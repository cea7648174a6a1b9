//! The server's reading of the three requests on the Score path — Score,
//! ScoreBatch and Track (TrackStream's messages) — straight from the
//! received bytes: the message is taken whole as one `Bytes` (no copy), and
//! each string field is kept as a span of it, so decoding allocates nothing
//! per string and touches no reference count per field. UTF-8 is checked
//! where a field is read ([`super::convert`]).
//!
//! The wire format is intent.proto's and the semantics are prost's, so any
//! bytes read here give what the public messages' decoding gives: the last
//! of a repeated scalar wins, a repeated message field merges, the last
//! entry of a map key wins (at conversion), unknown fields (groups too) are
//! skipped, the same nesting limit holds. `tests/wire_decoding.rs` checks
//! that against prost on generated and mutated requests, and the `request`
//! fuzz target drives the same comparison.

use std::ops::Range;

use bytes::{Buf, Bytes};
use prost::encoding::{decode_key, decode_varint, WireType};

/// Why bytes are not a valid request message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DecodeError(String);

impl DecodeError {
    fn new(reason: impl Into<String>) -> DecodeError {
        DecodeError(reason.into())
    }
}

impl From<prost::DecodeError> for DecodeError {
    fn from(e: prost::DecodeError) -> DecodeError {
        DecodeError(e.to_string())
    }
}

/// prost's nesting limit: a message's fields are read at one level below it.
const RECURSION_LIMIT: u32 = 100;

type Span = Range<u32>;

/// One event's fields, strings as spans of the request's bytes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EventFields {
    type_name: Span,
    pub time: Option<prost_types::Timestamp>,
    item_id: Span,
    pub value: f64,
    event_id: Span,
    /// Key and value spans, in the order sent (repeats included).
    attributes: Vec<(Span, Span)>,
}

/// One event of a request, borrowing the request's bytes.
#[derive(Clone, Copy)]
pub struct Event<'a> {
    raw: &'a [u8],
    fields: &'a EventFields,
}

impl<'a> Event<'a> {
    fn at(&self, s: &Span) -> &'a [u8] {
        &self.raw[s.start as usize..s.end as usize]
    }
    pub fn type_name(&self) -> &'a [u8] {
        self.at(&self.fields.type_name)
    }
    pub fn time(&self) -> Option<&'a prost_types::Timestamp> {
        self.fields.time.as_ref()
    }
    pub fn item_id(&self) -> &'a [u8] {
        self.at(&self.fields.item_id)
    }
    pub fn value(&self) -> f64 {
        self.fields.value
    }
    pub fn event_id(&self) -> &'a [u8] {
        self.at(&self.fields.event_id)
    }
    pub fn attribute_count(&self) -> usize {
        self.fields.attributes.len()
    }
    /// The attribute entries as sent: a key may repeat (the last wins).
    pub fn attributes(&self) -> impl Iterator<Item = (&'a [u8], &'a [u8])> + '_ {
        self.fields
            .attributes
            .iter()
            .map(move |(k, v)| (self.at(k), self.at(v)))
    }
}

/// The fields of a Score request (a ScoreBatch holds several).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ScoreFields {
    visitor_id: Span,
    events: Vec<EventFields>,
    pub as_of: Option<prost_types::Timestamp>,
    pub max_reasons: u32,
    pub explain: bool,
}

/// A visitor's fields in a request, borrowing its bytes.
#[derive(Clone, Copy)]
pub struct Visitor<'a> {
    raw: &'a [u8],
    visitor_id: &'a Span,
    events: &'a [EventFields],
}

impl<'a> Visitor<'a> {
    pub fn visitor_id(&self) -> &'a [u8] {
        &self.raw[self.visitor_id.start as usize..self.visitor_id.end as usize]
    }
    pub fn event_count(&self) -> usize {
        self.events.len()
    }
    pub fn events(&self) -> impl Iterator<Item = Event<'a>> + '_ {
        let raw = self.raw;
        self.events.iter().map(move |fields| Event { raw, fields })
    }
}

/// `rung.v1.ScoreRequest` as the server reads it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ScoreRequest {
    raw: Bytes,
    pub fields: ScoreFields,
}

impl ScoreRequest {
    pub fn visitor(&self) -> Visitor<'_> {
        visitor(&self.raw, &self.fields.visitor_id, &self.fields.events)
    }
}

/// `rung.v1.ScoreBatchRequest` as the server reads it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ScoreBatchRequest {
    raw: Bytes,
    pub visitors: Vec<ScoreFields>,
}

impl ScoreBatchRequest {
    pub fn visitor<'a>(&'a self, v: &'a ScoreFields) -> Visitor<'a> {
        visitor(&self.raw, &v.visitor_id, &v.events)
    }
}

/// `rung.v1.TrackRequest` as the server reads it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TrackRequest {
    raw: Bytes,
    visitor_id: Span,
    events: Vec<EventFields>,
}

impl TrackRequest {
    pub fn visitor(&self) -> Visitor<'_> {
        visitor(&self.raw, &self.visitor_id, &self.events)
    }
}

fn visitor<'a>(raw: &'a [u8], visitor_id: &'a Span, events: &'a [EventFields]) -> Visitor<'a> {
    Visitor {
        raw,
        visitor_id,
        events,
    }
}

/// A reader over one message's bytes; positions are relative to the whole
/// request, so spans index it directly.
struct Reader<'a> {
    whole: &'a [u8],
    pos: usize,
    end: usize,
    /// Levels of nesting still allowed (prost's count).
    depth: u32,
}

impl<'a> Reader<'a> {
    fn top(whole: &'a [u8]) -> Reader<'a> {
        Reader {
            whole,
            pos: 0,
            end: whole.len(),
            depth: RECURSION_LIMIT,
        }
    }

    fn more(&self) -> bool {
        self.pos < self.end
    }

    fn rest(&self) -> &'a [u8] {
        &self.whole[self.pos..self.end]
    }

    /// Runs a prost decoding function on the rest, then moves past what it read.
    fn with<T>(
        &mut self,
        f: impl FnOnce(&mut &'a [u8]) -> Result<T, prost::DecodeError>,
    ) -> Result<T, DecodeError> {
        let mut buf = self.rest();
        let before = buf.remaining();
        let value = f(&mut buf)?;
        self.pos += before - buf.remaining();
        Ok(value)
    }

    fn key(&mut self) -> Result<(u32, WireType), DecodeError> {
        self.with(decode_key)
    }

    fn varint(&mut self, tag: u32, wire: WireType) -> Result<u64, DecodeError> {
        expect(wire, WireType::Varint, tag)?;
        self.with(decode_varint)
    }

    fn double(&mut self, tag: u32, wire: WireType) -> Result<f64, DecodeError> {
        expect(wire, WireType::SixtyFourBit, tag)?;
        if self.end - self.pos < 8 {
            return Err(DecodeError::new("buffer underflow"));
        }
        let mut b = self.rest();
        self.pos += 8;
        Ok(b.get_f64_le())
    }

    /// A length-delimited field's span.
    fn delimited(&mut self, tag: u32, wire: WireType) -> Result<Span, DecodeError> {
        expect(wire, WireType::LengthDelimited, tag)?;
        let len = self.with(decode_varint)?;
        if len > (self.end - self.pos) as u64 {
            return Err(DecodeError::new("buffer underflow"));
        }
        let start = self.pos;
        self.pos += len as usize;
        Ok(start as u32..self.pos as u32)
    }

    /// A nested message's reader, one level down; fails at prost's limit.
    fn nested(&mut self, tag: u32, wire: WireType) -> Result<Reader<'a>, DecodeError> {
        if self.depth == 0 {
            return Err(DecodeError::new("recursion limit reached"));
        }
        let span = self.delimited(tag, wire)?;
        Ok(Reader {
            whole: self.whole,
            pos: span.start as usize,
            end: span.end as usize,
            depth: self.depth - 1,
        })
    }

    /// Skips a field this reader does not know, as prost does (groups too).
    fn skip(&mut self, tag: u32, wire: WireType, depth: u32) -> Result<(), DecodeError> {
        if depth == 0 {
            return Err(DecodeError::new("recursion limit reached"));
        }
        let len = match wire {
            WireType::Varint => {
                self.with(decode_varint)?;
                0
            }
            WireType::ThirtyTwoBit => 4,
            WireType::SixtyFourBit => 8,
            WireType::LengthDelimited => self.with(decode_varint)?,
            WireType::StartGroup => loop {
                if !self.more() {
                    return Err(DecodeError::new("buffer underflow"));
                }
                let (inner, inner_wire) = self.key()?;
                if inner_wire == WireType::EndGroup {
                    if inner != tag {
                        return Err(DecodeError::new("unexpected end group tag"));
                    }
                    break 0;
                }
                self.skip(inner, inner_wire, depth - 1)?;
            },
            WireType::EndGroup => return Err(DecodeError::new("unexpected end group tag")),
        };
        if len > (self.end - self.pos) as u64 {
            return Err(DecodeError::new("buffer underflow"));
        }
        self.pos += len as usize;
        Ok(())
    }

    fn skip_unknown(&mut self, tag: u32, wire: WireType) -> Result<(), DecodeError> {
        let depth = self.depth;
        self.skip(tag, wire, depth)
    }
}

/// A string field seen again: the last occurrence wins, but prost checks
/// every occurrence as it decodes, so the one replaced must be UTF-8 too.
/// (The kept one is checked where it is read, naming its field.)
fn replace(slot: &mut Span, new: Span, whole: &[u8]) -> Result<(), DecodeError> {
    if std::str::from_utf8(&whole[slot.start as usize..slot.end as usize]).is_err() {
        return Err(DecodeError::new(
            "invalid string value: data is not UTF-8 encoded",
        ));
    }
    *slot = new;
    Ok(())
}

fn expect(got: WireType, want: WireType, tag: u32) -> Result<(), DecodeError> {
    if got == want {
        Ok(())
    } else {
        Err(DecodeError::new(format!(
            "field {tag}: invalid wire type {got:?} (expected {want:?})"
        )))
    }
}

/// A Timestamp merged into `into` (a repeated message field merges).
fn timestamp(
    into: &mut Option<prost_types::Timestamp>,
    mut r: Reader<'_>,
) -> Result<(), DecodeError> {
    let ts = into.get_or_insert_with(Default::default);
    while r.more() {
        let (tag, wire) = r.key()?;
        match tag {
            1 => ts.seconds = r.varint(tag, wire)? as i64,
            2 => ts.nanos = r.varint(tag, wire)? as i32,
            _ => r.skip_unknown(tag, wire)?,
        }
    }
    Ok(())
}

fn attribute(mut r: Reader<'_>) -> Result<(Span, Span), DecodeError> {
    let (mut key, mut value) = (0..0, 0..0);
    while r.more() {
        let (tag, wire) = r.key()?;
        match tag {
            1 => replace(&mut key, r.delimited(tag, wire)?, r.whole)?,
            2 => replace(&mut value, r.delimited(tag, wire)?, r.whole)?,
            _ => r.skip_unknown(tag, wire)?,
        }
    }
    Ok((key, value))
}

fn event(e: &mut EventFields, mut r: Reader<'_>) -> Result<(), DecodeError> {
    while r.more() {
        let (tag, wire) = r.key()?;
        match tag {
            1 => replace(&mut e.type_name, r.delimited(tag, wire)?, r.whole)?,
            2 => timestamp(&mut e.time, r.nested(tag, wire)?)?,
            3 => replace(&mut e.item_id, r.delimited(tag, wire)?, r.whole)?,
            4 => e.value = r.double(tag, wire)?,
            5 => replace(&mut e.event_id, r.delimited(tag, wire)?, r.whole)?,
            6 => e.attributes.push(attribute(r.nested(tag, wire)?)?),
            _ => r.skip_unknown(tag, wire)?,
        }
    }
    Ok(())
}

fn score_fields(mut r: Reader<'_>) -> Result<ScoreFields, DecodeError> {
    let mut s = ScoreFields::default();
    while r.more() {
        let (tag, wire) = r.key()?;
        match tag {
            1 => replace(&mut s.visitor_id, r.delimited(tag, wire)?, r.whole)?,
            2 => {
                let inner = r.nested(tag, wire)?;
                let mut e = EventFields::default();
                event(&mut e, inner)?;
                s.events.push(e);
            }
            3 => timestamp(&mut s.as_of, r.nested(tag, wire)?)?,
            4 => s.max_reasons = r.varint(tag, wire)? as u32,
            5 => s.explain = r.varint(tag, wire)? != 0,
            _ => r.skip_unknown(tag, wire)?,
        }
    }
    Ok(s)
}

fn batch(mut r: Reader<'_>) -> Result<Vec<ScoreFields>, DecodeError> {
    let mut visitors = Vec::new();
    while r.more() {
        let (tag, wire) = r.key()?;
        match tag {
            1 => visitors.push(score_fields(r.nested(tag, wire)?)?),
            _ => r.skip_unknown(tag, wire)?,
        }
    }
    Ok(visitors)
}

fn track(mut r: Reader<'_>) -> Result<(Span, Vec<EventFields>), DecodeError> {
    let (mut visitor_id, mut events) = (0..0, Vec::new());
    while r.more() {
        let (tag, wire) = r.key()?;
        match tag {
            1 => replace(&mut visitor_id, r.delimited(tag, wire)?, r.whole)?,
            2 => {
                let inner = r.nested(tag, wire)?;
                let mut e = EventFields::default();
                event(&mut e, inner)?;
                events.push(e);
            }
            _ => r.skip_unknown(tag, wire)?,
        }
    }
    Ok((visitor_id, events))
}

/// The whole message, taken without a copy when `buf` is tonic's.
fn whole(mut buf: impl Buf) -> Bytes {
    let n = buf.remaining();
    buf.copy_to_bytes(n)
}

/// What the server's generated service decodes requests with
/// ([`super::codec`]): each of these messages read whole.
pub trait Decode: Sized {
    fn decode(buf: impl Buf) -> Result<Self, DecodeError>;
}

impl Decode for ScoreRequest {
    fn decode(buf: impl Buf) -> Result<Self, DecodeError> {
        let raw = whole(buf);
        let fields = score_fields(Reader::top(&raw))?;
        Ok(ScoreRequest { raw, fields })
    }
}

impl Decode for ScoreBatchRequest {
    fn decode(buf: impl Buf) -> Result<Self, DecodeError> {
        let raw = whole(buf);
        let visitors = batch(Reader::top(&raw))?;
        Ok(ScoreBatchRequest { raw, visitors })
    }
}

impl Decode for TrackRequest {
    fn decode(buf: impl Buf) -> Result<Self, DecodeError> {
        let raw = whole(buf);
        let (visitor_id, events) = track(Reader::top(&raw))?;
        Ok(TrackRequest {
            raw,
            visitor_id,
            events,
        })
    }
}
