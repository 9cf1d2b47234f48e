//! The tunnel idle timeout: an opaque connection or a `CONNECT` tunnel whose client has sent
//! its FIN while the upstream never closes (Redis and Postgres keep idle clients forever) is
//! closed on both sides after `tunnelIdleTimeout` without a byte, and counted as
//! `outcome="idle"`; a WebSocket that keeps exchanging pings is never cut.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::SinkExt;
use herd_tests::prometheus::Exposition;
use herd_tests::tcp::Conn;
use herd_tests::{Proxy, TIMEOUT, ports, server, ws};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{Notify, oneshot};
use tokio_tungstenite::tungstenite::Message;

/// The idle timeout the tests configure: short, so a test takes seconds.
const IDLE: Duration = Duration::from_secs(1);
/// The proxy checks for silence eight times per timeout, so it closes a silent tunnel after
/// between IDLE and IDLE * 9/8; the rest is room for a loaded machine.
const CLOSES_WITHIN: Duration = Duration::from_millis(2500);

/// What the upstream saw of its connection once the test asked it to look.
#[derive(Debug, PartialEq)]
enum Upstream {
    /// The proxy has closed its side: writing a byte drew a reset.
    Closed,
    /// The proxy still holds the connection.
    Held,
}

/// An upstream that reads until the client's FIN, then neither answers nor closes, as a Redis
/// or Postgres server keeps an idle client. When `probe` is notified it writes a byte every
/// 20 ms for up to 2 s and reports on `report` whether the proxy still holds the connection: a
/// closed socket answers the first byte with a reset, which fails the next write. (Reading
/// cannot tell: after the FIN every read returns end of file.) One connection only.
async fn never_closes(probe: Arc<Notify>, report: oneshot::Sender<Upstream>) -> server::Server {
    let report = std::sync::Mutex::new(Some(report));
    let report = Arc::new(report);
    server::tcp(move |mut stream| {
        let (probe, report) = (probe.clone(), report.clone());
        async move {
            let mut got = Vec::new();
            if stream.read_to_end(&mut got).await.is_err() {
                return;
            }
            probe.notified().await;
            let mut seen = Upstream::Held;
            for _ in 0..100 {
                if stream.write_all(b"?").await.is_err() {
                    seen = Upstream::Closed;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            if let Some(report) = report.lock().unwrap().take() {
                let _ = report.send(seen);
            }
            // Holds the connection until the server is dropped.
            std::future::pending::<()>().await;
        }
    })
    .await
}

/// Sends a few bytes and the FIN on `conn`, then checks that the proxy closes the client's side
/// after the idle timeout (not before) and the upstream's side too.
async fn half_close_and_expect_both_sides_closed(
    mut conn: Conn,
    probe: &Notify,
    report: oneshot::Receiver<Upstream>,
) {
    conn.send("QUIT\r\n").await;
    conn.shutdown_write().await;
    let sent = Instant::now();
    let got = conn.read_to_end(CLOSES_WITHIN).await;
    let silent = sent.elapsed();
    assert!(
        got.is_empty(),
        "the upstream said nothing, yet {got:?} arrived"
    );
    assert!(
        silent >= IDLE,
        "closed after {silent:?}, before the idle timeout ({IDLE:?})"
    );
    probe.notify_one();
    let seen = herd_tests::within("the upstream's probe", TIMEOUT, report)
        .await
        .expect("the upstream reports");
    assert_eq!(seen, Upstream::Closed, "the upstream's side was left open");
}

async fn tcp_closed_total(proxy: &Proxy, service: &str, outcome: &str) -> f64 {
    let metrics = Exposition::parse(&proxy.admin_get("/metrics").await.text());
    metrics
        .sum(
            "herd_tcp_connections_closed_total",
            &[("service", service), ("outcome", outcome)],
        )
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_half_closed_opaque_connection_whose_upstream_never_closes_is_closed_when_idle() {
    let probe = Arc::new(Notify::new());
    let (report, seen) = oneshot::channel();
    let upstream = never_closes(probe.clone(), report).await;
    let listen = ports::addr();
    // The service's own limit; the proxy's (the default, 1h) would hold it far longer.
    let proxy = Proxy::start(&format!(
        "
        proxy:
          admin:
            listen: $ADMIN
        services:
          - name: redis
            protocol: opaque
            listen: {listen}
            endpoints: [{}]
            limits: {{ tunnelIdleTimeout: {}ms }}
        ",
        upstream.addr(),
        IDLE.as_millis()
    ))
    .await;

    let conn = Conn::connect(listen).await;
    half_close_and_expect_both_sides_closed(conn, &probe, seen).await;
    assert_eq!(tcp_closed_total(&proxy, "redis", "idle").await, 1.0);
    assert_eq!(tcp_closed_total(&proxy, "redis", "ok").await, 0.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_half_closed_connect_tunnel_whose_upstream_never_closes_is_closed_when_idle() {
    let probe = Arc::new(Notify::new());
    let (report, seen) = oneshot::channel();
    let upstream = never_closes(probe.clone(), report).await;
    let proxy = Proxy::start(&format!(
        "
        proxy:
          outbound:
            listen: $OUTBOUND
          admin:
            listen: $ADMIN
          tunnelIdleTimeout: {}ms
        ",
        IDLE.as_millis()
    ))
    .await;

    // A host outside the mesh, as Sidekiq reaches a remote instance through HTTPS_PROXY.
    let mut conn = Conn::connect(proxy.outbound()).await;
    conn.send(format!(
        "CONNECT {0} HTTP/1.1\r\nHost: {0}\r\n\r\n",
        upstream.addr()
    ))
    .await;
    assert_eq!(conn.read_response_to("CONNECT").await.status, 200);
    half_close_and_expect_both_sides_closed(conn, &probe, seen).await;
    assert_eq!(tcp_closed_total(&proxy, "egress", "idle").await, 1.0);
}

/// A proxy whose outbound listener reaches the WebSocket server `app` as `streaming.local`,
/// with the test's idle timeout.
async fn streaming_proxy(app: SocketAddr) -> Proxy {
    Proxy::start(&format!(
        "
        proxy:
          outbound:
            listen: $OUTBOUND
          admin:
            listen: $ADMIN
          tunnelIdleTimeout: {}ms
        services:
          - name: streaming
            authorities: [streaming.local]
            endpoints: [{app}]
        ",
        IDLE.as_millis()
    ))
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_websocket_that_exchanges_pings_is_not_cut() {
    let app = server::websocket_echo().await;
    let proxy = streaming_proxy(app.addr()).await;
    let mut socket = ws::connect(proxy.outbound(), "streaming.local", "/api/v1/streaming").await;
    assert_eq!(ws::next(&mut socket).await, Message::text("welcome"));

    // Three timeouts long, a ping every 300 ms (the server answers each with a pong): the
    // tunnel is never silent for a whole timeout.
    let started = Instant::now();
    let mut pongs = 0;
    while started.elapsed() < 3 * IDLE {
        socket
            .send(Message::Ping(b"still here".to_vec().into()))
            .await
            .expect("send a ping");
        let answer = herd_tests::within(
            "a pong",
            TIMEOUT,
            futures_util::StreamExt::next(&mut socket),
        )
        .await
        .expect("the WebSocket closed")
        .expect("the WebSocket failed");
        assert!(matches!(answer, Message::Pong(_)), "{answer:?}");
        pongs += 1;
        // Pacing, not waiting: the pings must span the timeout several times over.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(pongs >= 8, "{pongs} pongs");
    ws::round_trip(&mut socket, Message::text("after the pings")).await;
    assert_eq!(tcp_closed_total(&proxy, "streaming", "idle").await, 0.0);

    // Without pings it is an idle tunnel like any other.
    let quiet = Instant::now();
    let ended = ws::closed(&mut socket).await;
    assert!(
        quiet.elapsed() >= IDLE && quiet.elapsed() < CLOSES_WITHIN,
        "closed ({ended}) after {:?} of silence",
        quiet.elapsed()
    );
    assert_eq!(tcp_closed_total(&proxy, "streaming", "idle").await, 1.0);
}
