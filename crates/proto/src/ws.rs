//! WebSocket protocol `unhidra.v1`: JSON text frames with a `type` field.
//!
//! See `docs/protocol.md` for the handshake, examples and the rules (acks after commit,
//! gap-free `seq`, replay with `since`, limits and close codes).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::channels::{ChannelSummary, ChatMessage, PresenceStatus};
use crate::devices::DeviceState;
use crate::ErrorCode;

/// The subprotocol every client offers, and the only one the server answers with.
pub const PROTOCOL: &str = "unhidra.v1";
/// Prefix of the subprotocol that carries a user's access token: `bearer.<jwt>`.
pub const BEARER_PREFIX: &str = "bearer.";
/// Prefix of the subprotocol that carries a device's API key: `device.<key>`.
pub const DEVICE_PREFIX: &str = "device.";

/// Close codes the server uses (RFC 6455 §7.4).
pub mod close {
    /// The server is shutting down; reconnect later and resync with `since`.
    pub const GOING_AWAY: u16 = 1001;
    /// A frame broke RFC 6455 (masking, reserved bits or opcodes, control frames,
    /// fragmentation, a malformed close); the reason names the violation.
    pub const PROTOCOL_ERROR: u16 = 1002;
    /// A text frame was not valid UTF-8 (RFC 6455 requires failing the connection); an
    /// `error` frame with code `unsupported_frame` is sent first.
    pub const INVALID_PAYLOAD: u16 = 1007;
    /// Credentials were revoked, or the client kept breaking the rate limit.
    pub const POLICY_VIOLATION: u16 = 1008;
    /// A frame or message exceeded the size limit.
    pub const TOO_BIG: u16 = 1009;
    /// The client could not keep up with its deliveries; reconnect and resync with `since`.
    pub const TRY_AGAIN_LATER: u16 = 1013;
}

/// What a client sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientFrame {
    /// Receive a channel's messages; with `since`, first every stored message after that seq.
    Subscribe {
        channel: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        since: Option<i64>,
    },
    Unsubscribe {
        channel: String,
    },
    /// Post to a channel. `client_msg_id` makes retries safe: the same id is stored once.
    Publish {
        channel: String,
        body: String,
        client_msg_id: String,
        /// Posts the message as a reply in the thread of this message id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        thread_root: Option<String>,
        /// Ids of files the sender uploaded to this channel (up to 10); with attachments the
        /// body may be empty.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        attachments: Vec<String>,
    },
    Ping {},
    /// The user is typing in a subscribed channel; others there get a `typing` frame. Send
    /// it every few seconds while typing (more than one per 2 s per channel is ignored).
    Typing {
        channel: String,
    },
    /// The user is idle (`away`) or back (`online`) on this connection.
    Presence {
        status: PresenceStatus,
    },
    /// A user commands one of their devices (or, for administrators, any device); the
    /// answer is `command_accepted` (with `ref`), later `command_result` from the device.
    Command {
        device: String,
        name: String,
        #[serde(default)]
        args: serde_json::Value,
        /// Seconds the command may wait for an offline device (default 3600).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ttl_secs: Option<u32>,
        #[serde(rename = "ref", default, skip_serializing_if = "Option::is_none")]
        reference: Option<String>,
    },
    /// A device's answer to `command` `id`.
    CommandResult {
        id: String,
        ok: bool,
        #[serde(default)]
        output: serde_json::Value,
    },
    /// A device's measurements: metric name → finite number.
    Telemetry {
        metrics: BTreeMap<String, f64>,
        #[serde(
            default,
            with = "time::serde::rfc3339::option",
            skip_serializing_if = "Option::is_none"
        )]
        ts: Option<OffsetDateTime>,
    },
    /// A device's liveness signal, with optional state.
    Heartbeat {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        firmware_version: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        free_memory: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        uptime_secs: Option<u64>,
    },
}

/// Who is on the other end of a connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Principal {
    User { id: String },
    Device { id: String },
}

/// What the server sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame {
    /// First frame on every connection.
    Welcome {
        connection_id: String,
        principal: Principal,
        /// Largest accepted message, in bytes.
        max_message_bytes: usize,
        /// Most publishes the server takes from this connection before it has answered
        /// them: it reads further frames only while fewer are unanswered. Their answers
        /// (`ack`, `held` or `error`, each naming its `client_msg_id`) may come in any order.
        #[serde(default = "default_publish_window")]
        publish_window: u32,
    },
    /// The subscription is live; every message after `seq` will follow, in order.
    Subscribed {
        channel: String,
        seq: i64,
    },
    Unsubscribed {
        channel: String,
    },
    /// The publish with this `client_msg_id` is durably stored as `id`/`seq`.
    Ack {
        client_msg_id: String,
        id: String,
        seq: i64,
        #[serde(with = "time::serde::rfc3339")]
        ts: OffsetDateTime,
    },
    /// The publish with this `client_msg_id` is stored as `id` but held for review: it joins
    /// the channel (as a `message` to everyone) only if an administrator releases it.
    Held {
        client_msg_id: String,
        id: String,
    },
    /// A message in its current state (a replay shows edits and deletions made since).
    Message(ChatMessage),
    /// `message` (current state) was edited; `seq` is the edit's place in the channel.
    MessageEdited {
        channel: String,
        seq: i64,
        message: ChatMessage,
    },
    /// Message `id` is now a tombstone (deleted by `by`).
    MessageDeleted {
        channel: String,
        seq: i64,
        id: String,
        by: String,
        #[serde(with = "time::serde::rfc3339")]
        ts: OffsetDateTime,
    },
    /// `user` reacted to message `id` with `emoji`.
    ReactionAdded {
        channel: String,
        seq: i64,
        id: String,
        user: String,
        emoji: String,
        #[serde(with = "time::serde::rfc3339")]
        ts: OffsetDateTime,
    },
    ReactionRemoved {
        channel: String,
        seq: i64,
        id: String,
        user: String,
        emoji: String,
        #[serde(with = "time::serde::rfc3339")]
        ts: OffsetDateTime,
    },
    /// `user` joined (or was added by `by`).
    MemberJoined {
        channel: String,
        seq: i64,
        user: String,
        by: String,
        #[serde(with = "time::serde::rfc3339")]
        ts: OffsetDateTime,
    },
    /// `user` left (or was removed by `by`).
    MemberLeft {
        channel: String,
        seq: i64,
        user: String,
        by: String,
        #[serde(with = "time::serde::rfc3339")]
        ts: OffsetDateTime,
    },
    /// The channel was renamed, archived or unarchived: its current name and state.
    ChannelUpdated {
        channel: String,
        seq: i64,
        name: String,
        archived: bool,
        by: String,
    },
    /// Not replayed (no `seq`): `user` is typing in `channel` (show it for ~5 s).
    Typing {
        channel: String,
        user: String,
    },
    /// Not replayed: `user` has read `channel` up to `seq`.
    Receipt {
        channel: String,
        user: String,
        seq: i64,
    },
    /// Not replayed: `user`'s presence changed (sent to everyone sharing a channel with them).
    Presence {
        user: String,
        status: PresenceStatus,
    },
    /// Not replayed: the connection's user became a member of a channel (subscribe to it).
    ChannelAdded {
        channel: ChannelSummary,
    },
    /// Not replayed: the connection's user is no longer a member of `channel`.
    ChannelRemoved {
        channel: String,
    },
    /// To a device: run this command and answer with `command_result`. Delivered again
    /// after a reconnect until answered or expired.
    Command {
        id: String,
        name: String,
        args: serde_json::Value,
    },
    /// The command the user sent (`ref`) is stored as `id` and on its way to `device`.
    CommandAccepted {
        id: String,
        device: String,
        #[serde(rename = "ref", default, skip_serializing_if = "Option::is_none")]
        reference: Option<String>,
    },
    /// Not replayed: the device answered a command this user sent.
    CommandResult {
        id: String,
        device: String,
        ok: bool,
        output: serde_json::Value,
    },
    /// Not replayed: one of the user's devices connected, disconnected or sent a heartbeat.
    DeviceState {
        device: String,
        state: DeviceState,
    },
    /// A frame was refused; `ref` names it (its `client_msg_id` or `channel`) when it can.
    Error {
        code: ErrorCode,
        message: String,
        #[serde(rename = "ref", default, skip_serializing_if = "Option::is_none")]
        reference: Option<String>,
    },
    Pong {},
}

/// The `publish_window` of a `welcome` from a server that did not send one: one publish at a
/// time, answered before the next is read.
fn default_publish_window() -> u32 {
    1
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn client_frames_parse_from_their_documented_form() {
        let f: ClientFrame =
            serde_json::from_value(json!({"type": "subscribe", "channel": "c1", "since": 4}))
                .unwrap();
        assert_eq!(
            f,
            ClientFrame::Subscribe {
                channel: "c1".into(),
                since: Some(4)
            }
        );
        let f: ClientFrame = serde_json::from_value(
            json!({"type": "publish", "channel": "c1", "body": "hi", "client_msg_id": "m1"}),
        )
        .unwrap();
        assert!(matches!(f, ClientFrame::Publish { .. }));
        let f: ClientFrame = serde_json::from_value(json!({"type": "ping"})).unwrap();
        assert_eq!(f, ClientFrame::Ping {});
        let f: ClientFrame = serde_json::from_value(
            json!({"type": "telemetry", "metrics": {"temp": 21.5}, "ts": "2026-11-28T10:00:00Z"}),
        )
        .unwrap();
        assert!(matches!(f, ClientFrame::Telemetry { ts: Some(_), .. }));
    }

    #[test]
    fn unknown_types_and_fields_are_refused() {
        assert!(serde_json::from_value::<ClientFrame>(json!({"type": "nope"})).is_err());
        assert!(serde_json::from_value::<ClientFrame>(
            json!({"type": "unsubscribe", "channel": "c", "extra": 1})
        )
        .is_err());
        assert!(serde_json::from_value::<ClientFrame>(json!({"channel": "c"})).is_err());
    }

    #[test]
    fn server_frames_serialize_with_type_and_ref() {
        let e = ServerFrame::Error {
            code: ErrorCode::RateLimited,
            message: "slow down".into(),
            reference: Some("m1".into()),
        };
        assert_eq!(
            serde_json::to_value(&e).unwrap(),
            json!({"type": "error", "code": "rate_limited", "message": "slow down", "ref": "m1"})
        );
        assert_eq!(
            serde_json::to_value(ServerFrame::Pong {}).unwrap(),
            json!({"type": "pong"})
        );
    }
}
