//! The Discovery API as a simulated proxy reads it.
//!
//! Requests are herd-api's own messages. Updates are decoded into lighter views of the same
//! wire format: the routing document and each endpoint stay bytes (no UTF-8 check, no parse),
//! because ten thousand proxies share this process's cores with the control plane and a real
//! proxy's parsing is not what is measured. What a simulated proxy needs is read: versions,
//! which service, full set or delta, and the addresses where a change is being followed
//! ([`addresses`]).

use bytes::Bytes;
use herd_api::discovery::{EndpointsRequest, RoutingRequest};
use http::uri::PathAndQuery;
use prost::Message;
use tonic::codec::Streaming;
use tonic::transport::Channel;

const ROUTING: &str = "/herd.discovery.v1.Discovery/Routing";
const ENDPOINTS: &str = "/herd.discovery.v1.Discovery/Endpoints";

/// `RoutingUpdate`, its document left as bytes.
#[derive(Clone, PartialEq, Message)]
pub struct RoutingView {
    #[prost(string, tag = "1")]
    pub version: String,
    #[prost(bytes = "bytes", tag = "2")]
    pub mesh: Bytes,
}

/// `EndpointsUpdate`, each endpoint left as its encoded bytes.
#[derive(Clone, PartialEq, Message)]
pub struct EndpointsView {
    #[prost(string, tag = "1")]
    pub service: String,
    #[prost(string, tag = "2")]
    pub version: String,
    #[prost(string, tag = "3")]
    pub base_version: String,
    #[prost(bytes = "bytes", repeated, tag = "4")]
    pub endpoints: Vec<Bytes>,
    #[prost(string, repeated, tag = "5")]
    pub removed: Vec<String>,
    #[prost(bool, tag = "6")]
    pub unknown: bool,
}

/// `Endpoint`, its address only.
#[derive(Clone, PartialEq, Message)]
struct AddressView {
    #[prost(string, tag = "1")]
    address: String,
}

/// The addresses of an update's endpoints (all of a full set, the added or changed of a delta).
pub fn addresses(update: &EndpointsView) -> Vec<String> {
    update
        .endpoints
        .iter()
        .filter_map(|e| AddressView::decode(e.clone()).ok().map(|a| a.address))
        .collect()
}

/// Opens the Routing stream: `requests` must start with `subscribe`. Returns once the server
/// has answered with its headers, which it does after reading `subscribe`: the proxy is then
/// registered with it.
pub async fn routing(
    grpc: &mut tonic::client::Grpc<Channel>,
    requests: impl tonic::IntoStreamingRequest<Message = RoutingRequest>,
) -> Result<Streaming<RoutingView>, tonic::Status> {
    grpc.ready()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let codec = tonic_prost::ProstCodec::<RoutingRequest, RoutingView>::default();
    let response = grpc
        .streaming(
            requests.into_streaming_request(),
            PathAndQuery::from_static(ROUTING),
            codec,
        )
        .await?;
    Ok(response.into_inner())
}

/// Opens the Endpoints stream: `requests` must start with `hello`. Returns once the server has
/// read `hello`.
pub async fn endpoints(
    grpc: &mut tonic::client::Grpc<Channel>,
    requests: impl tonic::IntoStreamingRequest<Message = EndpointsRequest>,
) -> Result<Streaming<EndpointsView>, tonic::Status> {
    grpc.ready()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let codec = tonic_prost::ProstCodec::<EndpointsRequest, EndpointsView>::default();
    let response = grpc
        .streaming(
            requests.into_streaming_request(),
            PathAndQuery::from_static(ENDPOINTS),
            codec,
        )
        .await?;
    Ok(response.into_inner())
}

#[cfg(test)]
mod tests;
