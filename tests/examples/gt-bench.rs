//! The fleet benchmark of `bench/run.sh` (the per-protocol sides are `gt-bench-drv.rs` and
//! `gt-uplink.rs`). Prints one JSON object on stdout:
//!
//! * `fleet <devices> <seconds> <interval-s> <agent-binary> [--redfish N]` — serves a simulated
//!   SNMP fleet of `<devices>` (may be 0) and, with `--redfish N`, N simulated HTTPS Redfish
//!   BMCs (`tests/fixtures/redfish/gt-rack-server`, one listener each, the run's CA as each
//!   target's `ca_file`), and an in-process collector; runs the real agent binary against them
//!   and samples the agent process's CPU and RSS from /proc; poll jitter from the simulators'
//!   per-device poll gaps (SNMP: the system-group GET; Redfish: the GET of `Chassis/1U/Power`,
//!   which every poll makes once), reported per protocol.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_precision_loss,
    unreachable_pub
)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use groundtruth_tests::proc::metric_sum;
use groundtruth_tests::sim::Behaviour;
use groundtruth_tests::sim::redfish::{Fixture, RedfishFleet, ServiceSpec};
use groundtruth_tests::sim::snmp::{DeviceSpec, SnmpFleet};
use groundtruth_tests::sim::snmprec::Recording;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("fleet") if args.len() >= 5 => {
            let redfish = match args.get(5).map(String::as_str) {
                Some("--redfish") => args
                    .get(6)
                    .and_then(|n| n.parse().ok())
                    .unwrap_or_else(|| usage()),
                Some(_) => usage(),
                None => 0,
            };
            fleet(
                args[1].parse().unwrap(),
                redfish,
                args[2].parse().unwrap(),
                args[3].parse().unwrap(),
                &args[4],
            )
            .await;
        }
        _ => usage(),
    }
}

fn usage() -> ! {
    eprintln!("usage: gt-bench fleet DEVICES SECONDS INTERVAL_S AGENT_BIN [--redfish N]");
    std::process::exit(2);
}

/// p50 / p99 / max of |gap − interval| in ms.
fn jitter(gaps: Vec<u32>, interval_ms: u64) -> (u64, u64, u64) {
    let mut j: Vec<u64> = gaps
        .into_iter()
        .map(|g| u64::from(g).abs_diff(interval_ms))
        .collect();
    j.sort_unstable();
    let pct = |p: f64| {
        j.get(((j.len() as f64 - 1.0) * p).round() as usize)
            .copied()
            .unwrap_or(0)
    };
    (pct(0.5), pct(0.99), j.last().copied().unwrap_or(0))
}

/// CPU seconds and RSS (KiB) of a process.
fn proc_sample(pid: u32) -> (f64, u64) {
    let pid = pid.to_string();
    (
        groundtruth_tests::proc::cpu_time_of(&pid).map_or(0.0, |d| d.as_secs_f64()),
        groundtruth_tests::proc::rss_kib_of(&pid).unwrap_or(0),
    )
}

async fn fleet(devices: usize, redfish: usize, seconds: u64, interval_s: u64, agent_bin: &str) {
    use groundtruth_collector::ingest::IngestService;
    use groundtruth_collector::store::Store;
    use groundtruth_proto::v1::ingest_server::IngestServer;
    groundtruth_tests::init_tls();
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
    let rf_fixture = Arc::new(Fixture::builtin("gt-rack-server").unwrap());
    let rf = RedfishFleet::start(
        rf_fixture,
        (0..redfish)
            .map(|i| ServiceSpec {
                name: format!("bmc-{i:05}"),
                behaviour: Behaviour::Normal,
            })
            .collect(),
        // GT_BENCH_REDFISH_HTTP=1: plain HTTP (`redfish+http://`), to tell TLS costs apart.
        std::env::var("GT_BENCH_REDFISH_HTTP").as_deref() != Ok("1"),
    )
    .await
    .unwrap();
    let ca = dir.path().join("sim-ca.pem");
    if redfish > 0 && rf.ca_pem().is_some() {
        rf.write_ca(&ca).unwrap();
    }
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
    let metrics_port = groundtruth_tests::free_port();
    let mut cfg = format!(
        "[agent]\nid = \"bench-agent\"\nsite = \"DC1\"\nstate_dir = {:?}\nmetrics_listen = \"127.0.0.1:{metrics_port}\"\n\n[collector]\ngrpc = \"http://{addr}\"\n\n\
         [defaults]\ninterval = \"{interval_s}s\"\ntimeout = \"2s\"\nretries = 1\n\n",
        dir.path().join("agent-state"),
    );
    for i in 0..fleet.len() {
        cfg.push_str(&format!(
            "[[targets]]\nname = {:?}\nurl = {:?}\n",
            fleet.name(i),
            fleet.url(i)
        ));
    }
    for i in 0..rf.len() {
        cfg.push_str(&format!(
            "[[targets]]\nname = {:?}\nurl = {:?}\n{}",
            rf.name(i),
            rf.url(i),
            if rf.ca_pem().is_some() {
                format!("ca_file = {ca:?}\n")
            } else {
                String::new()
            }
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
    let rf_requests0: u64 = (0..rf.len()).map(|i| rf.requests(i)).sum();
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
    let rf_requests: u64 = (0..rf.len()).map(|i| rf.requests(i)).sum::<u64>() - rf_requests0;
    // Failed polls by protocol, from the agent's own counters (whole run, warm-up included).
    let metrics = match reqwest::get(format!("http://127.0.0.1:{metrics_port}/metrics")).await {
        Ok(r) => groundtruth_agent::io::read_capped(r, 16 << 20, "/metrics")
            .await
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default(),
        Err(_) => String::new(),
    };
    let failed = |proto: &str| {
        metric_sum(
            &metrics
                .lines()
                .filter(|l| l.contains(&format!("protocol=\"{proto}\"")) && l.contains("outcome=\"failed\""))
                .collect::<Vec<_>>()
                .join("\n"),
            "groundtruth_agent_polls_total",
        )
    };
    let (snmp_failed, rf_failed) = (failed("snmp"), failed("redfish"));
    let _ = child.kill();
    let _ = child.wait();
    let polls: u64 = (0..fleet.len()).map(|i| fleet.polls(i)).sum();
    let rf_polls: u64 = (0..rf.len()).map(|i| rf.polls(i)).sum();
    let interval_ms = interval_s * 1000;
    let (p50, p99, max) = jitter(fleet.poll_gaps_ms(), interval_ms);
    let (rf_p50, rf_p99, rf_max) = jitter(rf.poll_gaps_ms(), interval_ms);
    // The same without each BMC's first gap (from its inventory poll, which reads `Power` after
    // the inventory's other resources, to its first steady-state poll).
    let (rf_s50, rf_s99, rf_smax) = jitter(
        (0..rf.len())
            .flat_map(|i| rf.poll_gaps_ms_of(i).into_iter().skip(1))
            .collect(),
        interval_ms,
    );
    let (batches, _) = store.batch_seq_span("bench-agent").await.unwrap();
    println!(
        "{{\"devices\":{devices},\"redfish_targets\":{redfish},\"interval_s\":{interval_s},\"seconds\":{wall:.1},\"agent_cpu_percent\":{:.1},\"agent_rss_kib_first\":{rss_first},\"agent_rss_kib_max\":{rss_max},\"agent_rss_kib_end\":{rss_end},\"polls\":{polls},\"jitter_ms_p50\":{p50},\"jitter_ms_p99\":{p99},\"jitter_ms_max\":{max},\"redfish_polls\":{rf_polls},\"redfish_requests\":{rf_requests},\"redfish_jitter_ms_p50\":{rf_p50},\"redfish_jitter_ms_p99\":{rf_p99},\"redfish_jitter_ms_max\":{rf_max},\"redfish_steady_jitter_ms_p50\":{rf_s50},\"redfish_steady_jitter_ms_p99\":{rf_s99},\"redfish_steady_jitter_ms_max\":{rf_smax},\"polls_failed_snmp\":{snmp_failed},\"polls_failed_redfish\":{rf_failed},\"batches\":{batches}}}",
        (cpu1 - cpu0) / wall * 100.0,
    );
}
