//! Register maps: which registers of a device hold its identity and readings, as DATA files in
//! `agent/profiles/modbus/<name>.toml`, embedded into the binary and validated at load.
//!
//! File format (every key is checked, unknown keys are errors):
//! ```toml
//! name = "sdm630"            # must equal the file name
//! vendor = "Eastron"         # static identity, used when no identity register says otherwise
//! model = "SDM630"
//! device_class = "meter"     # ups | meter | pdu | sensor | other
//! word_order = "big"         # big: high word first (ABCD); little: low word first (CDAB)
//! byte_order = "big"         # big: high byte first within a register; little: swapped (BADC)
//! max_registers = 40         # most registers (FC3/FC4) one request may ask for (1-125)
//! max_bits = 2000            # most coils/discrete inputs per request (1-2000)
//! max_gap = 0                # unused registers a merged read may span (0 = only adjacent)
//! holes = [{ table = "input", start = 0x24, end = 0x29 }]  # never read, not even across
//!
//! [[identity]]
//! field = "serial"           # vendor | model | serial | firmware | part_number | hostname | asset_tag
//! table = "holding"          # coil | discrete_input | holding | input
//! address = 0xFC00           # 0-based wire address
//! type = "uint32"            # bool int16 uint16 int32 uint32 int64 uint64 float32 float64 string
//! # length = 10              # registers, strings only
//!
//! [[reading]]
//! metric = "voltage"         # the vocabulary of docs/ARCHITECTURE.md, with its unit
//! unit = "V"
//! table = "input"
//! address = 0x0000
//! type = "float32"
//! scale = 1.0                # value = raw * scale + offset
//! offset = 0.0
//! component = { kind = "phase", index = 1, label = "L1" }   # optional
//! ```

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;

/// One Modbus data table (function codes 1-4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Table {
    /// FC01.
    Coil,
    /// FC02.
    DiscreteInput,
    /// FC03.
    Holding,
    /// FC04.
    Input,
}

impl Table {
    /// Bit tables count in bits, register tables in 16-bit registers.
    #[must_use]
    pub fn is_bits(self) -> bool {
        matches!(self, Self::Coil | Self::DiscreteInput)
    }

    #[must_use]
    pub fn function_code(self) -> u8 {
        match self {
            Self::Coil => 1,
            Self::DiscreteInput => 2,
            Self::Holding => 3,
            Self::Input => 4,
        }
    }

    /// Short name used in error messages and `Reading.source`.
    #[must_use]
    pub fn short(self) -> &'static str {
        match self {
            Self::Coil => "coil",
            Self::DiscreteInput => "DI",
            Self::Holding => "HR",
            Self::Input => "IR",
        }
    }

    fn plural(self) -> &'static str {
        match self {
            Self::Coil => "coils",
            Self::DiscreteInput => "discrete inputs",
            Self::Holding => "holding registers",
            Self::Input => "input registers",
        }
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.plural())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Order {
    #[default]
    Big,
    Little,
}

/// The type of one value in the device's registers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueType {
    Bool,
    Int16,
    Uint16,
    Int32,
    Uint32,
    Int64,
    Uint64,
    Float32,
    Float64,
    /// ASCII, two characters per register; `len` registers.
    String {
        len: u16,
    },
}

impl ValueType {
    /// Registers (or bits, for `Bool`) the value occupies.
    #[must_use]
    pub fn width(self) -> u16 {
        match self {
            Self::Bool | Self::Int16 | Self::Uint16 => 1,
            Self::Int32 | Self::Uint32 | Self::Float32 => 2,
            Self::Int64 | Self::Uint64 | Self::Float64 => 4,
            Self::String { len } => len,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IdentityField {
    Vendor,
    Model,
    Serial,
    Firmware,
    PartNumber,
    Hostname,
    AssetTag,
}

/// Where one value lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Point {
    pub table: Table,
    pub address: u16,
    pub ty: ValueType,
}

impl Point {
    /// `HR 0x0064` — the pointer reported in `Reading.source` and errors.
    #[must_use]
    pub fn source(&self) -> String {
        format!("{} 0x{:04X}", self.table.short(), self.address)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct IdentityDef {
    pub field: IdentityField,
    pub point: Point,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ComponentKind {
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
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComponentDef {
    pub kind: ComponentKind,
    #[serde(default)]
    pub index: u32,
    #[serde(default)]
    pub label: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ReadingDef {
    pub metric: String,
    pub unit: String,
    pub point: Point,
    pub scale: f64,
    pub offset: f64,
    pub component: Option<ComponentDef>,
}

/// A range of addresses that must never be read, not even as filler inside a merged read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hole {
    pub table: Table,
    pub start: u16,
    /// Inclusive.
    pub end: u16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum DeviceClass {
    Ups,
    Meter,
    Pdu,
    Sensor,
    #[default]
    Other,
}

/// A validated register map.
#[derive(Debug, Clone, PartialEq)]
pub struct RegisterMap {
    pub name: String,
    /// File the map came from (`sdm630.toml`), for error messages.
    pub file: String,
    pub vendor: String,
    pub model: String,
    pub device_class: DeviceClass,
    pub word_order: Order,
    pub byte_order: Order,
    pub max_registers: u16,
    pub max_bits: u16,
    pub max_gap: u16,
    pub holes: Vec<Hole>,
    pub identity: Vec<IdentityDef>,
    pub readings: Vec<ReadingDef>,
}

/// The reading vocabulary of docs/ARCHITECTURE.md: metric → the one unit it is reported in.
pub const VOCABULARY: &[(&str, &str)] = &[
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
    ("status", ""),
];

/// Register maps built into the binary: (name, file contents).
pub const BUILTIN: &[(&str, &str)] = &[
    ("sdm630", include_str!("../../../profiles/modbus/sdm630.toml")),
    (
        "test-rack-ups",
        include_str!("../../../profiles/modbus/test-rack-ups.toml"),
    ),
    (
        "schneider-pm3200",
        include_str!("../../../profiles/modbus/schneider-pm3200.toml"),
    ),
    (
        "janitza-umg604",
        include_str!("../../../profiles/modbus/janitza-umg604.toml"),
    ),
];

/// Why a map was refused: the file, the key, the problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}: {key}: {detail}")]
pub struct MapError {
    pub file: String,
    pub key: String,
    pub detail: String,
}

/// All problems of one map file, reported at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapErrors(pub Vec<MapError>);

impl fmt::Display for MapErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for MapErrors {}

/// Looks a map up by name among the built-in ones, or, when `name` ends in `.toml`, reads it
/// from that file (for devices without a built-in map).
///
/// # Errors
/// Unknown name, unreadable file, or every validation problem of the file.
pub fn load(name: &str) -> Result<RegisterMap, MapErrors> {
    if std::path::Path::new(name)
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("toml"))
    {
        // Map files are small; refuse anything that is not.
        const MAX: u64 = 1024 * 1024;
        let too_big = std::fs::metadata(name).is_ok_and(|m| m.len() > MAX);
        let text = if too_big {
            Err(format!("larger than {MAX} bytes"))
        } else {
            std::fs::read_to_string(name).map_err(|e| e.to_string())
        };
        let text = text.map_err(|detail| {
            MapErrors(vec![MapError {
                file: name.to_owned(),
                key: "(file)".into(),
                detail,
            }])
        })?;
        let stem = std::path::Path::new(name)
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        return parse(name, &stem, &text);
    }
    let Some((_, text)) = BUILTIN.iter().find(|(n, _)| *n == name) else {
        let known: Vec<&str> = BUILTIN.iter().map(|(n, _)| *n).collect();
        return Err(MapErrors(vec![MapError {
            file: format!("{name}.toml"),
            key: "map".into(),
            detail: format!(
                "no built-in register map '{name}' (built in: {}; or give a path ending in .toml)",
                known.join(", ")
            ),
        }]));
    };
    parse(&format!("{name}.toml"), name, text)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMap {
    name: String,
    #[serde(default)]
    vendor: String,
    #[serde(default)]
    model: String,
    #[serde(default)]
    device_class: DeviceClass,
    #[serde(default)]
    word_order: Order,
    #[serde(default)]
    byte_order: Order,
    max_registers: Option<u32>,
    max_bits: Option<u32>,
    #[serde(default)]
    max_gap: u32,
    #[serde(default)]
    holes: Vec<Hole>,
    #[serde(default)]
    identity: Vec<RawIdentity>,
    #[serde(default)]
    reading: Vec<RawReading>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIdentity {
    field: IdentityField,
    table: Table,
    address: u32,
    #[serde(rename = "type")]
    ty: String,
    length: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReading {
    metric: String,
    #[serde(default)]
    unit: String,
    table: Table,
    address: u32,
    #[serde(rename = "type")]
    ty: String,
    length: Option<u32>,
    #[serde(default = "one")]
    scale: f64,
    #[serde(default)]
    offset: f64,
    component: Option<ComponentDef>,
}

const fn one() -> f64 {
    1.0
}

/// Parses and validates one map file. `file` names it in errors; `expected_name` is the name
/// the file must declare.
///
/// # Errors
/// Every problem found, each naming the file and the key.
pub fn parse(file: &str, expected_name: &str, text: &str) -> Result<RegisterMap, MapErrors> {
    let err = |key: &str, detail: String| MapError {
        file: file.to_owned(),
        key: key.to_owned(),
        detail,
    };
    let raw: RawMap = toml::from_str(text).map_err(|e| {
        let line = e
            .span()
            .map(|s| text[..s.start.min(text.len())].lines().count().max(1));
        let key = line.map_or_else(|| "(syntax)".to_owned(), |l| format!("line {l}"));
        MapErrors(vec![err(&key, e.message().to_owned())])
    })?;
    let mut errors = Vec::new();
    if raw.name != expected_name {
        errors.push(err(
            "name",
            format!("'{}' does not match the file name '{expected_name}'", raw.name),
        ));
    }
    let max_registers = check_range(
        raw.max_registers.unwrap_or(125),
        1,
        125,
        "max_registers",
        &err,
        &mut errors,
    );
    let max_bits = check_range(
        raw.max_bits.unwrap_or(2000),
        1,
        2000,
        "max_bits",
        &err,
        &mut errors,
    );
    let max_gap = check_range(raw.max_gap, 0, 124, "max_gap", &err, &mut errors);
    for (i, h) in raw.holes.iter().enumerate() {
        if h.end < h.start {
            errors.push(err(&format!("holes[{i}]"), "end is before start".into()));
        }
    }
    let point = |key: &str,
                 table: Table,
                 address: u32,
                 ty: &str,
                 length: Option<u32>,
                 errors: &mut Vec<MapError>| {
        let ty = match (ty, length) {
            ("string", Some(len)) if (1..=125).contains(&len) => ValueType::String {
                len: u16::try_from(len).unwrap_or(1),
            },
            ("string", _) => {
                errors.push(err(
                    &format!("{key}.length"),
                    "strings need a length of 1-125 registers".into(),
                ));
                return None;
            }
            (_, Some(_)) => {
                errors.push(err(&format!("{key}.length"), "only strings have a length".into()));
                return None;
            }
            ("bool", None) => ValueType::Bool,
            ("int16", None) => ValueType::Int16,
            ("uint16", None) => ValueType::Uint16,
            ("int32", None) => ValueType::Int32,
            ("uint32", None) => ValueType::Uint32,
            ("int64", None) => ValueType::Int64,
            ("uint64", None) => ValueType::Uint64,
            ("float32", None) => ValueType::Float32,
            ("float64", None) => ValueType::Float64,
            (other, None) => {
                errors.push(err(
                    &format!("{key}.type"),
                    format!("unknown type '{other}' (bool, int16, uint16, int32, uint32, int64, uint64, float32, float64, string)"),
                ));
                return None;
            }
        };
        if table.is_bits() != (ty == ValueType::Bool) {
            errors.push(err(
                &format!("{key}.type"),
                format!(
                    "{table} hold {}",
                    if table.is_bits() {
                        "only bool"
                    } else {
                        "registers, not bool"
                    }
                ),
            ));
            return None;
        }
        let Ok(address) = u16::try_from(address) else {
            errors.push(err(
                &format!("{key}.address"),
                format!("{address} is beyond 65535"),
            ));
            return None;
        };
        if u32::from(address) + u32::from(ty.width()) > 0x1_0000 {
            errors.push(err(
                &format!("{key}.address"),
                "value runs past address 65535".into(),
            ));
            return None;
        }
        let limit = if table.is_bits() { max_bits } else { max_registers };
        if ty.width() > limit {
            errors.push(err(
                &format!("{key}.length"),
                format!(
                    "{} registers do not fit in one request of max_registers = {limit}",
                    ty.width()
                ),
            ));
            return None;
        }
        let p = Point { table, address, ty };
        let end = address + (ty.width() - 1);
        if let Some(h) = raw
            .holes
            .iter()
            .find(|h| h.table == table && h.start <= end && address <= h.end)
        {
            errors.push(err(
                &format!("{key}.address"),
                format!(
                    "{} lies in a hole ({} 0x{:04X}-0x{:04X})",
                    p.source(),
                    table.short(),
                    h.start,
                    h.end
                ),
            ));
            return None;
        }
        Some(p)
    };
    let mut identity = Vec::new();
    let mut seen_fields = BTreeMap::new();
    for (i, r) in raw.identity.iter().enumerate() {
        let key = format!("identity[{i}]");
        if let Some(prev) = seen_fields.insert(format!("{:?}", r.field), i) {
            errors.push(err(
                &format!("{key}.field"),
                format!("already given by identity[{prev}]"),
            ));
        }
        if let Some(point) = point(&key, r.table, r.address, &r.ty, r.length, &mut errors) {
            identity.push(IdentityDef {
                field: r.field,
                point,
            });
        }
    }
    let mut readings = Vec::new();
    for (i, r) in raw.reading.iter().enumerate() {
        let key = format!("reading[{i}]");
        match VOCABULARY.iter().find(|(m, _)| *m == r.metric) {
            None => errors.push(err(
                &format!("{key}.metric"),
                format!(
                    "'{}' is not in the reading vocabulary (docs/ARCHITECTURE.md)",
                    r.metric
                ),
            )),
            Some((_, unit)) if *unit != r.unit => errors.push(err(
                &format!("{key}.unit"),
                format!(
                    "{} is reported in '{unit}', not '{}' (convert with scale)",
                    r.metric, r.unit
                ),
            )),
            Some(_) => {}
        }
        if !r.scale.is_finite() || r.scale == 0.0 || !r.offset.is_finite() {
            errors.push(err(
                &format!("{key}.scale"),
                "scale must be finite and non-zero, offset finite".into(),
            ));
        }
        if let Some(c) = &r.component
            && c.kind == ComponentKind::Phase
            && !(1..=3).contains(&c.index)
        {
            errors.push(err(
                &format!("{key}.component.index"),
                "phases are numbered 1-3".into(),
            ));
        }
        if matches!(r.ty.as_str(), "string") {
            errors.push(err(&format!("{key}.type"), "a reading must be numeric".into()));
            continue;
        }
        if let Some(point) = point(&key, r.table, r.address, &r.ty, r.length, &mut errors) {
            readings.push(ReadingDef {
                metric: r.metric.clone(),
                unit: r.unit.clone(),
                point,
                scale: r.scale,
                offset: r.offset,
                component: r.component.clone(),
            });
        }
    }
    if identity.is_empty() && readings.is_empty() {
        errors.push(err("reading", "the map reads nothing".into()));
    }
    if !errors.is_empty() {
        return Err(MapErrors(errors));
    }
    Ok(RegisterMap {
        name: raw.name,
        file: file.to_owned(),
        vendor: raw.vendor,
        model: raw.model,
        device_class: raw.device_class,
        word_order: raw.word_order,
        byte_order: raw.byte_order,
        max_registers,
        max_bits,
        max_gap,
        holes: raw.holes,
        identity,
        readings,
    })
}

fn check_range(
    v: u32,
    lo: u32,
    hi: u32,
    key: &str,
    err: &impl Fn(&str, String) -> MapError,
    errors: &mut Vec<MapError>,
) -> u16 {
    if (lo..=hi).contains(&v) {
        u16::try_from(v).unwrap_or(u16::MAX)
    } else {
        errors.push(err(key, format!("{v} is outside {lo}-{hi}")));
        // Go on validating with the largest allowed value, so one bad limit reports once.
        u16::try_from(hi).unwrap_or(u16::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_builtin_map_loads_and_validates() {
        for (name, _) in BUILTIN {
            let m = load(name).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(m.name, *name);
            assert!(!m.readings.is_empty(), "{name} has no readings");
        }
    }

    #[test]
    fn sdm630_map_has_its_serial_and_three_phase_voltages() {
        let m = load("sdm630").unwrap();
        let serial = m
            .identity
            .iter()
            .find(|i| i.field == IdentityField::Serial)
            .unwrap();
        assert_eq!(
            serial.point,
            Point {
                table: Table::Holding,
                address: 0xFC00,
                ty: ValueType::Uint32
            }
        );
        let phases: Vec<u32> = m
            .readings
            .iter()
            .filter(|r| r.metric == "voltage")
            .filter_map(|r| r.component.as_ref().map(|c| c.index))
            .collect();
        assert!(phases.starts_with(&[1, 2, 3]), "{phases:?}");
    }

    #[test]
    fn test_rack_ups_map_follows_the_shared_layout() {
        let m = load("test-rack-ups").unwrap();
        let at = |f| m.identity.iter().find(|i| i.field == f).unwrap().point;
        assert_eq!(at(IdentityField::Vendor).address, 0);
        assert_eq!(at(IdentityField::Model).address, 10);
        assert_eq!(
            at(IdentityField::Serial),
            Point {
                table: Table::Holding,
                address: 20,
                ty: ValueType::String { len: 8 }
            }
        );
        assert_eq!(at(IdentityField::Firmware).address, 28);
        let runtime = m.readings.iter().find(|r| r.metric == "battery_runtime").unwrap();
        assert!((runtime.scale - 60.0).abs() < f64::EPSILON, "minutes → seconds");
    }

    #[test]
    fn a_toml_path_loads_a_map_file_and_errors_name_it() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("my-meter.toml");
        std::fs::write(
            &good,
            "name = \"my-meter\"\n[[reading]]\nmetric = \"power\"\nunit = \"W\"\ntable = \"input\"\naddress = 0\ntype = \"int32\"\n",
        )
        .unwrap();
        let m = load(good.to_str().unwrap()).unwrap();
        assert_eq!(m.readings[0].point.ty, ValueType::Int32);
        let bad = dir.path().join("other.toml");
        std::fs::write(&bad, "name = \"my-meter\"\nmax_gap = 500\n").unwrap();
        let e = load(bad.to_str().unwrap()).unwrap_err().to_string();
        assert!(
            e.contains("other.toml: name: 'my-meter' does not match the file name 'other'"),
            "{e}"
        );
        assert!(e.contains("other.toml: max_gap: 500 is outside 0-124"), "{e}");
        let e = load(dir.path().join("missing.toml").to_str().unwrap())
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing.toml: (file):"), "{e}");
    }

    #[test]
    fn unknown_map_name_lists_the_builtin_ones() {
        let e = load("nope").unwrap_err().to_string();
        assert!(
            e.contains("nope.toml: map: no built-in register map 'nope'"),
            "{e}"
        );
        assert!(e.contains("sdm630"), "{e}");
    }

    #[test]
    fn validation_reports_every_problem_with_file_and_key() {
        let text = r#"
name = "other"
max_registers = 200
holes = [{ table = "input", start = 10, end = 19 }]
[[identity]]
field = "serial"
table = "holding"
address = 0
type = "string"
[[reading]]
metric = "volts"
unit = "V"
table = "input"
address = 0
type = "float32"
[[reading]]
metric = "energy"
unit = "Wh"
table = "input"
address = 2
type = "uint32"
[[reading]]
metric = "voltage"
unit = "V"
table = "input"
address = 12
type = "float32"
[[reading]]
metric = "status"
table = "coil"
address = 0
type = "uint16"
[[reading]]
metric = "current"
unit = "A"
table = "input"
address = 65535
type = "float32"
component = { kind = "phase", index = 4 }
"#;
        let e = parse("bad.toml", "bad", text).unwrap_err();
        let lines: Vec<String> = e.0.iter().map(ToString::to_string).collect();
        let expect = [
            "bad.toml: name: 'other' does not match the file name 'bad'",
            "bad.toml: max_registers: 200 is outside 1-125",
            "bad.toml: identity[0].length: strings need a length",
            "bad.toml: reading[0].metric: 'volts' is not in the reading vocabulary",
            "bad.toml: reading[1].unit: energy is reported in 'kW.h', not 'Wh'",
            "bad.toml: reading[2].address: IR 0x000C lies in a hole (IR 0x000A-0x0013)",
            "bad.toml: reading[3].type: coils hold only bool",
            "bad.toml: reading[4].component.index: phases are numbered 1-3",
            "bad.toml: reading[4].address: value runs past address 65535",
        ];
        for x in expect {
            assert!(
                lines.iter().any(|l| l.starts_with(x)),
                "missing {x:?} in {lines:#?}"
            );
        }
        assert_eq!(lines.len(), expect.len(), "{lines:#?}");
    }

    #[test]
    fn unknown_keys_and_syntax_errors_name_the_line() {
        let e = parse("x.toml", "x", "name = \"x\"\n[[reading]]\nmetrik = \"power\"\n").unwrap_err();
        let s = e.to_string();
        // toml points at the table holding the unknown key.
        assert!(s.starts_with("x.toml: line 2: unknown field `metrik`"), "{s}");
    }
}
