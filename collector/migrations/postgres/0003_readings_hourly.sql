-- PostgreSQL dialect of ../0003_readings_hourly.sql (types only differ).
-- Hourly rollups of readings older than the raw retention: count, min, max and sum per series
-- and hour (hour = 'YYYY-MM-DDTHH', UTC). Raw rows are deleted once rolled up.
CREATE TABLE readings_hourly (
    device_id        BIGINT  NOT NULL REFERENCES devices(id),
    metric           TEXT COLLATE "C" NOT NULL,
    unit             TEXT COLLATE "C" NOT NULL,
    component_kind   TEXT COLLATE "C" NOT NULL DEFAULT '',
    component_index  BIGINT  NOT NULL DEFAULT 0,
    hour             TEXT COLLATE "C" NOT NULL,
    samples          BIGINT  NOT NULL,
    min_value        DOUBLE PRECISION NOT NULL,
    max_value        DOUBLE PRECISION NOT NULL,
    sum_value        DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (device_id, metric, unit, component_kind, component_index, hour)
);
CREATE INDEX readings_observed ON readings (observed_at);
