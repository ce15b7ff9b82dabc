//! Commands to devices: queued in order, delivered until answered or expired.

use rusqlite::{params, Connection, OptionalExtension};
use sqlx::SqlitePool;
use time::OffsetDateTime;
use unhidra_store::{Command, NewCommand, Result, StoreError};

use crate::writer::{failed, stmt, violation, Violation};
use crate::{db, from_ms, from_ms_opt, ms};

type CommandRow = (
    i64,
    String,
    String,
    String,
    String,
    String,
    i64,
    i64,
    Option<i64>,
    Option<i64>,
    Option<bool>,
    Option<String>,
);

const COLUMNS: &str = "seq, id, device_id, sender_id, name, args, created_at, expires_at, \
     delivered_at, completed_at, ok, output";

fn json(raw: &str, id: &str) -> Result<serde_json::Value> {
    serde_json::from_str(raw).map_err(|e| StoreError::Corrupt(format!("command {id}: {e}")))
}

fn from_row(row: CommandRow) -> Result<Command> {
    let (
        seq,
        id,
        device_id,
        sender_id,
        name,
        args,
        created,
        expires,
        delivered,
        completed,
        ok,
        out,
    ) = row;
    Ok(Command {
        seq,
        args: json(&args, &id)?,
        output: out.map(|o| json(&o, &id)).transpose()?,
        id,
        device_id,
        sender_id,
        name,
        created_at: from_ms(created)?,
        expires_at: from_ms(expires)?,
        delivered_at: from_ms_opt(delivered)?,
        completed_at: from_ms_opt(completed)?,
        ok,
    })
}

pub(crate) fn create(c: &Connection, command: NewCommand) -> Result<Command> {
    let seq: i64 = stmt(
        c,
        "INSERT INTO device_commands
             (id, device_id, sender_id, name, args, created_at, expires_at)
         VALUES (?, ?, ?, ?, ?, ?, ?)
         RETURNING seq",
    )?
    .query_row(
        params![
            command.id,
            command.device_id,
            command.sender_id,
            command.name,
            command.args.to_string(),
            ms(command.created_at),
            ms(command.expires_at)
        ],
        |row| row.get(0),
    )
    .map_err(|err| match violation(&err) {
        Some(Violation::ForeignKey) => StoreError::Invalid("no such device"),
        Some(Violation::Unique) => StoreError::Conflict("command"),
        None => failed(err),
    })?;
    Ok(Command {
        seq,
        created_at: from_ms(ms(command.created_at))?,
        expires_at: from_ms(ms(command.expires_at))?,
        id: command.id,
        device_id: command.device_id,
        sender_id: command.sender_id,
        name: command.name,
        args: command.args,
        delivered_at: None,
        completed_at: None,
        ok: None,
        output: None,
    })
}

pub(crate) async fn by_id(reader: &SqlitePool, id: &str) -> Result<Option<Command>> {
    let row: Option<CommandRow> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM device_commands WHERE id = ?"
    ))
    .bind(id)
    .fetch_optional(reader)
    .await
    .map_err(db)?;
    row.map(from_row).transpose()
}

pub(crate) async fn pending(
    reader: &SqlitePool,
    device_id: &str,
    now: OffsetDateTime,
    limit: u32,
) -> Result<Vec<Command>> {
    let rows: Vec<CommandRow> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM device_commands
         WHERE device_id = ? AND completed_at IS NULL AND expires_at > ?
         ORDER BY seq LIMIT ?"
    ))
    .bind(device_id)
    .bind(ms(now))
    .bind(i64::from(limit))
    .fetch_all(reader)
    .await
    .map_err(db)?;
    rows.into_iter().map(from_row).collect()
}

pub(crate) fn delivered(c: &Connection, id: &str, at: OffsetDateTime) -> Result<()> {
    stmt(
        c,
        "UPDATE device_commands SET delivered_at = ? WHERE id = ? AND delivered_at IS NULL",
    )?
    .execute(params![ms(at), id])
    .map_err(failed)?;
    Ok(())
}

pub(crate) fn complete(
    c: &Connection,
    device_id: &str,
    id: &str,
    ok: bool,
    output: &serde_json::Value,
    at: OffsetDateTime,
) -> Result<Option<Command>> {
    let row: Option<CommandRow> = stmt(
        c,
        &format!(
            "UPDATE device_commands
             SET completed_at = ?1, ok = ?2, output = ?3, delivered_at = COALESCE(delivered_at, ?1)
             WHERE id = ?4 AND device_id = ?5 AND completed_at IS NULL
             RETURNING {COLUMNS}"
        ),
    )?
    .query_row(
        params![ms(at), ok, output.to_string(), id, device_id],
        |row| row.try_into(),
    )
    .optional()
    .map_err(failed)?;
    row.map(from_row).transpose()
}
