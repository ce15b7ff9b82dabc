//! The WebSocket handshake of a running server: subprotocols, credentials, origin, and any
//! other header, over a real connection.
//!
//! Each input is the header lines of a `GET /ws` upgrade request after the fixed ones (`$TOKEN`
//! becomes a valid access token, `$KEY` a valid device key, `$DEVICE` the device's id). The
//! server must answer within its header deadline, never with a 5xx, and a 101 must select
//! exactly `unhidra.v1`, never echoing a credential.

#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use unhidra_fuzz::server::{connect, server};

fuzz_target!(|data: &[u8]| {
    let server = server();
    let headers = match std::str::from_utf8(data) {
        Ok(text) => unhidra_fuzz::fill(text, server).into_bytes(),
        Err(_) => data.to_vec(),
    };
    let mut request = format!(
        "GET /ws HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n",
        server.api
    )
    .into_bytes();
    request.extend_from_slice(&headers);
    request.extend_from_slice(b"\r\n\r\n");
    let head = server.rt.block_on(async {
        let mut stream = connect(server.api).await.expect("a connection");
        let _ = stream.write_all(&request).await;
        let mut head = Vec::new();
        let mut buf = [0u8; 4096];
        // The header deadline is 10 s.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
                Err(_) => panic!("no answer to the handshake within 20 s"),
                Ok(Ok(0)) | Ok(Err(_)) => break,
                Ok(Ok(n)) => head.extend_from_slice(buf.get(..n).unwrap_or_default()),
            }
        }
        head
    });
    if head.is_empty() {
        // Closed without an answer (hyper does so for some malformed requests).
        return;
    }
    let text = String::from_utf8_lossy(&head);
    let status: u16 = text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP/1.1 answer: {text}"));
    assert!(status < 500, "a server error: {text}");
    if status == 101 {
        let protocols: Vec<&str> = text
            .lines()
            .filter_map(|line| line.split_once(':'))
            .filter(|(name, _)| name.trim().eq_ignore_ascii_case("sec-websocket-protocol"))
            .map(|(_, value)| value.trim())
            .collect();
        assert_eq!(protocols, ["unhidra.v1"], "{text}");
    }
});
