-- Moderation of messages by the ML workers (`ml.moderation`).
--
-- `flag`: a message the check flagged is stored as usual with the check's reasons (a JSON
-- array of strings), shown to everyone as flagged and listed for administrators.
ALTER TABLE messages ADD COLUMN flag_reasons TEXT;
CREATE INDEX messages_flagged ON messages (created_at) WHERE flag_reasons IS NOT NULL;

-- `hold`: a message the check flagged is kept out of the channel's timeline (no seq, so the
-- timeline stays gap-free) until an administrator releases it, which appends it then, or
-- rejects it, which deletes it. One held row per (channel, sender, client_msg_id), like
-- messages, so a retried publish is held once.
CREATE TABLE held_messages (
    id             TEXT PRIMARY KEY,
    channel_id     TEXT NOT NULL REFERENCES channels (id) ON DELETE CASCADE,
    sender_id      TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    client_msg_id  TEXT NOT NULL,
    body           TEXT NOT NULL,
    thread_root_id TEXT,
    mentions       TEXT NOT NULL,
    attachments    TEXT NOT NULL,
    reasons        TEXT NOT NULL,
    created_at     INTEGER NOT NULL,
    UNIQUE (channel_id, sender_id, client_msg_id)
) STRICT;
CREATE INDEX held_messages_created ON held_messages (created_at);
