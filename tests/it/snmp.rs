//! SNMP driver against net-snmp `snmpd` and snmpsim (real device recordings).

use groundtruth_agent::driver::{self, DriverError, Limits, PollCx};
use groundtruth_agent::target::Target;
use groundtruth_proto::v1::{LocationSource, PollOutcome};
use groundtruth_tests::Peers;

fn cx() -> PollCx {
    PollCx {
        limits: Limits {
            request_timeout: std::time::Duration::from_millis(700),
            retries: 1,
            ..Limits::default()
        },
        ..Default::default()
    }
}

#[tokio::test]
async fn snmpd_v2c_identity_location_text_and_macs() {
    let Some([addr, community, sysname, sysloc]) = Peers::load().require(
        "snmpd_v2c_identity",
        [
            "GT_SNMPD_ADDR",
            "GT_SNMPD_COMMUNITY",
            "GT_SNMPD_SYSNAME",
            "GT_SNMPD_SYSLOCATION",
        ],
    ) else {
        return;
    };
    let target = Target::parse(&format!("snmp://{community}@{addr}")).unwrap();
    let (report, err) = driver::poll(&target, &cx()).await;
    assert!(err.is_none(), "{err:?}");
    let id = report.identity.unwrap();
    assert_eq!(id.hostname, sysname);
    assert!(
        id.sys_object_id.starts_with("1.3.6.1.4.1.8072."),
        "net-snmp enterprise OID, got {}",
        id.sys_object_id
    );
    assert!(id.description.starts_with("Linux"), "{}", id.description);
    assert_eq!(id.endpoint_key, format!("snmp://{addr}"));
    // snmpd serves this machine's real interfaces: at least one non-loopback MAC, canonical form.
    assert!(!id.macs.is_empty());
    for m in &id.macs {
        assert!(
            groundtruth_proto::mac::canonical(&m.address).as_deref() == Some(m.address.as_str()),
            "{}",
            m.address
        );
        assert!(!m.interface_name.is_empty());
    }
    let loc = &report.locations[0];
    assert_eq!(loc.source, LocationSource::SysLocation as i32);
    assert_eq!(loc.raw, sysloc);
    assert_eq!(report.status.unwrap().outcome, PollOutcome::Ok as i32);
}

#[tokio::test]
async fn snmpd_wrong_community_is_a_timeout_naming_the_cause() {
    let Some([addr]) = Peers::load().require("snmpd_wrong_community", ["GT_SNMPD_ADDR"]) else {
        return;
    };
    let target = Target::parse(&format!("snmp://not-the-community@{addr}")).unwrap();
    let started = std::time::Instant::now();
    let (report, err) = driver::poll(&target, &cx()).await;
    let err = err.expect("a wrong community must fail");
    assert!(matches!(err, DriverError::Timeout { .. }), "{err:?}");
    assert!(err.to_string().contains("wrong community"), "{err}");
    assert!(
        !err.to_string().contains("not-the-community"),
        "secret leaked: {err}"
    );
    assert_eq!(report.status.unwrap().outcome, PollOutcome::Timeout as i32);
    // 0.7 s timeout x 2 attempts, well under the poll deadline.
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
}

#[tokio::test]
async fn snmpd_v3_auth_priv_sha1_and_sha256() {
    let p = Peers::load();
    let Some([addr, u1, a1, x1, u2, a2, x2, sysname]) = p.require(
        "snmpd_v3",
        [
            "GT_SNMPD_ADDR",
            "GT_SNMPD_V3_USER",
            "GT_SNMPD_V3_AUTH_PASS",
            "GT_SNMPD_V3_PRIV_PASS",
            "GT_SNMPD_V3_USER_SHA256",
            "GT_SNMPD_V3_AUTH_PASS_SHA256",
            "GT_SNMPD_V3_PRIV_PASS_SHA256",
            "GT_SNMPD_SYSNAME",
        ],
    ) else {
        return;
    };
    for (user, auth, ap, pp) in [(u1, "sha", a1, x1), (u2, "sha256", a2, x2)] {
        let url = format!("snmpv3://{user}@{addr}?auth={auth}&priv=aes&auth_pass={ap}&priv_pass={pp}");
        let (report, err) = driver::poll(&Target::parse(&url).unwrap(), &cx()).await;
        assert!(err.is_none(), "{user}: {err:?}");
        assert_eq!(report.identity.unwrap().hostname, sysname, "{user}");
    }
}

/// Real device recordings from `../shared/peers/snmp/data`, served in place by snmpsim.
#[tokio::test]
async fn snmpsim_apc_pdu_recording_identity() {
    let p = Peers::load();
    let Some([addr, shared]) = p.require("snmpsim_apc_pdu", ["GT_SNMPSIM_ADDR", "GT_SNMPSIM_SHARED_DATA"])
    else {
        return;
    };
    if shared != "1" {
        eprintln!("SKIP: snmpsim_apc_pdu: ../shared recordings not served (../shared absent)");
        return;
    }
    let target = Target::parse(&format!("snmp://pdu-apc-ap8641@{addr}")).unwrap();
    let (report, err) = driver::poll(&target, &cx()).await;
    assert!(err.is_none(), "{err:?}");
    let id = report.identity.unwrap();
    // ifPhysAddress.2 of the recorded AP8641, as net-snmp's snmpget shows it.
    assert!(
        id.macs.iter().any(|m| m.address == "28:29:86:2f:04:2c"),
        "{:?}",
        id.macs
    );
}
