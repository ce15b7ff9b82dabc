//! Client frames on the WebSocket gateway of a running server, over a real connection.
//!
//! Each input is one frame from a logged-in user, or from a device when the input starts with
//! `!` (text when it is UTF-8, else binary; `$CHANNEL` and `$DEVICE` become the fuzzing user's
//! channel and device), followed by a `ping` frame. The server must answer the ping, or close with a close frame whose code is not
//! 1011 (an internal error), and every frame it sends must be one of the protocol's.

#![no_main]

use std::sync::Mutex;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use libfuzzer_sys::fuzz_target;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use unhidra_fuzz::server::{connect, server, Server};
use unhidra_proto::ws::ServerFrame;

type Ws = WebSocketStream<TcpStream>;

/// The user's connection and the device's, kept open between inputs.
static CONNECTIONS: Mutex<[Option<Ws>; 2]> = Mutex::new([None, None]);

async fn open(server: &Server, device: bool) -> Ws {
    let mut request = format!("ws://{}/ws", server.api)
        .into_client_request()
        .expect("a request");
    let protocols = if device {
        format!("unhidra.v1, device.{}", server.device_key)
    } else {
        format!("unhidra.v1, bearer.{}", server.access_token)
    };
    request.headers_mut().insert(
        "sec-websocket-protocol",
        protocols.parse().expect("a header value"),
    );
    let tcp = connect(server.api).await.expect("a connection");
    let (mut ws, _) = tokio_tungstenite::client_async(request, tcp)
        .await
        .expect("the handshake");
    let welcome = next_frame(&mut ws).await;
    assert!(
        matches!(welcome, Some(ServerFrame::Welcome { .. })),
        "{welcome:?}"
    );
    ws
}

/// The next protocol frame; `None` when the server closed (with a close frame).
async fn next_frame(ws: &mut Ws) -> Option<ServerFrame> {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(20), ws.next())
            .await
            .unwrap_or_else(|_| panic!("the server sent nothing for 20 s after a ping"));
        match message {
            Some(Ok(Message::Text(text))) => {
                return Some(serde_json::from_str(&text).unwrap_or_else(|err| {
                    panic!("a frame that is not the protocol's ({err}): {text}")
                }))
            }
            Some(Ok(Message::Close(close))) => {
                let code = close.as_ref().map(|c| c.code);
                assert_ne!(code, Some(CloseCode::Error), "closed with 1011: {close:?}");
                return None;
            }
            Some(Ok(Message::Binary(bytes))) => panic!("a binary frame: {bytes:?}"),
            Some(Ok(_)) => continue,
            Some(Err(err)) => panic!("the connection failed without a close frame: {err}"),
            None => panic!("the connection ended without a close frame"),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let server = server();
    let (device, data) = match data.strip_prefix(b"!") {
        Some(rest) => (true, rest),
        None => (false, data),
    };
    let message = match std::str::from_utf8(data) {
        Ok(text) => Message::text(unhidra_fuzz::fill(text, server)),
        Err(_) => Message::binary(data.to_vec()),
    };
    let mut connections = CONNECTIONS.lock().unwrap_or_else(|e| e.into_inner());
    let slot = &mut connections[usize::from(device)];
    server.rt.block_on(async {
        let mut ws = match slot.take() {
            Some(ws) => ws,
            None => open(server, device).await,
        };
        if ws.send(message).await.is_err()
            || ws.send(Message::text(r#"{"type":"ping"}"#)).await.is_err()
        {
            // Closed while sending: what it said must still be well-formed.
            while next_frame(&mut ws).await.is_some() {}
            return;
        }
        loop {
            match next_frame(&mut ws).await {
                Some(ServerFrame::Pong {}) => {
                    *slot = Some(ws);
                    return;
                }
                Some(_) => continue,
                None => return,
            }
        }
    });
});
