//! Register words → values, with the map's word and byte order.
//!
//! Registers are big-endian 16-bit words on the wire (tokio-modbus hands them over as `u16`).
//! A multi-register value is assembled as bytes: the registers in device order (reversed for
//! `word_order = "little"`), each register high byte first (swapped for `byte_order = "little"`),
//! then read as one big-endian number. So for a float32 at registers r0 r1:
//! big/big = ABCD, little/big = CDAB ("word swap"), big/little = BADC, little/little = DCBA.
//! Strings take two characters per register in register order; only the byte order applies.

use super::map::{Order, ValueType};

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Number(f64),
    Text(String),
}

/// Why a value could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("expected {expected} registers, got {got}")]
    Length { expected: usize, got: usize },
    #[error("value is not a number ({0})")]
    NotFinite(&'static str),
}

/// Decodes one value from exactly `ty.width()` words (bits as 0/1 words for `Bool`).
///
/// # Errors
/// Wrong number of words, or NaN/infinity in a float (a device's "no value" marker, never a
/// reading).
pub fn decode(
    words: &[u16],
    ty: ValueType,
    word_order: Order,
    byte_order: Order,
) -> Result<Value, DecodeError> {
    let width = usize::from(ty.width());
    if words.len() != width {
        return Err(DecodeError::Length {
            expected: width,
            got: words.len(),
        });
    }
    if let ValueType::String { .. } = ty {
        let mut bytes = Vec::with_capacity(2 * width);
        for w in words {
            let [hi, lo] = w.to_be_bytes();
            match byte_order {
                Order::Big => bytes.extend([hi, lo]),
                Order::Little => bytes.extend([lo, hi]),
            }
        }
        // Devices pad with NUL or spaces; stop at the first NUL, keep printable ASCII only.
        let text: String = bytes
            .iter()
            .take_while(|b| **b != 0)
            .map(|&b| {
                if b.is_ascii_graphic() || b == b' ' {
                    char::from(b)
                } else {
                    '?'
                }
            })
            .collect();
        return Ok(Value::Text(text.trim().to_owned()));
    }
    let mut buf = [0u8; 8];
    let n = 2 * width;
    for (i, w) in words.iter().enumerate() {
        let slot = match word_order {
            Order::Big => i,
            Order::Little => width - 1 - i,
        };
        let [hi, lo] = w.to_be_bytes();
        let pair = match byte_order {
            Order::Big => [hi, lo],
            Order::Little => [lo, hi],
        };
        buf[2 * slot..2 * slot + 2].copy_from_slice(&pair);
    }
    let b = &buf[..n];
    #[allow(clippy::cast_precision_loss)] // 64-bit counters beyond 2^53 lose precision, as in any f64 reading
    let v = match ty {
        ValueType::Bool => f64::from(u8::from(words[0] != 0)),
        ValueType::Int16 => f64::from(i16::from_be_bytes([b[0], b[1]])),
        ValueType::Uint16 => f64::from(u16::from_be_bytes([b[0], b[1]])),
        ValueType::Int32 => f64::from(i32::from_be_bytes([b[0], b[1], b[2], b[3]])),
        ValueType::Uint32 => f64::from(u32::from_be_bytes([b[0], b[1], b[2], b[3]])),
        ValueType::Int64 => i64::from_be_bytes(buf) as f64,
        ValueType::Uint64 => u64::from_be_bytes(buf) as f64,
        ValueType::Float32 => widen(f32::from_be_bytes([b[0], b[1], b[2], b[3]])),
        ValueType::Float64 => f64::from_be_bytes(buf),
        ValueType::String { .. } => unreachable!("strings returned above"),
    };
    check_finite(v)?;
    Ok(Value::Number(v))
}

/// A float32 as the f64 with the same shortest decimal form (230.1f32 → 230.1, not
/// 230.10000610351562), so readings print as the device meant them.
fn widen(v: f32) -> f64 {
    if v.is_finite() {
        v.to_string().parse().unwrap_or_else(|_| f64::from(v))
    } else {
        f64::from(v)
    }
}

/// `raw * scale + offset`, refusing a non-finite result.
///
/// # Errors
/// NaN or infinity (overflow of a huge raw value times the scale).
pub fn scaled(raw: f64, scale: f64, offset: f64) -> Result<f64, DecodeError> {
    let v = raw.mul_add(scale, offset);
    check_finite(v)?;
    Ok(v)
}

fn check_finite(v: f64) -> Result<(), DecodeError> {
    if v.is_nan() {
        Err(DecodeError::NotFinite("NaN"))
    } else if v.is_infinite() {
        Err(DecodeError::NotFinite("infinity"))
    } else {
        Ok(())
    }
}

/// An identity value as text: strings trimmed, integers without a fraction.
#[must_use]
pub fn as_text(v: &Value) -> String {
    match v {
        Value::Text(s) => s.clone(),
        #[allow(clippy::cast_possible_truncation)]
        Value::Number(n) if n.fract() == 0.0 && n.abs() < 9.0e15 => format!("{}", *n as i64),
        Value::Number(n) => n.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Order::{Big, Little};

    fn num(words: &[u16], ty: ValueType, wo: Order, bo: Order) -> f64 {
        match decode(words, ty, wo, bo).unwrap() {
            Value::Number(n) => n,
            Value::Text(t) => panic!("text {t}"),
        }
    }

    #[test]
    fn float32_in_all_four_orders() {
        // 230.5f32 = 0x43668000: A=0x43 B=0x66 C=0x80 D=0x00.
        assert_eq!(num(&[0x4366, 0x8000], ValueType::Float32, Big, Big), 230.5); // ABCD
        assert_eq!(num(&[0x8000, 0x4366], ValueType::Float32, Little, Big), 230.5); // CDAB
        assert_eq!(num(&[0x6643, 0x0080], ValueType::Float32, Big, Little), 230.5); // BADC
        assert_eq!(num(&[0x0080, 0x6643], ValueType::Float32, Little, Little), 230.5); // DCBA
    }

    #[test]
    fn integers_signed_and_unsigned() {
        assert_eq!(num(&[0xFFFE], ValueType::Int16, Big, Big), -2.0);
        assert_eq!(num(&[0xFFFE], ValueType::Uint16, Big, Big), 65534.0);
        assert_eq!(num(&[0xFEFF], ValueType::Int16, Big, Little), -2.0);
        assert_eq!(num(&[0x01E0, 0xFF95], ValueType::Uint32, Big, Big), 31_522_709.0);
        assert_eq!(
            num(&[0xFF95, 0x01E0], ValueType::Uint32, Little, Big),
            31_522_709.0
        );
        assert_eq!(num(&[0xFFFF, 0xFFFF], ValueType::Int32, Big, Big), -1.0);
        assert_eq!(
            num(&[0x8000, 0x0000], ValueType::Int32, Big, Big),
            f64::from(i32::MIN)
        );
        assert_eq!(
            num(&[0x0000, 0x0000, 0x0BC6, 0x14E6], ValueType::Int64, Big, Big),
            197_530_854.0
        );
        assert_eq!(
            num(&[0x14E6, 0x0BC6, 0x0000, 0x0000], ValueType::Int64, Little, Big),
            197_530_854.0
        );
        assert_eq!(num(&[0xFFFF; 4], ValueType::Int64, Big, Big), -1.0);
        assert_eq!(
            num(&[0xFFFF; 4], ValueType::Uint64, Big, Big),
            18_446_744_073_709_551_615.0
        );
        assert_eq!(num(&[1], ValueType::Bool, Big, Big), 1.0);
        assert_eq!(num(&[0], ValueType::Bool, Big, Big), 0.0);
    }

    #[test]
    fn float64_in_both_word_orders() {
        let w: Vec<u16> = 48_213.7f64
            .to_be_bytes()
            .chunks(2)
            .map(|c| u16::from_be_bytes([c[0], c[1]]))
            .collect();
        assert_eq!(num(&w, ValueType::Float64, Big, Big), 48_213.7);
        let rev: Vec<u16> = w.iter().rev().copied().collect();
        assert_eq!(num(&rev, ValueType::Float64, Little, Big), 48_213.7);
    }

    #[test]
    fn strings_trim_padding_and_respect_byte_order() {
        let w = [0x4754, 0x2D55, 0x5053, 0x2020]; // "GT-UPS  "
        let s = ValueType::String { len: 4 };
        assert_eq!(decode(&w, s, Big, Big).unwrap(), Value::Text("GT-UPS".into()));
        // Word order does not apply to text.
        assert_eq!(decode(&w, s, Little, Big).unwrap(), Value::Text("GT-UPS".into()));
        let swapped = [0x5447, 0x552D, 0x5350, 0x0000];
        assert_eq!(
            decode(&swapped, s, Big, Little).unwrap(),
            Value::Text("GT-UPS".into())
        );
        // Stops at NUL, replaces non-ASCII.
        assert_eq!(
            decode(&[0x41FF, 0x0042], ValueType::String { len: 2 }, Big, Big).unwrap(),
            Value::Text("A?".into())
        );
    }

    #[test]
    fn nan_and_infinity_are_rejected() {
        assert_eq!(
            decode(&[0x7FC0, 0x0000], ValueType::Float32, Big, Big),
            Err(DecodeError::NotFinite("NaN"))
        );
        assert_eq!(
            decode(&[0x7F80, 0x0000], ValueType::Float32, Big, Big),
            Err(DecodeError::NotFinite("infinity"))
        );
        assert_eq!(
            decode(&[0xFFF0, 0, 0, 0], ValueType::Float64, Big, Big),
            Err(DecodeError::NotFinite("infinity"))
        );
        assert_eq!(
            scaled(f64::MAX, 10.0, 0.0),
            Err(DecodeError::NotFinite("infinity"))
        );
    }

    #[test]
    fn wrong_word_count_is_an_error_not_a_panic() {
        assert_eq!(
            decode(&[1], ValueType::Float32, Big, Big),
            Err(DecodeError::Length { expected: 2, got: 1 })
        );
    }

    #[test]
    fn float32_widens_to_its_shortest_decimal() {
        let w = 230.1f32.to_bits();
        let words = [
            u16::try_from(w >> 16).unwrap(),
            u16::try_from(w & 0xFFFF).unwrap(),
        ];
        assert_eq!(num(&words, ValueType::Float32, Big, Big), 230.1);
    }

    #[test]
    fn scale_and_offset() {
        assert_eq!(scaled(18.5, 60.0, 0.0).unwrap(), 1110.0);
        assert!((scaled(2731.5, 0.1, -273.15).unwrap()).abs() < 1e-9);
    }

    #[test]
    fn identity_text_of_numbers_has_no_fraction() {
        assert_eq!(as_text(&Value::Number(31_415_926.0)), "31415926");
        assert_eq!(as_text(&Value::Number(1.5)), "1.5");
    }

    #[test]
    fn decode_never_panics_on_any_short_input() {
        let types = [
            ValueType::Bool,
            ValueType::Int16,
            ValueType::Uint16,
            ValueType::Int32,
            ValueType::Uint32,
            ValueType::Int64,
            ValueType::Uint64,
            ValueType::Float32,
            ValueType::Float64,
            ValueType::String { len: 3 },
        ];
        let words = [0xFFFFu16, 0x7FC0, 0, 0x8000, 0x0001];
        for ty in types {
            for n in 0..=words.len() {
                for wo in [Big, Little] {
                    for bo in [Big, Little] {
                        let _ = decode(&words[..n], ty, wo, bo);
                    }
                }
            }
        }
    }
}
