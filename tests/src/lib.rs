//! The integration-test harness: where the test peers are, how to skip loudly when they are not,
//! and how to run the project's binaries.
//!
//! Peers are started by `tests/peers/start-all.sh` (run by `tests/run.sh`), which writes their
//! addresses and credentials to `$GT_PEERS_RUN/peers.env` (default `/tmp/gt-peers`). A test
//! that needs a peer calls [`Peers::load`] and [`Peers::require`]; when the peer is absent the
//! test prints `SKIP: ...` to stderr and returns, so `cargo test` on a bare machine still runs
//! every unit test. `tests/run.sh` sets `GT_REQUIRE_PEERS=1`, which turns a skip into a failure:
//! in CI a missing peer is a broken harness, not a reason to pass.

#![allow(clippy::missing_panics_doc)]

pub mod proc;
pub mod sim;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Key/value pairs from `peers.env`, overridden by the process environment.
#[derive(Debug, Clone, Default)]
pub struct Peers {
    vars: HashMap<String, String>,
}

impl Peers {
    /// Reads `$GT_PEERS_RUN/peers.env` (missing file = no peers).
    #[must_use]
    pub fn load() -> Self {
        let run = std::env::var("GT_PEERS_RUN").unwrap_or_else(|_| "/tmp/gt-peers".into());
        let mut vars = HashMap::new();
        if let Ok(text) = std::fs::read_to_string(Path::new(&run).join("peers.env")) {
            for line in text.lines() {
                let line = line.trim();
                if line.starts_with('#') || line.is_empty() {
                    continue;
                }
                if let Some((k, v)) = line.split_once('=') {
                    let v = v.trim();
                    let v = v
                        .strip_prefix('\'')
                        .and_then(|v| v.strip_suffix('\''))
                        .or_else(|| v.strip_prefix('"').and_then(|v| v.strip_suffix('"')))
                        .unwrap_or(v);
                    vars.insert(k.trim().to_owned(), v.to_owned());
                }
            }
        }
        for (k, v) in std::env::vars() {
            if k.starts_with("GT_") {
                vars.insert(k, v);
            }
        }
        Self { vars }
    }

    #[must_use]
    pub fn get(&self, key: &str) -> Option<&str> {
        self.vars.get(key).map(String::as_str).filter(|v| !v.is_empty())
    }

    /// Returns the values of `keys`, or `None` after printing a loud skip message (or panics
    /// when `GT_REQUIRE_PEERS=1`).
    #[must_use]
    pub fn require<const N: usize>(&self, test: &str, keys: [&str; N]) -> Option<[String; N]> {
        let missing: Vec<&str> = keys.iter().copied().filter(|k| self.get(k).is_none()).collect();
        if missing.is_empty() {
            return Some(keys.map(|k| self.get(k).unwrap_or_default().to_owned()));
        }
        skip(
            test,
            &format!(
                "test peer not running (missing {}); start peers with tests/peers/start-all.sh",
                missing.join(", ")
            ),
        )
    }
}

/// The one way a test skips: a loud message, or a failure when `GT_REQUIRE_PEERS=1` (CI), so a
/// precondition that is missing there cannot pass as a skipped test.
///
/// # Panics
/// When `GT_REQUIRE_PEERS=1`.
pub fn skip<T>(test: &str, why: &str) -> Option<T> {
    let msg = format!("SKIP: {test}: {why}");
    assert!(
        std::env::var("GT_REQUIRE_PEERS").as_deref() != Ok("1"),
        "{msg} (GT_REQUIRE_PEERS=1)"
    );
    eprintln!("{msg}");
    None
}

/// [`binary`], or [`skip`] when it is not built.
#[must_use]
pub fn require_binary(test: &str, name: &str) -> Option<PathBuf> {
    binary(name).or_else(|| {
        skip(
            test,
            &format!("the {name} binary is not built (cargo build --bins; tests/run.sh does)"),
        )
    })
}

/// `../shared/peers` beside the repository, if present (read in place, never copied).
#[must_use]
pub fn shared_peers_dir() -> Option<PathBuf> {
    let dir = repo_root().parent()?.join("shared").join("peers");
    dir.is_dir().then_some(dir)
}

/// The repository root (parent of this crate's directory).
#[must_use]
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// Path of a workspace binary built next to the test executable (`target/<profile>/NAME`).
/// `tests/run.sh` builds the binaries before running the tests.
#[must_use]
pub fn binary(name: &str) -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    // target/<profile>/deps/it-xxxx -> target/<profile>/NAME
    let path = exe.parent()?.parent()?.join(name);
    path.is_file().then_some(path)
}

/// A free TCP port on 127.0.0.1 (bound and released; racy only against other processes).
#[must_use]
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("binding an ephemeral port on 127.0.0.1")
}

/// Installs the rustls crypto provider for tests that make TLS connections.
pub fn init_tls() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

pub use groundtruth_collector::store::testdb::TestDb;

/// A fresh schema in the test PostgreSQL (`GT_PG_URL`) for a collector store, or `None` after
/// [`Peers::require`]'s loud skip (a failure with `GT_REQUIRE_PEERS=1`).
///
/// # Panics
/// When `GT_PG_URL` is set but the server refuses the schema.
pub async fn pg_store(test: &str) -> Option<TestDb> {
    let [url] = Peers::load().require(test, ["GT_PG_URL"])?;
    Some(
        TestDb::postgres(&url)
            .await
            .unwrap_or_else(|e| panic!("{test}: test PostgreSQL: {e}")),
    )
}

/// Runs each named `async fn NAME(t: TestDb)` as two tests, `NAME::sqlite` and
/// `NAME::postgres`: the same suite against both collector store back ends (issue #9).
#[macro_export]
macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name($crate::TestDb::sqlite()).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                if let Some(t) = $crate::pg_store(concat!(module_path!(), "::postgres")).await {
                    super::$name(t).await;
                }
            }
        }
    )*};
}

/// A private snmpsim (the harness's venv) serving our own recordings in `tests/fixtures/snmpsim`
/// on a free port (community = file name without `.snmprec`); killed when dropped. For tests
/// that need recordings the shared snmpsim does not carry.
#[derive(Debug)]
pub struct PrivateSnmpsim {
    child: std::process::Child,
    _dir: tempfile::TempDir,
    /// `127.0.0.1:PORT`
    pub addr: String,
}

impl Drop for PrivateSnmpsim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl PrivateSnmpsim {
    /// `None` when the harness's snmpsim venv is not installed (`tests/peers/snmpsim/start.sh`).
    #[must_use]
    pub fn start() -> Option<Self> {
        let venv = std::env::var("GT_PEERS_VENV").unwrap_or_else(|_| "/opt/gt-peers".into());
        let bin = Path::new(&venv).join("venv-snmpsim/bin/snmpsim-command-responder");
        if !bin.is_file() {
            return None;
        }
        // snmpsim drops to nobody: its data and cache must be readable and writable by nobody.
        let dir = tempfile::tempdir().ok()?;
        let data = dir.path().join("data");
        let cache = dir.path().join("cache");
        std::fs::create_dir_all(&data).ok()?;
        std::fs::create_dir_all(&cache).ok()?;
        for f in std::fs::read_dir(repo_root().join("tests/fixtures/snmpsim")).ok()? {
            let f = f.ok()?.path();
            if f.extension().is_some_and(|e| e == "snmprec") {
                std::fs::copy(&f, data.join(f.file_name()?)).ok()?;
            }
        }
        let _ = std::process::Command::new("chmod")
            .arg("-R")
            .arg("a+rwX")
            .arg(dir.path())
            .status();
        let addr = format!("127.0.0.1:{}", free_port());
        let child = std::process::Command::new(bin)
            .arg("--process-user=nobody")
            .arg("--process-group=nogroup")
            .arg(format!("--data-dir={}", data.display()))
            .arg(format!("--cache-dir={}", cache.display()))
            .arg(format!("--agent-udpv4-endpoint={addr}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .ok()?;
        Some(Self {
            child,
            _dir: dir,
            addr,
        })
    }
}

/// A private OpenIPMI `ipmi_sim` BMC (tests/peers/ipmi/sim.sh) on a free loopback port, with
/// the identity `env` sets (`GT_BMC_MAC`, `GT_BMC_*_SERIAL`); killed when dropped. Users as the
/// shared IPMI peer (`ADMIN` / `Adm1nPass!`).
#[derive(Debug)]
pub struct PrivateIpmiSim {
    child: std::process::Child,
    _dir: tempfile::TempDir,
    /// `127.0.0.1:PORT`
    pub addr: String,
}

impl Drop for PrivateIpmiSim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl PrivateIpmiSim {
    /// `None` when `ipmi_sim` is not installed (`tests/peers/ipmi/start.sh` installs it) or it
    /// does not answer within 10 s.
    #[must_use]
    pub fn start(env: &[(&str, &str)]) -> Option<Self> {
        let found = std::process::Command::new("sh")
            .args(["-c", "command -v ipmi_sim"])
            .stdout(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            return None;
        }
        let dir = tempfile::tempdir().ok()?;
        let port = free_port();
        let console = free_port();
        let log = std::fs::File::create(dir.path().join("sim.log")).ok()?;
        let child = std::process::Command::new(repo_root().join("tests/peers/ipmi/sim.sh"))
            .arg(dir.path())
            .arg(port.to_string())
            .arg(console.to_string())
            .envs(env.iter().copied())
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().ok()?)
            .stderr(log)
            .spawn()
            .ok()?;
        let sim = Self {
            child,
            _dir: dir,
            addr: format!("127.0.0.1:{port}"),
        };
        // Ready once its LAN port is taken. (Not by connecting to the emulator console: ipmi_sim
        // dies of SIGPIPE when a console client goes away.)
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            if std::net::UdpSocket::bind(("127.0.0.1", port)).is_err() {
                return Some(sim);
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        None
    }

    /// What the simulator printed, for a failing test's message.
    #[must_use]
    pub fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("sim.log")).unwrap_or_default()
    }
}

static NEXT_SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// Commits `reports` to `store` as the next batch of agent `agent_id` at `site` (sequence numbers
/// from a process-wide counter, so repeated calls are never duplicates), for tests that poll
/// devices in-process and check the collector's view.
///
/// # Panics
/// If the store refuses the batch.
pub async fn commit_reports(
    store: &groundtruth_collector::store::Store,
    agent_id: &str,
    site: &str,
    reports: Vec<groundtruth_proto::v1::DeviceReport>,
) {
    use groundtruth_proto::v1::{AgentInfo, Batch, BatchKind};
    store
        .commit_batch(&Batch {
            schema_version: 1,
            agent: Some(AgentInfo {
                agent_id: agent_id.into(),
                site: site.into(),
                ..AgentInfo::default()
            }),
            epoch: 1,
            seq: NEXT_SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            kind: BatchKind::Mixed as i32,
            devices: reports,
            ..Batch::default()
        })
        .await
        .expect("committing the test batch");
}
