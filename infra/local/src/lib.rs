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
pub mod scheduled;
pub mod settings;
pub mod shutdown;

use std::path::{Path, PathBuf};

/// The repository root: the nearest directory at or above the working directory that holds
/// `infra/local/emulator.sh` (make runs the runner from the root); None outside a clone.
/// Found at run time, never from the clone the binary was built from: the build directory may
/// be shared between clones, so that could be another one, whose `.local` this run would then
/// write.
pub fn repo_root() -> Option<PathBuf> {
    repo_root_from(&std::env::current_dir().ok()?)
}

/// [`repo_root`] seen from `dir`.
fn repo_root_from(dir: &Path) -> Option<PathBuf> {
    dir.ancestors().find(|dir| dir.join("infra/local/emulator.sh").is_file()).map(PathBuf::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_root_is_the_nearest_clone_at_or_above_and_none_outside_one() {
        let scratch = tempfile::tempdir().unwrap();
        let outside = scratch.path().to_owned();
        let clone = outside.join("clone");
        std::fs::create_dir_all(clone.join("infra/local")).unwrap();
        std::fs::create_dir_all(clone.join("functions/ingest")).unwrap();
        std::fs::write(clone.join("infra/local/emulator.sh"), "").unwrap();
        assert_eq!(repo_root_from(&clone.join("functions/ingest")), Some(clone.clone()));
        assert_eq!(repo_root_from(&clone), Some(clone.clone()));
        assert_eq!(repo_root_from(&outside), None);
    }
}
