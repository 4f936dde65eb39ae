//! The poll scheduler: one task per target, each on its own jittered interval, so a slow or dead
//! target delays nobody else. Each target has one interval per kind of data (inventory,
//! telemetry, topology: [`Intervals`]); it ticks at the shortest and every poll asks the driver
//! only for the kinds that are due ([`PollScope`]). Between inventory polls the task attaches the
//! identity it last read to the readings, so the collector can key them (it keys devices by
//! serial, and a report without one would land on another device row). Concurrency is bounded globally and per protocol (semaphores). A
//! poll that overruns its interval makes the ticker skip: the missed polls are *counted*, never
//! queued up and fired in a burst. Reports go to the batcher over a bounded channel; when it is
//! full (the batcher is stuck, e.g. on a full disk) the report is dropped and counted rather than
//! blocking polling.

use std::collections::HashMap;
use std::future::Future;
use std::hash::{DefaultHasher, Hash as _, Hasher as _};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use groundtruth_proto::v1::{BatchKind, DeviceIdentity, DeviceReport, PollOutcome};
use tokio::sync::{Semaphore, mpsc};
use tokio::time::Instant;

use crate::config::{Intervals, TargetConfig};
use crate::driver::{self, PollCx, PollScope};

/// Poll counters of one protocol.
#[derive(Debug, Default)]
pub struct ProtocolStats {
    pub ok: AtomicU64,
    pub failed: AtomicU64,
    /// Sum of poll durations in milliseconds (with `ok + failed`, the mean).
    pub duration_ms: AtomicU64,
}

/// The protocols the agent speaks, in metric-label form.
pub const PROTOCOLS: [&str; 4] = ["snmp", "modbus", "redfish", "ipmi"];

/// Counters the agent keeps about its own work (exported as metrics and in `status`).
#[derive(Debug, Default)]
pub struct Stats {
    /// Per protocol, indexed like [`PROTOCOLS`].
    pub by_protocol: [ProtocolStats; 4],
    pub targets: AtomicU64,
    pub spool_batches: AtomicU64,
    pub spool_bytes: AtomicU64,
    pub spool_dropped_total: AtomicU64,
    pub polls_ok: AtomicU64,
    pub polls_failed: AtomicU64,
    /// Poll slots skipped because the previous poll of the same target overran its interval.
    pub polls_missed: AtomicU64,
    /// Reports dropped because the batcher could not keep up.
    pub reports_dropped: AtomicU64,
    pub batches_sealed: AtomicU64,
    pub batches_acked: AtomicU64,
    /// Polls that read each kind of data, indexed like [`KINDS`] (per-kind intervals at work).
    pub polls_by_kind: [AtomicU64; 3],
}

/// The kinds of data a poll reads, in metric-label form (see [`crate::driver::Kind`]).
pub const KINDS: [&str; 3] = ["identity", "telemetry", "topology"];

/// Concurrency limits: a global cap and one per protocol.
#[derive(Debug)]
pub struct Limits {
    global: Arc<Semaphore>,
    per_protocol: HashMap<&'static str, Arc<Semaphore>>,
}

impl Limits {
    #[must_use]
    pub fn new(global: usize) -> Self {
        // Per-protocol caps reflect what the devices tolerate: BMCs run out of sessions, an RTU
        // bus carries one request at a time (the driver serialises per bus).
        let per_protocol = [("snmp", global), ("modbus", 32), ("redfish", 16), ("ipmi", 16)]
            .into_iter()
            .map(|(p, n)| (p, Arc::new(Semaphore::new(n.min(global).max(1)))))
            .collect();
        Self {
            global: Arc::new(Semaphore::new(global.max(1))),
            per_protocol,
        }
    }
}

/// A report with the target it came from.
#[derive(Debug)]
pub struct Polled {
    pub target: String,
    pub report: DeviceReport,
    /// The batch kind it belongs in (from the poll's scope); routes MQTT topics.
    pub kind: BatchKind,
}

/// The batch kind of reports from a poll of `scope`.
#[must_use]
pub fn batch_kind(scope: PollScope) -> BatchKind {
    match (scope.identity || scope.topology, scope.telemetry) {
        (true, true) => BatchKind::Mixed,
        (true, false) => BatchKind::Inventory,
        (false, _) => BatchKind::Telemetry,
    }
}

/// How a target is polled: [`driver::poll_all`] in production (one report per device behind the
/// target); tests substitute slow or failing
/// fakes to check the schedule on a paused clock.
pub type PollFn = Arc<
    dyn Fn(
            TargetConfig,
            PollCx,
        ) -> Pin<Box<dyn Future<Output = (Vec<DeviceReport>, Option<driver::DriverError>)> + Send>>
        + Send
        + Sync,
>;

/// The production poll function.
#[must_use]
pub fn driver_poll() -> PollFn {
    Arc::new(|t: TargetConfig, cx: PollCx| Box::pin(async move { driver::poll_all(&t.target, &cx).await }))
}

/// Identifies a target's configuration, secrets included (hashed, never stored or printed), so a
/// reload restarts exactly the targets whose settings changed.
fn fingerprint(t: &TargetConfig, interval: Intervals, cx: &PollCx) -> u64 {
    let mut h = DefaultHasher::new();
    format!("{t:?} {interval:?} {cx:?}").hash(&mut h);
    if let crate::target::Target::Snmp(s) = &t.target {
        s.community.expose().hash(&mut h);
        s.auth.as_ref().map(|a| a.1.expose()).hash(&mut h);
        s.privacy.as_ref().map(|a| a.1.expose()).hash(&mut h);
    }
    if let crate::target::Target::Redfish(r) = &t.target {
        r.password.as_ref().map(|p| p.expose()).hash(&mut h);
    }
    if let crate::target::Target::Ipmi(i) = &t.target {
        i.password.expose().hash(&mut h);
    }
    h.finish()
}

/// Spreads targets over the interval: a stable offset from the target's name, so restarts do not
/// make every target fire at once.
fn initial_offset(name: &str, interval: Duration) -> Duration {
    let mut h = DefaultHasher::new();
    name.hash(&mut h);
    let ms = u64::try_from(interval.as_millis()).unwrap_or(u64::MAX).max(1);
    Duration::from_millis(h.finish() % ms)
}

/// The running per-target tasks.
pub struct Scheduler {
    tasks: HashMap<String, (u64, tokio::task::JoinHandle<()>)>,
    tx: mpsc::Sender<Polled>,
    limits: Arc<Limits>,
    stats: Arc<Stats>,
    poll: PollFn,
}

impl std::fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduler")
            .field("targets", &self.tasks.len())
            .finish_non_exhaustive()
    }
}

impl Drop for Scheduler {
    fn drop(&mut self) {
        for (_, (_, task)) in self.tasks.drain() {
            task.abort();
        }
    }
}

impl Scheduler {
    #[must_use]
    pub fn new(tx: mpsc::Sender<Polled>, limits: Limits, stats: Arc<Stats>, poll: PollFn) -> Self {
        Self {
            tasks: HashMap::new(),
            tx,
            limits: Arc::new(limits),
            stats,
            poll,
        }
    }

    /// Makes the running set equal `targets`: starts new ones, restarts changed ones, stops
    /// removed ones; unchanged targets keep their schedule.
    pub fn apply(&mut self, targets: &[(TargetConfig, Intervals)], cx: &PollCx) {
        let wanted: HashMap<&str, (&TargetConfig, Intervals, u64)> = targets
            .iter()
            .map(|(t, iv)| (t.name.as_str(), (t, *iv, fingerprint(t, *iv, cx))))
            .collect();
        self.tasks
            .retain(|name, (fp, task)| match wanted.get(name.as_str()) {
                Some((_, _, f)) if f == fp => true,
                _ => {
                    task.abort();
                    tracing::info!(target_name = %name, "Stopped polling target (removed or changed).");
                    false
                }
            });
        for (name, (t, interval, fp)) in wanted {
            if self.tasks.contains_key(name) {
                continue;
            }
            let task = tokio::spawn(poll_loop(
                (*t).clone(),
                interval,
                cx.clone(),
                self.tx.clone(),
                Arc::clone(&self.limits),
                Arc::clone(&self.stats),
                Arc::clone(&self.poll),
            ));
            self.tasks.insert(name.to_owned(), (fp, task));
        }
        self.stats
            .targets
            .store(self.tasks.len() as u64, Ordering::Relaxed);
    }

    /// Number of targets being polled.
    #[must_use]
    pub fn len(&self) -> usize {
        self.tasks.len()
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }
}

/// When each kind was last read successfully, on the target's tick grid.
#[derive(Debug, Default)]
struct LastDone {
    identity: Option<Instant>,
    telemetry: Option<Instant>,
    topology: Option<Instant>,
}

impl LastDone {
    /// The kinds due at the slot `at`. A kind is due when its interval has passed since it was
    /// last read, give or take half a tick (slots are on a grid, polls end a bit after their
    /// slot). An inventory poll reads topology too: a switch's device class comes from its
    /// tables.
    fn due(&self, at: Instant, iv: Intervals, tick: Duration) -> PollScope {
        let due = |last: Option<Instant>, every: Duration| last.is_none_or(|t| at + tick / 2 >= t + every);
        let identity = due(self.identity, iv.inventory);
        PollScope {
            identity,
            telemetry: due(self.telemetry, iv.telemetry),
            topology: identity || due(self.topology, iv.topology),
            refresh: true,
        }
    }

    fn done(&mut self, scope: PollScope, at: Instant) {
        if scope.identity {
            self.identity = Some(at);
        }
        if scope.telemetry {
            self.telemetry = Some(at);
        }
        if scope.topology {
            self.topology = Some(at);
        }
    }
}

/// Gives a telemetry-only report the identity last read for its device (by endpoint key), with
/// the fresh status attributes on top. Returns false when there is none (a device new behind a
/// Redfish service): the next slot then reads identity.
fn attach_identity(report: &mut DeviceReport, known: &HashMap<String, DeviceIdentity>) -> bool {
    let fresh = report.identity.take().unwrap_or_default();
    match known.get(&fresh.endpoint_key) {
        Some(cached) => {
            let mut id = cached.clone();
            id.attributes.extend(fresh.attributes);
            report.identity = Some(id);
            true
        }
        None => {
            report.identity = Some(fresh);
            false
        }
    }
}

#[allow(clippy::too_many_lines)]
async fn poll_loop(
    t: TargetConfig,
    intervals: Intervals,
    cx: PollCx,
    tx: mpsc::Sender<Polled>,
    limits: Arc<Limits>,
    stats: Arc<Stats>,
    poll: PollFn,
) {
    let tick = intervals
        .telemetry
        .min(intervals.inventory)
        .min(intervals.topology)
        .max(Duration::from_millis(1));
    let mut next = Instant::now() + initial_offset(&t.name, tick);
    let protocol = t.target.protocol();
    let mut last = LastDone::default();
    // The identity last read per device behind this target (endpoint key → identity).
    let mut identities: HashMap<String, DeviceIdentity> = HashMap::new();
    loop {
        tokio::time::sleep_until(next).await;
        let slot = next;
        let mut scope = last.due(slot, intervals, tick);
        if identities.is_empty() {
            scope.identity = true;
            scope.topology = true;
        }
        if !scope.identity && !scope.telemetry && !scope.topology {
            next += tick;
            continue;
        }
        let Ok(_global) = limits.global.acquire().await else {
            return;
        };
        let _proto = match limits.per_protocol.get(protocol) {
            Some(s) => s.acquire().await.ok(),
            None => None,
        };
        let mut pcx = cx.clone();
        pcx.scope = scope;
        // A panic in a driver must cost one poll of one target, never the target's schedule.
        let polled =
            futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(poll(t.clone(), pcx))).await;
        let (mut reports, err) = match polled {
            Ok(r) => r,
            Err(_) => {
                stats.polls_failed.fetch_add(1, Ordering::Relaxed);
                tracing::error!(target_name = %t.name, endpoint = %t.target.endpoint_key(), "The driver panicked while polling this target (a bug); the target stays scheduled.");
                next += tick;
                continue;
            }
        };
        let ok_report = |report: &DeviceReport| {
            report.status.as_ref().is_some_and(|s| {
                s.outcome == PollOutcome::Ok as i32 || s.outcome == PollOutcome::Partial as i32
            })
        };
        let ok = reports.iter().all(ok_report);
        let duration_ms = reports.first().map_or(0, |r| r.poll_duration_ms);
        if ok {
            stats.polls_ok.fetch_add(1, Ordering::Relaxed);
        } else {
            stats.polls_failed.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(p) = PROTOCOLS.iter().position(|p| *p == protocol) {
            let ps = &stats.by_protocol[p];
            (if ok { &ps.ok } else { &ps.failed }).fetch_add(1, Ordering::Relaxed);
            ps.duration_ms
                .fetch_add(u64::from(duration_ms), Ordering::Relaxed);
        }
        if let Some(e) = err {
            tracing::warn!(target_name = %t.name, endpoint = %t.target.endpoint_key(), error = %e, "Poll failed.");
        }
        let mut missing_identity = false;
        for report in &mut reports {
            if scope.identity && ok_report(report) {
                if let Some(id) = &report.identity {
                    identities.insert(id.endpoint_key.clone(), id.clone());
                }
            } else if !attach_identity(report, &identities) && ok_report(report) {
                missing_identity = true;
            }
        }
        // A failed poll is retried whole at the next slot; a successful one marks what it read.
        if ok {
            last.done(scope, slot);
        } else {
            last.telemetry = Some(slot);
        }
        if missing_identity {
            last.identity = None;
        }
        for (i, read) in [scope.identity, scope.telemetry, scope.topology]
            .into_iter()
            .enumerate()
        {
            if read {
                stats.polls_by_kind[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        let kind = batch_kind(scope);
        for report in reports {
            if tx
                .try_send(Polled {
                    target: t.name.clone(),
                    report,
                    kind,
                })
                .is_err()
            {
                let n = stats.reports_dropped.fetch_add(1, Ordering::Relaxed) + 1;
                tracing::error!(target_name = %t.name, reason = "batcher_full", dropped_total = n, "Dropped a report: the batcher is not keeping up.");
            }
        }
        // The next slot on this target's grid; slots that passed while the poll ran (or waited
        // for a concurrency permit) are skipped and counted.
        next += tick;
        let now = Instant::now();
        if now > next {
            let behind = (now - next).as_nanos() / tick.as_nanos().max(1) + 1;
            let n = u64::try_from(behind).unwrap_or(u64::MAX);
            stats.polls_missed.fetch_add(n, Ordering::Relaxed);
            tracing::warn!(target_name = %t.name, missed = n, "Poll overran its interval; skipped slots are counted, not queued.");
            next += tick * u32::try_from(behind).unwrap_or(u32::MAX);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::target::Target;

    fn target(name: &str, url: &str) -> TargetConfig {
        TargetConfig {
            name: name.into(),
            target: Target::parse(url).unwrap(),
            intervals: Default::default(),
        }
    }

    /// One interval for every kind: every poll is a full poll.
    fn every(secs: u64) -> Intervals {
        let d = Duration::from_secs(secs);
        Intervals {
            inventory: d,
            telemetry: d,
            topology: d,
        }
    }

    #[test]
    fn offsets_are_stable_and_within_the_interval() {
        let iv = Duration::from_secs(60);
        let a = initial_offset("pdu-r07-a", iv);
        assert_eq!(a, initial_offset("pdu-r07-a", iv));
        assert!(a < iv);
        assert_ne!(a, initial_offset("pdu-r07-b", iv));
    }

    #[test]
    fn fingerprint_changes_with_the_secret_but_never_contains_it() {
        let cx = PollCx::default();
        let iv = every(60);
        let a = fingerprint(&target("x", "snmp://one@10.0.0.1"), iv, &cx);
        let b = fingerprint(&target("x", "snmp://two@10.0.0.1"), iv, &cx);
        assert_ne!(a, b);
        assert_eq!(a, fingerprint(&target("x", "snmp://one@10.0.0.1"), iv, &cx));
        assert_ne!(
            a,
            fingerprint(&target("x", "snmp://one@10.0.0.1"), every(30), &cx)
        );
    }

    /// A fake poll: target "slow" takes 25 s, others answer at once; all succeed.
    fn fake_poll() -> PollFn {
        Arc::new(|t: TargetConfig, _cx: PollCx| {
            Box::pin(async move {
                if t.name == "slow" {
                    tokio::time::sleep(Duration::from_secs(25)).await;
                }
                let report = DeviceReport {
                    status: Some(groundtruth_proto::v1::PollStatus {
                        outcome: PollOutcome::Ok as i32,
                        ..Default::default()
                    }),
                    ..Default::default()
                };
                (vec![report], None)
            })
        })
    }

    fn count(rx: &mut mpsc::Receiver<Polled>) -> HashMap<String, usize> {
        let mut per = HashMap::new();
        while let Ok(p) = rx.try_recv() {
            *per.entry(p.target).or_default() += 1;
        }
        per
    }

    /// A slow target overruns its interval (its skipped slots are counted) without delaying a
    /// healthy target, which is polled on every tick; a reload drops a target and keeps the rest.
    #[tokio::test(start_paused = true)]
    async fn slow_target_does_not_delay_others_and_missed_polls_are_counted() {
        let (tx, mut rx) = mpsc::channel(1024);
        let stats = Arc::new(Stats::default());
        let mut s = Scheduler::new(tx, Limits::new(4), Arc::clone(&stats), fake_poll());
        let cx = PollCx::default();
        let iv = every(10);
        let a = target("a", "snmp://c@127.0.0.1:1");
        let slow = target("slow", "snmp://c@127.0.0.1:2");
        s.apply(&[(a.clone(), iv), (slow.clone(), iv)], &cx);
        assert_eq!(s.len(), 2);
        tokio::time::sleep(Duration::from_secs(100)).await;
        let per = count(&mut rx);
        // a: every 10 s over 100 s; slow: every 30 s (25 s poll, then the next 10 s slot).
        assert!((9..=11).contains(&per["a"]), "{per:?}");
        assert!((3..=4).contains(&per["slow"]), "{per:?}");
        let missed = stats.polls_missed.load(Ordering::Relaxed);
        assert!((4..=8).contains(&missed), "missed {missed}");

        s.apply(&[(a, iv)], &cx);
        assert_eq!(s.len(), 1);
        tokio::time::sleep(Duration::from_secs(50)).await;
        let later = count(&mut rx);
        assert!(!later.contains_key("slow"), "{later:?}");
        assert!((4..=6).contains(&later["a"]), "{later:?}");
    }

    /// A panicking driver costs that poll only: the target keeps its schedule.
    #[tokio::test(start_paused = true)]
    async fn panicking_driver_does_not_end_the_targets_schedule() {
        let (tx, mut rx) = mpsc::channel(1024);
        let stats = Arc::new(Stats::default());
        let calls = Arc::new(AtomicU64::new(0));
        let c = Arc::clone(&calls);
        let poll: PollFn = Arc::new(move |_t, _cx| {
            let n = c.fetch_add(1, Ordering::Relaxed);
            Box::pin(async move {
                assert!(n % 2 == 1, "simulated driver bug");
                (vec![DeviceReport::default()], None)
            })
        });
        let mut s = Scheduler::new(tx, Limits::new(4), Arc::clone(&stats), poll);
        s.apply(&[(target("p", "snmp://c@h"), every(10))], &PollCx::default());
        tokio::time::sleep(Duration::from_secs(100)).await;
        assert!(calls.load(Ordering::Relaxed) >= 9);
        assert!(stats.polls_failed.load(Ordering::Relaxed) >= 4);
        assert!(count(&mut rx)["p"] >= 4);
    }

    /// With a global limit of 1, a slow poll holds the only slot: the others wait (bounded
    /// concurrency) but still run once it is free.
    #[tokio::test(start_paused = true)]
    async fn global_limit_bounds_concurrency() {
        let (tx, mut rx) = mpsc::channel(1024);
        let stats = Arc::new(Stats::default());
        let mut s = Scheduler::new(tx, Limits::new(1), Arc::clone(&stats), fake_poll());
        let iv = every(60);
        s.apply(
            &[
                (target("slow", "snmp://c@h"), iv),
                (target("a", "snmp://c@h2"), iv),
            ],
            &PollCx::default(),
        );
        tokio::time::sleep(Duration::from_secs(59)).await;
        let per = count(&mut rx);
        assert_eq!(per.get("a"), Some(&1), "{per:?}");
        assert_eq!(per.get("slow"), Some(&1), "{per:?}");
    }

    /// Per-kind intervals: identity is read once per inventory interval, topology once per
    /// topology interval (and with every identity read), readings every telemetry interval;
    /// every report still carries the identity (serial) the collector keys readings by, and
    /// its batch kind follows what the poll read.
    #[tokio::test(start_paused = true)]
    async fn identity_once_per_inventory_interval_and_readings_every_telemetry_interval() {
        let scopes = Arc::new(std::sync::Mutex::new(Vec::<PollScope>::new()));
        let seen = Arc::clone(&scopes);
        let poll: PollFn = Arc::new(move |_t, cx: PollCx| {
            seen.lock().unwrap().push(cx.scope);
            Box::pin(async move {
                let mut identity = DeviceIdentity {
                    endpoint_key: "snmp://h:161".into(),
                    ..Default::default()
                };
                if cx.scope.identity {
                    identity.serial_number = "SN-1".into();
                    identity.model = "PDU".into();
                }
                identity.attributes.insert("status.outlet".into(), "on".into());
                let report = DeviceReport {
                    identity: Some(identity),
                    readings: vec![groundtruth_proto::v1::Reading {
                        metric: "power".into(),
                        value: 1.0,
                        ..Default::default()
                    }],
                    status: Some(groundtruth_proto::v1::PollStatus {
                        outcome: PollOutcome::Ok as i32,
                        ..Default::default()
                    }),
                    ..Default::default()
                };
                (vec![report], None)
            })
        });
        let (tx, mut rx) = mpsc::channel(4096);
        let stats = Arc::new(Stats::default());
        let mut s = Scheduler::new(tx, Limits::new(4), Arc::clone(&stats), poll);
        let iv = Intervals {
            inventory: Duration::from_secs(3600),
            telemetry: Duration::from_secs(60),
            topology: Duration::from_secs(900),
        };
        s.apply(&[(target("pdu", "snmp://c@h"), iv)], &PollCx::default());
        // Two hours and a bit: slots at offset + k·60 s, k = 0..=120.
        tokio::time::sleep(Duration::from_secs(2 * 3600 + 59)).await;
        let scopes = scopes.lock().unwrap().clone();
        assert!((120..=121).contains(&scopes.len()), "{} polls", scopes.len());
        assert!(scopes.iter().all(|sc| sc.telemetry), "readings every slot");
        let identity: Vec<usize> = (0..scopes.len()).filter(|&i| scopes[i].identity).collect();
        assert_eq!(
            identity,
            vec![0, 60, 120]
                .into_iter()
                .filter(|&i| i < scopes.len())
                .collect::<Vec<_>>()
        );
        assert!(
            scopes.iter().all(|sc| !sc.identity || sc.refresh),
            "a due identity is re-read"
        );
        let topology: Vec<usize> = (0..scopes.len()).filter(|&i| scopes[i].topology).collect();
        assert_eq!(topology, (0..scopes.len()).step_by(15).collect::<Vec<_>>());
        let mut kinds = HashMap::new();
        while let Ok(p) = rx.try_recv() {
            let id = p.report.identity.unwrap();
            assert_eq!(
                id.serial_number, "SN-1",
                "every report is keyed by the device's serial"
            );
            assert_eq!(id.model, "PDU");
            assert_eq!(id.attributes["status.outlet"], "on");
            *kinds.entry(p.kind).or_insert(0) += 1;
        }
        // Full polls at every topology slot (identity or topology + readings), telemetry between.
        let mixed = topology.len();
        assert_eq!(kinds.get(&BatchKind::Mixed), Some(&mixed), "{kinds:?}");
        assert_eq!(
            kinds.get(&BatchKind::Telemetry),
            Some(&(scopes.len() - mixed)),
            "{kinds:?}"
        );
        assert_eq!(stats.polls_missed.load(Ordering::Relaxed), 0);
        let by_kind: Vec<u64> = stats
            .polls_by_kind
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect();
        assert_eq!(
            by_kind,
            vec![identity.len() as u64, scopes.len() as u64, topology.len() as u64]
        );
    }

    /// A failed inventory poll is retried at the next slot, not an inventory interval later.
    #[tokio::test(start_paused = true)]
    async fn failed_identity_poll_is_retried_at_the_next_slot() {
        let scopes = Arc::new(std::sync::Mutex::new(Vec::<PollScope>::new()));
        let seen = Arc::clone(&scopes);
        let poll: PollFn = Arc::new(move |_t, cx: PollCx| {
            let n = {
                let mut v = seen.lock().unwrap();
                v.push(cx.scope);
                v.len()
            };
            Box::pin(async move {
                let outcome = if n == 1 {
                    PollOutcome::Timeout
                } else {
                    PollOutcome::Ok
                };
                let report = DeviceReport {
                    identity: Some(DeviceIdentity {
                        endpoint_key: "k".into(),
                        serial_number: "S".into(),
                        ..Default::default()
                    }),
                    status: Some(groundtruth_proto::v1::PollStatus {
                        outcome: outcome as i32,
                        ..Default::default()
                    }),
                    ..Default::default()
                };
                (vec![report], None)
            })
        });
        let (tx, _rx) = mpsc::channel(4096);
        let mut s = Scheduler::new(tx, Limits::new(4), Arc::new(Stats::default()), poll);
        let iv = Intervals {
            inventory: Duration::from_secs(3600),
            telemetry: Duration::from_secs(60),
            topology: Duration::from_secs(900),
        };
        s.apply(&[(target("bmc", "snmp://c@h"), iv)], &PollCx::default());
        tokio::time::sleep(Duration::from_secs(5 * 60 + 59)).await;
        let scopes = scopes.lock().unwrap().clone();
        assert!(scopes[0].identity && scopes[1].identity, "{scopes:?}");
        assert!(scopes[2..].iter().all(|sc| !sc.identity), "{scopes:?}");
    }
}
