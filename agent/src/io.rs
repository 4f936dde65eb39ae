//! Bounded reads of device input. A device (or anything pretending to be one) decides how many
//! bytes it sends; the agent decides how many it reads.

use crate::driver::DriverError;

/// Reads an HTTP body, failing with [`DriverError::TooLarge`] as soon as more than `limit` bytes
/// arrive (not after buffering them), whatever `Content-Length` claims.
pub async fn read_capped(
    mut resp: reqwest::Response,
    limit: usize,
    what: &str,
) -> Result<Vec<u8>, DriverError> {
    if let Some(len) = resp.content_length()
        && len > limit as u64
    {
        return Err(DriverError::TooLarge {
            what: format!("body of {what} (Content-Length {len})"),
            limit: limit as u64,
        });
    }
    let close_delimited = resp.content_length().is_none() && resp.version() <= reqwest::Version::HTTP_10;
    let mut body = Vec::new();
    loop {
        let chunk = match resp.chunk().await {
            Ok(c) => c,
            // HTTP/1.0 servers (Python's http.server, some old BMCs) end a close-delimited body by
            // dropping the TLS connection without close_notify. The body is complete as far as
            // HTTP/1.0 can tell; a truncated document still fails the JSON parse that follows.
            Err(e) if close_delimited && !body.is_empty() && is_unclean_tls_eof(&e) => None,
            Err(e) => {
                return Err(DriverError::Malformed {
                    what: format!("body of {what}"),
                    detail: error_chain(&e),
                });
            }
        };
        let Some(chunk) = chunk else { break };
        if body.len() + chunk.len() > limit {
            return Err(DriverError::TooLarge {
                what: format!("body of {what}"),
                limit: limit as u64,
            });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// An error and all its sources, joined with ": " (reqwest's own `Display` stops at the top).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

fn is_unclean_tls_eof(e: &reqwest::Error) -> bool {
    let chain = error_chain(e);
    chain.contains("close_notify") || chain.contains("unexpected EOF") || chain.contains("UnexpectedEof")
}
