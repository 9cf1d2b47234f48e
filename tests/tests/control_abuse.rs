//! herd-control's discovery port against broken and hostile clients, and a proxy that starts
//! before its control plane. Every client here is herd's own gRPC API (herd-api) or raw bytes.

use std::time::{Duration, Instant};

use herd_api::discovery::discovery_client::DiscoveryClient;
use herd_api::discovery::{
    Certificate, EndpointsRequest, Hello, Node, RoutingRequest, RoutingSubscribe, Verdict, Watch,
    endpoints_request, routing_request,
};
use herd_tests::control::{Control, proxy_yaml};
use herd_tests::{Proxy, Puma, TIMEOUT, eventually};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

fn named(name: &str) -> String {
    format!(
        "run lambda {{ |env| [200, {{ 'content-type' => 'text/plain', 'x-endpoint' => '{name}' }}, ['{name}']] }}\n"
    )
}

fn web(addr: std::net::SocketAddr, extra: usize) -> String {
    // `extra` services make the routing document larger, so a stuck stream has something to hold.
    let mut yaml = format!(
        "services:\n  - name: web\n    authorities: [web.local]\n    endpoints: [{addr}]\n"
    );
    for i in 0..extra {
        yaml.push_str(&format!(
            "  - name: s{i}\n    authorities: [s{i}.local]\n    routes:\n      - match: {{ pathPrefix: /api/v{i}/ }}\n        timeout: 15s\n"
        ));
    }
    yaml
}

async fn client(control: &Control) -> DiscoveryClient<tonic::transport::Channel> {
    DiscoveryClient::connect(format!("http://{}", control.discovery()))
        .await
        .expect("connect to the discovery port")
}

fn subscribe(id: &str) -> RoutingRequest {
    RoutingRequest {
        request: Some(routing_request::Request::Subscribe(RoutingSubscribe {
            node: Some(Node {
                id: id.into(),
                ..Node::default()
            }),
            have_version: String::new(),
        })),
    }
}

async fn proxies_connected(control: &Control) -> i64 {
    let metrics = control.metrics().await;
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("herd_control_proxies "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(-1)
}

#[tokio::test]
async fn garbage_bytes_are_cut_and_everyone_else_is_served() {
    let app = Puma::start(&named("a")).await;
    let control = Control::start(&[("web.yaml", &web(app.addr(), 0))]).await;
    let mut junk = tokio::net::TcpStream::connect(control.discovery())
        .await
        .unwrap();
    let noise = herd_tests::noise(64 * 1024, 7);
    let _ = junk.write_all(&noise).await;
    let mut buf = vec![0u8; 4096];
    herd_tests::within("the junk connection to be closed", TIMEOUT, async {
        loop {
            match junk.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await;
    let proxy = Proxy::start(&proxy_yaml("web-1", &[&control], "")).await;
    assert_eq!(
        herd_tests::load::fire(proxy.outbound(), "web.local", 3, 1)
            .await
            .ok(),
        3
    );
}

#[tokio::test]
async fn malformed_streams_get_a_grpc_error() {
    let app = Puma::start(&named("a")).await;
    let control = Control::start(&[("web.yaml", &web(app.addr(), 0))]).await;
    let mut client = client(&control).await;

    // No id.
    let status = client
        .routing(tokio_stream::iter([subscribe("")]))
        .await
        .expect_err("an empty id is refused");
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status}");

    // A verdict before subscribing.
    let verdict = RoutingRequest {
        request: Some(routing_request::Request::Verdict(Verdict::default())),
    };
    let status = client
        .routing(tokio_stream::iter([verdict]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status}");

    // Silent: cut once the hello timeout passes, not held forever.
    let (_tx, rx) = mpsc::channel::<RoutingRequest>(1);
    let started = Instant::now();
    let status = client.routing(ReceiverStream::new(rx)).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::DeadlineExceeded, "{status}");
    assert!(started.elapsed() < Duration::from_secs(15));

    // A second hello on an endpoints stream ends it.
    let hello = || EndpointsRequest {
        request: Some(endpoints_request::Request::Hello(Hello {
            node: Some(Node {
                id: "x".into(),
                ..Node::default()
            }),
        })),
    };
    let mut stream = client
        .endpoints(tokio_stream::iter([hello(), hello()]).chain(tokio_stream::pending()))
        .await
        .unwrap()
        .into_inner();
    let status = herd_tests::within("the stream to end", TIMEOUT, async {
        loop {
            match stream.message().await {
                Ok(Some(_)) => continue,
                Ok(None) => panic!("ended without an error"),
                Err(status) => break status,
            }
        }
    })
    .await;
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status}");

    // A certificate report is kept per proxy, so a huge one ends the stream; a proper one is
    // kept and shown.
    let report = |identity: String| RoutingRequest {
        request: Some(routing_request::Request::Certificate(Certificate {
            identity,
            serial: "0A1B".into(),
            not_after: 1,
        })),
    };
    for (id, identity, ends) in [
        ("huge", format!("spiffe://x/{}", "a".repeat(4096)), true),
        ("fine", "spiffe://cluster.local/ns/a/sa/b".to_owned(), false),
    ] {
        let mut stream = client
            .routing(
                tokio_stream::iter([subscribe(id), report(identity)])
                    .chain(tokio_stream::pending()),
            )
            .await
            .unwrap()
            .into_inner();
        if ends {
            let status = herd_tests::within("the stream to end", TIMEOUT, async {
                loop {
                    match stream.message().await {
                        Ok(Some(_)) => continue,
                        Ok(None) => panic!("ended without an error"),
                        Err(status) => break status,
                    }
                }
            })
            .await;
            assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status}");
            assert!(
                status.message().contains("certificate.identity"),
                "{status}"
            );
        } else {
            let shown = eventually("the certificate in herdctl identity", TIMEOUT, || async {
                let out = control.herdctl(&["identity", id]).await;
                (out.code == Some(0)).then_some(out.stdout)
            })
            .await;
            assert!(
                shown.contains("spiffe://cluster.local/ns/a/sa/b")
                    && shown.contains("0A1B")
                    && shown.contains("1970-01-01T00:00:01Z (expired"),
                "{shown}"
            );
        }
    }
}

use tokio_stream::StreamExt as _;

#[tokio::test]
async fn a_stream_that_is_never_read_delays_no_one_and_holds_bounded_memory() {
    let a = Puma::start(&named("a")).await;
    let b = Puma::start(&named("b")).await;
    let control = Control::start(&[("web.yaml", &web(a.addr(), 200))]).await;
    // Twenty subscribers that never read a byte of what they are sent.
    let mut stuck = Vec::new();
    for i in 0..20 {
        let mut c = client(&control).await;
        let (tx, rx) = mpsc::channel(1);
        tx.send(subscribe(&format!("stuck-{i}"))).await.unwrap();
        let response = c.routing(ReceiverStream::new(rx)).await.unwrap();
        stuck.push((c, tx, response));
    }
    let proxy = Proxy::start(&proxy_yaml("web-1", &[&control], "")).await;
    let before = control.rss_bytes().unwrap();
    // 60 changes of a document of about 40 KiB, alternating the endpoint.
    let started = Instant::now();
    for i in 0..60 {
        let (addr, name) = if i % 2 == 0 {
            (b.addr(), "b")
        } else {
            (a.addr(), "a")
        };
        control.write("web.yaml", &web(addr, 200 + i));
        eventually(
            &format!("change {i} to reach the proxy"),
            TIMEOUT,
            || async {
                let tally = herd_tests::load::fire(proxy.outbound(), "web.local", 1, 1).await;
                (tally.by_endpoint().get(name) == Some(&1)).then_some(())
            },
        )
        .await;
    }
    let after = control.rss_bytes().unwrap();
    eprintln!(
        "60 changes in {:?} with 20 stuck streams: RSS {} -> {} KiB",
        started.elapsed(),
        before / 1024,
        after / 1024
    );
    // A queue per stuck stream would hold 60 x 40 KiB x 20 = 48 MiB.
    assert!(after < before + 24 * 1024 * 1024, "RSS {before} -> {after}");
    assert_eq!(proxies_connected(&control).await, 21);
    drop(stuck);
    eventually("the stuck streams to be forgotten", TIMEOUT, || async {
        (proxies_connected(&control).await == 1).then_some(())
    })
    .await;
}

#[tokio::test]
async fn many_streams_from_one_peer_are_bounded_per_connection() {
    let app = Puma::start(&named("a")).await;
    let control = Control::start(&[("web.yaml", &web(app.addr(), 0))]).await;
    let c = client(&control).await;
    // 300 routing streams on one connection: the server takes 64 at a time.
    let mut held = Vec::new();
    let mut pending = tokio::task::JoinSet::new();
    for i in 0..300 {
        let mut c = c.clone();
        let (tx, rx) = mpsc::channel(1);
        tx.send(subscribe(&format!("flood-{i}"))).await.unwrap();
        held.push(tx);
        pending.spawn(async move {
            let response = c.routing(ReceiverStream::new(rx)).await;
            // Hold the open ones.
            tokio::time::sleep(Duration::from_secs(30)).await;
            drop(response);
        });
    }
    let open = eventually("streams to open", TIMEOUT, || async {
        let n = proxies_connected(&control).await;
        (n >= 64).then_some(n)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(proxies_connected(&control).await, 64, "{open} open");
    // Another client is served meanwhile.
    let proxy = Proxy::start(&proxy_yaml("web-1", &[&control], "")).await;
    assert_eq!(
        herd_tests::load::fire(proxy.outbound(), "web.local", 3, 1)
            .await
            .ok(),
        3
    );
    pending.abort_all();
}

#[tokio::test]
async fn watches_per_stream_are_capped_and_made_up_services_are_forgotten() {
    let app = Puma::start(&named("a")).await;
    let control = Control::start(&[("web.yaml", &web(app.addr(), 0))]).await;
    let mut c = client(&control).await;
    let hello = EndpointsRequest {
        request: Some(endpoints_request::Request::Hello(Hello {
            node: Some(Node {
                id: "greedy".into(),
                ..Node::default()
            }),
        })),
    };
    let watches = (0..10_001).map(|i| EndpointsRequest {
        request: Some(endpoints_request::Request::Watch(Watch {
            service: format!("made-up-{i}"),
            have_version: String::new(),
        })),
    });
    let requests =
        tokio_stream::iter(std::iter::once(hello).chain(watches)).chain(tokio_stream::pending());
    let mut stream = c.endpoints(requests).await.unwrap().into_inner();
    let status = herd_tests::within("the stream to be refused", Duration::from_secs(30), async {
        loop {
            match stream.message().await {
                Ok(Some(update)) => assert!(update.unknown, "{update:?}"),
                Ok(None) => panic!("ended without an error"),
                Err(status) => break status,
            }
        }
    })
    .await;
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status}");
    eventually("the watches to be released", TIMEOUT, || async {
        control
            .metrics()
            .await
            .contains("herd_control_endpoint_watches 0")
            .then_some(())
    })
    .await;
}

#[tokio::test]
async fn ready_waits_for_the_first_state_from_the_control_plane() {
    let app = Puma::start(&named("a")).await;
    let mut control = Control::stopped(&[("web.yaml", &web(app.addr(), 0))]);
    let yaml = proxy_yaml("web-1", &[&control], "");
    let started = Instant::now();
    let (proxy, ()) = tokio::join!(Proxy::start(&yaml), async {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        control.restart().await;
    });
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "ready after {:?}, before the control plane started",
        started.elapsed()
    );
    assert_eq!(
        herd_tests::load::fire(proxy.outbound(), "web.local", 2, 1)
            .await
            .ok(),
        2
    );

    // Without waitForState, ready at once, and serving once the state comes.
    let mut later = Control::stopped(&[("web.yaml", &web(app.addr(), 0))]);
    let started = Instant::now();
    let eager = Proxy::start(&proxy_yaml("web-2", &[&later], ", waitForState: false")).await;
    assert!(started.elapsed() < Duration::from_millis(1500));
    let early = herd_tests::load::fire(eager.outbound(), "web.local", 1, 1).await;
    assert_eq!(
        early.statuses().keys().collect::<Vec<_>>(),
        [&404],
        "no services yet"
    );
    later.restart().await;
    eventually("the state to arrive", TIMEOUT, || async {
        (herd_tests::load::fire(eager.outbound(), "web.local", 1, 1)
            .await
            .ok()
            == 1)
            .then_some(())
    })
    .await;
}
