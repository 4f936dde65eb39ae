//! Normalisation before matching: serials, vendors. Junk is not identity: placeholder serials
//! (`To Be Filled By O.E.M.`, `0123456789`, all zeros, anonymised values) are treated as absent,
//! so two unrelated boards with the same placeholder never merge.

use std::collections::HashMap;
use std::sync::OnceLock;

/// Canonical serial: trimmed, upper case, or `None` when the value is not a usable identifier.
#[must_use]
pub fn serial(raw: &str) -> Option<String> {
    let s = raw.trim().trim_matches(char::from(0)).trim();
    let upper = s.to_ascii_uppercase();
    let compact: String = upper.chars().filter(char::is_ascii_alphanumeric).collect();
    const JUNK: &[&str] = &[
        "TOBEFILLEDBYOEM",
        "NOTSPECIFIED",
        "NOTAVAILABLE",
        "NONE",
        "NULL",
        "NA",
        "UNKNOWN",
        "DEFAULTSTRING",
        "SYSTEMSERIALNUMBER",
        "CHASSISSERIALNUMBER",
        "0123456789",
        "123456789",
        "1234567890",
        "SERIALNUMBER",
        "PRIVATE",
        "XXXXXXXXXX",
        "EMPTY",
        "INVALID",
        "NOTAPPLICABLE",
    ];
    let junk = compact.len() < 3
        || JUNK.contains(&compact.as_str())
        || compact.chars().all(|c| c == '0')
        || compact.chars().all(|c| c == 'F')
        || compact.chars().all(|c| c == 'X')
        // Anonymised captures ("CZXXXXXXXX", "<private>").
        || compact.ends_with("XXXXXX")
        || s.starts_with('<');
    (!junk).then_some(upper)
}

fn vendor_table() -> &'static HashMap<String, String> {
    static TABLE: OnceLock<HashMap<String, String>> = OnceLock::new();
    TABLE.get_or_init(|| {
        #[derive(serde::Deserialize)]
        struct File {
            canonical: HashMap<String, Vec<String>>,
        }
        let file: File = toml::from_str(include_str!("../data/vendors.toml"))
            .expect("invariant: data/vendors.toml is valid (checked by unit test)");
        let mut map = HashMap::new();
        for (canon, aliases) in file.canonical {
            for a in aliases {
                map.insert(squash(&a), canon.clone());
            }
            map.insert(squash(&canon), canon);
        }
        map
    })
}

fn squash(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ").to_lowercase()
}

/// Canonical vendor name; unknown vendors keep their own spelling (trimmed).
#[must_use]
pub fn vendor(raw: &str) -> String {
    let key = squash(raw);
    vendor_table()
        .get(&key)
        .cloned()
        .unwrap_or_else(|| raw.split_whitespace().collect::<Vec<_>>().join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn junk_serials_are_not_identity() {
        for j in [
            "",
            "  ",
            "To Be Filled By O.E.M.",
            "Not Specified",
            "0123456789",
            "000000000",
            "FFFFFFFF",
            "CZXXXXXXXX",
            "<private>",
            "N/A",
            "Default string",
        ] {
            assert_eq!(serial(j), None, "{j:?}");
        }
    }

    #[test]
    fn real_serials_are_trimmed_and_upper_cased() {
        assert_eq!(serial(" 437xr1138r2 ").as_deref(), Some("437XR1138R2"));
        assert_eq!(serial("GTSRV0000001").as_deref(), Some("GTSRV0000001"));
        assert_eq!(serial("MXQ019020B").as_deref(), Some("MXQ019020B"));
    }

    #[test]
    fn vendor_aliases_collapse() {
        assert_eq!(vendor("Hewlett  Packard Enterprise"), "HPE");
        assert_eq!(vendor("HP"), "HPE");
        assert_eq!(vendor("Super Micro Computer Inc."), "Supermicro");
        assert_eq!(vendor("Dell Inc."), "Dell");
        assert_eq!(vendor("  Groundtruth   Labs "), "Groundtruth Labs");
    }
}
