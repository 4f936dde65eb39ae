//! The groundtruth side of `bench/ingest.sh`: pushes batches of readings into a running
//! collector through its real ingest path (gRPC `Ingest.Stream`, one stream per simulated agent,
//! every batch acknowledged only after its commit) and prints one JSON object on stdout.
//!
//! `gt-ingest <grpc-addr> <agents> <batches> <devices> <readings> <distinct:0|1> <tag>`
//!
//! * each of `agents` streams sends `batches` batches of `devices` device reports with `readings`
//!   readings each, and waits for every ack (all must be COMMITTED);
//! * `distinct = 0`: an agent reports the same `devices` devices in every batch (steady
//!   telemetry); `1`: every batch brings new devices (`agents × batches × devices` in all; the
//!   10,000-device state run);
//! * `tag` keeps agent ids and serials apart between runs on one database.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_precision_loss,
    unreachable_pub
)]

use std::time::{Instant, SystemTime};

use groundtruth_proto::v1::{
    AckStatus, AgentInfo, Batch, BatchKind, Component, DeviceIdentity, DeviceReport, MacAddress, MacRole,
    PollOutcome, PollStatus, Protocol, Reading, ingest_client::IngestClient,
};
use tokio_stream::StreamExt;

/// Metric names cycled through for a device's readings (component index keeps series apart).
const METRICS: &[(&str, &str)] = &[
    ("power", "W"),
    ("voltage", "V"),
    ("current", "A"),
    ("temperature", "Cel"),
    ("energy", "kW.h"),
];

/// A locally administered MAC derived from the serial (FNV-1a), distinct per device.
fn mac_of(serial: &str) -> String {
    let h = serial.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    let b = h.to_be_bytes();
    format!(
        "02:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        b[0], b[1], b[2], b[3], b[4]
    )
}

fn batch(agent: &str, seq: u64, devices: std::ops::Range<usize>, readings: usize, tag: &str) -> Batch {
    let now = SystemTime::now();
    Batch {
        schema_version: 1,
        agent: Some(AgentInfo {
            agent_id: agent.to_owned(),
            site: "DC1".into(),
            ..Default::default()
        }),
        epoch: 1,
        seq,
        created_at: Some(now.into()),
        kind: BatchKind::Telemetry as i32,
        devices: devices
            .map(|d| DeviceReport {
                identity: Some(DeviceIdentity {
                    serial_number: format!("GTB{tag}{agent}D{d:06}"),
                    vendor: "Bench".into(),
                    model: "PDU-1".into(),
                    endpoint_key: format!("snmp://10.{}.{}.{}:161", d / 65536 % 256, d / 256 % 256, d % 256),
                    protocol: Protocol::Snmp as i32,
                    // A management MAC, as a PDU's network card or a server's BMC reports: the
                    // collector looks each one up for cross-protocol merging at ingest.
                    macs: vec![MacAddress {
                        address: mac_of(&format!("GTB{tag}{agent}D{d:06}")),
                        role: MacRole::Management as i32,
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
                readings: (0..readings)
                    .map(|r| {
                        let (metric, unit) = METRICS[r % METRICS.len()];
                        Reading {
                            metric: metric.into(),
                            unit: unit.into(),
                            value: (seq as f64).mul_add(0.5, r as f64),
                            observed_at: Some(now.into()),
                            component: (r >= METRICS.len()).then(|| Component {
                                kind: groundtruth_proto::v1::ComponentKind::Outlet as i32,
                                index: u32::try_from(r / METRICS.len()).unwrap(),
                                ..Default::default()
                            }),
                            ..Default::default()
                        }
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

async fn agent(
    addr: String,
    agent: String,
    batches: usize,
    devices: usize,
    readings: usize,
    distinct: bool,
    tag: String,
) {
    let mut client = IngestClient::connect(format!("http://{addr}")).await.unwrap();
    let all: Vec<Batch> = (0..batches)
        .map(|b| {
            let first = if distinct { b * devices } else { 0 };
            batch(&agent, b as u64 + 1, first..first + devices, readings, &tag)
        })
        .collect();
    let mut acks = client.stream(tokio_stream::iter(all)).await.unwrap().into_inner();
    let mut n = 0;
    while let Some(ack) = acks.next().await {
        let ack = ack.unwrap();
        assert_eq!(ack.status, AckStatus::Committed as i32, "{ack:?}");
        n += 1;
        if n == batches {
            break;
        }
    }
    assert_eq!(n, batches, "stream ended early");
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let a: Vec<String> = std::env::args().skip(1).collect();
    assert_eq!(
        a.len(),
        7,
        "usage: gt-ingest <grpc-addr> <agents> <batches> <devices> <readings> <distinct:0|1> <tag>"
    );
    let (agents, batches, devices, readings): (usize, usize, usize, usize) = (
        a[1].parse().unwrap(),
        a[2].parse().unwrap(),
        a[3].parse().unwrap(),
        a[4].parse().unwrap(),
    );
    let distinct = a[5] == "1";
    let tag = a[6].clone();
    let t0 = Instant::now();
    let tasks: Vec<_> = (0..agents)
        .map(|i| {
            tokio::spawn(agent(
                a[0].clone(),
                format!("{tag}-a{i}"),
                batches,
                devices,
                readings,
                distinct,
                tag.clone(),
            ))
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let seconds = t0.elapsed().as_secs_f64();
    let total_batches = agents * batches;
    let total = total_batches * devices * readings;
    println!(
        "{{\"agents\":{agents},\"batches\":{total_batches},\"devices_per_batch\":{devices},\"readings\":{total},\"seconds\":{seconds:.4},\"readings_per_second\":{:.0},\"batches_per_second\":{:.1}}}",
        total as f64 / seconds,
        total_batches as f64 / seconds
    );
}
