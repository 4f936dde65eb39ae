//! SNMP driver (v1, v2c, v3) over async-snmp.
//!
//! async-snmp (pinned exactly, see `../shared/CRATES.md`) does the wire protocol: BER, request-id
//! matching, retries, USM engine discovery and time sync, GETBULK walks with loop detection. This
//! module turns the MIB-II system group and `ifPhysAddress` into an identity; vendor profiles
//! (PDU/UPS/sensor OID tables as data) follow in issue #4.

use std::time::SystemTime;

use async_snmp::{Auth, Client, ErrorKind, Oid, Retry, UsmConfig, Value};
use futures::StreamExt;
use groundtruth_proto::v1::{
    DeviceIdentity, DeviceReport, LocationEvidence, LocationSource, MacAddress, MacRole, Reading,
};

use super::{DriverError, PollCx, clean};
use crate::target::{AuthProtocol, PrivProtocol, SnmpTarget, SnmpVersion};

const SYS_DESCR: &str = "1.3.6.1.2.1.1.1.0";
const SYS_OBJECT_ID: &str = "1.3.6.1.2.1.1.2.0";
const SYS_UPTIME: &str = "1.3.6.1.2.1.1.3.0";
const SYS_NAME: &str = "1.3.6.1.2.1.1.5.0";
const SYS_LOCATION: &str = "1.3.6.1.2.1.1.6.0";
const IF_DESCR: &str = "1.3.6.1.2.1.2.2.1.2";
const IF_PHYS_ADDRESS: &str = "1.3.6.1.2.1.2.2.1.6";

fn oid(text: &str) -> Oid {
    Oid::parse(text).expect("invariant: OID constants in this module are valid")
}

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

/// Maps an async-snmp error to a driver error with an operator-readable cause.
fn map_err(t: &SnmpTarget, what: &str, e: &async_snmp::Error, cx: &PollCx) -> DriverError {
    match e.kind() {
        ErrorKind::Timeout => DriverError::Timeout {
            what: match t.version {
                SnmpVersion::V1 | SnmpVersion::V2c => {
                    format!("{what} (device down, or wrong community: SNMP agents ignore a wrong community)")
                }
                SnmpVersion::V3 => what.to_owned(),
            },
            after: cx.limits.request_timeout * (cx.limits.retries + 1),
        },
        ErrorKind::Network | ErrorKind::Closed | ErrorKind::ConstructionTimeout => DriverError::Connect {
            endpoint: format!("{}:{}", t.host, t.port),
            detail: e.to_string(),
        },
        ErrorKind::Auth | ErrorKind::Report | ErrorKind::Privacy => DriverError::Auth {
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

/// Polls identity (system group, interface MACs) and uptime.
pub async fn poll(t: &SnmpTarget, cx: &PollCx) -> Result<DeviceReport, DriverError> {
    let auth = auth_of(t)?;
    let client = Client::builder((t.host.as_str(), t.port), auth)
        .request_timeout(cx.limits.request_timeout)
        .retry(
            Retry::fixed(cx.limits.retries, std::time::Duration::ZERO)
                .map_err(|_| DriverError::Unsupported("a retry count this high"))?,
        )
        .connect()
        .await
        .map_err(|e| map_err(t, "connect", &e, cx))?;

    let system = [SYS_DESCR, SYS_OBJECT_ID, SYS_UPTIME, SYS_NAME, SYS_LOCATION].map(oid);
    let resp = client
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
            .and_then(|v| v.as_oid().map(ToString::to_string))
            .unwrap_or_default(),
        ..Default::default()
    };

    let names = walk(&client, t, IF_DESCR, cx).await?;
    let phys = walk(&client, t, IF_PHYS_ADDRESS, cx).await?;
    let if_name = |index: &str| {
        names
            .iter()
            .find(|(o, _)| o.rsplit('.').next() == Some(index))
            .and_then(|(_, v)| value_text(v))
            .unwrap_or_else(|| format!("ifIndex {index}"))
    };
    for (o, v) in &phys {
        let Some(mac) = v.as_bytes().and_then(groundtruth_proto::mac::from_octets) else {
            continue;
        };
        if identity.macs.iter().any(|m| m.address == mac) {
            continue;
        }
        let index = o.rsplit('.').next().unwrap_or_default();
        identity.macs.push(MacAddress {
            address: mac,
            interface_name: if_name(index),
            role: MacRole::Unspecified as i32,
        });
    }

    let mut report = DeviceReport {
        identity: Some(identity),
        ..Default::default()
    };
    if let Some(loc) = text(SYS_LOCATION).filter(|s| !s.trim().is_empty()) {
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

/// Walks a subtree (GETBULK for v2c/v3, GETNEXT for v1) into (oid, value) pairs, bounded by
/// `max_walk_varbinds`. async-snmp stops on endOfMibView and aborts on non-increasing OIDs.
async fn walk(
    client: &Client,
    t: &SnmpTarget,
    base: &str,
    cx: &PollCx,
) -> Result<Vec<(String, Value)>, DriverError> {
    let what = format!("walk of {base}");
    let stream = if t.version == SnmpVersion::V1 {
        client.walk_getnext(oid(base))
    } else {
        client.bulk_walk(oid(base), 25)
    }
    .map_err(|e| map_err(t, &what, &e, cx))?;
    let mut stream = std::pin::pin!(stream);
    let mut out = Vec::new();
    while let Some(item) = stream.next().await {
        let vb = item.map_err(|e| map_err(t, &what, &e, cx))?;
        if out.len() >= cx.limits.max_walk_varbinds {
            return Err(DriverError::TooLarge {
                what,
                limit: cx.limits.max_walk_varbinds as u64,
            });
        }
        out.push((vb.oid.to_string(), vb.value));
    }
    Ok(out)
}

/// Printable text of an OCTET STRING, or `None` for binary or non-string values.
fn value_text(v: &Value) -> Option<String> {
    let bytes = v.as_bytes()?;
    let s = std::str::from_utf8(bytes).ok()?;
    s.chars()
        .all(|c| !c.is_control() || c.is_whitespace())
        .then(|| s.trim_end_matches('\0').to_owned())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn value_text_accepts_text_and_rejects_binary() {
        assert_eq!(
            value_text(&Value::from("DC1 / Row A")).as_deref(),
            Some("DC1 / Row A")
        );
        assert_eq!(
            value_text(&Value::OctetString(
                vec![0x28, 0x29, 0x86, 0x06, 0x01, 0x02].into()
            )),
            None
        );
        assert_eq!(value_text(&Value::Integer(3)), None);
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
