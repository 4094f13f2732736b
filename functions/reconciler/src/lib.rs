//! The reconciler function: on a schedule, replay the callbacks ingest parked (see
//! [`replay`]), and poll the provider for the tasks whose callback is missing and ingest what
//! it says exactly as a callback would (see [`domain`]).

pub mod app;
pub mod aws;
pub mod config;
pub mod domain;
pub mod error;
pub mod provider;
pub mod redact;
pub mod replay;
pub mod request_spacing;
pub mod schedule;

pub use app::App;
pub use config::Config;

/// The function's logical name: what its start-up names it by, and the `Function` dimension
/// of its metrics outside Lambda (in Lambda, its deployed name:
/// [`stemvault_aws::metrics::function_name`]).
pub const LOGICAL_NAME: &str = "reconciler";
