//! SNMPv3 USM against a private net-snmp `snmpd` (issue #4): every auth protocol × every privacy
//! protocol net-snmp 5.9 offers, authNoPriv and authPriv, through the agent's driver; engine
//! time-window resync after a device restart; a device stuck outside the time window.
//!
//! Each test starts its own snmpd (own port, own config and persistent dir in a temp dir), so
//! it can restart it: the shared peer must never be restarted. snmpd reads its persistent dir
//! (engineBoots, engine ID) only without `-C` and with the dir on `SNMPCONFPATH`.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use groundtruth_agent::driver::{self, DriverError, Limits, PollCx};
use groundtruth_agent::target::Target;
use groundtruth_proto::v1::PollOutcome;

const SNMPD: &str = "/usr/sbin/snmpd";
const COMMUNITY: &str = "gtv3private";
const SYSNAME: &str = "gt-snmpd-v3-private";

/// net-snmp's names (`createUser`) and ours (`snmpv3://...?auth=`).
const AUTHS: [(&str, &str); 6] = [
    ("MD5", "md5"),
    ("SHA", "sha"),
    ("SHA-224", "sha224"),
    ("SHA-256", "sha256"),
    ("SHA-384", "sha384"),
    ("SHA-512", "sha512"),
];
/// net-snmp's AES-192/AES-256 are draft-blumenthal-aes-usm-04 (OIDs under 1.3.6.1.4.1.14832);
/// AES-192-C/AES-256-C are the Cisco OIDs with the Reeder key extension.
const PRIVS: [(&str, &str); 4] = [
    ("DES", "des"),
    ("AES", "aes"),
    ("AES-192", "aes192"),
    ("AES-256", "aes256"),
];

fn cx() -> PollCx {
    PollCx {
        limits: Limits {
            request_timeout: Duration::from_millis(800),
            retries: 1,
            ..Limits::default()
        },
        ..PollCx::default()
    }
}

fn user(auth: &str, privacy: &str) -> String {
    format!("u_{}_{}", auth.replace('-', ""), privacy.replace('-', "")).to_lowercase()
}
fn auth_pass(auth: &str) -> String {
    format!("authpass-{auth}")
}
fn priv_pass(privacy: &str) -> String {
    format!("privpass-{privacy}")
}

/// A private snmpd on a free UDP port of 127.0.0.1, stopped (SIGTERM, so it saves its
/// persistent state) on drop.
struct PrivateSnmpd {
    dir: tempfile::TempDir,
    port: u16,
    child: Option<Child>,
}

impl PrivateSnmpd {
    /// `None` (after a loud skip, or a panic under `GT_REQUIRE_PEERS=1`) without net-snmp.
    fn start(test: &str) -> Option<Self> {
        if !Path::new(SNMPD).is_file() || Command::new("snmpget").arg("-V").output().is_err() {
            let msg =
                format!("SKIP: {test}: net-snmp snmpd/snmpget not installed (apt-get install snmpd snmp)");
            assert!(
                std::env::var("GT_REQUIRE_PEERS").as_deref() != Ok("1"),
                "{msg} (GT_REQUIRE_PEERS=1)"
            );
            eprintln!("{msg}");
            return None;
        }
        let port = std::net::UdpSocket::bind("127.0.0.1:0")
            .and_then(|s| s.local_addr())
            .unwrap()
            .port();
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("persist")).unwrap();
        let mut conf = format!(
            "agentAddress udp:127.0.0.1:{port}\nrocommunity {COMMUNITY} 127.0.0.1\nsysName {SYSNAME}\n\
             dontLogTCPWrappersConnects yes\n"
        );
        for (a, _) in AUTHS {
            for (p, _) in PRIVS {
                let u = user(a, p);
                conf.push_str(&format!(
                    "createUser {u} {a} \"{}\" {p} \"{}\"\nrouser {u} auth\n",
                    auth_pass(a),
                    priv_pass(p)
                ));
            }
        }
        std::fs::write(dir.path().join("snmpd.conf"), conf).unwrap();
        let mut s = Self {
            dir,
            port,
            child: None,
        };
        s.spawn();
        Some(s)
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn spawn(&mut self) {
        let d = self.dir.path();
        let persist = d.join("persist");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(d.join("snmpd.log"))
            .unwrap();
        // No -C: with -C snmpd skips its persistent dir, and engineBoots would never go up.
        // SNMPCONFPATH limits the config it reads to ours (and the persistent dir).
        let child = Command::new(SNMPD)
            .args(["-f", "-I", "-smux", "-Lo"])
            .arg(format!("--persistentDir={}", persist.display()))
            .env("SNMPCONFPATH", format!("{}:{}", d.display(), persist.display()))
            .env("SNMP_PERSISTENT_DIR", &persist)
            .env("MIBS", "")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let t0 = Instant::now();
        while self.get_v2c("1.3.6.1.2.1.1.5.0").as_deref() != Some(&format!("\"{SYSNAME}\"")) {
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "private snmpd did not answer; log:\n{}",
                std::fs::read_to_string(d.join("snmpd.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SIGTERM: snmpd writes engineBoots and its users to the persistent dir on exit.
            let _ = Command::new("kill").arg("-TERM").arg(c.id().to_string()).status();
            let t0 = Instant::now();
            while c.try_wait().ok().flatten().is_none() && t0.elapsed() < Duration::from_secs(5) {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The persistent engineBoots snmpd will start from, raised to `boots` (it adds one).
    fn set_persisted_boots(&self, boots: u32) {
        let p = self.dir.path().join("persist/snmpd.conf");
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(text.contains("engineBoots "), "{text}");
        let text: String = text
            .lines()
            .map(|l| {
                if l.starts_with("engineBoots ") {
                    format!("engineBoots {boots}\n")
                } else {
                    format!("{l}\n")
                }
            })
            .collect();
        std::fs::write(p, text).unwrap();
    }

    /// One object by net-snmp's own snmpget over v2c (`-Oqv`), for the test's observations.
    fn get_v2c(&self, oid: &str) -> Option<String> {
        let out = Command::new("snmpget")
            .args(["-v2c", "-c", COMMUNITY, "-t", "1", "-r", "0", "-Oqv"])
            .arg(self.addr())
            .arg(oid)
            .env("MIBS", "")
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    fn counter(&self, oid: &str) -> u64 {
        self.get_v2c(oid)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{oid} unreadable"))
    }
}

impl Drop for PrivateSnmpd {
    fn drop(&mut self) {
        self.stop();
    }
}

const ENGINE_BOOTS: &str = "1.3.6.1.6.3.10.2.1.2.0";
const USM_NOT_IN_TIME_WINDOWS: &str = "1.3.6.1.6.3.15.1.1.2.0";
const USM_UNKNOWN_ENGINE_IDS: &str = "1.3.6.1.6.3.15.1.1.4.0";

fn url(addr: &str, a: (&str, &str), p: Option<(&str, &str)>, user_priv: &str) -> String {
    let u = user(a.0, user_priv);
    let mut url = format!("snmpv3://{u}@{addr}?auth={}&auth_pass={}", a.1, auth_pass(a.0));
    if let Some((pn, ours)) = p {
        url.push_str(&format!("&priv={ours}&priv_pass={}", priv_pass(pn)));
    }
    url
}

async fn poll(url: &str) -> Result<String, DriverError> {
    let (report, err) = driver::poll(&Target::parse(url).unwrap(), &cx()).await;
    match err {
        Some(e) => Err(e),
        None => Ok(report.identity.unwrap_or_default().hostname),
    }
}

/// Every auth × priv net-snmp offers, authPriv, and every auth authNoPriv, through the driver.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snmpv3_every_auth_and_priv_protocol_against_net_snmp() {
    let Some(d) = PrivateSnmpd::start("snmpv3_every_auth_and_priv_protocol") else {
        return;
    };
    let addr = d.addr();
    let mut failures = Vec::new();
    for a in AUTHS {
        // authNoPriv with a user that also has privacy keys (`rouser ... auth` allows it).
        match poll(&url(&addr, a, None, "AES")).await {
            Ok(h) if h == SYSNAME => {}
            other => failures.push(format!("{} authNoPriv: {other:?}", a.0)),
        }
        for p in PRIVS {
            match poll(&url(&addr, a, Some(p), p.0)).await {
                Ok(h) if h == SYSNAME => {}
                other => failures.push(format!("{} / {} authPriv: {other:?}", a.0, p.0)),
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} combinations failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Wrong credentials come back as usmStats* Reports and become named errors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snmpv3_wrong_password_and_unknown_user_are_named() {
    let Some(d) = PrivateSnmpd::start("snmpv3_wrong_password_and_unknown_user") else {
        return;
    };
    let addr = d.addr();
    let a = ("SHA-512", "sha512");
    let good = url(&addr, a, Some(("AES-256", "aes256")), "AES-256");
    let wrong = good.replace(
        &format!("auth_pass={}", auth_pass(a.0)),
        "auth_pass=NotThePassword1",
    );
    let e = poll(&wrong).await.unwrap_err();
    assert!(matches!(e, DriverError::Auth { .. }), "{e:?}");
    assert!(e.to_string().contains("wrong password"), "{e}");
    assert!(!e.to_string().contains("NotThePassword1"), "secret leaked: {e}");

    let unknown = good.replace(&user(a.0, "AES-256"), "nosuchuser");
    let e = poll(&unknown).await.unwrap_err();
    assert!(e.to_string().contains("unknown user"), "{e}");

    // A wrong privacy password: snmpd cannot decrypt, so it cannot answer (no Report exists).
    let wrong_priv = good.replace(
        &format!("priv_pass={}", priv_pass("AES-256")),
        "priv_pass=NotThePriv12",
    );
    let e = poll(&wrong_priv).await.unwrap_err();
    assert!(
        matches!(e, DriverError::Timeout { .. } | DriverError::Auth { .. }),
        "{e:?}"
    );
    assert!(e.to_string().contains("privacy"), "{e}");
    assert_eq!(poll(&good).await.unwrap(), SYSNAME);
}

/// A device restart (engineBoots up, engineTime back to 0) while the agent still holds the
/// engine's old boots/time from an earlier poll: the next poll resyncs and succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snmpv3_engine_restart_is_resynced_on_the_next_poll() {
    let Some(mut d) = PrivateSnmpd::start("snmpv3_engine_restart") else {
        return;
    };
    let addr = d.addr();
    let u = url(&addr, ("SHA-256", "sha256"), Some(("AES", "aes")), "AES");
    assert_eq!(poll(&u).await.unwrap(), SYSNAME);
    let boots = d.counter(ENGINE_BOOTS);
    // The engine is cached across polls: the second poll does no discovery.
    assert_eq!(poll(&u).await.unwrap(), SYSNAME);
    let discoveries = d.counter(USM_UNKNOWN_ENGINE_IDS);
    assert!(
        discoveries <= 1,
        "engine discovered {discoveries} times for two polls"
    );

    d.stop();
    d.spawn();
    assert_eq!(
        d.counter(ENGINE_BOOTS),
        boots + 1,
        "snmpd did not persist engineBoots"
    );
    assert_eq!(poll(&u).await.unwrap(), SYSNAME);
    // The agent sent its stale boots/time (snmpd answered notInTimeWindow) and resynced,
    // without a new discovery.
    assert!(
        d.counter(USM_NOT_IN_TIME_WINDOWS) >= 1,
        "the stale engine time was not used"
    );
    assert_eq!(
        d.counter(USM_UNKNOWN_ENGINE_IDS),
        0,
        "rediscovered instead of resyncing"
    );
    assert_eq!(poll(&u).await.unwrap(), SYSNAME);
}

/// An engine whose engineBoots reached 2^31-1 is outside every time window for good (RFC 3414
/// §2.2.3). snmpd answers each authenticated request with an authenticated notInTimeWindow
/// Report carrying boots 2^31-1, which a receiver must discard (RFC 3414 §3.2 Step 7b): async-snmp
/// does, as does net-snmp's snmpget ("Timeout"). The poll fails in bounded time, and the error
/// names the time window as a possible cause.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snmpv3_engine_latched_out_of_time_window_fails_naming_it() {
    let Some(mut d) = PrivateSnmpd::start("snmpv3_engine_latched") else {
        return;
    };
    d.stop();
    d.set_persisted_boots(2_147_483_646);
    d.spawn();
    assert_eq!(d.counter(ENGINE_BOOTS), 2_147_483_647);
    let u = url(&d.addr(), ("SHA", "sha"), Some(("AES", "aes")), "AES");
    let t0 = Instant::now();
    let (report, err) = driver::poll(&Target::parse(&u).unwrap(), &cx()).await;
    let e = err.expect("an engine latched at the boots maximum cannot be polled");
    assert!(t0.elapsed() < Duration::from_secs(10));
    assert!(matches!(e, DriverError::Timeout { .. }), "{e:?}");
    assert!(e.to_string().contains("time window"), "{e}");
    assert_eq!(report.status.unwrap().outcome, PollOutcome::Timeout as i32);
    // It was the time window: snmpd counted our authenticated requests as notInTimeWindow.
    assert!(d.counter(USM_NOT_IN_TIME_WINDOWS) >= 1);
}

/// A whole-tree v3 authPriv walk. async-snmp advertises msgMaxSize 1472 unless told otherwise,
/// and net-snmp answers a GETBULK whose encrypted response would not fit with genErr (not with
/// fewer varbinds), which ended the walk at the first table with long rows: the driver now
/// advertises a full datagram. Same count as net-snmp's snmpbulkwalk (the tree is live: a
/// process or connection may come or go in between, hence the tolerance).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snmpv3_auth_priv_whole_tree_walk_matches_snmpbulkwalk() {
    let Some(d) = PrivateSnmpd::start("snmpv3_whole_tree_walk") else {
        return;
    };
    let (a, p) = (("SHA-256", "sha256"), ("AES", "aes"));
    let u = url(&d.addr(), a, Some(p), p.0) + "&max_repetitions=25";
    let Target::Snmp(t) = Target::parse(&u).unwrap() else {
        unreachable!()
    };
    let mut c = cx();
    c.limits.max_walk_varbinds = 1_000_000;
    let ours = driver::snmp::walk_count(&t, &c, "1.3.6.1").await.unwrap();
    let out = Command::new("snmpbulkwalk")
        .args([
            "-v3",
            "-l",
            "authPriv",
            "-u",
            &user(a.0, p.0),
            "-a",
            a.0,
            "-A",
            &auth_pass(a.0),
        ])
        .args([
            "-x",
            p.0,
            "-X",
            &priv_pass(p.0),
            "-Cr25",
            "-On",
            "-t",
            "3",
            "-r",
            "1",
        ])
        .arg(d.addr())
        .arg(".1.3.6.1")
        .env("MIBS", "")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let reference = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with(".1.") && !l.contains("No more variables"))
        .count();
    assert!(reference > 1000, "snmpbulkwalk saw only {reference} varbinds");
    let diff = ours.abs_diff(reference);
    assert!(
        diff * 50 <= reference,
        "groundtruth {ours} varbinds, snmpbulkwalk {reference}"
    );
}

/// A new engine ID behind a known address (the device was replaced, or its SNMP state reset)
/// while the agent caches the old engine: snmpd ignores the request (keys localized for another
/// engine ID) and its unknownEngineID Report is unauthenticated; the poll forgets the cached
/// engine, rediscovers and succeeds, in the same poll.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snmpv3_new_engine_id_at_a_cached_address_is_rediscovered() {
    let Some(mut d) = PrivateSnmpd::start("snmpv3_new_engine_id") else {
        return;
    };
    let u = url(
        &d.addr(),
        ("SHA-384", "sha384"),
        Some(("AES-192", "aes192")),
        "AES-192",
    );
    assert_eq!(poll(&u).await.unwrap(), SYSNAME);
    let engine_id = |d: &PrivateSnmpd| d.get_v2c("1.3.6.1.6.3.10.2.1.1.0").unwrap();
    let before = engine_id(&d);
    d.stop();
    std::fs::remove_file(d.dir.path().join("persist/snmpd.conf")).unwrap();
    d.spawn();
    assert_ne!(engine_id(&d), before, "snmpd kept its engine ID");
    assert_eq!(poll(&u).await.unwrap(), SYSNAME);
}
