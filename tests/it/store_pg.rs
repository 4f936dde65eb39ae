//! The collector binary on PostgreSQL (issue #9), as an operator runs it: `collector.database` is a
//! `postgres://` URL without password, `collector.database_password` a file reference; two
//! `serve` processes start together on one fresh schema (migrations once, under the advisory
//! lock), both take the same batch over gRPC (stored once, one COMMITTED and one DUPLICATE ack),
//! and `devices --json` reads it back.

use std::time::Duration;

use groundtruth_collector::store::Database;
use groundtruth_proto::v1::{
    AckStatus, Batch, DeviceIdentity, DeviceReport, PollOutcome, PollStatus, Reading,
    ingest_client::IngestClient,
};
use groundtruth_tests::{binary, free_port, pg_store};

fn batch() -> Batch {
    groundtruth_collector::store::testdb::batch(
        "pg-agent",
        "DC1",
        1,
        vec![DeviceReport {
            identity: Some(DeviceIdentity {
                serial_number: "GTPG000001".into(),
                vendor: "Dell Inc.".into(),
                endpoint_key: "redfish://10.9.9.9:443".into(),
                ..Default::default()
            }),
            readings: vec![Reading {
                metric: "power".into(),
                unit: "W".into(),
                value: 321.0,
                ..Default::default()
            }],
            status: Some(PollStatus {
                outcome: PollOutcome::Ok as i32,
                ..Default::default()
            }),
            ..Default::default()
        }],
    )
}

async fn ack_of(addr: &str) -> i32 {
    let mut client = IngestClient::connect(format!("http://{addr}")).await.unwrap();
    let mut acks = client
        .stream(tokio_stream::iter(vec![batch()]))
        .await
        .unwrap()
        .into_inner();
    acks.message().await.unwrap().expect("an ack").status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collector_binaries_share_one_postgres_store() {
    let Some(bin) = binary("groundtruth-collector") else {
        assert!(
            std::env::var("GT_REQUIRE_PEERS").as_deref() != Ok("1"),
            "groundtruth-collector binary not built"
        );
        eprintln!("SKIP: store_pg: groundtruth-collector binary not built");
        return;
    };
    let Some(t) = pg_store("store_pg").await else {
        return;
    };
    let Database::Postgres { url, password } = &t.db else {
        unreachable!("pg_store gives PostgreSQL");
    };
    assert!(url.password().is_none());
    let dir = tempfile::tempdir().unwrap();
    let pass = dir.path().join("db.pass");
    std::fs::write(&pass, format!("{}\n", password.clone().unwrap_or_default())).unwrap();
    let mut children = Vec::new();
    let mut addrs = Vec::new();
    for i in 0..2 {
        let addr = format!("127.0.0.1:{}", free_port());
        let config = dir.path().join(format!("c{i}.toml"));
        std::fs::write(
            &config,
            format!(
                "[collector]\nlisten_grpc = \"{addr}\"\nlisten_http = \"off\"\ndatabase = \"{url}\"\ndatabase_password = {{ file = {pass:?} }}\n"
            ),
        )
        .unwrap();
        children.push(
            std::process::Command::new(&bin)
                .args(["--log", "warn", "serve", "--config"])
                .arg(&config)
                .spawn()
                .unwrap(),
        );
        addrs.push((addr, config));
    }
    for (addr, _) in &addrs {
        let mut up = false;
        for _ in 0..200 {
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                up = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(up, "collector did not listen on {addr}");
    }
    let (a, b) = tokio::join!(ack_of(&addrs[0].0), ack_of(&addrs[1].0));
    let mut statuses = [a, b];
    statuses.sort_unstable();
    assert_eq!(
        statuses,
        [AckStatus::Committed as i32, AckStatus::Duplicate as i32],
        "one collector commits the batch, the other recognises it"
    );
    for c in &mut children {
        c.kill().unwrap();
        c.wait().unwrap();
    }
    let out = std::process::Command::new(&bin)
        .args(["--log", "warn", "devices", "--json", "--config"])
        .arg(&addrs[1].1)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let devices: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let devices = devices.as_array().expect("a JSON array");
    assert_eq!(devices.len(), 1, "{devices:?}");
    assert_eq!(devices[0]["device_key"], "serial:GTPG000001");
    assert_eq!(devices[0]["power_watts"], 321.0);
    let store = t.store().await.unwrap();
    assert_eq!(store.batch_count().await.unwrap(), 1);
}
