-- What each switch last reported on its ports (forwarding database and LLDP neighbours). A
-- switch's rows are replaced as a whole by each report: the table is a snapshot, not a log.
CREATE TABLE topology (
    switch_device_id    INTEGER NOT NULL REFERENCES devices(id),
    source              TEXT NOT NULL,
    local_port          TEXT NOT NULL DEFAULT '',
    local_port_index    INTEGER NOT NULL DEFAULT 0,
    remote_mac          TEXT NOT NULL DEFAULT '',
    remote_chassis_id   TEXT NOT NULL DEFAULT '',
    remote_system_name  TEXT NOT NULL DEFAULT '',
    remote_port_id      TEXT NOT NULL DEFAULT '',
    vlan                INTEGER NOT NULL DEFAULT 0,
    observed_at         TEXT NOT NULL
);
CREATE INDEX topology_switch ON topology (switch_device_id);
CREATE INDEX topology_mac ON topology (remote_mac);
CREATE INDEX topology_chassis ON topology (remote_chassis_id);
