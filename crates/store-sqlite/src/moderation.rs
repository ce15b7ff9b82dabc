//! Moderation: messages held out of their channel until an administrator decides, and the
//! list of flagged ones.

use rusqlite::{params, Connection};
use sqlx::SqlitePool;
use unhidra_store::{HeldMessage, Message, NewMessage, Result};

use crate::writer::{conflict, failed, stmt};
use crate::{
    db, from_ms, json_strings, message_from_row, ms, strings_json, timeline, MessageRow,
    MESSAGE_COLUMNS,
};

type HeldRow = (
    String,
    String,
    String,
    String,
    String,
    Option<String>,
    String,
    String,
    String,
    i64,
);

const HELD_COLUMNS: &str = "id, channel_id, sender_id, client_msg_id, body, thread_root_id, \
     mentions, attachments, reasons, created_at";

fn held_from_row(row: HeldRow) -> Result<HeldMessage> {
    let (id, channel_id, sender_id, client_msg_id, body, root, mentions, files, reasons, at) = row;
    Ok(HeldMessage {
        id,
        channel_id,
        sender_id,
        client_msg_id,
        body,
        thread_root_id: root,
        mentions: json_strings(Some(&mentions))?,
        attachments: json_strings(Some(&files))?,
        reasons: json_strings(Some(&reasons))?,
        created_at: from_ms(at)?,
    })
}

pub(crate) fn hold(c: &Connection, m: NewMessage) -> Result<(HeldMessage, bool)> {
    let inserted = stmt(
        c,
        "INSERT INTO held_messages (id, channel_id, sender_id, client_msg_id, body,
                                    thread_root_id, mentions, attachments, reasons, created_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
         ON CONFLICT (channel_id, sender_id, client_msg_id) DO NOTHING",
    )?
    .execute(params![
        m.id,
        m.channel_id,
        m.sender_id,
        m.client_msg_id,
        m.body,
        m.thread_root_id,
        strings_json(&m.mentions),
        strings_json(&m.attachments),
        strings_json(&m.flag_reasons),
        ms(m.created_at)
    ])
    .map_err(conflict("held message"))?
        == 1;
    let row: HeldRow = stmt(
        c,
        &format!(
            "SELECT {HELD_COLUMNS} FROM held_messages
             WHERE channel_id = ? AND sender_id = ? AND client_msg_id = ?"
        ),
    )?
    .query_row(params![m.channel_id, m.sender_id, m.client_msg_id], |row| {
        row.try_into()
    })
    .map_err(failed)?;
    Ok((held_from_row(row)?, inserted))
}

pub(crate) async fn list(reader: &SqlitePool, limit: u32) -> Result<Vec<HeldMessage>> {
    let rows: Vec<HeldRow> = sqlx::query_as(&format!(
        "SELECT {HELD_COLUMNS} FROM held_messages ORDER BY created_at, id LIMIT ?"
    ))
    .bind(limit)
    .fetch_all(reader)
    .await
    .map_err(db)?;
    rows.into_iter().map(held_from_row).collect()
}

pub(crate) async fn by_id(reader: &SqlitePool, id: &str) -> Result<Option<HeldMessage>> {
    let row: Option<HeldRow> = sqlx::query_as(&format!(
        "SELECT {HELD_COLUMNS} FROM held_messages WHERE id = ?"
    ))
    .bind(id)
    .fetch_optional(reader)
    .await
    .map_err(db)?;
    row.map(held_from_row).transpose()
}

pub(crate) fn remove(c: &Connection, id: &str) -> Result<bool> {
    let deleted = stmt(c, "DELETE FROM held_messages WHERE id = ?")?
        .execute([id])
        .map_err(failed)?;
    Ok(deleted == 1)
}

pub(crate) async fn flagged(reader: &SqlitePool, limit: u32) -> Result<Vec<Message>> {
    let rows: Vec<MessageRow> = sqlx::query_as(&format!(
        "SELECT {MESSAGE_COLUMNS} FROM messages
         WHERE flag_reasons IS NOT NULL AND deleted_at IS NULL
         ORDER BY created_at DESC LIMIT ?"
    ))
    .bind(limit)
    .fetch_all(reader)
    .await
    .map_err(db)?;
    let messages = rows
        .into_iter()
        .map(message_from_row)
        .collect::<Result<Vec<_>>>()?;
    timeline::with_reactions_and_files(reader, messages).await
}
