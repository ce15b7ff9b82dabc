-- The channel timeline: besides messages, every later change to a channel (an edit, a
-- deletion, a reaction, a member joining or leaving, a rename or archive) takes the channel's
-- next seq in the transaction that makes it, so seqs stay gap-free across messages and events
-- and `subscribe{since}` replays both in order. An event row holds no message text: replays
-- read the message's current state, so a deleted body is gone from everywhere.
CREATE TABLE channel_events (
    channel_id TEXT NOT NULL REFERENCES channels (id) ON DELETE CASCADE,
    seq        INTEGER NOT NULL,
    kind       TEXT NOT NULL CHECK (kind IN (
                   'message_edited', 'message_deleted', 'reaction_added', 'reaction_removed',
                   'member_joined', 'member_left', 'channel_updated')),
    actor_id   TEXT NOT NULL,
    message_id TEXT,
    -- The reaction's emoji, or the member who joined or left.
    subject    TEXT,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (channel_id, seq)
) STRICT, WITHOUT ROWID;

ALTER TABLE messages ADD COLUMN edited_at INTEGER;
-- A deleted message is a tombstone: its body is '' and its revisions and search entry are gone.
ALTER TABLE messages ADD COLUMN deleted_at INTEGER;

-- The body before each edit, for channel admins; removed with the message.
CREATE TABLE message_revisions (
    message_id TEXT NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    rev        INTEGER NOT NULL,
    body       TEXT NOT NULL,
    -- When this body was replaced.
    replaced_at INTEGER NOT NULL,
    PRIMARY KEY (message_id, rev)
) STRICT, WITHOUT ROWID;

-- A rowid table: the rowid keeps the order reactions came in.
CREATE TABLE reactions (
    message_id TEXT NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    emoji      TEXT NOT NULL,
    user_id    TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    UNIQUE (message_id, emoji, user_id)
) STRICT;

-- Who a message mentions (members only), for mention counts after a read position.
CREATE TABLE mentions (
    user_id    TEXT NOT NULL,
    channel_id TEXT NOT NULL REFERENCES channels (id) ON DELETE CASCADE,
    seq        INTEGER NOT NULL,
    PRIMARY KEY (user_id, channel_id, seq)
) STRICT, WITHOUT ROWID;
CREATE INDEX mentions_by_message ON mentions (channel_id, seq);

-- The search entry of a message is found by rowid (edits and deletions change it); the
-- index is rebuilt so that every message knows its entry's rowid.
ALTER TABLE messages ADD COLUMN search_rowid INTEGER;
DELETE FROM messages_fts;
UPDATE messages SET search_rowid = numbered.n
FROM (SELECT channel_id AS c, seq AS s, row_number() OVER (ORDER BY channel_id, seq) AS n
      FROM messages) AS numbered
WHERE messages.channel_id = numbered.c AND messages.seq = numbered.s;
INSERT INTO messages_fts (rowid, body, channel_id, message_id)
SELECT search_rowid, body, channel_id, id FROM messages;
