//! RMCP / IPMI-over-LAN codec: bytes ↔ frames, pure functions, no I/O, no crypto.
//!
//! Wire format (IPMI v2.0 rev 1.1 §13.6, §13.8, table 13-8):
//!
//! ```text
//! RMCP header     version=06h  reserved=00h  seq=FFh  class=07h (IPMI)
//! IPMI 1.5 session (before any session: Get Channel Authentication Capabilities; and 1.5 sessions)
//!                 auth_type  seq:u32le  session_id:u32le  [auth_code:16 unless auth_type=00h]
//!                 msg_len:u8  message
//! IPMI 2.0 session (RMCP+)
//!                 auth_type=06h  payload_type:u8 (bit7 encrypted, bit6 authenticated, 5:0 type)
//!                 session_id:u32le  seq:u32le  payload_len:u16le  payload
//!                 [if authenticated: pad FFh… so that auth_type..next_header is a multiple of 4,
//!                  pad_len:u8  next_header=07h  auth_code (12 or 16 bytes)]
//! IPMI LAN message (§13.8)
//!   request       rs_addr=20h  netfn<<2|lun  chk1  rq_addr=81h  rq_seq<<2|lun  cmd  data…  chk2
//!   response      rq_addr      netfn<<2|lun  chk1  rs_addr      rq_seq<<2|lun  cmd  cc  data…  chk2
//! ```
//!
//! Every length is checked; a malformed packet is a [`DriverError::Malformed`], never a panic.

use crate::driver::DriverError;

pub(crate) const RMCP_HEADER: [u8; 4] = [0x06, 0x00, 0xFF, 0x07];
/// Authentication type byte that marks an IPMI 2.0 (RMCP+) session header.
pub(crate) const AUTH_TYPE_RMCP_PLUS: u8 = 0x06;
/// Responder (BMC) and requester (remote console software ID 81h) addresses (§13.8).
pub(crate) const BMC_ADDR: u8 = 0x20;
pub(crate) const CONSOLE_ADDR: u8 = 0x81;
/// Largest UDP datagram accepted; RMCP+ packets are far smaller (max payload ~ 1 KiB).
pub(crate) const MAX_PACKET: usize = 2048;

/// RMCP+ payload types (§13.27.3).
pub(crate) mod payload {
    pub(crate) const IPMI: u8 = 0x00;
    pub(crate) const OPEN_SESSION_REQUEST: u8 = 0x10;
    pub(crate) const OPEN_SESSION_RESPONSE: u8 = 0x11;
    pub(crate) const RAKP1: u8 = 0x12;
    pub(crate) const RAKP2: u8 = 0x13;
    pub(crate) const RAKP3: u8 = 0x14;
    pub(crate) const RAKP4: u8 = 0x15;
}

pub(crate) fn malformed(what: &str, detail: impl Into<String>) -> DriverError {
    DriverError::Malformed {
        what: what.to_owned(),
        detail: detail.into(),
    }
}

/// Two's-complement checksum: the byte that makes the covered bytes sum to 0 (mod 256).
pub(crate) fn checksum(bytes: &[u8]) -> u8 {
    0u8.wrapping_sub(bytes.iter().fold(0u8, |a, b| a.wrapping_add(*b)))
}

pub(crate) fn u16le(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

pub(crate) fn u32le(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at + 4)?;
    Some(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

/// A decoded RMCP packet carrying an IPMI session, borrowed from the datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Packet<'a> {
    /// IPMI 1.5 session wrapper (auth type 00h none, 01h MD2, 02h MD5, 04h straight password).
    V15 {
        auth_type: u8,
        session_id: u32,
        sequence: u32,
        /// 16 bytes, or empty for auth type none.
        auth_code: &'a [u8],
        message: &'a [u8],
    },
    /// IPMI 2.0 / RMCP+ session wrapper.
    V2(V2Packet<'a>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct V2Packet<'a> {
    pub(crate) payload_type: u8,
    pub(crate) encrypted: bool,
    pub(crate) authenticated: bool,
    pub(crate) session_id: u32,
    pub(crate) sequence: u32,
    pub(crate) payload: &'a [u8],
    /// Bytes covered by the integrity algorithm: auth type through next header (§13.28.4).
    pub(crate) covered: &'a [u8],
    /// The AuthCode field (empty when not authenticated).
    pub(crate) auth_code: &'a [u8],
}

/// Decodes one datagram. `mac_len` is the AuthCode length of the session's integrity
/// algorithm (12 for HMAC-SHA1-96, 16 for HMAC-SHA256-128), used only when the packet says
/// it is authenticated.
pub(crate) fn decode_packet(buf: &[u8], mac_len: usize) -> Result<Packet<'_>, DriverError> {
    const W: &str = "RMCP packet";
    if buf.len() < 4 {
        return Err(malformed(
            W,
            format!("{} bytes, shorter than the RMCP header", buf.len()),
        ));
    }
    if buf[0] != RMCP_HEADER[0] {
        return Err(malformed(
            W,
            format!("RMCP version {:#04x}, expected 0x06", buf[0]),
        ));
    }
    if buf[3] & 0x1F != 0x07 {
        return Err(malformed(W, format!("RMCP class {:#04x} is not IPMI", buf[3])));
    }
    let s = &buf[4..];
    let Some(&auth_type) = s.first() else {
        return Err(malformed(W, "no session header"));
    };
    if auth_type == AUTH_TYPE_RMCP_PLUS {
        return decode_v2(s, mac_len).map(Packet::V2);
    }
    if !matches!(auth_type, 0x00 | 0x01 | 0x02 | 0x04 | 0x05) {
        return Err(malformed(
            W,
            format!("unknown authentication type {auth_type:#04x}"),
        ));
    }
    // auth_type(1) seq(4) session_id(4) [auth_code(16)] len(1) message
    let code_len = if auth_type == 0 { 0 } else { 16 };
    let (Some(sequence), Some(session_id), Some(auth_code), Some(&len)) = (
        u32le(s, 1),
        u32le(s, 5),
        s.get(9..9 + code_len),
        s.get(9 + code_len),
    ) else {
        return Err(malformed(W, "IPMI 1.5 session header truncated"));
    };
    let at = 10 + code_len;
    let message = s
        .get(at..at + usize::from(len))
        .ok_or_else(|| malformed(W, format!("IPMI 1.5 message length {len} exceeds the packet")))?;
    Ok(Packet::V15 {
        auth_type,
        session_id,
        sequence,
        auth_code,
        message,
    })
}

fn decode_v2(s: &[u8], mac_len: usize) -> Result<V2Packet<'_>, DriverError> {
    const W: &str = "RMCP+ packet";
    let (Some(&pt), Some(session_id), Some(sequence), Some(len)) =
        (s.get(1), u32le(s, 2), u32le(s, 6), u16le(s, 10))
    else {
        return Err(malformed(W, "session header truncated"));
    };
    let len = usize::from(len);
    let payload = s.get(12..12 + len).ok_or_else(|| {
        malformed(
            W,
            format!("payload length {len} exceeds the packet ({} bytes)", s.len()),
        )
    })?;
    let authenticated = pt & 0x40 != 0;
    let (covered, auth_code): (&[u8], &[u8]) = if authenticated {
        // trailer: pad (0..3 × FFh), pad_len, next_header, auth_code
        if s.len() < 12 + len + 2 + mac_len {
            return Err(malformed(W, "session trailer truncated"));
        }
        let end = s.len() - mac_len; // exclusive end of next_header
        let pad_len = usize::from(s[end - 2]);
        if s[end - 1] != 0x07 {
            return Err(malformed(
                W,
                format!("next header {:#04x}, expected 0x07", s[end - 1]),
            ));
        }
        if 12 + len + pad_len + 2 != end {
            return Err(malformed(
                W,
                format!("integrity pad length {pad_len} does not match the packet size"),
            ));
        }
        (&s[..end], &s[end..])
    } else {
        (&s[..12 + len], &[])
    };
    Ok(V2Packet {
        payload_type: pt & 0x3F,
        encrypted: pt & 0x80 != 0,
        authenticated,
        session_id,
        sequence,
        payload,
        covered,
        auth_code,
    })
}

/// Encodes an unauthenticated IPMI 1.5 packet (session id 0, sequence 0): Get Channel
/// Authentication Capabilities and Get Session Challenge, before a session exists.
pub(crate) fn encode_v15_unauthenticated(message: &[u8]) -> Vec<u8> {
    encode_v15(0x00, 0, 0, &[], message)
}

/// Encodes an IPMI 1.5 packet; `auth_code` (16 bytes) is written unless `auth_type` is none.
pub(crate) fn encode_v15(
    auth_type: u8,
    sequence: u32,
    session_id: u32,
    auth_code: &[u8],
    message: &[u8],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(30 + message.len());
    out.extend_from_slice(&RMCP_HEADER);
    out.push(auth_type);
    out.extend_from_slice(&sequence.to_le_bytes());
    out.extend_from_slice(&session_id.to_le_bytes());
    if auth_type != 0 {
        let mut code = [0u8; 16];
        let n = auth_code.len().min(16);
        code[..n].copy_from_slice(&auth_code[..n]);
        out.extend_from_slice(&code);
    }
    // Messages are built by this driver and stay far below 256 bytes.
    out.push(u8::try_from(message.len()).unwrap_or(u8::MAX));
    out.extend_from_slice(message);
    out
}

/// Computes the AuthCode over the bytes it covers.
pub(crate) type MacFn<'a> = &'a dyn Fn(&[u8]) -> Vec<u8>;

/// Header fields of an outbound RMCP+ packet.
#[derive(Debug, Clone, Copy)]
pub(crate) struct V2Header {
    pub(crate) payload_type: u8,
    pub(crate) encrypted: bool,
    pub(crate) session_id: u32,
    pub(crate) sequence: u32,
}

/// Encodes an RMCP+ packet. With `mac`, the packet is marked authenticated, padded and the
/// closure's output (computed over auth type through next header) is appended as AuthCode.
pub(crate) fn encode_v2(h: &V2Header, payload: &[u8], mac: Option<MacFn<'_>>) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + 12 + payload.len() + 24);
    out.extend_from_slice(&RMCP_HEADER);
    let mut pt = h.payload_type & 0x3F;
    if h.encrypted {
        pt |= 0x80;
    }
    if mac.is_some() {
        pt |= 0x40;
    }
    out.extend_from_slice(&[AUTH_TYPE_RMCP_PLUS, pt]);
    out.extend_from_slice(&h.session_id.to_le_bytes());
    out.extend_from_slice(&h.sequence.to_le_bytes());
    // Payloads are built by this driver and stay far below 64 KiB.
    out.extend_from_slice(&u16::try_from(payload.len()).unwrap_or(u16::MAX).to_le_bytes());
    out.extend_from_slice(payload);
    if let Some(mac) = mac {
        let covered = 12 + payload.len() + 2;
        let pad = (4 - covered % 4) % 4;
        out.extend(std::iter::repeat_n(0xFF, pad));
        out.push(u8::try_from(pad).unwrap_or(0));
        out.push(0x07);
        let code = mac(&out[4..]);
        out.extend_from_slice(&code);
    }
    out
}

/// One IPMI request: network function, command and data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Request<'a> {
    pub(crate) netfn: u8,
    pub(crate) cmd: u8,
    pub(crate) data: &'a [u8],
}

/// Encodes an IPMI LAN request message (§13.8) from the remote console to the BMC, LUN 0.
pub(crate) fn encode_request(rq_seq: u8, r: &Request<'_>) -> Vec<u8> {
    let mut m = Vec::with_capacity(7 + r.data.len());
    m.extend_from_slice(&[BMC_ADDR, r.netfn << 2]);
    m.push(checksum(&m[0..2]));
    m.extend_from_slice(&[CONSOLE_ADDR, (rq_seq & 0x3F) << 2, r.cmd]);
    m.extend_from_slice(r.data);
    m.push(checksum(&m[3..]));
    m
}

/// A decoded IPMI response message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Response {
    /// Response network function (request netfn + 1).
    pub(crate) netfn: u8,
    pub(crate) rq_seq: u8,
    pub(crate) cmd: u8,
    pub(crate) completion_code: u8,
    pub(crate) data: Vec<u8>,
}

/// Decodes an IPMI LAN response message, checking both checksums.
pub(crate) fn decode_response(m: &[u8]) -> Result<Response, DriverError> {
    const W: &str = "IPMI response";
    if m.len() < 8 {
        return Err(malformed(
            W,
            format!("{} bytes, shorter than a response with completion code", m.len()),
        ));
    }
    if checksum(&m[0..2]) != m[2] {
        return Err(malformed(W, "header checksum mismatch"));
    }
    let last = m.len() - 1;
    if checksum(&m[3..last]) != m[last] {
        return Err(malformed(W, "data checksum mismatch"));
    }
    let netfn = m[1] >> 2;
    if netfn & 1 == 0 {
        return Err(malformed(
            W,
            format!("netfn {netfn:#04x} is a request, not a response"),
        ));
    }
    Ok(Response {
        netfn,
        rq_seq: m[4] >> 2,
        cmd: m[5],
        completion_code: m[6],
        data: m[7..last].to_vec(),
    })
}

/// Human text for common completion codes (§5.2, table 5-2).
pub(crate) fn completion_text(cc: u8) -> &'static str {
    match cc {
        0xC0 => "node busy",
        0xC1 => "invalid or unsupported command",
        0xC2 => "command invalid for given LUN",
        0xC3 => "timeout while processing command",
        0xC4 => "out of space",
        0xC5 => "reservation cancelled or invalid reservation ID",
        0xC6 => "request data truncated",
        0xC7 => "request data length invalid",
        0xC8 => "request data field length limit exceeded",
        0xC9 => "parameter out of range",
        0xCA => "cannot return number of requested data bytes",
        0xCB => "requested sensor, data or record not present",
        0xCC => "invalid data field in request",
        0xCD => "command illegal for specified sensor or record type",
        0xCE => "command response could not be provided",
        0xCF => "cannot execute duplicated request",
        0xD0 => "SDR repository in update mode",
        0xD1 => "device in firmware update mode",
        0xD2 => "BMC initialization in progress",
        0xD3 => "destination unavailable",
        0xD4 => "insufficient privilege level",
        0xD5 => "not supported in present state",
        0xD6 => "sub-function disabled or unavailable",
        0xFF => "unspecified error",
        _ => "device-specific error",
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn request_checksums_make_both_halves_sum_to_zero() {
        // Get Device ID (App netfn 06h, cmd 01h), rqSeq 5.
        let m = encode_request(
            5,
            &Request {
                netfn: 0x06,
                cmd: 0x01,
                data: &[],
            },
        );
        assert_eq!(m, vec![0x20, 0x18, 0xC8, 0x81, 0x14, 0x01, 0x6A]);
        assert_eq!(m[..3].iter().fold(0u8, |a, b| a.wrapping_add(*b)), 0);
        assert_eq!(m[3..].iter().fold(0u8, |a, b| a.wrapping_add(*b)), 0);
    }

    #[test]
    fn response_round_trip_and_checksum_errors() {
        let mut m = vec![0x81, 0x1C];
        m.push(checksum(&m));
        m.extend_from_slice(&[0x20, 5 << 2, 0x01, 0x00, 0xAA, 0xBB]);
        m.push(checksum(&m[3..]));
        let r = decode_response(&m).unwrap();
        assert_eq!((r.netfn, r.rq_seq, r.cmd, r.completion_code), (0x07, 5, 0x01, 0));
        assert_eq!(r.data, vec![0xAA, 0xBB]);
        let mut bad = m.clone();
        bad[4] ^= 1;
        assert!(matches!(
            decode_response(&bad),
            Err(DriverError::Malformed { .. })
        ));
        bad = m.clone();
        bad[2] ^= 1;
        assert!(decode_response(&bad).is_err());
        assert!(decode_response(&m[..7]).is_err());
    }

    #[test]
    fn v2_authenticated_packet_pads_to_four_and_round_trips() {
        let h = V2Header {
            payload_type: payload::IPMI,
            encrypted: true,
            session_id: 0x0102_0304,
            sequence: 7,
        };
        for len in 0..9 {
            let payload = vec![0xAB; len];
            let mac = |covered: &[u8]| {
                assert_eq!(covered.len() % 4, 0, "integrity covers a multiple of 4 bytes");
                vec![0x5A; 12]
            };
            let pkt = encode_v2(&h, &payload, Some(&mac));
            let Packet::V2(p) = decode_packet(&pkt, 12).unwrap() else {
                panic!("v2 expected")
            };
            assert!(p.encrypted && p.authenticated);
            assert_eq!((p.session_id, p.sequence, p.payload_type), (0x0102_0304, 7, 0));
            assert_eq!(p.payload, &payload[..]);
            assert_eq!(p.auth_code, &[0x5A; 12]);
            assert_eq!(p.covered, &pkt[4..pkt.len() - 12]);
        }
    }

    #[test]
    fn v15_unauthenticated_round_trip() {
        let pkt = encode_v15_unauthenticated(&[1, 2, 3]);
        assert_eq!(
            decode_packet(&pkt, 12).unwrap(),
            Packet::V15 {
                auth_type: 0,
                session_id: 0,
                sequence: 0,
                auth_code: &[],
                message: &[1, 2, 3]
            }
        );
        let mut long = pkt.clone();
        long[13] = 200;
        assert!(decode_packet(&long, 12).is_err());
        let pkt = encode_v15(0x02, 9, 0x55, &[7; 16], &[4, 5]);
        assert_eq!(
            decode_packet(&pkt, 0).unwrap(),
            Packet::V15 {
                auth_type: 2,
                session_id: 0x55,
                sequence: 9,
                auth_code: &[7; 16],
                message: &[4, 5]
            }
        );
        assert!(decode_packet(&pkt[..pkt.len() - 1], 0).is_err());
    }

    #[test]
    fn decode_never_panics_on_random_and_truncated_buffers() {
        // xorshift: deterministic, no extra dependency.
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let h = V2Header {
            payload_type: payload::RAKP2,
            encrypted: false,
            session_id: 1,
            sequence: 2,
        };
        let valid = [
            encode_v2(&h, &[0u8; 40], None),
            encode_v2(&h, &[1u8; 21], Some(&|_: &[u8]| vec![0; 16])),
            encode_v15_unauthenticated(&encode_request(
                1,
                &Request {
                    netfn: 6,
                    cmd: 0x38,
                    data: &[0x8E, 4],
                },
            )),
            encode_v15(
                0x02,
                3,
                4,
                &[1; 16],
                &encode_request(
                    2,
                    &Request {
                        netfn: 6,
                        cmd: 1,
                        data: &[],
                    },
                ),
            ),
        ];
        for round in 0..20_000u32 {
            let mut buf: Vec<u8> = if round % 2 == 0 {
                let len = usize::try_from(next() % 80).unwrap();
                (0..len).map(|_| u8::try_from(next() & 0xFF).unwrap()).collect()
            } else {
                let base = &valid[usize::try_from(next() % 4).unwrap()];
                let mut b = base[..usize::try_from(next()).unwrap() % (base.len() + 1)].to_vec();
                if !b.is_empty() {
                    let i = usize::try_from(next()).unwrap() % b.len();
                    b[i] = u8::try_from(next() & 0xFF).unwrap();
                }
                b
            };
            if round % 3 == 0 && buf.len() >= 5 {
                buf[..4].copy_from_slice(&RMCP_HEADER);
                buf[4] = AUTH_TYPE_RMCP_PLUS;
            }
            for mac_len in [0, 12, 16] {
                if let Ok(Packet::V2(p)) = decode_packet(&buf, mac_len) {
                    let _ = decode_response(p.payload);
                }
            }
            let _ = decode_response(&buf);
        }
    }
}
