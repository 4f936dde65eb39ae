//! `groundtruth-agent` command line.
//!
//! Exit codes: 0 success; 1 the device or collector failed (poll error, delivery error);
//! 2 usage or configuration error.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use groundtruth_agent::config::Config;
use groundtruth_agent::driver::{self, Limits, PollCx};
use groundtruth_agent::run::Agent;
use groundtruth_agent::secret::Secret;
use groundtruth_agent::target::Target;

/// `println!` that ends the process quietly when stdout is a closed pipe (`… | head`), instead
/// of panicking the way `println!` does.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let mut stdout = std::io::stdout().lock();
        if let Err(e) = writeln!(stdout, $($arg)*) {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                std::process::exit(0);
            }
        }
    }};
}

#[derive(Debug, Parser)]
#[command(
    name = "groundtruth-agent",
    version,
    about = "Polls rack hardware and streams it to the groundtruth collector"
)]
struct Cli {
    /// Log filter (tracing EnvFilter syntax), e.g. "info" or "groundtruth_agent=debug".
    #[arg(long, env = "GT_LOG", default_value = "info,async_snmp=off", global = true)]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Poll one device once and print its identity and readings.
    Poll(PollArgs),
    /// Run the agent: poll the configured targets on their interval and deliver to the collector.
    Run {
        #[arg(long, short)]
        config: PathBuf,
        /// Poll and deliver one round, then exit (non-zero if delivery failed).
        #[arg(long)]
        once: bool,
    },
    /// Validate a config file without touching the network.
    CheckConfig { config: PathBuf },
    /// Sweep address ranges for devices on each protocol and identify what answers.
    #[command(
        after_help = "Examples:\n  groundtruth-agent discover 10.1.7.0/24 --community-file communities.txt --redfish-credentials-file bmc.creds\n  groundtruth-agent discover 127.0.0.1 --snmp-ports 26161 --community gtpublic --redfish-ports 28000-28001 --insecure --json"
    )]
    Discover(DiscoverArgs),
    /// Show a running agent's status (from its /status endpoint).
    Status {
        /// The agent's config (to find `agent.metrics_listen`) ...
        #[arg(long, short, conflicts_with = "url")]
        config: Option<PathBuf>,
        /// ... or the endpoint itself.
        #[arg(long, default_value = "http://127.0.0.1:9469")]
        url: String,
    },
}

#[derive(Debug, clap::Args)]
struct PollArgs {
    /// Target URL, e.g. snmp://public@10.0.0.5, redfish://user:pass@10.0.0.9,
    /// snmpv3://user@host?auth=sha256&priv=aes (see `docs/ARCHITECTURE.md`).
    target: String,
    /// Print the report as JSON (the protobuf canonical JSON mapping of `DeviceReport`).
    #[arg(long)]
    json: bool,
    /// Read the password / community from this file.
    #[arg(long, conflicts_with = "password_env")]
    password_file: Option<PathBuf>,
    /// Read the password / community from this environment variable.
    #[arg(long)]
    password_env: Option<String>,
    /// SNMPv3 authentication passphrase from a file.
    #[arg(long)]
    auth_pass_file: Option<PathBuf>,
    /// SNMPv3 privacy passphrase from a file.
    #[arg(long)]
    priv_pass_file: Option<PathBuf>,
    /// CA bundle (PEM) to verify a Redfish BMC's certificate with.
    #[arg(long)]
    ca_file: Option<PathBuf>,
    /// Timeout of one request.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// Retries of a request after a timeout.
    #[arg(long, default_value_t = 1)]
    retries: u32,
}

#[derive(Debug, clap::Args)]
struct DiscoverArgs {
    /// Addresses: 10.1.7.0/24, 10.1.7.5, 10.1.7.5-10.1.7.40 (repeatable).
    #[arg(required = true)]
    ranges: Vec<String>,
    /// SNMP community to try (repeatable; prefer --community-file).
    #[arg(long)]
    community: Vec<String>,
    /// File with SNMP communities to try, one per line.
    #[arg(long)]
    community_file: Option<PathBuf>,
    /// File with Redfish credentials to try, one `user:password` per line.
    #[arg(long)]
    redfish_credentials_file: Option<PathBuf>,
    /// File with IPMI credentials to try, one `user:password` per line.
    #[arg(long)]
    ipmi_credentials_file: Option<PathBuf>,
    /// Modbus unit:map pairs to try, e.g. 1:sdm630,1:test-rack-ups.
    #[arg(long, value_delimiter = ',')]
    modbus_try: Vec<String>,
    #[arg(long, default_value = "161")]
    snmp_ports: String,
    #[arg(long, default_value = "443")]
    redfish_ports: String,
    #[arg(long, default_value = "623")]
    ipmi_ports: String,
    #[arg(long, default_value = "502")]
    modbus_ports: String,
    /// Do not verify Redfish TLS certificates (self-signed BMCs); logged.
    #[arg(long)]
    insecure: bool,
    /// Endpoints probed at once.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Timeout of one request.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// Print the reports as a JSON array (canonical JSON of DeviceReport, plus the endpoint).
    #[arg(long)]
    json: bool,
}

fn credential_lines(path: &PathBuf) -> anyhow::Result<Vec<(String, Secret)>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .enumerate()
        .map(|(i, l)| {
            l.split_once(':')
                .map(|(u, p)| (u.to_owned(), Secret::new(p)))
                .with_context(|| format!("{} line {}: expected user:password", path.display(), i + 1))
        })
        .collect()
}

async fn discover(args: DiscoverArgs) -> anyhow::Result<ExitCode> {
    use groundtruth_agent::discover::{Progress, SweepSpec, parse_ports, parse_range, sweep};
    let mut spec = SweepSpec {
        redfish_insecure: args.insecure,
        ..Default::default()
    };
    for r in &args.ranges {
        spec.addresses.extend(parse_range(r).map_err(anyhow::Error::msg)?);
    }
    spec.snmp_communities = args.community.iter().map(Secret::new).collect();
    if let Some(f) = &args.community_file {
        let text = std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
        spec.snmp_communities.extend(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(Secret::new),
        );
    }
    if !spec.snmp_communities.is_empty() {
        spec.snmp_ports = parse_ports(&args.snmp_ports).map_err(anyhow::Error::msg)?;
    }
    spec.redfish_ports = parse_ports(&args.redfish_ports).map_err(anyhow::Error::msg)?;
    if let Some(f) = &args.redfish_credentials_file {
        spec.redfish_credentials = credential_lines(f)?;
    }
    if let Some(f) = &args.ipmi_credentials_file {
        spec.ipmi_credentials = credential_lines(f)?;
        spec.ipmi_ports = parse_ports(&args.ipmi_ports).map_err(anyhow::Error::msg)?;
    }
    for m in &args.modbus_try {
        let (unit, map) = m
            .split_once(':')
            .with_context(|| format!("--modbus-try {m:?}: expected UNIT:MAP"))?;
        spec.modbus_units_maps.push((
            unit.parse()
                .with_context(|| format!("--modbus-try {m:?}: bad unit"))?,
            map.to_owned(),
        ));
    }
    if !spec.modbus_units_maps.is_empty() {
        spec.modbus_ports = parse_ports(&args.modbus_ports).map_err(anyhow::Error::msg)?;
    }
    if args.insecure {
        tracing::warn!("Redfish TLS certificates are not verified during this sweep (--insecure).");
    }
    let cx = PollCx {
        limits: Limits {
            request_timeout: args.timeout,
            retries: 0,
            poll_timeout: args.timeout * 10,
            ..Limits::default()
        },
        ..Default::default()
    };
    let progress = std::sync::Arc::new(Progress::default());
    let ticker = std::io::IsTerminal::is_terminal(&std::io::stderr()).then(|| {
        let p = std::sync::Arc::clone(&progress);
        tokio::spawn(async move {
            loop {
                use std::sync::atomic::Ordering::Relaxed;
                eprint!(
                    "\rprobed {}/{} endpoints, found {}   ",
                    p.done.load(Relaxed),
                    p.total.load(Relaxed),
                    p.found.load(Relaxed)
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    });
    let found = sweep(&spec, &cx, args.concurrency, std::sync::Arc::clone(&progress)).await;
    // Probes leave no Redfish session behind.
    driver::redfish::close_all_sessions().await;
    if let Some(t) = ticker {
        t.abort();
        eprintln!();
    }
    if args.json {
        let mut out = Vec::new();
        for f in &found {
            let mut v = groundtruth_proto::json::to_value(&f.report).map_err(anyhow::Error::msg)?;
            v["endpoint"] = serde_json::Value::String(f.endpoint_key.clone());
            v["credential"] = serde_json::Value::String(f.credential.clone());
            out.push(v);
        }
        out!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        out!(
            "{:<34} {:<18} {:<26} {:<18} {:>4} {:>8}  CREDENTIAL",
            "ENDPOINT",
            "VENDOR",
            "MODEL",
            "SERIAL",
            "MACS",
            "POWER"
        );
        for f in &found {
            let id = f.report.identity.clone().unwrap_or_default();
            let power = f
                .report
                .readings
                .iter()
                .find(|r| r.metric == "power" && r.component.is_none())
                .map_or_else(|| "-".to_owned(), |r| format!("{:.0} W", r.value));
            let cut = |s: &str, n: usize| s.chars().take(n).collect::<String>();
            out!(
                "{:<34} {:<18} {:<26} {:<18} {:>4} {:>8}  {}",
                f.endpoint_key,
                cut(&id.vendor, 18),
                cut(
                    if id.model.is_empty() {
                        id.hostname.as_str()
                    } else {
                        id.model.as_str()
                    },
                    26
                ),
                cut(&id.serial_number, 18),
                id.macs.len(),
                power,
                f.credential
            );
        }
        eprintln!(
            "{} endpoint(s) probed, {} device(s) found",
            progress.total.load(std::sync::atomic::Ordering::Relaxed),
            found.len()
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_new(&cli.log)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    groundtruth_agent::install_crypto_provider();
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match cli.command {
        Command::Poll(args) => rt.block_on(poll(args)),
        Command::Discover(args) => match rt.block_on(discover(args)) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::from(2)
            }
        },
        Command::Status { config, url } => {
            let url = match config.map(|c| Config::load(&c)) {
                None => url,
                Some(Ok(c)) => match c.metrics_listen {
                    Some(a) => format!("http://{a}"),
                    None => {
                        eprintln!("error: agent.metrics_listen is \"off\" in that config");
                        return ExitCode::from(2);
                    }
                },
                Some(Err(errors)) => return config_errors(&errors),
            };
            rt.block_on(status(&url))
        }
        Command::CheckConfig { config } => match Config::load(&config) {
            Ok(c) => {
                for w in &c.warnings {
                    eprintln!("warning: {w}");
                }
                out!("{}: OK, {} target(s)", config.display(), c.targets.len());
                ExitCode::SUCCESS
            }
            Err(errors) => config_errors(&errors),
        },
        Command::Run { config, once } => {
            let cfg = match Config::load(&config) {
                Ok(c) => c,
                Err(errors) => return config_errors(&errors),
            };
            match rt.block_on(run(cfg, once, config)) {
                Ok(code) => code,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::from(1)
                }
            }
        }
    }
}

async fn status(url: &str) -> ExitCode {
    let endpoint = format!("{}/status", url.trim_end_matches('/'));
    let result = async {
        let resp = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()?
            .get(&endpoint)
            .send()
            .await?
            .error_for_status()?;
        groundtruth_agent::io::read_capped(resp, 1 << 20, "/status")
            .await
            .map_err(anyhow::Error::from)
    };
    match result.await {
        Ok(body) => match serde_json::from_slice::<serde_json::Value>(&body) {
            Ok(serde_json::Value::Object(m)) => {
                for (k, v) in m {
                    out!(
                        "{k:<22} {}",
                        v.as_str().map_or_else(|| v.to_string(), str::to_owned)
                    );
                }
                ExitCode::SUCCESS
            }
            _ => {
                eprintln!("error: {endpoint} did not answer with a status document");
                ExitCode::from(1)
            }
        },
        Err(e) => {
            eprintln!("error: cannot reach the agent at {endpoint}: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn config_errors(errors: &[groundtruth_agent::config::ConfigError]) -> ExitCode {
    for e in errors {
        eprintln!("error: {e}");
    }
    ExitCode::from(2)
}

fn read_secret(file: Option<&PathBuf>, env: Option<&String>) -> anyhow::Result<Option<Secret>> {
    Ok(match (file, env) {
        (Some(f), _) => Some(Secret::from_file(f)?),
        (None, Some(v)) => Some(Secret::from_env(v)?),
        (None, None) => None,
    })
}

async fn poll(args: PollArgs) -> ExitCode {
    let mut target = match Target::parse(&args.target) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: target: {e}");
            return ExitCode::from(2);
        }
    };
    let secrets = (|| -> anyhow::Result<()> {
        if let Some(s) = read_secret(args.password_file.as_ref(), args.password_env.as_ref())? {
            target.set_password(s);
        }
        if let Target::Snmp(t) = &mut target {
            if let (Some(f), Some((_, p))) = (&args.auth_pass_file, &mut t.auth) {
                *p = Secret::from_file(f)?;
            }
            if let (Some(f), Some((_, p))) = (&args.priv_pass_file, &mut t.privacy) {
                *p = Secret::from_file(f)?;
            }
        }
        if let (Target::Redfish(t), Some(ca)) = (&mut target, &args.ca_file) {
            t.ca_file = Some(ca.clone());
        }
        Ok(())
    })();
    if let Err(e) = secrets {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    // `?insecure` is logged by the Redfish driver, once per endpoint.
    let cx = PollCx {
        limits: Limits {
            request_timeout: args.timeout,
            retries: args.retries,
            ..Limits::default()
        },
        ..Default::default()
    };
    let (reports, error) = driver::poll_all(&target, &cx).await;
    // A one-shot poll leaves no Redfish session behind.
    driver::redfish::close_all_sessions().await;
    if let Some(e) = error {
        eprintln!("error: {} ({}): {e}", target.endpoint_key(), target.protocol());
        return ExitCode::from(1);
    }
    if args.json {
        // One device: the report object. Several (a Redfish service with an enclosure and its
        // blades, or PDUs): a JSON array of report objects.
        let printed: Result<String, String> = if let [report] = reports.as_slice() {
            groundtruth_proto::json::to_string_pretty(report).map_err(|e| e.to_string())
        } else {
            reports
                .iter()
                .map(groundtruth_proto::json::to_value)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| e.to_string())
                .and_then(|v| {
                    serde_json::to_string_pretty(&serde_json::Value::Array(v)).map_err(|e| e.to_string())
                })
        };
        match printed {
            Ok(s) => out!("{s}"),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(1);
            }
        }
    } else {
        for (i, report) in reports.iter().enumerate() {
            if i > 0 {
                out!();
            }
            print_human(report);
        }
    }
    ExitCode::SUCCESS
}

fn print_human(r: &groundtruth_proto::v1::DeviceReport) {
    let id = r.identity.clone().unwrap_or_default();
    let show = |k: &str, v: &str| {
        if !v.is_empty() {
            out!("{k:<12} {v}");
        }
    };
    show("endpoint", &id.endpoint_key);
    show("vendor", &id.vendor);
    show("model", &id.model);
    show("serial", &id.serial_number);
    show("part number", &id.part_number);
    show("asset tag", &id.asset_tag);
    show("hostname", &id.hostname);
    show("firmware", &id.firmware_version);
    show("sysObjectID", &id.sys_object_id);
    show("description", id.description.lines().next().unwrap_or_default());
    for m in &id.macs {
        out!("{:<12} {} ({})", "mac", m.address, m.interface_name);
    }
    for l in &r.locations {
        out!(
            "{:<12} site={} room={} row={} rack={} u={} [{}]",
            "location",
            l.site,
            l.room,
            l.row,
            l.rack,
            l.u_position.map_or_else(|| "?".into(), |u| u.to_string()),
            l.raw
        );
    }
    for x in &r.readings {
        let comp = x
            .component
            .as_ref()
            .map(|c| format!(" {}", c.label))
            .unwrap_or_default();
        out!("{:<12} {}{comp} = {} {}", "reading", x.metric, x.value, x.unit);
    }
    if let Some(s) = &r.status {
        for e in &s.partial_errors {
            out!("{:<12} {e}", "partial");
        }
    }
}

async fn run(cfg: Config, once: bool, path: PathBuf) -> anyhow::Result<ExitCode> {
    for w in &cfg.warnings {
        tracing::warn!("{w}");
    }
    let mut agent = Agent::new(cfg).context("starting the agent")?;
    tracing::info!(
        agent = %agent.config().agent_id,
        targets = agent.config().targets.len(),
        grpc = %if agent.config().collector_grpc.is_empty() { "-".to_owned() } else { agent.config().collector_grpc.join(", ") },
        mqtt = agent.config().mqtt.as_ref().map_or_else(|| "-".to_owned(), |m| format!("{}:{}", m.host, m.port)),
        "Agent started."
    );
    if once {
        let s = agent.round().await?;
        tracing::info!(
            polled = s.polled,
            failed = s.failed,
            delivered = s.delivered_batches,
            pending = s.pending_batches,
            "Round done."
        );
        return Ok(if s.pending_batches == 0 {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        });
    }
    // SIGHUP re-reads the config file; a broken file is reported and the running config kept.
    let (reload_tx, reload_rx) = tokio::sync::mpsc::channel(1);
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .context("installing the SIGHUP handler")?;
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            match Config::load(&path) {
                Ok(c) => {
                    for w in &c.warnings {
                        tracing::warn!("{w}");
                    }
                    if reload_tx.send(c).await.is_err() {
                        return;
                    }
                }
                Err(errors) => {
                    for e in errors {
                        tracing::error!(error = %e, "Config reload refused; keeping the running config.");
                    }
                }
            }
        }
    });
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    let shutdown = async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        tracing::info!("Stopping.");
    };
    agent.run(reload_rx, shutdown).await?;
    Ok(ExitCode::SUCCESS)
}
