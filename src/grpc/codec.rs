//! The protobuf codec every rung service uses: prost's encoding, and a
//! decoding where a request that does not decode is the caller's fault,
//! INVALID_ARGUMENT, not INTERNAL (which would page an operator for a
//! client's garbage). The Score path's requests are read by
//! [`super::request`], every other message by prost.

use std::marker::PhantomData;

use prost::Message;
use tonic::codec::{Codec, DecodeBuf, Decoder};
use tonic::Status;
use tonic_prost::{ProstCodec, ProstEncoder};

use super::request;

#[derive(Debug, Clone)]
pub struct ProtoCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for ProtoCodec<T, U> {
    fn default() -> Self {
        ProtoCodec(PhantomData)
    }
}

/// How a message is read from a call: prost's decoding for the public
/// messages, [`request::Decode`] for the Score path's requests.
pub trait Decodable: Sized + Send + 'static {
    fn decode_from(buf: &mut DecodeBuf<'_>) -> Result<Self, String>;
}

impl<M: Message + Default + Send + 'static> Decodable for M {
    fn decode_from(buf: &mut DecodeBuf<'_>) -> Result<Self, String> {
        M::decode(buf).map_err(|e| e.to_string())
    }
}

macro_rules! read_whole {
    ($($ty:ty),*) => {$(
        impl Decodable for $ty {
            fn decode_from(buf: &mut DecodeBuf<'_>) -> Result<Self, String> {
                <$ty as request::Decode>::decode(buf).map_err(|e| e.to_string())
            }
        }
    )*};
}

read_whole!(
    request::ScoreRequest,
    request::ScoreBatchRequest,
    request::TrackRequest
);

impl<T, U> Codec for ProtoCodec<T, U>
where
    T: Message + Send + 'static,
    U: Decodable,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = ProtoDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstCodec::<T, ()>::default().encoder()
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProtoDecoder(PhantomData)
    }
}

#[derive(Debug, Clone)]
pub struct ProtoDecoder<U>(PhantomData<U>);

impl<U: Decodable> Decoder for ProtoDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        U::decode_from(buf).map(Some).map_err(|reason| {
            Status::invalid_argument(format!(
                "the request is not a valid protobuf message: {reason}"
            ))
        })
    }
}
