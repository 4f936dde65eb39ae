//! gRPC ingest: the `groundtruth.v1.Ingest/Stream` service. Each batch is committed to the store
//! and only then acknowledged; a store failure ends the stream with `UNAVAILABLE` so the agent
//! keeps the batch and retries (never an ack for data that is not on disk).

use std::pin::Pin;

use groundtruth_proto::v1::{Ack, AckStatus, Batch, ingest_server::Ingest};
use tokio::sync::mpsc;
use tokio_stream::{Stream, StreamExt, wrappers::ReceiverStream};
use tonic::{Request, Response, Status, Streaming};

use crate::store::{Commit, Store, StoreError};

/// Counters of what ingest did, over all transports.
#[derive(Debug, Default)]
pub struct IngestStats {
    pub committed: std::sync::atomic::AtomicU64,
    pub duplicates: std::sync::atomic::AtomicU64,
    pub rejected: std::sync::atomic::AtomicU64,
    pub store_errors: std::sync::atomic::AtomicU64,
}

#[derive(Debug, Clone)]
pub struct IngestService {
    store: Store,
    stats: std::sync::Arc<IngestStats>,
    /// Nudged after every commit that added data (the CMDB sync task listens).
    committed: tokio::sync::watch::Sender<u64>,
}

impl IngestService {
    #[must_use]
    pub fn new(store: Store, committed: tokio::sync::watch::Sender<u64>) -> Self {
        Self {
            store,
            stats: std::sync::Arc::default(),
            committed,
        }
    }

    /// The counters (shared by every clone of this service).
    #[must_use]
    pub fn stats(&self) -> std::sync::Arc<IngestStats> {
        std::sync::Arc::clone(&self.stats)
    }

    /// Commits one batch and builds its ack. `Err` means "not stored; tell the agent to retry".
    ///
    /// # Errors
    /// A database failure.
    pub async fn handle(&self, batch: &Batch) -> Result<Ack, StoreError> {
        let agent_id = batch
            .agent
            .as_ref()
            .map(|a| a.agent_id.clone())
            .unwrap_or_default();
        let mut ack = Ack {
            agent_id: agent_id.clone(),
            epoch: batch.epoch,
            seq: batch.seq,
            ..Default::default()
        };
        match self.store.commit_batch(batch).await {
            Ok(Commit::Committed) => {
                self.stats
                    .committed
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                ack.status = AckStatus::Committed as i32;
                // Derived snapshot for the ITSM rules; the batch itself is already safe.
                if let Err(e) = self.store.record_attributes(batch).await {
                    tracing::warn!(agent = %agent_id, seq = batch.seq, error = %e, "Cannot record device attributes.");
                }
                self.committed.send_modify(|n| *n += 1);
                tracing::info!(agent = %agent_id, epoch = batch.epoch, seq = batch.seq, devices = batch.devices.len(), "Committed batch.");
            }
            Ok(Commit::Duplicate) => {
                self.stats
                    .duplicates
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                ack.status = AckStatus::Duplicate as i32;
                tracing::debug!(agent = %agent_id, seq = batch.seq, "Dropped duplicate batch.");
            }
            Err(StoreError::Invalid(why)) => {
                self.stats
                    .rejected
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                ack.status = AckStatus::Rejected as i32;
                tracing::warn!(agent = %agent_id, seq = batch.seq, reason = %why, "Rejected malformed batch.");
                ack.message = why;
            }
            Err(e) => {
                self.stats
                    .store_errors
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                return Err(e);
            }
        }
        Ok(ack)
    }
}

type AckStream = Pin<Box<dyn Stream<Item = Result<Ack, Status>> + Send>>;

#[tonic::async_trait]
impl Ingest for IngestService {
    type StreamStream = AckStream;

    async fn stream(
        &self,
        request: Request<Streaming<Batch>>,
    ) -> Result<Response<Self::StreamStream>, Status> {
        let peer = request.remote_addr().map(|a| a.to_string()).unwrap_or_default();
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(64);
        let this = self.clone();
        tokio::spawn(async move {
            while let Some(item) = inbound.next().await {
                let batch = match item {
                    Ok(b) => b,
                    Err(status) => {
                        tracing::warn!(peer = %peer, error = %status, "Ingest stream broke (malformed message or disconnect).");
                        break;
                    }
                };
                let reply = this.handle(&batch).await.map_err(|e| {
                    tracing::error!(peer = %peer, error = %e, "Could not commit batch; asking the agent to retry.");
                    Status::unavailable(format!("store failure: {e}"))
                });
                let stop = reply.is_err();
                if tx.send(reply).await.is_err() || stop {
                    break;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
