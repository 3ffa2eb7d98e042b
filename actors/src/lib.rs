//! The CPM actor graph.
//!
//! ```text
//! SipIngress (one per arbiter, in the cpm crate)
//!     │ Register / DeliverPager
//!     ▼
//! ParticipatingFunction (one per CPM user, activated on demand)
//!     │ Fork
//!     ▼
//! ClientRegistration (one per registered device while its PF is active)
//!     │ Outbound::send_request
//!     ▼
//! SIP transaction layer (cpm crate)
//! ```
//!
//! Actors hold no sockets: everything that leaves the process goes through the
//! [`Outbound`] seam, so routing logic is testable without a network.

mod answer;
mod aor;
pub mod cf;
mod device;
mod directory;
mod env;
pub mod gruu;
pub mod inspect;
pub mod interworking;
pub mod originating;
pub mod originator;
mod outbound;
pub mod pf;
mod policy;
pub mod preferences;
pub mod trace;

/// Messages an actor's mailbox holds. `Addr::send` waits while it is full
/// (backpressure up to the ingress, whose server transaction cap answers
/// 503); the few fire-and-forget notes use `try_send` first. So no mailbox
/// grows without bound (docs/overload.md).
pub const MAILBOX_CAPACITY: usize = 256;

pub use aor::{Aor, LocalDomains};
pub use cf::{ControllingFunction, GroupMessage, GroupOutcome, GroupReport, ReportsDue, ResumeFanOut};
pub use device::ClientRegistration;
pub use directory::{Directory, DirectoryError};
pub use env::Env;
pub use interworking::{InterworkingFunction, SpoolInterworking};
pub use originator::{OriginatorPolicy, Refusal, Release};
pub use outbound::{Outbound, OutboundError, Target, TransportKind};
pub use pf::{
    Binding, ClaimReport, ContactSpec, DeferredActions, DeferredActionsOutcome, DeliverPager, DeliveryOutcome,
    ExpireDeferred, GetBindings, NoteOrigin, ParticipatingFunction, PurgeExpired, QueryDevices, QueryOutcome, Register,
    RegisterError, RegisterOutcome, RegisterRequest, RequestedContacts,
};
pub use policy::{DeferredPolicy, Policy, SharedPolicy, SharedUsers, Users};
pub use preferences::{DeferredMode, ExpiryAction, Preferences, Unavailable};
pub use trace::{TraceEvent, Tracer};

/// Seconds since the Unix epoch (bindings persist absolute expiry times).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
