//! The agent's runtime. [`Agent::run`] is the long-running service: the [`Scheduler`] polls each
//! target on its own interval; this module's batcher seals reports into batches (by size and age)
//! and appends each to the durable [`Spool`] (fsynced); a sender task delivers the spool's oldest
//! batches and trims what the collector acknowledges, backing off while the collector or broker is
//! unreachable and draining the backlog in order when it is back. [`Agent::round`] is the one-shot
//! form (`run --once`): poll everything once, seal one batch, deliver.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use groundtruth_proto::v1::{AgentInfo, Batch, BatchKind, DeviceReport, PollOutcome};

use crate::config::{Config, Intervals};
use crate::discover::Found;
use crate::driver::{self, Limits, PollCx};
use crate::schedule::{self, Polled, Scheduler, Stats};
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
    Grpc(grpc::Collectors),
    Mqtt(Box<MqttUplink>),
}

impl Uplink {
    async fn deliver(
        &mut self,
        outgoing: Vec<groundtruth_proto::v1::Batch>,
        timeout: Duration,
    ) -> Result<Vec<groundtruth_proto::v1::Ack>, String> {
        match self {
            Self::Grpc(c) => c.deliver(outgoing, timeout).await.map_err(|e| e.to_string()),
            Self::Mqtt(m) => m.deliver(outgoing, timeout).await.map_err(|e| e.to_string()),
        }
    }
}

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
        let uplink = match (&config.mqtt, config.collector_grpc.is_empty()) {
            (Some(m), _) => Uplink::Mqtt(Box::new(MqttUplink::start(m.clone()))),
            (None, false) => Uplink::Grpc(grpc::Collectors::new(
                config.collector_grpc.clone(),
                config.grpc_tls.clone(),
            )),
            (None, true) => anyhow::bail!("no uplink configured ([collector] grpc or [mqtt] url)"),
        };
        Ok(Self {
            config,
            sequencer,
            spool,
            uplink,
        })
    }

    fn cx(&self) -> PollCx {
        cx_of(&self.config)
    }

    /// Polls every target concurrently once; a failing target is logged and reported, the rest
    /// go on.
    pub async fn poll_all(&self) -> Vec<(String, DeviceReport)> {
        let cx = self.cx();
        let polls = self.config.targets.iter().map(|t| {
            let cx = &cx;
            async move {
                let (reports, err) = driver::poll_all(&t.target, cx).await;
                if let Some(e) = err {
                    tracing::warn!(target_name = %t.name, endpoint = %t.target.endpoint_key(), error = %e, "Poll failed.");
                }
                reports.into_iter().map(|r| (t.name.clone(), r)).collect::<Vec<_>>()
            }
        });
        futures::future::join_all(polls)
            .await
            .into_iter()
            .flatten()
            .collect()
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
        seal(
            &self.config,
            &mut self.sequencer,
            &mut self.spool,
            reports.into_iter().map(|(_, r)| r).collect(),
            BatchKind::Mixed,
        )?;
        let outgoing = self.spool.pending(self.config.replay_batches_per_delivery)?;
        let timeout = self.config.delivery_timeout;
        let delivered = self.uplink.deliver(outgoing, timeout).await;
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

fn cx_of(config: &Config) -> PollCx {
    PollCx {
        limits: Limits {
            request_timeout: config.timeout,
            retries: config.retries,
            ..Limits::default()
        },
        ..Default::default()
    }
}

fn targets_of(config: &Config) -> Vec<(crate::config::TargetConfig, Intervals)> {
    config
        .targets
        .iter()
        .map(|t| (t.clone(), t.intervals.over(config.intervals)))
        .collect()
}

/// Seals `devices` into the next batch and appends it to the spool (durably); the sequence
/// number counts as used only once the batch is on disk.
fn seal(
    config: &Config,
    sequencer: &mut Sequencer,
    spool: &mut Spool,
    devices: Vec<DeviceReport>,
    kind: BatchKind,
) -> anyhow::Result<()> {
    let seq = sequencer.next();
    let batch = Batch {
        schema_version: groundtruth_proto::v1::SCHEMA_VERSION,
        agent: Some(AgentInfo {
            agent_id: config.agent_id.clone(),
            site: config.site.clone(),
            version: env!("CARGO_PKG_VERSION").into(),
            hostname: hostname(),
        }),
        epoch: sequencer.epoch(),
        seq,
        created_at: Some(SystemTime::now().into()),
        kind: kind as i32,
        devices,
    };
    spool.append(&batch)?;
    sequencer.commit(seq)?;
    Ok(())
}

/// Spool and sequencer, shared by the batcher (appends) and the sender (reads, acks).
type Durable = Arc<Mutex<(Sequencer, Spool)>>;

fn lock(d: &Durable) -> std::sync::MutexGuard<'_, (Sequencer, Spool)> {
    // A panic while holding the lock cannot leave the spool inconsistent on disk (every change
    // is a completed append or an atomic rename), so a poisoned lock is safe to take over.
    d.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Agent {
    /// Runs the agent until `shutdown` completes. A new config on `reload` (SIGHUP) changes the
    /// polled targets without a restart; changes to the agent's identity or uplink are logged
    /// as needing a restart.
    ///
    /// # Errors
    /// Only for failures that stop the agent as a whole.
    pub async fn run(
        self,
        mut reload: tokio::sync::mpsc::Receiver<Config>,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> anyhow::Result<()> {
        let Agent {
            mut config,
            sequencer,
            spool,
            uplink,
        } = self;
        let stats = Arc::new(Stats::default());
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Polled>(4096);
        let mut scheduler = Scheduler::new(
            tx,
            schedule::Limits::new(config.max_concurrent_polls),
            Arc::clone(&stats),
            schedule::driver_poll(),
        );
        scheduler.apply(&targets_of(&config), &cx_of(&config));
        tracing::info!(targets = scheduler.len(), "Polling started.");
        let (sweep_tx, mut sweep_rx) = tokio::sync::mpsc::channel::<(String, Vec<Found>)>(16);
        let mut sweeps = start_sweeps(&config, &sweep_tx);
        let mut discovered = Discovered::default();
        if let Some(listen) = config.metrics_listen {
            let exposed = Arc::new(crate::metrics::Exposed {
                stats: Arc::clone(&stats),
                agent_id: config.agent_id.clone(),
                started: std::time::Instant::now(),
            });
            tokio::spawn(async move {
                if let Err(e) = crate::metrics::serve(listen, exposed).await {
                    tracing::error!(listen = %listen, error = %e, "Cannot serve /metrics and /status (set agent.metrics_listen, or \"off\").");
                }
            });
        }
        gauges(&stats, &spool);
        let durable: Durable = Arc::new(Mutex::new((sequencer, spool)));
        let wake = Arc::new(tokio::sync::Notify::new());
        let sender = tokio::spawn(send_loop(
            Arc::clone(&durable),
            uplink,
            Arc::clone(&wake),
            Arc::clone(&stats),
            Replay {
                timeout: config.delivery_timeout,
                per_delivery: config.replay_batches_per_delivery,
                max_per_second: config.replay_max_batches_per_second,
            },
        ));
        // Start by replaying whatever the spool holds from before.
        wake.notify_one();

        let mut buffer = Buffer::default();
        let mut oldest: Option<tokio::time::Instant> = None;
        tokio::pin!(shutdown);
        loop {
            let flush_at = oldest.map(|t| t + config.batch_max_delay);
            tokio::select! {
                Some(p) = rx.recv() => {
                    if buffer.is_empty() {
                        oldest = Some(tokio::time::Instant::now());
                    }
                    buffer.push(p.kind, p.report);
                    if buffer.len() >= config.batch_max_devices {
                        flush(&config, &durable, &mut buffer, &mut oldest, &stats, &wake);
                    }
                }
                () = async { if let Some(t) = flush_at { tokio::time::sleep_until(t).await } else { std::future::pending().await } } => {
                    flush(&config, &durable, &mut buffer, &mut oldest, &stats, &wake);
                }
                Some((sweep, found)) = sweep_rx.recv() => {
                    let intervals = config.sweeps.iter().find(|s| s.name == sweep).map(|s| s.intervals).unwrap_or_default();
                    let n = found.len();
                    for f in &found {
                        if buffer.is_empty() {
                            oldest = Some(tokio::time::Instant::now());
                        }
                        // A sweep's identification is a full poll.
                        buffer.push(BatchKind::Mixed, f.report.clone());
                    }
                    discovered.merge(&sweep, found, intervals);
                    let mut all = targets_of(&config);
                    all.extend(discovered.targets(config.intervals));
                    scheduler.apply(&all, &cx_of(&config));
                    tracing::info!(sweep = %sweep, found = n, targets = scheduler.len(), "Sweep done; targets updated.");
                }
                Some(new) = reload.recv() => {
                    for t in sweeps.drain(..) {
                        t.abort();
                    }
                    sweeps = start_sweeps(&new, &sweep_tx);
                    discovered.retain_sweeps(&new);
                    if new.agent_id != config.agent_id || new.site != config.site || new.state_dir != config.state_dir
                        || new.collector_grpc != config.collector_grpc || new.mqtt.is_some() != config.mqtt.is_some() {
                        tracing::warn!("Reloaded config changes the agent's identity, state or uplink; those take effect after a restart.");
                    }
                    let mut all = targets_of(&new);
                    all.extend(discovered.targets(new.intervals));
                    scheduler.apply(&all, &cx_of(&new));
                    tracing::info!(targets = scheduler.len(), "Config reloaded.");
                    let keep = (config.agent_id.clone(), config.site.clone());
                    config = new;
                    (config.agent_id, config.site) = keep;
                }
                () = &mut shutdown => {
                    for t in sweeps.drain(..) {
                        t.abort();
                    }
                    drop(scheduler);
                    // Idle Redfish sessions are logged out, not left for the BMC to expire.
                    let _ = tokio::time::timeout(
                        std::time::Duration::from_secs(5),
                        crate::driver::redfish::close_all_sessions(),
                    )
                    .await;
                    flush(&config, &durable, &mut buffer, &mut oldest, &stats, &wake);
                    tracing::info!(spooled = lock(&durable).1.len(), "Stopping; spooled batches are kept for the next start.");
                    sender.abort();
                    return Ok(());
                }
            }
        }
    }
}

/// Targets found by sweeps, keyed by "<sweep>:<endpoint>", with how many sweeps in a row missed
/// them: a device is dropped from polling only after [`MISSES_BEFORE_DROP`] misses, so one
/// sweep during a reboot does not make it disappear.
#[derive(Debug, Default)]
struct Discovered {
    by_key: std::collections::BTreeMap<String, (String, crate::config::TargetConfig, u32)>,
}

const MISSES_BEFORE_DROP: u32 = 3;

impl Discovered {
    fn merge(&mut self, sweep: &str, found: Vec<Found>, intervals: crate::config::IntervalOverrides) {
        let mut seen = std::collections::HashSet::new();
        for f in found {
            let key = format!("{sweep}:{}", f.endpoint_key);
            seen.insert(key.clone());
            let t = crate::config::TargetConfig {
                name: key.clone(),
                target: f.target,
                intervals,
            };
            self.by_key.insert(key, (sweep.to_owned(), t, 0));
        }
        self.by_key.retain(|key, (s, _, misses)| {
            if s != sweep || seen.contains(key) {
                return true;
            }
            *misses += 1;
            if *misses >= MISSES_BEFORE_DROP {
                tracing::info!(target_name = %key, "Device missing from {MISSES_BEFORE_DROP} sweeps in a row; no longer polled.");
                return false;
            }
            true
        });
    }

    fn retain_sweeps(&mut self, config: &Config) {
        self.by_key
            .retain(|_, (s, _, _)| config.sweeps.iter().any(|c| &c.name == s));
    }

    fn targets(&self, defaults: Intervals) -> Vec<(crate::config::TargetConfig, Intervals)> {
        self.by_key
            .values()
            .map(|(_, t, _)| (t.clone(), t.intervals.over(defaults)))
            .collect()
    }
}

/// Starts one task per configured sweep: sweep at once, then every `every`.
fn start_sweeps(
    config: &Config,
    tx: &tokio::sync::mpsc::Sender<(String, Vec<Found>)>,
) -> Vec<tokio::task::JoinHandle<()>> {
    config
        .sweeps
        .iter()
        .map(|sw| {
            let (sw, tx) = (sw.clone(), tx.clone());
            let cx = PollCx {
                limits: Limits {
                    request_timeout: config.timeout,
                    retries: 0,
                    ..Limits::default()
                },
                ..Default::default()
            };
            tokio::spawn(async move {
                loop {
                    let progress = Arc::new(crate::discover::Progress::default());
                    let found = crate::discover::sweep(&sw.spec, &cx, 32, progress).await;
                    if tx.send((sw.name.clone(), found)).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(sw.every).await;
                }
            })
        })
        .collect()
}

/// Copies the spool's size into the exported gauges.
fn gauges(stats: &Stats, spool: &Spool) {
    stats.spool_batches.store(spool.len() as u64, Ordering::Relaxed);
    stats.spool_bytes.store(spool.bytes(), Ordering::Relaxed);
    stats
        .spool_dropped_total
        .store(spool.dropped_total(), Ordering::Relaxed);
}

/// Seals the buffered reports into a batch. On a write failure (disk full, I/O error) the
/// reports stay buffered for the next attempt, bounded: past 10 batches' worth the oldest are
/// dropped and counted.
/// Reports waiting to be sealed, one list per batch kind, so telemetry-only reports travel in
/// TELEMETRY batches (their own MQTT topic) and the rest in INVENTORY/MIXED ones.
#[derive(Debug, Default)]
struct Buffer {
    by_kind: Vec<(BatchKind, Vec<DeviceReport>)>,
}

impl Buffer {
    fn push(&mut self, kind: BatchKind, report: DeviceReport) {
        match self.by_kind.iter_mut().find(|(k, _)| *k == kind) {
            Some((_, list)) => list.push(report),
            None => self.by_kind.push((kind, vec![report])),
        }
    }

    fn len(&self) -> usize {
        self.by_kind.iter().map(|(_, l)| l.len()).sum()
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Seals the buffered reports into batches (one per kind). On a write failure (disk full, I/O
/// error) the reports stay buffered for the next attempt, bounded: past 10 batches' worth the
/// oldest are dropped and counted.
fn flush(
    config: &Config,
    durable: &Durable,
    buffer: &mut Buffer,
    oldest: &mut Option<tokio::time::Instant>,
    stats: &Stats,
    wake: &tokio::sync::Notify,
) {
    let mut guard = lock(durable);
    let (sequencer, spool) = &mut *guard;
    for (kind, list) in &mut buffer.by_kind {
        if list.is_empty() {
            continue;
        }
        match seal(config, sequencer, spool, list.clone(), *kind) {
            Ok(()) => {
                list.clear();
                stats.batches_sealed.fetch_add(1, Ordering::Relaxed);
                gauges(stats, spool);
                wake.notify_one();
            }
            Err(e) => {
                tracing::error!(state_dir = %config.state_dir.display(), error = %format!("{e:#}"), "Cannot write to the spool; keeping reports in memory and retrying.");
                let cap = config.batch_max_devices.saturating_mul(10);
                if list.len() > cap {
                    let n = list.len() - cap;
                    list.drain(..n);
                    let total = stats.reports_dropped.fetch_add(n as u64, Ordering::Relaxed) + n as u64;
                    tracing::error!(
                        dropped = n,
                        dropped_total = total,
                        reason = "spool_unwritable",
                        "Dropped the oldest reports."
                    );
                }
            }
        }
    }
    buffer.by_kind.retain(|(_, l)| !l.is_empty());
    *oldest = if buffer.is_empty() {
        None
    } else {
        Some(tokio::time::Instant::now())
    };
}

/// How the sender replays a backlog.
#[derive(Debug, Clone, Copy)]
struct Replay {
    /// How long one delivery may take.
    timeout: Duration,
    /// Most batches per delivery.
    per_delivery: usize,
    /// Ceiling on batches per second while a backlog drains; `None` = unlimited.
    max_per_second: Option<u32>,
}

/// Delivers the spool's oldest batches whenever woken (new batch) or when the retry timer fires;
/// backs off exponentially (1 s to 60 s) while delivery fails.
async fn send_loop(
    durable: Durable,
    mut uplink: Uplink,
    wake: Arc<tokio::sync::Notify>,
    stats: Arc<Stats>,
    replay: Replay,
) {
    let timeout = replay.timeout;
    let mut backoff = Duration::from_secs(1);
    let mut retry_at: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            () = wake.notified() => {}
            () = async { if let Some(t) = retry_at { tokio::time::sleep_until(t).await } else { std::future::pending().await } } => {}
        }
        retry_at = None;
        loop {
            let started = tokio::time::Instant::now();
            let outgoing = match lock(&durable).1.pending(replay.per_delivery) {
                Ok(b) => b,
                Err(e) => {
                    tracing::error!(error = %e, "Cannot read the spool.");
                    break;
                }
            };
            if outgoing.is_empty() {
                backoff = Duration::from_secs(1);
                break;
            }
            let result = uplink.deliver(outgoing, timeout).await;
            let acked = match result {
                Ok(acks) => {
                    let mut guard = lock(&durable);
                    for a in &acks {
                        if let Err(e) = guard.1.ack(a.epoch, a.seq) {
                            tracing::error!(error = %e, "Cannot record an ack in the spool.");
                        }
                    }
                    stats
                        .batches_acked
                        .fetch_add(acks.len() as u64, Ordering::Relaxed);
                    acks.len()
                }
                Err(e) => {
                    tracing::warn!(error = %e, spooled = lock(&durable).1.len(), retry_in = ?backoff, "Delivery failed; batches stay spooled.");
                    0
                }
            };
            if acked == 0 {
                retry_at = Some(tokio::time::Instant::now() + backoff);
                backoff = (backoff * 2).min(Duration::from_secs(60));
                break;
            }
            backoff = Duration::from_secs(1);
            // The replay ceiling: a delivery of n batches takes at least n / rate seconds, so a
            // long outage's backlog drains at a bounded pace.
            if let Some(rate) = replay.max_per_second {
                let floor = Duration::from_secs_f64(acked as f64 / f64::from(rate));
                tokio::time::sleep_until(started + floor).await;
            }
        }
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}
