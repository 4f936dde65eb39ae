//! SNMP device profiles: device knowledge as data (`agent/profiles/snmp/*.toml`), embedded in the
//! binary, parsed and validated at first use, and selected per device.
//!
//! A profile file (every key is checked; unknown keys are errors):
//!
//! ```toml
//! name = "apc-rpdu"                        # unique, the file's stem
//! description = "APC PowerNet rack PDUs"
//! device_class = "pdu"                     # pdu | ups | sensor | server | switch | management_controller | other
//! generic = false                          # true: applies to every device whose probe answers
//! [select]
//! sys_object_id = ["1.3.6.1.4.1.318"]      # arc-wise prefixes; one must match (if any given)
//! probe = "1.3.6.1.4.1.318.1.1.26.2.1.9"   # a subtree that must exist (one GETNEXT)
//! [identity]
//! vendor = "APC"                           # a constant ...
//! vendor_oid = [{ oid = "..." }]           # ... or read from the device
//! model = [{ oid = "1.3.6.1.4.1.318.1.1.26.2.1.8.1" }, { oid = "...12.1.5.0" }]  # first non-empty wins
//! serial = [{ column = "1.3.6.1.2.1.47.1.1.1.1.11", where_column = "1.3.6.1.2.1.47.1.1.1.1.5", equals = 3 }]
//! # also: part_number, firmware, asset_tag
//! [[reading]]
//! name = "outlet_power"                    # unique within the profile
//! metric = "power"                         # closed vocabulary, unit checked against it
//! unit = "W"
//! column = "1.3.6.1.4.1.318.1.1.26.9.4.3.1.7"   # a table column (walked), or `oid` for a scalar
//! scale = 1.0                              # value = raw × scale (0.01 kW → W is scale = 10)
//! decimals_column = "..."                  # optional: raw × 10^-digits, digits from this column (same row)
//! component = "outlet"                     # inlet | outlet | phase | branch | psu | sensor | fan | battery | port | module | device
//! index_part = -1                          # which sub-identifier of the row index is the component index
//! index_offset = 1                         # optional: added to it, for 0-based MIB indexes
//! label_column = "...9.4.3.1.3"            # optional: label from another column of the same row
//! filter_column = "..."; filter_equals = [26]   # optional: keep rows whose column has one of these values
//! index_suffix = [5]                       # optional: keep rows whose index ends so (e.g. a sensor type)
//! ignore = [-1]                            # optional: raw values meaning "absent"
//! [reading.states]                         # optional for metric "status": raw value → normalised state
//! 2 = "on_line"
//! ```
//!
//! Selection: among the non-generic profiles whose `sys_object_id` prefixes (if any) match and
//! whose probe (if any) exists, the most specific wins: the longest matching prefix in arcs, plus
//! one for a probe. Generic profiles (MIB-II + ENTITY-MIB, UPS-MIB) always run after it and only
//! fill what it left empty, so a device of a known class that no vendor profile matches still
//! yields whatever the standard MIBs give.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;

use async_snmp::Oid;
use groundtruth_proto::v1::{ComponentKind, DeviceClass};
use serde::Deserialize;

/// The embedded profile files, `(file name, text)`. A new profile is one line here.
const FILES: &[(&str, &str)] = &[
    (
        "schleifenbauer.toml",
        include_str!("../../../profiles/snmp/schleifenbauer.toml"),
    ),
    (
        "vertiv-geist-pdu.toml",
        include_str!("../../../profiles/snmp/vertiv-geist-pdu.toml"),
    ),
    (
        "hpe-mapdu.toml",
        include_str!("../../../profiles/snmp/hpe-mapdu.toml"),
    ),
    (
        "akcp-sensorprobe.toml",
        include_str!("../../../profiles/snmp/akcp-sensorprobe.toml"),
    ),
    (
        "gude-esb.toml",
        include_str!("../../../profiles/snmp/gude-esb.toml"),
    ),
    (
        "lenovo-xcc.toml",
        include_str!("../../../profiles/snmp/lenovo-xcc.toml"),
    ),
    (
        "supermicro-bmc.toml",
        include_str!("../../../profiles/snmp/supermicro-bmc.toml"),
    ),
    (
        "liebert.toml",
        include_str!("../../../profiles/snmp/liebert.toml"),
    ),
    (
        "generic-mib2-entity.toml",
        include_str!("../../../profiles/snmp/generic-mib2-entity.toml"),
    ),
    (
        "generic-ups-mib.toml",
        include_str!("../../../profiles/snmp/generic-ups-mib.toml"),
    ),
    (
        "apc-rpdu.toml",
        include_str!("../../../profiles/snmp/apc-rpdu.toml"),
    ),
    (
        "apc-ups.toml",
        include_str!("../../../profiles/snmp/apc-ups.toml"),
    ),
    (
        "eaton-epdu.toml",
        include_str!("../../../profiles/snmp/eaton-epdu.toml"),
    ),
    (
        "eaton-xups.toml",
        include_str!("../../../profiles/snmp/eaton-xups.toml"),
    ),
    (
        "raritan-px2.toml",
        include_str!("../../../profiles/snmp/raritan-px2.toml"),
    ),
    (
        "servertech-sentry3.toml",
        include_str!("../../../profiles/snmp/servertech-sentry3.toml"),
    ),
    (
        "servertech-sentry4.toml",
        include_str!("../../../profiles/snmp/servertech-sentry4.toml"),
    ),
    (
        "geist-watchdog.toml",
        include_str!("../../../profiles/snmp/geist-watchdog.toml"),
    ),
    (
        "dell-idrac.toml",
        include_str!("../../../profiles/snmp/dell-idrac.toml"),
    ),
    (
        "hpe-ilo.toml",
        include_str!("../../../profiles/snmp/hpe-ilo.toml"),
    ),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Class {
    Pdu,
    Ups,
    Sensor,
    Server,
    Switch,
    ManagementController,
    Other,
}

impl Class {
    pub fn to_proto(self) -> DeviceClass {
        match self {
            Self::Pdu => DeviceClass::Pdu,
            Self::Ups => DeviceClass::Ups,
            Self::Sensor => DeviceClass::Sensor,
            Self::Server => DeviceClass::Server,
            Self::Switch => DeviceClass::Switch,
            Self::ManagementController => DeviceClass::ManagementController,
            Self::Other => DeviceClass::Other,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Device,
    Inlet,
    Outlet,
    Phase,
    Branch,
    Psu,
    Sensor,
    Fan,
    Battery,
    Port,
    Module,
}

impl Kind {
    pub fn to_proto(self) -> ComponentKind {
        match self {
            Self::Device => ComponentKind::Device,
            Self::Inlet => ComponentKind::Inlet,
            Self::Outlet => ComponentKind::Outlet,
            Self::Phase => ComponentKind::Phase,
            Self::Branch => ComponentKind::Branch,
            Self::Psu => ComponentKind::Psu,
            Self::Sensor => ComponentKind::Sensor,
            Self::Fan => ComponentKind::Fan,
            Self::Battery => ComponentKind::Battery,
            Self::Port => ComponentKind::Port,
            Self::Module => ComponentKind::Module,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Select {
    #[serde(default)]
    pub sys_object_id: Vec<String>,
    pub probe: Option<String>,
}

/// Where one identity value comes from: a scalar `oid`, or the first row of `column` (optionally
/// the first row whose `where_column` equals `equals`, e.g. the ENTITY-MIB chassis row).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Source {
    pub oid: Option<String>,
    pub column: Option<String>,
    pub where_column: Option<String>,
    pub equals: Option<i64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentitySpec {
    pub vendor: Option<String>,
    #[serde(default)]
    pub vendor_oid: Vec<Source>,
    #[serde(default)]
    pub model: Vec<Source>,
    #[serde(default)]
    pub serial: Vec<Source>,
    #[serde(default)]
    pub part_number: Vec<Source>,
    #[serde(default)]
    pub firmware: Vec<Source>,
    #[serde(default)]
    pub asset_tag: Vec<Source>,
}

impl IdentitySpec {
    /// `(field name, sources)` for every OID-backed identity field.
    pub fn fields(&self) -> [(&'static str, &[Source]); 6] {
        [
            ("vendor", &self.vendor_oid),
            ("model", &self.model),
            ("serial", &self.serial),
            ("part_number", &self.part_number),
            ("firmware", &self.firmware),
            ("asset_tag", &self.asset_tag),
        ]
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadingSpec {
    pub name: String,
    pub metric: String,
    pub unit: String,
    pub oid: Option<String>,
    pub column: Option<String>,
    #[serde(default = "one")]
    pub scale: f64,
    pub decimals_column: Option<String>,
    pub component: Option<Kind>,
    /// Component index of a scalar reading (tables take it from the row index).
    pub index: Option<u32>,
    pub index_part: Option<i32>,
    /// Added to a table row's component index, for MIBs that number from 0 (proto: 1-based).
    #[serde(default)]
    pub index_offset: u32,
    pub label: Option<String>,
    pub label_column: Option<String>,
    pub filter_column: Option<String>,
    #[serde(default)]
    pub filter_equals: Vec<i64>,
    /// Keep only rows whose index ends with these sub-identifiers (e.g. a sensor type).
    #[serde(default)]
    pub index_suffix: Vec<u32>,
    /// Raw values that mean "no sensor / not available" (e.g. -1), skipped.
    #[serde(default)]
    pub ignore: Vec<i64>,
    #[serde(default)]
    pub states: BTreeMap<String, String>,
}

const fn one() -> f64 {
    1.0
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    pub name: String,
    pub description: String,
    pub device_class: Class,
    #[serde(default)]
    pub generic: bool,
    #[serde(default)]
    pub select: Select,
    #[serde(default)]
    pub identity: IdentitySpec,
    #[serde(default, rename = "reading")]
    pub readings: Vec<ReadingSpec>,
}

/// The metric vocabulary of `docs/ARCHITECTURE.md` with each metric's one unit.
pub const METRICS: &[(&str, &str)] = &[
    ("power", "W"),
    ("apparent_power", "VA"),
    ("energy", "kW.h"),
    ("voltage", "V"),
    ("current", "A"),
    ("frequency", "Hz"),
    ("temperature", "Cel"),
    ("humidity", "%RH"),
    ("fan_speed", "{rpm}"),
    ("load", "%"),
    ("battery_charge", "%"),
    ("battery_runtime", "s"),
    ("uptime", "s"),
    ("status", "1"),
];

/// Why a profile file was refused; names the file and the key.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("profile {file}: {problem}")]
pub struct ProfileError {
    pub file: String,
    pub problem: String,
}

/// Arc-wise prefix test: `1.3.6.1.4.1.318` is a prefix of `1.3.6.1.4.1.318.1` but not of
/// `1.3.6.1.4.1.3180`.
pub fn oid_has_prefix(oid: &str, prefix: &str) -> bool {
    oid == prefix || oid.strip_prefix(prefix).is_some_and(|rest| rest.starts_with('.'))
}

fn arcs(oid: &str) -> usize {
    oid.split('.').count()
}

impl Profile {
    /// Parses and validates one profile file; every problem is reported at once.
    pub fn parse(file: &str, text: &str) -> Result<Self, Vec<ProfileError>> {
        let err = |problem: String| ProfileError {
            file: file.to_owned(),
            problem,
        };
        let p: Self = toml::from_str(text).map_err(|e| vec![err(e.to_string())])?;
        let problems = p.problems(file);
        if problems.is_empty() {
            Ok(p)
        } else {
            Err(problems.into_iter().map(err).collect())
        }
    }

    fn problems(&self, file: &str) -> Vec<String> {
        let mut out = Vec::new();
        let check_oid = |key: &str, o: &str, out: &mut Vec<String>| {
            let ok = !o.is_empty()
                && o.split('.').all(|a| !a.is_empty() && a.parse::<u32>().is_ok())
                && Oid::parse(o).is_ok()
                && arcs(o) >= 2;
            if !ok {
                out.push(format!("{key}: '{o}' is not a numeric OID"));
            }
        };
        if file.strip_suffix(".toml") != Some(self.name.as_str()) {
            out.push(format!("name '{}' must equal the file stem", self.name));
        }
        if self.description.trim().is_empty() {
            out.push("description is empty".into());
        }
        for (i, o) in self.select.sys_object_id.iter().enumerate() {
            check_oid(&format!("select.sys_object_id[{i}]"), o, &mut out);
        }
        if let Some(o) = &self.select.probe {
            check_oid("select.probe", o, &mut out);
        }
        if !self.generic && self.select.sys_object_id.is_empty() && self.select.probe.is_none() {
            out.push("a vendor profile needs select.sys_object_id or select.probe".into());
        }
        if self
            .identity
            .vendor
            .as_deref()
            .is_some_and(|v| v.trim().is_empty())
        {
            out.push("identity.vendor is empty".into());
        }
        for (field, sources) in self.identity.fields() {
            for (i, s) in sources.iter().enumerate() {
                let key = format!("identity.{field}[{i}]");
                match (&s.oid, &s.column) {
                    (Some(o), None) => {
                        check_oid(&key, o, &mut out);
                        if s.where_column.is_some() || s.equals.is_some() {
                            out.push(format!("{key}: where_column/equals need a column"));
                        }
                    }
                    (None, Some(c)) => {
                        check_oid(&key, c, &mut out);
                        match (&s.where_column, s.equals) {
                            (Some(w), Some(_)) => check_oid(&format!("{key}.where_column"), w, &mut out),
                            (None, None) => {}
                            _ => out.push(format!("{key}: where_column and equals go together")),
                        }
                    }
                    _ => out.push(format!("{key}: exactly one of oid or column")),
                }
            }
        }
        let mut names = BTreeSet::new();
        for (i, r) in self.readings.iter().enumerate() {
            let key = format!("reading[{i}] ({})", r.name);
            if r.name.is_empty() || !names.insert(r.name.as_str()) {
                out.push(format!("{key}: name empty or duplicate"));
            }
            match METRICS.iter().find(|(m, _)| *m == r.metric) {
                None => out.push(format!("{key}: unknown metric '{}'", r.metric)),
                Some((_, unit)) if *unit != r.unit => {
                    out.push(format!(
                        "{key}: metric {} is in '{unit}', not '{}'",
                        r.metric, r.unit
                    ));
                }
                Some(_) => {}
            }
            if !r.scale.is_finite() || r.scale <= 0.0 {
                out.push(format!("{key}: scale must be a positive number"));
            }
            match (&r.oid, &r.column) {
                (Some(o), None) => {
                    check_oid(&key, o, &mut out);
                    for (k, set) in [
                        ("decimals_column", r.decimals_column.is_some()),
                        ("index_part", r.index_part.is_some()),
                        ("label_column", r.label_column.is_some()),
                        ("filter_column", r.filter_column.is_some()),
                        ("index_suffix", !r.index_suffix.is_empty()),
                        ("index_offset", r.index_offset != 0),
                    ] {
                        if set {
                            out.push(format!("{key}: {k} needs a table column"));
                        }
                    }
                }
                (None, Some(c)) => {
                    check_oid(&key, c, &mut out);
                    if r.index.is_some() {
                        out.push(format!("{key}: a table reading takes its index from the row"));
                    }
                    if r.component.is_none() {
                        out.push(format!("{key}: a table reading needs a component kind"));
                    }
                }
                _ => out.push(format!("{key}: exactly one of oid or column")),
            }
            for (k, o) in [
                ("decimals_column", &r.decimals_column),
                ("label_column", &r.label_column),
                ("filter_column", &r.filter_column),
            ] {
                if let Some(o) = o {
                    check_oid(&format!("{key}.{k}"), o, &mut out);
                }
            }
            if r.filter_column.is_some() == r.filter_equals.is_empty() {
                out.push(format!("{key}: filter_column and filter_equals go together"));
            }
            if !r.states.is_empty() && r.metric != "status" {
                out.push(format!("{key}: states only for metric \"status\""));
            }
            for (raw, state) in &r.states {
                if raw.parse::<i64>().is_err() {
                    out.push(format!("{key}.states: key '{raw}' is not an integer"));
                }
                if state.is_empty() || !state.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
                    out.push(format!("{key}.states: '{state}' must be snake_case"));
                }
            }
        }
        out
    }

    /// How well this profile matches; `None` when it does not apply. `probe_exists` answers
    /// whether the probe subtree exists on the device.
    pub fn score(&self, sys_object_id: &str, probe_exists: impl Fn(&str) -> bool) -> Option<usize> {
        let mut score = 0;
        if !self.select.sys_object_id.is_empty() {
            score += self
                .select
                .sys_object_id
                .iter()
                .filter(|p| oid_has_prefix(sys_object_id, p))
                .map(|p| arcs(p))
                .max()?;
        }
        if let Some(probe) = &self.select.probe {
            if !probe_exists(probe) {
                return None;
            }
            score += 1;
        }
        Some(score)
    }

    /// Whether the probe is still worth asking: the sysObjectID condition already holds.
    pub fn prefix_matches(&self, sys_object_id: &str) -> bool {
        self.select.sys_object_id.is_empty()
            || self
                .select
                .sys_object_id
                .iter()
                .any(|p| oid_has_prefix(sys_object_id, p))
    }
}

/// Every embedded profile, parsed once. Panics only if an embedded file is invalid, which the
/// unit tests below rule out for every file.
pub fn all() -> &'static [Profile] {
    static ALL: OnceLock<Vec<Profile>> = OnceLock::new();
    ALL.get_or_init(|| {
        FILES
            .iter()
            .map(|(file, text)| {
                Profile::parse(file, text).unwrap_or_else(|e| {
                    panic!("invariant: embedded SNMP profiles are validated by unit tests: {e:?}")
                })
            })
            .collect()
    })
}

/// The most specific matching vendor profile (ties: the first by name) and the generic profiles
/// that apply, in file order.
pub fn select<'a>(
    profiles: &'a [Profile],
    sys_object_id: &str,
    probe_exists: impl Fn(&str) -> bool,
) -> (Option<&'a Profile>, Vec<&'a Profile>) {
    let mut best: Option<(usize, &Profile)> = None;
    let mut generic = Vec::new();
    for p in profiles {
        let Some(score) = p.score(sys_object_id, &probe_exists) else {
            continue;
        };
        if p.generic {
            generic.push(p);
        } else if best.is_none_or(|(s, b)| score > s || (score == s && p.name < b.name)) {
            best = Some((score, p));
        }
    }
    (best.map(|(_, p)| p), generic)
}

/// Turns a raw number into the reading's unit.
pub fn scaled(raw: f64, scale: f64, decimals: Option<i64>) -> f64 {
    let digits = decimals.unwrap_or(0).clamp(0, 9);
    let divisor = 10f64.powi(i32::try_from(digits).unwrap_or(0));
    let v = raw * scale / divisor;
    // 19516 × 0.1 is 1951.6000000000001 in binary floating point; devices never report more
    // than a few decimals, so round to 6 to keep values as the device meant them.
    if v.abs() < 1e12 {
        (v * 1e6).round() / 1e6
    } else {
        v
    }
}

/// The component index of a table row: the sub-identifier at `part` (negative counts from the
/// end; default the last) of the row index, if it exists and fits.
pub fn component_index(row_index: &[u32], part: Option<i32>) -> Option<u32> {
    let part = part.unwrap_or(-1);
    let at = if part < 0 {
        row_index
            .len()
            .checked_sub(usize::try_from(part.unsigned_abs()).ok()?)?
    } else {
        usize::try_from(part).ok()?
    };
    row_index.get(at).copied()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::float_cmp)]
mod tests {
    use super::*;

    #[test]
    fn every_embedded_profile_parses_and_validates() {
        let mut names = BTreeSet::new();
        for (file, text) in FILES {
            let p = Profile::parse(file, text).unwrap_or_else(|e| panic!("{e:?}"));
            assert!(names.insert(p.name.clone()), "duplicate profile {}", p.name);
        }
        assert_eq!(all().len(), FILES.len());
        // Exactly the generic fallbacks are generic.
        let generic: Vec<_> = all()
            .iter()
            .filter(|p| p.generic)
            .map(|p| p.name.as_str())
            .collect();
        assert_eq!(generic, ["generic-mib2-entity", "generic-ups-mib"]);
    }

    #[test]
    fn every_profile_file_on_disk_is_embedded() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("profiles/snmp");
        let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".toml"))
            .collect();
        on_disk.sort();
        let mut embedded: Vec<String> = FILES.iter().map(|(f, _)| (*f).to_owned()).collect();
        embedded.sort();
        assert_eq!(on_disk, embedded);
    }

    #[test]
    fn no_two_vendor_profiles_have_the_same_selection() {
        let vendor: Vec<_> = all().iter().filter(|p| !p.generic).collect();
        for (i, a) in vendor.iter().enumerate() {
            for b in &vendor[i + 1..] {
                assert!(
                    a.select.sys_object_id != b.select.sys_object_id || a.select.probe != b.select.probe,
                    "{} and {} select the same devices",
                    a.name,
                    b.name
                );
            }
        }
    }

    #[test]
    fn validation_reports_every_problem_with_its_key() {
        let text = r#"
name = "bad"
description = "x"
device_class = "pdu"
[identity]
model = [{ oid = "1.3.6.1.x" }, { oid = "1.3.6.1.2", column = "1.3.6.1.3" }]
[[reading]]
name = "p"
metric = "power"
unit = "kW"
oid = "1.3.6.1.4.1.1.0"
scale = -1
[[reading]]
name = "p"
metric = "wattage"
unit = "W"
column = "1.3.6.1.4.1.1"
[reading.states]
x = "Bad State"
"#;
        let errs = Profile::parse("bad.toml", text).unwrap_err();
        let all: Vec<_> = errs.iter().map(ToString::to_string).collect();
        let joined = all.join("\n");
        for needle in [
            "needs select.sys_object_id or select.probe",
            "identity.model[0]: '1.3.6.1.x' is not a numeric OID",
            "identity.model[1]: exactly one of oid or column",
            "metric power is in 'W', not 'kW'",
            "scale must be a positive number",
            "name empty or duplicate",
            "unknown metric 'wattage'",
            "needs a component kind",
            "states only for metric",
            "key 'x' is not an integer",
            "'Bad State' must be snake_case",
        ] {
            assert!(joined.contains(needle), "missing '{needle}' in:\n{joined}");
        }
        assert!(all.iter().all(|e| e.starts_with("profile bad.toml: ")));
        // Unknown keys are refused too.
        let e = Profile::parse(
            "x.toml",
            "name = \"x\"\ndescription = \"d\"\ndevice_class = \"ups\"\nfoo = 1\n",
        )
        .unwrap_err();
        assert!(e[0].problem.contains("foo"), "{e:?}");
    }

    #[test]
    fn prefixes_match_whole_arcs_only() {
        assert!(oid_has_prefix("1.3.6.1.4.1.318.1.3.4.6", "1.3.6.1.4.1.318"));
        assert!(oid_has_prefix("1.3.6.1.4.1.318", "1.3.6.1.4.1.318"));
        assert!(!oid_has_prefix("1.3.6.1.4.1.3180.1", "1.3.6.1.4.1.318"));
        assert!(!oid_has_prefix("1.3.6.1.4.1.31", "1.3.6.1.4.1.318"));
    }

    fn profile(name: &str, prefixes: &[&str], probe: Option<&str>, generic: bool) -> Profile {
        Profile {
            name: name.into(),
            description: "t".into(),
            device_class: Class::Other,
            generic,
            select: Select {
                sys_object_id: prefixes.iter().map(|s| (*s).to_owned()).collect(),
                probe: probe.map(str::to_owned),
            },
            identity: IdentitySpec::default(),
            readings: vec![],
        }
    }

    #[test]
    fn selection_prefers_the_longest_prefix_then_a_probe_and_keeps_generics() {
        let ps = vec![
            profile("vendor", &["1.3.6.1.4.1.318"], None, false),
            profile("family", &["1.3.6.1.4.1.318.1.3.4"], None, false),
            profile(
                "probed",
                &["1.3.6.1.4.1.318.1.3.4"],
                Some("1.3.6.1.4.1.318.1.1.26"),
                false,
            ),
            profile("probe-only", &[], Some("1.3.6.1.2.1.33.1.1"), false),
            profile("generic", &[], None, true),
            profile("generic-ups", &[], Some("1.3.6.1.2.1.33.1.1"), true),
        ];
        let names = |(v, g): (Option<&Profile>, Vec<&Profile>)| {
            (
                v.map(|p| p.name.clone()),
                g.iter().map(|p| p.name.clone()).collect::<Vec<_>>(),
            )
        };
        // The probe adds one: the probed family profile beats the plain family profile.
        assert_eq!(
            names(select(&ps, "1.3.6.1.4.1.318.1.3.4.6", |_| true)),
            (
                Some("probed".into()),
                vec!["generic".into(), "generic-ups".into()]
            )
        );
        // Probe absent: the longest prefix wins over the vendor-wide one.
        assert_eq!(
            names(select(&ps, "1.3.6.1.4.1.318.1.3.4.6", |_| false)),
            (Some("family".into()), vec!["generic".into()])
        );
        assert_eq!(
            names(select(&ps, "1.3.6.1.4.1.318.1.3.27", |_| false)).0,
            Some("vendor".into())
        );
        // Unknown vendor: only a probe-only profile can match, and the generics always run.
        assert_eq!(
            names(select(&ps, "1.3.6.1.4.1.99999", |p| p == "1.3.6.1.2.1.33.1.1")),
            (
                Some("probe-only".into()),
                vec!["generic".into(), "generic-ups".into()]
            )
        );
        assert_eq!(
            names(select(&ps, "1.3.6.1.4.1.99999", |_| false)),
            (None, vec!["generic".into()])
        );
    }

    #[test]
    fn selection_of_the_embedded_profiles_for_recorded_sys_object_ids() {
        let pick = |oid: &str, probes: &[&str]| {
            select(all(), oid, |p| {
                probes.iter().any(|q| oid_has_prefix(q, p) || q == &p)
            })
            .0
            .map(|p| p.name.as_str())
        };
        assert_eq!(
            pick("1.3.6.1.4.1.318.1.3.4.6", &["1.3.6.1.4.1.318.1.1.12.1.6.0"]),
            Some("apc-rpdu")
        );
        assert_eq!(
            pick("1.3.6.1.4.1.318.1.3.27", &["1.3.6.1.4.1.318.1.1.1.1.1.1"]),
            Some("apc-ups")
        );
        assert_eq!(pick("1.3.6.1.4.1.534.6.6.7", &[]), Some("eaton-epdu"));
        // Any Eaton UPS answering XUPS-MIB; the ePDU's longer prefix still wins for ePDUs.
        assert_eq!(
            pick("1.3.6.1.4.1.534.1", &["1.3.6.1.4.1.534.1.1.6.0"]),
            Some("eaton-xups")
        );
        assert_eq!(
            pick("1.3.6.1.4.1.534.6.6.7", &["1.3.6.1.4.1.534.1.1.6.0"]),
            Some("eaton-epdu")
        );
        assert_eq!(pick("1.3.6.1.4.1.1718.3", &[]), Some("servertech-sentry3"));
        assert_eq!(pick("1.3.6.1.4.1.1718.4", &[]), Some("servertech-sentry4"));
        assert_eq!(pick("1.3.6.1.4.1.674.10892.5", &[]), Some("dell-idrac"));
        assert_eq!(pick("1.3.6.1.4.1.8072.3.2.10", &[]), None);
    }

    #[test]
    fn scale_and_decimal_digits_give_base_units() {
        // APC rPDU2 device power: 121 × 0.01 kW = 1210 W.
        assert_eq!(scaled(121.0, 10.0, None), 1210.0);
        // APC energy: 19516 × 0.1 kWh, without binary floating-point noise.
        assert_eq!(scaled(19516.0, 0.1, None), 1951.6);
        // Geist: tenths of °C.
        assert!((scaled(205.0, 0.1, None) - 20.5).abs() < 1e-9);
        // Raritan: 3497 with 3 decimal digits = 3.497 A.
        assert!((scaled(3497.0, 1.0, Some(3)) - 3.497).abs() < 1e-9);
        // Eaton: Wh → kWh.
        assert!((scaled(8_185_553.0, 0.001, None) - 8185.553).abs() < 1e-6);
        // Hostile digit counts are clamped, never overflow.
        assert!(scaled(1.0, 1.0, Some(i64::MAX)).is_finite());
        assert_eq!(scaled(7.0, 1.0, Some(-4)), 7.0);
    }

    #[test]
    fn table_index_to_component_index() {
        assert_eq!(component_index(&[7], None), Some(7));
        // Eaton ePDU input: strappingIndex.inputIndex.inputPowerIndex = 0.1.1 → last = 1.
        assert_eq!(component_index(&[0, 1, 1], None), Some(1));
        // Sentry4 input cord: unit.cord = 2.1 → the unit is the distinguishing part.
        assert_eq!(component_index(&[2, 1], Some(0)), Some(2));
        assert_eq!(component_index(&[2, 1], Some(-2)), Some(2));
        assert_eq!(component_index(&[2, 1], Some(5)), None);
        assert_eq!(component_index(&[2, 1], Some(-3)), None);
        assert_eq!(component_index(&[], None), None);
    }
}
