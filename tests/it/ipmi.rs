//! IPMI over LAN (RMCP+) against OpenIPMI `ipmi_sim` (issue #7), cross-checked with `ipmitool`
//! in the same run, plus hostile in-process UDP peers (garbage, wrong session ids, silence).

use std::collections::HashMap;
use std::process::Command;
use std::time::{Duration, Instant};

use groundtruth_agent::driver::{self, DriverError, Limits, PollCx};
use groundtruth_agent::target::Target;
use groundtruth_proto::v1::{ComponentKind, DeviceReport, LocationSource, MacRole, PollOutcome};
use groundtruth_tests::Peers;
use tokio::net::UdpSocket;

mod fake_bmc;
use fake_bmc::{FakeBmc, Misbehave};

fn cx() -> PollCx {
    PollCx {
        limits: Limits {
            request_timeout: Duration::from_millis(700),
            retries: 1,
            ..Limits::default()
        },
        ..Default::default()
    }
}

/// `ipmi://USER:PASS@ADDR?query` with the password percent-encoded.
fn target(user: &str, pass: &str, addr: &str, query: &str) -> Target {
    let pass: String = url::form_urlencoded::byte_serialize(pass.as_bytes()).collect();
    Target::parse(&format!("ipmi://{user}:{pass}@{addr}{query}")).unwrap()
}

fn peer(test: &str) -> Option<[String; 5]> {
    Peers::load().require(
        test,
        [
            "GT_IPMI_ADDR",
            "GT_IPMI_USER",
            "GT_IPMI_PASS",
            "GT_IPMI_RO_USER",
            "GT_IPMI_RO_PASS",
        ],
    )
}

async fn poll_ok(t: &Target) -> DeviceReport {
    let (report, err) = driver::poll(t, &cx()).await;
    assert!(err.is_none(), "{err:?}");
    report
}

#[tokio::test]
async fn ipmi_sim_identity_serials_asset_tag_guid_and_bmc_mac() {
    let Some([addr, user, pass, ..]) = peer("ipmi_sim_identity") else {
        return;
    };
    let report = poll_ok(&target(&user, &pass, &addr, "")).await;
    let id = report.identity.as_ref().unwrap();
    assert_eq!(id.serial_number, "GTPRD000001", "product serial");
    assert_eq!(id.attributes["fru.board.serial"], "GTBRD000001");
    assert_eq!(id.attributes["fru.chassis.serial"], "GTCH0000001");
    assert_eq!(id.attributes["fru.board.mfg_date"], "2024-03-18T14:05:00Z");
    assert_eq!(
        (id.model.as_str(), id.part_number.as_str()),
        ("GT-R1000", "GTR1K-PN-01")
    );
    assert_eq!(id.vendor, "Groundtruth Labs");
    assert_eq!(id.asset_tag, "DC1-R07-U12");
    assert_eq!(id.firmware_version, "1.02");
    assert_eq!(id.attributes["ipmi.manufacturer_id"], "32473");
    assert_eq!(id.attributes["ipmi.guid_raw"], "4754424d430000000000475400000001");
    assert_eq!(id.uuid.len(), 36);
    assert_eq!(id.endpoint_key, format!("ipmi://{addr}"));
    assert_eq!(id.macs.len(), 1, "{:?}", id.macs);
    assert_eq!(id.macs[0].address, "02:47:54:00:00:01");
    assert_eq!(id.macs[0].role, MacRole::Management as i32);
    assert_eq!(id.attributes["bmc.ip"], "192.0.2.50");
    assert_eq!(id.attributes["bmc.gateway_mac"], "02:47:54:00:00:fe");
    assert_eq!(id.attributes["chassis.power"], "on");
    // Thresholds from the SDR, converted (gen_bmc.py: FAN lnc 1800, lc 1200, lnr 600 RPM).
    assert_eq!(
        id.attributes["ipmi.sensor.FAN1.thresholds"],
        "lnc=1800 lc=1200 lnr=600 {rpm}"
    );
    assert_eq!(
        id.attributes["ipmi.sensor.Pwr Consumption.thresholds"],
        "unc=760 uc=800 unr=840 W"
    );
    let loc = &report.locations[0];
    assert_eq!(
        (loc.source, loc.raw.as_str()),
        (LocationSource::AssetTag as i32, "DC1-R07-U12")
    );
    assert_eq!(report.status.unwrap().outcome, PollOutcome::Ok as i32);
}

/// `ipmitool sdr list` → name → (value, unit text), for analog sensors.
fn ipmitool_sdr(addr: &str, user: &str, pass: &str) -> Option<HashMap<String, f64>> {
    let (host, port) = addr.rsplit_once(':')?;
    let out = Command::new("ipmitool")
        .args([
            "-I", "lanplus", "-C", "3", "-H", host, "-p", port, "-U", user, "-P", pass, "sdr", "list",
        ])
        .output()
        .ok()?;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    Some(
        text.lines()
            .filter_map(|l| {
                let mut cols = l.split('|').map(str::trim);
                let name = cols.next()?.to_owned();
                let value = cols.next()?.split_whitespace().next()?.parse::<f64>().ok()?;
                Some((name, value))
            })
            .collect(),
    )
}

#[tokio::test]
async fn ipmi_sim_every_analog_sensor_within_one_percent_of_ipmitool() {
    let Some([addr, user, pass, ..]) = peer("ipmi_sim_sensors") else {
        return;
    };
    let report = poll_ok(&target(&user, &pass, &addr, "")).await;
    let Some(expected) = ipmitool_sdr(&addr, &user, &pass) else {
        eprintln!("SKIP: ipmitool not installed");
        return;
    };
    let ours: HashMap<String, (String, f64)> = report
        .readings
        .iter()
        .filter(|r| r.metric != "status")
        .filter_map(|r| Some((r.component.as_ref()?.label.clone(), (r.metric.clone(), r.value))))
        .collect();
    assert_eq!(expected.len(), 7, "ipmitool analog sensors: {expected:?}");
    for (name, want) in &expected {
        let (metric, got) = ours
            .get(name)
            .unwrap_or_else(|| panic!("no reading for {name}: {ours:?}"));
        assert!(
            (got - want).abs() <= want.abs() * 0.01,
            "{name} ({metric}): ours {got}, ipmitool {want}"
        );
    }
    // Threshold state per analog sensor: 0 = within all thresholds (ipmitool shows "ok").
    let states: Vec<f64> = report
        .readings
        .iter()
        .filter(|r| r.source.ends_with(":threshold_state"))
        .map(|r| r.value)
        .collect();
    assert_eq!(states, vec![0.0; 7]);
    assert_eq!(ours["FAN1"].0, "fan_speed");
    assert_eq!(ours["12V"].0, "voltage");
    assert_eq!(ours["Inlet Temp"].0, "temperature");
    // The PSU presence sensors are discrete: a status reading with the state bits (bit 0 = present).
    let ps: Vec<_> = report
        .readings
        .iter()
        .filter(|r| {
            r.component
                .as_ref()
                .is_some_and(|c| c.kind == ComponentKind::Psu as i32)
        })
        .collect();
    assert_eq!(ps.len(), 2);
    assert!(
        ps.iter().all(|r| r.metric == "status" && r.value as u32 & 1 == 1),
        "{ps:?}"
    );
}

#[tokio::test]
async fn ipmi_sim_has_no_dcmi_so_device_power_comes_from_the_sdr_sensor() {
    let Some([addr, user, pass, ..]) = peer("ipmi_sim_power") else {
        return;
    };
    let report = poll_ok(&target(&user, &pass, &addr, "")).await;
    let id = report.identity.as_ref().unwrap();
    assert_eq!(id.attributes["ipmi.dcmi"], "unsupported");
    assert_eq!(id.attributes["ipmi.power_source"], "sdr");
    let device: Vec<_> = report
        .readings
        .iter()
        .filter(|r| r.metric == "power" && r.component.is_none())
        .collect();
    assert_eq!(device.len(), 1, "{:?}", report.readings);
    let sensor = report
        .readings
        .iter()
        .find(|r| r.metric == "power" && r.component.is_some())
        .unwrap();
    assert_eq!(device[0].unit, "W");
    assert_eq!(device[0].value, sensor.value);
    assert!(
        (50.0..=2000.0).contains(&device[0].value),
        "{} W",
        device[0].value
    );
    assert!(
        device[0].source.contains("DCMI unsupported"),
        "{}",
        device[0].source
    );
}

#[tokio::test]
async fn ipmi_sim_user_role_account_reads_fru_and_sensors() {
    let Some([addr, _, _, ro_user, ro_pass]) = peer("ipmi_sim_user_role") else {
        return;
    };
    let (report, err) = driver::poll(&target(&ro_user, &ro_pass, &addr, "?privilege=user"), &cx()).await;
    assert!(err.is_none(), "{err:?}");
    let id = report.identity.as_ref().unwrap();
    assert_eq!(id.attributes["ipmi.privilege"], "user");
    assert_eq!(id.serial_number, "GTPRD000001");
    assert!(report.readings.iter().any(|r| r.metric == "power"));
    // LAN configuration needs Operator: the poll is partial and says why.
    let status = report.status.unwrap();
    assert_eq!(status.outcome, PollOutcome::Partial as i32);
    assert!(
        status
            .partial_errors
            .iter()
            .any(|e| e.contains("insufficient privilege")),
        "{:?}",
        status.partial_errors
    );
}

#[tokio::test]
async fn wrong_password_and_unknown_user_are_auth_errors_within_bounded_time() {
    let Some([addr, user, _, ..]) = peer("ipmi_sim_wrong_password") else {
        return;
    };
    for (u, p, expect) in [
        (user.as_str(), "WrongPass1", "wrong password"),
        ("nosuchuser", "x", "unknown user"),
    ] {
        let started = Instant::now();
        let (report, err) = driver::poll(&target(u, p, &addr, ""), &cx()).await;
        let elapsed = started.elapsed();
        match err {
            Some(DriverError::Auth { detail }) => assert!(detail.contains(expect), "{detail}"),
            other => panic!("{u}: expected an auth error, got {other:?}"),
        }
        assert!(elapsed < Duration::from_secs(5), "{u}: took {elapsed:?}");
        let status = report.status.unwrap();
        assert_eq!(status.outcome, PollOutcome::AuthFailed as i32);
        assert!(!status.message.contains(p), "{}", status.message);
    }
}

#[tokio::test]
async fn ipmi_sim_refuses_cipher_suite_17_with_a_clear_error() {
    // ipmi_sim 2.0.33 implements RAKP-HMAC-SHA1 only (ipmitool -C 17 fails against it, too);
    // suite 17's crypto is proven by known-answer unit tests and the fake BMC below.
    let Some([addr, user, pass, ..]) = peer("ipmi_sim_suite_17") else {
        return;
    };
    let (_, err) = driver::poll(&target(&user, &pass, &addr, "?cipher=17"), &cx()).await;
    match err {
        Some(DriverError::DeviceException(d)) => assert!(d.contains("cipher suite"), "{d}"),
        other => panic!("expected a cipher suite refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn second_poll_reuses_nothing_but_the_sdr_cache_and_gives_the_same_answer() {
    let Some([addr, user, pass, ..]) = peer("ipmi_sim_repeat") else {
        return;
    };
    let t = target(&user, &pass, &addr, "");
    let a = poll_ok(&t).await;
    let b = poll_ok(&t).await;
    let labels = |r: &DeviceReport| {
        r.readings
            .iter()
            .map(|x| (x.metric.clone(), x.component.as_ref().map(|c| c.label.clone())))
            .collect::<Vec<_>>()
    };
    assert_eq!(labels(&a), labels(&b));
    assert_eq!(
        a.identity.unwrap().serial_number,
        b.identity.unwrap().serial_number
    );
}

/// The ipmi_sim configured in `../shared/peers/ipmi` (Supermicro-style identity, PSU FRUs behind
/// FRU-locator SDRs, 13 sensors), which our harness starts from that directory in place (frozen
/// values) when `../shared` is present.
#[tokio::test]
async fn shared_ipmi_sim_issue_7_values_psu_frus_and_all_sensors() {
    if groundtruth_tests::shared_peers_dir().is_none() {
        eprintln!("SKIP: shared_ipmi_sim: ../shared is not present");
        return;
    }
    let Some([addr]) = Peers::load().require("shared_ipmi_sim", ["GT_IPMI_SHARED_ADDR"]) else {
        return;
    };
    let report = poll_ok(&target("ADMIN", "Adm1nPass!", &addr, "")).await;
    let id = report.identity.as_ref().unwrap();
    assert_eq!(id.serial_number, "S411795X1A01234");
    assert_eq!(id.attributes["fru.board.serial"], "OM219S012345");
    assert_eq!(id.attributes["fru.chassis.serial"], "C8190LK41AB0123");
    assert_eq!(id.asset_tag, "DC01-R07-U12");
    assert_eq!(id.macs[0].address, "0c:c4:7a:e3:1f:82");
    let mut psu: Vec<&str> = report
        .components
        .iter()
        .map(|c| c.serial_number.as_str())
        .collect();
    psu.sort_unstable();
    assert_eq!(psu, ["P1K02AH16DT1234", "P1K02AH16DT1235"]);
    assert_eq!(id.attributes["ipmi.power_source"], "sdr");
    let expected = ipmitool_sdr(&addr, "ADMIN", "Adm1nPass!").expect("ipmitool");
    let ours: HashMap<String, f64> = report
        .readings
        .iter()
        .filter(|r| r.metric != "status")
        .filter_map(|r| Some((r.component.as_ref()?.label.clone(), r.value)))
        .collect();
    assert_eq!(expected.len(), 11, "{expected:?}");
    for (name, want) in &expected {
        let got = ours[name];
        assert!(
            (got - want).abs() <= want.abs() * 0.01,
            "{name}: ours {got}, ipmitool {want}"
        );
    }
    let device = report
        .readings
        .iter()
        .find(|r| r.metric == "power" && r.component.is_none())
        .unwrap();
    assert_eq!(device.value, ours["Pwr Consumption"], "system total, not one PSU");
}

#[tokio::test]
async fn ipmi_sim_ipmi15_sessions_with_md5_and_straight_password() {
    let Some([addr, user, pass, ..]) = peer("ipmi_sim_v15") else {
        return;
    };
    for (q, session) in [
        ("?v15=md5", "ipmi 1.5 md5"),
        ("?v15=password", "ipmi 1.5 straight password"),
    ] {
        let report = poll_ok(&target(&user, &pass, &addr, q)).await;
        let id = report.identity.as_ref().unwrap();
        assert_eq!(id.attributes["ipmi.session"], session);
        assert!(!id.attributes.contains_key("ipmi.cipher_suite"));
        assert_eq!(id.serial_number, "GTPRD000001");
        assert_eq!(
            id.macs[0].address, "02:47:54:00:00:01",
            "Set Session Privilege Level worked"
        );
        assert!(
            report
                .readings
                .iter()
                .any(|r| r.metric == "power" && r.component.is_none())
        );
        assert_eq!(report.status.unwrap().outcome, PollOutcome::Ok as i32);
    }
    let started = Instant::now();
    let (_, err) = driver::poll(&target(&user, "WrongPass1", &addr, "?v15=md5"), &cx()).await;
    assert!(
        matches!(&err, Some(DriverError::Auth { detail }) if detail.contains("wrong password")),
        "{err:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    let (_, err) = driver::poll(&target("nosuchuser", "x", &addr, "?v15=md5"), &cx()).await;
    assert!(
        matches!(&err, Some(DriverError::Auth { detail }) if detail.contains("unknown user")),
        "{err:?}"
    );
}

#[tokio::test]
async fn discovery_sweep_moves_past_a_wrong_ipmi_password_and_identifies_the_bmc() {
    use groundtruth_agent::discover::{Progress, SweepSpec, sweep};
    use groundtruth_agent::secret::Secret;
    let Some([addr, user, pass, ..]) = peer("ipmi_discovery") else {
        return;
    };
    let (host, port) = addr.rsplit_once(':').unwrap();
    let closed = groundtruth_tests::free_port();
    let spec = SweepSpec {
        addresses: vec![host.parse().unwrap()],
        ipmi_ports: vec![port.parse().unwrap(), closed],
        ipmi_credentials: vec![
            (user.clone(), Secret::new("WrongPass1")),
            (user.clone(), Secret::new(pass.clone())),
        ],
        ..SweepSpec::default()
    };
    let started = Instant::now();
    let found = sweep(&spec, &cx(), 4, std::sync::Arc::new(Progress::default())).await;
    assert_eq!(
        found.len(),
        1,
        "{:?}",
        found.iter().map(|f| &f.endpoint_key).collect::<Vec<_>>()
    );
    assert_eq!(found[0].endpoint_key, format!("ipmi://{addr}"));
    assert_eq!(found[0].credential, format!("user {user}"));
    assert_eq!(
        found[0].report.identity.as_ref().unwrap().serial_number,
        "GTPRD000001"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
}

// ---------------------------------------------------------------------------------- hostile peers

/// A UDP peer on 127.0.0.1:0 that answers every datagram with whatever `answer` returns.
async fn hostile(mut answer: impl FnMut(&[u8]) -> Vec<Vec<u8>> + Send + 'static) -> String {
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = sock.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        while let Ok((n, from)) = sock.recv_from(&mut buf).await {
            for reply in answer(&buf[..n]) {
                let _ = sock.send_to(&reply, from).await;
            }
        }
    });
    addr
}

async fn poll_hostile(addr: &str) -> (Option<DriverError>, Duration) {
    let started = Instant::now();
    let (_, err) = driver::poll(&target("ADMIN", "pw", addr, ""), &cx()).await;
    (err, started.elapsed())
}

fn checksum(b: &[u8]) -> u8 {
    0u8.wrapping_sub(b.iter().fold(0u8, |a, x| a.wrapping_add(*x)))
}

/// A valid Get Channel Authentication Capabilities answer (IPMI 2.0 supported).
fn channel_caps_answer(req: &[u8]) -> Vec<u8> {
    let rq_seq = req.get(18).copied().unwrap_or(0);
    let mut m = vec![0x81, 0x07 << 2];
    m.push(checksum(&m));
    m.extend_from_slice(&[
        0x20,
        rq_seq,
        0x38,
        0x00,
        0x01,
        0x80 | 0x04,
        0x00,
        0x02,
        0,
        0,
        0,
        0,
    ]);
    m.push(checksum(&m[3..]));
    let mut p = vec![
        0x06,
        0x00,
        0xFF,
        0x07,
        0x00,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        u8::try_from(m.len()).unwrap(),
    ];
    p.extend(m);
    p
}

#[tokio::test]
async fn garbage_answers_give_a_malformed_error_not_a_panic_or_hang() {
    let mut x: u32 = 0x2545_F491;
    let addr = hostile(move |_| {
        let mut out = Vec::new();
        for len in [0usize, 3, 7, 16, 40, 200] {
            out.push(
                (0..len)
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 17;
                        x ^= x << 5;
                        u8::try_from(x & 0xFF).unwrap()
                    })
                    .collect(),
            );
        }
        // and something that looks like RMCP+ with a lying length
        out.push(vec![
            0x06, 0x00, 0xFF, 0x07, 0x06, 0x11, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF, 1, 2,
        ]);
        out
    })
    .await;
    let (err, elapsed) = poll_hostile(&addr).await;
    assert!(matches!(err, Some(DriverError::Malformed { .. })), "{err:?}");
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
}

#[tokio::test]
async fn open_session_answer_for_another_console_session_id_is_refused() {
    let addr = hostile(|req| {
        // auth type byte 4: 00h = IPMI 1.5 (channel caps), 06h = RMCP+ (open session request)
        match (req.get(4), req.get(5)) {
            (Some(0x00), _) => vec![channel_caps_answer(req)],
            (Some(0x06), Some(0x10)) => {
                let tag = req.get(16).copied().unwrap_or(0);
                let mut body = vec![tag, 0x00, 0x04, 0x00];
                body.extend_from_slice(&0xDEAD_BEEFu32.to_le_bytes()); // not the console's id
                body.extend_from_slice(&0x0000_0042u32.to_le_bytes());
                for (t, alg) in [(0u8, 1u8), (1, 1), (2, 1)] {
                    body.extend_from_slice(&[t, 0, 0, 8, alg, 0, 0, 0]);
                }
                let mut p = vec![0x06, 0x00, 0xFF, 0x07, 0x06, 0x11, 0, 0, 0, 0, 0, 0, 0, 0];
                p.extend_from_slice(&u16::try_from(body.len()).unwrap().to_le_bytes());
                p.extend(body);
                vec![p]
            }
            _ => vec![],
        }
    })
    .await;
    let (err, elapsed) = poll_hostile(&addr).await;
    match err {
        Some(DriverError::Malformed { detail, .. }) => {
            assert!(detail.contains("session id is not ours"), "{detail}")
        }
        other => panic!("expected a malformed-answer error, got {other:?}"),
    }
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
}

#[tokio::test]
async fn silent_peer_is_a_timeout_after_the_configured_retries() {
    let addr = hostile(|_| vec![]).await;
    let (err, elapsed) = poll_hostile(&addr).await;
    match err {
        Some(DriverError::Timeout { what, after }) => {
            assert!(what.contains("Channel Authentication"), "{what}");
            assert_eq!(after, Duration::from_millis(1400));
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
}

// ---------------------------------------------------------------------------------- fake BMC

async fn poll_fake(bmc: &FakeBmc, query: &str) -> (DeviceReport, Option<DriverError>) {
    let t = target(fake_bmc::USER_NAME, fake_bmc::PASSWORD, &bmc.addr, query);
    driver::poll(&t, &cx()).await
}

#[tokio::test]
async fn cipher_suite_17_session_reads_everything_from_the_fake_bmc() {
    let bmc = FakeBmc::start(17, Misbehave::None).await;
    let (report, err) = poll_fake(&bmc, "?cipher=17").await;
    assert!(err.is_none(), "{err:?}");
    let id = report.identity.as_ref().unwrap();
    assert_eq!(id.attributes["ipmi.cipher_suite"], "17");
    assert_eq!(id.serial_number, "7ZQ9XK3");
    assert_eq!(id.model, "PowerEdge R650");
    assert_eq!(
        id.vendor, "Dell",
        "from IANA 674 when the FRU names no manufacturer"
    );
    assert_eq!(id.firmware_version, "2.45");
    assert_eq!(id.asset_tag, "RACK7-U20");
    assert_eq!(id.attributes["chassis.power"], "off");
    assert_eq!(id.macs[0].address, "f4:02:70:aa:bb:cc");
    assert_eq!(id.attributes["bmc.ip"], "10.1.2.3");
    // 2's complement temperature sensor.
    let t = report
        .readings
        .iter()
        .find(|r| r.metric == "temperature")
        .unwrap();
    assert_eq!((t.value, t.unit.as_str()), (-5.0, "Cel"));
    // DCMI supported here: device power from DCMI.
    assert_eq!(id.attributes["ipmi.power_source"], "dcmi");
    let p = report
        .readings
        .iter()
        .find(|r| r.metric == "power" && r.component.is_none())
        .unwrap();
    assert_eq!(p.value, 300.0);
    // PSU FRU found through the FRU locator SDR; serial in 6-bit packed ASCII; the BMC only
    // allows 16-byte FRU reads and refuses whole-record SDR reads.
    assert_eq!(report.components.len(), 1, "{:?}", report.components);
    let psu = &report.components[0];
    assert_eq!(psu.serial_number, "PSU00042");
    assert_eq!(
        (psu.vendor.as_str(), psu.part_number.as_str()),
        ("Delta", "0CMPWX")
    );
    assert_eq!(psu.component.as_ref().unwrap().kind, ComponentKind::Psu as i32);
    assert_eq!(report.status.unwrap().outcome, PollOutcome::Ok as i32);
    let stats = bmc.stats.lock().unwrap();
    assert_eq!(
        (stats.sessions_opened, stats.sessions_closed),
        (1, 1),
        "one session, closed"
    );
}

#[tokio::test]
async fn sdr_is_read_once_and_cached_while_its_timestamps_stay() {
    let bmc = FakeBmc::start(3, Misbehave::None).await;
    let get_sdr = || {
        bmc.stats
            .lock()
            .unwrap()
            .commands
            .get(&(0x0A, 0x23))
            .copied()
            .unwrap_or(0)
    };
    let (_, err) = poll_fake(&bmc, "").await;
    assert!(err.is_none(), "{err:?}");
    let first = get_sdr();
    assert!(first >= 4, "two records in header + chunk reads: {first}");
    let (report, err) = poll_fake(&bmc, "").await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(get_sdr(), first, "second poll must reuse the cached SDR");
    assert_eq!(report.components.len(), 1);
    let info = bmc.stats.lock().unwrap().commands[&(0x0A, 0x20)];
    assert_eq!(info, 2, "repository info is asked every poll");
}

#[tokio::test]
async fn suite_mismatch_wrong_password_and_foreign_answers_after_setup_are_clear_errors() {
    let bmc = FakeBmc::start(17, Misbehave::None).await;
    let (_, err) = poll_fake(&bmc, "?cipher=3").await;
    assert!(
        matches!(&err, Some(DriverError::DeviceException(d)) if d.contains("cipher suite")),
        "{err:?}"
    );
    let t = target(fake_bmc::USER_NAME, "not-the-password", &bmc.addr, "?cipher=17");
    let (_, err) = driver::poll(&t, &cx()).await;
    assert!(
        matches!(&err, Some(DriverError::Auth { detail }) if detail.contains("wrong password")),
        "{err:?}"
    );

    for (m, expect) in [
        (Misbehave::ForeignSessionId, "is not ours"),
        (Misbehave::BadIntegrity, "integrity check failed"),
    ] {
        let bmc = FakeBmc::start(3, m).await;
        let started = Instant::now();
        let (report, err) = poll_fake(&bmc, "").await;
        match err {
            Some(DriverError::Malformed { detail, .. }) => {
                assert!(detail.contains(expect), "{m:?}: {detail}")
            }
            other => panic!("{m:?}: expected a malformed-answer error, got {other:?}"),
        }
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(report.status.unwrap().outcome, PollOutcome::ProtocolError as i32);
    }
}

#[tokio::test]
async fn lost_request_is_retried_and_cancelled_sdr_reservation_is_renewed() {
    let bmc = FakeBmc::start(3, Misbehave::DropFirstRequest).await;
    let (report, err) = poll_fake(&bmc, "").await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(report.identity.unwrap().serial_number, "7ZQ9XK3");
    // The first request of a session is Set Session Privilege Level.
    let set_priv = bmc.stats.lock().unwrap().commands[&(0x06, 0x3B)];
    assert_eq!(set_priv, 2, "sent again after the first copy was lost");

    let bmc = FakeBmc::start(3, Misbehave::CancelReservationOnce).await;
    let (report, err) = poll_fake(&bmc, "").await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(report.components.len(), 1, "the FRU locator was still read");
    assert_eq!(
        bmc.stats.lock().unwrap().commands[&(0x0A, 0x22)],
        2,
        "reserved twice"
    );
}

#[tokio::test]
async fn a_poll_cut_off_by_its_deadline_still_closes_the_bmc_session() {
    let bmc = FakeBmc::start(3, Misbehave::SilentOnSdrInfo).await;
    let t = target(fake_bmc::USER_NAME, fake_bmc::PASSWORD, &bmc.addr, "");
    let mut short = cx();
    short.limits.poll_timeout = Duration::from_millis(1000); // shorter than 2 × 700 ms on SDR info
    let (report, err) = driver::poll(&t, &short).await;
    assert!(
        matches!(&err, Some(DriverError::Timeout { what, .. }) if what == "the whole poll"),
        "{err:?}"
    );
    assert_eq!(report.status.unwrap().outcome, PollOutcome::Timeout as i32);
    // The dropped session sent Close Session on its way out (fire and forget).
    let mut closed = 0;
    for _ in 0..50 {
        closed = bmc.stats.lock().unwrap().sessions_closed;
        if closed > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(closed, 1);

    // Without the outer deadline, the silent command fails the poll after its retries, and the
    // session is closed the normal way.
    let bmc = FakeBmc::start(3, Misbehave::SilentOnSdrInfo).await;
    let t = target(fake_bmc::USER_NAME, fake_bmc::PASSWORD, &bmc.addr, "");
    let (_, err) = driver::poll(&t, &cx()).await;
    assert!(
        matches!(&err, Some(DriverError::Timeout { what, .. }) if what == "Get SDR Repository Info"),
        "{err:?}"
    );
    assert_eq!(bmc.stats.lock().unwrap().sessions_closed, 1);
}

// ---------------------------------------------------------------------------------- pyghmi BMC

#[tokio::test]
async fn pyghmi_bmc_session_and_chassis_status_work_missing_commands_are_named() {
    // pyghmi's fake BMC, started by tests/peers/ipmi/start.sh.
    let Some([addr]) = Peers::load().require("pyghmi_bmc", ["GT_IPMI_PYGHMI_ADDR"]) else {
        return;
    };
    let t = target("ADMIN", "Adm1nPass!", &addr, "");
    let (report, err) = driver::poll(&t, &cx()).await;
    assert!(err.is_none(), "{err:?}");
    let id = report.identity.as_ref().unwrap();
    assert_eq!(id.attributes["chassis.power"], "on");
    assert_eq!(id.firmware_version, "1.00");
    let status = report.status.unwrap();
    assert_eq!(status.outcome, PollOutcome::Partial as i32);
    for what in ["Get System GUID", "FRU 0", "SDR repository", "LAN MAC"] {
        assert!(
            status
                .partial_errors
                .iter()
                .any(|e| e.starts_with(what) && e.contains("invalid or unsupported command")),
            "{what}: {:?}",
            status.partial_errors
        );
    }
    // Suite 17 is not offered: a clear refusal, no hang.
    let (_, err) = driver::poll(&target("ADMIN", "Adm1nPass!", &addr, "?cipher=17"), &cx()).await;
    assert!(
        matches!(&err, Some(DriverError::DeviceException(d)) if d.contains("cipher suite 17")),
        "{err:?}"
    );
}

/// Steady-state cost of a full poll in one process (SDR cached after the first poll), as
/// `groundtruth-agent run` sees it. `cargo test -p groundtruth-tests --test it -- --ignored
/// bench_ipmi --nocapture`; `tests/peers/ipmi/bench.sh` compares the tools process by process.
#[tokio::test]
#[ignore = "benchmark; prints timings"]
async fn bench_ipmi_sim_full_polls_in_one_process() {
    let Some([addr, user, pass, ..]) = peer("bench_ipmi") else {
        return;
    };
    let t = target(&user, &pass, &addr, "");
    let mut ms = Vec::new();
    for _ in 0..30 {
        let started = Instant::now();
        let report = poll_ok(&t).await;
        assert!(report.readings.len() > 10);
        ms.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    let cold = ms.remove(0);
    ms.sort_by(f64::total_cmp);
    eprintln!(
        "ipmi full poll in-process: first (cold SDR) {cold:.1} ms; warm: min {:.1} median {:.1} max {:.1} ms (n={})",
        ms[0],
        ms[ms.len() / 2],
        ms[ms.len() - 1],
        ms.len()
    );
}
