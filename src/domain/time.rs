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

    /// Reads RFC 3339 UTC text such as [`Millis::to_rfc3339`] writes
    /// (`2023-11-14T22:13:20.005Z`); `None` for anything else.
    pub fn parse_rfc3339(text: &str) -> Option<Millis> {
        humantime::parse_rfc3339(text)
            .ok()
            .map(Millis::from_system_time)
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
}
