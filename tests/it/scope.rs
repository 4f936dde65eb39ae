//! Poll scopes against real peers: a telemetry-only poll (what the scheduler runs between
//! inventory polls, `driver::PollScope`) sends fewer requests and skips the identity reads, yet
//! returns the same readings as a full poll.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use groundtruth_agent::driver::{self, Limits, PollCx, PollScope};
use groundtruth_agent::target::Target;
use groundtruth_proto::v1::{DeviceReport, PollOutcome};
use groundtruth_tests::Peers;
use tokio::net::UdpSocket;

fn cx(scope: PollScope) -> PollCx {
    PollCx {
        limits: Limits {
            request_timeout: std::time::Duration::from_millis(1500),
            retries: 1,
            ..Limits::default()
        },
        scope,
    }
}

/// A UDP relay in front of the real snmpd that counts the requests it forwards (one client).
async fn counting_relay(upstream: &str) -> (u16, Arc<AtomicU64>) {
    let front = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let back = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
    back.connect(upstream).await.unwrap();
    let port = front.local_addr().unwrap().port();
    let count = Arc::new(AtomicU64::new(0));
    let client = Arc::new(tokio::sync::Mutex::new(None));
    {
        let (front, back, count, client) = (
            Arc::clone(&front),
            Arc::clone(&back),
            Arc::clone(&count),
            Arc::clone(&client),
        );
        tokio::spawn(async move {
            let mut buf = vec![0u8; 65536];
            while let Ok((n, from)) = front.recv_from(&mut buf).await {
                *client.lock().await = Some(from);
                count.fetch_add(1, Ordering::Relaxed);
                let _ = back.send(&buf[..n]).await;
            }
        });
    }
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65536];
        while let Ok(n) = back.recv(&mut buf).await {
            if let Some(to) = *client.lock().await {
                let _ = front.send_to(&buf[..n], to).await;
            }
        }
    });
    (port, count)
}

fn metrics(r: &DeviceReport) -> BTreeSet<String> {
    r.readings
        .iter()
        .map(|x| {
            let c = x.component.clone().unwrap_or_default();
            format!("{}/{}/{}", x.metric, c.kind, c.index)
        })
        .collect()
}

fn ok(r: &DeviceReport) -> bool {
    let o = r.status.as_ref().map_or(0, |s| s.outcome);
    o == PollOutcome::Ok as i32 || o == PollOutcome::Partial as i32
}

/// net-snmp snmpd: the full poll walks ifDescr/ifPhysAddress (MACs) and ENTITY-MIB; the
/// telemetry-only poll does not, so it sends fewer requests and reports no MACs, but the same
/// readings.
#[tokio::test]
async fn snmpd_telemetry_only_poll_skips_the_identity_walks() {
    let Some([addr, community]) =
        Peers::load().require("snmpd_telemetry_only", ["GT_SNMPD_ADDR", "GT_SNMPD_COMMUNITY"])
    else {
        return;
    };
    let (port, count) = counting_relay(&addr).await;
    let target = Target::parse(&format!("snmp://{community}@127.0.0.1:{port}")).unwrap();

    let (full, err) = driver::poll(&target, &cx(PollScope::ALL)).await;
    assert!(err.is_none() && ok(&full), "{err:?} {:?}", full.status);
    let full_requests = count.swap(0, Ordering::Relaxed);
    let (tel, err) = driver::poll(&target, &cx(PollScope::TELEMETRY)).await;
    assert!(err.is_none() && ok(&tel), "{err:?} {:?}", tel.status);
    let tel_requests = count.load(Ordering::Relaxed);
    eprintln!("snmpd: full poll {full_requests} requests, telemetry-only poll {tel_requests} requests");

    let full_id = full.identity.clone().unwrap();
    assert!(!full_id.macs.is_empty(), "snmpd serves this host's interfaces");
    let tel_id = tel.identity.clone().unwrap();
    assert!(tel_id.macs.is_empty(), "ifPhysAddress was not walked");
    assert!(tel.locations.is_empty() && tel.components.is_empty());
    // Every table walk is at least one request; the two ifTable walks alone are two.
    assert!(
        tel_requests + 2 <= full_requests,
        "telemetry-only {tel_requests} vs full {full_requests}"
    );
    assert!(!metrics(&tel).is_empty());
    assert_eq!(metrics(&tel), metrics(&full), "the same readings");
}

/// Modbus (pymodbus UPS): a telemetry-only poll reads no identity registers (no serial in the
/// report) and still every reading.
#[tokio::test]
async fn modbus_telemetry_only_poll_reads_no_identity_registers() {
    let Some([addr, unit, serial]) = Peers::load().require(
        "modbus_telemetry_only",
        ["GT_MODBUS_UPS_ADDR", "GT_MODBUS_UPS_UNIT", "GT_MODBUS_UPS_SERIAL"],
    ) else {
        return;
    };
    let target = Target::parse(&format!("modbus+tcp://{addr}?unit={unit}&map=test-rack-ups")).unwrap();
    let (full, err) = driver::poll(&target, &cx(PollScope::ALL)).await;
    assert!(err.is_none() && ok(&full), "{err:?}");
    assert_eq!(full.identity.as_ref().unwrap().serial_number, serial);
    let (tel, err) = driver::poll(&target, &cx(PollScope::TELEMETRY)).await;
    assert!(err.is_none() && ok(&tel), "{err:?}");
    assert_eq!(tel.identity.as_ref().unwrap().serial_number, "");
    assert!(!metrics(&tel).is_empty());
    assert_eq!(metrics(&tel), metrics(&full));
}

/// IPMI (our ipmi_sim): a telemetry-only poll sends no FRU or LAN commands (no serial, no MAC)
/// and reads the same sensors.
#[tokio::test]
async fn ipmi_telemetry_only_poll_skips_fru_and_lan() {
    let Some([addr, user, pass]) = Peers::load().require(
        "ipmi_telemetry_only",
        ["GT_IPMI_ADDR", "GT_IPMI_USER", "GT_IPMI_PASS"],
    ) else {
        return;
    };
    let pass: String = url::form_urlencoded::byte_serialize(pass.as_bytes()).collect();
    let target = Target::parse(&format!("ipmi://{user}:{pass}@{addr}")).unwrap();
    let (full, err) = driver::poll(&target, &cx(PollScope::ALL)).await;
    assert!(err.is_none() && ok(&full), "{err:?}");
    let full_id = full.identity.clone().unwrap();
    assert!(!full_id.serial_number.is_empty() && !full_id.macs.is_empty());
    let (tel, err) = driver::poll(&target, &cx(PollScope::TELEMETRY)).await;
    assert!(err.is_none() && ok(&tel), "{err:?}");
    let tel_id = tel.identity.clone().unwrap();
    assert!(tel_id.serial_number.is_empty() && tel_id.macs.is_empty() && tel.components.is_empty());
    assert_eq!(metrics(&tel), metrics(&full));
}

/// Redfish (our sushy-tools BMC): the inventory cache follows the scheduler. A poll with
/// identity due (`refresh`) re-reads the inventory even when the cache is young; a
/// telemetry-only poll reads only the power/thermal resources, even when the cache is older
/// than `?inventory_refresh=`.
#[tokio::test]
async fn redfish_inventory_is_reread_when_identity_is_due_and_reused_otherwise() {
    let Some([url]) = Peers::load().require("redfish_scope", ["GT_REDFISH_URL"]) else {
        return;
    };
    groundtruth_tests::init_tls();
    // max_inflight=5 and a 0 s refresh: an endpoint (and cache) of this test's own.
    let url = format!(
        "{}?insecure&max_inflight=5&inventory_refresh=0s",
        url.replace("https://", "redfish://")
    );
    let target = Target::parse(&url).unwrap();
    let Target::Redfish(t) = &target else { panic!() };
    let ep = driver::redfish::client::endpoint(t, &cx(PollScope::ALL)).unwrap();
    let requests = || ep.requests.load(Ordering::Relaxed);
    let due = PollScope {
        refresh: true,
        ..PollScope::ALL
    };
    let mut counts = Vec::new();
    let mut identities = Vec::new();
    for scope in [due, PollScope::TELEMETRY, PollScope::TELEMETRY, due] {
        let before = requests();
        let (reports, err) = driver::poll_all(&target, &cx(scope)).await;
        assert!(err.is_none(), "{err:?}");
        assert!(reports.iter().all(ok));
        counts.push(requests() - before);
        identities.push(reports[0].identity.clone().unwrap());
    }
    eprintln!("redfish requests per poll (due, telemetry, telemetry, due): {counts:?}");
    assert!(counts[1] < counts[0] && counts[2] < counts[0], "{counts:?}");
    assert_eq!(counts[1], counts[2]);
    assert!(
        counts[3] > counts[1],
        "identity due: the inventory is read again: {counts:?}"
    );
    assert_eq!(identities[0].serial_number, "GTSRV0000001");
    assert!(identities.iter().all(|i| i.serial_number == "GTSRV0000001"));
}
