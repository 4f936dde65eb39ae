//! CMDB sync against a real NetBox 4.7 (`tests/peers/netbox`). Every test uses its own random
//! site, serials and MACs, so the tests run in parallel and need no reset between runs. What a
//! sync wrote is checked through NetBox's REST API, not through the sync's own report.

use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};

use groundtruth_collector::cmdb::netbox::{NetBox, NetBoxConfig};
use groundtruth_collector::cmdb::{CmdbError, DesiredDevice, DesiredLocation, DesiredMac, Face, SyncReport};
use groundtruth_tests::{Peers, init_tls};
use serde_json::{Value, json};

#[path = "netbox_apply.rs"]
mod apply;
#[path = "netbox_bulk.rs"]
mod bulk;
#[path = "netbox_crash.rs"]
mod crash;
#[path = "netbox_lease.rs"]
mod lease;
#[path = "netbox_not_seen.rs"]
mod not_seen;
#[path = "netbox_unlocated.rs"]
mod unlocated;

const VENDOR: &str = "Groundtruth Labs";
const MODEL: &str = "GT-R1000";

/// The running NetBox peer plus a plain REST client for checking what the sync did.
struct Peer {
    url: url::Url,
    token: String,
    http: reqwest::Client,
}

fn peer(test: &str) -> Option<Peer> {
    let peers = Peers::load();
    if peers.get("GT_NETBOX_URL").is_none() || peers.get("GT_NETBOX_TOKEN").is_none() {
        eprintln!("SKIP: NetBox peer not running (start it with tests/peers/start-all.sh netbox)");
    }
    let [url, token] = peers.require(test, ["GT_NETBOX_URL", "GT_NETBOX_TOKEN"])?;
    init_tls();
    let mut url = url::Url::parse(&url).unwrap();
    if !url.path().ends_with('/') {
        let p = format!("{}/", url.path());
        url.set_path(&p);
    }
    Some(Peer {
        url,
        token,
        http: reqwest::Client::new(),
    })
}

impl Peer {
    fn netbox(&self) -> NetBox {
        self.netbox_with_token(&self.token)
    }

    fn netbox_with_token(&self, token: &str) -> NetBox {
        NetBox::new(NetBoxConfig::new(self.url.clone(), token)).unwrap()
    }

    fn auth(&self) -> String {
        format!("Bearer {}", self.token)
    }

    async fn get(&self, path_and_query: &str) -> Value {
        // A loaded NetBox (gunicorn) may reset a kept-alive connection as a request goes out:
        // a read is retried on a transport error.
        let mut attempt = 0;
        let resp = loop {
            attempt += 1;
            match self
                .http
                .get(self.url.join(path_and_query).unwrap())
                .header("Authorization", self.auth())
                .header("Accept", "application/json")
                .send()
                .await
            {
                Ok(r) => break r,
                Err(e) if attempt < 3 => eprintln!("GET {path_and_query}: {e}; retrying"),
                Err(e) => panic!("GET {path_and_query}: {e}"),
            }
        };
        assert!(
            resp.status().is_success(),
            "GET {path_and_query}: {}",
            resp.status()
        );
        resp.json().await.unwrap()
    }

    /// `results` of a list endpoint (the tests' queries fit one page).
    async fn list(&self, path_and_query: &str) -> Vec<Value> {
        let page = self.get(path_and_query).await;
        assert!(page["next"].is_null(), "{path_and_query}: more than one page");
        page["results"].as_array().unwrap().clone()
    }

    async fn post(&self, path: &str, body: &Value) -> Value {
        let resp = self
            .http
            .post(self.url.join(path).unwrap())
            .header("Authorization", self.auth())
            .json(body)
            .send()
            .await
            .unwrap();
        let status = resp.status();
        let v: Value = resp.json().await.unwrap();
        assert_eq!(status.as_u16(), 201, "POST {path}: {v}");
        v
    }

    async fn devices_with_serial(&self, serial: &str) -> Vec<Value> {
        self.list(&format!("api/dcim/devices/?serial={serial}")).await
    }
}

/// 8 random upper-case hex digits, different per call and per run.
fn tag() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let seed = (
        std::time::SystemTime::now(),
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
    );
    let h = std::collections::hash_map::RandomState::new().hash_one(seed);
    format!("{:08X}", h as u32)
}

/// A locally administered unicast MAC.
fn random_mac() -> String {
    let t = tag().to_lowercase();
    format!("02:47:{}:{}:{}:{}", &t[0..2], &t[2..4], &t[4..6], &t[6..8])
}

fn desired(t: &str, site: &str, position: u32, mac: &str) -> DesiredDevice {
    DesiredDevice {
        key: format!("it-{t}"),
        serial: format!("GTIT{t}"),
        asset_tag: None,
        vendor: VENDOR.into(),
        model: MODEL.into(),
        part_number: Some("GTR1K-PN-01".into()),
        hostname: Some(format!("gt-it-{}", t.to_lowercase())),
        location: Some(DesiredLocation {
            site: site.into(),
            room: None,
            rack: "R07".into(),
            position: Some(position),
            face: Face::Front,
        }),
        macs: vec![DesiredMac {
            address: mac.into(),
            interface_name: "eth0".into(),
            management: false,
        }],
        power_watts: None,
        last_seen: None,
        evidence: vec!["test fixture".into()],
    }
}

fn summary(r: &SyncReport) -> String {
    let changes: Vec<String> = r
        .changes
        .iter()
        .map(|c| {
            let f: Vec<String> = c
                .fields
                .iter()
                .map(|f| format!("{}: {} -> {}", f.field, f.old.as_deref().unwrap_or("-"), f.new))
                .collect();
            format!("{} {} {} [{}]", c.action, c.object, c.target, f.join(", "))
        })
        .collect();
    format!(
        "writes={} changes={} exceptions={:?} failures={:?}\n  {}",
        r.writes,
        r.changes.len(),
        r.exceptions,
        r.failures,
        changes.join("\n  ")
    )
}

fn assert_clean(r: &SyncReport) {
    assert!(r.failures.is_empty(), "{}", summary(r));
    assert!(r.exceptions.is_empty(), "{}", summary(r));
}

#[tokio::test]
async fn sync_creates_device_with_placement_and_mac_object() {
    let Some(p) = peer("netbox_create") else { return };
    let t = tag();
    let site = format!("GT-Test-{t}");
    let mac = random_mac();
    let dev = desired(&t, &site, 12, &mac);
    let nb = p.netbox();

    // A dry run plans everything and writes nothing.
    let plan = nb.sync(std::slice::from_ref(&dev), true).await.unwrap();
    eprintln!("dry run: {}", summary(&plan));
    assert_clean(&plan);
    assert_eq!(plan.writes, 0);
    let planned: Vec<(&str, &str)> = plan
        .changes
        .iter()
        .map(|c| (c.object.as_str(), c.action.as_str()))
        .collect();
    for want in [
        ("site", "create"),
        ("rack", "create"),
        ("device", "create"),
        ("interface", "create"),
        ("mac_address", "create"),
        ("interface", "update"),
    ] {
        assert!(planned.contains(&want), "{want:?} missing from {planned:?}");
    }
    assert!(
        p.devices_with_serial(&dev.serial).await.is_empty(),
        "the dry run wrote a device"
    );

    let r = nb.sync(std::slice::from_ref(&dev), false).await.unwrap();
    eprintln!("apply: {}", summary(&r));
    assert_clean(&r);
    assert!(r.writes >= 6, "{}", summary(&r));

    let found = p.devices_with_serial(&dev.serial).await;
    assert_eq!(found.len(), 1, "{found:?}");
    let d = &found[0];
    assert_eq!(d["serial"], json!(dev.serial));
    assert_eq!(d["name"], json!(dev.hostname.as_deref().unwrap()));
    assert_eq!(d["site"]["name"], json!(site));
    assert_eq!(d["site"]["slug"], json!(format!("gt-test-{}", t.to_lowercase())));
    assert_eq!(d["rack"]["name"], json!("R07"));
    assert_eq!(d["position"].as_f64(), Some(12.0), "{}", d["position"]);
    assert_eq!(d["face"]["value"], json!("front"));
    assert_eq!(d["status"]["value"], json!("active"));
    assert_eq!(d["role"]["slug"], json!("server"));
    assert_eq!(d["device_type"]["model"], json!(MODEL));
    let id = d["id"].as_u64().unwrap();

    let ifaces = p.list(&format!("api/dcim/interfaces/?device_id={id}")).await;
    assert_eq!(ifaces.len(), 1, "{ifaces:?}");
    let iface = &ifaces[0];
    assert_eq!(iface["name"], json!("eth0"));
    assert_eq!(iface["type"]["value"], json!("1000base-t"));
    assert_eq!(iface["mgmt_only"], json!(false));

    let macs = p.list(&format!("api/dcim/mac-addresses/?device_id={id}")).await;
    assert_eq!(macs.len(), 1, "{macs:?}");
    let m = &macs[0];
    assert!(
        m["mac_address"].as_str().unwrap().eq_ignore_ascii_case(&mac),
        "{m}"
    );
    assert_eq!(m["assigned_object_type"], json!("dcim.interface"));
    assert_eq!(m["assigned_object_id"], iface["id"]);
    assert_eq!(iface["primary_mac_address"]["id"], m["id"], "{iface}");
    eprintln!(
        "NetBox device {id}: site={} rack={} position={} face={} mac={} on interface {} (primary)",
        d["site"]["name"],
        d["rack"]["name"],
        d["position"],
        d["face"]["value"],
        m["mac_address"],
        iface["id"]
    );
}

#[tokio::test]
async fn second_sync_with_same_input_makes_no_writes() {
    let Some(p) = peer("netbox_idempotent") else {
        return;
    };
    let t = tag();
    let mut dev = desired(&t, &format!("GT-Test-{t}"), 20, &random_mac());
    dev.asset_tag = Some(format!("GT-AT-{t}"));
    dev.macs.push(DesiredMac {
        address: random_mac().to_uppercase(),
        interface_name: "bmc".into(),
        management: true,
    });
    let nb = p.netbox();

    let first = nb.sync(std::slice::from_ref(&dev), false).await.unwrap();
    assert_clean(&first);
    assert!(first.writes > 0);

    let second = nb.sync(std::slice::from_ref(&dev), false).await.unwrap();
    eprintln!("second sync: {}", summary(&second));
    assert_clean(&second);
    assert_eq!(second.writes, 0, "{}", summary(&second));
    assert!(second.changes.is_empty(), "{}", summary(&second));

    let dry = nb.sync(std::slice::from_ref(&dev), true).await.unwrap();
    assert!(dry.changes.is_empty() && dry.writes == 0, "{}", summary(&dry));

    let d = &p.devices_with_serial(&dev.serial).await[0];
    assert_eq!(d["asset_tag"], json!(format!("GT-AT-{t}")));
    let id = &d["id"];
    let bmc = p
        .list(&format!("api/dcim/interfaces/?device_id={id}&name=bmc"))
        .await;
    assert_eq!(bmc.len(), 1);
    assert_eq!(bmc[0]["mgmt_only"], json!(true));
    assert!(!bmc[0]["primary_mac_address"].is_null(), "{}", bmc[0]);
}

#[tokio::test]
async fn position_change_is_exactly_one_device_update_then_nothing() {
    let Some(p) = peer("netbox_move") else { return };
    let t = tag();
    let mut dev = desired(&t, &format!("GT-Test-{t}"), 12, &random_mac());
    let nb = p.netbox();
    let first = nb.sync(std::slice::from_ref(&dev), false).await.unwrap();
    assert_clean(&first);

    if let Some(loc) = dev.location.as_mut() {
        loc.position = Some(14);
    }
    let moved = nb.sync(std::slice::from_ref(&dev), false).await.unwrap();
    eprintln!("move: {}", summary(&moved));
    assert_clean(&moved);
    assert_eq!(moved.changes.len(), 1, "{}", summary(&moved));
    let c = &moved.changes[0];
    assert_eq!((c.object.as_str(), c.action.as_str()), ("device", "update"));
    assert_eq!(c.fields.len(), 1, "{:?}", c.fields);
    assert_eq!(
        (
            c.fields[0].field.as_str(),
            c.fields[0].old.as_deref(),
            c.fields[0].new.as_str()
        ),
        ("position", Some("12"), "14")
    );
    // The PATCH and the journal entry saying what moved and why.
    assert_eq!((moved.writes, moved.journal_entries), (2, 1));
    assert_eq!(
        p.devices_with_serial(&dev.serial).await[0]["position"].as_f64(),
        Some(14.0)
    );

    let again = nb.sync(std::slice::from_ref(&dev), false).await.unwrap();
    assert_clean(&again);
    assert_eq!(again.writes, 0, "{}", summary(&again));
    assert!(again.changes.is_empty(), "{}", summary(&again));
}

#[tokio::test]
async fn occupied_position_is_an_exception_not_a_failed_write() {
    let Some(p) = peer("netbox_occupied") else { return };
    let t = tag();
    let site = format!("GT-Test-{t}");
    let a = desired(&t, &site, 30, &random_mac());
    let t2 = tag();
    let mut b = desired(&t2, &site, 31, &random_mac());
    let nb = p.netbox();
    let r = nb.sync(&[a.clone(), b.clone()], false).await.unwrap();
    assert_clean(&r);

    // b moves onto a's U: alone (NetBox's rack elevation shows a there), then together with a
    // (a's claim in this run).
    if let Some(loc) = b.location.as_mut() {
        loc.position = Some(30);
    }
    for batch in [vec![b.clone()], vec![a.clone(), b.clone()]] {
        let r = nb.sync(&batch, false).await.unwrap();
        eprintln!("conflict ({} devices): {}", batch.len(), summary(&r));
        assert!(r.failures.is_empty(), "{}", summary(&r));
        assert_eq!(r.writes, 0, "{}", summary(&r));
        assert_eq!(r.exceptions.len(), 1, "{}", summary(&r));
        assert_eq!(r.exceptions[0].kind, "position_occupied");
        assert_eq!(r.exceptions[0].device_key, b.key);
        assert_eq!(
            p.devices_with_serial(&b.serial).await[0]["position"].as_f64(),
            Some(31.0)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_syncs_creating_the_same_new_objects_both_succeed() {
    let Some(p) = peer("netbox_race") else { return };
    let t = tag();
    let site = format!("GT-Test-{t}");
    // A new vendor, model and role too, so both runs race on every shared object.
    let (mut a, mut b) = (
        desired(&t, &site, 1, &random_mac()),
        desired(&tag(), &site, 3, &random_mac()),
    );
    for d in [&mut a, &mut b] {
        d.vendor = format!("GT Race {t}");
        d.model = format!("Racer {t}");
    }
    let netbox = || {
        let mut cfg = NetBoxConfig::new(p.url.clone(), p.token.clone());
        cfg.device_role = format!("gt-race-{}", t.to_lowercase());
        NetBox::new(cfg).unwrap()
    };
    let (na, nb) = (netbox(), netbox());
    let (ra, rb) = tokio::join!(
        na.sync(std::slice::from_ref(&a), false),
        nb.sync(std::slice::from_ref(&b), false)
    );
    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    eprintln!("racer a: {}\nracer b: {}", summary(&ra), summary(&rb));
    assert!(ra.failures.is_empty() && rb.failures.is_empty());
    // Both devices ended up in the same site and rack.
    let (da, db) = (
        &p.devices_with_serial(&a.serial).await[0],
        &p.devices_with_serial(&b.serial).await[0],
    );
    assert_eq!(da["site"]["id"], db["site"]["id"]);
    assert_eq!(da["rack"]["id"], db["rack"]["id"], "a: {da}\nb: {db}");
    assert_eq!(da["device_type"]["id"], db["device_type"]["id"]);
    // And the next run of either is quiet.
    let again = na.sync(&[a, b], false).await.unwrap();
    assert_clean(&again);
    assert_eq!(again.writes, 0, "{}", summary(&again));
}

#[tokio::test]
async fn taken_asset_tag_and_mac_are_exceptions_and_the_rest_is_written() {
    let Some(p) = peer("netbox_taken") else { return };
    let t = tag();
    let site = format!("GT-Test-{t}");
    let shared_mac = random_mac();
    let mut a = desired(&t, &site, 40, &shared_mac);
    a.asset_tag = Some(format!("GT-AT-{t}"));
    let nb = p.netbox();
    assert_clean(&nb.sync(std::slice::from_ref(&a), false).await.unwrap());

    // b claims a's asset tag and a's MAC (on its own eth0) and brings one MAC of its own.
    let own_mac = random_mac();
    let mut b = desired(&tag(), &site, 41, &shared_mac);
    b.asset_tag = a.asset_tag.clone();
    b.macs.push(DesiredMac {
        address: own_mac.clone(),
        interface_name: "eth1".into(),
        management: false,
    });
    let r = nb.sync(std::slice::from_ref(&b), false).await.unwrap();
    eprintln!("taken: {}", summary(&r));
    assert!(r.failures.is_empty(), "{}", summary(&r));
    let kinds: Vec<&str> = r.exceptions.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(
        kinds,
        ["asset_tag_in_use", "mac_assigned_elsewhere"],
        "{}",
        summary(&r)
    );
    let d = &p.devices_with_serial(&b.serial).await[0];
    assert!(d["asset_tag"].is_null(), "{d}");
    assert_eq!(d["position"].as_f64(), Some(41.0));
    let macs = p
        .list(&format!("api/dcim/mac-addresses/?device_id={}", d["id"]))
        .await;
    let macs: Vec<String> = macs
        .iter()
        .map(|m| m["mac_address"].as_str().unwrap().to_lowercase())
        .collect();
    assert_eq!(macs, [own_mac], "the shared MAC must stay on device a only");
    let ifaces = p
        .list(&format!("api/dcim/interfaces/?device_id={}", d["id"]))
        .await;
    let names: Vec<&str> = ifaces.iter().map(|i| i["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["eth1"], "no interface is created for a refused MAC");

    // The conflicts stay conflicts, and nothing is rewritten.
    let again = nb.sync(std::slice::from_ref(&b), false).await.unwrap();
    assert_eq!(again.writes, 0, "{}", summary(&again));
    assert_eq!(again.exceptions.len(), 2, "{}", summary(&again));
}

#[tokio::test]
async fn duplicate_serial_in_netbox_is_an_exception_without_writes() {
    let Some(p) = peer("netbox_duplicate_serial") else {
        return;
    };
    let t = tag();
    let site = format!("GT-Test-{t}");
    let slug = format!("gt-test-{}", t.to_lowercase());
    let s = p
        .post(
            "api/dcim/sites/",
            &json!({"name": site, "slug": slug, "status": "active"}),
        )
        .await;
    let rack = p
        .post(
            "api/dcim/racks/",
            &json!({"name": "R07", "site": s["id"], "status": "active", "u_height": 42}),
        )
        .await;
    let m = p
        .post(
            "api/dcim/manufacturers/",
            &json!({"name": format!("GT Dup {t}"), "slug": format!("gt-dup-{slug}")}),
        )
        .await;
    let dt = p
        .post(
            "api/dcim/device-types/",
            &json!({"manufacturer": m["id"], "model": "Dup", "slug": "dup", "u_height": 1}),
        )
        .await;
    let role = p
        .post(
            "api/dcim/device-roles/",
            &json!({"name": format!("GT Dup {t}"), "slug": format!("gt-dup-{slug}"), "color": "ff0000"}),
        )
        .await;
    let serial = format!("GTIT{t}");
    let mut ids = Vec::new();
    // Same serial twice (once in lower case: NetBox's filter is case-insensitive, the match
    // compares normalised serials) and a longer serial that must not match.
    for sn in [serial.clone(), serial.to_lowercase(), format!("{serial}X")] {
        let d = p
            .post(
                "api/dcim/devices/",
                &json!({"device_type": dt["id"], "role": role["id"], "site": s["id"], "rack": rack["id"], "serial": sn}),
            )
            .await;
        ids.push(d["id"].as_u64().unwrap());
    }

    let dev = desired(&t, &site, 5, &random_mac());
    assert_eq!(dev.serial, serial);
    let r = p.netbox().sync(std::slice::from_ref(&dev), false).await.unwrap();
    eprintln!("duplicate: {}", summary(&r));
    assert_eq!(r.writes, 0, "{}", summary(&r));
    assert!(r.changes.is_empty(), "{}", summary(&r));
    assert!(r.failures.is_empty(), "{}", summary(&r));
    assert_eq!(r.exceptions.len(), 1, "{}", summary(&r));
    let e = &r.exceptions[0];
    assert_eq!(e.kind, "duplicate_serial_in_cmdb");
    assert_eq!(e.device_key, dev.key);
    assert!(
        e.detail.contains(&ids[0].to_string()) && e.detail.contains(&ids[1].to_string()),
        "{}",
        e.detail
    );
    assert!(!e.detail.contains(&ids[2].to_string()), "{}", e.detail);
    for id in &ids[..2] {
        let d = p.get(&format!("api/dcim/devices/{id}/")).await;
        assert!(d["position"].is_null() && d["name"].is_null(), "{d}");
    }
}

#[tokio::test]
async fn wrong_token_is_unauthorized_and_legacy_token_is_accepted() {
    let Some(p) = peer("netbox_auth") else { return };
    for bad in [
        "nbt_wrongkey0000.0123456789abcdefghijABCDEFGHIJ0123456789",
        "0000000000000000000000000000000000000000",
    ] {
        let err = p.netbox_with_token(bad).sync(&[], true).await.unwrap_err();
        eprintln!("token {}…: {err}", &bad[..6]);
        assert!(
            matches!(
                err,
                CmdbError::Unauthorized {
                    status: 401 | 403,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(!err.to_string().contains(bad), "the error shows the token: {err}");
    }
    // A legacy v1 token goes out as `Authorization: Token …`.
    if let Some(v1) = Peers::load().get("GT_NETBOX_TOKEN_V1") {
        let r = p.netbox_with_token(v1).sync(&[], true).await.unwrap();
        assert_eq!(r.writes, 0);
    }
}

#[tokio::test]
async fn unreachable_netbox_names_the_url() {
    init_tls();
    let port = groundtruth_tests::free_port();
    let url = url::Url::parse(&format!("http://127.0.0.1:{port}/")).unwrap();
    let mut cfg = NetBoxConfig::new(url, "nbt_x.y");
    cfg.timeout = std::time::Duration::from_secs(2);
    let err = NetBox::new(cfg).unwrap().sync(&[], true).await.unwrap_err();
    eprintln!("{err}");
    assert!(matches!(err, CmdbError::Unreachable { .. }), "{err:?}");
    assert!(err.to_string().contains(&format!("127.0.0.1:{port}")), "{err}");
}

/// A scripted HTTP/1.1 server on 127.0.0.1: `answer(request_target, hit_number)` gives status,
/// extra headers and body; every request target is recorded. One request per connection.
async fn fake_netbox(
    answer: impl Fn(&str, usize) -> (u16, Vec<(&'static str, String)>, Vec<u8>) + Send + Sync + 'static,
) -> (url::Url, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = url::Url::parse(&format!("http://{}/", listener.local_addr().unwrap())).unwrap();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let mut head = Vec::new();
            let mut buf = [0u8; 4096];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match sock.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            let line = String::from_utf8_lossy(&head)
                .lines()
                .next()
                .unwrap_or("")
                .to_owned();
            let target = line.split(' ').nth(1).unwrap_or("").to_owned();
            let hit = {
                let mut seen = log.lock().unwrap();
                seen.push(target.clone());
                seen.iter().filter(|t| **t == target).count()
            };
            let (status, headers, body) = answer(&target, hit);
            let mut resp =
                format!("HTTP/1.1 {status} X\r\nConnection: close\r\nContent-Type: application/json\r\n");
            for (k, v) in headers {
                resp.push_str(&format!("{k}: {v}\r\n"));
            }
            resp.push_str("\r\n");
            let _ = sock.write_all(resp.as_bytes()).await;
            let _ = sock.write_all(&body).await;
            let _ = sock.shutdown().await;
        }
    });
    (url, seen)
}

#[tokio::test]
async fn retries_503_with_retry_after_and_follows_next_links_onto_the_configured_url() {
    init_tls();
    let (url, seen) = fake_netbox(|target, hit| {
        let ok = |v: Value| (200, vec![], v.to_string().into_bytes());
        if target.starts_with("/api/status/") {
            if hit == 1 {
                return (
                    503,
                    vec![("Retry-After", "0".to_owned())],
                    b"{\"detail\": \"maintenance\"}".to_vec(),
                );
            }
            return ok(json!({"netbox-version": "4.7.3"}));
        }
        if target.starts_with("/api/authentication-check/") {
            return ok(json!({"username": "x"}));
        }
        if target.starts_with("/api/extras/custom-fields/") {
            return ok(json!({"count": 1, "next": null, "results": [{"id": 1}]}));
        }
        if target.starts_with("/api/dcim/devices/") && !target.contains("offset=") {
            // NetBox builds `next` from the Host it saw: here a name that does not resolve.
            let next =
                "http://netbox.internal.invalid:8000/api/dcim/devices/?limit=1000&offset=1000&serial=GTFAKE1";
            return ok(json!({"count": 1001, "next": next, "results": []}));
        }
        if target.starts_with("/api/dcim/devices/") {
            return ok(json!({"count": 1001, "next": null, "results": [{"id": 7, "serial": "GTFAKE1"}]}));
        }
        (404, vec![], b"{}".to_vec())
    })
    .await;
    let dev = DesiredDevice {
        location: None,
        macs: vec![],
        serial: "GTFAKE1".into(),
        ..desired("FAKE", "x", 1, "")
    };
    let r = NetBox::new(NetBoxConfig::new(url, "nbt_x.y"))
        .unwrap()
        .sync(&[dev], false)
        .await
        .unwrap();
    let seen = seen.lock().unwrap().clone();
    eprintln!("requests: {seen:?}");
    assert_eq!(
        seen.iter().filter(|t| t.starts_with("/api/status/")).count(),
        2,
        "{seen:?}"
    );
    assert!(
        seen.iter().any(|t| t.contains("offset=1000")),
        "second page not fetched: {seen:?}"
    );
    // The one device on page 2 already matches: nothing to write, nothing to report.
    assert_eq!(
        (r.writes, r.changes.len(), r.exceptions.len(), r.failures.len()),
        (0, 0, 0, 0),
        "{}",
        summary(&r)
    );
}

#[tokio::test]
async fn oversized_response_body_is_refused_not_buffered() {
    init_tls();
    // 9 MiB without Content-Length: the client must stop reading at its 8 MiB cap.
    let (url, _) = fake_netbox(|_, _| (200, vec![], vec![b' '; 9 * 1024 * 1024])).await;
    let err = NetBox::new(NetBoxConfig::new(url, "nbt_x.y"))
        .unwrap()
        .sync(&[], true)
        .await
        .unwrap_err();
    eprintln!("{err}");
    assert!(matches!(err, CmdbError::Malformed { .. }), "{err:?}");
    assert!(err.to_string().contains("larger than"), "{err}");
}

/// `groundtruth-collector site-map-import` reads NetBox's racks (site, location as room, name,
/// height) and prints a site map the collector's own parser accepts: the CMDB's racks become the
/// starting site map.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn site_map_import_prints_netbox_racks_as_a_valid_site_map() {
    let Some(p) = peer("netbox_site_map_import") else {
        return;
    };
    let Some(bin) = groundtruth_tests::binary("groundtruth-collector") else {
        assert!(
            std::env::var("GT_REQUIRE_PEERS").as_deref() != Ok("1"),
            "collector binary not built"
        );
        eprintln!("SKIP: site_map_import: groundtruth-collector binary not built");
        return;
    };
    let t = tag();
    let site = format!("GT-Imp-{t}");
    let s = p
        .post(
            "api/dcim/sites/",
            &json!({"name": site, "slug": format!("gt-imp-{}", t.to_lowercase()), "status": "active"}),
        )
        .await;
    let room = format!("Hall \"{t}\"");
    let loc = p
        .post(
            "api/dcim/locations/",
            &json!({"name": room, "slug": format!("hall-{}", t.to_lowercase()), "site": s["id"], "status": "active"}),
        )
        .await;
    p.post(
        "api/dcim/racks/",
        &json!({"name": "R07", "site": s["id"], "location": loc["id"], "status": "active", "u_height": 47}),
    )
    .await;
    p.post(
        "api/dcim/racks/",
        &json!({"name": "R08", "site": s["id"], "status": "active", "u_height": 42}),
    )
    .await;
    // NetBox allows a second R07 in the same site (another location); the site map cannot.
    let loc2 = p
        .post(
            "api/dcim/locations/",
            &json!({"name": format!("Annex {t}"), "slug": format!("annex-{}", t.to_lowercase()), "site": s["id"], "status": "active"}),
        )
        .await;
    p.post(
        "api/dcim/racks/",
        &json!({"name": "R07", "site": s["id"], "location": loc2["id"], "status": "active", "u_height": 42}),
    )
    .await;

    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("collector.toml");
    std::fs::write(
        &cfg,
        format!(
            "[collector]\ndatabase = {:?}\nlisten_http = \"off\"\n\n[netbox]\nurl = {:?}\ntoken = {{ env = \"GT_IMPORT_NB_TOKEN\" }}\n",
            dir.path().join("state.db"),
            p.url.as_str()
        ),
    )
    .unwrap();
    let out = std::process::Command::new(&bin)
        .args(["site-map-import", "-c", cfg.to_str().unwrap(), "--log", "warn"])
        .env("GT_IMPORT_NB_TOKEN", &p.token)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!text.contains(&p.token), "the token leaked into the output");
    assert!(
        stderr.contains(&format!("left out rack \"R07\" of site \"{site}\"")),
        "the second R07 is reported: {stderr}"
    );
    let map = groundtruth_collector::sitemap::SiteMap::parse(&text, "imported.toml")
        .unwrap_or_else(|e| panic!("{e:?}\n{text}"));
    // One R07 is in the map (whichever NetBox listed first), the other is reported by its room.
    let r07 = map.rack(&site, "R07").expect("R07 imported");
    let annex = format!("Annex {t}");
    let (kept, left_out) = if r07.room == room {
        assert_eq!(r07.height, 47);
        (room.as_str(), annex.as_str())
    } else {
        assert_eq!((r07.room.as_str(), r07.height), (annex.as_str(), 42));
        (annex.as_str(), room.as_str())
    };
    assert!(
        stderr.contains(&format!("in room {:?}", left_out)),
        "{kept} kept, {left_out} reported: {stderr}"
    );
    let r08 = map.rack(&site, "R08").expect("R08 imported");
    assert_eq!((r08.room.as_str(), r08.height), ("", 42));
}
