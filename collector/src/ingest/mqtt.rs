//! MQTT ingest: a shared subscription (`$share/<group>/groundtruth/agents/+/+/inventory` and
//! `.../telemetry`) so several collectors split the load; QoS 1 with a persistent session and
//! *manual* PUBACKs: a message is PUBACKed only after its batch is committed and the agent's
//! end-to-end ack has been queued on `groundtruth/agents/<site>/<agent>/ack`. A message that can
//! never be stored (undecodable, or its agent id disagrees with its topic) is counted, logged with
//! its topic, and PUBACKed so the broker does not redeliver it forever.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use groundtruth_proto::topics;
use groundtruth_proto::v1::{Ack, AckStatus, Batch};
use prost::Message as _;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, Publish, QoS};
use tokio::sync::mpsc;

use super::IngestService;

/// Broker connection settings.
#[derive(Clone)]
pub struct MqttIngestSettings {
    pub host: String,
    pub port: u16,
    pub username: Option<String>,
    pub password: Option<String>,
    /// Shared-subscription group; collectors in one group split the agents' messages.
    pub share_group: String,
    /// MQTT client id; must be unique per collector instance and stable across restarts.
    pub client_id: String,
    /// `mqtts://` settings.
    pub tls: Option<MqttTls>,
    /// Interval of the rack/room power publications (`crate::power::publish`); `None`: off.
    pub publish_power: Option<Duration>,
}

/// TLS material for `mqtts://` (PEM bytes).
#[derive(Clone)]
pub struct MqttTls {
    /// CA bundle the broker's certificate must chain to.
    pub ca_pem: Vec<u8>,
    /// Client certificate and key, when the broker wants them.
    pub client_auth: Option<(Vec<u8>, Vec<u8>)>,
}

impl std::fmt::Debug for MqttTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MqttTls")
            .field("client_auth", &self.client_auth.is_some())
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for MqttIngestSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MqttIngestSettings")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("share_group", &self.share_group)
            .field("client_id", &self.client_id)
            .field("tls", &self.tls.is_some())
            .field("publish_power", &self.publish_power)
            .finish()
    }
}

/// Counters of what the MQTT ingest saw.
#[derive(Debug, Default)]
pub struct MqttIngestStats {
    pub committed: AtomicU64,
    pub duplicates: AtomicU64,
    pub malformed: AtomicU64,
    /// SUBACKs received (2 per successful (re)connect): > 0 means the subscriptions are live.
    pub subscribed: AtomicU64,
}

/// Connection options for `settings`' broker (address, TLS, credentials) under `client_id`.
#[must_use]
pub fn options(settings: &MqttIngestSettings, client_id: &str) -> MqttOptions {
    let mut opts = MqttOptions::new(client_id, settings.host.clone(), settings.port);
    opts.set_keep_alive(Duration::from_secs(30));
    if let Some(tls) = &settings.tls {
        crate::install_crypto_provider();
        opts.set_transport(rumqttc::Transport::tls_with_config(
            rumqttc::TlsConfiguration::Simple {
                ca: tls.ca_pem.clone(),
                alpn: None,
                client_auth: tls.client_auth.clone(),
            },
        ));
    }
    opts.set_max_packet_size(64 * 1024 * 1024, 1024 * 1024);
    if let Some(u) = &settings.username {
        opts.set_credentials(u.clone(), settings.password.clone().unwrap_or_default());
    }
    opts
}

/// Runs the MQTT ingest until the task is dropped. Reconnects with backoff.
pub async fn run(settings: MqttIngestSettings, ingest: IngestService, stats: Arc<MqttIngestStats>) {
    let mut opts = options(&settings, &settings.client_id);
    opts.set_clean_session(false);
    opts.set_manual_acks(true);
    let (client, mut eventloop) = AsyncClient::new(opts, 256);
    let (tx, mut rx) = mpsc::channel::<Publish>(256);
    let endpoint = format!("{}:{}", settings.host, settings.port);
    let filters: Vec<String> = ["inventory", "telemetry"]
        .iter()
        .map(|leaf| format!("$share/{}/{}/+/+/{leaf}", settings.share_group, topics::ROOT))
        .collect();

    // The worker commits and acknowledges, one message at a time, in arrival order. It must not
    // run inside the event-loop task: its publishes and PUBACKs are sent by that loop.
    let worker_client = client.clone();
    let worker_stats = Arc::clone(&stats);
    let worker = tokio::spawn(async move {
        while let Some(p) = rx.recv().await {
            handle(&worker_client, &ingest, &worker_stats, &p).await;
        }
    });

    let mut backoff = Duration::from_millis(200);
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(c))) => {
                backoff = Duration::from_millis(200);
                tracing::info!(broker = %endpoint, session_present = c.session_present, "MQTT ingest connected.");
                for f in &filters {
                    if let Err(e) = client.try_subscribe(f.clone(), QoS::AtLeastOnce) {
                        tracing::error!(filter = %f, error = %e, "Could not subscribe.");
                    }
                }
            }
            Ok(Event::Incoming(Packet::SubAck(_))) => {
                stats.subscribed.fetch_add(1, Ordering::Relaxed);
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                if tx.send(p).await.is_err() {
                    break;
                }
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(broker = %endpoint, error = %e, retry_in = ?backoff, "MQTT ingest connection failed; reconnecting.");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    }
    worker.abort();
}

async fn handle(client: &AsyncClient, ingest: &IngestService, stats: &MqttIngestStats, p: &Publish) {
    let Some((site, agent, _leaf)) = topics::parse(&p.topic) else {
        stats.malformed.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(topic = %p.topic, "Ignored a message on an unexpected topic.");
        let _ = client.ack(p).await;
        return;
    };
    // Agents publish protobuf, or the canonical JSON mapping with `mqtt.payload = "json"`.
    let decoded = if p.payload.first() == Some(&b'{') {
        std::str::from_utf8(&p.payload)
            .map_err(|e| e.to_string())
            .and_then(|t| groundtruth_proto::json::from_str::<Batch>(t).map_err(|e| e.to_string()))
    } else {
        Batch::decode(p.payload.as_ref()).map_err(|e| e.to_string())
    };
    let batch = match decoded {
        Ok(b) => b,
        Err(e) => {
            stats.malformed.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(topic = %p.topic, bytes = p.payload.len(), error = %e, "Dropped an undecodable batch.");
            let _ = client.ack(p).await;
            return;
        }
    };
    let claimed = batch
        .agent
        .as_ref()
        .map(|a| topics::level(&a.agent_id))
        .unwrap_or_default();
    if claimed != agent {
        stats.malformed.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(topic = %p.topic, batch_agent = %claimed, "Dropped a batch whose agent id disagrees with its topic.");
        let _ = client.ack(p).await;
        return;
    }
    let ack: Ack = match ingest.handle(&batch).await {
        Ok(a) => a,
        Err(e) => {
            // Not stored: no PUBACK, no agent ack. The agent resends from its spool.
            tracing::error!(topic = %p.topic, seq = batch.seq, error = %e, "Could not commit an MQTT batch; it will be redelivered.");
            return;
        }
    };
    match AckStatus::try_from(ack.status) {
        Ok(AckStatus::Committed) => stats.committed.fetch_add(1, Ordering::Relaxed),
        Ok(AckStatus::Duplicate) => stats.duplicates.fetch_add(1, Ordering::Relaxed),
        _ => stats.malformed.fetch_add(1, Ordering::Relaxed),
    };
    let ack_topic = format!("{}/{site}/{agent}/ack", topics::ROOT);
    if let Err(e) = client
        .publish(ack_topic, QoS::AtLeastOnce, false, ack.encode_to_vec())
        .await
    {
        tracing::warn!(topic = %p.topic, error = %e, "Could not queue the agent's ack; it will resend and get a duplicate ack.");
    }
    if let Err(e) = client.ack(p).await {
        tracing::warn!(topic = %p.topic, error = %e, "Could not PUBACK; the broker may redeliver (deduplicated).");
    }
}
