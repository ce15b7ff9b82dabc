-- Device telemetry: one row per (device, metric, time), the time in milliseconds. A point
-- sent again for the same time replaces the earlier one. Points go with their device.
CREATE TABLE telemetry (
    device_id TEXT NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    metric    TEXT NOT NULL,
    ts        INTEGER NOT NULL,
    value     REAL NOT NULL,
    PRIMARY KEY (device_id, metric, ts)
) STRICT, WITHOUT ROWID;
-- For pruning by age across devices.
CREATE INDEX telemetry_by_time ON telemetry (ts);
