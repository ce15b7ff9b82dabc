-- Commands to devices. `seq` is the delivery order; a command is delivered (again, after a
-- reconnect) until the device answers it or it expires, and never after it was answered.
CREATE TABLE device_commands (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    id           TEXT NOT NULL UNIQUE,
    device_id    TEXT NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    sender_id    TEXT NOT NULL,
    name         TEXT NOT NULL,
    args         TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL,
    delivered_at INTEGER,
    completed_at INTEGER,
    ok           INTEGER CHECK (ok IN (0, 1)),
    output       TEXT
) STRICT;
CREATE INDEX device_commands_pending ON device_commands (device_id, seq)
    WHERE completed_at IS NULL;
