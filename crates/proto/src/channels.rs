//! Channel bodies under `/api/v1/channels`.

use serde::{Deserialize, Serialize};

/// `POST /api/v1/channels`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateChannelRequest {
    /// 1–64 characters of `a-z 0-9 . _ -`, unique on the server (lowercased by the server).
    #[cfg_attr(feature = "openapi", schema(pattern = r"^[A-Za-z0-9._-]{1,64}$"))]
    pub name: String,
    /// A private channel is readable only by its members; anyone may join a public one.
    #[serde(default)]
    pub private: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreatedChannel {
    pub id: String,
}

/// `POST /api/v1/channels/{id}/members`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AddMemberRequest {
    pub user_id: String,
}

/// A channel as one of its members sees it in their list.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ChannelSummary {
    pub id: String,
    pub name: String,
    pub private: bool,
    /// `owner`, `admin` or `member`.
    pub role: String,
    /// The seq of the newest message (0: none yet).
    pub last_seq: i64,
    /// How far the caller has read.
    pub last_read_seq: i64,
    /// Messages from others after the caller's read position (deleted ones not counted).
    pub unread: i64,
    /// Of those, the ones that mention the caller (`@username`).
    pub mentions: i64,
    pub archived: bool,
    /// A direct conversation: its members are fixed and name it.
    pub direct: bool,
}

/// `GET /api/v1/channels`: the caller's channels, by name.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ChannelList {
    pub channels: Vec<ChannelSummary>,
}

/// `PATCH /api/v1/channels/{id}`: owners and admins rename or (un)archive.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct UpdateChannelRequest {
    /// A new name, by the rules of a new channel's.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(pattern = r"^[A-Za-z0-9._-]{1,64}$"))]
    pub name: Option<String>,
    #[serde(default)]
    pub archived: Option<bool>,
}

/// `POST /api/v1/channels/{id}/read`: the caller has read up to `seq`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct MarkReadRequest {
    #[serde(deserialize_with = "crate::number::integer")]
    pub seq: i64,
}

/// The read position now stored (it only moves forward).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ReadPosition {
    pub last_read_seq: i64,
}

/// A stored message, as history and search return it (the same fields as the WebSocket's
/// `message` frame).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ChatMessage {
    pub id: String,
    pub channel: String,
    pub seq: i64,
    pub sender: String,
    pub body: String,
    pub client_msg_id: String,
    #[serde(with = "time::serde::rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub ts: time::OffsetDateTime,
    /// For a reply: the id of its thread's root message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thread_root: Option<String>,
    /// For a root: how many replies its thread has (0 otherwise).
    pub reply_count: i64,
    /// For a root with replies: when the last reply came.
    #[serde(default, with = "time::serde::rfc3339::option")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub last_reply_at: Option<time::OffsetDateTime>,
    /// When the body was last edited (absent: never).
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub edited_at: Option<time::OffsetDateTime>,
    /// A deleted message is a tombstone: its body is empty.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deleted: bool,
    /// Reactions by emoji, in the order each emoji was first used (absent: none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reactions: Vec<ReactionInfo>,
    /// Attached files (absent: none); download them from `/api/v1/files/{id}`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attachments: Vec<crate::files::FileInfo>,
    /// Why the automatic moderation flagged it (absent: it did not).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub flagged: Vec<String>,
}

/// A message the automatic moderation holds until an administrator releases or rejects it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HeldMessageInfo {
    pub id: String,
    pub channel: String,
    pub sender: String,
    pub body: String,
    pub client_msg_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thread_root: Option<String>,
    /// Why it was held.
    pub reasons: Vec<String>,
    #[serde(with = "time::serde::rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub ts: time::OffsetDateTime,
}

/// `GET /api/v1/admin/moderation`: what waits for an administrator.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ModerationQueue {
    /// Held messages, oldest first.
    pub held: Vec<HeldMessageInfo>,
    /// Flagged messages (not deleted), newest first.
    pub flagged: Vec<ChatMessage>,
}

/// One emoji on a message and who reacted with it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ReactionInfo {
    pub emoji: String,
    /// User ids, oldest reaction first.
    pub users: Vec<String>,
}

/// `PATCH /api/v1/channels/{id}/messages/{message_id}`: the author replaces the body.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct EditMessageRequest {
    /// 1 to 32768 bytes, not only white space.
    #[cfg_attr(
        feature = "openapi",
        schema(min_length = 1, max_length = 32768, pattern = r"\S")
    )]
    pub body: String,
}

/// A body a message had before an edit.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RevisionInfo {
    /// 1 for the original body.
    pub rev: i64,
    pub body: String,
    /// When an edit replaced it.
    #[serde(with = "time::serde::rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub replaced_at: time::OffsetDateTime,
}

/// `GET /api/v1/channels/{id}/messages/{message_id}/revisions` (channel admins): the
/// message's earlier bodies, oldest first.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RevisionList {
    pub revisions: Vec<RevisionInfo>,
}

/// Whether a user is connected, and whether they are at their keyboard.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum PresenceStatus {
    /// At least one connection, and not every one of them idle.
    Online,
    /// Connected, but every connection reports its user idle.
    Away,
    /// No connection.
    #[default]
    Offline,
}

/// `GET /api/v1/channels/{id}/threads/{root_id}`: a thread's root and its replies.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Thread {
    pub root: ChatMessage,
    /// Oldest first.
    pub replies: Vec<ChatMessage>,
    /// Whether more replies follow (page with `after`).
    pub has_more: bool,
}

/// A page of history, oldest first.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MessagePage {
    pub messages: Vec<ChatMessage>,
    /// Whether older (with `before`) or newer (with `after`) messages remain.
    pub has_more: bool,
}

/// `GET /api/v1/search`: best match first.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SearchResults {
    pub messages: Vec<ChatMessage>,
}

/// `POST /api/v1/dms`: open the direct conversation with these users (1–7 others besides
/// the caller). The same people always get the same conversation.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct OpenDirectRequest {
    /// The other people: 1 to 7 user ids.
    #[cfg_attr(feature = "openapi", schema(min_items = 1, max_items = 7))]
    pub user_ids: Vec<String>,
}

/// The direct conversation, and whether this call created it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DirectConversation {
    pub id: String,
    pub created: bool,
}

/// A channel member.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MemberInfo {
    pub user_id: String,
    pub username: String,
    /// `owner`, `admin` or `member`.
    pub role: String,
    pub presence: PresenceStatus,
    /// How far this member has read (their read receipt).
    pub last_read_seq: i64,
}

/// `GET /api/v1/channels/{id}/members`, by username.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MemberList {
    pub members: Vec<MemberInfo>,
}

/// `GET /api/v1/channels/{id}/devices`: the devices linked to the channel, which post their
/// events there, as its members see them.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ChannelDeviceList {
    pub devices: Vec<ChannelDevice>,
}

/// A device as the members of its channel see it: a name to show for its messages.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ChannelDevice {
    pub device_id: String,
    pub name: String,
    pub kind: Option<String>,
}

/// Another user, as people see each other.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UserInfo {
    pub user_id: String,
    pub username: String,
}
