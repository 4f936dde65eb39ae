//! Integration-health KPIs: how well the collector's view and the CMDB agree, computed from the
//! store (no CMDB round trip), exported on `/metrics`, `/api/kpis` and the `/health` page, and
//! recorded every `health.interval` into `kpi_history` so each KPI has a trend.
//!
//! Definitions (all over the devices in the store at computation time):
//! * **match rate** — devices matched to a CMDB record (linked to a NetBox id, or whose last
//!   sync ended `ok`/`blocked by exception`) ÷ devices seen;
//! * **no usable identity** — devices without a usable serial (never written to the CMDB);
//! * **duplicate candidates** — open `duplicate_*` exceptions (two CMDB records for one key) plus
//!   devices in the store sharing a MAC address with another device;
//! * **stale** — `stale_in_cmdb`: matched devices not seen for `health.stale_after`;
//!   `seen_not_in_cmdb`: devices seen within it but matched to no CMDB record;
//! * **in the CMDB, never seen** — `cmdb_not_seen`: NetBox devices in the collector's sites that
//!   match no stored device by serial, asset tag, MAC or hostname (NetBox statuses `planned`,
//!   `inventory`, `offline`, `decommissioning` left out), as found by the last CMDB refresh
//!   ([`crate::context::refresh_cmdb_not_seen`], with the link refresh, at most every 5 minutes);
//!   the collector's sites are its devices' sites and its agents' sites, so NetBox's other sites
//!   do not count;
//! * **location coverage** — devices the location engine places in a rack at a U ÷ devices seen,
//!   and the located devices per deciding (strongest) source;
//! * **sync latency** — per synced device, last sync − last seen when the newest reading was
//!   synced (median and max), and how many devices have a newer reading not yet synced;
//! * **exception backlog** — open exceptions by kind and by age (first seen);
//! * **write failures** — devices whose last sync failed, open dead letters and their failed
//!   passes.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;

use crate::context::NotSeen;
use crate::http::HttpState;
use crate::reconcile::Rules;
use crate::store::{DeviceRow, ExceptionRow, KpiPoint, Store, StoreError, SyncFacts};

/// When KPIs are computed and how long their history is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthSettings {
    pub interval: Duration,
    pub stale_after: Duration,
    pub history: Duration,
}

impl Default for HealthSettings {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(300),
            stale_after: Duration::from_secs(7 * 86_400),
            history: Duration::from_secs(30 * 86_400),
        }
    }
}

/// Exception age buckets, by first seen.
pub const AGE_BUCKETS: [(&str, u64); 4] = [
    ("lt_1h", 3_600),
    ("1h_1d", 86_400),
    ("1d_7d", 7 * 86_400),
    ("gt_7d", u64::MAX),
];

/// One computation of the KPIs.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Kpis {
    pub computed_at: String,
    pub devices_seen: u64,
    pub devices_matched: u64,
    /// 0..1; 0 when no device is seen.
    pub match_rate: f64,
    pub no_usable_identity: u64,
    pub duplicate_candidates: u64,
    /// `cmdb` (open duplicate_* exceptions) and `shared_mac` (store devices sharing a MAC).
    pub duplicates_by_source: BTreeMap<String, u64>,
    pub stale_in_cmdb: u64,
    pub seen_not_in_cmdb: u64,
    /// NetBox devices in the collector's sites that match no stored device.
    pub cmdb_not_seen: u64,
    /// The first [`NOT_SEEN_LISTED`] of them (by site and name).
    pub cmdb_not_seen_devices: Vec<NotSeen>,
    pub located_with_u: u64,
    /// 0..1 of devices seen.
    pub location_coverage: f64,
    /// Located devices (rack known) by the evidence source that decided.
    pub located_by_source: BTreeMap<String, u64>,
    pub sync_latency_p50_seconds: Option<f64>,
    pub sync_latency_max_seconds: Option<f64>,
    pub sync_pending: u64,
    pub exceptions_open: u64,
    pub exceptions_by_kind: BTreeMap<String, u64>,
    pub exceptions_by_age: BTreeMap<String, u64>,
    pub write_failures: u64,
    pub dead_letters: u64,
    pub dead_letter_attempts: u64,
}

fn parse_ts(t: &str) -> Option<SystemTime> {
    humantime::parse_rfc3339_weak(t.trim_end_matches('Z')).ok()
}

fn secs_between(later: SystemTime, earlier: SystemTime) -> Option<f64> {
    later.duration_since(earlier).ok().map(|d| d.as_secs_f64())
}

/// What the computation needs from the store.
#[derive(Debug, Clone, Copy)]
pub struct Inputs<'a> {
    pub devices: &'a [DeviceRow],
    pub exceptions: &'a [ExceptionRow],
    pub sync: &'a SyncFacts,
    /// Device keys linked to a CMDB record.
    pub linked: &'a HashSet<String>,
    /// CMDB devices in the collector's sites matching no stored device (last refresh).
    pub not_seen: &'a [NotSeen],
    pub rules: &'a Rules,
}

/// How many `cmdb_not_seen` devices `/api/kpis` and `/health` list.
pub const NOT_SEEN_LISTED: usize = 100;

/// Computes the KPIs at `now` (pure; unit-tested on a seeded store).
#[must_use]
pub fn compute(i: Inputs<'_>, now: SystemTime, stale_after: Duration) -> Kpis {
    let seen = i.devices.len() as u64;
    let synced_ok: HashSet<&str> = i
        .sync
        .results
        .iter()
        .filter(|(_, r)| r == "ok" || r == "blocked by exception")
        .map(|(k, _)| k.as_str())
        .collect();
    let matched =
        |d: &DeviceRow| i.linked.contains(&d.device_key) || synced_ok.contains(d.device_key.as_str());
    let stale_cut = now.checked_sub(stale_after).unwrap_or(SystemTime::UNIX_EPOCH);
    let recent = |d: &DeviceRow| parse_ts(&d.last_seen).is_some_and(|t| t >= stale_cut);

    let mut k = Kpis {
        computed_at: humantime::format_rfc3339_seconds(now).to_string(),
        devices_seen: seen,
        ..Kpis::default()
    };
    let heights = HashMap::new();
    let mut macs: HashMap<&str, HashSet<&str>> = HashMap::new();
    for d in i.devices {
        if matched(d) {
            k.devices_matched += 1;
            if !recent(d) {
                k.stale_in_cmdb += 1;
            }
        } else if recent(d) {
            k.seen_not_in_cmdb += 1;
        }
        if d.serial.is_empty() {
            k.no_usable_identity += 1;
        }
        let p = crate::context::placement(d, i.rules, &heights);
        if p.status == "located" && !p.rack.is_empty() {
            *k.located_by_source.entry(p.source.clone()).or_default() += 1;
            if p.u.is_some() {
                k.located_with_u += 1;
            }
        }
        for (addr, _, _) in &d.macs {
            macs.entry(addr.as_str())
                .or_default()
                .insert(d.device_key.as_str());
        }
    }
    let sharing: HashSet<&str> = macs
        .values()
        .filter(|keys| keys.len() > 1)
        .flat_map(|keys| keys.iter().copied())
        .collect();
    let cmdb_dups = i
        .exceptions
        .iter()
        .filter(|e| e.kind.starts_with("duplicate_"))
        .count() as u64;
    k.duplicates_by_source.insert("cmdb".into(), cmdb_dups);
    k.duplicates_by_source
        .insert("shared_mac".into(), sharing.len() as u64);
    k.duplicate_candidates = cmdb_dups + sharing.len() as u64;
    if seen > 0 {
        k.match_rate = k.devices_matched as f64 / seen as f64;
        k.location_coverage = k.located_with_u as f64 / seen as f64;
    }

    let last_seen: HashMap<&str, Option<SystemTime>> = i
        .devices
        .iter()
        .map(|d| (d.device_key.as_str(), parse_ts(&d.last_seen)))
        .collect();
    let mut latencies: Vec<f64> = Vec::new();
    for (key, synced) in &i.sync.last_sync {
        let (Some(Some(seen_at)), Some(synced_at)) = (last_seen.get(key.as_str()), parse_ts(synced)) else {
            continue;
        };
        match secs_between(synced_at, *seen_at) {
            Some(s) => latencies.push(s),
            None => k.sync_pending += 1,
        }
    }
    latencies.sort_by(f64::total_cmp);
    k.sync_latency_p50_seconds = latencies.get(latencies.len() / 2).copied();
    k.sync_latency_max_seconds = latencies.last().copied();

    for (name, _) in AGE_BUCKETS {
        k.exceptions_by_age.insert(name.into(), 0);
    }
    for e in i.exceptions {
        k.exceptions_open += 1;
        *k.exceptions_by_kind.entry(e.kind.clone()).or_default() += 1;
        let age = parse_ts(&e.first_seen)
            .and_then(|t| now.duration_since(t).ok())
            .map_or(0, |d| d.as_secs());
        let bucket = AGE_BUCKETS
            .iter()
            .find(|(_, max)| age < *max)
            .map_or("gt_7d", |(n, _)| n);
        *k.exceptions_by_age.entry(bucket.into()).or_default() += 1;
    }
    k.write_failures = i
        .sync
        .results
        .iter()
        .filter(|(_, r)| r.starts_with("failed"))
        .count() as u64;
    k.dead_letters = i.sync.dead_letters;
    k.dead_letter_attempts = i.sync.dead_letter_attempts;
    k.cmdb_not_seen = i.not_seen.len() as u64;
    k.cmdb_not_seen_devices = i.not_seen.iter().take(NOT_SEEN_LISTED).cloned().collect();
    k
}

/// The KPIs charted on `/health` and recorded in `kpi_history` (label ""), with their titles.
pub const CHARTED: [(&str, &str); 14] = [
    ("match_rate", "Match rate (matched to a CMDB record / seen)"),
    ("devices_seen", "Devices seen"),
    ("no_usable_identity", "Devices with no usable identity"),
    ("duplicate_candidates", "Duplicate candidates"),
    ("stale_in_cmdb", "In the CMDB, not seen for stale_after"),
    ("seen_not_in_cmdb", "Seen, not in the CMDB"),
    ("cmdb_not_seen", "In the CMDB (collector's sites), never seen"),
    ("location_coverage", "Location coverage (rack and U / seen)"),
    ("sync_latency_p50_seconds", "Sync latency, median (s)"),
    ("sync_latency_max_seconds", "Sync latency, max (s)"),
    ("exceptions_open", "Open exceptions"),
    ("write_failures", "Devices whose last CMDB write failed"),
    ("dead_letters", "Open dead letters"),
    ("sync_pending", "Devices with unsynced newer readings"),
];

impl Kpis {
    fn scalar(&self, name: &str) -> Option<f64> {
        #[allow(clippy::cast_precision_loss)]
        let n = |v: u64| Some(v as f64);
        match name {
            "match_rate" => Some(self.match_rate),
            "devices_seen" => n(self.devices_seen),
            "no_usable_identity" => n(self.no_usable_identity),
            "duplicate_candidates" => n(self.duplicate_candidates),
            "stale_in_cmdb" => n(self.stale_in_cmdb),
            "seen_not_in_cmdb" => n(self.seen_not_in_cmdb),
            "cmdb_not_seen" => n(self.cmdb_not_seen),
            "location_coverage" => Some(self.location_coverage),
            "sync_latency_p50_seconds" => self.sync_latency_p50_seconds,
            "sync_latency_max_seconds" => self.sync_latency_max_seconds,
            "exceptions_open" => n(self.exceptions_open),
            "write_failures" => n(self.write_failures),
            "dead_letters" => n(self.dead_letters),
            "sync_pending" => n(self.sync_pending),
            _ => None,
        }
    }

    /// The rows recorded in `kpi_history`: every charted scalar (label ""), and the breakdowns
    /// (exceptions by kind and age, located devices by source, duplicates by source).
    #[must_use]
    pub fn points(&self) -> Vec<KpiPoint> {
        let at = &self.computed_at;
        let p = |kpi: &str, label: &str, value: f64| KpiPoint {
            kpi: kpi.into(),
            label: label.into(),
            computed_at: at.clone(),
            value,
        };
        let mut out: Vec<KpiPoint> = CHARTED
            .iter()
            .filter_map(|(name, _)| self.scalar(name).map(|v| p(name, "", v)))
            .collect();
        #[allow(clippy::cast_precision_loss)]
        for (kpi, map) in [
            ("exceptions_open", &self.exceptions_by_kind),
            ("exceptions_by_age", &self.exceptions_by_age),
            ("located_by_source", &self.located_by_source),
            ("duplicate_candidates", &self.duplicates_by_source),
        ] {
            out.extend(map.iter().map(|(l, v)| p(kpi, l, *v as f64)));
        }
        out
    }
}

fn esc(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// Prometheus text of the KPIs (`groundtruth_health_*` gauges), appended to `/metrics`.
#[must_use]
pub fn exposition(k: &Kpis) -> String {
    let mut out = String::new();
    let mut gauge = |name: &str, help: &str, rows: &[(String, f64)]| {
        let _ = writeln!(
            out,
            "# HELP groundtruth_health_{name} {help}\n# TYPE groundtruth_health_{name} gauge"
        );
        for (labels, v) in rows {
            let _ = writeln!(out, "groundtruth_health_{name}{labels} {v}");
        }
    };
    #[allow(clippy::cast_precision_loss)]
    let one = |v: u64| vec![(String::new(), v as f64)];
    #[allow(clippy::cast_precision_loss)]
    let by = |label: &str, m: &BTreeMap<String, u64>| -> Vec<(String, f64)> {
        m.iter()
            .map(|(l, v)| (format!("{{{label}=\"{}\"}}", esc(l)), *v as f64))
            .collect()
    };
    gauge("devices_seen", "Devices in the store.", &one(k.devices_seen));
    gauge(
        "devices_matched",
        "Devices matched to a CMDB record.",
        &one(k.devices_matched),
    );
    gauge(
        "match_rate",
        "Devices matched to a CMDB record / devices seen (0..1).",
        &[(String::new(), k.match_rate)],
    );
    gauge(
        "no_usable_identity",
        "Devices without a usable serial.",
        &one(k.no_usable_identity),
    );
    gauge(
        "duplicate_candidates",
        "Duplicate candidates by source (cmdb: duplicate_* exceptions; shared_mac: store devices sharing a MAC).",
        &by("source", &k.duplicates_by_source),
    );
    gauge(
        "stale_in_cmdb",
        "Devices matched in the CMDB but not seen for health.stale_after.",
        &one(k.stale_in_cmdb),
    );
    gauge(
        "seen_not_in_cmdb",
        "Devices seen within health.stale_after but matched to no CMDB record.",
        &one(k.seen_not_in_cmdb),
    );
    gauge(
        "cmdb_not_seen",
        "CMDB devices in the collector's sites matching no device it has seen (last CMDB refresh).",
        &one(k.cmdb_not_seen),
    );
    gauge(
        "location_coverage",
        "Devices located to rack and U / devices seen (0..1).",
        &[(String::new(), k.location_coverage)],
    );
    gauge(
        "located_devices",
        "Devices located in a rack, by the strongest evidence source.",
        &by("source", &k.located_by_source),
    );
    let lat: Vec<(String, f64)> = [
        ("0.5", k.sync_latency_p50_seconds),
        ("1", k.sync_latency_max_seconds),
    ]
    .into_iter()
    .filter_map(|(q, v)| v.map(|v| (format!("{{quantile=\"{q}\"}}"), v)))
    .collect();
    gauge(
        "sync_latency_seconds",
        "Newest reading -> its CMDB sync, over synced devices (quantile 1 = max).",
        &lat,
    );
    gauge(
        "sync_pending",
        "Devices with a reading newer than their last CMDB sync.",
        &one(k.sync_pending),
    );
    gauge(
        "exceptions_open",
        "Open exceptions by kind.",
        &by("kind", &k.exceptions_by_kind),
    );
    gauge(
        "exceptions_by_age",
        "Open exceptions by age since first seen.",
        &by("age", &k.exceptions_by_age),
    );
    gauge(
        "write_failures",
        "Devices whose last CMDB write failed.",
        &one(k.write_failures),
    );
    gauge(
        "dead_letters",
        "Open dead letters (CMDB writes failed after their retries).",
        &one(k.dead_letters),
    );
    gauge(
        "dead_letter_attempts",
        "Failed passes counted by the open dead letters.",
        &one(k.dead_letter_attempts),
    );
    out
}

/// Reads the inputs and computes the KPIs now.
///
/// # Errors
/// On a store failure.
pub async fn current(store: &Store, rules: &Rules, stale_after: Duration) -> Result<Kpis, StoreError> {
    let devices = store.devices().await?;
    current_with(store, rules, stale_after, &devices).await
}

/// As [`current`], with the devices already read (the `/metrics` handler has them).
///
/// # Errors
/// On a store failure.
pub async fn current_with(
    store: &Store,
    rules: &Rules,
    stale_after: Duration,
    devices: &[DeviceRow],
) -> Result<Kpis, StoreError> {
    let exceptions = store.open_exceptions().await?;
    let sync = store.sync_facts().await?;
    let linked: HashSet<String> = store.cmdb_links().await?.into_iter().map(|(k, _)| k).collect();
    let not_seen = store.cmdb_not_seen().await?;
    Ok(compute(
        Inputs {
            devices,
            exceptions: &exceptions,
            sync: &sync,
            linked: &linked,
            not_seen: &not_seen,
            rules,
        },
        SystemTime::now(),
        stale_after,
    ))
}

/// One tick of the recorder: compute, append to the history, expire old history.
///
/// # Errors
/// On a store failure.
pub async fn record(store: &Store, rules: &Rules, s: &HealthSettings) -> Result<Kpis, StoreError> {
    let k = current(store, rules, s.stale_after).await?;
    store.record_kpis(&k.points()).await?;
    let cut = SystemTime::now()
        .checked_sub(s.history)
        .unwrap_or(SystemTime::UNIX_EPOCH);
    store
        .expire_kpis(&humantime::format_rfc3339_seconds(cut).to_string())
        .await?;
    Ok(k)
}

/// The charted history: KPI → [(time, value)], label "" only, oldest first.
fn series(points: &[KpiPoint]) -> BTreeMap<String, Vec<(String, f64)>> {
    let mut m: BTreeMap<String, Vec<(String, f64)>> = BTreeMap::new();
    for p in points.iter().filter(|p| p.label.is_empty()) {
        m.entry(p.kpi.clone())
            .or_default()
            .push((p.computed_at.clone(), p.value));
    }
    m
}

/// A small SVG line chart of one KPI's history (x by time, y from 0 or the minimum to the max).
#[must_use]
pub fn sparkline(title: &str, points: &[(String, f64)]) -> String {
    const W: f64 = 320.0;
    const H: f64 = 80.0;
    let t = crate::web::render::esc(title);
    let times: Vec<Option<SystemTime>> = points.iter().map(|(t, _)| parse_ts(t)).collect();
    let valid: Vec<(SystemTime, f64)> = times
        .iter()
        .zip(points)
        .filter_map(|(t, (_, v))| t.map(|t| (t, *v)))
        .collect();
    let Some(((t0, _), (t1, last))) = valid.first().zip(valid.last()) else {
        return format!("<figure class=\"kpi\"><figcaption>{t}: no history yet</figcaption></figure>");
    };
    let span = t1.duration_since(*t0).unwrap_or_default().as_secs_f64().max(1.0);
    let lo = valid.iter().map(|p| p.1).fold(f64::INFINITY, f64::min).min(0.0);
    let hi = valid.iter().map(|p| p.1).fold(f64::NEG_INFINITY, f64::max);
    let range = (hi - lo).max(f64::EPSILON);
    let pts: Vec<String> = valid
        .iter()
        .map(|(t, v)| {
            let x = 4.0 + (W - 8.0) * t.duration_since(*t0).unwrap_or_default().as_secs_f64() / span;
            let y = H - 14.0 - (H - 24.0) * (v - lo) / range;
            format!("{x:.1},{y:.1}")
        })
        .collect();
    format!(
        "<figure class=\"kpi\"><svg class=\"chart\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" viewBox=\"0 0 {W} {H}\" role=\"img\" aria-label=\"{t}\"><rect x=\"0\" y=\"0\" width=\"{W}\" height=\"{H}\" class=\"chartbg\"/><text x=\"4\" y=\"10\" class=\"axis\">{hi}</text><text x=\"4\" y=\"{yb}\" class=\"axis\">{lo}</text><polyline fill=\"none\" stroke=\"#1565c0\" stroke-width=\"2\" points=\"{}\"/></svg><figcaption>{t}: <strong>{}</strong> ({} point(s))</figcaption></figure>",
        pts.join(" "),
        fmt_value(*last),
        valid.len(),
        hi = fmt_value(hi),
        lo = fmt_value(lo),
        yb = H - 2.0,
    )
}

fn fmt_value(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.0}")
    } else {
        format!("{v:.3}")
    }
}

/// The `/health` page body.
#[must_use]
pub fn page_body(k: &Kpis, history: &[KpiPoint]) -> String {
    let s = series(history);
    let mut b = String::from("<h1>Integration health</h1>\n<div class=\"kpis\">\n");
    for (name, title) in CHARTED {
        let mut pts = s.get(name).cloned().unwrap_or_default();
        if let Some(v) = k.scalar(name) {
            pts.push((k.computed_at.clone(), v));
        }
        b.push_str(&sparkline(title, &pts));
        b.push('\n');
    }
    b.push_str("</div>\n<h2>Open exceptions by kind</h2>\n<table><tr><th>kind</th><th>open</th></tr>");
    for (kind, n) in &k.exceptions_by_kind {
        let _ = write!(
            b,
            "<tr><td>{}</td><td>{n}</td></tr>",
            crate::web::render::esc(kind)
        );
    }
    b.push_str("</table>\n<h2>Open exceptions by age</h2>\n<table><tr><th>age</th><th>open</th></tr>");
    for (age, _) in AGE_BUCKETS {
        let n = k.exceptions_by_age.get(age).copied().unwrap_or(0);
        let _ = write!(b, "<tr><td>{age}</td><td>{n}</td></tr>");
    }
    b.push_str("</table>\n<h2>Located devices by strongest source</h2>\n<table><tr><th>source</th><th>devices</th></tr>");
    for (src, n) in &k.located_by_source {
        let _ = write!(
            b,
            "<tr><td>{}</td><td>{n}</td></tr>",
            crate::web::render::esc(src)
        );
    }
    let _ = write!(
        b,
        "</table>\n<h2>In the CMDB, never seen ({})</h2>\n<table><tr><th>site</th><th>name</th><th>serial</th><th>NetBox id</th></tr>",
        k.cmdb_not_seen
    );
    for n in &k.cmdb_not_seen_devices {
        let e = crate::web::render::esc;
        let _ = write!(
            b,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            e(&n.site),
            e(&n.name),
            e(&n.serial),
            e(&n.cmdb_id)
        );
    }
    b.push_str("</table>\n");
    b
}

/// How far back `/api/kpis` and `/health` read the history.
const HISTORY_SHOWN: Duration = Duration::from_secs(7 * 86_400);

fn since() -> String {
    humantime::format_rfc3339_seconds(
        SystemTime::now()
            .checked_sub(HISTORY_SHOWN)
            .unwrap_or(SystemTime::UNIX_EPOCH),
    )
    .to_string()
}

/// `health.stale_after` for the HTTP handlers (set once by `serve`; the default otherwise).
static STALE_AFTER_SECS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(7 * 86_400);

/// Sets the `stale_after` the HTTP handlers compute with.
pub fn set_stale_after(d: Duration) {
    STALE_AFTER_SECS.store(d.as_secs(), std::sync::atomic::Ordering::Relaxed);
}

pub fn stale_after() -> Duration {
    Duration::from_secs(STALE_AFTER_SECS.load(std::sync::atomic::Ordering::Relaxed))
}

async fn api_kpis(State(s): State<Arc<HttpState>>, headers: HeaderMap) -> Response {
    if !crate::http::authorized(&s, &headers) {
        return (
            StatusCode::UNAUTHORIZED,
            axum::Json(serde_json::json!({"error": "missing or wrong bearer token"})),
        )
            .into_response();
    }
    let res = async {
        let k = current(&s.store, &s.rules, stale_after()).await?;
        let h = s.store.kpi_history(&since()).await?;
        Ok::<_, StoreError>((k, h))
    }
    .await;
    match res {
        Ok((k, h)) => axum::Json(serde_json::json!({ "current": k, "history": h })).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "KPI request failed on the store.");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "store error; see the collector log\n",
            )
                .into_response()
        }
    }
}

async fn health_page(State(s): State<Arc<HttpState>>, headers: HeaderMap) -> Response {
    if !crate::web::signed_in(&s, &headers) {
        return (StatusCode::SEE_OTHER, [(header::LOCATION, "/login?next=/health")]).into_response();
    }
    let res = async {
        let k = current(&s.store, &s.rules, stale_after()).await?;
        let h = s.store.kpi_history(&since()).await?;
        Ok::<_, StoreError>((k, h))
    }
    .await;
    match res {
        Ok((k, h)) => {
            let body = crate::web::render::page(
                "Integration health",
                &page_body(&k, &h),
                false,
                s.api_token.is_some(),
            );
            (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
                body,
            )
                .into_response()
        }
        Err(e) => {
            tracing::error!(error = %e, "Health page failed on the store.");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "store error; see the collector log\n",
            )
                .into_response()
        }
    }
}

/// The KPI routes, merged into [`crate::http::router`].
pub fn routes() -> Router<Arc<HttpState>> {
    Router::new()
        .route("/api/kpis", get(api_kpis))
        .route("/health", get(health_page))
}

#[cfg(test)]
mod tests {
    use super::*;
    use groundtruth_proto::v1::{
        Batch, DeviceIdentity, DeviceReport, LocationEvidence, LocationSource, MacAddress, PollOutcome,
        PollStatus,
    };

    fn report(serial: &str, endpoint: &str, mac: &str, rack_u: Option<(&str, Option<u32>)>) -> DeviceReport {
        DeviceReport {
            identity: Some(DeviceIdentity {
                serial_number: serial.into(),
                endpoint_key: endpoint.into(),
                macs: vec![MacAddress {
                    address: mac.into(),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            locations: rack_u
                .map(|(rack, u)| LocationEvidence {
                    source: LocationSource::RedfishPlacement as i32,
                    rack: rack.into(),
                    u_position: u,
                    confidence: 0.9,
                    ..Default::default()
                })
                .into_iter()
                .collect(),
            status: Some(PollStatus {
                outcome: PollOutcome::Ok as i32,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn batch(seq: u64, devices: Vec<DeviceReport>) -> Batch {
        crate::store::testdb::batch("a1", "DC1", seq, devices)
    }

    async fn seeded() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.db")).await.unwrap();
        store
            .commit_batch(&batch(
                1,
                vec![
                    report(
                        "GTKPI0000A",
                        "redfish://a",
                        "02:00:00:00:00:01",
                        Some(("R07", Some(12))),
                    ),
                    // B shares A's MAC: a duplicate candidate; located without a U.
                    report(
                        "GTKPI0000B",
                        "redfish://b",
                        "02:00:00:00:00:01",
                        Some(("R07", None)),
                    ),
                    report("", "snmp://c", "02:00:00:00:00:03", None),
                    report("GTKPI0000D", "redfish://d", "02:00:00:00:00:04", None),
                ],
            ))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
        store.record_sync("serial:GTKPI0000A", 3, "ok").await.unwrap();
        store
            .record_sync("serial:GTKPI0000B", 0, "failed: HTTP 500")
            .await
            .unwrap();
        store.link_cmdb("serial:GTKPI0000D", "77").await.unwrap();
        store
            .raise_exception("endpoint:a1/snmp://c", "no_usable_identity", "no serial")
            .await
            .unwrap();
        store
            .raise_exception(
                "serial:GTKPI0000A",
                "duplicate_serial_in_cmdb",
                "two NetBox devices",
            )
            .await
            .unwrap();
        store.dead_letter("serial:GTKPI0000B", "HTTP 500").await.unwrap();
        store.dead_letter("serial:GTKPI0000B", "HTTP 500").await.unwrap();
        (dir, store)
    }

    #[tokio::test]
    async fn kpis_from_a_seeded_store() {
        let (_dir, store) = seeded().await;
        let rules = Rules::builtin("DC1");
        let week = Duration::from_secs(7 * 86_400);
        let k = current(&store, &rules, week).await.unwrap();
        assert_eq!((k.devices_seen, k.devices_matched), (4, 2), "{k:?}");
        assert!((k.match_rate - 0.5).abs() < 1e-9);
        assert_eq!(k.no_usable_identity, 1);
        assert_eq!(k.duplicate_candidates, 3, "{:?}", k.duplicates_by_source);
        assert_eq!(k.duplicates_by_source["shared_mac"], 2);
        assert_eq!((k.stale_in_cmdb, k.seen_not_in_cmdb), (0, 2));
        assert_eq!(k.located_with_u, 1);
        assert!((k.location_coverage - 0.25).abs() < 1e-9);
        assert_eq!(k.located_by_source["REDFISH_PLACEMENT"], 2);
        assert_eq!(k.sync_pending, 0);
        let p50 = k.sync_latency_p50_seconds.unwrap();
        assert!((0.0..60.0).contains(&p50), "{p50}");
        assert_eq!(k.exceptions_open, 2);
        assert_eq!(k.exceptions_by_kind["duplicate_serial_in_cmdb"], 1);
        assert_eq!(k.exceptions_by_age["lt_1h"], 2);
        assert_eq!(k.exceptions_by_age["gt_7d"], 0);
        assert_eq!(
            (k.write_failures, k.dead_letters, k.dead_letter_attempts),
            (1, 1, 2)
        );

        // A newer reading of SA is not synced yet: pending.
        tokio::time::sleep(Duration::from_millis(5)).await;
        store
            .commit_batch(&batch(
                2,
                vec![report(
                    "GTKPI0000A",
                    "redfish://a",
                    "02:00:00:00:00:01",
                    Some(("R07", Some(12))),
                )],
            ))
            .await
            .unwrap();
        let k = current(&store, &rules, week).await.unwrap();
        assert_eq!(k.sync_pending, 1);
        assert_eq!(k.cmdb_not_seen, 0);

        // The last CMDB refresh found a NetBox device nothing reports; the next found none.
        let ghost = NotSeen {
            cmdb_id: "41".into(),
            site: "DC1".into(),
            name: "ghost-01".into(),
            serial: "GHOST0001".into(),
        };
        store
            .replace_cmdb_not_seen(std::slice::from_ref(&ghost))
            .await
            .unwrap();
        let k = current(&store, &rules, week).await.unwrap();
        assert_eq!(
            (k.cmdb_not_seen, k.cmdb_not_seen_devices.clone()),
            (1, vec![ghost])
        );
        assert!(exposition(&k).contains("\ngroundtruth_health_cmdb_not_seen 1\n"));
        assert!(
            k.points()
                .iter()
                .any(|p| p.kpi == "cmdb_not_seen" && p.value == 1.0)
        );
        assert!(page_body(&k, &[]).contains("<td>ghost-01</td><td>GHOST0001</td>"));
        store.replace_cmdb_not_seen(&[]).await.unwrap();
        assert_eq!(current(&store, &rules, week).await.unwrap().cmdb_not_seen, 0);

        // Eight days on, nothing has been seen since: matched devices are stale, none is
        // "seen but not in the CMDB", and the exceptions are over a week old.
        let devices = store.devices().await.unwrap();
        let exceptions = store.open_exceptions().await.unwrap();
        let sync = store.sync_facts().await.unwrap();
        let linked: HashSet<String> = store
            .cmdb_links()
            .await
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        let later = compute(
            Inputs {
                devices: &devices,
                exceptions: &exceptions,
                sync: &sync,
                linked: &linked,
                not_seen: &[],
                rules: &rules,
            },
            SystemTime::now() + Duration::from_secs(8 * 86_400),
            week,
        );
        assert_eq!((later.stale_in_cmdb, later.seen_not_in_cmdb), (2, 0));
        assert_eq!(later.exceptions_by_age["gt_7d"], 2);
    }

    #[tokio::test]
    async fn recorded_history_feeds_charts_and_expires() {
        let (_dir, store) = seeded().await;
        let rules = Rules::builtin("DC1");
        let s = HealthSettings::default();
        let k = record(&store, &rules, &s).await.unwrap();
        let h = store.kpi_history("1970-01-01T00:00:00Z").await.unwrap();
        let rate: Vec<f64> = h
            .iter()
            .filter(|p| p.kpi == "match_rate" && p.label.is_empty())
            .map(|p| p.value)
            .collect();
        assert_eq!(rate, [0.5]);
        assert!(
            h.iter()
                .any(|p| p.kpi == "exceptions_open" && p.label == "no_usable_identity" && p.value == 1.0)
        );
        assert!(
            h.iter()
                .any(|p| p.kpi == "located_by_source" && p.label == "REDFISH_PLACEMENT" && p.value == 2.0)
        );
        // An old point: the chart spans it, and expiry removes it.
        store
            .record_kpis(&[KpiPoint {
                kpi: "match_rate".into(),
                label: String::new(),
                computed_at: "2000-01-01T00:00:00Z".into(),
                value: 0.1,
            }])
            .await
            .unwrap();
        let h = store.kpi_history("1970-01-01T00:00:00Z").await.unwrap();
        let body = page_body(&k, &h);
        assert_eq!(
            body.matches("<figure class=\"kpi\">").count(),
            CHARTED.len(),
            "{body}"
        );
        assert!(
            body.contains(
                "Match rate (matched to a CMDB record / seen): <strong>0.500</strong> (3 point(s))"
            ),
            "{body}"
        );
        assert_eq!(store.expire_kpis("2001-01-01T00:00:00Z").await.unwrap(), 1);

        let text = exposition(&k);
        assert!(text.contains("groundtruth_health_match_rate 0.5\n"), "{text}");
        assert!(
            text.contains("groundtruth_health_exceptions_open{kind=\"duplicate_serial_in_cmdb\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("groundtruth_health_exceptions_by_age{age=\"lt_1h\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("groundtruth_health_dead_letter_attempts 2\n"),
            "{text}"
        );
        assert!(
            text.contains("groundtruth_health_sync_latency_seconds{quantile=\"0.5\"}"),
            "{text}"
        );
    }

    #[test]
    fn sparkline_escapes_and_handles_empty_history() {
        assert!(sparkline("<b>", &[]).contains("&lt;b&gt;: no history yet"));
        let svg = sparkline(
            "x",
            &[
                ("2026-11-24T10:00:00Z".into(), 1.0),
                ("2026-11-24T11:00:00Z".into(), 3.0),
            ],
        );
        assert!(svg.contains("points=\"4.0,47.3 316.0,10.0\""), "{svg}");
    }
}
