//! Redfish driver: identity, MACs, power and rack placement from a BMC's REST API.
//!
//! Real BMCs violate the schema (nulls, missing "required" properties, numbers as strings, OEM
//! blobs), so the models here are lenient: every property optional, unknown ones ignored, lists
//! that arrive as `null` read as empty. Only the resources needed are fetched (no crawl): the
//! service root, the Chassis/Systems/Managers collections and members, each chassis' Power, and
//! each system's and manager's EthernetInterfaces, bounded by `Limits::max_resources`.
//!
//! Walking-skeleton scope (issue #3): one report per service, built from the primary chassis.
//! Sessions, PDUs, `$expand`, Thermal/Sensors and per-chassis reports are issue #6.

use std::time::SystemTime;

use groundtruth_proto::v1::{
    Component, ComponentIdentity, ComponentKind, DeviceClass, DeviceIdentity, DeviceReport, LocationEvidence,
    LocationSource, MacAddress, MacRole, PollOutcome, PollStatus, Reading,
};
use serde::{Deserialize, Deserializer, de::DeserializeOwned};

use super::{DriverError, PollCx, clean};
use crate::target::RedfishTarget;

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
    #[serde(rename = "UUID", deserialize_with = "lenient_string")]
    uuid: Option<String>,
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
    ethernet_interfaces: Option<Link>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
struct Manager {
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
// Fetching
// ----------------------------------------------------------------------------------------------

struct Fetcher<'a> {
    http: reqwest::Client,
    target: &'a RedfishTarget,
    cx: &'a PollCx,
    fetched: usize,
}

impl Fetcher<'_> {
    /// GETs one resource by its `@odata.id` path and parses it leniently.
    async fn get<T: DeserializeOwned>(&mut self, path: &str) -> Result<T, DriverError> {
        if !path.starts_with('/') {
            return Err(DriverError::Malformed {
                what: "link".into(),
                detail: format!("@odata.id {path:?} is not an absolute path"),
            });
        }
        if self.fetched >= self.cx.limits.max_resources {
            return Err(DriverError::TooLarge {
                what: "resources fetched in one poll".into(),
                limit: self.cx.limits.max_resources as u64,
            });
        }
        self.fetched += 1;
        let url = self.target.base.join(path).map_err(|e| DriverError::Malformed {
            what: "link".into(),
            detail: format!("{path:?}: {e}"),
        })?;
        let mut req = self.http.get(url).header("Accept", "application/json");
        if let Some(user) = &self.target.user {
            req = req.basic_auth(user, self.target.password.as_ref().map(|p| p.expose().to_owned()));
        }
        let resp = req.send().await.map_err(|e| self.request_error(path, &e))?;
        let status = resp.status();
        if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
            return Err(DriverError::Auth {
                detail: format!("HTTP {status} for {path}"),
            });
        }
        if !status.is_success() {
            return Err(DriverError::DeviceException(format!("HTTP {status} for {path}")));
        }
        let body = crate::io::read_capped(resp, self.cx.limits.max_body_bytes, path).await?;
        // serde_json's recursion limit (128) stays on: deep JSON is refused, not followed.
        let malformed = |e: serde_json::Error| DriverError::Malformed {
            what: format!("JSON document at {path}"),
            detail: e.to_string(),
        };
        let value: serde_json::Value = serde_json::from_slice(&body).map_err(malformed)?;
        // A Redfish error object served with 200 (seen in real captures) is an error, not an
        // empty resource.
        if let Some(err) = value.get("error").filter(|_| value.get("@odata.id").is_none()) {
            let msg = err
                .get("message")
                .and_then(|m| m.as_str())
                .unwrap_or("no message");
            return Err(DriverError::DeviceException(format!(
                "{path}: Redfish error: {msg}"
            )));
        }
        serde_json::from_value(value).map_err(malformed)
    }

    fn request_error(&self, path: &str, e: &reqwest::Error) -> DriverError {
        let detail = crate::io::error_chain(e);
        if e.is_timeout() {
            DriverError::Timeout {
                what: format!("GET {path}"),
                after: self.cx.limits.request_timeout,
            }
        } else if detail.contains("certificate") || detail.contains("UnknownIssuer") || detail.contains("tls")
        {
            DriverError::Tls(format!(
                "{detail} (give the BMC's CA with --ca-file, or ?insecure to skip verification)"
            ))
        } else {
            DriverError::Connect {
                endpoint: self.target.base.to_string(),
                detail,
            }
        }
    }

    async fn members(&mut self, link: Option<&Link>) -> Result<Vec<String>, DriverError> {
        let Some(path) = link.and_then(|l| l.id.as_deref()) else {
            return Ok(vec![]);
        };
        let c: Collection = self.get(path).await?;
        Ok(c.members.into_iter().filter_map(|m| m.id).collect())
    }
}

fn http_client(t: &RedfishTarget, cx: &PollCx) -> Result<reqwest::Client, DriverError> {
    crate::install_crypto_provider();
    let mut b = reqwest::Client::builder()
        .timeout(cx.limits.request_timeout)
        .connect_timeout(cx.limits.request_timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("groundtruth-agent/", env!("CARGO_PKG_VERSION")));
    if !t.verify_tls {
        b = b.tls_danger_accept_invalid_certs(true);
    } else if let Some(ca) = &t.ca_file {
        let pem = std::fs::read(ca)
            .map_err(|e| DriverError::Tls(format!("cannot read CA file {}: {e}", ca.display())))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| DriverError::Tls(format!("CA file {} is not PEM: {e}", ca.display())))?;
        b = b.tls_certs_only(certs);
    }
    b.build()
        .map_err(|e| DriverError::Tls(format!("building the HTTP client: {e}")))
}

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

/// Polls a Redfish service once.
pub async fn poll(t: &RedfishTarget, cx: &PollCx) -> Result<DeviceReport, DriverError> {
    let mut f = Fetcher {
        http: http_client(t, cx)?,
        target: t,
        cx,
        fetched: 0,
    };
    let now = SystemTime::now();
    let root: ServiceRoot = f.get("/redfish/v1/").await?;
    let mut partial = Vec::new();

    // Pick the primary chassis: the first top-level chassis that holds a computer system, else
    // the first top-level one, else the first.
    let mut chassis = Vec::new();
    for path in f.members(root.chassis.as_ref()).await? {
        match f.get::<Chassis>(&path).await {
            Ok(c) => chassis.push(c),
            Err(e) => partial.push(format!("{path}: {e}")),
        }
    }
    let primary_idx = chassis
        .iter()
        .position(|c| !c.links.computer_systems.is_empty() && !is_subunit(c.chassis_type.as_deref()))
        .or_else(|| {
            chassis
                .iter()
                .position(|c| c.links.contained_by.is_none() && !is_subunit(c.chassis_type.as_deref()))
        })
        .or(if chassis.is_empty() { None } else { Some(0) });
    let primary = primary_idx.map(|i| chassis.swap_remove(i));

    let mut identity = DeviceIdentity {
        address: t
            .base
            .host_str()
            .map(|h| format!("{h}:{}", t.base.port_or_known_default().unwrap_or(443)))
            .unwrap_or_default(),
        device_class: DeviceClass::Server as i32,
        uuid: clean(root.uuid.as_deref()).to_ascii_lowercase(),
        ..Default::default()
    };
    let mut report = DeviceReport::default();

    let mut system_paths = Vec::new();
    let mut manager_paths = Vec::new();
    if let Some(c) = &primary {
        let cm = &c.common;
        identity.vendor = clean(cm.manufacturer.as_deref());
        identity.model = clean(cm.model.as_deref());
        identity.serial_number = clean(cm.serial_number.as_deref());
        identity.part_number = clean(cm.part_number.as_deref());
        identity.sku = clean(cm.sku.as_deref());
        identity.asset_tag = clean(cm.asset_tag.as_deref());
        identity.description = clean(cm.description.as_deref());
        identity.device_class = match c.chassis_type.as_deref() {
            Some("Enclosure") => DeviceClass::Enclosure as i32,
            _ => DeviceClass::Server as i32,
        };
        let chassis_path = cm.odata_id.clone().unwrap_or_default();
        if let Some(ev) = c
            .location
            .as_ref()
            .and_then(|loc| placement_evidence(loc, &chassis_path, now))
        {
            report.locations.push(ev);
        }
        system_paths.extend(c.links.computer_systems.iter().filter_map(|l| l.id.clone()));
        manager_paths.extend(c.links.managed_by.iter().filter_map(|l| l.id.clone()));
        // Some BMCs hang Power off a chassis contained in the primary one (Intel: RackMount →
        // Baseboard/Power); use the first such when the primary has none.
        let power_link = c.power.as_ref().and_then(|l| l.id.clone()).or_else(|| {
            chassis
                .iter()
                .filter(|x| {
                    x.links.contained_by.as_ref().and_then(|l| l.id.as_deref()) == cm.odata_id.as_deref()
                })
                .find_map(|x| x.power.as_ref().and_then(|l| l.id.clone()))
        });
        if let Some(power) = power_link {
            match f.get::<Power>(&power).await {
                Ok(p) => power_readings(&p, &power, now, &mut report),
                Err(e) => partial.push(format!("{power}: {e}")),
            }
        }
    }
    // Services without chassis links still list their systems and managers at the root.
    if system_paths.is_empty() {
        system_paths = f.members(root.systems.as_ref()).await.unwrap_or_default();
    }
    if manager_paths.is_empty() {
        manager_paths = f.members(root.managers.as_ref()).await.unwrap_or_default();
    }

    for path in &system_paths {
        let s: System = match f.get(path).await {
            Ok(s) => s,
            Err(e) => {
                partial.push(format!("{path}: {e}"));
                continue;
            }
        };
        if identity.hostname.is_empty() {
            identity.hostname = clean(s.host_name.as_deref());
        }
        // A chassis without its own serial (common on white-box BMCs) borrows the system's.
        for (field, value) in [
            (&mut identity.serial_number, &s.common.serial_number),
            (&mut identity.model, &s.common.model),
            (&mut identity.vendor, &s.common.manufacturer),
            (&mut identity.sku, &s.common.sku),
        ] {
            if field.is_empty() {
                *field = clean(value.as_deref());
            }
        }
        if let Some(u) = s.common.uuid.as_deref().filter(|u| !u.trim().is_empty()) {
            identity.uuid = u.trim().to_ascii_lowercase();
        }
        collect_macs(
            &mut f,
            s.ethernet_interfaces.as_ref(),
            MacRole::Host,
            &mut identity,
            &mut partial,
        )
        .await;
    }
    for path in &manager_paths {
        let m: Manager = match f.get(path).await {
            Ok(m) => m,
            Err(e) => {
                partial.push(format!("{path}: {e}"));
                continue;
            }
        };
        if identity.firmware_version.is_empty() {
            identity.firmware_version = clean(m.firmware_version.as_deref());
        }
        collect_macs(
            &mut f,
            m.ethernet_interfaces.as_ref(),
            MacRole::Management,
            &mut identity,
            &mut partial,
        )
        .await;
    }

    report.identity = Some(identity);
    if !partial.is_empty() {
        report.status = Some(PollStatus {
            outcome: PollOutcome::Partial as i32,
            message: format!("{} resource(s) could not be read", partial.len()),
            partial_errors: partial,
        });
    }
    Ok(report)
}

async fn collect_macs(
    f: &mut Fetcher<'_>,
    link: Option<&Link>,
    role: MacRole,
    identity: &mut DeviceIdentity,
    partial: &mut Vec<String>,
) {
    let paths = match f.members(link).await {
        Ok(p) => p,
        Err(e) => {
            partial.push(format!("EthernetInterfaces: {e}"));
            return;
        }
    };
    for path in paths {
        match f.get::<EthernetInterface>(&path).await {
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
            Err(e) => partial.push(format!("{path}: {e}")),
        }
    }
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

fn power_readings(p: &Power, path: &str, now: SystemTime, report: &mut DeviceReport) {
    if let Some(w) = p.power_control.iter().find_map(|c| c.power_consumed_watts) {
        report.readings.push(Reading {
            metric: "power".into(),
            unit: "W".into(),
            value: w,
            observed_at: Some(now.into()),
            component: None,
            source: format!("{path}#/PowerControl/PowerConsumedWatts"),
        });
    }
    for (i, psu) in p.power_supplies.iter().enumerate() {
        let index = u32::try_from(i + 1).unwrap_or(u32::MAX);
        let label = clean(psu.common.name.as_deref().or(psu.member_id.as_deref()));
        let component = Component {
            kind: ComponentKind::Psu as i32,
            index,
            label,
        };
        if let Some(w) = psu.last_power_output_watts {
            report.readings.push(Reading {
                metric: "power".into(),
                unit: "W".into(),
                value: w,
                observed_at: Some(now.into()),
                component: Some(component.clone()),
                source: format!("{path}#/PowerSupplies/{i}/LastPowerOutputWatts"),
            });
        }
        let serial = clean(psu.common.serial_number.as_deref());
        if !serial.is_empty() {
            report.components.push(ComponentIdentity {
                component: Some(component),
                vendor: clean(psu.common.manufacturer.as_deref()),
                model: clean(psu.common.model.as_deref()),
                serial_number: serial,
                part_number: clean(psu.common.part_number.as_deref()),
                firmware_version: clean(psu.firmware_version.as_deref()),
            });
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
    fn power_readings_take_consumed_watts_and_psu_outputs() {
        let p: Power = serde_json::from_str(
            r#"{"PowerControl":[{"PowerConsumedWatts":null},{"PowerConsumedWatts":344}],
                "PowerSupplies":[{"Name":"PS1","LastPowerOutputWatts":205,"SerialNumber":"S1"},
                                 {"MemberId":"1","LastPowerOutputWatts":"207"}]}"#,
        )
        .unwrap();
        let mut r = DeviceReport::default();
        power_readings(&p, "/p", SystemTime::UNIX_EPOCH, &mut r);
        let values: Vec<f64> = r.readings.iter().map(|x| x.value).collect();
        assert_eq!(values, vec![344.0, 205.0, 207.0]);
        assert_eq!(r.components.len(), 1);
        assert_eq!(r.readings[2].component.as_ref().unwrap().label, "1");
    }
}
