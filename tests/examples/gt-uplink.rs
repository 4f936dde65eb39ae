//! The groundtruth side of `bench/uplink.sh`: readings per second through the agent's uplinks,
//! end to end (delivered and acknowledged). Batches are what the agent seals (devices with an
//! identity and `readings` readings each) and go out through the agent's own uplink code
//! (`uplink::grpc::deliver`, `uplink::mqtt::MqttUplink`), `per_delivery` batches per delivery, the
//! way the sender drains its spool. Prints one JSON object on stdout.
//!
//! * `payload <devices> <readings>` — the encoded size of one batch (for the mosquitto_pub row).
//! * `grpc <sink> <batches> <devices> <readings> <per-delivery>` — into an in-process gRPC server:
//!   `sink` = `store` (the collector's ingest service on a fresh SQLite store) or `null` (acks
//!   without storing: the transport alone).
//! * `mqtt <sink> <addr> <agent-user> <agent-pass-file> <collector-user> <collector-pass-file>
//!   <batches> <devices> <readings> <per-delivery>` — through the broker: `store` = the collector's
//!   MQTT ingest (shared subscription, commit, ack topic) on a fresh SQLite store; `null` = a
//!   subscriber that acknowledges every batch without storing it.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_precision_loss,
    unreachable_pub
)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use groundtruth_proto::v1::{
    Ack, AckStatus, AgentInfo, Batch, BatchKind, Component, ComponentKind, DeviceIdentity, DeviceReport,
    PollOutcome, PollStatus, Reading,
};
use prost::Message as _;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let a: Vec<String> = std::env::args().skip(1).collect();
    let n = |i: usize| -> usize { a[i].parse().unwrap() };
    match a.first().map(String::as_str) {
        Some("payload") => {
            let b = batch("size", 1, 1, n(1), n(2));
            println!("{{\"bytes\":{}}}", b.encoded_len());
        }
        Some("grpc") => grpc(&a[1], n(2), n(3), n(4), n(5)).await,
        Some("mqtt") => {
            mqtt(
                &a[1],
                &a[2],
                (&a[3], &a[4]),
                (&a[5], &a[6]),
                (n(7), n(8), n(9), n(10)),
            )
            .await;
        }
        _ => {
            eprintln!("usage: see the module docs of tests/examples/gt-uplink.rs");
            std::process::exit(2);
        }
    }
}

fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{prefix}-{}-{nanos}", std::process::id())
}

/// One sealed batch: `devices` PDUs with a serial and `readings` per-outlet power readings each.
fn batch(agent: &str, epoch: u64, seq: u64, devices: usize, readings: usize) -> Batch {
    let now = std::time::SystemTime::now();
    Batch {
        schema_version: groundtruth_proto::v1::SCHEMA_VERSION,
        agent: Some(AgentInfo {
            agent_id: agent.into(),
            site: "DC1".into(),
            version: "bench".into(),
            hostname: "bench".into(),
        }),
        epoch,
        seq,
        created_at: Some(now.into()),
        kind: BatchKind::Telemetry as i32,
        devices: (0..devices)
            .map(|d| DeviceReport {
                identity: Some(DeviceIdentity {
                    endpoint_key: format!("snmp://10.1.{}.{}:161", d / 250, d % 250),
                    serial_number: format!("BENCH{d:06}"),
                    vendor: "APC".into(),
                    model: "AP8641".into(),
                    ..Default::default()
                }),
                readings: (0..readings)
                    .map(|r| Reading {
                        metric: "power".into(),
                        unit: "W".into(),
                        value: 100.0 + (seq as f64) + r as f64,
                        observed_at: Some(now.into()),
                        component: Some(Component {
                            kind: ComponentKind::Outlet as i32,
                            index: u32::try_from(r + 1).unwrap(),
                            label: format!("outlet {}", r + 1),
                        }),
                        source: "1.3.6.1.4.1.318.1.1.26.9.4.3.1.7".into(),
                    })
                    .collect(),
                status: Some(PollStatus {
                    outcome: PollOutcome::Ok as i32,
                    ..Default::default()
                }),
                polled_at: Some(now.into()),
                ..Default::default()
            })
            .collect(),
    }
}

fn report(path: &str, sink: &str, started: Instant, acked: usize, shape: (usize, usize, usize, usize)) {
    let (batches, devices, readings, per_delivery) = shape;
    let s = started.elapsed().as_secs_f64();
    let total = batches * devices * readings;
    let bytes = batch("size", 1, 1, devices, readings).encoded_len();
    assert_eq!(acked, batches, "every batch acknowledged");
    println!(
        "{{\"path\":\"{path}\",\"sink\":\"{sink}\",\"batches\":{batches},\"devices_per_batch\":{devices},\
         \"readings_per_device\":{readings},\"per_delivery\":{per_delivery},\"batch_bytes\":{bytes},\
         \"readings\":{total},\"seconds\":{s:.4},\"readings_per_second\":{:.0},\"batches_per_second\":{:.1}}}",
        total as f64 / s,
        batches as f64 / s
    );
}

/// Acknowledges every batch without storing it: the transport's own cost.
#[derive(Clone)]
struct NullIngest;

#[tonic::async_trait]
impl groundtruth_proto::v1::ingest_server::Ingest for NullIngest {
    type StreamStream =
        std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<Ack, tonic::Status>> + Send>>;

    async fn stream(
        &self,
        request: tonic::Request<tonic::Streaming<Batch>>,
    ) -> Result<tonic::Response<Self::StreamStream>, tonic::Status> {
        use tokio_stream::StreamExt as _;
        let inbound = request.into_inner();
        let out = inbound.map(|b| {
            b.map(|b| Ack {
                agent_id: b.agent.map(|a| a.agent_id).unwrap_or_default(),
                epoch: b.epoch,
                seq: b.seq,
                status: AckStatus::Committed as i32,
                message: String::new(),
            })
        });
        Ok(tonic::Response::new(Box::pin(out)))
    }
}

async fn grpc(sink: &str, batches: usize, devices: usize, readings: usize, per_delivery: usize) {
    use groundtruth_proto::v1::ingest_server::IngestServer;
    let dir = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    let mut server = tonic::transport::Server::builder();
    let server = match sink {
        "null" => tokio::spawn(
            server
                .add_service(IngestServer::new(NullIngest).max_decoding_message_size(64 << 20))
                .serve_with_incoming(incoming),
        ),
        _ => {
            let store = groundtruth_collector::store::Store::open(&dir.path().join("state.db"))
                .await
                .unwrap();
            let (tx, _rx) = tokio::sync::watch::channel(0);
            let service = groundtruth_collector::ingest::IngestService::new(store, tx);
            tokio::spawn(
                server
                    .add_service(IngestServer::new(service).max_decoding_message_size(64 << 20))
                    .serve_with_incoming(incoming),
            )
        }
    };
    let agent = unique("bench-grpc");
    let all: Vec<Batch> = (1..=batches as u64)
        .map(|s| batch(&agent, 1, s, devices, readings))
        .collect();
    let endpoint = format!("http://{addr}");
    let tls = groundtruth_agent::uplink::grpc::GrpcTls::default();
    let started = Instant::now();
    let mut acked = 0;
    for chunk in all.chunks(per_delivery) {
        let acks = groundtruth_agent::uplink::grpc::deliver(
            &endpoint,
            &tls,
            chunk.to_vec(),
            Duration::from_secs(60),
        )
        .await
        .unwrap();
        acked += acks.len();
    }
    report(
        "grpc",
        sink,
        started,
        acked,
        (batches, devices, readings, per_delivery),
    );
    server.abort();
}

/// A subscriber that acknowledges every batch at once (QoS 1 both ways), storing nothing.
async fn null_subscriber(host: &str, port: u16, user: &str, pass: &str, ready: Arc<tokio::sync::Notify>) {
    use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
    let mut opts = MqttOptions::new(unique("bench-null"), host, port);
    opts.set_credentials(user, pass);
    opts.set_keep_alive(Duration::from_secs(30));
    opts.set_max_packet_size(64 << 20, 1 << 20);
    opts.set_inflight(100);
    let (client, mut ev) = AsyncClient::new(opts, 1000);
    let root = groundtruth_proto::topics::ROOT;
    loop {
        match ev.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                for leaf in ["telemetry", "inventory"] {
                    let c = client.clone();
                    let f = format!("{root}/+/+/{leaf}");
                    tokio::spawn(async move { c.subscribe(f, QoS::AtLeastOnce).await });
                }
            }
            Ok(Event::Incoming(Packet::SubAck(_))) => ready.notify_one(),
            Ok(Event::Incoming(Packet::Publish(p))) => {
                let leaf = p.topic.rsplit('/').next().unwrap_or_default();
                if leaf != "telemetry" && leaf != "inventory" {
                    continue;
                }
                let Ok(b) = Batch::decode(p.payload.as_ref()) else {
                    continue;
                };
                let info = b.agent.clone().unwrap_or_default();
                let ack = Ack {
                    agent_id: info.agent_id.clone(),
                    epoch: b.epoch,
                    seq: b.seq,
                    status: AckStatus::Committed as i32,
                    message: String::new(),
                };
                let topic = groundtruth_proto::topics::ack_topic(&info.site, &info.agent_id);
                let c = client.clone();
                tokio::spawn(async move {
                    let _ = c
                        .publish(topic, QoS::AtLeastOnce, false, ack.encode_to_vec())
                        .await;
                });
            }
            Ok(_) => {}
            Err(e) => {
                eprintln!("null subscriber: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

async fn mqtt(
    sink: &str,
    addr: &str,
    agent_cred: (&str, &str),
    collector_cred: (&str, &str),
    shape: (usize, usize, usize, usize),
) {
    let (batches, devices, readings, per_delivery) = shape;
    let (host, port) = addr.rsplit_once(':').unwrap();
    let port: u16 = port.parse().unwrap();
    let read = |p: &str| std::fs::read_to_string(p).unwrap().trim().to_owned();
    let (cuser, cpass) = (collector_cred.0.to_owned(), read(collector_cred.1));
    let dir = tempfile::tempdir().unwrap();
    let ready = Arc::new(tokio::sync::Notify::new());
    let subscriber = if sink == "null" {
        let (h, r) = (host.to_owned(), Arc::clone(&ready));
        tokio::spawn(async move { null_subscriber(&h, port, &cuser, &cpass, r).await })
    } else {
        use groundtruth_collector::ingest::mqtt::{MqttIngestSettings, MqttIngestStats, run};
        let store = groundtruth_collector::store::Store::open(&dir.path().join("state.db"))
            .await
            .unwrap();
        let (tx, _rx) = tokio::sync::watch::channel(0);
        let stats = Arc::new(MqttIngestStats::default());
        let settings = MqttIngestSettings {
            host: host.into(),
            port,
            username: Some(cuser),
            password: Some(cpass),
            share_group: unique("bench"),
            client_id: unique("bench-collector"),
            tls: None,
            publish_power: None,
        };
        let s2 = Arc::clone(&stats);
        let r = Arc::clone(&ready);
        tokio::spawn(async move {
            while s2.subscribed.load(std::sync::atomic::Ordering::Relaxed) < 2 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            r.notify_one();
        });
        tokio::spawn(run(
            settings,
            groundtruth_collector::ingest::IngestService::new(store, tx),
            stats,
        ))
    };
    tokio::time::timeout(Duration::from_secs(10), ready.notified())
        .await
        .expect("the subscriber never subscribed");

    let agent = unique("bench-mqtt");
    let pass_file = dir.path().join("agent.pass");
    std::fs::write(&pass_file, read(agent_cred.1)).unwrap();
    let text = format!(
        "[agent]\nid = \"{agent}\"\nsite = \"DC1\"\nstate_dir = {:?}\n\n[mqtt]\nurl = \"mqtt://{addr}\"\n\
         username = \"{}\"\npassword = {{ file = {pass_file:?} }}\n",
        dir.path().join("state"),
        agent_cred.0
    );
    let config = groundtruth_agent::config::Config::parse(&text, "bench.toml").unwrap();
    let mut uplink = groundtruth_agent::uplink::mqtt::MqttUplink::start(config.mqtt.clone().unwrap());
    // Connected and subscribed to the ack topic before the clock starts.
    uplink.deliver(vec![], Duration::from_secs(10)).await.unwrap();
    let all: Vec<Batch> = (1..=batches as u64)
        .map(|s| batch(&agent, 1, s, devices, readings))
        .collect();
    let started = Instant::now();
    let mut acked = 0;
    for chunk in all.chunks(per_delivery) {
        let acks = uplink
            .deliver(chunk.to_vec(), Duration::from_secs(120))
            .await
            .unwrap();
        acked += acks.len();
    }
    report("mqtt", sink, started, acked, shape);
    subscriber.abort();
}
