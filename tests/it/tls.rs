//! gRPC uplink over TLS and mutual TLS: the real collector binary with a server certificate and a
//! client CA, agents with and without a client certificate. Certificates are made by `openssl`
//! in a temporary directory for each run.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use groundtruth_agent::config::Config as AgentConfig;
use groundtruth_agent::run::Agent;
use groundtruth_tests::{binary, free_port, init_tls};

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl is installed");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, all signed by the CA.
fn make_pki(dir: &Path) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-days",
            "2",
            "-subj",
            "/CN=gt-test-ca",
        ],
    );
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    std::fs::write(dir.join("client.ext"), "extendedKeyUsage=clientAuth\n").unwrap();
    for who in ["server", "client"] {
        openssl(
            dir,
            &[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                &format!("{who}.key"),
                "-out",
                &format!("{who}.csr"),
                "-subj",
                &format!("/CN=gt-test-{who}"),
            ],
        );
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &format!("{who}.csr"),
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &format!("{who}.crt"),
                "-days",
                "2",
                "-extfile",
                &format!("{who}.ext"),
            ],
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_uplink_delivers_only_with_a_client_certificate() {
    let Some(collector) = binary("groundtruth-collector") else {
        assert!(
            std::env::var("GT_REQUIRE_PEERS").as_deref() != Ok("1"),
            "groundtruth-collector binary not built"
        );
        eprintln!("SKIP: mutual_tls: groundtruth-collector binary not built");
        return;
    };
    init_tls();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    make_pki(d);
    let port = free_port();
    std::fs::write(
        d.join("collector.toml"),
        format!(
            "[collector]\nlisten_grpc = \"127.0.0.1:{port}\"\nlisten_http = \"off\"\ndatabase = {:?}\ntls_cert = {:?}\ntls_key = {:?}\nclient_ca = {:?}\n",
            d.join("state.db"),
            d.join("server.crt"),
            d.join("server.key"),
            d.join("ca.crt")
        ),
    )
    .unwrap();
    let mut child = Command::new(collector)
        .args([
            "serve",
            "--config",
            d.join("collector.toml").to_str().unwrap(),
            "--log",
            "warn",
        ])
        .spawn()
        .unwrap();
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let agent = |id: &str, client: bool| {
        let certs = if client {
            format!(
                "client_cert = {:?}\nclient_key = {:?}\n",
                d.join("client.crt"),
                d.join("client.key")
            )
        } else {
            String::new()
        };
        let text = format!(
            "[agent]\nid = \"{id}\"\nsite = \"DC1\"\nmetrics_listen = \"off\"\nstate_dir = {:?}\n\n[collector]\ngrpc = \"https://127.0.0.1:{port}\"\nca_file = {:?}\n{certs}\n[defaults]\ndelivery_timeout = \"5s\"\n",
            d.join(id),
            d.join("ca.crt")
        );
        Agent::new(AgentConfig::parse(&text, "tls-agent.toml").unwrap()).unwrap()
    };
    let with_cert = agent("with-cert", true).round().await.unwrap();
    let without = agent("without-cert", false).round().await.unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(
        (with_cert.delivered_batches, with_cert.pending_batches),
        (1, 0),
        "mTLS agent not delivered"
    );
    assert_eq!(
        (without.delivered_batches, without.pending_batches),
        (0, 1),
        "an agent without a client cert got in"
    );
}

/// MQTT over TLS with client certificates: a private mosquitto (TLS listener, client
/// certificates required) on a free port; agent and collector both connect with `mqtts://`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtts_with_client_certificates_end_to_end() {
    let Ok(mosquitto) = which("mosquitto") else {
        assert!(
            std::env::var("GT_REQUIRE_PEERS").as_deref() != Ok("1"),
            "mosquitto not installed"
        );
        eprintln!("SKIP: mqtts: mosquitto not installed (tests/peers/start-all.sh mqtt installs it)");
        return;
    };
    init_tls();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    make_pki(d);
    let port = free_port();
    std::fs::write(
        d.join("mosquitto.conf"),
        format!(
            "user root\npersistence false\nlog_dest stderr\nlistener {port} 127.0.0.1\ncafile {ca}\ncertfile {crt}\nkeyfile {key}\nrequire_certificate true\nallow_anonymous true\n",
            ca = d.join("ca.crt").display(),
            crt = d.join("server.crt").display(),
            key = d.join("server.key").display()
        ),
    )
    .unwrap();
    let mut broker = Command::new(mosquitto)
        .args(["-c", d.join("mosquitto.conf").to_str().unwrap()])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let read = |f: &str| std::fs::read(d.join(f)).unwrap();
    let store = groundtruth_collector::store::Store::open(&d.join("state.db"))
        .await
        .unwrap();
    let (tx, _rx) = tokio::sync::watch::channel(0);
    let stats = std::sync::Arc::new(groundtruth_collector::ingest::mqtt::MqttIngestStats::default());
    let settings = groundtruth_collector::ingest::mqtt::MqttIngestSettings {
        host: "127.0.0.1".into(),
        port,
        username: None,
        password: None,
        share_group: "tls".into(),
        client_id: format!("tls-collector-{}", std::process::id()),
        tls: Some(groundtruth_collector::ingest::mqtt::MqttTls {
            ca_pem: read("ca.crt"),
            client_auth: Some((read("client.crt"), read("client.key"))),
        }),
        publish_power: None,
    };
    let collector = tokio::spawn(groundtruth_collector::ingest::mqtt::run(
        settings,
        groundtruth_collector::ingest::IngestService::new(store.clone(), tx),
        std::sync::Arc::clone(&stats),
    ));
    for _ in 0..100 {
        if stats.subscribed.load(std::sync::atomic::Ordering::Relaxed) >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let text = format!(
        "[agent]\nid = \"tls-mqtt\"\nsite = \"DC1\"\nmetrics_listen = \"off\"\nstate_dir = {:?}\n\n[mqtt]\nurl = \"mqtts://127.0.0.1:{port}\"\nca_file = {:?}\nclient_cert = {:?}\nclient_key = {:?}\n\n[defaults]\ndelivery_timeout = \"5s\"\n",
        d.join("agent-state"),
        d.join("ca.crt"),
        d.join("client.crt"),
        d.join("client.key")
    );
    let mut agent = Agent::new(AgentConfig::parse(&text, "mqtts-agent.toml").unwrap()).unwrap();
    let s = agent.round().await.unwrap();
    collector.abort();
    let _ = broker.kill();
    let _ = broker.wait();
    assert_eq!(
        (s.delivered_batches, s.pending_batches),
        (1, 0),
        "batch not acknowledged over mqtts"
    );
    assert_eq!(store.batch_seq_span("tls-mqtt").await.unwrap(), (1, 1));
}

fn which(name: &str) -> Result<std::path::PathBuf, ()> {
    std::env::var_os("PATH")
        .and_then(|p| {
            std::env::split_paths(&p)
                .chain(["/usr/sbin".into()])
                .map(|d| d.join(name))
                .find(|p| p.is_file())
        })
        .ok_or(())
}
