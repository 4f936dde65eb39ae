//! groundtruth agent: polls rack hardware (SNMP, Modbus, Redfish, IPMI) for identity, power and
//! location evidence, and streams it to the collector.
//!
//! Map of the crate: [`target`] parses target URLs; [`driver`] holds one module per protocol;
//! [`config`] reads and validates the TOML config; [`spool`] keeps every batch on disk until the collector acknowledges it; [`uplink`] delivers
//! batches to the collector;
//! [`run`] ties them together for the `run` command.

pub mod config;
pub mod driver;
pub mod io;
pub mod run;
pub mod secret;
pub mod spool;
pub mod target;
pub mod uplink;

/// Installs the process-wide rustls crypto provider (ring). Call once at start-up, before any TLS
/// client is built; calling it again is harmless.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
