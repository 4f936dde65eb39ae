//! Operator actions on the exception log, each recorded in `exception_audit`:
//!
//! * **accept** — the operator has looked and agrees with the state (or fixed the cause): the
//!   exception is resolved; it is raised again if the cause is still there at the next pass.
//! * **ignore** — the (device, kind) pair is not raised again until un-ignored (a known oddity,
//!   e.g. a lab box with a placeholder serial).
//! * **pin** — the operator states where the device is: manual location evidence, which the
//!   location engine puts above every other source, so a location conflict ends.
//!
//! Queries use `$n` placeholders and portable SQL (SQLite and PostgreSQL).

use sqlx::Row as _;

use super::{EvidenceRow, ExceptionRow, Store, StoreError, now};

/// A location stated by an operator.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Pin {
    pub site: String,
    #[serde(default)]
    pub room: String,
    #[serde(default)]
    pub row: String,
    pub rack: String,
    #[serde(default)]
    pub u: Option<u32>,
    /// `front`, `rear` or empty.
    #[serde(default)]
    pub face: String,
}

impl std::fmt::Display for Pin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "site {:?} room {:?} rack {:?}",
            self.site, self.room, self.rack
        )?;
        if let Some(u) = self.u {
            write!(f, " U{u}")?;
        }
        if !self.face.is_empty() {
            write!(f, " {}", self.face)?;
        }
        Ok(())
    }
}

/// One line of the audit trail.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AuditRow {
    pub at: String,
    pub exception_id: i64,
    pub device_key: String,
    pub kind: String,
    pub action: String,
    pub actor: String,
    pub note: String,
    pub detail: String,
}

/// Why an action was refused.
fn invalid(what: &str) -> StoreError {
    StoreError::Refused(what.to_owned())
}

impl Store {
    /// Resolves a device's open exceptions of the given kinds (their cause went away).
    ///
    /// # Errors
    /// On a database failure.
    pub async fn resolve_exception_kinds(&self, device_key: &str, kinds: &[&str]) -> Result<(), StoreError> {
        for kind in kinds {
            sqlx::query(
                "UPDATE exceptions SET resolved_at = $1 WHERE device_key = $2 AND kind = $3 AND resolved_at IS NULL",
            )
            .bind(now())
            .bind(device_key)
            .bind(kind)
            .execute(&self.pool)
            .await?;
        }
        Ok(())
    }

    /// One exception, open or resolved.
    ///
    /// # Errors
    /// On a database failure.
    pub async fn exception(&self, id: i64) -> Result<Option<ExceptionRow>, StoreError> {
        Ok(sqlx::query(
            "SELECT id, device_key, kind, detail, first_seen, last_seen FROM exceptions WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .as_ref()
        .map(ExceptionRow::from_row))
    }

    /// Resolves the *open* exception `id` in `tx`'s transaction and audits `action`; false when
    /// there is no such open exception.
    async fn close_and_audit(
        &self,
        id: i64,
        action: &str,
        actor: &str,
        note: &str,
        extra: impl FnOnce(&ExceptionRow) -> String,
    ) -> Result<Option<ExceptionRow>, StoreError> {
        check_actor(actor)?;
        let Some(e) = self.exception(id).await? else {
            return Ok(None);
        };
        let t = now();
        let mut tx = self.pool.begin().await?;
        let n = sqlx::query(
            "UPDATE exceptions SET resolved_at = $1, resolved_by = $2 WHERE id = $3 AND resolved_at IS NULL",
        )
        .bind(&t)
        .bind(actor)
        .bind(id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if n != 1 {
            return Ok(None);
        }
        let detail = extra(&e);
        audit(
            &mut tx,
            &t,
            id,
            &e.device_key,
            &e.kind,
            action,
            actor,
            note,
            &detail,
        )
        .await?;
        tx.commit().await?;
        Ok(Some(e))
    }

    /// Accepts (resolves) open exception `id`. Returns false when there is no such open exception.
    ///
    /// # Errors
    /// On a database failure or an empty actor.
    pub async fn accept_exception(&self, id: i64, actor: &str, note: &str) -> Result<bool, StoreError> {
        Ok(self
            .close_and_audit(id, "accept", actor, note, |e| e.detail.clone())
            .await?
            .is_some())
    }

    /// Resolves open exception `id` and ignores its (device, kind) from now on.
    ///
    /// # Errors
    /// On a database failure or an empty actor.
    pub async fn ignore_exception(&self, id: i64, actor: &str, note: &str) -> Result<bool, StoreError> {
        let Some(e) = self
            .close_and_audit(id, "ignore", actor, note, |e| e.detail.clone())
            .await?
        else {
            return Ok(false);
        };
        sqlx::query(
            "INSERT INTO exception_ignores (device_key, kind, actor, at, note) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (device_key, kind) DO UPDATE SET actor = excluded.actor, at = excluded.at, note = excluded.note",
        )
        .bind(&e.device_key)
        .bind(&e.kind)
        .bind(actor)
        .bind(now())
        .bind(note)
        .execute(&self.pool)
        .await?;
        Ok(true)
    }

    /// Stops ignoring (device, kind). Returns false if it was not ignored.
    ///
    /// # Errors
    /// On a database failure or an empty actor.
    pub async fn unignore(
        &self,
        device_key: &str,
        kind: &str,
        actor: &str,
        note: &str,
    ) -> Result<bool, StoreError> {
        check_actor(actor)?;
        let t = now();
        let mut tx = self.pool.begin().await?;
        let n = sqlx::query("DELETE FROM exception_ignores WHERE device_key = $1 AND kind = $2")
            .bind(device_key)
            .bind(kind)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if n == 0 {
            return Ok(false);
        }
        audit(&mut tx, &t, 0, device_key, kind, "unignore", actor, note, "").await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Whether an operator ignored (device, kind).
    ///
    /// # Errors
    /// On a database failure.
    pub async fn is_ignored(&self, device_key: &str, kind: &str) -> Result<bool, StoreError> {
        Ok(
            sqlx::query("SELECT 1 FROM exception_ignores WHERE device_key = $1 AND kind = $2")
                .bind(device_key)
                .bind(kind)
                .fetch_optional(&self.pool)
                .await?
                .is_some(),
        )
    }

    /// Pins the location of the device of open exception `id` and resolves the exception.
    ///
    /// # Errors
    /// On a database failure, an empty actor or an incomplete pin (site and rack are needed).
    pub async fn pin_exception(
        &self,
        id: i64,
        pin: &Pin,
        actor: &str,
        note: &str,
    ) -> Result<bool, StoreError> {
        check_pin(pin)?;
        let Some(e) = self
            .close_and_audit(id, "pin", actor, note, |_| pin.to_string())
            .await?
        else {
            return Ok(false);
        };
        self.put_pin(&e.device_key, pin, actor, note).await?;
        Ok(true)
    }

    /// Pins a device's location directly (not through an exception).
    ///
    /// # Errors
    /// On a database failure, an empty actor or an incomplete pin.
    pub async fn pin_device(
        &self,
        device_key: &str,
        pin: &Pin,
        actor: &str,
        note: &str,
    ) -> Result<(), StoreError> {
        check_actor(actor)?;
        check_pin(pin)?;
        let t = now();
        let mut tx = self.pool.begin().await?;
        audit(
            &mut tx,
            &t,
            0,
            device_key,
            "",
            "pin",
            actor,
            note,
            &pin.to_string(),
        )
        .await?;
        tx.commit().await?;
        self.put_pin(device_key, pin, actor, note).await
    }

    async fn put_pin(&self, device_key: &str, pin: &Pin, actor: &str, note: &str) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO location_pins (device_key, site, room, row_name, rack, u_position, face, actor, at, note)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
             ON CONFLICT (device_key) DO UPDATE SET site = excluded.site, room = excluded.room,
                 row_name = excluded.row_name, rack = excluded.rack, u_position = excluded.u_position,
                 face = excluded.face, actor = excluded.actor, at = excluded.at, note = excluded.note",
        )
        .bind(device_key)
        .bind(&pin.site)
        .bind(&pin.room)
        .bind(&pin.row)
        .bind(&pin.rack)
        .bind(pin.u.map(i64::from))
        .bind(&pin.face)
        .bind(actor)
        .bind(now())
        .bind(note)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Removes a device's pin. Returns false if it had none.
    ///
    /// # Errors
    /// On a database failure or an empty actor.
    pub async fn unpin(&self, device_key: &str, actor: &str, note: &str) -> Result<bool, StoreError> {
        check_actor(actor)?;
        let t = now();
        let mut tx = self.pool.begin().await?;
        let n = sqlx::query("DELETE FROM location_pins WHERE device_key = $1")
            .bind(device_key)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if n == 0 {
            return Ok(false);
        }
        audit(&mut tx, &t, 0, device_key, "", "unpin", actor, note, "").await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Adds each device's pin to its location evidence (source `LOCATION_SOURCE_MANUAL`).
    pub(super) async fn add_pins(&self, devices: &mut [super::DeviceRow]) -> Result<(), StoreError> {
        let rows = sqlx::query(
            "SELECT device_key, site, room, row_name, rack, u_position, face, actor, at, note FROM location_pins",
        )
        .fetch_all(&self.pool)
        .await?;
        if rows.is_empty() {
            return Ok(());
        }
        let mut pins: std::collections::HashMap<String, EvidenceRow> = rows
            .into_iter()
            .map(|r| {
                let key: String = r.get("device_key");
                let (actor, at, note): (String, String, String) =
                    (r.get("actor"), r.get("at"), r.get("note"));
                let e = EvidenceRow {
                    source: "LOCATION_SOURCE_MANUAL".into(),
                    site: r.get("site"),
                    room: r.get("room"),
                    row: r.get("row_name"),
                    rack: r.get("rack"),
                    u_position: r
                        .get::<Option<i64>, _>("u_position")
                        .and_then(|u| u32::try_from(u).ok()),
                    confidence: 1.0,
                    raw: format!(
                        "pinned by {actor} at {at}{}",
                        if note.is_empty() {
                            String::new()
                        } else {
                            format!(": {note}")
                        }
                    ),
                    ..EvidenceRow::default()
                };
                (key, e)
            })
            .collect();
        for d in devices {
            if let Some(e) = pins.remove(&d.device_key) {
                d.locations.push(e);
            }
        }
        Ok(())
    }

    /// The audit trail, newest first; `device_key` filters to one device.
    ///
    /// # Errors
    /// On a database failure.
    pub async fn audit_trail(
        &self,
        device_key: Option<&str>,
        limit: i64,
    ) -> Result<Vec<AuditRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT at, exception_id, device_key, kind, action, actor, note, detail FROM exception_audit
             WHERE $1 = '' OR device_key = $1 ORDER BY at DESC LIMIT $2",
        )
        .bind(device_key.unwrap_or_default())
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| AuditRow {
                at: r.get("at"),
                exception_id: r.get("exception_id"),
                device_key: r.get("device_key"),
                kind: r.get("kind"),
                action: r.get("action"),
                actor: r.get("actor"),
                note: r.get("note"),
                detail: r.get("detail"),
            })
            .collect())
    }
}

fn check_actor(actor: &str) -> Result<(), StoreError> {
    if actor.trim().is_empty() {
        return Err(invalid("an action needs the name of who takes it (actor)"));
    }
    Ok(())
}

fn check_pin(pin: &Pin) -> Result<(), StoreError> {
    if pin.site.trim().is_empty() || pin.rack.trim().is_empty() {
        return Err(invalid("a pin needs at least a site and a rack"));
    }
    if pin.u == Some(0) || pin.u.is_some_and(|u| u > 100) {
        return Err(invalid("a pin's U must be between 1 and 100"));
    }
    if !matches!(pin.face.as_str(), "" | "front" | "rear") {
        return Err(invalid("a pin's face must be \"front\", \"rear\" or empty"));
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn audit(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    at: &str,
    exception_id: i64,
    device_key: &str,
    kind: &str,
    action: &str,
    actor: &str,
    note: &str,
    detail: &str,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO exception_audit (at, exception_id, device_key, kind, action, actor, note, detail)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(at)
    .bind(exception_id)
    .bind(device_key)
    .bind(kind)
    .bind(action)
    .bind(actor)
    .bind(note)
    .bind(detail)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::store::testdb::TestDb;

    crate::store::both_stores!(
        accept_resolves_and_audits_and_the_cause_can_reopen_it,
        ignore_suppresses_the_pair_until_unignored,
        pin_becomes_manual_evidence_and_unpin_removes_it
    );

    async fn open_id(s: &Store, key: &str, kind: &str) -> Option<i64> {
        s.open_exceptions()
            .await
            .unwrap()
            .into_iter()
            .find(|e| e.device_key == key && e.kind == kind)
            .map(|e| e.id)
    }

    async fn accept_resolves_and_audits_and_the_cause_can_reopen_it(t: TestDb) {
        let s = t.store().await.unwrap();
        s.raise_exception("serial:A", "junk_serial", "serial is 0123456789")
            .await
            .unwrap();
        let id = open_id(&s, "serial:A", "junk_serial").await.unwrap();
        assert!(
            s.accept_exception(id, "", "").await.is_err(),
            "an actor is required"
        );
        assert!(s.accept_exception(id, "alice", "known lab box").await.unwrap());
        assert!(
            !s.accept_exception(id, "alice", "").await.unwrap(),
            "already resolved"
        );
        assert!(open_id(&s, "serial:A", "junk_serial").await.is_none());
        let a = s.audit_trail(Some("serial:A"), 10).await.unwrap();
        assert_eq!(a.len(), 1);
        assert_eq!(
            (
                a[0].action.as_str(),
                a[0].actor.as_str(),
                a[0].note.as_str(),
                a[0].exception_id
            ),
            ("accept", "alice", "known lab box", id)
        );
        assert!(a[0].detail.contains("0123456789"));
        // Accepting is not ignoring: the next pass raises it again while the cause is there.
        s.raise_exception("serial:A", "junk_serial", "serial is 0123456789")
            .await
            .unwrap();
        assert!(
            open_id(&s, "serial:A", "junk_serial")
                .await
                .is_some_and(|n| n != id)
        );
    }

    async fn ignore_suppresses_the_pair_until_unignored(t: TestDb) {
        let s = t.store().await.unwrap();
        s.raise_exception("serial:B", "duplicate_serial", "two devices")
            .await
            .unwrap();
        let id = open_id(&s, "serial:B", "duplicate_serial").await.unwrap();
        assert!(s.ignore_exception(id, "bob", "").await.unwrap());
        s.raise_exception("serial:B", "duplicate_serial", "two devices")
            .await
            .unwrap();
        assert!(
            open_id(&s, "serial:B", "duplicate_serial").await.is_none(),
            "ignored"
        );
        // Other kinds of the same device are still raised.
        s.raise_exception("serial:B", "no_location", "x").await.unwrap();
        assert!(open_id(&s, "serial:B", "no_location").await.is_some());
        assert!(
            s.unignore("serial:B", "duplicate_serial", "bob", "fixed?")
                .await
                .unwrap()
        );
        assert!(
            !s.unignore("serial:B", "duplicate_serial", "bob", "")
                .await
                .unwrap()
        );
        s.raise_exception("serial:B", "duplicate_serial", "two devices")
            .await
            .unwrap();
        assert!(open_id(&s, "serial:B", "duplicate_serial").await.is_some());
        let actions: Vec<String> = s
            .audit_trail(None, 10)
            .await
            .unwrap()
            .into_iter()
            .map(|a| a.action)
            .collect();
        assert!(
            actions.contains(&"ignore".into()) && actions.contains(&"unignore".into()),
            "{actions:?}"
        );
    }

    async fn pin_becomes_manual_evidence_and_unpin_removes_it(t: TestDb) {
        let s = t.store().await.unwrap();
        s.raise_exception("serial:C", "location_conflict", "a vs b")
            .await
            .unwrap();
        let id = open_id(&s, "serial:C", "location_conflict").await.unwrap();
        let bad = Pin {
            site: "DC1".into(),
            ..Pin::default()
        };
        assert!(
            s.pin_exception(id, &bad, "carol", "").await.is_err(),
            "rack missing"
        );
        let pin = Pin {
            site: "DC1".into(),
            rack: "R07".into(),
            u: Some(12),
            ..Pin::default()
        };
        assert!(
            s.pin_exception(id, &pin, "carol", "checked on the floor")
                .await
                .unwrap()
        );
        let mut devices = vec![crate::store::DeviceRow {
            device_key: "serial:C".into(),
            ..Default::default()
        }];
        s.add_pins(&mut devices).await.unwrap();
        let e = devices[0].locations.last().unwrap();
        assert_eq!(
            (e.source.as_str(), e.rack.as_str(), e.u_position),
            ("LOCATION_SOURCE_MANUAL", "R07", Some(12))
        );
        assert!(e.raw.contains("carol") && e.raw.contains("checked on the floor"));
        assert!(s.unpin("serial:C", "carol", "").await.unwrap());
        let mut devices = vec![crate::store::DeviceRow {
            device_key: "serial:C".into(),
            ..Default::default()
        }];
        s.add_pins(&mut devices).await.unwrap();
        assert!(devices[0].locations.is_empty());
        let a = s.audit_trail(Some("serial:C"), 10).await.unwrap();
        assert_eq!(
            a.iter().map(|a| a.action.as_str()).collect::<Vec<_>>(),
            ["unpin", "pin"]
        );
    }
}
