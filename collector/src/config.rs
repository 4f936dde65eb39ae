//! Collector configuration file (TOML).
//!
//! ```toml
//! [collector]
//! listen_grpc = "127.0.0.1:50051"
//! listen_http = "127.0.0.1:9470"  # /metrics, /api/devices, /api/exceptions, /healthz; "off" disables
//! api_token = { file = "/etc/groundtruth/secrets/api.token" }   # required on /api/* when set
//! retention_raw = "7d"           # raw readings, then rolled up hourly
//! retention_hourly = "400d"      # hourly rollups
//! tls_cert = "/etc/groundtruth/tls/collector.crt"   # gRPC over TLS (agents use https://)
//! tls_key = "/etc/groundtruth/tls/collector.key"
//! client_ca = "/etc/groundtruth/tls/agents-ca.crt"  # mutual TLS: agents need a client cert
//! database = "/var/lib/groundtruth-collector/state.db"   # or "postgres://groundtruth@db.example/groundtruth"
//! database_password = { file = "/etc/groundtruth/secrets/db.pass" }   # PostgreSQL only
//! default_site = "DC1"           # for devices whose agent and evidence name no site
//!
//! [location]
//! patterns = "/etc/groundtruth/location-patterns.toml"   # the site's sysLocation/asset-tag formats
//! site_map = "/etc/groundtruth/site-map.toml"            # racks, devices by serial, switch ports
//!
//! [health]                       # integration-health KPIs (crate::kpi)
//! interval = "5m"
//! stale_after = "7d"
//! history = "30d"
//!
//! [itsm]                         # optional: rules that raise tickets (crate::itsm)
//! interval = "30s"
//! [itsm.rt]
//! url = "https://rt.example.com"
//! token = { file = "/etc/groundtruth/secrets/rt.token" }
//! [[itsm.rule]]
//! name = "duplicates"
//! when = "exception"
//! exception_kinds = ["duplicate_serial_in_cmdb"]
//!
//! [netbox]                       # optional: without it nothing is written to a CMDB
//! url = "https://netbox.example.com"
//! token = { file = "/etc/groundtruth/secrets/netbox.token" }   # or { env = "GT_NETBOX_TOKEN" }
//! device_role = "server"         # role given to devices the collector creates
//! create_missing = true          # create missing sites, racks, manufacturers and device types
//! sync_interval = "30s"          # debounce after new data
//! lease_ttl = "15s"              # one writer per NetBox: a silent pass loses its lease after this
//! dry_run = false                # plan only, never write
//! rate_limit = 20                # requests per second to NetBox (0 = unlimited)
//! journal = true                 # a journal entry on every device the sync changed
//!
//! [netbox.ownership]             # which fields the collector writes (defaults shown)
//! location = true                # site, location, rack, position, face
//! serial = true
//! asset_tag = "if_empty"         # "never" | "if_empty" | "always"
//! macs = true                    # interfaces and MAC address objects
//! power = true                   # custom field gt_measured_power_w
//! last_seen = true               # custom field gt_last_seen
//! match_hostname = false         # accept hostname-only matches (else exception weak_match_hostname)
//! power_deadband_percent = 5     # power is rewritten only when it moved more than this
//! last_seen_deadband = "1h"      # gt_last_seen is rewritten only when it moved more than this
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    collector: RawCollector,
    #[serde(default)]
    netbox: Option<RawNetBox>,
    #[serde(default)]
    mqtt: Option<RawMqtt>,
    #[serde(default)]
    location: RawLocation,
    #[serde(default)]
    health: RawHealth,
    #[serde(default)]
    itsm: Option<RawItsm>,
}

/// `[itsm]`: rules that raise tickets, and where tickets go (see `crate::itsm`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawItsm {
    #[serde(default)]
    interval: Option<String>,
    #[serde(default)]
    max_new_per_hour: Option<u64>,
    #[serde(default)]
    update_interval: Option<String>,
    #[serde(default)]
    max_attempts: Option<u32>,
    #[serde(default)]
    retry_backoff: Option<String>,
    #[serde(default)]
    webhook: Option<RawWebhook>,
    #[serde(default)]
    rt: Option<RawRt>,
    #[serde(default, rename = "rule")]
    rules: Vec<RawRule>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWebhook {
    url: String,
    secret: TokenRef,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRt {
    url: String,
    token: TokenRef,
    #[serde(default)]
    queue: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    name: String,
    /// exception | device_missing | rack_power | environment | ups_on_battery
    when: String,
    #[serde(default)]
    exception_kinds: Vec<String>,
    #[serde(default)]
    missing_after: Option<String>,
    #[serde(default)]
    budget_watts: Option<f64>,
    #[serde(default)]
    threshold_percent: Option<f64>,
    #[serde(default)]
    metric: Option<String>,
    #[serde(default)]
    above: Option<f64>,
    #[serde(default)]
    below: Option<f64>,
}

/// `[health]`: integration-health KPIs (see `crate::kpi`).
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawHealth {
    /// How often the KPIs are computed and recorded ("5m").
    #[serde(default)]
    interval: Option<String>,
    /// A device not seen for this long is stale ("7d").
    #[serde(default)]
    stale_after: Option<String>,
    /// KPI history kept this long ("30d").
    #[serde(default)]
    history: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLocation {
    /// The site's own location text patterns (TOML, `[[pattern]]`), tried before the built-in ones.
    #[serde(default)]
    patterns: Option<PathBuf>,
    /// The site map (racks, devices pinned by serial, switch ports).
    #[serde(default)]
    site_map: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMqtt {
    url: String,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<TokenRef>,
    #[serde(default = "default_share_group")]
    share_group: String,
    #[serde(default)]
    client_id: Option<String>,
    /// mqtts:// only: CA bundle (default: the system bundle), client certificate and key.
    #[serde(default)]
    ca_file: Option<PathBuf>,
    #[serde(default)]
    client_cert: Option<PathBuf>,
    #[serde(default)]
    client_key: Option<PathBuf>,
    /// How often rack and room power totals are published (`"off"` disables).
    #[serde(default)]
    publish_power: Option<String>,
}

fn default_share_group() -> String {
    "groundtruth".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCollector {
    #[serde(default = "default_listen")]
    listen_grpc: String,
    /// SQLite file path (or `sqlite://PATH`), or a `postgres://` URL.
    #[serde(default = "default_db")]
    database: String,
    /// PostgreSQL password, as a secret reference (kept out of the URL).
    #[serde(default)]
    database_password: Option<TokenRef>,
    #[serde(default)]
    default_site: String,
    /// `/metrics`, `/api`, `/healthz`; "off" disables.
    #[serde(default)]
    listen_http: Option<String>,
    /// Bearer token required on `/api/*`.
    #[serde(default)]
    api_token: Option<TokenRef>,
    /// Raw readings kept this long, then rolled up hourly ("7d").
    #[serde(default)]
    retention_raw: Option<String>,
    /// Hourly rollups kept this long ("400d").
    #[serde(default)]
    retention_hourly: Option<String>,
    /// Server certificate and key (PEM): gRPC ingest over TLS.
    #[serde(default)]
    tls_cert: Option<PathBuf>,
    #[serde(default)]
    tls_key: Option<PathBuf>,
    /// CA (PEM) agents' client certificates must chain to: mutual TLS, required when set.
    #[serde(default)]
    client_ca: Option<PathBuf>,
    /// Accept a listener reachable from the network without authentication (warned about).
    #[serde(default)]
    allow_unauthenticated: bool,
}

fn default_listen() -> String {
    "127.0.0.1:50051".into()
}

fn default_db() -> String {
    "/var/lib/groundtruth-collector/state.db".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNetBox {
    url: String,
    token: TokenRef,
    #[serde(default = "default_role")]
    device_role: String,
    #[serde(default = "yes")]
    create_missing: bool,
    #[serde(default)]
    sync_interval: Option<String>,
    #[serde(default)]
    lease_ttl: Option<String>,
    #[serde(default)]
    dry_run: bool,
    #[serde(default = "yes")]
    tls_verify: bool,
    #[serde(default)]
    ca_file: Option<PathBuf>,
    #[serde(default)]
    rate_limit: Option<f64>,
    #[serde(default = "yes")]
    journal: bool,
    #[serde(default)]
    ownership: RawOwnership,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawOwnership {
    location: Option<bool>,
    serial: Option<bool>,
    asset_tag: Option<crate::cmdb::TagOwnership>,
    macs: Option<bool>,
    power: Option<bool>,
    last_seen: Option<bool>,
    match_hostname: Option<bool>,
    power_deadband_percent: Option<f64>,
    last_seen_deadband: Option<String>,
}

fn default_role() -> String {
    "server".into()
}

const fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
enum TokenRef {
    File(PathBuf),
    Env(String),
}

/// TLS material of the gRPC ingest listener.
#[derive(Clone)]
pub struct GrpcServerTls {
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
    pub client_ca_pem: Option<Vec<u8>>,
}

impl std::fmt::Debug for GrpcServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrpcServerTls")
            .field("key", &"***")
            .field("mutual", &self.client_ca_pem.is_some())
            .finish_non_exhaustive()
    }
}

/// Validated NetBox settings.
#[derive(Clone)]
pub struct NetBoxSettings {
    pub url: url::Url,
    pub token: String,
    pub device_role: String,
    pub create_missing: bool,
    pub sync_interval: Duration,
    /// The write lease's time: one pass writes to NetBox at a time, and a pass that stops
    /// renewing (killed, paused, cut off from the database) loses the lease after this long.
    pub lease_ttl: Duration,
    pub dry_run: bool,
    pub tls_verify: bool,
    pub ca_file: Option<PathBuf>,
    pub ownership: crate::cmdb::Ownership,
    /// Requests per second to NetBox; 0 = unlimited.
    pub rate_limit: f64,
    pub journal: bool,
}

impl std::fmt::Debug for NetBoxSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetBoxSettings")
            .field("url", &self.url.as_str())
            .field("token", &"***")
            .field("device_role", &self.device_role)
            .field("create_missing", &self.create_missing)
            .field("dry_run", &self.dry_run)
            .field("ownership", &self.ownership)
            .field("rate_limit", &self.rate_limit)
            .finish_non_exhaustive()
    }
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen_grpc: SocketAddr,
    /// Where `/metrics`, `/api` and `/healthz` are served; `None` = off.
    pub listen_http: Option<SocketAddr>,
    pub api_token: Option<String>,
    pub retention_raw: Duration,
    pub retention_hourly: Duration,
    /// gRPC ingest TLS: (certificate PEM, key PEM, client CA PEM for mTLS).
    pub grpc_tls: Option<GrpcServerTls>,
    /// The state store: an SQLite file or a PostgreSQL URL (password kept out of `Debug`).
    pub database: crate::store::Database,
    pub default_site: String,
    pub netbox: Option<NetBoxSettings>,
    pub mqtt: Option<crate::ingest::mqtt::MqttIngestSettings>,
    /// Reconciliation rules: default site and location text patterns.
    pub rules: crate::reconcile::Rules,
    /// Integration-health KPI settings (`[health]`).
    pub health: crate::kpi::HealthSettings,
    /// Ticket rules and sinks (`[itsm]`); `None` = no tickets.
    pub itsm: Option<crate::itsm::ItsmSettings>,
    pub warnings: Vec<String>,
}

impl Config {
    /// Reads and validates a config file; every error names the file and key (and the line for
    /// syntax and type errors).
    ///
    /// # Errors
    /// All problems found, one string each.
    pub fn load(path: &Path) -> Result<Self, Vec<String>> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| vec![format!("{file}: cannot read: {e}")])?;
        Self::parse(&text, &file)
    }

    /// # Errors
    /// See [`Config::load`].
    pub fn parse(text: &str, file: &str) -> Result<Self, Vec<String>> {
        let raw: Raw = toml::from_str(text).map_err(|e| {
            let place = e
                .span()
                .map(|s| format!("line {}: ", text[..s.start].matches('\n').count() + 1))
                .unwrap_or_default();
            vec![format!("{file}: {place}{}", e.message())]
        })?;
        let mut errors = Vec::new();
        let mut warnings = Vec::new();
        let listen_grpc = raw.collector.listen_grpc.parse().unwrap_or_else(|_| {
            errors.push(format!(
                "{file}: collector.listen_grpc: expected ADDRESS:PORT, got {:?}",
                raw.collector.listen_grpc
            ));
            SocketAddr::from(([127, 0, 0, 1], 50051))
        });
        let listen_http = match raw.collector.listen_http.as_deref() {
            Some("off") => None,
            None => Some(SocketAddr::from(([127, 0, 0, 1], 9470))),
            Some(a) => a
                .parse()
                .map_err(|_| {
                    errors.push(format!(
                        "{file}: collector.listen_http: expected ADDRESS:PORT or \"off\", got {a:?}"
                    ))
                })
                .ok(),
        };
        let mut duration = |key: &str, v: &Option<String>, default: Duration| match v
            .as_deref()
            .map(humantime::parse_duration)
        {
            None => default,
            Some(Ok(d)) => d,
            Some(Err(e)) => {
                errors.push(format!("{file}: collector.{key}: {e}"));
                default
            }
        };
        let retention_raw = duration(
            "retention_raw",
            &raw.collector.retention_raw,
            Duration::from_secs(7 * 86_400),
        );
        let retention_hourly = duration(
            "retention_hourly",
            &raw.collector.retention_hourly,
            Duration::from_secs(400 * 86_400),
        );
        let mut read = |key: &str, p: &Option<PathBuf>| -> Option<Vec<u8>> {
            let p = p.as_ref()?;
            std::fs::read(p)
                .map_err(|e| {
                    errors.push(format!(
                        "{file}: collector.{key}: cannot read {}: {e}",
                        p.display()
                    ))
                })
                .ok()
        };
        let (cert, key, client_ca) = (
            read("tls_cert", &raw.collector.tls_cert),
            read("tls_key", &raw.collector.tls_key),
            read("client_ca", &raw.collector.client_ca),
        );
        let grpc_tls = match (cert, key) {
            (Some(cert_pem), Some(key_pem)) => Some(GrpcServerTls {
                cert_pem,
                key_pem,
                client_ca_pem: client_ca,
            }),
            (None, None) if raw.collector.tls_cert.is_none() && raw.collector.tls_key.is_none() => {
                if raw.collector.client_ca.is_some() {
                    errors.push(format!("{file}: collector.client_ca needs tls_cert and tls_key"));
                }
                None
            }
            _ => {
                if raw.collector.tls_cert.is_some() != raw.collector.tls_key.is_some() {
                    errors.push(format!(
                        "{file}: collector.tls_cert and collector.tls_key go together"
                    ));
                }
                None
            }
        };
        let database = Self::database(&raw.collector, file, &mut errors, &mut warnings);
        let api_token = match &raw.collector.api_token {
            None => None,
            Some(r) => read_secret(r, "collector.api_token", file, &mut errors),
        };
        protected_mode(
            &Listeners {
                grpc: listen_grpc,
                grpc_mutual_tls: grpc_tls.as_ref().is_some_and(|t| t.client_ca_pem.is_some()),
                http: listen_http,
                http_token: raw.collector.api_token.is_some(),
                allow_unauthenticated: raw.collector.allow_unauthenticated,
            },
            file,
            &mut errors,
            &mut warnings,
        );
        let mqtt = raw.mqtt.and_then(|m| {
            let url = groundtruth_proto::topics::broker_url(&m.url)
                .map_err(|e| errors.push(format!("{file}: mqtt.url: {e}")))
                .ok()?;
            let host = url.host.clone();
            let tls = if url.tls {
                let ca = m
                    .ca_file
                    .clone()
                    .unwrap_or_else(|| PathBuf::from("/etc/ssl/certs/ca-certificates.crt"));
                let mut read = |key: &str, p: &Path| {
                    std::fs::read(p)
                        .map_err(|e| {
                            errors.push(format!("{file}: mqtt.{key}: cannot read {}: {e}", p.display()))
                        })
                        .ok()
                };
                let ca_pem = read("ca_file", &ca)?;
                let client_auth = match (&m.client_cert, &m.client_key) {
                    (Some(c), Some(k)) => Some((read("client_cert", c)?, read("client_key", k)?)),
                    (None, None) => None,
                    _ => {
                        errors.push(format!(
                            "{file}: mqtt.client_cert and mqtt.client_key go together"
                        ));
                        return None;
                    }
                };
                Some(crate::ingest::mqtt::MqttTls { ca_pem, client_auth })
            } else {
                if m.ca_file.is_some() || m.client_cert.is_some() {
                    errors.push(format!(
                        "{file}: mqtt: TLS files given for a plain mqtt:// broker; use mqtts://"
                    ));
                }
                None
            };
            let password = match &m.password {
                None => None,
                Some(r) => Some(read_secret(r, "mqtt.password", file, &mut errors)?),
            };
            let client_id = m.client_id.unwrap_or_else(|| {
                let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
                format!(
                    "groundtruth-collector-{}",
                    groundtruth_proto::topics::level(host.trim())
                )
            });
            let publish_power = match m.publish_power.as_deref().map(str::trim) {
                None => Some(std::time::Duration::from_secs(60)),
                Some("off") => None,
                Some(t) => match humantime::parse_duration(t) {
                    Ok(d) if d >= std::time::Duration::from_secs(1) => Some(d),
                    Ok(_) => {
                        errors.push(format!("{file}: mqtt.publish_power: under one second"));
                        return None;
                    }
                    Err(e) => {
                        errors.push(format!(
                            "{file}: mqtt.publish_power: expected a duration like \"60s\" or \"off\": {e}"
                        ));
                        return None;
                    }
                },
            };
            Some(crate::ingest::mqtt::MqttIngestSettings {
                host,
                port: url.port,
                publish_power,
                tls,
                username: m.username,
                password,
                share_group: groundtruth_proto::topics::level(&m.share_group),
                client_id,
            })
        });
        let netbox = raw.netbox.and_then(|n| {
            let url = url::Url::parse(&n.url)
                .map_err(|e| errors.push(format!("{file}: netbox.url: {e}")))
                .ok()?;
            let token = read_secret(&n.token, "netbox.token", file, &mut errors)?;
            let sync_interval = match n.sync_interval.as_deref().map(humantime::parse_duration) {
                None => Duration::from_secs(30),
                Some(Ok(d)) => d,
                Some(Err(e)) => {
                    errors.push(format!("{file}: netbox.sync_interval: {e}"));
                    return None;
                }
            };
            let lease_ttl = match n.lease_ttl.as_deref().map(humantime::parse_duration) {
                None => crate::lease::DEFAULT_TTL,
                Some(Ok(d)) if d >= Duration::from_secs(1) => d,
                Some(Ok(_)) => {
                    errors.push(format!("{file}: netbox.lease_ttl must be at least 1s"));
                    return None;
                }
                Some(Err(e)) => {
                    errors.push(format!("{file}: netbox.lease_ttl: {e}"));
                    return None;
                }
            };
            let d = crate::cmdb::Ownership::default();
            let o = &n.ownership;
            let last_seen_deadband = match o.last_seen_deadband.as_deref().map(humantime::parse_duration) {
                None => d.last_seen_deadband,
                Some(Ok(v)) => v,
                Some(Err(e)) => {
                    errors.push(format!("{file}: netbox.ownership.last_seen_deadband: {e}"));
                    return None;
                }
            };
            let pct = o.power_deadband_percent.unwrap_or(d.power_deadband * 100.0);
            if !(0.0..=100.0).contains(&pct) {
                errors.push(format!(
                    "{file}: netbox.ownership.power_deadband_percent must be between 0 and 100, not {pct}"
                ));
                return None;
            }
            let rate_limit = n.rate_limit.unwrap_or(crate::cmdb::netbox::DEFAULT_RATE_LIMIT);
            if !rate_limit.is_finite() || rate_limit < 0.0 {
                errors.push(format!("{file}: netbox.rate_limit must be >= 0 (0 = unlimited)"));
                return None;
            }
            let ownership = crate::cmdb::Ownership {
                location: o.location.unwrap_or(d.location),
                serial: o.serial.unwrap_or(d.serial),
                asset_tag: o.asset_tag.unwrap_or(d.asset_tag),
                macs: o.macs.unwrap_or(d.macs),
                power: o.power.unwrap_or(d.power),
                last_seen: o.last_seen.unwrap_or(d.last_seen),
                match_hostname: o.match_hostname.unwrap_or(d.match_hostname),
                power_deadband: pct / 100.0,
                last_seen_deadband,
            };
            if !n.tls_verify {
                warnings.push(format!(
                    "{file}: netbox.tls_verify = false: the NetBox certificate is not checked"
                ));
            }
            if url.scheme() == "http"
                && !url
                    .host_str()
                    .is_some_and(|h| h == "127.0.0.1" || h == "localhost" || h == "::1")
            {
                warnings.push(format!(
                    "{file}: netbox.url uses plain http to a remote host; the API token travels in clear"
                ));
            }
            Some(NetBoxSettings {
                url,
                token,
                device_role: n.device_role,
                create_missing: n.create_missing,
                sync_interval,
                lease_ttl,
                dry_run: n.dry_run,
                tls_verify: n.tls_verify,
                ca_file: n.ca_file,
                ownership,
                rate_limit,
                journal: n.journal,
            })
        });
        let patterns = match &raw.location.patterns {
            None => crate::locate::patterns_with(None),
            Some(p) => match std::fs::read_to_string(p) {
                Ok(text) => crate::locate::patterns_with(Some((&text, &p.display().to_string()))),
                Err(e) => Err(format!("cannot read {}: {e}", p.display())),
            },
        }
        .unwrap_or_else(|e| {
            errors.push(format!("{file}: location.patterns: {e}"));
            Vec::new()
        });
        let site_map = match &raw.location.site_map {
            None => crate::sitemap::SiteMap::default(),
            Some(p) => match std::fs::read_to_string(p) {
                Ok(text) => {
                    crate::sitemap::SiteMap::parse(&text, &p.display().to_string()).unwrap_or_else(|e| {
                        errors.extend(e.into_iter().map(|e| format!("{file}: location.site_map: {e}")));
                        crate::sitemap::SiteMap::default()
                    })
                }
                Err(e) => {
                    errors.push(format!(
                        "{file}: location.site_map: cannot read {}: {e}",
                        p.display()
                    ));
                    crate::sitemap::SiteMap::default()
                }
            },
        };
        let health = {
            let d = crate::kpi::HealthSettings::default();
            let mut get = |key: &str, v: &Option<String>, default: Duration| match v
                .as_deref()
                .map(humantime::parse_duration)
            {
                None => default,
                Some(Ok(x)) if !x.is_zero() => x,
                Some(Ok(_)) => {
                    errors.push(format!("{file}: health.{key}: must be more than zero"));
                    default
                }
                Some(Err(e)) => {
                    errors.push(format!("{file}: health.{key}: {e}"));
                    default
                }
            };
            crate::kpi::HealthSettings {
                interval: get("interval", &raw.health.interval, d.interval),
                stale_after: get("stale_after", &raw.health.stale_after, d.stale_after),
                history: get("history", &raw.health.history, d.history),
            }
        };
        let itsm = raw.itsm.map(|r| itsm_settings(r, file, &mut errors));
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(Self {
            itsm,
            health,
            listen_http,
            api_token,
            retention_raw,
            retention_hourly,
            grpc_tls,
            rules: crate::reconcile::Rules {
                default_site: raw.collector.default_site.clone(),
                patterns,
                site_map,
            },
            listen_grpc,
            database: database.unwrap_or_else(|| crate::store::Database::Sqlite(default_db().into())),
            default_site: raw.collector.default_site,
            netbox,
            mqtt,
            warnings,
        })
    }
}

/// What protected mode looks at.
struct Listeners {
    grpc: SocketAddr,
    grpc_mutual_tls: bool,
    http: Option<SocketAddr>,
    http_token: bool,
    allow_unauthenticated: bool,
}

/// Protected mode (issue #19): the collector is the write path into the CMDB, so a listener
/// reachable from the network must authenticate its clients — gRPC by mutual TLS, HTTP by
/// `api_token` — or the config must say `allow_unauthenticated = true`, which is then warned
/// about at every start. Loopback listeners stay open.
fn protected_mode(l: &Listeners, file: &str, errors: &mut Vec<String>, warnings: &mut Vec<String>) {
    let mut open = Vec::new();
    if !l.grpc.ip().is_loopback() && !l.grpc_mutual_tls {
        open.push((
            format!("collector.listen_grpc = \"{}\"", l.grpc),
            "anyone who can reach it can stream batches for any agent, device and rack into the store and the CMDB",
            "set collector.tls_cert, collector.tls_key and collector.client_ca (mutual TLS)",
        ));
    }
    if let Some(h) = l.http
        && !h.ip().is_loopback()
        && !l.http_token
    {
        open.push((
            format!("collector.listen_http = \"{h}\""),
            "anyone who can reach it can pin locations and ignore exceptions",
            "set collector.api_token",
        ));
    }
    for (key, risk, fix) in open {
        if l.allow_unauthenticated {
            warnings.push(format!(
                "{file}: {key} accepts unauthenticated clients (collector.allow_unauthenticated = true): {risk}"
            ));
        } else {
            errors.push(format!(
                "{file}: {key} is reachable from the network without authentication ({risk}); {fix}, listen on 127.0.0.1, or accept the risk with collector.allow_unauthenticated = true"
            ));
        }
    }
}

impl Config {
    /// `collector.database` and `collector.database_password`.
    fn database(
        c: &RawCollector,
        file: &str,
        errors: &mut Vec<String>,
        warnings: &mut Vec<String>,
    ) -> Option<crate::store::Database> {
        use crate::store::Database;
        let mut db = Database::parse(&c.database)
            .map_err(|e| errors.push(format!("{file}: collector.database: {e}")))
            .ok()?;
        match (&mut db, &c.database_password) {
            (Database::Sqlite(_), Some(_)) => {
                errors.push(format!(
                    "{file}: collector.database_password applies only to a postgres:// database"
                ));
            }
            (Database::Postgres { password: Some(_), .. }, Some(_)) => errors.push(format!(
                "{file}: collector.database: the URL has a password and database_password is set; keep only database_password"
            )),
            (Database::Postgres { password: Some(_), .. }, None) => warnings.push(format!(
                "{file}: collector.database: the password is written in the URL; prefer database_password = {{ file = \"…\" }}"
            )),
            (Database::Postgres { password, .. }, Some(r)) => {
                *password = Some(read_secret(r, "collector.database_password", file, errors)?);
            }
            _ => {}
        }
        Some(db)
    }
}

/// Validates `[itsm]`; every problem names the file and key.
fn itsm_settings(r: RawItsm, file: &str, errors: &mut Vec<String>) -> crate::itsm::ItsmSettings {
    use crate::itsm::{ItsmSettings, RtSettings, Rule, Watch, WebhookSettings};
    let d = ItsmSettings::default();
    let mut dur = |key: &str, v: &Option<String>, default: Duration| match v
        .as_deref()
        .map(humantime::parse_duration)
    {
        None => default,
        Some(Ok(x)) if !x.is_zero() => x,
        Some(Ok(_)) => {
            errors.push(format!("{file}: itsm.{key}: must be more than zero"));
            default
        }
        Some(Err(e)) => {
            errors.push(format!("{file}: itsm.{key}: {e}"));
            default
        }
    };
    let interval = dur("interval", &r.interval, d.interval);
    let update_interval = dur("update_interval", &r.update_interval, d.update_interval);
    let retry_backoff = dur("retry_backoff", &r.retry_backoff, d.retry_backoff);
    let url = |key: &str, u: &str, errors: &mut Vec<String>| -> Option<url::Url> {
        match url::Url::parse(u) {
            Ok(u) if matches!(u.scheme(), "http" | "https") => Some(u),
            Ok(_) => {
                errors.push(format!("{file}: itsm.{key}: must be an http:// or https:// URL"));
                None
            }
            Err(e) => {
                errors.push(format!("{file}: itsm.{key}: {e}"));
                None
            }
        }
    };
    let webhook = r.webhook.and_then(|w| {
        let u = url("webhook.url", &w.url, errors);
        let secret = read_secret(&w.secret, "itsm.webhook.secret", file, errors);
        if secret.as_deref().is_some_and(str::is_empty) {
            errors.push(format!("{file}: itsm.webhook.secret: is empty"));
        }
        Some(WebhookSettings {
            url: u?,
            secret: secret?,
        })
    });
    let rt = r.rt.and_then(|t| {
        let u = url("rt.url", &t.url, errors);
        let token = read_secret(&t.token, "itsm.rt.token", file, errors);
        Some(RtSettings {
            url: u?,
            token: token?,
            queue: t.queue.unwrap_or_else(|| "General".to_owned()),
        })
    });
    let mut rules = Vec::new();
    let mut names = std::collections::HashSet::new();
    for (i, raw) in r.rules.into_iter().enumerate() {
        let what = format!("{file}: itsm.rule[{i}] ({})", raw.name);
        if !names.insert(raw.name.clone()) {
            errors.push(format!("{what}: name used twice"));
        }
        let watch = match raw.when.as_str() {
            "exception" => Some(Watch::Exception {
                kinds: raw.exception_kinds,
            }),
            "device_missing" => match raw.missing_after.as_deref().map(humantime::parse_duration) {
                Some(Ok(after)) if !after.is_zero() => Some(Watch::DeviceMissing { after }),
                Some(Ok(_)) | None => {
                    errors.push(format!(
                        "{what}: device_missing needs missing_after (e.g. \"15m\")"
                    ));
                    None
                }
                Some(Err(e)) => {
                    errors.push(format!("{what}: missing_after: {e}"));
                    None
                }
            },
            "rack_power" => {
                let threshold_percent = raw.threshold_percent.unwrap_or(80.0);
                if !(threshold_percent > 0.0 && threshold_percent.is_finite()) {
                    errors.push(format!("{what}: threshold_percent must be above 0"));
                }
                if raw.budget_watts.is_some_and(|b| !(b > 0.0 && b.is_finite())) {
                    errors.push(format!("{what}: budget_watts must be above 0"));
                }
                Some(Watch::RackPower {
                    budget_watts: raw.budget_watts,
                    threshold_percent,
                })
            }
            "ups_on_battery" => Some(Watch::UpsOnBattery),
            "environment" => match raw.metric {
                Some(metric) if raw.above.is_some() || raw.below.is_some() => Some(Watch::Environment {
                    metric,
                    above: raw.above,
                    below: raw.below,
                }),
                _ => {
                    errors.push(format!("{what}: environment needs metric and above and/or below"));
                    None
                }
            },
            other => {
                errors.push(format!(
                    "{what}: when = {other:?}; expected exception, device_missing, rack_power, environment or ups_on_battery"
                ));
                None
            }
        };
        if let Some(watch) = watch {
            rules.push(Rule {
                name: raw.name,
                watch,
            });
        }
    }
    let max_attempts = r.max_attempts.unwrap_or(d.max_attempts);
    if max_attempts == 0 {
        errors.push(format!("{file}: itsm.max_attempts: must be at least 1"));
    }
    ItsmSettings {
        interval,
        max_new_per_hour: r.max_new_per_hour.unwrap_or(d.max_new_per_hour),
        update_interval,
        max_attempts: max_attempts.max(1),
        retry_backoff,
        webhook,
        rt,
        rules,
    }
}

/// Reads a secret reference; on failure records an error naming the file and key.
fn read_secret(r: &TokenRef, key: &str, file: &str, errors: &mut Vec<String>) -> Option<String> {
    match r {
        TokenRef::File(p) => std::fs::read_to_string(p)
            .map(|t| t.trim().to_owned())
            .map_err(|e| errors.push(format!("{file}: {key}: cannot read {}: {e}", p.display())))
            .ok(),
        TokenRef::Env(v) => std::env::var(v)
            .map_err(|_| errors.push(format!("{file}: {key}: environment variable {v} is not set")))
            .ok(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn minimal_config_gets_defaults() {
        let c = Config::parse("[collector]\n", "c.toml").unwrap();
        assert_eq!(c.listen_grpc.to_string(), "127.0.0.1:50051");
        assert!(c.netbox.is_none());
    }

    #[test]
    fn protected_mode_refuses_open_network_listeners_and_names_the_key() {
        // Loopback stays open, as before.
        assert!(
            Config::parse("[collector]\n", "c.toml")
                .unwrap()
                .warnings
                .is_empty()
        );
        let e = Config::parse("[collector]\nlisten_grpc = \"0.0.0.0:50051\"\n", "c.toml").unwrap_err();
        assert!(
            e.len() == 1
                && e[0].contains("collector.listen_grpc = \"0.0.0.0:50051\"")
                && e[0].contains("client_ca"),
            "{e:?}"
        );
        let e = Config::parse("[collector]\nlisten_http = \"10.1.2.3:9470\"\n", "c.toml").unwrap_err();
        assert!(
            e.len() == 1
                && e[0].contains("collector.listen_http = \"10.1.2.3:9470\"")
                && e[0].contains("api_token"),
            "{e:?}"
        );
        // TLS without client certificates is not authentication.
        let dir = tempfile::tempdir().unwrap();
        for f in ["c.pem", "k.pem", "ca.pem"] {
            std::fs::write(dir.path().join(f), "-----BEGIN X-----\n").unwrap();
        }
        let tls = |ca: bool| {
            let d = dir.path().display();
            let mut t = format!("tls_cert = \"{d}/c.pem\"\ntls_key = \"{d}/k.pem\"\n");
            if ca {
                t.push_str(&format!("client_ca = \"{d}/ca.pem\"\n"));
            }
            t
        };
        let text = format!(
            "[collector]\nlisten_grpc = \"[::]:50051\"\nlisten_http = \"off\"\n{}",
            tls(false)
        );
        assert!(Config::parse(&text, "c.toml").is_err());
        let text = format!(
            "[collector]\nlisten_grpc = \"[::]:50051\"\nlisten_http = \"off\"\n{}",
            tls(true)
        );
        assert!(Config::parse(&text, "c.toml").is_ok());
        // Accepted explicitly: both listeners open, each warned about.
        let c = Config::parse(
            "[collector]\nlisten_grpc = \"0.0.0.0:50051\"\nlisten_http = \"0.0.0.0:9470\"\nallow_unauthenticated = true\n",
            "c.toml",
        )
        .unwrap();
        assert_eq!(c.warnings.len(), 2, "{:?}", c.warnings);
        assert!(
            c.warnings
                .iter()
                .all(|w| w.contains("allow_unauthenticated = true"))
        );
    }

    #[test]
    fn postgres_database_takes_its_password_by_reference() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("db.pass");
        std::fs::write(&p, "pgS3cret\n").unwrap();
        let text = format!(
            "[collector]\ndatabase = \"postgres://gt@127.0.0.1/gt\"\ndatabase_password = {{ file = {p:?} }}\n"
        );
        let c = Config::parse(&text, "c.toml").unwrap();
        let crate::store::Database::Postgres { url, password } = &c.database else {
            panic!("{:?}", c.database);
        };
        assert_eq!(
            (url.as_str(), password.as_deref()),
            ("postgres://gt@127.0.0.1/gt", Some("pgS3cret"))
        );
        assert!(!format!("{c:?} {}", c.database).contains("pgS3cret"));
        let c = Config::parse("[collector]\n", "c.toml").unwrap();
        assert!(!c.database.is_postgres());
        let text = format!("[collector]\ndatabase = \"/tmp/x.db\"\ndatabase_password = {{ file = {p:?} }}\n");
        let e = Config::parse(&text, "c.toml").unwrap_err();
        assert!(e[0].contains("collector.database_password"), "{e:?}");
        let e = Config::parse("[collector]\ndatabase = \"postgres://h\"\n", "c.toml").unwrap_err();
        assert!(
            e[0].contains("collector.database") && e[0].contains("no database"),
            "{e:?}"
        );
        let c = Config::parse(
            "[collector]\ndatabase = \"postgres://gt:inl1ne@h/gt\"\n",
            "c.toml",
        )
        .unwrap();
        assert!(
            c.warnings.iter().any(|w| w.contains("database_password")),
            "{:?}",
            c.warnings
        );
        assert!(!format!("{c:?}").contains("inl1ne"));
    }

    #[test]
    fn typo_and_missing_token_are_named() {
        let e = Config::parse("[collector]\nlisten = \"x\"\n", "c.toml").unwrap_err();
        assert!(
            e[0].contains("c.toml: line 2") && e[0].contains("listen"),
            "{e:?}"
        );
        let e = Config::parse(
            "[collector]\n[netbox]\nurl = \"http://127.0.0.1:1\"\ntoken = { env = \"GT_UNSET_TOKEN_VAR_9\" }\n",
            "c.toml",
        )
        .unwrap_err();
        assert!(
            e[0].contains("netbox.token") && e[0].contains("GT_UNSET_TOKEN_VAR_9"),
            "{e:?}"
        );
    }

    #[test]
    fn token_from_file_is_trimmed_and_not_in_debug() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t");
        std::fs::write(&p, "nbt_abc.def\n").unwrap();
        let text = format!(
            "[collector]\n[netbox]\nurl = \"http://127.0.0.1:1\"\ntoken = {{ file = {:?} }}\n",
            p
        );
        let c = Config::parse(&text, "c.toml").unwrap();
        let nb = c.netbox.unwrap();
        assert_eq!(nb.token, "nbt_abc.def");
        assert!(!format!("{nb:?}").contains("nbt_abc"));
    }

    /// The part of docs/configuration.md between `## {start}` and the next `## ` heading.
    fn doc_section(start: &str) -> String {
        let doc = include_str!("../../docs/configuration.md");
        let from = doc
            .find(&format!("\n## {start}"))
            .expect("section in docs/configuration.md");
        let rest = &doc[from + 4..];
        rest[..rest.find("\n## ").unwrap_or(rest.len())].to_owned()
    }

    /// Keys documented in the section's reference tables: the first cell of each row, `` `a.b` ``.
    fn doc_table_keys(section: &str) -> std::collections::BTreeSet<String> {
        section
            .lines()
            .filter_map(|l| l.strip_prefix("| `"))
            .filter_map(|l| l.split_once('`').map(|(k, _)| k.to_owned()))
            .collect()
    }

    /// The section's example (its first ```toml block) and the `table.key` names it sets
    /// (`[[array]]` tables count as their table name; inline tables such as secrets are values).
    fn doc_example(section: &str) -> (String, std::collections::BTreeSet<String>) {
        let start = section.find("```toml\n").expect("a ```toml example") + 8;
        let text = section[start..][..section[start..].find("```").expect("closed")].to_owned();
        let value: toml::Table = toml::from_str(&text).expect("example is TOML");
        let mut keys = std::collections::BTreeSet::new();
        for (table, v) in &value {
            let entries: Vec<&toml::Table> = match v {
                toml::Value::Table(t) => vec![t],
                toml::Value::Array(a) => a.iter().filter_map(toml::Value::as_table).collect(),
                _ => panic!("top-level key {table} outside a table"),
            };
            for t in entries {
                keys.extend(t.keys().map(|k| format!("{table}.{k}")));
            }
        }
        (text, keys)
    }

    /// docs/configuration.md cannot silently rot: its collector example parses with the strict
    /// (`deny_unknown_fields`) types, sets every key those types have, and the reference tables
    /// list exactly those keys. A new field fails to compile here until it is listed (and then
    /// documented).
    #[test]
    fn config_reference_lists_every_key() {
        let section = doc_section("Collector");
        let (example, example_keys) = doc_example(&section);
        let raw: Raw = toml::from_str(&example).unwrap();
        let Raw {
            collector,
            netbox,
            mqtt,
            location,
            health,
            itsm,
        } = raw;
        let RawItsm {
            interval: i_interval,
            max_new_per_hour,
            update_interval,
            max_attempts,
            retry_backoff,
            webhook,
            rt,
            rules,
        } = itsm.expect("[itsm] in the example");
        assert!(i_interval.is_some() && max_new_per_hour.is_some() && update_interval.is_some());
        assert!(max_attempts.is_some() && retry_backoff.is_some());
        let RawWebhook { url: _, secret: _ } = webhook.expect("[itsm.webhook] in the example");
        let RawRt {
            url: _,
            token: _,
            queue,
        } = rt.expect("[itsm.rt] in the example");
        assert!(queue.is_some());
        // Every rule key appears in some rule of the example.
        let (mut kinds, mut missing, mut budget, mut thr, mut metric, mut above, mut below) =
            (false, false, false, false, false, false, false);
        for r in &rules {
            let RawRule {
                name: _,
                when: _,
                exception_kinds,
                missing_after,
                budget_watts,
                threshold_percent,
                metric: m,
                above: a,
                below: b,
            } = r;
            kinds |= !exception_kinds.is_empty();
            missing |= missing_after.is_some();
            budget |= budget_watts.is_some();
            thr |= threshold_percent.is_some();
            metric |= m.is_some();
            above |= a.is_some();
            below |= b.is_some();
        }
        assert!(kinds && missing && budget && thr && metric && above && below);
        let RawHealth {
            interval: h_interval,
            stale_after: h_stale,
            history: h_history,
        } = health;
        assert!(h_interval.is_some() && h_stale.is_some() && h_history.is_some());
        let RawCollector {
            listen_grpc: _,
            database: _,
            database_password,
            default_site: _,
            listen_http,
            api_token,
            retention_raw,
            retention_hourly,
            tls_cert,
            tls_key,
            client_ca,
            allow_unauthenticated: _,
        } = collector;
        assert!(tls_cert.is_some() && tls_key.is_some() && client_ca.is_some());
        assert!(database_password.is_some());
        let RawLocation { patterns, site_map } = location;
        let RawMqtt {
            url: _,
            username,
            password,
            share_group: _,
            client_id,
            ca_file: mqtt_ca,
            client_cert,
            client_key,
            publish_power,
        } = mqtt.expect("[mqtt] in the example");
        assert!(mqtt_ca.is_some() && client_cert.is_some() && client_key.is_some());
        assert!(publish_power.is_some());
        let RawNetBox {
            url: _,
            token: _,
            device_role: _,
            create_missing: _,
            sync_interval,
            lease_ttl,
            dry_run: _,
            tls_verify: _,
            ca_file,
            rate_limit,
            journal: _,
            ownership,
        } = netbox.expect("[netbox] in the example");
        let RawOwnership {
            location: o_location,
            serial: o_serial,
            asset_tag: o_tag,
            macs: o_macs,
            power: o_power,
            last_seen: o_seen,
            match_hostname: o_host,
            power_deadband_percent: o_pct,
            last_seen_deadband: o_seen_db,
        } = ownership;
        assert!(rate_limit.is_some() && o_location.is_some() && o_serial.is_some() && o_tag.is_some());
        assert!(o_macs.is_some() && o_power.is_some() && o_seen.is_some() && o_host.is_some());
        assert!(o_pct.is_some() && o_seen_db.is_some());
        assert!(listen_http.is_some() && api_token.is_some() && retention_raw.is_some());
        assert!(retention_hourly.is_some() && patterns.is_some() && site_map.is_some());
        assert!(username.is_some() && password.is_some() && client_id.is_some());
        assert!(sync_interval.is_some() && ca_file.is_some() && lease_ttl.is_some());
        let accepted: std::collections::BTreeSet<String> = [
            "collector.listen_grpc",
            "collector.database",
            "collector.database_password",
            "collector.default_site",
            "collector.listen_http",
            "collector.api_token",
            "collector.retention_raw",
            "collector.retention_hourly",
            "collector.tls_cert",
            "collector.tls_key",
            "collector.client_ca",
            "collector.allow_unauthenticated",
            "location.patterns",
            "location.site_map",
            "health.interval",
            "health.stale_after",
            "health.history",
            "itsm.interval",
            "itsm.max_new_per_hour",
            "itsm.update_interval",
            "itsm.max_attempts",
            "itsm.retry_backoff",
            "itsm.webhook",
            "itsm.rt",
            "itsm.rule",
            "mqtt.url",
            "mqtt.username",
            "mqtt.password",
            "mqtt.share_group",
            "mqtt.client_id",
            "mqtt.ca_file",
            "mqtt.client_cert",
            "mqtt.client_key",
            "mqtt.publish_power",
            "netbox.url",
            "netbox.token",
            "netbox.device_role",
            "netbox.create_missing",
            "netbox.sync_interval",
            "netbox.lease_ttl",
            "netbox.dry_run",
            "netbox.tls_verify",
            "netbox.ca_file",
            "netbox.rate_limit",
            "netbox.journal",
            "netbox.ownership",
        ]
        .into_iter()
        .map(str::to_owned)
        .collect();
        assert_eq!(example_keys, accepted, "the example in docs/configuration.md");
        assert_eq!(
            doc_table_keys(&section),
            accepted,
            "the reference tables in docs/configuration.md"
        );
    }
}
