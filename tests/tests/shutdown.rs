//! Graceful shutdown on SIGTERM: stop accepting, let requests in flight finish, tell keep-alive
//! clients (`Connection: close`) and HTTP/2 clients (GOAWAY), cut upgraded connections at
//! `drainTimeout`, exit 0.

use std::io::ErrorKind;
use std::time::{Duration, Instant};

use herd_tests::server::{self, reply};
use herd_tests::tcp::Conn;
use herd_tests::{Proxy, TIMEOUT, client, curl, eventually, ws};
use tokio_tungstenite::tungstenite::Message;

/// An app whose `/slow` takes a second; everything else answers at once.
async fn app() -> server::Server {
    server::http1(|req| async move {
        if req.uri().path() == "/slow" {
            tokio::time::sleep(Duration::from_secs(1)).await;
            reply::text("slow done")
        } else {
            reply::text("ok")
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_finishes_requests_in_flight_refuses_new_connections_and_exits_0() {
    let app = app().await;
    let mut proxy = Proxy::inbound_to(app.addr()).await;
    let in_flight = tokio::spawn(curl().get(proxy.inbound_url("/slow")));
    app.wait_for_requests(1).await;

    proxy.sigterm();

    eventually(
        "the inbound listener to refuse connections",
        TIMEOUT,
        || async {
            match Conn::try_connect(proxy.inbound()).await {
                Err(e) if e.kind() == ErrorKind::ConnectionRefused => Some(()),
                _ => None,
            }
        },
    )
    .await;
    let out = in_flight.await.unwrap();
    assert_eq!(
        (out.status(), out.text().as_str()),
        (200, "slow done"),
        "{}",
        out.stderr
    );
    let status = proxy.wait_exit(TIMEOUT).await;
    assert_eq!(status.code(), Some(0), "{}", proxy.stderr_text());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_keep_alive_response_during_drain_says_connection_close() {
    let app = app().await;
    let mut proxy = Proxy::inbound_to(app.addr()).await;
    let mut conn = Conn::connect(proxy.inbound()).await;
    conn.send("GET /fast HTTP/1.1\r\nHost: app\r\n\r\n").await;
    let before = conn.read_response().await;
    assert_eq!(before.status, 200);
    assert_ne!(
        before.header("connection"),
        Some("close"),
        "closed before any shutdown"
    );

    conn.send("GET /slow HTTP/1.1\r\nHost: app\r\n\r\n").await;
    app.wait_for_requests(2).await;
    proxy.sigterm();
    let during = conn.read_response().await;

    assert_eq!(during.status, 200);
    assert_eq!(during.text(), "slow done");
    assert_eq!(
        during
            .header("connection")
            .map(str::to_ascii_lowercase)
            .as_deref(),
        Some("close"),
        "{:?}",
        during.headers
    );
    assert!(
        conn.is_closed_within(TIMEOUT).await,
        "the connection stayed open after Connection: close"
    );
    assert_eq!(
        proxy.wait_exit(TIMEOUT).await.code(),
        Some(0),
        "{}",
        proxy.stderr_text()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_http2_client_gets_goaway_after_its_streams_finish() {
    let app = app().await;
    let mut proxy = Proxy::inbound_to(app.addr()).await;
    let mut h2 = client::http2(proxy.inbound()).await;
    let slow = h2.sender.send_request(client::get("app", "/slow"));
    let slow = tokio::spawn(slow);
    app.wait_for_requests(1).await;

    proxy.sigterm();

    let reply = client::collect(slow.await.unwrap().expect("the in-flight stream failed")).await;
    assert_eq!(reply.head.status, 200);
    assert_eq!(reply.body, "slow done");
    let ended =
        herd_tests::within("the HTTP/2 connection to end", TIMEOUT, &mut h2.connection).await;
    assert!(
        matches!(ended, Ok(Ok(()))),
        "the connection ended without a graceful GOAWAY: {ended:?}"
    );
    assert_eq!(
        proxy.wait_exit(TIMEOUT).await.code(),
        Some(0),
        "{}",
        proxy.stderr_text()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upgraded_connection_is_cut_at_drain_timeout_then_the_proxy_exits_0() {
    let app = server::websocket_echo().await;
    let mut proxy = Proxy::start(&format!(
        "
        proxy:
          inbound:
            listen: $INBOUND
            app: {}
          admin:
            listen: $ADMIN
          drainTimeout: 2s
        ",
        app.addr()
    ))
    .await;
    let mut socket = ws::connect(proxy.inbound(), "app.local", "/api/v1/streaming").await;
    assert_eq!(ws::next(&mut socket).await, Message::text("welcome"));

    let start = Instant::now();
    proxy.sigterm();

    // During the drain the stream keeps working...
    ws::round_trip(&mut socket, Message::text("draining")).await;
    // ...until the deadline.
    let how = ws::closed(&mut socket).await;
    let cut_after = start.elapsed();
    assert!(
        (Duration::from_millis(1800)..Duration::from_secs(5)).contains(&cut_after),
        "the WebSocket ended ({how}) {cut_after:?} after SIGTERM, expected at the 2 s drainTimeout"
    );
    let status = proxy.wait_exit(TIMEOUT).await;
    assert_eq!(status.code(), Some(0), "{}", proxy.stderr_text());
    assert!(
        start.elapsed() < Duration::from_secs(6),
        "exit took {:?}",
        start.elapsed()
    );
}
