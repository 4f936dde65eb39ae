-- PostgreSQL dialect of ../0005_topology.sql (types only differ).
-- What each switch last reported on its ports (forwarding database and LLDP neighbours). A
-- switch's rows are replaced as a whole by each report: the table is a snapshot, not a log.
CREATE TABLE topology (
    switch_device_id    BIGINT  NOT NULL REFERENCES devices(id),
    source              TEXT COLLATE "C" NOT NULL,
    local_port          TEXT COLLATE "C" NOT NULL DEFAULT '',
    local_port_index    BIGINT  NOT NULL DEFAULT 0,
    remote_mac          TEXT COLLATE "C" NOT NULL DEFAULT '',
    remote_chassis_id   TEXT COLLATE "C" NOT NULL DEFAULT '',
    remote_system_name  TEXT COLLATE "C" NOT NULL DEFAULT '',
    remote_port_id      TEXT COLLATE "C" NOT NULL DEFAULT '',
    vlan                BIGINT  NOT NULL DEFAULT 0,
    observed_at         TEXT COLLATE "C" NOT NULL
);
CREATE INDEX topology_switch ON topology (switch_device_id);
CREATE INDEX topology_mac ON topology (remote_mac);
CREATE INDEX topology_chassis ON topology (remote_chassis_id);
