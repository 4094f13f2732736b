//! The sweeper function: on a schedule, re-enqueue the files of open tasks that no ingest
//! request will ever send (see [`domain`]).

pub mod app;
pub mod aws;
pub mod config;
pub mod domain;
pub mod error;

pub use app::App;
pub use config::Config;
