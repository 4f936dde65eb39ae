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

use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use async_snmp::transport::UdpTransport;
use async_snmp::v3::{DesSaltState, EngineCache, PersistedDesSaltState};
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
        // net-snmp's AES-192/AES-256 use the Blumenthal key extension, its AES-192-C/AES-256-C
        // (Cisco's OIDs) the Reeder one; tests/it/snmp_v3.rs checks both against snmpd.
        PrivProtocol::Aes192 => P::Aes192Blumenthal,
        PrivProtocol::Aes256 => P::Aes256Blumenthal,
        PrivProtocol::Aes192Cisco => P::Aes192Reeder,
        PrivProtocol::Aes256Cisco => P::Aes256Reeder,
    }
}

/// Walks the subtree `base` of a target the way a poll walks tables (GETBULK with the target's
/// max-repetitions, GETNEXT for v1, bounded by `max_walk_varbinds`) and returns the number of
/// varbinds. For measurements (`tests/it/snmp_profiles.rs` compares it with `snmpbulkwalk`).
pub async fn walk_count(t: &SnmpTarget, cx: &PollCx, base: &str) -> Result<usize, DriverError> {
    let s = Session {
        client: connect(t, cx).await?,
        target: t,
        cx,
    };
    let base = async_snmp::Oid::parse(base).map_err(|e| DriverError::Malformed {
        what: "OID argument".into(),
        detail: e.to_string(),
    })?;
    Ok(s.walk(&base, cx.limits.max_walk_varbinds).await?.len())
}

/// SNMPv3 engines (engine ID, boots, time) learnt by any poll, keyed by address: a v3 poll
/// skips the discovery round trip when the device is already known. After a device reboot
/// (engineBoots up) the first request gets an authenticated notInTimeWindow Report, async-snmp
/// takes the new boots/time from it and resends once; a device that keeps answering
/// notInTimeWindow fails with "not in time window". Bounded: the oldest entry goes first.
fn engine_cache() -> Arc<EngineCache> {
    static CACHE: OnceLock<Arc<EngineCache>> = OnceLock::new();
    CACHE
        .get_or_init(|| {
            Arc::new(
                EngineCache::new()
                    .with_max_capacity(200_000)
                    .with_ttl(Duration::from_secs(6 * 3600)),
            )
        })
        .clone()
}

/// DES privacy (RFC 3414 §8.1.1.1) needs a salt that never repeats under one key: the sender's
/// engineBoots followed by a counter. async-snmp asks the caller for that boots epoch and for
/// durable storage of it; the agent keeps no per-key state file, so the epoch is the Unix time
/// in seconds when the process first uses DES. A later agent start has a larger epoch as long as
/// the clock does not go back by more than the previous run lasted. Shared by all DES targets
/// of the process (the counter is one atomic).
fn des_salt_state() -> Result<DesSaltState, DriverError> {
    static STATE: OnceLock<Result<DesSaltState, String>> = OnceLock::new();
    STATE
        .get_or_init(|| {
            let secs = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_err(|e| e.to_string())?
                .as_secs();
            // Epochs live in 1..=2^31-1 (engineBoots); clamp into it, past 2038 too.
            let previous = u32::try_from(secs.clamp(1, 0x7fff_fffe)).unwrap_or(1);
            let previous = PersistedDesSaltState::new(previous).map_err(|e| e.to_string())?;
            DesSaltState::restart(previous, |_| Ok::<(), std::convert::Infallible>(()))
                .map_err(|e| e.to_string())
        })
        .clone()
        .map_err(|e| DriverError::Auth {
            detail: format!("DES privacy unavailable: {e}"),
        })
}

/// One async-snmp client for one poll: the target's credentials, the poll's timeout and
/// retries, the shared engine cache.
async fn connect(t: &SnmpTarget, cx: &PollCx) -> Result<Client, DriverError> {
    let mut b = Client::builder((t.host.as_str(), t.port), auth_of(t)?)
        .request_timeout(cx.limits.request_timeout)
        .retry(
            Retry::fixed(cx.limits.retries, Duration::ZERO)
                .map_err(|_| DriverError::Unsupported("a retry count this high"))?,
        )
        // Turns usmStats* Reports into typed errors instead of timeouts (module docs).
        .allow_unauthenticated_v3_time_correction(true)
        .engine_cache(engine_cache());
    if matches!(t.privacy, Some((PrivProtocol::Des, _))) {
        b = b.des_salt_state(des_salt_state()?);
    }
    // async-snmp advertises an SNMPv3 msgMaxSize of 1472 by default. net-snmp answers a GETBULK
    // whose v3 response would not fit with genErr instead of fewer varbinds, which ends any
    // walk of a table with long rows (ipNetToMedia, hrSWRun): advertise a full UDP datagram,
    // as net-snmp's own tools do. The socket reads full datagrams either way.
    let connect_err = |e: &dyn std::fmt::Display| DriverError::Connect {
        endpoint: format!("{}:{}", t.host, t.port),
        detail: e.to_string(),
    };
    let v6 = tokio::net::lookup_host((t.host.as_str(), t.port))
        .await
        .map_err(|e| connect_err(&e))?
        .next()
        .is_some_and(|a| a.is_ipv6());
    let transport = UdpTransport::builder()
        .bind(if v6 { "[::]:0" } else { "0.0.0.0:0" })
        .receive_capacity(async_snmp::MAX_UDP_PAYLOAD)
        .build()
        .await
        .map_err(|e| connect_err(&e))?;
    b.build_with(&transport)
        .await
        .map_err(|e| map_err(t, "connect", &e, cx, transport.stats().into()))
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

/// Datagrams the target's UDP endpoint received but could not use (async-snmp's `UdpStats`):
/// what tells a device answering garbage, or answering late, from one that is silent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Stray {
    /// Not SNMP, or corrupt: no request ID could be read.
    malformed: u64,
    /// SNMP, but matching no pending request: a wrong request ID, or a reply after its timeout.
    unmatched: u64,
}

impl From<async_snmp::transport::UdpStats> for Stray {
    fn from(s: async_snmp::transport::UdpStats) -> Self {
        Self {
            malformed: s.malformed_datagrams,
            unmatched: s.discarded_datagrams,
        }
    }
}

impl Stray {
    /// What a timeout's message says instead of "device down" when the device did answer.
    fn cause(self) -> Option<String> {
        match (self.malformed, self.unmatched) {
            (0, 0) => None,
            (0, n) => Some(format!(
                "only {n} repl{} that matched no request: a wrong request ID, or too late",
                if n == 1 { "y" } else { "ies" }
            )),
            (m, _) => Some(format!(
                "only {m} datagram{} that {} not SNMP, or corrupt",
                if m == 1 { "" } else { "s" },
                if m == 1 { "was" } else { "were" }
            )),
        }
    }
}

/// Maps an async-snmp error to a driver error with an operator-readable cause; `stray` counts
/// the datagrams the target's endpoint could not use so far.
fn map_err(t: &SnmpTarget, what: &str, e: &async_snmp::Error, cx: &PollCx, stray: Stray) -> DriverError {
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
                _ if stray.cause().is_some() => {
                    format!("{what} ({})", stray.cause().unwrap_or_default())
                }
                (SnmpVersion::V1 | SnmpVersion::V2c, _) => {
                    format!("{what} (device down, or wrong community: SNMP agents ignore a wrong community)")
                }
                // A wrong privacy password gives no Report: the agent cannot decrypt the
                // request, so it cannot answer it (net-snmp drops it silently). An engine
                // whose engineBoots is latched at 2^31-1 is outside every time window for good
                // (RFC 3414 §2.2.3): its notInTimeWindow Reports are discarded (Step 7b), so
                // that too ends in a timeout, as with net-snmp's own snmpget.
                (SnmpVersion::V3, Some(_)) => {
                    format!(
                        "{what} (device down, or wrong privacy password or protocol: agents drop what they cannot decrypt; \
                         or an engine latched out of the time window, engineBoots 2^31-1)"
                    )
                }
                (SnmpVersion::V3, None) => format!(
                    "{what} (device down, or an engine latched out of the time window, engineBoots 2^31-1)"
                ),
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
    let mut client = connect(t, cx).await?;
    let v3 = t.version == SnmpVersion::V3;
    let cached = v3 && engine_cache().get(&client.peer_addr()).is_some();
    let system = [SYS_DESCR, SYS_OBJECT_ID, SYS_UPTIME, SYS_NAME, SYS_LOCATION].map(oid);
    let what = "GET of the system group";
    let resp = match client.get_many(&system).await {
        Ok(r) => r,
        Err(e) => {
            let err = map_err(t, what, &e, cx, client.stats().into());
            if !v3 {
                return Err(err);
            }
            // A failed v3 exchange forgets the engine, so the next poll rediscovers it.
            engine_cache().remove(&client.peer_addr());
            // The cached engine may be gone: a replaced device or a reset SNMP state has a new
            // engine ID, to which the keys localized for the old one do not apply, and its
            // unknownEngineID Report is unauthenticated, so async-snmp ignores it. Rediscover
            // once. A device that is simply down pays this once: its engine is no longer cached.
            if !(cached && matches!(err, DriverError::Timeout { .. })) {
                return Err(err);
            }
            client = connect(t, cx).await?;
            client
                .get_many(&system)
                .await
                .map_err(|e| map_err(t, what, &e, cx, client.stats().into()))?
        }
    };
    let s = Session {
        client,
        target: t,
        cx,
    };
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
    } else {
        // No vendor profile: say so, so the gap shows in /api/devices and the KPIs (issue #18).
        identity
            .attributes
            .insert("snmp_profile".into(), "generic".into());
        if let Some(g) = generic.iter().find(|g| g.select.probe.is_some()) {
            // A standard MIB that implies a class (UPS-MIB) answered.
            identity.device_class = g.device_class.to_proto() as i32;
        }
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
            let e = map_err(&t, "GET", &report(status), &cx, Stray::default());
            assert!(matches!(e, DriverError::Auth { .. }), "{e:?}");
            assert!(e.to_string().contains(want), "{e}");
            assert!(!e.to_string().contains("s3cretpass"));
        }
    }

    #[test]
    fn a_timeout_names_garbage_or_unmatched_replies_instead_of_a_silent_device() {
        let t = match crate::target::Target::parse("snmp://public@h").unwrap() {
            crate::target::Target::Snmp(t) => t,
            _ => unreachable!(),
        };
        let cx = PollCx::default();
        let timeout = async_snmp::Error::Timeout {
            target: "127.0.0.1:161".parse().unwrap(),
            elapsed: Duration::from_secs(3),
            retries: 1,
        };
        let msg = |stray| {
            let e = map_err(&t, "GET", &timeout, &cx, stray);
            assert!(matches!(e, DriverError::Timeout { .. }), "{e:?}");
            e.to_string()
        };
        assert!(msg(Stray::default()).contains("device down"));
        let garbage = msg(Stray {
            malformed: 2,
            unmatched: 5,
        });
        assert!(
            garbage.contains("only 2 datagrams that were not SNMP, or corrupt"),
            "{garbage}"
        );
        assert!(!garbage.contains("device down"), "{garbage}");
        let late = msg(Stray {
            malformed: 0,
            unmatched: 1,
        });
        assert!(late.contains("only 1 reply that matched no request"), "{late}");
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
