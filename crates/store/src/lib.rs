//! Unhidra's storage, in domain terms.
//!
//! [`Store`] is the one storage trait. The embedded SQLite backend (`unhidra-store-sqlite`)
//! is the default; a PostgreSQL backend implements the same trait for scale-out. Each backend
//! runs the shared [`testsuite`] (feature `testsuite`) so they behave alike.

mod error;
mod models;
#[cfg(feature = "testsuite")]
pub mod testsuite;

pub use error::{Outage, StoreError};
pub use models::*;

use async_trait::async_trait;
use time::OffsetDateTime;

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// [`Store::post_message`]'s refusal when the sender is not a member of the channel.
pub const NOT_A_MEMBER: &str = "not a member of this channel";
/// [`Store::post_message`]'s refusal when the channel is archived.
pub const ARCHIVED: &str = "the channel is archived";

/// Everything the server persists.
///
/// Implementations must make each method atomic: a method either takes full effect or none.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Checks that the store answers (for `/readyz`).
    async fn ping(&self) -> Result<()>;

    // ---- users ----
    /// Creates a user; [`StoreError::Conflict`] when the username is taken.
    async fn create_user(&self, user: NewUser) -> Result<User>;
    async fn user_by_id(&self, id: &str) -> Result<Option<User>>;
    async fn user_by_username(&self, username: &str) -> Result<Option<User>>;
    async fn count_users(&self) -> Result<u64>;

    // ---- sessions (refresh-token families) ----
    /// Starts a session: a new refresh-token family and its first token.
    async fn create_session(&self, session: NewSession) -> Result<()>;
    /// Exchanges a refresh token (looked up by its hash) for `next`, in the same family.
    ///
    /// Exactly one concurrent caller can rotate a given token. Presenting a token that was
    /// already rotated revokes its whole family (the token was stolen or replayed).
    async fn rotate_refresh_token(
        &self,
        presented_hash: &[u8],
        next: NextRefreshToken,
        now: OffsetDateTime,
    ) -> Result<RotateOutcome>;
    /// Revokes the family of the presented refresh token; returns it if it was live.
    async fn revoke_session_by_token(
        &self,
        presented_hash: &[u8],
        now: OffsetDateTime,
    ) -> Result<Option<SessionRef>>;
    /// Revokes every live session of a user; returns how many were revoked.
    async fn revoke_user_sessions(&self, user_id: &str, now: OffsetDateTime) -> Result<u64>;
    /// Whether the session exists, belongs to `user_id`, is not revoked and has not expired.
    async fn session_is_live(
        &self,
        session_id: &str,
        user_id: &str,
        now: OffsetDateTime,
    ) -> Result<bool>;

    // ---- devices ----
    async fn create_device(&self, device: NewDevice) -> Result<Device>;
    /// The owner's devices, oldest first, including revoked ones.
    async fn devices_of(&self, owner_id: &str) -> Result<Vec<Device>>;
    async fn device_by_id(&self, id: &str) -> Result<Option<Device>>;
    /// The devices linked to a channel (revoked ones too: their past events are there),
    /// oldest first.
    async fn devices_in_channel(&self, channel_id: &str) -> Result<Vec<Device>>;
    /// Revokes the owner's device; `false` when the owner has no such device.
    /// Revoking an already revoked device succeeds and keeps the first revocation time.
    async fn revoke_device(&self, owner_id: &str, id: &str, now: OffsetDateTime) -> Result<bool>;
    /// Records, in one transaction, that these devices were seen (and what they reported);
    /// unknown device ids are skipped. Returns how many devices were updated.
    async fn record_devices_seen(&self, seen: &[(String, DeviceSeen)]) -> Result<u64>;
    /// Links the owner's device to a channel (or unlinks it with `None`); `false` when the
    /// owner has no such device. The channel must exist (`Invalid` otherwise).
    async fn set_device_channel(
        &self,
        owner_id: &str,
        device_id: &str,
        channel_id: Option<&str>,
    ) -> Result<bool>;
    /// The credential for the key with this public id, for authenticating a device.
    async fn device_credential(&self, key_id: &str) -> Result<Option<DeviceCredential>>;

    // ---- channels and messages ----
    /// Creates a channel with its creator as first member; `Conflict("channel")` when the
    /// name is taken.
    async fn create_channel(&self, channel: NewChannel) -> Result<Channel>;
    async fn channel_by_id(&self, id: &str) -> Result<Option<Channel>>;
    /// Adds a member, recorded as a `member_joined` event; returns the event's seq, or
    /// `None` when already a member. The channel and user must exist.
    async fn add_member(&self, channel_id: &str, user_id: &str, by: &Actor) -> Result<Option<i64>>;
    async fn is_member(&self, channel_id: &str, user_id: &str) -> Result<bool>;
    /// Stores a message with the channel's next seq, in one transaction, and returns it once
    /// durable. A message with the same (channel, sender, client_msg_id) is not stored again:
    /// the stored one is returned with `duplicate: true`. A reply bumps its root's reply
    /// count in the same transaction; a bad root is `Invalid`.
    async fn append_message(&self, message: NewMessage) -> Result<Appended>;
    /// A member's post: [`Store::append_message`], but checked in the same transaction that
    /// stores it: [`StoreError::Forbidden`] with [`NOT_A_MEMBER`] when the sender is not a
    /// member of the channel (or there is no such channel), with [`ARCHIVED`] when the
    /// channel is archived. One visit to the store decides and stores a publish.
    ///
    /// Posts are stored in the order their futures are first polled: the first poll takes
    /// the post's place in line (or waits for one, first come first served), so a caller that
    /// polls each post once as it makes it may then await them together and still find its
    /// posts in the order it made them.
    async fn post_message(&self, message: NewMessage) -> Result<Appended>;
    /// Opens the direct conversation of exactly `members` (user ids): the existing one if
    /// these people already have one, else a new private channel with them as members.
    /// Returns it, and whether it was created now. Every member must exist.
    async fn open_direct(&self, channel: NewChannel, members: &[String])
        -> Result<(Channel, bool)>;
    /// A channel's members, by username.
    async fn members_of(&self, channel_id: &str) -> Result<Vec<Member>>;
    /// The user's channels with role and read position, by name.
    async fn memberships_of(&self, user_id: &str) -> Result<Vec<Membership>>;
    async fn member_role(&self, channel_id: &str, user_id: &str) -> Result<Option<Role>>;
    /// `false` when the user is not a member.
    async fn set_member_role(&self, channel_id: &str, user_id: &str, role: Role) -> Result<bool>;
    /// Removes a member, recorded as a `member_left` event (whose seq it returns); `None`
    /// when the user was not a member.
    async fn remove_member(
        &self,
        channel_id: &str,
        user_id: &str,
        by: &Actor,
    ) -> Result<Option<i64>>;
    /// Renames, recorded as a `channel_updated` event; `Conflict("channel")` when the name is
    /// taken; `None` when there is no such channel.
    async fn rename_channel(&self, channel_id: &str, name: &str, by: &Actor)
        -> Result<Option<i64>>;
    /// Archives (at `by.at`) or unarchives, recorded as a `channel_updated` event; `None`
    /// when there is no such channel.
    async fn set_archived(
        &self,
        channel_id: &str,
        archived: bool,
        by: &Actor,
    ) -> Result<Option<i64>>;
    /// Moves the member's read position forward to `seq` (never back, never past the
    /// newest message); returns the position now stored, `None` if not a member.
    async fn mark_read(&self, channel_id: &str, user_id: &str, seq: i64) -> Result<Option<i64>>;
    /// Messages with `seq < before_seq`, the newest `limit` of them, oldest first.
    async fn messages_before(
        &self,
        channel_id: &str,
        before_seq: i64,
        limit: u32,
    ) -> Result<Vec<Message>>;
    /// Messages matching the query in channels the user is a member of, best match first.
    async fn search_messages(&self, query: SearchQuery) -> Result<Vec<Message>>;
    /// Keeps `message` out of its channel (moderation's hold), with `message.flag_reasons`
    /// as the reasons. Holding the same (channel, sender, client_msg_id) again returns the
    /// held one; returns it and whether it is new.
    async fn hold_message(&self, message: NewMessage) -> Result<(HeldMessage, bool)>;
    /// Held messages, oldest first, at most `limit`.
    async fn held_messages(&self, limit: u32) -> Result<Vec<HeldMessage>>;
    async fn held_message(&self, id: &str) -> Result<Option<HeldMessage>>;
    /// Forgets a held message (released: appended by then; or rejected). `false` if unknown.
    async fn remove_held(&self, id: &str) -> Result<bool>;
    /// Flagged messages that are not deleted, newest first, at most `limit`.
    async fn flagged_messages(&self, limit: u32) -> Result<Vec<Message>>;
    /// A message of a channel by id.
    async fn message_by_id(&self, channel_id: &str, id: &str) -> Result<Option<Message>>;
    /// Replies in the thread of `root_id` with `seq > after_seq`, oldest first.
    async fn thread_replies(
        &self,
        channel_id: &str,
        root_id: &str,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<Message>>;
    /// Messages with `seq > after_seq`, oldest first, at most `limit`.
    async fn messages_after(
        &self,
        channel_id: &str,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<Message>>;
    /// The channel's timeline after `after_seq` (messages and events), in seq order, at most
    /// `limit`: what a client that has seen `after_seq` needs to catch up.
    async fn events_after(
        &self,
        channel_id: &str,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<ChannelEvent>>;
    /// Replaces the body of a live message by its author, keeping the old body as a
    /// revision, recorded as a `message_edited` event. Returns the edited message and the
    /// event's seq; `None` when the author has no such live message in the channel.
    async fn edit_message(&self, edit: MessageEdit) -> Result<Option<(Message, i64)>>;
    /// Turns a message into a tombstone: its body, revisions, reactions, mentions and search
    /// entry are deleted; recorded as a `message_deleted` event whose seq it returns. `None`
    /// when there is no such live message. Who may delete is the caller's decision.
    async fn delete_message(
        &self,
        channel_id: &str,
        message_id: &str,
        by: &Actor,
    ) -> Result<Option<i64>>;
    /// The bodies a message had before its edits, oldest first.
    async fn message_revisions(&self, message_id: &str) -> Result<Vec<Revision>>;
    /// Adds (`add`) or removes `by.user_id`'s `emoji` reaction on a live message.
    async fn set_reaction(
        &self,
        channel_id: &str,
        message_id: &str,
        emoji: &str,
        add: bool,
        by: &Actor,
    ) -> Result<ReactionOutcome>;
    /// Everyone who shares at least one channel with the user, the user included.
    async fn channel_peers(&self, user_id: &str) -> Result<Vec<String>>;

    // ---- audit ----
    /// Appends to the audit log; entries are never updated or deleted.
    async fn append_audit(&self, event: NewAuditEvent) -> Result<()>;
    /// The newest entries first, at most `limit`, older than `before_id` when given.
    async fn audit_events(&self, limit: u32, before_id: Option<i64>) -> Result<Vec<AuditEvent>>;

    // ---- files ----
    /// Records an upload whose bytes are already stored. The channel must exist (`Invalid`
    /// otherwise); an id that is taken is `Conflict("file")`.
    async fn insert_file(&self, file: NewFile) -> Result<StoredFile>;
    async fn file_by_id(&self, id: &str) -> Result<Option<StoredFile>>;

    // ---- telemetry ----
    /// Stores the points in one transaction; a point for a (device, metric, time) that is
    /// stored already replaces it. Every device must exist (`Invalid` otherwise, and nothing
    /// is stored). Returns how many points were written.
    async fn append_telemetry(&self, points: &[TelemetryPoint]) -> Result<u64>;
    /// The query's buckets that hold points, oldest first.
    async fn telemetry_buckets(&self, query: TelemetryQuery) -> Result<Vec<TelemetryBucket>>;
    /// The names of the device's metrics that hold at least one point, by name.
    async fn telemetry_metrics(&self, device_id: &str) -> Result<Vec<String>>;
    /// Deletes points older than `before`, in slices of series so that other writers are
    /// not held up for long; returns how many were deleted.
    async fn prune_telemetry(&self, before: OffsetDateTime) -> Result<u64>;

    // ---- device commands ----
    /// Stores a command for a device (which must exist: `Invalid` otherwise).
    async fn create_command(&self, command: NewCommand) -> Result<Command>;
    async fn command_by_id(&self, id: &str) -> Result<Option<Command>>;
    /// The device's unanswered commands that have not expired at `now`, oldest first.
    async fn pending_commands(
        &self,
        device_id: &str,
        now: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<Command>>;
    /// Notes the first delivery of a command.
    async fn mark_command_delivered(&self, id: &str, at: OffsetDateTime) -> Result<()>;
    /// Stores the device's answer to its command; returns the command if this answer
    /// completed it, `None` if the device has no such unanswered command (an unknown id, or
    /// an answer repeated).
    async fn complete_command(
        &self,
        device_id: &str,
        id: &str,
        ok: bool,
        output: serde_json::Value,
        at: OffsetDateTime,
    ) -> Result<Option<Command>>;
}
