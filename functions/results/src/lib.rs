//! The results function: `GET /tasks/<task_id>` answers what the vault holds for a task, with
//! presigned S3 links for the files that are stored; `PUT /tasks/<task_id>` registers a task
//! for polling before its callback comes.

pub mod app;
pub mod aws;
pub mod config;
pub mod domain;
pub mod error;

pub use app::App;
pub use config::Config;

/// The function's logical name: what its start-up names it by.
pub const LOGICAL_NAME: &str = "results";
