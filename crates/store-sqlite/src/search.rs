//! The search index's writes, which wait for the end of the writer's batch.
//!
//! FTS5 writes the terms it has buffered to disk whenever a savepoint opens in a transaction
//! that has written to it, and the writer opens a savepoint per write: with the index written
//! inside each message's savepoint, every message became a segment of its own on disk, and
//! FTS5 kept merging them (`store-append --prose`, bodies of words: 74–83 µs per message on
//! the writer thread with the index written inside each savepoint, 36–38 µs since). So a
//! write records what the index should do ([`Pending`]); a refused write's changes are
//! dropped with its savepoint; the rest are applied in order after the batch's last write
//! and before its commit, in the same transaction: one flush per batch, and the index
//! commits or rolls back with the messages it indexes.
//!
//! Searches read committed data on other connections, so they never see the gap between a
//! write and its index change.

use rusqlite::{params, Connection, OptionalExtension};
use unhidra_store::Result;

use crate::writer::{failed, stmt};

/// One change to `messages_fts`.
enum Change {
    Insert {
        rowid: i64,
        body: String,
        channel_id: String,
        message_id: String,
    },
    Update {
        rowid: i64,
        body: String,
    },
    Delete {
        rowid: i64,
    },
}

/// The search index changes of the batch in progress, in the order they were made.
#[derive(Default)]
pub(crate) struct Pending {
    changes: Vec<Change>,
    /// The rowid the next new entry takes; read from the index at the batch's first insert.
    next_rowid: Option<i64>,
}

impl Pending {
    /// Records a new entry for a message and returns its rowid (the message keeps it as
    /// `search_rowid`). Rowids are taken above every entry in the index, and one taken by a
    /// write that is then refused stays unused.
    pub(crate) fn insert(
        &mut self,
        c: &Connection,
        body: &str,
        channel_id: &str,
        message_id: &str,
    ) -> Result<i64> {
        let rowid = match self.next_rowid {
            Some(rowid) => rowid,
            None => {
                let last: Option<i64> = stmt(
                    c,
                    "SELECT rowid FROM messages_fts ORDER BY rowid DESC LIMIT 1",
                )?
                .query_row([], |row| row.get(0))
                .optional()
                .map_err(failed)?;
                last.unwrap_or(0) + 1
            }
        };
        self.next_rowid = Some(rowid + 1);
        self.changes.push(Change::Insert {
            rowid,
            body: body.to_owned(),
            channel_id: channel_id.to_owned(),
            message_id: message_id.to_owned(),
        });
        Ok(rowid)
    }

    /// Records that the entry at `rowid` now indexes `body`.
    pub(crate) fn update(&mut self, rowid: i64, body: &str) {
        self.changes.push(Change::Update {
            rowid,
            body: body.to_owned(),
        });
    }

    /// Records that the entry at `rowid` goes.
    pub(crate) fn delete(&mut self, rowid: i64) {
        self.changes.push(Change::Delete { rowid });
    }

    /// How many changes are recorded: where a write's own changes start.
    pub(crate) fn mark(&self) -> usize {
        self.changes.len()
    }

    /// Drops the changes recorded since `mark` (their write was refused).
    pub(crate) fn drop_since(&mut self, mark: usize) {
        self.changes.truncate(mark);
    }

    /// Forgets everything (the batch ended); the next batch reads the next rowid afresh.
    pub(crate) fn clear(&mut self) {
        self.changes.clear();
        self.next_rowid = None;
    }

    /// Applies the recorded changes in order, inside the batch's transaction, and forgets them
    /// (the batch's end then [`clear`](Self::clear)s the rest).
    pub(crate) fn apply(&mut self, c: &Connection) -> rusqlite::Result<()> {
        for change in self.changes.drain(..) {
            match change {
                Change::Insert {
                    rowid,
                    body,
                    channel_id,
                    message_id,
                } => c
                    .prepare_cached(
                        "INSERT INTO messages_fts (rowid, body, channel_id, message_id)
                         VALUES (?, ?, ?, ?)",
                    )?
                    .execute(params![rowid, body, channel_id, message_id])?,
                Change::Update { rowid, body } => c
                    .prepare_cached("UPDATE messages_fts SET body = ? WHERE rowid = ?")?
                    .execute(params![body, rowid])?,
                Change::Delete { rowid } => c
                    .prepare_cached("DELETE FROM messages_fts WHERE rowid = ?")?
                    .execute([rowid])?,
            };
        }
        Ok(())
    }
}
