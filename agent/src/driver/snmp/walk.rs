//! Bounded SNMP reads over one async-snmp client: batched GETs, probes (one GETNEXT), walks.
//!
//! async-snmp does the protocol work: request-id matching, retries, GETBULK walks that stop on
//! endOfMibView, abort on non-increasing OIDs, and halve max-repetitions on `tooBig` (RFC 3416
//! §4.2.3). This layer adds the agent's limits: a walk never keeps more than
//! `Limits::max_walk_varbinds`, and GETs that fail with an error status for one OID (SNMPv1's
//! `noSuchName`, and v2c agents that imitate it) are retried one OID at a time, so one missing
//! object does not hide the others.

use std::collections::{BTreeMap, HashMap};

use async_snmp::{Client, ErrorKind, Oid, Value};
use futures::StreamExt;

use super::map_err;
use crate::driver::{DriverError, PollCx};
use crate::target::{SnmpTarget, SnmpVersion};

/// A table column: row index (the OID arcs after the column) → value.
pub(super) type Column = BTreeMap<Vec<u32>, Value>;

pub(super) struct Session<'a> {
    pub(super) client: Client,
    pub(super) target: &'a SnmpTarget,
    pub(super) cx: &'a PollCx,
}

impl std::fmt::Debug for Session<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field(
                "endpoint",
                &format_args!("{}:{}", self.target.host, self.target.port),
            )
            .finish_non_exhaustive()
    }
}

/// Parses an OID that came from a validated profile or a constant of this driver.
pub(super) fn oid(text: &str) -> Oid {
    Oid::parse(text).expect("invariant: OIDs in profiles and driver constants are validated")
}

/// Whether a value is an SNMP exception (noSuchObject, noSuchInstance, endOfMibView).
fn present(v: &Value) -> bool {
    !matches!(
        v,
        Value::NoSuchObject | Value::NoSuchInstance | Value::EndOfMibView
    )
}

impl Session<'_> {
    fn err(&self, what: &str, e: &async_snmp::Error) -> DriverError {
        map_err(self.target, what, e, self.cx, self.client.stats().into())
    }

    /// GETs `oids` (async-snmp splits big requests), returning the present values by OID text.
    pub(super) async fn get_many(&self, oids: &[Oid]) -> Result<HashMap<String, Value>, DriverError> {
        let mut out = HashMap::new();
        if oids.is_empty() {
            return Ok(out);
        }
        match self.client.get_many(oids).await {
            Ok(resp) => {
                for vb in resp.varbinds {
                    if present(&vb.value) {
                        out.insert(vb.oid.to_string(), vb.value);
                    }
                }
            }
            // SNMPv1 answers a GET with one missing OID by noSuchName for the whole PDU, and
            // some v2c agents do the same instead of sending noSuchObject: ask one at a time.
            Err(e) if e.kind() == ErrorKind::Snmp => {
                for o in oids {
                    if let Ok(resp) = self.client.get(o).await {
                        for vb in resp.varbinds {
                            if present(&vb.value) {
                                out.insert(vb.oid.to_string(), vb.value);
                            }
                        }
                    }
                }
            }
            Err(e) => return Err(self.err("GET", &e)),
        }
        Ok(out)
    }

    /// Whether anything exists under `base` (one GETNEXT).
    pub(super) async fn exists(&self, base: &Oid) -> Result<bool, DriverError> {
        match self.client.get_next(base).await {
            Ok(resp) => Ok(resp
                .varbinds
                .first()
                .is_some_and(|vb| present(&vb.value) && vb.oid.starts_with(base) && vb.oid != *base)),
            Err(e) if e.kind() == ErrorKind::Snmp => Ok(false),
            Err(e) => Err(self.err(&format!("probe of {base}"), &e)),
        }
    }

    /// [`Self::exists`] for several subtrees in one GETNEXT (one round trip); falls back to one
    /// request per subtree when the agent refuses the combined one (SNMPv1 answers noSuchName
    /// for the whole PDU when one of them runs off the end of its MIB).
    pub(super) async fn exists_many(&self, bases: &[Oid]) -> Result<Vec<bool>, DriverError> {
        let combined = if bases.len() > 1 {
            match self.client.get_next_many(bases).await {
                Ok(resp) => Some(resp),
                // An error status: ask one at a time below. Anything else (a timeout) is the
                // device's state, and asking again one by one would only multiply the wait.
                Err(e) if e.kind() == ErrorKind::Snmp => None,
                Err(e) => return Err(self.err("probe", &e)),
            }
        } else {
            None
        };
        if let Some(resp) = combined.filter(|r| r.varbinds.len() == bases.len()) {
            return Ok(bases
                .iter()
                .zip(&resp.varbinds)
                .map(|(b, vb)| present(&vb.value) && vb.oid.starts_with(b) && vb.oid != *b)
                .collect());
        }
        let mut out = Vec::with_capacity(bases.len());
        for b in bases {
            out.push(self.exists(b).await?);
        }
        Ok(out)
    }

    /// Walks a subtree (GETBULK with the target's max-repetitions for v2c/v3, GETNEXT for v1)
    /// into (oid, value) pairs; more than `limit` varbinds is an error.
    pub(super) async fn walk(&self, base: &Oid, limit: usize) -> Result<Vec<(Oid, Value)>, DriverError> {
        let what = format!("walk of {base}");
        let stream = if self.target.version == SnmpVersion::V1 {
            self.client.walk_getnext(base.clone())
        } else {
            self.client.bulk_walk(base.clone(), self.target.max_repetitions)
        }
        .map_err(|e| self.err(&what, &e))?;
        let mut stream = std::pin::pin!(stream);
        let mut out = Vec::new();
        while let Some(item) = stream.next().await {
            let vb = item.map_err(|e| self.err(&what, &e))?;
            if out.len() >= limit {
                return Err(DriverError::TooLarge {
                    what,
                    limit: limit as u64,
                });
            }
            if present(&vb.value) {
                out.push((vb.oid, vb.value));
            }
        }
        Ok(out)
    }

    /// Walks one table column into row index → value, bounded by `max_walk_varbinds`.
    pub(super) async fn column(&self, base: &str) -> Result<Column, DriverError> {
        let base = oid(base);
        let rows = self.walk(&base, self.cx.limits.max_walk_varbinds).await?;
        Ok(rows
            .into_iter()
            .filter_map(|(o, v)| Some((o.strip_prefix(&base)?.arcs().to_vec(), v)))
            .filter(|(idx, _)| !idx.is_empty())
            .collect())
    }
}

/// Printable text of an OCTET STRING, or `None` for binary or non-string values.
pub(super) fn value_text(v: &Value) -> Option<String> {
    let bytes = v.as_bytes()?;
    let s = std::str::from_utf8(bytes).ok()?;
    s.chars()
        .all(|c| !c.is_control() || c.is_whitespace())
        .then(|| s.trim_end_matches('\0').trim().to_owned())
}

/// An integer of any SNMP integer type (INTEGER, Gauge32, Unsigned32, Counter, TimeTicks):
/// enumerations, types and decimal-digit counts come as any of them, depending on the MIB.
pub(super) fn value_int(v: &Value) -> Option<i64> {
    match v {
        Value::Counter64(c) => i64::try_from(*c).ok(),
        #[allow(clippy::cast_possible_truncation)]
        other => other.as_f64().map(|f| f as i64),
    }
}

/// A numeric reading: integers, gauges, counters, TimeTicks, and numbers sent as text
/// ("23.5", as some sensors do).
pub(super) fn value_number(v: &Value) -> Option<f64> {
    v.as_f64()
        .or_else(|| value_text(v)?.parse::<f64>().ok())
        .filter(|x| x.is_finite())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn value_text_accepts_text_and_rejects_binary() {
        assert_eq!(
            value_text(&Value::from("DC1 / Row A")).as_deref(),
            Some("DC1 / Row A")
        );
        assert_eq!(
            value_text(&Value::OctetString(
                vec![0x28, 0x29, 0x86, 0x06, 0x01, 0x02].into()
            )),
            None
        );
        assert_eq!(value_text(&Value::Integer(3)), None);
    }

    #[test]
    fn numbers_from_integers_gauges_ticks_and_text() {
        assert_eq!(value_number(&Value::Integer(-1)), Some(-1.0));
        assert_eq!(value_number(&Value::Gauge32(1589)), Some(1589.0));
        assert_eq!(value_number(&Value::TimeTicks(84_000)), Some(84_000.0));
        assert_eq!(value_number(&Value::from(" 23.5 ")), Some(23.5));
        assert_eq!(value_number(&Value::from("n/a")), None);
        assert_eq!(value_number(&Value::from("NaN")), None);
        assert_eq!(value_number(&Value::Null), None);
        assert_eq!(value_int(&Value::Gauge32(3)), Some(3));
        assert_eq!(value_int(&Value::Integer(-1)), Some(-1));
        assert_eq!(value_int(&Value::Counter64(u64::MAX)), None);
        assert_eq!(value_int(&Value::from("3")), None);
    }
}
