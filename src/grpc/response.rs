//! The Score path's answers, written straight from the engine's [`Score`]:
//! the bytes prost writes for the public `ScoreResponse`, `ScoreBatchResponse`
//! and `TrackResponse` (tests compare them byte for byte), without copying
//! each feature, milestone and model name into a `String` of a public
//! message first. IntentService's server is generated over these types
//! (build.rs); clients keep the public ones.

use prost::bytes::{Buf, BufMut};
use prost::encoding::{
    encode_key, encode_varint, encoded_len_varint, key_len, skip_field, DecodeContext, WireType,
};
use prost::{DecodeError, Message};

use crate::engine::{Reason, Score};

use super::convert::{band, stage, to_timestamp};

/// One `ScoreResponse`.
#[derive(Debug)]
pub struct ScoreResponse(pub Score);

/// One `ScoreBatchResponse`: a result per visitor, in order.
#[derive(Debug)]
pub struct ScoreBatchResponse(pub Vec<Score>);

/// One `TrackResponse`.
#[derive(Debug)]
pub struct TrackResponse {
    pub accepted: u32,
    pub duplicates: u32,
    pub score: Score,
}

// Each field as proto3 writes it: left out when it holds its default, in
// tag order (as prost's derived messages write them).

fn str_len(tag: u32, s: &str) -> usize {
    if s.is_empty() {
        0
    } else {
        key_len(tag) + encoded_len_varint(s.len() as u64) + s.len()
    }
}

fn put_str(tag: u32, s: &str, buf: &mut impl BufMut) {
    if !s.is_empty() {
        encode_key(tag, WireType::LengthDelimited, buf);
        encode_varint(s.len() as u64, buf);
        buf.put_slice(s.as_bytes());
    }
}

fn double_len(tag: u32, v: f64) -> usize {
    if v != 0.0 {
        key_len(tag) + 8
    } else {
        0
    }
}

fn put_double(tag: u32, v: f64, buf: &mut impl BufMut) {
    if v != 0.0 {
        encode_key(tag, WireType::SixtyFourBit, buf);
        buf.put_f64_le(v);
    }
}

/// A uint32, or an enum's value (never negative here).
fn varint_len(tag: u32, v: u64) -> usize {
    if v != 0 {
        key_len(tag) + encoded_len_varint(v)
    } else {
        0
    }
}

fn put_varint(tag: u32, v: u64, buf: &mut impl BufMut) {
    if v != 0 {
        encode_key(tag, WireType::Varint, buf);
        encode_varint(v, buf);
    }
}

/// A message field: key, length, body (written even when empty).
fn message_len(tag: u32, body: usize) -> usize {
    key_len(tag) + encoded_len_varint(body as u64) + body
}

fn put_message_head(tag: u32, body: usize, buf: &mut impl BufMut) {
    encode_key(tag, WireType::LengthDelimited, buf);
    encode_varint(body as u64, buf);
}

fn reason_body(r: &Reason) -> usize {
    str_len(1, &r.feature) + double_len(2, r.contribution) + double_len(3, r.value)
}

fn put_reasons(tag: u32, reasons: &[Reason], buf: &mut impl BufMut) {
    for r in reasons {
        put_message_head(tag, reason_body(r), buf);
        put_str(1, &r.feature, buf);
        put_double(2, r.contribution, buf);
        put_double(3, r.value, buf);
    }
}

fn reasons_len(tag: u32, reasons: &[Reason]) -> usize {
    reasons
        .iter()
        .map(|r| message_len(tag, reason_body(r)))
        .sum()
}

fn ignored(s: &Score) -> u32 {
    s.ignored_after_as_of + s.ignored_unknown_type + s.ignored_duplicate
}

fn score_body(s: &Score) -> usize {
    let as_of = to_timestamp(s.as_of);
    str_len(1, s.visitor.as_str())
        + double_len(2, s.probability)
        + double_len(3, s.ladder.points)
        + double_len(4, s.ladder.score)
        + str_len(5, s.rung.as_deref().unwrap_or(""))
        + varint_len(6, stage(s.stage) as u64)
        + varint_len(7, band(s.band) as u64)
        + reasons_len(8, &s.reasons)
        + str_len(9, &s.model_version)
        + varint_len(10, u64::from(ignored(s)))
        + varint_len(11, u64::from(s.ignored_after_as_of))
        + varint_len(12, u64::from(s.ignored_unknown_type))
        + message_len(13, as_of.encoded_len())
        + double_len(14, s.log_odds)
        + reasons_len(15, &s.features)
        + varint_len(16, u64::from(s.ignored_duplicate))
}

fn put_score(s: &Score, buf: &mut impl BufMut) {
    put_str(1, s.visitor.as_str(), buf);
    put_double(2, s.probability, buf);
    put_double(3, s.ladder.points, buf);
    put_double(4, s.ladder.score, buf);
    put_str(5, s.rung.as_deref().unwrap_or(""), buf);
    put_varint(6, stage(s.stage) as u64, buf);
    put_varint(7, band(s.band) as u64, buf);
    put_reasons(8, &s.reasons, buf);
    put_str(9, &s.model_version, buf);
    put_varint(10, u64::from(ignored(s)), buf);
    put_varint(11, u64::from(s.ignored_after_as_of), buf);
    put_varint(12, u64::from(s.ignored_unknown_type), buf);
    let as_of = to_timestamp(s.as_of);
    put_message_head(13, as_of.encoded_len(), buf);
    as_of.encode_raw(buf);
    put_double(14, s.log_odds, buf);
    put_reasons(15, &s.features, buf);
    put_varint(16, u64::from(s.ignored_duplicate), buf);
}

/// These messages are written, never read: merging one skips every field.
macro_rules! written_only {
    ($ty:ty, $self:ident, $len:expr, $buf:ident, $encode:block) => {
        impl Message for $ty {
            fn encode_raw(&$self, $buf: &mut impl BufMut) $encode

            fn merge_field(
                &mut self,
                tag: u32,
                wire_type: WireType,
                buf: &mut impl Buf,
                ctx: DecodeContext,
            ) -> Result<(), DecodeError> {
                skip_field(wire_type, tag, buf, ctx)
            }

            fn encoded_len(&$self) -> usize {
                $len
            }

            fn clear(&mut self) {}
        }
    };
}

written_only!(ScoreResponse, self, score_body(&self.0), buf, {
    put_score(&self.0, buf)
});

written_only!(
    ScoreBatchResponse,
    self,
    self.0.iter().map(|s| message_len(1, score_body(s))).sum(),
    buf,
    {
        for s in &self.0 {
            put_message_head(1, score_body(s), buf);
            put_score(s, buf);
        }
    }
);

written_only!(
    TrackResponse,
    self,
    varint_len(1, u64::from(self.accepted))
        + varint_len(2, u64::from(self.duplicates))
        + message_len(3, score_body(&self.score)),
    buf,
    {
        put_varint(1, u64::from(self.accepted), buf);
        put_varint(2, u64::from(self.duplicates), buf);
        put_message_head(3, score_body(&self.score), buf);
        put_score(&self.score, buf);
    }
);

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use proptest::prelude::*;

    use super::*;
    use crate::domain::{Millis, Stage, VisitorId};
    use crate::grpc::{convert, proto};
    use crate::scoring::ladder::Ladder;
    use crate::scoring::Band;

    /// Numbers with the cases proto3 treats apart: zero (left out), negative
    /// zero (equal to zero), NaN (unequal to everything), and values that
    /// take every byte.
    fn number() -> impl Strategy<Value = f64> {
        prop_oneof![
            Just(0.0),
            Just(-0.0),
            Just(f64::NAN),
            Just(f64::INFINITY),
            any::<f64>(),
            -1e6..1e6f64
        ]
    }

    fn count() -> impl Strategy<Value = u32> {
        prop_oneof![Just(0u32), 0..300u32, any::<u32>().prop_map(|n| n / 4)]
    }

    fn name() -> impl Strategy<Value = Arc<str>> {
        prop_oneof![Just(String::new()), "[a-z_]{1,20}", "\\PC{0,40}"]
            .prop_map(|s| Arc::from(s.as_str()))
    }

    fn reasons() -> impl Strategy<Value = Vec<Reason>> {
        prop::collection::vec(
            (name(), number(), number()).prop_map(|(feature, contribution, value)| Reason {
                feature,
                contribution,
                value,
            }),
            0..30,
        )
    }

    prop_compose! {
        fn score()(
            visitor in "[a-zA-Z0-9:-]{1,80}",
            as_of in -10_000_000_000_000i64..10_000_000_000_000,
            (probability, log_odds, points, ladder_score) in (number(), number(), number(), number()),
            rung in prop::option::of(name()),
            stage in 0..4usize,
            band in 0..3usize,
            reasons in reasons(),
            features in reasons(),
            model_version in name(),
            (after, unknown, duplicate) in (count(), count(), count()),
        ) -> Score {
            let stage = Stage::ALL[stage];
            Score {
                visitor: VisitorId::parse(visitor, 256).unwrap(),
                as_of: Millis::from_unix_millis(as_of),
                probability,
                log_odds,
                ladder: Ladder { points, score: ladder_score, milestone_rank: 0, stage },
                rung,
                stage,
                band: [Band::Low, Band::Medium, Band::High][band],
                reasons,
                features,
                model_version,
                ignored_after_as_of: after,
                ignored_unknown_type: unknown,
                ignored_duplicate: duplicate,
            }
        }
    }

    proptest! {
        #[test]
        fn a_score_is_written_as_prost_writes_the_public_message(s in score()) {
            let ours = ScoreResponse(s.clone());
            let public = convert::score_response(s);
            let bytes = ours.encode_to_vec();
            prop_assert_eq!(ours.encoded_len(), bytes.len());
            prop_assert_eq!(bytes, public.encode_to_vec());
        }

        #[test]
        fn a_batch_and_a_track_are_written_as_prost_writes_them(
            scores in prop::collection::vec(score(), 0..5),
            accepted in count(),
            duplicates in count(),
        ) {
            let ours = ScoreBatchResponse(scores.clone());
            let public = proto::ScoreBatchResponse {
                results: scores.iter().cloned().map(convert::score_response).collect(),
            };
            prop_assert_eq!(ours.encoded_len(), ours.encode_to_vec().len());
            prop_assert_eq!(ours.encode_to_vec(), public.encode_to_vec());
            if let Some(s) = scores.into_iter().next() {
                let ours = TrackResponse { accepted, duplicates, score: s.clone() };
                let public = proto::TrackResponse {
                    accepted,
                    duplicates,
                    score: Some(convert::score_response(s)),
                };
                prop_assert_eq!(ours.encoded_len(), ours.encode_to_vec().len());
                prop_assert_eq!(ours.encode_to_vec(), public.encode_to_vec());
            }
        }
    }
}
