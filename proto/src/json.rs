//! Canonical proto3 JSON mapping for the v1 messages.
//!
//! prost generates no serde code; rather than hand-maintain a second mapping (and get enum names,
//! 64-bit integers or Timestamps subtly wrong), a message is re-read as a `prost_reflect`
//! `DynamicMessage` against the embedded descriptor set and serialised by prost-reflect, which
//! implements the mapping from the protobuf specification.

use std::sync::OnceLock;

use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage, SerializeOptions};

/// Errors converting between messages and JSON.
#[derive(Debug)]
pub struct JsonError(String);

impl std::fmt::Display for JsonError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for JsonError {}

fn pool() -> &'static DescriptorPool {
    static POOL: OnceLock<DescriptorPool> = OnceLock::new();
    POOL.get_or_init(|| {
        DescriptorPool::decode(crate::FILE_DESCRIPTOR_SET)
            .expect("invariant: the descriptor set embedded at build time decodes")
    })
}

/// A v1 message that knows its fully qualified protobuf name.
pub trait Named: Message + Default {
    /// e.g. `groundtruth.v1.DeviceReport`.
    const FULL_NAME: &'static str;
}

macro_rules! named {
    ($($t:ident),* $(,)?) => {
        $(impl Named for crate::v1::$t {
            const FULL_NAME: &'static str = concat!("groundtruth.v1.", stringify!($t));
        })*
    };
}
named!(
    Batch,
    DeviceReport,
    DeviceIdentity,
    Reading,
    LocationEvidence,
    Ack,
    AgentInfo
);

fn dynamic<M: Named>(msg: &M) -> Result<DynamicMessage, JsonError> {
    let desc = pool()
        .get_message_by_name(M::FULL_NAME)
        .ok_or_else(|| JsonError(format!("{} is not in the descriptor set", M::FULL_NAME)))?;
    DynamicMessage::decode(desc, msg.encode_to_vec().as_slice())
        .map_err(|e| JsonError(format!("re-decoding {}: {e}", M::FULL_NAME)))
}

/// Serialises `msg` in the canonical JSON mapping. Fields at their default value are omitted, as
/// the mapping prescribes.
///
/// # Errors
/// Only if the message is not part of the embedded schema (a build error in practice).
pub fn to_value<M: Named>(msg: &M) -> Result<serde_json::Value, JsonError> {
    let dynamic = dynamic(msg)?;
    let options = SerializeOptions::new().skip_default_fields(true);
    dynamic
        .serialize_with_options(serde_json::value::Serializer, &options)
        .map_err(|e| JsonError(format!("serialising {}: {e}", M::FULL_NAME)))
}

/// Like [`to_value`], as a pretty-printed string.
///
/// # Errors
/// See [`to_value`].
pub fn to_string_pretty<M: Named>(msg: &M) -> Result<String, JsonError> {
    let value = to_value(msg)?;
    serde_json::to_string_pretty(&value).map_err(|e| JsonError(e.to_string()))
}

/// Parses canonical JSON into a message (the inverse of [`to_value`]).
///
/// # Errors
/// If the JSON does not match the message's schema.
pub fn from_str<M: Named>(json: &str) -> Result<M, JsonError> {
    let desc = pool()
        .get_message_by_name(M::FULL_NAME)
        .ok_or_else(|| JsonError(format!("{} is not in the descriptor set", M::FULL_NAME)))?;
    let mut de = serde_json::Deserializer::from_str(json);
    let dynamic = DynamicMessage::deserialize(desc, &mut de)
        .map_err(|e| JsonError(format!("parsing {}: {e}", M::FULL_NAME)))?;
    M::decode(dynamic.encode_to_vec().as_slice())
        .map_err(|e| JsonError(format!("decoding {}: {e}", M::FULL_NAME)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v1::{
        Batch, Component, ComponentKind, DeviceIdentity, DeviceReport, MacAddress, Protocol, Reading,
    };

    fn sample() -> Batch {
        Batch {
            schema_version: 1,
            epoch: 3,
            seq: 18_446_744_073_709_551_615,
            devices: vec![DeviceReport {
                identity: Some(DeviceIdentity {
                    protocol: Protocol::Redfish as i32,
                    serial_number: "GTSRV0000001".into(),
                    macs: vec![MacAddress {
                        address: "02:47:54:10:00:01".into(),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
                readings: vec![Reading {
                    metric: "power".into(),
                    unit: "W".into(),
                    value: 412.0,
                    observed_at: Some(prost_types::Timestamp {
                        seconds: 1_700_000_000,
                        nanos: 0,
                    }),
                    component: Some(Component {
                        kind: ComponentKind::Psu as i32,
                        index: 2,
                        label: "PS2".into(),
                    }),
                    source: String::new(),
                }],
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn canonical_json_uses_camel_case_enum_names_and_string_u64() {
        let v = to_value(&sample()).unwrap();
        assert_eq!(v["schemaVersion"], 1);
        assert_eq!(v["seq"], "18446744073709551615");
        let dev = &v["devices"][0];
        assert_eq!(dev["identity"]["protocol"], "PROTOCOL_REDFISH");
        assert_eq!(dev["identity"]["serialNumber"], "GTSRV0000001");
        assert_eq!(dev["readings"][0]["observedAt"], "2023-11-14T22:13:20Z");
        assert_eq!(dev["readings"][0]["component"]["kind"], "COMPONENT_KIND_PSU");
        // Defaults are omitted.
        assert!(dev["identity"].get("model").is_none());
    }

    #[test]
    fn json_round_trips() {
        let batch = sample();
        let text = to_string_pretty(&batch).unwrap();
        let back: Batch = from_str(&text).unwrap();
        assert_eq!(back, batch);
    }

    #[test]
    fn json_with_wrong_type_is_an_error_not_a_panic() {
        let err = from_str::<Batch>(r#"{"seq": {"x": 1}}"#).unwrap_err();
        assert!(err.to_string().contains("groundtruth.v1.Batch"), "{err}");
    }
}
