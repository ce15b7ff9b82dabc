//! What a store can fail with.

/// A storage failure, in terms the services can act on.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A uniqueness rule was broken; the string names what collided (e.g. `username`).
    #[error("conflict on {0}")]
    Conflict(&'static str),
    /// The request names something that does not fit (e.g. a thread root in another
    /// channel); the string says what.
    #[error("invalid: {0}")]
    Invalid(&'static str),
    /// The backend failed (I/O, connection, corruption); details are in the source.
    #[error("storage backend failed: {0}")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// Stored data could not be read back into the domain model.
    #[error("stored data is invalid: {0}")]
    Corrupt(String),
}

impl StoreError {
    pub fn backend(err: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::Backend(Box::new(err))
    }
}
