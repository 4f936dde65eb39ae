//! The collector's state store: an embedded SQLite database (WAL, `synchronous=FULL`) through
//! sqlx, so the PostgreSQL option (issue #9) can share the query layer.
//!
//! Durability contract: [`Store::commit_batch`] returns only after the batch's transaction is
//! committed to disk; the ingest layer acknowledges a batch to the agent only after that, so an
//! acknowledged batch survives a collector crash. Deduplication is by `(agent_id, epoch, seq)`.

use std::path::Path;
use std::str::FromStr;

use groundtruth_proto::v1::{Batch, DeviceReport, LocationSource, PollOutcome};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};

use crate::normalize;

/// Most topology rows kept per switch report (the agent caps them too).
const MAX_TOPOLOGY_ROWS: usize = 20_000;

/// Schema migrations, applied in order, each once (recorded in `schema_migrations`).
const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../migrations/0001_init.sql")),
    (2, include_str!("../migrations/0002_latest_readings.sql")),
    (3, include_str!("../migrations/0003_readings_hourly.sql")),
    (4, include_str!("../migrations/0004_exception_resolution.sql")),
    (5, include_str!("../migrations/0005_topology.sql")),
    (6, include_str!("../migrations/0006_dead_letters.sql")),
    (7, include_str!("../migrations/0007_cmdb_journal_pending.sql")),
];

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database {path}: {source}")]
    Open { path: String, source: sqlx::Error },
    #[error("database query failed: {0}")]
    Query(#[from] sqlx::Error),
    #[error("batch rejected: {0}")]
    Invalid(String),
}

/// What happened to a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Commit {
    Committed,
    Duplicate,
}

#[derive(Debug, Clone)]
pub struct Store {
    pool: SqlitePool,
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
    match normalize::serial(&id.serial_number) {
        Some(s) => format!("serial:{s}"),
        None => format!("endpoint:{agent_id}/{}", id.endpoint_key),
    }
}

impl Store {
    /// Opens (creating if needed) the database file and applies pending migrations.
    ///
    /// # Errors
    /// If the file cannot be opened or a migration fails.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        let open_err = |source| StoreError::Open {
            path: path.display().to_string(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| open_err(sqlx::Error::Io(e)))?;
        }
        let opts = SqliteConnectOptions::from_str("sqlite://")
            .map_err(open_err)?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(std::time::Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(opts)
            .await
            .map_err(open_err)?;
        let store = Self { pool };
        store.migrate().await?;
        Ok(store)
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        sqlx::query("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)")
            .execute(&self.pool)
            .await?;
        for (version, sql) in MIGRATIONS {
            let done: Option<i64> =
                sqlx::query_scalar("SELECT version FROM schema_migrations WHERE version = ?")
                    .bind(version)
                    .fetch_optional(&self.pool)
                    .await?;
            if done.is_some() {
                continue;
            }
            let mut tx = self.pool.begin().await?;
            sqlx::raw_sql(*sql).execute(&mut *tx).await?;
            sqlx::query("INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)")
                .bind(version)
                .bind(now())
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            tracing::info!(version, "Applied database migration.");
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
        let mut tx = self.pool.begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO batches (agent_id, epoch, seq, agent_site, devices, received_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
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
        for report in &batch.devices {
            Self::upsert_report(&mut tx, report, &agent.agent_id, &agent.site).await?;
        }
        tx.commit().await?;
        Ok(Commit::Committed)
    }

    async fn upsert_report(
        tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
        report: &DeviceReport,
        agent_id: &str,
        agent_site: &str,
    ) -> Result<(), StoreError> {
        use groundtruth_proto::v1::{ComponentKind, DeviceClass, MacRole, Protocol};
        let id = report.identity.clone().unwrap_or_default();
        let key = device_key(report, agent_id);
        let status = report.status.clone().unwrap_or_default();
        let outcome = enum_name(status.outcome, PollOutcome::as_str_name);
        let seen = ts(report.polled_at.as_ref());
        let failed =
            !(status.outcome == PollOutcome::Ok as i32 || status.outcome == PollOutcome::Partial as i32);
        // A failed poll updates only the health columns: it must not blank out the identity.
        let device_id: i64 = if failed {
            sqlx::query_scalar(
                "INSERT INTO devices (device_key, protocol, agent_id, agent_site, endpoint_key, last_outcome, last_message, first_seen, last_seen)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
                 ON CONFLICT (device_key) DO UPDATE SET last_outcome = excluded.last_outcome, last_message = excluded.last_message
                 RETURNING id",
            )
            .bind(&key)
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
            sqlx::query_scalar(
                "INSERT INTO devices (device_key, serial, vendor, model, part_number, sku, firmware, asset_tag, hostname, description,
                                      sys_object_id, uuid, device_class, protocol, agent_id, agent_site, endpoint_key, last_outcome, last_message,
                                      first_seen, last_seen)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                 ON CONFLICT (device_key) DO UPDATE SET
                    serial = excluded.serial, vendor = excluded.vendor, model = excluded.model, part_number = excluded.part_number,
                    sku = excluded.sku, firmware = excluded.firmware, asset_tag = excluded.asset_tag, hostname = excluded.hostname,
                    description = excluded.description, sys_object_id = excluded.sys_object_id, uuid = excluded.uuid,
                    device_class = excluded.device_class, protocol = excluded.protocol, agent_id = excluded.agent_id,
                    agent_site = excluded.agent_site, endpoint_key = excluded.endpoint_key, last_outcome = excluded.last_outcome,
                    last_message = excluded.last_message, last_seen = excluded.last_seen
                 RETURNING id",
            )
            .bind(&key)
            .bind(normalize::serial(&id.serial_number).unwrap_or_default())
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
            .fetch_one(&mut **tx)
            .await?
        };
        if failed {
            return Ok(());
        }
        for mac in &id.macs {
            let Some(address) = groundtruth_proto::mac::canonical(&mac.address) else {
                continue;
            };
            sqlx::query(
                "INSERT INTO device_macs (device_id, address, interface_name, role, last_seen) VALUES (?, ?, ?, ?, ?)
                 ON CONFLICT (device_id, address) DO UPDATE SET interface_name = excluded.interface_name, role = excluded.role, last_seen = excluded.last_seen",
            )
            .bind(device_id)
            .bind(address)
            .bind(&mac.interface_name)
            .bind(enum_name(mac.role, MacRole::as_str_name))
            .bind(&seen)
            .execute(&mut **tx)
            .await?;
        }
        for r in &report.readings {
            if !r.value.is_finite() {
                continue;
            }
            let c = r.component.clone().unwrap_or_default();
            sqlx::query(
                "INSERT INTO readings (device_id, metric, unit, value, observed_at, component_kind, component_index, component_label)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(device_id)
            .bind(&r.metric)
            .bind(&r.unit)
            .bind(r.value)
            .bind(ts(r.observed_at.as_ref()))
            .bind(if r.component.is_some() { enum_name(c.kind, ComponentKind::as_str_name) } else { String::new() })
            .bind(i64::from(c.index))
            .bind(&c.label)
            .execute(&mut **tx)
            .await?;
            sqlx::query(
                "INSERT INTO latest_readings (device_id, metric, unit, component_kind, component_index, component_label, value, observed_at)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?)
                 ON CONFLICT (device_id, metric, unit, component_kind, component_index) DO UPDATE SET
                    component_label = excluded.component_label, value = excluded.value, observed_at = excluded.observed_at
                 WHERE excluded.observed_at >= latest_readings.observed_at",
            )
            .bind(device_id)
            .bind(&r.metric)
            .bind(&r.unit)
            .bind(if r.component.is_some() { enum_name(c.kind, ComponentKind::as_str_name) } else { String::new() })
            .bind(i64::from(c.index))
            .bind(&c.label)
            .bind(r.value)
            .bind(ts(r.observed_at.as_ref()))
            .execute(&mut **tx)
            .await?;
        }
        if !report.topology.is_empty() {
            use groundtruth_proto::v1::TopologySource;
            sqlx::query("DELETE FROM topology WHERE switch_device_id = ?")
                .bind(device_id)
                .execute(&mut **tx)
                .await?;
            for t in report.topology.iter().take(MAX_TOPOLOGY_ROWS) {
                sqlx::query(
                    "INSERT INTO topology (switch_device_id, source, local_port, local_port_index, remote_mac, remote_chassis_id,
                                           remote_system_name, remote_port_id, vlan, observed_at)
                     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
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

    /// All devices with their MACs, latest device-level power and location evidence.
    ///
    /// # Errors
    /// On a database failure.
    pub async fn devices(&self) -> Result<Vec<DeviceRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, device_key, serial, vendor, model, part_number, asset_tag, hostname, protocol, agent_id, agent_site,
                    endpoint_key, last_outcome, last_seen FROM devices ORDER BY device_key",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let id: i64 = r.get("id");
            let macs = sqlx::query(
                "SELECT address, interface_name, role FROM device_macs WHERE device_id = ? ORDER BY address",
            )
            .bind(id)
            .fetch_all(&self.pool)
            .await?
            .into_iter()
            .map(|m| (m.get("address"), m.get("interface_name"), m.get("role")))
            .collect();
            let power_watts: Option<f64> = sqlx::query_scalar(
                "SELECT value FROM readings WHERE device_id = ? AND metric = 'power' AND unit = 'W' AND component_kind = ''
                 ORDER BY observed_at DESC LIMIT 1",
            )
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
            let locations: Vec<EvidenceRow> = sqlx::query(
                "SELECT source, site, room, row_name, rack, u_position, confidence, raw FROM location_evidence WHERE device_id = ?
                 ORDER BY confidence DESC",
            )
            .bind(id)
            .fetch_all(&self.pool)
            .await?
            .into_iter()
            .map(|l| EvidenceRow {
                via: String::new(),
                source: l.get("source"),
                site: l.get("site"),
                room: l.get("room"),
                row: l.get("row_name"),
                rack: l.get("rack"),
                u_position: l.get::<Option<i64>, _>("u_position").and_then(|u| u32::try_from(u).ok()),
                confidence: l.get("confidence"),
                raw: l.get("raw"),
            })
            .collect();
            let mut locations = locations;
            // Where the switches saw this device's MACs (FDB rows, or LLDP chassis ids).
            let seen_on = sqlx::query(
                "SELECT DISTINCT sw.serial AS switch_serial, sw.hostname AS switch_name, t.local_port, t.source
                 FROM device_macs m
                 JOIN topology t ON (t.remote_mac = m.address OR t.remote_chassis_id = m.address)
                 JOIN devices sw ON sw.id = t.switch_device_id
                 WHERE m.device_id = ? AND sw.id != ? AND t.local_port != ''",
            )
            .bind(id)
            .bind(id)
            .fetch_all(&self.pool)
            .await?;
            for t in seen_on {
                let (serial, name, port): (String, String, String) =
                    (t.get("switch_serial"), t.get("switch_name"), t.get("local_port"));
                locations.push(EvidenceRow {
                    source: "LOCATION_SOURCE_TOPOLOGY".into(),
                    raw: format!(
                        "{} on switch {} port {port}",
                        t.get::<String, _>("source")
                            .trim_start_matches("TOPOLOGY_SOURCE_"),
                        if serial.is_empty() { &name } else { &serial }
                    ),
                    via: format!("{serial}|{name}|{port}"),
                    confidence: 0.7,
                    ..Default::default()
                });
            }
            out.push(DeviceRow {
                device_key: r.get("device_key"),
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
                macs,
                power_watts,
                locations,
            });
        }
        Ok(out)
    }

    /// Opens (or refreshes) an exception; one open row per (device, kind).
    ///
    /// # Errors
    /// On a database failure.
    pub async fn raise_exception(
        &self,
        device_key: &str,
        kind: &str,
        detail: &str,
    ) -> Result<(), StoreError> {
        let t = now();
        sqlx::query(
            "INSERT INTO exceptions (device_key, kind, detail, first_seen, last_seen) VALUES (?, ?, ?, ?, ?)
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
            sqlx::query("SELECT id, kind FROM exceptions WHERE device_key = ? AND resolved_at IS NULL")
                .bind(device_key)
                .fetch_all(&self.pool)
                .await?;
        for r in rows {
            let kind: String = r.get("kind");
            if !still_open.contains(&kind.as_str()) {
                sqlx::query("UPDATE exceptions SET resolved_at = ? WHERE id = ?")
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
            .into_iter()
            .map(|r| ExceptionRow {
                id: r.get("id"),
                device_key: r.get("device_key"),
                kind: r.get("kind"),
                detail: r.get("detail"),
                first_seen: r.get("first_seen"),
                last_seen: r.get("last_seen"),
            })
            .collect())
    }

    /// Marks one open exception resolved by hand, recording who and when. Returns false when
    /// there is no such open exception (unknown id, or already resolved).
    ///
    /// # Errors
    /// On a database failure.
    pub async fn resolve_exception(&self, id: i64, by: &str) -> Result<bool, StoreError> {
        Ok(sqlx::query(
            "UPDATE exceptions SET resolved_at = ?, resolved_by = ? WHERE id = ? AND resolved_at IS NULL",
        )
        .bind(now())
        .bind(by)
        .bind(id)
        .execute(&self.pool)
        .await?
        .rows_affected()
            == 1)
    }

    /// The last CMDB sync outcome of a device, if it was ever synced.
    ///
    /// # Errors
    /// On a database failure.
    pub async fn cmdb_sync_state(&self, device_key: &str) -> Result<Option<SyncRow>, StoreError> {
        Ok(
            sqlx::query("SELECT last_sync, changes, result FROM cmdb_sync WHERE device_key = ?")
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
             WHERE d.device_key = ? AND r.metric = ? AND r.component_kind = '' AND r.observed_at >= ?
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
            "INSERT INTO dead_letters (device_key, reason, attempts, first_failed, last_failed) VALUES (?, ?, 1, ?, ?)
             ON CONFLICT (device_key, reason) WHERE resolved_at IS NULL DO UPDATE SET attempts = attempts + 1, last_failed = excluded.last_failed",
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
            sqlx::query("SELECT id, reason FROM dead_letters WHERE device_key = ? AND resolved_at IS NULL")
                .bind(device_key)
                .fetch_all(&self.pool)
                .await?;
        let mut n = 0;
        for r in rows {
            let reason: String = r.get("reason");
            if !still_failing.contains(&reason.as_str()) {
                sqlx::query("UPDATE dead_letters SET resolved_at = ? WHERE id = ?")
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
            "INSERT INTO cmdb_sync (device_key, last_sync, changes, result) VALUES (?, ?, ?, ?)
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
             WHERE agent_id = ?1 AND epoch = (SELECT MAX(epoch) FROM batches WHERE agent_id = ?1)",
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
             FROM readings WHERE observed_at < ?1
             GROUP BY device_id, metric, unit, component_kind, component_index, substr(observed_at, 1, 13)
             ON CONFLICT (device_id, metric, unit, component_kind, component_index, hour) DO UPDATE SET
                samples = readings_hourly.samples + excluded.samples,
                min_value = MIN(readings_hourly.min_value, excluded.min_value),
                max_value = MAX(readings_hourly.max_value, excluded.max_value),
                sum_value = readings_hourly.sum_value + excluded.sum_value",
        )
        .bind(&raw_cut)
        .execute(&mut *tx)
        .await?;
        let rolled = sqlx::query("DELETE FROM readings WHERE observed_at < ?1")
            .bind(&raw_cut)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        let expired = sqlx::query("DELETE FROM readings_hourly WHERE hour < substr(?1, 1, 13)")
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
             WHERE d.device_key = ? AND h.metric = ? AND h.component_kind = '' ORDER BY h.hour",
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
            "SELECT marker, device_key, serial, object_id, comments FROM cmdb_journal_pending ORDER BY recorded_at, marker",
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
        })
        .collect())
    }

    /// Inserts or replaces journal entries (by marker), in one transaction.
    ///
    /// # Errors
    /// On a database failure.
    pub async fn journal_record(&self, entries: &[crate::cmdb::PendingJournal]) -> Result<(), StoreError> {
        if entries.is_empty() {
            return Ok(());
        }
        let t = now();
        let mut tx = self.pool.begin().await?;
        for e in entries {
            sqlx::query(
                "INSERT INTO cmdb_journal_pending (marker, device_key, serial, object_id, comments, recorded_at)
                 VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (marker) DO UPDATE SET object_id = COALESCE(excluded.object_id, cmdb_journal_pending.object_id),
                 comments = excluded.comments",
            )
            .bind(&e.marker)
            .bind(&e.device_key)
            .bind(&e.serial)
            .bind(e.object_id.and_then(|v| i64::try_from(v).ok()))
            .bind(&e.comments)
            .bind(&t)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Removes journal entries the CMDB now has.
    ///
    /// # Errors
    /// On a database failure.
    pub async fn journal_written(&self, markers: &[String]) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        for m in markers {
            sqlx::query("DELETE FROM cmdb_journal_pending WHERE marker = $1")
                .bind(m)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use groundtruth_proto::v1::{
        AgentInfo, DeviceIdentity, LocationEvidence, MacAddress, PollStatus, Reading,
    };

    fn batch(seq: u64, serial: &str, watts: f64) -> Batch {
        Batch {
            agent: Some(AgentInfo {
                agent_id: "a1".into(),
                site: "DC1".into(),
                ..Default::default()
            }),
            epoch: 1,
            seq,
            devices: vec![DeviceReport {
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
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn duplicate_batch_is_recognised_and_stored_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.db")).await.unwrap();
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

    #[tokio::test]
    async fn reopening_keeps_data_and_does_not_rerun_migrations() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        Store::open(&path)
            .await
            .unwrap()
            .commit_batch(&batch(1, "sn1", 1.0))
            .await
            .unwrap();
        let store = Store::open(&path).await.unwrap();
        assert_eq!(store.batch_count().await.unwrap(), 1);
    }

    #[tokio::test]
    async fn junk_serial_keys_by_endpoint_and_batch_without_agent_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.db")).await.unwrap();
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

    #[tokio::test]
    async fn compaction_rolls_old_readings_into_hourly_aggregates() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.db")).await.unwrap();
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

    #[tokio::test]
    async fn exceptions_open_once_and_resolve() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.db")).await.unwrap();
        store.raise_exception("k", "no_location", "a").await.unwrap();
        store.raise_exception("k", "no_location", "b").await.unwrap();
        let open = store.open_exceptions().await.unwrap();
        assert_eq!(open.len(), 1);
        assert_eq!(open[0].detail, "b");
        store.resolve_exceptions("k", &[]).await.unwrap();
        assert!(store.open_exceptions().await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn an_exception_resolved_by_hand_records_who_and_only_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.db")).await.unwrap();
        store.raise_exception("k", "no_location", "a").await.unwrap();
        let id = store.open_exceptions().await.unwrap()[0].id;
        assert!(store.resolve_exception(id, "alice (web UI)").await.unwrap());
        assert!(!store.resolve_exception(id, "bob").await.unwrap());
        assert!(store.open_exceptions().await.unwrap().is_empty());
        let by: String = sqlx::query_scalar("SELECT resolved_by FROM exceptions WHERE id = ?")
            .bind(id)
            .fetch_one(&store.pool)
            .await
            .unwrap();
        assert_eq!(by, "alice (web UI)");
    }

    #[tokio::test]
    async fn readings_since_returns_recent_device_level_history() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.db")).await.unwrap();
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

    #[tokio::test]
    async fn dead_letters_count_failed_passes_and_resolve_when_the_write_succeeds() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.db")).await.unwrap();
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
}
