//! Uplinks: how batches leave the agent. gRPC today; MQTT and the durable spool in front of both
//! come with issue #8. The contract that holds already: a batch counts as delivered only when the
//! collector's [`Ack`] for its `(agent_id, epoch, seq)` arrives, which the collector sends after
//! its store commit.

pub mod grpc;
pub mod sequence;
