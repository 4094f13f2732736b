//! Why a task cannot be shown, and whether asking again can help.

use stemvault_vault::StoreError;

/// Signing failed (usually: no credentials could be loaded); asking again later may work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot presign a download link: {0}")]
pub struct PresignError(pub String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResultsError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Presign(#[from] PresignError),
}

impl ResultsError {
    /// Whether the same request can succeed later (503) or not (500).
    pub fn is_retryable(&self) -> bool {
        match self {
            ResultsError::Store(e) => e.is_retryable(),
            ResultsError::Presign(_) => true,
        }
    }
}
