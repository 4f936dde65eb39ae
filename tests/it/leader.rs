//! Active-active collectors on one PostgreSQL (issue #22): two real `groundtruth-collector serve`
//! processes share the harness PostgreSQL; exactly one leads the singleton jobs (its `/metrics`
//! says `groundtruth_collector_leader 1`), and when the leader is killed with SIGKILL the other
//! takes over within two lease periods (15 s each), with no release by the dead one.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use groundtruth_tests::free_port;

struct Collector {
    child: Child,
    http: u16,
}

impl Drop for Collector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(bin: &std::path::Path, dir: &std::path::Path, name: &str, database: &str) -> Collector {
    let http = free_port();
    let cfg = dir.join(format!("{name}.toml"));
    std::fs::write(
        &cfg,
        format!(
            "[collector]\nlisten_grpc = \"127.0.0.1:{}\"\nlisten_http = \"127.0.0.1:{http}\"\n{database}",
            free_port()
        ),
    )
    .unwrap();
    let child = Command::new(bin)
        .args(["serve", "--log", "warn", "--config"])
        .arg(&cfg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    Collector { child, http }
}

/// `Some(true|false)` from the collector's `/metrics`, `None` while it does not answer.
async fn leads(c: &Collector) -> Option<bool> {
    let body = reqwest::get(format!("http://127.0.0.1:{}/metrics", c.http))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    body.lines()
        .find_map(|l| l.strip_prefix("groundtruth_collector_leader "))
        .map(|v| v.trim() == "1")
}

async fn until(what: &str, limit: Duration, mut ok: impl AsyncFnMut() -> bool) -> Duration {
    let t0 = Instant::now();
    while !ok().await {
        assert!(t0.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    t0.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_leader_among_collectors_and_a_takeover_after_sigkill() {
    const TEST: &str = "leader_failover";
    let Some(bin) = groundtruth_tests::require_binary(TEST, "groundtruth-collector") else {
        return;
    };
    let Some(db) = groundtruth_tests::pg_store(TEST).await else {
        return;
    };
    groundtruth_tests::init_tls();
    // The schema is migrated once before the collectors race to it.
    drop(db.store().await.unwrap());
    let dir = tempfile::tempdir().unwrap();
    let mut a = start(&bin, dir.path(), "a", &db.config_line());
    let mut b = start(&bin, dir.path(), "b", &db.config_line());
    until(
        "a leader",
        Duration::from_secs(60),
        async || matches!((leads(&a).await, leads(&b).await), (Some(x), Some(y)) if x != y),
    )
    .await;
    // Stable: still exactly one a lease period later.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (la, lb) = (leads(&a).await.unwrap(), leads(&b).await.unwrap());
    assert!(la != lb, "exactly one leader: a {la}, b {lb}");
    let (leader, follower) = if la { (&mut a, &b) } else { (&mut b, &a) };
    leader.child.kill().unwrap(); // SIGKILL: no release
    leader.child.wait().unwrap();
    let took = until("the follower takes over", Duration::from_secs(35), async || {
        leads(follower).await == Some(true)
    })
    .await;
    eprintln!("leader SIGKILLed; follower took over after {took:?} (lease 15 s)");
}
