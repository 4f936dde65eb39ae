-- Hourly rollups of readings older than the raw retention: count, min, max and sum per series
-- and hour (hour = 'YYYY-MM-DDTHH', UTC). Raw rows are deleted once rolled up.
CREATE TABLE readings_hourly (
    device_id        INTEGER NOT NULL REFERENCES devices(id),
    metric           TEXT NOT NULL,
    unit             TEXT NOT NULL,
    component_kind   TEXT NOT NULL DEFAULT '',
    component_index  INTEGER NOT NULL DEFAULT 0,
    hour             TEXT NOT NULL,
    samples          INTEGER NOT NULL,
    min_value        REAL NOT NULL,
    max_value        REAL NOT NULL,
    sum_value        REAL NOT NULL,
    PRIMARY KEY (device_id, metric, unit, component_kind, component_index, hour)
);
CREATE INDEX readings_observed ON readings (observed_at);
