-- Integration health, ITSM tickets and the physical-context API (issue #13). Portable SQL (SQLite
-- and PostgreSQL): TEXT timestamps in RFC 3339 UTC, no engine-specific types.

-- The CMDB's own id of each device the collector knows, so the physical-context API can answer
-- "where is CMDB device 1234"; refreshed from the CMDB by serial.
CREATE TABLE cmdb_links (
    device_key  TEXT PRIMARY KEY,
    cmdb_id     TEXT NOT NULL,
    linked_at   TEXT NOT NULL
);
CREATE INDEX cmdb_links_id ON cmdb_links (cmdb_id);

-- One row per KPI (and label, e.g. an exception kind) per computation, for the trend charts.
-- Old rows are thinned by the collector (see kpi.rs).
CREATE TABLE kpi_history (
    kpi          TEXT NOT NULL,
    label        TEXT NOT NULL DEFAULT '',
    computed_at  TEXT NOT NULL,
    value        DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (kpi, label, computed_at)
);
CREATE INDEX kpi_history_at ON kpi_history (computed_at);
