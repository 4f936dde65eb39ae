//! Modbus TCP and RTU driver (issue #5): register maps as data files (`map.rs`), block reads
//! planned from the map (`plan.rs`), values decoded per the map's word and byte order
//! (`decode.rs`).
//!
//! tokio-modbus (see `../shared/CRATES.md`) speaks the protocol. Its traps, and what this module
//! does about them:
//! * no timeout of its own: every request runs under `tokio::time::timeout(request_timeout)`;
//! * after a timeout the context may receive the late reply as the answer to the next request
//!   (slowtec/tokio-modbus#324): after any timeout or transport error the context is dropped and
//!   the next request reconnects (TCP) or reopens the port (RTU);
//! * the RTU inter-frame gap is not enforced (#180): the bus keeps the time of the last frame
//!   and waits 3.5 character times (or `frame_gap_ms`) before sending;
//! * `Reader::read_*_registers` only `debug_assert!`s the register count, which panics in debug
//!   builds on a short answer: requests go through `Client::call` and the count is checked here;
//! * the RTU decoder drops bytes with a bad CRC and waits on, so a corrupt answer looks like
//!   silence: the serial transport counts received bytes to tell the two apart;
//! * a TCP stream closed by the device surfaces as `io::Error::last_os_error()` (often a stale
//!   EAGAIN): reported as "the device closed the connection".
//!
//! TCP connections are kept between polls (per endpoint, at most 20 s idle, only if every
//! exchange of the poll ended cleanly); a kept connection the device has closed in the meantime
//! is reopened once without failing the poll.
//!
//! RTU buses are shared: every target on one serial device path uses one [`Bus`], whose lock is
//! held for exactly one request/response exchange. tokio's mutex is fair (FIFO), so units on one
//! bus take turns request by request, and a dead slave costs only its own timeouts.
//!
//! Failure policy per poll: an exception, a malformed answer or a timeout on one block is
//! reported in `PollStatus.partial_errors` (outcome PARTIAL) and the other blocks are still
//! read; a device that times out before answering anything, or twice in a row, is given up on
//! at once (a silent device must not cost `blocks × timeout`); a poll where no block could be
//! read is an error.

pub mod decode;
pub mod map;
pub mod plan;

use std::collections::HashMap;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex, Weak};
use std::task::Poll;
use std::time::{Duration, SystemTime};

use groundtruth_proto::v1::{self as pb, DeviceIdentity, DeviceReport, PollOutcome, PollStatus, Reading};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, timeout};
use tokio_modbus::client::{Client as _, Context};
use tokio_modbus::slave::SlaveContext as _;
use tokio_modbus::{ExceptionCode, Request, Response, Slave};

use self::decode::{Value, as_text, decode, scaled};
use self::map::{ComponentKind, DeviceClass, IdentityField, Point, RegisterMap};
use self::plan::Block;
use super::{DriverError, PollCx};
use crate::target::{ModbusTarget, ModbusTransport, Parity, SerialParams};

/// Polls a Modbus device once with its register map (`?map=NAME` or a `.toml` path).
///
/// # Errors
/// Unknown or invalid map, connection failure, a silent device, or no block readable.
pub async fn poll(t: &ModbusTarget, cx: &PollCx) -> Result<DeviceReport, DriverError> {
    let map = map::load(&t.map).map_err(|e| DriverError::Map(e.to_string()))?;
    poll_with_map(t, &map, cx).await
}

/// Polls a Modbus device once with an already loaded map.
///
/// # Errors
/// As [`poll`].
pub async fn poll_with_map(
    t: &ModbusTarget,
    map: &RegisterMap,
    cx: &PollCx,
) -> Result<DeviceReport, DriverError> {
    // Identity registers only when due (driver::PollScope): a telemetry-only poll plans and
    // reads the readings' blocks alone.
    let identity_defs = if cx.scope.wants(super::Kind::Identity) {
        &map.identity[..]
    } else {
        &[]
    };
    let points: Vec<Point> = identity_defs
        .iter()
        .map(|i| i.point)
        .chain(map.readings.iter().map(|r| r.point))
        .collect();
    let blocks = plan::plan(
        &points,
        &plan::Limits {
            max_registers: map.max_registers,
            max_bits: map.max_bits,
            max_gap: map.max_gap,
            holes: &map.holes,
        },
    );
    let mut link = Link::new(t, cx.limits.request_timeout).await?;

    let mut data: Vec<Option<(Vec<u16>, SystemTime)>> = vec![None; blocks.len()];
    let mut failures: Vec<DriverError> = Vec::new();
    let mut answered = 0usize;
    let mut timeouts_in_a_row = 0u32;
    for (bi, b) in blocks.iter().enumerate() {
        match link.read(b).await {
            Ok(words) => {
                answered += 1;
                timeouts_in_a_row = 0;
                data[bi] = Some((words, SystemTime::now()));
            }
            Err(ExchangeError {
                error, waited_out, ..
            }) => {
                if waited_out && answered == 0 {
                    return Err(error);
                }
                failures.push(error);
                if !waited_out {
                    // The device answered (an exception, a broken frame): it is not silent.
                    timeouts_in_a_row = 0;
                }
                if waited_out {
                    timeouts_in_a_row += 1;
                    if timeouts_in_a_row >= 2 {
                        let left = blocks.len() - bi - 1;
                        if left > 0 {
                            failures.push(DriverError::Timeout {
                                what: format!(
                                    "{left} more register block(s): skipped after two timeouts in a row"
                                ),
                                after: cx.limits.request_timeout,
                            });
                        }
                        break;
                    }
                }
            }
        }
    }
    link.close();
    if answered == 0 {
        return Err(failures.swap_remove(0));
    }

    let mut partial: Vec<String> = failures.iter().map(ToString::to_string).collect();
    // Values of every point, from the block that covers it.
    let mut values: Vec<Option<(Result<Value, decode::DecodeError>, SystemTime)>> = vec![None; points.len()];
    for (b, d) in blocks.iter().zip(&data) {
        let Some((words, at)) = d else { continue };
        for &i in &b.members {
            let p = points[i];
            let off = usize::from(p.address - b.start);
            let w = words
                .get(off..off + usize::from(p.ty.width()))
                .unwrap_or_default();
            values[i] = Some((decode(w, p.ty, map.word_order, map.byte_order), *at));
        }
    }

    let mut identity = DeviceIdentity {
        address: link.address(),
        device_class: device_class(map.device_class) as i32,
        vendor: map.vendor.clone(),
        model: map.model.clone(),
        ..Default::default()
    };
    identity.attributes.insert("modbus_map".into(), map.name.clone());
    identity
        .attributes
        .insert("modbus_unit".into(), t.unit.to_string());
    for (i, def) in identity_defs.iter().enumerate() {
        match &values[i] {
            Some((Ok(v), _)) => {
                let text = as_text(v);
                if text.is_empty() {
                    continue;
                }
                let slot = match def.field {
                    IdentityField::Vendor => &mut identity.vendor,
                    IdentityField::Model => &mut identity.model,
                    IdentityField::Serial => &mut identity.serial_number,
                    IdentityField::Firmware => &mut identity.firmware_version,
                    IdentityField::PartNumber => &mut identity.part_number,
                    IdentityField::Hostname => &mut identity.hostname,
                    IdentityField::AssetTag => &mut identity.asset_tag,
                };
                *slot = text;
            }
            Some((Err(e), _)) => {
                partial.push(format!("identity {:?} at {}: {e}", def.field, def.point.source()))
            }
            None => {} // its block failed; already reported
        }
    }

    let base = identity_defs.len();
    let mut readings = Vec::new();
    for (k, def) in map.readings.iter().enumerate() {
        let Some((v, at)) = &values[base + k] else {
            continue;
        };
        let what = || {
            let label = def
                .component
                .as_ref()
                .map(|c| format!(" {}", component_label(c)))
                .unwrap_or_default();
            format!("reading {}{label} at {}", def.metric, def.point.source())
        };
        let raw = match v {
            Ok(Value::Number(n)) => *n,
            Ok(Value::Text(_)) => continue, // the loader refuses text readings
            Err(e) => {
                partial.push(format!("{}: {e}", what()));
                continue;
            }
        };
        match scaled(raw, def.scale, def.offset) {
            Ok(value) => readings.push(Reading {
                metric: def.metric.clone(),
                unit: def.unit.clone(),
                value,
                observed_at: Some((*at).into()),
                component: def.component.as_ref().map(|c| pb::Component {
                    kind: component_kind(c.kind) as i32,
                    index: c.index,
                    label: component_label(c),
                }),
                source: def.point.source(),
            }),
            Err(e) => partial.push(format!("{}: {e}", what())),
        }
    }

    let status = if partial.is_empty() {
        PollStatus {
            outcome: PollOutcome::Ok as i32,
            ..Default::default()
        }
    } else {
        PollStatus {
            outcome: PollOutcome::Partial as i32,
            message: format!(
                "{} of {} register blocks not read, {} value(s) unusable",
                blocks.len() - answered,
                blocks.len(),
                partial.len() - failures.len()
            ),
            partial_errors: partial,
        }
    };
    Ok(DeviceReport {
        identity: Some(identity),
        readings,
        status: Some(status),
        ..Default::default()
    })
}

fn component_label(c: &map::ComponentDef) -> String {
    if !c.label.is_empty() {
        return c.label.clone();
    }
    match c.kind {
        ComponentKind::Phase if c.index > 0 => format!("L{}", c.index),
        _ => String::new(),
    }
}

fn component_kind(k: ComponentKind) -> pb::ComponentKind {
    use pb::ComponentKind as P;
    match k {
        ComponentKind::Device => P::Device,
        ComponentKind::Inlet => P::Inlet,
        ComponentKind::Outlet => P::Outlet,
        ComponentKind::Phase => P::Phase,
        ComponentKind::Branch => P::Branch,
        ComponentKind::Psu => P::Psu,
        ComponentKind::Sensor => P::Sensor,
        ComponentKind::Fan => P::Fan,
        ComponentKind::Battery => P::Battery,
        ComponentKind::Port => P::Port,
    }
}

fn device_class(c: DeviceClass) -> pb::DeviceClass {
    match c {
        DeviceClass::Ups => pb::DeviceClass::Ups,
        DeviceClass::Meter => pb::DeviceClass::Meter,
        DeviceClass::Pdu => pb::DeviceClass::Pdu,
        DeviceClass::Sensor => pb::DeviceClass::Sensor,
        DeviceClass::Other => pb::DeviceClass::Other,
    }
}

// ------------------------------------------------------------------------------- transport

/// One device's way to the wire: its own TCP connection, or its turn on a shared serial bus.
enum Link<'a> {
    Tcp {
        host: &'a str,
        port: u16,
        unit: u8,
        ctx: Option<Context>,
        /// `ctx` came from the idle pool and has not been used in this poll yet.
        reused: bool,
        timeout: Duration,
    },
    Rtu {
        bus: Arc<Bus>,
        /// The device path as this target names it (the bus may know it by another name).
        device: &'a std::path::Path,
        unit: u8,
        timeout: Duration,
    },
}

impl<'a> Link<'a> {
    /// TCP connects at once (so a refused connection is a `Connect` error before any block);
    /// RTU opens the shared port lazily under the bus lock.
    async fn new(t: &'a ModbusTarget, request_timeout: Duration) -> Result<Self, DriverError> {
        match &t.transport {
            ModbusTransport::Tcp { host, port } => {
                let (ctx, reused) = match idle_take(host, *port) {
                    Some(ctx) => (ctx, true),
                    None => (tcp_connect(host, *port, t.unit, request_timeout).await?, false),
                };
                Ok(Self::Tcp {
                    host,
                    port: *port,
                    unit: t.unit,
                    ctx: Some(ctx),
                    reused,
                    timeout: request_timeout,
                })
            }
            ModbusTransport::Rtu { device, serial } => Ok(Self::Rtu {
                bus: Bus::get(device, *serial),
                device,
                unit: t.unit,
                timeout: request_timeout,
            }),
        }
    }

    fn address(&self) -> String {
        match self {
            Self::Tcp { host, port, .. } => crate::target::host_port(host, *port),
            Self::Rtu { device, .. } => device.display().to_string(),
        }
    }

    async fn read(&mut self, block: &Block) -> Result<Vec<u16>, ExchangeError> {
        match self {
            Self::Tcp {
                host,
                port,
                unit,
                ctx,
                reused,
                timeout: to,
            } => {
                let endpoint = crate::target::host_port(host, *port);
                loop {
                    if ctx.is_none() {
                        *ctx = Some(tcp_connect(host, *port, *unit, *to).await?);
                    }
                    let c = ctx.as_mut().expect("invariant: connected just above");
                    let r = exchange(c, block, *unit, *to, &endpoint, None).await;
                    let was_reused = std::mem::replace(reused, false);
                    if let Err(e) = &r
                        && e.drop_context
                    {
                        // Never reuse a context that may still receive a late or stray answer.
                        *ctx = None;
                        // A pooled connection the device closed while idle: one fresh try.
                        if was_reused && matches!(e.error, DriverError::Connect { .. }) {
                            continue;
                        }
                    }
                    return r;
                }
            }
            Self::Rtu {
                bus,
                unit,
                timeout: to,
                ..
            } => bus.exchange(block, *unit, *to).await,
        }
    }

    /// Hands a healthy TCP connection back to the idle pool for the next poll.
    fn close(&mut self) {
        if let Self::Tcp { host, port, ctx, .. } = self
            && let Some(c) = ctx.take()
        {
            idle_put(host, *port, c);
        }
    }
}

/// Healthy TCP connections kept between polls, per endpoint: devices and gateways are slow to
/// accept connections and some allow only a few, so a poll reuses the previous one. Only a
/// connection whose every exchange ended cleanly is kept (no timeout, no framing trouble), so
/// no late answer can be waiting in it.
type IdlePool = HashMap<(String, u16), Vec<(Context, Instant)>>;
static TCP_IDLE: LazyLock<Mutex<IdlePool>> = LazyLock::new(|| Mutex::new(HashMap::new()));
/// Older idle connections are closed rather than reused (devices drop idle clients).
const IDLE_MAX_AGE: Duration = Duration::from_secs(20);
const IDLE_MAX_PER_ENDPOINT: usize = 4;

fn idle_take(host: &str, port: u16) -> Option<Context> {
    let mut pool = TCP_IDLE.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let list = pool.get_mut(&(host.to_owned(), port))?;
    while let Some((ctx, since)) = list.pop() {
        if since.elapsed() < IDLE_MAX_AGE {
            return Some(ctx);
        }
    }
    None
}

fn idle_put(host: &str, port: u16, ctx: Context) {
    let mut pool = TCP_IDLE.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let list = pool.entry((host.to_owned(), port)).or_default();
    list.retain(|(_, since)| since.elapsed() < IDLE_MAX_AGE);
    if list.len() < IDLE_MAX_PER_ENDPOINT {
        list.push((ctx, Instant::now()));
    }
}

async fn tcp_connect(host: &str, port: u16, unit: u8, to: Duration) -> Result<Context, DriverError> {
    let endpoint = crate::target::host_port(host, port);
    let stream = match timeout(to, tokio::net::TcpStream::connect((host, port))).await {
        Err(_) => {
            return Err(DriverError::Timeout {
                what: format!("TCP connect to {endpoint}"),
                after: to,
            });
        }
        Ok(Err(e)) => {
            return Err(DriverError::Connect {
                endpoint,
                detail: e.to_string(),
            });
        }
        Ok(Ok(s)) => s,
    };
    let _ = stream.set_nodelay(true);
    Ok(tokio_modbus::client::tcp::attach_slave(stream, Slave(unit)))
}

struct ExchangeError {
    error: DriverError,
    /// The context must not be used again (timeout, transport or framing trouble).
    drop_context: bool,
    /// The whole request timeout was spent waiting (silence, or only garbage on the line).
    waited_out: bool,
}

impl From<DriverError> for ExchangeError {
    fn from(error: DriverError) -> Self {
        let waited_out = matches!(error, DriverError::Timeout { .. });
        Self {
            error,
            drop_context: true,
            waited_out,
        }
    }
}

/// One request/response under the timeout, with the answer checked against the block.
async fn exchange(
    ctx: &mut Context,
    block: &Block,
    unit: u8,
    to: Duration,
    endpoint: &str,
    rx: Option<&AtomicUsize>,
) -> Result<Vec<u16>, ExchangeError> {
    use map::Table;
    ctx.set_slave(Slave(unit));
    let req = match block.table {
        Table::Coil => Request::ReadCoils(block.start, block.count),
        Table::DiscreteInput => Request::ReadDiscreteInputs(block.start, block.count),
        Table::Holding => Request::ReadHoldingRegisters(block.start, block.count),
        Table::Input => Request::ReadInputRegisters(block.start, block.count),
    };
    let what = || format!("{} from unit {unit} at {endpoint}", block.describe());
    let fatal = |error| ExchangeError {
        error,
        drop_context: true,
        waited_out: false,
    };
    let answer = match timeout(to, ctx.call(req)).await {
        Err(_) => {
            // tokio-modbus' RTU decoder drops bytes with a bad CRC and keeps waiting, so a
            // corrupt answer looks like silence: tell the two apart by the bytes that came.
            let got = rx.map_or(0, |n| n.load(Ordering::Relaxed));
            let error = if got > 0 {
                DriverError::Malformed {
                    what: format!("response to {}", what()),
                    detail: format!(
                        "{got} bytes within {to:?} but no valid frame (CRC error, short or garbled frame)"
                    ),
                }
            } else {
                DriverError::Timeout {
                    what: what(),
                    after: to,
                }
            };
            return Err(ExchangeError {
                error,
                drop_context: true,
                waited_out: true,
            });
        }
        Ok(Err(tokio_modbus::Error::Transport(e))) => {
            return Err(fatal(
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::InvalidData | std::io::ErrorKind::UnexpectedEof
                ) {
                    DriverError::Malformed {
                        what: format!("response to {}", what()),
                        detail: e.to_string(),
                    }
                } else {
                    // tokio-modbus reports a cleanly closed stream as `last_os_error()`,
                    // which is usually a stale EAGAIN: say what happened instead.
                    let cause = if e.kind() == std::io::ErrorKind::WouldBlock {
                        "the device closed the connection".to_owned()
                    } else {
                        e.to_string()
                    };
                    DriverError::Connect {
                        endpoint: endpoint.to_owned(),
                        detail: format!("connection lost during {}: {cause}", block.describe()),
                    }
                },
            ));
        }
        Ok(Err(tokio_modbus::Error::Protocol(e))) => {
            let detail = match e {
                tokio_modbus::ProtocolError::HeaderMismatch { message, .. } => message,
                tokio_modbus::ProtocolError::FunctionCodeMismatch { .. } => "wrong function code".to_owned(),
            };
            return Err(fatal(DriverError::Malformed {
                what: format!("response to {}", what()),
                detail,
            }));
        }
        Ok(Ok(Err(code))) => {
            return Err(ExchangeError {
                error: DriverError::DeviceException(format!("{}: {}", what(), exception_text(code))),
                drop_context: false,
                // A gateway saying the unit behind it did not answer (or cannot be reached)
                // has usually spent its own timeout: count it as silence.
                waited_out: matches!(
                    code,
                    ExceptionCode::GatewayTargetDevice | ExceptionCode::GatewayPathUnavailable
                ),
            });
        }
        Ok(Ok(Ok(r))) => r,
    };
    let count = usize::from(block.count);
    let words: Vec<u16> = match answer {
        Response::ReadHoldingRegisters(w) | Response::ReadInputRegisters(w) => w,
        // Bits come packed in whole bytes: up to 7 padding bits at the end.
        Response::ReadCoils(bits) | Response::ReadDiscreteInputs(bits)
            if bits.len() >= count && bits.len() < count + 8 =>
        {
            bits.into_iter().take(count).map(u16::from).collect()
        }
        other => {
            return Err(fatal(DriverError::Malformed {
                what: format!("response to {}", what()),
                detail: format!("unexpected answer {other:?}"),
            }));
        }
    };
    if words.len() != count {
        return Err(fatal(DriverError::Malformed {
            what: format!("response to {}", what()),
            detail: format!("{} values instead of {count}", words.len()),
        }));
    }
    Ok(words)
}

fn exception_text(code: ExceptionCode) -> String {
    let name = match code {
        ExceptionCode::IllegalFunction => "illegal function",
        ExceptionCode::IllegalDataAddress => "illegal data address",
        ExceptionCode::IllegalDataValue => "illegal data value",
        ExceptionCode::ServerDeviceFailure => "server device failure",
        ExceptionCode::Acknowledge => "acknowledge (busy with a long command)",
        ExceptionCode::ServerDeviceBusy => "server device busy",
        ExceptionCode::MemoryParityError => "memory parity error",
        ExceptionCode::GatewayPathUnavailable => "gateway path unavailable",
        ExceptionCode::GatewayTargetDevice => "gateway target device failed to respond",
        ExceptionCode::Custom(_) => "unknown exception",
    };
    format!("exception {} ({name})", u8::from(code))
}

// ------------------------------------------------------------------------------- RTU bus

/// One serial line shared by every target on its device path.
#[derive(Debug)]
pub struct Bus {
    path: PathBuf,
    serial: SerialParams,
    state: tokio::sync::Mutex<BusState>,
}

struct BusState {
    ctx: Option<Context>,
    /// Bytes received from the line since the current request was sent.
    rx: Arc<AtomicUsize>,
    /// When the line last went quiet (end of the last frame we saw).
    quiet_since: Option<Instant>,
}

impl std::fmt::Debug for BusState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BusState")
            .field("open", &self.ctx.is_some())
            .field("quiet_since", &self.quiet_since)
            .finish()
    }
}

static BUSES: LazyLock<Mutex<HashMap<PathBuf, Weak<Bus>>>> = LazyLock::new(|| Mutex::new(HashMap::new()));

impl Bus {
    /// The bus of `path`, shared with every other live poll on it.
    fn get(path: &std::path::Path, serial: SerialParams) -> Arc<Self> {
        // Two names of one port (a udev symlink and /dev/ttyUSB0) are one bus.
        let key = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned());
        let mut buses = BUSES.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        buses.retain(|_, b| b.strong_count() > 0);
        if let Some(bus) = buses.get(&key).and_then(Weak::upgrade) {
            if bus.serial != serial {
                tracing::warn!(
                    device = %path.display(),
                    "Serial settings differ between targets on one bus; using the first target's."
                );
            }
            return bus;
        }
        let bus = Arc::new(Self {
            path: path.to_owned(),
            serial,
            state: tokio::sync::Mutex::new(BusState {
                ctx: None,
                rx: Arc::new(AtomicUsize::new(0)),
                quiet_since: None,
            }),
        });
        buses.insert(key, Arc::downgrade(&bus));
        bus
    }

    /// Silence between frames: 3.5 character times of 11 bits, 1.75 ms above 19200 baud
    /// (Modbus over serial line V1.02 §2.5.1.1), unless the target says otherwise.
    fn frame_gap(&self) -> Duration {
        self.serial.frame_gap.unwrap_or_else(|| {
            if self.serial.baud > 19_200 {
                Duration::from_micros(1750)
            } else {
                Duration::from_micros(38_500_000 / u64::from(self.serial.baud.max(1)))
            }
        })
    }

    /// One exchange on the bus; the lock is held for this request only, so units take turns.
    async fn exchange(&self, block: &Block, unit: u8, to: Duration) -> Result<Vec<u16>, ExchangeError> {
        let mut st = self.state.lock().await;
        if st.ctx.is_none() {
            let rx = Arc::clone(&st.rx);
            st.ctx = Some(self.open(rx)?);
            st.quiet_since = Some(Instant::now());
        }
        if let Some(q) = st.quiet_since {
            tokio::time::sleep_until(q + self.frame_gap()).await;
        }
        let endpoint = self.path.display().to_string();
        st.rx.store(0, Ordering::Relaxed);
        let rx = Arc::clone(&st.rx);
        let ctx = st.ctx.as_mut().expect("invariant: opened just above");
        let r = exchange(ctx, block, unit, to, &endpoint, Some(&rx)).await;
        st.quiet_since = Some(Instant::now());
        if r.as_ref().is_err_and(|e| e.drop_context) {
            // Close the port: a late answer must not be taken for the next unit's reply.
            st.ctx = None;
        }
        r
    }

    fn open(&self, rx: Arc<AtomicUsize>) -> Result<Context, DriverError> {
        use tokio_serial::{DataBits, Parity as P, StopBits};
        let s = &self.serial;
        let builder = tokio_serial::new(self.path.to_string_lossy(), s.baud)
            .data_bits(if s.data_bits == 7 {
                DataBits::Seven
            } else {
                DataBits::Eight
            })
            .stop_bits(if s.stop_bits == 2 {
                StopBits::Two
            } else {
                StopBits::One
            })
            .parity(match s.parity {
                Parity::None => P::None,
                Parity::Even => P::Even,
                Parity::Odd => P::Odd,
            });
        let port = tokio_serial::SerialStream::open(&builder).map_err(|e| DriverError::Connect {
            endpoint: self.path.display().to_string(),
            detail: e.to_string(),
        })?;
        // Whatever the line delivered while the port was closed (a late answer to a request
        // that timed out) must not be read as the next answer.
        let _ = tokio_serial::SerialPort::clear(&port, tokio_serial::ClearBuffer::Input);
        Ok(tokio_modbus::client::rtu::attach(Counting { inner: port, rx }))
    }
}

/// A transport that counts the bytes it reads (see the RTU timeout in [`exchange`]).
struct Counting<T> {
    inner: T,
    rx: Arc<AtomicUsize>,
}

impl<T: AsyncRead + Unpin> AsyncRead for Counting<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len().saturating_sub(before);
        self.rx.fetch_add(n, Ordering::Relaxed);
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Counting<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_gap_follows_the_serial_line_spec() {
        let bus = |baud, gap| Bus {
            path: "/dev/null".into(),
            serial: SerialParams {
                baud,
                frame_gap: gap,
                ..SerialParams::default()
            },
            state: tokio::sync::Mutex::new(BusState {
                ctx: None,
                rx: Arc::new(AtomicUsize::new(0)),
                quiet_since: None,
            }),
        };
        // 9600 baud: 11 bits per character, 3.5 characters = 4.01 ms.
        assert_eq!(bus(9600, None).frame_gap(), Duration::from_micros(4010));
        assert_eq!(bus(115_200, None).frame_gap(), Duration::from_micros(1750));
        assert_eq!(
            bus(9600, Some(Duration::from_millis(9))).frame_gap(),
            Duration::from_millis(9)
        );
    }

    #[test]
    fn exception_text_names_code_and_meaning() {
        assert_eq!(
            exception_text(ExceptionCode::IllegalDataAddress),
            "exception 2 (illegal data address)"
        );
        assert_eq!(
            exception_text(ExceptionCode::ServerDeviceBusy),
            "exception 6 (server device busy)"
        );
    }

    #[test]
    fn targets_on_one_path_share_one_bus() {
        let a = Bus::get(std::path::Path::new("/dev/ttyGT-test-a"), SerialParams::default());
        let b = Bus::get(std::path::Path::new("/dev/ttyGT-test-a"), SerialParams::default());
        let c = Bus::get(std::path::Path::new("/dev/ttyGT-test-c"), SerialParams::default());
        assert!(Arc::ptr_eq(&a, &b));
        assert!(!Arc::ptr_eq(&a, &c));
        // A symlink to a port is the same bus.
        let dir = tempfile::tempdir().unwrap();
        let (real, link) = (dir.path().join("ttyREAL"), dir.path().join("ttyLINK"));
        std::fs::write(&real, b"").unwrap();
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let x = Bus::get(&real, SerialParams::default());
        let y = Bus::get(&link, SerialParams::default());
        assert!(Arc::ptr_eq(&x, &y));
        assert_eq!(y.path, real, "the first target's name is kept for reports");
    }
}
