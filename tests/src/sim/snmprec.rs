//! The snmpsim recording format (`.snmprec`): one `OID|TAG|VALUE` line per object, sorted or
//! not. TAG is the BER tag number in decimal (2 INTEGER, 4 OCTET STRING, 5 NULL, 6 OBJECT
//! IDENTIFIER, 64 IpAddress, 65 Counter32, 66 Gauge32, 67 TimeTicks, 68 Opaque, 70 Counter64);
//! a trailing `x` means the value is hex (`4x|001b21a00001`). snmpsim's variation modules
//! (`4:numeric|...`) are accepted with the module ignored. Lines starting with `#` are comments.

use std::time::Instant;

use async_snmp::{Oid, Value};
use bytes::Bytes;

/// One object of a recording.
#[derive(Debug, Clone)]
pub struct Object {
    pub oid: Vec<u32>,
    pub value: Value,
}

/// A parsed recording, sorted by OID, with the instant counters started growing.
#[derive(Debug, Clone)]
pub struct Recording {
    objects: Vec<Object>,
    started: Instant,
}

fn parse_oid(s: &str) -> Option<Vec<u32>> {
    s.trim()
        .trim_start_matches('.')
        .split('.')
        .map(|a| a.parse().ok())
        .collect()
}

fn hex(s: &str) -> Option<Vec<u8>> {
    let s = s.trim();
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

impl Recording {
    /// Parses a recording; errors name the line.
    ///
    /// # Errors
    /// A line that is not `OID|TAG|VALUE` with a known tag and a value of that type.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut objects = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim_end_matches('\r');
            if line.trim().is_empty() || line.starts_with('#') {
                continue;
            }
            let err = |what: &str| format!("line {}: {what}: {line:?}", n + 1);
            let mut parts = line.splitn(3, '|');
            let (Some(oid), Some(tag), Some(val)) = (parts.next(), parts.next(), parts.next()) else {
                return Err(err("not OID|TAG|VALUE"));
            };
            let oid = parse_oid(oid)
                .filter(|o| o.len() >= 2)
                .ok_or_else(|| err("bad OID"))?;
            let tag = tag.split(':').next().unwrap_or_default();
            let (tag, is_hex) = tag.strip_suffix('x').map_or((tag, false), |t| (t, true));
            let bytes = || -> Result<Bytes, String> {
                if is_hex {
                    hex(val).map(Bytes::from).ok_or_else(|| err("bad hex"))
                } else {
                    Ok(Bytes::copy_from_slice(val.as_bytes()))
                }
            };
            let num = |e: &str| err(e);
            let value = match tag {
                "2" => Value::Integer(val.trim().parse().map_err(|_| num("bad INTEGER"))?),
                "4" => Value::OctetString(bytes()?),
                "5" => Value::Null,
                "6" => Value::ObjectIdentifier(Oid::new(parse_oid(val).ok_or_else(|| err("bad OID value"))?)),
                "64" => {
                    let b: Vec<u8> = if is_hex {
                        hex(val).ok_or_else(|| err("bad hex"))?
                    } else {
                        let ip: std::net::Ipv4Addr = val.trim().parse().map_err(|_| err("bad IpAddress"))?;
                        ip.octets().to_vec()
                    };
                    Value::IpAddress(b.try_into().map_err(|_| err("IpAddress is not 4 octets"))?)
                }
                "65" => Value::Counter32(val.trim().parse().map_err(|_| num("bad Counter32"))?),
                "66" => Value::Gauge32(val.trim().parse().map_err(|_| num("bad Gauge32"))?),
                "67" => Value::TimeTicks(val.trim().parse().map_err(|_| num("bad TimeTicks"))?),
                "68" => Value::Opaque(bytes()?),
                "70" => Value::Counter64(val.trim().parse().map_err(|_| num("bad Counter64"))?),
                _ => return Err(err("unknown tag")),
            };
            objects.push(Object { oid, value });
        }
        objects.sort_by(|a, b| a.oid.cmp(&b.oid));
        objects.dedup_by(|a, b| a.oid == b.oid);
        Ok(Self {
            objects,
            started: Instant::now(),
        })
    }

    #[must_use]
    pub fn len(&self) -> usize {
        self.objects.len()
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }

    /// The object at `oid`, if any.
    #[must_use]
    pub fn get(&self, oid: &[u32]) -> Option<&Object> {
        self.objects
            .binary_search_by(|o| o.oid.as_slice().cmp(oid))
            .ok()
            .map(|i| &self.objects[i])
    }

    /// The first object after `oid` (GETNEXT).
    #[must_use]
    pub fn next(&self, oid: &[u32]) -> Option<&Object> {
        let i = self.objects.partition_point(|o| o.oid.as_slice() <= oid);
        self.objects.get(i)
    }

    /// Whether some object lies under `prefix` (noSuchObject vs noSuchInstance).
    #[must_use]
    pub fn has_subtree(&self, prefix: &[u32]) -> bool {
        self.next(prefix).is_some_and(|o| o.oid.starts_with(prefix))
    }

    /// The value as served now: counters grow (by a per-object rate, 1–1000/s), TimeTicks
    /// advance with the clock, `{device}` in strings becomes `device`.
    #[must_use]
    pub fn live(&self, o: &Object, device: &str) -> Value {
        let ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let rate = 1 + u64::from(
            o.oid
                .iter()
                .fold(7u32, |h, a| h.wrapping_mul(31).wrapping_add(*a))
                % 1000,
        );
        let grown = ms.saturating_mul(rate) / 1000;
        match &o.value {
            Value::Counter32(v) => {
                Value::Counter32(v.wrapping_add(u32::try_from(grown & 0xFFFF_FFFF).unwrap_or(0)))
            }
            Value::Counter64(v) => Value::Counter64(v.wrapping_add(grown)),
            Value::TimeTicks(v) => {
                Value::TimeTicks(v.wrapping_add(u32::try_from((ms / 10) & 0xFFFF_FFFF).unwrap_or(0)))
            }
            Value::OctetString(b) if b.windows(8).any(|w| w == b"{device}") => {
                Value::OctetString(Bytes::from(
                    String::from_utf8_lossy(b)
                        .replace("{device}", device)
                        .into_bytes(),
                ))
            }
            v => v.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_snmprec_lines_hex_and_variation_tags() {
        let r = Recording::parse(
            "# c\n1.3.6.1.2.1.1.5.0|4|{device}\n1.3.6.1.2.1.2.2.1.6.1|4x|001b21a00001\n\
             .1.3.6.1.2.1.1.3.0|67|100\n1.3.6.1.2.1.4.20.1.1.10.0.0.1|64|10.0.0.1\n1.3.6.1.2.1.1.7.0|2:numeric|72\n",
        )
        .unwrap();
        assert_eq!(r.len(), 5);
        let first = r.next(&[1, 3]).unwrap();
        assert_eq!(first.oid, vec![1, 3, 6, 1, 2, 1, 1, 3, 0]);
        assert_eq!(
            r.live(r.get(&[1, 3, 6, 1, 2, 1, 1, 5, 0]).unwrap(), "dev-7"),
            Value::OctetString(Bytes::from_static(b"dev-7"))
        );
        assert!(r.has_subtree(&[1, 3, 6, 1, 2, 1, 2]));
        assert!(r.next(&[1, 3, 6, 1, 2, 1, 4, 20, 1, 1, 10, 0, 0, 1]).is_none());
        assert!(Recording::parse("1.3.6|99|x").unwrap_err().contains("line 1"));
    }

    #[test]
    fn the_fixture_recording_parses() {
        let text = std::fs::read_to_string(crate::repo_root().join("tests/fixtures/sim/generic-pdu.snmprec"))
            .unwrap();
        assert!(Recording::parse(&text).unwrap().len() > 20);
    }
}
