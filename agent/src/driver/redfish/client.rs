//! Redfish transport: TLS (CA bundle, `?insecure`, `?pin=sha256:<hex>`), SessionService login with
//! Basic fallback, session reuse across polls, bounded requests in flight, Retry-After, bounded
//! bodies.
//!
//! TLS is rustls (through reqwest) unless the target says `?tls=openssl`: then requests go through
//! hyper-util over OpenSSL at security level 0, for BMCs that speak only TLS 1.0/1.1 or need RSA
//! key exchange / CBC suites (rustls has none of these). Requests are built with reqwest either
//! way and answers come back as `reqwest::Response`, so the rest of the driver is the same.
//!
//! Sessions are never leaked: a poll leases the endpoint's idle session (or logs in); a poll that
//! ends normally hands it back for the next poll, and a lease dropped any other way (error path,
//! deadline, cancellation) spawns the `DELETE` of its session. [`close_all_sessions`] logs every
//! idle session out (the one-shot CLI and the service's shutdown call it).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde::de::DeserializeOwned;
use tokio::sync::Semaphore;

use super::Inventory;
use crate::driver::{DriverError, PollCx};
use crate::secret::Secret;
use crate::target::RedfishTarget;

const USER_AGENT: &str = concat!("groundtruth-agent/", env!("CARGO_PKG_VERSION"));

/// Longest `Retry-After` a poll waits for (once) before giving up on a busy BMC.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(10);
/// An idle session older than this is logged out rather than reused (BMC session timeouts are
/// commonly 30 min; reusing a nearly expired one only costs a 401 and a new login).
const SESSION_MAX_IDLE: Duration = Duration::from_secs(20 * 60);

#[derive(Debug, Clone)]
struct Session {
    token: Secret,
    /// Absolute path of the session resource (the `Location` header), for the logout.
    location: Option<String>,
    idle_since: Instant,
}

/// State kept per endpoint + user + TLS settings across polls.
pub struct Endpoint {
    http: Http,
    base: url::Url,
    user: Option<String>,
    password: Option<Secret>,
    inflight: Semaphore,
    idle_session: Mutex<Option<Session>>,
    /// The service has no usable SessionService (absent, or it answered a login without a
    /// token): Basic auth from now on.
    no_sessions: AtomicBool,
    /// `$expand` was refused once: plain GETs from now on.
    pub(super) no_expand: AtomicBool,
    /// The service root offers `$expand` (ProtocolFeaturesSupported), as last read.
    pub(super) expand_offered: AtomicBool,
    /// `$select` was refused once: plain GETs from now on.
    pub(super) no_select: AtomicBool,
    pub(super) inventory: Mutex<Option<(Instant, Arc<Inventory>)>>,
    /// Counters for tests and benchmarks: requests sent, sessions created and deleted.
    pub requests: AtomicUsize,
    pub logins: AtomicUsize,
    pub logouts: AtomicUsize,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("base", &self.base.as_str())
            .finish_non_exhaustive()
    }
}

static ENDPOINTS: LazyLock<Mutex<HashMap<String, Arc<Endpoint>>>> = LazyLock::new(Default::default);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn cache_key(t: &RedfishTarget, cx: &PollCx) -> String {
    // The password is part of the identity of the cached session; hash it, never keep it here.
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    t.password.as_ref().map(Secret::expose).hash(&mut h);
    format!(
        "{}|{}|{:x}|{}|{:?}|{:?}|{}|{:?}|{}",
        t.base,
        t.user.as_deref().unwrap_or_default(),
        h.finish(),
        t.verify_tls,
        t.ca_file,
        t.pin_sha256,
        t.max_inflight,
        // The HTTP client carries the request timeout.
        cx.limits.request_timeout,
        t.tls_openssl
    )
}

/// The shared state of this target's endpoint, created on first use.
///
/// # Errors
/// TLS setup problems (unreadable CA file, bad pin).
pub fn endpoint(t: &RedfishTarget, cx: &PollCx) -> Result<Arc<Endpoint>, DriverError> {
    let key = cache_key(t, cx);
    if let Some(e) = lock(&ENDPOINTS).get(&key) {
        return Ok(Arc::clone(e));
    }
    let http = if t.tls_openssl && t.base.scheme() == "https" {
        // Logged once per endpoint (the cache lives as long as the process), not every poll.
        tracing::warn!(endpoint = %t.base, "Redfish target uses OpenSSL at security level 0 (?tls=openssl): TLS 1.0/1.1 and legacy ciphers are accepted for this target only.");
        openssl_client(t, cx)?
    } else {
        Http::Rustls(http_client(t, cx)?)
    };
    if !t.verify_tls {
        tracing::warn!(endpoint = %t.base, "TLS certificate verification is OFF for this Redfish target (?insecure).");
    }
    let e = Arc::new(Endpoint {
        http,
        base: t.base.clone(),
        user: t.user.clone(),
        password: t.password.clone(),
        inflight: Semaphore::new(t.max_inflight.max(1)),
        idle_session: Mutex::new(None),
        no_sessions: AtomicBool::new(false),
        no_expand: AtomicBool::new(false),
        no_select: AtomicBool::new(false),
        expand_offered: AtomicBool::new(false),
        inventory: Mutex::new(None),
        requests: AtomicUsize::new(0),
        logins: AtomicUsize::new(0),
        logouts: AtomicUsize::new(0),
    });
    Ok(Arc::clone(lock(&ENDPOINTS).entry(key).or_insert(e)))
}

/// Logs out every idle session of every endpoint (waits for the DELETEs, each bounded by the
/// client's request timeout). Call before the process exits.
pub async fn close_all_sessions() {
    let endpoints: Vec<Arc<Endpoint>> = lock(&ENDPOINTS).values().cloned().collect();
    for e in endpoints {
        e.close().await;
    }
}

type OpenSslClient = hyper_util::client::legacy::Client<
    hyper_openssl::client::legacy::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    reqwest::Body,
>;

/// The HTTP side of an endpoint.
enum Http {
    Rustls(reqwest::Client),
    OpenSsl {
        /// Builds the requests (headers, JSON, Basic auth) exactly as the rustls path does; never
        /// sends (it has no TLS backend configured for use).
        builder: reqwest::Client,
        client: Box<OpenSslClient>,
        timeout: Duration,
    },
}

/// Why a request got no answer.
#[derive(Debug)]
enum SendError {
    Reqwest(reqwest::Error),
    /// The OpenSSL path (hyper-util); `timeout` when the request timeout ran out.
    OpenSsl {
        timeout: bool,
        detail: String,
    },
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Reqwest(e) => f.write_str(&crate::io::error_chain(e)),
            Self::OpenSsl { timeout: true, .. } => f.write_str("no answer within the request timeout"),
            Self::OpenSsl { detail, .. } => f.write_str(detail),
        }
    }
}

impl Http {
    fn builder(&self) -> &reqwest::Client {
        match self {
            Self::Rustls(c) | Self::OpenSsl { builder: c, .. } => c,
        }
    }

    async fn send(&self, rb: reqwest::RequestBuilder) -> Result<reqwest::Response, SendError> {
        match self {
            Self::Rustls(_) => rb.send().await.map_err(SendError::Reqwest),
            Self::OpenSsl { client, timeout, .. } => {
                let mut req = rb.build().map_err(SendError::Reqwest)?;
                req.headers_mut()
                    .entry(reqwest::header::USER_AGENT)
                    .or_insert(reqwest::header::HeaderValue::from_static(USER_AGENT));
                let req = req.try_into().map_err(SendError::Reqwest)?;
                let deadline = tokio::time::Instant::now() + *timeout;
                let resp = match tokio::time::timeout_at(deadline, client.request(req)).await {
                    Err(_) => {
                        return Err(SendError::OpenSsl {
                            timeout: true,
                            detail: String::new(),
                        });
                    }
                    Ok(Err(e)) => {
                        return Err(SendError::OpenSsl {
                            timeout: false,
                            detail: crate::io::error_chain(&e),
                        });
                    }
                    Ok(Ok(r)) => r,
                };
                // The request timeout covers the body too, as reqwest's does.
                let resp = resp.map(|b| {
                    reqwest::Body::wrap(Deadline {
                        inner: b,
                        sleep: Box::pin(tokio::time::sleep_until(deadline)),
                    })
                });
                Ok(reqwest::Response::from(resp))
            }
        }
    }
}

/// A response body that fails once the request's deadline has passed.
struct Deadline<B> {
    inner: B,
    sleep: std::pin::Pin<Box<tokio::time::Sleep>>,
}

impl<B> http_body::Body for Deadline<B>
where
    B: http_body::Body + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = B::Data;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        use std::future::Future;
        if self.sleep.as_mut().poll(cx).is_ready() {
            return std::task::Poll::Ready(Some(Err("body not complete within the request timeout".into())));
        }
        std::pin::Pin::new(&mut self.inner)
            .poll_frame(cx)
            .map(|f| f.map(|r| r.map_err(Into::into)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// `?tls=openssl`: hyper-util over OpenSSL at security level 0 (TLS 1.0+, RSA key exchange, CBC,
/// SHA-1 handshake signatures, 1024-bit keys), with the same verification rules as rustls:
/// verified against the system roots or the CA file, or the pin, or off with `?insecure`.
fn openssl_client(t: &RedfishTarget, cx: &PollCx) -> Result<Http, DriverError> {
    use openssl::ssl::{SslConnector, SslMethod, SslVerifyMode, SslVersion};
    let tls =
        |what: &str, e: &dyn std::error::Error| DriverError::Tls(format!("OpenSSL setup ({what}): {e}"));
    let mut ssl = SslConnector::builder(SslMethod::tls_client()).map_err(|e| tls("context", &e))?;
    ssl.set_security_level(0);
    ssl.set_min_proto_version(Some(SslVersion::TLS1))
        .map_err(|e| tls("protocol versions", &e))?;
    ssl.set_cipher_list("ALL:!aNULL:!eNULL:@SECLEVEL=0")
        .map_err(|e| tls("ciphers", &e))?;
    ssl.set_alpn_protos(b"\x08http/1.1")
        .map_err(|e| tls("ALPN", &e))?;
    if let Some(pin) = t.pin_sha256 {
        // The leaf's SHA-256 decides; chain and name are not checked (as with rustls).
        ssl.set_verify_callback(SslVerifyMode::PEER, move |_, ctx| {
            use sha2::{Digest, Sha256};
            if ctx.error_depth() != 0 {
                return true;
            }
            ctx.current_cert()
                .and_then(|c| c.to_der().ok())
                .is_some_and(|der| Sha256::digest(&der).as_slice() == pin.as_slice())
        });
    } else if !t.verify_tls {
        ssl.set_verify(SslVerifyMode::NONE);
    } else if let Some(ca) = &t.ca_file {
        let pem = std::fs::read(ca)
            .map_err(|e| DriverError::Tls(format!("cannot read CA file {}: {e}", ca.display())))?;
        let certs = openssl::x509::X509::stack_from_pem(&pem)
            .map_err(|e| DriverError::Tls(format!("CA file {} is not PEM: {e}", ca.display())))?;
        let mut store = openssl::x509::store::X509StoreBuilder::new().map_err(|e| tls("store", &e))?;
        for c in certs {
            store.add_cert(c).map_err(|e| tls("CA file", &e))?;
        }
        // Only this CA, as the rustls path (tls_certs_only).
        ssl.set_cert_store(store.build());
    }
    let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(cx.limits.request_timeout));
    let mut https = hyper_openssl::client::legacy::HttpsConnector::with_connector(http, ssl)
        .map_err(|e| tls("connector", &e))?;
    let check_name = t.verify_tls && t.pin_sha256.is_none();
    https.set_callback(move |cfg, _| {
        cfg.set_verify_hostname(check_name);
        Ok(())
    });
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .pool_timer(hyper_util::rt::TokioTimer::new())
        .pool_idle_timeout(Duration::from_secs(60))
        .build(https);
    crate::install_crypto_provider();
    let builder = reqwest::Client::builder()
        .build()
        .map_err(|e| DriverError::Tls(format!("building the HTTP client: {e}")))?;
    Ok(Http::OpenSsl {
        builder,
        client: Box::new(client),
        timeout: cx.limits.request_timeout,
    })
}

/// One rustls HTTP client per TLS set-up (pin, verification, CA file) and timeout, shared by
/// the endpoints that use it: a client carries its own root store and TLS configuration (with
/// the platform's roots that is hundreds of certificates), which thousands of BMCs need not
/// hold once each. Connections are still pooled per host, so endpoints do not share them.
static CLIENTS: LazyLock<Mutex<HashMap<String, reqwest::Client>>> = LazyLock::new(Default::default);

fn http_client(t: &RedfishTarget, cx: &PollCx) -> Result<reqwest::Client, DriverError> {
    let key = format!(
        "{:?}|{}|{:?}|{:?}",
        t.pin_sha256, t.verify_tls, t.ca_file, cx.limits.request_timeout
    );
    if let Some(c) = lock(&CLIENTS).get(&key) {
        return Ok(c.clone());
    }
    let c = build_http_client(t, cx)?;
    Ok(lock(&CLIENTS).entry(key).or_insert(c).clone())
}

fn build_http_client(t: &RedfishTarget, cx: &PollCx) -> Result<reqwest::Client, DriverError> {
    crate::install_crypto_provider();
    let b = reqwest::Client::builder()
        .timeout(cx.limits.request_timeout)
        .connect_timeout(cx.limits.request_timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(USER_AGENT);
    let b = if let Some(pin) = &t.pin_sha256 {
        b.tls_backend_preconfigured(pin::client_config(*pin))
    } else if !t.verify_tls {
        b.tls_danger_accept_invalid_certs(true)
    } else if let Some(ca) = &t.ca_file {
        let pem = std::fs::read(ca)
            .map_err(|e| DriverError::Tls(format!("cannot read CA file {}: {e}", ca.display())))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| DriverError::Tls(format!("CA file {} is not PEM: {e}", ca.display())))?;
        b.tls_certs_only(certs)
    } else {
        b
    };
    b.build()
        .map_err(|e| DriverError::Tls(format!("building the HTTP client: {e}")))
}

mod pin {
    //! Certificate pinning: the leaf certificate's SHA-256 must equal the pin; chain, name and
    //! expiry are not checked (a pin is for BMCs with self-signed certificates). Handshake
    //! signatures are still verified with the provider's algorithms.
    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use rustls::{DigitallySignedStruct, SignatureScheme};
    use sha2::{Digest, Sha256};

    #[derive(Debug)]
    struct Pinned {
        sha256: [u8; 32],
        provider: std::sync::Arc<rustls::crypto::CryptoProvider>,
    }

    impl ServerCertVerifier for Pinned {
        fn verify_server_cert(
            &self,
            end_entity: &CertificateDer<'_>,
            _intermediates: &[CertificateDer<'_>],
            _server_name: &ServerName<'_>,
            _ocsp_response: &[u8],
            _now: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            let got: [u8; 32] = Sha256::digest(end_entity.as_ref()).into();
            if got == self.sha256 {
                Ok(ServerCertVerified::assertion())
            } else {
                Err(rustls::Error::General(format!(
                    "certificate pin mismatch: the BMC's certificate has sha256:{}",
                    got.iter().map(|b| format!("{b:02x}")).collect::<String>()
                )))
            }
        }

        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(
                message,
                cert,
                dss,
                &self.provider.signature_verification_algorithms,
            )
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(
                message,
                cert,
                dss,
                &self.provider.signature_verification_algorithms,
            )
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.provider
                .signature_verification_algorithms
                .supported_schemes()
        }
    }

    pub(super) fn client_config(sha256: [u8; 32]) -> rustls::ClientConfig {
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let mut cfg = rustls::ClientConfig::builder_with_provider(std::sync::Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .unwrap_or_else(|_| {
                rustls::ClientConfig::builder_with_provider(std::sync::Arc::clone(&provider))
                    .with_protocol_versions(rustls::DEFAULT_VERSIONS)
                    .unwrap_or_else(|_| unreachable!("ring supports the default TLS versions"))
            })
            .dangerous()
            .with_custom_certificate_verifier(std::sync::Arc::new(Pinned { sha256, provider }))
            .with_no_client_auth();
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        cfg
    }
}

impl Endpoint {
    /// Logs out this endpoint's idle session, if any.
    pub async fn close(&self) {
        let s = lock(&self.idle_session).take();
        if let Some(s) = s {
            self.logout(&s).await;
        }
    }

    async fn logout(&self, s: &Session) {
        let Some(loc) = &s.location else { return };
        let Ok(url) = self.base.join(loc) else { return };
        let _permit = self.inflight.acquire().await;
        self.requests.fetch_add(1, Ordering::Relaxed);
        match self
            .http
            .send(
                self.http
                    .builder()
                    .delete(url)
                    .header("X-Auth-Token", s.token.expose()),
            )
            .await
        {
            Ok(r) if r.status().is_success() || r.status() == StatusCode::NOT_FOUND => {
                self.logouts.fetch_add(1, Ordering::Relaxed);
            }
            Ok(r) => {
                tracing::warn!(endpoint = %self.base, status = %r.status(), "Redfish logout refused; the BMC will expire the session.");
            }
            Err(e) => {
                tracing::warn!(endpoint = %self.base, error = %e, "Redfish logout failed; the BMC will expire the session.");
            }
        }
    }

    /// POST SessionService/Sessions. `Ok(None)`: the service offers no sessions (use Basic).
    async fn login(&self, cx: &PollCx) -> Result<Option<Session>, DriverError> {
        let (Some(user), Some(pass)) = (&self.user, &self.password) else {
            return Ok(None);
        };
        if self.no_sessions.load(Ordering::Relaxed) {
            return Ok(None);
        }
        let url = self
            .base
            .join("/redfish/v1/SessionService/Sessions")
            .map_err(|e| DriverError::Malformed {
                what: "URL".into(),
                detail: e.to_string(),
            })?;
        let resp = {
            let _permit = self.inflight.acquire().await;
            self.requests.fetch_add(1, Ordering::Relaxed);
            self.http
                .send(
                    self.http
                        .builder()
                        .post(url)
                        .header("Accept", "application/json")
                        .json(&serde_json::json!({"UserName": user, "Password": pass.expose()})),
                )
                .await
                .map_err(|e| request_error(&self.base, "POST SessionService/Sessions", &e, cx))?
        };
        let status = resp.status();
        let token = resp
            .headers()
            .get("X-Auth-Token")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let location = resp
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(|l| match url::Url::parse(l) {
                Ok(u) => u.path().to_owned(),
                Err(_) => l.to_owned(),
            });
        if status.is_success() {
            if let Some(token) = token {
                self.logins.fetch_add(1, Ordering::Relaxed);
                return Ok(Some(Session {
                    token: Secret::new(token),
                    location,
                    idle_since: Instant::now(),
                }));
            }
            // Answered without a token (sushy-static: 204): no sessions here, ever.
            self.no_sessions.store(true, Ordering::Relaxed);
            return Ok(None);
        }
        match status {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Err(DriverError::Auth {
                detail: format!("session login refused with HTTP {status}"),
            }),
            StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED | StatusCode::NOT_IMPLEMENTED => {
                self.no_sessions.store(true, Ordering::Relaxed);
                Ok(None)
            }
            // 503 / 500 / 400 "maximum sessions reached" and the like: Basic for this poll; the
            // next poll tries a session again.
            _ => {
                tracing::info!(endpoint = %self.base, %status, "Redfish session login refused; using Basic auth for this poll.");
                Ok(None)
            }
        }
    }
}

/// A poll's hold on the endpoint: its auth, and the session it must hand back or delete.
#[derive(Debug)]
struct Lease {
    endpoint: Arc<Endpoint>,
    session: Option<Session>,
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(s) = self.session.take()
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            let e = Arc::clone(&self.endpoint);
            rt.spawn(async move { e.logout(&s).await });
        }
    }
}

/// One poll's client: the endpoint, the lease, the resource budget.
#[derive(Debug)]
pub struct Poller {
    pub(super) endpoint: Arc<Endpoint>,
    lease: tokio::sync::Mutex<Lease>,
    fetched: AtomicUsize,
    cx: PollCx,
    /// Documents already read in this poll (small ones), so a resource needed twice (Power for
    /// the inventory's PSUs and for the readings) costs one request.
    memo: Mutex<HashMap<String, serde_json::Value>>,
}

/// Documents larger than this are not kept in a poll's memo.
const MEMO_MAX_BODY: usize = 256 * 1024;

/// How a GET ended when the HTTP status is the interesting part.
pub(super) enum Got {
    Json(serde_json::Value),
    Status(StatusCode),
}

impl Poller {
    /// Leases the idle session or logs in (Basic auth when the service offers no sessions).
    pub async fn start(endpoint: Arc<Endpoint>, cx: &PollCx) -> Result<Self, DriverError> {
        let idle = lock(&endpoint.idle_session).take();
        let session = match idle {
            Some(s) if s.idle_since.elapsed() < SESSION_MAX_IDLE => Some(s),
            Some(old) => {
                endpoint.logout(&old).await;
                endpoint.login(cx).await?
            }
            None => endpoint.login(cx).await?,
        };
        Ok(Self {
            lease: tokio::sync::Mutex::new(Lease {
                endpoint: Arc::clone(&endpoint),
                session,
            }),
            endpoint,
            fetched: AtomicUsize::new(0),
            cx: cx.clone(),
            memo: Mutex::new(HashMap::new()),
        })
    }

    /// Ends the poll normally: the session goes back to the endpoint for the next poll (any
    /// session already idle there is logged out: one kept per endpoint).
    pub async fn finish(self) {
        let mut lease = self.lease.into_inner();
        if let Some(mut s) = lease.session.take() {
            s.idle_since = Instant::now();
            let previous = lock(&self.endpoint.idle_session).replace(s);
            if let Some(p) = previous {
                self.endpoint.logout(&p).await;
            }
        }
    }

    /// This document was already read in this poll (a GET of it costs nothing).
    pub(super) fn has_read(&self, path: &str) -> bool {
        lock(&self.memo).contains_key(path)
    }

    /// GETs and parses one resource; any non-2xx status is an error.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, DriverError> {
        match self.get_raw(path).await? {
            Got::Json(v) => serde_json::from_value(v).map_err(|e| DriverError::Malformed {
                what: format!("JSON document at {path}"),
                detail: e.to_string(),
            }),
            Got::Status(s) => Err(DriverError::DeviceException(format!("HTTP {s} for {path}"))),
        }
    }

    /// GETs one resource; auth failures, 503 and transport errors are errors, other non-2xx
    /// statuses are returned for the caller to judge (`$expand` fallback).
    pub(super) async fn get_raw(&self, path: &str) -> Result<Got, DriverError> {
        if !path.starts_with('/') {
            return Err(DriverError::Malformed {
                what: "link".into(),
                detail: format!("@odata.id {path:?} is not an absolute path"),
            });
        }
        if let Some(v) = lock(&self.memo).get(path) {
            return Ok(Got::Json(v.clone()));
        }
        if self.fetched.fetch_add(1, Ordering::Relaxed) >= self.cx.limits.max_resources {
            return Err(DriverError::TooLarge {
                what: "resources fetched in one poll".into(),
                limit: self.cx.limits.max_resources as u64,
            });
        }
        let url = self
            .endpoint
            .base
            .join(path)
            .map_err(|e| DriverError::Malformed {
                what: "link".into(),
                detail: format!("{path:?}: {e}"),
            })?;
        let e = &self.endpoint;
        let mut relogged = false;
        let mut waited = false;
        loop {
            let token = self
                .lease
                .lock()
                .await
                .session
                .as_ref()
                .map(|s| s.token.expose().to_owned());
            let permit = e.inflight.acquire().await;
            let mut req = e
                .http
                .builder()
                .get(url.clone())
                .header("Accept", "application/json");
            if let Some(t) = &token {
                req = req.header("X-Auth-Token", t);
            } else if let Some(user) = &e.user {
                req = req.basic_auth(user, e.password.as_ref().map(|p| p.expose().to_owned()));
            }
            e.requests.fetch_add(1, Ordering::Relaxed);
            let resp = e
                .http
                .send(req)
                .await
                .map_err(|err| request_error(&e.base, &format!("GET {path}"), &err, &self.cx))?;
            let status = resp.status();
            if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
                drop(permit);
                if status == StatusCode::UNAUTHORIZED && token.is_some() && !relogged {
                    // The session expired or was deleted on the BMC: log in again, once.
                    relogged = true;
                    let mut lease = self.lease.lock().await;
                    if lease.session.as_ref().map(|s| s.token.expose()) == token.as_deref() {
                        lease.session = None;
                        lease.session = e.login(&self.cx).await?;
                    }
                    continue;
                }
                return Err(DriverError::Auth {
                    detail: format!(
                        "HTTP {status} for {path} ({})",
                        if token.is_some() { "session" } else { "Basic auth" }
                    ),
                });
            }
            if status == StatusCode::SERVICE_UNAVAILABLE || status == StatusCode::TOO_MANY_REQUESTS {
                drop(permit);
                let after = resp
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map(Duration::from_secs);
                match after {
                    Some(d) if !waited && d <= MAX_RETRY_AFTER => {
                        waited = true;
                        tokio::time::sleep(d).await;
                        continue;
                    }
                    _ => {
                        return Err(DriverError::DeviceException(format!(
                            "BMC busy: HTTP {status} for {path}{}",
                            after.map_or_else(String::new, |d| format!(" (Retry-After {} s)", d.as_secs()))
                        )));
                    }
                }
            }
            if !status.is_success() {
                return Ok(Got::Status(status));
            }
            let body = crate::io::read_capped(resp, self.cx.limits.max_body_bytes, path).await?;
            drop(permit);
            // serde_json's recursion limit (128) stays on: deep JSON is refused, not followed.
            let value: serde_json::Value =
                serde_json::from_slice(&body).map_err(|err| DriverError::Malformed {
                    what: format!("JSON document at {path}"),
                    detail: err.to_string(),
                })?;
            // A Redfish error object served with 200 (seen in real captures) is an error, not an
            // empty resource.
            if let Some(err) = value.get("error").filter(|_| value.get("@odata.id").is_none()) {
                let msg = err
                    .get("message")
                    .and_then(|m| m.as_str())
                    .unwrap_or("no message");
                return Err(DriverError::DeviceException(format!(
                    "{path}: Redfish error: {msg}"
                )));
            }
            if body.len() <= MEMO_MAX_BODY {
                lock(&self.memo).insert(path.to_owned(), value.clone());
            }
            return Ok(Got::Json(value));
        }
    }
}

fn request_error(base: &url::Url, what: &str, e: &SendError, cx: &PollCx) -> DriverError {
    let (timeout, detail, openssl) = match e {
        SendError::Reqwest(e) => (e.is_timeout(), crate::io::error_chain(e), false),
        SendError::OpenSsl { timeout, detail } => (*timeout, detail.clone(), true),
    };
    if timeout {
        DriverError::Timeout {
            what: what.to_owned(),
            after: cx.limits.request_timeout,
        }
    } else if detail.contains("pin mismatch") {
        DriverError::Tls(detail)
    } else if !openssl && is_legacy_tls_refusal(&detail) {
        // rustls speaks TLS 1.2/1.3 with modern suites only; old BMCs refuse the hello.
        DriverError::Tls(format!(
            "{base}: TLS handshake failed ({detail}); the BMC may speak only TLS 1.0/1.1 or legacy ciphers, which rustls refuses: add ?tls=openssl to this target"
        ))
    } else if detail.contains("certificate")
        || detail.contains("UnknownIssuer")
        || detail.contains("tls")
        || detail.contains("SSL")
    {
        DriverError::Tls(format!(
            "{base}: {detail} (give the BMC's CA with --ca-file, pin it with ?pin=sha256:<hex>, or ?insecure to skip verification)"
        ))
    } else {
        DriverError::Connect {
            endpoint: base.to_string(),
            detail,
        }
    }
}

/// rustls' errors when the server will not negotiate anything rustls offers.
fn is_legacy_tls_refusal(detail: &str) -> bool {
    [
        "ProtocolVersion",
        "HandshakeFailure",
        "InsufficientSecurity",
        "peer is incompatible",
        "PeerIncompatible",
        "IllegalParameter",
    ]
    .iter()
    .any(|k| detail.contains(k))
}
