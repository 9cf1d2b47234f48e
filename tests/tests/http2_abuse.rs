//! HTTP/2 abuse against the inbound listener, with frames written by hand ([`h2raw`]): rapid
//! reset, a CONTINUATION flood, SETTINGS and PING floods, readers with a zero window asking for
//! a large response, more streams than the server allows.
//!
//! Each test holds the proxy to three things while it attacks: its memory stays bounded (the
//! peak RSS during the attack is within [`RSS_GROWTH`] of the RSS before it), a client minding
//! its own business on other connections ([`Bystander`]) has every request answered in time, and
//! where the attack is unmistakable the attacking connection is closed with a GOAWAY.
//! Every attack is bounded in frames and time; each test takes a few seconds.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use herd_tests::bystander::{Bystander, Report};
use herd_tests::h2raw::{self, Attacker, Sent, code, flag, kind, setting};
use herd_tests::server::{self, Body, reply};
use herd_tests::{Proxy, TIMEOUT, client, eventually};
use tokio::task::JoinHandle;

/// How much the proxy's resident memory may grow during an attack: far above what any of
/// these attacks costs when it is handled (a megabyte or two), far below what holding the
/// attack's frames, streams or the response bodies would take.
const RSS_GROWTH: u64 = 32 << 20;
const AUTHORITY: &str = "app.local";
/// The body of `GET /big`.
const BIG: usize = 64 << 20;
const PIECE: usize = 64 << 10;

/// The app behind the proxy: the requests it received by path, and how many bytes of `/big`
/// bodies it has handed to its connections so far.
struct Target {
    proxy: Proxy,
    hits: Arc<Mutex<BTreeMap<String, usize>>>,
    pulled: Arc<AtomicU64>,
    _app: server::Server,
}

impl Target {
    /// Requests for `path` that reached the app.
    fn hits(&self, path: &str) -> usize {
        self.hits.lock().unwrap().get(path).copied().unwrap_or(0)
    }
}

/// An app answering `/big` with 64 MiB (counting the bytes the proxy takes), never answering
/// `/hang`, and answering anything else with `ok`; a proxy whose inbound listener forwards to
/// it.
async fn target() -> Target {
    let pulled = Arc::new(AtomicU64::new(0));
    let hits = Arc::new(Mutex::new(BTreeMap::new()));
    let piece = Bytes::from(vec![b'x'; PIECE]);
    let app = server::http1({
        let (pulled, hits) = (pulled.clone(), hits.clone());
        move |req| {
            let (pulled, piece) = (pulled.clone(), piece.clone());
            let path = req.uri().path().to_owned();
            *hits.lock().unwrap().entry(path.clone()).or_default() += 1;
            async move {
                match path.as_str() {
                    "/hang" => std::future::pending().await,
                    "/big" => big_body(pulled, piece),
                    _ => reply::text("ok"),
                }
            }
        }
    })
    .await;
    let proxy = Proxy::inbound_to(app.addr()).await;
    // Warm: the RSS before an attack is that of a proxy that has served both protocols.
    for _ in 0..2 {
        let mut h2 = client::http2(proxy.inbound()).await;
        let response = h2.sender.send_request(client::get(AUTHORITY, "/")).await;
        assert_eq!(response.expect("HTTP/2 warm-up").status(), 200);
        assert_eq!(herd_tests::tcp::get(proxy.inbound(), "/").await.status, 200);
    }
    Target {
        proxy,
        hits,
        pulled,
        _app: app,
    }
}

/// 64 MiB in 64 KiB pieces, made as the proxy reads them: `pulled` counts what it has taken.
fn big_body(pulled: Arc<AtomicU64>, piece: Bytes) -> http::Response<Body> {
    let pieces = futures_util::stream::iter(0..BIG / PIECE).map(move |_| {
        pulled.fetch_add(PIECE as u64, Ordering::Relaxed);
        Ok::<_, server::BoxError>(hyper::body::Frame::data(piece.clone()))
    });
    let body = http_body_util::StreamBody::new(pieces);
    http::Response::new(http_body_util::BodyExt::boxed(body))
}

/// Samples the proxy's RSS every 10 ms until stopped; keeps the highest.
struct PeakRss {
    before: u64,
    peak: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    task: JoinHandle<()>,
}

impl PeakRss {
    fn watch(proxy: &Proxy) -> PeakRss {
        let pid = proxy.pid();
        let before = herd_tests::proxy::rss_of(pid).expect("the proxy's RSS");
        let peak = Arc::new(AtomicU64::new(before));
        let stop = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn({
            let (peak, stop) = (peak.clone(), stop.clone());
            async move {
                while !stop.load(Ordering::Relaxed) {
                    if let Some(rss) = herd_tests::proxy::rss_of(pid) {
                        peak.fetch_max(rss, Ordering::Relaxed);
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        });
        PeakRss {
            before,
            peak,
            stop,
            task,
        }
    }

    /// Stops sampling (after one last sample) and asserts the growth is within
    /// [`RSS_GROWTH`]; returns (before, peak) in bytes.
    async fn stop_and_check(self, attack: &str) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.expect("the RSS sampler");
        let peak = self.peak.load(Ordering::Relaxed);
        let growth = peak.saturating_sub(self.before);
        println!(
            "{attack}: RSS {:.1} MiB before, {:.1} MiB at the peak (+{:.1} MiB)",
            mib(self.before),
            mib(peak),
            mib(growth)
        );
        assert!(
            growth < RSS_GROWTH,
            "{attack}: the proxy's RSS grew by {:.1} MiB (from {:.1} MiB)",
            mib(growth),
            mib(self.before)
        );
        (self.before, peak)
    }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / f64::from(1 << 20)
}

/// Asserts the bystander never failed and did run meanwhile.
fn unaffected(attack: &str, report: &Report) {
    println!(
        "{attack}: bystander {} requests ok, slowest {:?}",
        report.ok, report.slowest
    );
    assert!(
        report.failures.is_empty(),
        "{attack}: the bystander failed {} times: {:#?}",
        report.failures.len(),
        report.failures
    );
    assert!(
        report.ok >= 4,
        "{attack}: the bystander got only {} answers",
        report.ok
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn rapid_reset_is_answered_with_goaway_and_memory_stays_flat() {
    const CONNECTIONS: usize = 40;
    const STREAMS: u32 = 2000;
    let t = target().await;
    let bystander = Bystander::start(t.proxy.inbound(), AUTHORITY, "/").await;
    let rss = PeakRss::watch(&t.proxy);
    let started = Instant::now();

    let mut opened = 0u64;
    for _ in 0..CONNECTIONS {
        let mut attacker = Attacker::connect(t.proxy.inbound(), &[]).await;
        // Every stream opened and cancelled at once, in one write.
        let mut burst = Vec::new();
        for i in 0..STREAMS {
            let stream = 2 * i + 1;
            h2raw::get(&mut burst, stream, AUTHORITY, "/reset");
            h2raw::reset(&mut burst, stream, code::CANCEL);
        }
        attacker.send_within(&burst, TIMEOUT).await;
        let goaway = attacker.wait_for_goaway_and_close().await;
        assert_eq!(
            (goaway.code, goaway.debug.as_str()),
            (code::ENHANCE_YOUR_CALM, "too_many_resets"),
            "{goaway:?}"
        );
        opened += u64::from(goaway.last_stream.div_ceil(2));
    }
    println!(
        "rapid reset: {opened} streams opened and reset over {CONNECTIONS} connections in {:?}; \
         {} requests reached the app",
        started.elapsed(),
        t.hits("/reset")
    );
    rss.stop_and_check("rapid reset").await;
    unaffected("rapid reset", &bystander.stop().await);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_continuation_flood_is_answered_with_goaway() {
    let t = target().await;
    let bystander = Bystander::start(t.proxy.inbound(), AUTHORITY, "/").await;
    let rss = PeakRss::watch(&t.proxy);

    // Two shapes, ten connections each: many tiny CONTINUATION frames, each a header of its
    // own (CVE-2024-27316's shape), and full-size frames carrying one endless header value.
    let mut tiny = Vec::new();
    h2raw::hpack_literal(&mut tiny, "x-flood", "a");
    let mut endless = vec![0x00, 0x07];
    endless.extend_from_slice(b"x-flood");
    endless.extend_from_slice(&[0x7f, 0xff, 0xff, 0xff, 0x0f]); // a value of ~2 GiB
    let shapes: [(&str, Vec<u8>, usize); 2] = [
        ("tiny", tiny, 100_000),
        ("full-size", vec![b'a'; 16_384], 200),
    ];
    for (shape, payload, frames) in shapes {
        for _ in 0..10 {
            let mut attacker = Attacker::connect(t.proxy.inbound(), &[]).await;
            let mut flood = Vec::new();
            let mut block = h2raw::get_block(AUTHORITY, "/flooded");
            if shape == "full-size" {
                block.extend_from_slice(&endless);
            }
            // HEADERS without END_HEADERS: the header block goes on in CONTINUATION frames,
            // none of which ends it.
            h2raw::frame(&mut flood, kind::HEADERS, flag::END_STREAM, 1, &block);
            for _ in 0..frames {
                h2raw::frame(&mut flood, kind::CONTINUATION, 0, 1, &payload);
            }
            let sent = attacker.send_within(&flood, TIMEOUT).await;
            let goaway = attacker.wait_for_goaway_and_close().await;
            assert_eq!(goaway.code, code::ENHANCE_YOUR_CALM, "{shape}: {goaway:?}");
            assert!(
                attacker.seen().headers.is_empty(),
                "{shape}: the flooded stream was answered"
            );
            println!(
                "CONTINUATION flood ({shape}): {sent:?} of {} bytes, then {goaway:?}",
                flood.len()
            );
        }
    }
    assert_eq!(t.hits("/flooded"), 0, "a flooded request reached the app");
    rss.stop_and_check("CONTINUATION flood").await;
    unaffected("CONTINUATION flood", &bystander.stop().await);
}

/// Floods the inbound listener with `total` copies of `frame` over four connections at once:
/// two that read what the server answers, two that never read (so every acknowledgement the
/// server owes piles up on its side). Returns, for the reading ones, how many acknowledgements
/// `acks` counted once all their frames were written.
async fn flood(
    t: &Target,
    frame: &[u8],
    total: usize,
    acks: fn(&h2raw::Seen) -> usize,
) -> Vec<usize> {
    let per_connection = total / 4;
    let mut tasks = Vec::new();
    for reads in [true, true, false, false] {
        let addr = t.proxy.inbound();
        let bytes = frame.repeat(per_connection);
        tasks.push(tokio::spawn(async move {
            let mut attacker = if reads {
                Attacker::connect(addr, &[]).await
            } else {
                Attacker::connect_without_reading(addr, &[]).await
            };
            let sent = attacker.send_within(&bytes, Duration::from_secs(5)).await;
            let acked = if reads {
                assert_eq!(sent, Sent::All, "a reading client's flood was refused");
                // The server answers every frame (and its own SETTINGS' acknowledgement).
                let seen = attacker
                    .wait_for("every frame acknowledged", |s| acks(s) >= per_connection)
                    .await;
                Some(acks(&seen))
            } else {
                None
            };
            let seen = attacker.seen();
            assert!(
                seen.goaway
                    .as_ref()
                    .is_none_or(|g| g.code == code::ENHANCE_YOUR_CALM),
                "{:?}",
                seen.goaway
            );
            (sent, acked)
        }));
    }
    let mut acked = Vec::new();
    for task in tasks {
        let (sent, count) = herd_tests::within("a flooding connection", 2 * TIMEOUT, task)
            .await
            .expect("a flooding connection panicked");
        println!("  one connection: {sent:?}, acknowledged {count:?}");
        acked.extend(count);
    }
    acked
}

#[tokio::test(flavor = "multi_thread")]
async fn settings_and_ping_floods_leave_memory_flat() {
    let t = target().await;
    let bystander = Bystander::start(t.proxy.inbound(), AUTHORITY, "/").await;

    let rss = PeakRss::watch(&t.proxy);
    let mut settings = Vec::new();
    h2raw::settings(&mut settings, &[(setting::MAX_CONCURRENT_STREAMS, 100)]);
    let acked = flood(&t, &settings, 200_000, |s| s.settings_acks).await;
    assert!(acked.iter().all(|&n| n >= 50_000), "{acked:?}");
    rss.stop_and_check("SETTINGS flood (200,000)").await;

    let rss = PeakRss::watch(&t.proxy);
    let mut ping = Vec::new();
    h2raw::frame(&mut ping, kind::PING, 0, 0, b"12345678");
    let acked = flood(&t, &ping, 300_000, |s| s.ping_acks).await;
    assert!(acked.iter().all(|&n| n >= 75_000), "{acked:?}");
    rss.stop_and_check("PING flood (300,000)").await;

    unaffected("SETTINGS and PING floods", &bystander.stop().await);
}

#[tokio::test(flavor = "multi_thread")]
async fn zero_window_readers_of_a_large_response_hold_the_app_back_not_memory() {
    const READERS: usize = 20;
    let t = target().await;
    let bystander = Bystander::start(t.proxy.inbound(), AUTHORITY, "/").await;
    let rss = PeakRss::watch(&t.proxy);

    let mut readers = Vec::new();
    for _ in 0..READERS {
        // A stream window of 0: the response's head may come, not a byte of its body.
        let mut attacker =
            Attacker::connect(t.proxy.inbound(), &[(setting::INITIAL_WINDOW_SIZE, 0)]).await;
        let mut request = Vec::new();
        h2raw::get(&mut request, 1, AUTHORITY, "/big");
        assert_eq!(attacker.send_within(&request, TIMEOUT).await, Sent::All);
        readers.push(attacker);
    }
    for reader in &readers {
        reader
            .wait_for("the response head", |s| s.headers == [1])
            .await;
    }
    eventually("every /big request at the app", TIMEOUT, || async {
        (t.hits("/big") == READERS).then_some(())
    })
    .await;
    // The app writes until the proxy stops taking: wait until what it has handed over stops
    // growing (the same for three samples 200 ms apart).
    let mut last = Vec::new();
    let pulled = eventually("the app's writes to stall", TIMEOUT, || {
        let now = t.pulled.load(Ordering::Relaxed);
        last.push(now);
        let stalled = last.len() >= 3 && last[last.len() - 3..].iter().all(|&n| n == now);
        async move {
            tokio::time::sleep(Duration::from_millis(180)).await;
            stalled.then_some(now)
        }
    })
    .await;
    println!(
        "zero window: {READERS} readers of {} MiB each; the app handed over {:.1} MiB in all",
        BIG >> 20,
        mib(pulled)
    );
    for reader in &readers {
        let seen = reader.seen();
        assert!(
            seen.data.is_empty(),
            "DATA beyond a zero window: {:?}",
            seen.data
        );
        assert!(seen.goaway.is_none() && !seen.closed, "{seen:?}");
    }
    assert!(
        pulled < (READERS * BIG / 4) as u64,
        "the app handed over {:.1} MiB: the proxy did not hold it back",
        mib(pulled)
    );
    rss.stop_and_check("zero-window readers").await;
    unaffected("zero-window readers", &bystander.stop().await);
}

#[tokio::test(flavor = "multi_thread")]
async fn streams_beyond_the_advertised_limit_are_refused_then_the_connection_is_closed() {
    const EXCESS: u32 = 50;
    let t = target().await;
    let bystander = Bystander::start(t.proxy.inbound(), AUTHORITY, "/").await;
    let rss = PeakRss::watch(&t.proxy);

    let mut attacker = Attacker::connect(t.proxy.inbound(), &[]).await;
    let seen = attacker
        .wait_for("the server's SETTINGS", |s| s.settings_frames > 0)
        .await;
    let max = *seen
        .settings
        .get(&setting::MAX_CONCURRENT_STREAMS)
        .expect("the proxy advertises SETTINGS_MAX_CONCURRENT_STREAMS");
    println!("the proxy advertises {max} concurrent streams");

    // `max` requests the app never answers hold every slot; EXCESS more go over the limit.
    let stream = |i: u32| 2 * i + 1;
    let mut requests = Vec::new();
    for i in 0..max + EXCESS {
        h2raw::get(&mut requests, stream(i), AUTHORITY, "/hang");
    }
    assert_eq!(attacker.send_within(&requests, TIMEOUT).await, Sent::All);
    let seen = attacker
        .wait_for("the excess streams refused", |s| {
            s.reset_with(code::REFUSED_STREAM).len() >= EXCESS as usize
        })
        .await;
    let refused: Vec<u32> = (max..max + EXCESS).map(stream).collect();
    assert_eq!(
        seen.resets,
        refused
            .iter()
            .map(|&s| (s, code::REFUSED_STREAM))
            .collect::<BTreeMap<_, _>>(),
        "exactly the streams beyond the limit are refused"
    );
    assert!(seen.goaway.is_none());
    eventually("every admitted stream at the app", TIMEOUT, || async {
        (t.hits("/hang") >= max as usize).then_some(())
    })
    .await;
    assert_eq!(
        t.hits("/hang"),
        max as usize,
        "a refused stream reached the app"
    );

    // Going on regardless is an attack: the connection is closed.
    let mut more = Vec::new();
    for i in max + EXCESS..max + EXCESS + 2000 {
        h2raw::get(&mut more, stream(i), AUTHORITY, "/hang");
    }
    attacker.send_within(&more, TIMEOUT).await;
    let goaway = attacker.wait_for_goaway_and_close().await;
    assert_eq!(goaway.code, code::ENHANCE_YOUR_CALM, "{goaway:?}");
    println!(
        "more streams than advertised: {EXCESS} refused, then {} more refused and {goaway:?}",
        attacker.seen().reset_with(code::REFUSED_STREAM).len() - EXCESS as usize
    );
    assert_eq!(
        t.hits("/hang"),
        max as usize,
        "a refused stream reached the app"
    );

    rss.stop_and_check("more streams than advertised").await;
    unaffected("more streams than advertised", &bystander.stop().await);
}
