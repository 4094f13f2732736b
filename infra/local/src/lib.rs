//! The local runner behind `make run` and `make demo`: the same ingest, results and download
//! handlers that run in Lambda (`stemvault_*::App`), wired to a small HTTP server on
//! 127.0.0.1 and to SQS pollers, against the AWS emulator that `infra/local/emulator.sh` starts.

pub mod audio;
pub mod banner;
pub mod client_auth;
pub mod demo;
pub mod file_server;
pub mod http;
pub mod pipeline;
pub mod poller;
pub mod run_info;
pub mod settings;
pub mod shutdown;

use std::path::PathBuf;

/// The repository root (the runner is a development tool built from the clone).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}
