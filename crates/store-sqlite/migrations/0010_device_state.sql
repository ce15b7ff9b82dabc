-- What a device last said about itself, kept across restarts (whether it is online is the
-- live connections' business).
ALTER TABLE devices ADD COLUMN last_seen_at INTEGER;
ALTER TABLE devices ADD COLUMN firmware_version TEXT;
ALTER TABLE devices ADD COLUMN free_memory INTEGER;
