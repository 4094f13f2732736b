//! Why a task cannot be shown, and whether asking again can help.

use stemvault_vault::{StorageError, StoreError};

/// What presigning a download link is called in a [`StorageError`]: it fails for want of
/// credentials (or an expiry S3 cannot sign), which asking again later may mend.
pub const PRESIGN: &str = "presign GetObject";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResultsError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Presign(#[from] StorageError),
}

impl ResultsError {
    /// Whether the same request can succeed later (503) or not (500). A write the table
    /// refuses as invalid is this build's fault ([`ResultsError::is_build_fault`]): a deploy
    /// mends it, and a registration asked again then succeeds (ingest answers it so too).
    pub fn caller_may_retry(&self) -> bool {
        match self {
            ResultsError::Store(e) => e.caller_may_retry(),
            ResultsError::Presign(e) => e.is_retryable(),
        }
    }

    /// [`StoreError::is_build_fault`]: an operator's matter, though the caller may ask again.
    pub fn is_build_fault(&self) -> bool {
        matches!(self, ResultsError::Store(e) if e.is_build_fault())
    }
}
