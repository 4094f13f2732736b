//! The task record: a task, its files and its archived callbacks, as one value. It is stored
//! as an item collection (see [`crate::items`]): the fields here are the task item's
//! attributes, people see them under these names in the AWS console and CLI; `files` and
//! `callbacks` are items of their own. Every write of the task item increments `version`
//! but two: the open mark ([`crate::items::MarkOpen`]) and the reconciler's postponed poll
//! (`reconcile_at` alone). Every write that sets attributes from a read is conditional on the
//! version read, but the settle, which is conditional on the generation, the stage and no add
//! fence; so no write is ever lost to a concurrent one (a duplicate's count only adds to
//! counters: [`crate::items::TaskWrite::CountDelivery`]).

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};
use suno_callbacks::{Family, Stage};

use crate::{LeaseEnd, Timestamp};

/// One task, as stored (see the README's "The DynamoDB items" section for the schema).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskRecord {
    /// Partition key.
    pub task_id: String,
    /// Stored as `music`, `lyrics`, `cover_image`, `wav`, `vocal_separation`, `midi`,
    /// `music_video`, `voice` or `unknown`.
    pub family: Family,
    /// Stored as `submitted`, `text`, `first`, `complete`, `error` or `final`; never moves
    /// backwards.
    pub stage: Stage,
    /// Envelope `code` of the callback that set `stage`.
    pub code: i64,
    /// Envelope `msg` of the callback that set `stage`.
    pub message: String,
    /// Whether the callback that set `stage` reported success.
    pub succeeded: bool,
    /// The first and the latest accepted delivery (stored as RFC 3339 text, see [`Timestamp`]).
    pub first_received_at: Timestamp,
    pub last_received_at: Timestamp,
    /// Every accepted delivery, duplicates included.
    pub deliveries: u64,
    /// Each distinct callback body, keyed `<stage>-<sha256 of body>`: an item each.
    #[serde(skip)]
    pub callbacks: BTreeMap<String, CallbackEntry>,
    /// Each file of the task, keyed by its stable name: an item each.
    #[serde(skip)]
    pub files: BTreeMap<String, FileEntry>,
    /// Live stream URLs by name (data, not vaulted).
    #[serde(default)]
    pub streams: BTreeMap<String, String>,
    /// Non-file results of the latest callback that carried any (track metadata, lyrics,
    /// MIDI notes, voice ids), as the `suno_callbacks::Details` JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<serde_json::Value>,
    /// `pending` until every file is stored or failed for good; then `complete` or `partial`.
    pub vault: VaultState,
    /// [`OPEN_MARKER`] while the task is unsettled (vault `pending`, or its manifest not yet
    /// recorded, so a manifest job lost for good is sent again), except a registered task
    /// still at `submitted`; also on a settled task a reopening request marked, or a
    /// registered one a save of its first result marked ([`crate::items::MarkOpen`]), until
    /// that save commits or the sweeper clears it. Absent otherwise. The
    /// partition key of the sparse `open-tasks` index, which the sweeper reads instead of
    /// scanning ([`TaskRecord::sync_open_marker`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open: Option<String>,
    /// A failure callback that arrived after the task had already succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<FailureEntry>,
    /// The user's own id for the task, given when it was registered before any callback. An
    /// empty one, which builds before 2026-12-04 kept as given, reads as none.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "non_empty")]
    pub client_ref: Option<String>,
    /// When the task was registered (`PUT /tasks/{id}`), for a task registered before its
    /// first callback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registered_at: Option<Timestamp>,
    /// The family that registration gave (the task's `family` is the first callback's, when it
    /// names one): a repeat of the same registration still agrees with the task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registered_family: Option<Family>,
    /// [`RECONCILE_DUE`] exactly while the reconciler watches the task: the partition key of the
    /// sparse `reconcile-due` index (see [`crate::reconcile`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reconcile: Option<String>,
    /// When the reconciler polls the task next: the sort key of the `reconcile-due` index.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reconcile_at: Option<Timestamp>,
    /// How many times the reconciler polled the provider for the task.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub polls: u64,
    /// The wait before the last scheduled poll, doubled for the next one (30 s to 1 hour; up
    /// to 6 hours for a task watched only for fresh URLs of expired files).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub poll_interval_seconds: Option<u64>,
    /// The last poll: when, and what came of it (`pending`, `result:<stage>`, `http_429`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_poll: Option<LastPoll>,
    /// What the polls last made of a result, kept across polls that bring none (a 503, a
    /// timeout): recorded at a stage (its events published), or saved but not finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub polled_result: Option<PolledResult>,
    /// The first of the polls since which the provider has said it does not know the task
    /// (see [`crate::reconcile::NOT_FOUND_GIVE_UP_AFTER`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_found_since: Option<Timestamp>,
    /// When the reconciler first polled the task past its give-up time, for its last chance
    /// ([`crate::reconcile::owes_a_last_poll`]: the day an unanswered last poll is asked again
    /// counts from it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_chance_from: Option<Timestamp>,
    /// The reconciler gave up on the task: no result came by callback or poll in time, or the
    /// provider has not known it for a day (`reason`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abandoned: Option<Abandoned>,
    /// Set when the manifest of the current file set has been written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest_key: Option<String>,
    /// What the last `Task Vaulted` published said ([`crate::events::announcement`]), written
    /// by the settle that published it: a later settle saying the same (a reopened file failing
    /// again as it failed before) publishes nothing again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub announced: Option<String>,
    /// Optimistic-concurrency counter; every write of the task item increments it but the
    /// open mark and the postponed poll (see the module's documentation).
    pub version: u64,
    /// The file set's generation: incremented when ingest adds or reopens a file, and when a
    /// registration adds the family or client_ref, which the manifest and `Task Vaulted`
    /// carry ([`crate::register::Completion::apply`]). The settle is conditional on it and on
    /// `stage`; manifests are fenced by both (each stage, which the manifest names, settles on
    /// its own).
    #[serde(default)]
    pub generation: u64,
    /// The add fence: the generation a save adding or reopening files of this task is writing
    /// file items at, set with its mark ([`crate::items::MarkOpen`]) before them and taken away
    /// by its task item put, once those items exist and the put commits them. While it is
    /// there no settle applies (the settle is conditional on its absence, and a settle planned
    /// from a read that shows it is not made): a settle planned before those items exist
    /// would otherwise take the task out of the sweeper's index with them unsent, should that
    /// request stop before its task item. One left by a request that stopped is taken away by
    /// the sweeper, past its grace period.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adding: Option<u64>,
    /// When the mark that set [`Self::adding`] was made, in Unix milliseconds: each mark's
    /// own, so that a writer whose read shows a fence can tell a mark made since (by a retry,
    /// or another request adding files at the same generation), which a put must not undo.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adding_at: Option<u64>,
}

/// The add fence a mark sets on the task item: [`TaskRecord::adding`] and
/// [`TaskRecord::adding_at`], written and taken away together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddFence {
    /// The generation the marking save writes its file items at.
    pub generation: u64,
    /// The mark's time, in Unix milliseconds (None on a fence written without one: by hand).
    pub at: Option<u64>,
}

/// The value of [`TaskRecord::open`] while the task is unsettled (the index's one partition).
pub const OPEN_MARKER: &str = "open";

/// The value of [`TaskRecord::reconcile`] while the reconciler watches the task (the
/// `reconcile-due` index's one partition).
pub const RECONCILE_DUE: &str = "due";

/// The sparse global secondary index over [`TaskRecord::reconcile`] and `reconcile_at`.
pub const RECONCILE_DUE_INDEX: &str = "reconcile-due";

fn is_zero<T: Default + PartialEq>(n: &T) -> bool {
    *n == T::default()
}

/// The reconciler's last poll of a task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastPoll {
    pub at: Timestamp,
    /// `pending`, `result:<stage>`, `no_record`, `unrecorded`, `http_<status>`,
    /// `provider_<code>`, `unreachable`, `unreadable`.
    pub outcome: String,
}

/// What the reconciler's polls last made of a result ([`TaskRecord::polled_result`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", content = "stage", rename_all = "snake_case")]
pub enum PolledResult {
    /// Recorded at this stage, its events published: a callback or poll that brings the
    /// same stage publishes nothing again.
    Recorded(Stage),
    /// Saved perhaps, but not finished (its events, file messages or archive failed): the
    /// task is polled until a poll records it.
    Unfinished,
}

/// Why and when the reconciler gave a task up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Abandoned {
    pub reason: GiveUpReason,
    pub at: Timestamp,
}

/// Why the reconciler gave a task up: stored, in `Task Failed`'s `detail.given_up` and in
/// its id as `abandoned` or `not_found`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GiveUpReason {
    /// No result came, by callback or poll, in time (`RECONCILE_GIVE_UP_SECONDS`).
    Abandoned,
    /// The provider said, poll after poll for
    /// [`NOT_FOUND_GIVE_UP_AFTER`](crate::reconcile::NOT_FOUND_GIVE_UP_AFTER), that it does not
    /// know the task.
    NotFound,
}

impl GiveUpReason {
    pub fn as_str(self) -> &'static str {
        match self {
            GiveUpReason::Abandoned => "abandoned",
            GiveUpReason::NotFound => "not_found",
        }
    }
}

impl std::fmt::Display for GiveUpReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The sparse global secondary index over [`TaskRecord::open`] and `last_received_at`.
pub const OPEN_TASKS_INDEX: &str = "open-tasks";

/// One distinct callback body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallbackEntry {
    pub stage: Stage,
    pub code: i64,
    pub message: String,
    pub received_at: Timestamp,
    /// Where the verbatim body is kept in the bucket.
    pub body_key: String,
    pub bytes: u64,
    /// How many times this exact body was delivered.
    pub deliveries: u64,
}

/// A failure reported after success; the stored files are kept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FailureEntry {
    pub stage: Stage,
    pub code: i64,
    pub message: String,
    pub received_at: Timestamp,
}

/// One file of the task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileEntry {
    /// The source URL (may be signed; never logged with its query).
    pub url: String,
    /// Target key in the vault bucket.
    pub key: String,
    pub status: FileStatus,
    /// The stage of the callback that first brought this file.
    pub stage: Stage,
    /// Who holds the current enqueue or download claim, and until when (Unix seconds). A
    /// released file keeps only `lease_until`, when its claim ended: the sweeper counts from
    /// it how long a message of the file can still come (`ingest::reclaim`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claim: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_until: Option<LeaseEnd>,
    #[serde(default)]
    pub attempts: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stored_at: Option<Timestamp>,
    /// Why the file failed for good (or the last retryable error while it is being retried).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// What kind of failure `error` says, once the file failed for good (None for one failed
    /// by a build before 2026-12-06).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_code: Option<crate::reason::FailureCode>,
    /// When the file was recorded failed for good.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_at: Option<Timestamp>,
    /// The file item's revision: every write increments it, and ingest's writes of a known
    /// file are conditional on the revision read.
    #[serde(default)]
    pub rev: u64,
    /// The task's [`TaskRecord::generation`] that added or last reopened the file (None: kept
    /// since before stemvault stamped files). An attempt whose task item never came leaves
    /// its file items stamped ahead of the task item; the next merge catches up with them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<u64>,
    /// A newer URL a callback brought while the file was being downloaded: the holder keeps
    /// copying `url` into `key` (an earlier attempt's copy stays findable there) and copies
    /// this one should `url` fail for good. It becomes `url` when copied (by the `stored`,
    /// `failed` or release write that ends that copy); ingest drops it when it replaces the
    /// URL of a file not being downloaded; a `stored` or `failed` write of `url` drops it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_url: Option<String>,
    /// Where [`FileEntry::next_url`] goes in the vault bucket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_key: Option<String>,
    /// How many times a poll reopened the file at the URL it had, after it failed for a reason
    /// that may pass ([`crate::reconcile::relink`]); a new URL (one that reopens a failed file,
    /// replaces a waiting file's, or moves in from `next_url`) starts it again from 0.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub relinks: u32,
}

impl FileEntry {
    /// (Re)opened at a generation the task item has not reached (`task_generation`): an
    /// attempt wrote this file item but not its task item.
    pub fn is_uncommitted(&self, task_generation: u64) -> bool {
        self.generation.is_some_and(|g| g > task_generation)
    }

    /// Being downloaded under `worker`'s claim.
    pub fn is_held_by(&self, worker: &str) -> bool {
        self.status == FileStatus::Downloading && self.claim.as_deref() == Some(worker)
    }

    /// What outputs show of a failure (events, the manifest, `GET`): its `error` and
    /// `error_code` once it failed for good, nothing before (a pending file's last retryable
    /// error is `GET`'s `last_attempt_error` alone).
    pub fn shown_failure(&self) -> (Option<String>, Option<crate::reason::FailureCode>) {
        match self.status {
            FileStatus::Failed => (self.error.clone(), self.error_code),
            _ => (None, None),
        }
    }

    /// A file just recorded: no message sent, no claim, nothing downloaded.
    pub fn pending(url: &str, key: String, stage: Stage) -> FileEntry {
        FileEntry {
            url: url.to_owned(),
            key,
            status: FileStatus::Pending,
            stage,
            claim: None,
            lease_until: None,
            attempts: 0,
            bytes: None,
            sha256: None,
            content_type: None,
            stored_at: None,
            error: None,
            error_code: None,
            failed_at: None,
            rev: 0,
            generation: None,
            next_url: None,
            next_key: None,
            relinks: 0,
        }
    }
}

/// A file's life: `pending` → `enqueuing` → `queued` → `downloading` → `stored` | `failed`.
/// `queued` is kept on the task item (its `queued` set, one write for all the files a
/// request sent); a file item says `pending` or `enqueuing` until a downloader claims it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileStatus {
    /// Recorded, no message sent yet.
    Pending,
    /// An ingest request holds the claim to send its message (`claim`, `lease_until`).
    Enqueuing,
    /// Its message is on the queue.
    Queued,
    /// A downloader holds the claim to copy it (`claim`, `lease_until`).
    Downloading,
    Stored,
    /// Failed for good (`error` says why).
    Failed,
}

/// What the results endpoint and the manifest show.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PublicFileStatus {
    Pending,
    Stored,
    Failed,
}

impl FileStatus {
    pub fn public(self) -> PublicFileStatus {
        match self {
            FileStatus::Stored => PublicFileStatus::Stored,
            FileStatus::Failed => PublicFileStatus::Failed,
            _ => PublicFileStatus::Pending,
        }
    }

    /// Stored or failed for good.
    pub fn is_settled(self) -> bool {
        matches!(self, FileStatus::Stored | FileStatus::Failed)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            FileStatus::Pending => "pending",
            FileStatus::Enqueuing => "enqueuing",
            FileStatus::Queued => "queued",
            FileStatus::Downloading => "downloading",
            FileStatus::Stored => "stored",
            FileStatus::Failed => "failed",
        }
    }
}

/// The vault's state for a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VaultState {
    Pending,
    Complete,
    Partial,
}

impl VaultState {
    /// As stored and shown: `pending`, `complete`, `partial`.
    pub fn as_str(self) -> &'static str {
        match self {
            VaultState::Pending => "pending",
            VaultState::Complete => "complete",
            VaultState::Partial => "partial",
        }
    }
}

impl PublicFileStatus {
    /// As shown: `pending`, `stored`, `failed`.
    pub fn as_str(self) -> &'static str {
        match self {
            PublicFileStatus::Pending => "pending",
            PublicFileStatus::Stored => "stored",
            PublicFileStatus::Failed => "failed",
        }
    }
}

/// Enums display as they are stored, so logs read `vault=pending`.
macro_rules! display_as_stored {
    ($($ty:ty),*) => {$(
        impl std::fmt::Display for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    )*};
}

display_as_stored!(FileStatus, PublicFileStatus, VaultState);

/// A string that is empty read as none.
fn non_empty<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    Ok(Option::<String>::deserialize(deserializer)?.filter(|s| !s.is_empty()))
}

impl TaskRecord {
    /// The record of a task's first accepted callback, before its files and bodies are added:
    /// one delivery, version 1, no files (so its vault is settled and it is not open).
    pub fn new(
        task_id: &str,
        family: Family,
        stage: Stage,
        code: i64,
        message: &str,
        received_at: Timestamp,
    ) -> TaskRecord {
        TaskRecord {
            task_id: task_id.to_owned(),
            family,
            stage,
            code,
            message: message.to_owned(),
            succeeded: code == 200 && stage != Stage::Error,
            first_received_at: received_at,
            last_received_at: received_at,
            deliveries: 1,
            callbacks: BTreeMap::new(),
            files: BTreeMap::new(),
            streams: BTreeMap::new(),
            details: None,
            vault: VaultState::Complete,
            open: None,
            failure: None,
            client_ref: None,
            registered_at: None,
            registered_family: None,
            reconcile: None,
            reconcile_at: None,
            polls: 0,
            poll_interval_seconds: None,
            last_poll: None,
            polled_result: None,
            not_found_since: None,
            last_chance_from: None,
            abandoned: None,
            manifest_key: None,
            announced: None,
            version: 1,
            generation: 1,
            adding: None,
            adding_at: None,
        }
    }

    /// Whether the task is settled for good: its vault settled and the manifest of the task
    /// as it is recorded (the settle write sets both; until then, something still has to
    /// write it).
    pub fn is_settled(&self) -> bool {
        self.vault != VaultState::Pending && self.manifest_key.is_some()
    }

    /// Bring `last_received_at` to `now`, a write's own time (the sweeper's grace period runs
    /// from it): the latest of the writes seen (clocks of concurrent requests differ), but not
    /// one read beyond any clock's lead over this one (a hand edit: not carried on).
    pub fn touch(&mut self, now: Timestamp) {
        self.last_received_at = match self.last_received_at > now.plus(crate::time::MAX_CLOCK_LEAD) {
            true => now,
            false => self.last_received_at.max(now),
        };
    }

    /// A manifest and `Task Vaulted` that no longer say what the task is (a family or a
    /// `client_ref` given since): a generation past `read`, the one read, whether or not
    /// adopting files moved it since; a settle under way at `read` is refused and checks again.
    pub fn move_past(&mut self, read: u64) {
        self.generation = self.generation.max(read + 1);
        self.manifest_key = None;
    }

    /// Set [`TaskRecord::open`]: present until the task [is settled](Self::is_settled), but
    /// for a registered task still without a result (stage `submitted`): it has nothing for
    /// the sweeper to do (no files, no manifest due; the reconciler's index watches it), and
    /// each such task in the index would take one of a sweep's tasks. A settled or registered
    /// task read marked open keeps its mark: only a request reopening it or bringing its
    /// first result marks it (`items::MarkOpen`), which may be writing its file items right
    /// now; the sweeper takes a mark away once its grace period has passed, fenced against a
    /// new one.
    pub fn sync_open_marker(&mut self) {
        let marked = (self.is_settled() || self.stage == Stage::Submitted) && self.open.is_some();
        let open = marked || (!self.is_settled() && self.stage != Stage::Submitted);
        self.open = open.then(|| OPEN_MARKER.to_owned());
    }

    /// Whether the recorded family was only read from a failure without files, on a task no
    /// registration named: guessed from its shape (read as music, or as lyrics without
    /// variants: [`suno_callbacks::CallbackEvent::family_is_a_guess`]), or read as lyrics from
    /// its message alone (kie's "Song Description flagged for moderation", which may as well
    /// be a music task's, and which ingest does not let overrule a registration made first).
    /// A registration naming a family then says better, whichever came first.
    pub fn family_read_from_a_failure(&self) -> bool {
        self.files.is_empty()
            && self.named_by_no_registration()
            && !self.callbacks.is_empty()
            && !self.succeeded
            && match self.family {
                Family::Music => true,
                // Variants that all failed are lyrics' own, whatever the message says.
                Family::Lyrics => !self.has_details(),
                _ => false,
            }
    }

    /// Whether no client's registration named the family: none recorded, nor one from before
    /// `registered_family` was kept (its `registered_at` alone).
    pub(crate) fn named_by_no_registration(&self) -> bool {
        self.registered_family.is_none() && self.registered_at.is_none()
    }

    /// Whether the recorded details say something. Details kept apart (too large for the
    /// item) do all the same; read last, as the most costly condition.
    fn has_details(&self) -> bool {
        self.details.as_ref().is_some_and(|d| {
            serde_json::from_value::<suno_callbacks::Details>(d.clone()).map_or(true, |d| !d.is_empty())
        })
    }

    /// The add fence on the task item, if any ([`AddFence`]).
    pub fn add_fence(&self) -> Option<AddFence> {
        Some(AddFence { generation: self.adding?, at: self.adding_at })
    }

    /// Whether a file item was (re)opened at a generation the task item has not reached: an
    /// attempt wrote it and stopped before its task item.
    pub fn has_uncommitted_files(&self) -> bool {
        self.files.values().any(|f| f.is_uncommitted(self.generation))
    }

    /// Whether a client may stop asking about the task, its files settled as `vault`: given up
    /// with every file settled (a task given up at `first` still copies the files it has), or
    /// at a final stage, settled, and awaiting nothing a poll may bring (a watch the reconciler
    /// has yet to end, its task needing none, is no reason to wait); never while a request
    /// adding files has marked it ([`TaskRecord::adding`]). `GET /tasks/{id}`'s `done`, and
    /// every event's.
    pub fn is_done(&self, vault: VaultState) -> bool {
        self.is_done_awaiting(vault, self.reconcile.is_some() && crate::reconcile::needs_watching(self))
    }

    /// [`Self::is_done`] once the settle being planned is written: that write starts the watch
    /// the task needs ([`crate::download::SettlePlan`]'s `watch_from`), which the record read
    /// before it may not have yet.
    pub(crate) fn is_done_once_settled(&self, vault: VaultState) -> bool {
        self.is_done_awaiting(vault, crate::reconcile::needs_watching(self))
    }

    /// [`Self::is_done`] once the give-up being made is written: its event is made before.
    pub(crate) fn is_done_once_given_up(&self) -> bool {
        self.adding.is_none() && self.files_settled()
    }

    fn is_done_awaiting(&self, vault: VaultState, awaited: bool) -> bool {
        self.adding.is_none()
            && ((self.abandoned.is_some() && self.files_settled())
                || (self.stage.is_terminal() && vault != VaultState::Pending && !awaited))
    }

    /// The vault state and `done` a reader is shown (`GET /tasks/{id}`): the task item's, but
    /// pending while a file is open (a later callback's file item whose task item write did
    /// not follow: clients stop waiting on a settled vault); and, a settle due
    /// ([`Self::vault_to_settle`]), as that settle will write them: its `Task Vaulted` goes
    /// out before its write (a failed write waits for a retry or the sweeper), so a receiver
    /// reading the task on that event sees what the event said.
    pub fn shown_vault_state(&self) -> (VaultState, bool) {
        match self.vault_to_settle() {
            Some(vault) => (vault, self.is_done_once_settled(vault)),
            None if self.files_settled() => (self.vault, self.is_done(self.vault)),
            None => (VaultState::Pending, self.is_done(VaultState::Pending)),
        }
    }

    /// The vault a settle writes now, when one is due: every file settled but the task not
    /// [settled](Self::is_settled) (its vault pending, or its manifest not recorded); never
    /// for a registration without a result (no file came: nothing is settled), nor while a
    /// request adding files has marked the task. A vault settled already stays as it is.
    pub fn vault_to_settle(&self) -> Option<VaultState> {
        if self.stage == Stage::Submitted || self.is_settled() || self.adding.is_some() {
            return None;
        }
        let files_vault = self.settled_vault_state()?;
        Some(if self.vault == VaultState::Pending { files_vault } else { self.vault })
    }

    /// Every file is stored or failed for good (a task without files is settled too).
    pub fn files_settled(&self) -> bool {
        self.files.values().all(|f| f.status.is_settled())
    }

    /// `complete` when every file is stored, `partial` when some failed; None while any is open.
    pub fn settled_vault_state(&self) -> Option<VaultState> {
        if !self.files_settled() {
            return None;
        }
        if self.files.values().all(|f| f.status == FileStatus::Stored) {
            Some(VaultState::Complete)
        } else {
            Some(VaultState::Partial)
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use serde_json::json;

    use super::*;

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    /// A record with every field set, typed.
    pub(crate) fn record() -> TaskRecord {
        let mut r =
            TaskRecord::new("t1", Family::VocalSeparation, Stage::Complete, 200, "ok", at("2026-11-23T15:00:00.000Z"));
        r.last_received_at = at("2026-11-23T15:00:09.120Z");
        r.deliveries = 3;
        r.callbacks.insert(
            "complete-ab".into(),
            CallbackEntry {
                stage: Stage::Complete,
                code: 200,
                message: "ok".into(),
                received_at: at("2026-11-23T15:00:00.000Z"),
                body_key: "tasks/t1/callbacks/complete-ab.json".into(),
                bytes: 42,
                deliveries: 2,
            },
        );
        let mut vocal = FileEntry::pending("https://cdn.example/v.mp3", "tasks/t1/vocal.mp3".into(), Stage::First);
        vocal.status = FileStatus::Stored;
        vocal.attempts = 1;
        vocal.stored_at = Some(at("2026-11-23T15:00:05.999Z"));
        vocal.rev = 3;
        r.files.insert("vocal".into(), vocal);
        let mut drums = FileEntry::pending("https://cdn.example/d.mp3", "tasks/t1/drums.mp3".into(), Stage::Complete);
        drums.status = FileStatus::Downloading;
        drums.claim = Some("worker-1".into());
        drums.lease_until = Some(LeaseEnd::from_unix_seconds(1_795_446_030));
        drums.rev = 2;
        r.files.insert("drums".into(), drums);
        let bass = FileEntry::pending("https://cdn.example/b.mp3", "tasks/t1/bass.mp3".into(), Stage::Complete);
        r.files.insert("bass".into(), FileEntry { status: FileStatus::Queued, rev: 1, ..bass });
        r.streams.insert("stream".into(), "https://cdn.example/live".into());
        r.details = Some(json!({"kind": "error", "error": "kept"}));
        r.vault = VaultState::Pending;
        r.sync_open_marker();
        r.failure = Some(FailureEntry {
            stage: Stage::Error,
            code: 501,
            message: "late".into(),
            received_at: at("2026-11-23T15:00:09.120Z"),
        });
        r.manifest_key = Some("tasks/t1/manifest.json".into());
        r.version = 4;
        r.generation = 2;
        r
    }

    /// The task item's own attributes (what the String fields were written as): files and
    /// callbacks are items of their own.
    pub(crate) fn stored_task() -> serde_json::Value {
        json!({
            "task_id": "t1",
            "family": "vocal_separation",
            "stage": "complete",
            "code": 200,
            "message": "ok",
            "succeeded": true,
            "first_received_at": "2026-11-23T15:00:00.000Z",
            "last_received_at": "2026-11-23T15:00:09.120Z",
            "deliveries": 3,
            "streams": {"stream": "https://cdn.example/live"},
            "details": {"kind": "error", "error": "kept"},
            "vault": "pending",
            "open": "open",
            "failure": {"stage": "error", "code": 501, "message": "late", "received_at": "2026-11-23T15:00:09.120Z"},
            "manifest_key": "tasks/t1/manifest.json",
            "version": 4,
            "generation": 2
        })
    }

    /// A give-up's reason is stored as its text (items written before it was a type read
    /// the same).
    #[test]
    fn a_give_up_reason_is_stored_as_its_text() {
        for reason in [GiveUpReason::Abandoned, GiveUpReason::NotFound] {
            let stored = serde_json::to_value(reason).unwrap();
            assert_eq!(stored, serde_json::json!(reason.as_str()));
            assert_eq!(serde_json::from_value::<GiveUpReason>(stored).unwrap(), reason);
        }
        assert!(serde_json::from_value::<GiveUpReason>(serde_json::json!("later")).is_err());
    }

    #[test]
    fn a_record_s_own_fields_are_stored_as_the_same_json() {
        assert_eq!(serde_json::to_value(record()).unwrap(), stored_task());
        let read = serde_json::from_value::<TaskRecord>(stored_task()).unwrap();
        assert_eq!(read, TaskRecord { files: BTreeMap::new(), callbacks: BTreeMap::new(), ..record() });
    }

    #[test]
    fn a_malformed_time_or_an_unknown_stage_or_family_is_not_read() {
        let spoilt = |path: &[&str], value: serde_json::Value| {
            let mut stored = stored_task();
            let (last, parents) = path.split_last().unwrap();
            let mut at = &mut stored;
            for p in parents {
                at = &mut at[*p];
            }
            at[*last] = value;
            stored
        };
        for (path, value) in [
            (&["stage"][..], json!("done")),
            (&["stage"][..], json!("Complete")),
            (&["family"][..], json!("jazz")),
            (&["failure", "stage"][..], json!("")),
            (&["last_received_at"][..], json!("yesterday")),
            (&["first_received_at"][..], json!("2026-11-23 15:00:00")),
            (&["failure", "received_at"][..], json!("2026-02-30T00:00:00.000Z")),
        ] {
            let stored = spoilt(path, value.clone());
            assert!(serde_json::from_value::<TaskRecord>(stored).is_err(), "{path:?} = {value} read from JSON");
        }
        for (field, value) in [("stage", json!("later")), ("stored_at", json!(1_795_446_005))] {
            let mut file = serde_json::to_value(&record().files["vocal"]).unwrap();
            file[field] = value.clone();
            assert!(serde_json::from_value::<FileEntry>(file).is_err(), "file {field} = {value}");
        }
    }

    /// The JSON string a value is stored as.
    fn stored(value: impl Serialize) -> String {
        serde_json::to_value(value).unwrap().as_str().unwrap().to_owned()
    }

    #[test]
    fn enums_display_as_they_are_stored() {
        use FileStatus::*;
        for status in [Pending, Enqueuing, Queued, Downloading, Stored, Failed] {
            assert_eq!(stored(status), status.to_string());
            assert_eq!(stored(status.public()), status.public().to_string());
        }
        for vault in [VaultState::Pending, VaultState::Complete, VaultState::Partial] {
            assert_eq!(stored(vault), vault.to_string());
        }
    }
}
