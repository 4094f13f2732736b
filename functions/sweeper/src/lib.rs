//! The sweeper function: on a schedule, re-enqueue the files of open tasks that no ingest
//! request will ever send (see [`domain`]).

pub mod app;
pub mod aws;
pub mod config;
pub mod domain;
pub mod error;

pub use app::App;
pub use config::Config;

/// The function's logical name: what its start-up names it by, and the `Function` dimension
/// of its metrics outside Lambda (in Lambda, its deployed name:
/// [`stemvault_aws::metrics::function_name`]).
pub const LOGICAL_NAME: &str = "sweeper";
