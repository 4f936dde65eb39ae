//! The fleet benchmark of `bench/run.sh` (the per-protocol sides are `gt-bench-drv.rs` and
//! `gt-uplink.rs`). Prints one JSON object on stdout:
//!
//! * `fleet <devices> <seconds> <interval-s> <agent-binary>` — serves a simulated SNMP fleet and
//!   an in-process collector, runs the real agent binary against them, and samples the agent
//!   process's CPU and RSS from /proc; poll jitter from the simulator's per-device poll gaps.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_precision_loss,
    unreachable_pub
)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use groundtruth_tests::sim::Behaviour;
use groundtruth_tests::sim::snmp::{DeviceSpec, SnmpFleet};
use groundtruth_tests::sim::snmprec::Recording;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("fleet") => {
            fleet(
                args[1].parse().unwrap(),
                args[2].parse().unwrap(),
                args[3].parse().unwrap(),
                &args[4],
            )
            .await
        }
        _ => {
            eprintln!("usage: gt-bench fleet DEVICES SECONDS INTERVAL_S AGENT_BIN");
            std::process::exit(2);
        }
    }
}

/// CPU seconds and RSS (KiB) of a process.
fn proc_sample(pid: u32) -> (f64, u64) {
    let pid = pid.to_string();
    (
        groundtruth_tests::proc::cpu_time_of(&pid).map_or(0.0, |d| d.as_secs_f64()),
        groundtruth_tests::proc::rss_kib_of(&pid).unwrap_or(0),
    )
}

async fn fleet(devices: usize, seconds: u64, interval_s: u64, agent_bin: &str) {
    use groundtruth_collector::ingest::IngestService;
    use groundtruth_collector::store::Store;
    use groundtruth_proto::v1::ingest_server::IngestServer;
    let text = std::fs::read_to_string(
        groundtruth_tests::repo_root().join("tests/fixtures/sim/generic-pdu.snmprec"),
    )
    .unwrap();
    let recording = Arc::new(Recording::parse(&text).unwrap());
    let specs = (0..devices)
        .map(|i| DeviceSpec {
            name: format!("dev-{i:05}"),
            recording: Arc::clone(&recording),
            behaviour: Behaviour::Normal,
        })
        .collect();
    let fleet = SnmpFleet::start(8, specs).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("state.db")).await.unwrap();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{}", groundtruth_tests::free_port())
        .parse()
        .unwrap();
    let (tx, _rx) = tokio::sync::watch::channel(0);
    let s2 = store.clone();
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(IngestServer::new(IngestService::new(s2, tx)))
            .serve(addr)
            .await
            .unwrap();
    });
    let mut cfg = format!(
        "[agent]\nid = \"bench-agent\"\nsite = \"DC1\"\nstate_dir = {:?}\nmetrics_listen = \"127.0.0.1:{}\"\n\n[collector]\ngrpc = \"http://{addr}\"\n\n\
         [defaults]\ninterval = \"{interval_s}s\"\ntimeout = \"2s\"\nretries = 1\n\n",
        dir.path().join("agent-state"),
        groundtruth_tests::free_port()
    );
    for i in 0..fleet.len() {
        cfg.push_str(&format!(
            "[[targets]]\nname = {:?}\nurl = {:?}\n",
            fleet.name(i),
            fleet.url(i)
        ));
    }
    let cfg_path = dir.path().join("agent.toml");
    std::fs::write(&cfg_path, cfg).unwrap();
    let mut child = std::process::Command::new(agent_bin)
        .args(["run", "--config"])
        .arg(&cfg_path)
        .env("RUST_LOG", "error")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    // One interval of warm-up (every target's first slot), then measure.
    tokio::time::sleep(Duration::from_secs(interval_s)).await;
    let (cpu0, _) = proc_sample(pid);
    let t0 = Instant::now();
    let mut rss_max = 0;
    let mut rss_first = 0;
    while t0.elapsed() < Duration::from_secs(seconds) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let (_, rss) = proc_sample(pid);
        if rss_first == 0 {
            rss_first = rss;
        }
        rss_max = rss_max.max(rss);
    }
    let (cpu1, rss_end) = proc_sample(pid);
    let wall = t0.elapsed().as_secs_f64();
    let _ = child.kill();
    let _ = child.wait();
    let polls: u64 = (0..fleet.len()).map(|i| fleet.polls(i)).sum();
    let interval_ms = interval_s * 1000;
    let mut jitter: Vec<u64> = fleet
        .poll_gaps_ms()
        .into_iter()
        .map(|g| u64::from(g).abs_diff(interval_ms))
        .collect();
    jitter.sort_unstable();
    let pct = |p: f64| {
        jitter
            .get(((jitter.len() as f64 - 1.0) * p).round() as usize)
            .copied()
            .unwrap_or(0)
    };
    let (batches, _) = store.batch_seq_span("bench-agent").await.unwrap();
    println!(
        "{{\"devices\":{devices},\"interval_s\":{interval_s},\"seconds\":{wall:.1},\"agent_cpu_percent\":{:.1},\"agent_rss_kib_first\":{rss_first},\"agent_rss_kib_max\":{rss_max},\"agent_rss_kib_end\":{rss_end},\"polls\":{polls},\"jitter_ms_p50\":{},\"jitter_ms_p99\":{},\"jitter_ms_max\":{},\"batches\":{batches}}}",
        (cpu1 - cpu0) / wall * 100.0,
        pct(0.5),
        pct(0.99),
        jitter.last().copied().unwrap_or(0)
    );
}
