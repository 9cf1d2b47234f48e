//! herd-api: the gRPC API between herd-control and herd-proxy (and herdctl), generated from
//! `proto/herd/discovery/v1/discovery.proto` and `proto/herd/identity/v1/identity.proto`, which
//! document every message and field.
//!
//! [`discovery`] holds the messages, the clients and the Admin server. The Discovery server is
//! [`fanout`]'s, written by hand: its responses are [`encoded::Encoded`] bytes, so the control
//! plane encodes an update once and hands the same bytes to every stream that needs it.
//! [`identity`] holds the identity service (plain generated client and server: its messages
//! are small and answered one at a time).
#![forbid(unsafe_code)]

pub mod encoded;
pub mod fanout;

/// The messages, client and server of `herd.identity.v1`: the CA's `Certify` call.
pub mod identity {
    tonic::include_proto!("herd.identity.v1");
}

/// The messages, clients and servers of `herd.discovery.v1`.
pub mod discovery {
    tonic::include_proto!("herd.discovery.v1");
}
