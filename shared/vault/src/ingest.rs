//! The pure heart of the ingest function: fold one callback into the task record, and decide
//! which files this request must enqueue and which it must wait for.
//!
//! The caller reads the record, calls [`ingest_callback`], and saves the result over the
//! record it read ([`crate::items::plan_save`]: each changed item conditional on what was
//! read; retrying from the read on a conflict). Files move
//! `pending` → `enqueuing` here under the caller's claim; the caller sends their messages and
//! then marks them `queued` (one update of the task item's `queued` set; see
//! [`crate::enqueue`]). A request that
//! finds files under someone else's unexpired claim waits for them, and calls [`reclaim`] on
//! each fresh read to take over what that request released or abandoned.

use std::time::Duration;

use suno_callbacks::{CallbackEvent, Details, Family, Stage, TaskId, merge_stage, s3_key};

use crate::download::DOWNLOAD_QUEUE_RETENTION;
use crate::{CallbackEntry, FailureEntry, FileEntry, FileJob, FileStatus, LeaseEnd, TaskRecord, Timestamp, VaultState};

/// At most this much of a provider's `msg` is kept in the record (UTF-8 bytes, marker included);
/// the whole text stays in the archived body.
pub const MAX_MESSAGE_BYTES: usize = 1024;

/// Larger `details` (in JSON) are replaced in the record by a pointer to an object of their
/// own ([`kept_details_key`]) and to the archived body.
pub const MAX_DETAILS_BYTES: usize = 64 * 1024;

/// Largest item of a record ingest writes, as JSON plus what the downloader may still add to
/// a file: DynamoDB refuses items over 400 KB, and the downloader still adds to each file's item.
pub const MAX_ITEM_ESTIMATE_BYTES: usize = 350_000;

/// Largest total of a record's items (as JSON) past which a callback or a poll may add
/// nothing to it ([`too_large_to_record`]): every reader of a task (GET, the downloader's
/// settle, the sweeper) Queries all of its items, so a record is kept to a page or two (the
/// downloader still adds a few hundred bytes to each file it settles). A task as the provider
/// documents it takes a few KB; only a sender holding the secret (thousands of names, URLs
/// of hundreds of KB) comes near it. Best effort against such a sender: concurrent
/// deliveries each checked against the record before the others' items may pass together.
pub const MAX_RECORD_ESTIMATE_BYTES: usize = 1_000_000;

/// What the downloader may still add to one file of the record: ids, times, digest, and a
/// failure's reason ([`crate::text::MAX_REASON_BYTES`]).
const FILE_GROWTH_BYTES: usize = 512 + crate::text::MAX_REASON_BYTES;

/// The longest newer URL kept beside a file being downloaded (`next_url`; signed links run to
/// a few hundred bytes): a longer one is dropped, as before `next_url` existed, rather than
/// doubling the URL's share of the file's item until the whole callback is refused as too
/// large.
pub const MAX_NEXT_URL_BYTES: usize = 8 * 1024;

/// The accepted body as archived: its digest, where it is kept, its size, and when it came.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BodyInfo {
    pub sha256_hex: String,
    pub archive_key: String,
    pub bytes: u64,
    /// When the body reached stemvault, if before this merge (a parked callback replayed
    /// later); None: now. It dates the callback and the task's first receipt, never a claim
    /// nor `last_received_at`, which orders the sweeper's grace from the merge.
    pub arrived_at: Option<Timestamp>,
}

/// Who is claiming files to enqueue them, and for how long the claim holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claimant {
    /// Unique per request (the request id).
    pub id: String,
    /// How long other requests leave this request's claims alone before taking them over.
    pub lease: Duration,
}

/// What one callback does to a task.
#[derive(Debug, Clone, PartialEq)]
pub struct Merge {
    /// The record to write, `version` already incremented.
    pub record: TaskRecord,
    /// The same body (same stage, same digest) was accepted before.
    pub duplicate: bool,
    pub claims: Claims,
    /// Files being downloaded whose newer URL was not kept beside the one copied: longer than
    /// [`MAX_NEXT_URL_BYTES`] (the caller logs them; the copy goes on from the file's URL).
    pub newer_urls_dropped: Vec<String>,
}

/// Files this request claimed, and files of its callback that another request is enqueuing.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Claims {
    /// One job per file now `enqueuing` under this request's claim: send these.
    pub to_enqueue: Vec<FileJob>,
    /// Names of this callback's files held by another request's unexpired claim.
    pub wait_for: Vec<String>,
}

/// The key of one distinct body in [`TaskRecord::callbacks`]: `<stage>-<sha256 hex>`.
pub fn callback_id(stage: Stage, sha256_hex: &str) -> String {
    format!("{stage}-{sha256_hex}")
}

/// Fold `event` into `existing` (None for a task not seen yet).
///
/// * Stage only moves forward ([`merge_stage`]); code, message and `succeeded` follow the
///   event that set the stage. A failure that arrives after the task ended successfully is
///   kept in `failure` and changes nothing else.
/// * A body seen before (same stage and digest) is a duplicate: it counts as a delivery and
///   changes nothing else. A different body for the same stage gets its own `callbacks` entry.
/// * Files are only ever added. A file that failed for good is reopened by a new URL; a file
///   not yet stored takes the new URL of an event at (or setting) the task's stage (one
///   being downloaded as its `next_url`). New or reopened files reopen the vault.
/// * `open` is set while the vault is pending (a new record with files, or a reopen) or the
///   manifest of the task as it is not recorded (a task settled as recorded, or a new stage),
///   and kept on a settled task read marked open ([`TaskRecord::sync_open_marker`]), so the
///   sweeper's index lists the unsettled tasks and those a reopening request marked.
/// * A retry finding file items of its own claim that the task item's generation as read
///   covers (another request committed it in between, without them) moves them on to a
///   generation of their own, as a reopen.
/// * Every `pending` file of the task, every `enqueuing` one whose lease ran out (moved on to
///   the next generation when the task item's generation as read covers it), and every stranded one
///   (its message gone; reopened at the next generation), is claimed for `claimant`.
/// * The callback's `received_at` and the task's `first_received_at` date the body's arrival
///   ([`BodyInfo::arrived_at`], never after `now`); `last_received_at` and claims date `now`.
/// * Untrusted text is bounded: messages to [`MAX_MESSAGE_BYTES`]; details over
///   [`MAX_DETAILS_BYTES`] become a pointer to the object the caller keeps them in
///   ([`oversized_details`]) and to the archived body. The caller refuses to write a
///   record still [too large](too_large_to_record).
pub fn ingest_callback(
    existing: Option<&TaskRecord>,
    event: &CallbackEvent,
    body: &BodyInfo,
    claimant: &Claimant,
    now: Timestamp,
) -> Merge {
    let id = callback_id(event.stage, &body.sha256_hex);
    let arrived = body.arrived_at.map_or(now, |t| t.min(now));
    let read_generation = existing.map(|r| r.generation);
    let mut newer_urls_dropped = Vec::new();
    let (mut record, duplicate) = match existing {
        None => (new_record(event, body, &id, arrived, now), false),
        Some(current) => {
            let mut record = current.clone();
            if record.deliveries == 0 {
                // A registered task's first callback.
                record.first_received_at = arrived;
                record.last_received_at = now;
            } else {
                // A parked callback replayed after a later one was recorded directly.
                record.first_received_at = record.first_received_at.min(arrived);
            }
            record.deliveries += 1;
            record.touch(now);
            record.version += 1;
            let duplicate = match record.callbacks.get_mut(&id) {
                Some(entry) => {
                    entry.deliveries += 1;
                    true
                }
                None => {
                    newer_urls_dropped = apply_new_body(&mut record, event, body, &id, arrived);
                    false
                }
            };
            (record, duplicate)
        }
    };
    adopt_uncommitted(&mut record, read_generation);
    if let Some(read) = read_generation {
        move_own_past_another_commit(&mut record, read, event, claimant);
    }
    // A family learnt for a task whose result was recorded as `unknown`: its manifest and
    // `Task Vaulted` are to say it, as a registration giving the family makes them.
    let unknown = existing.filter(|r| r.family == Family::Unknown && r.stage != Stage::Submitted);
    if let Some(read) = unknown.filter(|_| record.family != Family::Unknown) {
        record.move_past(read.generation);
        record.sync_open_marker();
    }
    let wanted: Vec<&str> = event.files.iter().map(|f| f.name.as_str()).collect();
    let claims = claim_files(&mut record, read_generation, claimant, now, &wanted);
    Merge { record, duplicate, claims, newer_urls_dropped }
}

/// Claim what is claimable in a freshly read record, for a request waiting on `wanted`.
///
/// Returns the record to write (version incremented) when anything was claimed, else None;
/// `claims.wait_for` empty means every wanted file is queued or beyond.
pub fn reclaim(
    record: &TaskRecord,
    claimant: &Claimant,
    now: Timestamp,
    wanted: &[&str],
) -> (Option<TaskRecord>, Claims) {
    let mut updated = record.clone();
    // What a stopped attempt wrote but did not commit is committed with the claims (the
    // sweeper's, say): else its files never read as `queued`, and are sent again and again.
    adopt_uncommitted(&mut updated, Some(record.generation));
    let claims = claim_files(&mut updated, Some(record.generation), claimant, now, wanted);
    if claims.to_enqueue.is_empty() {
        return (None, claims);
    }
    updated.version += 1;
    (Some(updated), claims)
}

/// An attempt that wrote its file items but not its task item (it stopped, or lost the task
/// write to another writer and this is its retry) left files stamped with a generation the
/// task item has not reached: reach it, so that a settle planned for the file set without
/// them is refused, and their settle writes a new manifest and event. A file left unsettled
/// that way reopens the vault too, whatever the task item said (the settle it records was of
/// another file set); one settled since (a message redriven from the dead-letter queue copied
/// it) leaves the vault settled, but its manifest, of the file set before, is to be written
/// again. `read_generation`: the task item's, as read (None: none was). Every
/// read-modify-write of the task item makes it (the reconciler's bookkeeping too): one that
/// did not would leave such a file unsent under a settled task no sweep looks at.
pub(crate) fn adopt_uncommitted(record: &mut TaskRecord, read_generation: Option<u64>) {
    let stamped = record.files.values().filter_map(|f| f.generation).max().unwrap_or(0);
    let adopted = stamped > record.generation;
    record.generation = record.generation.max(stamped);
    if !record.files_settled() && record.vault != VaultState::Pending {
        record.vault = VaultState::Pending;
        record.manifest_key = None;
        if Some(record.generation) == read_generation {
            record.generation += 1;
        }
    } else if adopted && record.vault != VaultState::Pending {
        record.manifest_key = None;
        record.vault = record.settled_vault_state().unwrap_or(record.vault);
    }
    record.sync_open_marker();
}

/// A retry finding file items its own attempt wrote (its claim, still `enqueuing`, its event's
/// URL) at or below the task item's generation as read: another request's put committed that
/// generation in between, having read the task before those items were there, so a settle
/// of the file set without them may have published its `Task Vaulted` already (the settle's
/// write is then refused, but its event went out first). Those files move on to a generation
/// of their own, as a reopen does, so that their settle's event has an id of its own rather
/// than the one a consumer may hold for the set without them. (Any other way the task item
/// reached their generation, a put of its own whose answer was lost, say, costs no more than
/// a generation skipped.)
fn move_own_past_another_commit(record: &mut TaskRecord, read: u64, event: &CallbackEvent, claimant: &Claimant) {
    let own: Vec<String> = event
        .files
        .iter()
        .filter(|wanted| {
            record.files.get(&wanted.name).is_some_and(|file| {
                file.status == FileStatus::Enqueuing
                    && file.claim.as_deref() == Some(claimant.id.as_str())
                    && file.url == wanted.url
                    && file.generation.is_some_and(|g| g <= read)
            })
        })
        .map(|wanted| wanted.name.clone())
        .collect();
    if own.is_empty() {
        return;
    }
    // Past the read: the generation this merge already moved to (it opened files, or adopted
    // others'), or the next one. (adopt_uncommitted, just before, left the vault pending and
    // the open marker set: these files are enqueuing.)
    record.move_past(read);
    stamp(record, &own);
}

/// The record to write (version incremented) that commits what a stopped attempt wrote but
/// did not commit (see `adopt_uncommitted`), when `record` as read has such a file; else None.
/// For a writer with nothing else to write: the sweeper, over a task whose files are all
/// settled (its manifest job then settles the file set the task item names).
pub fn commit_uncommitted(record: &TaskRecord) -> Option<TaskRecord> {
    if !record.has_uncommitted_files() {
        return None;
    }
    let mut committed = record.clone();
    adopt_uncommitted(&mut committed, Some(record.generation));
    committed.version += 1;
    Some(committed)
}

fn new_record(event: &CallbackEvent, body: &BodyInfo, id: &str, arrived: Timestamp, now: Timestamp) -> TaskRecord {
    let mut record = TaskRecord::new(
        event.task_id.as_str(),
        event.family,
        event.stage,
        event.code,
        &bounded_message(&event.message),
        arrived,
    );
    record.last_received_at = now;
    record.callbacks.insert(id.to_owned(), callback_entry(event, body, arrived));
    let (opened, _) = merge_files(&mut record, event, true);
    stamp(&mut record, &opened);
    merge_streams(&mut record, event, true);
    merge_details(&mut record, event, body, true);
    record.vault = if record.files_settled() { VaultState::Complete } else { VaultState::Pending };
    record
}

/// A body not seen before for a known task, which arrived at `arrived`. Returns the files
/// whose newer URL was too long to keep ([`Merge::newer_urls_dropped`]).
fn apply_new_body(
    record: &mut TaskRecord,
    event: &CallbackEvent,
    body: &BodyInfo,
    id: &str,
    arrived: Timestamp,
) -> Vec<String> {
    record.callbacks.insert(id.to_owned(), callback_entry(event, body, arrived));
    let registered = record.stage == Stage::Submitted;
    // A failure read as music or lyrics is only read from its shape
    // (`CallbackEvent::family_is_a_guess`): it does not overrule the family the task was
    // registered with. Nor, on a task a client registered, does a lyrics failure without
    // files whose message names lyrics: kie's "Song Description flagged for moderation" may as
    // well be a music task's (the client knows what it asked for). Other families' failures
    // name theirs by a key, and correct a registration that named another; so do lyrics
    // variants (every one failed: lyrics for sure).
    let read_from_message = !event.succeeded()
        && event.files.is_empty()
        && event.family == Family::Lyrics
        && event.details.is_empty()
        && suno_callbacks::parse::names_lyrics(&event.message);
    let no_better = event.family_is_a_guess() || (!crate::register::unregistered(record) && read_from_message);
    let adopt = record.family == Family::Unknown || (registered && !no_better);
    if adopt && event.family != Family::Unknown {
        record.family = event.family;
    }

    let current = record.stage;
    let merged = merge_stage(Some(current), event.stage);
    if merged.advanced {
        record.stage = merged.stage;
        record.code = event.code;
        record.message = bounded_message(&event.message);
        record.succeeded = event.succeeded();
    } else if record.succeeded && merged.stage.is_terminal() && !event.succeeded() {
        // The task already ended well: keep its outcome and files, but remember the failure.
        record.failure = Some(FailureEntry {
            stage: event.stage,
            code: event.code,
            message: bounded_message(&event.message),
            received_at: arrived,
        });
    }
    // An event at the task's own stage (or one that set it) speaks for the task's data;
    // a late, earlier-stage event only fills gaps.
    let authoritative = merged.advanced || current == event.stage;

    let (opened, newer_urls_dropped) = merge_files(record, event, authoritative);
    // A new stage is settled on its own (its manifest and `Task Vaulted` name it; the settle
    // of the earlier one, if under way, is refused: it is conditional on the stage too). Over
    // files all settled the vault stays as it is and its manifest is due
    // ([`crate::download::manifest_job`]).
    if merged.advanced {
        record.manifest_key = None;
    }
    if !opened.is_empty() {
        open_file_set(record, &opened);
    }
    merge_streams(record, event, authoritative);
    merge_details(record, event, body, authoritative);
    if registered {
        // The registration's vault was pending for want of a result: now the files decide,
        // as for a task first seen with this callback.
        record.vault = record.settled_vault_state().unwrap_or(VaultState::Pending);
        record.abandoned = None;
    } else if merged.advanced {
        record.abandoned = None;
    }
    newer_urls_dropped
}

fn callback_entry(event: &CallbackEvent, body: &BodyInfo, arrived: Timestamp) -> CallbackEntry {
    CallbackEntry {
        stage: event.stage,
        code: event.code,
        message: bounded_message(&event.message),
        received_at: arrived,
        body_key: body.archive_key.clone(),
        bytes: body.bytes,
        deliveries: 1,
    }
}

/// A new file set, of the files `opened` (added or reopened) and the others: the vault pending
/// again, at the next generation (the settle of the old set, if one is under way, no longer
/// applies), the files stamped with it.
pub(crate) fn open_file_set(record: &mut TaskRecord, opened: &[String]) {
    record.vault = VaultState::Pending;
    record.manifest_key = None;
    record.generation += 1;
    stamp(record, opened);
}

/// Mark the files `opened` as added or reopened by the record's generation.
fn stamp(record: &mut TaskRecord, opened: &[String]) {
    let generation = record.generation;
    for name in opened {
        if let Some(file) = record.files.get_mut(name) {
            file.generation = Some(generation);
        }
    }
}

/// Add the event's new files and reopen failed ones that come with a new URL. An
/// authoritative event's new URL also replaces the URL of a file not yet stored (`complete`
/// supersedes `first`): the downloader reads the URL and key from the record, so a message
/// already sent for the file fetches the new one. A file being downloaded keeps its URL and
/// key (what its holder copies, and where an earlier attempt's copy would be) and takes the
/// new one as `next_url` (up to [`MAX_NEXT_URL_BYTES`]): its holder copies that should the old
/// fail for good (its `failed` write is conditional on no newer URL; a stranded file sent
/// again keeps both, so an earlier attempt's unrecorded copy of its URL is still found).
/// Returns the names of the files added or reopened, and of those whose newer URL was too
/// long to keep.
fn merge_files(record: &mut TaskRecord, event: &CallbackEvent, authoritative: bool) -> (Vec<String>, Vec<String>) {
    let mut opened = Vec::new();
    let mut dropped = Vec::new();
    for file in &event.files {
        match record.files.get_mut(&file.name) {
            None => {
                let entry = pending_file(&event.task_id, &file.name, &file.url, event.stage);
                record.files.insert(file.name.clone(), entry);
                opened.push(file.name.clone());
            }
            Some(known) if known.url == file.url => {}
            Some(known) if known.status == FileStatus::Failed => {
                let stage = known.stage;
                *known = pending_file(&event.task_id, &file.name, &file.url, event.stage);
                known.stage = stage;
                opened.push(file.name.clone());
            }
            Some(known) if authoritative && known.status == FileStatus::Downloading => {
                if file.url.len() <= MAX_NEXT_URL_BYTES {
                    known.next_key = Some(s3_key::file_key(&event.task_id, &file.name, &file.url));
                    known.next_url = Some(file.url.clone());
                } else {
                    dropped.push(file.name.clone());
                }
            }
            Some(known) if authoritative && known.status != FileStatus::Stored => {
                known.url = file.url.clone();
                known.key = s3_key::file_key(&event.task_id, &file.name, &file.url);
                (known.next_url, known.next_key, known.relinks) = (None, None, 0);
            }
            Some(_) => {}
        }
    }
    (opened, dropped)
}

fn pending_file(task_id: &TaskId, name: &str, url: &str, stage: Stage) -> FileEntry {
    FileEntry::pending(url, s3_key::file_key(task_id, name, url), stage)
}

fn merge_streams(record: &mut TaskRecord, event: &CallbackEvent, authoritative: bool) {
    for stream in &event.streams {
        if authoritative || !record.streams.contains_key(&stream.name) {
            record.streams.insert(stream.name.clone(), stream.url.clone());
        }
    }
}

fn merge_details(record: &mut TaskRecord, event: &CallbackEvent, body: &BodyInfo, authoritative: bool) {
    if let Some(kept) = record.details.as_ref().filter(|kept| says_something(kept)) {
        // An `error` after `first` says nothing of the tracks, or only its error text (the
        // task's `message` says that too): the first's ids and titles (the audio ids later
        // submits need) stay.
        let error_only = matches!(event.details, Details::Error { .. }) && kept["kind"] != "error";
        if !authoritative || event.details.is_empty() || error_only {
            return;
        }
    }
    record.details = match details_json(event) {
        None => return,
        Some(DetailsJson::Fits(details)) => Some(details),
        // A pointer: to the object holding them whole, written beside the archive
        // ([`oversized_details`]), and to the archived body they came in.
        Some(DetailsJson::Over { kind, json }) => Some(serde_json::json!({
            "kind": DETAILS_KEPT_APART,
            "details_kind": kind,
            "bytes": json.len(),
            "details_key": kept_details_key(event, &json),
            "body_key": body.archive_key,
        })),
    };
}

/// Whether stored details say something of the results: an empty track list (a failure
/// body's) does not, so a later body's take their place, even one that does not move the
/// stage (a success after an `error`). A pointer to details kept apart does.
fn says_something(details: &serde_json::Value) -> bool {
    use serde::Deserialize;
    Details::deserialize(details).map_or(true, |details| !details.is_empty())
}

/// An event's details as JSON, by whether the task item can hold them.
enum DetailsJson {
    Fits(serde_json::Value),
    /// Over [`MAX_DETAILS_BYTES`]: their `kind`, and their JSON to keep apart.
    Over {
        kind: serde_json::Value,
        json: String,
    },
}

/// The event's details (None: it has none).
fn details_json(event: &CallbackEvent) -> Option<DetailsJson> {
    if event.details == Details::None {
        return None;
    }
    let details = serde_json::to_value(&event.details).ok()?;
    let json = details.to_string();
    if json.len() <= MAX_DETAILS_BYTES {
        return Some(DetailsJson::Fits(details));
    }
    Some(DetailsJson::Over { kind: details["kind"].clone(), json })
}

/// The event's details as JSON when they are over [`MAX_DETAILS_BYTES`] (thousands of MIDI
/// notes): kept whole under [`kept_details_key`] beside the archived body, and in the record
/// only as a pointer to it.
pub fn oversized_details(event: &CallbackEvent) -> Option<String> {
    match details_json(event)? {
        DetailsJson::Over { json, .. } => Some(json),
        DetailsJson::Fits(_) => None,
    }
}

/// Where the details of `event`, `json` as [`oversized_details`] renders them, are kept when
/// they are too large for the task item: named by that JSON's own SHA-256, so the object
/// under a key is always its content (written only where none is), whatever rendering
/// another build gave the same body.
pub fn kept_details_key(event: &CallbackEvent, json: &str) -> String {
    s3_key::details_key(&event.task_id, event.stage, &crate::accept::body_sha256_hex(json.as_bytes()))
}

/// The `kind` of the pointer a task item holds for details kept apart, beside the archived body.
pub const DETAILS_KEPT_APART: &str = "in_body";

/// `message` cut to at most [`MAX_MESSAGE_BYTES`] on a character boundary, marked as cut.
fn bounded_message(message: &str) -> String {
    crate::text::cut(message, MAX_MESSAGE_BYTES, |len| format!("… [truncated: {len} bytes in the archived body]"))
        .into_owned()
}

/// The largest item of a record, as JSON, plus what the downloader may still add to a file:
/// an upper estimate of the largest DynamoDB item it becomes (attribute names and values).
/// What the tests measure records by ([`too_large_to_record`] computes it on the way).
#[cfg(test)]
pub fn item_size_estimate(record: &TaskRecord) -> usize {
    largest_estimate(crate::items::item_bytes(record))
}

/// The largest item, with what the downloader may still add to a file.
fn largest_estimate(bytes: crate::items::ItemBytes) -> usize {
    bytes.largest.saturating_add(FILE_GROWTH_BYTES)
}

/// Whether a merged record is too large to write, and its size in bytes if so: an item over
/// [`MAX_ITEM_ESTIMATE_BYTES`] (its JSON plus what the downloader may add), or all of its items past
/// [`MAX_RECORD_ESTIMATE_BYTES`] with the merge adding to what the sender wrote (a body, a
/// file, a URL). One already past it (written before the bound, or by concurrent deliveries)
/// still takes what adds nothing: a duplicate, claims and counts, a poll saying nothing new.
pub fn too_large_to_record(before: Option<&TaskRecord>, after: &TaskRecord) -> Option<usize> {
    let bytes = crate::items::item_bytes(after);
    let largest = largest_estimate(bytes);
    if largest > MAX_ITEM_ESTIMATE_BYTES {
        return Some(largest);
    }
    (bytes.total > MAX_RECORD_ESTIMATE_BYTES && before.is_none_or(|before| adds_content(before, after)))
        .then_some(bytes.total)
}

/// Whether `after` holds a body, a file or a file URL that `before` does not.
fn adds_content(before: &TaskRecord, after: &TaskRecord) -> bool {
    let new_body = after.callbacks.keys().any(|id| !before.callbacks.contains_key(id));
    new_body
        || after.files.iter().any(|(name, file)| {
            before.files.get(name).is_none_or(|known| (&known.url, &known.next_url) != (&file.url, &file.next_url))
        })
}

/// Claim every `pending` file, every `enqueuing` file whose lease ran out (or that this
/// claimant already holds), and every [`stranded`] one; list the wanted files another
/// claimant still holds. A stranded file, and a lapsed claim on a file the task item's
/// generation as read (`read_generation`; None: none was) covers, move on to the next
/// generation.
fn claim_files(
    record: &mut TaskRecord,
    read_generation: Option<u64>,
    claimant: &Claimant,
    now: Timestamp,
    wanted: &[&str],
) -> Claims {
    let lease_until = LeaseEnd::at(now.plus(claimant.lease));
    // A stranded file is claimed as a reopened one is, under the next generation: should the
    // task item write not come, the file reads as uncommitted (not as queued, which the old
    // `queued` set would say, with this claim's fresh lease), so the next sweep takes it.
    let reopened = record.generation + 1;
    let mut reopens = false;
    let mut claims = Claims::default();
    for (name, file) in record.files.iter_mut() {
        let claimable = match file.status {
            FileStatus::Pending => true,
            FileStatus::Enqueuing if file.claim.as_deref() == Some(claimant.id.as_str()) => true,
            FileStatus::Enqueuing => {
                let lapsed = file.lease_until.is_none_or(|lease| lease.lapsed_at(now));
                // A stopped request's file, at a generation the task item read has: its own
                // commit (it stopped after), or another request's that read the task before
                // the file was written (so a settle of that generation may have published
                // without it). Moved on, as a reopen, its settle's event has an id of its own.
                if lapsed && file.generation.is_some_and(|g| Some(g) <= read_generation) {
                    file.generation = Some(reopened);
                    reopens = true;
                }
                lapsed
            }
            _ if stranded(file, now) => {
                file.generation = Some(reopened);
                reopens = true;
                true
            }
            _ => false,
        };
        if claimable {
            file.status = FileStatus::Enqueuing;
            file.claim = Some(claimant.id.clone());
            file.lease_until = Some(lease_until);
            claims.to_enqueue.push(FileJob {
                task_id: record.task_id.clone(),
                name: name.clone(),
                url: file.url.clone(),
                key: file.key.clone(),
            });
        } else if file.status == FileStatus::Enqueuing && wanted.contains(&name.as_str()) {
            claims.wait_for.push(name.clone());
        }
    }
    if reopens {
        record.generation = reopened;
    }
    claims
}

/// A file `queued` or `downloading` whose message cannot be on the download queue any more:
/// its last claim's lease ran out (or the claim was released: a released file keeps when)
/// longer ago than the queue keeps a message. Its message
/// reached the dead-letter queue on a receive that could not write the file item (the table
/// throttled or unavailable, the time up, a panic) or expired unread; nothing else would
/// send the file again. Sending it again is safe even were a message left: a downloader
/// copies a file only under its own claim, and a settled file is never claimed.
fn stranded(file: &FileEntry, now: Timestamp) -> bool {
    matches!(file.status, FileStatus::Queued | FileStatus::Downloading)
        && file.lease_until.is_some_and(|lease| lease.plus(DOWNLOAD_QUEUE_RETENTION).lapsed_at(now))
}

#[cfg(test)]
mod tests;
