//! One writer per NetBox (issue #22), with the real `groundtruth-collector apply` processes and
//! the real NetBox: two passes on one store started 0 to 2 s apart, for devices NetBox does not
//! have yet, create each device, interface and MAC once and journal each change once (before the
//! lease, two such passes created a device twice); and a pass paused past its lease loses it,
//! the next pass finishes the work, and the paused one's late writes are refused. Included from
//! `netbox.rs`.

use std::process::Child;
use std::time::{Duration, Instant};

use super::crash::{assert_each_object_once, spawn_apply, store_batch};
use super::*;

/// A collector config on a new store holding `n` new devices in a new site; returns the config
/// path, the devices' query, the room and what the devices carry.
async fn setup(
    p: &Peer,
    dir: &std::path::Path,
    n: usize,
    extra: &str,
) -> (std::path::PathBuf, String, String, Vec<(String, Vec<String>)>) {
    let t = tag();
    let site = format!("GT-Lease-{t}");
    let room = format!("Hall {t}");
    let db = dir.join("state.db");
    let (mut batch, want) = store_batch(&site, &room, &t, n);
    // Nameless and without a U, as the demo's duplicated Redfish server was: NetBox's unique
    // (site, name) and rack-position checks would otherwise refuse a second create by
    // themselves and hide the race.
    for d in &mut batch.devices {
        if let Some(id) = d.identity.as_mut() {
            id.hostname.clear();
        }
        for l in &mut d.locations {
            l.u_position = None;
        }
    }
    let store = groundtruth_collector::store::Store::open(&db).await.unwrap();
    store.commit_batch(&batch).await.unwrap();
    let cfg = dir.join("collector.toml");
    std::fs::write(
        &cfg,
        format!(
            "[collector]\ndatabase = {db:?}\ndefault_site = {site:?}\nlisten_http = \"off\"\n\n\
             [netbox]\nurl = {:?}\ntoken = {{ env = \"GT_CRASH_NB_TOKEN\" }}\n{extra}",
            p.url.as_str()
        ),
    )
    .unwrap();
    let serials: Vec<String> = want.iter().map(|(s, _)| format!("serial={s}")).collect();
    (
        cfg,
        format!("api/dcim/devices/?{}", serials.join("&")),
        room,
        want,
    )
}

fn finish(child: Child, what: &str) -> (bool, Value, String) {
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    let json = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    eprintln!("{what}: {:?}\n{}", out.status, &err[..err.len().min(2000)]);
    (out.status.success(), json, err)
}

/// Device creates in an `apply --json` report.
fn device_creates(v: &Value) -> usize {
    v["report"]["changes"].as_array().map_or(0, |c| {
        c.iter()
            .filter(|c| c["object"] == "device" && c["action"] == "create")
            .count()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_applies_started_0_to_2_s_apart_create_and_journal_everything_once() {
    const TEST: &str = "netbox_lease_staggered";
    let Some(bin) = groundtruth_tests::require_binary(TEST, "groundtruth-collector") else {
        return;
    };
    let Some(p) = peer(TEST) else {
        return;
    };
    let n = 4;
    for stagger_ms in [0u64, 500, 1000, 2000] {
        let dir = tempfile::tempdir().unwrap();
        // Slow enough (5 requests/s) that the passes overlap at every stagger.
        let (cfg, q_devices, room, want) = setup(&p, dir.path(), n, "rate_limit = 5\n").await;
        let first = spawn_apply(&bin, &cfg, &p.token);
        tokio::time::sleep(Duration::from_millis(stagger_ms)).await;
        let second = spawn_apply(&bin, &cfg, &p.token);
        let (ok1, r1, e1) = finish(first, "first apply");
        let (ok2, r2, e2) = finish(second, "second apply");
        assert!(ok1 && ok2, "both passes succeed (the later one waits)");
        assert!(
            e1.contains("waiting") || e2.contains("waiting"),
            "stagger {stagger_ms} ms: one pass waited for the other's lease"
        );
        assert_eq!(
            device_creates(&r1) + device_creates(&r2),
            n,
            "stagger {stagger_ms} ms: each device created by exactly one pass"
        );
        let (lost, twice) = assert_each_object_once(&p, &q_devices, &room, &want).await;
        eprintln!("stagger {stagger_ms} ms: {lost} journal lines lost, {twice} duplicated");
        assert_eq!((lost, twice), (0, 0), "journal lines (lost, duplicated)");
    }
}

fn signal(child: &Child, sig: &str) {
    let ok = std::process::Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {sig}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pass_paused_past_its_lease_is_fenced_and_the_next_pass_finishes_once() {
    const TEST: &str = "netbox_lease_fenced";
    let Some(bin) = groundtruth_tests::require_binary(TEST, "groundtruth-collector") else {
        return;
    };
    let Some(p) = peer(TEST) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let n = 6;
    let (cfg, q_devices, room, want) = setup(&p, dir.path(), n, "rate_limit = 4\nlease_ttl = \"2s\"\n").await;
    // Paused (SIGSTOP) as soon as its first devices exist: alive, so nobody may displace it,
    // but silent, so its lease runs out.
    let paused = spawn_apply(&bin, &cfg, &p.token);
    let t0 = Instant::now();
    while p.count(&q_devices).await == 0 {
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "the first pass created nothing"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    signal(&paused, "-STOP");
    let waited = Instant::now();
    let (ok, report, err) = finish(spawn_apply(&bin, &cfg, &p.token), "second apply");
    assert!(ok, "the second pass takes the expired lease and finishes");
    assert!(err.contains("waiting"), "it waited for the paused holder: {err}");
    assert!(
        waited.elapsed() >= Duration::from_millis(1500),
        "a live (paused) holder is not displaced before its lease runs out ({:?})",
        waited.elapsed()
    );
    let created_by_second = device_creates(&report);
    // Resumed: it finds its lease gone and stops (at its next write, by the fence; or, when the
    // request it had out timed out while it was stopped, by that error after the renewal found
    // the lease taken). What it did not write is checked in NetBox below.
    signal(&paused, "-CONT");
    let (ok, late, err) = finish(paused, "paused apply, resumed");
    assert!(!ok, "the fenced pass fails: {late}");
    assert!(
        err.contains("no longer holds the sync lease")
            || err.contains("stopped before a write")
            || err.contains("Lease lost"),
        "{err}"
    );
    let (lost, twice) = assert_each_object_once(&p, &q_devices, &room, &want).await;
    eprintln!(
        "fenced: second pass created {created_by_second} of {n}; {lost} journal lines lost, {twice} duplicated"
    );
    assert_eq!((lost, twice), (0, 0), "journal lines (lost, duplicated)");
    // And nothing is left to do.
    let (ok, last, _) = finish(spawn_apply(&bin, &cfg, &p.token), "third apply");
    assert!(ok);
    assert_eq!(last["report"]["writes"], 0, "{}", last["report"]);
}
