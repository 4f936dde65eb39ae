//! Redfish driver against sushy-tools serving our own fixtures (tests/fixtures/redfish) and, when
//! `../shared` is present, the DMTF and vendor mockups in place.

use groundtruth_agent::driver::{self, DriverError, PollCx};
use groundtruth_agent::target::Target;
use groundtruth_proto::v1::{LocationSource, MacRole, PollOutcome};
use groundtruth_tests::{Peers, init_tls};

async fn poll(url: &str, ca: Option<&str>) -> (groundtruth_proto::v1::DeviceReport, Option<DriverError>) {
    init_tls();
    let mut target = Target::parse(url).unwrap();
    if let (Target::Redfish(t), Some(ca)) = (&mut target, ca) {
        t.ca_file = Some(ca.into());
    }
    driver::poll(&target, &PollCx::default()).await
}

fn host_port(url: &str) -> String {
    url.split("://").nth(1).unwrap().trim_end_matches('/').to_owned()
}

#[tokio::test]
async fn fixture_server_identity_power_macs_and_placement_with_ca() {
    let Some([url, ca]) = Peers::load().require("redfish_fixture", ["GT_REDFISH_URL", "GT_REDFISH_CA"])
    else {
        return;
    };
    let (report, err) = poll(&format!("redfish://{}", host_port(&url)), Some(&ca)).await;
    assert!(err.is_none(), "{err:?}");
    let id = report.identity.as_ref().unwrap();
    assert_eq!(
        (id.vendor.as_str(), id.model.as_str(), id.serial_number.as_str()),
        ("Groundtruth Labs", "GT-R1000", "GTSRV0000001")
    );
    assert_eq!(
        (id.part_number.as_str(), id.sku.as_str(), id.asset_tag.as_str()),
        ("GTR1K-PN-01", "GTR1K-SKU-01", "DC1-R07-U12")
    );
    assert_eq!(id.hostname, "gt-web-01");
    let host: Vec<_> = id
        .macs
        .iter()
        .filter(|m| m.role == MacRole::Host as i32)
        .map(|m| m.address.as_str())
        .collect();
    let bmc: Vec<_> = id
        .macs
        .iter()
        .filter(|m| m.role == MacRole::Management as i32)
        .map(|m| m.address.as_str())
        .collect();
    assert_eq!(host, ["02:47:54:10:00:01", "02:47:54:10:00:02"]);
    assert_eq!(bmc, ["02:47:54:20:00:01"]);
    let loc = &report.locations[0];
    assert_eq!(loc.source, LocationSource::RedfishPlacement as i32);
    assert_eq!(
        (
            loc.site.as_str(),
            loc.room.as_str(),
            loc.row.as_str(),
            loc.rack.as_str(),
            loc.u_position
        ),
        ("DC1", "H1", "A", "R07", Some(12))
    );
    let device_power: Vec<f64> = report
        .readings
        .iter()
        .filter(|r| r.metric == "power" && r.component.is_none())
        .map(|r| r.value)
        .collect();
    assert_eq!(device_power, [412.0]);
    assert_eq!(
        report
            .components
            .iter()
            .map(|c| c.serial_number.as_str())
            .collect::<Vec<_>>(),
        ["GTPSU0000001", "GTPSU0000002"]
    );
    assert_eq!(report.status.unwrap().outcome, PollOutcome::Ok as i32);
}

#[tokio::test]
async fn self_signed_bmc_is_refused_without_ca_and_accepted_with_insecure() {
    let Some([url]) = Peers::load().require("redfish_tls", ["GT_REDFISH_URL"]) else {
        return;
    };
    let (_, err) = poll(&format!("redfish://{}", host_port(&url)), None).await;
    let err = err.expect("an unknown issuer must be refused by default");
    assert!(matches!(err, DriverError::Tls(_)), "{err:?}");
    assert!(err.to_string().contains("--ca-file"), "{err}");
    let (report, err) = poll(&format!("redfish://{}?insecure", host_port(&url)), None).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(report.identity.unwrap().serial_number, "GTSRV0000001");
}

#[tokio::test]
async fn sparse_bmc_dash_macs_are_canonical_and_missing_serial_is_empty() {
    let Some([url, ca]) = Peers::load().require("redfish_sparse", ["GT_REDFISH_SPARSE_URL", "GT_REDFISH_CA"])
    else {
        return;
    };
    let (report, err) = poll(&format!("redfish://{}", host_port(&url)), Some(&ca)).await;
    assert!(err.is_none(), "{err:?}");
    let id = report.identity.unwrap();
    assert_eq!(id.serial_number, "");
    assert!(
        id.macs.iter().any(|m| m.address == "02:47:54:30:00:01"),
        "{:?}",
        id.macs
    );
    assert!(report.readings.iter().all(|r| r.value.is_finite()));
}

#[tokio::test]
async fn plain_http_fixture() {
    let Some([url]) = Peers::load().require("redfish_http", ["GT_REDFISH_HTTP_URL"]) else {
        return;
    };
    let (report, err) = poll(&format!("redfish+http://{}", host_port(&url)), None).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(report.identity.unwrap().serial_number, "GTSRV0000001");
}

/// The DMTF and vendor captures from `../shared/peers/redfish/mockups`, served in place.
#[tokio::test]
async fn shared_mockups_identity_placement_and_power() {
    let Some([base]) = Peers::load().require("redfish_shared_mockups", ["GT_REDFISH_SHARED_BASE_PORT"])
    else {
        return;
    };
    let base: u16 = base.parse().unwrap();
    // (port offset, serial, rack, U, device power) as the peers README documents them.
    type Case = (u16, &'static str, Option<(&'static str, u32)>, Option<f64>);
    let cases: [Case; 4] = [
        (0, "437XR1138R2", Some(("WEB43", 12)), Some(344.0)),
        (2, "528QB1654R1", Some(("WEB43", 12)), None),
        (4, "MXQ019020B", None, Some(97.0)),
        (7, "QSBP74100021", None, Some(148.0)),
    ];
    for (offset, serial, place, watts) in cases {
        let (report, err) = poll(&format!("redfish://127.0.0.1:{}?insecure", base + offset), None).await;
        assert!(err.is_none(), "port {}: {err:?}", base + offset);
        let id = report.identity.as_ref().unwrap();
        assert_eq!(id.serial_number, serial);
        if let Some((rack, u)) = place {
            let loc = &report.locations[0];
            assert_eq!((loc.rack.as_str(), loc.u_position), (rack, Some(u)), "{serial}");
        }
        let power = report
            .readings
            .iter()
            .find(|r| r.metric == "power" && r.component.is_none())
            .map(|r| r.value);
        if watts.is_some() {
            assert_eq!(power, watts, "{serial}");
        }
    }
    // Intel's capture writes MACs with dashes.
    let (report, _) = poll(&format!("redfish://127.0.0.1:{}?insecure", base + 7), None).await;
    assert!(
        report
            .identity
            .unwrap()
            .macs
            .iter()
            .any(|m| m.address == "a4:bf:01:28:90:aa")
    );
}
