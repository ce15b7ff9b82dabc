-- Files uploaded to channels. The bytes live in the data dir, content-addressed by SHA-256
-- (files/sha256/<first 2 hex>/<64 hex>); a row names one upload of them, so the same content
-- uploaded twice is two rows and one blob. A file goes with its channel.

CREATE TABLE files (
    id           TEXT PRIMARY KEY,
    channel_id   TEXT NOT NULL REFERENCES channels (id) ON DELETE CASCADE,
    uploader_id  TEXT NOT NULL,
    sha256       TEXT NOT NULL CHECK (length(sha256) = 64),
    size         INTEGER NOT NULL CHECK (size >= 0),
    name         TEXT NOT NULL,
    content_type TEXT NOT NULL,
    created_at   INTEGER NOT NULL
) STRICT;
CREATE INDEX files_by_channel ON files (channel_id, created_at);
-- Which rows still use a blob (for removing blobs nobody names).
CREATE INDEX files_by_sha256 ON files (sha256);
