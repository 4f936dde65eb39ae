//! RMCP+ sessions (IPMI v2.0 §13.14–13.32): Get Channel Authentication Capabilities, Open
//! Session, RAKP 1–4, session keys and the per-packet integrity and confidentiality of every
//! command that follows.
//!
//! Key exchange (§13.31–13.32), with Kuid the user password zero-padded to 20 bytes and
//! H = HMAC-SHA1 (cipher suite 3) or HMAC-SHA256 (suite 17):
//!
//! ```text
//! RAKP2 auth code = H_Kuid(SIDm, SIDc, Rm, Rc, GUIDc, ROLEm, ULENGTHm, UNAMEm)   BMC proves the password
//! RAKP3 auth code = H_Kuid(Rc, SIDm, ROLEm, ULENGTHm, UNAMEm)                   we prove it
//! SIK             = H_Kuid(Rm, Rc, ROLEm, ULENGTHm, UNAMEm)                     (no BMC key Kg set)
//! RAKP4 ICV       = H_SIK(Rm, SIDc, GUIDc), truncated to 12 (SHA1) / 16 (SHA256) bytes
//! K1 = H_SIK(0x01 × 20)  integrity key (HMAC-SHA1-96 / HMAC-SHA256-128 over auth type..next header)
//! K2 = H_SIK(0x02 × 20)  AES-CBC-128 key = first 16 bytes; payload = IV ‖ AES(data ‖ 01 02 … n ‖ n)
//! ```
//! SIDm is our (remote console) session id, SIDc the BMC's; Rm/Rc the random numbers.
//!
//! Every exchange has a per-request timeout and retries (`Limits`), and ignores datagrams that are
//! not the awaited answer (wrong session id, failed integrity check, stale sequence, other
//! command); if only such datagrams arrived, the last reason is the error instead of a bare
//! timeout. Keys and the password never appear in `Debug` output or errors.
//!
//! IPMI 1.5 sessions (§22.13–22.17) are here too, for BMCs without RMCP+: Get Session Challenge,
//! Activate Session, then every message carries an auth code (MD5 over password, session id,
//! message and sequence number, or the straight password) and travels unencrypted.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use aes::Aes128;
use aes::cipher::{BlockModeDecrypt, BlockModeEncrypt, KeyIvInit};
use hmac::{Hmac, KeyInit, Mac};
use tokio::net::UdpSocket;

use super::rmcp::{
    self, MAX_PACKET, Packet, Request, Response, V2Header, decode_packet, decode_response, encode_request,
    encode_v2, encode_v15_unauthenticated, malformed, payload,
};
use crate::driver::{DriverError, Limits};
use crate::target::{IpmiCipherSuite, IpmiPrivilege, IpmiV15Auth};

/// The hash behind a cipher suite's authentication and integrity algorithms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Hash {
    Sha1,
    Sha256,
}

impl Hash {
    pub(crate) fn for_suite(s: IpmiCipherSuite) -> Self {
        match s {
            IpmiCipherSuite::Suite3 => Self::Sha1,
            IpmiCipherSuite::Suite17 => Self::Sha256,
        }
    }

    /// Full HMAC output length (RAKP auth codes, K1/K2, SIK).
    pub(crate) fn len(self) -> usize {
        match self {
            Self::Sha1 => 20,
            Self::Sha256 => 32,
        }
    }

    /// Truncated integrity length: HMAC-SHA1-96 / HMAC-SHA256-128 (also RAKP4's ICV).
    pub(crate) fn icv_len(self) -> usize {
        match self {
            Self::Sha1 => 12,
            Self::Sha256 => 16,
        }
    }

    pub(crate) fn mac(self, key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
        fn run<M: Mac + KeyInit>(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
            let mut m = <M as KeyInit>::new_from_slice(key).expect("HMAC accepts keys of any length");
            for p in parts {
                m.update(p);
            }
            m.finalize().into_bytes().to_vec()
        }
        match self {
            Self::Sha1 => run::<Hmac<sha1::Sha1>>(key, parts),
            Self::Sha256 => run::<Hmac<sha2::Sha256>>(key, parts),
        }
    }
}

/// Constant-time comparison (no early exit on the first differing byte).
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Algorithm numbers sent in Open Session (§13.28, table 13-17..13-19).
fn algorithms(s: IpmiCipherSuite) -> (u8, u8, u8) {
    match s {
        IpmiCipherSuite::Suite3 => (0x01, 0x01, 0x01), // RAKP-HMAC-SHA1, HMAC-SHA1-96, AES-CBC-128
        IpmiCipherSuite::Suite17 => (0x03, 0x04, 0x01), // RAKP-HMAC-SHA256, HMAC-SHA256-128, AES-CBC-128
    }
}

/// The values both sides feed into the RAKP HMACs.
pub(crate) struct Rakp<'a> {
    pub(crate) hash: Hash,
    /// Kuid: password, zero-padded to 20 bytes.
    pub(crate) kuid: &'a [u8],
    pub(crate) console_sid: u32,
    pub(crate) bmc_sid: u32,
    pub(crate) console_rand: [u8; 16],
    pub(crate) bmc_rand: [u8; 16],
    pub(crate) bmc_guid: [u8; 16],
    /// ROLEm exactly as sent in RAKP 1 (privilege plus the name-only lookup bit).
    pub(crate) role: u8,
    pub(crate) user: &'a [u8],
}

impl std::fmt::Debug for Rakp<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rakp")
            .field("hash", &self.hash)
            .finish_non_exhaustive()
    }
}

impl Rakp<'_> {
    fn ulen(&self) -> [u8; 1] {
        [u8::try_from(self.user.len()).unwrap_or(u8::MAX)]
    }

    pub(crate) fn rakp2_auth_code(&self) -> Vec<u8> {
        self.hash.mac(
            self.kuid,
            &[
                &self.console_sid.to_le_bytes(),
                &self.bmc_sid.to_le_bytes(),
                &self.console_rand,
                &self.bmc_rand,
                &self.bmc_guid,
                &[self.role],
                &self.ulen(),
                self.user,
            ],
        )
    }

    pub(crate) fn rakp3_auth_code(&self) -> Vec<u8> {
        self.hash.mac(
            self.kuid,
            &[
                &self.bmc_rand,
                &self.console_sid.to_le_bytes(),
                &[self.role],
                &self.ulen(),
                self.user,
            ],
        )
    }

    pub(crate) fn sik(&self) -> Vec<u8> {
        self.hash.mac(
            self.kuid,
            &[
                &self.console_rand,
                &self.bmc_rand,
                &[self.role],
                &self.ulen(),
                self.user,
            ],
        )
    }

    pub(crate) fn rakp4_icv(&self, sik: &[u8]) -> Vec<u8> {
        let mut v = self.hash.mac(
            sik,
            &[&self.console_rand, &self.bmc_sid.to_le_bytes(), &self.bmc_guid],
        );
        v.truncate(self.hash.icv_len());
        v
    }
}

/// Session keys derived from SIK. `Debug` never shows them.
pub(crate) struct Keys {
    hash: Hash,
    k1: Vec<u8>,
    aes: [u8; 16],
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Keys({:?}, ***)", self.hash)
    }
}

impl Keys {
    pub(crate) fn derive(hash: Hash, sik: &[u8]) -> Self {
        // The constants are 20 bytes for SHA-256 suites too (as ipmitool and BMCs do).
        let k1 = hash.mac(sik, &[&[0x01; 20]]);
        let k2 = hash.mac(sik, &[&[0x02; 20]]);
        let mut aes = [0u8; 16];
        aes.copy_from_slice(&k2[..16]);
        Self { hash, k1, aes }
    }

    /// AuthCode of an outbound packet: HMAC_K1 over auth type..next header, truncated.
    pub(crate) fn integrity(&self, covered: &[u8]) -> Vec<u8> {
        let mut v = self.hash.mac(&self.k1, &[covered]);
        v.truncate(self.hash.icv_len());
        v
    }

    fn check_integrity(&self, covered: &[u8], code: &[u8]) -> bool {
        ct_eq(&self.integrity(covered), code)
    }

    /// AES-CBC-128 confidentiality (§13.29): IV ‖ E(data ‖ pad 01 02 … ‖ pad_len).
    pub(crate) fn encrypt(&self, iv: [u8; 16], plain: &[u8]) -> Vec<u8> {
        let pad = (16 - (plain.len() + 1) % 16) % 16;
        let mut buf = Vec::with_capacity(16 + plain.len() + pad + 1);
        buf.extend_from_slice(plain);
        // pad ≤ 15: the pad bytes are 1, 2, … and the pad length fits a byte.
        buf.extend((1..=pad).map(|i| u8::try_from(i).unwrap_or(0)));
        buf.push(u8::try_from(pad).unwrap_or(0));
        let mut enc = cbc::Encryptor::<Aes128>::new(&self.aes.into(), &iv.into());
        for chunk in buf.chunks_exact_mut(16) {
            let mut block = aes::Block::try_from(&*chunk).expect("chunks_exact yields 16-byte blocks");
            enc.encrypt_block(&mut block);
            chunk.copy_from_slice(&block);
        }
        let mut out = iv.to_vec();
        out.extend_from_slice(&buf);
        out
    }

    pub(crate) fn decrypt(&self, data: &[u8]) -> Result<Vec<u8>, DriverError> {
        const W: &str = "encrypted payload";
        if data.len() < 32 || !data.len().is_multiple_of(16) {
            return Err(malformed(
                W,
                format!("{} bytes is not IV + whole AES blocks", data.len()),
            ));
        }
        let mut iv = [0u8; 16];
        iv.copy_from_slice(&data[..16]);
        let mut dec = cbc::Decryptor::<Aes128>::new(&self.aes.into(), &iv.into());
        let mut out = data[16..].to_vec();
        for chunk in out.chunks_exact_mut(16) {
            let mut block = aes::Block::try_from(&*chunk).expect("chunks_exact yields 16-byte blocks");
            dec.decrypt_block(&mut block);
            chunk.copy_from_slice(&block);
        }
        let pad = usize::from(*out.last().unwrap_or(&0));
        if pad > 15 || pad + 1 > out.len() {
            return Err(malformed(
                W,
                format!("confidentiality pad length {pad} is invalid"),
            ));
        }
        let body_len = out.len() - pad - 1;
        if out[body_len..out.len() - 1]
            .iter()
            .enumerate()
            .any(|(i, b)| usize::from(*b) != i + 1)
        {
            return Err(malformed(W, "confidentiality pad bytes are not 1, 2, …"));
        }
        out.truncate(body_len);
        Ok(out)
    }
}

/// Auth error detail used when the BMC refuses the requested role (caller may retry lower).
pub(crate) const ROLE_REFUSED: &str = "BMC refused the requested privilege level for this user";

/// RAKP / Open Session status codes (§13.24, table 13-15).
fn rakp_status(step: &str, code: u8) -> DriverError {
    let auth = |detail: String| DriverError::Auth { detail };
    match code {
        0x09..=0x0B => auth(format!("{ROLE_REFUSED} ({step} status {code:#04x})")),
        0x0D => auth(format!("unknown user ({step}: unauthorized name)")),
        0x0C => auth(format!("invalid user name length ({step})")),
        0x0E => auth(format!("unauthorized GUID ({step})")),
        0x0F => auth(format!(
            "BMC rejected our key exchange code: wrong password ({step})"
        )),
        0x04 | 0x05 | 0x06 | 0x07 | 0x10 | 0x11 => DriverError::DeviceException(format!(
            "BMC does not support the requested cipher suite ({step} status {code:#04x})"
        )),
        0x01 => DriverError::DeviceException(format!("BMC has no resources for a session ({step})")),
        _ => DriverError::DeviceException(format!("{step} failed with status {code:#04x}")),
    }
}

/// What an inbound datagram means to the exchange waiting for it.
enum Verdict<T> {
    Done(Result<T, DriverError>),
    /// Not the awaited answer; the reason is reported if nothing better arrives.
    Ignore(DriverError),
}

/// UDP socket plus the timing policy.
#[derive(Debug)]
struct Link {
    sock: UdpSocket,
    endpoint: String,
    timeout: Duration,
    retries: u32,
}

impl Link {
    async fn connect(host: &str, port: u16, limits: &Limits) -> Result<Self, DriverError> {
        let endpoint = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        let connect_err = |detail: String| DriverError::Connect {
            endpoint: endpoint.clone(),
            detail,
        };
        let addrs: Vec<SocketAddr> =
            tokio::time::timeout(limits.request_timeout, tokio::net::lookup_host((host, port)))
                .await
                .map_err(|_| connect_err("name resolution timed out".into()))?
                .map_err(|e| connect_err(e.to_string()))?
                .collect();
        let addr = addrs.first().ok_or_else(|| connect_err("no address".into()))?;
        let local: SocketAddr = if addr.is_ipv4() {
            (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let sock = UdpSocket::bind(local)
            .await
            .map_err(|e| connect_err(e.to_string()))?;
        sock.connect(addr).await.map_err(|e| connect_err(e.to_string()))?;
        Ok(Self {
            sock,
            endpoint,
            timeout: limits.request_timeout,
            retries: limits.retries,
        })
    }

    /// Sends `make()` (called again for every retransmission) and waits for a datagram that
    /// `accept` takes, within `timeout` per attempt and `retries` retransmissions.
    async fn exchange<T>(
        &self,
        what: &str,
        timeout: Duration,
        retries: u32,
        mut make: impl FnMut() -> Vec<u8>,
        mut accept: impl FnMut(&[u8]) -> Verdict<T>,
    ) -> Result<T, DriverError> {
        let mut buf = vec![0u8; MAX_PACKET];
        let mut rejected: Option<DriverError> = None;
        for _ in 0..=retries {
            let pkt = make();
            self.sock.send(&pkt).await.map_err(|e| self.io_err(&e))?;
            let deadline = tokio::time::Instant::now() + timeout;
            loop {
                let n = match tokio::time::timeout_at(deadline, self.sock.recv(&mut buf)).await {
                    Err(_) => break,
                    Ok(Err(e)) => return Err(self.io_err(&e)),
                    Ok(Ok(n)) => n,
                };
                match accept(&buf[..n]) {
                    Verdict::Done(r) => return r,
                    Verdict::Ignore(e) => rejected = Some(e),
                }
            }
        }
        Err(rejected.unwrap_or_else(|| DriverError::Timeout {
            what: what.to_owned(),
            after: timeout * (retries + 1),
        }))
    }

    fn io_err(&self, e: &std::io::Error) -> DriverError {
        DriverError::Connect {
            endpoint: self.endpoint.clone(),
            detail: if e.kind() == std::io::ErrorKind::ConnectionRefused {
                "connection refused (nothing listens on this UDP port)".into()
            } else {
                e.to_string()
            },
        }
    }
}

fn random<const N: usize>() -> Result<[u8; N], DriverError> {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).map_err(|e| DriverError::DeviceException(format!("no OS randomness: {e}")))?;
    Ok(b)
}

/// An established RMCP+ session. Dropping it without [`Session::close`] still sends a Close
/// Session request (fire and forget), so a cancelled poll does not leak a BMC session slot.
#[derive(Debug)]
pub(crate) struct Session {
    link: Link,
    protection: Protection,
    /// Session id in the BMC's answers (RMCP+: ours; IPMI 1.5: the one session id).
    console_sid: u32,
    /// Session id in our requests (RMCP+: the BMC's; IPMI 1.5: the one session id).
    bmc_sid: u32,
    out_seq: AtomicU32,
    in_seq_high: AtomicU32,
    rq_seq: u8,
    closed: bool,
    pub(crate) suite: IpmiCipherSuite,
    pub(crate) privilege: IpmiPrivilege,
    /// What Get Channel Authentication Capabilities said, for attributes.
    pub(crate) channel: u8,
}

/// How the packets of a session are protected.
enum Protection {
    /// RMCP+: HMAC integrity and AES-CBC-128 confidentiality with the derived keys.
    Plus(Keys),
    /// IPMI 1.5: a per-message auth code (MD5 over password, session id, message, sequence, or
    /// the password itself); no confidentiality.
    V15 { auth_type: u8, password: [u8; 16] },
}

impl std::fmt::Debug for Protection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Plus(k) => write!(f, "Plus({k:?})"),
            Self::V15 { auth_type, .. } => write!(f, "V15(auth type {auth_type:#04x}, ***)"),
        }
    }
}

/// IPMI 1.5 auth code (§22.17.1): MD5(password ‖ session id ‖ message ‖ sequence ‖ password),
/// or the 16-byte password itself for "straight password".
pub(crate) fn v15_auth_code(
    auth_type: u8,
    password: &[u8; 16],
    session_id: u32,
    message: &[u8],
    seq: u32,
) -> [u8; 16] {
    use md5::Digest;
    if auth_type != 0x02 {
        return *password;
    }
    let mut h = md5::Md5::new();
    h.update(password);
    h.update(session_id.to_le_bytes());
    h.update(message);
    h.update(seq.to_le_bytes());
    h.update(password);
    let mut out = [0u8; 16];
    out.copy_from_slice(&h.finalize());
    out
}

/// Credentials and session parameters for [`Session::open`].
pub(crate) struct OpenParams<'a> {
    pub(crate) host: &'a str,
    pub(crate) port: u16,
    pub(crate) user: &'a str,
    pub(crate) password: &'a str,
    pub(crate) suite: IpmiCipherSuite,
    pub(crate) privilege: IpmiPrivilege,
    /// IPMI 1.5 session with this authentication instead of RMCP+.
    pub(crate) v15: Option<IpmiV15Auth>,
}

impl std::fmt::Debug for OpenParams<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenParams")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("password", &"***")
            .finish_non_exhaustive()
    }
}

impl Session {
    /// Runs Get Channel Authentication Capabilities, Open Session and RAKP 1–4.
    ///
    /// # Errors
    /// `Connect` (socket), `Timeout` (no answer), `Auth` (unknown user, wrong password, role
    /// refused), `DeviceException` (cipher suite refused), `Malformed` (garbage answers).
    pub(crate) async fn open(p: &OpenParams<'_>, limits: &Limits) -> Result<Self, DriverError> {
        if p.user.len() > 16 {
            return Err(DriverError::Auth {
                detail: "user name longer than 16 bytes".into(),
            });
        }
        if p.password.len() > 20 || (p.v15.is_some() && p.password.len() > 16) {
            return Err(DriverError::Auth {
                detail: "password too long (IPMI 2.0: at most 20 bytes, IPMI 1.5: 16)".into(),
            });
        }
        let link = Link::connect(p.host, p.port, limits).await?;
        let hash = Hash::for_suite(p.suite);
        let priv_byte = p.privilege as u8;

        // 1. Get Channel Authentication Capabilities (App 38h), IPMI 1.5 wrapper, no session.
        let caps_req = encode_v15_unauthenticated(&encode_request(
            0,
            &Request {
                netfn: 0x06,
                cmd: 0x38,
                data: &[if p.v15.is_some() { 0x0E } else { 0x8E }, priv_byte],
            },
        ));
        let caps = link
            .exchange(
                "Get Channel Authentication Capabilities",
                link.timeout,
                link.retries,
                || caps_req.clone(),
                |b| match decode_packet(b, 0) {
                    Ok(Packet::V15 { message, .. })
                    | Ok(Packet::V2(rmcp::V2Packet { payload: message, .. })) => {
                        match decode_response(message) {
                            Ok(r) if r.cmd == 0x38 => Verdict::Done(Ok(r)),
                            Ok(r) => Verdict::Ignore(malformed(
                                "IPMI response",
                                format!("command {:#04x}, expected 0x38", r.cmd),
                            )),
                            Err(e) => Verdict::Ignore(e),
                        }
                    }
                    Err(e) => Verdict::Ignore(e),
                },
            )
            .await?;
        if caps.completion_code == 0xCC {
            // An IPMI 1.5-only BMC refuses the "IPMI v2.0 extended data" bit.
            return Err(DriverError::Unsupported(
                "IPMI 2.0 / RMCP+ (the BMC offers only IPMI 1.5: poll it with ?v15=md5)",
            ));
        }
        if caps.completion_code != 0 {
            return Err(DriverError::DeviceException(format!(
                "Get Channel Authentication Capabilities: {}",
                rmcp::completion_text(caps.completion_code)
            )));
        }
        let d = &caps.data;
        if d.len() < 8 {
            return Err(malformed(
                "channel authentication capabilities",
                format!("{} bytes", d.len()),
            ));
        }
        if let Some(auth) = p.v15 {
            return Self::open_v15(link, p, auth, d[1], d[0] & 0x0F).await;
        }
        if d[1] & 0x80 == 0 || d[3] & 0x02 == 0 {
            return Err(DriverError::Unsupported(
                "IPMI 2.0 / RMCP+ (the BMC offers only IPMI 1.5: poll it with ?v15=md5)",
            ));
        }
        let channel = d[0] & 0x0F;

        // 2. Open Session.
        let console_sid = loop {
            let v = u32::from_le_bytes(random::<4>()?);
            if v != 0 {
                break v;
            }
        };
        let (a, i, c) = algorithms(p.suite);
        let tag = random::<1>()?[0];
        let mut open_req = vec![tag, priv_byte, 0, 0];
        open_req.extend_from_slice(&console_sid.to_le_bytes());
        for (ptype, alg) in [(0u8, a), (1, i), (2, c)] {
            open_req.extend_from_slice(&[ptype, 0, 0, 0x08, alg, 0, 0, 0]);
        }
        let open_pkt = presession(payload::OPEN_SESSION_REQUEST, &open_req);
        let bmc_sid = link
            .exchange(
                "RMCP+ Open Session",
                link.timeout,
                link.retries,
                || open_pkt.clone(),
                |b| {
                    let d = match presession_payload(b, payload::OPEN_SESSION_RESPONSE, tag) {
                        Ok(d) => d,
                        Err(e) => return Verdict::Ignore(e),
                    };
                    if d[1] != 0 {
                        return Verdict::Done(Err(rakp_status("Open Session", d[1])));
                    }
                    if d.len() < 36 {
                        return Verdict::Ignore(malformed(
                            "Open Session response",
                            format!("{} bytes", d.len()),
                        ));
                    }
                    if rmcp::u32le(d, 4) != Some(console_sid) {
                        return Verdict::Ignore(malformed(
                            "Open Session response",
                            "remote console session id is not ours",
                        ));
                    }
                    if (d[16], d[24], d[32]) != (a, i, c) {
                        return Verdict::Done(Err(DriverError::DeviceException(format!(
                            "BMC does not support the requested cipher suite {}: it answered Open Session \
                             with algorithms {:#04x}/{:#04x}/{:#04x}",
                            match p.suite {
                                IpmiCipherSuite::Suite3 => 3,
                                IpmiCipherSuite::Suite17 => 17,
                            },
                            d[16],
                            d[24],
                            d[32]
                        ))));
                    }
                    match rmcp::u32le(d, 8) {
                        Some(0) | None => {
                            Verdict::Ignore(malformed("Open Session response", "BMC session id 0"))
                        }
                        Some(sid) => Verdict::Done(Ok(sid)),
                    }
                },
            )
            .await?;

        // 3. RAKP 1 → RAKP 2.
        let console_rand = random::<16>()?;
        let role = 0x10 | priv_byte; // name-only lookup
        let user = p.user.as_bytes();
        let tag = tag.wrapping_add(1);
        let mut r1 = vec![tag, 0, 0, 0];
        r1.extend_from_slice(&bmc_sid.to_le_bytes());
        r1.extend_from_slice(&console_rand);
        r1.extend_from_slice(&[role, 0, 0, u8::try_from(user.len()).unwrap_or(0)]);
        r1.extend_from_slice(user);
        let r1_pkt = presession(payload::RAKP1, &r1);
        let mut kuid = [0u8; 20];
        kuid[..p.password.len()].copy_from_slice(p.password.as_bytes());
        let (bmc_rand, bmc_guid, code) = link
            .exchange(
                "RAKP message 1",
                link.timeout,
                link.retries,
                || r1_pkt.clone(),
                |b| {
                    let d = match rakp_reply(b, payload::RAKP2, "RAKP 2", tag, console_sid) {
                        Ok(d) => d,
                        Err(v) => return v,
                    };
                    if d.len() < 40 + hash.len() {
                        return Verdict::Ignore(malformed(
                            "RAKP 2",
                            format!(
                                "{} bytes, expected {} for this cipher suite",
                                d.len(),
                                40 + hash.len()
                            ),
                        ));
                    }
                    let mut rc = [0u8; 16];
                    rc.copy_from_slice(&d[8..24]);
                    let mut guid = [0u8; 16];
                    guid.copy_from_slice(&d[24..40]);
                    Verdict::Done(Ok((rc, guid, d[40..40 + hash.len()].to_vec())))
                },
            )
            .await?;
        let rakp = Rakp {
            hash,
            kuid: &kuid,
            console_sid,
            bmc_sid,
            console_rand,
            bmc_rand,
            bmc_guid,
            role,
            user,
        };
        if !ct_eq(&rakp.rakp2_auth_code(), &code) {
            // The BMC's proof does not match our password; tell it so (RAKP 3 with status 0Fh)
            // so it can drop the half-open session at once.
            let mut r3 = vec![tag.wrapping_add(1), 0x0F, 0, 0];
            r3.extend_from_slice(&bmc_sid.to_le_bytes());
            let _ = link.sock.send(&presession(payload::RAKP3, &r3)).await;
            return Err(DriverError::Auth {
                detail: "RAKP 2 key exchange code does not match: wrong password".into(),
            });
        }

        // 4. RAKP 3 → RAKP 4.
        let tag = tag.wrapping_add(1);
        let mut r3 = vec![tag, 0, 0, 0];
        r3.extend_from_slice(&bmc_sid.to_le_bytes());
        r3.extend_from_slice(&rakp.rakp3_auth_code());
        let r3_pkt = presession(payload::RAKP3, &r3);
        let sik = rakp.sik();
        let icv = link
            .exchange(
                "RAKP message 3",
                link.timeout,
                link.retries,
                || r3_pkt.clone(),
                |b| {
                    let d = match rakp_reply(b, payload::RAKP4, "RAKP 4", tag, console_sid) {
                        Ok(d) => d,
                        Err(v) => return v,
                    };
                    match d.get(8..8 + hash.icv_len()) {
                        Some(v) => Verdict::Done(Ok(v.to_vec())),
                        None => Verdict::Ignore(malformed("RAKP 4", format!("{} bytes", d.len()))),
                    }
                },
            )
            .await?;
        if !ct_eq(&rakp.rakp4_icv(&sik), &icv) {
            return Err(DriverError::Auth {
                detail: "RAKP 4 integrity check value does not match the session key".into(),
            });
        }
        Ok(Self {
            link,
            protection: Protection::Plus(Keys::derive(hash, &sik)),
            console_sid,
            bmc_sid,
            out_seq: AtomicU32::new(0),
            in_seq_high: AtomicU32::new(0),
            rq_seq: 0,
            closed: false,
            suite: p.suite,
            privilege: p.privilege,
            channel,
        })
    }

    /// IPMI 1.5 session (§22.15–22.16): Get Session Challenge, then Activate Session with the
    /// chosen auth type; the BMC names the sequence number we start with.
    async fn open_v15(
        link: Link,
        p: &OpenParams<'_>,
        auth: IpmiV15Auth,
        supported: u8,
        channel: u8,
    ) -> Result<Self, DriverError> {
        let (auth_type, bit, name) = match auth {
            IpmiV15Auth::Md5 => (0x02u8, 0x04u8, "MD5"),
            IpmiV15Auth::Password => (0x04, 0x10, "straight password"),
        };
        if supported & bit == 0 {
            return Err(DriverError::DeviceException(format!(
                "BMC does not offer IPMI 1.5 {name} authentication on this channel"
            )));
        }
        let mut password = [0u8; 16];
        password[..p.password.len()].copy_from_slice(p.password.as_bytes());
        let mut user = [0u8; 16];
        user[..p.user.len()].copy_from_slice(p.user.as_bytes());

        // Get Session Challenge (App 39h), unauthenticated.
        let mut data = vec![auth_type];
        data.extend_from_slice(&user);
        let req = encode_v15_unauthenticated(&encode_request(
            1,
            &Request {
                netfn: 0x06,
                cmd: 0x39,
                data: &data,
            },
        ));
        let accept = |cmd: u8| {
            move |b: &[u8]| match decode_packet(b, 0) {
                Ok(Packet::V15 { message, .. }) => match decode_response(message) {
                    Ok(r) if r.cmd == cmd => Verdict::Done(Ok(r)),
                    Ok(_) => Verdict::Ignore(malformed("IPMI response", "answer to another command")),
                    Err(e) => Verdict::Ignore(e),
                },
                Ok(Packet::V2(_)) => Verdict::Ignore(malformed("IPMI 1.5 packet", "RMCP+ answer")),
                Err(e) => Verdict::Ignore(e),
            }
        };
        let r = link
            .exchange(
                "Get Session Challenge",
                link.timeout,
                link.retries,
                || req.clone(),
                accept(0x39),
            )
            .await?;
        match r.completion_code {
            0 => {}
            0x81 => {
                return Err(DriverError::Auth {
                    detail: "unknown user (Get Session Challenge)".into(),
                });
            }
            0x82 => {
                return Err(DriverError::Auth {
                    detail: "null user disabled (Get Session Challenge)".into(),
                });
            }
            cc => return Err(cc_error("Get Session Challenge", cc)),
        }
        let (Some(temp_sid), Some(challenge)) = (rmcp::u32le(&r.data, 0), r.data.get(4..20)) else {
            return Err(malformed(
                "Get Session Challenge response",
                format!("{} bytes", r.data.len()),
            ));
        };

        // Activate Session (App 3Ah), authenticated with the temporary session id.
        let bmc_first_seq = loop {
            let v = u32::from_le_bytes(random::<4>()?);
            if v != 0 && v < 0xFFFF_0000 {
                break v;
            }
        };
        let mut data = vec![auth_type, p.privilege as u8];
        data.extend_from_slice(challenge);
        data.extend_from_slice(&bmc_first_seq.to_le_bytes());
        let message = encode_request(
            2,
            &Request {
                netfn: 0x06,
                cmd: 0x3A,
                data: &data,
            },
        );
        let code = v15_auth_code(auth_type, &password, temp_sid, &message, 0);
        let pkt = rmcp::encode_v15(auth_type, 0, temp_sid, &code, &message);
        let r = match link
            .exchange(
                "Activate Session",
                link.timeout,
                link.retries,
                || pkt.clone(),
                accept(0x3A),
            )
            .await
        {
            Err(DriverError::Timeout { .. }) => {
                return Err(DriverError::Auth {
                    detail:
                        "no answer to Activate Session: wrong password (IPMI 1.5 BMCs drop requests whose \
                             auth code does not match)"
                            .into(),
                });
            }
            r => r?,
        };
        match r.completion_code {
            0 => {}
            0x86 => {
                return Err(DriverError::Auth {
                    detail: format!("{ROLE_REFUSED} (Activate Session)"),
                });
            }
            cc => return Err(cc_error("Activate Session", cc)),
        }
        let (Some(sid), Some(first_seq)) = (rmcp::u32le(&r.data, 1), rmcp::u32le(&r.data, 5)) else {
            return Err(malformed(
                "Activate Session response",
                format!("{} bytes", r.data.len()),
            ));
        };
        Ok(Self {
            link,
            protection: Protection::V15 { auth_type, password },
            console_sid: sid,
            bmc_sid: sid,
            out_seq: AtomicU32::new(first_seq.wrapping_sub(1)),
            in_seq_high: AtomicU32::new(0),
            rq_seq: 2,
            closed: false,
            suite: p.suite,
            privilege: p.privilege,
            channel,
        })
    }

    /// `Some(auth)` for an IPMI 1.5 session.
    pub(crate) fn v15(&self) -> Option<IpmiV15Auth> {
        match &self.protection {
            Protection::Plus(_) => None,
            Protection::V15 { auth_type: 0x02, .. } => Some(IpmiV15Auth::Md5),
            Protection::V15 { .. } => Some(IpmiV15Auth::Password),
        }
    }

    fn next_seq(&self) -> u32 {
        let s = self.out_seq.load(Ordering::Relaxed).wrapping_add(1).max(1);
        self.out_seq.store(s, Ordering::Relaxed);
        s
    }

    fn seal(&self, message: &[u8]) -> Result<Vec<u8>, DriverError> {
        let seq = self.next_seq();
        let keys = match &self.protection {
            Protection::Plus(k) => k,
            Protection::V15 { auth_type, password } => {
                let code = v15_auth_code(*auth_type, password, self.bmc_sid, message, seq);
                return Ok(rmcp::encode_v15(*auth_type, seq, self.bmc_sid, &code, message));
            }
        };
        let body = keys.encrypt(random::<16>()?, message);
        let h = V2Header {
            payload_type: payload::IPMI,
            encrypted: true,
            session_id: self.bmc_sid,
            sequence: seq,
        };
        Ok(encode_v2(&h, &body, Some(&|c: &[u8]| keys.integrity(c))))
    }

    /// Checks an inbound IPMI 1.5 datagram: our session id, and a valid auth code when the BMC
    /// sends one (per-message authentication may be disabled on the channel: auth type none).
    fn unseal_v15(&self, b: &[u8], our_type: u8, password: &[u8; 16]) -> Result<Response, DriverError> {
        const W: &str = "IPMI 1.5 packet";
        let Packet::V15 {
            auth_type,
            session_id,
            sequence,
            auth_code,
            message,
        } = decode_packet(b, 0)?
        else {
            return Err(malformed(W, "RMCP+ packet inside an IPMI 1.5 session"));
        };
        if session_id != self.console_sid {
            return Err(malformed(
                W,
                format!(
                    "session id {session_id:#010x} is not ours ({:#010x})",
                    self.console_sid
                ),
            ));
        }
        if auth_type != 0 {
            if auth_type != our_type {
                return Err(malformed(
                    W,
                    format!("authentication type {auth_type:#04x}, expected {our_type:#04x}"),
                ));
            }
            let want = v15_auth_code(auth_type, password, session_id, message, sequence);
            if !ct_eq(&want, auth_code) {
                return Err(malformed(W, "auth code check failed"));
            }
        }
        decode_response(message)
    }

    /// Checks and opens one inbound datagram of this session.
    fn unseal(&self, b: &[u8]) -> Result<Response, DriverError> {
        const W: &str = "RMCP+ packet";
        let keys = match &self.protection {
            Protection::Plus(k) => k,
            Protection::V15 { auth_type, password } => return self.unseal_v15(b, *auth_type, password),
        };
        let p = match decode_packet(b, keys.hash.icv_len())? {
            Packet::V2(p) => p,
            Packet::V15 { .. } => return Err(malformed(W, "IPMI 1.5 packet inside an RMCP+ session")),
        };
        if p.session_id != self.console_sid {
            return Err(malformed(
                W,
                format!(
                    "session id {:#010x} is not ours ({:#010x})",
                    p.session_id, self.console_sid
                ),
            ));
        }
        if !p.authenticated || !keys.check_integrity(p.covered, p.auth_code) {
            return Err(malformed(W, "integrity check failed"));
        }
        if !p.encrypted {
            return Err(malformed(W, "unencrypted payload in an encrypted session"));
        }
        if p.payload_type != payload::IPMI {
            return Err(malformed(W, format!("payload type {:#04x}", p.payload_type)));
        }
        // §6.12.13: accept sequence numbers up to 15 behind the highest seen (reordering);
        // older ones and 0 are replays.
        let high = self.in_seq_high.load(Ordering::Relaxed);
        if p.sequence == 0 || (p.sequence < high && high - p.sequence > 15) {
            return Err(malformed(
                W,
                format!("stale session sequence number {}", p.sequence),
            ));
        }
        self.in_seq_high.store(high.max(p.sequence), Ordering::Relaxed);
        decode_response(&keys.decrypt(p.payload)?)
    }

    /// Sends one request and returns the response, whatever its completion code.
    pub(crate) async fn raw(
        &mut self,
        netfn: u8,
        cmd: u8,
        data: &[u8],
        what: &str,
    ) -> Result<Response, DriverError> {
        self.rq_seq = (self.rq_seq + 1) & 0x3F;
        let rq_seq = self.rq_seq;
        let message = encode_request(rq_seq, &Request { netfn, cmd, data });
        // Encryption needs randomness; build the first packet up front so that failure is an error.
        let mut first = Some(self.seal(&message)?);
        let this = &*self;
        this.link
            .exchange(
                what,
                this.link.timeout,
                this.link.retries,
                || {
                    first
                        .take()
                        .or_else(|| this.seal(&message).ok())
                        .unwrap_or_default()
                },
                |b| match this.unseal(b) {
                    Ok(r) if r.rq_seq == rq_seq && r.cmd == cmd && r.netfn == netfn + 1 => {
                        Verdict::Done(Ok(r))
                    }
                    Ok(r) => Verdict::Ignore(malformed(
                        "IPMI response",
                        format!("answer to another request (seq {}, cmd {:#04x})", r.rq_seq, r.cmd),
                    )),
                    Err(e) => Verdict::Ignore(e),
                },
            )
            .await
    }

    /// Like [`Session::raw`], but a non-zero completion code is an error.
    pub(crate) async fn cmd(
        &mut self,
        netfn: u8,
        cmd: u8,
        data: &[u8],
        what: &str,
    ) -> Result<Vec<u8>, DriverError> {
        let r = self.raw(netfn, cmd, data, what).await?;
        if r.completion_code != 0 {
            return Err(cc_error(what, r.completion_code));
        }
        Ok(r.data)
    }

    /// Close Session (App 3Ch): one try, short wait; errors are irrelevant at this point.
    pub(crate) async fn close(mut self) {
        self.closed = true;
        let message = encode_request(
            (self.rq_seq + 1) & 0x3F,
            &Request {
                netfn: 0x06,
                cmd: 0x3C,
                data: &self.bmc_sid.to_le_bytes(),
            },
        );
        let Ok(pkt) = self.seal(&message) else { return };
        let wait = self.link.timeout.min(Duration::from_millis(500));
        let _ = self
            .link
            .exchange(
                "Close Session",
                wait,
                0,
                || pkt.clone(),
                |b| match self.unseal(b) {
                    Ok(r) if r.cmd == 0x3C => Verdict::Done(Ok(())),
                    Ok(_) => Verdict::Ignore(malformed("IPMI response", "other command")),
                    Err(e) => Verdict::Ignore(e),
                },
            )
            .await;
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if !self.closed {
            let message = encode_request(
                (self.rq_seq + 1) & 0x3F,
                &Request {
                    netfn: 0x06,
                    cmd: 0x3C,
                    data: &self.bmc_sid.to_le_bytes(),
                },
            );
            if let Ok(pkt) = self.seal(&message) {
                let _ = self.link.sock.try_send(&pkt);
            }
        }
    }
}

/// A command's non-zero completion code as an error.
pub(crate) fn cc_error(what: &str, cc: u8) -> DriverError {
    DriverError::DeviceException(format!(
        "{what}: completion code {cc:#04x} ({})",
        rmcp::completion_text(cc)
    ))
}

fn presession(payload_type: u8, body: &[u8]) -> Vec<u8> {
    encode_v2(
        &V2Header {
            payload_type,
            encrypted: false,
            session_id: 0,
            sequence: 0,
        },
        body,
        None,
    )
}

/// The payload of an unauthenticated pre-session RMCP+ answer of `payload_type` with message
/// tag `tag`; at least 8 bytes (tag, status, reserved, console session id).
/// A RAKP 2 or 4 answer to our message `tag`: its payload when the status is 0 and it names our
/// session; a refusal ends the exchange (the BMC's status, explained); anything else is not
/// the awaited answer.
fn rakp_reply<'a, T>(
    b: &'a [u8],
    payload_type: u8,
    name: &str,
    tag: u8,
    console_sid: u32,
) -> Result<&'a [u8], Verdict<T>> {
    let d = presession_payload(b, payload_type, tag).map_err(Verdict::Ignore)?;
    if d[1] != 0 {
        return Err(Verdict::Done(Err(rakp_status(name, d[1]))));
    }
    if rmcp::u32le(d, 4) != Some(console_sid) {
        return Err(Verdict::Ignore(malformed(
            name,
            "remote console session id is not ours",
        )));
    }
    Ok(d)
}

pub(super) fn presession_payload(b: &[u8], payload_type: u8, tag: u8) -> Result<&[u8], DriverError> {
    let Packet::V2(p) = decode_packet(b, 0)? else {
        return Err(malformed("RMCP+ packet", "IPMI 1.5 answer during session setup"));
    };
    if p.payload_type != payload_type {
        return Err(malformed(
            "RMCP+ packet",
            format!(
                "payload type {:#04x}, expected {payload_type:#04x}",
                p.payload_type
            ),
        ));
    }
    let d = p.payload;
    // Error answers may be just tag + status.
    if d.len() < 2 {
        return Err(malformed(
            "RMCP+ session setup message",
            format!("{} bytes", d.len()),
        ));
    }
    if d[0] != tag {
        return Err(malformed(
            "RMCP+ session setup message",
            "message tag is not ours",
        ));
    }
    if d[1] == 0 && d.len() < 8 {
        return Err(malformed(
            "RMCP+ session setup message",
            format!("{} bytes", d.len()),
        ));
    }
    Ok(d)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
