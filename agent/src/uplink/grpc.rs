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

/// The collectors an agent sends to, in the configured order (issue #22). A delivery goes to
/// the collector that answered last; when it fails (down, unreachable, a broken stream, acks
/// missing), the others are tried in order, and the first that acknowledges becomes the one to
/// use. Batches stay in the agent's spool until acknowledged, so a fail-over loses none; a
/// batch a failed collector committed without acknowledging is sent again, and collectors on one
/// database store it once (deduplicated by agent, epoch and sequence number).
#[derive(Debug)]
pub struct Collectors {
    endpoints: Vec<String>,
    tls: GrpcTls,
    current: usize,
}

impl Collectors {
    #[must_use]
    pub fn new(endpoints: Vec<String>, tls: GrpcTls) -> Self {
        Self {
            endpoints,
            tls,
            current: 0,
        }
    }

    /// The collector deliveries go to now.
    #[must_use]
    pub fn current(&self) -> &str {
        self.endpoints.get(self.current).map_or("", String::as_str)
    }

    /// [`deliver`] to the current collector, failing over to the others in order.
    ///
    /// # Errors
    /// The last collector's error when none acknowledged.
    pub async fn deliver(&mut self, batches: Vec<Batch>, timeout: Duration) -> Result<Vec<Ack>, UplinkError> {
        let n = self.endpoints.len();
        let mut last = None;
        for i in 0..n {
            let at = (self.current + i) % n;
            let endpoint = &self.endpoints[at];
            match deliver(endpoint, &self.tls, batches.clone(), timeout).await {
                Ok(acks) => {
                    if at != self.current {
                        tracing::warn!(from = %self.endpoints[self.current], to = %endpoint, "Collector fail-over: delivering to the next collector.");
                        self.current = at;
                    }
                    return Ok(acks);
                }
                Err(e) => {
                    if n > 1 {
                        tracing::warn!(collector = %endpoint, error = %e, "Collector did not take the batches; trying the next one.");
                    }
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| UplinkError::Connect {
            endpoint: String::new(),
            detail: "no collector configured".into(),
        }))
    }
}
