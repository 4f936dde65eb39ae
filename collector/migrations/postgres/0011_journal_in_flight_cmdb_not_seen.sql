-- PostgreSQL dialect of ../0011_journal_in_flight_cmdb_not_seen.sql (types only differ).
-- Issue #10: a journal entry's changes whose request may be in flight, recorded before the
-- request goes out and checked against the CMDB by the next pass (JSON, see cmdb::ChangeLog);
-- NULL when every change of the entry is known to have been applied.
ALTER TABLE cmdb_journal_pending ADD COLUMN in_flight TEXT COLLATE "C";

-- Issue #13: CMDB devices in the collector's sites that match no device in the store (KPI
-- `cmdb_not_seen`), replaced as a whole by each CMDB refresh. `site` is the CMDB site's name.
CREATE TABLE cmdb_not_seen (
    cmdb_id     TEXT COLLATE "C" PRIMARY KEY,
    site        TEXT COLLATE "C" NOT NULL,
    name        TEXT COLLATE "C" NOT NULL,
    serial      TEXT COLLATE "C" NOT NULL,
    checked_at  TEXT COLLATE "C" NOT NULL
);
