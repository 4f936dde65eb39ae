//! Switch topology for location inference: which MACs a switch learned on which port (BRIDGE-MIB
//! `dot1dTpFdbTable`, Q-BRIDGE-MIB `dot1qTpFdbTable`) and which neighbours it sees over LLDP
//! (`lldpRemTable`). Bridge ports are mapped to ifIndex (`dot1dBasePortIfIndex`) and named from
//! `ifName` (else `ifDescr`); LLDP local ports are named from `lldpLocPortId`. The BRIDGE-MIB
//! table is read only when Q-BRIDGE has no rows (VLAN-aware switches repeat MACs in both).
//!
//! Bounded: at most [`MAX_ENTRIES`] entries per device (a core switch can hold 100 k MACs; a
//! rack-side agent wants the access switches' ports), and every walk is capped by
//! `Limits::max_walk_varbinds`. Entries the switch marks `self(4)` (its own MACs) are skipped.

use std::collections::BTreeMap;

use async_snmp::Value;
use groundtruth_proto::v1::{TopologyEntry, TopologySource};

use super::walk::{Column, Session, oid, value_int, value_text};
use crate::driver::DriverError;

/// Most topology entries reported per device.
pub(super) const MAX_ENTRIES: usize = 4096;

const BRIDGE: &str = "1.3.6.1.2.1.17";
const DOT1D_BASE_PORT_IFINDEX: &str = "1.3.6.1.2.1.17.1.4.1.2";
const DOT1D_TP_FDB_PORT: &str = "1.3.6.1.2.1.17.4.3.1.2";
const DOT1D_TP_FDB_STATUS: &str = "1.3.6.1.2.1.17.4.3.1.3";
const DOT1Q_TP_FDB_PORT: &str = "1.3.6.1.2.1.17.7.1.2.2.1.2";
const DOT1Q_TP_FDB_STATUS: &str = "1.3.6.1.2.1.17.7.1.2.2.1.3";
const IF_NAME: &str = "1.3.6.1.2.1.31.1.1.1.1";
const IF_DESCR: &str = "1.3.6.1.2.1.2.2.1.2";
const LLDP_REM: &str = "1.0.8802.1.1.2.1.4.1";
const LLDP_LOC_PORT_ID: &str = "1.0.8802.1.1.2.1.3.7.1.3";
const LLDP_REM_CHASSIS_SUBTYPE: &str = "1.0.8802.1.1.2.1.4.1.1.4";
const LLDP_REM_CHASSIS_ID: &str = "1.0.8802.1.1.2.1.4.1.1.5";
const LLDP_REM_PORT_SUBTYPE: &str = "1.0.8802.1.1.2.1.4.1.1.6";
const LLDP_REM_PORT_ID: &str = "1.0.8802.1.1.2.1.4.1.1.7";
const LLDP_REM_SYS_NAME: &str = "1.0.8802.1.1.2.1.4.1.1.9";

/// FDB status `self(4)`: the switch's own address, not a neighbour.
const FDB_STATUS_SELF: i64 = 4;

/// Reads the FDBs and LLDP neighbours when the device has them. Returns the entries and the
/// partial errors (a table that failed while others were read).
pub(super) async fn read(s: &Session<'_>) -> Result<(Vec<TopologyEntry>, Vec<String>), DriverError> {
    let mut entries = Vec::new();
    let mut partial = Vec::new();
    // Not due in this poll (driver::PollScope): no request at all.
    if !s.cx.scope.wants(crate::driver::Kind::Topology) {
        return Ok((entries, partial));
    }
    let found = s.exists_many(&[oid(BRIDGE), oid(LLDP_REM)]).await?;
    let (has_bridge, has_lldp) = (found[0], found[1]);
    if !has_bridge && !has_lldp {
        return Ok((entries, partial));
    }
    let names = {
        let n = col(s, IF_NAME, &mut partial).await;
        if n.is_empty() {
            col(s, IF_DESCR, &mut partial).await
        } else {
            n
        }
    };
    let if_name = |if_index: u32| {
        names
            .get(&vec![if_index])
            .and_then(value_text)
            .unwrap_or_default()
    };
    if has_bridge {
        let port_if = col(s, DOT1D_BASE_PORT_IFINDEX, &mut partial).await;
        let port_to_if = |port: u32| {
            port_if
                .get(&vec![port])
                .and_then(value_int)
                .and_then(|i| u32::try_from(i).ok())
        };
        // Q-BRIDGE first: it has the VLAN, and a VLAN-aware switch's BRIDGE-MIB table repeats
        // (a subset of) the same MACs. BRIDGE-MIB only when Q-BRIDGE is empty.
        let tables = [
            (DOT1Q_TP_FDB_PORT, DOT1Q_TP_FDB_STATUS, true),
            (DOT1D_TP_FDB_PORT, DOT1D_TP_FDB_STATUS, false),
        ];
        for (port_col, status_col, qbridge) in tables {
            let ports = col(s, port_col, &mut partial).await;
            if ports.is_empty() {
                continue;
            }
            let status = col(s, status_col, &mut partial).await;
            entries.extend(fdb_entries(&ports, &status, qbridge, &port_to_if, &if_name));
            break;
        }
    }
    if has_lldp {
        let loc = col(s, LLDP_LOC_PORT_ID, &mut partial).await;
        let mut rem = BTreeMap::new();
        for c in [
            LLDP_REM_CHASSIS_SUBTYPE,
            LLDP_REM_CHASSIS_ID,
            LLDP_REM_PORT_SUBTYPE,
            LLDP_REM_PORT_ID,
            LLDP_REM_SYS_NAME,
        ] {
            rem.insert(c, col(s, c, &mut partial).await);
        }
        entries.extend(lldp_entries(&rem, &loc));
    }
    if entries.len() > MAX_ENTRIES {
        partial.push(format!(
            "snmp: topology: {} entries, only the first {MAX_ENTRIES} are reported",
            entries.len()
        ));
        entries.truncate(MAX_ENTRIES);
    }
    Ok((entries, partial))
}

/// Walks one column; a failure becomes a partial error and an empty column.
async fn col(s: &Session<'_>, c: &str, partial: &mut Vec<String>) -> Column {
    match s.column(c).await {
        Ok(col) => col,
        Err(e) => {
            partial.push(format!("snmp: topology: {e}"));
            Column::new()
        }
    }
}

fn fdb_entries(
    ports: &Column,
    status: &Column,
    qbridge: bool,
    port_to_if: &impl Fn(u32) -> Option<u32>,
    if_name: &impl Fn(u32) -> String,
) -> Vec<TopologyEntry> {
    let mut out = Vec::new();
    for (idx, v) in ports {
        // BRIDGE-MIB index: the MAC (6 arcs); Q-BRIDGE: dot1qFdbId then the MAC.
        let (vlan, mac) = match (qbridge, idx.len()) {
            (false, 6) => (0, &idx[..]),
            (true, 7) => (idx[0], &idx[1..]),
            _ => continue,
        };
        if status.get(idx).and_then(value_int) == Some(FDB_STATUS_SELF) {
            continue;
        }
        let Some(port) = value_int(v)
            .and_then(|p| u32::try_from(p).ok())
            .filter(|p| *p > 0)
        else {
            continue;
        };
        let octets: Option<Vec<u8>> = mac.iter().map(|a| u8::try_from(*a).ok()).collect();
        let Some(remote_mac) = octets.as_deref().and_then(groundtruth_proto::mac::from_octets) else {
            continue;
        };
        let if_index = port_to_if(port);
        out.push(TopologyEntry {
            source: TopologySource::Fdb as i32,
            local_port: if_index.map(if_name).unwrap_or_default(),
            local_port_index: if_index.unwrap_or(0),
            remote_mac,
            vlan,
            bridge_port: port,
            ..Default::default()
        });
    }
    out
}

/// A MAC when `bytes` is one and the subtype says so, else printable text, else hex.
fn id_text(bytes: &[u8], is_mac: bool) -> String {
    if let Some(m) = groundtruth_proto::mac::from_octets(bytes).filter(|_| is_mac) {
        return m;
    }
    match std::str::from_utf8(bytes) {
        Ok(s) if s.chars().all(|c| !c.is_control()) => s.trim().to_owned(),
        _ => bytes
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":"),
    }
}

fn lldp_entries(rem: &BTreeMap<&str, Column>, loc: &Column) -> Vec<TopologyEntry> {
    let empty = Column::new();
    let c = |name: &str| rem.get(name).unwrap_or(&empty);
    // Rows: timeMark.localPortNum.remIndex; any column that has the row makes it a neighbour.
    let mut rows: Vec<&Vec<u32>> = c(LLDP_REM_CHASSIS_ID).keys().collect();
    for extra in [c(LLDP_REM_SYS_NAME), c(LLDP_REM_PORT_ID)] {
        for k in extra.keys() {
            if !rows.contains(&k) {
                rows.push(k);
            }
        }
    }
    rows.sort();
    let mut out = Vec::new();
    for idx in rows {
        let [_, local, _] = idx[..] else { continue };
        let bytes = |col: &str| c(col).get(idx).and_then(Value::as_bytes).map(<[u8]>::to_vec);
        let subtype = |col: &str| c(col).get(idx).and_then(value_int);
        out.push(TopologyEntry {
            source: TopologySource::Lldp as i32,
            local_port: loc.get(&vec![local]).and_then(value_text).unwrap_or_default(),
            local_port_index: local,
            // LldpChassisIdSubtype macAddress(4); LldpPortIdSubtype macAddress(3).
            remote_chassis_id: bytes(LLDP_REM_CHASSIS_ID)
                .map(|b| id_text(&b, subtype(LLDP_REM_CHASSIS_SUBTYPE) == Some(4)))
                .unwrap_or_default(),
            remote_port_id: bytes(LLDP_REM_PORT_ID)
                .map(|b| id_text(&b, subtype(LLDP_REM_PORT_SUBTYPE) == Some(3)))
                .unwrap_or_default(),
            remote_system_name: bytes(LLDP_REM_SYS_NAME)
                .map(|b| id_text(&b, false))
                .unwrap_or_default(),
            ..Default::default()
        });
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn fdb_rows_map_port_to_ifindex_and_name_and_skip_self() {
        let mut ports = Column::new();
        ports.insert(vec![100, 0, 80, 86, 191, 238, 73], Value::Integer(3));
        ports.insert(vec![100, 0, 28, 115, 180, 253, 106], Value::Integer(7));
        ports.insert(vec![100, 1, 2], Value::Integer(3)); // malformed index
        let mut status = Column::new();
        status.insert(vec![100, 0, 28, 115, 180, 253, 106], Value::Integer(4));
        let e = fdb_entries(&ports, &status, true, &|p| Some(p + 100), &|i| {
            format!("Ethernet{i}")
        });
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].remote_mac, "00:50:56:bf:ee:49");
        assert_eq!(
            (e[0].vlan, e[0].bridge_port, e[0].local_port_index),
            (100, 3, 103)
        );
        assert_eq!(e[0].local_port, "Ethernet103");
        assert_eq!(e[0].source, TopologySource::Fdb as i32);
    }

    #[test]
    fn lldp_rows_decode_mac_chassis_ids_and_text_port_ids() {
        let idx = vec![0, 47, 2];
        let mut rem = BTreeMap::new();
        let one = |v: Value| [(idx.clone(), v)].into_iter().collect::<Column>();
        rem.insert(LLDP_REM_CHASSIS_SUBTYPE, one(Value::Integer(4)));
        rem.insert(
            LLDP_REM_CHASSIS_ID,
            one(Value::OctetString(
                vec![0x44, 0x4c, 0xa8, 0x31, 0x3e, 0xdf].into(),
            )),
        );
        rem.insert(LLDP_REM_PORT_SUBTYPE, one(Value::Integer(5)));
        rem.insert(LLDP_REM_PORT_ID, one(Value::from("Ethernet23")));
        rem.insert(LLDP_REM_SYS_NAME, one(Value::from("ZJ-BP-Bak-Arista")));
        let loc: Column = [(vec![47], Value::from("Ethernet47"))].into_iter().collect();
        let e = lldp_entries(&rem, &loc);
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].remote_chassis_id, "44:4c:a8:31:3e:df");
        assert_eq!(e[0].remote_port_id, "Ethernet23");
        assert_eq!(e[0].remote_system_name, "ZJ-BP-Bak-Arista");
        assert_eq!(
            (e[0].local_port.as_str(), e[0].local_port_index),
            ("Ethernet47", 47)
        );
        assert_eq!(id_text(&[0x01, 0x02, 0xff], false), "01:02:ff");
    }
}
