-- groundtruth collector schema v1 (SQLite dialect; the PostgreSQL dialect is postgres/0001_init.sql).

-- Every batch ever committed, for deduplication by (agent, epoch, seq).
CREATE TABLE batches (
    agent_id     TEXT    NOT NULL,
    epoch        INTEGER NOT NULL,
    seq          INTEGER NOT NULL,
    agent_site   TEXT    NOT NULL DEFAULT '',
    devices      INTEGER NOT NULL,
    received_at  TEXT    NOT NULL,
    PRIMARY KEY (agent_id, epoch, seq)
);

-- Current state per physical device. device_key is "serial:<SERIAL>" when the device has a
-- usable serial, else "endpoint:<agent>/<endpoint_key>" (such devices are never synced).
CREATE TABLE devices (
    id               INTEGER PRIMARY KEY,
    device_key       TEXT NOT NULL UNIQUE,
    serial           TEXT NOT NULL DEFAULT '',
    vendor           TEXT NOT NULL DEFAULT '',
    model            TEXT NOT NULL DEFAULT '',
    part_number      TEXT NOT NULL DEFAULT '',
    sku              TEXT NOT NULL DEFAULT '',
    firmware         TEXT NOT NULL DEFAULT '',
    asset_tag        TEXT NOT NULL DEFAULT '',
    hostname         TEXT NOT NULL DEFAULT '',
    description      TEXT NOT NULL DEFAULT '',
    sys_object_id    TEXT NOT NULL DEFAULT '',
    uuid             TEXT NOT NULL DEFAULT '',
    device_class     TEXT NOT NULL DEFAULT '',
    protocol         TEXT NOT NULL DEFAULT '',
    agent_id         TEXT NOT NULL DEFAULT '',
    agent_site       TEXT NOT NULL DEFAULT '',
    endpoint_key     TEXT NOT NULL DEFAULT '',
    last_outcome     TEXT NOT NULL DEFAULT '',
    last_message     TEXT NOT NULL DEFAULT '',
    first_seen       TEXT NOT NULL,
    last_seen        TEXT NOT NULL
);

CREATE TABLE device_macs (
    device_id       INTEGER NOT NULL REFERENCES devices(id),
    address         TEXT NOT NULL,
    interface_name  TEXT NOT NULL DEFAULT '',
    role            TEXT NOT NULL DEFAULT '',
    last_seen       TEXT NOT NULL,
    PRIMARY KEY (device_id, address)
);

-- Reading history (retention and downsampling: issue #9).
CREATE TABLE readings (
    device_id        INTEGER NOT NULL REFERENCES devices(id),
    metric           TEXT NOT NULL,
    unit             TEXT NOT NULL,
    value            REAL NOT NULL,
    observed_at      TEXT NOT NULL,
    component_kind   TEXT NOT NULL DEFAULT '',
    component_index  INTEGER NOT NULL DEFAULT 0,
    component_label  TEXT NOT NULL DEFAULT ''
);
CREATE INDEX readings_device_metric ON readings (device_id, metric, observed_at);

-- Latest location evidence per device and source.
CREATE TABLE location_evidence (
    device_id    INTEGER NOT NULL REFERENCES devices(id),
    source       TEXT NOT NULL,
    site         TEXT NOT NULL DEFAULT '',
    room         TEXT NOT NULL DEFAULT '',
    row_name     TEXT NOT NULL DEFAULT '',
    rack         TEXT NOT NULL DEFAULT '',
    u_position   INTEGER,
    u_height     INTEGER NOT NULL DEFAULT 0,
    face         TEXT NOT NULL DEFAULT '',
    confidence   REAL NOT NULL DEFAULT 0,
    raw          TEXT NOT NULL DEFAULT '',
    observed_at  TEXT NOT NULL,
    PRIMARY KEY (device_id, source)
);

-- Things the collector refused to guess about. One open row per (device_key, kind).
CREATE TABLE exceptions (
    id           INTEGER PRIMARY KEY,
    device_key   TEXT NOT NULL,
    kind         TEXT NOT NULL,
    detail       TEXT NOT NULL,
    first_seen   TEXT NOT NULL,
    last_seen    TEXT NOT NULL,
    resolved_at  TEXT
);
CREATE UNIQUE INDEX exceptions_open ON exceptions (device_key, kind) WHERE resolved_at IS NULL;

-- Outcome of each CMDB sync per device.
CREATE TABLE cmdb_sync (
    device_key   TEXT PRIMARY KEY,
    last_sync    TEXT NOT NULL,
    changes      INTEGER NOT NULL,
    result       TEXT NOT NULL
);
