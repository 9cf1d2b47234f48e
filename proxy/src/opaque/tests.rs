use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream, duplex};
use tokio::task::JoinHandle;

use super::*;
use crate::listen::Direction;
use crate::metrics::Metrics;

const IDLE: Duration = Duration::from_secs(10);

/// A tunnel between two in-memory connections; returns the client's and the upstream's far
/// ends, the tunnel's task and its metrics.
fn start(idle: Option<Duration>) -> (DuplexStream, DuplexStream, JoinHandle<()>, Arc<TcpMetrics>) {
    let (client, proxy_client) = duplex(4096);
    let (proxy_server, server) = duplex(4096);
    let metrics = Metrics::new().tcp(Direction::Outbound, "redis");
    let task = tokio::spawn({
        let metrics = metrics.clone();
        async move {
            let drain = Drain::new();
            tunnel(
                proxy_client,
                proxy_server,
                idle,
                &drain,
                &metrics,
                TlsPeer::Plaintext,
            )
            .await
        }
    });
    (client, server, task, metrics)
}

/// Waits (bounded) for the tunnel to end.
async fn closes(task: JoinHandle<()>) {
    tokio::time::timeout(2 * IDLE, task)
        .await
        .expect("the tunnel is still open after twice the idle timeout")
        .unwrap();
}

/// Asserts that both ends of a finished tunnel are closed: the client reads end of file, and
/// the upstream can no longer write.
async fn both_sides_closed(client: &mut DuplexStream, server: &mut DuplexStream) {
    assert_eq!(client.read(&mut [0; 16]).await.unwrap(), 0);
    assert!(server.write_all(b"late").await.is_err());
}

#[tokio::test(start_paused = true)]
async fn a_half_closed_tunnel_to_an_upstream_that_never_closes_is_closed_when_idle() {
    let (mut client, mut server, task, metrics) = start(Some(IDLE));
    let started = Instant::now();
    client.write_all(b"QUIT\r\n").await.unwrap();
    client.shutdown().await.unwrap();

    // The upstream gets the bytes and the client's FIN, and then neither answers nor closes.
    let mut got = Vec::new();
    server.read_to_end(&mut got).await.unwrap();
    assert_eq!(got, b"QUIT\r\n");
    closes(task).await;

    let silent = started.elapsed();
    assert!(
        silent >= IDLE && silent <= IDLE + IDLE / IDLE_CHECKS,
        "closed after {silent:?} of silence"
    );
    both_sides_closed(&mut client, &mut server).await;
    assert_eq!(metrics.plaintext.closed_idle.get(), 1);
    assert_eq!(
        metrics.plaintext.closed_ok.get() + metrics.plaintext.closed_error.get(),
        0
    );
    assert_eq!(metrics.open.get(), 0);
}

#[tokio::test(start_paused = true)]
async fn traffic_either_way_keeps_a_tunnel_open() {
    let (mut client, mut server, task, metrics) = start(Some(IDLE));
    // Ten timeouts long: the upstream pings every half timeout, the client answers every
    // other one, so each direction alone is silent longer than the timeout at times.
    for i in 0..20 {
        tokio::time::sleep(IDLE / 2).await;
        if i % 4 == 0 {
            client.write_all(b"pong").await.unwrap();
            assert_eq!(server.read_exact(&mut [0; 4]).await.unwrap(), 4);
        } else {
            server.write_all(b"ping").await.unwrap();
            assert_eq!(client.read_exact(&mut [0; 4]).await.unwrap(), 4);
        }
        assert!(!task.is_finished(), "closed after {i} pings");
    }
    let last_byte = Instant::now();
    closes(task).await;
    let silent = last_byte.elapsed();
    assert!(
        silent >= IDLE && silent <= IDLE + IDLE / IDLE_CHECKS,
        "closed after {silent:?} of silence"
    );
    both_sides_closed(&mut client, &mut server).await;
    assert_eq!(metrics.plaintext.closed_idle.get(), 1);
}

#[tokio::test(start_paused = true)]
async fn without_an_idle_timeout_a_silent_tunnel_is_held() {
    let (mut client, mut server, mut task, metrics) = start(None);
    client.shutdown().await.unwrap();
    let mut got = Vec::new();
    server.read_to_end(&mut got).await.unwrap();

    let held = tokio::time::timeout(Duration::from_secs(1000 * 3600), &mut task).await;
    assert!(held.is_err(), "a tunnel without a timeout was closed");
    assert_eq!(metrics.open.get(), 1);
    // It still carries the upstream's bytes, and ends when the upstream closes.
    server.write_all(b"late").await.unwrap();
    server.shutdown().await.unwrap();
    let mut answer = Vec::new();
    client.read_to_end(&mut answer).await.unwrap();
    assert_eq!(answer, b"late");
    task.await.unwrap();
    assert_eq!(metrics.plaintext.closed_ok.get(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_tunnel_both_sides_close_is_counted_ok() {
    let (mut client, mut server, task, metrics) = start(Some(IDLE));
    client.write_all(b"hello").await.unwrap();
    client.shutdown().await.unwrap();
    let mut got = Vec::new();
    server.read_to_end(&mut got).await.unwrap();
    server.write_all(b"bye").await.unwrap();
    server.shutdown().await.unwrap();
    task.await.unwrap();
    let mut answer = Vec::new();
    client.read_to_end(&mut answer).await.unwrap();
    assert_eq!((&got[..], &answer[..]), (&b"hello"[..], &b"bye"[..]));
    assert_eq!(
        (
            metrics.plaintext.closed_ok.get(),
            metrics.plaintext.closed_idle.get()
        ),
        (1, 0)
    );
}
