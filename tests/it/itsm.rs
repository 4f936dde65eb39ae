//! ITSM tickets into a real Request Tracker 5 (the `rt` test peer, REST2): a condition opens
//! exactly one RT ticket, an update becomes a comment, the clearing resolves it with the evidence.

use std::time::{Duration, SystemTime};

use groundtruth_collector::itsm::{self, ItsmSettings, RtSettings, Rule, Sinks, Watch};
use groundtruth_collector::reconcile::Rules;
use groundtruth_collector::store::Store;
use groundtruth_tests::Peers;
use serde_json::Value;

/// GETs an RT REST2 path as JSON.
pub async fn rt_get(url: &str, token: &str, path: &str) -> Value {
    reqwest::Client::new()
        .get(format!("{}/REST/2.0{path}", url.trim_end_matches('/')))
        .header("Authorization", format!("token {token}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Standard base64 (RT's attachment content), whitespace ignored.
fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    };
    let (mut out, mut acc, mut bits) = (Vec::new(), 0u32, 0);
    for v in s.bytes().filter_map(val) {
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push(u8::try_from((acc >> bits) & 0xff).unwrap());
        }
    }
    out
}

/// The text of every comment/create transaction on an RT ticket, oldest first.
pub async fn rt_history(url: &str, token: &str, id: &str) -> Vec<(String, String)> {
    let h = rt_get(url, token, &format!("/ticket/{id}/history?per_page=100")).await;
    let mut out = Vec::new();
    for item in h["items"].as_array().cloned().unwrap_or_default() {
        let t = rt_get(
            url,
            token,
            &format!("/transaction/{}", item["id"].as_str().unwrap()),
        )
        .await;
        let kind = t["Type"].as_str().unwrap_or_default().to_owned();
        let mut text = String::new();
        for a in t["_hyperlinks"].as_array().cloned().unwrap_or_default() {
            if a["ref"] == "attachment" {
                let path = a["_url"]
                    .as_str()
                    .unwrap()
                    .split("/REST/2.0")
                    .nth(1)
                    .unwrap()
                    .to_owned();
                let att = rt_get(url, token, &path).await;
                if let Some(c) = att["Content"].as_str() {
                    text.push_str(&String::from_utf8_lossy(&base64_decode(c)));
                }
            }
        }
        out.push((kind, text));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exception_ticket_opens_updates_and_resolves_in_request_tracker() {
    let Some([url, token, queue]) =
        Peers::load().require("itsm_rt", ["GT_RT_URL", "GT_RT_TOKEN", "GT_RT_QUEUE"])
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("s.db")).await.unwrap();
    // A key unique to this run, so reruns against the same RT never see an older ticket.
    let key = format!(
        "serial:GTRT{}",
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_millis()
    );
    let s = ItsmSettings {
        update_interval: Duration::ZERO,
        rt: Some(RtSettings {
            url: url.parse().unwrap(),
            token: token.clone(),
            queue: queue.clone(),
        }),
        rules: vec![Rule {
            name: "dups".into(),
            watch: Watch::Exception {
                kinds: vec!["duplicate_serial_in_cmdb".into()],
            },
        }],
        ..ItsmSettings::default()
    };
    let sinks = Sinks::new(&s).unwrap();
    let rules = Rules::builtin("DC1");
    let now = SystemTime::now();

    store
        .raise_exception(&key, "duplicate_serial_in_cmdb", "2 NetBox devices: 11, 12")
        .await
        .unwrap();
    assert_eq!(itsm::evaluate(&store, &rules, &s, now).await.unwrap().opened, 1);
    assert_eq!(itsm::evaluate(&store, &rules, &s, now).await.unwrap().opened, 0);
    let r = itsm::deliver(&store, &sinks, &s, now).await.unwrap();
    assert_eq!((r.delivered, r.dead, r.retried), (1, 0, 0), "{r:?}");
    let ticket = store.all_tickets().await.unwrap().remove(0);
    let rt_id = store
        .ticket_ref(ticket.id, "rt")
        .await
        .unwrap()
        .expect("RT ticket id recorded");
    let t = rt_get(&url, &token, &format!("/ticket/{rt_id}")).await;
    assert_eq!(t["Status"], "new", "{t}");
    assert!(
        t["Subject"]
            .as_str()
            .unwrap()
            .starts_with(&format!("[groundtruth] duplicate_serial_in_cmdb on {key}")),
        "{t}"
    );

    // Update, then clear: a comment each, and the ticket resolved.
    store
        .raise_exception(&key, "duplicate_serial_in_cmdb", "3 NetBox devices: 11, 12, 13")
        .await
        .unwrap();
    assert_eq!(itsm::evaluate(&store, &rules, &s, now).await.unwrap().updated, 1);
    store.resolve_exceptions(&key, &[]).await.unwrap();
    assert_eq!(itsm::evaluate(&store, &rules, &s, now).await.unwrap().resolved, 1);
    let r = itsm::deliver(&store, &sinks, &s, now).await.unwrap();
    assert_eq!((r.delivered, r.dead), (2, 0), "{r:?}");
    let t = rt_get(&url, &token, &format!("/ticket/{rt_id}")).await;
    assert_eq!(t["Status"], "resolved", "{t}");
    let history = rt_history(&url, &token, &rt_id).await;
    let comments: Vec<&str> = history
        .iter()
        .filter(|(k, _)| k == "Comment")
        .map(|(_, text)| text.as_str())
        .collect();
    assert_eq!(comments.len(), 2, "{history:?}");
    assert!(
        comments[0].contains("3 NetBox devices: 11, 12, 13"),
        "{comments:?}"
    );
    assert!(comments[1].starts_with("cleared: "), "{comments:?}");
    assert!(
        history
            .iter()
            .any(|(k, text)| k == "Create" && text.contains("2 NetBox devices: 11, 12")),
        "{history:?}"
    );
}

/// A real UPS recording (APC Smart-UPS, snmpsim) polled by the agent and committed through the
/// collector's ingest: its power source reaches the `ups_on_battery` rule, which observes it
/// on line (no ticket). The on-battery transition itself is unit-tested in `itsm::tests`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ups_power_source_from_a_real_poll_reaches_the_rules() {
    let Some([addr, shared]) =
        Peers::load().require("itsm_ups", ["GT_SNMPSIM_ADDR", "GT_SNMPSIM_SHARED_DATA"])
    else {
        return;
    };
    if shared != "1" {
        eprintln!("SKIP: itsm_ups: ../shared recordings not served by snmpsim");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("s.db")).await.unwrap();
    let target = groundtruth_agent::target::Target::parse(&format!("snmp://ups-apc-smt750x@{addr}")).unwrap();
    let cx = groundtruth_agent::driver::PollCx::default();
    let (report, err) = groundtruth_agent::driver::poll(&target, &cx).await;
    assert!(err.is_none(), "{err:?}");
    let batch = groundtruth_collector::store::testdb::batch("itsm-ups", "", 1, vec![report]);
    let (tx, _rx) = tokio::sync::watch::channel(0);
    let ingest = groundtruth_collector::ingest::IngestService::new(store.clone(), tx);
    ingest.handle(&batch).await.unwrap();
    let attrs = store.device_attributes().await.unwrap();
    let ups = &attrs["serial:AS1907242163"];
    assert_eq!(ups["output_status"].0, "on_line", "{ups:?}");

    let s = ItsmSettings {
        rules: vec![Rule {
            name: "ups".into(),
            watch: Watch::UpsOnBattery,
        }],
        ..ItsmSettings::default()
    };
    let r = itsm::evaluate(&store, &Rules::builtin("DC1"), &s, SystemTime::now())
        .await
        .unwrap();
    assert_eq!((r.active, r.opened), (0, 0), "{r:?}");
}
