//! Long-lived streams: WebSocket through both listeners, both directions, held for seconds; and
//! Server-Sent Events flushed one by one through a route without a timeout.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use herd_tests::server::{self, reply};
use herd_tests::{Proxy, client, ws};
use tokio_tungstenite::tungstenite::Message;

/// Talks to a WebSocket echo server through `socket` for a little over two seconds: the
/// server's own greeting, then text and binary messages each way.
async fn converse(socket: &mut ws::WebSocket) {
    assert_eq!(
        ws::next(socket).await,
        Message::text("welcome"),
        "the server's first message"
    );
    let start = Instant::now();
    for i in 0..50u32 {
        let message = if i % 2 == 0 {
            Message::text(format!("message {i}"))
        } else {
            Message::binary(i.to_be_bytes().repeat(1000))
        };
        ws::round_trip(socket, message).await;
        // Pacing, not waiting: the conversation must outlive any short timeout.
        tokio::time::sleep(Duration::from_millis(45)).await;
    }
    assert!(start.elapsed() > Duration::from_secs(2));
}

#[tokio::test(flavor = "multi_thread")]
async fn websocket_through_outbound_is_long_lived_both_ways() {
    let app = server::websocket_echo().await;
    let proxy = Proxy::start(&format!(
        "
        proxy:
          outbound:
            listen: $OUTBOUND
          admin:
            listen: $ADMIN
        services:
          - name: streaming
            authorities: [streaming.local]
            endpoints: [{}]
        ",
        app.addr()
    ))
    .await;

    let mut socket = ws::connect(proxy.outbound(), "streaming.local", "/api/v1/streaming").await;
    converse(&mut socket).await;
    assert_eq!(app.connections(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn websocket_through_inbound_is_long_lived_both_ways() {
    let app = server::websocket_echo().await;
    let proxy = Proxy::inbound_to(app.addr()).await;

    let mut socket = ws::connect(proxy.inbound(), "app.local", "/api/v1/streaming").await;
    converse(&mut socket).await;
    assert_eq!(app.connections(), 1);
}

/// When the app handed each event to the connection.
type Sent = Arc<Mutex<Vec<Instant>>>;

/// An event stream whose head comes only after 1.5 s (a long poll), then 8 events 300 ms apart.
async fn slow_starting_event_stream(sent: Sent) -> server::Server {
    server::http1(move |_req| {
        let sent = sent.clone();
        async move {
            tokio::time::sleep(Duration::from_millis(1500)).await;
            reply::sse_timed(Duration::from_millis(300), 8, sent)
        }
    })
    .await
}

/// The `streaming` service: no timeout on `/api/v1/streaming`, 1 s everywhere else.
async fn streaming_proxy(app: SocketAddr) -> Proxy {
    Proxy::start(&format!(
        "
        proxy:
          outbound:
            listen: $OUTBOUND
          admin:
            listen: $ADMIN
        services:
          - name: streaming
            authorities: [streaming.local]
            endpoints: [{app}]
            routes:
              - match: {{ pathPrefix: /api/v1/streaming }}
                timeout: 0s
              - match: {{ pathPrefix: / }}
                timeout: 1s
        "
    ))
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn server_sent_events_arrive_one_by_one_on_a_route_without_timeout() {
    let sent = Sent::default();
    let app = slow_starting_event_stream(sent.clone()).await;
    let proxy = streaming_proxy(app.addr()).await;

    let stream = client::events(
        proxy.outbound(),
        "streaming.local",
        "/api/v1/streaming/public",
        Duration::from_secs(15),
    )
    .await;

    assert_eq!(stream.status, 200, "the stream was cut or refused");
    let names: Vec<&str> = stream.events.iter().map(|(_, e)| e.as_str()).collect();
    assert_eq!(names.len(), 8, "{names:?}");
    assert!(names[7].contains("event 7"), "{names:?}");
    // Each event reaches the client well before the app produces the next one; a proxy that
    // buffered would deliver the first ones seconds late.
    let sent = sent.lock().unwrap().clone();
    for (k, ((arrived, _), sent)) in stream.events.iter().zip(&sent).enumerate() {
        let delay = arrived.saturating_duration_since(*sent);
        assert!(
            delay < Duration::from_millis(250),
            "event {k} took {delay:?} to arrive"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_same_slow_stream_times_out_on_a_route_with_a_timeout() {
    let app = slow_starting_event_stream(Sent::default()).await;
    let proxy = streaming_proxy(app.addr()).await;

    let stream = client::events(
        proxy.outbound(),
        "streaming.local",
        "/other",
        Duration::from_secs(15),
    )
    .await;

    // Had the 1 s timeout not fired, the head would have come (200) at 1.5 s.
    assert_eq!(
        stream.status, 504,
        "a 1 s route timeout did not fire on a 1.5 s response head"
    );
    assert!(stream.events.is_empty());
}
