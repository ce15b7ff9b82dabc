-- A device may be linked to a channel, where its state changes and command results appear as
-- messages from the device.
ALTER TABLE devices ADD COLUMN channel_id TEXT REFERENCES channels (id) ON DELETE SET NULL;
