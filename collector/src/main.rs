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
use groundtruth_collector::sync::{PassLease, PassSummary, run_pass_leased};
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
enum ExceptionAction {
    /// Resolve an open exception (raised again if its cause is still there at the next pass).
    Accept {
        id: i64,
        #[arg(long)]
        by: String,
        #[arg(long, default_value = "")]
        note: String,
    },
    /// Resolve an open exception and stop raising its kind for its device.
    Ignore {
        id: i64,
        #[arg(long)]
        by: String,
        #[arg(long, default_value = "")]
        note: String,
    },
    /// Start raising an ignored kind for a device again.
    Unignore {
        device_key: String,
        kind: String,
        #[arg(long)]
        by: String,
        #[arg(long, default_value = "")]
        note: String,
    },
    /// State where the device of an open exception is (beats every other location source) and
    /// resolve the exception.
    Pin {
        id: i64,
        #[arg(long)]
        by: String,
        #[arg(long, default_value = "")]
        note: String,
        #[arg(long)]
        site: String,
        #[arg(long, default_value = "")]
        room: String,
        #[arg(long, default_value = "")]
        row: String,
        #[arg(long)]
        rack: String,
        #[arg(long)]
        u: Option<u32>,
        #[arg(long, default_value = "")]
        face: String,
    },
    /// Remove a device's pinned location.
    Unpin {
        device_key: String,
        #[arg(long)]
        by: String,
        #[arg(long, default_value = "")]
        note: String,
    },
    /// Print the audit trail of exception actions, newest first.
    Audit {
        /// Only this device.
        #[arg(long)]
        device: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: i64,
    },
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
        /// How long to wait for another pass (serve's, another collector's) holding NetBox's
        /// write lease, e.g. "2m"; "0s" fails at once.
        #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
        wait: std::time::Duration,
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
        /// How long to wait for another pass (serve's, another collector's) holding NetBox's
        /// write lease, e.g. "2m"; "0s" fails at once.
        #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
        wait: std::time::Duration,
    },
    /// List the devices in the store with their location and power.
    Devices {
        #[arg(long, short)]
        config: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// List open exceptions (what the collector refused to guess), or act on one: accept,
    /// ignore, pin a location; every action is recorded with who took it (see `audit`).
    #[command(
        after_help = "Examples:\n  groundtruth-collector exceptions -c /etc/groundtruth/collector.toml\n  \
groundtruth-collector exceptions -c collector.toml accept 12 --by alice --note \"lab box\"\n  \
groundtruth-collector exceptions -c collector.toml pin 14 --by alice --site DC1 --rack R07 --u 12\n  \
groundtruth-collector exceptions -c collector.toml audit"
    )]
    Exceptions {
        #[arg(long, short)]
        config: PathBuf,
        #[command(subcommand)]
        action: Option<ExceptionAction>,
    },
    /// Print a site map (TOML) with every rack NetBox has (site, location as room, name,
    /// height), to start `location.site_map` from the CMDB's racks.
    #[command(
        after_help = "Example:\n  groundtruth-collector site-map-import -c /etc/groundtruth/collector.toml > /etc/groundtruth/site-map.toml"
    )]
    SiteMapImport {
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
        | Command::Exceptions { config, .. }
        | Command::SiteMapImport { config }
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
            Command::Plan { json, wait, .. } => sync_once(cfg, true, json, wait).await,
            Command::Apply {
                dry_run, json, wait, ..
            } => sync_once(cfg, dry_run, json, wait).await,
            Command::Devices { json, .. } => devices(cfg, json).await,
            Command::Exceptions { action, .. } => exceptions(cfg, action).await,
            Command::SiteMapImport { .. } => site_map_import(cfg).await,
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
    Store::connect(&cfg.database)
        .await
        .context("opening the state store")
}

async fn serve(cfg: Config) -> anyhow::Result<()> {
    let store = open_store(&cfg).await?;
    // Every collector ingests; the singleton jobs below run on the leader only (one at a time
    // among the collectors of one database; with SQLite, this one).
    let leader = groundtruth_collector::lease::Leadership::start(
        store.clone(),
        groundtruth_collector::lease::DEFAULT_TTL,
    )
    .await;
    let (tx, rx) = tokio::sync::watch::channel(0u64);
    if let Some(nb) = cfg.netbox.clone() {
        let netbox = groundtruth_collector::netbox_client(&nb)?;
        let store = store.clone();
        let rules = cfg.rules.clone();
        let pacing = groundtruth_collector::sync::Pacing {
            lease_ttl: nb.lease_ttl,
            ..groundtruth_collector::sync::Pacing::from_interval(nb.sync_interval)
        };
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
                Err(e @ groundtruth_collector::sync::SyncError::Busy { .. }) => {
                    tracing::info!(url = %url, reason = %e, "NetBox sync pass skipped; will retry.");
                }
                Err(e) => {
                    tracing::error!(url = %url, error = %e, "NetBox sync pass failed; will retry.");
                }
            },
        ));
    } else {
        tracing::info!(
            "No [netbox] section: CMDB sync is off; the exception log is kept from the collector's own checks."
        );
        let store = store.clone();
        let rules = cfg.rules.clone();
        let mut rx = rx;
        tokio::spawn(async move {
            // After new data (debounced by 5 s) and every 5 minutes.
            loop {
                tokio::select! {
                    changed = rx.changed() => {
                        if changed.is_err() {
                            break;
                        }
                        tokio::time::sleep(std::time::Duration::from_secs(5)).await;
                    }
                    () = tokio::time::sleep(std::time::Duration::from_secs(300)) => {}
                }
                rx.borrow_and_update();
                if let Err(e) = groundtruth_collector::sync::local_pass(&store, &rules).await {
                    tracing::error!(error = %e, "Exception check failed; will retry after the next batch.");
                }
            }
        });
    }
    {
        // Retention: roll up and expire readings every 10 minutes.
        let store = store.clone();
        let (raw, hourly) = (cfg.retention_raw, cfg.retention_hourly);
        let leader = leader.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(600));
            loop {
                tick.tick().await;
                if !leader.held() {
                    continue;
                }
                match store.compact(raw, hourly).await {
                    Ok((0, 0)) => {}
                    Ok((rolled, expired)) => tracing::info!(rolled, expired, "Compacted reading history."),
                    Err(e) => tracing::error!(error = %e, "Reading compaction failed; will retry."),
                }
            }
        });
    }
    {
        // Integration health: link devices to their NetBox ids and find the NetBox devices of the
        // collector's sites that nothing reports (at most every 5 minutes), then compute the KPIs and append them to their history, every `health.interval`.
        let store = store.clone();
        let rules = cfg.rules.clone();
        let health = cfg.health;
        let netbox = cfg.netbox.clone();
        groundtruth_collector::kpi::set_stale_after(health.stale_after);
        let leader = leader.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(health.interval);
            let mut linked_at: Option<tokio::time::Instant> = None;
            loop {
                tick.tick().await;
                if !leader.held() {
                    continue;
                }
                if let Some(nb) = &netbox
                    && linked_at.is_none_or(|t| t.elapsed() >= std::time::Duration::from_secs(300))
                {
                    linked_at = Some(tokio::time::Instant::now());
                    match groundtruth_collector::context::refresh_cmdb_links(&store, nb).await {
                        Ok((linked, unlinked)) => tracing::debug!(linked, unlinked, "CMDB links refreshed."),
                        Err(e) => tracing::warn!(error = %e, "Cannot refresh CMDB links; will retry."),
                    }
                    match groundtruth_collector::context::refresh_cmdb_not_seen(&store, nb, &rules).await {
                        Ok(not_seen) => {
                            tracing::debug!(not_seen = not_seen.len(), "CMDB devices never seen refreshed.");
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "Cannot refresh CMDB devices never seen; will retry.")
                        }
                    }
                }
                if let Err(e) = groundtruth_collector::kpi::record(&store, &rules, &health).await {
                    tracing::error!(error = %e, "KPI computation failed; will retry.");
                }
            }
        });
    }
    if let Some(itsm) = cfg.itsm.clone() {
        // Tickets: evaluate the rules, then deliver due events, every `itsm.interval`.
        let sinks = groundtruth_collector::itsm::Sinks::new(&itsm).map_err(|e| anyhow::anyhow!(e))?;
        let store = store.clone();
        let rules = cfg.rules.clone();
        tracing::info!(rules = itsm.rules.len(), sinks = ?itsm.sinks(), "ITSM tickets on.");
        let leader = leader.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(itsm.interval);
            loop {
                tick.tick().await;
                if !leader.held() {
                    continue;
                }
                let now = std::time::SystemTime::now();
                match groundtruth_collector::itsm::evaluate(&store, &rules, &itsm, now).await {
                    Ok(r) if r.opened + r.updated + r.resolved > 0 => {
                        tracing::info!(
                            opened = r.opened,
                            updated = r.updated,
                            resolved = r.resolved,
                            deferred = r.deferred,
                            "ITSM pass."
                        );
                    }
                    Ok(_) => {}
                    Err(e) => tracing::error!(error = %e, "ITSM evaluation failed; will retry."),
                }
                if let Err(e) = groundtruth_collector::itsm::deliver(&store, &sinks, &itsm, now).await {
                    tracing::error!(error = %e, "ITSM delivery failed on the store; will retry.");
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
            leader: Some(leader.clone()),
        };
        tokio::spawn(async move {
            if let Err(e) = groundtruth_collector::http::serve(listen, state).await {
                tracing::error!(listen = %listen, error = %e, "Cannot serve HTTP (set collector.listen_http, or \"off\").");
            }
        });
    }
    if let Some(m) = cfg.mqtt.clone() {
        tracing::info!(broker = %format!("{}:{}", m.host, m.port), group = %m.share_group, "Collector subscribing to agents over MQTT.");
        if let Some(every) = m.publish_power {
            let opts = groundtruth_collector::ingest::mqtt::options(&m, &format!("{}-power", m.client_id));
            let leader = leader.clone();
            tokio::spawn(groundtruth_collector::power::publish_while(
                opts,
                store.clone(),
                cfg.rules.clone(),
                every,
                move || leader.held(),
            ));
        }
        tokio::spawn(groundtruth_collector::ingest::mqtt::run(
            m,
            service.clone(),
            std::sync::Arc::default(),
        ));
    }
    tracing::info!(listen = %cfg.listen_grpc, database = %cfg.database, "Collector listening for agents (gRPC).");
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

async fn sync_once(cfg: Config, dry_run: bool, json: bool, wait: std::time::Duration) -> anyhow::Result<()> {
    let nb = cfg.netbox.clone().context("the config has no [netbox] section")?;
    let store = open_store(&cfg).await?;
    let netbox = groundtruth_collector::netbox_client(&nb)?;
    let dry_run = dry_run || nb.dry_run;
    let lease = PassLease {
        ttl: nb.lease_ttl,
        wait,
    };
    let s = run_pass_leased(&store, &netbox, &cfg.rules, dry_run, lease, |h| {
        eprintln!(
            "waiting (up to {}) for another NetBox sync pass to finish: {} holds the write lease since {}",
            humantime::format_duration(wait),
            h.holder,
            h.acquired_at
        );
    })
    .await?;
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

async fn site_map_import(cfg: Config) -> anyhow::Result<()> {
    let nb = cfg
        .netbox
        .as_ref()
        .context("site-map-import reads NetBox: the config has no [netbox] section")?;
    let client = groundtruth_collector::netbox_client(nb)?;
    let racks: Vec<groundtruth_collector::sitemap::RackEntry> = client
        .racks()
        .await?
        .into_iter()
        .map(|r| groundtruth_collector::sitemap::RackEntry {
            site: r.site,
            room: r.room,
            row: String::new(),
            name: r.name,
            height: r.height,
            power_budget_w: None,
        })
        .collect();
    let (text, skipped) =
        groundtruth_collector::sitemap::SiteMap::racks_toml(&racks, &format!("NetBox {}", nb.url));
    print!("{text}");
    for s in &skipped {
        eprintln!("warning: left out {s}");
    }
    eprintln!("{} rack(s) imported", racks.len() - skipped.len());
    Ok(())
}

async fn exceptions(cfg: Config, action: Option<ExceptionAction>) -> anyhow::Result<()> {
    let store = open_store(&cfg).await?;
    let done = |ok: bool, what: String| {
        if ok {
            println!("{what}: done");
            Ok(())
        } else {
            Err(anyhow::anyhow!(
                "{what}: nothing to do (no such open exception, pin or ignore)"
            ))
        }
    };
    match action {
        None => {}
        Some(ExceptionAction::Accept { id, by, note }) => {
            return done(
                store.accept_exception(id, &by, &note).await?,
                format!("accept {id}"),
            );
        }
        Some(ExceptionAction::Ignore { id, by, note }) => {
            return done(
                store.ignore_exception(id, &by, &note).await?,
                format!("ignore {id}"),
            );
        }
        Some(ExceptionAction::Unignore {
            device_key,
            kind,
            by,
            note,
        }) => {
            return done(
                store.unignore(&device_key, &kind, &by, &note).await?,
                format!("unignore {kind} of {device_key}"),
            );
        }
        Some(ExceptionAction::Pin {
            id,
            by,
            note,
            site,
            room,
            row,
            rack,
            u,
            face,
        }) => {
            let pin = groundtruth_collector::store::Pin {
                site,
                room,
                row,
                rack,
                u,
                face,
            };
            return done(
                store.pin_exception(id, &pin, &by, &note).await?,
                format!("pin {id} to {pin}"),
            );
        }
        Some(ExceptionAction::Unpin { device_key, by, note }) => {
            return done(
                store.unpin(&device_key, &by, &note).await?,
                format!("unpin {device_key}"),
            );
        }
        Some(ExceptionAction::Audit { device, limit }) => {
            for a in store.audit_trail(device.as_deref(), limit).await? {
                println!(
                    "{}  {}  {}  by {}  exception {}  {}  {}{}",
                    a.at,
                    a.action,
                    a.device_key,
                    a.actor,
                    a.exception_id,
                    a.kind,
                    a.detail,
                    if a.note.is_empty() {
                        String::new()
                    } else {
                        format!("  note: {}", a.note)
                    }
                );
            }
            return Ok(());
        }
    }
    for e in store.open_exceptions().await? {
        println!(
            "{}  {}  {}  {}  (since {})",
            e.id, e.kind, e.device_key, e.detail, e.first_seen
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
