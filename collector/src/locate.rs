//! The location engine: from every piece of evidence about a device to one rack/U, or to an
//! exception when evidence of similar strength disagrees.
//!
//! Evidence, strongest first: manual > Redfish placement > site map > topology > sysLocation
//! text > asset-tag text. Text evidence (SNMP sysLocation, FRU/Redfish asset tags) arrives raw
//! and is parsed here with configurable patterns (`collector/data/location-patterns.toml` plus
//! the operator's own), so a site can teach groundtruth its naming without new agents.
//!
//! Conflict rule: the strongest evidence wins outright over evidence two or more levels weaker
//! (a Redfish placement beats a stale sysLocation). When the strongest two sources are adjacent
//! in strength (or equal) and name different racks or U positions, nothing is guessed: the
//! device gets a `location_conflict` exception naming both sides. A manual pin (an operator's
//! word, set through the exception actions) wins outright over everything.

use regex::Regex;
use serde::Deserialize;

use crate::store::EvidenceRow;

/// Strength of a location source; higher wins.
#[must_use]
pub fn rank(source: &str) -> u8 {
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

/// Which text a pattern applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TextSource {
    SysLocation,
    AssetTag,
    Any,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPattern {
    name: String,
    applies_to: TextSource,
    regex: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PatternFile {
    #[serde(rename = "pattern")]
    patterns: Vec<RawPattern>,
}

/// A compiled text pattern with named groups `site`, `room`, `row`, `rack`, `u` (all optional
/// but `rack`).
#[derive(Debug, Clone)]
pub struct Pattern {
    pub name: String,
    pub applies_to: TextSource,
    regex: Regex,
}

/// The built-in patterns (data file, validated by a unit test).
const BUILTIN: &str = include_str!("../data/location-patterns.toml");

/// Compiles pattern definitions (TOML, `[[pattern]]` tables); `origin` names the file in errors.
///
/// # Errors
/// A message naming the file, the pattern and what is wrong with it.
pub fn parse_patterns(text: &str, origin: &str) -> Result<Vec<Pattern>, String> {
    let file: PatternFile = toml::from_str(text).map_err(|e| format!("{origin}: {}", e.message()))?;
    file.patterns
        .into_iter()
        .map(|p| {
            let regex = Regex::new(&p.regex).map_err(|e| format!("{origin}: pattern {:?}: {e}", p.name))?;
            if !regex.capture_names().flatten().any(|n| n == "rack") {
                return Err(format!(
                    "{origin}: pattern {:?} has no (?P<rack>...) group",
                    p.name
                ));
            }
            Ok(Pattern {
                name: p.name,
                applies_to: p.applies_to,
                regex,
            })
        })
        .collect()
}

/// The built-in patterns followed by `extra` (the operator's, tried first).
///
/// # Errors
/// If the operator's patterns do not compile.
pub fn patterns_with(extra: Option<(&str, &str)>) -> Result<Vec<Pattern>, String> {
    let mut out = match extra {
        Some((text, origin)) => parse_patterns(text, origin)?,
        None => Vec::new(),
    };
    out.extend(parse_patterns(BUILTIN, "built-in location patterns")?);
    Ok(out)
}

/// Parses location text with the first matching pattern.
#[must_use]
pub fn parse_text(patterns: &[Pattern], source: TextSource, text: &str) -> Option<EvidenceRow> {
    let text = text.trim();
    patterns
        .iter()
        .filter(|p| p.applies_to == source || p.applies_to == TextSource::Any)
        .find_map(|p| {
            let c = p.regex.captures(text)?;
            let get = |n: &str| {
                c.name(n)
                    .map(|m| m.as_str().trim().to_owned())
                    .unwrap_or_default()
            };
            let rack = get("rack");
            if rack.is_empty() {
                return None;
            }
            Some(EvidenceRow {
                via: String::new(),
                source: match source {
                    TextSource::AssetTag => "LOCATION_SOURCE_ASSET_TAG".into(),
                    _ => "LOCATION_SOURCE_SYS_LOCATION".into(),
                },
                site: get("site"),
                room: get("room"),
                row: get("row"),
                rack,
                u_position: get("u").parse().ok().filter(|u| (1..=100).contains(u)),
                confidence: 0.5,
                raw: format!("{text} (pattern {})", p.name),
            })
        })
}

/// The outcome for one device.
#[derive(Debug, Clone, PartialEq)]
pub enum Located {
    At(EvidenceRow),
    Unknown,
    Conflict { detail: String },
}

/// Completes text evidence with the patterns, adds the device's asset tag as evidence, and
/// decides.
#[must_use]
pub fn locate(evidence: &[EvidenceRow], asset_tag: &str, patterns: &[Pattern]) -> Located {
    let mut all: Vec<EvidenceRow> = evidence
        .iter()
        .filter_map(|e| {
            if !e.rack.is_empty() {
                return Some(e.clone());
            }
            let source = match e.source.as_str() {
                "LOCATION_SOURCE_SYS_LOCATION" => TextSource::SysLocation,
                "LOCATION_SOURCE_ASSET_TAG" => TextSource::AssetTag,
                _ => return None,
            };
            parse_text(patterns, source, &e.raw)
        })
        .collect();
    if !asset_tag.trim().is_empty()
        && !all.iter().any(|e| e.source == "LOCATION_SOURCE_ASSET_TAG")
        && let Some(e) = parse_text(patterns, TextSource::AssetTag, asset_tag)
    {
        all.push(e);
    }
    all.sort_by(|a, b| {
        rank(&b.source)
            .cmp(&rank(&a.source))
            .then(b.confidence.total_cmp(&a.confidence))
    });
    let Some(best) = all.first() else {
        return Located::Unknown;
    };
    // The strongest *other* source (several rows from one source are not a conflict).
    if let Some(rival) = all.iter().find(|e| e.source != best.source)
        && best.source != "LOCATION_SOURCE_MANUAL"
        && rank(&best.source) - rank(&rival.source) <= 1
        && (!same_rack(best, rival)
            || (best.u_position.is_some()
                && rival.u_position.is_some()
                && best.u_position != rival.u_position))
    {
        return Located::Conflict {
            detail: format!(
                "{} says rack {:?} U{} ({}), {} says rack {:?} U{} ({})",
                short(&best.source),
                best.rack,
                u(best.u_position),
                best.raw,
                short(&rival.source),
                rival.rack,
                u(rival.u_position),
                rival.raw
            ),
        };
    }
    Located::At(best.clone())
}

fn same_rack(a: &EvidenceRow, b: &EvidenceRow) -> bool {
    let norm = |s: &str| s.trim().to_ascii_uppercase();
    norm(&a.rack) == norm(&b.rack)
}

fn short(source: &str) -> &str {
    source.trim_start_matches("LOCATION_SOURCE_")
}

fn u(p: Option<u32>) -> String {
    p.map_or_else(|| "?".into(), |u| u.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(source: &str, rack: &str, u: Option<u32>) -> EvidenceRow {
        EvidenceRow {
            source: source.into(),
            rack: rack.into(),
            u_position: u,
            raw: "x".into(),
            ..Default::default()
        }
    }

    fn builtin() -> Vec<Pattern> {
        patterns_with(None).unwrap()
    }

    #[test]
    fn a_manual_pin_ends_a_conflict_and_beats_everything() {
        let conflicting = [
            ev("LOCATION_SOURCE_REDFISH_PLACEMENT", "R07", Some(12)),
            ev("LOCATION_SOURCE_SITE_MAP", "R09", Some(3)),
        ];
        assert!(matches!(locate(&conflicting, "", &[]), Located::Conflict { .. }));
        let mut pinned = conflicting.to_vec();
        pinned.push(ev("LOCATION_SOURCE_MANUAL", "R09", Some(4)));
        match locate(&pinned, "", &[]) {
            Located::At(e) => assert_eq!((e.rack.as_str(), e.u_position), ("R09", Some(4))),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn builtin_patterns_parse_common_syslocation_styles() {
        let p = builtin();
        let cases = [
            (
                "DC1 / Room H1 / Row A / Rack R07 / U40",
                ("DC1", "H1", "A", "R07", Some(40)),
            ),
            ("DC01 / Row A / Rack 07 / U42", ("DC01", "", "A", "07", Some(42))),
            (
                "dc1;room=H1;row=A;rack=R07;u=12",
                ("dc1", "H1", "A", "R07", Some(12)),
            ),
            ("Rack R12, U 20", ("", "", "", "R12", Some(20))),
        ];
        for (text, (site, room, row, rack, u)) in cases {
            let e = parse_text(&p, TextSource::SysLocation, text).unwrap_or_else(|| panic!("{text}"));
            assert_eq!(
                (
                    e.site.as_str(),
                    e.room.as_str(),
                    e.row.as_str(),
                    e.rack.as_str(),
                    e.u_position
                ),
                (site, room, row, rack, u),
                "{text}"
            );
        }
        assert!(parse_text(&p, TextSource::SysLocation, "Sitting on the dock of the bay").is_none());
    }

    #[test]
    fn builtin_asset_tag_pattern() {
        let e = parse_text(&builtin(), TextSource::AssetTag, "DC1-R07-U12").unwrap();
        assert_eq!(
            (e.site.as_str(), e.rack.as_str(), e.u_position),
            ("DC1", "R07", Some(12))
        );
        assert_eq!(e.source, "LOCATION_SOURCE_ASSET_TAG");
        // A plain inventory number is not a location.
        assert!(parse_text(&builtin(), TextSource::AssetTag, "PDX-92381").is_none());
    }

    #[test]
    fn operator_patterns_come_first_and_bad_ones_are_named() {
        let mine = r#"
[[pattern]]
name = "acme"
applies_to = "sys_location"
regex = '^ACME:(?P<rack>[A-Z]\d+):(?P<u>\d+)$'
"#;
        let p = patterns_with(Some((mine, "site.toml"))).unwrap();
        assert_eq!(p[0].name, "acme");
        let e = parse_text(&p, TextSource::SysLocation, "ACME:B4:33").unwrap();
        assert_eq!((e.rack.as_str(), e.u_position), ("B4", Some(33)));
        let err = patterns_with(Some((
            "[[pattern]]\nname = \"x\"\napplies_to = \"any\"\nregex = '(?P<u>\\d+)'\n",
            "site.toml",
        )))
        .unwrap_err();
        assert!(err.contains("site.toml") && err.contains("rack"), "{err}");
        let err = patterns_with(Some((
            "[[pattern]]\nname = \"y\"\napplies_to = \"any\"\nregex = '(?P<rack>['\n",
            "site.toml",
        )))
        .unwrap_err();
        assert!(err.contains("\"y\""), "{err}");
    }

    #[test]
    fn strong_source_beats_weak_text_but_close_sources_conflict() {
        let p = builtin();
        // Redfish (5) vs sysLocation (2): Redfish wins.
        let mut sys = ev("LOCATION_SOURCE_SYS_LOCATION", "", None);
        sys.raw = "DC1 / Room H1 / Row A / Rack R09 / U3".into();
        let got = locate(
            &[
                sys.clone(),
                ev("LOCATION_SOURCE_REDFISH_PLACEMENT", "R07", Some(12)),
            ],
            "",
            &p,
        );
        assert!(matches!(&got, Located::At(e) if e.rack == "R07"), "{got:?}");
        // Redfish (5) vs site map (4) disagreeing on U: conflict, no guess.
        let got = locate(
            &[
                ev("LOCATION_SOURCE_REDFISH_PLACEMENT", "R07", Some(12)),
                ev("LOCATION_SOURCE_SITE_MAP", "R07", Some(14)),
            ],
            "",
            &p,
        );
        assert!(
            matches!(&got, Located::Conflict { detail } if detail.contains("U12") && detail.contains("U14")),
            "{got:?}"
        );
        // Agreeing sources: fine, and rack names compare case-insensitively.
        let got = locate(
            &[
                ev("LOCATION_SOURCE_REDFISH_PLACEMENT", "r07", Some(12)),
                ev("LOCATION_SOURCE_SITE_MAP", "R07", Some(12)),
            ],
            "",
            &p,
        );
        assert!(matches!(got, Located::At(_)));
        // sysLocation (2) vs asset tag (1) disagreeing on the rack: conflict.
        let got = locate(&[sys], "DC1-R07-U12", &p);
        assert!(matches!(&got, Located::Conflict { .. }), "{got:?}");
        // Nothing usable.
        assert_eq!(locate(&[], "", &p), Located::Unknown);
    }
}
