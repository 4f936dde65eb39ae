//! One physical device seen through several protocols (issue #9).
//!
//! A server answers Redfish and IPMI from the same BMC, and its MACs show up in switches' FDBs.
//! The collector keeps it as **one** device:
//!
//! * **Same serial**: reports with equal normalised serials share the key `serial:<S>` already.
//!   Their identity fields are merged by protocol precedence ([`rank`]): Redfish, then IPMI,
//!   then SNMP, then Modbus. A report of equal or higher precedence sets every field it carries;
//!   a lower one only fills empty fields — so an IPMI poll without a hostname does not blank the
//!   hostname Redfish reported, and the device does not flap between two models. When the
//!   higher source has been silent for [`TAKEOVER_AFTER`], the next source takes over.
//! * **No usable serial, known BMC MAC**: an IPMI FRU that says `To Be Filled By O.E.M.` would
//!   otherwise be a separate endpoint-keyed device. When its management (BMC) MAC belongs to
//!   exactly one device with a serial, the report is filed under that device ([`resolve_keys`])
//!   and an endpoint-keyed record made before the serial was known is folded into it
//!   ([`fold_endpoint_devices`]): readings, MACs and evidence move, its open exceptions resolve.
//! * **Two serials, one BMC MAC, different protocols** is not merged: it is either one server
//!   whose protocols report different serial forms or a cloned MAC, and the collector does not
//!   guess. Both devices get an `identity_conflict` exception (see `reconcile::desired`) until an
//!   operator resolves it. Devices that one and the same protocol reports are two systems even
//!   with one MAC (a vendor's default BMC MAC): no conflict.
//!
//! Only management MACs are used to merge: a BMC's MAC is one per server, while host NIC MACs
//! can move with a card and virtual MACs repeat.

use std::collections::{BTreeSet, HashMap};

use groundtruth_proto::v1::{DeviceReport, MacRole, Protocol};
use sqlx::{Any, Row as _};

use super::{StoreError, now};

/// How long the source of higher precedence may be silent before a lower one takes over the
/// identity fields (e.g. Redfish disabled on a BMC that still answers IPMI).
pub(super) const TAKEOVER_AFTER: std::time::Duration = std::time::Duration::from_secs(86_400);

const MANAGEMENT: &str = "MAC_ROLE_MANAGEMENT";

/// Precedence of a protocol's identity (lower wins): Redfish describes the whole system,
/// IPMI's FRU is often half-filled, SNMP and Modbus see what a vendor profile maps.
#[must_use]
pub(super) fn rank(protocol: i32) -> i64 {
    match Protocol::try_from(protocol) {
        Ok(Protocol::Redfish) => 1,
        Ok(Protocol::Ipmi) => 2,
        Ok(Protocol::Snmp) => 3,
        Ok(Protocol::Modbus) => 4,
        _ => 9,
    }
}

/// The canonical management MACs a report carries.
pub(super) fn management_macs(report: &DeviceReport) -> BTreeSet<String> {
    report
        .identity
        .iter()
        .flat_map(|id| &id.macs)
        .filter(|m| m.role == MacRole::Management as i32)
        .filter_map(|m| groundtruth_proto::mac::canonical(&m.address))
        .collect()
}

/// `$first, $first+1, …` for an `IN (…)` list of `n` values.
fn placeholders(first: usize, n: usize) -> String {
    (first..first + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Rewrites the keys of serial-less reports (`endpoint:…`) to the serial-keyed device that owns
/// their management MAC, when exactly one does — in this batch or in the store.
pub(super) async fn resolve_keys(
    tx: &mut sqlx::Transaction<'_, Any>,
    reports: &mut [(String, &DeviceReport)],
) -> Result<(), StoreError> {
    let mut owners: HashMap<String, BTreeSet<String>> = HashMap::new();
    for (key, r) in reports.iter() {
        if key.starts_with("serial:") {
            for mac in management_macs(r) {
                owners.entry(mac).or_default().insert(key.clone());
            }
        }
    }
    for (key, r) in reports.iter_mut() {
        if key.starts_with("serial:") {
            continue;
        }
        let macs: Vec<String> = management_macs(r).into_iter().collect();
        if macs.is_empty() {
            continue;
        }
        let sql = format!(
            "SELECT DISTINCT d.device_key FROM device_macs m JOIN devices d ON d.id = m.device_id
             WHERE m.role = '{MANAGEMENT}' AND d.serial <> '' AND m.address IN ({})",
            placeholders(1, macs.len())
        );
        let mut q = sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(sql));
        for m in &macs {
            q = q.bind(m);
        }
        let mut found: BTreeSet<String> = q.fetch_all(&mut **tx).await?.into_iter().collect();
        for m in &macs {
            found.extend(owners.get(m).into_iter().flatten().cloned());
        }
        if let [one] = found.into_iter().collect::<Vec<_>>().as_slice() {
            tracing::debug!(from = %key, to = %one, "Serial-less report filed under the device owning its BMC MAC.");
            key.clone_from(one);
        }
    }
    Ok(())
}

/// Folds endpoint-keyed devices that share a management MAC with one of `targets`
/// (serial-keyed devices of a batch, in key order, with their management MACs) into the first
/// such target: their history, MACs, evidence, attributes and sources move where the target has
/// no row of its own, the rest is dropped with the old device, and their open exceptions are
/// resolved with an audit line saying why. One lookup for the whole batch.
pub(super) async fn fold_endpoint_devices(
    tx: &mut sqlx::Transaction<'_, Any>,
    targets: &[(i64, String, BTreeSet<String>)],
) -> Result<(), StoreError> {
    let macs: Vec<&String> = targets
        .iter()
        .flat_map(|t| &t.2)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut found: Vec<(String, i64, String)> = Vec::new();
    for chunk in macs.chunks(500) {
        let sql = format!(
            "SELECT DISTINCT m.address, d.id, d.device_key FROM device_macs m JOIN devices d ON d.id = m.device_id
             WHERE m.role = '{MANAGEMENT}' AND d.serial = '' AND m.address IN ({})",
            placeholders(1, chunk.len())
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for m in chunk {
            q = q.bind(*m);
        }
        found.extend(
            q.fetch_all(&mut **tx)
                .await?
                .into_iter()
                .map(|r| (r.get("address"), r.get("id"), r.get("device_key"))),
        );
    }
    let mut folded = std::collections::HashSet::new();
    for (into_id, into_key, management) in targets {
        for (address, old_id, old_key) in &found {
            if management.contains(address) && *old_id != *into_id && folded.insert(*old_id) {
                fold(tx, (*old_id, old_key), (*into_id, into_key)).await?;
            }
        }
    }
    Ok(())
}

/// The statements that move `table`'s rows from device `$2` to device `$1` (by column `col`)
/// where the target has no row with the same `unique` columns (comma-separated; empty: move
/// all), and then delete what stayed behind (`$1`: the old device).
fn move_rows_sql(table: &str, col: &str, unique: &str) -> (String, String) {
    let keep = if unique.is_empty() {
        String::new()
    } else {
        let same = unique
            .split(", ")
            .map(|c| format!("n.{c} = {table}.{c}"))
            .collect::<Vec<_>>()
            .join(" AND ");
        format!(" AND NOT EXISTS (SELECT 1 FROM {table} n WHERE n.{col} = $1 AND {same})")
    };
    (
        format!("UPDATE {table} SET {col} = $1 WHERE {col} = $2{keep}"),
        format!("DELETE FROM {table} WHERE {col} = $1"),
    )
}

async fn fold(
    tx: &mut sqlx::Transaction<'_, Any>,
    (old_id, old_key): (i64, &str),
    (new_id, new_key): (i64, &str),
) -> Result<(), StoreError> {
    tracing::info!(
        from = old_key,
        into = new_key,
        "Folded a serial-less device into the device owning its BMC MAC."
    );
    // Rows keyed by device id, then by device key: move what the target lacks (no row with the
    // same `unique` columns), drop the rest.
    const BY_ID: [(&str, &str, &str); 7] = [
        ("readings", "device_id", ""),
        ("topology", "switch_device_id", ""),
        ("device_macs", "device_id", "address"),
        ("location_evidence", "device_id", "source"),
        (
            "latest_readings",
            "device_id",
            "metric, unit, component_kind, component_index",
        ),
        (
            "readings_hourly",
            "device_id",
            "metric, unit, component_kind, component_index, hour",
        ),
        ("device_sources", "device_id", "protocol, agent_id, endpoint_key"),
    ];
    const BY_KEY: [(&str, &str, &str); 3] = [
        ("device_attributes", "device_key", "name"),
        ("location_pins", "device_key", ""),
        ("exception_ignores", "device_key", "kind"),
    ];
    for (table, col, unique) in BY_ID {
        let (update, delete) = move_rows_sql(table, col, unique);
        sqlx::query(sqlx::AssertSqlSafe(update))
            .bind(new_id)
            .bind(old_id)
            .execute(&mut **tx)
            .await?;
        sqlx::query(sqlx::AssertSqlSafe(delete))
            .bind(old_id)
            .execute(&mut **tx)
            .await?;
    }
    for (table, col, unique) in BY_KEY {
        let (update, delete) = move_rows_sql(table, col, unique);
        sqlx::query(sqlx::AssertSqlSafe(update))
            .bind(new_key)
            .bind(old_key)
            .execute(&mut **tx)
            .await?;
        sqlx::query(sqlx::AssertSqlSafe(delete))
            .bind(old_key)
            .execute(&mut **tx)
            .await?;
    }
    let t = now();
    let note = format!("folded into {new_key}: same BMC MAC");
    sqlx::query(
        "INSERT INTO exception_audit (at, exception_id, device_key, kind, action, actor, note, detail)
         SELECT $1, id, device_key, kind, 'merged', 'collector', $2, detail FROM exceptions
         WHERE device_key = $3 AND resolved_at IS NULL",
    )
    .bind(&t)
    .bind(&note)
    .bind(old_key)
    .execute(&mut **tx)
    .await?;
    sqlx::query(
        "UPDATE exceptions SET resolved_at = $1, resolved_by = 'collector' WHERE device_key = $2 AND resolved_at IS NULL",
    )
    .bind(&t)
    .bind(old_key)
        .execute(&mut **tx)
        .await?;
    sqlx::query("DELETE FROM devices WHERE id = $1")
        .bind(old_id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redfish_outranks_ipmi_outranks_snmp_and_modbus() {
        let r = |p: Protocol| rank(p as i32);
        assert!(r(Protocol::Redfish) < r(Protocol::Ipmi));
        assert!(r(Protocol::Ipmi) < r(Protocol::Snmp));
        assert!(r(Protocol::Snmp) < r(Protocol::Modbus));
        assert!(r(Protocol::Modbus) < rank(99));
    }

    #[test]
    fn placeholders_number_from_the_first() {
        assert_eq!(placeholders(2, 3), "$2, $3, $4");
        assert_eq!(placeholders(1, 1), "$1");
    }
}
