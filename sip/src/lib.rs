//! SIP wire format for cpm.
//!
//! rsip tokenizes header lines; everything rsip cannot type (URIs with IPv6
//! references or odd user parts, feature-tag parameters, compact header
//! names, folded lines) is handled here so the rest
//! of the server sees one small facade ([`Message`]) and never touches rsip.
//! Serialization is ours too: rsip's writer turns bodies into lossy UTF-8.

pub mod caps;
pub mod cpim;
mod decimal;
pub use decimal::{decimal, decimal_bytes};
mod error;
mod headers;
pub mod imdn;
mod message;
mod method;
pub mod params;
mod response;
mod text;
mod uri;
mod via;

#[cfg(test)]
mod torture_tests;

/// Header values ([`Header::value`]) are `ByteString`s: re-exported so
/// callers need no dependency of their own.
pub use bytestring::ByteString;
pub use error::ParseError;
pub use headers::{canonical_name, Header, HeaderName, Headers};
pub use message::{Message, StartLine, MAX_HEADERS, MAX_HEADER_LEN};
pub use method::Method;
pub use response::{reason_phrase, ResponseBuilder};
pub use uri::{SipUri, UriError};
pub use via::{Via, BRANCH_COOKIE};
