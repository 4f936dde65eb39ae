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
                println!("{}: OK, {} target(s)", config.display(), c.targets.len());
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
                    println!(
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
    if let Target::Redfish(t) = &target
        && !t.verify_tls
    {
        tracing::warn!(endpoint = %target.endpoint_key(), "TLS certificate verification is OFF for this target (?insecure).");
    }
    let cx = PollCx {
        limits: Limits {
            request_timeout: args.timeout,
            retries: args.retries,
            ..Limits::default()
        },
    };
    let (report, error) = driver::poll(&target, &cx).await;
    if let Some(e) = error {
        eprintln!("error: {} ({}): {e}", target.endpoint_key(), target.protocol());
        return ExitCode::from(1);
    }
    if args.json {
        match groundtruth_proto::json::to_string_pretty(&report) {
            Ok(s) => println!("{s}"),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(1);
            }
        }
    } else {
        print_human(&report);
    }
    ExitCode::SUCCESS
}

fn print_human(r: &groundtruth_proto::v1::DeviceReport) {
    let id = r.identity.clone().unwrap_or_default();
    let show = |k: &str, v: &str| {
        if !v.is_empty() {
            println!("{k:<12} {v}");
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
        println!("{:<12} {} ({})", "mac", m.address, m.interface_name);
    }
    for l in &r.locations {
        println!(
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
        println!("{:<12} {}{comp} = {} {}", "reading", x.metric, x.value, x.unit);
    }
    if let Some(s) = &r.status {
        for e in &s.partial_errors {
            println!("{:<12} {e}", "partial");
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
        grpc = agent.config().collector_grpc.as_deref().unwrap_or("-"),
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
