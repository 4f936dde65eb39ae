//! Broker outage with replay (RELIABILITY.md R2, CI variant): a PRIVATE mosquitto (own config,
//! free port, `persistence true`, own data dir; never the shared peer) between the agent service
//! (50 simulated SNMP devices every 2 s) and the collector's MQTT ingest. The broker is killed
//! (SIGKILL) for 20 s, then restarted on the same port and data dir. Asserts: polling goes on
//! during the outage (the spool takes the batches), and afterwards every batch reaches the store
//! with no gap in the sequence. Long variant (R2's 10 minutes):
//!   GT_OUTAGE_SECONDS=600 cargo test -p groundtruth-tests --test it outage -- --nocapture

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use groundtruth_agent::config::Config as AgentConfig;
use groundtruth_agent::run::Agent;
use groundtruth_collector::ingest::IngestService;
use groundtruth_collector::ingest::mqtt::{MqttIngestSettings, MqttIngestStats, run};
use groundtruth_collector::store::Store;
use groundtruth_tests::free_port;
use groundtruth_tests::sim::Behaviour;
use groundtruth_tests::sim::snmp::{DeviceSpec, SnmpFleet};
use groundtruth_tests::sim::snmprec::Recording;

fn start_mosquitto(conf: &std::path::Path) -> std::process::Child {
    std::process::Command::new("mosquitto")
        .arg("-c")
        .arg(conf)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("mosquitto")
}

async fn wait_port(port: u16) {
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("private mosquitto did not listen on {port}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_killed_for_20s_then_every_batch_arrives_in_order() {
    outage_with_replay("", "outage-agent").await;
}

/// The same outage with the agent speaking MQTT 5 (`protocol = "5"`: session expiry, message
/// expiry on every batch): reconnect, resend and replay behave the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt5_broker_killed_for_20s_then_every_batch_arrives_in_order() {
    outage_with_replay("protocol = \"5\"\n", "outage-agent-v5").await;
}

async fn outage_with_replay(mqtt_extra: &str, agent_id: &str) {
    if std::process::Command::new("mosquitto")
        .arg("-h")
        .output()
        .is_err()
    {
        let msg = "SKIP: broker outage: mosquitto not installed";
        assert!(std::env::var("GT_REQUIRE_PEERS").as_deref() != Ok("1"), "{msg}");
        eprintln!("{msg}");
        return;
    }
    let outage = Duration::from_secs(
        std::env::var("GT_OUTAGE_SECONDS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(20),
    );
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let data = dir.path().join("mosquitto-data");
    std::fs::create_dir_all(&data).unwrap();
    let conf = dir.path().join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!(
            "user root\nlistener {port} 127.0.0.1\nallow_anonymous true\npersistence true\npersistence_location {}/\nautosave_interval 1\nmax_queued_messages 100000\nlog_dest none\n",
            data.display()
        ),
    )
    .unwrap();
    let mut broker = start_mosquitto(&conf);
    wait_port(port).await;

    let store = Store::open(&dir.path().join("state.db")).await.unwrap();
    let (tx, _rx) = tokio::sync::watch::channel(0);
    let stats = Arc::new(MqttIngestStats::default());
    let collector = tokio::spawn(run(
        MqttIngestSettings {
            host: "127.0.0.1".into(),
            port,
            username: None,
            password: None,
            share_group: format!("outage-{agent_id}"),
            client_id: format!("outage-collector-{agent_id}-{}", std::process::id()),
            tls: None,
            publish_power: None,
        },
        IngestService::new(store.clone(), tx),
        Arc::clone(&stats),
    ));

    let text = std::fs::read_to_string(
        groundtruth_tests::repo_root().join("tests/fixtures/sim/generic-pdu.snmprec"),
    )
    .unwrap();
    let recording = Arc::new(Recording::parse(&text).unwrap());
    let fleet = SnmpFleet::start(
        2,
        (0..50)
            .map(|i| DeviceSpec {
                name: format!("out-{i:03}"),
                recording: Arc::clone(&recording),
                behaviour: Behaviour::Normal,
            })
            .collect(),
    )
    .await
    .unwrap();
    let mut cfg = format!(
        "[agent]\nid = \"{agent_id}\"\nsite = \"DC1\"\nstate_dir = {:?}\n\n[mqtt]\nurl = \"mqtt://127.0.0.1:{port}\"\n{mqtt_extra}\n\
         [defaults]\ninterval = \"2s\"\ntimeout = \"1s\"\ndelivery_timeout = \"5s\"\nbatch_max_delay = \"1s\"\n\n",
        dir.path().join("agent-state")
    );
    for i in 0..fleet.len() {
        cfg.push_str(&format!(
            "[[targets]]\nname = {:?}\nurl = {:?}\n",
            fleet.name(i),
            fleet.url(i)
        ));
    }
    let agent = Agent::new(AgentConfig::parse(&cfg, "outage-agent.toml").unwrap()).unwrap();
    let (_reload_tx, reload_rx) = tokio::sync::mpsc::channel(1);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let agent_task = tokio::spawn(agent.run(reload_rx, async move {
        let _ = stop_rx.await;
    }));

    // Steady state, then the outage.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let (before_n, before_max) = store.batch_seq_span(agent_id).await.unwrap();
    assert!(before_n > 0, "nothing delivered before the outage");
    broker.kill().unwrap();
    let _ = broker.wait();
    let polls_at_kill: u64 = (0..fleet.len()).map(|i| fleet.polls(i)).sum();
    tokio::time::sleep(outage).await;
    let polls_during: u64 = (0..fleet.len()).map(|i| fleet.polls(i)).sum::<u64>() - polls_at_kill;
    let (during_n, _) = store.batch_seq_span(agent_id).await.unwrap();
    let mut broker = start_mosquitto(&conf);
    wait_port(port).await;
    let restarted = Instant::now();

    // Drain: the spooled batches arrive, in order, with no gap.
    let mut last = (0, 0);
    while restarted.elapsed() < Duration::from_secs(90) {
        last = store.batch_seq_span(agent_id).await.unwrap();
        if last.0 == last.1 && last.1 >= before_max + outage.as_secs() / 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let drained = restarted.elapsed();
    let _ = stop_tx.send(());
    let _ = tokio::time::timeout(Duration::from_secs(10), agent_task).await;
    collector.abort();
    let _ = broker.kill();
    let _ = broker.wait();
    eprintln!(
        "outage ({agent_id}): before {before_n}/{before_max} batches; during the {outage:?} outage {polls_during} polls, {during_n} stored; \
         after restart {}/{} (count/max seq) within {drained:?}; collector committed {}, duplicates {}",
        last.0,
        last.1,
        stats.committed.load(Ordering::Relaxed),
        stats.duplicates.load(Ordering::Relaxed)
    );
    // Polling went on (50 devices every 2 s; allow for the kill's first seconds).
    let expected = 50 * outage.as_secs() / 2;
    assert!(
        polls_during * 10 >= expected * 9,
        "polls during outage {polls_during} < 90 % of {expected}"
    );
    assert_eq!(last.0, last.1, "gap in the batch sequence after the outage");
    assert!(
        last.1 >= before_max + outage.as_secs() / 2,
        "batches sealed during the outage did not all arrive: max seq {}",
        last.1
    );
}
