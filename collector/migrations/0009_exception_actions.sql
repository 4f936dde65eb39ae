-- Operator actions on exceptions (accept, ignore, pin a location), each recorded in an audit
-- trail. Portable SQL (SQLite and PostgreSQL): no autoincrement ids, BIGINT for integers.

-- Who did what to which exception, and when. `exception_id` is 0 for actions not taken on one
-- exception (unpin, unignore); `detail` is the exception's text at the time, or the pin.
CREATE TABLE exception_audit (
    at            TEXT NOT NULL,
    exception_id  BIGINT NOT NULL,
    device_key    TEXT NOT NULL,
    kind          TEXT NOT NULL,
    action        TEXT NOT NULL,
    actor         TEXT NOT NULL,
    note          TEXT NOT NULL,
    detail        TEXT NOT NULL
);
CREATE INDEX exception_audit_device ON exception_audit (device_key);

-- (device, kind) pairs an operator chose to ignore: not raised again until un-ignored.
CREATE TABLE exception_ignores (
    device_key  TEXT NOT NULL,
    kind        TEXT NOT NULL,
    actor       TEXT NOT NULL,
    at          TEXT NOT NULL,
    note        TEXT NOT NULL,
    PRIMARY KEY (device_key, kind)
);

-- Locations pinned by an operator: manual evidence, which beats every other source outright.
CREATE TABLE location_pins (
    device_key  TEXT PRIMARY KEY,
    site        TEXT NOT NULL,
    room        TEXT NOT NULL,
    row_name    TEXT NOT NULL,
    rack        TEXT NOT NULL,
    u_position  BIGINT,
    face        TEXT NOT NULL,
    actor       TEXT NOT NULL,
    at          TEXT NOT NULL,
    note        TEXT NOT NULL
);
