//! Config reload: the proxy watches its file. A valid change reaches new requests within a
//! couple of seconds while requests and streams already under way finish on the old config; an
//! invalid change is logged with file:line:column and ignored.

use std::net::SocketAddr;
use std::time::Duration;

use herd_tests::server::{self, reply};
use herd_tests::{Proxy, TIMEOUT, client, curl, eventually, ws};
use tokio_tungstenite::tungstenite::Message;

/// An app that says `name` on `/`, answers `/slow` after 2 s, and streams 10 events 200 ms
/// apart on `/events`.
async fn app(name: &'static str) -> server::Server {
    server::http1(move |req| async move {
        match req.uri().path() {
            "/slow" => {
                tokio::time::sleep(Duration::from_secs(2)).await;
                reply::text_owned(format!("{name} slow"))
            }
            "/events" => reply::sse(Duration::from_millis(200), 10),
            _ => reply::text(name),
        }
    })
    .await
}

/// Outbound config: `web.local` -> `web`, `ws.local` -> `socket`.
fn mesh(web: SocketAddr, socket: SocketAddr) -> String {
    format!(
        "
        proxy:
          outbound:
            listen: $OUTBOUND
          admin:
            listen: $ADMIN
        services:
          - name: web
            authorities: [web.local]
            endpoints: [{web}]
          - name: ws
            authorities: [ws.local]
            endpoints: [{socket}]
        "
    )
}

/// Polls `GET web.local/` until it answers `expected`.
async fn until_web_says(proxy: &Proxy, expected: &str) {
    eventually(
        &format!("web.local to answer {expected:?}"),
        TIMEOUT,
        || async {
            let out = curl()
                .header("Host: web.local")
                .get(proxy.outbound_url("/"))
                .await;
            (out.exit == Some(0) && out.text() == expected).then_some(())
        },
    )
    .await;
}

async fn get_web(proxy: &Proxy, path: &str) -> herd_tests::curl::Output {
    curl()
        .header("Host: web.local")
        .get(proxy.outbound_url(path))
        .await
}

#[tokio::test(flavor = "multi_thread")]
async fn atomic_rename_moves_new_requests_while_old_ones_finish() {
    let (a, b) = (app("A").await, app("B").await);
    let socket = server::websocket_echo().await;
    let proxy = Proxy::start(&mesh(a.addr(), socket.addr())).await;
    assert_eq!(get_web(&proxy, "/").await.text(), "A");
    let version = proxy.version().await;

    // Under way on the old config: a slow request, an event stream, a WebSocket.
    let slow = tokio::spawn(
        curl()
            .header("Host: web.local")
            .get(proxy.outbound_url("/slow")),
    );
    let events = tokio::spawn(client::events(
        proxy.outbound(),
        "web.local",
        "/events",
        TIMEOUT,
    ));
    let mut socket_client = ws::connect(proxy.outbound(), "ws.local", "/").await;
    assert_eq!(ws::next(&mut socket_client).await, Message::text("welcome"));
    a.wait_for_requests(3).await;

    proxy.write_config_atomically(&mesh(b.addr(), socket.addr()));
    until_web_says(&proxy, "B").await;

    assert!(
        proxy.version().await > version,
        "/config version did not increase"
    );
    let slow = slow.await.unwrap();
    assert_eq!(
        (slow.status(), slow.text().as_str()),
        (200, "A slow"),
        "{}",
        slow.stderr
    );
    let events = events.await.unwrap();
    assert_eq!(events.status, 200);
    assert_eq!(
        events.events.len(),
        10,
        "the event stream was cut: {:?}",
        events.events
    );
    ws::round_trip(&mut socket_client, Message::text("still here")).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn in_place_write_moves_new_requests_while_old_ones_finish() {
    let (a, b) = (app("A").await, app("B").await);
    let socket = server::websocket_echo().await;
    let proxy = Proxy::start(&mesh(a.addr(), socket.addr())).await;
    let version = proxy.version().await;

    let slow = tokio::spawn(
        curl()
            .header("Host: web.local")
            .get(proxy.outbound_url("/slow")),
    );
    a.wait_for_requests(1).await;

    proxy.write_config_in_place(&mesh(b.addr(), socket.addr()));
    until_web_says(&proxy, "B").await;

    assert!(
        proxy.version().await > version,
        "/config version did not increase"
    );
    let slow = slow.await.unwrap();
    assert_eq!(
        (slow.status(), slow.text().as_str()),
        (200, "A slow"),
        "{}",
        slow.stderr
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_invalid_change_is_logged_and_ignored() {
    let (a, b) = (app("A").await, app("B").await);
    let socket = server::websocket_echo().await;
    let proxy = Proxy::start(&mesh(a.addr(), socket.addr())).await;
    let version = proxy.version().await;

    // Line 9 of the file: an endpoint that is not an address.
    proxy.write_config_atomically(
        &mesh(b.addr(), socket.addr()).replace(&b.addr().to_string(), "not-an-address"),
    );

    let path = proxy.config_path().display().to_string();
    let line = proxy.wait_for_log(&format!("{path}:")).await;
    let location = line.split(&format!("{path}:")).nth(1).unwrap_or_default();
    let mut parts = location.splitn(3, ':');
    let (row, column) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    assert!(
        row.parse::<u32>().is_ok() && column.parse::<u32>().is_ok(),
        "no FILE:LINE:COLUMN in {line:?}"
    );
    assert_eq!(row, "9", "the error points at the wrong line: {line:?}");

    // The old config still serves, and its version is unchanged.
    assert_eq!(get_web(&proxy, "/").await.text(), "A");
    assert_eq!(proxy.version().await, version);
    let config = proxy.admin_get("/config").await.json();
    assert_eq!(
        config["config"]["services"][0]["endpoints"][0]["address"],
        a.addr().to_string(),
        "{config}"
    );

    // A valid file after the invalid one applies.
    proxy.reload(&mesh(b.addr(), socket.addr())).await;
    assert_eq!(get_web(&proxy, "/").await.text(), "B");
    let config = proxy.admin_get("/config").await.json();
    assert_eq!(
        config["config"]["services"][0]["endpoints"][0]["address"],
        b.addr().to_string(),
        "{config}"
    );
}
