//! groundtruth collector: ingests agents' batches, keeps the state store, works out where each
//! device is, and syncs the CMDB.
//!
//! Map of the crate: [`ingest`] (gRPC service) → [`store`] (SQLite) → [`reconcile`] (location
//! and fitness to write, with [`normalize`]) → [`cmdb`] (NetBox), orchestrated by [`sync`] and
//! configured by [`config`]; [`power`] rolls measured power up to racks and rooms for dashboards.

pub mod cmdb;
pub mod config;
pub mod context;
#[doc(hidden)]
pub mod fuzz;
pub mod http;
pub mod ingest;
pub mod itsm;
pub mod kpi;
pub mod lease;
pub mod locate;
pub mod normalize;
pub mod power;
pub mod reconcile;
pub mod sitemap;
pub mod store;
pub mod sync;
pub mod web;

/// Installs the process-wide rustls crypto provider (ring); harmless if called twice.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Builds the NetBox client from validated settings.
///
/// # Errors
/// If the HTTP client cannot be built (e.g. unreadable CA file).
pub fn netbox_client(s: &config::NetBoxSettings) -> Result<cmdb::netbox::NetBox, cmdb::CmdbError> {
    cmdb::netbox::NetBox::new(cmdb::netbox::NetBoxConfig {
        url: s.url.clone(),
        token: s.token.clone(),
        device_role: s.device_role.clone(),
        create_missing: s.create_missing,
        rack_height: 42,
        timeout: std::time::Duration::from_secs(30),
        tls_verify: s.tls_verify,
        ca_file: s.ca_file.clone(),
        ownership: s.ownership.clone(),
        rate_limit: s.rate_limit,
        journal: s.journal,
    })
}
