//! Which serial numbers and asset tags identify a device, shared by the agent (which picks the
//! usable one of several candidates) and the collector (which keys, matches and writes only
//! usable ones). The rules are data: `data/junk_identity.toml`, with where each came from.

use std::sync::OnceLock;

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Rules {
    exact: Vec<String>,
    patterns: Vec<String>,
    min_len: usize,
    repeated_char: bool,
    run_min: usize,
    run_tail: usize,
    equals_model: bool,
}

#[derive(Debug)]
struct Compiled {
    rules: Rules,
    exact: std::collections::HashSet<String>,
    patterns: regex::RegexSet,
}

/// Letters and digits only, upper case: the form values are compared in.
fn compact(s: &str) -> String {
    s.chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_uppercase())
        .collect()
}

fn compiled() -> &'static Compiled {
    static RULES: OnceLock<Compiled> = OnceLock::new();
    RULES.get_or_init(|| {
        #[allow(clippy::expect_used)]
        let rules: Rules = toml::from_str(include_str!("../data/junk_identity.toml"))
            .expect("invariant: data/junk_identity.toml is valid (checked by unit test)");
        #[allow(clippy::expect_used)]
        let patterns = regex::RegexSet::new(&rules.patterns)
            .expect("invariant: data/junk_identity.toml patterns compile (checked by unit test)");
        let exact = rules.exact.iter().map(|e| compact(e)).collect();
        Compiled {
            rules,
            exact,
            patterns,
        }
    })
}

/// Length of the ascending or descending run of digits (wrapping 9→0) or letters that `c`
/// starts with.
fn run_len(c: &[u8]) -> usize {
    let step = |a: u8, b: u8, dir: i8| -> bool {
        match (a.is_ascii_digit(), b.is_ascii_digit()) {
            (true, true) => {
                let (a, b) = (i16::from(a - b'0'), i16::from(b - b'0'));
                (a + i16::from(dir)).rem_euclid(10) == b
            }
            (false, false) => i16::from(a) + i16::from(dir) == i16::from(b),
            _ => false,
        }
    };
    let longest = |dir: i8| {
        let mut n = usize::from(!c.is_empty());
        while n < c.len() && step(c[n - 1], c[n], dir) {
            n += 1;
        }
        n
    };
    longest(1).max(longest(-1))
}

/// Why `value` is not an identifier, or `None` when it is usable. `related` are the device's
/// model and part number (a serial equal to one of them is a copied field; not the SKU, which
/// Dell fills with the Service Tag).
#[must_use]
pub fn junk_reason(value: &str, related: &[&str]) -> Option<&'static str> {
    let c = compiled();
    let trimmed = value.trim().trim_matches(char::from(0)).trim();
    let upper = trimmed.to_ascii_uppercase();
    let k = compact(trimmed);
    if k.len() < c.rules.min_len {
        return Some("too short");
    }
    if c.exact.contains(&k) {
        return Some("a known placeholder");
    }
    if c.patterns.is_match(&upper) {
        return Some("a placeholder pattern");
    }
    if c.rules.repeated_char && k.bytes().all(|b| b == k.as_bytes()[0]) {
        return Some("one character repeated");
    }
    let run = run_len(k.as_bytes());
    if run >= c.rules.run_min && k.len() - run <= c.rules.run_tail {
        return Some("a run of consecutive characters");
    }
    if c.rules.equals_model && related.iter().any(|r| !r.trim().is_empty() && compact(r) == k) {
        return Some("equal to the model or part number");
    }
    None
}

/// `value` trimmed and upper-cased when it identifies something, else `None` (see
/// [`junk_reason`]).
#[must_use]
pub fn usable(value: &str, related: &[&str]) -> Option<String> {
    junk_reason(value, related).is_none().then(|| {
        value
            .trim()
            .trim_matches(char::from(0))
            .trim()
            .to_ascii_uppercase()
    })
}

/// The first of `candidates` that is usable, as the device reported it (trimmed); empty when
/// none is.
#[must_use]
pub fn first_usable<'a>(candidates: impl IntoIterator<Item = &'a str>, related: &[&str]) -> String {
    candidates
        .into_iter()
        .find(|v| junk_reason(v, related).is_none())
        .map(|v| v.trim().to_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rules_file_loads_and_every_exact_value_is_junk_by_itself() {
        let c = compiled();
        assert_eq!(c.patterns.len(), c.rules.patterns.len());
        for e in &c.rules.exact {
            assert!(junk_reason(e, &[]).is_some(), "{e:?}");
        }
    }

    #[test]
    fn placeholders_are_not_identity() {
        for j in [
            "",
            "  ",
            "To Be Filled By O.E.M.",
            "Not Specified",
            "0123456789",
            "01234567890123456789AB",
            "1234567890",
            "123456789",
            "9876543210",
            "ABCDEFGH",
            "000000000",
            "FFFFFFFF",
            "1111111111",
            "CZXXXXXXXX",
            "<private>",
            "N/A",
            "Default string",
            "System Serial Number",
            "Free form asset tag",
            "Asset-1234567890",
            "*****",
            "\0\0\0",
        ] {
            assert!(junk_reason(j, &[]).is_some(), "{j:?}");
        }
    }

    #[test]
    fn real_serials_are_usable() {
        for s in [
            "GJG9NF512A000302",
            "437XR1138R2",
            "GTSRV0000001",
            "MXQ019020B",
            "CN7475154W00HN",
            "2M220100SL",
            "ZA1234567",
            "SN-PACE-1",
            "5CG1234XYZ",
            "ABC",
        ] {
            assert_eq!(junk_reason(s, &[]), None, "{s:?}");
        }
        assert_eq!(usable(" 437xr1138r2 ", &[]).as_deref(), Some("437XR1138R2"));
    }

    #[test]
    fn a_serial_copied_from_the_model_is_junk_and_the_first_usable_candidate_wins() {
        assert!(junk_reason("H262-Z63-00", &["H262-Z63-00"]).is_some());
        assert_eq!(junk_reason("H262-Z63-00", &[""]), None);
        assert_eq!(
            first_usable(["01234567890123456789AB", " GJG9NF512A000302 "], &["H262-Z63"]),
            "GJG9NF512A000302"
        );
        assert_eq!(first_usable(["Default string", "N/A"], &[]), "");
    }
}
