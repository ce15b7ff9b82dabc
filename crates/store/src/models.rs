//! The domain models that cross the [`Store`](crate::Store) boundary.

use time::OffsetDateTime;

/// A person's account.
#[derive(Clone, PartialEq, Eq)]
pub struct User {
    pub id: String,
    pub username: String,
    /// The Argon2id PHC string; never leaves the server.
    pub password_hash: String,
    pub is_admin: bool,
    pub created_at: OffsetDateTime,
}

impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("User")
            .field("id", &self.id)
            .field("username", &self.username)
            .field("password_hash", &"[redacted]")
            .field("is_admin", &self.is_admin)
            .field("created_at", &self.created_at)
            .finish()
    }
}

#[derive(Debug, Clone)]
pub struct NewUser {
    pub id: String,
    pub username: String,
    pub password_hash: String,
    pub is_admin: bool,
    pub created_at: OffsetDateTime,
}

/// A login session: a family of refresh tokens, each replacing the one before.
#[derive(Debug, Clone)]
pub struct NewSession {
    pub id: String,
    pub user_id: String,
    pub created_at: OffsetDateTime,
    /// The family's absolute end; rotation never extends past it.
    pub expires_at: OffsetDateTime,
    /// SHA-256 of the first refresh token.
    pub token_hash: Vec<u8>,
}

/// The token that replaces a rotated one.
#[derive(Debug, Clone)]
pub struct NextRefreshToken {
    pub token_hash: Vec<u8>,
}

/// A session, named by its id and its user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRef {
    pub session_id: String,
    pub user_id: String,
}

/// What presenting a refresh token led to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RotateOutcome {
    /// The token was live; `next` is now the family's only live token.
    Rotated(SessionRef),
    /// The token had already been used: the whole family is now revoked.
    Reused(SessionRef),
    /// The family was revoked or expired earlier.
    Dead(SessionRef),
    /// No such token.
    Unknown,
}

/// A registered device.
#[derive(Debug, Clone, PartialEq)]
pub struct Device {
    pub id: String,
    pub owner_id: String,
    pub name: String,
    pub kind: Option<String>,
    pub metadata: serde_json::Value,
    pub key_id: String,
    pub created_at: OffsetDateTime,
    pub revoked_at: Option<OffsetDateTime>,
    /// When the device was last connected (as of its last disconnect or heartbeat stored).
    pub last_seen_at: Option<OffsetDateTime>,
    /// From its heartbeats.
    pub firmware_version: Option<String>,
    pub free_memory: Option<u64>,
    /// The channel its events are posted to.
    pub channel_id: Option<String>,
}

/// What a device said about itself, and when.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceSeen {
    pub at: OffsetDateTime,
    /// `None` keeps the stored value.
    pub firmware_version: Option<String>,
    pub free_memory: Option<u64>,
}

#[derive(Debug, Clone)]
pub struct NewDevice {
    pub id: String,
    pub owner_id: String,
    pub name: String,
    pub kind: Option<String>,
    pub metadata: serde_json::Value,
    /// The API key's public id, unique.
    pub key_id: String,
    /// The keyed hash of the key's secret part.
    pub key_hash: Vec<u8>,
    pub created_at: OffsetDateTime,
}

/// What authenticating a device needs.
#[derive(Clone, PartialEq, Eq)]
pub struct DeviceCredential {
    pub device_id: String,
    pub owner_id: String,
    pub key_hash: Vec<u8>,
    pub revoked: bool,
}

impl std::fmt::Debug for DeviceCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceCredential")
            .field("device_id", &self.device_id)
            .field("owner_id", &self.owner_id)
            .field("key_hash", &"[redacted]")
            .field("revoked", &self.revoked)
            .finish()
    }
}

/// A security-relevant event, as recorded.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEvent {
    /// Increasing with insertion order.
    pub id: i64,
    pub at: OffsetDateTime,
    pub kind: String,
    pub actor: Option<String>,
    pub subject: Option<String>,
    pub ip: Option<String>,
    pub detail: serde_json::Value,
}

#[derive(Debug, Clone)]
pub struct NewAuditEvent {
    pub at: OffsetDateTime,
    /// A stable dotted name such as `auth.login.ok`.
    pub kind: String,
    /// Who did it (a user id, or `cli` for the command line).
    pub actor: Option<String>,
    /// What it was done to (a user or device id, or a username for failed logins).
    pub subject: Option<String>,
    pub ip: Option<String>,
    pub detail: serde_json::Value,
}

/// A conversation place; `last_seq` is the seq of its newest message (0 when empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Channel {
    pub id: String,
    pub name: String,
    pub private: bool,
    pub created_by: String,
    pub created_at: OffsetDateTime,
    pub last_seq: i64,
    /// An archived channel keeps its history but takes no new messages.
    pub archived_at: Option<OffsetDateTime>,
    /// A direct message: its members are fixed when it is opened.
    pub direct: bool,
}

/// A member as the channel's member list shows them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub user_id: String,
    pub username: String,
    pub role: Role,
    pub last_read_seq: i64,
}

/// What a member may do in a channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    Member,
    Admin,
    Owner,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Member => "member",
            Self::Admin => "admin",
            Self::Owner => "owner",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "member" => Some(Self::Member),
            "admin" => Some(Self::Admin),
            "owner" => Some(Self::Owner),
            _ => None,
        }
    }
}

/// A user's place in a channel: the channel, their role and how far they have read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Membership {
    pub channel: Channel,
    pub role: Role,
    pub last_read_seq: i64,
    /// Messages from others after the read position that are not deleted.
    pub unread: i64,
    /// Of those, the ones that mention this member.
    pub mentions: i64,
}

/// A full-text search over the messages a user may read.
#[derive(Debug, Clone)]
pub struct SearchQuery {
    pub user_id: String,
    /// Words that must all appear (any order); FTS syntax in it is treated as plain words.
    pub text: String,
    pub channel_id: Option<String>,
    pub sender_id: Option<String>,
    pub limit: u32,
}

#[derive(Debug, Clone)]
pub struct NewChannel {
    pub id: String,
    pub name: String,
    pub private: bool,
    /// Becomes the channel's first member.
    pub created_by: String,
    pub created_at: OffsetDateTime,
}

/// A stored message. `seq` is gap-free and increasing within its channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub id: String,
    pub channel_id: String,
    pub seq: i64,
    pub sender_id: String,
    pub client_msg_id: String,
    pub body: String,
    pub created_at: OffsetDateTime,
    /// For a reply: the id of the message that started its thread.
    pub thread_root_id: Option<String>,
    /// For a thread's root: how many replies it has, and when the last came.
    pub reply_count: i64,
    pub last_reply_at: Option<OffsetDateTime>,
    /// When the body was last edited.
    pub edited_at: Option<OffsetDateTime>,
    /// A deleted message is a tombstone: `body` is empty and `reactions` too.
    pub deleted_at: Option<OffsetDateTime>,
    /// Reactions by emoji, in the order each emoji was first used.
    pub reactions: Vec<Reaction>,
    /// Files attached to the message, in upload order.
    pub attachments: Vec<StoredFile>,
    /// Why the automatic moderation flagged it; empty when it did not.
    pub flag_reasons: Vec<String>,
}

/// One emoji on a message and who reacted with it, oldest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reaction {
    pub emoji: String,
    pub user_ids: Vec<String>,
}

/// A body a message had before an edit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revision {
    /// 1 for the original body, counting up.
    pub rev: i64,
    pub body: String,
    /// When the edit replaced it.
    pub replaced_at: OffsetDateTime,
}

/// An edit of a message's body by its author.
#[derive(Debug, Clone)]
pub struct MessageEdit {
    pub channel_id: String,
    pub message_id: String,
    /// Only the author may edit: a message by someone else is not found.
    pub author_id: String,
    pub body: String,
    /// Members newly mentioned by the new body (user ids).
    pub mentions: Vec<String>,
    pub at: OffsetDateTime,
}

/// Who did something to a channel, and when.
#[derive(Debug, Clone)]
pub struct Actor {
    pub user_id: String,
    pub at: OffsetDateTime,
}

/// What a channel's timeline holds at a seq: a message or a later change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChannelEvent {
    /// A message, in its current state (edited or deleted since, perhaps).
    Message(Message),
    /// An edit; `message` is the current state.
    MessageEdited { seq: i64, message: Message },
    MessageDeleted {
        seq: i64,
        message_id: String,
        actor_id: String,
        at: OffsetDateTime,
    },
    Reaction {
        seq: i64,
        message_id: String,
        user_id: String,
        emoji: String,
        added: bool,
        at: OffsetDateTime,
    },
    Member {
        seq: i64,
        user_id: String,
        actor_id: String,
        joined: bool,
        at: OffsetDateTime,
    },
    /// Renamed, archived or unarchived; `channel` is the current state.
    ChannelUpdated {
        seq: i64,
        channel: Channel,
        actor_id: String,
    },
}

impl ChannelEvent {
    pub fn seq(&self) -> i64 {
        match self {
            Self::Message(m) => m.seq,
            Self::MessageEdited { seq, .. }
            | Self::MessageDeleted { seq, .. }
            | Self::Reaction { seq, .. }
            | Self::Member { seq, .. }
            | Self::ChannelUpdated { seq, .. } => *seq,
        }
    }
}

/// What setting or clearing a reaction did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReactionOutcome {
    /// Stored as the channel event with this seq.
    Changed(i64),
    /// The reaction was already there (or already gone): nothing written.
    Unchanged,
    /// No such message in the channel, or it is deleted.
    NoMessage,
}

#[derive(Debug, Clone)]
pub struct NewMessage {
    pub id: String,
    pub channel_id: String,
    pub sender_id: String,
    /// The sender's idempotency key: the same (sender, client_msg_id) in a channel is stored once.
    pub client_msg_id: String,
    pub body: String,
    pub created_at: OffsetDateTime,
    /// Makes the message a reply in this root's thread: the root must be in the same channel
    /// and not itself a reply (threads are one level deep).
    pub thread_root_id: Option<String>,
    /// Members the body mentions (user ids), for their mention counts.
    pub mentions: Vec<String>,
    /// Ids of files the sender uploaded to this channel and not yet attached elsewhere;
    /// anything else makes the append `Invalid`.
    pub attachments: Vec<String>,
    /// Why the automatic moderation flagged it; empty when it did not.
    pub flag_reasons: Vec<String>,
}

/// A message the automatic moderation keeps out of its channel until an administrator
/// releases it (then it is appended like any other) or rejects it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldMessage {
    pub id: String,
    pub channel_id: String,
    pub sender_id: String,
    pub client_msg_id: String,
    pub body: String,
    pub thread_root_id: Option<String>,
    pub mentions: Vec<String>,
    pub attachments: Vec<String>,
    pub reasons: Vec<String>,
    pub created_at: OffsetDateTime,
}

impl HeldMessage {
    /// The message to append when it is released (with its reasons as its flag).
    pub fn into_new_message(self) -> NewMessage {
        NewMessage {
            id: self.id,
            channel_id: self.channel_id,
            sender_id: self.sender_id,
            client_msg_id: self.client_msg_id,
            body: self.body,
            created_at: self.created_at,
            thread_root_id: self.thread_root_id,
            mentions: self.mentions,
            attachments: self.attachments,
            flag_reasons: self.reasons,
        }
    }
}

/// What appending a message did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    pub message: Message,
    /// True when the message had been stored before (a retry); nothing new was written.
    pub duplicate: bool,
}

/// A file uploaded to a channel. The row names one upload; the bytes live outside the store,
/// content-addressed by `sha256`, so identical uploads share them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredFile {
    pub id: String,
    pub channel_id: String,
    pub uploader_id: String,
    /// SHA-256 of the bytes, lowercase hex (64 characters).
    pub sha256: String,
    pub size: u64,
    pub name: String,
    pub content_type: String,
    pub created_at: OffsetDateTime,
}

#[derive(Debug, Clone)]
pub struct NewFile {
    pub id: String,
    /// Must exist.
    pub channel_id: String,
    pub uploader_id: String,
    pub sha256: String,
    pub size: u64,
    pub name: String,
    pub content_type: String,
    pub created_at: OffsetDateTime,
}

/// One measurement of one metric of a device.
#[derive(Debug, Clone, PartialEq)]
pub struct TelemetryPoint {
    pub device_id: String,
    pub metric: String,
    pub ts: OffsetDateTime,
    pub value: f64,
}

/// Points of one metric of a device in `[from, to)`, summarised per `bucket_secs`.
#[derive(Debug, Clone)]
pub struct TelemetryQuery {
    pub device_id: String,
    pub metric: String,
    pub from: OffsetDateTime,
    pub to: OffsetDateTime,
    /// At least 1.
    pub bucket_secs: i64,
}

/// The points of one bucket: it starts at `start` and lasts the query's `bucket_secs`.
#[derive(Debug, Clone, PartialEq)]
pub struct TelemetryBucket {
    pub start: OffsetDateTime,
    pub count: u64,
    pub min: f64,
    pub max: f64,
    pub avg: f64,
    /// The value of the bucket's newest point.
    pub last: f64,
}

/// A command for a device, as sent.
#[derive(Debug, Clone)]
pub struct NewCommand {
    pub id: String,
    pub device_id: String,
    /// Who sent it; the result goes to them.
    pub sender_id: String,
    pub name: String,
    pub args: serde_json::Value,
    pub created_at: OffsetDateTime,
    /// Not delivered after this.
    pub expires_at: OffsetDateTime,
}

/// A stored command and what became of it.
#[derive(Debug, Clone, PartialEq)]
pub struct Command {
    /// Increases with every command stored (for any device): the delivery order.
    pub seq: i64,
    pub id: String,
    pub device_id: String,
    pub sender_id: String,
    pub name: String,
    pub args: serde_json::Value,
    pub created_at: OffsetDateTime,
    pub expires_at: OffsetDateTime,
    /// First handed to the device.
    pub delivered_at: Option<OffsetDateTime>,
    /// Answered by the device, with `ok` and `output`.
    pub completed_at: Option<OffsetDateTime>,
    pub ok: Option<bool>,
    pub output: Option<serde_json::Value>,
}
