//! The notify function: delivers each stemvault event (EventBridge, source `stemvault`, through
//! a rule and the notify queue) as a signed webhook, the Standard Webhooks way, to
//! `NOTIFY_URL`.
//!
//! * [`config`]: the environment it reads ([`config::ENVIRONMENT`]) and the checks on
//!   `NOTIFY_URL` (https, or http to a loopback host only).
//! * [`secret`]: the signing secret (`whsec_<base64>`), read from Secrets Manager at start-up
//!   and again once the signer in force is 5 minutes old ([`secret::Signers`]).
//! * [`app`]: the SQS batch handler (concurrency, panic isolation, partial batch response).
//! * [`domain`]: one message: the event, the payload, the signature, the POST, the outcome
//!   (a 410 Gone moves the message to the dead-letter queue) and the retry delay, over small
//!   traits.
//! * [`poster`]: the HTTP client that posts the webhooks ([`poster::HttpPoster`]).
//! * [`aws`]: the adapters ([`aws::AwsPorts`]: SQS, metrics, the poster) and the AWS actions
//!   they call ([`aws::AWS_ACTIONS`]).
//! * [`error`]: what can fail, and whether a retry may help.

pub mod app;
pub mod aws;
pub mod config;
pub mod domain;
pub mod error;
pub mod poster;
pub mod secret;

#[cfg(test)]
mod memory;

pub use app::App;
pub use config::Config;

/// The function's logical name: what its start-up names it by, and the `Function` dimension
/// of its metrics outside Lambda (in Lambda, its deployed name:
/// [`stemvault_aws::metrics::function_name`]).
pub const LOGICAL_NAME: &str = "notify";
