//! The groundtruth wire schema, version 1 (`proto/groundtruth/v1/groundtruth.proto`).
//!
//! Generated prost messages and tonic client/server for the `Ingest` service live in [`v1`].
//! [`json`] gives the canonical proto3 JSON mapping of any v1 message, through prost-reflect and the
//! descriptor set embedded at build time, so the JSON the agent prints is exactly what any other
//! protobuf implementation would print for the same message.

#![allow(missing_debug_implementations, unreachable_pub)]

/// Generated code for package `groundtruth.v1`.
#[allow(clippy::all, clippy::pedantic)]
pub mod v1 {
    tonic::include_proto!("groundtruth.v1");

    /// Minor version of the v1 schema this crate was built from (`Batch.schema_version`).
    pub const SCHEMA_VERSION: u32 = 1;
}

/// Encoded `FileDescriptorSet` of the schema (with its imports).
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/groundtruth_descriptor.bin"));

pub mod identity;
pub mod json;
pub mod mac;
pub mod topics;

/// Converts a `std::time::SystemTime` to a protobuf `Timestamp`.
#[must_use]
pub fn timestamp(t: std::time::SystemTime) -> prost_types::Timestamp {
    prost_types::Timestamp::from(t)
}
