//! SNMP driver (v1, v2c, v3) over async-snmp.
//!
//! async-snmp (pinned exactly, see `../shared/CRATES.md`) does the wire protocol: BER, request-id
//! matching, retries, USM engine discovery and time sync, GETBULK walks with loop detection and
//! `tooBig` back-off. This module reads the MIB-II system group and `ifPhysAddress`, selects the
//! device's profile (`profile.rs`: vendor knowledge as data in `agent/profiles/snmp/*.toml`),
//! reads what the profiles name (`collect.rs`), and a switch's FDB and LLDP tables
//! (`topology.rs`).
//!
//! SNMPv3 failures are reported by cause: a wrong password, an unknown user or a clock outside
//! the time window come back from the agent as unauthenticated `usmStats*` Reports. async-snmp
//! drops such Reports on an authenticated session (they carry no HMAC, so anyone could forge
//! them) and the request times out; with `allow_unauthenticated_v3_time_correction` it classifies
//! them instead, and the driver maps them to [`DriverError::Auth`]. The flag also lets one
//! unauthenticated notInTimeWindow Report correct the clock for one packet (the tuple is never
//! stored), which is the price: an on-path attacker can fail a poll, which it could anyway by
//! dropping packets.

mod collect;
mod entity;
pub mod profile;
mod topology;
mod walk;

use std::time::SystemTime;

use async_snmp::{Auth, Client, ErrorKind, Retry, UsmConfig, Value};
use groundtruth_proto::v1::{
    DeviceClass, DeviceIdentity, DeviceReport, LocationEvidence, LocationSource, MacAddress, MacRole,
    PollOutcome, PollStatus, Reading,
};

use super::{DriverError, PollCx, clean};
use crate::target::{AuthProtocol, PrivProtocol, SnmpTarget, SnmpVersion};
use walk::{Session, oid, value_text};

const SYS_DESCR: &str = "1.3.6.1.2.1.1.1.0";
const SYS_OBJECT_ID: &str = "1.3.6.1.2.1.1.2.0";
const SYS_UPTIME: &str = "1.3.6.1.2.1.1.3.0";
const SYS_NAME: &str = "1.3.6.1.2.1.1.5.0";
const SYS_LOCATION: &str = "1.3.6.1.2.1.1.6.0";
const IF_DESCR: &str = "1.3.6.1.2.1.2.2.1.2";
const IF_PHYS_ADDRESS: &str = "1.3.6.1.2.1.2.2.1.6";

fn auth_of(t: &SnmpTarget) -> Result<Auth, DriverError> {
    match t.version {
        SnmpVersion::V1 => Ok(Auth::v1(t.community.expose())),
        SnmpVersion::V2c => Ok(Auth::v2c(t.community.expose())),
        SnmpVersion::V3 => {
            let mut usm = UsmConfig::new(t.user.clone().into_bytes());
            let bad = |e: &dyn std::fmt::Display| DriverError::Auth {
                detail: format!("invalid SNMPv3 key material: {e}"),
            };
            usm = match (&t.auth, &t.privacy) {
                (None, _) => usm,
                (Some((a, ap)), None) => usm.auth(auth_proto(*a), ap.expose()).map_err(|e| bad(&e))?,
                (Some((a, ap)), Some((p, pp))) => usm
                    .auth_priv(auth_proto(*a), ap.expose(), priv_proto(*p), pp.expose())
                    .map_err(|e| bad(&e))?,
            };
            if !t.context.is_empty() {
                usm = usm.context_name(t.context.clone().into_bytes());
            }
            Ok(usm.into())
        }
    }
}

fn auth_proto(a: AuthProtocol) -> async_snmp::AuthProtocol {
    use async_snmp::AuthProtocol as A;
    match a {
        AuthProtocol::Md5 => A::Md5,
        AuthProtocol::Sha1 => A::Sha1,
        AuthProtocol::Sha224 => A::Sha224,
        AuthProtocol::Sha256 => A::Sha256,
        AuthProtocol::Sha384 => A::Sha384,
        AuthProtocol::Sha512 => A::Sha512,
    }
}

fn priv_proto(p: PrivProtocol) -> async_snmp::PrivProtocol {
    use async_snmp::PrivProtocol as P;
    match p {
        PrivProtocol::Des => P::Des,
        PrivProtocol::Aes128 => P::Aes128,
        // net-snmp's AES192/AES256 use the Blumenthal key extension.
        PrivProtocol::Aes192 => P::Aes192Blumenthal,
        PrivProtocol::Aes256 => P::Aes256Blumenthal,
    }
}

/// Walks the subtree `base` of a target the way a poll walks tables (GETBULK with the target's
/// max-repetitions, GETNEXT for v1, bounded by `max_walk_varbinds`) and returns the number of
/// varbinds. For measurements (`tests/it/snmp_profiles.rs` compares it with `snmpbulkwalk`).
pub async fn walk_count(t: &SnmpTarget, cx: &PollCx, base: &str) -> Result<usize, DriverError> {
    let client = Client::builder((t.host.as_str(), t.port), auth_of(t)?)
        .request_timeout(cx.limits.request_timeout)
        .allow_unauthenticated_v3_time_correction(true)
        .connect()
        .await
        .map_err(|e| map_err(t, "connect", &e, cx))?;
    let s = Session {
        client,
        target: t,
        cx,
    };
    let base = async_snmp::Oid::parse(base).map_err(|e| DriverError::Malformed {
        what: "OID argument".into(),
        detail: e.to_string(),
    })?;
    Ok(s.walk(&base, cx.limits.max_walk_varbinds).await?.len())
}

/// sysObjectID as dotted text. Some agents send it as an OCTET STRING holding the dotted OID,
/// sometimes with a leading dot (seen in an HPE PDU recording); accepted when it parses.
fn sys_object_id_of(v: &Value) -> Option<String> {
    if let Some(o) = v.as_oid() {
        return Some(o.to_string());
    }
    let text = value_text(v)?;
    let text = text.trim().trim_start_matches('.');
    let o = async_snmp::Oid::parse(text).ok()?;
    (o.len() >= 2 && text.split('.').all(|a| a.parse::<u32>().is_ok())).then(|| o.to_string())
}

/// Names the USM Report (RFC 3414 §3.2, usmStats*) that ended a v3 request, for operators.
fn report_detail(e: &async_snmp::Error) -> String {
    use async_snmp::v3::ReportStatus as R;
    match e.exchange_source() {
        async_snmp::Error::Report { status, .. } => match status.as_ref() {
            R::WrongDigest { .. } => "wrong password (usmStatsWrongDigests)".into(),
            R::UnknownUserName { .. } => "unknown user (usmStatsUnknownUserNames)".into(),
            R::NotInTimeWindow { .. } => "not in time window (usmStatsNotInTimeWindows)".into(),
            R::UnsupportedSecurityLevel { .. } => {
                "security level not allowed for this user (usmStatsUnsupportedSecLevels)".into()
            }
            R::DecryptionError { .. } => {
                "wrong privacy password or protocol (usmStatsDecryptionErrors)".into()
            }
            R::UnknownEngineId { .. } => "unknown engine ID (usmStatsUnknownEngineIDs)".into(),
            other => format!("SNMPv3 report: {other}"),
        },
        other => other.to_string(),
    }
}

/// Maps an async-snmp error to a driver error with an operator-readable cause.
fn map_err(t: &SnmpTarget, what: &str, e: &async_snmp::Error, cx: &PollCx) -> DriverError {
    if let async_snmp::Error::Snmp {
        status: async_snmp::ErrorStatus::AuthorizationError,
        ..
    } = e.exchange_source()
    {
        return DriverError::Auth {
            detail: format!(
                "{what}: authorizationError (the agent's access control refuses this user or \
                 community at this security level, e.g. net-snmp `rouser ... priv` asked without privacy)"
            ),
        };
    }
    match e.kind() {
        ErrorKind::Timeout => DriverError::Timeout {
            what: match (t.version, &t.privacy) {
                (SnmpVersion::V1 | SnmpVersion::V2c, _) => {
                    format!("{what} (device down, or wrong community: SNMP agents ignore a wrong community)")
                }
                // A wrong privacy password gives no Report: the agent cannot decrypt the
                // request, so it cannot answer it (net-snmp drops it silently).
                (SnmpVersion::V3, Some(_)) => {
                    format!(
                        "{what} (device down, or wrong privacy password or protocol: agents drop what they cannot decrypt)"
                    )
                }
                (SnmpVersion::V3, None) => what.to_owned(),
            },
            after: cx.limits.request_timeout * (cx.limits.retries + 1),
        },
        ErrorKind::Network | ErrorKind::Closed | ErrorKind::ConstructionTimeout => DriverError::Connect {
            endpoint: format!("{}:{}", t.host, t.port),
            detail: e.to_string(),
        },
        ErrorKind::Report => DriverError::Auth {
            detail: report_detail(e),
        },
        ErrorKind::Auth | ErrorKind::Privacy => DriverError::Auth {
            detail: e.to_string(),
        },
        // A table whose OIDs do not increase (a device bug that would loop forever).
        ErrorKind::WalkAborted => DriverError::Malformed {
            what: format!("table in the {what}"),
            detail: e.to_string(),
        },
        ErrorKind::Decode | ErrorKind::MalformedResponse | ErrorKind::ResponseShape => {
            DriverError::Malformed {
                what: format!("response to {what}"),
                detail: e.to_string(),
            }
        }
        _ => DriverError::DeviceException(format!("{what}: {e}")),
    }
}

/// Polls identity (system group, interface MACs, profile identity), readings and topology.
pub async fn poll(t: &SnmpTarget, cx: &PollCx) -> Result<DeviceReport, DriverError> {
    let auth = auth_of(t)?;
    let client = Client::builder((t.host.as_str(), t.port), auth)
        .request_timeout(cx.limits.request_timeout)
        .retry(
            Retry::fixed(cx.limits.retries, std::time::Duration::ZERO)
                .map_err(|_| DriverError::Unsupported("a retry count this high"))?,
        )
        // Turns usmStats* Reports into typed errors instead of timeouts (module docs).
        .allow_unauthenticated_v3_time_correction(true)
        .connect()
        .await
        .map_err(|e| map_err(t, "connect", &e, cx))?;
    let s = Session {
        client,
        target: t,
        cx,
    };

    let system = [SYS_DESCR, SYS_OBJECT_ID, SYS_UPTIME, SYS_NAME, SYS_LOCATION].map(oid);
    let resp = s
        .client
        .get_many(&system)
        .await
        .map_err(|e| map_err(t, "GET of the system group", &e, cx))?;
    let mut by_oid = std::collections::HashMap::new();
    for vb in resp.varbinds {
        by_oid.insert(vb.oid.to_string(), vb.value);
    }
    let text = |o: &str| by_oid.get(o).and_then(value_text);

    let now = SystemTime::now();
    let mut identity = DeviceIdentity {
        address: format!("{}:{}", t.host, t.port),
        description: clean(text(SYS_DESCR).as_deref()),
        hostname: clean(text(SYS_NAME).as_deref()),
        sys_object_id: by_oid
            .get(SYS_OBJECT_ID)
            .and_then(sys_object_id_of)
            .unwrap_or_default(),
        ..Default::default()
    };

    let limit = cx.limits.max_walk_varbinds;
    // Interface MACs are identity: a telemetry-only poll (driver::PollScope) skips both walks.
    let identity_due = cx.scope.wants(crate::driver::Kind::Identity);
    let names = if identity_due {
        s.walk(&oid(IF_DESCR), limit).await?
    } else {
        Vec::new()
    };
    let phys = if identity_due {
        s.walk(&oid(IF_PHYS_ADDRESS), limit).await?
    } else {
        Vec::new()
    };
    let names: std::collections::HashMap<u32, String> = names
        .iter()
        .filter_map(|(o, v)| Some((*o.arcs().last()?, value_text(v)?)))
        .collect();
    let if_name = |index: u32| {
        names
            .get(&index)
            .cloned()
            .unwrap_or_else(|| format!("ifIndex {index}"))
    };
    for (o, v) in &phys {
        let Some(mac) = v.as_bytes().and_then(groundtruth_proto::mac::from_octets) else {
            continue;
        };
        if identity.macs.iter().any(|m| m.address == mac) {
            continue;
        }
        identity.macs.push(MacAddress {
            address: mac,
            interface_name: if_name(o.arcs().last().copied().unwrap_or_default()),
            role: MacRole::Unspecified as i32,
        });
    }

    // Profiles: ask only the probes of profiles whose sysObjectID condition already holds.
    let all = profile::all();
    let wanted: std::collections::BTreeSet<&String> = all
        .iter()
        .filter(|p| p.prefix_matches(&identity.sys_object_id))
        .filter_map(|p| p.select.probe.as_ref())
        .collect();
    let wanted: Vec<&String> = wanted.into_iter().collect();
    let answers = s
        .exists_many(&wanted.iter().map(|p| oid(p)).collect::<Vec<_>>())
        .await?;
    let probes: std::collections::BTreeMap<String, bool> = wanted.into_iter().cloned().zip(answers).collect();
    let (vendor, generic) = profile::select(all, &identity.sys_object_id, |p| {
        probes.get(p).copied().unwrap_or(false)
    });
    let chosen: Vec<_> = vendor.into_iter().chain(generic.iter().copied()).collect();
    let collected = collect::apply(&s, &chosen, &mut identity).await?;
    if let Some(v) = vendor {
        identity.device_class = v.device_class.to_proto() as i32;
        identity.attributes.insert("snmp_profile".into(), v.name.clone());
    } else if let Some(g) = generic.iter().find(|g| g.select.probe.is_some()) {
        // A standard MIB that implies a class (UPS-MIB) answered.
        identity.device_class = g.device_class.to_proto() as i32;
    }
    for (k, v) in collected.attributes {
        identity.attributes.insert(k, v);
    }
    let mut partial_errors = collected.partial_errors;

    // Topology is an extra: its failure (a switch timing out on a 50 k-row FDB) is partial.
    let topology = match topology::read(&s).await {
        Ok((entries, errors)) => {
            partial_errors.extend(errors);
            entries
        }
        Err(e) => {
            partial_errors.push(format!("snmp: topology: {e}"));
            Vec::new()
        }
    };
    if identity.device_class == DeviceClass::Unspecified as i32 && !topology.is_empty() {
        identity.device_class = DeviceClass::Switch as i32;
    }

    let components = match entity::components(&s, &identity.serial_number).await {
        Ok(c) => c,
        Err(e) => {
            partial_errors.push(format!("snmp: ENTITY-MIB components: {e}"));
            Vec::new()
        }
    };

    let mut report = DeviceReport {
        identity: Some(identity),
        readings: collected.readings,
        components,
        topology,
        ..Default::default()
    };
    if !partial_errors.is_empty() {
        report.status = Some(PollStatus {
            outcome: PollOutcome::Partial as i32,
            message: format!("{} part(s) of the poll failed", partial_errors.len()),
            partial_errors,
        });
    }
    if let Some(loc) = text(SYS_LOCATION).filter(|s| identity_due && !s.trim().is_empty()) {
        // The agent reports the raw text; the collector parses it with the site's patterns.
        report.locations.push(LocationEvidence {
            source: LocationSource::SysLocation as i32,
            raw: loc.trim().to_owned(),
            observed_at: Some(now.into()),
            ..Default::default()
        });
    }
    if let Some(ticks) = by_oid.get(SYS_UPTIME).and_then(Value::as_u32) {
        report.readings.push(Reading {
            metric: "uptime".into(),
            unit: "s".into(),
            value: f64::from(ticks) / 100.0,
            observed_at: Some(now.into()),
            component: None,
            source: SYS_UPTIME.into(),
        });
    }
    Ok(report)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn sys_object_id_as_oid_or_as_dotted_text() {
        let o = oid("1.3.6.1.4.1.232.165.11");
        assert_eq!(
            sys_object_id_of(&Value::ObjectIdentifier(o)).as_deref(),
            Some("1.3.6.1.4.1.232.165.11")
        );
        assert_eq!(
            sys_object_id_of(&Value::from(".1.3.6.1.4.1.232.165.11")).as_deref(),
            Some("1.3.6.1.4.1.232.165.11")
        );
        assert_eq!(sys_object_id_of(&Value::from("PowerEdge")), None);
        assert_eq!(sys_object_id_of(&Value::from("1.3.x")), None);
        assert_eq!(sys_object_id_of(&Value::Integer(1)), None);
    }

    fn report(status: async_snmp::v3::ReportStatus) -> async_snmp::Error {
        async_snmp::Error::Report {
            target: "127.0.0.1:161".parse().unwrap(),
            status: Box::new(status),
            metadata: Box::default(),
        }
    }

    #[test]
    fn usm_reports_become_named_auth_errors() {
        use async_snmp::v3::ReportStatus as R;
        let t = match crate::target::Target::parse("snmpv3://u@h?auth=sha&auth_pass=s3cretpass").unwrap() {
            crate::target::Target::Snmp(t) => t,
            _ => unreachable!(),
        };
        let cx = PollCx::default();
        for (status, want) in [
            (
                R::WrongDigest { counter: 3 },
                "wrong password (usmStatsWrongDigests)",
            ),
            (
                R::UnknownUserName { counter: 1 },
                "unknown user (usmStatsUnknownUserNames)",
            ),
            (
                R::NotInTimeWindow { counter: 9 },
                "not in time window (usmStatsNotInTimeWindows)",
            ),
            (
                R::UnsupportedSecurityLevel { counter: 1 },
                "usmStatsUnsupportedSecLevels",
            ),
            (R::DecryptionError { counter: 1 }, "usmStatsDecryptionErrors"),
        ] {
            let e = map_err(&t, "GET", &report(status), &cx);
            assert!(matches!(e, DriverError::Auth { .. }), "{e:?}");
            assert!(e.to_string().contains(want), "{e}");
            assert!(!e.to_string().contains("s3cretpass"));
        }
    }

    #[test]
    fn constant_oids_parse() {
        for o in [
            SYS_DESCR,
            SYS_OBJECT_ID,
            SYS_UPTIME,
            SYS_NAME,
            SYS_LOCATION,
            IF_DESCR,
            IF_PHYS_ADDRESS,
        ] {
            assert_eq!(oid(o).to_string(), o);
        }
    }
}
