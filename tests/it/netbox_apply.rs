//! `apply` against a real NetBox 4.7 seeded with realistic stale data, and the same sync through
//! a fault-injecting proxy (503 and 429 + Retry-After). Included from `netbox.rs` (shares its
//! helpers); every test uses its own random site, serials, MACs and names.

use super::*;

impl Peer {
    pub(super) async fn patch(&self, path: &str, body: &Value) -> Value {
        let resp = self
            .http
            .patch(self.url.join(path).unwrap())
            .header("Authorization", self.auth())
            .json(body)
            .send()
            .await
            .unwrap();
        let status = resp.status();
        let v: Value = resp.json().await.unwrap();
        assert_eq!(status.as_u16(), 200, "PATCH {path}: {v}");
        v
    }

    pub(super) async fn device(&self, id: u64) -> Value {
        self.get(&format!("api/dcim/devices/{id}/")).await
    }

    /// Adds interface `eth0` with `mac` as its primary MAC object to a device.
    pub(super) async fn add_mac(&self, device: u64, mac: &str) {
        let i = self
            .post(
                "api/dcim/interfaces/",
                &json!({"device": device, "name": "eth0", "type": "1000base-t"}),
            )
            .await;
        let m = self
            .post(
                "api/dcim/mac-addresses/",
                &json!({"mac_address": mac, "assigned_object_type": "dcim.interface", "assigned_object_id": i["id"]}),
            )
            .await;
        self.patch(
            &format!("api/dcim/interfaces/{}/", i["id"]),
            &json!({"primary_mac_address": m["id"]}),
        )
        .await;
    }
}

/// Objects a test seeded: site, racks R01/R07, manufacturer + device type, role.
pub(super) struct World {
    pub(super) t: String,
    pub(super) site: String,
    pub(super) site_id: u64,
    pub(super) r01: u64,
    pub(super) r07: u64,
    pub(super) vendor: String,
    pub(super) dtype: u64,
    pub(super) role: u64,
}

async fn seed_world(p: &Peer) -> World {
    seed_world_named(p, "GT-Apply").await
}

/// [`seed_world`] under another name prefix (the site, vendor and role are `<prefix>-<tag>`).
pub(super) async fn seed_world_named(p: &Peer, prefix: &str) -> World {
    let t = tag();
    let site = format!("{prefix}-{t}");
    let slug = format!("{}-{}", prefix.to_lowercase(), t.to_lowercase());
    let s = p
        .post(
            "api/dcim/sites/",
            &json!({"name": site, "slug": slug, "status": "active"}),
        )
        .await;
    let mut racks = Vec::new();
    for name in ["R01", "R07"] {
        let r = p
            .post(
                "api/dcim/racks/",
                &json!({"name": name, "site": s["id"], "status": "active", "u_height": 42}),
            )
            .await;
        racks.push(r["id"].as_u64().unwrap());
    }
    let vendor = format!("{} {t}", prefix.replace('-', " "));
    let m = p
        .post("api/dcim/manufacturers/", &json!({"name": vendor, "slug": slug}))
        .await;
    let dt = p
        .post(
            "api/dcim/device-types/",
            &json!({"manufacturer": m["id"], "model": "GA-1", "slug": "ga-1", "u_height": 1}),
        )
        .await;
    let role = p
        .post(
            "api/dcim/device-roles/",
            &json!({"name": format!("{} {t}", prefix.replace('-', " ")), "slug": slug, "color": "00ff00"}),
        )
        .await;
    World {
        site,
        site_id: s["id"].as_u64().unwrap(),
        r01: racks[0],
        r07: racks[1],
        vendor,
        dtype: dt["id"].as_u64().unwrap(),
        role: role["id"].as_u64().unwrap(),
        t,
    }
}

impl World {
    /// A NetBox device as an operator left it; `extra` is merged into the body.
    pub(super) async fn seed_device(&self, p: &Peer, extra: Value) -> u64 {
        let mut body =
            json!({"device_type": self.dtype, "role": self.role, "site": self.site_id, "status": "active"});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        p.post("api/dcim/devices/", &body).await["id"].as_u64().unwrap()
    }

    /// What the collector measured: in R07 at `u`, model GA-1, one MAC on eth0.
    fn want(&self, name: &str, u: u32, mac: &str) -> DesiredDevice {
        DesiredDevice {
            key: format!("apply-{}-{name}", self.t),
            serial: format!("GTAP{}{}", self.t, name.to_uppercase()),
            vendor: self.vendor.clone(),
            model: "GA-1".into(),
            hostname: Some(format!("host-{name}-{}", self.t.to_lowercase())),
            power_watts: Some(350.0),
            last_seen: Some("2026-11-24T09:00:00.000Z".into()),
            evidence: vec![
                format!("location from SITE_MAP (rack R07 U{u}): test fixture"),
                format!("identity from redfish://10.0.0.{u} via redfish (agent it)"),
            ],
            ..desired(&self.t, &self.site, u, mac)
        }
    }
}

pub(super) fn power_of(d: &Value) -> Option<i64> {
    d["custom_fields"][groundtruth_collector::cmdb::netbox::CF_POWER].as_i64()
}

#[tokio::test]
async fn apply_fixes_stale_netbox_and_leaves_cmdb_fields_and_conflicts_alone() {
    let Some(p) = peer("netbox_apply") else { return };
    let w = seed_world(&p).await;
    let t = w.t.clone();

    // A: right serial, wrong rack and U, CMDB-owned name/status/comments that differ from us.
    let a = w.want("a", 5, &random_mac());
    let a_id = w
        .seed_device(
            &p,
            json!({"name": format!("cmdb-name-a-{t}"), "status": "planned", "comments": "owned by the CMDB",
                   "rack": w.r01, "position": 10, "face": "rear", "serial": a.serial}),
        )
        .await;
    // B: no serial, but its eth0 carries our MAC.
    let b = w.want("b", 7, &random_mac());
    let b_id = w
        .seed_device(&p, json!({"name": format!("cmdb-b-{t}"), "rack": w.r01}))
        .await;
    p.add_mac(b_id, &b.macs[0].address).await;
    // C: placeholder serial in NetBox, matching MAC: the placeholder is no identity.
    let c = w.want("c", 9, &random_mac());
    let c_id = w
        .seed_device(
            &p,
            json!({"name": format!("cmdb-c-{t}"), "serial": "To Be Filled By O.E.M."}),
        )
        .await;
    p.add_mac(c_id, &c.macs[0].address).await;
    // D: the collector itself only has a placeholder serial.
    let mut d = w.want("d", 15, &random_mac());
    d.serial = "0123456789".into();
    // E: NetBox has two devices with our serial.
    let e = w.want("e", 17, &random_mac());
    let e_ids = [
        w.seed_device(&p, json!({"serial": e.serial})).await,
        w.seed_device(&p, json!({"serial": e.serial})).await,
    ];
    // F: only the hostname matches a serial-less record.
    let f = w.want("f", 19, &random_mac());
    let f_id = w
        .seed_device(&p, json!({"name": f.hostname.clone().unwrap()}))
        .await;
    // G: not in NetBox at all.
    let g = w.want("g", 11, &random_mac());
    // H: no serial, matching asset tag.
    let mut h = w.want("h", 13, &random_mac());
    h.asset_tag = Some(format!("AT-{t}"));
    let h_id = w
        .seed_device(
            &p,
            json!({"name": format!("cmdb-h-{t}"), "asset_tag": format!("AT-{t}")}),
        )
        .await;

    let input = vec![
        a.clone(),
        b.clone(),
        c.clone(),
        d.clone(),
        e.clone(),
        f.clone(),
        g.clone(),
        h.clone(),
    ];
    let nb = p.netbox();

    // plan (dry run) writes nothing but shows the changes.
    let plan = nb.sync(&input, true).await.unwrap();
    eprintln!("plan: {}", summary(&plan));
    assert_eq!(plan.writes, 0);
    assert!(
        plan.changes
            .iter()
            .any(|c| c.device_key == a.key && c.fields.iter().any(|f| f.field == "rack"))
    );

    let r = nb.sync(&input, false).await.unwrap();
    eprintln!("apply: {}", summary(&r));
    assert!(r.failures.is_empty(), "{}", summary(&r));
    let kinds: Vec<(&str, &str)> = r
        .exceptions
        .iter()
        .map(|x| (x.device_key.as_str(), x.kind.as_str()))
        .collect();
    assert!(
        kinds.contains(&(d.key.as_str(), "placeholder_serial")),
        "{kinds:?}"
    );
    assert!(
        kinds.contains(&(e.key.as_str(), "duplicate_serial_in_cmdb")),
        "{kinds:?}"
    );
    assert!(
        kinds.contains(&(f.key.as_str(), "weak_match_hostname")),
        "{kinds:?}"
    );
    assert_eq!(kinds.len(), 3, "{kinds:?}");

    // A: moved; CMDB-owned fields untouched; power and last-seen written.
    let av = p.device(a_id).await;
    assert_eq!(av["rack"]["id"].as_u64(), Some(w.r07), "{av}");
    assert_eq!(av["position"].as_f64(), Some(5.0), "{av}");
    assert_eq!(av["face"]["value"], "front", "{av}");
    assert_eq!(av["name"].as_str(), Some(format!("cmdb-name-a-{t}").as_str()));
    assert_eq!(av["status"]["value"], "planned");
    assert_eq!(av["comments"], "owned by the CMDB");
    assert_eq!(power_of(&av), Some(350), "{av}");
    assert_eq!(
        av["custom_fields"][groundtruth_collector::cmdb::netbox::CF_LAST_SEEN],
        "2026-11-24T09:00:00.000Z"
    );
    // B, C, H: matched by MAC / MAC over a placeholder / asset tag; serial written, placed.
    for (id, want, u) in [(b_id, &b, 7.0), (c_id, &c, 9.0), (h_id, &h, 13.0)] {
        let v = p.device(id).await;
        assert_eq!(v["serial"].as_str(), Some(want.serial.as_str()), "{v}");
        assert_eq!(v["rack"]["id"].as_u64(), Some(w.r07), "{v}");
        assert_eq!(v["position"].as_f64(), Some(u), "{v}");
        assert!(v["name"].as_str().unwrap().starts_with("cmdb-"), "{v}");
        assert_eq!(p.devices_with_serial(&want.serial).await.len(), 1);
        let macs = p
            .list(&format!(
                "api/dcim/mac-addresses/?mac_address={}",
                want.macs[0].address
            ))
            .await;
        assert_eq!(macs.len(), 1, "{macs:?}");
    }
    // E: both duplicates untouched; F: not linked, no duplicate created.
    for id in e_ids {
        let v = p.device(id).await;
        assert!(v["rack"].is_null() && power_of(&v).is_none(), "{v}");
    }
    assert!(p.devices_with_serial(&f.serial).await.is_empty());
    assert!(p.device(f_id).await["serial"].as_str().unwrap().is_empty());
    assert!(
        p.devices_with_serial(&d.serial)
            .await
            .iter()
            .all(|v| v["site"]["id"].as_u64() != Some(w.site_id))
    );
    // G: created where measured.
    let gv = p.devices_with_serial(&g.serial).await;
    assert_eq!(gv.len(), 1);
    assert_eq!(gv[0]["position"].as_f64(), Some(11.0));
    assert_eq!(power_of(&gv[0]), Some(350));
    // Journal entries on the changed devices, with the evidence.
    let j = p
        .list(&format!("api/extras/journal-entries/?assigned_object_id={a_id}"))
        .await;
    let j: Vec<&Value> = j
        .iter()
        .filter(|x| x["assigned_object_type"] == "dcim.device")
        .collect();
    assert_eq!(j.len(), 1, "{j:?}");
    let text = j[0]["comments"].as_str().unwrap();
    assert!(
        text.contains("rack: R01 → R07") && text.contains("location from SITE_MAP"),
        "{text}"
    );
    assert_eq!(r.journal_entries, 5, "{}", summary(&r)); // A, B, C, G, H

    // Second apply: zero writes.
    let again = nb.sync(&input, false).await.unwrap();
    eprintln!("again: {}", summary(&again));
    assert_eq!(again.writes, 0, "{}", summary(&again));
    assert!(again.changes.is_empty(), "{}", summary(&again));

    // Power inside the 5 % deadband: nothing; outside: one PATCH and one journal entry.
    let mut a2 = a.clone();
    a2.power_watts = Some(362.0);
    let small = nb.sync(std::slice::from_ref(&a2), false).await.unwrap();
    assert_eq!(small.writes, 0, "{}", summary(&small));
    a2.power_watts = Some(420.4);
    let big = nb.sync(std::slice::from_ref(&a2), false).await.unwrap();
    assert_eq!((big.writes, big.journal_entries), (2, 1), "{}", summary(&big));
    assert_eq!(power_of(&p.device(a_id).await), Some(420));
    // Power of three devices moved: one bulk PATCH and one bulk journal POST.
    let mut three = vec![a2.clone(), b.clone(), c.clone()];
    for x in &mut three {
        x.power_watts = Some(500.0);
    }
    let bulk = nb.sync(&three, false).await.unwrap();
    eprintln!("bulk: {}", summary(&bulk));
    assert!(bulk.failures.is_empty(), "{}", summary(&bulk));
    assert_eq!((bulk.writes, bulk.journal_entries), (2, 3), "{}", summary(&bulk));
    for id in [a_id, b_id, c_id] {
        assert_eq!(power_of(&p.device(id).await), Some(500));
    }
    eprintln!(
        "apply requests: first {} , rerun {} (writes {} / {})",
        r.requests, again.requests, r.writes, again.writes
    );
}

/// A proxy in front of the real NetBox: the first attempt of each of the first `faults` distinct
/// requests (method + target + body) is answered 503 or 429 + `Retry-After: 1` without reaching
/// NetBox; everything else is forwarded.
async fn fault_proxy(
    upstream: &url::Url,
    faults: usize,
) -> (url::Url, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::AtomicUsize;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = url::Url::parse(&format!("http://{}/", listener.local_addr().unwrap())).unwrap();
    let up = format!(
        "{}:{}",
        upstream.host_str().unwrap(),
        upstream.port_or_known_default().unwrap()
    );
    let injected = std::sync::Arc::new(AtomicUsize::new(0));
    let count = injected.clone();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<u64>::new()));
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let up = up.clone();
            let seen = seen.clone();
            let count = count.clone();
            tokio::spawn(async move {
                // Read one request: head, then Content-Length bytes.
                let mut buf = Vec::new();
                let mut chunk = [0u8; 8192];
                let head_end = loop {
                    if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        break i + 4;
                    }
                    match sock.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                };
                let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
                let len: usize = head
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("content-length")
                            .then(|| v.trim().parse().ok())?
                    })
                    .unwrap_or(0);
                while buf.len() < head_end + len {
                    match sock.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let first = head.lines().next().unwrap_or("").to_owned();
                // A fixed hasher: a retry of the same request must hash the same way.
                let h = {
                    use std::hash::{DefaultHasher, Hash, Hasher};
                    let mut s = DefaultHasher::new();
                    first.hash(&mut s);
                    buf[head_end..].hash(&mut s);
                    s.finish()
                };
                let fault = {
                    let mut seen = seen.lock().unwrap();
                    if seen.len() < faults && !seen.contains(&h) {
                        seen.push(h);
                        Some(seen.len())
                    } else {
                        None
                    }
                };
                if let Some(n) = fault {
                    count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let resp = if n % 2 == 0 {
                        "HTTP/1.1 429 Too Many Requests\r\nRetry-After: 1\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}"
                    } else {
                        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}"
                    };
                    let _ = sock.write_all(resp.as_bytes()).await;
                    let _ = sock.shutdown().await;
                    return;
                }
                // Forward with Connection: close so one request = one connection both ways.
                let mut out = String::new();
                for l in head[..head_end].split("\r\n").filter(|l| !l.is_empty()) {
                    if !l.to_ascii_lowercase().starts_with("connection:") {
                        out.push_str(l);
                        out.push_str("\r\n");
                    }
                }
                out.push_str("Connection: close\r\n\r\n");
                let Ok(mut upstream) = tokio::net::TcpStream::connect(&up).await else {
                    return;
                };
                if upstream.write_all(out.as_bytes()).await.is_err()
                    || upstream.write_all(&buf[head_end..]).await.is_err()
                {
                    return;
                }
                let _ = tokio::io::copy(&mut upstream, &mut sock).await;
                let _ = sock.shutdown().await;
            });
        }
    });
    (url, injected)
}

#[tokio::test]
async fn apply_through_503_and_429_delays_but_loses_and_duplicates_nothing() {
    let Some(p) = peer("netbox_apply_faults") else {
        return;
    };
    let w = seed_world(&p).await;
    let (url, injected) = fault_proxy(&p.url, 30).await;
    let moved = w.want("m", 3, &random_mac());
    let moved_id = w
        .seed_device(
            &p,
            json!({"serial": moved.serial, "rack": w.r01, "position": 20, "face": "front"}),
        )
        .await;
    let fresh: Vec<DesiredDevice> = (0..3u32)
        .map(|i| w.want(&format!("n{i}"), 20 + 2 * i, &random_mac()))
        .collect();
    let mut input = vec![moved.clone()];
    input.extend(fresh.iter().cloned());

    let mut cfg = NetBoxConfig::new(url, p.token.clone());
    cfg.rate_limit = 0.0;
    let nb = NetBox::new(cfg).unwrap();
    let started = std::time::Instant::now();
    let r = nb.sync(&input, false).await.unwrap();
    let took = started.elapsed();
    eprintln!(
        "faults: injected {} in {took:?}, {} requests: {}",
        injected.load(Ordering::Relaxed),
        r.requests,
        summary(&r)
    );
    let n = injected.load(Ordering::Relaxed);
    assert!(n >= 20, "only {n} faults injected");
    assert!(
        took >= std::time::Duration::from_secs(10),
        "{took:?}: at least 10 × Retry-After 1 s"
    );
    assert!(r.failures.is_empty(), "{}", summary(&r));
    assert!(r.exceptions.is_empty(), "{}", summary(&r));

    let mv = p.device(moved_id).await;
    assert_eq!(
        (mv["rack"]["id"].as_u64(), mv["position"].as_f64()),
        (Some(w.r07), Some(3.0)),
        "{mv}"
    );
    for want in &input {
        let got = p.devices_with_serial(&want.serial).await;
        assert_eq!(got.len(), 1, "{}: {got:?}", want.serial);
        let macs = p
            .list(&format!(
                "api/dcim/mac-addresses/?mac_address={}",
                want.macs[0].address
            ))
            .await;
        assert_eq!(macs.len(), 1, "{macs:?}");
        let ifaces = p
            .list(&format!("api/dcim/interfaces/?device_id={}", got[0]["id"]))
            .await;
        assert_eq!(ifaces.len(), 1, "{ifaces:?}");
        let j = p
            .list(&format!(
                "api/extras/journal-entries/?assigned_object_id={}",
                got[0]["id"]
            ))
            .await;
        assert_eq!(
            j.iter()
                .filter(|x| x["assigned_object_type"] == "dcim.device")
                .count(),
            1
        );
    }
    let again = nb.sync(&input, false).await.unwrap();
    assert_eq!(again.writes, 0, "{}", summary(&again));
}

/// Benchmark (ignored): first sync of `GT_BENCH_DEVICES` (default 1,000) new devices into a fresh
/// `GT-Bench-<tag>` site of 40-device racks (one MAC each, power and last-seen set), then a
/// no-change cycle. Rate limit off, so this measures NetBox and the client. A first sync still
/// running after `GT_BENCH_MAX_S` seconds (default 1500) is stopped and reported with what it
/// created so far. Everything the run created is deleted afterwards unless `GT_BENCH_KEEP=1`.
/// Run: `cargo test -p groundtruth-tests --test it -- --ignored --nocapture bench_netbox`.
#[tokio::test]
#[ignore = "benchmark: minutes against the NetBox peer"]
async fn bench_netbox_first_sync_and_no_change_cycle() {
    let Some(p) = peer("netbox_bench") else { return };
    let env_num = |k: &str, d: u64| std::env::var(k).ok().and_then(|v| v.parse().ok()).unwrap_or(d);
    let n = u32::try_from(env_num("GT_BENCH_DEVICES", 1000)).unwrap();
    let limit = std::time::Duration::from_secs(env_num("GT_BENCH_MAX_S", 1500));
    let w = seed_world_named(&p, "GT-Bench").await;
    let input: Vec<DesiredDevice> = (0..n)
        .map(|i| {
            let mut d = w.want(&format!("b{i}"), i % 40 + 1, &random_mac());
            if let Some(l) = d.location.as_mut() {
                l.rack = format!("B{:04}", i / 40);
            }
            d.power_watts = Some(f64::from(200 + i % 300));
            d
        })
        .collect();
    let mut cfg = NetBoxConfig::new(p.url.clone(), p.token.clone());
    cfg.rate_limit = 0.0;
    cfg.timeout = std::time::Duration::from_secs(120);
    let nb = NetBox::new(cfg).unwrap();
    let t0 = std::time::Instant::now();
    let first = tokio::time::timeout(limit, nb.sync(&input, false)).await;
    let t_first = t0.elapsed();
    match first {
        Ok(first) => {
            let first = first.unwrap();
            assert!(
                first.failures.is_empty(),
                "{:?}",
                &first.failures[..first.failures.len().min(5)]
            );
            let t1 = std::time::Instant::now();
            let again = nb.sync(&input, false).await.unwrap();
            let t_again = t1.elapsed();
            assert_eq!(again.writes, 0);
            #[allow(clippy::cast_precision_loss)]
            let wps = first.writes as f64 / t_first.as_secs_f64();
            println!(
                "BENCH netbox devices={n} first_s={:.1} requests={} writes={} writes_per_s={wps:.2} exceptions={} \
                 nochange_s={:.2} nochange_requests={} nochange_writes={}",
                t_first.as_secs_f64(),
                first.requests,
                first.writes,
                first.exceptions.len(),
                t_again.as_secs_f64(),
                again.requests,
                again.writes
            );
        }
        Err(_) => {
            let made = p
                .get(&format!(
                    "api/dcim/devices/?site_id={}&limit=1&brief=1",
                    w.site_id
                ))
                .await["count"]
                .as_u64()
                .unwrap();
            println!(
                "BENCH netbox devices={n} first_s=TIMEOUT stopped_after_s={:.1} devices_created={made}",
                t_first.as_secs_f64()
            );
        }
    }
    if std::env::var("GT_BENCH_KEEP").as_deref() != Ok("1") {
        bench_cleanup(&p, &w).await;
    }
}

/// Deletes what a benchmark created: its devices (their interfaces, MAC objects and journal
/// entries go with them), racks, device type, manufacturer, role and site.
async fn bench_cleanup(p: &Peer, w: &World) {
    let del = |path: String, body: Value| {
        let mut req = p
            .http
            .delete(p.url.join(&path).unwrap())
            .header("Authorization", p.auth());
        if !body.is_null() {
            req = req.json(&body);
        }
        async move {
            let r = req.send().await.unwrap();
            assert!(r.status().is_success(), "DELETE {path}: {}", r.status());
        }
    };
    loop {
        let ids: Vec<Value> = p
            .get(&format!(
                "api/dcim/devices/?site_id={}&limit=200&brief=1",
                w.site_id
            ))
            .await["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| json!({"id": d["id"]}))
            .collect();
        if ids.is_empty() {
            break;
        }
        del("api/dcim/devices/".into(), Value::Array(ids)).await;
    }
    let racks: Vec<Value> = p
        .get(&format!(
            "api/dcim/racks/?site_id={}&limit=1000&brief=1",
            w.site_id
        ))
        .await["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| json!({"id": r["id"]}))
        .collect();
    if !racks.is_empty() {
        del("api/dcim/racks/".into(), Value::Array(racks)).await;
    }
    let mfr = p.get(&format!("api/dcim/device-types/{}/", w.dtype)).await["manufacturer"]["id"].clone();
    del(format!("api/dcim/device-types/{}/", w.dtype), Value::Null).await;
    del(format!("api/dcim/manufacturers/{mfr}/"), Value::Null).await;
    del(format!("api/dcim/device-roles/{}/", w.role), Value::Null).await;
    del(format!("api/dcim/sites/{}/", w.site_id), Value::Null).await;
}
