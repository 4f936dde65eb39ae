//! From stored devices to the CMDB's desired state: pick each device's location from its
//! evidence, decide which devices are fit to write, and raise exceptions for the rest.
//!
//! Rules:
//! * a device needs a usable serial (the match key) — otherwise `no_usable_identity`;
//! * its location comes from the location engine ([`crate::locate`]): with disagreeing evidence
//!   of similar strength, `location_conflict` (nothing is guessed); without any evidence that
//!   names a rack the device is still reconciled with no location (`DesiredDevice::location` is
//!   `None`): matched by serial, asset tag or MAC and every other owned field written, its
//!   placement left as the CMDB has it, and not created when nothing matches (`no_location`);
//! * the site is the evidence's own, else the reporting agent's, else the configured default.

use crate::cmdb::{DesiredDevice, DesiredLocation, DesiredMac, Face};
use crate::locate::{Located, Pattern, locate};
use crate::store::DeviceRow;

/// What reconciliation needs besides the device: the site fallback and the text patterns.
#[derive(Debug, Clone)]
pub struct Rules {
    pub default_site: String,
    pub patterns: Vec<Pattern>,
    pub site_map: crate::sitemap::SiteMap,
}

impl Rules {
    /// Rules with the built-in patterns only.
    ///
    /// # Panics
    /// Never: the built-in patterns are checked by unit tests.
    #[must_use]
    pub fn builtin(default_site: &str) -> Self {
        Self {
            default_site: default_site.to_owned(),
            patterns: crate::locate::patterns_with(None)
                .expect("invariant: built-in patterns compile (unit-tested)"),
            site_map: crate::sitemap::SiteMap::default(),
        }
    }
}

/// All location evidence of a device: what it reported, topology resolved through the site map's
/// port table, and the site map's own entry for its serial.
#[must_use]
pub fn evidence_for(d: &DeviceRow, rules: &Rules) -> Vec<crate::store::EvidenceRow> {
    let mut evidence = d.locations.clone();
    for e in &mut evidence {
        rules.site_map.resolve_topology(e);
    }
    evidence.extend(rules.site_map.evidence_for_serial(&d.serial));
    evidence
}

/// Why a device is not written to the CMDB.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unfit {
    pub device_key: String,
    pub kind: &'static str,
    pub detail: String,
}

/// Turns a stored device into the CMDB's desired state, or says why it cannot be.
///
/// # Errors
/// An [`Unfit`] naming the exception kind.
pub fn desired(d: &DeviceRow, rules: &Rules) -> Result<DesiredDevice, Unfit> {
    let default_site = rules.default_site.as_str();
    let unfit = |kind, detail: String| Unfit {
        device_key: d.device_key.clone(),
        kind,
        detail,
    };
    if d.serial.is_empty() {
        return Err(unfit(
            "no_usable_identity",
            format!(
                "{} ({}) reports no usable serial number; not written to the CMDB",
                d.endpoint_key, d.protocol
            ),
        ));
    }
    if !d.shares_bmc_mac_with.is_empty() {
        return Err(unfit(
            "identity_conflict",
            format!(
                "serial {} shares its BMC MAC with {}: one server reporting two serial forms, or a cloned MAC; \
                 not written to the CMDB until resolved",
                d.serial,
                d.shares_bmc_mac_with.join(", ")
            ),
        ));
    }
    let evidence = evidence_for(d, rules);
    // Without rack evidence the device is still reconciled (matched, every other owned field
    // written); its location stays as the CMDB has it, and an unmatched one is not created.
    let (location, location_note) = match locate(&evidence, &d.asset_tag, &rules.patterns) {
        Located::At(ev) => {
            let site = [ev.site.as_str(), d.agent_site.as_str(), default_site]
                .into_iter()
                .find(|s| !s.trim().is_empty())
                .unwrap_or_default()
                .trim()
                .to_owned();
            let note = format!(
                "location from {} ({}): row {:?}, rack {:?}, U {}",
                ev.source.trim_start_matches("LOCATION_SOURCE_"),
                ev.raw,
                ev.row,
                ev.rack,
                ev.u_position.map_or_else(|| "unknown".into(), |u| u.to_string())
            );
            if site.is_empty() {
                let why = format!(
                    "rack {} is known but no site (set agent.site or collector.default_site); location left as the CMDB has it",
                    ev.rack
                );
                (None, why)
            } else {
                let loc = DesiredLocation {
                    site,
                    room: (!ev.room.is_empty()).then(|| ev.room.clone()),
                    rack: ev.rack.clone(),
                    position: ev.u_position,
                    face: Face::Front,
                };
                (Some(loc), note)
            }
        }
        Located::Unknown => (
            None,
            "no location evidence names a rack; location left as the CMDB has it".to_owned(),
        ),
        Located::Conflict { detail } => {
            return Err(unfit(
                "location_conflict",
                format!("serial {}: {detail}", d.serial),
            ));
        }
    };
    let macs = d
        .macs
        .iter()
        .map(|(address, iface, role)| {
            let management = role == "MAC_ROLE_MANAGEMENT";
            DesiredMac {
                address: address.clone(),
                interface_name: if iface.is_empty() {
                    if management {
                        "bmc".into()
                    } else {
                        format!("nic-{}", address.replace(':', ""))
                    }
                } else if management {
                    format!("bmc-{iface}")
                } else {
                    iface.clone()
                },
                management,
            }
        })
        .collect();
    let mut evidence = vec![location_note];
    evidence.push(format!(
        "identity from {} via {} (agent {})",
        d.endpoint_key, d.protocol, d.agent_id
    ));
    Ok(DesiredDevice {
        key: d.device_key.clone(),
        serial: d.serial.clone(),
        asset_tag: crate::normalize::asset_tag(&d.asset_tag),
        vendor: if d.vendor.is_empty() {
            "Unknown".into()
        } else {
            d.vendor.clone()
        },
        model: if d.model.is_empty() {
            "Unknown".into()
        } else {
            d.model.clone()
        },
        part_number: (!d.part_number.is_empty()).then(|| d.part_number.clone()),
        hostname: (!d.hostname.is_empty()).then(|| d.hostname.clone()),
        location,
        macs,
        power_watts: d.power_watts,
        last_seen: (!d.last_seen.is_empty()).then(|| d.last_seen.clone()),
        evidence,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::store::EvidenceRow;

    fn ev(source: &str, rack: &str, u: Option<u32>) -> EvidenceRow {
        EvidenceRow {
            source: source.into(),
            rack: rack.into(),
            u_position: u,
            ..Default::default()
        }
    }

    #[test]
    fn device_without_serial_or_rack_is_unfit_with_the_right_kind() {
        let mut d = DeviceRow {
            device_key: "endpoint:a/snmp://x".into(),
            endpoint_key: "snmp://x".into(),
            ..Default::default()
        };
        assert_eq!(
            desired(&d, &Rules::builtin("DC1")).unwrap_err().kind,
            "no_usable_identity"
        );
        d.serial = "SN1".into();
        // Without rack evidence: still reconciled, with no location to write.
        let want = desired(&d, &Rules::builtin("DC1")).unwrap();
        assert_eq!((want.serial.as_str(), want.location), ("SN1", None));
        assert!(
            want.evidence[0].contains("no location evidence"),
            "{:?}",
            want.evidence
        );
        d.locations
            .push(ev("LOCATION_SOURCE_REDFISH_PLACEMENT", "R07", Some(12)));
        let want = desired(&d, &Rules::builtin("DC1")).unwrap();
        let loc = want.location.unwrap();
        assert_eq!(
            (loc.site.as_str(), loc.rack.as_str(), loc.position),
            ("DC1", "R07", Some(12))
        );
    }

    #[test]
    fn site_map_places_a_device_that_says_nothing_about_itself() {
        let d = DeviceRow {
            device_key: "serial:3F3452A52295".into(),
            serial: "3F3452A52295".into(),
            ..Default::default()
        };
        let mut rules = Rules::builtin("DC1");
        assert_eq!(desired(&d, &rules).unwrap().location, None);
        rules.site_map = crate::sitemap::SiteMap::parse(
            "[[device]]\nserial = \"3f3452a52295\"\nsite = \"DC2\"\nrack = \"P01\"\nu = 3\n",
            "m.toml",
        )
        .unwrap();
        let loc = desired(&d, &rules).unwrap().location.unwrap();
        assert_eq!(
            (loc.site.as_str(), loc.rack.as_str(), loc.position),
            ("DC2", "P01", Some(3))
        );
    }

    /// A switch saw the server's MAC on a port the site map lists: the server is located there
    /// (topology evidence), while a MAC seen only on an unlisted port (an uplink) locates nothing.
    #[tokio::test]
    async fn switch_fdb_and_site_map_port_locate_a_server() {
        use groundtruth_proto::v1::{
            AgentInfo, Batch, DeviceIdentity, DeviceReport, MacAddress, PollOutcome, PollStatus,
            TopologyEntry, TopologySource,
        };
        let ok = || {
            Some(PollStatus {
                outcome: PollOutcome::Ok as i32,
                ..Default::default()
            })
        };
        let switch = DeviceReport {
            identity: Some(DeviceIdentity {
                serial_number: "JPE15151458".into(),
                hostname: "sw-r07".into(),
                endpoint_key: "snmp://sw".into(),
                ..Default::default()
            }),
            topology: vec![
                TopologyEntry {
                    source: TopologySource::Fdb as i32,
                    local_port: "Ethernet12".into(),
                    remote_mac: "02:47:54:10:00:01".into(),
                    ..Default::default()
                },
                TopologyEntry {
                    source: TopologySource::Fdb as i32,
                    local_port: "Ethernet49".into(),
                    remote_mac: "02:47:54:10:00:09".into(),
                    ..Default::default()
                },
            ],
            status: ok(),
            ..Default::default()
        };
        let server = |serial: &str, mac: &str| DeviceReport {
            identity: Some(DeviceIdentity {
                serial_number: serial.into(),
                endpoint_key: format!("redfish://{serial}"),
                macs: vec![MacAddress {
                    address: mac.into(),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            status: ok(),
            ..Default::default()
        };
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::Store::open(&dir.path().join("s.db")).await.unwrap();
        let batch = Batch {
            agent: Some(AgentInfo {
                agent_id: "a".into(),
                site: "DC1".into(),
                ..Default::default()
            }),
            epoch: 1,
            seq: 1,
            devices: vec![
                switch,
                server("SRV1", "02-47-54-10-00-01"),
                server("SRV9", "02:47:54:10:00:09"),
            ],
            ..Default::default()
        };
        store.commit_batch(&batch).await.unwrap();
        let mut rules = Rules::builtin("DC1");
        rules.site_map = crate::sitemap::SiteMap::parse(
            "[[port]]\nswitch = \"sw-r07\"\nport = \"ethernet12\"\nsite = \"DC1\"\nrack = \"R07\"\nu = 12\n",
            "m.toml",
        )
        .unwrap();
        let devices = store.devices().await.unwrap();
        let get = |k: &str| devices.iter().find(|d| d.device_key == k).unwrap();
        let loc = desired(get("serial:SRV1"), &rules).unwrap().location.unwrap();
        assert_eq!((loc.rack.as_str(), loc.position), ("R07", Some(12)));
        assert_eq!(desired(get("serial:SRV9"), &rules).unwrap().location, None);
        // The switch itself is not located by its own table.
        assert_eq!(desired(get("serial:JPE15151458"), &rules).unwrap().location, None);
    }

    #[test]
    fn evidence_site_beats_agent_site_beats_default() {
        let mut d = DeviceRow {
            serial: "SN1".into(),
            agent_site: "AGENT".into(),
            ..Default::default()
        };
        d.locations
            .push(ev("LOCATION_SOURCE_REDFISH_PLACEMENT", "R1", None));
        assert_eq!(
            desired(&d, &Rules::builtin("DEF"))
                .unwrap()
                .location
                .unwrap()
                .site,
            "AGENT"
        );
        d.locations[0].site = "BLDG".into();
        assert_eq!(
            desired(&d, &Rules::builtin("DEF"))
                .unwrap()
                .location
                .unwrap()
                .site,
            "BLDG"
        );
    }
}
