//! MAC address canonical form shared by agent and collector: six lower-case hex octets joined by
//! ':' (`a4:bf:01:28:90:aa`). Devices print MACs as `A4-BF-01-28-90-AA`, `a4bf.0128.90aa`,
//! `a4bf012890aa` or raw octets; all of these must compare equal.

/// Canonicalises a textual MAC. Returns `None` for anything that is not 12 hex digits once the
/// usual separators are removed, and for the all-zero and broadcast addresses (not identity).
#[must_use]
pub fn canonical(text: &str) -> Option<String> {
    let hex: String = text
        .trim()
        .chars()
        .filter(|c| !matches!(c, ':' | '-' | '.' | ' '))
        .collect();
    if hex.len() != 12 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    let mut octets = [0u8; 6];
    for (i, o) in octets.iter_mut().enumerate() {
        *o = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    from_octets(&octets)
}

/// Canonicalises raw octets (SNMP `ifPhysAddress`). `None` unless exactly 6 octets that are
/// neither all zero nor all 0xFF.
#[must_use]
pub fn from_octets(octets: &[u8]) -> Option<String> {
    if octets.len() != 6 || octets.iter().all(|&b| b == 0) || octets.iter().all(|&b| b == 0xff) {
        return None;
    }
    Some(
        octets
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_usual_spellings() {
        for s in [
            "a4-bf-01-28-90-aa",
            "A4BF.0128.90AA",
            "a4bf012890aa",
            "A4:BF:01:28:90:AA",
            " a4:bf:01:28:90:aa ",
        ] {
            assert_eq!(canonical(s).as_deref(), Some("a4:bf:01:28:90:aa"), "{s}");
        }
    }

    #[test]
    fn rejects_junk_zero_and_broadcast() {
        for s in [
            "",
            "a4bf012890",
            "a4bf012890aaff",
            "zz:bf:01:28:90:aa",
            "00:00:00:00:00:00",
            "FFFFFFFFFFFF",
            "<private>",
        ] {
            assert_eq!(canonical(s), None, "{s}");
        }
        assert_eq!(
            from_octets(&[0x28, 0x29, 0x86, 0x06, 0xa4, 0x89]).as_deref(),
            Some("28:29:86:06:a4:89")
        );
        assert_eq!(from_octets(&[1, 2, 3]), None);
    }
}
