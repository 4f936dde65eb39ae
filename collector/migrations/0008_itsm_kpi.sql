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

-- ITSM tickets raised by the rules engine (collector/src/itsm). One open ticket per condition
-- (dedupe_key); it is updated while the condition lasts and resolved, with evidence, when it
-- clears. A condition that returns later opens a new ticket.
CREATE TABLE tickets (
    id           INTEGER PRIMARY KEY,
    dedupe_key   TEXT NOT NULL,
    rule         TEXT NOT NULL,
    kind         TEXT NOT NULL,
    subject      TEXT NOT NULL,
    summary      TEXT NOT NULL,
    evidence     TEXT NOT NULL,
    opened_at    TEXT NOT NULL,
    updated_at   TEXT NOT NULL,
    updates      INTEGER NOT NULL DEFAULT 0,
    resolved_at  TEXT
);
CREATE UNIQUE INDEX tickets_open ON tickets (dedupe_key) WHERE resolved_at IS NULL;
CREATE INDEX tickets_opened ON tickets (opened_at);

-- The outbox: each ticket event (open, update, resolve) for each sink (webhook, rt), delivered
-- in order per (ticket, sink), retried with backoff, dead-lettered after the last attempt.
CREATE TABLE ticket_deliveries (
    id               INTEGER PRIMARY KEY,
    ticket_id        INTEGER NOT NULL REFERENCES tickets(id),
    sink             TEXT NOT NULL,
    action           TEXT NOT NULL,
    payload          TEXT NOT NULL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    created_at       TEXT NOT NULL,
    next_attempt_at  TEXT NOT NULL,
    last_error       TEXT NOT NULL DEFAULT '',
    delivered_at     TEXT,
    dead_at          TEXT
);
CREATE INDEX ticket_deliveries_pending ON ticket_deliveries (next_attempt_at) WHERE delivered_at IS NULL AND dead_at IS NULL;

-- The ticket's id in each external system (e.g. the Request Tracker ticket number).
CREATE TABLE ticket_refs (
    ticket_id    INTEGER NOT NULL REFERENCES tickets(id),
    sink         TEXT NOT NULL,
    external_id  TEXT NOT NULL,
    PRIMARY KEY (ticket_id, sink)
);

-- What each device last said about itself beyond identity (DeviceIdentity.attributes, e.g.
-- output_status = on_battery from a UPS profile): replaced as a whole by each report that
-- carries attributes. Read by the ITSM rule ups_on_battery.
CREATE TABLE device_attributes (
    device_key   TEXT NOT NULL,
    name         TEXT NOT NULL,
    value        TEXT NOT NULL,
    observed_at  TEXT NOT NULL,
    PRIMARY KEY (device_key, name)
);
