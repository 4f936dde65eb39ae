//! Many virtual Redfish services (BMCs) on 127.0.0.1, each serving a fixture tree
//! (`tests/fixtures/redfish/<name>`, the sushy-static layout: a directory per resource holding
//! `index.json`) over HTTPS with a certificate from a CA made for the run, with its own
//! [`Behaviour`].
//!
//! **One listener per service**, each on its own ephemeral port. The agent keys everything it
//! keeps per BMC (HTTP client and keep-alive connections, session, inventory cache) by the base
//! URL `https://host:port`, so distinct devices need distinct `host:port` pairs; on loopback
//! without address aliases (the harness binds 127.0.0.1 only) that means one port per service.
//! The cost is one file descriptor per service for the listener plus one per open keep-alive
//! connection (the agent holds at most `?max_inflight` = 2 per BMC): 1,000 services take about
//! 3,000 descriptors in the simulator's process and 2,000 in the agent's, well within the usual
//! soft limit of 20,000 here (raise `ulimit -n` before trying 10,000). The alternative — one
//! listener, services told apart by the `Host` header or a path prefix — would save the
//! listener descriptors but is not what the agent does with real BMCs (its connection pool and
//! caches would be shared by every "device"), so it would measure the wrong thing.
//!
//! Per service the documents are rewritten as they are served (the fixture is parsed once and
//! shared): `SerialNumber`, `AssetTag` and `HostName` get `-<NAME>` appended (the service name,
//! upper-cased for serials and tags), the MAC addresses get the service index in their second
//! and third octets (locally administered, distinct per service and within one), and non-nil
//! UUIDs end in the service index, so every service is a distinct device to the agent and the
//! collector. Power readings (`PowerConsumedWatts`, `PowerInputWatts`, `PowerOutputWatts`,
//! `LastPowerOutputWatts`, `AverageConsumedWatts`) move with time: ±5 % around the fixture's
//! value on a period of about 40 s, phase-shifted per service.
//!
//! Protocol: HTTP/1.1 with keep-alive; `GET` of any resource of the fixture (a trailing `/` is
//! ignored); any query string (`$select`, `$expand`) answers 404, as sushy-tools does;
//! `POST …/SessionService/Sessions` makes a session (any credentials; `X-Auth-Token` and
//! `Location`), `DELETE` of it answers 204. Credentials are not checked.
//!
//! Behaviours (per service, applied to every request):
//!
//! | behaviour | what the service does |
//! |---|---|
//! | `Normal` | answers at once |
//! | `BlackHole` | accepts the TCP connection and never says a byte (not even the TLS handshake); the connection is held until the client closes it |
//! | `Latency(d)` | answers after `d` |
//! | `Lossy { permille }` | closes the connection instead of answering that many requests in 1000 |
//! | `Truncate` | sends the head (full `Content-Length`) and half the body, then closes |
//! | `WrongRequestId` | HTTP has no request ids: answers every GET with the service root (the answer to another request) |
//! | `Garbage` | `200 OK`, `application/json`, 1–600 pseudo-random bytes |
//! | `Slowloris` | dribbles the whole answer, 4 bytes every 250 ms, for as long as the client waits |
//! | `HugeBody` | `200 OK` with an endless chunked JSON-looking body, until the client hangs up |
//! | `HttpStatus(s)` | answers status `s` with a Redfish error body (503: web server up, Redfish service not) |

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openssl::ssl::{Ssl, SslAcceptor};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::Behaviour;

/// Largest request head the simulator reads (a client sending more is dropped).
const MAX_HEAD: usize = 64 * 1024;
/// Slowloris: bytes per write and the pause between writes.
const DRIBBLE_BYTES: usize = 4;
const DRIBBLE_PAUSE: Duration = Duration::from_millis(250);
/// HugeBody: size of each chunk of the endless body.
const HUGE_CHUNK: usize = 64 * 1024;
/// HugeBody: the body stops here even if the client keeps reading (a runaway client must not
/// keep the simulator busy forever).
const HUGE_MAX: usize = 1 << 30;

/// A fixture tree: every resource's document by its path (`/redfish/v1/...`), parsed once.
#[derive(Debug)]
pub struct Fixture {
    name: String,
    docs: HashMap<String, Value>,
    /// The resource whose GET marks the start of a poll (the first `…/Power`: every poll of
    /// the agent reads it exactly once, inventory or not), for the poll-gap figures.
    beat: String,
}

impl Fixture {
    /// One of the project's own fixtures, `tests/fixtures/redfish/<name>`.
    ///
    /// # Errors
    /// The directory is missing or a document is not JSON.
    pub fn builtin(name: &str) -> std::io::Result<Self> {
        Self::load(&crate::repo_root().join("tests/fixtures/redfish").join(name))
    }

    /// A sushy-static mockup directory read in place (e.g. one under `/work/shared/peers`):
    /// `None`, after a loud `SKIP:` line on stderr, when it is absent.
    #[must_use]
    pub fn mockup_or_skip(dir: &Path, test: &str) -> Option<Self> {
        match Self::load(dir) {
            Ok(f) => Some(f),
            Err(e) => {
                eprintln!("SKIP: {test}: Redfish mockup {} not readable: {e}", dir.display());
                None
            }
        }
    }

    /// Reads every `index.json` under `dir` (which is `/redfish/v1` itself).
    ///
    /// # Errors
    /// The directory is missing or a document is not JSON.
    pub fn load(dir: &Path) -> std::io::Result<Self> {
        let mut docs = HashMap::new();
        let mut stack: Vec<(PathBuf, String)> = vec![(dir.to_path_buf(), "/redfish/v1".into())];
        while let Some((d, at)) = stack.pop() {
            for entry in std::fs::read_dir(&d)? {
                let entry = entry?;
                let p = entry.path();
                if entry.file_type()?.is_dir() {
                    let seg = entry.file_name().to_string_lossy().into_owned();
                    stack.push((p, format!("{at}/{seg}")));
                } else if entry.file_name() == "index.json" {
                    let text = std::fs::read(&p)?;
                    let v: Value = serde_json::from_slice(&text).map_err(|e| {
                        std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{}: {e}", p.display()))
                    })?;
                    docs.insert(at.clone(), v);
                }
            }
        }
        if !docs.contains_key("/redfish/v1") {
            return Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("{}: no index.json (service root)", dir.display()),
            ));
        }
        let mut powers: Vec<&String> = docs.keys().filter(|k| k.ends_with("/Power")).collect();
        powers.sort();
        let beat = powers
            .first()
            .map_or_else(|| "/redfish/v1".to_owned(), |p| (*p).clone());
        Ok(Self {
            name: dir
                .file_name()
                .map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
            docs,
            beat,
        })
    }

    /// Resources in the tree.
    #[must_use]
    pub fn len(&self) -> usize {
        self.docs.len()
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.docs.is_empty()
    }

    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// One simulated Redfish service.
#[derive(Debug, Clone)]
pub struct ServiceSpec {
    /// Service (and target) name; appended to the fixture's serials, asset tags and host names.
    pub name: String,
    pub behaviour: Behaviour,
}

#[derive(Debug)]
struct Service {
    spec: ServiceSpec,
    index: u16,
    requests: AtomicU64,
    polls: AtomicU64,
    /// When the last poll started, in ms since the fleet started (`u64::MAX`: none yet).
    last_poll_ms: AtomicU64,
    gaps: Mutex<Vec<u32>>,
    sessions: AtomicU64,
}

#[derive(Debug)]
struct Shared {
    fixture: Arc<Fixture>,
    services: Vec<Service>,
    started: Instant,
}

/// A running fleet; dropping it stops every listener (open connections end with their tasks'
/// next await on a dropped runtime or a closed peer).
#[derive(Debug)]
pub struct RedfishFleet {
    addrs: Vec<SocketAddr>,
    shared: Arc<Shared>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    ca_pem: Option<String>,
}

impl Drop for RedfishFleet {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// A CA made for this run and an acceptor presenting a leaf certificate for 127.0.0.1 signed by
/// it (ECDSA P-256, valid two days). The agent verifies it with `ca_file` like any BMC
/// certificate; nothing is written to disk unless [`RedfishFleet::write_ca`] is called.
fn make_tls() -> Result<(SslAcceptor, String), openssl::error::ErrorStack> {
    use openssl::asn1::Asn1Time;
    use openssl::bn::BigNum;
    use openssl::ec::{EcGroup, EcKey};
    use openssl::hash::MessageDigest;
    use openssl::nid::Nid;
    use openssl::pkey::{PKey, Private};
    use openssl::ssl::SslMethod;
    use openssl::x509::extension::{
        AuthorityKeyIdentifier, BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectAlternativeName,
        SubjectKeyIdentifier,
    };
    use openssl::x509::{X509, X509Name, X509NameBuilder};

    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1)?;
    let key = || -> Result<PKey<Private>, openssl::error::ErrorStack> {
        PKey::from_ec_key(EcKey::generate(&group)?)
    };
    let name = |cn: &str| -> Result<X509Name, openssl::error::ErrorStack> {
        let mut n = X509NameBuilder::new()?;
        n.append_entry_by_text("O", "groundtruth fleet simulator")?;
        n.append_entry_by_text("CN", cn)?;
        Ok(n.build())
    };
    let (ca_key, leaf_key) = (key()?, key()?);
    let mut b = X509::builder()?;
    b.set_version(2)?;
    b.set_serial_number(BigNum::from_u32(1)?.to_asn1_integer()?.as_ref())?;
    let ca_name = name("groundtruth fleet simulator CA")?;
    b.set_subject_name(&ca_name)?;
    b.set_issuer_name(&ca_name)?;
    b.set_pubkey(&ca_key)?;
    b.set_not_before(Asn1Time::days_from_now(0)?.as_ref())?;
    b.set_not_after(Asn1Time::days_from_now(2)?.as_ref())?;
    b.append_extension(BasicConstraints::new().critical().ca().build()?)?;
    b.append_extension(KeyUsage::new().critical().key_cert_sign().crl_sign().build()?)?;
    let ski = SubjectKeyIdentifier::new().build(&b.x509v3_context(None, None))?;
    b.append_extension(ski)?;
    b.sign(&ca_key, MessageDigest::sha256())?;
    let ca = b.build();

    let mut b = X509::builder()?;
    b.set_version(2)?;
    b.set_serial_number(BigNum::from_u32(2)?.to_asn1_integer()?.as_ref())?;
    let leaf_name = name("127.0.0.1")?;
    b.set_subject_name(&leaf_name)?;
    b.set_issuer_name(ca.subject_name())?;
    b.set_pubkey(&leaf_key)?;
    b.set_not_before(Asn1Time::days_from_now(0)?.as_ref())?;
    b.set_not_after(Asn1Time::days_from_now(2)?.as_ref())?;
    b.append_extension(BasicConstraints::new().build()?)?;
    b.append_extension(KeyUsage::new().critical().digital_signature().build()?)?;
    b.append_extension(ExtendedKeyUsage::new().server_auth().build()?)?;
    let san = SubjectAlternativeName::new()
        .ip("127.0.0.1")
        .dns("localhost")
        .build(&b.x509v3_context(Some(&ca), None))?;
    b.append_extension(san)?;
    let aki = AuthorityKeyIdentifier::new()
        .keyid(false)
        .build(&b.x509v3_context(Some(&ca), None))?;
    b.append_extension(aki)?;
    b.sign(&ca_key, MessageDigest::sha256())?;
    let leaf = b.build();

    let mut acc = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server())?;
    acc.set_private_key(&leaf_key)?;
    acc.set_certificate(&leaf)?;
    acc.check_private_key()?;
    let ca_pem = String::from_utf8_lossy(&ca.to_pem()?).into_owned();
    Ok((acc.build(), ca_pem))
}

impl RedfishFleet {
    /// Binds one listener on 127.0.0.1 (a free port) per service and serves `fixture` on each,
    /// over HTTPS (a CA made for the run; see [`RedfishFleet::write_ca`]) or plain HTTP.
    ///
    /// # Errors
    /// Binding a listener failed (often: too few file descriptors), or the TLS setup failed.
    pub async fn start(
        fixture: Arc<Fixture>,
        services: Vec<ServiceSpec>,
        https: bool,
    ) -> std::io::Result<Self> {
        let (tls, ca_pem) = if https {
            let (acc, pem) = make_tls().map_err(|e| std::io::Error::other(format!("TLS setup: {e}")))?;
            (Some(Arc::new(acc)), Some(pem))
        } else {
            (None, None)
        };
        let mut listeners = Vec::with_capacity(services.len());
        for _ in &services {
            listeners.push(TcpListener::bind("127.0.0.1:0").await?);
        }
        let addrs = listeners
            .iter()
            .map(TcpListener::local_addr)
            .collect::<Result<Vec<_>, _>>()?;
        let shared = Arc::new(Shared {
            fixture,
            services: services
                .into_iter()
                .enumerate()
                .map(|(i, spec)| Service {
                    spec,
                    index: u16::try_from(i).unwrap_or(u16::MAX),
                    requests: AtomicU64::new(0),
                    polls: AtomicU64::new(0),
                    last_poll_ms: AtomicU64::new(u64::MAX),
                    gaps: Mutex::new(Vec::new()),
                    sessions: AtomicU64::new(0),
                })
                .collect(),
            started: Instant::now(),
        });
        let tasks = listeners
            .into_iter()
            .enumerate()
            .map(|(i, l)| tokio::spawn(accept_loop(l, Arc::clone(&shared), i, tls.clone())))
            .collect();
        Ok(Self {
            addrs,
            shared,
            tasks,
            ca_pem,
        })
    }

    #[must_use]
    pub fn len(&self) -> usize {
        self.shared.services.len()
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.shared.services.is_empty()
    }

    /// The agent target URL of service `i` (`redfish://` is HTTPS; no credentials: the
    /// simulator does not check them, and the agent then uses no session).
    #[must_use]
    pub fn url(&self, i: usize) -> String {
        if self.ca_pem.is_some() {
            format!("redfish://{}", self.addrs[i])
        } else {
            format!("redfish+http://{}", self.addrs[i])
        }
    }

    #[must_use]
    pub fn addr(&self, i: usize) -> SocketAddr {
        self.addrs[i]
    }

    #[must_use]
    pub fn name(&self, i: usize) -> &str {
        &self.shared.services[i].spec.name
    }

    #[must_use]
    pub fn behaviour(&self, i: usize) -> &Behaviour {
        &self.shared.services[i].spec.behaviour
    }

    /// The CA certificate (PEM) the services' certificate chains to; `None` over plain HTTP.
    #[must_use]
    pub fn ca_pem(&self) -> Option<&str> {
        self.ca_pem.as_deref()
    }

    /// Writes the CA certificate to `path` (for the targets' `ca_file`).
    ///
    /// # Errors
    /// Plain HTTP fleet (no CA), or the write failed.
    pub fn write_ca(&self, path: &Path) -> std::io::Result<()> {
        let pem = self
            .ca_pem
            .as_deref()
            .ok_or_else(|| std::io::Error::other("this fleet serves plain HTTP: no CA"))?;
        std::fs::write(path, pem)
    }

    /// The serial number service `i` reports for a fixture serial (e.g. the chassis'
    /// `GTSRV0000001` → `GTSRV0000001-OK-00012`).
    #[must_use]
    pub fn serial(&self, i: usize, fixture_serial: &str) -> String {
        tagged(
            fixture_serial,
            &self.shared.services[i].spec.name.to_ascii_uppercase(),
        )
    }

    /// Polls started on service `i` (GETs of the fixture's first `…/Power` resource).
    #[must_use]
    pub fn polls(&self, i: usize) -> u64 {
        self.shared.services[i].polls.load(Ordering::Relaxed)
    }

    /// Requests received by service `i` (answered or not).
    #[must_use]
    pub fn requests(&self, i: usize) -> u64 {
        self.shared.services[i].requests.load(Ordering::Relaxed)
    }

    /// Sessions created on service `i`.
    #[must_use]
    pub fn sessions(&self, i: usize) -> u64 {
        self.shared.services[i].sessions.load(Ordering::Relaxed)
    }

    /// The gaps between consecutive poll starts on service `i`, in ms.
    #[must_use]
    pub fn poll_gaps_ms_of(&self, i: usize) -> Vec<u32> {
        self.shared.services[i]
            .gaps
            .lock()
            .map(|g| g.clone())
            .unwrap_or_default()
    }

    /// Every gap between two consecutive poll starts on one service, in ms (jitter figures).
    #[must_use]
    pub fn poll_gaps_ms(&self) -> Vec<u32> {
        (0..self.len()).flat_map(|i| self.poll_gaps_ms_of(i)).collect()
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, i: usize, tls: Option<Arc<SslAcceptor>>) {
    loop {
        let Ok((sock, _)) = listener.accept().await else {
            // Out of descriptors or similar: back off rather than spin.
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let _ = sock.set_nodelay(true);
        let shared = Arc::clone(&shared);
        let tls = tls.clone();
        tokio::spawn(async move {
            if shared.services[i].spec.behaviour == Behaviour::BlackHole {
                hold(sock).await;
                return;
            }
            let Some(acc) = tls else {
                serve(sock, &shared, i).await;
                return;
            };
            let Ok(ssl) = Ssl::new(acc.context()) else {
                return;
            };
            let Ok(mut s) = tokio_openssl::SslStream::new(ssl, sock) else {
                return;
            };
            if std::pin::Pin::new(&mut s).accept().await.is_ok() {
                serve(s, &shared, i).await;
            }
        });
    }
}

/// BlackHole: reads (and discards) whatever the client sends, answers nothing, until it hangs up.
async fn hold(mut sock: TcpStream) {
    let mut buf = [0u8; 4096];
    while matches!(sock.read(&mut buf).await, Ok(n) if n > 0) {}
}

/// One parsed request.
struct Request {
    method: String,
    path: String,
}

/// Reads one request (head and any body) from `sock`; `None` at EOF or on nonsense.
async fn read_request<S: AsyncRead + Unpin>(sock: &mut S, buf: &mut Vec<u8>) -> Option<Request> {
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > MAX_HEAD {
            return None;
        }
        let mut chunk = [0u8; 4096];
        let n = sock.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut first = head.lines().next().unwrap_or_default().split(' ');
    let method = first.next().unwrap_or_default().to_owned();
    let path = first.next().unwrap_or_default().to_owned();
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    if len > MAX_HEAD {
        return None;
    }
    while buf.len() < head_end + len {
        let mut chunk = [0u8; 4096];
        let n = sock.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    buf.drain(..head_end + len);
    Some(Request { method, path })
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

fn error_body(status: u16, message: &str) -> Vec<u8> {
    serde_json::json!({"error": {"code": format!("Base.1.8.{}", reason(status).replace(' ', "")),
        "message": message}})
    .to_string()
    .into_bytes()
}

fn response(status: u16, extra: &str, body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{extra}\r\n",
        reason(status),
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

async fn serve<S: AsyncRead + AsyncWrite + Unpin>(mut sock: S, shared: &Shared, i: usize) {
    let svc = &shared.services[i];
    let mut buf = Vec::new();
    let mut rng: u64 =
        0x9E37_79B9_7F4A_7C15 ^ (u64::from(svc.index) << 20) ^ svc.requests.load(Ordering::Relaxed);
    while let Some(req) = read_request(&mut sock, &mut buf).await {
        svc.requests.fetch_add(1, Ordering::Relaxed);
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let path = req.path.split('?').next().unwrap_or_default();
        let path = if path.len() > 1 {
            path.trim_end_matches('/')
        } else {
            path
        };
        if req.method == "GET" && path == shared.fixture.beat && !req.path.contains('?') {
            let now = u64::try_from(shared.started.elapsed().as_millis()).unwrap_or(u64::MAX);
            svc.polls.fetch_add(1, Ordering::Relaxed);
            let last = svc.last_poll_ms.swap(now, Ordering::Relaxed);
            if last != u64::MAX
                && let Ok(mut g) = svc.gaps.lock()
            {
                g.push(u32::try_from(now.saturating_sub(last)).unwrap_or(u32::MAX));
            }
        }
        let out = match &svc.spec.behaviour {
            Behaviour::BlackHole => return, // handled before TLS; unreachable in practice
            Behaviour::Latency(d) => {
                tokio::time::sleep(*d).await;
                answer(shared, svc, &req, path)
            }
            Behaviour::Lossy { permille } => {
                if rng % 1000 < u64::from(*permille) {
                    return;
                }
                answer(shared, svc, &req, path)
            }
            Behaviour::WrongRequestId => answer(shared, svc, &req, "/redfish/v1"),
            Behaviour::Garbage => {
                let n = 1 + usize::try_from(rng % 600).unwrap_or(0);
                response(200, "", &super::garbage(&mut rng, n))
            }
            Behaviour::HttpStatus(s) => response(
                *s,
                "",
                &error_body(*s, "The Redfish service is not available (simulated)."),
            ),
            Behaviour::HugeBody => {
                huge_body(&mut sock).await;
                return;
            }
            Behaviour::Truncate => {
                let full = answer(shared, svc, &req, path);
                let head = full
                    .windows(4)
                    .position(|w| w == b"\r\n\r\n")
                    .map_or(0, |p| p + 4);
                let cut = head + (full.len() - head) / 2;
                let _ = sock.write_all(&full[..cut]).await;
                let _ = sock.flush().await;
                let _ = sock.shutdown().await;
                return;
            }
            Behaviour::Slowloris => {
                let full = answer(shared, svc, &req, path);
                for piece in full.chunks(DRIBBLE_BYTES) {
                    if sock.write_all(piece).await.is_err() || sock.flush().await.is_err() {
                        return;
                    }
                    tokio::time::sleep(DRIBBLE_PAUSE).await;
                }
                continue;
            }
            Behaviour::Normal => answer(shared, svc, &req, path),
        };
        if sock.write_all(&out).await.is_err() || sock.flush().await.is_err() {
            return;
        }
    }
}

/// An endless (capped at [`HUGE_MAX`]) chunked body that starts like a JSON document.
async fn huge_body<S: AsyncWrite + Unpin>(sock: &mut S) {
    let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n";
    if sock.write_all(head.as_bytes()).await.is_err() {
        return;
    }
    let mut chunk = format!("{HUGE_CHUNK:x}\r\n").into_bytes();
    let mut data = br#"{"@odata.id":"/redfish/v1","Padding":""#.to_vec();
    data.resize(HUGE_CHUNK, b'x');
    chunk.extend_from_slice(&data);
    chunk.extend_from_slice(b"\r\n");
    let mut sent = 0;
    while sent < HUGE_MAX {
        if sock.write_all(&chunk).await.is_err() {
            return;
        }
        sent += HUGE_CHUNK;
    }
    let _ = sock.shutdown().await;
}

/// The normal answer to `req` for service `svc` (path already stripped of query and `/`).
fn answer(shared: &Shared, svc: &Service, req: &Request, path: &str) -> Vec<u8> {
    const SESSIONS: &str = "/redfish/v1/SessionService/Sessions";
    match req.method.as_str() {
        "GET" if req.path.contains('?') => {
            response(404, "", &error_body(404, "Query parameters are not supported."))
        }
        "GET" => match shared.fixture.docs.get(path) {
            Some(doc) => {
                let mut doc = doc.clone();
                let t = shared.started.elapsed().as_secs_f64();
                personalize(&mut doc, svc, t);
                response(200, "", &serde_json::to_vec(&doc).unwrap_or_default())
            }
            None => response(404, "", &error_body(404, &format!("{path} does not exist."))),
        },
        "POST" if path == SESSIONS => {
            let n = svc.sessions.fetch_add(1, Ordering::Relaxed) + 1;
            let body = format!(r#"{{"@odata.id":"{SESSIONS}/{n}","Id":"{n}","UserName":"sim"}}"#);
            response(
                201,
                &format!(
                    "X-Auth-Token: sim-{}-{n}\r\nLocation: {SESSIONS}/{n}\r\n",
                    svc.index
                ),
                body.as_bytes(),
            )
        }
        "DELETE" if path.starts_with(SESSIONS) => {
            b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n".to_vec()
        }
        _ => response(405, "", &error_body(405, "Method not allowed here.")),
    }
}

/// `s` with the service tag appended (`GTSRV0000001` → `GTSRV0000001-OK-00012`); empty stays
/// empty (a BMC that has no serial keeps having none).
fn tagged(s: &str, tag: &str) -> String {
    if s.trim().is_empty() {
        s.to_owned()
    } else {
        format!("{s}-{tag}")
    }
}

/// A MAC with the service index in octets 2 and 3, separator and case kept.
fn mac_for(mac: &str, index: u16) -> String {
    let sep = if mac.contains('-') { '-' } else { ':' };
    let mut octets: Vec<String> = mac.split(sep).map(str::to_owned).collect();
    if octets.len() != 6 {
        return mac.to_owned();
    }
    let [hi, lo] = index.to_be_bytes();
    let upper = mac.chars().any(|c| c.is_ascii_uppercase());
    octets[1] = format!("{hi:02x}");
    octets[2] = format!("{lo:02x}");
    let out = octets.join(&sep.to_string());
    if upper { out.to_ascii_uppercase() } else { out }
}

/// Rewrites one served document for `svc` at `t` seconds into the run (see the module doc).
fn personalize(v: &mut Value, svc: &Service, t: f64) {
    match v {
        Value::Object(m) => {
            for (k, v) in m.iter_mut() {
                let tag = || svc.spec.name.to_ascii_uppercase();
                let new = match (k.as_str(), &*v) {
                    ("SerialNumber" | "AssetTag", Value::String(s)) => Some(Value::String(tagged(s, &tag()))),
                    ("HostName", Value::String(s)) => {
                        Some(Value::String(tagged(s, &svc.spec.name.to_ascii_lowercase())))
                    }
                    ("MACAddress" | "PermanentMACAddress", Value::String(s)) => {
                        Some(Value::String(mac_for(s, svc.index)))
                    }
                    ("UUID", Value::String(s))
                        if s.len() == 36
                            && s.is_char_boundary(28)
                            && s.chars().any(|c| c.is_ascii_hexdigit() && c != '0') =>
                    {
                        Some(Value::String(format!("{}{:08x}", &s[..28], svc.index)))
                    }
                    (
                        "PowerConsumedWatts"
                        | "PowerInputWatts"
                        | "PowerOutputWatts"
                        | "LastPowerOutputWatts"
                        | "AverageConsumedWatts",
                        Value::Number(n),
                    ) => n.as_f64().and_then(|w| {
                        let live = w * (1.0 + 0.05 * (t / 6.4 + f64::from(svc.index)).sin());
                        serde_json::Number::from_f64((live * 10.0).round() / 10.0).map(Value::Number)
                    }),
                    _ => None,
                };
                match new {
                    Some(n) => *v = n,
                    None => personalize(v, svc, t),
                }
            }
        }
        Value::Array(a) => {
            for v in a {
                personalize(v, svc, t);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_differ_per_service_and_keep_their_format() {
        assert_eq!(mac_for("02:47:54:10:00:01", 0x0102), "02:01:02:10:00:01");
        assert_eq!(mac_for("02-47-54-30-00-01", 7), "02-00-07-30-00-01");
        assert_eq!(mac_for("02:AB:54:10:00:01", 0xabcd), "02:AB:CD:10:00:01");
        assert_eq!(mac_for("not a mac", 1), "not a mac");
    }

    #[test]
    fn empty_serials_stay_empty() {
        assert_eq!(tagged("", "OK-1"), "");
        assert_eq!(tagged("GTSRV0000001", "OK-1"), "GTSRV0000001-OK-1");
    }

    #[test]
    fn builtin_fixture_loads_with_its_power_resource() {
        let f = Fixture::builtin("gt-rack-server").unwrap();
        assert_eq!(f.len(), 18, "resources in gt-rack-server (17 linked + odata)");
        assert_eq!(f.beat, "/redfish/v1/Chassis/1U/Power");
    }
}
