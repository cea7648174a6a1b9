//! The one place errors become gRPC statuses. Clients get a short message;
//! internal causes are logged with their chain.

use std::fmt;

use tonic::Status;

/// A request field that failed validation: `field` is a path such as
/// `visitors[2].events[5].time`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub reason: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, reason: impl fmt::Display) -> Self {
        FieldError {
            field: field.into(),
            reason: reason.to_string(),
        }
    }

    /// The same error inside an enclosing message: `events[1].time` becomes
    /// `visitors[3].events[1].time`.
    pub fn within(mut self, prefix: &str) -> Self {
        self.field = format!("{prefix}.{}", self.field);
        self
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.reason)
    }
}

impl From<FieldError> for Status {
    fn from(e: FieldError) -> Status {
        tracing::debug!(field = %e.field, reason = %e.reason, "invalid argument");
        Status::invalid_argument(e.to_string())
    }
}

/// The one table from engine errors to gRPC codes.
impl From<crate::engine::EngineError> for Status {
    fn from(e: crate::engine::EngineError) -> Status {
        use crate::deploy::DeployError;
        use crate::engine::EngineError;
        use crate::store::StoreError;
        match &e {
            EngineError::Store(StoreError::Unavailable(_))
            | EngineError::Store(StoreError::Locked { .. }) => {
                tracing::error!(error = %e, "store unavailable");
                Status::unavailable("the store is unavailable; retry later")
            }
            EngineError::Store(StoreError::Corrupt { visitor, .. }) => {
                tracing::error!(error = %e, visitor_id = %visitor, "corrupt stored data");
                Status::internal("stored data for this visitor cannot be read")
            }
            EngineError::Store(StoreError::Incompatible(_)) | EngineError::Internal(_) => {
                tracing::error!(error = %e, "internal error");
                Status::internal("internal error")
            }
            // Refused before anything was read: the caller asked for a file
            // outside the models folder.
            EngineError::Model(cause @ DeployError::Outside { .. }) => {
                tracing::warn!(error = %cause, "a model path outside model_dir was refused");
                Status::permission_denied(cause.to_string())
            }
            // The operator who asked for the reload needs the problem (which
            // file, which field), so it is the message; values read from the
            // file stay in the server's log.
            EngineError::Model(cause) => {
                let detail = match cause {
                    DeployError::Refused { source, .. } => source.to_string(),
                    other => other.to_string(),
                };
                tracing::error!(error = %cause, %detail, "model artifact refused; the serving model stays");
                Status::failed_precondition(cause.to_string())
            }
            EngineError::SegmentNotFound(_) => Status::not_found(e.to_string()),
            EngineError::SegmentNameTaken(_) => Status::already_exists(e.to_string()),
            EngineError::BuiltinSegment(_) => FieldError::new("name", e).into(),
            EngineError::Definition(d) => FieldError::new("definition", d).into(),
            EngineError::SavedSegmentInvalid { .. } => {
                tracing::warn!(error = %e, "saved segment no longer valid");
                Status::failed_precondition(e.to_string())
            }
        }
    }
}
