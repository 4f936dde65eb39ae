//! Scale (RELIABILITY.md R7, CI variant): the agent's scheduler polls 1,000 simulated SNMP
//! devices (tests/src/sim, 8 UDP sockets) on a short interval, 5 % black-holed and 1 % answering
//! at 0.9 × the timeout, and streams to an in-process collector. Asserts: healthy devices are
//! polled every interval (≥ 99 % of them, counted per device at the simulator), dead devices
//! neither starve the others nor get hammered, every sealed batch reaches the store with no gap
//! in its sequence, RSS stays bounded.
//!
//! CI variant: 1,000 devices, 10 s interval, 2 rounds measured after 1 round of warm-up (~25 s).
//! Long variant (10,000 devices, 60 s interval, 10 minutes):
//!   GT_SCALE_DEVICES=10000 GT_SCALE_INTERVAL_S=60 GT_SCALE_ROUNDS=10 \
//!     cargo test --release -p groundtruth-tests --test it scale::fleet_long -- --ignored --nocapture

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use groundtruth_agent::config::Config as AgentConfig;
use groundtruth_agent::run::Agent;
use groundtruth_collector::ingest::IngestService;
use groundtruth_collector::store::Store;
use groundtruth_proto::v1::ingest_server::IngestServer;
use groundtruth_tests::sim::snmp::{DeviceSpec, SnmpFleet};
use groundtruth_tests::sim::snmprec::Recording;
use groundtruth_tests::sim::{Behaviour, cpu_time, rss_kib};
use groundtruth_tests::{free_port, init_tls};

struct Params {
    devices: usize,
    interval: Duration,
    timeout: Duration,
    rounds: u32,
}

fn env_or(key: &str, default: u64) -> u64 {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_of_1000_snmp_devices_5pct_dead_1pct_slow() {
    run(Params {
        devices: usize::try_from(env_or("GT_SCALE_DEVICES", 1000)).unwrap(),
        interval: Duration::from_secs(env_or("GT_SCALE_INTERVAL_S", 10)),
        timeout: Duration::from_millis(1000),
        rounds: u32::try_from(env_or("GT_SCALE_ROUNDS", 2)).unwrap(),
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "long variant: see the module doc for the command"]
async fn fleet_long() {
    run(Params {
        devices: usize::try_from(env_or("GT_SCALE_DEVICES", 10_000)).unwrap(),
        interval: Duration::from_secs(env_or("GT_SCALE_INTERVAL_S", 60)),
        timeout: Duration::from_millis(env_or("GT_SCALE_TIMEOUT_MS", 5000)),
        rounds: u32::try_from(env_or("GT_SCALE_ROUNDS", 10)).unwrap(),
    })
    .await;
}

async fn run(p: Params) {
    init_tls();
    let rss0 = rss_kib().unwrap_or(0);
    let cpu0 = cpu_time().unwrap_or_default();
    let text = std::fs::read_to_string(
        groundtruth_tests::repo_root().join("tests/fixtures/sim/generic-pdu.snmprec"),
    )
    .unwrap();
    let recording = Arc::new(Recording::parse(&text).unwrap());
    let slow = Behaviour::Latency(p.timeout * 9 / 10);
    let specs: Vec<DeviceSpec> = (0..p.devices)
        .map(|i| DeviceSpec {
            name: format!("dev-{i:05}"),
            recording: Arc::clone(&recording),
            // 5 % dead (every 20th), 1 % slow (every 100th that is not dead).
            behaviour: if i % 20 == 7 {
                Behaviour::BlackHole
            } else if i % 100 == 3 {
                slow.clone()
            } else {
                Behaviour::Normal
            },
        })
        .collect();
    let fleet = SnmpFleet::start(8, specs).await.unwrap();

    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("state.db")).await.unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let (tx, _rx) = tokio::sync::watch::channel(0);
    let server_store = store.clone();
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(IngestServer::new(IngestService::new(server_store, tx)))
            .serve(addr)
            .await
            .unwrap();
    });

    let metrics_port = free_port();
    let mut cfg = format!(
        "[agent]\nid = \"scale-agent\"\nsite = \"DC1\"\nstate_dir = {:?}\nmetrics_listen = \"127.0.0.1:{metrics_port}\"\n\n[collector]\ngrpc = \"http://{addr}\"\n\n\
         [defaults]\ninterval = \"{}ms\"\ntimeout = \"{}ms\"\nretries = 0\nbatch_max_devices = 500\nbatch_max_delay = \"1s\"\n\n",
        dir.path().join("agent-state"),
        p.interval.as_millis(),
        p.timeout.as_millis(),
    );
    for i in 0..fleet.len() {
        cfg.push_str(&format!(
            "[[targets]]\nname = {:?}\nurl = {:?}\n",
            fleet.name(i),
            fleet.url(i)
        ));
    }
    let config = AgentConfig::parse(&cfg, "scale-agent.toml").unwrap();
    let agent = Agent::new(config).unwrap();
    let (_reload_tx, reload_rx) = tokio::sync::mpsc::channel(1);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let agent_task = tokio::spawn(agent.run(reload_rx, async move {
        let _ = stop_rx.await;
    }));

    // Warm up one interval (every target's first slot falls within it), then count.
    tokio::time::sleep(p.interval + Duration::from_millis(500)).await;
    let before: Vec<u64> = (0..fleet.len()).map(|i| fleet.polls(i)).collect();
    let rss_warm = rss_kib().unwrap_or(0);
    let t0 = Instant::now();
    tokio::time::sleep(p.interval * p.rounds).await;
    let elapsed = t0.elapsed();
    let after: Vec<u64> = (0..fleet.len()).map(|i| fleet.polls(i)).collect();
    let rss_end = rss_kib().unwrap_or(0);
    let metrics = reqwest::get(format!("http://127.0.0.1:{metrics_port}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for l in metrics
        .lines()
        .filter(|l| !l.starts_with('#') && (l.contains("poll") || l.contains("drop")))
    {
        eprintln!("scale: agent {l}");
    }
    let _ = stop_tx.send(());
    let _ = tokio::time::timeout(Duration::from_secs(30), agent_task).await;
    let cpu = cpu_time().unwrap_or_default().saturating_sub(cpu0);

    let (mut healthy, mut healthy_ok, mut dead, mut dead_max, mut slow_n, mut slow_ok) = (0, 0, 0, 0, 0, 0);
    // slow_ok: slow devices polled every round (reported, not asserted).
    let mut worst = u64::MAX;
    for i in 0..fleet.len() {
        let n = after[i] - before[i];
        match fleet.behaviour(i) {
            Behaviour::BlackHole => {
                dead += 1;
                dead_max = dead_max.max(n);
            }
            Behaviour::Latency(_) => {
                slow_n += 1;
                slow_ok += usize::from(n >= u64::from(p.rounds));
            }
            _ => {
                healthy += 1;
                healthy_ok += usize::from(n >= u64::from(p.rounds));
                worst = worst.min(n);
            }
        }
    }
    let mut hist = std::collections::BTreeMap::new();
    for i in 0..fleet.len() {
        *hist.entry(after[i] - before[i]).or_insert(0u32) += 1;
    }
    let requests: u64 = (0..fleet.len()).map(|i| fleet.requests(i)).sum();
    eprintln!("scale: polls per device in the window -> devices: {hist:?}; requests total {requests}");
    let (batches, max_seq) = store.batch_seq_span("scale-agent").await.unwrap();
    let devices = store.devices().await.unwrap();
    eprintln!(
        "scale: {} devices over {elapsed:?} ({} rounds of {:?}): healthy polled every round {healthy_ok}/{healthy} \
         (fewest polls {worst}), slow {slow_ok}/{slow_n}, dead {dead} (most polls {dead_max}); batches stored {batches} \
         (max seq {max_seq}); devices stored {}; RSS {rss0} -> {rss_warm} -> {rss_end} KiB; CPU {cpu:?}",
        fleet.len(),
        p.rounds,
        p.interval,
        devices.len()
    );
    assert!(
        healthy_ok * 100 >= healthy * 99,
        "healthy devices polled every interval: {healthy_ok}/{healthy}"
    );
    // A slow device's poll (8 requests at 0.9 × timeout) overruns the interval: it skips slots
    // (counted by the agent) but is never abandoned.
    let slow_min = (0..fleet.len())
        .filter(|&i| matches!(fleet.behaviour(i), Behaviour::Latency(_)))
        .map(|i| after[i] - before[i])
        .min()
        .unwrap_or(1);
    assert!(slow_min >= 1, "a slow device was not polled at all");
    // A dead device costs its timeout once per interval, never a burst of retries.
    assert!(
        dead_max <= u64::from(p.rounds) + 1,
        "dead device polled {dead_max} times"
    );
    // Every sealed batch reached the store, none missing in the sequence.
    assert!(batches > 0);
    assert_eq!(
        batches, max_seq,
        "gap in the batch sequence: {batches} stored, max seq {max_seq}"
    );
    assert!(
        devices.len() >= healthy,
        "{} devices stored, {healthy} healthy",
        devices.len()
    );
    // Bounded memory: the whole process (fleet, agent, collector) grows less than 300 MiB, and
    // not more than 64 MiB once warm.
    assert!(
        rss_end.saturating_sub(rss0) < 300 * 1024,
        "RSS {rss0} -> {rss_end} KiB"
    );
    assert!(
        rss_end.saturating_sub(rss_warm) < 64 * 1024,
        "RSS grew {rss_warm} -> {rss_end} KiB once warm"
    );
}

/// One poll of one simulated device: fast, complete, and counted as one poll.
#[tokio::test]
async fn one_simulated_device_polls_quickly_and_fully() {
    let text = std::fs::read_to_string(
        groundtruth_tests::repo_root().join("tests/fixtures/sim/generic-pdu.snmprec"),
    )
    .unwrap();
    let recording = Arc::new(Recording::parse(&text).unwrap());
    let fleet = SnmpFleet::start(
        1,
        vec![DeviceSpec {
            name: "dev-one".into(),
            recording,
            behaviour: Behaviour::Normal,
        }],
    )
    .await
    .unwrap();
    let target = groundtruth_agent::target::Target::parse(&fleet.url(0)).unwrap();
    let cx = groundtruth_agent::driver::PollCx::default();
    let t0 = Instant::now();
    let report = groundtruth_agent::driver::poll(&target, &cx).await;
    let took = t0.elapsed();
    eprintln!("poll took {took:?}, {} requests: {report:?}", fleet.requests(0));
    assert_eq!(fleet.polls(0), 1);
    let _ = groundtruth_agent::driver::poll(&target, &cx).await;
    assert_eq!((fleet.polls(0), fleet.requests(0)), (2, 16));
    assert!(took < Duration::from_millis(500), "{took:?}");
}

/// A silent device, one answering garbage and one answering with the wrong request id all end
/// in a timeout, and the error tells them apart for the operator.
#[tokio::test]
async fn snmp_timeouts_tell_silence_from_garbage_and_wrong_request_ids() {
    let text = std::fs::read_to_string(
        groundtruth_tests::repo_root().join("tests/fixtures/sim/generic-pdu.snmprec"),
    )
    .unwrap();
    let recording = Arc::new(Recording::parse(&text).unwrap());
    let cases = [
        (Behaviour::BlackHole, "device down"),
        (Behaviour::Garbage, "not SNMP, or corrupt"),
        (
            Behaviour::WrongRequestId,
            "matched no request: a wrong request ID",
        ),
    ];
    let fleet = SnmpFleet::start(
        1,
        cases
            .iter()
            .enumerate()
            .map(|(i, (b, _))| DeviceSpec {
                name: format!("dev-{i}"),
                recording: recording.clone(),
                behaviour: b.clone(),
            })
            .collect(),
    )
    .await
    .unwrap();
    let mut cx = groundtruth_agent::driver::PollCx::default();
    cx.limits.request_timeout = Duration::from_millis(200);
    for (i, (_, want)) in cases.iter().enumerate() {
        let target = groundtruth_agent::target::Target::parse(&fleet.url(i)).unwrap();
        let (_, err) = groundtruth_agent::driver::poll(&target, &cx).await;
        let err = err.expect("a failed poll").to_string();
        eprintln!("{}: {err}", fleet.url(i));
        assert!(err.contains(want), "{err}");
        assert!(fleet.requests(i) > 0);
    }
}

/// The Modbus side of the simulator: units on one listener serve a built-in register map
/// (identity and finite readings decode), a black-holed unit times out, a unit answering with
/// the wrong transaction id is a failure, not a reading.
#[tokio::test]
async fn simulated_modbus_units_serve_the_register_maps() {
    use groundtruth_tests::sim::modbus::{ModbusDevice, ModbusFleet};
    for map in ["test-rack-ups", "sdm630"] {
        let fleet = ModbusFleet::start(
            map,
            vec![
                ModbusDevice {
                    unit: 1,
                    behaviour: Behaviour::Normal,
                },
                ModbusDevice {
                    unit: 2,
                    behaviour: Behaviour::BlackHole,
                },
                ModbusDevice {
                    unit: 3,
                    behaviour: Behaviour::WrongRequestId,
                },
            ],
        )
        .await
        .unwrap();
        let mut cx = groundtruth_agent::driver::PollCx::default();
        cx.limits.request_timeout = Duration::from_millis(300);
        cx.limits.poll_timeout = Duration::from_secs(5);
        let poll = |unit: u8| {
            let t = groundtruth_agent::target::Target::parse(&fleet.url(unit)).unwrap();
            let cx = cx.clone();
            async move { groundtruth_agent::driver::poll(&t, &cx).await }
        };
        let (ok, err) = poll(1).await;
        assert!(err.is_none(), "{map}: {err:?}");
        assert!(!ok.readings.is_empty(), "{map}: no readings");
        assert!(ok.readings.iter().all(|r| r.value.is_finite()));
        let (_, err) = poll(2).await;
        assert!(err.is_some(), "{map}: black-holed unit answered");
        let (bad, err) = poll(3).await;
        assert!(
            err.is_some() || bad.readings.is_empty(),
            "{map}: wrong transaction id accepted"
        );
        assert!(fleet.requests(1) > 0);
    }
}
