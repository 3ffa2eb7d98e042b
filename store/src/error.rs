//! Error type of the store.

/// Everything that can go wrong reading or writing durable state.
///
/// Disk contents are never trusted: anything that does not parse surfaces as
/// [`StoreError::Decode`] or [`StoreError::Corrupt`] instead of a panic, so a
/// damaged record degrades one request rather than the whole server.
#[derive(thiserror::Error, Debug)]
pub enum StoreError {
    #[error("storage error: {0}")]
    Sled(#[from] sled::Error),
    #[error("failed to encode record: {0}")]
    Encode(#[from] bincode::error::EncodeError),
    #[error("failed to decode stored record: {0}")]
    Decode(#[from] bincode::error::DecodeError),
    #[error("corrupt store: {0}")]
    Corrupt(String),
    /// Written by a newer release; opening it could silently misread or
    /// rewrite records in a layout this build does not understand.
    #[error("store format {found} is not supported (this build understands format {supported})")]
    Format { found: u32, supported: u32 },
    /// Key layouts use NUL as the AOR terminator, so such an AOR would alias
    /// other AORs' keys.
    #[error("invalid AOR {0:?}: must be non-empty and must not contain NUL")]
    InvalidAor(String),
}

impl StoreError {
    /// Another handle (this process's just-dropped one, or another process)
    /// still holds the store's file lock; sled allows one process per store.
    pub fn is_locked(&self) -> bool {
        matches!(self, StoreError::Sled(sled::Error::Io(e)) if e.to_string().contains("could not acquire lock"))
    }
}
