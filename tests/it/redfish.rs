//! Redfish driver against sushy-tools serving our own fixtures (tests/fixtures/redfish) and, when
//! `../shared` is present, the DMTF and vendor mockups in place.

mod fake;

use groundtruth_agent::driver::{self, DriverError, PollCx};
use groundtruth_agent::target::Target;
use groundtruth_proto::v1::{ComponentKind, DeviceClass, DeviceReport, LocationSource, MacRole, PollOutcome};
use groundtruth_tests::{Peers, init_tls};

async fn poll_all(url: &str) -> (Vec<DeviceReport>, Option<DriverError>) {
    init_tls();
    driver::poll_all(&Target::parse(url).unwrap(), &PollCx::default()).await
}

fn device_power(r: &DeviceReport) -> Option<f64> {
    r.readings
        .iter()
        .find(|x| x.metric == "power" && x.component.is_none())
        .map(|x| x.value)
}

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
    // The system's and the BMC's own identities, besides the device's.
    for (k, v) in [
        ("system_serial", "GTSRV0000001"),
        ("system_part_number", "GTR1K-PN-01"),
        ("system_asset_tag", "DC1-R07-U12"),
        ("bios_version", "GT1.4.2"),
        ("bmc_vendor", "Groundtruth Labs"),
        ("bmc_model", "GT-BMC"),
        ("bmc_serial", "GTBMC0000001"),
        ("bmc_firmware", "1.2.3"),
    ] {
        assert_eq!(
            id.attributes.get(k).map(String::as_str),
            Some(v),
            "{k}: {:?}",
            id.attributes
        );
    }
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

/// The live sushy-emulator with its fake driver: three hosts behind one service and one chassis
/// (issue #17). Each host is a device of its own with the UUID, name and MACs the emulator was
/// configured with (`tests/fixtures/redfish/sushy-fake-systems.json`, read here as the expected
/// values); the chassis is their enclosure and carries none of their MACs.
#[tokio::test]
async fn several_systems_behind_one_live_service_are_one_device_each() {
    let Some([url, ca, systems]) = Peers::load().require(
        "redfish_emulator_systems",
        [
            "GT_REDFISH_EMULATOR_URL",
            "GT_REDFISH_CA",
            "GT_REDFISH_EMULATOR_SYSTEMS",
        ],
    ) else {
        return;
    };
    let configured: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(&systems).unwrap()).unwrap();
    init_tls();
    let mut target = Target::parse(&format!("redfish://{}", host_port(&url))).unwrap();
    if let Target::Redfish(t) = &mut target {
        t.ca_file = Some(ca.into());
    }
    let (reports, err) = driver::poll_all(&target, &PollCx::default()).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(
        reports.len(),
        configured.len() + 1,
        "the enclosure and one device per system"
    );
    let enclosure = &reports[0];
    let eid = enclosure.identity.as_ref().unwrap();
    assert_eq!(eid.device_class, DeviceClass::Enclosure as i32, "{eid:?}");
    assert!(
        eid.macs.is_empty(),
        "the systems' MACs are theirs: {:?}",
        eid.macs
    );
    let blades = enclosure
        .components
        .iter()
        .filter(|c| {
            c.component
                .as_ref()
                .is_some_and(|c| c.kind == ComponentKind::Blade as i32)
        })
        .count();
    assert_eq!(blades, configured.len());
    let mut keys = vec![eid.endpoint_key.clone()];
    for sys in &configured {
        let uuid = sys["uuid"].as_str().unwrap();
        let r = reports
            .iter()
            .find(|r| r.identity.as_ref().is_some_and(|i| i.uuid == uuid))
            .unwrap_or_else(|| panic!("no device with UUID {uuid}"));
        let id = r.identity.as_ref().unwrap();
        assert_eq!(id.device_class, DeviceClass::Server as i32);
        assert_eq!(id.hostname, sys["name"].as_str().unwrap(), "{id:?}");
        let mut want: Vec<&str> = sys["nics"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["mac"].as_str().unwrap())
            .collect();
        let mut got: Vec<&str> = id.macs.iter().map(|m| m.address.as_str()).collect();
        want.sort_unstable();
        got.sort_unstable();
        assert_eq!(got, want, "{uuid}: exactly its own MACs");
        assert_ne!(
            id.serial_number, eid.serial_number,
            "the chassis serial is not the system's"
        );
        assert!(
            id.endpoint_key.contains("/redfish/v1/Systems/"),
            "{}",
            id.endpoint_key
        );
        keys.push(id.endpoint_key.clone());
    }
    keys.sort();
    keys.dedup();
    assert_eq!(
        keys.len(),
        configured.len() + 1,
        "every device keyed apart: {keys:?}"
    );
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

/// `?pin=sha256:<hex>` accepts exactly the pinned self-signed certificate, without a CA.
#[tokio::test]
async fn pinned_certificate_is_accepted_and_a_wrong_pin_refused() {
    let Some([url, cert]) = Peers::load().require("redfish_pin", ["GT_REDFISH_URL", "GT_REDFISH_CERT"])
    else {
        return;
    };
    let pem = std::fs::read_to_string(&cert).unwrap();
    let b64: String = pem
        .lines()
        .skip_while(|l| !l.starts_with("-----BEGIN CERTIFICATE"))
        .skip(1)
        .take_while(|l| !l.starts_with("-----END"))
        .collect();
    let der = base64_decode(&b64);
    let pin: String = sha2::Digest::finalize(sha2::Digest::chain_update(
        <sha2::Sha256 as sha2::Digest>::new(),
        &der,
    ))
    .iter()
    .map(|b| format!("{b:02x}"))
    .collect();
    let (report, err) = poll(&format!("redfish://{}?pin=sha256:{pin}", host_port(&url)), None).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(report.identity.unwrap().serial_number, "GTSRV0000001");
    let wrong = "0".repeat(64);
    let (_, err) = poll(&format!("redfish://{}?pin=sha256:{wrong}", host_port(&url)), None).await;
    let err = err.expect("a wrong pin must be refused");
    assert!(matches!(err, DriverError::Tls(_)), "{err:?}");
    assert!(err.to_string().contains("pin mismatch"), "{err}");
}

fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        _ => 63,
    };
    let bytes: Vec<u8> = s
        .bytes()
        .filter(|c| *c != b'=' && !c.is_ascii_whitespace())
        .collect();
    let mut out = Vec::new();
    for chunk in bytes.chunks(4) {
        let mut n = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            n |= u32::from(val(*c)) << (18 - 6 * i);
        }
        for i in 0..chunk.len().saturating_sub(1) {
            out.push((n >> (16 - 8 * i)) as u8);
        }
    }
    out
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

/// The DMTF and vendor captures from `../shared/peers/redfish/mockups`, served in place, checked
/// against `../shared/peers/redfish/INVENTORY.md`. Ports: GT_REDFISH_SHARED_BASE_PORT + the
/// position of the mockup in GT_REDFISH_SHARED_MOCKUPS.
#[tokio::test]
async fn shared_mockups_every_device_identity_placement_and_power() {
    let Some([base, names]) = Peers::load().require(
        "redfish_shared_mockups",
        ["GT_REDFISH_SHARED_BASE_PORT", "GT_REDFISH_SHARED_MOCKUPS"],
    ) else {
        return;
    };
    let base: u16 = base.parse().unwrap();
    let port = |name: &str| {
        let i = names.split(',').position(|n| n == name).unwrap();
        base + u16::try_from(i).unwrap()
    };
    let all = |name: &'static str| {
        let url = format!("redfish://127.0.0.1:{}?insecure", port(name));
        async move {
            let (reports, err) = poll_all(&url).await;
            assert!(err.is_none(), "{name}: {err:?}");
            for r in &reports {
                assert!(r.readings.iter().all(|x| x.value.is_finite()), "{name}");
            }
            reports
        }
    };
    let serials = |rs: &[DeviceReport]| -> Vec<String> {
        rs.iter()
            .map(|r| r.identity.as_ref().unwrap().serial_number.clone())
            .collect()
    };

    // rackmount1: one server, placement, 344 W from PowerConsumedWatts (EnvironmentMetrics' 374 W
    // kept apart), temperatures with labels, a null temperature not reported.
    let rs = all("dmtf-public-rackmount1").await;
    assert_eq!(serials(&rs), ["437XR1138R2"]);
    let r = &rs[0];
    let loc = &r.locations[0];
    assert_eq!(
        (loc.rack.as_str(), loc.u_position, loc.row.as_str()),
        ("WEB43", Some(12), "North")
    );
    assert_eq!(device_power(r), Some(344.0));
    let env = r
        .readings
        .iter()
        .find(|x| {
            x.metric == "power"
                && x.component
                    .as_ref()
                    .is_some_and(|c| c.label == "EnvironmentMetrics")
        })
        .unwrap();
    assert_eq!(env.value, 374.0);
    let temps: Vec<(&str, f64)> = r
        .readings
        .iter()
        .filter(|x| {
            x.metric == "temperature"
                && x.component
                    .as_ref()
                    .is_some_and(|c| c.kind == ComponentKind::Sensor as i32)
        })
        .map(|x| (x.component.as_ref().unwrap().label.as_str(), x.value))
        .collect();
    assert!(temps.contains(&("CPU1 Temp", 41.0)), "{temps:?}");
    assert!(
        !temps.iter().any(|(l, _)| *l == "CPU2 Temp"),
        "null reading must be absent: {temps:?}"
    );
    let id = r.identity.as_ref().unwrap();
    assert!(
        id.macs
            .iter()
            .any(|m| m.address == "12:44:6a:3b:04:11" && m.role == MacRole::Host as i32)
    );
    assert!(
        id.macs
            .iter()
            .any(|m| m.address == "23:11:8a:33:cf:ea" && m.role == MacRole::Management as i32)
    );

    // PDU: one PDU report (the PDU chassis and the transfer switch share its serial), 9 metered
    // outlets of 11, A1 197.4 W, total 6438 W and 56438 kWh.
    let rs = all("dmtf-public-pdu").await;
    let pdu = rs
        .iter()
        .find(|r| r.identity.as_ref().unwrap().serial_number == "29347ZT536")
        .unwrap();
    let id = pdu.identity.as_ref().unwrap();
    assert_eq!(id.device_class, DeviceClass::Pdu as i32);
    assert_eq!(
        (
            id.vendor.as_str(),
            id.model.as_str(),
            id.firmware_version.as_str()
        ),
        ("Contoso", "ZAP4000", "4.3.0")
    );
    assert_eq!(id.asset_tag, "PDX-92381");
    assert_eq!(device_power(pdu), Some(6438.0));
    assert!(
        pdu.readings
            .iter()
            .any(|x| x.metric == "energy" && x.component.is_none() && x.value == 56438.0)
    );
    let outlets: Vec<(&str, f64)> = pdu
        .readings
        .iter()
        .filter(|x| {
            x.metric == "power"
                && x.component
                    .as_ref()
                    .is_some_and(|c| c.kind == ComponentKind::Outlet as i32)
        })
        .map(|x| (x.component.as_ref().unwrap().label.as_str(), x.value))
        .collect();
    assert_eq!(outlets.len(), 9, "{outlets:?}");
    assert!(outlets.contains(&("A1", 197.4)));
    // The mains inlet AC1 reports per line (polyphase).
    assert!(
        pdu.readings.iter().any(|x| x.metric == "current"
            && x.component.as_ref().is_some_and(|c| c.label == "AC1 Line1")
            && x.value == 8.02),
        "{:?}",
        pdu.readings
    );
    assert_eq!(serials(&rs).iter().filter(|s| *s == "29347ZT536").count(), 1);

    // Bladed: the enclosure with 4 blades as components, and each blade its own report naming
    // the enclosure.
    let rs = all("dmtf-public-bladed").await;
    assert_eq!(
        serials(&rs),
        [
            "528QB1654R1",
            "529QB9450R6",
            "529QB9451R6",
            "529QB9452R6",
            "529QB9453R6"
        ]
    );
    let encl = &rs[0];
    assert_eq!(
        encl.identity.as_ref().unwrap().device_class,
        DeviceClass::Enclosure as i32
    );
    assert_eq!(
        encl.components
            .iter()
            .filter(|c| c.component.as_ref().unwrap().kind == ComponentKind::Blade as i32)
            .count(),
        4
    );
    assert_eq!(
        (encl.locations[0].rack.as_str(), encl.locations[0].u_position),
        ("WEB43", Some(12))
    );
    for blade in &rs[1..] {
        let id = blade.identity.as_ref().unwrap();
        assert_eq!(id.attributes["enclosure_serial"], "528QB1654R1");
        assert_eq!(id.macs.len(), 1, "{id:?}");
        assert!(blade.readings.iter().any(|x| x.metric == "temperature"));
    }
    // Endpoint keys tell devices behind one service apart.
    assert_ne!(
        rs[1].identity.as_ref().unwrap().endpoint_key,
        rs[2].identity.as_ref().unwrap().endpoint_key
    );

    let rs = all("dmtf-public-tower").await;
    assert_eq!(serials(&rs), ["437XR1238R2"]);
    assert_eq!(device_power(&rs[0]), Some(926.0));
    assert!(rs[0].components.iter().any(|c| c.serial_number == "2M220100SL"));

    // HPE DL325: 97 W, 2 PSUs at 51 + 46 W, iLO MACs, an inlet temperature.
    let rs = all("hpe-proliant-dl325-gen10plus").await;
    assert_eq!(serials(&rs), ["MXQ019020B"]);
    let attrs = &rs[0].identity.as_ref().unwrap().attributes;
    for (k, v) in [
        ("system_sku", "P18606-B21"),
        ("bios_version", "A43 v2.52 (10/29/2021)"),
        ("bmc_model", "iLO 5"),
        ("bmc_firmware", "iLO 5 v2.46"),
    ] {
        assert_eq!(attrs.get(k).map(String::as_str), Some(v), "{k}: {attrs:?}");
    }
    assert!(!attrs.contains_key("bmc_serial"), "a null serial is not reported");
    assert_eq!(device_power(&rs[0]), Some(97.0));
    let psu: Vec<f64> = rs[0]
        .readings
        .iter()
        .filter(|x| {
            x.metric == "power"
                && x.component
                    .as_ref()
                    .is_some_and(|c| c.kind == ComponentKind::Psu as i32)
        })
        .map(|x| x.value)
        .collect();
    assert_eq!(psu, [51.0, 46.0]);
    assert!(rs[0].readings.iter().any(|x| {
        x.component
            .as_ref()
            .is_some_and(|c| c.label == "01-Inlet Ambient")
            && x.value == 17.0
    }));
    assert!(
        rs[0]
            .identity
            .as_ref()
            .unwrap()
            .macs
            .iter()
            .any(|m| m.address == "94:40:c9:37:d3:fc")
    );

    // HPE XL675d: the Apollo enclosure and its node. The enclosure's "1234567890" is a
    // placeholder (issue #17): no identity, kept as an attribute.
    let rs = all("hpe-proliant-xl675d-gen10plus").await;
    assert_eq!(serials(&rs), ["", "JS05NP1072"]);
    assert!(
        rs[0].identity.as_ref().unwrap().attributes["junk_serial"].starts_with("1234567890 "),
        "{:?}",
        rs[0].identity
    );
    assert_eq!(device_power(&rs[1]), Some(779.0));
    assert_eq!(
        rs[1].identity.as_ref().unwrap().attributes["enclosure_serial"],
        "1234567890"
    );
    // Its NIC as a component (NetworkAdapters), beside the PSUs.
    assert!(
        rs[1].components.iter().any(|c| c.serial_number == "MY50050V5K"
            && c.component.as_ref().unwrap().kind == ComponentKind::Module as i32),
        "{:?}",
        rs[1].components
    );

    // The chassis serial is AMI's placeholder; the system's (the mockup's Systems/Self) is the
    // real one (issue #17).
    let rs = all("gigabyte-h262-z63").await;
    assert_eq!(serials(&rs), ["GJG9NF512A000302"]);
    assert_eq!(device_power(&rs[0]), Some(100.0));

    // Intel: Power under RackMount/Baseboard, dash-format MACs.
    let rs = all("intel-s2600bpb").await;
    assert_eq!(serials(&rs), ["QSBP74100021"]);
    assert_eq!(device_power(&rs[0]), Some(148.0));
    assert!(
        rs[0]
            .identity
            .as_ref()
            .unwrap()
            .macs
            .iter()
            .any(|m| m.address == "a4:bf:01:28:90:aa")
    );

    // OpenBMC: no serial anywhere → empty (the collector files "no usable identity"); null
    // PowerConsumedWatts → no power reading at all, never 0.
    let rs = all("openbmc-stock").await;
    assert_eq!(serials(&rs), [""]);
    assert_eq!(device_power(&rs[0]), None);
    assert!(
        rs[0]
            .identity
            .as_ref()
            .unwrap()
            .macs
            .iter()
            .any(|m| m.address == "ae:0d:e8:39:69:bb")
    );
}

/// Between inventory refreshes a poll reads only the power/thermal resources.
#[tokio::test]
async fn inventory_is_cached_and_steady_state_polls_read_only_power_and_thermal() {
    let Some([base]) = Peers::load().require("redfish_inventory_cache", ["GT_REDFISH_SHARED_BASE_PORT"])
    else {
        return;
    };
    let base: u16 = base.parse().unwrap();
    // DL325; max_inflight=3 makes this a different endpoint from the other tests' (own cache).
    let url = format!("redfish://127.0.0.1:{}?insecure&max_inflight=3", base + 4);
    init_tls();
    let target = Target::parse(&url).unwrap();
    let Target::Redfish(t) = &target else { panic!() };
    let ep = driver::redfish::client::endpoint(t, &PollCx::default()).unwrap();
    let before = ep.requests.load(std::sync::atomic::Ordering::Relaxed);
    let (first, err) = driver::poll_all(&target, &PollCx::default()).await;
    assert!(err.is_none(), "{err:?}");
    let inventory = ep.requests.load(std::sync::atomic::Ordering::Relaxed) - before;
    let (second, err) = driver::poll_all(&target, &PollCx::default()).await;
    assert!(err.is_none(), "{err:?}");
    let steady = ep.requests.load(std::sync::atomic::Ordering::Relaxed) - before - inventory;
    eprintln!("DL325: inventory poll {inventory} requests, steady-state poll {steady} requests");
    assert!(steady <= 2, "steady-state poll made {steady} requests");
    assert!(inventory > steady);
    assert_eq!(first[0].identity, second[0].identity);
    assert_eq!(device_power(&second[0]), Some(97.0));
}

/// `GT_REDFISH_BENCH=1 cargo test -p groundtruth-tests --test it redfish::bench -- --ignored
/// --nocapture`: our driver against `../shared/peers/redfish/crawl.py` on the DL325 mockup.
#[tokio::test]
#[ignore = "benchmark; run by hand"]
async fn bench_dl325_against_sequential_crawler() {
    let Some([base]) = Peers::load().require("redfish_bench", ["GT_REDFISH_SHARED_BASE_PORT"]) else {
        return;
    };
    let base: u16 = base.parse().unwrap();
    let port = base + 4;
    init_tls();
    for inflight in [1usize, 2, 4] {
        let url = format!("redfish://127.0.0.1:{port}?insecure&max_inflight={inflight}&inventory_refresh=0s");
        let target = Target::parse(&url).unwrap();
        let Target::Redfish(t) = &target else { panic!() };
        let ep = driver::redfish::client::endpoint(t, &PollCx::default()).unwrap();
        let n0 = ep.requests.load(std::sync::atomic::Ordering::Relaxed);
        let t0 = std::time::Instant::now();
        let (_, err) = driver::poll_all(&target, &PollCx::default()).await;
        assert!(err.is_none(), "{err:?}");
        let full = t0.elapsed();
        let n1 = ep.requests.load(std::sync::atomic::Ordering::Relaxed);
        eprintln!(
            "BENCH groundtruth full inventory, max_inflight={inflight}: {} requests in {:.3} s",
            n1 - n0,
            full.as_secs_f64()
        );
    }
    let url = format!("redfish://127.0.0.1:{port}?insecure&max_inflight=2");
    let target = Target::parse(&url).unwrap();
    let Target::Redfish(t) = &target else { panic!() };
    let ep = driver::redfish::client::endpoint(t, &PollCx::default()).unwrap();
    let _ = driver::poll_all(&target, &PollCx::default()).await;
    let n0 = ep.requests.load(std::sync::atomic::Ordering::Relaxed);
    let t0 = std::time::Instant::now();
    for _ in 0..10 {
        let (_, err) = driver::poll_all(&target, &PollCx::default()).await;
        assert!(err.is_none(), "{err:?}");
    }
    let n1 = ep.requests.load(std::sync::atomic::Ordering::Relaxed);
    eprintln!(
        "BENCH groundtruth steady-state power poll: {:.1} requests, {:.1} ms per poll",
        (n1 - n0) as f64 / 10.0,
        t0.elapsed().as_secs_f64() * 100.0
    );
    let crawl = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/peers/redfish/crawl.py");
    let out = std::process::Command::new("python3")
        .arg(crawl)
        .arg(format!("https://127.0.0.1:{port}"))
        .output()
        .unwrap();
    eprintln!("BENCH crawl.py: {}", String::from_utf8_lossy(&out.stdout).trim());
}

// ------------------------------------------------------------------------------------------------
// Hostile and fake BMCs (tests/it/redfish/fake.rs)
// ------------------------------------------------------------------------------------------------

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use fake::{Fake, Mode};

/// Logs out the idle session of this target's endpoint only (tests run concurrently).
async fn close(url: &str) {
    let target = Target::parse(url).unwrap();
    let Target::Redfish(t) = &target else { panic!() };
    driver::redfish::client::endpoint(t, &PollCx::default())
        .unwrap()
        .close()
        .await;
}

/// Waits (up to 2.5 s) for the logouts a dropped poll spawned.
async fn wait_no_sessions(f: &Fake) {
    for _ in 0..50 {
        if f.live_sessions() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn short_cx(request: u64, whole: u64) -> PollCx {
    let mut cx = PollCx::default();
    cx.limits.request_timeout = Duration::from_millis(request);
    cx.limits.poll_timeout = Duration::from_millis(whole);
    cx
}

#[tokio::test]
async fn session_is_reused_across_polls_and_deleted_at_close() {
    let f = Fake::start(Mode::Normal).await;
    let (rs, err) = poll_all(&f.url("")).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(rs[0].identity.as_ref().unwrap().serial_number, "FAKE0001");
    assert_eq!(device_power(&rs[0]), Some(123.0));
    // The null PSU output and the null sensor are not reported; the Sensors collection stands in
    // for the missing Thermal.
    let got: Vec<(&str, f64)> = rs[0]
        .readings
        .iter()
        .map(|r| (r.metric.as_str(), r.value))
        .collect();
    assert_eq!(got, [("power", 123.0), ("temperature", 21.5)]);
    let gets_inventory = f.gets.load(Relaxed);
    let (_, err) = poll_all(&f.url("")).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(f.posts.load(Relaxed), 1, "one login for both polls");
    assert_eq!(f.live_sessions(), 1);
    // Steady state: only Power and the Sensors (collection + 2 members).
    assert_eq!(f.gets.load(Relaxed) - gets_inventory, 4);
    close(&f.url("")).await;
    assert_eq!(f.deletes.load(Relaxed), 1);
    assert_eq!(f.live_sessions(), 0, "no session leaked");
}

/// Where `ProtocolFeaturesSupported` offers `$expand` and the service honours it, a collection
/// and its members cost one request; where it answers 404 (sushy-static), plain GETs follow.
#[tokio::test]
async fn expand_is_used_where_supported_and_falls_back_on_404() {
    let f = Fake::start(Mode::Queries).await;
    let (rs, err) = poll_all(&f.url("")).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(rs[0].identity.as_ref().unwrap().serial_number, "FAKE0001");
    // Chassis, the system's EthernetInterfaces and Sensors, each one request with its members.
    assert_eq!(f.expanded.load(Relaxed), 3);
    let macs: Vec<&str> = rs[0]
        .identity
        .as_ref()
        .unwrap()
        .macs
        .iter()
        .map(|m| m.address.as_str())
        .collect();
    assert_eq!(macs, ["02:00:00:00:00:01", "02:00:00:00:00:02"]);
    let expanded_gets = f.gets.load(Relaxed);
    close(&f.url("")).await;

    let g = Fake::start(Mode::Normal).await;
    let (rs, err) = poll_all(&g.url("")).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(rs[0].identity.as_ref().unwrap().serial_number, "FAKE0001");
    assert_eq!(g.expanded.load(Relaxed), 0);
    // The refused expand (once: remembered), then the three collections' members one by one.
    assert_eq!(g.gets.load(Relaxed), expanded_gets + 1 + 1 + 2 + 2);
    let macs: Vec<&str> = rs[0]
        .identity
        .as_ref()
        .unwrap()
        .macs
        .iter()
        .map(|m| m.address.as_str())
        .collect();
    assert_eq!(macs, ["02:00:00:00:00:01", "02:00:00:00:00:02"]);
    close(&g.url("")).await;
}

/// Steady state where the service offers `$select` and `$expand`: Power with only the properties
/// the readings need, the Sensors collection in one request. Same readings as plain GETs, fewer
/// requests and bytes; a service that advertises `$select` but refuses it gets plain GETs from
/// then on.
#[tokio::test]
async fn select_and_expand_cut_the_steady_state_poll() {
    async fn steady(f: &Fake) -> (Vec<(String, f64)>, usize, usize) {
        let (_, err) = poll_all(&f.url("")).await;
        assert!(err.is_none(), "{err:?}");
        let (gets, bytes) = (f.gets.load(Relaxed), f.get_bytes.load(Relaxed));
        let (rs, err) = poll_all(&f.url("")).await;
        assert!(err.is_none(), "{err:?}");
        let readings = rs[0]
            .readings
            .iter()
            .map(|r| (r.metric.clone(), r.value))
            .collect();
        (
            readings,
            f.gets.load(Relaxed) - gets,
            f.get_bytes.load(Relaxed) - bytes,
        )
    }
    let plain = Fake::start(Mode::Normal).await;
    let (r_plain, gets_plain, bytes_plain) = steady(&plain).await;
    close(&plain.url("")).await;
    let q = Fake::start(Mode::Queries).await;
    let (r_q, gets_q, bytes_q) = steady(&q).await;
    close(&q.url("")).await;
    eprintln!(
        "steady-state poll: plain {gets_plain} GETs {bytes_plain} B; $select/$expand {gets_q} GETs {bytes_q} B"
    );
    assert_eq!(r_q, r_plain, "same readings either way");
    assert_eq!(
        r_q,
        [("power".to_owned(), 123.0), ("temperature".to_owned(), 21.5)]
    );
    // Plain: Power + Sensors + 2 sensors. Queries: Power?$select + Sensors?$expand.
    assert_eq!((gets_plain, gets_q), (4, 2));
    assert_eq!(
        q.selected.load(Relaxed),
        1,
        "only the steady-state Power read is selected"
    );
    assert!(bytes_q * 4 < bytes_plain, "{bytes_q} vs {bytes_plain}");

    let r = Fake::start(Mode::SelectRefused).await;
    let (r_r, gets_r, _) = steady(&r).await;
    assert_eq!(r_r, r_plain);
    assert_eq!(gets_r, 3, "refused $select, then plain Power; Sensors expanded");
    let before = r.gets.load(Relaxed);
    let (_, err) = poll_all(&r.url("")).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(r.gets.load(Relaxed) - before, 2, "the refusal is remembered");
    close(&r.url("")).await;
}

#[tokio::test]
async fn session_expired_on_the_bmc_is_replaced_after_401() {
    let f = Fake::start(Mode::Normal).await;
    let url = f.url("?inventory_refresh=0s");
    let (_, err) = poll_all(&url).await;
    assert!(err.is_none(), "{err:?}");
    // The BMC forgets the session (timeout, reboot).
    f.forget_all();
    let (rs, err) = poll_all(&url).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(rs[0].identity.as_ref().unwrap().serial_number, "FAKE0001");
    assert_eq!(f.posts.load(Relaxed), 2);
    close(&url).await;
    assert_eq!(f.live_sessions(), 0);
}

#[tokio::test]
async fn session_of_a_cancelled_poll_is_deleted() {
    let f = Fake::start(Mode::Slow(Duration::from_secs(3))).await;
    init_tls();
    let target = Target::parse(&f.url("")).unwrap();
    // The login answers at once, the GETs are slow: the whole-poll deadline cancels the poll.
    let (_, err) = driver::poll_all(&target, &short_cx(2000, 500)).await;
    assert!(matches!(err, Some(DriverError::Timeout { .. })), "{err:?}");
    assert_eq!(f.posts.load(Relaxed), 1);
    // The lease's Drop spawned the DELETE.
    wait_no_sessions(&f).await;
    assert_eq!(f.live_sessions(), 0, "the cancelled poll's session leaked");
    assert_eq!(f.deletes.load(Relaxed), 1);
}

#[tokio::test]
async fn sessions_exhausted_falls_back_to_basic_auth() {
    let f = Fake::start(Mode::SessionsExhausted).await;
    let (rs, err) = poll_all(&f.url("")).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(rs[0].identity.as_ref().unwrap().serial_number, "FAKE0001");
    assert_eq!(f.posts.load(Relaxed), 1);
    assert_eq!(f.deletes.load(Relaxed), 0);
    assert_eq!(f.live_sessions(), 0);
}

#[tokio::test]
async fn wrong_password_is_a_clear_auth_error() {
    let f = Fake::start(Mode::WrongPassword).await;
    let (rs, err) = poll_all(&f.url("")).await;
    let err = err.expect("must fail");
    assert!(matches!(err, DriverError::Auth { .. }), "{err:?}");
    assert!(!err.to_string().contains(fake::PASS), "{err}");
    assert_eq!(
        rs[0].status.as_ref().unwrap().outcome,
        PollOutcome::AuthFailed as i32
    );
}

#[tokio::test]
async fn busy_bmc_retry_after_is_honoured_once() {
    let f = Fake::start(Mode::RetryAfter(1)).await;
    let (rs, err) = poll_all(&f.url("")).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(rs[0].identity.as_ref().unwrap().serial_number, "FAKE0001");
    close(&f.url("")).await;
    assert_eq!(f.live_sessions(), 0);

    let f = Fake::start(Mode::RetryAfter(120)).await;
    let (_, err) = poll_all(&f.url("")).await;
    let err = err.expect("a 2-minute Retry-After is not waited for");
    assert!(err.to_string().contains("Retry-After 120"), "{err}");
    close(&f.url("")).await;
    wait_no_sessions(&f).await;
    assert_eq!(f.live_sessions(), 0);
}

#[tokio::test]
async fn slow_bmc_times_out_per_request() {
    let f = Fake::start(Mode::Slow(Duration::from_secs(5))).await;
    init_tls();
    let target = Target::parse(&f.url("")).unwrap();
    let (_, err) = driver::poll_all(&target, &short_cx(300, 10_000)).await;
    assert!(matches!(err, Some(DriverError::Timeout { .. })), "{err:?}");
    wait_no_sessions(&f).await;
    assert_eq!(f.live_sessions(), 0);
}

#[tokio::test]
async fn twenty_megabyte_document_is_refused_at_the_cap() {
    let f = Fake::start(Mode::Huge).await;
    let (_, err) = poll_all(&f.url("")).await;
    assert!(matches!(err, Some(DriverError::TooLarge { .. })), "{err:?}");
    wait_no_sessions(&f).await;
    assert_eq!(
        f.posts.load(Relaxed),
        f.deletes.load(Relaxed),
        "every session opened is deleted"
    );
}

/// A CA and a leaf for 127.0.0.1 made with the `openssl` CLI in `dir`: (ca.crt, leaf.crt,
/// leaf.key). `None` (skipped loudly) where the CLI is missing.
fn make_ca_and_leaf(dir: &std::path::Path) -> Option<[std::path::PathBuf; 3]> {
    let run = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output();
        match out {
            Ok(o) if o.status.success() => true,
            Ok(o) => panic!("openssl {args:?}: {}", String::from_utf8_lossy(&o.stderr)),
            Err(_) => false,
        }
    };
    std::fs::write(
        dir.join("leaf.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    let ok = run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "2",
        "-subj",
        "/CN=groundtruth test CA",
    ]) && run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "leaf.key",
        "-out",
        "leaf.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]) && run(&[
        "x509",
        "-req",
        "-in",
        "leaf.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "leaf.crt",
        "-days",
        "2",
        "-extfile",
        "leaf.ext",
    ]);
    if !ok {
        eprintln!("######## SKIP: no openssl CLI to make test certificates ########");
        return None;
    }
    Some([dir.join("ca.crt"), dir.join("leaf.crt"), dir.join("leaf.key")])
}

/// An old BMC: TLS 1.0 and 1.1 only, at OpenSSL security level 0 (as iLO 3/4, iDRAC 7 and IMM2
/// firmware of their day). rustls cannot talk to it and says which option to use; `?tls=openssl`
/// can, with verification still on (the test's own CA), or a pin, or `?insecure`.
#[tokio::test]
async fn tls10_only_bmc_needs_tls_openssl_and_is_still_verified() {
    use openssl::ssl::{SslAcceptor, SslFiletype, SslMethod, SslVersion};
    init_tls();
    let dir = tempfile::tempdir().unwrap();
    let Some([ca, leaf, key]) = make_ca_and_leaf(dir.path()) else {
        return;
    };
    let mut acc = SslAcceptor::mozilla_intermediate(SslMethod::tls_server()).unwrap();
    acc.set_security_level(0);
    acc.set_min_proto_version(Some(SslVersion::TLS1)).unwrap();
    acc.set_max_proto_version(Some(SslVersion::TLS1_1)).unwrap();
    acc.set_cipher_list("ALL:@SECLEVEL=0").unwrap();
    acc.set_certificate_chain_file(&leaf).unwrap();
    acc.set_private_key_file(&key, SslFiletype::PEM).unwrap();
    let acc2 = {
        let mut a = SslAcceptor::mozilla_intermediate(SslMethod::tls_server()).unwrap();
        a.set_security_level(0);
        a.set_min_proto_version(Some(SslVersion::TLS1)).unwrap();
        a.set_max_proto_version(Some(SslVersion::TLS1)).unwrap();
        a.set_cipher_list("ALL:@SECLEVEL=0").unwrap();
        a.set_certificate_chain_file(&leaf).unwrap();
        a.set_private_key_file(&key, SslFiletype::PEM).unwrap();
        a
    };
    let f = Fake::start_tls(Mode::Normal, acc.build()).await;
    let hp = format!("127.0.0.1:{}", f.port);
    let url = |q: &str| format!("redfish://{}:{}@{hp}{q}", fake::USER, fake::PASS);
    let poll_ca = |u: String, ca: Option<std::path::PathBuf>| async move {
        let mut target = Target::parse(&u).unwrap();
        if let Target::Redfish(t) = &mut target {
            t.ca_file = ca;
        }
        driver::poll_all(&target, &PollCx::default()).await
    };

    // rustls (the default), even with the right CA: refused, naming the target and the option.
    let (_, err) = poll_ca(url(""), Some(ca.clone())).await;
    let err = err.expect("rustls cannot speak TLS 1.0/1.1");
    assert!(matches!(err, DriverError::Tls(_)), "{err:?}");
    let msg = err.to_string();
    eprintln!("rustls against the TLS 1.0/1.1 BMC: {msg}");
    assert!(msg.contains("?tls=openssl") && msg.contains(&hp), "{msg}");
    assert!(
        f.tls_versions.lock().unwrap().is_empty(),
        "no handshake completed"
    );

    // OpenSSL, verified against the test CA.
    let (rs, err) = poll_ca(url("?tls=openssl"), Some(ca.clone())).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(rs[0].identity.as_ref().unwrap().serial_number, "FAKE0001");
    assert_eq!(device_power(&rs[0]), Some(123.0));
    let versions = f.tls_versions.lock().unwrap().clone();
    assert!(
        !versions.is_empty() && versions.iter().all(|v| v == "TLSv1" || v == "TLSv1.1"),
        "{versions:?}"
    );
    {
        let Target::Redfish(mut t) = Target::parse(&url("?tls=openssl")).unwrap() else {
            panic!()
        };
        t.ca_file = Some(ca.clone());
        driver::redfish::client::endpoint(&t, &PollCx::default())
            .unwrap()
            .close()
            .await;
    }

    // Verification stays on: the system roots do not know the test CA.
    let (_, err) = poll_ca(url("?tls=openssl"), None).await;
    let err = err.expect("an unknown issuer must be refused on the OpenSSL path too");
    assert!(matches!(err, DriverError::Tls(_)), "{err:?}");
    assert!(err.to_string().contains("certificate verify failed"), "{err}");

    // A pin on the leaf replaces the CA; a wrong pin is refused.
    let der = openssl::x509::X509::from_pem(&std::fs::read(&leaf).unwrap())
        .unwrap()
        .to_der()
        .unwrap();
    let pin: String = sha2::Digest::finalize(sha2::Digest::chain_update(
        <sha2::Sha256 as sha2::Digest>::new(),
        &der,
    ))
    .iter()
    .map(|b| format!("{b:02x}"))
    .collect();
    let (rs, err) = poll_ca(url(&format!("?tls=openssl&pin=sha256:{pin}")), None).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(rs[0].identity.as_ref().unwrap().serial_number, "FAKE0001");
    close(&url(&format!("?tls=openssl&pin=sha256:{pin}"))).await;
    let (_, err) = poll_ca(url(&format!("?tls=openssl&pin=sha256:{}", "0".repeat(64))), None).await;
    assert!(matches!(err, Some(DriverError::Tls(_))), "{err:?}");

    // ?insecure: no verification at all, explicitly.
    let (rs, err) = poll_ca(url("?tls=openssl&insecure"), None).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(rs[0].identity.as_ref().unwrap().serial_number, "FAKE0001");
    close(&url("?tls=openssl&insecure")).await;
    wait_no_sessions(&f).await;
    assert_eq!(f.live_sessions(), 0, "no session leaked");

    // Its web server of the day: HTTP/1.0, bodies ended by a close without close_notify.
    let g = Fake::start_tls(Mode::Http10Close, acc2.build()).await;
    let u = format!(
        "redfish://{}:{}@127.0.0.1:{}?tls=openssl",
        fake::USER,
        fake::PASS,
        g.port
    );
    let (rs, err) = poll_ca(u.clone(), Some(ca.clone())).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(device_power(&rs[0]), Some(123.0));
}
