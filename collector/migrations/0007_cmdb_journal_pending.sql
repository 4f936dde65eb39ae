-- Journal entries of CMDB changes not yet written to the CMDB (see cmdb::ChangeLog). A pass
-- killed between a change and its journal entry leaves the row; the next pass writes the entry
-- once (each entry's text carries `marker`, so one already written is found, not duplicated).
-- `object_id` is NULL while a device create is in flight (recovery finds the device by serial).
CREATE TABLE cmdb_journal_pending (
    marker       TEXT PRIMARY KEY,
    device_key   TEXT NOT NULL,
    serial       TEXT NOT NULL,
    object_id    BIGINT,
    comments     TEXT NOT NULL,
    recorded_at  TEXT NOT NULL
);
