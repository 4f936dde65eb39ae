//! Crash-resume: the real `groundtruth-collector apply` process is SIGKILLed in the middle of a
//! pass against the real NetBox (once right after the first devices appear, then twice right
//! after a rerun's first new interfaces appear, i.e. just after NetBox committed a write whose
//! answer the collector has not processed), then run to the end. NetBox must end with exactly one
//! device per serial, one interface per name, one MAC object per address, and every change —
//! device create, interface creates, MAC creates, primary-MAC updates — journaled exactly once:
//! none lost, none twice (issue #10). Included from `netbox.rs`.

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use groundtruth_proto::v1::{
    Batch, DeviceIdentity, DeviceReport, LocationEvidence, LocationSource, MacAddress, MacRole, PollOutcome,
    PollStatus,
};

use super::*;

/// Devices in the store: several bulk requests of each kind.
const N: usize = 120;

impl Peer {
    /// Every object of a list endpoint (pages of 1000).
    pub(super) async fn all(&self, path_and_query: &str) -> Vec<Value> {
        let sep = if path_and_query.contains('?') { '&' } else { '?' };
        let mut next = format!("{path_and_query}{sep}limit=1000");
        let mut out = Vec::new();
        loop {
            let page = self.get(&next).await;
            out.extend(page["results"].as_array().unwrap().iter().cloned());
            match page["next"].as_str() {
                None => return out,
                Some(n) => {
                    let u = url::Url::parse(n).unwrap();
                    next = format!("{}?{}", u.path().trim_start_matches('/'), u.query().unwrap_or(""));
                }
            }
        }
    }

    pub(super) async fn count(&self, path_and_query: &str) -> u64 {
        let sep = if path_and_query.contains('?') { '&' } else { '?' };
        self.get(&format!("{path_and_query}{sep}limit=1&brief=1")).await["count"]
            .as_u64()
            .unwrap()
    }
}

/// `n` new devices in `site`/`room` (racks of 40), each with two random MACs; with their serials
/// and MACs. Shared with the one-writer suite (`netbox_lease.rs`).
pub(super) fn store_batch(site: &str, room: &str, t: &str, n: usize) -> (Batch, Vec<(String, Vec<String>)>) {
    let mut devices = Vec::new();
    let mut want = Vec::new();
    for i in 0..n {
        let serial = format!("GTCR{t}{i:04}");
        let macs = vec![random_mac(), random_mac()];
        devices.push(DeviceReport {
            identity: Some(DeviceIdentity {
                serial_number: serial.clone(),
                vendor: format!("GT Crash {t}"),
                model: "GC-1".into(),
                hostname: format!("gt-crash-{}-{i}", t.to_lowercase()),
                endpoint_key: format!("redfish://10.77.{}.{}:443", i / 200, i % 200),
                macs: vec![
                    MacAddress {
                        address: macs[0].clone(),
                        interface_name: "eth0".into(),
                        ..Default::default()
                    },
                    MacAddress {
                        address: macs[1].clone(),
                        role: MacRole::Management as i32,
                        ..Default::default()
                    },
                ],
                ..Default::default()
            }),
            locations: vec![LocationEvidence {
                source: LocationSource::RedfishPlacement as i32,
                site: site.into(),
                room: room.into(),
                rack: format!("C{}", i / 40),
                u_position: Some(u32::try_from(i % 40).unwrap() + 1),
                confidence: 0.9,
                ..Default::default()
            }],
            status: Some(PollStatus {
                outcome: PollOutcome::Ok as i32,
                ..Default::default()
            }),
            ..Default::default()
        });
        want.push((serial, macs));
    }
    let batch = groundtruth_collector::store::testdb::batch(&format!("crash-{t}"), site, 1, devices);
    (batch, want)
}

/// Starts `apply`; the rate limit keeps the gaps between requests wide enough to kill in.
pub(super) fn spawn_apply(bin: &std::path::Path, cfg: &std::path::Path, token: &str) -> Child {
    Command::new(bin)
        .args(["apply", "--json", "--log", "warn", "--config"])
        .arg(cfg)
        .env("GT_CRASH_NB_TOKEN", token)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Polls NetBox until `ready` says so, then SIGKILLs the process. Returns false when the process
/// finished before (the kill point was missed).
async fn kill_when(child: &mut Child, mut ready: impl AsyncFnMut() -> bool) -> bool {
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(300) {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            let mut out = String::new();
            use std::io::Read;
            child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
            child.stdout.take().unwrap().read_to_string(&mut out).unwrap();
            eprintln!(
                "apply ended by itself ({status:?}):\n{}\n{err}",
                &out[..out.len().min(3000)]
            );
            return false;
        }
        if ready().await {
            child.kill().unwrap(); // SIGKILL
            let status = child.wait().unwrap();
            assert!(!status.success(), "{status:?}");
            return true;
        }
    }
    panic!("kill point not reached within 300 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_killed_mid_pass_resumes_without_duplicates_and_journals_each_change_once() {
    let Some(bin) = groundtruth_tests::require_binary("netbox_crash_resume", "groundtruth-collector") else {
        return;
    };
    let Some(p) = peer("netbox_crash_resume") else {
        return;
    };
    let t = tag();
    let site = format!("GT-Crash-{t}");
    let room = format!("Hall {t}");
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("state.db");
    let (batch, want) = store_batch(&site, &room, &t, N);
    {
        let store = groundtruth_collector::store::Store::open(&db).await.unwrap();
        store.commit_batch(&batch).await.unwrap();
    }
    let cfg = dir.path().join("collector.toml");
    std::fs::write(
        &cfg,
        format!(
            "[collector]\ndatabase = {db:?}\ndefault_site = {site:?}\nlisten_http = \"off\"\n\n\
             [netbox]\nurl = {:?}\ntoken = {{ env = \"GT_CRASH_NB_TOKEN\" }}\nrate_limit = 6\n",
            p.url.as_str()
        ),
    )
    .unwrap();

    // The site exists (filters on a missing one are refused); rooms, racks and the rest do not.
    let slug = format!("gt-crash-{}", t.to_lowercase());
    let site_id = p
        .post(
            "api/dcim/sites/",
            &json!({"name": site, "slug": slug, "status": "active"}),
        )
        .await["id"]
        .as_u64()
        .unwrap();

    // 1. Killed as soon as the first devices exist (their interfaces, MACs, journal not yet).
    let mut child = spawn_apply(&bin, &cfg, &p.token);
    let q_devices = format!("api/dcim/devices/?site_id={site_id}");
    let killed = kill_when(&mut child, async || p.count(&q_devices).await > 0).await;
    assert!(killed, "the first apply finished before it could be killed");
    let devices_1 = p.count(&q_devices).await;
    let ifaces_1 = p.count(&format!("api/dcim/interfaces/?site_id={site_id}")).await;
    assert!(
        devices_1 < N as u64 || ifaces_1 < 2 * N as u64,
        "kill 1 came too late"
    );

    // 2. Rerun, killed as soon as it has created more interfaces (one POST per interface on the
    //    devices that exist). 3. Rerun, killed as soon as interfaces of devices it created
    //    appear (the existing devices have at most 2 each): right after a bulk POST of them.
    let mut child = spawn_apply(&bin, &cfg, &p.token);
    let q_ifaces = format!("api/dcim/interfaces/?site_id={site_id}");
    let killed2 = kill_when(&mut child, async || p.count(&q_ifaces).await > ifaces_1).await;
    let devices_2 = p.count(&q_devices).await;
    let ifaces_2 = p.count(&q_ifaces).await;
    let mut child = spawn_apply(&bin, &cfg, &p.token);
    let killed3 = kill_when(&mut child, async || p.count(&q_ifaces).await > 2 * devices_2).await;
    let devices_3 = p.count(&q_devices).await;
    let ifaces_3 = p.count(&q_ifaces).await;

    // 3. Rerun to the end, then once more: nothing left to do.
    let out = spawn_apply(&bin, &cfg, &p.token).wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = spawn_apply(&bin, &cfg, &p.token).wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let last: Value = serde_json::from_slice(&out.stdout).unwrap();
    eprintln!(
        "crash-resume: kill 1 at {devices_1} devices / {ifaces_1} interfaces; kill 2 ({killed2}) at \
         {devices_2} devices / {ifaces_2} interfaces; kill 3 ({killed3}) at {devices_3} devices / \
         {ifaces_3} interfaces; final pass writes {}",
        last["report"]["writes"]
    );
    assert_eq!(last["report"]["writes"], 0, "{}", last["report"]);

    let (lost, twice) = assert_each_object_once(&p, &q_devices, &room, &want).await;
    eprintln!(
        "crash-resume: {lost} journal lines lost, {twice} duplicated (of {} interface/MAC/primary lines)",
        6 * N
    );
    assert_eq!((lost, twice), (0, 0), "journal lines (lost, duplicated)");
}

/// Asserts that `q_devices` lists exactly the devices of `want` (serial, MACs), each once, in
/// `room`, with one interface per name, one MAC object per address and a primary MAC on every
/// interface; returns the journal lines (device create, interface and MAC creates, primary-MAC
/// updates) lost and duplicated.
pub(super) async fn assert_each_object_once(
    p: &Peer,
    q_devices: &str,
    room: &str,
    want: &[(String, Vec<String>)],
) -> (usize, usize) {
    let expected = want.len();
    // Exactly one device per serial, in the room, with one interface per name and one MAC object
    // per address.
    let devices = p.all(q_devices).await;
    assert_eq!(devices.len(), expected, "devices of {q_devices}");
    let mut by_serial: HashMap<String, &Value> = HashMap::new();
    for d in &devices {
        let s = d["serial"].as_str().unwrap().to_owned();
        assert!(by_serial.insert(s.clone(), d).is_none(), "serial {s} twice");
        assert_eq!(d["location"]["name"], room, "{s}: {}", d["location"]);
    }
    let ids: Vec<String> = devices.iter().map(|d| d["id"].to_string()).collect();
    let mut ifaces = Vec::new();
    for chunk in ids.chunks(50) {
        let q: Vec<String> = chunk.iter().map(|i| format!("device_id={i}")).collect();
        ifaces.extend(p.all(&format!("api/dcim/interfaces/?{}", q.join("&"))).await);
    }
    let mut iface_names: HashMap<(u64, String), usize> = HashMap::new();
    for i in &ifaces {
        *iface_names
            .entry((
                i["device"]["id"].as_u64().unwrap(),
                i["name"].as_str().unwrap().to_owned(),
            ))
            .or_default() += 1;
    }
    assert_eq!(ifaces.len(), 2 * expected, "interfaces");
    assert!(iface_names.values().all(|&n| n == 1), "an interface twice");
    let all_macs: Vec<String> = want.iter().flat_map(|(_, m)| m.iter().cloned()).collect();
    for chunk in all_macs.chunks(50) {
        let q: Vec<String> = chunk.iter().map(|m| format!("mac_address={m}")).collect();
        let found = p.all(&format!("api/dcim/mac-addresses/?{}", q.join("&"))).await;
        assert_eq!(found.len(), chunk.len(), "MAC objects for {chunk:?}");
        assert!(
            found.iter().all(|m| m["assigned_object_id"].is_u64()),
            "unassigned MAC"
        );
    }
    for i in &ifaces {
        assert!(
            i["primary_mac_address"].is_object(),
            "no primary MAC: {}",
            i["name"]
        );
    }

    // Every change journaled exactly once: the device create, each interface and MAC create, each
    // interface's primary MAC.
    let mut text_of: HashMap<u64, String> = HashMap::new();
    let mut markers: HashMap<String, usize> = HashMap::new();
    for chunk in ids.chunks(50) {
        let q: Vec<String> = chunk.iter().map(|i| format!("assigned_object_id={i}")).collect();
        let entries = p
            .all(&format!(
                "api/extras/journal-entries/?assigned_object_type=dcim.device&{}",
                q.join("&")
            ))
            .await;
        for e in entries {
            let c = e["comments"].as_str().unwrap();
            let m = c
                .rsplit("groundtruth change id: ")
                .next()
                .unwrap()
                .trim()
                .to_owned();
            *markers.entry(m).or_default() += 1;
            text_of
                .entry(e["assigned_object_id"].as_u64().unwrap())
                .or_default()
                .push_str(c);
        }
    }
    assert!(
        markers.values().all(|&n| n == 1),
        "a journal entry posted twice: {markers:?}"
    );
    // Every change is recorded before its request and checked in NetBox after a kill: each line
    // exactly once.
    let (mut lost, mut twice) = (0usize, 0usize);
    for (serial, macs) in want {
        let d = by_serial[serial];
        let text = text_of
            .get(&d["id"].as_u64().unwrap())
            .cloned()
            .unwrap_or_default();
        let times = |needle: &str| text.matches(needle).count();
        assert_eq!(
            times(&format!("* create device: device serial {serial}")),
            1,
            "{serial}: {text}"
        );
        let mut lines = vec![
            "* create interface: interface eth0 ".to_owned(),
            "* create interface: interface bmc ".to_owned(),
            format!("* update interface: interface eth0 of device serial {serial}\n"),
            format!("* update interface: interface bmc of device serial {serial}\n"),
        ];
        lines.extend(macs.iter().map(|m| format!("* create mac_address: MAC {m} ")));
        for l in &lines {
            match times(l) {
                0 => {
                    lost += 1;
                    eprintln!("{serial}: lost {l:?}");
                }
                1 => {}
                n => {
                    twice += n - 1;
                    eprintln!("{serial}: {l:?} journaled {n} times");
                }
            }
        }
    }
    (lost, twice)
}
