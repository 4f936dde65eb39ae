//! The collector's HTTP endpoint: `/metrics` (Prometheus text: the collector's own counters and
//! the newest reading of every device series, so facilities dashboards can scrape physical
//! reality directly), `/api/devices` and `/api/exceptions` (JSON), and `/healthz`.
//!
//! The operators' web UI ([`crate::web`]) is merged into the same router.
//!
//! `/api/*` requires `Authorization: Bearer <api_token>` when `collector.api_token` is set;
//! `/metrics` and `/healthz` stay open (bind them to loopback or a management network).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::ingest::grpc::IngestStats;
use crate::locate::{Located, locate};
use crate::reconcile::Rules;
use crate::store::{DeviceRow, LatestReading, Store};

/// What the endpoint needs.
#[derive(Debug, Clone)]
pub struct HttpState {
    pub store: Store,
    pub ingest: Arc<IngestStats>,
    pub rules: Rules,
    pub api_token: Option<String>,
    /// Nudged after every committed batch (the web UI's `/events`).
    pub events: tokio::sync::watch::Receiver<u64>,
    /// Whether a CMDB (NetBox) sync is configured (the device page says so).
    pub cmdb_configured: bool,
    /// This collector's leadership of the singleton jobs (`None`: not campaigning, as in tests).
    pub leader: Option<crate::lease::Leadership>,
}

/// Prometheus metric name and unit suffix for a reading's metric/unit.
#[must_use]
pub fn series_name(metric: &str, unit: &str) -> Option<&'static str> {
    Some(match (metric, unit) {
        ("power", "W") => "groundtruth_device_power_watts",
        ("energy", "kW.h") => "groundtruth_device_energy_kilowatt_hours",
        ("voltage", "V") => "groundtruth_device_voltage_volts",
        ("current", "A") => "groundtruth_device_current_amperes",
        ("frequency", "Hz") => "groundtruth_device_frequency_hertz",
        ("temperature", "Cel") => "groundtruth_device_temperature_celsius",
        ("humidity", "%RH") => "groundtruth_device_humidity_percent",
        ("fan_speed", "{rpm}") => "groundtruth_device_fan_speed_rpm",
        ("load", "%") => "groundtruth_device_load_percent",
        ("battery_charge", "%") => "groundtruth_device_battery_charge_percent",
        ("battery_runtime", "s") => "groundtruth_device_battery_runtime_seconds",
        ("uptime", "s") => "groundtruth_device_uptime_seconds",
        ("apparent_power", "VA") => "groundtruth_device_apparent_power_voltamperes",
        _ => return None,
    })
}

/// Escapes a Prometheus label value.
fn esc(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// Renders the exposition from the store's state and the counters.
#[must_use]
pub fn render(
    devices: &[DeviceRow],
    readings: &[LatestReading],
    exceptions: &HashMap<String, u64>,
    s: &HttpState,
) -> String {
    let mut out = String::new();
    let counter = |out: &mut String, name: &str, help: &str, v: u64| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}");
    };
    let i = &s.ingest;
    counter(
        &mut out,
        "groundtruth_collector_batches_committed_total",
        "Batches committed to the store.",
        i.committed.load(Ordering::Relaxed),
    );
    counter(
        &mut out,
        "groundtruth_collector_batches_duplicate_total",
        "Batches dropped as duplicates by (agent, epoch, seq).",
        i.duplicates.load(Ordering::Relaxed),
    );
    counter(
        &mut out,
        "groundtruth_collector_batches_rejected_total",
        "Malformed batches rejected.",
        i.rejected.load(Ordering::Relaxed),
    );
    counter(
        &mut out,
        "groundtruth_collector_store_errors_total",
        "Batches that could not be committed (retried by agents).",
        i.store_errors.load(Ordering::Relaxed),
    );
    let _ = writeln!(
        out,
        "# HELP groundtruth_collector_devices Devices in the store.\n# TYPE groundtruth_collector_devices gauge\ngroundtruth_collector_devices {}",
        devices.len()
    );
    let _ = writeln!(
        out,
        "# HELP groundtruth_collector_exceptions_open Open exceptions by kind.\n# TYPE groundtruth_collector_exceptions_open gauge"
    );
    let mut kinds: Vec<_> = exceptions.iter().collect();
    kinds.sort();
    for (k, n) in kinds {
        let _ = writeln!(
            out,
            "groundtruth_collector_exceptions_open{{kind=\"{}\"}} {n}",
            esc(k)
        );
    }

    // Device series, labelled with identity and location so a dashboard can sum by rack.
    let labels: HashMap<&str, String> = devices
        .iter()
        .map(|d| {
            let evidence = crate::reconcile::evidence_for(d, &s.rules);
            let (site, room, rack, u) = match locate(&evidence, &d.asset_tag, &s.rules.patterns) {
                Located::At(e) => {
                    let site = [
                        e.site.as_str(),
                        d.agent_site.as_str(),
                        s.rules.default_site.as_str(),
                    ]
                    .into_iter()
                    .find(|x| !x.is_empty())
                    .unwrap_or_default()
                    .to_owned();
                    let room = if e.room.is_empty() {
                        s.rules
                            .site_map
                            .rack(&site, &e.rack)
                            .map(|r| r.room.clone())
                            .unwrap_or_default()
                    } else {
                        e.room
                    };
                    (
                        site,
                        room,
                        e.rack,
                        e.u_position.map(|u| u.to_string()).unwrap_or_default(),
                    )
                }
                _ => Default::default(),
            };
            let l = format!(
                "device=\"{}\",serial=\"{}\",vendor=\"{}\",model=\"{}\",site=\"{}\",room=\"{}\",rack=\"{}\",u=\"{}\"",
                esc(&d.device_key),
                esc(&d.serial),
                esc(&d.vendor),
                esc(&d.model),
                esc(&site),
                esc(&room),
                esc(&rack),
                esc(&u)
            );
            (d.device_key.as_str(), l)
        })
        .collect();
    let mut by_name: Vec<(&str, String)> = Vec::new();
    for r in readings {
        let Some(base) = labels.get(r.device_key.as_str()) else {
            continue;
        };
        let comp = if r.component_kind.is_empty() {
            String::new()
        } else {
            format!(
                ",component=\"{}\",index=\"{}\",label=\"{}\"",
                esc(&r
                    .component_kind
                    .trim_start_matches("COMPONENT_KIND_")
                    .to_ascii_lowercase()),
                r.component_index,
                esc(&r.component_label)
            )
        };
        match series_name(&r.metric, &r.unit) {
            Some(name) => by_name.push((name, format!("{name}{{{base}{comp}}} {}", r.value))),
            None => by_name.push((
                "groundtruth_device_reading",
                format!(
                    "groundtruth_device_reading{{{base}{comp},metric=\"{}\",unit=\"{}\"}} {}",
                    esc(&r.metric),
                    esc(&r.unit),
                    r.value
                ),
            )),
        }
    }
    by_name.sort_by(|a, b| a.0.cmp(b.0));
    let mut last = "";
    for (name, line) in &by_name {
        if *name != last {
            let _ = writeln!(out, "# TYPE {name} gauge");
            last = name;
        }
        let _ = writeln!(out, "{line}");
    }
    out
}

pub(crate) fn authorized(s: &HttpState, headers: &HeaderMap) -> bool {
    let Some(token) = &s.api_token else { return true };
    let given = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    token_matches(given, token)
}

/// Compares a presented token with the configured one (constant-time enough for a token
/// compare: length first, then every byte).
pub(crate) fn token_matches(given: &str, token: &str) -> bool {
    given.len() == token.len()
        && given
            .bytes()
            .zip(token.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

fn internal(e: &dyn std::fmt::Display) -> Response {
    tracing::error!(error = %e, "HTTP request failed on the store.");
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        "store error; see the collector log\n",
    )
        .into_response()
}

async fn metrics(State(s): State<Arc<HttpState>>) -> Response {
    let devices = match s.store.devices().await {
        Ok(d) => d,
        Err(e) => return internal(&e),
    };
    let readings = match s.store.latest_readings().await {
        Ok(r) => r,
        Err(e) => return internal(&e),
    };
    let exceptions = match s.store.open_exceptions().await {
        Ok(x) => x.into_iter().fold(HashMap::new(), |mut m, e| {
            *m.entry(e.kind).or_insert(0u64) += 1;
            m
        }),
        Err(e) => return internal(&e),
    };
    let heights = match s.store.u_heights().await {
        Ok(h) => h,
        Err(e) => return internal(&e),
    };
    let inv = crate::web::render::inventory(&devices, &readings, &heights, &s.rules);
    let power = crate::power::compute(&inv, &readings, &s.rules);
    let mut text = render(&devices, &readings, &exceptions, &s);
    text.push_str(&render_power(&power));
    if let Some(l) = &s.leader {
        text.push_str(&format!(
            "# HELP groundtruth_collector_leader 1 while this collector runs the singleton jobs (ITSM, KPI history, compaction, power publishing).\n# TYPE groundtruth_collector_leader gauge\ngroundtruth_collector_leader {}\n",
            u8::from(l.held())
        ));
    }
    match crate::kpi::current_with(&s.store, &s.rules, crate::kpi::stale_after(), &devices).await {
        Ok(k) => text.push_str(&crate::kpi::exposition(&k)),
        Err(e) => return internal(&e),
    }
    text.into_response()
}

/// Rack, room and outlet power gauges for facilities dashboards.
#[must_use]
pub fn render_power(v: &crate::power::PowerView) -> String {
    let source = |s: crate::power::Source| {
        serde_json::to_value(s)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default()
    };
    let mut out = String::from(
        "# HELP groundtruth_rack_power_watts Rack total: measured PDU inlets, else the sum of its devices (source label).\n# TYPE groundtruth_rack_power_watts gauge\n",
    );
    for r in &v.racks {
        let _ = writeln!(
            out,
            "groundtruth_rack_power_watts{{site=\"{}\",room=\"{}\",rack=\"{}\",source=\"{}\"}} {}",
            esc(&r.site),
            esc(&r.room),
            esc(&r.rack),
            source(r.source),
            r.watts
        );
    }
    out.push_str(
        "# HELP groundtruth_room_power_watts Room total: the sum of its racks.\n# TYPE groundtruth_room_power_watts gauge\n",
    );
    for r in &v.rooms {
        let _ = writeln!(
            out,
            "groundtruth_room_power_watts{{site=\"{}\",room=\"{}\",source=\"{}\"}} {}",
            esc(&r.site),
            esc(&r.room),
            source(r.source),
            r.watts
        );
    }
    out.push_str(
        "# HELP groundtruth_outlet_power_watts PDU outlet power with the device the site map says it feeds.\n# TYPE groundtruth_outlet_power_watts gauge\n",
    );
    for r in &v.racks {
        for o in &r.outlets {
            let _ = writeln!(
                out,
                "groundtruth_outlet_power_watts{{pdu=\"{}\",outlet=\"{}\",site=\"{}\",rack=\"{}\",u=\"{}\",device=\"{}\"}} {}",
                esc(&o.pdu),
                o.outlet,
                esc(&o.site),
                esc(&o.rack),
                o.u,
                esc(o.device.as_deref().unwrap_or_default()),
                o.watts
            );
        }
    }
    out
}

async fn api_devices(State(s): State<Arc<HttpState>>, headers: HeaderMap) -> Response {
    if !authorized(&s, &headers) {
        return (StatusCode::UNAUTHORIZED, "missing or wrong bearer token\n").into_response();
    }
    match s.store.devices().await {
        Ok(d) => axum::Json(d).into_response(),
        Err(e) => internal(&e),
    }
}

async fn api_exceptions(State(s): State<Arc<HttpState>>, headers: HeaderMap) -> Response {
    if !authorized(&s, &headers) {
        return (StatusCode::UNAUTHORIZED, "missing or wrong bearer token\n").into_response();
    }
    match s.store.open_exceptions().await {
        Ok(x) => axum::Json(x).into_response(),
        Err(e) => internal(&e),
    }
}

/// Body of the exception actions (`POST /api/exceptions/{id}/{accept|ignore|pin}`, `POST
/// /api/pins`, `POST /api/pins/remove`, `POST /api/ignores/remove`).
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ActionBody {
    /// Who takes the action (recorded in the audit trail).
    actor: String,
    #[serde(default)]
    note: String,
    /// `pin`: the location; `/api/pins*`: the device; `/api/ignores/remove`: device and kind.
    #[serde(default)]
    device_key: String,
    #[serde(default)]
    kind: String,
    #[serde(default, flatten)]
    pin: Option<crate::store::Pin>,
}

async fn api_exception_action(
    State(s): State<Arc<HttpState>>,
    axum::extract::Path((id, action)): axum::extract::Path<(i64, String)>,
    headers: HeaderMap,
    body: Result<axum::Json<ActionBody>, axum::extract::rejection::JsonRejection>,
) -> Response {
    if !authorized(&s, &headers) {
        return (StatusCode::UNAUTHORIZED, "missing or wrong bearer token\n").into_response();
    }
    let b = match body {
        Ok(axum::Json(b)) => b,
        Err(e) => return (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response(),
    };
    let done = match action.as_str() {
        "accept" => s.store.accept_exception(id, &b.actor, &b.note).await,
        "ignore" => s.store.ignore_exception(id, &b.actor, &b.note).await,
        "pin" => match &b.pin {
            Some(pin) => s.store.pin_exception(id, pin, &b.actor, &b.note).await,
            None => return (StatusCode::BAD_REQUEST, "pin needs site and rack\n").into_response(),
        },
        _ => {
            return (StatusCode::NOT_FOUND, "unknown action (accept, ignore or pin)\n").into_response();
        }
    };
    action_result(done, &format!("no open exception {id}"), || {
        tracing::info!(id, action = %action, actor = %b.actor, "Exception action taken through the API.");
    })
}

async fn api_pin(
    s: Arc<HttpState>,
    op: &str,
    headers: HeaderMap,
    body: Result<axum::Json<ActionBody>, axum::extract::rejection::JsonRejection>,
) -> Response {
    if !authorized(&s, &headers) {
        return (StatusCode::UNAUTHORIZED, "missing or wrong bearer token\n").into_response();
    }
    let b = match body {
        Ok(axum::Json(b)) if !b.device_key.is_empty() => b,
        Ok(_) => return (StatusCode::BAD_REQUEST, "device_key is required\n").into_response(),
        Err(e) => return (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response(),
    };
    let done = match (op, &b.pin) {
        ("pins/add", Some(pin)) => s
            .store
            .pin_device(&b.device_key, pin, &b.actor, &b.note)
            .await
            .map(|()| true),
        ("pins/add", None) => return (StatusCode::BAD_REQUEST, "pin needs site and rack\n").into_response(),
        ("pins/remove", _) => s.store.unpin(&b.device_key, &b.actor, &b.note).await,
        ("ignores/remove", _) => s.store.unignore(&b.device_key, &b.kind, &b.actor, &b.note).await,
        _ => return StatusCode::NOT_FOUND.into_response(),
    };
    action_result(done, &format!("nothing to remove for {}", b.device_key), || {
        tracing::info!(op = %op, device = %b.device_key, actor = %b.actor, "Location/ignore action taken through the API.");
    })
}

fn action_result(
    done: Result<bool, crate::store::StoreError>,
    missing: &str,
    log: impl FnOnce(),
) -> Response {
    match done {
        Ok(true) => {
            log();
            axum::Json(serde_json::json!({"ok": true})).into_response()
        }
        Ok(false) => (StatusCode::NOT_FOUND, format!("{missing}\n")).into_response(),
        Err(e @ crate::store::StoreError::Refused(_)) => {
            (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response()
        }
        Err(e) => internal(&e),
    }
}

async fn api_audit(
    State(s): State<Arc<HttpState>>,
    headers: HeaderMap,
    axum::extract::RawQuery(q): axum::extract::RawQuery,
) -> Response {
    if !authorized(&s, &headers) {
        return (StatusCode::UNAUTHORIZED, "missing or wrong bearer token\n").into_response();
    }
    let q = q.unwrap_or_default();
    let device = crate::web::form_field(&q, "device");
    let limit = crate::web::form_field(&q, "limit")
        .and_then(|l| l.parse::<i64>().ok())
        .unwrap_or(200)
        .clamp(1, 10_000);
    match s.store.audit_trail(device.as_deref(), limit).await {
        Ok(x) => axum::Json(x).into_response(),
        Err(e) => internal(&e),
    }
}

/// The router (exposed for tests).
pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/api/devices", get(api_devices))
        .route("/api/exceptions", get(api_exceptions))
        .route("/api/exceptions/audit", get(api_audit))
        .route(
            "/api/exceptions/{id}/{action}",
            axum::routing::post(api_exception_action),
        )
        .route(
            "/api/pins/add",
            axum::routing::post(|State(s), h, b| api_pin(s, "pins/add", h, b)),
        )
        .route(
            "/api/pins/remove",
            axum::routing::post(|State(s), h, b| api_pin(s, "pins/remove", h, b)),
        )
        .route(
            "/api/ignores/remove",
            axum::routing::post(|State(s), h, b| api_pin(s, "ignores/remove", h, b)),
        )
        .merge(crate::web::routes())
        .merge(crate::context::routes())
        .merge(crate::kpi::routes())
        .merge(crate::itsm::routes())
        .with_state(Arc::new(state))
}

/// Serves until the task is dropped.
///
/// # Errors
/// If the address cannot be bound.
pub async fn serve(listen: SocketAddr, state: HttpState) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    tracing::info!(listen = %listen, "Serving the web UI, /metrics, /api and /healthz.");
    axum::serve(listener, router(state)).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::EvidenceRow;

    #[test]
    fn device_series_carry_identity_and_location_labels() {
        let dir = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let store = rt.block_on(Store::open(&dir.path().join("s.db"))).unwrap();
        let state = HttpState {
            store,
            ingest: Arc::default(),
            rules: Rules::builtin("DC1"),
            api_token: None,
            events: tokio::sync::watch::channel(0).1,
            cmdb_configured: false,
            leader: None,
        };
        let devices = vec![DeviceRow {
            device_key: "serial:SN\"1".into(),
            serial: "SN\"1".into(),
            vendor: "Dell".into(),
            locations: vec![EvidenceRow {
                source: "LOCATION_SOURCE_REDFISH_PLACEMENT".into(),
                rack: "R07".into(),
                u_position: Some(12),
                ..Default::default()
            }],
            ..Default::default()
        }];
        let readings = vec![
            LatestReading {
                device_key: "serial:SN\"1".into(),
                metric: "power".into(),
                unit: "W".into(),
                component_kind: String::new(),
                component_index: 0,
                component_label: String::new(),
                value: 412.0,
                observed_at: String::new(),
            },
            LatestReading {
                device_key: "serial:SN\"1".into(),
                metric: "power".into(),
                unit: "W".into(),
                component_kind: "COMPONENT_KIND_PSU".into(),
                component_index: 2,
                component_label: "PS2".into(),
                value: 207.0,
                observed_at: String::new(),
            },
        ];
        let text = render(
            &devices,
            &readings,
            &HashMap::from([("no_location".to_owned(), 3)]),
            &state,
        );
        assert!(text.contains("groundtruth_device_power_watts{device=\"serial:SN\\\"1\",serial=\"SN\\\"1\",vendor=\"Dell\",model=\"\",site=\"DC1\",room=\"\",rack=\"R07\",u=\"12\"} 412"), "{text}");
        assert!(
            text.contains(",component=\"psu\",index=\"2\",label=\"PS2\"} 207"),
            "{text}"
        );
        assert_eq!(
            text.matches("# TYPE groundtruth_device_power_watts gauge")
                .count(),
            1
        );
        assert!(text.contains("groundtruth_collector_exceptions_open{kind=\"no_location\"} 3"));
    }

    #[test]
    fn token_check() {
        let dir = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let store = rt.block_on(Store::open(&dir.path().join("s.db"))).unwrap();
        let s = HttpState {
            store,
            ingest: Arc::default(),
            rules: Rules::builtin(""),
            api_token: Some("t0ken".into()),
            events: tokio::sync::watch::channel(0).1,
            cmdb_configured: false,
            leader: None,
        };
        let mut h = HeaderMap::new();
        assert!(!authorized(&s, &h));
        h.insert("authorization", "Bearer t0ken".parse().unwrap());
        assert!(authorized(&s, &h));
        h.insert("authorization", "Bearer t0kem".parse().unwrap());
        assert!(!authorized(&s, &h));
    }
}
