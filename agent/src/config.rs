//! Agent configuration file (TOML).
//!
//! ```toml
//! [agent]
//! id = "dc1-h1-agent01"        # stable, unique per installation
//! site = "DC1"                 # default site for devices that do not say where they are
//! state_dir = "/var/lib/groundtruth-agent"
//! spool_max = "256MiB"
//! metrics_listen = "127.0.0.1:9469"   # /metrics and /status; "off" disables
//!
//! [collector]                  # the gRPC uplink, or:
//! grpc = "http://127.0.0.1:50051"
//!
//! [mqtt]                       # the MQTT uplink (wins when both are set)
//! url = "mqtt://broker.example:1883"
//! username = "dc1-h1-agent01"
//! password = { file = "/etc/groundtruth/secrets/mqtt.pass" }
//!
//! [defaults]
//! interval = "60s"             # telemetry (readings); per target: interval = "30s"
//! intervals = { inventory = "1h", topology = "15m" }   # identity walks, switch tables
//! timeout = "3s"
//! retries = 1
//! max_concurrent_polls = 256
//! batch_max_devices = 500      # a batch is sealed at this many reports ...
//! batch_max_delay = "1s"       # ... or when its oldest report is this old
//! delivery_timeout = "30s"
//!
//! [[targets]]
//! name = "pdu-r07-a"
//! url = "snmp://10.1.7.20"
//! secret = { file = "/etc/groundtruth/secrets/pdu.community" }   # or { env = "GT_PDU_COMMUNITY" }
//! ```
//! Parsing is strict (`deny_unknown_fields`): a typo is an error naming the file, line and key,
//! not a silently ignored setting. Secrets are references; an inline secret in a URL is accepted
//! but warned about, because config files end up in backups and tickets.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::secret::Secret;
use crate::target::Target;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    agent: RawAgent,
    #[serde(default)]
    collector: Option<RawCollector>,
    #[serde(default)]
    mqtt: Option<RawMqtt>,
    #[serde(default)]
    defaults: RawDefaults,
    #[serde(default)]
    targets: Vec<RawTarget>,
    #[serde(default)]
    sweeps: Vec<RawSweep>,
}

/// A discovery sweep run periodically; what it finds is polled like a configured target.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSweep {
    name: String,
    /// "10.1.7.0/24", "10.1.7.5", "10.1.7.5-10.1.7.40".
    ranges: Vec<String>,
    /// How often to sweep again ("1h").
    #[serde(default, with = "humantime_serde_opt")]
    every: Option<Duration>,
    /// Telemetry interval of the targets found (default: defaults.interval).
    #[serde(default, with = "humantime_serde_opt")]
    interval: Option<Duration>,
    /// Per-kind intervals of the targets found, overriding the defaults.
    #[serde(default)]
    intervals: IntervalOverrides,
    #[serde(default)]
    snmp_ports: Option<Vec<u16>>,
    #[serde(default)]
    snmp_communities: Vec<SecretRef>,
    #[serde(default)]
    redfish_ports: Option<Vec<u16>>,
    #[serde(default)]
    redfish_credentials: Vec<RawCredential>,
    #[serde(default)]
    redfish_insecure: bool,
    #[serde(default)]
    ipmi_ports: Option<Vec<u16>>,
    #[serde(default)]
    ipmi_credentials: Vec<RawCredential>,
    #[serde(default)]
    modbus_ports: Option<Vec<u16>>,
    /// "UNIT:MAP" pairs to try on each Modbus port, e.g. "1:sdm630".
    #[serde(default)]
    modbus_try: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCredential {
    user: String,
    password: SecretRef,
}

/// A validated sweep.
#[derive(Debug, Clone)]
pub struct SweepConfig {
    pub name: String,
    pub spec: crate::discover::SweepSpec,
    pub every: Duration,
    /// Per-kind intervals of what it finds (unset kinds: `defaults`).
    pub intervals: IntervalOverrides,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAgent {
    id: String,
    #[serde(default)]
    site: String,
    #[serde(default)]
    state_dir: Option<PathBuf>,
    /// Size cap of the durable spool ("256MiB"); past it the oldest telemetry is dropped.
    #[serde(default)]
    spool_max: Option<String>,
    /// Address of `/metrics` and `/status` ("127.0.0.1:9469" by default; "off" disables).
    #[serde(default)]
    metrics_listen: Option<String>,
}

/// `collector.grpc`: one URL, or several to fail over between, in order.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn urls(&self) -> Vec<String> {
        match self {
            Self::One(u) => vec![u.clone()],
            Self::Many(v) => v.clone(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCollector {
    grpc: OneOrMany,
    /// CA bundle (PEM) that signed the collector's certificate (https:// only; default: the
    /// system's roots).
    #[serde(default)]
    ca_file: Option<PathBuf>,
    /// Client certificate and key (PEM) for mutual TLS.
    #[serde(default)]
    client_cert: Option<PathBuf>,
    #[serde(default)]
    client_key: Option<PathBuf>,
    /// Name to verify the collector's certificate against, if not the URL's host.
    #[serde(default)]
    server_name: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMqtt {
    url: String,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<SecretRef>,
    /// mqtts:// only: CA bundle (default: the system bundle), client certificate and key.
    #[serde(default)]
    ca_file: Option<PathBuf>,
    #[serde(default)]
    client_cert: Option<PathBuf>,
    #[serde(default)]
    client_key: Option<PathBuf>,
    /// "protobuf" (default) or "json" (the canonical JSON mapping).
    #[serde(default)]
    payload: Option<String>,
    /// "3.1.1" (default) or "5".
    #[serde(default)]
    protocol: Option<String>,
    /// MQTT 5: how long the broker keeps the agent's session while it is away ("1d").
    #[serde(default, with = "humantime_serde_opt")]
    session_expiry: Option<Duration>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawDefaults {
    /// The telemetry interval (same as `intervals.telemetry`; kept because it is the common case).
    #[serde(default, with = "humantime_serde_opt")]
    interval: Option<Duration>,
    #[serde(default)]
    intervals: IntervalOverrides,
    /// Most spooled batches sent in one delivery while replaying a backlog.
    #[serde(default)]
    replay_batches_per_delivery: Option<usize>,
    /// Ceiling on the replay rate after an outage, in batches per second (0: unlimited).
    #[serde(default)]
    replay_max_batches_per_second: Option<u32>,
    #[serde(default, with = "humantime_serde_opt")]
    timeout: Option<Duration>,
    #[serde(default)]
    retries: Option<u32>,
    #[serde(default, with = "humantime_serde_opt")]
    delivery_timeout: Option<Duration>,
    /// Polls in flight at once, all protocols together.
    #[serde(default)]
    max_concurrent_polls: Option<usize>,
    /// A batch is sealed when it holds this many device reports ...
    #[serde(default)]
    batch_max_devices: Option<usize>,
    /// ... or when its oldest report is this old.
    #[serde(default, with = "humantime_serde_opt")]
    batch_max_delay: Option<Duration>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTarget {
    name: String,
    url: String,
    #[serde(default)]
    secret: Option<SecretRef>,
    #[serde(default)]
    ca_file: Option<PathBuf>,
    /// Telemetry interval of this target, overriding `defaults.interval`.
    #[serde(default, with = "humantime_serde_opt")]
    interval: Option<Duration>,
    /// Per-kind intervals of this target, overriding `defaults.intervals`.
    #[serde(default)]
    intervals: IntervalOverrides,
}

/// How often each kind of data is read; see [`crate::driver::PollScope`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Intervals {
    /// Identity (serials, MACs, FRU, ENTITY-MIB parts): rarely changes, costs most requests.
    pub inventory: Duration,
    /// Readings (power, environment, status).
    pub telemetry: Duration,
    /// Switch FDB/LLDP tables (also read with every inventory poll).
    pub topology: Duration,
}

impl Default for Intervals {
    fn default() -> Self {
        Self {
            inventory: Duration::from_secs(3600),
            telemetry: Duration::from_secs(60),
            topology: Duration::from_secs(900),
        }
    }
}

/// `intervals = { inventory = "1h", telemetry = "60s", topology = "15m" }`: any subset; what is
/// not set comes from the level above (target or sweep → `[defaults]` → built-in defaults).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntervalOverrides {
    #[serde(default, with = "humantime_serde_opt")]
    pub inventory: Option<Duration>,
    #[serde(default, with = "humantime_serde_opt")]
    pub telemetry: Option<Duration>,
    #[serde(default, with = "humantime_serde_opt")]
    pub topology: Option<Duration>,
}

impl IntervalOverrides {
    /// `base` with the kinds set here replaced.
    #[must_use]
    pub fn over(self, base: Intervals) -> Intervals {
        Intervals {
            inventory: self.inventory.unwrap_or(base.inventory),
            telemetry: self.telemetry.unwrap_or(base.telemetry),
            topology: self.topology.unwrap_or(base.topology),
        }
    }

    /// Folds the legacy `interval` key in as the telemetry interval; both at once is an error.
    fn with_interval(mut self, interval: Option<Duration>, at: &str) -> Result<Self, String> {
        match (interval, self.telemetry) {
            (Some(_), Some(_)) => Err(format!(
                "{at}: interval and intervals.telemetry are the same setting; keep one"
            )),
            (Some(iv), None) => {
                self.telemetry = Some(iv);
                Ok(self)
            }
            _ => Ok(self),
        }
    }

    fn check(&self, at: &str, errors: &mut Vec<String>) {
        for (k, v) in [
            ("inventory", self.inventory),
            ("telemetry", self.telemetry),
            ("topology", self.topology),
        ] {
            if v == Some(Duration::ZERO) {
                errors.push(format!("{at}.intervals.{k}: must be longer than zero"));
            }
        }
    }
}

/// Where a secret comes from.
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum SecretRef {
    File(PathBuf),
    Env(String),
}

impl SecretRef {
    /// Resolves the reference.
    ///
    /// # Errors
    /// If the file cannot be read or the variable is unset.
    pub fn load(&self) -> Result<Secret, crate::secret::SecretError> {
        match self {
            Self::File(p) => Secret::from_file(p),
            Self::Env(v) => Secret::from_env(v),
        }
    }
}

/// Durations as humantime strings ("30s", "1h 30m").
mod humantime_serde_opt {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s)
            .map(Some)
            .map_err(|e| serde::de::Error::custom(format!("invalid duration {s:?}: {e}")))
    }
}

/// One configured target, validated.
#[derive(Debug, Clone)]
pub struct TargetConfig {
    pub name: String,
    pub target: Target,
    /// Per-kind intervals of this target; unset kinds come from `defaults`.
    pub intervals: IntervalOverrides,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub agent_id: String,
    pub site: String,
    pub state_dir: PathBuf,
    /// Spool size cap in bytes.
    pub spool_max_bytes: u64,
    /// Where `/metrics` and `/status` are served; `None` = off.
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// gRPC endpoints of the collectors (`[collector] grpc`), in fail-over order; empty when
    /// that uplink is not used.
    pub collector_grpc: Vec<String>,
    /// TLS settings of the gRPC uplink (https:// endpoints).
    pub grpc_tls: crate::uplink::grpc::GrpcTls,
    /// MQTT broker (`[mqtt]`), if that uplink is used; it wins over gRPC when both are set.
    pub mqtt: Option<crate::uplink::mqtt::MqttSettings>,
    /// Per-kind poll intervals (`defaults.interval(s)`).
    pub intervals: Intervals,
    pub timeout: Duration,
    pub retries: u32,
    /// How long one delivery to the collector (connect, send, acks) may take.
    pub delivery_timeout: Duration,
    pub max_concurrent_polls: usize,
    pub batch_max_devices: usize,
    pub batch_max_delay: Duration,
    /// Most spooled batches sent in one delivery (`defaults.replay_batches_per_delivery`).
    pub replay_batches_per_delivery: usize,
    /// Replay ceiling in batches per second; `None` = unlimited.
    pub replay_max_batches_per_second: Option<u32>,
    pub targets: Vec<TargetConfig>,
    pub sweeps: Vec<SweepConfig>,
    /// Non-fatal findings, logged at start.
    pub warnings: Vec<String>,
}

/// A configuration problem with its place in the file.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {message}")]
pub struct ConfigError {
    pub file: String,
    pub message: String,
}

impl Config {
    /// Reads and validates a config file.
    ///
    /// # Errors
    /// Every problem found, each naming the file and the key (and the line for syntax and type
    /// errors).
    pub fn load(path: &Path) -> Result<Self, Vec<ConfigError>> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| {
            vec![ConfigError {
                file: file.clone(),
                message: format!("cannot read: {e}"),
            }]
        })?;
        Self::parse(&text, &file)
    }

    /// Parses and validates config text; `file` is used in messages.
    ///
    /// # Errors
    /// See [`Config::load`].
    pub fn parse(text: &str, file: &str) -> Result<Self, Vec<ConfigError>> {
        let err = |message: String| ConfigError {
            file: file.to_owned(),
            message,
        };
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            // toml's message already names the key; add the line and column.
            let place = e
                .span()
                .map(|s| {
                    let line = text[..s.start].matches('\n').count() + 1;
                    let col = s.start - text[..s.start].rfind('\n').map_or(0, |i| i + 1) + 1;
                    format!("line {line}, column {col}: ")
                })
                .unwrap_or_default();
            vec![err(format!("{place}{}", e.message()))]
        })?;

        let mut errors = Vec::new();
        let mut warnings = Vec::new();
        if raw.agent.id.trim().is_empty() {
            errors.push(err("agent.id: must not be empty".into()));
        }
        if let Some(c) = &raw.collector {
            let urls = c.grpc.urls();
            if urls.is_empty() {
                errors.push(err("collector.grpc: give at least one collector URL".into()));
            }
            for u in urls
                .iter()
                .filter(|u| !u.starts_with("http://") && !u.starts_with("https://"))
            {
                errors.push(err(format!(
                    "collector.grpc: expected an http:// or https:// URL, got {u:?}"
                )));
            }
        }
        let grpc_tls = match &raw.collector {
            None => crate::uplink::grpc::GrpcTls::default(),
            Some(c) => {
                let mut read = |key: &str, p: &Option<PathBuf>| -> Option<Vec<u8>> {
                    let p = p.as_ref()?;
                    std::fs::read(p)
                        .map_err(|e| {
                            errors.push(err(format!("collector.{key}: cannot read {}: {e}", p.display())))
                        })
                        .ok()
                };
                let mut tls = crate::uplink::grpc::GrpcTls {
                    ca_pem: read("ca_file", &c.ca_file),
                    client_cert_pem: read("client_cert", &c.client_cert),
                    client_key_pem: read("client_key", &c.client_key),
                    server_name: c.server_name.clone(),
                };
                if tls.client_cert_pem.is_some() != tls.client_key_pem.is_some() {
                    errors.push(err(
                        "collector.client_cert and collector.client_key go together".into()
                    ));
                    tls = crate::uplink::grpc::GrpcTls::default();
                }
                if c.grpc.urls().iter().any(|u| u.starts_with("http://"))
                    && (c.ca_file.is_some() || c.client_cert.is_some())
                {
                    errors.push(err(
                        "collector: TLS files given for a plain http:// endpoint; use https://".into(),
                    ));
                }
                tls
            }
        };
        if raw.collector.is_none() && raw.mqtt.is_none() {
            errors.push(err(
                "no uplink: set [collector] grpc = \"http://...\" or [mqtt] url = \"mqtt://...\"".into(),
            ));
        }
        let mqtt = raw.mqtt.as_ref().and_then(|m| {
            let url = groundtruth_proto::topics::broker_url(&m.url)
                .map_err(|e| errors.push(err(format!("mqtt.url: {e}"))))
                .ok()?;
            let (host, port) = (url.host.clone(), url.port);
            let password = match &m.password {
                None => None,
                Some(r) => Some(
                    r.load()
                        .map_err(|e| errors.push(err(format!("mqtt.password: {e}"))))
                        .ok()?,
                ),
            };
            let tls = if url.tls {
                let ca = m
                    .ca_file
                    .clone()
                    .unwrap_or_else(|| PathBuf::from("/etc/ssl/certs/ca-certificates.crt"));
                let mut read = |key: &str, p: &Path| {
                    std::fs::read(p)
                        .map_err(|e| {
                            errors.push(err(format!("mqtt.{key}: cannot read {}: {e}", p.display())))
                        })
                        .ok()
                };
                let ca_pem = read("ca_file", &ca)?;
                let client_auth = match (&m.client_cert, &m.client_key) {
                    (Some(c), Some(k)) => Some((read("client_cert", c)?, read("client_key", k)?)),
                    (None, None) => None,
                    _ => {
                        errors.push(err("mqtt.client_cert and mqtt.client_key go together".into()));
                        return None;
                    }
                };
                Some(crate::uplink::mqtt::MqttTls { ca_pem, client_auth })
            } else {
                if m.ca_file.is_some() || m.client_cert.is_some() {
                    errors.push(err(
                        "mqtt: TLS files given for a plain mqtt:// broker; use mqtts://".into(),
                    ));
                }
                if m.password.is_some() && !is_loopback(&url.host) {
                    warnings.push(format!(
                        "{file}: mqtt: the broker password travels in clear over mqtt://; use mqtts://"
                    ));
                }
                None
            };
            Some(crate::uplink::mqtt::MqttSettings {
                host,
                port,
                username: m.username.clone(),
                password,
                site: raw.agent.site.clone(),
                agent_id: raw.agent.id.clone(),
                keep_alive: Duration::from_secs(30),
                tls,
                v5_session_expiry: match m.protocol.as_deref() {
                    None | Some("3.1.1" | "3") => {
                        if m.session_expiry.is_some() {
                            errors.push(err(
                                "mqtt.session_expiry: only MQTT 5 has a session expiry; set protocol = \"5\""
                                    .into(),
                            ));
                        }
                        None
                    }
                    Some("5") => Some(m.session_expiry.unwrap_or(Duration::from_secs(86_400))),
                    Some(other) => {
                        errors.push(err(format!(
                            "mqtt.protocol: expected \"3.1.1\" or \"5\", got {other:?}"
                        )));
                        None
                    }
                },
                json: match m.payload.as_deref() {
                    None | Some("protobuf") => false,
                    Some("json") => true,
                    Some(other) => {
                        errors.push(err(format!(
                            "mqtt.payload: expected \"protobuf\" or \"json\", got {other:?}"
                        )));
                        false
                    }
                },
            })
        });
        let mut targets = Vec::new();
        for (i, t) in raw.targets.iter().enumerate() {
            let at = format!("targets[{i}] ({})", t.name);
            if targets.iter().any(|x: &TargetConfig| x.name == t.name) {
                errors.push(err(format!("{at}.name: duplicate target name")));
            }
            let mut target = match Target::parse(&t.url) {
                Ok(target) => target,
                Err(e) => {
                    errors.push(err(format!("{at}.url: {e}")));
                    continue;
                }
            };
            if t.url.contains('@') && t.secret.is_none() && !matches!(target, Target::Snmp(_)) {
                warnings.push(format!(
                    "{file}: {at}.url carries credentials inline; prefer secret = {{ file = ... }}"
                ));
            }
            if let Some(sref) = &t.secret {
                match sref.load() {
                    Ok(s) => target.set_password(s),
                    Err(e) => errors.push(err(format!("{at}.secret: {e}"))),
                }
            }
            if let Target::Redfish(r) = &mut target {
                r.ca_file.clone_from(&t.ca_file);
                if !r.verify_tls {
                    warnings.push(format!(
                        "{file}: {at}: TLS certificate verification is OFF for this target"
                    ));
                }
            } else if t.ca_file.is_some() {
                errors.push(err(format!("{at}.ca_file: only Redfish targets use TLS")));
            }
            if t.interval.is_some_and(|iv| iv < Duration::from_secs(1)) {
                warnings.push(format!("{file}: {at}.interval is under one second"));
            }
            let intervals = match t.intervals.with_interval(t.interval, &at) {
                Ok(iv) => iv,
                Err(e) => {
                    errors.push(err(e));
                    IntervalOverrides::default()
                }
            };
            let mut problems = Vec::new();
            intervals.check(&at, &mut problems);
            errors.extend(problems.into_iter().map(&err));
            if let Target::Modbus(m) = &target
                && let Err(e) = crate::driver::modbus::map::load(&m.map)
            {
                errors.push(err(format!("{at}.url: {e}")));
            }
            targets.push(TargetConfig {
                name: t.name.clone(),
                target,
                intervals,
            });
        }
        let spool_max_bytes = match raw.agent.spool_max.as_deref().map(parse_size) {
            None => 256 * 1024 * 1024,
            Some(Ok(n)) => n,
            Some(Err(e)) => {
                errors.push(err(format!("agent.spool_max: {e}")));
                0
            }
        };
        let metrics_listen = match raw.agent.metrics_listen.as_deref() {
            Some("off") => None,
            None => Some(std::net::SocketAddr::from(([127, 0, 0, 1], 9469))),
            Some(a) => a
                .parse()
                .map_err(|_| {
                    errors.push(err(format!(
                        "agent.metrics_listen: expected ADDRESS:PORT or \"off\", got {a:?}"
                    )))
                })
                .ok(),
        };
        let mut sweeps = Vec::new();
        for (i, sw) in raw.sweeps.iter().enumerate() {
            let at = format!("sweeps[{i}] ({})", sw.name);
            if sweeps.iter().any(|x: &SweepConfig| x.name == sw.name) {
                errors.push(err(format!("{at}.name: duplicate sweep name")));
            }
            let mut spec = crate::discover::SweepSpec {
                redfish_insecure: sw.redfish_insecure,
                ..Default::default()
            };
            for r in &sw.ranges {
                match crate::discover::parse_range(r) {
                    Ok(a) => spec.addresses.extend(a),
                    Err(e) => errors.push(err(format!("{at}.ranges: {e}"))),
                }
            }
            if spec.addresses.len() > crate::discover::MAX_ADDRESSES {
                errors.push(err(format!(
                    "{at}.ranges: more than {} addresses",
                    crate::discover::MAX_ADDRESSES
                )));
            }
            for (j, c) in sw.snmp_communities.iter().enumerate() {
                match c.load() {
                    Ok(s) => spec.snmp_communities.push(s),
                    Err(e) => errors.push(err(format!("{at}.snmp_communities[{j}]: {e}"))),
                }
            }
            let mut creds = |list: &[RawCredential], key: &str, out: &mut Vec<(String, Secret)>| {
                for (j, c) in list.iter().enumerate() {
                    match c.password.load() {
                        Ok(p) => out.push((c.user.clone(), p)),
                        Err(e) => errors.push(err(format!("{at}.{key}[{j}].password: {e}"))),
                    }
                }
            };
            creds(
                &sw.redfish_credentials,
                "redfish_credentials",
                &mut spec.redfish_credentials,
            );
            creds(
                &sw.ipmi_credentials,
                "ipmi_credentials",
                &mut spec.ipmi_credentials,
            );
            for m in &sw.modbus_try {
                match m
                    .split_once(':')
                    .and_then(|(u, map)| Some((u.parse::<u8>().ok()?, map.to_owned())))
                {
                    Some(pair) => spec.modbus_units_maps.push(pair),
                    None => errors.push(err(format!("{at}.modbus_try: {m:?} is not UNIT:MAP"))),
                }
            }
            // Ports default to the standard ones for protocols that have something to try.
            let ports = |p: &Option<Vec<u16>>, default: u16, wanted: bool| match p {
                Some(p) => p.clone(),
                None if wanted => vec![default],
                None => vec![],
            };
            spec.snmp_ports = ports(&sw.snmp_ports, 161, !spec.snmp_communities.is_empty());
            spec.redfish_ports = ports(&sw.redfish_ports, 443, true);
            spec.ipmi_ports = ports(&sw.ipmi_ports, 623, !spec.ipmi_credentials.is_empty());
            spec.modbus_ports = ports(&sw.modbus_ports, 502, !spec.modbus_units_maps.is_empty());
            if sw.redfish_insecure {
                warnings.push(format!(
                    "{file}: {at}: Redfish TLS certificates are not verified during this sweep"
                ));
            }
            sweeps.push(SweepConfig {
                name: sw.name.clone(),
                spec,
                every: sw.every.unwrap_or(Duration::from_secs(3600)),
                intervals: match sw.intervals.with_interval(sw.interval, &at) {
                    Ok(iv) => {
                        let mut problems = Vec::new();
                        iv.check(&at, &mut problems);
                        errors.extend(problems.into_iter().map(&err));
                        iv
                    }
                    Err(e) => {
                        errors.push(err(e));
                        IntervalOverrides::default()
                    }
                },
            });
        }
        let intervals = match raw
            .defaults
            .intervals
            .with_interval(raw.defaults.interval, "defaults")
        {
            Ok(iv) => {
                let mut problems = Vec::new();
                iv.check("defaults", &mut problems);
                errors.extend(problems.into_iter().map(&err));
                iv.over(Intervals::default())
            }
            Err(e) => {
                errors.push(err(e));
                Intervals::default()
            }
        };
        let interval = intervals.telemetry;
        let timeout = raw.defaults.timeout.unwrap_or(Duration::from_secs(3));
        if timeout >= interval {
            warnings.push(format!(
                "{file}: defaults.timeout ({timeout:?}) is not shorter than the telemetry interval ({interval:?})"
            ));
        }
        if raw.defaults.replay_batches_per_delivery == Some(0) {
            errors.push(err(
                "defaults.replay_batches_per_delivery: must be at least 1".into()
            ));
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(Self {
            agent_id: raw.agent.id,
            site: raw.agent.site,
            state_dir: raw
                .agent
                .state_dir
                .unwrap_or_else(|| PathBuf::from("/var/lib/groundtruth-agent")),
            spool_max_bytes,
            metrics_listen,
            collector_grpc: raw.collector.map(|c| c.grpc.urls()).unwrap_or_default(),
            grpc_tls,
            mqtt,
            intervals,
            timeout,
            retries: raw.defaults.retries.unwrap_or(1),
            delivery_timeout: raw.defaults.delivery_timeout.unwrap_or(Duration::from_secs(30)),
            max_concurrent_polls: raw.defaults.max_concurrent_polls.unwrap_or(256).max(1),
            batch_max_devices: raw.defaults.batch_max_devices.unwrap_or(500).max(1),
            batch_max_delay: raw.defaults.batch_max_delay.unwrap_or(Duration::from_secs(1)),
            replay_batches_per_delivery: raw.defaults.replay_batches_per_delivery.unwrap_or(100),
            replay_max_batches_per_second: raw.defaults.replay_max_batches_per_second.filter(|n| *n > 0),
            targets,
            sweeps,
            warnings,
        })
    }
}

fn is_loopback(host: &str) -> bool {
    host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Parses a size such as "256MiB", "1GiB", "512KiB", "10MB" or a plain byte count.
///
/// # Errors
/// A message naming the accepted units.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("invalid size {text:?}: expected e.g. \"256MiB\""))?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "KB" | "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        other => {
            return Err(format!(
                "invalid size unit {other:?} in {text:?}: use B, KiB, MiB, GiB, KB, MB or GB"
            ));
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("size {text:?} is too large"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    #[test]
    fn sizes_parse_with_binary_and_decimal_units() {
        assert_eq!(super::parse_size("256MiB").unwrap(), 256 << 20);
        assert_eq!(super::parse_size("10MB").unwrap(), 10_000_000);
        assert_eq!(super::parse_size("4096").unwrap(), 4096);
        assert!(super::parse_size("12 parsecs").unwrap_err().contains("unit"));
    }

    use super::*;

    const GOOD: &str = r#"
[agent]
id = "a1"
site = "DC1"
state_dir = "/tmp/x"

[collector]
grpc = "http://127.0.0.1:50051"

[defaults]
interval = "30s"

[[targets]]
name = "snmpd"
url = "snmp://public@127.0.0.1:161"

[[targets]]
name = "bmc"
url = "redfish://127.0.0.1:8443?insecure"
secret = { file = "SECRET_FILE" }
"#;

    #[test]
    fn good_config_validates_with_a_warning_for_insecure_tls() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("bmc.pass");
        std::fs::write(&secret, "pw\n").unwrap();
        let text = GOOD.replace("SECRET_FILE", secret.to_str().unwrap());
        let c = Config::parse(&text, "agent.toml").unwrap();
        assert_eq!(c.targets.len(), 2);
        assert_eq!(c.intervals.telemetry, Duration::from_secs(30));
        assert_eq!(c.intervals.inventory, Duration::from_secs(3600));
        assert!(
            c.warnings
                .iter()
                .any(|w| w.contains("bmc") && w.contains("verification is OFF"))
        );
        let Target::Redfish(r) = &c.targets[1].target else {
            panic!()
        };
        assert_eq!(r.password.as_ref().unwrap().expose(), "pw");
    }

    #[test]
    fn unknown_key_is_reported_with_line_and_key() {
        let bad = GOOD.replace("site = \"DC1\"", "site = \"DC1\"\nsiet = \"x\"");
        let errs = Config::parse(&bad, "agent.toml").unwrap_err();
        let msg = errs[0].to_string();
        assert!(msg.starts_with("agent.toml: line 5"), "{msg}");
        assert!(msg.contains("siet"), "{msg}");
    }

    #[test]
    fn all_target_problems_are_reported_at_once() {
        let bad = GOOD
            .replace("snmp://public@127.0.0.1:161", "gopher://x")
            .replace("SECRET_FILE", "/nonexistent/gt-secret-42");
        let errs = Config::parse(&bad, "agent.toml").unwrap_err();
        let all: Vec<String> = errs.iter().map(ToString::to_string).collect();
        assert!(
            all.iter()
                .any(|e| e.contains("targets[0] (snmpd).url") && e.contains("gopher")),
            "{all:?}"
        );
        assert!(
            all.iter()
                .any(|e| e.contains("targets[1] (bmc).secret") && e.contains("gt-secret-42")),
            "{all:?}"
        );
    }

    #[test]
    fn unknown_modbus_register_map_is_a_config_error() {
        let text = GOOD.replace(
            "url = \"snmp://public@127.0.0.1:161\"",
            "url = \"modbus+tcp://127.0.0.1:502?map=sdm63\"",
        );
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("bmc.pass");
        std::fs::write(&secret, "pw\n").unwrap();
        let text = text.replace("SECRET_FILE", secret.to_str().unwrap());
        let errs = Config::parse(&text, "agent.toml").unwrap_err();
        let msg = errs[0].to_string();
        assert!(
            msg.contains("targets[0] (snmpd).url") && msg.contains("no built-in register map 'sdm63'"),
            "{msg}"
        );
        assert!(Config::parse(&text.replace("sdm63", "sdm630"), "agent.toml").is_ok());
    }

    #[test]
    fn bad_duration_names_the_key() {
        let bad = GOOD.replace("\"30s\"", "\"thirty\"");
        let msg = Config::parse(&bad, "agent.toml").unwrap_err()[0].to_string();
        assert!(msg.contains("thirty") && msg.contains("line 11"), "{msg}");
    }

    /// Per-kind intervals: defaults, the `interval` alias, per-target and per-sweep overrides,
    /// and the alias given together with `intervals.telemetry` is an error naming the place.
    #[test]
    fn intervals_per_kind_layer_and_conflicts_are_named() {
        let base = "[agent]\nid = \"a\"\n[collector]\ngrpc = \"http://127.0.0.1:1\"\n";
        let c = Config::parse(base, "a.toml").unwrap();
        assert_eq!(c.intervals, Intervals::default());
        assert_eq!(c.replay_batches_per_delivery, 100);
        assert_eq!(c.replay_max_batches_per_second, None);
        let text = format!(
            "{base}[defaults]\ninterval = \"30s\"\nintervals = {{ inventory = \"2h\" }}\nreplay_max_batches_per_second = 50\n\
             [[targets]]\nname = \"t\"\nurl = \"snmp://c@127.0.0.1\"\nintervals = {{ topology = \"5m\", telemetry = \"10s\" }}\n"
        );
        let c = Config::parse(&text, "a.toml").unwrap();
        assert_eq!(c.replay_max_batches_per_second, Some(50));
        assert_eq!(
            c.intervals,
            Intervals {
                inventory: Duration::from_secs(7200),
                telemetry: Duration::from_secs(30),
                topology: Duration::from_secs(900),
            }
        );
        assert_eq!(
            c.targets[0].intervals.over(c.intervals),
            Intervals {
                inventory: Duration::from_secs(7200),
                telemetry: Duration::from_secs(10),
                topology: Duration::from_secs(300),
            }
        );
        let both = format!(
            "{base}[[targets]]\nname = \"t\"\nurl = \"snmp://c@127.0.0.1\"\ninterval = \"5s\"\nintervals = {{ telemetry = \"10s\" }}\n"
        );
        let e = Config::parse(&both, "a.toml").unwrap_err()[0].to_string();
        assert!(
            e.contains("targets[0] (t)") && e.contains("intervals.telemetry"),
            "{e}"
        );
        let typo = format!("{base}[defaults]\nintervals = {{ inventroy = \"1h\" }}\n");
        let e = Config::parse(&typo, "a.toml").unwrap_err()[0].to_string();
        assert!(e.contains("inventroy"), "{e}");
        let zero = format!("{base}[defaults]\nintervals = {{ topology = \"0s\" }}\n");
        let e = Config::parse(&zero, "a.toml").unwrap_err()[0].to_string();
        assert!(e.contains("defaults.intervals.topology"), "{e}");
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

    /// docs/configuration.md cannot silently rot: its agent example parses with the strict
    /// (`deny_unknown_fields`) types, sets every key those types have, and the reference tables
    /// list exactly those keys. A new field fails to compile here until it is listed (and then
    /// documented).
    #[test]
    fn config_reference_lists_every_key() {
        use super::{
            RawAgent, RawCollector, RawConfig, RawCredential, RawDefaults, RawMqtt, RawSweep, RawTarget,
        };
        let section = doc_section("Agent");
        let (example, example_keys) = doc_example(&section);
        let raw: RawConfig = toml::from_str(&example).unwrap();
        let RawConfig {
            agent,
            collector,
            mqtt,
            defaults,
            targets,
            sweeps,
        } = raw;
        let RawAgent {
            id: _,
            site: _,
            state_dir,
            spool_max,
            metrics_listen,
        } = agent;
        let RawCollector {
            grpc: _,
            ca_file: grpc_ca,
            client_cert,
            client_key,
            server_name,
        } = collector.expect("[collector] in the example");
        assert!(grpc_ca.is_some() && client_cert.is_some() && client_key.is_some() && server_name.is_some());
        let RawSweep {
            name: _,
            ranges: _,
            every,
            interval: sweep_interval,
            intervals: sweep_intervals,
            snmp_ports,
            snmp_communities,
            redfish_ports,
            redfish_credentials,
            redfish_insecure: _,
            ipmi_ports,
            ipmi_credentials,
            modbus_ports,
            modbus_try,
        } = sweeps.into_iter().next().expect("a [[sweeps]] entry");
        assert!(
            every.is_some() && sweep_interval.is_some() && snmp_ports.is_some() && redfish_ports.is_some()
        );
        assert!(ipmi_ports.is_some() && modbus_ports.is_some() && !snmp_communities.is_empty());
        assert!(!modbus_try.is_empty() && !ipmi_credentials.is_empty());
        let RawCredential { user: _, password: _ } =
            redfish_credentials.into_iter().next().expect("a credential");
        let RawDefaults {
            interval,
            intervals: default_intervals,
            replay_batches_per_delivery,
            replay_max_batches_per_second,
            timeout,
            retries,
            delivery_timeout,
            max_concurrent_polls,
            batch_max_devices,
            batch_max_delay,
        } = defaults;
        let RawTarget {
            name: _,
            url: _,
            secret,
            ca_file,
            interval: target_interval,
            intervals: target_intervals,
        } = targets.into_iter().next().expect("a [[targets]] entry");
        // Every kind appears in the example at some level.
        let super::IntervalOverrides {
            inventory,
            telemetry,
            topology,
        } = default_intervals;
        assert!(inventory.is_some() && topology.is_some() && telemetry.is_none());
        assert!(target_intervals.inventory.is_some() && sweep_intervals.topology.is_some());
        assert!(replay_batches_per_delivery.is_some() && replay_max_batches_per_second.is_some());
        assert!(state_dir.is_some() && spool_max.is_some() && metrics_listen.is_some());
        assert!(interval.is_some() && timeout.is_some() && retries.is_some());
        assert!(delivery_timeout.is_some() && max_concurrent_polls.is_some());
        assert!(batch_max_devices.is_some() && batch_max_delay.is_some());
        assert!(secret.is_some() && ca_file.is_some() && target_interval.is_some());
        // [mqtt] is the alternative uplink; its keys are checked on a second parse.
        assert!(mqtt.is_none());
        let with_mqtt = format!(
            "{example}\n[mqtt]\nurl = \"mqtts://b:8883\"\nusername = \"u\"\npassword = {{ env = \"P\" }}\n\
             ca_file = \"/c\"\nclient_cert = \"/c\"\nclient_key = \"/k\"\npayload = \"json\"\n\
             protocol = \"5\"\nsession_expiry = \"1d\"\n"
        );
        let RawMqtt {
            url: _,
            username,
            password,
            ca_file: mqtt_ca,
            client_cert: mqtt_cert,
            client_key: mqtt_key,
            payload,
            protocol,
            session_expiry,
        } = toml::from_str::<RawConfig>(&with_mqtt).unwrap().mqtt.unwrap();
        assert!(username.is_some() && password.is_some() && payload.is_some());
        assert!(protocol.is_some() && session_expiry.is_some());
        assert!(mqtt_ca.is_some() && mqtt_cert.is_some() && mqtt_key.is_some());
        let accepted: std::collections::BTreeSet<String> = [
            "agent.id",
            "agent.site",
            "agent.state_dir",
            "agent.spool_max",
            "agent.metrics_listen",
            "collector.grpc",
            "collector.ca_file",
            "collector.client_cert",
            "collector.client_key",
            "collector.server_name",
            "defaults.interval",
            "defaults.intervals",
            "defaults.replay_batches_per_delivery",
            "defaults.replay_max_batches_per_second",
            "defaults.timeout",
            "defaults.retries",
            "defaults.delivery_timeout",
            "defaults.max_concurrent_polls",
            "defaults.batch_max_devices",
            "defaults.batch_max_delay",
            "targets.name",
            "targets.url",
            "targets.secret",
            "targets.ca_file",
            "targets.interval",
            "targets.intervals",
            "sweeps.name",
            "sweeps.ranges",
            "sweeps.every",
            "sweeps.interval",
            "sweeps.intervals",
            "sweeps.snmp_ports",
            "sweeps.snmp_communities",
            "sweeps.redfish_ports",
            "sweeps.redfish_credentials",
            "sweeps.redfish_insecure",
            "sweeps.ipmi_ports",
            "sweeps.ipmi_credentials",
            "sweeps.modbus_ports",
            "sweeps.modbus_try",
        ]
        .into_iter()
        .map(str::to_owned)
        .collect();
        assert_eq!(example_keys, accepted, "the example in docs/configuration.md");
        let mut documented = accepted.clone();
        documented.extend(
            [
                "mqtt.url",
                "mqtt.username",
                "mqtt.password",
                "mqtt.ca_file",
                "mqtt.client_cert",
                "mqtt.client_key",
                "mqtt.payload",
                "mqtt.protocol",
                "mqtt.session_expiry",
                "defaults.intervals.inventory",
                "defaults.intervals.telemetry",
                "defaults.intervals.topology",
            ]
            .map(str::to_owned),
        );
        assert_eq!(
            doc_table_keys(&section),
            documented,
            "the reference tables in docs/configuration.md"
        );
    }
}
