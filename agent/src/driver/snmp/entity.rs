//! ENTITY-MIB (RFC 6933) field-replaceable parts: every `entPhysicalTable` row with a serial
//! number, other than the chassis row that identifies the device itself, becomes a
//! `ComponentIdentity` (PSUs, fans, line cards, transceivers). Standard MIB, so code rather than
//! a profile; bounded to [`MAX_COMPONENTS`] rows.

use groundtruth_proto::v1::{Component, ComponentIdentity, ComponentKind};

use super::walk::{Column, Session, value_int, value_text};
use crate::driver::DriverError;

/// Most component identities reported per device.
pub(super) const MAX_COMPONENTS: usize = 1024;

const ENT_PARENT_REL_POS: &str = "1.3.6.1.2.1.47.1.1.1.1.6";
const ENT_CLASS: &str = "1.3.6.1.2.1.47.1.1.1.1.5";
const ENT_NAME: &str = "1.3.6.1.2.1.47.1.1.1.1.7";
const ENT_SOFTWARE_REV: &str = "1.3.6.1.2.1.47.1.1.1.1.10";
const ENT_SERIAL: &str = "1.3.6.1.2.1.47.1.1.1.1.11";
const ENT_MFG_NAME: &str = "1.3.6.1.2.1.47.1.1.1.1.12";
const ENT_MODEL_NAME: &str = "1.3.6.1.2.1.47.1.1.1.1.13";

/// PhysicalClass (RFC 6933) → component kind.
fn kind_of(class: Option<i64>) -> ComponentKind {
    match class {
        Some(6) => ComponentKind::Psu,
        Some(7) => ComponentKind::Fan,
        Some(8) => ComponentKind::Sensor,
        Some(9) => ComponentKind::Module,
        Some(10) => ComponentKind::Port,
        _ => ComponentKind::Unspecified,
    }
}

/// Reads the parts with serial numbers; `device_serial` (the chassis serial already in the
/// identity) is not repeated as a component.
pub(super) async fn components(
    s: &Session<'_>,
    device_serial: &str,
) -> Result<Vec<ComponentIdentity>, DriverError> {
    // Parts are identity: not read in a telemetry-only poll (driver::PollScope).
    if !s.cx.scope.wants(crate::driver::Kind::Identity) {
        return Ok(Vec::new());
    }
    let serials = s.column(ENT_SERIAL).await?;
    let rows: Vec<(&Vec<u32>, String)> = serials
        .iter()
        .filter_map(|(idx, v)| Some((idx, value_text(v)?)))
        .filter(|(_, serial)| !serial.is_empty() && serial != device_serial)
        .collect();
    if rows.is_empty() {
        return Ok(vec![]);
    }
    let class = s.column(ENT_CLASS).await?;
    let name = s.column(ENT_NAME).await?;
    let model = s.column(ENT_MODEL_NAME).await?;
    let mfg = s.column(ENT_MFG_NAME).await?;
    let rev = s.column(ENT_SOFTWARE_REV).await?;
    let pos = s.column(ENT_PARENT_REL_POS).await?;
    Ok(build(&rows, &class, &name, &model, &mfg, &rev, &pos))
}

fn build(
    rows: &[(&Vec<u32>, String)],
    class: &Column,
    name: &Column,
    model: &Column,
    mfg: &Column,
    rev: &Column,
    pos: &Column,
) -> Vec<ComponentIdentity> {
    let text = |c: &Column, idx: &Vec<u32>| c.get(idx).and_then(value_text).unwrap_or_default();
    rows.iter()
        .take(MAX_COMPONENTS)
        .map(|(idx, serial)| ComponentIdentity {
            component: Some(Component {
                kind: kind_of(class.get(*idx).and_then(value_int)) as i32,
                index: pos
                    .get(*idx)
                    .and_then(value_int)
                    .and_then(|p| u32::try_from(p).ok())
                    .unwrap_or(0),
                label: text(name, idx),
            }),
            vendor: text(mfg, idx),
            model: text(model, idx),
            serial_number: serial.clone(),
            part_number: String::new(),
            firmware_version: text(rev, idx),
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use async_snmp::Value;

    #[test]
    fn rows_with_serials_become_components_with_kind_position_and_name() {
        let idx = vec![100_601_110];
        let col = |v: Value| [(idx.clone(), v)].into_iter().collect::<Column>();
        let rows = vec![(&idx, "ABC123".to_owned())];
        let c = build(
            &rows,
            &col(Value::Integer(6)),
            &col(Value::from("PowerSupply1")),
            &col(Value::from("PWR-460AC-F")),
            &col(Value::from("Arista Networks")),
            &col(Value::from("")),
            &col(Value::Integer(1)),
        );
        assert_eq!(c.len(), 1);
        let comp = c[0].component.clone().unwrap();
        assert_eq!(comp.kind, ComponentKind::Psu as i32);
        assert_eq!((comp.index, comp.label.as_str()), (1, "PowerSupply1"));
        assert_eq!(
            (c[0].model.as_str(), c[0].serial_number.as_str()),
            ("PWR-460AC-F", "ABC123")
        );
        assert_eq!(kind_of(Some(9)), ComponentKind::Module);
        assert_eq!(kind_of(Some(3)), ComponentKind::Unspecified);
        assert_eq!(kind_of(None), ComponentKind::Unspecified);
    }
}
