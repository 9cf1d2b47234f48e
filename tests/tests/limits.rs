//! Limits and bad input: each has a clear outcome for the client at fault, and the proxy keeps
//! serving everyone else.

use std::time::{Duration, Instant};

use herd_tests::tcp::Conn;
use herd_tests::{Proxy, Puma, TIMEOUT, curl, ports, puma, server};

/// A proxy whose inbound listener (to `app`) has the extra `settings` lines.
async fn inbound_with(app: std::net::SocketAddr, settings: &str) -> Proxy {
    let settings = settings.replace('\n', "\n    ");
    Proxy::start(&format!(
        "proxy:\n  inbound:\n    listen: $INBOUND\n    app: {app}\n    {settings}\n  admin:\n    listen: $ADMIN\n"
    ))
    .await
}

fn error_header(out: &herd_tests::curl::Output) -> String {
    out.header("herd-proxy-error")
        .unwrap_or_else(|| panic!("no herd-proxy-error header: {:?}", out.head()))
        .to_ascii_lowercase()
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_request_gets_400_and_a_closed_connection_while_others_are_served() {
    let app = Puma::start(puma::ECHO).await;
    let proxy = Proxy::inbound_to(app.addr()).await;
    let mut neighbour = Conn::connect(proxy.inbound()).await;
    neighbour
        .send("GET /before HTTP/1.1\r\nHost: app\r\n\r\n")
        .await;
    assert_eq!(neighbour.read_response().await.status, 200);

    let mut bad = Conn::connect(proxy.inbound()).await;
    bad.send("GET / HTTP/1.1\r\nHost: app\r\nthis is not a header\r\n\r\n")
        .await;
    let response = bad.read_response().await;
    assert_eq!(response.status, 400, "{response:?}");
    assert!(
        bad.is_closed_within(TIMEOUT).await,
        "the bad connection stayed open"
    );

    // The client already connected keeps its connection and is still answered.
    neighbour
        .send("GET /after HTTP/1.1\r\nHost: app\r\n\r\n")
        .await;
    let after = neighbour.read_response().await;
    assert_eq!(after.status, 200);
    assert_eq!(after.json()["path"], "/after");
}

#[tokio::test(flavor = "multi_thread")]
async fn headers_over_max_header_bytes_get_431() {
    let app = Puma::start(puma::ECHO).await;
    let proxy = inbound_with(app.addr(), "maxHeaderBytes: 8192").await;

    let big = format!("X-Big: {}", "a".repeat(16 * 1024));
    let out = curl().header(&big).get(proxy.inbound_url("/")).await;
    assert_eq!(out.status(), 431, "{}", out.text());

    let fits = format!("X-Big: {}", "a".repeat(4 * 1024));
    let out = curl().header(&fits).get(proxy.inbound_url("/")).await;
    assert_eq!(
        out.status(),
        200,
        "a head under the limit was refused: {}",
        out.text()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_trickling_its_headers_is_closed_after_header_timeout() {
    let app = Puma::start(puma::ECHO).await;
    let proxy = inbound_with(app.addr(), "headerTimeout: 1s").await;

    let conn = Conn::connect(proxy.inbound()).await.into_inner();
    let (mut read, mut write) = conn.into_split();
    let start = Instant::now();
    let trickle = tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        write
            .write_all(b"GET / HTTP/1.1\r\nHost: app\r\n")
            .await
            .ok();
        // One header byte every 100 ms, forever: each byte alone is quick.
        for byte in b"X-Slow: ".iter().cycle().take(600) {
            if write.write_all(&[*byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });

    let mut answer = Vec::new();
    let read_until_closed = async {
        use tokio::io::AsyncReadExt;
        let mut buf = [0u8; 1024];
        while let Ok(n) = read.read(&mut buf).await {
            if n == 0 {
                break;
            }
            answer.extend_from_slice(&buf[..n]);
        }
    };
    herd_tests::within(
        "the trickling connection to be closed",
        TIMEOUT,
        read_until_closed,
    )
    .await;
    let closed_after = start.elapsed();
    trickle.abort();

    assert!(
        (Duration::from_millis(900)..Duration::from_secs(4)).contains(&closed_after),
        "closed after {closed_after:?}, expected about the 1 s headerTimeout"
    );
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        !answer.contains(" 200 "),
        "the trickled request was served: {answer}"
    );
    assert_eq!(curl().get(proxy.inbound_url("/")).await.status(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_app_that_is_down_gets_502_saying_connect_refused() {
    let proxy = Proxy::inbound_to(ports::closed()).await;

    let out = curl().get(proxy.inbound_url("/")).await;

    assert_eq!(out.status(), 502, "{}", out.text());
    let error = error_header(&out);
    assert!(
        error.contains("connect") && error.contains("refused"),
        "herd-proxy-error: {error}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_app_that_never_answers_gets_504_after_the_route_timeout() {
    let app = server::never_answers().await;
    let proxy = Proxy::start(&format!(
        "
        proxy:
          outbound:
            listen: $OUTBOUND
          admin:
            listen: $ADMIN
        services:
          - name: web
            authorities: [web.local]
            endpoints: [{}]
            routes:
              - match: {{ pathPrefix: / }}
                timeout: 1s
        ",
        app.addr()
    ))
    .await;

    let out = curl()
        .header("Host: web.local")
        .get(proxy.outbound_url("/"))
        .await;

    assert_eq!(out.status(), 504, "{}", out.text());
    assert!(error_header(&out).contains("timeout"), "{:?}", out.head());
    assert!(
        (Duration::from_millis(900)..Duration::from_secs(5)).contains(&out.elapsed),
        "answered after {:?}, expected about the 1 s route timeout",
        out.elapsed
    );
    assert_eq!(app.connections(), 1, "the request never reached the app");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_inbound_app_that_never_answers_gets_504_after_the_inbound_timeout() {
    let app = server::never_answers().await;
    let proxy = inbound_with(app.addr(), "timeout: 1s").await;

    let out = curl().get(proxy.inbound_url("/")).await;

    assert_eq!(out.status(), 504, "{}", out.text());
    assert!(
        out.elapsed < Duration::from_secs(5),
        "answered after {:?}",
        out.elapsed
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn max_connections_holds_a_third_connection_until_one_closes() {
    let app = Puma::start(puma::ECHO).await;
    let proxy = inbound_with(app.addr(), "maxConnections: 2").await;
    let request = "GET / HTTP/1.1\r\nHost: app\r\n\r\n";

    let mut first = Conn::connect(proxy.inbound()).await;
    first.send(request).await;
    assert_eq!(first.read_response().await.status, 200);
    let mut second = Conn::connect(proxy.inbound()).await;
    second.send(request).await;
    assert_eq!(second.read_response().await.status, 200);

    // The kernel accepts the third, but the proxy does not serve it...
    let mut third = Conn::connect(proxy.inbound()).await;
    third.send(request).await;
    assert_eq!(
        third.read_some(Duration::from_secs(1)).await,
        None,
        "a third connection was served"
    );

    // ...until one of the first two goes away.
    drop(first);
    assert_eq!(third.read_response().await.status, 200);
}

/// Waits for the proxy to close its (first) connection to `app`, which should happen about 1 s
/// (the tests' `idleTimeout`) after the last response, `answered`.
async fn closes_about_a_second_after(app: &server::Server, answered: Instant) {
    herd_tests::eventually(
        "the proxy to close its idle app connection",
        TIMEOUT,
        || async { (!app.closed_at().is_empty()).then_some(()) },
    )
    .await;
    let idle_for = app.closed_at()[0] - answered;
    assert!(
        (Duration::from_millis(700)..Duration::from_secs(3)).contains(&idle_for),
        "the app connection closed {idle_for:?} after the last response, expected about 1 s"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_upstream_connections_are_closed_after_idle_timeout() {
    let app = server::text("ok").await;
    let proxy = inbound_with(app.addr(), "idleTimeout: 1s").await;

    let out = curl().get(proxy.inbound_url("/")).await;
    let answered = Instant::now();
    assert_eq!(out.status(), 200);

    closes_about_a_second_after(&app, answered).await;
    assert_eq!(app.connections(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_http2_upstream_connections_are_closed_after_idle_timeout() {
    let app = server::http2(|_req| async { server::reply::text("ok") }).await;
    let proxy = Proxy::start(&format!(
        "
        proxy:
          outbound:
            listen: $OUTBOUND
          admin:
            listen: $ADMIN
        services:
          - name: grpc
            authorities: [grpc.local]
            protocol: http2
            endpoints: [{}]
            limits:
              idleTimeout: 1s
        ",
        app.addr()
    ))
    .await;
    let get = || async {
        let out = curl()
            .header("Host: grpc.local")
            .get(proxy.outbound_url("/"))
            .await;
        assert_eq!(out.status(), 200, "{}", out.stderr);
    };

    // A request 600 ms after the first keeps the connection: idleness counts from the last one.
    get().await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    get().await;
    let answered = Instant::now();
    assert_eq!(
        app.connections(),
        1,
        "the second request opened a connection"
    );

    closes_about_a_second_after(&app, answered).await;

    // The next request opens a new connection.
    get().await;
    assert_eq!(app.connections(), 2);
    assert_eq!(app.requests(), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn upstream_idle_timeout_defaults_to_10s_below_pumas_20s() {
    let app = Puma::start(puma::ECHO).await;
    let proxy = Proxy::inbound_to(app.addr()).await;

    let config = proxy.admin_get("/config").await.json();

    assert_eq!(
        config["config"]["proxy"]["inbound"]["idleTimeout"], "10s",
        "{config}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unknown_authority_on_outbound_gets_404() {
    let proxy = Proxy::start(
        "
        proxy:
          outbound:
            listen: $OUTBOUND
          admin:
            listen: $ADMIN
        services:
          - name: other
            authorities: [other.local]
            endpoints: [127.0.0.1:9]
        ",
    )
    .await;

    let out = curl()
        .header("Host: nowhere.local")
        .get(proxy.outbound_url("/"))
        .await;

    assert_eq!(out.status(), 404, "{}", out.text());
    let error = error_header(&out);
    assert!(
        error.contains("no service") && error.contains("nowhere.local"),
        "herd-proxy-error: {error}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn connect_on_outbound_opens_an_opaque_tunnel() {
    let app = Puma::start(puma::ECHO).await;
    let echo = server::tcp_echo().await;
    let proxy = Proxy::start(
        "
        proxy:
          outbound:
            listen: $OUTBOUND
          admin:
            listen: $ADMIN
        services:
          - name: other
            authorities: [other.local]
            endpoints: [127.0.0.1:9]
        ",
    )
    .await;

    // curl -p tunnels through the proxy with CONNECT, then speaks HTTP inside.
    let out = curl()
        .arg("-p")
        .proxy(proxy.outbound())
        .get(format!("http://{}/tunnelled", app.addr()))
        .await;
    assert_eq!(
        out.heads.first().map(|h| h.status),
        Some(200),
        "CONNECT refused: {}",
        out.stderr
    );
    assert_eq!(out.status(), 200, "{}", out.stderr);
    assert_eq!(out.json()["path"], "/tunnelled");

    // Raw: after the 200, bytes are bytes.
    let mut conn = Conn::connect(proxy.outbound()).await;
    conn.send(format!(
        "CONNECT {0} HTTP/1.1\r\nHost: {0}\r\n\r\n",
        echo.addr()
    ))
    .await;
    let response = conn.read_response_to("CONNECT").await;
    assert_eq!(response.status, 200);
    conn.send("\x16\x03\x01 pretend TLS").await;
    assert_eq!(conn.read_exact(15).await, b"\x16\x03\x01 pretend TLS");
}
