//! MQTT uplink (rumqttc, QoS 1, persistent session): MQTT 3.1.1 by default, MQTT 5 with
//! `[mqtt] protocol = "5"`.
//!
//! A broker PUBACK is *not* delivery: rumqttc drops unacknowledged and even unsent QoS 1
//! messages on a reconnect without a session (`../shared/CRATES.md`), and a broker may drop
//! queued messages too. So a batch leaves the spool only when the collector's [`Ack`] arrives on
//! `groundtruth/agents/<site>/<agent>/ack`, which the collector publishes after its commit.
//! Anything unacknowledged is simply published again from the spool on the next round.
//!
//! The connection lives in a background task that polls rumqttc's event loop (reconnecting with
//! backoff), subscribes to the ack topic after every CONNACK, publishes a retained `online`
//! status, and leaves a retained `offline` last will.
//!
//! What MQTT 5 adds here: a session expiry (`mqtt.session_expiry`), so the broker forgets an
//! agent that is gone for good instead of keeping its session forever; a message expiry on every
//! batch ([`BATCH_EXPIRY`]), so while the collector is away the broker does not pile up the copies
//! the agent republishes from its spool (an expired batch is not lost: it has no ack, so the
//! agent sends it again); and a content type, payload format indicator and user properties
//! (`schema_version`, `kind`, `seq`) that tell consumers the encoding without decoding.

use std::time::Duration;

use groundtruth_proto::topics;
use groundtruth_proto::v1::{Ack, Batch};
use prost::Message as _;
use rumqttc::{AsyncClient, Event, LastWill, MqttOptions, Packet, QoS};
use tokio::sync::{mpsc, watch};

use super::grpc::UplinkError;
use crate::secret::Secret;

/// Where and how to connect.
#[derive(Debug, Clone)]
pub struct MqttSettings {
    pub host: String,
    pub port: u16,
    pub username: Option<String>,
    pub password: Option<Secret>,
    pub site: String,
    pub agent_id: String,
    pub keep_alive: Duration,
    /// `Some` for `mqtts://`.
    pub tls: Option<MqttTls>,
    /// Publish batches as the canonical JSON mapping instead of protobuf (for consumers that
    /// cannot decode protobuf; about 3× larger). The collector accepts both.
    pub json: bool,
    /// Speak MQTT 5 (`protocol = "5"`) with this session expiry; `None`: MQTT 3.1.1.
    pub v5_session_expiry: Option<Duration>,
}

/// MQTT 5 message expiry of a batch: longer than the agent's longest resend backoff (60 s) plus
/// a delivery, short enough that a broker holding batches for an absent collector drops the
/// stale copies the agent has republished meanwhile.
pub const BATCH_EXPIRY: Duration = Duration::from_secs(600);

/// TLS material for `mqtts://` (PEM bytes, read at config load).
#[derive(Clone, PartialEq, Eq)]
pub struct MqttTls {
    /// CA bundle the broker's certificate must chain to (for public CAs, the system bundle
    /// `/etc/ssl/certs/ca-certificates.crt`, which is the default).
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

impl MqttTls {
    /// The rumqttc transport for these settings.
    #[must_use]
    pub fn transport(&self) -> rumqttc::Transport {
        crate::install_crypto_provider();
        rumqttc::Transport::tls_with_config(rumqttc::TlsConfiguration::Simple {
            ca: self.ca_pem.clone(),
            alpn: None,
            client_auth: self.client_auth.clone(),
        })
    }
}

/// A batch as an MQTT payload: protobuf, or its canonical JSON when asked (falling back to
/// protobuf if the JSON mapping fails, which would be a schema bug).
fn payload(b: &Batch, json: bool) -> Vec<u8> {
    if json {
        match groundtruth_proto::json::to_value(b).map(|v| v.to_string()) {
            Ok(text) => return text.into_bytes(),
            Err(e) => tracing::error!(error = %e, "Cannot render a batch as JSON; sending protobuf."),
        }
    }
    b.encode_to_vec()
}

/// The client of either protocol version.
#[derive(Debug, Clone)]
enum Client {
    V4(AsyncClient),
    V5(rumqttc::v5::AsyncClient),
}

/// A running MQTT connection for one agent.
#[derive(Debug)]
pub struct MqttUplink {
    client: Client,
    settings: MqttSettings,
    acks: mpsc::Receiver<Ack>,
    /// `Ok(())` while connected, else the last connection error (or "connecting").
    state: watch::Receiver<Result<(), String>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for MqttUplink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The MQTT client id: one per agent, so the broker keeps its session across restarts.
fn client_id(settings: &MqttSettings) -> String {
    format!("groundtruth-agent-{}", topics::level(&settings.agent_id))
}

/// What one turn of an event loop brought, whatever the protocol version.
enum Turn {
    /// Connected; the ack subscription and the `online` status are queued.
    Connected {
        session_present: bool,
    },
    /// A message on the ack topic.
    Ack(Result<Ack, prost::DecodeError>),
    Other,
    Failed(String),
}

/// One protocol version's event loop, as the connection task drives it.
trait Connection: Send + 'static {
    fn turn(&mut self) -> impl std::future::Future<Output = Turn> + Send;
}

/// An event loop with what it answers a connection with.
struct Session<C, E> {
    events: E,
    client: C,
    ack_topic: String,
    status: String,
}

impl Connection for Session<AsyncClient, rumqttc::EventLoop> {
    async fn turn(&mut self) -> Turn {
        match self.events.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(c))) => {
                // Requests go through rumqttc's channel; the event loop (this task) sends them.
                let _ = self
                    .client
                    .try_subscribe(self.ack_topic.clone(), QoS::AtLeastOnce);
                let _ = self
                    .client
                    .try_publish(self.status.clone(), QoS::AtLeastOnce, true, "online");
                Turn::Connected {
                    session_present: c.session_present,
                }
            }
            Ok(Event::Incoming(Packet::Publish(p))) if p.topic == self.ack_topic => {
                Turn::Ack(Ack::decode(p.payload.as_ref()))
            }
            Ok(_) => Turn::Other,
            Err(e) => Turn::Failed(e.to_string()),
        }
    }
}

impl Connection for Session<rumqttc::v5::AsyncClient, rumqttc::v5::EventLoop> {
    async fn turn(&mut self) -> Turn {
        use rumqttc::v5::mqttbytes::QoS as Q5;
        use rumqttc::v5::mqttbytes::v5::Packet as P5;
        match self.events.poll().await {
            Ok(rumqttc::v5::Event::Incoming(P5::ConnAck(c))) => {
                let _ = self.client.try_subscribe(self.ack_topic.clone(), Q5::AtLeastOnce);
                let _ = self
                    .client
                    .try_publish(self.status.clone(), Q5::AtLeastOnce, true, "online");
                Turn::Connected {
                    session_present: c.session_present,
                }
            }
            Ok(rumqttc::v5::Event::Incoming(P5::Publish(p)))
                if p.topic.as_ref() == self.ack_topic.as_bytes() =>
            {
                Turn::Ack(Ack::decode(p.payload.as_ref()))
            }
            Ok(_) => Turn::Other,
            Err(e) => Turn::Failed(e.to_string()),
        }
    }
}

/// The user name and password of `settings`, for either version's options.
fn credentials(settings: &MqttSettings) -> Option<(String, String)> {
    settings.username.as_ref().map(|user| {
        let password = settings.password.as_ref().map(|p| p.expose().to_owned());
        (user.clone(), password.unwrap_or_default())
    })
}

impl MqttUplink {
    /// Starts the connection task (returns at once; the connection comes up in the background).
    #[must_use]
    pub fn start(settings: MqttSettings) -> Self {
        if settings.v5_session_expiry.is_some() {
            return Self::start_v5(settings);
        }
        let mut opts = MqttOptions::new(client_id(&settings), settings.host.clone(), settings.port);
        opts.set_keep_alive(settings.keep_alive);
        if let Some(tls) = &settings.tls {
            opts.set_transport(tls.transport());
        }
        // A persistent session, so the broker keeps our ack subscription and queued acks while we
        // are away.
        opts.set_clean_session(false);
        opts.set_max_packet_size(64 * 1024 * 1024, 1024 * 1024);
        if let Some((user, password)) = credentials(&settings) {
            opts.set_credentials(user, password);
        }
        let status = topics::status_topic(&settings.site, &settings.agent_id);
        opts.set_last_will(LastWill::new(status.clone(), "offline", QoS::AtLeastOnce, true));
        let (client, events) = AsyncClient::new(opts, 128);
        let endpoint = format!("{}:{}", settings.host, settings.port);
        Self::run(settings, Client::V4(client.clone()), endpoint, |ack_topic| {
            Session {
                events,
                client,
                ack_topic,
                status,
            }
        })
    }

    /// [`MqttUplink::start`] over MQTT 5: the same session, topics and acks, plus the session
    /// expiry and the batches' properties (module docs).
    fn start_v5(settings: MqttSettings) -> Self {
        use rumqttc::v5::mqttbytes::QoS as Q5;
        use rumqttc::v5::mqttbytes::v5::LastWill as Will5;
        use rumqttc::v5::{AsyncClient as Client5, MqttOptions as Options5};
        let mut opts = Options5::new(client_id(&settings), settings.host.clone(), settings.port);
        opts.set_keep_alive(settings.keep_alive);
        if let Some(tls) = &settings.tls {
            opts.set_transport(tls.transport());
        }
        // MQTT 5 ends a session at disconnect unless it has an expiry: clean_start = false
        // alone is not a persistent session.
        opts.set_clean_start(false);
        let expiry = settings.v5_session_expiry.unwrap_or_default();
        opts.set_session_expiry_interval(Some(u32::try_from(expiry.as_secs()).unwrap_or(u32::MAX)));
        // Incoming packets (acks) are small; this is the largest the broker may send us.
        opts.set_max_packet_size(Some(1024 * 1024));
        if let Some((user, password)) = credentials(&settings) {
            opts.set_credentials(user, password);
        }
        let status = topics::status_topic(&settings.site, &settings.agent_id);
        opts.set_last_will(Will5::new(status.clone(), "offline", Q5::AtLeastOnce, true, None));
        let (client, events) = Client5::new(opts, 128);
        let endpoint = format!("{}:{} (MQTT 5)", settings.host, settings.port);
        Self::run(settings, Client::V5(client.clone()), endpoint, |ack_topic| {
            Session {
                events,
                client,
                ack_topic,
                status,
            }
        })
    }

    /// Spawns the connection task over the event loop `session` makes for the ack topic: it
    /// reconnects with backoff, reports the connection state and passes acks on.
    fn run<L: Connection>(
        settings: MqttSettings,
        client: Client,
        endpoint: String,
        session: impl FnOnce(String) -> L,
    ) -> Self {
        let (ack_tx, acks) = mpsc::channel(1024);
        let (conn_tx, state) = watch::channel(Err("still connecting".to_owned()));
        let ack_topic = topics::ack_topic(&settings.site, &settings.agent_id);
        let mut events = session(ack_topic.clone());
        let task = tokio::spawn(async move {
            let mut backoff = Duration::from_millis(200);
            loop {
                match events.turn().await {
                    Turn::Connected { session_present } => {
                        backoff = Duration::from_millis(200);
                        tracing::info!(broker = %endpoint, session_present, "Connected to the MQTT broker.");
                        let _ = conn_tx.send(Ok(()));
                    }
                    Turn::Ack(Ok(ack)) => {
                        let _ = ack_tx.try_send(ack);
                    }
                    Turn::Ack(Err(e)) => {
                        tracing::warn!(topic = %ack_topic, error = %e, "Ignored a malformed ack.");
                    }
                    Turn::Other => {}
                    Turn::Failed(e) => {
                        let _ = conn_tx.send(Err(e.clone()));
                        tracing::warn!(broker = %endpoint, error = %e, retry_in = ?backoff, "MQTT connection failed; reconnecting.");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(30));
                    }
                }
            }
        });
        Self {
            client,
            settings,
            acks,
            state,
            task,
        }
    }

    /// Publishes one batch (QoS 1) with the properties of the protocol version.
    async fn publish(&self, b: &Batch) -> Result<(), String> {
        let topic = topics::batch_topic(&self.settings.site, &self.settings.agent_id, b.kind);
        let body = payload(b, self.settings.json);
        match &self.client {
            Client::V4(c) => c
                .publish(topic, QoS::AtLeastOnce, false, body)
                .await
                .map_err(|e| e.to_string()),
            Client::V5(c) => {
                let props = rumqttc::v5::mqttbytes::v5::PublishProperties {
                    payload_format_indicator: Some(u8::from(self.settings.json)),
                    message_expiry_interval: Some(u32::try_from(BATCH_EXPIRY.as_secs()).unwrap_or(u32::MAX)),
                    content_type: Some(if self.settings.json {
                        "application/json".into()
                    } else {
                        "application/x-protobuf; messageType=groundtruth.v1.Batch".into()
                    }),
                    user_properties: vec![
                        ("schema_version".into(), b.schema_version.to_string()),
                        (
                            "kind".into(),
                            groundtruth_proto::v1::BatchKind::try_from(b.kind)
                                .map(|k| k.as_str_name().to_owned())
                                .unwrap_or_default(),
                        ),
                        ("seq".into(), format!("{}/{}", b.epoch, b.seq)),
                    ],
                    ..Default::default()
                };
                c.publish_with_properties(
                    topic,
                    rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
                    false,
                    body,
                    props,
                )
                .await
                .map_err(|e| e.to_string())
            }
        }
    }

    /// Publishes `batches` (QoS 1) and waits up to `timeout` for the collector's acks. Returns the
    /// acks that arrived (possibly also for batches of earlier rounds); batches without an ack stay
    /// in the spool for the next round.
    ///
    /// # Errors
    /// If the broker is not reachable within `timeout`.
    pub async fn deliver(&mut self, batches: Vec<Batch>, timeout: Duration) -> Result<Vec<Ack>, UplinkError> {
        let endpoint = format!("mqtt://{}:{}", self.settings.host, self.settings.port);
        let deadline = tokio::time::Instant::now() + timeout;
        let mut state = self.state.clone();
        if tokio::time::timeout_at(deadline, state.wait_for(Result::is_ok))
            .await
            .is_err()
        {
            let last = self.state.borrow().clone().err().unwrap_or_default();
            return Err(UplinkError::Connect {
                endpoint,
                detail: format!("not connected to the broker within {timeout:?}: {last}"),
            });
        }
        let mut waiting: Vec<(u64, u64)> = batches.iter().map(|b| (b.epoch, b.seq)).collect();
        for b in &batches {
            match tokio::time::timeout_at(deadline, self.publish(b)).await {
                Ok(Ok(())) => {}
                Ok(Err(detail)) => {
                    return Err(UplinkError::Stream { endpoint, detail });
                }
                Err(_) => break,
            }
        }
        let mut acks = Vec::new();
        while !waiting.is_empty() {
            match tokio::time::timeout_at(deadline, self.acks.recv()).await {
                Ok(Some(ack)) => {
                    waiting.retain(|&k| k != (ack.epoch, ack.seq));
                    acks.push(ack);
                }
                Ok(None) | Err(_) => break,
            }
        }
        // Acks that arrived late for earlier rounds are welcome too.
        while let Ok(ack) = self.acks.try_recv() {
            acks.push(ack);
        }
        if !waiting.is_empty() {
            tracing::warn!(broker = %endpoint, unacknowledged = waiting.len(), "Some batches were not acknowledged by the collector in time; they stay spooled.");
        }
        Ok(acks)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_payload_is_canonical_json_of_the_batch() {
        let b = Batch {
            epoch: 2,
            seq: 7,
            ..Default::default()
        };
        let text = String::from_utf8(payload(&b, true)).unwrap();
        assert!(text.starts_with('{') && text.contains("\"seq\":\"7\""), "{text}");
        assert_eq!(groundtruth_proto::json::from_str::<Batch>(&text).unwrap(), b);
        assert_eq!(payload(&b, false), b.encode_to_vec());
    }
}
