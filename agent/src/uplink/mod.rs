//! Uplinks: how batches leave the agent, over gRPC or MQTT, always from the durable spool. The contract that holds already: a batch counts as delivered only when the
//! collector's [`Ack`] for its `(agent_id, epoch, seq)` arrives, which the collector sends after
//! its store commit.

pub mod grpc;
pub mod mqtt;
pub mod sequence;
