use std::time::Duration;

use proptest::prelude::*;
use suno_callbacks::{CallbackEvent, Details, Family, FileRef, MidiInstrument, MidiNote, Stage, TaskId};

use super::*;
use crate::{FileStatus, TaskRecord, Timestamp, VaultState};

const T0: i64 = 1_763_910_000_000;

fn now(offset_secs: i64) -> Timestamp {
    Timestamp::from_unix_ms(T0 + offset_secs * 1000)
}

fn claimant(id: &str) -> Claimant {
    Claimant { id: id.to_owned(), lease: Duration::from_secs(30) }
}

fn file(name: &str, url: &str) -> FileRef {
    FileRef { name: name.to_owned(), url: url.to_owned() }
}

fn event(stage: Stage, code: i64, files: &[(&str, &str)]) -> CallbackEvent {
    CallbackEvent {
        task_id: TaskId::parse("task-1").unwrap(),
        family: Family::Music,
        stage,
        code,
        message: format!("{stage} {code}"),
        files: files.iter().map(|(n, u)| file(n, u)).collect(),
        streams: vec![],
        details: Details::None,
    }
}

fn body(sha: &str) -> BodyInfo {
    BodyInfo {
        sha256_hex: sha.to_owned(),
        archive_key: format!("tasks/task-1/callbacks/x-{sha}.json"),
        bytes: 42,
        arrived_at: None,
    }
}

/// What the ingest adapter does after sending: the claimed files are `queued`.
fn mark_all_queued(record: &mut TaskRecord) {
    for f in record.files.values_mut() {
        if f.status == FileStatus::Enqueuing {
            f.status = FileStatus::Queued;
            f.claim = None;
            f.lease_until = None;
        }
    }
}

/// The record of `e`'s first delivery (its body `sha`), its files sent and marked `queued`.
fn queued(e: &CallbackEvent, sha: &str) -> TaskRecord {
    let mut record = ingest_callback(None, e, &body(sha), &claimant("r"), now(0)).record;
    mark_all_queued(&mut record);
    record
}

fn set_status(record: &mut TaskRecord, name: &str, status: FileStatus) {
    record.files.get_mut(name).unwrap().status = status;
}

fn job_names(claims: &Claims) -> Vec<&str> {
    claims.to_enqueue.iter().map(|j| j.name.as_str()).collect()
}

#[test]
fn first_callback_creates_the_record_and_claims_every_file() {
    let e = event(Stage::Final, 200, &[("vocal", "https://h/s/v.mp3?sig=1"), ("drums", "https://h/s/d.mp3")]);
    let m = ingest_callback(None, &e, &body("aa"), &claimant("req-1"), now(0));

    assert!(!m.duplicate);
    let r = &m.record;
    assert_eq!((r.task_id.as_str(), r.family, r.stage), ("task-1", Family::Music, Stage::Final));
    assert_eq!((r.code, r.message.as_str(), r.succeeded), (200, "final 200", true));
    assert_eq!((r.version, r.deliveries), (1, 1));
    assert_eq!(r.first_received_at, now(0));
    assert_eq!(r.last_received_at, now(0));
    assert_eq!(r.vault, VaultState::Pending);
    let entry = &r.callbacks["final-aa"];
    assert_eq!((entry.body_key.as_str(), entry.bytes, entry.deliveries), ("tasks/task-1/callbacks/x-aa.json", 42, 1));

    let vocal = &r.files["vocal"];
    assert_eq!(vocal.status, FileStatus::Enqueuing);
    assert_eq!(vocal.claim.as_deref(), Some("req-1"));
    assert_eq!(vocal.lease_until, Some(LeaseEnd::at(now(30))));
    assert_eq!(vocal.key, "tasks/task-1/vocal.mp3");
    assert_eq!(vocal.stage, Stage::Final);

    let mut jobs = m.claims.to_enqueue.clone();
    jobs.sort_by(|a, b| a.name.cmp(&b.name));
    assert_eq!(
        jobs,
        vec![
            FileJob {
                task_id: "task-1".into(),
                name: "drums".into(),
                url: "https://h/s/d.mp3".into(),
                key: "tasks/task-1/drums.mp3".into()
            },
            FileJob {
                task_id: "task-1".into(),
                name: "vocal".into(),
                url: "https://h/s/v.mp3?sig=1".into(),
                key: "tasks/task-1/vocal.mp3".into()
            },
        ]
    );
    assert!(m.claims.wait_for.is_empty());
}

#[test]
fn a_callback_without_files_leaves_a_complete_vault() {
    let mut e = event(Stage::Complete, 200, &[]);
    e.family = Family::Lyrics;
    e.details = Details::Error { error: "kept".into() };
    let m = ingest_callback(None, &e, &body("aa"), &claimant("r"), now(0));
    assert_eq!(m.record.vault, VaultState::Complete);
    assert!(m.claims.to_enqueue.is_empty());
    assert_eq!(m.record.details, Some(serde_json::json!({"kind": "error", "error": "kept"})));
}

#[test]
fn a_duplicate_counts_a_delivery_and_changes_nothing_else() {
    let e = event(Stage::Complete, 200, &[("a", "https://h/a.mp3")]);
    let mut first = ingest_callback(None, &e, &body("aa"), &claimant("r1"), now(0)).record;
    mark_all_queued(&mut first);

    let m = ingest_callback(Some(&first), &e, &body("aa"), &claimant("r2"), now(5));
    assert!(m.duplicate);
    assert_eq!(m.record.version, 2);
    assert_eq!(m.record.deliveries, 2);
    assert_eq!(m.record.callbacks["complete-aa"].deliveries, 2);
    assert_eq!(m.record.callbacks.len(), 1);
    assert_eq!(m.record.last_received_at, now(5));
    assert_eq!(m.record.first_received_at, now(0));
    assert_eq!(m.record.files, first.files);
    assert_eq!(m.claims, Claims::default());
}

#[test]
fn a_duplicate_waits_for_files_under_an_unexpired_claim_and_takes_over_expired_ones() {
    let e = event(Stage::Complete, 200, &[("a", "https://h/a.mp3"), ("b", "https://h/b.mp3")]);
    let first = ingest_callback(None, &e, &body("aa"), &claimant("r1"), now(0)).record;

    // Held through its lease's last second, as the put's condition (`lease < now`) and the
    // downloader hold it.
    let waiting = ingest_callback(Some(&first), &e, &body("aa"), &claimant("r2"), now(30));
    assert!(waiting.duplicate);
    assert!(waiting.claims.to_enqueue.is_empty());
    assert_eq!(waiting.claims.wait_for, vec!["a", "b"]);
    assert_eq!(waiting.record.files["a"].claim.as_deref(), Some("r1"));

    let taking_over = ingest_callback(Some(&first), &e, &body("aa"), &claimant("r3"), now(31));
    assert_eq!(job_names(&taking_over.claims), vec!["a", "b"]);
    assert!(taking_over.claims.wait_for.is_empty());
    assert_eq!(taking_over.record.files["b"].claim.as_deref(), Some("r3"));
    assert_eq!(taking_over.record.files["b"].lease_until, Some(LeaseEnd::at(now(61))));
}

#[test]
fn released_files_are_claimed_by_the_next_delivery() {
    let e = event(Stage::Complete, 200, &[("a", "https://h/a.mp3")]);
    let mut first = ingest_callback(None, &e, &body("aa"), &claimant("r1"), now(0)).record;
    // The first request could not send and released its claim.
    let a = first.files.get_mut("a").unwrap();
    a.status = FileStatus::Pending;
    a.claim = None;
    a.lease_until = None;

    let retry = ingest_callback(Some(&first), &e, &body("aa"), &claimant("r2"), now(1));
    assert!(retry.duplicate);
    assert_eq!(job_names(&retry.claims), vec!["a"]);
    assert_eq!(retry.record.files["a"].status, FileStatus::Enqueuing);
}

#[test]
fn stages_advance_and_the_advancing_event_sets_code_and_message() {
    let text = event(Stage::Text, 200, &[]);
    let first = event(Stage::First, 200, &[("t1/audio", "https://h/1.mp3")]);
    let complete = event(Stage::Complete, 200, &[("t1/audio", "https://h/1.mp3"), ("t2/audio", "https://h/2.mp3")]);

    let r = ingest_callback(None, &text, &body("01"), &claimant("r"), now(0)).record;
    assert_eq!((r.stage, r.vault), (Stage::Text, VaultState::Complete));
    let mut r = ingest_callback(Some(&r), &first, &body("02"), &claimant("r"), now(1)).record;
    assert_eq!((r.stage, r.message.as_str(), r.vault), (Stage::First, "first 200", VaultState::Pending));
    mark_all_queued(&mut r);
    let m = ingest_callback(Some(&r), &complete, &body("03"), &claimant("r"), now(2));
    assert_eq!((m.record.stage, m.record.message.as_str()), (Stage::Complete, "complete 200"));
    assert_eq!(m.record.callbacks.len(), 3);
    assert_eq!(m.record.deliveries, 3);
    assert_eq!(job_names(&m.claims), vec!["t2/audio"], "the known file is already queued");
    assert_eq!(m.record.files["t1/audio"].status, FileStatus::Queued);
}

#[test]
fn a_late_first_never_moves_the_stage_back_but_its_new_files_are_taken() {
    let mut complete = event(Stage::Complete, 200, &[("t1/audio", "https://h/1.mp3")]);
    complete.streams = vec![file("t1/stream", "https://h/complete-stream")];
    complete.details = Details::Error { error: "complete details".into() };
    let mut late_first =
        event(Stage::First, 200, &[("t1/audio", "https://h/other.mp3"), ("t1/image", "https://h/1.jpeg")]);
    late_first.streams = vec![file("t1/stream", "https://h/first-stream"), file("t0/stream", "https://h/s0")];
    late_first.details = Details::Error { error: "first details".into() };

    let mut r = queued(&complete, "c");
    set_status(&mut r, "t1/audio", FileStatus::Stored);
    r.vault = VaultState::Complete;
    r.manifest_key = Some("tasks/task-1/manifest.json".into());

    let m = ingest_callback(Some(&r), &late_first, &body("f"), &claimant("r2"), now(1));
    let out = &m.record;
    assert!(!m.duplicate);
    assert_eq!((out.stage, out.code, out.message.as_str()), (Stage::Complete, 200, "complete 200"));
    assert_eq!(out.files["t1/audio"].status, FileStatus::Stored);
    assert_eq!(out.files["t1/audio"].url, "https://h/1.mp3", "a known file keeps its URL");
    assert_eq!(out.files["t1/image"].stage, Stage::First);
    assert_eq!(job_names(&m.claims), vec!["t1/image"]);
    assert_eq!(out.vault, VaultState::Pending, "a new file reopens the vault");
    assert_eq!(out.manifest_key, None);
    assert_eq!(out.streams["t1/stream"], "https://h/complete-stream");
    assert_eq!(out.streams["t0/stream"], "https://h/s0");
    assert_eq!(out.details, Some(serde_json::json!({"kind": "error", "error": "complete details"})));
    assert_eq!(out.failure, None);
}

#[test]
fn a_failure_after_success_is_recorded_without_erasing_files() {
    let ok = event(Stage::Complete, 200, &[("a", "https://h/a.mp3")]);
    let failed = event(Stage::Error, 501, &[]);
    let mut r = queued(&ok, "ok");
    set_status(&mut r, "a", FileStatus::Stored);
    r.vault = VaultState::Complete;

    let m = ingest_callback(Some(&r), &failed, &body("ko"), &claimant("r"), now(7));
    let out = &m.record;
    assert!(!m.duplicate);
    assert_eq!((out.stage, out.code, out.succeeded), (Stage::Complete, 200, true));
    let failure = out.failure.as_ref().expect("failure recorded");
    assert_eq!((failure.stage, failure.code, failure.message.as_str()), (Stage::Error, 501, "error 501"));
    assert_eq!(failure.received_at, now(7));
    assert_eq!(out.files["a"].status, FileStatus::Stored);
    assert_eq!(out.vault, VaultState::Complete);
    assert_eq!(out.callbacks.len(), 2);
}

#[test]
fn a_failure_of_a_final_family_after_its_success_is_recorded_too() {
    let ok = event(Stage::Final, 200, &[("wav", "https://h/a.wav")]);
    let failed = event(Stage::Final, 500, &[]);
    let r = ingest_callback(None, &ok, &body("ok"), &claimant("r"), now(0)).record;
    let out = ingest_callback(Some(&r), &failed, &body("ko"), &claimant("r"), now(1)).record;
    assert_eq!((out.code, out.succeeded), (200, true));
    assert_eq!(out.failure.map(|f| f.code), Some(500));
}

/// A task whose result was recorded as `unknown` (a body whose family could not be told) that
/// a callback of a known family reaches moves to a new generation: its manifest and `Task
/// Vaulted`, written or under way, said `unknown`, and would go on saying it while GET shows
/// the family. Once known, a new body moves nothing.
#[test]
fn a_family_learnt_after_the_result_moves_the_generation() {
    let mut generic = event(Stage::Final, 200, &[("a", "https://h/a.mp3")]);
    generic.family = Family::Unknown;
    let mut r = queued(&generic, "g");
    set_status(&mut r, "a", FileStatus::Stored);
    let typed = event(Stage::Final, 200, &[("a", "https://h/a.mp3")]);
    // A settle under way (its manifest not recorded yet) is moved past as much as one done.
    for manifest_key in [None, Some("tasks/task-1/manifest.json".to_owned())] {
        let mut settled = r.clone();
        (settled.vault, settled.manifest_key) = (VaultState::Complete, manifest_key);
        let out = ingest_callback(Some(&settled), &typed, &body("t"), &claimant("r"), now(1)).record;
        assert_eq!((out.family, out.generation, out.manifest_key.as_deref()), (Family::Music, r.generation + 1, None));
        assert!(crate::download::manifest_job(&out).is_some(), "its manifest is due");
    }
    let mut known = ingest_callback(Some(&r), &typed, &body("t"), &claimant("r"), now(1)).record;
    known.manifest_key = Some("tasks/task-1/manifest.json".into());
    let again = ingest_callback(Some(&known), &typed, &body("t2"), &claimant("r"), now(2)).record;
    assert_eq!((again.generation, again.manifest_key), (known.generation, known.manifest_key));
}

/// A second failure of a task that failed is no late failure (that is a failure after a
/// success): the task's failure stands, and nothing else is recorded.
#[test]
fn a_second_failure_of_a_failed_task_is_no_late_failure() {
    let failed = event(Stage::Error, 501, &[]);
    let again = event(Stage::Error, 502, &[]);
    let r = ingest_callback(None, &failed, &body("1"), &claimant("r"), now(0)).record;
    let out = ingest_callback(Some(&r), &again, &body("2"), &claimant("r"), now(1)).record;
    assert_eq!((out.stage, out.code, out.succeeded, out.failure), (Stage::Error, 501, false, None));
}

/// A task given up at `first` (never registered) that a later stage's callback reaches is
/// revived: no longer abandoned, so it is watched, polled and given up again like any other;
/// a late callback of a stage it had leaves it given up.
#[test]
fn a_task_given_up_is_revived_by_a_later_stage_only() {
    let first = event(Stage::First, 200, &[("a", "https://h/a.mp3")]);
    let mut r = queued(&first, "1");
    r.abandoned = Some(crate::record::Abandoned { reason: crate::GiveUpReason::Abandoned, at: now(5) });
    let late_first = event(Stage::First, 200, &[("a", "https://h/a.mp3"), ("b", "https://h/b.mp3")]);
    let still = ingest_callback(Some(&r), &late_first, &body("2"), &claimant("r"), now(6)).record;
    assert!(still.abandoned.is_some(), "the same stage again revives nothing");
    let complete = event(Stage::Complete, 200, &[("a", "https://h/a.mp3")]);
    let revived = ingest_callback(Some(&r), &complete, &body("3"), &claimant("r"), now(7)).record;
    assert_eq!((revived.stage, revived.abandoned), (Stage::Complete, None));
}

/// A late callback of an earlier stage, arriving while a file of the current stage is being
/// copied, is no newer URL for it: the stage's own URL is the file (a late `first` must not
/// become the copy a failed `complete` URL falls back on).
#[test]
fn a_late_earlier_stage_url_is_no_newer_url_for_a_file_being_copied() {
    let complete = event(Stage::Complete, 200, &[("a", "https://h/complete.mp3")]);
    let mut r = queued(&complete, "c");
    set_status(&mut r, "a", FileStatus::Downloading);
    let late_first = event(Stage::First, 200, &[("a", "https://h/first.mp3")]);
    let out = ingest_callback(Some(&r), &late_first, &body("f"), &claimant("r"), now(1)).record;
    let a = &out.files["a"];
    assert_eq!((a.url.as_str(), a.next_url.as_deref(), a.next_key.as_deref()), ("https://h/complete.mp3", None, None));
    // The same stage again with another URL is one.
    let again = event(Stage::Complete, 200, &[("a", "https://h/complete-2.mp3")]);
    let out = ingest_callback(Some(&r), &again, &body("c2"), &claimant("r"), now(2)).record;
    assert_eq!(out.files["a"].next_url.as_deref(), Some("https://h/complete-2.mp3"));
}

#[test]
fn a_failure_before_the_task_ended_moves_it_to_error() {
    let first = event(Stage::First, 200, &[("a", "https://h/a.mp3")]);
    let failed = event(Stage::Error, 501, &[]);
    let r = ingest_callback(None, &first, &body("1"), &claimant("r"), now(0)).record;
    let out = ingest_callback(Some(&r), &failed, &body("2"), &claimant("r"), now(1)).record;
    assert_eq!((out.stage, out.code, out.succeeded), (Stage::Error, 501, false));
    assert_eq!(out.failure, None);
    assert!(out.files.contains_key("a"));
}

#[test]
fn a_failure_after_first_keeps_the_first_tracks_details() {
    let track = suno_callbacks::Track { id: "e231".into(), title: Some("Harbour".into()), ..Default::default() };
    let first = CallbackEvent { details: Details::Tracks { tracks: vec![track] }, ..event(Stage::First, 200, &[]) };
    // As a documented error body parses: no tracks.
    let failed = CallbackEvent { details: Details::Tracks { tracks: vec![] }, ..event(Stage::Error, 501, &[]) };
    let r = ingest_callback(None, &first, &body("1"), &claimant("r"), now(0)).record;
    let out = ingest_callback(Some(&r), &failed, &body("2"), &claimant("r"), now(1)).record;
    assert_eq!(out.stage, Stage::Error);
    assert_eq!(out.details, r.details);
    assert!(out.details.as_ref().unwrap().to_string().contains("Harbour"));
    // Nor does one whose only details are its error text (a polled failure's errorMessage,
    // which is the task's message too); over no tracks, that text is recorded.
    let said = CallbackEvent { details: Details::Error { error: "flagged".into() }, ..event(Stage::Error, 501, &[]) };
    let out = ingest_callback(Some(&r), &said, &body("3"), &claimant("r"), now(1)).record;
    assert_eq!(out.details, r.details);
    let bare = CallbackEvent { details: Details::None, ..event(Stage::First, 200, &[]) };
    let r = ingest_callback(None, &bare, &body("4"), &claimant("r"), now(0)).record;
    let out = ingest_callback(Some(&r), &said, &body("3"), &claimant("r"), now(1)).record;
    assert!(out.details.unwrap().to_string().contains("flagged"));
}

/// A success after an `error` (the same rank: it does not move the stage) brings the tracks an
/// error body's empty list left unsaid.
#[test]
fn a_success_after_an_error_without_tracks_records_its_tracks() {
    let failed = CallbackEvent { details: Details::Tracks { tracks: vec![] }, ..event(Stage::Error, 501, &[]) };
    let track = suno_callbacks::Track { id: "e231".into(), title: Some("Harbour".into()), ..Default::default() };
    let complete =
        CallbackEvent { details: Details::Tracks { tracks: vec![track] }, ..event(Stage::Complete, 200, &[]) };
    let r = ingest_callback(None, &failed, &body("1"), &claimant("r"), now(0)).record;
    let out = ingest_callback(Some(&r), &complete, &body("2"), &claimant("r"), now(1)).record;
    assert_eq!(out.stage, Stage::Error, "the stage stays");
    assert!(out.details.as_ref().unwrap().to_string().contains("Harbour"), "{:?}", out.details);
}

#[test]
fn a_second_different_body_for_the_same_stage_is_kept() {
    let a = event(Stage::Complete, 200, &[("a", "https://h/a.mp3")]);
    let b = event(Stage::Complete, 200, &[("a", "https://h/a.mp3"), ("b", "https://h/b.mp3")]);
    let r = ingest_callback(None, &a, &body("aa"), &claimant("r"), now(0)).record;
    let m = ingest_callback(Some(&r), &b, &body("bb"), &claimant("r"), now(1));
    assert!(!m.duplicate);
    assert_eq!(m.record.callbacks.keys().collect::<Vec<_>>(), vec!["complete-aa", "complete-bb"]);
    assert!(m.record.files.contains_key("b"));
}

#[test]
fn a_new_file_moves_the_generation_on_and_fences_off_the_old_settle() {
    let first = event(Stage::Complete, 200, &[("a", "https://h/a.mp3")]);
    let mut r = ingest_callback(None, &first, &body("aa"), &claimant("r"), now(0)).record;
    assert_eq!(r.generation, 1);
    mark_all_queued(&mut r);
    set_status(&mut r, "a", FileStatus::Stored);
    // A downloader settled the vault (its manifest not recorded yet).
    r.vault = VaultState::Complete;

    let same_files = event(Stage::Complete, 201, &[("a", "https://h/a.mp3")]);
    let kept = ingest_callback(Some(&r), &same_files, &body("bb"), &claimant("r2"), now(1)).record;
    assert_eq!((kept.vault, kept.generation), (VaultState::Complete, 1));

    let more = event(Stage::Complete, 200, &[("a", "https://h/a.mp3"), ("b", "https://h/b.mp3")]);
    let reopened = ingest_callback(Some(&r), &more, &body("cc"), &claimant("r3"), now(2)).record;
    assert_eq!(
        (reopened.vault, reopened.manifest_key.as_deref(), reopened.generation, reopened.open.as_deref()),
        (VaultState::Pending, None, 2, Some("open"))
    );
}

/// A new stage without a new file: the manifest and `Task Vaulted` of the earlier stage no
/// longer describe the task, so its manifest is due (a job for it, as no download will
/// settle it); its vault and generation stay what its files make them.
#[test]
fn a_new_stage_over_settled_files_has_its_manifest_due() {
    let first = event(Stage::First, 200, &[("t1/audio", "https://h/1.mp3")]);
    let mut r = queued(&first, "01");
    set_status(&mut r, "t1/audio", FileStatus::Stored);
    (r.vault, r.manifest_key) = (VaultState::Complete, Some("tasks/task-1/manifest.json".into()));
    assert_eq!(crate::download::manifest_job(&r), None);

    let complete = event(Stage::Complete, 200, &[("t1/audio", "https://h/1.mp3")]);
    let m = ingest_callback(Some(&r), &complete, &body("02"), &claimant("r2"), now(1));
    let out = &m.record;
    assert_eq!((out.stage, out.generation, out.vault), (Stage::Complete, r.generation, VaultState::Complete));
    assert_eq!((out.manifest_key.as_deref(), out.open.as_deref()), (None, Some("open")), "swept until recorded");
    assert!(job_names(&m.claims).is_empty(), "nothing to copy");
    assert_eq!(crate::download::manifest_job(out).map(|j| j.name), Some("manifest".to_owned()));

    // While a file is still open, its download settles the new stage.
    let mut open = ingest_callback(None, &first, &body("01"), &claimant("r"), now(0)).record;
    mark_all_queued(&mut open);
    let m = ingest_callback(Some(&open), &complete, &body("02"), &claimant("r2"), now(1));
    assert_eq!((m.record.generation, m.record.vault), (open.generation, VaultState::Pending));
    assert_eq!(crate::download::manifest_job(&m.record), None, "its download settles it");

    // A late earlier stage, or the same stage again, leaves a recorded manifest as it is.
    let mut settled = out.clone();
    settled.manifest_key = Some("tasks/task-1/manifest.json".into());
    let late = ingest_callback(Some(&settled), &first, &body("03"), &claimant("r3"), now(2));
    assert_eq!(late.record.manifest_key, settled.manifest_key);
    let again = event(Stage::Complete, 201, &[("t1/audio", "https://h/1.mp3")]);
    let again = ingest_callback(Some(&settled), &again, &body("04"), &claimant("r3"), now(2));
    assert_eq!(again.record.manifest_key, settled.manifest_key);
}

#[test]
fn an_unsettled_file_reopens_a_vault_its_task_item_says_is_settled() {
    // An attempt wrote a reopened file's item but stopped before the task item.
    let e = event(Stage::Complete, 200, &[("a", "https://h/a.mp3")]);
    let mut r = ingest_callback(None, &e, &body("aa"), &claimant("r"), now(0)).record;
    set_status(&mut r, "a", FileStatus::Pending);
    r.vault = VaultState::Complete;
    r.manifest_key = Some("tasks/t1/manifest.json".into());
    r.open = None;
    let m = ingest_callback(Some(&r), &e, &body("aa"), &claimant("r2"), now(1));
    assert!(m.duplicate);
    assert_eq!(
        (m.record.vault, m.record.manifest_key.as_deref(), m.record.open.as_deref()),
        (VaultState::Pending, None, Some("open"))
    );
    assert_eq!(m.claims.to_enqueue.len(), 1, "and its file is sent");
    assert!(m.record.generation > r.generation, "the settle recorded was of another file set");
}

/// A stopped attempt's file settled before anything committed it (a redriven message copied or
/// failed it): committing it keeps the vault settled, as its files say, and drops the manifest
/// of the file set before it, recorded or not, so the next settle writes one of it.
#[test]
fn committing_a_file_settled_before_its_commit_has_the_manifest_written_again() {
    let e = event(Stage::Complete, 200, &[("a", "https://h/a.mp3"), ("b", "https://h/b.mp3")]);
    let mut r = ingest_callback(None, &e, &body("aa"), &claimant("r"), now(0)).record;
    set_status(&mut r, "a", FileStatus::Stored);
    set_status(&mut r, "b", FileStatus::Failed);
    r.files.get_mut("b").unwrap().generation = Some(r.generation + 1);
    r.vault = VaultState::Complete;
    for recorded in [Some("tasks/t1/manifest.json".to_owned()), None] {
        let read = TaskRecord { manifest_key: recorded.clone(), ..r.clone() };
        let committed = commit_uncommitted(&read).expect("a file to commit");
        assert_eq!(committed.generation, r.generation + 1, "{recorded:?}");
        assert_eq!((committed.vault, committed.manifest_key.as_deref()), (VaultState::Partial, None), "{recorded:?}");
        assert_eq!(committed.version, read.version + 1);
        assert!(committed.open.is_some() && !committed.has_uncommitted_files());
    }
    assert_eq!(
        commit_uncommitted(&TaskRecord { generation: r.generation + 1, ..r.clone() }),
        None,
        "nothing to commit"
    );
}

/// A task settled with its one file `a` stored, its manifest written.
fn settled_with_a() -> TaskRecord {
    let first = event(Stage::First, 200, &[("a", "https://h/a.mp3")]);
    let mut settled = ingest_callback(None, &first, &body("1"), &claimant("r"), now(0)).record;
    mark_all_queued(&mut settled);
    set_status(&mut settled, "a", FileStatus::Stored);
    (settled.vault, settled.open) = (VaultState::Complete, None);
    settled.manifest_key = Some("tasks/task-1/manifest.json".into());
    settled
}

/// An attempt adding a file wrote its file item, then lost its task write (to a downloader
/// settling the task, or to any other writer of the task item). Its retry, reading that file
/// item as known, still moves the generation past the file set without it: a settle planned
/// for that set is refused, or, when it landed, the new file's settle writes a new manifest
/// (and `Task Vaulted` event id) instead of finding the old one current.
#[test]
fn a_retried_addition_moves_the_generation_past_the_file_set_without_it() {
    let settled = settled_with_a();
    let g = settled.generation;
    let more = event(Stage::Complete, 200, &[("a", "https://h/a.mp3"), ("b", "https://h/b.mp3")]);
    let attempt = ingest_callback(Some(&settled), &more, &body("2"), &claimant("r2"), now(1)).record;
    assert_eq!(attempt.generation, g + 1);

    let mut still_pending = settled.clone();
    still_pending.vault = VaultState::Pending;
    still_pending.manifest_key = None;
    for mut read in [settled, still_pending] {
        // The task item as read, with the attempt's file item beside it.
        read.files.insert("b".into(), attempt.files["b"].clone());
        let retry = ingest_callback(Some(&read), &more, &body("2"), &claimant("r2"), now(2)).record;
        assert_eq!((retry.generation, retry.vault), (g + 1, VaultState::Pending), "read {:?}", read.vault);
        assert_eq!(retry.files["b"].generation, Some(g + 1));
    }
}

/// Two requests adding files to [`settled_with_a`] at once: r2 adding `b`, r1 adding `c`.
struct Raced {
    /// The settled task's generation.
    g: u64,
    adds_b: CallbackEvent,
    /// r2's merge: its item for `b` is what it writes before its task item.
    r2_attempt: TaskRecord,
    /// r1's commit, which read the task before r2's item was there, its files sent.
    r1_committed: TaskRecord,
}

fn raced() -> Raced {
    let settled = settled_with_a();
    let adds_b = event(Stage::Complete, 200, &[("a", "https://h/a.mp3"), ("b", "https://h/b.mp3")]);
    let r2_attempt = ingest_callback(Some(&settled), &adds_b, &body("2"), &claimant("r2"), now(1)).record;
    let adds_c = event(Stage::Complete, 200, &[("a", "https://h/a.mp3"), ("c", "https://h/c.mp3")]);
    let mut r1_committed = ingest_callback(Some(&settled), &adds_c, &body("3"), &claimant("r1"), now(1)).record;
    mark_all_queued(&mut r1_committed);
    Raced { g: settled.generation, adds_b, r2_attempt, r1_committed }
}

/// Two requests adding files to a settled task, the second (r2) having taken the first's
/// fence over: the first's retry commits the generation without r2's file (it read before r2
/// wrote it), and a settle of that set may publish its `Task Vaulted`. r2's retry, finding its
/// own file at that generation, moves it to the next one, so its settle's event has an id of
/// its own.
#[test]
fn a_retry_finding_its_file_under_another_requests_commit_moves_it_to_a_generation_of_its_own() {
    let Raced { g, adds_b, r2_attempt, r1_committed } = raced();
    assert_eq!(r1_committed.generation, g + 1);

    // Read as committed (pending: c is being copied), and settled since (the settle of {a, c}
    // applied before r2's retry).
    let mut settled_since = r1_committed.clone();
    set_status(&mut settled_since, "c", FileStatus::Stored);
    (settled_since.vault, settled_since.open) = (VaultState::Complete, None);
    settled_since.manifest_key = Some("tasks/task-1/manifest.json".into());
    for mut read in [r1_committed, settled_since] {
        read.files.insert("b".into(), r2_attempt.files["b"].clone());
        assert_eq!(read.files["b"].generation, Some(g + 1), "r2's item, at the generation committed");
        let retry = ingest_callback(Some(&read), &adds_b, &body("2"), &claimant("r2"), now(2));
        let r = &retry.record;
        assert_eq!((r.generation, r.vault, r.manifest_key.as_deref()), (g + 2, VaultState::Pending, None));
        assert_eq!(r.files["b"].generation, Some(g + 2), "b is of the new generation");
        assert!(r.open.is_some());
        let claimed: Vec<&str> = retry.claims.to_enqueue.iter().map(|j| j.name.as_str()).collect();
        assert_eq!(claimed, ["b"]);
        // Another request's delivery of the same body does not take them as its own (over the
        // settled read, b unsettled reopens the task, as before).
        let other = ingest_callback(Some(&read), &adds_b, &body("2"), &claimant("r3"), now(2)).record;
        assert_eq!(other.files["b"].generation, Some(g + 1), "{:?}", read.vault);
        let reopened = u64::from(read.vault != VaultState::Pending);
        assert_eq!(other.generation, read.generation + reopened, "{:?}", read.vault);
    }
}

/// As above, but r2 stopped before its retry: whatever takes its lapsed claim up (the
/// provider's retry of its callback, the sweeper) moves the file on in its place. A live
/// claim is waited for, and a lapsed one the task item read does not cover (an uncommitted
/// attempt's) is adopted at its own generation.
#[test]
fn a_lapsed_claim_under_a_generation_committed_without_it_moves_on_when_taken_over() {
    let Raced { g, adds_b, r2_attempt, r1_committed: mut read } = raced();
    read.files.insert("b".into(), r2_attempt.files["b"].clone());

    let live = ingest_callback(Some(&read), &adds_b, &body("2"), &claimant("retry"), now(2));
    assert_eq!((live.record.generation, live.claims.wait_for.as_slice()), (g + 1, ["b".to_owned()].as_slice()));

    let lapsed = now(60);
    let retry = ingest_callback(Some(&read), &adds_b, &body("2"), &claimant("retry"), lapsed);
    let (swept, sweep_claims) = reclaim(&read, &claimant("sweeper"), lapsed, &[]);
    let swept = swept.expect("b claimed");
    for (r, claimed) in [(&retry.record, &retry.claims), (&swept, &sweep_claims)] {
        assert_eq!((r.generation, r.files["b"].generation), (g + 2, Some(g + 2)));
        assert_eq!(r.files["c"].generation, Some(g + 1), "the committed file stays");
        assert_eq!(claimed.to_enqueue.iter().map(|j| j.name.as_str()).collect::<Vec<_>>(), ["b"]);
    }

    // Never committed (the task item read is still at g): adopted at g + 1, as before.
    let mut uncommitted = settled_with_a();
    uncommitted.files.insert("b".into(), r2_attempt.files["b"].clone());
    let (adopted, _) = reclaim(&uncommitted, &claimant("sweeper"), lapsed, &[]);
    let adopted = adopted.expect("b claimed");
    assert_eq!((adopted.generation, adopted.files["b"].generation), (g + 1, Some(g + 1)));
}

#[test]
fn a_failed_file_is_reopened_by_a_new_url_only() {
    let e = event(Stage::Complete, 200, &[("a", "https://h/a.mp3"), ("b", "https://h/b.mp3")]);
    let mut r = queued(&e, "aa");
    set_status(&mut r, "a", FileStatus::Failed);
    set_status(&mut r, "b", FileStatus::Stored);
    r.files.get_mut("a").unwrap().error = Some("HTTP 403".into());
    r.files.get_mut("a").unwrap().attempts = 3;
    r.vault = VaultState::Partial;
    r.manifest_key = Some("m".into());

    let same_url = ingest_callback(Some(&r), &e, &body("same"), &claimant("r2"), now(1));
    assert_eq!(same_url.record.files["a"].status, FileStatus::Failed);
    assert_eq!(same_url.record.vault, VaultState::Partial);
    assert_eq!(same_url.record.manifest_key.as_deref(), Some("m"));
    assert!(same_url.claims.to_enqueue.is_empty());

    let fresh = event(Stage::Complete, 200, &[("a", "https://h/new.wav")]);
    let m = ingest_callback(Some(&r), &fresh, &body("new"), &claimant("r3"), now(2));
    let a = &m.record.files["a"];
    assert_eq!(
        (a.status, a.url.as_str(), a.key.as_str()),
        (FileStatus::Enqueuing, "https://h/new.wav", "tasks/task-1/a.wav")
    );
    assert_eq!((a.error.as_deref(), a.attempts), (None, 0));
    assert_eq!(m.record.vault, VaultState::Pending);
    assert_eq!(m.record.manifest_key, None);
    assert_eq!(job_names(&m.claims), vec!["a"]);
    assert_eq!(m.record.files["b"].status, FileStatus::Stored);
}

#[test]
fn complete_replaces_the_url_of_a_first_file_not_yet_stored() {
    let first = event(
        Stage::First,
        200,
        &[
            ("queued", "https://h/q-first.mp3"),
            ("pending", "https://h/p-first.mp3"),
            ("claimed", "https://h/c-first.mp3"),
            ("downloading", "https://h/d-first.mp3"),
            ("stored", "https://h/s-first.mp3"),
        ],
    );
    let mut r = queued(&first, "1");
    set_status(&mut r, "pending", FileStatus::Pending);
    let held = r.files.get_mut("claimed").unwrap();
    (held.status, held.claim, held.lease_until) =
        (FileStatus::Enqueuing, Some("other".into()), Some(LeaseEnd::at(now(30))));
    set_status(&mut r, "downloading", FileStatus::Downloading);
    r.files.get_mut("downloading").unwrap().claim = Some("worker".into());
    set_status(&mut r, "stored", FileStatus::Stored);

    let names = ["queued", "pending", "claimed", "downloading", "stored"];
    let urls: Vec<String> = names.iter().map(|n| format!("https://h/{n}-complete.wav")).collect();
    let files: Vec<(&str, &str)> = names.iter().zip(&urls).map(|(n, u)| (*n, u.as_str())).collect();
    let complete = event(Stage::Complete, 200, &files);
    let m = ingest_callback(Some(&r), &complete, &body("2"), &claimant("r2"), now(1));
    let out = &m.record;
    for name in ["queued", "pending", "claimed"] {
        let f = &out.files[name];
        let url = format!("https://h/{name}-complete.wav");
        assert_eq!((f.url.as_str(), f.key.clone()), (url.as_str(), format!("tasks/task-1/{name}.wav")), "{name}");
        assert_eq!(f.stage, Stage::First, "{name}: the file still counts as first brought by `first`");
    }
    assert_eq!(
        (out.files["queued"].status, out.files["claimed"].claim.as_deref()),
        (FileStatus::Queued, Some("other"))
    );
    assert_eq!(job_names(&m.claims), vec!["pending"], "a pending file is claimed as usual, with its new URL");
    assert_eq!(m.claims.to_enqueue[0].url, "https://h/pending-complete.wav");
    assert_eq!(m.claims.wait_for, vec!["claimed"]);
    let stored = &out.files["stored"];
    assert_eq!((stored.url.as_str(), stored.key.as_str()), ("https://h/s-first.mp3", "tasks/task-1/stored.mp3"));
    assert_eq!(stored.next_url, None);
    // The file being copied keeps its URL and key (an earlier attempt's copy is looked for
    // there) and its claim; its holder copies the new URL should the old fail for good.
    let downloading = &out.files["downloading"];
    assert_eq!(
        (downloading.url.as_str(), downloading.key.as_str(), downloading.claim.as_deref()),
        ("https://h/d-first.mp3", "tasks/task-1/downloading.mp3", Some("worker"))
    );
    assert_eq!(
        (downloading.next_url.as_deref(), downloading.next_key.as_deref()),
        (Some("https://h/downloading-complete.wav"), Some("tasks/task-1/downloading.wav"))
    );

    // Released for a retry before it was copied: the next URL replaces the file's own.
    let mut released = out.clone();
    set_status(&mut released, "downloading", FileStatus::Queued);
    let again = ingest_callback(Some(&released), &complete, &body("3"), &claimant("r3"), now(2)).record;
    let f = &again.files["downloading"];
    assert_eq!(
        (f.url.as_str(), f.next_url.as_deref(), f.next_key.as_deref()),
        ("https://h/downloading-complete.wav", None, None)
    );
}

#[test]
fn a_late_earlier_stage_url_replaces_nothing() {
    let complete = event(Stage::Complete, 200, &[("a", "https://h/a-complete.mp3")]);
    let r = queued(&complete, "1");
    let late_first = event(Stage::First, 200, &[("a", "https://h/a-first.wav")]);
    let out = ingest_callback(Some(&r), &late_first, &body("2"), &claimant("r2"), now(1)).record;
    let a = &out.files["a"];
    assert_eq!((a.url.as_str(), a.key.as_str()), ("https://h/a-complete.mp3", "tasks/task-1/a.mp3"));

    let same_stage = event(Stage::Complete, 200, &[("a", "https://h/a-again.wav")]);
    let out = ingest_callback(Some(&r), &same_stage, &body("3"), &claimant("r3"), now(2)).record;
    assert_eq!(out.files["a"].url, "https://h/a-again.wav", "an event at the task's own stage is authoritative");
}

#[test]
fn an_unknown_family_is_named_by_a_later_known_one() {
    let mut unknown = event(Stage::Final, 200, &[]);
    unknown.family = Family::Unknown;
    let r = ingest_callback(None, &unknown, &body("u"), &claimant("r"), now(0)).record;
    assert_eq!(r.family, Family::Unknown);
    let mut wav = event(Stage::Final, 200, &[]);
    wav.family = Family::Wav;
    let out = ingest_callback(Some(&r), &wav, &body("w"), &claimant("r"), now(1)).record;
    assert_eq!(out.family, Family::Wav);
    let mut midi = event(Stage::Final, 200, &[]);
    midi.family = Family::Midi;
    assert_eq!(ingest_callback(Some(&out), &midi, &body("m"), &claimant("r"), now(1)).record.family, Family::Wav);
}

#[test]
fn last_received_never_goes_back() {
    let e = event(Stage::Final, 200, &[]);
    let r = ingest_callback(None, &e, &body("a"), &claimant("r"), now(10)).record;
    let out = ingest_callback(Some(&r), &e, &body("a"), &claimant("r"), now(3)).record;
    assert_eq!(out.last_received_at, now(10));
}

/// ... but a time read beyond any clock's lead (a hand edit, a digit too many) is not carried
/// on: it would keep the task out of the sweeper's sight until then.
#[test]
fn last_received_far_ahead_of_the_clock_is_not_carried_on() {
    let e = event(Stage::Final, 200, &[]);
    let mut r = ingest_callback(None, &e, &body("a"), &claimant("r"), now(0)).record;
    r.last_received_at = Timestamp::from_unix_ms(17_650_000_000_000);
    let out = ingest_callback(Some(&r), &e, &body("a"), &claimant("r"), now(10)).record;
    assert_eq!(out.last_received_at, now(10));
    // Within the lead, another request's clock ahead of this one: kept.
    r.last_received_at = now(10).plus(Duration::from_secs(30));
    let out = ingest_callback(Some(&r), &e, &body("a"), &claimant("r"), now(10)).record;
    assert_eq!(out.last_received_at, now(40));
}

#[test]
fn last_received_is_the_latest_in_time_not_in_text() {
    let e = event(Stage::Final, 200, &[]);
    let mut r = ingest_callback(None, &e, &body("a"), &claimant("r"), now(0)).record;
    // Stored by another writer without millis: as text it sorts after every time of its second.
    let whole: Timestamp = "2025-11-23T15:00:01Z".parse().unwrap();
    r.last_received_at = whole;
    let half_past = Timestamp::from_unix_ms(whole.unix_ms + 500);
    let out = ingest_callback(Some(&r), &e, &body("a"), &claimant("r"), half_past).record;
    assert_eq!(out.last_received_at, half_past);
    assert_eq!(serde_json::to_value(&out).unwrap()["last_received_at"], "2025-11-23T15:00:01.500Z");
}

/// A registered task is out of the index, but one read marked (a save of its first result
/// under way) keeps its mark through another writer's sync: dropped, with the fence kept, a
/// stopped save would leave the task fenced where the sweeper never looks.
#[test]
fn a_registered_task_read_marked_keeps_its_mark() {
    let mut registered = crate::register::Registration { family: Family::VocalSeparation, client_ref: None }.record(
        &suno_callbacks::TaskId::parse("task-1").unwrap(),
        now(0),
        std::time::Duration::ZERO,
    );
    assert_eq!(registered.open, None);
    (registered.open, registered.adding) = (Some(crate::OPEN_MARKER.to_owned()), Some(registered.generation + 1));
    registered.sync_open_marker();
    assert_eq!(registered.open.as_deref(), Some(crate::OPEN_MARKER));
}

#[test]
fn the_open_marker_follows_the_vault_through_merges() {
    let with_files = ingest_callback(
        None,
        &event(Stage::First, 200, &[("vocal", "https://h/v.mp3")]),
        &body("aa"),
        &claimant("req-1"),
        now(0),
    );
    assert_eq!(with_files.record.open.as_deref(), Some(crate::OPEN_MARKER));
    let json = serde_json::to_value(&with_files.record).unwrap();
    assert_eq!(json["open"], "open");

    // Settled as recorded, it stays open until its manifest job records the manifest.
    let without_files = ingest_callback(None, &event(Stage::Final, 200, &[]), &body("bb"), &claimant("req-2"), now(0));
    assert_eq!(without_files.record.vault, VaultState::Complete);
    assert_eq!(without_files.record.open.as_deref(), Some("open"));
    let mut recorded = without_files.record.clone();
    (recorded.manifest_key, recorded.open) = (Some("tasks/task-1/manifest.json".into()), None);
    let again = ingest_callback(Some(&recorded), &event(Stage::Final, 200, &[]), &body("bb"), &claimant("r"), now(1));
    assert_eq!(again.record.open, None);
    // One settled without its manifest before `open` marked that: a duplicate marks it.
    let mut unmarked = without_files.record.clone();
    unmarked.open = None;
    let duplicate =
        ingest_callback(Some(&unmarked), &event(Stage::Final, 200, &[]), &body("bb"), &claimant("r"), now(1));
    assert!(duplicate.duplicate);
    assert_eq!(duplicate.record.open.as_deref(), Some("open"));
    assert!(serde_json::to_value(&again.record).unwrap().get("open").is_none(), "absent, not null");

    // The downloader settles the vault and removes the marker; a new file reopens both.
    let mut settled = with_files.record.clone();
    set_status(&mut settled, "vocal", FileStatus::Stored);
    settled.vault = VaultState::Complete;
    (settled.manifest_key, settled.open) = (Some("tasks/task-1/manifest.json".into()), None);
    let same_file = ingest_callback(
        Some(&settled),
        &event(Stage::First, 200, &[("vocal", "https://h/v.mp3")]),
        &body("cc"),
        &claimant("req-3"),
        now(5),
    );
    assert_eq!((same_file.record.vault, same_file.record.open.as_deref()), (VaultState::Complete, None));
    let reopened = ingest_callback(
        Some(&settled),
        &event(Stage::Final, 200, &[("drums", "https://h/d.mp3")]),
        &body("dd"),
        &claimant("req-3"),
        now(5),
    );
    assert_eq!((reopened.record.vault, reopened.record.open.as_deref()), (VaultState::Pending, Some("open")));

    // A pending record written before the marker existed gets it on its next delivery.
    let mut legacy = with_files.record.clone();
    legacy.open = None;
    let marked = ingest_callback(
        Some(&legacy),
        &event(Stage::First, 200, &[("vocal", "https://h/v.mp3")]),
        &body("aa"),
        &claimant("req-4"),
        now(6),
    );
    assert_eq!(marked.record.open.as_deref(), Some("open"));
}

#[test]
fn reclaim_takes_released_or_expired_files_and_reports_the_rest() {
    let e =
        event(Stage::Complete, 200, &[("a", "https://h/a.mp3"), ("b", "https://h/b.mp3"), ("c", "https://h/c.mp3")]);
    let mut r = ingest_callback(None, &e, &body("aa"), &claimant("r1"), now(0)).record;
    r.files.get_mut("a").unwrap().status = FileStatus::Queued;
    let b = r.files.get_mut("b").unwrap();
    b.status = FileStatus::Pending;
    b.claim = None;

    let (updated, claims) = reclaim(&r, &claimant("r2"), now(10), &["a", "b", "c"]);
    let updated = updated.expect("b was released");
    assert_eq!(updated.version, r.version + 1);
    assert_eq!(job_names(&claims), vec!["b"]);
    assert_eq!(claims.wait_for, vec!["c"]);
    assert_eq!(updated.files["b"].claim.as_deref(), Some("r2"));

    let (none, claims) = reclaim(&updated, &claimant("r3"), now(11), &["a", "b", "c"]);
    assert!(none.is_none());
    assert_eq!(claims.wait_for, vec!["b", "c"]);
    assert_eq!(reclaim(&updated, &claimant("r3"), now(11), &["a"]).1, Claims::default());

    let (later, claims) = reclaim(&updated, &claimant("r3"), now(31), &["a", "b", "c"]);
    assert_eq!(job_names(&claims), vec!["c"], "c's lease ran out; b's (renewed at 10 s) has not");
    assert_eq!(claims.wait_for, vec!["b"]);
    assert_eq!(later.unwrap().files["c"].claim.as_deref(), Some("r3"));
}

#[test]
fn reclaim_sends_again_a_file_whose_message_cannot_be_on_the_queue_any_more() {
    let e =
        event(Stage::Complete, 200, &[("q", "https://h/q.mp3"), ("d", "https://h/d.mp3"), ("p", "https://h/p.mp3")]);
    let mut r = ingest_callback(None, &e, &body("aa"), &claimant("r1"), now(0)).record;
    set_status(&mut r, "q", FileStatus::Queued);
    let d = r.files.get_mut("d").unwrap();
    d.status = FileStatus::Downloading;
    d.claim = Some("worker".to_owned());
    d.lease_until = Some(LeaseEnd::at(now(600)));
    set_status(&mut r, "p", FileStatus::Queued);
    r.files.get_mut("p").unwrap().lease_until = None;
    let retention = crate::download::DOWNLOAD_QUEUE_RETENTION.as_secs() as i64;

    // q's lease ended at 30 s, d's at 600 s: until the queue's retention has passed since,
    // their messages may still come.
    assert_eq!(reclaim(&r, &claimant("r2"), now(30 + retention), &[]).1, Claims::default());
    let (updated, claims) = reclaim(&r, &claimant("r2"), now(31 + retention), &[]);
    assert_eq!(job_names(&claims), vec!["q"]);
    assert_eq!(updated.unwrap().files["q"].claim.as_deref(), Some("r2"));

    let (updated, claims) = reclaim(&r, &claimant("r2"), now(601 + retention), &[]);
    assert_eq!(
        job_names(&claims),
        vec!["d", "q"],
        "p, queued without a lease (written before releases kept one), is left alone"
    );
    let updated = updated.unwrap();
    assert_eq!((updated.files["d"].status, updated.files["d"].claim.as_deref()), (FileStatus::Enqueuing, Some("r2")));
    // Claimed as reopened: uncommitted until the task item says the new generation.
    assert_eq!(updated.generation, r.generation + 1);
    assert_eq!(
        (updated.files["d"].generation, updated.files["q"].generation),
        (Some(r.generation + 1), Some(r.generation + 1))
    );
    assert_eq!(updated.files["d"].url, "https://h/d.mp3", "no newer URL came: its own");

    // A newer URL came while it was being downloaded: it stays beside the URL sent again (an
    // earlier attempt's unrecorded copy of that is looked for first; the newer is copied
    // should it fail for good).
    let mut with_next = r.clone();
    let d = with_next.files.get_mut("d").unwrap();
    (d.next_url, d.next_key) = (Some("https://h/d-new.wav".into()), Some("tasks/task-1/d.wav".into()));
    let (updated, claims) = reclaim(&with_next, &claimant("r2"), now(601 + retention), &[]);
    let d = &updated.unwrap().files["d"];
    assert_eq!((d.url.as_str(), d.next_url.as_deref()), ("https://h/d.mp3", Some("https://h/d-new.wav")));
    let job = claims.to_enqueue.iter().find(|j| j.name == "d").unwrap();
    assert_eq!(job.url, "https://h/d.mp3");
}

/// A poll's reopens are counted per URL: a file reopened at its URL that a callback gives a
/// newer URL (before its copy) counts from 0 again.
#[test]
fn a_newer_url_for_a_file_reopened_by_a_poll_counts_its_reopens_from_zero() {
    let first = event(Stage::First, 200, &[("a", "https://h/a.mp3")]);
    let mut r = ingest_callback(None, &first, &body("1"), &claimant("r"), now(0)).record;
    r.files.get_mut("a").unwrap().relinks = 3;
    let same = event(Stage::Complete, 200, &[("a", "https://h/a.mp3")]);
    let kept = ingest_callback(Some(&r), &same, &body("2"), &claimant("r2"), now(1)).record;
    assert_eq!(kept.files["a"].relinks, 3, "the same URL: its reopens stand");
    let newer = event(Stage::Complete, 200, &[("a", "https://h/a.wav")]);
    let out = ingest_callback(Some(&r), &newer, &body("3"), &claimant("r2"), now(1)).record;
    assert_eq!((out.files["a"].url.as_str(), out.files["a"].relinks), ("https://h/a.wav", 0));
}

/// A newer URL too long to keep beside the one being copied is dropped (the whole callback
/// would otherwise be refused as too large once two such URLs share the file's item).
#[test]
fn a_newer_url_too_long_to_keep_beside_the_copied_one_is_dropped() {
    let first = event(Stage::First, 200, &[("a", "https://h/a.mp3")]);
    let mut r = ingest_callback(None, &first, &body("1"), &claimant("r"), now(0)).record;
    set_status(&mut r, "a", FileStatus::Downloading);
    let prefix = "https://h/a.wav?sig=";
    let long = format!("{prefix}{}", "s".repeat(MAX_NEXT_URL_BYTES + 1 - prefix.len()));
    let complete = event(Stage::Complete, 200, &[("a", long.as_str())]);
    let merge = ingest_callback(Some(&r), &complete, &body("2"), &claimant("r2"), now(1));
    let out = merge.record;
    assert_eq!((out.files["a"].url.as_str(), out.files["a"].next_url.as_deref()), ("https://h/a.mp3", None));
    assert_eq!(merge.newer_urls_dropped, ["a"], "named, for the log");
    let fits = format!("{prefix}{}", "s".repeat(MAX_NEXT_URL_BYTES - prefix.len()));
    let complete = event(Stage::Complete, 200, &[("a", fits.as_str())]);
    let merge = ingest_callback(Some(&r), &complete, &body("3"), &claimant("r2"), now(1));
    assert_eq!(merge.record.files["a"].next_url.as_deref(), Some(fits.as_str()));
    assert!(merge.newer_urls_dropped.is_empty());
}

// --- bounds: the record stays well inside DynamoDB's item limit ---------------------------

#[test]
fn long_messages_are_cut_on_a_character_boundary_and_marked() {
    let long = "é".repeat(300_000);
    let mut first = event(Stage::Complete, 200, &[]);
    first.message = long.clone();
    let r = ingest_callback(None, &first, &body("1"), &claimant("r"), now(0)).record;
    let mut failed = event(Stage::Error, 500, &[]);
    failed.message = format!("x{long}");
    let out = ingest_callback(Some(&r), &failed, &body("2"), &claimant("r"), now(1)).record;

    let failure = out.failure.as_ref().unwrap().message.as_str();
    let kept = [out.message.as_str(), out.callbacks["complete-1"].message.as_str(), failure];
    for (message, original) in kept.into_iter().zip([&long, &long, &format!("x{long}")]) {
        assert!(message.len() <= MAX_MESSAGE_BYTES, "{}", message.len());
        assert!(message.len() > MAX_MESSAGE_BYTES - 100, "{}", message.len());
        let cut = message.find('…').unwrap();
        assert!(original.starts_with(&message[..cut]));
        assert_eq!(&message[cut..], format!("… [truncated: {} bytes in the archived body]", original.len()));
    }
    assert_eq!(out.callbacks["error-2"].message, failure);

    let mut exact = event(Stage::Complete, 200, &[]);
    exact.message = "m".repeat(MAX_MESSAGE_BYTES);
    let r = ingest_callback(None, &exact, &body("3"), &claimant("r"), now(0)).record;
    assert_eq!(r.message, exact.message, "a message at the limit is kept whole");
}

fn midi(notes: usize) -> Details {
    let note = MidiNote { pitch: 60, start: 0.046875, end: 0.19270833333333334, velocity: 1.0 };
    Details::Midi {
        state: Some("complete".into()),
        instruments: vec![MidiInstrument { name: "Drums".into(), notes: vec![note; notes] }],
    }
}

#[test]
fn details_over_the_limit_become_a_pointer_to_the_object_holding_them() {
    let mut small = event(Stage::Final, 200, &[]);
    small.details = midi(10);
    let r = ingest_callback(None, &small, &body("s"), &claimant("r"), now(0)).record;
    assert_eq!(r.details, Some(serde_json::to_value(&small.details).unwrap()));
    assert_eq!(oversized_details(&small), None, "kept in the task item");

    let mut large = event(Stage::Final, 200, &[]);
    large.details = midi(10_000);
    let full = serde_json::to_string(&large.details).unwrap().len();
    assert!(full > MAX_DETAILS_BYTES);
    let out = ingest_callback(Some(&r), &large, &body("l"), &claimant("r"), now(1)).record;
    // Named by the details' own JSON, not the body they came in.
    let json = serde_json::to_string(&large.details).unwrap();
    let details_key = format!("tasks/task-1/details/final-{}.json", crate::accept::body_sha256_hex(json.as_bytes()));
    assert_eq!(
        out.details,
        Some(serde_json::json!({
            "kind": "in_body", "details_kind": "midi", "bytes": full,
            "details_key": details_key, "body_key": "tasks/task-1/callbacks/x-l.json"
        }))
    );
    // What the caller keeps under `details_key`: the details whole, as JSON.
    let kept = oversized_details(&large).expect("over the limit");
    assert!(kept == serde_json::to_string(&large.details).unwrap(), "the details' own JSON");
    assert!(item_size_estimate(&out) < 10_000, "{}", item_size_estimate(&out));
}

/// A pointer to details kept apart says something: a later body saying nothing of them (a
/// failure after the success, its MIDI `data` null) leaves it, and GET's link to them.
#[test]
fn a_pointer_to_details_kept_apart_outlives_a_later_empty_body() {
    let mut large = event(Stage::Final, 200, &[]);
    large.details = midi(10_000);
    let r = ingest_callback(None, &large, &body("l"), &claimant("r"), now(0)).record;
    assert_eq!(r.details.as_ref().map(|d| d["kind"].clone()), Some(serde_json::json!("in_body")));
    let mut failed = event(Stage::Final, 500, &[]);
    failed.details = Details::Midi { state: None, instruments: vec![] };
    let out = ingest_callback(Some(&r), &failed, &body("f"), &claimant("r"), now(1)).record;
    assert_eq!(out.details, r.details);
    assert_eq!(out.failure.map(|f| f.code), Some(500));
}

#[test]
fn the_item_estimate_is_the_largest_item_and_what_the_downloader_adds_to_a_file() {
    let long = format!("https://h/{}", "a".repeat(5_000));
    let one = ingest_callback(None, &event(Stage::Final, 200, &[("a", &long)]), &body("a"), &claimant("r"), now(0));
    let json = |v: &dyn erased::Json| v.len();
    let file = json(&one.record.files["a"]);
    assert!(file > 5_000);
    assert_eq!(
        item_size_estimate(&one.record),
        file + 512 + crate::text::MAX_REASON_BYTES,
        "the file item is the largest"
    );
    let none = ingest_callback(None, &event(Stage::Final, 200, &[]), &body("a"), &claimant("r"), now(0)).record;
    let named: usize = none.callbacks.keys().map(|id| id.len() + 3).sum();
    assert_eq!(
        item_size_estimate(&none),
        json(&none) + named + 512 + crate::text::MAX_REASON_BYTES,
        "the task item, its body named in `bodies`"
    );
}

/// A task's readers Query all of its items: a record may not grow past about one page, even
/// by files whose items each fit; one already past it still takes a duplicate.
#[test]
fn a_record_growing_past_its_bound_is_too_large_to_record_but_not_a_duplicate() {
    let url = |i: usize| format!("https://h/{i}.mp3?sig={}", "s".repeat(20_000));
    let names: Vec<(String, String)> = (0..60).map(|i| (format!("f{i}"), url(i))).collect();
    let files = |n: usize| names[..n].iter().map(|(n, u)| (n.as_str(), u.as_str())).collect::<Vec<_>>();
    let within = ingest_callback(None, &event(Stage::First, 200, &files(40)), &body("a"), &claimant("r"), now(0));
    assert_eq!(too_large_to_record(None, &within.record), None, "40 files of 20 KB fit");

    let past = event(Stage::Complete, 200, &files(60));
    let grown = ingest_callback(Some(&within.record), &past, &body("b"), &claimant("r"), now(1)).record;
    let bytes = too_large_to_record(Some(&within.record), &grown).expect("60 do not");
    assert!(bytes > MAX_RECORD_ESTIMATE_BYTES && bytes < 60 * 21_000, "{bytes}");
    assert!(item_size_estimate(&grown) < MAX_ITEM_ESTIMATE_BYTES, "though every item fits");
    let first = ingest_callback(None, &past, &body("b"), &claimant("r"), now(1)).record;
    assert!(too_large_to_record(None, &first).is_some(), "nor as a new task's first callback");

    // Written before the bound: a duplicate delivery adds nothing, and is taken, though its
    // claims and counts grow the items (its files released, it claims them again).
    let mut released = grown.clone();
    for file in released.files.values_mut() {
        (file.status, file.claim, file.lease_until) = (FileStatus::Pending, None, None);
    }
    let again = ingest_callback(Some(&released), &past, &body("b"), &claimant("r2"), now(2)).record;
    assert!(crate::items::item_bytes(&again).total > crate::items::item_bytes(&released).total);
    assert_eq!(too_large_to_record(Some(&released), &again), None);
    let more = event(Stage::Complete, 200, &[("g", "https://h/g.mp3")]);
    let more = ingest_callback(Some(&grown), &more, &body("c"), &claimant("r"), now(3)).record;
    assert!(too_large_to_record(Some(&grown), &more).is_some(), "a new file is not");
}

/// The JSON size of anything serializable, behind one `dyn`.
mod erased {
    pub trait Json {
        fn len(&self) -> usize;
    }
    impl<T: serde::Serialize> Json for T {
        fn len(&self) -> usize {
            serde_json::to_vec(self).unwrap().len()
        }
    }
}

// --- property: any order of events ------------------------------------------------------

fn rank(stage: Stage) -> u8 {
    match stage {
        Stage::Text => 0,
        Stage::First => 1,
        _ => 2,
    }
}

#[derive(Debug, Clone)]
struct Step {
    stage: Stage,
    code: i64,
    files: Vec<(u8, u8)>,
    /// What the downloader does to each file before the next callback.
    settle: Vec<(u8, bool)>,
    /// The provider delivering an earlier step's body again, byte for byte, instead.
    repeat: Option<u8>,
    /// Whether the request's messages went out (its claimed files `queued`), or it stopped
    /// first, leaving them `enqueuing` under its claim.
    sent: bool,
    /// Seconds before this callback: past the 30 s lease, a stopped request's claims lapse.
    gap: u8,
}

fn step() -> impl Strategy<Value = Step> {
    (
        prop::sample::select(vec![Stage::Text, Stage::First, Stage::Complete, Stage::Error, Stage::Final]),
        prop::sample::select(vec![200i64, 400, 501]),
        prop::collection::vec((0u8..5, 0u8..3), 0..4),
        prop::collection::vec((0u8..5, any::<bool>()), 0..3),
        prop::option::weighted(0.3, 0u8..10),
        prop::bool::weighted(0.8),
        1u8..90,
    )
        .prop_map(|(stage, code, files, settle, repeat, sent, gap)| Step {
            stage,
            code,
            files,
            settle,
            repeat,
            sent,
            gap,
        })
}

proptest! {
    #[test]
    fn any_order_never_moves_back_and_never_loses_a_stored_file(steps in prop::collection::vec(step(), 1..10)) {
        let mut record: Option<TaskRecord> = None;
        let mut stored: Vec<(String, String)> = Vec::new();
        let mut delivered: Vec<(CallbackEvent, BodyInfo)> = Vec::new();
        let mut at = 0i64;
        for (i, s) in steps.iter().enumerate() {
            at += i64::from(s.gap);
            let again = s.repeat.and_then(|k| delivered.get(usize::from(k)).cloned());
            let duplicate = again.is_some();
            let (e, b) = again.unwrap_or_else(|| {
                let files: Vec<(String, String)> =
                    s.files.iter().map(|(n, u)| (format!("f{n}"), format!("https://h/{n}-{u}.mp3"))).collect();
                let refs: Vec<(&str, &str)> = files.iter().map(|(n, u)| (n.as_str(), u.as_str())).collect();
                (event(s.stage, s.code, &refs), body(&format!("{i}")))
            });
            delivered.push((e.clone(), b.clone()));
            let request = format!("r{i}");
            let m = ingest_callback(record.as_ref(), &e, &b, &claimant(&request), now(at));
            let mut next = m.record;

            if let Some(before) = &record {
                prop_assert!(rank(next.stage) >= rank(before.stage), "{} -> {}", before.stage, next.stage);
                if rank(before.stage) == 2 {
                    prop_assert_eq!(&next.stage, &before.stage, "a task that ended keeps its stage");
                    prop_assert_eq!((next.code, &next.message), (before.code, &before.message));
                }
                prop_assert_eq!(next.version, before.version + 1);
                prop_assert_eq!(next.deliveries, before.deliveries + 1);
                if duplicate {
                    // The same body again: counted, and its stranded files sent again, but
                    // nothing it says is taken a second time.
                    prop_assert_eq!((next.stage, next.code, &next.message), (before.stage, before.code, &before.message));
                    prop_assert_eq!(next.files.keys().collect::<Vec<_>>(), before.files.keys().collect::<Vec<_>>());
                    prop_assert_eq!(next.callbacks.len(), before.callbacks.len());
                    for (name, f) in &next.files {
                        prop_assert_eq!(&f.url, &before.files[name].url, "{}", name);
                    }
                }
            }
            for (name, key) in &stored {
                let f = &next.files[name];
                prop_assert_eq!(f.status, FileStatus::Stored);
                prop_assert_eq!(&f.key, key);
            }
            for f in &e.files {
                prop_assert!(next.files.contains_key(&f.name));
            }
            prop_assert!(next.files.values().all(|f| f.status != FileStatus::Pending), "every pending file is claimed");
            let claimed =
                next.files.values().filter(|f| f.status == FileStatus::Enqueuing && f.claim.as_ref() == Some(&request));
            prop_assert_eq!(claimed.count(), m.claims.to_enqueue.len());
            // Another request's claim left in place is still under its lease (a lapsed one is taken over).
            let others_live = next.files.values().filter(|f| f.status == FileStatus::Enqueuing && f.claim.as_ref() != Some(&request));
            for f in others_live {
                prop_assert!(f.lease_until.is_some_and(|until| until.holds_at(now(at))), "{:?}", f);
            }
            if next.files.values().any(|f| !f.status.is_settled()) {
                prop_assert_eq!(next.vault, VaultState::Pending);
            }

            if s.sent {
                mark_all_queued(&mut next);
            }
            for (n, ok) in &s.settle {
                let name = format!("f{n}");
                if let Some(f) = next.files.get_mut(&name)
                    && !f.status.is_settled()
                {
                    f.status = if *ok { FileStatus::Stored } else { FileStatus::Failed };
                    if *ok {
                        stored.push((name, f.key.clone()));
                    }
                }
            }
            record = Some(next);
        }
    }
}

/// A body that arrived before its merge (a parked callback replayed) dates the task's first
/// receipt and its callback entry; `last_received_at` is the merge's. Replayed after a later
/// callback was recorded directly, it moves the first receipt back.
#[test]
fn a_body_that_arrived_earlier_is_dated_when_it_arrived() {
    let parked = BodyInfo { arrived_at: Some(now(0)), ..body("aa") };
    let first = ingest_callback(None, &event(Stage::Text, 200, &[]), &parked, &claimant("replay"), now(60)).record;
    assert_eq!((first.first_received_at, first.last_received_at), (now(0), now(60)));
    assert_eq!(first.callbacks.values().map(|c| c.received_at).collect::<Vec<_>>(), vec![now(0)]);

    let direct = ingest_callback(None, &event(Stage::First, 200, &[]), &body("bb"), &claimant("req"), now(30)).record;
    let parked = BodyInfo { arrived_at: Some(now(10)), ..body("cc") };
    let merged = ingest_callback(Some(&direct), &event(Stage::Text, 200, &[]), &parked, &claimant("replay"), now(90));
    let r = &merged.record;
    assert_eq!((r.first_received_at, r.last_received_at), (now(10), now(90)));
    let entry = r.callbacks.values().find(|c| c.stage == Stage::Text).expect("the replayed callback");
    assert_eq!(entry.received_at, now(10));
    // A registered task's first callback, replayed: dated when it arrived, after the
    // registration.
    let registration = crate::register::Registration::parse(br#"{"family":"music"}"#).unwrap();
    let registered =
        registration.record(&TaskId::parse("task-1").unwrap(), now(0), std::time::Duration::from_secs(600));
    let parked = BodyInfo { arrived_at: Some(now(40)), ..body("ee") };
    let r =
        ingest_callback(Some(&registered), &event(Stage::Text, 200, &[]), &parked, &claimant("replay"), now(90)).record;
    assert_eq!((r.first_received_at, r.last_received_at, r.deliveries), (now(40), now(90), 1));
    // A clock behind the arrival never dates a callback in the future.
    let ahead = BodyInfo { arrived_at: Some(now(120)), ..body("dd") };
    let r = ingest_callback(None, &event(Stage::Text, 200, &[]), &ahead, &claimant("replay"), now(100)).record;
    assert_eq!(r.first_received_at, now(100));
}

/// A failure without files keeps the family a client registered the task with, though its
/// message reads as lyrics (kie's lyrics failure names the "Song Description", which a music
/// task's moderation may as well); a task ingest registered from an unsigned body, a success,
/// or a failure whose body names its family by a key, takes the family the callback shows.
#[test]
fn a_failure_keeps_the_family_a_client_registered() {
    let task = TaskId::parse("task-1").unwrap();
    let registration = crate::register::Registration::parse(br#"{"family":"music"}"#).unwrap();
    let registered = registration.record(&task, now(0), Duration::from_secs(600));
    let flagged = CallbackEvent {
        family: Family::Lyrics,
        message: "Song Description flagged for moderation".into(),
        ..event(Stage::Error, 400, &[])
    };
    assert!(!flagged.family_is_a_guess(), "its message names lyrics");
    let r = ingest_callback(Some(&registered), &flagged, &body("aa"), &claimant("req"), now(60)).record;
    assert_eq!((r.family, r.stage), (Family::Music, Stage::Error));
    // A client's registration written before `registered_family` existed: its time alone.
    let earlier_build = TaskRecord { registered_family: None, ..registered.clone() };
    let r = ingest_callback(Some(&earlier_build), &flagged, &body("aa"), &claimant("req"), now(60)).record;
    assert_eq!(r.family, Family::Music, "a client's registration all the same");
    // Lyrics variants, every one failed, are lyrics for sure: they correct the registration.
    let variant = suno_callbacks::LyricsVariant { status: "failed".into(), ..Default::default() };
    let failed_variants = CallbackEvent { details: Details::Lyrics { variants: vec![variant] }, ..flagged.clone() };
    let r = ingest_callback(Some(&registered), &failed_variants, &body("aa"), &claimant("req"), now(60)).record;
    assert_eq!(r.family, Family::Lyrics);

    let unsigned = crate::register::Registration::unsigned_record(Family::Music, &task, now(0));
    let r = ingest_callback(Some(&unsigned), &flagged, &body("aa"), &claimant("req"), now(60)).record;
    assert_eq!(r.family, Family::Lyrics, "no client named the family");
    let lyrics = CallbackEvent { family: Family::Lyrics, ..event(Stage::Complete, 200, &[]) };
    let r = ingest_callback(Some(&registered), &lyrics, &body("bb"), &claimant("req"), now(60)).record;
    assert_eq!(r.family, Family::Lyrics, "a success shows its family");
    let separation = CallbackEvent { family: Family::VocalSeparation, ..event(Stage::Error, 500, &[]) };
    let r = ingest_callback(Some(&registered), &separation, &body("cc"), &claimant("req"), now(60)).record;
    assert_eq!(r.family, Family::VocalSeparation, "its failure body names it (vocal_removal_info)");
}

/// A file an attempt wrote at a generation its task item never reached (the attempt stopped
/// before its task write) is committed by the next reclaim (the sweeper's): its claim's save
/// then writes the task item at that generation, and the file can read as `queued`.
#[test]
fn reclaim_commits_a_file_a_stopped_attempt_left_uncommitted() {
    let e = event(Stage::Complete, 200, &[("a", "https://h/a.mp3")]);
    let mut r = ingest_callback(None, &e, &body("aa"), &claimant("r1"), now(0)).record;
    r.files.get_mut("a").unwrap().status = FileStatus::Queued;
    let mut late = FileEntry::pending("https://h/b.mp3", "tasks/t1/b.mp3".into(), Stage::Complete);
    late.generation = Some(r.generation + 1);
    r.files.insert("b".into(), late);

    let (updated, claims) = reclaim(&r, &claimant("sweeper"), now(100), &[]);
    let updated = updated.expect("b is claimed");
    assert_eq!(job_names(&claims), vec!["b"]);
    assert_eq!(updated.generation, r.generation + 1, "the task item reaches b's generation");
    assert_eq!(updated.vault, VaultState::Pending);
    assert_eq!(updated.open.as_deref(), Some("open"));
    let plan = crate::items::plan_save(Some(&r), &updated).unwrap();
    assert!(plan.task.is_some(), "the task item is written, committing b");
}
