//! The task record as DynamoDB stores it: an item collection per task. Partition key
//! `task_id`; the sort key `sk` names the item:
//!
//! * `task`: the task item ([`TaskRecord`]'s own fields, plus the `bodies` set naming its
//!   archived callbacks and the `queued` set naming the files whose messages were sent);
//! * `file#<name>`: one per file ([`FileEntry`]), written by ingest when the file is first
//!   seen and by the downloader on each transition, each write touching that item only;
//! * `callback#<stage>-<sha256>`: one per distinct callback body ([`CallbackEntry`]).
//!
//! One strongly consistent Query reads the collection; [`assemble`] makes it a
//! [`TaskRecord`]. Ingest saves a merged record with [`plan_save`]: the file and callback
//! items first (a task it adds or reopens files of, or a settled one it writes files of,
//! marked open and fenced before them: [`MarkOpen`]), then the
//! task item, conditional on the version read (a duplicate that
//! changes nothing else only counts itself: [`TaskWrite::CountDelivery`]). The task item is
//! the commit: a callback counts once its id is in `bodies`. A file item counts as soon as it
//! exists (an accepted callback's file is never dropped; its task item follows, or the
//! provider's retry writes it).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_dynamo::{AttributeValue, Item};
use suno_callbacks::TaskId;

use crate::{AddFence, CallbackEntry, FileEntry, FileStatus, StoreError, TaskRecord};

#[cfg(any(test, feature = "test-support"))]
mod names;
#[cfg(any(test, feature = "test-support"))]
pub use names::attribute_names;

/// The partition key attribute.
pub const PARTITION_KEY: &str = "task_id";
/// The sort key attribute.
pub const SORT_KEY: &str = "sk";
/// The sort key of the task item.
pub const TASK_SK: &str = "task";
/// Sort keys of file items start with this, then the file's name.
pub const FILE_SK_PREFIX: &str = "file#";
/// Sort keys of callback items start with this, then the callback's id.
pub const CALLBACK_SK_PREFIX: &str = "callback#";

/// The sort key of the file `name`.
pub fn file_sk(name: &str) -> String {
    format!("{FILE_SK_PREFIX}{name}")
}

/// The sort key of the callback `id` (see [`crate::ingest::callback_id`]).
pub fn callback_sk(id: &str) -> String {
    format!("{CALLBACK_SK_PREFIX}{id}")
}

/// The task item's sets (DynamoDB string sets, absent when empty).
#[derive(Debug, Default, Serialize, Deserialize)]
struct Sets {
    #[serde(default, with = "serde_dynamo::string_set", skip_serializing_if = "Vec::is_empty")]
    bodies: Vec<String>,
    #[serde(default, with = "serde_dynamo::string_set", skip_serializing_if = "Vec::is_empty")]
    queued: Vec<String>,
}

fn malformed(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Malformed(format!("{what}: {e}"))
}

fn keyed(mut item: Item, task_id: &str, sk: String) -> Item {
    item.insert(PARTITION_KEY.to_owned(), AttributeValue::S(task_id.to_owned()));
    item.insert(SORT_KEY.to_owned(), AttributeValue::S(sk));
    item
}

/// The task item of `record`. Its `queued` set names the files read as queued and those
/// being downloaded: a downloader took the file from a message, which comes back should it
/// release the file for a retry, so the name must stay (else the file would read `pending`
/// and be sent a second time).
pub fn task_item(record: &TaskRecord) -> Result<Item, StoreError> {
    let mut item: Item = serde_dynamo::to_item(record).map_err(|e| malformed("task item", e))?;
    let sent = |f: &FileEntry| matches!(f.status, FileStatus::Queued | FileStatus::Downloading);
    let sets = Sets {
        bodies: record.callbacks.keys().cloned().collect(),
        queued: record.files.iter().filter(|(_, f)| sent(f)).map(|(n, _)| n.clone()).collect(),
    };
    let sets: Item = serde_dynamo::to_item(sets).map_err(|e| malformed("task item", e))?;
    item.extend(sets.into_inner());
    Ok(keyed(item, &record.task_id, TASK_SK.to_owned()))
}

/// The item of the file `name` of `task_id`.
pub fn file_item(task_id: &str, name: &str, file: &FileEntry) -> Result<Item, StoreError> {
    let item = serde_dynamo::to_item(file).map_err(|e| malformed("file item", e))?;
    Ok(keyed(item, task_id, file_sk(name)))
}

/// The item of the callback `id` of `task_id`.
pub fn callback_item(task_id: &str, id: &str, callback: &CallbackEntry) -> Result<Item, StoreError> {
    let item = serde_dynamo::to_item(callback).map_err(|e| malformed("callback item", e))?;
    Ok(keyed(item, task_id, callback_sk(id)))
}

/// A file item read alone (the downloader's claim returns one): its name and entry, as
/// stored (`queued` lives on the task item; a file item says `queued` only when a callback
/// replaced the URL of a file [`assemble`] read so, and wrote it back).
pub fn read_file_item(item: Item) -> Result<(String, FileEntry), StoreError> {
    let name = match item.get(SORT_KEY) {
        Some(AttributeValue::S(sk)) => sk.strip_prefix(FILE_SK_PREFIX).map(str::to_owned),
        _ => None,
    }
    .ok_or_else(|| StoreError::Malformed("a file item without a file# sort key".into()))?;
    let task = match item.get(PARTITION_KEY) {
        Some(AttributeValue::S(task_id)) => stored_task_id(task_id)?,
        _ => return Err(StoreError::Malformed(format!("file item {name} without a string {PARTITION_KEY}"))),
    };
    let file = serde_dynamo::from_item(item).map_err(|e| malformed(&format!("file item {name}"), e))?;
    file_within_bounds(&task, &name, &file)?;
    Ok((name, file))
}

/// The record a collection's items make; None without a task item (nothing committed yet).
///
/// Callback items count when the task item names them in `bodies`; file items count when
/// they exist. A file item saying `pending` or `enqueuing` whose name is in the task's
/// `queued` set reads as [`FileStatus::Queued`], unless it was (re)opened at a generation the
/// task item has not reached: an attempt wrote it but not the task item, and the name in the
/// set is of the file set before (its message was sent for the old URL).
pub fn assemble(items: impl IntoIterator<Item = Item>) -> Result<Option<TaskRecord>, StoreError> {
    let mut task = None;
    let mut files = BTreeMap::new();
    let mut callbacks = BTreeMap::new();
    for item in items {
        let sk = match item.get(SORT_KEY) {
            Some(AttributeValue::S(sk)) => sk.clone(),
            _ => return Err(StoreError::Malformed("an item without a string sort key".into())),
        };
        if sk == TASK_SK {
            task = Some(item);
        } else if let Some(name) = sk.strip_prefix(FILE_SK_PREFIX) {
            let file: FileEntry =
                serde_dynamo::from_item(item).map_err(|e| malformed(&format!("file item {name}"), e))?;
            files.insert(name.to_owned(), file);
        } else if let Some(id) = sk.strip_prefix(CALLBACK_SK_PREFIX) {
            let callback: CallbackEntry =
                serde_dynamo::from_item(item).map_err(|e| malformed(&format!("callback item {id}"), e))?;
            callbacks.insert(id.to_owned(), callback);
        }
        // Other sort keys belong to later versions of stemvault: left alone.
    }
    let Some(mut task) = task else { return Ok(None) };
    let sets: Sets = {
        let mut only = Item::from(std::collections::HashMap::<String, AttributeValue>::new());
        for key in ["bodies", "queued"] {
            if let Some(v) = task.remove(key) {
                only.insert(key.to_owned(), v);
            }
        }
        serde_dynamo::from_item(only).map_err(|e| malformed("task item sets", e))?
    };
    let mut record: TaskRecord = serde_dynamo::from_item(task).map_err(|e| malformed("task item", e))?;
    let bodies: BTreeSet<String> = sets.bodies.into_iter().collect();
    callbacks.retain(|id, _| bodies.contains(id));
    let queued: BTreeSet<String> = sets.queued.into_iter().collect();
    for (name, file) in files.iter_mut() {
        let uncommitted = file.is_uncommitted(record.generation);
        if matches!(file.status, FileStatus::Pending | FileStatus::Enqueuing) && queued.contains(name) && !uncommitted {
            file.status = FileStatus::Queued;
        }
    }
    record.files = files;
    record.callbacks = callbacks;
    within_bounds(&record)?;
    Ok(Some(record))
}

/// The largest count (version, generation, revision, deliveries, polls, attempts) a record is
/// read with: 2^53, the largest integer every JSON reader keeps exact, which no record
/// reaches by counting. A larger one was written by a hand (digits slipped): the record is
/// malformed, rather than wrapped around to 0 by the next `+ 1` (a generation read as older
/// than every manifest written).
pub const MAX_COUNT: u64 = 1 << 53;

/// The latest `adding_at` a record is read with (9999-12-31, the last time a timestamp
/// spells): a later one was written in micro- or nanoseconds by a hand, and a mark past it
/// would set `last_received_at` to the end of time, out of the sweeper's sight for good.
pub const MAX_UNIX_MS: u64 = crate::time::LAST_RFC3339_MS as u64;

/// [`StoreError::Malformed`] for a count past [`MAX_COUNT`], a lease past 9999 or a fence time past
/// [`MAX_UNIX_MS`].
fn within_bounds(record: &TaskRecord) -> Result<(), StoreError> {
    let task = [
        ("version", record.version),
        ("generation", record.generation),
        ("deliveries", record.deliveries),
        ("polls", record.polls),
        ("adding", record.adding.unwrap_or(0)),
    ];
    if let Some((what, n)) = task.into_iter().find(|(_, n)| *n > MAX_COUNT) {
        return Err(past_max_count(what, n));
    }
    if !record.files.is_empty() {
        let task = stored_task_id(&record.task_id)?;
        for (name, file) in &record.files {
            file_within_bounds(&task, name, file)?;
        }
    }
    if let Some((id, callback)) = record.callbacks.iter().find(|(_, c)| c.deliveries > MAX_COUNT) {
        return Err(past_max_count(&format!("callback {id}'s deliveries"), callback.deliveries));
    }
    match record.adding_at {
        Some(at) if at > MAX_UNIX_MS => {
            Err(StoreError::Malformed(format!("adding_at is {at}, past 9999 in Unix ms: edited by hand?")))
        }
        _ => Ok(()),
    }
}

/// A stored task id, as a [`TaskId`] (parsed once a record: its files' keys are checked
/// against it).
fn stored_task_id(task_id: &str) -> Result<TaskId, StoreError> {
    TaskId::parse(task_id).map_err(|e| StoreError::Malformed(format!("task id {task_id:?}: {e}")))
}

/// [`within_bounds`] for one file of `task`, read with its task or alone ([`read_file_item`]).
fn file_within_bounds(task: &TaskId, name: &str, file: &FileEntry) -> Result<(), StoreError> {
    let counts = [("rev", file.rev), ("generation", file.generation.unwrap_or(0)), ("attempts", file.attempts)];
    if let Some((what, n)) = counts.into_iter().find(|(_, n)| *n > MAX_COUNT) {
        return Err(past_max_count(&format!("file {name}'s {what}"), n));
    }
    // A lease in milliseconds where seconds belong would hold the file for ever: no claim
    // passes it, and the sweeper's stranded check waits for it to end.
    if let Some(lease) = file.lease_until.map(|lease| lease.unix_seconds).filter(|s| *s > (MAX_UNIX_MS / 1000) as i64) {
        return Err(StoreError::Malformed(format!(
            "file {name}'s lease_until is {lease}, past 9999 in Unix seconds (milliseconds?): edited by hand?"
        )));
    }
    // A key no file of the task can have (another task's object, its own manifest, a body's)
    // would be overwritten by the downloader, whose role may write anywhere under `tasks/`.
    for (what, key) in [("key", Some(&file.key)), ("next_key", file.next_key.as_ref())] {
        if let Some(key) = key.filter(|key| !suno_callbacks::s3_key::is_file_key_of(task, key)) {
            return Err(StoreError::Malformed(format!(
                "file {name}'s {what} {key:?} is no key of a file of task {task}: edited by hand?"
            )));
        }
    }
    Ok(())
}

fn past_max_count(what: &str, n: u64) -> StoreError {
    StoreError::Malformed(format!("{what} is {n}, past 2^53: edited by hand?"))
}

/// What a put requires of the item it replaces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PutCondition {
    /// No item; or one nobody holds and nobody has written since a first save (`rev` 1):
    /// `pending`, or `enqueuing` under `claimant`'s own claim or under a claim whose lease
    /// has run out (an attempt that stopped before writing its task item). For a file of a
    /// task without a task item: never one another request is enqueuing right now (that
    /// request commits first; this one reads again), and never one a downloader took, even
    /// when another request committed the task and a downloader took and released the file
    /// after this one read no task item. The lease is compared with the writer's clock when
    /// it is sent.
    Unclaimed { claimant: String },
    /// No item under this key yet.
    Absent,
    /// A file item still at this revision.
    Rev(u64),
    /// The task item still at this version, and its add fence ([`AddFence`]) still this one
    /// (None: still none). A [`MarkOpen`] leaves the version as it is and sets a fence of its
    /// own (its time tells it from another at the same generation), so a put over a read made
    /// before it is refused: it would take away the mark and the fence of a save writing its
    /// file items right now, or write an older `last_received_at` back, which would end the
    /// sweeper's grace period for that save early.
    Version { version: u64, adding: Option<AddFence> },
}

/// One conditional PutItem.
#[derive(Debug, Clone, PartialEq)]
pub struct ItemPut {
    pub item: Item,
    pub condition: PutCondition,
}

/// How the task item is written.
#[derive(Debug, Clone, PartialEq)]
pub enum TaskWrite {
    /// The whole item, conditional on what was read.
    Put(ItemPut),
    /// Only one more delivery to count (a duplicate that changes no other attribute and no
    /// file or callback item): `deliveries` and `version` each + 1 and `last_received_at`
    /// set, in one update of the existing item, whatever its version. Concurrent duplicates
    /// then never conflict (each would otherwise read and put the whole item again after
    /// every other's put), and the version still moves, so a concurrent read-merge-put of
    /// the item is refused and retried.
    ///
    /// It holds only while the reconciler's view is as read (no `not_found_since`, and
    /// `reconcile` present exactly when `watched`): a merge clears the one and re-watches a
    /// task that needs it, so a count over a change made since would skip that; such a
    /// count is refused as a conflict, and the merge is made again from a new read.
    CountDelivery { last_received_at: AttributeValue, watched: bool },
}

/// The writes that save a merged record, in order: `mark_open` (before anything else), then
/// `files` and `callbacks` (in any order or at once), then `task` (the commit), then one
/// `deliveries + 1` per id in `redelivered` (a body delivered again: counted on its callback
/// item). A callback put that finds its item there already is not a conflict: an earlier
/// attempt that did not commit put the same body.
#[derive(Debug, Clone, PartialEq)]
pub struct SavePlan {
    pub mark_open: Option<MarkOpen>,
    pub files: Vec<ItemPut>,
    pub callbacks: Vec<ItemPut>,
    /// None when the task item's attributes are unchanged (only file items changed).
    pub task: Option<TaskWrite>,
    pub redelivered: Vec<String>,
}

impl SavePlan {
    /// The task item's put, when that is all the plan writes.
    pub fn task_put_alone(self) -> Option<ItemPut> {
        match self {
            SavePlan { mark_open: None, files, callbacks, task: Some(TaskWrite::Put(put)), redelivered }
                if files.is_empty() && callbacks.is_empty() && redelivered.is_empty() =>
            {
                Some(put)
            }
            _ => None,
        }
    }
}

/// Written to the task item before the file items of a save that writes file items of a
/// settled task (one outside the sweeper's `open-tasks` index, unless an attempt that stopped
/// marked it) or adds or reopens files (at a generation above the one read): sets `open`,
/// the save's `last_received_at` (the sweeper's grace period, which also keeps it from taking
/// a stopped attempt's mark away) and the add fence (`adding` = the save's generation:
/// [`TaskRecord::adding`]), conditional on the version and fence read; the version is left as
/// it is.
///
/// Why: an attempt that stops before its task item leaves the task in the index, and no
/// settle planned before its file items existed can take it out (the settle requires no
/// fence): the sweeper commits and sends the files it wrote, which would otherwise wait,
/// unsent, for the provider to retry the callback.
///
/// As the version does not move, every write that could take `open` or the fence away checks
/// something else a mark made after its read changes: a task item put the fence read
/// ([`PutCondition::Version`]), the downloader's settle the absence of a fence (and never
/// over a settled task marked open), the sweeper's close the `last_received_at` read. A record
/// read marked keeps its mark ([`TaskRecord::sync_open_marker`]) and its fence until a put
/// commits the files the fence is for. The mark's time is past every time read, so a put
/// planned before a mark never finds that mark's fence as read. (Two requests that read the
/// same item in the same millisecond compute the same mark: the second is refused by the
/// first's fence and reads again.)
#[derive(Debug, Clone, PartialEq)]
pub struct MarkOpen {
    /// The task item's version as read.
    pub version: u64,
    /// The task item's fence as read.
    pub read: Option<AddFence>,
    pub last_received_at: AttributeValue,
    /// The generation the save's file items are written at.
    pub generation: u64,
    /// The mark's time, in Unix milliseconds: the save's `last_received_at`, or just past the
    /// latest time read (`last_received_at`, the fence's) when that is as late (but not when it
    /// is over an hour ahead: a hand edit, not followed); the mark sets `last_received_at` to
    /// it too.
    pub at: u64,
}

impl MarkOpen {
    /// The fence this mark sets.
    pub fn fence(&self) -> AddFence {
        AddFence { generation: self.generation, at: Some(self.at) }
    }
}

/// The writes that turn the stored `before` (None: no task item yet) into `after`, whose
/// `version` is already incremented. Each changed file item is written at its revision + 1,
/// conditional on the revision read; a callback new to the task is put if absent (an
/// earlier attempt may have put it already); the task item is put conditional on
/// `before.version`, or on being absent.
pub fn plan_save(before: Option<&TaskRecord>, after: &TaskRecord) -> Result<SavePlan, StoreError> {
    let task_id = after.task_id.as_str();
    let mut files = Vec::new();
    for (name, file) in &after.files {
        let known = before.and_then(|b| b.files.get(name));
        if known == Some(file) {
            continue;
        }
        let condition = match (before, known) {
            // None read: an item of an attempt that never committed (or of one that committed
            // since this read, and then nobody touched).
            (None, _) => PutCondition::Unclaimed { claimant: file.claim.clone().unwrap_or_default() },
            (Some(_), None) => PutCondition::Absent,
            (Some(_), Some(known)) => PutCondition::Rev(known.rev),
        };
        let written = FileEntry { rev: known.map_or(file.rev, |k| k.rev) + 1, ..file.clone() };
        files.push(ItemPut { item: file_item(task_id, name, &written)?, condition });
    }
    let mut callbacks = Vec::new();
    let mut redelivered = Vec::new();
    for (id, callback) in &after.callbacks {
        match before.and_then(|b| b.callbacks.get(id)) {
            None => {
                callbacks.push(ItemPut { item: callback_item(task_id, id, callback)?, condition: PutCondition::Absent })
            }
            Some(known) if known.deliveries < callback.deliveries => redelivered.push(id.clone()),
            Some(_) => {}
        }
    }
    let mut item = task_item(after)?;
    let mark_open = match before {
        Some(before) if marks(before, after) && !files.is_empty() => {
            // Past every time read (the fence's, and `last_received_at`, which the mark sets
            // to its own time and a close leaves), so that a mark made over another's reads
            // it and its fence differs, however far behind its clock is.
            let ms = |t: crate::Timestamp| u64::try_from(t.unix_ms).unwrap_or(0);
            let own = ms(after.last_received_at);
            let read = ms(before.last_received_at).max(before.adding_at.unwrap_or(0));
            // A time read beyond any clock's lead over this one was written by a hand (a digit
            // too many): carried on, it would keep the task out of the sweeper's sight until
            // then. Not followed, the mark's own time differs from it all the same.
            let past_read = if read > own.saturating_add(MAX_CLOCK_LEAD_MS) { 0 } else { read.saturating_add(1) };
            let at = own.max(past_read);
            let received = crate::Timestamp::from_unix_ms(i64::try_from(at).unwrap_or(i64::MAX));
            Some(MarkOpen {
                version: before.version,
                read: before.add_fence(),
                last_received_at: AttributeValue::S(received.rfc3339()),
                generation: after.generation,
                at,
            })
        }
        _ => None,
    };
    // The fence the task item put finds: the mark's, or the one read. The put of the save
    // that set it takes it away, as does one committing the files it was set for.
    let fence = mark_open.as_ref().map(MarkOpen::fence).or(before.and_then(TaskRecord::add_fence));
    if mark_open.is_some() || after.adding.is_none_or(|adding| commits_fenced_files(after, adding)) {
        // (A time without its fence, left by a hand or an older build, goes too.)
        item.remove("adding");
        item.remove("adding_at");
    }
    let task = match before {
        None => Some(TaskWrite::Put(ItemPut { item, condition: PutCondition::Absent })),
        Some(before) => task_write(before, after, item, fence, !files.is_empty() || !callbacks.is_empty())?,
    };
    Ok(SavePlan { mark_open, files, callbacks, task, redelivered })
}

/// [`crate::time::MAX_CLOCK_LEAD`] in milliseconds.
const MAX_CLOCK_LEAD_MS: u64 = crate::time::MAX_CLOCK_LEAD.as_millis() as u64;

/// Whether a save of `after` over `before` marks the task item before its file items
/// ([`MarkOpen`]): it reopens a settled task, or adds or reopens files (a generation above
/// the one read) of a task that will be open. A registered task's first result too: nothing
/// settles a task at `submitted`, but a callback and a poll may both bring its first result,
/// and the files of the one committed first can be stored and settled while the other's
/// items are written (unmarked, the settle would not see them coming).
fn marks(before: &TaskRecord, after: &TaskRecord) -> bool {
    (before.is_settled() || after.generation > before.generation) && after.open.is_some()
}

/// Whether `after` commits the files the fence `adding` was set for: its generation has
/// reached the fence's, and a file item of that generation is among its files (the fenced
/// save wrote its items, and this put counts them).
fn commits_fenced_files(after: &TaskRecord, adding: u64) -> bool {
    after.generation >= adding && after.files.values().any(|f| f.generation == Some(adding))
}

/// How the task item `item` of `after` is written over `before` (None: unchanged but its
/// version), the add fence `fence` there when it is; `writes_items`: the save writes file
/// or callback items too.
fn task_write(
    before: &TaskRecord,
    after: &TaskRecord,
    item: Item,
    fence: Option<AddFence>,
    writes_items: bool,
) -> Result<Option<TaskWrite>, StoreError> {
    let mut unchanged = task_item(before)?;
    unchanged.insert("version".to_owned(), item["version"].clone());
    if unchanged == item {
        return Ok(None);
    }
    // `before` with only the counted attributes of `after` (both always present).
    let mut counted = unchanged;
    for field in ["deliveries", "last_received_at"] {
        if let Some(value) = item.get(field) {
            counted.insert(field.to_owned(), value.clone());
        }
    }
    let one_more_delivery = after.deliveries == before.deliveries + 1;
    Ok(Some(match item.get("last_received_at") {
        Some(at) if counted == item && one_more_delivery && !writes_items => {
            TaskWrite::CountDelivery { last_received_at: at.clone(), watched: before.reconcile.is_some() }
        }
        // The version read, and the fence there (a put that drops an `open` it read never
        // drops a mark: a settled task read marked keeps it, [`TaskRecord::sync_open_marker`]).
        _ => TaskWrite::Put(ItemPut {
            item,
            condition: PutCondition::Version { version: before.version, adding: fence },
        }),
    }))
}

/// The sizes of a record's items, in bytes as JSON (an upper estimate of DynamoDB's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ItemBytes {
    /// The largest item's.
    pub largest: usize,
    /// All of them together: what a reader's Query of the task returns.
    pub total: usize,
}

/// The sizes of the items a record makes.
pub fn item_bytes(record: &TaskRecord) -> ItemBytes {
    let json = |v: Result<Vec<u8>, serde_json::Error>| v.map_or(usize::MAX, |j| j.len());
    let task = json(serde_json::to_vec(record))
        .saturating_add(record.callbacks.keys().chain(record.files.keys()).map(|k| k.len() + 3).sum::<usize>());
    let mut bytes = ItemBytes { largest: task, total: task };
    let files = record.files.values().map(|f| json(serde_json::to_vec(f)));
    for item in files.chain(record.callbacks.values().map(|c| json(serde_json::to_vec(c)))) {
        bytes.largest = bytes.largest.max(item);
        bytes.total = bytes.total.saturating_add(item);
    }
    bytes
}

#[cfg(test)]
mod tests;
