//! Devices without rack evidence are reconciled too (issue #17), through the whole collector
//! pipeline (agent reports in the store → reconcile → NetBox sync pass) against a real NetBox 4.7
//! seeded with stale records of our own making. Included from `netbox.rs`.
//!
//! None of the reported devices says where it is. Expected, device by device:
//! * U1, serial in NetBox in R01 U10 with CMDB-owned status and comments: MACs and power written,
//!   rack, U, status and comments untouched;
//! * U2, a serial-less NetBox record carrying its host MAC: the serial is written, nothing moved;
//! * U3, two NetBox records with its serial: `duplicate_serial_in_cmdb`, neither touched;
//! * U4, a placeholder asset tag ("Free form asset tag") that a NetBox record also carries:
//!   never matched on, never written; not in NetBox otherwise, so not created (`no_location`);
//! * U5, an old agent's placeholder serial (AMI's "01234567890123456789AB") that a NetBox
//!   record carries: never a key, never matched;
//! * U6, nowhere in NetBox: not created, and counted as seen-not-in-CMDB.
//!
//! A second pass then changes nothing in NetBox (NetBox's own change log is counted).

use std::time::Duration;

use groundtruth_collector::store::Store;
use groundtruth_proto::v1::{
    DeviceIdentity, DeviceReport, MacAddress, MacRole, PollOutcome, PollStatus, Reading,
};

use super::apply::{World, power_of, seed_world_named};
use super::*;

fn report(serial: &str, vendor: &str, macs: &[&str], watts: f64, asset_tag: &str) -> DeviceReport {
    DeviceReport {
        identity: Some(DeviceIdentity {
            serial_number: serial.into(),
            vendor: vendor.into(),
            model: "GA-1".into(),
            asset_tag: asset_tag.into(),
            endpoint_key: format!("redfish://bmc-{}:443", serial.to_lowercase()),
            macs: macs
                .iter()
                .enumerate()
                .map(|(i, m)| MacAddress {
                    address: (*m).into(),
                    interface_name: format!("eth{i}"),
                    role: MacRole::Host as i32,
                })
                .collect(),
            ..Default::default()
        }),
        readings: vec![Reading {
            metric: "power".into(),
            unit: "W".into(),
            value: watts,
            ..Default::default()
        }],
        status: Some(PollStatus {
            outcome: PollOutcome::Ok as i32,
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// NetBox's change-log entries for these devices and the objects under them (interfaces, MACs):
/// every write NetBox applied to them makes one or more.
async fn object_changes(p: &Peer, devices: &[u64]) -> u64 {
    let ids: Vec<String> = devices.iter().map(u64::to_string).collect();
    let own = format!(
        "changed_object_type=dcim.device&changed_object_id={}",
        ids.join("&changed_object_id=")
    );
    let related = format!("related_object_id={}", ids.join("&related_object_id="));
    let mut n = 0;
    for q in [own, related] {
        n += p
            .get(&format!("api/core/object-changes/?{q}&limit=1&brief=1"))
            .await["count"]
            .as_u64()
            .unwrap();
    }
    n
}

async fn sync_result(store: &Store, key: &str) -> String {
    store
        .cmdb_sync_state(key)
        .await
        .unwrap()
        .map(|r| r.result)
        .unwrap_or_default()
}

#[tokio::test]
async fn devices_without_rack_evidence_are_matched_and_written_but_never_moved_or_created() {
    let Some(p) = peer("netbox_unlocated") else { return };
    let w: World = seed_world_named(&p, "GT-Unloc").await;
    let t = w.t.clone();
    let serial = |n: &str| format!("GTUL{t}{n}");
    let (m1a, m1b, m2, m4, m5, m6) = (
        random_mac(),
        random_mac(),
        random_mac(),
        random_mac(),
        random_mac(),
        random_mac(),
    );
    let junk_tag = "Free form asset tag";
    let placeholder = "01234567890123456789AB";

    let u1 = w
        .seed_device(
            &p,
            json!({"name": format!("cmdb-u1-{t}"), "serial": serial("1"), "rack": w.r01, "position": 10,
                   "face": "front", "status": "planned", "comments": "owned by the CMDB"}),
        )
        .await;
    let u2 = w
        .seed_device(
            &p,
            json!({"name": format!("cmdb-u2-{t}"), "rack": w.r07, "position": 20, "face": "front"}),
        )
        .await;
    p.add_mac(u2, &m2).await;
    let u3 = [
        w.seed_device(&p, json!({"serial": serial("3")})).await,
        w.seed_device(&p, json!({"serial": serial("3")})).await,
    ];
    // NetBox keeps asset tags unique: an earlier run's record gives the placeholder tag up.
    for old in p
        .list(&format!(
            "api/dcim/devices/?asset_tag={}",
            junk_tag.replace(' ', "%20")
        ))
        .await
    {
        p.patch(
            &format!("api/dcim/devices/{}/", old["id"]),
            &json!({"asset_tag": null}),
        )
        .await;
    }
    let tagged = w
        .seed_device(
            &p,
            json!({"name": format!("cmdb-tag-{t}"), "asset_tag": junk_tag}),
        )
        .await;
    let junk_serial_rec = w
        .seed_device(
            &p,
            json!({"name": format!("cmdb-junk-{t}"), "serial": placeholder}),
        )
        .await;
    p.add_mac(junk_serial_rec, &random_mac()).await;

    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("state.db")).await.unwrap();
    let reports = vec![
        report(&serial("1"), &w.vendor, &[&m1a, &m1b], 310.0, ""),
        report(&serial("2"), &w.vendor, &[&m2], 220.0, ""),
        report(&serial("3"), &w.vendor, &[&random_mac()], 100.0, ""),
        report(&serial("4"), &w.vendor, &[&m4], 90.0, junk_tag),
        report(placeholder, &w.vendor, &[&m5], 80.0, ""),
        report(&serial("6"), &w.vendor, &[&m6], 70.0, ""),
    ];
    store
        .commit_batch(&groundtruth_collector::store::testdb::batch(
            &format!("unloc-{t}"),
            &w.site,
            1,
            reports,
        ))
        .await
        .unwrap();
    let nb = p.netbox();
    let rules = groundtruth_collector::reconcile::Rules::builtin(&w.site);

    let pass = groundtruth_collector::sync::run_pass(&store, &nb, &rules, false)
        .await
        .unwrap();
    eprintln!("pass: {}", summary(&pass.report));
    assert!(pass.report.failures.is_empty(), "{}", summary(&pass.report));
    let kinds: Vec<(String, String)> = store
        .open_exceptions()
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.device_key, e.kind))
        .collect();
    let key = |n: &str| format!("serial:{}", serial(n));
    for (k, kind) in [
        (key("3"), "duplicate_serial_in_cmdb"),
        (key("4"), "no_location"),
        (key("6"), "no_location"),
    ] {
        assert!(
            kinds.contains(&(k.clone(), kind.to_owned())),
            "{k} {kind}: {kinds:?}"
        );
    }
    assert!(
        !kinds.iter().any(|(k, _)| *k == key("1") || *k == key("2")),
        "matched devices raise nothing: {kinds:?}"
    );
    // The placeholder serial keyed nothing: its device is endpoint-keyed and unfit.
    assert!(
        kinds
            .iter()
            .any(|(k, kind)| k.starts_with("endpoint:") && kind == "no_usable_identity"),
        "{kinds:?}"
    );

    // U1: MACs and power written; placement and CMDB-owned fields as they were.
    let v = p.device(u1).await;
    assert_eq!(
        (v["rack"]["id"].as_u64(), v["position"].as_f64()),
        (Some(w.r01), Some(10.0)),
        "{v}"
    );
    assert_eq!(v["status"]["value"], "planned");
    assert_eq!(v["comments"], "owned by the CMDB");
    assert_eq!(power_of(&v), Some(310), "{v}");
    for m in [&m1a, &m1b] {
        let found = p.list(&format!("api/dcim/mac-addresses/?mac_address={m}")).await;
        assert_eq!(found.len(), 1, "{m}: {found:?}");
        assert_eq!(
            found[0]["assigned_object"]["device"]["id"].as_u64(),
            Some(u1),
            "{m}"
        );
    }
    // U2: matched by its MAC, serial written, not moved.
    let v = p.device(u2).await;
    assert_eq!(v["serial"].as_str(), Some(serial("2").as_str()), "{v}");
    assert_eq!(
        (v["rack"]["id"].as_u64(), v["position"].as_f64()),
        (Some(w.r07), Some(20.0)),
        "{v}"
    );
    assert_eq!(power_of(&v), Some(220));
    // U3: both records untouched.
    for id in u3 {
        let v = p.device(id).await;
        assert!(power_of(&v).is_none() && v["rack"].is_null(), "{v}");
    }
    // U4, U5, U6: nothing matched on the placeholders, nothing created.
    let tv = p.device(tagged).await;
    assert!(
        tv["serial"].as_str().unwrap_or_default().is_empty() && power_of(&tv).is_none(),
        "{tv}"
    );
    let jv = p.device(junk_serial_rec).await;
    assert!(power_of(&jv).is_none(), "{jv}");
    for n in ["4", "6"] {
        assert!(p.devices_with_serial(&serial(n)).await.is_empty(), "U{n} created");
    }
    for m in [&m4, &m5, &m6] {
        assert!(
            p.list(&format!("api/dcim/mac-addresses/?mac_address={m}"))
                .await
                .is_empty(),
            "{m} written"
        );
    }
    // The sync state and the KPIs see U1 and U2 as in the CMDB, U4 and U6 as not.
    assert_eq!(sync_result(&store, &key("1")).await, "ok");
    assert_eq!(sync_result(&store, &key("2")).await, "ok");
    for n in ["4", "6"] {
        assert_eq!(
            sync_result(&store, &key(n)).await,
            groundtruth_collector::sync::NOT_IN_CMDB
        );
    }
    let k = groundtruth_collector::kpi::current(&store, &rules, Duration::from_secs(3600 * 24 * 365 * 10))
        .await
        .unwrap();
    // Seen: U1-U4, U6 and the endpoint-keyed placeholder; matched: U1, U2 and U3 (blocked by
    // its exception, but in the CMDB).
    assert_eq!((k.devices_seen, k.devices_matched), (6, 3), "{k:?}");
    assert_eq!(k.seen_not_in_cmdb, 3, "U4, U6 and the placeholder: {k:?}");

    // A second pass writes nothing.
    let ours = [u1, u2, u3[0], u3[1], tagged, junk_serial_rec];
    let before = object_changes(&p, &ours).await;
    let again = groundtruth_collector::sync::run_pass(&store, &nb, &rules, false)
        .await
        .unwrap();
    eprintln!("again: {}", summary(&again.report));
    assert_eq!(again.report.writes, 0, "{}", summary(&again.report));
    assert_eq!(
        object_changes(&p, &ours).await,
        before,
        "NetBox object changes on the second pass"
    );
}
