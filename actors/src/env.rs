//! What every actor shares: store, outbound seam, policy, domains.

use std::sync::Arc;

use cpm_store::Store;

use crate::{InterworkingFunction, LocalDomains, Outbound, Policy, Users};

#[derive(Clone)]
pub struct Env {
    pub store: Store,
    pub outbound: Arc<dyn Outbound>,
    pub policy: Arc<Policy>,
    pub users: Arc<Users>,
    pub domains: Arc<LocalDomains>,
    pub interworking: Arc<dyn InterworkingFunction>,
}
