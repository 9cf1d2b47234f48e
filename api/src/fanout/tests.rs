use std::collections::VecDeque;

use http_body_util::BodyExt;
use tonic::codegen::Service;

use super::*;

fn updates(items: Vec<Result<Encoded, Status>>) -> Updates {
    Box::pin(futures_util::stream::iter(items))
}

/// Every frame of a body, data and trailers, in order.
async fn frames(
    mut body: impl http_body::Body<Data = Bytes, Error = Status> + Unpin,
) -> VecDeque<Frame<Bytes>> {
    let mut frames = VecDeque::new();
    while let Some(frame) = body.frame().await {
        frames.push_back(frame.unwrap());
    }
    frames
}

#[tokio::test]
async fn large_messages_go_out_as_the_shared_bytes_themselves() {
    let large = Bytes::from(vec![7u8; 48 * 1024]);
    let small = Bytes::from_static(b"\x0a\x03web");
    let mut frames = frames(Framed::new(updates(vec![
        Ok(Encoded(small.clone())),
        Ok(Encoded(large.clone())),
    ])))
    .await;

    let first = frames.pop_front().unwrap().into_data().unwrap();
    assert_eq!(
        &first[..],
        b"\x00\x00\x00\x00\x05\x0a\x03web",
        "small: header and message in one frame"
    );

    let header = frames.pop_front().unwrap().into_data().unwrap();
    assert_eq!(
        &header[..],
        &[0, 0, 0, 0xc0, 0],
        "a 48 KiB message's header, alone"
    );
    let message = frames.pop_front().unwrap().into_data().unwrap();
    assert_eq!(
        message.as_ptr(),
        large.as_ptr(),
        "the very bytes encoded once, not a copy"
    );
    assert_eq!(message.len(), large.len());

    let trailers = frames.pop_front().unwrap().into_trailers().unwrap();
    assert_eq!(trailers["grpc-status"], "0");
    assert!(frames.is_empty());
}

#[tokio::test]
async fn an_error_ends_the_body_with_its_status() {
    let mut frames = frames(Framed::new(updates(vec![
        Err(Status::invalid_argument(
            "only verdicts may follow `subscribe`",
        )),
        Ok(Encoded(Bytes::from_static(b"never sent"))),
    ])))
    .await;
    let trailers = frames.pop_front().unwrap().into_trailers().unwrap();
    assert_eq!(trailers["grpc-status"], "3");
    assert!(
        trailers["grpc-message"]
            .to_str()
            .unwrap()
            .contains("verdicts")
    );
    assert!(frames.is_empty(), "nothing after the status: {frames:?}");
}

/// Answers a routing call with the first message's node id, then ends.
struct Echo;

#[tonic::async_trait]
impl Discovery for Echo {
    async fn routing(
        &self,
        request: Request<Streaming<RoutingRequest>>,
    ) -> Result<Response<Updates>, Status> {
        let first = request.into_inner().message().await?.unwrap_or_default();
        Ok(Response::new(updates(vec![Ok(Encoded::new(&first))])))
    }

    async fn endpoints(
        &self,
        _: Request<Streaming<EndpointsRequest>>,
    ) -> Result<Response<Updates>, Status> {
        Err(Status::permission_denied("not today"))
    }
}

fn grpc_request(path: &str, message: &impl Message) -> http::Request<http_body_util::Full<Bytes>> {
    let encoded = message.encode_to_vec();
    let mut body = header(encoded.len(), HEADER + encoded.len());
    body.put_slice(&encoded);
    http::Request::builder()
        .uri(format!("http://control{path}"))
        .header("content-type", "application/grpc")
        .body(http_body_util::Full::new(body.freeze()))
        .unwrap()
}

#[tokio::test]
async fn calls_are_routed_by_path_and_refusals_are_trailers_only() {
    use crate::discovery::{Node, RoutingSubscribe, routing_request};
    let mut server = DiscoveryServer::new(Echo);
    let subscribe = RoutingRequest {
        request: Some(routing_request::Request::Subscribe(RoutingSubscribe {
            node: Some(Node {
                id: "web-1".into(),
                ..Default::default()
            }),
            ..Default::default()
        })),
    };

    let response = server
        .call(grpc_request(
            "/herd.discovery.v1.Discovery/Routing",
            &subscribe,
        ))
        .await
        .unwrap();
    assert_eq!(response.headers()["content-type"], "application/grpc");
    let body = response.into_body().collect().await.unwrap();
    assert_eq!(body.trailers().unwrap()["grpc-status"], "0");
    let bytes = body.to_bytes();
    assert_eq!(RoutingRequest::decode(&bytes[HEADER..]).unwrap(), subscribe);

    let refused = server
        .call(grpc_request(
            "/herd.discovery.v1.Discovery/Endpoints",
            &subscribe,
        ))
        .await
        .unwrap();
    assert_eq!(refused.headers()["grpc-status"], "7");

    let unknown = server
        .call(grpc_request(
            "/herd.discovery.v1.Discovery/Nothing",
            &subscribe,
        ))
        .await
        .unwrap();
    assert_eq!(unknown.headers()["grpc-status"], "12");
}

#[tokio::test]
async fn a_request_larger_than_the_limit_is_refused() {
    let mut server = DiscoveryServer::new(Echo);
    let huge = RoutingRequest {
        request: Some(crate::discovery::routing_request::Request::Subscribe(
            crate::discovery::RoutingSubscribe {
                have_version: "x".repeat(MAX_REQUEST + 1),
                ..Default::default()
            },
        )),
    };
    let response = server
        .call(grpc_request("/herd.discovery.v1.Discovery/Routing", &huge))
        .await
        .unwrap();
    // tonic's decoder says OUT_OF_RANGE, naming the limit.
    let headers = response.headers();
    assert_eq!(headers["grpc-status"], "11", "{headers:?}");
    let message = headers["grpc-message"].to_str().unwrap();
    assert!(message.contains("65536"), "{message}");
}
