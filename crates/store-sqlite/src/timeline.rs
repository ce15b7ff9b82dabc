//! A channel's timeline after its messages: edits, deletions, reactions, membership and
//! channel changes, each taking the channel's next seq in the transaction that makes it.

use std::collections::HashMap;

use rusqlite::{params, Connection, OptionalExtension};
use sqlx::SqlitePool;
use unhidra_store::{
    Actor, ChannelEvent, Message, MessageEdit, NewMessage, Reaction, ReactionOutcome, Result,
    Store, StoreError, StoredFile,
};

use crate::writer::{failed, stmt, Tx};
use crate::{
    db, file_from_row, from_ms, message_from_row, ms, FileRow, MessageRow, SqliteStore,
    FILE_COLUMNS, MESSAGE_COLUMNS,
};

/// The `kind` column of `channel_events`.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Kind {
    MessageEdited,
    MessageDeleted,
    ReactionAdded,
    ReactionRemoved,
    MemberJoined,
    MemberLeft,
    ChannelUpdated,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Self::MessageEdited => "message_edited",
            Self::MessageDeleted => "message_deleted",
            Self::ReactionAdded => "reaction_added",
            Self::ReactionRemoved => "reaction_removed",
            Self::MemberJoined => "member_joined",
            Self::MemberLeft => "member_left",
            Self::ChannelUpdated => "channel_updated",
        }
    }
}

/// Takes the channel's next seq (messages and events share the sequence).
///
/// A read and an update rather than `UPDATE … RETURNING`, which builds a temporary table for
/// its one row: `perf` found that in a sixth of the writer's time under `store-append`.
pub(crate) fn next_seq(c: &Connection, channel_id: &str) -> Result<i64> {
    let last: i64 = stmt(c, "SELECT last_seq FROM channels WHERE id = ?")?
        .query_row([channel_id], |row| row.get(0))
        .optional()
        .map_err(failed)?
        .ok_or_else(|| StoreError::Corrupt(format!("no channel {channel_id}")))?;
    let seq = last + 1;
    stmt(c, "UPDATE channels SET last_seq = ? WHERE id = ?")?
        .execute(params![seq, channel_id])
        .map_err(failed)?;
    Ok(seq)
}

/// Takes the channel's next seq and records the event under it; returns the seq.
fn record(
    c: &Connection,
    channel_id: &str,
    kind: Kind,
    by: &Actor,
    message_id: Option<&str>,
    subject: Option<&str>,
) -> Result<i64> {
    let seq = next_seq(c, channel_id)?;
    stmt(
        c,
        "INSERT INTO channel_events
             (channel_id, seq, kind, actor_id, message_id, subject, created_at)
         VALUES (?, ?, ?, ?, ?, ?, ?)",
    )?
    .execute(params![
        channel_id,
        seq,
        kind.as_str(),
        by.user_id,
        message_id,
        subject,
        ms(by.at)
    ])
    .map_err(failed)?;
    Ok(seq)
}

/// Ends a membership or channel change: when the change touched no row, nothing is recorded;
/// otherwise the event takes the channel's next seq. Returns that seq.
pub(crate) fn record_change(
    c: &Connection,
    changed: bool,
    channel_id: &str,
    kind: Kind,
    by: &Actor,
    subject: Option<&str>,
) -> Result<Option<i64>> {
    if !changed {
        return Ok(None);
    }
    record(c, channel_id, kind, by, None, subject).map(Some)
}

/// Records that the message at `seq` mentions these members.
pub(crate) fn insert_mentions(
    c: &Connection,
    channel_id: &str,
    seq: i64,
    user_ids: &[String],
) -> Result<()> {
    if user_ids.is_empty() {
        return Ok(());
    }
    let mut insert = stmt(
        c,
        "INSERT INTO mentions (user_id, channel_id, seq) VALUES (?, ?, ?)
         ON CONFLICT DO NOTHING",
    )?;
    for user_id in user_ids {
        insert
            .execute(params![user_id, channel_id, seq])
            .map_err(failed)?;
    }
    Ok(())
}

/// Attaches the message's files (see [`NewMessage::attachments`]); returns them in order.
pub(crate) fn attach(c: &Connection, message: &NewMessage) -> Result<Vec<StoredFile>> {
    if message.attachments.is_empty() {
        return Ok(Vec::new());
    }
    let mut update = stmt(
        c,
        &format!(
            "UPDATE files SET message_id = ?
             WHERE id = ? AND channel_id = ? AND uploader_id = ? AND message_id IS NULL
             RETURNING {FILE_COLUMNS}"
        ),
    )?;
    let mut attached = Vec::with_capacity(message.attachments.len());
    for file_id in &message.attachments {
        let row: Option<FileRow> = update
            .query_row(
                params![message.id, file_id, message.channel_id, message.sender_id],
                |row| row.try_into(),
            )
            .optional()
            .map_err(failed)?;
        let Some(row) = row else {
            return Err(StoreError::Invalid(
                "an attachment is not a file you uploaded to this channel, or is attached already",
            ));
        };
        attached.push(file_from_row(row)?);
    }
    Ok(attached)
}

/// The live message's seq, search rowid and body, if the channel has it (and, with `author`,
/// if that user wrote it).
fn live_message(
    c: &Connection,
    channel_id: &str,
    message_id: &str,
    author: Option<&str>,
) -> Result<Option<(i64, Option<i64>, String)>> {
    let row: Option<(i64, Option<i64>, String, String)> = stmt(
        c,
        "SELECT seq, search_rowid, sender_id, body FROM messages
         WHERE channel_id = ? AND id = ? AND deleted_at IS NULL",
    )?
    .query_row([channel_id, message_id], |row| row.try_into())
    .optional()
    .map_err(failed)?;
    Ok(row.and_then(|(seq, rowid, sender, body)| {
        author
            .is_none_or(|a| a == sender)
            .then_some((seq, rowid, body))
    }))
}

/// See [`Store::edit_message`]; returns the event's seq.
pub(crate) fn edit(c: &Tx<'_>, edit: &MessageEdit) -> Result<Option<i64>> {
    let Some((message_seq, rowid, old_body)) =
        live_message(c, &edit.channel_id, &edit.message_id, Some(&edit.author_id))?
    else {
        return Ok(None);
    };
    stmt(
        c,
        "INSERT INTO message_revisions (message_id, rev, body, replaced_at)
         VALUES (?1, (SELECT COALESCE(MAX(rev), 0) + 1 FROM message_revisions WHERE message_id = ?1),
                 ?2, ?3)",
    )?
    .execute(params![edit.message_id, old_body, ms(edit.at)])
    .map_err(failed)?;
    stmt(
        c,
        "UPDATE messages SET body = ?, edited_at = ? WHERE channel_id = ? AND id = ?",
    )?
    .execute(params![
        edit.body,
        ms(edit.at),
        edit.channel_id,
        edit.message_id
    ])
    .map_err(failed)?;
    if let Some(rowid) = rowid {
        c.search().update(rowid, &edit.body);
    }
    insert_mentions(c, &edit.channel_id, message_seq, &edit.mentions)?;
    let by = Actor {
        user_id: edit.author_id.clone(),
        at: edit.at,
    };
    let seq = record(
        c,
        &edit.channel_id,
        Kind::MessageEdited,
        &by,
        Some(&edit.message_id),
        None,
    )?;
    Ok(Some(seq))
}

/// See [`Store::delete_message`].
pub(crate) fn delete(
    c: &Tx<'_>,
    channel_id: &str,
    message_id: &str,
    by: &Actor,
) -> Result<Option<i64>> {
    let Some((message_seq, rowid, _)) = live_message(c, channel_id, message_id, None)? else {
        return Ok(None);
    };
    stmt(
        c,
        "UPDATE messages SET body = '', deleted_at = ?, search_rowid = NULL
         WHERE channel_id = ? AND id = ?",
    )?
    .execute(params![ms(by.at), channel_id, message_id])
    .map_err(failed)?;
    for statement in [
        "DELETE FROM message_revisions WHERE message_id = ?",
        "DELETE FROM reactions WHERE message_id = ?",
        "DELETE FROM files WHERE message_id = ?",
    ] {
        stmt(c, statement)?.execute([message_id]).map_err(failed)?;
    }
    stmt(c, "DELETE FROM mentions WHERE channel_id = ? AND seq = ?")?
        .execute(params![channel_id, message_seq])
        .map_err(failed)?;
    if let Some(rowid) = rowid {
        c.search().delete(rowid);
    }
    record(
        c,
        channel_id,
        Kind::MessageDeleted,
        by,
        Some(message_id),
        None,
    )
    .map(Some)
}

/// See [`Store::set_reaction`].
pub(crate) fn react(
    c: &Connection,
    channel_id: &str,
    message_id: &str,
    emoji: &str,
    add: bool,
    by: &Actor,
) -> Result<ReactionOutcome> {
    if live_message(c, channel_id, message_id, None)?.is_none() {
        return Ok(ReactionOutcome::NoMessage);
    }
    let changed = if add {
        stmt(
            c,
            "INSERT INTO reactions (message_id, emoji, user_id, created_at) VALUES (?, ?, ?, ?)
             ON CONFLICT DO NOTHING",
        )?
        .execute(params![message_id, emoji, by.user_id, ms(by.at)])
    } else {
        stmt(
            c,
            "DELETE FROM reactions WHERE message_id = ? AND emoji = ? AND user_id = ?",
        )?
        .execute(params![message_id, emoji, by.user_id])
    }
    .map_err(failed)?;
    if changed == 0 {
        return Ok(ReactionOutcome::Unchanged);
    }
    let kind = if add {
        Kind::ReactionAdded
    } else {
        Kind::ReactionRemoved
    };
    let seq = record(c, channel_id, kind, by, Some(message_id), Some(emoji))?;
    Ok(ReactionOutcome::Changed(seq))
}

/// Most message ids in one `IN (…)` list.
const IDS_PER_QUERY: usize = 500;

/// Fills in the messages' reactions and attachments (two queries per 500 messages).
pub(crate) async fn with_reactions_and_files(
    reader: &SqlitePool,
    mut messages: Vec<Message>,
) -> Result<Vec<Message>> {
    let mut by_message: HashMap<String, Vec<Reaction>> = HashMap::new();
    let mut files: HashMap<String, Vec<StoredFile>> = HashMap::new();
    for chunk in messages.chunks(IDS_PER_QUERY) {
        let placeholders = vec!["?"; chunk.len()].join(", ");
        let sql = format!(
            "SELECT message_id, {FILE_COLUMNS} FROM files WHERE message_id IN ({placeholders})
             ORDER BY rowid"
        );
        let mut query = sqlx::query(&sql);
        for message in chunk {
            query = query.bind(&message.id);
        }
        for row in query.fetch_all(reader).await.map_err(db)? {
            use sqlx::Row;
            let message_id: String = row.try_get(0).map_err(db)?;
            let file: FileRow = (
                row.try_get(1).map_err(db)?,
                row.try_get(2).map_err(db)?,
                row.try_get(3).map_err(db)?,
                row.try_get(4).map_err(db)?,
                row.try_get(5).map_err(db)?,
                row.try_get(6).map_err(db)?,
                row.try_get(7).map_err(db)?,
                row.try_get(8).map_err(db)?,
            );
            files
                .entry(message_id)
                .or_default()
                .push(file_from_row(file)?);
        }
    }
    for chunk in messages.chunks(IDS_PER_QUERY) {
        let placeholders = vec!["?"; chunk.len()].join(", ");
        let sql = format!(
            "SELECT message_id, emoji, user_id FROM reactions WHERE message_id IN ({placeholders})
             ORDER BY rowid"
        );
        let mut query = sqlx::query_as::<_, (String, String, String)>(&sql);
        for message in chunk {
            query = query.bind(&message.id);
        }
        for (message_id, emoji, user_id) in query.fetch_all(reader).await.map_err(db)? {
            let reactions = by_message.entry(message_id).or_default();
            match reactions.iter_mut().find(|r| r.emoji == emoji) {
                Some(reaction) => reaction.user_ids.push(user_id),
                None => reactions.push(Reaction {
                    emoji,
                    user_ids: vec![user_id],
                }),
            }
        }
    }
    for message in &mut messages {
        if let Some(reactions) = by_message.remove(&message.id) {
            message.reactions = reactions;
        }
        if let Some(attached) = files.remove(&message.id) {
            message.attachments = attached;
        }
    }
    Ok(messages)
}

type EventRow = (i64, String, String, Option<String>, Option<String>, i64);

/// See [`Store::events_after`]: messages and events after `after_seq`, merged by seq.
pub(crate) async fn events_after(
    store: &SqliteStore,
    channel_id: &str,
    after_seq: i64,
    limit: u32,
) -> Result<Vec<ChannelEvent>> {
    let events: Vec<EventRow> = sqlx::query_as(
        "SELECT seq, kind, actor_id, message_id, subject, created_at FROM channel_events
         WHERE channel_id = ? AND seq > ? ORDER BY seq LIMIT ?",
    )
    .bind(channel_id)
    .bind(after_seq)
    .bind(i64::from(limit))
    .fetch_all(&store.reader)
    .await
    .map_err(db)?;
    let messages = store.messages_after(channel_id, after_seq, limit).await?;

    // Edit events carry the message's current state.
    let edited: Vec<&str> = events
        .iter()
        .filter(|e| e.1 == Kind::MessageEdited.as_str())
        .filter_map(|e| e.3.as_deref())
        .collect();
    let mut current = HashMap::new();
    for chunk in edited.chunks(IDS_PER_QUERY) {
        let placeholders = vec!["?"; chunk.len()].join(", ");
        let sql = format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages WHERE channel_id = ? AND id IN ({placeholders})"
        );
        let mut query = sqlx::query_as::<_, MessageRow>(&sql).bind(channel_id);
        for id in chunk {
            query = query.bind(*id);
        }
        let rows = query.fetch_all(&store.reader).await.map_err(db)?;
        let found = rows
            .into_iter()
            .map(message_from_row)
            .collect::<Result<Vec<_>>>()?;
        for message in with_reactions_and_files(&store.reader, found).await? {
            current.insert(message.id.clone(), message);
        }
    }
    let channel = if events.iter().any(|e| e.1 == Kind::ChannelUpdated.as_str()) {
        store.channel_by_id(channel_id).await?
    } else {
        None
    };

    let mut timeline: Vec<ChannelEvent> = messages.into_iter().map(ChannelEvent::Message).collect();
    for (seq, kind, actor_id, message_id, subject, at) in events {
        let at = from_ms(at)?;
        let corrupt = || StoreError::Corrupt(format!("channel event {channel_id}/{seq}"));
        let event = match kind.as_str() {
            "message_edited" => ChannelEvent::MessageEdited {
                seq,
                message: message_id
                    .and_then(|id| current.get(&id).cloned())
                    .ok_or_else(corrupt)?,
            },
            "message_deleted" => ChannelEvent::MessageDeleted {
                seq,
                message_id: message_id.ok_or_else(corrupt)?,
                actor_id,
                at,
            },
            "reaction_added" | "reaction_removed" => ChannelEvent::Reaction {
                seq,
                message_id: message_id.ok_or_else(corrupt)?,
                user_id: actor_id,
                emoji: subject.ok_or_else(corrupt)?,
                added: kind == "reaction_added",
                at,
            },
            "member_joined" | "member_left" => ChannelEvent::Member {
                seq,
                user_id: subject.ok_or_else(corrupt)?,
                actor_id,
                joined: kind == "member_joined",
                at,
            },
            "channel_updated" => ChannelEvent::ChannelUpdated {
                seq,
                channel: channel.clone().ok_or_else(corrupt)?,
                actor_id,
            },
            _ => return Err(corrupt()),
        };
        timeline.push(event);
    }
    timeline.sort_by_key(ChannelEvent::seq);
    timeline.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    Ok(timeline)
}
