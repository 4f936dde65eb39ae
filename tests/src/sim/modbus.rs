//! Modbus TCP devices from the register maps (`agent/profiles/modbus/*.toml`): one TCP listener
//! on 127.0.0.1 serves up to 247 devices, one per unit id
//! (`modbus+tcp://127.0.0.1:<port>?unit=<id>&map=<name>`). Identity registers hold
//! `SIM-<unit>`-style text, readings plausible numbers that vary with time, encoded with the
//! map's word and byte order; addresses in the map's holes answer exception 2 (illegal data
//! address) like the real device. FC01–FC04 are served; anything else gets exception 1.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use groundtruth_agent::driver::modbus::map::{self, Order, RegisterMap, Table, ValueType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::Behaviour;

/// One device: a unit id on the listener.
#[derive(Debug, Clone)]
pub struct ModbusDevice {
    pub unit: u8,
    pub behaviour: Behaviour,
}

#[derive(Debug)]
struct Shared {
    map: RegisterMap,
    /// Static registers (identity text), by (table, address).
    fixed: HashMap<(Table, u16), u16>,
    devices: HashMap<u8, Behaviour>,
    requests: HashMap<u8, AtomicU64>,
    started: Instant,
}

/// A running Modbus TCP fleet; dropping it stops the listener.
#[derive(Debug)]
pub struct ModbusFleet {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ModbusFleet {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Encodes `bytes` (big-endian value) into registers with the map's orders, the inverse of
/// the agent's `decode.rs`.
fn to_words(bytes: &[u8], word_order: Order, byte_order: Order, is_string: bool) -> Vec<u16> {
    let mut words: Vec<u16> = bytes
        .chunks(2)
        .map(|c| {
            let (hi, lo) = (c[0], c.get(1).copied().unwrap_or(0));
            match byte_order {
                Order::Big => u16::from_be_bytes([hi, lo]),
                Order::Little => u16::from_be_bytes([lo, hi]),
            }
        })
        .collect();
    if !is_string && word_order == Order::Little {
        words.reverse();
    }
    words
}

fn number_bytes(ty: ValueType, v: f64) -> Vec<u8> {
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    match ty {
        ValueType::Bool => vec![0, u8::from(v != 0.0)],
        ValueType::Int16 => (v as i16).to_be_bytes().to_vec(),
        ValueType::Uint16 => (v as u16).to_be_bytes().to_vec(),
        ValueType::Int32 => (v as i32).to_be_bytes().to_vec(),
        ValueType::Uint32 => (v as u32).to_be_bytes().to_vec(),
        ValueType::Int64 => (v as i64).to_be_bytes().to_vec(),
        ValueType::Uint64 => (v as u64).to_be_bytes().to_vec(),
        ValueType::Float32 => (v as f32).to_be_bytes().to_vec(),
        ValueType::Float64 => v.to_be_bytes().to_vec(),
        ValueType::String { len } => vec![b'x'; usize::from(len) * 2],
    }
}

impl Shared {
    fn value(&self, unit: u8, table: Table, addr: u16) -> Option<u16> {
        if self
            .map
            .holes
            .iter()
            .any(|h| h.table == table && (h.start..=h.end).contains(&addr))
        {
            return None;
        }
        if let Some(w) = self.fixed.get(&(table, addr)) {
            return Some(if *w == u16::MAX { u16::from(unit) } else { *w });
        }
        // Readings: a value around 100 that moves with time, per unit.
        for r in &self.map.readings {
            let p = r.point;
            if p.table == table && (p.address..p.address.saturating_add(p.ty.width())).contains(&addr) {
                let t = self.started.elapsed().as_secs_f64();
                let raw_value = 100.0 + f64::from(unit) + (t / 10.0).sin() * 5.0;
                let raw = if r.scale.abs() > f64::EPSILON {
                    (raw_value - r.offset) / r.scale
                } else {
                    raw_value
                };
                let words = to_words(
                    &number_bytes(p.ty, raw),
                    self.map.word_order,
                    self.map.byte_order,
                    false,
                );
                return words.get(usize::from(addr - p.address)).copied();
            }
        }
        Some(0)
    }
}

impl ModbusFleet {
    /// Starts a listener serving `devices` with the built-in register map `map_name`.
    ///
    /// # Errors
    /// Unknown map or bind failure.
    pub async fn start(map_name: &str, devices: Vec<ModbusDevice>) -> std::io::Result<Self> {
        let map = map::load(map_name).map_err(|e| std::io::Error::other(e.to_string()))?;
        let mut fixed = HashMap::new();
        for id in &map.identity {
            let p = id.point;
            let text = format!("SIM-{:?}", id.field).into_bytes();
            if let ValueType::String { len } = p.ty {
                let mut b = text;
                b.resize(usize::from(len) * 2, b' ');
                for (k, w) in to_words(&b, map.word_order, map.byte_order, true)
                    .into_iter()
                    .enumerate()
                {
                    fixed.insert((p.table, p.address + u16::try_from(k).unwrap_or(0)), w);
                }
            } else {
                // A numeric identity register (e.g. a serial number): the unit id, marked.
                for k in 0..p.ty.width() {
                    fixed.insert(
                        (p.table, p.address + k),
                        if k + 1 == p.ty.width() { u16::MAX } else { 0 },
                    );
                }
            }
        }
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            map,
            fixed,
            requests: devices.iter().map(|d| (d.unit, AtomicU64::new(0))).collect(),
            devices: devices.into_iter().map(|d| (d.unit, d.behaviour)).collect(),
            started: Instant::now(),
        });
        let s = Arc::clone(&shared);
        let task = tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                tokio::spawn(serve_conn(conn, Arc::clone(&s)));
            }
        });
        Ok(Self { addr, shared, task })
    }

    /// The agent target URL for unit `unit`.
    #[must_use]
    pub fn url(&self, unit: u8) -> String {
        format!(
            "modbus+tcp://{}?unit={unit}&map={}",
            self.addr, self.shared.map.name
        )
    }

    /// Requests received for `unit`.
    #[must_use]
    pub fn requests(&self, unit: u8) -> u64 {
        self.shared
            .requests
            .get(&unit)
            .map_or(0, |c| c.load(Ordering::Relaxed))
    }
}

async fn serve_conn(mut conn: TcpStream, s: Arc<Shared>) {
    let mut head = [0u8; 7];
    loop {
        if conn.read_exact(&mut head).await.is_err() {
            return;
        }
        let tid = u16::from_be_bytes([head[0], head[1]]);
        let len = usize::from(u16::from_be_bytes([head[4], head[5]]));
        let unit = head[6];
        if !(2..=254).contains(&len) {
            return; // framing garbage: drop the connection, as devices do
        }
        let mut pdu = vec![0u8; len - 1];
        if conn.read_exact(&mut pdu).await.is_err() {
            return;
        }
        let Some(behaviour) = s.devices.get(&unit).cloned() else {
            continue; // no such unit: a gateway would answer exception 11; a plain device is silent
        };
        if let Some(c) = s.requests.get(&unit) {
            c.fetch_add(1, Ordering::Relaxed);
        }
        let reply_tid = match behaviour {
            Behaviour::BlackHole => continue,
            Behaviour::Latency(d) => {
                tokio::time::sleep(d).await;
                tid
            }
            Behaviour::WrongRequestId => tid.wrapping_add(1),
            Behaviour::Garbage => {
                // Keeps the connection (a device that talks nonsense, not one that hangs up).
                let mut state = u64::from(tid) << 8 | u64::from(unit) | 1;
                let junk = super::garbage(&mut state, 1 + usize::from(tid % 300));
                if conn.write_all(&junk).await.is_err() {
                    return;
                }
                continue;
            }
            _ => tid,
        };
        let body = answer(&s, unit, &pdu);
        let mut frame = Vec::with_capacity(7 + body.len());
        frame.extend_from_slice(&reply_tid.to_be_bytes());
        frame.extend_from_slice(&[0, 0]);
        frame.extend_from_slice(&u16::try_from(body.len() + 1).unwrap_or(0).to_be_bytes());
        frame.push(unit);
        frame.extend_from_slice(&body);
        if behaviour == Behaviour::Truncate {
            frame.truncate(frame.len() / 2);
        }
        if conn.write_all(&frame).await.is_err() {
            return;
        }
        if behaviour == Behaviour::Truncate {
            tokio::time::sleep(Duration::from_millis(50)).await;
            return;
        }
    }
}

fn answer(s: &Shared, unit: u8, pdu: &[u8]) -> Vec<u8> {
    let exception = |fc: u8, code: u8| vec![fc | 0x80, code];
    let (Some(&fc), Some(start), Some(qty)) = (
        pdu.first(),
        pdu.get(1..3).map(|b| u16::from_be_bytes([b[0], b[1]])),
        pdu.get(3..5).map(|b| u16::from_be_bytes([b[0], b[1]])),
    ) else {
        return exception(pdu.first().copied().unwrap_or(0), 3);
    };
    let table = match fc {
        1 => Table::Coil,
        2 => Table::DiscreteInput,
        3 => Table::Holding,
        4 => Table::Input,
        _ => return exception(fc, 1),
    };
    let max = if fc <= 2 { 2000 } else { 125 };
    if qty == 0 || qty > max || u32::from(start) + u32::from(qty) > 0x1_0000 {
        return exception(fc, 3);
    }
    let mut values = Vec::with_capacity(usize::from(qty));
    for a in start..start.saturating_add(qty) {
        match s.value(unit, table, a) {
            Some(v) => values.push(v),
            None => return exception(fc, 2),
        }
    }
    let mut out = vec![fc];
    if fc <= 2 {
        let bytes: Vec<u8> = values
            .chunks(8)
            .map(|c| {
                c.iter()
                    .enumerate()
                    .fold(0u8, |b, (i, v)| b | (u8::from(*v != 0) << i))
            })
            .collect();
        out.push(u8::try_from(bytes.len()).unwrap_or(0));
        out.extend(bytes);
    } else {
        out.push(u8::try_from(values.len() * 2).unwrap_or(0));
        for v in values {
            out.extend_from_slice(&v.to_be_bytes());
        }
    }
    out
}
