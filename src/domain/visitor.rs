//! Visitor identifiers, checked once at the edge.

use std::fmt;

/// A visitor id: non-empty, at most `max_bytes` long, no control characters
/// (they break logs and CSV exports).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VisitorId(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VisitorIdError {
    #[error("must not be empty")]
    Empty,
    #[error("is {len} bytes long; the maximum is {max}")]
    TooLong { len: usize, max: usize },
    #[error("contains a control character at byte {0}")]
    ControlCharacter(usize),
}

impl VisitorId {
    pub fn parse(raw: String, max_bytes: usize) -> Result<Self, VisitorIdError> {
        if raw.is_empty() {
            return Err(VisitorIdError::Empty);
        }
        if raw.len() > max_bytes {
            return Err(VisitorIdError::TooLong {
                len: raw.len(),
                max: max_bytes,
            });
        }
        if let Some((at, _)) = raw.char_indices().find(|(_, c)| c.is_control()) {
            return Err(VisitorIdError::ControlCharacter(at));
        }
        Ok(VisitorId(raw))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Display for VisitorId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_long_and_control_ids_are_refused() {
        assert_eq!(
            VisitorId::parse(String::new(), 8),
            Err(VisitorIdError::Empty)
        );
        assert_eq!(
            VisitorId::parse("123456789".into(), 8),
            Err(VisitorIdError::TooLong { len: 9, max: 8 })
        );
        assert_eq!(
            VisitorId::parse("ab\ncd".into(), 8),
            Err(VisitorIdError::ControlCharacter(2))
        );
        assert_eq!(VisitorId::parse("v-1".into(), 8).unwrap().as_str(), "v-1");
    }
}
