-- CMDB writes that failed after the last retry. One open row per (device, reason); `attempts`
-- counts the passes that failed. The next sync pass recomputes the plan from the CMDB, so the write
-- is retried then; a pass in which the device syncs without failure marks its rows resolved.
CREATE TABLE dead_letters (
    id            INTEGER PRIMARY KEY,
    device_key    TEXT NOT NULL,
    reason        TEXT NOT NULL,
    attempts      INTEGER NOT NULL DEFAULT 1,
    first_failed  TEXT NOT NULL,
    last_failed   TEXT NOT NULL,
    resolved_at   TEXT
);
CREATE UNIQUE INDEX dead_letters_open ON dead_letters (device_key, reason) WHERE resolved_at IS NULL;
