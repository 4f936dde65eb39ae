//! Fuzzing entry points, one per target in the `fuzz/` workspace (`fuzz/fuzz_targets/<name>.rs`
//! is a one-line call into here), so the same code runs under libFuzzer and in the corpus replay
//! test (`tests/it/fuzz_replay.rs`, plain `cargo test` on stable). Each takes arbitrary bytes
//! and must never panic, hang or allocate without bound. Not an API.

use crate::driver::modbus::{decode, map};

/// IPMI: RMCP/RMCP+ datagrams, IPMI messages, session setup answers, AES-CBC payloads.
pub fn ipmi_rmcp(data: &[u8]) {
    crate::driver::ipmi::fuzz::rmcp(data);
}

/// IPMI FRU images.
pub fn ipmi_fru(data: &[u8]) {
    crate::driver::ipmi::fuzz::fru(data);
}

/// IPMI SDR records and the sensor reading conversion.
pub fn ipmi_sdr(data: &[u8]) {
    crate::driver::ipmi::fuzz::sdr(data);
}

/// Modbus register words → values: byte 0 picks the type and word/byte order, the rest are the
/// registers (big-endian words, as tokio-modbus hands them over), decoded one value after another
/// the way a planned block is split; then scaling.
pub fn modbus_decode(data: &[u8]) {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let words: Vec<u16> = rest
        .chunks_exact(2)
        .map(|c| u16::from_be_bytes([c[0], c[1]]))
        .collect();
    let ty = match sel & 0x0F {
        0 => map::ValueType::Bool,
        1 => map::ValueType::Int16,
        2 => map::ValueType::Uint16,
        3 => map::ValueType::Int32,
        4 => map::ValueType::Uint32,
        5 => map::ValueType::Int64,
        6 => map::ValueType::Uint64,
        7 => map::ValueType::Float32,
        8 => map::ValueType::Float64,
        n => map::ValueType::String { len: u16::from(n) },
    };
    let order = |bit: u8| {
        if sel & bit == 0 {
            map::Order::Big
        } else {
            map::Order::Little
        }
    };
    let (wo, bo) = (order(0x10), order(0x20));
    let width = usize::from(ty.width());
    // The whole block too (a wrong register count must be an error, not a panic).
    let _ = decode::decode(&words, ty, wo, bo);
    for chunk in words.chunks(width.max(1)) {
        if let Ok(v) = decode::decode(chunk, ty, wo, bo) {
            let _ = decode::as_text(&v);
            if let decode::Value::Number(n) = v {
                let _ = decode::scaled(n, 0.1, -40.0);
                let _ = decode::scaled(n, f64::from(sel), 0.0);
            }
        }
    }
}

/// A register map file (`?map=/path/file.toml`) through the loader and its validation.
pub fn modbus_map(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(m) = map::parse("fuzz.toml", "fuzz", text)
    {
        use crate::driver::modbus::plan;
        let points: Vec<map::Point> = m
            .identity
            .iter()
            .map(|i| i.point)
            .chain(m.readings.iter().map(|r| r.point))
            .collect();
        let blocks = plan::plan(
            &points,
            &plan::Limits {
                max_registers: m.max_registers,
                max_bits: m.max_bits,
                max_gap: m.max_gap,
                holes: &m.holes,
            },
        );
        // Every point lands in exactly one block (the planner's promise).
        assert!(blocks.len() <= points.len());
    }
}

/// Redfish: an HTTP body through the lenient JSON models.
pub fn redfish_json(data: &[u8]) {
    crate::driver::redfish::fuzz_json(data);
}

/// The spool's on-disk record format (a segment file's contents).
pub fn spool_record(data: &[u8]) {
    let _ = crate::spool::fuzz_parse_records(data);
}

/// Target URLs as written in the config (and by discovery).
pub fn target_url(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(t) = crate::target::Target::parse(text)
    {
        let _ = (t.endpoint_key(), t.protocol(), format!("{t:?}"));
    }
}

/// SNMP: a datagram through async-snmp's public message decoder (BER, v1/v2c/v3 messages, PDUs,
/// varbinds), with its default (lenient) and strict compatibility settings. async-snmp does the
/// BER for the driver; this is the code that reads every SNMP answer.
pub fn snmp_message(data: &[u8]) {
    use async_snmp::compatibility::DecodeConfig;
    use async_snmp::message::Message;
    for config in [DecodeConfig::default(), DecodeConfig::STRICT] {
        if let Ok(m) = Message::decode(bytes::Bytes::copy_from_slice(data), config) {
            let _ = m.value.version();
            let _ = format!("{:?}", m.value.into_pdu());
        }
    }
}
