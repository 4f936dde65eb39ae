//! "In the CMDB but not seen" (issue #13) against the real NetBox: a NetBox device in the
//! collector's site that nothing reports is counted by the `cmdb_not_seen` KPI (and listed), a
//! device matched by serial, by a MAC object or by hostname is not, neither are a `planned` one
//! nor one in a site the collector does not manage; once an agent reports the missing serial, it
//! stops being counted. Included from `netbox.rs`.

use groundtruth_collector::context::refresh_cmdb_not_seen;
use groundtruth_collector::kpi;
use groundtruth_collector::reconcile::Rules;
use groundtruth_collector::store::Store;
use groundtruth_proto::v1::{Batch, DeviceIdentity, DeviceReport, MacAddress, PollOutcome, PollStatus};

use super::*;

fn report(serial: &str, hostname: &str, mac: Option<&str>) -> DeviceReport {
    DeviceReport {
        identity: Some(DeviceIdentity {
            serial_number: serial.into(),
            vendor: "GT NotSeen".into(),
            model: "GN-1".into(),
            hostname: hostname.into(),
            endpoint_key: format!("redfish://{serial}.example:443"),
            macs: mac
                .map(|m| MacAddress {
                    address: m.into(),
                    interface_name: "eth0".into(),
                    ..Default::default()
                })
                .into_iter()
                .collect(),
            ..Default::default()
        }),
        status: Some(PollStatus {
            outcome: PollOutcome::Ok as i32,
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn batch(site: &str, seq: u64, devices: Vec<DeviceReport>) -> Batch {
    groundtruth_collector::store::testdb::batch("not-seen-agent", site, seq, devices)
}

#[tokio::test]
async fn cmdb_device_nothing_reports_is_counted_until_its_serial_is_reported() {
    let Some(p) = peer("netbox_cmdb_not_seen") else {
        return;
    };
    let t = tag();
    let lt = t.to_lowercase();
    // Two sites: the agent's, and one the collector has nothing in.
    let mut sites = Vec::new();
    for prefix in ["GT-NotSeen", "GT-NotSeenOther"] {
        let name = format!("{prefix}-{t}");
        let slug = format!("{}-{lt}", prefix.to_lowercase());
        let s = p
            .post(
                "api/dcim/sites/",
                &json!({"name": name, "slug": slug, "status": "active"}),
            )
            .await;
        sites.push((name, s["id"].as_u64().unwrap()));
    }
    let m = p
        .post(
            "api/dcim/manufacturers/",
            &json!({"name": format!("GT NotSeen {t}"), "slug": format!("gt-notseen-{lt}")}),
        )
        .await;
    let dt = p
        .post(
            "api/dcim/device-types/",
            &json!({"manufacturer": m["id"], "model": "GN-1", "slug": "gn-1", "u_height": 1}),
        )
        .await;
    let role = p
        .post(
            "api/dcim/device-roles/",
            &json!({"name": format!("GT NotSeen {t}"), "slug": format!("gt-notseen-{lt}"), "color": "00ff00"}),
        )
        .await;
    let device = async |site: u64, name: &str, serial: &str, status: &str| -> u64 {
        p.post(
            "api/dcim/devices/",
            &json!({"name": name, "serial": serial, "device_type": dt["id"], "role": role["id"],
                    "site": site, "status": status}),
        )
        .await["id"]
            .as_u64()
            .unwrap()
    };
    let (site, site_id) = (sites[0].0.clone(), sites[0].1);
    let ghost_serial = format!("GTNS{t}G");
    let ghost = device(site_id, &format!("ghost-{lt}"), &ghost_serial, "active").await;
    device(site_id, &format!("known-{lt}"), &format!("GTNS{t}K"), "active").await;
    device(site_id, &format!("planned-{lt}"), &format!("GTNS{t}P"), "planned").await;
    device(site_id, &format!("named-{lt}"), "", "active").await;
    device(
        sites[1].1,
        &format!("elsewhere-{lt}"),
        &format!("GTNS{t}E"),
        "active",
    )
    .await;
    // A serial-less NetBox device whose MAC object a reported device carries.
    let mac = random_mac();
    let by_mac = device(site_id, &format!("bymac-{lt}"), "", "active").await;
    let itf = p
        .post(
            "api/dcim/interfaces/",
            &json!({"device": by_mac, "name": "eth0", "type": "1000base-t"}),
        )
        .await;
    p.post(
        "api/dcim/mac-addresses/",
        &json!({"mac_address": mac, "assigned_object_type": "dcim.interface",
                "assigned_object_id": itf["id"]}),
    )
    .await;

    // The collector has seen: the known serial, a host named like "named-…", a device with the
    // MAC (its own serial NetBox does not have).
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("state.db")).await.unwrap();
    store
        .commit_batch(&batch(
            &site,
            1,
            vec![
                report(&format!("GTNS{t}K"), "", None),
                report(&format!("GTNS{t}H"), &format!("NAMED-{lt}"), None),
                report(
                    &format!("GTNS{t}M"),
                    "",
                    Some(&mac.to_uppercase().replace(':', "-")),
                ),
            ],
        ))
        .await
        .unwrap();
    let settings = groundtruth_collector::config::NetBoxSettings {
        url: p.url.clone(),
        token: p.token.clone(),
        device_role: "server".into(),
        create_missing: true,
        sync_interval: std::time::Duration::from_secs(1),
        lease_ttl: groundtruth_collector::lease::DEFAULT_TTL,
        dry_run: false,
        tls_verify: true,
        ca_file: None,
        ownership: groundtruth_collector::cmdb::Ownership::default(),
        rate_limit: 0.0,
        journal: false,
    };
    let rules = Rules::builtin("GT-NoSuchDefaultSite");
    let week = std::time::Duration::from_secs(7 * 86_400);

    let found = refresh_cmdb_not_seen(&store, &settings, &rules).await.unwrap();
    let ids: Vec<&str> = found.iter().map(|n| n.cmdb_id.as_str()).collect();
    assert_eq!(ids, [ghost.to_string().as_str()], "{found:?}");
    assert_eq!(found[0].serial, ghost_serial);
    assert_eq!(found[0].site, site);
    let k = kpi::current(&store, &rules, week).await.unwrap();
    assert_eq!(k.cmdb_not_seen, 1, "{k:?}");
    // What /api/kpis serves, what /metrics appends, what /health lists.
    let json = serde_json::to_value(&k).unwrap();
    assert_eq!(json["cmdb_not_seen"], 1);
    assert_eq!(json["cmdb_not_seen_devices"][0]["cmdb_id"], ghost.to_string());
    assert!(kpi::exposition(&k).contains("\ngroundtruth_health_cmdb_not_seen 1\n"));
    assert!(kpi::page_body(&k, &[]).contains(&ghost_serial));

    // An agent reports the ghost's serial: it is seen now.
    store
        .commit_batch(&batch(&site, 2, vec![report(&ghost_serial, "", None)]))
        .await
        .unwrap();
    let found = refresh_cmdb_not_seen(&store, &settings, &rules).await.unwrap();
    assert!(found.is_empty(), "{found:?}");
    let k = kpi::current(&store, &rules, week).await.unwrap();
    assert_eq!(k.cmdb_not_seen, 0);
    assert!(kpi::exposition(&k).contains("\ngroundtruth_health_cmdb_not_seen 0\n"));
}
