//! The task table, an item collection per task ([`stemvault_vault::items`]): one strongly
//! consistent Query per record read, saves as conditional puts of the changed items (a
//! duplicate's count as one update of the task item), and conditional updates of one item
//! whose expressions pure functions build as an [`Update`].

use std::collections::HashMap;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::config::http::HttpResponse;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::operation::update_item::{UpdateItemError, UpdateItemOutput};
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue, ReturnValuesOnConditionCheckFailure};
use futures::StreamExt;
// What `Updated` carries: callers read it with `stemvault_vault::items`.
use crate::sdk_error::sdk_error_text;
use serde_dynamo::AttributeValue as Value;
pub use serde_dynamo::Item;
use stemvault_vault::items::{self, ItemPut, MarkOpen, PutCondition, TaskWrite};
use stemvault_vault::{AddFence, Conditional, FileStatus, LeaseEnd, OPEN_MARKER, StoreError, TaskRecord, Timestamp};

/// One conditional UpdateItem of a task's item: its expressions and their placeholders.
/// Built by small pure functions (each function's `aws` module), so tests see exactly what
/// DynamoDB gets; sent by [`TaskTable::update`].
#[derive(Debug, Clone, PartialEq)]
pub struct Update {
    pub update: String,
    pub condition: String,
    pub names: HashMap<String, String>,
    pub values: HashMap<String, AttributeValue>,
}

impl Update {
    /// The expressions; placeholders are added with [`Update::name`] and [`Update::value`].
    pub fn new(update: impl Into<String>, condition: impl Into<String>) -> Update {
        Update { update: update.into(), condition: condition.into(), names: HashMap::new(), values: HashMap::new() }
    }

    /// `placeholder` (`#x`) stands for the attribute `attribute`.
    pub fn name(&mut self, placeholder: &str, attribute: &str) -> &mut Update {
        self.names.insert(placeholder.to_owned(), attribute.to_owned());
        self
    }

    /// `placeholder` (`:x`) stands for `value`.
    pub fn value(&mut self, placeholder: &str, value: AttributeValue) -> &mut Update {
        self.values.insert(placeholder.to_owned(), value);
        self
    }

    /// Placeholders neither expression uses (DynamoDB refuses requests that send any).
    pub fn unused_placeholders(&self) -> Vec<&str> {
        let text = format!("{} {}", self.update, self.condition);
        let used = |p: &str| {
            text.match_indices(p)
                .any(|(at, _)| !text[at + p.len()..].starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_'))
        };
        self.names.keys().chain(self.values.keys()).map(String::as_str).filter(|p| !used(p)).collect()
    }

    /// The attributes the expressions name, bare (`attribute_not_exists(reconcile)`, `rev =
    /// :read`: the name before any `.` or `[`) or through a `#` placeholder; not functions
    /// or keywords.
    #[cfg(any(test, feature = "test-support"))]
    pub fn attributes(&self) -> std::collections::BTreeSet<String> {
        const KEYWORDS: [&str; 9] = ["AND", "OR", "NOT", "SET", "ADD", "REMOVE", "DELETE", "BETWEEN", "IN"];
        let mut named: std::collections::BTreeSet<String> = self.names.values().cloned().collect();
        for text in [&self.update, &self.condition] {
            let mut rest = text.as_str();
            while let Some(start) = rest.find(|c: char| c.is_ascii_alphabetic() || c == '_') {
                let before = rest[..start].chars().next_back();
                let len = rest[start..]
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(rest.len() - start);
                let (word, after) = (&rest[start..start + len], &rest[start + len..]);
                let placeholder =
                    matches!(before, Some(':' | '#' | '.')) || before.is_some_and(|c| c.is_ascii_alphanumeric());
                if !placeholder && !after.trim_start().starts_with('(') && !KEYWORDS.contains(&word) {
                    named.insert(word.to_owned());
                }
                rest = after;
            }
        }
        named
    }

    /// The attributes the expressions name that no item of the table carries
    /// ([`stemvault_vault::items::attribute_names`]): a mistyped or renamed name, with which a
    /// condition would hold always, or never.
    #[cfg(any(test, feature = "test-support"))]
    pub fn unknown_attributes(&self) -> Vec<String> {
        let known = stemvault_vault::items::attribute_names();
        self.attributes().into_iter().filter(|name| !known.contains(name.as_str())).collect()
    }

    /// Placeholders the expressions use that are not defined (DynamoDB refuses the request).
    #[cfg(any(test, feature = "test-support"))]
    pub fn undefined_placeholders(&self) -> Vec<String> {
        let text = format!("{} {}", self.update, self.condition);
        let mut undefined = Vec::new();
        let mut rest = text.as_str();
        while let Some(start) = rest.find(['#', ':']) {
            let tail = &rest[start..];
            let end = tail[1..].find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).map_or(tail.len(), |e| e + 1);
            let used = &tail[..end];
            let defined =
                if used.starts_with('#') { self.names.contains_key(used) } else { self.values.contains_key(used) };
            if !defined {
                undefined.push(used.to_owned());
            }
            rest = &tail[end..];
        }
        undefined
    }

    /// The tests' check of an expression builder: every placeholder used and defined
    /// (DynamoDB refuses a request with one unused or undefined), and every attribute named
    /// one an item carries.
    #[cfg(any(test, feature = "test-support"))]
    #[track_caller]
    pub fn assert_well_formed(&self) {
        let (unused, undefined) = (self.unused_placeholders(), self.undefined_placeholders());
        assert!(
            unused.is_empty() && undefined.is_empty(),
            "placeholders unused {unused:?}, undefined {undefined:?}: {self:?}"
        );
        assert!(self.unknown_attributes().is_empty(), "unknown attributes {:?}: {self:?}", self.unknown_attributes());
    }

    /// Drop the placeholders neither expression uses.
    pub fn without_unused_placeholders(mut self) -> Update {
        let unused: Vec<String> = self.unused_placeholders().into_iter().map(str::to_owned).collect();
        self.names.retain(|k, _| !unused.contains(k));
        self.values.retain(|k, _| !unused.contains(k));
        self
    }
}

/// A string attribute value.
pub fn s(value: &str) -> AttributeValue {
    AttributeValue::S(value.to_owned())
}

/// A number attribute value.
pub fn n(value: impl ToString) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

/// The condition expression of a put, and its placeholders; `now` is the writer's clock,
/// which a lease (in Unix seconds) is compared with.
fn put_condition(condition: &PutCondition, now: Timestamp) -> Update {
    let mut u = match condition {
        PutCondition::Absent => Update::new("", "attribute_not_exists(sk)"),
        PutCondition::Unclaimed { claimant } => {
            let mut u = Update::new(
                "",
                "attribute_not_exists(sk) OR (rev = :first AND (#status = :pending \
                 OR (#status = :enqueuing AND (#claim = :me OR #lease < :now))))",
            );
            u.name("#status", "status").name("#claim", "claim").name("#lease", "lease_until");
            u.value(":first", n(1))
                .value(":pending", s(FileStatus::Pending.as_str()))
                .value(":enqueuing", s(FileStatus::Enqueuing.as_str()));
            u.value(":me", s(claimant)).value(":now", n(now.unix_seconds()));
            u
        }
        PutCondition::Rev(rev) => {
            let mut u = Update::new("", "rev = :read");
            u.value(":read", n(rev));
            u
        }
        PutCondition::Version { version, adding } => {
            let mut u = Update::new("", "");
            let fence = fence_as_read(&mut u, *adding);
            u.condition = format!("version = :read AND {fence}");
            u.value(":read", n(version));
            u
        }
    };
    u.update.clear();
    u
}

/// The sort key and claimant of a first save's file put ([`PutCondition::Unclaimed`]); None
/// for any other put.
fn first_save_hold(put: &ItemPut) -> Option<(String, String)> {
    let PutCondition::Unclaimed { claimant } = &put.condition else { return None };
    match put.item.get(items::SORT_KEY) {
        Some(Value::S(sk)) => Some((sk.clone(), claimant.clone())),
        _ => None,
    }
}

/// Whose claims a release gives back ([`release_update`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Releasing {
    /// A committed task's (the queue refused a send): a new revision, as any write of a file
    /// the task item counts.
    Committed,
    /// A first save's, before any task item (its items stay at revision 1, which any first
    /// save may take: [`PutCondition::Unclaimed`]).
    FirstSave,
}

/// A file item back to `pending`, if still `enqueuing` under `claimant`'s claim (a first
/// save's: at revision 1); its lease ended `released_at` (should the file already be named
/// `queued`, the sweeper counts from it how long a message of it can still come).
pub(crate) fn release_update(claimant: &str, released_at: LeaseEnd, releasing: Releasing) -> Update {
    let (update, condition, one) = match releasing {
        Releasing::Committed => (
            "SET #status = :pending, #lease = :released REMOVE #claim ADD #rev :one",
            "#status = :enqueuing AND #claim = :me",
            ":one",
        ),
        Releasing::FirstSave => (
            "SET #status = :pending, #lease = :released REMOVE #claim",
            "#rev = :first AND #status = :enqueuing AND #claim = :me",
            ":first",
        ),
    };
    let mut u = Update::new(update, condition);
    u.name("#rev", "rev").value(one, n(1));
    u.name("#status", "status").name("#claim", "claim").name("#lease", "lease_until");
    u.value(":pending", s(FileStatus::Pending.as_str()))
        .value(":enqueuing", s(FileStatus::Enqueuing.as_str()))
        .value(":me", s(claimant))
        .value(":released", n(released_at.unix_seconds));
    u
}

/// The answers of `requests`, at most [`crate::MAX_REQUESTS_AT_ONCE`] under way at once, in
/// the order they come.
async fn bounded<F: std::future::Future>(requests: impl IntoIterator<Item = F>) -> Vec<F::Output> {
    futures::stream::iter(requests).buffer_unordered(crate::MAX_REQUESTS_AT_ONCE).collect().await
}

/// One more delivery of a task, counted on its existing task item without a read:
/// [`TaskWrite::CountDelivery`].
fn count_delivery(last_received_at: AttributeValue, watched: bool) -> Update {
    let reconcile = if watched { "attribute_exists(reconcile)" } else { "attribute_not_exists(reconcile)" };
    let condition = format!("attribute_exists(sk) AND attribute_not_exists(not_found_since) AND {reconcile}");
    let mut u = Update::new("ADD deliveries :one, version :one SET last_received_at = :at", condition);
    u.value(":one", n(1)).value(":at", last_received_at);
    u
}

/// One more delivery of a callback body already recorded, counted on its existing item.
fn count_redelivery() -> Update {
    let mut u = Update::new("ADD deliveries :one", "attribute_exists(sk)");
    u.value(":one", n(1));
    u
}

/// A task's item marked open, and fenced, before the file items of the save that adds or
/// reopens them, if it is still at the version and fence read: [`MarkOpen`].
fn mark_open(mark: &MarkOpen) -> Update {
    // The condition a put over the same read has.
    let mut u =
        put_condition(&PutCondition::Version { version: mark.version, adding: mark.read }, Timestamp::from_unix_ms(0));
    u.update =
        "SET #open = :open, last_received_at = :at, #adding = :new_adding, #adding_at = :new_adding_at".to_owned();
    u.name("#open", "open").name("#adding", "adding").name("#adding_at", "adding_at");
    u.value(":open", s(OPEN_MARKER)).value(":at", mark.last_received_at.clone().into());
    u.value(":new_adding", n(mark.generation)).value(":new_adding_at", n(mark.at));
    u
}

/// The condition that the task item's add fence is `fence` (None: there is none), its names
/// and values added to `u`.
fn fence_as_read(u: &mut Update, fence: Option<AddFence>) -> String {
    u.name("#adding", "adding");
    let Some(fence) = fence else { return "attribute_not_exists(#adding)".to_owned() };
    u.name("#adding_at", "adding_at").value(":adding", n(fence.generation));
    match fence.at {
        Some(at) => {
            u.value(":adding_at", n(at));
            "#adding = :adding AND #adding_at = :adding_at".to_owned()
        }
        None => "#adding = :adding AND attribute_not_exists(#adding_at)".to_owned(),
    }
}

/// A task's `open` (and the fence of the save that marked it) taken away: a settled task's, or
/// a registered one's an older release marked; if its task item is still as read (its version
/// and `last_received_at`: a [`MarkOpen`] since moved the time, not the version):
/// [`TaskTable::close_open`]. A new version, as every change of the task item: a writer that
/// read the item open would otherwise put its mark back.
fn close_open(record: &TaskRecord) -> Update {
    let mut u =
        Update::new("REMOVE #open, #adding, #adding_at ADD version :one", "version = :read AND last_received_at = :at");
    u.name("#open", "open").name("#adding", "adding").name("#adding_at", "adding_at");
    u.value(":read", n(record.version)).value(":at", s(&record.last_received_at.rfc3339())).value(":one", n(1));
    u
}

/// Whether `b` is the item (or map) `a`, as DynamoDB keeps it: a string set's members in any
/// order (the only sets the items hold), a number in any notation of its value.
fn same_map(a: &HashMap<String, Value>, b: &HashMap<String, Value>) -> bool {
    a.len() == b.len() && a.iter().all(|(name, v)| b.get(name).is_some_and(|w| same_value(v, w)))
}

fn same_value(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::N(a), Value::N(b)) => same_number(a, b),
        (Value::Ss(a), Value::Ss(b)) => a.len() == b.len() && a.iter().all(|x| b.contains(x)),
        (Value::M(a), Value::M(b)) => same_map(a, b),
        (Value::L(a), Value::L(b)) => a.len() == b.len() && a.iter().zip(b).all(|(v, w)| same_value(v, w)),
        _ => a == b,
    }
}

/// `1`, `1.0` and `10E-1` are one number to DynamoDB (integers compared exactly).
fn same_number(a: &str, b: &str) -> bool {
    if a == b {
        return true;
    }
    match (a.parse::<i128>(), b.parse::<i128>()) {
        (Ok(x), Ok(y)) => x == y,
        _ => matches!((a.parse::<f64>(), b.parse::<f64>()), (Ok(x), Ok(y)) if x == y),
    }
}

/// What a conditional update of one item did, with the item when asked for.
#[derive(Debug, Clone, PartialEq)]
pub enum Updated {
    /// Applied: the item as it is now.
    Applied(Item),
    /// The condition did not hold: the item as it is (None: there is none).
    Refused(Option<Item>),
}

impl Updated {
    /// Whether it was applied, the items aside.
    fn conditional(self) -> Conditional {
        match self {
            Updated::Applied(_) => Conditional::Applied,
            Updated::Refused(_) => Conditional::Conflict,
        }
    }
}

/// The DynamoDB table holding the tasks' item collections.
#[derive(Debug, Clone)]
pub struct TaskTable {
    pub client: Client,
    pub table_name: String,
}

/// A `ValidationException`, by its message: a limit the data went past (the item's size, a
/// key's, nesting, a number's range), [`StoreError::Rejected`], for good; anything else (an
/// expression, even one too large, or a value this build sent wrong), [`StoreError::Invalid`],
/// until a fix.
fn validation_error(message: &str, context: String) -> StoreError {
    const DATA_LIMITS: [&str; 6] =
        ["item size", "size of hashkey", "size of all range keys", "nesting levels", "overflow", "underflow"];
    let message = message.to_ascii_lowercase();
    if DATA_LIMITS.iter().any(|limit| message.contains(limit)) {
        StoreError::Rejected(context)
    } else {
        StoreError::Invalid(context)
    }
}

/// A write's failure other than its condition, for every writer of the table: a
/// `ValidationException` over a limit the data went past (the item's size, a key's, nesting,
/// a number's range) [`StoreError::Rejected`], any other [`StoreError::Invalid`]; anything
/// else unavailable.
pub fn write_error<E>(operation: &str, e: SdkError<E, HttpResponse>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    if e.code() == Some("ValidationException") {
        let message = e.message().unwrap_or_default().to_owned();
        return validation_error(&message, format!("{operation}: {}", sdk_error_text(&e)));
    }
    unavailable(operation, sdk_error_text(&e))
}

/// A call that failed, by its operation: retryable. For every reader of the table.
pub fn unavailable(operation: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("{operation}: {e}"))
}

impl TaskTable {
    pub fn new(client: Client, table_name: impl Into<String>) -> Self {
        TaskTable { client, table_name: table_name.into() }
    }

    /// Every item of a task, with one strongly consistent Query (more pages only for a
    /// collection over 1 MB), the task item first. A Query is no snapshot, but every writer
    /// commits an item before the task item that counts it (ingest its new file and callback
    /// items, a reopen its file items): read after the task item, each of those reflects at
    /// least what the task item read does. In ascending order (`callback#`, `file#`, `task`),
    /// a file item written while the Query ran could be missed under a task item counting it,
    /// and a settle check then settle a file set without it.
    pub async fn items(&self, task_id: &str) -> Result<Vec<Item>, StoreError> {
        let mut items = Vec::new();
        let mut start = None;
        loop {
            let page = self
                .client
                .query()
                .table_name(&self.table_name)
                .key_condition_expression("task_id = :task")
                .expression_attribute_values(":task", s(task_id))
                .consistent_read(true)
                .scan_index_forward(false)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| unavailable("Query", sdk_error_text(&e)))?;
            items.extend(page.items.unwrap_or_default().into_iter().map(Item::from));
            match page.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => return Ok(items),
            }
        }
    }

    /// The task's record (None: no task item).
    pub async fn load(&self, task_id: &str) -> Result<Option<TaskRecord>, StoreError> {
        items::assemble(self.items(task_id).await?)
    }

    /// Save `after` over `before` as read ([`items::plan_save`]): a settled task it reopens
    /// marked open, the changed file and new callback items at once (for a new task, one file
    /// item first), then the task item, then the redelivery counts.
    pub async fn save(&self, before: Option<&TaskRecord>, after: &TaskRecord) -> Result<(), StoreError> {
        let mut plan = items::plan_save(before, after)?;
        if let Some(mark) = plan.mark_open.take()
            && self.mark_open(after.task_id.as_str(), &mark).await? == Conditional::Conflict
        {
            return Err(StoreError::Conflict);
        }
        // A first save's own file items, as (sort key, claimant), once put.
        let mut taken = Vec::new();
        // A first save races other first deliveries of the task: one file item alone first,
        // so a request that lost (another is enqueuing the files) stops after one write.
        if before.is_none() && !plan.files.is_empty() {
            let first = plan.files.remove(0);
            let held = first_save_hold(&first);
            if self.put("PutItem (file)", first).await? == Conditional::Conflict {
                return Err(StoreError::Conflict);
            }
            taken.extend(held);
        }
        let files = plan.files.into_iter().map(|put| {
            let held = first_save_hold(&put);
            async move { (held, self.put("PutItem (file)", put).await) }
        });
        let callbacks = plan.callbacks.into_iter().map(|put| self.put("PutItem (callback)", put));
        let (files, callbacks) = futures::future::join(bounded(files), bounded(callbacks)).await;
        // The first failure, a table error before a conflict.
        let (mut error, mut conflict) = (None, false);
        for (held, result) in files {
            match result {
                Ok(Conditional::Applied) => taken.extend(held),
                Ok(Conditional::Conflict) => conflict = true,
                Err(e) => {
                    error.get_or_insert(e);
                }
            }
        }
        let failed = error.or(conflict.then_some(StoreError::Conflict));
        // (A callback item already there was put by an earlier attempt that did not commit.)
        let failed = failed.or_else(|| callbacks.into_iter().collect::<Result<Vec<_>, _>>().err());
        if let Some(failed) = failed {
            // Another first save whose file set differs (its first file another) may hold one
            // of this save's files while this one holds one of its: each would retry, its own
            // claims renewed, until both ran out of time (or, this one failing, until its
            // claims lapsed, past the other's budget). So this one gives its own back first.
            self.give_back(after.task_id.as_str(), &taken).await;
            return Err(failed);
        }
        let committed = match plan.task {
            Some(TaskWrite::Put(task)) => self.put("PutItem (task)", task).await,
            Some(TaskWrite::CountDelivery { last_received_at, watched }) => {
                let count = count_delivery(last_received_at.into(), watched);
                self.update("delivery", after.task_id.as_str(), items::TASK_SK, count).await
            }
            None => Ok(Conditional::Applied),
        };
        let committed = match committed {
            Ok(committed) => committed,
            // Refused for good, so not committed: given back as above. Unanswered, it may have
            // been (its answer lost): the claims then stay, as the committed task's. (A task
            // item another request committed meanwhile, a conflict, counts them: this
            // request's retry takes them up as its own.)
            Err(e) => {
                if !matches!(e, StoreError::Unavailable(_)) {
                    self.give_back(after.task_id.as_str(), &taken).await;
                }
                return Err(e);
            }
        };
        if committed == Conditional::Conflict {
            return Err(StoreError::Conflict);
        }
        // Committed: a count that fails now is only a count. Failing the save for it would
        // have the delivery retried (or parked), counted once more on the task item.
        for id in plan.redelivered {
            let u = count_redelivery();
            if let Err(e) = self.update("redelivered", after.task_id.as_str(), &items::callback_sk(&id), u).await {
                tracing::warn!(error = %e, callback = id, "a redelivered callback's count was not written");
            }
        }
        Ok(())
    }

    /// A first save's own file items (`taken`: sort key and claimant) back to `pending`,
    /// unclaimed, still at revision 1, so that any first save may take them
    /// ([`PutCondition::Unclaimed`]); one taken over since (its lease ran out) stays. Best
    /// effort: one not given back is free once its lease runs out.
    async fn give_back(&self, task_id: &str, taken: &[(String, String)]) {
        let released_at = LeaseEnd::at(Timestamp::now());
        // Built in a loop: a closure here trips rustc's Send inference for save's future.
        let mut releases = Vec::with_capacity(taken.len());
        for (sk, claimant) in taken {
            releases.push(self.give_back_one(task_id, sk, claimant, released_at));
        }
        bounded(releases).await;
    }

    async fn give_back_one(&self, task_id: &str, sk: &str, claimant: &str, released_at: LeaseEnd) {
        let update = release_update(claimant, released_at, Releasing::FirstSave);
        if let Err(e) = self.update("giving back", task_id, sk, update).await {
            tracing::warn!(error = %e, item = sk, "a first save's file item was not given back");
        }
    }

    /// One conditional PutItem; `operation` names it in errors. Refused by the very item it
    /// puts, it was applied: an attempt whose answer was lost, retried by the SDK.
    pub async fn put(&self, operation: &str, put: ItemPut) -> Result<Conditional, StoreError> {
        let c = put_condition(&put.condition, Timestamp::now());
        let sent = self
            .client
            .put_item()
            .table_name(&self.table_name)
            .set_item(Some(put.item.clone().into()))
            .condition_expression(c.condition)
            .set_expression_attribute_names((!c.names.is_empty()).then_some(c.names))
            .set_expression_attribute_values((!c.values.is_empty()).then_some(c.values))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match sent {
            Ok(_) => Ok(Conditional::Applied),
            Err(SdkError::ServiceError(e)) if matches!(e.err(), PutItemError::ConditionalCheckFailedException(_)) => {
                let stored = match e.into_err() {
                    PutItemError::ConditionalCheckFailedException(c) => c.item.map(Item::from),
                    _ => None,
                };
                if stored.is_some_and(|stored| same_map(&put.item, &stored)) {
                    tracing::info!(operation, "the put was applied before (its answer was lost)");
                    return Ok(Conditional::Applied);
                }
                Ok(Conditional::Conflict)
            }
            // Item too large (for good), an expression or attribute refused, or no answer.
            Err(e) => Err(write_error(operation, e)),
        }
    }

    /// Mark the task item of `task_id` open and fenced before the file items of a save that
    /// adds or reopens them ([`MarkOpen`], which [`Self::save`] plans), if it is still at the
    /// version and fence read. A mark whose answer was lost, sent again by the SDK, is refused
    /// by its own fence: a conflict, and the save reads again (its fence cannot be told from
    /// that of another request that read the same item in the same millisecond, which must).
    pub async fn mark_open(&self, task_id: &str, mark: &MarkOpen) -> Result<Conditional, StoreError> {
        self.update("marking open", task_id, items::TASK_SK, mark_open(mark)).await
    }

    /// Take a task read as `record` out of the open-tasks index (the inverse of the
    /// [`MarkOpen`] a save makes), if its task item is still as read.
    pub async fn close_open(&self, record: &TaskRecord) -> Result<Conditional, StoreError> {
        self.update("closing", &record.task_id, items::TASK_SK, close_open(record)).await
    }

    /// Apply `u` to the item `sk` of the task if its condition holds; `operation` names it
    /// in errors.
    pub async fn update(&self, operation: &str, task_id: &str, sk: &str, u: Update) -> Result<Conditional, StoreError> {
        self.update_returning(operation, task_id, sk, u, ReturnValue::None).await.map(Updated::conditional)
    }

    /// As [`Self::update`], with quick attempts ([`crate::best_effort_dynamodb`]): for a
    /// write its caller waits for at most `BEST_EFFORT_CALL_TIMEOUT`.
    pub async fn update_quickly(
        &self,
        operation: &str,
        task_id: &str,
        sk: &str,
        u: Update,
    ) -> Result<Conditional, StoreError> {
        let request = self.update_request(task_id, sk, u, ReturnValue::None);
        let sent = request.customize().config_override(crate::best_effort_dynamodb()).send().await;
        updated(operation, sent).map(Updated::conditional)
    }

    /// Apply `u` to the item `sk` of the task if its condition holds, returning the item as
    /// `returning` asks when applied (`ALL_NEW`, `ALL_OLD`; empty for `NONE`) and as it is
    /// when refused (free but for its bytes: whether a refused write was our own, applied,
    /// its answer lost and the SDK's retry refused, can be told from the item).
    pub async fn update_returning(
        &self,
        operation: &str,
        task_id: &str,
        sk: &str,
        u: Update,
        returning: ReturnValue,
    ) -> Result<Updated, StoreError> {
        updated(operation, self.update_request(task_id, sk, u, returning).send().await)
    }

    /// The UpdateItem of `u` on the item `sk` of the task, refused with the item as it is.
    fn update_request(
        &self,
        task_id: &str,
        sk: &str,
        u: Update,
        returning: ReturnValue,
    ) -> aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder {
        self.client
            .update_item()
            .table_name(&self.table_name)
            .key("task_id", s(task_id))
            .key("sk", s(sk))
            .update_expression(u.update)
            .condition_expression(u.condition)
            .set_expression_attribute_names((!u.names.is_empty()).then_some(u.names))
            .set_expression_attribute_values((!u.values.is_empty()).then_some(u.values))
            .return_values(returning)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
    }
}

/// What an UpdateItem (`operation`, for errors) came to.
fn updated(
    operation: &str,
    sent: Result<UpdateItemOutput, SdkError<UpdateItemError, HttpResponse>>,
) -> Result<Updated, StoreError> {
    match sent {
        Ok(out) => Ok(Updated::Applied(Item::from(out.attributes.unwrap_or_default()))),
        Err(SdkError::ServiceError(e)) if matches!(e.err(), UpdateItemError::ConditionalCheckFailedException(_)) => {
            let item = match e.into_err() {
                UpdateItemError::ConditionalCheckFailedException(c) => c.item.map(Item::from),
                _ => None,
            };
            Ok(Updated::Refused(item))
        }
        // The item would grow past DynamoDB's limit (for good), an expression or attribute
        // refused, or no answer.
        Err(e) => Err(write_error(&format!("UpdateItem ({operation})"), e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_release_puts_a_file_back_to_pending_only_under_the_claim() {
        let u = release_update("req-9", LeaseEnd::from_unix_seconds(1_795_446_030), Releasing::Committed);
        assert_eq!(u.update, "SET #status = :pending, #lease = :released REMOVE #claim ADD #rev :one");
        assert_eq!(u.values[":released"], n(1_795_446_030));
        assert_eq!(u.condition, "#status = :enqueuing AND #claim = :me");
        assert_eq!((&u.values[":me"], &u.values[":pending"]), (&s("req-9"), &s("pending")));
        assert_eq!(u.names["#lease"], "lease_until");
        u.assert_well_formed();
    }

    /// A first save gives its files back at revision 1, which the first save of another
    /// request may take (`Unclaimed`), and only those still its own at revision 1.
    #[test]
    fn a_first_saves_release_keeps_the_first_revision() {
        let u = release_update("req-9", LeaseEnd::from_unix_seconds(1_795_446_030), Releasing::FirstSave);
        assert_eq!(u.update, "SET #status = :pending, #lease = :released REMOVE #claim");
        assert_eq!(u.condition, "#rev = :first AND #status = :enqueuing AND #claim = :me");
        assert_eq!((&u.values[":first"], &u.values[":me"]), (&n(1), &s("req-9")));
        assert_eq!(
            u.values[":first"],
            put_condition(&PutCondition::Unclaimed { claimant: "x".into() }, Timestamp::now()).values[":first"]
        );
        u.assert_well_formed();
    }

    #[test]
    fn a_validation_exception_is_for_good_only_for_a_limit_the_data_went_past() {
        for size in [
            "Item size has exceeded the maximum allowed size",
            "Item size to update has exceeded the maximum allowed size",
            "One or more parameter values were invalid: Size of hashkey has exceeded the maximum size limit of 2048 bytes",
            "Nesting Levels have exceeded supported limits",
            "Number overflow. Attempting to store a number with magnitude larger than supported range",
            "Number underflow. Attempting to store a number with magnitude smaller than supported range",
            "One or more parameter values were invalid: Aggregated size of all range keys has exceeded the size limit of 1024 bytes",
        ] {
            assert_eq!(validation_error(size, "x".into()), StoreError::Rejected("x".into()));
        }
        for invalid in [
            "Invalid UpdateExpression: An expression attribute name used in the document path is not defined",
            "Invalid UpdateExpression: Expression size has exceeded the maximum allowed size",
        ] {
            assert_eq!(validation_error(invalid, "x".into()), StoreError::Invalid("x".into()));
        }
    }

    fn item(pairs: &[(&str, Value)]) -> Item {
        Item::from(pairs.iter().cloned().map(|(k, v)| (k.to_owned(), v)).collect::<HashMap<_, _>>())
    }

    #[test]
    fn an_item_is_the_one_sent_as_dynamodb_keeps_it() {
        let set = |members: &[&str]| Value::Ss(members.iter().map(|m| (*m).to_owned()).collect());
        let sent = item(&[
            ("sk", Value::S("task".into())),
            ("version", Value::N("7".into())),
            ("bodies", set(&["a", "b"])),
            ("meta", Value::M(HashMap::from([("n".to_owned(), Value::N("1.5".into()))]))),
            ("list", Value::L(vec![Value::N("2".into()), Value::S("x".into())])),
        ]);
        let kept = item(&[
            ("sk", Value::S("task".into())),
            ("version", Value::N("7.0".into())),
            ("bodies", set(&["b", "a"])),
            ("meta", Value::M(HashMap::from([("n".to_owned(), Value::N("15E-1".into()))]))),
            ("list", Value::L(vec![Value::N("2.0".into()), Value::S("x".into())])),
        ]);
        assert!(same_map(&sent, &kept), "sets in any order, numbers in any notation");

        let mut other = kept.clone();
        other.insert("version".into(), Value::N("8".into()));
        assert!(!same_map(&sent, &other), "another version");
        let mut other = kept.clone();
        other.insert("bodies".into(), set(&["a", "c"]));
        assert!(!same_map(&sent, &other), "another member");
        other.insert("bodies".into(), set(&["a"]));
        assert!(!same_map(&sent, &other), "fewer members");
        let mut other = kept.clone();
        other.insert("list".into(), Value::L(vec![Value::S("x".into()), Value::N("2".into())]));
        assert!(!same_map(&sent, &other), "a list in another order");
        let mut other = kept.clone();
        let version = other.remove("version").unwrap();
        other.insert("revision".into(), version);
        assert!(!same_map(&sent, &other), "another attribute in its place");
        let mut other = kept.clone();
        other.insert("open".into(), Value::S("1".into()));
        assert!(!same_map(&sent, &other), "one attribute more");
        other.remove("open");
        other.remove("meta");
        assert!(!same_map(&sent, &other), "one attribute fewer");
        assert!(!same_number("9007199254740993", "9007199254740992"), "integers compared exactly");
    }

    #[test]
    fn a_put_is_conditional_on_what_was_read() {
        let c = put_condition(&PutCondition::Absent, Timestamp::from_unix_ms(0));
        assert_eq!((c.condition.as_str(), c.names.len(), c.values.len()), ("attribute_not_exists(sk)", 0, 0));
        let c = put_condition(&PutCondition::Version { version: 7, adding: None }, Timestamp::from_unix_ms(0));
        assert_eq!(
            (c.condition.as_str(), &c.values[":read"], c.names["#adding"].as_str()),
            ("version = :read AND attribute_not_exists(#adding)", &n(7), "adding")
        );
        let fence = AddFence { generation: 4, at: Some(1_795_000_000_000) };
        let c = put_condition(&PutCondition::Version { version: 7, adding: Some(fence) }, Timestamp::from_unix_ms(0));
        assert_eq!(
            (c.condition.as_str(), &c.values[":read"], &c.values[":adding"], &c.values[":adding_at"]),
            (
                "version = :read AND #adding = :adding AND #adding_at = :adding_at",
                &n(7),
                &n(4),
                &n(1_795_000_000_000u64)
            )
        );
        assert_eq!(c.names["#adding_at"], "adding_at");
        let by_hand = AddFence { at: None, ..fence };
        let c = put_condition(&PutCondition::Version { version: 7, adding: Some(by_hand) }, Timestamp::from_unix_ms(0));
        assert_eq!(c.condition, "version = :read AND #adding = :adding AND attribute_not_exists(#adding_at)");
        let c = put_condition(&PutCondition::Rev(3), Timestamp::from_unix_ms(0));
        assert_eq!((c.condition.as_str(), &c.values[":read"]), ("rev = :read", &n(3)));
        let c = put_condition(
            &PutCondition::Unclaimed { claimant: "req-1".into() },
            Timestamp::from_unix_ms(1_800_000_000_000),
        );
        assert_eq!(
            c.condition,
            "attribute_not_exists(sk) OR (rev = :first AND (#status = :pending \
             OR (#status = :enqueuing AND (#claim = :me OR #lease < :now))))"
        );
        assert_eq!(c.values[":first"], n(1));
        assert_eq!((&c.values[":pending"], &c.values[":enqueuing"]), (&s("pending"), &s("enqueuing")));
        assert_eq!((&c.values[":me"], &c.values[":now"]), (&s("req-1"), &n(1_800_000_000)));
        assert_eq!(c.names["#lease"], "lease_until");
        let unclaimed = PutCondition::Unclaimed { claimant: "r".into() };
        let conditions = [
            PutCondition::Absent,
            unclaimed,
            PutCondition::Rev(1),
            PutCondition::Version { version: 1, adding: None },
            PutCondition::Version { version: 1, adding: Some(fence) },
            PutCondition::Version { version: 1, adding: Some(by_hand) },
        ];
        for condition in conditions {
            let c = put_condition(&condition, Timestamp::from_unix_ms(0));
            c.assert_well_formed();
            assert!(c.update.is_empty(), "{condition:?}");
        }
    }

    #[test]
    fn a_counted_delivery_adds_one_to_deliveries_and_version_of_an_existing_task_item() {
        let u = count_delivery(s("2026-12-02T12:00:00.000Z"), true);
        assert_eq!(u.update, "ADD deliveries :one, version :one SET last_received_at = :at");
        let only_as_read = "attribute_exists(sk) AND attribute_not_exists(not_found_since)";
        assert_eq!(u.condition, format!("{only_as_read} AND attribute_exists(reconcile)"));
        let unwatched = count_delivery(s("2026-12-02T12:00:00.000Z"), false).condition;
        assert_eq!(unwatched, format!("{only_as_read} AND attribute_not_exists(reconcile)"));
        assert_eq!((&u.values[":one"], &u.values[":at"]), (&n(1), &s("2026-12-02T12:00:00.000Z")));
        u.assert_well_formed();
        assert!(u.names.is_empty());
    }

    #[test]
    fn a_close_removes_open_from_the_task_item_as_read() {
        let mut record = TaskRecord::new(
            "t1",
            suno_callbacks::Family::Wav,
            suno_callbacks::Stage::Final,
            200,
            "ok",
            "2026-12-04T12:00:00.000Z".parse().unwrap(),
        );
        record.version = 7;
        let u = close_open(&record);
        let expressions = (u.update.as_str(), u.condition.as_str());
        assert_eq!(
            expressions,
            ("REMOVE #open, #adding, #adding_at ADD version :one", "version = :read AND last_received_at = :at")
        );
        assert_eq!((u.names["#open"].as_str(), u.names["#adding"].as_str()), ("open", "adding"));
        assert_eq!(u.names["#adding_at"], "adding_at");
        assert_eq!((u.values[":read"].clone(), u.values[":one"].clone()), (n(7), n(1)));
        assert_eq!(u.values[":at"], s("2026-12-04T12:00:00.000Z"));
        u.assert_well_formed();
    }

    #[test]
    fn a_reopened_task_is_marked_open_at_the_version_read_which_stays() {
        let at = Value::S("2026-12-04T12:00:00.000Z".into());
        let mark = MarkOpen { version: 9, read: None, last_received_at: at, generation: 4, at: 1_795_000_000_000 };
        let u = mark_open(&mark);
        assert_eq!(
            (u.update.as_str(), u.condition.as_str()),
            (
                "SET #open = :open, last_received_at = :at, #adding = :new_adding, #adding_at = :new_adding_at",
                "version = :read AND attribute_not_exists(#adding)"
            )
        );
        assert_eq!((&u.names["#open"], &u.values[":open"]), (&"open".to_owned(), &s(OPEN_MARKER)));
        assert_eq!((&u.names["#adding"], &u.values[":new_adding"]), (&"adding".to_owned(), &n(4)));
        assert_eq!((&u.names["#adding_at"], &u.values[":new_adding_at"]), (&"adding_at".to_owned(), &n(mark.at)));
        // Over a fence read (a stopped request's, say): conditional on it.
        let again = MarkOpen { read: Some(mark.fence()), at: mark.at + 1, ..mark.clone() };
        let over = mark_open(&again);
        assert_eq!(over.condition, "version = :read AND #adding = :adding AND #adding_at = :adding_at");
        assert_eq!((&over.values[":adding_at"], &over.values[":new_adding_at"]), (&n(mark.at), &n(mark.at + 1)));
        over.assert_well_formed();
        assert_eq!((&u.values[":at"], &u.values[":read"]), (&s("2026-12-04T12:00:00.000Z"), &n(9)));
        u.assert_well_formed();
    }

    #[test]
    fn a_redelivery_adds_one_to_its_existing_callback_item() {
        let u = count_redelivery();
        assert_eq!((u.update.as_str(), u.condition.as_str()), ("ADD deliveries :one", "attribute_exists(sk)"));
        u.assert_well_formed();
    }

    #[test]
    fn the_attributes_named_are_read_bare_or_through_placeholders() {
        let mut u = Update::new(
            "SET #s = :s, files.x = :x ADD deliveries :one REMOVE claim",
            "attribute_not_exists(sk) AND (rev = :rev OR size(bodies) BETWEEN :a AND :b) AND NOT begins_with(#k, :p)",
        );
        u.name("#s", "status").name("#k", "key");
        let named: Vec<String> = u.attributes().into_iter().collect();
        assert_eq!(named, ["bodies", "claim", "deliveries", "files", "key", "rev", "sk", "status"]);
        assert_eq!(u.unknown_attributes(), ["files"], "the record's file map is items, not an attribute");
    }

    #[test]
    fn unused_placeholders_are_found_and_dropped() {
        let mut u = Update::new("SET #a = :one", "#a1 = :onex");
        u.name("#a", "a").name("#a1", "a1").name("#b", "b");
        u.value(":one", n(1)).value(":onex", n(2)).value(":two", n(2));
        let mut unused = u.unused_placeholders();
        unused.sort();
        assert_eq!(unused, ["#b", ":two"], "#a and :one count only where they are whole");
        let u = u.without_unused_placeholders();
        assert!(u.unused_placeholders().is_empty());
        let mut partial = Update::new("SET a = :a, #b = :b", "c = :c");
        partial.value(":a", n(1));
        assert_eq!(partial.undefined_placeholders(), ["#b", ":b", ":c"]);
        assert_eq!(u.names.len(), 2);
        assert_eq!(u.values.len(), 2);
    }
}
