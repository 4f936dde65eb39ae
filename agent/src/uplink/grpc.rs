//! gRPC uplink: one bidirectional `Ingest.Stream` per delivery round; batches go out in order
//! and each comes back acknowledged by `(agent_id, epoch, seq)`.

use std::time::Duration;

use groundtruth_proto::v1::{Ack, AckStatus, Batch, ingest_client::IngestClient};
use tokio_stream::StreamExt;

/// TLS material for an `https://` collector endpoint (PEM bytes, read at config load).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct GrpcTls {
    /// CA bundle; `None` = the system's roots.
    pub ca_pem: Option<Vec<u8>>,
    pub client_cert_pem: Option<Vec<u8>>,
    pub client_key_pem: Option<Vec<u8>>,
    pub server_name: Option<String>,
}

impl std::fmt::Debug for GrpcTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrpcTls")
            .field("ca", &self.ca_pem.is_some())
            .field("client_cert", &self.client_cert_pem.is_some())
            .field("client_key", &self.client_key_pem.as_ref().map(|_| "***"))
            .field("server_name", &self.server_name)
            .finish()
    }
}

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
    tls: &GrpcTls,
    batches: Vec<Batch>,
    timeout: Duration,
) -> Result<Vec<Ack>, UplinkError> {
    let connect = async {
        let mut ep = tonic::transport::Endpoint::from_shared(endpoint.to_owned())
            .map_err(|e| e.to_string())?
            .connect_timeout(timeout);
        if endpoint.starts_with("https://") {
            crate::install_crypto_provider();
            let mut cfg = tonic::transport::ClientTlsConfig::new();
            cfg = match &tls.ca_pem {
                Some(ca) => cfg.ca_certificate(tonic::transport::Certificate::from_pem(ca)),
                None => cfg.with_native_roots(),
            };
            if let (Some(cert), Some(key)) = (&tls.client_cert_pem, &tls.client_key_pem) {
                cfg = cfg.identity(tonic::transport::Identity::from_pem(cert, key));
            }
            if let Some(name) = &tls.server_name {
                cfg = cfg.domain_name(name.clone());
            }
            ep = ep.tls_config(cfg).map_err(|e| format!("TLS settings: {e}"))?;
        }
        let channel = ep.connect().await.map_err(|e| {
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
