//! The physical-context API: for one host (by serial, MAC, hostname or CMDB id), where it is
//! (site/room/rack/U), which PDU outlets feed it and the inlets, feeds and circuits behind them
//! (from the site map's `[[outlet]]`/`[[inlet]]` tables), the hosts that share its rack, a PDU
//! or a circuit, and its current power. A virtualization platform or a scheduler asks this
//! before placing two replicas.
//!
//! `GET /api/context?serial=…|mac=…|hostname=…|cmdb_id=…` (exactly one), bearer token as for
//! the rest of `/api`. The OpenAPI document of every `/api` route is `collector/openapi.json`,
//! served at `/api/openapi.json`.
//!
//! Everything here is computed from the store's current state and the site map on each request:
//! [`build`] is a pure function of a [`Snapshot`] so it is unit-tested without a server.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use axum::Router;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;

use crate::http::HttpState;
use crate::locate::{Located, locate};
use crate::reconcile::{Rules, evidence_for};
use crate::store::{DeviceRow, LatestReading};

/// The OpenAPI 3 document of the collector's `/api` routes.
pub const OPENAPI: &str = include_str!("../openapi.json");

/// How the caller names the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Query {
    Serial(String),
    Mac(String),
    Hostname(String),
    CmdbId(String),
}

impl Query {
    /// Parses a query string with exactly one of `serial`, `mac`, `hostname`, `cmdb_id`.
    ///
    /// # Errors
    /// A message for the caller naming what is wrong.
    pub fn parse(raw: Option<&str>) -> Result<Self, String> {
        let mut found = Vec::new();
        for pair in raw.unwrap_or_default().split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let v = crate::web::form_decode(v).trim().to_owned();
            if v.is_empty() {
                return Err(format!("parameter {k:?} is empty"));
            }
            found.push(match k {
                "serial" => Self::Serial(v),
                "mac" => Self::Mac(
                    groundtruth_proto::mac::canonical(&v)
                        .ok_or_else(|| format!("mac {v:?} is not a MAC address"))?,
                ),
                "hostname" => Self::Hostname(v),
                "cmdb_id" => Self::CmdbId(v),
                other => {
                    return Err(format!(
                        "unknown parameter {other:?}; use one of serial, mac, hostname, cmdb_id"
                    ));
                }
            });
        }
        match found.len() {
            1 => Ok(found.remove(0)),
            0 => Err("name the host with one of serial=, mac=, hostname=, cmdb_id=".into()),
            _ => Err("give exactly one of serial=, mac=, hostname=, cmdb_id=".into()),
        }
    }

    fn describe(&self) -> String {
        match self {
            Self::Serial(v) => format!("serial {v}"),
            Self::Mac(v) => format!("MAC {v}"),
            Self::Hostname(v) => format!("hostname {v}"),
            Self::CmdbId(v) => format!("CMDB id {v}"),
        }
    }
}

/// What [`build`] works from: the store's state and the rules (site map, patterns).
#[derive(Debug, Clone, Copy)]
pub struct Snapshot<'a> {
    pub devices: &'a [DeviceRow],
    pub readings: &'a [LatestReading],
    pub heights: &'a HashMap<String, u32>,
    /// device key → CMDB id.
    pub cmdb_ids: &'a HashMap<String, String>,
    pub rules: &'a Rules,
}

/// Where a device is, as the location engine decides from all its evidence.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Placement {
    /// `located`, `conflict` (evidence disagrees; see `detail`) or `unknown`.
    pub status: &'static str,
    pub site: String,
    pub room: String,
    pub row: String,
    pub rack: String,
    pub u: Option<u32>,
    pub u_height: Option<u32>,
    /// The evidence source that decided (e.g. `REDFISH_PLACEMENT`, `SITE_MAP`).
    pub source: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

/// A host as it appears in a context answer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Host {
    /// The collector's key; absent for a device the site map lists but no agent reported.
    pub device_key: Option<String>,
    pub serial: String,
    pub hostname: String,
    pub vendor: String,
    pub model: String,
    pub cmdb_id: Option<String>,
    pub rack: String,
    pub u: Option<u32>,
    pub power_watts: Option<f64>,
}

/// A host sharing something with the asked one, and through what.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Neighbour {
    #[serde(flatten)]
    pub host: Host,
    /// What is shared: `rack WEB43`, `PDU 29347ZT536`, `circuit RPP-A/CB-12`.
    pub via: String,
}

/// Newest electrical readings of an outlet, inlet or phase.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Electrical {
    pub power_watts: Option<f64>,
    pub current_amps: Option<f64>,
    pub voltage_volts: Option<f64>,
    pub observed_at: Option<String>,
}

/// The inlet of a PDU and what feeds it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Inlet {
    pub inlet: u32,
    pub feed: String,
    pub circuit: String,
    #[serde(flatten)]
    pub readings: Electrical,
}

/// One PDU outlet feeding the host.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Outlet {
    pub pdu: Host,
    /// The outlet's number as the PDU numbers it (the site map's `outlet`).
    pub outlet: u32,
    #[serde(flatten)]
    pub readings: Electrical,
    pub inlet: Inlet,
}

/// The answer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Context {
    pub host: Host,
    pub location: Placement,
    /// The host's newest device-level power and when it was read.
    pub power: Electrical,
    pub outlets: Vec<Outlet>,
    /// Distinct feeds/circuits behind the host's outlets (`feed`/`circuit` empty when unknown).
    pub circuits: Vec<Circuit>,
    pub shares_rack: Vec<Neighbour>,
    pub shares_pdu: Vec<Neighbour>,
    pub shares_circuit: Vec<Neighbour>,
    /// When the host is itself a PDU: its listed outlets and what is plugged into them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub serves: Vec<Neighbour>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Circuit {
    pub feed: String,
    pub circuit: String,
}

/// Why no context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Miss {
    NotFound(String),
    Ambiguous(String, Vec<String>),
}

fn eq(a: &str, b: &str) -> bool {
    a.trim().eq_ignore_ascii_case(b.trim())
}

/// The placement of one device (what the location engine decides; site falls back to the
/// agent's, then the default, as for the CMDB).
#[must_use]
pub fn placement(d: &DeviceRow, rules: &Rules, heights: &HashMap<String, u32>) -> Placement {
    let evidence = evidence_for(d, rules);
    match locate(&evidence, &d.asset_tag, &rules.patterns) {
        Located::At(e) => Placement {
            status: "located",
            site: [
                e.site.as_str(),
                d.agent_site.as_str(),
                rules.default_site.as_str(),
            ]
            .into_iter()
            .find(|s| !s.is_empty())
            .unwrap_or_default()
            .to_owned(),
            room: e.room,
            row: e.row,
            rack: e.rack,
            u: e.u_position,
            u_height: heights.get(&d.device_key).copied(),
            source: e.source.trim_start_matches("LOCATION_SOURCE_").to_owned(),
            detail: String::new(),
        },
        Located::Conflict { detail } => Placement {
            status: "conflict",
            detail,
            ..Placement::default()
        },
        Located::Unknown => Placement {
            status: "unknown",
            ..Placement::default()
        },
    }
}

/// Finds the one device a query names.
///
/// # Errors
/// Not found, or several devices answer to it (their keys listed).
pub fn find<'a>(snap: &Snapshot<'a>, q: &Query) -> Result<&'a DeviceRow, Miss> {
    let hits: Vec<&DeviceRow> = match q {
        Query::Serial(s) => {
            let norm = crate::normalize::serial(s).unwrap_or_else(|| s.clone());
            snap.devices
                .iter()
                .filter(|d| !d.serial.is_empty() && (eq(&d.serial, s) || eq(&d.serial, &norm)))
                .collect()
        }
        Query::Mac(m) => snap
            .devices
            .iter()
            .filter(|d| d.macs.iter().any(|(a, _, _)| a == m))
            .collect(),
        Query::Hostname(h) => snap
            .devices
            .iter()
            .filter(|d| {
                !d.hostname.is_empty()
                    && (eq(&d.hostname, h)
                        // A short name matches an FQDN's first label.
                        || d.hostname.split('.').next().is_some_and(|first| eq(first, h)))
            })
            .collect(),
        Query::CmdbId(id) => snap
            .devices
            .iter()
            .filter(|d| snap.cmdb_ids.get(&d.device_key).is_some_and(|c| c == id))
            .collect(),
    };
    match hits.as_slice() {
        [] => Err(Miss::NotFound(q.describe())),
        [one] => Ok(one),
        many => Err(Miss::Ambiguous(
            q.describe(),
            many.iter().map(|d| d.device_key.clone()).collect(),
        )),
    }
}

struct Index<'a> {
    snap: Snapshot<'a>,
    by_serial: HashMap<String, &'a DeviceRow>,
    placements: HashMap<&'a str, Placement>,
    readings: HashMap<&'a str, Vec<&'a LatestReading>>,
}

impl<'a> Index<'a> {
    fn new(snap: Snapshot<'a>) -> Self {
        let mut readings: HashMap<&str, Vec<&LatestReading>> = HashMap::new();
        for r in snap.readings {
            readings.entry(r.device_key.as_str()).or_default().push(r);
        }
        Self {
            snap,
            by_serial: snap
                .devices
                .iter()
                .filter(|d| !d.serial.is_empty())
                .map(|d| (d.serial.to_ascii_uppercase(), d))
                .collect(),
            placements: snap
                .devices
                .iter()
                .map(|d| (d.device_key.as_str(), placement(d, snap.rules, snap.heights)))
                .collect(),
            readings,
        }
    }

    fn device_by_serial(&self, serial: &str) -> Option<&'a DeviceRow> {
        let s = serial.trim().to_ascii_uppercase();
        self.by_serial
            .get(&s)
            .copied()
            .or_else(|| crate::normalize::serial(&s).and_then(|n| self.by_serial.get(&n).copied()))
    }

    fn host(&self, d: &DeviceRow) -> Host {
        let p = self.placements.get(d.device_key.as_str());
        Host {
            device_key: Some(d.device_key.clone()),
            serial: d.serial.clone(),
            hostname: d.hostname.clone(),
            vendor: d.vendor.clone(),
            model: d.model.clone(),
            cmdb_id: self.snap.cmdb_ids.get(&d.device_key).cloned(),
            rack: p.map(|p| p.rack.clone()).unwrap_or_default(),
            u: p.and_then(|p| p.u),
            power_watts: d.power_watts,
        }
    }

    /// The stored devices placed where an outlet's fed position is (the U it names inside their
    /// U range).
    fn fed_by(&self, o: &crate::sitemap::OutletEntry) -> Vec<&'a DeviceRow> {
        self.snap
            .devices
            .iter()
            .filter(|d| {
                self.placements.get(d.device_key.as_str()).is_some_and(|p| {
                    let h = self.snap.heights.get(&d.device_key).copied().unwrap_or(1).max(1);
                    p.status == "located"
                        && eq(&p.site, &o.site)
                        && eq(&p.rack, &o.rack)
                        && p.u.is_some_and(|u| (u..u + h).contains(&o.u))
                })
            })
            .collect()
    }

    /// A host by serial: the stored device, or just the serial the site map names.
    fn host_by_serial(&self, serial: &str) -> Host {
        self.device_by_serial(serial).map_or_else(
            || Host {
                device_key: None,
                serial: serial.to_owned(),
                hostname: String::new(),
                vendor: String::new(),
                model: String::new(),
                cmdb_id: None,
                rack: String::new(),
                u: None,
                power_watts: None,
            },
            |d| self.host(d),
        )
    }

    /// Newest readings of a device's component (`kind` e.g. `COMPONENT_KIND_OUTLET`) matched by
    /// label or index.
    fn electrical(&self, device_key: &str, matches: impl Fn(&LatestReading) -> bool) -> Electrical {
        let mut e = Electrical::default();
        for r in self.readings.get(device_key).into_iter().flatten() {
            if !matches(r) {
                continue;
            }
            let slot = match (r.metric.as_str(), r.unit.as_str()) {
                ("power", "W") => &mut e.power_watts,
                ("current", "A") => &mut e.current_amps,
                ("voltage", "V") => &mut e.voltage_volts,
                _ => continue,
            };
            *slot = Some(r.value);
            if e.observed_at
                .as_deref()
                .is_none_or(|t| t < r.observed_at.as_str())
            {
                e.observed_at = Some(r.observed_at.clone());
            }
        }
        e
    }

    fn circuit_of(&self, pdu: &str, inlet: u32) -> Circuit {
        self.snap.rules.site_map.inlet(pdu, inlet).map_or_else(
            || Circuit {
                feed: String::new(),
                circuit: String::new(),
            },
            |n| Circuit {
                feed: n.feed.clone(),
                circuit: n.circuit.clone(),
            },
        )
    }
}

/// The circuit's name for sharing: the circuit when the map names one, else the feed.
fn circuit_label(c: &Circuit) -> Option<String> {
    if !c.circuit.is_empty() {
        Some(format!("circuit {}", c.circuit))
    } else if !c.feed.is_empty() {
        Some(format!("feed {}", c.feed))
    } else {
        None
    }
}

/// Builds the context of one device.
#[must_use]
pub fn build(snap: Snapshot<'_>, d: &DeviceRow) -> Context {
    let ix = Index::new(snap);
    let map = &snap.rules.site_map;
    let location = ix
        .placements
        .get(d.device_key.as_str())
        .cloned()
        .unwrap_or_default();
    let power = ix.electrical(&d.device_key, |r| r.component_kind.is_empty());

    // The outlets feeding the U range the device occupies (the site map lists outlets by the
    // position of what they feed).
    let my_outlets: Vec<&crate::sitemap::OutletEntry> = match (location.status, location.u) {
        ("located", Some(u)) => {
            let h = snap.heights.get(&d.device_key).copied().unwrap_or(1).max(1);
            map.outlets_at(&location.site, &location.rack, u, u + h - 1)
        }
        _ => Vec::new(),
    };
    let outlets: Vec<Outlet> = my_outlets
        .iter()
        .map(|o| {
            let pdu_dev = ix.device_by_serial(&o.pdu);
            let readings = pdu_dev.map_or_else(Electrical::default, |p| {
                ix.electrical(&p.device_key, |r| {
                    r.component_kind == "COMPONENT_KIND_OUTLET" && r.component_index == i64::from(o.outlet)
                })
            });
            let inlet_readings = pdu_dev.map_or_else(Electrical::default, |p| {
                ix.electrical(&p.device_key, |r| {
                    r.component_kind == "COMPONENT_KIND_INLET" && r.component_index == i64::from(o.inlet)
                })
            });
            let c = ix.circuit_of(&o.pdu, o.inlet);
            Outlet {
                pdu: ix.host_by_serial(&o.pdu),
                outlet: o.outlet,
                readings,
                inlet: Inlet {
                    inlet: o.inlet,
                    feed: c.feed,
                    circuit: c.circuit,
                    readings: inlet_readings,
                },
            }
        })
        .collect();
    let mut circuits: Vec<Circuit> = my_outlets
        .iter()
        .map(|o| ix.circuit_of(&o.pdu, o.inlet))
        .filter(|c| !c.feed.is_empty() || !c.circuit.is_empty())
        .collect();
    circuits.sort();
    circuits.dedup();

    // Hosts in the same rack (located there by the engine), ordered by U then key.
    let mut shares_rack: Vec<Neighbour> = Vec::new();
    if location.status == "located" && !location.rack.is_empty() {
        for other in snap.devices {
            if other.device_key == d.device_key {
                continue;
            }
            let Some(p) = ix.placements.get(other.device_key.as_str()) else {
                continue;
            };
            if p.status == "located" && eq(&p.rack, &location.rack) && eq(&p.site, &location.site) {
                shares_rack.push(Neighbour {
                    host: ix.host(other),
                    via: format!("rack {}", location.rack),
                });
            }
        }
        shares_rack.sort_by(|a, b| {
            a.host
                .u
                .cmp(&b.host.u)
                .then(a.host.device_key.cmp(&b.host.device_key))
        });
    }
    // Hosts on the same PDUs and on the same circuits, each listed once per thing shared.
    let mut pdu_shares: BTreeMap<(String, String), Neighbour> = BTreeMap::new();
    let mut circuit_shares: BTreeMap<(String, String), Neighbour> = BTreeMap::new();
    let my_circuits: Vec<String> = circuits.iter().filter_map(circuit_label).collect();
    for o in map.outlets() {
        let shares_pdu = my_outlets.iter().any(|m| eq(&m.pdu, &o.pdu));
        let circuit = circuit_label(&ix.circuit_of(&o.pdu, o.inlet)).filter(|l| my_circuits.contains(l));
        if !shares_pdu && circuit.is_none() {
            continue;
        }
        for other in ix.fed_by(o) {
            if other.device_key == d.device_key {
                continue;
            }
            if shares_pdu {
                let via = format!("PDU {}", o.pdu);
                pdu_shares
                    .entry((other.device_key.clone(), via.clone()))
                    .or_insert_with(|| Neighbour {
                        host: ix.host(other),
                        via,
                    });
            }
            if let Some(label) = &circuit {
                circuit_shares
                    .entry((other.device_key.clone(), label.clone()))
                    .or_insert_with(|| Neighbour {
                        host: ix.host(other),
                        via: label.clone(),
                    });
            }
        }
    }
    let serves = if d.serial.is_empty() {
        Vec::new()
    } else {
        map.outlets_on(&d.serial)
            .into_iter()
            .flat_map(|o| ix.fed_by(o).into_iter().map(move |other| (o.outlet, other)))
            .map(|(outlet, other)| Neighbour {
                host: ix.host(other),
                via: format!("outlet {outlet}"),
            })
            .collect()
    };
    Context {
        host: ix.host(d),
        location,
        power,
        outlets,
        circuits,
        shares_rack,
        shares_pdu: pdu_shares.into_values().collect(),
        shares_circuit: circuit_shares.into_values().collect(),
        serves,
    }
}

/// Serials asked per NetBox request when refreshing CMDB links.
const LINK_CHUNK: usize = 50;
/// Largest NetBox answer read when refreshing links.
const LINK_BODY_MAX: usize = 16 * 1024 * 1024;
/// Devices per page when listing the collector's sites in NetBox.
const LIST_PAGE: usize = 500;
/// NetBox device statuses that say the device is not expected to answer (not counted as
/// "in the CMDB, not seen").
const NOT_EXPECTED: [&str; 4] = ["planned", "inventory", "offline", "decommissioning"];

/// A read-only NetBox client for the KPI refreshes (capped answers, no redirects).
struct Reader {
    client: reqwest::Client,
    auth: String,
    base: String,
    shown: String,
}

impl Reader {
    fn new(nb: &crate::config::NetBoxSettings) -> Result<Self, String> {
        let shown = format!("NetBox {}", nb.url);
        crate::install_crypto_provider();
        let mut b = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(30))
            .redirect(reqwest::redirect::Policy::none())
            .danger_accept_invalid_certs(!nb.tls_verify);
        if let Some(path) = &nb.ca_file {
            let pem = std::fs::read(path).map_err(|e| format!("{shown}: ca_file {}: {e}", path.display()))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| format!("{shown}: ca_file {}: {e}", path.display()))?;
            for c in certs {
                b = b.add_root_certificate(c);
            }
        }
        let client = b.build().map_err(|e| format!("{shown}: {e}"))?;
        let scheme = if nb.token.trim().starts_with("nbt_") {
            "Bearer"
        } else {
            "Token"
        };
        Ok(Self {
            client,
            auth: format!("{scheme} {}", nb.token.trim()),
            base: nb.url.as_str().trim_end_matches('/').to_owned(),
            shown,
        })
    }

    /// GET `path` (under `/api/`) with `query`, as JSON.
    async fn get(&self, path: &str, query: &[(&str, &str)]) -> Result<serde_json::Value, String> {
        let shown = &self.shown;
        let mut url =
            url::Url::parse(&format!("{}/api/{path}", self.base)).map_err(|e| format!("{shown}: {e}"))?;
        {
            let mut q = url.query_pairs_mut();
            for (k, v) in query {
                q.append_pair(k, v);
            }
        }
        let mut resp = self
            .client
            .get(url)
            .header(header::AUTHORIZATION, &self.auth)
            .header(header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| format!("{shown}: {e}"))?;
        if !resp.status().is_success() {
            return Err(format!("{shown}: GET /api/{path} answered {}", resp.status()));
        }
        let mut body = Vec::new();
        while let Some(part) = resp.chunk().await.map_err(|e| format!("{shown}: {e}"))? {
            if body.len() + part.len() > LINK_BODY_MAX {
                return Err(format!(
                    "{shown}: GET /api/{path}: answer over {LINK_BODY_MAX} bytes"
                ));
            }
            body.extend_from_slice(&part);
        }
        serde_json::from_slice(&body).map_err(|e| format!("{shown}: GET /api/{path}: not JSON: {e}"))
    }

    /// Every object of a list endpoint (`limit`/`offset` pages of [`LIST_PAGE`]).
    async fn all(&self, path: &str, query: &[(&str, &str)]) -> Result<Vec<serde_json::Value>, String> {
        let mut out = Vec::new();
        let limit = LIST_PAGE.to_string();
        loop {
            let offset = out.len().to_string();
            let mut q = query.to_vec();
            q.extend([("limit", limit.as_str()), ("offset", offset.as_str())]);
            let page = self.get(path, &q).await?;
            let results = page["results"].as_array().cloned().unwrap_or_default();
            let n = results.len();
            out.extend(results);
            let total = page["count"].as_u64().unwrap_or(0);
            if n == 0 || out.len() as u64 >= total {
                return Ok(out);
            }
        }
    }
}

/// Refreshes the `cmdb_links` table (device key → NetBox device id) from NetBox, matching by
/// serial as the sync does; a serial held by several NetBox devices links none of them (the sync
/// raises `duplicate_serial_in_cmdb` for it). Returns (linked, unlinked).
///
/// # Errors
/// A message naming NetBox and the cause; the table is left as it was for unread chunks.
pub async fn refresh_cmdb_links(
    store: &crate::store::Store,
    nb: &crate::config::NetBoxSettings,
) -> Result<(usize, usize), String> {
    let reader = Reader::new(nb)?;
    let devices = store.devices().await.map_err(|e| e.to_string())?;
    let with_serial: Vec<&DeviceRow> = devices.iter().filter(|d| !d.serial.is_empty()).collect();
    let (mut linked, mut unlinked) = (0, 0);
    for chunk in with_serial.chunks(LINK_CHUNK) {
        let mut q: Vec<(&str, &str)> = chunk.iter().map(|d| ("serial", d.serial.as_str())).collect();
        q.push(("limit", "1000"));
        let v = reader.get("dcim/devices/", &q).await?;
        let mut ids: HashMap<String, Vec<String>> = HashMap::new();
        for r in v["results"].as_array().into_iter().flatten() {
            let (Some(serial), Some(id)) = (r["serial"].as_str(), r["id"].as_u64()) else {
                continue;
            };
            if let Some(s) = crate::normalize::serial(serial) {
                ids.entry(s).or_default().push(id.to_string());
            }
        }
        for d in chunk {
            match ids.get(&d.serial.to_ascii_uppercase()).map(Vec::as_slice) {
                Some([one]) => {
                    store
                        .link_cmdb(&d.device_key, one)
                        .await
                        .map_err(|e| e.to_string())?;
                    linked += 1;
                }
                _ => {
                    if store
                        .unlink_cmdb(&d.device_key)
                        .await
                        .map_err(|e| e.to_string())?
                    {
                        unlinked += 1;
                    }
                }
            }
        }
    }
    Ok((linked, unlinked))
}

/// The sites the collector manages: each stored device's site as the location engine decides it
/// (its evidence, else its agent's site, else `default_site`), plus every agent's site.
#[must_use]
pub fn managed_sites(devices: &[DeviceRow], rules: &Rules) -> Vec<String> {
    let heights = HashMap::new();
    let mut sites: Vec<String> = Vec::new();
    for d in devices {
        let p = placement(d, rules, &heights);
        let site = [
            p.site.as_str(),
            d.agent_site.as_str(),
            rules.default_site.as_str(),
        ]
        .into_iter()
        .map(str::trim)
        .find(|s| !s.is_empty())
        .unwrap_or_default();
        for s in [site, d.agent_site.trim()] {
            if !s.is_empty() && !sites.iter().any(|x| x.eq_ignore_ascii_case(s)) {
                sites.push(s.to_owned());
            }
        }
    }
    sites.sort();
    sites
}

/// A NetBox device in the collector's sites that no stored device matches (KPI
/// `cmdb_not_seen`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NotSeen {
    pub cmdb_id: String,
    pub site: String,
    pub name: String,
    pub serial: String,
}

/// Finds the NetBox devices in the collector's sites ([`managed_sites`], found in NetBox by slug,
/// then by name) that match no device in the store by any of the sync's keys — serial
/// (normalised), asset tag, a MAC object on one of its interfaces, or name = hostname (case
/// ignored) — leaving out devices whose NetBox status says they are not expected to answer
/// (`planned`, `inventory`, `offline`, `decommissioning`). Replaces the `cmdb_not_seen` table
/// with them and returns them. Sites NetBox does not have contribute nothing; devices of other
/// sites are never read.
///
/// # Errors
/// A message naming NetBox and the cause; the table is left as it was.
pub async fn refresh_cmdb_not_seen(
    store: &crate::store::Store,
    nb: &crate::config::NetBoxSettings,
    rules: &Rules,
) -> Result<Vec<NotSeen>, String> {
    let reader = Reader::new(nb)?;
    let devices = store.devices().await.map_err(|e| e.to_string())?;
    let sites = managed_sites(&devices, rules);
    // NetBox site ids: by the slug the sync gives a site it creates, then by name.
    let mut site_ids: Vec<String> = Vec::new();
    let slugs: Vec<String> = sites.iter().map(|s| crate::cmdb::netbox::slugify(s)).collect();
    let mut missing: Vec<&String> = Vec::new();
    for (chunk, names) in slugs.chunks(LINK_CHUNK).zip(sites.chunks(LINK_CHUNK)) {
        let mut q: Vec<(&str, &str)> = chunk.iter().map(|s| ("slug", s.as_str())).collect();
        q.push(("fields", "id,name,slug"));
        let found = reader.all("dcim/sites/", &q).await?;
        for (slug, name) in chunk.iter().zip(names) {
            match found.iter().find(|x| x["slug"].as_str() == Some(slug.as_str())) {
                Some(x) => site_ids.extend(x["id"].as_u64().map(|i| i.to_string())),
                None => missing.push(name),
            }
        }
    }
    for chunk in missing.chunks(LINK_CHUNK) {
        let mut q: Vec<(&str, &str)> = chunk.iter().map(|s| ("name", s.as_str())).collect();
        q.push(("fields", "id,name,slug"));
        for x in reader.all("dcim/sites/", &q).await? {
            site_ids.extend(x["id"].as_u64().map(|i| i.to_string()));
        }
    }
    site_ids.sort();
    site_ids.dedup();

    let serials: std::collections::HashSet<String> = devices
        .iter()
        .filter_map(|d| crate::normalize::serial(&d.serial))
        .collect();
    let tags: std::collections::HashSet<String> = devices
        .iter()
        .map(|d| d.asset_tag.trim().to_owned())
        .filter(|t| !t.is_empty())
        .collect();
    let hostnames: std::collections::HashSet<String> = devices
        .iter()
        .map(|d| d.hostname.trim().to_lowercase())
        .filter(|h| !h.is_empty())
        .collect();
    let macs: std::collections::HashSet<String> = devices
        .iter()
        .flat_map(|d| {
            d.macs
                .iter()
                .filter_map(|(a, _, _)| crate::cmdb::netbox::mac_key(a))
        })
        .collect();

    let mut unmatched: Vec<NotSeen> = Vec::new();
    for chunk in site_ids.chunks(LINK_CHUNK) {
        let mut q: Vec<(&str, &str)> = chunk.iter().map(|s| ("site_id", s.as_str())).collect();
        q.push(("fields", "id,name,serial,asset_tag,status,site"));
        for x in reader.all("dcim/devices/", &q).await? {
            let status = x["status"]["value"]
                .as_str()
                .or_else(|| x["status"].as_str())
                .unwrap_or("");
            if NOT_EXPECTED.contains(&status) {
                continue;
            }
            let serial = x["serial"].as_str().unwrap_or("");
            let name = x["name"].as_str().unwrap_or("");
            let tag = x["asset_tag"].as_str().unwrap_or("").trim();
            let seen = crate::normalize::serial(serial).is_some_and(|s| serials.contains(&s))
                || (!tag.is_empty() && tags.contains(tag))
                || (!name.trim().is_empty() && hostnames.contains(&name.trim().to_lowercase()));
            if seen {
                continue;
            }
            let Some(id) = x["id"].as_u64() else { continue };
            unmatched.push(NotSeen {
                cmdb_id: id.to_string(),
                site: x["site"]["name"].as_str().unwrap_or("").to_owned(),
                name: name.to_owned(),
                serial: serial.to_owned(),
            });
        }
    }
    // MACs last, only for the devices nothing else matched.
    let mut matched_by_mac: std::collections::HashSet<String> = std::collections::HashSet::new();
    for chunk in unmatched.chunks(LINK_CHUNK) {
        let mut q: Vec<(&str, &str)> = chunk.iter().map(|n| ("device_id", n.cmdb_id.as_str())).collect();
        q.push(("fields", "id,mac_address,assigned_object"));
        for m in reader.all("dcim/mac-addresses/", &q).await? {
            let addr = m["mac_address"].as_str().and_then(crate::cmdb::netbox::mac_key);
            let dev = m["assigned_object"]["device"]["id"].as_u64();
            if let (Some(addr), Some(dev)) = (addr, dev)
                && macs.contains(&addr)
            {
                matched_by_mac.insert(dev.to_string());
            }
        }
    }
    unmatched.retain(|n| !matched_by_mac.contains(&n.cmdb_id));
    store
        .replace_cmdb_not_seen(&unmatched)
        .await
        .map_err(|e| e.to_string())?;
    Ok(unmatched)
}

fn problem(status: StatusCode, msg: &str) -> Response {
    (status, axum::Json(serde_json::json!({ "error": msg }))).into_response()
}

async fn api_context(
    State(s): State<Arc<HttpState>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    if !crate::http::authorized(&s, &headers) {
        return problem(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
    }
    let q = match Query::parse(raw.as_deref()) {
        Ok(q) => q,
        Err(e) => return problem(StatusCode::BAD_REQUEST, &e),
    };
    let loaded = async {
        Ok::<_, crate::store::StoreError>((
            s.store.devices().await?,
            s.store.latest_readings().await?,
            s.store.u_heights().await?,
            s.store.cmdb_links().await?,
        ))
    }
    .await;
    let (devices, readings, heights, links) = match loaded {
        Ok(x) => x,
        Err(e) => {
            tracing::error!(error = %e, "Physical-context request failed on the store.");
            return problem(
                StatusCode::INTERNAL_SERVER_ERROR,
                "store error; see the collector log",
            );
        }
    };
    let cmdb_ids: HashMap<String, String> = links.into_iter().collect();
    let snap = Snapshot {
        devices: &devices,
        readings: &readings,
        heights: &heights,
        cmdb_ids: &cmdb_ids,
        rules: &s.rules,
    };
    match find(&snap, &q) {
        Ok(d) => axum::Json(build(snap, d)).into_response(),
        Err(Miss::NotFound(what)) => problem(StatusCode::NOT_FOUND, &format!("no device known with {what}")),
        Err(Miss::Ambiguous(what, keys)) => problem(
            StatusCode::CONFLICT,
            &format!(
                "{} devices answer to {what}: {}; ask by serial",
                keys.len(),
                keys.join(", ")
            ),
        ),
    }
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

/// The context routes, merged into [`crate::http::router`].
pub fn routes() -> Router<Arc<HttpState>> {
    Router::new()
        .route("/api/context", get(api_context))
        .route("/api/openapi.json", get(openapi))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::EvidenceRow;

    const MAP: &str = r#"
[[rack]]
site = "WEBDC"
room = "35"
name = "WEB43"

[[rack]]
site = "WEBDC"
name = "WEB44"

[[device]]
serial = "TOWER1"
site = "WEBDC"
rack = "WEB43"
u = 20

# SRV1 (2U at U12): one cord on PDU1 outlet 1, one on PDU2 outlet 3 (inlet 2).
[[outlet]]
pdu = "PDU1"
outlet = 1
site = "WEBDC"
rack = "WEB43"
u = 12

[[outlet]]
pdu = "PDU2"
outlet = 3
site = "WEBDC"
rack = "WEB43"
u = 13
inlet = 2

[[outlet]]
pdu = "PDU1"
outlet = 2
site = "WEBDC"
rack = "WEB43"
u = 20

[[outlet]]
pdu = "PDU3"
outlet = 1
site = "WEBDC"
rack = "WEB44"
u = 5

[[inlet]]
pdu = "PDU1"
feed = "A"
circuit = "RPP-A/CB-12"

[[inlet]]
pdu = "PDU2"
inlet = 2
feed = "B"
circuit = "RPP-B/CB-03"

[[inlet]]
pdu = "PDU3"
feed = "B"
circuit = "RPP-B/CB-03"
"#;

    fn dev(serial: &str, host: &str, mac: &str, power: Option<f64>) -> DeviceRow {
        DeviceRow {
            device_key: format!("serial:{serial}"),
            serial: serial.into(),
            hostname: host.into(),
            macs: vec![(mac.into(), "eth0".into(), String::new())],
            power_watts: power,
            agent_site: "WEBDC".into(),
            ..Default::default()
        }
    }

    fn reading(
        key: &str,
        metric: &str,
        unit: &str,
        kind: &str,
        index: i64,
        label: &str,
        v: f64,
    ) -> LatestReading {
        LatestReading {
            device_key: key.into(),
            metric: metric.into(),
            unit: unit.into(),
            component_kind: kind.into(),
            component_index: index,
            component_label: label.into(),
            value: v,
            observed_at: "2026-11-24T10:00:00.000Z".into(),
        }
    }

    fn fixture() -> (Vec<DeviceRow>, Vec<LatestReading>, Rules) {
        let mut srv = dev("SRV1", "srv1.example.net", "aa:bb:cc:00:00:01", Some(344.0));
        srv.locations.push(EvidenceRow {
            source: "LOCATION_SOURCE_REDFISH_PLACEMENT".into(),
            rack: "WEB43".into(),
            u_position: Some(12),
            confidence: 0.9,
            ..Default::default()
        });
        let devices = vec![
            srv,
            dev("TOWER1", "tower1", "aa:bb:cc:00:00:02", Some(926.0)),
            dev("PDU1", "", "aa:bb:cc:00:00:03", Some(6438.0)),
            {
                let mut far = dev("FAR1", "far1", "aa:bb:cc:00:00:04", None);
                far.locations.push(EvidenceRow {
                    source: "LOCATION_SOURCE_REDFISH_PLACEMENT".into(),
                    rack: "WEB44".into(),
                    u_position: Some(5),
                    confidence: 0.9,
                    ..Default::default()
                });
                far
            },
            dev("DUP1", "twin", "aa:bb:cc:00:00:05", None),
            dev("DUP2", "twin", "aa:bb:cc:00:00:06", None),
        ];
        let readings = vec![
            reading("serial:SRV1", "power", "W", "", 0, "", 344.0),
            reading(
                "serial:PDU1",
                "power",
                "W",
                "COMPONENT_KIND_OUTLET",
                1,
                "A1",
                197.4,
            ),
            reading(
                "serial:PDU1",
                "current",
                "A",
                "COMPONENT_KIND_OUTLET",
                1,
                "A1",
                0.9,
            ),
            reading(
                "serial:PDU1",
                "power",
                "W",
                "COMPONENT_KIND_OUTLET",
                2,
                "A2",
                384.5,
            ),
            reading(
                "serial:PDU1",
                "power",
                "W",
                "COMPONENT_KIND_INLET",
                1,
                "Mains",
                6438.0,
            ),
        ];
        let mut rules = Rules::builtin("WEBDC");
        rules.site_map = crate::sitemap::SiteMap::parse(MAP, "map.toml").unwrap();
        (devices, readings, rules)
    }

    #[test]
    fn context_of_a_server_names_rack_outlets_circuits_and_neighbours() {
        let (devices, readings, rules) = fixture();
        let heights = HashMap::from([("serial:SRV1".to_owned(), 2)]);
        let ids = HashMap::from([("serial:SRV1".to_owned(), "1234".to_owned())]);
        let snap = Snapshot {
            devices: &devices,
            readings: &readings,
            heights: &heights,
            cmdb_ids: &ids,
            rules: &rules,
        };
        for q in [
            "serial=srv1",
            "mac=AA-BB-CC-00-00-01",
            "hostname=SRV1",
            "hostname=srv1.example.net",
            "cmdb_id=1234",
        ] {
            let d = find(&snap, &Query::parse(Some(q)).unwrap()).unwrap();
            assert_eq!(d.device_key, "serial:SRV1", "{q}");
        }
        let c = build(snap, &devices[0]);
        assert_eq!(
            (
                c.location.status,
                c.location.site.as_str(),
                c.location.room.as_str(),
                c.location.rack.as_str(),
                c.location.u,
                c.location.u_height,
                c.location.source.as_str()
            ),
            (
                "located",
                "WEBDC",
                "",
                "WEB43",
                Some(12),
                Some(2),
                "REDFISH_PLACEMENT"
            )
        );
        assert_eq!(c.host.cmdb_id.as_deref(), Some("1234"));
        assert_eq!(c.power.power_watts, Some(344.0));
        // Outlets: PDU1 A1 with its readings and inlet 1's feed, PDU2 outlet 3 (no agent reports
        // PDU2: no readings, no device key) on inlet 2.
        assert_eq!(c.outlets.len(), 2);
        let a1 = &c.outlets[0];
        assert_eq!(
            (
                a1.pdu.serial.as_str(),
                a1.outlet,
                a1.readings.power_watts,
                a1.readings.current_amps
            ),
            ("PDU1", 1, Some(197.4), Some(0.9))
        );
        assert_eq!(
            (
                a1.inlet.feed.as_str(),
                a1.inlet.circuit.as_str(),
                a1.inlet.readings.power_watts
            ),
            ("A", "RPP-A/CB-12", Some(6438.0))
        );
        let o3 = &c.outlets[1];
        assert_eq!(
            (o3.pdu.device_key.as_deref(), o3.readings.power_watts),
            (None, None)
        );
        assert_eq!(o3.inlet.circuit, "RPP-B/CB-03");
        assert_eq!(
            c.circuits,
            [
                Circuit {
                    feed: "A".into(),
                    circuit: "RPP-A/CB-12".into()
                },
                Circuit {
                    feed: "B".into(),
                    circuit: "RPP-B/CB-03".into()
                }
            ]
        );
        // The tower is in WEB43 (site map, U20) and on PDU1; FAR1 shares only circuit CB-03.
        let rack: Vec<(&str, Option<u32>)> = c
            .shares_rack
            .iter()
            .map(|n| (n.host.serial.as_str(), n.host.u))
            .collect();
        assert_eq!(rack, [("TOWER1", Some(20))]);
        let pdu: Vec<(&str, &str)> = c
            .shares_pdu
            .iter()
            .map(|n| (n.host.serial.as_str(), n.via.as_str()))
            .collect();
        assert_eq!(pdu, [("TOWER1", "PDU PDU1")]);
        let circ: Vec<(&str, &str)> = c
            .shares_circuit
            .iter()
            .map(|n| (n.host.serial.as_str(), n.via.as_str()))
            .collect();
        assert_eq!(
            circ,
            [("FAR1", "circuit RPP-B/CB-03"), ("TOWER1", "circuit RPP-A/CB-12")]
        );
        assert!(c.serves.is_empty());

        // A PDU's context lists what it serves.
        let p = build(snap, &devices[2]);
        let served: Vec<&str> = p.serves.iter().map(|n| n.host.serial.as_str()).collect();
        assert_eq!(served, ["SRV1", "TOWER1"]);
    }

    #[test]
    fn misses_and_bad_queries_say_why() {
        let (devices, readings, rules) = fixture();
        let empty = HashMap::new();
        let ids = HashMap::new();
        let snap = Snapshot {
            devices: &devices,
            readings: &readings,
            heights: &empty,
            cmdb_ids: &ids,
            rules: &rules,
        };
        assert_eq!(
            find(&snap, &Query::Serial("NOPE".into())).unwrap_err(),
            Miss::NotFound("serial NOPE".into())
        );
        assert_eq!(
            find(&snap, &Query::Hostname("twin".into())).unwrap_err(),
            Miss::Ambiguous(
                "hostname twin".into(),
                vec!["serial:DUP1".into(), "serial:DUP2".into()]
            )
        );
        assert!(Query::parse(None).unwrap_err().contains("one of"));
        assert!(
            Query::parse(Some("serial=a&mac=aa:bb:cc:dd:ee:ff"))
                .unwrap_err()
                .contains("exactly one")
        );
        assert!(Query::parse(Some("mac=zz")).unwrap_err().contains("not a MAC"));
        assert!(
            Query::parse(Some("rack=1"))
                .unwrap_err()
                .contains("unknown parameter")
        );
        assert!(Query::parse(Some("serial=")).unwrap_err().contains("empty"));
        // A device with no location evidence is "unknown" and shares no rack.
        let c = build(snap, &devices[4]);
        assert_eq!(c.location.status, "unknown");
        assert!(c.shares_rack.is_empty());
    }

    /// Every `/api` route registered anywhere in the crate is described in the OpenAPI document,
    /// and the document describes no route that does not exist.
    #[test]
    fn openapi_describes_every_api_route() {
        let doc: serde_json::Value = serde_json::from_str(OPENAPI).expect("openapi.json parses");
        assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
        let described: Vec<String> = doc["paths"].as_object().unwrap().keys().cloned().collect();
        let src = concat!(env!("CARGO_MANIFEST_DIR"), "/src");
        let mut routes = Vec::new();
        let mut stack = vec![std::path::PathBuf::from(src)];
        while let Some(p) = stack.pop() {
            for e in std::fs::read_dir(&p).unwrap() {
                let path = e.unwrap().path();
                if path.is_dir() {
                    stack.push(path);
                } else if path.extension().is_some_and(|x| x == "rs") {
                    let text = std::fs::read_to_string(&path).unwrap();
                    // `.route("/x", …)`, also when rustfmt breaks the line after `(`.
                    for part in text.split(".route(").skip(1) {
                        if let Some(rest) = part.trim_start().strip_prefix('"') {
                            routes.push(rest.split('"').next().unwrap().to_owned());
                        }
                    }
                }
            }
        }
        routes.sort();
        routes.dedup();
        assert!(routes.contains(&"/api/context".to_owned()), "{routes:?}");
        for r in routes.iter().filter(|r| r.starts_with("/api/")) {
            assert!(
                described.contains(r),
                "route {r} is not described in collector/openapi.json"
            );
        }
        for d in &described {
            assert!(
                routes.contains(d),
                "collector/openapi.json describes {d}, which no router serves"
            );
        }
        // Every operation documents a 200 answer and its tag.
        for (path, ops) in doc["paths"].as_object().unwrap() {
            for (method, op) in ops.as_object().unwrap() {
                assert!(
                    op["responses"]["200"].is_object(),
                    "{method} {path}: no 200 response"
                );
                assert!(op["summary"].is_string(), "{method} {path}: no summary");
            }
        }
    }
}
