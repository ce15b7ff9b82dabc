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
    /// The stored state does not allow it (the sender is not a member of the channel, the
    /// channel is archived); the string says why.
    #[error("forbidden: {0}")]
    Forbidden(&'static str),
    /// The storage cannot take the write now: its disk is full, or its file system is
    /// read-only or failing. Nothing of the failed write was kept, and the same write may
    /// succeed once the operator has fixed the cause; reads may still work.
    #[error("storage unavailable ({outage}): {source}")]
    Unavailable {
        outage: Outage,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The backend failed (I/O, connection, corruption); details are in the source.
    #[error("storage backend failed: {0}")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// Stored data could not be read back into the domain model.
    #[error("stored data is invalid: {0}")]
    Corrupt(String),
}

/// Why the storage cannot take writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outage {
    /// No space left (or the quota is used up).
    Full,
    /// The file system is read-only (remounted so by the operator, or by the kernel after
    /// an error).
    ReadOnly,
    /// Reading or writing failed (an I/O error from the disk).
    Failing,
}

impl Outage {
    /// The outage an I/O error means, if it means one (not for, say, a missing file).
    pub fn of_io(err: &std::io::Error) -> Option<Self> {
        use std::io::ErrorKind;
        /// `EIO` on Linux and the BSDs.
        const EIO: i32 = 5;
        match err.kind() {
            ErrorKind::StorageFull | ErrorKind::QuotaExceeded => Some(Self::Full),
            ErrorKind::ReadOnlyFilesystem => Some(Self::ReadOnly),
            _ if err.raw_os_error() == Some(EIO) => Some(Self::Failing),
            _ => None,
        }
    }
}

impl std::fmt::Display for Outage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Full => "disk full",
            Self::ReadOnly => "read-only file system",
            Self::Failing => "I/O error",
        })
    }
}

impl StoreError {
    pub fn backend(err: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::Backend(Box::new(err))
    }

    pub fn unavailable(
        outage: Outage,
        err: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Self::Unavailable {
            outage,
            source: Box::new(err),
        }
    }

    /// An I/O error: [`StoreError::Unavailable`] when it is one of the outages, else
    /// [`StoreError::Backend`].
    pub fn io(err: std::io::Error) -> Self {
        match Outage::of_io(&err) {
            Some(outage) => Self::unavailable(outage, err),
            None => Self::backend(err),
        }
    }

    /// The same error, for one more waiter on a shared write (its source as text), keeping
    /// what the services act on: the variant, the outage, the conflict.
    pub fn for_another(&self) -> Self {
        match self {
            Self::Conflict(what) => Self::Conflict(what),
            Self::Invalid(why) => Self::Invalid(why),
            Self::Forbidden(why) => Self::Forbidden(why),
            Self::Unavailable { outage, source } => {
                Self::unavailable(*outage, std::io::Error::other(source.to_string()))
            }
            Self::Backend(source) => Self::backend(std::io::Error::other(source.to_string())),
            Self::Corrupt(what) => Self::Corrupt(what.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(target_os = "linux")]
    fn io_errors_that_are_outages_are_told_apart_from_the_rest() {
        let of = |raw| Outage::of_io(&std::io::Error::from_raw_os_error(raw));
        // ENOSPC, EDQUOT, EROFS, EIO on Linux.
        assert_eq!(of(28), Some(Outage::Full));
        assert_eq!(of(122), Some(Outage::Full));
        assert_eq!(of(30), Some(Outage::ReadOnly));
        assert_eq!(of(5), Some(Outage::Failing));
        // ENOENT, EACCES: a bug or a setup problem, not an outage to wait out.
        assert_eq!(of(2), None);
        assert_eq!(of(13), None);
        let err = StoreError::io(std::io::Error::from_raw_os_error(28));
        assert!(matches!(
            err.for_another(),
            StoreError::Unavailable {
                outage: Outage::Full,
                ..
            }
        ));
    }
}
