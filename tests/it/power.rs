//! Power roll-ups end to end (issue #9 "Power"): the DMTF rackmount1 server and the DMTF rack-PDU
//! mockup, served by sushy-tools, polled by the agent's Redfish driver and committed to a store;
//! the site map pins the PDU to rack WEB43 (where rackmount1's Redfish Placement puts it, at U12)
//! and says which PDU outlet feeds U12. The collector's power publisher then publishes, through
//! the real authenticated mosquitto, retained JSON on `groundtruth/racks/<site>/<room>/<rack>/power`
//! and `groundtruth/rooms/<site>/<room>/power`, which a subscriber reads back: WEB43's total
//! measured at the PDU's input, rackmount1's own 344 W beside it, and outlet A2 → rackmount1.

use std::time::Duration;

use groundtruth_agent::driver::{PollCx, poll_all};
use groundtruth_agent::target::Target;
use groundtruth_collector::power;
use groundtruth_collector::reconcile::Rules;
use groundtruth_collector::sitemap::SiteMap;
use groundtruth_tests::{Peers, TestDb, init_tls};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

groundtruth_tests::on_both_stores!(rack_and_room_power_is_published_on_mqtt_with_outlet_feeds);

async fn rack_and_room_power_is_published_on_mqtt_with_outlet_feeds(t: TestDb) {
    // Each back end's run has its own site (retained topics) and MQTT client ids.
    let site = if t.db.is_postgres() { "PWRPG" } else { "PWR" };
    let p = Peers::load();
    let Some([base, mqtt, user, pass]) = p.require(
        "power_published_on_mqtt",
        [
            "GT_REDFISH_SHARED_BASE_PORT",
            "GT_MQTT_ADDR",
            "GT_MQTT_COLLECTOR_USER",
            "GT_MQTT_COLLECTOR_PASS",
        ],
    ) else {
        return;
    };
    init_tls();
    let base: u16 = base.parse().unwrap();
    let cx = PollCx::default();
    let mut reports = Vec::new();
    for port in [base, base + 1] {
        let t = Target::parse(&format!("redfish://127.0.0.1:{port}?insecure")).unwrap();
        let (r, err) = poll_all(&t, &cx).await;
        assert!(err.is_none(), "polling :{port}: {err:?}");
        reports.extend(r);
    }
    let pdu = reports
        .iter()
        .find(|r| {
            r.identity
                .as_ref()
                .is_some_and(|i| i.serial_number == "29347ZT536")
        })
        .cloned()
        .expect("the PDU mockup's report");
    let outlets: Vec<(u32, String, f64)> = pdu
        .readings
        .iter()
        .filter(|r| r.metric == "power")
        .filter_map(|r| {
            let c = r.component.as_ref()?;
            (c.kind == groundtruth_proto::v1::ComponentKind::Outlet as i32)
                .then(|| (c.index, c.label.clone(), r.value))
        })
        .collect();
    eprintln!("power: PDU outlets {outlets:?}");
    // Outlet "A2" (384.5 W per INVENTORY.md) feeds rackmount1.
    let (a2_index, _, a2_watts) = outlets
        .iter()
        .find(|o| o.1.contains("A2"))
        .cloned()
        .expect("outlet A2 among the PDU's readings");

    let store = t.store().await.unwrap();
    groundtruth_tests::commit_reports(&store, "power-agent", site, reports).await;
    let map = SiteMap::parse(
        &format!(
            "[[rack]]\nsite = \"{site}\"\nroom = \"Hall 2\"\nname = \"WEB43\"\n\n\
             [[device]]\nserial = \"29347ZT536\"\nsite = \"{site}\"\nrack = \"WEB43\"\n\n\
             [[outlet]]\npdu = \"29347ZT536\"\noutlet = {a2_index}\nsite = \"{site}\"\nrack = \"WEB43\"\nu = 12\n"
        ),
        "site-map.toml",
    )
    .unwrap();
    let rules = Rules {
        site_map: map,
        ..Rules::builtin(site)
    };
    let view = power::snapshot(&store, &rules).await.unwrap();
    eprintln!("power: {}", serde_json::to_string(&view).unwrap());

    // Subscribe first, then start the publisher: the first round must arrive (retained or live).
    let (host, port) = mqtt.rsplit_once(':').unwrap();
    let port: u16 = port.parse().unwrap();
    let mut sub = MqttOptions::new(format!("power-sub-{site}-{}", std::process::id()), host, port);
    sub.set_credentials(user.clone(), pass.clone());
    sub.set_max_packet_size(1024 * 1024, 1024 * 1024);
    let (client, mut events) = AsyncClient::new(sub, 64);
    client
        .subscribe(format!("groundtruth/racks/{site}/#"), QoS::AtLeastOnce)
        .await
        .unwrap();
    client
        .subscribe(format!("groundtruth/rooms/{site}/#"), QoS::AtLeastOnce)
        .await
        .unwrap();
    let mut publisher_opts = MqttOptions::new(format!("power-pub-{site}-{}", std::process::id()), host, port);
    publisher_opts.set_credentials(user, pass);
    let publisher = tokio::spawn(power::publish(
        publisher_opts,
        store.clone(),
        rules,
        Duration::from_secs(1),
    ));

    // Only this run's messages: an earlier run's retained ones arrive first.
    let started = humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string();
    let mut got = std::collections::HashMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while got.len() < 2 && tokio::time::Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_secs(5), events.poll()).await {
            Ok(Ok(Event::Incoming(Packet::Publish(m)))) => {
                let Ok(v) = serde_json::from_slice::<serde_json::Value>(&m.payload) else {
                    continue; // an empty retained message (cleared)
                };
                if v["at"].as_str().is_some_and(|at| *at >= *started) {
                    got.insert(m.topic.clone(), v);
                }
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => panic!("subscriber: {e}"),
            Err(_) => {}
        }
    }
    publisher.abort();
    // Leave the shared broker clean: an empty retained message deletes the retained one.
    for t in got.keys() {
        client
            .publish(t.as_str(), QoS::AtLeastOnce, true, Vec::new())
            .await
            .unwrap();
    }
    let flush = tokio::time::Instant::now() + Duration::from_secs(2);
    while tokio::time::Instant::now() < flush {
        let _ = tokio::time::timeout(Duration::from_millis(200), events.poll()).await;
    }
    eprintln!("power: topics {:?}", got.keys().collect::<Vec<_>>());

    // The PDU is pinned to WEB43 too: the rack's total is now measured at the PDU's input
    // (the PDU's own Metrics.PowerWatts, 6438 W per INVENTORY.md), the server's own 344 W stays
    // beside it, and its outlet A2 feeds the device the collector placed at U12.
    let web43 = got
        .get(&format!("groundtruth/racks/{site}/Hall_2/WEB43/power"))
        .expect("WEB43's rack message");
    assert_eq!(web43["source"], "inlets", "{web43}");
    let pdu_power = pdu
        .readings
        .iter()
        .find(|r| r.metric == "power" && r.component.is_none())
        .map(|r| r.value)
        .expect("the PDU's own power reading");
    assert!(
        (web43["watts"].as_f64().unwrap() - pdu_power).abs() < 1e-6,
        "{web43} vs {pdu_power}"
    );
    assert!(
        (web43["device_watts"].as_f64().unwrap() - 344.0).abs() < 1e-9,
        "{web43}"
    );
    assert_eq!(web43["pdus"], 1);
    assert!(web43["at"].as_str().is_some_and(|t| t.ends_with('Z')));
    let room = got
        .get(&format!("groundtruth/rooms/{site}/Hall_2/power"))
        .expect("Hall 2's room message");
    assert!(
        (room["watts"].as_f64().unwrap() - pdu_power).abs() < 1e-6,
        "{room}"
    );
    let feed = web43["outlets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["outlet"] == a2_index)
        .expect("outlet A2's feed");
    assert!((feed["watts"].as_f64().unwrap() - a2_watts).abs() < 1e-9);
    assert_eq!(feed["rack"], "WEB43");
    assert!(
        feed["device"].as_str().is_some_and(|d| d.contains("437XR1138R2")),
        "the outlet feeds rackmount1: {feed}"
    );
}
