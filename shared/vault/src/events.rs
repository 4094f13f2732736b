//! The events stemvault publishes about a task (EventBridge, source [`EVENT_SOURCE`]; and, by
//! the notify function, signed webhooks): what happened, and what is vaulted.
//!
//! Every event has a stable id (`detail.event_id`): the same event published twice (a
//! delivery retried after a failed publish, two workers settling the same file set) has the
//! same id, so consumers drop duplicates by it. Ids are made of the task id, the event type
//! and what makes the event unique within the task: the stage for a stage change or a
//! failure, the file set's generation and the stage for a vaulting (and `watch_ended` after
//! them when a watch for a fresh URL ends: [`vaulted_once_unwatched`]; `given_up` for a task
//! given up: [`vaulted`]), the reason, the wait it ends and the stage for a give-up
//! ([`given_up`]).

use std::future::Future;

use serde::{Deserialize, Serialize};
use suno_callbacks::{Family, Stage};

use crate::reason::FailureCode;
use crate::reconcile;
use crate::{PublicFileStatus, TaskRecord, VaultState};

/// The `source` of every event.
pub const EVENT_SOURCE: &str = "stemvault";

/// What an event says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EventType {
    /// The task reached a new stage (`text`, `first`, `complete`, `final`, `error`).
    #[serde(rename = "Task Stage Changed")]
    StageChanged,
    /// Every file of the current file set is settled: `vault` is `complete` or `partial`.
    #[serde(rename = "Task Vaulted")]
    Vaulted,
    /// A failure result, or a task given up on.
    #[serde(rename = "Task Failed")]
    Failed,
}

impl EventType {
    /// EventBridge's `detail-type`.
    pub fn detail_type(self) -> &'static str {
        match self {
            EventType::StageChanged => "Task Stage Changed",
            EventType::Vaulted => "Task Vaulted",
            EventType::Failed => "Task Failed",
        }
    }

    /// The Standard Webhooks payload `type`.
    pub fn webhook_type(self) -> &'static str {
        match self {
            EventType::StageChanged => "task.stage_changed",
            EventType::Vaulted => "task.vaulted",
            EventType::Failed => "task.failed",
        }
    }

    /// The type whose [`EventType::detail_type`] is `detail_type`.
    pub fn from_detail_type(detail_type: &str) -> Option<EventType> {
        [EventType::StageChanged, EventType::Vaulted, EventType::Failed]
            .into_iter()
            .find(|t| t.detail_type() == detail_type)
    }

    fn id_part(self) -> &'static str {
        match self {
            EventType::StageChanged => "stage",
            EventType::Vaulted => "vaulted",
            EventType::Failed => "failed",
        }
    }
}

/// One file as an event shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventFile {
    pub name: String,
    pub key: String,
    pub bytes: Option<u64>,
    pub sha256: Option<String>,
    /// The stored object's media type, as the manifest and `GET` give it (events queued
    /// before it was sent have none).
    #[serde(default)]
    pub content_type: Option<String>,
    pub status: PublicFileStatus,
    pub error: Option<String>,
    /// What kind of failure `error` says (events queued before it was sent have none).
    #[serde(default)]
    pub error_code: Option<FailureCode>,
}

/// An event's `detail`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventDetail {
    /// Stable: the same event published again has the same id.
    pub event_id: String,
    pub task_id: String,
    pub family: Family,
    pub stage: Stage,
    pub vault: VaultState,
    /// Whether a client may stop asking about the task ([`TaskRecord::is_done`], as `GET
    /// /tasks/{id}`'s `done`): a `Task Vaulted` at `text` or `first`, or one while a poll may
    /// still bring a file, is not the last.
    #[serde(default)]
    pub done: bool,
    /// The user's own id for the task, when it was registered with one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_ref: Option<String>,
    /// The provider's `code` and `msg` of the result that set the stage.
    pub code: i64,
    pub message: String,
    /// The task's file-set generation when the event was made: it grows with every file
    /// added or reopened (and a registration completing the task), so a task's events are ordered by generation, then stage (within
    /// both, `Task Vaulted` comes last, but for a give-up's `Task Failed` ([`given_up`]),
    /// which ends them).
    #[serde(default)]
    pub generation: u64,
    pub bucket: String,
    /// Where the manifest of the file set is (for `Task Vaulted`; otherwise once written).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest_key: Option<String>,
    /// Every file of the task, unless they would not fit one event ([`MAX_FILES_BYTES`]).
    pub files: Vec<EventFile>,
    /// How many files the task has when they did not fit (`files` is then empty: read the
    /// manifest or `GET /tasks/{id}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files_omitted: Option<usize>,
    /// Why the reconciler gave the task up (`abandoned`, `not_found`), on that `Task Failed`
    /// only: the rest of the detail shows the task as it was, its last result's `code` and
    /// `message` among it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub given_up: Option<crate::GiveUpReason>,
    /// When and why the reconciler gave the task up (as `GET`'s `abandoned`), on every event
    /// made from the task as given up (not the give-up's own `Task Failed`, made before its
    /// write: it says `given_up`; nor a settle's that read the task just before the give-up):
    /// a `Task Vaulted` saying `done` at `text` or `first` is such a task's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abandoned: Option<crate::Abandoned>,
}

/// The most the `files` of one event may take as JSON. EventBridge refuses an entry over
/// 256 KiB (its source, detail-type and detail), for good: a task whose event could not be
/// published would never settle. The rest of a detail is a few KiB at most (a task id of up
/// to 128 bytes, a message cut to 1 KiB, a client_ref of at most 256 bytes). The
/// adapter that publishes has the last word: an entry past what the notify queue takes goes
/// without its files too (`stemvault_aws::events::entry`).
pub const MAX_FILES_BYTES: usize = 192 * 1024;

/// An event to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskEvent {
    pub kind: EventType,
    pub detail: EventDetail,
}

/// The stable id of the event `kind` of `task_id`, unique by `discriminator`.
pub fn event_id(task_id: &str, kind: EventType, discriminator: &str) -> String {
    format!("{task_id}.{}.{discriminator}", kind.id_part())
}

fn files_of(record: &TaskRecord) -> Vec<EventFile> {
    record
        .files
        .iter()
        .map(|(name, f)| {
            let (error, error_code) = f.shown_failure();
            EventFile {
                name: name.clone(),
                key: f.key.clone(),
                bytes: f.bytes,
                sha256: f.sha256.clone(),
                content_type: f.content_type.clone(),
                status: f.status.public(),
                error,
                error_code,
            }
        })
        .collect()
}

fn detail(
    record: &TaskRecord,
    event_id: String,
    vault: VaultState,
    done: bool,
    bucket: &str,
    manifest_key: Option<String>,
) -> EventDetail {
    let files = files_of(record);
    // A derived Serialize of plain data: cannot fail (0 would list them, as before).
    let files_bytes = serde_json::to_vec(&files).map_or(0, |json| json.len());
    let (files, files_omitted) = match files_bytes > MAX_FILES_BYTES {
        true => (Vec::new(), Some(files.len())),
        false => (files, None),
    };
    EventDetail {
        event_id,
        task_id: record.task_id.clone(),
        family: record.family,
        stage: record.stage,
        vault,
        done,
        client_ref: record.client_ref.clone(),
        code: record.code,
        message: record.message.clone(),
        generation: record.generation,
        bucket: bucket.to_owned(),
        manifest_key,
        files,
        files_omitted,
        given_up: None,
        abandoned: record.abandoned.clone(),
    }
}

/// `Task Stage Changed` for the record's current stage.
pub fn stage_changed(record: &TaskRecord, bucket: &str) -> TaskEvent {
    let id = event_id(&record.task_id, EventType::StageChanged, record.stage.as_str());
    TaskEvent {
        kind: EventType::StageChanged,
        detail: detail(record, id, record.vault, record.is_done(record.vault), bucket, record.manifest_key.clone()),
    }
}

/// `Task Failed` for a record whose result is a failure (`reason` distinguishes failures of
/// one task: the stage of a failure result).
pub fn failed(record: &TaskRecord, bucket: &str, reason: &str) -> TaskEvent {
    failed_with(record, bucket, reason, record.is_done(record.vault))
}

fn failed_with(record: &TaskRecord, bucket: &str, reason: &str, done: bool) -> TaskEvent {
    let id = event_id(&record.task_id, EventType::Failed, reason);
    TaskEvent {
        kind: EventType::Failed,
        detail: detail(record, id, record.vault, done, bucket, record.manifest_key.clone()),
    }
}

/// `Task Failed` for a task the reconciler gives up on, for `reason` (`abandoned`,
/// `not_found`), naming the wait it ends (in Unix ms: since its stage came or it was
/// registered, [`reconcile::waiting_since`]; for `not_found`, since the provider first said
/// it did not know it) and its stage. What revives a task given up starts another wait (a late
/// callback of a later stage; a registration giving a task given up as `not_found` another
/// family, whose not-found day starts afresh; given up there as `abandoned`, its reason
/// differs), so a task given up again gets an event of its own, not a duplicate of the first
/// that consumers would drop. Not the generation or the polls, which writes that revive
/// nothing move too (a `client_ref` registered, a stranded file sent again; the last poll of
/// a task whose give-up was published by a run without a provider key, if a run with a key
/// comes before the give-up is tried again): a give-up tried again after its write failed
/// keeps its id (but after a parked body of its stage replayed meanwhile, which dates the wait
/// from its earlier arrival).
pub fn given_up(record: &TaskRecord, bucket: &str, reason: crate::GiveUpReason) -> TaskEvent {
    let waiting_since = match reason {
        crate::GiveUpReason::Abandoned => reconcile::waiting_since(record),
        // give_up_reason names NotFound only with not_found_since set; the fallback keeps an id
        // for any other caller.
        crate::GiveUpReason::NotFound => record.not_found_since.unwrap_or_else(|| reconcile::waiting_since(record)),
    };
    let id = format!("{reason}.{}.{}", waiting_since.unix_ms, record.stage.as_str());
    // Made before the write that gives the task up.
    let mut event = failed_with(record, bucket, &id, record.is_done_once_given_up());
    event.detail.given_up = Some(reason);
    event
}

/// `Task Vaulted` once the reconciler stops watching a settled task for fresh URLs of its
/// expired files (none came in time, or the provider no longer knows the task), made from the
/// record as that write leaves it ([`crate::reconcile::stop_watching`]): the same files, now
/// `done`, so a consumer waiting on `done` hears it (its settle's event said `false`). None
/// unless that write is what makes the task done, and while a settle is still due (a
/// registration moved its generation on, say): that settle watches the task again, and the
/// watch's end is said once the task is settled, with its manifest (one id, one content).
pub fn vaulted_once_unwatched(watched: &TaskRecord, bucket: &str) -> Option<TaskEvent> {
    let unwatched = crate::reconcile::stop_watching(watched);
    let newly_done = !watched.is_done(watched.vault) && unwatched.is_done(unwatched.vault);
    if !newly_done || !unwatched.is_settled() {
        return None;
    }
    let discriminator = format!("{}.{}.watch_ended", unwatched.generation, unwatched.stage.as_str());
    let id = event_id(&unwatched.task_id, EventType::Vaulted, &discriminator);
    let manifest_key = unwatched.manifest_key.clone();
    Some(TaskEvent {
        kind: EventType::Vaulted,
        detail: detail(&unwatched, id, unwatched.vault, true, bucket, manifest_key),
    })
}

/// `Task Vaulted` for a record whose files are all settled, as `vault`, with its manifest
/// at `manifest_key`: the same for every worker that settles the same file set. A task given
/// up says `done` once its files are settled, which the settle of the same file set and
/// stage before the give-up did not: its event has an id of its own (`….given_up`), not a
/// duplicate of that one's that consumers would drop.
pub fn vaulted(record: &TaskRecord, vault: VaultState, bucket: &str, manifest_key: &str) -> TaskEvent {
    // A file set is settled once per stage: a new stage over the same files is a new event.
    let (generation, stage) = (record.generation, record.stage.as_str());
    let given_up = if record.abandoned.is_some() { ".given_up" } else { "" };
    let discriminator = format!("{generation}.{stage}{given_up}");
    let id = event_id(&record.task_id, EventType::Vaulted, &discriminator);
    let done = record.is_done_once_settled(vault);
    TaskEvent {
        kind: EventType::Vaulted,
        detail: detail(record, id, vault, done, bucket, Some(manifest_key.to_owned())),
    }
}

/// What a `Task Vaulted` of `record` settled as `vault` says, as a digest: its detail but for
/// its id, its generation and the bucket (the deployment's own), with every file even when
/// they would not fit the event. A reopened file that fails again as it failed before (its
/// host still not allowed, its URL still expired) settles the task again at a new
/// generation, saying nothing new: the settle that published the last one keeps its
/// announcement ([`TaskRecord::announced`]), and one that would say the same publishes
/// nothing (a consumer got up to 8 copies of it per file, as webhooks too).
pub fn announcement(record: &TaskRecord, vault: VaultState, manifest_key: &str) -> String {
    use sha2::{Digest, Sha256};
    let done = record.is_done_once_settled(vault);
    let said =
        EventDetail { generation: 0, ..detail(record, String::new(), vault, done, "", Some(manifest_key.to_owned())) };
    // A derived Serialize of plain data: cannot fail.
    let json = serde_json::to_vec(&(said, files_of(record))).unwrap_or_default();
    hex::encode(&Sha256::digest(json)[..16])
}

/// The events ingest publishes once a callback is recorded: none unless the callback
/// speaks for the task's stage (it set it, or is a redelivery of the one that did, whose
/// publish may have failed) and no poll published them already (a poll recorded a result at
/// that stage, [`reconcile::poll_recorded`]: a poll whose publish failed is recorded
/// `unrecorded`, and a later one publishes; polls that bring nothing in between change
/// neither; without this, a task watched for days at one stage, stuck at `first` or with a
/// file's URL expired, sent the same events and webhooks on every poll); then `Task Stage
/// Changed`, and `Task Failed` when that stage is a failure.
pub fn after_callback(record: &TaskRecord, callback_stage: Stage, bucket: &str) -> Vec<TaskEvent> {
    if callback_stage != record.stage || reconcile::poll_recorded(record) {
        return Vec::new();
    }
    let mut events = vec![stage_changed(record, bucket)];
    if !record.succeeded {
        events.push(failed(record, bucket, record.stage.as_str()));
    }
    events
}

/// Publishing events failed, in part or in whole. Always worth trying again: the same
/// events, with the same ids, are published by the retry (a consumer drops the duplicates of
/// those that got through).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{failed} of {total} event(s) were not published: {reason}")]
pub struct PublishError {
    pub failed: usize,
    pub total: usize,
    pub reason: String,
}

impl PublishError {
    /// Always (see above): the same events are published again, with the same ids.
    pub fn is_retryable(&self) -> bool {
        true
    }
}

/// Publish task events (EventBridge, `stemvault_aws::events`; in memory in the tests:
/// `memory::MemoryEvents`). Every function that publishes names it the same way.
pub trait PublishEvents {
    /// Publish `events`, all of them or an error: at least once, never silently dropped.
    fn publish_events(&self, events: &[TaskEvent]) -> impl Future<Output = Result<(), PublishError>> + Send;
}

#[cfg(feature = "test-support")]
pub mod memory;

#[cfg(test)]
mod tests;
