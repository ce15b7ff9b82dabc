-- Device telemetry. A series is one metric of one device; its points name it by a small
-- integer, so a point costs a few dozen bytes rather than two repeated strings. A point sent
-- again for the same time replaces the earlier one. Series and points go with their device.
CREATE TABLE telemetry_series (
    id        INTEGER PRIMARY KEY,
    device_id TEXT NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    metric    TEXT NOT NULL,
    UNIQUE (device_id, metric)
) STRICT;

-- Time in milliseconds. Pruning walks the series and deletes a time range of each, by the
-- primary key, so no index on time alone is needed.
CREATE TABLE telemetry (
    series_id INTEGER NOT NULL REFERENCES telemetry_series (id) ON DELETE CASCADE,
    ts        INTEGER NOT NULL,
    value     REAL NOT NULL,
    PRIMARY KEY (series_id, ts)
) STRICT, WITHOUT ROWID;
