//! Ingest: batches arrive over gRPC ([`grpc`]) or MQTT ([`mqtt`]); both go through
//! [`IngestService::handle`], which commits to the store before anything is acknowledged.

pub mod grpc;
pub mod mqtt;

pub use grpc::IngestService;
