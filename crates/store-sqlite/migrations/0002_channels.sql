-- Channels, their members and their messages. A message's seq is the channel's last_seq + 1,
-- assigned in the transaction that stores it, so seqs are gap-free per channel.

CREATE TABLE channels (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL UNIQUE,
    private    INTEGER NOT NULL CHECK (private IN (0, 1)),
    created_by TEXT NOT NULL REFERENCES users (id),
    created_at INTEGER NOT NULL,
    last_seq   INTEGER NOT NULL DEFAULT 0
) STRICT;

CREATE TABLE channel_members (
    channel_id TEXT NOT NULL REFERENCES channels (id) ON DELETE CASCADE,
    user_id    TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    joined_at  INTEGER NOT NULL,
    PRIMARY KEY (channel_id, user_id)
) STRICT, WITHOUT ROWID;
CREATE INDEX channel_members_by_user ON channel_members (user_id);

CREATE TABLE messages (
    channel_id    TEXT NOT NULL REFERENCES channels (id) ON DELETE CASCADE,
    seq           INTEGER NOT NULL,
    id            TEXT NOT NULL UNIQUE,
    sender_id     TEXT NOT NULL,
    client_msg_id TEXT NOT NULL,
    body          TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    PRIMARY KEY (channel_id, seq),
    UNIQUE (channel_id, sender_id, client_msg_id)
) STRICT, WITHOUT ROWID;
