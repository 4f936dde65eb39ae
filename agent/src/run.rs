//! The `run` command: poll every configured target on an interval and deliver each round to the
//! collector as one batch. Walking-skeleton scope: one round at a time, delivery retried on the
//! next round while the batch is held in memory; the durable spool, per-target schedules and MQTT
//! are issue #8.

use std::time::{Duration, SystemTime};

use groundtruth_proto::v1::{AgentInfo, Batch, BatchKind, DeviceReport, PollOutcome};

use crate::config::Config;
use crate::driver::{self, Limits, PollCx};
use crate::uplink::{grpc, sequence::Sequencer};

/// Summary of one round, for the operator.
#[derive(Debug, Default)]
pub struct RoundSummary {
    pub polled: usize,
    pub failed: usize,
    pub delivered_batches: usize,
    pub pending_batches: usize,
}

/// The agent's long-lived state.
#[derive(Debug)]
pub struct Agent {
    config: Config,
    sequencer: Sequencer,
    /// Sealed batches not yet acknowledged, oldest first (bounded by `MAX_PENDING`).
    pending: Vec<Batch>,
}

/// Batches held in memory while the collector is unreachable (until the disk spool lands).
const MAX_PENDING: usize = 1000;

impl Agent {
    /// # Errors
    /// If the state directory cannot be opened.
    pub fn new(config: Config) -> anyhow::Result<Self> {
        let sequencer = Sequencer::open(&config.state_dir)
            .map_err(|e| anyhow::anyhow!("opening agent state in {}: {e}", config.state_dir.display()))?;
        Ok(Self {
            config,
            sequencer,
            pending: Vec::new(),
        })
    }

    fn cx(&self) -> PollCx {
        PollCx {
            limits: Limits {
                request_timeout: self.config.timeout,
                retries: self.config.retries,
                ..Limits::default()
            },
        }
    }

    /// Polls every target concurrently once; a failing target is logged and reported, the rest
    /// go on.
    pub async fn poll_all(&self) -> Vec<(String, DeviceReport)> {
        let cx = self.cx();
        let polls = self.config.targets.iter().map(|t| {
            let cx = &cx;
            async move {
                let (report, err) = driver::poll(&t.target, cx).await;
                if let Some(e) = err {
                    tracing::warn!(target_name = %t.name, endpoint = %t.target.endpoint_key(), error = %e, "Poll failed.");
                }
                (t.name.clone(), report)
            }
        });
        futures::future::join_all(polls).await
    }

    /// One round: poll, seal a batch, deliver it (and anything pending).
    ///
    /// # Errors
    /// Only for local failures (state file); delivery failures keep the batch pending.
    pub async fn round(&mut self) -> anyhow::Result<RoundSummary> {
        let reports = self.poll_all().await;
        let mut summary = RoundSummary {
            polled: reports.len(),
            ..Default::default()
        };
        summary.failed = reports
            .iter()
            .filter(|(_, r)| {
                r.status.as_ref().is_some_and(|s| {
                    s.outcome != PollOutcome::Ok as i32 && s.outcome != PollOutcome::Partial as i32
                })
            })
            .count();
        let seq = self.sequencer.reserve()?;
        let batch = Batch {
            schema_version: groundtruth_proto::v1::SCHEMA_VERSION,
            agent: Some(AgentInfo {
                agent_id: self.config.agent_id.clone(),
                site: self.config.site.clone(),
                version: env!("CARGO_PKG_VERSION").into(),
                hostname: hostname(),
            }),
            epoch: self.sequencer.epoch(),
            seq,
            created_at: Some(SystemTime::now().into()),
            kind: BatchKind::Mixed as i32,
            devices: reports.into_iter().map(|(_, r)| r).collect(),
        };
        self.pending.push(batch);
        if self.pending.len() > MAX_PENDING {
            let dropped = self.pending.len() - MAX_PENDING;
            self.pending.drain(..dropped);
            tracing::error!(
                dropped,
                reason = "pending_full",
                "Dropped the oldest undelivered batches."
            );
        }
        match grpc::deliver(
            &self.config.collector_grpc,
            self.pending.clone(),
            Duration::from_secs(30),
        )
        .await
        {
            Ok(acks) => {
                summary.delivered_batches = acks.len();
                self.pending
                    .retain(|b| !acks.iter().any(|a| a.epoch == b.epoch && a.seq == b.seq));
            }
            Err(e) => {
                tracing::warn!(error = %e, pending = self.pending.len(), "Delivery failed; will retry next round.")
            }
        }
        summary.pending_batches = self.pending.len();
        Ok(summary)
    }

    #[must_use]
    pub fn config(&self) -> &Config {
        &self.config
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}
