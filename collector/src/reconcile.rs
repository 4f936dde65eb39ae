//! From stored devices to the CMDB's desired state: pick each device's location from its
//! evidence, decide which devices are fit to write, and raise exceptions for the rest.
//!
//! Walking-skeleton rules (issue #9 adds the site map, topology, text patterns and conflict
//! detection between sources):
//! * a device needs a usable serial (the match key) — otherwise `no_usable_identity`;
//! * its location is the evidence with a rack from the strongest source (Redfish placement >
//!   site map > topology > sysLocation > asset tag); without one, `no_location`;
//! * the site is the evidence's own, else the reporting agent's, else the configured default.

use crate::cmdb::{DesiredDevice, DesiredLocation, DesiredMac, Face};
use crate::store::{DeviceRow, EvidenceRow};

/// Strength of a location source; higher wins.
fn rank(source: &str) -> u8 {
    match source {
        "LOCATION_SOURCE_MANUAL" => 6,
        "LOCATION_SOURCE_REDFISH_PLACEMENT" => 5,
        "LOCATION_SOURCE_SITE_MAP" => 4,
        "LOCATION_SOURCE_TOPOLOGY" => 3,
        "LOCATION_SOURCE_SYS_LOCATION" => 2,
        "LOCATION_SOURCE_ASSET_TAG" => 1,
        _ => 0,
    }
}

/// The strongest evidence that names a rack.
#[must_use]
pub fn best_location(evidence: &[EvidenceRow]) -> Option<&EvidenceRow> {
    evidence.iter().filter(|e| !e.rack.is_empty()).max_by(|a, b| {
        rank(&a.source)
            .cmp(&rank(&b.source))
            .then(a.confidence.total_cmp(&b.confidence))
    })
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
pub fn desired(d: &DeviceRow, default_site: &str) -> Result<DesiredDevice, Unfit> {
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
    let Some(ev) = best_location(&d.locations) else {
        return Err(unfit(
            "no_location",
            format!("serial {} has no location evidence that names a rack", d.serial),
        ));
    };
    let site = [ev.site.as_str(), d.agent_site.as_str(), default_site]
        .into_iter()
        .find(|s| !s.trim().is_empty())
        .unwrap_or_default()
        .trim()
        .to_owned();
    if site.is_empty() {
        return Err(unfit(
            "no_location",
            format!(
                "serial {}: rack {} is known but no site (set agent.site or collector.default_site)",
                d.serial, ev.rack
            ),
        ));
    }
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
    let mut evidence = vec![format!(
        "location from {} ({}): row {:?}, rack {:?}, U {}",
        ev.source.trim_start_matches("LOCATION_SOURCE_"),
        ev.raw,
        ev.row,
        ev.rack,
        ev.u_position.map_or_else(|| "unknown".into(), |u| u.to_string())
    )];
    evidence.push(format!(
        "identity from {} via {} (agent {})",
        d.endpoint_key, d.protocol, d.agent_id
    ));
    Ok(DesiredDevice {
        key: d.device_key.clone(),
        serial: d.serial.clone(),
        asset_tag: (!d.asset_tag.is_empty()).then(|| d.asset_tag.clone()),
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
        location: Some(DesiredLocation {
            site,
            room: (!ev.room.is_empty()).then(|| ev.room.clone()),
            rack: ev.rack.clone(),
            position: ev.u_position,
            face: Face::Front,
        }),
        macs,
        power_watts: d.power_watts,
        evidence,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn ev(source: &str, rack: &str, u: Option<u32>) -> EvidenceRow {
        EvidenceRow {
            source: source.into(),
            rack: rack.into(),
            u_position: u,
            ..Default::default()
        }
    }

    #[test]
    fn strongest_source_with_a_rack_wins() {
        let e = vec![
            ev("LOCATION_SOURCE_SYS_LOCATION", "R99", Some(40)),
            ev("LOCATION_SOURCE_REDFISH_PLACEMENT", "R07", Some(12)),
            ev("LOCATION_SOURCE_MANUAL", "", None),
        ];
        assert_eq!(best_location(&e).unwrap().rack, "R07");
    }

    #[test]
    fn device_without_serial_or_rack_is_unfit_with_the_right_kind() {
        let mut d = DeviceRow {
            device_key: "endpoint:a/snmp://x".into(),
            endpoint_key: "snmp://x".into(),
            ..Default::default()
        };
        assert_eq!(desired(&d, "DC1").unwrap_err().kind, "no_usable_identity");
        d.serial = "SN1".into();
        assert_eq!(desired(&d, "DC1").unwrap_err().kind, "no_location");
        d.locations
            .push(ev("LOCATION_SOURCE_REDFISH_PLACEMENT", "R07", Some(12)));
        let want = desired(&d, "DC1").unwrap();
        let loc = want.location.unwrap();
        assert_eq!(
            (loc.site.as_str(), loc.rack.as_str(), loc.position),
            ("DC1", "R07", Some(12))
        );
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
        assert_eq!(desired(&d, "DEF").unwrap().location.unwrap().site, "AGENT");
        d.locations[0].site = "BLDG".into();
        assert_eq!(desired(&d, "DEF").unwrap().location.unwrap().site, "BLDG");
    }
}
