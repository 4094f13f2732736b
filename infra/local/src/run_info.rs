//! `.local/run.json`: what a running `make run` tells `make demo` (port, how to authenticate,
//! where the emulator is). The directory is ignored by git; the file holds a development key
//! only and is readable by its owner only.

use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::client_auth::ClientAuth;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunInfo {
    pub pid: u32,
    pub port: u16,
    /// `http://127.0.0.1:<port>`.
    pub base_url: String,
    /// The demo file server origin the downloader accepts.
    pub file_server_origin: String,
    pub auth: ClientAuth,
    pub aws_endpoint_url: Option<String>,
    pub aws_region: Option<String>,
    pub table_name: String,
    pub bucket_name: String,
    pub queue_url: String,
    /// The built-in fake provider the reconciler polls (`make demo` registers a task there).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fake_provider: Option<String>,
    /// The event bus the functions publish to (`make demo` subscribes to it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_bus_name: Option<String>,
}

/// Where a runner started from this clone writes its [`RunInfo`].
pub fn default_path() -> PathBuf {
    crate::repo_root().join(".local").join("run.json")
}

pub fn write(info: &RunInfo, path: &Path) -> io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let json = serde_json::to_vec_pretty(info).map_err(io::Error::other)?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    io::Write::write_all(&mut options.open(path)?, &json)
}

/// The info at `path`, if present and readable.
pub fn read(path: &Path) -> Option<RunInfo> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

/// Remove the file if it is still this process's.
pub fn remove_own(path: &Path) {
    if read(path).is_some_and(|info| info.pid == std::process::id()) {
        let _ = std::fs::remove_file(path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(pid: u32) -> RunInfo {
        RunInfo {
            pid,
            port: 3000,
            base_url: "http://127.0.0.1:3000".into(),
            file_server_origin: "http://127.0.0.1:3001".into(),
            auth: ClientAuth { hmac_key: Some("k".into()), callback_token: None },
            aws_endpoint_url: Some("http://127.0.0.1:5000".into()),
            aws_region: Some("us-east-1".into()),
            table_name: "t".into(),
            bucket_name: "b".into(),
            queue_url: "q".into(),
            fake_provider: Some("http://127.0.0.1:3002".into()),
            event_bus_name: Some("stemvault-local-events".into()),
        }
    }

    #[test]
    fn round_trips_and_removes_only_its_own() {
        let dir = std::env::temp_dir().join(format!("stemvault-run-info-{}", uuid::Uuid::new_v4().simple()));
        let path = dir.join("run.json");
        write(&info(1), &path).unwrap();
        assert_eq!(read(&path), Some(info(1)));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
        remove_own(&path);
        assert!(path.exists(), "another process's file stays");
        write(&info(std::process::id()), &path).unwrap();
        remove_own(&path);
        assert!(!path.exists());
        assert_eq!(read(&path), None);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
