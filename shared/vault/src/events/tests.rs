use std::collections::BTreeSet;

use serde_json::json;
use suno_callbacks::{Family, Stage};

use super::*;
use crate::{CallbackEntry, FileEntry, FileStatus, Timestamp};

fn record() -> TaskRecord {
    let at = Timestamp::from_unix_ms(1_795_446_000_000);
    let mut r = TaskRecord::new("t1", Family::VocalSeparation, Stage::Final, 200, "ok", at);
    let mut vocal = FileEntry::pending("https://cdn.example/v.mp3?sig=x", "tasks/t1/vocal.mp3".into(), Stage::Final);
    (vocal.status, vocal.bytes, vocal.sha256) = (FileStatus::Stored, Some(42), Some("ab".repeat(32)));
    vocal.content_type = Some("audio/mpeg".into());
    let mut drums = FileEntry::pending("https://cdn.example/d.mp3", "tasks/t1/drums.mp3".into(), Stage::Final);
    (drums.status, drums.error) = (FileStatus::Failed, Some("source answered 403 Forbidden".into()));
    drums.error_code = Some(crate::reason::FailureCode::SourceExpired);
    r.files.insert("vocal".into(), vocal);
    r.files.insert("drums".into(), drums);
    r.generation = 3;
    r.client_ref = Some("order-17".into());
    r
}

/// A task with more files than one event can list (an unknown family's 256 URLs under long
/// names) says how many instead: EventBridge refuses an entry over 256 KiB for good, and the
/// task would never settle.
#[test]
fn files_too_many_for_one_event_are_counted_not_listed() {
    let mut r = record();
    for i in 0..256 {
        let name = format!("result/{}/{i:03}", "x".repeat(900));
        let mut f = FileEntry::pending("https://cdn.example/a.mp3", format!("tasks/t1/{name}.mp3"), Stage::Final);
        (f.status, f.bytes, f.sha256) = (FileStatus::Stored, Some(1), Some("ab".repeat(32)));
        r.files.insert(name, f);
    }
    let event = vaulted(&r, VaultState::Partial, "vault-bucket", "tasks/t1/manifest.json");
    let json = serde_json::to_string(&event.detail).unwrap();
    assert!(json.len() < 200 * 1024, "{} bytes", json.len());
    assert_eq!((event.detail.files.len(), event.detail.files_omitted), (0, Some(258)));
    assert_eq!(stage_changed(&r, "b").detail.files_omitted, Some(258));
    assert_eq!(stage_changed(&record(), "b").detail.files_omitted, None);
}

/// An event says whether a client may stop asking, as `GET /tasks/{id}` says once the write
/// it comes with is made: a `Task Vaulted` at `first`, one whose failed file a poll may still
/// bring a fresh URL for (the settle starts that watch), or one while a file is still copied,
/// is not the last; one at a final stage with nothing awaited is, as a give-up's (made before
/// its write) once its files are settled.
#[test]
fn an_event_says_whether_the_task_is_done() {
    let expired = record();
    assert!(!vaulted(&expired, VaultState::Partial, "b", "m").detail.done, "its 403 file is watched for a new URL");
    let mut refused = record();
    refused.files.get_mut("drums").unwrap().error = Some("too_large: the file is larger than the limit".into());
    assert!(vaulted(&refused, VaultState::Partial, "b", "m").detail.done);
    let first = TaskRecord { stage: Stage::First, ..refused.clone() };
    assert!(!vaulted(&first, VaultState::Complete, "b", "m").detail.done, "more stages to come");
    let mut copying = record();
    copying.files.values_mut().for_each(|f| f.status = FileStatus::Queued);
    copying.vault = VaultState::Pending;
    assert!(!stage_changed(&copying, "b").detail.done, "files still copied");
    assert!(given_up(&first, "b", crate::GiveUpReason::Abandoned).detail.done, "given up, its files settled");
    assert!(!given_up(&copying, "b", crate::GiveUpReason::Abandoned).detail.done, "given up, still copying");
}

/// A settle of a task given up says `done` where the settle of the same file set and stage
/// before the give-up did not: an id of its own, or consumers dropping duplicates by id would
/// drop the one saying the task is done.
#[test]
fn a_given_up_tasks_vaulted_event_has_an_id_of_its_own() {
    let first = TaskRecord { stage: Stage::First, ..record() };
    let before = vaulted(&first, VaultState::Complete, "b", "m");
    let abandoned = crate::Abandoned { reason: crate::GiveUpReason::Abandoned, at: first.last_received_at };
    let given_up = TaskRecord { abandoned: Some(abandoned), ..first.clone() };
    let after = vaulted(&given_up, VaultState::Complete, "b", "m");
    assert_eq!(after.detail.event_id, format!("{}.given_up", before.detail.event_id));
    assert_eq!((before.detail.done, after.detail.done), (false, true));
}

#[test]
fn a_vaulted_event_carries_every_file_and_an_id_per_file_set() {
    let r = record();
    let event = vaulted(&r, VaultState::Partial, "vault-bucket", "tasks/t1/manifest.json");
    assert_eq!(event.kind.detail_type(), "Task Vaulted");
    assert_eq!(event.kind.webhook_type(), "task.vaulted");
    assert_eq!(
        serde_json::to_value(&event.detail).unwrap(),
        json!({
            "event_id": "t1.vaulted.3.final",
            "task_id": "t1",
            "family": "vocal_separation",
            "stage": "final",
            "vault": "partial",
            // Its 403 file: a poll may bring a fresh URL (the settle starts watching the task).
            "done": false,
            "client_ref": "order-17",
            "code": 200,
            "message": "ok",
            "generation": 3,
            "bucket": "vault-bucket",
            "manifest_key": "tasks/t1/manifest.json",
            "files": [
                {"name": "drums", "key": "tasks/t1/drums.mp3", "bytes": null, "sha256": null, "content_type": null,
                 "status": "failed", "error": "source answered 403 Forbidden", "error_code": "source_expired"},
                {"name": "vocal", "key": "tasks/t1/vocal.mp3", "bytes": 42, "sha256": "ab".repeat(32),
                 "content_type": "audio/mpeg", "status": "stored", "error": null, "error_code": null}
            ]
        })
    );
    assert_eq!(
        vaulted(&r, VaultState::Partial, "vault-bucket", "tasks/t1/manifest.json"),
        event,
        "the same for every settler"
    );
    let mut reopened = r.clone();
    reopened.generation += 1;
    assert_eq!(vaulted(&reopened, VaultState::Partial, "b", "k").detail.event_id, "t1.vaulted.4.final");
    let read: EventDetail = serde_json::from_value(serde_json::to_value(&event.detail).unwrap()).unwrap();
    assert_eq!(read, event.detail);
}

#[test]
fn a_callback_for_the_task_s_stage_announces_it_and_a_failure_also_fails_the_task() {
    let r = record();
    let events = after_callback(&r, Stage::Final, "b");
    assert_eq!(events.len(), 1);
    assert_eq!((events[0].kind, events[0].detail.event_id.as_str()), (EventType::StageChanged, "t1.stage.final"));
    assert!(after_callback(&r, Stage::First, "b").is_empty(), "a late, earlier stage announces nothing");

    let mut failure =
        TaskRecord::new("t2", Family::Music, Stage::Error, 501, "generation failed", Timestamp::from_unix_ms(0));
    failure.vault = VaultState::Complete;
    let events = after_callback(&failure, Stage::Error, "b");
    let kinds: Vec<(EventType, &str)> = events.iter().map(|e| (e.kind, e.detail.event_id.as_str())).collect();
    assert_eq!(kinds, [(EventType::StageChanged, "t2.stage.error"), (EventType::Failed, "t2.failed.error")]);
    assert_eq!((events[1].detail.code, events[1].detail.message.as_str()), (501, "generation failed"));
    assert!(events[1].detail.client_ref.is_none());
    assert!(serde_json::to_value(&events[1].detail).unwrap().get("client_ref").is_none(), "absent, not null");
}

#[test]
fn detail_types_and_webhook_types_name_each_kind_once() {
    for kind in [EventType::StageChanged, EventType::Vaulted, EventType::Failed] {
        assert_eq!(EventType::from_detail_type(kind.detail_type()), Some(kind));
        assert_eq!(serde_json::to_value(kind).unwrap(), json!(kind.detail_type()));
        assert!(kind.webhook_type().starts_with("task."));
    }
    assert_eq!(EventType::from_detail_type("Task Exploded"), None);
    assert_eq!(failed(&record(), "b", "error").detail.event_id, "t1.failed.error");
}

#[test]
fn a_give_up_is_told_apart_by_reason_wait_and_stage() {
    let mut record = record();
    let first = given_up(&record, "b", crate::GiveUpReason::Abandoned);
    // Waited for since its first callback (no callback item of its stage here).
    assert_eq!(first.detail.event_id, "t1.failed.abandoned.1795446000000.final");
    assert_eq!(first.kind, EventType::Failed);
    // Told apart from the result's own failure (and from a Task Vaulted of the same generation
    // and stage, which it follows) by `given_up`.
    assert_eq!(first.detail.given_up, Some(crate::GiveUpReason::Abandoned));
    let json = serde_json::to_value(&first.detail).unwrap();
    assert_eq!(json["given_up"], "abandoned");
    assert_eq!(failed(&record, "b", "error").detail.given_up, None);
    assert!(serde_json::to_value(failed(&record, "b", "error").detail).unwrap().get("given_up").is_none());
    // Writes that revive nothing (a stranded file sent again, a last poll) move the generation
    // and the polls, not the id.
    let moved = TaskRecord { generation: record.generation + 1, polls: record.polls + 1, ..record.clone() };
    let again = given_up(&moved, "b", crate::GiveUpReason::Abandoned);
    assert_eq!((again.detail.event_id, again.detail.generation), (first.detail.event_id, record.generation + 1));
    // A later stage's callback starts another wait; a not-found day its own.
    let came = Timestamp::from_unix_ms(1_795_450_000_000);
    let complete = CallbackEntry {
        stage: Stage::Complete,
        code: 200,
        message: "ok".into(),
        received_at: came,
        body_key: "tasks/t1/callbacks/complete.json".into(),
        bytes: 2,
        deliveries: 1,
    };
    record.callbacks.insert("complete".into(), complete);
    record.stage = Stage::Complete;
    assert_eq!(
        given_up(&record, "b", crate::GiveUpReason::Abandoned).detail.event_id,
        "t1.failed.abandoned.1795450000000.complete"
    );
    record.not_found_since = Some(Timestamp::from_unix_ms(1_795_460_000_000));
    assert_eq!(
        given_up(&record, "b", crate::GiveUpReason::NotFound).detail.event_id,
        "t1.failed.not_found.1795460000000.complete"
    );
}

/// A task given up says so on every event after its give-up's own (which says `given_up`, made
/// before the give-up is recorded), and in its manifest: a `Task Vaulted` saying `done` at
/// `first`, its files settled after the give-up, is told from a finished task.
#[test]
fn events_and_the_manifest_of_a_task_given_up_say_when_and_why() {
    let mut record = TaskRecord { stage: Stage::First, ..record() };
    let give_up = given_up(&record, "b", crate::GiveUpReason::Abandoned);
    assert_eq!(
        (give_up.detail.given_up, give_up.detail.abandoned.as_ref()),
        (Some(crate::GiveUpReason::Abandoned), None)
    );
    assert!(
        serde_json::to_value(vaulted(&record, VaultState::Partial, "b", "m").detail)
            .unwrap()
            .get("abandoned")
            .is_none()
    );
    let at = Timestamp::from_unix_ms(1_800_000_000_000);
    record.abandoned = Some(crate::Abandoned { reason: crate::GiveUpReason::Abandoned, at });
    let settled = vaulted(&record, VaultState::Partial, "b", "m");
    let json = serde_json::to_value(&settled.detail).unwrap();
    assert_eq!(json["abandoned"], json!({"reason": "abandoned", "at": "2027-01-15T08:00:00.000Z"}), "{json}");
    assert_eq!(settled.detail.given_up, None, "that is the give-up's own event's");
    let manifest = serde_json::to_value(crate::Manifest::of(&record, VaultState::Partial, at)).unwrap();
    assert_eq!(manifest["abandoned"], json["abandoned"]);
}

/// A settle saying what the last one said (a reopened file failed again as before, at a new
/// generation, its URL perhaps new) has the same announcement; anything a consumer reads
/// that differs (a file's status or error, the vault, the stage, a file past the event's
/// list) makes it another.
#[test]
fn an_announcement_is_what_a_task_vaulted_says_but_for_its_generation() {
    let r = record();
    let said = announcement(&r, VaultState::Partial, "tasks/t1/manifest.json");
    assert_eq!(said.len(), 32);
    let mut again = r.clone();
    again.generation += 1;
    again.files.get_mut("drums").unwrap().url = "https://cdn.example/d.mp3?fresh=1".into();
    again.files.get_mut("drums").unwrap().relinks = 1;
    assert_eq!(announcement(&again, VaultState::Partial, "tasks/t1/manifest.json"), said);

    let mut stored = r.clone();
    let drums = stored.files.get_mut("drums").unwrap();
    (drums.status, drums.error, drums.bytes) = (FileStatus::Stored, None, Some(7));
    let mut other_error = r.clone();
    other_error.files.get_mut("drums").unwrap().error = Some("source answered 404 Not Found".into());
    let mut later_stage = r.clone();
    later_stage.stage = Stage::Error;
    let mut unlisted = r.clone();
    for i in 0..256 {
        let name = format!("result/{}/{i:03}", "x".repeat(900));
        let f = FileEntry::pending("https://cdn.example/a.mp3", format!("tasks/t1/{i}.mp3"), Stage::Final);
        unlisted.files.insert(name, FileEntry { status: FileStatus::Failed, ..f });
    }
    let mut unlisted_other = unlisted.clone();
    let first_unlisted = format!("result/{}/000", "x".repeat(900));
    unlisted_other.files.get_mut(&first_unlisted).unwrap().status = FileStatus::Stored;
    let others = [
        announcement(&stored, VaultState::Partial, "tasks/t1/manifest.json"),
        announcement(&other_error, VaultState::Partial, "tasks/t1/manifest.json"),
        announcement(&later_stage, VaultState::Partial, "tasks/t1/manifest.json"),
        announcement(&r, VaultState::Complete, "tasks/t1/manifest.json"),
        announcement(&unlisted, VaultState::Partial, "tasks/t1/manifest.json"),
        announcement(&unlisted_other, VaultState::Partial, "tasks/t1/manifest.json"),
    ];
    let distinct: BTreeSet<&String> = others.iter().chain([&said]).collect();
    assert_eq!(distinct.len(), others.len() + 1, "{others:?}");
}

/// The end of a watch for a fresh URL is said once, by one content: only when it makes the
/// task done, and only once the task is settled (a settle still due, say after a
/// registration moved the generation on, watches it again and says `done: false` first).
#[test]
fn a_watch_s_end_is_said_only_of_a_settled_task_it_makes_done() {
    let mut watched = record();
    (watched.vault, watched.manifest_key) = (VaultState::Partial, Some("tasks/t1/manifest.json".into()));
    crate::reconcile::watch(
        &mut watched,
        Timestamp::from_unix_ms(1_795_446_000_000),
        std::time::Duration::from_secs(60),
    );
    let said = vaulted_once_unwatched(&watched, "b").expect("said");
    assert_eq!(said.detail.event_id, "t1.vaulted.3.final.watch_ended");
    assert!(said.detail.done);
    assert_eq!(said.detail.manifest_key.as_deref(), Some("tasks/t1/manifest.json"));

    let settle_due = TaskRecord { manifest_key: None, ..watched.clone() };
    assert_eq!(vaulted_once_unwatched(&settle_due, "b"), None, "its settle comes first");
    let unwatched = TaskRecord { reconcile: None, ..watched.clone() };
    assert_eq!(vaulted_once_unwatched(&unwatched, "b"), None, "done already: said by its settle");
}
