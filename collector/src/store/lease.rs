//! Leases on singleton work (issue #22), kept in the store so that every process and host on one
//! database sees the same one: at most one holder per name until its lease expires. Times are the
//! database's clock, so collectors on hosts whose clocks differ still agree on who holds a lease.
//! Each acquisition increments the row's `token` (rows are never deleted): a write checked
//! against `(holder, token)` cannot be made by a holder whose lease another has since taken.
//! The policy around it (renewal, waiting, local liveness) is in [`crate::lease`].

use sqlx::Row;

use super::{Backend, Store, StoreError, now};

/// One acquisition of a lease: what a fenced write is checked against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    pub name: String,
    pub holder: String,
    pub token: i64,
}

/// Who holds a lease, as the database says.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LeaseHolder {
    pub holder: String,
    pub token: i64,
    /// Milliseconds until it expires by the database's clock (≤ 0: expired).
    pub expires_in_ms: i64,
    pub acquired_at: String,
}

impl LeaseHolder {
    /// Whether the lease is still in force.
    #[must_use]
    pub fn live(&self) -> bool {
        self.expires_in_ms > 0
    }
}

/// The database's clock in milliseconds since the Unix epoch, as an SQL expression.
fn db_now_ms(backend: Backend) -> &'static str {
    match backend {
        Backend::Sqlite => "CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)",
        Backend::Postgres => "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)",
    }
}

fn ttl_ms(ttl: std::time::Duration) -> i64 {
    i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX / 2)
}

impl Store {
    /// Takes lease `name` for `holder` for `ttl` when it is free, expired, already `holder`'s,
    /// or held by `displace` (a holder the caller has proved dead). Returns the new fencing
    /// token, or `None` when someone else holds it. Atomic: of two callers racing, one wins.
    ///
    /// # Errors
    /// On a database failure.
    pub async fn lease_acquire(
        &self,
        name: &str,
        holder: &str,
        ttl: std::time::Duration,
        displace: Option<&str>,
    ) -> Result<Option<i64>, StoreError> {
        let now_ms = db_now_ms(self.backend);
        // Only the clock expression is spliced in: a constant per back end.
        let sql = format!(
            "INSERT INTO leases (name, holder, token, expires_ms, acquired_at) VALUES ($1, $2, 1, {now_ms} + $3, $4)
             ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, token = leases.token + 1,
                 expires_ms = excluded.expires_ms, acquired_at = excluded.acquired_at
             WHERE leases.expires_ms <= {now_ms} OR leases.holder = excluded.holder OR leases.holder = $5"
        );
        let done = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(name)
            .bind(holder)
            .bind(ttl_ms(ttl))
            .bind(now())
            .bind(displace.unwrap_or(""))
            .execute(&self.pool)
            .await?
            .rows_affected();
        if done == 0 {
            return Ok(None);
        }
        Ok(
            sqlx::query_scalar("SELECT token FROM leases WHERE name = $1 AND holder = $2")
                .bind(name)
                .bind(holder)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    /// Extends `fence`'s lease to `ttl` from now; false when it is no longer `fence`'s (expired
    /// and taken, or expired: an expired lease is not revived, another may be waiting for it).
    ///
    /// # Errors
    /// On a database failure.
    pub async fn lease_renew(&self, fence: &Fence, ttl: std::time::Duration) -> Result<bool, StoreError> {
        let now_ms = db_now_ms(self.backend);
        // Only the clock expression is spliced in: a constant per back end.
        let sql = format!(
            "UPDATE leases SET expires_ms = {now_ms} + $4
             WHERE name = $1 AND holder = $2 AND token = $3 AND expires_ms > {now_ms}"
        );
        Ok(sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(&fence.name)
            .bind(&fence.holder)
            .bind(fence.token)
            .bind(ttl_ms(ttl))
            .execute(&self.pool)
            .await?
            .rows_affected()
            == 1)
    }

    /// Gives the lease up at once (the next taker need not wait for it to expire).
    ///
    /// # Errors
    /// On a database failure.
    pub async fn lease_release(&self, fence: &Fence) -> Result<(), StoreError> {
        sqlx::query("UPDATE leases SET expires_ms = 0 WHERE name = $1 AND holder = $2 AND token = $3")
            .bind(&fence.name)
            .bind(&fence.holder)
            .bind(fence.token)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Who holds lease `name` (also when expired), if it was ever taken.
    ///
    /// # Errors
    /// On a database failure.
    pub async fn lease_holder(&self, name: &str) -> Result<Option<LeaseHolder>, StoreError> {
        let now_ms = db_now_ms(self.backend);
        // Only the clock expression is spliced in: a constant per back end.
        let sql = format!(
            "SELECT holder, token, expires_ms - {now_ms} AS expires_in, acquired_at FROM leases WHERE name = $1"
        );
        Ok(sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(name)
            .fetch_optional(&self.pool)
            .await?
            .map(|r| LeaseHolder {
                holder: r.get("holder"),
                token: r.get("token"),
                expires_in_ms: r.get("expires_in"),
                acquired_at: r.get("acquired_at"),
            }))
    }

    /// Fails with [`StoreError::Fenced`] unless `fence` still holds its lease, inside `tx`: the
    /// transaction's writes then commit only under a live lease.
    pub(super) async fn fence_check(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        fence: &Fence,
    ) -> Result<(), StoreError> {
        let now_ms = db_now_ms(self.backend);
        // Only the clock expression is spliced in: a constant per back end.
        let sql = format!(
            "SELECT token FROM leases WHERE name = $1 AND holder = $2 AND token = $3 AND expires_ms > {now_ms}"
        );
        let held: Option<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .bind(&fence.name)
            .bind(&fence.holder)
            .bind(fence.token)
            .fetch_optional(&mut **tx)
            .await?;
        if held.is_some() {
            return Ok(());
        }
        Err(StoreError::Fenced(format!(
            "lease {} is no longer held by {} (token {}); write refused",
            fence.name, fence.holder, fence.token
        )))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::store::testdb::TestDb;
    use std::time::Duration;

    crate::store::both_stores!(
        one_holder_at_a_time_and_tokens_only_grow,
        an_expired_lease_is_taken_and_not_renewed
    );

    async fn one_holder_at_a_time_and_tokens_only_grow(t: TestDb) {
        let store = t.store().await.unwrap();
        let ttl = Duration::from_secs(30);
        let a = store
            .lease_acquire("sync", "a", ttl, None)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(store.lease_acquire("sync", "b", ttl, None).await.unwrap(), None);
        let held = store.lease_holder("sync").await.unwrap().unwrap();
        assert_eq!(held.holder, "a");
        assert!(held.live() && held.expires_in_ms <= 30_000, "{held:?}");
        let fa = Fence {
            name: "sync".into(),
            holder: "a".into(),
            token: a,
        };
        assert!(store.lease_renew(&fa, ttl).await.unwrap());
        store.lease_release(&fa).await.unwrap();
        assert!(
            !store.lease_renew(&fa, ttl).await.unwrap(),
            "a released lease is not revived"
        );
        let b = store
            .lease_acquire("sync", "b", ttl, None)
            .await
            .unwrap()
            .unwrap();
        assert!(b > a, "fencing token {b} after {a}");
        // a's old fence no longer writes.
        let mut tx = store.pool.begin().await.unwrap();
        let e = store.fence_check(&mut tx, &fa).await.unwrap_err();
        assert!(e.to_string().contains("no longer held by a"), "{e}");
        // (Ended here: an open transaction would hold the test schema's drop.)
        tx.rollback().await.unwrap();
        // A holder proved dead is displaced at once; a live one is not.
        assert_eq!(
            store.lease_acquire("sync", "c", ttl, Some("a")).await.unwrap(),
            None
        );
        let c = store
            .lease_acquire("sync", "c", ttl, Some("b"))
            .await
            .unwrap()
            .unwrap();
        assert!(c > b);
        // Other names are other leases.
        assert!(
            store
                .lease_acquire("leader", "a", ttl, None)
                .await
                .unwrap()
                .is_some()
        );
    }

    async fn an_expired_lease_is_taken_and_not_renewed(t: TestDb) {
        let store = t.store().await.unwrap();
        let short = Duration::from_millis(50);
        let a = store
            .lease_acquire("sync", "a", short, None)
            .await
            .unwrap()
            .unwrap();
        let fa = Fence {
            name: "sync".into(),
            holder: "a".into(),
            token: a,
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while store.lease_holder("sync").await.unwrap().unwrap().live() {
            assert!(std::time::Instant::now() < deadline, "lease never expired");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(!store.lease_renew(&fa, short).await.unwrap());
        assert!(
            store
                .lease_acquire("sync", "b", Duration::from_secs(30), None)
                .await
                .unwrap()
                .is_some()
        );
    }
}
