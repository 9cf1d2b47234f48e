//! Config reload: the proxy watches its file. A valid change reaches new requests within a
//! couple of seconds while requests and streams already under way finish on the old config; an
//! invalid change is logged with file:line:column and ignored.

use std::net::SocketAddr;
use std::time::Duration;

use herd_tests::server::{self, reply};
use herd_tests::{Proxy, TIMEOUT, client, curl, eventually, prometheus, ws};
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

/// The ERROR lines a rejected reload logged so far.
fn rejections(proxy: &Proxy) -> Vec<String> {
    proxy
        .stderr_text()
        .lines()
        .filter(|l| l.contains("; keeping configuration version"))
        .map(str::to_owned)
        .collect()
}

/// `herd_config_reloads_total{result}` from the admin port.
async fn reloads(proxy: &Proxy, result: &str) -> f64 {
    let metrics = proxy.admin_get("/metrics").await;
    prometheus::Exposition::parse(&metrics.text())
        .sum("herd_config_reloads_total", &[("result", result)])
        .unwrap_or(0.0)
}

/// Waits until the watcher has re-read the config and found the invalid content it already
/// reported (it says so at DEBUG), or until a second rejection was logged; returns the
/// rejections.
async fn until_reread_or_reported_again(proxy: &Proxy, rereads: usize) -> Vec<String> {
    eventually(
        "the watcher to re-read the same invalid file",
        TIMEOUT,
        || async {
            let seen = proxy
                .stderr_text()
                .matches("the same invalid content as before")
                .count();
            let rejections = rejections(proxy);
            (seen >= rereads || rejections.len() > 1).then_some(rejections)
        },
    )
    .await
}

/// As an operator runs it: `herd-proxy --config mesh.yaml 2>>proxy.log`, the log beside the
/// config (the kit keeps the proxy's stderr in the config's directory). A broken file written
/// once is reported once: not again when the proxy's own ERROR line lands in the directory,
/// nor when other files there change, nor when the same broken content is written again. A
/// valid file then applies, and the broken one written after it is a change of its own,
/// reported again.
#[tokio::test(flavor = "multi_thread")]
async fn an_invalid_file_is_reported_once_whatever_else_changes_beside_it() {
    let (a, b) = (app("A").await, app("B").await);
    let socket = server::websocket_echo().await;
    let proxy = Proxy::start_with_env(
        &mesh(a.addr(), socket.addr()),
        &[("HERD_LOG", "info,herd_proxy::reload=debug")],
    )
    .await;
    let version = proxy.version().await;
    let broken = mesh(b.addr(), socket.addr()).replace(&b.addr().to_string(), "not-an-address");

    proxy.write_config_atomically(&broken);
    let path = proxy.config_path().display().to_string();
    proxy.wait_for_log(&format!("{path}:")).await;

    // Churn beside the config: files of other programs come and go, the log grows...
    for i in 0..5 {
        let other = proxy.dir().join(format!("other-{i}.txt"));
        std::fs::write(&other, "not the config").unwrap();
        std::fs::rename(&other, proxy.dir().join("other.txt")).unwrap();
    }
    // ...and the same broken content is written over the config again (an event for its own
    // name): the watcher re-reads it and finds what it already reported.
    proxy.write_config_atomically(&broken);
    let reported = until_reread_or_reported_again(&proxy, 1).await;
    println!(
        "one broken file, written twice, with churn beside it: {} rejection(s) logged",
        reported.len()
    );
    assert_eq!(
        reported.len(),
        1,
        "one broken file was reported {} times:\n{}",
        reported.len(),
        reported.join("\n")
    );
    assert_eq!(reloads(&proxy, "rejected").await, 1.0);
    assert_eq!(proxy.version().await, version);
    assert_eq!(get_web(&proxy, "/").await.text(), "A");

    // A valid file written afterwards applies as before.
    proxy.reload(&mesh(b.addr(), socket.addr())).await;
    assert_eq!(get_web(&proxy, "/").await.text(), "B");
    assert_eq!(reloads(&proxy, "applied").await, 1.0);

    // The broken content again, after a valid one: a new change, reported once more.
    proxy.write_config_atomically(&broken);
    eventually("the second rejection", TIMEOUT, || async {
        (rejections(&proxy).len() >= 2).then_some(())
    })
    .await;
    assert_eq!(reloads(&proxy, "rejected").await, 2.0);
    assert_eq!(get_web(&proxy, "/").await.text(), "B");
}

/// A ConfigMap volume: `mesh.yaml -> ..data/mesh.yaml`, and an update renames a new `..data`
/// symlink over the old one, so nothing named `mesh.yaml` changes. The watcher follows the
/// file's symlink to `..data` and reloads on that swap; a broken ConfigMap is reported once.
#[tokio::test(flavor = "multi_thread")]
async fn a_configmap_update_swaps_data_and_is_seen() {
    let (a, b) = (app("A").await, app("B").await);
    let socket = server::websocket_echo().await;
    let proxy = Proxy::start_with_env(
        &mesh(a.addr(), socket.addr()),
        &[("HERD_LOG", "info,herd_proxy::reload=debug")],
    )
    .await;
    let version = proxy.version().await;

    // The volume appears (mesh.yaml becomes a symlink), with B's address.
    proxy.write_config_as_configmap(&mesh(b.addr(), socket.addr()));
    proxy.wait_for_version(version + 1).await;
    until_web_says(&proxy, "B").await;

    // An update: only `..data` is swapped.
    proxy.write_config_as_configmap(&mesh(a.addr(), socket.addr()));
    proxy.wait_for_version(version + 2).await;
    until_web_says(&proxy, "A").await;

    // A broken update is reported once, and the same broken content swapped in again is not.
    let broken = mesh(b.addr(), socket.addr()).replace(&b.addr().to_string(), "not-an-address");
    proxy.write_config_as_configmap(&broken);
    proxy.wait_for_log("; keeping configuration version").await;
    proxy.write_config_as_configmap(&broken);
    let reported = until_reread_or_reported_again(&proxy, 1).await;
    assert_eq!(
        reported.len(),
        1,
        "one broken ConfigMap was reported {} times:\n{}",
        reported.len(),
        reported.join("\n")
    );
    assert_eq!(reloads(&proxy, "rejected").await, 1.0);

    // And a valid one after it applies.
    proxy.write_config_as_configmap(&mesh(b.addr(), socket.addr()));
    proxy.wait_for_version(version + 3).await;
    until_web_says(&proxy, "B").await;
}
