//! The agent's own HTTP endpoint (loopback by default): `/metrics` in the Prometheus text format
//! and `/status` as JSON (what `groundtruth-agent status` prints). Counters come from
//! [`Stats`]; metric names follow `groundtruth_agent_<noun>_<unit>[_total]`.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::extract::State;
use axum::routing::get;

use crate::schedule::{PROTOCOLS, Stats};

/// What the endpoint serves.
#[derive(Debug)]
pub struct Exposed {
    pub stats: Arc<Stats>,
    pub agent_id: String,
    pub started: std::time::Instant,
}

/// Renders the Prometheus text exposition.
#[must_use]
pub fn render(e: &Exposed) -> String {
    let s = &e.stats;
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, samples: &[(String, u64)]| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, v) in samples {
            let _ = writeln!(out, "{name}{labels} {v}");
        }
    };
    let per = |f: &dyn Fn(usize) -> u64| -> Vec<(String, u64)> {
        PROTOCOLS
            .iter()
            .enumerate()
            .map(|(i, p)| (format!("{{protocol=\"{p}\"}}"), f(i)))
            .collect()
    };
    let mut polls = Vec::new();
    for (i, p) in PROTOCOLS.iter().enumerate() {
        let ps = &s.by_protocol[i];
        polls.push((
            format!("{{protocol=\"{p}\",outcome=\"ok\"}}"),
            ps.ok.load(Ordering::Relaxed),
        ));
        polls.push((
            format!("{{protocol=\"{p}\",outcome=\"failed\"}}"),
            ps.failed.load(Ordering::Relaxed),
        ));
    }
    metric(
        "groundtruth_agent_polls_total",
        "counter",
        "Polls by protocol and outcome.",
        &polls,
    );
    metric(
        "groundtruth_agent_poll_duration_milliseconds_sum",
        "counter",
        "Total time spent polling, by protocol (divide by polls_total for the mean).",
        &per(&|i| s.by_protocol[i].duration_ms.load(Ordering::Relaxed)),
    );
    let one = |v: &std::sync::atomic::AtomicU64| vec![(String::new(), v.load(Ordering::Relaxed))];
    metric(
        "groundtruth_agent_polls_missed_total",
        "counter",
        "Poll slots skipped because a poll overran its interval.",
        &one(&s.polls_missed),
    );
    metric(
        "groundtruth_agent_poll_kinds_total",
        "counter",
        "Polls that read each kind of data (identity, telemetry, topology: per-kind intervals).",
        &crate::schedule::KINDS
            .iter()
            .enumerate()
            .map(|(i, k)| {
                (
                    format!("{{kind=\"{k}\"}}"),
                    s.polls_by_kind[i].load(Ordering::Relaxed),
                )
            })
            .collect::<Vec<_>>(),
    );
    metric(
        "groundtruth_agent_readings_dropped_total",
        "counter",
        "Reports dropped before reaching the spool.",
        &[(
            "{reason=\"batcher_full\"}".into(),
            s.reports_dropped.load(Ordering::Relaxed),
        )],
    );
    metric(
        "groundtruth_agent_batches_sealed_total",
        "counter",
        "Batches written to the spool.",
        &one(&s.batches_sealed),
    );
    metric(
        "groundtruth_agent_batches_acked_total",
        "counter",
        "Batches acknowledged by the collector.",
        &one(&s.batches_acked),
    );
    metric(
        "groundtruth_agent_spool_records",
        "gauge",
        "Batches in the spool awaiting acknowledgement.",
        &one(&s.spool_batches),
    );
    metric(
        "groundtruth_agent_spool_bytes",
        "gauge",
        "Bytes of unacknowledged batches in the spool.",
        &one(&s.spool_bytes),
    );
    metric(
        "groundtruth_agent_spool_dropped_total",
        "counter",
        "Batches dropped by the spool (size cap or corruption), over the spool's lifetime.",
        &one(&s.spool_dropped_total),
    );
    metric(
        "groundtruth_agent_targets",
        "gauge",
        "Targets being polled.",
        &one(&s.targets),
    );
    out
}

/// The `/status` document.
#[must_use]
pub fn status(e: &Exposed) -> serde_json::Value {
    let s = &e.stats;
    let l = |v: &std::sync::atomic::AtomicU64| v.load(Ordering::Relaxed);
    serde_json::json!({
        "agent_id": e.agent_id,
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_seconds": e.started.elapsed().as_secs(),
        "targets": l(&s.targets),
        "polls_ok": l(&s.polls_ok),
        "polls_failed": l(&s.polls_failed),
        "polls_missed": l(&s.polls_missed),
        "polls_identity": l(&s.polls_by_kind[0]),
        "polls_telemetry": l(&s.polls_by_kind[1]),
        "polls_topology": l(&s.polls_by_kind[2]),
        "reports_dropped": l(&s.reports_dropped),
        "batches_sealed": l(&s.batches_sealed),
        "batches_acked": l(&s.batches_acked),
        "spool_batches": l(&s.spool_batches),
        "spool_bytes": l(&s.spool_bytes),
        "spool_dropped_total": l(&s.spool_dropped_total),
    })
}

/// Serves `/metrics` and `/status` on `listen` until the task is dropped.
///
/// # Errors
/// If the address cannot be bound.
pub async fn serve(listen: SocketAddr, exposed: Arc<Exposed>) -> std::io::Result<()> {
    let app = Router::new()
        .route(
            "/metrics",
            get(|State(e): State<Arc<Exposed>>| async move { render(&e) }),
        )
        .route(
            "/status",
            get(|State(e): State<Arc<Exposed>>| async move { axum::Json(status(&e)) }),
        )
        .with_state(exposed);
    let listener = tokio::net::TcpListener::bind(listen).await?;
    tracing::info!(listen = %listen, "Serving /metrics and /status.");
    axum::serve(listener, app).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_has_help_type_and_labelled_samples() {
        let stats = Arc::new(Stats::default());
        stats.by_protocol[2].ok.fetch_add(3, Ordering::Relaxed);
        stats.spool_bytes.store(4096, Ordering::Relaxed);
        stats.polls_by_kind[0].fetch_add(2, Ordering::Relaxed);
        let e = Exposed {
            stats,
            agent_id: "a".into(),
            started: std::time::Instant::now(),
        };
        let text = render(&e);
        assert!(text.contains("# TYPE groundtruth_agent_polls_total counter"));
        assert!(text.contains("groundtruth_agent_polls_total{protocol=\"redfish\",outcome=\"ok\"} 3"));
        assert!(text.contains("groundtruth_agent_spool_bytes 4096"));
        assert!(text.contains("groundtruth_agent_poll_kinds_total{kind=\"identity\"} 2"));
        // Every sample line is "name{labels} value" or "name value".
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (_, v) = line.rsplit_once(' ').unwrap();
            v.parse::<u64>().unwrap();
        }
        assert_eq!(status(&e)["spool_bytes"], 4096);
    }
}
