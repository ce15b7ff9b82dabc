//! A channel's timeline after its messages: edits, deletions, reactions, membership and
//! channel changes, each taking the channel's next seq in the transaction that makes it.

use std::collections::HashMap;

use sqlx::{Sqlite, SqliteConnection, SqlitePool, Transaction};
use unhidra_store::{
    Actor, ChannelEvent, Message, MessageEdit, NewMessage, Reaction, ReactionOutcome, Result,
    Store, StoreError, StoredFile,
};

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

/// Takes the channel's next seq and records the event under it; returns the seq.
pub(crate) async fn record(
    tx: &mut Transaction<'_, Sqlite>,
    channel_id: &str,
    kind: Kind,
    by: &Actor,
    message_id: Option<&str>,
    subject: Option<&str>,
) -> Result<i64> {
    let (seq,): (i64,) = sqlx::query_as(
        "UPDATE channels SET last_seq = last_seq + 1 WHERE id = ? RETURNING last_seq",
    )
    .bind(channel_id)
    .fetch_optional(&mut **tx)
    .await
    .map_err(db)?
    .ok_or_else(|| StoreError::Corrupt(format!("no channel {channel_id}")))?;
    sqlx::query(
        "INSERT INTO channel_events
             (channel_id, seq, kind, actor_id, message_id, subject, created_at)
         VALUES (?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(channel_id)
    .bind(seq)
    .bind(kind.as_str())
    .bind(&by.user_id)
    .bind(message_id)
    .bind(subject)
    .bind(ms(by.at))
    .execute(&mut **tx)
    .await
    .map_err(db)?;
    Ok(seq)
}

/// Ends a membership or channel change: when the change touched no row, nothing is recorded
/// (and the transaction rolls back on drop); otherwise the event takes the channel's next
/// seq and the transaction commits. Returns that seq.
pub(crate) async fn commit_change(
    mut tx: Transaction<'_, Sqlite>,
    changed: bool,
    channel_id: &str,
    kind: Kind,
    by: &Actor,
    subject: Option<&str>,
) -> Result<Option<i64>> {
    if !changed {
        return Ok(None);
    }
    let seq = record(&mut tx, channel_id, kind, by, None, subject).await?;
    tx.commit().await.map_err(db)?;
    Ok(Some(seq))
}

/// Records that the message at `seq` mentions these members.
pub(crate) async fn insert_mentions(
    conn: &mut SqliteConnection,
    channel_id: &str,
    seq: i64,
    user_ids: &[String],
) -> Result<()> {
    for user_id in user_ids {
        sqlx::query(
            "INSERT INTO mentions (user_id, channel_id, seq) VALUES (?, ?, ?)
             ON CONFLICT DO NOTHING",
        )
        .bind(user_id)
        .bind(channel_id)
        .bind(seq)
        .execute(&mut *conn)
        .await
        .map_err(db)?;
    }
    Ok(())
}

/// Attaches the message's files (see [`NewMessage::attachments`]); returns them in order.
pub(crate) async fn attach(
    conn: &mut SqliteConnection,
    message: &NewMessage,
) -> Result<Vec<StoredFile>> {
    let mut attached = Vec::with_capacity(message.attachments.len());
    for file_id in &message.attachments {
        let row: Option<FileRow> = sqlx::query_as(&format!(
            "UPDATE files SET message_id = ?
             WHERE id = ? AND channel_id = ? AND uploader_id = ? AND message_id IS NULL
             RETURNING {FILE_COLUMNS}"
        ))
        .bind(&message.id)
        .bind(file_id)
        .bind(&message.channel_id)
        .bind(&message.sender_id)
        .fetch_optional(&mut *conn)
        .await
        .map_err(db)?;
        let Some(row) = row else {
            return Err(StoreError::Invalid(
                "an attachment is not a file you uploaded to this channel, or is attached already",
            ));
        };
        attached.push(file_from_row(row)?);
    }
    Ok(attached)
}

/// The live message's seq and search rowid, if the channel has it (and, with `author`, if
/// that user wrote it).
async fn live_message(
    tx: &mut Transaction<'_, Sqlite>,
    channel_id: &str,
    message_id: &str,
    author: Option<&str>,
) -> Result<Option<(i64, Option<i64>, String)>> {
    let row: Option<(i64, Option<i64>, String, String)> = sqlx::query_as(
        "SELECT seq, search_rowid, sender_id, body FROM messages
         WHERE channel_id = ? AND id = ? AND deleted_at IS NULL",
    )
    .bind(channel_id)
    .bind(message_id)
    .fetch_optional(&mut **tx)
    .await
    .map_err(db)?;
    Ok(row.and_then(|(seq, rowid, sender, body)| {
        author
            .is_none_or(|a| a == sender)
            .then_some((seq, rowid, body))
    }))
}

/// See [`Store::edit_message`]; returns the event's seq.
pub(crate) async fn edit(writer: &SqlitePool, edit: MessageEdit) -> Result<Option<i64>> {
    let mut tx = writer.begin().await.map_err(db)?;
    let Some((message_seq, rowid, old_body)) = live_message(
        &mut tx,
        &edit.channel_id,
        &edit.message_id,
        Some(&edit.author_id),
    )
    .await?
    else {
        return Ok(None);
    };
    sqlx::query(
        "INSERT INTO message_revisions (message_id, rev, body, replaced_at)
         VALUES (?, (SELECT COALESCE(MAX(rev), 0) + 1 FROM message_revisions WHERE message_id = ?),
                 ?, ?)",
    )
    .bind(&edit.message_id)
    .bind(&edit.message_id)
    .bind(&old_body)
    .bind(ms(edit.at))
    .execute(&mut *tx)
    .await
    .map_err(db)?;
    sqlx::query("UPDATE messages SET body = ?, edited_at = ? WHERE channel_id = ? AND id = ?")
        .bind(&edit.body)
        .bind(ms(edit.at))
        .bind(&edit.channel_id)
        .bind(&edit.message_id)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
    if let Some(rowid) = rowid {
        sqlx::query("UPDATE messages_fts SET body = ? WHERE rowid = ?")
            .bind(&edit.body)
            .bind(rowid)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
    }
    insert_mentions(&mut tx, &edit.channel_id, message_seq, &edit.mentions).await?;
    let by = Actor {
        user_id: edit.author_id.clone(),
        at: edit.at,
    };
    let seq = record(
        &mut tx,
        &edit.channel_id,
        Kind::MessageEdited,
        &by,
        Some(&edit.message_id),
        None,
    )
    .await?;
    tx.commit().await.map_err(db)?;
    Ok(Some(seq))
}

/// See [`Store::delete_message`].
pub(crate) async fn delete(
    writer: &SqlitePool,
    channel_id: &str,
    message_id: &str,
    by: &Actor,
) -> Result<Option<i64>> {
    let mut tx = writer.begin().await.map_err(db)?;
    let Some((message_seq, rowid, _)) = live_message(&mut tx, channel_id, message_id, None).await?
    else {
        return Ok(None);
    };
    sqlx::query(
        "UPDATE messages SET body = '', deleted_at = ?, search_rowid = NULL
         WHERE channel_id = ? AND id = ?",
    )
    .bind(ms(by.at))
    .bind(channel_id)
    .bind(message_id)
    .execute(&mut *tx)
    .await
    .map_err(db)?;
    for statement in [
        "DELETE FROM message_revisions WHERE message_id = ?",
        "DELETE FROM reactions WHERE message_id = ?",
        "DELETE FROM files WHERE message_id = ?",
    ] {
        sqlx::query(statement)
            .bind(message_id)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
    }
    sqlx::query("DELETE FROM mentions WHERE channel_id = ? AND seq = ?")
        .bind(channel_id)
        .bind(message_seq)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
    if let Some(rowid) = rowid {
        sqlx::query("DELETE FROM messages_fts WHERE rowid = ?")
            .bind(rowid)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
    }
    let seq = record(
        &mut tx,
        channel_id,
        Kind::MessageDeleted,
        by,
        Some(message_id),
        None,
    )
    .await?;
    tx.commit().await.map_err(db)?;
    Ok(Some(seq))
}

/// See [`Store::set_reaction`].
pub(crate) async fn react(
    writer: &SqlitePool,
    channel_id: &str,
    message_id: &str,
    emoji: &str,
    add: bool,
    by: &Actor,
) -> Result<ReactionOutcome> {
    let mut tx = writer.begin().await.map_err(db)?;
    if live_message(&mut tx, channel_id, message_id, None)
        .await?
        .is_none()
    {
        return Ok(ReactionOutcome::NoMessage);
    }
    let done = if add {
        sqlx::query(
            "INSERT INTO reactions (message_id, emoji, user_id, created_at) VALUES (?, ?, ?, ?)
             ON CONFLICT DO NOTHING",
        )
        .bind(message_id)
        .bind(emoji)
        .bind(&by.user_id)
        .bind(ms(by.at))
        .execute(&mut *tx)
        .await
    } else {
        sqlx::query("DELETE FROM reactions WHERE message_id = ? AND emoji = ? AND user_id = ?")
            .bind(message_id)
            .bind(emoji)
            .bind(&by.user_id)
            .execute(&mut *tx)
            .await
    }
    .map_err(db)?;
    if done.rows_affected() == 0 {
        return Ok(ReactionOutcome::Unchanged);
    }
    let kind = if add {
        Kind::ReactionAdded
    } else {
        Kind::ReactionRemoved
    };
    let seq = record(&mut tx, channel_id, kind, by, Some(message_id), Some(emoji)).await?;
    tx.commit().await.map_err(db)?;
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
