//! One discovery sweep over every peer on 127.0.0.1 (issue #8: "a sweep over the peers'
//! loopback ports finds and identifies every peer device"): net-snmp snmpd and snmpsim (a wrong
//! community first, so the sweep must move on), pymodbus' UPS and meter (two maps tried on each
//! port), our Redfish BMCs and the nine ../shared mockups, ipmi_sim (ours and the ../shared
//! config) and pyghmi. Every endpoint is found and identified by what it really says about itself.

use std::process::Command;

use groundtruth_tests::{Peers, binary};

fn port(addr: &str) -> String {
    addr.rsplit(':').next().unwrap().trim_end_matches('/').to_owned()
}

#[test]
fn discover_finds_and_identifies_every_peer_on_loopback() {
    let peers = Peers::load();
    let Some(
        [
            snmpd,
            community,
            sysname,
            snmpsim,
            sim_community,
            ups,
            ups_serial,
            meter,
            meter_serial,
            redfish,
            sparse,
            ipmi,
            ipmi_user,
            ipmi_pass,
            pyghmi,
        ],
    ) = peers.require(
        "sweep_every_peer",
        [
            "GT_SNMPD_ADDR",
            "GT_SNMPD_COMMUNITY",
            "GT_SNMPD_SYSNAME",
            "GT_SNMPSIM_ADDR",
            "GT_SNMPSIM_COMMUNITY",
            "GT_MODBUS_UPS_ADDR",
            "GT_MODBUS_UPS_SERIAL",
            "GT_MODBUS_METER_ADDR",
            "GT_MODBUS_METER_SERIAL",
            "GT_REDFISH_URL",
            "GT_REDFISH_SPARSE_URL",
            "GT_IPMI_ADDR",
            "GT_IPMI_USER",
            "GT_IPMI_PASS",
            "GT_IPMI_PYGHMI_ADDR",
        ],
    )
    else {
        return;
    };
    let Some(bin) = binary("groundtruth-agent") else {
        assert!(
            std::env::var("GT_REQUIRE_PEERS").as_deref() != Ok("1"),
            "groundtruth-agent binary not built"
        );
        eprintln!("SKIP: groundtruth-agent binary not built");
        return;
    };
    // The ../shared peers (nine Redfish mockups, the shared ipmi_sim config) when present.
    let shared_mockups: Vec<String> = peers
        .get("GT_REDFISH_SHARED_MOCKUPS")
        .map(|m| m.split(',').map(str::to_owned).collect())
        .unwrap_or_default();
    let shared_base: Option<u16> = peers
        .get("GT_REDFISH_SHARED_BASE_PORT")
        .and_then(|p| p.parse().ok());
    let shared_ipmi = peers.get("GT_IPMI_SHARED_ADDR").map(str::to_owned);
    if shared_mockups.is_empty() || shared_ipmi.is_none() {
        eprintln!("NOTE: ../shared peers absent; sweeping our own peers only");
    }

    let dir = tempfile::tempdir().unwrap();
    let communities = dir.path().join("communities");
    std::fs::write(&communities, format!("wrong-one\n{community}\n{sim_community}\n")).unwrap();
    let creds = dir.path().join("ipmi.creds");
    std::fs::write(&creds, format!("nobody:wrong\n{ipmi_user}:{ipmi_pass}\n")).unwrap();
    let mut redfish_ports = vec![port(&redfish), port(&sparse)];
    if let Some(base) = shared_base {
        redfish_ports.extend((0..shared_mockups.len()).map(|i| (base + i as u16).to_string()));
    }
    let mut ipmi_ports = vec![port(&ipmi), port(&pyghmi)];
    ipmi_ports.extend(shared_ipmi.as_deref().map(port));
    let closed = groundtruth_tests::free_port().to_string();
    redfish_ports.push(closed);

    let out = Command::new(bin)
        .args([
            "discover",
            "127.0.0.1",
            "--snmp-ports",
            &format!("{},{}", port(&snmpd), port(&snmpsim)),
            "--community-file",
            communities.to_str().unwrap(),
            "--redfish-ports",
            &redfish_ports.join(","),
            "--insecure",
            "--ipmi-ports",
            &ipmi_ports.join(","),
            "--ipmi-credentials-file",
            creds.to_str().unwrap(),
            "--modbus-ports",
            &format!("{},{}", port(&ups), port(&meter)),
            // Both maps on both ports: each device must be identified with its own map.
            "--modbus-try",
            "1:test-rack-ups,1:sdm630",
            "--timeout",
            "800ms",
            "--json",
            "--log",
            "off",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    for secret in [&community, &sim_community, &ipmi_pass] {
        assert!(
            !stdout.contains(secret.as_str()),
            "a credential leaked into the output"
        );
    }
    let found: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let endpoints: Vec<&str> = found.iter().map(|f| f["endpoint"].as_str().unwrap()).collect();
    let expected = 2 + 2 + redfish_ports.len() - 1 + ipmi_ports.len();
    assert_eq!(found.len(), expected, "{endpoints:?}");
    let by = |e: String| {
        found
            .iter()
            .find(|f| f["endpoint"] == e.as_str())
            .unwrap_or_else(|| panic!("{e} not found in {endpoints:?}"))
    };
    let serial = |e: String| {
        by(e)["identity"]["serialNumber"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };

    // SNMP: snmpd (no serial: identified by sysName) and snmpsim's APC PDU.
    let d = by(format!("snmp://{snmpd}"));
    assert_eq!(d["identity"]["hostname"], sysname.as_str());
    assert_eq!(d["credential"], "community #2");
    assert_eq!(serial(format!("snmp://{snmpsim}")), "3F3452A52295");
    assert_eq!(by(format!("snmp://{snmpsim}"))["credential"], "community #3");
    // Modbus: each device with its own map.
    let u = by(format!("modbus+tcp://{ups}/1"));
    assert_eq!(u["identity"]["serialNumber"], ups_serial.as_str());
    assert_eq!(u["credential"], "unit 1, map test-rack-ups");
    let m = by(format!("modbus+tcp://{meter}/1"));
    assert_eq!(m["identity"]["serialNumber"], meter_serial.as_str());
    assert_eq!(m["credential"], "unit 1, map sdm630");
    // Redfish: our BMC; the sparse one (an OpenBMC-like service without a serial) by its MAC.
    assert_eq!(
        serial(format!("redfish://127.0.0.1:{}", port(&redfish))),
        "GTSRV0000001"
    );
    let s = by(format!("redfish://127.0.0.1:{}", port(&sparse)));
    assert_eq!(s["identity"]["macs"][0]["address"], "02:47:54:30:00:01");
    // The shared mockups: each one answers, and every mockup that carries a serial number
    // (all but OpenBMC's stock mockup) is identified by it.
    if let Some(base) = shared_base {
        for (i, name) in shared_mockups.iter().enumerate() {
            let e = format!("redfish://127.0.0.1:{}", base + i as u16);
            if name != "openbmc-stock" {
                assert!(!serial(e.clone()).is_empty(), "{name} ({e}) without a serial");
            } else {
                by(e);
            }
        }
    }
    // IPMI: ipmi_sim's product serial (the wrong account tried first), pyghmi (no FRU: its
    // firmware and IPMI version), the shared ipmi_sim config.
    let i = by(format!("ipmi://{ipmi}"));
    assert_eq!(i["identity"]["serialNumber"], "GTPRD000001");
    assert_eq!(i["credential"], format!("user {ipmi_user}"));
    let p = by(format!("ipmi://{pyghmi}"));
    assert_eq!(p["identity"]["attributes"]["ipmi.version"], "2.0");
    if let Some(a) = &shared_ipmi {
        assert_eq!(serial(format!("ipmi://{a}")), "S411795X1A01234");
    }
}
