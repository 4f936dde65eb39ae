//! Redfish driver: identity, MACs, power and rack placement from a BMC's REST API.
//!
//! Real BMCs violate the schema (nulls, missing "required" properties, numbers as strings, OEM
//! blobs), so the models here are lenient: every property optional, unknown ones ignored, lists
//! that arrive as `null` read as empty. Only the resources needed are fetched (no crawl): the
//! service root, the Chassis/Systems/Managers collections and members, each chassis' Power, and
//! each system's and manager's EthernetInterfaces, bounded by `Limits::max_resources`.
//!
//! One service can hold several devices; [`poll`] returns one report per top-level device: each
//! rack-mount server or tower (its own chassis plus contained cards, with its system and
//! managers), each enclosure (its blades as `COMPONENT_KIND_BLADE` components) and each blade
//! (its own report, `attributes.enclosure_serial` naming the enclosure), each ComputerSystem of
//! a chassis (or service) holding several (a multi-node chassis, an aggregator, sushy-emulator:
//! its own report with its UUID, name and MACs; the chassis is their enclosure), and each rack PDU
//! under `PowerEquipment/RackPDUs` (inlets and outlets as components of its readings). The usable
//! serial wins over a placeholder (`groundtruth_proto::identity`): the system's over the chassis'.
//!
//! Transport ([`client`]): one [`client::Endpoint`] per endpoint + user + TLS settings, kept across
//! polls: its HTTP client (keep-alive), a semaphore bounding requests in flight (`?max_inflight=`,
//! default 2), the idle SessionService session for reuse, and the inventory cache (identity and
//! the list of power/thermal resources, refreshed every `?inventory_refresh=` (default 1 h); between
//! refreshes a poll reads only those resources, with `$select` and `$expand` where the service
//! root advertises them). TLS is rustls, or OpenSSL at security level 0 with `?tls=openssl` for
//! BMCs that speak only TLS 1.0/1.1 or legacy ciphers.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use groundtruth_proto::v1::{
    Component, ComponentIdentity, ComponentKind, DeviceClass, DeviceIdentity, DeviceReport, LocationEvidence,
    LocationSource, MacAddress, MacRole, PollOutcome, PollStatus, Reading,
};
use serde::{Deserialize, Deserializer, de::DeserializeOwned};

use groundtruth_proto::identity;

use super::{DriverError, PollCx, clean};
use crate::target::RedfishTarget;

pub mod client;
use client::Poller;

// ----------------------------------------------------------------------------------------------
// Lenient models (DSP0268 subset)
// ----------------------------------------------------------------------------------------------

/// `null` or a missing property reads as the type's default.
fn nullable<'de, D: Deserializer<'de>, T: Default + Deserialize<'de>>(d: D) -> Result<T, D::Error> {
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// A number that some BMCs send as a string (`"344"`) or `null`.
fn lenient_f64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    Ok(match serde_json::Value::deserialize(d)? {
        serde_json::Value::Number(n) => n.as_f64(),
        serde_json::Value::String(s) => s.trim().parse().ok(),
        _ => None,
    })
}

/// Text that some BMCs send as a number or `null`.
fn lenient_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(match serde_json::Value::deserialize(d)? {
        serde_json::Value::String(s) => Some(s),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    })
}

/// A reference to another resource. Accepts `{"@odata.id": ...}` as the schema says, and also
/// what BMCs send instead: a bare path string, or a one-element array where a single link belongs
/// (seen: Intel BMC `ContainedBy: [ {...} ]`).
#[derive(Debug, Default)]
struct Link {
    id: Option<String>,
}

impl<'de> Deserialize<'de> for Link {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        fn from_value(v: &serde_json::Value) -> Option<String> {
            match v {
                serde_json::Value::String(s) => Some(s.clone()),
                serde_json::Value::Object(m) => {
                    m.get("@odata.id").and_then(|v| v.as_str()).map(str::to_owned)
                }
                serde_json::Value::Array(a) => a.first().and_then(from_value),
                _ => None,
            }
        }
        Ok(Self {
            id: from_value(&serde_json::Value::deserialize(d)?),
        })
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
struct Collection {
    #[serde(deserialize_with = "nullable")]
    members: Vec<Link>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
struct ServiceRoot {
    chassis: Option<Link>,
    systems: Option<Link>,
    managers: Option<Link>,
    power_equipment: Option<Link>,
    session_service: Option<Link>,
    #[serde(deserialize_with = "nullable")]
    protocol_features_supported: ProtocolFeatures,
    #[serde(rename = "UUID", deserialize_with = "lenient_string")]
    uuid: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
struct ProtocolFeatures {
    #[serde(deserialize_with = "nullable")]
    expand_query: ExpandQuery,
    #[serde(deserialize_with = "nullable")]
    select_query: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
struct ExpandQuery {
    #[serde(deserialize_with = "nullable")]
    levels: bool,
    #[serde(deserialize_with = "nullable")]
    no_links: bool,
    #[serde(deserialize_with = "nullable")]
    expand_all: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
struct PowerEquipment {
    #[serde(rename = "RackPDUs")]
    rack_pdus: Option<Link>,
}

/// PowerDistribution (a rack PDU).
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
struct PowerDistribution {
    #[serde(flatten)]
    common: Common,
    #[serde(deserialize_with = "lenient_string")]
    firmware_version: Option<String>,
    location: Option<Location>,
    mains: Option<Link>,
    outlets: Option<Link>,
    metrics: Option<Link>,
}

/// `{"Reading": ...}` excerpts of Sensor resources (PowerWatts, EnergykWh, ...).
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
struct SensorValue {
    #[serde(deserialize_with = "lenient_f64")]
    reading: Option<f64>,
}

/// PowerDistributionMetrics, Outlet, Circuit and EnvironmentMetrics share these excerpts.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
struct Metered {
    #[serde(deserialize_with = "lenient_string")]
    id: Option<String>,
    #[serde(deserialize_with = "lenient_string")]
    name: Option<String>,
    power_watts: Option<SensorValue>,
    #[serde(rename = "EnergykWh")]
    energy_kwh: Option<SensorValue>,
    voltage: Option<SensorValue>,
    current_amps: Option<SensorValue>,
    temperature_celsius: Option<SensorValue>,
    #[serde(deserialize_with = "nullable")]
    poly_phase_power_watts: std::collections::BTreeMap<String, SensorValue>,
    #[serde(deserialize_with = "nullable")]
    poly_phase_current_amps: std::collections::BTreeMap<String, SensorValue>,
    #[serde(deserialize_with = "nullable")]
    poly_phase_voltage: std::collections::BTreeMap<String, SensorValue>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
struct Thermal {
    #[serde(deserialize_with = "nullable")]
    temperatures: Vec<Temperature>,
    #[serde(deserialize_with = "nullable")]
    fans: Vec<Fan>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
struct Temperature {
    #[serde(deserialize_with = "lenient_string")]
    name: Option<String>,
    #[serde(deserialize_with = "lenient_string")]
    member_id: Option<String>,
    #[serde(deserialize_with = "lenient_f64")]
    reading_celsius: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
struct Fan {
    #[serde(deserialize_with = "lenient_string")]
    name: Option<String>,
    #[serde(deserialize_with = "lenient_string")]
    fan_name: Option<String>,
    #[serde(deserialize_with = "lenient_string")]
    member_id: Option<String>,
    #[serde(deserialize_with = "lenient_f64")]
    reading: Option<f64>,
    #[serde(deserialize_with = "lenient_string")]
    reading_units: Option<String>,
}

/// A NetworkAdapter: a NIC card (serial, model) and, where the systems list no interfaces, its
/// ports' MACs.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
struct NetworkAdapter {
    #[serde(flatten)]
    common: Common,
    ports: Option<Link>,
    network_ports: Option<Link>,
}

/// Port (`Ethernet.AssociatedMACAddresses`) or the older NetworkPort
/// (`AssociatedNetworkAddresses`).
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
struct NicPort {
    #[serde(deserialize_with = "lenient_string")]
    id: Option<String>,
    #[serde(deserialize_with = "nullable")]
    associated_network_addresses: Vec<Option<String>>,
    #[serde(deserialize_with = "nullable")]
    ethernet: PortEthernet,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
struct PortEthernet {
    #[serde(rename = "AssociatedMACAddresses", deserialize_with = "nullable")]
    associated_mac_addresses: Vec<Option<String>>,
}

/// A Sensor resource (the newer schema), read where the deprecated Thermal is absent.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
struct SensorDoc {
    #[serde(deserialize_with = "lenient_string")]
    id: Option<String>,
    #[serde(deserialize_with = "lenient_string")]
    name: Option<String>,
    #[serde(deserialize_with = "lenient_string")]
    reading_type: Option<String>,
    #[serde(deserialize_with = "lenient_f64")]
    reading: Option<f64>,
    #[serde(deserialize_with = "lenient_string")]
    reading_units: Option<String>,
}

/// PowerSubsystem/PowerSupplies member (the newer schema) and its Metrics.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
struct NewPowerSupply {
    #[serde(flatten)]
    common: Common,
    #[serde(deserialize_with = "lenient_string")]
    firmware_version: Option<String>,
    metrics: Option<Link>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
struct PowerSupplyMetrics {
    input_power_watts: Option<SensorValue>,
    output_power_watts: Option<SensorValue>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
struct PowerSubsystem {
    power_supplies: Option<Link>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
struct Common {
    #[serde(rename = "@odata.id")]
    odata_id: Option<String>,
    #[serde(deserialize_with = "lenient_string")]
    id: Option<String>,
    #[serde(deserialize_with = "lenient_string")]
    name: Option<String>,
    #[serde(deserialize_with = "lenient_string")]
    manufacturer: Option<String>,
    #[serde(deserialize_with = "lenient_string")]
    model: Option<String>,
    #[serde(rename = "SKU", deserialize_with = "lenient_string")]
    sku: Option<String>,
    #[serde(deserialize_with = "lenient_string")]
    part_number: Option<String>,
    #[serde(deserialize_with = "lenient_string")]
    serial_number: Option<String>,
    #[serde(deserialize_with = "lenient_string")]
    asset_tag: Option<String>,
    #[serde(rename = "UUID", deserialize_with = "lenient_string")]
    uuid: Option<String>,
    #[serde(deserialize_with = "lenient_string")]
    description: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
struct Chassis {
    #[serde(flatten)]
    common: Common,
    #[serde(deserialize_with = "lenient_string")]
    chassis_type: Option<String>,
    location: Option<Location>,
    power: Option<Link>,
    thermal: Option<Link>,
    environment_metrics: Option<Link>,
    power_subsystem: Option<Link>,
    sensors: Option<Link>,
    network_adapters: Option<Link>,
    #[serde(deserialize_with = "nullable")]
    links: ChassisLinks,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
struct ChassisLinks {
    #[serde(deserialize_with = "nullable")]
    computer_systems: Vec<Link>,
    #[serde(deserialize_with = "nullable")]
    managed_by: Vec<Link>,
    contained_by: Option<Link>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
struct Location {
    placement: Option<Placement>,
    postal_address: Option<PostalAddress>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
struct Placement {
    #[serde(deserialize_with = "lenient_string")]
    row: Option<String>,
    #[serde(deserialize_with = "lenient_string")]
    rack: Option<String>,
    #[serde(deserialize_with = "lenient_f64")]
    rack_offset: Option<f64>,
    #[serde(deserialize_with = "lenient_string")]
    rack_offset_units: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
struct PostalAddress {
    #[serde(deserialize_with = "lenient_string")]
    building: Option<String>,
    #[serde(deserialize_with = "lenient_string")]
    room: Option<String>,
    #[serde(deserialize_with = "lenient_string")]
    location: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
struct Power {
    #[serde(deserialize_with = "nullable")]
    power_control: Vec<PowerControl>,
    #[serde(deserialize_with = "nullable")]
    power_supplies: Vec<PowerSupply>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
struct PowerControl {
    #[serde(deserialize_with = "lenient_string")]
    name: Option<String>,
    #[serde(deserialize_with = "lenient_f64")]
    power_consumed_watts: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
struct PowerSupply {
    #[serde(flatten)]
    common: Common,
    #[serde(deserialize_with = "lenient_string")]
    member_id: Option<String>,
    #[serde(deserialize_with = "lenient_string")]
    firmware_version: Option<String>,
    #[serde(deserialize_with = "lenient_f64")]
    last_power_output_watts: Option<f64>,
    #[serde(deserialize_with = "lenient_f64")]
    power_input_watts: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
struct System {
    #[serde(flatten)]
    common: Common,
    #[serde(deserialize_with = "lenient_string")]
    host_name: Option<String>,
    #[serde(deserialize_with = "lenient_string")]
    bios_version: Option<String>,
    ethernet_interfaces: Option<Link>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
struct Manager {
    #[serde(flatten)]
    common: Common,
    #[serde(deserialize_with = "lenient_string")]
    firmware_version: Option<String>,
    ethernet_interfaces: Option<Link>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
struct EthernetInterface {
    #[serde(deserialize_with = "lenient_string")]
    id: Option<String>,
    #[serde(rename = "MACAddress", deserialize_with = "lenient_string")]
    mac_address: Option<String>,
    #[serde(rename = "PermanentMACAddress", deserialize_with = "lenient_string")]
    permanent_mac_address: Option<String>,
}

// ----------------------------------------------------------------------------------------------
// Polling
// ----------------------------------------------------------------------------------------------

/// Chassis types that are parts of something else, never the device to report.
fn is_subunit(chassis_type: Option<&str>) -> bool {
    matches!(
        chassis_type,
        Some(
            "Card"
                | "Component"
                | "Module"
                | "Sidecar"
                | "Shelf"
                | "Drawer"
                | "Blade"
                | "Cartridge"
                | "IPBasedDrive"
                | "StorageEnclosure"
        )
    )
}

/// Where a device's readings come from; fetched on every poll, inventory or not.
#[derive(Debug, Clone)]
enum Source {
    /// Deprecated `Power`: PowerConsumedWatts and PSU watts.
    Power(String),
    /// Deprecated `Thermal`: temperatures and fans.
    Thermal(String),
    /// The `Sensors` collection (temperatures and fans), where `Thermal` is absent.
    Sensors(String),
    /// EnvironmentMetrics: PowerWatts, EnergykWh, TemperatureCelsius.
    Environment(String),
    /// PowerSubsystem PowerSupply Metrics, for one PSU (index, label).
    PsuMetrics(String, u32, String),
    /// PowerDistributionMetrics of a PDU.
    PduMetrics(String),
    /// A PDU mains circuit (INLET) or outlet (OUTLET): path, kind, index, label.
    Metered(String, ComponentKind, u32, String),
}

/// What a device is, kept between inventory refreshes.
#[derive(Debug, Clone)]
struct DeviceInventory {
    template: DeviceReport,
    sources: Vec<Source>,
}

/// The cached inventory of one endpoint.
#[derive(Debug, Default)]
pub struct Inventory {
    devices: Vec<DeviceInventory>,
    /// Resources that could not be read while building it.
    partial: Vec<String>,
    /// The service root advertised `$expand` / `$select` (ProtocolFeaturesSupported).
    expand: bool,
    select: bool,
}

/// Polls a Redfish service once: one report per device it holds.
///
/// # Errors
/// When the service cannot be reached, refuses the credentials, or the service root is unusable.
pub async fn poll(t: &RedfishTarget, cx: &PollCx) -> Result<Vec<DeviceReport>, DriverError> {
    let endpoint = client::endpoint(t, cx)?;
    let p = Poller::start(endpoint, cx).await?;
    // The scheduler asks for identity once per inventory interval (driver::PollScope): then the
    // inventory is re-read; a poll without identity reuses any cached inventory, however old.
    let max_age = match (cx.scope.wants(super::Kind::Identity), cx.scope.refresh) {
        (true, true) => std::time::Duration::ZERO,
        (true, false) => t.inventory_refresh,
        (false, _) => std::time::Duration::MAX,
    };
    let cached = client_inventory(&p, max_age);
    let (inventory, fresh) = match cached {
        Some(inv) => (inv, false),
        None => (Arc::new(build_inventory(&p).await?), true),
    };
    if fresh {
        *p.endpoint
            .inventory
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) =
            Some((Instant::now(), Arc::clone(&inventory)));
    }
    let now = SystemTime::now();
    let mut reports = Vec::with_capacity(inventory.devices.len());
    for d in &inventory.devices {
        let mut report = d.template.clone();
        let mut partial = if fresh { inventory.partial.clone() } else { vec![] };
        let results =
            futures::future::join_all(d.sources.iter().map(|s| read_source(&p, &inventory, s, now))).await;
        for r in results {
            match r {
                Ok(rs) => report.readings.extend(rs),
                Err(e) => partial.push(e),
            }
        }
        dedupe_device_power(&mut report);
        if !partial.is_empty() {
            report.status = Some(PollStatus {
                outcome: PollOutcome::Partial as i32,
                message: format!("{} resource(s) could not be read", partial.len()),
                partial_errors: partial,
            });
        }
        reports.push(report);
    }
    p.finish().await;
    Ok(reports)
}

/// Logs every idle Redfish session out; see [`client::close_all_sessions`].
pub async fn close_all_sessions() {
    client::close_all_sessions().await;
}

fn client_inventory(p: &Poller, refresh: std::time::Duration) -> Option<Arc<Inventory>> {
    let guard = p
        .endpoint
        .inventory
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    guard
        .as_ref()
        .filter(|(at, _)| at.elapsed() < refresh)
        .map(|(_, inv)| Arc::clone(inv))
}

/// When both `PowerConsumedWatts` and EnvironmentMetrics `PowerWatts` are there, the first is the
/// device's `power` and the second is kept as a `DEVICE` component reading labelled
/// `EnvironmentMetrics` (the store keys latest values by metric and component).
fn dedupe_device_power(report: &mut DeviceReport) {
    let whole: Vec<usize> = report
        .readings
        .iter()
        .enumerate()
        .filter(|(_, r)| r.metric == "power" && r.component.is_none())
        .map(|(i, _)| i)
        .collect();
    if whole.len() > 1 {
        for &i in &whole {
            let r = &mut report.readings[i];
            if r.source.contains("EnvironmentMetrics") {
                r.component = Some(Component {
                    kind: ComponentKind::Device as i32,
                    index: 0,
                    label: "EnvironmentMetrics".into(),
                });
            }
        }
    }
}

/// The members of a collection, as documents: one `$expand=.($levels=1)` request where the
/// service supports it, else one GET per member (concurrently, bounded by the endpoint).
async fn members_docs(
    p: &Poller,
    link: Option<&Link>,
    expand: bool,
    partial: &mut Vec<String>,
) -> Result<Vec<(String, serde_json::Value)>, DriverError> {
    let Some(path) = link.and_then(|l| l.id.as_deref()) else {
        return Ok(vec![]);
    };
    if expand && !p.endpoint.no_expand.load(std::sync::atomic::Ordering::Relaxed) {
        match p.get_raw(&format!("{path}?$expand=.($levels=1)")).await? {
            client::Got::Json(v) => {
                let members = v
                    .get("Members")
                    .and_then(|m| m.as_array())
                    .cloned()
                    .unwrap_or_default();
                // Members that came back as bare links (the service ignored the expand) are
                // fetched one by one below.
                if members.iter().all(|m| m.as_object().is_some_and(|o| o.len() > 1)) {
                    return Ok(members
                        .into_iter()
                        .map(|m| {
                            let id = m
                                .get("@odata.id")
                                .and_then(|x| x.as_str())
                                .unwrap_or(path)
                                .to_owned();
                            (id, m)
                        })
                        .collect());
                }
            }
            client::Got::Status(s) => {
                // sushy-static answers 404 to any query string; others 400/501.
                tracing::debug!(%s, path, "Redfish $expand refused; using plain GETs.");
                p.endpoint
                    .no_expand
                    .store(true, std::sync::atomic::Ordering::Relaxed);
            }
        }
    }
    let c: Collection = p.get(path).await?;
    let paths: Vec<String> = c.members.into_iter().filter_map(|m| m.id).collect();
    let docs = futures::future::join_all(paths.iter().map(|m| p.get::<serde_json::Value>(m))).await;
    let mut out = Vec::new();
    for (m, d) in paths.into_iter().zip(docs) {
        match d {
            Ok(d) => out.push((m, d)),
            // A member that fails (Intel's capture: the RackMount chassis is an error document)
            // costs that member, not the collection.
            Err(
                e @ (DriverError::Auth { .. } | DriverError::Timeout { .. } | DriverError::Connect { .. }),
            ) => {
                return Err(e);
            }
            Err(e) => partial.push(format!("{m}: {e}")),
        }
    }
    Ok(out)
}

fn parse<T: DeserializeOwned + Default>(path: &str, v: serde_json::Value, partial: &mut Vec<String>) -> T {
    serde_json::from_value(v).unwrap_or_else(|e| {
        partial.push(format!("{path}: malformed: {e}"));
        T::default()
    })
}

async fn build_inventory(p: &Poller) -> Result<Inventory, DriverError> {
    let now = SystemTime::now();
    let root: ServiceRoot = p.get("/redfish/v1/").await?;
    let eq = &root.protocol_features_supported.expand_query;
    let expand = eq.levels || eq.expand_all || eq.no_links;
    p.endpoint
        .expand_offered
        .store(expand, std::sync::atomic::Ordering::Relaxed);
    let mut partial = Vec::new();
    let uuid = clean(root.uuid.as_deref()).to_ascii_lowercase();

    let chassis: Vec<(String, Chassis)> =
        match members_docs(p, root.chassis.as_ref(), expand, &mut partial).await {
            Ok(docs) => docs
                .into_iter()
                .map(|(path, v)| {
                    let c: Chassis = parse(&path, v, &mut partial);
                    (c.common.odata_id.clone().unwrap_or(path), c)
                })
                .collect(),
            Err(e) => {
                partial.push(format!("Chassis: {e}"));
                vec![]
            }
        };
    let paths: Vec<&str> = chassis.iter().map(|(p, _)| p.as_str()).collect();
    let parent_of = |c: &Chassis| -> Option<String> {
        c.links
            .contained_by
            .as_ref()
            .and_then(|l| l.id.clone())
            .filter(|p| paths.contains(&p.as_str()))
    };
    // Top-level chassis: contained by nothing we know of, and not a part.
    let mut roots: Vec<usize> = (0..chassis.len())
        .filter(|&i| parent_of(&chassis[i].1).is_none() && !is_subunit(chassis[i].1.chassis_type.as_deref()))
        .collect();
    // Only parts are readable (Intel's capture: the RackMount chassis is an error document, its
    // Baseboard card holds the system and Power): the part holding a system stands for the
    // device, else the first.
    if roots.is_empty() && !chassis.is_empty() {
        roots.push(
            chassis
                .iter()
                .position(|(_, c)| !c.links.computer_systems.is_empty())
                .unwrap_or(0),
        );
    }
    let descendants = |root: &str| -> Vec<usize> {
        let mut out = Vec::new();
        let mut frontier = vec![root.to_owned()];
        while let Some(f) = frontier.pop() {
            for (i, (path, c)) in chassis.iter().enumerate() {
                if parent_of(c).as_deref() == Some(f.as_str()) && !out.contains(&i) && out.len() < 256 {
                    out.push(i);
                    frontier.push(path.clone());
                }
            }
        }
        out
    };

    let mut devices: Vec<DeviceInventory> = Vec::new();
    for &ri in &roots {
        let (root_path, rc) = &chassis[ri];
        let desc = descendants(root_path);
        let enclosure = rc.chassis_type.as_deref() == Some("Enclosure");
        // Blades: contained chassis of type Blade/Sled, or holding their own systems inside an
        // enclosure. Everything else contained is merged into the root device.
        let (blades, parts): (Vec<usize>, Vec<usize>) = desc.into_iter().partition(|&i| {
            let c = &chassis[i].1;
            matches!(c.chassis_type.as_deref(), Some("Blade" | "Sled"))
                || (enclosure
                    && !c.links.computer_systems.is_empty()
                    && parent_of(c).as_deref() == Some(root_path))
        });
        let (mut dev, nodes) = chassis_device(
            p,
            rc,
            root_path,
            &parts.iter().map(|&i| &chassis[i]).collect::<Vec<_>>(),
            now,
            &mut partial,
        )
        .await;
        if enclosure {
            dev.template
                .identity
                .get_or_insert_with(Default::default)
                .device_class = DeviceClass::Enclosure as i32;
        }
        let encl_id = dev.template.identity.clone().unwrap_or_default();
        let mut contained = Vec::new();
        for (n, &bi) in blades.iter().enumerate() {
            let (bpath, bc) = &chassis[bi];
            let (mut blade, blade_nodes) = chassis_device(p, bc, bpath, &[], now, &mut partial).await;
            let bid = blade.template.identity.get_or_insert_with(Default::default);
            if blade_nodes.is_empty() {
                bid.device_class = DeviceClass::Server as i32;
            }
            bid.attributes
                .insert("enclosure_serial".into(), encl_id.serial_number.clone());
            bid.attributes
                .insert("enclosure_model".into(), encl_id.model.clone());
            bid.attributes
                .insert("enclosure_slot".into(), clean(bc.common.id.as_deref()));
            dev.template.components.push(ComponentIdentity {
                component: Some(Component {
                    kind: ComponentKind::Blade as i32,
                    index: u32::try_from(n + 1).unwrap_or(u32::MAX),
                    label: clean(bc.common.id.as_deref().or(bc.common.name.as_deref())),
                }),
                vendor: bid.vendor.clone(),
                model: bid.model.clone(),
                serial_number: bid.serial_number.clone(),
                part_number: bid.part_number.clone(),
                firmware_version: bid.firmware_version.clone(),
            });
            contained.push(blade);
            contained.extend(blade_nodes);
        }
        devices.push(dev);
        devices.extend(contained);
        devices.extend(nodes);
    }

    // Services without chassis (or whose chassis link no systems) still list their systems and
    // managers at the root: they belong to the one device, or make one.
    let linked = devices.iter().any(|d| {
        d.template
            .identity
            .as_ref()
            .is_some_and(|i| !i.macs.is_empty() || !i.hostname.is_empty())
    });
    if !linked && devices.len() <= 1 {
        if devices.is_empty() {
            devices.push(DeviceInventory {
                template: DeviceReport {
                    identity: Some(DeviceIdentity {
                        device_class: DeviceClass::Server as i32,
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                sources: vec![],
            });
        }
        let systems = members_paths(p, root.systems.as_ref(), &mut partial).await;
        let managers = members_paths(p, root.managers.as_ref(), &mut partial).await;
        if systems.len() > 1 {
            // Several systems and no chassis to tell them apart: each is its own device, the
            // service's one chassis (if any) their enclosure with the BMC.
            let encl = &mut devices[0];
            let id = encl.template.identity.get_or_insert_with(Default::default);
            add_systems_and_managers(p, &[], &managers, id, &mut partial).await;
            id.device_class = DeviceClass::Enclosure as i32;
            let nodes = system_devices(p, &systems, encl, &mut partial).await;
            devices.extend(nodes);
        } else {
            let id = devices[0].template.identity.get_or_insert_with(Default::default);
            add_systems_and_managers(p, &systems, &managers, id, &mut partial).await;
        }
    }

    // Rack PDUs.
    if let Some(pe_path) = root.power_equipment.as_ref().and_then(|l| l.id.clone()) {
        match p.get::<PowerEquipment>(&pe_path).await {
            Ok(pe) => match members_docs(p, pe.rack_pdus.as_ref(), expand, &mut partial).await {
                Ok(docs) => {
                    for (path, v) in docs {
                        let pdu: PowerDistribution = parse(&path, v, &mut partial);
                        devices.push(pdu_device(p, &pdu, &path, now, &mut partial).await);
                    }
                }
                Err(e) => partial.push(format!("RackPDUs: {e}")),
            },
            Err(e) => partial.push(format!("{pe_path}: {e}")),
        }
    }

    // One report per serial: a PDU also described as a chassis (and a transfer switch sharing
    // the PDU's serial) is reported once, as the PDU.
    let mut seen: Vec<String> = Vec::new();
    let mut out = Vec::new();
    for mut d in devices.into_iter().rev() {
        let id = d.template.identity.get_or_insert_with(Default::default);
        // The service's UUID stands for a device only when it is the service's one device, never
        // for one of several systems behind it.
        if id.uuid.is_empty() && roots.len() <= 1 && !id.attributes.contains_key("redfish_system") {
            id.uuid.clone_from(&uuid);
        }
        if !id.serial_number.is_empty() {
            if seen.contains(&id.serial_number) {
                continue;
            }
            seen.push(id.serial_number.clone());
        }
        out.push(d);
    }
    out.reverse();
    Ok(Inventory {
        devices: out,
        partial,
        expand,
        select: root.protocol_features_supported.select_query,
    })
}

async fn members_paths(p: &Poller, link: Option<&Link>, partial: &mut Vec<String>) -> Vec<String> {
    let Some(path) = link.and_then(|l| l.id.as_deref()) else {
        return vec![];
    };
    match p.get::<Collection>(path).await {
        Ok(c) => c.members.into_iter().filter_map(|m| m.id).collect(),
        Err(e) => {
            partial.push(format!("{path}: {e}"));
            vec![]
        }
    }
}

/// A server, enclosure or blade from its chassis and the parts merged into it; with the devices
/// of its systems when it holds several ([`system_devices`]; then it is their enclosure).
async fn chassis_device(
    p: &Poller,
    c: &Chassis,
    path: &str,
    parts: &[&(String, Chassis)],
    now: SystemTime,
    partial: &mut Vec<String>,
) -> (DeviceInventory, Vec<DeviceInventory>) {
    let cm = &c.common;
    let mut identity = DeviceIdentity {
        vendor: clean(cm.manufacturer.as_deref()),
        model: clean(cm.model.as_deref()),
        serial_number: clean(cm.serial_number.as_deref()),
        part_number: clean(cm.part_number.as_deref()),
        sku: clean(cm.sku.as_deref()),
        asset_tag: clean(cm.asset_tag.as_deref()),
        description: clean(cm.description.as_deref()),
        uuid: clean(cm.uuid.as_deref()).to_ascii_lowercase(),
        device_class: DeviceClass::Server as i32,
        ..Default::default()
    };
    identity
        .attributes
        .insert("redfish_chassis".into(), path.to_owned());
    let mut template = DeviceReport::default();
    if let Some(ev) = c
        .location
        .as_ref()
        .and_then(|loc| placement_evidence(loc, path, now))
    {
        template.locations.push(ev);
    }
    let all: Vec<&Chassis> = std::iter::once(c).chain(parts.iter().map(|(_, x)| x)).collect();
    let mut systems: Vec<String> = Vec::new();
    let mut managers: Vec<String> = Vec::new();
    for x in &all {
        for l in &x.links.computer_systems {
            if let Some(id) = &l.id
                && !systems.contains(id)
            {
                systems.push(id.clone());
            }
        }
        for l in &x.links.managed_by {
            if let Some(id) = &l.id
                && !managers.contains(id)
            {
                managers.push(id.clone());
            }
        }
    }
    // Readings: the device's own resources, else the first merged part that has them (Intel:
    // RackMount → Baseboard/Power).
    let first = |f: fn(&Chassis) -> Option<&Link>| all.iter().find_map(|x| f(x).and_then(|l| l.id.clone()));
    let mut sources = Vec::new();
    let power = first(|x| x.power.as_ref());
    if let Some(pp) = &power {
        sources.push(Source::Power(pp.clone()));
        // PSU identity once per inventory, from the same resource.
        match p.get::<Power>(pp).await {
            Ok(pw) => psu_components(&pw, &mut template),
            Err(e) => partial.push(format!("{pp}: {e}")),
        }
    } else if let Some(ps) = first(|x| x.power_subsystem.as_ref()) {
        // The newer schema, only where the deprecated Power is absent (same values twice
        // otherwise).
        match p.get::<PowerSubsystem>(&ps).await {
            Ok(sub) => {
                for (i, (mpath, v)) in
                    members_docs(p, sub.power_supplies.as_ref(), expand_offered(p), partial)
                        .await
                        .unwrap_or_default()
                        .into_iter()
                        .enumerate()
                {
                    let psu: NewPowerSupply = parse(&mpath, v, partial);
                    let index = u32::try_from(i + 1).unwrap_or(u32::MAX);
                    let label = clean(psu.common.name.as_deref().or(psu.common.id.as_deref()));
                    let serial = clean(psu.common.serial_number.as_deref());
                    if !serial.is_empty() {
                        template.components.push(ComponentIdentity {
                            component: Some(Component {
                                kind: ComponentKind::Psu as i32,
                                index,
                                label: label.clone(),
                            }),
                            vendor: clean(psu.common.manufacturer.as_deref()),
                            model: clean(psu.common.model.as_deref()),
                            serial_number: serial,
                            part_number: clean(psu.common.part_number.as_deref()),
                            firmware_version: clean(psu.firmware_version.as_deref()),
                        });
                    }
                    if let Some(m) = psu.metrics.and_then(|l| l.id) {
                        sources.push(Source::PsuMetrics(m, index, label));
                    }
                }
            }
            Err(e) => partial.push(format!("{ps}: {e}")),
        }
    }
    if let Some(th) = first(|x| x.thermal.as_ref()) {
        sources.push(Source::Thermal(th));
    } else if let Some(se) = first(|x| x.sensors.as_ref()) {
        sources.push(Source::Sensors(se));
    }
    if let Some(env) = c.environment_metrics.as_ref().and_then(|l| l.id.clone()) {
        sources.push(Source::Environment(env));
    }
    if systems.len() > 1 {
        // Several computer systems behind one chassis (a multi-node chassis, an aggregator,
        // sushy-tools in front of several hosts): each is a device of its own, and the chassis,
        // with its serial, placement, power and BMC, is their enclosure.
        add_systems_and_managers(p, &[], &managers, &mut identity, partial).await;
        identity.device_class = DeviceClass::Enclosure as i32;
        template.identity = Some(identity);
        let mut enclosure = DeviceInventory { template, sources };
        let nodes = system_devices(p, &systems, &mut enclosure, partial).await;
        return (enclosure, nodes);
    }
    add_systems_and_managers(p, &systems, &managers, &mut identity, partial).await;
    let adapters: Vec<String> = all
        .iter()
        .filter_map(|x| x.network_adapters.as_ref().and_then(|l| l.id.clone()))
        .collect();
    for link in adapters {
        network_adapters(p, &link, &mut identity, &mut template, partial).await;
    }
    template.identity = Some(identity);
    (DeviceInventory { template, sources }, Vec::new())
}

/// One device per ComputerSystem in `systems`, inside `enclosure`: the system's own identity
/// (serial, model, UUID, host name or else its name) and MACs, the enclosure's rack as its
/// location (its U within the enclosure is unknown), and a `BLADE` component of the enclosure.
async fn system_devices(
    p: &Poller,
    systems: &[String],
    enclosure: &mut DeviceInventory,
    partial: &mut Vec<String>,
) -> Vec<DeviceInventory> {
    let encl = enclosure.template.identity.clone().unwrap_or_default();
    let rack_only: Vec<LocationEvidence> = enclosure
        .template
        .locations
        .iter()
        .map(|l| LocationEvidence {
            u_position: None,
            raw: format!(
                "{} (enclosure {})",
                l.raw,
                encl.attributes.get("redfish_chassis").map_or("", String::as_str)
            ),
            ..l.clone()
        })
        .collect();
    let mut out = Vec::new();
    for (n, path) in systems.iter().enumerate() {
        let mut id = DeviceIdentity {
            device_class: DeviceClass::Server as i32,
            ..Default::default()
        };
        add_systems_and_managers(p, std::slice::from_ref(path), &[], &mut id, partial).await;
        if id.hostname.is_empty()
            && let Some(name) = id.attributes.get("system_name")
        {
            id.hostname.clone_from(name);
        }
        id.attributes.insert("redfish_system".into(), path.clone());
        for (k, v) in [
            ("enclosure_serial", &encl.serial_number),
            ("enclosure_model", &encl.model),
        ] {
            id.attributes.insert(k.into(), v.clone());
        }
        enclosure.template.components.push(ComponentIdentity {
            component: Some(Component {
                kind: ComponentKind::Blade as i32,
                index: u32::try_from(n + 1).unwrap_or(u32::MAX),
                label: path.rsplit('/').next().unwrap_or(path).to_owned(),
            }),
            vendor: id.vendor.clone(),
            model: id.model.clone(),
            serial_number: id.serial_number.clone(),
            part_number: id.part_number.clone(),
            firmware_version: id.firmware_version.clone(),
        });
        out.push(DeviceInventory {
            template: DeviceReport {
                identity: Some(id),
                locations: rack_only.clone(),
                ..Default::default()
            },
            sources: Vec::new(),
        });
    }
    out
}

/// NICs with a serial become `MODULE` components; their ports' MACs are added as host MACs
/// only when the systems' EthernetInterfaces gave none (the ports cost requests).
async fn network_adapters(
    p: &Poller,
    link: &str,
    identity: &mut DeviceIdentity,
    template: &mut DeviceReport,
    partial: &mut Vec<String>,
) {
    let docs = match members_docs(
        p,
        Some(&Link {
            id: Some(link.to_owned()),
        }),
        expand_offered(p),
        partial,
    )
    .await
    {
        Ok(d) => d,
        Err(e) => {
            partial.push(format!("{link}: {e}"));
            return;
        }
    };
    let want_macs = !identity.macs.iter().any(|m| m.role == MacRole::Host as i32);
    for (path, v) in docs {
        let nic: NetworkAdapter = parse(&path, v, partial);
        let label = clean(nic.common.id.as_deref().or(nic.common.name.as_deref()));
        let serial = clean(nic.common.serial_number.as_deref());
        if !serial.is_empty() {
            let index = u32::try_from(template.components.len() + 1).unwrap_or(u32::MAX);
            template.components.push(ComponentIdentity {
                component: Some(Component {
                    kind: ComponentKind::Module as i32,
                    index,
                    label: label.clone(),
                }),
                vendor: clean(nic.common.manufacturer.as_deref()),
                model: clean(nic.common.model.as_deref()),
                serial_number: serial,
                part_number: clean(nic.common.part_number.as_deref()),
                firmware_version: String::new(),
            });
        }
        if !want_macs {
            continue;
        }
        let ports = nic.ports.or(nic.network_ports);
        let Ok(port_docs) = members_docs(p, ports.as_ref(), expand_offered(p), partial).await else {
            continue;
        };
        for (ppath, pv) in port_docs {
            let port: NicPort = parse(&ppath, pv, partial);
            for mac in port
                .associated_network_addresses
                .iter()
                .chain(port.ethernet.associated_mac_addresses.iter())
                .flatten()
                .filter_map(|m| groundtruth_proto::mac::canonical(m))
            {
                if !identity.macs.iter().any(|m| m.address == mac) {
                    identity.macs.push(MacAddress {
                        address: mac,
                        interface_name: format!("{label}/{}", clean(port.id.as_deref())),
                        role: MacRole::Host as i32,
                    });
                }
            }
        }
    }
}

async fn add_systems_and_managers(
    p: &Poller,
    systems: &[String],
    managers: &[String],
    identity: &mut DeviceIdentity,
    partial: &mut Vec<String>,
) {
    let sys_docs = futures::future::join_all(systems.iter().map(|s| p.get::<System>(s))).await;
    for (path, s) in systems.iter().zip(sys_docs) {
        let s = match s {
            Ok(s) => s,
            Err(e) => {
                partial.push(format!("{path}: {e}"));
                continue;
            }
        };
        if identity.hostname.is_empty() {
            identity.hostname = clean(s.host_name.as_deref());
        }
        // A chassis without a usable serial (none, or a placeholder such as AMI's
        // "01234567890123456789AB": common on white-box BMCs) takes the system's, when that one
        // is usable. The asset tag is usually kept on the ComputerSystem (the writable one).
        let related = [identity.model.clone(), identity.part_number.clone()];
        let related: Vec<&str> = related.iter().map(String::as_str).collect();
        for (field, value) in [
            (&mut identity.serial_number, &s.common.serial_number),
            (&mut identity.asset_tag, &s.common.asset_tag),
        ] {
            if identity::junk_reason(field, &related).is_some() {
                let theirs = clean(value.as_deref());
                if identity::junk_reason(&theirs, &related).is_none() {
                    *field = theirs;
                }
            }
        }
        for (field, value) in [
            (&mut identity.model, &s.common.model),
            (&mut identity.vendor, &s.common.manufacturer),
            (&mut identity.sku, &s.common.sku),
            (&mut identity.part_number, &s.common.part_number),
        ] {
            if field.is_empty() {
                *field = clean(value.as_deref());
            }
        }
        // The system's own identity as reported, whatever the chassis said (first system wins).
        identity_attributes(
            &mut identity.attributes,
            "system",
            &s.common,
            &[("bios_version", &s.bios_version), ("system_name", &s.common.name)],
        );
        if let Some(u) = s.common.uuid.as_deref().filter(|u| !u.trim().is_empty()) {
            identity.uuid = u.trim().to_ascii_lowercase();
        }
        collect_macs(
            p,
            s.ethernet_interfaces.as_ref(),
            MacRole::Host,
            identity,
            partial,
        )
        .await;
    }
    let mgr_docs = futures::future::join_all(managers.iter().map(|m| p.get::<Manager>(m))).await;
    for (path, m) in managers.iter().zip(mgr_docs) {
        let m = match m {
            Ok(m) => m,
            Err(e) => {
                partial.push(format!("{path}: {e}"));
                continue;
            }
        };
        if identity.firmware_version.is_empty() {
            identity.firmware_version = clean(m.firmware_version.as_deref());
        }
        identity_attributes(
            &mut identity.attributes,
            "bmc",
            &m.common,
            &[("bmc_firmware", &m.firmware_version)],
        );
        collect_macs(
            p,
            m.ethernet_interfaces.as_ref(),
            MacRole::Management,
            identity,
            partial,
        )
        .await;
    }
}

/// `<prefix>_vendor`, `_model`, `_serial`, `_part_number`, `_sku`, `_asset_tag` (and `extra`) of
/// a system or manager into the device's attributes; empty values are left out, and a key already
/// set (by an earlier system or manager) is kept.
fn identity_attributes(
    attributes: &mut std::collections::HashMap<String, String>,
    prefix: &str,
    c: &Common,
    extra: &[(&str, &Option<String>)],
) {
    let fields = [
        ("vendor", &c.manufacturer),
        ("model", &c.model),
        ("serial", &c.serial_number),
        ("part_number", &c.part_number),
        ("sku", &c.sku),
        ("asset_tag", &c.asset_tag),
    ];
    let named = fields
        .iter()
        .map(|(k, v)| (format!("{prefix}_{k}"), *v))
        .chain(extra.iter().map(|(k, v)| ((*k).to_owned(), *v)));
    for (key, value) in named {
        let v = clean(value.as_deref());
        if !v.is_empty() {
            attributes.entry(key).or_insert(v);
        }
    }
}

async fn pdu_device(
    p: &Poller,
    pdu: &PowerDistribution,
    path: &str,
    now: SystemTime,
    partial: &mut Vec<String>,
) -> DeviceInventory {
    let cm = &pdu.common;
    let mut identity = DeviceIdentity {
        vendor: clean(cm.manufacturer.as_deref()),
        model: clean(cm.model.as_deref()),
        serial_number: clean(cm.serial_number.as_deref()),
        part_number: clean(cm.part_number.as_deref()),
        sku: clean(cm.sku.as_deref()),
        asset_tag: clean(cm.asset_tag.as_deref()),
        firmware_version: clean(pdu.firmware_version.as_deref()),
        uuid: clean(cm.uuid.as_deref()).to_ascii_lowercase(),
        hostname: String::new(),
        device_class: DeviceClass::Pdu as i32,
        ..Default::default()
    };
    identity.attributes.insert("redfish_pdu".into(), path.to_owned());
    let mut template = DeviceReport::default();
    if let Some(ev) = pdu
        .location
        .as_ref()
        .and_then(|loc| placement_evidence(loc, path, now))
    {
        template.locations.push(ev);
    }
    let mut sources = Vec::new();
    if let Some(m) = pdu.metrics.as_ref().and_then(|l| l.id.clone()) {
        sources.push(Source::PduMetrics(m));
    }
    for (kind, link) in [
        (ComponentKind::Inlet, &pdu.mains),
        (ComponentKind::Outlet, &pdu.outlets),
    ] {
        let Some(cpath) = link.as_ref().and_then(|l| l.id.as_deref()) else {
            continue;
        };
        // Only the member list is needed for the inventory; each member is read every poll.
        match p.get::<Collection>(cpath).await {
            Ok(c) => {
                for (i, m) in c.members.into_iter().filter_map(|m| m.id).enumerate() {
                    let label = m.rsplit('/').next().unwrap_or_default().to_owned();
                    sources.push(Source::Metered(
                        m,
                        kind,
                        u32::try_from(i + 1).unwrap_or(u32::MAX),
                        label,
                    ));
                }
            }
            Err(e) => partial.push(format!("{cpath}: {e}")),
        }
    }
    template.identity = Some(identity);
    DeviceInventory { template, sources }
}

fn reading(
    metric: &str,
    unit: &str,
    value: f64,
    now: SystemTime,
    component: Option<Component>,
    source: String,
) -> Reading {
    Reading {
        metric: metric.into(),
        unit: unit.into(),
        value,
        observed_at: Some(now.into()),
        component,
        source,
    }
}

/// GETs a resource for its readings: with `?$select=<fields>` where the service advertised
/// `SelectQuery` (the properties the readings need, not the Oem/Redundancy/Voltages bulk), plainly
/// where it did not, where the document was already read in this poll, or once the service has
/// refused a `$select` (remembered for the endpoint's life).
async fn get_selected<T: DeserializeOwned>(
    p: &Poller,
    inv: &Inventory,
    path: &str,
    fields: &str,
) -> Result<T, DriverError> {
    use std::sync::atomic::Ordering::Relaxed;
    if inv.select && !p.endpoint.no_select.load(Relaxed) && !p.has_read(path) {
        match p.get_raw(&format!("{path}?$select={fields}")).await? {
            client::Got::Json(v) => {
                return serde_json::from_value(v).map_err(|e| DriverError::Malformed {
                    what: format!("JSON document at {path}"),
                    detail: e.to_string(),
                });
            }
            client::Got::Status(s) => {
                tracing::debug!(%s, path, "Redfish $select refused; using plain GETs.");
                p.endpoint.no_select.store(true, Relaxed);
            }
        }
    }
    p.get(path).await
}

/// Properties the readings need, per resource type (`$select`).
const SELECT_POWER: &str = "PowerControl,PowerSupplies";
const SELECT_THERMAL: &str = "Temperatures,Fans";
const SELECT_METERED: &str = "Id,Name,PowerWatts,EnergykWh,Voltage,CurrentAmps,TemperatureCelsius,PolyPhasePowerWatts,PolyPhaseCurrentAmps,PolyPhaseVoltage";
const SELECT_PSU_METRICS: &str = "InputPowerWatts,OutputPowerWatts";

/// Reads one source into readings; the error names the resource.
async fn read_source(
    p: &Poller,
    inv: &Inventory,
    s: &Source,
    now: SystemTime,
) -> Result<Vec<Reading>, String> {
    let mut out = Vec::new();
    match s {
        Source::Power(path) => {
            let pw: Power = get_selected(p, inv, path, SELECT_POWER)
                .await
                .map_err(|e| format!("{path}: {e}"))?;
            let mut r = DeviceReport::default();
            power_readings(&pw, path, now, &mut r);
            out = r.readings;
        }
        Source::Thermal(path) => {
            let th: Thermal = get_selected(p, inv, path, SELECT_THERMAL)
                .await
                .map_err(|e| format!("{path}: {e}"))?;
            for (i, t) in th.temperatures.iter().enumerate() {
                // A null reading is "not reported", not zero.
                if let Some(v) = t.reading_celsius {
                    let label = clean(t.name.as_deref().or(t.member_id.as_deref()));
                    out.push(reading(
                        "temperature",
                        "Cel",
                        v,
                        now,
                        Some(Component {
                            kind: ComponentKind::Sensor as i32,
                            index: u32::try_from(i + 1).unwrap_or(u32::MAX),
                            label,
                        }),
                        format!("{path}#/Temperatures/{i}/ReadingCelsius"),
                    ));
                }
            }
            for (i, f) in th.fans.iter().enumerate() {
                if let Some(v) = f.reading {
                    let (metric, unit) = match f.reading_units.as_deref() {
                        Some("Percent") => ("load", "%"),
                        _ => ("fan_speed", "{rpm}"),
                    };
                    let label = clean(
                        f.name
                            .as_deref()
                            .or(f.fan_name.as_deref())
                            .or(f.member_id.as_deref()),
                    );
                    out.push(reading(
                        metric,
                        unit,
                        v,
                        now,
                        Some(Component {
                            kind: ComponentKind::Fan as i32,
                            index: u32::try_from(i + 1).unwrap_or(u32::MAX),
                            label,
                        }),
                        format!("{path}#/Fans/{i}/Reading"),
                    ));
                }
            }
        }
        Source::Sensors(path) => {
            // One `$expand` request for the collection and its members where offered, else one
            // GET each.
            let mut failed = Vec::new();
            let link = Link {
                id: Some(path.clone()),
            };
            let docs = members_docs(p, Some(&link), inv.expand, &mut failed)
                .await
                .map_err(|e| format!("{path}: {e}"))?;
            if !failed.is_empty() {
                return Err(failed.join("; "));
            }
            for (i, (mpath, v)) in docs.into_iter().enumerate() {
                let d: SensorDoc =
                    serde_json::from_value(v).map_err(|e| format!("{mpath}: malformed: {e}"))?;
                if let Some(r) = sensor_reading(&d, &mpath, u32::try_from(i + 1).unwrap_or(u32::MAX), now) {
                    out.push(r);
                }
            }
        }
        Source::Environment(path) | Source::PduMetrics(path) => {
            let m: Metered = get_selected(p, inv, path, SELECT_METERED)
                .await
                .map_err(|e| format!("{path}: {e}"))?;
            metered_readings(&m, path, now, None, &mut out);
        }
        Source::Metered(path, kind, index, label) => {
            let m: Metered = get_selected(p, inv, path, SELECT_METERED)
                .await
                .map_err(|e| format!("{path}: {e}"))?;
            let label = clean(m.id.as_deref().or(Some(label.as_str())));
            // Per-line values of a polyphase mains circuit: PHASE components, index = inlet
            // index × 100 + position, label "<inlet> <line>". Outlets are single-phase and say
            // the same values without the PolyPhase wrapper: not repeated.
            let phases = if *kind == ComponentKind::Inlet {
                vec![
                    ("power", "W", "PolyPhasePowerWatts", &m.poly_phase_power_watts),
                    ("current", "A", "PolyPhaseCurrentAmps", &m.poly_phase_current_amps),
                    ("voltage", "V", "PolyPhaseVoltage", &m.poly_phase_voltage),
                ]
            } else {
                vec![]
            };
            for (metric, unit, field, map) in phases {
                for (n, (line, v)) in map.iter().enumerate() {
                    if let Some(value) = v.reading {
                        out.push(reading(
                            metric,
                            unit,
                            value,
                            now,
                            Some(Component {
                                kind: ComponentKind::Phase as i32,
                                index: index
                                    .saturating_mul(100)
                                    .saturating_add(u32::try_from(n + 1).unwrap_or(99)),
                                label: format!("{label} {line}"),
                            }),
                            format!("{path}#/{field}/{line}/Reading"),
                        ));
                    }
                }
            }
            metered_readings(
                &m,
                path,
                now,
                Some(Component {
                    kind: *kind as i32,
                    index: *index,
                    label,
                }),
                &mut out,
            );
        }
        Source::PsuMetrics(path, index, label) => {
            let m: PowerSupplyMetrics = get_selected(p, inv, path, SELECT_PSU_METRICS)
                .await
                .map_err(|e| format!("{path}: {e}"))?;
            let component = Component {
                kind: ComponentKind::Psu as i32,
                index: *index,
                label: label.clone(),
            };
            if let Some(v) = m.output_power_watts.and_then(|x| x.reading) {
                out.push(reading(
                    "power",
                    "W",
                    v,
                    now,
                    Some(component.clone()),
                    format!("{path}#/OutputPowerWatts"),
                ));
            }
            if let Some(v) = m.input_power_watts.and_then(|x| x.reading) {
                out.push(reading(
                    "input_power",
                    "W",
                    v,
                    now,
                    Some(component),
                    format!("{path}#/InputPowerWatts"),
                ));
            }
        }
    }
    Ok(out)
}

/// Temperatures and fan speeds from a Sensor; other types come from Power/EnvironmentMetrics.
fn sensor_reading(d: &SensorDoc, path: &str, index: u32, now: SystemTime) -> Option<Reading> {
    let value = d.reading?;
    let (metric, unit, kind) = match (d.reading_type.as_deref(), d.reading_units.as_deref()) {
        (Some("Temperature"), _) => ("temperature", "Cel", ComponentKind::Sensor),
        (Some("Rotational"), Some("Percent" | "%")) => ("load", "%", ComponentKind::Fan),
        (Some("Rotational"), _) => ("fan_speed", "{rpm}", ComponentKind::Fan),
        _ => return None,
    };
    Some(reading(
        metric,
        unit,
        value,
        now,
        Some(Component {
            kind: kind as i32,
            index,
            label: clean(d.name.as_deref().or(d.id.as_deref())),
        }),
        format!("{path}#/Reading"),
    ))
}

fn metered_readings(
    m: &Metered,
    path: &str,
    now: SystemTime,
    component: Option<Component>,
    out: &mut Vec<Reading>,
) {
    for (metric, unit, field, value) in [
        ("power", "W", "PowerWatts", &m.power_watts),
        ("energy", "kW.h", "EnergykWh", &m.energy_kwh),
        ("voltage", "V", "Voltage", &m.voltage),
        ("current", "A", "CurrentAmps", &m.current_amps),
        ("temperature", "Cel", "TemperatureCelsius", &m.temperature_celsius),
    ] {
        if let Some(v) = value.as_ref().and_then(|x| x.reading) {
            out.push(reading(
                metric,
                unit,
                v,
                now,
                component.clone(),
                format!("{path}#/{field}/Reading"),
            ));
        }
    }
}

async fn collect_macs(
    p: &Poller,
    link: Option<&Link>,
    role: MacRole,
    identity: &mut DeviceIdentity,
    partial: &mut Vec<String>,
) {
    let docs = match members_docs(p, link, expand_offered(p), partial).await {
        Ok(d) => d,
        Err(e) => {
            let path = link.and_then(|l| l.id.as_deref()).unwrap_or("EthernetInterfaces");
            partial.push(format!("{path}: {e}"));
            return;
        }
    };
    for (path, v) in docs {
        match serde_json::from_value::<EthernetInterface>(v) {
            Ok(nic) => {
                let mac = nic
                    .permanent_mac_address
                    .as_deref()
                    .and_then(groundtruth_proto::mac::canonical)
                    .or_else(|| {
                        nic.mac_address
                            .as_deref()
                            .and_then(groundtruth_proto::mac::canonical)
                    });
                if let Some(mac) = mac
                    && !identity.macs.iter().any(|m| m.address == mac)
                {
                    identity.macs.push(MacAddress {
                        address: mac,
                        interface_name: clean(nic.id.as_deref()),
                        role: role as i32,
                    });
                }
            }
            Err(e) => partial.push(format!("{path}: malformed: {e}")),
        }
    }
}

/// The service root offered `$expand` (read by the inventory being built).
fn expand_offered(p: &Poller) -> bool {
    p.endpoint
        .expand_offered
        .load(std::sync::atomic::Ordering::Relaxed)
}

/// Fuzzing entry point (`fuzz/` workspace and the corpus replay test): one HTTP body as a BMC
/// might send it, through the same JSON steps as `Fetcher::get` and every lenient model, then
/// into readings and placement evidence. Not an API.
#[doc(hidden)]
pub fn fuzz_json(body: &[u8]) {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(body) else {
        return;
    };
    let _ = value.get("error").and_then(|e| e.get("message"));
    let now = SystemTime::UNIX_EPOCH;
    if let Ok(c) = serde_json::from_value::<Chassis>(value.clone()) {
        let _ = is_subunit(c.chassis_type.as_deref());
        if let Some(loc) = &c.location {
            let _ = placement_evidence(loc, "/redfish/v1/Chassis/1", now);
        }
    }
    if let Ok(p) = serde_json::from_value::<Power>(value.clone()) {
        let mut report = DeviceReport::default();
        power_readings(&p, "/redfish/v1/Chassis/1/Power", now, &mut report);
    }
    let _ = serde_json::from_value::<ServiceRoot>(value.clone());
    let _ = serde_json::from_value::<Collection>(value.clone());
    let _ = serde_json::from_value::<System>(value.clone());
    let _ = serde_json::from_value::<Manager>(value.clone());
    let _ = serde_json::from_value::<EthernetInterface>(value);
}

fn placement_evidence(loc: &Location, chassis_path: &str, now: SystemTime) -> Option<LocationEvidence> {
    let p = loc.placement.as_ref();
    let addr = loc.postal_address.as_ref();
    let rack = clean(p.and_then(|p| p.rack.as_deref()));
    let row = clean(p.and_then(|p| p.row.as_deref()));
    let room = clean(addr.and_then(|a| a.room.as_deref()));
    let site = clean(addr.and_then(|a| a.building.as_deref()));
    if rack.is_empty() && row.is_empty() && room.is_empty() && site.is_empty() {
        return None;
    }
    // RackOffset counts rack units from the bottom for EIA_310 (and is the usual meaning when
    // the unit is missing); OpenU and other units are not converted yet.
    let u_position = p.and_then(|p| {
        let units_ok = matches!(p.rack_offset_units.as_deref(), None | Some("EIA_310"));
        p.rack_offset
            .filter(|o| units_ok && *o >= 1.0 && *o <= 100.0 && o.fract() == 0.0)
            .map(|o| o as u32)
    });
    Some(LocationEvidence {
        source: LocationSource::RedfishPlacement as i32,
        site,
        room,
        row,
        rack,
        u_position,
        confidence: 0.9,
        raw: format!("{chassis_path} Location"),
        observed_at: Some(now.into()),
        ..Default::default()
    })
}

/// PSUs with a serial become components (inventory).
fn psu_components(p: &Power, report: &mut DeviceReport) {
    for (i, psu) in p.power_supplies.iter().enumerate() {
        let serial = clean(psu.common.serial_number.as_deref());
        if serial.is_empty() {
            continue;
        }
        report.components.push(ComponentIdentity {
            component: Some(Component {
                kind: ComponentKind::Psu as i32,
                index: u32::try_from(i + 1).unwrap_or(u32::MAX),
                label: clean(psu.common.name.as_deref().or(psu.member_id.as_deref())),
            }),
            vendor: clean(psu.common.manufacturer.as_deref()),
            model: clean(psu.common.model.as_deref()),
            serial_number: serial,
            part_number: clean(psu.common.part_number.as_deref()),
            firmware_version: clean(psu.firmware_version.as_deref()),
        });
    }
}

/// `PowerConsumedWatts` (the device's `power`), PSU output (`power`) and input (`input_power`)
/// watts. Nulls are skipped.
fn power_readings(p: &Power, path: &str, now: SystemTime, report: &mut DeviceReport) {
    if let Some(w) = p.power_control.iter().find_map(|c| c.power_consumed_watts) {
        report.readings.push(reading(
            "power",
            "W",
            w,
            now,
            None,
            format!("{path}#/PowerControl/PowerConsumedWatts"),
        ));
    }
    for (i, psu) in p.power_supplies.iter().enumerate() {
        let component = Component {
            kind: ComponentKind::Psu as i32,
            index: u32::try_from(i + 1).unwrap_or(u32::MAX),
            label: clean(psu.common.name.as_deref().or(psu.member_id.as_deref())),
        };
        if let Some(w) = psu.last_power_output_watts {
            report.readings.push(reading(
                "power",
                "W",
                w,
                now,
                Some(component.clone()),
                format!("{path}#/PowerSupplies/{i}/LastPowerOutputWatts"),
            ));
        }
        if let Some(w) = psu.power_input_watts {
            report.readings.push(reading(
                "input_power",
                "W",
                w,
                now,
                Some(component),
                format!("{path}#/PowerSupplies/{i}/PowerInputWatts"),
            ));
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn lenient_models_accept_nulls_strings_and_oem_noise() {
        let c: Chassis = serde_json::from_str(
            r#"{"@odata.id":"/redfish/v1/Chassis/1","SerialNumber":null,"Model":42,
                "Links":null,"Location":{"Placement":{"Rack":"R1","RackOffset":"12"}},
                "Oem":{"Vendor":{"x":[1,2,3]}}}"#,
        )
        .unwrap();
        assert_eq!(c.common.serial_number, None);
        assert_eq!(c.common.model.as_deref(), Some("42"));
        assert!(c.links.computer_systems.is_empty());
        let ev = placement_evidence(c.location.as_ref().unwrap(), "/x", SystemTime::UNIX_EPOCH).unwrap();
        assert_eq!((ev.rack.as_str(), ev.u_position), ("R1", Some(12)));
    }

    #[test]
    fn links_accept_arrays_and_bare_strings() {
        let l: ChassisLinks = serde_json::from_str(
            r#"{"ContainedBy":[{"@odata.id":"/a"}],"ComputerSystems":["/s1",{"@odata.id":"/s2"},7]}"#,
        )
        .unwrap();
        assert_eq!(l.contained_by.unwrap().id.as_deref(), Some("/a"));
        let ids: Vec<_> = l.computer_systems.iter().map(|x| x.id.clone()).collect();
        assert_eq!(ids, vec![Some("/s1".into()), Some("/s2".into()), None]);
    }

    #[test]
    fn placement_in_open_u_is_not_taken_as_eia_u() {
        let loc: Location =
            serde_json::from_str(r#"{"Placement":{"Rack":"R1","RackOffset":7,"RackOffsetUnits":"OpenU"}}"#)
                .unwrap();
        let ev = placement_evidence(&loc, "/x", SystemTime::UNIX_EPOCH).unwrap();
        assert_eq!(ev.u_position, None);
        assert_eq!(ev.rack, "R1");
    }

    #[test]
    fn sensors_give_temperatures_and_fans_and_nulls_are_absent() {
        let t: SensorDoc =
            serde_json::from_str(r#"{"Name":"Inlet","ReadingType":"Temperature","Reading":"21.5"}"#).unwrap();
        let r = sensor_reading(&t, "/s/1", 1, SystemTime::UNIX_EPOCH).unwrap();
        assert_eq!((r.metric.as_str(), r.value), ("temperature", 21.5));
        assert_eq!(r.component.unwrap().label, "Inlet");
        let f: SensorDoc = serde_json::from_str(
            r#"{"Id":"Fan1","ReadingType":"Rotational","Reading":5400,"ReadingUnits":"RPM"}"#,
        )
        .unwrap();
        assert_eq!(
            sensor_reading(&f, "/s/2", 2, SystemTime::UNIX_EPOCH)
                .unwrap()
                .metric,
            "fan_speed"
        );
        let n: SensorDoc = serde_json::from_str(r#"{"ReadingType":"Temperature","Reading":null}"#).unwrap();
        assert!(sensor_reading(&n, "/s/3", 3, SystemTime::UNIX_EPOCH).is_none());
        let w: SensorDoc = serde_json::from_str(r#"{"ReadingType":"Power","Reading":100}"#).unwrap();
        assert!(sensor_reading(&w, "/s/4", 4, SystemTime::UNIX_EPOCH).is_none());
    }

    #[test]
    fn power_readings_take_consumed_watts_and_psu_outputs() {
        let p: Power = serde_json::from_str(
            r#"{"PowerControl":[{"PowerConsumedWatts":null},{"PowerConsumedWatts":344}],
                "PowerSupplies":[{"Name":"PS1","LastPowerOutputWatts":205,"SerialNumber":"S1"},
                                 {"MemberId":"1","LastPowerOutputWatts":"207"}]}"#,
        )
        .unwrap();
        let mut r = DeviceReport::default();
        power_readings(&p, "/p", SystemTime::UNIX_EPOCH, &mut r);
        psu_components(&p, &mut r);
        let values: Vec<f64> = r.readings.iter().map(|x| x.value).collect();
        assert_eq!(values, vec![344.0, 205.0, 207.0]);
        assert_eq!(r.components.len(), 1);
        assert_eq!(r.readings[2].component.as_ref().unwrap().label, "1");
    }
}
