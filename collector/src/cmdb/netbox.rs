//! NetBox 4.x CMDB: a small hand-written REST client and the sync that makes NetBox's
//! collector-owned fields equal the collector's truth.
//!
//! What one [`NetBox::sync`] does, per [`DesiredDevice`], strictly in this order:
//!
//! 0. Once per run: the owned custom fields `gt_measured_power_w` / `gt_last_seen` on dcim.device
//!    are looked up and created when missing.
//! 1. Match by serial: `GET /api/dcim/devices/?serial=X` (NetBox filters `iexact`), then compare
//!    exactly after trim + upper case. 1 → update, >1 → exception `duplicate_serial_in_cmdb` and
//!    nothing is written for that device. 0 → weak keys, among NetBox devices whose serial is
//!    empty or a placeholder only: asset tag, then MAC objects (the interface's device), then
//!    hostname. A single asset-tag or MAC candidate is updated (its serial written); a
//!    hostname-only candidate is the exception `weak_match_hostname` unless the ownership allows
//!    it; two candidates are a `duplicate_*_in_cmdb` exception; none → create.
//! 2. Resolve the placement: site (by slug, then by name), the room as a NetBox location under the
//!    site (by slug, then name), rack (by name within the room, then within the site). Missing
//!    ones are created when [`NetBoxConfig::create_missing`] is set, otherwise the device gets a
//!    `missing_in_cmdb` exception and its placement is left alone (a missing room just leaves the
//!    rack's location as it is). A rack without a location is put into the room; a rack in
//!    another location is the exception `rack_location_differs` and is not moved.
//! 3. Check the target U range against NetBox's rack elevation (read once per rack and face per
//!    run) and against the other devices of this run: an occupied range is a `position_occupied`
//!    exception, not a failing write.
//! 4. Create the device (name = hostname, role, device type, status "active", placement, serial,
//!    asset tag) or PATCH only the owned fields that differ: site, rack, location (follows the
//!    rack), position, face, serial, and the asset tag only while NetBox's is empty.
//!    Never written on update: name, role, status, tenant, platform, comments. Nothing is deleted.
//! 5. MACs: ensure an interface per `interface_name`, a MAC address object assigned to it
//!    (NetBox ≥ 4.2 keeps MACs as objects) and the interface's `primary_mac_address`.
//! 6. Custom fields: measured power when it moved more than the deadband, last-seen when it moved
//!    more than its deadband (both in the same PATCH as the device's other fields).
//! 7. A journal entry on every device this run changed (changes + evidence + a marker line).
//!
//! Batching: before the per-device loop the serial lookups, the matched devices' interfaces and,
//! for devices NetBox has no serial for, the holders of their asset tags, hostnames and MACs are
//! prefetched 50 keys per request. Writes go to NetBox's bulk endpoints after the loop: device
//! creates ([`CREATE_CHUNK`] per POST), then their interfaces, MAC objects and primary MACs,
//! device updates without placement changes, journal entries. Placement changes stay immediate
//! and in input order (the next device's rack elevation depends on them). A bulk request NetBox
//! refuses for its content is split until the bad object fails alone ([`Run::bulk`]). Every
//! request passes the rate limiter ([`NetBoxConfig::rate_limit`]).
//!
//! [`Ownership`] switches each owned field group off (or the asset tag to "always").
//!
//! Every decision is computed from what NetBox returns, so a second run with the same input makes
//! zero write requests ([`SyncReport::writes`] counts POST/PATCH requests).
//!
//! Crash-resume: objects are found again by serial, interface name and MAC address, so a pass
//! killed anywhere and rerun creates nothing twice; journal entries go through the
//! [`ChangeLog`] (see its docs) and carry a marker, so each is written once. Every write's change
//! is in the change log before the request goes out — a device create without an id, any other
//! change as an `Intent`: the change and a `Check` (a list query and the fields the object
//! must have) — and the next pass checks intents left by a killed one in NetBox and journals
//! exactly those that landed. A write whose answer was lost (timeout, 502/503/504) is checked the
//! same way before the pass's journal flush.
//!
//! HTTP rules: every response body is read in chunks up to [`MAX_BODY`]; list endpoints are
//! paginated (`limit`/`next`, `next` rebased onto the configured URL); redirects are not followed
//! (a redirected POST would silently turn into a GET). Reads and PATCHes are retried on
//! 429/502/503/504, timeouts and connection errors; POSTs only where the request cannot have been
//! processed (429, 503, connection refused), because a create is not idempotent — the next sync
//! re-reads and catches up. At most [`MAX_ATTEMPTS`] attempts, exponential backoff with jitter,
//! `Retry-After` honoured, no single delay above [`MAX_DELAY`].

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::hash::BuildHasher;
use std::path::PathBuf;
use std::time::Duration;

use reqwest::header::{ACCEPT, AUTHORIZATION, HeaderValue, LOCATION, RETRY_AFTER};
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};
use tracing::{debug, info, warn};
use url::Url;

use super::{
    Change, ChangeLog, CmdbError, DesiredDevice, DesiredMac, Face, FieldChange, Ownership, PendingJournal,
    SyncException, SyncReport, TagOwnership,
};

/// Default NetBox device role (slug derived from it) for created devices.
pub const DEFAULT_DEVICE_ROLE: &str = "server";
/// Default height of racks the sync creates.
pub const DEFAULT_RACK_HEIGHT: u32 = 42;
/// Default per-request timeout (whole request including the body).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest response body read from NetBox.
pub const MAX_BODY: usize = 8 * 1024 * 1024;
/// Attempts per request, first one included.
pub const MAX_ATTEMPTS: u32 = 4;
/// Ceiling of one retry delay, `Retry-After` included.
pub const MAX_DELAY: Duration = Duration::from_secs(30);
/// Default request rate limit (requests per second, all methods).
pub const DEFAULT_RATE_LIMIT: f64 = 20.0;
/// Custom field (on dcim.device) holding the measured power in watts.
pub const CF_POWER: &str = "gt_measured_power_w";
/// Custom field (on dcim.device) holding when the collector last heard from the device.
pub const CF_LAST_SEEN: &str = "gt_last_seen";
/// Journal entries per bulk POST.
const JOURNAL_CHUNK: usize = 50;
/// Device creates per bulk POST (NetBox spends ~0.1-0.5 s per device; keep requests short).
const CREATE_CHUNK: usize = 25;
/// Interfaces, MAC objects and interface updates per bulk request.
const BULK_CHUNK: usize = 50;
/// Device updates per bulk PATCH.
const PATCH_CHUNK: usize = 50;
/// Serials / device ids per prefetching read (`?serial=A&serial=B…`).
const PREFETCH_CHUNK: usize = 50;
/// Device fields whose update must not be deferred: the rack elevation of later devices in the
/// same run depends on them.
const PLACEMENT_FIELDS: [&str; 5] = ["site", "rack", "location", "position", "face"];

const BASE_DELAY: Duration = Duration::from_millis(500);
/// NetBox's default `MAX_PAGE_SIZE`.
const PAGE_LIMIT: &str = "1000";
const MAX_PAGES: usize = 10_000;
/// Error bodies are read up to this size and shown truncated to [`ERROR_BODY_CHARS`].
const ERROR_BODY_READ: usize = 64 * 1024;
const ERROR_BODY_CHARS: usize = 500;
/// NetBox colour of a device role the sync creates (hex, no `#`).
const ROLE_COLOR: &str = "607d8b";
/// NetBox limits: slug 100 chars, device name 64 chars.
const SLUG_MAX: usize = 100;
const DEVICE_NAME_MAX: usize = 64;
const INTERFACE_TYPE: &str = "1000base-t";

// ------------------------------------------------------------------------------------------------
// Configuration and client

/// How to reach NetBox and what to create there.
#[derive(Clone)]
pub struct NetBoxConfig {
    /// Base URL, e.g. `https://netbox.example.com/` (a path prefix is kept; `api/...` is appended).
    pub url: Url,
    /// API token. `nbt_…` (NetBox ≥ 4.5 v2 token) is sent as `Bearer`, anything else as legacy
    /// `Token`. Never logged or printed by `Debug`.
    pub token: String,
    /// Device role given to created devices (looked up by its slug, created if missing).
    pub device_role: String,
    /// Create missing sites, racks, manufacturers, device types and the role.
    pub create_missing: bool,
    /// Height of created racks, in U.
    pub rack_height: u32,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Verify the server certificate (default true).
    pub tls_verify: bool,
    /// Extra CA bundle (PEM) trusted in addition to the platform roots.
    pub ca_file: Option<PathBuf>,
    /// Which fields the collector writes.
    pub ownership: Ownership,
    /// Requests per second to NetBox (all methods); 0 = unlimited.
    pub rate_limit: f64,
    /// Leave a journal entry on every device the sync changed.
    pub journal: bool,
}

impl NetBoxConfig {
    /// A config with the defaults: role "server", create missing objects, 42 U racks, 30 s
    /// timeout, TLS verified against the platform roots.
    pub fn new(url: Url, token: impl Into<String>) -> Self {
        Self {
            url,
            token: token.into(),
            device_role: DEFAULT_DEVICE_ROLE.to_owned(),
            create_missing: true,
            rack_height: DEFAULT_RACK_HEIGHT,
            timeout: DEFAULT_TIMEOUT,
            tls_verify: true,
            ca_file: None,
            ownership: Ownership::default(),
            rate_limit: DEFAULT_RATE_LIMIT,
            journal: true,
        }
    }
}

impl fmt::Debug for NetBoxConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NetBoxConfig")
            .field("url", &self.url.as_str())
            .field("token", &"***")
            .field("device_role", &self.device_role)
            .field("create_missing", &self.create_missing)
            .field("rack_height", &self.rack_height)
            .field("timeout", &self.timeout)
            .field("tls_verify", &self.tls_verify)
            .field("ca_file", &self.ca_file)
            .field("ownership", &self.ownership)
            .field("rate_limit", &self.rate_limit)
            .field("journal", &self.journal)
            .finish()
    }
}

/// A NetBox 4.x instance the collector syncs into.
pub struct NetBox {
    cfg: NetBoxConfig,
    api: Api,
}

impl NetBox {
    /// Every rack NetBox has, with its site and location (room) names and height: the start of
    /// a site map (`groundtruth-collector site-map-import`).
    ///
    /// # Errors
    /// NetBox unreachable, the token refused, or an answer that is not a rack list.
    pub async fn racks(&self) -> Result<Vec<RackRecord>, CmdbError> {
        self.api.racks().await
    }
}

impl fmt::Debug for NetBox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NetBox")
            .field("cfg", &self.cfg)
            .finish_non_exhaustive()
    }
}

impl NetBox {
    /// Builds the HTTP client. Does not touch the network.
    pub fn new(cfg: NetBoxConfig) -> Result<Self, CmdbError> {
        let api = Api::new(&cfg)?;
        Ok(Self { cfg, api })
    }

    /// Reads NetBox, computes the plan; when `dry_run` is false executes it. Returns the report.
    ///
    /// Errors only when NetBox as a whole cannot be used (unreachable, token refused, not a
    /// NetBox ≥ 4.2); per-device problems are exceptions or failures in the report.
    pub async fn sync(&self, devices: &[DesiredDevice], dry_run: bool) -> Result<SyncReport, CmdbError> {
        self.sync_logged(devices, dry_run, None).await
    }

    /// [`NetBox::sync`] with a durable [`ChangeLog`] for the journal entries (crash-safe passes).
    ///
    /// # Errors
    /// As [`NetBox::sync`].
    pub async fn sync_logged(
        &self,
        devices: &[DesiredDevice],
        dry_run: bool,
        log: Option<&dyn ChangeLog>,
    ) -> Result<SyncReport, CmdbError> {
        let requests_before = self.api.requests.load(std::sync::atomic::Ordering::Relaxed);
        self.api.preflight().await?;
        let mut run = Run::new(self, dry_run, if dry_run { None } else { log });
        let steps: [Option<Fail>; 2] = [
            run.recover_journal().await.err(),
            run.ensure_custom_fields().await.err(),
        ];
        for e in steps.into_iter().flatten() {
            match e {
                Fail::Fatal(e) => return Err(e),
                other => run.fail("", other.reason()),
            }
        }
        if devices.len() > 1 {
            match run.prefetch(devices).await {
                Ok(()) => {}
                Err(Fail::Fatal(e)) => return Err(e),
                // Not fatal: every lookup not prefetched is made one by one.
                Err(other) => {
                    warn!(error = %other.reason(), "NetBox prefetch failed; reading device by device.")
                }
            }
        }
        for d in devices {
            let r = run.device(d).await;
            run.wal_sync().await;
            match r {
                Ok(()) => {}
                Err(Fail::Fatal(e)) => {
                    warn!(
                        device = %d.key, writes = run.report.writes, error = %e,
                        "NetBox sync aborted; writes made so far stay in NetBox."
                    );
                    return Err(e);
                }
                Err(other) => run.fail(&d.key, other.reason()),
            }
        }
        for (what, r) in [
            ("device updates", run.flush_patches().await),
            ("device creates", run.flush_creates().await),
            ("unanswered writes", run.settle_doubtful().await),
            ("journal entries", run.flush_journal().await),
        ] {
            match r {
                Ok(()) => {}
                Err(Fail::Fatal(e)) => return Err(e),
                Err(other) => run.fail("", format!("{what}: {}", other.reason())),
            }
        }
        run.report.requests = self.api.requests.load(std::sync::atomic::Ordering::Relaxed) - requests_before;
        let r = &run.report;
        info!(
            url = %self.api.shown, dry_run, devices = devices.len(), changes = r.changes.len(),
            exceptions = r.exceptions.len(), failures = r.failures.len(), writes = r.writes,
            requests = r.requests,
            "NetBox sync finished."
        );
        Ok(run.report)
    }
}

impl super::Cmdb for NetBox {
    fn sync(
        &self,
        devices: &[DesiredDevice],
        dry_run: bool,
        log: Option<&dyn ChangeLog>,
    ) -> impl std::future::Future<Output = Result<SyncReport, CmdbError>> + Send {
        NetBox::sync_logged(self, devices, dry_run, log)
    }

    fn lease_name(&self) -> String {
        format!("cmdb netbox {}", self.api.shown)
    }
}

// ------------------------------------------------------------------------------------------------
// Pure helpers

/// NetBox slug of a name: lower case ASCII alphanumerics, every run of anything else one `-`,
/// no leading/trailing `-`, at most 100 characters. Empty when the name has no ASCII alphanumeric.
pub(crate) fn slugify(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.is_empty() && !out.ends_with('-') {
            out.push('-');
        }
    }
    out.truncate(SLUG_MAX);
    while out.ends_with('-') {
        out.pop();
    }
    out
}

/// `Bearer` for NetBox ≥ 4.5 v2 tokens (`nbt_<key>.<secret>`), `Token` for legacy v1 tokens.
fn auth_scheme(token: &str) -> &'static str {
    if token.trim().starts_with("nbt_") {
        "Bearer"
    } else {
        "Token"
    }
}

/// The `Authorization` header value, marked sensitive (hyper never logs it).
fn auth_header(token: &str) -> Option<HeaderValue> {
    let token = token.trim();
    if token.is_empty() {
        return None;
    }
    let mut v = HeaderValue::from_str(&format!("{} {token}", auth_scheme(token))).ok()?;
    v.set_sensitive(true);
    Some(v)
}

/// The 12 hex digits of a MAC in lower case, whatever the notation; `None` if it is not a MAC.
pub(crate) fn mac_key(mac: &str) -> Option<String> {
    let hex: String = mac
        .chars()
        .filter(|c| !matches!(c, ':' | '-' | '.' | ' '))
        .map(|c| c.to_ascii_lowercase())
        .collect();
    (hex.len() == 12 && hex.chars().all(|c| c.is_ascii_hexdigit())).then_some(hex)
}

/// Same MAC, notation and case ignored.
fn mac_eq(a: &str, b: &str) -> bool {
    matches!((mac_key(a), mac_key(b)), (Some(x), Some(y)) if x == y)
}

/// Serial as the match key: trimmed, upper case.
fn serial_key(s: &str) -> String {
    s.trim().to_uppercase()
}

fn face_str(face: Face) -> &'static str {
    match face {
        Face::Front => "front",
        Face::Rear => "rear",
    }
}

/// Rack units as NetBox shows them: `12`, `12.5`.
fn units_str(u: f64) -> String {
    if u.fract() == 0.0 {
        format!("{u:.0}")
    } else {
        format!("{u}")
    }
}

fn truncate_chars(s: &str, max: usize) -> String {
    let s = s.trim();
    match s.char_indices().nth(max) {
        None => s.to_owned(),
        Some((i, _)) => format!("{}…", &s[..i]),
    }
}

/// Delay before retry number `attempt` (1 = first retry): exponential from 0.5 s with "equal
/// jitter" (half fixed, half random; `jitter` in 0..1), at least `retry_after`, never above
/// [`MAX_DELAY`].
fn backoff_delay(attempt: u32, retry_after: Option<Duration>, jitter: f64) -> Duration {
    let exp = BASE_DELAY.saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
    let exp = exp.min(MAX_DELAY);
    let jittered = exp.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0));
    retry_after.map_or(jittered, |ra| ra.max(jittered)).min(MAX_DELAY)
}

/// A random fraction in 0..1 without a RNG dependency (SipHash with a random per-process key).
fn jitter() -> f64 {
    let h = std::collections::hash_map::RandomState::new().hash_one(std::time::SystemTime::now());
    (h >> 11) as f64 / (1u64 << 53) as f64
}

/// `Retry-After` in seconds (the HTTP-date form is ignored; the backoff applies then).
fn parse_retry_after(v: Option<&HeaderValue>) -> Option<Duration> {
    let secs: u64 = v?.to_str().ok()?.trim().parse().ok()?;
    Some(Duration::from_secs(secs))
}

/// The `next` link of a NetBox page, rebased onto the configured base URL (NetBox builds it from
/// the Host header it saw, which behind a proxy may carry the wrong scheme or host).
fn rebase_next(base: &Url, next: &str) -> Option<Url> {
    let next = Url::parse(next).or_else(|_| base.join(next)).ok()?;
    let mut u = base.clone();
    u.set_path(next.path());
    u.set_query(next.query());
    Some(u)
}

/// URL shown in errors and logs: no user info, no query.
fn shown_url(u: &Url) -> String {
    let mut u = u.clone();
    let _ = u.set_username("");
    let _ = u.set_password(None);
    u.set_query(None);
    u.to_string()
}

// ------------------------------------------------------------------------------------------------
// NetBox objects (only the fields the sync reads; everything lenient)

#[derive(Debug, Deserialize)]
struct Page<T> {
    #[serde(default)]
    next: Option<String>,
    results: Vec<T>,
}

#[derive(Debug, Clone, Deserialize)]
struct NbRef {
    id: u64,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    display: Option<String>,
}

impl NbRef {
    fn label(&self) -> String {
        self.name
            .clone()
            .or_else(|| self.display.clone())
            .unwrap_or_else(|| format!("#{}", self.id))
    }
}

#[derive(Debug, Clone, Deserialize)]
struct NbChoice {
    #[serde(default)]
    value: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
struct NbDevice {
    id: u64,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    serial: String,
    #[serde(default)]
    asset_tag: Option<String>,
    #[serde(default)]
    site: Option<NbRef>,
    #[serde(default)]
    location: Option<NbRef>,
    #[serde(default)]
    rack: Option<NbRef>,
    #[serde(default, deserialize_with = "de_units")]
    position: Option<f64>,
    #[serde(default)]
    face: Option<NbChoice>,
    #[serde(default)]
    device_type: Option<NbRef>,
    #[serde(default)]
    tenant: Option<Value>,
    #[serde(default)]
    custom_fields: Option<Map<String, Value>>,
}

impl NbDevice {
    fn face(&self) -> Option<&str> {
        self.face.as_ref()?.value.as_deref().filter(|v| !v.is_empty())
    }
}

/// One rack as NetBox has it (for the site map import).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RackRecord {
    pub site: String,
    /// The rack's NetBox location: the collector's room.
    pub room: String,
    pub name: String,
    pub height: u32,
}

#[derive(Debug, Clone, Deserialize)]
struct NbSite {
    id: u64,
    name: String,
}

#[derive(Debug, Clone, Deserialize)]
struct NbRack {
    id: u64,
    name: String,
    #[serde(default)]
    location: Option<NbRef>,
}

#[derive(Debug, Clone, Deserialize)]
struct NbDeviceType {
    id: u64,
    #[serde(default)]
    model: String,
    #[serde(default = "one", deserialize_with = "de_units_req")]
    u_height: f64,
    #[serde(default = "yes")]
    is_full_depth: bool,
}

fn one() -> f64 {
    1.0
}
fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Deserialize)]
struct NbId {
    id: u64,
}

#[derive(Debug, Clone, Deserialize)]
struct NbMacBrief {
    id: u64,
    #[serde(default)]
    mac_address: String,
}

#[derive(Debug, Clone, Deserialize)]
struct NbInterface {
    id: u64,
    name: String,
    #[serde(default)]
    primary_mac_address: Option<NbMacBrief>,
    #[serde(default)]
    mac_addresses: Option<Vec<NbMacBrief>>,
}

#[derive(Debug, Clone, Deserialize)]
struct NbMac {
    id: u64,
    #[serde(default)]
    mac_address: String,
    #[serde(default)]
    assigned_object_type: Option<String>,
    #[serde(default)]
    assigned_object_id: Option<u64>,
    #[serde(default)]
    assigned_object: Option<Value>,
}

#[derive(Debug, Clone, Deserialize)]
struct NbUnit {
    #[serde(deserialize_with = "de_units_req")]
    id: f64,
    #[serde(default)]
    occupied: bool,
    #[serde(default)]
    device: Option<NbRef>,
}

fn units_from_value(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// NetBox decimals (position, u_height) arrive as numbers, or as strings when
/// `COERCE_DECIMAL_TO_STRING` is on.
fn de_units<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    let v = Option::<Value>::deserialize(d)?;
    Ok(v.as_ref().and_then(units_from_value))
}

fn de_units_req<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    let v = Value::deserialize(d)?;
    units_from_value(&v).ok_or_else(|| serde::de::Error::custom("expected a decimal number"))
}

// ------------------------------------------------------------------------------------------------
// Diff computation (pure)

/// Where the collector wants a device, with NetBox ids where the objects exist (`None` = the
/// object is only planned, which happens on a dry run).
#[derive(Debug, Clone)]
struct WantPlacement {
    site_id: Option<u64>,
    site_name: String,
    rack_id: Option<u64>,
    rack_name: String,
    /// Location (room) of the rack; the device follows it.
    rack_location: Option<NbRef>,
    position: Option<u32>,
    face: Face,
}

/// Owned fields to write on an existing device.
#[derive(Debug, Clone, Default)]
struct DeviceDiff {
    fields: Vec<FieldChange>,
    patch: Map<String, Value>,
}

impl DeviceDiff {
    fn remove(&mut self, field: &str) {
        self.fields.retain(|f| f.field != field);
        self.patch.remove(field);
    }

    fn set(&mut self, field: &str, old: Option<String>, new: String, value: Value) {
        self.fields.push(FieldChange {
            field: field.to_owned(),
            old,
            new,
        });
        self.patch.insert(field.to_owned(), value);
    }
}

fn id_value(id: Option<u64>) -> Value {
    id.map_or(Value::Null, Value::from)
}

/// Fields of `cur` that differ from the collector's truth. `asset_tag` is only set while NetBox's
/// is empty; the caller passes `None` when the tag is taken by another device.
fn diff_device(
    cur: &NbDevice,
    serial: &str,
    asset_tag: Option<&str>,
    place: Option<&WantPlacement>,
) -> DeviceDiff {
    let mut d = DeviceDiff::default();
    if cur.serial != serial {
        d.set(
            "serial",
            Some(cur.serial.clone()).filter(|s| !s.is_empty()),
            serial.to_owned(),
            json!(serial),
        );
    }
    let nb_tag_empty = cur.asset_tag.as_deref().is_none_or(|t| t.trim().is_empty());
    if let Some(tag) = asset_tag.map(str::trim).filter(|t| !t.is_empty())
        && nb_tag_empty
    {
        d.set("asset_tag", None, tag.to_owned(), json!(tag));
    }
    let Some(p) = place else { return d };

    let site_same = matches!((cur.site.as_ref(), p.site_id), (Some(s), Some(id)) if s.id == id);
    if !site_same {
        d.set(
            "site",
            cur.site.as_ref().map(NbRef::label),
            p.site_name.clone(),
            id_value(p.site_id),
        );
    }
    let rack_same = matches!((cur.rack.as_ref(), p.rack_id), (Some(r), Some(id)) if r.id == id);
    if !rack_same {
        d.set(
            "rack",
            cur.rack.as_ref().map(NbRef::label),
            p.rack_name.clone(),
            id_value(p.rack_id),
        );
        let want_loc = p.rack_location.as_ref().map(|l| l.id);
        if cur.location.as_ref().map(|l| l.id) != want_loc {
            d.set(
                "location",
                cur.location.as_ref().map(NbRef::label),
                p.rack_location
                    .as_ref()
                    .map_or_else(|| "(none)".to_owned(), NbRef::label),
                id_value(want_loc),
            );
        }
    }
    match p.position {
        Some(u) => {
            if cur.position != Some(f64::from(u)) {
                d.set("position", cur.position.map(units_str), u.to_string(), json!(u));
            }
            let face = face_str(p.face);
            if cur.face() != Some(face) {
                d.set(
                    "face",
                    cur.face().map(str::to_owned),
                    face.to_owned(),
                    json!(face),
                );
            }
        }
        // In the rack, U unknown: keep NetBox's U within the same rack, clear it on a rack move.
        None if !rack_same && cur.position.is_some() => {
            d.set(
                "position",
                cur.position.map(units_str),
                "(none)".to_owned(),
                Value::Null,
            );
        }
        None => {}
    }
    d
}

/// The intent of a PATCH of device `id`: the change, checked by the device having `patch`'s values.
fn device_intent(
    key: &str,
    id: u64,
    target: &str,
    patch: &Map<String, Value>,
    fields: &[FieldChange],
) -> Intent {
    Intent {
        change: Change {
            device_key: key.to_owned(),
            object: "device".to_owned(),
            action: "update".to_owned(),
            target: target.to_owned(),
            fields: fields.to_vec(),
        },
        check: Check::new(
            "api/dcim/devices/",
            &[("id", id.to_string())],
            Value::Object(patch.clone()),
        ),
    }
}

/// The fields a new interface `iname` is created with, as the change log records them.
fn interface_fields(iname: &str, management: bool) -> Vec<FieldChange> {
    [
        ("name", iname.to_owned()),
        ("type", INTERFACE_TYPE.to_owned()),
        ("mgmt_only", management.to_string()),
    ]
    .into_iter()
    .map(|(field, new)| FieldChange {
        field: field.to_owned(),
        old: None,
        new,
    })
    .collect()
}

/// The intent of creating interface `iname` on device `device`.
fn interface_intent(key: &str, device: u64, iname: &str, target: &str, management: bool) -> Intent {
    Intent {
        change: Change {
            device_key: key.to_owned(),
            object: "interface".to_owned(),
            action: "create".to_owned(),
            target: target.to_owned(),
            fields: interface_fields(iname, management),
        },
        check: Check::new(
            "api/dcim/interfaces/",
            &[("device_id", device.to_string()), ("name", iname.to_owned())],
            json!({}),
        ),
    }
}

/// The intent of creating MAC object `addr` on interface `iid` (or of assigning the unassigned
/// one, `adopted`): checked by a MAC object with that address assigned to the interface.
fn mac_intent(key: &str, addr: &str, iname: &str, iid: u64, target: &str, adopted: bool) -> Intent {
    let assigned = FieldChange {
        field: "assigned_object".to_owned(),
        old: None,
        new: format!("dcim.interface {iname}"),
    };
    let (action, fields) = if adopted {
        ("update", vec![assigned])
    } else {
        (
            "create",
            vec![
                FieldChange {
                    field: "mac_address".to_owned(),
                    old: None,
                    new: addr.to_owned(),
                },
                assigned,
            ],
        )
    };
    Intent {
        change: Change {
            device_key: key.to_owned(),
            object: "mac_address".to_owned(),
            action: action.to_owned(),
            target: target.to_owned(),
            fields,
        },
        check: Check::new(
            "api/dcim/mac-addresses/",
            &[("mac_address", addr.to_owned())],
            json!({ "assigned_object_type": "dcim.interface", "assigned_object_id": iid }),
        ),
    }
}

/// The intent of pointing interface `iid`'s primary MAC at MAC object `mid` (`addr`).
fn primary_intent(key: &str, iid: u64, mid: u64, addr: &str, old: Option<String>, target: &str) -> Intent {
    Intent {
        change: Change {
            device_key: key.to_owned(),
            object: "interface".to_owned(),
            action: "update".to_owned(),
            target: target.to_owned(),
            fields: vec![FieldChange {
                field: "primary_mac_address".to_owned(),
                old,
                new: addr.to_owned(),
            }],
        },
        check: Check::new(
            "api/dcim/interfaces/",
            &[("id", iid.to_string())],
            json!({ "primary_mac_address": mid }),
        ),
    }
}

/// A NetBox serial that identifies nothing: empty or a placeholder (see [`crate::normalize::serial`]).
fn serial_free(x: &NbDevice) -> bool {
    crate::normalize::serial(&x.serial).is_none()
}

/// Seconds between two RFC 3339 timestamps, when both parse.
fn seconds_apart(a: &str, b: &str) -> Option<f64> {
    let p = |s: &str| {
        humantime::parse_rfc3339_weak(s.trim().trim_end_matches('Z'))
            .or_else(|_| humantime::parse_rfc3339(s.trim()))
            .ok()
    };
    let (a, b) = (p(a)?, p(b)?);
    Some(match a.duration_since(b) {
        Ok(d) => d.as_secs_f64(),
        Err(e) => e.duration().as_secs_f64(),
    })
}

/// Custom-field writes for a device: power only when it moved by more than the deadband,
/// last-seen only when it moved by more than its deadband. `cur` = NetBox's `custom_fields`
/// (`None` for a device being created).
fn diff_custom_fields(
    cur: Option<&Map<String, Value>>,
    d: &DesiredDevice,
    own: &Ownership,
    ready: &HashSet<&'static str>,
) -> (Vec<FieldChange>, Map<String, Value>) {
    let mut fields = Vec::new();
    let mut patch = Map::new();
    let old_of = |k: &str| cur.and_then(|m| m.get(k)).filter(|v| !v.is_null());
    if own.power
        && ready.contains(CF_POWER)
        && let Some(w) = d.power_watts.filter(|w| w.is_finite() && *w >= 0.0)
    {
        #[allow(clippy::cast_possible_truncation)]
        let new = w.round() as i64;
        let old = old_of(CF_POWER).and_then(units_from_value);
        #[allow(clippy::cast_precision_loss)]
        let moved = match old {
            None => true,
            Some(o) => (new as f64 - o).abs() > o.abs() * own.power_deadband && (new as f64 - o).abs() >= 1.0,
        };
        if moved {
            fields.push(FieldChange {
                field: format!("custom_fields.{CF_POWER}"),
                old: old.map(units_str),
                new: new.to_string(),
            });
            patch.insert(CF_POWER.to_owned(), json!(new));
        }
    }
    if own.last_seen
        && ready.contains(CF_LAST_SEEN)
        && let Some(seen) = d.last_seen.as_deref().map(str::trim).filter(|s| !s.is_empty())
    {
        let old = old_of(CF_LAST_SEEN).and_then(Value::as_str).map(str::to_owned);
        let moved = match old.as_deref() {
            None => true,
            Some(o) => seconds_apart(o, seen).map_or(o != seen, |s| s > own.last_seen_deadband.as_secs_f64()),
        };
        if moved {
            fields.push(FieldChange {
                field: format!("custom_fields.{CF_LAST_SEEN}"),
                old,
                new: seen.to_owned(),
            });
            patch.insert(CF_LAST_SEEN.to_owned(), json!(seen));
        }
    }
    (fields, patch)
}

/// The comment of a journal entry: what was changed and the evidence behind it.
fn journal_text(changes: &[Change], evidence: &[String]) -> String {
    let mut t = String::from("groundtruth-collector changed this device from measurements:\n\n");
    for c in changes {
        t.push_str(&format!("* {} {}: {}\n", c.action, c.object, c.target));
        for f in &c.fields {
            t.push_str(&format!(
                "  * {}: {} → {}\n",
                f.field,
                f.old.as_deref().unwrap_or("(empty)"),
                f.new
            ));
        }
    }
    if !evidence.is_empty() {
        t.push_str("\nEvidence:\n\n");
        for e in evidence {
            t.push_str(&format!("* {e}\n"));
        }
    }
    truncate_chars(&t, 60_000)
}

/// Outcome of matching a device NetBox has no serial for.
enum WeakMatch {
    /// Nothing matched: create it.
    None,
    /// One serial-less NetBox device matched; how (key and confidence).
    Matched(Box<NbDevice>, String),
    /// An exception was recorded (duplicates, hostname-only match): write nothing.
    Blocked,
}

/// What to do for one desired MAC on one interface.
#[derive(Debug, Clone, PartialEq, Eq)]
struct MacPlan {
    create_interface: bool,
    /// Id of the MAC object already on the interface; `None` = must be found elsewhere or created.
    existing_mac: Option<u64>,
    /// The interface's primary MAC must be (re)pointed at this MAC.
    set_primary: bool,
}

fn plan_mac(iface: Option<&NbInterface>, mac: &str, want_primary: bool) -> MacPlan {
    let Some(i) = iface else {
        return MacPlan {
            create_interface: true,
            existing_mac: None,
            set_primary: want_primary,
        };
    };
    let existing = i
        .mac_addresses
        .iter()
        .flatten()
        .chain(i.primary_mac_address.iter())
        .find(|m| mac_eq(&m.mac_address, mac))
        .map(|m| m.id);
    let is_primary = matches!((&i.primary_mac_address, existing), (Some(p), Some(id)) if p.id == id);
    MacPlan {
        create_interface: false,
        existing_mac: existing,
        set_primary: want_primary && !is_primary,
    }
}

/// A U range some device of this run takes in a rack.
#[derive(Debug, Clone)]
struct Claim {
    lo: f64,
    hi: f64,
    face: Face,
    full_depth: bool,
    key: String,
}

impl Claim {
    fn collides(&self, other: &Claim) -> bool {
        self.lo < other.hi
            && other.lo < self.hi
            && (self.face == other.face || self.full_depth || other.full_depth)
    }
}

// ------------------------------------------------------------------------------------------------
// HTTP layer

/// Why a request or a device step failed.
#[derive(Debug)]
enum Fail {
    /// NetBox as a whole is unusable: abort the sync.
    Fatal(CmdbError),
    /// NetBox answered with an error status (after retries).
    Status { what: String, status: u16, body: String },
    /// Anything else that fails this device only (malformed answer, earlier failure).
    Other(String),
}

impl Fail {
    fn reason(&self) -> String {
        match self {
            Fail::Fatal(e) => e.to_string(),
            Fail::Status { what, status, body } => format!("{what}: HTTP {status}: {body}"),
            Fail::Other(s) => s.clone(),
        }
    }

    fn is_bad_request_about(&self, field: &str) -> bool {
        matches!(self, Fail::Status { status: 400, body, .. } if body.contains(field))
    }
}

struct Api {
    client: reqwest::Client,
    /// Configured URL with a trailing `/`.
    base: Url,
    /// Base URL as shown in errors.
    shown: String,
    auth: HeaderValue,
    limiter: Limiter,
    /// HTTP requests sent (attempts, all methods).
    requests: std::sync::atomic::AtomicU64,
    /// Per-request timeout (bulk requests get a multiple).
    timeout: Duration,
}

/// Spaces requests at least `interval` apart (a token bucket of one).
struct Limiter {
    interval: Option<Duration>,
    next: tokio::sync::Mutex<tokio::time::Instant>,
}

impl Limiter {
    fn new(per_second: f64) -> Self {
        let interval =
            (per_second.is_finite() && per_second > 0.0).then(|| Duration::from_secs_f64(1.0 / per_second));
        Self {
            interval,
            next: tokio::sync::Mutex::new(tokio::time::Instant::now()),
        }
    }

    async fn wait(&self) {
        let Some(iv) = self.interval else { return };
        let mut next = self.next.lock().await;
        let now = tokio::time::Instant::now();
        if *next > now {
            tokio::time::sleep_until(*next).await;
        }
        *next = (*next).max(now) + iv;
    }
}

enum Attempt {
    Done(Result<Vec<u8>, Fail>),
    Retry {
        why: String,
        retry_after: Option<Duration>,
        last: Fail,
    },
}

impl Api {
    fn new(cfg: &NetBoxConfig) -> Result<Self, CmdbError> {
        let shown = shown_url(&cfg.url);
        let config_err = |detail: String| CmdbError::Malformed {
            url: shown.clone(),
            what: "the NetBox client configuration".to_owned(),
            detail,
        };
        if !matches!(cfg.url.scheme(), "http" | "https") {
            return Err(config_err(format!(
                "unsupported URL scheme {:?}",
                cfg.url.scheme()
            )));
        }
        let auth = auth_header(&cfg.token).ok_or_else(|| {
            config_err(
                "the API token is empty or contains characters not allowed in an HTTP header".to_owned(),
            )
        })?;
        let mut base = cfg.url.clone();
        base.set_query(None);
        base.set_fragment(None);
        if !base.path().ends_with('/') {
            let p = format!("{}/", base.path());
            base.set_path(&p);
        }

        // The binary installs ring at start; a library user (or a test) may not have.
        if rustls::crypto::CryptoProvider::get_default().is_none() {
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        let mut b = reqwest::Client::builder()
            .user_agent(concat!("groundtruth-collector/", env!("CARGO_PKG_VERSION")))
            .timeout(cfg.timeout)
            .connect_timeout(cfg.timeout.min(Duration::from_secs(10)))
            .redirect(reqwest::redirect::Policy::none());
        if let Some(path) = &cfg.ca_file {
            let pem = read_small_file(path, 1024 * 1024)
                .map_err(|e| config_err(format!("cannot read ca_file {}: {e}", path.display())))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| config_err(format!("ca_file {} is not a PEM bundle: {e}", path.display())))?;
            b = b.tls_certs_merge(certs);
        }
        if !cfg.tls_verify {
            warn!(url = %shown, "TLS certificate verification is off for NetBox.");
            b = b.tls_danger_accept_invalid_certs(true);
        }
        let client = b
            .build()
            .map_err(|e| config_err(format!("cannot build the HTTP client: {e}")))?;
        Ok(Self {
            client,
            base,
            shown,
            auth,
            limiter: Limiter::new(cfg.rate_limit),
            requests: std::sync::atomic::AtomicU64::new(0),
            timeout: cfg.timeout,
        })
    }

    fn url(&self, path: &str, query: &[(&str, &str)]) -> Url {
        let mut u = self.base.join(path).unwrap_or_else(|_| self.base.clone());
        if !query.is_empty() {
            let mut q = u.query_pairs_mut();
            for (k, v) in query {
                q.append_pair(k, v);
            }
        }
        u
    }

    fn unreachable(&self, detail: String) -> Fail {
        Fail::Fatal(CmdbError::Unreachable {
            url: self.shown.clone(),
            detail,
        })
    }

    /// A failure of a read outside a sync pass, as the caller's error (`what`: what was read).
    fn to_cmdb(&self, f: Fail, what: &str) -> CmdbError {
        match f {
            Fail::Fatal(e) => e,
            Fail::Status { what, status, body } => CmdbError::Http {
                url: self.shown.clone(),
                what,
                status,
                body,
            },
            Fail::Other(detail) => CmdbError::Malformed {
                url: self.shown.clone(),
                what: what.to_owned(),
                detail,
            },
        }
    }

    /// Every rack NetBox has, with its site and location (room) names and height.
    async fn racks(&self) -> Result<Vec<RackRecord>, CmdbError> {
        #[derive(Deserialize)]
        struct Row {
            name: String,
            #[serde(default)]
            site: Option<NbRef>,
            #[serde(default)]
            location: Option<NbRef>,
            #[serde(default)]
            u_height: Option<f64>,
        }
        let name = |r: Option<NbRef>| r.and_then(|r| r.name.or(r.display)).unwrap_or_default();
        let rows: Vec<Row> = self
            .list("api/dcim/racks/", &[])
            .await
            .map_err(|f| self.to_cmdb(f, "the rack list"))?;
        Ok(rows
            .into_iter()
            .map(|r| RackRecord {
                site: name(r.site),
                room: name(r.location),
                name: r.name,
                #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                height: r.u_height.map_or(42, |h| h.clamp(1.0, 100.0) as u32),
            })
            .collect())
    }

    /// Checks the token and the NetBox version once per sync.
    async fn preflight(&self) -> Result<(), CmdbError> {
        let to_cmdb = |f: Fail| self.to_cmdb(f, "the preflight check");
        let status: Value = self.get("api/status/", &[]).await.map_err(to_cmdb)?;
        // `status` answers anonymous requests when LOGIN_REQUIRED is off; this one does not.
        let _: Value = self
            .get("api/authentication-check/", &[])
            .await
            .map_err(to_cmdb)?;
        let version = status
            .get("netbox-version")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
        let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
        if (major, minor) < (4, 2) {
            return Err(CmdbError::Malformed {
                url: self.shown.clone(),
                what: "GET api/status/".to_owned(),
                detail: format!(
                    "NetBox version {version:?} is not supported; 4.2 or newer is needed (MAC address objects)"
                ),
            });
        }
        debug!(url = %self.shown, version = %version, "NetBox answered the preflight.");
        Ok(())
    }

    async fn get<T: DeserializeOwned>(&self, path: &str, query: &[(&str, &str)]) -> Result<T, Fail> {
        let url = self.url(path, query);
        let what = format!("GET {path}");
        let body = self.send(Method::GET, url, None, &what, None).await?;
        parse(&what, &body)
    }

    /// All pages of a list endpoint.
    async fn list<T: DeserializeOwned>(&self, path: &str, query: &[(&str, &str)]) -> Result<Vec<T>, Fail> {
        let mut q = query.to_vec();
        q.push(("limit", PAGE_LIMIT));
        let mut url = self.url(path, &q);
        let what = format!("GET {path}");
        let mut out = Vec::new();
        for _ in 0..MAX_PAGES {
            let body = self.send(Method::GET, url, None, &what, None).await?;
            let page: Page<T> = parse(&what, &body)?;
            out.extend(page.results);
            match page.next.as_deref().filter(|n| !n.is_empty()) {
                None => return Ok(out),
                Some(next) => {
                    url = rebase_next(&self.base, next)
                        .ok_or_else(|| Fail::Other(format!("{what}: unusable next link {next:?}")))?;
                }
            }
        }
        Err(Fail::Other(format!("{what}: more than {MAX_PAGES} pages")))
    }

    async fn write<T: DeserializeOwned>(&self, method: Method, path: &str, body: &Value) -> Result<T, Fail> {
        let url = self.url(path, &[]);
        let what = format!("{method} {path}");
        // NetBox works through a bulk request object by object: allow it time per object.
        let items = body.as_array().map_or(1, Vec::len);
        let timeout = (items > 1).then(|| {
            self.timeout
                .saturating_mul(u32::try_from(1 + items / 10).unwrap_or(u32::MAX))
        });
        let resp = self.send(method, url, Some(body), &what, timeout).await?;
        parse(&what, &resp)
    }

    /// One request with retries; returns the (capped) body of a 2xx answer.
    async fn send(
        &self,
        method: Method,
        url: Url,
        body: Option<&Value>,
        what: &str,
        timeout: Option<Duration>,
    ) -> Result<Vec<u8>, Fail> {
        let mut attempt = 1;
        loop {
            match self.attempt(&method, &url, body, what, timeout).await {
                Attempt::Done(r) => return r,
                Attempt::Retry {
                    why,
                    retry_after,
                    last,
                } => {
                    if attempt >= MAX_ATTEMPTS {
                        warn!(url = %self.shown, request = %what, attempts = attempt, reason = %why, "NetBox request failed; giving up.");
                        return Err(last);
                    }
                    let delay = backoff_delay(attempt, retry_after, jitter());
                    debug!(url = %self.shown, request = %what, attempt, reason = %why, delay = ?delay, "NetBox request failed; retrying.");
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
            }
        }
    }

    async fn attempt(
        &self,
        method: &Method,
        url: &Url,
        body: Option<&Value>,
        what: &str,
        timeout: Option<Duration>,
    ) -> Attempt {
        // A create is not idempotent: retry it only where NetBox cannot have processed it.
        let idempotent = *method != Method::POST;
        self.limiter.wait().await;
        self.requests.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut req = self
            .client
            .request(method.clone(), url.clone())
            .header(AUTHORIZATION, self.auth.clone())
            .header(ACCEPT, "application/json");
        if let Some(b) = body {
            req = req.json(b);
        }
        if let Some(t) = timeout {
            req = req.timeout(t);
        }
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => return self.transport_error(&e, idempotent),
        };
        let status = resp.status();
        if status.is_success() {
            return match read_capped(resp, MAX_BODY).await {
                Ok((bytes, false)) => Attempt::Done(Ok(bytes)),
                Ok((_, true)) => Attempt::Done(Err(Fail::Other(format!(
                    "{what}: response body larger than {MAX_BODY} bytes"
                )))),
                Err(e) => self.transport_error(&e, idempotent),
            };
        }
        if matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) {
            return Attempt::Done(Err(Fail::Fatal(CmdbError::Unauthorized {
                url: self.shown.clone(),
                status: status.as_u16(),
            })));
        }
        if status.is_redirection() {
            let to = resp
                .headers()
                .get(LOCATION)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("?");
            let body = format!("redirected to {to}; configure NetBox's final URL");
            return Attempt::Done(Err(Fail::Status {
                what: what.to_owned(),
                status: status.as_u16(),
                body,
            }));
        }
        let retry_after = parse_retry_after(resp.headers().get(RETRY_AFTER));
        let text = match read_capped(resp, ERROR_BODY_READ).await {
            Ok((b, _)) => truncate_chars(&String::from_utf8_lossy(&b), ERROR_BODY_CHARS),
            Err(e) => format!("(error body unreadable: {e})"),
        };
        let fail = Fail::Status {
            what: what.to_owned(),
            status: status.as_u16(),
            body: text,
        };
        let retriable = match status {
            StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE => true,
            StatusCode::BAD_GATEWAY | StatusCode::GATEWAY_TIMEOUT => idempotent,
            _ => false,
        };
        if retriable {
            Attempt::Retry {
                why: format!("HTTP {}", status.as_u16()),
                retry_after,
                last: fail,
            }
        } else {
            Attempt::Done(Err(fail))
        }
    }

    fn transport_error(&self, e: &reqwest::Error, idempotent: bool) -> Attempt {
        let detail = error_chain(e);
        let fail = if e.is_timeout() {
            self.unreachable(format!("no answer within the configured timeout ({detail})"))
        } else {
            self.unreachable(detail.clone())
        };
        if e.is_connect() || idempotent {
            Attempt::Retry {
                why: detail,
                retry_after: None,
                last: fail,
            }
        } else {
            Attempt::Done(Err(fail))
        }
    }
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

fn parse<T: DeserializeOwned>(what: &str, body: &[u8]) -> Result<T, Fail> {
    // serde_json's recursion limit (128) stays on.
    serde_json::from_slice(body).map_err(|e| Fail::Other(format!("{what}: unexpected response: {e}")))
}

/// Reads at most `limit` bytes of the body; the flag says the body was longer (and was cut).
async fn read_capped(mut resp: reqwest::Response, limit: usize) -> Result<(Vec<u8>, bool), reqwest::Error> {
    if resp.content_length().is_some_and(|n| n > limit as u64) {
        return Ok((Vec::new(), true));
    }
    let mut buf = Vec::new();
    while let Some(chunk) = resp.chunk().await? {
        if buf.len() + chunk.len() > limit {
            let room = limit - buf.len();
            buf.extend_from_slice(&chunk[..room]);
            return Ok((buf, true));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok((buf, false))
}

fn read_small_file(path: &std::path::Path, limit: u64) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut out = Vec::new();
    std::fs::File::open(path)?.take(limit + 1).read_to_end(&mut out)?;
    if out.len() as u64 > limit {
        return Err(std::io::Error::other(format!("larger than {limit} bytes")));
    }
    Ok(out)
}

// ------------------------------------------------------------------------------------------------
// One sync run

/// A shared object (site, rack, …) as resolved during a run.
#[derive(Debug, Clone)]
enum Resolved<T> {
    Found(T),
    /// Would be created (dry run).
    Planned,
    /// Absent and `create_missing` is off.
    Missing,
    /// Creating it failed earlier in this run.
    Failed(String),
}

impl<T> Resolved<T> {
    fn map<U>(self, f: impl FnOnce(T) -> U) -> Resolved<U> {
        match self {
            Resolved::Found(t) => Resolved::Found(f(t)),
            Resolved::Planned => Resolved::Planned,
            Resolved::Missing => Resolved::Missing,
            Resolved::Failed(why) => Resolved::Failed(why),
        }
    }
}

/// NetBox objects have an integer primary key.
trait HasId {
    fn id(&self) -> u64;
}

macro_rules! has_id {
    ($($t:ty),*) => { $(impl HasId for $t { fn id(&self) -> u64 { self.id } })* };
}
has_id!(NbSite, NbRack, NbDeviceType, NbId);

#[derive(Debug, Clone)]
struct SiteInfo {
    id: u64,
    name: String,
}

#[derive(Debug, Clone)]
struct RackInfo {
    id: u64,
    name: String,
    location: Option<NbRef>,
}

#[derive(Debug, Clone)]
struct TypeInfo {
    id: u64,
    label: String,
    u_height: f64,
    full_depth: bool,
}

impl TypeInfo {
    fn from_nb(t: &NbDeviceType, manufacturer: &str) -> Self {
        Self {
            id: t.id,
            label: format!("{manufacturer} {}", t.model).trim().to_owned(),
            u_height: t.u_height,
            full_depth: t.is_full_depth,
        }
    }
}

/// Result of resolving a device's placement.
enum PlaceOutcome {
    Ready(WantPlacement),
    /// An exception was recorded; leave the placement alone.
    Blocked,
}

struct Run<'a> {
    nb: &'a NetBox,
    dry_run: bool,
    report: SyncReport,
    sites: HashMap<String, Resolved<SiteInfo>>,
    racks: HashMap<(String, String), Resolved<RackInfo>>,
    manufacturers: HashMap<String, Resolved<u64>>,
    types: HashMap<(String, String), Resolved<TypeInfo>>,
    types_by_id: HashMap<u64, TypeInfo>,
    role: Option<Resolved<u64>>,
    claims: HashMap<(String, String), Vec<Claim>>,
    seen_serials: HashSet<String>,
    /// Custom fields that exist in NetBox (or are planned, on a dry run).
    cf_ready: HashSet<&'static str>,
    /// Evidence of the device being synced.
    cur_evidence: Vec<String>,
    /// NetBox id and evidence of every device this run matched or created (for its journal).
    device_ids: Vec<(String, u64, Vec<String>)>,
    /// Index of each device key's last entry in `device_ids`.
    device_idx: HashMap<String, usize>,
    /// Device updates without placement changes, bulk-PATCHed at the end of the run.
    pending: Vec<PendingPatch>,
    /// Prefetched serial lookups (normalised serial → NetBox devices), taken once each.
    by_serial: HashMap<String, Vec<NbDevice>>,
    /// Prefetched interfaces of serial-matched devices, taken once each.
    ifaces_of: HashMap<u64, Vec<NbInterface>>,
    /// Prefetched for devices NetBox has no serial for (read-only; this run's own writes are
    /// tracked in `run_tags`, `run_names`, `run_macs`): devices by asset tag, by lower-case name,
    /// MAC objects by [`mac_key`].
    by_tag: HashMap<String, Vec<NbDevice>>,
    by_name: HashMap<String, Vec<NbDevice>>,
    by_mac: HashMap<String, Vec<NbMac>>,
    /// Asset tags, (site id, lower-case name) and MACs (→ device key) this run gave out.
    run_tags: HashSet<String>,
    run_names: HashSet<(u64, String)>,
    run_macs: HashMap<String, String>,
    /// Rack elevations read this run, by (rack id, face); this run's claims cover what it adds.
    elevations: HashMap<(u64, &'static str), Vec<NbUnit>>,
    /// Device creates, bulk-POSTed after the per-device loop.
    creates: Vec<PendingCreate>,
    /// Locations (rooms) by (site slug, room slug).
    locations: HashMap<(String, String), Resolved<NbRef>>,
    /// Durable journal of applied changes (absent on a dry run).
    log: Option<&'a dyn ChangeLog>,
    /// Identifies this run in journal markers.
    run_id: String,
    /// Indices into `report.changes` per device key.
    changes_of: HashMap<String, Vec<usize>>,
    /// Device keys with changes not yet in the change log.
    dirty: HashSet<String>,
    /// Journal entries recovered from the change log, still to be written.
    recovered: Vec<PendingJournal>,
    /// Changes whose request is out (or whose outcome is unknown), by token: in the change log
    /// with their check until settled ([`Run::landed`], [`Run::not_landed`]).
    inflight: std::collections::BTreeMap<u64, Intent>,
    next_intent: u64,
    /// Tokens of writes that failed in a way that may still have applied them; checked in
    /// NetBox before the journal flush.
    doubtful: Vec<u64>,
    /// Entries of an interrupted pass with a change NetBox does not show yet but may still be
    /// executing (within [`Run::settle_time`] of its request): left in the change log for the
    /// next pass, unless this pass makes that change itself (then it is dropped, see
    /// [`Run::take_over`]).
    deferred: Vec<PendingJournal>,
}

/// A device create deferred to the bulk phase, with what to create for its MACs.
struct PendingCreate {
    key: String,
    serial: String,
    target: String,
    body: Value,
    fields: Vec<FieldChange>,
    has_tag: bool,
    evidence: Vec<String>,
    macs: Vec<NewMac>,
}

/// A MAC of a device being created.
struct NewMac {
    addr: String,
    iname: String,
    management: bool,
    primary: bool,
    /// An unassigned MAC object with this address, adopted rather than duplicated.
    adopt: Option<u64>,
}

/// A deferred device update.
struct PendingPatch {
    key: String,
    id: u64,
    target: String,
    patch: Map<String, Value>,
    fields: Vec<FieldChange>,
}

impl<'a> Run<'a> {
    fn new(nb: &'a NetBox, dry_run: bool, log: Option<&'a dyn ChangeLog>) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        Self {
            by_tag: HashMap::new(),
            by_name: HashMap::new(),
            by_mac: HashMap::new(),
            run_tags: HashSet::new(),
            run_names: HashSet::new(),
            run_macs: HashMap::new(),
            elevations: HashMap::new(),
            creates: Vec::new(),
            locations: HashMap::new(),
            log,
            run_id: format!("{nanos:x}{:05x}", std::process::id() & 0xfffff),
            changes_of: HashMap::new(),
            dirty: HashSet::new(),
            recovered: Vec::new(),
            inflight: std::collections::BTreeMap::new(),
            next_intent: 0,
            doubtful: Vec::new(),
            deferred: Vec::new(),
            nb,
            dry_run,
            report: SyncReport::default(),
            sites: HashMap::new(),
            racks: HashMap::new(),
            manufacturers: HashMap::new(),
            types: HashMap::new(),
            types_by_id: HashMap::new(),
            role: None,
            claims: HashMap::new(),
            seen_serials: HashSet::new(),
            cf_ready: HashSet::new(),
            cur_evidence: Vec::new(),
            device_ids: Vec::new(),
            device_idx: HashMap::new(),
            pending: Vec::new(),
            by_serial: HashMap::new(),
            ifaces_of: HashMap::new(),
        }
    }

    fn api(&self) -> &'a Api {
        &self.nb.api
    }

    fn cfg(&self) -> &'a NetBoxConfig {
        &self.nb.cfg
    }

    fn exception(&mut self, key: &str, kind: &str, detail: String) {
        warn!(device = %key, kind, detail = %detail, "NetBox sync exception; device part left alone.");
        self.report.exceptions.push(SyncException {
            device_key: key.to_owned(),
            kind: kind.to_owned(),
            detail,
        });
    }

    fn fail(&mut self, key: &str, reason: String) {
        warn!(device = %key, reason = %reason, "NetBox write failed.");
        self.report.failures.push((key.to_owned(), reason));
    }

    fn change(&mut self, key: &str, object: &str, action: &str, target: String, fields: Vec<FieldChange>) {
        info!(
            device = %key, object, action, target = %target, fields = fields.len(), dry_run = self.dry_run,
            "{}", if self.dry_run { "Planned NetBox change." } else { "Applied NetBox change." }
        );
        if !key.is_empty() {
            let list = self.changes_of.entry(key.to_owned()).or_default();
            list.push(self.report.changes.len());
            self.dirty.insert(key.to_owned());
        }
        self.report.changes.push(Change {
            device_key: key.to_owned(),
            object: object.to_owned(),
            action: action.to_owned(),
            target,
            fields,
        });
    }

    /// Every write first puts the changes made so far into the change log, so a kill during the
    /// write (or the wait for the rate limiter) loses no journal entry of an earlier change.
    async fn post<T: DeserializeOwned>(&mut self, path: &str, body: &Value) -> Result<T, Fail> {
        self.wal_sync().await;
        self.fenced()?;
        self.report.writes += 1;
        self.api().write(Method::POST, path, body).await
    }

    async fn patch<T: DeserializeOwned>(&mut self, path: &str, body: &Value) -> Result<T, Fail> {
        self.wal_sync().await;
        self.fenced()?;
        self.report.writes += 1;
        self.api().write(Method::PATCH, path, body).await
    }

    /// Refuses a write once the pass lost its lease (another pass may be writing now).
    fn fenced(&self) -> Result<(), Fail> {
        let Some(log) = self.log else { return Ok(()) };
        log.fence().map_err(|detail| {
            warn!(url = %self.api().shown, reason = %detail, "NetBox write refused: this pass no longer holds the sync lease.");
            Fail::Fatal(CmdbError::Fenced {
                url: self.api().shown.clone(),
                detail,
            })
        })
    }

    /// Puts `i` in flight: the next change-log sync (before the next request) records it.
    fn intend(&mut self, i: Intent) -> u64 {
        let t = self.next_intent;
        self.next_intent += 1;
        if !i.change.device_key.is_empty() {
            self.dirty.insert(i.change.device_key.clone());
        }
        self.inflight.insert(t, i);
        t
    }

    /// The write of intent `t` was applied: its change joins the report and the journal.
    fn landed(&mut self, t: u64) {
        if let Some(i) = self.inflight.remove(&t) {
            let c = i.change;
            self.change(&c.device_key, &c.object, &c.action, c.target, c.fields);
        }
    }

    /// The write of intent `t` was not applied.
    fn not_landed(&mut self, t: u64) {
        if let Some(i) = self.inflight.remove(&t)
            && !i.change.device_key.is_empty()
        {
            self.dirty.insert(i.change.device_key);
        }
    }

    /// Settles intent `t` after its request failed with `e`.
    fn failed(&mut self, t: u64, e: &Fail) {
        if maybe_landed(e) {
            self.doubtful.push(t);
        } else {
            self.not_landed(t);
        }
    }

    /// POST or PATCH whose change is recorded as in flight before the request and joins the
    /// report once NetBox applied it (the caller does not call [`Run::change`] for it).
    async fn write_intended<T: DeserializeOwned>(
        &mut self,
        method: Method,
        path: &str,
        body: &Value,
        intent: Intent,
    ) -> Result<T, Fail> {
        let t = self.intend(intent);
        let r = if method == Method::POST {
            self.post(path, body).await
        } else {
            self.patch(path, body).await
        };
        match &r {
            Ok(_) => self.landed(t),
            Err(e) => self.failed(t, e),
        }
        r
    }

    /// Whether `c`'s object (or field values) is in NetBox.
    async fn check_landed(&self, c: &Check) -> Result<bool, Fail> {
        let q: Vec<(&str, &str)> = c.query.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let found: Vec<Value> = self.api().list(&c.path, &q).await?;
        Ok(found.iter().any(|v| has_fields(&c.want, v)))
    }

    /// Settles the writes whose outcome was unknown by looking in NetBox.
    async fn settle_doubtful(&mut self) -> Result<(), Fail> {
        for t in std::mem::take(&mut self.doubtful) {
            let Some(check) = self.inflight.get(&t).map(|i| i.check.clone()) else {
                continue;
            };
            match self.check_landed(&check).await {
                Ok(true) => self.landed(t),
                Ok(false) => self.not_landed(t),
                Err(e @ Fail::Fatal(_)) => return Err(e),
                Err(e) => {
                    warn!(error = %e.reason(), "Cannot tell whether a failed NetBox write was applied; not journaled.");
                    self.not_landed(t);
                }
            }
        }
        self.wal_sync().await;
        Ok(())
    }

    // ---------------------------------------------------------------- per device

    async fn device(&mut self, d: &DesiredDevice) -> Result<(), Fail> {
        self.cur_evidence.clone_from(&d.evidence);
        self.device_inner(d).await
    }

    async fn device_inner(&mut self, d: &DesiredDevice) -> Result<(), Fail> {
        let serial = serial_key(&d.serial);
        if serial.is_empty() {
            self.exception(
                &d.key,
                "no_serial",
                "the device has no usable serial; nothing written".to_owned(),
            );
            return Ok(());
        }
        if crate::normalize::serial(&serial).is_none() {
            self.exception(
                &d.key,
                "placeholder_serial",
                format!("serial {serial:?} is a placeholder, not an identity; nothing written"),
            );
            return Ok(());
        }
        if !self.seen_serials.insert(serial.clone()) {
            self.exception(
                &d.key,
                "duplicate_serial_in_input",
                format!(
                    "serial {serial} appears more than once in this sync's input; only the first is synced"
                ),
            );
            return Ok(());
        }
        let found: Vec<NbDevice> = match self.by_serial.remove(&serial) {
            Some(v) => v,
            None => {
                self.api()
                    .list("api/dcim/devices/", &[("serial", &serial)])
                    .await?
            }
        };
        let matches: Vec<NbDevice> = found
            .into_iter()
            .filter(|x| serial_key(&x.serial) == serial)
            .collect();
        match matches.as_slice() {
            [] => match self.weak_match(d).await? {
                WeakMatch::None => self.create_device(d, &serial).await,
                WeakMatch::Matched(cur, how) => self.update_device(d, &serial, &cur, Some(&how)).await,
                WeakMatch::Blocked => Ok(()),
            },
            [one] => self.update_device(d, &serial, one, None).await,
            many => {
                let ids: Vec<String> = many.iter().map(|x| x.id.to_string()).collect();
                self.exception(
                    &d.key,
                    "duplicate_serial_in_cmdb",
                    format!(
                        "NetBox has {} devices with serial {serial} (ids {})",
                        many.len(),
                        ids.join(", ")
                    ),
                );
                Ok(())
            }
        }
    }

    async fn create_device(&mut self, d: &DesiredDevice, serial: &str) -> Result<(), Fail> {
        let target = format!("device serial {serial}");
        let Some(loc) = &d.location else {
            self.exception(
                &d.key,
                "no_location",
                format!(
                    "{target} matches no NetBox device (serial, asset tag, MAC) and no evidence names its rack; not created (pin its location, or add it to NetBox)"
                ),
            );
            return Ok(());
        };
        let PlaceOutcome::Ready(mut place) = self.placement(d, loc).await? else {
            return Ok(());
        };
        let Some(dtype) = self.ensure_device_type(d).await? else {
            return Ok(());
        };
        let Some(role) = self.ensure_role(&d.key).await? else {
            return Ok(());
        };

        if let (Some(u), Some(t)) = (place.position, dtype.as_ref()) {
            let t = t.clone();
            if let Some(why) = self.position_conflict(d, &place, u, &t, None).await? {
                self.exception(
                    &d.key,
                    "position_occupied",
                    format!("{target}: {why}; created without a position"),
                );
                place.position = None;
            }
        }
        let asset_tag = self.usable_asset_tag(d, None).await?;
        let name = self.usable_name(d, &place).await?;

        let mut fields = Vec::new();
        let mut push = |field: &str, new: String| {
            fields.push(FieldChange {
                field: field.to_owned(),
                old: None,
                new,
            })
        };
        push("name", name.clone().unwrap_or_else(|| "(none)".to_owned()));
        push(
            "device_type",
            dtype
                .as_ref()
                .map_or_else(|| format!("{} {}", d.vendor, d.model), |t| t.label.clone()),
        );
        push("role", self.cfg().device_role.clone());
        push("status", "active".to_owned());
        push("site", place.site_name.clone());
        push("rack", place.rack_name.clone());
        if let Some(l) = &place.rack_location {
            push("location", l.label());
        }
        if let Some(u) = place.position {
            push("position", u.to_string());
            push("face", face_str(place.face).to_owned());
        }
        push("serial", serial.to_owned());
        if let Some(t) = &asset_tag {
            push("asset_tag", t.clone());
        }
        let own = self.cfg().ownership.clone();
        let (cf_fields, cf_body) = diff_custom_fields(None, d, &own, &self.cf_ready);
        fields.extend(cf_fields);

        let device_id: Option<u64> = if self.dry_run {
            self.change(&d.key, "device", "create", target.clone(), fields);
            None
        } else {
            let (Some(t), Some(role), Some(site_id), Some(rack_id)) =
                (dtype.as_ref(), role, place.site_id, place.rack_id)
            else {
                return Err(Fail::Other(format!(
                    "{target}: site, rack, role or device type unresolved after creation"
                )));
            };
            let mut body = json!({
                "name": name, "device_type": t.id, "role": role, "status": "active",
                "site": site_id, "rack": rack_id, "serial": serial,
            });
            if let Some(l) = &place.rack_location {
                body["location"] = json!(l.id);
            }
            if let Some(u) = place.position {
                body["position"] = json!(u);
                body["face"] = json!(face_str(place.face));
            }
            if let Some(tag) = &asset_tag {
                body["asset_tag"] = json!(tag);
            }
            if !cf_body.is_empty() {
                body["custom_fields"] = Value::Object(cf_body);
            }
            if let (Some(u), Some(t)) = (place.position, dtype.as_ref()) {
                self.claim(d, &place, u, t);
            }
            if let Some(tag) = &asset_tag {
                self.run_tags.insert(tag.clone());
            }
            if let Some(n) = &name {
                self.run_names.insert((site_id, n.to_lowercase()));
            }
            let macs = if own.macs {
                self.plan_new_macs(d).await?
            } else {
                Vec::new()
            };
            self.creates.push(PendingCreate {
                key: d.key.clone(),
                serial: serial.to_owned(),
                target,
                body,
                fields,
                has_tag: asset_tag.is_some(),
                evidence: d.evidence.clone(),
                macs,
            });
            return Ok(());
        };
        if let (Some(u), Some(t)) = (place.position, dtype.as_ref()) {
            self.claim(d, &place, u, t);
        }
        if !own.macs {
            return Ok(());
        }
        self.sync_macs(d, serial, device_id, Vec::new()).await
    }

    async fn update_device(
        &mut self,
        d: &DesiredDevice,
        serial: &str,
        cur: &NbDevice,
        how: Option<&str>,
    ) -> Result<(), Fail> {
        // Known before the first write, so the change log can keep every change of it.
        self.note_device(&d.key, cur.id, self.cur_evidence.clone());
        let own = self.cfg().ownership.clone();
        let target = match how {
            None => format!("device serial {serial} (NetBox id {})", cur.id),
            Some(how) => format!(
                "device serial {serial} (NetBox id {}, {:?}, matched by {how})",
                cur.id,
                cur.name.as_deref().unwrap_or("unnamed")
            ),
        };
        let mut place = match &d.location {
            _ if !own.location => None,
            None => None,
            Some(loc) => match self.placement(d, loc).await? {
                PlaceOutcome::Ready(p) => Some(p),
                PlaceOutcome::Blocked => None,
            },
        };
        // Occupancy matters only when the device is to take a new U range.
        if let Some(p) = &place
            && let Some(u) = p.position
        {
            let moving = diff_device(cur, serial, None, Some(p))
                .fields
                .iter()
                .any(|f| matches!(f.field.as_str(), "site" | "rack" | "position" | "face"));
            let dtype = self.type_of(cur).await?;
            if let Some(t) = &dtype {
                if moving && let Some(why) = self.position_conflict(d, p, u, t, Some(cur.id)).await? {
                    self.exception(
                        &d.key,
                        "position_occupied",
                        format!("{target}: {why}; placement left as it is in NetBox"),
                    );
                    place = None;
                } else {
                    self.claim(d, p, u, t);
                }
            }
        }
        let nb_tag_empty = cur.asset_tag.as_deref().is_none_or(|t| t.trim().is_empty());
        let want_tag = d.asset_tag.as_deref().map(str::trim).filter(|t| !t.is_empty());
        let tag_differs = want_tag.is_some() && cur.asset_tag.as_deref().map(str::trim) != want_tag;
        let asset_tag = match own.asset_tag {
            TagOwnership::IfEmpty if nb_tag_empty => self.usable_asset_tag(d, Some(cur.id)).await?,
            TagOwnership::Always if tag_differs => self.usable_asset_tag(d, Some(cur.id)).await?,
            _ => None,
        };
        let mut diff = diff_device(cur, serial, asset_tag.as_deref(), place.as_ref());
        if let (TagOwnership::Always, Some(tag), false) = (own.asset_tag, asset_tag.as_deref(), nb_tag_empty)
        {
            diff.set("asset_tag", cur.asset_tag.clone(), tag.to_owned(), json!(tag));
        }
        if !own.serial {
            diff.remove("serial");
        }
        let (cf_fields, cf_patch) = diff_custom_fields(cur.custom_fields.as_ref(), d, &own, &self.cf_ready);
        if !cf_patch.is_empty() {
            diff.fields.extend(cf_fields);
            diff.patch
                .insert("custom_fields".to_owned(), Value::Object(cf_patch));
        }
        if !diff.fields.is_empty() {
            let deferrable = !diff.patch.contains_key("asset_tag")
                && !PLACEMENT_FIELDS.iter().any(|f| diff.patch.contains_key(*f));
            if self.dry_run {
                self.change(&d.key, "device", "update", target.clone(), diff.fields);
            } else if deferrable {
                self.pending.push(PendingPatch {
                    key: d.key.clone(),
                    id: cur.id,
                    target: target.clone(),
                    patch: diff.patch,
                    fields: diff.fields,
                });
            } else {
                let path = format!("api/dcim/devices/{}/", cur.id);
                let intent = device_intent(&d.key, cur.id, &target, &diff.patch, &diff.fields);
                let r: Result<NbId, Fail> = self
                    .write_intended(Method::PATCH, &path, &Value::Object(diff.patch.clone()), intent)
                    .await;
                match r {
                    Ok(_) => {}
                    Err(e) if diff.patch.contains_key("asset_tag") && e.is_bad_request_about("asset_tag") => {
                        self.exception(
                            &d.key,
                            "asset_tag_in_use",
                            format!("{target}: NetBox refused asset tag: {}", e.reason()),
                        );
                        diff.patch.remove("asset_tag");
                        diff.fields.retain(|f| f.field != "asset_tag");
                        if !diff.patch.is_empty() {
                            let intent = device_intent(&d.key, cur.id, &target, &diff.patch, &diff.fields);
                            let _: NbId = self
                                .write_intended(Method::PATCH, &path, &Value::Object(diff.patch), intent)
                                .await?;
                        }
                    }
                    // MACs are independent of the device's own fields: record and go on.
                    Err(e @ Fail::Fatal(_)) => return Err(e),
                    Err(e) => self.fail(&d.key, e.reason()),
                }
            }
        }
        if !own.macs {
            return Ok(());
        }
        let ifaces: Vec<NbInterface> = if d.macs.is_empty() {
            Vec::new()
        } else if let Some(v) = self.ifaces_of.remove(&cur.id) {
            v
        } else {
            self.api()
                .list("api/dcim/interfaces/", &[("device_id", &cur.id.to_string())])
                .await?
        };
        self.sync_macs(d, serial, Some(cur.id), ifaces).await
    }

    /// The desired asset tag if it may be written: not used by another NetBox device.
    async fn usable_asset_tag(
        &mut self,
        d: &DesiredDevice,
        own_id: Option<u64>,
    ) -> Result<Option<String>, Fail> {
        let Some(tag) = d.asset_tag.as_deref().map(str::trim).filter(|t| !t.is_empty()) else {
            return Ok(None);
        };
        if self.run_tags.contains(tag) {
            self.exception(
                &d.key,
                "asset_tag_in_use",
                format!("asset tag {tag:?} is given to another device in this sync; not written"),
            );
            return Ok(None);
        }
        let holders: Vec<NbDevice> = self.tag_holders(tag).await?;
        let others: Vec<String> = holders
            .iter()
            .filter(|x| Some(x.id) != own_id && x.asset_tag.as_deref() == Some(tag))
            .map(|x| format!("{} (id {})", x.name.as_deref().unwrap_or("unnamed"), x.id))
            .collect();
        if others.is_empty() {
            return Ok(Some(tag.to_owned()));
        }
        self.exception(
            &d.key,
            "asset_tag_in_use",
            format!(
                "asset tag {tag:?} already belongs to NetBox device {}; not written",
                others.join(", ")
            ),
        );
        Ok(None)
    }

    /// The hostname as the name of a new device, unless NetBox already has it in that site
    /// (NetBox: unique per site and tenant, case-insensitive).
    async fn usable_name(
        &mut self,
        d: &DesiredDevice,
        place: &WantPlacement,
    ) -> Result<Option<String>, Fail> {
        let Some(name) = d.hostname.as_deref().map(str::trim).filter(|n| !n.is_empty()) else {
            return Ok(None);
        };
        if name.chars().count() > DEVICE_NAME_MAX {
            self.exception(
                &d.key,
                "name_too_long",
                format!(
                    "hostname {name:?} is longer than NetBox's {DEVICE_NAME_MAX} characters; created unnamed"
                ),
            );
            return Ok(None);
        }
        let Some(site_id) = place.site_id else {
            return Ok(Some(name.to_owned()));
        };
        let taken_here = self.run_names.contains(&(site_id, name.to_lowercase()));
        let same: Vec<NbDevice> = match self.by_name.get(&name.to_lowercase()) {
            Some(v) => v
                .iter()
                .filter(|x| x.site.as_ref().is_some_and(|s| s.id == site_id))
                .cloned()
                .collect(),
            None => {
                self.api()
                    .list(
                        "api/dcim/devices/",
                        &[("site_id", &site_id.to_string()), ("name__ie", name)],
                    )
                    .await?
            }
        };
        if taken_here || same.iter().any(|x| x.tenant.as_ref().is_none_or(Value::is_null)) {
            self.exception(
                &d.key,
                "name_in_use",
                format!(
                    "NetBox already has a device named {name:?} in site {}; created unnamed",
                    place.site_name
                ),
            );
            return Ok(None);
        }
        Ok(Some(name.to_owned()))
    }

    // ---------------------------------------------------------------- matching beyond serial

    /// Asset tag (0.9), MAC (0.8), hostname (0.4): only NetBox devices without a usable serial
    /// are candidates; a device with another real serial is another device.
    async fn weak_match(&mut self, d: &DesiredDevice) -> Result<WeakMatch, Fail> {
        if let Some(tag) = d.asset_tag.as_deref().map(str::trim).filter(|t| !t.is_empty()) {
            let hits: Vec<NbDevice> = self.tag_holders(tag).await?;
            let free: Vec<NbDevice> = hits
                .into_iter()
                .filter(|x| x.asset_tag.as_deref().map(str::trim) == Some(tag) && serial_free(x))
                .collect();
            match free.len() {
                0 => {}
                1 => {
                    let how = format!("asset tag {tag} (confidence 0.9)");
                    return Ok(WeakMatch::Matched(
                        Box::new(free.into_iter().next().unwrap_or_else(|| unreachable!())),
                        how,
                    ));
                }
                _ => {
                    return Ok(self.duplicates(
                        d,
                        "duplicate_asset_tag_in_cmdb",
                        &format!("asset tag {tag}"),
                        &free,
                    ));
                }
            }
        }
        let mut ids: Vec<u64> = Vec::new();
        let mut via = Vec::new();
        for m in &d.macs {
            let Some(_) = mac_key(&m.address) else { continue };
            let addr = m.address.trim().to_lowercase();
            let known: Vec<NbMac> = match self.by_mac.get(&mac_key(&addr).unwrap_or_default()) {
                Some(v) => v.clone(),
                None => {
                    self.api()
                        .list("api/dcim/mac-addresses/", &[("mac_address", &addr)])
                        .await?
                }
            };
            for k in known.iter().filter(|k| mac_eq(&k.mac_address, &addr)) {
                if k.assigned_object_type.as_deref() != Some("dcim.interface") {
                    continue;
                }
                let dev = k
                    .assigned_object
                    .as_ref()
                    .and_then(|o| o.get("device"))
                    .and_then(|dv| dv.get("id"))
                    .and_then(Value::as_u64);
                if let Some(id) = dev
                    && !ids.contains(&id)
                {
                    ids.push(id);
                    via.push(addr.clone());
                }
            }
        }
        if !ids.is_empty() {
            let id_strs: Vec<String> = ids.iter().map(u64::to_string).collect();
            let q: Vec<(&str, &str)> = id_strs.iter().map(|i| ("id", i.as_str())).collect();
            let devs: Vec<NbDevice> = self.api().list("api/dcim/devices/", &q).await?;
            let free: Vec<NbDevice> = devs.into_iter().filter(serial_free).collect();
            match free.len() {
                0 => {}
                1 => {
                    let how = format!("MAC {} (confidence 0.8)", via.join(", "));
                    return Ok(WeakMatch::Matched(
                        Box::new(free.into_iter().next().unwrap_or_else(|| unreachable!())),
                        how,
                    ));
                }
                _ => {
                    return Ok(self.duplicates(
                        d,
                        "duplicate_mac_in_cmdb",
                        &format!("MAC {}", via.join(", ")),
                        &free,
                    ));
                }
            }
        }
        if let Some(name) = d.hostname.as_deref().map(str::trim).filter(|n| !n.is_empty()) {
            let hits: Vec<NbDevice> = match self.by_name.get(&name.to_lowercase()) {
                Some(v) => v.clone(),
                None => {
                    self.api()
                        .list("api/dcim/devices/", &[("name__ie", name)])
                        .await?
                }
            };
            let free: Vec<NbDevice> = hits.into_iter().filter(serial_free).collect();
            match free.len() {
                0 => {}
                1 if self.cfg().ownership.match_hostname => {
                    let how = format!("hostname {name} (confidence 0.4)");
                    return Ok(WeakMatch::Matched(
                        Box::new(free.into_iter().next().unwrap_or_else(|| unreachable!())),
                        how,
                    ));
                }
                1 => {
                    let x = &free[0];
                    self.exception(
                        &d.key,
                        "weak_match_hostname",
                        format!(
                            "NetBox device {name:?} (id {}) has no serial and matches serial {} only by hostname \
                             (confidence 0.4); not linked and no duplicate created — confirm it, or set \
                             netbox.ownership.match_hostname = true",
                            x.id, d.serial
                        ),
                    );
                    return Ok(WeakMatch::Blocked);
                }
                _ => {
                    return Ok(self.duplicates(
                        d,
                        "duplicate_hostname_in_cmdb",
                        &format!("hostname {name:?}"),
                        &free,
                    ));
                }
            }
        }
        Ok(WeakMatch::None)
    }

    fn duplicates(&mut self, d: &DesiredDevice, kind: &str, key: &str, many: &[NbDevice]) -> WeakMatch {
        let ids: Vec<String> = many.iter().map(|x| x.id.to_string()).collect();
        self.exception(
            &d.key,
            kind,
            format!(
                "NetBox has {} serial-less devices matching {key} (ids {}); serial {} not linked to any",
                many.len(),
                ids.join(", "),
                d.serial
            ),
        );
        WeakMatch::Blocked
    }

    // ---------------------------------------------------------------- custom fields, journal

    /// Makes sure the owned custom fields exist on dcim.device (planned only, on a dry run).
    async fn ensure_custom_fields(&mut self) -> Result<(), Fail> {
        let own = self.cfg().ownership.clone();
        let wanted = [
            (own.power, CF_POWER, "integer", "Measured power (W)"),
            (own.last_seen, CF_LAST_SEEN, "text", "Last seen by groundtruth"),
        ];
        for (on, name, kind, label) in wanted {
            if !on {
                continue;
            }
            let have: Vec<NbId> = self
                .api()
                .list("api/extras/custom-fields/", &[("name", name)])
                .await?;
            if !have.is_empty() {
                self.cf_ready.insert(name);
                continue;
            }
            let target = format!("custom field {name} ({kind}) on dcim.device");
            let fields = vec![FieldChange {
                field: "type".to_owned(),
                old: None,
                new: kind.to_owned(),
            }];
            if self.dry_run {
                self.change("", "custom_field", "create", target, fields);
                self.cf_ready.insert(name);
                continue;
            }
            let body = json!({
                "name": name, "label": label, "type": kind, "object_types": ["dcim.device"],
                "description": "Written by groundtruth-collector from measurements; do not edit.",
                "required": false,
            });
            match self.post::<NbId>("api/extras/custom-fields/", &body).await {
                Ok(_) => {
                    self.change("", "custom_field", "create", target, fields);
                    self.cf_ready.insert(name);
                }
                Err(e @ Fail::Fatal(_)) => return Err(e),
                Err(e) => {
                    // Another collector may have created it meanwhile.
                    let again: Vec<NbId> = self
                        .api()
                        .list("api/extras/custom-fields/", &[("name", name)])
                        .await?;
                    if again.is_empty() {
                        self.fail("", format!("creating {target}: {}", e.reason()));
                    } else {
                        self.cf_ready.insert(name);
                    }
                }
            }
        }
        Ok(())
    }

    /// Reads the devices with the input's serials and their interfaces, [`PREFETCH_CHUNK`] keys
    /// per request, so a cycle without changes costs a few requests per 50 devices instead of
    /// two per device. Lookups not prefetched (a failed read) fall back to one request each.
    async fn prefetch(&mut self, devices: &[DesiredDevice]) -> Result<(), Fail> {
        let serials: Vec<String> = devices
            .iter()
            .map(|d| serial_key(&d.serial))
            .filter(|s| !s.is_empty())
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        let mut matched: Vec<u64> = Vec::new();
        for chunk in serials.chunks(PREFETCH_CHUNK) {
            let q: Vec<(&str, &str)> = chunk.iter().map(|s| ("serial", s.as_str())).collect();
            let found: Vec<NbDevice> = self.api().list("api/dcim/devices/", &q).await?;
            let mut got: HashMap<String, Vec<NbDevice>> =
                chunk.iter().map(|s| (s.clone(), Vec::new())).collect();
            for x in found {
                if let Some(v) = got.get_mut(&serial_key(&x.serial)) {
                    v.push(x);
                }
            }
            for v in got.values() {
                if let [one] = v.as_slice() {
                    matched.push(one.id);
                }
            }
            self.by_serial.extend(got);
        }
        self.prefetch_unmatched(devices).await?;
        if !self.cfg().ownership.macs {
            return Ok(());
        }
        for chunk in matched.chunks(PREFETCH_CHUNK) {
            let ids: Vec<String> = chunk.iter().map(u64::to_string).collect();
            let q: Vec<(&str, &str)> = ids.iter().map(|i| ("device_id", i.as_str())).collect();
            let found: Vec<Value> = self.api().list("api/dcim/interfaces/", &q).await?;
            let mut got: HashMap<u64, Vec<NbInterface>> = chunk.iter().map(|id| (*id, Vec::new())).collect();
            for v in found {
                let dev = v.get("device").and_then(|d| d.get("id")).and_then(Value::as_u64);
                if let (Some(dev), Ok(i)) = (dev, serde_json::from_value::<NbInterface>(v))
                    && let Some(list) = got.get_mut(&dev)
                {
                    list.push(i);
                }
            }
            self.ifaces_of.extend(got);
        }
        Ok(())
    }

    /// For the devices NetBox has no serial for (new ones, mostly): the devices holding their
    /// asset tags and hostnames and the MAC objects with their MACs, [`PREFETCH_CHUNK`] keys per
    /// request, so matching and creating them costs no read per device.
    async fn prefetch_unmatched(&mut self, devices: &[DesiredDevice]) -> Result<(), Fail> {
        let unmatched: Vec<&DesiredDevice> = devices
            .iter()
            .filter(|d| {
                let k = serial_key(&d.serial);
                self.by_serial
                    .get(&k)
                    .is_some_and(|v| !v.iter().any(|x| serial_key(&x.serial) == k))
            })
            .collect();
        let uniq = |v: Vec<String>| -> Vec<String> {
            let mut seen = HashSet::new();
            v.into_iter()
                .filter(|x| !x.is_empty() && seen.insert(x.clone()))
                .collect()
        };
        let tags = uniq(
            unmatched
                .iter()
                .filter_map(|d| d.asset_tag.as_deref().map(|t| t.trim().to_owned()))
                .collect(),
        );
        let names = uniq(
            unmatched
                .iter()
                .filter_map(|d| d.hostname.as_deref().map(|n| n.trim().to_lowercase()))
                .collect(),
        );
        let macs = uniq(
            unmatched
                .iter()
                .flat_map(|d| d.macs.iter())
                .filter(|m| mac_key(&m.address).is_some())
                .map(|m| m.address.trim().to_lowercase())
                .collect(),
        );
        for chunk in tags.chunks(PREFETCH_CHUNK) {
            let q: Vec<(&str, &str)> = chunk.iter().map(|t| ("asset_tag", t.as_str())).collect();
            let found: Vec<NbDevice> = self.api().list("api/dcim/devices/", &q).await?;
            let mut got: HashMap<String, Vec<NbDevice>> =
                chunk.iter().map(|t| (t.clone(), Vec::new())).collect();
            for x in found {
                if let Some(v) = x.asset_tag.as_deref().and_then(|t| got.get_mut(t.trim())) {
                    v.push(x);
                }
            }
            self.by_tag.extend(got);
        }
        for chunk in names.chunks(PREFETCH_CHUNK) {
            let q: Vec<(&str, &str)> = chunk.iter().map(|n| ("name__ie", n.as_str())).collect();
            let found: Vec<NbDevice> = self.api().list("api/dcim/devices/", &q).await?;
            let mut got: HashMap<String, Vec<NbDevice>> =
                chunk.iter().map(|n| (n.clone(), Vec::new())).collect();
            for x in found {
                if let Some(v) = x
                    .name
                    .as_deref()
                    .and_then(|n| got.get_mut(&n.trim().to_lowercase()))
                {
                    v.push(x);
                }
            }
            self.by_name.extend(got);
        }
        if self.cfg().ownership.macs {
            for chunk in macs.chunks(PREFETCH_CHUNK) {
                let q: Vec<(&str, &str)> = chunk.iter().map(|m| ("mac_address", m.as_str())).collect();
                let found: Vec<NbMac> = self.api().list("api/dcim/mac-addresses/", &q).await?;
                let mut got: HashMap<String, Vec<NbMac>> = chunk
                    .iter()
                    .filter_map(|m| mac_key(m))
                    .map(|k| (k, Vec::new()))
                    .collect();
                for m in found {
                    if let Some(v) = mac_key(&m.mac_address).and_then(|k| got.get_mut(&k)) {
                        v.push(m);
                    }
                }
                self.by_mac.extend(got);
            }
        }
        Ok(())
    }

    /// NetBox devices holding asset tag `tag` (prefetched, else read).
    async fn tag_holders(&self, tag: &str) -> Result<Vec<NbDevice>, Fail> {
        match self.by_tag.get(tag) {
            Some(v) => Ok(v.clone()),
            None => self.api().list("api/dcim/devices/", &[("asset_tag", tag)]).await,
        }
    }

    /// Writes the deferred device updates, [`PATCH_CHUNK`] per bulk PATCH. NetBox applies a bulk
    /// update in one transaction: a refused chunk is split until the bad item fails alone.
    async fn flush_patches(&mut self) -> Result<(), Fail> {
        let pending = std::mem::take(&mut self.pending);
        let body: Vec<Value> = pending
            .iter()
            .map(|p| {
                let mut m = p.patch.clone();
                m.insert("id".to_owned(), json!(p.id));
                Value::Object(m)
            })
            .collect();
        let intents = pending
            .iter()
            .map(|p| device_intent(&p.key, p.id, &p.target, &p.patch, &p.fields))
            .collect();
        let results = self
            .bulk(Method::PATCH, "api/dcim/devices/", &body, PATCH_CHUNK, intents)
            .await?;
        for (p, r) in pending.into_iter().zip(results) {
            match r {
                Ok(_) => {}
                Err(e @ Fail::Fatal(_)) => return Err(e),
                Err(e) => self.fail(&p.key, e.reason()),
            }
        }
        self.wal_sync().await;
        Ok(())
    }

    /// Writes a journal entry on every device this run changed (and those an interrupted pass
    /// left in the change log), [`JOURNAL_CHUNK`] per bulk POST; each ends with its marker.
    async fn flush_journal(&mut self) -> Result<(), Fail> {
        if self.dry_run || !self.cfg().journal {
            return Ok(());
        }
        self.wal_sync().await;
        let mut markers = Vec::new();
        let mut entries = Vec::new();
        let mut done: HashSet<&str> = HashSet::new();
        for p in &self.recovered {
            if let Some(id) = p.object_id {
                entries.push(json!({
                    "assigned_object_type": "dcim.device", "assigned_object_id": id,
                    "kind": "info", "comments": p.comments,
                }));
                markers.push(p.marker.clone());
            }
        }
        for (key, id, evidence) in self.device_ids.iter().rev() {
            if !self.changes_of.contains_key(key) || !done.insert(key.as_str()) {
                continue;
            }
            entries.push(json!({
                "assigned_object_type": "dcim.device",
                "assigned_object_id": id,
                "kind": "info",
                "comments": self.journal_for(key, evidence, None),
            }));
            markers.push(self.marker(key));
        }
        let results = self
            .bulk(
                Method::POST,
                "api/extras/journal-entries/",
                &entries,
                JOURNAL_CHUNK,
                Vec::new(),
            )
            .await?;
        let mut written = Vec::new();
        for (marker, r) in markers.into_iter().zip(results) {
            match r {
                Ok(_) => {
                    self.report.journal_entries += 1;
                    written.push(marker);
                }
                Err(e @ Fail::Fatal(_)) => return Err(e),
                // The device is gone (or the entry is unacceptable): it will never be written.
                Err(e @ Fail::Status { status: 400, .. }) => {
                    warn!(marker = %marker, error = %e.reason(), "NetBox refused a journal entry; dropped.");
                    written.push(marker);
                }
                Err(e) => self.fail("", format!("journal entry {marker}: {}", e.reason())),
            }
        }
        if let Some(log) = self.log
            && !written.is_empty()
            && let Err(e) = log.written(written).await
        {
            warn!(error = %e, "Cannot update pending NetBox journal entries in the store.");
        }
        Ok(())
    }

    // ---------------------------------------------------------------- placement

    async fn placement(
        &mut self,
        d: &DesiredDevice,
        loc: &super::DesiredLocation,
    ) -> Result<PlaceOutcome, Fail> {
        let site_name = loc.site.trim();
        let rack_name = loc.rack.trim();
        if slugify(site_name).is_empty() || rack_name.is_empty() {
            self.exception(
                &d.key,
                "location_incomplete",
                format!("site {site_name:?} / rack {rack_name:?} cannot be placed in NetBox; placement not written"),
            );
            return Ok(PlaceOutcome::Blocked);
        }
        let site = match self.ensure_site(&d.key, site_name).await? {
            Resolved::Found(s) => Some(s),
            Resolved::Planned => None,
            Resolved::Missing => {
                self.exception(
                    &d.key,
                    "missing_in_cmdb",
                    format!("site {site_name:?} is not in NetBox and create_missing is off"),
                );
                return Ok(PlaceOutcome::Blocked);
            }
            Resolved::Failed(why) => {
                return Err(Fail::Other(format!(
                    "site {site_name:?} could not be created: {why}"
                )));
            }
        };
        // The room (NetBox location) under the site, when known and the location is owned.
        let room = loc
            .room
            .as_deref()
            .map(str::trim)
            .filter(|r| !slugify(r).is_empty());
        let want_loc: Option<Resolved<NbRef>> = match (room, site.as_ref()) {
            (Some(room), _) if !self.cfg().ownership.location => {
                debug!(device = %d.key, room, "Location not owned; room not written.");
                None
            }
            (Some(room), Some(s)) => Some(self.ensure_location(&d.key, s, room).await?),
            (Some(_), None) => Some(Resolved::Planned),
            (None, _) => None,
        };
        let loc_id = match &want_loc {
            Some(Resolved::Found(l)) => Some(l.id),
            _ => None,
        };
        let rack = match self
            .ensure_rack(&d.key, site_name, site.as_ref(), rack_name, loc_id)
            .await?
        {
            Resolved::Found(r) => Some(self.rack_in_room(d, r, want_loc.as_ref(), room).await?),
            Resolved::Planned => None,
            Resolved::Missing => {
                self.exception(
                    &d.key,
                    "missing_in_cmdb",
                    format!(
                        "rack {rack_name:?} in site {site_name:?} is not in NetBox and create_missing is off"
                    ),
                );
                return Ok(PlaceOutcome::Blocked);
            }
            Resolved::Failed(why) => {
                return Err(Fail::Other(format!(
                    "rack {rack_name:?} could not be created: {why}"
                )));
            }
        };
        Ok(PlaceOutcome::Ready(WantPlacement {
            site_id: site.as_ref().map(|s| s.id),
            site_name: site.map_or_else(|| site_name.to_owned(), |s| s.name),
            rack_id: rack.as_ref().map(|r| r.id),
            rack_location: rack.as_ref().and_then(|r| r.location.clone()),
            rack_name: rack.map_or_else(|| rack_name.to_owned(), |r| r.name),
            position: loc.position.filter(|&u| u > 0),
            face: loc.face,
        }))
    }

    async fn ensure_site(&mut self, key: &str, name: &str) -> Result<Resolved<SiteInfo>, Fail> {
        let slug = slugify(name);
        if let Some(r) = self.sites.get(&slug) {
            return Ok(r.clone());
        }
        let path = "api/dcim/sites/";
        let lookups: [&[(&str, &str)]; 2] = [&[("slug", &slug)], &[("name", name)]];
        let target = format!("site {name} (slug {slug})");
        let body = json!({ "name": name, "slug": slug, "status": "active" });
        let r = self
            .ensure::<NbSite>(key, "site", target, path, &lookups, Some(body), Vec::new())
            .await?
            .map(|s| SiteInfo {
                id: s.id,
                name: s.name,
            });
        self.sites.insert(slug, r.clone());
        Ok(r)
    }

    async fn ensure_rack(
        &mut self,
        key: &str,
        site_name: &str,
        site: Option<&SiteInfo>,
        name: &str,
        location: Option<u64>,
    ) -> Result<Resolved<RackInfo>, Fail> {
        let ck = (slugify(site_name), name.to_owned());
        if let Some(r) = self.racks.get(&ck) {
            return Ok(r.clone());
        }
        let site_id = site.map(|s| s.id.to_string());
        let height = self.cfg().rack_height;
        let target = format!("rack {name} in site {site_name}");
        let fields = vec![FieldChange {
            field: "u_height".to_owned(),
            old: None,
            new: height.to_string(),
        }];
        let r = match (&site_id, site) {
            (Some(sid), Some(s)) => {
                // Rack names are unique per location: the one in the wanted room first.
                let lid = location.map(|l| l.to_string()).unwrap_or_default();
                let in_room: &[(&str, &str)] = &[("site_id", sid), ("location_id", &lid), ("name", name)];
                let anywhere: &[(&str, &str)] = &[("site_id", sid), ("name", name)];
                let lookups: Vec<&[(&str, &str)]> = if location.is_some() {
                    vec![in_room, anywhere]
                } else {
                    vec![anywhere]
                };
                let mut body = json!({ "name": name, "site": s.id, "status": "active", "u_height": height });
                if let Some(l) = location {
                    body["location"] = json!(l);
                }
                self.ensure::<NbRack>(
                    key,
                    "rack",
                    target,
                    "api/dcim/racks/",
                    &lookups,
                    Some(body),
                    fields,
                )
                .await?
            }
            // The site itself is only planned: so is the rack.
            _ => {
                self.ensure::<NbRack>(key, "rack", target, "api/dcim/racks/", &[], None, fields)
                    .await?
            }
        };
        let r = r.map(|x| RackInfo {
            id: x.id,
            name: x.name,
            location: x.location,
        });
        self.racks.insert(ck, r.clone());
        Ok(r)
    }

    /// The NetBox location (room) `room` directly under the site, created when missing.
    async fn ensure_location(
        &mut self,
        key: &str,
        site: &SiteInfo,
        room: &str,
    ) -> Result<Resolved<NbRef>, Fail> {
        let slug = slugify(room);
        let ck = (site.id.to_string(), slug.clone());
        if let Some(r) = self.locations.get(&ck) {
            return Ok(r.clone());
        }
        let sid = site.id.to_string();
        let lookups: [&[(&str, &str)]; 2] = [
            &[("site_id", &sid), ("slug", &slug)],
            &[("site_id", &sid), ("name", room)],
        ];
        let target = format!("location (room) {room} in site {} (slug {slug})", site.name);
        let body = json!({ "name": room, "slug": slug, "site": site.id, "status": "active" });
        let r = self
            .ensure::<NbSite>(
                key,
                "location",
                target,
                "api/dcim/locations/",
                &lookups,
                Some(body),
                Vec::new(),
            )
            .await?
            .map(|l| NbRef {
                id: l.id,
                name: Some(l.name),
                display: None,
            });
        self.locations.insert(ck, r.clone());
        Ok(r)
    }

    /// Puts a rack without a location into the device's room (the collector owns physical
    /// location); a rack NetBox has in another room is an exception and stays where it is.
    async fn rack_in_room(
        &mut self,
        d: &DesiredDevice,
        mut r: RackInfo,
        want: Option<&Resolved<NbRef>>,
        room: Option<&str>,
    ) -> Result<RackInfo, Fail> {
        let target = format!("rack {} (NetBox id {})", r.name, r.id);
        match (want, r.location.clone()) {
            (Some(Resolved::Found(l)), Some(cur)) if cur.id != l.id => {
                self.exception(
                    &d.key,
                    "rack_location_differs",
                    format!(
                        "{target} is in location {} in NetBox, the collector places it in room {}; rack left alone",
                        cur.label(),
                        room.unwrap_or("?")
                    ),
                );
            }
            (Some(Resolved::Found(l)), None) => {
                let fields = vec![FieldChange {
                    field: "location".to_owned(),
                    old: None,
                    new: l.label(),
                }];
                if !self.dry_run {
                    let path = format!("api/dcim/racks/{}/", r.id);
                    match self.patch::<NbId>(&path, &json!({ "location": l.id })).await {
                        Ok(_) => {}
                        Err(e @ Fail::Fatal(_)) => return Err(e),
                        Err(e) => {
                            self.fail(&d.key, format!("{target}: setting its location: {}", e.reason()));
                            return Ok(r);
                        }
                    }
                }
                self.change("", "rack", "update", target, fields);
                r.location = Some(l.clone());
                for v in self.racks.values_mut() {
                    if let Resolved::Found(x) = v
                        && x.id == r.id
                    {
                        x.location = r.location.clone();
                    }
                }
            }
            (Some(Resolved::Planned), None)
                if !self
                    .report
                    .changes
                    .iter()
                    .any(|c| c.object == "rack" && c.target == target) =>
            {
                let fields = vec![FieldChange {
                    field: "location".to_owned(),
                    old: None,
                    new: room.unwrap_or("?").to_owned(),
                }];
                self.change("", "rack", "update", target, fields);
            }
            _ => {}
        }
        Ok(r)
    }

    async fn ensure_manufacturer(&mut self, key: &str, vendor: &str) -> Result<Resolved<u64>, Fail> {
        let slug = slugify(vendor);
        if let Some(r) = self.manufacturers.get(&slug) {
            return Ok(r.clone());
        }
        let lookups: [&[(&str, &str)]; 2] = [&[("slug", &slug)], &[("name", vendor)]];
        let target = format!("manufacturer {vendor} (slug {slug})");
        let body = json!({ "name": vendor, "slug": slug });
        let r = self
            .ensure::<NbId>(
                key,
                "manufacturer",
                target,
                "api/dcim/manufacturers/",
                &lookups,
                Some(body),
                Vec::new(),
            )
            .await?
            .map(|m| m.id);
        self.manufacturers.insert(slug, r.clone());
        Ok(r)
    }

    /// Finds a shared object with the first lookup that returns one; otherwise creates it (or
    /// plans it on a dry run, or reports it missing when `create_missing` is off). `body: None`
    /// means it cannot be created yet (its parent is only planned). A refused create is looked up
    /// once more: another writer may have created it meanwhile. NetBox 4.7 answers such a lost
    /// race with 400 (its uniqueness check saw the other row) or 500 `IntegrityError` (the
    /// check passed, the INSERT did not).
    #[allow(clippy::too_many_arguments)]
    async fn ensure<T: DeserializeOwned + HasId>(
        &mut self,
        key: &str,
        object: &str,
        target: String,
        path: &str,
        lookups: &[&[(&str, &str)]],
        body: Option<Value>,
        fields: Vec<FieldChange>,
    ) -> Result<Resolved<T>, Fail> {
        if let Some(found) = self.find_first::<T>(path, lookups).await? {
            return Ok(Resolved::Found(found));
        }
        if !self.cfg().create_missing {
            return Ok(Resolved::Missing);
        }
        let Some(body) = body.filter(|_| !self.dry_run) else {
            self.change(key, object, "create", target, fields);
            return Ok(Resolved::Planned);
        };
        let intent = Intent {
            change: Change {
                device_key: key.to_owned(),
                object: object.to_owned(),
                action: "create".to_owned(),
                target: target.clone(),
                fields,
            },
            check: Check::new(
                path,
                &lookups
                    .first()
                    .map(|q| q.iter().map(|(k, v)| (*k, (*v).to_owned())).collect::<Vec<_>>())
                    .unwrap_or_default(),
                json!({}),
            ),
        };
        match self.write_intended::<T>(Method::POST, path, &body, intent).await {
            Ok(created) => {
                info!(object, id = created.id(), target = %target, "Created shared object in NetBox.");
                // Racks without a location are not unique in NetBox (NULL location): a concurrent
                // writer may have created the same one. Everyone settles on the one lookups find first.
                if object == "rack"
                    && let Some(first) = self.find_first::<T>(path, lookups).await?
                    && first.id() != created.id()
                {
                    self.exception(
                        key,
                        "duplicate_in_cmdb",
                        format!(
                            "{target} was created concurrently twice (ids {} and {}); using {}, id {} is redundant",
                            first.id(),
                            created.id(),
                            first.id(),
                            created.id()
                        ),
                    );
                    return Ok(Resolved::Found(first));
                }
                Ok(Resolved::Found(created))
            }
            Err(e @ Fail::Fatal(_)) => Err(e),
            Err(e @ Fail::Status { .. }) => match self.find_first::<T>(path, lookups).await? {
                Some(found) => {
                    debug!(object, target = %target, "Create lost a race; using the object NetBox now has.");
                    Ok(Resolved::Found(found))
                }
                None => Ok(Resolved::Failed(e.reason())),
            },
            Err(e) => Ok(Resolved::Failed(e.reason())),
        }
    }

    async fn find_first<T: DeserializeOwned>(
        &self,
        path: &str,
        lookups: &[&[(&str, &str)]],
    ) -> Result<Option<T>, Fail> {
        for q in lookups {
            let found: Vec<T> = self.api().list(path, q).await?;
            if let Some(x) = found.into_iter().next() {
                return Ok(Some(x));
            }
        }
        Ok(None)
    }

    /// `Ok(None)`: an exception was recorded, the device cannot be created.
    /// `Ok(Some(None))`: planned (dry run).
    async fn ensure_device_type(&mut self, d: &DesiredDevice) -> Result<Option<Option<TypeInfo>>, Fail> {
        let (vendor, model) = (d.vendor.trim(), d.model.trim());
        let (mslug, slug) = (slugify(vendor), slugify(model));
        if mslug.is_empty() || slug.is_empty() {
            self.exception(
                &d.key,
                "model_unknown",
                format!("vendor {vendor:?} / model {model:?} cannot be a NetBox device type; not created"),
            );
            return Ok(None);
        }
        let ck = (mslug, slug.clone());
        let r = match self.types.get(&ck).cloned() {
            Some(r) => r,
            None => {
                let r = match self.ensure_manufacturer(&d.key, vendor).await? {
                    Resolved::Found(mid) => {
                        let mid_s = mid.to_string();
                        let lookups: [&[(&str, &str)]; 2] = [
                            &[("manufacturer_id", &mid_s), ("slug", &slug)],
                            &[("manufacturer_id", &mid_s), ("model", model)],
                        ];
                        let mut body =
                            json!({ "manufacturer": mid, "model": model, "slug": slug, "u_height": 1 });
                        if let Some(pn) = d.part_number.as_deref().map(str::trim).filter(|p| !p.is_empty()) {
                            body["part_number"] = json!(pn);
                        }
                        self.ensure_type(&d.key, vendor, model, &slug, &lookups, Some(body))
                            .await?
                    }
                    Resolved::Planned => self.ensure_type(&d.key, vendor, model, &slug, &[], None).await?,
                    Resolved::Missing => Resolved::Missing,
                    Resolved::Failed(why) => Resolved::Failed(format!("manufacturer {vendor:?}: {why}")),
                };
                if let Resolved::Found(t) = &r {
                    self.types_by_id.insert(t.id, t.clone());
                }
                self.types.insert(ck, r.clone());
                r
            }
        };
        match r {
            Resolved::Found(t) => Ok(Some(Some(t))),
            Resolved::Planned => Ok(Some(None)),
            Resolved::Missing => {
                self.exception(
                    &d.key,
                    "missing_in_cmdb",
                    format!(
                        "device type {vendor} {model} is not in NetBox and create_missing is off; device not created"
                    ),
                );
                Ok(None)
            }
            Resolved::Failed(why) => Err(Fail::Other(format!(
                "device type {vendor} {model} could not be created: {why}"
            ))),
        }
    }

    async fn ensure_type(
        &mut self,
        key: &str,
        vendor: &str,
        model: &str,
        slug: &str,
        lookups: &[&[(&str, &str)]],
        body: Option<Value>,
    ) -> Result<Resolved<TypeInfo>, Fail> {
        let target = format!("device type {vendor} {model} (slug {slug})");
        let fields = vec![FieldChange {
            field: "u_height".to_owned(),
            old: None,
            new: "1".to_owned(),
        }];
        let path = "api/dcim/device-types/";
        Ok(self
            .ensure::<NbDeviceType>(key, "device_type", target, path, lookups, body, fields)
            .await?
            .map(|t| TypeInfo::from_nb(&t, vendor)))
    }

    /// Role id for created devices: `Ok(None)` = exception recorded; `Some(None)` = planned.
    async fn ensure_role(&mut self, key: &str) -> Result<Option<Option<u64>>, Fail> {
        let name = self.cfg().device_role.trim().to_owned();
        let slug = slugify(&name);
        let r = match self.role.clone() {
            Some(r) => r,
            None if slug.is_empty() => Resolved::Failed(format!("device role {name:?} has no usable slug")),
            None => {
                let lookups: [&[(&str, &str)]; 2] = [&[("slug", &slug)], &[("name", &name)]];
                let target = format!("device role {name} (slug {slug})");
                let body = json!({ "name": name, "slug": slug, "color": ROLE_COLOR });
                let path = "api/dcim/device-roles/";
                let r = self
                    .ensure::<NbId>(key, "device_role", target, path, &lookups, Some(body), Vec::new())
                    .await?
                    .map(|x| x.id);
                self.role = Some(r.clone());
                r
            }
        };
        match r {
            Resolved::Found(id) => Ok(Some(Some(id))),
            Resolved::Planned => Ok(Some(None)),
            Resolved::Missing => {
                self.exception(
                    key,
                    "missing_in_cmdb",
                    format!(
                        "device role {name:?} is not in NetBox and create_missing is off; device not created"
                    ),
                );
                Ok(None)
            }
            Resolved::Failed(why) => Err(Fail::Other(format!(
                "device role {name:?} could not be created: {why}"
            ))),
        }
    }

    /// Height and depth of an existing device's type.
    async fn type_of(&mut self, cur: &NbDevice) -> Result<Option<TypeInfo>, Fail> {
        let Some(t) = &cur.device_type else {
            return Ok(None);
        };
        if let Some(info) = self.types_by_id.get(&t.id) {
            return Ok(Some(info.clone()));
        }
        let nb: NbDeviceType = self
            .api()
            .get(&format!("api/dcim/device-types/{}/", t.id), &[])
            .await?;
        let info = TypeInfo {
            id: nb.id,
            label: t.label(),
            u_height: nb.u_height,
            full_depth: nb.is_full_depth,
        };
        self.types_by_id.insert(t.id, info.clone());
        Ok(Some(info))
    }

    // ---------------------------------------------------------------- rack space

    fn claim_for(d: &DesiredDevice, u: u32, face: Face, t: &TypeInfo) -> Claim {
        let lo = f64::from(u);
        Claim {
            lo,
            hi: lo + t.u_height,
            face,
            full_depth: t.full_depth,
            key: d.key.clone(),
        }
    }

    fn claim(&mut self, d: &DesiredDevice, p: &WantPlacement, u: u32, t: &TypeInfo) {
        let c = Self::claim_for(d, u, p.face, t);
        self.claims
            .entry((p.site_name.clone(), p.rack_name.clone()))
            .or_default()
            .push(c);
    }

    /// Why the device cannot take U `u`..`u+height` in the target rack, if it cannot.
    async fn position_conflict(
        &mut self,
        d: &DesiredDevice,
        p: &WantPlacement,
        u: u32,
        t: &TypeInfo,
        exclude: Option<u64>,
    ) -> Result<Option<String>, Fail> {
        if t.u_height <= 0.0 {
            return Ok(None);
        }
        let mine = Self::claim_for(d, u, p.face, t);
        let top = if t.u_height >= 1.0 { mine.hi - 1.0 } else { mine.lo };
        let range = if top > mine.lo {
            format!("U{}-U{}", units_str(mine.lo), units_str(top))
        } else {
            format!("U{}", units_str(mine.lo))
        };
        if let Some(other) = self
            .claims
            .get(&(p.site_name.clone(), p.rack_name.clone()))
            .and_then(|cs| cs.iter().find(|c| c.key != d.key && c.collides(&mine)))
        {
            return Ok(Some(format!(
                "{range} of rack {} is also claimed by device {} in this sync",
                p.rack_name, other.key
            )));
        }
        let Some(rack_id) = p.rack_id else { return Ok(None) };
        // A full-depth device collides with anything at that height; otherwise the face's
        // elevation already includes full-depth devices mounted on the other face.
        let faces: &[Face] = if t.full_depth {
            &[Face::Front, Face::Rear]
        } else {
            std::slice::from_ref(&p.face)
        };
        let mut holders: Vec<String> = Vec::new();
        for &face in faces {
            let path = format!("api/dcim/racks/{rack_id}/elevation/");
            let excl = exclude.map(|id| id.to_string());
            let mut q = vec![("face", face_str(face))];
            if let Some(x) = &excl {
                q.push(("exclude", x));
            }
            let cached = excl
                .is_none()
                .then(|| self.elevations.get(&(rack_id, face_str(face))).cloned())
                .flatten();
            let units: Vec<NbUnit> = match cached {
                Some(u) => u,
                None => {
                    let u: Vec<NbUnit> = self.api().list(&path, &q).await?;
                    if excl.is_none() {
                        self.elevations.insert((rack_id, face_str(face)), u.clone());
                    }
                    u
                }
            };
            if face == p.face {
                let (min, max) = units
                    .iter()
                    .fold((f64::MAX, f64::MIN), |(a, b), x| (a.min(x.id), b.max(x.id)));
                if units.is_empty() {
                    return Ok(Some(format!("rack {} has no units", p.rack_name)));
                }
                if mine.lo < min || mine.hi - 0.5 > max {
                    return Ok(Some(format!(
                        "{range} is outside rack {} (units {}-{})",
                        p.rack_name,
                        units_str(min),
                        units_str(max)
                    )));
                }
            }
            for x in units
                .iter()
                .filter(|x| x.occupied && x.id >= mine.lo && x.id < mine.hi)
            {
                let who = x.device.as_ref().map_or_else(
                    || "a device".to_owned(),
                    |r| format!("{} (id {})", r.label(), r.id),
                );
                if !holders.contains(&who) {
                    holders.push(who);
                }
            }
        }
        if holders.is_empty() {
            Ok(None)
        } else {
            Ok(Some(format!(
                "{range} of rack {} is occupied by {}",
                p.rack_name,
                holders.join(", ")
            )))
        }
    }

    // ---------------------------------------------------------------- MACs

    async fn sync_macs(
        &mut self,
        d: &DesiredDevice,
        serial: &str,
        device_id: Option<u64>,
        mut ifaces: Vec<NbInterface>,
    ) -> Result<(), Fail> {
        let mut seen_macs = HashSet::new();
        let mut primary_done = HashSet::new();
        for mac in &d.macs {
            let Some(mkey) = mac_key(&mac.address) else {
                self.exception(
                    &d.key,
                    "mac_invalid",
                    format!("{:?} is not a MAC address; skipped", mac.address),
                );
                continue;
            };
            let iname = mac.interface_name.trim();
            if iname.is_empty() || !seen_macs.insert(mkey) {
                continue;
            }
            // The first MAC listed for an interface is its primary one.
            let want_primary = primary_done.insert(iname.to_owned());
            match self
                .sync_mac(d, serial, device_id, &mut ifaces, mac, iname, want_primary)
                .await
            {
                Ok(()) => {}
                Err(e @ Fail::Fatal(_)) => return Err(e),
                Err(e) => self.fail(&d.key, e.reason()),
            }
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    async fn sync_mac(
        &mut self,
        d: &DesiredDevice,
        serial: &str,
        device_id: Option<u64>,
        ifaces: &mut Vec<NbInterface>,
        mac: &DesiredMac,
        iname: &str,
        want_primary: bool,
    ) -> Result<(), Fail> {
        let addr = mac.address.trim().to_lowercase();
        let idx = ifaces.iter().position(|i| i.name == iname);
        let plan = plan_mac(idx.map(|i| &ifaces[i]), &addr, want_primary);
        let iface_target = format!("interface {iname} of device serial {serial}");

        // 0. Where NetBox already has this MAC (checked before anything is created for it).
        let free: Option<u64> = if plan.existing_mac.is_some() {
            None
        } else {
            match self.mac_free(d, &addr, &iface_target).await? {
                None => return Ok(()),
                Some(adopt) => adopt,
            }
        };

        // 1. The interface.
        let iface_id: Option<u64> = if plan.create_interface {
            let fields = interface_fields(iname, mac.management);
            match (self.dry_run, device_id) {
                (false, Some(dev)) => {
                    let body = json!({ "device": dev, "name": iname, "type": INTERFACE_TYPE, "mgmt_only": mac.management });
                    let intent = interface_intent(&d.key, dev, iname, &iface_target, mac.management);
                    let created: NbInterface = self
                        .write_intended(Method::POST, "api/dcim/interfaces/", &body, intent)
                        .await?;
                    let id = created.id;
                    ifaces.push(NbInterface {
                        mac_addresses: Some(Vec::new()),
                        primary_mac_address: None,
                        ..created
                    });
                    Some(id)
                }
                _ => {
                    self.change(&d.key, "interface", "create", iface_target.clone(), fields);
                    None
                }
            }
        } else {
            idx.map(|i| ifaces[i].id)
        };

        // 2. The MAC object on it.
        let mac_target = format!("MAC {addr} on {iface_target}");
        let assigned_field = |old: Option<String>| FieldChange {
            field: "assigned_object".to_owned(),
            old,
            new: format!("dcim.interface {iname}"),
        };
        let mac_id: Option<u64> = if let Some(id) = plan.existing_mac {
            Some(id)
        } else {
            match (self.dry_run, iface_id, free) {
                (false, Some(iid), Some(id)) => {
                    let body = json!({ "assigned_object_type": "dcim.interface", "assigned_object_id": iid });
                    let intent = mac_intent(&d.key, &addr, iname, iid, &mac_target, true);
                    let _: NbId = self
                        .write_intended(
                            Method::PATCH,
                            &format!("api/dcim/mac-addresses/{id}/"),
                            &body,
                            intent,
                        )
                        .await?;
                    Some(id)
                }
                (false, Some(iid), None) => {
                    let body = json!({ "mac_address": addr, "assigned_object_type": "dcim.interface", "assigned_object_id": iid });
                    let intent = mac_intent(&d.key, &addr, iname, iid, &mac_target, false);
                    let m: NbId = self
                        .write_intended(Method::POST, "api/dcim/mac-addresses/", &body, intent)
                        .await?;
                    Some(m.id)
                }
                _ => {
                    let (action, fields) = match free {
                        Some(_) => ("update", vec![assigned_field(None)]),
                        None => (
                            "create",
                            vec![
                                FieldChange {
                                    field: "mac_address".to_owned(),
                                    old: None,
                                    new: addr.clone(),
                                },
                                assigned_field(None),
                            ],
                        ),
                    };
                    self.change(&d.key, "mac_address", action, mac_target.clone(), fields);
                    None
                }
            }
        };

        // 3. The interface's primary MAC.
        if plan.set_primary {
            let old = iface_id
                .and_then(|iid| ifaces.iter().find(|i| i.id == iid))
                .and_then(|i| i.primary_mac_address.as_ref())
                .map(|m| m.mac_address.to_lowercase());
            let fields = vec![FieldChange {
                field: "primary_mac_address".to_owned(),
                old,
                new: addr.clone(),
            }];
            match (self.dry_run, iface_id, mac_id) {
                (false, Some(iid), Some(mid)) => {
                    let old = fields.into_iter().next().and_then(|f| f.old);
                    let intent = primary_intent(&d.key, iid, mid, &addr, old, &iface_target);
                    let _: NbId = self
                        .write_intended(
                            Method::PATCH,
                            &format!("api/dcim/interfaces/{iid}/"),
                            &json!({ "primary_mac_address": mid }),
                            intent,
                        )
                        .await?;
                    if let Some(i) = ifaces.iter_mut().find(|i| i.id == iid) {
                        i.primary_mac_address = Some(NbMacBrief {
                            id: mid,
                            mac_address: addr.clone(),
                        });
                    }
                }
                (false, _, _) => {
                    return Err(Fail::Other(format!(
                        "{iface_target}: interface or MAC unresolved after creation"
                    )));
                }
                (true, _, _) => self.change(&d.key, "interface", "update", iface_target, fields),
            }
        }
        if let (Some(iid), Some(mid)) = (iface_id, mac_id)
            && let Some(i) = ifaces.iter_mut().find(|i| i.id == iid)
        {
            let list = i.mac_addresses.get_or_insert_with(Vec::new);
            if !list.iter().any(|m| m.id == mid) {
                list.push(NbMacBrief {
                    id: mid,
                    mac_address: addr,
                });
            }
        }
        Ok(())
    }
}

// ------------------------------------------------------------------------------------------------
// Bulk writes, deferred creates, the durable journal

/// Whether a failed bulk request should be split to find its bad items: NetBox refused the
/// content (4xx other than 429) or hit an integrity error on one row (500). Overload (429, 502,
/// 503, 504 after retries) fails the whole range instead of multiplying requests.
fn item_error(e: &Fail) -> bool {
    matches!(e, Fail::Status { status, .. } if (400..500).contains(status) && *status != 429 || *status == 500)
}

/// Marker line closing a journal entry's text; `q=` finds it again.
fn marker_line(marker: &str) -> String {
    format!("\n\ngroundtruth change id: {marker}")
}

/// How a later pass tells whether a write reached NetBox: some object listed at `path` with
/// `query` has the fields of `want` ([`has_fields`]).
#[derive(Debug, Clone, PartialEq, serde::Serialize, Deserialize)]
struct Check {
    path: String,
    query: Vec<(String, String)>,
    want: Value,
}

impl Check {
    fn new(path: &str, query: &[(&str, String)], want: Value) -> Self {
        Self {
            path: path.to_owned(),
            query: query.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect(),
            want,
        }
    }
}

/// A change whose request is about to go out (or is out), and how to check that it landed.
#[derive(Debug, Clone, PartialEq, serde::Serialize, Deserialize)]
struct Intent {
    change: Change,
    check: Check,
}

/// `PendingJournal::in_flight`: the entry's applied changes and evidence, and the changes in
/// flight; recovery rebuilds the entry's text from the applied ones and those that landed.
#[derive(Debug, Clone, PartialEq, serde::Serialize, Deserialize)]
struct InFlight {
    changes: Vec<Change>,
    evidence: Vec<String>,
    intents: Vec<Intent>,
    /// When the entry was recorded, just before its request went out (Unix seconds). NetBox
    /// finishes a request whose client died, so until [`Run::settle_time`] after this a check
    /// that finds nothing is not final.
    #[serde(default)]
    sent_at: u64,
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Whether NetBox's object `have` carries every field of `want` as a write would have left it:
/// an id written is NetBox's nested `{id, …}` object, a choice written is `{value, label}`, a
/// number may come back as a decimal string (`"12.0"`), objects compare field by field
/// (`custom_fields`), `null` matches `null` or an empty string.
fn has_fields(want: &Value, have: &Value) -> bool {
    match (want, have) {
        (Value::Object(w), Value::Object(h)) => w
            .iter()
            .all(|(k, v)| has_fields(v, h.get(k).unwrap_or(&Value::Null))),
        (Value::Object(_), _) => false,
        (Value::Null, h) => h.is_null() || h.as_str() == Some(""),
        (w, Value::Object(h)) => h
            .get("id")
            .or_else(|| h.get("value"))
            .is_some_and(|x| has_fields(w, x)),
        (Value::Number(a), Value::Number(b)) => a
            .as_f64()
            .zip(b.as_f64())
            .is_some_and(|(a, b)| (a - b).abs() < 1e-9),
        (Value::Number(a), Value::String(b)) => a
            .as_f64()
            .zip(b.trim().parse::<f64>().ok())
            .is_some_and(|(a, b)| (a - b).abs() < 1e-9),
        (w, h) => w == h,
    }
}

/// A write that may have reached NetBox although its answer says otherwise (a timeout, a 502,
/// 503 or 504 after retries, an unreadable answer): checked against NetBox before the journal is
/// written. A 4xx or NetBox's own 500 is a refusal (it applies a request in one transaction and
/// rolls it back on an error): nothing landed.
fn maybe_landed(e: &Fail) -> bool {
    !matches!(e, Fail::Status { status, .. } if (400..=500).contains(status))
}

impl Run<'_> {
    /// Remembers the NetBox id of a device this run matched or created (for its journal).
    fn note_device(&mut self, key: &str, id: u64, evidence: Vec<String>) {
        self.device_idx.insert(key.to_owned(), self.device_ids.len());
        self.device_ids.push((key.to_owned(), id, evidence));
    }

    /// Marker of this run's journal entry for device `key`.
    fn marker(&self, key: &str) -> String {
        let h = std::hash::BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default()
            .hash_one(key);
        format!("gt-{}-{h:016x}", self.run_id)
    }

    /// The journal text of everything this run changed on device `key` (plus `extra` not yet
    /// applied), ending with the marker line.
    fn journal_for(&self, key: &str, evidence: &[String], extra: Option<&Change>) -> String {
        let mut changes = self.applied(key);
        changes.extend(extra.cloned());
        let text = journal_text(&changes, evidence);
        format!("{text}{}", marker_line(&self.marker(key)))
    }

    /// The changes applied to device `key` by this run, in order.
    fn applied(&self, key: &str) -> Vec<Change> {
        self.changes_of
            .get(key)
            .into_iter()
            .flatten()
            .filter_map(|&i| self.report.changes.get(i).cloned())
            .collect()
    }

    /// Puts the journal entries of devices changed since the last call into the change log:
    /// the changes applied, and those in flight with their checks.
    async fn wal_sync(&mut self) {
        let dirty = std::mem::take(&mut self.dirty);
        let Some(log) = self.log else { return };
        if !self.cfg().journal {
            return;
        }
        let mut entries = Vec::new();
        let mut later = Vec::new();
        let mut empty = Vec::new();
        for key in dirty {
            let Some(&(ref _k, id, ref evidence)) =
                self.device_idx.get(&key).and_then(|&i| self.device_ids.get(i))
            else {
                // Not in NetBox yet (its create is pre-recorded): keep it for later.
                later.push(key);
                continue;
            };
            let intents: Vec<Intent> = self
                .inflight
                .values()
                .filter(|i| i.change.device_key == key)
                .cloned()
                .collect();
            let changes = self.applied(&key);
            if changes.is_empty() && intents.is_empty() {
                // Only a change that did not land: nothing to journal.
                empty.push(self.marker(&key));
                continue;
            }
            let in_flight = (!intents.is_empty())
                .then(|| {
                    serde_json::to_string(&InFlight {
                        changes,
                        evidence: evidence.clone(),
                        intents,
                        sent_at: unix_now(),
                    })
                    .ok()
                })
                .flatten();
            entries.push(PendingJournal {
                marker: self.marker(&key),
                device_key: key.clone(),
                serial: String::new(),
                object_id: Some(id),
                comments: self.journal_for(&key, evidence, None),
                in_flight,
            });
        }
        self.dirty.extend(later);
        let (taken, mut remove) = self.take_over(&[]);
        entries.extend(taken);
        remove.extend(empty);
        if (!entries.is_empty() || !remove.is_empty())
            && let Err(e) = log.record(entries, remove).await
        {
            warn!(error = %e, "Cannot record NetBox journal entries in the store; a crash now would lose them.");
        }
    }

    /// Deferred entries of an interrupted pass whose unseen change this pass is making itself
    /// (applied, in flight, or a device create in `creating`): the change leaves them, so it is
    /// journaled once, in this pass's entry. Returns the entries to rewrite and the markers to
    /// remove, for the same change-log transaction that records this pass's intent, before its
    /// request goes out: a kill at any point leaves the change in exactly one entry (a later
    /// check cannot tell which pass made it). An entry with no unseen change left is final and
    /// joins [`Run::recovered`]; one with nothing landed, or whose device this pass creates, is
    /// removed.
    fn take_over(&mut self, creating: &[&str]) -> (Vec<PendingJournal>, Vec<String>) {
        if self.deferred.is_empty() {
            return (Vec::new(), Vec::new());
        }
        let mine = |run: &Self, key: &str, object: &str, action: &str, target: Option<&str>| {
            let same =
                |x: &Change| x.object == object && x.action == action && target.is_none_or(|t| x.target == t);
            run.applied(key).iter().any(same)
                || run
                    .inflight
                    .values()
                    .any(|i| i.change.device_key == key && same(&i.change))
        };
        let (mut keep, mut rewrite, mut remove) = (Vec::new(), Vec::new(), Vec::new());
        for mut p in std::mem::take(&mut self.deferred) {
            if p.object_id.is_none() {
                if creating.contains(&p.device_key.as_str())
                    || mine(self, &p.device_key, "device", "create", None)
                {
                    remove.push(p.marker);
                } else {
                    keep.push(p);
                }
                continue;
            }
            let Some(mut f) = p
                .in_flight
                .as_deref()
                .and_then(|j| serde_json::from_str::<InFlight>(j).ok())
            else {
                keep.push(p);
                continue;
            };
            let before = f.intents.len();
            f.intents.retain(|i| {
                let c = &i.change;
                !mine(self, &p.device_key, &c.object, &c.action, Some(&c.target))
            });
            if f.intents.len() == before {
                keep.push(p);
            } else if !f.intents.is_empty() {
                p.in_flight = serde_json::to_string(&f).ok();
                rewrite.push(p.clone());
                keep.push(p);
            } else if f.changes.is_empty() {
                remove.push(p.marker);
            } else {
                p.comments = format!(
                    "{}{}",
                    journal_text(&f.changes, &f.evidence),
                    marker_line(&p.marker)
                );
                p.in_flight = None;
                rewrite.push(p.clone());
                self.recovered.push(p);
            }
        }
        self.deferred = keep;
        (rewrite, remove)
    }

    /// Journal entries an interrupted pass left: found in NetBox (dropped from the log) or
    /// written by this run's journal flush. A create that never reached NetBox is dropped.
    /// Reads are batched: serials 50 per request, markers per pass (`q=` on the marker's pass
    /// prefix) and 50 devices per request.
    async fn recover_journal(&mut self) -> Result<(), Fail> {
        let Some(log) = self.log else { return Ok(()) };
        let pending = match log.pending().await {
            Ok(p) => p,
            Err(e) => {
                warn!(error = %e, "Cannot read pending NetBox journal entries from the store.");
                return Ok(());
            }
        };
        if pending.is_empty() {
            return Ok(());
        }
        // 1. Creates in flight: did NetBox make the device?
        let serials: Vec<String> = pending
            .iter()
            .filter(|p| p.object_id.is_none())
            .map(|p| p.serial.clone())
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        let mut made: HashMap<String, Vec<u64>> = HashMap::new();
        for chunk in serials.chunks(PREFETCH_CHUNK) {
            let q: Vec<(&str, &str)> = chunk.iter().map(|s| ("serial", s.as_str())).collect();
            let found: Vec<NbDevice> = self.api().list("api/dcim/devices/", &q).await?;
            for x in found {
                made.entry(serial_key(&x.serial)).or_default().push(x.id);
            }
        }
        let mut gone = Vec::new();
        let mut live: Vec<PendingJournal> = Vec::new();
        let now = unix_now();
        let settle = self.settle_time();
        let recent = |p: &PendingJournal| {
            p.in_flight
                .as_deref()
                .and_then(|j| serde_json::from_str::<InFlight>(j).ok())
                .is_some_and(|f| now < f.sent_at.saturating_add(settle))
        };
        for mut p in pending {
            if p.object_id.is_none() {
                match made.get(&p.serial).map(Vec::as_slice) {
                    Some([one]) => p.object_id = Some(*one),
                    _ if recent(&p) => {
                        debug!(device = %p.device_key, "Interrupted create not in NetBox yet; checked again by the next pass.");
                        self.deferred.push(p);
                        continue;
                    }
                    _ => {
                        debug!(device = %p.device_key, "Interrupted create never reached NetBox; its journal entry is dropped.");
                        gone.push(p.marker);
                        continue;
                    }
                }
            }
            live.push(p);
        }
        // 2. Changes in flight at the interruption: journal those NetBox has, drop the others
        //    (the next pass makes them again and journals them itself).
        let mut settled = Vec::new();
        for mut p in live {
            let Some(json) = p.in_flight.take() else {
                settled.push(p);
                continue;
            };
            let f: InFlight = match serde_json::from_str::<InFlight>(&json) {
                Ok(f) if f.intents.is_empty() => {
                    settled.push(p);
                    continue;
                }
                Ok(f) => f,
                Err(e) => {
                    warn!(device = %p.device_key, error = %e, "Unreadable in-flight NetBox changes in the store; journaling the applied ones only.");
                    settled.push(p);
                    continue;
                }
            };
            let mut changes = f.changes.clone();
            let mut unseen = Vec::new();
            for i in &f.intents {
                if self.check_landed(&i.check).await? {
                    changes.push(i.change.clone());
                } else {
                    debug!(device = %p.device_key, target = %i.change.target, "Interrupted NetBox write not in NetBox.");
                    unseen.push(i.clone());
                }
            }
            if !unseen.is_empty() && now < f.sent_at.saturating_add(settle) {
                // NetBox may still be executing it: the next pass looks again (the store keeps
                // the entry as it was; `deferred` holds what this pass saw, for `take_over`).
                p.in_flight = serde_json::to_string(&InFlight {
                    changes,
                    evidence: f.evidence,
                    intents: unseen,
                    sent_at: f.sent_at,
                })
                .ok();
                self.deferred.push(p);
                continue;
            }
            if changes.is_empty() {
                gone.push(p.marker);
                continue;
            }
            p.comments = format!(
                "{}{}",
                journal_text(&changes, &f.evidence),
                marker_line(&p.marker)
            );
            settled.push(p);
        }
        let live = settled;
        // 3. Entries whose write went through but whose removal from the log was lost.
        let mut by_pass: HashMap<String, Vec<PendingJournal>> = HashMap::new();
        for p in live {
            let prefix = p
                .marker
                .rsplit_once('-')
                .map_or(p.marker.as_str(), |(a, _)| a)
                .to_owned();
            by_pass.entry(prefix).or_default().push(p);
        }
        for (prefix, entries) in by_pass {
            for chunk in entries.chunks(PREFETCH_CHUNK) {
                let ids: Vec<String> = chunk
                    .iter()
                    .filter_map(|p| p.object_id)
                    .map(|i| i.to_string())
                    .collect();
                let mut q: Vec<(&str, &str)> = vec![("assigned_object_type", "dcim.device"), ("q", &prefix)];
                q.extend(ids.iter().map(|i| ("assigned_object_id", i.as_str())));
                let have: Vec<Value> = self.api().list("api/extras/journal-entries/", &q).await?;
                let texts: Vec<&str> = have
                    .iter()
                    .filter_map(|e| e.get("comments").and_then(Value::as_str))
                    .collect();
                for p in chunk {
                    let line = marker_line(&p.marker);
                    if texts.iter().any(|t| t.trim_end().ends_with(line.trim_start())) {
                        gone.push(p.marker.clone());
                    } else {
                        info!(device = %p.device_key, id = ?p.object_id, "Writing the journal entry of an interrupted NetBox sync.");
                        self.recovered.push(p.clone());
                    }
                }
            }
        }
        if !gone.is_empty()
            && let Err(e) = log.written(gone).await
        {
            warn!(error = %e, "Cannot update pending NetBox journal entries in the store.");
        }
        Ok(())
    }

    /// Sends `items` to a NetBox bulk endpoint, `chunk` per request, and returns one result per
    /// item. A request NetBox refuses for its content is split in halves until the bad items
    /// stand alone, so one bad object fails alone (NetBox applies a bulk request atomically).
    /// `intents` (one per item, or empty): each request's items are put in flight before it goes
    /// out and their changes join the report once applied (callers do not record them again).
    async fn bulk(
        &mut self,
        method: Method,
        path: &str,
        items: &[Value],
        chunk: usize,
        intents: Vec<Intent>,
    ) -> Result<Vec<Result<Value, Fail>>, Fail> {
        let n = items.len();
        let chunk = chunk.max(1);
        let mut intents: Vec<Option<Intent>> = intents.into_iter().map(Some).collect();
        let mut tokens: Vec<Option<u64>> = vec![None; n];
        let mut out: Vec<Option<Result<Value, Fail>>> = std::iter::repeat_with(|| None).take(n).collect();
        let mut todo: Vec<std::ops::Range<usize>> = (0..n)
            .step_by(chunk)
            .map(|s| s..(s + chunk).min(n))
            .rev()
            .collect();
        let what = format!("{method} {path}");
        while let Some(r) = todo.pop() {
            let body = Value::Array(items[r.clone()].to_vec());
            for i in r.clone() {
                if let Some(intent) = intents.get_mut(i).and_then(Option::take) {
                    tokens[i] = Some(self.intend(intent));
                }
            }
            self.wal_sync().await;
            self.fenced()?;
            self.report.writes += 1;
            let settle = |run: &mut Self, i: usize, e: Option<&Fail>| {
                if let Some(t) = tokens[i] {
                    match e {
                        None => run.landed(t),
                        Some(e) => run.failed(t, e),
                    }
                }
            };
            match self.api().write::<Value>(method.clone(), path, &body).await {
                Ok(Value::Array(got)) if got.len() == r.len() => {
                    for (i, v) in r.zip(got) {
                        settle(self, i, None);
                        out[i] = Some(Ok(v));
                    }
                }
                Ok(_) => {
                    for i in r {
                        let e = Fail::Other(format!("{what}: NetBox did not answer one object per item"));
                        settle(self, i, Some(&e));
                        out[i] = Some(Err(e));
                    }
                }
                Err(e @ Fail::Fatal(_)) => return Err(e),
                Err(e) if r.len() == 1 => {
                    settle(self, r.start, Some(&e));
                    out[r.start] = Some(Err(e));
                }
                Err(e) if item_error(&e) => {
                    debug!(request = %what, items = r.len(), error = %e.reason(), "NetBox refused a bulk request; splitting it.");
                    let mid = r.start + r.len() / 2;
                    todo.push(mid..r.end);
                    todo.push(r.start..mid);
                }
                Err(e) => {
                    let why = e.reason();
                    for i in r {
                        settle(self, i, Some(&e));
                        out[i] = Some(Err(Fail::Other(why.clone())));
                    }
                }
            }
        }
        Ok(out
            .into_iter()
            .map(|o| o.unwrap_or_else(|| Err(Fail::Other(format!("{what}: not sent")))))
            .collect())
    }

    /// Records the journal entries of `chunk`'s device creates before their request (no id yet;
    /// recovery finds the devices by serial).
    async fn pre_record(&mut self, chunk: &[PendingCreate]) {
        let Some(log) = self.log else { return };
        if !self.cfg().journal {
            return;
        }
        let sent = serde_json::to_string(&InFlight {
            changes: Vec::new(),
            evidence: Vec::new(),
            intents: Vec::new(),
            sent_at: unix_now(),
        })
        .ok();
        let mut entries: Vec<PendingJournal> = chunk
            .iter()
            .map(|c| {
                let planned = Change {
                    device_key: c.key.clone(),
                    object: "device".to_owned(),
                    action: "create".to_owned(),
                    target: c.target.clone(),
                    fields: c.fields.clone(),
                };
                PendingJournal {
                    marker: self.marker(&c.key),
                    device_key: c.key.clone(),
                    serial: c.serial.clone(),
                    object_id: None,
                    comments: self.journal_for(&c.key, &c.evidence, Some(&planned)),
                    in_flight: sent.clone(),
                }
            })
            .collect();
        let keys: Vec<&str> = chunk.iter().map(|c| c.key.as_str()).collect();
        let (taken, remove) = self.take_over(&keys);
        entries.extend(taken);
        if let Err(e) = log.record(entries, remove).await {
            warn!(error = %e, "Cannot record NetBox journal entries in the store; a crash now would lose them.");
        }
    }

    /// How long after its request went out a change NetBox does not show yet may still land: the
    /// longest timeout this client gives a request (a bulk one of [`BULK_CHUNK`] objects).
    fn settle_time(&self) -> u64 {
        self.api()
            .timeout
            .saturating_mul(u32::try_from(1 + BULK_CHUNK / 10).unwrap_or(u32::MAX))
            .as_secs()
    }

    /// Creates the deferred devices, then their interfaces, MAC objects and primary MACs, each
    /// kind in bulk requests. A device whose create failed gets nothing else; a failed
    /// interface or MAC fails that device only (retried by the next pass, which sees the device).
    async fn flush_creates(&mut self) -> Result<(), Fail> {
        let creates = std::mem::take(&mut self.creates);
        if creates.is_empty() {
            return Ok(());
        }
        // Pre-record, chunk by chunk just before its request: a pass killed after NetBox created
        // the devices but before their journal entries finds them by serial next time.
        let mut results = Vec::with_capacity(creates.len());
        for chunk in creates.chunks(CREATE_CHUNK) {
            self.pre_record(chunk).await;
            let bodies: Vec<Value> = chunk.iter().map(|c| c.body.clone()).collect();
            results.extend(
                self.bulk(
                    Method::POST,
                    "api/dcim/devices/",
                    &bodies,
                    CREATE_CHUNK,
                    Vec::new(),
                )
                .await?,
            );
        }
        let mut made: Vec<(usize, u64)> = Vec::new();
        for (i, r) in results.into_iter().enumerate() {
            let c = &creates[i];
            let mut fields = c.fields.clone();
            let r = match r {
                Err(e) if c.has_tag && e.is_bad_request_about("asset_tag") => {
                    self.exception(
                        &c.key,
                        "asset_tag_in_use",
                        format!("{}: NetBox refused asset tag: {}", c.target, e.reason()),
                    );
                    fields.retain(|f| f.field != "asset_tag");
                    let mut body = c.body.clone();
                    if let Some(m) = body.as_object_mut() {
                        m.remove("asset_tag");
                    }
                    self.post::<Value>("api/dcim/devices/", &body).await
                }
                other => other,
            };
            match r.map(|v| v.get("id").and_then(Value::as_u64)) {
                Ok(Some(id)) => {
                    info!(device = %c.key, serial = %c.serial, id, "Created device in NetBox.");
                    self.change(&c.key, "device", "create", c.target.clone(), fields);
                    self.note_device(&c.key, id, c.evidence.clone());
                    made.push((i, id));
                }
                Ok(None) => self.fail(&c.key, format!("{}: NetBox answered without an id", c.target)),
                Err(e @ Fail::Fatal(_)) => return Err(e),
                Err(e) => self.fail(&c.key, format!("{}: {}", c.target, e.reason())),
            }
        }
        self.wal_sync().await;

        // Interfaces, one per name.
        let mut items = Vec::new();
        let mut intents = Vec::new();
        let mut meta: Vec<(usize, String)> = Vec::new();
        for &(i, id) in &made {
            let mut seen = HashSet::new();
            let c = &creates[i];
            for m in &c.macs {
                if seen.insert(m.iname.clone()) {
                    items.push(json!({ "device": id, "name": m.iname, "type": INTERFACE_TYPE, "mgmt_only": m.management }));
                    let target = format!("interface {} of device serial {}", m.iname, c.serial);
                    intents.push(interface_intent(&c.key, id, &m.iname, &target, m.management));
                    meta.push((i, m.iname.clone()));
                }
            }
        }
        let results = self
            .bulk(Method::POST, "api/dcim/interfaces/", &items, BULK_CHUNK, intents)
            .await?;
        let mut iface_ids: HashMap<(usize, String), u64> = HashMap::new();
        for ((i, iname), r) in meta.into_iter().zip(results) {
            let c = &creates[i];
            let target = format!("interface {iname} of device serial {}", c.serial);
            match r.map(|v| v.get("id").and_then(Value::as_u64)) {
                Ok(Some(id)) => {
                    iface_ids.insert((i, iname), id);
                }
                Ok(None) => self.fail(&c.key, format!("{target}: NetBox answered without an id")),
                Err(e @ Fail::Fatal(_)) => return Err(e),
                Err(e) => self.fail(&c.key, format!("{target}: {}", e.reason())),
            }
        }
        self.wal_sync().await;

        // MAC objects: new ones POSTed, unassigned existing ones PATCHed onto the interface.
        let (mut new_items, mut new_meta, mut adopt_items, mut adopt_meta) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let (mut new_intents, mut adopt_intents) = (Vec::new(), Vec::new());
        let mac_target = |c: &PendingCreate, m: &NewMac| {
            format!(
                "MAC {} on interface {} of device serial {}",
                m.addr, m.iname, c.serial
            )
        };
        for &(i, _) in &made {
            let c = &creates[i];
            for (j, m) in c.macs.iter().enumerate() {
                let Some(&iid) = iface_ids.get(&(i, m.iname.clone())) else {
                    continue;
                };
                let intent = mac_intent(
                    &c.key,
                    &m.addr,
                    &m.iname,
                    iid,
                    &mac_target(c, m),
                    m.adopt.is_some(),
                );
                match m.adopt {
                    Some(mid) => {
                        adopt_items.push(json!({ "id": mid, "assigned_object_type": "dcim.interface", "assigned_object_id": iid }));
                        adopt_intents.push(intent);
                        adopt_meta.push((i, j, iid));
                    }
                    None => {
                        new_items.push(json!({ "mac_address": m.addr, "assigned_object_type": "dcim.interface", "assigned_object_id": iid }));
                        new_intents.push(intent);
                        new_meta.push((i, j, iid));
                    }
                }
            }
        }
        let new_results = self
            .bulk(
                Method::POST,
                "api/dcim/mac-addresses/",
                &new_items,
                BULK_CHUNK,
                new_intents,
            )
            .await?;
        let adopt_results = self
            .bulk(
                Method::PATCH,
                "api/dcim/mac-addresses/",
                &adopt_items,
                BULK_CHUNK,
                adopt_intents,
            )
            .await?;
        let mut primaries = Vec::new();
        let mut primary_intents = Vec::new();
        let mut primary_meta = Vec::new();
        for (meta, results) in [(new_meta, new_results), (adopt_meta, adopt_results)] {
            for ((i, j, iid), r) in meta.into_iter().zip(results) {
                let c = &creates[i];
                let m = &c.macs[j];
                let target = mac_target(c, m);
                match r.map(|v| v.get("id").and_then(Value::as_u64)) {
                    Ok(Some(mid)) => {
                        if m.primary {
                            let itarget = format!("interface {} of device serial {}", m.iname, c.serial);
                            primary_intents.push(primary_intent(&c.key, iid, mid, &m.addr, None, &itarget));
                            primaries.push(json!({ "id": iid, "primary_mac_address": mid }));
                            primary_meta.push((i, j));
                        }
                    }
                    Ok(None) => self.fail(&c.key, format!("{target}: NetBox answered without an id")),
                    Err(e @ Fail::Fatal(_)) => return Err(e),
                    Err(e) => self.fail(&c.key, format!("{target}: {}", e.reason())),
                }
            }
        }
        self.wal_sync().await;
        let results = self
            .bulk(
                Method::PATCH,
                "api/dcim/interfaces/",
                &primaries,
                BULK_CHUNK,
                primary_intents,
            )
            .await?;
        for ((i, j), r) in primary_meta.into_iter().zip(results) {
            let c = &creates[i];
            let m = &c.macs[j];
            let target = format!("interface {} of device serial {}", m.iname, c.serial);
            match r {
                Ok(_) => {}
                Err(e @ Fail::Fatal(_)) => return Err(e),
                Err(e) => self.fail(&c.key, format!("{target}: {}", e.reason())),
            }
        }
        self.wal_sync().await;
        Ok(())
    }

    /// What to create for the MACs of a device being created: exceptions for MACs NetBox (or
    /// this run) has on another object, adoption of unassigned MAC objects.
    async fn plan_new_macs(&mut self, d: &DesiredDevice) -> Result<Vec<NewMac>, Fail> {
        let mut out: Vec<NewMac> = Vec::new();
        let mut seen = HashSet::new();
        for mac in &d.macs {
            let Some(mkey) = mac_key(&mac.address) else {
                self.exception(
                    &d.key,
                    "mac_invalid",
                    format!("{:?} is not a MAC address; skipped", mac.address),
                );
                continue;
            };
            let iname = mac.interface_name.trim();
            if iname.is_empty() || !seen.insert(mkey.clone()) {
                continue;
            }
            let addr = mac.address.trim().to_lowercase();
            let Some(adopt) = self
                .mac_free(d, &addr, &format!("new device serial {}", d.serial))
                .await?
            else {
                continue;
            };
            let primary = !out.iter().any(|m| m.iname == iname);
            out.push(NewMac {
                addr,
                iname: iname.to_owned(),
                management: mac.management,
                primary,
                adopt,
            });
        }
        Ok(out)
    }

    /// `Some(adopt)` when MAC `addr` may be given to device `d` (`adopt` = an unassigned MAC
    /// object to reuse); `None` after recording a `mac_assigned_elsewhere` exception. Claims the
    /// MAC for `d` in this run.
    async fn mac_free(
        &mut self,
        d: &DesiredDevice,
        addr: &str,
        to: &str,
    ) -> Result<Option<Option<u64>>, Fail> {
        let mkey = mac_key(addr).unwrap_or_default();
        if let Some(other) = self.run_macs.get(&mkey)
            && other != &d.key
        {
            let other = other.clone();
            self.exception(
                &d.key,
                "mac_assigned_elsewhere",
                format!("MAC {addr} is given to device {other} in this sync; not also given to {to}"),
            );
            return Ok(None);
        }
        let known: Vec<NbMac> = match self.by_mac.get(&mkey) {
            Some(v) => v.clone(),
            None => {
                self.api()
                    .list("api/dcim/mac-addresses/", &[("mac_address", addr)])
                    .await?
            }
        };
        let known: Vec<NbMac> = known
            .into_iter()
            .filter(|m| mac_eq(&m.mac_address, addr))
            .collect();
        // Assigned to some other object: a conflict for an operator, never moved silently.
        if let Some(elsewhere) = known.iter().find(|m| m.assigned_object_id.is_some()) {
            let on = elsewhere.assigned_object.as_ref().map_or_else(
                || {
                    format!(
                        "{} {}",
                        elsewhere.assigned_object_type.as_deref().unwrap_or("object"),
                        elsewhere.assigned_object_id.unwrap_or(0)
                    )
                },
                describe_assigned,
            );
            self.exception(
                &d.key,
                "mac_assigned_elsewhere",
                format!(
                    "MAC {addr} is assigned to {on} in NetBox (MAC id {}); not moved to {to}",
                    elsewhere.id
                ),
            );
            return Ok(None);
        }
        self.run_macs.insert(mkey, d.key.clone());
        Ok(Some(known.first().map(|m| m.id)))
    }
}

/// "interface eth0 of device web01 (id 7)" from a MAC's `assigned_object`.
fn describe_assigned(v: &Value) -> String {
    let name = v.get("name").and_then(Value::as_str).unwrap_or("?");
    let dev = v
        .get("device")
        .or_else(|| v.get("virtual_machine"))
        .map(|d| {
            let n = d
                .get("name")
                .and_then(Value::as_str)
                .or_else(|| d.get("display").and_then(Value::as_str))
                .unwrap_or("?");
            let id = d.get("id").and_then(Value::as_u64).unwrap_or(0);
            format!(" of {n} (id {id})")
        })
        .unwrap_or_default();
    format!("interface {name}{dev}")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn nb_device(v: Value) -> NbDevice {
        serde_json::from_value(v).unwrap()
    }

    fn placement(site: u64, rack: u64, pos: Option<u32>, face: Face) -> WantPlacement {
        WantPlacement {
            site_id: Some(site),
            site_name: "DC1".into(),
            rack_id: Some(rack),
            rack_name: "R07".into(),
            rack_location: None,
            position: pos,
            face,
        }
    }

    fn placed_device() -> NbDevice {
        nb_device(json!({
            "id": 5, "name": "web01", "serial": "ABC123", "asset_tag": null,
            "site": {"id": 1, "name": "DC1", "slug": "dc1"},
            "rack": {"id": 2, "name": "R07"}, "location": null,
            "position": 12.0, "face": {"value": "front", "label": "Front"},
            "device_type": {"id": 3, "model": "R640", "display": "R640"}
        }))
    }

    #[test]
    fn slugify_lowercases_and_collapses_non_alphanumerics() {
        assert_eq!(slugify("GT-Test-1a2B"), "gt-test-1a2b");
        assert_eq!(slugify("  DC 1 / Room H1  "), "dc-1-room-h1");
        assert_eq!(
            slugify("Hewlett Packard Enterprise"),
            "hewlett-packard-enterprise"
        );
        assert_eq!(slugify("PowerEdge R640 (2U)"), "poweredge-r640-2u");
        assert_eq!(slugify("--x__y--"), "x-y");
        assert_eq!(slugify("Zürich"), "z-rich");
        assert_eq!(slugify("###"), "");
        assert_eq!(slugify(&"a".repeat(150)).len(), SLUG_MAX);
        assert!(!slugify(&format!("{}-b", "a".repeat(99))).ends_with('-'));
    }

    #[test]
    fn auth_scheme_is_bearer_for_v2_tokens_and_token_otherwise() {
        assert_eq!(auth_scheme("nbt_abcdefghijkl.0123456789"), "Bearer");
        assert_eq!(auth_scheme("0123456789abcdef0123456789abcdef01234567"), "Token");
        let h = auth_header(" nbt_key.secret ").unwrap();
        assert_eq!(h.to_str().unwrap(), "Bearer nbt_key.secret");
        assert!(h.is_sensitive());
        assert_eq!(auth_header("abc").unwrap().to_str().unwrap(), "Token abc");
        assert!(auth_header("").is_none());
        assert!(auth_header("bad\ntoken").is_none());
    }

    #[test]
    fn mac_comparison_ignores_case_and_notation() {
        assert!(mac_eq("AA:BB:CC:DD:EE:FF", "aa:bb:cc:dd:ee:ff"));
        assert!(mac_eq("a4-bf-01-28-90-aa", "A4BF.0128.90AA"));
        assert!(mac_eq("a4bf012890aa", "a4:bf:01:28:90:aa"));
        assert!(!mac_eq("a4:bf:01:28:90:ab", "a4:bf:01:28:90:aa"));
        assert!(!mac_eq("not a mac", "not a mac"));
        assert_eq!(mac_key("A4:BF:01:28:90:AA").as_deref(), Some("a4bf012890aa"));
        assert_eq!(mac_key("a4:bf:01:28:90"), None);
    }

    #[test]
    fn config_and_client_debug_never_show_the_token() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let cfg = NetBoxConfig::new(
            Url::parse("http://127.0.0.1:1/").unwrap(),
            "nbt_secretkey.supersecretvalue",
        );
        let s = format!("{cfg:?}");
        assert!(s.contains("***"), "{s}");
        assert!(!s.contains("supersecret"), "{s}");
        let nb = NetBox::new(cfg).unwrap();
        let s = format!("{nb:?}");
        assert!(s.contains("***") && !s.contains("supersecret"), "{s}");
        assert!(!format!("{:?}", nb.api.auth).contains("supersecret"));
    }

    /// A change an interrupted pass left unseen (deferred) that this pass makes itself moves to
    /// this pass's entry in the same change-log write that records the intent, before the request:
    /// killed right after, the next pass finds the change in one entry only (CI once saw a MAC
    /// create journaled twice when the move waited for the journal flush).
    #[tokio::test]
    async fn a_change_taken_over_from_an_interrupted_pass_moves_atomically_before_its_request() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::Store::open(&dir.path().join("s.db")).await.unwrap();
        let nb = NetBox::new(NetBoxConfig::new(
            Url::parse("http://127.0.0.1:1/").unwrap(),
            "nbt_key.secret",
        ))
        .unwrap();
        let mut run = Run::new(&nb, false, Some(&store));
        run.note_device("k1", 7, vec!["snmp".into()]);
        let mac = |run: &Run| mac_intent("k1", "02:00:00:00:00:01", "eth0", 11, &run.marker("k1"), false);
        let entry = |marker: &str, f: &InFlight| PendingJournal {
            marker: marker.into(),
            device_key: "k1".into(),
            serial: "S1".into(),
            object_id: Some(7),
            comments: String::new(),
            in_flight: Some(serde_json::to_string(f).unwrap()),
        };
        let create_iface = interface_intent("k1", 7, "eth0", "x", false).change;
        // Two interrupted passes: one had only the MAC create in flight, the other an applied
        // interface create as well. A third, unrelated entry stays as it is.
        let only = InFlight {
            changes: vec![],
            evidence: vec![],
            intents: vec![mac(&run)],
            sent_at: unix_now(),
        };
        let both = InFlight {
            changes: vec![create_iface],
            ..only.clone()
        };
        let other = InFlight {
            intents: vec![mac_intent("k2", "02:00:00:00:00:02", "eth0", 12, "y", false)],
            ..only.clone()
        };
        let mut k2 = entry("gt-old-3", &other);
        k2.device_key = "k2".into();
        run.deferred = vec![entry("gt-old-1", &only), entry("gt-old-2", &both), k2.clone()];
        store.journal_record(&run.deferred, &[], None).await.unwrap();

        // This pass intends the same MAC create; the change log is written before the request.
        run.intend(mac(&run));
        run.wal_sync().await;
        let got = store.journal_pending().await.unwrap();
        let find = |m: &str| got.iter().find(|p| p.marker == m);
        assert!(find("gt-old-1").is_none(), "nothing of it landed: removed");
        let old2 = find("gt-old-2").unwrap();
        assert!(old2.in_flight.is_none(), "{old2:?}");
        assert!(old2.comments.contains("create interface"), "{}", old2.comments);
        assert!(!old2.comments.contains("02:00:00:00:00:01"), "{}", old2.comments);
        assert_eq!(find("gt-old-3"), Some(&k2));
        let mine = find(&run.marker("k1")).unwrap();
        let f: InFlight = serde_json::from_str(mine.in_flight.as_deref().unwrap()).unwrap();
        assert_eq!(f.intents.len(), 1);
        assert_eq!(f.intents[0].change.target, run.marker("k1"));
        // The finished entry is written by this pass's flush; the unrelated one is still deferred.
        assert_eq!(run.recovered.len(), 1);
        assert_eq!(run.deferred, vec![k2]);
    }

    #[test]
    fn new_rejects_an_empty_token_without_echoing_it() {
        let cfg = NetBoxConfig::new(Url::parse("http://127.0.0.1:1/").unwrap(), "  ");
        let e = NetBox::new(cfg).unwrap_err();
        assert!(matches!(e, CmdbError::Malformed { .. }), "{e}");
    }

    #[test]
    fn diff_is_empty_when_netbox_already_matches() {
        let cur = placed_device();
        let d = diff_device(
            &cur,
            "ABC123",
            None,
            Some(&placement(1, 2, Some(12), Face::Front)),
        );
        assert!(d.fields.is_empty(), "{:?}", d.fields);
        assert!(d.patch.is_empty());
    }

    #[test]
    fn diff_moves_position_and_face_only() {
        let cur = placed_device();
        let d = diff_device(&cur, "ABC123", None, Some(&placement(1, 2, Some(14), Face::Rear)));
        assert_eq!(
            d.fields,
            vec![
                FieldChange {
                    field: "position".into(),
                    old: Some("12".into()),
                    new: "14".into()
                },
                FieldChange {
                    field: "face".into(),
                    old: Some("front".into()),
                    new: "rear".into()
                },
            ]
        );
        assert_eq!(Value::Object(d.patch), json!({"position": 14, "face": "rear"}));
    }

    #[test]
    fn diff_rack_move_follows_the_rack_location_and_clears_unknown_position() {
        let cur = placed_device();
        let mut p = placement(1, 9, None, Face::Front);
        p.rack_name = "R09".into();
        p.rack_location = Some(NbRef {
            id: 4,
            name: Some("Room H1".into()),
            display: None,
        });
        let d = diff_device(&cur, "ABC123", None, Some(&p));
        let names: Vec<&str> = d.fields.iter().map(|f| f.field.as_str()).collect();
        assert_eq!(names, ["rack", "location", "position"]);
        assert_eq!(
            Value::Object(d.patch),
            json!({"rack": 9, "location": 4, "position": null})
        );
        assert_eq!(d.fields[0].old.as_deref(), Some("R07"));
    }

    #[test]
    fn diff_writes_asset_tag_only_into_an_empty_one_and_normalises_serial() {
        let mut cur = placed_device();
        cur.serial = "abc123 ".into();
        let d = diff_device(&cur, "ABC123", Some("AT-1"), None);
        assert_eq!(
            Value::Object(d.patch),
            json!({"serial": "ABC123", "asset_tag": "AT-1"})
        );
        cur.serial = "ABC123".into();
        cur.asset_tag = Some("OPERATOR-TAG".into());
        let d = diff_device(&cur, "ABC123", Some("AT-1"), None);
        assert!(d.fields.is_empty(), "{:?}", d.fields);
    }

    fn power_device(w: Option<f64>, seen: Option<&str>) -> DesiredDevice {
        DesiredDevice {
            key: "k".into(),
            serial: "S1".into(),
            asset_tag: None,
            vendor: "Dell".into(),
            model: "R650".into(),
            part_number: None,
            hostname: None,
            location: None,
            macs: vec![],
            power_watts: w,
            last_seen: seen.map(str::to_owned),
            evidence: vec![],
        }
    }

    #[test]
    fn custom_fields_respect_deadbands_ownership_and_readiness() {
        let own = Ownership::default();
        let ready: HashSet<&'static str> = [CF_POWER, CF_LAST_SEEN].into_iter().collect();
        let cur = |p: Value, s: Value| {
            let mut m = Map::new();
            m.insert(CF_POWER.into(), p);
            m.insert(CF_LAST_SEEN.into(), s);
            m
        };
        // Empty in NetBox: both written.
        let d = power_device(Some(349.6), Some("2026-11-24T09:00:00.000Z"));
        let (f, p) = diff_custom_fields(Some(&cur(Value::Null, Value::Null)), &d, &own, &ready);
        assert_eq!(f.len(), 2);
        assert_eq!(p[CF_POWER], json!(350));
        // Within 5 % and within an hour: nothing.
        let c = cur(json!(340), json!("2026-11-24T08:30:00.000Z"));
        assert!(diff_custom_fields(Some(&c), &d, &own, &ready).1.is_empty());
        // Power moved 10 %, last seen 2 h: both.
        let c = cur(json!(318), json!("2026-11-24T07:00:00Z"));
        let (_, p) = diff_custom_fields(Some(&c), &d, &own, &ready);
        assert_eq!(p.len(), 2, "{p:?}");
        // Not owned, or the field does not exist in NetBox: nothing.
        let off = Ownership {
            power: false,
            last_seen: false,
            ..Ownership::default()
        };
        assert!(diff_custom_fields(None, &d, &off, &ready).1.is_empty());
        assert!(diff_custom_fields(None, &d, &own, &HashSet::new()).1.is_empty());
        // No measurement: nothing; a string decimal from NetBox is read.
        let none = power_device(None, None);
        assert!(diff_custom_fields(None, &none, &own, &ready).1.is_empty());
        let c = cur(json!("350"), Value::Null);
        let (f, _) = diff_custom_fields(Some(&c), &power_device(Some(351.0), None), &own, &ready);
        assert!(f.is_empty(), "{f:?}");
    }

    #[test]
    fn placeholder_serials_in_netbox_are_free_and_journal_names_the_evidence() {
        for (sn, free) in [
            ("", true),
            ("To Be Filled By O.E.M.", true),
            ("0000000", true),
            ("CZ1234", false),
        ] {
            let d = nb_device(json!({"id": 1, "serial": sn}));
            assert_eq!(serial_free(&d), free, "{sn}");
        }
        let c = Change {
            device_key: "k".into(),
            object: "device".into(),
            action: "update".into(),
            target: "device serial S1".into(),
            fields: vec![FieldChange {
                field: "rack".into(),
                old: Some("R01".into()),
                new: "R07".into(),
            }],
        };
        let t = journal_text(&[c], &["location from SITE_MAP".into()]);
        assert!(
            t.contains("rack: R01 → R07") && t.contains("* location from SITE_MAP"),
            "{t}"
        );
    }

    #[test]
    fn diff_never_touches_cmdb_owned_fields() {
        let cur = placed_device();
        let mut p = placement(7, 8, Some(3), Face::Front);
        p.site_name = "DC2".into();
        let d = diff_device(&cur, "NEW", Some("T"), Some(&p));
        for f in d.patch.keys() {
            assert!(
                [
                    "serial",
                    "asset_tag",
                    "site",
                    "rack",
                    "location",
                    "position",
                    "face"
                ]
                .contains(&f.as_str()),
                "wrote {f}"
            );
        }
        assert_eq!(d.patch["site"], json!(7));
    }

    #[test]
    fn diff_with_planned_site_shows_a_change() {
        let cur = placed_device();
        let mut p = placement(1, 2, Some(12), Face::Front);
        p.site_id = None;
        p.rack_id = None;
        let d = diff_device(&cur, "ABC123", None, Some(&p));
        let names: Vec<&str> = d.fields.iter().map(|f| f.field.as_str()).collect();
        assert_eq!(names, ["site", "rack"]);
    }

    #[test]
    fn device_parses_netbox_shapes_including_string_decimals_and_null_face() {
        let d = nb_device(json!({"id": 1, "serial": "", "position": "12.5", "face": null, "rack": null}));
        assert_eq!(d.position, Some(12.5));
        assert_eq!(d.face(), None);
        let d = nb_device(json!({"id": 1}));
        assert_eq!(d.position, None);
        assert_eq!(units_str(12.0), "12");
        assert_eq!(units_str(12.5), "12.5");
    }

    #[test]
    fn mac_plan_covers_new_interface_existing_mac_and_primary() {
        let iface: NbInterface = serde_json::from_value(json!({
            "id": 10, "name": "eth0",
            "primary_mac_address": null,
            "mac_addresses": [{"id": 20, "mac_address": "AA:BB:CC:DD:EE:FF"}]
        }))
        .unwrap();
        assert_eq!(
            plan_mac(None, "aa:bb:cc:dd:ee:ff", true),
            MacPlan {
                create_interface: true,
                existing_mac: None,
                set_primary: true
            }
        );
        assert_eq!(
            plan_mac(Some(&iface), "aa:bb:cc:dd:ee:ff", true),
            MacPlan {
                create_interface: false,
                existing_mac: Some(20),
                set_primary: true
            }
        );
        let mut done = iface.clone();
        done.primary_mac_address = Some(NbMacBrief {
            id: 20,
            mac_address: "AA:BB:CC:DD:EE:FF".into(),
        });
        assert_eq!(
            plan_mac(Some(&done), "aa:bb:cc:dd:ee:ff", true),
            MacPlan {
                create_interface: false,
                existing_mac: Some(20),
                set_primary: false
            }
        );
        assert_eq!(
            plan_mac(Some(&done), "11:22:33:44:55:66", false),
            MacPlan {
                create_interface: false,
                existing_mac: None,
                set_primary: false
            }
        );
    }

    #[test]
    fn claims_collide_on_overlap_and_shared_face_or_full_depth() {
        let c = |lo: f64, hi: f64, face, full_depth| Claim {
            lo,
            hi,
            face,
            full_depth,
            key: "k".into(),
        };
        assert!(c(12.0, 13.0, Face::Front, false).collides(&c(12.0, 14.0, Face::Front, false)));
        assert!(!c(12.0, 13.0, Face::Front, false).collides(&c(13.0, 14.0, Face::Front, false)));
        assert!(!c(12.0, 13.0, Face::Front, false).collides(&c(12.0, 13.0, Face::Rear, false)));
        assert!(c(12.0, 13.0, Face::Front, true).collides(&c(12.0, 13.0, Face::Rear, false)));
    }

    #[test]
    fn landed_checks_read_netbox_shapes_and_only_refusals_are_certain() {
        let device = json!({
            "id": 7, "site": {"id": 3, "name": "DC1"}, "rack": {"id": 9, "name": "R07"},
            "location": null, "position": 12.0, "face": {"value": "front", "label": "Front"},
            "serial": "SN1", "asset_tag": null,
            "custom_fields": {"gt_measured_power_w": 500, "gt_last_seen": "2026-11-24T10:00:00Z"},
        });
        let patch = json!({
            "site": 3, "rack": 9, "location": null, "position": 12, "face": "front", "serial": "SN1",
            "custom_fields": {"gt_measured_power_w": 500},
        });
        assert!(has_fields(&patch, &device));
        assert!(has_fields(&json!({}), &device));
        assert!(has_fields(&json!({"position": 12}), &json!({"position": "12.0"})));
        for differs in [
            json!({"rack": 10}),
            json!({"position": 13}),
            json!({"face": "rear"}),
            json!({"location": 4}),
            json!({"serial": "SN2"}),
            json!({"custom_fields": {"gt_measured_power_w": 501}}),
            json!({"primary_mac_address": 5}),
        ] {
            assert!(!has_fields(&differs, &device), "{differs}");
        }
        assert!(has_fields(
            &json!({"primary_mac_address": 5}),
            &json!({"primary_mac_address": {"id": 5, "mac_address": "02:00:00:00:00:01"}})
        ));
        let status = |status| Fail::Status {
            what: "POST".into(),
            status,
            body: String::new(),
        };
        assert!(!maybe_landed(&status(400)));
        assert!(!maybe_landed(&status(500)));
        assert!(maybe_landed(&status(504)));
        assert!(maybe_landed(&Fail::Other("timed out".into())));
        let i = interface_intent("k1", 7, "eth0", "interface eth0 of device serial SN1", true);
        let f = InFlight {
            changes: Vec::new(),
            evidence: vec!["redfish".into()],
            intents: vec![i.clone()],
            sent_at: 1_795_000_000,
        };
        let back: InFlight = serde_json::from_str(&serde_json::to_string(&f).unwrap()).unwrap();
        assert_eq!(back, f);
        assert_eq!(
            i.check.query,
            vec![
                ("device_id".to_owned(), "7".to_owned()),
                ("name".to_owned(), "eth0".to_owned())
            ]
        );
    }

    #[test]
    fn only_refused_content_splits_a_bulk_request() {
        let st = |status| Fail::Status {
            what: "POST x".into(),
            status,
            body: String::new(),
        };
        assert!(item_error(&st(400)) && item_error(&st(409)) && item_error(&st(500)));
        assert!(!item_error(&st(429)) && !item_error(&st(503)) && !item_error(&st(502)));
        assert!(!item_error(&Fail::Other("x".into())));
        assert!(marker_line("gt-1-2").ends_with("groundtruth change id: gt-1-2"));
    }

    #[test]
    fn backoff_grows_is_capped_and_honours_retry_after() {
        assert_eq!(backoff_delay(1, None, 1.0), Duration::from_millis(500));
        assert_eq!(backoff_delay(1, None, 0.0), Duration::from_millis(250));
        assert_eq!(backoff_delay(3, None, 1.0), Duration::from_secs(2));
        assert_eq!(backoff_delay(30, None, 1.0), MAX_DELAY);
        assert_eq!(
            backoff_delay(1, Some(Duration::from_secs(7)), 0.3),
            Duration::from_secs(7)
        );
        assert_eq!(backoff_delay(1, Some(Duration::from_secs(3600)), 0.3), MAX_DELAY);
        let j = jitter();
        assert!((0.0..1.0).contains(&j));
        assert_eq!(
            parse_retry_after(Some(&HeaderValue::from_static("5"))),
            Some(Duration::from_secs(5))
        );
        assert_eq!(
            parse_retry_after(Some(&HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"))),
            None
        );
    }

    #[test]
    fn next_links_are_rebased_onto_the_configured_url() {
        let base = Url::parse("https://nb.example/netbox/").unwrap();
        let u = rebase_next(
            &base,
            "http://internal:8000/netbox/api/dcim/devices/?limit=1000&offset=1000",
        )
        .unwrap();
        assert_eq!(
            u.as_str(),
            "https://nb.example/netbox/api/dcim/devices/?limit=1000&offset=1000"
        );
    }

    #[test]
    fn shown_url_hides_credentials_and_truncation_is_char_safe() {
        let u = Url::parse("https://user:pw@nb.example/x/?token=1").unwrap();
        assert_eq!(shown_url(&u), "https://nb.example/x/");
        assert_eq!(truncate_chars("ééé", 2), "éé…");
        assert_eq!(truncate_chars("abc", 5), "abc");
    }
}
