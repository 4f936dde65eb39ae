//! IPMI over LAN driver (issue #7): IPMI 2.0 RMCP+ sessions (cipher suites 3 and 17) and IPMI
//! 1.5 sessions (MD5 or straight password, `?v15=`), our own implementation (no crate does RMCP+ with USER-role accounts, SHA-256 suites, SDR and FRU;
//! see `../shared/CRATES.md`).
//!
//! Layers, tokio-modbus style: [`rmcp`] (codec: bytes ↔ frames, pure) → [`session`] (RMCP+
//! session setup, keys, integrity, confidentiality, retries) → this module (commands → report),
//! with [`fru`] and [`sdr`] as pure parsers of what the commands return.
//!
//! One session per poll, reused for every command, closed at the end (also when the poll fails
//! half-way; a dropped session sends its Close Session without waiting). What a poll reads:
//!
//! | command | netfn/cmd | becomes |
//! |---|---|---|
//! | Get Device ID | 06h/01h | firmware, vendor (IANA id), attributes |
//! | Get System GUID | 06h/37h | `uuid` |
//! | Get Chassis Status | 00h/01h | `chassis.power` attribute + `status` reading (1 on, 0 off) |
//! | FRU 0 + FRUs from FRU-locator SDRs | 0Ah/10h, 11h | serials, model, part, asset tag, PSU components |
//! | SDR repository | 0Ah/20h, 22h, 23h | sensor list (cached per endpoint until its timestamps change) |
//! | Get Sensor Reading | 04h/2Dh | temperature, fan_speed, voltage, current, power readings; discrete `status` |
//! | Get LAN Configuration Parameters | 0Ch/02h | BMC MAC (management), IP, gateway |
//! | DCMI Get Power Reading | 2Ch/02h | device `power`; SDR power sensors when unsupported |
//!
//! A failing command after the session is up makes the poll PARTIAL (named in `partial_errors`),
//! unless the BMC stopped answering altogether, which fails the poll.

mod fru;
mod rmcp;
mod sdr;
mod session;

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::SystemTime;

use groundtruth_proto::v1::{
    Component, ComponentIdentity, ComponentKind, DeviceClass, DeviceIdentity, DeviceReport, LocationEvidence,
    LocationSource, MacAddress, MacRole, PollOutcome, PollStatus, Reading,
};

use self::sdr::{Record, Sensor};
use self::session::{OpenParams, ROLE_REFUSED, Session, cc_error};
use super::{DriverError, PollCx, clean};
use crate::target::{IpmiCipherSuite, IpmiPrivilege, IpmiTarget, IpmiV15Auth};

/// Most SDRs read from one repository (real BMCs have 50–300).
const MAX_SDR_RECORDS: usize = 1024;
/// Largest FRU image read (FRU areas are usually < 1 KiB).
const MAX_FRU_BYTES: usize = 8 * 1024;
/// Read FRU Data chunk: 32 bytes fits every BMC's message buffer; halved on "too large".
const FRU_CHUNK: u8 = 32;

mod netfn {
    pub(super) const CHASSIS: u8 = 0x00;
    pub(super) const SENSOR: u8 = 0x04;
    pub(super) const APP: u8 = 0x06;
    pub(super) const STORAGE: u8 = 0x0A;
    pub(super) const TRANSPORT: u8 = 0x0C;
    pub(super) const GROUP_EXT: u8 = 0x2C;
}

/// Polls a BMC over IPMI once.
///
/// # Errors
/// When no session can be established (unreachable, credentials, cipher suite) or the BMC stops
/// answering; failures of single commands are reported as a partial poll instead.
pub async fn poll(t: &IpmiTarget, cx: &PollCx) -> Result<DeviceReport, DriverError> {
    let roles: &[IpmiPrivilege] = match t.privilege {
        Some(IpmiPrivilege::Admin) => &[IpmiPrivilege::Admin],
        Some(IpmiPrivilege::Operator) => &[IpmiPrivilege::Operator],
        Some(IpmiPrivilege::User) => &[IpmiPrivilege::User],
        None => &[IpmiPrivilege::Admin, IpmiPrivilege::Operator, IpmiPrivilege::User],
    };
    let mut session = None;
    let mut last_err = None;
    for &privilege in roles {
        let params = OpenParams {
            host: &t.host,
            port: t.port,
            user: &t.user,
            password: t.password.expose(),
            suite: t.cipher,
            privilege,
            v15: t.v15,
        };
        match Session::open(&params, &cx.limits).await {
            Ok(s) => {
                session = Some(s);
                break;
            }
            Err(DriverError::Auth { detail }) if detail.starts_with(ROLE_REFUSED) => {
                last_err = Some(DriverError::Auth { detail });
            }
            Err(e) => return Err(e),
        }
    }
    let Some(mut s) = session else {
        return Err(last_err.unwrap_or(DriverError::Auth {
            detail: ROLE_REFUSED.into(),
        }));
    };
    // RMCP+ sessions start at User level on many BMCs (ipmi_sim among them): raise it with Set
    // Session Privilege Level (App 3Bh), stepping down when the account may not go that high.
    if let Err(e) = raise_privilege(&mut s, t.privilege.is_none()).await {
        s.close().await;
        return Err(e);
    }
    let endpoint = format!(
        "ipmi://{}",
        if t.host.contains(':') {
            format!("[{}]:{}", t.host, t.port)
        } else {
            format!("{}:{}", t.host, t.port)
        }
    );
    // Identity (GUID, FRUs, LAN) only when due (driver::PollScope); readings every poll.
    let identity_due = cx.scope.wants(crate::driver::Kind::Identity);
    let result = collect(&mut s, t, &endpoint, identity_due).await;
    s.close().await;
    result
}

async fn raise_privilege(s: &mut Session, step_down: bool) -> Result<(), DriverError> {
    let mut level = s.privilege;
    loop {
        if level == IpmiPrivilege::User {
            s.privilege = level;
            return Ok(());
        }
        let r = s
            .raw(netfn::APP, 0x3B, &[level as u8], "Set Session Privilege Level")
            .await?;
        if r.completion_code == 0 {
            s.privilege = level;
            return Ok(());
        }
        if !step_down {
            return Err(DriverError::Auth {
                detail: format!(
                    "{ROLE_REFUSED}: Set Session Privilege Level to {} answered {:#04x}",
                    format!("{level:?}").to_lowercase(),
                    r.completion_code
                ),
            });
        }
        level = if level == IpmiPrivilege::Admin {
            IpmiPrivilege::Operator
        } else {
            IpmiPrivilege::User
        };
    }
}

/// Collects everything over an open session; without `identity_due`, only Get Device ID (the
/// session check), chassis status, sensors and power (no GUID, FRU or LAN commands).
async fn collect(
    s: &mut Session,
    t: &IpmiTarget,
    endpoint: &str,
    identity_due: bool,
) -> Result<DeviceReport, DriverError> {
    let now = SystemTime::now();
    let mut partial: Vec<String> = Vec::new();
    let mut id = DeviceIdentity {
        address: format!("{}:{}", t.host, t.port),
        device_class: DeviceClass::Server as i32,
        ..Default::default()
    };
    let mut report = DeviceReport::default();
    if let Some(v) = s.v15() {
        id.attributes.insert(
            "ipmi.session".into(),
            match v {
                IpmiV15Auth::Md5 => "ipmi 1.5 md5",
                IpmiV15Auth::Password => "ipmi 1.5 straight password",
            }
            .into(),
        );
    } else {
        id.attributes.insert("ipmi.session".into(), "rmcp+".into());
        id.attributes.insert(
            "ipmi.cipher_suite".into(),
            match s.suite {
                IpmiCipherSuite::Suite3 => "3",
                IpmiCipherSuite::Suite17 => "17",
            }
            .into(),
        );
    }
    id.attributes.insert(
        "ipmi.privilege".into(),
        format!("{:?}", s.privilege).to_lowercase(),
    );

    // Get Device ID: the first command; if it fails, the session is useless.
    let dev = s.cmd(netfn::APP, 0x01, &[], "Get Device ID").await?;
    let dev = DeviceId::parse(&dev)?;
    id.firmware_version = dev.firmware.clone();
    id.attributes
        .insert("ipmi.manufacturer_id".into(), dev.manufacturer_id.to_string());
    id.attributes
        .insert("ipmi.product_id".into(), format!("{:#06x}", dev.product_id));
    id.attributes
        .insert("ipmi.version".into(), dev.ipmi_version.clone());
    let iana_vendor = iana_name(dev.manufacturer_id);

    // Every later step: an error is noted and the poll goes on, unless the BMC went silent.
    macro_rules! step {
        ($what:expr, $e:expr) => {
            match $e {
                Ok(v) => Some(v),
                Err(e @ (DriverError::Timeout { .. } | DriverError::Connect { .. })) => return Err(e),
                Err(e) => {
                    partial.push(format!("{}: {e}", $what));
                    None
                }
            }
        };
    }

    if identity_due
        && let Some(g) = step!(
            "Get System GUID",
            s.cmd(netfn::APP, 0x37, &[], "Get System GUID").await
        )
    {
        if let Some(u) = guid_to_uuid(&g) {
            id.uuid = u;
        }
        id.attributes.insert("ipmi.guid_raw".into(), hex(&g));
    }

    if let Some(c) = step!(
        "Get Chassis Status",
        s.cmd(netfn::CHASSIS, 0x01, &[], "Get Chassis Status").await
    ) && let Some(&state) = c.first()
    {
        let on = state & 1 != 0;
        id.attributes
            .insert("chassis.power".into(), if on { "on" } else { "off" }.into());
        report.readings.push(Reading {
            metric: "status".into(),
            unit: String::new(),
            value: if on { 1.0 } else { 0.0 },
            observed_at: Some(now.into()),
            component: None,
            source: "ipmi:chassis_status:power_on".into(),
        });
    }

    // FRU 0 (the BMC's own, conventionally the system).
    if identity_due && let Some(img) = step!("FRU 0", read_fru(s, 0).await) {
        let f = fru::parse(&img);
        for p in &f.problems {
            partial.push(format!("FRU 0: {p}"));
        }
        apply_fru(&mut id, &f);
    }
    if id.vendor.is_empty() {
        id.vendor = iana_vendor.unwrap_or_default().to_owned();
    }
    if !id.asset_tag.is_empty() {
        report.locations.push(LocationEvidence {
            source: LocationSource::AssetTag as i32,
            raw: id.asset_tag.clone(),
            observed_at: Some(now.into()),
            via: "ipmi:fru0:product.asset_tag".into(),
            ..Default::default()
        });
    }

    // SDR repository → sensors and FRU locators.
    let records = step!("SDR repository", read_sdr_cached(s, endpoint).await).unwrap_or_default();
    let mut sensors: Vec<Sensor> = Vec::new();
    for rec in &records {
        match sdr::parse_record(rec) {
            Ok(Record::Sensor(x)) => sensors.push(x),
            Ok(Record::FruLocator(l))
                if identity_due && l.logical && l.device_id != 0 && l.access_address == rmcp::BMC_ADDR =>
            {
                if let Some(img) = step!(
                    format!("FRU {} ({})", l.device_id, l.name),
                    read_fru(s, l.device_id).await
                ) {
                    let f = fru::parse(&img);
                    report.components.push(fru_component(&l, &f));
                }
            }
            Ok(_) => {}
            Err(e) => partial.push(format!("SDR: {e}")),
        }
    }
    // Device power fallback: the first power sensor not on a PSU entity (system/chassis total),
    // else the sum of the PSU power sensors.
    let mut sdr_power: Option<(f64, String)> = None;
    let mut psu_power: (f64, Vec<String>) = (0.0, Vec::new());
    for x in &sensors {
        if x.owner != rmcp::BMC_ADDR || x.lun != 0 {
            continue; // sensors behind other controllers need bridging (not done)
        }
        if let Some(th) = thresholds_text(x) {
            id.attributes
                .insert(format!("ipmi.sensor.{}.thresholds", x.name), th);
        }
        let what = format!("sensor {} ({})", x.number, x.name);
        let Some(r) = step!(
            what,
            s.raw(netfn::SENSOR, 0x2D, &[x.number], "Get Sensor Reading")
                .await
        ) else {
            continue;
        };
        if r.completion_code != 0 {
            // Absent sensors (CBh, CDh) are normal on real BMCs; others are worth noting.
            if !matches!(r.completion_code, 0xCB | 0xCD) {
                partial.push(format!(
                    "{what}: {}",
                    cc_error("Get Sensor Reading", r.completion_code)
                ));
            }
            continue;
        }
        for reading in sensor_reading(x, &r.data, now) {
            if reading.metric == "power" {
                if entity_kind(x.entity_id, x.sensor_type) == ComponentKind::Psu {
                    psu_power.0 += reading.value;
                    psu_power.1.push(reading.source.clone());
                } else if sdr_power.is_none() {
                    sdr_power = Some((reading.value, reading.source.clone()));
                }
            }
            report.readings.push(reading);
        }
    }

    // Device power: DCMI, else the first SDR power sensor.
    match s
        .raw(
            netfn::GROUP_EXT,
            0x02,
            &[0xDC, 0x01, 0x00, 0x00],
            "DCMI Get Power Reading",
        )
        .await
    {
        // DCMI 1.5 §6.6.1: byte 18 bit 6 = power measurement active; inactive readings are stale
        // or zero, so they count as unsupported.
        Ok(r)
            if r.completion_code == 0
                && r.data.len() >= 18
                && r.data[0] == 0xDC
                && r.data[17] & 0x40 != 0 =>
        {
            let w = f64::from(u16::from_le_bytes([r.data[1], r.data[2]]));
            id.attributes.insert("ipmi.power_source".into(), "dcmi".into());
            report.readings.push(Reading {
                metric: "power".into(),
                unit: "W".into(),
                value: w,
                observed_at: Some(now.into()),
                component: None,
                source: "ipmi:dcmi:power_reading".into(),
            });
        }
        Err(e @ (DriverError::Timeout { .. } | DriverError::Connect { .. })) => return Err(e),
        _ => {
            id.attributes.insert("ipmi.dcmi".into(), "unsupported".into());
            if sdr_power.is_none() && !psu_power.1.is_empty() {
                sdr_power = Some((psu_power.0, format!("sum of {}", psu_power.1.join(" + "))));
            }
            if let Some((w, src)) = sdr_power {
                id.attributes.insert("ipmi.power_source".into(), "sdr".into());
                report.readings.push(Reading {
                    metric: "power".into(),
                    unit: "W".into(),
                    value: w,
                    observed_at: Some(now.into()),
                    component: None,
                    source: format!("{src} (DCMI unsupported)"),
                });
            }
        }
    }

    // LAN configuration of the channel we came in on (Operator privilege on most BMCs).
    let ch = if s.channel == 0 { 1 } else { s.channel };
    let lan =
        |data: Result<Vec<u8>, DriverError>| data.map(|d| d.get(1..).map(<[u8]>::to_vec).unwrap_or_default());
    if identity_due
        && let Some(mac) = step!(
            "LAN MAC",
            lan(s
                .cmd(
                    netfn::TRANSPORT,
                    0x02,
                    &[ch, 5, 0, 0],
                    "Get LAN Configuration Parameters (MAC)"
                )
                .await)
        )
        && let Some(m) = mac_text(&mac)
    {
        id.macs.push(MacAddress {
            address: m,
            interface_name: format!("bmc lan channel {ch}"),
            role: MacRole::Management as i32,
        });
    }
    if identity_due
        && let Some(ip) = step!(
            "LAN IP",
            lan(s
                .cmd(
                    netfn::TRANSPORT,
                    0x02,
                    &[ch, 3, 0, 0],
                    "Get LAN Configuration Parameters (IP)"
                )
                .await)
        )
        && let Some(a) = ip.get(..4)
    {
        id.attributes
            .insert("bmc.ip".into(), format!("{}.{}.{}.{}", a[0], a[1], a[2], a[3]));
    }
    if identity_due
        && let Some(gw) = step!(
            "LAN gateway MAC",
            lan(s
                .cmd(
                    netfn::TRANSPORT,
                    0x02,
                    &[ch, 13, 0, 0],
                    "Get LAN Configuration Parameters (gateway MAC)"
                )
                .await)
        )
        && let Some(m) = mac_text(&gw)
    {
        id.attributes.insert("bmc.gateway_mac".into(), m);
    }

    report.identity = Some(id);
    if !partial.is_empty() {
        report.status = Some(PollStatus {
            outcome: PollOutcome::Partial as i32,
            message: format!("{} IPMI item(s) could not be read", partial.len()),
            partial_errors: partial,
        });
    }
    Ok(report)
}

/// Get Device ID response (§20.1).
#[derive(Debug)]
struct DeviceId {
    firmware: String,
    ipmi_version: String,
    manufacturer_id: u32,
    product_id: u16,
}

impl DeviceId {
    fn parse(d: &[u8]) -> Result<Self, DriverError> {
        if d.len() < 11 {
            return Err(rmcp::malformed(
                "Get Device ID response",
                format!("{} bytes, expected 11", d.len()),
            ));
        }
        Ok(Self {
            firmware: format!("{}.{:02x}", d[2] & 0x7F, d[3]),
            ipmi_version: format!("{}.{}", d[4] & 0x0F, d[4] >> 4),
            manufacturer_id: u32::from(d[6]) | u32::from(d[7]) << 8 | u32::from(d[8] & 0x0F) << 16,
            product_id: u16::from_le_bytes([d[9], d[10]]),
        })
    }
}

/// IANA private enterprise numbers of common server and BMC makers.
/// Fuzzing entry points (`fuzz/` workspace and the corpus replay test): the pure parsers of
/// what a BMC sends, fed with arbitrary bytes. Not an API.
#[doc(hidden)]
pub mod fuzz {
    use super::{DeviceIdentity, Record, SystemTime, fru, rmcp, sdr, sensor_reading, thresholds_text};

    /// One datagram through the RMCP/RMCP+ codec (both AuthCode lengths), then the IPMI message
    /// inside it through the response decoder.
    pub fn rmcp(data: &[u8]) {
        for mac_len in [12, 16] {
            if let Ok(p) = rmcp::decode_packet(data, mac_len) {
                let message = match p {
                    rmcp::Packet::V15 { message, .. } => message,
                    rmcp::Packet::V2(v2) => v2.payload,
                };
                let _ = rmcp::decode_response(message);
            }
        }
        let _ = rmcp::decode_response(data);
        // Session setup answers: Open Session Response, RAKP 2, RAKP 4.
        for payload_type in [0x11, 0x13, 0x15] {
            let _ = super::session::presession_payload(data, payload_type, 0);
        }
        // The session layer's AES-CBC decryption of a confidential payload (any key).
        let keys = super::session::Keys::derive(super::session::Hash::Sha1, &[0x55; 20]);
        let _ = keys.decrypt(data);
    }

    /// A FRU image through the FRU parser and into an identity.
    pub fn fru(data: &[u8]) {
        let f = fru::parse(data);
        let mut id = DeviceIdentity::default();
        super::apply_fru(&mut id, &f);
        for (i, b) in data.iter().enumerate().take(4) {
            let _ = fru::decode_field(*b, &data[i..]);
        }
    }

    /// One SDR record through the SDR parser; a sensor's reading (the record's last two bytes
    /// as a Get Sensor Reading answer) through the conversion.
    pub fn sdr(data: &[u8]) {
        if let Ok(Record::Sensor(x)) = sdr::parse_record(data) {
            let tail = data.len().saturating_sub(3);
            let _ = sensor_reading(&x, &data[tail..], SystemTime::UNIX_EPOCH);
            let _ = thresholds_text(&x);
            if let Some(c) = x.conversion {
                for raw in [0u8, 1, 0x7F, 0x80, 0xFF] {
                    let _ = c.convert(raw);
                }
            }
            let _ = sdr::metric_for(x.base_unit);
        }
    }
}

fn iana_name(id: u32) -> Option<&'static str> {
    Some(match id {
        2 => "IBM",
        9 => "Cisco",
        11 => "Hewlett-Packard",
        42 => "Sun Microsystems",
        111 => "Oracle",
        343 => "Intel",
        674 => "Dell",
        2011 => "Huawei",
        7244 => "Quanta",
        10876 => "Supermicro",
        19046 => "Lenovo",
        20974 => "American Megatrends",
        _ => return None,
    })
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// System GUID → canonical UUID text. IPMI sends the GUID least-significant byte first per
/// field (the SMBIOS convention): time_low, time_mid and time_hi are byte-swapped.
fn guid_to_uuid(g: &[u8]) -> Option<String> {
    let g = g.get(..16)?;
    let order = [3, 2, 1, 0, 5, 4, 7, 6, 8, 9, 10, 11, 12, 13, 14, 15];
    let b: Vec<u8> = order.iter().map(|&i| g[i]).collect();
    Some(format!(
        "{}-{}-{}-{}-{}",
        hex(&b[0..4]),
        hex(&b[4..6]),
        hex(&b[6..8]),
        hex(&b[8..10]),
        hex(&b[10..16])
    ))
}

fn mac_text(b: &[u8]) -> Option<String> {
    let m = b.get(..6)?;
    if m.iter().all(|x| *x == 0) || m.iter().all(|x| *x == 0xFF) {
        return None;
    }
    Some(m.iter().map(|x| format!("{x:02x}")).collect::<Vec<_>>().join(":"))
}

/// Identity from FRU 0: serial = the first *usable* of product, board and chassis serial
/// (`groundtruth_proto::identity`: AMI boards leave "To Be Filled By O.E.M." or
/// "0123456789" in the product and chassis areas and carry the real one on the board only);
/// model = product name, else board product; part = product part, else board part; vendor =
/// product, else board manufacturer; asset tag from the product area. The serials all go to
/// attributes too.
fn apply_fru(id: &mut DeviceIdentity, f: &fru::Fru) {
    let first = |v: [&str; 3]| {
        v.into_iter()
            .find(|x| !x.is_empty())
            .unwrap_or_default()
            .to_owned()
    };
    id.model = first([&f.product_name, &f.board_product, ""]);
    id.part_number = first([&f.product_part, &f.board_part, &f.chassis_part]);
    id.vendor = first([&f.product_manufacturer, &f.board_manufacturer, ""]);
    id.serial_number = groundtruth_proto::identity::first_usable(
        [f.product_serial.as_str(), &f.board_serial, &f.chassis_serial],
        &[&id.model, &id.part_number],
    );
    id.asset_tag.clone_from(&f.asset_tag);
    let attrs = [
        ("fru.chassis.serial", &f.chassis_serial),
        ("fru.chassis.part", &f.chassis_part),
        ("fru.board.serial", &f.board_serial),
        ("fru.board.part", &f.board_part),
        ("fru.board.product", &f.board_product),
        ("fru.board.manufacturer", &f.board_manufacturer),
        ("fru.product.serial", &f.product_serial),
        ("fru.product.version", &f.product_version),
    ];
    for (k, v) in attrs {
        if !v.is_empty() {
            id.attributes.insert(k.into(), v.clone());
        }
    }
    if let Some(t) = f.chassis_type {
        id.attributes
            .insert("fru.chassis.type".into(), format!("{t:#04x}"));
    }
    if let Some(d) = f.board_mfg_date
        && let Ok(secs) = d.duration_since(SystemTime::UNIX_EPOCH)
    {
        let ts: prost_types::Timestamp = (SystemTime::UNIX_EPOCH + secs).into();
        id.attributes.insert("fru.board.mfg_date".into(), ts.to_string());
    }
}

fn fru_component(l: &sdr::FruLocator, f: &fru::Fru) -> ComponentIdentity {
    let first = |v: [&str; 3]| {
        v.into_iter()
            .find(|x| !x.is_empty())
            .unwrap_or_default()
            .to_owned()
    };
    ComponentIdentity {
        component: Some(Component {
            kind: entity_kind(l.entity_id, 0) as i32,
            index: u32::from(l.entity_instance),
            label: clean(Some(&l.name)),
        }),
        vendor: first([&f.product_manufacturer, &f.board_manufacturer, ""]),
        model: first([&f.product_name, &f.board_product, ""]),
        serial_number: first([&f.product_serial, &f.board_serial, &f.chassis_serial]),
        part_number: first([&f.product_part, &f.board_part, &f.chassis_part]),
        firmware_version: f.product_version.clone(),
    }
}

/// Component kind from the entity id (§43.14) or, failing that, the sensor type.
fn entity_kind(entity_id: u8, sensor_type: u8) -> ComponentKind {
    match (entity_id, sensor_type) {
        (0x0A, _) | (_, 0x08) => ComponentKind::Psu,
        (0x1D | 0x1E, _) | (_, 0x04) => ComponentKind::Fan,
        _ => ComponentKind::Sensor,
    }
}

/// Turns a Get Sensor Reading answer into readings: an analog threshold sensor gives its value
/// in the reading vocabulary's units plus a `status` reading with the threshold comparison bits
/// (0 = within all thresholds; bit 0..5 = below LNC, LC, LNR, at/above UNC, UC, UNR); a discrete
/// sensor gives `status` with its state bits (0–14).
fn sensor_reading(x: &Sensor, d: &[u8], now: SystemTime) -> Vec<Reading> {
    let (Some(&raw), Some(&flags)) = (d.first(), d.get(1)) else {
        return vec![];
    };
    if flags & 0x20 != 0 || flags & 0x40 == 0 {
        return vec![]; // reading unavailable, or scanning disabled
    }
    let component = Some(Component {
        kind: entity_kind(x.entity_id, x.sensor_type) as i32,
        index: u32::from(x.number),
        label: clean(Some(&x.name)),
    });
    let source = format!("ipmi:sdr:{:#06x}:sensor:{}", x.record_id, x.number);
    if x.event_type == 0x01 {
        let map = if x.percentage {
            Some(("load", "%", (|v| v) as fn(f64) -> f64))
        } else {
            sdr::metric_for(x.base_unit)
        };
        let (Some(c), Some((metric, unit, f))) = (x.conversion, map) else {
            return vec![];
        };
        let Some(v) = c.convert(raw).map(f) else {
            return vec![];
        };
        let state = d.get(2).map_or(0, |b| b & 0x3F);
        return vec![
            Reading {
                metric: metric.into(),
                unit: unit.into(),
                value: (v * 1e6).round() / 1e6,
                observed_at: Some(now.into()),
                component: component.clone(),
                source: source.clone(),
            },
            Reading {
                metric: "status".into(),
                unit: String::new(),
                value: f64::from(state),
                observed_at: Some(now.into()),
                component,
                source: format!("{source}:threshold_state"),
            },
        ];
    }
    // Discrete / sensor-specific: states 0–14 as a bit field.
    let states = u16::from(*d.get(2).unwrap_or(&0)) | u16::from(*d.get(3).unwrap_or(&0) & 0x7F) << 8;
    vec![Reading {
        metric: "status".into(),
        unit: String::new(),
        value: f64::from(states),
        observed_at: Some(now.into()),
        component,
        source: format!("{source}:states"),
    }]
}

/// Readable thresholds of an analog sensor in reading units, e.g. `unc=40 uc=45 unr=50 Cel`.
fn thresholds_text(x: &Sensor) -> Option<String> {
    let c = x.conversion?;
    let (_, unit, f) = sdr::metric_for(x.base_unit)?;
    let names = ["unr", "uc", "unc", "lnr", "lc", "lnc"];
    let mut parts: Vec<String> = names
        .iter()
        .zip(x.thresholds)
        .rev()
        .filter_map(|(n, raw)| Some(format!("{n}={}", (f(c.convert(raw?)?) * 1e6).round() / 1e6)))
        .collect();
    if parts.is_empty() {
        return None;
    }
    parts.push(unit.to_owned());
    Some(parts.join(" "))
}

/// Reads one FRU device's image: Get FRU Inventory Area Info, then Read FRU Data in chunks of
/// at most 32 bytes, halving the chunk when the BMC says it is too large.
async fn read_fru(s: &mut Session, fru_id: u8) -> Result<Vec<u8>, DriverError> {
    let info = s
        .cmd(netfn::STORAGE, 0x10, &[fru_id], "Get FRU Inventory Area Info")
        .await?;
    let (Some(size), Some(&access)) = (rmcp::u16le(&info, 0), info.get(2)) else {
        return Err(rmcp::malformed(
            "FRU inventory area info",
            format!("{} bytes", info.len()),
        ));
    };
    let words = access & 1 != 0;
    let size = usize::from(size).min(MAX_FRU_BYTES);
    let mut img = Vec::with_capacity(size);
    let mut chunk = FRU_CHUNK;
    while img.len() < size {
        let want = u8::try_from((size - img.len()).min(usize::from(chunk))).unwrap_or(chunk);
        let (off, count) = if words {
            (img.len() / 2, want / 2)
        } else {
            (img.len(), want)
        };
        let off = u16::try_from(off).unwrap_or(u16::MAX).to_le_bytes();
        let r = s
            .raw(
                netfn::STORAGE,
                0x11,
                &[fru_id, off[0], off[1], count.max(1)],
                "Read FRU Data",
            )
            .await?;
        match r.completion_code {
            0 => {}
            0xC7 | 0xC8 | 0xCA if chunk > 8 => {
                chunk /= 2;
                continue;
            }
            cc => return Err(cc_error("Read FRU Data", cc)),
        }
        let Some((&n, data)) = r.data.split_first() else {
            return Err(rmcp::malformed("Read FRU Data response", "empty"));
        };
        let n = if words { usize::from(n) * 2 } else { usize::from(n) };
        if n == 0 || n > data.len() {
            return Err(rmcp::malformed(
                "Read FRU Data response",
                format!("count {n} with {} data bytes", data.len()),
            ));
        }
        img.extend_from_slice(&data[..n.min(size - img.len())]);
    }
    Ok(img)
}

/// SDR records cached per endpoint; reused while the repository's addition and erase
/// timestamps and record count are unchanged.
type SdrCache = HashMap<String, ((u32, u32, u16), Vec<Vec<u8>>)>;

fn sdr_cache() -> &'static Mutex<SdrCache> {
    static CACHE: OnceLock<Mutex<SdrCache>> = OnceLock::new();
    CACHE.get_or_init(|| Mutex::new(HashMap::new()))
}

async fn read_sdr_cached(s: &mut Session, endpoint: &str) -> Result<Vec<Vec<u8>>, DriverError> {
    let info = s
        .cmd(netfn::STORAGE, 0x20, &[], "Get SDR Repository Info")
        .await?;
    let (Some(count), Some(added), Some(erased)) = (
        rmcp::u16le(&info, 1),
        rmcp::u32le(&info, 5),
        rmcp::u32le(&info, 9),
    ) else {
        return Err(rmcp::malformed(
            "SDR repository info",
            format!("{} bytes", info.len()),
        ));
    };
    let stamp = (added, erased, count);
    if let Ok(c) = sdr_cache().lock()
        && let Some((st, recs)) = c.get(endpoint)
        && *st == stamp
    {
        return Ok(recs.clone());
    }
    let recs = read_sdr(s).await?;
    if let Ok(mut c) = sdr_cache().lock() {
        c.insert(endpoint.to_owned(), (stamp, recs.clone()));
    }
    Ok(recs)
}

/// Reads every SDR: Reserve SDR Repository, then Get SDR per record (whole record in one read
/// when the BMC allows, else header + 16-byte chunks), re-reserving when the reservation is
/// cancelled. Bounded by [`MAX_SDR_RECORDS`] and loop-safe.
async fn read_sdr(s: &mut Session) -> Result<Vec<Vec<u8>>, DriverError> {
    async fn reserve(s: &mut Session) -> Result<[u8; 2], DriverError> {
        let r = s.cmd(netfn::STORAGE, 0x22, &[], "Reserve SDR Repository").await?;
        r.get(..2)
            .map(|b| [b[0], b[1]])
            .ok_or_else(|| rmcp::malformed("Reserve SDR Repository response", "short"))
    }
    let mut resv = reserve(s).await?;
    let mut out = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut id: u16 = 0;
    let mut whole_ok = true;
    let mut cancelled = 0;
    'records: while id != 0xFFFF {
        if out.len() >= MAX_SDR_RECORDS {
            return Err(DriverError::TooLarge {
                what: "SDR repository".into(),
                limit: MAX_SDR_RECORDS as u64,
            });
        }
        if !seen.insert(id) {
            return Err(rmcp::malformed(
                "SDR repository",
                format!("record chain loops at {id:#06x}"),
            ));
        }
        let idb = id.to_le_bytes();
        let get = |resv: [u8; 2], off: u8, n: u8| [resv[0], resv[1], idb[0], idb[1], off, n];
        if whole_ok {
            let r = s
                .raw(netfn::STORAGE, 0x23, &get(resv, 0, 0xFF), "Get SDR")
                .await?;
            match r.completion_code {
                // Only a complete record counts; a BMC that silently truncates is read in chunks.
                0 if r.data.len() >= 7 && r.data.len() >= 7 + usize::from(r.data[6]) => {
                    id = rmcp::u16le(&r.data, 0).unwrap_or(0xFFFF);
                    out.push(r.data[2..7 + usize::from(r.data[6])].to_vec());
                    continue;
                }
                0xC5 => {
                    cancelled += 1;
                    if cancelled > 5 {
                        return Err(cc_error("Get SDR", 0xC5));
                    }
                    resv = reserve(s).await?;
                    seen.remove(&id);
                    continue;
                }
                _ => whole_ok = false,
            }
        }
        // Header first, then the body in chunks.
        let r = s.raw(netfn::STORAGE, 0x23, &get(resv, 0, 5), "Get SDR").await?;
        if r.completion_code == 0xC5 && cancelled < 5 {
            cancelled += 1;
            resv = reserve(s).await?;
            seen.remove(&id);
            continue;
        }
        if r.completion_code != 0 {
            return Err(cc_error("Get SDR", r.completion_code));
        }
        let (Some(next), Some(hdr)) = (rmcp::u16le(&r.data, 0), r.data.get(2..7)) else {
            return Err(rmcp::malformed("Get SDR response", "header truncated"));
        };
        let mut rec = hdr.to_vec();
        let total = 5 + usize::from(hdr[4]);
        while rec.len() < total {
            let off = u8::try_from(rec.len()).unwrap_or(u8::MAX);
            let n = u8::try_from((total - rec.len()).min(16)).unwrap_or(16);
            let r = s.raw(netfn::STORAGE, 0x23, &get(resv, off, n), "Get SDR").await?;
            if r.completion_code == 0xC5 && cancelled < 5 {
                cancelled += 1;
                resv = reserve(s).await?;
                seen.remove(&id);
                continue 'records;
            }
            if r.completion_code != 0 {
                return Err(cc_error("Get SDR", r.completion_code));
            }
            let Some(part) = r.data.get(2..).filter(|p| !p.is_empty()) else {
                return Err(rmcp::malformed("Get SDR response", "no record data"));
            };
            rec.extend_from_slice(&part[..part.len().min(total - rec.len())]);
        }
        out.push(rec);
        id = next;
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// The scheduler runs polls on a multi-threaded runtime: the poll future must be `Send`.
    #[test]
    fn poll_future_is_send() {
        fn send<T: Send>(_: &T) {}
        let t = match crate::target::Target::parse("ipmi://u:p@127.0.0.1:9").unwrap() {
            crate::target::Target::Ipmi(t) => t,
            _ => unreachable!("ipmi target"),
        };
        let cx = PollCx::default();
        send(&poll(&t, &cx));
    }

    #[test]
    fn device_id_firmware_is_major_dot_bcd_minor() {
        let d = DeviceId::parse(&[0x20, 0x01, 0x01, 0x02, 0x02, 0x9F, 0xD9, 0x7E, 0x00, 0x00, 0x10]).unwrap();
        assert_eq!(d.firmware, "1.02");
        assert_eq!(d.ipmi_version, "2.0");
        assert_eq!(d.manufacturer_id, 32473);
        assert_eq!(d.product_id, 0x1000);
        assert!(DeviceId::parse(&[0; 10]).is_err());
        assert_eq!(iana_name(674), Some("Dell"));
    }

    #[test]
    fn guid_and_mac_text() {
        let g = [
            0x47, 0x54, 0x42, 0x4d, 0x43, 0, 0, 0, 0, 0, 0x47, 0x54, 0, 0, 0, 1,
        ];
        assert_eq!(guid_to_uuid(&g).unwrap(), "4d425447-0043-0000-0000-475400000001");
        assert_eq!(mac_text(&[2, 0x47, 0x54, 0, 0, 1]).unwrap(), "02:47:54:00:00:01");
        assert_eq!(mac_text(&[0; 6]), None);
        assert_eq!(mac_text(&[1, 2]), None);
    }

    fn sensor(event_type: u8, unit: u8) -> Sensor {
        Sensor {
            record_id: 6,
            owner: 0x20,
            lun: 0,
            number: 6,
            entity_id: 0x13,
            entity_instance: 1,
            sensor_type: 0x03,
            event_type,
            base_unit: unit,
            percentage: false,
            conversion: Some(sdr::Conversion {
                m: 4,
                b: 0,
                b_exp: 0,
                r_exp: 0,
                format: 0,
                linearization: 0,
            }),
            thresholds: [None; 6],
            name: "Pwr Consumption".into(),
        }
    }

    #[test]
    fn sensor_readings_convert_units_and_skip_unavailable() {
        let r = sensor_reading(&sensor(0x01, 6), &[103, 0x40, 0x08], SystemTime::UNIX_EPOCH);
        assert_eq!(r.len(), 2);
        assert_eq!(
            (r[0].metric.as_str(), r[0].unit.as_str(), r[0].value),
            ("power", "W", 412.0)
        );
        assert_eq!(r[0].component.as_ref().unwrap().label, "Pwr Consumption");
        assert_eq!(
            (r[1].metric.as_str(), r[1].value),
            ("status", 8.0),
            "at or above UNC"
        );
        assert!(sensor_reading(&sensor(0x01, 6), &[103, 0x60, 0], SystemTime::UNIX_EPOCH).is_empty());
        assert!(sensor_reading(&sensor(0x01, 6), &[103, 0x00, 0], SystemTime::UNIX_EPOCH).is_empty());
        assert!(sensor_reading(&sensor(0x01, 6), &[103], SystemTime::UNIX_EPOCH).is_empty());
        assert!(sensor_reading(&sensor(0x01, 99), &[103, 0x40], SystemTime::UNIX_EPOCH).is_empty());
        let mut f = sensor(0x01, 2);
        f.conversion = Some(sdr::Conversion {
            m: 1,
            b: 0,
            b_exp: 0,
            r_exp: 0,
            format: 0,
            linearization: 0,
        });
        let r = sensor_reading(&f, &[212, 0x40], SystemTime::UNIX_EPOCH);
        assert_eq!(
            (r[0].metric.as_str(), r[0].unit.as_str(), r[0].value),
            ("temperature", "Cel", 100.0)
        );
        assert_eq!(r[1].value, 0.0);
        let r = sensor_reading(&sensor(0x6F, 0), &[0, 0x40, 0x01, 0x80], SystemTime::UNIX_EPOCH);
        assert_eq!(r.len(), 1);
        assert_eq!((r[0].metric.as_str(), r[0].value), ("status", 1.0));
    }

    #[test]
    fn thresholds_are_converted_to_reading_units() {
        let mut x = sensor(0x01, 6);
        x.thresholds = [Some(210), Some(200), Some(190), None, None, None];
        assert_eq!(thresholds_text(&x).unwrap(), "unc=760 uc=800 unr=840 W");
        x.thresholds = [None; 6];
        assert_eq!(thresholds_text(&x), None);
    }

    #[test]
    fn fru_identity_prefers_product_then_board_then_chassis() {
        let mut id = DeviceIdentity::default();
        let f = fru::Fru {
            chassis_serial: "CHS00001".into(),
            board_serial: "BRD00001".into(),
            board_product: "MB".into(),
            board_manufacturer: "Acme".into(),
            ..Default::default()
        };
        apply_fru(&mut id, &f);
        assert_eq!(
            (id.serial_number.as_str(), id.model.as_str(), id.vendor.as_str()),
            ("BRD00001", "MB", "Acme")
        );
        assert_eq!(id.attributes["fru.chassis.serial"], "CHS00001");
        // AMI defaults in the product and board areas: the chassis serial is the usable one.
        let mut id = DeviceIdentity::default();
        let f = fru::Fru {
            product_serial: "To Be Filled By O.E.M.".into(),
            board_serial: "0123456789".into(),
            chassis_serial: "CHS00001".into(),
            ..Default::default()
        };
        apply_fru(&mut id, &f);
        assert_eq!(id.serial_number, "CHS00001");
    }
}
