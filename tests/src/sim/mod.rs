//! The fleet simulator (issue #12, RELIABILITY.md "DeviceFleet"): many virtual devices on
//! loopback, multiplexed on few sockets, each with its own misbehaviour, for the scale tests in
//! `tests/it/scale.rs` and the benchmarks in `bench/`.
//!
//! * [`snmp::SnmpFleet`]: SNMP v2c agents (one community per device) replaying `.snmprec`
//!   recordings ([`snmprec::Recording`]) with live counters.
//! * [`modbus::ModbusFleet`]: Modbus TCP devices (one unit id per device on a shared listener)
//!   serving values for a register map from `agent/profiles/modbus/`.
//! * [`redfish::RedfishFleet`]: Redfish services (one HTTPS listener per BMC, a CA made for the
//!   run) serving a fixture tree from `tests/fixtures/redfish/` with per-service serials, MACs
//!   and live power readings.

pub mod modbus;
pub mod redfish;
pub mod snmp;
pub mod snmprec;

use std::time::Duration;

/// How a simulated device treats a request. The first seven apply to every protocol; the last
/// three are HTTP misbehaviours, for the Redfish simulator only (the SNMP and Modbus simulators
/// answer normally under them). What each means for Redfish is tabled in [`redfish`].
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
    /// Answers every request with 1–600 pseudo-random bytes (a broken firmware or a different
    /// service on the port): a parser must reject it cleanly, never panic or forward a value.
    Garbage,
    /// Dribbles the answer a few bytes at a time (4 bytes every 250 ms) for as long as the
    /// client waits: a slowloris server holding the client's connection and its poll slot.
    /// Redfish only.
    Slowloris,
    /// Answers `200 OK` with an endless chunked body that starts like a JSON document (a
    /// runaway BMC web server): the client must cap what it reads. Redfish only.
    HugeBody,
    /// Answers every request with this HTTP status and a Redfish error body (503: the web
    /// server is up, the Redfish service behind it is not). Redfish only.
    HttpStatus(u16),
}

/// `n` pseudo-random bytes from an xorshift state (deterministic per socket, no `rand` needed).
#[must_use]
pub fn garbage(state: &mut u64, n: usize) -> Vec<u8> {
    (0..n)
        .map(|_| {
            *state ^= *state << 13;
            *state ^= *state >> 7;
            *state ^= *state << 17;
            (*state >> 24) as u8
        })
        .collect()
}

/// This process's resident set size in KiB (`VmRSS` of /proc/self/status), if readable.
#[must_use]
pub fn rss_kib() -> Option<u64> {
    crate::proc::rss_kib_of("self")
}

/// This process's CPU time (user + system) so far, from /proc/self/stat (clock ticks of 10 ms).
#[must_use]
pub fn cpu_time() -> Option<Duration> {
    crate::proc::cpu_time_of("self")
}
