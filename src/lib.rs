//! cpm: an OMA CPM (Converged IP Messaging) server.
//!
//! This crate is the SIP edge and the wiring: transports, the RFC 3261
//! transaction layer, the ingress actors, configuration and the `cpm`
//! binary. The actor graph lives in `cpm-actors`, durable state in
//! `cpm-store`, the wire format in `cpm-sip`.

pub mod admin;
pub mod allocator;
pub mod auth;
pub mod config;
pub mod ingress;
pub mod limits;
pub mod memory;
pub mod server;
pub mod simulate;
pub mod transaction;
pub mod transport;
pub mod workers;

/// Lock a mutex that guards plain data updated in single steps: a panic
/// elsewhere cannot leave it half-changed, so a poisoned one is used as is
/// (skipping the work instead would, e.g., lose a transaction's timers).
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
