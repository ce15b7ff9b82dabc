-- Direct messages: a private channel whose member set is fixed and names it. dm_key is the
-- sorted member ids, so the same people always get the same conversation.
ALTER TABLE channels ADD COLUMN dm_key TEXT;
CREATE UNIQUE INDEX channels_by_dm_key ON channels (dm_key) WHERE dm_key IS NOT NULL;
