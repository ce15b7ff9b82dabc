//! Commands to devices: queued in order, delivered until answered or expired.

use sqlx::SqlitePool;
use time::OffsetDateTime;
use unhidra_store::{Command, NewCommand, Result, StoreError};

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

pub(crate) async fn create(writer: &SqlitePool, c: NewCommand) -> Result<Command> {
    let args = c.args.to_string();
    let (seq,): (i64,) = sqlx::query_as(
        "INSERT INTO device_commands
             (id, device_id, sender_id, name, args, created_at, expires_at)
         VALUES (?, ?, ?, ?, ?, ?, ?)
         RETURNING seq",
    )
    .bind(&c.id)
    .bind(&c.device_id)
    .bind(&c.sender_id)
    .bind(&c.name)
    .bind(&args)
    .bind(ms(c.created_at))
    .bind(ms(c.expires_at))
    .fetch_one(writer)
    .await
    .map_err(|err| match &err {
        sqlx::Error::Database(e) if e.is_foreign_key_violation() => {
            StoreError::Invalid("no such device")
        }
        sqlx::Error::Database(e) if e.is_unique_violation() => StoreError::Conflict("command"),
        _ => crate::db(err),
    })?;
    Ok(Command {
        seq,
        id: c.id,
        device_id: c.device_id,
        sender_id: c.sender_id,
        name: c.name,
        args: c.args,
        created_at: from_ms(ms(c.created_at))?,
        expires_at: from_ms(ms(c.expires_at))?,
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

pub(crate) async fn delivered(writer: &SqlitePool, id: &str, at: OffsetDateTime) -> Result<()> {
    sqlx::query(
        "UPDATE device_commands SET delivered_at = ? WHERE id = ? AND delivered_at IS NULL",
    )
    .bind(ms(at))
    .bind(id)
    .execute(writer)
    .await
    .map_err(db)?;
    Ok(())
}

pub(crate) async fn complete(
    writer: &SqlitePool,
    device_id: &str,
    id: &str,
    ok: bool,
    output: serde_json::Value,
    at: OffsetDateTime,
) -> Result<Option<Command>> {
    let row: Option<CommandRow> = sqlx::query_as(&format!(
        "UPDATE device_commands
         SET completed_at = ?, ok = ?, output = ?, delivered_at = COALESCE(delivered_at, ?)
         WHERE id = ? AND device_id = ? AND completed_at IS NULL
         RETURNING {COLUMNS}"
    ))
    .bind(ms(at))
    .bind(ok)
    .bind(output.to_string())
    .bind(ms(at))
    .bind(id)
    .bind(device_id)
    .fetch_optional(writer)
    .await
    .map_err(db)?;
    row.map(from_row).transpose()
}
