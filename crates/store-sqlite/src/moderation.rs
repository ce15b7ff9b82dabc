//! Moderation: messages held out of their channel until an administrator decides, and the
//! list of flagged ones.

use sqlx::SqlitePool;
use unhidra_store::{HeldMessage, Message, NewMessage, Result};

use crate::{
    db, from_ms, json_strings, message_from_row, ms, strings_json, timeline, write_err, MessageRow,
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

pub(crate) async fn hold(writer: &SqlitePool, m: NewMessage) -> Result<(HeldMessage, bool)> {
    let mut tx = writer.begin().await.map_err(db)?;
    let inserted = sqlx::query(
        "INSERT INTO held_messages (id, channel_id, sender_id, client_msg_id, body,
                                    thread_root_id, mentions, attachments, reasons, created_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
         ON CONFLICT (channel_id, sender_id, client_msg_id) DO NOTHING",
    )
    .bind(&m.id)
    .bind(&m.channel_id)
    .bind(&m.sender_id)
    .bind(&m.client_msg_id)
    .bind(&m.body)
    .bind(&m.thread_root_id)
    .bind(strings_json(&m.mentions))
    .bind(strings_json(&m.attachments))
    .bind(strings_json(&m.flag_reasons))
    .bind(ms(m.created_at))
    .execute(&mut *tx)
    .await
    .map_err(write_err("held message"))?
    .rows_affected()
        == 1;
    let row: HeldRow = sqlx::query_as(&format!(
        "SELECT {HELD_COLUMNS} FROM held_messages
         WHERE channel_id = ? AND sender_id = ? AND client_msg_id = ?"
    ))
    .bind(&m.channel_id)
    .bind(&m.sender_id)
    .bind(&m.client_msg_id)
    .fetch_one(&mut *tx)
    .await
    .map_err(db)?;
    tx.commit().await.map_err(db)?;
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

pub(crate) async fn remove(writer: &SqlitePool, id: &str) -> Result<bool> {
    let done = sqlx::query("DELETE FROM held_messages WHERE id = ?")
        .bind(id)
        .execute(writer)
        .await
        .map_err(db)?;
    Ok(done.rows_affected() == 1)
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
