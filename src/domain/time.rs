//! Instants as Unix milliseconds: what the ladder's decay and sessions need,
//! cheap to compare and to subtract.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch. Within year 1 to 9999, like
/// `google.protobuf.Timestamp`, so every conversion in and out is lossless
/// apart from sub-millisecond precision.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(transparent)]
pub struct Millis(i64);

/// 0001-01-01T00:00:00Z and 9999-12-31T23:59:59Z, the range a protobuf
/// Timestamp allows.
const MIN_SECONDS: i64 = -62_135_596_800;
const MAX_SECONDS: i64 = 253_402_300_799;

pub const MILLIS_PER_HOUR: f64 = 3_600_000.0;
pub const MILLIS_PER_DAY: f64 = 86_400_000.0;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TimeError {
    #[error("seconds {0} is outside years 1 to 9999")]
    SecondsOutOfRange(i64),
    #[error("nanos {0} is outside 0..=999999999")]
    NanosOutOfRange(i32),
}

impl Millis {
    pub const fn from_unix_millis(ms: i64) -> Self {
        Millis(ms)
    }

    /// From a protobuf-style (seconds, nanos) pair, refusing what a
    /// Timestamp may not hold.
    pub fn from_parts(seconds: i64, nanos: i32) -> Result<Self, TimeError> {
        if !(MIN_SECONDS..=MAX_SECONDS).contains(&seconds) {
            return Err(TimeError::SecondsOutOfRange(seconds));
        }
        if !(0..1_000_000_000).contains(&nanos) {
            return Err(TimeError::NanosOutOfRange(nanos));
        }
        Ok(Millis(seconds * 1000 + i64::from(nanos / 1_000_000)))
    }

    pub fn now() -> Self {
        Millis::from_system_time(SystemTime::now())
    }

    pub fn from_system_time(t: SystemTime) -> Self {
        let ms = match t.duration_since(UNIX_EPOCH) {
            Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
            Err(e) => -i64::try_from(e.duration().as_millis()).unwrap_or(i64::MAX),
        };
        Millis(ms)
    }

    /// Reads RFC 3339 text: UTC as [`Millis::to_rfc3339`] writes it
    /// (`2023-11-14T22:13:20.005Z`) or with an offset
    /// (`2017-12-01T00:00:00+08:00`); `None` for anything else.
    pub fn parse_rfc3339(text: &str) -> Option<Millis> {
        Self::parse_rfc3339_with(text, |t| humantime::parse_rfc3339(t).ok())
    }

    /// As [`Millis::parse_rfc3339`], but also with a space for the `T` and
    /// without a zone (`2019-10-01 00:00:00`, read as UTC): what logs hold.
    pub fn parse_rfc3339_lenient(text: &str) -> Option<Millis> {
        Self::parse_rfc3339_with(text, |t| humantime::parse_rfc3339_weak(t).ok())
    }

    /// Splits a numeric offset off the end, reads the rest as UTC with
    /// `read`, and moves the instant by the offset.
    fn parse_rfc3339_with(text: &str, read: impl Fn(&str) -> Option<SystemTime>) -> Option<Millis> {
        let text = text.trim();
        let (utc, offset_ms) = match split_offset(text) {
            Some((rest, offset)) => (format!("{rest}Z"), offset),
            None => (text.to_string(), 0),
        };
        let ms = Millis::from_system_time(read(&utc)?).0;
        Some(Millis(ms.checked_sub(offset_ms)?))
    }

    pub const fn as_unix_millis(self) -> i64 {
        self.0
    }

    /// (seconds, nanos) as a protobuf Timestamp wants them.
    pub fn to_parts(self) -> (i64, i32) {
        let secs = self.0.div_euclid(1000);
        let nanos = (self.0.rem_euclid(1000) * 1_000_000) as i32;
        (secs, nanos)
    }

    /// `self - earlier` in milliseconds, as a float for decay arithmetic.
    pub fn millis_since(self, earlier: Millis) -> f64 {
        (self.0 - earlier.0) as f64
    }

    pub fn saturating_add_millis(self, ms: i64) -> Millis {
        Millis(self.0.saturating_add(ms))
    }

    /// RFC 3339 text, for logs and artifacts.
    pub fn to_rfc3339(self) -> String {
        let (secs, nanos) = self.to_parts();
        if secs < 0 {
            return format!("{}ms", self.0);
        }
        let t = UNIX_EPOCH + std::time::Duration::new(secs as u64, nanos as u32);
        humantime::format_rfc3339_millis(t).to_string()
    }
}

/// `2017-12-01T00:00:00+08:00` → (`2017-12-01T00:00:00`, +8 h in ms).
/// Only after a time of day, so a date's own dashes are never taken.
fn split_offset(text: &str) -> Option<(&str, i64)> {
    let at = text.len().checked_sub(6)?;
    let (rest, zone) = (text.get(..at)?, text.get(at..)?.as_bytes());
    let digit = |i: usize| (zone[i] as char).to_digit(10).map(i64::from);
    let sign = match zone[0] {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    if zone[3] != b':' || !rest.contains(':') {
        return None;
    }
    let hours = digit(1)? * 10 + digit(2)?;
    let minutes = digit(4)? * 10 + digit(5)?;
    if hours > 23 || minutes > 59 {
        return None;
    }
    Some((rest, sign * (hours * 60 + minutes) * 60_000))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_round_trip_including_negative_instants() {
        for (s, n) in [(0, 0), (1_700_000_000, 123_000_000), (-1, 999_000_000)] {
            let m = Millis::from_parts(s, n).unwrap();
            assert_eq!(m.to_parts(), (s, n));
        }
        assert_eq!(
            Millis::from_parts(-1, 500_000_000)
                .unwrap()
                .as_unix_millis(),
            -500
        );
    }

    #[test]
    fn out_of_range_parts_are_refused() {
        assert!(Millis::from_parts(MAX_SECONDS + 1, 0).is_err());
        assert!(Millis::from_parts(0, -1).is_err());
        assert!(Millis::from_parts(0, 1_000_000_000).is_err());
    }

    #[test]
    fn rfc3339_text_is_utc() {
        let m = Millis::from_parts(1_700_000_000, 5_000_000).unwrap();
        assert_eq!(m.to_rfc3339(), "2023-11-14T22:13:20.005Z");
    }

    #[test]
    fn rfc3339_text_reads_back_and_other_text_does_not() {
        let m = Millis::from_parts(1_700_000_000, 5_000_000).unwrap();
        assert_eq!(Millis::parse_rfc3339("2023-11-14T22:13:20.005Z"), Some(m));
        assert_eq!(Millis::parse_rfc3339(&m.to_rfc3339()), Some(m));
        assert_eq!(Millis::parse_rfc3339("yesterday"), None);
    }

    #[test]
    fn rfc3339_offsets_move_the_instant_to_utc() {
        // 2017-12-01T00:00:00+08:00 is 2017-11-30T16:00:00Z: 1512057600 s.
        let utc = Some(Millis::from_unix_millis(1_512_057_600_000));
        assert_eq!(Millis::parse_rfc3339("2017-11-30T16:00:00Z"), utc);
        assert_eq!(Millis::parse_rfc3339("2017-12-01T00:00:00+08:00"), utc);
        assert_eq!(Millis::parse_rfc3339("2017-11-30T10:30:00-05:30"), utc);
        assert_eq!(Millis::parse_rfc3339("2017-11-30T16:00:00+00:00"), utc);
        assert_eq!(
            Millis::parse_rfc3339_lenient("2017-12-01 00:00:00+08:00"),
            utc
        );
        assert_eq!(Millis::parse_rfc3339_lenient("2017-11-30 16:00:00"), utc);
        for bad in [
            "2017-12-01T00:00:00+24:00",
            "2017-12-01T00:00:00+8:000",
            "2017-12-01",
        ] {
            assert_eq!(Millis::parse_rfc3339(bad), None, "{bad}");
        }
    }
}
