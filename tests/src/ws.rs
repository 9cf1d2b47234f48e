//! A WebSocket client (tokio-tungstenite, no TLS), as Mastodon's streaming clients use.

use std::net::SocketAddr;

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::TIMEOUT;

pub type WebSocket = WebSocketStream<TcpStream>;

/// Opens `ws://authority{path}` over a TCP connection to `addr` (a proxy listener), so the
/// upgrade request's `Host` is `authority`. Panics unless the server answers `101`.
pub async fn connect(addr: SocketAddr, authority: &str, path: &str) -> WebSocket {
    let stream = crate::tcp::Conn::connect(addr).await.into_inner();
    let request = format!("ws://{authority}{path}")
        .into_client_request()
        .expect("ws request");
    let (ws, response) = crate::within(
        "a WebSocket handshake",
        TIMEOUT,
        tokio_tungstenite::client_async(request, stream),
    )
    .await
    .unwrap_or_else(|e| panic!("WebSocket handshake through {addr}: {e}"));
    assert_eq!(response.status(), 101);
    ws
}

/// The next text or binary message; panics on close, error or timeout.
pub async fn next(ws: &mut WebSocket) -> Message {
    loop {
        let message = crate::within("a WebSocket message", TIMEOUT, ws.next())
            .await
            .expect("WebSocket closed")
            .expect("WebSocket error");
        if message.is_text() || message.is_binary() {
            return message;
        }
    }
}

/// Sends `message` and waits for the echo server to send it back.
pub async fn round_trip(ws: &mut WebSocket, message: Message) {
    ws.send(message.clone())
        .await
        .expect("send WebSocket message");
    assert_eq!(next(ws).await, message);
}

/// Waits for the connection to end (close frame, EOF or reset) and returns how it ended.
pub async fn closed(ws: &mut WebSocket) -> String {
    loop {
        match crate::within("the WebSocket to close", TIMEOUT, ws.next()).await {
            None => return "EOF".to_owned(),
            Some(Err(e)) => return e.to_string(),
            Some(Ok(Message::Close(frame))) => return format!("close frame {frame:?}"),
            Some(Ok(_)) => continue,
        }
    }
}
