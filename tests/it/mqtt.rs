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
    assert_eq!(store.batch_seq_span(&agent_id).await.unwrap(), (3, 3));
    assert_eq!(stats.committed.load(Ordering::Relaxed), 3);
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
