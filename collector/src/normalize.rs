//! Normalisation before matching: serials, asset tags, vendors. Junk is not identity: placeholder
//! serials and tags (`To Be Filled By O.E.M.`, `0123456789`, all zeros, anonymised values; the
//! rules are data shared with the agent, `groundtruth_proto::identity`) are treated as absent, so
//! two unrelated boards with the same placeholder never merge.

use std::collections::HashMap;
use std::sync::OnceLock;

/// Canonical serial: trimmed, upper case, or `None` when the value is not a usable identifier
/// (the shared rules of `groundtruth_proto::identity`, data in `proto/data/junk_identity.toml`).
#[must_use]
pub fn serial(raw: &str) -> Option<String> {
    groundtruth_proto::identity::usable(raw, &[])
}

/// [`serial`], also refusing a value equal to the device's model or part number (`related`).
#[must_use]
pub fn serial_of(raw: &str, related: &[&str]) -> Option<String> {
    groundtruth_proto::identity::usable(raw, related)
}

/// An asset tag that identifies something, trimmed (as the device reported it), or `None` for a
/// placeholder: such a tag is never matched on and never written.
#[must_use]
pub fn asset_tag(raw: &str) -> Option<String> {
    groundtruth_proto::identity::usable(raw, &[]).map(|_| raw.trim().to_owned())
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

    /// The rules themselves are tested in `groundtruth_proto::identity`; here, that serials and
    /// asset tags go through them.
    #[test]
    fn junk_serials_and_asset_tags_are_not_identity() {
        for j in [
            "",
            "To Be Filled By O.E.M.",
            "01234567890123456789AB",
            "CZXXXXXXXX",
        ] {
            assert_eq!(serial(j), None, "{j:?}");
        }
        assert_eq!(asset_tag("Free form asset tag"), None);
        assert_eq!(asset_tag(" A-00123 ").as_deref(), Some("A-00123"));
        assert_eq!(serial_of("R740", &["R740"]), None);
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
