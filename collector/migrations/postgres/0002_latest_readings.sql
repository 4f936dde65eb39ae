-- PostgreSQL dialect of ../0002_latest_readings.sql (types only differ).
-- The newest value of every (device, metric, unit, component) series, kept at ingest so that
-- /metrics and dashboards never scan the reading history.
CREATE TABLE latest_readings (
    device_id        BIGINT  NOT NULL REFERENCES devices(id),
    metric           TEXT COLLATE "C" NOT NULL,
    unit             TEXT COLLATE "C" NOT NULL,
    component_kind   TEXT COLLATE "C" NOT NULL DEFAULT '',
    component_index  BIGINT  NOT NULL DEFAULT 0,
    component_label  TEXT COLLATE "C" NOT NULL DEFAULT '',
    value            DOUBLE PRECISION NOT NULL,
    observed_at      TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (device_id, metric, unit, component_kind, component_index)
);
