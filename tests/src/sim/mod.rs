//! The fleet simulator (issue #12, RELIABILITY.md "DeviceFleet"): many virtual devices on
//! loopback, multiplexed on few sockets, each with its own misbehaviour, for the scale tests in
//! `tests/it/scale.rs` and the benchmarks in `bench/`.
//!
//! * [`snmp::SnmpFleet`]: SNMP v2c agents (one community per device) replaying `.snmprec`
//!   recordings ([`snmprec::Recording`]) with live counters.
//! * [`modbus::ModbusFleet`]: Modbus TCP devices (one unit id per device on a shared listener)
//!   serving values for a register map from `agent/profiles/modbus/`.

pub mod modbus;
pub mod snmp;
pub mod snmprec;

use std::time::Duration;

/// How a simulated device treats a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Behaviour {
    /// Answers at once.
    Normal,
    /// Never answers (a dead or unreachable device).
    BlackHole,
    /// Answers after this delay.
    Latency(Duration),
    /// Drops this many requests in 1000 (pseudo-random, per socket).
    Lossy { permille: u16 },
    /// Answers with the first half of the datagram / frame.
    Truncate,
    /// Answers with the request id (transaction id) plus one.
    WrongRequestId,
}

/// This process's resident set size in KiB (`VmRSS` of /proc/self/status), if readable.
#[must_use]
pub fn rss_kib() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// This process's CPU time (user + system) so far, from /proc/self/stat (clock ticks of 10 ms).
#[must_use]
pub fn cpu_time() -> Option<Duration> {
    let s = std::fs::read_to_string("/proc/self/stat").ok()?;
    let after = s.rsplit_once(')')?.1;
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}
