//! The groundtruth side of `bench/snmp.sh` and `bench/modbus.sh` (release build; the scripts run
//! the reference tools side by side). Subcommands print one JSON object on stdout:
//!
//! * `snmp-walk <target-url> <base-oid> <reps>` — the agent's own walk (`walk_count`: the code
//!   path of every poll, GETBULK with the URL's `max_repetitions`) of `base-oid`, `reps` times,
//!   one client per walk as in a poll.
//! * `modbus <target-url> <holding|input> <address> <seconds>` — polls a map of ten float32
//!   values read with `max_registers = 2` (ten 2-register requests per poll, the TCP connection
//!   kept between polls as in the agent) for `seconds`; requests per second.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_precision_loss,
    unreachable_pub
)]

use std::time::{Duration, Instant};

use groundtruth_agent::driver::{PollCx, modbus};
use groundtruth_agent::target::Target;
use groundtruth_proto::v1::PollOutcome;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("snmp-walk") if args.len() == 4 => snmp_walk(&args[1], &args[2], args[3].parse().unwrap()).await,
        Some("modbus") if args.len() == 5 => {
            modbus_rps(
                &args[1],
                &args[2],
                args[3].parse().unwrap(),
                args[4].parse().unwrap(),
            )
            .await;
        }
        _ => {
            eprintln!("usage: gt-bench-drv snmp-walk URL OID REPS | modbus URL TABLE ADDRESS SECONDS");
            std::process::exit(2);
        }
    }
}

async fn snmp_walk(url: &str, base: &str, reps: u32) {
    let Target::Snmp(t) = Target::parse(url).unwrap() else {
        panic!("not an SNMP target: {url}")
    };
    let mut cx = PollCx::default();
    cx.limits.max_walk_varbinds = 1_000_000;
    cx.limits.request_timeout = Duration::from_secs(3);
    let mut n = 0;
    let mut per_walk = Vec::new();
    let t0 = Instant::now();
    for _ in 0..reps {
        let w0 = Instant::now();
        n = groundtruth_agent::driver::snmp::walk_count(&t, &cx, base)
            .await
            .unwrap();
        per_walk.push(w0.elapsed().as_secs_f64());
    }
    let s = t0.elapsed().as_secs_f64();
    per_walk.sort_by(f64::total_cmp);
    let median = per_walk.get(per_walk.len() / 2).copied().unwrap_or_default();
    println!("{{\"varbinds\":{n},\"reps\":{reps},\"seconds\":{s:.4},\"median_walk_seconds\":{median:.5}}}");
}

async fn modbus_rps(url: &str, table: &str, address: u16, secs: f64) {
    let mut text = String::from("name = \"bench\"\nmax_registers = 2\n");
    for i in 0..10 {
        text.push_str(&format!(
            "[[reading]]\nmetric = \"voltage\"\nunit = \"V\"\ntable = \"{table}\"\naddress = {}\ntype = \"float32\"\n",
            address + 2 * i
        ));
    }
    let m = modbus::map::parse("bench.toml", "bench", &text).unwrap();
    let Target::Modbus(t) = Target::parse(url).unwrap() else {
        panic!("not a Modbus target: {url}")
    };
    let mut cx = PollCx::default();
    cx.limits.request_timeout = Duration::from_secs(2);
    let (mut n, t0) = (0u64, Instant::now());
    while t0.elapsed().as_secs_f64() < secs {
        let r = modbus::poll_with_map(&t, &m, &cx).await.unwrap();
        let outcome = r.status.as_ref().map_or(PollOutcome::Ok as i32, |s| s.outcome);
        assert_eq!(outcome, PollOutcome::Ok as i32, "{:?}", r.status);
        n += 10;
    }
    let s = t0.elapsed().as_secs_f64();
    println!(
        "{{\"requests\":{n},\"seconds\":{s:.4},\"rps\":{:.1}}}",
        n as f64 / s
    );
}
