//! A small in-process RMCP+ BMC for what ipmi_sim cannot show: cipher suite 17 end to end,
//! DCMI power, FRU locators (a PSU FRU with 6-bit packed text), a BMC that limits Read FRU Data
//! to 16 bytes and refuses whole-record Get SDR, the SDR cache, and misbehaviour after the
//! session is up (foreign session ids, bad integrity codes).
//!
//! Written from the IPMI v2.0 spec for these tests, independently of the agent's code (it shares
//! no code with `agent/src/driver/ipmi`), on 127.0.0.1:0 only.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use aes::cipher::{BlockModeDecrypt, BlockModeEncrypt, KeyIvInit};
use hmac::{Hmac, KeyInit, Mac};
use tokio::net::UdpSocket;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Misbehave {
    None,
    /// After the session is up, answers carry another session id.
    ForeignSessionId,
    /// After the session is up, answers carry a wrong integrity code.
    BadIntegrity,
    /// The first Get SDR answers "reservation cancelled" (C5h), as when another client reserves.
    CancelReservationOnce,
    /// The first request inside the session gets no answer (lost datagram): the client must retry.
    DropFirstRequest,
    /// Never answers Get SDR Repository Info (a BMC that hangs half-way through a poll).
    SilentOnSdrInfo,
}

#[derive(Debug, Default)]
pub struct Stats {
    /// Requests seen per (netfn, cmd) inside sessions.
    pub commands: HashMap<(u8, u8), u32>,
    pub sessions_opened: u32,
    pub sessions_closed: u32,
}

pub struct FakeBmc {
    pub addr: String,
    pub stats: Arc<Mutex<Stats>>,
}

const USER: &[u8] = b"root";
pub const PASSWORD: &str = "calvin-17";
pub const USER_NAME: &str = "root";

fn hmac(sha256: bool, key: &[u8], data: &[&[u8]]) -> Vec<u8> {
    if sha256 {
        let mut m = <Hmac<sha2::Sha256> as KeyInit>::new_from_slice(key).unwrap();
        data.iter().for_each(|d| m.update(d));
        m.finalize().into_bytes().to_vec()
    } else {
        let mut m = <Hmac<sha1::Sha1> as KeyInit>::new_from_slice(key).unwrap();
        data.iter().for_each(|d| m.update(d));
        m.finalize().into_bytes().to_vec()
    }
}

fn cks(b: &[u8]) -> u8 {
    0u8.wrapping_sub(b.iter().fold(0u8, |a, x| a.wrapping_add(*x)))
}

/// 8-bit ASCII type/length field.
fn text(s: &str) -> Vec<u8> {
    let mut v = vec![0xC0 | u8::try_from(s.len()).unwrap()];
    v.extend_from_slice(s.as_bytes());
    v
}

/// 6-bit packed ASCII type/length field (length must be a multiple of 4 characters here).
fn sixbit(s: &str) -> Vec<u8> {
    assert_eq!(s.len() % 4, 0);
    let mut out = Vec::new();
    for c in s.as_bytes().chunks(4) {
        let v: u32 = c
            .iter()
            .enumerate()
            .map(|(i, ch)| u32::from(ch - 0x20) << (6 * i))
            .sum();
        out.extend_from_slice(&v.to_le_bytes()[..3]);
    }
    let mut f = vec![0x80 | u8::try_from(out.len()).unwrap()];
    f.extend(out);
    f
}

fn area(fixed: &[u8], fields: &[Vec<u8>]) -> Vec<u8> {
    let mut b = vec![0x01, 0x00];
    b.extend_from_slice(fixed);
    for f in fields {
        b.extend_from_slice(f);
    }
    b.push(0xC1);
    while (b.len() + 1) % 8 != 0 {
        b.push(0);
    }
    b[1] = u8::try_from((b.len() + 1) / 8).unwrap();
    b.push(cks(&b));
    b
}

/// FRU image with a board area (index 3 of the header) and/or product area (index 4).
fn fru(board: Option<Vec<u8>>, product: Option<Vec<u8>>) -> Vec<u8> {
    let mut h = vec![0x01, 0, 0, 0, 0, 0, 0];
    let mut body = Vec::new();
    for (slot, a) in [(3usize, board), (4, product)] {
        if let Some(a) = a {
            h[slot] = u8::try_from(1 + body.len() / 8).unwrap();
            body.extend(a);
        }
    }
    h.push(cks(&h));
    h.extend(body);
    h
}

fn fru0() -> Vec<u8> {
    // Product area: no manufacturer (vendor must then come from the IANA id 674 = Dell).
    fru(
        None,
        Some(area(
            &[0x19],
            &[
                text(""),
                text("PowerEdge R650"),
                text("0X1Y2Z"),
                text("A00"),
                text("7ZQ9XK3"),
                text("RACK7-U20"),
            ],
        )),
    )
}

fn fru1() -> Vec<u8> {
    fru(
        Some(area(
            &[0x19, 0, 0, 0],
            &[
                text("Delta"),
                text("PWR SPLY 1400W"),
                sixbit("PSU00042"),
                text("0CMPWX"),
            ],
        )),
        None,
    )
}

fn sdrs() -> Vec<Vec<u8>> {
    // Record 1: full threshold sensor, temperature, 2's complement, M=1 → raw FBh = -5 °C.
    let mut body = vec![
        0x20, 0x00, 0x01, 0x37, 0x01, 0x7F, 0x44, 0x01, 0x01, 0, 0, 0, 0, 0, 0, 0x80, 0x01, 0x00, 0x00, 0x01,
        0x00, 0x00, 0x00, 0x00, 0x00, 0, 0, 0, 0, 0x7F, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ];
    body.extend(text("Inlet Temp"));
    let mut r1 = vec![0x01, 0x00, 0x51, 0x01, u8::try_from(body.len()).unwrap()];
    r1.extend(body);
    // Record 2: FRU device locator, logical FRU 1 on the BMC, entity power supply 1.
    let mut body = vec![0x20, 0x01, 0x80, 0x00, 0x00, 0x10, 0x00, 0x0A, 0x01, 0x00];
    body.extend(text("PSU1"));
    let mut r2 = vec![0x02, 0x00, 0x51, 0x11, u8::try_from(body.len()).unwrap()];
    r2.extend(body);
    vec![r1, r2]
}

struct Session {
    sha256: bool,
    console_sid: u32,
    bmc_sid: u32,
    rm: Vec<u8>,
    rc: [u8; 16],
    role: u8,
    user_ok: bool,
    k1: Vec<u8>,
    k2: [u8; 16],
    out_seq: u32,
    up: bool,
}

const GUID: [u8; 16] = [0x11; 16];

impl FakeBmc {
    /// Starts a BMC offering only `suite` (3 or 17).
    pub async fn start(suite: u8, misbehave: Misbehave) -> Self {
        let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = sock.local_addr().unwrap().to_string();
        let stats = Arc::new(Mutex::new(Stats::default()));
        let st = stats.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            let mut session: Option<Session> = None;
            let mut next_sid = 0x0100u32;
            let mut once = true;
            while let Ok((n, from)) = sock.recv_from(&mut buf).await {
                let req = buf[..n].to_vec();
                let replies = handle(
                    &req,
                    suite,
                    misbehave,
                    &mut session,
                    &mut next_sid,
                    &mut once,
                    &st,
                );
                for r in replies {
                    let _ = sock.send_to(&r, from).await;
                }
            }
        });
        Self { addr, stats }
    }
}

fn v2(ptype: u8, sid: u32, seq: u32, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0x06, 0x00, 0xFF, 0x07, 0x06, ptype];
    p.extend_from_slice(&sid.to_le_bytes());
    p.extend_from_slice(&seq.to_le_bytes());
    p.extend_from_slice(&u16::try_from(payload.len()).unwrap().to_le_bytes());
    p.extend_from_slice(payload);
    p
}

#[allow(clippy::too_many_lines)]
fn handle(
    req: &[u8],
    suite: u8,
    misbehave: Misbehave,
    session: &mut Option<Session>,
    next_sid: &mut u32,
    once: &mut bool,
    stats: &Mutex<Stats>,
) -> Vec<Vec<u8>> {
    if req.len() < 16 || req[..4] != [0x06, 0x00, 0xFF, 0x07] {
        return vec![];
    }
    if req[4] == 0x00 {
        // IPMI 1.5: Get Channel Authentication Capabilities.
        let rq_seq = req[18];
        let mut m = vec![0x81, 0x07 << 2];
        m.push(cks(&m));
        m.extend_from_slice(&[
            0x20,
            rq_seq,
            0x38,
            0x00,
            0x01,
            0x80 | 0x04,
            0x00,
            0x02,
            0,
            0,
            0,
            0,
        ]);
        m.push(cks(&m[3..]));
        let mut p = vec![
            0x06,
            0x00,
            0xFF,
            0x07,
            0x00,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            u8::try_from(m.len()).unwrap(),
        ];
        p.extend(m);
        return vec![p];
    }
    let ptype = req[5] & 0x3F;
    let len = usize::from(u16::from_le_bytes([req[14], req[15]]));
    let Some(p) = req.get(16..16 + len) else {
        return vec![];
    };
    let sha256 = suite == 17;
    let (auth, integ) = if sha256 { (0x03, 0x04) } else { (0x01, 0x01) };
    let mut kuid = [0u8; 20];
    kuid[..PASSWORD.len()].copy_from_slice(PASSWORD.as_bytes());
    match ptype {
        0x10 => {
            let console_sid = u32::from_le_bytes(p[4..8].try_into().unwrap());
            let ok = p[12] == auth && p[20] == integ && p[28] == 0x01;
            let mut body = vec![p[0], if ok { 0x00 } else { 0x11 }, 0x04, 0x00];
            body.extend_from_slice(&console_sid.to_le_bytes());
            *next_sid += 1;
            body.extend_from_slice(&next_sid.to_le_bytes());
            for (t, a) in [(0u8, auth), (1, integ), (2, 0x01)] {
                body.extend_from_slice(&[t, 0, 0, 8, a, 0, 0, 0]);
            }
            if ok {
                *session = Some(Session {
                    sha256,
                    console_sid,
                    bmc_sid: *next_sid,
                    rm: vec![],
                    rc: [0x5A; 16],
                    role: 0,
                    user_ok: false,
                    k1: vec![],
                    k2: [0; 16],
                    out_seq: 0,
                    up: false,
                });
            }
            vec![v2(0x11, 0, 0, &body)]
        }
        0x12 => {
            let Some(s) = session.as_mut() else { return vec![] };
            s.rm = p[8..24].to_vec();
            s.role = p[24];
            let ulen = usize::from(p[27]);
            let user = &p[28..28 + ulen];
            s.user_ok = user == USER;
            let mut body = vec![p[0], if s.user_ok { 0x00 } else { 0x0D }, 0, 0];
            body.extend_from_slice(&s.console_sid.to_le_bytes());
            body.extend_from_slice(&s.rc);
            body.extend_from_slice(&GUID);
            body.extend(hmac(
                s.sha256,
                &kuid,
                &[
                    &s.console_sid.to_le_bytes(),
                    &s.bmc_sid.to_le_bytes(),
                    &s.rm,
                    &s.rc,
                    &GUID,
                    &[s.role],
                    &[p[27]],
                    user,
                ],
            ));
            vec![v2(0x13, 0, 0, &body)]
        }
        0x14 => {
            let Some(s) = session.as_mut() else { return vec![] };
            let ulen = [u8::try_from(USER.len()).unwrap()];
            let want = hmac(
                s.sha256,
                &kuid,
                &[&s.rc, &s.console_sid.to_le_bytes(), &[s.role], &ulen, USER],
            );
            let mut body = vec![p[0], 0x00, 0, 0];
            body.extend_from_slice(&s.console_sid.to_le_bytes());
            if p.get(8..) != Some(&want[..]) {
                body[1] = 0x0F;
                return vec![v2(0x15, 0, 0, &body)];
            }
            let sik = hmac(s.sha256, &kuid, &[&s.rm, &s.rc, &[s.role], &ulen, USER]);
            s.k1 = hmac(s.sha256, &sik, &[&[1u8; 20]]);
            s.k2.copy_from_slice(&hmac(s.sha256, &sik, &[&[2u8; 20]])[..16]);
            let icv = hmac(s.sha256, &sik, &[&s.rm, &s.bmc_sid.to_le_bytes(), &GUID]);
            body.extend_from_slice(&icv[..if s.sha256 { 16 } else { 12 }]);
            s.up = true;
            stats.lock().unwrap().sessions_opened += 1;
            vec![v2(0x15, 0, 0, &body)]
        }
        0x00 => {
            let Some(s) = session.as_mut().filter(|s| s.up) else {
                return vec![];
            };
            let icv_len = if s.sha256 { 16 } else { 12 };
            let covered = &req[4..req.len() - icv_len];
            let code = &req[req.len() - icv_len..];
            if hmac(s.sha256, &s.k1, &[covered])[..icv_len] != *code {
                return vec![];
            }
            // decrypt: IV ‖ CBC
            let mut dec = cbc::Decryptor::<aes::Aes128>::new(&s.k2.into(), p[..16].try_into().unwrap());
            let mut plain = p[16..].to_vec();
            for ch in plain.chunks_exact_mut(16) {
                let mut b = aes::Block::try_from(&*ch).unwrap();
                dec.decrypt_block(&mut b);
                ch.copy_from_slice(&b);
            }
            let pad = usize::from(*plain.last().unwrap());
            plain.truncate(plain.len() - pad - 1);
            let (netfn, rq_seq, cmd) = (plain[1] >> 2, plain[4], plain[5]);
            let data = &plain[6..plain.len() - 1];
            *stats.lock().unwrap().commands.entry((netfn, cmd)).or_default() += 1;
            if misbehave == Misbehave::DropFirstRequest && std::mem::take(once) {
                return vec![];
            }
            if misbehave == Misbehave::SilentOnSdrInfo && (netfn, cmd) == (0x0A, 0x20) {
                return vec![];
            }
            let (cc, out) = if misbehave == Misbehave::CancelReservationOnce
                && (netfn, cmd) == (0x0A, 0x23)
                && std::mem::take(once)
            {
                (0xC5, vec![])
            } else {
                command(netfn, cmd, data)
            };
            if (netfn, cmd) == (0x06, 0x3C) {
                stats.lock().unwrap().sessions_closed += 1;
            }
            let mut m = vec![0x81, (netfn + 1) << 2];
            m.push(cks(&m));
            m.extend_from_slice(&[0x20, rq_seq, cmd, cc]);
            m.extend(out);
            m.push(cks(&m[3..]));
            let padn = (16 - (m.len() + 1) % 16) % 16;
            m.extend((1..=padn).map(|i| u8::try_from(i).unwrap()));
            m.push(u8::try_from(padn).unwrap());
            let iv = [0x3C; 16];
            let mut enc = cbc::Encryptor::<aes::Aes128>::new(&s.k2.into(), &iv.into());
            for ch in m.chunks_exact_mut(16) {
                let mut b = aes::Block::try_from(&*ch).unwrap();
                enc.encrypt_block(&mut b);
                ch.copy_from_slice(&b);
            }
            let mut payload = iv.to_vec();
            payload.extend(m);
            s.out_seq += 1;
            let sid = if misbehave == Misbehave::ForeignSessionId {
                s.console_sid ^ 0xFFFF
            } else {
                s.console_sid
            };
            let mut pkt = v2(0xC0, sid, s.out_seq, &payload);
            let pad = (4 - (pkt.len() - 4 + 2) % 4) % 4;
            pkt.extend(std::iter::repeat_n(0xFF, pad));
            pkt.extend_from_slice(&[u8::try_from(pad).unwrap(), 0x07]);
            let mut mac = hmac(s.sha256, &s.k1, &[&pkt[4..]]);
            mac.truncate(icv_len);
            if misbehave == Misbehave::BadIntegrity {
                mac[0] ^= 1;
            }
            pkt.extend(mac);
            vec![pkt]
        }
        _ => vec![],
    }
}

fn command(netfn: u8, cmd: u8, d: &[u8]) -> (u8, Vec<u8>) {
    match (netfn, cmd) {
        (0x06, 0x01) => (
            0,
            vec![0x20, 0x81, 0x02, 0x45, 0x02, 0xBF, 0xA2, 0x02, 0x00, 0x00, 0x01],
        ),
        (0x06, 0x3B) => (0, vec![d[0] & 0x0F]),
        (0x06, 0x37) => (0, GUID.to_vec()),
        (0x06, 0x3C) => (0, vec![]),
        (0x00, 0x01) => (0, vec![0x00, 0x00, 0x00]),
        (0x0A, 0x10) => match d[0] {
            0 => (0, vec![u8::try_from(fru0().len()).unwrap(), 0, 0]),
            1 => (0, vec![u8::try_from(fru1().len()).unwrap(), 0, 0]),
            _ => (0xCB, vec![]),
        },
        (0x0A, 0x11) => {
            let img = if d[0] == 0 { fru0() } else { fru1() };
            let (off, n) = (usize::from(u16::from_le_bytes([d[1], d[2]])), usize::from(d[3]));
            if n > 16 {
                return (0xCA, vec![]); // this BMC's buffer is small
            }
            let part = &img[off.min(img.len())..(off + n).min(img.len())];
            let mut v = vec![u8::try_from(part.len()).unwrap()];
            v.extend_from_slice(part);
            (0, v)
        }
        (0x0A, 0x20) => (0, vec![0x51, 2, 0, 0xFF, 0xFF, 1, 0, 0, 0, 2, 0, 0, 0, 0x02]),
        (0x0A, 0x22) => (0, vec![0x07, 0x00]),
        (0x0A, 0x23) => {
            let recs = sdrs();
            let id = u16::from_le_bytes([d[2], d[3]]);
            let idx = if id == 0 { 0 } else { usize::from(id) - 1 };
            let Some(rec) = recs.get(idx) else {
                return (0xCB, vec![]);
            };
            let (off, n) = (usize::from(d[4]), usize::from(d[5]));
            if n == 0xFF {
                return (0xCA, vec![]); // no whole-record reads here
            }
            let next: u16 = if idx + 1 < recs.len() {
                u16::try_from(idx + 2).unwrap()
            } else {
                0xFFFF
            };
            let mut v = next.to_le_bytes().to_vec();
            v.extend_from_slice(&rec[off.min(rec.len())..(off + n).min(rec.len())]);
            (0, v)
        }
        (0x04, 0x2D) if d[0] == 1 => (0, vec![0xFB, 0x40, 0x00]),
        (0x0C, 0x02) => match d[1] {
            3 => (0, vec![0x11, 10, 1, 2, 3]),
            5 => (0, vec![0x11, 0xF4, 0x02, 0x70, 0xAA, 0xBB, 0xCC]),
            13 => (0, vec![0x11, 0, 0, 0, 0, 0, 0]),
            _ => (0x80, vec![]),
        },
        (0x2C, 0x02) => (
            0,
            vec![
                0xDC, 0x2C, 0x01, 0x10, 0x00, 0x90, 0x01, 0x20, 0x01, 0, 0, 0, 0, 0xE8, 0x03, 0, 0, 0x40,
            ],
        ),
        _ => (0xC1, vec![]),
    }
}
