//! What `GET /tasks/<task_id>` answers: the task record, reduced to what callers need, with a
//! presigned download link for each stored file; and what `PUT /tasks/<task_id>` does:
//! register a task before any callback ([`register`]). Plain Rust over small traits.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use serde::Serialize;
use stemvault_vault::register::Registration;
use stemvault_vault::{
    Abandoned, Attempt, Clock, FailureEntry, LoadTask, Manifest, ManifestFile, PublicFileStatus, SaveTask,
    StorageError, StoreError, TaskRecord, Timestamp, VaultState, retry_on_conflict,
};
use suno_callbacks::{Family, Stage, TaskId};

use crate::error::ResultsError;

/// Make a time-limited GET link for one object of the vault bucket.
pub trait PresignDownload {
    fn presign_download(
        &self,
        key: &str,
        expires_in: Duration,
    ) -> impl Future<Output = Result<String, StorageError>> + Send;
}

/// Whether a callback of the task is parked: verified and kept under `parked/` because the
/// table could not take it, until the reconciler's next run records it.
pub trait IsParked {
    fn is_parked(&self, task_id: &TaskId) -> impl Future<Output = Result<bool, StoreError>> + Send;
}

/// Everything the use-cases need.
pub trait Ports: LoadTask + PresignDownload + SaveTask + IsParked + Clock + Sync {}

impl<T> Ports for T where T: LoadTask + PresignDownload + SaveTask + IsParked + Clock + Sync {}

/// What is known of a task.
#[derive(Debug, Clone, PartialEq)]
pub enum Found {
    /// Recorded: as its manifest shows it (boxed: the view is large beside `Parked`).
    Task(Box<TaskView>),
    /// Not recorded yet, but a callback of it is parked (the reconciler records it within
    /// minutes).
    Parked,
}

/// The response body: the task as its manifest shows it, with download links.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TaskView {
    pub task_id: String,
    pub family: Family,
    pub stage: Stage,
    pub code: i64,
    pub message: String,
    pub vault: VaultState,
    /// The task's file-set generation: with the stage, it orders this answer among the task's
    /// events (`detail.generation`).
    pub generation: u64,
    /// Whether nothing more is expected of the task: it was given up (and the files it has are
    /// settled), or it ended (a final stage) with every file settled and nothing the reconciler may still bring (a reopen of
    /// a file that failed for a reason that may pass, a fresh link for an expired one). A
    /// client polling for the task stops here.
    pub done: bool,
    /// When the download links stop working at the latest (sooner should the function's
    /// temporary credentials expire first): only in an answer with links.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub links_expire_at: Option<Timestamp>,
    /// The caller's own id, given when the task was registered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_ref: Option<String>,
    /// Set when the reconciler gave the task up (no result by callback or poll in time, or the
    /// provider has not known it for a day).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub abandoned: Option<Abandoned>,
    /// A failure callback that came after the task's result was a success: it moved no stage
    /// and the stored files are kept, but the provider said it (its stage, code and message).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub late_failure: Option<FailureEntry>,
    pub files: Vec<FileView>,
    /// How many stored files have no `download_url` in this answer because it already holds
    /// [`MAX_LINKS`] (their keys are there: link them yourself, or read the manifest).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub links_omitted: Option<usize>,
    /// How many files, the last by name, are not listed because those listed already take
    /// [`MAX_ANSWER_FILES_BYTES`] of JSON (the manifest lists them all).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub files_omitted: Option<usize>,
    /// Results that are no files (lyrics, MIDI notes, voice ids, track metadata) as the task
    /// item keeps them: over 64 KiB, a pointer (`kind` `in_body`) to the object holding them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<serde_json::Value>,
    /// Presigned GET link to the details kept whole when the task item holds only a pointer
    /// (their JSON, as `details` would have been).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details_url: Option<String>,
    /// Where the manifest of the task's current file set and stage is (it lists every file,
    /// those an answer leaves out too): absent until they settle and it is recorded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub manifest_key: Option<String>,
    /// Presigned GET link to that manifest, valid as the file links are: only in a `GET` answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub manifest_url: Option<String>,
    /// Live stream URLs by name (the provider's; never vaulted).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub streams: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FileView {
    /// name, key, status, bytes, sha256, content_type, and error and error_code (only once failed for good).
    #[serde(flatten)]
    pub file: ManifestFile,
    /// Presigned GET link, only for stored files.
    pub download_url: Option<String>,
    /// How many copies of the file were started (0: none yet; a file reopened at its own URL
    /// keeps its count, one reopened at a new URL starts again). Only in a `GET` answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempts: Option<u64>,
    /// Why the last copy of a file still `pending` that failed did (it is tried again, with the
    /// queue's backoff, until its message's last receive; `error` is only set once it failed
    /// for good): `null` while it is copied the first time, or when it never failed.
    /// Only in a `GET` answer (present there, `null` when it does not apply).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_attempt_error: Option<Option<String>>,
}

/// The view of one task, or None when no such task was recorded nor parked.
pub async fn task_view(
    ports: &impl Ports,
    task_id: &TaskId,
    link_expiry: Duration,
) -> Result<Option<Found>, ResultsError> {
    let record = match ports.load_task(task_id).await? {
        Some(record) => record,
        None => {
            // One ListObjectsV2, only for a task the table does not know. Should it fail (S3
            // down, throttled), the task may be on its way: unavailable (503, ask again), not
            // unknown (404, which a client may take as final and stop asking).
            let parked = ports.is_parked(task_id).await?;
            // A replay since the first read is in the table now, its body listed or not (the
            // reconciler records a replayed callback, queues its files and publishes its
            // events before it deletes the body): not answered parked.
            match ports.load_task(task_id).await? {
                Some(record) => record,
                None if parked => return Ok(Some(Found::Parked)),
                None => return Ok(None),
            }
        }
    };
    view_of(ports, &record, Some(link_expiry)).await.map(|view| Some(Found::Task(Box::new(view))))
}

/// The most stored files an answer links: a presigned link with the function's session token
/// is about 2 KB, so 1,000 keep an answer far below Lambda's 6 MB response limit, which a task
/// with thousands of files (a sender swelling it with bodies; one music body brings at most
/// 1,024: 256 tracks of up to 4) would pass, its every GET failing. A normal task has tens.
pub const MAX_LINKS: usize = 1000;

/// The most JSON an answer's files take: the links are bounded, but not the files, and a task
/// swollen to tens of thousands of short-named files (within its record's size limit) would
/// pass Lambda's 6 MB response limit, API Gateway escaping the body once more. 1,024 files
/// with links take about 3 MB.
pub const MAX_ANSWER_FILES_BYTES: usize = 4 * 1024 * 1024;

/// The view of `record`, with presigned links valid for `links` (None: none, nor its details
/// and streams, for callers who may register tasks but not read their results).
async fn view_of(ports: &impl Ports, record: &TaskRecord, links: Option<Duration>) -> Result<TaskView, ResultsError> {
    let (vault, done) = record.shown_vault_state();
    // The same projection the manifest uses, so both agree; its timestamp is unused.
    let manifest = Manifest::of(record, vault, record.last_received_at);
    // Only a key under the task's own prefix is linked, as its details are (ingest makes no
    // other; an item edited by hand could name any).
    let task_prefix = TaskId::parse(&record.task_id).ok().map(|id| suno_callbacks::s3_key::task_prefix(&id));
    let own = |key: &str| task_prefix.as_deref().is_some_and(|prefix| key.starts_with(prefix));
    // Before any link is signed, to the second: a link's signing time (`X-Amz-Date`, whole
    // seconds) is no earlier, so `links_expire_at` is never later than a link's expiry.
    let signed_from = Timestamp::from_unix_ms(ports.now().unix_seconds() * 1000);
    let total = manifest.files.len();
    let mut files = Vec::with_capacity(total);
    let (mut linked, mut omitted, mut listed_bytes) = (0, 0, 0);
    for file in manifest.files {
        // Counted once the file is listed: one left out by the byte bound is in neither count.
        let linkable = file.status == PublicFileStatus::Stored && links.is_some() && own(&file.key);
        let download_url = match links {
            Some(expiry) if linkable && linked < MAX_LINKS => Some(ports.presign_download(&file.key, expiry).await?),
            _ => None,
        };
        // The copies' history, for readers (GET) only, as the links are.
        let entry = record.files.get(&file.name).filter(|_| links.is_some());
        let attempts = entry.map(|f| f.attempts);
        let retried = file.status == PublicFileStatus::Pending;
        let last_attempt_error = entry.map(|f| f.error.clone().filter(|_| retried));
        let view = FileView { file, download_url, attempts, last_attempt_error };
        listed_bytes += serde_json::to_vec(&view).map_or(0, |json| json.len() + 1);
        if listed_bytes > MAX_ANSWER_FILES_BYTES {
            break;
        }
        match (linkable, view.download_url.is_some()) {
            (true, true) => linked += 1,
            (true, false) => omitted += 1,
            _ => {}
        }
        files.push(view);
    }
    // Results, as the links are: for readers (GET), not for those who may only register.
    let details = links.and_then(|_| record.details.clone());
    let details_url = match (kept_details_key(&record.task_id, details.as_ref()), links) {
        (Some(key), Some(expiry)) => Some(ports.presign_download(key, expiry).await?),
        _ => None,
    };
    // Not while the vault is answered pending: a file opened since (a later callback's file
    // item whose task item write did not follow) is in no manifest yet.
    let manifest_key = record.manifest_key.clone().filter(|key| own(key) && vault != VaultState::Pending);
    let manifest_url = match (&manifest_key, links) {
        (Some(key), Some(expiry)) => Some(ports.presign_download(key, expiry).await?),
        _ => None,
    };
    let listed = files.len();
    Ok(TaskView {
        task_id: manifest.task_id,
        family: manifest.family,
        stage: manifest.stage,
        code: manifest.code,
        message: manifest.message,
        vault: manifest.vault,
        generation: manifest.generation,
        done,
        links_expire_at: links.map(|expiry| signed_from.plus(expiry)),
        client_ref: record.client_ref.clone(),
        abandoned: record.abandoned.clone(),
        late_failure: record.failure.clone(),
        files,
        links_omitted: (omitted > 0).then_some(omitted),
        files_omitted: (listed < total).then(|| total - listed),
        details,
        details_url,
        manifest_key,
        manifest_url,
        // As ingest keeps them since 2026-12-07: a record from before may hold a link that
        // would run in a page showing it (`javascript:`).
        streams: links.map(|_| http_streams(&record.streams)).unwrap_or_default(),
    })
}

/// The streams that are `http` or `https` URLs.
fn http_streams(streams: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    streams.iter().filter(|(_, url)| suno_callbacks::parse::is_http(url)).map(|(n, u)| (n.clone(), u.clone())).collect()
}

/// Where details too large for the task item are kept, from its pointer to them (None: the
/// details are inline, or a pointer from before they were kept apart, to the archived body
/// alone). Only a key under the task's own `details/` is linked.
fn kept_details_key<'a>(task_id: &str, details: Option<&'a serde_json::Value>) -> Option<&'a str> {
    let details = details?;
    if details["kind"] != stemvault_vault::ingest::DETAILS_KEPT_APART {
        return None;
    }
    let prefix = suno_callbacks::s3_key::details_prefix(&TaskId::parse(task_id).ok()?);
    details["details_key"].as_str().filter(|key| key.starts_with(&prefix))
}

/// What a registration came to.
#[derive(Debug, Clone, PartialEq)]
pub enum Registered {
    /// The task was new: its item was written (201).
    Created(TaskView),
    /// The task was known and agrees with the registration (200): nothing written, or, for a
    /// task a callback (or ingest, from a stale callback's unsigned family) recorded first,
    /// the registration's client_ref or family added
    /// ([`Registration::completion`]: its generation moves on, and a settled task is open
    /// again for a new manifest).
    Existing(TaskView),
    /// The task is recorded with another family or client_ref (409), named in `fields`:
    /// nothing written.
    Disagrees { view: TaskView, fields: Vec<&'static str> },
}

/// How many times completing a registration reads the task again after a conflict.
const COMPLETE_ATTEMPTS: u32 = 5;

/// Register `task_id` (stage `submitted`, vault `pending`, watched by the reconciler from
/// `reconcile_after` on), unless it is recorded already; a task a callback recorded first
/// takes the registration's client_ref, and an unknown, only guessed or unsigned family its family
/// ([`Registration::completion`]). Idempotent: one read, and one conditional put only for a
/// new task or something to add. The view answered has
/// no download links: the right to register (`PUT`) is not the right to read the files (`GET`).
pub async fn register(
    ports: &impl Ports,
    task_id: &TaskId,
    registration: &Registration,
    now: Timestamp,
    reconcile_after: Duration,
) -> Result<Registered, ResultsError> {
    let mut known = ports.load_task(task_id).await?;
    if known.is_none() {
        let record = registration.record(task_id, now, reconcile_after);
        // Saved over no task: its task item alone, only if there is none.
        match ports.save_task(None, &record).await {
            Ok(()) => return Ok(Registered::Created(view_of(ports, &record, None).await?)),
            // Registered (or called back) at the same moment: answer with what is there.
            Err(StoreError::Conflict) => known = ports.load_task(task_id).await?,
            Err(e) => return Err(e.into()),
        }
    }
    // The first attempt decides on the read above; a conflict (a callback or a download wrote
    // meanwhile) reads again.
    let mut read = Some(known);
    let registered = retry_on_conflict(ports, COMPLETE_ATTEMPTS, |_| {
        let read = read.take();
        async move {
            let known = match read {
                Some(known) => known,
                None => ports.load_task(task_id).await?,
            };
            let Some(record) = known else {
                let unreadable = StoreError::Unavailable("the task item exists but could not be read".into());
                return Err(ResultsError::from(unreadable));
            };
            let Some(completion) = registration.completion(&record, now) else {
                let view = view_of(ports, &record, None).await?;
                let fields = registration.disagreements(&record);
                return Ok(Attempt::Done(if fields.is_empty() {
                    Registered::Existing(view)
                } else {
                    Registered::Disagrees { view, fields }
                }));
            };
            let mut completed = record.clone();
            completion.apply(&mut completed);
            Ok(match ports.save_task(Some(&record), &completed).await {
                Ok(()) => Attempt::Done(Registered::Existing(view_of(ports, &completed, None).await?)),
                Err(StoreError::Conflict) => Attempt::Conflict,
                Err(e) => return Err(e.into()),
            })
        }
    })
    .await?;
    registered
        .ok_or_else(|| StoreError::Unavailable("the task kept changing while the registration was added".into()).into())
}

#[cfg(test)]
pub(crate) mod tests;
