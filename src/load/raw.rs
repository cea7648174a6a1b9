//! Calls with requests encoded once, before the run.
//!
//! A load generator that builds and encodes a 20-event request per call
//! spends more CPU per call than the server does, so the server sees a
//! trickle of calls and its CPU per call rises with its idle wake-ups. With
//! the bytes ready, the generator's cost per call is the same for every
//! scenario, as small as it can be, and the comparison with Health is fair.

use crate::grpc::client::KeyedChannel;
use bytes::{Buf, BufMut, Bytes};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::{Request, Status};

/// Sends ready protobuf bytes and hands back the response's bytes.
#[derive(Debug, Clone, Copy, Default)]
pub struct RawCodec;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> RawCodec {
        RawCodec
    }

    fn decoder(&mut self) -> RawCodec {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

/// A unary client for pre-encoded requests.
#[derive(Clone)]
pub struct RawClient {
    grpc: tonic::client::Grpc<KeyedChannel>,
}

impl RawClient {
    pub fn new(channel: KeyedChannel) -> RawClient {
        RawClient {
            grpc: tonic::client::Grpc::new(channel)
                .max_decoding_message_size(64 << 20)
                .max_encoding_message_size(64 << 20),
        }
    }

    /// Calls `path` (e.g. `/rung.v1.IntentService/Score`) with `body`.
    pub async fn unary(&mut self, path: &'static str, body: Bytes) -> Result<Bytes, Status> {
        self.grpc
            .ready()
            .await
            .map_err(|e| Status::unavailable(format!("connection not ready: {e}")))?;
        let path = PathAndQuery::from_static(path);
        let response = self.grpc.unary(Request::new(body), path, RawCodec).await?;
        Ok(response.into_inner())
    }
}
