//! ITSM events: configurable rules turn conditions the collector sees into tickets.
//!
//! Every `itsm.interval` the engine evaluates the rules over the store ([`conditions`], a pure
//! function), then compares what is active with the open tickets (table `tickets`):
//! * a condition without an open ticket opens one — unless `itsm.max_new_per_hour` tickets were
//!   already opened in the last hour (storm guard: it is opened on a later pass instead);
//! * a condition whose summary changed updates its ticket, at most every `itsm.update_interval`;
//! * an open ticket whose condition is gone is resolved, with the evidence of the clearing.
//!
//! One open ticket per dedupe key (a unique index), so a condition never opens two tickets.
//! Each event goes to an outbox (`ticket_deliveries`) per sink — a signed JSON webhook
//! ([`webhook`]) and/or Request Tracker 5 ([`rt`]) — delivered in order per ticket and sink,
//! retried with exponential backoff and dead-lettered (table `dead_letters`, key `ticket:<id>`)
//! after `itsm.max_attempts`, like CMDB writes.

pub mod rt;
pub mod webhook;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, SystemTime};

use serde_json::json;

use crate::reconcile::Rules;
use crate::store::{Attributes, DeviceRow, ExceptionRow, LatestReading, Store, StoreError, TicketRow};

/// Identity attributes that name a UPS's power source (SNMP profiles: APC `output_status`,
/// UPS-MIB `output_source`).
pub const POWER_SOURCE_ATTRIBUTES: [&str; 3] = ["output_status", "output_source", "power_source"];

/// What a rule watches.
#[derive(Debug, Clone, PartialEq)]
pub enum Watch {
    /// An open exception of one of these kinds (any kind when empty).
    Exception { kinds: Vec<String> },
    /// A device not seen for this long.
    DeviceMissing { after: Duration },
    /// A rack whose measured power reaches `threshold_percent` of its budget (the site map's
    /// `power_budget_w`, else `budget_watts`).
    RackPower {
        budget_watts: Option<f64>,
        threshold_percent: f64,
    },
    /// A UPS reporting that it runs on battery (a power-source attribute = `on_battery`).
    UpsOnBattery,
    /// A reading of `metric` above `above` or below `below`.
    Environment {
        metric: String,
        above: Option<f64>,
        below: Option<f64>,
    },
}

/// One configured rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub name: String,
    pub watch: Watch,
}

/// The signed webhook sink.
#[derive(Clone)]
pub struct WebhookSettings {
    pub url: url::Url,
    pub secret: String,
}

impl std::fmt::Debug for WebhookSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookSettings")
            .field("url", &self.url.as_str())
            .field("secret", &"***")
            .finish()
    }
}

/// The Request Tracker sink.
#[derive(Clone)]
pub struct RtSettings {
    pub url: url::Url,
    pub token: String,
    pub queue: String,
}

impl std::fmt::Debug for RtSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RtSettings")
            .field("url", &self.url.as_str())
            .field("token", &"***")
            .field("queue", &self.queue)
            .finish()
    }
}

/// `[itsm]` settings.
#[derive(Debug, Clone)]
pub struct ItsmSettings {
    pub interval: Duration,
    pub max_new_per_hour: u64,
    pub update_interval: Duration,
    pub max_attempts: u32,
    /// First retry delay; doubled per failed attempt, at most one hour.
    pub retry_backoff: Duration,
    pub webhook: Option<WebhookSettings>,
    pub rt: Option<RtSettings>,
    pub rules: Vec<Rule>,
}

impl Default for ItsmSettings {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(30),
            max_new_per_hour: 20,
            update_interval: Duration::from_secs(900),
            max_attempts: 8,
            retry_backoff: Duration::from_secs(10),
            webhook: None,
            rt: None,
            rules: Vec::new(),
        }
    }
}

impl ItsmSettings {
    /// The configured sinks' names, as stored in `ticket_deliveries.sink`.
    #[must_use]
    pub fn sinks(&self) -> Vec<&'static str> {
        let mut s = Vec::new();
        if self.webhook.is_some() {
            s.push("webhook");
        }
        if self.rt.is_some() {
            s.push("rt");
        }
        s
    }
}

/// A condition found by the rules: active (a ticket should be open) or merely observed (what
/// clears a ticket says).
#[derive(Debug, Clone, PartialEq)]
pub struct Found {
    pub key: String,
    pub rule: String,
    pub kind: &'static str,
    pub subject: String,
    pub summary: String,
    pub evidence: serde_json::Value,
    pub active: bool,
}

/// What the rules look at.
#[derive(Debug, Clone, Copy)]
pub struct Facts<'a> {
    pub devices: &'a [DeviceRow],
    pub readings: &'a [LatestReading],
    pub exceptions: &'a [ExceptionRow],
    pub attributes: &'a Attributes,
    pub rules: &'a Rules,
}

fn parse_ts(t: &str) -> Option<SystemTime> {
    humantime::parse_rfc3339_weak(t.trim_end_matches('Z')).ok()
}

fn fmt_ts(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// Measured power per rack (site, rack) and the devices it comes from: the rack totals of
/// [`crate::power`] (PDU input power where PDUs report it, else the devices' own power).
#[must_use]
pub fn rack_power(facts: &Facts<'_>) -> BTreeMap<(String, String), (f64, Vec<String>)> {
    let inv = crate::web::render::inventory(facts.devices, facts.readings, &HashMap::new(), facts.rules);
    crate::power::compute(&inv, facts.readings, facts.rules)
        .racks
        .into_iter()
        .filter(|r| r.source != crate::power::Source::None)
        .map(|r| ((r.site, r.rack), (r.watts, r.from)))
        .collect()
}

/// Evaluates every rule at `now`.
#[must_use]
pub fn conditions(rules: &[Rule], facts: &Facts<'_>, now: SystemTime) -> Vec<Found> {
    let mut out = Vec::new();
    for rule in rules {
        match &rule.watch {
            Watch::Exception { kinds } => {
                for e in facts.exceptions {
                    if kinds.is_empty() || kinds.iter().any(|k| k == &e.kind) {
                        out.push(Found {
                            key: format!("{}:exception:{}:{}", rule.name, e.kind, e.device_key),
                            rule: rule.name.clone(),
                            kind: "exception",
                            subject: e.device_key.clone(),
                            summary: format!("{} on {}: {}", e.kind, e.device_key, e.detail),
                            evidence: json!({"exception_id": e.id, "kind": e.kind, "device": e.device_key,
                                "detail": e.detail, "first_seen": e.first_seen, "last_seen": e.last_seen}),
                            active: true,
                        });
                    }
                }
            }
            Watch::DeviceMissing { after } => {
                let cut = now.checked_sub(*after).unwrap_or(SystemTime::UNIX_EPOCH);
                for d in facts.devices {
                    let Some(seen) = parse_ts(&d.last_seen) else {
                        continue;
                    };
                    let active = seen < cut;
                    out.push(Found {
                        key: format!("{}:missing:{}", rule.name, d.device_key),
                        rule: rule.name.clone(),
                        kind: "device_missing",
                        subject: d.device_key.clone(),
                        summary: if active {
                            let what = format!("{} {}", d.vendor, d.model);
                            let what = what.trim();
                            format!(
                                "{}{} not seen since {} (more than {})",
                                d.device_key,
                                if what.is_empty() {
                                    String::new()
                                } else {
                                    format!(" ({what})")
                                },
                                d.last_seen,
                                humantime::format_duration(*after)
                            )
                        } else {
                            format!("{} seen again at {}", d.device_key, d.last_seen)
                        },
                        evidence: json!({"device": d.device_key, "serial": d.serial, "last_seen": d.last_seen,
                            "endpoint": d.endpoint_key, "agent": d.agent_id, "last_outcome": d.last_outcome}),
                        active,
                    });
                }
            }
            Watch::RackPower {
                budget_watts,
                threshold_percent,
            } => {
                for ((site, rack), (watts, from)) in rack_power(facts) {
                    let budget = facts
                        .rules
                        .site_map
                        .rack(&site, &rack)
                        .and_then(|r| r.power_budget_w)
                        .or(*budget_watts);
                    let Some(budget) = budget.filter(|b| *b > 0.0) else {
                        continue;
                    };
                    let pct = 100.0 * watts / budget;
                    let active = pct >= *threshold_percent;
                    out.push(Found {
                        key: format!("{}:rack_power:{site}/{rack}", rule.name),
                        rule: rule.name.clone(),
                        kind: "rack_power",
                        subject: format!("{site}/{rack}"),
                        summary: format!(
                            "rack {site}/{rack} draws {watts:.0} W, {pct:.0} % of its {budget:.0} W budget (threshold {threshold_percent} %)"
                        ),
                        evidence: json!({"site": site, "rack": rack, "watts": watts, "budget_watts": budget,
                            "percent": pct, "threshold_percent": threshold_percent, "measured_from": from}),
                        active,
                    });
                }
            }
            Watch::UpsOnBattery => {
                let mut keys: Vec<&String> = facts.attributes.keys().collect();
                keys.sort();
                for key in keys {
                    let attrs = &facts.attributes[key];
                    let sources: Vec<(&String, &(String, String))> = attrs
                        .iter()
                        .filter(|(n, _)| POWER_SOURCE_ATTRIBUTES.contains(&n.as_str()))
                        .collect();
                    let Some((name, (value, at))) = sources
                        .iter()
                        .find(|(_, (v, _))| v == "on_battery")
                        .or_else(|| sources.first())
                        .copied()
                    else {
                        continue;
                    };
                    let active = value == "on_battery";
                    out.push(Found {
                        key: format!("{}:ups_on_battery:{key}", rule.name),
                        rule: rule.name.clone(),
                        kind: "ups_on_battery",
                        subject: key.clone(),
                        summary: if active {
                            format!("UPS {key} is on battery ({name} = {value})")
                        } else {
                            format!("UPS {key} is back on {value} ({name})")
                        },
                        evidence: json!({"device": key, "attribute": name, "value": value, "observed_at": at,
                            "attributes": attrs.iter().map(|(n, (v, _))| (n.clone(), v.clone())).collect::<BTreeMap<_, _>>()}),
                        active,
                    });
                }
            }
            Watch::Environment { metric, above, below } => {
                for r in facts.readings.iter().filter(|r| &r.metric == metric) {
                    let high = above.is_some_and(|a| r.value > a);
                    let low = below.is_some_and(|b| r.value < b);
                    let what = if r.component_kind.is_empty() {
                        String::new()
                    } else {
                        format!(
                            " ({} {})",
                            r.component_kind
                                .trim_start_matches("COMPONENT_KIND_")
                                .to_ascii_lowercase(),
                            if r.component_label.is_empty() {
                                r.component_index.to_string()
                            } else {
                                r.component_label.clone()
                            }
                        )
                    };
                    let limit = match (high, low) {
                        (true, _) => format!("above {}", above.unwrap_or_default()),
                        (_, true) => format!("below {}", below.unwrap_or_default()),
                        _ => "within limits".to_owned(),
                    };
                    out.push(Found {
                        key: format!(
                            "{}:environment:{metric}:{}:{}:{}",
                            rule.name, r.device_key, r.component_kind, r.component_index
                        ),
                        rule: rule.name.clone(),
                        kind: "environment",
                        subject: r.device_key.clone(),
                        summary: format!("{metric} {} {} on {}{what}, {limit}", r.value, r.unit, r.device_key),
                        evidence: json!({"device": r.device_key, "metric": metric, "value": r.value, "unit": r.unit,
                            "component": r.component_kind, "index": r.component_index, "label": r.component_label,
                            "observed_at": r.observed_at, "above": above, "below": below}),
                        active: high || low,
                    });
                }
            }
        }
    }
    out
}

/// The event sent to every sink (also the webhook's body).
#[must_use]
pub fn payload(action: &str, t: &TicketRow, id: i64, at: &str) -> String {
    json!({
        "event": action,
        "at": at,
        "ticket": {
            "id": id,
            "dedupe_key": t.dedupe_key,
            "rule": t.rule,
            "kind": t.kind,
            "subject": t.subject,
            "summary": t.summary,
            "opened_at": t.opened_at,
            "state": if action == "resolve" { "resolved" } else { "open" },
        },
        "evidence": serde_json::from_str::<serde_json::Value>(&t.evidence).unwrap_or(serde_json::Value::Null),
    })
    .to_string()
}

/// What one evaluation pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct PassReport {
    pub active: usize,
    pub opened: usize,
    pub updated: usize,
    pub resolved: usize,
    /// Conditions held back by the rate limit (opened on a later pass).
    pub deferred: usize,
}

/// Evaluates the rules against the store and records ticket events (opens, updates,
/// resolutions) in the outbox.
///
/// # Errors
/// On a store failure.
pub async fn evaluate(
    store: &Store,
    rules: &Rules,
    s: &ItsmSettings,
    now: SystemTime,
) -> Result<PassReport, StoreError> {
    let devices = store.devices().await?;
    let readings = store.latest_readings().await?;
    let exceptions = store.open_exceptions().await?;
    let attributes = store.device_attributes().await?;
    let facts = Facts {
        devices: &devices,
        readings: &readings,
        exceptions: &exceptions,
        attributes: &attributes,
        rules,
    };
    let found = conditions(&s.rules, &facts, now);
    let at = fmt_ts(now);
    let sinks = s.sinks();
    let mut report = PassReport::default();
    let open: HashMap<String, TicketRow> = store
        .open_tickets()
        .await?
        .into_iter()
        .map(|t| (t.dedupe_key.clone(), t))
        .collect();
    let hour_ago = fmt_ts(
        now.checked_sub(Duration::from_secs(3600))
            .unwrap_or(SystemTime::UNIX_EPOCH),
    );
    let mut opened_last_hour = store.tickets_opened_since(&hour_ago).await?;
    let mut active_keys = HashSet::new();
    for f in found.iter().filter(|f| f.active) {
        report.active += 1;
        active_keys.insert(f.key.as_str());
        let evidence = f.evidence.to_string();
        match open.get(&f.key) {
            Some(t) => {
                let due = parse_ts(&t.updated_at)
                    .is_none_or(|u| now.duration_since(u).unwrap_or_default() >= s.update_interval);
                if t.summary != f.summary && due {
                    let mut next = t.clone();
                    next.summary.clone_from(&f.summary);
                    next.evidence.clone_from(&evidence);
                    store
                        .ticket_event(&next, "update", &at, &sinks, &payload("update", &next, t.id, &at))
                        .await?;
                    report.updated += 1;
                }
            }
            None if opened_last_hour >= s.max_new_per_hour => report.deferred += 1,
            None => {
                let t = TicketRow {
                    id: 0,
                    dedupe_key: f.key.clone(),
                    rule: f.rule.clone(),
                    kind: f.kind.to_owned(),
                    subject: f.subject.clone(),
                    summary: f.summary.clone(),
                    evidence,
                    opened_at: at.clone(),
                    updated_at: at.clone(),
                    updates: 0,
                    resolved_at: None,
                };
                store
                    .open_ticket(&t, &sinks, &|id| payload("open", &t, id, &at))
                    .await?;
                opened_last_hour += 1;
                report.opened += 1;
            }
        }
    }
    if report.deferred > 0 {
        tracing::warn!(
            deferred = report.deferred,
            max_new_per_hour = s.max_new_per_hour,
            "ITSM rate limit reached; conditions will open tickets on a later pass."
        );
    }
    let observed: HashMap<&str, &Found> = found.iter().map(|f| (f.key.as_str(), f)).collect();
    for (key, t) in &open {
        if active_keys.contains(key.as_str()) {
            continue;
        }
        let (summary, evidence) = observed.get(key.as_str()).map_or_else(
            || {
                (
                    format!("cleared: {} is no longer present", t.summary),
                    json!({"cleared_at": at, "previous": serde_json::from_str::<serde_json::Value>(&t.evidence).unwrap_or_default()}),
                )
            },
            |f| {
                let mut e = f.evidence.clone();
                if let Some(o) = e.as_object_mut() {
                    o.insert("cleared_at".into(), json!(at));
                }
                (format!("cleared: {}", f.summary), e)
            },
        );
        let mut next = t.clone();
        next.summary.clone_from(&summary);
        next.evidence = evidence.to_string();
        store
            .ticket_event(
                &next,
                "resolve",
                &at,
                &sinks,
                &payload("resolve", &next, t.id, &at),
            )
            .await?;
        report.resolved += 1;
    }
    Ok(report)
}

/// The sinks' clients.
#[derive(Debug, Clone, Default)]
pub struct Sinks {
    pub webhook: Option<webhook::Webhook>,
    pub rt: Option<rt::Rt>,
}

impl Sinks {
    /// Builds the clients of the configured sinks.
    ///
    /// # Errors
    /// If an HTTP client cannot be built.
    pub fn new(s: &ItsmSettings) -> Result<Self, String> {
        Ok(Self {
            webhook: s.webhook.as_ref().map(webhook::Webhook::new).transpose()?,
            rt: s.rt.as_ref().map(rt::Rt::new).transpose()?,
        })
    }
}

/// What one delivery round did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct DeliveryReport {
    pub delivered: usize,
    pub retried: usize,
    pub dead: usize,
}

/// Delivers the due events, in order per ticket and sink; failures are retried with exponential
/// backoff and dead-lettered after `max_attempts`.
///
/// # Errors
/// On a store failure.
pub async fn deliver(
    store: &Store,
    sinks: &Sinks,
    s: &ItsmSettings,
    now: SystemTime,
) -> Result<DeliveryReport, StoreError> {
    let mut report = DeliveryReport::default();
    let mut stalled: HashSet<(i64, String)> = HashSet::new();
    for d in store.due_deliveries(&fmt_ts(now)).await? {
        let pair = (d.ticket_id, d.sink.clone());
        if stalled.contains(&pair) || store.delivery_blocked(&d).await? {
            stalled.insert(pair);
            continue;
        }
        let result = match d.sink.as_str() {
            "webhook" => match &sinks.webhook {
                Some(w) => w.send(&d).await.map(|()| None),
                None => Err("webhook sink no longer configured".to_owned()),
            },
            "rt" => match &sinks.rt {
                Some(r) => {
                    let external = store.ticket_ref(d.ticket_id, "rt").await?;
                    r.send(&d, external.as_deref()).await
                }
                None => Err("rt sink no longer configured".to_owned()),
            },
            other => Err(format!("unknown sink {other:?}")),
        };
        match result {
            Ok(external) => {
                store.delivered(&d, external.as_deref()).await?;
                store
                    .resolve_dead_letters(&format!("ticket:{}", d.ticket_id), &[])
                    .await?;
                report.delivered += 1;
            }
            Err(e) => {
                let attempts = u32::try_from(d.attempts).unwrap_or(u32::MAX).saturating_add(1);
                stalled.insert(pair);
                if attempts >= s.max_attempts {
                    tracing::error!(ticket = d.ticket_id, sink = %d.sink, action = %d.action, attempts, error = %e, "Ticket event dead-lettered.");
                    store.delivery_failed(&d, &e, None).await?;
                    store
                        .dead_letter(
                            &format!("ticket:{}", d.ticket_id),
                            &format!("{} {}: {e}", d.sink, d.action),
                        )
                        .await?;
                    report.dead += 1;
                } else {
                    let backoff = s
                        .retry_backoff
                        .saturating_mul(1 << attempts.saturating_sub(1).min(16))
                        .min(Duration::from_secs(3600));
                    tracing::warn!(ticket = d.ticket_id, sink = %d.sink, action = %d.action, attempts, error = %e, retry_in = %humantime::format_duration(backoff), "Ticket event delivery failed; will retry.");
                    store
                        .delivery_failed(&d, &e, Some(&fmt_ts(now + backoff)))
                        .await?;
                    report.retried += 1;
                }
            }
        }
    }
    Ok(report)
}

async fn api_tickets(
    axum::extract::State(s): axum::extract::State<std::sync::Arc<crate::http::HttpState>>,
    headers: axum::http::HeaderMap,
) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    if !crate::http::authorized(&s, &headers) {
        return (
            axum::http::StatusCode::UNAUTHORIZED,
            axum::Json(json!({"error": "missing or wrong bearer token"})),
        )
            .into_response();
    }
    let res = async {
        let mut out = Vec::new();
        for t in s.store.all_tickets().await? {
            let mut refs = serde_json::Map::new();
            for sink in ["rt"] {
                if let Some(x) = s.store.ticket_ref(t.id, sink).await? {
                    refs.insert(sink.to_owned(), json!(x));
                }
            }
            let mut v = serde_json::to_value(&t).unwrap_or_default();
            if let Some(o) = v.as_object_mut() {
                o.insert("external_ids".into(), serde_json::Value::Object(refs));
                o.insert(
                    "evidence".into(),
                    serde_json::from_str(&t.evidence).unwrap_or(serde_json::Value::Null),
                );
            }
            out.push(v);
        }
        let (delivered, pending, dead) = s.store.delivery_counts().await?;
        Ok::<_, StoreError>(json!({
            "tickets": out,
            "deliveries": {"delivered": delivered, "pending": pending, "dead": dead},
        }))
    }
    .await;
    match res {
        Ok(v) => axum::Json(v).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "Ticket list failed on the store.");
            (
                axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                "store error; see the collector log\n",
            )
                .into_response()
        }
    }
}

/// The ticket routes, merged into [`crate::http::router`].
pub fn routes() -> axum::Router<std::sync::Arc<crate::http::HttpState>> {
    axum::Router::new().route("/api/tickets", axum::routing::get(api_tickets))
}

/// Human text of an event for ticketing systems (summary, then the evidence as indented JSON).
#[must_use]
pub fn event_text(payload: &str) -> (String, String) {
    let v: serde_json::Value = serde_json::from_str(payload).unwrap_or_default();
    let summary = v["ticket"]["summary"].as_str().unwrap_or_default().to_owned();
    let body = format!(
        "{summary}\n\nrule: {}\ncondition: {}\nevent: {} at {}\n\nevidence:\n{}\n",
        v["ticket"]["rule"].as_str().unwrap_or_default(),
        v["ticket"]["dedupe_key"].as_str().unwrap_or_default(),
        v["event"].as_str().unwrap_or_default(),
        v["at"].as_str().unwrap_or_default(),
        serde_json::to_string_pretty(&v["evidence"]).unwrap_or_default()
    );
    (summary, body)
}

/// Reads at most `limit` bytes of a response body (a misbehaving peer cannot exhaust memory).
pub(crate) async fn read_capped(mut resp: reqwest::Response, limit: usize) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    while let Some(part) = resp.chunk().await.map_err(|e| e.to_string())? {
        if body.len() + part.len() > limit {
            return Err(format!("answer over {limit} bytes"));
        }
        body.extend_from_slice(&part);
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::store::EvidenceRow;

    type Received = Arc<Mutex<Vec<(String, String, String)>>>;

    /// A webhook receiver on loopback that checks signatures and fails the first `fail` calls.
    async fn receiver(secret: &'static str, fail: usize) -> (url::Url, Received, Arc<AtomicUsize>) {
        let got: Received = Arc::default();
        let calls = Arc::new(AtomicUsize::new(0));
        let (g, c) = (got.clone(), calls.clone());
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let (g, c) = (g.clone(), c.clone());
                async move {
                    let n = c.fetch_add(1, Ordering::SeqCst);
                    if n < fail {
                        return axum::http::StatusCode::INTERNAL_SERVER_ERROR;
                    }
                    let sig = headers
                        .get("x-groundtruth-signature")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default();
                    if !webhook::verify(secret, &body, sig) {
                        return axum::http::StatusCode::UNAUTHORIZED;
                    }
                    let event = headers
                        .get("x-groundtruth-event")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_owned();
                    let delivery = headers
                        .get("x-groundtruth-delivery")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_owned();
                    g.lock()
                        .unwrap()
                        .push((event, delivery, String::from_utf8_lossy(&body).into_owned()));
                    axum::http::StatusCode::NO_CONTENT
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (format!("http://{addr}/hook").parse().unwrap(), got, calls)
    }

    fn settings(url: url::Url, rules: Vec<Rule>) -> ItsmSettings {
        ItsmSettings {
            update_interval: Duration::ZERO,
            retry_backoff: Duration::from_secs(1),
            max_attempts: 3,
            webhook: Some(WebhookSettings {
                url,
                secret: "s3cret".into(),
            }),
            rules,
            ..ItsmSettings::default()
        }
    }

    fn exception_rule() -> Rule {
        Rule {
            name: "dups".into(),
            watch: Watch::Exception {
                kinds: vec!["duplicate_serial_in_cmdb".into()],
            },
        }
    }

    #[tokio::test]
    async fn exception_ticket_opens_once_updates_and_resolves_over_a_signed_webhook() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.db")).await.unwrap();
        let (url, got, _) = receiver("s3cret", 0).await;
        let s = settings(url, vec![exception_rule()]);
        let sinks = Sinks::new(&s).unwrap();
        let rules = Rules::builtin("DC1");
        let t0 = SystemTime::now();

        store
            .raise_exception(
                "serial:X1",
                "duplicate_serial_in_cmdb",
                "2 NetBox devices: 11, 12",
            )
            .await
            .unwrap();
        store
            .raise_exception("serial:X1", "no_location", "nothing")
            .await
            .unwrap();
        let r = evaluate(&store, &rules, &s, t0).await.unwrap();
        assert_eq!((r.active, r.opened), (1, 1), "{r:?}");
        // Same condition again: no second ticket.
        let r = evaluate(&store, &rules, &s, t0).await.unwrap();
        assert_eq!((r.opened, r.updated, r.resolved), (0, 0, 0));
        assert_eq!(deliver(&store, &sinks, &s, t0).await.unwrap().delivered, 1);

        // The detail changes: an update.
        store
            .raise_exception(
                "serial:X1",
                "duplicate_serial_in_cmdb",
                "3 NetBox devices: 11, 12, 13",
            )
            .await
            .unwrap();
        let r = evaluate(&store, &rules, &s, t0 + Duration::from_secs(1))
            .await
            .unwrap();
        assert_eq!(r.updated, 1);
        // It clears: resolved with evidence.
        store
            .resolve_exceptions("serial:X1", &["no_location"])
            .await
            .unwrap();
        let r = evaluate(&store, &rules, &s, t0 + Duration::from_secs(2))
            .await
            .unwrap();
        assert_eq!(r.resolved, 1);
        assert_eq!(
            deliver(&store, &sinks, &s, t0 + Duration::from_secs(2))
                .await
                .unwrap()
                .delivered,
            2
        );

        let got = got.lock().unwrap().clone();
        let events: Vec<&str> = got.iter().map(|(e, _, _)| e.as_str()).collect();
        assert_eq!(events, ["open", "update", "resolve"]);
        let ids: HashSet<&str> = got.iter().map(|(_, d, _)| d.as_str()).collect();
        assert_eq!(ids.len(), 3, "delivery ids are unique");
        let open: serde_json::Value = serde_json::from_str(&got[0].2).unwrap();
        assert_eq!(open["ticket"]["kind"], "exception");
        assert_eq!(open["evidence"]["detail"], "2 NetBox devices: 11, 12");
        let resolve: serde_json::Value = serde_json::from_str(&got[2].2).unwrap();
        assert_eq!(resolve["ticket"]["state"], "resolved");
        assert!(
            resolve["ticket"]["summary"]
                .as_str()
                .unwrap()
                .starts_with("cleared: "),
            "{resolve}"
        );
        assert_eq!(resolve["ticket"]["id"], open["ticket"]["id"]);
        let all = store.all_tickets().await.unwrap();
        assert_eq!(all.len(), 1);
        assert!(all[0].resolved_at.is_some());
        assert_eq!(all[0].updates, 1);

        // The API lists it with its evidence, behind the token.
        let router = crate::http::router(crate::http::HttpState {
            store: store.clone(),
            ingest: Arc::default(),
            rules: Rules::builtin("DC1"),
            api_token: Some("tok".into()),
            events: tokio::sync::watch::channel(0).1,
            cmdb_configured: false,
            leader: None,
        });
        let call = |auth: Option<&str>| {
            let mut req = axum::http::Request::get("/api/tickets");
            if let Some(a) = auth {
                req = req.header("authorization", a);
            }
            tower::ServiceExt::oneshot(router.clone(), req.body(axum::body::Body::empty()).unwrap())
        };
        assert_eq!(call(None).await.unwrap().status(), 401);
        let resp = call(Some("Bearer tok")).await.unwrap();
        assert_eq!(resp.status(), 200);
        let body = axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["tickets"][0]["rule"], "dups", "{v}");
        assert_eq!(
            v["tickets"][0]["evidence"]["previous"]["kind"], "duplicate_serial_in_cmdb",
            "{v}"
        );
        assert_eq!(v["deliveries"]["delivered"], 3, "{v}");

        // The condition returns: a new ticket.
        store
            .raise_exception("serial:X1", "duplicate_serial_in_cmdb", "again")
            .await
            .unwrap();
        let r = evaluate(&store, &rules, &s, t0 + Duration::from_secs(3))
            .await
            .unwrap();
        assert_eq!(r.opened, 1);
        assert_eq!(store.all_tickets().await.unwrap().len(), 2);
    }

    #[tokio::test]
    async fn storm_guard_defers_and_failed_deliveries_are_retried_then_dead_lettered() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.db")).await.unwrap();
        // The receiver fails the first 2 calls: attempt 1 fails, attempt 2 fails, attempt 3 lands.
        let (url, got, calls) = receiver("s3cret", 2).await;
        let mut s = settings(url, vec![exception_rule()]);
        s.max_new_per_hour = 1;
        let sinks = Sinks::new(&s).unwrap();
        let rules = Rules::builtin("DC1");
        let t0 = SystemTime::now();
        for k in ["serial:A1", "serial:A2", "serial:A3"] {
            store
                .raise_exception(k, "duplicate_serial_in_cmdb", "dup")
                .await
                .unwrap();
        }
        let r = evaluate(&store, &rules, &s, t0).await.unwrap();
        assert_eq!((r.active, r.opened, r.deferred), (3, 1, 2), "{r:?}");

        let r = deliver(&store, &sinks, &s, t0).await.unwrap();
        assert_eq!((r.delivered, r.retried), (0, 1));
        // Not due yet (backoff 1 s): nothing is attempted.
        let r = deliver(&store, &sinks, &s, t0).await.unwrap();
        assert_eq!(r, DeliveryReport::default());
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        let r = deliver(&store, &sinks, &s, t0 + Duration::from_secs(2))
            .await
            .unwrap();
        assert_eq!(r.retried, 1);
        let r = deliver(&store, &sinks, &s, t0 + Duration::from_secs(10))
            .await
            .unwrap();
        assert_eq!(r.delivered, 1);
        assert_eq!(got.lock().unwrap().len(), 1);

        // A sink that never answers: dead-lettered after max_attempts, named in dead_letters.
        let mut dead = s.clone();
        dead.webhook = Some(WebhookSettings {
            url: "http://127.0.0.1:9/unreachable".parse().unwrap(),
            secret: "x".into(),
        });
        dead.max_new_per_hour = 10;
        let r = evaluate(&store, &rules, &dead, t0 + Duration::from_secs(3700))
            .await
            .unwrap();
        assert_eq!(r.opened, 2);
        let sinks = Sinks::new(&dead).unwrap();
        let mut at = t0 + Duration::from_secs(3700);
        let mut total = DeliveryReport::default();
        for _ in 0..4 {
            let r = deliver(&store, &sinks, &dead, at).await.unwrap();
            total.retried += r.retried;
            total.dead += r.dead;
            at += Duration::from_secs(3600);
        }
        assert_eq!((total.retried, total.dead), (4, 2), "{total:?}");
        let letters = store.dead_letters().await.unwrap();
        assert_eq!(letters.len(), 2, "{letters:?}");
        assert!(
            letters
                .iter()
                .all(|l| l.device_key.starts_with("ticket:") && l.reason.starts_with("webhook open: "))
        );
        assert_eq!(store.delivery_counts().await.unwrap(), (1, 0, 2));
    }

    #[tokio::test]
    async fn ups_on_battery_from_reported_attributes_opens_and_resolves() {
        use groundtruth_proto::v1::{DeviceIdentity, DeviceReport};
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.db")).await.unwrap();
        let batch = |seq: u64, state: &str| {
            crate::store::testdb::batch(
                "a1",
                "",
                seq,
                vec![DeviceReport {
                    identity: Some(DeviceIdentity {
                        serial_number: "GTUPS000001".into(),
                        endpoint_key: "snmp://10.0.0.5".into(),
                        attributes: [("output_source".to_owned(), state.to_owned())].into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                }],
            )
        };
        let (url, got, _) = receiver("s3cret", 0).await;
        let s = settings(
            url,
            vec![Rule {
                name: "ups".into(),
                watch: Watch::UpsOnBattery,
            }],
        );
        let sinks = Sinks::new(&s).unwrap();
        let rules = Rules::builtin("DC1");
        let now = SystemTime::now();
        for (seq, state, opened, resolved) in [
            (1, "on_line", 0, 0),
            (2, "on_battery", 1, 0),
            (3, "on_battery", 0, 0),
            (4, "on_line", 0, 1),
        ] {
            let b = batch(seq, state);
            store.commit_batch(&b).await.unwrap();
            store.record_attributes(&b).await.unwrap();
            let r = evaluate(&store, &rules, &s, now).await.unwrap();
            assert_eq!((r.opened, r.resolved), (opened, resolved), "{state}: {r:?}");
        }
        deliver(&store, &sinks, &s, now).await.unwrap();
        let got = got.lock().unwrap().clone();
        assert_eq!(got.len(), 2);
        let open: serde_json::Value = serde_json::from_str(&got[0].2).unwrap();
        assert!(
            open["ticket"]["summary"]
                .as_str()
                .unwrap()
                .starts_with("UPS serial:GTUPS000001 is on battery (output_source = on_battery"),
            "{open}"
        );
        let resolve: serde_json::Value = serde_json::from_str(&got[1].2).unwrap();
        assert!(
            resolve["ticket"]["summary"]
                .as_str()
                .unwrap()
                .starts_with("cleared: UPS serial:GTUPS000001 is back on on_line"),
            "{resolve}"
        );
    }

    #[test]
    fn rack_power_environment_and_missing_conditions() {
        let map = crate::sitemap::SiteMap::parse(
            "[[rack]]\nsite = \"DC1\"\nname = \"R1\"\npower_budget_w = 1000\n",
            "m.toml",
        )
        .unwrap();
        let mut rules = Rules::builtin("DC1");
        rules.site_map = map;
        let placed = |key: &str, watts: Option<f64>, seen: &str| DeviceRow {
            device_key: key.into(),
            serial: key.trim_start_matches("serial:").into(),
            power_watts: watts,
            last_seen: seen.into(),
            locations: vec![EvidenceRow {
                source: "LOCATION_SOURCE_REDFISH_PLACEMENT".into(),
                site: "DC1".into(),
                rack: "R1".into(),
                confidence: 0.9,
                ..Default::default()
            }],
            ..Default::default()
        };
        let devices = vec![
            placed("serial:PDU1", None, "2026-11-24T10:00:00Z"),
            placed("serial:SRV1", Some(500.0), "2026-11-24T09:00:00Z"),
        ];
        let outlet = |i: i64, w: f64| LatestReading {
            device_key: "serial:PDU1".into(),
            metric: "power".into(),
            unit: "W".into(),
            component_kind: "COMPONENT_KIND_OUTLET".into(),
            component_index: i,
            component_label: format!("A{i}"),
            value: w,
            observed_at: String::new(),
        };
        let temp = LatestReading {
            metric: "temperature".into(),
            unit: "Cel".into(),
            component_kind: "COMPONENT_KIND_SENSOR".into(),
            component_label: "Inlet".into(),
            value: 41.5,
            ..outlet(1, 0.0)
        };
        let readings = vec![outlet(1, 450.0), outlet(2, 400.0), temp];
        let attributes = Attributes::new();
        let facts = Facts {
            devices: &devices,
            readings: &readings,
            exceptions: &[],
            attributes: &attributes,
            rules: &rules,
        };
        let rules_cfg = vec![
            Rule {
                name: "rp".into(),
                watch: Watch::RackPower {
                    budget_watts: None,
                    threshold_percent: 80.0,
                },
            },
            Rule {
                name: "hot".into(),
                watch: Watch::Environment {
                    metric: "temperature".into(),
                    above: Some(35.0),
                    below: None,
                },
            },
            Rule {
                name: "gone".into(),
                watch: Watch::DeviceMissing {
                    after: Duration::from_secs(3600),
                },
            },
        ];
        let now = parse_ts("2026-11-24T10:30:00Z").unwrap();
        let found = conditions(&rules_cfg, &facts, now);
        let active: Vec<(&str, &str)> = found
            .iter()
            .filter(|f| f.active)
            .map(|f| (f.key.as_str(), f.summary.as_str()))
            .collect();
        // The rack's power is its PDU's outlets (850 W), not PDU + server: 85 % of 1000 W.
        assert_eq!(
            active,
            [
                (
                    "rp:rack_power:DC1/R1",
                    "rack DC1/R1 draws 850 W, 85 % of its 1000 W budget (threshold 80 %)"
                ),
                (
                    "hot:environment:temperature:serial:PDU1:COMPONENT_KIND_SENSOR:1",
                    "temperature 41.5 Cel on serial:PDU1 (sensor Inlet), above 35"
                ),
                (
                    "gone:missing:serial:SRV1",
                    "serial:SRV1 not seen since 2026-11-24T09:00:00Z (more than 1h)"
                ),
            ]
        );
        // Below the threshold the rack is observed, not active.
        let cooler = [outlet(1, 300.0), outlet(2, 400.0)];
        let facts = Facts {
            readings: &cooler,
            ..facts
        };
        let rp = conditions(&rules_cfg[..1], &facts, now);
        assert!(!rp[0].active && rp[0].summary.contains("700 W, 70 %"), "{rp:?}");
    }
}
