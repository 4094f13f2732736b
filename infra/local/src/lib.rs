//! The local runner behind `make run` and `make demo`: the same ingest, results and download
//! handlers that run in Lambda (`stemvault_*::App`), wired to a small HTTP server on
//! 127.0.0.1 and to SQS pollers, against the AWS emulator that `infra/local/emulator.sh` starts.

pub mod audio;
pub mod banner;
pub mod client_auth;
pub mod demo;
pub mod events;
pub mod file_server;
pub mod http;
pub mod notify;
pub mod pipeline;
pub mod poller;
pub mod reconcile;
pub mod run_info;
pub mod settings;
pub mod shutdown;

use std::path::PathBuf;

/// The repository root: the nearest directory at or above the working directory that holds
/// `infra/local/emulator.sh` (make runs the runner from the root), else the clone the binary
/// was built from. Found at run time because the build directory is shared between clones, so
/// the binary may have been built from another one.
pub fn repo_root() -> PathBuf {
    let from_cwd = std::env::current_dir()
        .ok()
        .and_then(|cwd| cwd.ancestors().find(|dir| dir.join("infra/local/emulator.sh").is_file()).map(PathBuf::from));
    from_cwd.unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.."))
}
