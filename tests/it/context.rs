//! The physical-context API end to end with real peers: the agent polls the DMTF rackmount1,
//! tower and PDU mockups (sushy-tools), streams to an in-process collector, and
//! `GET /api/context` answers for the rackmount1 server with its rack (WEB43, U12 from its own
//! Redfish placement), the PDU outlet feeding it with the outlet power the PDU reported, the
//! circuit behind it (site map), and the hosts sharing its rack and its PDU.

use std::net::SocketAddr;
use std::time::Duration;

use groundtruth_agent::config::Config as AgentConfig;
use groundtruth_agent::run::Agent;
use groundtruth_collector::http::HttpState;
use groundtruth_collector::ingest::IngestService;
use groundtruth_collector::reconcile::Rules;
use groundtruth_collector::sitemap::SiteMap;
use groundtruth_collector::store::Store;
use groundtruth_proto::v1::ingest_server::IngestServer;
use groundtruth_tests::{Peers, free_port};
use serde_json::Value;

const SITE_MAP: &str = r#"
[[rack]]
site = "WEBDC"
room = "35"
name = "WEB43"

# The tower mockup reports no placement: the operator pins it in WEB43 at U20.
[[device]]
serial = "437XR1238R2"
site = "WEBDC"
rack = "WEB43"
u = 20

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

[[inlet]]
pdu = "29347ZT536"
inlet = 1
feed = "A"
circuit = "RPP-A1/CB-12"
"#;

async fn wait_listening(addr: SocketAddr) {
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("nothing listening on {addr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn context_api_answers_for_rackmount1_with_rack_outlet_and_neighbours() {
    let Some([base, names]) = Peers::load().require(
        "context_api",
        ["GT_REDFISH_SHARED_BASE_PORT", "GT_REDFISH_SHARED_MOCKUPS"],
    ) else {
        return;
    };
    let base: u16 = base.parse().unwrap();
    let port = |name: &str| {
        let i = names
            .split(',')
            .position(|n| n == name)
            .unwrap_or_else(|| panic!("mockup {name} not served"));
        base + u16::try_from(i).unwrap()
    };
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("state.db")).await.unwrap();
    let grpc: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let (tx, _rx) = tokio::sync::watch::channel(0);
    let ingest_store = store.clone();
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(IngestServer::new(IngestService::new(ingest_store, tx)))
            .serve(grpc)
            .await
            .unwrap();
    });
    wait_listening(grpc).await;

    let targets: String = ["dmtf-public-rackmount1", "dmtf-public-tower", "dmtf-public-pdu"]
        .iter()
        .map(|n| {
            format!(
                "[[targets]]\nname = \"{n}\"\nurl = \"redfish://127.0.0.1:{}?insecure\"\n\n",
                port(n)
            )
        })
        .collect();
    let agent_toml = format!(
        "[agent]\nid = \"ctx-agent\"\nsite = \"WEBDC\"\nstate_dir = {:?}\n\n[collector]\ngrpc = \"http://{grpc}\"\n\n[defaults]\ntimeout = \"10s\"\n\n{targets}",
        dir.path().join("agent-state")
    );
    let mut agent = Agent::new(AgentConfig::parse(&agent_toml, "ctx-agent.toml").unwrap()).unwrap();
    let s = agent.round().await.unwrap();
    assert_eq!((s.polled, s.failed, s.pending_batches), (3, 0, 0), "{s:?}");

    let mut rules = Rules::builtin("WEBDC");
    rules.site_map = SiteMap::parse(SITE_MAP, "site-map.toml").unwrap();
    let http: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let state = HttpState {
        store: store.clone(),
        ingest: std::sync::Arc::default(),
        rules,
        api_token: Some("ctx-token".into()),
        events: tokio::sync::watch::channel(0).1,
        cmdb_configured: false,
        leader: None,
    };
    tokio::spawn(groundtruth_collector::http::serve(http, state));
    wait_listening(http).await;
    let client = reqwest::Client::new();
    let get = |q: &str| {
        let req = client
            .get(format!("http://{http}/api/context?{q}"))
            .bearer_auth("ctx-token");
        async move {
            let r = req.send().await.unwrap();
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap())
        }
    };

    // By serial: the placement the server's own BMC reports, U height from the mockup.
    let (status, c) = get("serial=437XR1138R2").await;
    assert_eq!(status, 200, "{c}");
    let loc = &c["location"];
    assert_eq!(loc["status"], "located", "{c}");
    assert_eq!(
        (
            loc["site"].as_str(),
            loc["rack"].as_str(),
            loc["u"].as_u64(),
            loc["source"].as_str()
        ),
        (Some("WEBDC"), Some("WEB43"), Some(12), Some("REDFISH_PLACEMENT")),
        "{c}"
    );
    assert_eq!(c["host"]["serial"], "437XR1138R2");
    assert_eq!(c["power"]["power_watts"].as_f64(), Some(344.0), "{c}");
    // Its outlet: PDU 29347ZT536 outlet A1, with the power the PDU mockup reports for A1.
    let outlets = c["outlets"].as_array().unwrap();
    assert_eq!(outlets.len(), 1, "{c}");
    let a1 = &outlets[0];
    assert_eq!(a1["pdu"]["serial"], "29347ZT536");
    assert_eq!(a1["pdu"]["device_key"], "serial:29347ZT536");
    assert_eq!(a1["outlet"], 1);
    assert_eq!(a1["power_watts"].as_f64(), Some(197.4), "{a1}");
    assert_eq!(
        (a1["inlet"]["feed"].as_str(), a1["inlet"]["circuit"].as_str()),
        (Some("A"), Some("RPP-A1/CB-12"))
    );
    assert_eq!(
        c["circuits"],
        serde_json::json!([{"feed": "A", "circuit": "RPP-A1/CB-12"}])
    );
    // Rack neighbours: the tower (site map, U20); the PDU, pinned to WEB43 without a U, if the
    // location engine places it there.
    let rack: Vec<(&str, Option<u64>)> = c["shares_rack"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| (n["serial"].as_str().unwrap(), n["u"].as_u64()))
        .collect();
    assert!(rack.contains(&("437XR1238R2", Some(20))), "{rack:?}");
    assert!(
        !rack.iter().any(|(s, _)| *s == "437XR1138R2"),
        "a host is not its own neighbour"
    );
    let pdu: Vec<(&str, &str)> = c["shares_pdu"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| (n["serial"].as_str().unwrap(), n["via"].as_str().unwrap()))
        .collect();
    assert_eq!(pdu, [("437XR1238R2", "PDU 29347ZT536")]);
    assert_eq!(c["shares_circuit"][0]["serial"], "437XR1238R2");

    // The same host by one of its MACs (any notation); the PDU's context lists what it serves.
    let (status, by_mac) = get("mac=12-44-6A-3B-04-11").await;
    assert_eq!(status, 200, "{by_mac}");
    assert_eq!(by_mac["host"]["serial"], "437XR1138R2");
    let (_, p) = get("serial=29347zt536").await;
    let serves: Vec<&str> = p["serves"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["serial"].as_str().unwrap())
        .collect();
    assert_eq!(serves, ["437XR1138R2", "437XR1238R2"]);

    // Misses are explicit; the token is required; the OpenAPI document is served.
    assert_eq!(get("serial=NOSUCHSERIAL").await.0, 404);
    assert_eq!(get("hostname=a&serial=b").await.0, 400);
    assert_eq!(
        reqwest::get(format!("http://{http}/api/context?serial=437XR1138R2"))
            .await
            .unwrap()
            .status(),
        401
    );
    let doc: Value = reqwest::get(format!("http://{http}/api/openapi.json"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(doc["paths"]["/api/context"]["get"].is_object());

    // The KPIs see the three devices: two placed by their own BMCs, the tower by the site map.
    let (status, k) = {
        let r = client
            .get(format!("http://{http}/api/kpis"))
            .bearer_auth("ctx-token")
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json::<Value>().await.unwrap())
    };
    assert_eq!(status, 200, "{k}");
    assert_eq!(k["current"]["devices_seen"], 3, "{k}");
    assert_eq!(k["current"]["located_by_source"]["SITE_MAP"], 1, "{k}");
    assert_eq!(k["current"]["no_usable_identity"], 0, "{k}");

    // With NetBox: a sync pass writes the servers, the CMDB links are read back by serial, and
    // the context answers by NetBox's own device id.
    let Some([nb_url, nb_token]) =
        Peers::load().require("context_api_cmdb_id", ["GT_NETBOX_URL", "GT_NETBOX_TOKEN"])
    else {
        return;
    };
    let settings = groundtruth_collector::config::NetBoxSettings {
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
    let mut rules = Rules::builtin("WEBDC");
    rules.site_map = SiteMap::parse(SITE_MAP, "site-map.toml").unwrap();
    let netbox = groundtruth_collector::netbox_client(&settings).unwrap();
    let pass = groundtruth_collector::sync::run_pass(&store, &netbox, &rules, false)
        .await
        .unwrap();
    assert!(pass.report.failures.is_empty(), "{:?}", pass.report.failures);
    let (linked, _) = groundtruth_collector::context::refresh_cmdb_links(&store, &settings)
        .await
        .unwrap();
    assert!(linked >= 2, "linked {linked}");
    let auth = if nb_token.starts_with("nbt_") {
        format!("Bearer {nb_token}")
    } else {
        format!("Token {nb_token}")
    };
    let nb: Value = client
        .get(format!(
            "{}/api/dcim/devices/?serial=437XR1138R2",
            nb_url.trim_end_matches('/')
        ))
        .header("Authorization", auth)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(nb["count"], 1, "{nb}");
    let id = nb["results"][0]["id"].as_u64().unwrap();
    let (status, by_id) = get(&format!("cmdb_id={id}")).await;
    assert_eq!(status, 200, "{by_id}");
    assert_eq!(by_id["host"]["serial"], "437XR1138R2");
    assert_eq!(by_id["host"]["cmdb_id"], id.to_string());
    assert_eq!(by_id["location"]["rack"], "WEB43");
}
