-- One physical device seen through several protocols (issue #9): which source last set the
-- device's identity fields, and every (protocol, agent, endpoint) the device was reported by.
-- Portable SQL (SQLite and PostgreSQL).

-- Precedence rank of the protocol whose report last set the identity fields (1 Redfish,
-- 2 IPMI, 3 SNMP, 4 Modbus, 9 unknown) and when that protocol last reported. A report of equal
-- or higher precedence (lower rank) sets every field it carries; a lower one only fills empty
-- fields, unless the higher source has been silent for a day.
ALTER TABLE devices ADD COLUMN identity_rank BIGINT NOT NULL DEFAULT 9;
ALTER TABLE devices ADD COLUMN identity_seen TEXT NOT NULL DEFAULT '';

CREATE TABLE device_sources (
    device_id     BIGINT NOT NULL REFERENCES devices(id),
    protocol      TEXT NOT NULL,
    agent_id      TEXT NOT NULL,
    endpoint_key  TEXT NOT NULL,
    first_seen    TEXT NOT NULL,
    last_seen     TEXT NOT NULL,
    PRIMARY KEY (device_id, protocol, agent_id, endpoint_key)
);

-- Devices by MAC (BMC-MAC merging at ingest, switch sightings): without it each lookup scans.
CREATE INDEX device_macs_address ON device_macs (address);
