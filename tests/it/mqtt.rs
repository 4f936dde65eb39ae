//! The MQTT path with the real mosquitto (authenticated listener, ACLs): agent → broker →
//! collector (shared subscription, manual PUBACK after commit) → ack topic → agent's spool.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use groundtruth_agent::config::Config as AgentConfig;
use groundtruth_agent::run::Agent;
use groundtruth_collector::ingest::IngestService;
use groundtruth_collector::ingest::mqtt::{MqttIngestSettings, MqttIngestStats, run};
use groundtruth_tests::{Peers, TestDb};

fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{prefix}-{}-{nanos}", std::process::id())
}

fn agent_config(
    dir: &std::path::Path,
    id: &str,
    broker: &str,
    user: &str,
    pass_file: &std::path::Path,
) -> AgentConfig {
    let text = format!(
        "[agent]\nid = \"{id}\"\nsite = \"DC1\"\nstate_dir = {:?}\n\n[mqtt]\nurl = \"mqtt://{broker}\"\nusername = \"{user}\"\npassword = {{ file = {pass_file:?} }}\n\n[defaults]\ndelivery_timeout = \"5s\"\n",
        dir.join("agent-state")
    );
    AgentConfig::parse(&text, "mqtt-agent.toml").unwrap()
}

/// Runs against both store back ends (`::sqlite`, `::postgres`).
async fn batches_flow_through_mosquitto_and_are_acked_after_commit(t: TestDb) {
    let Some([broker, user, pass, cuser, cpass]) = Peers::load().require(
        "mqtt_end_to_end",
        [
            "GT_MQTT_ADDR",
            "GT_MQTT_USER",
            "GT_MQTT_PASS",
            "GT_MQTT_COLLECTOR_USER",
            "GT_MQTT_COLLECTOR_PASS",
        ],
    ) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let store = t.store().await.unwrap();
    let (tx, _rx) = tokio::sync::watch::channel(0);
    let stats = Arc::new(MqttIngestStats::default());
    let (host, port) = broker.split_once(':').unwrap();
    let settings = MqttIngestSettings {
        host: host.into(),
        port: port.parse().unwrap(),
        username: Some(cuser),
        password: Some(cpass),
        share_group: unique("g"),
        client_id: unique("collector"),
        tls: None,
        publish_power: None,
    };
    let collector = tokio::spawn(run(
        settings,
        IngestService::new(store.clone(), tx),
        Arc::clone(&stats),
    ));
    for _ in 0..100 {
        if stats.subscribed.load(Ordering::Relaxed) >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        stats.subscribed.load(Ordering::Relaxed) >= 2,
        "collector never subscribed"
    );

    let pass_file = dir.path().join("mqtt.pass");
    std::fs::write(&pass_file, format!("{pass}\n")).unwrap();
    let agent_id = unique("mqtt-agent");
    let mut agent = Agent::new(agent_config(dir.path(), &agent_id, &broker, &user, &pass_file)).unwrap();
    for round in 1..=3 {
        let s = agent.round().await.unwrap();
        assert_eq!(
            s.pending_batches, 0,
            "round {round}: batch not acknowledged end to end"
        );
    }
    // Other tests' collectors on the broker may acknowledge this agent's batch first (they
    // subscribe to every agent): wait, with a deadline, for this collector's own commit.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while store.batch_seq_span(&agent_id).await.unwrap() != (3, 3) && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(store.batch_seq_span(&agent_id).await.unwrap(), (3, 3));
    // Other tests' agents publish on the same broker at the same time and every collector here
    // subscribes to all agents: the per-agent store span above is this agent's exact count.
    assert!(stats.committed.load(Ordering::Relaxed) >= 3);
    assert_eq!(stats.malformed.load(Ordering::Relaxed), 0);
    collector.abort();
}

groundtruth_tests::on_both_stores!(batches_flow_through_mosquitto_and_are_acked_after_commit);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_broker_password_keeps_batches_spooled_with_a_clear_error() {
    let Some([broker, user]) = Peers::load().require("mqtt_wrong_password", ["GT_MQTT_ADDR", "GT_MQTT_USER"])
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let pass_file = dir.path().join("mqtt.pass");
    std::fs::write(&pass_file, "definitely-not-the-password\n").unwrap();
    let text = format!(
        "[agent]\nid = \"{}\"\nsite = \"DC1\"\nstate_dir = {:?}\n\n[mqtt]\nurl = \"mqtt://{broker}\"\nusername = \"{user}\"\npassword = {{ file = {pass_file:?} }}\n\n[defaults]\ndelivery_timeout = \"1s\"\n",
        unique("badpass"),
        dir.path().join("agent-state")
    );
    let config = AgentConfig::parse(&text, "a.toml").unwrap();
    let mut uplink = groundtruth_agent::uplink::mqtt::MqttUplink::start(config.mqtt.clone().unwrap());
    let err = uplink
        .deliver(vec![], Duration::from_secs(2))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&broker) && (err.contains("BadUserNamePassword") || err.contains("NotAuthorized")),
        "{err}"
    );
    assert!(
        !err.contains("definitely-not-the-password"),
        "secret leaked: {err}"
    );
    drop(uplink);
    let mut agent = Agent::new(config).unwrap();
    let s = agent.round().await.unwrap();
    assert_eq!((s.delivered_batches, s.pending_batches), (0, 1));
}

/// `[mqtt] protocol = "5"` against the real mosquitto: batches are acknowledged end to end by a
/// collector speaking MQTT 3.1.1 (the broker translates), and an MQTT 5 observer sees each
/// batch's message expiry, content type and user properties.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt5_batches_carry_expiry_and_content_type_and_are_acked_after_commit() {
    use rumqttc::v5::mqttbytes::QoS as Q5;
    use rumqttc::v5::mqttbytes::v5::Packet as P5;
    use rumqttc::v5::{AsyncClient, Event, MqttOptions};
    let Some([broker, user, pass, cuser, cpass]) = Peers::load().require(
        "mqtt5_end_to_end",
        [
            "GT_MQTT_ADDR",
            "GT_MQTT_USER",
            "GT_MQTT_PASS",
            "GT_MQTT_COLLECTOR_USER",
            "GT_MQTT_COLLECTOR_PASS",
        ],
    ) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let store = groundtruth_collector::store::Store::open(&dir.path().join("state.db"))
        .await
        .unwrap();
    let (tx, _rx) = tokio::sync::watch::channel(0);
    let stats = Arc::new(MqttIngestStats::default());
    let (host, port) = broker.split_once(':').unwrap();
    let port: u16 = port.parse().unwrap();
    let settings = MqttIngestSettings {
        host: host.into(),
        port,
        username: Some(cuser.clone()),
        password: Some(cpass.clone()),
        share_group: unique("g5"),
        client_id: unique("collector5"),
        tls: None,
        publish_power: None,
    };
    let collector = tokio::spawn(run(
        settings,
        IngestService::new(store.clone(), tx),
        Arc::clone(&stats),
    ));

    // An MQTT 5 observer on this agent's batch topics.
    let agent_id = unique("mqtt5-agent");
    let mut opts = MqttOptions::new(unique("observer5"), host, port);
    opts.set_credentials(cuser, cpass);
    opts.set_max_packet_size(Some(16 << 20));
    let (observer, mut ev) = AsyncClient::new(opts, 64);
    let filter = format!("{}/+", groundtruth_proto::topics::agent_prefix("DC1", &agent_id));
    let (seen_tx, mut seen) = tokio::sync::mpsc::unbounded_channel();
    let (sub_tx, mut subscribed) = tokio::sync::mpsc::unbounded_channel();
    let obs = tokio::spawn(async move {
        loop {
            match ev.poll().await {
                Ok(Event::Incoming(P5::ConnAck(_))) => {
                    let (o, f) = (observer.clone(), filter.clone());
                    tokio::spawn(async move { o.subscribe(f, Q5::AtLeastOnce).await });
                }
                Ok(Event::Incoming(P5::SubAck(_))) => {
                    let _ = sub_tx.send(());
                }
                Ok(Event::Incoming(P5::Publish(p))) => {
                    let topic = String::from_utf8_lossy(&p.topic).into_owned();
                    let _ = seen_tx.send((topic, p.properties));
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    });
    for _ in 0..100 {
        if stats.subscribed.load(Ordering::Relaxed) >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        stats.subscribed.load(Ordering::Relaxed) >= 2,
        "collector never subscribed"
    );
    tokio::time::timeout(Duration::from_secs(5), subscribed.recv())
        .await
        .expect("observer never subscribed");

    let pass_file = dir.path().join("mqtt.pass");
    std::fs::write(&pass_file, format!("{pass}\n")).unwrap();
    let text = format!(
        "[agent]\nid = \"{agent_id}\"\nsite = \"DC1\"\nstate_dir = {:?}\n\n[mqtt]\nurl = \"mqtt://{broker}\"\n\
         username = \"{user}\"\npassword = {{ file = {pass_file:?} }}\nprotocol = \"5\"\nsession_expiry = \"1h\"\n\n\
         [defaults]\ndelivery_timeout = \"5s\"\n",
        dir.path().join("agent-state")
    );
    let mut agent = Agent::new(AgentConfig::parse(&text, "mqtt5-agent.toml").unwrap()).unwrap();
    for round in 1..=3 {
        let s = agent.round().await.unwrap();
        assert_eq!(
            s.pending_batches, 0,
            "round {round}: batch not acknowledged end to end"
        );
    }
    // Other tests' collectors on the broker may acknowledge this agent's batch first (they
    // subscribe to every agent): wait, with a deadline, for this collector's own commit.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while store.batch_seq_span(&agent_id).await.unwrap() != (3, 3) && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(store.batch_seq_span(&agent_id).await.unwrap(), (3, 3));
    // Other tests' agents publish on the same broker at the same time and every collector here
    // subscribes to all agents: the per-agent store span above is this agent's exact count.
    assert!(stats.committed.load(Ordering::Relaxed) >= 3);

    let mut batches = 0;
    while let Ok(Some((topic, props))) = tokio::time::timeout(Duration::from_secs(2), seen.recv()).await {
        if !topic.ends_with("/inventory") && !topic.ends_with("/telemetry") {
            continue; // the retained status
        }
        batches += 1;
        let props = props.expect("MQTT 5 publish properties");
        let expiry = props.message_expiry_interval.expect("a message expiry");
        assert!(expiry > 0 && expiry <= 600, "{expiry}");
        assert_eq!(
            props.content_type.as_deref(),
            Some("application/x-protobuf; messageType=groundtruth.v1.Batch")
        );
        assert_eq!(props.payload_format_indicator, Some(0));
        assert!(
            props
                .user_properties
                .iter()
                .any(|(k, v)| k == "kind" && v == "BATCH_KIND_MIXED"),
            "{:?}",
            props.user_properties
        );
    }
    assert_eq!(batches, 3);
    obs.abort();
    collector.abort();
}
