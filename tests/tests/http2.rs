//! HTTP/2 through the proxy: h2c prior knowledge from curl, nghttp and h2load; HTTP/1 clients
//! to an HTTP/2 service and HTTP/2 clients to an HTTP/1 app; trailers carried end to end, as
//! gRPC needs them.

use std::net::SocketAddr;
use std::time::Duration;

use herd_tests::server::{self, reply};
use herd_tests::{Proxy, Puma, TIMEOUT, client, curl, puma};

/// An in-test HTTP/2 app answering `hello` with gRPC trailers, and telling in `x-upstream-version`
/// which HTTP version reached it.
async fn grpc_app() -> server::Server {
    server::http2(|req| async move {
        let version = format!("{:?}", req.version());
        let mut response = reply::with_grpc_trailers("hello");
        response
            .headers_mut()
            .insert("x-upstream-version", version.parse().unwrap());
        response
    })
    .await
}

/// An outbound proxy with `grpc.local` -> `grpc` (HTTP/2) and `web.local` -> `web` (HTTP/1).
async fn outbound(grpc: SocketAddr, web: SocketAddr) -> Proxy {
    Proxy::start(&format!(
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
            endpoints: [{grpc}]
          - name: web
            authorities: [web.local]
            endpoints: [{web}]
        "
    ))
    .await
}

/// Runs a command from nghttp2-client, bounded, returning its stdout.
async fn nghttp2_tool(program: &str, args: &[&str]) -> String {
    let output = tokio::process::Command::new(program)
        .args(args)
        .kill_on_drop(true)
        .output();
    let output = herd_tests::within(program, TIMEOUT, output)
        .await
        .unwrap_or_else(|e| panic!("run {program} (is nghttp2-client installed?): {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{program} {args:?} failed: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

#[tokio::test(flavor = "multi_thread")]
async fn h2c_prior_knowledge_client_reaches_an_http1_app() {
    let app = Puma::start(puma::ECHO).await;
    let proxy = Proxy::inbound_to(app.addr()).await;

    let out = curl()
        .http2_prior_knowledge()
        .get(proxy.inbound_url("/h2?x=1"))
        .await;

    assert_eq!(out.status(), 200, "{}", out.stderr);
    assert_eq!(
        out.head().version,
        "HTTP/2",
        "curl did not speak HTTP/2 to the proxy"
    );
    let seen = out.json();
    assert_eq!(seen["path"], "/h2");
    assert_eq!(seen["query"], "x=1");
    assert_eq!(seen["protocol"], "HTTP/1.1", "Puma speaks HTTP/1.1 only");
}

#[tokio::test(flavor = "multi_thread")]
async fn nghttp_speaks_h2c_to_the_inbound_listener() {
    let app = Puma::start(puma::ECHO).await;
    let proxy = Proxy::inbound_to(app.addr()).await;

    let frames = nghttp2_tool("nghttp", &["-v", &proxy.inbound_url("/nghttp")]).await;

    assert!(frames.contains("recv SETTINGS frame"), "{frames}");
    assert!(frames.contains(":status: 200"), "{frames}");
    assert!(frames.contains(r#""path":"/nghttp""#), "{frames}");
}

#[tokio::test(flavor = "multi_thread")]
async fn many_concurrent_streams_share_one_connection() {
    // Each answer takes 200 ms: streams handled one after another would show in-flight 1.
    let app = server::http1(|_req| async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        reply::text("ok")
    })
    .await;
    let proxy = Proxy::inbound_to(app.addr()).await;

    // One connection (-c 1), up to 50 streams at once (-m 50), 200 requests.
    let report = nghttp2_tool(
        "h2load",
        &["-n", "200", "-c", "1", "-m", "50", &proxy.inbound_url("/")],
    )
    .await;

    assert!(
        report.contains("200 succeeded, 0 failed, 0 errored"),
        "{report}"
    );
    assert!(report.contains("status codes: 200 2xx"), "{report}");
    assert_eq!(app.requests(), 200);
    assert!(
        app.max_in_flight() >= 10,
        "streams were not forwarded concurrently: at most {} in flight at the app",
        app.max_in_flight()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn http1_client_reaches_an_http2_service() {
    let grpc = grpc_app().await;
    let web = Puma::start(puma::ECHO).await;
    let proxy = outbound(grpc.addr(), web.addr()).await;

    let out = curl()
        .header("Host: grpc.local")
        .get(proxy.outbound_url("/"))
        .await;

    assert_eq!(out.status(), 200, "{}", out.stderr);
    assert_eq!(out.head().version, "HTTP/1.1");
    assert_eq!(out.header("x-upstream-version"), Some("HTTP/2.0"));
    assert_eq!(out.text(), "hello");
}

#[tokio::test(flavor = "multi_thread")]
async fn http2_client_reaches_an_http1_service_on_outbound() {
    let grpc = grpc_app().await;
    let web = Puma::start(puma::ECHO).await;
    let proxy = outbound(grpc.addr(), web.addr()).await;

    // The URL's authority is web.local; --connect-to sends the connection to the proxy.
    let out = curl()
        .http2_prior_knowledge()
        .arg("--connect-to")
        .arg(format!("web.local:80:{}", proxy.outbound()))
        .get("http://web.local/from-h2")
        .await;

    assert_eq!(out.status(), 200, "{}", out.stderr);
    assert_eq!(out.head().version, "HTTP/2");
    let seen = out.json();
    assert_eq!(seen["path"], "/from-h2");
    assert_eq!(seen["protocol"], "HTTP/1.1");
    assert_eq!(seen["headers"]["HTTP_HOST"], "web.local");
}

#[tokio::test(flavor = "multi_thread")]
async fn trailers_are_carried_from_an_http2_service_to_an_http2_client() {
    let grpc = grpc_app().await;
    let web = Puma::start(puma::ECHO).await;
    let proxy = outbound(grpc.addr(), web.addr()).await;

    let mut h2 = client::http2(proxy.outbound()).await;
    let response = h2
        .sender
        .send_request(client::get("grpc.local", "/pkg.Service/Call"))
        .await;
    let reply = client::collect(response.expect("response from the proxy")).await;

    assert_eq!(reply.head.status, 200);
    assert_eq!(reply.body, "hello");
    let trailers = reply.trailers.expect("the trailers were dropped");
    assert_eq!(trailers["grpc-status"], "0");
    assert_eq!(trailers["grpc-message"], "ok");
}

#[tokio::test(flavor = "multi_thread")]
async fn trailers_are_carried_through_inbound_to_an_http2_app() {
    let grpc = grpc_app().await;
    let proxy = Proxy::start(&format!(
        "
        proxy:
          inbound:
            listen: $INBOUND
            app: {}
            protocol: http2
          admin:
            listen: $ADMIN
        ",
        grpc.addr()
    ))
    .await;

    let mut h2 = client::http2(proxy.inbound()).await;
    let response = h2
        .sender
        .send_request(client::get("app", "/pkg.Service/Call"))
        .await;
    let reply = client::collect(response.expect("response from the proxy")).await;

    assert_eq!(reply.head.status, 200);
    assert_eq!(reply.head.headers["x-upstream-version"], "HTTP/2.0");
    assert_eq!(
        reply.trailers.expect("the trailers were dropped")["grpc-status"],
        "0"
    );
}
