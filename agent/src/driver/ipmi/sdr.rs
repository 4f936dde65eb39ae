//! Sensor Data Records (IPMI v2.0 §43) and reading conversion (§36.3).
//!
//! ```text
//! header          record_id:u16le  sdr_version(51h)  record_type  body_length
//! 01h full        owner, lun, number, entity id, instance, init, caps, sensor type, event/reading
//!                 type, masks (6), units1 (7:6 analog format), base unit, modifier unit,
//!                 linearization, M (10 bits), tolerance, B (10 bits), accuracy, R exp:4|B exp:4,
//!                 analog flags, nominal, normal max/min, sensor max/min, UNR UC UNC LNR LC LNC,
//!                 hysteresis ±, reserved 2, OEM, id type/length, id string
//! 02h compact     owner … masks as above, units1, base unit, modifier unit, record sharing (2),
//!                 hysteresis ±, reserved 3, OEM, id type/length, id string
//! 11h FRU locator access address, FRU device id, 7=logical|lun|bus, channel, reserved, device
//!                 type, modifier, FRU entity id, instance, OEM, id type/length, id string
//! 12h MC locator  slave address, channel, …, entity id, instance, OEM, id type/length, id string
//! ```
//! Conversion: y = L[(M·x + B·10^Bexp) · 10^Rexp], x the raw byte read as unsigned, 1's or 2's
//! complement per units1 bits 7:6.

use super::fru::decode_field;
use super::rmcp::{malformed, u16le};
use crate::driver::DriverError;

/// Linear conversion factors of a full sensor record.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Conversion {
    pub(crate) m: i16,
    pub(crate) b: i16,
    pub(crate) b_exp: i8,
    pub(crate) r_exp: i8,
    /// 0 unsigned, 1 one's complement, 2 two's complement (3 = no analog reading: not built).
    pub(crate) format: u8,
    pub(crate) linearization: u8,
}

fn sign_extend(v: u16, bits: u32) -> i16 {
    let shift = 16 - bits;
    // The shifted value fits i16 by construction (bits ≤ 10).
    i16::from_ne_bytes((v << shift).to_ne_bytes()) >> shift
}

impl Conversion {
    /// Converts a raw reading; `None` for non-linear (OEM) linearizations or a non-finite result.
    pub(crate) fn convert(&self, raw: u8) -> Option<f64> {
        let x = match self.format {
            1 if raw & 0x80 != 0 => -f64::from(0xFF - raw),
            2 => f64::from(i8::from_ne_bytes([raw])),
            _ => f64::from(raw),
        };
        let y = (f64::from(self.m) * x + f64::from(self.b) * 10f64.powi(i32::from(self.b_exp)))
            * 10f64.powi(i32::from(self.r_exp));
        let v = match self.linearization & 0x7F {
            0 => y,
            1 => y.ln(),
            2 => y.log10(),
            3 => y.log2(),
            4 => y.exp(),
            5 => 10f64.powf(y),
            6 => y.exp2(),
            7 => 1.0 / y,
            8 => y * y,
            9 => y * y * y,
            10 => y.sqrt(),
            11 => y.cbrt(),
            _ => return None,
        };
        v.is_finite().then_some(v)
    }
}

/// A full or compact sensor record.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Sensor {
    pub(crate) record_id: u16,
    pub(crate) owner: u8,
    pub(crate) lun: u8,
    pub(crate) number: u8,
    pub(crate) entity_id: u8,
    pub(crate) entity_instance: u8,
    pub(crate) sensor_type: u8,
    pub(crate) event_type: u8,
    pub(crate) base_unit: u8,
    /// Units1 bit 0: reading is a percentage.
    pub(crate) percentage: bool,
    /// Only for full records with an analog format and an event/reading type of threshold.
    pub(crate) conversion: Option<Conversion>,
    /// Raw thresholds UNR, UC, UNC, LNR, LC, LNC where readable (full records only).
    pub(crate) thresholds: [Option<u8>; 6],
    pub(crate) name: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FruLocator {
    pub(crate) access_address: u8,
    pub(crate) device_id: u8,
    pub(crate) logical: bool,
    pub(crate) entity_id: u8,
    pub(crate) entity_instance: u8,
    pub(crate) name: String,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Record {
    Sensor(Sensor),
    FruLocator(FruLocator),
    McLocator { address: u8, name: String },
    Other { record_type: u8 },
}

fn id_string(body: &[u8], at: usize) -> String {
    match body.get(at) {
        Some(&tl) => {
            let len = usize::from(tl & 0x1F);
            body.get(at + 1..)
                .map(|r| decode_field(tl, &r[..len.min(r.len())]))
                .unwrap_or_default()
        }
        None => String::new(),
    }
}

/// Parses one SDR (header + body).
pub(crate) fn parse_record(rec: &[u8]) -> Result<Record, DriverError> {
    const W: &str = "SDR record";
    let (Some(record_id), Some(&record_type), Some(&len)) = (u16le(rec, 0), rec.get(3), rec.get(4)) else {
        return Err(malformed(
            W,
            format!("{} bytes, shorter than the header", rec.len()),
        ));
    };
    let body = rec.get(5..5 + usize::from(len)).ok_or_else(|| {
        malformed(
            W,
            format!("record {record_id:#06x} body length {len} exceeds the data"),
        )
    })?;
    let need = |n: usize| {
        if body.len() < n {
            Err(malformed(
                W,
                format!(
                    "record {record_id:#06x} type {record_type:#04x} has {} body bytes, needs {n}",
                    body.len()
                ),
            ))
        } else {
            Ok(())
        }
    };
    Ok(match record_type {
        0x01 | 0x02 => {
            need(if record_type == 0x01 { 42 } else { 26 })?;
            let units1 = body[15];
            let format = units1 >> 6;
            let event_type = body[8];
            let (conversion, thresholds, name) = if record_type == 0x01 {
                let m = sign_extend(u16::from(body[19]) | u16::from(body[20] >> 6) << 8, 10);
                let b = sign_extend(u16::from(body[21]) | u16::from(body[22] >> 6) << 8, 10);
                let r_exp = i8::try_from(sign_extend(u16::from(body[24] >> 4), 4)).unwrap_or(0);
                let b_exp = i8::try_from(sign_extend(u16::from(body[24] & 0x0F), 4)).unwrap_or(0);
                let conv = (format != 3).then_some(Conversion {
                    m,
                    b,
                    b_exp,
                    r_exp,
                    format,
                    linearization: body[18],
                });
                // Readable threshold mask: body[13] bits 0..5 = LNC LC LNR UNC UC UNR.
                let readable = body[13];
                let bit = |i: u8| readable & (1 << i) != 0;
                let th = [
                    bit(5).then_some(body[31]),
                    bit(4).then_some(body[32]),
                    bit(3).then_some(body[33]),
                    bit(2).then_some(body[34]),
                    bit(1).then_some(body[35]),
                    bit(0).then_some(body[36]),
                ];
                (conv, th, id_string(body, 42))
            } else {
                (None, [None; 6], id_string(body, 26))
            };
            Record::Sensor(Sensor {
                record_id,
                owner: body[0],
                lun: body[1] & 0x03,
                number: body[2],
                entity_id: body[3],
                entity_instance: body[4],
                sensor_type: body[7],
                event_type,
                base_unit: body[16],
                percentage: units1 & 1 != 0,
                conversion,
                thresholds,
                name,
            })
        }
        0x11 => {
            need(11)?;
            Record::FruLocator(FruLocator {
                access_address: body[0],
                device_id: body[1],
                logical: body[2] & 0x80 != 0,
                entity_id: body[7],
                entity_instance: body[8],
                name: id_string(body, 10),
            })
        }
        0x12 => {
            need(11)?;
            Record::McLocator {
                address: body[0],
                name: id_string(body, 10),
            }
        }
        t => Record::Other { record_type: t },
    })
}

/// Reading vocabulary entry: metric, unit and the conversion from the sensor's unit.
pub(crate) type MetricMap = (&'static str, &'static str, fn(f64) -> f64);

/// What a sensor's base unit becomes in the reading vocabulary (metric, unit, converter).
pub(crate) fn metric_for(base_unit: u8) -> Option<MetricMap> {
    Some(match base_unit {
        1 => ("temperature", "Cel", |v| v),
        2 => ("temperature", "Cel", |f| (f - 32.0) * 5.0 / 9.0),
        3 => ("temperature", "Cel", |k| k - 273.15),
        4 => ("voltage", "V", |v| v),
        5 => ("current", "A", |v| v),
        6 => ("power", "W", |v| v),
        18 => ("fan_speed", "{rpm}", |v| v),
        _ => return None,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn full(num: u8, name: &str, unit: u8, m: u16, r_exp: u8, units1: u8) -> Vec<u8> {
        let mut body = vec![
            0x20, 0x00, num, 0x07, 0x01, 0x7F, 0x44, 0x02, 0x01, 0x00, 0x30, 0x00, 0x30, 0x3F, 0x00, units1,
            unit, 0x00, 0x00,
        ];
        body.extend_from_slice(&[
            u8::try_from(m & 0xFF).unwrap(),
            u8::try_from((m >> 8) & 3).unwrap() << 6,
            0,
            0,
            0,
            r_exp << 4,
        ]);
        body.extend_from_slice(&[0, 0, 0, 0, 0xFF, 0]);
        body.extend_from_slice(&[225, 220, 216, 175, 180, 184]);
        body.extend_from_slice(&[0, 0, 0, 0, 0]);
        body.push(0xC0 | u8::try_from(name.len()).unwrap());
        body.extend_from_slice(name.as_bytes());
        let mut r = vec![0x07, 0x00, 0x51, 0x01, u8::try_from(body.len()).unwrap()];
        r.extend(body);
        r
    }

    #[test]
    fn full_record_and_linear_conversion_match_ipmitool() {
        // 12V in tests/peers/ipmi: M=6, R=-2; raw 201 → 12.06 V (ipmitool sdr list: 12.06 Volts).
        let Record::Sensor(s) = parse_record(&full(7, "12V", 4, 6, 0x0E, 0x00)).unwrap() else {
            panic!()
        };
        assert_eq!(
            (s.number, s.record_id, s.name.as_str(), s.base_unit),
            (7, 7, "12V", 4)
        );
        let c = s.conversion.unwrap();
        assert_eq!((c.m, c.r_exp, c.b, c.b_exp), (6, -2, 0, 0));
        assert!((c.convert(201).unwrap() - 12.06).abs() < 1e-9);
        assert_eq!(
            s.thresholds,
            [Some(225), Some(220), Some(216), Some(175), Some(180), Some(184)]
        );
        // FAN: M=60 → raw 114 = 6840 RPM.
        let Record::Sensor(s) = parse_record(&full(4, "FAN1", 18, 60, 0, 0)).unwrap() else {
            panic!()
        };
        assert!((s.conversion.unwrap().convert(114).unwrap() - 6840.0).abs() < 1e-9);
    }

    #[test]
    fn analog_formats_negative_factors_and_exponents() {
        let c = Conversion {
            m: 1,
            b: 0,
            b_exp: 0,
            r_exp: 0,
            format: 2,
            linearization: 0,
        };
        assert_eq!(c.convert(0xF6), Some(-10.0));
        let c = Conversion { format: 1, ..c };
        assert_eq!(c.convert(0xF5), Some(-10.0));
        assert_eq!(c.convert(0x05), Some(5.0));
        let c = Conversion {
            m: -3,
            b: 5,
            b_exp: 1,
            r_exp: -1,
            format: 0,
            linearization: 0,
        };
        assert!(
            (c.convert(10).unwrap() - 2.0).abs() < 1e-9,
            "(-3·10 + 5·10)·0.1 = 2"
        );
        let c = Conversion {
            m: 1,
            b: 0,
            b_exp: 0,
            r_exp: 0,
            format: 0,
            linearization: 8,
        };
        assert_eq!(c.convert(3), Some(9.0));
        let c = Conversion {
            linearization: 0x70,
            ..c
        };
        assert_eq!(c.convert(3), None);
        assert_eq!(sign_extend(0x3FF, 10), -1);
        assert_eq!(sign_extend(0x200, 10), -512);
        assert_eq!(sign_extend(0x8, 4), -8);
        assert_eq!(sign_extend(0x7, 4), 7);
        // Bits 7:6 of the M MS byte carry bits 9:8 of M: 0x3C4 = -60.
        let mut rec = full(4, "X", 18, 0x3C4, 0, 0);
        rec[5 + 19] = 0xC4;
        let Record::Sensor(s) = parse_record(&rec).unwrap() else {
            panic!()
        };
        assert_eq!(s.conversion.unwrap().m, -60);
    }

    #[test]
    fn compact_fru_locator_and_mc_locator_records() {
        let mut body = vec![
            0x20, 0x00, 8, 0x0A, 1, 0x67, 0x40, 0x08, 0x6F, 3, 0, 3, 0, 0x0F, 0, 0xC0, 0, 0, 0, 0, 0, 0, 0,
            0, 0, 0,
        ];
        body.push(0xCA);
        body.extend_from_slice(b"PS1 Status");
        let mut rec = vec![0x08, 0x00, 0x51, 0x02, u8::try_from(body.len()).unwrap()];
        rec.extend(body);
        let Record::Sensor(s) = parse_record(&rec).unwrap() else {
            panic!()
        };
        assert_eq!(
            (s.number, s.sensor_type, s.event_type, s.name.as_str()),
            (8, 0x08, 0x6F, "PS1 Status")
        );
        assert!(s.conversion.is_none());

        let mut body = vec![0x20, 1, 0x80, 0, 0, 0x10, 0, 0x0A, 1, 0];
        body.push(0xC3);
        body.extend_from_slice(b"PS1");
        let mut rec = vec![0x09, 0x00, 0x51, 0x11, u8::try_from(body.len()).unwrap()];
        rec.extend(body);
        assert_eq!(
            parse_record(&rec).unwrap(),
            Record::FruLocator(FruLocator {
                access_address: 0x20,
                device_id: 1,
                logical: true,
                entity_id: 0x0A,
                entity_instance: 1,
                name: "PS1".into()
            })
        );
        assert!(matches!(
            parse_record(&[0, 0, 0x51, 0xC0, 0]).unwrap(),
            Record::Other { record_type: 0xC0 }
        ));
    }

    #[test]
    fn truncated_records_are_malformed_and_random_ones_never_panic() {
        let rec = full(1, "Inlet Temp", 1, 1, 0, 0);
        for n in 0..rec.len() {
            assert!(parse_record(&rec[..n]).is_err(), "{n}");
        }
        let mut x: u32 = 0xDEAD_BEEF;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            let mut r = rec.clone();
            let i = usize::try_from(x).unwrap() % r.len();
            r[i] = u8::try_from(x >> 24).unwrap();
            r[3] = [0x01, 0x02, 0x11, 0x12][usize::try_from(x >> 8).unwrap() % 4];
            r.truncate(usize::try_from(x >> 12).unwrap() % (r.len() + 1));
            if let Ok(Record::Sensor(s)) = parse_record(&r)
                && let Some(c) = s.conversion
            {
                let _ = c.convert(u8::try_from(x & 0xFF).unwrap());
            }
        }
    }
}
