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

/// Resource names of `make run` (the emulator is fresh on every start).
pub const RESOURCE_BASE: &str = "stemvault-local";

/// A runner on `port` that no `.local/run.json` describes, as the environment `get` names
/// it. Refused unless the environment names its AWS (`AWS_ENDPOINT_URL`, a local emulator's:
/// never real AWS) and how to call it (a key, a token, or `ALLOW_UNAUTHENTICATED`): most often it is
/// another program on the port (3000 is a common one).
pub fn described_by_environment(
    get: &impl Fn(&str) -> Option<String>,
    port: u16,
    file_server_origin: String,
) -> Result<RunInfo, String> {
    let auth = ClientAuth::from_lookup(get);
    let aws_endpoint_url = crate::settings::non_empty(get, "AWS_ENDPOINT_URL")
        .filter(|url| stemvault_aws::provision::is_local_endpoint(url));
    if aws_endpoint_url.is_none() || (auth == ClientAuth::default() && !crate::settings::has_callback_auth(get)) {
        return Err(format!(
            "something answers on 127.0.0.1:{port} but .local/run.json does not describe it: if it is another \
             program, run with PORT set to a free port; if it is a stemvault runner, set AWS_ENDPOINT_URL to its \
             emulator and WEBHOOK_HMAC_KEYS or CALLBACK_TOKEN (or ALLOW_UNAUTHENTICATED=true) as it has them"
        ));
    }
    Ok(RunInfo {
        pid: 0,
        port,
        base_url: format!("http://127.0.0.1:{port}"),
        file_server_origin,
        auth,
        aws_endpoint_url,
        aws_region: get("AWS_REGION"),
        table_name: get("TABLE_NAME").unwrap_or_else(|| format!("{RESOURCE_BASE}-tasks")),
        bucket_name: get("BUCKET_NAME").unwrap_or_else(|| format!("{RESOURCE_BASE}-vault")),
        queue_url: get("QUEUE_URL").unwrap_or_default(),
        fake_provider: None,
        event_bus_name: Some(get("EVENT_BUS_NAME").unwrap_or_else(|| format!("{RESOURCE_BASE}-events"))),
    })
}

/// Where a runner started from this clone writes its [`RunInfo`]; an error outside a clone
/// (its development key is not written just anywhere).
pub fn default_path() -> Result<PathBuf, String> {
    let root = crate::repo_root().ok_or("run stemvault-local from the repository (make run, make demo)")?;
    Ok(root.join(".local").join("run.json"))
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

/// Whether the runner that wrote `info` still runs (signal 0 reaches its process): a runner killed
/// outright leaves its file behind.
pub fn runner_alive(info: &RunInfo) -> bool {
    process_alive(info.pid)
}

/// The runner `.local/run.json` describes, while it runs ([`runner_alive`]).
pub fn live_runner() -> Option<RunInfo> {
    read(&default_path().ok()?).filter(runner_alive)
}

/// Whether process `pid` runs: signal 0 (which sends nothing) finds it, or finds it under
/// another user (EPERM), on Linux and macOS alike. A number no process can have runs none.
fn process_alive(pid: u32) -> bool {
    let Some(pid) = libc::pid_t::try_from(pid).ok().filter(|pid| *pid > 0) else { return false };
    // SAFETY: kill(2) with signal 0 only checks that the process exists; it touches no memory.
    let sent = unsafe { libc::kill(pid, 0) } == 0;
    sent || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Where `make run` notes, before it builds, that a runner is on its way, with the process id
/// of the `make` it runs under (removed by the runner once it answers, or fails to start): a
/// `make demo` started meanwhile waits for it rather than starting a pipeline of its own on
/// the same port.
pub fn starting_path() -> Result<PathBuf, String> {
    Ok(default_path()?.with_file_name("run.starting"))
}

/// How long a `starting` note counts: a build and a start take minutes at most; an older note
/// is one a stopped build left.
const STARTING_FOR: std::time::Duration = std::time::Duration::from_secs(30 * 60);

/// Whether the note at `path` says a runner is starting: written under `STARTING_FOR` ago, by
/// a `make` still running (a note naming none counts by its age alone). A `make run` that
/// stopped before its runner could remove the note (the build or the emulator failed) no
/// longer counts.
pub fn runner_starting(path: &Path) -> bool {
    let fresh = written_at(path).is_some_and(|at| at.elapsed().is_ok_and(|age| age < STARTING_FOR));
    let noted_by = std::fs::read_to_string(path).ok().and_then(|text| text.trim().parse::<u32>().ok());
    fresh && noted_by.is_none_or(process_alive)
}

/// When the file at `path` was last written (None: not there, or not to be told).
fn written_at(path: &Path) -> Option<std::time::SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// Whether the run info at `info` was written after the `starting` note at `note` (by the
/// runner that note announced; the runner writes it, then removes the note).
pub fn described_since(info: &Path, note: &Path) -> bool {
    match (written_at(info), written_at(note)) {
        (Some(described), Some(noted)) => described >= noted,
        (Some(_), None) => true,
        (None, _) => false,
    }
}

/// Remove the file if it is still this process's.
pub fn remove_own(path: &Path) {
    if read(path).is_some_and(|info| info.pid == std::process::id()) {
        let _ = std::fs::remove_file(path);
    }
}

#[cfg(test)]
mod tests {
    /// Signal 0 finds this process, and not one that ended.
    #[test]
    fn a_signal_reaches_a_live_process_only() {
        assert!(super::process_alive(std::process::id()));
        let mut ended = std::process::Command::new("true").spawn().expect("true runs");
        let pid = ended.id();
        ended.wait().expect("true ends");
        assert!(!super::process_alive(pid), "reaped: no such process");
    }

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
    fn a_run_info_counts_only_when_written_after_the_note() {
        let dir = tempfile::tempdir().unwrap();
        let (info, note) = (dir.path().join("run.json"), dir.path().join("run.starting"));
        assert!(!described_since(&info, &note), "none written");
        std::fs::write(&info, b"{}").unwrap();
        assert!(described_since(&info, &note), "no note");
        std::fs::write(&note, b"").unwrap();
        let earlier = std::time::SystemTime::now() - std::time::Duration::from_secs(60);
        std::fs::File::options().write(true).open(&info).unwrap().set_modified(earlier).unwrap();
        assert!(!described_since(&info, &note), "an earlier runner's");
        std::fs::write(&info, b"{}").unwrap();
        assert!(described_since(&info, &note), "the announced runner's");
    }

    #[test]
    fn a_starting_note_counts_while_fresh() {
        let dir = tempfile::tempdir().unwrap();
        let note = dir.path().join("run.starting");
        assert!(!runner_starting(&note), "no note");
        std::fs::write(&note, b"").unwrap();
        assert!(runner_starting(&note));
        let old = std::time::SystemTime::now() - STARTING_FOR - std::time::Duration::from_secs(1);
        std::fs::File::options().write(true).open(&note).unwrap().set_modified(old).unwrap();
        assert!(!runner_starting(&note), "left by a stopped build");
        std::fs::write(&note, std::process::id().to_string()).unwrap();
        assert!(runner_starting(&note), "its make runs");
        // No process has that number (past a pid_t).
        std::fs::write(&note, format!("{}\n", u32::MAX - 1)).unwrap();
        assert!(!runner_starting(&note), "its make stopped");
    }

    /// A runner the environment describes needs its AWS and its callers' credentials named;
    /// the rest defaults to `make run`'s names.
    #[test]
    fn a_runner_no_run_json_describes_is_refused_unless_the_environment_names_it() {
        let lookup = |vars: &'static [(&'static str, &'static str)]| {
            move |name: &str| vars.iter().find(|(n, _)| *n == name).map(|(_, v)| (*v).to_owned())
        };
        let origin = || "http://127.0.0.1:3001".to_owned();
        for vars in [
            &[][..],
            &[("WEBHOOK_HMAC_KEYS", "k")][..],
            &[("AWS_ENDPOINT_URL", "http://127.0.0.1:5000")][..],
            &[("AWS_ENDPOINT_URL", ""), ("WEBHOOK_HMAC_KEYS", "k")][..],
            &[("AWS_ENDPOINT_URL", "https://dynamodb.us-east-1.amazonaws.com"), ("WEBHOOK_HMAC_KEYS", "k")][..],
        ] {
            let refused = described_by_environment(&lookup(vars), 3000, origin()).unwrap_err();
            assert!(refused.contains("PORT") && refused.contains("AWS_ENDPOINT_URL"), "{vars:?}: {refused}");
        }
        for vars in [
            &[("AWS_ENDPOINT_URL", "http://127.0.0.1:5000"), ("WEBHOOK_HMAC_KEYS", "k")][..],
            &[("AWS_ENDPOINT_URL", "http://127.0.0.1:5000"), ("ALLOW_UNAUTHENTICATED", "true")][..],
        ] {
            let info = described_by_environment(&lookup(vars), 3000, origin()).unwrap();
            assert_eq!(info.aws_endpoint_url.as_deref(), Some("http://127.0.0.1:5000"), "{vars:?}");
            assert_eq!(
                (info.table_name.as_str(), info.base_url.as_str()),
                ("stemvault-local-tasks", "http://127.0.0.1:3000")
            );
        }
    }

    #[test]
    fn round_trips_and_removes_only_its_own() {
        let scratch = tempfile::tempdir().unwrap();
        // Not there yet: write makes it.
        let path = scratch.path().join("run").join("run.json");
        write(&info(1), &path).unwrap();
        assert_eq!(read(&path), Some(info(1)));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
        remove_own(&path);
        assert!(path.exists(), "another process's file stays");
        assert!(runner_alive(&info(std::process::id())));
        assert!(!runner_alive(&info(u32::MAX)), "no such process");
        write(&info(std::process::id()), &path).unwrap();
        remove_own(&path);
        assert!(!path.exists());
        assert_eq!(read(&path), None);
    }
}
