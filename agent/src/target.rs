//! Target URLs: how one device endpoint is named on the command line and in config files.
//!
//! ```text
//! snmp://COMMUNITY@HOST[:PORT][?max_repetitions=N]   SNMP v2c (port 161)
//! snmp+v1://COMMUNITY@HOST[:PORT]         SNMP v1
//! snmpv3://USER@HOST[:PORT]?auth=sha256&priv=aes&context=NAME[&auth_pass=..&priv_pass=..][&max_repetitions=N]
//! redfish://[USER:PASS@]HOST[:PORT][?insecure]   Redfish over HTTPS (port 443; ?tls=openssl for old BMCs)
//! redfish+http://[USER:PASS@]HOST[:PORT]          Redfish over plain HTTP (port 80; tests, labs)
//! modbus+tcp://HOST[:PORT]?unit=1&map=NAME
//! modbus+rtu:///dev/ttyX?baud=9600&unit=1&map=NAME[&parity=none|even|odd&data_bits=8&stop_bits=1&frame_gap_ms=4]
//! ipmi://USER:PASS@HOST[:PORT][?cipher=3|17&privilege=user|operator|admin]   IPMI 2.0 RMCP+ (port 623)
//! ipmi://USER:PASS@HOST[:PORT]?v15=md5|password[&privilege=…]               IPMI 1.5 session
//! ```
//! Credentials in the URL are for one-shot use (as curl does); `--password-file`/`--password-env`
//! and the config file's secret references keep them out of process listings and shell history.
//! The parsed [`Target`] holds secrets as [`Secret`]s, and [`Target::endpoint_key`] never
//! contains them.

use std::path::PathBuf;

use url::Url;

use crate::secret::Secret;

/// A parsed, validated target.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    Snmp(SnmpTarget),
    Redfish(RedfishTarget),
    Modbus(ModbusTarget),
    Ipmi(IpmiTarget),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnmpVersion {
    V1,
    V2c,
    V3,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthProtocol {
    Md5,
    Sha1,
    Sha224,
    Sha256,
    Sha384,
    Sha512,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrivProtocol {
    Des,
    Aes128,
    /// AES-192/256 of draft-blumenthal-aes-usm-04 (net-snmp `AES-192`/`AES-256`).
    Aes192,
    Aes256,
    /// AES-192/256 with the Reeder key extension under Cisco's OIDs (net-snmp `AES-192-C`).
    Aes192Cisco,
    Aes256Cisco,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SnmpTarget {
    pub host: String,
    pub port: u16,
    pub version: SnmpVersion,
    /// v1/v2c community (may be empty until a `--password-*` option fills it in).
    pub community: Secret,
    /// v3 user name.
    pub user: String,
    pub auth: Option<(AuthProtocol, Secret)>,
    pub privacy: Option<(PrivProtocol, Secret)>,
    pub context: String,
    /// GETBULK max-repetitions for walks (`?max_repetitions=`, 1..=200, default
    /// [`DEFAULT_MAX_REPETITIONS`]). Lower it for agents that answer big bulks with `tooBig` or
    /// drop them; raise it for fast agents with large tables.
    pub max_repetitions: u32,
}

/// GETBULK max-repetitions when the target URL does not say.
pub const DEFAULT_MAX_REPETITIONS: u32 = 25;

fn parse_max_repetitions(v: &str) -> Result<u32, TargetError> {
    match v.parse::<u32>() {
        Ok(n @ 1..=200) => Ok(n),
        _ => Err(param_err("max_repetitions", "expected an integer from 1 to 200")),
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct RedfishTarget {
    /// `https://host:port` (or `http://` for `redfish+http`), no credentials, no path.
    pub base: Url,
    pub user: Option<String>,
    pub password: Option<Secret>,
    /// TLS certificate verification; off only with an explicit `?insecure`.
    pub verify_tls: bool,
    pub ca_file: Option<PathBuf>,
    /// `?pin=sha256:<hex>`: accept exactly the leaf certificate with this SHA-256 (chain and
    /// name not checked).
    pub pin_sha256: Option<[u8; 32]>,
    /// `?max_inflight=N` (1–16, default 2): requests in flight to this BMC at once.
    pub max_inflight: usize,
    /// `?inventory_refresh=1h`: how long the inventory (identity, resource list) is reused;
    /// polls in between read only power and thermal resources.
    pub inventory_refresh: std::time::Duration,
    /// `?tls=openssl`: TLS through OpenSSL at security level 0 (TLS 1.0/1.1, RSA key exchange,
    /// CBC) for old BMCs rustls cannot talk to; verification rules unchanged. Default `rustls`.
    pub tls_openssl: bool,
}

fn parse_pin(v: &str) -> Result<[u8; 32], TargetError> {
    let hex = v
        .strip_prefix("sha256:")
        .ok_or_else(|| param_err("pin", "expected sha256:<64 hex digits>"))?;
    let hex: String = hex.chars().filter(|c| *c != ':').collect();
    if hex.len() != 64 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(param_err("pin", "expected sha256:<64 hex digits>"));
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| param_err("pin", "bad hex"))?;
    }
    Ok(out)
}

#[derive(Debug, Clone, PartialEq)]
pub enum ModbusTransport {
    Tcp { host: String, port: u16 },
    Rtu { device: PathBuf, serial: SerialParams },
}

/// Serial line settings of a Modbus RTU bus. Every target on one device path must agree; the
/// first target that opens the bus decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SerialParams {
    pub baud: u32,
    pub parity: Parity,
    /// 7 or 8.
    pub data_bits: u8,
    /// 1 or 2.
    pub stop_bits: u8,
    /// Silence kept between frames on the bus. `None`: the Modbus-over-serial-line default,
    /// 3.5 character times (1.75 ms above 19200 baud; spec V1.02 §2.5.1.1).
    pub frame_gap: Option<std::time::Duration>,
}

impl Default for SerialParams {
    fn default() -> Self {
        Self {
            baud: 9600,
            // The Modbus serial line spec's default is even parity, but nearly every meter ships
            // with 8N1; the URL says otherwise when needed.
            parity: Parity::None,
            data_bits: 8,
            stop_bits: 1,
            frame_gap: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parity {
    None,
    Even,
    Odd,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ModbusTarget {
    pub transport: ModbusTransport,
    pub unit: u8,
    pub map: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct IpmiTarget {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: Secret,
    /// RMCP+ cipher suite (default 3: HMAC-SHA1, HMAC-SHA1-96, AES-CBC-128).
    pub cipher: IpmiCipherSuite,
    /// Role requested in RAKP 1; `None` = administrator, falling back to operator and user
    /// when the BMC refuses the role for this account.
    pub privilege: Option<IpmiPrivilege>,
    /// An IPMI 1.5 session with this authentication instead of RMCP+ (`?v15=md5|password`).
    pub v15: Option<IpmiV15Auth>,
}

/// IPMI 1.5 session authentication types the driver speaks (§22.13).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IpmiV15Auth {
    /// MD5 auth code per message.
    Md5,
    /// "Straight password": the password itself in every message (clear text on the wire).
    Password,
}

/// The RMCP+ cipher suites the IPMI driver speaks (IPMI v2.0 §22.15.2, table 22-20).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IpmiCipherSuite {
    /// RAKP-HMAC-SHA1, HMAC-SHA1-96, AES-CBC-128.
    #[default]
    Suite3,
    /// RAKP-HMAC-SHA256, HMAC-SHA256-128, AES-CBC-128.
    Suite17,
}

/// IPMI privilege levels (roles) a session may request (§6.8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum IpmiPrivilege {
    User = 2,
    Operator = 3,
    Admin = 4,
}

/// Why a target URL was refused. Never contains the secret parts of the URL.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TargetError {
    #[error("not a URL ({0}); expected e.g. snmp://public@10.0.0.5 or redfish://10.0.0.9")]
    NotUrl(String),
    #[error(
        "unknown scheme '{0}'; expected snmp, snmp+v1, snmpv3, redfish, redfish+http, modbus+tcp, modbus+rtu or ipmi"
    )]
    Scheme(String),
    #[error("{scheme} target needs a host")]
    NoHost { scheme: String },
    #[error("invalid value for '{key}': {detail}")]
    Param { key: String, detail: String },
    #[error("unknown query parameter '{0}'")]
    UnknownParam(String),
    #[error("missing {0}")]
    Missing(&'static str),
}

fn decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("x={s}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

fn param_err(key: &str, detail: impl Into<String>) -> TargetError {
    TargetError::Param {
        key: key.to_owned(),
        detail: detail.into(),
    }
}

impl Target {
    /// Parses a target URL.
    ///
    /// # Errors
    /// A [`TargetError`] naming the part of the URL that is wrong.
    pub fn parse(text: &str) -> Result<Self, TargetError> {
        // Report parse failures without echoing the URL: it may carry a password.
        let url = Url::parse(text).map_err(|e| TargetError::NotUrl(e.to_string()))?;
        let scheme = url.scheme().to_owned();
        let host = || -> Result<String, TargetError> {
            url.host_str()
                .filter(|h| !h.is_empty())
                .map(|h| h.trim_start_matches('[').trim_end_matches(']').to_owned())
                .ok_or_else(|| TargetError::NoHost {
                    scheme: scheme.clone(),
                })
        };
        let params: Vec<(String, String)> = url
            .query_pairs()
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        let user = decode(url.username());
        let password = url.password().map(decode);
        match scheme.as_str() {
            "snmp" | "snmp+v1" | "snmp+v2c" => {
                let mut max_repetitions = DEFAULT_MAX_REPETITIONS;
                for (k, v) in &params {
                    match k.as_str() {
                        "max_repetitions" => max_repetitions = parse_max_repetitions(v)?,
                        other => return Err(TargetError::UnknownParam(other.to_owned())),
                    }
                }
                Ok(Self::Snmp(SnmpTarget {
                    host: host()?,
                    port: url.port().unwrap_or(161),
                    version: if scheme == "snmp+v1" {
                        SnmpVersion::V1
                    } else {
                        SnmpVersion::V2c
                    },
                    community: Secret::new(user),
                    user: String::new(),
                    auth: None,
                    privacy: None,
                    context: String::new(),
                    max_repetitions,
                }))
            }
            "snmpv3" => {
                let mut t = SnmpTarget {
                    host: host()?,
                    port: url.port().unwrap_or(161),
                    version: SnmpVersion::V3,
                    community: Secret::default(),
                    user: user.clone(),
                    auth: None,
                    privacy: None,
                    context: String::new(),
                    max_repetitions: DEFAULT_MAX_REPETITIONS,
                };
                if t.user.is_empty() {
                    return Err(TargetError::Missing("user name (snmpv3://USER@HOST)"));
                }
                let (mut auth, mut privacy, mut auth_pass, mut priv_pass) = (None, None, None, None);
                for (k, v) in &params {
                    match k.as_str() {
                        "auth" => auth = Some(parse_auth(v)?),
                        "priv" => privacy = Some(parse_priv(v)?),
                        "auth_pass" => auth_pass = Some(Secret::new(v.clone())),
                        "priv_pass" => priv_pass = Some(Secret::new(v.clone())),
                        "context" => t.context.clone_from(v),
                        "max_repetitions" => t.max_repetitions = parse_max_repetitions(v)?,
                        other => return Err(TargetError::UnknownParam(other.to_owned())),
                    }
                }
                if privacy.is_some() && auth.is_none() {
                    return Err(param_err("priv", "privacy needs an auth protocol too"));
                }
                t.auth = auth.map(|a| (a, auth_pass.unwrap_or_default()));
                t.privacy = privacy.map(|p| (p, priv_pass.unwrap_or_default()));
                Ok(Self::Snmp(t))
            }
            "redfish" | "redfish+https" | "redfish+http" => {
                let http = scheme == "redfish+http";
                let mut verify_tls = true;
                let mut pin_sha256 = None;
                let mut max_inflight = 2;
                let mut inventory_refresh = std::time::Duration::from_secs(3600);
                let mut tls_openssl = false;
                for (k, v) in &params {
                    match k.as_str() {
                        "pin" => pin_sha256 = Some(parse_pin(v)?),
                        "tls" => {
                            tls_openssl = match v.as_str() {
                                "openssl" => true,
                                "rustls" => false,
                                _ => return Err(param_err("tls", "expected rustls or openssl")),
                            }
                        }
                        "max_inflight" => {
                            max_inflight = match v.parse::<usize>() {
                                Ok(n @ 1..=16) => n,
                                _ => {
                                    return Err(param_err(
                                        "max_inflight",
                                        "expected an integer from 1 to 16",
                                    ));
                                }
                            }
                        }
                        "inventory_refresh" => {
                            inventory_refresh = humantime::parse_duration(v).map_err(|_| {
                                param_err("inventory_refresh", "expected a duration like 1h or 0s")
                            })?;
                        }
                        "insecure" if v.is_empty() || v == "true" || v == "1" => verify_tls = false,
                        "insecure" if v == "false" || v == "0" => verify_tls = true,
                        "insecure" => return Err(param_err("insecure", "expected true or false")),
                        other => return Err(TargetError::UnknownParam(other.to_owned())),
                    }
                }
                let h = host()?;
                let port = url.port().unwrap_or(if http { 80 } else { 443 });
                let host_part = if h.contains(':') { format!("[{h}]") } else { h };
                let base = Url::parse(&format!(
                    "{}://{host_part}:{port}",
                    if http { "http" } else { "https" }
                ))
                .map_err(|e| TargetError::NotUrl(e.to_string()))?;
                Ok(Self::Redfish(RedfishTarget {
                    base,
                    user: (!user.is_empty()).then_some(user),
                    password: password.map(Secret::new),
                    verify_tls,
                    ca_file: None,
                    pin_sha256,
                    max_inflight,
                    inventory_refresh,
                    tls_openssl,
                }))
            }
            "modbus+tcp" | "modbus+rtu" => {
                let (mut unit, mut map) = (1u8, None);
                let mut serial = SerialParams::default();
                let rtu = scheme == "modbus+rtu";
                for (k, v) in &params {
                    match k.as_str() {
                        // RTU: 1-247 (0 is broadcast, which no slave answers). TCP: any
                        // unit id; 255 and 0 address the TCP device itself on many devices.
                        "unit" if rtu => {
                            unit = v
                                .parse()
                                .ok()
                                .filter(|u| (1..=247).contains(u))
                                .ok_or_else(|| param_err("unit", "expected 1-247 on a serial bus"))?;
                        }
                        "unit" => {
                            unit = v.parse().map_err(|_| param_err("unit", "expected 0-255"))?;
                        }
                        "map" => map = Some(v.clone()),
                        "baud" if rtu => {
                            serial.baud = v
                                .parse()
                                .ok()
                                .filter(|b| *b > 0)
                                .ok_or_else(|| param_err("baud", "expected a positive number"))?;
                        }
                        "parity" if rtu => {
                            serial.parity = match v.to_ascii_lowercase().as_str() {
                                "none" | "n" => Parity::None,
                                "even" | "e" => Parity::Even,
                                "odd" | "o" => Parity::Odd,
                                _ => return Err(param_err("parity", "expected none, even or odd")),
                            };
                        }
                        "data_bits" if rtu => {
                            serial.data_bits = match v.as_str() {
                                "7" => 7,
                                "8" => 8,
                                _ => return Err(param_err("data_bits", "expected 7 or 8")),
                            };
                        }
                        "stop_bits" if rtu => {
                            serial.stop_bits = match v.as_str() {
                                "1" => 1,
                                "2" => 2,
                                _ => return Err(param_err("stop_bits", "expected 1 or 2")),
                            };
                        }
                        "frame_gap_ms" if rtu => {
                            let ms: u64 = v
                                .parse()
                                .ok()
                                .filter(|ms| *ms <= 1000)
                                .ok_or_else(|| param_err("frame_gap_ms", "expected 0-1000"))?;
                            serial.frame_gap = Some(std::time::Duration::from_millis(ms));
                        }
                        other => return Err(TargetError::UnknownParam(other.to_owned())),
                    }
                }
                let transport = if scheme == "modbus+tcp" {
                    ModbusTransport::Tcp {
                        host: host()?,
                        port: url.port().unwrap_or(502),
                    }
                } else {
                    if url.path().is_empty() || url.path() == "/" {
                        return Err(TargetError::Missing(
                            "serial device path (modbus+rtu:///dev/ttyUSB0)",
                        ));
                    }
                    ModbusTransport::Rtu {
                        device: PathBuf::from(decode(url.path())),
                        serial,
                    }
                };
                Ok(Self::Modbus(ModbusTarget {
                    transport,
                    unit,
                    map: map.ok_or(TargetError::Missing("register map (?map=NAME)"))?,
                }))
            }
            "ipmi" => {
                let mut cipher = IpmiCipherSuite::default();
                let mut privilege = None;
                let mut v15 = None;
                for (k, v) in &params {
                    match k.as_str() {
                        "cipher" => {
                            cipher = match v.as_str() {
                                "3" => IpmiCipherSuite::Suite3,
                                "17" => IpmiCipherSuite::Suite17,
                                _ => return Err(param_err("cipher", "expected 3 or 17")),
                            }
                        }
                        "privilege" => {
                            privilege = Some(match v.to_ascii_lowercase().as_str() {
                                "user" => IpmiPrivilege::User,
                                "operator" => IpmiPrivilege::Operator,
                                "admin" | "administrator" => IpmiPrivilege::Admin,
                                _ => return Err(param_err("privilege", "expected user, operator or admin")),
                            });
                        }
                        "v15" => {
                            v15 = Some(match v.to_ascii_lowercase().as_str() {
                                "md5" => IpmiV15Auth::Md5,
                                "password" | "straight" => IpmiV15Auth::Password,
                                _ => return Err(param_err("v15", "expected md5 or password")),
                            });
                        }
                        _ => return Err(TargetError::UnknownParam(k.clone())),
                    }
                }
                Ok(Self::Ipmi(IpmiTarget {
                    host: host()?,
                    port: url.port().unwrap_or(623),
                    user,
                    password: Secret::new(password.unwrap_or_default()),
                    cipher,
                    privilege,
                    v15,
                }))
            }
            other => Err(TargetError::Scheme(other.to_owned())),
        }
    }

    /// Stable, credential-free name of the endpoint: `<protocol>://<host>:<port>` (plus the unit
    /// for Modbus). Used as `DeviceIdentity.endpoint_key` and in every log line and error.
    #[must_use]
    pub fn endpoint_key(&self) -> String {
        match self {
            Self::Snmp(t) => format!("snmp://{}", host_port(&t.host, t.port)),
            Self::Redfish(t) => format!(
                "redfish://{}",
                host_port(
                    t.base.host_str().unwrap_or_default(),
                    t.base.port().unwrap_or(443)
                )
            ),
            Self::Modbus(t) => match &t.transport {
                ModbusTransport::Tcp { host, port } => {
                    format!("modbus+tcp://{}/{}", host_port(host, *port), t.unit)
                }
                ModbusTransport::Rtu { device, .. } => {
                    format!("modbus+rtu://{}/{}", device.display(), t.unit)
                }
            },
            Self::Ipmi(t) => format!("ipmi://{}", host_port(&t.host, t.port)),
        }
    }

    /// Protocol name as used in logs and metric labels.
    #[must_use]
    pub fn protocol(&self) -> &'static str {
        match self {
            Self::Snmp(_) => "snmp",
            Self::Redfish(_) => "redfish",
            Self::Modbus(_) => "modbus",
            Self::Ipmi(_) => "ipmi",
        }
    }

    /// Fills the target's main secret (community, Redfish/IPMI password, or the SNMPv3 auth
    /// passphrase) from an out-of-band source such as `--password-file`.
    pub fn set_password(&mut self, secret: Secret) {
        match self {
            Self::Snmp(t) if t.version == SnmpVersion::V3 => {
                if let Some((_, p)) = &mut t.auth {
                    *p = secret;
                }
            }
            Self::Snmp(t) => t.community = secret,
            Self::Redfish(t) => t.password = Some(secret),
            Self::Ipmi(t) => t.password = secret,
            Self::Modbus(_) => {}
        }
    }
}

pub(crate) fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

fn parse_auth(v: &str) -> Result<AuthProtocol, TargetError> {
    Ok(match v.to_ascii_lowercase().replace('-', "").as_str() {
        "md5" => AuthProtocol::Md5,
        "sha" | "sha1" => AuthProtocol::Sha1,
        "sha224" => AuthProtocol::Sha224,
        "sha256" => AuthProtocol::Sha256,
        "sha384" => AuthProtocol::Sha384,
        "sha512" => AuthProtocol::Sha512,
        _ => {
            return Err(param_err(
                "auth",
                "expected md5, sha, sha224, sha256, sha384 or sha512",
            ));
        }
    })
}

fn parse_priv(v: &str) -> Result<PrivProtocol, TargetError> {
    Ok(match v.to_ascii_lowercase().replace('-', "").as_str() {
        "des" => PrivProtocol::Des,
        "aes" | "aes128" => PrivProtocol::Aes128,
        "aes192" => PrivProtocol::Aes192,
        "aes256" => PrivProtocol::Aes256,
        "aes192c" => PrivProtocol::Aes192Cisco,
        "aes256c" => PrivProtocol::Aes256Cisco,
        _ => {
            return Err(param_err(
                "priv",
                "expected des, aes, aes192, aes256, aes192c or aes256c",
            ));
        }
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn snmp_v2c_with_community_and_default_port() {
        let Target::Snmp(t) = Target::parse("snmp://dc%40public@10.0.0.5").unwrap() else {
            panic!("not snmp")
        };
        assert_eq!(
            (t.host.as_str(), t.port, t.version),
            ("10.0.0.5", 161, SnmpVersion::V2c)
        );
        assert_eq!(t.community.expose(), "dc@public");
        assert_eq!(t.max_repetitions, DEFAULT_MAX_REPETITIONS);
    }

    #[test]
    fn snmp_max_repetitions_per_target_is_parsed_and_bounded() {
        let Target::Snmp(t) = Target::parse("snmp://c@10.0.0.5?max_repetitions=10").unwrap() else {
            panic!("not snmp")
        };
        assert_eq!(t.max_repetitions, 10);
        let Target::Snmp(t) = Target::parse("snmpv3://u@h?auth=sha&auth_pass=x&max_repetitions=200").unwrap()
        else {
            panic!("not snmp")
        };
        assert_eq!(t.max_repetitions, 200);
        for bad in ["0", "201", "-1", "many", ""] {
            assert!(
                matches!(
                    Target::parse(&format!("snmp://c@h?max_repetitions={bad}")),
                    Err(TargetError::Param { ref key, .. }) if key == "max_repetitions"
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn snmpv3_with_protocols_context_and_passphrases() {
        let Target::Snmp(t) = Target::parse(
            "snmpv3://gtadmin@127.0.0.1:26161?auth=sha256&priv=aes&context=ctx&auth_pass=a%26b&priv_pass=p",
        )
        .unwrap() else {
            panic!("not snmp")
        };
        assert_eq!(t.version, SnmpVersion::V3);
        assert_eq!(t.user, "gtadmin");
        assert_eq!(t.context, "ctx");
        let (a, ap) = t.auth.unwrap();
        assert_eq!((a, ap.expose()), (AuthProtocol::Sha256, "a&b"));
        assert_eq!(t.privacy.unwrap().0, PrivProtocol::Aes128);
    }

    #[test]
    fn redfish_defaults_to_verified_https() {
        let Target::Redfish(t) = Target::parse("redfish://root:calvin@bmc1.example:8443").unwrap() else {
            panic!("not redfish")
        };
        assert_eq!(t.base.as_str(), "https://bmc1.example:8443/");
        assert!(t.verify_tls);
        assert_eq!(t.user.as_deref(), Some("root"));
        assert_eq!(t.password.unwrap().expose(), "calvin");
        let Target::Redfish(t) = Target::parse("redfish://h?insecure").unwrap() else {
            panic!()
        };
        assert!(!t.verify_tls);
        assert!(!t.tls_openssl, "rustls is the default");
        let Target::Redfish(t) = Target::parse("redfish://h?tls=openssl").unwrap() else {
            panic!()
        };
        assert!(t.tls_openssl && t.verify_tls, "OpenSSL keeps verification on");
        assert!(Target::parse("redfish://h?tls=gnutls").is_err());
    }

    #[test]
    fn endpoint_key_never_contains_credentials() {
        for u in [
            "snmp://s3cret@10.0.0.5:1161",
            "redfish://root:s3cret@10.0.0.9",
            "ipmi://admin:s3cret@10.0.0.7",
            "snmpv3://u@h?auth=sha&auth_pass=s3cret",
        ] {
            let key = Target::parse(u).unwrap().endpoint_key();
            assert!(!key.contains("s3cret"), "{key}");
        }
        assert_eq!(
            Target::parse("snmp://c@10.0.0.5:1161").unwrap().endpoint_key(),
            "snmp://10.0.0.5:1161"
        );
    }

    #[test]
    fn ipmi_defaults_and_query_parameters() {
        let Target::Ipmi(t) = Target::parse("ipmi://ADMIN:Adm1n%21@127.0.0.1:26230").unwrap() else {
            panic!("not ipmi")
        };
        assert_eq!(
            (t.host.as_str(), t.port, t.user.as_str()),
            ("127.0.0.1", 26230, "ADMIN")
        );
        assert_eq!(t.password.expose(), "Adm1n!");
        assert_eq!((t.cipher, t.privilege), (IpmiCipherSuite::Suite3, None));
        let Target::Ipmi(t) = Target::parse("ipmi://u:p@bmc?cipher=17&privilege=USER").unwrap() else {
            panic!("not ipmi")
        };
        assert_eq!(t.port, 623);
        assert_eq!(
            (t.cipher, t.privilege),
            (IpmiCipherSuite::Suite17, Some(IpmiPrivilege::User))
        );
        assert!(
            matches!(Target::parse("ipmi://u:p@h?cipher=1"), Err(TargetError::Param { key, .. }) if key == "cipher")
        );
        assert!(
            matches!(Target::parse("ipmi://u:p@h?privilege=root"), Err(TargetError::Param { key, .. }) if key == "privilege")
        );
        assert!(matches!(Target::parse("ipmi://u:p@h?x=1"), Err(TargetError::UnknownParam(k)) if k == "x"));
        let Target::Ipmi(t) = Target::parse("ipmi://u:p@bmc?v15=MD5").unwrap() else {
            panic!("not ipmi")
        };
        assert_eq!(t.v15, Some(IpmiV15Auth::Md5));
        assert!(
            matches!(Target::parse("ipmi://u:p@h?v15=md2"), Err(TargetError::Param { key, .. }) if key == "v15")
        );
    }

    #[test]
    fn modbus_forms() {
        let Target::Modbus(t) =
            Target::parse("modbus+rtu:///dev/ttyUSB0?baud=19200&unit=7&map=sdm630").unwrap()
        else {
            panic!()
        };
        assert_eq!(t.unit, 7);
        assert_eq!(
            t.transport,
            ModbusTransport::Rtu {
                device: "/dev/ttyUSB0".into(),
                serial: SerialParams {
                    baud: 19200,
                    ..SerialParams::default()
                }
            }
        );
        let Target::Modbus(t) =
            Target::parse("modbus+rtu:///dev/ttyS1?parity=even&stop_bits=2&data_bits=7&frame_gap_ms=5&map=x")
                .unwrap()
        else {
            panic!()
        };
        assert_eq!(
            t.transport,
            ModbusTransport::Rtu {
                device: "/dev/ttyS1".into(),
                serial: SerialParams {
                    baud: 9600,
                    parity: Parity::Even,
                    data_bits: 7,
                    stop_bits: 2,
                    frame_gap: Some(std::time::Duration::from_millis(5)),
                }
            }
        );
        for (url, key) in [
            ("modbus+rtu:///dev/ttyS1?parity=mark&map=x", "parity"),
            ("modbus+rtu:///dev/ttyS1?stop_bits=3&map=x", "stop_bits"),
            ("modbus+rtu:///dev/ttyS1?data_bits=9&map=x", "data_bits"),
            ("modbus+rtu:///dev/ttyS1?baud=0&map=x", "baud"),
            ("modbus+tcp://h?unit=256&map=x", "unit"),
            ("modbus+rtu:///dev/ttyS1?unit=0&map=x", "unit"),
            ("modbus+rtu:///dev/ttyS1?unit=248&map=x", "unit"),
        ] {
            assert!(
                matches!(Target::parse(url), Err(TargetError::Param { key: k, .. }) if k == key),
                "{url}"
            );
        }
        let Target::Modbus(t) = Target::parse("modbus+tcp://h?unit=255&map=x").unwrap() else {
            panic!()
        };
        assert_eq!(t.unit, 255);
        // Serial settings make no sense on TCP.
        assert_eq!(
            Target::parse("modbus+tcp://h?baud=9600&map=x").unwrap_err(),
            TargetError::UnknownParam("baud".into())
        );
        assert_eq!(
            Target::parse("modbus+tcp://h:502?unit=1").unwrap_err(),
            TargetError::Missing("register map (?map=NAME)")
        );
    }

    #[test]
    fn errors_name_the_problem_without_echoing_secrets() {
        assert!(matches!(Target::parse("ftp://x"), Err(TargetError::Scheme(s)) if s == "ftp"));
        assert!(matches!(Target::parse("snmp://c@h?foo=1"), Err(TargetError::UnknownParam(k)) if k == "foo"));
        let e = Target::parse("snmpv3://u@h?auth=sha999&auth_pass=s3cret").unwrap_err();
        assert!(!e.to_string().contains("s3cret"));
        assert!(e.to_string().contains("auth"));
    }
}
