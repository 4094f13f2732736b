//! The ingest use-case: record one valid callback, archive its body and queue its files.
//! It is [`stemvault_vault::accept`], which the reconciler runs too for a result it polled,
//! over the ports the AWS adapters ([`crate::aws`]) and the in-memory ones of the tests and
//! the benchmark implement; ingest adds the callback secret for the checks in front of it.

use std::time::Duration;

pub use stemvault_vault::accept::{ArchiveBody, Outcome, Settings};
use suno_callbacks::CallbackEvent;

use crate::credentials::ReadSecret;
use crate::error::IngestError;
// What the use-case's tests (domain/tests.rs, which moved here with it) name.
#[cfg(test)]
use {
    crate::error::StoreError,
    sha2::{Digest, Sha256},
    stemvault_vault::enqueue::{EnqueueFiles, MarkQueued, ReleaseClaims},
    stemvault_vault::{Clock, LoadTask, SaveTask},
};

/// Everything the function needs from outside: the use-case's ports
/// ([`stemvault_vault::accept::Ports`]: the task table, the archive, the claim-and-send ports
/// and the clock), and the callback secret for the checks in front of it
/// ([`crate::credentials`]).
pub trait Ports: stemvault_vault::accept::Ports + ReadSecret {}

impl<T> Ports for T where T: stemvault_vault::accept::Ports + ReadSecret {}

/// The IngestFunction's `Timeout` in template.yaml (tests/tests/ingest.rs checks they agree):
/// no request runs longer than this.
pub const LAMBDA_TIMEOUT: Duration = Duration::from_secs(12);

/// Record, archive and queue one valid callback within `settings.deadline`. `request_id`
/// names this request's claims ([`stemvault_vault::accept::accept`]).
pub async fn ingest<P: Ports>(
    ports: &P,
    settings: &Settings,
    event: &CallbackEvent,
    body: &[u8],
    request_id: &str,
) -> Result<Outcome, IngestError> {
    stemvault_vault::accept::accept(ports, settings, event, body, request_id).await
}

#[cfg(test)]
mod tests;
