//! The integration suites: one binary, one module per protocol plus end-to-end. Every suite runs
//! against real third-party peers started by `tests/peers/start-all.sh`; a suite whose peer is
//! absent prints `SKIP:` and passes, unless `GT_REQUIRE_PEERS=1` (set by `tests/run.sh`).

// Tests read small responses from our own NetBox peer; the size-capped readers guard device input.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::disallowed_methods,
    unreachable_pub
)]

mod cli;
mod context;
mod e2e;
mod exceptions;
mod faults;
mod fuzz_replay;
mod ipmi;
mod itsm;
mod itsm_scenario;
mod leader;
mod locate;
mod merge;
mod modbus;
mod mqtt;
mod netbox;
mod outage;
mod power;
mod redfish;
mod scale;
mod scope;
mod snmp;
mod snmp_profiles;
mod snmp_v3;
mod store_pg;
mod sweep;
mod tls;
