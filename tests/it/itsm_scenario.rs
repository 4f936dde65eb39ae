//! Issue #13's proof, end to end with the real peers: the agent polls the DMTF rackmount1 and
//! tower mockups (shared sushy-tools) and a private sushy-static serving a temporary copy of the
//! DMTF PDU mockup (so the test can raise an outlet's power by editing what it serves); the
//! collector syncs NetBox, computes KPIs and raises tickets in Request Tracker 5. The scripted
//! scenario — outlet power raised past the rack budget, raised again, a duplicate serial seeded
//! in NetBox, a device removed, then each cause cleared — must produce exactly three RT tickets,
//! updated and resolved as it goes, and move the KPIs as expected. At the end the
//! physical-context API answers for rackmount1 with WEB43, U12 and its rack neighbours.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, SystemTime};

use groundtruth_agent::config::Config as AgentConfig;
use groundtruth_agent::run::Agent;
use groundtruth_collector::config::NetBoxSettings;
use groundtruth_collector::ingest::IngestService;
use groundtruth_collector::itsm::{self, ItsmSettings, RtSettings, Rule, Sinks, Watch};
use groundtruth_collector::kpi;
use groundtruth_collector::reconcile::Rules;
use groundtruth_collector::sitemap::SiteMap;
use groundtruth_collector::store::Store;
use groundtruth_proto::v1::ingest_server::IngestServer;
use groundtruth_tests::{Peers, free_port, shared_peers_dir};
use serde_json::{Value, json};

use crate::itsm::{rt_get, rt_history};

const SITE_MAP: &str = r#"
[[rack]]
site = "WEBDC"
room = "35"
name = "WEB43"
power_budget_w = 10000

[[device]]
serial = "437XR1238R2"
site = "WEBDC"
rack = "WEB43"
u = 20

[[device]]
serial = "29347ZT536"
site = "WEBDC"
rack = "WEB43"

[[outlet]]
pdu = "29347ZT536"
outlet = 1
site = "WEBDC"
rack = "WEB43"
u = 12

[[outlet]]
pdu = "29347ZT536"
outlet = 2
site = "WEBDC"
rack = "WEB43"
u = 20
"#;

/// A private sushy-static serving a copy of a mockup; killed on drop.
struct Sushy {
    child: std::process::Child,
    dir: tempfile::TempDir,
    port: u16,
}

impl Drop for Sushy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

impl Sushy {
    fn start(mockup: &Path) -> Option<Self> {
        let bin = std::env::var("GT_PEERS_VENV").unwrap_or_else(|_| "/opt/gt-peers".into())
            + "/venv-redfish/bin/sushy-static";
        if !Path::new(&bin).is_file() {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        copy_dir(mockup, dir.path());
        let port = free_port();
        let child = std::process::Command::new(bin)
            .args(["-i", "127.0.0.1", "-p", &port.to_string(), "-m"])
            .arg(dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .ok()?;
        Some(Self { child, dir, port })
    }

    /// Sets a `"Reading"` of a resource's `PowerWatts` (what the PDU reports).
    fn set_power(&self, resource: &str, watts: f64) {
        let path = self.dir.path().join(resource).join("index.json");
        let mut v: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        v["PowerWatts"]["Reading"] = json!(watts);
        std::fs::write(&path, serde_json::to_string_pretty(&v).unwrap()).unwrap();
    }
}

async fn wait_listening(addr: SocketAddr) {
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("nothing listening on {addr}");
}

const METRICS: &str = "PowerEquipment/RackPDUs/1/Metrics";
const OUTLET_A1: &str = "PowerEquipment/RackPDUs/1/Outlets/A1";

struct Nb {
    url: String,
    auth: String,
    http: reqwest::Client,
}

impl Nb {
    async fn get(&self, path: &str) -> Value {
        self.http
            .get(format!("{}{path}", self.url))
            .header("Authorization", &self.auth)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Deletes the duplicates a run seeds (also left over by an interrupted earlier run).
    async fn delete_seeded(&self) {
        let v = self
            .get("/api/dcim/devices/?name__isw=gt-scenario-dup&limit=100")
            .await;
        for d in v["results"].as_array().cloned().unwrap_or_default() {
            let r = self
                .http
                .delete(format!("{}/api/dcim/devices/{}/", self.url, d["id"]))
                .header("Authorization", &self.auth)
                .send()
                .await
                .unwrap();
            assert!(r.status().is_success(), "delete seeded duplicate: {}", r.status());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::too_many_lines)]
async fn scripted_scenario_produces_the_expected_tickets_in_request_tracker_and_moves_the_kpis() {
    let p = Peers::load();
    let Some([base, names, rt_url, rt_token, rt_queue, nb_url, nb_token]) = p.require(
        "itsm_scenario",
        [
            "GT_REDFISH_SHARED_BASE_PORT",
            "GT_REDFISH_SHARED_MOCKUPS",
            "GT_RT_URL",
            "GT_RT_TOKEN",
            "GT_RT_QUEUE",
            "GT_NETBOX_URL",
            "GT_NETBOX_TOKEN",
        ],
    ) else {
        return;
    };
    let Some(pdu) = shared_peers_dir()
        .map(|d| d.join("redfish/mockups/dmtf-public-pdu"))
        .filter(|d| d.is_dir())
        .and_then(|d| Sushy::start(&d))
    else {
        println!("SKIP: itsm_scenario: the DMTF PDU mockup or sushy-static is not available");
        assert!(
            std::env::var("GT_REQUIRE_PEERS").as_deref() != Ok("1"),
            "GT_REQUIRE_PEERS=1"
        );
        return;
    };
    wait_listening(format!("127.0.0.1:{}", pdu.port).parse().unwrap()).await;
    let base: u16 = base.parse().unwrap();
    let port = |name: &str| base + u16::try_from(names.split(',').position(|n| n == name).unwrap()).unwrap();

    // The collector: ingest, store, rules with the site map.
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("state.db")).await.unwrap();
    let grpc: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let ingest_store = store.clone();
    tokio::spawn(async move {
        let (tx, _rx) = tokio::sync::watch::channel(0);
        tonic::transport::Server::builder()
            .add_service(IngestServer::new(IngestService::new(ingest_store, tx)))
            .serve(grpc)
            .await
            .unwrap();
    });
    wait_listening(grpc).await;
    let mut rules = Rules::builtin("WEBDC");
    rules.site_map = SiteMap::parse(SITE_MAP, "site-map.toml").unwrap();

    let agent = |id: &str, with_tower: bool| {
        let mut targets = format!(
            "[[targets]]\nname = \"rackmount1\"\nurl = \"redfish://127.0.0.1:{}?insecure\"\n\n\
             [[targets]]\nname = \"pdu\"\nurl = \"redfish+http://127.0.0.1:{}\"\n\n",
            port("dmtf-public-rackmount1"),
            pdu.port
        );
        if with_tower {
            targets.push_str(&format!(
                "[[targets]]\nname = \"tower\"\nurl = \"redfish://127.0.0.1:{}?insecure\"\n\n",
                port("dmtf-public-tower")
            ));
        }
        let text = format!(
            "[agent]\nid = \"{id}\"\nsite = \"WEBDC\"\nstate_dir = {:?}\n\n[collector]\ngrpc = \"http://{grpc}\"\n\n[defaults]\ntimeout = \"10s\"\n\n{targets}",
            dir.path().join(id)
        );
        Agent::new(AgentConfig::parse(&text, "agent.toml").unwrap()).unwrap()
    };
    let mut full = agent("scn-full", true);
    let mut without_tower = agent("scn-no-tower", false);

    let nb_settings = NetBoxSettings {
        url: nb_url.parse().unwrap(),
        token: nb_token.clone(),
        device_role: "server".into(),
        create_missing: true,
        sync_interval: Duration::from_secs(1),
        lease_ttl: groundtruth_collector::lease::DEFAULT_TTL,
        dry_run: false,
        tls_verify: true,
        ca_file: None,
        ownership: groundtruth_collector::cmdb::Ownership::default(),
        rate_limit: 0.0,
        journal: false,
    };
    let netbox = groundtruth_collector::netbox_client(&nb_settings).unwrap();
    let nb = Nb {
        url: nb_url.trim_end_matches('/').to_owned(),
        auth: if nb_token.starts_with("nbt_") {
            format!("Bearer {nb_token}")
        } else {
            format!("Token {nb_token}")
        },
        http: reqwest::Client::new(),
    };
    nb.delete_seeded().await;

    let settings = ItsmSettings {
        update_interval: Duration::ZERO,
        rt: Some(RtSettings {
            url: rt_url.parse().unwrap(),
            token: rt_token.clone(),
            queue: rt_queue,
        }),
        rules: vec![
            Rule {
                name: "rack-power".into(),
                watch: Watch::RackPower {
                    budget_watts: None,
                    threshold_percent: 80.0,
                },
            },
            Rule {
                name: "duplicates".into(),
                watch: Watch::Exception {
                    kinds: vec!["duplicate_serial_in_cmdb".into()],
                },
            },
            Rule {
                name: "gone".into(),
                watch: Watch::DeviceMissing {
                    after: Duration::from_secs(15),
                },
            },
        ],
        ..ItsmSettings::default()
    };
    let sinks = Sinks::new(&settings).unwrap();
    let health = kpi::HealthSettings::default();

    // One step of the collector's life: poll, sync NetBox, link, KPIs, tickets, delivery.
    macro_rules! step {
        ($agent:expr) => {{
            let s = $agent.round().await.unwrap();
            assert_eq!((s.failed, s.pending_batches), (0, 0), "{s:?}");
            let pass = groundtruth_collector::sync::run_pass(&store, &netbox, &rules, false)
                .await
                .unwrap();
            assert!(pass.report.failures.is_empty(), "{:?}", pass.report.failures);
            groundtruth_collector::context::refresh_cmdb_links(&store, &nb_settings)
                .await
                .unwrap();
            let k = kpi::record(&store, &rules, &health).await.unwrap();
            let now = SystemTime::now();
            let e = itsm::evaluate(&store, &rules, &settings, now).await.unwrap();
            let d = itsm::deliver(&store, &sinks, &settings, now).await.unwrap();
            assert_eq!((d.dead, d.retried), (0, 0), "{d:?}");
            (e, k)
        }};
    }

    // S0: all quiet. The PDU reports 6438 W against WEB43's 10000 W budget (64 %).
    let (e, k0) = step!(full);
    assert_eq!((e.opened, e.active), (0, 0), "{e:?}");
    assert_eq!(k0.devices_seen, 3);
    assert_eq!(k0.duplicates_by_source["cmdb"], 0);
    assert_eq!(k0.location_coverage, 2.0 / 3.0, "{k0:?}");

    // S1: outlet A1 (rackmount1's) jumps by 3000 W, and with it the PDU's total: 94 %.
    pdu.set_power(OUTLET_A1, 3197.4);
    pdu.set_power(METRICS, 9438.0);
    let (e, _) = step!(full);
    assert_eq!((e.opened, e.updated, e.resolved), (1, 0, 0), "{e:?}");
    // S2: and by 500 W more: the ticket is updated, not duplicated.
    pdu.set_power(OUTLET_A1, 3697.4);
    pdu.set_power(METRICS, 9938.0);
    let (e, _) = step!(full);
    assert_eq!((e.opened, e.updated, e.resolved), (0, 1, 0), "{e:?}");

    // S3: a second NetBox device with rackmount1's serial.
    let real = nb.get("/api/dcim/devices/?serial=437XR1138R2").await;
    assert_eq!(real["count"], 1, "{real}");
    let r = &real["results"][0];
    let seeded = nb
        .http
        .post(format!("{}/api/dcim/devices/", nb.url))
        .header("Authorization", &nb.auth)
        .json(&json!({
            "name": format!("gt-scenario-dup-{}", SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_millis()),
            "serial": "437XR1138R2",
            "device_type": r["device_type"]["id"],
            "role": r["role"]["id"],
            "site": r["site"]["id"],
        }))
        .send()
        .await
        .unwrap();
    assert!(
        seeded.status().is_success(),
        "seeding the duplicate: {}",
        seeded.text().await.unwrap()
    );
    let (e, k3) = step!(full);
    assert_eq!((e.opened, e.resolved), (1, 0), "{e:?}");
    assert_eq!(k3.duplicates_by_source["cmdb"], 1, "{k3:?}");

    // S4: the tower is removed (no longer polled); 15 s later it is missing.
    tokio::time::sleep(Duration::from_secs(16)).await;
    let (e, _) = step!(without_tower);
    assert_eq!((e.opened, e.resolved), (1, 0), "{e:?}");

    // S5: the outlet goes back to normal: the rack-power ticket resolves.
    pdu.set_power(OUTLET_A1, 197.4);
    pdu.set_power(METRICS, 6438.0);
    let (e, _) = step!(without_tower);
    assert_eq!((e.opened, e.resolved), (0, 1), "{e:?}");
    // S6: the duplicate is deleted from NetBox: its exception and ticket resolve.
    nb.delete_seeded().await;
    let (e, k6) = step!(without_tower);
    assert_eq!((e.opened, e.resolved), (0, 1), "{e:?}");
    assert_eq!(k6.duplicates_by_source["cmdb"], 0, "{k6:?}");
    // S7: the tower is back.
    let (e, k7) = step!(full);
    assert_eq!((e.opened, e.resolved, e.active), (0, 1, 0), "{e:?}");
    assert_eq!(k7.devices_seen, 3);

    // Exactly three tickets, each in RT, each resolved, with one comment per update/resolution.
    let tickets = store.all_tickets().await.unwrap();
    let kinds: Vec<(&str, &str)> = tickets
        .iter()
        .map(|t| (t.rule.as_str(), t.subject.as_str()))
        .collect();
    assert_eq!(
        kinds,
        [
            ("rack-power", "WEBDC/WEB43"),
            ("duplicates", "serial:437XR1138R2"),
            ("gone", "serial:437XR1238R2")
        ]
    );
    let expected_comments = [2, 1, 1];
    for (t, comments) in tickets.iter().zip(expected_comments) {
        assert!(t.resolved_at.is_some(), "{t:?}");
        let id = store.ticket_ref(t.id, "rt").await.unwrap().expect("RT id");
        let rt = rt_get(&rt_url, &rt_token, &format!("/ticket/{id}")).await;
        assert_eq!(rt["Status"], "resolved", "{rt}");
        let history = rt_history(&rt_url, &rt_token, &id).await;
        let texts: Vec<&str> = history
            .iter()
            .filter(|(k, _)| k == "Comment")
            .map(|(_, x)| x.as_str())
            .collect();
        assert_eq!(texts.len(), comments, "{} {history:?}", t.rule);
        assert!(texts.last().unwrap().starts_with("cleared: "), "{texts:?}");
    }
    let rack = rt_get(
        &rt_url,
        &rt_token,
        &format!(
            "/ticket/{}",
            store.ticket_ref(tickets[0].id, "rt").await.unwrap().unwrap()
        ),
    )
    .await;
    assert!(
        rack["Subject"]
            .as_str()
            .unwrap()
            .contains("rack WEBDC/WEB43 draws 9438 W, 94 % of its 10000 W budget"),
        "{rack}"
    );
    let (delivered, pending, dead) = store.delivery_counts().await.unwrap();
    assert_eq!((delivered, pending, dead), (3 + 2 + 2, 0, 0));

    // The KPI history shows the duplicate come and go.
    let h = store.kpi_history("1970-01-01T00:00:00Z").await.unwrap();
    let dups: Vec<f64> = h
        .iter()
        .filter(|p| p.kpi == "duplicate_candidates" && p.label == "cmdb")
        .map(|p| p.value)
        .collect();
    assert_eq!(dups, [0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 0.0, 0.0], "{dups:?}");

    // The physical context of rackmount1.
    let heights = store.u_heights().await.unwrap();
    let devices = store.devices().await.unwrap();
    let readings = store.latest_readings().await.unwrap();
    let links: std::collections::HashMap<String, String> =
        store.cmdb_links().await.unwrap().into_iter().collect();
    let snap = groundtruth_collector::context::Snapshot {
        devices: &devices,
        readings: &readings,
        heights: &heights,
        cmdb_ids: &links,
        rules: &rules,
    };
    let d = groundtruth_collector::context::find(
        &snap,
        &groundtruth_collector::context::Query::Serial("437XR1138R2".into()),
    )
    .unwrap();
    let c = groundtruth_collector::context::build(snap, d);
    assert_eq!((c.location.rack.as_str(), c.location.u), ("WEB43", Some(12)));
    let neighbours: Vec<&str> = c.shares_rack.iter().map(|n| n.host.serial.as_str()).collect();
    assert!(neighbours.contains(&"437XR1238R2"), "{neighbours:?}");
    assert!(c.host.cmdb_id.is_some());
    assert_eq!(c.outlets[0].readings.power_watts, Some(197.4));
}
