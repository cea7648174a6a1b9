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
pub mod request;
pub mod response;
pub mod status;

/// Code generated from `proto/rung/v1/*.proto`.
pub mod proto {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("rung.v1");

    /// The encoded descriptor set, for server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/rung_descriptor.bin"));
}

/// The Score and Track requests' fields with every string as bytes
/// (`src/grpc/wire.proto`): what tests build requests with, including ones
/// the public types cannot express (repeated map keys, bytes that are not
/// UTF-8). The server reads these requests with [`request`].
pub mod wire {
    #![allow(clippy::all, missing_docs)]
    include!(concat!(env!("OUT_DIR"), "/wire/rung.v1.wire.rs"));

    /// wire.proto's encoded descriptor set.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/wire/descriptor.bin"));
}

/// `IntentService`'s server, generated over the [`request`] messages and
/// the [`response`] messages of the Score path; everything else is
/// [`proto`]'s types.
pub mod intent_server {
    #![allow(clippy::all, missing_docs)]
    include!(concat!(env!("OUT_DIR"), "/intent_server/rung.v1.rs"));
}

pub use audience_api::AudienceApi;
pub use intent_api::IntentApi;
pub use model_api::ModelApi;

#[cfg(test)]
mod tests {
    use prost::Message;
    use prost_types::field_descriptor_proto::{Label, Type};
    use prost_types::{DescriptorProto, FileDescriptorSet};

    fn messages(set: &[u8], package: &str) -> Vec<DescriptorProto> {
        FileDescriptorSet::decode(set)
            .unwrap()
            .file
            .into_iter()
            .filter(|f| f.package() == package)
            .flat_map(|f| f.message_type)
            .collect()
    }

    fn find<'a>(all: &'a [DescriptorProto], name: &str) -> &'a DescriptorProto {
        all.iter()
            .find(|m| m.name() == name)
            .unwrap_or_else(|| panic!("no message {name}"))
    }

    /// The server reads the public request messages through wire.proto:
    /// every field must be there with its number, name and wire type
    /// (`string` read as `bytes`, the attributes map as its entries).
    #[test]
    fn wire_messages_mirror_the_public_requests() {
        let public = messages(super::proto::FILE_DESCRIPTOR_SET, "rung.v1");
        let wire = messages(super::wire::FILE_DESCRIPTOR_SET, "rung.v1.wire");
        for name in ["Event", "ScoreRequest", "ScoreBatchRequest", "TrackRequest"] {
            let (p, w) = (find(&public, name), find(&wire, name));
            assert_eq!(p.field.len(), w.field.len(), "{name}: field count");
            for pf in &p.field {
                let wf = w
                    .field
                    .iter()
                    .find(|f| f.number() == pf.number())
                    .unwrap_or_else(|| panic!("{name}.{}: missing", pf.name()));
                let at = format!("{name}.{}", pf.name());
                assert_eq!(pf.name(), wf.name(), "{at}: name");
                assert_eq!(pf.label(), wf.label(), "{at}: label");
                match pf.r#type() {
                    Type::String => assert_eq!(wf.r#type(), Type::Bytes, "{at}"),
                    Type::Message if pf.type_name() == ".rung.v1.Event.AttributesEntry" => {
                        assert_eq!(pf.label(), Label::Repeated);
                        assert_eq!(wf.type_name(), ".rung.v1.wire.Attribute", "{at}");
                        let entry = find(&p.nested_type, "AttributesEntry");
                        let attribute = find(&wire, "Attribute");
                        for (pe, we) in entry.field.iter().zip(&attribute.field) {
                            assert_eq!(pe.number(), we.number(), "{at}");
                            assert_eq!(pe.r#type(), Type::String, "{at}");
                            assert_eq!(we.r#type(), Type::Bytes, "{at}");
                        }
                    }
                    Type::Message if pf.type_name().starts_with(".rung.v1.") => assert_eq!(
                        wf.type_name(),
                        pf.type_name().replace(".rung.v1.", ".rung.v1.wire."),
                        "{at}"
                    ),
                    other => {
                        assert_eq!(other, wf.r#type(), "{at}");
                        assert_eq!(pf.type_name(), wf.type_name(), "{at}");
                    }
                }
            }
        }
    }
}
