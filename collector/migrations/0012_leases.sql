-- Issue #22: leases on singleton work: one sync pass per CMDB at a time (across processes and
-- hosts), later the leader among collectors sharing one database. A row is never deleted, so
-- `token` only grows: it is the fencing token of each acquisition. `expires_ms` is the
-- database's own clock (milliseconds since the Unix epoch), so hosts need not agree on time.
CREATE TABLE leases (
    name        TEXT PRIMARY KEY,
    holder      TEXT NOT NULL,
    token       INTEGER NOT NULL,
    expires_ms  INTEGER NOT NULL,
    acquired_at TEXT NOT NULL
);
