//! The generic ticket sink: each event POSTed as JSON, signed with HMAC-SHA256 over the exact
//! body bytes with the shared secret:
//!
//! ```text
//! POST <url>
//! Content-Type: application/json
//! X-Groundtruth-Event: open | update | resolve
//! X-Groundtruth-Delivery: <delivery id, unique per event and sink>
//! X-Groundtruth-Signature: sha256=<lower-case hex HMAC-SHA256(secret, body)>
//! ```
//! A receiver recomputes the HMAC over the body it received and compares in constant time; the
//! delivery id lets it drop a redelivery (an event is retried until a 2xx).

use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};

use super::WebhookSettings;
use crate::store::DeliveryRow;

/// The signature header value for a body.
#[must_use]
pub fn signature(secret: &str, body: &[u8]) -> String {
    let mut m = <Hmac<sha2::Sha256> as KeyInit>::new_from_slice(secret.as_bytes())
        .expect("invariant: HMAC accepts keys of any length");
    m.update(body);
    let bytes = m.finalize().into_bytes();
    let mut hex = String::with_capacity(7 + 64);
    hex.push_str("sha256=");
    for b in bytes {
        hex.push_str(&format!("{b:02x}"));
    }
    hex
}

/// Checks a received signature header against the body (constant-time compare).
#[must_use]
pub fn verify(secret: &str, body: &[u8], header: &str) -> bool {
    let want = signature(secret, body);
    want.len() == header.len()
        && want
            .bytes()
            .zip(header.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// The webhook client.
#[derive(Debug, Clone)]
pub struct Webhook {
    settings: WebhookSettings,
    client: reqwest::Client,
}

impl Webhook {
    /// # Errors
    /// If the HTTP client cannot be built.
    pub fn new(s: &WebhookSettings) -> Result<Self, String> {
        crate::install_crypto_provider();
        Ok(Self {
            settings: s.clone(),
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(15))
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .map_err(|e| format!("webhook {}: {e}", s.url))?,
        })
    }

    /// Sends one event; a 2xx answer is delivery.
    ///
    /// # Errors
    /// The transport failure or the non-2xx status (with the start of the answer).
    pub async fn send(&self, d: &DeliveryRow) -> Result<(), String> {
        let body = d.payload.as_bytes().to_vec();
        let resp = self
            .client
            .post(self.settings.url.clone())
            .header("Content-Type", "application/json")
            .header("X-Groundtruth-Event", &d.action)
            .header("X-Groundtruth-Delivery", d.id.to_string())
            .header("X-Groundtruth-Signature", signature(&self.settings.secret, &body))
            .body(body)
            .send()
            .await
            .map_err(|e| format!("webhook {}: {e}", self.settings.url))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(());
        }
        let text = super::read_capped(resp, 4096).await.unwrap_or_default();
        Err(format!(
            "webhook {} answered HTTP {}: {}",
            self.settings.url,
            status.as_u16(),
            String::from_utf8_lossy(&text)
                .chars()
                .take(200)
                .collect::<String>()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_rfc_4231_case_2() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        assert_eq!(
            signature("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert!(verify(
            "Jefe",
            b"what do ya want for nothing?",
            &signature("Jefe", b"what do ya want for nothing?")
        ));
        assert!(!verify(
            "Jefe",
            b"what do ya want for nothing!",
            &signature("Jefe", b"what do ya want for nothing?")
        ));
    }
}
