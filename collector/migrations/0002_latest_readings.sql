-- The newest value of every (device, metric, unit, component) series, kept at ingest so that
-- /metrics and dashboards never scan the reading history.
CREATE TABLE latest_readings (
    device_id        INTEGER NOT NULL REFERENCES devices(id),
    metric           TEXT NOT NULL,
    unit             TEXT NOT NULL,
    component_kind   TEXT NOT NULL DEFAULT '',
    component_index  INTEGER NOT NULL DEFAULT 0,
    component_label  TEXT NOT NULL DEFAULT '',
    value            REAL NOT NULL,
    observed_at      TEXT NOT NULL,
    PRIMARY KEY (device_id, metric, unit, component_kind, component_index)
);
