//! Protocol drivers. A driver only speaks its protocol and turns what the device says into a
//! [`DeviceReport`]; deadlines, retries across polls, concurrency and metrics live in the caller
//! (`poll.rs` today, the scheduler later), so every protocol behaves the same under failure.
//!
//! Drivers are a closed set dispatched with one `match` in [`poll`]; each one is a module with a
//! `poll(&Target, &PollCx) -> Result<DeviceReport, DriverError>` entry point.

pub mod ipmi;
pub mod modbus;
pub mod redfish;
pub mod snmp;

use std::time::{Duration, Instant, SystemTime};

use groundtruth_proto::v1::{DeviceReport, PollOutcome, PollStatus};

use crate::target::Target;

/// Limits handed to every poll, so a hostile or broken device cannot make the agent allocate or
/// wait without bound.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Timeout of one request/response exchange.
    pub request_timeout: Duration,
    /// Retries of one request after a timeout (SNMP) or a transient failure.
    pub retries: u32,
    /// Deadline of a whole poll of one device.
    pub poll_timeout: Duration,
    /// Largest HTTP body read from a device.
    pub max_body_bytes: usize,
    /// Most varbinds accepted from one SNMP walk.
    pub max_walk_varbinds: usize,
    /// Most Redfish resources fetched in one poll.
    pub max_resources: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            request_timeout: Duration::from_secs(3),
            retries: 1,
            poll_timeout: Duration::from_secs(30),
            max_body_bytes: 4 * 1024 * 1024,
            max_walk_varbinds: 20_000,
            max_resources: 256,
        }
    }
}

/// The kinds of data a poll can read, each on its own cadence: identity (serials, MACs, FRU,
/// ENTITY-MIB parts: changes rarely, costs many requests), telemetry (power, environment,
/// status: changes every minute, few requests) and topology (switch FDB/LLDP tables: large).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Identity,
    Telemetry,
    Topology,
}

/// Which kinds one poll reads. The scheduler asks only for what is due; a driver skips the
/// requests of the kinds not wanted (it may still return data it had anyway, e.g. the Redfish
/// driver's cached identity). One-shot polls (`poll`, `discover`, `run --once`) want everything.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PollScope {
    pub identity: bool,
    pub telemetry: bool,
    pub topology: bool,
    /// Set by the scheduler: identity was asked for because it is due, so a driver that caches
    /// identity (Redfish) re-reads it instead of serving its cache. One-shot polls leave it
    /// unset and may be served from a cache younger than the target's `?inventory_refresh=`.
    pub refresh: bool,
}

impl PollScope {
    /// Everything: a full poll.
    pub const ALL: Self = Self {
        identity: true,
        telemetry: true,
        topology: true,
        refresh: false,
    };
    /// Readings only.
    pub const TELEMETRY: Self = Self {
        identity: false,
        telemetry: true,
        topology: false,
        refresh: false,
    };

    /// Whether this poll should read `kind`.
    #[must_use]
    pub fn wants(self, kind: Kind) -> bool {
        match kind {
            Kind::Identity => self.identity,
            Kind::Telemetry => self.telemetry,
            Kind::Topology => self.topology,
        }
    }

    /// Readings without identity or topology: the batch kind is TELEMETRY and the agent
    /// attaches the identity it keeps from the last full poll.
    #[must_use]
    pub fn telemetry_only(self) -> bool {
        self.telemetry && !self.identity && !self.topology
    }
}

impl Default for PollScope {
    fn default() -> Self {
        Self::ALL
    }
}

/// Everything a poll may use besides the target itself.
#[derive(Debug, Clone, Default)]
pub struct PollCx {
    pub limits: Limits,
    /// What this poll reads (default: everything).
    pub scope: PollScope,
}

/// Why a poll failed. `Display` never includes a secret; the caller prefixes the device.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DriverError {
    #[error("could not connect to {endpoint}: {detail}")]
    Connect { endpoint: String, detail: String },
    #[error("no answer within {after:?} to {what}")]
    Timeout { what: String, after: Duration },
    #[error("device rejected the credentials ({detail})")]
    Auth { detail: String },
    #[error("device sent a malformed {what}: {detail}")]
    Malformed { what: String, detail: String },
    #[error("{what} exceeded the limit of {limit}")]
    TooLarge { what: String, limit: u64 },
    #[error("device answered with an error: {0}")]
    DeviceException(String),
    #[error("TLS problem: {0}")]
    Tls(String),
    #[error("not supported yet: {0}")]
    Unsupported(&'static str),
    #[error("register map: {0}")]
    Map(String),
}

impl DriverError {
    /// The `PollOutcome` this error is reported as.
    #[must_use]
    pub fn outcome(&self) -> PollOutcome {
        match self {
            Self::Connect { .. } => PollOutcome::Unreachable,
            Self::Timeout { .. } => PollOutcome::Timeout,
            Self::Auth { .. } => PollOutcome::AuthFailed,
            _ => PollOutcome::ProtocolError,
        }
    }
}

/// Polls one target once, within `cx.limits.poll_timeout`, and returns its first report; see
/// [`poll_all`] (a Redfish service can hold several devices).
pub async fn poll(target: &Target, cx: &PollCx) -> (DeviceReport, Option<DriverError>) {
    let (mut reports, error) = poll_all(target, cx).await;
    // poll_all never returns an empty list.
    let first = if reports.is_empty() {
        DeviceReport::default()
    } else {
        reports.swap_remove(0)
    };
    (first, error)
}

/// Polls one target once, within `cx.limits.poll_timeout`. Always returns at least one report:
/// one per device the target speaks for (several for a Redfish service holding an enclosure and
/// its blades, or PDUs); on failure one report carrying only the identity stub and a status
/// naming the cause, and the error beside it for the caller's exit code and log.
pub async fn poll_all(target: &Target, cx: &PollCx) -> (Vec<DeviceReport>, Option<DriverError>) {
    let started = Instant::now();
    let polled_at = SystemTime::now();
    let work = async {
        match target {
            Target::Snmp(t) => snmp::poll(t, cx).await.map(|r| vec![r]),
            Target::Redfish(t) => redfish::poll(t, cx).await,
            Target::Modbus(t) => modbus::poll(t, cx).await.map(|r| vec![r]),
            Target::Ipmi(t) => ipmi::poll(t, cx).await.map(|r| vec![r]),
        }
    };
    let result = match tokio::time::timeout(cx.limits.poll_timeout, work).await {
        Ok(r) => r,
        Err(_) => Err(DriverError::Timeout {
            what: "the whole poll".into(),
            after: cx.limits.poll_timeout,
        }),
    };
    let (mut reports, error) = match result {
        Ok(reports) if !reports.is_empty() => (reports, None),
        Ok(_) => (vec![DeviceReport::default()], None),
        Err(e) => {
            let report = DeviceReport {
                status: Some(PollStatus {
                    outcome: e.outcome() as i32,
                    message: e.to_string(),
                    partial_errors: vec![],
                }),
                ..Default::default()
            };
            (vec![report], Some(e))
        }
    };
    let several = reports.len() > 1;
    let duration_ms = u32::try_from(started.elapsed().as_millis()).unwrap_or(u32::MAX);
    for report in &mut reports {
        let identity = report.identity.get_or_insert_with(Default::default);
        // Several devices behind one endpoint: each report's endpoint key names its device
        // (`redfish://host:port#/redfish/v1/Chassis/Blade1`), so devices without a usable
        // serial stay apart in the collector.
        identity.endpoint_key = match (several, device_path(identity)) {
            (true, Some(path)) => format!("{}#{path}", target.endpoint_key()),
            _ => target.endpoint_key(),
        };
        identity.protocol = protocol_enum(target) as i32;
        prefer_service_tag(identity);
        drop_junk_identity(identity);
        if report.status.is_none() {
            report.status = Some(PollStatus {
                outcome: PollOutcome::Ok as i32,
                ..Default::default()
            });
        }
        report.polled_at = Some(polled_at.into());
        report.poll_duration_ms = duration_ms;
    }
    (reports, error)
}

/// A placeholder serial or asset tag (`groundtruth_proto::identity`'s rules) is no identity: it
/// leaves the report's identity fields, and stays visible as attribute `junk_serial` /
/// `junk_asset_tag` ("VALUE (why)") for whoever looks at the device.
fn drop_junk_identity(identity: &mut groundtruth_proto::v1::DeviceIdentity) {
    let related = [identity.model.clone(), identity.part_number.clone()];
    let related: Vec<&str> = related.iter().map(String::as_str).collect();
    for (name, field) in [
        ("junk_serial", &mut identity.serial_number),
        ("junk_asset_tag", &mut identity.asset_tag),
    ] {
        if field.trim().is_empty() {
            continue;
        }
        if let Some(why) = groundtruth_proto::identity::junk_reason(field, &related) {
            let raw = std::mem::take(field);
            identity
                .attributes
                .insert(name.into(), format!("{} ({why})", raw.trim()));
        }
    }
}

/// Dell reports its Service Tag (7 letters and digits, the serial Dell, its support and every
/// asset register use) as the SKU, and a board's PPID (`CN0…`, 20 characters) as the serial: the
/// Service Tag is the device's serial, the PPID stays as attribute `board_serial`.
fn prefer_service_tag(identity: &mut groundtruth_proto::v1::DeviceIdentity) {
    let tag = identity.sku.trim();
    let dell = identity.vendor.trim().to_ascii_lowercase().starts_with("dell");
    if !dell || tag.len() != 7 || !tag.chars().all(|c| c.is_ascii_alphanumeric()) {
        return;
    }
    if identity.serial_number.trim().eq_ignore_ascii_case(tag)
        || groundtruth_proto::identity::junk_reason(tag, &[&identity.model]).is_some()
    {
        return;
    }
    let tag = tag.to_owned();
    let old = std::mem::replace(&mut identity.serial_number, tag);
    if !old.trim().is_empty() {
        identity
            .attributes
            .insert("board_serial".into(), old.trim().to_owned());
    }
}

fn device_path(identity: &groundtruth_proto::v1::DeviceIdentity) -> Option<String> {
    identity
        .attributes
        .get("redfish_system")
        .or_else(|| identity.attributes.get("redfish_chassis"))
        .or_else(|| identity.attributes.get("redfish_pdu"))
        .cloned()
}

fn protocol_enum(target: &Target) -> groundtruth_proto::v1::Protocol {
    use groundtruth_proto::v1::Protocol;
    match target {
        Target::Snmp(_) => Protocol::Snmp,
        Target::Redfish(_) => Protocol::Redfish,
        Target::Modbus(_) => Protocol::Modbus,
        Target::Ipmi(_) => Protocol::Ipmi,
    }
}

/// Trims device-provided text; returns an empty string for absent values.
pub(crate) fn clean(s: Option<&str>) -> String {
    s.map(str::trim).unwrap_or_default().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use groundtruth_proto::v1::DeviceIdentity;

    fn id(vendor: &str, serial: &str, sku: &str) -> DeviceIdentity {
        DeviceIdentity {
            vendor: vendor.into(),
            model: "PowerEdge R640".into(),
            serial_number: serial.into(),
            sku: sku.into(),
            ..Default::default()
        }
    }

    #[test]
    fn dell_service_tag_wins_over_the_board_ppid() {
        let mut d = id("Dell Inc.", "CN7475154W00HN", "7XQ2B53");
        prefer_service_tag(&mut d);
        assert_eq!(d.serial_number, "7XQ2B53");
        assert_eq!(d.attributes["board_serial"], "CN7475154W00HN");
        // Already the Service Tag, another vendor's SKU, or no tag-shaped SKU: unchanged.
        for (vendor, serial, sku) in [
            ("Dell Inc.", "7XQ2B53", "7XQ2B53"),
            ("HPE", "CZJ12345AB", "P19766-B21"),
            ("Lenovo", "J30012AB", "7D2VCTO1WW"),
            (
                "Dell Inc.",
                "CN7475154W00HN",
                "SKU=NotProvided;ModelName=PowerEdge R640",
            ),
            ("Dell Inc.", "CN7475154W00HN", "0000000"),
        ] {
            let mut d = id(vendor, serial, sku);
            prefer_service_tag(&mut d);
            assert_eq!(d.serial_number, serial, "{vendor} {sku}");
        }
    }

    #[test]
    fn junk_serials_and_asset_tags_leave_the_identity_as_attributes() {
        let mut d = id("Gigabyte", "01234567890123456789AB", "");
        d.asset_tag = "Free form asset tag".into();
        drop_junk_identity(&mut d);
        assert_eq!((d.serial_number.as_str(), d.asset_tag.as_str()), ("", ""));
        assert!(d.attributes["junk_serial"].starts_with("01234567890123456789AB ("));
        assert!(d.attributes["junk_asset_tag"].starts_with("Free form asset tag ("));
    }
}
