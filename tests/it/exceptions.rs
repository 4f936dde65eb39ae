//! Exception log end to end (issue #9), with the collector and agent as real processes and the
//! DMTF rackmount1 mockup (sushy-tools) as the device: its Redfish Placement says rack WEB43 U12,
//! the site map says U20 — two sources of similar strength disagree, so the collector (no CMDB
//! configured: its own checks) opens ONE `location_conflict` naming both sides. An operator pins
//! the device through the HTTP API (who and why recorded); the conflict ends and stays ended
//! after the next poll; the audit trail shows it through the CLI; unpinning brings the conflict
//! back. Beside it, an appliance (a private snmpsim serving our own recording) whose serial is the
//! BIOS placeholder `To Be Filled By O.E.M.` lands in the log as `no_usable_identity`, and an
//! operator's "ignore" keeps it out of the log across later polls.

use std::time::Duration;

use groundtruth_tests::proc::Proc;
use groundtruth_tests::{Peers, TestDb, binary, free_port, init_tls};

struct Api {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl Api {
    async fn get(&self, path: &str) -> serde_json::Value {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "GET {path}: {}", r.status());
        r.json().await.unwrap()
    }

    async fn post(&self, path: &str, body: &serde_json::Value) -> (u16, String) {
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .json(body)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    /// Open exceptions of `kind` for `device`, waiting up to `within` for `want` of them.
    async fn conflicts(&self, device: &str, want: usize, within: Duration) -> Vec<serde_json::Value> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let all = self.get("/api/exceptions").await;
            let hits: Vec<serde_json::Value> = all
                .as_array()
                .unwrap()
                .iter()
                .filter(|e| e["device_key"] == device && e["kind"] == "location_conflict")
                .cloned()
                .collect();
            if hits.len() == want || tokio::time::Instant::now() > deadline {
                return hits;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
}

groundtruth_tests::on_both_stores!(
    conflict_is_one_exception_and_a_pin_through_the_api_ends_it_with_an_audit_trail
);

async fn conflict_is_one_exception_and_a_pin_through_the_api_ends_it_with_an_audit_trail(t: TestDb) {
    let p = Peers::load();
    let Some([base]) = p.require("exceptions_actions", ["GT_REDFISH_SHARED_BASE_PORT"]) else {
        return;
    };
    let (Some(agent_bin), Some(collector_bin)) =
        (binary("groundtruth-agent"), binary("groundtruth-collector"))
    else {
        let msg = "SKIP: exceptions_actions: binaries not built (cargo build --bins)";
        assert!(std::env::var("GT_REQUIRE_PEERS").as_deref() != Ok("1"), "{msg}");
        eprintln!("{msg}");
        return;
    };
    let Some(sim) = groundtruth_tests::PrivateSnmpsim::start() else {
        let msg = "SKIP: exceptions_actions: snmpsim venv not installed (tests/peers/snmpsim/start.sh)";
        assert!(std::env::var("GT_REQUIRE_PEERS").as_deref() != Ok("1"), "{msg}");
        eprintln!("{msg}");
        return;
    };
    init_tls();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (grpc, http) = (free_port(), free_port());
    std::fs::write(d.join("api.token"), "exc-token-1\n").unwrap();
    std::fs::write(
        d.join("site-map.toml"),
        "[[rack]]\nsite = \"EXC\"\nroom = \"H1\"\nname = \"WEB43\"\n\n[[device]]\nserial = \"437XR1138R2\"\nsite = \"EXC\"\nrack = \"WEB43\"\nu = 20\n",
    )
    .unwrap();
    let collector_cfg = d.join("collector.toml");
    std::fs::write(
        &collector_cfg,
        format!(
            "[collector]\nlisten_grpc = \"127.0.0.1:{grpc}\"\nlisten_http = \"127.0.0.1:{http}\"\napi_token = {{ file = {:?} }}\n\
             {}default_site = \"EXC\"\n\n[location]\nsite_map = {:?}\n",
            d.join("api.token"),
            t.config_line(),
            d.join("site-map.toml")
        ),
    )
    .unwrap();
    let agent_cfg = d.join("agent.toml");
    std::fs::write(
        &agent_cfg,
        format!(
            "[agent]\nid = \"exc-agent\"\nsite = \"EXC\"\nmetrics_listen = \"off\"\nstate_dir = {:?}\n\n[collector]\ngrpc = \"http://127.0.0.1:{grpc}\"\n\n\
             [defaults]\ntimeout = \"5s\"\n\n[[targets]]\nname = \"rackmount1\"\nurl = \"redfish://127.0.0.1:{base}?insecure\"\n\n\
             [[targets]]\nname = \"appliance\"\nurl = \"snmp://gt-junk-serial@{}\"\n",
            d.join("agent-state"),
            sim.addr
        ),
    )
    .unwrap();
    let _collector = Proc::spawn(
        &collector_bin,
        &[
            "serve",
            "--config",
            collector_cfg.to_str().unwrap(),
            "--log",
            "warn",
        ],
        &d.join("collector.log"),
    )
    .unwrap();
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(("127.0.0.1", http)).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let poll_once = || {
        let out = std::process::Command::new(&agent_bin)
            .args([
                "run",
                "--once",
                "--config",
                agent_cfg.to_str().unwrap(),
                "--log",
                "warn",
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "agent: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let api = Api {
        base: format!("http://127.0.0.1:{http}"),
        token: "exc-token-1".into(),
        http: reqwest::Client::new(),
    };
    let device = "serial:437XR1138R2";

    // One conflict, naming both sides.
    poll_once();
    let open = api.conflicts(device, 1, Duration::from_secs(20)).await;
    assert_eq!(open.len(), 1, "one location_conflict for {device}: {open:?}");
    let detail = open[0]["detail"].as_str().unwrap();
    assert!(
        detail.contains("U12") && detail.contains("U20") && detail.contains("WEB43"),
        "both sides named: {detail}"
    );
    let id = open[0]["id"].as_i64().unwrap();

    // The placeholder serial is no identity: an exception, not a device in the CMDB's eyes.
    let junk = api
        .get("/api/exceptions")
        .await
        .as_array()
        .unwrap()
        .iter()
        .find(|e| {
            e["kind"] == "no_usable_identity"
                && e["device_key"].as_str().is_some_and(|k| k.contains("snmp://"))
        })
        .cloned()
        .expect("no_usable_identity for the appliance with serial 'To Be Filled By O.E.M.'");
    assert!(
        !api.get("/api/devices")
            .await
            .to_string()
            .contains("serial:TO BE FILLED"),
        "the placeholder became a serial key"
    );
    let junk_id = junk["id"].as_i64().unwrap();
    let (code, text) = api
        .post(
            &format!("/api/exceptions/{junk_id}/ignore"),
            &serde_json::json!({"actor": "bob", "note": "vendor appliance, no serial"}),
        )
        .await;
    assert_eq!(code, 200, "{text}");

    // Refusals are clear: no actor; no rack; unknown id.
    let (code, text) = api
        .post(
            &format!("/api/exceptions/{id}/pin"),
            &serde_json::json!({"site": "EXC", "rack": "WEB43"}),
        )
        .await;
    assert_eq!(code, 400, "{text}");
    let (code, text) = api
        .post(
            &format!("/api/exceptions/{id}/pin"),
            &serde_json::json!({"actor": "alice", "site": "EXC", "rack": ""}),
        )
        .await;
    assert_eq!((code, text.contains("site and a rack")), (400, true), "{text}");
    let (code, _) = api
        .post(
            "/api/exceptions/999999/accept",
            &serde_json::json!({"actor": "alice"}),
        )
        .await;
    assert_eq!(code, 404);

    // The pin: the operator counted U20 on the floor.
    let (code, text) = api
        .post(
            &format!("/api/exceptions/{id}/pin"),
            &serde_json::json!({"actor": "alice", "note": "counted on the floor", "site": "EXC", "rack": "WEB43", "u": 20}),
        )
        .await;
    assert_eq!(code, 200, "{text}");
    assert!(api.conflicts(device, 0, Duration::from_secs(1)).await.is_empty());
    let devices = api.get("/api/devices").await;
    let dev = devices
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["device_key"] == device)
        .unwrap();
    assert!(
        dev["locations"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["source"] == "LOCATION_SOURCE_MANUAL" && e["u_position"] == 20),
        "{dev}"
    );
    // The next poll brings the Redfish U12 again: the pin still wins, no new conflict; the
    // ignored appliance stays out of the log.
    poll_once();
    tokio::time::sleep(Duration::from_secs(7)).await;
    assert!(
        api.conflicts(device, 0, Duration::from_secs(1)).await.is_empty(),
        "the pin did not hold"
    );
    assert!(
        !api.get("/api/exceptions")
            .await
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "no_usable_identity"),
        "the ignored exception came back"
    );

    // The audit trail, through the CLI (same database, while the collector runs).
    let out = std::process::Command::new(&collector_bin)
        .args([
            "exceptions",
            "-c",
            collector_cfg.to_str().unwrap(),
            "audit",
            "--device",
            device,
        ])
        .output()
        .unwrap();
    let audit = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        audit.contains("pin")
            && audit.contains("by alice")
            && audit.contains("counted on the floor")
            && audit.contains("U20"),
        "{audit}"
    );
    let out = std::process::Command::new(&collector_bin)
        .args([
            "exceptions",
            "-c",
            collector_cfg.to_str().unwrap(),
            "accept",
            "999999",
            "--by",
            "bob",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "accepting an unknown exception fails");

    // Unpin: the disagreement is back as an exception.
    let (code, text) = api
        .post(
            "/api/pins/remove",
            &serde_json::json!({"actor": "alice", "device_key": device}),
        )
        .await;
    assert_eq!(code, 200, "{text}");
    poll_once();
    let back = api.conflicts(device, 1, Duration::from_secs(20)).await;
    assert_eq!(back.len(), 1, "conflict raised again after unpin");
    let trail = api.get(&format!("/api/exceptions/audit?device={device}")).await;
    let actions: Vec<&str> = trail
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a["action"].as_str())
        .collect();
    assert_eq!(actions, ["unpin", "pin"], "{trail}");
}
