//! Request Tracker 5 through its REST2 API (`/REST/2.0/`, `Authorization: token <token>`):
//! `open` creates a ticket in the configured queue (`POST /ticket`; RT's id is kept in
//! `ticket_refs`), `update` comments on it (`POST /ticket/<id>/comment`), `resolve` comments
//! with the clearing evidence and sets `Status: resolved` (`PUT /ticket/<id>`).

use std::time::Duration;

use serde_json::json;

use super::RtSettings;
use crate::store::DeliveryRow;

/// Largest RT answer read.
const BODY_MAX: usize = 1024 * 1024;

/// The RT client.
#[derive(Debug, Clone)]
pub struct Rt {
    settings: RtSettings,
    client: reqwest::Client,
    base: String,
}

impl Rt {
    /// # Errors
    /// If the HTTP client cannot be built.
    pub fn new(s: &RtSettings) -> Result<Self, String> {
        crate::install_crypto_provider();
        Ok(Self {
            base: format!("{}/REST/2.0", s.url.as_str().trim_end_matches('/')),
            settings: s.clone(),
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .map_err(|e| format!("RT {}: {e}", s.url))?,
        })
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<serde_json::Value, String> {
        let url = format!("{}{path}", self.base);
        let resp = self
            .client
            .request(method.clone(), &url)
            .header("Authorization", format!("token {}", self.settings.token))
            .header("Content-Type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .map_err(|e| format!("RT {method} {url}: {e}"))?;
        let status = resp.status();
        let bytes = super::read_capped(resp, BODY_MAX)
            .await
            .map_err(|e| format!("RT {method} {url}: {e}"))?;
        if !status.is_success() {
            return Err(format!(
                "RT {method} {url} answered HTTP {}: {}",
                status.as_u16(),
                String::from_utf8_lossy(&bytes)
                    .chars()
                    .take(200)
                    .collect::<String>()
            ));
        }
        // Some answers are JSON arrays of messages, some objects; both are fine.
        Ok(serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null))
    }

    /// Delivers one event; returns RT's ticket id after an `open`.
    ///
    /// # Errors
    /// A message naming RT, the request and the cause.
    pub async fn send(&self, d: &DeliveryRow, external_id: Option<&str>) -> Result<Option<String>, String> {
        let (summary, text) = super::event_text(&d.payload);
        match d.action.as_str() {
            "open" => {
                let subject: String = format!("[groundtruth] {summary}").chars().take(200).collect();
                let v = self
                    .call(
                        reqwest::Method::POST,
                        "/ticket",
                        &json!({"Queue": self.settings.queue, "Subject": subject, "Content": text, "ContentType": "text/plain"}),
                    )
                    .await?;
                let id = v["id"]
                    .as_str()
                    .map(str::to_owned)
                    .or_else(|| v["id"].as_u64().map(|n| n.to_string()))
                    .ok_or_else(|| format!("RT created a ticket but its answer has no id: {v}"))?;
                Ok(Some(id))
            }
            action @ ("update" | "resolve") => {
                let id = external_id.ok_or_else(|| {
                    format!("RT {action}: no RT ticket id (its creation was not delivered)")
                })?;
                self.call(
                    reqwest::Method::POST,
                    &format!("/ticket/{id}/comment"),
                    &json!({"Content": text, "ContentType": "text/plain"}),
                )
                .await?;
                if action == "resolve" {
                    self.call(
                        reqwest::Method::PUT,
                        &format!("/ticket/{id}"),
                        &json!({"Status": "resolved"}),
                    )
                    .await?;
                }
                Ok(None)
            }
            other => Err(format!("RT: unknown event {other:?}")),
        }
    }
}
