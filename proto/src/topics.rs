//! MQTT topic layout, shared by agent and collector:
//!
//! ```text
//! groundtruth/agents/<site>/<agent>/inventory   Batch (protobuf), agent → collector, QoS 1
//! groundtruth/agents/<site>/<agent>/telemetry   Batch (protobuf), agent → collector, QoS 1
//! groundtruth/agents/<site>/<agent>/ack         Ack (protobuf), collector → agent, after commit
//! groundtruth/agents/<site>/<agent>/status      "online" / "offline" (retained; last will)
//! groundtruth/agents/<site>/<agent>/events      reserved
//! groundtruth/racks/<site>/<room>/<rack>/power   JSON rack total (retained), collector → dashboards
//! groundtruth/rooms/<site>/<room>/power          JSON room total (retained), collector → dashboards
//! ```
//! `<site>`, `<agent>`, `<room>` and `<rack>` are the names with MQTT's special characters (`/ + # $`) and
//! whitespace replaced by `_`, so a name can never widen a subscription.

use crate::v1::BatchKind;

/// The root every groundtruth topic lives under.
pub const ROOT: &str = "groundtruth/agents";

/// Makes a name safe as one topic level.
#[must_use]
pub fn level(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if matches!(c, '/' | '+' | '#' | '$') || c.is_whitespace() || c.is_control() {
                '_'
            } else {
                c
            }
        })
        .collect();
    if s.is_empty() { "_".into() } else { s }
}

/// Topic prefix of one agent: `groundtruth/agents/<site>/<agent>`.
#[must_use]
pub fn agent_prefix(site: &str, agent: &str) -> String {
    format!("{ROOT}/{}/{}", level(site), level(agent))
}

/// Where a batch of `kind` is published.
#[must_use]
pub fn batch_topic(site: &str, agent: &str, kind: i32) -> String {
    let leaf = if kind == BatchKind::Telemetry as i32 {
        "telemetry"
    } else {
        "inventory"
    };
    format!("{}/{leaf}", agent_prefix(site, agent))
}

/// Where the collector acknowledges an agent's batches.
#[must_use]
pub fn ack_topic(site: &str, agent: &str) -> String {
    format!("{}/ack", agent_prefix(site, agent))
}

/// Retained online/offline status of an agent.
#[must_use]
pub fn status_topic(site: &str, agent: &str) -> String {
    format!("{}/status", agent_prefix(site, agent))
}

/// A broker address from `mqtt://HOST[:PORT]` (1883) or `mqtts://HOST[:PORT]` (TLS, 8883).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerUrl {
    pub host: String,
    pub port: u16,
    pub tls: bool,
}

/// Parses a broker URL.
///
/// # Errors
/// A message naming what is wrong.
pub fn broker_url(text: &str) -> Result<BrokerUrl, String> {
    let u = url::Url::parse(text).map_err(|e| format!("invalid MQTT URL: {e}"))?;
    let tls = match u.scheme() {
        "mqtt" => false,
        "mqtts" => true,
        other => {
            return Err(format!(
                "unsupported scheme '{other}': expected mqtt:// or mqtts://"
            ));
        }
    };
    let host = u
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or("MQTT URL needs a host")?;
    Ok(BrokerUrl {
        host: host.trim_start_matches('[').trim_end_matches(']').to_owned(),
        port: u.port().unwrap_or(if tls { 8883 } else { 1883 }),
        tls,
    })
}

/// Splits `groundtruth/agents/<site>/<agent>/<leaf>` into its parts.
#[must_use]
pub fn parse(topic: &str) -> Option<(&str, &str, &str)> {
    let rest = topic.strip_prefix(ROOT)?.strip_prefix('/')?;
    let mut it = rest.split('/');
    let (site, agent, leaf) = (it.next()?, it.next()?, it.next()?);
    it.next().is_none().then_some((site, agent, leaf))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_cannot_widen_subscriptions() {
        assert_eq!(
            batch_topic("DC 1", "a/+#", BatchKind::Telemetry as i32),
            "groundtruth/agents/DC_1/a___/telemetry"
        );
        assert_eq!(ack_topic("", "x"), "groundtruth/agents/_/x/ack");
    }

    #[test]
    fn broker_urls() {
        let b = broker_url("mqtts://broker.example").unwrap();
        assert_eq!((b.host.as_str(), b.port, b.tls), ("broker.example", 8883, true));
        assert_eq!(broker_url("mqtt://127.0.0.1:28830").unwrap().port, 28830);
        assert!(broker_url("http://x").unwrap_err().contains("mqtts://"));
        assert!(broker_url("nonsense").is_err());
    }

    #[test]
    fn parse_round_trips_and_rejects_others() {
        let t = batch_topic("DC1", "agent-7", BatchKind::Mixed as i32);
        assert_eq!(parse(&t), Some(("DC1", "agent-7", "inventory")));
        assert_eq!(parse("groundtruth/agents/DC1/a/ack/extra"), None);
        assert_eq!(parse("other/DC1/a/ack"), None);
    }
}
