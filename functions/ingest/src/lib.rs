//! The ingest function: `POST /callback[/<token>]` authenticates a Suno API callback,
//! records it in the task table, archives its body in the vault bucket and queues one
//! download job per file.

pub mod app;
pub mod auth;
pub mod aws;
pub mod config;
pub mod credentials;
pub mod domain;
pub mod error;
#[cfg(any(test, feature = "test-support"))]
pub mod memory;
pub mod secret;

pub use app::App;
pub use config::Config;

/// The function's logical name: what its start-up names it by, and the `Function` dimension
/// of its metrics outside Lambda (in Lambda, its deployed name:
/// [`stemvault_aws::metrics::function_name`]).
pub const LOGICAL_NAME: &str = "ingest";
