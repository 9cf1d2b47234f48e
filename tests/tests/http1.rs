//! HTTP/1.1 through the proxy, with curl or raw sockets as the client and Puma as the app:
//! connection reuse on both sides, chunked bodies, `100-continue`, HEAD, pipelining, the
//! headers a proxy must remove or add, HTTP/1.0, absolute-form and authority matching, and
//! request smuggling refused.

use herd_tests::tcp::Conn;
use herd_tests::{Proxy, Puma, curl, ports, puma, server};

/// An outbound proxy whose `web` service (`web.local`) is `app`.
async fn outbound_to_web(app: std::net::SocketAddr) -> Proxy {
    Proxy::start(&format!(
        "
        proxy:
          outbound:
            listen: $OUTBOUND
          admin:
            listen: $ADMIN
        services:
          - name: web
            authorities: [web.local, web.local:3000]
            endpoints: [{app}]
        "
    ))
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn keep_alive_connections_are_reused_on_both_sides() {
    let app = Puma::start(puma::ECHO).await;
    let proxy = Proxy::inbound_to(app.addr()).await;

    let out = curl()
        .verbose()
        .arg(proxy.inbound_url("/one"))
        .get(proxy.inbound_url("/two"))
        .await;

    assert!(
        out.stderr.contains("Re-using existing connection"),
        "curl opened a second connection to the proxy:\n{}",
        out.stderr
    );
    let seen = out.json_stream();
    assert_eq!(seen.len(), 2, "{}", out.text());
    assert_eq!(
        (&seen[0]["path"], &seen[1]["path"]),
        (&"/one".into(), &"/two".into())
    );
    assert_eq!(
        seen[0]["peer_port"], seen[1]["peer_port"],
        "the proxy opened a second connection to Puma instead of reusing the first"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn chunked_request_body_reaches_the_app_whole() {
    let app = Puma::start(puma::ECHO).await;
    let proxy = Proxy::inbound_to(app.addr()).await;
    let body = "a chunk of request body\n".repeat(2000);

    // `-T -` streams stdin with `Transfer-Encoding: chunked`.
    let out = curl()
        .verbose()
        .put_stdin(body.clone().into_bytes())
        .get(proxy.inbound_url("/upload"))
        .await;

    assert!(
        out.stderr.contains("Transfer-Encoding: chunked"),
        "curl did not send chunked:\n{}",
        out.stderr
    );
    assert_eq!(out.status(), 200, "{}", out.stderr);
    let seen = out.json();
    assert_eq!(seen["body_bytes"], body.len());
    assert_eq!(seen["body"], body.as_str());
}

#[tokio::test(flavor = "multi_thread")]
async fn chunked_response_body_stays_chunked() {
    let app = Puma::start(puma::ECHO).await;
    let proxy = Proxy::inbound_to(app.addr()).await;

    let mut conn = Conn::connect(proxy.inbound()).await;
    conn.send("GET /chunked HTTP/1.1\r\nHost: app\r\n\r\n")
        .await;
    let response = conn.read_response().await;

    assert_eq!(response.status, 200);
    assert!(
        response.chunked,
        "a body of unknown length was not chunked: {:?}",
        response.headers
    );
    assert_eq!(response.text(), "part0\npart1\npart2\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn expect_100_continue_is_answered_before_the_body_is_sent() {
    let app = Puma::start(puma::ECHO).await;
    let proxy = Proxy::inbound_to(app.addr()).await;
    let file = proxy.dir().join("two-mib");
    std::fs::write(&file, vec![b'x'; 2 << 20]).unwrap();

    // curl waits up to 10 s for `100 Continue` before sending the body; a proxy that never
    // sends it makes this slow (and shows no interim response).
    let out = curl()
        .verbose()
        .args(["--expect100-timeout", "10", "-H", "Expect: 100-continue"])
        .post_file(&file)
        .get(proxy.inbound_url("/upload"))
        .await;

    assert!(
        out.heads.iter().any(|h| h.status == 100),
        "no 100 Continue reached curl:\n{}",
        out.stderr
    );
    assert_eq!(out.status(), 200, "{}", out.stderr);
    assert_eq!(out.json()["body_bytes"], 2 << 20);
    assert!(
        out.elapsed.as_secs() < 5,
        "the upload took {:?}",
        out.elapsed
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn head_response_has_no_body_and_the_connection_carries_on() {
    let app = Puma::start(puma::ECHO).await;
    let proxy = Proxy::inbound_to(app.addr()).await;
    let mut conn = Conn::connect(proxy.inbound()).await;

    conn.send("HEAD /head HTTP/1.1\r\nHost: app\r\n\r\n").await;
    let head = conn.read_response_to("HEAD").await;
    assert_eq!(head.status, 200);
    let length: usize = head
        .header("content-length")
        .expect("HEAD keeps Content-Length")
        .parse()
        .unwrap();
    assert!(length > 0);

    // Had the proxy sent a body after the HEAD response, it would be read as this status line.
    conn.send("GET /after HTTP/1.1\r\nHost: app\r\n\r\n").await;
    let after = conn.read_response().await;
    assert_eq!(after.status, 200);
    assert_eq!(after.json()["path"], "/after");
}

#[tokio::test(flavor = "multi_thread")]
async fn pipelined_requests_are_answered_in_order() {
    let app = Puma::start(puma::ECHO).await;
    let proxy = Proxy::inbound_to(app.addr()).await;
    let mut conn = Conn::connect(proxy.inbound()).await;

    // Three requests in one write; the first is the slowest to answer.
    conn.send(
        "GET /first?sleep=0.3 HTTP/1.1\r\nHost: app\r\n\r\n\
         GET /second HTTP/1.1\r\nHost: app\r\n\r\n\
         GET /third HTTP/1.1\r\nHost: app\r\n\r\n",
    )
    .await;

    for path in ["/first", "/second", "/third"] {
        let response = conn.read_response().await;
        assert_eq!(response.status, 200);
        assert_eq!(response.json()["path"], path);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn hop_by_hop_request_headers_do_not_reach_the_app() {
    let app = Puma::start(puma::ECHO).await;
    let proxy = Proxy::inbound_to(app.addr()).await;

    let out = curl()
        .header("Connection: X-Foo")
        .header("X-Foo: 1")
        .header("Keep-Alive: timeout=5")
        .header("Proxy-Connection: keep-alive")
        // `TE: trailers` alone may be forwarded as the proxy's own (RFC 9110 §7.6.1 lets an
        // intermediary replace TE; gRPC needs it): any other TE is removed.
        .header("TE: gzip")
        .header("X-Bar: 2")
        .get(proxy.inbound_url("/"))
        .await;

    assert_eq!(out.status(), 200, "{}", out.stderr);
    let headers = &out.json()["headers"];
    for hop_by_hop in [
        "HTTP_X_FOO",
        "HTTP_KEEP_ALIVE",
        "HTTP_PROXY_CONNECTION",
        "HTTP_TE",
    ] {
        assert!(
            headers.get(hop_by_hop).is_none(),
            "{hop_by_hop} reached the app: {headers}"
        );
    }
    assert_eq!(
        headers["HTTP_X_BAR"], "2",
        "an end-to-end header was lost: {headers}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn hop_by_hop_response_headers_do_not_reach_the_client() {
    let app = server::http1(|_req| async {
        let mut response = server::reply::text("ok");
        let headers = response.headers_mut();
        headers.insert("connection", "x-resp".parse().unwrap());
        headers.insert("x-resp", "1".parse().unwrap());
        headers.insert("keep-alive", "timeout=5".parse().unwrap());
        headers.insert("x-kept", "yes".parse().unwrap());
        response
    })
    .await;
    let proxy = Proxy::inbound_to(app.addr()).await;

    let out = curl().get(proxy.inbound_url("/")).await;

    assert_eq!(out.status(), 200, "{}", out.stderr);
    assert_eq!(out.header("x-resp"), None, "{:?}", out.head());
    assert_eq!(out.header("keep-alive"), None, "{:?}", out.head());
    assert_eq!(out.header("x-kept"), Some("yes"));
}

#[tokio::test(flavor = "multi_thread")]
async fn x_forwarded_for_is_appended_to() {
    let app = Puma::start(puma::ECHO).await;
    let proxy = Proxy::inbound_to(app.addr()).await;

    let forwarded = curl()
        .header("X-Forwarded-For: 1.2.3.4")
        .get(proxy.inbound_url("/"))
        .await;
    let direct = curl().get(proxy.inbound_url("/")).await;

    assert_eq!(
        forwarded.json()["headers"]["HTTP_X_FORWARDED_FOR"],
        "1.2.3.4, 127.0.0.1"
    );
    assert_eq!(
        direct.json()["headers"]["HTTP_X_FORWARDED_FOR"],
        "127.0.0.1"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn http_1_0_clients_are_answered() {
    let app = Puma::start(puma::ECHO).await;
    let proxy = Proxy::inbound_to(app.addr()).await;

    // No Host header, no keep-alive: the response ends the connection.
    let mut conn = Conn::connect(proxy.inbound()).await;
    conn.send("GET /old HTTP/1.0\r\n\r\n").await;
    let response = conn.read_response().await;
    assert_eq!(response.status, 200);
    assert_eq!(response.json()["path"], "/old");
    assert!(
        conn.is_closed_within(herd_tests::TIMEOUT).await,
        "an HTTP/1.0 connection stayed open"
    );

    let out = curl().arg("-0").get(proxy.inbound_url("/curl")).await;
    assert_eq!(out.status(), 200, "{}", out.stderr);
    assert_eq!(out.json()["path"], "/curl");
}

#[tokio::test(flavor = "multi_thread")]
async fn absolute_form_requests_are_routed_by_their_authority() {
    let app = Puma::start(puma::ECHO).await;
    let proxy = outbound_to_web(app.addr()).await;

    // What an app does when its HTTP_PROXY points at the proxy.
    let out = curl()
        .proxy(proxy.outbound())
        .get("http://web.local/absolute?x=1")
        .await;

    assert_eq!(out.status(), 200, "{}", out.stderr);
    let seen = out.json();
    assert_eq!(seen["path"], "/absolute");
    assert_eq!(seen["query"], "x=1");
    assert_eq!(seen["headers"]["HTTP_HOST"], "web.local");

    let with_port = curl()
        .proxy(proxy.outbound())
        .get("http://web.local:3000/port")
        .await;
    assert_eq!(with_port.status(), 200, "{}", with_port.stderr);
    assert_eq!(with_port.json()["path"], "/port");
}

#[tokio::test(flavor = "multi_thread")]
async fn authorities_match_without_case_trailing_dot_or_default_port() {
    let app = Puma::start(puma::ECHO).await;
    let proxy = outbound_to_web(app.addr()).await;

    for host in [
        "WEB.Local",
        "web.local.",
        "web.local:80",
        "Web.Local.:80",
        "web.local:3000",
    ] {
        let out = curl()
            .header(&format!("Host: {host}"))
            .get(proxy.outbound_url("/"))
            .await;
        assert_eq!(
            out.status(),
            200,
            "Host: {host} was not routed to web: {}",
            out.text()
        );
        assert_eq!(out.json()["path"], "/", "Host: {host}");
    }
    for host in ["web.local:81", "web.locals", "www.web.local"] {
        let out = curl()
            .header(&format!("Host: {host}"))
            .get(proxy.outbound_url("/"))
            .await;
        assert_eq!(
            out.status(),
            404,
            "Host: {host} was routed somewhere: {}",
            out.text()
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn request_smuggling_is_refused() {
    let app = server::text("ok").await;
    let proxy = Proxy::inbound_to(app.addr()).await;

    let smuggled = [
        // Content-Length and Transfer-Encoding: which one frames the body?
        "POST / HTTP/1.1\r\nHost: app\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n\
         0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: app\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: chunked\r\nContent-Length: 6\r\n\r\n\
         0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: app\r\n\r\n",
        // A length that is not a number, after the Transfer-Encoding: hyper ignores it and
        // frames by chunks, where a lenient parser in front may read `6`. (Found by the
        // `framing` fuzz target.)
        "POST / HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: chunked\r\nContent-Length: 6x\r\n\r\n\
         0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: app\r\n\r\n",
        // Two different lengths.
        "POST / HTTP/1.1\r\nHost: app\r\nContent-Length: 6\r\nContent-Length: 0\r\n\r\n\
         GET /smuggled HTTP/1.1\r\nHost: app\r\n\r\n",
        // Lines ended by bare line feeds, which hyper accepts too.
        "POST / HTTP/1.1\nHost: app\nContent-Length: 6\ntransfer-encoding: chunked\n\n\
         0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: app\r\n\r\n",
    ];
    for request in smuggled {
        let mut conn = Conn::connect(proxy.inbound()).await;
        conn.send(request).await;
        let response = conn.read_response().await;
        assert_eq!(response.status, 400, "{request:?} got {response:?}");
        assert!(
            conn.is_closed_within(herd_tests::TIMEOUT).await,
            "connection left open after {request:?}"
        );
    }
    assert_eq!(app.requests(), 0, "a smuggling attempt reached the app");

    let fine = curl().get(proxy.inbound_url("/")).await;
    assert_eq!(fine.status(), 200, "{}", fine.stderr);
    assert_eq!(app.requests(), 1);

    // The guard follows a keep-alive connection past the requests before the attempt, whatever
    // their line ends.
    let mut conn = Conn::connect(proxy.inbound()).await;
    conn.send(
        "GET /first HTTP/1.1\nHost: app\n\n\
         POST / HTTP/1.1\r\nHost: app\nContent-Length: 6\r\nTransfer-Encoding: chunked\n\r\n\
         0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: app\r\n\r\n",
    )
    .await;
    assert_eq!(conn.read_response().await.status, 200);
    assert_eq!(conn.read_response().await.status, 400);
    assert!(conn.is_closed_within(herd_tests::TIMEOUT).await);
    assert_eq!(app.requests(), 2, "only the first request reaches the app");
}

#[tokio::test(flavor = "multi_thread")]
async fn ipv6_listeners_endpoints_and_forwarded_addresses() {
    let app = Puma::start_on(puma::ECHO, ports::addr_v6()).await;
    let (inbound, outbound) = (ports::addr_v6(), ports::addr_v6());
    let _proxy = Proxy::start(&format!(
        r#"
        proxy:
          inbound:
            listen: "{inbound}"
            app: "{app}"
          outbound:
            listen: "{outbound}"
          admin:
            listen: $ADMIN
        services:
          - name: web
            authorities: [web.local]
            endpoints: ["{app}"]
        "#,
        app = app.addr()
    ))
    .await;

    let through_inbound = curl().arg("-g").get(format!("http://{inbound}/v6")).await;
    assert_eq!(through_inbound.status(), 200, "{}", through_inbound.stderr);
    assert_eq!(
        through_inbound.json()["headers"]["HTTP_X_FORWARDED_FOR"],
        "::1"
    );

    let through_outbound = curl()
        .arg("-g")
        .header("Host: web.local")
        .get(format!("http://{outbound}/v6"))
        .await;
    assert_eq!(
        through_outbound.status(),
        200,
        "{}",
        through_outbound.stderr
    );
    assert_eq!(
        through_outbound.json()["headers"]["HTTP_X_FORWARDED_FOR"],
        "::1"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_connection_carries_on_through_a_request_with_a_body_and_back_to_plain_ones() {
    // Requests without a body go to the app on the proxy's own pooled sockets (the direct
    // client), requests with one through hyper's client: one client connection carries both
    // kinds in any order, and the plain ones keep reusing one connection to the app.
    let app = Puma::start(puma::ECHO).await;
    let proxy = Proxy::inbound_to(app.addr()).await;
    let mut conn = Conn::connect(proxy.inbound()).await;

    conn.send("GET /one HTTP/1.1\r\nHost: app\r\n\r\n").await;
    let one = conn.read_response().await;
    assert_eq!(
        (one.status, one.json()["path"].as_str()),
        (200, Some("/one"))
    );
    assert!(one.header("date").is_some(), "no Date header");
    assert_eq!(
        one.header("content-length"),
        Some(&*one.body.len().to_string())
    );

    // A POST with its body and a GET pipelined behind it, in one write.
    conn.send(
        "POST /two HTTP/1.1\r\nHost: app\r\nContent-Length: 5\r\n\r\nhello\
         GET /three HTTP/1.1\r\nHost: app\r\n\r\n",
    )
    .await;
    let two = conn.read_response().await;
    assert_eq!(two.json()["path"], "/two");
    assert_eq!(two.json()["body"], "hello");
    let three = conn.read_response().await;
    assert_eq!(three.json()["path"], "/three");

    // `Content-Length: 0` is no body: still the plain path, and the app sees the length.
    conn.send("PUT /four HTTP/1.1\r\nHost: app\r\nContent-Length: 0\r\n\r\n")
        .await;
    let four = conn.read_response().await;
    assert_eq!(four.json()["method"], "PUT");
    assert_eq!(four.json()["headers"]["CONTENT_LENGTH"], "0");
    assert_eq!(
        one.json()["peer_port"],
        four.json()["peer_port"],
        "the proxy opened another connection to the app"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idle_keep_alive_connection_closes_a_header_timeout_after_its_last_request() {
    let app = Puma::start(puma::ECHO).await;
    let proxy = Proxy::start(&format!(
        "
        proxy:
          inbound:
            listen: $INBOUND
            app: {}
            headerTimeout: 1s
          admin:
            listen: $ADMIN
        services: []
        ",
        app.addr()
    ))
    .await;
    let mut conn = Conn::connect(proxy.inbound()).await;
    // Requests 600 ms apart keep the connection open past its first second...
    for _ in 0..3 {
        conn.send("GET / HTTP/1.1\r\nHost: app\r\n\r\n").await;
        assert_eq!(conn.read_response().await.status, 200);
        tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    }
    conn.send("GET / HTTP/1.1\r\nHost: app\r\n\r\n").await;
    assert_eq!(conn.read_response().await.status, 200);
    let last = std::time::Instant::now();
    // ...and once idle it is closed about a second after the last answer.
    assert!(
        conn.is_closed_within(std::time::Duration::from_secs(5))
            .await,
        "the idle connection stayed open"
    );
    let idle = last.elapsed();
    assert!(
        (std::time::Duration::from_millis(900)..std::time::Duration::from_millis(2500))
            .contains(&idle),
        "closed {idle:?} after the last answer, expected about the 1 s headerTimeout"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_response_framed_two_ways_becomes_a_502_and_the_proxy_carries_on() {
    // An app answering with two different lengths: which bytes are the body cannot be known, so
    // the proxy must not guess (response splitting); it answers 502 itself.
    let app = server::tcp(|mut stream| async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut buf = [0u8; 4096];
        let mut seen = Vec::new();
        while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
            match stream.read(&mut buf).await {
                Ok(n) if n > 0 => seen.extend_from_slice(&buf[..n]),
                _ => return,
            }
        }
        let answer: &[u8] = if seen.starts_with(b"GET /bad ") {
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok!"
        } else {
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
        };
        let _ = stream.write_all(answer).await;
    })
    .await;
    let proxy = Proxy::inbound_to(app.addr()).await;

    let bad = curl().get(proxy.inbound_url("/bad")).await;
    assert_eq!(bad.status(), 502, "{}", bad.text());
    let why = bad.header("herd-proxy-error").unwrap_or_default();
    assert!(why.contains("conflicting content-length"), "{why}");
    let good = curl().get(proxy.inbound_url("/good")).await;
    assert_eq!((good.status(), good.text().as_str()), (200, "ok"));
}
