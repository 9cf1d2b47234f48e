//! Opaque TCP: redis through a `protocol: opaque` service listener, server-speaks-first
//! protocols without detection delay, half-closes, and the inbound listener's detection
//! (non-HTTP bytes forwarded as they are, silent clients given up on after `detectTimeout`).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use herd_tests::tcp::Conn;
use herd_tests::{Proxy, Redis, TIMEOUT, ports, redis, server};

/// A proxy whose only data listener is the opaque service `listen` -> `endpoint`.
async fn opaque_service(listen: SocketAddr, endpoint: SocketAddr) -> Proxy {
    Proxy::start(&format!(
        "
        proxy:
          admin:
            listen: $ADMIN
        services:
          - name: opaque
            protocol: opaque
            listen: {listen}
            endpoints: [{endpoint}]
        "
    ))
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_cli_reaches_redis_server_through_an_opaque_service() {
    let redis = Redis::start().await;
    let listen = ports::addr();
    let _proxy = opaque_service(listen, redis.addr()).await;

    assert_eq!(redis::cli(listen, &["PING"]).await, "PONG");
    assert_eq!(
        redis::cli(listen, &["SET", "toot", "hello fediverse"]).await,
        "OK"
    );
    assert_eq!(
        redis::cli(listen, &["GET", "toot"]).await,
        "hello fediverse"
    );
    // And the value really is in the server behind the proxy.
    assert_eq!(
        redis::cli(redis.addr(), &["GET", "toot"]).await,
        "hello fediverse"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn server_speaks_first_through_an_opaque_service_without_delay() {
    let app = server::banner(b"220 ready\r\n").await;
    let listen = ports::addr();
    let _proxy = opaque_service(listen, app.addr()).await;

    let start = Instant::now();
    let mut conn = Conn::connect(listen).await;
    // The client says nothing: a proxy that sniffs would wait for it.
    let banner = conn.read_exact(11).await;
    let waited = start.elapsed();

    assert_eq!(banner, b"220 ready\r\n");
    assert!(
        waited < Duration::from_millis(500),
        "the banner took {waited:?}"
    );
    conn.send("HELO herd\r\n").await;
    assert_eq!(conn.read_exact(11).await, b"HELO herd\r\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn half_close_through_an_opaque_service_is_honoured() {
    let app = server::replies_after_eof().await;
    let listen = ports::addr();
    let _proxy = opaque_service(listen, app.addr()).await;

    let mut conn = Conn::connect(listen).await;
    conn.send("twelve bytes").await;
    conn.shutdown_write().await;

    // The app answers only once it has read EOF, then closes: both halves must be carried.
    assert_eq!(conn.read_to_end(TIMEOUT).await, b"got 12 bytes");
}

#[tokio::test(flavor = "multi_thread")]
async fn inbound_forwards_non_http_bytes_to_the_app_as_they_are() {
    let redis = Redis::start().await;
    let proxy = Proxy::inbound_to(redis.addr()).await;

    // No `protocol` on the inbound listener: the proxy detects, sees RESP, not HTTP.
    assert_eq!(redis::cli(proxy.inbound(), &["PING"]).await, "PONG");
    assert_eq!(redis::cli(proxy.inbound(), &["SET", "k", "v"]).await, "OK");
    assert_eq!(redis::cli(proxy.inbound(), &["GET", "k"]).await, "v");
}

#[tokio::test(flavor = "multi_thread")]
async fn inbound_detection_honours_a_half_closed_client() {
    let app = server::replies_after_eof().await;
    let proxy = Proxy::inbound_to(app.addr()).await;

    let mut conn = Conn::connect(proxy.inbound()).await;
    conn.send("\x00\x01 not http").await;
    conn.shutdown_write().await;

    assert_eq!(conn.read_to_end(TIMEOUT).await, b"got 11 bytes");
}

#[tokio::test(flavor = "multi_thread")]
async fn inbound_gives_up_detecting_a_silent_client_after_detect_timeout() {
    let app = server::banner(b"220 ready\r\n").await;
    let proxy = Proxy::start(&format!(
        "
        proxy:
          inbound:
            listen: $INBOUND
            app: {}
            detectTimeout: 1s
          admin:
            listen: $ADMIN
        ",
        app.addr()
    ))
    .await;

    let start = Instant::now();
    let mut conn = Conn::connect(proxy.inbound()).await;
    let banner = conn.read_exact(11).await;
    let waited = start.elapsed();

    // Undeclared: the proxy waits for the client's first bytes, then treats it as opaque.
    assert_eq!(banner, b"220 ready\r\n");
    assert!(
        (Duration::from_millis(900)..Duration::from_secs(5)).contains(&waited),
        "the banner came after {waited:?}, expected about the 1 s detectTimeout"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn inbound_declared_opaque_never_sniffs() {
    let app = server::banner(b"220 ready\r\n").await;
    let proxy = Proxy::start(&format!(
        "
        proxy:
          inbound:
            listen: $INBOUND
            app: {}
            protocol: opaque
          admin:
            listen: $ADMIN
        ",
        app.addr()
    ))
    .await;

    let start = Instant::now();
    let mut conn = Conn::connect(proxy.inbound()).await;
    assert_eq!(conn.read_exact(11).await, b"220 ready\r\n");
    assert!(
        start.elapsed() < Duration::from_millis(500),
        "took {:?}",
        start.elapsed()
    );

    // HTTP-looking bytes are bytes too: echoed by the app, not parsed by the proxy.
    conn.send("GET / HTTP/1.1\r\n\r\n").await;
    assert_eq!(conn.read_exact(18).await, b"GET / HTTP/1.1\r\n\r\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn outbound_closes_non_http_bytes_it_has_no_destination_for() {
    let redis = Redis::start().await;
    let proxy = Proxy::start(&format!(
        "
        proxy:
          outbound:
            listen: $OUTBOUND
          admin:
            listen: $ADMIN
        services:
          - name: redis
            authorities: [redis.local]
            endpoints: [{}]
        ",
        redis.addr()
    ))
    .await;

    let mut conn = Conn::connect(proxy.outbound()).await;
    conn.send("*1\r\n$4\r\nPING\r\n").await;

    let reply = conn.read_to_end(TIMEOUT).await;
    assert!(
        !String::from_utf8_lossy(&reply).contains("PONG"),
        "forwarded somewhere: {reply:?}"
    );
}
