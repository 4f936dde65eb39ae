//! groundtruth agent: polls rack hardware (SNMP, Modbus, Redfish, IPMI) for identity, power and
//! location evidence, and streams it to the collector.
//!
//! Map of the crate: [`target`] parses target URLs; [`driver`] holds one module per protocol;
//! [`config`] reads and validates the TOML config; [`spool`] keeps every batch on disk until the collector acknowledges it; [`uplink`] delivers
//! batches to the collector;
//! [`run`] ties them together for the `run` command.

pub mod config;
pub mod discover;
pub mod driver;
#[doc(hidden)]
pub mod fuzz;
pub mod io;
pub mod metrics;
pub mod run;
pub mod schedule;
pub mod secret;
pub mod spool;
pub mod target;
pub mod uplink;

/// Installs the process-wide rustls crypto provider (ring) unless one is installed already.
/// The binaries call it at start-up; the Redfish driver calls it before building a client, so a
/// library user who forgot cannot make reqwest panic.
pub fn install_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}
