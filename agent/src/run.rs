//! The `run` command: poll every configured target on an interval and deliver each round to the
//! collector as one batch. Each batch is appended to the durable [`Spool`] (fsynced) before it is
//! sent, and leaves the spool only when the collector acknowledges it, so a collector outage or an
//! agent crash loses nothing: the backlog is replayed in order on the next round. Per-target
//! schedules and MQTT are issue #8.

use std::time::SystemTime;

use groundtruth_proto::v1::{AgentInfo, Batch, BatchKind, DeviceReport, PollOutcome};

use crate::config::Config;
use crate::driver::{self, Limits, PollCx};
use crate::spool::{Spool, SpoolLimits};
use crate::uplink::mqtt::MqttUplink;
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
    /// Sealed batches not yet acknowledged.
    spool: Spool,
    uplink: Uplink,
}

/// The configured way to the collector.
#[derive(Debug)]
enum Uplink {
    Grpc(String),
    Mqtt(Box<MqttUplink>),
}

/// Most spooled batches sent in one delivery (the replay rate limit: one such burst per round).
const MAX_BATCHES_PER_DELIVERY: usize = 100;

impl Agent {
    /// # Errors
    /// If the state directory cannot be opened.
    pub fn new(config: Config) -> anyhow::Result<Self> {
        let mut sequencer = Sequencer::open(&config.state_dir)
            .map_err(|e| anyhow::anyhow!("opening agent state in {}: {e}", config.state_dir.display()))?;
        let limits = SpoolLimits {
            max_bytes: config.spool_max_bytes,
            ..SpoolLimits::default()
        };
        let (spool, recovery) = Spool::open(&config.state_dir.join("spool"), limits)?;
        if recovery.pending > 0 || recovery.lost_records > 0 {
            tracing::info!(
                pending = recovery.pending,
                lost_records = recovery.lost_records,
                lost_bytes = recovery.lost_bytes,
                "Recovered the spool; unacknowledged batches will be resent."
            );
        }
        sequencer.raise_to(spool.last_seq(sequencer.epoch()));
        let uplink = match (&config.mqtt, &config.collector_grpc) {
            (Some(m), _) => Uplink::Mqtt(Box::new(MqttUplink::start(m.clone()))),
            (None, Some(g)) => Uplink::Grpc(g.clone()),
            (None, None) => anyhow::bail!("no uplink configured ([collector] grpc or [mqtt] url)"),
        };
        Ok(Self {
            config,
            sequencer,
            spool,
            uplink,
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
        let seq = self.sequencer.next();
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
        self.spool.append(&batch)?;
        self.sequencer.commit(seq)?;
        let outgoing = self.spool.pending(MAX_BATCHES_PER_DELIVERY)?;
        let timeout = self.config.delivery_timeout;
        let delivered = match &mut self.uplink {
            Uplink::Grpc(endpoint) => grpc::deliver(endpoint, outgoing, timeout).await,
            Uplink::Mqtt(m) => m.deliver(outgoing, timeout).await,
        };
        match delivered {
            Ok(acks) => {
                summary.delivered_batches = acks.len();
                for a in &acks {
                    self.spool.ack(a.epoch, a.seq)?;
                }
            }
            Err(e) => tracing::warn!(
                error = %e,
                spooled = self.spool.len(),
                spool_bytes = self.spool.bytes(),
                "Delivery failed; the batches stay in the spool and are resent next round."
            ),
        }
        summary.pending_batches = self.spool.len();
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
