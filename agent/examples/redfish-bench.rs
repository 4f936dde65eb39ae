//! The groundtruth side of `bench/redfish.sh`: the Redfish driver against one service, in
//! process, counting its own requests. Prints one JSON object on stdout.
//!
//! `redfish-bench <target-url> <refreshes> <steady-polls>`
//!
//! * `cold`: the first poll of a fresh endpoint (connection, TLS handshake, `$expand` probe, full
//!   inventory, readings).
//! * `refresh`: `refreshes` further full inventories on the warm endpoint (`inventory_refresh=0s`),
//!   median wall time and requests per inventory.
//! * `steady`: `steady-polls` polls with the inventory cached (only power/thermal resources).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::cast_precision_loss)]

use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use groundtruth_agent::driver::{self, PollCx, redfish::client};
use groundtruth_agent::target::Target;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let url = args
        .first()
        .expect("usage: redfish-bench <target-url> <refreshes> <steady-polls>");
    let refreshes: usize = args.get(1).map_or(5, |a| a.parse().unwrap());
    let steady: usize = args.get(2).map_or(20, |a| a.parse().unwrap());
    groundtruth_agent::install_crypto_provider();
    let cx = PollCx::default();
    let sep = if url.contains('?') { '&' } else { '?' };

    // Full inventory every poll.
    let target = Target::parse(&format!("{url}{sep}inventory_refresh=0s")).unwrap();
    let Target::Redfish(t) = &target else {
        panic!("not a Redfish target")
    };
    let ep = client::endpoint(t, &cx).unwrap();
    let poll = |target: Target| {
        let cx = cx.clone();
        async move {
            let t0 = Instant::now();
            let (reports, err) = driver::poll_all(&target, &cx).await;
            if let Some(e) = err {
                panic!("poll failed: {e}");
            }
            (t0.elapsed().as_secs_f64(), reports)
        }
    };
    let n0 = ep.requests.load(Relaxed);
    let (cold_s, reports) = poll(target.clone()).await;
    let cold_n = ep.requests.load(Relaxed) - n0;
    let readings: usize = reports.iter().map(|r| r.readings.len()).sum();
    let macs: usize = reports
        .iter()
        .map(|r| r.identity.as_ref().map_or(0, |i| i.macs.len()))
        .sum();
    let mut times = Vec::new();
    let n0 = ep.requests.load(Relaxed);
    for _ in 0..refreshes {
        times.push(poll(target.clone()).await.0);
    }
    let refresh_n = (ep.requests.load(Relaxed) - n0) as f64 / refreshes.max(1) as f64;
    times.sort_by(f64::total_cmp);
    let refresh_s = times.get(times.len() / 2).copied().unwrap_or(0.0);
    ep.close().await;

    // Inventory cached: the steady-state power/thermal poll.
    let target = Target::parse(url).unwrap();
    let Target::Redfish(t) = &target else {
        unreachable!()
    };
    let ep = client::endpoint(t, &cx).unwrap();
    poll(target.clone()).await;
    let n0 = ep.requests.load(Relaxed);
    let mut times = Vec::new();
    for _ in 0..steady {
        times.push(poll(target.clone()).await.0);
    }
    let steady_n = (ep.requests.load(Relaxed) - n0) as f64 / steady.max(1) as f64;
    times.sort_by(f64::total_cmp);
    let steady_s = times.get(times.len() / 2).copied().unwrap_or(0.0);
    driver::redfish::close_all_sessions().await;

    println!(
        "{{\"devices\":{},\"readings\":{readings},\"macs\":{macs},\"cold\":{{\"requests\":{cold_n},\"seconds\":{cold_s:.4}}},\"refresh\":{{\"n\":{refreshes},\"requests\":{refresh_n:.1},\"median_seconds\":{refresh_s:.4}}},\"steady\":{{\"n\":{steady},\"requests\":{steady_n:.1},\"median_seconds\":{steady_s:.5}}}}}",
        reports.len()
    );
}
