//! The walking skeleton end to end, with real parts: the agent polls net-snmp snmpd and a Redfish
//! BMC (sushy-tools), streams over gRPC to the collector, which commits to SQLite and syncs
//! NetBox 4.7; a second pass changes nothing in NetBox. Every test runs against both store back
//! ends: SQLite and the test PostgreSQL (`GT_PG_URL`).

use std::net::SocketAddr;
use std::time::Duration;

use groundtruth_agent::config::Config as AgentConfig;
use groundtruth_agent::run::Agent;
use groundtruth_collector::ingest::IngestService;
use groundtruth_collector::store::Store;
use groundtruth_proto::v1::ingest_server::IngestServer;
use groundtruth_tests::{Peers, TestDb, free_port, init_tls};

/// Starts an in-process collector ingest on a free port; returns its address and store.
async fn start_collector(t: &TestDb) -> (SocketAddr, Store, tokio::task::JoinHandle<()>) {
    let store = t.store().await.unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let handle = serve_on(addr, store.clone());
    (addr, store, handle)
}

fn serve_on(addr: SocketAddr, store: Store) -> tokio::task::JoinHandle<()> {
    let (tx, _rx) = tokio::sync::watch::channel(0);
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(IngestServer::new(IngestService::new(store, tx)))
            .serve(addr)
            .await
            .unwrap();
    })
}

async fn wait_listening(addr: SocketAddr) {
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("collector did not start listening on {addr}");
}

fn agent_config(dir: &std::path::Path, collector: SocketAddr, targets: &str) -> AgentConfig {
    let text = format!(
        "[agent]\nid = \"e2e-agent\"\nsite = \"DC1\"\nstate_dir = {:?}\n\n[collector]\ngrpc = \"http://{collector}\"\n\n[defaults]\ntimeout = \"1s\"\n\n{targets}",
        dir.join("agent-state")
    );
    AgentConfig::parse(&text, "e2e-agent.toml").unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snmpd_and_redfish_to_collector_to_netbox_twice_is_idempotent() {
    let p = Peers::load();
    let Some([snmpd, community, redfish, ca, nb_url, nb_token]) = p.require(
        "e2e_skeleton",
        [
            "GT_SNMPD_ADDR",
            "GT_SNMPD_COMMUNITY",
            "GT_REDFISH_URL",
            "GT_REDFISH_CA",
            "GT_NETBOX_URL",
            "GT_NETBOX_TOKEN",
        ],
    ) else {
        return;
    };
    init_tls();
    // One back end after the other (not as two parallel tests): both sync the same server into
    // the one NetBox.
    let mut stores = vec![TestDb::sqlite()];
    stores.extend(groundtruth_tests::pg_store("e2e_skeleton").await);
    for t in &stores {
        eprintln!("e2e_skeleton: store {}", t.db);
        skeleton(t, &snmpd, &community, &redfish, &ca, &nb_url, &nb_token).await;
    }
}

async fn skeleton(
    t: &TestDb,
    snmpd: &str,
    community: &str,
    redfish: &str,
    ca: &str,
    nb_url: &str,
    nb_token: &str,
) {
    let dir = tempfile::tempdir().unwrap();
    let (addr, store, _server) = start_collector(t).await;
    wait_listening(addr).await;
    let community_file = dir.path().join("community");
    std::fs::write(&community_file, format!("{community}\n")).unwrap();
    let targets = format!(
        "[[targets]]\nname = \"snmpd\"\nurl = \"snmp://{snmpd}\"\nsecret = {{ file = {community_file:?} }}\n\n\
         [[targets]]\nname = \"bmc\"\nurl = \"{}\"\nca_file = {ca:?}\n",
        redfish.replace("https://", "redfish://")
    );
    let mut agent = Agent::new(agent_config(dir.path(), addr, &targets)).unwrap();

    // Round 1: both devices polled, one batch delivered and acknowledged.
    let s = agent.round().await.unwrap();
    assert_eq!(
        (s.polled, s.failed, s.delivered_batches, s.pending_batches),
        (2, 0, 1, 0)
    );
    let devices = store.devices().await.unwrap();
    let server = devices
        .iter()
        .find(|d| d.device_key == "serial:GTSRV0000001")
        .expect("redfish server stored by serial");
    assert_eq!(server.power_watts, Some(412.0));
    assert!(
        server
            .locations
            .iter()
            .any(|l| l.rack == "R07" && l.u_position == Some(12))
    );
    let snmp = devices
        .iter()
        .find(|d| d.protocol == "PROTOCOL_SNMP")
        .expect("snmpd stored");
    assert_eq!(snmp.device_key, format!("endpoint:e2e-agent/snmp://{snmpd}"));

    // The collector's /metrics shows the measured power with the device's rack and U, and
    // /api/devices wants the token.
    let http = free_port();
    let state = groundtruth_collector::http::HttpState {
        store: store.clone(),
        ingest: std::sync::Arc::default(),
        rules: groundtruth_collector::reconcile::Rules::builtin("DC1"),
        api_token: Some("e2e-token".into()),
        events: tokio::sync::watch::channel(0).1,
        cmdb_configured: false,
        leader: None,
    };
    tokio::spawn(groundtruth_collector::http::serve(
        format!("127.0.0.1:{http}").parse().unwrap(),
        state,
    ));
    wait_listening(format!("127.0.0.1:{http}").parse().unwrap()).await;
    let metrics = reqwest::get(format!("http://127.0.0.1:{http}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.lines().any(|l| l
            .starts_with("groundtruth_device_power_watts{device=\"serial:GTSRV0000001\"")
            && l.contains("rack=\"R07\",u=\"12\"}")
            && l.ends_with(" 412")),
        "{metrics}"
    );
    let api = format!("http://127.0.0.1:{http}/api/devices");
    assert_eq!(reqwest::get(&api).await.unwrap().status(), 401);
    let listed: serde_json::Value = reqwest::Client::new()
        .get(&api)
        .bearer_auth("e2e-token")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 2);

    // NetBox pass 1: the server is created or updated; snmpd (no serial) becomes an exception.
    let settings = groundtruth_collector::config::NetBoxSettings {
        url: nb_url.parse().unwrap(),
        token: nb_token.to_owned(),
        device_role: "server".into(),
        create_missing: true,
        sync_interval: Duration::from_secs(1),
        lease_ttl: groundtruth_collector::lease::DEFAULT_TTL,
        dry_run: false,
        tls_verify: true,
        ca_file: None,
        ownership: groundtruth_collector::cmdb::Ownership::default(),
        rate_limit: 0.0,
        journal: true,
    };
    let netbox = groundtruth_collector::netbox_client(&settings).unwrap();
    let pass1 = groundtruth_collector::sync::run_pass(
        &store,
        &netbox,
        &groundtruth_collector::reconcile::Rules::builtin("DC1"),
        false,
    )
    .await
    .unwrap();
    assert_eq!(pass1.eligible, 1, "{pass1:?}");
    assert!(pass1.report.failures.is_empty(), "{:?}", pass1.report.failures);
    assert!(
        pass1
            .unfit
            .iter()
            .any(|u| u.kind == "no_usable_identity" && u.device_key == snmp.device_key)
    );
    let exceptions = store.open_exceptions().await.unwrap();
    assert!(exceptions.iter().any(|e| e.kind == "no_usable_identity"));

    // What NetBox now holds, read back over its REST API.
    let http = reqwest::Client::new();
    let auth = if nb_token.starts_with("nbt_") {
        format!("Bearer {nb_token}")
    } else {
        format!("Token {nb_token}")
    };
    let body = http
        .get(format!(
            "{}/api/dcim/devices/?serial=GTSRV0000001",
            nb_url.trim_end_matches('/')
        ))
        .header("Authorization", &auth)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["count"], 1, "{body}");
    let d = &v["results"][0];
    assert_eq!(d["rack"]["name"], "R07");
    assert_eq!(d["position"].as_f64(), Some(12.0));
    assert_eq!(d["site"]["name"], "DC1");
    let device_id = d["id"].as_i64().unwrap();
    let macs: serde_json::Value = serde_json::from_str(
        &http
            .get(format!(
                "{}/api/dcim/mac-addresses/?device_id={device_id}",
                nb_url.trim_end_matches('/')
            ))
            .header("Authorization", &auth)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
    )
    .unwrap();
    let have: Vec<String> = macs["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["mac_address"].as_str().unwrap().to_lowercase())
        .collect();
    assert!(have.contains(&"02:47:54:10:00:01".to_owned()), "{have:?}");

    // Round 2 and pass 2: same physical reality, zero writes to NetBox.
    let s = agent.round().await.unwrap();
    assert_eq!((s.delivered_batches, s.pending_batches), (1, 0));
    let pass2 = groundtruth_collector::sync::run_pass(
        &store,
        &netbox,
        &groundtruth_collector::reconcile::Rules::builtin("DC1"),
        false,
    )
    .await
    .unwrap();
    assert_eq!(
        pass2.report.writes, 0,
        "second pass must not write: {:?}",
        pass2.report.changes
    );
    assert!(pass2.report.changes.is_empty(), "{:?}", pass2.report.changes);
}

/// The collector is down for a round: the batch is kept and delivered with the next one, and
/// nothing is stored twice.
async fn batch_survives_collector_outage_and_is_delivered_once(t: TestDb) {
    let dir = tempfile::tempdir().unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut agent = Agent::new(agent_config(dir.path(), addr, "")).unwrap();
    let s = agent.round().await.unwrap();
    assert_eq!(
        (s.delivered_batches, s.pending_batches),
        (0, 1),
        "collector is not running yet"
    );
    let store = t.store().await.unwrap();
    let _server = serve_on(addr, store.clone());
    wait_listening(addr).await;
    let s = agent.round().await.unwrap();
    assert_eq!((s.delivered_batches, s.pending_batches), (2, 0));
    assert_eq!(store.batch_count().await.unwrap(), 2);
}

/// `kill -9` of the agent while the collector is down: every batch it sealed is on disk and is
/// delivered, exactly once per sequence number, after the restart.
async fn agent_killed_with_sigkill_loses_no_batch(t: TestDb) {
    let Some(bin) = groundtruth_tests::binary("groundtruth-agent") else {
        assert!(
            std::env::var("GT_REQUIRE_PEERS").as_deref() != Ok("1"),
            "groundtruth-agent binary not built"
        );
        eprintln!("SKIP: agent_killed_with_sigkill_loses_no_batch: groundtruth-agent binary not built");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "[agent]\nid = \"kill9\"\nsite = \"DC1\"\nmetrics_listen = \"off\"\nstate_dir = {:?}\n\n[collector]\ngrpc = \"http://{addr}\"\n\n\
             [defaults]\ninterval = \"50ms\"\ntimeout = \"40ms\"\nbatch_max_delay = \"20ms\"\ndelivery_timeout = \"2s\"\n\n\
             [[targets]]\nname = \"refused\"\nurl = \"redfish+http://127.0.0.1:{}\"\n",
            dir.path().join("agent-state"),
            free_port()
        ),
    )
    .unwrap();
    // The collector is down: the agent keeps polling (a refused target: a failed report every
    // 50 ms), seals batches into the spool and fails to deliver them.
    let mut child = std::process::Command::new(&bin)
        .args(["run", "--config", config.to_str().unwrap(), "--log", "off"])
        .spawn()
        .unwrap();
    let seq_file = dir.path().join("agent-state").join("sequence");
    let last_seq = || -> u64 {
        std::fs::read_to_string(&seq_file)
            .ok()
            .and_then(|t| t.split_whitespace().nth(1).and_then(|s| s.parse().ok()))
            .unwrap_or(0)
    };
    for _ in 0..200 {
        if last_seq() >= 5 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let sealed = last_seq();
    assert!(sealed >= 5, "agent sealed only {sealed} batches");

    let store = t.store().await.unwrap();
    let _server = serve_on(addr, store.clone());
    wait_listening(addr).await;
    // The restart delivers the whole backlog: give it time on a loaded machine (the short
    // timeout was only for failing fast while the collector was down).
    let relaxed = dir.path().join("agent-restart.toml");
    std::fs::write(
        &relaxed,
        std::fs::read_to_string(&config)
            .unwrap()
            .replace("delivery_timeout = \"2s\"", "delivery_timeout = \"30s\""),
    )
    .unwrap();
    let out = std::process::Command::new(&bin)
        .args([
            "run",
            "--once",
            "--config",
            relaxed.to_str().unwrap(),
            "--log",
            "warn",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "restarted agent: {} {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    // Every sequence number from 1 to the newest, each stored once: no gap, no duplicate.
    let (count, max) = store.batch_seq_span("kill9").await.unwrap();
    assert!(
        max > sealed,
        "the restarted agent's own round is stored too ({max} <= {sealed})"
    );
    assert_eq!(count, max, "gaps in the stored sequence numbers");
}

/// The long-running agent (scheduler, batcher, sender): while the collector is down it keeps
/// polling and spooling; when the collector comes up the backlog drains in order with no gap;
/// a reloaded config adds a target without a restart.
async fn service_drains_backlog_after_outage_and_reload_adds_a_target(t: TestDb) {
    let dir = tempfile::tempdir().unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let (dead1, dead2, metrics) = (free_port(), free_port(), free_port());
    let text = |targets: &str| {
        format!(
            "[agent]\nid = \"svc\"\nsite = \"DC1\"\nmetrics_listen = \"127.0.0.1:{metrics}\"\nstate_dir = {:?}\n\n[collector]\ngrpc = \"http://{addr}\"\n\n\
             [defaults]\ninterval = \"100ms\"\ntimeout = \"50ms\"\nbatch_max_delay = \"50ms\"\ndelivery_timeout = \"300ms\"\n\n{targets}",
            dir.path().join("agent-state")
        )
    };
    let one = format!("[[targets]]\nname = \"dead1\"\nurl = \"redfish+http://127.0.0.1:{dead1}\"\n");
    let two = format!("{one}\n[[targets]]\nname = \"dead2\"\nurl = \"redfish+http://127.0.0.1:{dead2}\"\n");
    let agent = Agent::new(AgentConfig::parse(&text(&one), "svc.toml").unwrap()).unwrap();
    let (reload_tx, reload_rx) = tokio::sync::mpsc::channel(1);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(agent.run(reload_rx, async {
        let _ = stop_rx.await;
    }));

    // Collector down for 1.5 s: batches pile up in the spool.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let store = t.store().await.unwrap();
    let _server = serve_on(addr, store.clone());
    wait_listening(addr).await;
    reload_tx
        .send(AgentConfig::parse(&text(&two), "svc.toml").unwrap())
        .await
        .unwrap();

    let dead2_key = format!("endpoint:svc/redfish://127.0.0.1:{dead2}");
    let mut ok = false;
    for _ in 0..150 {
        let (count, max) = store.batch_seq_span("svc").await.unwrap();
        let devices = store.devices().await.unwrap();
        if count >= 15 && devices.iter().any(|d| d.device_key == dead2_key) {
            assert_eq!(count, max, "gap in the delivered sequence");
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = stop_tx.send(());
    running.await.unwrap().unwrap();
    assert!(
        ok,
        "backlog not drained or reloaded target not polled: {:?}",
        store.batch_seq_span("svc").await.unwrap()
    );
    let (count, max) = store.batch_seq_span("svc").await.unwrap();
    assert_eq!(count, max, "gap in the delivered sequence");
}

/// A configured sweep finds the loopback peers, and the agent polls what it found without a
/// restart: the devices reach the collector.
async fn configured_sweep_feeds_the_scheduler(t: TestDb) {
    let Some([snmpd, community, redfish]) = Peers::load().require(
        "e2e_sweep",
        ["GT_SNMPD_ADDR", "GT_SNMPD_COMMUNITY", "GT_REDFISH_URL"],
    ) else {
        return;
    };
    init_tls();
    let port = |a: &str| a.rsplit(':').next().unwrap().trim_end_matches('/').to_owned();
    let dir = tempfile::tempdir().unwrap();
    let (addr, store, _server) = start_collector(&t).await;
    wait_listening(addr).await;
    let community_file = dir.path().join("community");
    std::fs::write(&community_file, format!("{community}\n")).unwrap();
    let text = format!(
        "[agent]\nid = \"sweeper\"\nsite = \"DC1\"\nmetrics_listen = \"off\"\nstate_dir = {:?}\n\n[collector]\ngrpc = \"http://{addr}\"\n\n\
         [defaults]\ninterval = \"300ms\"\ntimeout = \"500ms\"\nbatch_max_delay = \"50ms\"\n\n\
         [[sweeps]]\nname = \"lo\"\nranges = [\"127.0.0.1\"]\nevery = \"1h\"\n\
         snmp_ports = [{}]\nsnmp_communities = [{{ file = {community_file:?} }}]\nredfish_ports = [{}]\nredfish_insecure = true\n",
        dir.path().join("agent-state"),
        port(&snmpd),
        port(&redfish),
    );
    let agent = Agent::new(AgentConfig::parse(&text, "sweep.toml").unwrap()).unwrap();
    let (_reload_tx, reload_rx) = tokio::sync::mpsc::channel(1);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(agent.run(reload_rx, async {
        let _ = stop_rx.await;
    }));
    let mut polled_after_sweep = false;
    for _ in 0..100 {
        let (batches, _) = store.batch_seq_span("sweeper").await.unwrap();
        let devices = store.devices().await.unwrap();
        let have_both = devices.iter().any(|d| d.device_key == "serial:GTSRV0000001")
            && devices
                .iter()
                .any(|d| d.endpoint_key == format!("snmp://{snmpd}"));
        // The sweep's own reports make one batch; more batches mean the found targets are polled.
        if have_both && batches >= 3 {
            polled_after_sweep = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = stop_tx.send(());
    running.await.unwrap().unwrap();
    assert!(
        polled_after_sweep,
        "sweep results not polled: {:?}",
        store.devices().await.unwrap()
    );
}

/// Two collectors on one database, the agent configured with both (issue #22): it delivers to
/// whichever answers, stays there, fails over when that one goes down, keeps its spool while
/// neither answers and drains the backlog to the other: every sequence number stored once.
async fn agent_fails_over_between_collectors_and_drains_its_backlog(t: TestDb) {
    let dir = tempfile::tempdir().unwrap();
    let a: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let b: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let text = format!(
        "[agent]\nid = \"failover-agent\"\nsite = \"DC1\"\nstate_dir = {:?}\n\n[collector]\ngrpc = [\"http://{a}\", \"http://{b}\"]\n\n[defaults]\ntimeout = \"1s\"\ndelivery_timeout = \"3s\"\n",
        dir.path().join("agent-state")
    );
    let mut agent = Agent::new(AgentConfig::parse(&text, "failover.toml").unwrap()).unwrap();
    let store = t.store().await.unwrap();
    // Only the second collector is up: the first round fails over to it, the second stays.
    let server_b = serve_on(b, store.clone());
    wait_listening(b).await;
    for round in 1..=2 {
        let s = agent.round().await.unwrap();
        assert_eq!((s.delivered_batches, s.pending_batches), (1, 0), "round {round}");
    }
    // It goes down: the batch stays in the spool.
    server_b.abort();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(b).await.is_ok() {
        assert!(
            std::time::Instant::now() < deadline,
            "collector B still listening"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let s = agent.round().await.unwrap();
    assert_eq!(
        (s.delivered_batches, s.pending_batches),
        (0, 1),
        "neither collector answers"
    );
    // The first comes up: the backlog and the new batch go there.
    let _server_a = serve_on(a, store.clone());
    wait_listening(a).await;
    let s = agent.round().await.unwrap();
    assert_eq!((s.delivered_batches, s.pending_batches), (2, 0));
    assert_eq!(
        store.batch_seq_span("failover-agent").await.unwrap(),
        (4, 4),
        "every batch once, no gap"
    );
    assert_eq!(store.batch_count().await.unwrap(), 4);
}

groundtruth_tests::on_both_stores!(
    batch_survives_collector_outage_and_is_delivered_once,
    agent_fails_over_between_collectors_and_drains_its_backlog,
    agent_killed_with_sigkill_loses_no_batch,
    service_drains_backlog_after_outage_and_reload_adds_a_target,
    configured_sweep_feeds_the_scheduler,
);

/// Records the kind of every batch, then commits it like the collector's own service.
#[derive(Clone)]
struct KindRecorder {
    inner: IngestService,
    kinds: std::sync::Arc<std::sync::Mutex<Vec<i32>>>,
}

#[tonic::async_trait]
impl groundtruth_proto::v1::ingest_server::Ingest for KindRecorder {
    type StreamStream = std::pin::Pin<
        Box<dyn tokio_stream::Stream<Item = Result<groundtruth_proto::v1::Ack, tonic::Status>> + Send>,
    >;

    async fn stream(
        &self,
        request: tonic::Request<tonic::Streaming<groundtruth_proto::v1::Batch>>,
    ) -> Result<tonic::Response<Self::StreamStream>, tonic::Status> {
        use tokio_stream::StreamExt as _;
        let this = self.clone();
        let out = request.into_inner().then(move |b| {
            let this = this.clone();
            async move {
                let b = b?;
                this.kinds.lock().unwrap().push(b.kind);
                this.inner
                    .handle(&b)
                    .await
                    .map_err(|e| tonic::Status::unavailable(e.to_string()))
            }
        });
        Ok(tonic::Response::new(Box::pin(out)))
    }
}

/// Per-kind intervals in the running service against real peers (ipmi_sim, pymodbus): identity
/// is read once (inventory interval 1 h), readings every 300 ms; the readings travel in
/// TELEMETRY batches carrying the identity the agent kept, so the collector files them under the
/// devices' serials (no endpoint-keyed twin appears) and the identity columns stay filled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn telemetry_between_inventory_polls_lands_on_the_serial_keyed_devices() {
    use groundtruth_proto::v1::BatchKind;
    let Some([ipmi, user, pass, ups, ups_serial]) = Peers::load().require(
        "e2e_intervals",
        [
            "GT_IPMI_ADDR",
            "GT_IPMI_USER",
            "GT_IPMI_PASS",
            "GT_MODBUS_UPS_ADDR",
            "GT_MODBUS_UPS_SERIAL",
        ],
    ) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("state.db")).await.unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let kinds = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let (tx, _rx) = tokio::sync::watch::channel(0);
    let recorder = KindRecorder {
        inner: IngestService::new(store.clone(), tx),
        kinds: std::sync::Arc::clone(&kinds),
    };
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(IngestServer::new(recorder))
            .serve(addr),
    );
    wait_listening(addr).await;
    let pass_file = dir.path().join("ipmi.pass");
    std::fs::write(&pass_file, &pass).unwrap();
    let text = format!(
        "[agent]\nid = \"intervals\"\nsite = \"DC1\"\nmetrics_listen = \"off\"\nstate_dir = {:?}\n\n[collector]\ngrpc = \"http://{addr}\"\n\n\
         [defaults]\ninterval = \"300ms\"\nintervals = {{ inventory = \"1h\", topology = \"1h\" }}\ntimeout = \"1s\"\nbatch_max_delay = \"50ms\"\n\n\
         [[targets]]\nname = \"bmc\"\nurl = \"ipmi://{user}@{ipmi}\"\nsecret = {{ file = {pass_file:?} }}\n\n\
         [[targets]]\nname = \"ups\"\nurl = \"modbus+tcp://{ups}?unit=1&map=test-rack-ups\"\n",
        dir.path().join("agent-state"),
    );
    let agent = Agent::new(AgentConfig::parse(&text, "intervals.toml").unwrap()).unwrap();
    let (_reload_tx, reload_rx) = tokio::sync::mpsc::channel(1);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let started = std::time::SystemTime::now();
    let running = tokio::spawn(agent.run(reload_rx, async {
        let _ = stop_rx.await;
    }));
    tokio::time::sleep(Duration::from_secs(4)).await;
    let _ = stop_tx.send(());
    running.await.unwrap().unwrap();
    server.abort();

    let kinds = kinds.lock().unwrap().clone();
    let count = |k: BatchKind| kinds.iter().filter(|x| **x == k as i32).count();
    // One full poll per target (MIXED), then readings only (TELEMETRY).
    assert!((1..=2).contains(&count(BatchKind::Mixed)), "{kinds:?}");
    assert!(count(BatchKind::Telemetry) >= 4, "{kinds:?}");
    assert_eq!(count(BatchKind::Inventory), 0, "{kinds:?}");

    let devices = store.devices().await.unwrap();
    let keys: Vec<&str> = devices.iter().map(|d| d.device_key.as_str()).collect();
    assert_eq!(
        devices.len(),
        2,
        "one row per device, no endpoint-keyed twin: {keys:?}"
    );
    let bmc = devices
        .iter()
        .find(|d| d.device_key == "serial:GTPRD000001")
        .expect("bmc by serial");
    assert_eq!(bmc.serial, "GTPRD000001");
    assert!(!bmc.macs.is_empty() && !bmc.model.is_empty(), "{bmc:?}");
    let u = devices
        .iter()
        .find(|d| d.device_key == format!("serial:{ups_serial}"))
        .expect("ups by serial");
    assert_eq!(u.serial, ups_serial);
    // Readings from many polls, all on the serial-keyed BMC.
    let power = store
        .readings_since("serial:GTPRD000001", "power", started)
        .await
        .unwrap();
    assert!(power.len() >= 5, "{} power readings", power.len());
}

/// `defaults.replay_max_batches_per_second`: a 30-batch backlog drains in order and no faster
/// than the ceiling (10/s in deliveries of 5: at least 2.5 s), while without a ceiling it drains
/// at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_after_an_outage_follows_the_configured_rate_ceiling() {
    async fn drain(limit: &str) -> Duration {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("agent-state");
        std::fs::create_dir_all(&state).unwrap();
        // The backlog an outage left: 30 sealed batches in the spool.
        let mut seq = groundtruth_agent::uplink::sequence::Sequencer::open(&state).unwrap();
        let (mut spool, _) =
            groundtruth_agent::spool::Spool::open(&state.join("spool"), Default::default()).unwrap();
        for _ in 0..30 {
            let n = seq.next();
            spool
                .append(&groundtruth_proto::v1::Batch {
                    schema_version: groundtruth_proto::v1::SCHEMA_VERSION,
                    agent: Some(groundtruth_proto::v1::AgentInfo {
                        agent_id: "replay".into(),
                        site: "DC1".into(),
                        ..Default::default()
                    }),
                    epoch: seq.epoch(),
                    seq: n,
                    kind: groundtruth_proto::v1::BatchKind::Telemetry as i32,
                    ..Default::default()
                })
                .unwrap();
            seq.commit(n).unwrap();
        }
        drop((seq, spool));
        let db = TestDb::sqlite();
        let (addr, store, _server) = start_collector(&db).await;
        wait_listening(addr).await;
        let text = format!(
            "[agent]\nid = \"replay\"\nsite = \"DC1\"\nmetrics_listen = \"off\"\nstate_dir = {state:?}\n\n\
             [collector]\ngrpc = \"http://{addr}\"\n\n[defaults]\nreplay_batches_per_delivery = 5\n{limit}"
        );
        let agent = Agent::new(AgentConfig::parse(&text, "replay.toml").unwrap()).unwrap();
        let (_reload_tx, reload_rx) = tokio::sync::mpsc::channel(1);
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let started = std::time::Instant::now();
        let running = tokio::spawn(agent.run(reload_rx, async {
            let _ = stop_rx.await;
        }));
        let mut span = (0, 0);
        while started.elapsed() < Duration::from_secs(20) {
            span = store.batch_seq_span("replay").await.unwrap();
            if span == (30, 30) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let took = started.elapsed();
        let _ = stop_tx.send(());
        running.await.unwrap().unwrap();
        assert_eq!(span, (30, 30), "every batch, in order, no gap");
        took
    }
    let limited = drain("replay_max_batches_per_second = 10\n").await;
    let free = drain("").await;
    eprintln!("replay of 30 batches: ceiling 10/s {limited:?}, no ceiling {free:?}");
    assert!(limited >= Duration::from_millis(2400), "{limited:?}");
    assert!(free < limited / 2, "without a ceiling {free:?}, with {limited:?}");
}
