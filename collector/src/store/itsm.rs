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
            "SELECT COUNT(*) AS n, COALESCE(SUM(attempts), 0) AS a FROM dead_letters WHERE resolved_at IS NULL",
        )
        .fetch_one(&self.pool)
        .await?;
        f.dead_letters = u64::try_from(dl.get::<i64, _>("n")).unwrap_or(0);
        f.dead_letter_attempts = u64::try_from(dl.get::<i64, _>("a")).unwrap_or(0);
        Ok(f)
    }
}
