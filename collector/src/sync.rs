//! One CMDB sync pass: stored devices → desired state → NetBox, with exceptions recorded for
//! devices that cannot be written and for conflicts the CMDB layer found.

use crate::cmdb::{ChangeLog, Cmdb, CmdbError, LogFuture, PendingJournal, SyncReport};
use crate::reconcile;
use crate::store::{Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Cmdb(#[from] CmdbError),
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

/// The store keeps NetBox journal entries until NetBox has them (crash-safe passes).
impl ChangeLog for Store {
    fn pending(&self) -> LogFuture<'_, Vec<PendingJournal>> {
        Box::pin(async move { self.journal_pending().await.map_err(|e| e.to_string()) })
    }

    fn record(&self, entries: Vec<PendingJournal>) -> LogFuture<'_, ()> {
        Box::pin(async move { self.journal_record(&entries).await.map_err(|e| e.to_string()) })
    }

    fn written(&self, markers: Vec<String>) -> LogFuture<'_, ()> {
        Box::pin(async move { self.journal_written(&markers).await.map_err(|e| e.to_string()) })
    }
}

/// Runs one pass. With `dry_run` nothing is written to NetBox (exceptions are still recorded
/// in the collector's own store).
///
/// # Errors
/// When the store fails or NetBox as a whole is unreachable or refuses the token; per-device
/// problems are in the summary instead.
pub async fn run_pass(
    store: &Store,
    netbox: &impl Cmdb,
    rules: &reconcile::Rules,
    dry_run: bool,
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
    let report = netbox.sync(&desired, dry_run, Some(store)).await?;
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
    Ok(summary)
}
