//! The collector's state store, through sqlx's `Any` driver so that one set of queries serves
//! both back ends: an embedded SQLite database by default (WAL, `synchronous=FULL`), or
//! PostgreSQL for larger sites and several collectors sharing one database (issue #9).
//!
//! Durability contract: [`Store::commit_batch`] returns only after the batch's transaction is
//! committed to disk; the ingest layer acknowledges a batch to the agent only after that, so an
//! acknowledged batch survives a collector crash. Deduplication is by `(agent_id, epoch, seq)`,
//! enforced by the `batches` primary key (`INSERT … ON CONFLICT DO NOTHING`), so two collectors
//! racing on the same batch commit it once.
//!
//! SQL conventions (every query must run unchanged on both back ends): numbered placeholders
//! `$1, $2, …` (SQLite accepts them too; never `?`); bind only `i64`, `f64`, `&str`/`String` and
//! `Option` of those; timestamps are RFC 3339 UTC text (`now()`), compared as text; portable
//! functions only (`substr`, `COALESCE`, `COUNT/MIN/MAX/SUM`; two-argument `MIN`/`MAX` are
//! SQLite-only, use `CASE`; `SUM` of a BIGINT column is NUMERIC on PostgreSQL, which the `Any`
//! driver cannot decode: `CAST(SUM(x) AS BIGINT)`); upserts with `ON CONFLICT (…) DO UPDATE`/`DO NOTHING`, naming the
//! table on the right-hand side (`t.col + 1`). Schema changes add a migration to both
//! `migrations/` (SQLite) and `migrations/postgres/` (BIGINT for INTEGER, DOUBLE PRECISION for
//! REAL, identity ids, `TEXT COLLATE "C"`).

use std::path::{Path, PathBuf};

use groundtruth_proto::v1::{Batch, DeviceReport, LocationSource, PollOutcome};
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{Any, AnyPool, ConnectOptions, Connection, Row};

use crate::normalize;

/// Most topology rows kept per switch report (the agent caps them too).
const MAX_TOPOLOGY_ROWS: usize = 20_000;

/// Schema migrations, applied in order, each once (recorded in `schema_migrations`):
/// (version, SQLite text, PostgreSQL text).
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        include_str!("../migrations/0001_init.sql"),
        include_str!("../migrations/postgres/0001_init.sql"),
    ),
    (
        2,
        include_str!("../migrations/0002_latest_readings.sql"),
        include_str!("../migrations/postgres/0002_latest_readings.sql"),
    ),
    (
        3,
        include_str!("../migrations/0003_readings_hourly.sql"),
        include_str!("../migrations/postgres/0003_readings_hourly.sql"),
    ),
    (
        4,
        include_str!("../migrations/0004_exception_resolution.sql"),
        include_str!("../migrations/postgres/0004_exception_resolution.sql"),
    ),
    (
        5,
        include_str!("../migrations/0005_topology.sql"),
        include_str!("../migrations/postgres/0005_topology.sql"),
    ),
    (
        6,
        include_str!("../migrations/0006_dead_letters.sql"),
        include_str!("../migrations/postgres/0006_dead_letters.sql"),
    ),
    (
        7,
        include_str!("../migrations/0007_cmdb_journal_pending.sql"),
        include_str!("../migrations/postgres/0007_cmdb_journal_pending.sql"),
    ),
    (
        8,
        include_str!("../migrations/0008_itsm_kpi.sql"),
        include_str!("../migrations/postgres/0008_itsm_kpi.sql"),
    ),
    (
        9,
        include_str!("../migrations/0009_exception_actions.sql"),
        include_str!("../migrations/postgres/0009_exception_actions.sql"),
    ),
    (
        10,
        include_str!("../migrations/0010_device_sources.sql"),
        include_str!("../migrations/postgres/0010_device_sources.sql"),
    ),
    (
        11,
        include_str!("../migrations/0011_journal_in_flight_cmdb_not_seen.sql"),
        include_str!("../migrations/postgres/0011_journal_in_flight_cmdb_not_seen.sql"),
    ),
    (
        12,
        include_str!("../migrations/0012_leases.sql"),
        include_str!("../migrations/postgres/0012_leases.sql"),
    ),
];

/// PostgreSQL advisory lock key held while migrating ("gtmigrat"), so that collectors starting
/// together on one database apply each migration once.
const MIGRATION_LOCK: i64 = 0x6774_6d69_6772_6174;

/// Connections per pool: SQLite has one writer anyway; PostgreSQL serves several collectors.
const SQLITE_POOL: u32 = 4;
const POSTGRES_POOL: u32 = 8;

// Operator actions on exceptions (accept / ignore / pin) and their audit trail.
#[path = "store_actions.rs"]
mod actions;
pub use actions::{AuditRow, Pin};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database {path}: {source}")]
    Open { path: String, source: sqlx::Error },
    #[error("database query failed: {0}")]
    Query(#[from] sqlx::Error),
    #[error("batch rejected: {0}")]
    Invalid(String),
    #[error("database migration {version} failed: {source}")]
    Migration { version: i64, source: sqlx::Error },
    /// An operator action that cannot be taken as asked (no actor, incomplete pin).
    #[error("{0}")]
    Refused(String),
    /// A write made under a lease this process no longer holds (fencing): not applied.
    #[error("{0}")]
    Fenced(String),
}

/// Where the state lives: the `collector.database` setting.
#[derive(Clone, PartialEq, Eq)]
pub enum Database {
    /// An SQLite file (created with its directory).
    Sqlite(PathBuf),
    /// A PostgreSQL URL without password; the password comes from `database_password` (a secret
    /// reference) and is kept out of `Debug` and `Display`.
    Postgres { url: url::Url, password: Option<String> },
}

impl Database {
    /// Parses `collector.database`: `postgres://…` / `postgresql://…`, `sqlite://PATH` /
    /// `sqlite:PATH`, or a bare file path (SQLite).
    ///
    /// # Errors
    /// A PostgreSQL URL that does not parse, names no database, or an empty value.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if text.is_empty() {
            return Err("is empty".into());
        }
        let lower = text.to_ascii_lowercase();
        if lower.starts_with("postgres://") || lower.starts_with("postgresql://") {
            let mut url = url::Url::parse(text).map_err(|e| format!("not a URL: {e}"))?;
            if url.host_str().unwrap_or_default().is_empty() && !url.query_pairs().any(|(k, _)| k == "host") {
                return Err("PostgreSQL URL names no host".into());
            }
            if url.path().trim_start_matches('/').is_empty() && !url.query_pairs().any(|(k, _)| k == "dbname")
            {
                return Err("PostgreSQL URL names no database (postgres://user@host/DATABASE)".into());
            }
            let password = url.password().map(str::to_owned);
            let _ = url.set_password(None);
            return Ok(Self::Postgres { url, password });
        }
        if let Some(rest) = lower.strip_prefix("sqlite:").map(|_| &text[7..]) {
            let path = rest.strip_prefix("//").unwrap_or(rest);
            if path.is_empty() || path.contains('?') {
                return Err("expected sqlite:///absolute/path.db or sqlite:relative.db (no options)".into());
            }
            return Ok(Self::Sqlite(PathBuf::from(path)));
        }
        if lower.contains("://") {
            return Err("unsupported scheme (expected a file path, sqlite:// or postgres://)".into());
        }
        Ok(Self::Sqlite(PathBuf::from(text)))
    }

    /// True when the password was written into the URL (which the config check warns about).
    #[must_use]
    pub fn is_postgres(&self) -> bool {
        matches!(self, Self::Postgres { .. })
    }
}

/// Shows the URL without its password.
impl std::fmt::Display for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Sqlite(p) => write!(f, "{}", p.display()),
            Self::Postgres { url, .. } => write!(f, "{url}"),
        }
    }
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Sqlite(p) => f.debug_tuple("Sqlite").field(p).finish(),
            Self::Postgres { url, password } => f
                .debug_struct("Postgres")
                .field("url", &url.as_str())
                .field("password", &password.as_ref().map(|_| "<redacted>"))
                .finish(),
        }
    }
}

/// Which back end a [`Store`] talks to (for the few dialect differences: migrations, locks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// What happened to a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Commit {
    Committed,
    Duplicate,
}

#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    /// SQLite has one writer: batch commits queue here instead of in SQLite's busy handler,
    /// which sleeps up to 100 ms between lock attempts (+6 % ingest rate with 4 agents, +20 %
    /// with 16). Unused on PostgreSQL, which commits concurrently.
    ingest_lock: std::sync::Arc<tokio::sync::Mutex<()>>,
}

/// A device as the store knows it, with its strongest location evidence.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct DeviceRow {
    pub device_key: String,
    pub serial: String,
    pub vendor: String,
    pub model: String,
    pub part_number: String,
    pub asset_tag: String,
    pub hostname: String,
    pub protocol: String,
    pub agent_id: String,
    pub agent_site: String,
    pub endpoint_key: String,
    pub last_outcome: String,
    pub last_seen: String,
    pub macs: Vec<(String, String, String)>,
    pub power_watts: Option<f64>,
    pub locations: Vec<EvidenceRow>,
    /// Every protocol that reported this device ("REDFISH", "IPMI", …), sorted.
    pub protocols: Vec<String>,
    /// Other serial-keyed devices reporting one of this device's management (BMC) MACs, unless
    /// one and the same protocol alone reports both, as "<mac> <device key>": one server with
    /// two serial forms, or a cloned MAC.
    pub shares_bmc_mac_with: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct EvidenceRow {
    pub source: String,
    /// Topology evidence: "<switch serial>|<switch name>|<port>" the device was seen on, for the
    /// site map's port table to resolve.
    pub via: String,
    pub site: String,
    pub room: String,
    pub row: String,
    pub rack: String,
    pub u_position: Option<u32>,
    pub confidence: f64,
    pub raw: String,
}

/// The newest value of one series.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LatestReading {
    pub device_key: String,
    pub metric: String,
    pub unit: String,
    pub component_kind: String,
    pub component_index: i64,
    pub component_label: String,
    pub value: f64,
    pub observed_at: String,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct ExceptionRow {
    pub id: i64,
    pub device_key: String,
    pub kind: String,
    pub detail: String,
    pub first_seen: String,
    pub last_seen: String,
}

impl ExceptionRow {
    /// From a row selecting `id, device_key, kind, detail, first_seen, last_seen`.
    fn from_row(r: &sqlx::any::AnyRow) -> Self {
        Self {
            id: r.get("id"),
            device_key: r.get("device_key"),
            kind: r.get("kind"),
            detail: r.get("detail"),
            first_seen: r.get("first_seen"),
            last_seen: r.get("last_seen"),
        }
    }
}

/// The outcome of the last CMDB sync of a device (table `cmdb_sync`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct SyncRow {
    pub last_sync: String,
    pub changes: i64,
    pub result: String,
}

/// A CMDB write that failed after its last retry.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DeadLetterRow {
    pub device_key: String,
    pub reason: String,
    pub attempts: i64,
    pub first_failed: String,
    pub last_failed: String,
}

/// Rows per multi-row INSERT: 8 parameters a row stays far below SQLite's 32,766 and
/// PostgreSQL's 65,535 bind parameters per statement.
const ROWS_PER_STATEMENT: usize = 500;

/// One reading as stored (`readings` and `latest_readings` columns).
struct ReadingRow<'a> {
    device_id: i64,
    metric: &'a str,
    unit: &'a str,
    value: f64,
    at: String,
    kind: String,
    index: i64,
    label: String,
}

/// The rows of a batch that are written after its device upserts, one multi-row statement per
/// table (and per [`ROWS_PER_STATEMENT`]) for the whole batch rather than one per device: a
/// statement costs a round trip on PostgreSQL and a hop to SQLite's worker thread. Maps are
/// ordered so that two collectors committing overlapping batches lock rows in one order.
#[derive(Default)]
struct BatchRows<'a> {
    /// `device_sources`: (device id, protocol, endpoint) → seen (the agent is the batch's).
    sources: std::collections::BTreeMap<(i64, String, &'a str), String>,
    /// `device_macs`: (device id, address) → (interface, role, seen); a later report wins.
    macs: std::collections::BTreeMap<(i64, String), (&'a str, String, String)>,
    readings: Vec<ReadingRow<'a>>,
    /// Serial-keyed devices and their management MACs, whose endpoint records fold into them.
    folds: Vec<(i64, String, std::collections::BTreeSet<String>)>,
}

/// `prefix` + `rows` rows of `cols` placeholders + `suffix`: only placeholders are generated,
/// every value is bound. PostgreSQL gets `$1, $2, …`; SQLite gets anonymous `?`, because with
/// numbered ones each bind looks its parameter's name up in a linear list (sqlx calls
/// `sqlite3_bind_parameter_name` per parameter), quadratic in a statement's parameters: 23 % of
/// the collector's ingest CPU for 100-row statements.
fn values_sql(backend: Backend, prefix: &str, rows: usize, cols: usize, suffix: &str) -> String {
    use std::fmt::Write as _;
    let mut sql = String::with_capacity(prefix.len() + suffix.len() + rows * cols * 6);
    sql.push_str(prefix);
    for r in 0..rows {
        sql.push_str(if r == 0 { "(" } else { ", (" });
        for c in 0..cols {
            let sep = if c == 0 { "" } else { ", " };
            let _ = match backend {
                Backend::Sqlite => write!(sql, "{sep}?"),
                Backend::Postgres => write!(sql, "{sep}${}", r * cols + c + 1),
            };
        }
        sql.push(')');
    }
    sql.push_str(suffix);
    sql
}

/// `INSERT` of `rows` as multi-row statements ([`ROWS_PER_STATEMENT`] rows each): `head` ends
/// with `VALUES `, `tail` follows the rows (an `ON CONFLICT` clause), `bind` binds one row. The
/// number of columns is read off `head`'s column list.
async fn insert_rows<'q, T>(
    tx: &mut sqlx::Transaction<'_, Any>,
    backend: Backend,
    head: &str,
    tail: &str,
    rows: &'q [T],
    bind: impl Fn(AnyQuery<'q>, &'q T) -> AnyQuery<'q>,
) -> Result<(), StoreError> {
    let cols = head
        .split_once('(')
        .and_then(|(_, c)| c.split_once(')'))
        .map_or(1, |(c, _)| c.split(',').count());
    for chunk in rows.chunks(ROWS_PER_STATEMENT) {
        let sql = values_sql(backend, head, chunk.len(), cols, tail);
        let q = chunk.iter().fold(sqlx::query(sqlx::AssertSqlSafe(sql)), &bind);
        q.execute(&mut **tx).await?;
    }
    Ok(())
}

/// A query being bound, as [`insert_rows`] hands it to its `bind`.
type AnyQuery<'q> = sqlx::query::Query<'q, Any, sqlx::any::AnyArguments>;

fn now() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}

fn ts(t: Option<&prost_types::Timestamp>) -> String {
    t.and_then(|t| std::time::SystemTime::try_from(*t).ok())
        .map_or_else(now, |t| humantime::format_rfc3339_millis(t).to_string())
}

fn enum_name<E: TryFrom<i32>>(v: i32, name: impl Fn(&E) -> &'static str) -> String {
    E::try_from(v).map(|e| name(&e)).unwrap_or("UNKNOWN").to_owned()
}

/// The collector's key for a reported device: its normalised serial when usable, else the
/// polled endpoint (such devices stay in the store and the exception log, never in the CMDB).
#[must_use]
pub fn device_key(report: &DeviceReport, agent_id: &str) -> String {
    let id = report.identity.clone().unwrap_or_default();
    match normalize::serial_of(&id.serial_number, &[&id.model, &id.part_number]) {
        Some(s) => format!("serial:{s}"),
        None => format!("endpoint:{agent_id}/{}", id.endpoint_key),
    }
}

impl Store {
    /// Opens (creating if needed) an SQLite database file and applies pending migrations.
    ///
    /// # Errors
    /// If the file cannot be opened or a migration fails.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        Self::connect(&Database::Sqlite(path.to_path_buf())).await
    }

    /// Connects to the configured database (SQLite file or PostgreSQL) and applies pending
    /// migrations.
    ///
    /// # Errors
    /// If the database cannot be reached or opened, or a migration fails.
    pub async fn connect(db: &Database) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        let open_err = |source| StoreError::Open {
            path: db.to_string(),
            source,
        };
        let (opts, backend) = match db {
            Database::Sqlite(path) => {
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir).map_err(|e| open_err(sqlx::Error::Io(e)))?;
                }
                let path = std::path::absolute(path).map_err(|e| open_err(sqlx::Error::Io(e)))?;
                // The Any driver takes options only as a URL; journal mode and sync level are
                // set per connection below.
                let url = SqliteConnectOptions::new()
                    .filename(&path)
                    .create_if_missing(true)
                    .to_url_lossy();
                (
                    AnyConnectOptions::from_url(&url).map_err(open_err)?,
                    Backend::Sqlite,
                )
            }
            Database::Postgres { url, password } => {
                let mut url = url.clone();
                if let Some(p) = password {
                    url.set_password(Some(p)).map_err(|()| {
                        open_err(sqlx::Error::Configuration(
                            "the URL cannot carry a password".into(),
                        ))
                    })?;
                }
                (
                    AnyConnectOptions::from_url(&url).map_err(open_err)?,
                    Backend::Postgres,
                )
            }
        };
        // PostgreSQL: connect once directly first, so a refused connection or a bad password is
        // reported as such (a pool only says it timed out); that connection then migrates.
        let first = match backend {
            Backend::Sqlite => None,
            Backend::Postgres => Some(sqlx::AnyConnection::connect_with(&opts).await.map_err(open_err)?),
        };
        let pool = AnyPoolOptions::new()
            .max_connections(if backend == Backend::Sqlite { SQLITE_POOL } else { POSTGRES_POOL })
            .acquire_timeout(std::time::Duration::from_secs(15))
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        // WAL: readers never block the writer; FULL: a commit is on disk when it
                        // returns (the durability contract above).
                        sqlx::raw_sql(
                            "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 10000;",
                        )
                        .execute(&mut *conn)
                        .await?;
                    }
                    Ok(())
                })
            })
            .connect_with(opts.clone())
            .await
            .map_err(open_err)?;
        let store = Self {
            pool,
            backend,
            ingest_lock: std::sync::Arc::default(),
        };
        store.migrate(first).await?;
        Ok(store)
    }

    /// The back end this store talks to.
    #[must_use]
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Applies pending migrations. On PostgreSQL this runs on its own connection holding an
    /// advisory lock, so collectors starting together do not race; the lock goes with the
    /// connection even when a migration fails.
    async fn migrate(&self, mut conn: Option<sqlx::AnyConnection>) -> Result<(), StoreError> {
        if let Some(c) = conn.as_mut() {
            sqlx::query("SELECT pg_advisory_lock($1)")
                .bind(MIGRATION_LOCK)
                .execute(&mut *c)
                .await?;
        }
        let mut pooled;
        let conn: &mut sqlx::AnyConnection = match conn.as_mut() {
            Some(c) => c,
            None => {
                pooled = self.pool.acquire().await?;
                &mut pooled
            }
        };
        sqlx::query("CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, applied_at TEXT NOT NULL)")
            .execute(&mut *conn)
            .await?;
        for (version, sqlite, postgres) in MIGRATIONS {
            let done: Option<i64> =
                sqlx::query_scalar("SELECT version FROM schema_migrations WHERE version = $1")
                    .bind(version)
                    .fetch_optional(&mut *conn)
                    .await?;
            if done.is_some() {
                continue;
            }
            let sql: &'static str = if self.backend == Backend::Sqlite {
                sqlite
            } else {
                postgres
            };
            let mut tx = conn.begin().await?;
            sqlx::raw_sql(sql)
                .execute(&mut *tx)
                .await
                .map_err(|source| StoreError::Migration {
                    version: *version,
                    source,
                })?;
            sqlx::query("INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)")
                .bind(version)
                .bind(now())
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            tracing::info!(version, backend = ?self.backend, "Applied database migration.");
        }
        Ok(())
    }

    /// Commits one batch atomically, or recognises it as a duplicate.
    ///
    /// # Errors
    /// A database failure (the batch must not be acknowledged) or an invalid batch.
    pub async fn commit_batch(&self, batch: &Batch) -> Result<Commit, StoreError> {
        let agent = batch.agent.clone().unwrap_or_default();
        if agent.agent_id.trim().is_empty() {
            return Err(StoreError::Invalid("batch without agent.agent_id".into()));
        }
        if batch.seq == 0 {
            return Err(StoreError::Invalid(
                "batch with seq 0 (sequence numbers start at 1)".into(),
            ));
        }
        let _queued = if self.backend == Backend::Sqlite {
            Some(self.ingest_lock.lock().await)
        } else {
            None
        };
        let mut tx = self.pool.begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO batches (agent_id, epoch, seq, agent_site, devices, received_at) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
        )
        .bind(&agent.agent_id)
        .bind(i64::try_from(batch.epoch).unwrap_or(i64::MAX))
        .bind(i64::try_from(batch.seq).unwrap_or(i64::MAX))
        .bind(&agent.site)
        .bind(i64::try_from(batch.devices.len()).unwrap_or(i64::MAX))
        .bind(now())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if inserted == 0 {
            tx.rollback().await?;
            return Ok(Commit::Duplicate);
        }
        // Devices in key order, so that two collectors committing overlapping batches on
        // PostgreSQL lock rows in the same order and cannot deadlock (stable: a device reported
        // twice in one batch keeps its order, the later report wins).
        let mut reports: Vec<(String, &DeviceReport)> = batch
            .devices
            .iter()
            .map(|r| (device_key(r, &agent.agent_id), r))
            .collect();
        merge::resolve_keys(&mut tx, &mut reports).await?;
        reports.sort_by(|a, b| a.0.cmp(&b.0));
        let mut rows = BatchRows::default();
        for (key, report) in reports {
            Self::upsert_report(&mut tx, &mut rows, report, &key, &agent.agent_id, &agent.site).await?;
        }
        Self::write_batch_rows(&mut tx, self.backend, rows, &agent.agent_id).await?;
        tx.commit().await?;
        Ok(Commit::Committed)
    }

    /// Upserts one report's device (and its per-device rows: topology, location evidence) and
    /// queues its sources, MACs and readings in `rows`.
    async fn upsert_report<'a>(
        tx: &mut sqlx::Transaction<'_, Any>,
        rows: &mut BatchRows<'a>,
        report: &'a DeviceReport,
        key: &str,
        agent_id: &str,
        agent_site: &str,
    ) -> Result<(), StoreError> {
        use groundtruth_proto::v1::{ComponentKind, DeviceClass, MacRole, Protocol};
        let id = report.identity.clone().unwrap_or_default();
        let status = report.status.clone().unwrap_or_default();
        let outcome = enum_name(status.outcome, PollOutcome::as_str_name);
        let seen = ts(report.polled_at.as_ref());
        let failed =
            !(status.outcome == PollOutcome::Ok as i32 || status.outcome == PollOutcome::Partial as i32);
        // A failed poll updates only the health columns: it must not blank out the identity.
        let device_id: i64 = if failed {
            sqlx::query_scalar(
                "INSERT INTO devices (device_key, protocol, agent_id, agent_site, endpoint_key, last_outcome, last_message, first_seen, last_seen)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
                 ON CONFLICT (device_key) DO UPDATE SET last_outcome = excluded.last_outcome, last_message = excluded.last_message
                 RETURNING id",
            )
            .bind(key)
            .bind(enum_name(id.protocol, Protocol::as_str_name))
            .bind(agent_id)
            .bind(agent_site)
            .bind(&id.endpoint_key)
            .bind(&outcome)
            .bind(&status.message)
            .bind(&seen)
            .bind(&seen)
            .fetch_one(&mut **tx)
            .await?
        } else {
            // Identity fields merge by protocol precedence (store/merge.rs): $22 is this
            // report's rank, $23 the time before which a higher source counts as silent.
            let merged = |f: &str| {
                format!(
                    "{f} = CASE WHEN excluded.{f} <> '' AND (({AUTHORITATIVE}) OR devices.{f} = '') THEN excluded.{f} ELSE devices.{f} END"
                )
            };
            let taken =
                |f: &str| format!("{f} = CASE WHEN {AUTHORITATIVE} THEN excluded.{f} ELSE devices.{f} END");
            const AUTHORITATIVE: &str = "$22 <= devices.identity_rank OR devices.identity_seen < $23";
            let sets: Vec<String> = [
                "serial",
                "vendor",
                "model",
                "part_number",
                "sku",
                "firmware",
                "asset_tag",
                "hostname",
                "description",
                "sys_object_id",
                "uuid",
            ]
            .into_iter()
            .map(merged)
            .chain(
                [
                    "device_class",
                    "protocol",
                    "agent_id",
                    "agent_site",
                    "endpoint_key",
                    "identity_rank",
                    "identity_seen",
                ]
                .into_iter()
                .map(taken),
            )
            .collect();
            let sql = format!(
                "INSERT INTO devices (device_key, serial, vendor, model, part_number, sku, firmware, asset_tag, hostname, description,
                                      sys_object_id, uuid, device_class, protocol, agent_id, agent_site, endpoint_key, last_outcome, last_message,
                                      first_seen, last_seen, identity_rank, identity_seen)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $21)
                 ON CONFLICT (device_key) DO UPDATE SET {},
                    last_outcome = excluded.last_outcome, last_message = excluded.last_message, last_seen = excluded.last_seen
                 RETURNING id",
                sets.join(", ")
            );
            let takeover = humantime::parse_rfc3339(&seen)
                .ok()
                .and_then(|t| t.checked_sub(merge::TAKEOVER_AFTER))
                .map(|t| humantime::format_rfc3339_millis(t).to_string())
                .unwrap_or_default();
            sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
                .bind(key)
                .bind(
                    normalize::serial_of(&id.serial_number, &[&id.model, &id.part_number])
                        .unwrap_or_default(),
                )
                .bind(normalize::vendor(&id.vendor))
                .bind(id.model.trim())
                .bind(id.part_number.trim())
                .bind(id.sku.trim())
                .bind(id.firmware_version.trim())
                .bind(id.asset_tag.trim())
                .bind(id.hostname.trim())
                .bind(&id.description)
                .bind(&id.sys_object_id)
                .bind(&id.uuid)
                .bind(enum_name(id.device_class, DeviceClass::as_str_name))
                .bind(enum_name(id.protocol, Protocol::as_str_name))
                .bind(agent_id)
                .bind(agent_site)
                .bind(&id.endpoint_key)
                .bind(&outcome)
                .bind(&status.message)
                .bind(&seen)
                .bind(&seen)
                .bind(merge::rank(id.protocol))
                .bind(takeover)
                .fetch_one(&mut **tx)
                .await?
        };
        if failed {
            return Ok(());
        }
        let ident = report.identity.as_ref();
        rows.sources.insert(
            (
                device_id,
                enum_name(id.protocol, Protocol::as_str_name),
                ident.map_or("", |i| i.endpoint_key.as_str()),
            ),
            seen.clone(),
        );
        for mac in ident.into_iter().flat_map(|i| &i.macs) {
            if let Some(address) = groundtruth_proto::mac::canonical(&mac.address) {
                rows.macs.insert(
                    (device_id, address),
                    (
                        mac.interface_name.as_str(),
                        enum_name(mac.role, MacRole::as_str_name),
                        seen.clone(),
                    ),
                );
            }
        }
        if key.starts_with("serial:") {
            let management = merge::management_macs(report);
            if !management.is_empty() {
                rows.folds.push((device_id, key.to_owned(), management));
            }
        }
        rows.readings
            .extend(report.readings.iter().filter(|r| r.value.is_finite()).map(|r| {
                let c = r.component.clone().unwrap_or_default();
                ReadingRow {
                    device_id,
                    metric: &r.metric,
                    unit: &r.unit,
                    value: r.value,
                    at: ts(r.observed_at.as_ref()),
                    kind: if r.component.is_some() {
                        enum_name(c.kind, ComponentKind::as_str_name)
                    } else {
                        String::new()
                    },
                    index: i64::from(c.index),
                    label: c.label,
                }
            }));
        if !report.topology.is_empty() {
            use groundtruth_proto::v1::TopologySource;
            sqlx::query("DELETE FROM topology WHERE switch_device_id = $1")
                .bind(device_id)
                .execute(&mut **tx)
                .await?;
            for t in report.topology.iter().take(MAX_TOPOLOGY_ROWS) {
                sqlx::query(
                    "INSERT INTO topology (switch_device_id, source, local_port, local_port_index, remote_mac, remote_chassis_id,
                                           remote_system_name, remote_port_id, vlan, observed_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                )
                .bind(device_id)
                .bind(enum_name(t.source, TopologySource::as_str_name))
                .bind(&t.local_port)
                .bind(i64::from(t.local_port_index))
                .bind(groundtruth_proto::mac::canonical(&t.remote_mac).unwrap_or_default())
                .bind(groundtruth_proto::mac::canonical(&t.remote_chassis_id).unwrap_or_else(|| t.remote_chassis_id.clone()))
                .bind(&t.remote_system_name)
                .bind(&t.remote_port_id)
                .bind(i64::from(t.vlan))
                .bind(&seen)
                .execute(&mut **tx)
                .await?;
            }
        }
        for l in &report.locations {
            sqlx::query(
                "INSERT INTO location_evidence (device_id, source, site, room, row_name, rack, u_position, u_height, face, confidence, raw, observed_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
                 ON CONFLICT (device_id, source) DO UPDATE SET site = excluded.site, room = excluded.room, row_name = excluded.row_name,
                    rack = excluded.rack, u_position = excluded.u_position, u_height = excluded.u_height, face = excluded.face,
                    confidence = excluded.confidence, raw = excluded.raw, observed_at = excluded.observed_at",
            )
            .bind(device_id)
            .bind(enum_name(l.source, LocationSource::as_str_name))
            .bind(l.site.trim())
            .bind(l.room.trim())
            .bind(l.row.trim())
            .bind(l.rack.trim())
            .bind(l.u_position.map(i64::from))
            .bind(i64::from(l.u_height))
            .bind(enum_name(l.face, groundtruth_proto::v1::RackFace::as_str_name))
            .bind(f64::from(l.confidence))
            .bind(&l.raw)
            .bind(ts(l.observed_at.as_ref()))
            .execute(&mut **tx)
            .await?;
        }
        Ok(())
    }

    /// Writes what [`Self::upsert_report`] queued for the whole batch, then folds endpoint
    /// records into the serial-keyed devices that now own their BMC MACs.
    async fn write_batch_rows(
        tx: &mut sqlx::Transaction<'_, Any>,
        backend: Backend,
        rows: BatchRows<'_>,
        agent_id: &str,
    ) -> Result<(), StoreError> {
        let sources: Vec<_> = rows.sources.into_iter().collect();
        insert_rows(
            tx,
            backend,
            "INSERT INTO device_sources (device_id, protocol, agent_id, endpoint_key, first_seen, last_seen) VALUES ",
            " ON CONFLICT (device_id, protocol, agent_id, endpoint_key) DO UPDATE SET last_seen = excluded.last_seen",
            &sources,
            |q, ((device_id, protocol, endpoint), seen)| {
                q.bind(device_id).bind(protocol).bind(agent_id).bind(*endpoint).bind(seen).bind(seen)
            },
        )
        .await?;
        let macs: Vec<_> = rows.macs.into_iter().collect();
        insert_rows(
            tx,
            backend,
            "INSERT INTO device_macs (device_id, address, interface_name, role, last_seen) VALUES ",
            " ON CONFLICT (device_id, address) DO UPDATE SET interface_name = excluded.interface_name,
                role = excluded.role, last_seen = excluded.last_seen",
            &macs,
            |q, ((device_id, address), (iface, role, seen))| {
                q.bind(device_id).bind(address).bind(*iface).bind(role).bind(seen)
            },
        )
        .await?;
        insert_rows(
            tx,
            backend,
            "INSERT INTO readings (device_id, metric, unit, value, observed_at, component_kind, component_index, component_label) VALUES ",
            "",
            &rows.readings,
            |q, r| {
                q.bind(r.device_id).bind(r.metric).bind(r.unit).bind(r.value).bind(&r.at)
                    .bind(&r.kind).bind(r.index).bind(&r.label)
            },
        )
        .await?;
        // One row per series for `latest_readings` (an upsert may not touch a row twice): the
        // newest, a later one winning a tie — what one upsert per reading would leave.
        let mut latest: std::collections::BTreeMap<(i64, &str, &str, &str, i64), &ReadingRow<'_>> =
            std::collections::BTreeMap::new();
        for r in &rows.readings {
            let slot = latest
                .entry((r.device_id, r.metric, r.unit, r.kind.as_str(), r.index))
                .or_insert(r);
            if r.at >= slot.at {
                *slot = r;
            }
        }
        let latest: Vec<&ReadingRow<'_>> = latest.into_values().collect();
        insert_rows(
            tx,
            backend,
            "INSERT INTO latest_readings (device_id, metric, unit, component_kind, component_index, component_label, value, observed_at) VALUES ",
            " ON CONFLICT (device_id, metric, unit, component_kind, component_index) DO UPDATE SET
                component_label = excluded.component_label, value = excluded.value, observed_at = excluded.observed_at
             WHERE excluded.observed_at >= latest_readings.observed_at",
            &latest,
            |q, r| {
                q.bind(r.device_id).bind(r.metric).bind(r.unit).bind(&r.kind).bind(r.index)
                    .bind(&r.label).bind(r.value).bind(&r.at)
            },
        )
        .await?;
        merge::fold_endpoint_devices(tx, &rows.folds).await
    }

    /// All devices with their MACs, latest device-level power and location evidence.
    ///
    /// # Errors
    /// On a database failure.
    pub async fn devices(&self) -> Result<Vec<DeviceRow>, StoreError> {
        use std::collections::HashMap;
        // Seven queries in all, not seven per device: on PostgreSQL every query is a round trip,
        // and the web UI lists every device.
        let rows = sqlx::query(
            "SELECT id, device_key, serial, vendor, model, part_number, asset_tag, hostname, protocol, agent_id, agent_site,
                    endpoint_key, last_outcome, last_seen FROM devices ORDER BY device_key",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut macs: HashMap<i64, Vec<(String, String, String)>> = HashMap::new();
        for m in sqlx::query(
            "SELECT device_id, address, interface_name, role FROM device_macs ORDER BY device_id, address",
        )
        .fetch_all(&self.pool)
        .await?
        {
            macs.entry(m.get("device_id")).or_default().push((
                m.get("address"),
                m.get("interface_name"),
                m.get("role"),
            ));
        }
        // The newest device-level power (the series `latest_readings` keeps at ingest).
        let power: HashMap<i64, f64> = sqlx::query(
            "SELECT device_id, value FROM latest_readings
             WHERE metric = 'power' AND unit = 'W' AND component_kind = '' AND component_index = 0",
        )
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .map(|r| (r.get("device_id"), r.get("value")))
        .collect();
        let mut locations: HashMap<i64, Vec<EvidenceRow>> = HashMap::new();
        for l in sqlx::query(
            "SELECT device_id, source, site, room, row_name, rack, u_position, confidence, raw FROM location_evidence
             ORDER BY device_id, confidence DESC, source",
        )
        .fetch_all(&self.pool)
        .await?
        {
            locations.entry(l.get("device_id")).or_default().push(EvidenceRow {
                via: String::new(),
                source: l.get("source"),
                site: l.get("site"),
                room: l.get("room"),
                row: l.get("row_name"),
                rack: l.get("rack"),
                u_position: l.get::<Option<i64>, _>("u_position").and_then(|u| u32::try_from(u).ok()),
                confidence: l.get("confidence"),
                raw: l.get("raw"),
            });
        }
        // Where the switches saw each device's MACs (FDB rows, or LLDP chassis ids).
        for t in sqlx::query(
            "SELECT DISTINCT m.device_id, sw.serial AS switch_serial, sw.hostname AS switch_name, t.local_port, t.source
             FROM device_macs m
             JOIN topology t ON (t.remote_mac = m.address OR t.remote_chassis_id = m.address)
             JOIN devices sw ON sw.id = t.switch_device_id
             WHERE sw.id != m.device_id AND t.local_port != ''
             ORDER BY m.device_id, sw.serial, sw.hostname, t.local_port, t.source",
        )
        .fetch_all(&self.pool)
        .await?
        {
            let (serial, name, port): (String, String, String) =
                (t.get("switch_serial"), t.get("switch_name"), t.get("local_port"));
            locations.entry(t.get("device_id")).or_default().push(EvidenceRow {
                source: "LOCATION_SOURCE_TOPOLOGY".into(),
                raw: format!(
                    "{} on switch {} port {port}",
                    t.get::<String, _>("source").trim_start_matches("TOPOLOGY_SOURCE_"),
                    if serial.is_empty() { &name } else { &serial }
                ),
                via: format!("{serial}|{name}|{port}"),
                confidence: 0.7,
                ..Default::default()
            });
        }
        let mut protocols: HashMap<i64, Vec<String>> = HashMap::new();
        for p in sqlx::query(
            "SELECT DISTINCT device_id, protocol FROM device_sources ORDER BY device_id, protocol",
        )
        .fetch_all(&self.pool)
        .await?
        {
            protocols
                .entry(p.get("device_id"))
                .or_default()
                .push(p.get("protocol"));
        }
        // Management MACs claimed by more than one device with a serial.
        let serial_of: HashMap<i64, (String, bool)> = rows
            .iter()
            .map(|r| {
                (
                    r.get("id"),
                    (r.get("device_key"), !r.get::<String, _>("serial").is_empty()),
                )
            })
            .collect();
        let mut bmc_owners: HashMap<&str, Vec<(&str, &[String])>> = HashMap::new();
        for (id, list) in &macs {
            let Some((key, true)) = serial_of.get(id) else {
                continue;
            };
            let seen_by = protocols.get(id).map_or(&[][..], Vec::as_slice);
            for (address, _, _) in list.iter().filter(|m| m.2 == "MAC_ROLE_MANAGEMENT") {
                bmc_owners
                    .entry(address.as_str())
                    .or_default()
                    .push((key.as_str(), seen_by));
            }
        }
        // Two devices that only one and the same protocol reports are two systems whatever
        // their MACs say (the protocol reports each one's serial the same way): a cloned or
        // default BMC MAC, for NetBox's MAC checks. Across protocols, two serials behind one
        // BMC MAC may be one server: that is the conflict.
        let same_single_protocol = |a: &[String], b: &[String]| a.len() == 1 && a == b;
        let mut shared: HashMap<String, Vec<String>> = HashMap::new();
        for (mac, owners) in bmc_owners.iter().filter(|(_, k)| k.len() > 1) {
            for (k, kp) in owners {
                for (other, _) in owners
                    .iter()
                    .filter(|(o, op)| o != k && !same_single_protocol(kp, op))
                {
                    shared
                        .entry((*k).to_owned())
                        .or_default()
                        .push(format!("{mac} {other}"));
                }
            }
        }
        // An operator who ignored the conflict for a device lets it be written after all.
        for k in sqlx::query_scalar::<_, String>(
            "SELECT device_key FROM exception_ignores WHERE kind = 'identity_conflict'",
        )
        .fetch_all(&self.pool)
        .await?
        {
            shared.remove(&k);
        }
        let mut out: Vec<DeviceRow> = rows
            .into_iter()
            .map(|r| {
                let id: i64 = r.get("id");
                let key: String = r.get("device_key");
                let mut shares_bmc_mac_with = shared.remove(&key).unwrap_or_default();
                shares_bmc_mac_with.sort();
                DeviceRow {
                    protocols: protocols.remove(&id).unwrap_or_default(),
                    shares_bmc_mac_with,
                    device_key: key,
                    serial: r.get("serial"),
                    vendor: r.get("vendor"),
                    model: r.get("model"),
                    part_number: r.get("part_number"),
                    asset_tag: r.get("asset_tag"),
                    hostname: r.get("hostname"),
                    protocol: r.get("protocol"),
                    agent_id: r.get("agent_id"),
                    agent_site: r.get("agent_site"),
                    endpoint_key: r.get("endpoint_key"),
                    last_outcome: r.get("last_outcome"),
                    last_seen: r.get("last_seen"),
                    macs: macs.remove(&id).unwrap_or_default(),
                    power_watts: power.get(&id).copied(),
                    locations: locations.remove(&id).unwrap_or_default(),
                }
            })
            .collect();
        self.add_pins(&mut out).await?;
        Ok(out)
    }

    /// Opens (or refreshes) an exception; one open row per (device, kind). A pair an operator
    /// ignored is not raised.
    ///
    /// # Errors
    /// On a database failure.
    pub async fn raise_exception(
        &self,
        device_key: &str,
        kind: &str,
        detail: &str,
    ) -> Result<(), StoreError> {
        if self.is_ignored(device_key, kind).await? {
            return Ok(());
        }
        let t = now();
        sqlx::query(
            "INSERT INTO exceptions (device_key, kind, detail, first_seen, last_seen) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (device_key, kind) WHERE resolved_at IS NULL DO UPDATE SET detail = excluded.detail, last_seen = excluded.last_seen",
        )
        .bind(device_key)
        .bind(kind)
        .bind(detail)
        .bind(&t)
        .bind(&t)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Marks open exceptions of a device resolved, except the kinds in `still_open`.
    ///
    /// # Errors
    /// On a database failure.
    pub async fn resolve_exceptions(&self, device_key: &str, still_open: &[&str]) -> Result<(), StoreError> {
        let rows =
            sqlx::query("SELECT id, kind FROM exceptions WHERE device_key = $1 AND resolved_at IS NULL")
                .bind(device_key)
                .fetch_all(&self.pool)
                .await?;
        for r in rows {
            let kind: String = r.get("kind");
            if !still_open.contains(&kind.as_str()) {
                sqlx::query("UPDATE exceptions SET resolved_at = $1 WHERE id = $2")
                    .bind(now())
                    .bind(r.get::<i64, _>("id"))
                    .execute(&self.pool)
                    .await?;
            }
        }
        Ok(())
    }

    /// Open exceptions, oldest first.
    ///
    /// # Errors
    /// On a database failure.
    pub async fn open_exceptions(&self) -> Result<Vec<ExceptionRow>, StoreError> {
        Ok(sqlx::query("SELECT id, device_key, kind, detail, first_seen, last_seen FROM exceptions WHERE resolved_at IS NULL ORDER BY first_seen, id")
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(ExceptionRow::from_row)
            .collect())
    }

    /// Marks one open exception resolved by hand, recording who and when. Returns false when
    /// there is no such open exception (unknown id, or already resolved).
    ///
    /// # Errors
    /// On a database failure.
    pub async fn resolve_exception(&self, id: i64, by: &str) -> Result<bool, StoreError> {
        self.accept_exception(id, by, "").await
    }

    /// The last CMDB sync outcome of a device, if it was ever synced.
    ///
    /// # Errors
    /// On a database failure.
    pub async fn cmdb_sync_state(&self, device_key: &str) -> Result<Option<SyncRow>, StoreError> {
        Ok(
            sqlx::query("SELECT last_sync, changes, result FROM cmdb_sync WHERE device_key = $1")
                .bind(device_key)
                .fetch_optional(&self.pool)
                .await?
                .map(|r| SyncRow {
                    last_sync: r.get("last_sync"),
                    changes: r.get("changes"),
                    result: r.get("result"),
                }),
        )
    }

    /// Raw device-level readings of one metric observed at or after `since`, oldest first, as
    /// (RFC 3339 time, value). Component readings (PSUs, inlets…) are not included.
    ///
    /// # Errors
    /// On a database failure.
    pub async fn readings_since(
        &self,
        device_key: &str,
        metric: &str,
        since: std::time::SystemTime,
    ) -> Result<Vec<(String, f64)>, StoreError> {
        Ok(sqlx::query(
            "SELECT r.observed_at, r.value FROM readings r JOIN devices d ON d.id = r.device_id
             WHERE d.device_key = $1 AND r.metric = $2 AND r.component_kind = '' AND r.observed_at >= $3
             ORDER BY r.observed_at",
        )
        .bind(device_key)
        .bind(metric)
        .bind(humantime::format_rfc3339_millis(since).to_string())
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .map(|r| (r.get("observed_at"), r.get("value")))
        .collect())
    }

    /// The rack height in U each device reported (the largest non-zero `u_height` of its location
    /// evidence); devices that reported none are absent.
    ///
    /// # Errors
    /// On a database failure.
    pub async fn u_heights(&self) -> Result<std::collections::HashMap<String, u32>, StoreError> {
        Ok(sqlx::query(
            "SELECT d.device_key, MAX(l.u_height) AS h FROM location_evidence l JOIN devices d ON d.id = l.device_id
             WHERE l.u_height > 0 GROUP BY d.device_key",
        )
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .filter_map(|r| {
            let h: i64 = r.get("h");
            Some((r.get("device_key"), u32::try_from(h).ok()?))
        })
        .collect())
    }

    /// Dead-letters a failed CMDB write (or counts one more failed pass of an open one).
    ///
    /// # Errors
    /// On a database failure.
    pub async fn dead_letter(&self, device_key: &str, reason: &str) -> Result<(), StoreError> {
        let t = now();
        sqlx::query(
            "INSERT INTO dead_letters (device_key, reason, attempts, first_failed, last_failed) VALUES ($1, $2, 1, $3, $4)
             ON CONFLICT (device_key, reason) WHERE resolved_at IS NULL DO UPDATE SET attempts = dead_letters.attempts + 1, last_failed = excluded.last_failed",
        )
        .bind(device_key)
        .bind(reason)
        .bind(&t)
        .bind(&t)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Marks a device's open dead letters resolved except those whose reason is in `still_failing`.
    ///
    /// # Errors
    /// On a database failure.
    pub async fn resolve_dead_letters(
        &self,
        device_key: &str,
        still_failing: &[&str],
    ) -> Result<u64, StoreError> {
        let rows =
            sqlx::query("SELECT id, reason FROM dead_letters WHERE device_key = $1 AND resolved_at IS NULL")
                .bind(device_key)
                .fetch_all(&self.pool)
                .await?;
        let mut n = 0;
        for r in rows {
            let reason: String = r.get("reason");
            if !still_failing.contains(&reason.as_str()) {
                sqlx::query("UPDATE dead_letters SET resolved_at = $1 WHERE id = $2")
                    .bind(now())
                    .bind(r.get::<i64, _>("id"))
                    .execute(&self.pool)
                    .await?;
                n += 1;
            }
        }
        Ok(n)
    }

    /// Open dead letters, oldest first.
    ///
    /// # Errors
    /// On a database failure.
    pub async fn dead_letters(&self) -> Result<Vec<DeadLetterRow>, StoreError> {
        Ok(sqlx::query(
            "SELECT device_key, reason, attempts, first_failed, last_failed FROM dead_letters WHERE resolved_at IS NULL ORDER BY first_failed",
        )
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .map(|r| DeadLetterRow {
            device_key: r.get("device_key"),
            reason: r.get("reason"),
            attempts: r.get("attempts"),
            first_failed: r.get("first_failed"),
            last_failed: r.get("last_failed"),
        })
        .collect())
    }

    /// Records the outcome of a CMDB sync for a device.
    ///
    /// # Errors
    /// On a database failure.
    pub async fn record_sync(
        &self,
        device_key: &str,
        changes: usize,
        result: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO cmdb_sync (device_key, last_sync, changes, result) VALUES ($1, $2, $3, $4)
             ON CONFLICT (device_key) DO UPDATE SET last_sync = excluded.last_sync, changes = excluded.changes, result = excluded.result",
        )
        .bind(device_key)
        .bind(now())
        .bind(i64::try_from(changes).unwrap_or(i64::MAX))
        .bind(result)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// (number of batches, highest seq) stored for an agent in its newest epoch: equal when the
    /// agent's sequence has no gaps (the collector's own delivery check).
    ///
    /// # Errors
    /// On a database failure.
    pub async fn batch_seq_span(&self, agent_id: &str) -> Result<(u64, u64), StoreError> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n, COALESCE(MAX(seq), 0) AS max_seq FROM batches
             WHERE agent_id = $1 AND epoch = (SELECT MAX(epoch) FROM batches WHERE agent_id = $1)",
        )
        .bind(agent_id)
        .fetch_one(&self.pool)
        .await?;
        let n: i64 = row.get("n");
        let max: i64 = row.get("max_seq");
        Ok((u64::try_from(n).unwrap_or(0), u64::try_from(max).unwrap_or(0)))
    }

    /// The newest value of every series, with its device's key.
    ///
    /// # Errors
    /// On a database failure.
    pub async fn latest_readings(&self) -> Result<Vec<LatestReading>, StoreError> {
        Ok(sqlx::query(
            "SELECT d.device_key, l.metric, l.unit, l.component_kind, l.component_index, l.component_label, l.value, l.observed_at
             FROM latest_readings l JOIN devices d ON d.id = l.device_id ORDER BY d.device_key, l.metric",
        )
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .map(|r| LatestReading {
            device_key: r.get("device_key"),
            metric: r.get("metric"),
            unit: r.get("unit"),
            component_kind: r.get("component_kind"),
            component_index: r.get::<i64, _>("component_index"),
            component_label: r.get("component_label"),
            value: r.get("value"),
            observed_at: r.get("observed_at"),
        })
        .collect())
    }

    /// Retention: rolls raw readings older than `raw` into hourly aggregates and deletes them;
    /// deletes hourly aggregates older than `hourly`. Returns (raw rows rolled up, hourly rows
    /// expired). Runs in one transaction, so a crash leaves either before or after.
    ///
    /// # Errors
    /// On a database failure.
    pub async fn compact(
        &self,
        raw: std::time::Duration,
        hourly: std::time::Duration,
    ) -> Result<(u64, u64), StoreError> {
        let now = std::time::SystemTime::now();
        let cut = |d: std::time::Duration| {
            humantime::format_rfc3339_millis(now.checked_sub(d).unwrap_or(std::time::UNIX_EPOCH)).to_string()
        };
        let (raw_cut, hourly_cut) = (cut(raw), cut(hourly));
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO readings_hourly (device_id, metric, unit, component_kind, component_index, hour, samples, min_value, max_value, sum_value)
             SELECT device_id, metric, unit, component_kind, component_index, substr(observed_at, 1, 13), COUNT(*), MIN(value), MAX(value), SUM(value)
             FROM readings WHERE observed_at < $1
             GROUP BY device_id, metric, unit, component_kind, component_index, substr(observed_at, 1, 13)
             ON CONFLICT (device_id, metric, unit, component_kind, component_index, hour) DO UPDATE SET
                samples = readings_hourly.samples + excluded.samples,
                min_value = CASE WHEN excluded.min_value < readings_hourly.min_value THEN excluded.min_value ELSE readings_hourly.min_value END,
                max_value = CASE WHEN excluded.max_value > readings_hourly.max_value THEN excluded.max_value ELSE readings_hourly.max_value END,
                sum_value = readings_hourly.sum_value + excluded.sum_value",
        )
        .bind(&raw_cut)
        .execute(&mut *tx)
        .await?;
        let rolled = sqlx::query("DELETE FROM readings WHERE observed_at < $1")
            .bind(&raw_cut)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        let expired = sqlx::query("DELETE FROM readings_hourly WHERE hour < substr($1, 1, 13)")
            .bind(&hourly_cut)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok((rolled, expired))
    }

    /// Hourly aggregates of one device's metric, oldest first: (hour, samples, min, max, mean).
    ///
    /// # Errors
    /// On a database failure.
    pub async fn hourly(
        &self,
        device_key: &str,
        metric: &str,
    ) -> Result<Vec<(String, i64, f64, f64, f64)>, StoreError> {
        Ok(sqlx::query(
            "SELECT h.hour, h.samples, h.min_value, h.max_value, h.sum_value / h.samples AS mean
             FROM readings_hourly h JOIN devices d ON d.id = h.device_id
             WHERE d.device_key = $1 AND h.metric = $2 AND h.component_kind = '' ORDER BY h.hour",
        )
        .bind(device_key)
        .bind(metric)
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .map(|r| {
            (
                r.get("hour"),
                r.get("samples"),
                r.get("min_value"),
                r.get("max_value"),
                r.get("mean"),
            )
        })
        .collect())
    }

    /// Number of committed batches (for tests and status output).
    ///
    /// # Errors
    /// On a database failure.
    pub async fn batch_count(&self) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM batches")
            .fetch_one(&self.pool)
            .await?)
    }
}

// CMDB journal entries not yet written (migration 0007). `$N` placeholders and portable SQL
// (SQLite and PostgreSQL).
impl Store {
    /// Journal entries waiting for the CMDB, oldest first.
    ///
    /// # Errors
    /// On a database failure.
    pub async fn journal_pending(&self) -> Result<Vec<crate::cmdb::PendingJournal>, StoreError> {
        Ok(sqlx::query(
            "SELECT marker, device_key, serial, object_id, comments, in_flight FROM cmdb_journal_pending ORDER BY recorded_at, marker",
        )
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .map(|r| crate::cmdb::PendingJournal {
            marker: r.get("marker"),
            device_key: r.get("device_key"),
            serial: r.get("serial"),
            object_id: r
                .get::<Option<i64>, _>("object_id")
                .and_then(|v| u64::try_from(v).ok()),
            comments: r.get("comments"),
            in_flight: r.get("in_flight"),
        })
        .collect())
    }

    /// Inserts or replaces journal entries (by marker) and removes those `remove` names, in one
    /// transaction; with `fence`, only while that lease is held.
    ///
    /// # Errors
    /// On a database failure, or [`StoreError::Fenced`] when `fence`'s lease is lost.
    pub async fn journal_record(
        &self,
        entries: &[crate::cmdb::PendingJournal],
        remove: &[String],
        fence: Option<&Fence>,
    ) -> Result<(), StoreError> {
        if entries.is_empty() && remove.is_empty() {
            return Ok(());
        }
        let t = now();
        let mut tx = self.pool.begin().await?;
        for e in entries {
            sqlx::query(
                "INSERT INTO cmdb_journal_pending (marker, device_key, serial, object_id, comments, recorded_at, in_flight)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)
                 ON CONFLICT (marker) DO UPDATE SET object_id = COALESCE(excluded.object_id, cmdb_journal_pending.object_id),
                 comments = excluded.comments, in_flight = excluded.in_flight",
            )
            .bind(&e.marker)
            .bind(&e.device_key)
            .bind(&e.serial)
            .bind(e.object_id.and_then(|v| i64::try_from(v).ok()))
            .bind(&e.comments)
            .bind(&t)
            .bind(&e.in_flight)
            .execute(&mut *tx)
            .await?;
        }
        for m in remove {
            sqlx::query("DELETE FROM cmdb_journal_pending WHERE marker = $1")
                .bind(m)
                .execute(&mut *tx)
                .await?;
        }
        // Checked after the writes, so that on SQLite the transaction already holds the write
        // lock: checking first would read a snapshot that the lease renewal may make stale
        // before the first write (SQLITE_BUSY_SNAPSHOT).
        if let Some(f) = fence {
            self.fence_check(&mut tx, f).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Removes journal entries the CMDB now has; with `fence`, only while that lease is held.
    ///
    /// # Errors
    /// On a database failure, or [`StoreError::Fenced`] when `fence`'s lease is lost.
    pub async fn journal_written(&self, markers: &[String], fence: Option<&Fence>) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        for m in markers {
            sqlx::query("DELETE FROM cmdb_journal_pending WHERE marker = $1")
                .bind(m)
                .execute(&mut *tx)
                .await?;
        }
        // After the writes, as in `journal_record`.
        if let Some(f) = fence {
            self.fence_check(&mut tx, f).await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

/// Runs test bodies (`async fn NAME(t: TestDb)`) against both back ends, as `NAME::sqlite` and
/// `NAME::postgres` (the latter skips loudly without the test PostgreSQL and fails with
/// `GT_REQUIRE_PEERS=1`). The one copy for this crate's unit tests.
#[cfg(test)]
macro_rules! both_stores {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test]
            async fn sqlite() {
                super::$name($crate::store::testdb::TestDb::sqlite()).await;
            }
            #[tokio::test]
            async fn postgres() {
                let Some(url) = $crate::store::testdb::pg_url(concat!(module_path!(), "::", stringify!($name))) else {
                    return;
                };
                let t = $crate::store::testdb::TestDb::postgres(&url).await.unwrap();
                assert!(t.db.is_postgres());
                super::$name(t).await;
            }
        }
    )*};
}
#[cfg(test)]
pub(crate) use both_stores;

/// Throwaway databases for tests of both back ends (used by this crate's unit tests and the
/// `groundtruth-tests` suites): an SQLite file in a temporary directory, or a fresh schema in the
/// test PostgreSQL database (`GT_PG_URL`, created by `tests/peers/netbox/start.sh`), dropped
/// again when the value is dropped.
#[doc(hidden)]
pub mod testdb {
    use super::{Database, Store, StoreError};
    use groundtruth_proto::v1::{AgentInfo, Batch, DeviceReport};
    use sqlx::{Connection, Executor};

    /// A batch of `devices` from agent `agent_id` at `site` (epoch 1), for tests.
    #[must_use]
    pub fn batch(agent_id: &str, site: &str, seq: u64, devices: Vec<DeviceReport>) -> Batch {
        Batch {
            agent: Some(AgentInfo {
                agent_id: agent_id.to_owned(),
                site: site.to_owned(),
                ..Default::default()
            }),
            epoch: 1,
            seq,
            devices,
            ..Default::default()
        }
    }

    /// One test database; `db` is what to pass to [`Store::connect`] (any number of times).
    #[derive(Debug)]
    pub struct TestDb {
        pub db: Database,
        schema: Option<(url::Url, String)>,
        _dir: Option<tempfile::TempDir>,
    }

    impl TestDb {
        /// A new SQLite file in a new temporary directory.
        ///
        /// # Panics
        /// When no temporary directory can be made.
        #[must_use]
        pub fn sqlite() -> Self {
            #[allow(clippy::expect_used)]
            let dir = tempfile::tempdir().expect("temporary directory");
            Self {
                db: Database::Sqlite(dir.path().join("state.db")),
                schema: None,
                _dir: Some(dir),
            }
        }

        /// The `collector.database` line of a collector config file for this database (with
        /// the PostgreSQL password in the URL: a test's throwaway credentials).
        #[must_use]
        pub fn config_line(&self) -> String {
            match &self.db {
                Database::Sqlite(path) => format!("database = {:?}\n", path.display().to_string()),
                Database::Postgres { url, password } => {
                    let mut url = url.clone();
                    if let Some(p) = password {
                        let _ = url.set_password(Some(p));
                    }
                    format!("database = {:?}\n", url.as_str())
                }
            }
        }

        /// A new, empty schema in the PostgreSQL database at `base` (the schema is the
        /// connections' `search_path`).
        ///
        /// # Errors
        /// When the server cannot be reached or the schema cannot be created.
        pub async fn postgres(base: &str) -> Result<Self, String> {
            static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
            let base = url::Url::parse(base).map_err(|e| format!("GT_PG_URL: {e}"))?;
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos());
            let schema = format!(
                "gt_test_{}_{}_{nanos}",
                std::process::id(),
                N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            );
            let mut conn = sqlx::PgConnection::connect(base.as_str())
                .await
                .map_err(|e| format!("connecting to GT_PG_URL: {e}"))?;
            conn.execute(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
                .await
                .map_err(|e| format!("CREATE SCHEMA {schema}: {e}"))?;
            let _ = conn.close().await;
            let mut url = base.clone();
            url.query_pairs_mut()
                .append_pair("options", &format!("-c search_path={schema}"));
            let mut db = Database::parse(url.as_str())?;
            if let Database::Postgres { password, .. } = &mut db {
                *password = base.password().map(str::to_owned);
            }
            Ok(Self {
                db,
                schema: Some((base, schema)),
                _dir: None,
            })
        }

        /// Opens a store on this database.
        ///
        /// # Errors
        /// As [`Store::connect`].
        pub async fn store(&self) -> Result<Store, StoreError> {
            Store::connect(&self.db).await
        }
    }

    impl Drop for TestDb {
        fn drop(&mut self) {
            let Some((base, schema)) = self.schema.take() else {
                return;
            };
            // Drop may run inside an async test: do the cleanup on a thread of its own.
            let _ = std::thread::spawn(move || {
                let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
                    return;
                };
                rt.block_on(async {
                    if let Ok(mut c) = sqlx::PgConnection::connect(base.as_str()).await {
                        let _ = c
                            .execute(sqlx::AssertSqlSafe(format!(
                                "DROP SCHEMA IF EXISTS {schema} CASCADE"
                            )))
                            .await;
                        let _ = c.close().await;
                    }
                });
            })
            .join();
        }
    }

    /// The test PostgreSQL URL: `GT_PG_URL` from the environment, else from
    /// `$GT_PEERS_RUN/peers.env`. `None` after a loud skip message, or a panic when
    /// `GT_REQUIRE_PEERS=1` (as `groundtruth_tests::Peers::require`).
    ///
    /// # Panics
    /// When the URL is missing and `GT_REQUIRE_PEERS=1`.
    #[must_use]
    pub fn pg_url(test: &str) -> Option<String> {
        let from_env = std::env::var("GT_PG_URL").ok().filter(|v| !v.is_empty());
        let url = from_env.or_else(|| {
            let run = std::env::var("GT_PEERS_RUN").unwrap_or_else(|_| "/tmp/gt-peers".into());
            let text = std::fs::read_to_string(std::path::Path::new(&run).join("peers.env")).ok()?;
            text.lines()
                .find_map(|l| l.trim().strip_prefix("GT_PG_URL="))
                .map(|v| v.trim().trim_matches('\'').trim_matches('"').to_owned())
                .filter(|v| !v.is_empty())
        });
        if url.is_none() {
            let msg = format!(
                "SKIP: {test}: test PostgreSQL not running (missing GT_PG_URL); start peers with tests/peers/start-all.sh"
            );
            assert!(
                std::env::var("GT_REQUIRE_PEERS").as_deref() != Ok("1"),
                "{msg} (GT_REQUIRE_PEERS=1)"
            );
            eprintln!("{msg}");
        }
        url
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::testdb::TestDb;
    use super::*;
    use groundtruth_proto::v1::{
        DeviceIdentity, LocationEvidence, MacAddress, PollStatus, Protocol, Reading,
    };

    crate::store::both_stores!(
        duplicate_batch_is_recognised_and_stored_once,
        devices_carry_newest_power_and_switch_sightings,
        readings_beyond_one_statement_are_all_stored,
        reopening_keeps_data_and_does_not_rerun_migrations,
        junk_serial_keys_by_endpoint_and_batch_without_agent_is_rejected,
        compaction_rolls_old_readings_into_hourly_aggregates,
        exceptions_open_once_and_resolve,
        an_exception_resolved_by_hand_records_who_and_only_once,
        readings_since_returns_recent_device_level_history,
        dead_letters_count_failed_passes_and_resolve_when_the_write_succeeds,
        one_server_over_redfish_and_ipmi_is_one_device_with_merged_identity,
        a_serialless_ipmi_record_folds_into_the_device_owning_its_bmc_mac,
        two_serials_sharing_a_bmc_mac_are_kept_apart_and_flagged
    );

    /// A server report as `protocol` sees it: serial, model, hostname, BMC MAC, one reading.
    fn server(protocol: Protocol, serial: &str, model: &str, hostname: &str, bmc: &str) -> DeviceReport {
        DeviceReport {
            identity: Some(DeviceIdentity {
                serial_number: serial.into(),
                model: model.into(),
                hostname: hostname.into(),
                protocol: protocol as i32,
                endpoint_key: format!("{}://10.0.0.9", protocol.as_str_name()),
                macs: vec![MacAddress {
                    address: bmc.into(),
                    role: groundtruth_proto::v1::MacRole::Management as i32,
                    ..Default::default()
                }],
                ..Default::default()
            }),
            readings: vec![Reading {
                metric: format!("{}_metric", protocol.as_str_name()),
                unit: "W".into(),
                value: 1.0,
                ..Default::default()
            }],
            status: Some(PollStatus {
                outcome: PollOutcome::Ok as i32,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn batch_of(seq: u64, devices: Vec<DeviceReport>) -> Batch {
        testdb::batch("a1", "DC1", seq, devices)
    }

    async fn one_server_over_redfish_and_ipmi_is_one_device_with_merged_identity(t: TestDb) {
        let store = t.store().await.unwrap();
        let bmc = "02:47:54:20:00:01";
        store
            .commit_batch(&batch_of(
                1,
                vec![server(Protocol::Redfish, "SRV1", "PowerEdge R650", "web-01", bmc)],
            ))
            .await
            .unwrap();
        // IPMI: the same serial in another case, a shorter model, no hostname.
        store
            .commit_batch(&batch_of(
                2,
                vec![server(Protocol::Ipmi, "srv1", "R650", "", bmc)],
            ))
            .await
            .unwrap();
        let devices = store.devices().await.unwrap();
        assert_eq!(devices.len(), 1, "{devices:?}");
        let d = &devices[0];
        assert_eq!(d.device_key, "serial:SRV1");
        assert_eq!(
            (d.model.as_str(), d.hostname.as_str()),
            ("PowerEdge R650", "web-01"),
            "Redfish outranks IPMI"
        );
        assert_eq!(d.protocol, "PROTOCOL_REDFISH");
        assert_eq!(d.protocols, ["PROTOCOL_IPMI", "PROTOCOL_REDFISH"]);
        let metrics: Vec<String> = store
            .latest_readings()
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.metric)
            .collect();
        assert!(
            metrics.contains(&"PROTOCOL_IPMI_metric".to_owned())
                && metrics.contains(&"PROTOCOL_REDFISH_metric".to_owned()),
            "{metrics:?}"
        );
        // A lower source fills what the higher left empty.
        let mut ipmi = server(Protocol::Ipmi, "SRV1", "R650", "", bmc);
        ipmi.identity.as_mut().unwrap().asset_tag = "DC1-R07-U12".into();
        store.commit_batch(&batch_of(3, vec![ipmi])).await.unwrap();
        let d = store.devices().await.unwrap().remove(0);
        assert_eq!(
            (d.model.as_str(), d.asset_tag.as_str()),
            ("PowerEdge R650", "DC1-R07-U12")
        );
    }

    async fn a_serialless_ipmi_record_folds_into_the_device_owning_its_bmc_mac(t: TestDb) {
        let store = t.store().await.unwrap();
        let bmc = "02:47:54:20:00:01";
        // IPMI first, with a placeholder serial: an endpoint-keyed device and an exception.
        store
            .commit_batch(&batch_of(
                1,
                vec![server(Protocol::Ipmi, "To Be Filled By O.E.M.", "R650", "", bmc)],
            ))
            .await
            .unwrap();
        let first = store.devices().await.unwrap();
        assert_eq!(first.len(), 1);
        assert!(
            first[0].device_key.starts_with("endpoint:"),
            "{:?}",
            first[0].device_key
        );
        store
            .raise_exception(&first[0].device_key, "no_usable_identity", "placeholder serial")
            .await
            .unwrap();
        // Redfish names the serial and the same BMC MAC: the IPMI record folds into it.
        store
            .commit_batch(&batch_of(
                2,
                vec![server(Protocol::Redfish, "SRV1", "PowerEdge R650", "web-01", bmc)],
            ))
            .await
            .unwrap();
        let devices = store.devices().await.unwrap();
        assert_eq!(
            devices.iter().map(|d| d.device_key.as_str()).collect::<Vec<_>>(),
            ["serial:SRV1"]
        );
        assert_eq!(devices[0].protocols, ["PROTOCOL_IPMI", "PROTOCOL_REDFISH"]);
        assert!(
            store.open_exceptions().await.unwrap().is_empty(),
            "the endpoint record's exception is resolved"
        );
        let audit = store.audit_trail(None, 50).await.unwrap();
        assert!(
            audit
                .iter()
                .any(|a| a.action == "merged" && a.note.contains("serial:SRV1")),
            "{audit:?}"
        );
        // The next serial-less IPMI poll lands on the serial device directly, readings included.
        store
            .commit_batch(&batch_of(
                3,
                vec![server(Protocol::Ipmi, "", "R650", "", "02-47-54-20-00-01")],
            ))
            .await
            .unwrap();
        let devices = store.devices().await.unwrap();
        assert_eq!(devices.len(), 1, "{devices:?}");
        assert_eq!(devices[0].serial, "SRV1", "an empty serial never overwrites");
        let ipmi_readings = store
            .latest_readings()
            .await
            .unwrap()
            .into_iter()
            .filter(|r| r.metric == "PROTOCOL_IPMI_metric" && r.device_key == "serial:SRV1")
            .count();
        assert_eq!(ipmi_readings, 1);
        // Both arriving in one batch, IPMI first in it, also make one device.
        let db2 = TestDb::sqlite();
        let store2 = db2.store().await.unwrap();
        store2
            .commit_batch(&batch_of(
                1,
                vec![
                    server(Protocol::Ipmi, "", "R650", "", bmc),
                    server(Protocol::Redfish, "SRV1", "PowerEdge R650", "web-01", bmc),
                ],
            ))
            .await
            .unwrap();
        assert_eq!(store2.devices().await.unwrap().len(), 1);
    }

    async fn two_serials_sharing_a_bmc_mac_are_kept_apart_and_flagged(t: TestDb) {
        let store = t.store().await.unwrap();
        let bmc = "02:47:54:20:00:01";
        store
            .commit_batch(&batch_of(
                1,
                vec![
                    server(Protocol::Redfish, "SRV1", "PowerEdge R650", "web-01", bmc),
                    server(Protocol::Ipmi, "BOARD-77", "R650", "", bmc),
                ],
            ))
            .await
            .unwrap();
        let devices = store.devices().await.unwrap();
        let keys: Vec<(&str, &[String])> = devices
            .iter()
            .map(|d| (d.device_key.as_str(), d.shares_bmc_mac_with.as_slice()))
            .collect();
        assert_eq!(
            keys,
            [
                ("serial:BOARD-77", &[format!("{bmc} serial:SRV1")][..]),
                ("serial:SRV1", &[format!("{bmc} serial:BOARD-77")][..]),
            ]
        );
        let rules = crate::reconcile::Rules::builtin("DC1");
        for d in &devices {
            let unfit = crate::reconcile::desired(d, &rules).unwrap_err();
            assert_eq!(unfit.kind, "identity_conflict", "{unfit:?}");
            assert!(unfit.detail.contains("cloned MAC"), "{}", unfit.detail);
        }
        // Ignoring the conflict on one device lets that one through (to its next check).
        store
            .raise_exception("serial:SRV1", "identity_conflict", "x")
            .await
            .unwrap();
        let id = store.open_exceptions().await.unwrap()[0].id;
        assert!(
            store
                .ignore_exception(id, "ops", "one box, two serial forms")
                .await
                .unwrap()
        );
        let devices = store.devices().await.unwrap();
        let srv = devices.iter().find(|d| d.device_key == "serial:SRV1").unwrap();
        assert!(srv.shares_bmc_mac_with.is_empty());
        assert!(
            crate::reconcile::desired(srv, &rules).map_err(|u| u.kind) != Err("identity_conflict"),
            "the ignored conflict no longer blocks SRV1"
        );
        let other = devices
            .iter()
            .find(|d| d.device_key == "serial:BOARD-77")
            .unwrap();
        assert_eq!(
            crate::reconcile::desired(other, &rules).unwrap_err().kind,
            "identity_conflict"
        );
        // Two systems both reported over Redfish with one (cloned or default) BMC MAC are two
        // devices, not a conflict: DMTF's rackmount1 and tower mockups do exactly this.
        let db2 = TestDb::sqlite();
        let store2 = db2.store().await.unwrap();
        let mut tower = server(Protocol::Redfish, "TWR1", "Tower", "tw-01", bmc);
        tower.identity.as_mut().unwrap().endpoint_key = "redfish://10.0.0.77".into();
        store2
            .commit_batch(&batch_of(
                1,
                vec![
                    server(Protocol::Redfish, "SRV1", "PowerEdge R650", "web-01", bmc),
                    tower,
                ],
            ))
            .await
            .unwrap();
        let both = store2.devices().await.unwrap();
        assert_eq!(both.len(), 2);
        for d in both {
            assert!(d.shares_bmc_mac_with.is_empty(), "{d:?}");
        }
    }

    fn batch(seq: u64, serial: &str, watts: f64) -> Batch {
        testdb::batch(
            "a1",
            "DC1",
            seq,
            vec![DeviceReport {
                identity: Some(DeviceIdentity {
                    serial_number: serial.into(),
                    vendor: "Dell Inc.".into(),
                    endpoint_key: "redfish://10.0.0.9:443".into(),
                    macs: vec![MacAddress {
                        address: "A4-BF-01-28-90-AA".into(),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
                readings: vec![Reading {
                    metric: "power".into(),
                    unit: "W".into(),
                    value: watts,
                    ..Default::default()
                }],
                locations: vec![LocationEvidence {
                    source: LocationSource::RedfishPlacement as i32,
                    rack: "R07".into(),
                    u_position: Some(12),
                    confidence: 0.9,
                    ..Default::default()
                }],
                status: Some(PollStatus {
                    outcome: PollOutcome::Ok as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }],
        )
    }

    async fn duplicate_batch_is_recognised_and_stored_once(t: TestDb) {
        let store = t.store().await.unwrap();
        assert_eq!(
            store.commit_batch(&batch(1, "sn1", 100.0)).await.unwrap(),
            Commit::Committed
        );
        assert_eq!(
            store.commit_batch(&batch(1, "sn1", 999.0)).await.unwrap(),
            Commit::Duplicate
        );
        assert_eq!(
            store.commit_batch(&batch(2, "sn1", 120.0)).await.unwrap(),
            Commit::Committed
        );
        let devices = store.devices().await.unwrap();
        assert_eq!(devices.len(), 1);
        let d = &devices[0];
        assert_eq!((d.device_key.as_str(), d.vendor.as_str()), ("serial:SN1", "Dell"));
        assert_eq!(d.macs[0].0, "a4:bf:01:28:90:aa");
        assert_eq!(d.locations[0].u_position, Some(12));
        assert_eq!(store.batch_count().await.unwrap(), 2);
    }

    /// `devices()` joins MACs, newest power, evidence and switch-port sightings per device
    /// (in bulk, not per device); out-of-order readings do not roll the power back.
    async fn devices_carry_newest_power_and_switch_sightings(t: TestDb) {
        use groundtruth_proto::v1::{TopologyEntry, TopologySource};
        let store = t.store().await.unwrap();
        let now = std::time::SystemTime::now();
        let mut b = batch(1, "sn1", 300.0);
        b.devices[0].readings[0].observed_at = Some(now.into());
        // The same series twice in one report, the second one older: it is history only.
        let mut older = b.devices[0].readings[0].clone();
        older.value = 999.0;
        older.observed_at = Some((now - std::time::Duration::from_secs(30)).into());
        b.devices[0].readings.push(older);
        store.commit_batch(&b).await.unwrap();
        let mut late = batch(2, "sn1", 100.0);
        late.devices[0].readings[0].observed_at = Some((now - std::time::Duration::from_secs(60)).into());
        store.commit_batch(&late).await.unwrap();
        let mut sw = batch(3, "SW9", 50.0);
        let id = sw.devices[0].identity.as_mut().unwrap();
        id.endpoint_key = "snmp://10.0.0.2:161".into();
        id.hostname = "tor-1".into();
        id.macs.clear();
        sw.devices[0].locations.clear();
        sw.devices[0].topology = vec![TopologyEntry {
            source: TopologySource::Fdb as i32,
            local_port: "Ethernet7".into(),
            remote_mac: "a4:bf:01:28:90:aa".into(),
            ..Default::default()
        }];
        store.commit_batch(&sw).await.unwrap();
        let devices = store.devices().await.unwrap();
        let keys: Vec<&str> = devices.iter().map(|d| d.device_key.as_str()).collect();
        assert_eq!(keys, ["serial:SN1", "serial:SW9"]);
        let server = &devices[0];
        assert_eq!(server.power_watts, Some(300.0));
        assert_eq!(server.macs.len(), 1);
        let sources: Vec<&str> = server.locations.iter().map(|l| l.source.as_str()).collect();
        assert_eq!(
            sources,
            ["LOCATION_SOURCE_REDFISH_PLACEMENT", "LOCATION_SOURCE_TOPOLOGY"]
        );
        assert_eq!(server.locations[1].via, "SW9|tor-1|Ethernet7");
        assert_eq!(server.locations[1].raw, "FDB on switch SW9 port Ethernet7");
        assert!(devices[1].macs.is_empty() && devices[1].locations.is_empty());
        assert_eq!(devices[1].power_watts, Some(50.0));
        let history = store
            .readings_since("serial:SN1", "power", now - std::time::Duration::from_secs(3600))
            .await
            .unwrap();
        let values: Vec<f64> = history.iter().map(|r| r.1).collect();
        assert_eq!(values, [100.0, 999.0, 300.0]);
        let latest: Vec<(String, f64)> = store
            .latest_readings()
            .await
            .unwrap()
            .into_iter()
            .map(|l| (l.device_key, l.value))
            .collect();
        assert_eq!(
            latest,
            [("serial:SN1".to_owned(), 300.0), ("serial:SW9".to_owned(), 50.0)]
        );
    }

    #[test]
    fn multi_row_placeholders_are_numbered_across_rows() {
        assert_eq!(
            values_sql(Backend::Postgres, "INSERT INTO t VALUES ", 2, 3, ";"),
            "INSERT INTO t VALUES ($1, $2, $3), ($4, $5, $6);"
        );
        assert_eq!(
            values_sql(Backend::Sqlite, "INSERT INTO t VALUES ", 2, 2, ""),
            "INSERT INTO t VALUES (?, ?), (?, ?)"
        );
    }

    /// A report with more readings than one statement takes (outlet-heavy PDUs) is stored whole.
    async fn readings_beyond_one_statement_are_all_stored(t: TestDb) {
        let store = t.store().await.unwrap();
        let mut b = batch(1, "sn1", 1.0);
        let n = ROWS_PER_STATEMENT * 2 + 7;
        b.devices[0].readings = (0..n)
            .map(|i| Reading {
                metric: "current".into(),
                unit: "A".into(),
                value: i as f64,
                component: Some(groundtruth_proto::v1::Component {
                    kind: groundtruth_proto::v1::ComponentKind::Outlet as i32,
                    index: u32::try_from(i).unwrap(),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .collect();
        store.commit_batch(&b).await.unwrap();
        let raw: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM readings")
            .fetch_one(&store.pool)
            .await
            .unwrap();
        assert_eq!(raw, n as i64);
        let latest = store.latest_readings().await.unwrap();
        assert_eq!(latest.len(), n);
        let sum: f64 = latest.iter().map(|l| l.value).sum();
        assert!((sum - (0..n).map(|i| i as f64).sum::<f64>()).abs() < 1e-6);
    }

    async fn reopening_keeps_data_and_does_not_rerun_migrations(t: TestDb) {
        t.store()
            .await
            .unwrap()
            .commit_batch(&batch(1, "sn1", 1.0))
            .await
            .unwrap();
        let store = t.store().await.unwrap();
        assert_eq!(store.batch_count().await.unwrap(), 1);
        let applied: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM schema_migrations")
            .fetch_one(&store.pool)
            .await
            .unwrap();
        assert_eq!(applied, MIGRATIONS.len() as i64);
    }

    async fn junk_serial_keys_by_endpoint_and_batch_without_agent_is_rejected(t: TestDb) {
        let store = t.store().await.unwrap();
        store
            .commit_batch(&batch(1, "To Be Filled By O.E.M.", 1.0))
            .await
            .unwrap();
        let d = store.devices().await.unwrap();
        assert_eq!(d[0].device_key, "endpoint:a1/redfish://10.0.0.9:443");
        let mut b = batch(2, "x", 1.0);
        b.agent = None;
        assert!(matches!(
            store.commit_batch(&b).await,
            Err(StoreError::Invalid(_))
        ));
    }

    async fn compaction_rolls_old_readings_into_hourly_aggregates(t: TestDb) {
        let store = t.store().await.unwrap();
        let hours_ago =
            |h: u64, m: u64| std::time::SystemTime::now() - std::time::Duration::from_secs(h * 3600 + m * 60);
        let mut seq = 0;
        for (h, m, w) in [(50, 10, 100.0), (50, 20, 300.0), (49, 5, 200.0), (0, 1, 999.0)] {
            seq += 1;
            let mut b = batch(seq, "sn1", w);
            b.devices[0].readings[0].observed_at = Some(hours_ago(h, m).into());
            store.commit_batch(&b).await.unwrap();
        }
        // Keep 24 h raw, 48 h... of hourly: the 50 h-old hour is rolled up and then expired, the
        // 49 h-old one too (both older than 48 h), so use a long hourly retention first.
        let (rolled, expired) = store
            .compact(
                std::time::Duration::from_secs(24 * 3600),
                std::time::Duration::from_secs(400 * 86400),
            )
            .await
            .unwrap();
        assert_eq!((rolled, expired), (3, 0));
        let h = store.hourly("serial:SN1", "power").await.unwrap();
        let stats: Vec<(i64, f64, f64, f64)> = h.iter().map(|x| (x.1, x.2, x.3, x.4)).collect();
        // The two readings 50 h ago may straddle an hour boundary; their totals must hold.
        let total: i64 = stats.iter().map(|s| s.0).sum();
        assert_eq!(total, 3);
        assert!(
            stats.iter().any(|s| s.1 <= 100.0) && stats.iter().any(|s| s.2 >= 300.0),
            "{stats:?}"
        );
        // Compacting again changes nothing (idempotent), the fresh reading stays raw.
        assert_eq!(
            store
                .compact(
                    std::time::Duration::from_secs(24 * 3600),
                    std::time::Duration::from_secs(400 * 86400)
                )
                .await
                .unwrap(),
            (0, 0)
        );
        let raw_left: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM readings")
            .fetch_one(&store.pool)
            .await
            .unwrap();
        assert_eq!(raw_left, 1);
        // A short hourly retention expires the old aggregates.
        let (_, expired) = store
            .compact(
                std::time::Duration::from_secs(24 * 3600),
                std::time::Duration::from_secs(48 * 3600),
            )
            .await
            .unwrap();
        assert_eq!(expired as usize, h.len());
    }

    async fn exceptions_open_once_and_resolve(t: TestDb) {
        let store = t.store().await.unwrap();
        store.raise_exception("k", "no_location", "a").await.unwrap();
        store.raise_exception("k", "no_location", "b").await.unwrap();
        let open = store.open_exceptions().await.unwrap();
        assert_eq!(open.len(), 1);
        assert_eq!(open[0].detail, "b");
        store.resolve_exceptions("k", &[]).await.unwrap();
        assert!(store.open_exceptions().await.unwrap().is_empty());
    }

    async fn an_exception_resolved_by_hand_records_who_and_only_once(t: TestDb) {
        let store = t.store().await.unwrap();
        store.raise_exception("k", "no_location", "a").await.unwrap();
        let id = store.open_exceptions().await.unwrap()[0].id;
        assert!(store.resolve_exception(id, "alice (web UI)").await.unwrap());
        assert!(!store.resolve_exception(id, "bob").await.unwrap());
        assert!(store.open_exceptions().await.unwrap().is_empty());
        let by: String = sqlx::query_scalar("SELECT resolved_by FROM exceptions WHERE id = $1")
            .bind(id)
            .fetch_one(&store.pool)
            .await
            .unwrap();
        assert_eq!(by, "alice (web UI)");
    }

    async fn readings_since_returns_recent_device_level_history(t: TestDb) {
        let store = t.store().await.unwrap();
        let ago = |h: u64| std::time::SystemTime::now() - std::time::Duration::from_secs(h * 3600);
        for (seq, h, w) in [(1, 30, 100.0), (2, 2, 200.0), (3, 1, 300.0)] {
            let mut b = batch(seq, "sn1", w);
            b.devices[0].readings[0].observed_at = Some(ago(h).into());
            store.commit_batch(&b).await.unwrap();
        }
        let got = store
            .readings_since("serial:SN1", "power", ago(24))
            .await
            .unwrap();
        let values: Vec<f64> = got.iter().map(|r| r.1).collect();
        assert_eq!(values, [200.0, 300.0]);
        assert!(store.cmdb_sync_state("serial:SN1").await.unwrap().is_none());
        store.record_sync("serial:SN1", 2, "ok").await.unwrap();
        let s = store.cmdb_sync_state("serial:SN1").await.unwrap().unwrap();
        assert_eq!((s.changes, s.result.as_str()), (2, "ok"));
        assert!(store.u_heights().await.unwrap().is_empty());
    }

    async fn dead_letters_count_failed_passes_and_resolve_when_the_write_succeeds(t: TestDb) {
        let store = t.store().await.unwrap();
        store.dead_letter("k", "PATCH x: HTTP 503").await.unwrap();
        store.dead_letter("k", "PATCH x: HTTP 503").await.unwrap();
        store.dead_letter("j", "POST y: HTTP 500").await.unwrap();
        let open = store.dead_letters().await.unwrap();
        assert_eq!(open.len(), 2);
        assert_eq!((open[0].device_key.as_str(), open[0].attempts), ("k", 2));
        // Still failing: stays open; then a clean pass resolves it.
        assert_eq!(
            store
                .resolve_dead_letters("k", &["PATCH x: HTTP 503"])
                .await
                .unwrap(),
            0
        );
        assert_eq!(store.resolve_dead_letters("k", &[]).await.unwrap(), 1);
        let open = store.dead_letters().await.unwrap();
        assert_eq!(open.len(), 1);
        assert_eq!(open[0].device_key, "j");
        // A new failure after resolution opens a fresh row.
        store.dead_letter("k", "PATCH x: HTTP 503").await.unwrap();
        assert_eq!(store.dead_letters().await.unwrap().len(), 2);
    }

    #[tokio::test]
    async fn sqlite_keeps_wal_and_full_sync_on_every_connection() {
        let t = TestDb::sqlite();
        let store = t.store().await.unwrap();
        assert_eq!(store.backend(), Backend::Sqlite);
        // Several connections at once, so more than the first one is checked.
        let mut held = Vec::new();
        for _ in 0..SQLITE_POOL {
            let mut c = store.pool.acquire().await.unwrap();
            let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
                .fetch_one(&mut *c)
                .await
                .unwrap();
            let sync: i64 = sqlx::query_scalar("PRAGMA synchronous")
                .fetch_one(&mut *c)
                .await
                .unwrap();
            let fk: i64 = sqlx::query_scalar("PRAGMA foreign_keys")
                .fetch_one(&mut *c)
                .await
                .unwrap();
            assert_eq!((mode.as_str(), sync, fk), ("wal", 2, 1));
            held.push(c);
        }
    }

    /// Several collectors on one PostgreSQL database: they start together (migrations under the
    /// advisory lock, each applied once) and commit the same batches concurrently (each stored
    /// once, by the `batches` primary key, never by a read-then-write check).
    #[tokio::test]
    async fn collectors_sharing_postgres_migrate_once_and_commit_each_batch_once() {
        let Some(url) = testdb::pg_url("store::collectors_sharing_postgres") else {
            return;
        };
        let t = TestDb::postgres(&url).await.unwrap();
        let stores: Vec<Store> = futures::future::join_all((0..4).map(|_| t.store()))
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
        assert_eq!(stores[0].backend(), Backend::Postgres);
        let applied: Vec<i64> = sqlx::query_scalar("SELECT version FROM schema_migrations ORDER BY version")
            .fetch_all(&stores[0].pool)
            .await
            .unwrap();
        assert_eq!(applied, MIGRATIONS.iter().map(|m| m.0).collect::<Vec<_>>());
        // Every store commits seq 1..=20 of one agent at the same time, each batch touching the
        // devices in a different order.
        let mut jobs = Vec::new();
        for (i, store) in stores.iter().enumerate() {
            for seq in 1..=20u64 {
                let mut b = batch(seq, &format!("sn{}", (seq + i as u64) % 5), seq as f64);
                let mut other = batch(seq, &format!("sn{}", (seq + 2 + i as u64) % 5), 1.0).devices;
                if i % 2 == 0 {
                    b.devices.append(&mut other);
                } else {
                    other.append(&mut b.devices);
                    b.devices = other;
                }
                jobs.push(async move { store.commit_batch(&b).await });
            }
        }
        let results = futures::future::join_all(jobs).await;
        let committed = results
            .iter()
            .filter(|r| matches!(r, Ok(Commit::Committed)))
            .count();
        let duplicates = results
            .iter()
            .filter(|r| matches!(r, Ok(Commit::Duplicate)))
            .count();
        let errors: Vec<String> = results
            .iter()
            .filter_map(|r| r.as_ref().err().map(ToString::to_string))
            .collect();
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!((committed, duplicates), (20, 60));
        assert_eq!(stores[1].batch_count().await.unwrap(), 20);
        assert_eq!(stores[2].batch_seq_span("a1").await.unwrap(), (20, 20));
        let readings: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM readings")
            .fetch_one(&stores[3].pool)
            .await
            .unwrap();
        assert_eq!(
            readings, 40,
            "two readings per committed batch, none from duplicates"
        );
    }

    /// PostgreSQL going away (here: an in-process TCP proxy in front of the real server that
    /// drops every connection) makes `commit_batch` fail with an error, so the batch is not
    /// acknowledged; when the server is back the pool reconnects and the batch commits once.
    #[tokio::test]
    async fn postgres_outage_is_an_error_then_the_pool_reconnects() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, Ordering};
        let Some(url) = testdb::pg_url("store::postgres_outage") else {
            return;
        };
        let t = TestDb::postgres(&url).await.unwrap();
        let Database::Postgres { url: pg, password } = &t.db else {
            unreachable!()
        };
        let upstream = format!("{}:{}", pg.host_str().unwrap(), pg.port().unwrap_or(5432));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = Arc::new(AtomicBool::new(true));
        let conns: Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>> = Arc::default();
        let (up2, conns2) = (Arc::clone(&up), Arc::clone(&conns));
        let proxy = tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    return;
                };
                if !up2.load(Ordering::SeqCst) {
                    continue; // dropped: connection closed at once
                }
                let upstream = upstream.clone();
                let task = tokio::spawn(async move {
                    if let Ok(mut server) = tokio::net::TcpStream::connect(&upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                conns2.lock().unwrap().push(task.abort_handle());
            }
        });
        let mut via = pg.clone();
        via.set_port(Some(port)).unwrap();
        let db = Database::Postgres {
            url: via,
            password: password.clone(),
        };
        let store = Store::connect(&db).await.unwrap();
        assert_eq!(
            store.commit_batch(&batch(1, "sn1", 1.0)).await.unwrap(),
            Commit::Committed
        );
        up.store(false, Ordering::SeqCst);
        for c in conns.lock().unwrap().drain(..) {
            c.abort();
        }
        let err = store.commit_batch(&batch(2, "sn1", 2.0)).await.unwrap_err();
        assert!(matches!(err, StoreError::Query(_)), "{err}");
        up.store(true, Ordering::SeqCst);
        assert_eq!(
            store.commit_batch(&batch(2, "sn1", 2.0)).await.unwrap(),
            Commit::Committed
        );
        assert_eq!(
            store.commit_batch(&batch(2, "sn1", 2.0)).await.unwrap(),
            Commit::Duplicate
        );
        assert_eq!(store.batch_count().await.unwrap(), 2);
        proxy.abort();
    }

    #[test]
    fn database_setting_parses_paths_and_urls_and_hides_the_password() {
        assert_eq!(
            Database::parse("/var/lib/gt/state.db").unwrap(),
            Database::Sqlite("/var/lib/gt/state.db".into())
        );
        assert_eq!(
            Database::parse("sqlite:///var/lib/gt/state.db").unwrap(),
            Database::Sqlite("/var/lib/gt/state.db".into())
        );
        assert_eq!(
            Database::parse("sqlite:state.db").unwrap(),
            Database::Sqlite("state.db".into())
        );
        let db = Database::parse("postgres://gt:s3cret@db.example:5433/groundtruth?sslmode=require").unwrap();
        let Database::Postgres { url, password } = &db else {
            panic!("{db:?}");
        };
        assert_eq!(password.as_deref(), Some("s3cret"));
        assert_eq!(
            url.as_str(),
            "postgres://gt@db.example:5433/groundtruth?sslmode=require"
        );
        assert!(!format!("{db} {db:?}").contains("s3cret"), "{db:?}");
        for bad in [
            "",
            "postgres://db.example",
            "postgresql:///gt",
            "mysql://h/db",
            "sqlite://",
        ] {
            assert!(Database::parse(bad).is_err(), "{bad}");
        }
    }
}

/// Issue #13's queries (physical context, KPIs, tickets), in their own file.
mod itsm;
mod lease;
mod merge;
pub use itsm::{Attributes, DeliveryRow, KpiPoint, SyncFacts, TicketRow};
pub use lease::{Fence, LeaseHolder};
