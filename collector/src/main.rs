//! `groundtruth-collector` command line.
//!
//! Exit codes: 0 success; 1 runtime failure (store, CMDB unreachable or token refused);
//! 2 usage or configuration error.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use groundtruth_collector::config::Config;
use groundtruth_collector::ingest::IngestService;
use groundtruth_collector::store::Store;
use groundtruth_collector::sync::{PassSummary, run_pass};
use groundtruth_proto::v1::ingest_server::IngestServer;

#[derive(Debug, Parser)]
#[command(
    name = "groundtruth-collector",
    version,
    about = "Ingests groundtruth agents' data, locates devices and syncs the CMDB"
)]
struct Cli {
    /// Log filter (tracing EnvFilter syntax).
    #[arg(long, env = "GT_LOG", default_value = "info", global = true)]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the collector: gRPC ingest, state store and (if configured) periodic NetBox sync.
    Serve {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Dry run: read NetBox, print per device the changes a sync would make and the evidence
    /// behind them. Writes nothing to NetBox.
    Plan {
        #[arg(long, short)]
        config: PathBuf,
        /// Print the pass as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Run one NetBox sync pass now (plan and execute) and print the changes. `sync` is an alias.
    #[command(alias = "sync")]
    Apply {
        #[arg(long, short)]
        config: PathBuf,
        /// Compute and print the plan only; write nothing (same as `plan`).
        #[arg(long)]
        dry_run: bool,
        /// Print the pass as JSON.
        #[arg(long)]
        json: bool,
    },
    /// List the devices in the store with their location and power.
    Devices {
        #[arg(long, short)]
        config: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// List open exceptions (what the collector refused to guess).
    Exceptions {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Validate a config file.
    CheckConfig { config: PathBuf },
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
    groundtruth_collector::install_crypto_provider();
    let config_path = match &cli.command {
        Command::Serve { config }
        | Command::Plan { config, .. }
        | Command::Apply { config, .. }
        | Command::Devices { config, .. }
        | Command::Exceptions { config }
        | Command::CheckConfig { config } => config.clone(),
    };
    let cfg = match Config::load(&config_path) {
        Ok(c) => c,
        Err(errors) => {
            for e in errors {
                eprintln!("error: {e}");
            }
            return ExitCode::from(2);
        }
    };
    for w in &cfg.warnings {
        eprintln!("warning: {w}");
    }
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = rt.block_on(async {
        match cli.command {
            Command::CheckConfig { config } => {
                println!("{}: OK", config.display());
                Ok(())
            }
            Command::Serve { .. } => serve(cfg).await,
            Command::Plan { json, .. } => sync_once(cfg, true, json).await,
            Command::Apply { dry_run, json, .. } => sync_once(cfg, dry_run, json).await,
            Command::Devices { json, .. } => devices(cfg, json).await,
            Command::Exceptions { .. } => exceptions(cfg).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

async fn open_store(cfg: &Config) -> anyhow::Result<Store> {
    Store::open(&cfg.database)
        .await
        .with_context(|| format!("opening the state store {}", cfg.database.display()))
}

async fn serve(cfg: Config) -> anyhow::Result<()> {
    let store = open_store(&cfg).await?;
    let (tx, rx) = tokio::sync::watch::channel(0u64);
    if let Some(nb) = cfg.netbox.clone() {
        let netbox = groundtruth_collector::netbox_client(&nb)?;
        let store = store.clone();
        let rules = cfg.rules.clone();
        let pacing = groundtruth_collector::sync::Pacing::from_interval(nb.sync_interval);
        let dry_run = nb.dry_run;
        let url = nb.url.clone();
        // Sync on change (debounced, only when an owned field changed) and on a schedule.
        tokio::spawn(groundtruth_collector::sync::run_continuous(
            store,
            netbox,
            rules,
            nb.ownership.clone(),
            pacing,
            dry_run,
            rx,
            move |r| match r {
                Ok(s) => {
                    for c in &s.report.changes {
                        let fields: Vec<String> = c
                            .fields
                            .iter()
                            .map(|f| {
                                format!(
                                    "{}: {} -> {}",
                                    f.field,
                                    f.old.as_deref().unwrap_or("(empty)"),
                                    f.new
                                )
                            })
                            .collect();
                        tracing::info!(action = %c.action, object = %c.object, target = %c.target, fields = %fields.join("; "), dry_run, "NetBox change.");
                    }
                    tracing::info!(
                        devices = s.devices,
                        eligible = s.eligible,
                        changes = s.report.changes.len(),
                        writes = s.report.writes,
                        exceptions = s.report.exceptions.len() + s.unfit.len(),
                        failures = s.report.failures.len(),
                        "NetBox sync pass done."
                    );
                }
                Err(e) => {
                    tracing::error!(url = %url, error = %e, "NetBox sync pass failed; will retry.");
                }
            },
        ));
    } else {
        tracing::info!("No [netbox] section: CMDB sync is off.");
    }
    {
        // Retention: roll up and expire readings every 10 minutes.
        let store = store.clone();
        let (raw, hourly) = (cfg.retention_raw, cfg.retention_hourly);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(600));
            loop {
                tick.tick().await;
                match store.compact(raw, hourly).await {
                    Ok((0, 0)) => {}
                    Ok((rolled, expired)) => tracing::info!(rolled, expired, "Compacted reading history."),
                    Err(e) => tracing::error!(error = %e, "Reading compaction failed; will retry."),
                }
            }
        });
    }
    let events = tx.subscribe();
    let service = IngestService::new(store.clone(), tx);
    if let Some(listen) = cfg.listen_http {
        let state = groundtruth_collector::http::HttpState {
            store: store.clone(),
            ingest: service.stats(),
            rules: cfg.rules.clone(),
            api_token: cfg.api_token.clone(),
            events,
            cmdb_configured: cfg.netbox.is_some(),
        };
        tokio::spawn(async move {
            if let Err(e) = groundtruth_collector::http::serve(listen, state).await {
                tracing::error!(listen = %listen, error = %e, "Cannot serve HTTP (set collector.listen_http, or \"off\").");
            }
        });
    }
    if let Some(m) = cfg.mqtt.clone() {
        tracing::info!(broker = %format!("{}:{}", m.host, m.port), group = %m.share_group, "Collector subscribing to agents over MQTT.");
        tokio::spawn(groundtruth_collector::ingest::mqtt::run(
            m,
            service.clone(),
            std::sync::Arc::default(),
        ));
    }
    tracing::info!(listen = %cfg.listen_grpc, database = %cfg.database.display(), "Collector listening for agents (gRPC).");
    let mut server = tonic::transport::Server::builder();
    if let Some(tls) = &cfg.grpc_tls {
        let mut t = tonic::transport::ServerTlsConfig::new()
            .identity(tonic::transport::Identity::from_pem(&tls.cert_pem, &tls.key_pem));
        if let Some(ca) = &tls.client_ca_pem {
            t = t.client_ca_root(tonic::transport::Certificate::from_pem(ca));
        }
        server = server
            .tls_config(t)
            .context("gRPC TLS settings (collector.tls_cert/tls_key/client_ca)")?;
        tracing::info!(mutual = tls.client_ca_pem.is_some(), "gRPC ingest uses TLS.");
    }
    server
        .add_service(IngestServer::new(service))
        .serve_with_shutdown(cfg.listen_grpc, async {
            let _ = tokio::signal::ctrl_c().await;
            tracing::info!("Interrupted; stopping.");
        })
        .await
        .with_context(|| format!("serving gRPC on {}", cfg.listen_grpc))
}

async fn sync_once(cfg: Config, dry_run: bool, json: bool) -> anyhow::Result<()> {
    let nb = cfg.netbox.clone().context("the config has no [netbox] section")?;
    let store = open_store(&cfg).await?;
    let netbox = groundtruth_collector::netbox_client(&nb)?;
    let dry_run = dry_run || nb.dry_run;
    let s = run_pass(&store, &netbox, &cfg.rules, dry_run).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&s)?);
    } else {
        print_pass(&s, dry_run, nb.url.as_str());
    }
    Ok(())
}

fn print_pass(s: &PassSummary, dry_run: bool, url: &str) {
    println!(
        "NetBox {url}: {} device(s) in the store, {} fit to sync, {} change(s) {}, {} write request(s)",
        s.devices,
        s.eligible,
        s.report.changes.len(),
        if dry_run { "planned (dry run)" } else { "applied" },
        s.report.writes
    );
    let mut keys: Vec<&str> = Vec::new();
    for c in &s.report.changes {
        if !keys.contains(&c.device_key.as_str()) {
            keys.push(&c.device_key);
        }
    }
    for key in keys {
        println!("  {}", if key.is_empty() { "(shared objects)" } else { key });
        for c in s.report.changes.iter().filter(|c| c.device_key == key) {
            println!("    {} {} {}", c.action, c.object, c.target);
            for f in &c.fields {
                println!(
                    "        {}: {} -> {}",
                    f.field,
                    f.old.as_deref().unwrap_or("(empty)"),
                    f.new
                );
            }
        }
        if let Some((_, ev)) = s.evidence.iter().find(|(k, _)| k == key) {
            for e in ev {
                println!("      because: {e}");
            }
        }
    }
    for e in &s.report.exceptions {
        println!("  EXCEPTION {} {}: {}", e.kind, e.device_key, e.detail);
    }
    for u in &s.unfit {
        println!("  not synced ({}): {}", u.kind, u.detail);
    }
    for (k, why) in &s.report.failures {
        println!("  FAILED (dead-lettered, retried next pass) {k}: {why}");
    }
    println!(
        "  {} HTTP request(s), {} journal entr(ies), {} dead letter(s) written, {} resolved",
        s.report.requests, s.report.journal_entries, s.dead_lettered, s.dead_letters_resolved
    );
    if s.report.changes.is_empty() && s.report.failures.is_empty() {
        println!("  NetBox already matches the collector for every device fit to sync.");
    }
}

async fn devices(cfg: Config, json: bool) -> anyhow::Result<()> {
    let store = open_store(&cfg).await?;
    let devices = store.devices().await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&devices)?);
        return Ok(());
    }
    for d in &devices {
        use groundtruth_collector::locate::{Located, locate};
        let evidence = groundtruth_collector::reconcile::evidence_for(d, &cfg.rules);
        let loc = match locate(&evidence, &d.asset_tag, &cfg.rules.patterns) {
            Located::At(l) => Some(l),
            Located::Unknown => None,
            Located::Conflict { detail } => {
                println!("{}  LOCATION CONFLICT: {detail}", d.device_key);
                None
            }
        };
        let loc = loc.as_ref().map_or_else(
            || "location unknown".to_owned(),
            |l| {
                format!(
                    "rack {} U{} ({})",
                    l.rack,
                    l.u_position.map_or_else(|| "?".into(), |u| u.to_string()),
                    l.source.trim_start_matches("LOCATION_SOURCE_")
                )
            },
        );
        println!(
            "{}  {} {}  {}  {}  macs={}  [{} via {}, {}]",
            d.device_key,
            d.vendor,
            d.model,
            loc,
            d.power_watts
                .map_or_else(|| "power ?".into(), |w| format!("{w} W")),
            d.macs.len(),
            d.endpoint_key,
            d.agent_id,
            d.last_outcome.trim_start_matches("POLL_OUTCOME_")
        );
    }
    Ok(())
}

async fn exceptions(cfg: Config) -> anyhow::Result<()> {
    let store = open_store(&cfg).await?;
    for e in store.open_exceptions().await? {
        println!(
            "{}  {}  {}  (since {})",
            e.kind, e.device_key, e.detail, e.first_seen
        );
    }
    for d in store.dead_letters().await? {
        println!(
            "dead_letter  {}  {}  (failed {} pass(es) since {}, last {})",
            d.device_key, d.reason, d.attempts, d.first_failed, d.last_failed
        );
    }
    Ok(())
}
