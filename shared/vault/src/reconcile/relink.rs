//! A file that failed for a reason that may pass, reopened at its URL by a later poll, or by
//! the reconciler without one for a task no poll reaches: providers repeat a file's URL
//! (kie's answers do), so no poll would bring it back otherwise.

use std::time::Duration;

use suno_callbacks::CallbackEvent;

use super::failed_by_expiry;
use crate::{FileEntry, FileStatus, TaskRecord, Timestamp, reason};

/// The wait, after a file failed for a reason that may pass, before it is reopened
/// ([`relink`], [`relink_own`]); it doubles with each reopen of the file.
pub const FIRST_RELINK_AFTER: Duration = Duration::from_secs(3600);
/// How many times one file is reopened: 1 to 128 hours after each failure, about 11 days in
/// all, within the 14 the providers keep a task.
pub const MAX_RELINKS: u32 = 8;

/// A file failed for a reason that may pass, so that its URL may be copied later:
/// dead-lettered (what failed on every receive failed retryably: a source or S3 outage, the
/// provider giving no fresh link for an expired URL in time), but for a copy slower than an
/// invocation (tried again, it would take the same again); refused a fresh link for the key
/// (401, 403) or the credits (402), which the user may fix; or refused because
/// `ALLOWED_SOURCE_HOSTS` does not allow its URL, which the operator may list (the downloader
/// refuses it again at once, at no request, while it still does). Not what says the file will never
/// come (a 422 for a fresh link: not a URL the provider generated; a source failing for good
/// with no fresh link asked, or with one the provider did not find; a fresh link to a host
/// that is not allowed). The reasons are the downloader's, read by [`crate::reason`].
pub fn awaits_retry(file: &FileEntry) -> bool {
    let may_pass = |e: &str| match reason::is_dead_lettered(e) {
        // From the URL or from a fresh link of it.
        true => !e.contains(reason::COPY_TOO_SLOW),
        false => {
            (failed_by_expiry(file) && reason::fresh_link_refused(e).is_some_and(|code| matches!(code, 401..=403)))
                || reason::refused_source(e)
        }
    };
    file.status == FileStatus::Failed && file.error.as_deref().is_some_and(may_pass)
}

/// When `file` may be reopened ([`relink`], [`relink_own`]); None: never again.
pub fn relink_at(file: &FileEntry) -> Option<Timestamp> {
    if !awaits_retry(file) || file.relinks >= MAX_RELINKS {
        return None;
    }
    let wait = FIRST_RELINK_AFTER.saturating_mul(1 << file.relinks);
    file.failed_at.map(|failed_at| failed_at.plus(wait))
}

/// The record a polled result merges into, when its answer repeats the URL of a file that
/// failed for a reason that may pass ([`awaits_retry`]) and that file's [`relink_at`] has
/// come (or the file is one no poll's answer carries, a music track's `source_*`:
/// [`suno_callbacks::poll::renews_file`]): those files reopened at their URL, as a new URL
/// reopens a file (pending, stamped with the next generation, the vault pending), counting the
/// reopen. Providers keep a file's URL, so without this no poll would ever bring the file
/// back, and a source or link service down through a file's receives, or a key or credits
/// fixed since, would leave it failed for good (a redrive of the dead-letter queue finds it
/// settled). None: nothing to reopen.
pub fn relink(record: &TaskRecord, event: &CallbackEvent, now: Timestamp) -> Option<TaskRecord> {
    let repeated = |name: &str, file: &FileEntry| event.files.iter().any(|f| f.name == name && f.url == file.url);
    // A file no poll's answer carries (a music track's `source_*`) is reopened at its own URL.
    let carried_by_none = |name: &str| !suno_callbacks::poll::renews_file(record.family, name);
    reopened(record, now, |name, file| repeated(name, file) || carried_by_none(name))
}

/// Whether `file` may be reopened `now` ([`relink_at`] has come).
pub fn relink_due(file: &FileEntry, now: Timestamp) -> bool {
    relink_at(file).is_some_and(|at| at <= now)
}

/// The record with every file whose [`relink_at`] has come reopened at its own URL, as
/// [`relink`] reopens one a poll repeats: for a task no poll reaches (no provider key, a
/// family without a record-info endpoint), whose files failed for a reason that may pass (a
/// source or S3 outage through every receive) would otherwise stay failed for good, a redrive
/// of the dead-letter queue finding them settled. A URL that expired meanwhile fails again as
/// expired, for good. The record to save (`version` incremented, still watched: should the
/// copy fail again, the next reopen comes); None: nothing to reopen.
pub fn relink_own(record: &TaskRecord, now: Timestamp) -> Option<TaskRecord> {
    let mut relinked = reopened(record, now, |_, _| true)?;
    // Its write's time, as a callback's: the sweeper leaves the task alone for its grace
    // period (its mark, files and put under way), and the open task's age starts again.
    relinked.touch(now);
    relinked.version += 1;
    super::keep_watched(&mut relinked, now);
    Some(relinked)
}

/// `record` with the files `reopen` picks whose [`relink_due`] `now` reopened at their URL,
/// counting the reopen; None for none, or for a task given up.
fn reopened(record: &TaskRecord, now: Timestamp, reopen: impl Fn(&str, &FileEntry) -> bool) -> Option<TaskRecord> {
    let names: Vec<String> = record
        .files
        .iter()
        .filter(|(name, file)| reopen(name, file) && relink_due(file, now))
        .map(|(n, _)| n.clone())
        .collect();
    if names.is_empty() || record.abandoned.is_some() {
        return None;
    }
    let mut relinked = record.clone();
    for name in &names {
        let failed = &record.files[name];
        let mut reopened = FileEntry::pending(&failed.url, failed.key.clone(), failed.stage);
        (reopened.rev, reopened.relinks) = (failed.rev, failed.relinks + 1);
        // Claimed before: the downloader first looks for an earlier attempt's copy.
        reopened.attempts = failed.attempts;
        relinked.files.insert(name.clone(), reopened);
    }
    crate::ingest::open_file_set(&mut relinked, &names);
    relinked.sync_open_marker();
    Some(relinked)
}

#[cfg(test)]
mod tests {
    use suno_callbacks::{Family, Stage};

    use super::*;
    use crate::reconcile::tests::{NOW, failed, task};
    use crate::{Abandoned, VaultState};

    const NO_LINK_YET: &str =
        "dead_lettered: source answered 403 Forbidden; no fresh link yet: the provider answered 503";

    /// A file failed at `NOW` for `error`, reopened `relinks` times before.
    fn failed_now(error: &str, relinks: u32) -> FileEntry {
        FileEntry { failed_at: Some(NOW), relinks, ..failed(error) }
    }

    fn poll_event(files: &[(&str, &str)]) -> CallbackEvent {
        CallbackEvent {
            task_id: suno_callbacks::TaskId::parse("t1").unwrap(),
            family: Family::VocalSeparation,
            stage: Stage::Complete,
            code: 200,
            message: "success".into(),
            files: files
                .iter()
                .map(|(name, url)| suno_callbacks::FileRef { name: (*name).into(), url: (*url).into() })
                .collect(),
            streams: vec![],
            details: suno_callbacks::Details::None,
        }
    }

    #[test]
    fn a_file_that_failed_for_what_may_pass_is_reopened_an_hour_on_then_each_wait_doubles_eight_times() {
        let hour = Duration::from_secs(3600);
        assert_eq!(relink_at(&failed_now(NO_LINK_YET, 0)), Some(NOW.plus(hour)));
        assert_eq!(relink_at(&failed_now(NO_LINK_YET, 3)), Some(NOW.plus(hour * 8)));
        assert_eq!(relink_at(&failed_now(NO_LINK_YET, 7)), Some(NOW.plus(hour * 128)));
        assert_eq!(relink_at(&failed_now(NO_LINK_YET, MAX_RELINKS)), None, "given up");
        let waits_ms: i64 =
            (0..MAX_RELINKS).map(|n| relink_at(&failed_now(NO_LINK_YET, n)).unwrap().unix_ms - NOW.unix_ms).sum();
        assert!(waits_ms < crate::reconcile::DEFAULT_GIVE_UP_AFTER.as_millis() as i64, "{waits_ms} ms in all");
        // Refused a link for the key or the credits (fixed since, perhaps), refused a host the
        // allow-list leaves out (listed since, perhaps), or dead-lettered for what failed
        // retryably on every receive (an outage, over since, perhaps).
        for may_pass in [
            "refused source: host files.example.net is not in ALLOWED_SOURCE_HOSTS",
            "refused source: http://cdn.example:80 is not https and not a listed origin",
            "refused source: host 10.0.0.1 is at 10.0.0.1, private; list its exact origin to allow it",
            "source answered 403 Forbidden; no fresh link: the provider answered 402 (insufficient credits)",
            "source answered 410 Gone; no fresh link: the provider answered 401 (unauthorized: check the API key)",
            "source answered 441; no fresh link: the provider answered 403",
            "dead_lettered: source answered 503 Service Unavailable",
            "dead_lettered: the source timed out: no bytes for 30 s",
            "dead_lettered: S3 UploadPart failed: 503 SlowDown",
        ] {
            assert_eq!(relink_at(&failed_now(may_pass, 0)), Some(NOW.plus(hour)), "{may_pass}");
        }
        // Never asked (no key, sunoapi), a link that itself failed for good, a refusal that
        // says no link will come, or a copy slower than an invocation: the same again.
        for error in [
            "source answered 403 Forbidden",
            "source answered 404 Not Found",
            "source answered 410 Gone; the fresh link failed: source answered 404",
            "source answered 403 Forbidden; no fresh link: the provider answered 422 (not a URL the provider generated)",
            "source answered 403 Forbidden; no fresh link: the provider answered 404 (not found)",
            "source answered 403 Forbidden; no fresh link: the provider answered 4020",
            "source answered 403 Forbidden; no fresh link: the fresh link: refused source: host evil.example.com",
            "not a usable URL: URLs with credentials are not fetched",
            "dead_lettered: the copy did not finish before the invocation's deadline",
            "dead_lettered: source answered 410 Gone; no fresh link yet: copying from the fresh link failed: the \
             copy did not finish before the invocation's deadline",
        ] {
            assert_eq!(relink_at(&failed_now(error, 0)), None, "{error}");
        }
        let stored = FileEntry { status: FileStatus::Stored, ..failed_now(NO_LINK_YET, 0) };
        assert_eq!(relink_at(&stored), None);
    }

    #[test]
    fn a_poll_repeating_the_url_reopens_a_file_without_a_fresh_link_once_its_wait_is_over() {
        let mut record = TaskRecord { family: Family::VocalSeparation, ..task(Stage::Complete) };
        record.files.insert("vocal".into(), FileEntry { attempts: 3, ..failed_now(NO_LINK_YET, 1) });
        let stored = FileEntry {
            status: FileStatus::Stored,
            ..FileEntry::pending("https://a/i.mp3", "k".into(), Stage::Complete)
        };
        record.files.insert("instrumental".into(), stored.clone());
        (record.vault, record.manifest_key, record.generation) = (VaultState::Partial, Some("m".into()), 3);
        record.sync_open_marker();
        let poll = poll_event(&[("vocal", "https://a/x.mp3"), ("instrumental", "https://a/i.mp3")]);
        let due = NOW.plus(Duration::from_secs(2 * 3600));

        assert_eq!(relink(&record, &poll, due.minus(Duration::from_secs(1))), None, "its wait is not over");
        let moved = poll_event(&[("vocal", "https://a/new.mp3")]);
        assert_eq!(relink(&record, &moved, due), None, "a new URL reopens it as ever, not as a relink");

        let relinked = relink(&record, &poll, due).expect("reopened");
        let vocal = &relinked.files["vocal"];
        assert_eq!((vocal.status, vocal.relinks, vocal.generation), (FileStatus::Pending, 2, Some(4)));
        assert_eq!(vocal.attempts, 3, "claimed before: an earlier copy is looked for");
        assert_eq!(
            (vocal.url.as_str(), vocal.key.as_str(), vocal.error.as_deref()),
            ("https://a/x.mp3", "tasks/t1/x.mp3", None)
        );
        assert_eq!(relinked.files["instrumental"], stored);
        assert_eq!(
            (relinked.generation, relinked.vault, relinked.manifest_key.as_deref()),
            (4, VaultState::Pending, None)
        );
        assert_eq!(relinked.open.as_deref(), Some(crate::OPEN_MARKER), "in the sweeper's index");
        assert_eq!(relinked.version, record.version, "the merge counts the write");

        let abandoned =
            TaskRecord { abandoned: Some(Abandoned { reason: crate::GiveUpReason::Abandoned, at: NOW }), ..record };
        assert_eq!(relink(&abandoned, &poll, due), None);
    }

    /// A music track's `source_*` file is in no poll's answer: a poll whose time came reopens
    /// it at its own URL, as it would a file it repeats; the track's audio, which the poll
    /// does carry, only when repeated.
    #[test]
    fn a_poll_reopens_a_file_no_poll_carries_at_its_own_url() {
        let mut record = TaskRecord { family: Family::Music, ..task(Stage::Complete) };
        record.files.insert("tracks/8551/source_audio".into(), failed_now(NO_LINK_YET, 0));
        record.files.insert("tracks/8551/audio".into(), failed_now(NO_LINK_YET, 0));
        (record.vault, record.manifest_key, record.generation) = (VaultState::Partial, Some("m".into()), 3);
        let due = NOW.plus(Duration::from_secs(3600));
        let poll = poll_event(&[("tracks/8551/audio", "https://a/elsewhere.mp3")]);
        let relinked = relink(&record, &poll, due).expect("reopened");
        let source = &relinked.files["tracks/8551/source_audio"];
        assert_eq!((source.status, source.relinks), (FileStatus::Pending, 1));
        assert_eq!(relinked.files["tracks/8551/audio"], record.files["tracks/8551/audio"], "not repeated");
        assert_eq!(relink(&record, &poll, due.minus(Duration::from_secs(1))), None, "its wait is not over");
    }

    /// With no poll to repeat a URL, a file whose wait is over is reopened at its own URL, as
    /// a poll would reopen it; one failed for good, or whose wait is not over, stays failed.
    #[test]
    fn with_no_poll_a_file_whose_wait_is_over_is_reopened_at_its_own_url() {
        let mut record = TaskRecord { family: Family::VocalSeparation, ..task(Stage::Complete) };
        record.files.insert("vocal".into(), failed_now(NO_LINK_YET, 1));
        record.files.insert("drums".into(), failed_now("source answered 404 Not Found", 0));
        record.files.insert("bass".into(), failed_now("dead_lettered: S3 UploadPart failed: 503 SlowDown", 3));
        (record.vault, record.manifest_key, record.generation) = (VaultState::Partial, Some("m".into()), 3);
        record.sync_open_marker();
        let due = NOW.plus(Duration::from_secs(2 * 3600));

        assert_eq!(relink_own(&record, due.minus(Duration::from_secs(1))), None, "its wait is not over");
        let relinked = relink_own(&record, due).expect("reopened");
        let vocal = &relinked.files["vocal"];
        assert_eq!((vocal.status, vocal.relinks, vocal.generation), (FileStatus::Pending, 2, Some(4)));
        assert_eq!((vocal.url.as_str(), vocal.error.as_deref()), (record.files["vocal"].url.as_str(), None));
        assert_eq!(relinked.files["drums"], record.files["drums"], "failed for good");
        assert_eq!(relinked.files["bass"], record.files["bass"], "its wait (8 hours) is not over");
        assert_eq!((relinked.vault, relinked.open.as_deref()), (VaultState::Pending, Some(crate::OPEN_MARKER)));
        assert_eq!(relinked.last_received_at, due, "its write's time: the sweeper's grace runs from it");

        let abandoned =
            TaskRecord { abandoned: Some(Abandoned { reason: crate::GiveUpReason::Abandoned, at: NOW }), ..record };
        assert_eq!(relink_own(&abandoned, due), None);
    }
}
