//! The real peers themselves, without a proxy: if one of these fails, the machine lacks a peer
//! (run `scripts/test`, which installs them) or the kit is broken, and the proxy tests that use
//! that peer tell nothing.

use std::time::Duration;

use herd_tests::{Puma, Redis, client, curl, puma, redis, server, tcp, ws};
use server::reply;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test(flavor = "multi_thread")]
async fn puma_serves_the_echo_app() {
    let app = Puma::start(puma::ECHO).await;
    let out = curl()
        .header("X-Probe: 1")
        .get(format!("http://{}/hello?a=b", app.addr()))
        .await;
    assert_eq!(out.status(), 200, "{}", out.stderr);
    let seen = out.json();
    assert_eq!(seen["path"], "/hello");
    assert_eq!(seen["query"], "a=b");
    assert_eq!(seen["headers"]["HTTP_X_PROBE"], "1");
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_answers_redis_cli() {
    let redis = Redis::start().await;
    assert_eq!(redis::cli(redis.addr(), &["SET", "peer", "ok"]).await, "OK");
    assert_eq!(redis::cli(redis.addr(), &["GET", "peer"]).await, "ok");
}

#[tokio::test(flavor = "multi_thread")]
async fn in_test_h2_server_sends_trailers() {
    let app = server::http2(|_req| async { reply::with_grpc_trailers("hi") }).await;
    let mut h2 = client::http2(app.addr()).await;
    let response = h2
        .sender
        .send_request(client::get("grpc.local", "/"))
        .await
        .expect("send");
    let reply = client::collect(response).await;
    assert_eq!(reply.body, "hi");
    assert_eq!(reply.trailers.expect("trailers")["grpc-status"], "0");
}

#[tokio::test(flavor = "multi_thread")]
async fn in_test_sse_server_spaces_its_events() {
    let app = server::http1(|_req| async { reply::sse(Duration::from_millis(100), 5) }).await;
    let stream = client::events(app.addr(), "sse.local", "/", Duration::from_secs(5)).await;
    assert_eq!(stream.status, 200);
    assert_eq!(stream.events.len(), 5);
    let spread = stream.events[4].0 - stream.events[0].0;
    assert!(
        spread >= Duration::from_millis(350),
        "events arrived within {spread:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn in_test_websocket_server_echoes() {
    let app = server::websocket_echo().await;
    let mut socket = ws::connect(app.addr(), "ws.local", "/").await;
    assert_eq!(ws::next(&mut socket).await, Message::text("welcome"));
    ws::round_trip(&mut socket, Message::text("ping")).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn raw_connection_reads_pipelined_responses() {
    let app = Puma::start(puma::ECHO).await;
    let mut conn = tcp::Conn::connect(app.addr()).await;
    conn.send("GET /1 HTTP/1.1\r\nHost: a\r\n\r\nGET /chunked HTTP/1.1\r\nHost: a\r\n\r\n")
        .await;
    assert_eq!(conn.read_response().await.json()["path"], "/1");
    let chunked = conn.read_response().await;
    assert!(chunked.chunked);
    assert_eq!(chunked.text(), "part0\npart1\npart2\n");
}
