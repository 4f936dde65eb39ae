//! The site map: what the operator knows about the room, as a TOML file.
//!
//! ```toml
//! [[rack]]                      # racks (height used when the collector creates them)
//! site = "DC1"
//! room = "H1"
//! row = "A"
//! name = "R07"
//! height = 42
//! power_budget_w = 5000         # optional: for the ITSM rule rack_power
//!
//! [[device]]                    # devices pinned by serial: PDUs, switches, anything
//! serial = "3F3452A52295"
//! site = "DC1"
//! rack = "R07"
//! u = 1                         # optional (0U PDUs have none)
//! face = "rear"                 # optional: front (default) or rear
//!
//! [[port]]                      # switch port -> where the device cabled to it sits
//! switch = "JPE15151458"        # the switch's serial (or its sysName)
//! port = "Ethernet12"
//! site = "DC1"
//! rack = "R07"
//! u = 12
//!
//! [[outlet]]                    # PDU outlet -> where the device it feeds sits
//! pdu = "3F3452A52295"          # the PDU's serial
//! outlet = 7                    # the outlet's number as the PDU numbers it
//! site = "DC1"
//! rack = "R07"
//! u = 12
//! inlet = 1                     # optional: the PDU inlet behind this outlet (default 1)
//!
//! [[inlet]]                     # PDU inlet -> the feed and circuit behind it
//! pdu = "3F3452A52295"
//! inlet = 1                     # optional (default 1)
//! feed = "A"                    # optional: the power feed (A/B side, UPS name...)
//! circuit = "RPP-A1/CB-12"      # optional: the breaker/circuit as the floor knows it
//! ```
//! Every entry is validated at load: a device or port pointing at a rack the map does not list
//! (when it lists racks for that site), or a U outside the rack's height, is an error naming the
//! file and the entry.

use std::collections::HashMap;

use serde::Deserialize;

use crate::store::EvidenceRow;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RackEntry {
    pub site: String,
    #[serde(default)]
    pub room: String,
    #[serde(default)]
    pub row: String,
    pub name: String,
    #[serde(default = "default_height")]
    pub height: u32,
    /// The rack's power budget in W (ITSM rule `rack_power` compares measured power with it).
    #[serde(default)]
    pub power_budget_w: Option<f64>,
}

const fn default_height() -> u32 {
    42
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceEntry {
    pub serial: String,
    pub site: String,
    pub rack: String,
    #[serde(default)]
    pub u: Option<u32>,
    #[serde(default)]
    pub face: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortEntry {
    pub switch: String,
    pub port: String,
    pub site: String,
    pub rack: String,
    #[serde(default)]
    pub u: Option<u32>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutletEntry {
    pub pdu: String,
    pub outlet: u32,
    pub site: String,
    pub rack: String,
    pub u: u32,
    /// The PDU inlet feeding this outlet (physical-context API; default 1).
    #[serde(default = "default_inlet")]
    pub inlet: u32,
}

/// A PDU inlet and the feed/circuit behind it.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct InletEntry {
    pub pdu: String,
    #[serde(default = "default_inlet")]
    pub inlet: u32,
    #[serde(default)]
    pub feed: String,
    #[serde(default)]
    pub circuit: String,
}

const fn default_inlet() -> u32 {
    1
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default, rename = "rack")]
    racks: Vec<RackEntry>,
    #[serde(default, rename = "device")]
    devices: Vec<DeviceEntry>,
    #[serde(default, rename = "port")]
    ports: Vec<PortEntry>,
    #[serde(default, rename = "outlet")]
    outlets: Vec<OutletEntry>,
    #[serde(default, rename = "inlet")]
    inlets: Vec<InletEntry>,
}

/// The loaded, validated site map.
#[derive(Debug, Clone, Default)]
pub struct SiteMap {
    racks: Vec<RackEntry>,
    by_serial: HashMap<String, DeviceEntry>,
    by_port: HashMap<(String, String), PortEntry>,
    by_outlet: HashMap<(String, u32), OutletEntry>,
    outlets: Vec<OutletEntry>,
    inlets: Vec<InletEntry>,
}

fn key(s: &str) -> String {
    s.trim().to_ascii_uppercase()
}

impl SiteMap {
    /// Parses and validates a site map; `origin` names the file in errors.
    ///
    /// # Errors
    /// Every problem found, each naming the file and the entry.
    pub fn parse(text: &str, origin: &str) -> Result<Self, Vec<String>> {
        let file: File = toml::from_str(text).map_err(|e| {
            let line = e.span().map(|s| text[..s.start].matches('\n').count() + 1);
            vec![format!(
                "{origin}: {}{}",
                line.map(|l| format!("line {l}: ")).unwrap_or_default(),
                e.message()
            )]
        })?;
        let mut errors = Vec::new();
        let rack_of = |site: &str, rack: &str| {
            file.racks
                .iter()
                .find(|r| key(&r.site) == key(site) && key(&r.name) == key(rack))
        };
        let site_has_racks = |site: &str| file.racks.iter().any(|r| key(&r.site) == key(site));
        let check = |what: &str, site: &str, rack: &str, u: Option<u32>| -> Option<String> {
            match rack_of(site, rack) {
                Some(r) => u.filter(|u| *u == 0 || *u > r.height).map(|u| {
                    format!(
                        "{origin}: {what}: U{u} is outside rack {} ({} U high)",
                        r.name, r.height
                    )
                }),
                None if site_has_racks(site) => Some(format!(
                    "{origin}: {what}: rack {rack:?} is not listed for site {site:?}"
                )),
                None => None,
            }
        };
        let mut by_serial = HashMap::new();
        for (i, d) in file.devices.iter().enumerate() {
            let what = format!("device[{i}] (serial {})", d.serial);
            errors.extend(check(&what, &d.site, &d.rack, d.u));
            if let Some(f) = &d.face
                && f != "front"
                && f != "rear"
            {
                errors.push(format!("{origin}: {what}: face must be \"front\" or \"rear\""));
            }
            if by_serial.insert(key(&d.serial), d.clone()).is_some() {
                errors.push(format!("{origin}: {what}: serial listed twice"));
            }
        }
        let mut by_port = HashMap::new();
        for (i, p) in file.ports.iter().enumerate() {
            let what = format!("port[{i}] ({} {})", p.switch, p.port);
            errors.extend(check(&what, &p.site, &p.rack, p.u));
            if by_port
                .insert((key(&p.switch), key(&p.port)), p.clone())
                .is_some()
            {
                errors.push(format!("{origin}: {what}: port listed twice"));
            }
        }
        let mut by_outlet = HashMap::new();
        for (i, o) in file.outlets.iter().enumerate() {
            let what = format!("outlet[{i}] ({} outlet {})", o.pdu, o.outlet);
            errors.extend(check(&what, &o.site, &o.rack, Some(o.u)));
            if by_outlet.insert((key(&o.pdu), o.outlet), o.clone()).is_some() {
                errors.push(format!("{origin}: {what}: outlet listed twice"));
            }
        }
        let mut seen_inlets = std::collections::HashSet::new();
        for (i, n) in file.inlets.iter().enumerate() {
            let what = format!("inlet[{i}] (pdu {} inlet {})", n.pdu, n.inlet);
            if n.pdu.trim().is_empty() {
                errors.push(format!("{origin}: {what}: pdu must not be empty"));
            }
            if n.feed.trim().is_empty() && n.circuit.trim().is_empty() {
                errors.push(format!("{origin}: {what}: names neither a feed nor a circuit"));
            }
            if !seen_inlets.insert((key(&n.pdu), n.inlet)) {
                errors.push(format!("{origin}: {what}: inlet listed twice"));
            }
        }
        let mut seen = std::collections::HashSet::new();
        for r in &file.racks {
            if !seen.insert((key(&r.site), key(&r.name))) {
                errors.push(format!(
                    "{origin}: rack {} of site {} listed twice",
                    r.name, r.site
                ));
            }
            if r.height == 0 || r.height > 100 {
                errors.push(format!(
                    "{origin}: rack {}: height {} is not between 1 and 100",
                    r.name, r.height
                ));
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(Self {
            racks: file.racks,
            by_serial,
            by_port,
            by_outlet,
            outlets: file.outlets,
            inlets: file.inlets,
        })
    }

    /// Site-map evidence for a device with this (normalised) serial.
    #[must_use]
    pub fn evidence_for_serial(&self, serial: &str) -> Option<EvidenceRow> {
        let d = self.by_serial.get(&key(serial))?;
        let rack = self.rack(&d.site, &d.rack);
        Some(EvidenceRow {
            via: String::new(),
            source: "LOCATION_SOURCE_SITE_MAP".into(),
            site: d.site.clone(),
            room: rack.map(|r| r.room.clone()).unwrap_or_default(),
            row: rack.map(|r| r.row.clone()).unwrap_or_default(),
            rack: d.rack.clone(),
            u_position: d.u,
            confidence: 0.95,
            raw: format!("site map device serial {}", d.serial),
        })
    }

    /// Fills a topology evidence row (`via` = "<switch serial>|<switch name>|<port>") from the
    /// port table, trying the switch's serial, then its name. Ports the map does not list (uplinks,
    /// trunks) stay unresolved and so carry no location.
    pub fn resolve_topology(&self, e: &mut EvidenceRow) {
        if e.source != "LOCATION_SOURCE_TOPOLOGY" || !e.rack.is_empty() {
            return;
        }
        let mut parts = e.via.splitn(3, '|');
        let (serial, name, port) = (
            parts.next().unwrap_or_default(),
            parts.next().unwrap_or_default(),
            parts.next().unwrap_or_default(),
        );
        let hit = [serial, name]
            .into_iter()
            .filter(|s| !s.is_empty())
            .find_map(|sw| self.port(sw, port));
        if let Some(p) = hit {
            e.site.clone_from(&p.site);
            e.rack.clone_from(&p.rack);
            e.u_position = p.u;
            if let Some(r) = self.rack(&p.site, &p.rack) {
                e.room.clone_from(&r.room);
                e.row.clone_from(&r.row);
            }
        }
    }

    /// Where the device cabled to `switch`/`port` sits, if the map says.
    #[must_use]
    pub fn port(&self, switch: &str, port: &str) -> Option<&PortEntry> {
        self.by_port.get(&(key(switch), key(port)))
    }

    /// Where the device fed by outlet `outlet` of the PDU with serial `pdu` sits, if the map says.
    #[must_use]
    pub fn outlet(&self, pdu: &str, outlet: u32) -> Option<&OutletEntry> {
        self.by_outlet.get(&(key(pdu), outlet))
    }

    /// The listed outlets feeding a device placed in `site`/`rack` over U `lo..=hi`.
    #[must_use]
    pub fn outlets_at(&self, site: &str, rack: &str, lo: u32, hi: u32) -> Vec<&OutletEntry> {
        self.outlets
            .iter()
            .filter(|o| key(&o.site) == key(site) && key(&o.rack) == key(rack) && (lo..=hi).contains(&o.u))
            .collect()
    }

    /// Every listed outlet of a PDU (by serial).
    #[must_use]
    pub fn outlets_on(&self, pdu_serial: &str) -> Vec<&OutletEntry> {
        self.outlets
            .iter()
            .filter(|o| key(&o.pdu) == key(pdu_serial))
            .collect()
    }

    /// All listed outlets, in file order.
    #[must_use]
    pub fn outlets(&self) -> &[OutletEntry] {
        &self.outlets
    }

    /// The feed/circuit behind a PDU inlet, if the map says.
    #[must_use]
    pub fn inlet(&self, pdu_serial: &str, inlet: u32) -> Option<&InletEntry> {
        self.inlets
            .iter()
            .find(|n| key(&n.pdu) == key(pdu_serial) && n.inlet == inlet)
    }

    /// A rack by site and name.
    #[must_use]
    pub fn rack(&self, site: &str, name: &str) -> Option<&RackEntry> {
        self.racks
            .iter()
            .find(|r| key(&r.site) == key(site) && key(&r.name) == key(name))
    }

    /// A site map file listing `racks` (e.g. imported from the CMDB), ready to be extended by
    /// hand with devices, ports and outlets; `origin` is said in the header comment. The site
    /// map names a rack by site and name, so a second rack of the same name in one site (NetBox
    /// allows it in another location) is left out, as a comment in the file and in the returned
    /// list of what was left out.
    #[must_use]
    pub fn racks_toml(racks: &[RackEntry], origin: &str) -> (String, Vec<String>) {
        let q = |s: &str| toml::Value::String(s.to_owned()).to_string();
        let mut out = format!(
            "# Site map: racks imported from {origin}.\n# Add [[device]], [[port]] and [[outlet]] entries by hand (see docs/configuration.md).\n"
        );
        let mut seen = std::collections::HashSet::new();
        let mut skipped = Vec::new();
        for r in racks {
            if !seen.insert((key(&r.site), key(&r.name))) {
                let why = format!(
                    "rack {:?} of site {:?} in room {:?}: another rack of that name is already listed for the site (rename one of them)",
                    r.name, r.site, r.room
                );
                out.push_str(&format!("\n# left out: {}\n", why.replace('\n', " ")));
                skipped.push(why);
                continue;
            }
            out.push_str(&format!(
                "\n[[rack]]\nsite = {}\nroom = {}\nrow = {}\nname = {}\nheight = {}\n",
                q(&r.site),
                q(&r.room),
                q(&r.row),
                q(&r.name),
                r.height
            ));
        }
        (out, skipped)
    }

    /// All racks, as listed.
    #[must_use]
    pub fn racks(&self) -> &[RackEntry] {
        &self.racks
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAP: &str = r#"
[[rack]]
site = "DC1"
room = "H1"
row = "A"
name = "R07"
height = 42

[[device]]
serial = "3f3452a52295"
site = "DC1"
rack = "R07"
face = "rear"

[[port]]
switch = "JPE15151458"
port = "Ethernet12"
site = "DC1"
rack = "R07"
u = 12

[[outlet]]
pdu = "3f3452a52295"
outlet = 7
site = "DC1"
rack = "R07"
u = 20
"#;

    #[test]
    fn lookups_are_case_insensitive_and_carry_the_racks_room_and_row() {
        let m = SiteMap::parse(MAP, "site-map.toml").unwrap();
        let e = m.evidence_for_serial("3F3452A52295").unwrap();
        assert_eq!(
            (
                e.site.as_str(),
                e.room.as_str(),
                e.row.as_str(),
                e.rack.as_str(),
                e.u_position
            ),
            ("DC1", "H1", "A", "R07", None)
        );
        assert_eq!(e.source, "LOCATION_SOURCE_SITE_MAP");
        assert_eq!(m.port("jpe15151458", "ethernet12").unwrap().u, Some(12));
        assert!(m.evidence_for_serial("NOPE").is_none());
        assert_eq!(m.rack("dc1", "r07").unwrap().height, 42);
        assert_eq!(m.outlet("3F3452A52295", 7).unwrap().u, 20);
        assert!(m.outlet("3F3452A52295", 8).is_none());
    }

    #[test]
    fn racks_toml_round_trips_through_the_parser_with_hostile_names() {
        let rack = RackEntry {
            site: "DC \"1\"".into(),
            room: "H1\n[[rack]]".into(),
            row: String::new(),
            name: "R07".into(),
            height: 47,
            power_budget_w: None,
        };
        let mut twin = rack.clone();
        twin.room = "H2".into();
        twin.name = "r07".into();
        let (text, skipped) = SiteMap::racks_toml(&[rack, twin], "NetBox https://nb.example");
        assert_eq!(skipped.len(), 1, "{skipped:?}");
        assert!(skipped[0].contains("H2"));
        let m = SiteMap::parse(&text, "imported.toml").unwrap();
        assert_eq!(m.racks().len(), 1);
        let r = &m.racks()[0];
        assert_eq!(
            (r.site.as_str(), r.room.as_str(), r.name.as_str(), r.height),
            ("DC \"1\"", "H1\n[[rack]]", "R07", 47)
        );
    }

    #[test]
    fn bad_entries_are_all_reported_with_their_place() {
        let bad = MAP
            .replace("u = 12", "u = 43")
            .replace("u = 20", "u = 0")
            .replace("rack = \"R07\"\nface", "rack = \"R99\"\nface")
            .replace("\"rear\"", "\"side\"");
        let errs = SiteMap::parse(&bad, "site-map.toml").unwrap_err();
        let all = errs.join("\n");
        assert!(
            all.contains("port[0] (JPE15151458 Ethernet12): U43 is outside rack R07"),
            "{all}"
        );
        assert!(
            all.contains("device[0] (serial 3f3452a52295): rack \"R99\" is not listed"),
            "{all}"
        );
        assert!(all.contains("face must be"), "{all}");
        assert!(
            all.contains("outlet[0] (3f3452a52295 outlet 7): U0 is outside rack R07"),
            "{all}"
        );
        let typo = SiteMap::parse("[[rack]]\nsite = \"DC1\"\nnmae = \"R1\"\n", "m.toml").unwrap_err();
        assert!(
            typo[0].starts_with("m.toml: line") && typo[0].contains("nmae"),
            "{typo:?}"
        );
    }

    #[test]
    fn outlets_by_position_and_inlets_with_their_circuits() {
        let m = SiteMap::parse(
            "[[rack]]\nsite = \"DC1\"\nname = \"R07\"\npower_budget_w = 5000\n\n\
             [[outlet]]\npdu = \"P1\"\noutlet = 1\nsite = \"DC1\"\nrack = \"R07\"\nu = 12\n\n\
             [[outlet]]\npdu = \"p1\"\noutlet = 9\nsite = \"DC1\"\nrack = \"R07\"\nu = 13\ninlet = 2\n\n\
             [[inlet]]\npdu = \"P1\"\ninlet = 2\nfeed = \"B\"\ncircuit = \"RPP-B/CB-07\"\n",
            "m.toml",
        )
        .unwrap();
        let at: Vec<(u32, u32)> = m
            .outlets_at("dc1", "r07", 12, 13)
            .iter()
            .map(|o| (o.outlet, o.inlet))
            .collect();
        assert_eq!(at, [(1, 1), (9, 2)]);
        assert_eq!(m.outlets_at("DC1", "R07", 14, 20).len(), 0);
        assert_eq!(m.outlets_on("P1").len(), 2);
        assert_eq!(m.inlet("p1", 2).unwrap().circuit, "RPP-B/CB-07");
        assert!(m.inlet("P1", 1).is_none());
        assert_eq!(m.rack("DC1", "R07").unwrap().power_budget_w, Some(5000.0));
        let bad = SiteMap::parse(
            "[[inlet]]\npdu = \"P\"\n\n[[inlet]]\npdu = \"P\"\nfeed = \"A\"\n",
            "m.toml",
        )
        .unwrap_err();
        let all = bad.join("\n");
        assert!(
            all.contains("inlet[0] (pdu P inlet 1): names neither a feed nor a circuit"),
            "{all}"
        );
        assert!(
            all.contains("inlet[1] (pdu P inlet 1): inlet listed twice"),
            "{all}"
        );
    }
}
