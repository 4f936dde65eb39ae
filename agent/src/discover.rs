//! Discovery sweeps: probe address ranges on each protocol's ports with each credential to try,
//! and report what answers, identified. Used by `groundtruth-agent discover` and (later) by
//! configured sweeps that add the targets they find to the scheduler.
//!
//! A probe is a full one-shot poll with a short timeout, so what discovery reports is exactly
//! what polling the target would give. Probes run concurrently up to a limit; the first
//! credential that works for an endpoint wins and the others are not tried.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use futures::StreamExt as _;
use groundtruth_proto::v1::DeviceReport;

use crate::driver::{self, DriverError, PollCx};
use crate::secret::Secret;
use crate::target::Target;

/// Most addresses one sweep may cover (a /16); larger ranges are refused, not truncated.
pub const MAX_ADDRESSES: usize = 65_536;

/// What to try.
#[derive(Debug, Clone, Default)]
pub struct SweepSpec {
    pub addresses: Vec<IpAddr>,
    pub snmp_ports: Vec<u16>,
    pub snmp_communities: Vec<Secret>,
    pub redfish_ports: Vec<u16>,
    /// (user, password) pairs; an empty list tries without credentials.
    pub redfish_credentials: Vec<(String, Secret)>,
    pub redfish_insecure: bool,
    pub ipmi_ports: Vec<u16>,
    pub ipmi_credentials: Vec<(String, Secret)>,
    pub modbus_ports: Vec<u16>,
    /// (unit, map) pairs to try on each Modbus port.
    pub modbus_units_maps: Vec<(u8, String)>,
}

/// One endpoint that answered.
#[derive(Debug, Clone)]
pub struct Found {
    /// Target URL without credentials (what to put in a config, plus a secret reference).
    pub endpoint_key: String,
    /// Which credential worked: "community #2", "user admin", ...
    pub credential: String,
    pub target: Target,
    pub report: DeviceReport,
}

/// Parses `10.0.0.0/24`, `10.0.0.5`, `10.0.0.5-10.0.0.20` (IPv4) or a single IPv6 address.
///
/// # Errors
/// A message naming what is wrong, or the range being larger than [`MAX_ADDRESSES`].
pub fn parse_range(text: &str) -> Result<Vec<IpAddr>, String> {
    let t = text.trim();
    let v4 = |s: &str| {
        s.parse::<Ipv4Addr>()
            .map_err(|_| format!("{s:?} is not an IPv4 address"))
    };
    let (lo, hi) = if let Some((net, bits)) = t.split_once('/') {
        let net = u32::from(v4(net)?);
        let bits: u32 = bits
            .parse()
            .ok()
            .filter(|b| *b <= 32)
            .ok_or_else(|| format!("bad prefix length in {t:?}"))?;
        let size = 1u64 << (32 - bits);
        let base = if bits == 0 {
            0
        } else {
            net & (u32::MAX << (32 - bits))
        };
        // Skip network and broadcast addresses for subnets that have them.
        if size >= 4 {
            (u64::from(base) + 1, u64::from(base) + size - 2)
        } else {
            (u64::from(base), u64::from(base) + size - 1)
        }
    } else if let Some((a, b)) = t.split_once('-') {
        (
            u64::from(u32::from(v4(a.trim())?)),
            u64::from(u32::from(v4(b.trim())?)),
        )
    } else if let Ok(ip) = t.parse::<IpAddr>() {
        return Ok(vec![ip]);
    } else {
        return Err(format!("{t:?} is not an address, CIDR range or a-b range"));
    };
    if hi < lo {
        return Err(format!("empty range {t:?}"));
    }
    let n = usize::try_from(hi - lo + 1).unwrap_or(usize::MAX);
    if n > MAX_ADDRESSES {
        return Err(format!(
            "{t:?} covers {n} addresses; the limit is {MAX_ADDRESSES} per sweep"
        ));
    }
    Ok((lo..=hi)
        .filter_map(|x| u32::try_from(x).ok())
        .map(|x| IpAddr::V4(Ipv4Addr::from(x)))
        .collect())
}

/// Parses "161", "161,1161", "28000-28008" lists of ports.
///
/// # Errors
/// On a malformed entry.
pub fn parse_ports(text: &str) -> Result<Vec<u16>, String> {
    let mut out = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        if let Some((a, b)) = part.split_once('-') {
            let (a, b): (u16, u16) = (
                a.trim().parse().map_err(|_| format!("bad port {a:?}"))?,
                b.trim().parse().map_err(|_| format!("bad port {b:?}"))?,
            );
            if b < a || b - a > 4096 {
                return Err(format!("bad port range {part:?}"));
            }
            out.extend(a..=b);
        } else {
            out.push(part.parse().map_err(|_| format!("bad port {part:?}"))?);
        }
    }
    Ok(out)
}

fn host(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v) => v.to_string(),
        IpAddr::V6(v) => format!("[{v}]"),
    }
}

/// The candidate targets of one endpoint, in the order to try them, with a label for each
/// credential (never the secret).
fn candidates(spec: &SweepSpec) -> Vec<Vec<(Target, String)>> {
    let mut endpoints = Vec::new();
    let parse = |url: String| Target::parse(&url).ok();
    for &ip in &spec.addresses {
        let h = host(ip);
        for &port in &spec.snmp_ports {
            let tries = spec
                .snmp_communities
                .iter()
                .enumerate()
                .filter_map(|(i, c)| {
                    let mut t = parse(format!("snmp://{h}:{port}"))?;
                    t.set_password(c.clone());
                    Some((t, format!("community #{}", i + 1)))
                })
                .collect::<Vec<_>>();
            endpoints.push(tries);
        }
        for &port in &spec.redfish_ports {
            let q = if spec.redfish_insecure { "?insecure" } else { "" };
            let mut tries = Vec::new();
            if spec.redfish_credentials.is_empty() {
                tries.extend(
                    parse(format!("redfish://{h}:{port}{q}")).map(|t| (t, "no credentials".to_owned())),
                );
            }
            for (user, pass) in &spec.redfish_credentials {
                if let Some(Target::Redfish(mut r)) = parse(format!("redfish://{h}:{port}{q}")) {
                    r.user = Some(user.clone());
                    r.password = Some(pass.clone());
                    tries.push((Target::Redfish(r), format!("user {user}")));
                }
            }
            endpoints.push(tries);
        }
        for &port in &spec.ipmi_ports {
            let tries = spec
                .ipmi_credentials
                .iter()
                .filter_map(|(user, pass)| {
                    let mut t = parse(format!("ipmi://{user}@{h}:{port}"))?;
                    t.set_password(pass.clone());
                    Some((t, format!("user {user}")))
                })
                .collect();
            endpoints.push(tries);
        }
        for &port in &spec.modbus_ports {
            let tries = spec
                .modbus_units_maps
                .iter()
                .filter_map(|(unit, map)| {
                    let t = parse(format!("modbus+tcp://{h}:{port}?unit={unit}&map={map}"))?;
                    Some((t, format!("unit {unit}, map {map}")))
                })
                .collect();
            endpoints.push(tries);
        }
    }
    endpoints.retain(|t: &Vec<(Target, String)>| !t.is_empty());
    endpoints
}

/// Whether trying the next credential on this endpoint can help: yes after an auth failure or a
/// timeout (SNMP ignores a wrong community), no when nothing listens.
fn worth_another_credential(e: &DriverError) -> bool {
    matches!(
        e,
        DriverError::Auth { .. }
            | DriverError::Timeout { .. }
            | DriverError::DeviceException(_)
            | DriverError::Malformed { .. }
    )
}

/// Progress of a running sweep.
#[derive(Debug, Default)]
pub struct Progress {
    pub total: AtomicUsize,
    pub done: AtomicUsize,
    pub found: AtomicUsize,
}

/// Runs the sweep with at most `concurrency` endpoints probed at once.
pub async fn sweep(spec: &SweepSpec, cx: &PollCx, concurrency: usize, progress: Arc<Progress>) -> Vec<Found> {
    let endpoints = candidates(spec);
    progress.total.store(endpoints.len(), Ordering::Relaxed);
    let mut found: Vec<Found> = futures::stream::iter(endpoints)
        .map(|tries| {
            let progress = Arc::clone(&progress);
            async move {
                let mut hit = None;
                for (target, credential) in tries {
                    let (mut reports, err) = driver::poll_all(&target, cx).await;
                    // A service holding several devices is shown by the first with a serial (an
                    // enclosure whose own serial is a placeholder, by its node); polling the
                    // target later reads them all.
                    let shown = reports
                        .iter()
                        .position(|r| r.identity.as_ref().is_some_and(|i| !i.serial_number.is_empty()))
                        .unwrap_or(0);
                    let report = if reports.is_empty() {
                        groundtruth_proto::v1::DeviceReport::default()
                    } else {
                        reports.swap_remove(shown)
                    };
                    match err {
                        None => {
                            hit = Some(Found {
                                endpoint_key: target.endpoint_key(),
                                credential,
                                target,
                                report,
                            });
                            break;
                        }
                        Some(e) if worth_another_credential(&e) => {}
                        Some(_) => break,
                    }
                }
                progress.done.fetch_add(1, Ordering::Relaxed);
                if hit.is_some() {
                    progress.found.fetch_add(1, Ordering::Relaxed);
                }
                hit
            }
        })
        .buffer_unordered(concurrency.max(1))
        .filter_map(|x| async move { x })
        .collect()
        .await;
    found.sort_by(|a, b| a.endpoint_key.cmp(&b.endpoint_key));
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("10.0.0.0/30").unwrap().len(), 2);
        assert_eq!(parse_range("10.0.0.0/24").unwrap().len(), 254);
        assert_eq!(
            parse_range("127.0.0.1/32").unwrap(),
            vec![IpAddr::from([127, 0, 0, 1])]
        );
        assert_eq!(parse_range("10.0.0.5-10.0.0.7").unwrap().len(), 3);
        assert!(parse_range("10.0.0.0/8").unwrap_err().contains("limit"));
        assert!(parse_range("10.0.0.9-10.0.0.7").unwrap_err().contains("empty"));
        assert!(parse_range("nope").is_err());
    }

    #[test]
    fn ports() {
        assert_eq!(
            parse_ports("161, 1161,28000-28002").unwrap(),
            vec![161, 1161, 28000, 28001, 28002]
        );
        assert!(parse_ports("x").is_err());
        assert!(parse_ports("10-1").is_err());
    }

    #[test]
    fn candidates_carry_labels_not_secrets() {
        let spec = SweepSpec {
            addresses: vec![IpAddr::from([127, 0, 0, 1])],
            snmp_ports: vec![161],
            snmp_communities: vec![Secret::new("s3cret"), Secret::new("public")],
            redfish_ports: vec![443],
            redfish_credentials: vec![("root".into(), Secret::new("pw"))],
            ..Default::default()
        };
        let c = candidates(&spec);
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].len(), 2);
        assert_eq!(c[0][1].1, "community #2");
        for tries in &c {
            for (t, label) in tries {
                assert!(!label.contains("s3cret") && !t.endpoint_key().contains("s3cret"));
            }
        }
    }
}
