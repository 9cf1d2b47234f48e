//! One authority per request: what the proxy routes by is what the app sees (RFC 9112 §3.2,
//! RFC 9113 §8.3.1), on both listeners, and `CONNECT` that cannot reach the proxy itself or, under
//! `egress: mesh-only`, any host outside the mesh.
//!
//! Every request here is written byte for byte (raw TCP for HTTP/1, the `h2` crate for HTTP/2),
//! since curl and hyper would fix up the very headers under test. The apps are fleet endpoints,
//! which record every header as it arrived, so a test sees exactly what the app was handed.

use std::net::SocketAddr;

use herd_tests::fleet::{self, Endpoint};
use herd_tests::prometheus::Exposition;
use herd_tests::tcp::{Conn, Response};
use herd_tests::{Proxy, TIMEOUT, ports, server, within};

/// An inbound listener in front of `web`, and an outbound one routing `web.local` to `web` and
/// `other.local` to `other`: a request routed to the wrong one shows in which answered.
struct Mesh {
    web: Endpoint,
    other: Endpoint,
    proxy: Proxy,
}

impl Mesh {
    async fn start() -> Mesh {
        Self::start_with("", "").await
    }

    /// With extra `proxy.outbound` keys (flow style) and extra YAML after the services.
    async fn start_with(outbound: &str, services: &str) -> Mesh {
        let web = fleet::endpoint("web").start().await;
        let other = fleet::endpoint("other").start().await;
        let (w, o) = (web.addr(), other.addr());
        let proxy = Proxy::start(&format!(
            "
            proxy:
              inbound: {{ listen: $INBOUND, app: {w} }}
              outbound: {{ listen: $OUTBOUND{outbound} }}
              admin: {{ listen: $ADMIN }}
            services:
              - name: web
                authorities: [web.local]
                endpoints: [{w}]
              - name: other
                authorities: [other.local]
                endpoints: [{o}]
            {services}
            "
        ))
        .await;
        Mesh { web, other, proxy }
    }

    /// Both data listeners, named.
    fn listeners(&self) -> [(&'static str, SocketAddr); 2] {
        [
            ("inbound", self.proxy.inbound()),
            ("outbound", self.proxy.outbound()),
        ]
    }

    /// Requests the apps received so far.
    fn reached(&self) -> usize {
        self.web.requests() + self.other.requests()
    }
}

/// Sends `head` (a whole request head, blank line included) on a new connection and reads the
/// answer to it.
async fn send(addr: SocketAddr, head: &str) -> Response {
    let mut conn = Conn::connect(addr).await;
    conn.send(head).await;
    conn.read_response().await
}

/// Asserts that `head` is answered 400 by the proxy itself on both listeners, the connection
/// closed, and that no app saw it.
async fn refused_on_both_listeners(head: &str, error: &str) {
    let mesh = Mesh::start().await;
    for (listener, addr) in mesh.listeners() {
        let mut conn = Conn::connect(addr).await;
        conn.send(head).await;
        let response = conn.read_response().await;
        assert_eq!(
            response.status, 400,
            "{listener} answered {head:?} with: {response:?}"
        );
        let said = response.header("herd-proxy-error").unwrap_or_default();
        assert!(
            said.contains(error),
            "{listener}: herd-proxy-error {said:?} does not say {error:?}"
        );
        assert!(
            conn.is_closed_within(TIMEOUT).await,
            "{listener} kept the connection open after refusing {head:?}"
        );
    }
    assert_eq!(mesh.reached(), 0, "a refused request reached an app");
}

#[tokio::test(flavor = "multi_thread")]
async fn absolute_form_replaces_a_different_host_with_the_target_authority() {
    let mesh = Mesh::start().await;
    for (listener, addr) in mesh.listeners() {
        let response = send(
            addr,
            "GET http://web.local/abs?x=1 HTTP/1.1\r\nHost: other.local\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert_eq!(response.status, 200, "{listener}: {response:?}");
        assert_eq!(
            response.header(fleet::HEADER),
            Some("web"),
            "{listener}: routed to the wrong service"
        );
        let seen = mesh.web.seen().pop().expect("web saw the request");
        assert_eq!(seen.path, "/abs", "{listener}");
        assert_eq!(
            seen.header_values("host"),
            [b"web.local".to_vec()],
            "{listener}: the app was not told the authority the proxy routed by"
        );
    }
    assert_eq!(mesh.other.requests(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn http1_1_request_without_host_is_refused() {
    refused_on_both_listeners("GET / HTTP/1.1\r\n\r\n", "no host").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn absolute_form_without_host_is_refused() {
    refused_on_both_listeners("GET http://web.local/ HTTP/1.1\r\n\r\n", "no host").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn two_host_lines_are_refused() {
    refused_on_both_listeners(
        "GET / HTTP/1.1\r\nHost: web.local\r\nHost: other.local\r\n\r\n",
        "more than one host",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn two_equal_host_lines_are_refused() {
    refused_on_both_listeners(
        "GET / HTTP/1.1\r\nHost: web.local\r\nhost: web.local\r\n\r\n",
        "more than one host",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn host_with_a_space_is_refused() {
    refused_on_both_listeners("GET / HTTP/1.1\r\nHost: a b\r\n\r\n", "invalid host header").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn host_with_userinfo_is_refused() {
    refused_on_both_listeners(
        "GET / HTTP/1.1\r\nHost: evil@web.local\r\n\r\n",
        "invalid host header",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn empty_host_is_refused() {
    refused_on_both_listeners("GET / HTTP/1.1\r\nHost:\r\n\r\n", "invalid host header").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn absolute_form_with_userinfo_is_refused() {
    refused_on_both_listeners(
        "GET http://evil@web.local/ HTTP/1.1\r\nHost: web.local\r\n\r\n",
        "invalid authority",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn http1_0_request_without_host_still_reaches_the_inbound_app() {
    // HTTP/1.0 has no Host requirement; the inbound app needs no authority to be chosen.
    let mesh = Mesh::start().await;
    let response = send(mesh.proxy.inbound(), "GET /old HTTP/1.0\r\n\r\n").await;
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(mesh.web.requests(), 1);
}

/// Sends one HTTP/2 request for `http://{authority}/h2` with the given `host` header lines and
/// returns its status and `herd-proxy-error`.
async fn h2_request(addr: SocketAddr, authority: &str, hosts: &[&str]) -> (u16, Option<String>) {
    let stream = Conn::connect(addr).await.into_inner();
    let (client, connection) = within(
        "an HTTP/2 handshake",
        TIMEOUT,
        h2::client::handshake(stream),
    )
    .await
    .expect("HTTP/2 handshake");
    tokio::spawn(connection);
    let mut request = http::Request::get(format!("http://{authority}/h2"));
    for host in hosts {
        request = request.header("host", *host);
    }
    let request = request.body(()).expect("request");
    let mut client = within("HTTP/2 send capacity", TIMEOUT, client.ready())
        .await
        .expect("HTTP/2 connection ready");
    let (response, _) = client
        .send_request(request, true)
        .expect("send an HTTP/2 request");
    let response = within("an HTTP/2 response", TIMEOUT, response)
        .await
        .expect("an HTTP/2 response");
    let error = response
        .headers()
        .get("herd-proxy-error")
        .map(|v| v.to_str().expect("text").to_owned());
    (response.status().as_u16(), error)
}

#[tokio::test(flavor = "multi_thread")]
async fn http2_host_that_differs_from_authority_is_refused() {
    let mesh = Mesh::start().await;
    for (listener, addr) in mesh.listeners() {
        let (status, error) = h2_request(addr, "web.local", &["other.local"]).await;
        assert_eq!(status, 400, "{listener}: {error:?}");
        let error = error.unwrap_or_default();
        assert!(
            error.contains("host header differs from :authority"),
            "{listener}: {error:?}"
        );
    }
    assert_eq!(mesh.reached(), 0, "a refused request reached an app");
}

#[tokio::test(flavor = "multi_thread")]
async fn http2_two_host_headers_are_refused() {
    let mesh = Mesh::start().await;
    for (listener, addr) in mesh.listeners() {
        let (status, error) = h2_request(addr, "web.local", &["web.local", "web.local"]).await;
        assert_eq!(status, 400, "{listener}: {error:?}");
        assert!(
            error.unwrap_or_default().contains("more than one host"),
            "{listener}"
        );
    }
    assert_eq!(mesh.reached(), 0, "a refused request reached an app");
}

#[tokio::test(flavor = "multi_thread")]
async fn http2_host_equal_to_authority_reaches_the_app_once() {
    let mesh = Mesh::start().await;
    for (listener, addr) in mesh.listeners() {
        // The same authority, written differently: case and the default port.
        let (status, error) = h2_request(addr, "web.local", &["WEB.local:80"]).await;
        assert_eq!(status, 200, "{listener}: {error:?}");
        let seen = mesh.web.seen().pop().expect("web saw the request");
        assert_eq!(
            seen.header_values("host"),
            [b"web.local".to_vec()],
            "{listener}: the app must see the :authority the proxy routed by, once"
        );
    }
    assert_eq!(mesh.other.requests(), 0);
}

/// Sends `CONNECT target` to the outbound listener; returns the response and the connection.
async fn connect(proxy: &Proxy, target: &str) -> (Response, Conn) {
    let mut conn = Conn::connect(proxy.outbound()).await;
    conn.send(format!(
        "CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n"
    ))
    .await;
    let response = conn.read_response_to("CONNECT").await;
    (response, conn)
}

/// Asserts that `CONNECT target` is refused 403 as the proxy's own listener, and that nothing
/// can be sent through.
async fn refused_as_own_listener(proxy: &Proxy, target: &str) {
    let (response, mut conn) = connect(proxy, target).await;
    assert_eq!(response.status, 403, "CONNECT {target}: {response:?}");
    let said = response.header("herd-proxy-error").unwrap_or_default();
    assert!(
        said.contains("is this proxy's own listener"),
        "CONNECT {target}: herd-proxy-error {said:?}"
    );
    // What the admin port would have answered through a tunnel.
    let _ = conn
        .try_send("GET /config HTTP/1.1\r\nHost: admin\r\n\r\n")
        .await;
    assert!(
        conn.is_closed_within(TIMEOUT).await,
        "CONNECT {target}: the connection stayed open after the refusal"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn connect_to_the_proxys_own_listeners_is_refused() {
    let redis = ports::addr();
    let mesh = Mesh::start_with(
        "",
        &format!(
            "  - name: cache
                protocol: opaque
                listen: {redis}
                endpoints: [{}]",
            ports::closed()
        ),
    )
    .await;
    let proxy = &mesh.proxy;
    for addr in [proxy.admin(), proxy.inbound(), proxy.outbound(), redis] {
        refused_as_own_listener(proxy, &addr.to_string()).await;
    }
    assert_eq!(mesh.reached(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn connect_to_an_own_listener_by_another_name_is_refused() {
    let mesh = Mesh::start().await;
    let port = mesh.proxy.admin().port();
    for target in [
        format!("localhost:{port}"),
        format!("LOCALHOST.:{port}"),
        format!("0.0.0.0:{port}"),
        format!("[::ffff:127.0.0.1]:{port}"),
    ] {
        refused_as_own_listener(&mesh.proxy, &target).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn connect_to_another_loopback_port_still_tunnels() {
    let mesh = Mesh::start().await;
    let echo = server::tcp_echo().await;
    let (response, mut conn) = connect(&mesh.proxy, &echo.addr().to_string()).await;
    assert_eq!(response.status, 200, "{response:?}");
    conn.send("ping").await;
    assert_eq!(conn.read_exact(4).await, b"ping");
}

#[tokio::test(flavor = "multi_thread")]
async fn absolute_form_to_the_proxys_own_listener_is_refused() {
    let mesh = Mesh::start().await;
    let admin = mesh.proxy.admin();
    for (listener, addr) in mesh.listeners() {
        let mut conn = Conn::connect(addr).await;
        conn.send(format!(
            "GET http://{admin}/config HTTP/1.1\r\nHost: {admin}\r\n\r\n"
        ))
        .await;
        let response = conn.read_response().await;
        assert_eq!(response.status, 403, "{listener}: {response:?}");
        assert!(
            response
                .header("herd-proxy-error")
                .unwrap_or_default()
                .contains("is this proxy's own listener"),
            "{listener}: {response:?}"
        );
    }
    assert_eq!(mesh.reached(), 0);
}

/// `herd_http_responses_total` for outbound requests that no service claimed, by `error`.
async fn unclaimed_errors(proxy: &Proxy, error: &str) -> f64 {
    let metrics = Exposition::parse(&proxy.admin_get("/metrics").await.text());
    metrics
        .sum(
            "herd_http_responses_total",
            &[
                ("direction", "outbound"),
                ("service", "unknown"),
                ("status_code", "403"),
                ("error", error),
            ],
        )
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread")]
async fn connect_to_the_proxy_itself_is_counted() {
    let mesh = Mesh::start().await;
    refused_as_own_listener(&mesh.proxy, &mesh.proxy.admin().to_string()).await;
    assert_eq!(unclaimed_errors(&mesh.proxy, "own-listener").await, 1.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn mesh_only_egress_refuses_connect_outside_the_mesh_and_counts_it() {
    let mesh = Mesh::start_with(", egress: mesh-only", "").await;
    let echo = server::tcp_echo().await;

    let target = echo.addr().to_string();
    let (response, mut conn) = connect(&mesh.proxy, &target).await;
    assert_eq!(response.status, 403, "{response:?}");
    let said = response.header("herd-proxy-error").unwrap_or_default();
    assert_eq!(
        said,
        format!("CONNECT to {target} refused: egress is mesh-only")
    );
    assert!(conn.is_closed_within(TIMEOUT).await);
    assert_eq!(echo.connections(), 0, "the refused host was connected to");
    assert_eq!(unclaimed_errors(&mesh.proxy, "egress-refused").await, 1.0);

    // A mesh service is still reached.
    let (response, mut conn) = connect(&mesh.proxy, "web.local:80").await;
    assert_eq!(response.status, 200, "{response:?}");
    conn.send("GET /tunnelled HTTP/1.1\r\nHost: web.local\r\n\r\n")
        .await;
    let inside = conn.read_response().await;
    assert_eq!(inside.header(fleet::HEADER), Some("web"));
}

#[tokio::test(flavor = "multi_thread")]
async fn egress_is_any_by_default_and_shown_in_config() {
    let mesh = Mesh::start().await;
    let config = mesh.proxy.admin_get("/config").await.json();
    assert_eq!(config["config"]["proxy"]["outbound"]["egress"], "any");
    let echo = server::tcp_echo().await;
    let (response, mut conn) = connect(&mesh.proxy, &echo.addr().to_string()).await;
    assert_eq!(response.status, 200, "{response:?}");
    conn.send("pong").await;
    assert_eq!(conn.read_exact(4).await, b"pong");
}
