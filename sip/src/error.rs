use thiserror::Error;

/// Why a datagram or stream frame is not a SIP message we can work with.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ParseError {
    #[error("empty message")]
    Empty,
    #[error("malformed start line or headers: {0}")]
    Syntax(String),
    #[error("header section is not UTF-8")]
    NotUtf8,
    #[error("too many headers (limit {0})")]
    TooManyHeaders(usize),
    #[error("header longer than {0} bytes")]
    HeaderTooLong(usize),
    #[error("missing mandatory header {0}")]
    Missing(&'static str),
    #[error("invalid {0} header")]
    Invalid(&'static str),
    #[error("Content-Length {declared} does not match body of {actual} bytes")]
    ContentLength { declared: usize, actual: usize },
}
