//! gRPC uplink: one bidirectional `Ingest.Stream` per delivery round; batches go out in order
//! and each comes back acknowledged by `(agent_id, epoch, seq)`.

use std::time::Duration;

use groundtruth_proto::v1::{Ack, AckStatus, Batch, ingest_client::IngestClient};
use tokio_stream::StreamExt;

#[derive(Debug, thiserror::Error)]
pub enum UplinkError {
    #[error("cannot connect to collector at {endpoint}: {detail}")]
    Connect { endpoint: String, detail: String },
    #[error("collector at {endpoint} failed the stream: {detail}")]
    Stream { endpoint: String, detail: String },
    #[error("collector at {endpoint} did not acknowledge {missing} batch(es) within {after:?}")]
    AckTimeout {
        endpoint: String,
        missing: usize,
        after: Duration,
    },
}

/// Sends `batches` and waits until each is acknowledged (committed, duplicate or rejected).
/// Returns the acks in arrival order.
///
/// # Errors
/// Connection failure, a stream error, or missing acks after `timeout`. Batches without an ack
/// must be sent again (the collector deduplicates).
pub async fn deliver(
    endpoint: &str,
    batches: Vec<Batch>,
    timeout: Duration,
) -> Result<Vec<Ack>, UplinkError> {
    let connect = async {
        let channel = tonic::transport::Endpoint::from_shared(endpoint.to_owned())
            .map_err(|e| e.to_string())?
            .connect_timeout(timeout)
            .connect()
            .await
            .map_err(|e| {
                let mut d = e.to_string();
                let mut s = std::error::Error::source(&e);
                while let Some(x) = s {
                    d = format!("{d}: {x}");
                    s = x.source();
                }
                d
            })?;
        Ok::<_, String>(IngestClient::new(channel))
    };
    let mut client = connect.await.map_err(|detail| UplinkError::Connect {
        endpoint: endpoint.to_owned(),
        detail,
    })?;
    let mut waiting: Vec<(u64, u64)> = batches.iter().map(|b| (b.epoch, b.seq)).collect();
    let outbound = tokio_stream::iter(batches);
    let stream_err = |detail: String| UplinkError::Stream {
        endpoint: endpoint.to_owned(),
        detail,
    };
    let work = async {
        let mut inbound = client
            .stream(outbound)
            .await
            .map_err(|s| stream_err(format!("{}: {}", s.code(), s.message())))?
            .into_inner();
        let mut acks = Vec::new();
        while !waiting.is_empty() {
            match inbound.next().await {
                Some(Ok(ack)) => {
                    waiting.retain(|&k| k != (ack.epoch, ack.seq));
                    if ack.status == AckStatus::Rejected as i32 {
                        tracing::error!(seq = ack.seq, reason = %ack.message, "Collector rejected a batch; it is dropped.");
                    }
                    acks.push(ack);
                }
                Some(Err(s)) => return Err(stream_err(format!("{}: {}", s.code(), s.message()))),
                None => {
                    return Err(stream_err(format!(
                        "stream closed with {} batch(es) unacknowledged",
                        waiting.len()
                    )));
                }
            }
        }
        Ok(acks)
    };
    let result = tokio::time::timeout(timeout, work).await;
    result.unwrap_or_else(|_| {
        Err(UplinkError::AckTimeout {
            endpoint: endpoint.to_owned(),
            missing: waiting.len(),
            after: timeout,
        })
    })
}
