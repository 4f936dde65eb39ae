//! CMDB synchronisation: make the CMDB's *owned* fields equal the collector's truth.
//!
//! The collector hands a list of [`DesiredDevice`]s (already normalised, each with a usable
//! serial and a resolved location) to a [`Cmdb`] implementation. `plan` reads the CMDB and
//! computes the smallest set of changes; `apply` executes a plan. Running plan+apply twice with
//! no change in the inputs yields an empty plan the second time (idempotence is a tested
//! property, not a hope). Only fields the collector owns are ever written, nothing is deleted.

pub mod netbox;

/// A CMDB the collector can sync into. NetBox ([`netbox::NetBox`]) is the first; another CMDB
/// implements this one method (read, match, diff owned fields, write unless `dry_run`).
pub trait Cmdb {
    /// Reads the CMDB, computes the plan and, unless `dry_run`, executes it.
    ///
    /// # Errors
    /// Only when the CMDB as a whole cannot be used; per-device problems are in the report.
    ///
    /// `log` keeps the journal entries of applied changes until they are in the CMDB, so a pass
    /// killed between a change and its journal entry writes that entry on the next pass, once.
    fn sync(
        &self,
        devices: &[DesiredDevice],
        dry_run: bool,
        log: Option<&dyn ChangeLog>,
    ) -> impl std::future::Future<Output = Result<SyncReport, CmdbError>> + Send;

    /// The name of the lease a pass holds while it may write to this CMDB (one writer per CMDB,
    /// see [`crate::lease`]): the same for every collector configured for the same instance.
    fn lease_name(&self) -> String;
}

/// Future returned by [`ChangeLog`] methods (errors as text: the log is best effort).
pub type LogFuture<'a, T> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<T, String>> + Send + 'a>>;

/// Durable list of journal entries not yet written to the CMDB (the collector's store).
///
/// Every change is recorded *before* its request goes out: a device create without an object id
/// (recovery finds the device by serial, or drops the entry when the create never happened),
/// every other change as an intent in [`PendingJournal::in_flight`] that recovery checks against
/// the CMDB (the object, or the field values, the request was to produce), so a kill between the
/// CMDB's commit and the collector noting its answer loses no line and invents none. An entry is
/// removed once the CMDB has it; each carries a marker in its text, so one whose removal was lost
/// is found in the CMDB instead of being posted twice.
pub trait ChangeLog: Send + Sync {
    /// Entries left by earlier passes.
    fn pending(&self) -> LogFuture<'_, Vec<PendingJournal>>;
    /// Inserts or replaces `entries` (by marker) and removes the entries `remove` names, in one
    /// transaction (a change this pass takes over from an interrupted one moves atomically).
    fn record(&self, entries: Vec<PendingJournal>, remove: Vec<String>) -> LogFuture<'_, ()>;
    /// Removes entries the CMDB now has (or that turned out to describe nothing).
    fn written(&self, markers: Vec<String>) -> LogFuture<'_, ()>;
    /// Whether a write may go out now: the pass still holds its lease. Checked before every
    /// write request; an error ends the pass ([`CmdbError::Fenced`]).
    fn fence(&self) -> Result<(), String> {
        Ok(())
    }
}

/// One journal entry waiting to be written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingJournal {
    /// Unique per pass and device; also the last line of the entry's text.
    pub marker: String,
    pub device_key: String,
    /// Normalised serial, to find a device whose create was interrupted.
    pub serial: String,
    /// CMDB id of the device; `None` while its create is in flight.
    pub object_id: Option<u64>,
    /// The entry's text for the changes known to have been applied.
    pub comments: String,
    /// Changes whose request may be in flight, with how to check them in the CMDB (CMDB-specific
    /// JSON); recovery verifies each and rewrites `comments` with those that landed.
    pub in_flight: Option<String>,
}

/// Rack face a device is mounted on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Face {
    #[default]
    Front,
    Rear,
}

/// One MAC address the device carries, in canonical lower-case colon form.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DesiredMac {
    /// `aa:bb:cc:dd:ee:ff`.
    pub address: String,
    /// Interface name to attach it to in the CMDB (e.g. "eth0", "bmc"); never empty.
    pub interface_name: String,
    /// True for a management controller (BMC) port.
    pub management: bool,
}

/// Where the collector believes a device is.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DesiredLocation {
    /// Site name as the operator knows it ("DC1"); the CMDB slug is derived from it.
    pub site: String,
    /// Room, if known (NetBox "location").
    pub room: Option<String>,
    /// Rack name within the site ("R07").
    pub rack: String,
    /// Lowest occupied U, 1-based. `None` = in the rack, position unknown.
    pub position: Option<u32>,
    pub face: Face,
}

/// The collector's truth about one device, as input to a sync.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct DesiredDevice {
    /// Collector-internal device key (for logs and the exception log).
    pub key: String,
    /// Normalised serial (trimmed, upper case, never junk). The match key.
    pub serial: String,
    pub asset_tag: Option<String>,
    /// Normalised vendor name ("Dell", "HPE", ...).
    pub vendor: String,
    pub model: String,
    pub part_number: Option<String>,
    /// Name the device reports; used only as the CMDB name when *creating* a device.
    pub hostname: Option<String>,
    pub location: Option<DesiredLocation>,
    pub macs: Vec<DesiredMac>,
    /// Latest measured power draw in watts.
    pub power_watts: Option<f64>,
    /// When the device last answered a poll (RFC 3339, UTC).
    pub last_seen: Option<String>,
    /// Human-readable evidence behind the location and identity (shown in plans).
    pub evidence: Vec<String>,
}

/// Who owns an asset tag in the CMDB.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TagOwnership {
    /// The collector never writes it.
    Never,
    /// Written only while the CMDB's is empty (default).
    #[default]
    IfEmpty,
    /// The collector's value always wins.
    Always,
}

/// Which fields the collector owns (writes) in the CMDB. Defaults per DESIGN: physical location,
/// serial, MACs, measured power and last-seen owned; asset tag only while empty; names, roles,
/// status, tenant and comments are never written on an existing device.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Ownership {
    /// Site, location (room), rack, position, face.
    pub location: bool,
    /// Serial (also written into a record matched by asset tag or MAC that had none).
    pub serial: bool,
    pub asset_tag: TagOwnership,
    /// Interfaces and MAC address objects.
    pub macs: bool,
    /// `gt_measured_power_w` custom field.
    pub power: bool,
    /// `gt_last_seen` custom field.
    pub last_seen: bool,
    /// Accept a match on hostname alone (weak); default false = exception `weak_match_hostname`.
    pub match_hostname: bool,
    /// Relative change of measured power below which NetBox's value is left alone (0.05 = 5 %).
    pub power_deadband: f64,
    /// `gt_last_seen` is rewritten only when it moved by more than this.
    pub last_seen_deadband: std::time::Duration,
}

impl Default for Ownership {
    fn default() -> Self {
        Self {
            location: true,
            serial: true,
            asset_tag: TagOwnership::IfEmpty,
            macs: true,
            power: true,
            last_seen: true,
            match_hostname: false,
            power_deadband: 0.05,
            last_seen_deadband: std::time::Duration::from_secs(3600),
        }
    }
}

/// One change to the CMDB, in the CMDB's own terms, with the reason.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Change {
    /// Collector device key the change belongs to (empty for shared objects like sites).
    pub device_key: String,
    /// What kind of object: "site", "rack", "manufacturer", "device_type", "device",
    /// "interface", "mac_address", "custom_field".
    pub object: String,
    /// "create" or "update".
    pub action: String,
    /// Human-readable identification of the object ("device serial GTSRV0000001").
    pub target: String,
    /// Field → (old, new), as display strings. Empty for creates of shared objects.
    pub fields: Vec<FieldChange>,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FieldChange {
    pub field: String,
    pub old: Option<String>,
    pub new: String,
}

/// A conflict the sync refused to resolve on its own.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SyncException {
    pub device_key: String,
    /// Short machine-readable kind: "duplicate_serial_in_cmdb", "position_occupied", ...
    pub kind: String,
    pub detail: String,
}

/// Result of one apply (or of a plan, with `writes == 0`).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct SyncReport {
    pub changes: Vec<Change>,
    pub exceptions: Vec<SyncException>,
    /// HTTP write requests made (POST/PATCH). Zero on a dry run and on an idempotent rerun.
    pub writes: u64,
    /// Writes that failed after retries: (device key, reason).
    pub failures: Vec<(String, String)>,
    /// HTTP requests made in all (reads included, retries counted).
    pub requests: u64,
    /// Journal entries written on changed devices.
    pub journal_entries: u64,
}

/// Errors reaching or talking to the CMDB as a whole (per-device problems are exceptions or
/// failures in the report, not errors).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CmdbError {
    #[error("CMDB at {url} is unreachable: {detail}")]
    Unreachable { url: String, detail: String },
    #[error("CMDB at {url} refused the API token (HTTP {status}); check the token and its permissions")]
    Unauthorized { url: String, status: u16 },
    #[error("CMDB at {url} answered {what} with HTTP {status}: {body}")]
    Http {
        url: String,
        what: String,
        status: u16,
        body: String,
    },
    #[error("CMDB at {url} sent an unexpected response to {what}: {detail}")]
    Malformed {
        url: String,
        what: String,
        detail: String,
    },
    /// The pass lost its write lease: the write was not sent, and the pass stopped.
    #[error("sync pass to {url} stopped before a write: {detail}")]
    Fenced { url: String, detail: String },
}
