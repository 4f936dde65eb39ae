//! Store functions of the integration-health, ticketing and physical-context features (issue
//! #13), kept apart from the ingest queries. `$N` placeholders and portable SQL, so the same
//! text runs on SQLite and PostgreSQL.

use sqlx::Row;

use super::{Store, StoreError, now};

/// One stored KPI value.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct KpiPoint {
    pub kpi: String,
    pub label: String,
    pub computed_at: String,
    pub value: f64,
}

/// Facts about the store the KPIs are computed from (one query each, no history scan).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct SyncFacts {
    /// (device key, result of its last CMDB sync: `ok`, `blocked by exception`, `failed: …`).
    pub results: Vec<(String, String)>,
    /// (device key, last sync time) for every synced device.
    pub last_sync: Vec<(String, String)>,
    /// Open dead letters and the failed passes they count.
    pub dead_letters: u64,
    pub dead_letter_attempts: u64,
}

impl Store {
    /// Records the CMDB id of a device (replacing an older one).
    ///
    /// # Errors
    /// On a database failure.
    pub async fn link_cmdb(&self, device_key: &str, cmdb_id: &str) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO cmdb_links (device_key, cmdb_id, linked_at) VALUES ($1, $2, $3)
             ON CONFLICT (device_key) DO UPDATE SET cmdb_id = excluded.cmdb_id, linked_at = excluded.linked_at",
        )
        .bind(device_key)
        .bind(cmdb_id)
        .bind(now())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Forgets a device's CMDB id; true when it had one.
    ///
    /// # Errors
    /// On a database failure.
    pub async fn unlink_cmdb(&self, device_key: &str) -> Result<bool, StoreError> {
        Ok(sqlx::query("DELETE FROM cmdb_links WHERE device_key = $1")
            .bind(device_key)
            .execute(&self.pool)
            .await?
            .rows_affected()
            > 0)
    }

    /// Every known CMDB link as (device key, CMDB id).
    ///
    /// # Errors
    /// On a database failure.
    pub async fn cmdb_links(&self) -> Result<Vec<(String, String)>, StoreError> {
        Ok(
            sqlx::query("SELECT device_key, cmdb_id FROM cmdb_links ORDER BY device_key")
                .fetch_all(&self.pool)
                .await?
                .into_iter()
                .map(|r| (r.get("device_key"), r.get("cmdb_id")))
                .collect(),
        )
    }

    /// Replaces the CMDB devices in the collector's sites that match no stored device (migration
    /// 0011), in one transaction.
    ///
    /// # Errors
    /// On a database failure.
    pub async fn replace_cmdb_not_seen(&self, rows: &[crate::context::NotSeen]) -> Result<(), StoreError> {
        let t = now();
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM cmdb_not_seen").execute(&mut *tx).await?;
        for r in rows {
            sqlx::query(
                "INSERT INTO cmdb_not_seen (cmdb_id, site, name, serial, checked_at) VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (cmdb_id) DO NOTHING",
            )
            .bind(&r.cmdb_id)
            .bind(&r.site)
            .bind(&r.name)
            .bind(&r.serial)
            .bind(&t)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The CMDB devices the last refresh found in the collector's sites matching no stored device.
    ///
    /// # Errors
    /// On a database failure.
    pub async fn cmdb_not_seen(&self) -> Result<Vec<crate::context::NotSeen>, StoreError> {
        Ok(
            sqlx::query("SELECT cmdb_id, site, name, serial FROM cmdb_not_seen ORDER BY site, name, cmdb_id")
                .fetch_all(&self.pool)
                .await?
                .into_iter()
                .map(|r| crate::context::NotSeen {
                    cmdb_id: r.get("cmdb_id"),
                    site: r.get("site"),
                    name: r.get("name"),
                    serial: r.get("serial"),
                })
                .collect(),
        )
    }

    /// Appends one computation of the KPIs (all rows share `computed_at`).
    ///
    /// # Errors
    /// On a database failure.
    pub async fn record_kpis(&self, points: &[KpiPoint]) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        for p in points {
            sqlx::query(
                "INSERT INTO kpi_history (kpi, label, computed_at, value) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (kpi, label, computed_at) DO UPDATE SET value = excluded.value",
            )
            .bind(&p.kpi)
            .bind(&p.label)
            .bind(&p.computed_at)
            .bind(p.value)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// KPI history computed at or after `since` (RFC 3339), oldest first.
    ///
    /// # Errors
    /// On a database failure.
    pub async fn kpi_history(&self, since: &str) -> Result<Vec<KpiPoint>, StoreError> {
        Ok(sqlx::query(
            "SELECT kpi, label, computed_at, value FROM kpi_history WHERE computed_at >= $1
             ORDER BY kpi, label, computed_at",
        )
        .bind(since)
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .map(|r| KpiPoint {
            kpi: r.get("kpi"),
            label: r.get("label"),
            computed_at: r.get("computed_at"),
            value: r.get("value"),
        })
        .collect())
    }

    /// Deletes KPI history older than `before` (RFC 3339); returns the rows deleted.
    ///
    /// # Errors
    /// On a database failure.
    pub async fn expire_kpis(&self, before: &str) -> Result<u64, StoreError> {
        Ok(sqlx::query("DELETE FROM kpi_history WHERE computed_at < $1")
            .bind(before)
            .execute(&self.pool)
            .await?
            .rows_affected())
    }

    /// What the CMDB sync and the dead letters say, for the KPIs.
    ///
    /// # Errors
    /// On a database failure.
    pub async fn sync_facts(&self) -> Result<SyncFacts, StoreError> {
        let rows = sqlx::query("SELECT device_key, last_sync, result FROM cmdb_sync ORDER BY device_key")
            .fetch_all(&self.pool)
            .await?;
        let mut f = SyncFacts::default();
        for r in rows {
            f.results.push((r.get("device_key"), r.get("result")));
            f.last_sync.push((r.get("device_key"), r.get("last_sync")));
        }
        let dl = sqlx::query(
            "SELECT COUNT(*) AS n, CAST(COALESCE(SUM(attempts), 0) AS BIGINT) AS a FROM dead_letters WHERE resolved_at IS NULL",
        )
        .fetch_one(&self.pool)
        .await?;
        f.dead_letters = u64::try_from(dl.get::<i64, _>("n")).unwrap_or(0);
        f.dead_letter_attempts = u64::try_from(dl.get::<i64, _>("a")).unwrap_or(0);
        Ok(f)
    }
}

/// A ticket as stored.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct TicketRow {
    pub id: i64,
    pub dedupe_key: String,
    pub rule: String,
    pub kind: String,
    pub subject: String,
    pub summary: String,
    pub evidence: String,
    pub opened_at: String,
    pub updated_at: String,
    pub updates: i64,
    pub resolved_at: Option<String>,
}

/// One pending delivery of a ticket event to a sink.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct DeliveryRow {
    pub id: i64,
    pub ticket_id: i64,
    pub sink: String,
    pub action: String,
    pub payload: String,
    pub attempts: i64,
    pub next_attempt_at: String,
}

fn ticket(r: &sqlx::any::AnyRow) -> TicketRow {
    TicketRow {
        id: r.get("id"),
        dedupe_key: r.get("dedupe_key"),
        rule: r.get("rule"),
        kind: r.get("kind"),
        subject: r.get("subject"),
        summary: r.get("summary"),
        evidence: r.get("evidence"),
        opened_at: r.get("opened_at"),
        updated_at: r.get("updated_at"),
        updates: r.get("updates"),
        resolved_at: r.get("resolved_at"),
    }
}

impl Store {
    /// Open tickets, oldest first.
    ///
    /// # Errors
    /// On a database failure.
    pub async fn open_tickets(&self) -> Result<Vec<TicketRow>, StoreError> {
        Ok(sqlx::query(
            "SELECT id, dedupe_key, rule, kind, subject, summary, evidence, opened_at, updated_at, updates, resolved_at
             FROM tickets WHERE resolved_at IS NULL ORDER BY opened_at, id",
        )
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(ticket)
        .collect())
    }

    /// Every ticket (open and resolved), oldest first.
    ///
    /// # Errors
    /// On a database failure.
    pub async fn all_tickets(&self) -> Result<Vec<TicketRow>, StoreError> {
        Ok(
            sqlx::query(
                "SELECT id, dedupe_key, rule, kind, subject, summary, evidence, opened_at, updated_at, updates, resolved_at
                 FROM tickets ORDER BY opened_at, id",
            )
                .fetch_all(&self.pool)
                .await?
                .iter()
                .map(ticket)
                .collect(),
        )
    }

    /// Tickets opened at or after `since` (for the rate limit).
    ///
    /// # Errors
    /// On a database failure.
    pub async fn tickets_opened_since(&self, since: &str) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM tickets WHERE opened_at >= $1")
            .bind(since)
            .fetch_one(&self.pool)
            .await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// Opens a ticket and queues its `open` event for every sink, in one transaction.
    ///
    /// # Errors
    /// On a database failure (including a second open ticket for the same key).
    #[allow(clippy::too_many_arguments)]
    pub async fn open_ticket(
        &self,
        t: &TicketRow,
        sinks: &[&str],
        payload: &(dyn Fn(i64) -> String + Sync),
    ) -> Result<i64, StoreError> {
        let mut tx = self.pool.begin().await?;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO tickets (dedupe_key, rule, kind, subject, summary, evidence, opened_at, updated_at, updates)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $7, 0) RETURNING id",
        )
        .bind(&t.dedupe_key)
        .bind(&t.rule)
        .bind(&t.kind)
        .bind(&t.subject)
        .bind(&t.summary)
        .bind(&t.evidence)
        .bind(&t.opened_at)
        .fetch_one(&mut *tx)
        .await?;
        for s in sinks {
            queue(&mut tx, id, s, "open", &payload(id), &t.opened_at).await?;
        }
        tx.commit().await?;
        Ok(id)
    }

    /// Records an update (the new summary/evidence in `t`) or a resolution of ticket `t.id` and
    /// queues the event for every sink.
    ///
    /// # Errors
    /// On a database failure.
    pub async fn ticket_event(
        &self,
        t: &TicketRow,
        action: &str,
        at: &str,
        sinks: &[&str],
        payload: &str,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        let sql = if action == "resolve" {
            "UPDATE tickets SET summary = $1, evidence = $2, updated_at = $3, resolved_at = $3 WHERE id = $4"
        } else {
            "UPDATE tickets SET summary = $1, evidence = $2, updated_at = $3, updates = updates + 1 WHERE id = $4"
        };
        sqlx::query(sql)
            .bind(&t.summary)
            .bind(&t.evidence)
            .bind(at)
            .bind(t.id)
            .execute(&mut *tx)
            .await?;
        for s in sinks {
            queue(&mut tx, t.id, s, action, payload, at).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Deliveries due at `now` (not delivered, not dead), oldest first.
    ///
    /// # Errors
    /// On a database failure.
    pub async fn due_deliveries(&self, now: &str) -> Result<Vec<DeliveryRow>, StoreError> {
        Ok(sqlx::query(
            "SELECT id, ticket_id, sink, action, payload, attempts, next_attempt_at FROM ticket_deliveries
             WHERE delivered_at IS NULL AND dead_at IS NULL AND next_attempt_at <= $1 ORDER BY id",
        )
        .bind(now)
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .map(|r| DeliveryRow {
            id: r.get("id"),
            ticket_id: r.get("ticket_id"),
            sink: r.get("sink"),
            action: r.get("action"),
            payload: r.get("payload"),
            attempts: r.get("attempts"),
            next_attempt_at: r.get("next_attempt_at"),
        })
        .collect())
    }

    /// Whether an earlier event of the same ticket and sink is still undelivered (events go in
    /// order: an update cannot precede its ticket's creation).
    ///
    /// # Errors
    /// On a database failure.
    pub async fn delivery_blocked(&self, d: &DeliveryRow) -> Result<bool, StoreError> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM ticket_deliveries WHERE ticket_id = $1 AND sink = $2 AND id < $3 AND delivered_at IS NULL",
        )
        .bind(d.ticket_id)
        .bind(&d.sink)
        .bind(d.id)
        .fetch_one(&self.pool)
        .await?;
        Ok(n > 0)
    }

    /// Marks a delivery done (and records the external id the sink gave the ticket, if any).
    ///
    /// # Errors
    /// On a database failure.
    pub async fn delivered(&self, d: &DeliveryRow, external_id: Option<&str>) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("UPDATE ticket_deliveries SET delivered_at = $1, attempts = attempts + 1, last_error = '' WHERE id = $2")
            .bind(now())
            .bind(d.id)
            .execute(&mut *tx)
            .await?;
        if let Some(x) = external_id {
            sqlx::query(
                "INSERT INTO ticket_refs (ticket_id, sink, external_id) VALUES ($1, $2, $3)
                 ON CONFLICT (ticket_id, sink) DO UPDATE SET external_id = excluded.external_id",
            )
            .bind(d.ticket_id)
            .bind(&d.sink)
            .bind(x)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Records a failed attempt: retried at `next_attempt_at`, or dead when that is `None`.
    ///
    /// # Errors
    /// On a database failure.
    pub async fn delivery_failed(
        &self,
        d: &DeliveryRow,
        error: &str,
        next_attempt_at: Option<&str>,
    ) -> Result<(), StoreError> {
        let t = now();
        match next_attempt_at {
            Some(next) => {
                sqlx::query(
                    "UPDATE ticket_deliveries SET attempts = attempts + 1, last_error = $1, next_attempt_at = $2 WHERE id = $3",
                )
                .bind(error)
                .bind(next)
                .bind(d.id)
                .execute(&self.pool)
                .await?;
            }
            None => {
                sqlx::query("UPDATE ticket_deliveries SET attempts = attempts + 1, last_error = $1, dead_at = $2 WHERE id = $3")
                    .bind(error)
                    .bind(&t)
                    .bind(d.id)
                    .execute(&self.pool)
                    .await?;
            }
        }
        Ok(())
    }

    /// The external id a sink gave a ticket.
    ///
    /// # Errors
    /// On a database failure.
    pub async fn ticket_ref(&self, ticket_id: i64, sink: &str) -> Result<Option<String>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT external_id FROM ticket_refs WHERE ticket_id = $1 AND sink = $2")
                .bind(ticket_id)
                .bind(sink)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    /// Deliveries per state for the KPIs and tests: (delivered, pending, dead).
    ///
    /// # Errors
    /// On a database failure.
    pub async fn delivery_counts(&self) -> Result<(u64, u64, u64), StoreError> {
        let r = sqlx::query(
            "SELECT COALESCE(SUM(CASE WHEN delivered_at IS NOT NULL THEN 1 ELSE 0 END), 0) AS done,
                    COALESCE(SUM(CASE WHEN delivered_at IS NULL AND dead_at IS NULL THEN 1 ELSE 0 END), 0) AS pending,
                    COALESCE(SUM(CASE WHEN dead_at IS NOT NULL THEN 1 ELSE 0 END), 0) AS dead
             FROM ticket_deliveries",
        )
        .fetch_one(&self.pool)
        .await?;
        let n = |c: &str| u64::try_from(r.get::<i64, _>(c)).unwrap_or(0);
        Ok((n("done"), n("pending"), n("dead")))
    }
}

async fn queue(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    ticket_id: i64,
    sink: &str,
    action: &str,
    payload: &str,
    at: &str,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO ticket_deliveries (ticket_id, sink, action, payload, attempts, created_at, next_attempt_at)
         VALUES ($1, $2, $3, $4, 0, $5, $5)",
    )
    .bind(ticket_id)
    .bind(sink)
    .bind(action)
    .bind(payload)
    .bind(at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Device key → attribute name → (value, observed at).
pub type Attributes = std::collections::HashMap<String, std::collections::BTreeMap<String, (String, String)>>;

/// Most attributes kept per device (a device cannot grow the table without bound).
const MAX_ATTRIBUTES: usize = 256;
/// Longest attribute name or value kept, in bytes.
const MAX_ATTRIBUTE_LEN: usize = 1024;

impl Store {
    /// Records the identity attributes of a committed batch's devices: each report carrying
    /// attributes replaces its device's set (at most 256, names and values at most 1 KiB).
    ///
    /// # Errors
    /// On a database failure.
    pub async fn record_attributes(&self, batch: &groundtruth_proto::v1::Batch) -> Result<(), StoreError> {
        let agent_id = batch
            .agent
            .as_ref()
            .map(|a| a.agent_id.as_str())
            .unwrap_or_default();
        let at = now();
        let mut tx = self.pool.begin().await?;
        for report in &batch.devices {
            let Some(id) = &report.identity else { continue };
            if id.attributes.is_empty() {
                continue;
            }
            let key = super::device_key(report, agent_id);
            sqlx::query("DELETE FROM device_attributes WHERE device_key = $1")
                .bind(&key)
                .execute(&mut *tx)
                .await?;
            let mut attrs: Vec<(&String, &String)> = id.attributes.iter().collect();
            attrs.sort();
            for (name, value) in attrs
                .into_iter()
                .filter(|(n, v)| n.len() <= MAX_ATTRIBUTE_LEN && v.len() <= MAX_ATTRIBUTE_LEN)
                .take(MAX_ATTRIBUTES)
            {
                sqlx::query("INSERT INTO device_attributes (device_key, name, value, observed_at) VALUES ($1, $2, $3, $4)")
                    .bind(&key)
                    .bind(name)
                    .bind(value)
                    .bind(&at)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }

    /// Every device's attributes: device key → name → (value, observed at).
    ///
    /// # Errors
    /// On a database failure.
    pub async fn device_attributes(&self) -> Result<Attributes, StoreError> {
        let mut out = Attributes::new();
        for r in sqlx::query(
            "SELECT device_key, name, value, observed_at FROM device_attributes ORDER BY device_key, name",
        )
        .fetch_all(&self.pool)
        .await?
        {
            out.entry(r.get("device_key"))
                .or_default()
                .insert(r.get("name"), (r.get("value"), r.get("observed_at")));
        }
        Ok(out)
    }
}
