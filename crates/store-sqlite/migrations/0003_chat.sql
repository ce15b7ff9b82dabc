-- Chat: per-channel roles, read positions, archiving, and full-text search over messages.

ALTER TABLE channels ADD COLUMN archived_at INTEGER;

ALTER TABLE channel_members ADD COLUMN role TEXT NOT NULL DEFAULT 'member'
    CHECK (role IN ('owner', 'admin', 'member'));
ALTER TABLE channel_members ADD COLUMN last_read_seq INTEGER NOT NULL DEFAULT 0;

UPDATE channel_members SET role = 'owner'
WHERE EXISTS (
    SELECT 1 FROM channels c
    WHERE c.id = channel_members.channel_id AND c.created_by = channel_members.user_id
);

-- Written in the transaction that stores the message; searched only through membership.
CREATE VIRTUAL TABLE messages_fts USING fts5(
    body,
    channel_id UNINDEXED,
    message_id UNINDEXED,
    tokenize = 'unicode61 remove_diacritics 2'
);
INSERT INTO messages_fts (body, channel_id, message_id) SELECT body, channel_id, id FROM messages;
