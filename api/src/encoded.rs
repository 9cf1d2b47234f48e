//! Responses encoded once, sent to many.
//!
//! A routing or endpoints update goes to every proxy that needs it: thousands of streams. Encoding
//! the message again for each would cost the control plane per subscriber what it should pay per
//! change, so the server encodes each update once into [`Encoded`] (shared [`Bytes`]) and its
//! codec only copies those bytes into each stream's frame buffer. Requests decode as usual.

use std::marker::PhantomData;

use bytes::{BufMut, Bytes};
use prost::Message;
use tonic::Status;
use tonic::codec::{Codec, EncodeBuf, Encoder};
use tonic_prost::ProstDecoder;

/// A protobuf message already encoded: cheap to clone, written to a stream as is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Encoded(pub Bytes);

impl Encoded {
    /// Encodes `message` once.
    pub fn new(message: &impl Message) -> Self {
        Encoded(message.encode_to_vec().into())
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Writes [`Encoded`] responses as they are; decodes requests of type `R` with prost.
#[derive(Debug)]
pub struct EncodedCodec<R>(PhantomData<fn() -> R>);

impl<R> Default for EncodedCodec<R> {
    fn default() -> Self {
        EncodedCodec(PhantomData)
    }
}

impl<R: Message + Default + Send + 'static> Codec for EncodedCodec<R> {
    type Encode = Encoded;
    type Decode = R;
    type Encoder = EncodedWriter;
    type Decoder = ProstDecoder<R>;

    fn encoder(&mut self) -> Self::Encoder {
        EncodedWriter
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstDecoder::default()
    }
}

/// Copies an [`Encoded`] message into the frame being written.
#[derive(Debug, Default)]
pub struct EncodedWriter;

impl Encoder for EncodedWriter {
    type Item = Encoded;
    type Error = Status;

    fn encode(&mut self, item: Encoded, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item.0);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::{Endpoint, EndpointsUpdate};

    #[test]
    fn encoded_bytes_decode_to_the_message() {
        let update = EndpointsUpdate {
            service: "web".into(),
            version: "v1".into(),
            endpoints: vec![Endpoint {
                address: "10.0.0.1:3000".into(),
                weight: 1,
                ready: true,
                ..Default::default()
            }],
            ..Default::default()
        };
        let encoded = Encoded::new(&update);
        assert_eq!(EndpointsUpdate::decode(encoded.0.clone()).unwrap(), update);
    }
}
