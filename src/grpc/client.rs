//! rung's own clients (the segment CLI, `rung bench`): a channel that
//! sends the API key with every call.

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::service::Interceptor;
use tonic::transport::Channel;
use tonic::{Request, Status};

/// A channel whose calls carry `authorization: Bearer <key>` (when a key
/// is given).
pub type KeyedChannel = InterceptedService<Channel, BearerKey>;

/// The `authorization` value to send, if any. Debug never shows the key.
#[derive(Clone, Default)]
pub struct BearerKey(Option<MetadataValue<Ascii>>);

impl std::fmt::Debug for BearerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "BearerKey(..)"
        } else {
            "BearerKey(none)"
        })
    }
}

#[derive(Debug, thiserror::Error)]
#[error("the API key must be printable ASCII (as `rung keys new` prints it)")]
pub struct BadKey;

impl BearerKey {
    /// `key` to send (`None`: send none).
    pub fn new(key: Option<&str>) -> Result<BearerKey, BadKey> {
        key.map(|k| MetadataValue::try_from(format!("Bearer {}", k.trim())).map_err(|_| BadKey))
            .transpose()
            .map(BearerKey)
    }

    /// `channel`, sending this key with every call.
    pub fn on(&self, channel: Channel) -> KeyedChannel {
        InterceptedService::new(channel, self.clone())
    }
}

impl Interceptor for BearerKey {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(v) = &self.0 {
            request.metadata_mut().insert("authorization", v.clone());
        }
        Ok(request)
    }
}
