-- PostgreSQL dialect of ../0010_device_sources.sql (types only differ).
ALTER TABLE devices ADD COLUMN identity_rank BIGINT NOT NULL DEFAULT 9;
ALTER TABLE devices ADD COLUMN identity_seen TEXT COLLATE "C" NOT NULL DEFAULT '';

CREATE TABLE device_sources (
    device_id     BIGINT NOT NULL REFERENCES devices(id),
    protocol      TEXT COLLATE "C" NOT NULL,
    agent_id      TEXT COLLATE "C" NOT NULL,
    endpoint_key  TEXT COLLATE "C" NOT NULL,
    first_seen    TEXT COLLATE "C" NOT NULL,
    last_seen     TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (device_id, protocol, agent_id, endpoint_key)
);

-- Devices by MAC (BMC-MAC merging at ingest, switch sightings): without it each lookup scans.
CREATE INDEX device_macs_address ON device_macs (address);
