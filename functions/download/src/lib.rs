//! The download function: copies each queued file from its expiring URL into the vault
//! bucket, streaming with bounded memory, and records the outcome in the task record.
//!
//! * [`config`]: the environment it reads ([`config::ENVIRONMENT`]).
//! * [`app`]: the SQS batch handler (concurrency, spans, panic isolation, partial batch
//!   response).
//! * [`domain`]: one message from claim to manifest, over small traits.
//! * [`source`] and [`source_policy`]: which URLs may be fetched and how; [`fresh_link`]: a
//!   fresh link for an expired file (kie's `common/download-url`).
//! * [`upload`]: single or multipart streaming upload with SHA-256; [`media`]: whether an
//!   answer can be the file at all.
//! * [`existing`]: recognising a complete copy an earlier attempt stored but did not record.
//! * [`aws`]: the SDK adapters ([`aws::AwsPorts`]) and the AWS actions they call
//!   ([`aws::AWS_ACTIONS`]).
//! * [`error`]: what can fail, and whether a retry may help.

pub mod address;
pub mod app;
pub mod aws;
pub mod config;
pub mod domain;
pub mod error;
pub mod existing;
pub mod fresh_link;
pub mod media;
pub mod pace;
pub mod source;
pub mod source_policy;
pub mod upload;

#[cfg(test)]
mod memory;

pub use app::App;
pub use config::Config;

/// The function's logical name: what its start-up names it by, and the `Function` dimension
/// of its metrics outside Lambda (in Lambda, its deployed name:
/// [`stemvault_aws::metrics::function_name`]).
pub const LOGICAL_NAME: &str = "download";
