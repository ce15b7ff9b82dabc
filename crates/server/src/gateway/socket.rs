//! The WebSocket under every session: the upgrade's settings, what each read means, and
//! closing.
//!
//! `GET /ws` and the conformance echo (`examples/ws_echo.rs`, run by Autobahn|Testsuite in
//! CI) both call [`configure`], [`inbound`], [`close`] and [`answer_close`], so what
//! Autobahn finds about the echo holds for the gateway.
//!
//! tungstenite checks the protocol (masking, reserved bits and opcodes, control frames,
//! fragmentation, UTF-8, sizes) and reports a violation as a read error, after which the
//! read side is finished. RFC 6455 §7.4.1 asks for a Close frame that says why: [`inbound`]
//! turns the error into [`Inbound::Violation`] with 1002 (protocol error), 1007 (text that is
//! not UTF-8) or 1009 (too big), and [`close`] sends it. A peer's own Close is answered by
//! tungstenite (echoing its code, or 1002 for a code no one may send); [`answer_close`]
//! makes sure that reply is written before the socket is dropped.

use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocketUpgrade};
use bytes::Bytes;
use futures::{Sink, SinkExt, Stream, StreamExt};
use tungstenite::error::{CapacityError, Error as WsError, ProtocolError};
use unhidra_proto::ws::{close as code, PROTOCOL};

/// Bytes read from the socket at a time, and the read buffer every connection holds while
/// idle (tungstenite allocates it up front): small, since most sockets are idle and most
/// frames are a few hundred bytes. A larger frame grows the buffer to its length while it
/// is read, at this many bytes per read.
const READ_BUFFER: usize = 512;
/// Frames are queued up to this many bytes before they are written.
const WRITE_BUFFER: usize = 64 * 1024;
/// A socket's unwritten bytes are capped here, so a slow reader costs bounded memory...
const MAX_WRITE_BUFFER: usize = 1024 * 1024;
/// ...but never below one frame of the largest message, which could otherwise never be
/// written: a frame header is at most 14 bytes (2, 8 of length, 4 of mask).
const MAX_FRAME_HEADER: usize = 14;

/// The settings of every WebSocket the server accepts: buffer sizes, the largest message
/// and frame (`max_message_bytes`; larger ones are closed with 1009), and the subprotocol
/// answered when the client offers it (`unhidra.v1`).
pub fn configure(upgrade: WebSocketUpgrade, max_message_bytes: usize) -> WebSocketUpgrade {
    upgrade
        .protocols([PROTOCOL])
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        .max_write_buffer_size(MAX_WRITE_BUFFER.max(max_message_bytes + MAX_FRAME_HEADER))
        .max_message_size(max_message_bytes)
        .max_frame_size(max_message_bytes)
}

/// What one read from the socket means.
#[derive(Debug)]
pub enum Inbound {
    /// A whole text message (fragments reassembled, UTF-8 checked).
    Text(Utf8Bytes),
    /// A whole binary message.
    Binary(Bytes),
    /// A ping or a pong. A ping is answered already: its pong goes out with the next read
    /// or write.
    Control,
    /// The peer sent its Close. The reply is queued: send it with [`answer_close`].
    PeerClosed,
    /// The connection is gone (end of stream, reset, I/O error): nothing more can be sent.
    Gone,
    /// The peer broke the protocol: fail the connection with [`close`] and this code.
    Violation(Violation),
}

/// A read that must end the connection with a Close frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Violation {
    pub code: u16,
    pub reason: &'static str,
}

impl Violation {
    const fn new(code: u16, reason: &'static str) -> Self {
        Self { code, reason }
    }
}

/// Reads the next item of the socket's stream (`None` at its end).
pub fn inbound(read: Option<Result<Message, axum::Error>>) -> Inbound {
    match read {
        None => Inbound::Gone,
        Some(Ok(Message::Text(text))) => Inbound::Text(text),
        Some(Ok(Message::Binary(data))) => Inbound::Binary(data),
        Some(Ok(Message::Ping(_) | Message::Pong(_))) => Inbound::Control,
        Some(Ok(Message::Close(_))) => Inbound::PeerClosed,
        Some(Err(err)) => {
            use std::error::Error as _;
            let cause = err.source().and_then(|s| s.downcast_ref::<WsError>());
            tracing::debug!(error = %err, "websocket read failed");
            match cause.and_then(violation) {
                Some(violation) => Inbound::Violation(violation),
                None => Inbound::Gone,
            }
        }
    }
}

/// The close a read error calls for, or `None` when the peer is gone and nothing can be
/// sent.
pub fn violation(err: &WsError) -> Option<Violation> {
    let protocol = |reason| Some(Violation::new(code::PROTOCOL_ERROR, reason));
    match err {
        WsError::Capacity(CapacityError::MessageTooLong { .. }) => {
            Some(Violation::new(code::TOO_BIG, "message too big"))
        }
        WsError::Utf8(_) => Some(Violation::new(code::INVALID_PAYLOAD, "invalid UTF-8")),
        WsError::Protocol(err) => match err {
            // The peer left, or we are closing already: no one to tell.
            ProtocolError::ResetWithoutClosingHandshake
            | ProtocolError::ReceivedAfterClosing
            | ProtocolError::SendAfterClosing => None,
            ProtocolError::UnmaskedFrameFromClient => protocol("unmasked frame"),
            ProtocolError::NonZeroReservedBits => protocol("reserved bits set"),
            ProtocolError::UnknownControlFrameType(_)
            | ProtocolError::UnknownDataFrameType(_)
            | ProtocolError::InvalidOpcode(_) => protocol("reserved opcode"),
            ProtocolError::FragmentedControlFrame => protocol("fragmented control frame"),
            ProtocolError::ControlFrameTooBig => protocol("control frame over 125 bytes"),
            ProtocolError::UnexpectedContinueFrame => protocol("continuation of nothing"),
            ProtocolError::ExpectedFragment(_) => protocol("expected a continuation frame"),
            ProtocolError::InvalidCloseSequence => protocol("invalid close frame"),
            _ => protocol("protocol error"),
        },
        _ => None,
    }
}

/// How long a connection stays open after our Close when the peer's reply cannot be read
/// (the read side ended with a violation). Dropping a socket with unread input resets the
/// connection, and a reset can make the peer discard our Close before reading it; this
/// gives the peer time to read it (well under the 1 s peers such as Autobahn wait for the
/// server to close).
const LINGER: Duration = Duration::from_millis(200);

/// Sends a Close frame with `code` and `reason`, then reads (and discards) until the
/// peer's Close, so the socket is not reset under our frame while the peer still sends.
/// Each step is bounded: the write by `write_timeout`, the wait by the same (at most 2 s).
/// When the stream has ended (after a violation, or the peer left) there is nothing to
/// read: the connection is held for [`LINGER`] instead.
pub async fn close<S, R, E>(
    sink: &mut S,
    stream: &mut R,
    code: u16,
    reason: &'static str,
    write_timeout: Duration,
) where
    S: Sink<Message> + Unpin,
    R: Stream<Item = Result<Message, E>> + Unpin,
{
    let frame = CloseFrame {
        code,
        reason: Utf8Bytes::from_static(reason),
    };
    let send = async {
        let _ = sink.send(Message::Close(Some(frame))).await;
        let _ = sink.close().await;
    };
    let _ = tokio::time::timeout(write_timeout, send).await;
    let drain = async {
        while let Some(Ok(frame)) = stream.next().await {
            if matches!(frame, Message::Close(_)) {
                return;
            }
        }
        tokio::time::sleep(LINGER).await;
    };
    let _ = tokio::time::timeout(write_timeout.min(Duration::from_secs(2)), drain).await;
}

/// Writes the reply to the peer's Close that tungstenite queued (within `write_timeout`);
/// the server then closes the TCP connection, as RFC 6455 §7.1.1 prefers.
///
/// A frame fed before the Close was read may still wait in the split sink's slot; passing
/// it on after the peer's Close fails (tungstenite sends no data once the peer has closed),
/// and a `close` that met that failure first returned before writing the reply, so the
/// peer saw the connection end without one. Flushing first takes that frame out of the way
/// (sent if it still can be, dropped if not: the peer has closed and reads no more).
pub async fn answer_close<S>(sink: &mut S, write_timeout: Duration)
where
    S: Sink<Message> + Unpin,
{
    let reply = async {
        let _ = sink.flush().await;
        let _ = sink.close().await;
    };
    let _ = tokio::time::timeout(write_timeout, reply).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use tungstenite::protocol::frame::coding::Data;

    #[test]
    fn read_errors_map_to_close_codes() {
        let cases = [
            (
                WsError::Protocol(ProtocolError::UnmaskedFrameFromClient),
                Some(1002),
            ),
            (
                WsError::Protocol(ProtocolError::ExpectedFragment(Data::Text)),
                Some(1002),
            ),
            (
                WsError::Protocol(ProtocolError::UnknownControlFrameType(11)),
                Some(1002),
            ),
            (
                WsError::Capacity(CapacityError::MessageTooLong {
                    size: 2,
                    max_size: 1,
                }),
                Some(1009),
            ),
            (
                WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake),
                None,
            ),
            (WsError::ConnectionClosed, None),
            (
                WsError::Io(std::io::ErrorKind::ConnectionReset.into()),
                None,
            ),
        ];
        for (err, want) in cases {
            assert_eq!(violation(&err).map(|v| v.code), want, "{err}");
        }
    }
}
