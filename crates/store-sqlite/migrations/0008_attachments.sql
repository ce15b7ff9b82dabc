-- A file becomes a message's attachment when the message that names it is stored; it is
-- attached once, to one message of its channel, by its uploader.
ALTER TABLE files ADD COLUMN message_id TEXT REFERENCES messages (id) ON DELETE SET NULL;
CREATE INDEX files_by_message ON files (message_id) WHERE message_id IS NOT NULL;
