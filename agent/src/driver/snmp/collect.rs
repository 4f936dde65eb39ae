//! Applies selected profiles to a device: reads their scalars and table columns (each column
//! walked once per poll, however many readings use it) and turns them into identity fields,
//! readings and status attributes. Up to [`COLUMN_WALKS_IN_FLIGHT`] column walks run at once;
//! after a timeout no new walk starts (the device is slow or gone, and the whole-poll deadline
//! must not be spent on it).
//!
//! Precedence: profiles run in order (the vendor profile first, then the generic ones); an
//! identity field keeps the first non-empty value, and a reading is skipped when one with the
//! same (metric, component kind, index, label) was already produced (for `status` readings:
//! with the same name too), so a profile's later readings and the generic profiles act as
//! fallbacks.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::SystemTime;

use futures::StreamExt;

use async_snmp::Value;
use groundtruth_proto::v1::{Component, DeviceIdentity, Reading};

use super::profile::{Profile, ReadingSpec, Source, component_index, scaled};
use super::walk::{Column, Session, oid, value_int, value_number, value_text};
use crate::driver::{DriverError, Kind};

/// Column walks of one device in flight at once: a few hide the round-trip time of a distant
/// device without flooding a small management card (many answer one request at a time).
const COLUMN_WALKS_IN_FLIGHT: usize = 4;

/// What the profiles produced besides identity fields.
#[derive(Debug, Default)]
pub(super) struct Collected {
    pub(super) readings: Vec<Reading>,
    /// Mapped status values (`<reading name>[.<index>]` → state) and similar profile facts.
    pub(super) attributes: Vec<(String, String)>,
    /// Parts that failed while others succeeded (a table that timed out, a walk over the cap).
    pub(super) partial_errors: Vec<String>,
}

/// A profile's identity sources; none in a telemetry-only poll (`driver::PollScope`), whose
/// identity the agent keeps from the last inventory poll.
fn identity_fields<'p>(s: &Session<'_>, p: &'p Profile) -> Vec<(&'static str, &'p [Source])> {
    if s.cx.scope.wants(Kind::Identity) {
        p.identity.fields().to_vec()
    } else {
        Vec::new()
    }
}

/// Reads everything `profiles` name and fills `id` and the returned [`Collected`].
pub(super) async fn apply(
    s: &Session<'_>,
    profiles: &[&Profile],
    id: &mut DeviceIdentity,
) -> Result<Collected, DriverError> {
    let mut out = Collected::default();

    // 1. Every scalar in one batched GET.
    let mut scalars = BTreeSet::new();
    for p in profiles {
        for (_, sources) in identity_fields(s, p) {
            scalars.extend(sources.iter().filter_map(|s| s.oid.clone()));
        }
        scalars.extend(p.readings.iter().filter_map(|r| r.oid.clone()));
    }
    let scalar_oids: Vec<_> = scalars.iter().map(|o| oid(o)).collect();
    let values = s.get_many(&scalar_oids).await?;

    // 2. Every column, walked once, a few at a time.
    let mut columns: HashMap<String, Column> = HashMap::new();
    let mut needed = BTreeSet::new();
    for p in profiles {
        for (_, sources) in identity_fields(s, p) {
            for src in sources {
                needed.extend(src.where_column.clone());
                if src.where_column.is_none() {
                    needed.extend(src.column.clone());
                }
            }
        }
        for r in &p.readings {
            for c in [&r.column, &r.label_column, &r.decimals_column, &r.filter_column] {
                needed.extend(c.clone());
            }
        }
    }
    let gave_up = AtomicBool::new(false);
    let walks = futures::stream::iter(needed)
        .map(|c| {
            let gave_up = &gave_up;
            async move {
                if gave_up.load(Ordering::Relaxed) {
                    return (c, None);
                }
                let r = s.column(&c).await;
                if matches!(r, Err(DriverError::Timeout { .. } | DriverError::Connect { .. })) {
                    gave_up.store(true, Ordering::Relaxed);
                }
                (c, Some(r))
            }
        })
        .buffer_unordered(COLUMN_WALKS_IN_FLIGHT);
    let mut walks = std::pin::pin!(walks);
    while let Some((c, r)) = walks.next().await {
        match r {
            Some(Ok(col)) => {
                columns.insert(c, col);
            }
            Some(Err(e)) => out.partial_errors.push(format!("snmp: {e}")),
            None => {}
        }
    }
    if gave_up.load(Ordering::Relaxed) {
        out.partial_errors
            .push("snmp: further table walks skipped after a timeout".into());
    }

    // 3. Identity: `column where where_column = equals` needs one more GET per chosen row.
    let mut row_gets = BTreeSet::new();
    for p in profiles {
        for (_, sources) in identity_fields(s, p) {
            for src in sources {
                if let Some(o) = chosen_row_oid(src, &columns) {
                    row_gets.insert(o);
                }
            }
        }
    }
    let row_oids: Vec<_> = row_gets.iter().map(|o| oid(o)).collect();
    let row_values = if row_oids.is_empty() {
        HashMap::new()
    } else {
        s.get_many(&row_oids).await.unwrap_or_else(|e| {
            out.partial_errors.push(format!("snmp: identity rows: {e}"));
            HashMap::new()
        })
    };
    for p in profiles {
        if let Some(v) = p.identity.vendor.as_ref().filter(|_| id.vendor.is_empty()) {
            id.vendor.clone_from(v);
        }
        for (field, sources) in identity_fields(s, p) {
            let slot = match field {
                "vendor" => &mut id.vendor,
                "model" => &mut id.model,
                "serial" => &mut id.serial_number,
                "part_number" => &mut id.part_number,
                "firmware" => &mut id.firmware_version,
                _ => &mut id.asset_tag,
            };
            if !slot.is_empty() {
                continue;
            }
            for src in sources {
                let text = if let Some(o) = &src.oid {
                    values.get(o).and_then(value_text)
                } else if src.where_column.is_some() {
                    chosen_row_oid(src, &columns).and_then(|o| row_values.get(&o).and_then(value_text))
                } else {
                    src.column
                        .as_ref()
                        .and_then(|c| columns.get(c))
                        .and_then(|col| col.values().next())
                        .and_then(value_text)
                };
                if let Some(t) = text.filter(|t| !t.is_empty()) {
                    *slot = t;
                    break;
                }
            }
        }
    }

    // 4. Readings.
    let now = SystemTime::now();
    let mut seen = BTreeSet::new();
    for p in profiles {
        for r in &p.readings {
            for (raw, index, label, source) in rows_of(r, &values, &columns) {
                if r.ignore.iter().any(|i| (*i as f64 - raw).abs() < f64::EPSILON) {
                    continue;
                }
                let kind = r.component.map(|k| k.to_proto() as i32);
                // Status readings of different names mean different things (battery vs output).
                let which = if r.states.is_empty() { "" } else { r.name.as_str() };
                if !seen.insert((r.metric.clone(), kind, index, label.clone(), which.to_owned())) {
                    continue;
                }
                let decimals = r.decimals_column.as_ref().and_then(|c| {
                    let idx = source.index.as_ref()?;
                    value_int(columns.get(c)?.get(idx)?)
                });
                if !r.states.is_empty() {
                    #[allow(clippy::cast_possible_truncation)]
                    let key = (raw as i64).to_string();
                    let state = r
                        .states
                        .get(&key)
                        .cloned()
                        .unwrap_or_else(|| format!("unknown_{key}"));
                    let name = match (&source.index, index) {
                        (Some(_), Some(i)) => format!("{}.{i}", r.name),
                        _ => r.name.clone(),
                    };
                    out.attributes.push((name, state));
                }
                out.readings.push(Reading {
                    metric: r.metric.clone(),
                    unit: r.unit.clone(),
                    value: scaled(raw, r.scale, decimals),
                    observed_at: Some(now.into()),
                    component: r.component.map(|k| Component {
                        kind: k.to_proto() as i32,
                        index: index.unwrap_or(0),
                        label: label.clone().unwrap_or_default(),
                    }),
                    source: source.oid,
                });
            }
        }
    }
    Ok(out)
}

/// The OID of `column.<row>` for the first row whose `where_column` equals `equals`.
fn chosen_row_oid(src: &Source, columns: &HashMap<String, Column>) -> Option<String> {
    let (col, wc, eq) = (src.column.as_ref()?, src.where_column.as_ref()?, src.equals?);
    let (idx, _) = columns.get(wc)?.iter().find(|(_, v)| value_int(v) == Some(eq))?;
    Some(join(col, idx))
}

fn join(base: &str, idx: &[u32]) -> String {
    let mut s = base.to_owned();
    for a in idx {
        s.push('.');
        s.push_str(&a.to_string());
    }
    s
}

struct RowSource {
    oid: String,
    index: Option<Vec<u32>>,
}

/// The raw values of one reading spec: `(raw, component index, label, source)`.
fn rows_of(
    r: &ReadingSpec,
    values: &HashMap<String, Value>,
    columns: &HashMap<String, Column>,
) -> Vec<(f64, Option<u32>, Option<String>, RowSource)> {
    if let Some(o) = &r.oid {
        return values
            .get(o)
            .and_then(value_number)
            .map(|raw| {
                (
                    raw,
                    r.index,
                    r.label.clone(),
                    RowSource {
                        oid: o.clone(),
                        index: None,
                    },
                )
            })
            .into_iter()
            .collect();
    }
    let Some(col) = r.column.as_ref().and_then(|c| columns.get(c)) else {
        return vec![];
    };
    let mut out = Vec::new();
    for (idx, v) in col {
        if !idx.ends_with(&r.index_suffix) {
            continue;
        }
        if let Some(fc) = &r.filter_column {
            let fv = columns.get(fc).and_then(|c| c.get(idx)).and_then(value_int);
            if !fv.is_some_and(|fv| r.filter_equals.contains(&fv)) {
                continue;
            }
        }
        let Some(raw) = value_number(v) else { continue };
        let label = r
            .label_column
            .as_ref()
            .and_then(|c| columns.get(c)?.get(idx))
            .and_then(value_text)
            .or_else(|| r.label.clone());
        out.push((
            raw,
            component_index(idx, r.index_part).and_then(|i| i.checked_add(r.index_offset)),
            label,
            RowSource {
                oid: join(r.column.as_deref().unwrap_or_default(), idx),
                index: Some(idx.clone()),
            },
        ));
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn spec(toml_text: &str) -> ReadingSpec {
        toml::from_str(toml_text).unwrap()
    }

    #[test]
    fn table_rows_get_index_label_filter_and_suffix() {
        let mut columns = HashMap::new();
        let mut power = Column::new();
        power.insert(vec![1, 1, 1], Value::Gauge32(3497));
        power.insert(vec![1, 1, 5], Value::Gauge32(673));
        power.insert(vec![1, 2, 5], Value::Gauge32(10));
        columns.insert("1.3.6.1.4.1.9.1".to_owned(), power);
        let mut types = Column::new();
        types.insert(vec![1, 1, 5], Value::Integer(26));
        types.insert(vec![1, 2, 5], Value::Integer(23));
        columns.insert("1.3.6.1.4.1.9.2".to_owned(), types);
        let mut names = Column::new();
        names.insert(vec![1, 1, 5], Value::from("I1"));
        columns.insert("1.3.6.1.4.1.9.3".to_owned(), names);

        let r = spec(
            r#"name = "p"
metric = "power"
unit = "W"
column = "1.3.6.1.4.1.9.1"
component = "inlet"
index_part = 1
index_suffix = [5]
label_column = "1.3.6.1.4.1.9.3"
filter_column = "1.3.6.1.4.1.9.2"
filter_equals = [26]"#,
        );
        let rows = rows_of(&r, &HashMap::new(), &columns);
        assert_eq!(rows.len(), 1, "suffix drops .1, filter drops type 23");
        let (raw, index, label, src) = &rows[0];
        assert_eq!((*raw, *index, label.as_deref()), (673.0, Some(1), Some("I1")));
        assert_eq!(src.oid, "1.3.6.1.4.1.9.1.1.1.5");
    }

    #[test]
    fn chassis_row_is_found_by_class() {
        let mut class = Column::new();
        class.insert(vec![1], Value::Integer(10));
        class.insert(vec![100_006_001], Value::Integer(3));
        class.insert(vec![100_006_002], Value::Integer(3));
        let mut columns = HashMap::new();
        columns.insert("1.3.6.1.2.1.47.1.1.1.1.5".to_owned(), class);
        let src = Source {
            column: Some("1.3.6.1.2.1.47.1.1.1.1.11".into()),
            where_column: Some("1.3.6.1.2.1.47.1.1.1.1.5".into()),
            equals: Some(3),
            ..Default::default()
        };
        assert_eq!(
            chosen_row_oid(&src, &columns).as_deref(),
            Some("1.3.6.1.2.1.47.1.1.1.1.11.100006001")
        );
        columns.clear();
        assert_eq!(chosen_row_oid(&src, &columns), None);
    }
}
