//! One server seen by Redfish and IPMI is one device (issue #9 proof): the Redfish fixture
//! server (tests/fixtures/redfish/gt-rack-server, served by sushy-tools) and a private ipmi_sim
//! BMC with the same BMC MAC, whose FRU carries only the placeholder serial a lot of
//! white-box FRUs ship with. The collector files the IPMI record under the Redfish serial —
//! whichever arrives first — and keeps Redfish's identity fields. The same MAC behind two
//! different usable serials is not merged: both devices get an `identity_conflict`.

use std::time::Duration;

use groundtruth_agent::driver::{Limits, PollCx, poll_all};
use groundtruth_agent::target::Target;
use groundtruth_collector::reconcile::Rules;
use groundtruth_collector::store::Store;
use groundtruth_proto::v1::DeviceReport;
use groundtruth_tests::{Peers, PrivateIpmiSim, TestDb, commit_reports, init_tls};

/// The fixture server's BMC MAC (`/redfish/v1/Managers/BMC/EthernetInterfaces/eth0`).
const BMC_MAC: &str = "02:47:54:20:00:01";
const PLACEHOLDER: &str = "To Be Filled By O.E.M.";

fn cx() -> PollCx {
    PollCx {
        limits: Limits {
            request_timeout: Duration::from_secs(2),
            ..Limits::default()
        },
        ..Default::default()
    }
}

async fn redfish(url: &str, ca: &str) -> DeviceReport {
    init_tls();
    let host = url.split("://").nth(1).unwrap().trim_end_matches('/');
    let mut target = Target::parse(&format!("redfish://{host}")).unwrap();
    if let Target::Redfish(t) = &mut target {
        t.ca_file = Some(ca.into());
    }
    let (r, err) = poll_all(&target, &cx()).await;
    assert!(err.is_none(), "redfish {url}: {err:?}");
    assert_eq!(r.len(), 1);
    r.into_iter().next().unwrap()
}

/// A private ipmi_sim with the fixture server's BMC MAC and these FRU serials, polled once.
async fn ipmi(serials: [&str; 3]) -> Option<DeviceReport> {
    let Some(sim) = PrivateIpmiSim::start(&[
        ("GT_BMC_MAC", BMC_MAC),
        ("GT_BMC_CHASSIS_SERIAL", serials[0]),
        ("GT_BMC_BOARD_SERIAL", serials[1]),
        ("GT_BMC_PRODUCT_SERIAL", serials[2]),
    ]) else {
        let msg = "SKIP: merge: ipmi_sim not installed (tests/peers/ipmi/start.sh installs openipmi)";
        assert!(std::env::var("GT_REQUIRE_PEERS").as_deref() != Ok("1"), "{msg}");
        eprintln!("{msg}");
        return None;
    };
    let target = Target::parse(&format!("ipmi://ADMIN:Adm1nPass%21@{}", sim.addr)).unwrap();
    let mut last = None;
    for _ in 0..20 {
        let (r, err) = poll_all(&target, &cx()).await;
        if err.is_none() && r.len() == 1 {
            let report = r.into_iter().next().unwrap();
            let id = report.identity.as_ref().unwrap();
            assert!(id.macs.iter().any(|m| m.address == BMC_MAC), "{:?}", id.macs);
            return Some(report);
        }
        last = err;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!(
        "private ipmi_sim {} did not answer: {last:?}\n{}",
        sim.addr,
        sim.log()
    );
}

groundtruth_tests::on_both_stores!(
    redfish_and_a_placeholder_serial_ipmi_fru_with_the_same_bmc_mac_are_one_device,
    the_same_bmc_mac_behind_two_usable_serials_is_an_identity_conflict_not_a_merge,
);

async fn open_kinds(store: &Store) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = store
        .open_exceptions()
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.device_key, e.kind))
        .collect();
    v.sort();
    v
}

async fn redfish_and_a_placeholder_serial_ipmi_fru_with_the_same_bmc_mac_are_one_device(t: TestDb) {
    let Some([url, ca]) = Peers::load().require("merge", ["GT_REDFISH_URL", "GT_REDFISH_CA"]) else {
        return;
    };
    let rf = redfish(&url, &ca).await;
    assert_eq!(rf.identity.as_ref().unwrap().serial_number, "GTSRV0000001");
    let Some(ipmi) = ipmi([PLACEHOLDER; 3]).await else {
        return;
    };
    // The placeholder is no identity (issue #17): not the report's serial, kept as FRU attribute.
    let iid = ipmi.identity.as_ref().unwrap();
    assert_eq!(iid.serial_number, "");
    assert_eq!(
        iid.attributes.get("fru.product.serial").map(|s| s.trim()),
        Some(PLACEHOLDER),
        "{:?}",
        iid.attributes
    );
    let ipmi_metrics: Vec<String> = ipmi.readings.iter().map(|r| r.metric.clone()).collect();
    assert!(!ipmi_metrics.is_empty());

    let store = t.store().await.unwrap();
    let rules = Rules::builtin("DC1");
    // IPMI first: on its own it is a serial-less endpoint record with an exception.
    commit_reports(&store, "merge-agent", "DC1", vec![ipmi.clone()]).await;
    groundtruth_collector::sync::local_pass(&store, &rules)
        .await
        .unwrap();
    let before = store.devices().await.unwrap();
    assert_eq!(before.len(), 1);
    assert!(
        before[0].device_key.starts_with("endpoint:"),
        "{}",
        before[0].device_key
    );
    assert_eq!(
        open_kinds(&store).await,
        [(before[0].device_key.clone(), "no_usable_identity".to_owned())]
    );

    // Redfish arrives with the serial and the same BMC MAC; then IPMI polls again.
    commit_reports(&store, "merge-agent", "DC1", vec![rf]).await;
    commit_reports(&store, "merge-agent", "DC1", vec![ipmi]).await;
    groundtruth_collector::sync::local_pass(&store, &rules)
        .await
        .unwrap();
    let devices = store.devices().await.unwrap();
    let keys: Vec<&str> = devices.iter().map(|d| d.device_key.as_str()).collect();
    assert_eq!(keys, ["serial:GTSRV0000001"]);
    let d = &devices[0];
    assert_eq!(d.protocols, ["PROTOCOL_IPMI", "PROTOCOL_REDFISH"]);
    assert_eq!(
        (d.hostname.as_str(), d.model.as_str(), d.protocol.as_str()),
        ("gt-web-01", "GT-R1000", "PROTOCOL_REDFISH"),
        "Redfish's identity is kept; IPMI (no hostname) does not blank it"
    );
    let on_device: Vec<String> = store
        .latest_readings()
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.device_key == d.device_key)
        .map(|r| r.metric)
        .collect();
    for m in &ipmi_metrics {
        assert!(
            on_device.contains(m),
            "IPMI's {m} is on the merged device: {on_device:?}"
        );
    }
    assert!(
        open_kinds(&store)
            .await
            .iter()
            .all(|(_, k)| k != "no_usable_identity"),
        "{:?}",
        open_kinds(&store).await
    );
}

async fn the_same_bmc_mac_behind_two_usable_serials_is_an_identity_conflict_not_a_merge(t: TestDb) {
    let Some([url, ca]) = Peers::load().require("merge_conflict", ["GT_REDFISH_URL", "GT_REDFISH_CA"]) else {
        return;
    };
    let rf = redfish(&url, &ca).await;
    let Some(ipmi) = ipmi(["GTCH0000001", "GTBRD000001", "GTPRD000001"]).await else {
        return;
    };
    let store = t.store().await.unwrap();
    commit_reports(&store, "merge-agent", "DC1", vec![rf, ipmi]).await;
    groundtruth_collector::sync::local_pass(&store, &Rules::builtin("DC1"))
        .await
        .unwrap();
    let keys: Vec<String> = store
        .devices()
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.device_key)
        .collect();
    assert_eq!(keys, ["serial:GTPRD000001", "serial:GTSRV0000001"]);
    let conflicts: Vec<(String, String)> = open_kinds(&store)
        .await
        .into_iter()
        .filter(|(_, k)| k == "identity_conflict")
        .collect();
    assert_eq!(conflicts.len(), 2, "{:?}", open_kinds(&store).await);
    let detail = store.open_exceptions().await.unwrap();
    assert!(
        detail.iter().any(|e| e.device_key == "serial:GTSRV0000001"
            && e.detail.contains("serial:GTPRD000001")
            && e.detail.contains(BMC_MAC)),
        "{detail:?}"
    );
}
