//! cpm: an OMA CPM (Converged IP Messaging) server.
//!
//! This crate is the SIP edge and the wiring: transports, the RFC 3261
//! transaction layer, the ingress actors, configuration and the `cpm`
//! binary. The actor graph lives in `cpm-actors`, durable state in
//! `cpm-store`, the wire format in `cpm-sip`.

pub mod admin;
pub mod auth;
pub mod config;
pub mod ingress;
pub mod limits;
pub mod memory;
pub mod server;
pub mod simulate;
pub mod transaction;
pub mod transport;
