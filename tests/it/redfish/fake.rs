//! A hand-written HTTP/1.1 Redfish BMC on 127.0.0.1:0 for what the mockups lack: sessions (and
//! running out of them), wrong credentials, 503 with Retry-After, a slow BMC, a 20 MB body. It
//! counts session logins (POST) and logouts (DELETE) so tests can prove no session leaks.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Sessions work; Basic works too.
    Normal,
    /// POST Sessions → 503 "no sessions available"; Basic works.
    SessionsExhausted,
    /// Every credential is wrong.
    WrongPassword,
    /// The first GET of the root answers 503 with this Retry-After (s).
    RetryAfter(u64),
    /// Every GET waits this long before answering.
    Slow(Duration),
    /// The root is a 20 MB document.
    Huge,
    /// The root advertises `ExpandQuery` and `SelectQuery`, and the service honours both:
    /// `$expand=.($levels=1)` inlines any collection's members, `$select=A,B` keeps only those
    /// top-level properties (and the `@odata` ones). Other modes answer 404 to any query string,
    /// as sushy-tools does (it implements neither).
    Queries,
    /// As `Queries`, but `$select` is refused with 400 (advertised, not implemented).
    SelectRefused,
    /// An old BMC's web server: HTTP/1.0 answers without Content-Length, ended by closing the
    /// connection (under TLS, without close_notify).
    Http10Close,
}

#[derive(Debug)]
pub struct Fake {
    pub port: u16,
    pub posts: AtomicUsize,
    pub deletes: AtomicUsize,
    pub gets: AtomicUsize,
    /// `$expand` requests answered inline.
    pub expanded: AtomicUsize,
    /// `$select` requests answered.
    pub selected: AtomicUsize,
    /// Bytes of GET response bodies sent.
    pub get_bytes: AtomicUsize,
    live: Mutex<HashSet<String>>,
    next: AtomicUsize,
    busy_sent: AtomicUsize,
    mode: Mode,
    /// The TLS versions the handshakes negotiated (TLS mode).
    pub tls_versions: Mutex<Vec<String>>,
}

const CHASSIS_1: &str = r#"{"@odata.id":"/redfish/v1/Chassis/1","ChassisType":"RackMount","SerialNumber":"FAKE0001",
    "Manufacturer":"Fake","Model":"F1","Power":{"@odata.id":"/redfish/v1/Chassis/1/Power"},
    "Sensors":{"@odata.id":"/redfish/v1/Chassis/1/Sensors"},
    "Links":{"ComputerSystems":[{"@odata.id":"/redfish/v1/Systems/1"}]}}"#;

/// The Power resource: the readings, plus the bulk real ones carry (Voltages, Redundancy, Oem)
/// that `$select` leaves out.
fn power_doc() -> String {
    let voltages: Vec<String> = (1..=24)
        .map(|i| {
            format!(
                r#"{{"@odata.id":"/redfish/v1/Chassis/1/Power#/Voltages/{i}","MemberId":"{i}","Name":"VR {i}","ReadingVolts":1.2,"UpperThresholdCritical":1.4,"LowerThresholdCritical":1.0,"Status":{{"State":"Enabled","Health":"OK"}},"PhysicalContext":"VoltageRegulator"}}"#
            )
        })
        .collect();
    format!(
        r#"{{"@odata.id":"/redfish/v1/Chassis/1/Power","Id":"Power","PowerControl":[{{"PowerConsumedWatts":123}}],"PowerSupplies":[{{"Name":"PS1","LastPowerOutputWatts":null}}],"Voltages":[{}],"Redundancy":[{{"Mode":"N+1","Status":{{"State":"Enabled"}}}}],"Oem":{{"Fake":{{"Pad":"{}"}}}}}}"#,
        voltages.join(","),
        "x".repeat(2048)
    )
}

pub const USER: &str = "admin";
pub const PASS: &str = "s3cret";

impl Fake {
    pub async fn start(mode: Mode) -> Arc<Self> {
        Self::start_with(mode, None).await
    }

    /// Serves HTTPS through this OpenSSL acceptor (e.g. one limited to TLS 1.0/1.1).
    pub async fn start_tls(mode: Mode, tls: openssl::ssl::SslAcceptor) -> Arc<Self> {
        Self::start_with(mode, Some(Arc::new(tls))).await
    }

    async fn start_with(mode: Mode, tls: Option<Arc<openssl::ssl::SslAcceptor>>) -> Arc<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let fake = Arc::new(Self {
            port: listener.local_addr().unwrap().port(),
            posts: AtomicUsize::new(0),
            deletes: AtomicUsize::new(0),
            gets: AtomicUsize::new(0),
            expanded: AtomicUsize::new(0),
            selected: AtomicUsize::new(0),
            get_bytes: AtomicUsize::new(0),
            live: Mutex::new(HashSet::new()),
            next: AtomicUsize::new(1),
            busy_sent: AtomicUsize::new(0),
            mode,
            tls_versions: Mutex::new(Vec::new()),
        });
        let f = Arc::clone(&fake);
        tokio::spawn(async move {
            loop {
                let Ok((sock, _)) = listener.accept().await else {
                    return;
                };
                let f = Arc::clone(&f);
                let tls = tls.clone();
                tokio::spawn(async move {
                    let Some(acc) = tls else {
                        let _ = f.serve(sock).await;
                        return;
                    };
                    let Ok(ssl) = openssl::ssl::Ssl::new(acc.context()) else {
                        return;
                    };
                    let Ok(mut s) = tokio_openssl::SslStream::new(ssl, sock) else {
                        return;
                    };
                    // A client that cannot agree on a version (rustls here) ends at the handshake.
                    if std::pin::Pin::new(&mut s).accept().await.is_ok() {
                        f.tls_versions
                            .lock()
                            .unwrap()
                            .push(s.ssl().version_str().to_owned());
                        let _ = f.serve(s).await;
                    }
                });
            }
        });
        fake
    }

    pub fn url(&self, query: &str) -> String {
        format!("redfish+http://{USER}:{PASS}@127.0.0.1:{}{query}", self.port)
    }

    /// Expires every session, as a BMC timeout or reboot does.
    pub fn forget_all(&self) {
        self.live.lock().unwrap().clear();
    }

    /// Sessions still open on the BMC.
    pub fn live_sessions(&self) -> usize {
        self.live.lock().unwrap().len()
    }

    async fn serve<S: AsyncRead + AsyncWrite + Unpin>(&self, mut sock: S) -> std::io::Result<()> {
        loop {
            let mut buf = Vec::new();
            let head_end = loop {
                let mut chunk = [0u8; 4096];
                let n = sock.read(&mut chunk).await?;
                if n == 0 {
                    return Ok(());
                }
                buf.extend_from_slice(&chunk[..n]);
                if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    break i + 4;
                }
                if buf.len() > 65536 {
                    return Ok(());
                }
            };
            let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
            let mut lines = head.lines();
            let mut first = lines.next().unwrap_or_default().split(' ');
            let method = first.next().unwrap_or_default().to_owned();
            let path = first.next().unwrap_or_default().to_owned();
            let header = |name: &str| {
                head.lines()
                    .find(|l| l.to_ascii_lowercase().starts_with(&format!("{name}:")))
                    .map(|l| l[name.len() + 1..].trim().to_owned())
            };
            let len: usize = header("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
            while buf.len() < head_end + len {
                let mut chunk = [0u8; 4096];
                let n = sock.read(&mut chunk).await?;
                if n == 0 {
                    return Ok(());
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            let body = String::from_utf8_lossy(&buf[head_end..head_end + len]).to_string();
            let (status, extra, out) = self
                .answer(
                    &method,
                    &path,
                    &body,
                    header("x-auth-token"),
                    header("authorization"),
                )
                .await;
            if self.mode == Mode::Http10Close {
                let head = format!("HTTP/1.0 {status}\r\nContent-Type: application/json\r\n{extra}\r\n");
                sock.write_all(head.as_bytes()).await?;
                sock.write_all(out.as_bytes()).await?;
                sock.flush().await?;
                // Dropped without a TLS shutdown: no close_notify.
                return Ok(());
            }
            let resp = format!(
                "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{extra}\r\n",
                out.len()
            );
            sock.write_all(resp.as_bytes()).await?;
            sock.write_all(out.as_bytes()).await?;
            sock.flush().await?;
        }
    }

    async fn answer(
        &self,
        method: &str,
        path: &str,
        body: &str,
        token: Option<String>,
        authz: Option<String>,
    ) -> (&'static str, String, String) {
        let basic_ok = authz.as_deref()
            == Some(&format!("Basic {}", b64(format!("{USER}:{PASS}").as_bytes())) as &str)
            && self.mode != Mode::WrongPassword;
        match (method, path) {
            ("POST", "/redfish/v1/SessionService/Sessions") => {
                self.posts.fetch_add(1, Ordering::Relaxed);
                match self.mode {
                    Mode::SessionsExhausted => {
                        return (
                            "503 Service Unavailable",
                            String::new(),
                            r#"{"error":{"message":"no sessions available"}}"#.into(),
                        );
                    }
                    Mode::WrongPassword => return ("401 Unauthorized", String::new(), "{}".into()),
                    _ => {}
                }
                if !body.contains(USER) || !body.contains(PASS) {
                    return ("401 Unauthorized", String::new(), "{}".into());
                }
                let n = self.next.fetch_add(1, Ordering::Relaxed);
                let tok = format!("tok{n}");
                self.live.lock().unwrap().insert(tok.clone());
                (
                    "201 Created",
                    format!("X-Auth-Token: {tok}\r\nLocation: /redfish/v1/SessionService/Sessions/{n}\r\n"),
                    format!(r#"{{"@odata.id":"/redfish/v1/SessionService/Sessions/{n}","Id":"{n}"}}"#),
                )
            }
            ("DELETE", p) if p.starts_with("/redfish/v1/SessionService/Sessions/") => {
                let n = p.rsplit('/').next().unwrap_or_default();
                let removed = self.live.lock().unwrap().remove(&format!("tok{n}"));
                if removed && token.as_deref() == Some(&format!("tok{n}") as &str) {
                    self.deletes.fetch_add(1, Ordering::Relaxed);
                    ("204 No Content", String::new(), String::new())
                } else {
                    ("404 Not Found", String::new(), "{}".into())
                }
            }
            ("GET", p) => {
                self.gets.fetch_add(1, Ordering::Relaxed);
                let session_ok = token.is_some_and(|t| self.live.lock().unwrap().contains(&t));
                if !session_ok && !basic_ok {
                    return ("401 Unauthorized", String::new(), "{}".into());
                }
                if let Mode::Slow(d) = self.mode {
                    tokio::time::sleep(d).await;
                }
                if let Mode::RetryAfter(s) = self.mode
                    && p == "/redfish/v1/"
                    && self.busy_sent.fetch_add(1, Ordering::Relaxed) == 0
                {
                    return (
                        "503 Service Unavailable",
                        format!("Retry-After: {s}\r\n"),
                        "{}".into(),
                    );
                }
                let (plain, query) = p.split_once('?').unwrap_or((p, ""));
                if self.mode == Mode::Huge && plain == "/redfish/v1/" {
                    let pad = "x".repeat(20 * 1024 * 1024);
                    return ("200 OK", String::new(), format!(r#"{{"Pad":"{pad}"}}"#));
                }
                let Some(doc) = self.doc(plain) else {
                    return ("404 Not Found", String::new(), "{}".into());
                };
                if query.is_empty() {
                    self.get_bytes.fetch_add(doc.len(), Ordering::Relaxed);
                    return ("200 OK", String::new(), doc);
                }
                if !matches!(self.mode, Mode::Queries | Mode::SelectRefused) {
                    return ("404 Not Found", String::new(), "{}".into());
                }
                let mut v: serde_json::Value = serde_json::from_str(&doc).unwrap();
                for q in query.split('&') {
                    if q == "$expand=.($levels=1)" {
                        let Some(members) = v.get_mut("Members").and_then(|m| m.as_array_mut()) else {
                            return ("400 Bad Request", String::new(), "{}".into());
                        };
                        for m in members.iter_mut() {
                            let id = m["@odata.id"].as_str().unwrap_or_default().to_owned();
                            if let Some(d) = self.doc(&id) {
                                *m = serde_json::from_str(&d).unwrap();
                            }
                        }
                        self.expanded.fetch_add(1, Ordering::Relaxed);
                    } else if let Some(fields) = q.strip_prefix("$select=") {
                        if self.mode == Mode::SelectRefused {
                            return ("400 Bad Request", String::new(), "{}".into());
                        }
                        let keep: Vec<&str> = fields.split(',').collect();
                        if let Some(o) = v.as_object_mut() {
                            o.retain(|k, _| k.starts_with("@odata") || keep.contains(&k.as_str()));
                        }
                        self.selected.fetch_add(1, Ordering::Relaxed);
                    } else {
                        return ("400 Bad Request", String::new(), "{}".into());
                    }
                }
                let out = v.to_string();
                self.get_bytes.fetch_add(out.len(), Ordering::Relaxed);
                ("200 OK", String::new(), out)
            }
            _ => ("405 Method Not Allowed", String::new(), "{}".into()),
        }
    }
}

impl Fake {
    /// The document at a plain path.
    fn doc(&self, p: &str) -> Option<String> {
        let queries = matches!(self.mode, Mode::Queries | Mode::SelectRefused);
        Some(match p {
            "/redfish/v1/" => format!(
                r#"{{"@odata.id":"/redfish/v1/","Chassis":{{"@odata.id":"/redfish/v1/Chassis"}},
                   "SessionService":{{"@odata.id":"/redfish/v1/SessionService"}},
                   "ProtocolFeaturesSupported":{{"ExpandQuery":{{"Levels":true,"MaxLevels":1}},"SelectQuery":{queries}}}}}"#
            ),
            "/redfish/v1/Chassis" => r#"{"@odata.id":"/redfish/v1/Chassis","Members":[{"@odata.id":"/redfish/v1/Chassis/1"}]}"#.into(),
            "/redfish/v1/Chassis/1" => CHASSIS_1.into(),
            "/redfish/v1/Chassis/1/Power" => power_doc(),
            "/redfish/v1/Systems/1" => r#"{"@odata.id":"/redfish/v1/Systems/1","Id":"1","BiosVersion":"F1.0","EthernetInterfaces":{"@odata.id":"/redfish/v1/Systems/1/EthernetInterfaces"}}"#.into(),
            "/redfish/v1/Systems/1/EthernetInterfaces" => r#"{"@odata.id":"/redfish/v1/Systems/1/EthernetInterfaces","Members":[{"@odata.id":"/redfish/v1/Systems/1/EthernetInterfaces/1"},{"@odata.id":"/redfish/v1/Systems/1/EthernetInterfaces/2"}]}"#.into(),
            "/redfish/v1/Systems/1/EthernetInterfaces/1" => r#"{"@odata.id":"/redfish/v1/Systems/1/EthernetInterfaces/1","Id":"1","MACAddress":"02-00-00-00-00-01"}"#.into(),
            "/redfish/v1/Systems/1/EthernetInterfaces/2" => r#"{"@odata.id":"/redfish/v1/Systems/1/EthernetInterfaces/2","Id":"2","MACAddress":"0200.0000.0002"}"#.into(),
            "/redfish/v1/Chassis/1/Sensors" => r#"{"@odata.id":"/redfish/v1/Chassis/1/Sensors","Members":[{"@odata.id":"/redfish/v1/Chassis/1/Sensors/Inlet"},{"@odata.id":"/redfish/v1/Chassis/1/Sensors/Off"}]}"#.into(),
            "/redfish/v1/Chassis/1/Sensors/Inlet" => r#"{"@odata.id":"/redfish/v1/Chassis/1/Sensors/Inlet","Id":"Inlet","Name":"Inlet Temp","ReadingType":"Temperature","Reading":21.5}"#.into(),
            "/redfish/v1/Chassis/1/Sensors/Off" => r#"{"@odata.id":"/redfish/v1/Chassis/1/Sensors/Off","Id":"Off","ReadingType":"Temperature","Reading":null}"#.into(),
            _ => return None,
        })
    }
}

fn b64(input: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in input.chunks(3) {
        let b = [c[0], *c.get(1).unwrap_or(&0), *c.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= c.len() {
                out.push(T[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}
