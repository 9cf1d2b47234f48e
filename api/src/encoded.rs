//! Responses encoded once, sent to many.
//!
//! A routing or endpoints update goes to every proxy that needs it: thousands of streams. Encoding
//! the message again for each would cost the control plane per subscriber what it should pay per
//! change, so the control plane encodes each update once into [`Encoded`] (shared [`Bytes`]) and
//! [`crate::fanout`] writes those very bytes to every stream.

use bytes::Bytes;
use prost::Message;

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
