-- PostgreSQL dialect of ../0009_exception_actions.sql (types only differ).
-- Operator actions on exceptions (accept, ignore, pin a location), each recorded in an audit
-- trail. Portable SQL (SQLite and PostgreSQL): no autoincrement ids, BIGINT for integers.

-- Who did what to which exception, and when. `exception_id` is 0 for actions not taken on one
-- exception (unpin, unignore); `detail` is the exception's text at the time, or the pin.
CREATE TABLE exception_audit (
    at            TEXT COLLATE "C" NOT NULL,
    exception_id  BIGINT NOT NULL,
    device_key    TEXT COLLATE "C" NOT NULL,
    kind          TEXT COLLATE "C" NOT NULL,
    action        TEXT COLLATE "C" NOT NULL,
    actor         TEXT COLLATE "C" NOT NULL,
    note          TEXT COLLATE "C" NOT NULL,
    detail        TEXT COLLATE "C" NOT NULL
);
CREATE INDEX exception_audit_device ON exception_audit (device_key);

-- (device, kind) pairs an operator chose to ignore: not raised again until un-ignored.
CREATE TABLE exception_ignores (
    device_key  TEXT COLLATE "C" NOT NULL,
    kind        TEXT COLLATE "C" NOT NULL,
    actor       TEXT COLLATE "C" NOT NULL,
    at          TEXT COLLATE "C" NOT NULL,
    note        TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (device_key, kind)
);

-- Locations pinned by an operator: manual evidence, which beats every other source outright.
CREATE TABLE location_pins (
    device_key  TEXT COLLATE "C" PRIMARY KEY,
    site        TEXT COLLATE "C" NOT NULL,
    room        TEXT COLLATE "C" NOT NULL,
    row_name    TEXT COLLATE "C" NOT NULL,
    rack        TEXT COLLATE "C" NOT NULL,
    u_position  BIGINT,
    face        TEXT COLLATE "C" NOT NULL,
    actor       TEXT COLLATE "C" NOT NULL,
    at          TEXT COLLATE "C" NOT NULL,
    note        TEXT COLLATE "C" NOT NULL
);
