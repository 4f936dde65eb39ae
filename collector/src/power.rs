//! Power roll-ups for facilities dashboards: each PDU outlet → the device it feeds (the site
//! map's `[[outlet]]` table), PDU inlets → their rack, and rack and room totals. A rack's total
//! is its PDUs' measured inlet power when any PDU in it reports some (what the breaker sees);
//! otherwise the sum of its devices' own power readings, and `source` says which.
//!
//! Published as retained JSON on MQTT (`groundtruth/racks/<site>/<room>/<rack>/power` and
//! `groundtruth/rooms/<site>/<room>/power`, see [`publish`]) and as Prometheus gauges
//! (`http.rs`).

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use groundtruth_proto::topics;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde::Serialize;

use crate::reconcile::Rules;
use crate::store::{LatestReading, Store};
use crate::web::render::{Inventory, Placed, inventory};

/// Where a total comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// Measured at the PDUs' inlets.
    Inlets,
    /// The sum of the devices' own readings (no PDU in the rack reports its inlet).
    Devices,
    /// Racks of both kinds (rooms only).
    Mixed,
    /// Nothing in it reports power.
    None,
}

/// One PDU outlet and the device the site map says it feeds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OutletFeed {
    pub pdu: String,
    pub outlet: u32,
    pub watts: f64,
    /// The site map's place for the fed device.
    pub site: String,
    pub rack: String,
    pub u: u32,
    /// The device the collector placed at that U, if any.
    pub device: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RackPower {
    pub site: String,
    pub room: String,
    pub rack: String,
    /// The rack's total (inlets if measured, else devices; 0 with `source = none`).
    pub watts: f64,
    pub source: Source,
    pub inlet_watts: Option<f64>,
    pub device_watts: Option<f64>,
    /// Devices placed in the rack, PDUs included.
    pub devices: usize,
    /// PDUs in the rack that report their input power.
    pub pdus: usize,
    /// The devices whose readings make up `watts` (the PDUs, or the devices).
    pub from: Vec<String>,
    pub outlets: Vec<OutletFeed>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RoomPower {
    pub site: String,
    pub room: String,
    pub watts: f64,
    pub source: Source,
    pub racks: usize,
}

/// Everything this module computes from one snapshot of the store.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PowerView {
    pub racks: Vec<RackPower>,
    pub rooms: Vec<RoomPower>,
}

fn is_power(r: &LatestReading) -> bool {
    r.metric == "power" && r.unit == "W" && r.value.is_finite()
}

/// Whether a placed device is a PDU: it reports inlet, per-line or outlet power.
fn is_pdu(p: &Placed<'_>, readings: &[LatestReading]) -> bool {
    !p.inlets.is_empty()
        || readings.iter().any(|r| {
            r.device_key == p.device.device_key && r.component_kind == "COMPONENT_KIND_OUTLET" && is_power(r)
        })
}

/// A PDU's input power: the sum of its INLET power readings; else its own device-level power
/// (a Redfish rack PDU's `Metrics.PowerWatts`, the whole PDU's input); else the sum of its
/// per-line (PHASE) readings; else the sum of its outlets. `None` for a device that is no PDU.
fn inlet_watts(p: &Placed<'_>, readings: &[LatestReading]) -> Option<f64> {
    if !is_pdu(p, readings) {
        return None;
    }
    let outlets = || {
        let v: Vec<f64> = readings
            .iter()
            .filter(|r| {
                r.device_key == p.device.device_key
                    && r.component_kind == "COMPONENT_KIND_OUTLET"
                    && is_power(r)
            })
            .map(|r| r.value)
            .collect();
        (!v.is_empty()).then(|| v.iter().sum())
    };
    let sum = |kind: &str| {
        let v: Vec<f64> = p
            .inlets
            .iter()
            .filter(|r| r.component_kind == kind && is_power(r))
            .map(|r| r.value)
            .collect();
        (!v.is_empty()).then(|| v.iter().sum())
    };
    sum("COMPONENT_KIND_INLET")
        .or(p.watts.filter(|w| w.is_finite()))
        .or_else(|| sum("COMPONENT_KIND_PHASE"))
        .or_else(outlets)
}

/// The rack and room totals and the outlet feeds of an [`Inventory`].
#[must_use]
pub fn compute(inv: &Inventory<'_>, readings: &[LatestReading], rules: &Rules) -> PowerView {
    let map = &rules.site_map;
    let mut racks = Vec::with_capacity(inv.racks.len());
    for r in &inv.racks {
        let pdus: Vec<(&str, f64)> = r
            .devices
            .iter()
            .filter_map(|p| inlet_watts(p, readings).map(|w| (p.device.device_key.as_str(), w)))
            .collect();
        let inlet = (!pdus.is_empty()).then(|| pdus.iter().map(|(_, w)| w).sum::<f64>());
        let servers: Vec<&Placed<'_>> = r
            .devices
            .iter()
            .filter(|p| !is_pdu(p, readings) && p.watts.is_some_and(f64::is_finite))
            .collect();
        let device = (!servers.is_empty()).then(|| servers.iter().filter_map(|p| p.watts).sum::<f64>());
        let (watts, source, from) = match (inlet, device) {
            (Some(w), _) => (
                w,
                Source::Inlets,
                pdus.iter().map(|(k, _)| (*k).to_owned()).collect(),
            ),
            (None, Some(w)) => (
                w,
                Source::Devices,
                servers.iter().map(|p| p.device.device_key.clone()).collect(),
            ),
            (None, None) => (0.0, Source::None, Vec::new()),
        };
        // Outlet feeds of the PDUs placed in this rack (the fed device may sit in another rack).
        let mut outlets = Vec::new();
        for pdu in r.devices.iter().filter(|p| !p.device.serial.is_empty()) {
            for o in readings.iter().filter(|x| {
                x.device_key == pdu.device.device_key
                    && x.component_kind == "COMPONENT_KIND_OUTLET"
                    && is_power(x)
            }) {
                let Some(e) = u32::try_from(o.component_index)
                    .ok()
                    .and_then(|i| map.outlet(&pdu.device.serial, i))
                else {
                    continue;
                };
                let fed = inv
                    .racks
                    .iter()
                    .filter(|x| same(&x.site, &e.site) && same(&x.name, &e.rack))
                    .flat_map(|x| &x.devices)
                    .find(|p| !is_pdu(p, readings) && p.u.is_some_and(|u| (u..u + p.height).contains(&e.u)));
                outlets.push(OutletFeed {
                    pdu: pdu.device.serial.clone(),
                    outlet: e.outlet,
                    watts: o.value,
                    site: e.site.clone(),
                    rack: e.rack.clone(),
                    u: e.u,
                    device: fed.map(|p| p.device.device_key.clone()),
                });
            }
        }
        outlets.sort_by(|a, b| (&a.pdu, a.outlet).cmp(&(&b.pdu, b.outlet)));
        racks.push(RackPower {
            site: r.site.clone(),
            room: r.room.clone(),
            rack: r.name.clone(),
            watts,
            source,
            inlet_watts: inlet,
            device_watts: device,
            devices: r.devices.len(),
            pdus: pdus.len(),
            from,
            outlets,
        });
    }
    let mut by_room: BTreeMap<(String, String), RoomPower> = BTreeMap::new();
    for r in &racks {
        let room = by_room
            .entry((r.site.to_ascii_uppercase(), r.room.to_ascii_uppercase()))
            .or_insert_with(|| RoomPower {
                site: r.site.clone(),
                room: r.room.clone(),
                watts: 0.0,
                source: Source::None,
                racks: 0,
            });
        room.racks += 1;
        room.watts += r.watts;
        room.source = match (room.source, r.source) {
            (s, Source::None) => s,
            (Source::None, s) => s,
            (a, b) if a == b => a,
            _ => Source::Mixed,
        };
    }
    PowerView {
        racks,
        rooms: by_room.into_values().collect(),
    }
}

fn same(a: &str, b: &str) -> bool {
    a.trim().eq_ignore_ascii_case(b.trim())
}

/// `groundtruth/racks/<site>/<room>/<rack>/power`
#[must_use]
pub fn rack_topic(r: &RackPower) -> String {
    format!(
        "groundtruth/racks/{}/{}/{}/power",
        topics::level(&r.site),
        topics::level(&r.room),
        topics::level(&r.rack)
    )
}

/// `groundtruth/rooms/<site>/<room>/power`
#[must_use]
pub fn room_topic(r: &RoomPower) -> String {
    format!(
        "groundtruth/rooms/{}/{}/power",
        topics::level(&r.site),
        topics::level(&r.room)
    )
}

/// Loads the store's current state and computes the view.
///
/// # Errors
/// The store cannot be read.
pub async fn snapshot(store: &Store, rules: &Rules) -> Result<PowerView, crate::store::StoreError> {
    let devices = store.devices().await?;
    let readings = store.latest_readings().await?;
    let heights = store.u_heights().await?;
    let inv = inventory(&devices, &readings, &heights, rules);
    Ok(compute(&inv, &readings, rules))
}

/// The (topic, JSON payload) messages of one view, each stamped with `at`.
#[must_use]
pub fn messages(view: &PowerView, at: SystemTime) -> Vec<(String, Vec<u8>)> {
    let at = humantime::format_rfc3339_millis(at).to_string();
    let json = |v: serde_json::Value| serde_json::to_vec(&v).unwrap_or_default();
    let mut out = Vec::with_capacity(view.racks.len() + view.rooms.len());
    for r in &view.racks {
        let mut v = serde_json::to_value(r).unwrap_or_default();
        v["at"] = at.clone().into();
        out.push((rack_topic(r), json(v)));
    }
    for r in &view.rooms {
        let mut v = serde_json::to_value(r).unwrap_or_default();
        v["at"] = at.clone().into();
        out.push((room_topic(r), json(v)));
    }
    out
}

/// Publishes the rack and room totals every `every`, retained at QoS 1 so a dashboard that
/// subscribes later gets the last value at once. Runs until the task is dropped; a broker outage
/// only delays the next publication (values are recomputed, never queued).
pub async fn publish(opts: MqttOptions, store: Store, rules: Rules, every: Duration) {
    publish_while(opts, store, rules, every, || true).await;
}

/// [`publish`], skipping the rounds in which `leading` says this collector is not the one to
/// publish (several collectors on one database: only the leader does, see
/// [`crate::lease::Leadership`]).
pub async fn publish_while(
    opts: MqttOptions,
    store: Store,
    rules: Rules,
    every: Duration,
    leading: impl Fn() -> bool,
) {
    let endpoint = format!("{}:{}", opts.broker_address().0, opts.broker_address().1);
    let (client, mut eventloop) = AsyncClient::new(opts, 64);
    // The event loop must be polled for anything to be sent.
    let driver = tokio::spawn(async move {
        let mut backoff = Duration::from_millis(500);
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => backoff = Duration::from_millis(500),
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(broker = %endpoint, error = %e, retry_in = ?backoff, "Power publisher: MQTT connection failed; reconnecting.");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            }
        }
    });
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if !leading() {
            continue;
        }
        let view = match snapshot(&store, &rules).await {
            Ok(v) => v,
            Err(e) => {
                tracing::error!(error = %e, "Power publisher: cannot read the store.");
                continue;
            }
        };
        for (topic, payload) in messages(&view, SystemTime::now()) {
            // try_publish: a full request queue (broker down) drops this round, not the task.
            if let Err(e) = client.try_publish(topic.as_str(), QoS::AtLeastOnce, true, payload) {
                tracing::debug!(topic = %topic, error = %e, "Power publisher: dropped this round's message.");
                break;
            }
        }
        if driver.is_finished() {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::sitemap::SiteMap;
    use crate::store::{DeviceRow, EvidenceRow};

    fn placed(key: &str, serial: &str, rack: &str, u: Option<u32>, watts: Option<f64>) -> DeviceRow {
        DeviceRow {
            device_key: key.into(),
            serial: serial.into(),
            power_watts: watts,
            locations: vec![EvidenceRow {
                source: "LOCATION_SOURCE_REDFISH_PLACEMENT".into(),
                site: "DC1".into(),
                rack: rack.into(),
                u_position: u,
                confidence: 0.9,
                ..EvidenceRow::default()
            }],
            ..DeviceRow::default()
        }
    }

    fn reading(key: &str, kind: &str, index: i64, value: f64) -> LatestReading {
        LatestReading {
            device_key: key.into(),
            metric: "power".into(),
            unit: "W".into(),
            component_kind: format!("COMPONENT_KIND_{kind}"),
            component_index: index,
            component_label: String::new(),
            value,
            observed_at: String::new(),
        }
    }

    fn rules() -> Rules {
        let map = SiteMap::parse(
            "[[rack]]\nsite = \"DC1\"\nroom = \"H1\"\nname = \"R1\"\n[[rack]]\nsite = \"DC1\"\nroom = \"H1\"\nname = \"R2\"\n\
             [[rack]]\nsite = \"DC1\"\nroom = \"H2\"\nname = \"R3\"\n\
             [[outlet]]\npdu = \"PDU1\"\noutlet = 3\nsite = \"DC1\"\nrack = \"R1\"\nu = 11\n\
             [[outlet]]\npdu = \"PDU1\"\noutlet = 4\nsite = \"DC1\"\nrack = \"R1\"\nu = 30\n",
            "map.toml",
        )
        .unwrap();
        Rules {
            site_map: map,
            ..Rules::builtin("DC1")
        }
    }

    #[test]
    fn racks_use_inlets_when_measured_else_devices_and_rooms_add_up() {
        let devices = vec![
            placed("srv-a", "A", "R1", Some(10), Some(300.0)),
            placed("srv-b", "B", "R1", Some(20), Some(200.0)),
            placed("pdu1", "PDU1", "R1", None, Some(999.0)),
            placed("srv-c", "C", "R2", Some(5), Some(150.0)),
            placed("srv-d", "D", "R3", Some(5), None),
        ];
        let readings = vec![
            reading("pdu1", "INLET", 1, 610.0),
            reading("pdu1", "OUTLET", 3, 290.0),
            reading("pdu1", "OUTLET", 4, 12.0),
            reading("pdu1", "OUTLET", 5, 7.0), // not in the site map
        ];
        let mut heights = HashMap::new();
        heights.insert("srv-a".to_owned(), 2);
        let rules = rules();
        let inv = inventory(&devices, &readings, &heights, &rules);
        let v = compute(&inv, &readings, &rules);
        let r1 = v.racks.iter().find(|r| r.rack == "R1").unwrap();
        assert_eq!((r1.watts, r1.source, r1.pdus), (610.0, Source::Inlets, 1));
        assert_eq!(r1.device_watts, Some(500.0), "PDU's own power not added");
        // Outlet 3 feeds U11, inside srv-a's two units (10–11); outlet 4 feeds an empty U30.
        assert_eq!(r1.outlets.len(), 2);
        assert_eq!(
            (
                r1.outlets[0].outlet,
                r1.outlets[0].watts,
                r1.outlets[0].device.as_deref()
            ),
            (3, 290.0, Some("srv-a"))
        );
        assert_eq!((r1.outlets[1].outlet, r1.outlets[1].device.as_deref()), (4, None));
        let r2 = v.racks.iter().find(|r| r.rack == "R2").unwrap();
        assert_eq!(
            (r2.watts, r2.source, r2.inlet_watts),
            (150.0, Source::Devices, None)
        );
        let r3 = v.racks.iter().find(|r| r.rack == "R3").unwrap();
        assert_eq!((r3.watts, r3.source), (0.0, Source::None));
        let h1 = v.rooms.iter().find(|r| r.room == "H1").unwrap();
        assert_eq!((h1.watts, h1.source, h1.racks), (760.0, Source::Mixed, 2));
        let h2 = v.rooms.iter().find(|r| r.room == "H2").unwrap();
        assert_eq!((h2.watts, h2.source), (0.0, Source::None));
    }

    #[test]
    fn pdu_inlet_is_its_own_power_else_the_sum_of_its_lines() {
        let devices = vec![
            placed("pdu", "P", "R2", None, None),
            placed("pdu2", "P2", "R3", None, Some(640.0)),
        ];
        let readings = vec![
            reading("pdu", "PHASE", 1, 100.0),
            reading("pdu", "PHASE", 2, 120.5),
            reading("pdu", "PHASE", 3, f64::NAN),
            reading("pdu2", "PHASE", 1, 100.0),
        ];
        let rules = rules();
        let inv = inventory(&devices, &readings, &HashMap::new(), &rules);
        let v = compute(&inv, &readings, &rules);
        let r2 = v.racks.iter().find(|r| r.rack == "R2").unwrap();
        assert_eq!((r2.watts, r2.source), (220.5, Source::Inlets));
        let r3 = v.racks.iter().find(|r| r.rack == "R3").unwrap();
        assert_eq!((r3.watts, r3.source), (640.0, Source::Inlets));
    }

    #[test]
    fn topics_and_payloads() {
        let rack = RackPower {
            site: "DC1".into(),
            room: String::new(),
            rack: "R 7".into(),
            watts: 1.5,
            source: Source::Devices,
            inlet_watts: None,
            device_watts: Some(1.5),
            devices: 1,
            pdus: 0,
            from: vec!["serial:X".into()],
            outlets: Vec::new(),
        };
        assert_eq!(rack_topic(&rack), "groundtruth/racks/DC1/_/R_7/power");
        let view = PowerView {
            racks: vec![rack],
            rooms: Vec::new(),
        };
        let msgs = messages(&view, SystemTime::UNIX_EPOCH);
        let v: serde_json::Value = serde_json::from_slice(&msgs[0].1).unwrap();
        assert_eq!(v["watts"], 1.5);
        assert_eq!(v["source"], "devices");
        assert_eq!(v["inlet_watts"], serde_json::Value::Null);
        assert_eq!(v["at"], "1970-01-01T00:00:00.000Z");
    }
}
