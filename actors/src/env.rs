//! What every actor shares: store, outbound seam, policy, domains.

use std::sync::Arc;

use cpm_store::Store;

use crate::cf::Groups;
use crate::gruu::TempGruus;
use crate::{InterworkingFunction, LocalDomains, Outbound, SharedPolicy, SharedUsers, Tracer};

#[derive(Clone)]
pub struct Env {
    pub store: Store,
    pub outbound: Arc<dyn Outbound>,
    pub policy: Arc<SharedPolicy>,
    /// Provisioned users and preferences; the admin API changes them at run time.
    pub users: Arc<SharedUsers>,
    pub domains: Arc<LocalDomains>,
    pub interworking: Arc<dyn InterworkingFunction>,
    pub groups: Arc<Groups>,
    /// Message trace and event counters (admin inspector, /metrics).
    pub tracer: Arc<Tracer>,
    /// Mints and opens temporary GRUUs (sealed with the store's secret).
    pub temp_gruus: Arc<TempGruus>,
}
