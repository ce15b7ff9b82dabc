//! RFC 6455 at the gateway's edge: frames that break the protocol, written as raw bytes on
//! an authenticated connection's TCP stream below the client library's own checks, must end
//! with a Close frame carrying the right status code (§7.4.1) before the server closes the
//! TCP connection, and a client's own close is answered (§5.5.1).

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use tokio::io::AsyncWriteExt;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::MaybeTlsStream;

use crate::helpers::*;
use crate::ws::{closed_with, next, send, user_ws, Ws};

const WAIT: Duration = Duration::from_secs(5);

/// A frame as a client must send it: masked, with `first` as its first byte (FIN, RSV1-3,
/// opcode) and `payload` of any length.
fn masked(first: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x37, 0xfa, 0x21, 0x3d];
    let mut frame = vec![first];
    match payload.len() {
        len @ 0..=125 => frame.push(0x80 | len as u8),
        len @ 126..=0xffff => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(len as u16).to_be_bytes());
        }
        len => {
            frame.push(0x80 | 127);
            frame.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().zip(mask.iter().cycle()).map(|(b, m)| b ^ m));
    frame
}

/// An unmasked frame, which a server must refuse from a client.
fn unmasked(first: u8, payload: &[u8]) -> Vec<u8> {
    let mut frame = vec![first, payload.len() as u8];
    frame.extend_from_slice(payload);
    frame
}

/// Writes `bytes` on the connection's TCP stream, under the client library.
async fn write_raw(ws: &mut Ws, bytes: &[u8]) {
    let MaybeTlsStream::Plain(tcp) = ws.get_mut() else {
        panic!("expected a plain TCP stream");
    };
    tcp.write_all(bytes).await.unwrap();
    tcp.flush().await.unwrap();
}

/// What ended the connection: the close code of the server's Close frame, or what came
/// instead of one (an EOF, a read error, an unexpected frame, silence).
async fn close_code(ws: &mut Ws) -> Result<u16, String> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let frame = tokio::time::timeout_at(deadline, ws.next())
            .await
            .map_err(|_| "no close frame within 5 s".to_owned())?;
        match frame {
            Some(Ok(Message::Close(Some(frame)))) => return Ok(u16::from(frame.code)),
            Some(Ok(Message::Close(None))) => return Ok(1005),
            // Pings, and frames the server sent before it read the bad bytes (presence).
            Some(Ok(_)) => continue,
            Some(Err(err)) => return Err(format!("read failed before a close frame: {err}")),
            None => return Err("the stream ended without a close frame".to_owned()),
        }
    }
}

/// The close code the server answers `bytes` with, on a new connection.
async fn close_code_after(app: &TestApp, user: &User, bytes: &[u8]) -> Result<u16, String> {
    let mut ws = user_ws(app, user).await;
    write_raw(&mut ws, bytes).await;
    close_code(&mut ws).await
}

#[tokio::test]
async fn protocol_violations_are_closed_with_1002() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let mut fragmented_then_new_message = masked(0x01, b"first half");
    fragmented_then_new_message.extend(masked(0x81, b"a new message"));
    let cases: [(&str, Vec<u8>); 11] = [
        ("an unmasked text frame", unmasked(0x81, b"hello")),
        ("RSV1 set", masked(0x80 | 0x40 | 0x1, b"hello")),
        ("RSV2 set", masked(0x80 | 0x20 | 0x1, b"hello")),
        ("RSV3 set on a ping", masked(0x80 | 0x10 | 0x9, b"")),
        ("reserved data opcode 3", masked(0x83, b"")),
        ("reserved control opcode 11", masked(0x8b, b"")),
        ("a 200-byte ping", masked(0x89, &[b'p'; 200])),
        ("a fragmented ping", masked(0x09, b"ping")),
        ("an orphan continuation frame", masked(0x80, b"tail")),
        (
            "a new message inside a fragmented one",
            fragmented_then_new_message,
        ),
        ("a close frame with a 1-byte payload", masked(0x88, &[0x03])),
    ];
    let mut wrong = Vec::new();
    for (name, bytes) in cases {
        match close_code_after(&app, &alice, &bytes).await {
            Ok(1002) => {}
            other => wrong.push(format!("{name}: {other:?}")),
        }
    }
    assert!(
        wrong.is_empty(),
        "not closed with 1002:\n{}",
        wrong.join("\n")
    );
}

#[tokio::test]
async fn a_close_with_a_code_no_one_may_send_is_answered_with_1002() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let mut wrong = Vec::new();
    // 999 and 1004 are not allowed on the wire; 1005 and 1006 are reserved for reports.
    for code in [999u16, 1004, 1005, 1006, 1016, 2999] {
        let bytes = masked(0x88, &code.to_be_bytes());
        match close_code_after(&app, &alice, &bytes).await {
            Ok(1002) => {}
            other => wrong.push(format!("{code}: {other:?}")),
        }
    }
    assert!(
        wrong.is_empty(),
        "not closed with 1002:\n{}",
        wrong.join("\n")
    );
}

#[tokio::test]
async fn a_clients_close_is_answered_with_its_code() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    for code in [1000u16, 1001, 3000, 4999] {
        let mut ws = user_ws(&app, &alice).await;
        ws.send(Message::Close(Some(CloseFrame {
            code: CloseCode::from(code),
            reason: "bye".into(),
        })))
        .await
        .unwrap();
        assert_eq!(closed_with(&mut ws, WAIT).await, code);
    }
}

#[tokio::test]
async fn invalid_utf8_is_closed_with_1007_in_fragments_and_close_reasons() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    // 0xed 0xa0 0x80 encodes a UTF-16 surrogate: invalid, spread over two fragments.
    let mut fragmented = masked(0x01, b"ok \xed");
    fragmented.extend(masked(0x80, b"\xa0\x80 no"));
    let mut close_reason = vec![0x03, 0xe8];
    close_reason.extend_from_slice(b"bye \xc3\x28");
    let cases = [
        ("a fragmented text message", fragmented),
        ("a close frame's reason", masked(0x88, &close_reason)),
    ];
    let mut wrong = Vec::new();
    for (name, bytes) in cases {
        let mut ws = user_ws(&app, &alice).await;
        write_raw(&mut ws, &bytes).await;
        // The gateway says why in an error frame first (see ws.rs), then closes.
        assert_eq!(next(&mut ws).await["code"], "unsupported_frame", "{name}");
        match close_code(&mut ws).await {
            Ok(1007) => {}
            other => wrong.push(format!("{name}: {other:?}")),
        }
    }
    assert!(
        wrong.is_empty(),
        "not closed with 1007:\n{}",
        wrong.join("\n")
    );
}

#[tokio::test]
async fn a_fragmented_message_over_the_limit_is_closed_with_1009() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let mut ws = user_ws(&app, &alice).await;
    // Three fragments of 30 KiB: each under the 64 KiB limit, the message over it.
    let piece = vec![b'x'; 30 * 1024];
    let mut bytes = masked(0x01, &piece);
    bytes.extend(masked(0x00, &piece));
    bytes.extend(masked(0x80, &piece));
    write_raw(&mut ws, &bytes).await;
    assert_eq!(closed_with(&mut ws, WAIT).await, 1009);
}

#[tokio::test]
async fn pings_in_the_middle_of_a_fragmented_message_are_answered() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let mut ws = user_ws(&app, &alice).await;
    let mut bytes = masked(0x01, b"{\"type\":");
    bytes.extend(masked(0x89, b"between"));
    bytes.extend(masked(0x80, b"\"ping\"}"));
    write_raw(&mut ws, &bytes).await;
    // The control frame's pong, then the reassembled message's answer (in between, maybe,
    // the user's own presence).
    let mut pong = None;
    loop {
        let frame = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("no frame within 5 s")
            .expect("stream ended")
            .expect("read failed");
        match frame {
            Message::Pong(payload) => pong = Some(payload),
            Message::Text(text) if text.contains("\"pong\"") => break,
            Message::Text(_) | Message::Ping(_) => continue,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(
        pong.as_deref(),
        Some(&b"between"[..]),
        "no pong before the answer"
    );
    send(&mut ws, serde_json::json!({"type": "ping"})).await;
    assert_eq!(next(&mut ws).await["type"], "pong");
}

#[tokio::test]
async fn a_client_still_writing_after_its_violation_is_not_reset_before_the_close() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let mut ws = user_ws(&app, &alice).await;
    // A client sends a bad frame, then keeps writing for a moment before it reads (as
    // Autobahn's case 3.3 does). Had the server dropped the socket at once, the kernel
    // would answer the first write with a reset and fail the second, and a client that
    // tears down on a failed write (Twisted does) never reads the Close frame. The server
    // holds the connection briefly after its Close instead.
    write_raw(&mut ws, &masked(0x80 | 0x40 | 0x1, b"rsv1")).await;
    for _ in 0..2 {
        tokio::time::sleep(Duration::from_millis(30)).await;
        let MaybeTlsStream::Plain(tcp) = ws.get_mut() else {
            panic!("expected a plain TCP stream");
        };
        let written = tcp.write_all(&masked(0x89, b"still here")).await;
        assert!(written.is_ok(), "reset under the Close frame: {written:?}");
    }
    assert_eq!(close_code(&mut ws).await, Ok(1002));
}
