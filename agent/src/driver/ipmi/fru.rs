//! FRU inventory parsing (IPMI Platform Management FRU Information Storage Definition v1.0).
//!
//! ```text
//! common header (8 bytes)  version=01h internal chassis board product multirecord pad checksum
//!                          offsets in 8-byte units from the start of the FRU, 0 = absent
//! info area                version=01h length(8-byte units) [fixed fields] type/length fields…
//!                          C1h (end of fields) pad… checksum (area sums to 0)
//!   chassis                type, part number, serial, custom…
//!   board                  language, mfg date (3 bytes LE, minutes since 1996-01-01 00:00),
//!                          manufacturer, product name, serial, part number, FRU file id, custom…
//!   product                language, manufacturer, name, part/model, version, serial, asset tag,
//!                          FRU file id, custom…
//! type/length byte         7:6 type (00 binary, 01 BCD plus, 10 6-bit packed ASCII, 11 8-bit text)
//!                          5:0 length in bytes
//! multirecord header       type, 7=end-of-list|3:0 version, length, record checksum, header checksum
//! ```
//! Pure functions over a byte image; every offset is checked against the image, so a short or
//! corrupt FRU yields what could be read and a list of problems, never a panic.

use std::time::{Duration, SystemTime};

/// The identity fields of one FRU device.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Fru {
    pub(crate) chassis_type: Option<u8>,
    pub(crate) chassis_part: String,
    pub(crate) chassis_serial: String,
    pub(crate) board_mfg_date: Option<SystemTime>,
    pub(crate) board_manufacturer: String,
    pub(crate) board_product: String,
    pub(crate) board_serial: String,
    pub(crate) board_part: String,
    pub(crate) product_manufacturer: String,
    pub(crate) product_name: String,
    pub(crate) product_part: String,
    pub(crate) product_version: String,
    pub(crate) product_serial: String,
    pub(crate) asset_tag: String,
    /// Multi-record types found (e.g. 00h power supply information), in order.
    pub(crate) multirecord_types: Vec<u8>,
    /// What could not be parsed (bad checksums, truncated areas).
    pub(crate) problems: Vec<String>,
}

fn zero_sum(b: &[u8]) -> bool {
    b.iter().fold(0u8, |a, x| a.wrapping_add(*x)) == 0
}

/// Decodes one type/length-encoded field's bytes into text.
pub(crate) fn decode_field(tl: u8, data: &[u8]) -> String {
    let s = match tl >> 6 {
        0b00 => {
            // Binary: show printable ASCII as is, otherwise hex.
            if data.iter().all(|b| b.is_ascii_graphic() || *b == b' ') {
                String::from_utf8_lossy(data).into_owned()
            } else {
                data.iter().map(|b| format!("{b:02x}")).collect()
            }
        }
        0b01 => data
            .iter()
            .flat_map(|b| [b >> 4, b & 0x0F])
            .map(|n| match n {
                0..=9 => char::from(b'0' + n),
                0xA => ' ',
                0xB => '-',
                0xC => '.',
                _ => '?',
            })
            .collect(),
        0b10 => {
            // 6-bit packed ASCII: four characters per three bytes, least significant bits first.
            let mut out = String::new();
            let mut acc: u32 = 0;
            let mut bits = 0;
            for b in data {
                acc |= u32::from(*b) << bits;
                bits += 8;
                while bits >= 6 {
                    out.push(char::from(u8::try_from(acc & 0x3F).unwrap_or(0) + 0x20));
                    acc >>= 6;
                    bits -= 6;
                }
            }
            out
        }
        // 8-bit text: ASCII, Latin-1 for anything above (English language code assumed).
        _ => data.iter().map(|b| char::from(*b)).collect(),
    };
    s.trim_matches(|c: char| c.is_whitespace() || c == '\0')
        .to_owned()
}

/// Reads type/length fields from `area[at..]` until C1h or the area ends; at most `max` fields.
fn fields(area: &[u8], mut at: usize, max: usize) -> Vec<String> {
    let mut out = Vec::new();
    while out.len() < max {
        let Some(&tl) = area.get(at) else { break };
        if tl == 0xC1 {
            break;
        }
        let len = usize::from(tl & 0x3F);
        let Some(data) = area.get(at + 1..at + 1 + len) else {
            break;
        };
        out.push(decode_field(tl, data));
        at += 1 + len;
    }
    out
}

/// Returns the info area starting at `offset` (bytes), checked for version, length, checksum.
fn area<'a>(img: &'a [u8], offset: usize, name: &str, problems: &mut Vec<String>) -> Option<&'a [u8]> {
    let Some(&len) = img.get(offset + 1) else {
        problems.push(format!("{name} area at {offset} exceeds the FRU image"));
        return None;
    };
    let len = usize::from(len) * 8;
    let Some(a) = img.get(offset..offset + len).filter(|a| a.len() >= 3) else {
        problems.push(format!(
            "{name} area at {offset} ({len} bytes) exceeds the FRU image"
        ));
        return None;
    };
    if a[0] & 0x0F != 0x01 {
        problems.push(format!("{name} area version {:#04x}", a[0]));
        return None;
    }
    if !zero_sum(a) {
        // Common in the field; keep the data but say so.
        problems.push(format!("{name} area checksum mismatch"));
    }
    Some(a)
}

/// Parses a FRU image.
pub(crate) fn parse(img: &[u8]) -> Fru {
    let mut f = Fru::default();
    let Some(h) = img.get(..8) else {
        f.problems
            .push(format!("FRU image of {} bytes has no common header", img.len()));
        return f;
    };
    if h[0] & 0x0F != 0x01 || !zero_sum(h) {
        f.problems
            .push("FRU common header invalid (version or checksum)".into());
        return f;
    }
    let off = |i: usize| usize::from(h[i]) * 8;
    if h[2] != 0
        && let Some(a) = area(img, off(2), "chassis", &mut f.problems)
    {
        f.chassis_type = Some(a[2]);
        let v = fields(a, 3, 2);
        let mut it = v.into_iter();
        f.chassis_part = it.next().unwrap_or_default();
        f.chassis_serial = it.next().unwrap_or_default();
    }
    if h[3] != 0
        && let Some(a) = area(img, off(3), "board", &mut f.problems)
    {
        if let Some(d) = a.get(3..6) {
            let minutes = u64::from(d[0]) | u64::from(d[1]) << 8 | u64::from(d[2]) << 16;
            if minutes != 0 {
                // 1996-01-01T00:00:00Z is 820454400 s after the Unix epoch.
                f.board_mfg_date =
                    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(820_454_400 + minutes * 60));
            }
        }
        let mut it = fields(a, 6, 5).into_iter();
        f.board_manufacturer = it.next().unwrap_or_default();
        f.board_product = it.next().unwrap_or_default();
        f.board_serial = it.next().unwrap_or_default();
        f.board_part = it.next().unwrap_or_default();
    }
    if h[4] != 0
        && let Some(a) = area(img, off(4), "product", &mut f.problems)
    {
        let mut it = fields(a, 3, 7).into_iter();
        f.product_manufacturer = it.next().unwrap_or_default();
        f.product_name = it.next().unwrap_or_default();
        f.product_part = it.next().unwrap_or_default();
        f.product_version = it.next().unwrap_or_default();
        f.product_serial = it.next().unwrap_or_default();
        f.asset_tag = it.next().unwrap_or_default();
    }
    if h[5] != 0 {
        let mut at = off(5);
        // At most 64 records: a loop in a corrupt image cannot run away.
        for _ in 0..64 {
            let Some(rh) = img.get(at..at + 5) else {
                f.problems
                    .push("multi-record header exceeds the FRU image".into());
                break;
            };
            if !zero_sum(rh) {
                f.problems
                    .push(format!("multi-record header checksum mismatch at {at}"));
                break;
            }
            f.multirecord_types.push(rh[0]);
            if rh[1] & 0x80 != 0 {
                break;
            }
            at += 5 + usize::from(rh[2]);
        }
    }
    f
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// The same image tests/peers/ipmi/gen_bmc.py serves as FRU 0, built the same way.
    fn area(fixed: &[u8], fields: &[&str]) -> Vec<u8> {
        let mut b = vec![0x01, 0x00];
        b.extend_from_slice(fixed);
        for f in fields {
            b.push(0xC0 | u8::try_from(f.len()).unwrap());
            b.extend_from_slice(f.as_bytes());
        }
        b.push(0xC1);
        while (b.len() + 1) % 8 != 0 {
            b.push(0);
        }
        b[1] = u8::try_from((b.len() + 1) / 8).unwrap();
        let sum = b.iter().fold(0u8, |a, x| a.wrapping_add(*x));
        b.push(0u8.wrapping_sub(sum));
        b
    }

    fn image() -> Vec<u8> {
        // 2024-03-18 14:05 = 14838605 minutes after 1996-01-01.
        let m: u32 = 14_838_605;
        let mb = m.to_le_bytes();
        let areas = [
            area(&[0x17], &["GTCH-1U-PN-01", "GTCH0000001"]),
            area(
                &[0x19, mb[0], mb[1], mb[2]],
                &["Groundtruth Labs", "GT-MB1000", "GTBRD000001", "GTBRD-PN-01", ""],
            ),
            area(
                &[0x19],
                &[
                    "Groundtruth Labs",
                    "GT-R1000",
                    "GTR1K-PN-01",
                    "A1",
                    "GTPRD000001",
                    "DC1-R07-U12",
                    "",
                ],
            ),
        ];
        let mut h = vec![0x01, 0x00];
        let mut pos = 1u8;
        for a in &areas {
            h.push(pos);
            pos += u8::try_from(a.len() / 8).unwrap();
        }
        h.extend_from_slice(&[0, 0]);
        let sum = h.iter().fold(0u8, |a, x| a.wrapping_add(*x));
        h.push(0u8.wrapping_sub(sum));
        let mut img = h;
        for a in areas {
            img.extend(a);
        }
        img
    }

    #[test]
    fn parses_chassis_board_and_product_areas() {
        let f = parse(&image());
        assert!(f.problems.is_empty(), "{:?}", f.problems);
        assert_eq!(f.chassis_type, Some(0x17));
        assert_eq!(
            (f.chassis_part.as_str(), f.chassis_serial.as_str()),
            ("GTCH-1U-PN-01", "GTCH0000001")
        );
        assert_eq!(f.board_serial, "GTBRD000001");
        assert_eq!(f.board_product, "GT-MB1000");
        assert_eq!(f.product_serial, "GTPRD000001");
        assert_eq!(f.product_name, "GT-R1000");
        assert_eq!(f.product_part, "GTR1K-PN-01");
        assert_eq!(f.asset_tag, "DC1-R07-U12");
        let secs = f
            .board_mfg_date
            .unwrap()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        assert_eq!(secs, 1_710_770_700, "2024-03-18T14:05:00Z");
    }

    #[test]
    fn decodes_six_bit_ascii_bcd_plus_and_binary() {
        // "IPMI" in 6-bit packed ASCII (FRU spec example): 29 DC A6.
        assert_eq!(decode_field(0x83, &[0x29, 0xDC, 0xA6]), "IPMI");
        assert_eq!(decode_field(0x42, &[0x12, 0xB9]), "12-9");
        assert_eq!(decode_field(0x43, &[0x01, 0xAC, 0x5F]), "01 .5?");
        assert_eq!(decode_field(0x02, &[0xDE, 0xAD]), "dead");
        assert_eq!(decode_field(0xC3, b"ab "), "ab");
    }

    #[test]
    fn bad_checksums_and_truncation_are_reported_not_fatal() {
        let mut img = image();
        let last = img.len() - 1;
        img[last] ^= 0xFF; // product area checksum
        let f = parse(&img);
        assert_eq!(f.product_serial, "GTPRD000001");
        assert_eq!(f.problems, vec!["product area checksum mismatch".to_string()]);
        let f = parse(&image()[..40]);
        assert!(
            f.problems.iter().any(|p| p.contains("exceeds")),
            "{:?}",
            f.problems
        );
        assert_eq!(f.chassis_serial, "GTCH0000001");
        assert!(!parse(&[1, 2, 3]).problems.is_empty());
    }

    #[test]
    fn multirecord_list_is_walked_and_bounded() {
        let mut img = vec![0x01, 0, 0, 0, 0, 1, 0, 0];
        img[7] = 0u8.wrapping_sub(img.iter().fold(0u8, |a, x| a.wrapping_add(*x)));
        for (t, last) in [(0x00u8, false), (0x01, true)] {
            let mut rh = vec![t, if last { 0x82 } else { 0x02 }, 2, 0, 0];
            rh[4] = 0u8.wrapping_sub(rh.iter().fold(0u8, |a, x| a.wrapping_add(*x)));
            img.extend(rh);
            img.extend([0xAA, 0x56]);
        }
        assert_eq!(parse(&img).multirecord_types, vec![0x00, 0x01]);
    }

    #[test]
    fn parse_never_panics_on_arbitrary_images() {
        let mut x: u32 = 0x1234_5678;
        let base = image();
        for round in 0..5000 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            let mut img = base.clone();
            let n = usize::try_from(x).unwrap() % img.len();
            img[n] = u8::try_from(x >> 24).unwrap();
            img.truncate(usize::try_from(x >> 8).unwrap() % (img.len() + 1));
            if round % 2 == 0 {
                // keep the header valid so the areas get parsed
                if img.len() >= 8 {
                    img[..8].copy_from_slice(&base[..8]);
                }
            }
            let _ = parse(&img);
        }
    }
}
