//! A client's broken request body is the client's fault, never the app's.
//!
//! The proxy streams a request body to the app as it arrives, so a body that turns out malformed
//! half-way (a chunk size that overflows, a chunk extension with a bare LF), one the client cuts
//! short with a reset, or HTTP/2 DATA beyond the request's `content-length` fails the exchange
//! with the app too. The proxy must still blame the client: a 400 (`error="bad-request"`) where
//! the client can get a response, nothing charged to the app's success rate, and nothing charged
//! to the endpoint, which served nobody badly: no ejection (outlier detection here ejects after a
//! single failure) and no latency penalty in its peak-EWMA estimate.
//!
//! Each test sends its broken requests to a service of two endpoints, then reads the proxy's
//! account of them (`/endpoints`, `/metrics`) and checks that good requests still reach both.

use std::time::Duration;

use bytes::Bytes;
use herd_tests::fleet::{self, AUTHORITY, Endpoint};
use herd_tests::load::Client;
use herd_tests::prometheus::Exposition;
use herd_tests::tcp::Conn;
use herd_tests::{Proxy, TIMEOUT, endpoints, eventually, within};
use http::Request;

/// Two endpoints in turn (round-robin, so the test knows both are asked), each ejected after a
/// single failure.
struct Service {
    a: Endpoint,
    b: Endpoint,
    proxy: Proxy,
    /// What `/endpoints` said of each once warm, before any broken request.
    warm: endpoints::Service,
}

async fn service(extra: &str) -> Service {
    let a = fleet::endpoint("a").start().await;
    let b = fleet::endpoint("b").start().await;
    let proxy = Proxy::start(&fleet::mesh(&format!(
        "endpoints: {}
         balancer: {{ algorithm: round-robin }}
         outlierDetection: {{ consecutiveFailures: 1, minEjection: 30s }}
         {extra}",
        fleet::list(&[&a, &b])
    )))
    .await;
    // Warm: each endpoint has a latency estimate to compare with later.
    let mut client = Client::new(proxy.outbound());
    for _ in 0..4 {
        let outcome = client.get(AUTHORITY, "/", &[]).await;
        assert!(outcome.is_ok(), "warming up: {outcome:?}");
    }
    let warm = endpoints::service(&proxy, "web").await;
    for e in &warm.endpoints {
        assert!(
            e.rtt_ms.is_some(),
            "no latency estimate after warming: {warm:?}"
        );
    }
    Service { a, b, proxy, warm }
}

impl Service {
    /// Neither endpoint was charged with the broken requests: both ready, no failure counted,
    /// never ejected, latency estimates no higher than before (without a new sample, an
    /// estimate only decays), and good requests still reach both.
    async fn assert_no_endpoint_penalised(&self) {
        let now = endpoints::service(&self.proxy, "web").await;
        for e in &now.endpoints {
            let warm = self
                .warm
                .endpoints
                .iter()
                .find(|w| w.address == e.address)
                .expect("the same endpoints as when warm");
            assert_eq!(e.state, "ready", "{now:?}");
            assert_eq!(e.consecutive_failures, 0, "{now:?}");
            assert_eq!(e.ejections, 0, "{now:?}");
            let (before, after) = (warm.rtt_ms.unwrap(), e.rtt_ms.unwrap_or(0.0));
            assert!(
                after <= before,
                "{}'s latency estimate rose from {before} ms to {after} ms: {now:?}",
                e.address
            );
        }
        let (a_before, b_before) = (self.a.requests(), self.b.requests());
        let mut client = Client::new(self.proxy.outbound());
        for _ in 0..6 {
            let outcome = client.get(AUTHORITY, "/", &[]).await;
            assert!(
                outcome.is_ok(),
                "a good request after the broken ones: {outcome:?}"
            );
        }
        assert_eq!(
            (self.a.requests() - a_before, self.b.requests() - b_before),
            (3, 3),
            "good requests no longer reach both endpoints"
        );
    }

    /// The `web` service's responses in `/metrics` by `status_code/classification/error`.
    async fn responses(&self) -> Vec<(String, f64)> {
        let metrics = Exposition::parse(&self.proxy.admin_get("/metrics").await.text());
        let mut out: Vec<(String, f64)> = metrics
            .find("herd_http_responses_total", &[("service", "web")])
            .filter(|s| s.value > 0.0)
            .map(|s| {
                let label = |name: &str| s.labels.get(name).cloned().unwrap_or_default();
                (
                    format!(
                        "{}/{}/{}",
                        label("status_code"),
                        label("classification"),
                        label("error")
                    ),
                    s.value,
                )
            })
            .collect();
        out.sort_by(|x, y| x.0.cmp(&y.0));
        out
    }

    /// Waits (at most [`TIMEOUT`]) until the `web` service's responses in `/metrics` satisfy
    /// `ok`; panics with `what` and the last ones read if they never do.
    async fn wait_for_responses(&self, what: &str, ok: impl Fn(&[(String, f64)]) -> bool) {
        let deadline = std::time::Instant::now() + TIMEOUT;
        loop {
            let now = self.responses().await;
            if ok(&now) {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the web service's responses in /metrics are {now:?}; expected {what}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until `/metrics` counts `n` client errors for `web` beside `good` 200s, and
    /// nothing else (no 502, nothing classified as the app's failure).
    async fn assert_counted_as_client_errors(&self, n: usize, good: usize) {
        let expected = vec![
            ("200/success/".to_owned(), good as f64),
            ("400/success/bad-request".to_owned(), n as f64),
        ];
        self.wait_for_responses(&format!("{expected:?}"), |now| now == expected)
            .await;
    }
}

/// Sends a chunked `POST` whose body is `body` on a fresh connection, reads the response, and
/// checks that the proxy closed the connection after it.
async fn send_raw(proxy: &Proxy, body: &str) -> herd_tests::tcp::Response {
    let mut conn = Conn::connect(proxy.outbound()).await;
    conn.send(format!(
        "POST /upload HTTP/1.1\r\nHost: {AUTHORITY}\r\nTransfer-Encoding: chunked\r\n\r\n{body}"
    ))
    .await;
    let response = conn.read_response_to("POST").await;
    assert!(
        conn.is_closed_within(TIMEOUT).await,
        "the connection stayed open after a malformed body"
    );
    response
}

fn assert_blames_the_client(response: &herd_tests::tcp::Response) {
    assert_eq!(
        response.status,
        400,
        "{:?} {}",
        response.headers,
        response.text()
    );
    let error = response.header("herd-proxy-error").unwrap_or_default();
    println!("herd-proxy-error: {error}");
    assert!(
        error.contains("request body"),
        "herd-proxy-error: {error:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_chunk_size_that_overflows_gets_400_and_no_endpoint_is_penalised() {
    let web = service("").await;
    for _ in 0..2 {
        let response = send_raw(&web.proxy, "ffffffffffffffffff1\r\nhello\r\n0\r\n\r\n").await;
        assert_blames_the_client(&response);
    }
    web.assert_counted_as_client_errors(2, 4).await;
    web.assert_no_endpoint_penalised().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bad_chunk_extension_gets_400_and_no_endpoint_is_penalised() {
    let web = service("").await;
    for _ in 0..2 {
        // A chunk extension ended by a bare LF: a parser that looks only for LF would read the
        // line differently from one that wants CRLF.
        let response = send_raw(&web.proxy, "5;ext=1\nhello\r\n0\r\n\r\n").await;
        assert_blames_the_client(&response);
    }
    web.assert_counted_as_client_errors(2, 4).await;
    web.assert_no_endpoint_penalised().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_broken_body_to_an_http2_app_gets_400_and_no_endpoint_is_penalised() {
    // The same defect over HTTP/2 to the app: its stream is reset rather than its connection
    // closed, so the exchange's error says nothing of the client's body.
    let a = fleet::endpoint("a").http2().start().await;
    let b = fleet::endpoint("b").http2().start().await;
    let proxy = Proxy::start(&fleet::mesh(&format!(
        "endpoints: {}
         protocol: http2
         balancer: {{ algorithm: round-robin }}
         outlierDetection: {{ consecutiveFailures: 1, minEjection: 30s }}",
        fleet::list(&[&a, &b])
    )))
    .await;
    let mut client = Client::new(proxy.outbound());
    for _ in 0..2 {
        assert!(client.get(AUTHORITY, "/", &[]).await.is_ok());
    }
    let warm = endpoints::service(&proxy, "web").await;
    let web = Service { a, b, proxy, warm };
    for _ in 0..2 {
        let response = send_raw(&web.proxy, "ffffffffffffffffff1\r\nhello\r\n0\r\n\r\n").await;
        assert_blames_the_client(&response);
    }
    web.assert_counted_as_client_errors(2, 2).await;
    web.assert_no_endpoint_penalised().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_resets_mid_body_charges_neither_the_app_nor_the_endpoint() {
    let web = service("").await;
    for n in 1..=2 {
        let asked = web.a.requests() + web.b.requests();
        let mut conn = Conn::connect(web.proxy.outbound()).await;
        conn.send(format!(
            "POST /upload HTTP/1.1\r\nHost: {AUTHORITY}\r\nContent-Length: 100000\r\n\r\n"
        ))
        .await;
        conn.send(vec![b'x'; 1000]).await;
        // The app has the request in hand (and is reading its body) when the client goes.
        eventually("the app to receive the request", TIMEOUT, || async {
            (web.a.requests() + web.b.requests() > asked).then_some(())
        })
        .await;
        let stream = conn.into_inner();
        // SO_LINGER 0: close() sends RST instead of FIN.
        stream.set_zero_linger().expect("SO_LINGER");
        drop(stream);
        // The request to the app is cancelled with it.
        let cancelled = eventually("the app to see the request cancelled", TIMEOUT, || async {
            let n_cancelled = web.a.cancelled().len() + web.b.cancelled().len();
            (n_cancelled >= n).then_some(n_cancelled)
        })
        .await;
        assert_eq!(cancelled, n);
    }
    // The client got no answer, and the proxy did not count one as the app's 502.
    web.assert_counted_as_client_errors(2, 4).await;
    web.assert_no_endpoint_penalised().await;
}

/// Requests whose DATA overruns their length: whether the proxy's exchange with the app or the
/// reset of the client's stream comes first is a race, so several.
const BROKEN: usize = 20;

#[tokio::test(flavor = "multi_thread")]
async fn http2_data_beyond_content_length_charges_neither_the_app_nor_the_endpoint() {
    let web = service("").await;
    let stream = Conn::connect(web.proxy.outbound()).await.into_inner();
    let (mut h2, connection) = within(
        "an HTTP/2 handshake",
        TIMEOUT,
        h2::client::handshake(stream),
    )
    .await
    .expect("HTTP/2 handshake");
    tokio::spawn(connection);
    for _ in 0..BROKEN {
        let asked = web.a.requests() + web.b.requests();
        let request = Request::post(format!("http://{AUTHORITY}/upload"))
            .header("content-length", "10")
            .body(())
            .expect("request");
        h2 = within("a stream", TIMEOUT, h2.ready())
            .await
            .expect("ready");
        let (response, mut body) = h2.send_request(request, false).expect("send the head");
        // Half the body: the proxy forwards it and the app starts reading...
        body.send_data(Bytes::from_static(b"01234"), false)
            .expect("send DATA");
        eventually("the app to receive the request", TIMEOUT, || async {
            (web.a.requests() + web.b.requests() > asked).then_some(())
        })
        .await;
        // ...then 10 bytes more than the length allows.
        body.send_data(Bytes::from_static(b"0123456789"), true)
            .expect("send DATA");
        match within("the proxy's answer", TIMEOUT, response).await {
            Ok(response) => panic!("a response to a body over its length: {response:?}"),
            Err(error) => assert_eq!(
                error.reason(),
                Some(h2::Reason::PROTOCOL_ERROR),
                "the stream was not reset as malformed: {error}"
            ),
        }
    }
    // Every request the app received was cancelled when the client's stream was reset.
    let settled = eventually("the app to finish every request", TIMEOUT, || async {
        let cancelled = web.a.cancelled().len() + web.b.cancelled().len();
        (cancelled == BROKEN).then_some(cancelled)
    })
    .await;
    assert_eq!(settled, BROKEN);
    web.assert_no_endpoint_penalised().await;
    // Nothing is counted against the app: a 400 for the client's error where the request got
    // that far before its stream was reset (hyper drops a request whose stream is reset, so
    // whether it did is a race), nothing where it did not; and the 4 + 6 good requests' 200s.
    let what = format!("10 200s, and at most {BROKEN} 400 bad-requests");
    web.wait_for_responses(&what, |now| {
        now.iter().all(|(labels, n)| match labels.as_str() {
            "200/success/" => *n == 10.0,
            "400/success/bad-request" => *n <= BROKEN as f64,
            _ => false,
        }) && now.iter().any(|(labels, _)| labels == "200/success/")
    })
    .await;
}
