//! The embedded SQLite backend: the default store, so `unhidra serve` needs no other service.
//!
//! One database file in WAL mode. Every write runs on one thread that owns the write
//! connection ([`writer`]): writes that queue while a commit is on disk share the next
//! transaction (and its fsync), each in its own savepoint and each acknowledged only after
//! that commit, with one crossing between the async side and SQLite per batch. Reads go
//! through a small pool of read-only connections that WAL lets run beside the writer.
//! `synchronous=FULL`: a write the server acknowledges survives a crash or power loss.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use time::OffsetDateTime;
use unhidra_store::{
    Actor, Appended, AuditEvent, Channel, ChannelEvent, Command, Device, DeviceCredential,
    DeviceSeen, HeldMessage, Member, Membership, Message, MessageEdit, NewAuditEvent, NewChannel,
    NewCommand, NewDevice, NewFile, NewMessage, NewSession, NewUser, NextRefreshToken, Outage,
    ReactionOutcome, Result, Revision, Role, RotateOutcome, SearchQuery, SessionRef, Store,
    StoreError, StoredFile, TelemetryBucket, TelemetryPoint, TelemetryQuery, User, ARCHIVED,
    NOT_A_MEMBER,
};

use writer::{conflict, failed, missing, stmt, violation, Tx, Violation, Writer};

mod commands;
mod moderation;
mod search;
mod telemetry;
mod timeline;
mod writer;

pub use writer::THREAD_NAME as WRITER_THREAD;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// The SQLite store.
#[derive(Clone)]
pub struct SqliteStore {
    writer: Writer,
    reader: SqlitePool,
    /// Telemetry series ids known to be stored.
    series: std::sync::Arc<telemetry::SeriesCache>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore").finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and applies pending migrations.
    pub async fn open(path: &Path) -> Result<Self> {
        create_private(path)?;
        let base = SqliteConnectOptions::from_str("sqlite:")
            .map_err(StoreError::backend)?
            .filename(path)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(5))
            .foreign_keys(true);
        let migrating = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(base.clone().create_if_missing(true))
            .await
            .map_err(db)?;
        MIGRATOR.run(&migrating).await.map_err(|err| match err {
            sqlx::migrate::MigrateError::Execute(err) => db(err),
            other => StoreError::backend(other),
        })?;
        migrating.close().await;
        let writer = Writer::start(path)?;
        let reader = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(base.read_only(true))
            .await
            .map_err(db)?;
        tracing::debug!(path = %path.display(), "sqlite store open");
        Ok(Self {
            writer,
            reader,
            series: Default::default(),
        })
    }

    /// Closes the read connections, then finishes the queued writes and stops the writer.
    pub async fn close(&self) {
        self.reader.close().await;
        self.writer.stop().await;
    }
}

/// Creates the database file with mode 0600 if it does not exist; SQLite gives its `-wal`
/// and `-shm` files the same mode as the database file.
fn create_private(path: &Path) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(err) => Err(StoreError::io(err)),
    }
}

fn ms(t: OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

fn from_ms(ms: i64) -> Result<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .map_err(|e| StoreError::Corrupt(format!("timestamp {ms}: {e}")))
}

fn from_ms_opt(ms: Option<i64>) -> Result<Option<OffsetDateTime>> {
    ms.map(from_ms).transpose()
}

/// A SQLite failure as the services see it: a full disk, a read-only database or an I/O
/// error is [`StoreError::Unavailable`] (nothing was written, and the same write may work
/// later); anything else is [`StoreError::Backend`].
fn db(err: sqlx::Error) -> StoreError {
    match outage(&err) {
        Some(outage) => StoreError::unavailable(outage, err),
        None => StoreError::backend(err),
    }
}

fn outage(err: &sqlx::Error) -> Option<Outage> {
    // Primary result codes: the low byte of the extended code that sqlx reports.
    const SQLITE_READONLY: i32 = 8;
    const SQLITE_IOERR: i32 = 10;
    const SQLITE_FULL: i32 = 13;
    const SQLITE_CANTOPEN: i32 = 14;
    match err {
        sqlx::Error::Database(db) => {
            let code: i32 = db.code()?.parse().ok()?;
            match code & 0xff {
                SQLITE_FULL => Some(Outage::Full),
                SQLITE_READONLY => Some(Outage::ReadOnly),
                // SQLite reports a write refused by a read-only file system as an I/O error.
                SQLITE_IOERR | SQLITE_CANTOPEN => Some(Outage::Failing),
                _ => None,
            }
        }
        sqlx::Error::Io(io) => Outage::of_io(io),
        _ => None,
    }
}

type UserRow = (String, String, String, bool, i64);

fn user_from_row((id, username, password_hash, is_admin, created_at): UserRow) -> Result<User> {
    Ok(User {
        id,
        username,
        password_hash,
        is_admin,
        created_at: from_ms(created_at)?,
    })
}

type DeviceRow = (
    String,
    String,
    String,
    Option<String>,
    String,
    String,
    i64,
    Option<i64>,
    Option<i64>,
    Option<String>,
    Option<i64>,
    Option<String>,
);

const DEVICE_COLUMNS: &str = "id, owner_id, name, kind, metadata, key_id, created_at, revoked_at, \
     last_seen_at, firmware_version, free_memory, channel_id";

fn device_from_row(row: DeviceRow) -> Result<Device> {
    let (
        id,
        owner_id,
        name,
        kind,
        metadata,
        key_id,
        created_at,
        revoked_at,
        last_seen_at,
        firmware_version,
        free_memory,
        channel_id,
    ) = row;
    Ok(Device {
        metadata: serde_json::from_str(&metadata)
            .map_err(|e| StoreError::Corrupt(format!("device {id} metadata: {e}")))?,
        id,
        owner_id,
        name,
        kind,
        key_id,
        created_at: from_ms(created_at)?,
        revoked_at: from_ms_opt(revoked_at)?,
        last_seen_at: from_ms_opt(last_seen_at)?,
        firmware_version,
        free_memory: free_memory.and_then(|m| u64::try_from(m).ok()),
        channel_id,
    })
}

type ChannelRow = (String, String, bool, String, i64, i64, Option<i64>, bool);

const CHANNEL_COLUMNS: &str =
    "id, name, private, created_by, created_at, last_seq, archived_at, dm_key IS NOT NULL";

fn channel_from_row(row: ChannelRow) -> Result<Channel> {
    let (id, name, private, created_by, created_at, last_seq, archived_at, direct) = row;
    Ok(Channel {
        id,
        name,
        private,
        created_by,
        created_at: from_ms(created_at)?,
        last_seq,
        archived_at: from_ms_opt(archived_at)?,
        direct,
    })
}

fn role(raw: &str) -> Result<Role> {
    Role::parse(raw).ok_or_else(|| StoreError::Corrupt(format!("role {raw:?}")))
}

/// How many of the newest matches a search ranks by relevance.
const RANKED: u32 = 2000;

/// Turns user input into an FTS5 query of plain words, all required: every word is quoted,
/// so operators and syntax in the input cannot break or widen the query.
fn fts_words(text: &str) -> Option<String> {
    // A control character (NUL above all) inside a quoted FTS5 string is a syntax error, and
    // the tokenizer never indexes one: it separates words like white space does.
    let text: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let words: Vec<String> = text
        .split_whitespace()
        .take(16)
        .map(|w| format!("\"{}\"", w.replace('"', "\"\"")))
        .collect();
    (!words.is_empty()).then(|| words.join(" "))
}

type MessageRow = (
    String,
    String,
    i64,
    String,
    String,
    String,
    i64,
    Option<String>,
    i64,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    Option<String>,
);

const MESSAGE_COLUMNS: &str = "id, channel_id, seq, sender_id, client_msg_id, body, created_at, \
     thread_root_id, reply_count, last_reply_at, edited_at, deleted_at, flag_reasons";

/// [`MESSAGE_COLUMNS`] of the table aliased `m`.
fn message_columns_of_m() -> String {
    MESSAGE_COLUMNS
        .split(", ")
        .map(|c| format!("m.{}", c.trim()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A message without its reactions and attachments (see [`timeline::with_reactions_and_files`]).
fn message_from_row(row: MessageRow) -> Result<Message> {
    let (
        id,
        channel_id,
        seq,
        sender_id,
        client_msg_id,
        body,
        created_at,
        root,
        replies,
        last,
        edited,
        deleted,
        flag_reasons,
    ) = row;
    Ok(Message {
        id,
        channel_id,
        seq,
        sender_id,
        client_msg_id,
        body,
        created_at: from_ms(created_at)?,
        thread_root_id: root,
        reply_count: replies,
        last_reply_at: from_ms_opt(last)?,
        edited_at: from_ms_opt(edited)?,
        deleted_at: from_ms_opt(deleted)?,
        reactions: Vec::new(),
        attachments: Vec::new(),
        flag_reasons: json_strings(flag_reasons.as_deref())?,
    })
}

/// A JSON array of strings in a column (NULL: none).
fn json_strings(column: Option<&str>) -> Result<Vec<String>> {
    match column {
        None => Ok(Vec::new()),
        Some(text) => serde_json::from_str(text)
            .map_err(|err| StoreError::Corrupt(format!("a JSON list column: {err}"))),
    }
}

/// Strings as a JSON array for a column.
fn strings_json(values: &[String]) -> String {
    serde_json::to_string(values).unwrap_or_else(|_| "[]".to_owned())
}

#[async_trait]
impl Store for SqliteStore {
    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1")
            .execute(&self.reader)
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn create_user(&self, user: NewUser) -> Result<User> {
        self.writer
            .run(move |c| {
                stmt(
                    c,
                    "INSERT INTO users (id, username, password_hash, is_admin, created_at)
                     VALUES (?, ?, ?, ?, ?)",
                )?
                .execute(params![
                    user.id,
                    user.username,
                    user.password_hash,
                    user.is_admin,
                    ms(user.created_at)
                ])
                .map_err(conflict("username"))?;
                Ok(User {
                    created_at: from_ms(ms(user.created_at))?,
                    id: user.id,
                    username: user.username,
                    password_hash: user.password_hash,
                    is_admin: user.is_admin,
                })
            })
            .await
    }

    async fn user_by_id(&self, id: &str) -> Result<Option<User>> {
        let row: Option<UserRow> = sqlx::query_as(
            "SELECT id, username, password_hash, is_admin, created_at FROM users WHERE id = ?",
        )
        .bind(id)
        .fetch_optional(&self.reader)
        .await
        .map_err(db)?;
        row.map(user_from_row).transpose()
    }

    async fn user_by_username(&self, username: &str) -> Result<Option<User>> {
        let row: Option<UserRow> = sqlx::query_as(
            "SELECT id, username, password_hash, is_admin, created_at FROM users WHERE username = ?",
        )
        .bind(username)
        .fetch_optional(&self.reader)
        .await
        .map_err(db)?;
        row.map(user_from_row).transpose()
    }

    async fn count_users(&self) -> Result<u64> {
        let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM users")
            .fetch_one(&self.reader)
            .await
            .map_err(db)?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn create_session(&self, session: NewSession) -> Result<()> {
        self.writer
            .run(move |c| {
                stmt(
                    c,
                    "INSERT INTO sessions (id, user_id, created_at, expires_at)
                     VALUES (?, ?, ?, ?)",
                )?
                .execute(params![
                    session.id,
                    session.user_id,
                    ms(session.created_at),
                    ms(session.expires_at)
                ])
                .map_err(conflict("session"))?;
                stmt(
                    c,
                    "INSERT INTO refresh_tokens (token_hash, session_id) VALUES (?, ?)",
                )?
                .execute(params![session.token_hash, session.id])
                .map_err(conflict("refresh_token"))?;
                Ok(())
            })
            .await
    }

    async fn rotate_refresh_token(
        &self,
        presented_hash: &[u8],
        next: NextRefreshToken,
        now: OffsetDateTime,
    ) -> Result<RotateOutcome> {
        let now = ms(now);
        let presented = presented_hash.to_vec();
        // The single writer runs this against every other write one at a time, so the
        // check-then-update below cannot race another rotation of the same token.
        self.writer
            .run(move |c| {
                let row: Option<(String, String, Option<i64>, i64, Option<i64>)> = stmt(
                    c,
                    "SELECT s.id, s.user_id, t.used_at, s.expires_at, s.revoked_at
                     FROM refresh_tokens t JOIN sessions s ON s.id = t.session_id
                     WHERE t.token_hash = ?",
                )?
                .query_row([&presented], |row| row.try_into())
                .optional()
                .map_err(failed)?;
                let Some((session_id, user_id, used_at, expires_at, revoked_at)) = row else {
                    return Ok(RotateOutcome::Unknown);
                };
                let session = SessionRef {
                    session_id,
                    user_id,
                };
                if revoked_at.is_some() || expires_at <= now {
                    return Ok(RotateOutcome::Dead(session));
                }
                if used_at.is_some() {
                    stmt(c, "UPDATE sessions SET revoked_at = ? WHERE id = ?")?
                        .execute(params![now, session.session_id])
                        .map_err(failed)?;
                    return Ok(RotateOutcome::Reused(session));
                }
                stmt(
                    c,
                    "UPDATE refresh_tokens SET used_at = ? WHERE token_hash = ?",
                )?
                .execute(params![now, presented])
                .map_err(failed)?;
                stmt(
                    c,
                    "INSERT INTO refresh_tokens (token_hash, session_id) VALUES (?, ?)",
                )?
                .execute(params![next.token_hash, session.session_id])
                .map_err(conflict("refresh_token"))?;
                Ok(RotateOutcome::Rotated(session))
            })
            .await
    }

    async fn revoke_session_by_token(
        &self,
        presented_hash: &[u8],
        now: OffsetDateTime,
    ) -> Result<Option<SessionRef>> {
        let presented = presented_hash.to_vec();
        self.writer
            .run(move |c| {
                let row: Option<(String, String)> = stmt(
                    c,
                    "UPDATE sessions SET revoked_at = ?
                     WHERE revoked_at IS NULL
                       AND id = (SELECT session_id FROM refresh_tokens WHERE token_hash = ?)
                     RETURNING id, user_id",
                )?
                .query_row(params![ms(now), presented], |row| row.try_into())
                .optional()
                .map_err(failed)?;
                Ok(row.map(|(session_id, user_id)| SessionRef {
                    session_id,
                    user_id,
                }))
            })
            .await
    }

    async fn revoke_user_sessions(&self, user_id: &str, now: OffsetDateTime) -> Result<u64> {
        let user_id = user_id.to_owned();
        self.writer
            .run(move |c| {
                let changed = stmt(
                    c,
                    "UPDATE sessions SET revoked_at = ? WHERE user_id = ? AND revoked_at IS NULL",
                )?
                .execute(params![ms(now), user_id])
                .map_err(failed)?;
                Ok(changed as u64)
            })
            .await
    }

    async fn session_is_live(
        &self,
        session_id: &str,
        user_id: &str,
        now: OffsetDateTime,
    ) -> Result<bool> {
        let row: Option<(i64,)> = sqlx::query_as(
            "SELECT 1 FROM sessions
             WHERE id = ? AND user_id = ? AND revoked_at IS NULL AND expires_at > ?",
        )
        .bind(session_id)
        .bind(user_id)
        .bind(ms(now))
        .fetch_optional(&self.reader)
        .await
        .map_err(db)?;
        Ok(row.is_some())
    }

    async fn create_device(&self, device: NewDevice) -> Result<Device> {
        let metadata = serde_json::to_string(&device.metadata)
            .map_err(|e| StoreError::Corrupt(format!("device metadata: {e}")))?;
        self.writer
            .run(move |c| {
                stmt(
                    c,
                    "INSERT INTO devices
                         (id, owner_id, name, kind, metadata, key_id, key_hash, created_at)
                     VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                )?
                .execute(params![
                    device.id,
                    device.owner_id,
                    device.name,
                    device.kind,
                    metadata,
                    device.key_id,
                    device.key_hash,
                    ms(device.created_at)
                ])
                .map_err(conflict("device"))?;
                Ok(Device {
                    created_at: from_ms(ms(device.created_at))?,
                    id: device.id,
                    owner_id: device.owner_id,
                    name: device.name,
                    kind: device.kind,
                    metadata: device.metadata,
                    key_id: device.key_id,
                    revoked_at: None,
                    last_seen_at: None,
                    firmware_version: None,
                    free_memory: None,
                    channel_id: None,
                })
            })
            .await
    }

    async fn set_device_channel(
        &self,
        owner_id: &str,
        device_id: &str,
        channel_id: Option<&str>,
    ) -> Result<bool> {
        let (owner_id, device_id) = (owner_id.to_owned(), device_id.to_owned());
        let channel_id = channel_id.map(str::to_owned);
        self.writer
            .run(move |c| {
                let changed = stmt(
                    c,
                    "UPDATE devices SET channel_id = ? WHERE id = ? AND owner_id = ?",
                )?
                .execute(params![channel_id, device_id, owner_id])
                .map_err(missing("no such channel"))?;
                Ok(changed == 1)
            })
            .await
    }

    async fn record_devices_seen(&self, seen: &[(String, DeviceSeen)]) -> Result<u64> {
        let seen = seen.to_vec();
        self.writer
            .run(move |c| {
                let mut update = stmt(
                    c,
                    "UPDATE devices SET last_seen_at = MAX(COALESCE(last_seen_at, 0), ?),
                            firmware_version = COALESCE(?, firmware_version),
                            free_memory = COALESCE(?, free_memory)
                     WHERE id = ?",
                )?;
                let mut updated = 0;
                for (device_id, seen) in &seen {
                    updated += update
                        .execute(params![
                            ms(seen.at),
                            seen.firmware_version,
                            seen.free_memory.and_then(|m| i64::try_from(m).ok()),
                            device_id
                        ])
                        .map_err(failed)? as u64;
                }
                Ok(updated)
            })
            .await
    }

    async fn devices_of(&self, owner_id: &str) -> Result<Vec<Device>> {
        let rows: Vec<DeviceRow> = sqlx::query_as(&format!(
            "SELECT {DEVICE_COLUMNS} FROM devices WHERE owner_id = ? ORDER BY created_at, id"
        ))
        .bind(owner_id)
        .fetch_all(&self.reader)
        .await
        .map_err(db)?;
        rows.into_iter().map(device_from_row).collect()
    }

    async fn devices_in_channel(&self, channel_id: &str) -> Result<Vec<Device>> {
        let rows: Vec<DeviceRow> = sqlx::query_as(&format!(
            "SELECT {DEVICE_COLUMNS} FROM devices WHERE channel_id = ? ORDER BY created_at, id"
        ))
        .bind(channel_id)
        .fetch_all(&self.reader)
        .await
        .map_err(db)?;
        rows.into_iter().map(device_from_row).collect()
    }

    async fn device_by_id(&self, id: &str) -> Result<Option<Device>> {
        let row: Option<DeviceRow> = sqlx::query_as(&format!(
            "SELECT {DEVICE_COLUMNS} FROM devices WHERE id = ?"
        ))
        .bind(id)
        .fetch_optional(&self.reader)
        .await
        .map_err(db)?;
        row.map(device_from_row).transpose()
    }

    async fn revoke_device(&self, owner_id: &str, id: &str, now: OffsetDateTime) -> Result<bool> {
        let (owner_id, id) = (owner_id.to_owned(), id.to_owned());
        self.writer
            .run(move |c| {
                let changed = stmt(
                    c,
                    "UPDATE devices SET revoked_at = COALESCE(revoked_at, ?)
                     WHERE id = ? AND owner_id = ?",
                )?
                .execute(params![ms(now), id, owner_id])
                .map_err(failed)?;
                Ok(changed == 1)
            })
            .await
    }

    async fn device_credential(&self, key_id: &str) -> Result<Option<DeviceCredential>> {
        let row: Option<(String, String, Vec<u8>, Option<i64>)> = sqlx::query_as(
            "SELECT id, owner_id, key_hash, revoked_at FROM devices WHERE key_id = ?",
        )
        .bind(key_id)
        .fetch_optional(&self.reader)
        .await
        .map_err(db)?;
        Ok(row.map(
            |(device_id, owner_id, key_hash, revoked_at)| DeviceCredential {
                device_id,
                owner_id,
                key_hash,
                revoked: revoked_at.is_some(),
            },
        ))
    }

    async fn create_channel(&self, channel: NewChannel) -> Result<Channel> {
        self.writer
            .run(move |c| {
                stmt(
                    c,
                    "INSERT INTO channels (id, name, private, created_by, created_at)
                     VALUES (?, ?, ?, ?, ?)",
                )?
                .execute(params![
                    channel.id,
                    channel.name,
                    channel.private,
                    channel.created_by,
                    ms(channel.created_at)
                ])
                .map_err(conflict("channel"))?;
                stmt(
                    c,
                    "INSERT INTO channel_members (channel_id, user_id, joined_at, role)
                     VALUES (?, ?, ?, 'owner')",
                )?
                .execute(params![
                    channel.id,
                    channel.created_by,
                    ms(channel.created_at)
                ])
                .map_err(failed)?;
                Ok(Channel {
                    created_at: from_ms(ms(channel.created_at))?,
                    id: channel.id,
                    name: channel.name,
                    private: channel.private,
                    created_by: channel.created_by,
                    last_seq: 0,
                    archived_at: None,
                    direct: false,
                })
            })
            .await
    }

    async fn channel_by_id(&self, id: &str) -> Result<Option<Channel>> {
        let row: Option<ChannelRow> = sqlx::query_as(&format!(
            "SELECT {CHANNEL_COLUMNS} FROM channels WHERE id = ?"
        ))
        .bind(id)
        .fetch_optional(&self.reader)
        .await
        .map_err(db)?;
        row.map(channel_from_row).transpose()
    }

    async fn add_member(&self, channel_id: &str, user_id: &str, by: &Actor) -> Result<Option<i64>> {
        let (channel_id, user_id, by) = (channel_id.to_owned(), user_id.to_owned(), by.clone());
        self.writer
            .run(move |c| {
                let changed = stmt(
                    c,
                    "INSERT INTO channel_members (channel_id, user_id, joined_at) VALUES (?, ?, ?)
                     ON CONFLICT DO NOTHING",
                )?
                .execute(params![channel_id, user_id, ms(by.at)])
                .map_err(missing("no such user or channel"))?;
                timeline::record_change(
                    c,
                    changed > 0,
                    &channel_id,
                    timeline::Kind::MemberJoined,
                    &by,
                    Some(&user_id),
                )
            })
            .await
    }

    async fn is_member(&self, channel_id: &str, user_id: &str) -> Result<bool> {
        let row: Option<(i64,)> =
            sqlx::query_as("SELECT 1 FROM channel_members WHERE channel_id = ? AND user_id = ?")
                .bind(channel_id)
                .bind(user_id)
                .fetch_optional(&self.reader)
                .await
                .map_err(db)?;
        Ok(row.is_some())
    }

    async fn append_message(&self, message: NewMessage) -> Result<Appended> {
        self.writer.run(move |c| append(c, message)).await
    }

    async fn post_message(&self, message: NewMessage) -> Result<Appended> {
        self.writer
            .run(move |c| {
                may_post(c, &message.channel_id, &message.sender_id)?;
                append(c, message)
            })
            .await
    }

    async fn open_direct(
        &self,
        channel: NewChannel,
        members: &[String],
    ) -> Result<(Channel, bool)> {
        let mut ids: Vec<String> = members.to_vec();
        ids.sort_unstable();
        ids.dedup();
        let key = ids.join(",");
        self.writer
            .run(move |c| {
                let existing: Option<ChannelRow> = stmt(
                    c,
                    &format!("SELECT {CHANNEL_COLUMNS} FROM channels WHERE dm_key = ?"),
                )?
                .query_row([&key], |row| row.try_into())
                .optional()
                .map_err(failed)?;
                if let Some(row) = existing {
                    return Ok((channel_from_row(row)?, false));
                }
                stmt(
                    c,
                    "INSERT INTO channels (id, name, private, created_by, created_at, dm_key)
                     VALUES (?, ?, 1, ?, ?, ?)",
                )?
                .execute(params![
                    channel.id,
                    channel.name,
                    channel.created_by,
                    ms(channel.created_at),
                    key
                ])
                .map_err(conflict("channel"))?;
                let mut member = stmt(
                    c,
                    "INSERT INTO channel_members (channel_id, user_id, joined_at, role)
                     VALUES (?, ?, ?, 'member')",
                )?;
                for user_id in &ids {
                    member
                        .execute(params![channel.id, user_id, ms(channel.created_at)])
                        .map_err(missing("no such user"))?;
                }
                Ok((
                    Channel {
                        created_at: from_ms(ms(channel.created_at))?,
                        id: channel.id,
                        name: channel.name,
                        private: true,
                        created_by: channel.created_by,
                        last_seq: 0,
                        archived_at: None,
                        direct: true,
                    },
                    true,
                ))
            })
            .await
    }

    async fn members_of(&self, channel_id: &str) -> Result<Vec<Member>> {
        let rows: Vec<(String, String, String, i64)> = sqlx::query_as(
            "SELECT u.id, u.username, m.role, m.last_read_seq FROM channel_members m JOIN users u ON u.id = m.user_id
             WHERE m.channel_id = ? ORDER BY u.username",
        )
        .bind(channel_id)
        .fetch_all(&self.reader)
        .await
        .map_err(db)?;
        rows.into_iter()
            .map(|(user_id, username, r, last_read_seq)| {
                Ok(Member {
                    user_id,
                    username,
                    role: role(&r)?,
                    last_read_seq,
                })
            })
            .collect()
    }

    async fn memberships_of(&self, user_id: &str) -> Result<Vec<Membership>> {
        type Row = (
            String,
            String,
            bool,
            String,
            i64,
            i64,
            Option<i64>,
            bool,
            String,
            i64,
            i64,
            i64,
        );
        // Counting walks the unread part of each channel through its primary key: cheap for
        // what a person leaves unread; the client shows large counts as "999+".
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT c.id, c.name, c.private, c.created_by, c.created_at, c.last_seq,
                    c.archived_at, c.dm_key IS NOT NULL, m.role, m.last_read_seq,
                    (SELECT COUNT(*) FROM messages x
                     WHERE x.channel_id = c.id AND x.seq > m.last_read_seq
                       AND x.sender_id != m.user_id AND x.deleted_at IS NULL),
                    (SELECT COUNT(*) FROM mentions n
                     WHERE n.user_id = m.user_id AND n.channel_id = c.id
                       AND n.seq > m.last_read_seq)
             FROM channel_members m JOIN channels c ON c.id = m.channel_id
             WHERE m.user_id = ? ORDER BY c.name",
        )
        .bind(user_id)
        .fetch_all(&self.reader)
        .await
        .map_err(db)?;
        rows.into_iter()
            .map(
                |(id, name, private, by, at, last, archived, direct, r, read, unread, mentions)| {
                    Ok(Membership {
                        channel: channel_from_row((
                            id, name, private, by, at, last, archived, direct,
                        ))?,
                        role: role(&r)?,
                        last_read_seq: read,
                        unread,
                        mentions,
                    })
                },
            )
            .collect()
    }

    async fn member_role(&self, channel_id: &str, user_id: &str) -> Result<Option<Role>> {
        let row: Option<(String,)> =
            sqlx::query_as("SELECT role FROM channel_members WHERE channel_id = ? AND user_id = ?")
                .bind(channel_id)
                .bind(user_id)
                .fetch_optional(&self.reader)
                .await
                .map_err(db)?;
        row.map(|(r,)| role(&r)).transpose()
    }

    async fn set_member_role(
        &self,
        channel_id: &str,
        user_id: &str,
        new_role: Role,
    ) -> Result<bool> {
        let (channel_id, user_id) = (channel_id.to_owned(), user_id.to_owned());
        self.writer
            .run(move |c| {
                let changed = stmt(
                    c,
                    "UPDATE channel_members SET role = ? WHERE channel_id = ? AND user_id = ?",
                )?
                .execute(params![new_role.as_str(), channel_id, user_id])
                .map_err(failed)?;
                Ok(changed == 1)
            })
            .await
    }

    async fn remove_member(
        &self,
        channel_id: &str,
        user_id: &str,
        by: &Actor,
    ) -> Result<Option<i64>> {
        let (channel_id, user_id, by) = (channel_id.to_owned(), user_id.to_owned(), by.clone());
        self.writer
            .run(move |c| {
                let changed = stmt(
                    c,
                    "DELETE FROM channel_members WHERE channel_id = ? AND user_id = ?",
                )?
                .execute(params![channel_id, user_id])
                .map_err(failed)?;
                timeline::record_change(
                    c,
                    changed > 0,
                    &channel_id,
                    timeline::Kind::MemberLeft,
                    &by,
                    Some(&user_id),
                )
            })
            .await
    }

    async fn rename_channel(
        &self,
        channel_id: &str,
        name: &str,
        by: &Actor,
    ) -> Result<Option<i64>> {
        let (channel_id, name, by) = (channel_id.to_owned(), name.to_owned(), by.clone());
        self.writer
            .run(move |c| {
                let changed = stmt(c, "UPDATE channels SET name = ? WHERE id = ?")?
                    .execute(params![name, channel_id])
                    .map_err(conflict("channel"))?;
                timeline::record_change(
                    c,
                    changed > 0,
                    &channel_id,
                    timeline::Kind::ChannelUpdated,
                    &by,
                    None,
                )
            })
            .await
    }

    async fn set_archived(
        &self,
        channel_id: &str,
        archived: bool,
        by: &Actor,
    ) -> Result<Option<i64>> {
        let (channel_id, by) = (channel_id.to_owned(), by.clone());
        self.writer
            .run(move |c| {
                let changed = stmt(c, "UPDATE channels SET archived_at = ? WHERE id = ?")?
                    .execute(params![archived.then(|| ms(by.at)), channel_id])
                    .map_err(failed)?;
                timeline::record_change(
                    c,
                    changed > 0,
                    &channel_id,
                    timeline::Kind::ChannelUpdated,
                    &by,
                    None,
                )
            })
            .await
    }

    async fn mark_read(&self, channel_id: &str, user_id: &str, seq: i64) -> Result<Option<i64>> {
        let (channel_id, user_id) = (channel_id.to_owned(), user_id.to_owned());
        self.writer
            .run(move |c| {
                stmt(
                    c,
                    "UPDATE channel_members
                     SET last_read_seq = MAX(last_read_seq,
                         MIN(?, (SELECT last_seq FROM channels WHERE id = channel_members.channel_id)))
                     WHERE channel_id = ? AND user_id = ?
                     RETURNING last_read_seq",
                )?
                .query_row(params![seq, channel_id, user_id], |row| row.get(0))
                .optional()
                .map_err(failed)
            })
            .await
    }

    async fn messages_before(
        &self,
        channel_id: &str,
        before_seq: i64,
        limit: u32,
    ) -> Result<Vec<Message>> {
        let rows: Vec<MessageRow> = sqlx::query_as(&format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages
             WHERE channel_id = ? AND seq < ? ORDER BY seq DESC LIMIT ?"
        ))
        .bind(channel_id)
        .bind(before_seq)
        .bind(i64::from(limit))
        .fetch_all(&self.reader)
        .await
        .map_err(db)?;
        let mut page = rows
            .into_iter()
            .map(message_from_row)
            .collect::<Result<Vec<_>>>()?;
        page.reverse();
        timeline::with_reactions_and_files(&self.reader, page).await
    }

    async fn search_messages(&self, query: SearchQuery) -> Result<Vec<Message>> {
        let Some(words) = fts_words(&query.text) else {
            return Ok(Vec::new());
        };
        let columns = message_columns_of_m();
        // Relevance is computed for the newest matches only: ranking every match of a common
        // word costs seconds at a million messages (docs/benchmarks.md), while walking the
        // matches newest first and stopping after RANKED costs milliseconds. Membership and
        // the filters apply during that walk, so they never empty a page that has hits.
        let rows: Vec<MessageRow> = sqlx::query_as(&format!(
            "SELECT {columns}
             FROM (SELECT f.rank AS score, f.message_id AS mid
                   FROM messages_fts f
                   WHERE messages_fts MATCH ?1
                     AND f.channel_id IN (SELECT channel_id FROM channel_members WHERE user_id = ?2)
                     AND (?3 IS NULL OR f.channel_id = ?3)
                     AND (?4 IS NULL OR EXISTS (SELECT 1 FROM messages s
                                                WHERE s.id = f.message_id AND s.sender_id = ?4))
                   ORDER BY f.rowid DESC
                   LIMIT {RANKED}) AS hits
             JOIN messages m ON m.id = hits.mid
             ORDER BY hits.score
             LIMIT ?5"
        ))
        .bind(&words)
        .bind(&query.user_id)
        .bind(&query.channel_id)
        .bind(&query.sender_id)
        .bind(i64::from(query.limit))
        .fetch_all(&self.reader)
        .await
        .map_err(db)?;
        let found = rows
            .into_iter()
            .map(message_from_row)
            .collect::<Result<Vec<_>>>()?;
        timeline::with_reactions_and_files(&self.reader, found).await
    }

    async fn hold_message(&self, message: NewMessage) -> Result<(HeldMessage, bool)> {
        self.writer.run(move |c| moderation::hold(c, message)).await
    }

    async fn held_messages(&self, limit: u32) -> Result<Vec<HeldMessage>> {
        moderation::list(&self.reader, limit).await
    }

    async fn held_message(&self, id: &str) -> Result<Option<HeldMessage>> {
        moderation::by_id(&self.reader, id).await
    }

    async fn remove_held(&self, id: &str) -> Result<bool> {
        let id = id.to_owned();
        self.writer.run(move |c| moderation::remove(c, &id)).await
    }

    async fn flagged_messages(&self, limit: u32) -> Result<Vec<Message>> {
        moderation::flagged(&self.reader, limit).await
    }

    async fn message_by_id(&self, channel_id: &str, id: &str) -> Result<Option<Message>> {
        let row: Option<MessageRow> = sqlx::query_as(&format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages WHERE channel_id = ? AND id = ?"
        ))
        .bind(channel_id)
        .bind(id)
        .fetch_optional(&self.reader)
        .await
        .map_err(db)?;
        let Some(message) = row.map(message_from_row).transpose()? else {
            return Ok(None);
        };
        Ok(
            timeline::with_reactions_and_files(&self.reader, vec![message])
                .await?
                .pop(),
        )
    }

    async fn thread_replies(
        &self,
        channel_id: &str,
        root_id: &str,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<Message>> {
        let rows: Vec<MessageRow> = sqlx::query_as(&format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages
             WHERE thread_root_id = ? AND channel_id = ? AND seq > ? ORDER BY seq LIMIT ?"
        ))
        .bind(root_id)
        .bind(channel_id)
        .bind(after_seq)
        .bind(i64::from(limit))
        .fetch_all(&self.reader)
        .await
        .map_err(db)?;
        let replies = rows
            .into_iter()
            .map(message_from_row)
            .collect::<Result<Vec<_>>>()?;
        timeline::with_reactions_and_files(&self.reader, replies).await
    }

    async fn messages_after(
        &self,
        channel_id: &str,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<Message>> {
        let rows: Vec<MessageRow> = sqlx::query_as(&format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages
             WHERE channel_id = ? AND seq > ? ORDER BY seq LIMIT ?"
        ))
        .bind(channel_id)
        .bind(after_seq)
        .bind(i64::from(limit))
        .fetch_all(&self.reader)
        .await
        .map_err(db)?;
        let page = rows
            .into_iter()
            .map(message_from_row)
            .collect::<Result<Vec<_>>>()?;
        timeline::with_reactions_and_files(&self.reader, page).await
    }

    async fn events_after(
        &self,
        channel_id: &str,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<ChannelEvent>> {
        timeline::events_after(self, channel_id, after_seq, limit).await
    }

    async fn edit_message(&self, edit: MessageEdit) -> Result<Option<(Message, i64)>> {
        let (channel_id, message_id) = (edit.channel_id.clone(), edit.message_id.clone());
        let Some(seq) = self.writer.run(move |c| timeline::edit(c, &edit)).await? else {
            return Ok(None);
        };
        let message = self
            .message_by_id(&channel_id, &message_id)
            .await?
            .ok_or_else(|| StoreError::Corrupt(format!("edited message {message_id} vanished")))?;
        Ok(Some((message, seq)))
    }

    async fn delete_message(
        &self,
        channel_id: &str,
        message_id: &str,
        by: &Actor,
    ) -> Result<Option<i64>> {
        let (channel_id, message_id, by) =
            (channel_id.to_owned(), message_id.to_owned(), by.clone());
        self.writer
            .run(move |c| timeline::delete(c, &channel_id, &message_id, &by))
            .await
    }

    async fn message_revisions(&self, message_id: &str) -> Result<Vec<Revision>> {
        let rows: Vec<(i64, String, i64)> = sqlx::query_as(
            "SELECT rev, body, replaced_at FROM message_revisions WHERE message_id = ?
             ORDER BY rev",
        )
        .bind(message_id)
        .fetch_all(&self.reader)
        .await
        .map_err(db)?;
        rows.into_iter()
            .map(|(rev, body, at)| {
                Ok(Revision {
                    rev,
                    body,
                    replaced_at: from_ms(at)?,
                })
            })
            .collect()
    }

    async fn set_reaction(
        &self,
        channel_id: &str,
        message_id: &str,
        emoji: &str,
        add: bool,
        by: &Actor,
    ) -> Result<ReactionOutcome> {
        let (channel_id, message_id, emoji, by) = (
            channel_id.to_owned(),
            message_id.to_owned(),
            emoji.to_owned(),
            by.clone(),
        );
        self.writer
            .run(move |c| timeline::react(c, &channel_id, &message_id, &emoji, add, &by))
            .await
    }

    async fn channel_peers(&self, user_id: &str) -> Result<Vec<String>> {
        let mut peers: Vec<String> = sqlx::query_scalar(
            "SELECT DISTINCT b.user_id FROM channel_members a
             JOIN channel_members b ON b.channel_id = a.channel_id
             WHERE a.user_id = ?",
        )
        .bind(user_id)
        .fetch_all(&self.reader)
        .await
        .map_err(db)?;
        if !peers.iter().any(|p| p == user_id) {
            peers.push(user_id.to_owned());
        }
        Ok(peers)
    }

    async fn append_audit(&self, event: NewAuditEvent) -> Result<()> {
        self.writer
            .run(move |c| {
                stmt(
                    c,
                    "INSERT INTO audit_events (at, kind, actor, subject, ip, detail)
                     VALUES (?, ?, ?, ?, ?, ?)",
                )?
                .execute(params![
                    ms(event.at),
                    event.kind,
                    event.actor,
                    event.subject,
                    event.ip,
                    event.detail.to_string()
                ])
                .map_err(failed)?;
                Ok(())
            })
            .await
    }

    async fn audit_events(&self, limit: u32, before_id: Option<i64>) -> Result<Vec<AuditEvent>> {
        let rows: Vec<(
            i64,
            i64,
            String,
            Option<String>,
            Option<String>,
            Option<String>,
            String,
        )> = sqlx::query_as(
            "SELECT id, at, kind, actor, subject, ip, detail FROM audit_events
                 WHERE id < ? ORDER BY id DESC LIMIT ?",
        )
        .bind(before_id.unwrap_or(i64::MAX))
        .bind(i64::from(limit))
        .fetch_all(&self.reader)
        .await
        .map_err(db)?;
        rows.into_iter()
            .map(|(id, at, kind, actor, subject, ip, detail)| {
                Ok(AuditEvent {
                    id,
                    at: from_ms(at)?,
                    detail: serde_json::from_str(&detail)
                        .map_err(|e| StoreError::Corrupt(format!("audit {id} detail: {e}")))?,
                    kind,
                    actor,
                    subject,
                    ip,
                })
            })
            .collect()
    }

    async fn insert_file(&self, file: NewFile) -> Result<StoredFile> {
        let size = i64::try_from(file.size).map_err(|_| StoreError::Invalid("file size"))?;
        self.writer
            .run(move |c| {
                stmt(
                    c,
                    "INSERT INTO files
                         (id, channel_id, uploader_id, sha256, size, name, content_type, created_at)
                     VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                )?
                .execute(params![
                    file.id,
                    file.channel_id,
                    file.uploader_id,
                    file.sha256,
                    size,
                    file.name,
                    file.content_type,
                    ms(file.created_at)
                ])
                .map_err(|err| match violation(&err) {
                    Some(Violation::ForeignKey) => StoreError::Invalid("no such channel"),
                    _ => conflict("file")(err),
                })?;
                Ok(StoredFile {
                    created_at: from_ms(ms(file.created_at))?,
                    id: file.id,
                    channel_id: file.channel_id,
                    uploader_id: file.uploader_id,
                    sha256: file.sha256,
                    size: file.size,
                    name: file.name,
                    content_type: file.content_type,
                })
            })
            .await
    }

    async fn file_by_id(&self, id: &str) -> Result<Option<StoredFile>> {
        let row: Option<FileRow> = sqlx::query_as(
            "SELECT id, channel_id, uploader_id, sha256, size, name, content_type, created_at
             FROM files WHERE id = ?",
        )
        .bind(id)
        .fetch_optional(&self.reader)
        .await
        .map_err(db)?;
        row.map(file_from_row).transpose()
    }

    async fn append_telemetry(&self, points: &[TelemetryPoint]) -> Result<u64> {
        telemetry::append(&self.writer, &self.series, points).await
    }

    async fn telemetry_buckets(&self, query: TelemetryQuery) -> Result<Vec<TelemetryBucket>> {
        telemetry::buckets(&self.reader, query).await
    }

    async fn telemetry_metrics(&self, device_id: &str) -> Result<Vec<String>> {
        telemetry::metrics(&self.reader, device_id).await
    }

    async fn prune_telemetry(&self, before: OffsetDateTime) -> Result<u64> {
        telemetry::prune(&self.writer, before).await
    }

    async fn create_command(&self, command: NewCommand) -> Result<Command> {
        self.writer.run(move |c| commands::create(c, command)).await
    }

    async fn command_by_id(&self, id: &str) -> Result<Option<Command>> {
        commands::by_id(&self.reader, id).await
    }

    async fn pending_commands(
        &self,
        device_id: &str,
        now: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<Command>> {
        commands::pending(&self.reader, device_id, now, limit).await
    }

    async fn mark_command_delivered(&self, id: &str, at: OffsetDateTime) -> Result<()> {
        let id = id.to_owned();
        self.writer
            .run(move |c| commands::delivered(c, &id, at))
            .await
    }

    async fn complete_command(
        &self,
        device_id: &str,
        id: &str,
        ok: bool,
        output: serde_json::Value,
        at: OffsetDateTime,
    ) -> Result<Option<Command>> {
        let (device_id, id) = (device_id.to_owned(), id.to_owned());
        self.writer
            .run(move |c| commands::complete(c, &device_id, &id, ok, &output, at))
            .await
    }
}

/// Whether the sender may post in the channel now: a member, and the channel not archived
/// (see [`Store::post_message`]).
fn may_post(c: &Connection, channel_id: &str, sender_id: &str) -> Result<()> {
    let archived: Option<bool> = stmt(
        c,
        "SELECT c.archived_at IS NOT NULL FROM channel_members m
         JOIN channels c ON c.id = m.channel_id
         WHERE m.channel_id = ? AND m.user_id = ?",
    )?
    .query_row([channel_id, sender_id], |row| row.get(0))
    .optional()
    .map_err(failed)?;
    match archived {
        None => Err(StoreError::Forbidden(NOT_A_MEMBER)),
        Some(true) => Err(StoreError::Forbidden(ARCHIVED)),
        Some(false) => Ok(()),
    }
}

/// Stores one message inside the writer's transaction (see [`Store::append_message`]).
fn append(c: &Tx<'_>, message: NewMessage) -> Result<Appended> {
    let existing: Option<MessageRow> = stmt(
        c,
        &format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages
             WHERE channel_id = ? AND sender_id = ? AND client_msg_id = ?"
        ),
    )?
    .query_row(
        params![message.channel_id, message.sender_id, message.client_msg_id],
        |row| row.try_into(),
    )
    .optional()
    .map_err(failed)?;
    if let Some(row) = existing {
        return Ok(Appended {
            message: message_from_row(row)?,
            duplicate: true,
        });
    }
    if let Some(root_id) = &message.thread_root_id {
        let root: Option<Option<String>> = stmt(
            c,
            "SELECT thread_root_id FROM messages WHERE channel_id = ? AND id = ?",
        )?
        .query_row(params![message.channel_id, root_id], |row| row.get(0))
        .optional()
        .map_err(failed)?;
        match root {
            None => return Err(StoreError::Invalid("no such thread root in this channel")),
            Some(Some(_)) => return Err(StoreError::Invalid("a reply cannot start a thread")),
            Some(None) => {}
        }
        stmt(
            c,
            "UPDATE messages SET reply_count = reply_count + 1, last_reply_at = ?
             WHERE channel_id = ? AND id = ?",
        )?
        .execute(params![ms(message.created_at), message.channel_id, root_id])
        .map_err(failed)?;
    }
    let seq = timeline::next_seq(c, &message.channel_id)?;
    let search_rowid = c
        .search()
        .insert(c, &message.body, &message.channel_id, &message.id)?;
    stmt(
        c,
        "INSERT INTO messages (id, channel_id, seq, sender_id, client_msg_id, body, created_at,
                               thread_root_id, search_rowid, flag_reasons)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )?
    .execute(params![
        message.id,
        message.channel_id,
        seq,
        message.sender_id,
        message.client_msg_id,
        message.body,
        ms(message.created_at),
        message.thread_root_id,
        search_rowid,
        (!message.flag_reasons.is_empty()).then(|| strings_json(&message.flag_reasons)),
    ])
    .map_err(conflict("message"))?;
    timeline::insert_mentions(c, &message.channel_id, seq, &message.mentions)?;
    let attachments = timeline::attach(c, &message)?;
    Ok(Appended {
        message: Message {
            created_at: from_ms(ms(message.created_at))?,
            id: message.id,
            channel_id: message.channel_id,
            seq,
            sender_id: message.sender_id,
            client_msg_id: message.client_msg_id,
            body: message.body,
            thread_root_id: message.thread_root_id,
            reply_count: 0,
            last_reply_at: None,
            edited_at: None,
            deleted_at: None,
            reactions: Vec::new(),
            attachments,
            flag_reasons: message.flag_reasons,
        },
        duplicate: false,
    })
}

pub(crate) type FileRow = (String, String, String, String, i64, String, String, i64);

pub(crate) const FILE_COLUMNS: &str =
    "id, channel_id, uploader_id, sha256, size, name, content_type, created_at";

pub(crate) fn file_from_row(row: FileRow) -> Result<StoredFile> {
    let (id, channel_id, uploader_id, sha256, size, name, content_type, created_at) = row;
    Ok(StoredFile {
        size: u64::try_from(size)
            .map_err(|_| StoreError::Corrupt(format!("file {id} size {size}")))?,
        id,
        channel_id,
        uploader_id,
        sha256,
        name,
        content_type,
        created_at: from_ms(created_at)?,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use crate::writer::BATCH_BUDGET;

    fn user(name: &str) -> NewUser {
        NewUser {
            id: format!("user-{name}"),
            username: name.to_owned(),
            password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".to_owned(),
            is_admin: false,
            created_at: OffsetDateTime::now_utc(),
        }
    }

    /// A fresh store in a temporary directory (kept while the first value lives), with
    /// alice and a channel she created.
    async fn alice_and_channel(
        name: &str,
    ) -> (tempfile::TempDir, SqliteStore, crate::User, crate::Channel) {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join(format!("{name}.db")))
            .await
            .unwrap();
        let alice = store.create_user(user("alice")).await.unwrap();
        let channel = store
            .create_channel(NewChannel {
                id: format!("channel-{name}"),
                name: name.to_owned(),
                private: true,
                created_by: alice.id.clone(),
                created_at: OffsetDateTime::now_utc(),
            })
            .await
            .unwrap();
        (dir, store, alice, channel)
    }

    fn message(channel_id: &str, sender_id: &str, n: u32, body: &str) -> NewMessage {
        NewMessage {
            id: format!("message-{n}"),
            channel_id: channel_id.to_owned(),
            sender_id: sender_id.to_owned(),
            client_msg_id: format!("m{n}"),
            body: body.to_owned(),
            created_at: OffsetDateTime::now_utc(),
            thread_root_id: None,
            mentions: Vec::new(),
            attachments: Vec::new(),
            flag_reasons: Vec::new(),
        }
    }

    /// The search index's changes wait for the end of their batch (`search.rs`); within one
    /// batch they still apply in the order of their writes, and a refused write's entry goes
    /// with it. The writes are queued while a slow write holds the writer, so that they are
    /// one batch: an append, an edit of it, an append refused after its entry was recorded
    /// (its file does not exist), an append and its deletion.
    #[tokio::test]
    async fn search_changes_of_one_batch_apply_in_order_and_a_refused_write_leaves_none() {
        let (_dir, store, alice, channel) = alice_and_channel("search").await;
        store
            .append_message(message(&channel.id, &alice.id, 0, "committed earlier"))
            .await
            .unwrap();
        let at = OffsetDateTime::now_utc();
        let by = Actor {
            user_id: alice.id.clone(),
            at,
        };
        let refused = NewMessage {
            attachments: vec!["no-such-file".to_owned()],
            ..message(&channel.id, &alice.id, 2, "charlie")
        };
        let (slow, first, edited, refused, fourth, deleted) = tokio::join!(
            store.writer.run(|_| {
                // Longer than a batch's budget: what queues meanwhile is the next batch.
                std::thread::sleep(BATCH_BUDGET * 5);
                Ok(())
            }),
            store.append_message(message(&channel.id, &alice.id, 1, "alpha")),
            store.edit_message(MessageEdit {
                channel_id: channel.id.clone(),
                message_id: "message-1".to_owned(),
                author_id: alice.id.clone(),
                body: "bravo".to_owned(),
                mentions: Vec::new(),
                at,
            }),
            store.append_message(refused),
            store.append_message(message(&channel.id, &alice.id, 3, "delta")),
            store.delete_message(&channel.id, "message-3", &by),
        );
        slow.unwrap();
        first.unwrap();
        assert!(edited.unwrap().is_some());
        assert!(refused.is_err(), "{refused:?}");
        fourth.unwrap();
        assert!(deleted.unwrap().is_some());

        let search = |text: &str| {
            store.search_messages(SearchQuery {
                user_id: alice.id.clone(),
                text: text.to_owned(),
                channel_id: None,
                sender_id: None,
                limit: 10,
            })
        };
        let ids = |found: Vec<Message>| found.into_iter().map(|m| m.id).collect::<Vec<_>>();
        assert_eq!(ids(search("committed").await.unwrap()), ["message-0"]);
        assert_eq!(ids(search("bravo").await.unwrap()), ["message-1"]);
        for gone in ["alpha", "charlie", "delta"] {
            assert!(search(gone).await.unwrap().is_empty(), "{gone} still found");
        }
        let entries: Vec<(i64, String)> = store
            .writer
            .run(|c| {
                let mut rows = c
                    .prepare(
                        "SELECT m.search_rowid, f.message_id FROM messages_fts f
                              LEFT JOIN messages m ON m.search_rowid = f.rowid ORDER BY f.rowid",
                    )
                    .map_err(failed)?;
                let rows = rows
                    .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
                    .map_err(failed)?;
                rows.collect::<rusqlite::Result<_>>().map_err(failed)
            })
            .await
            .unwrap();
        let entries: Vec<(i64, &str)> = entries.iter().map(|(r, id)| (*r, id.as_str())).collect();
        // One entry per live message, each where its message says; the refused message's
        // rowid (3) stays unused.
        assert_eq!(entries, [(1, "message-0"), (2, "message-1")]);
        // The next batch's entries take rowids above this batch's.
        store
            .append_message(message(&channel.id, &alice.id, 4, "echo"))
            .await
            .unwrap();
        assert_eq!(ids(search("echo").await.unwrap()), ["message-4"]);
        assert_eq!(ids(search("bravo").await.unwrap()), ["message-1"]);
    }

    /// A database at its `max_page_count` fails with `SQLITE_FULL`, as on a full disk: the
    /// writes are refused as [`Outage::Full`] (not an opaque backend error), never
    /// acknowledged, and once there is room again the next writes really commit (readers
    /// see them). SQLite rolls back only the statement here; the whole transaction it rolls
    /// back on a really full disk (see `writer::run_loop`) is covered by the chaos test of a
    /// full tmpfs, crates/unhidra/tests/cli/chaos_disk.rs, which needs root.
    #[tokio::test]
    async fn a_full_database_refuses_writes_as_full_and_commits_again_when_there_is_room() {
        let (_dir, store, alice, channel) = alice_and_channel("full").await;
        store
            .writer
            .run(|c| {
                let pages: i64 = c
                    .query_row("PRAGMA page_count", [], |row| row.get(0))
                    .map_err(failed)?;
                c.pragma_update(None, "max_page_count", pages + 8)
                    .map_err(failed)
            })
            .await
            .unwrap();

        let mut acked = Vec::new();
        let mut refusal = None;
        for i in 0..200 {
            let message = NewMessage {
                id: format!("message-{i}"),
                channel_id: channel.id.clone(),
                sender_id: alice.id.clone(),
                client_msg_id: format!("m{i}"),
                body: format!("{i} {}", "x".repeat(6000)),
                created_at: OffsetDateTime::now_utc(),
                thread_root_id: None,
                mentions: Vec::new(),
                attachments: Vec::new(),
                flag_reasons: Vec::new(),
            };
            match store.append_message(message).await {
                Ok(appended) => acked.push(appended.message),
                Err(err) => {
                    refusal = Some(err);
                    break;
                }
            }
        }
        assert!(
            matches!(
                refusal,
                Some(StoreError::Unavailable {
                    outage: Outage::Full,
                    ..
                })
            ),
            "{refusal:?}"
        );
        // A small write now either fits and is committed, or is refused as full.
        match store.create_user(user("carol")).await {
            Ok(_) => assert!(store.user_by_username("carol").await.unwrap().is_some()),
            Err(err) => assert!(
                matches!(
                    err,
                    StoreError::Unavailable {
                        outage: Outage::Full,
                        ..
                    }
                ),
                "{err}"
            ),
        }

        // Room again (on whichever writer connection the writer holds now).
        store
            .writer
            .run(|c| {
                c.pragma_update(None, "max_page_count", 1_073_741_823)
                    .map_err(failed)
            })
            .await
            .unwrap();
        store.create_user(user("dave")).await.unwrap();
        assert!(
            store.user_by_username("dave").await.unwrap().is_some(),
            "a write acknowledged after the full database is not visible: not committed"
        );
        let stored = store.messages_after(&channel.id, 0, 500).await.unwrap();
        let stored: Vec<(String, i64)> = stored.into_iter().map(|m| (m.id, m.seq)).collect();
        let acked: Vec<(String, i64)> = acked.into_iter().map(|m| (m.id, m.seq)).collect();
        assert_eq!(stored, acked, "the acked messages, as acked");
    }
}
