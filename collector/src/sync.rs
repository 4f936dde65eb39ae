//! One CMDB sync pass: stored devices → desired state → NetBox, with exceptions recorded for
//! devices that cannot be written and for conflicts the CMDB layer found.

use std::time::Duration;

use crate::cmdb::{ChangeLog, Cmdb, CmdbError, LogFuture, PendingJournal, SyncReport};
use crate::lease::Lease;
use crate::reconcile;
use crate::store::{LeaseHolder, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Cmdb(#[from] CmdbError),
    /// Another pass holds the CMDB's write lease (one writer per CMDB).
    #[error(
        "another sync pass is writing to this CMDB: lease \"{lease}\" is held by {} since {} (for {} ms more unless renewed); retry later, or wait longer with --wait",
        holder.holder, holder.acquired_at, holder.expires_in_ms
    )]
    Busy { lease: String, holder: LeaseHolder },
}

/// How a pass takes its CMDB's write lease.
#[derive(Debug, Clone, Copy)]
pub struct PassLease {
    /// Lease time: a pass that stops renewing (killed, paused, cut off from the database) loses
    /// the lease after this long.
    pub ttl: Duration,
    /// How long to wait for another pass to finish before giving up with [`SyncError::Busy`].
    pub wait: Duration,
}

impl Default for PassLease {
    fn default() -> Self {
        Self {
            ttl: crate::lease::DEFAULT_TTL,
            wait: Duration::from_secs(60),
        }
    }
}

/// Outcome of one pass, for logs and the CLI.
#[derive(Debug, Default, serde::Serialize)]
pub struct PassSummary {
    pub devices: usize,
    pub eligible: usize,
    pub unfit: Vec<reconcile::Unfit>,
    pub report: SyncReport,
    /// Evidence behind each eligible device's desired state, by device key (for `plan`).
    pub evidence: Vec<(String, Vec<String>)>,
    /// Dead letters written this pass (failed writes, retried on the next pass).
    pub dead_lettered: usize,
    /// Dead letters of earlier passes resolved by this one.
    pub dead_letters_resolved: u64,
    /// The desired state this pass synced (what "sync on change" compares new data with).
    #[serde(skip)]
    pub desired: Vec<crate::cmdb::DesiredDevice>,
}

impl serde::Serialize for reconcile::Unfit {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("Unfit", 3)?;
        st.serialize_field("device_key", &self.device_key)?;
        st.serialize_field("kind", &self.kind)?;
        st.serialize_field("detail", &self.detail)?;
        st.end()
    }
}

/// The store keeps NetBox journal entries until NetBox has them (crash-safe passes). Unfenced:
/// a pass uses it through [`Leased`].
impl ChangeLog for Store {
    fn pending(&self) -> LogFuture<'_, Vec<PendingJournal>> {
        Box::pin(async move { self.journal_pending().await.map_err(|e| e.to_string()) })
    }

    fn record(&self, entries: Vec<PendingJournal>, remove: Vec<String>) -> LogFuture<'_, ()> {
        Box::pin(async move {
            self.journal_record(&entries, &remove, None)
                .await
                .map_err(|e| e.to_string())
        })
    }

    fn written(&self, markers: Vec<String>) -> LogFuture<'_, ()> {
        Box::pin(async move {
            self.journal_written(&markers, None)
                .await
                .map_err(|e| e.to_string())
        })
    }
}

/// The store as the change log of a pass that holds the CMDB's lease: every journal write
/// commits only while the lease is held, and every CMDB write asks [`Lease::check`] first.
struct Leased<'a> {
    store: &'a Store,
    lease: &'a Lease,
}

impl ChangeLog for Leased<'_> {
    fn pending(&self) -> LogFuture<'_, Vec<PendingJournal>> {
        self.store.pending()
    }

    fn record(&self, entries: Vec<PendingJournal>, remove: Vec<String>) -> LogFuture<'_, ()> {
        Box::pin(async move {
            self.store
                .journal_record(&entries, &remove, Some(self.lease.fence()))
                .await
                .map_err(|e| e.to_string())
        })
    }

    fn written(&self, markers: Vec<String>) -> LogFuture<'_, ()> {
        Box::pin(async move {
            self.store
                .journal_written(&markers, Some(self.lease.fence()))
                .await
                .map_err(|e| e.to_string())
        })
    }

    fn fence(&self) -> Result<(), String> {
        self.lease.check()
    }
}

/// Runs one pass under the CMDB's write lease, waiting for another pass as [`PassLease::default`]
/// says. With `dry_run` nothing is written to NetBox (exceptions are still recorded in the
/// collector's own store).
///
/// # Errors
/// When the store fails, NetBox as a whole is unreachable or refuses the token, or another pass
/// keeps the lease too long ([`SyncError::Busy`]); per-device problems are in the summary.
pub async fn run_pass(
    store: &Store,
    netbox: &impl Cmdb,
    rules: &reconcile::Rules,
    dry_run: bool,
) -> Result<PassSummary, SyncError> {
    run_pass_leased(store, netbox, rules, dry_run, PassLease::default(), |_| {}).await
}

/// [`run_pass`] with its own lease settings; `waiting` is told who holds the lease while this
/// pass waits for it. `plan` takes the lease too, so it never shows a pass half done.
///
/// # Errors
/// As [`run_pass`].
pub async fn run_pass_leased(
    store: &Store,
    cmdb: &impl Cmdb,
    rules: &reconcile::Rules,
    dry_run: bool,
    lease: PassLease,
    waiting: impl FnMut(&LeaseHolder),
) -> Result<PassSummary, SyncError> {
    let name = cmdb.lease_name();
    let lease = match Lease::acquire(store, &name, lease.ttl, lease.wait, waiting).await? {
        Ok(l) => l,
        Err(holder) => return Err(SyncError::Busy { lease: name, holder }),
    };
    let r = pass(store, cmdb, rules, dry_run, &lease).await;
    lease.release().await;
    r
}

/// One pass, under `lease`.
async fn pass(
    store: &Store,
    netbox: &impl Cmdb,
    rules: &reconcile::Rules,
    dry_run: bool,
    lease: &Lease,
) -> Result<PassSummary, SyncError> {
    let devices = store.devices().await?;
    let mut summary = PassSummary {
        devices: devices.len(),
        ..Default::default()
    };
    let mut desired = Vec::new();
    for d in &devices {
        match reconcile::desired(d, rules) {
            Ok(want) => desired.push(want),
            Err(unfit) => {
                store
                    .raise_exception(&unfit.device_key, unfit.kind, &unfit.detail)
                    .await?;
                summary.unfit.push(unfit);
            }
        }
    }
    summary.eligible = desired.len();
    summary.evidence = desired
        .iter()
        .map(|d| (d.key.clone(), d.evidence.clone()))
        .collect();
    let log = Leased { store, lease };
    let report = netbox.sync(&desired, dry_run, Some(&log)).await?;
    // Nothing below is recorded once the lease is gone: another pass owns the outcome now.
    lease.check().map_err(StoreError::Fenced)?;
    if !dry_run {
        // Failed writes are dead-lettered with their reason; the next pass recomputes the plan
        // from NetBox and so retries them. Shared objects (custom fields, journal) use "(netbox)".
        for (key, why) in &report.failures {
            let key = if key.is_empty() { "(netbox)" } else { key.as_str() };
            store.dead_letter(key, why).await?;
            summary.dead_lettered += 1;
        }
        let shared: Vec<&str> = report
            .failures
            .iter()
            .filter(|(k, _)| k.is_empty())
            .map(|(_, w)| w.as_str())
            .collect();
        summary.dead_letters_resolved += store.resolve_dead_letters("(netbox)", &shared).await?;
    }
    for want in &desired {
        let open: Vec<&str> = report
            .exceptions
            .iter()
            .filter(|e| e.device_key == want.key)
            .map(|e| e.kind.as_str())
            .collect();
        for e in report.exceptions.iter().filter(|e| e.device_key == want.key) {
            store.raise_exception(&e.device_key, &e.kind, &e.detail).await?;
        }
        if !dry_run {
            store.resolve_exceptions(&want.key, &open).await?;
            let changes = report.changes.iter().filter(|c| c.device_key == want.key).count();
            let failed = report.failures.iter().find(|(k, _)| k == &want.key);
            let result = match (failed, open.is_empty()) {
                (Some((_, why)), _) => format!("failed: {why}"),
                // Matched nothing and, without a location, not created: not in the CMDB.
                (None, false) if open.contains(&"no_location") => NOT_IN_CMDB.to_owned(),
                (None, false) => "blocked by exception".to_owned(),
                (None, true) => "ok".to_owned(),
            };
            store.record_sync(&want.key, changes, &result).await?;
            let failing: Vec<&str> = report
                .failures
                .iter()
                .filter(|(k, _)| k == &want.key)
                .map(|(_, w)| w.as_str())
                .collect();
            summary.dead_letters_resolved += store.resolve_dead_letters(&want.key, &failing).await?;
        }
    }
    summary.report = report;
    summary.desired = desired;
    Ok(summary)
}

/// The sync result of a device that matched no CMDB record and was not created (no location).
pub const NOT_IN_CMDB: &str = "not in the CMDB: matched no record, and without a location not created";

/// The exception kinds the collector finds on its own, without a CMDB.
const LOCAL_KINDS: [&str; 5] = [
    "no_usable_identity",
    "identity_conflict",
    "no_location",
    "location_conflict",
    "position_conflict",
];

/// The pass run when no CMDB is configured: records the exceptions the collector finds on its
/// own ([`LOCAL_KINDS`]) and resolves those of them whose cause went away (other kinds, e.g. from
/// a manual `apply`, are left alone), so the exception log works without NetBox. Besides each
/// device's own checks, two devices placed at the same U of one rack are a `position_conflict`
/// on both (with NetBox, its `position_occupied` check covers this). Returns the number of open
/// findings.
///
/// # Errors
/// When the store fails.
pub async fn local_pass(store: &Store, rules: &reconcile::Rules) -> Result<usize, StoreError> {
    let mut found: Vec<(String, &'static str, String)> = Vec::new();
    let mut keys = Vec::new();
    // (site, rack, U) → devices placed there (either face: most servers are full depth).
    let mut slots: std::collections::BTreeMap<(String, String, u32), Vec<String>> =
        std::collections::BTreeMap::new();
    for d in store.devices().await? {
        match reconcile::desired(&d, rules) {
            Ok(want) => {
                // Without a CMDB nothing says where an unlocated device is.
                if want.location.is_none() {
                    found.push((
                        want.key.clone(),
                        "no_location",
                        format!(
                            "serial {}: {}",
                            want.serial,
                            want.evidence.first().map_or("", String::as_str)
                        ),
                    ));
                }
                if let Some(l) = &want.location
                    && let Some(u) = l.position
                {
                    slots
                        .entry((l.site.to_lowercase(), l.rack.to_lowercase(), u))
                        .or_default()
                        .push(want.key.clone());
                }
                keys.push(want.key);
            }
            Err(unfit) => {
                keys.push(unfit.device_key.clone());
                found.push((unfit.device_key, unfit.kind, unfit.detail));
            }
        }
    }
    for ((_, rack, u), holders) in slots.iter().filter(|(_, h)| h.len() > 1) {
        for k in holders {
            let others: Vec<&str> = holders.iter().filter(|o| *o != k).map(String::as_str).collect();
            found.push((
                k.clone(),
                "position_conflict",
                format!(
                    "rack {rack} U{u} is also where {} is placed; one of the locations is wrong",
                    others.join(", ")
                ),
            ));
        }
    }
    for (key, kind, detail) in &found {
        store.raise_exception(key, kind, detail).await?;
    }
    let open: std::collections::HashSet<(&str, &str)> =
        found.iter().map(|(k, kind, _)| (k.as_str(), *kind)).collect();
    for key in &keys {
        let gone: Vec<&str> = LOCAL_KINDS
            .into_iter()
            .filter(|k| !open.contains(&(key.as_str(), *k)))
            .collect();
        store.resolve_exception_kinds(key, &gone).await?;
    }
    Ok(found.len())
}

/// How the continuous sync is paced.
#[derive(Debug, Clone, Copy)]
pub struct Pacing {
    /// After new data, wait until none has arrived for this long (debounce) …
    pub quiet: std::time::Duration,
    /// … but no longer than this after the first new data.
    pub max_wait: std::time::Duration,
    /// A full pass at least this often, changed or not (dead letters, drift in NetBox).
    pub every: std::time::Duration,
    /// The write lease's time ([`PassLease::ttl`]).
    pub lease_ttl: std::time::Duration,
}

impl Pacing {
    /// From `netbox.sync_interval`: quiet = interval, max wait = 3 × interval, full pass every
    /// 10 × interval (at least 5 minutes).
    #[must_use]
    pub fn from_interval(interval: std::time::Duration) -> Self {
        Self {
            quiet: interval,
            max_wait: interval * 3,
            every: (interval * 10).max(std::time::Duration::from_secs(300)),
            lease_ttl: crate::lease::DEFAULT_TTL,
        }
    }
}

/// Whether `now` differs from `prev` (the desired state of the last pass) in anything the CMDB
/// would be written for: devices added or gone, any identity/placement/MAC field, measured power
/// beyond the power deadband, last-seen beyond its deadband. Evidence text alone is not a change.
#[must_use]
pub fn material_change(
    prev: &std::collections::HashMap<String, crate::cmdb::DesiredDevice>,
    now: &[crate::cmdb::DesiredDevice],
    own: &crate::cmdb::Ownership,
) -> bool {
    if prev.len() != now.len() {
        return true;
    }
    now.iter().any(|n| {
        let Some(p) = prev.get(&n.key) else { return true };
        let strip = |d: &crate::cmdb::DesiredDevice| crate::cmdb::DesiredDevice {
            power_watts: None,
            last_seen: None,
            evidence: Vec::new(),
            ..d.clone()
        };
        if strip(p) != strip(n) {
            return true;
        }
        let power_moved = match (p.power_watts, n.power_watts) {
            (None, None) => false,
            (Some(a), Some(b)) => (b - a).abs() > a.abs() * own.power_deadband && (b - a).abs() >= 1.0,
            _ => true,
        };
        let seen_moved = match (p.last_seen.as_deref(), n.last_seen.as_deref()) {
            (None, None) => false,
            (Some(a), Some(b)) => {
                let t = |s: &str| humantime::parse_rfc3339_weak(s.trim().trim_end_matches('Z')).ok();
                match (t(a), t(b)) {
                    (Some(x), Some(y)) => {
                        let apart = y.duration_since(x).unwrap_or_else(|e| e.duration());
                        apart > own.last_seen_deadband
                    }
                    _ => a != b,
                }
            }
            _ => true,
        };
        (own.power && power_moved) || (own.last_seen && seen_moved)
    })
}

/// The desired state of every device fit to sync, straight from the store (no CMDB access).
async fn desired_now(
    store: &Store,
    rules: &reconcile::Rules,
) -> Result<Vec<crate::cmdb::DesiredDevice>, StoreError> {
    Ok(store
        .devices()
        .await?
        .iter()
        .filter_map(|d| reconcile::desired(d, rules).ok())
        .collect())
}

/// Continuous mode: a pass soon after ingest changed something the CMDB would be written for
/// (debounced by [`Pacing`], skipped when the new data changes no owned field), and a full pass
/// on a schedule. `changes` ticks on every committed ingest batch; `on_pass` sees each result.
/// Returns when the sender of `changes` is gone.
#[allow(clippy::too_many_arguments)]
pub async fn run_continuous<C: Cmdb + Sync>(
    store: Store,
    cmdb: C,
    rules: reconcile::Rules,
    own: crate::cmdb::Ownership,
    pacing: Pacing,
    dry_run: bool,
    mut changes: tokio::sync::watch::Receiver<u64>,
    on_pass: impl Fn(&Result<PassSummary, SyncError>),
) {
    use tokio::time::{Instant, sleep_until};
    let lease_ttl = pacing.lease_ttl;
    let mut last: Option<std::collections::HashMap<String, crate::cmdb::DesiredDevice>> = None;
    let mut next_full = Instant::now() + pacing.every;
    loop {
        let scheduled = tokio::select! {
            r = changes.changed() => {
                if r.is_err() {
                    return;
                }
                false
            }
            () = sleep_until(next_full) => true,
        };
        if !scheduled {
            // Debounce: a burst of batches (every agent reporting) becomes one pass.
            let deadline = Instant::now() + pacing.max_wait;
            loop {
                changes.borrow_and_update();
                let quiet_until = (Instant::now() + pacing.quiet).min(deadline);
                tokio::select! {
                    r = changes.changed() => {
                        if r.is_err() {
                            return;
                        }
                        if Instant::now() >= deadline {
                            break;
                        }
                    }
                    () = sleep_until(quiet_until) => break,
                }
            }
            if let Some(prev) = &last {
                match desired_now(&store, &rules).await {
                    Ok(now) if !material_change(prev, &now, &own) => {
                        tracing::debug!(
                            devices = now.len(),
                            "New data changes no CMDB-owned field; no sync pass."
                        );
                        continue;
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "Cannot read the store to compare; syncing anyway."),
                }
            }
        }
        changes.borrow_and_update();
        // Another pass (a CLI `apply`, another collector) holding the lease: skip, retry soon.
        let now_only = PassLease {
            ttl: lease_ttl,
            wait: Duration::ZERO,
        };
        let r = run_pass_leased(&store, &cmdb, &rules, dry_run, now_only, |_| {}).await;
        match &r {
            Ok(s) => {
                last = Some(s.desired.iter().map(|d| (d.key.clone(), d.clone())).collect());
                next_full = Instant::now() + pacing.every;
            }
            Err(SyncError::Busy { .. }) => {
                next_full =
                    Instant::now() + pacing.quiet.clamp(Duration::from_secs(1), Duration::from_secs(5));
            }
            // NetBox unreachable: try again after the quiet time, not at full speed.
            Err(_) => next_full = Instant::now() + pacing.quiet.max(Duration::from_secs(5)),
        }
        on_pass(&r);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::cmdb::{DesiredDevice, DesiredLocation, Face, Ownership};
    use groundtruth_proto::v1::{
        Batch, DeviceIdentity, DeviceReport, LocationEvidence, LocationSource, PollOutcome, PollStatus,
        Reading,
    };
    use std::collections::HashMap;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    fn dev(power: Option<f64>, seen: &str, rack: &str) -> DesiredDevice {
        DesiredDevice {
            key: "k1".into(),
            serial: "S1".into(),
            asset_tag: None,
            vendor: "Dell".into(),
            model: "R650".into(),
            part_number: None,
            hostname: None,
            location: Some(DesiredLocation {
                site: "DC1".into(),
                room: None,
                rack: rack.into(),
                position: Some(12),
                face: Face::Front,
            }),
            macs: vec![],
            power_watts: power,
            last_seen: Some(seen.into()),
            evidence: vec!["from a test".into()],
        }
    }

    #[test]
    fn only_owned_fields_beyond_their_deadbands_are_a_material_change() {
        let own = Ownership::default();
        let prev: HashMap<String, DesiredDevice> =
            [("k1".to_owned(), dev(Some(300.0), "2026-11-24T10:00:00Z", "R07"))].into();
        let same = |d: DesiredDevice| !material_change(&prev, &[d], &own);
        // Power within 5 %, last seen within an hour, other evidence text: nothing to write.
        let mut d = dev(Some(310.0), "2026-11-24T10:40:00Z", "R07");
        d.evidence = vec!["other words".into()];
        assert!(same(d));
        // Power beyond the deadband, last seen beyond an hour, another rack, a new device.
        assert!(!same(dev(Some(330.0), "2026-11-24T10:00:00Z", "R07")));
        assert!(!same(dev(Some(300.0), "2026-11-24T11:30:00Z", "R07")));
        assert!(!same(dev(Some(300.0), "2026-11-24T10:00:00Z", "R08")));
        let mut other = dev(Some(300.0), "2026-11-24T10:00:00Z", "R07");
        other.key = "k2".into();
        assert!(material_change(&prev, &[other], &own));
        // Power not owned: its change is not material.
        let off = Ownership {
            power: false,
            ..Ownership::default()
        };
        assert!(!material_change(
            &prev,
            &[dev(Some(900.0), "2026-11-24T10:00:00Z", "R07")],
            &off
        ));
    }

    #[tokio::test]
    async fn store_keeps_pending_journal_entries_until_written() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.db")).await.unwrap();
        let log: &dyn ChangeLog = &store;
        let e = |marker: &str, id: Option<u64>, text: &str| PendingJournal {
            marker: marker.into(),
            device_key: "k1".into(),
            serial: "S1".into(),
            object_id: id,
            comments: text.into(),
            in_flight: None,
        };
        log.record(
            vec![e("m1", None, "create planned"), e("m2", Some(7), "update")],
            vec![],
        )
        .await
        .unwrap();
        // The create went through: same marker, now with its id and the full text.
        log.record(vec![e("m1", Some(9), "create + interfaces")], vec![])
            .await
            .unwrap();
        // A later record without an id does not forget the known one.
        log.record(vec![e("m1", None, "create + interfaces + MACs")], vec![])
            .await
            .unwrap();
        // Changes in flight stay with the entry until a record without them replaces it.
        let mut flying = e("m3", Some(8), "update");
        flying.in_flight = Some(r#"{"changes":[],"evidence":[],"intents":[]}"#.into());
        log.record(vec![flying.clone()], vec![]).await.unwrap();
        assert!(log.pending().await.unwrap().contains(&flying));
        // A change taken over by a later pass moves in one transaction: the new entry is in and
        // the old one gone together.
        log.record(vec![e("m4", Some(8), "update applied")], vec!["m3".into()])
            .await
            .unwrap();
        let got = log.pending().await.unwrap();
        assert!(got.contains(&e("m4", Some(8), "update applied")));
        assert!(!got.iter().any(|p| p.marker == "m3"));
        log.written(vec!["m4".into()]).await.unwrap();
        let mut got = log.pending().await.unwrap();
        got.sort_by(|a, b| a.marker.cmp(&b.marker));
        assert_eq!(
            got,
            vec![
                e("m1", Some(9), "create + interfaces + MACs"),
                e("m2", Some(7), "update")
            ]
        );
        log.written(vec!["m1".into()]).await.unwrap();
        assert_eq!(log.pending().await.unwrap(), vec![e("m2", Some(7), "update")]);
    }

    /// Counts passes; NetBox itself is not needed to test the pacing.
    struct Counting(Arc<AtomicUsize>);

    impl Cmdb for Counting {
        fn sync(
            &self,
            _devices: &[DesiredDevice],
            _dry_run: bool,
            _log: Option<&dyn ChangeLog>,
        ) -> impl std::future::Future<Output = Result<SyncReport, CmdbError>> + Send {
            self.0.fetch_add(1, Ordering::SeqCst);
            std::future::ready(Ok(SyncReport::default()))
        }

        fn lease_name(&self) -> String {
            "cmdb counting".into()
        }
    }

    fn batch(seq: u64, rack: &str, watts: f64) -> Batch {
        crate::store::testdb::batch(
            "a1",
            "DC1",
            seq,
            vec![DeviceReport {
                identity: Some(DeviceIdentity {
                    serial_number: "SN-PACE-1".into(),
                    vendor: "Dell Inc.".into(),
                    endpoint_key: "redfish://10.0.0.9:443".into(),
                    ..Default::default()
                }),
                readings: vec![Reading {
                    metric: "power".into(),
                    unit: "W".into(),
                    value: watts,
                    ..Default::default()
                }],
                locations: vec![LocationEvidence {
                    source: LocationSource::RedfishPlacement as i32,
                    rack: rack.into(),
                    u_position: Some(12),
                    confidence: 0.9,
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

    #[tokio::test]
    async fn bursts_are_debounced_and_unowned_changes_trigger_no_pass() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.db")).await.unwrap();
        store.commit_batch(&batch(1, "R07", 300.0)).await.unwrap();
        let passes = Arc::new(AtomicUsize::new(0));
        let (tx, rx) = tokio::sync::watch::channel(0u64);
        let pacing = Pacing {
            quiet: Duration::from_millis(200),
            max_wait: Duration::from_millis(600),
            every: Duration::from_secs(3600),
            lease_ttl: crate::lease::DEFAULT_TTL,
        };
        let task = tokio::spawn(run_continuous(
            store.clone(),
            Counting(passes.clone()),
            reconcile::Rules::builtin("DC1"),
            Ownership::default(),
            pacing,
            false,
            rx,
            |_| {},
        ));
        let settle = || tokio::time::sleep(Duration::from_millis(1200));
        // A burst of ten batches: one pass.
        for _ in 0..10 {
            tx.send_modify(|n| *n += 1);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        settle().await;
        assert_eq!(passes.load(Ordering::SeqCst), 1);
        // New data that changes no owned field beyond its deadband: no pass.
        store.commit_batch(&batch(2, "R07", 301.0)).await.unwrap();
        tx.send_modify(|n| *n += 1);
        settle().await;
        assert_eq!(passes.load(Ordering::SeqCst), 1);
        // The device moved: a pass.
        store.commit_batch(&batch(3, "R09", 301.0)).await.unwrap();
        tx.send_modify(|n| *n += 1);
        settle().await;
        assert_eq!(passes.load(Ordering::SeqCst), 2);
        // Data that never stops arriving still gets a pass after `max_wait`.
        store.commit_batch(&batch(4, "R10", 301.0)).await.unwrap();
        for _ in 0..50 {
            tx.send_modify(|n| *n += 1);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(passes.load(Ordering::SeqCst), 3);
        drop(tx);
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .unwrap()
            .unwrap();
    }

    #[tokio::test]
    async fn two_devices_in_one_u_are_a_position_conflict_until_one_moves() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.db")).await.unwrap();
        let second = |seq, rack: &str| {
            let mut b = batch(seq, rack, 200.0);
            let id = b.devices[0].identity.as_mut().unwrap();
            id.serial_number = "SN-PACE-2".into();
            id.endpoint_key = "redfish://10.0.0.10:443".into();
            b
        };
        store.commit_batch(&batch(1, "R07", 300.0)).await.unwrap();
        store.commit_batch(&second(2, "R07")).await.unwrap();
        let rules = reconcile::Rules::builtin("DC1");
        assert_eq!(local_pass(&store, &rules).await.unwrap(), 2);
        let open = store.open_exceptions().await.unwrap();
        let mut got: Vec<(&str, &str)> = open
            .iter()
            .map(|e| (e.device_key.as_str(), e.kind.as_str()))
            .collect();
        got.sort_unstable();
        assert_eq!(
            got,
            [
                ("serial:SN-PACE-1", "position_conflict"),
                ("serial:SN-PACE-2", "position_conflict")
            ]
        );
        assert!(open[0].detail.contains("U12"), "{}", open[0].detail);
        // The second device's placement is corrected: both conflicts resolve.
        store.commit_batch(&second(3, "R08")).await.unwrap();
        assert_eq!(local_pass(&store, &rules).await.unwrap(), 0);
        assert!(store.open_exceptions().await.unwrap().is_empty());
    }
}
