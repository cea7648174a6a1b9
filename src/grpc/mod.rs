//! The gRPC transport: generated code, proto ↔ domain conversions, the one
//! error → Status table, and thin handlers that make one engine call each.

pub mod audience_api;
pub mod client;
pub mod codec;
pub mod conn;
pub mod convert;
pub mod edge;
pub mod intent_api;
pub mod model_api;
pub mod status;

/// Code generated from `proto/rung/v1/*.proto`.
pub mod proto {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("rung.v1");

    /// The encoded descriptor set, for server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/rung_descriptor.bin"));
}

pub use audience_api::AudienceApi;
pub use intent_api::IntentApi;
pub use model_api::ModelApi;
